"""Guest OS images for the libguestfs tests, built with guestfish.

No download: each guest is a small ext4 (or LVM) filesystem holding what
libguestfs's inspection reads (``/etc/os-release``, ``/etc/fstab``, an ELF
binary for the architecture, the package database) and what this project
reads (cloud-init configuration, the qemu guest agent, an EFI system
partition, and for :data:`BOOT_GUESTS` the kernels, initramfs archives and
boot menu of :mod:`testkit.linuxboot`). Every base guest is made in ONE
guestfish run, one drive each;
clones are byte copies with one file's bytes changed in place, which is
what images made from one base look like: same filesystem UUIDs and
labels, same LVM PV UUID and VG name.

:data:`GUESTS` says what each guest is; tests compare what is found with
it, and :func:`build` returns the paths. :data:`BOOT_GUESTS` are guests
whose kernels differ in how they drive virtio devices at boot; they are
built only when named.
"""

import collections
import os
import shutil
import subprocess
import uuid

from testkit import config
from testkit import imagebuilder
from testkit import linuxboot
from testkit import winformats

MiB = 1024 * 1024

#: What one guest is. ``os_release``: the fields of /etc/os-release;
#: ``disk_format``: what it is converted to; ``admin_user``: the
#: cloud-init default user (None: no cloud-init); ``guest_agent``:
#: whether qemu-ga is installed; ``uefi``: GPT with an EFI system
#: partition; ``lvm``: root on an LVM logical volume of VG ``vg0``;
#: ``clone_of``/``patch``: a byte copy of another guest with ``patch``
#: (old bytes, new bytes of the same length) applied to its data;
#: ``boot``: a :data:`testkit.linuxboot.Boot` (kernels, initramfs, boot
#: menu), None for a guest without kernels.
Guest = collections.namedtuple('Guest', [
    'os_release', 'disk_format', 'admin_user', 'guest_agent', 'uefi', 'lvm',
    'clone_of', 'patch', 'boot'])
Guest.__new__.__defaults__ = ({}, 'raw', None, False, False, False, None,
                              None, None)

_DEBIAN = {'ID': 'debian', 'VERSION_ID': '12',
           'PRETTY_NAME': 'Debian GNU/Linux 12 (bookworm)'}
_FEDORA = {'ID': 'fedora', 'VERSION_ID': '39',
           'PRETTY_NAME': 'Fedora Linux 39 (Cloud Edition)'}

GUESTS = collections.OrderedDict([
    ('debian', Guest(os_release=_DEBIAN)),
    ('ubuntu', Guest(
        os_release={'ID': 'ubuntu', 'VERSION_ID': '22.04',
                    'ID_LIKE': 'debian',
                    'PRETTY_NAME': 'Ubuntu 22.04.3 LTS'},
        disk_format='qcow2', admin_user='opsadmin', guest_agent=True)),
    ('rocky', Guest(
        os_release={'ID': 'rocky', 'VERSION_ID': '9.3',
                    'ID_LIKE': 'rhel centos fedora',
                    'PRETTY_NAME': 'Rocky Linux 9.3 (Blue Onyx)'},
        disk_format='vmdk')),
    ('alma-uefi', Guest(
        os_release={'ID': 'almalinux', 'VERSION_ID': '9.2',
                    'ID_LIKE': 'rhel centos fedora',
                    'PRETTY_NAME': 'AlmaLinux 9.2 (Turquoise Kodkod)'},
        disk_format='qcow2', uefi=True)),
    ('blank', Guest(disk_format='qcow2')),
    # Made from the same base as "debian": same ext4 UUID and label.
    ('debian-clone', Guest(
        os_release=dict(_DEBIAN, VERSION_ID='11',
                        PRETTY_NAME='Debian GNU/Linux 11 (bullseye)'),
        clone_of='debian',
        patch=(b'VERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 '
               b'(bookworm)"',
               b'VERSION_ID="11"\nPRETTY_NAME="Debian GNU/Linux 11 '
               b'(bullseye)"'))),
    ('fedora-lvm', Guest(os_release=_FEDORA, lvm=True)),
    # Same PV UUID and VG name as "fedora-lvm".
    ('fedora-lvm-clone', Guest(
        os_release=dict(_FEDORA, VERSION_ID='38',
                        PRETTY_NAME='Fedora Linux 38 (Cloud Edition)'),
        lvm=True, clone_of='fedora-lvm',
        patch=(b'VERSION_ID="39"\nPRETTY_NAME="Fedora Linux 39',
               b'VERSION_ID="38"\nPRETTY_NAME="Fedora Linux 38'))),
])

_UBUNTU = {'ID': 'ubuntu', 'VERSION_ID': '22.04', 'ID_LIKE': 'debian',
           'PRETTY_NAME': 'Ubuntu 22.04.3 LTS'}
_ROCKY = {'ID': 'rocky', 'VERSION_ID': '9.3', 'ID_LIKE': 'rhel centos fedora',
          'PRETTY_NAME': 'Rocky Linux 9.3 (Blue Onyx)'}
_DEBIAN_KERNEL = '6.1.0-13-amd64'
_ROCKY_KERNEL = '5.14.0-362.8.1.el9_3.x86_64'

#: Guests whose default kernel drives virtio devices at boot, or not.
BOOT_GUESTS = collections.OrderedDict([
    # Made on VMware with initramfs-tools MODULES=dep: the default kernel
    # has virtio modules on disk but not in its initramfs. The older
    # kernel's initramfs has them: only the default one counts.
    ('debian-virtio-modules', Guest(
        os_release=_DEBIAN, disk_format='qcow2',
        boot=linuxboot.Boot('debian', (
            linuxboot.Kernel(_DEBIAN_KERNEL, virtio='modules'),
            linuxboot.Kernel('6.1.0-12-amd64', virtio='initramfs'))))),
    # dracut with early microcode: virtio modules in the default kernel's
    # initramfs (.ko.xz), default named by BLS and grubenv.
    ('rocky-virtio-initramfs', Guest(
        os_release=_ROCKY, disk_format='qcow2',
        boot=linuxboot.Boot('rhel', (
            linuxboot.Kernel(_ROCKY_KERNEL, early_cpio=True),
            linuxboot.Kernel(_ROCKY_KERNEL, early_cpio=True,
                             rescue=True))))),
    # dracut hostonly on VMware: the default kernel's initramfs lacks
    # virtio; the rescue initramfs (generic) has it and must not count.
    ('rocky-hostonly', Guest(
        os_release=_ROCKY, disk_format='qcow2',
        boot=linuxboot.Boot('rhel', (
            linuxboot.Kernel(_ROCKY_KERNEL, virtio='modules',
                             early_cpio=True),
            linuxboot.Kernel(_ROCKY_KERNEL, early_cpio=True,
                             rescue=True))))),
    # Ubuntu builds virtio into its kernel (modules.builtin); its
    # initramfs is zstd behind an early microcode archive. A cloud
    # image's hybrid disk: GPT with a BIOS boot partition (GRUB for BIOS)
    # and an ESP (signed shim and GRUB).
    ('ubuntu-virtio-builtin', Guest(
        os_release=_UBUNTU, disk_format='qcow2', uefi=True,
        boot=linuxboot.Boot('debian', (
            linuxboot.Kernel('5.15.0-91-generic', virtio='builtin',
                             compression='zstd', early_cpio=True),)))),
])
ALL_GUESTS = collections.OrderedDict(GUESTS)
ALL_GUESTS.update(BOOT_GUESTS)

_CLOUD_CFG = """\
users:
  - default
system_info:
  distro: ubuntu
  default_user:
    name: ubuntu
    lock_passwd: true
"""
# cloud.cfg.d/*.cfg win over cloud.cfg: the default user is renamed.
_CLOUD_CFG_D = """\
system_info:
  default_user:
    name: {user}
"""
_ESP_GUID = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'
_BIOS_BOOT_GUID = '21686148-6449-6E6F-744E-656564454649'


def environment():
    """The environment guestfish and virt-inspector run with here."""
    env = dict(os.environ, LIBGUESTFS_BACKEND='direct')
    env['LIBGUESTFS_BACKEND_SETTINGS'] = ':'.join(config.BACKEND_SETTINGS)
    return env


def build(directory, names=None):
    """Build the guests *names* (default all of :data:`GUESTS`).

    :param names: names in :data:`GUESTS` or :data:`BOOT_GUESTS`.
    :returns: dict name -> path of the image in its ``disk_format``.
    """
    names = list(names or GUESTS)
    for name in list(names):
        clone_of = ALL_GUESTS[name].clone_of
        if clone_of and clone_of not in names:
            names.insert(0, clone_of)
    directory = str(directory)
    work = os.path.join(directory, 'guest-build')
    os.makedirs(work, exist_ok=True)
    bases = [n for n in names if ALL_GUESTS[n].clone_of is None]
    raws = _guestfish_build(work, bases)
    for name in bases:
        if ALL_GUESTS[name].boot:
            linuxboot.install_bios_grub(ALL_GUESTS[name].boot, raws[name],
                                        ALL_GUESTS[name].uefi)
    for name in names:
        guest = ALL_GUESTS[name]
        if guest.clone_of:
            raws[name] = _patched_clone(work, raws[guest.clone_of], name,
                                        guest.patch)
    paths = {}
    for name in names:
        paths[name] = imagebuilder.from_raw(raws[name], directory, name,
                                            ALL_GUESTS[name].disk_format)
    shutil.rmtree(work, ignore_errors=True)
    return paths


def _guestfish_build(work, names):
    """Make every base guest in one guestfish run; return raw paths."""
    args = ['guestfish']
    script = []
    raws = {}
    for index, name in enumerate(names):
        guest = ALL_GUESTS[name]
        raw = os.path.join(work, name + '.raw')
        raws[name] = raw
        size = 96 if guest.uefi or guest.boot else 64
        args += ['-N', '%s=disk:%dM' % (raw, size)]
        device = '/dev/sd' + chr(ord('a') + index)
        script += _guest_script(work, name, guest, device)
    script_path = os.path.join(work, 'build.guestfish')
    with open(script_path, 'w') as f:
        f.write('\n'.join(script) + '\n')
    subprocess.run(args + ['-f', script_path], check=True,
                   capture_output=True, env=environment(), timeout=600)
    return raws


def _guest_script(work, name, guest, device):
    if not guest.os_release:
        return []  # blank: no partition table, nothing at all
    files = os.path.join(work, name + '.files')
    os.makedirs(files, exist_ok=True)
    root_uuid = str(uuid.uuid4())
    lines = []
    hybrid = guest.uefi and guest.boot and guest.boot.bios_grub
    if guest.uefi:
        # A hybrid disk (cloud images) also boots on BIOS: GRUB's core
        # image lives in a BIOS boot partition before the ESP.
        first = 1
        if hybrid:
            lines += ['part-init %s gpt' % device,
                      'part-add %s p 2048 4095' % device,
                      'part-set-gpt-type %s 1 %s' % (device, _BIOS_BOOT_GUID)]
            first = 2
        else:
            lines += ['part-init %s gpt' % device]
        esp, root_number = first, first + 1
        lines += [
            'part-add %s p %d %d' % (device, 4096 if hybrid else 2048,
                                     67583),
            'part-add %s p 67584 -34' % device,
            'part-set-gpt-type %s %d %s' % (device, esp, _ESP_GUID),
            'mkfs vfat %s%d label:ESP' % (device, esp),
            'mkfs ext4 %s%d' % (device, root_number),
            'set-uuid %s%d %s' % (device, root_number, root_uuid),
        ]
        root = '%s%d' % (device, root_number)
        fstab = ('UUID=%s / ext4 defaults 0 1\n'
                 'LABEL=ESP /boot/efi vfat umask=0077 0 2\n' % root_uuid)
    elif guest.lvm:
        lines += [
            'part-disk %s mbr' % device,
            'pvcreate %s1' % device,
            'vgcreate vg0 %s1' % device,
            'lvcreate root vg0 48',
            'mkfs ext4 /dev/vg0/root label:rootfs',
        ]
        root = '/dev/vg0/root'
        fstab = '/dev/mapper/vg0-root / ext4 defaults 0 1\n'
    else:
        lines += [
            'part-disk %s mbr' % device,
            'mkfs ext4 %s1 label:rootfs' % device,
        ]
        root = device + '1'
        fstab = 'LABEL=rootfs / ext4 defaults 0 1\n'

    def put(guest_path, content, mode=None):
        local = os.path.join(files, guest_path.strip('/').replace('/', '_'))
        with open(local, 'w') as f:
            f.write(content)
        lines.append('upload %s %s' % (local, guest_path))
        if mode:
            lines.append('chmod %s %s' % (mode, guest_path))

    lines += ['mount %s /' % root,
              'mkdir-p /etc', 'mkdir-p /bin', 'mkdir-p /usr/bin',
              'upload /bin/ls /bin/ls']
    put('/etc/os-release', ''.join('%s="%s"\n' % kv
                                   for kv in guest.os_release.items()))
    put('/etc/fstab', fstab)
    put('/etc/hostname', name + '\n')
    if guest.os_release['ID'] in ('debian', 'ubuntu'):
        lines += ['mkdir-p /var/lib/dpkg', 'touch /var/lib/dpkg/status']
    else:
        lines += ['mkdir-p /var/lib/rpm']
    if guest.admin_user:
        lines += ['mkdir-p /etc/cloud/cloud.cfg.d']
        put('/etc/cloud/cloud.cfg', _CLOUD_CFG)
        put('/etc/cloud/cloud.cfg.d/90-admin.cfg',
            _CLOUD_CFG_D.format(user=guest.admin_user))
    if guest.guest_agent:
        lines.append('upload /bin/true /usr/bin/qemu-ga')
    if guest.boot:
        lines += linuxboot.guestfish_commands(
            guest.boot, linuxboot.tree(guest.boot, files))
    if guest.uefi and guest.boot:
        lines += ['mkdir-p /boot/efi', 'mount %s%d /boot/efi' % (device, esp)]
        lines += linuxboot.esp_commands(guest.boot, files,
                                        guest.os_release['ID'])
    elif guest.uefi:
        # An unsigned EFI application (a PE image): what firmware runs.
        loader = os.path.join(files, 'BOOTX64.EFI')
        with open(loader, 'wb') as f:
            f.write(winformats.efi_loader())
        lines += ['mkdir-p /boot/efi', 'mount %s1 /boot/efi' % device,
                  'mkdir-p /boot/efi/EFI/BOOT',
                  'upload %s /boot/efi/EFI/BOOT/BOOTX64.EFI' % loader]
    lines.append('umount-all')
    return lines


#: What :func:`host_debian` copies from this host by default: enough for
#: libguestfs and the probes (a shell, ls for the architecture).
HOST_FILES = ('/usr/bin/ls', '/usr/bin/true', '/usr/bin/bash',
              '/usr/lib/os-release', '/etc/debian_version',
              '/var/lib/dpkg/status')
#: The whole userland of a real Debian 12 (about 1.2 GiB here): what a
#: cloud image holds, for the benchmarks.
HOST_TREES = ('/usr/bin', '/usr/sbin', '/usr/lib/x86_64-linux-gnu',
              '/usr/lib64', '/usr/share/zoneinfo', '/usr/share/dpkg', '/boot')
#: The root filesystem's partition starts 1 MiB in, as in cloud images.
_PARTITION_OFFSET = MiB


def host_debian(directory, name='debian-host', size=512 * MiB,
                disk_format='qcow2', trees=(), admin_user='debian'):
    """A Debian guest made from this Debian host's own files, no appliance.

    A disk with an MBR partition table and one ext4 partition (made by
    ``mke2fs -d`` at its offset), holding a merged-/usr tree: the host's
    os-release, dpkg status and the files of *trees* (directories copied
    whole) beside a few binaries, a generated /etc (fstab by UUID,
    hostname, passwd, a cloud-init default user) and the qemu guest agent
    (a copy of ``true``). Nothing secret of the host is copied: /etc is
    written, not taken.

    :param trees: host directories to copy as they are (for example
        :data:`HOST_TREES`: a real userland).
    :returns: the path of the image in *disk_format*.
    """
    directory = str(directory)
    work = os.path.join(directory, name + '.build')
    tree = os.path.join(work, 'root')
    os.makedirs(tree)
    for link, target in (('bin', 'usr/bin'), ('sbin', 'usr/sbin'),
                         ('lib', 'usr/lib'), ('lib64', 'usr/lib64')):
        os.symlink(target, os.path.join(tree, link))
    for path in HOST_FILES:
        _copy_from_host(path, tree)
    for path in trees:
        if os.path.isdir(path):
            _copy_from_host(path, tree)
    root_uuid = str(uuid.uuid4())
    etc = os.path.join(tree, 'etc')
    os.symlink('../usr/lib/os-release', os.path.join(etc, 'os-release'))
    generated = {
        'fstab': 'UUID=%s / ext4 errors=remount-ro 0 1\n' % root_uuid,
        'hostname': name + '\n',
        'passwd': 'root:x:0:0:root:/root:/bin/bash\n',
        'group': 'root:x:0:\n',
        'cloud/cloud.cfg': _CLOUD_CFG,
        'cloud/cloud.cfg.d/90-admin.cfg': _CLOUD_CFG_D.format(
            user=admin_user),
    }
    for relative, content in generated.items():
        path = os.path.join(etc, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(content)
    shutil.copy('/usr/bin/true', os.path.join(tree, 'usr', 'bin', 'qemu-ga'))
    raw = os.path.join(work, name + '.raw')
    with open(raw, 'wb') as f:
        f.truncate(size)
    subprocess.run(['sfdisk', '-q', raw],
                   input=b'label: dos\nstart=2048, type=83\n',
                   check=True, capture_output=True)
    subprocess.run(['mkfs.ext4', '-q', '-F', '-U', root_uuid, '-L', 'root',
                    '-E', 'offset=%d' % _PARTITION_OFFSET, '-d', tree, raw,
                    '%dk' % ((size - _PARTITION_OFFSET) // 1024)],
                   check=True, capture_output=True)
    path = imagebuilder.from_raw(raw, directory, name, disk_format)
    shutil.rmtree(work, ignore_errors=True)
    return path


def _copy_from_host(path, tree):
    """Copy the host's *path* (a file or a directory) to the same place."""
    target = os.path.join(tree, path.lstrip('/'))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    subprocess.run(['cp', '-a', '--reflink=auto', path, target], check=True,
                   capture_output=True)


def _patched_clone(work, base_raw, name, patch):
    """A byte copy of *base_raw* with ``patch[0]`` replaced by ``patch[1]``.

    The bytes must occur exactly once (in the file's data block, which
    ext4 does not checksum), so the clone differs from its base in that
    file's contents only.
    """
    old, new = patch
    assert len(old) == len(new), patch
    with open(base_raw, 'rb') as f:
        data = bytearray(f.read())
    offset = data.find(old)
    assert offset >= 0 and data.find(old, offset + 1) < 0, (
        '%r must occur once in %s' % (old, base_raw))
    data[offset:offset + len(old)] = new
    raw = os.path.join(work, name + '.raw')
    with open(raw, 'wb') as f:
        f.write(data)
    return raw
