"""The Windows guests and the boot guests, as libguestfs itself reads them.

testkit/windowsimages.py builds Windows guests without Windows, and the
BOOT_GUESTS of testkit/guestimages.py build Linux guests whose kernels
differ in how they drive virtio devices at boot. The guest probes are
tested against these guests, so here the guests are checked against the
readers that matter: libguestfs's own inspection (inspect_os and
inspect_get_*, hivex, blkid, file), GRUB's and the kernel's layouts, and
the distribution's initramfs lister (``lsinitramfs``).

ONE appliance over every guest (a launch costs 20-40 s under software
emulation), opened once for the module.
"""

import os
import shutil
import struct
import subprocess

from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
import pytest

from testkit import guestimages
from testkit import linuxboot
from testkit import windowsimages
from testkit import winformats

guestfs = pytest.importorskip('guestfs',
                              reason='python3-guestfs is not installed')
for _tool in ('guestfish', 'hivexregedit', 'sfdisk'):
    if shutil.which(_tool) is None:
        pytest.skip('%s is not installed' % _tool, allow_module_level=True)

# The first test also waits for the module's setup: two guestfish builds,
# one launch over twelve drives and inspect_os, about 10 minutes on a
# busy 2-core machine, over the suite's 900 s default when it is busier.
pytestmark = pytest.mark.timeout(1800)

WINDOWS = windowsimages.GUESTS
BOOT = guestimages.BOOT_GUESTS
READABLE_WINDOWS = [n for n, g in WINDOWS.items() if not g.bitlocker]
CONTROL_SET = 'ControlSet001'


@pytest.fixture(scope='module')
def guest_paths(tmp_path_factory):
    """name -> path of every Windows guest and every boot guest."""
    directory = tmp_path_factory.mktemp('guest-images')
    paths = windowsimages.build(directory / 'windows')
    paths.update(guestimages.build(directory / 'boot', list(BOOT)))
    return paths


class Appliance(object):
    """One launched appliance over every guest, inspected once."""

    def __init__(self, paths):
        self.names = list(paths)
        g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
        self.g = g
        g.set_backend('direct')
        g.set_backend_settings(guestimages.BACKEND_SETTINGS)
        for name in self.names:
            spec = WINDOWS.get(name) or BOOT[name]
            g.add_drive_opts(paths[name], readonly=True,
                             format=spec.disk_format)
        g.launch()
        self.devices = dict(zip(self.names, g.list_devices()))
        self.roots = {}
        for root in g.inspect_os():
            self.roots.setdefault(self.name_of(root), []).append(root)

    def name_of(self, device):
        for name, disk in self.devices.items():
            if device.startswith(disk) and device[len(disk):].isdigit():
                return name
        return None

    def partition(self, name, number):
        return '%s%d' % (self.devices[name], number)

    def root(self, name):
        roots = self.roots.get(name, [])
        assert len(roots) == 1, (name, roots)
        return roots[0]

    def mounted(self, device):
        self.g.umount_all()
        self.g.mount_ro(device, '/')
        return self

    def hive(self, path):
        """A hivex reader of the hive at *path* on the mounted root."""
        return _Hive(self.g, self.g.case_sensitive_path(path))

    def close(self):
        self.g.umount_all()
        self.g.shutdown()
        self.g.close()


class _Hive(object):
    def __init__(self, g, path):
        self.g = g
        g.hivex_open(path, write=False)

    def node(self, path):
        node = self.g.hivex_root()
        for part in path.split('\\'):
            node = self.g.hivex_node_get_child(node, part)
            if not node:
                return None
        return node

    def value(self, path, name):
        """A value's data: str for strings, int for DWORDs, else bytes."""
        node = self.node(path)
        if node is None:
            return None
        value = self.g.hivex_node_get_value(node, name)
        if not value:
            return None
        kind = self.g.hivex_value_type(value)
        if kind in (winformats.REG_SZ, winformats.REG_EXPAND_SZ):
            return self.g.hivex_value_string(value)
        data = self.g.hivex_value_value(value)
        if kind == winformats.REG_DWORD:
            return struct.unpack('<I', data)[0]
        return data

    def close(self):
        self.g.hivex_close()


@pytest.fixture(scope='module')
def appliance(guest_paths):
    appliance = Appliance(guest_paths)
    yield appliance
    appliance.close()


@pytest.mark.parametrize('name', READABLE_WINDOWS)
def test_libguestfs_inspects_each_windows_guest(appliance, name):
    spec = WINDOWS[name]
    g, root = appliance.g, appliance.root(name)
    assert g.inspect_get_type(root) == 'windows'
    assert g.inspect_get_distro(root) == 'windows'
    # Every Windows from 10 and Server 2016 on is NT 10.0.
    assert (g.inspect_get_major_version(root),
            g.inspect_get_minor_version(root)) == (10, 0)
    assert g.inspect_get_product_name(root) == spec.product_name
    assert g.inspect_get_product_variant(root) == spec.installation_type
    assert g.inspect_get_arch(root) == spec.machine
    assert g.inspect_get_hostname(root) == spec.hostname
    # C: found through MountedDevices: the disk signature and offset
    # (MBR) or the partition GUID (GPT) the builder recorded.
    assert g.inspect_get_drive_mappings(root) == {'C': root}


def test_libguestfs_names_the_servers_it_knows(appliance):
    # libosinfo short ids libguestfs derives from the product name; it
    # cannot tell Windows 11 from 10 (same NT version and ProductName)
    # nor, in 1.48, Server 2025 from 2016: the probes read the build.
    g = appliance.g
    assert {n: g.inspect_get_osinfo(appliance.root(n))
            for n in ('win2016', 'win2019', 'win2022', 'win10')} == {
        'win2016': 'win2k16', 'win2019': 'win2k19', 'win2022': 'win2k22',
        'win10': 'win10'}


@pytest.mark.parametrize('name', READABLE_WINDOWS)
def test_the_registry_holds_what_the_guest_is(appliance, name):
    spec = WINDOWS[name]
    appliance.mounted(appliance.root(name))
    software = appliance.hive('/Windows/System32/config/SOFTWARE')
    current = 'Microsoft\\Windows NT\\CurrentVersion'
    try:
        assert software.value(current, 'CurrentBuildNumber') == str(
            spec.build)
        assert software.value(current, 'EditionID') == spec.edition_id
        assert software.value(current, 'CurrentMajorVersionNumber') == 10
    finally:
        software.close()
    system = appliance.hive('/Windows/System32/config/SYSTEM')
    try:
        assert system.value('Select', 'Current') == 1
        services = CONTROL_SET + '\\Services\\'
        for service in windowsimages.VIRTIO_DRIVERS:
            assert system.value(services + service, 'Start') == (
                spec.drivers.get(service)), service
        assert (system.value(services + 'QEMU-GA', 'Start')
                == windowsimages.AUTO_START) == spec.guest_agent
        image_path = system.value(services + 'cloudbase-init', 'ImagePath')
        assert (image_path is not None) == (spec.cloudbase_init is not None)
        if image_path:
            assert '--config-file' in image_path
        assert system.value(
            CONTROL_SET + '\\Control\\Session Manager\\Power',
            'HiberbootEnabled') == spec.hiberboot
        # Windows 8+ binds a virtio-blk device to viostor through the
        # DriverDatabase.
        bound = system.node('DriverDatabase\\DeviceIds\\PCI\\'
                            'VEN_1AF4&DEV_1001')
        assert (bound is not None) == ('viostor' in spec.drivers)
    finally:
        system.close()


@pytest.mark.parametrize('name', READABLE_WINDOWS)
def test_the_files_a_probe_reads(appliance, name):
    spec = WINDOWS[name]
    g = appliance.mounted(appliance.root(name)).g
    assert g.file('/Windows/System32/cmd.exe') == (
        'PE32+ executable (console) x86-64, for MS Windows')
    if spec.hiberfil is None:
        assert not g.exists('/hiberfil.sys')
    else:
        assert g.pread('/hiberfil.sys', 4, 0) == (spec.hiberfil
                                                  or b'\0' * 4)
    assert g.is_file('/%s/qemu-ga.exe' % windowsimages.QEMU_GA_DIR) == (
        spec.guest_agent)
    for service in windowsimages.VIRTIO_DRIVERS:
        assert g.is_file('/Windows/System32/drivers/%s.sys' % service) == (
            service in spec.drivers)
    conf = '/' + windowsimages.CLOUDBASE_INIT_CONF
    assert g.is_file(conf) == (spec.cloudbase_init is not None)
    if spec.cloudbase_init is not None:
        lines = g.read_file(conf).decode().splitlines()
        users = [line for line in lines if line.startswith('username=')]
        if spec.cloudbase_init is windowsimages.CLOUDBASE_DEFAULT_USER:
            assert users == []
        else:
            assert users == ['username=%s' % spec.cloudbase_init]


@pytest.mark.parametrize('name', list(WINDOWS))
def test_each_windows_guest_boots_the_way_setup_leaves_it(appliance, name):
    spec = WINDOWS[name]
    g, disk = appliance.g, appliance.devices[name]
    boot_code = g.pread_device(disk, 440, 0)
    if spec.firmware == 'bios':
        assert g.part_get_parttype(disk) == 'msdos'
        assert g.part_get_bootable(disk, 1)
        assert any(boot_code)
        appliance.mounted(appliance.partition(name, 1))
        assert g.is_file('/bootmgr') and g.is_file('/Boot/BCD')
        return
    assert g.part_get_parttype(disk) == 'gpt'
    assert not any(boot_code)  # a protective MBR: no BIOS boot code
    assert g.part_get_gpt_type(disk, 1) == (
        'C12A7328-F81F-11D2-BA4B-00A0C93EC93B')
    appliance.mounted(appliance.partition(name, 1))
    for loader in ('/EFI/Microsoft/Boot/bootmgfw.efi',
                   '/EFI/Boot/bootx64.efi'):
        assert g.file(loader) == (
            'PE32+ executable (EFI application) x86-64, for MS Windows')
        assert _signer(g.read_file(loader)) == spec.loader_signer


def _signer(image):
    """CN of the certificate in a PE's security directory, or None."""
    pe = struct.unpack_from('<I', image, 0x3c)[0]
    optional = pe + 24
    assert struct.unpack_from('<H', image, optional)[0] == 0x20b
    offset, size = struct.unpack_from('<II', image, optional + 0x70 + 4 * 8)
    if not size:
        return None
    length, revision, kind = struct.unpack_from('<IHH', image, offset)
    assert (revision, kind) == (0x0200, 0x0002)  # PKCS#7 SignedData
    certificates = pkcs7.load_der_pkcs7_certificates(
        image[offset + 8:offset + length])
    return certificates[0].subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value


def test_a_bitlocker_volume_is_only_a_bitlocker_volume(appliance):
    g, name = appliance.g, 'win-bitlocker'
    volume = appliance.partition(name, 3)
    info = g.blkid(volume)
    assert (info['TYPE'], info['USAGE'], info['VERSION']) == (
        'BitLocker', 'crypto', '2')
    assert g.vfs_type(volume) == 'BitLocker'
    # Not a filesystem to libguestfs: no root, nothing to mount.
    assert name not in appliance.roots
    with pytest.raises(RuntimeError, match='BitLocker'):
        g.mount_ro(volume, '/')
    # Its boot files stay readable on the ESP.
    appliance.mounted(appliance.partition(name, 1))
    assert g.is_file('/EFI/Microsoft/Boot/bootmgfw.efi')


@pytest.mark.parametrize('name', list(BOOT))
def test_each_boot_guest_names_its_default_kernel(appliance, name):
    spec = BOOT[name]
    boot = spec.boot
    g = appliance.mounted(appliance.root(name)).g
    default = linuxboot.default_kernel(boot)
    vmlinuz, initramfs = linuxboot.kernel_paths(boot, default)
    assert g.file(vmlinuz).startswith(
        'Linux kernel x86 boot executable bzImage, version %s '
        % default.version)
    if boot.family == 'debian':
        entries = [line.split()[1] for line in
                   g.read_file('/boot/grub/grub.cfg').decode().splitlines()
                   if line.strip().startswith('linux')]
        assert entries[0] == vmlinuz  # default="0": the first entry boots
        assert g.readlink('/vmlinuz') == vmlinuz.lstrip('/')
    else:
        grubenv = g.read_file('/boot/grub2/grubenv').decode()
        saved = [line.split('=', 1)[1] for line in grubenv.splitlines()
                 if line.startswith('saved_entry=')]
        entry = g.read_file('/boot/loader/entries/%s.conf' % saved[0])
        assert ('linux %s' % vmlinuz).encode() in entry.splitlines()
        assert ('initrd %s' % initramfs).encode() in entry.splitlines()
    # Merged /usr: modules are found through the /lib symlink.
    assert g.readlink('/lib') == 'usr/lib'
    builtin = g.read_file('/lib/modules/%s/modules.builtin'
                          % default.version).decode().split()
    assert ('kernel/drivers/block/virtio_blk.ko' in builtin) == (
        default.virtio == 'builtin')
    on_disk = g.is_file(
        '/lib/modules/%s/kernel/%s' % (default.version, linuxboot.module_file(
            boot, 'drivers/block/virtio_blk.ko')), followsymlinks=True)
    assert on_disk == (default.virtio in ('modules', 'initramfs'))


@pytest.mark.parametrize('name', list(BOOT))
def test_initramfs_archives_read_as_the_distribution_reads_them(
        appliance, name, tmp_path):
    if shutil.which('lsinitramfs') is None:
        pytest.skip('lsinitramfs (initramfs-tools-core) is not installed')
    boot = BOOT[name].boot
    g = appliance.mounted(appliance.root(name)).g
    for kernel in boot.kernels:
        initramfs = linuxboot.kernel_paths(boot, kernel)[1]
        local = str(tmp_path / os.path.basename(initramfs))
        g.download(initramfs, local)
        listed = set(subprocess.run(
            ['lsinitramfs', local], check=True, capture_output=True,
            text=True, timeout=120).stdout.split())
        expected = set(linuxboot.initramfs_members(boot, kernel))
        assert expected <= listed, name
        virtio = linuxboot.module_file(
            boot, 'usr/lib/modules/%s/kernel/drivers/block/virtio_blk.ko'
            % kernel.version)
        assert (virtio in listed) == (kernel.virtio == 'initramfs'
                                      or kernel.rescue)
        if kernel.compression == 'gzip' and not kernel.early_cpio:
            # The one layout libguestfs's initrd_list reads ("zcat |
            # cpio -it"): it lists what lsinitramfs lists.
            assert set(g.initrd_list(initramfs)) == listed - {'.'}


@pytest.mark.parametrize('name', list(BOOT))
def test_grub_for_bios_is_where_grub_install_puts_it(appliance, name):
    spec = BOOT[name]
    g, disk = appliance.g, appliance.devices[name]
    marker = linuxboot.GRUB_MBR_MARKER
    assert g.pread_device(disk, len(marker),
                          linuxboot.GRUB_MBR_MARKER_OFFSET) == marker
    grub = '/boot/grub' if spec.boot.family == 'debian' else '/boot/grub2'
    appliance.mounted(appliance.root(name))
    assert g.is_file(grub + '/i386-pc/core.img')
    if not spec.uefi:
        assert g.part_get_parttype(disk) == 'msdos'
        return
    # A hybrid GPT disk: BIOS boot partition, then the ESP with shim.
    assert g.part_get_gpt_type(disk, 1) == (
        '21686148-6449-6E6F-744E-656564454649')
    appliance.mounted(appliance.partition(name, 2))
    shim = g.read_file('/EFI/BOOT/BOOTX64.EFI')
    assert _signer(shim) == spec.boot.efi_signer
