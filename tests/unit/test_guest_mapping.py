"""libguestfs answers -> Glance vocabulary, and the pure parts around it.

No appliance here: the findings are what inspectors/guest.py reports, in
libguestfs's own terms; tests/functional/test_guest.py gets them from a
real appliance.
"""

import itertools

import pytest

from qimgintrospect.inspectors import guest
from qimgintrospect.inspectors.guest import census
from qimgintrospect.inspectors.guest.probes import linux
from qimgintrospect import normalise
from testkit import winformats


def _linux(**findings):
    base = {'guest_roots': 1, 'guest_os_type': 'linux',
            'guest_arch': 'x86_64', 'guest_firmware': 'bios'}
    base.update(findings)
    return base


def _props(findings, disk_format='qcow2'):
    warnings = []
    properties = normalise.guest_properties(findings, disk_format, warnings)
    return properties, warnings


@pytest.mark.parametrize('distro, release_id, os_distro', [
    ('ubuntu', 'ubuntu', 'ubuntu'),
    ('debian', 'debian', 'debian'),
    ('fedora', 'fedora', 'fedora'),
    ('centos', 'centos', 'centos'),
    ('rhel', 'rhel', 'rhel'),
    ('rocky', 'rocky', 'rocky'),
    ('archlinux', 'arch', 'arch'),
    ('opensuse', 'opensuse-leap', 'opensuse'),
    ('sles', 'sles', 'sles'),
    ('sles', 'sled', 'sled'),
    ('freebsd', None, 'freebsd'),
    # libguestfs 1.48 has no name for AlmaLinux: os-release has.
    (None, 'almalinux', 'almalinux'),
    ('redhat-based', 'almalinux', 'almalinux'),
    ('suse-based', 'opensuse-tumbleweed', 'opensuse'),
])
def test_os_distro(distro, release_id, os_distro):
    properties, warnings = _props(_linux(guest_distro=distro,
                                         guest_os_release_id=release_id))
    assert properties['os_distro'] == os_distro
    assert properties['os_distro'] in normalise.OS_DISTROS
    assert warnings == []


@pytest.mark.parametrize('distro, release_id', [
    ('oraclelinux', 'ol'), ('kalilinux', 'kali'), ('redhat-based', 'ol'),
    (None, 'somethingelse'),
])
def test_distro_without_a_glance_name_is_left_out_with_a_warning(
        distro, release_id):
    properties, warnings = _props(_linux(guest_distro=distro,
                                         guest_os_release_id=release_id))
    assert 'os_distro' not in properties
    assert len(warnings) == 1 and 'os_distro' in warnings[0]


def test_unknown_distro_without_os_release_is_silent():
    properties, warnings = _props(_linux(guest_distro=None))
    assert 'os_distro' not in properties
    assert warnings == []


@pytest.mark.parametrize('findings, version', [
    # os-release's VERSION_ID is the distributor's spelling.
    (dict(guest_distro='ubuntu', guest_version_id='22.04',
          guest_major_version=22, guest_minor_version=4), '22.04'),
    (dict(guest_distro='debian', guest_version_id='12',
          guest_major_version=12, guest_minor_version=5), '12'),
    (dict(guest_distro='rhel', guest_version_id='9.3',
          guest_major_version=9, guest_minor_version=3), '9.3'),
    # Without it, libguestfs's numbers.
    (dict(guest_distro='ubuntu', guest_major_version=18,
          guest_minor_version=4), '18.04'),
    (dict(guest_distro='centos', guest_major_version=7,
          guest_minor_version=9), '7.9'),
    (dict(guest_distro='fedora', guest_major_version=39,
          guest_minor_version=0), '39'),
    # Windows from NT 10 on: the product's number, from the build; never
    # the NT version, which is 10.0 for all of them.
    (dict(guest_os_type='windows', guest_distro='windows',
          guest_major_version=10, guest_minor_version=0,
          guest_windows_version='2022'), '2022'),
    (dict(guest_os_type='windows', guest_distro='windows',
          guest_major_version=10, guest_minor_version=0), None),
    (dict(guest_os_type='windows', guest_distro='windows',
          guest_major_version=6, guest_minor_version=1), '6.1'),
    (dict(guest_distro='archlinux', guest_major_version=0,
          guest_minor_version=0), None),
])
def test_os_version(findings, version):
    properties, _ = _props(_linux(**findings))
    assert properties.get('os_version') == version


@pytest.mark.parametrize('bad', ['$(reboot)', '12 bookworm', '', 'x' * 40,
                                 '../../etc'])
def test_a_guest_version_that_is_not_one_is_not_used(bad):
    properties, warnings = _props(_linux(
        guest_distro='debian', guest_version_id=bad, guest_major_version=12,
        guest_minor_version=0))
    # libguestfs's own number is still good.
    assert properties['os_version'] == '12'
    assert len(warnings) == (1 if bad else 0)


@pytest.mark.parametrize('arch, glance', [
    ('x86_64', 'x86_64'), ('i386', 'i686'), ('i686', 'i686'),
    ('aarch64', 'aarch64'), ('arm', 'armv7l'), ('ppc64le', 'ppc64le'),
    ('s390x', 's390x'), ('amd64', 'x86_64'),
])
def test_architecture(arch, glance):
    properties, warnings = _props(_linux(guest_arch=arch))
    assert properties['architecture'] == glance
    assert warnings == []


def test_architecture_without_a_nova_name_is_left_out_with_a_warning():
    properties, warnings = _props(_linux(guest_arch='riscv64'))
    assert 'architecture' not in properties
    assert 'riscv64' in warnings[0]
    properties, warnings = _props(_linux(guest_arch='unknown'))
    assert 'architecture' not in properties and warnings == []


@pytest.mark.parametrize('os_type, glance', [
    ('linux', 'linux'), ('windows', 'windows'), ('freebsd', None),
    ('unknown', None),
])
def test_os_type_only_takes_glance_values(os_type, glance):
    properties, _ = _props(_linux(guest_os_type=os_type))
    assert properties.get('os_type') == glance


@pytest.mark.parametrize('cloud_init, user, expected, warned', [
    ('enabled', 'ubuntu', 'ubuntu', False),
    ('enabled', 'cloud-user', 'cloud-user', False),
    ('disabled', 'ubuntu', None, False),
    ('enabled', None, None, False),
    ('enabled', 'root; rm -rf /', None, True),
    ('enabled', 'a' * 40, None, True),
])
def test_os_admin_user(cloud_init, user, expected, warned):
    findings = _linux(guest_cloud_init=cloud_init)
    if user is not None:
        findings['guest_cloud_init_user'] = user
    properties, warnings = _props(findings)
    assert properties.get('os_admin_user') == expected
    assert bool(warnings) == warned


def test_guest_agent_and_firmware():
    properties, _ = _props(_linux(guest_qemu_guest_agent=True,
                                  guest_firmware='uefi'))
    assert properties['hw_qemu_guest_agent'] == 'yes'
    assert properties['hw_firmware_type'] == 'uefi'
    properties, _ = _props(_linux(guest_qemu_guest_agent=False))
    assert 'hw_qemu_guest_agent' not in properties
    assert properties['hw_firmware_type'] == 'bios'


def test_no_operating_system_no_os_properties():
    assert _props({'guest_roots': 0}) == ({}, [])
    assert _props({}) == ({}, [])


_VMWARE_CASES = [
    ('linux', 'ubuntu', 22, 4, 'x86_64', None, 'ubuntu64Guest'),
    ('linux', 'ubuntu', 22, 4, 'i686', None, 'ubuntuGuest'),
    ('linux', 'debian', 9, 0, 'x86_64', None, 'debian9_64Guest'),
    # Newer than VMware's list: the newest name of the family.
    ('linux', 'debian', 12, 0, 'x86_64', None, 'debian10_64Guest'),
    ('linux', 'debian', 12, 0, 'i686', None, 'debian10Guest'),
    ('linux', 'rhel', 9, 3, 'x86_64', None, 'rhel7_64Guest'),
    ('linux', 'rocky', 9, 3, 'x86_64', None, 'rhel7_64Guest'),
    ('linux', 'rhel', 6, 10, 'x86_64', None, 'rhel6_64Guest'),
    ('linux', 'centos', 7, 9, 'x86_64', None, 'centos7_64Guest'),
    # VMware has no 32-bit CentOS 7 name: the family's.
    ('linux', 'centos', 7, 9, 'i686', None, 'centosGuest'),
    ('linux', 'centos', 5, 0, 'x86_64', None, 'centos64Guest'),
    ('linux', 'sles', 15, 5, 'x86_64', None, 'sles12_64Guest'),
    ('linux', 'oraclelinux', 8, 0, 'x86_64', None, 'oracleLinux7_64Guest'),
    ('linux', 'fedora', 39, 0, 'x86_64', None, 'fedora64Guest'),
    ('linux', 'arch', 0, 0, 'x86_64', None, 'otherLinux64Guest'),
    ('linux', None, 0, 0, 'i686', None, 'otherLinuxGuest'),
    ('windows', 'windows', 10, 0, 'x86_64', 'Server',
     'windows9Server64Guest'),
    ('windows', 'windows', 10, 0, 'x86_64', 'Client', 'windows9_64Guest'),
    ('windows', 'windows', 10, 0, 'x86_64', 'Server Core',
     'windows9Server64Guest'),
    ('windows', 'windows', 10, 0, 'x86_64', 'Nano Server',
     'windows9Server64Guest'),
    ('windows', 'windows', 6, 1, 'x86_64', 'Client', 'windows7_64Guest'),
    ('windows', 'windows', 6, 1, 'i686', 'Client', 'windows7Guest'),
    ('windows', 'windows', 6, 3, 'x86_64', 'Server',
     'windows8Server64Guest'),
    ('windows', 'windows', 6, 0, 'x86_64', 'Server', 'winLonghorn64Guest'),
    ('windows', 'windows', 5, 2, 'x86_64', 'Client', 'winXPPro64Guest'),
    ('windows', 'windows', 4, 0, 'i686', 'Client', None),
    ('freebsd', 'freebsd', 13, 2, 'x86_64', None, 'freebsd64Guest'),
    ('hurd', None, 0, 0, 'i686', None, None),
]


@pytest.mark.parametrize(
    'os_type, distro, major, minor, arch, variant, name', _VMWARE_CASES)
def test_vmware_ostype(os_type, distro, major, minor, arch, variant, name):
    assert normalise.vmware_ostype(os_type, distro, major, minor, arch,
                                   variant) == name


def test_vmware_ostype_is_only_set_for_vmdk():
    findings = _linux(guest_distro='ubuntu', guest_major_version=22)
    assert _props(findings, 'vmdk')[0]['vmware_ostype'] == 'ubuntu64Guest'
    assert 'vmware_ostype' not in _props(findings, 'qcow2')[0]


def test_every_value_emitted_is_in_the_vocabulary():
    # All combinations of the findings that drive a choice: whatever
    # libguestfs says, nothing outside Glance's vocabulary comes out.
    distros = list(normalise.GUESTFS_DISTROS) + [
        None, 'redhat-based', 'oraclelinux', 'coreos', 'windows']
    arches = ['x86_64', 'i386', 'aarch64', 'arm', 'riscv64', 'unknown']
    for os_type, distro, major, minor, arch, variant in itertools.product(
            ['linux', 'windows', 'freebsd', 'unknown'], distros,
            [0, 5, 6, 7, 10, 12, 22], [0, 1, 3], arches,
            [None, 'Server', 'Client']):
        findings = _linux(guest_os_type=os_type, guest_distro=distro,
                          guest_major_version=major,
                          guest_minor_version=minor, guest_arch=arch,
                          guest_product_variant=variant,
                          guest_qemu_guest_agent=True,
                          guest_cloud_init='enabled',
                          guest_cloud_init_user='admin')
        properties, _ = _props(findings, 'vmdk')
        for name, value in properties.items():
            rule = normalise.VOCABULARY[name]
            assert rule.allowed is None or value in rule.allowed, (name,
                                                                   value)


def test_merge_maps_guest_findings_and_keeps_them_as_details():
    result = normalise.merge(
        {'format': 'vmdk', 'virtual_size': 1},
        _linux(guest_distro='archlinux', guest_os_release_id='arch',
               warnings=['from the guest stage']))
    assert result.properties['os_distro'] == 'arch'
    assert result.properties['vmware_ostype'] == 'otherLinux64Guest'
    assert result.details['guest_distro'] == 'archlinux'
    assert result.warnings == ['from the guest stage']


@pytest.mark.parametrize('documents, user', [
    ([], None),
    ([{'system_info': {'default_user': {'name': 'ubuntu'}}}], 'ubuntu'),
    # A later file (cloud.cfg.d, in name order) wins, key by key.
    ([{'system_info': {'distro': 'ubuntu',
                       'default_user': {'name': 'ubuntu', 'shell': 'sh'}}},
      {'system_info': {'default_user': {'name': 'ops'}}}], 'ops'),
    ([{'system_info': {'default_user': {'name': 'ops'}}},
      {'system_info': {'distro': 'ubuntu'}}], 'ops'),
    # The old spelling wins over system_info.
    ([{'user': 'legacy',
       'system_info': {'default_user': {'name': 'ubuntu'}}}], 'legacy'),
    ([{'user': {'name': 'legacy'}}], 'legacy'),
    # users without "default": the default user is not created.
    ([{'users': ['alice'],
       'system_info': {'default_user': {'name': 'ubuntu'}}}], None),
    ([{'users': 'default, alice',
       'system_info': {'default_user': {'name': 'ubuntu'}}}], 'ubuntu'),
    ([{'users': ['default', {'name': 'alice'}],
       'system_info': {'default_user': {'name': 'ubuntu'}}}], 'ubuntu'),
    # Nonsense types are ignored, never an exception.
    ([{'system_info': ['x']}, {'user': 7}], None),
])
def test_cloud_init_default_user(documents, user):
    assert linux.cloud_init_default_user(documents) == user


def test_parse_os_release():
    fields = linux.parse_os_release(
        b'# comment\nNAME="Ubuntu"\nID=ubuntu\nVERSION_ID="22.04"\n'
        b"PRETTY_NAME='Ubuntu 22.04.3 LTS'\nnot a field\n\nEMPTY=\n")
    assert fields == {'NAME': 'Ubuntu', 'ID': 'ubuntu',
                      'VERSION_ID': '22.04',
                      'PRETTY_NAME': 'Ubuntu 22.04.3 LTS', 'EMPTY': ''}


# Placing roots on drives (inspectors/guest.py's isolation rules). A real
# appliance can produce only some of these situations with libguestfs
# 1.48 (tests/functional/test_guest.py has clones and LVM clones); the
# others (a /usr merged from another drive, md arrays and btrfs shared by
# drives, roots nobody can place) are answered here by a scripted
# stand-in for the appliance's calls.

class ScriptedAppliance(object):
    """Answers the libguestfs calls guest.py makes, from a script."""

    def __init__(self, drives, partitions, roots, **answers):
        self.images = [guest.GuestImage('/copy/%d' % k, 'raw', 'img%d' % k)
                       for k in range(drives)]
        self.devices = ['/dev/sd%s' % chr(ord('a') + k)
                        for k in range(drives)]
        self.partitions = partitions
        self.roots = roots
        self.answers = answers
        self.calls = []

    def call(self, name, *args, **kwargs):
        self.calls.append(name)
        if name == 'list_partitions':
            return sorted(self.partitions)
        if name == 'blkid':
            return self.partitions.get(args[0], {})
        if name == 'inspect_os':
            return list(self.roots)
        if name == 'inspect_get_mountpoints':
            return self.answers.get('mountpoints', {}).get(args[0], {})
        if name in self.answers:
            answer = self.answers[name]
            return answer(*args) if callable(answer) else answer
        defaults = {'inspect_get_type': 'linux',
                    'inspect_get_distro': 'fedora',
                    'inspect_get_major_version': 39,
                    'inspect_get_minor_version': 0,
                    'is_file': False, 'is_dir': False, 'ls': []}
        return defaults.get(name, 'unknown' if name.startswith(
            'inspect_get_') else None)


def _ext4(uuid):
    return {'TYPE': 'ext4', 'UUID': uuid, 'PART_ENTRY_TYPE': '0x83'}


def test_roots_are_placed_on_their_own_drive_whatever_their_fstab_says():
    # Clones: same UUIDs, and each fstab resolved to the other drive.
    appliance = ScriptedAppliance(
        2, {'/dev/sda1': _ext4('u1'), '/dev/sdb1': _ext4('u1')},
        ['/dev/sda1', '/dev/sdb1'],
        mountpoints={'/dev/sda1': {'/': '/dev/sdb1'},
                     '/dev/sdb1': {'/': '/dev/sda1'}})
    answers = census.answer_drives(appliance)
    assert [a['guest_root'] for a in answers] == ['/dev/sda1', '/dev/sda1']
    assert all(a['guest_distro'] == 'fedora' for a in answers)


def test_a_usr_resolved_on_another_drive_is_redone_alone():
    appliance = ScriptedAppliance(
        2, {'/dev/sda1': _ext4('r'), '/dev/sda2': _ext4('u'),
            '/dev/sdb1': _ext4('r'), '/dev/sdb2': _ext4('u')},
        ['/dev/sda1', '/dev/sdb1'],
        mountpoints={'/dev/sda1': {'/': '/dev/sda1', '/usr': '/dev/sda2'},
                     '/dev/sdb1': {'/': '/dev/sdb1', '/usr': '/dev/sda2'}})
    answers = census.answer_drives(appliance)
    assert answers[0]['guest_roots'] == 1
    assert answers[1] is census.REDO_ALONE


def test_alone_the_same_answer_is_accepted():
    appliance = ScriptedAppliance(
        1, {'/dev/sda1': _ext4('r'), '/dev/sda2': _ext4('u')},
        ['/dev/sda1'],
        mountpoints={'/dev/sda1': {'/': '/dev/sda1', '/usr': '/dev/sda2'}})
    answers = census.answer_drives(appliance)
    assert answers[0]['guest_root'] == '/dev/sda1'


def _pv(uuid):
    return {'TYPE': 'LVM2_member', 'UUID': uuid, 'PART_ENTRY_TYPE': '0x8e'}


def test_volume_groups_of_one_name_entangle_their_drives():
    appliance = ScriptedAppliance(
        3, {'/dev/sda1': _pv('AAAA-1'), '/dev/sdb1': _pv('BBBB-2'),
            '/dev/sdc1': _ext4('c')},
        ['/dev/sdc1'], vgs=['vg0', 'vg0'])
    answers = census.answer_drives(appliance)
    assert answers[:2] == [census.REDO_ALONE, census.REDO_ALONE]
    assert answers[2]['guest_root'] == '/dev/sda1'


def test_a_cloned_pv_entangles_its_drives_and_a_clean_vg_is_placed():
    appliance = ScriptedAppliance(
        3, {'/dev/sda1': _pv('AAAA-1'), '/dev/sdb1': _pv('aaaa1'),
            '/dev/sdc1': _pv('CCCC-3')},
        ['/dev/vgc/root'], vgs=['vga', 'vgc'],
        vgpvuuids=lambda vg: {'vga': ['AAAA1'], 'vgc': ['CCCC3']}[vg])
    answers = census.answer_drives(appliance)
    assert answers[:2] == [census.REDO_ALONE, census.REDO_ALONE]
    assert answers[2]['guest_root'] == '/dev/vgc/root'


def test_a_volume_group_spanning_drives_is_nobodys_root():
    appliance = ScriptedAppliance(
        3, {'/dev/sda1': _pv('A'), '/dev/sdb1': _pv('B'),
            '/dev/sdc1': _ext4('c')},
        ['/dev/big/root', '/dev/sdc1'], vgs=['big'],
        vgpvuuids=lambda vg: ['A', 'B'])
    answers = census.answer_drives(appliance)
    assert answers[:2] == [census.REDO_ALONE, census.REDO_ALONE]
    assert answers[2]['guest_roots'] == 1


@pytest.mark.parametrize('kind', ['btrfs', 'linux_raid_member',
                                  'zfs_member'])
def test_kernel_keyed_identifiers_shared_by_drives_entangle_them(kind):
    shared = {'TYPE': kind, 'UUID': 'same'}
    appliance = ScriptedAppliance(
        3, {'/dev/sda1': shared, '/dev/sdb1': dict(shared),
            '/dev/sdc1': _ext4('c')},
        ['/dev/sdc1'], list_md_devices=[])
    answers = census.answer_drives(appliance)
    assert answers[:2] == [census.REDO_ALONE, census.REDO_ALONE]
    assert answers[2]['guest_roots'] == 1


def test_a_root_nobody_can_place_sends_every_drive_alone():
    appliance = ScriptedAppliance(
        2, {'/dev/sda1': _ext4('a'), '/dev/sdb1': _ext4('b')},
        ['/dev/sda1', '/dev/mystery0'])
    assert census.answer_drives(appliance) == [census.REDO_ALONE] * 2


def test_all_drives_entangled_means_no_inspect_os():
    appliance = ScriptedAppliance(
        2, {'/dev/sda1': _pv('A'), '/dev/sdb1': _pv('A')}, [],
        vgs=['vg0'], vgpvuuids=lambda vg: ['A'])
    assert census.answer_drives(appliance) == [census.REDO_ALONE] * 2
    assert 'inspect_os' not in appliance.calls


def test_several_roots_on_one_drive_are_a_warning_not_a_guess():
    appliance = ScriptedAppliance(
        1, {'/dev/sda1': _ext4('a'), '/dev/sda2': _ext4('b')},
        ['/dev/sda1', '/dev/sda2'])
    answer, = census.answer_drives(appliance)
    assert answer['guest_roots'] == 2
    assert 'guest_os_type' not in answer
    assert '2 operating systems' in answer['warnings'][0]


def test_an_esp_with_a_loader_makes_uefi():
    esp = {'TYPE': 'vfat', 'UUID': 'E', 'PART_ENTRY_SCHEME': 'gpt',
           'PART_ENTRY_TYPE': 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'}
    listings = {'/': ['efi'], '/efi': ['boot', 'notes.txt'],
                '/efi/boot': ['grubx64.efi', 'BOOTX64.EFI', 'x.cfg']}
    # A signed PE loader, and a file named .efi that is no PE image.
    files = {'/efi/boot/BOOTX64.EFI': winformats.efi_loader('test'),
             '/efi/boot/grubx64.efi': b'#!/bin/sh\n'}
    appliance = ScriptedAppliance(
        1, {'/dev/sda1': esp, '/dev/sda2': dict(_ext4('r'),
                                                PART_ENTRY_SCHEME='gpt')},
        ['/dev/sda2'],
        ls=lambda d: listings.get(d, []),
        is_dir=lambda d, **kw: d in listings,
        is_file=lambda p, **kw: p in files,
        filesize=lambda p: len(files[p]),
        pread=lambda p, count, offset: files[p][offset:offset + count],
        pread_device=lambda d, count, offset: b'\0' * count)
    answer, = census.answer_drives(appliance)
    assert answer['guest_firmware'] == 'uefi'
    assert answer['guest_partition_table'] == 'gpt'
    assert answer['guest_mbr_boot_code'] == 'empty'
    assert answer['guest_efi_loaders'] == ['/efi/boot/BOOTX64.EFI']
    assert answer['guest_efi_fallback'] == '/efi/boot/BOOTX64.EFI'
    assert answer['guest_secure_boot_chain'] == 'signed'


# What Nova must give a guest to boot it (normalise.boot_properties).

def _windows(**findings):
    base = {'guest_roots': 1, 'guest_os_type': 'windows',
            'guest_distro': 'windows', 'guest_arch': 'x86_64',
            'guest_major_version': 10, 'guest_minor_version': 0}
    base.update(findings)
    return base


_BOOT_PROPERTIES = ('hw_firmware_type', 'os_secure_boot', 'hw_machine_type',
                    'hw_tpm_version', 'hw_disk_bus', 'hw_scsi_model',
                    'hw_vif_model')


def _boot(findings):
    properties, warnings = _props(findings)
    return {k: v for k, v in properties.items()
            if k in _BOOT_PROPERTIES}, warnings


@pytest.mark.parametrize('findings, expected', [
    # Windows 11 on UEFI, signed boot manager, no virtio drivers.
    (_windows(guest_firmware='uefi', guest_secure_boot_chain='signed',
              guest_windows_product='Windows 11',
              guest_disk_buses=['sata'], guest_nic_models=['e1000e']),
     {'hw_firmware_type': 'uefi', 'os_secure_boot': 'optional',
      'hw_machine_type': 'q35', 'hw_tpm_version': '2.0',
      'hw_disk_bus': 'sata', 'hw_vif_model': 'e1000e'}),
    # Server 2022 with virtio drivers on BIOS: Nova's defaults boot it.
    (_windows(guest_firmware='bios', guest_windows_product='Windows Server '
              '2022', guest_disk_buses=['virtio', 'virtio-scsi', 'ide'],
              guest_nic_models=['virtio']),
     {'hw_firmware_type': 'bios'}),
    # Only virtio-scsi.
    (_windows(guest_disk_buses=['virtio-scsi', 'ide'],
              guest_nic_models=['virtio']),
     {'hw_disk_bus': 'scsi', 'hw_scsi_model': 'virtio-scsi'}),
    # IDE only, unsigned UEFI loaders: no Secure Boot, no q35.
    (_windows(guest_firmware='uefi', guest_secure_boot_chain='unsigned',
              guest_disk_buses=['ide'], guest_nic_models=['e1000']),
     {'hw_firmware_type': 'uefi', 'hw_disk_bus': 'ide',
      'hw_vif_model': 'e1000'}),
    # A hybrid disk boots on Nova's default BIOS: nothing to set, even
    # with a signed chain.
    (_linux(guest_firmware='hybrid', guest_secure_boot_chain='signed',
            guest_disk_buses=['virtio'], guest_nic_models=['virtio']), {}),
    # Evidence that could not be read sets nothing.
    (_linux(guest_firmware=None, guest_disk_buses=None,
            guest_nic_models=None), {}),
    (_linux(guest_disk_buses=['sata', 'ide'], guest_nic_models=['virtio']),
     {'hw_firmware_type': 'bios', 'hw_disk_bus': 'sata'}),
])
def test_boot_properties_from_evidence(findings, expected):
    properties, warnings = _boot(findings)
    assert properties == expected
    assert warnings == []


def test_no_driver_for_any_bus_is_a_warning_not_a_guess():
    properties, warnings = _boot(_windows(guest_disk_buses=[],
                                          guest_nic_models=[]))
    assert 'hw_disk_bus' not in properties
    assert 'hw_vif_model' not in properties
    assert len(warnings) == 2
    # q35 (Secure Boot) has no IDE bus.
    properties, warnings = _boot(_windows(
        guest_firmware='uefi', guest_secure_boot_chain='signed',
        guest_disk_buses=['ide'], guest_nic_models=['virtio']))
    assert 'hw_disk_bus' not in properties
    assert 'on q35' in warnings[0]


def test_cloudbase_init_user_is_the_windows_admin_user():
    properties, _ = _props(_windows(guest_cloudbase_init='enabled',
                                    guest_cloudbase_init_user='Admin'))
    assert properties['os_admin_user'] == 'Admin'
    properties, _ = _props(_windows(guest_cloudbase_init='disabled',
                                    guest_cloudbase_init_user='Admin'))
    assert 'os_admin_user' not in properties
    properties, warnings = _props(_windows(
        guest_cloudbase_init='enabled',
        guest_cloudbase_init_user='Admin User'))
    assert 'os_admin_user' not in properties
    assert 'cloudbase-init username' in warnings[0]


def test_every_boot_value_is_in_the_vocabulary():
    for firmware, chain, product, buses, nics in itertools.product(
            ['uefi', 'bios', 'hybrid', None], ['signed', 'unsigned', None],
            ['Windows 11', 'Windows 10', None],
            [None, [], ['virtio'], ['virtio-scsi'], ['sata'], ['ide'],
             ['sata', 'ide']],
            [None, [], ['virtio'], ['e1000e'], ['e1000'], ['rtl8139']]):
        properties, _ = _props(_windows(
            guest_firmware=firmware, guest_secure_boot_chain=chain,
            guest_windows_product=product, guest_disk_buses=buses,
            guest_nic_models=nics))
        assert normalise.validate(dict(properties), []) == properties


@pytest.mark.parametrize('virtual_size, min_disk', [
    (1, 1), (64 * 1024 * 1024, 1), (1024 ** 3, 1), (1024 ** 3 + 1, 2),
    (40 * 1024 ** 3, 40), (0, None), (None, None),
])
def test_min_disk_is_the_virtual_size_in_gib_rounded_up(virtual_size,
                                                        min_disk):
    assert normalise.min_disk(virtual_size) == min_disk
    result = normalise.merge({'format': 'raw', 'virtual_size': virtual_size})
    assert result.properties.get('min_disk') == min_disk
