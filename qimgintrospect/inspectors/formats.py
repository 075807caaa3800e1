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

"""Small format readers for what oslo.utils' format_inspector does not give.

* :class:`PloopInspector` and :class:`FixedVhdInspector` detect two formats
  oslo does not (Parallels/ploop, and a VHD whose only footer is at the
  end); they are oslo ``FileInspector`` subclasses so they run in the same
  single pass as oslo's own.
* :class:`Qcow2Reader` and :class:`VmdkReader` run after detection and
  before oslo's coarse safety checks; they refuse with the offending value
  in the message (the backing path, the extent file) and return the
  findings qemu-img does not report (the VMDK adapter type).

Every reader only touches bytes the inspectors already captured, except
the qcow2 backing-file name, a bounded read at the offset the header gives.
"""

import os
import re
import struct

from oslo_utils.imageutils import format_inspector

from qimgintrospect import exception
from qimgintrospect import opts

#: Where each format's magic is: (offset, bytes...). Used to tell a
#: truncated or corrupt image from an image of another format.
MAGIC = {
    'qcow2': (0, b'QFI\xfb'),
    'qed': (0, b'QED\x00'),
    'vmdk': (0, b'KDMV', b'# Disk DescriptorFile'),
    'vhd': (0, b'conectix'),
    'vhdx': (0, b'vhdxfile'),
    'vdi': (0x40, b'\x7f\x10\xda\xbe'),
    'luks': (0, b'LUKS\xba\xbe'),
    'ploop': (0, b'WithoutFreeSpace', b'WithouFreSpacExt'),
}


def has_magic(disk_format, head):
    """True when *head* carries the magic of *disk_format*."""
    entry = MAGIC.get(disk_format)
    if not entry:
        return False
    offset, magics = entry[0], entry[1:]
    return any(head[offset:offset + len(m)].lower() == m.lower()
               for m in magics)


class PloopInspector(format_inspector.FileInspector):
    """Parallels (Glance: ploop) image, qemu's ``parallels`` driver.

    The 64-byte little-endian header: magic[16], version u32 (2),
    4 x u32 geometry and BAT size, nb_sectors u64 at 36.
    """

    NAME = 'ploop'
    _MAGICS = (b'WithoutFreeSpace', b'WithouFreSpacExt')

    def _initialize(self):
        self.new_region('header', format_inspector.CaptureRegion(0, 64))
        self.add_safety_check(
            format_inspector.SafetyCheck('version', self._check_version))

    @property
    def format_match(self):
        return (self.region('header').complete
                and self.region('header').data[:16] in self._MAGICS)

    @property
    def virtual_size(self):
        if not self.format_match:
            return 0
        sectors = struct.unpack_from('<Q', self.region('header').data, 36)[0]
        return sectors * 512

    def _check_version(self):
        version = struct.unpack_from('<I', self.region('header').data, 16)[0]
        if version != 2:
            raise format_inspector.SafetyViolation(
                'unsupported parallels version %d' % version)


class FixedVhdInspector(format_inspector.FileInspector):
    """A fixed VHD: raw data followed by a 512-byte footer, nothing before.

    oslo's VHD inspector looks for the copy of the footer that only
    dynamic VHDs keep at offset 0, so it reads a fixed VHD as raw.
    """

    NAME = 'vhd'
    _FIXED = 2

    def _initialize(self):
        self.new_region('footer', format_inspector.EndCaptureRegion(512))
        self.add_safety_check(format_inspector.SafetyCheck.null())

    @property
    def format_match(self):
        footer = self.region('footer')
        if not footer.complete:
            return False
        data = bytes(footer.data)
        if not data.startswith(b'conectix'):
            return False
        disk_type, checksum = struct.unpack_from('>II', data, 60)
        expected = ~(sum(data[:64]) + sum(data[68:])) & 0xffffffff
        return disk_type == self._FIXED and checksum == expected

    @property
    def virtual_size(self):
        if not self.format_match:
            return 0
        return struct.unpack_from('>Q', bytes(self.region('footer').data),
                                  48)[0]


#: Extra inspectors by a key of their own (NAME is the Glance format).
EXTRA_INSPECTORS = {
    'ploop': PloopInspector,
    'vhd-fixed': FixedVhdInspector,
}


class Qcow2Reader(object):
    """Refuse qcow2 headers that reach outside the image, naming the file.

    qcow2 header (big-endian): version u32 @4, backing_file_offset u64 @8,
    backing_file_size u32 @16, cluster_bits u32 @20, size u64 @24,
    incompatible_features u64 @72, header_length u32 @100 (v3); header
    extensions (type u32, length u32, data padded to 8) follow the header.
    """

    KNOWN_INCOMPATIBLE = 0b11111   # dirty, corrupt, data file, compr., L2
    DATA_FILE_BIT = 1 << 2
    EXT_DATA_FILE = 0x44415441
    EXT_END = 0
    MAX_NAME = 1023

    def check(self, inspector, fd, size, conf):
        head = bytes(inspector.region('header').data)
        version, bf_offset, bf_size = struct.unpack_from('>IQI', head, 4)
        if version not in (2, 3):
            raise exception.ImageRefused(
                exception.QCOW2_VERSION,
                'qcow2 version %d is not 2 or 3' % version)
        if bf_offset:
            raise exception.ImageRefused(
                exception.BACKING_FILE,
                'the qcow2 header names a backing file: %s'
                % _quote(self._backing_name(fd, size, bf_offset, bf_size)))
        if version == 3:
            self._check_v3(head)
        return {'virtual_size': struct.unpack_from('>Q', head, 24)[0],
                'qcow2_version': version}

    def _backing_name(self, fd, size, offset, length):
        if offset >= size:
            return '(name at byte %d, past the end of the file)' % offset
        name = os.pread(fd, min(length, self.MAX_NAME), offset)
        return name.decode('utf-8', 'replace')

    def _check_v3(self, head):
        incompatible = struct.unpack_from('>Q', head, 72)[0]
        data_file = self._data_file_name(head)
        if incompatible & self.DATA_FILE_BIT or data_file is not None:
            raise exception.ImageRefused(
                exception.DATA_FILE,
                'the qcow2 image keeps its data in an external file: %s'
                % _quote(data_file or '(unnamed)'))
        unknown = incompatible & ~self.KNOWN_INCOMPATIBLE
        if unknown:
            raise exception.ImageRefused(
                exception.QCOW2_UNKNOWN_FEATURES,
                'the qcow2 header sets unknown incompatible feature bits '
                '0x%x' % unknown)

    def _data_file_name(self, head):
        header_length = struct.unpack_from('>I', head, 100)[0]
        offset = header_length
        while offset + 8 <= len(head):
            ext_type, ext_len = struct.unpack_from('>II', head, offset)
            if ext_type == self.EXT_END:
                return None
            if ext_type == self.EXT_DATA_FILE:
                name = head[offset + 8:offset + 8 + ext_len]
                return name.decode('utf-8', 'replace')
            offset += 8 + (ext_len + 7) // 8 * 8
        return None


class VmdkReader(object):
    """Read the VMDK descriptor: createType, extents and adapter type.

    Only a hosted sparse VMDK (``KDMV`` header, descriptor embedded) keeps
    its data inside the file. A text descriptor always names other files,
    and qemu-img would open them; so would a second extent line.
    """

    _EXTENT = re.compile(
        r'^(rw|rdonly|noaccess)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?',
        re.IGNORECASE)
    _FIELD = re.compile(r'^([\w.]+)\s*=\s*"?([^"]*)"?\s*$')

    def check(self, inspector, fd, size, conf):
        embedded = inspector.has_region('header')
        text = self._descriptor_text(inspector)
        fields, extents = self._parse(text)
        create_type = fields.get('createtype')
        if not embedded:
            raise exception.ImageRefused(
                exception.VMDK_EXTENT,
                'the VMDK is a bare descriptor (createType %s) whose data '
                'is in other files: %s'
                % (create_type, ', '.join(_quote(e[3] or '?')
                                          for e in extents) or 'none named'))
        if len(extents) != 1 or extents[0][2].upper() != 'SPARSE':
            raise exception.ImageRefused(
                exception.VMDK_EXTENT,
                'a sparse VMDK must have exactly one SPARSE extent, itself; '
                'this one lists: %s'
                % ('; '.join('%s %s' % (e[2], _quote(e[3] or '?'))
                             for e in extents) or 'no extent'))
        allowed = conf[opts.FORMATS_GROUP].vmdk_allowed_types
        if (create_type or '').lower() not in [t.lower() for t in allowed]:
            raise exception.ImageRefused(
                exception.VMDK_SUBFORMAT,
                'VMDK createType %s is not allowed (allowed: %s)'
                % (_quote(create_type or '(none)'), ', '.join(allowed)))
        return {'vmdk_create_type': create_type,
                'vmdk_adapter_type': fields.get('ddb.adaptertype')}

    @staticmethod
    def _descriptor_text(inspector):
        data = bytes(inspector.region('descriptor').data).split(b'\x00')[0]
        try:
            return data.decode('ascii')
        except UnicodeDecodeError:
            raise exception.ImageRefused(
                exception.VMDK_DESCRIPTOR,
                'the VMDK descriptor is not ASCII text')

    def _parse(self, text):
        fields = {}
        extents = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            extent = self._EXTENT.match(line)
            if extent:
                extents.append(extent.groups())
                continue
            field = self._FIELD.match(line)
            if field:
                fields.setdefault(field.group(1).lower(), field.group(2))
        return fields, extents


class VhdReader(object):
    """Refuse a differencing VHD: its data depends on a parent file."""

    _DIFFERENCING = 4

    def check(self, inspector, fd, size, conf):
        if inspector.has_region('footer'):
            return {'vhd_subformat': 'fixed'}
        disk_type = struct.unpack_from(
            '>I', bytes(inspector.region('header').data), 60)[0]
        if disk_type == self._DIFFERENCING:
            raise exception.ImageRefused(
                exception.BACKING_FILE,
                'the VHD is a differencing disk that reads a parent file')
        return {'vhd_subformat': 'dynamic'}


_READERS = {'qcow2': Qcow2Reader(), 'vmdk': VmdkReader(), 'vhd': VhdReader()}


def reader_for(disk_format):
    """The reader for *disk_format*, or None when oslo's checks suffice."""
    return _READERS.get(disk_format)


def _quote(value, limit=200):
    value = value if len(value) <= limit else value[:limit] + '...'
    return repr(value)
