"""The file names in a Linux initramfs, read here from its bytes.

libguestfs's ``initrd_list`` is ``zcat | cpio -it`` (daemon/initrd.c): it
fails on what most distributions ship now, an uncompressed early
microcode archive followed by the compressed main one, and on zstd. So
the archive is read here, in this process, as the kernel reads it
(Documentation/driver-api/early-userspace/buffer-format.rst): a sequence
of segments, each an uncompressed newc cpio (``070701``, or ``070702``
with checksums) or a compressed stream (gzip, xz, lzma, bzip2, zstd)
holding one, with zero padding between them.

The archive comes from the guest and may be hostile:

* nothing is ever written to disk: names are collected, file data is
  read and dropped;
* every read is bounded: the raw archive (:data:`MAX_ARCHIVE`), what all
  its segments decompress to (:data:`MAX_EXPANDED`, which stops
  decompression bombs), the number of entries, a name's length; each
  decompressor is fed in small steps and asked for at most a chunk of
  output at a time (zlib's and lzma's ``max_length``; zstandard's
  ``stream_reader``), with a memory limit for xz and zstd windows;
* a header that is not newc, a field that is not hexadecimal, a name
  that does not end in NUL or a stream that is cut ends the listing with
  :class:`ArchiveError`; what was listed before it is kept.

zstd is decompressed with the ``zstandard`` package (python-zstandard,
the reference library's bindings): in-process, streaming, its output
read in bounded pieces and frames needing a window above
:data:`ZSTD_MAX_WINDOW` refused; the ``zstd`` program would need a pipe
pair, a process under limits and a reader thread for the same result.
lz4 (the kernel's legacy lz4 framing) and lzo are not read: such an
archive is :class:`Unsupported`.
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

import bz2
import lzma
import zlib

from oslo_utils import units

try:
    import zstandard
except ImportError:  # pragma: no cover - listed in requirements.txt
    zstandard = None

#: Largest initramfs file read (compressed, as stored).
MAX_ARCHIVE = 512 * units.Mi
#: Most bytes all segments may expand to.
MAX_EXPANDED = 2 * units.Gi
#: Most entries listed.
MAX_ENTRIES = 500000
#: Longest name (PATH_MAX).
MAX_NAME = 4096
#: Largest zstd window accepted (zstd's own default limit without
#: --long is 128 MiB).
ZSTD_MAX_WINDOW = 128 * units.Mi
#: Memory limit of the xz and lzma decoders.
XZ_MEMLIMIT = 256 * units.Mi
#: Raw and decompressed bytes handled per step.
CHUNK = 1 * units.Mi

_HEADER = 110
_NEWC = (b'070701', b'070702')
_TRAILER = 'TRAILER!!!'
_MAGICS = (
    (b'\x1f\x8b', 'gzip'),
    (b'\x1f\x9e', 'gzip'),
    (b'\xfd7zXZ\0', 'xz'),
    (b'\x28\xb5\x2f\xfd', 'zstd'),
    (b'BZh', 'bzip2'),
    (b'\x5d\0\0', 'lzma'),
    (b'\x02\x21\x4c\x18', 'lz4'),
    (b'\x89LZO', 'lzo'),
)


class ArchiveError(Exception):
    """The archive is not what an initramfs is, or a bound was hit."""


class Unsupported(ArchiveError):
    """A segment is compressed in a way this reader does not decode."""


class Listing(object):
    """What :func:`list_names` found.

    ``names``: entry names in archive order (``./`` and ``/`` prefixes
    removed); ``segments``: one word per segment (``cpio``, ``gzip``,
    ``zstd``, ...); ``complete``: False when the listing stopped early
    (the caller's *enough* said so, or an error); ``error``: the
    :class:`ArchiveError` that ended it, if any.
    """

    def __init__(self):
        self.names = []
        self.segments = []
        self.complete = False
        self.error = None


def list_names(read, size, enough=None, limits=None):
    """List the names of the initramfs whose bytes *read* returns.

    :param read: ``read(offset, count)`` -> up to *count* bytes of the
        file at *offset* (fewer only at its end).
    :param size: the file's size.
    :param enough: optional ``enough(names)`` called after each entry;
        True stops the listing (``complete`` stays False).
    :param limits: optional dict overriding ``max_archive``,
        ``max_expanded``, ``max_entries`` (for tests).
    :returns: a :class:`Listing`; never raises for the archive's sake.
    """
    limits = dict(limits or {})
    listing = Listing()
    try:
        if size > limits.get('max_archive', MAX_ARCHIVE):
            raise ArchiveError('initramfs of %d bytes is above the %d '
                               'read' % (size, limits.get('max_archive',
                                                          MAX_ARCHIVE)))
        raw = _Raw(read, size)
        budget = _Budget(limits.get('max_expanded', MAX_EXPANDED),
                         limits.get('max_entries', MAX_ENTRIES))
        if _segments(raw, budget, listing, enough):
            return listing
        listing.complete = True
    except ArchiveError as err:
        listing.error = err
    return listing


def _segments(raw, budget, listing, enough):
    """Read every segment; True when *enough* stopped it."""
    while True:
        if not raw.skip_zeros():
            return False
        head = raw.peek(6)
        if head in _NEWC:
            listing.segments.append('cpio')
            if _cpio(raw, budget, listing, enough):
                return True
            continue
        kind = next((k for magic, k in _MAGICS if head.startswith(magic)),
                    None)
        if kind is None:
            raise ArchiveError('unrecognised data at offset %d: %r'
                               % (raw.position, head))
        listing.segments.append(kind)
        stream = _decompressed(kind, raw, budget)
        if _cpio(stream, budget, listing, enough, compressed=True):
            return True
        stream.finish()


def _cpio(stream, budget, listing, enough, compressed=False):
    """List the newc archives of *stream*; True when *enough* stopped it.

    An uncompressed segment ends at its trailer; a compressed one holds
    archives up to the end of its stream (zero padding between them).
    """
    while True:
        if compressed:
            if not stream.skip_zeros():
                return False
        header = stream.read_exactly(_HEADER)
        if header[:6] not in _NEWC:
            raise ArchiveError('not a newc cpio header: %r' % header[:6])
        # int() alone would also take spaces, signs and underscores.
        if header[6:].strip(b'0123456789abcdefABCDEF'):
            raise ArchiveError('cpio header field is not hexadecimal')
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        file_size, name_size = fields[6], fields[11]
        if not 0 < name_size <= MAX_NAME + 1:
            raise ArchiveError('cpio name size %d' % name_size)
        raw_name = stream.read_exactly(name_size)
        if raw_name[-1:] != b'\0':
            raise ArchiveError('cpio name does not end in NUL')
        stream.skip(-(_HEADER + name_size) % 4)
        name = raw_name[:-1].decode('utf-8', 'replace')
        if name == _TRAILER:
            if not compressed:
                return False
            continue
        stream.skip(file_size + (-file_size % 4))
        budget.entry()
        while name.startswith('./'):
            name = name[2:]
        name = name.lstrip('/')
        if name and name != '.':
            listing.names.append(name)
            if enough is not None and enough(listing.names):
                return True


class _Budget(object):
    """What the archive may still expand to, and entries it may hold."""

    def __init__(self, expanded, entries):
        self.expanded = expanded
        self.entries = entries

    def spend(self, count):
        self.expanded -= count
        if self.expanded < 0:
            raise ArchiveError('initramfs expands past the limit '
                               '(a decompression bomb?)')

    def entry(self):
        self.entries -= 1
        if self.entries < 0:
            raise ArchiveError('initramfs holds more entries than the '
                               'limit')


class _Stream(object):
    """Bytes read forward in bounded pieces; subclasses say from where.

    The buffer is a bytearray read from a position, compacted now and
    then, so that taking a small header from it costs no copy of it.
    """

    def __init__(self):
        self._buf = bytearray()
        self._pos = 0

    def _more(self):
        """Append up to CHUNK bytes to the buffer; False at the end."""
        raise NotImplementedError

    def _append(self, data):
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def _available(self):
        return len(self._buf) - self._pos

    def _advance(self, count):
        self._pos += count
        self._consumed(count)

    def peek(self, count):
        while self._available() < count and self._more():
            pass
        return bytes(self._buf[self._pos:self._pos + count])

    def read_exactly(self, count):
        data = self.peek(count)
        if len(data) < count:
            raise ArchiveError('initramfs ends inside an entry')
        self._advance(count)
        return data

    def skip(self, count):
        while count > 0:
            if not self._available() and not self._more():
                raise ArchiveError('initramfs ends inside an entry')
            step = min(count, self._available())
            self._advance(step)
            count -= step

    def skip_zeros(self):
        """Skip NUL padding; False when the stream ends first."""
        while True:
            if not self._available() and not self._more():
                return False
            end = len(self._buf)
            start = self._pos
            while start < end and self._buf[start] == 0:
                start += 1
            self._advance(start - self._pos)
            if start < end:
                return True

    def take(self, count):
        """Up to *count* buffered or new bytes, consumed."""
        if not self._available():
            self._more()
        data = bytes(self._buf[self._pos:self._pos + count])
        self._advance(len(data))
        return data

    def _consumed(self, count):
        pass


class _Raw(_Stream):
    """The archive file itself, read at increasing offsets."""

    def __init__(self, read, size):
        super().__init__()
        self._read = read
        self._size = size
        self._offset = 0  # of the end of what was read
        self.position = 0  # of the next byte to consume

    def _more(self):
        if self._offset >= self._size:
            return False
        data = self._read(self._offset, min(CHUNK, self._size - self._offset))
        if not data:
            raise ArchiveError('initramfs could not be read at offset %d'
                               % self._offset)
        self._offset += len(data)
        self._append(data)
        return True

    def _consumed(self, count):
        self.position += count

    def give_back(self, data):
        """Bytes a decompressor did not use: the next segment's."""
        self._buf[self._pos:self._pos] = data
        self.position -= len(data)

    def drain(self):
        """Consume everything left: nothing after this is read."""
        self._buf = bytearray()
        self._pos = 0
        self._offset = self._size


class _Decompressed(_Stream):
    """A compressed segment of *raw*, decompressed in bounded pieces."""

    def __init__(self, raw, budget, decompressor):
        super().__init__()
        self._raw = raw
        self._budget = budget
        self._decompressor = decompressor

    def _more(self):
        while True:
            data = self._decompressor.step(self._raw)
            if data is None:
                return False
            if data:
                self._budget.spend(len(data))
                self._append(data)
                return True

    def finish(self):
        """Hand back to *raw* what follows the compressed stream."""
        self._buf = bytearray()
        self._pos = 0
        self._decompressor.finish(self._raw)


class _StdlibDecompressor(object):
    """zlib, lzma and bz2 objects: at most CHUNK bytes out per call."""

    def __init__(self, engine):
        self._engine = engine
        self._pending = b''
        self._full = False

    def step(self, raw):
        engine = self._engine
        if engine.eof:
            return None
        if not self._pending and self._wants_input():
            self._pending = raw.take(CHUNK)
            if not self._pending:
                raise ArchiveError('compressed initramfs is cut short')
        try:
            out = engine.decompress(self._pending, CHUNK)
        except (zlib.error, lzma.LZMAError, OSError, EOFError,
                ValueError) as err:
            raise ArchiveError('compressed initramfs is corrupt: %s' % err)
        # zlib keeps the input it did not use; lzma and bz2 keep it inside.
        self._pending = getattr(engine, 'unconsumed_tail', b'')
        self._full = len(out) == CHUNK
        return out

    def _wants_input(self):
        needs = getattr(self._engine, 'needs_input', None)
        if needs is not None:
            return needs
        # zlib: output that filled the chunk may have more behind it.
        return not self._full

    def finish(self, raw):
        rest = self._engine.unused_data + self._pending
        if rest:
            raw.give_back(rest)


class _ZstdDecompressor(object):
    """python-zstandard's stream reader over the raw segment.

    Frames are read until the data ends; anything after a zstd segment
    is left unread (no initramfs generator appends a segment after one).
    """

    def __init__(self, raw):
        if zstandard is None:
            raise Unsupported('zstd initramfs, and the zstandard package '
                              'is not installed')
        decompressor = zstandard.ZstdDecompressor(
            max_window_size=ZSTD_MAX_WINDOW)
        self._reader = decompressor.stream_reader(
            _RawFile(raw), read_size=CHUNK, read_across_frames=True)

    def step(self, raw):
        try:
            data = self._reader.read(CHUNK)
        except zstandard.ZstdError as err:
            raise ArchiveError('compressed initramfs is corrupt: %s' % err)
        return data or None

    def finish(self, raw):
        raw.drain()


class _RawFile(object):
    """A file-like view of the rest of the raw archive."""

    def __init__(self, raw):
        self._raw = raw

    def read(self, size=-1):
        return self._raw.take(CHUNK if size is None or size < 0
                              else min(size, CHUNK))


def _decompressed(kind, raw, budget):
    if kind == 'gzip':
        # wbits 16+15: a gzip member; the header is checked by zlib.
        engine = _StdlibDecompressor(zlib.decompressobj(16 + zlib.MAX_WBITS))
    elif kind == 'xz':
        engine = _StdlibDecompressor(lzma.LZMADecompressor(
            lzma.FORMAT_XZ, memlimit=XZ_MEMLIMIT))
    elif kind == 'lzma':
        engine = _StdlibDecompressor(lzma.LZMADecompressor(
            lzma.FORMAT_ALONE, memlimit=XZ_MEMLIMIT))
    elif kind == 'bzip2':
        engine = _StdlibDecompressor(bz2.BZ2Decompressor())
    elif kind == 'zstd':
        engine = _ZstdDecompressor(raw)
    else:
        raise Unsupported('%s-compressed initramfs is not read' % kind)
    return _Decompressed(raw, budget, engine)
