"""What qemu would guess the format to be: its probes, as one table.

A consumer that opens an image without naming its format (``qemu-img
info`` or ``convert`` without ``-f``, an older Nova, an operator's script)
lets qemu guess. qemu 7.2 reads the first :data:`PROBE_WINDOW` bytes
(``BLOCK_PROBE_BUF_SIZE``; a file shorter than that reads as zeros past
its end), asks the probe of every block driver for a score, and opens the
image with the driver of the highest score; on a tie, the driver first in
its driver list wins. raw scores 1, so it wins only when no other driver
claims the file.

:data:`TABLE` holds every probe of the qemu-img this project runs with
(Debian 12's 7.2, whose ``qemu-img --help`` lists bochs, cloop, dmg, luks,
parallels, qcow, qcow2, qed, raw, vdi, vhdx, vmdk and vpc as formats with a
probe), in qemu's own tie-break order, with each probe's score, its magic
and a test that says where in the buffer the match sits. The same magics
serve :mod:`~qimgintrospect.inspectors.formats` to tell a truncated image
from raw bytes: this table is their one source.

:func:`probe` returns qemu's verdict; nothing here reads a file.
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
import struct

#: Bytes qemu's probes see (``BLOCK_PROBE_BUF_SIZE`` in qemu 7.2, and in
#: every release since 0.10).
PROBE_WINDOW = 512

#: One probe of one qemu block driver.
#:
#: * ``driver``: qemu's name for the format (``vpc``, ``parallels``);
#: * ``score``: what the probe returns when it matches;
#: * ``magic``: (offset, tuple of byte strings) the probe requires first,
#:   or None when it has no fixed magic (raw, dmg);
#: * ``test``: callable(buffer, filename) returning None when the probe
#:   does not match, else a phrase saying what matched and where.
Probe = collections.namedtuple('Probe', ['driver', 'score', 'magic', 'test'])

#: One driver that claims the buffer: its Probe and the test's phrase.
Match = collections.namedtuple('Match', ['probe', 'where'])


class Verdict(collections.namedtuple('Verdict', ['winner', 'matches'])):
    """qemu's answer for one buffer.

    :ivar winner: the :class:`Match` qemu opens the image with.
    :ivar matches: every match, in qemu's tie-break order.
    """

    __slots__ = ()

    @property
    def driver(self):
        """The qemu driver that wins."""
        return self.winner.probe.driver

    @property
    def rivals(self):
        """Other matches with the winner's score.

        qemu breaks such a tie by the order of its driver list.
        """
        return [m for m in self.matches if m is not self.winner
                and m.probe.score == self.winner.probe.score]


def _magic_at(buf, magic):
    offset, candidates = magic
    for candidate in candidates:
        if buf[offset:offset + len(candidate)] == candidate:
            return candidate
    return None


def _u32(buf, offset, order):
    return struct.unpack_from(order + 'I', buf, offset)[0]


def _magic_only(name):
    """A test that matches on the magic alone."""
    def test(buf, filename):
        return '%s magic at byte 0' % name
    return test


def _versioned(name, offset, fmt, accepts):
    """A test that also wants the version field at *offset* accepted."""
    def test(buf, filename):
        version, = struct.unpack_from(fmt, buf, offset)
        if not accepts(version):
            return None
        return '%s magic at byte 0, version %d at byte %d' % (name, version,
                                                              offset)
    return test


def _bochs(buf, filename):
    # C strings compared with strcmp: the terminating NUL counts.
    if (buf[32:40] != b'Redolog\x00' or buf[48:56] != b'Growing\x00'
            or _u32(buf, 64, '<') not in (0x00010000, 0x00020000)):
        return None
    return 'Bochs growing redolog header at byte 0'


def _cloop(buf, filename):
    return 'cloop V2.0 shell header at byte 0'


def _dmg(buf, filename):
    # dmg's probe looks at the name only; a name is the consumer's choice,
    # not the image's content.
    if filename and len(filename) > 4 and filename.endswith('.dmg'):
        return 'file name ending in .dmg'
    return None


def _vdi(buf, filename):
    return 'VDI signature at byte 0x40'


_VMDK_VERSIONS = tuple(b'version=%d%s' % (n, end) for end in (b'\n', b'\r\n')
                       for n in (1, 2, 3))


def _vmdk(buf, filename):
    if buf[:4] in (b'KDMV', b'COWD'):
        return 'VMDK %s sparse header at byte 0' % buf[:4].decode()
    return _vmdk_text(buf)


def _vmdk_text(buf):
    """qemu's rule for a VMDK text descriptor.

    Comment lines (``#`` to the end of the line) and lines of spaces may
    come first; the first other line must be ``version=1``, ``2`` or ``3``
    ending in LF or CRLF. An empty line (no space) ends the search, as
    does anything else.
    """
    position = 0
    end = len(buf)
    skipped = 0
    while position < end:
        char = buf[position:position + 1]
        if char == b'#':
            newline = buf.find(b'\n', position)
            position = end if newline < 0 else newline + 1
            skipped += 1
            continue
        if char == b' ':
            while position < end and buf[position:position + 1] == b' ':
                position += 1
            if buf[position:position + 1] == b'\r':
                position += 1
            if buf[position:position + 1] != b'\n':
                return None
            position += 1
            skipped += 1
            continue
        for line in _VMDK_VERSIONS:
            if buf.startswith(line, position):
                return ('VMDK text descriptor: %r at byte %d%s'
                        % (line.rstrip().decode(), position,
                           ' after %d comment or blank lines' % skipped
                           if skipped else ''))
        return None
    return None


def _raw(buf, filename):
    return 'no other format claims the file'


_QCOW_MAGIC = (0, (b'QFI\xfb',))
_CLOOP_MAGIC = (b'#!/bin/sh\n#V2.0 Format\n'
                b'modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop '
                b'$1\n')

#: qemu 7.2's probes in the order of its driver list, which breaks ties
#: (the first registered driver is last: qemu inserts at the head).
TABLE = (
    Probe('parallels', 100,
          (0, (b'WithoutFreeSpace', b'WithouFreSpacExt')),
          _versioned('parallels', 16, '<I', lambda v: v == 2)),
    Probe('qed', 100, (0, (b'QED\x00',)), _magic_only('QED')),
    Probe('dmg', 2, None, _dmg),
    Probe('bochs', 100, (0, (b'Bochs Virtual HD Image\x00',)), _bochs),
    Probe('cloop', 2, (0, (_CLOOP_MAGIC,)), _cloop),
    Probe('vdi', 100, (0x40, (b'\x7f\x10\xda\xbe',)), _vdi),
    Probe('qcow', 100, _QCOW_MAGIC,
          _versioned('qcow', 4, '>I', lambda v: v == 1)),
    Probe('vpc', 100, (0, (b'conectix',)), _magic_only('VHD (conectix)')),
    Probe('vmdk', 100, (0, (b'KDMV', b'COWD')), _vmdk),
    Probe('vhdx', 100, (0, (b'vhdxfile',)), _magic_only('VHDX')),
    Probe('raw', 1, None, _raw),
    Probe('qcow2', 100, _QCOW_MAGIC,
          _versioned('qcow2', 4, '>I', lambda v: v >= 2)),
    Probe('luks', 100, (0, (b'LUKS\xba\xbe',)),
          _versioned('LUKS', 6, '>H', lambda v: v == 1)),
)

#: qemu driver -> its Probe.
BY_DRIVER = {p.driver: p for p in TABLE}
# Probes that also match without their magic: qemu's VMDK probe accepts a
# text descriptor, which has none.
_TEXT_RULES = frozenset(['vmdk'])


def window(head):
    """The buffer qemu's probes see for a file starting with *head*."""
    head = bytes(head[:PROBE_WINDOW])
    return head + b'\x00' * (PROBE_WINDOW - len(head))


def probe(head, filename=None):
    """Score *head* (the file's first bytes) with every probe, as qemu.

    :param head: at least the first :data:`PROBE_WINDOW` bytes of the file,
        or the whole file when it is shorter.
    :param filename: the name a consumer opens the file by, or None (only
        the dmg probe reads it).
    :returns: :class:`Verdict`.
    """
    buf = window(head)
    matches = []
    for entry in TABLE:
        if entry.magic is not None and _magic_at(buf, entry.magic) is None \
                and entry.driver not in _TEXT_RULES:
            continue
        where = entry.test(buf, filename)
        if where is not None:
            matches.append(Match(entry, where))
    best = max(m.probe.score for m in matches)
    winner = next(m for m in matches if m.probe.score == best)
    return Verdict(winner, matches)


def carries_magic(driver, head):
    """True when *head* holds the magic of qemu driver *driver*.

    The magic alone, not the whole probe: a header cut short or with a
    version qemu refuses still carries it. A VMDK text descriptor counts
    when qemu's text rule accepts it.
    """
    entry = BY_DRIVER[driver]
    buf = window(head)
    if entry.magic is not None and _magic_at(buf, entry.magic) is not None:
        return True
    return driver in _TEXT_RULES and _vmdk_text(buf) is not None
