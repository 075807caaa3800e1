"""Header fuzzing shared by the fuzz tests and the ``tools/`` scripts.

:func:`build_seeds` makes one small valid image of every format with
qemu-img (and genisoimage, sfdisk), and records where its header
structures are. :func:`make_case` turns a seed and a case number into a
mutated copy: deterministic, so a case number is a reproducer.
:func:`run_case` inspects it through the core API and returns an
:class:`Outcome` that says what happened and what, if anything, broke a
guarantee (:attr:`Outcome.problems`).

The polyglot mode makes images that are two formats at once:
:func:`build_polyglot_material` makes carriers (partitioned raw disks,
ISOs, plain raw) and the headers, descriptors and magics of every format
qemu probes; :func:`make_polyglot_case` writes one of them, whole, cut or
varied, into a carrier's boot code, GPT or ISO system area at offset 0,
512 or 2048; :func:`run_polyglot_case` inspects it like :func:`run_case`.
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
import os
import random
import shutil
import signal
import struct
import time

import psutil

from qimgintrospect import api
from qimgintrospect import exception
from testkit import config
from testkit import hostileimages
from testkit import imagebuilder

KiB = 1024
MiB = 1024 * KiB

#: One seed image: Glance format, path, byte ranges holding its headers.
Seed = collections.namedtuple('Seed', ['name', 'disk_format', 'path',
                                       'regions'])

#: What one case did. ``code`` is 'ok' for a result; ``problems`` lists
#: every broken guarantee (empty when the case behaved).
Outcome = collections.namedtuple(
    'Outcome', ['case', 'seed', 'declared', 'mutations', 'exit_code', 'code',
                'message', 'elapsed', 'problems'])

# Magic of every format at its offset, spliced in to make format lies.
_MAGICS = [(0, b'QFI\xfb\x00\x00\x00\x03'), (0, b'KDMV'), (0, b'conectix'),
           (0, b'vhdxfile'), (0x40, b'\x7f\x10\xda\xbe'), (0, b'QED\x00'),
           (0, b'LUKS\xba\xbe\x00\x01'), (0, b'WithoutFreeSpace'),
           (0x8001, b'CD001'), (510, b'\x55\xaa'), (0, b'COWD'),
           (0, b'# Disk DescriptorFile\nversion=1\n')]

_INTERESTING = [0, 1, 2, 3, 0x7f, 0x80, 0xff, 0x100, 0x200, 0x1000, 0x10000,
                0x7fff, 0xffff, 0x7fffffff, 0x80000000, 0xffffffff,
                1 << 32, 1 << 40, 1 << 62, (1 << 63) - 1, 1 << 63,
                (1 << 64) - 1]

# VMDK descriptor text swaps: extents elsewhere, parents, odd types.
_VMDK_TEXT = [(b'SPARSE', b'FLAT'), (b'SPARSE', b'VMFS'), (b'SPARSE', b'ZERO'),
              (b'"monolithicSparse"', b'"monolithicFlat"'),
              (b'"streamOptimized"', b'"twoGbMaxExtentSparse"'),
              (b'.vmdk"', b'.vmdk" 0\nRW 2048 FLAT "/etc/passwd" 0'),
              (b'.vmdk"', b'.vmdk"\nparentFileNameHint="/etc/shadow"'),
              (b'seed-', b'../seed-'), (b'seed-', b'/etc/'),
              (b'createType', b'createtype'), (b'\n', b'\r\n'),
              (b'RW ', b'RDONLY '), (b'version=1', b'version=9'),
              (b'\n', b'\x00')]


# Header fields that steer a driver, by seed family: (offset, struct
# format, values worth trying). Boundary values around what qemu accepts.
_BIG = [0, 1, 1 << 31, 1 << 40, (1 << 63) - 1, (1 << 64) - 1]
_FIELDS = {
    'qcow2': [(4, '>I', [1, 2, 3, 4]), (8, '>Q', [512, 4096, 65536]),
              (16, '>I', [0, 1023, 1024, 4096]),
              (20, '>I', [8, 9, 12, 21, 22, 63]),
              (24, '>Q', [0, 1 << 40, 1 << 62]), (32, '>I', [0, 1, 2, 3]),
              (36, '>I', [0, 1, 1 << 22, 1 << 31]), (40, '>Q', _BIG),
              (48, '>Q', _BIG + [65536 + 8]), (56, '>I', [0, 1, 1 << 20]),
              (60, '>I', [1, 65536]), (64, '>Q', _BIG),
              (72, '>Q', [1, 2, 4, 8, 16, 32, 1 << 63]),
              (80, '>Q', [1, 1 << 63]), (88, '>Q', [1, 1 << 63]),
              (96, '>I', [0, 3, 4, 7]),
              (100, '>I', [0, 72, 103, 104, 112, 4096, 1 << 20])],
    'vmdk': [(4, '<I', [0, 1, 2, 3, 4]), (8, '<I', [0, 3, 1 << 16, 1 << 17]),
             (12, '<Q', [0, 1, 1 << 40, (1 << 64) - 1]),
             (20, '<Q', [0, 1, 8, 128, 1 << 21, 1 << 30]),
             (28, '<Q', [0, 1, 2, 1 << 40]),
             (36, '<Q', [0, 1, 20, 2048, 1 << 50]),
             (44, '<I', [0, 1, 512, 513, 1 << 31]),
             (48, '<Q', _BIG), (56, '<Q', _BIG), (64, '<Q', _BIG)],
    'vhd': [(16, '>Q', [0, 512, 1 << 40, (1 << 64) - 1]),
            (40, '>Q', [0, 1 << 40]), (48, '>Q', [0, 1 << 40, 1 << 62]),
            (60, '>I', [2, 3, 4, 5]),
            (512 + 16, '>Q', [0, 512, 1536, 1 << 40]),
            (512 + 28, '>I', [0, 1, 1 << 20, 0x1fffffff, 1 << 31]),
            (512 + 32, '>I', [0, 512, 1 << 21, 1 << 31])],
    'vdi': [(0x44, '<I', [0x00010001, 0x00020000]), (0x48, '<I', [0, 400]),
            (0x4c, '<I', [1, 2, 3, 4]), (0x154, '<I', [0, 511, 512, 1 << 31]),
            (0x158, '<I', [0, 512, 1024, 1 << 31]),
            (0x170, '<Q', [0, 1 << 40, 1 << 62]),
            (0x178, '<I', [0, 512, 1 << 20, 1 << 31]),
            (0x180, '<I', [0, 1, 1 << 20, 0x1fffff80, 1 << 31])],
}


def build_seeds(directory):
    """Make the seed images in *directory*; return a list of Seed."""
    d = str(directory)
    seeds = []

    def add(name, disk_format, path, regions):
        seeds.append(Seed(name, disk_format, path, regions))

    small = 1 * MiB
    path = imagebuilder.create(d, 'seed-v3.qcow2', 'qcow2', small)
    add('qcow2-v3', 'qcow2', path, [(0, 512), _qcow2_l1(path)])
    path = imagebuilder.create(d, 'seed-v2.qcow2', 'qcow2', small,
                               {'compat': '0.10'})
    add('qcow2-v2', 'qcow2', path, [(0, 512), _qcow2_l1(path)])
    for sub in ('monolithicSparse', 'streamOptimized'):
        path = imagebuilder.vmdk(d, 'seed-%s.vmdk' % sub, sub, 'lsilogic',
                                 small)
        regions = [(0, 512), (512, 1536)]
        if sub == 'streamOptimized':
            end = os.path.getsize(path)
            regions.append((end - 1536, end))
        add('vmdk-' + sub, 'vmdk', path, regions)
    path = imagebuilder.create(d, 'seed-dynamic.vhd', 'vhd', small)
    add('vhd-dynamic', 'vhd', path, [(0, 512), (512, 1536), _tail(path)])
    path = imagebuilder.create(d, 'seed-fixed.vhd', 'vhd', small,
                               {'subformat': 'fixed'})
    add('vhd-fixed', 'vhd', path, [_tail(path)])
    path = imagebuilder.create(d, 'seed.vhdx', 'vhdx', small)
    add('vhdx', 'vhdx', path, _vhdx_regions(path))
    path = imagebuilder.create(d, 'seed.vdi', 'vdi', small)
    add('vdi', 'vdi', path, [(0, 512)])
    path = imagebuilder.iso(d, 'seed.iso')
    add('iso', 'iso', path, [(0, 512), (32 * KiB, 34 * KiB)])
    path = imagebuilder.partitioned_raw(d, 'seed-gpt.raw', small, 'gpt')
    add('raw-gpt', 'raw', path, [(0, 1024)])
    path = imagebuilder.partitioned_raw(d, 'seed-mbr.raw', small, 'dos')
    add('raw-mbr', 'raw', path, [(0, 512)])
    for disk_format in ('qed', 'luks', 'ploop'):
        # A fast LUKS key derivation: the header is what is fuzzed.
        options = {'iter-time': 10} if disk_format == 'luks' else None
        path = imagebuilder.create(d, 'seed.' + disk_format, disk_format,
                                   small, options)
        add(disk_format, disk_format, path, [(0, 512)])
    return seeds


def _tail(path):
    end = os.path.getsize(path)
    return (end - 512, end)


def _qcow2_l1(path):
    with open(path, 'rb') as f:
        head = f.read(48)
    offset = struct.unpack_from('>Q', head, 40)[0]
    return (offset, offset + 64)


def _vhdx_regions(path):
    with open(path, 'rb') as f:
        data = f.read(2 * MiB)
    # Identifier, the two headers, the two region tables.
    regions = [(0, 64)] + [(start * KiB, start * KiB + 256)
                           for start in (64, 128, 192, 256)]
    metadata = data.find(b'metadata')
    if metadata >= 0:
        regions.append((metadata, metadata + 256))
    return regions


def declarable(conf):
    """Formats a case may be declared as: the allowed ones, and two not."""
    return set(conf['introspection_formats'].allowed_formats) | {'qed',
                                                                 'ploop'}


def make_case(seed, case, directory, formats):
    """Write mutated copy number *case* of *seed*; deterministic.

    :param formats: Glance format names a case may be declared as.
    :returns: (path, declared format or None, list of mutation notes).
    """
    rng = random.Random('%s/%d' % (seed.name, case))
    path = os.path.join(str(directory), 'case-%d' % case)
    shutil.copyfile(seed.path, path)
    notes = []
    with open(path, 'r+b') as f:
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            notes.append(_mutate(rng, f, seed))
        if seed.name == 'vhd-dynamic' and rng.random() < 0.7:
            # Mostly keep the checksums valid, or qemu-img stops at them.
            _fix_vhd_checksums(f)
            notes.append('VHD checksums fixed')
    roll = rng.random()
    if roll < 0.5:
        declared = seed.disk_format
    elif roll < 0.8:
        declared = None
    elif roll < 0.9:
        declared = 'raw'
    else:
        declared = rng.choice(sorted(formats))
    return path, declared, notes


def _mutate(rng, f, seed):
    size = os.fstat(f.fileno()).st_size
    start, end = rng.choice(seed.regions)
    end = min(end, size)
    if end <= start:
        start, end = 0, min(size, 512)
    kind = rng.choice(['flip', 'flip', 'byte', 'field', 'field', 'field',
                       'block', 'truncate', 'magic', 'text', 'grow',
                       'semantic', 'semantic', 'semantic'])
    family = seed.name.split('-')[0]
    if kind == 'semantic' and family in _FIELDS:
        offset, fmt, values = rng.choice(_FIELDS[family])
        value = rng.choice(values + [size, size // 512])
        value &= (1 << (8 * struct.calcsize(fmt))) - 1
        f.seek(offset)
        f.write(struct.pack(fmt, value))
        return 'field %d %s = %d' % (offset, fmt, value)
    if kind == 'flip' or (kind == 'text' and not seed.name.startswith(
            'vmdk')):
        offset = rng.randrange(start, end)
        f.seek(offset)
        old = f.read(1) or b'\x00'
        bit = 1 << rng.randrange(8)
        f.seek(offset)
        f.write(bytes([old[0] ^ bit]))
        return 'flip bit %d at %d' % (bit, offset)
    if kind == 'byte':
        offset = rng.randrange(start, end)
        value = rng.randrange(256)
        f.seek(offset)
        f.write(bytes([value]))
        return 'byte %d = 0x%02x' % (offset, value)
    if kind == 'field':
        width = rng.choice((2, 4, 8))
        offset = start + rng.randrange(max((end - start) // width, 1)) * width
        value = rng.choice(_INTERESTING + [size, size // 512, size * 2,
                                           rng.getrandbits(width * 8)])
        value &= (1 << (width * 8)) - 1
        order = rng.choice('<>')
        f.seek(offset)
        f.write(struct.pack(order + {2: 'H', 4: 'I', 8: 'Q'}[width], value))
        return 'field %d (%d bytes %s) = %d' % (offset, width, order, value)
    if kind == 'block':
        length = rng.randrange(8, 65)
        offset = rng.randrange(start, end)
        f.seek(offset)
        f.write(bytes(rng.getrandbits(8) for _ in range(length)))
        return 'random %d bytes at %d' % (length, offset)
    if kind == 'truncate':
        new = rng.choice([rng.randrange(0, max(end, 1) + 4096),
                          rng.randrange(0, size + 1)])
        f.truncate(new)
        return 'truncate to %d' % new
    if kind == 'magic':
        offset, magic = rng.choice(_MAGICS)
        f.seek(offset)
        f.write(magic)
        return 'magic %r at %d' % (magic, offset)
    if kind == 'grow':
        new = size + rng.choice((1, 511, 512, 4096, 64 * MiB))
        f.truncate(new)
        return 'grow to %d' % new
    # VMDK descriptor text.
    f.seek(512)
    text = f.read(1024)
    old, new = rng.choice(_VMDK_TEXT)
    if old not in text:
        return 'text %r absent' % old
    text = text.replace(old, new, 1)[:1024]
    f.seek(512)
    f.write(text)
    return 'text %r -> %r' % (old, new)


def _fix_vhd_checksums(f):
    """Recompute the footer copy's and the dynamic header's checksums."""
    for offset, length, at in ((0, 512, 64), (512, 1024, 36)):
        f.seek(offset)
        block = bytearray(f.read(length))
        if len(block) < length:
            return
        struct.pack_into('>I', block, at, 0)
        struct.pack_into('>I', block, at, ~sum(block) & 0xffffffff)
        f.seek(offset)
        f.write(block)


class _CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise _CaseTimeout()


#: A carrier of polyglot cases: a valid image with room for another
#: format's header. ``room`` is {offset: most bytes that may go there}.
Carrier = collections.namedtuple('Carrier', ['name', 'disk_format', 'path',
                                             'room'])

#: What a polyglot case writes into its carrier.
_POLYGLOT_OFFSETS = (0, 0, 0, 512, 2048)
_POLYGLOT_VARIANTS = ('whole', 'whole', 'whole', 'magic', 'cut', 'version',
                      'vdi-tie', 'lines')
# Lines qemu's VMDK text probe skips (or stops at), put before a payload.
_PROBE_LINES = (b'# Disk DescriptorFile\n', b'#\n', b'   \n', b' \r\n',
                b'\n', b'\r\n', b'# comment\r\n', b'\x00')


def build_polyglot_material(directory):
    """Make the carriers and payloads of polyglot cases in *directory*.

    :returns: (list of :class:`Carrier`, {payload name: (qemu driver,
        bytes)} from :func:`testkit.hostileimages.format_headers`).
    """
    d = str(directory)
    os.makedirs(d, exist_ok=True)
    boot = hostileimages.BOOT_CODE
    carriers = [
        Carrier('raw-mbr', 'raw',
                imagebuilder.partitioned_raw(d, 'carrier-mbr.raw', 2 * MiB,
                                             'dos'),
                {0: boot, 512: 4096, 2048: 4096}),
        Carrier('raw-gpt', 'raw',
                imagebuilder.partitioned_raw(d, 'carrier-gpt.raw', 2 * MiB,
                                             'gpt'),
                {0: boot, 512: 512, 2048: 4096}),
        Carrier('iso', 'iso', imagebuilder.iso(d, 'carrier.iso'),
                {0: 4096, 512: 4096, 2048: 4096}),
        Carrier('raw-blank', 'raw',
                hostileimages.raw_file(d, 'carrier-blank.raw', MiB),
                {0: 4096, 512: 4096, 2048: 4096}),
    ]
    return carriers, hostileimages.format_headers(d)


def make_polyglot_case(material, case, directory):
    """Write polyglot case number *case*; deterministic.

    :param material: what :func:`build_polyglot_material` returned.
    :returns: (path, declared format or None, list of notes, the case's
        name: carrier, payload and offset).
    """
    carriers, payloads = material
    rng = random.Random('polyglot/%d' % case)
    carrier = rng.choice(carriers)
    name = rng.choice(sorted(payloads))
    _driver, data = payloads[name]
    offset = rng.choice(_POLYGLOT_OFFSETS)
    room = carrier.room[offset]
    variant = rng.choice(_POLYGLOT_VARIANTS)
    data = bytearray(data)
    if variant == 'magic':
        data = data[:rng.choice((4, 6, 8, 16, 20, 24, 0x44))]
    elif variant == 'cut':
        data = data[:rng.randrange(1, len(data) + 1)]
    elif variant == 'version' and len(data) >= 24:
        # The version fields of qcow/qcow2 (4), LUKS (6), parallels (16).
        at = rng.choice((4, 6, 7, 16))
        data[at] = rng.choice((0, 1, 2, 3, 4, 0xff))
    elif variant == 'vdi-tie':
        data = data.ljust(0x44, b'\x00')
        data[0x40:0x44] = b'\x7f\x10\xda\xbe'
    elif variant == 'lines':
        data = b''.join(rng.choice(_PROBE_LINES)
                        for _ in range(rng.randrange(1, 4))) + data
    data = bytes(data[:room])
    path = os.path.join(str(directory), 'polyglot-%d' % case)
    shutil.copyfile(carrier.path, path)
    imagebuilder.write_data(path, offset, data)
    declared = carrier.disk_format if rng.random() < 0.7 else None
    label = '%s+%s@%d' % (carrier.name, name, offset)
    notes = ['%s: %d bytes of %s (%s) at %d' % (carrier.name, len(data), name,
                                                variant, offset)]
    return path, declared, notes, label


def run_case(seed, case, directory, conf, workspace, time_limit=30):
    """Inspect mutated case *case* of *seed* in-process; never raises.

    :param workspace: the workspace directory of *conf*, checked empty.
    :param time_limit: seconds after which the case is a problem (a
        SIGALRM interrupts it).
    :returns: :class:`Outcome`.
    """
    path, declared, notes = make_case(seed, case, directory,
                                      declarable(conf))
    return _run(path, declared, notes, case, seed.name, conf, workspace,
                time_limit)


def run_polyglot_case(material, case, directory, conf, workspace,
                      time_limit=30):
    """Inspect polyglot case *case* like :func:`run_case`; never raises."""
    path, declared, notes, label = make_polyglot_case(material, case,
                                                      directory)
    return _run(path, declared, notes, case, label, conf, workspace,
                time_limit)


def _run(path, declared, notes, case, name, conf, workspace, time_limit):
    """Inspect the case at *path*, check every guarantee, remove it."""
    allowed = conf['introspection_formats'].allowed_formats
    problems = []
    exit_code, code, message = 0, 'ok', ''
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(time_limit)
    since = time.time()
    started = time.monotonic()
    try:
        result = api.inspect(path, declared, conf)
        disk_format = result.properties.get('disk_format')
        if disk_format not in allowed:
            problems.append('inspected as %r, not an allowed format'
                            % disk_format)
        if declared is not None and disk_format != declared:
            problems.append('declared %s but inspected as %s'
                            % (declared, disk_format))
    except exception.IntrospectionError as err:
        exit_code, code, message = err.exit_code, err.code, err.message
    except _CaseTimeout:
        exit_code, code = None, 'timeout'
        problems.append('no answer within %d s' % time_limit)
    except Exception as err:
        exit_code, code, message = None, 'exception', repr(err)
        problems.append('raised %r' % err)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.monotonic() - started
    problems += check_outcome(exit_code, code, message)
    left = leftover_processes(workspace, since)
    if left:
        problems.append('processes left behind: %s' % left)
    leftovers = config.workspace_leftovers(workspace)
    if leftovers:
        problems.append('workspace not empty: %s' % leftovers)
    os.unlink(path)
    return Outcome(case, name, declared, notes, exit_code, code, message,
                   elapsed, problems)


def leftover_processes(workspace, since):
    """Processes a case left: new children, or any naming *workspace*.

    *since* is the case's start (a time.time() value): our children started
    earlier belong to others (a glance-api a fixture
    keeps for the session). A qemu-img orphaned by a killed parent is no
    child of ours any more; its command line still names the copy in the
    workspace.
    """
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.create_time() >= since - 0.01:
                found.append('%d %s' % (child.pid, child.name()))
        except psutil.NoSuchProcess:
            continue
    workspace = str(workspace)
    for proc in psutil.process_iter(['pid', 'cmdline']):
        cmdline = proc.info['cmdline'] or []
        if any(workspace in arg for arg in cmdline):
            found.append('%d %s' % (proc.info['pid'], ' '.join(cmdline)))
    return sorted(set(found))


def check_outcome(exit_code, code, message):
    """The broken guarantees in one outcome (exit code, code, message)."""
    problems = []
    if exit_code not in (0, exception.EXIT_REFUSED, exception.EXIT_FAILED):
        problems.append('exit code %r' % exit_code)
    if code not in exception.CODES and code != 'ok':
        problems.append('undeclared code %r' % code)
    if code == exception.INTERNAL_ERROR:
        problems.append('internal error: %s' % message)
    # The header check should refuse everything qemu-img's answer would:
    # a refusal by the second line of defence is a gap in the first.
    if (code == exception.QEMU_IMG_DISAGREES
            or message.startswith('qemu-img reports')):
        problems.append('refused only after qemu-img ran: %s' % message)
    if 'Traceback' in message:
        problems.append('traceback in message')
    return problems
