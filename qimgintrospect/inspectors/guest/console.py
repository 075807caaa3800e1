"""What an appliance wrote on its console: its last lines, signs of life.

libguestfs hands the appliance's console (qemu's own messages, then the
firmware's and the kernel's serial output) to ``GUESTFS_EVENT_APPLIANCE``
callbacks in pieces of any size, even without verbose mode (where
qemu's own messages and the appliance's init still come through;
verbose mode adds the qemu command line, the firmware's banner and every
kernel line). A :class:`Console` gathers them, so that

* a launch that fails can say why in qemu's or the kernel's own words
  (:meth:`Console.tail`), where libguestfs only says ``guestfs_launch
  failed, see earlier error messages``;
* the KVM probe can tell when qemu started and under which accelerator
  (the command line libguestfs echoes in verbose mode), and whether the
  guest then wrote anything at all (:attr:`Console.life`): a guest whose
  CPU runs prints the firmware's banner within a fraction of a second
  under KVM, while a broken KVM prints nothing or makes qemu abort.
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
import re
import threading
import time

#: What only a guest that runs writes: the firmware's banner (SeaBIOS,
#: OVMF), the kernel's boot stub and its timestamped lines, supermin's
#: init inside the appliance. The host-side supermin that builds the
#: appliance says "supermin: version", "acquiring lock", never these.
LIFE_MARKERS = re.compile(
    r'SeaBIOS|Booting from |BdsDxe|EFI stub|Decompressing Linux'
    r'|Linux version |\[\s*\d+\.\d{6}\] |supermin: mounting '
    r'|supermin: ext2 mini initrd|Starting /init')

#: The qemu command line libguestfs echoes (verbose mode) just before it
#: starts qemu: the accelerators qemu is asked for.
# The value ends where the option does (a piece may end inside it).
_QEMU_ACCEL = re.compile(r'-machine\s+accel=([a-z0-9:]+)[^a-z0-9:]')

# Terminal control sequences (the firmware clears the screen).
_CONTROL = re.compile(r'\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-~])|[\x00-\x08'
                      r'\x0b-\x1f\x7f]')

# Enough of the stream to find a marker cut in two pieces.
_OVERLAP = 64
_MAX_LINES = 200


class Console(object):
    """The console of one appliance, fed by libguestfs's event callback.

    :param on_qemu_start: called once as ``on_qemu_start(accelerators)``
        when the echoed qemu command line is seen (verbose mode only).
    :param on_life: called once as ``on_life(line)`` when the guest first
        writes something only a running guest writes
        (:data:`LIFE_MARKERS`).

    Thread-safe: libguestfs calls :meth:`feed` from the launching thread
    while a watchdog may read :meth:`tail`. Callbacks must be quick; they
    run inside libguestfs's event loop.
    """

    def __init__(self, on_qemu_start=None, on_life=None):
        self.on_qemu_start = on_qemu_start
        self.on_life = on_life
        #: The accelerators qemu was asked for (``kvm``, ``kvm:tcg``,
        #: ``tcg``) once its command line was seen, else None.
        self.accelerators = None
        #: time.monotonic() when qemu's command line was seen.
        self.qemu_started = None
        #: The first line that proved the guest runs, else None.
        self.life = None
        #: time.monotonic() of :attr:`life`.
        self.life_at = None
        self._lines = collections.deque(maxlen=_MAX_LINES)
        self._partial = ''
        self._recent = ''
        self._lock = threading.Lock()

    def event_callback(self, event, event_handle, buf, array):
        """The ``set_event_callback`` function; never raises."""
        try:
            self.feed(buf)
        except Exception:
            # An exception would be lost inside libguestfs anyway.
            pass

    def feed(self, chunk):
        """Take one piece of console output (bytes or str)."""
        if isinstance(chunk, bytes):
            chunk = chunk.decode('utf-8', 'replace')
        qemu_started = life = None
        with self._lock:
            window = self._recent + chunk
            self._recent = window[-_OVERLAP:]
            if self.accelerators is None:
                match = _QEMU_ACCEL.search(window)
                if match:
                    self.accelerators = match.group(1)
                    self.qemu_started = time.monotonic()
                    qemu_started = self.accelerators
            text = self._partial + chunk
            *complete, self._partial = text.replace('\r', '').split('\n')
            for line in complete:
                line = _CONTROL.sub('', line).strip()
                if line:
                    self._lines.append(line)
            if self.life is None:
                match = LIFE_MARKERS.search(window)
                # In verbose mode, nothing before qemu's command line is
                # the guest's (the echo itself holds no marker).
                if match:
                    self.life = _line_around(window, match)
                    self.life_at = time.monotonic()
                    life = self.life
        if qemu_started and self.on_qemu_start:
            self.on_qemu_start(qemu_started)
        if life and self.on_life:
            self.on_life(life)

    def tail(self, count=4):
        """The last *count* non-empty lines, control sequences removed."""
        with self._lock:
            lines = list(self._lines)
            partial = _CONTROL.sub('', self._partial).strip()
        if partial:
            lines.append(partial)
        return lines[-count:]

    def describe(self, count=4):
        """The last lines as one string for a message, or ''."""
        lines = self.tail(count)
        return ' | '.join(_shorten(line) for line in lines)


def _line_around(text, match):
    start = text.rfind('\n', 0, match.start()) + 1
    end = text.find('\n', match.end())
    return _CONTROL.sub('', text[start:end if end >= 0 else None]).strip()


def _shorten(line, width=160):
    return line if len(line) <= width else line[:width - 3] + '...'
