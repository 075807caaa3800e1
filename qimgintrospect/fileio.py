"""Positional reads and writes that move every byte or raise.

``os.pread`` and ``os.pwrite`` may move fewer bytes than asked (a signal,
a pipe, a filesystem's own limit); the workspace's copies and the remote
block cache must not lose the rest.
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


def pwrite_all(fd, data, offset):
    """Write all of *data* at *offset* of *fd*; return its length."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return len(data)


def pread_all(fd, length, offset):
    """Read exactly *length* bytes at *offset* of *fd*.

    :raises OSError: the file ends before them.
    """
    chunks = []
    while length:
        chunk = os.pread(fd, length, offset)
        if not chunk:
            raise OSError('file descriptor %d ends at %d' % (fd, offset))
        chunks.append(chunk)
        length -= len(chunk)
        offset += len(chunk)
    return b''.join(chunks)
