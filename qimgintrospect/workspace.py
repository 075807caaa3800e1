"""The workspace: private copies of images, a quota and max_workers slots.

Layout of the configured directory (mode 0700)::

    .locks/slot-N     lock files, one per slot (never removed)
    slot-N/           the copies made by whoever holds slot N
    slot-N.reserved   bytes slot N has reserved against the quota

Guarantees:

* at most ``max_workers`` slots are held at once, across threads and
  processes sharing the directory (oslo.concurrency lockutils: an internal
  semaphore plus an external file lock, which the kernel releases when a
  process dies);
* a slot's directory is emptied when the slot is taken and when it is
  released, so leftovers of a killed process go at the next use, and
  :meth:`Workspace.sweep` removes those of every free slot at start;
* a copy is refused before any byte is written when it would not fit in
  the quota or in the free space;
* copies are reflinks where the filesystem can, else sparse copies that
  read and write only the allocated ranges (SEEK_DATA/SEEK_HOLE), cut at
  the size the source had when it was opened;
* a stream (a Glance download) is written into a slot with
  :meth:`Slot.receive` under the same quota; the front end then hands that
  slot to the core (:func:`qimgintrospect.api.inspect_many`'s ``slot``),
  so one image never holds two of the max_workers slots.
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
import errno
import fcntl
import itertools
import os
import shutil
import stat
import threading
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging
from oslo_utils import units
import psutil

from qimgintrospect import exception
from qimgintrospect import fileio
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

_FICLONE = 0x40049409
_POLL_INTERVAL = 0.2
_COPY_CHUNK = 8 * units.Mi

#: A file made in a slot: its path, size (bytes), bytes_copied (data
#: actually written; 0 for a reflink) and method ('reflink' or 'sparse' for
#: a private copy, 'stream' for a received download).
Copy = collections.namedtuple('Copy', ['path', 'size', 'bytes_copied',
                                       'method'])

_swept = set()
_swept_lock = threading.Lock()


class Workspace(object):
    """The workspace directory of one configuration."""

    def __init__(self, directory, quota_bytes, min_free_bytes, max_workers,
                 slot_wait_timeout):
        self.directory = os.path.abspath(directory)
        self.quota_bytes = quota_bytes
        self.min_free_bytes = min_free_bytes
        self.max_workers = max_workers
        self.slot_wait_timeout = slot_wait_timeout
        self._lock_dir = os.path.join(self.directory, '.locks')

    @classmethod
    def from_conf(cls, conf):
        group = conf[opts.WORKSPACE_GROUP]
        return cls(group.directory, group.quota_mb * units.Mi,
                   group.min_free_mb * units.Mi, group.max_workers,
                   group.slot_wait_timeout)

    def ensure(self):
        """Create the directory if needed and check that it is private.

        :raises InspectionFailed: workspace-unusable.
        """
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            st = os.lstat(self.directory)
            # exist_ok: the threads of an audit may all get here at once.
            os.makedirs(self._lock_dir, 0o700, exist_ok=True)
        except OSError as err:
            raise exception.InspectionFailed(
                exception.WORKSPACE_UNUSABLE,
                'cannot create workspace %s: %s'
                % (self.directory, err.strerror))
        if (not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid()
                or st.st_mode & 0o077):
            raise exception.InspectionFailed(
                exception.WORKSPACE_UNUSABLE,
                'workspace %s must be a directory owned by uid %d with mode '
                '0700 (found uid %d, mode %o)'
                % (self.directory, os.geteuid(), st.st_uid,
                   stat.S_IMODE(st.st_mode)))
        with _swept_lock:
            if self.directory not in _swept:
                _swept.add(self.directory)
                self.sweep()

    def sweep(self):
        """Empty every slot nobody holds; return how many held leftovers."""
        cleaned = 0
        for index in range(self._slot_count_on_disk()):
            lock = self._try_lock(index)
            if lock is None:
                continue
            try:
                cleaned += Slot(self, index).wipe()
            finally:
                _release(lock)
        if cleaned:
            LOG.warning('removed leftovers of %d interrupted inspections '
                        'from %s', cleaned, self.directory)
        return cleaned

    @contextlib.contextmanager
    def slot(self):
        """Hold one of the max_workers slots for the duration of the block.

        The slot's directory is empty on entry and emptied on exit.

        :raises InspectionFailed: workspace-busy, workspace-unusable.
        """
        self.ensure()
        deadline = time.monotonic() + self.slot_wait_timeout
        while True:
            for index in range(self.max_workers):
                lock = self._try_lock(index)
                if lock is not None:
                    break
            else:
                if time.monotonic() >= deadline:
                    raise exception.InspectionFailed(
                        exception.WORKSPACE_BUSY,
                        'all %d workspace slots in %s stayed busy for %s s'
                        % (self.max_workers, self.directory,
                           self.slot_wait_timeout))
                time.sleep(_POLL_INTERVAL)
                continue
            break
        slot = Slot(self, index)
        try:
            slot.wipe()
            os.mkdir(slot.directory, 0o700)
            yield slot
        finally:
            try:
                slot.wipe()
            finally:
                _release(lock)

    def reserved_bytes(self):
        """Bytes reserved by all slots now (what the quota counts)."""
        total = 0
        for name in os.listdir(self.directory):
            if name.endswith('.reserved'):
                try:
                    with open(os.path.join(self.directory, name)) as f:
                        total += int(f.read() or 0)
                except (OSError, ValueError):
                    continue
        return total

    def _try_lock(self, index):
        name = '%s/slot-%d' % (self.directory, index)
        internal = lockutils.internal_lock(name)
        if not internal.acquire(blocking=False):
            return None
        external = lockutils.external_lock('slot-%d' % index,
                                           lock_path=self._lock_dir)
        if not external.acquire(blocking=False):
            internal.release()
            return None
        return internal, external

    def _slot_count_on_disk(self):
        try:
            names = os.listdir(self._lock_dir)
        except FileNotFoundError:
            return 0
        indexes = [int(n[5:]) for n in names
                   if n.startswith('slot-') and n[5:].isdigit()]
        return max(indexes, default=-1) + 1


def _release(lock):
    internal, external = lock
    try:
        external.release()
    finally:
        internal.release()


class Slot(object):
    """One held slot: a private directory where copies are made."""

    def __init__(self, workspace, index):
        self.workspace = workspace
        self.index = index
        self.directory = os.path.join(workspace.directory, 'slot-%d' % index)
        self._reservation = self.directory + '.reserved'
        # Files of one holder get distinct names, even when a lent slot is
        # used by several calls in turn.
        self._numbers = itertools.count()

    def _new_path(self, prefix):
        return os.path.join(self.directory,
                            '%s-%d' % (prefix, next(self._numbers)))

    def wipe(self):
        """Remove this slot's copies and reservation; True if any existed."""
        existed = os.path.lexists(self.directory)
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._reservation)
        return existed

    def receive(self, chunks, size):
        """Write the byte strings *chunks*, *size* bytes in all, to a file.

        *size* is reserved against the quota before the first byte is
        written, as for :meth:`private_copy`; chunks of zeros become holes.

        :returns: :class:`Copy` (method ``'stream'``).
        :raises InspectionFailed: workspace-quota-exceeded (also when the
            stream runs past *size*), workspace-no-space. Errors raised by
            *chunks* itself pass through unchanged.
        """
        dest = self._new_path('download')
        self._reserve(size, os.path.basename(dest))
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        offset = written = 0
        try:
            for chunk in chunks:
                if offset + len(chunk) > size:
                    raise exception.InspectionFailed(
                        exception.WORKSPACE_QUOTA,
                        'the download is longer than the %d bytes reserved '
                        'for it' % size)
                if chunk.count(0) != len(chunk):
                    written += fileio.pwrite_all(fd, chunk, offset)
                offset += len(chunk)
            os.ftruncate(fd, offset)
            return Copy(dest, offset, written, 'stream')
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise exception.InspectionFailed(
                    exception.WORKSPACE_NO_SPACE,
                    'workspace %s filled up while receiving a download'
                    % self.workspace.directory)
            raise
        finally:
            os.close(fd)

    def private_copy(self, source):
        """Copy the opened *source* into a new file of this slot.

        :param source: a :class:`qimgintrospect.source.SourceImage`.
        :returns: :class:`Copy`.
        :raises InspectionFailed: workspace-quota-exceeded,
            workspace-no-space, read-error.
        """
        self._reserve(source.allocated, source.path)
        dest = self._new_path('image')
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                     | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if _reflink(source.fd, fd):
                os.ftruncate(fd, source.size)
                return Copy(dest, source.size, 0, 'reflink')
            copied = _sparse_copy(source.fd, fd, source.size)
            os.ftruncate(fd, source.size)
            return Copy(dest, source.size, copied, 'sparse')
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise exception.InspectionFailed(
                    exception.WORKSPACE_NO_SPACE,
                    'workspace %s filled up while copying %s'
                    % (self.workspace.directory, source.path))
            raise exception.InspectionFailed(
                exception.READ_ERROR,
                'cannot copy %s into the workspace: %s'
                % (source.path, err.strerror))
        finally:
            os.close(fd)

    def reserve(self, nbytes, what):
        """Count *nbytes* against the quota until the slot is released.

        For files a caller writes into :attr:`directory` itself (the
        block cache of a remote image read by ranges), as
        :meth:`private_copy` and :meth:`receive` do for theirs.

        :param what: names the file in the error message.
        :raises InspectionFailed: workspace-quota-exceeded,
            workspace-no-space.
        """
        self._reserve(nbytes, what)

    def _reserve(self, nbytes, what):
        workspace = self.workspace
        with lockutils.lock('quota', external=True,
                            lock_path=workspace._lock_dir):
            used = workspace.reserved_bytes()
            if used + nbytes > workspace.quota_bytes:
                raise exception.InspectionFailed(
                    exception.WORKSPACE_QUOTA,
                    '%s needs %d bytes in the workspace but only %d of the '
                    '%d-byte quota are free'
                    % (what, nbytes, max(workspace.quota_bytes - used, 0),
                       workspace.quota_bytes))
            free = psutil.disk_usage(workspace.directory).free
            if nbytes + workspace.min_free_bytes > free:
                raise exception.InspectionFailed(
                    exception.WORKSPACE_NO_SPACE,
                    '%s needs %d bytes but the workspace filesystem has %d '
                    'free and must keep %d free'
                    % (what, nbytes, free, workspace.min_free_bytes))
            mine = 0
            with contextlib.suppress(FileNotFoundError, ValueError):
                with open(self._reservation) as f:
                    mine = int(f.read() or 0)
            with open(self._reservation, 'w') as f:
                f.write(str(mine + nbytes))


def _reflink(src_fd, dst_fd):
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
        return True
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV,
                         errno.EINVAL, errno.ENOSYS, errno.EPERM):
            return False
        raise


def _data_ranges(fd, size):
    """Yield (offset, length) of the allocated ranges of *fd* below *size*."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end - start
        offset = end


def _sparse_copy(src_fd, dst_fd, size):
    copied = 0
    for start, length in _data_ranges(src_fd, size):
        done = 0
        while done < length:
            count = min(length - done, _COPY_CHUNK)
            n = _copy_range(src_fd, dst_fd, start + done, count)
            if n == 0:
                # The source shrank under us; the copy keeps what was read.
                return copied
            done += n
            copied += n
    return copied


def _copy_range(src_fd, dst_fd, offset, count):
    try:
        return os.copy_file_range(src_fd, dst_fd, count, offset, offset)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP,
                             errno.EINVAL):
            raise
    data = os.pread(src_fd, count, offset)
    return os.pwrite(dst_fd, data, offset)
