"""Small, bounded reads of a mounted guest, shared by the probes.

A guest may be hostile: every read here is bounded (a file above its
limit is not read, a listing is cut, a string is made printable and
short), and a call libguestfs refuses reads as "absent", never as an
error, so one odd file cannot stop a probe.
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

from oslo_utils import units

#: Bounds on what is read from a guest.
MAX_TEXT_FILE = 64 * units.Ki
MAX_CONFIG_FILE = 256 * units.Ki
MAX_ENTRIES = 64
#: Largest single read through the appliance (its protocol carries at
#: most 4 MiB a message).
MAX_PREAD = 2 * units.Mi
_MAX_STRING = 255


#: One drive of an appliance as the probes see it: its device
#: (``/dev/sdb``), its partitions (device -> blkid answer, in order) and
#: each partition's name as in an appliance of its own (``/dev/sda1``).
Drive = collections.namedtuple('Drive', ['disk', 'partitions', 'names'])


def is_file(appliance, path):
    """True when *path* is a regular file (after symbolic links)."""
    try:
        return appliance.call('is_file', path, followsymlinks=True)
    except RuntimeError:
        return False


def is_dir(appliance, path):
    """True when *path* is a directory (after symbolic links)."""
    try:
        return appliance.call('is_dir', path, followsymlinks=True)
    except RuntimeError:
        return False


def read_small(appliance, path, limit):
    """The bytes of a guest file of at most *limit* bytes, else None."""
    try:
        if not appliance.call('is_file', path, followsymlinks=True):
            return None
        if appliance.call('filesize', path) > limit:
            return None
        return appliance.call('read_file', path)
    except RuntimeError:
        return None


def file_size(appliance, path):
    """The size of the regular file *path*, or None."""
    try:
        if not appliance.call('is_file', path, followsymlinks=True):
            return None
        return appliance.call('filesize', path)
    except RuntimeError:
        return None


def pread(appliance, path, count, offset=0):
    """Up to *count* bytes of *path* from *offset*, or None.

    At most :data:`MAX_PREAD` bytes; None when they cannot be read.
    """
    try:
        return appliance.call('pread', path, min(count, MAX_PREAD), offset)
    except RuntimeError:
        return None


def read_bounded(appliance, path, limit):
    """The bytes of a guest file of at most *limit* bytes, else None.

    Read in pieces of :data:`MAX_PREAD`, for files past what one
    ``read_file`` carries.
    """
    size = file_size(appliance, path)
    if size is None or size > limit:
        return None
    chunks = []
    offset = 0
    while offset < size:
        chunk = pread(appliance, path, size - offset, offset)
        if not chunk:
            return None
        chunks.append(chunk)
        offset += len(chunk)
    return b''.join(chunks)


def windows_path(appliance, path):
    """*path* as it is spelt on the mounted NTFS volume, or None.

    NTFS names are case-insensitive; the appliance's are not.
    """
    try:
        path = appliance.call('case_sensitive_path', path)
        return path if appliance.call('exists', path) else None
    except RuntimeError:
        return None


def listing(appliance, directory):
    """The names in *directory*, sorted; none when it cannot be listed."""
    try:
        return sorted(appliance.call('ls', directory))
    except RuntimeError:
        return []


def child_named(appliance, directory, name):
    """The path of the entry of *directory* called *name*, in any case.

    FAT and NTFS names are case-insensitive (firmware finds \\EFI\\BOOT
    whatever the case); the appliance's view of them is not.
    """
    for entry in listing(appliance, directory):
        if entry.lower() == name:
            return directory.rstrip('/') + '/' + entry
    return None


def text(value):
    """A guest-supplied string made safe to print: printable, bounded."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode('utf-8', 'replace')
    value = ''.join(c for c in str(value) if c.isprintable())
    return value[:_MAX_STRING]
