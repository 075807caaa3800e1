"""Canaries: proof that nothing opened a file or dialled a port.

* :class:`FileCanary` watches files (and directories, for the files in
  them) with inotify for IN_OPEN and IN_ACCESS. The kernel queues the
  event during the open() itself, so once the process under test has
  exited, every open it made is in the queue: an empty queue is proof.
* :class:`TcpCanary` listens on a loopback port; the kernel completes a
  connection into the backlog without accept(), so a readable listener is
  proof that something dialled it.
* :class:`FifoCanary` is a FIFO with a writer blocked in open(): the open
  returns only when a reader opens the FIFO, so it records an opener
  without anyone ever blocking on a read.

Every test that uses one also runs a positive control (an unguarded
qemu-img, or a plain open) to show the canary does fire, so its silence
during inspection means something.
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
import select
import socket
import threading

import inotify_simple

_WATCH = inotify_simple.flags.OPEN | inotify_simple.flags.ACCESS


class FileCanary(object):
    """Record every open or read of the watched paths."""

    def __init__(self, *paths):
        self._inotify = inotify_simple.INotify()
        self._paths = {}
        for path in paths:
            wd = self._inotify.add_watch(str(path), _WATCH)
            self._paths[wd] = str(path)

    def events(self):
        """[(watched path, name inside it or '', flag names)] since last."""
        found = []
        for event in self._inotify.read(timeout=50):
            found.append((self._paths.get(event.wd, '?'), event.name,
                          sorted(f.name for f in
                                 inotify_simple.flags.from_mask(event.mask))))
        return found

    def opened(self):
        """The watched paths (or files inside watched directories) opened."""
        return sorted({os.path.join(path, name) if name else path
                       for path, name, flags in self.events()
                       if 'OPEN' in flags or 'ACCESS' in flags})

    def close(self):
        self._inotify.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TcpCanary(object):
    """A loopback listener that never accepts: dialling it is recorded."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(('127.0.0.1', 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]

    def dialled(self, timeout=0.05):
        """True when a connection is waiting; it is accepted and closed."""
        readable, _, _ = select.select([self._sock], [], [], timeout)
        if not readable:
            return False
        conn, _addr = self._sock.accept()
        conn.close()
        return True

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FifoCanary(object):
    """A FIFO whose blocked writer records whether anyone opened it."""

    def __init__(self, path):
        self.path = str(path)
        os.mkfifo(self.path)
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    def _write(self):
        # Blocks until a reader opens the FIFO (or close() does).
        fd = os.open(self.path, os.O_WRONLY)
        self._opened.set()
        os.close(fd)

    def opened(self, timeout=0.2):
        return self._opened.wait(timeout)

    def close(self):
        if not self._opened.is_set():
            # Release the writer: open for reading without blocking.
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._thread.join(5)
            os.close(fd)
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
