#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""Hostile images, made real: qemu-img builds them, then bytes are patched.

Every function writes into a directory the test owns and returns the path.
Offsets are the ones the format specifications give (qcow2.txt, VMware's
VMDK spec, the VHD and VDI headers as qemu reads them).
"""

import os
import struct
import subprocess

from testkit import imagebuilder

MiB = imagebuilder.MiB
SECTOR = 512


def qemu_img(*args, timeout=30):
    """Run an unguarded qemu-img (a positive control); never raises."""
    return subprocess.run(('qemu-img',) + args, capture_output=True,
                          text=True, timeout=timeout)


def patch(path, offset, fmt, *values):
    """Overwrite the struct *fmt* of *values* at *offset* of *path*."""
    imagebuilder.write_data(path, offset, struct.pack(fmt, *values))


def raw_file(directory, name, size=MiB, data=b''):
    path = os.path.join(str(directory), name)
    with open(path, 'wb') as f:
        f.write(data)
        f.truncate(max(size, len(data)))
    return path


# qcow2 -----------------------------------------------------------------

def qcow2_backed_by(directory, name, backing, backing_format='raw'):
    """A qcow2 whose header names *backing* (not checked to exist)."""
    return imagebuilder.create(directory, name, 'qcow2', MiB,
                               extra=('-u', '-b', backing, '-F',
                                      backing_format))


def qcow2_with_data_file(directory, name, data_file, raw=False):
    options = {'data_file': data_file}
    if raw:
        options['data_file_raw'] = 'on'
    return imagebuilder.create(directory, name, 'qcow2', MiB, options)


def qcow2_push_extensions(path, filler=600):
    """Put an unknown header extension of *filler* bytes first.

    qemu ignores unknown extensions and reads on up to the end of the first
    cluster, so the ones after it (the data-file name) land past the first
    512 bytes, where a header reader that stops there cannot see them.
    """
    with open(path, 'r+b') as f:
        head = f.read(64 * 1024)
        header_length = struct.unpack_from('>I', head, 100)[0]
        rest = head[header_length:]
        ext = struct.pack('>II', 0x7a7a7a7a, filler) + b'z' * filler
        f.seek(header_length)
        f.write(ext + rest[:len(rest) - len(ext)])


def qcow2(directory, name, size=MiB, options=None):
    return imagebuilder.create(directory, name, 'qcow2', size, options)


# VMDK ------------------------------------------------------------------

DESCRIPTOR = '''# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="%(create_type)s"

# Extent description
%(extents)s

# The Disk Data Base
#DDB
ddb.virtualHWVersion = "4"
ddb.adapterType = "lsilogic"
'''


def vmdk_descriptor_file(directory, name, extents,
                         create_type='monolithicFlat'):
    """A bare text descriptor naming *extents* (a list of lines)."""
    path = os.path.join(str(directory), name)
    with open(path, 'w') as f:
        f.write(DESCRIPTOR % {'create_type': create_type,
                              'extents': '\n'.join(extents)})
    return path


def vmdk_sparse(directory, name, descriptor=None, capacity=None):
    """A monolithicSparse VMDK, its embedded descriptor replaced.

    :param descriptor: text written at sector 1 (the 20 sectors qemu-img
        reserves), or None to keep qemu-img's.
    :param capacity: sectors written into the sparse header, or None.
    """
    path = imagebuilder.vmdk(directory, name, 'monolithicSparse', 'lsilogic',
                             MiB)
    if descriptor is not None:
        data = descriptor.encode('ascii')
        assert len(data) < 20 * SECTOR
        imagebuilder.write_data(path, SECTOR,
                                data.ljust(20 * SECTOR, b'\x00'))
    if capacity is not None:
        patch(path, 12, '<Q', capacity)
    return path


def sparse_descriptor(extents, create_type='monolithicSparse', extra=''):
    return (DESCRIPTOR % {'create_type': create_type,
                          'extents': '\n'.join(extents)}) + extra


# Format lies -------------------------------------------------------------

def iso_with_header_of(directory, name, other):
    """An ISO whose system area starts with the first 4 KiB of *other*.

    The first 32 KiB of an ISO are free for any use, so this is a valid
    ISO, and qemu-img probing it would read it as the other format (with
    its header extensions and backing-file name, which follow the header).
    """
    path = imagebuilder.iso(directory, name)
    with open(other, 'rb') as f:
        imagebuilder.write_data(path, 0, f.read(8 * SECTOR))
    return path


# Resource attacks ------------------------------------------------------

def vdi_with_block_map(directory, name, blocks):
    """A VDI claiming *blocks* blocks: qemu-img allocates blocks * 4 bytes.

    The file is extended (sparse, nothing allocated) to hold the whole
    block map, so no table points past its end; only qemu-img's memory
    pays for the claim.
    """
    path = imagebuilder.create(directory, name, 'vdi', MiB)
    with open(path, 'r+b') as f:
        header = f.read(SECTOR)
        bmap_offset = struct.unpack_from('<I', header, 0x154)[0]
        f.seek(0x180)
        f.write(struct.pack('<I', blocks))
        f.truncate(bmap_offset + blocks * 4 + SECTOR)
    return path


def vhd_with_table(directory, name, entries):
    """A dynamic VHD whose block allocation table has *entries* entries.

    qemu-img allocates entries * 4 bytes for it; the file is extended
    (sparse) so the table fits inside it. The dynamic header checksum is
    recomputed so qemu-img reads on to the allocation.
    """
    path = imagebuilder.create(directory, name, 'vhd', MiB)
    with open(path, 'r+b') as f:
        footer = f.read(SECTOR)
        dyn_offset = struct.unpack_from('>Q', footer, 16)[0]
        f.seek(dyn_offset)
        dynamic = bytearray(f.read(1024))
        table_offset = struct.unpack_from('>Q', dynamic, 16)[0]
        struct.pack_into('>I', dynamic, 28, entries)
        _vhd_checksum(dynamic, 36)
        f.seek(dyn_offset)
        f.write(dynamic)
        end = table_offset + entries * 4 + SECTOR
        # Keep the footer copy at the end, where a dynamic VHD has it.
        f.seek(end)
        f.write(footer)
    return path


def _vhd_checksum(block, at):
    struct.pack_into('>I', block, at, 0)
    struct.pack_into('>I', block, at, ~sum(block) & 0xffffffff)


def vhd_differencing(directory, name, parent):
    """A dynamic VHD turned differencing: disk type 4, parent *parent*."""
    path = imagebuilder.create(directory, name, 'vhd', MiB)
    with open(path, 'r+b') as f:
        footer = bytearray(f.read(SECTOR))
        struct.pack_into('>I', footer, 60, 4)
        _vhd_checksum(footer, 64)
        dyn_offset = struct.unpack_from('>Q', footer, 16)[0]
        f.seek(dyn_offset)
        dynamic = bytearray(f.read(1024))
        encoded = parent.encode('utf-16-be')[:512]
        dynamic[64:64 + 512] = encoded.ljust(512, b'\x00')
        _vhd_checksum(dynamic, 36)
        f.seek(0)
        f.write(footer)
        f.seek(dyn_offset)
        f.write(dynamic)
        f.seek(-SECTOR, os.SEEK_END)
        f.write(footer)
    return path
