"""Windows guests and Linux boot guests: what Nova must give them to boot.

The guests are built here without Windows or a download
(testkit/windowsimages.py, the BOOT_GUESTS of testkit/guestimages.py) and
every one goes through both front ends an operator runs:

* the CLI, ``qimg-introspect inspect -f json``, once per guest (two at a
  time: one appliance each, 20-40 s under emulation), with the default
  options: hibernation and BitLocker are warnings;
* ONE audit, ``qimg-introspect audit --apply``, of a tenant holding them
  all, with ``refuse_unbootable``: one appliance over every drive (a
  pass-through qemu logs its command line), read back from the real
  glance-api.

Each guest's expected properties are written out below; the evidence
behind them is checked in ``details``.
"""

from concurrent import futures
import json
import platform
import re
import shutil

import pytest

from qimgintrospect import exception
from qimgintrospect import normalise
from testkit import config
from testkit import glanceapi
from testkit import guestimages
from testkit import qemuwrapper
from testkit import windowsimages
from tests import conftest

pytest.importorskip('guestfs', reason='python3-guestfs is not installed')
for _tool in ('guestfish', 'hivexregedit', 'sfdisk'):
    if shutil.which(_tool) is None:
        pytest.skip('%s is not installed' % _tool, allow_module_level=True)

# The first test waits for the guests to be built and inspected.
pytestmark = pytest.mark.timeout(1800)

WINDOWS = ('win2022', 'win2019', 'win-hibernated', 'win11', 'win-bitlocker')
LINUX = ('debian-virtio-modules', 'rocky-hostonly', 'ubuntu-virtio-builtin')
GUESTS = WINDOWS + LINUX
#: refuse_unbootable refuses these; the others boot.
UNBOOTABLE = {'win-hibernated': exception.GUEST_HIBERNATED,
              'win-bitlocker': exception.GUEST_BITLOCKER}
#: The warnings of the inspection with the default options, in order.
WARNINGS = {'win-hibernated': [exception.GUEST_HIBERNATED],
            'win-bitlocker': [exception.GUEST_BITLOCKER],
            # Fast Startup: it boots, but its shutdowns hibernate.
            'win11': [exception.GUEST_FAST_STARTUP]}
ARCH = platform.machine()

_WINDOWS = dict(os_type='windows', os_distro='windows', architecture='x86_64')
#: What each guest gets: every guest and boot property, exactly.
EXPECTED = {
    'win2022': dict(_WINDOWS, os_version='2022', hw_firmware_type='bios',
                    os_admin_user='cloudadmin', hw_qemu_guest_agent='yes'),
    # virtio-scsi only; cloudbase-init without username: its default.
    'win2019': dict(_WINDOWS, os_version='2019', hw_firmware_type='bios',
                    os_admin_user='Admin', hw_disk_bus='scsi',
                    hw_scsi_model='virtio-scsi'),
    'win-hibernated': dict(_WINDOWS, os_version='10',
                           hw_firmware_type='bios'),
    # UEFI only, signed boot manager, no virtio: SATA and e1000e, TPM 2.0.
    'win11': dict(_WINDOWS, os_version='11', hw_firmware_type='uefi',
                  os_secure_boot='optional', hw_machine_type='q35',
                  hw_tpm_version='2.0', hw_disk_bus='sata',
                  hw_vif_model='e1000e'),
    # C: encrypted: libguestfs finds no OS, so nothing is set (the ESP's
    # loaders and the volume are in details).
    'win-bitlocker': {},
    # virtio modules on disk, not in the default kernel's initramfs.
    'debian-virtio-modules': dict(os_type='linux', os_distro='debian',
                                  os_version='12', architecture=ARCH,
                                  hw_firmware_type='bios',
                                  hw_disk_bus='sata'),
    # dracut hostonly: the default initramfs lacks virtio (the rescue
    # one has it and does not count).
    'rocky-hostonly': dict(os_type='linux', os_distro='rocky',
                           os_version='9.3', architecture=ARCH,
                           hw_firmware_type='bios', hw_disk_bus='sata'),
    # virtio built in; a hybrid disk: no firmware type needed.
    'ubuntu-virtio-builtin': dict(os_type='linux', os_distro='ubuntu',
                                  os_version='22.04', architecture=ARCH),
}
#: Every property the guest stage may set.
GUEST_PROPERTIES = frozenset(
    name for name, rule in normalise.VOCABULARY.items() if not rule.core
    and not name.startswith('vmware_d') and name != 'vmware_adaptertype')


def _spec(name):
    return windowsimages.GUESTS.get(name) or guestimages.BOOT_GUESTS[name]


def _guest_properties(properties):
    return {k: v for k, v in properties.items() if k in GUEST_PROPERTIES}


@pytest.fixture(scope='module')
def guests(tmp_path_factory):
    """name -> path of the guests this module needs.

    The two guestfish runs (one per builder) go side by side: each is
    mostly its own appliance's boot, one core each.
    """
    directory = tmp_path_factory.mktemp('boot-guests')
    with futures.ThreadPoolExecutor(2) as pool:
        windows = pool.submit(windowsimages.build, directory / 'windows',
                              WINDOWS)
        linux = pool.submit(guestimages.build, directory / 'linux', LINUX)
        paths = windows.result()
        paths.update(linux.result())
    return paths


@pytest.fixture(scope='module')
def inspected(guests, tmp_path_factory):
    """name -> the JSON of ``qimg-introspect inspect`` on that guest."""
    cli = conftest.CLI(tmp_path_factory.mktemp('boot-cli'))
    cli.set('introspection_workspace', 'slot_wait_timeout', 900)
    cli.set('introspection_guest', 'enabled', True)
    cli.set('introspection_guest', 'backend_settings',
            config.BACKEND_SETTINGS)

    def inspect(name):
        code, output = cli.inspect_json(guests[name], '--disk-format',
                                        _spec(name).disk_format, timeout=900)
        assert code == 0, (name, output)
        return output

    with futures.ThreadPoolExecutor(2) as pool:
        outputs = dict(zip(GUESTS, pool.map(inspect, GUESTS)))
    assert config.workspace_leftovers(cli.workspace) == []
    return outputs


@pytest.mark.parametrize('name', GUESTS)
def test_each_guest_gets_what_it_needs_to_boot(inspected, name):
    properties = inspected[name]['properties']
    assert _guest_properties(properties) == EXPECTED[name]
    # A virtual size of 96-128 MiB needs a 1 GiB root disk.
    assert properties['min_disk'] == 1
    assert normalise.validate(dict(properties), []) == properties


@pytest.mark.parametrize('name', GUESTS)
def test_only_guests_that_cannot_boot_as_they_are_have_warnings(
        inspected, name):
    output = inspected[name]
    codes = [re.search(r'\((guest-[a-z-]+)\)$', w).group(1)
             for w in output['warnings']]
    assert codes == WARNINGS.get(name, []), output['warnings']
    assert output['details'].get('guest_unbootable', []) == codes


def test_the_hibernation_is_read_from_hiberfil(inspected):
    output = inspected['win-hibernated']
    warning, = [w for w in output['warnings'] if 'guest-hibernated' in w]
    assert 'HIBR' in warning and 'Fast Startup' in warning
    assert output['details']['guest_hiberfil_signature'] == 'HIBR'


def test_windows_product_comes_from_the_build(inspected):
    details = inspected['win2019']['details']
    assert (details['guest_windows_build'], details['guest_osinfo'],
            details['guest_vmware_guest_id']) == (
        '17763', 'win2k19', 'windows2019srv_64Guest')
    assert inspected['win11']['details']['guest_windows_build'] == '22631'


def test_windows_drivers_are_the_evidence(inspected):
    details = inspected['win2019']['details']
    assert details['guest_disk_buses'] == ['virtio-scsi', 'ide']
    evidence = details['guest_device_evidence']
    assert evidence['disk:virtio'] == 'viostor absent'
    assert evidence['disk:virtio-scsi'] == 'vioscsi Start=0'
    assert evidence['nic:virtio'].startswith(
        'driver bound to PCI\\VEN_1AF4&DEV_1000')
    server = inspected['win2022']['details']
    assert server['guest_disk_buses'][0] == 'virtio'
    assert server['guest_cloudbase_init_user'] == 'cloudadmin'
    assert server['guest_qemu_guest_agent_service_start'] == (
        windowsimages.AUTO_START)


def test_the_default_kernel_and_its_initramfs_are_the_evidence(inspected):
    rocky = inspected['rocky-hostonly']['details']
    boot = guestimages.BOOT_GUESTS['rocky-hostonly'].boot
    assert rocky['guest_default_kernel'] == boot.kernels[0].version
    assert rocky['guest_default_kernel_from'].endswith('(saved_entry)')
    # dracut's early microcode archive, then gzip: what initrd_list fails on.
    assert rocky['guest_initramfs_segments'] == ['cpio', 'gzip']
    assert rocky['guest_device_evidence']['disk:virtio'] == (
        'virtio_pci on disk + virtio_blk on disk')
    ubuntu = inspected['ubuntu-virtio-builtin']['details']
    assert ubuntu['guest_initramfs_segments'] == ['cpio', 'zstd']
    assert ubuntu['guest_device_evidence']['disk:virtio'] == (
        'virtio_pci built in + virtio_blk built in')
    debian = inspected['debian-virtio-modules']['details']
    assert debian['guest_default_kernel_from'].startswith(
        '/boot/grub/grub.cfg')


def test_loaders_found_for_bios_and_uefi(inspected):
    ubuntu = inspected['ubuntu-virtio-builtin']['details']
    assert (ubuntu['guest_firmware'], ubuntu['guest_bios_loader'],
            ubuntu['guest_secure_boot_chain']) == ('hybrid', 'grub',
                                                   'signed')
    assert ubuntu['guest_efi_fallback'] == '/EFI/BOOT/BOOTX64.EFI'
    assert '/EFI/ubuntu/shimx64.efi' in ubuntu['guest_efi_signed_loaders']
    windows = inspected['win2019']['details']
    assert (windows['guest_firmware'], windows['guest_bios_loader'],
            windows['guest_mbr_boot_code']) == ('bios', 'windows',
                                                'windows')
    locked = inspected['win-bitlocker']['details']
    assert (locked['guest_roots'], locked['guest_firmware'],
            locked['guest_bitlocker_volumes']) == (0, 'uefi', ['/dev/sda3'])


@pytest.fixture(scope='module')
def audit(guests, glance_server, tmp_path_factory):
    """One audit --apply of a tenant holding every guest; its report."""
    project = glanceapi.new_project_id()
    client = glance_server.client(project)
    ids = {name: glanceapi.upload_image(client, guests[name],
                                        _spec(name).disk_format)['id']
           for name in GUESTS}
    directory = tmp_path_factory.mktemp('boot-audit')
    qemu = qemuwrapper.write(directory / 'hv', 'pass-through')
    cli = conftest.CLI(directory)
    cli.set('introspection_workspace', 'slot_wait_timeout', 900)
    cli.set('introspection_guest', 'enabled', True)
    cli.set('introspection_guest', 'backend_settings',
            config.BACKEND_SETTINGS)
    cli.set('introspection_guest', 'drives_per_appliance', len(GUESTS))
    cli.set('introspection_guest', 'refuse_unbootable', True)
    proc = cli.run('audit', '--apply', '-f', 'json', '--owner', project,
                   '--state-file', str(directory / 'state.db'),
                   *glanceapi.auth_args(glance_server.url, project),
                   timeout=1500, env=qemu.environ())
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    return {'report': json.loads(proc.stdout), 'ids': ids,
            'client': client, 'workspace': cli.workspace, 'qemu': qemu}


def test_the_audit_inspects_every_guest_in_one_appliance(audit):
    # Guests that share labels (System Reserved, rootfs) or nothing at
    # all stay together: none is redone alone.
    boot, = audit['qemu'].boots()
    drives = [a for a in boot['args'] if re.search(r',id=hd\d+,', a)]
    assert len(drives) == len(GUESTS)


@pytest.mark.parametrize('name', [n for n in GUESTS if n not in UNBOOTABLE])
def test_the_audit_writes_what_each_guest_needs(audit, name):
    image = audit['client'].images.get(audit['ids'][name])
    expected = dict(EXPECTED[name], min_disk=1)
    assert {k: image.get(k) for k in expected} == expected
    # Nothing else of the guest vocabulary was written.
    assert set(image) & GUEST_PROPERTIES == set(EXPECTED[name])


@pytest.mark.parametrize('name', sorted(UNBOOTABLE))
def test_the_audit_refuses_a_guest_that_cannot_boot(audit, name):
    rows = [row for row in audit['report']['differences']
            if row['image_id'] == audit['ids'][name]]
    assert [row['difference'] for row in rows] == ['refused']
    assert rows[0]['note'].startswith(UNBOOTABLE[name] + ': ')
    image = audit['client'].images.get(audit['ids'][name])
    assert not set(image) & GUEST_PROPERTIES


def test_the_audit_counts_and_cleans_up(audit):
    counts = audit['report']['summary']['images']
    assert (counts['inspected'], counts['refused'], counts['changed']) == (
        len(GUESTS), len(UNBOOTABLE), len(GUESTS) - len(UNBOOTABLE))
    assert config.workspace_leftovers(audit['workspace']) == []
