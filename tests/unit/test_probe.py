"""qemu's probes as a table: the rules, on buffers made by hand.

What qemu itself guesses for real files is in
tests/functional/test_probe_parity.py; these pin the rules of qemu 7.2's
probe functions that an attacker would lean on (block/*.c, ``*_probe``).
"""

import struct

import pytest

from qimgintrospect.inspectors import formats
from qimgintrospect.inspectors import probe


def _buffer(*parts):
    """A 512-byte buffer with (offset, bytes) *parts* written in."""
    buf = bytearray(probe.PROBE_WINDOW)
    for offset, data in parts:
        buf[offset:offset + len(data)] = data
    return bytes(buf)


QCOW2 = (0, b'QFI\xfb' + struct.pack('>I', 3))
VDI = (0x40, b'\x7f\x10\xda\xbe')


@pytest.mark.parametrize('parts, driver', [
    ([QCOW2], 'qcow2'),
    ([(0, b'QFI\xfb' + struct.pack('>I', 2))], 'qcow2'),
    ([(0, b'QFI\xfb' + struct.pack('>I', 1))], 'qcow'),
    ([(0, b'QFI\xfb' + struct.pack('>I', 0))], 'raw'),
    ([(0, b'QED\x00')], 'qed'),
    ([(0, b'KDMV')], 'vmdk'),
    ([(0, b'COWD')], 'vmdk'),
    ([(0, b'conectix')], 'vpc'),
    ([(0, b'vhdxfile')], 'vhdx'),
    ([VDI], 'vdi'),
    ([(0, b'WithoutFreeSpace' + struct.pack('<I', 2))], 'parallels'),
    ([(0, b'WithouFreSpacExt' + struct.pack('<I', 2))], 'parallels'),
    ([(0, b'WithoutFreeSpace' + struct.pack('<I', 3))], 'raw'),
    ([(0, b'LUKS\xba\xbe' + struct.pack('>H', 1))], 'luks'),
    ([(0, b'LUKS\xba\xbe' + struct.pack('>H', 2))], 'raw'),
    ([(0, b'Bochs Virtual HD Image\x00'), (32, b'Redolog\x00'),
      (48, b'Growing\x00'), (64, struct.pack('<I', 0x20000))], 'bochs'),
    ([(0, b'Bochs Virtual HD Image\x00'), (32, b'Redolog\x00'),
      (48, b'Growing\x00'), (64, struct.pack('<I', 0x10000))], 'bochs'),
    ([(0, b'Bochs Virtual HD Image\x00'), (32, b'Redolog\x00'),
      (48, b'Undoable'), (64, struct.pack('<I', 0x20000))], 'raw'),
    ([(0, b'#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t '
          b'iso9660 /dev/cloop $1\n')], 'cloop'),
    ([], 'raw'),
    # Binary magics are compared byte for byte.
    ([(0, b'qfi\xfb' + struct.pack('>I', 3))], 'raw'),
    ([(0, b'kdmv')], 'raw'),
    ([(0, b'CONECTIX')], 'raw'),
])
def test_each_probe(parts, driver):
    verdict = probe.probe(_buffer(*parts))
    assert verdict.driver == driver
    assert verdict.rivals == []


@pytest.mark.parametrize('text', [
    b'version=1\n',
    b'version=2\r\n',
    b'version=3\ncreateType="monolithicFlat"\n',
    b'# Disk DescriptorFile\nversion=1\n',
    b'#\n# two comments\nversion=1\n',
    b'   \nversion=1\n',
    b'  \r\nversion=1\n',
    b'# a comment with a NUL \x00 in it\nversion=1\n',
    b'version=1\n' + b'\x00' * 100,
])
def test_vmdk_text_descriptors_qemu_accepts(text):
    verdict = probe.probe(text)
    assert verdict.driver == 'vmdk'
    assert 'text descriptor' in verdict.winner.where


@pytest.mark.parametrize('text', [
    b'\nversion=1\n',                    # an empty line ends the search
    b'\r\nversion=1\n',
    b'\x00version=1\n',
    b'version=4\n',
    b'version=1',                        # no line end
    b'version=1 \n',
    b'Version=1\n',
    b'  x\nversion=1\n',                 # a line of spaces and more
    b'\tversion=1\n',
    b'#' + b'x' * 600 + b'\nversion=1\n',  # beyond the probe's 512 bytes
])
def test_vmdk_text_descriptors_qemu_refuses(text):
    assert probe.probe(text).driver == 'raw'


def test_a_descriptor_after_the_probe_window_is_not_seen():
    text = b'#\n' * 252 + b'version=1\n'
    assert len(text) == probe.PROBE_WINDOW + 2
    assert probe.probe(text).driver == 'raw'
    assert probe.probe(text[4:]).driver == 'vmdk'


@pytest.mark.parametrize('magic, driver', [
    (b'QFI\xfb' + struct.pack('>I', 3), 'qcow2'),
    (b'QFI\xfb' + struct.pack('>I', 1), 'qcow'),
    (b'KDMV', 'vmdk'), (b'conectix', 'vpc'), (b'vhdxfile', 'vhdx'),
    (b'LUKS\xba\xbe' + struct.pack('>H', 1), 'luks'),
])
def test_a_tie_with_vdi_goes_by_qemus_driver_order(magic, driver):
    verdict = probe.probe(_buffer((0, magic), VDI))
    # qemu 7.2 registers vdi after these, and its list puts the last
    # registered first.
    assert verdict.driver == 'vdi'
    assert [m.probe.driver for m in verdict.rivals] == [driver]


@pytest.mark.parametrize('magic, driver', [
    (b'QED\x00', 'qed'),
    (b'WithoutFreeSpace' + struct.pack('<I', 2), 'parallels')])
def test_qed_and_parallels_win_their_tie_with_vdi(magic, driver):
    verdict = probe.probe(_buffer((0, magic), VDI))
    assert verdict.driver == driver
    assert [m.probe.driver for m in verdict.rivals] == ['vdi']


def test_a_short_file_reads_as_zeros_past_its_end():
    assert probe.probe(b'KDMV').driver == 'vmdk'
    assert probe.probe(b'QFI\xfb\x00\x00\x00\x03').driver == 'qcow2'
    assert probe.probe(b'QFI').driver == 'raw'
    assert probe.probe(b'').driver == 'raw'


def test_dmg_goes_by_the_file_name_only():
    assert probe.probe(b'', 'disk.dmg').driver == 'dmg'
    assert probe.probe(b'', '.dmg').driver == 'raw'
    assert probe.probe(b'', 'disk.img').driver == 'raw'
    assert probe.probe(b'', None).driver == 'raw'
    # A format with a magic beats the name.
    assert probe.probe(b'KDMV', 'disk.dmg').driver == 'vmdk'


def test_raw_always_scores_1_and_only_wins_alone():
    verdict = probe.probe(_buffer(QCOW2))
    assert [(m.probe.driver, m.probe.score) for m in verdict.matches] == [
        ('raw', 1), ('qcow2', 100)]


def test_the_table_lists_every_probe_of_qemu_img():
    assert sorted(probe.BY_DRIVER) == [
        'bochs', 'cloop', 'dmg', 'luks', 'parallels', 'qcow', 'qcow2', 'qed',
        'raw', 'vdi', 'vhdx', 'vmdk', 'vpc']


# formats.py takes its magics from the table ----------------------------------

@pytest.mark.parametrize('head, found', [
    (b'QFI\xfb\x00\x00\x00\x03', ['qcow2']),
    # A qcow (version 1) header still carries qcow2's magic.
    (b'QFI\xfb\x00\x00\x00\x01', ['qcow2']),
    (b'qfi\xfb\x00\x00\x00\x03', []),
    (b'QfI\xfb\x00\x00\x00\x03', []),
    (b'KDMV', ['vmdk']), (b'COWD', ['vmdk']),
    (b'# Disk DescriptorFile\nversion=1\n', ['vmdk']),
    (b'\n# Disk DescriptorFile\nversion=1\n', []),
    (_buffer(QCOW2, VDI), ['vdi', 'qcow2']),
    (_buffer((0x8001, b'CD001')), []),
    (bytes(0x8001) + b'CD001', ['iso']),
])
def test_magic_formats(head, found):
    assert formats.magic_formats(head) == found


def test_has_magic_compares_bytes_exactly():
    assert formats.has_magic('qcow2', b'QFI\xfb')
    assert not formats.has_magic('qcow2', b'qfi\xfb')
    assert not formats.has_magic('qcow2', b'QFI\xdb')
    assert formats.has_magic('ploop', b'WithouFreSpacExt')
    assert not formats.has_magic('ploop', b'withoutfreespace')
    assert not formats.has_magic('raw', b'anything')
