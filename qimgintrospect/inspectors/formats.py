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

Every reader refuses what would make qemu-img open another file before it
refuses what is merely broken (a table past the end of the file is
image-truncated), so an attack is always reported as one. Readers only
read header structures: the bytes the inspectors captured plus bounded
reads of the qcow2 backing-file name and header extensions (inside the
first cluster), the VHD dynamic header and nothing else.

:func:`explain_unparsed` names the attack when a file carries a format's
magic but oslo's inspector gave up on it (a VMDK descriptor placed
outside the file, a VMDK3 ``COWD`` extent).
"""

import re
import struct

from oslo_utils.imageutils import format_inspector

from qimgintrospect import exception
from qimgintrospect import opts
from qimgintrospect import source

#: Where each format's magic is: (offset, bytes...). Used to tell a
#: truncated or corrupt image from an image of another format.
MAGIC = {
    'qcow2': (0, b'QFI\xfb'),
    'qed': (0, b'QED\x00'),
    'vmdk': (0, b'KDMV', b'COWD', b'# Disk DescriptorFile'),
    'vhd': (0, b'conectix'),
    'vhdx': (0, b'vhdxfile'),
    'vdi': (0x40, b'\x7f\x10\xda\xbe'),
    'luks': (0, b'LUKS\xba\xbe'),
    'ploop': (0, b'WithoutFreeSpace', b'WithouFreSpacExt'),
    'iso': (0x8001, b'CD001', b'NSR02', b'NSR03'),
}


def has_magic(disk_format, head):
    """True when *head* carries the magic of *disk_format*."""
    entry = MAGIC.get(disk_format)
    if not entry:
        return False
    offset, magics = entry[0], entry[1:]
    return any(head[offset:offset + len(m)].lower() == m.lower()
               for m in magics)


def magic_formats(head):
    """The formats whose magic *head* carries, in :data:`MAGIC` order."""
    return [name for name in MAGIC if has_magic(name, head)]


def explain_unparsed(disk_format, head, size):
    """Refuse a header oslo gave up on when its fields are an attack.

    Called when *head* carries the magic of *disk_format* but no inspector
    matched. Returns normally when nothing in the header is an attack (the
    caller then reports the image as corrupt or truncated).

    :raises ImageRefused: vmdk-descriptor-invalid, vmdk-external-extent,
        vmdk-subformat-not-allowed.
    """
    if disk_format != 'vmdk':
        return
    if head[:4] == b'COWD':
        raise exception.ImageRefused(
            exception.VMDK_SUBFORMAT,
            'the file is a VMDK version 3 (COWD, vmfsSparse) extent, which '
            'is not accepted')
    if head[:4] == b'KDMV' and len(head) >= VmdkReader.HEADER_LENGTH:
        VmdkReader.check_sparse_header(head, size)


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
    crypt_method u32 @32, l1_size u32 @36, l1_table_offset u64 @40,
    refcount_table_offset u64 @48, refcount_table_clusters u32 @56,
    nb_snapshots u32 @60, snapshots_offset u64 @64, incompatible_features
    u64 @72, header_length u32 @100 (v3); header extensions (type u32,
    length u32, data padded to 8) follow the header, inside the first
    cluster.
    """

    KNOWN_INCOMPATIBLE = 0b11111   # dirty, corrupt, data file, compr., L2
    DATA_FILE_BIT = 1 << 2
    EXT_DATA_FILE = 0x44415441
    EXT_CRYPTO = 0x0537be77
    EXT_END = 0
    CRYPT_NONE, CRYPT_AES, CRYPT_LUKS = 0, 1, 2
    MAX_NAME = 1023
    # qemu's MIN_CLUSTER_BITS and MAX_CLUSTER_BITS.
    CLUSTER_BITS = (9, 21)
    V2_HEADER_LENGTH = 72
    V3_MIN_HEADER_LENGTH = 104

    def check(self, inspector, fd, size, conf):
        head = bytes(inspector.region('header').data)
        (version, bf_offset, bf_size, cluster_bits, virtual_size, crypt_method,
         l1_size, l1_offset, rc_offset, rc_clusters, nb_snapshots,
         snapshots_offset) = struct.unpack_from('>IQIIQIIQQIIQ', head, 4)
        # What reaches outside the image first: those are refusals even
        # when the rest of the header is broken too.
        if version not in (2, 3):
            raise exception.ImageRefused(
                exception.QCOW2_VERSION,
                'qcow2 version %d is not 2 or 3' % version)
        if bf_offset:
            raise exception.ImageRefused(
                exception.BACKING_FILE,
                'the qcow2 header names a backing file: %s'
                % _quote(self._backing_name(fd, size, bf_offset, bf_size)))
        header_length = (struct.unpack_from('>I', head, 100)[0]
                         if version == 3 else self.V2_HEADER_LENGTH)
        extensions = self._extensions(
            fd, size, header_length,
            min(max(cluster_bits, self.CLUSTER_BITS[0]),
                self.CLUSTER_BITS[1]))
        if version == 3:
            self._check_v3(head, extensions)
        # What is merely broken, after every refusal.
        if not self.CLUSTER_BITS[0] <= cluster_bits <= self.CLUSTER_BITS[1]:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'qcow2 cluster_bits %d is outside %d..%d'
                % ((cluster_bits,) + self.CLUSTER_BITS))
        if version == 3 and header_length < self.V3_MIN_HEADER_LENGTH:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'qcow2 v3 header_length %d is below %d'
                % (header_length, self.V3_MIN_HEADER_LENGTH))
        self._check_encryption(crypt_method, extensions, size)
        cluster = 1 << cluster_bits
        if not rc_clusters:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the qcow2 header gives no refcount table (0 clusters)')
        if l1_size:
            _check_within(size, 'qcow2 L1 table', l1_offset, l1_size * 8)
        _check_within(size, 'qcow2 refcount table', rc_offset,
                      rc_clusters * cluster)
        if nb_snapshots:
            _check_within(size, 'qcow2 snapshot table', snapshots_offset, 1)
        return {'virtual_size': virtual_size, 'qcow2_version': version}

    def _backing_name(self, fd, size, offset, length):
        if offset >= size:
            return '(name at byte %d, past the end of the file)' % offset
        name = source.read_at(fd, min(length, self.MAX_NAME), offset)
        return name.decode('utf-8', 'replace')

    def _check_v3(self, head, extensions):
        incompatible = struct.unpack_from('>Q', head, 72)[0]
        data_file = extensions.get(self.EXT_DATA_FILE)
        if incompatible & self.DATA_FILE_BIT or data_file is not None:
            raise exception.ImageRefused(
                exception.DATA_FILE,
                'the qcow2 image keeps its data in an external file: %s'
                % _quote(data_file.decode('utf-8', 'replace')
                         if data_file is not None else '(unnamed)'))
        unknown = incompatible & ~self.KNOWN_INCOMPATIBLE
        if unknown:
            raise exception.ImageRefused(
                exception.QCOW2_UNKNOWN_FEATURES,
                'the qcow2 header sets unknown incompatible feature bits '
                '0x%x' % unknown)

    def _check_encryption(self, crypt_method, extensions, size):
        # qemu-img 7.2 dies of SIGSEGV on a LUKS-encrypted qcow2 without
        # its crypto header extension: never hand it one.
        if crypt_method not in (self.CRYPT_NONE, self.CRYPT_AES,
                                self.CRYPT_LUKS):
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'qcow2 encryption method %d is unknown' % crypt_method)
        if crypt_method != self.CRYPT_LUKS:
            return
        crypto = extensions.get(self.EXT_CRYPTO)
        if crypto is None or len(crypto) < 16:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the qcow2 image is LUKS-encrypted but has no crypto header '
                'extension')
        offset, length = struct.unpack_from('>QQ', crypto)
        _check_within(size, 'qcow2 LUKS header', offset, length)

    def _extensions(self, fd, size, header_length, cluster_bits):
        """{type: data} of the header extensions, bounded to one cluster.

        qemu reads extensions up to the end of the first cluster, so an
        attacker can push one (the data-file name) past the header region
        oslo captured; read as far as qemu does (at most 2 MiB).
        """
        end = min(1 << cluster_bits, size)
        if header_length >= end:
            return {}
        area = source.read_at(fd, end - header_length, header_length)
        found = {}
        offset = 0
        while offset + 8 <= len(area):
            ext_type, ext_len = struct.unpack_from('>II', area, offset)
            if ext_type == self.EXT_END:
                break
            found.setdefault(ext_type, area[offset + 8:offset + 8 + ext_len])
            offset += 8 + (ext_len + 7) // 8 * 8
        return found


class VmdkReader(object):
    """Read the VMDK descriptor: createType, extents and adapter type.

    Only a hosted sparse VMDK (``KDMV`` header, descriptor embedded) keeps
    its data inside the file. A text descriptor always names other files,
    and qemu-img would open them; so would a second extent line, a sparse
    header whose capacity is 0 (qemu then reads the embedded descriptor as
    a descriptor file and opens its extents) and a ``parentFileNameHint``.

    Sparse header (little-endian): version u32 @4, capacity u64 @12 and
    granularity u64 @20 (sectors), descriptor offset u64 @28 and size u64
    @36 (sectors), redundant and primary grain directory offsets u64 @48
    and @56 and metadata size (grain_offset) u64 @64 (sectors).
    """

    HEADER_LENGTH = 72
    SECTOR = 512
    GD_AT_END = 0xffffffffffffffff
    FLAG_RGD = 1 << 1
    # qemu reads the descriptor of a sparse file at sector 1, at most
    # 1 MiB of it, and looks for parentFileNameHint in its first 20
    # sectors (whatever descriptor size the header claims).
    DESCRIPTOR_SECTOR = 1
    MAX_DESCRIPTOR = 1024 * 1024
    PARENT_WINDOW = 20 * 512

    _EXTENT = re.compile(
        r'^(rw|rdonly|noaccess)\s+(\d+)\s+(\w+)(?:\s+"([^"]*)")?',
        re.IGNORECASE)
    _FIELD = re.compile(r'^([\w.]+)\s*=\s*"?([^"]*)"?\s*$')
    _PARENT = re.compile(rb'parentFileNameHint\s*=\s*"?([^"\r\n\x00]*)',
                         re.IGNORECASE)

    def check(self, inspector, fd, size, conf):
        embedded = inspector.has_region('header')
        text = self._descriptor_text(inspector)
        fields, extents, unknown = self._parse(text)
        create_type = fields.get('createtype')
        if not embedded:
            raise exception.ImageRefused(
                exception.VMDK_EXTENT,
                'the VMDK is a bare descriptor (createType %s) whose data '
                'is in other files: %s'
                % (create_type, ', '.join(_quote(e[3] or '?')
                                          for e in extents) or 'none named'))
        header = bytes(inspector.region('header').data)
        self.check_sparse_header(header, size, extents)
        if len(extents) != 1 or extents[0][2].upper() != 'SPARSE':
            raise exception.ImageRefused(
                exception.VMDK_EXTENT,
                'a sparse VMDK must have exactly one SPARSE extent, itself; '
                'this one lists: %s'
                % ('; '.join('%s %s' % (e[2], _quote(e[3] or '?'))
                             for e in extents) or 'no extent'))
        for line in unknown:
            raise exception.ImageRefused(
                exception.VMDK_DESCRIPTOR,
                'the VMDK descriptor has a line this tool does not '
                'understand: %s' % _quote(line))
        name = extents[0][3] or ''
        if '/' in name or '\\' in name or name in ('.', '..'):
            raise exception.ImageRefused(
                exception.VMDK_EXTENT,
                'the VMDK extent names a path, not the image itself: %s'
                % _quote(name))
        parent = self._parent_hint(fd, size)
        if parent is not None:
            raise exception.ImageRefused(
                exception.BACKING_FILE,
                'the VMDK descriptor names a parent (backing) file: '
                'parentFileNameHint=%s' % _quote(parent))
        allowed = conf[opts.FORMATS_GROUP].vmdk_allowed_types
        if (create_type or '').lower() not in [t.lower() for t in allowed]:
            raise exception.ImageRefused(
                exception.VMDK_SUBFORMAT,
                'VMDK createType %s is not allowed (allowed: %s)'
                % (_quote(create_type or '(none)'), ', '.join(allowed)))
        self._check_grain_directory(header, size)
        return {'vmdk_create_type': create_type,
                'vmdk_adapter_type': fields.get('ddb.adaptertype')}

    @classmethod
    def check_sparse_header(cls, header, size, extents=()):
        """Refuse a sparse header that places or sizes its descriptor badly.

        :param header: at least :data:`HEADER_LENGTH` bytes from offset 0.
        :raises ImageRefused: vmdk-descriptor-invalid when the descriptor
            is not at sector 1, is empty, larger than 1 MiB or runs past
            the end of the file; vmdk-external-extent when the capacity
            is 0.
        """
        (capacity, _grain, desc_sector,
         desc_sectors) = struct.unpack_from('<QQQQ', header, 12)
        grain_offset, = struct.unpack_from('<Q', header, 64)
        desc_offset = desc_sector * cls.SECTOR
        desc_bytes = desc_sectors * cls.SECTOR
        if desc_sector != cls.DESCRIPTOR_SECTOR:
            raise exception.ImageRefused(
                exception.VMDK_DESCRIPTOR,
                'the VMDK descriptor offset is sector %d (byte %d)%s; qemu '
                'reads it at sector %d'
                % (desc_sector, desc_offset,
                   ', past the end of the %d-byte file' % size
                   if desc_offset >= size else '', cls.DESCRIPTOR_SECTOR))
        if not 0 < desc_bytes <= cls.MAX_DESCRIPTOR:
            raise exception.ImageRefused(
                exception.VMDK_DESCRIPTOR,
                'the VMDK descriptor size is %d sectors (%d bytes); it must '
                'be between 1 sector and %d bytes'
                % (desc_sectors, desc_bytes, cls.MAX_DESCRIPTOR))
        if desc_offset + desc_bytes > size:
            metadata_end = grain_offset * cls.SECTOR
            if size < metadata_end:
                # The file is shorter than its own header says: cut short.
                _check_within(size, 'VMDK descriptor', desc_offset,
                              desc_bytes)
            raise exception.ImageRefused(
                exception.VMDK_DESCRIPTOR,
                'the VMDK descriptor (%d sectors from sector %d, bytes '
                '%d-%d) runs past the end of the %d-byte file'
                % (desc_sectors, desc_sector, desc_offset,
                   desc_offset + desc_bytes, size))
        if capacity == 0:
            raise exception.ImageRefused(
                exception.VMDK_EXTENT,
                'the VMDK sparse header has capacity 0, which makes qemu '
                'read its descriptor as a descriptor file and open the '
                'extents it names: %s'
                % (', '.join(_quote(e[3] or '?') for e in extents)
                   or 'none named'))

    def _check_grain_directory(self, header, size):
        flags, = struct.unpack_from('<I', header, 8)
        rgd_sector, gd_sector, grain_offset = struct.unpack_from(
            '<QQQ', header, 48)
        # qemu counts the file in whole sectors, the last one partial.
        sectors = -(-size // self.SECTOR)
        _check_within(sectors * self.SECTOR,
                      'VMDK metadata (up to grain_offset)', 0,
                      grain_offset * self.SECTOR)
        if gd_sector != self.GD_AT_END:
            _check_within(size, 'VMDK grain directory',
                          gd_sector * self.SECTOR, 1)
            if flags & self.FLAG_RGD:
                _check_within(size, 'VMDK redundant grain directory',
                              rgd_sector * self.SECTOR, 1)

    def _parent_hint(self, fd, size):
        # qemu searches the raw descriptor sectors, comments included, up
        # to the first NUL: so does this.
        start = self.DESCRIPTOR_SECTOR * self.SECTOR
        length = min(self.PARENT_WINDOW, max(size - start, 0))
        window = source.read_at(fd, length, start).split(b'\x00')[0]
        found = self._PARENT.search(window)
        if found is None:
            return None
        return found.group(1).decode('ascii', 'replace')

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
        """Return (fields, extents, lines that are neither).

        The same line classes oslo's descriptor check accepts: comments,
        ``key = value`` (ddb.* included), and extent lines.
        """
        fields = {}
        extents = []
        unknown = []
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
            elif not (line.lower().startswith('ddb') or '=' in line
                      and ' ' not in line.split('=')[0]):
                unknown.append(line)
        return fields, extents, unknown


class VhdReader(object):
    """Refuse a differencing VHD; check a dynamic VHD's tables are inside.

    Footer/header copy (big-endian): data_offset u64 @16 (where the
    dynamic header is), disk_type u32 @60. Dynamic header: cookie
    ``cxsparse``, table_offset u64 @16, max_table_entries u32 @28, parent
    unicode name (UTF-16BE, 512 bytes) @64.
    """

    _DIFFERENCING = 4
    _DYNAMIC_HEADER = 1024

    def check(self, inspector, fd, size, conf):
        if inspector.has_region('footer'):
            return {'vhd_subformat': 'fixed'}
        footer = bytes(inspector.region('header').data)
        disk_type = struct.unpack_from('>I', footer, 60)[0]
        data_offset = struct.unpack_from('>Q', footer, 16)[0]
        if disk_type == self._DIFFERENCING:
            raise exception.ImageRefused(
                exception.BACKING_FILE,
                'the VHD is a differencing disk that reads a parent file: '
                '%s' % _quote(self._parent_name(fd, size, data_offset)))
        _check_within(size, 'VHD dynamic header', data_offset,
                      self._DYNAMIC_HEADER)
        dynamic = source.read_at(fd, self._DYNAMIC_HEADER, data_offset)
        if not dynamic.startswith(b'cxsparse'):
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the VHD dynamic header at byte %d has no cxsparse cookie'
                % data_offset)
        table_offset, = struct.unpack_from('>Q', dynamic, 16)
        entries, = struct.unpack_from('>I', dynamic, 28)
        _check_within(size, 'VHD block allocation table', table_offset,
                      entries * 4)
        return {'vhd_subformat': 'dynamic'}

    def _parent_name(self, fd, size, data_offset):
        # The parent's name, UTF-16BE, 512 bytes at 64 in the dynamic
        # header.
        if data_offset + self._DYNAMIC_HEADER > size:
            return '(dynamic header past the end of the file)'
        dynamic = source.read_at(fd, self._DYNAMIC_HEADER, data_offset)
        name = dynamic[64:64 + 512].decode('utf-16-be', 'replace')
        return name.split('\x00')[0] or '(unnamed)'


class VdiReader(object):
    """Check that a VDI's block map lies inside the file.

    Header (little-endian): offset_bmap u32 @0x154, blocks_in_image u32
    @0x180.
    """

    def check(self, inspector, fd, size, conf):
        header = bytes(inspector.region('header').data)
        bmap_offset, = struct.unpack_from('<I', header, 0x154)
        blocks, = struct.unpack_from('<I', header, 0x180)
        _check_within(size, 'VDI block map', bmap_offset, blocks * 4)
        return {}


_READERS = {'qcow2': Qcow2Reader(), 'vmdk': VmdkReader(), 'vhd': VhdReader(),
            'vdi': VdiReader()}


def reader_for(disk_format):
    """The reader for *disk_format*, or None when oslo's checks suffice."""
    return _READERS.get(disk_format)


def _quote(value, limit=200):
    value = value if len(value) <= limit else value[:limit] + '...'
    return repr(value)


def _check_within(size, what, offset, length):
    """Fail with image-truncated when [offset, offset+length) passes EOF."""
    if offset + length > size:
        raise exception.InspectionFailed(
            exception.IMAGE_TRUNCATED,
            'the %s (bytes %d-%d) runs past the end of the %d-byte file'
            % (what, offset, offset + length, size))
