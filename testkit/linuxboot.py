"""What a Linux guest boots: kernels, initramfs archives, boot loader menus.

:mod:`testkit.guestimages` puts these into its Linux test guests so that a
probe can find which kernel boots by default and whether that kernel can
drive virtio devices at boot. Made on the host, byte by byte, as the
distributions lay them out (none is copied from a real system):

* a kernel is ``/boot/vmlinuz-VER`` (an x86 boot header whose version
  string ``file`` reports), ``/boot/config-VER``, ``/boot/System.map-VER``
  and ``<modules dir>/VER`` holding module files (``.ko``, ``.ko.xz``) and
  ``modules.builtin`` (what is compiled into the kernel);
* its initramfs is a newc cpio archive, compressed (gzip, xz, zstd) or
  not, optionally preceded by an uncompressed "early" cpio with CPU
  microcode, as dracut and initramfs-tools make them;
* the default kernel is named the distribution's way: a GRUB menu whose
  first entry boots (Debian, Ubuntu: ``/boot/grub/grub.cfg``), or Boot
  Loader Specification entries with ``saved_entry`` in
  ``/boot/grub2/grubenv`` (Fedora, RHEL 8+: ``/boot/loader/entries``).
"""

import collections
import gzip
import io
import lzma
import os
import shutil
import struct
import subprocess
import tarfile

from testkit import winformats

#: Modules that drive virtio devices: the PCI transport and the disk, SCSI
#: and network drivers (paths below ``kernel/``, as modules.builtin and
#: the module tree name them).
VIRTIO_MODULES = collections.OrderedDict([
    ('virtio', 'drivers/virtio/virtio.ko'),
    ('virtio_ring', 'drivers/virtio/virtio_ring.ko'),
    ('virtio_pci', 'drivers/virtio/virtio_pci.ko'),
    ('virtio_blk', 'drivers/block/virtio_blk.ko'),
    ('virtio_scsi', 'drivers/scsi/virtio_scsi.ko'),
    ('virtio_net', 'drivers/net/virtio_net.ko'),
])
#: Drivers of other hypervisors' and real hardware's disks and NICs: what
#: an initramfs made on VMware or bare metal holds instead.
OTHER_MODULES = collections.OrderedDict([
    ('ahci', 'drivers/ata/ahci.ko'),
    ('ata_piix', 'drivers/ata/ata_piix.ko'),
    ('sd_mod', 'drivers/scsi/sd_mod.ko'),
    ('vmw_pvscsi', 'drivers/scsi/vmw_pvscsi.ko'),
    ('mptspi', 'drivers/message/fusion/mptspi.ko'),
    ('e1000', 'drivers/net/ethernet/intel/e1000/e1000.ko'),
    ('vmxnet3', 'drivers/net/vmxnet3/vmxnet3.ko'),
])

#: One kernel of a guest.
#:
#: ``version``: its release (``uname -r``); ``virtio``: where the virtio
#: drivers are: ``initramfs`` (modules on disk and in the initramfs),
#: ``modules`` (on disk only), ``builtin`` (compiled in: named in
#: modules.builtin, no files), ``none``; ``compression`` of the
#: initramfs: gzip, xz, zstd or none; ``early_cpio``: an uncompressed
#: microcode archive first; ``rescue``: a RHEL "rescue" entry
#: (``vmlinuz-0-rescue-<machine-id>``, a generic initramfs).
Kernel = collections.namedtuple('Kernel', [
    'version', 'virtio', 'compression', 'early_cpio', 'rescue'])
Kernel.__new__.__defaults__ = ('initramfs', 'gzip', False, False)

#: How a guest boots. ``family``: ``debian`` (``/boot/initrd.img-VER``,
#: GRUB menu in /boot/grub, modules in /usr/lib/modules behind a /lib
#: symlink, .ko files) or ``rhel`` (``/boot/initramfs-VER.img``, BLS
#: entries and grubenv in /boot/grub2, ``.ko.xz`` files); ``kernels``:
#: a tuple of :data:`Kernel`; ``default``: index of the kernel that boots
#: by default; ``machine_id``: /etc/machine-id (names BLS entries);
#: ``bios_grub``: GRUB installed for BIOS (boot code in the MBR, its core
#: image after it or in a BIOS boot partition, the ``i386-pc`` modules);
#: ``efi_signer``: on a UEFI guest, the CN of the test key its shim and
#: GRUB EFI binaries are signed with (None: unsigned).
Boot = collections.namedtuple('Boot', ['family', 'kernels', 'default',
                                       'machine_id', 'bios_grub',
                                       'efi_signer'])
Boot.__new__.__defaults__ = (0, '4f1e7d2c9b8a46e3a5d0c1b2e3f4a5b6', True,
                             winformats.TEST_SIGNER)


def default_kernel(boot):
    return boot.kernels[boot.default]


def modules_dir(boot):
    """Where the guest keeps kernel modules (its real path, not /lib)."""
    return '/usr/lib/modules'


def kernel_paths(boot, kernel):
    """(vmlinuz, initramfs) paths of *kernel* in the guest."""
    if kernel.rescue:
        suffix = '0-rescue-' + boot.machine_id
        return ('/boot/vmlinuz-' + suffix,
                '/boot/initramfs-%s.img' % suffix)
    if boot.family == 'debian':
        return ('/boot/vmlinuz-' + kernel.version,
                '/boot/initrd.img-' + kernel.version)
    return ('/boot/vmlinuz-' + kernel.version,
            '/boot/initramfs-%s.img' % kernel.version)


def module_file(boot, name_path):
    """A module's file name as the family ships it (.ko or .ko.xz)."""
    return name_path + ('.xz' if boot.family == 'rhel' else '')


def initramfs_members(boot, kernel):
    """Names of the files in *kernel*'s initramfs main archive."""
    version = kernel.version
    prefix = 'usr/lib/modules/%s/' % version
    names = ['init', 'usr/lib/modules/%s/modules.builtin' % version,
             'usr/lib/modules/%s/modules.order' % version]
    modules = list(OTHER_MODULES.values())
    if kernel.virtio == 'initramfs' or kernel.rescue:
        modules += list(VIRTIO_MODULES.values())
    names += [prefix + 'kernel/' + module_file(boot, m) for m in modules]
    return names


def tree(boot, directory):
    """Write the guest's /boot, modules, symlinks and configs to a tarball.

    :returns: the tarball's path (for guestfish ``tar-in`` at ``/``).
    """
    path = os.path.join(directory, 'boot-tree.tar')
    with tarfile.open(path, 'w') as tar:
        added = set()

        def add(name, data, mode=0o644):
            name = name.lstrip('/')
            parts = name.split('/')
            for depth in range(1, len(parts)):
                parent = '/'.join(parts[:depth])
                if parent not in added:
                    added.add(parent)
                    info = tarfile.TarInfo(parent)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
            added.add(name)

        for kernel in boot.kernels:
            vmlinuz, initramfs = kernel_paths(boot, kernel)
            add(vmlinuz, bzimage(kernel.version), 0o600)
            add(initramfs, initramfs_image(boot, kernel), 0o600)
            if kernel.rescue:
                continue
            add('/boot/config-' + kernel.version, kernel_config(kernel))
            add('/boot/System.map-' + kernel.version,
                b'ffffffff81000000 T _text\n')
            base = '%s/%s/' % (modules_dir(boot), kernel.version)
            on_disk = list(OTHER_MODULES.values())
            if kernel.virtio in ('initramfs', 'modules'):
                on_disk += list(VIRTIO_MODULES.values())
            for module in on_disk:
                add(base + 'kernel/' + module_file(boot, module),
                    elf_module())
            add(base + 'modules.builtin', modules_builtin(kernel))
            add(base + 'modules.order', ''.join(
                'kernel/%s\n' % m for m in on_disk).encode())
            add(base + 'modules.dep', ''.join(
                'kernel/%s:\n' % module_file(boot, m)
                for m in on_disk).encode())
        grub_dir = '/boot/grub' if boot.family == 'debian' else '/boot/grub2'
        if boot.bios_grub:
            for module in ('boot.img', 'core.img', 'normal.mod',
                           'biosdisk.mod'):
                add('%s/i386-pc/%s' % (grub_dir, module),
                    grub_bios_image(module))
        if boot.family == 'debian':
            add('/boot/grub/grub.cfg', grub_menu(boot))
            add('/etc/initramfs-tools/initramfs.conf', (
                'MODULES=%s\nCOMPRESS=%s\n' % (
                    'most' if default_kernel(boot).virtio == 'initramfs'
                    else 'dep', default_kernel(boot).compression)).encode())
        else:
            add('/boot/grub2/grub.cfg', grub_bls_menu())
            add('/boot/grub2/grubenv', grubenv(boot))
            for kernel in boot.kernels:
                add('/boot/loader/entries/%s' % bls_entry_name(boot, kernel),
                    bls_entry(boot, kernel))
            add('/etc/dracut.conf.d/hostonly.conf', b'hostonly="%s"\n' % (
                b'no' if default_kernel(boot).virtio == 'initramfs'
                else b'yes'))
        add('/etc/machine-id', (boot.machine_id + '\n').encode())
    return path


def guestfish_commands(boot, tarball):
    """guestfish commands that install :func:`tree` into a mounted root."""
    commands = ['mkdir-p /usr/lib', 'ln-s usr/lib /lib',
                'tar-in %s /' % tarball]
    if boot.family == 'debian':
        vmlinuz, initrd = kernel_paths(boot, default_kernel(boot))
        # What the kernel package's postinst links: the newest kernel.
        commands += ['ln-s %s /vmlinuz' % vmlinuz.lstrip('/'),
                     'ln-s %s /initrd.img' % initrd.lstrip('/')]
    return commands


def esp_commands(boot, files, vendor):
    """guestfish commands that fill the ESP mounted at /boot/efi.

    shim as the fallback loader (``EFI/BOOT/BOOTX64.EFI``) next to GRUB,
    and the distribution's own directory (``EFI/<vendor>``), as the
    shim-signed packages install them.
    """
    shim = winformats.efi_loader(boot.efi_signer)
    grub = winformats.efi_loader(boot.efi_signer)
    commands = ['mkdir-p /boot/efi/EFI/BOOT',
                'mkdir-p /boot/efi/EFI/%s' % vendor]
    for data, path in ((shim, 'EFI/BOOT/BOOTX64.EFI'),
                       (grub, 'EFI/BOOT/grubx64.efi'),
                       (shim, 'EFI/%s/shimx64.efi' % vendor),
                       (grub, 'EFI/%s/grubx64.efi' % vendor)):
        local = os.path.join(files, 'esp-' + path.replace('/', '-'))
        with open(local, 'wb') as f:
            f.write(data)
        commands.append('upload %s /boot/efi/%s' % (local, path))
    return commands


#: Where GRUB's BIOS boot code says who it is (boot.img keeps its
#: messages at the end of its 512 bytes; GRUB_BOOT_MACHINE_... in
#: grub-core/boot/i386/pc/boot.S).
GRUB_MBR_MARKER_OFFSET = 0x180
GRUB_MBR_MARKER = b'GRUB \0Geom\0Hard Disk\0Read\0 Error\r\n\0'


def grub_bios_image(name):
    """Stand-in bytes for a GRUB i386-pc file (not GRUB's code)."""
    return ('qimgintrospect test stand-in for GRUB i386-pc/%s\n'
            % name).encode()


def install_bios_grub(boot, raw, gpt):
    """Write GRUB's BIOS stages into the raw disk *raw*, as grub-install.

    The MBR's boot code (first 440 bytes; the partition table is left
    alone) and the core image: right after the MBR on an MBR disk, at the
    start of the BIOS boot partition (sector 2048) on a GPT disk.
    """
    if not boot.bios_grub:
        return
    code = bytearray(440)
    code[0:2] = b'\xeb\x63'  # jmp over the BIOS parameter block
    code[GRUB_MBR_MARKER_OFFSET:GRUB_MBR_MARKER_OFFSET + len(
        GRUB_MBR_MARKER)] = GRUB_MBR_MARKER
    with open(raw, 'r+b') as f:
        f.seek(0)
        f.write(bytes(code))
        f.seek(2048 * 512 if gpt else 512)
        f.write(grub_bios_image('core.img'))


def bzimage(version):
    """An x86 kernel image header ``file`` names with its version string.

    The boot protocol header (Documentation/arch/x86/boot.rst): boot
    flag 0xAA55 at 0x1FE, ``HdrS`` at 0x202, protocol 2.15 at 0x206, and
    at 0x20E the offset (minus 0x200) of the version string.
    """
    image = bytearray(0x1000)
    image[0x1f1] = 4  # setup_sects
    struct.pack_into('<H', image, 0x1f2, 1)  # root_flags: read-only
    struct.pack_into('<H', image, 0x1fe, 0xaa55)
    image[0x202:0x206] = b'HdrS'
    struct.pack_into('<H', image, 0x206, 0x020f)
    text = ('%s (builder@qimgintrospect) #1 SMP' % version).encode() + b'\0'
    struct.pack_into('<H', image, 0x20e, 0x400 - 0x200)
    image[0x211] = 0x01  # loadflags: LOADED_HIGH, a bzImage
    image[0x400:0x400 + len(text)] = text
    return bytes(image)


def elf_module():
    """A module file: an ELF64 relocatable header, no sections."""
    return struct.pack('<4sBBBBB7sHHIQQQIHHHHHH', b'\x7fELF', 2, 1, 1, 0, 0,
                       b'\0' * 7, 1, 0x3e, 1, 0, 0, 0, 0, 64, 0, 0, 64, 0,
                       0)


def modules_builtin(kernel):
    builtin = ['kernel/drivers/tty/serial/8250/8250.ko',
               'kernel/fs/ext4/ext4.ko']
    if kernel.virtio == 'builtin':
        builtin += ['kernel/' + m for m in VIRTIO_MODULES.values()]
    return ''.join(m + '\n' for m in builtin).encode()


def kernel_config(kernel):
    value = 'y' if kernel.virtio == 'builtin' else 'm'
    lines = ['CONFIG_VIRTIO=%s' % value, 'CONFIG_VIRTIO_PCI=%s' % value,
             'CONFIG_VIRTIO_BLK=%s' % value, 'CONFIG_SCSI_VIRTIO=%s' % value,
             'CONFIG_VIRTIO_NET=%s' % value]
    return ''.join(line + '\n' for line in lines).encode()


def newc(members):
    """A newc ("070701") cpio archive of *members*: name -> bytes or None.

    None is a directory. Parent directories are listed before their
    contents, as cpio -o does.
    """
    out = bytearray()
    inode = 1

    def entry(name, mode, data):
        nonlocal inode
        encoded = name.encode() + b'\0'
        header = '070701' + ''.join('%08X' % v for v in (
            inode, mode, 0, 0, 2 if mode & 0o40000 else 1, 0, len(data),
            0, 0, 0, 0, len(encoded), 0))
        inode += 1
        out.extend(header.encode() + encoded)
        out.extend(b'\0' * (-len(out) % 4))
        out.extend(data)
        out.extend(b'\0' * (-len(out) % 4))

    seen = set()
    for name, data in members.items():
        parts = name.split('/')
        for depth in range(1, len(parts)):
            parent = '/'.join(parts[:depth])
            if parent not in seen:
                seen.add(parent)
                entry(parent, 0o40755, b'')
        if data is None:
            if name not in seen:
                seen.add(name)
                entry(name, 0o40755, b'')
        else:
            entry(name, 0o100644, data)
    entry('TRAILER!!!', 0, b'')
    out.extend(b'\0' * (-len(out) % 512))
    return bytes(out)


def initramfs_image(boot, kernel):
    """The initramfs file of *kernel*: [early cpio] + compressed main."""
    members = collections.OrderedDict()
    for name in initramfs_members(boot, kernel):
        if name == 'init':
            members[name] = b'#!/bin/sh\nexec /sbin/init\n'
        elif name.endswith('modules.builtin'):
            members[name] = modules_builtin(kernel)
        elif name.endswith('modules.order'):
            members[name] = b''
        else:
            members[name] = elf_module()
    main = compress(newc(members), kernel.compression)
    if not kernel.early_cpio:
        return main
    early = newc(collections.OrderedDict([
        ('kernel/x86/microcode/GenuineIntel.bin', b'\0' * 1024)]))
    return early + main


def compress(data, compression):
    """*data* compressed as an initramfs generator would."""
    if compression == 'none':
        return data
    if compression == 'gzip':
        return gzip.compress(data, mtime=0)
    if compression == 'xz':
        # The kernel's xz decoder wants CRC32 checks.
        return lzma.compress(data, check=lzma.CHECK_CRC32)
    if compression == 'zstd':
        if shutil.which('zstd') is None:
            raise RuntimeError('zstd (Debian package zstd) is needed for a '
                               'zstd-compressed initramfs')
        return subprocess.run(['zstd', '-q', '-c', '-19'], input=data,
                              capture_output=True, check=True,
                              timeout=60).stdout
    raise ValueError('unknown initramfs compression %r' % compression)


def grub_menu(boot):
    """A Debian/Ubuntu grub.cfg: ``default=0``, the default kernel first."""
    order = [boot.default] + [i for i in range(len(boot.kernels))
                              if i != boot.default]
    lines = ['set default="0"', 'set timeout=5', '']
    for index in order:
        kernel = boot.kernels[index]
        vmlinuz, initrd = kernel_paths(boot, kernel)
        lines += ["menuentry 'Linux %s' --class gnu-linux "
                  "$menuentry_id_option 'gnulinux-%s-advanced' {"
                  % (kernel.version, kernel.version),
                  '\tlinux\t%s root=LABEL=rootfs ro quiet' % vmlinuz,
                  '\tinitrd\t%s' % initrd, '}', '']
    return '\n'.join(lines).encode()


def grub_bls_menu():
    """A RHEL/Fedora grub.cfg: entries come from /boot/loader/entries."""
    return (b'set default="${saved_entry}"\n'
            b'load_env -f ${config_directory}/grubenv\n'
            b'blscfg\n')


def bls_entry_name(boot, kernel):
    if kernel.rescue:
        return '%s-0-rescue.conf' % boot.machine_id
    return '%s-%s.conf' % (boot.machine_id, kernel.version)


def bls_entry(boot, kernel):
    vmlinuz, initramfs = kernel_paths(boot, kernel)
    title = ('Linux (0-rescue-%s)' % boot.machine_id if kernel.rescue
             else 'Linux (%s)' % kernel.version)
    return ('title %s\nversion %s\nlinux %s\ninitrd %s\n'
            'options root=LABEL=rootfs ro\n' % (
                title, kernel.version, vmlinuz, initramfs)).encode()


def grubenv(boot):
    """/boot/grub2/grubenv: a 1024-byte block naming the saved entry."""
    entry = bls_entry_name(boot, default_kernel(boot))[:-len('.conf')]
    text = ('# GRUB Environment Block\nsaved_entry=%s\n' % entry).encode()
    return text + b'#' * (1024 - len(text))
