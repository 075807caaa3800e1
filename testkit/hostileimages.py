"""Hostile images, made real: qemu-img builds them, then bytes are patched.

Every function writes into a directory the test owns and returns the path.
Offsets are the ones the format specifications give (qcow2.txt, VMware's
VMDK spec, the VHD and VDI headers as qemu reads them).
"""
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
        vhd_checksum(dynamic, 36)
        f.seek(dyn_offset)
        f.write(dynamic)
        end = table_offset + entries * 4 + SECTOR
        # Keep the footer copy at the end, where a dynamic VHD has it.
        f.seek(end)
        f.write(footer)
    return path


def vhd_checksum(block, at):
    """Recompute the VHD checksum (u32 at *at*) of footer or header *block*."""
    struct.pack_into('>I', block, at, 0)
    struct.pack_into('>I', block, at, ~sum(block) & 0xffffffff)


def vhd_differencing(directory, name, parent):
    """A dynamic VHD turned differencing: disk type 4, parent *parent*."""
    path = imagebuilder.create(directory, name, 'vhd', MiB)
    with open(path, 'r+b') as f:
        footer = bytearray(f.read(SECTOR))
        struct.pack_into('>I', footer, 60, 4)
        vhd_checksum(footer, 64)
        dyn_offset = struct.unpack_from('>Q', footer, 16)[0]
        f.seek(dyn_offset)
        dynamic = bytearray(f.read(1024))
        encoded = parent.encode('utf-16-be')[:512]
        dynamic[64:64 + 512] = encoded.ljust(512, b'\x00')
        vhd_checksum(dynamic, 36)
        f.seek(0)
        f.write(footer)
        f.seek(dyn_offset)
        f.write(dynamic)
        f.seek(-SECTOR, os.SEEK_END)
        f.write(footer)
    return path


# Two formats at once (issue 9) --------------------------------------------

#: The MBR's boot code: the bytes before its partition table.
BOOT_CODE = 446
#: The ISO 9660 system area: free for any use before the first volume
#: descriptor.
ISO_SYSTEM_AREA = 32 * 1024


def vmdk_text(extent='/etc/hostname', style='plain'):
    """A VMDK text descriptor naming *extent* (a monolithicFlat extent).

    Styles qemu's probe accepts, as an attacker would vary them:
    ``plain`` (``version=1`` first), ``header`` (the usual ``# Disk
    DescriptorFile`` comment first), ``crlf`` (Windows line ends),
    ``blank`` (lines of spaces before), ``nul`` (NUL-padded to the end of
    an MBR's boot code),
    ``spacing`` (any two characters between createType and its value,
    which qemu skips unread). ``empty-line`` puts an empty line first,
    which qemu's probe does not accept.
    """
    create_type = ('createType  monolithicFlat"' if style == 'spacing'
                   else 'createType="monolithicFlat"')
    lines = ['version=1', 'CID=12345678', 'parentCID=ffffffff', create_type,
             'RW 2048 FLAT "%s" 0' % extent]
    if style == 'header':
        lines.insert(0, '# Disk DescriptorFile')
    elif style == 'blank':
        lines[:0] = ['   ', ' ']
    elif style == 'empty-line':
        lines.insert(0, '')
    end = '\r\n' if style == 'crlf' else '\n'
    text = (end.join(lines) + end).encode('ascii')
    if style == 'nul':
        text = text.ljust(BOOT_CODE, b'\x00')
    return text


def bochs_header():
    """A Bochs growing redolog header, as qemu's bochs probe wants it."""
    header = bytearray(SECTOR)
    header[0:23] = b'Bochs Virtual HD Image\x00'
    header[32:40] = b'Redolog\x00'
    header[48:56] = b'Growing\x00'
    struct.pack_into('<II', header, 64, 0x00020000, SECTOR)
    return bytes(header)


def cloop_header():
    """The shell header qemu's cloop probe looks for."""
    return (b'#!/bin/sh\n#V2.0 Format\n'
            b'modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n')


def format_headers(directory):
    """The first bytes of an image of every format qemu probes.

    Made by qemu-img where it can (with a backing file or extent outside
    the image, so that whoever reads it as that format is hurt), by hand
    for the formats it cannot create. Returns {name: (qemu driver,
    bytes)}.
    """
    d = str(directory)
    target = '/etc/hostname'

    def head(path, length=4096):
        with open(path, 'rb') as f:
            return f.read(length)

    made = {
        'qcow2': ('qcow2', head(qcow2_backed_by(d, 'h.qcow2', target))),
        'qcow': ('qcow', head(imagebuilder.create(
            d, 'h.qcow', 'qcow', MiB, extra=('-u', '-b', target, '-F',
                                             'raw')))),
        'qed': ('qed', head(imagebuilder.create(
            d, 'h.qed', 'qed', MiB, extra=('-u', '-b', target, '-F',
                                           'raw')))),
        'vmdk-sparse': ('vmdk', head(vmdk_sparse(
            d, 'h.vmdk', sparse_descriptor(['RW 2048 FLAT "%s" 0' % target],
                                           create_type='monolithicFlat'),
            capacity=0))),
        'vpc': ('vpc', head(vhd_differencing(d, 'h.vhd', target))),
        'vhdx': ('vhdx', head(imagebuilder.create(d, 'h.vhdx', 'vhdx', MiB))),
        'vdi': ('vdi', head(imagebuilder.create(d, 'h.vdi', 'vdi', MiB),
                            SECTOR)),
        'parallels': ('parallels', head(imagebuilder.create(
            d, 'h.hds', 'ploop', MiB), SECTOR)),
        'luks': ('luks', head(imagebuilder.create(
            d, 'h.luks', 'luks', MiB, {'iter-time': 100}))),
        'bochs': ('bochs', bochs_header()),
        'cloop': ('cloop', cloop_header()),
        'cowd': ('vmdk', b'COWD' + struct.pack('<II', 1, 3)),
    }
    for style in ('plain', 'header', 'crlf', 'blank', 'nul', 'spacing'):
        made['vmdk-text-' + style] = ('vmdk', vmdk_text(target, style))
    return made


def raw_with_boot_code(directory, name, payload, label='dos', size=MiB):
    """A partitioned raw disk whose MBR boot code is *payload*.

    The partition table and the boot signature stay: sfdisk, the kernel
    and oslo's inspectors still see a partitioned disk.
    """
    assert len(payload) <= BOOT_CODE
    path = imagebuilder.partitioned_raw(directory, name, size, label)
    imagebuilder.write_data(path, 0, payload)
    return path


def iso_with_system_area(directory, name, payload, offset=0):
    """An ISO whose system area holds *payload* at *offset*."""
    assert offset + len(payload) <= ISO_SYSTEM_AREA
    path = imagebuilder.iso(directory, name)
    imagebuilder.write_data(path, offset, payload)
    return path


# Tables checked whole ------------------------------------------------------

VMDK_GD_AT_END = (1 << 64) - 1


def vmdk_stream_with_footer(directory, name, footer_fields=None):
    """A streamOptimized VMDK whose grain directory offset is in a footer.

    qemu-img writes the offset into the header; VMware's streams say
    ``GD_AT_END`` there and append a footer marker, a copy of the header
    with the real offset, and an end-of-stream marker. This turns the
    former into the latter, then patches the footer's *footer_fields*
    ({offset: (struct format, value)}).
    """
    path = imagebuilder.vmdk(directory, name, 'streamOptimized', 'lsilogic',
                             MiB)
    with open(path, 'r+b') as f:
        header = bytearray(f.read(SECTOR))
        footer = bytearray(header)
        for offset, (fmt, value) in (footer_fields or {}).items():
            struct.pack_into(fmt, footer, offset, value)
        struct.pack_into('<Q', header, 56, VMDK_GD_AT_END)
        f.seek(0)
        f.write(header)
        marker = bytearray(SECTOR)
        struct.pack_into('<QII', marker, 0, 1, 0, 3)    # footer marker
        f.seek(0, os.SEEK_END)
        f.write(bytes(marker) + bytes(footer) + bytes(SECTOR))
    return path


def vmdk_with_grain_directory(directory, name, capacity, granularity,
                              gtes_per_gt=512):
    """A monolithicSparse VMDK whose header sizes a grain directory.

    The directory has capacity / (granularity * gtes_per_gt) entries of
    4 bytes at the header's offset; qemu allocates (twice, with the
    redundant copy) and reads it whole, the part past the end of the file
    as zeros.
    """
    path = imagebuilder.vmdk(directory, name, 'monolithicSparse', 'lsilogic',
                             MiB)
    patch(path, 12, '<QQ', capacity, granularity)
    patch(path, 44, '<I', gtes_per_gt)
    return path


def qcow2_with_snapshots(directory, name, count, size=20 * MiB, data=MiB):
    """A qcow2 with *count* internal snapshots made by qemu-img.

    Each ``qemu-img snapshot -c`` rewrites the whole table, so this takes
    about count**2 / 5000 seconds (15 s for 300).
    """
    path = imagebuilder.create(directory, name, 'qcow2', size)
    if data:
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                        'write -P 0x5a 0 %d' % data, path], check=True,
                       capture_output=True)
    opts = 'driver=qcow2,file.filename=%s,cache.no-flush=on' % path
    for n in range(count):
        imagebuilder.qemu_img('snapshot', '-c', 's%d' % n, '--image-opts',
                              opts)
    return path


def qcow2_snapshot_entry(path):
    """(offset of the first snapshot table entry, snapshot count)."""
    with open(path, 'rb') as f:
        head = f.read(72)
    count, offset = struct.unpack_from('>IQ', head, 60)
    return offset, count


# Every image the suite makes, for the differential test -------------------

def suite_images(directory):
    """One image of every kind the test suite builds, benign and hostile.

    :returns: list of (name, path, Glance format the image is meant as, or
        None when it is meant as no format).
    """
    d = str(directory)
    images = []

    def add(name, path, disk_format):
        images.append((name, path, disk_format))

    for disk_format, options in (
            ('raw', None), ('qcow2', None), ('qcow2', {'compat': '0.10'}),
            ('qcow2', {'extended_l2': 'on'}),
            ('qcow2', {'compression_type': 'zstd'}),
            ('vmdk', {'subformat': 'monolithicSparse'}),
            ('vmdk', {'subformat': 'streamOptimized'}),
            ('vmdk', {'subformat': 'monolithicFlat'}),
            ('vmdk', {'subformat': 'twoGbMaxExtentSparse'}),
            ('vmdk', {'subformat': 'twoGbMaxExtentFlat'}),
            ('vhd', None), ('vhd', {'subformat': 'fixed'}), ('vhdx', None),
            ('vdi', None), ('qed', None), ('luks', {'iter-time': 100}),
            ('ploop', None), ('qcow', None)):
        label = '-'.join([disk_format] + ['%s=%s' % kv for kv in sorted(
            (options or {}).items()) if kv[0] != 'iter-time'])
        add(label, imagebuilder.create(d, label, disk_format, MiB, options),
            disk_format if disk_format != 'qcow' else None)
    add('iso', imagebuilder.iso(d, 'suite.iso'), 'iso')
    for label in ('gpt', 'dos'):
        add('raw-' + label, imagebuilder.partitioned_raw(
            d, 'suite-%s.raw' % label, MiB, label), 'raw')
    add('raw-qfi-lowercase', raw_file(d, 'qfi.raw', MiB, b'qfi\xfb\0\0\0\3'),
        'raw')
    add('raw-odd-size', raw_file(d, 'odd.raw', 1000, os.urandom(1000)),
        'raw')
    add('qcow2-backing', qcow2_backed_by(d, 'backed.qcow2', '/etc/hostname'),
        'qcow2')
    add('qcow2-data-file', qcow2_with_data_file(d, 'df.qcow2',
                                                os.path.join(d, 'df.data')),
        'qcow2')
    add('qcow2-luks', imagebuilder.create(
        d, 'luks.qcow2', 'qcow2', MiB,
        {'encrypt.format': 'luks', 'encrypt.key-secret': 'sec0',
         'encrypt.iter-time': 100},
        extra=('--object', 'secret,id=sec0,data=test')), 'qcow2')
    add('qcow2-aes', imagebuilder.create(
        d, 'aes.qcow2', 'qcow2', MiB,
        {'encrypt.format': 'aes', 'encrypt.key-secret': 'sec0'},
        extra=('--object', 'secret,id=sec0,data=test')), 'qcow2')
    corrupt = qcow2(d, 'corrupt.qcow2')
    patch(corrupt, 72, '>Q', 2)
    add('qcow2-corrupt-bit', corrupt, 'qcow2')
    add('vmdk-descriptor-file', vmdk_descriptor_file(
        d, 'desc.vmdk', ['RW 2048 FLAT "/etc/hostname" 0']), 'vmdk')
    add('vmdk-capacity-0', vmdk_sparse(
        d, 'zero.vmdk', sparse_descriptor(['RW 2048 FLAT "/etc/hostname" 0'],
                                          create_type='monolithicFlat'),
        capacity=0), 'vmdk')
    add('vmdk-stream-footer', vmdk_stream_with_footer(d, 'footer.vmdk'),
        'vmdk')
    add('vmdk-footer-capacity', vmdk_stream_with_footer(
        d, 'footer-cap.vmdk', {12: ('<Q', 1 << 31)}), 'vmdk')
    add('vmdk-gd-past-eof', vmdk_with_grain_directory(
        d, 'gd.vmdk', 1 << 33, 1), 'vmdk')
    add('vhd-differencing', vhd_differencing(d, 'diff.vhd', '/etc/hostname'),
        'vhd')
    for name, (driver, data) in sorted(format_headers(d).items()):
        add('mbr-boot-code+' + name, raw_with_boot_code(
            d, 'mbr-%s.raw' % name, data[:BOOT_CODE]), 'raw')
        add('iso-system-area+' + name, iso_with_system_area(
            d, 'sa-%s.iso' % name, data), 'iso')
    add('mbr+vmdk-text-empty-line', raw_with_boot_code(
        d, 'mbr-empty-line.raw', vmdk_text(style='empty-line')), 'raw')
    return images
