"""Windows guests and Linux boot guests: what Nova must give them to boot.

The guests are built here without Windows or a download
(testkit/windowsimages.py, the BOOT_GUESTS of testkit/guestimages.py) and
go through the three front ends, each over a few of them, so that the
whole module launches three appliances (20-40 s each under emulation):

* ONE ``api.inspect_many`` call over Server 2019, a hibernated Windows
  10 and three Linux boot guests (one appliance), with the default
  options: hibernation is a warning;
* the CLI (``qimg-introspect inspect -f json``) on Server 2022;
* ONE audit (``qimg-introspect audit --apply``) of a tenant holding
  Windows 11, a BitLocker Windows and a Debian without virtio in its
  initramfs, with ``refuse_unbootable`` (one owner: one appliance),
  read back from the real glance-api.

Each guest's expected properties are written out below; the evidence
behind them is checked in ``details``.
"""

from concurrent import futures
import json
import platform
import shutil

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect.inspectors.guest import appliance
from qimgintrospect import normalise
from testkit import config
from testkit import glanceapi
from testkit import guestimages
from testkit import windowsimages
from tests import conftest

pytest.importorskip('guestfs', reason='python3-guestfs is not installed')
for _tool in ('guestfish', 'hivexregedit', 'sfdisk'):
    if shutil.which(_tool) is None:
        pytest.skip('%s is not installed' % _tool, allow_module_level=True)

# The first test waits for the guests to be built and the batch to run.
pytestmark = pytest.mark.timeout(1800)

WINDOWS = ('win2022', 'win2019', 'win-hibernated', 'win11', 'win-bitlocker')
LINUX = ('debian-virtio-modules', 'rocky-hostonly', 'ubuntu-virtio-builtin')
BATCH = ('win2019', 'win-hibernated', 'debian-virtio-modules',
         'rocky-hostonly', 'ubuntu-virtio-builtin')
AUDITED = ('win11', 'win-bitlocker', 'debian-virtio-modules')
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


class Batch(object):
    """The module's inspect_many() call, and the appliances it launched."""

    def __init__(self, guests, directory):
        self.launches = []
        names = {guests[n]: n for n in BATCH}
        real_enter = appliance.Appliance.__enter__

        def recording_enter(handle):
            self.launches.append([names[i.label] for i in handle.images])
            return real_enter(handle)

        conf = config.make_conf(
            directory / 'workspace', guest=True,
            introspection_workspace={'slot_wait_timeout': 600},
            introspection_guest={'drives_per_appliance': len(BATCH)})
        requests = [api.ImageRequest(guests[n], _spec(n).disk_format,
                                     'tenant') for n in BATCH]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(appliance.Appliance, '__enter__', recording_enter)
            self.results = dict(zip(BATCH, api.inspect_many(requests,
                                                            conf)))


@pytest.fixture(scope='module')
def batch(guests, tmp_path_factory):
    return Batch(guests, tmp_path_factory.mktemp('boot-batch'))


def test_the_batch_is_one_appliance(batch):
    # Guests that share labels (System Reserved, rootfs) or nothing at all
    # stay together: none is redone alone.
    assert batch.launches == [list(BATCH)]


@pytest.mark.parametrize('name', BATCH)
def test_each_guest_gets_what_it_needs_to_boot(batch, name):
    result = batch.results[name]
    assert not isinstance(result, exception.IntrospectionError), result
    assert _guest_properties(result.properties) == EXPECTED[name]
    # A virtual size of 96-128 MiB needs a 1 GiB root disk.
    assert result.properties['min_disk'] == 1
    assert normalise.validate(dict(result.properties), []) == (
        result.properties)


def test_only_the_hibernated_guest_has_a_warning(batch):
    for name in BATCH:
        warnings = batch.results[name].warnings
        if name == 'win-hibernated':
            assert len(warnings) == 1
            assert warnings[0].endswith('(guest-hibernated)')
            assert 'HIBR' in warnings[0] and 'Fast Startup' in warnings[0]
            assert batch.results[name].details['guest_unbootable'] == [
                exception.GUEST_HIBERNATED]
        else:
            assert warnings == [], name


def test_windows_product_comes_from_the_build(batch):
    details = batch.results['win2019'].details
    assert (details['guest_windows_build'], details['guest_osinfo'],
            details['guest_vmware_guest_id']) == (
        '17763', 'win2k19', 'windows2019srv_64Guest')
    # Windows 10's hiberfil.sys, read through the hibernated NTFS.
    assert batch.results['win-hibernated'].details[
        'guest_hiberfil_signature'] == 'HIBR'


def test_windows_drivers_are_the_evidence(batch):
    details = batch.results['win2019'].details
    assert details['guest_disk_buses'] == ['virtio-scsi', 'ide']
    evidence = details['guest_device_evidence']
    assert evidence['disk:virtio'] == 'viostor absent'
    assert evidence['disk:virtio-scsi'] == 'vioscsi Start=0'
    assert evidence['nic:virtio'].startswith(
        'driver bound to PCI\\VEN_1AF4&DEV_1000')


def test_the_default_kernel_and_its_initramfs_are_the_evidence(batch):
    rocky = batch.results['rocky-hostonly'].details
    boot = guestimages.BOOT_GUESTS['rocky-hostonly'].boot
    assert rocky['guest_default_kernel'] == boot.kernels[0].version
    assert rocky['guest_default_kernel_from'].endswith('(saved_entry)')
    # dracut's early microcode archive, then gzip: what initrd_list fails on.
    assert rocky['guest_initramfs_segments'] == ['cpio', 'gzip']
    assert rocky['guest_device_evidence']['disk:virtio'] == (
        'virtio_pci on disk + virtio_blk on disk')
    ubuntu = batch.results['ubuntu-virtio-builtin'].details
    assert ubuntu['guest_initramfs_segments'] == ['cpio', 'zstd']
    assert ubuntu['guest_device_evidence']['disk:virtio'] == (
        'virtio_pci built in + virtio_blk built in')
    debian = batch.results['debian-virtio-modules'].details
    assert debian['guest_default_kernel_from'].startswith(
        '/boot/grub/grub.cfg')


def test_loaders_found_for_bios_and_uefi(batch):
    ubuntu = batch.results['ubuntu-virtio-builtin'].details
    assert (ubuntu['guest_firmware'], ubuntu['guest_bios_loader'],
            ubuntu['guest_secure_boot_chain']) == ('hybrid', 'grub',
                                                   'signed')
    assert ubuntu['guest_efi_fallback'] == '/EFI/BOOT/BOOTX64.EFI'
    assert '/EFI/ubuntu/shimx64.efi' in ubuntu['guest_efi_signed_loaders']
    windows = batch.results['win2019'].details
    assert (windows['guest_firmware'], windows['guest_bios_loader'],
            windows['guest_mbr_boot_code']) == ('bios', 'windows',
                                                'windows')


def test_cli_on_windows_server_2022(guests, tmp_path):
    cli = conftest.CLI(tmp_path)
    cli.set('introspection_guest', 'enabled', True)
    cli.set('introspection_guest', 'backend_settings',
            config.BACKEND_SETTINGS)
    code, output = cli.inspect_json(guests['win2022'], timeout=900)
    assert code == 0, output
    assert _guest_properties(output['properties']) == EXPECTED['win2022']
    assert output['properties']['min_disk'] == 1
    assert output['warnings'] == []
    details = output['details']
    assert details['guest_cloudbase_init_user'] == 'cloudadmin'
    assert details['guest_qemu_guest_agent_service_start'] == (
        windowsimages.AUTO_START)
    assert details['guest_disk_buses'][0] == 'virtio'


@pytest.fixture(scope='module')
def audit(guests, glance_server, tmp_path_factory):
    """One audit --apply of a tenant, refuse_unbootable on; its report."""
    project = glanceapi.new_project_id()
    client = glance_server.client(project)
    ids = {name: glanceapi.upload_image(client, guests[name],
                                        _spec(name).disk_format)['id']
           for name in AUDITED}
    directory = tmp_path_factory.mktemp('boot-audit')
    cli = conftest.CLI(directory)
    cli.set('introspection_workspace', 'slot_wait_timeout', 600)
    cli.set('introspection_guest', 'enabled', True)
    cli.set('introspection_guest', 'backend_settings',
            config.BACKEND_SETTINGS)
    cli.set('introspection_guest', 'drives_per_appliance', len(AUDITED))
    cli.set('introspection_guest', 'refuse_unbootable', True)
    proc = cli.run('audit', '--apply', '-f', 'json', '--owner', project,
                   '--state-file', str(directory / 'state.db'),
                   *glanceapi.auth_args(glance_server.url, project),
                   timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    return {'report': json.loads(proc.stdout), 'ids': ids,
            'client': client, 'workspace': cli.workspace}


@pytest.mark.parametrize('name', ['win11', 'debian-virtio-modules'])
def test_the_audit_writes_what_each_guest_needs(audit, name):
    image = audit['client'].images.get(audit['ids'][name])
    expected = dict(EXPECTED[name], min_disk=1)
    assert {k: image.get(k) for k in expected} == expected
    # Nothing else of the guest vocabulary was written.
    assert set(image) & GUEST_PROPERTIES == set(EXPECTED[name])


def test_the_audit_refuses_a_bitlocker_guest(audit):
    rows = [row for row in audit['report']['differences']
            if row['image_id'] == audit['ids']['win-bitlocker']]
    assert [row['difference'] for row in rows] == ['refused']
    assert rows[0]['note'].startswith('guest-bitlocker: BitLocker volume '
                                      '/dev/sda3')
    counts = audit['report']['summary']['images']
    assert (counts['inspected'], counts['refused'], counts['changed']) == (
        3, 1, 2)
    image = audit['client'].images.get(audit['ids']['win-bitlocker'])
    assert not set(image) & GUEST_PROPERTIES
    assert config.workspace_leftovers(audit['workspace']) == []
