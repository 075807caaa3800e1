"""The blocks of a remote image that were read, in a sparse local file.

A :class:`BlockCache` is two files in a directory the caller owns (a
workspace slot): the *data file*, as long as the image, holding the
blocks fetched at their offsets and holes elsewhere, and its *record*
(``<data file>.blocks``): the block size, the image size, the byte
budget, the bytes fetched and requests made so far, and one bit per block
that is present. It guarantees:

* the data file holds exactly what was read: a block is written once,
  after its bytes passed the reader's checks, and never changes;
* a block is fetched at most once, whichever process asks: the parent
  (the header checks) and the nbdkit plugin (qemu-img, the appliance)
  each attach to the same two files, and a block is looked up, fetched,
  written and marked under one lock (``flock`` on the record between
  processes, a mutex between threads), so whoever comes second finds it;
* missing neighbours are fetched in one ranged request (at most
  :data:`MAX_REQUEST` bytes), so a large read costs few requests;
* the bytes fetched never exceed the budget: a read that would pass it
  raises ``workspace-quota-exceeded`` before its request is sent. The
  caller reserves the budget in the workspace quota (``Slot.reserve``)
  before it creates the cache;
* the counters in the record are those of every process together.

Blocks of zeros are recorded but left as holes, so a sparse image costs
no disk for its zeros (its bytes still count against the budget).

Block size: qemu-img reads a header and a few tables (112 bytes, then
one 64 KiB L1 table, for a qcow2; 1 MiB for a VMDK's descriptor, which
qemu always reads whole), the appliance's kernel reads 4 KiB-128 KiB
pieces; 64 KiB (:data:`DEFAULT_BLOCK_SIZE`, qcow2's default cluster) keeps
the bytes fetched close to those read while neighbours still travel
together (benchmarks/remote_ranges.py measures the alternatives).
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

import collections
import contextlib
import fcntl
import os
import struct
import threading

from qimgintrospect import exception
from qimgintrospect import fileio

KiB = 1024
MiB = 1024 * KiB
DEFAULT_BLOCK_SIZE = 64 * KiB
#: The largest single request: missing neighbours are fetched together up
#: to this many bytes.
MAX_REQUEST = 4 * MiB
RECORD_SUFFIX = '.blocks'

_MAGIC = b'QIMGBLK1'
# magic, block size, image size, budget, bytes fetched, requests made.
_HEADER = struct.Struct('<8sQQQQQ')
_BITMAP_AT = 64
_FETCHED_AT = 32

#: A cache's counters. ``allocated``: bytes the data file takes on disk.
CacheStats = collections.namedtuple('CacheStats', [
    'size', 'block_size', 'budget', 'bytes_fetched', 'requests',
    'blocks_present', 'allocated'])


class BlockCache(object):
    """A sparse copy of a remote image filled block by block on demand.

    Made by :meth:`create` (the first process) or :meth:`attach` (any
    other); reads go through :meth:`read`.

    :param reader: fetches missing blocks: an object with
        ``read(offset, length)`` returning exactly those bytes and a
        ``requests`` count (a :class:`~.httpranges.RangeReader`).
    """

    def __init__(self, path, reader, data_fd, record_fd):
        self.path = path
        self.record_path = path + RECORD_SUFFIX
        self.reader = reader
        self._data_fd = data_fd
        self._record_fd = record_fd
        self._mutex = threading.Lock()
        magic, self.block_size, self.size, self.budget, _, _ = (
            _HEADER.unpack(os.pread(record_fd, _HEADER.size, 0)))
        if magic != _MAGIC:
            raise ValueError('%s is not a block record' % self.record_path)
        self.blocks = -(-self.size // self.block_size)

    @classmethod
    def create(cls, path, size, budget, reader,
               block_size=DEFAULT_BLOCK_SIZE):
        """Create the data file *path* (*size* bytes, all holes) and record.

        :raises FileExistsError: *path* exists (never reused).
        """
        if block_size <= 0 or block_size % 512:
            raise ValueError('block size %d is not a multiple of 512'
                             % block_size)
        data_fd = _create(path)
        try:
            os.ftruncate(data_fd, size)
            record_fd = _create(path + RECORD_SUFFIX)
        except BaseException:
            os.close(data_fd)
            raise
        try:
            blocks = -(-size // block_size)
            os.pwrite(record_fd, _HEADER.pack(_MAGIC, block_size, size,
                                              budget, 0, 0), 0)
            os.ftruncate(record_fd, _BITMAP_AT + -(-blocks // 8))
            return cls(path, reader, data_fd, record_fd)
        except BaseException:
            os.close(data_fd)
            os.close(record_fd)
            raise

    @classmethod
    def attach(cls, path, reader):
        """Use the cache another process created at *path*."""
        data_fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            record_fd = os.open(path + RECORD_SUFFIX,
                                os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except BaseException:
            os.close(data_fd)
            raise
        try:
            return cls(path, reader, data_fd, record_fd)
        except BaseException:
            os.close(data_fd)
            os.close(record_fd)
            raise

    def close(self):
        for fd in (self._data_fd, self._record_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._data_fd = self._record_fd = -1

    def read(self, offset, length):
        """Return the *length* bytes at *offset*, fetching what is missing.

        :raises ValueError: the range is not inside the image.
        :raises InspectionFailed: workspace-quota-exceeded (the budget),
            workspace-no-space; and whatever the reader raises (the block
            is then not marked present, and nothing of it is kept).
        """
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError('range %d+%d is not inside an image of %d '
                             'bytes' % (offset, length, self.size))
        if length == 0:
            return b''
        first = offset // self.block_size
        last = (offset + length - 1) // self.block_size
        with self._locked():
            for start, count in self._missing_runs(first, last):
                self._fetch(start, count)
            return fileio.pread_all(self._data_fd, length, offset)

    def insert(self, offset, data, requests=1):
        """Keep *data*, fetched at *offset* by the caller, as fetched blocks.

        For the bytes of a first request made before the cache existed
        (the reader's probe). *offset* must start a block and *data* end
        one, or end at the image's end.

        :raises InspectionFailed: workspace-quota-exceeded.
        """
        end = offset + len(data)
        if offset % self.block_size or end > self.size or (
                end % self.block_size and end != self.size):
            raise ValueError('%d+%d is not whole blocks'
                             % (offset, len(data)))
        if not data:
            return
        with self._locked():
            self._keep(offset // self.block_size, data, requests)

    def stats(self):
        """The counters of every process that used this cache."""
        with self._locked():
            _, block_size, size, budget, fetched, requests = _HEADER.unpack(
                os.pread(self._record_fd, _HEADER.size, 0))
            bitmap = os.pread(self._record_fd, -(-self.blocks // 8),
                              _BITMAP_AT)
        present = sum(bin(byte).count('1') for byte in bitmap)
        allocated = os.fstat(self._data_fd).st_blocks * 512
        return CacheStats(size, block_size, budget, fetched, requests,
                          present, allocated)

    def present(self, offset, length):
        """Whether every block of *offset*+*length* was fetched already."""
        if length <= 0:
            return True
        first = offset // self.block_size
        last = (offset + length - 1) // self.block_size
        with self._locked():
            return not list(self._missing_runs(first, last))

    @contextlib.contextmanager
    def _locked(self):
        with self._mutex:
            fcntl.flock(self._record_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._record_fd, fcntl.LOCK_UN)

    def _missing_runs(self, first, last):
        """(first block, count) of each run of missing blocks, in order."""
        byte_first, byte_last = first // 8, last // 8
        bitmap = os.pread(self._record_fd, byte_last - byte_first + 1,
                          _BITMAP_AT + byte_first)
        limit = max(MAX_REQUEST // self.block_size, 1)
        start = None
        for block in range(first, last + 1):
            byte = bitmap[block // 8 - byte_first]
            missing = not byte & (1 << (block % 8))
            if start is not None and (not missing or block - start == limit):
                yield start, block - start
                start = None
            if missing and start is None:
                start = block
        if start is not None:
            yield start, last + 1 - start

    def _fetch(self, block, count):
        offset = block * self.block_size
        length = min(count * self.block_size, self.size - offset)
        _, _, _, budget, fetched, _ = _HEADER.unpack(
            os.pread(self._record_fd, _HEADER.size, 0))
        if fetched + length > budget:
            raise exception.InspectionFailed(
                exception.WORKSPACE_QUOTA,
                'reading %d bytes more of %s would pass the %d-byte budget '
                'of its remote reads (%d fetched)'
                % (length, getattr(self.reader, 'url', self.path), budget,
                   fetched))
        before = self.reader.requests
        data = self.reader.read(offset, length)
        if len(data) != length:
            # The reader's contract; checked again because the file is
            # what the clients trust.
            raise exception.ImageRefused(
                exception.REMOTE_BODY_TOO_SHORT,
                'got %d bytes for %d+%d' % (len(data), offset, length))
        self._keep(block, data, self.reader.requests - before)

    def _keep(self, block, data, requests):
        """Write *data* at *block*, then mark it and count it (locked)."""
        _, _, _, budget, fetched, made = _HEADER.unpack(
            os.pread(self._record_fd, _HEADER.size, 0))
        if fetched + len(data) > budget:
            raise exception.InspectionFailed(
                exception.WORKSPACE_QUOTA,
                '%d bytes more would pass the %d-byte budget of remote '
                'reads (%d fetched)' % (len(data), budget, fetched))
        view = memoryview(data)
        try:
            for at in range(0, len(data), self.block_size):
                piece = view[at:at + self.block_size]
                if piece != bytes(len(piece)):
                    fileio.pwrite_all(self._data_fd, piece,
                                      block * self.block_size + at)
        except OSError as err:
            raise exception.InspectionFailed(
                exception.WORKSPACE_NO_SPACE,
                'cannot keep fetched blocks in %s: %s'
                % (self.path, err.strerror))
        count = -(-len(data) // self.block_size)
        self._mark(block, count)
        os.pwrite(self._record_fd,
                  struct.pack('<QQ', fetched + len(data), made + requests),
                  _FETCHED_AT)

    def _mark(self, block, count):
        last = block + count - 1
        byte_first, byte_last = block // 8, last // 8
        at = _BITMAP_AT + byte_first
        bitmap = bytearray(os.pread(self._record_fd,
                                    byte_last - byte_first + 1, at))
        for n in range(block, last + 1):
            bitmap[n // 8 - byte_first] |= 1 << (n % 8)
        os.pwrite(self._record_fd, bytes(bitmap), at)


def _create(path):
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                   | os.O_CLOEXEC, 0o600)
