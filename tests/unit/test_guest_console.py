"""The appliance's console: signs of life, qemu's start, its last lines.

The pieces are what libguestfs 1.48 hands its appliance event callback
here (recorded from real launches): the verbose echo of qemu's command
line, SeaBIOS's banner cut anywhere, qemu's own abort under KVM.
"""

import pytest

from qimgintrospect.inspectors.guest import console

ECHO = ('/usr/bin/qemu-system-x86_64 \\\n    -global virtio-blk-pci.scsi=off '
        '\\\n    -no-user-config \\\n    -nodefaults \\\n    -display none '
        '\\\n    -machine accel=kvm:tcg,graphics=off \\\n    -cpu max,la57=off'
        ' \\\n    -append "panic=1 console=ttyS0 edd=off printk.time=1 '
        'quiet TERM=xterm"\n')
SEABIOS = ['\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBI', 'OS (version 1.16.2-d',
           'ebian-1.16.2-1)\r\nBo', 'oting from ROM..', '.\r\n\x1bc']
ABORT = ('qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n'
         'qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: '
         'kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs\' '
         'failed.\n')
HOST_SUPERMIN = ('supermin: version: 5.2.2\nsupermin: package handler: '
                 'debian/dpkg\nsupermin: acquiring lock on /var/tmp/lock\n'
                 'supermin: if-newer: output does not need rebuilding\n')


def _fed(*chunks, **callbacks):
    c = console.Console(**callbacks)
    for chunk in chunks:
        c.feed(chunk)
    return c


@pytest.mark.parametrize('cut', range(1, len(ECHO), 7))
def test_qemu_start_and_its_accelerators_are_seen_in_the_echo(cut):
    seen = []
    c = _fed(HOST_SUPERMIN, ECHO[:cut], ECHO[cut:],
             on_qemu_start=seen.append)
    assert c.accelerators == 'kvm:tcg'
    assert seen == ['kvm:tcg']
    assert c.qemu_started is not None
    # Neither the host's supermin nor the echo is the guest speaking.
    assert c.life is None


def test_the_firmware_banner_is_life_even_cut_in_pieces():
    lives = []
    c = _fed(ECHO, *SEABIOS, on_life=lives.append)
    # Once, as soon as the marker is whole: the probe stops qemu then.
    assert len(lives) == 1
    assert lives[0].startswith('SeaBIOS (version 1.16')
    assert c.life == lives[0]
    assert c.life_at >= c.qemu_started


@pytest.mark.parametrize('line', [
    '[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists)',
    'Decompressing Linux... Parsing ELF... done.',
    'supermin: mounting /proc',
    'supermin: ext2 mini initrd starting up: 5.2.2',
    'Starting /init script ...',
    '[   12.345678] sd 2:0:0:0: [sda] Attached SCSI disk',
])
def test_the_kernel_and_the_appliance_init_are_life(line):
    assert _fed(line.encode() + b'\r\n').life == line


def test_qemu_aborting_is_not_life_and_is_the_last_output():
    c = _fed(ECHO, ABORT)
    assert c.life is None
    assert c.tail(2) == ABORT.strip().split('\n')
    assert 'failed to set MSR 0x10a' in c.describe()


def test_tail_drops_control_sequences_and_keeps_a_partial_line():
    c = _fed(*SEABIOS)
    c.feed('[    0.1] half a li')
    assert c.tail() == ['SeaBIOS (version 1.16.2-debian-1.16.2-1)',
                        'Booting from ROM...', '[    0.1] half a li']
    assert c.tail(1) == ['[    0.1] half a li']


def test_a_callback_that_raises_does_not_reach_libguestfs():
    def broken(line):
        raise ValueError('display gone')

    c = console.Console(on_life=broken)
    # event_callback is what libguestfs calls: it must never raise.
    c.event_callback(0x10, 1, b'SeaBIOS (version 1)\n', [])
    assert c.life == 'SeaBIOS (version 1)'


def test_the_console_keeps_only_its_last_lines():
    c = _fed(''.join('line %d\n' % n for n in range(1000)))
    assert c.tail(3) == ['line 997', 'line 998', 'line 999']
    assert len(c.tail(10000)) == console._MAX_LINES
