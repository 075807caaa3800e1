"""The pure parts of the guest probes: bytes and text in, facts out.

No appliance: registry values, PE headers, Windows builds, cloudbase-init
configurations, boot loader menus, initramfs archives (built here with
testkit.linuxboot, as the test guests hold them) and the readiness
tables. tests/functional/test_guest_boot.py runs the same code on real
guests in a real appliance; tests/functional/test_initramfs.py compares
the archive reader with lsinitramfs.
"""

import collections
import gzip
import lzma
import struct

import pytest

from qimgintrospect import exception
from qimgintrospect.inspectors.guest.probes import common
from qimgintrospect.inspectors.guest.probes import devices
from qimgintrospect.inspectors.guest.probes import firmware
from qimgintrospect.inspectors.guest.probes import initramfs
from qimgintrospect.inspectors.guest.probes import kernels
from qimgintrospect.inspectors.guest.probes import pe
from qimgintrospect.inspectors.guest.probes import registry
from qimgintrospect.inspectors.guest.probes import unbootable
from qimgintrospect.inspectors.guest.probes import windows
from qimgintrospect.inspectors.guest.probes import windows_versions
from testkit import linuxboot
from testkit import windowsimages
from testkit import winformats


# Registry values.

@pytest.mark.parametrize('kind, data, value', [
    (registry.REG_SZ, 'Server'.encode('utf-16-le') + b'\0\0', 'Server'),
    (registry.REG_SZ, 'abc'.encode('utf-16-le'), 'abc'),  # no NUL
    (registry.REG_SZ, b'a\0b', 'a'),  # odd length: the last byte dropped
    (registry.REG_EXPAND_SZ, '%SystemRoot%\\x\0junk'.encode('utf-16-le'),
     '%SystemRoot%\\x'),
    (registry.REG_DWORD, struct.pack('<I', 4), 4),
    (registry.REG_DWORD, b'\1\0', None),
    (registry.REG_DWORD_BIG_ENDIAN, struct.pack('>I', 7), 7),
    (registry.REG_QWORD, struct.pack('<Q', 2 ** 40), 2 ** 40),
    (registry.REG_MULTI_SZ, 'a\0bb\0\0'.encode('utf-16-le'), ['a', 'bb']),
    (registry.REG_BINARY, b'\1\2', b'\1\2'),
    # Control characters from a hostile hive are not kept.
    (registry.REG_SZ, 'x\x1b[2Jy\0'.encode('utf-16-le'), 'x[2Jy'),
])
def test_registry_values_decode(kind, data, value):
    assert registry.decode(kind, data) == value


def test_registry_strings_are_bounded():
    huge = ('A' * 100000).encode('utf-16-le')
    assert len(registry.decode(registry.REG_SZ, huge)) <= 255
    many = ''.join('%d\0' % i for i in range(1000)).encode('utf-16-le')
    assert len(registry.decode(registry.REG_MULTI_SZ, many)) == 64


# Which Windows.

@pytest.mark.parametrize('build, kind, edition, version', [
    ('14393', 'Server', 'ServerStandard', '2016'),
    ('17763', 'Server', 'ServerDatacenter', '2019'),
    ('20348', 'Server Core', 'ServerDatacenterCor', '2022'),
    ('26100', 'Server', 'ServerDatacenter', '2025'),
    # The same builds as clients: Windows 10 LTSB/LTSC, Windows 11 24H2.
    ('14393', 'Client', 'EnterpriseS', '10'),
    ('17763', 'Client', 'EnterpriseS', '10'),
    ('26100', 'Client', 'Professional', '11'),
    ('10240', 'Client', 'Professional', '10'),
    ('19045', 'Client', 'Enterprise', '10'),
    ('22000', 'Client', 'Core', '11'),
    ('22631', 'Client', 'Professional', '11'),
    # No InstallationType (older builds): EditionID decides.
    ('20348', None, 'ServerStandard', '2022'),
    ('19045', None, 'Professional', '10'),
    (22631, 'Client', None, '11'),
])
def test_windows_products_from_the_build(build, kind, edition, version):
    product, why = windows_versions.product(build, kind, edition)
    assert why is None
    assert product.version == version


@pytest.mark.parametrize('build, kind, edition', [
    ('19042', 'Server Core', 'ServerDatacenterCor'),  # SAC 20H2
    ('25398', 'Server', 'ServerDatacenter'),  # 23H2 annual channel
    ('27000', 'Client', 'Professional'),  # newer than the table
    ('9600', 'Client', 'Professional'),  # 8.1: NT 6.3
    ('20348', 'Client', 'ServerDatacenter'),  # contradiction
    (None, 'Server', 'ServerDatacenter'),
    ('abc', 'Server', 'ServerDatacenter'),
    ('20348', 'Workstation', None),
])
def test_no_product_is_guessed(build, kind, edition):
    product, why = windows_versions.product(build, kind, edition)
    assert product is None and why


def test_the_test_guests_products_match_the_table():
    for name, guest in windowsimages.GUESTS.items():
        product, _ = windows_versions.product(
            guest.build, guest.installation_type, guest.edition_id)
        assert product.name == guest.product, name


def test_libosinfo_and_vmware_ids_are_details_only():
    assert windows_versions.SERVER_BUILDS[20348].osinfo == 'win2k22'
    assert windows_versions.WINDOWS_11.osinfo == 'win11'
    assert windows_versions.SERVER_BUILDS[26100].vmware == (
        'windows2022srvNext_64Guest')


# cloudbase-init.

@pytest.mark.parametrize('user', ['cloudadmin', windowsimages.
                                  CLOUDBASE_DEFAULT_USER])
def test_cloudbase_init_user_as_the_installer_writes_it(user):
    data = windowsimages.cloudbase_init_conf(user)
    expected = 'Admin' if user is windowsimages.CLOUDBASE_DEFAULT_USER \
        else user
    assert windows.cloudbase_init_user(data) == expected


@pytest.mark.parametrize('data, user', [
    (b'[DEFAULT]\nusername = ops\n', 'ops'),
    (b'\xef\xbb\xbf[DEFAULT]\r\nusername=ops\r\n', 'ops'),  # BOM, CRLF
    (b'[DEFAULT]\nusername=a\nusername=b\n', 'b'),  # the last one wins
    (b'[DEFAULT]\nUsername=ops\n', 'Admin'),  # names keep their case
    (b'[other]\nusername=ops\n', 'Admin'),
    (b'[DEFAULT]\n# username=ops\n', 'Admin'),
    (b'username=ops\n', None),  # no section: not an INI file
    (b'[DEFAULT\n', None),
])
def test_cloudbase_init_user(data, user):
    assert windows.cloudbase_init_user(data) == user


@pytest.mark.parametrize('image_path, path', [
    ('"C:\\Program Files\\Cloudbase Solutions\\Cloudbase-Init\\Python\\'
     'Scripts\\cloudbase-init.exe" --config-file "C:\\Program Files\\'
     'Cloudbase Solutions\\Cloudbase-Init\\conf\\cloudbase-init.conf"',
     '/Program Files/Cloudbase Solutions/Cloudbase-Init/conf/'
     'cloudbase-init.conf'),
    ('cloudbase-init.exe --config-file=c:\\cbi.conf', '/cbi.conf'),
    ('cloudbase-init.exe --config-file D:\\cbi.conf', None),
    ('cloudbase-init.exe', None),
    (None, None),
])
def test_cloudbase_init_config_file_from_its_service(image_path, path):
    assert windows.config_file_of(image_path) == path


@pytest.mark.parametrize('signature, state', [
    (b'HIBR', 'hibernated'), (b'hibr', 'hibernated'), (b'RSTR', 'hibernated'),
    (b'wake', 'clean'), (b'WAKE', 'clean'), (b'\0\0\0\0', 'clean'),
    (b'MZ\0\0', 'unknown'), (b'', 'unknown'),
])
def test_hibernation_signatures(signature, state):
    assert windows.hibernation_state(signature) == state


# PE images.

def test_pe_headers_of_an_unsigned_and_a_signed_loader():
    unsigned = winformats.efi_loader()
    headers = pe.parse_headers(unsigned[:pe.HEADER_BYTES])
    assert headers == pe.Headers('x86_64', 'efi_application', None)
    assert not pe.signature_present(headers, len(unsigned), b'')
    signed = winformats.efi_loader(winformats.TEST_SIGNER)
    headers = pe.parse_headers(signed[:pe.HEADER_BYTES])
    offset, size = headers.certificate
    assert offset + size == len(signed)
    assert pe.signature_present(headers, len(signed),
                                signed[offset:offset + 8])


def test_a_signature_pointing_outside_the_file_is_none():
    signed = winformats.efi_loader(winformats.TEST_SIGNER)
    headers = pe.parse_headers(signed[:pe.HEADER_BYTES])
    offset = headers.certificate[0]
    assert not pe.signature_present(headers, len(signed) - 1,
                                    signed[offset:offset + 8])
    wrong = bytearray(signed[offset:offset + 8])
    wrong[6] = 1  # X.509, not PKCS#7 SignedData
    assert not pe.signature_present(headers, len(signed), bytes(wrong))


@pytest.mark.parametrize('machine, name', [('x86_64', 'x86_64'),
                                           ('aarch64', 'aarch64'),
                                           ('i386', 'i686')])
def test_pe_machine_and_subsystem(machine, name):
    image = winformats.pe_image(machine=machine, subsystem='native')
    assert pe.parse_headers(image) == pe.Headers(name, 'native', None)


@pytest.mark.parametrize('head', [
    b'', b'MZ', b'\x7fELF' + b'\0' * 100,
    b'MZ' + b'\0' * 0x3a + struct.pack('<I', 0xffff0000),
    b'MZ' + b'\0' * 0x3a + struct.pack('<I', 0x40) + b'PE\0\0' + b'\0' * 30,
])
def test_what_is_not_a_pe_image(head):
    assert pe.parse_headers(head) is None


# Boot code.

def test_boot_code_kinds():
    assert firmware.boot_code_kind(b'\0' * 440) == 'empty'
    code = bytearray(440)
    code[linuxboot.GRUB_MBR_MARKER_OFFSET:linuxboot.GRUB_MBR_MARKER_OFFSET
         + len(linuxboot.GRUB_MBR_MARKER)] = linuxboot.GRUB_MBR_MARKER
    assert firmware.boot_code_kind(bytes(code)) == 'grub'
    assert firmware.boot_code_kind(windowsimages._mbr_boot_code()) == (
        'windows')
    assert firmware.boot_code_kind(b'\xfa\x33\xc0' + b'\0' * 437) == (
        'unrecognised')


@pytest.mark.parametrize('efi, bios, kind', [
    (['/EFI/BOOT/BOOTX64.EFI'], 'grub', 'hybrid'),
    (['/EFI/BOOT/BOOTX64.EFI'], None, 'uefi'),
    ([], 'windows', 'bios'),
    ([], None, None),
])
def test_firmware_kind(efi, bios, kind):
    assert firmware.firmware_kind(efi, bios) == kind


# Boot loader menus.

def test_debian_grub_menu_as_the_test_guests_hold_it():
    boot = linuxboot.Boot('debian', (linuxboot.Kernel('6.1.0-13-amd64'),
                                     linuxboot.Kernel('6.1.0-12-amd64')))
    defaults, entries = kernels.parse_grub_cfg(linuxboot.grub_menu(boot))
    entry = kernels.grub_default(defaults, entries, {})
    assert entry.linux == '/boot/vmlinuz-6.1.0-13-amd64'
    assert entry.initrd == '/boot/initrd.img-6.1.0-13-amd64'


# update-grub's shape, shorter titles and ids.
_UPDATE_GRUB = b'''\
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
else
   set default="%s"
fi
menuentry 'Debian' --class debian $menuentry_id_option 'simple' {
\tlinux\t/vmlinuz-6.1.0-13-amd64 root=UUID=1 ro quiet
\tinitrd\t/initrd.img-6.1.0-13-amd64
}
submenu 'Advanced options' $menuentry_id_option 'advanced' {
\tmenuentry 'Linux 13' $menuentry_id_option 'l13' {
\t\tlinux\t/vmlinuz-6.1.0-13-amd64 root=UUID=1 ro quiet
\t\tinitrd\t/initrd.img-6.1.0-13-amd64
\t}
\tmenuentry 'Linux 12' $menuentry_id_option 'l12' {
\t\tlinux\t/vmlinuz-6.1.0-12-amd64 root=UUID=1 ro quiet
\t\tinitrd\t/intel-ucode.img /initrd.img-6.1.0-12-amd64
\t}
}
'''


@pytest.mark.parametrize('default, env, kernel', [
    ('0', {}, '/vmlinuz-6.1.0-13-amd64'),
    ('1>1', {}, '/vmlinuz-6.1.0-12-amd64'),
    ('advanced>l12', {}, '/vmlinuz-6.1.0-12-amd64'),
    ('Advanced options>Linux 12', {}, '/vmlinuz-6.1.0-12-amd64'),
    ('${saved_entry}', {'saved_entry': '1>1'}, '/vmlinuz-6.1.0-12-amd64'),
    ('saved', {'saved_entry': '1>1'}, '/vmlinuz-6.1.0-12-amd64'),
    ('${saved_entry}', {}, '/vmlinuz-6.1.0-13-amd64'),
    ('no such entry', {}, '/vmlinuz-6.1.0-13-amd64'),
    ('7', {}, '/vmlinuz-6.1.0-13-amd64'),
    # A whole submenu boots its first entry.
    ('1', {}, '/vmlinuz-6.1.0-13-amd64'),
])
def test_grub_default_as_update_grub_writes_it(default, env, kernel):
    defaults, entries = kernels.parse_grub_cfg(_UPDATE_GRUB % default.encode())
    assert [e.title for e in entries] == ['Debian', 'Advanced options']
    assert kernels.grub_default(defaults, entries, env).linux == kernel


def test_several_initrds_the_last_is_the_kernels():
    defaults, entries = kernels.parse_grub_cfg(_UPDATE_GRUB % b'1>1')
    entry = kernels.grub_default(defaults, entries, {})
    assert entry.initrd == '/initrd.img-6.1.0-12-amd64'
    fields = kernels.parse_bls_entry(
        b'title x\nversion 6.5\nlinux /vmlinuz-6.5\n'
        b'initrd /intel-ucode.img /initramfs-6.5.img\n')
    assert fields['initrd'] == '/initramfs-6.5.img'


def test_bls_entries_and_grubenv_as_the_test_guests_hold_them():
    boot = linuxboot.Boot('rhel', (
        linuxboot.Kernel('5.14.0-362.el9.x86_64'),
        linuxboot.Kernel('5.14.0-362.el9.x86_64', rescue=True)))
    env = kernels.parse_grubenv(linuxboot.grubenv(boot))
    assert env['saved_entry'] == linuxboot.bls_entry_name(
        boot, boot.kernels[0])[:-len('.conf')]
    entry = kernels.parse_bls_entry(linuxboot.bls_entry(boot,
                                                        boot.kernels[0]))
    assert entry['linux'] == '/boot/vmlinuz-5.14.0-362.el9.x86_64'
    assert entry['version'] == '5.14.0-362.el9.x86_64'


def test_grub_cfg_that_is_not_one():
    for data in (b'', b'\xff\xfe garbage {\n}}}\n', b'menuentry "x {\n',
                 b'set default=\n' * 3):
        defaults, entries = kernels.parse_grub_cfg(data)
        assert kernels.grub_default(defaults, entries, {}) is None


def test_versions_sort_as_kernels_do():
    versions = ['5.14.0-70.el9', '5.14.0-362.8.1.el9_3', '5.14.0-284.el9',
                '0-rescue-abc']
    assert max(versions, key=kernels.version_key) == '5.14.0-362.8.1.el9_3'
    assert min(versions, key=kernels.version_key) == '0-rescue-abc'


@pytest.mark.parametrize('path, inside', [
    ('/boot/vmlinuz-6.1', '/boot/vmlinuz-6.1'),
    ('/vmlinuz-6.1', '/boot/vmlinuz-6.1'),
    ('(hd0,gpt2)/vmlinuz-6.1', '/boot/vmlinuz-6.1'),
    ('/boot/../../etc/shadow', '/boot/shadow'),
    ('..', None), ('', None),
])
def test_paths_a_menu_names_stay_in_boot(path, inside):
    assert kernels._in_boot(path) == inside


# Device readiness.

def test_linux_readiness_of_the_test_kernels():
    builtin = {'virtio_pci', 'virtio_blk', 'virtio_scsi', 'virtio_net'}
    ready = devices.linux(builtin, {'sd_mod', 'ahci'}, set())
    assert ready['guest_disk_buses'] == ['virtio', 'virtio-scsi', 'sata']
    assert ready['guest_nic_models'] == ['virtio']
    # VMware-made initramfs: virtio on disk only.
    on_disk = {'virtio_pci', 'virtio_blk', 'virtio_net', 'e1000'}
    ready = devices.linux(set(), {'ahci', 'ata_piix', 'sd_mod'}, on_disk)
    assert ready['guest_disk_buses'] == ['sata', 'ide']
    assert ready['guest_nic_models'] == ['virtio', 'e1000']
    assert ready['guest_device_evidence']['disk:virtio'] == (
        'virtio_pci on disk + virtio_blk on disk')


@pytest.mark.parametrize('path, name', [
    ('kernel/drivers/block/virtio_blk.ko', 'virtio_blk'),
    ('usr/lib/modules/5.14/kernel/drivers/scsi/sd_mod.ko.xz', 'sd_mod'),
    ('kernel/drivers/net/virtio-net.ko.zst', 'virtio_net'),
    ('kernel/x86/microcode/GenuineIntel.bin', None),
])
def test_module_names(path, name):
    assert devices.module_name(path) == name


class _Hive(object):
    """A SYSTEM hive as a dict of key -> {value: data}."""

    def __init__(self, keys):
        self.keys = {k.lower(): v for k, v in keys.items()}

    def has_key(self, key):
        return key.lower() in self.keys

    def value(self, key, name):
        return self.keys.get(key.lower(), {}).get(name)


class _Files(object):
    """An appliance whose mounted volume holds *paths*."""

    def __init__(self, paths):
        self.paths = {p.lower(): p for p in paths}

    def call(self, name, path):
        if name == 'case_sensitive_path':
            return self.paths.get(path.lower(), path)
        if name == 'exists':
            return path in self.paths.values()
        raise RuntimeError(name)


def _windows_ready(name):
    guest = windowsimages.GUESTS[name]
    layout = collections.namedtuple('L', 'mounted_device')(lambda: b'')
    keys = windowsimages.system_keys(guest, layout)
    files = ['/Windows/System32/drivers/%s.sys' % s for s in
             list(guest.drivers) + list(guest.inbox_storage)]
    return devices.windows(_Files(files), _Hive(keys), 'ControlSet001')


@pytest.mark.parametrize('name, buses, nics', [
    ('win2022', ['virtio', 'virtio-scsi', 'ide'], ['virtio']),
    ('win11', ['sata'], ['e1000e', 'e1000']),
    ('win2016', ['ide'], ['e1000']),
    ('win2019', ['virtio-scsi', 'ide'], ['virtio']),
    ('win2025', [], ['virtio']),
    ('win10', ['sata'], ['e1000e', 'e1000']),
])
def test_windows_readiness_of_the_test_guests(name, buses, nics):
    ready = _windows_ready(name)
    assert ready['guest_disk_buses'] == buses
    assert ready['guest_nic_models'] == nics


def test_a_storage_driver_that_does_not_start_at_boot_is_not_ready():
    evidence = _windows_ready('win2025')['guest_device_evidence']
    assert evidence['disk:virtio'] == 'viostor Start=3'
    assert evidence['disk:sata'] == 'storahci Start=3 | msahci absent'


# States that keep Windows from booting.

def test_hibernated_bitlocker_and_fast_startup_are_warnings_by_default():
    findings = {'guest_roots': 1, 'guest_hiberfil': 'hibernated',
                'guest_hiberfil_signature': 'HIBR',
                'guest_fast_startup': True, 'warnings': []}
    judged = unbootable.judge(dict(findings), refuse=False)
    assert judged['guest_unbootable'] == [exception.GUEST_HIBERNATED]
    assert judged['warnings'][0].endswith('(guest-hibernated)')
    assert 'Fast Startup' in judged['warnings'][0]
    refused = unbootable.judge(dict(findings), refuse=True)
    assert isinstance(refused, exception.ImageRefused)
    assert refused.code == exception.GUEST_HIBERNATED
    assert refused.exit_code == exception.EXIT_REFUSED


def test_fast_startup_alone_is_never_a_refusal():
    findings = {'guest_hiberfil': 'clean', 'guest_fast_startup': True}
    judged = unbootable.judge(dict(findings), refuse=True)
    assert judged['guest_unbootable'] == [exception.GUEST_FAST_STARTUP]


def test_bitlocker_volumes_are_found_in_the_census():
    drive = common.Drive('/dev/sdc', collections.OrderedDict([
        ('/dev/sdc1', {'TYPE': 'vfat'}),
        ('/dev/sdc3', {'TYPE': 'BitLocker', 'USAGE': 'crypto'})]),
        {'/dev/sdc1': '/dev/sda1', '/dev/sdc3': '/dev/sda3'})
    volumes = unbootable.bitlocker_volumes(drive)
    assert volumes == ['/dev/sda3']
    refused = unbootable.judge({'guest_roots': 0,
                                'guest_bitlocker_volumes': volumes}, True)
    assert refused.code == exception.GUEST_BITLOCKER
    assert 'operating system cannot be read' in refused.message


def test_nothing_to_say_is_nothing_said():
    findings = {'guest_hiberfil': 'clean', 'guest_fast_startup': False}
    assert unbootable.judge(dict(findings), True) == findings


# initramfs archives.

def _list(data, **kwargs):
    return initramfs.list_names(lambda o, c: data[o:o + c], len(data),
                                **kwargs)


def _members(count=3):
    return collections.OrderedDict(
        ('usr/lib/modules/6.1/kernel/m%d.ko' % i, b'x' * i)
        for i in range(count))


@pytest.mark.parametrize('compression', ['none', 'gzip', 'xz', 'zstd'])
@pytest.mark.parametrize('early', [False, True])
def test_initramfs_layouts(compression, early):
    boot = linuxboot.Boot('rhel', (linuxboot.Kernel(
        '1.0', compression=compression, early_cpio=early),))
    data = linuxboot.initramfs_image(boot, boot.kernels[0])
    listing = _list(data)
    assert listing.error is None and listing.complete
    names = set(listing.names)
    assert set(linuxboot.initramfs_members(boot, boot.kernels[0])) <= names
    assert ('kernel/x86/microcode/GenuineIntel.bin' in names) == early
    assert listing.segments[-1] == ('cpio' if compression == 'none'
                                    else compression)


def test_bzip2_and_lzma_segments_and_a_gzip_after_a_gzip():
    first = linuxboot.newc({'a': b'1'})
    second = linuxboot.newc({'b': b'2'})
    import bz2
    for data in (bz2.compress(first), lzma.compress(first,
                                                    lzma.FORMAT_ALONE),
                 gzip.compress(first) + gzip.compress(second)):
        listing = _list(data)
        assert listing.error is None, listing.error
        assert 'a' in listing.names


def test_enough_stops_the_listing():
    listing = _list(linuxboot.newc(_members(10)),
                    enough=lambda names: len(names) >= 4)
    assert len(listing.names) == 4
    assert not listing.complete and listing.error is None


def test_a_decompression_bomb_stops_at_the_limit():
    bomb = gzip.compress(linuxboot.newc({'big': b'\0' * (8 << 20)}))
    assert len(bomb) < 64 << 10
    listing = _list(bomb, limits={'max_expanded': 4 << 20})
    assert 'expands past the limit' in str(listing.error)
    assert listing.names == []


def test_too_many_entries_or_too_large_an_archive():
    data = linuxboot.newc(_members(50))
    assert 'more entries' in str(_list(data, limits={
        'max_entries': 10}).error)
    assert 'above' in str(_list(data, limits={'max_archive': 100}).error)


def _header(name_size=8, file_size=0, magic=b'070701'):
    fields = [1, 0o100644, 0, 0, 1, 0, file_size, 0, 0, 0, 0, name_size, 0]
    return magic + b''.join(b'%08X' % f for f in fields)


@pytest.mark.parametrize('data, error', [
    (_header(name_size=0x7fffffff), 'name size'),
    (_header(name_size=0), 'name size'),
    (_header()[:50], 'ends inside'),
    (_header() + b'abcdefgh', 'does not end in NUL'),
    (_header(file_size=0x10000) + b'name\0\0\0\0' + b'\0' * 2,
     'ends inside'),
    (_header().replace(b'00000008', b' 0000008', 1), 'not hexadecimal'),
    (_header().replace(b'00000008', b'0000_008', 1), 'not hexadecimal'),
    (b'070707' + b'0' * 200, 'unrecognised'),
    (b'\x1f\x8b\x08\x00' + b'\xff' * 40, 'corrupt'),
    (gzip.compress(linuxboot.newc(_members()))[:60], 'cut short'),
    (b'\xfd7zXZ\0' + b'\0' * 40, 'corrupt'),
    (b'\x28\xb5\x2f\xfd' + b'\xff' * 40, 'corrupt'),
    (b'\x02\x21\x4c\x18' + b'\0' * 40, 'lz4'),
    (b'\x89LZO' + b'\0' * 40, 'lzo'),
])
def test_hostile_archives_end_the_listing_with_a_reason(data, error):
    listing = _list(data)
    assert error in str(listing.error)
    assert not listing.complete


def test_what_was_listed_before_an_error_is_kept():
    data = linuxboot.newc(_members(3))[:-600] + b'\0' * 4 + b'garbage!'
    listing = _list(data)
    assert listing.names[:2] == ['usr', 'usr/lib']
    assert listing.error is not None


def test_a_read_that_fails_is_an_error_not_an_exception():
    listing = initramfs.list_names(lambda o, c: b'', 100)
    assert 'could not be read' in str(listing.error)
