"""Build real test images with qemu-img and friends, no downloads.

Every function writes into a directory the test owns and returns the path.
"""

import os
import shutil
import subprocess

MiB = 1024 * 1024

VMDK_SUBFORMATS = ('monolithicSparse', 'monolithicFlat', 'streamOptimized',
                   'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat')
VMDK_ADAPTERS = ('ide', 'buslogic', 'lsilogic', 'legacyESX')
# qemu-img create -f driver for each Glance disk format.
# qemu's qcow (version 1) has no Glance name; tests build it as an attack.
QEMU_CREATE = {'raw': 'raw', 'qcow2': 'qcow2', 'vmdk': 'vmdk', 'vhd': 'vpc',
               'vhdx': 'vhdx', 'vdi': 'vdi', 'qed': 'qed', 'luks': 'luks',
               'ploop': 'parallels', 'qcow': 'qcow'}


def qemu_img(*args):
    # qemu's LUKS key derivation times 32768 iterations with the thread's
    # CPU clock first, and gives up when that reads 0 ms (it does, now and
    # then, on a busy machine): try such a create again.
    for attempt in range(5):
        proc = subprocess.run(('qemu-img',) + args, capture_output=True)
        if b'Unable to get accurate CPU usage' not in proc.stderr:
            break
    proc.check_returncode()


def create(directory, name, disk_format, size=64 * MiB, options=None,
           extra=()):
    """``qemu-img create -f`` the qemu driver of Glance *disk_format*."""
    path = os.path.join(str(directory), name)
    args = ['create', '-q', '-f', QEMU_CREATE[disk_format]]
    if disk_format == 'luks':
        args += ['--object', 'secret,id=sec0,data=test-passphrase']
        options = dict(options or {}, **{'key-secret': 'sec0'})
    if options:
        args += ['-o', ','.join('%s=%s' % kv for kv in options.items())]
    args += list(extra) + [path, str(size)]
    qemu_img(*args)
    return path


def vmdk(directory, name, subformat='monolithicSparse', adapter='lsilogic',
         size=64 * MiB):
    return create(directory, name, 'vmdk', size,
                  {'subformat': subformat, 'adapter_type': adapter})


def from_raw(raw, directory, name, disk_format):
    """Copy a built raw disk into ``directory`` as ``name.disk_format``.

    VMDKs come out streamOptimized, the subformat images are shipped in.
    """
    path = os.path.join(str(directory), '%s.%s' % (name, disk_format))
    if disk_format == 'raw':
        shutil.copyfile(raw, path)
        return path
    options = []
    if disk_format == 'vmdk':
        options = ['-o', 'subformat=streamOptimized']
    qemu_img('convert', '-f', 'raw', '-O', QEMU_CREATE[disk_format],
             *(options + [raw, path]))
    return path


def formatless_bytes(size):
    """*size* bytes no format probe takes for a header, the same each time.

    Random bytes would be, now and then: 55 AA at offset 510 is an MBR.
    """
    return (bytes(range(1, 256)) * (size // 255 + 1))[:size]


def write_data(path, offset, data):
    """Write *data* at *offset* of an image through qemu-io-free raw I/O."""
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def iso(directory, name='image.iso'):
    """An ISO 9660 file made by genisoimage (or xorriso) from one file."""
    src = os.path.join(str(directory), name + '.d')
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, 'README.txt'), 'w') as f:
        f.write('qimgintrospect test ISO\n')
    path = os.path.join(str(directory), name)
    tool = shutil.which('genisoimage') or shutil.which('xorrisofs')
    subprocess.run([tool, '-quiet', '-o', path, '-V', 'TESTISO', src],
                   check=True, capture_output=True)
    return path


def partitioned_raw(directory, name='disk.raw', size=64 * MiB, label='gpt'):
    """A raw disk with a partition table (what most cloud raw images are)."""
    path = os.path.join(str(directory), name)
    with open(path, 'wb') as f:
        f.truncate(size)
    script = 'label: %s\n,,L\n' % label
    subprocess.run(['sfdisk', '-q', path], input=script.encode(),
                   check=True, capture_output=True)
    return path


def sparse_raw(directory, name, size, data_bytes, chunk=MiB):
    """A raw file of *size* bytes with *data_bytes* of real data spread out.

    The data is written in *chunk*-sized pieces evenly across the file, so
    the file has many holes and many data ranges.
    """
    path = os.path.join(str(directory), name)
    pieces = max(data_bytes // chunk, 1)
    stride = size // pieces
    block = os.urandom(chunk)
    with open(path, 'wb') as f:
        f.truncate(size)
        for i in range(pieces):
            f.seek(i * stride)
            f.write(block)
    return path
