"""Format readers for what oslo.utils' format_inspector does not give.

* :class:`PloopInspector` and :class:`FixedVhdInspector` detect two formats
  oslo does not (Parallels/ploop, and a VHD whose only footer is at the
  end); they are oslo ``FileInspector`` subclasses so they run in the same
  single pass as oslo's own.
* The readers (:func:`reader_for`: qcow2, VMDK, VHD, VHDX, VDI, LUKS) run
  after detection and before oslo's coarse safety checks. They refuse with
  the offending value in the message (the backing path, the extent file),
  check every table the format's qemu driver reads whole against the end
  of the file, and return the findings qemu-img does not report (the VMDK
  adapter type) and the virtual size exactly as qemu computes it, which
  :mod:`~qimgintrospect.inspectors.qemu_img` compares with qemu-img's.

Every reader refuses what would make qemu-img open another file before it
refuses what is merely broken (a table past the end of the file is
image-truncated), so an attack is always reported as one. Readers read
only metadata: the bytes the inspectors captured, plus bounded reads of
the qcow2 backing-file name, header extensions (inside the first cluster)
and snapshot table headers, the VMDK footer (the last 1536 bytes), the VHD
dynamic header and the first sectors of a VMDK descriptor.

:func:`magic_formats` and :func:`explain_unparsed` name the format when a
file carries a format's magic but no inspector could parse it (a truncated
header, a VMDK descriptor placed outside the file, a VMDK3 ``COWD``
extent). The magics are those of qemu's probes
(:mod:`~qimgintrospect.inspectors.probe`), plus the ISO 9660 one.
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

import re
import struct

from oslo_utils.imageutils import format_inspector
from oslo_utils import units

from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect.inspectors import probe
from qimgintrospect import opts
from qimgintrospect import source

SECTOR = 512

#: ISO 9660 (and UDF) volume descriptor identifiers, at byte 0x8001. qemu
#: has no ISO driver (it reads an ISO as raw), so this is the one magic
#: that is not in qemu's probe table.
ISO_MAGIC = (0x8001, (b'CD001', b'NSR02', b'NSR03'))


def has_magic(disk_format, head):
    """True when *head* carries the magic of Glance format *disk_format*.

    Magics are compared byte for byte: a raw disk that starts with
    ``qfi\xfb`` carries no qcow2 magic.
    """
    if disk_format == 'iso':
        offset, magics = ISO_MAGIC
        return any(head[offset:offset + len(m)] == m for m in magics)
    driver = diskformats.QEMU_DRIVERS.get(disk_format)
    if driver is None or driver == 'raw':
        return False
    return probe.carries_magic(driver, head)


def magic_formats(head):
    """The Glance formats whose magic *head* carries, in qemu's order."""
    glance = {driver: name for name, driver in diskformats.QEMU_DRIVERS.items()
              if driver != 'raw'}
    found = [glance[p.driver] for p in probe.TABLE
             if p.driver in glance and has_magic(glance[p.driver], head)]
    return found + (['iso'] if has_magic('iso', head) else [])


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


def qemu_raw_size(size):
    """The virtual size qemu gives a raw file of *size* bytes.

    qemu counts whole sectors, the last one partial.
    """
    return _sectors(size) * SECTOR


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
        header = self.region('header').data
        sectors = struct.unpack_from('<Q', header, 36)[0]
        if header[:16] == self._MAGICS[0]:
            # qemu keeps 32 bits of the size in the original format.
            sectors &= 0xffffffff
        return sectors * SECTOR

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
    #: qemu's vpc probe looks for the footer copy at offset 0, which a
    #: fixed VHD lacks: qemu, probing, reads a fixed VHD as raw.
    QEMU_PROBES_AS = 'raw'
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
    cluster. Each snapshot table entry starts 8-aligned with a 40-byte
    header (id_str_size u16 @12, name_size u16 @14, extra_data_size u32
    @36) followed by its extra data, id and name.
    """

    # qemu 7.2's QCOW2_INCOMPAT_MASK: dirty, corrupt, external data file,
    # compression type, extended L2 entries.
    KNOWN_INCOMPATIBLE = 0b11111
    CORRUPT_BIT = 1 << 1
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
    # qemu's limits on the snapshot table (QCOW_MAX_SNAPSHOTS,
    # QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_SNAPSHOTS_SIZE).
    SNAPSHOT_HEADER = 40
    MAX_SNAPSHOTS = 65536
    MAX_SNAPSHOT_EXTRA = 1024
    MAX_SNAPSHOT_TABLE = 64 * units.Mi
    # The first bytes of the snapshot table are read at once: a few
    # hundred snapshots fit.
    SNAPSHOT_READ = 64 * units.Ki

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
        incompatible = (struct.unpack_from('>Q', head, 72)[0]
                        if version == 3 else 0)
        self._check_features(incompatible, extensions)
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
        if incompatible & self.CORRUPT_BIT:
            # qemu-img info still reads it (read-only), but no qemu opens
            # it read-write: Nova could not boot it.
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the qcow2 header has its corrupt bit set (incompatible '
                'feature bit 1): qemu found its metadata inconsistent and '
                'will not open it for writing until it is repaired')
        findings = self._check_encryption(crypt_method, extensions, size,
                                          conf)
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
            self._check_snapshot_table(fd, size, snapshots_offset,
                                       nb_snapshots)
        # qemu counts whole sectors: it drops a partial last one.
        findings.update(virtual_size=virtual_size // SECTOR * SECTOR,
                        qcow2_version=version)
        return findings

    def _backing_name(self, fd, size, offset, length):
        if offset >= size:
            return '(name at byte %d, past the end of the file)' % offset
        name = source.read_at(fd, min(length, self.MAX_NAME), offset)
        return name.decode('utf-8', 'replace')

    def _check_features(self, incompatible, extensions):
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

    def _check_encryption(self, crypt_method, extensions, size, conf):
        """Refuse or report encryption; return the findings it gives."""
        if crypt_method == self.CRYPT_NONE:
            return {}
        if crypt_method == self.CRYPT_AES:
            raise exception.ImageRefused(
                exception.IMAGE_ENCRYPTED,
                'the qcow2 image is encrypted with qemu\'s legacy AES-CBC '
                'scheme (crypt_method 1), which is broken and never '
                'accepted; qemu\'s own system emulators refuse it')
        if crypt_method != self.CRYPT_LUKS:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'qcow2 encryption method %d is unknown' % crypt_method)
        # qemu-img 7.2 dies of SIGSEGV on a LUKS-encrypted qcow2 without
        # its crypto header extension: never hand it one.
        crypto = extensions.get(self.EXT_CRYPTO)
        if crypto is None or len(crypto) < 16:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the qcow2 image is LUKS-encrypted but has no crypto header '
                'extension')
        offset, length = struct.unpack_from('>QQ', crypto)
        _check_within(size, 'qcow2 LUKS header', offset, length)
        if not conf[opts.FORMATS_GROUP].allow_encrypted:
            raise exception.ImageRefused(
                exception.IMAGE_ENCRYPTED,
                'the qcow2 image is LUKS-encrypted (its key is not in the '
                'image); [introspection_formats] allow_encrypted is off')
        return {'qcow2_encryption': 'luks',
                'warnings': ['the qcow2 image is LUKS-encrypted: it boots '
                             'only with its secret, which is not in the '
                             'image']}

    def _check_snapshot_table(self, fd, size, offset, count):
        """Walk the snapshot table as qemu reads it; it must end in the file.

        qemu allocates every entry's id and name as their headers say and
        reads what is past the end of the file as zeros, so only the whole
        table inside the file bounds what it allocates. Only the 40-byte
        entry headers are read.
        """
        if count > self.MAX_SNAPSHOTS:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the qcow2 header claims %d snapshots; qemu reads at most %d'
                % (count, self.MAX_SNAPSHOTS))
        what = 'qcow2 snapshot table (%d entries)' % count
        # The smallest table this count can make, before reading any entry.
        _check_within(size, what + ' at its smallest', offset,
                      count * self.SNAPSHOT_HEADER)
        first = source.read_at(fd, min(self.SNAPSHOT_READ, size - offset),
                               offset)
        position = offset
        for index in range(count):
            position = -(-position // 8) * 8
            _check_within(size, what, offset,
                          position + self.SNAPSHOT_HEADER - offset)
            start = position - offset
            if start + self.SNAPSHOT_HEADER <= len(first):
                entry = first[start:start + self.SNAPSHOT_HEADER]
            else:
                entry = source.read_at(fd, self.SNAPSHOT_HEADER, position)
            id_size, name_size = struct.unpack_from('>HH', entry, 12)
            extra, = struct.unpack_from('>I', entry, 36)
            if extra > self.MAX_SNAPSHOT_EXTRA:
                raise exception.InspectionFailed(
                    exception.IMAGE_CORRUPT,
                    'qcow2 snapshot %d has %d bytes of extra data; qemu '
                    'reads at most %d' % (index, extra,
                                          self.MAX_SNAPSHOT_EXTRA))
            position += self.SNAPSHOT_HEADER + extra + id_size + name_size
            if position - offset > self.MAX_SNAPSHOT_TABLE:
                raise exception.InspectionFailed(
                    exception.IMAGE_CORRUPT,
                    'the qcow2 snapshot table is larger than the %d bytes '
                    'qemu reads' % self.MAX_SNAPSHOT_TABLE)
        _check_within(size, what, offset, position - offset)

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

    Sparse header (little-endian): version u32 @4, flags u32 @8, capacity
    u64 @12 and granularity u64 @20 (sectors), descriptor offset u64 @28
    and size u64 @36 (sectors), num_gtes_per_gt u32 @44, redundant and
    primary grain directory offsets u64 @48 and @56, metadata size
    (grain_offset) u64 @64 (sectors), then a filler byte, four check bytes
    and compressAlgorithm u16 @77. A header whose grain directory offset
    is ``GD_AT_END`` (a streamOptimized file written as a stream) has its
    real values in a footer: a footer marker, a copy of the header and an
    end-of-stream marker in the last three sectors.
    """

    HEADER_LENGTH = 72
    HEADER_END = 79
    GD_AT_END = 0xffffffffffffffff
    FLAG_RGD = 1 << 1
    MARKER_FOOTER = 3
    # qemu reads the descriptor of a sparse file at sector 1, at most
    # 1 MiB of it, and looks for parentFileNameHint in its first 20
    # sectors (whatever descriptor size the header claims).
    DESCRIPTOR_SECTOR = 1
    MAX_DESCRIPTOR = 1024 * 1024
    PARENT_WINDOW = 20 * 512
    # qemu's limits on the grain tables (vmdk.c).
    MAX_GTES_PER_GT = 512
    MAX_GRANULARITY = 0x200000
    MAX_GD_ENTRIES = 32 * units.Mi
    # Header fields a footer must repeat: name, offset, struct format.
    _FOOTER_FIELDS = (
        ('version', 4, '<I'), ('flags', 8, '<I'), ('capacity', 12, '<Q'),
        ('granularity', 20, '<Q'), ('descriptor offset', 28, '<Q'),
        ('descriptor size', 36, '<Q'), ('num_gtes_per_gt', 44, '<I'),
        ('grain_offset', 64, '<Q'), ('compressAlgorithm', 77, '<H'))

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
        if unknown:
            raise exception.ImageRefused(
                exception.VMDK_DESCRIPTOR,
                'the VMDK descriptor has a line this tool does not '
                'understand: %s' % _quote(unknown[0]))
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
        effective = self._effective_header(header, fd, size)
        self._check_grain_directory(effective, size)
        capacity, = struct.unpack_from('<Q', effective, 12)
        return {'vmdk_create_type': create_type,
                'vmdk_adapter_type': fields.get('ddb.adaptertype'),
                'virtual_size': capacity * SECTOR}

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
        desc_offset = desc_sector * SECTOR
        desc_bytes = desc_sectors * SECTOR
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
            metadata_end = grain_offset * SECTOR
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

    def _effective_header(self, header, fd, size):
        """The header qemu goes by: the footer's when the header defers.

        :raises ImageRefused: vmdk-footer-invalid when the footer is not
            one, or disagrees with the header on anything but the grain
            directory it exists to give.
        """
        gd_sector, = struct.unpack_from('<Q', header, 56)
        if gd_sector != self.GD_AT_END:
            return header
        # qemu reads the three sectors before the end of the file counted
        # in whole sectors; what lies past the end reads as zeros.
        start = _sectors(size) * SECTOR - 3 * SECTOR
        if start < 0:
            raise exception.ImageRefused(
                exception.VMDK_FOOTER,
                'the VMDK header says its grain directory is in a footer, '
                'but the %d-byte file cannot hold one' % size)
        data = source.read_at(fd, 3 * SECTOR, start).ljust(3 * SECTOR,
                                                           b'\x00')
        marker, footer, eos = (data[:SECTOR], data[SECTOR:2 * SECTOR],
                               data[2 * SECTOR:])
        marker_size, marker_type = struct.unpack_from('<II', marker, 8)
        eos_value, eos_size, eos_type = struct.unpack_from('<QII', eos, 0)
        if (footer[:4] != b'KDMV' or marker_size != 0
                or marker_type != self.MARKER_FOOTER or eos_value
                or eos_size or eos_type):
            raise exception.ImageRefused(
                exception.VMDK_FOOTER,
                'the VMDK header says its grain directory is in a footer, '
                'but bytes %d-%d are no footer marker, footer and '
                'end-of-stream marker' % (start, start + 3 * SECTOR))
        for name, offset, fmt in self._FOOTER_FIELDS:
            ours, = struct.unpack_from(fmt, header, offset)
            theirs, = struct.unpack_from(fmt, footer, offset)
            if ours != theirs:
                raise exception.ImageRefused(
                    exception.VMDK_FOOTER,
                    'the streamOptimized footer (byte %d) disagrees with '
                    'the header on the %s: %d in the header, %d in the '
                    'footer, which qemu would go by'
                    % (start + SECTOR, name, ours, theirs))
        if struct.unpack_from('<Q', footer, 56)[0] == self.GD_AT_END:
            raise exception.ImageRefused(
                exception.VMDK_FOOTER,
                'the streamOptimized footer (byte %d) points at yet another '
                'footer for its grain directory' % (start + SECTOR))
        return footer

    def _check_grain_directory(self, header, size):
        """The grain directories qemu reads, whole, inside the file."""
        version, flags, capacity, granularity = struct.unpack_from(
            '<IIQQ', header, 4)
        gtes_per_gt, rgd_sector, gd_sector, grain_offset = struct.unpack_from(
            '<IQQQ', header, 44)
        if version > 3:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'VMDK version %d is not supported (qemu reads 1 to 3)'
                % version)
        if gtes_per_gt > self.MAX_GTES_PER_GT:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'VMDK grain tables of %d entries are too large (qemu reads '
                'at most %d)' % (gtes_per_gt, self.MAX_GTES_PER_GT))
        entry_sectors = (gtes_per_gt * granularity) & _U64
        if not entry_sectors:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the VMDK grain directory entry covers no sector '
                '(num_gtes_per_gt %d, granularity %d)'
                % (gtes_per_gt, granularity))
        # qemu computes this in 64 bits and keeps 32 of them.
        entries = (((capacity + entry_sectors - 1) & _U64)
                   // entry_sectors) & 0xffffffff
        _check_within(_sectors(size) * SECTOR,
                      'VMDK metadata (up to grain_offset)', 0,
                      grain_offset * SECTOR)
        if granularity > self.MAX_GRANULARITY:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'VMDK granularity %d sectors is above the %d qemu accepts'
                % (granularity, self.MAX_GRANULARITY))
        if entries > self.MAX_GD_ENTRIES:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the VMDK grain directory has %d entries, above the %d qemu '
                'accepts' % (entries, self.MAX_GD_ENTRIES))
        _check_within(size, 'VMDK grain directory (%d entries)' % entries,
                      gd_sector * SECTOR, entries * 4)
        if flags & self.FLAG_RGD:
            _check_within(size, 'VMDK redundant grain directory (%d '
                          'entries)' % entries, rgd_sector * SECTOR,
                          entries * 4)

    def _parent_hint(self, fd, size):
        # qemu searches the raw descriptor sectors, comments included, up
        # to the first NUL: so does this.
        start = self.DESCRIPTOR_SECTOR * SECTOR
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
    dynamic header is), creator_app[4] @28, current_size u64 @48, CHS
    geometry (cylinders u16 @56, heads u8 @58, sectors per track u8 @59),
    disk_type u32 @60. Dynamic header: cookie ``cxsparse``, table_offset
    u64 @16, max_table_entries u32 @28, parent unicode name (UTF-16BE, 512
    bytes) @64.
    """

    _DIFFERENCING = 4
    _DYNAMIC_HEADER = 1024
    # qemu's vpc driver sizes a disk by its CHS geometry, unless a creator
    # it knows sizes by current_size, or the geometry is the largest CHS
    # can say; it opens at most 2040 GiB.
    _SIZED_BY_CURRENT_SIZE = (b'win ', b'qem2', b'd2v ', b'CTXS', b'tap\x00')
    _MAX_GEOMETRY = 65535 * 16 * 255
    _MAX_SECTORS = 0xff000000

    def check(self, inspector, fd, size, conf):
        if inspector.has_region('footer'):
            footer = bytes(inspector.region('footer').data)
            return {'vhd_subformat': 'fixed',
                    'virtual_size': self.qemu_size(footer)}
        footer = bytes(inspector.region('header').data)
        disk_type = struct.unpack_from('>I', footer, 60)[0]
        data_offset = struct.unpack_from('>Q', footer, 16)[0]
        if disk_type == self._DIFFERENCING:
            raise exception.ImageRefused(
                exception.BACKING_FILE,
                'the VHD is a differencing disk that reads a parent file: '
                '%s' % _quote(self._parent_name(fd, size, data_offset)))
        virtual_size = self.qemu_size(footer)
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
        return {'vhd_subformat': 'dynamic', 'virtual_size': virtual_size}

    @classmethod
    def qemu_size(cls, footer):
        """The virtual size qemu's vpc driver gives the disk of *footer*.

        :raises InspectionFailed: image-corrupt when it is above what qemu
            opens.
        """
        current_size, = struct.unpack_from('>Q', footer, 48)
        cylinders, heads, per_track = struct.unpack_from('>HBB', footer, 56)
        sectors = cylinders * heads * per_track
        if (footer[28:32] in cls._SIZED_BY_CURRENT_SIZE
                or sectors == cls._MAX_GEOMETRY):
            sectors = current_size // SECTOR
        if sectors > cls._MAX_SECTORS:
            raise exception.InspectionFailed(
                exception.IMAGE_CORRUPT,
                'the VHD claims %d sectors; qemu opens at most %d (2040 GiB)'
                % (sectors, cls._MAX_SECTORS))
        return sectors * SECTOR

    def _parent_name(self, fd, size, data_offset):
        # The parent's name, UTF-16BE, 512 bytes at 64 in the dynamic
        # header.
        if data_offset + self._DYNAMIC_HEADER > size:
            return '(dynamic header past the end of the file)'
        dynamic = source.read_at(fd, self._DYNAMIC_HEADER, data_offset)
        name = dynamic[64:64 + 512].decode('utf-16-be', 'replace')
        return name.split('\x00')[0] or '(unnamed)'


class VhdxReader(object):
    """The virtual size qemu gives a VHDX: whole 512-byte sectors.

    qemu opens only VHDX files with 512-byte logical sectors, and counts
    the virtual disk size in them.
    """

    def check(self, inspector, fd, size, conf):
        if not inspector.virtual_size:
            return {}
        return {'virtual_size': inspector.virtual_size // SECTOR * SECTOR}


class VdiReader(object):
    """Check that a VDI's block map lies inside the file.

    Header (little-endian): offset_bmap u32 @0x154, disk_size u64 @0x170,
    blocks_in_image u32 @0x180.
    """

    def check(self, inspector, fd, size, conf):
        header = bytes(inspector.region('header').data)
        bmap_offset, = struct.unpack_from('<I', header, 0x154)
        disk_size, = struct.unpack_from('<Q', header, 0x170)
        blocks, = struct.unpack_from('<I', header, 0x180)
        _check_within(size, 'VDI block map', bmap_offset, blocks * 4)
        # qemu rounds an odd disk size up to whole sectors.
        return {'virtual_size': _sectors(disk_size) * SECTOR}


class LuksReader(object):
    """The virtual size qemu gives a LUKS (version 1) image.

    Header (big-endian): payload_offset u32 @104, in 512-byte sectors; the
    disk is what follows it, to the end of the file in whole sectors.
    """

    def check(self, inspector, fd, size, conf):
        header = bytes(inspector.region('header').data)
        payload, = struct.unpack_from('>I', header, 104)
        _check_within(_sectors(size) * SECTOR, 'LUKS payload start', 0,
                      payload * SECTOR)
        return {'virtual_size': (_sectors(size) - payload) * SECTOR}


_READERS = {'qcow2': Qcow2Reader(), 'vmdk': VmdkReader(), 'vhd': VhdReader(),
            'vhdx': VhdxReader(), 'vdi': VdiReader(), 'luks': LuksReader()}

_U64 = (1 << 64) - 1


def reader_for(disk_format):
    """The reader for *disk_format*, or None when oslo's checks suffice."""
    return _READERS.get(disk_format)


def _sectors(size):
    """*size* bytes in whole sectors, the last one partial."""
    return -(-size // SECTOR)


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
