"""Open the user's image file, read-only, without following or blocking.

:func:`open_image` guarantees that what it yields is a regular file that
was not reached through a symbolic link in its last component, opened
read-only, and that the size it reports is the one everything downstream
uses (a file that grows afterwards is cut at that size). It never writes to
the file and never blocks on a FIFO.
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
import os
import stat

from qimgintrospect import exception

#: The opened image: fd is read-only; size and allocated are in bytes.
SourceImage = collections.namedtuple(
    'SourceImage', ['path', 'fd', 'size', 'allocated'])

_OPEN_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
               | getattr(os, 'O_NOATIME', 0))


@contextlib.contextmanager
def open_image(path):
    """Yield a :class:`SourceImage` for *path*; close it on exit.

    :raises UsageError: file-not-found.
    :raises ImageRefused: symlink, not-a-regular-file.
    :raises InspectionFailed: read-error (permission denied, I/O error).
    """
    before = _lstat(path)
    if stat.S_ISLNK(before.st_mode):
        raise exception.ImageRefused(
            exception.SYMLINK,
            '%s is a symbolic link (to %s); links are not followed'
            % (path, _readlink(path)))
    if not stat.S_ISREG(before.st_mode):
        raise exception.ImageRefused(
            exception.NOT_REGULAR_FILE,
            '%s is a %s, not a regular file' % (path, _kind(before.st_mode)))
    fd = _open(path)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise exception.ImageRefused(
                exception.NOT_REGULAR_FILE,
                '%s was replaced while it was being opened' % path)
        allocated = min(st.st_blocks * 512, st.st_size)
        yield SourceImage(path, fd, st.st_size, allocated)
    finally:
        os.close(fd)


def read_at(fd, length, offset):
    """Read at most *length* bytes of the open image *fd* at *offset*.

    *fd* is a file descriptor, or an image read by ranges
    (:class:`qimgintrospect.remote.image.RemoteImage`), which reads the
    same way: the header checks and format readers take either.

    :raises InspectionFailed: read-error (an I/O error on the image); for
        a remote image, what its reads raise.
    """
    if not isinstance(fd, int):
        return fd.read_at(length, offset)
    try:
        return os.pread(fd, length, offset)
    except OSError as err:
        raise exception.InspectionFailed(
            exception.READ_ERROR, 'cannot read the image: %s' % err.strerror)


def _lstat(path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        raise exception.UsageError(
            exception.FILE_NOT_FOUND, '%s does not exist' % path)
    except OSError as err:
        raise exception.InspectionFailed(
            exception.READ_ERROR, 'cannot stat %s: %s' % (path, err.strerror))


def _open(path):
    try:
        # O_NOATIME is refused on files the caller does not own.
        try:
            return os.open(path, _OPEN_FLAGS)
        except PermissionError:
            return os.open(path, _OPEN_FLAGS & ~getattr(os, 'O_NOATIME', 0))
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise exception.ImageRefused(
                exception.SYMLINK,
                '%s became a symbolic link while it was being opened' % path)
        if err.errno == errno.ENOENT:
            raise exception.UsageError(
                exception.FILE_NOT_FOUND, '%s does not exist' % path)
        raise exception.InspectionFailed(
            exception.READ_ERROR, 'cannot open %s: %s' % (path, err.strerror))


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return '?'


def _kind(mode):
    for test, name in ((stat.S_ISDIR, 'directory'), (stat.S_ISFIFO, 'FIFO'),
                       (stat.S_ISSOCK, 'socket'),
                       (stat.S_ISBLK, 'block device'),
                       (stat.S_ISCHR, 'character device')):
        if test(mode):
            return name
    return 'special file'
