"""Header checks that are not attacks: empty, truncated, changed copies."""

import os

import pytest

from qimgintrospect import exception
from qimgintrospect.inspectors import header
from qimgintrospect import source
from testkit import imagebuilder


def _inspect(path, declared, conf):
    with source.open_image(str(path)) as image:
        return header.inspect(image.fd, image.size, declared, conf)


def test_empty_file(conf, tmp_path):
    empty = tmp_path / 'empty'
    empty.write_bytes(b'')
    with pytest.raises(exception.InspectionFailed) as err:
        _inspect(empty, 'qcow2', conf)
    assert err.value.code == 'image-empty'


@pytest.mark.parametrize('disk_format, keep', [
    ('qcow2', 100), ('vmdk', 300), ('vhdx', 100 * 1024), ('vdi', 200)])
def test_truncated_header(conf, tmp_path, disk_format, keep):
    image = imagebuilder.create(tmp_path, 'image', disk_format)
    os.truncate(image, keep)
    with pytest.raises(exception.InspectionFailed) as err:
        _inspect(image, disk_format, conf)
    assert err.value.code == 'image-truncated'
    assert err.value.exit_code == 4


def test_detected_format_is_returned(conf, tmp_path):
    image = imagebuilder.vmdk(tmp_path, 'disk.vmdk', 'streamOptimized',
                              'ide')
    found = _inspect(image, None, conf)
    assert found.format == 'vmdk'
    assert found.findings['vmdk_create_type'] == 'streamOptimized'
    assert found.findings['vmdk_adapter_type'] == 'ide'


def test_copy_that_differs_from_the_checked_header_is_refused(conf,
                                                              tmp_path):
    image = imagebuilder.create(tmp_path, 'a.qcow2', 'qcow2')
    found = _inspect(image, 'qcow2', conf)
    copy = tmp_path / 'copy'
    data = bytearray(open(image, 'rb').read())
    copy.write_bytes(bytes(data))
    header.confirm_copy(str(copy), found)
    data[8:16] = (512).to_bytes(8, 'big')     # now it has a backing file
    copy.write_bytes(bytes(data))
    with pytest.raises(exception.ImageRefused) as err:
        header.confirm_copy(str(copy), found)
    assert err.value.code == 'image-changed-during-copy'


def test_raw_starting_like_a_lowercase_magic_is_raw(conf, tmp_path):
    # Binary magics are compared byte for byte (they were lowercased once,
    # and a raw disk starting with qfi\xfb was refused as qcow2).
    image = tmp_path / 'disk.raw'
    image.write_bytes(b'qfi\xfb\x00\x00\x00\x03'.ljust(1024 * 1024, b'\x00'))
    found = _inspect(image, 'raw', conf)
    assert found.format == 'raw'


@pytest.mark.parametrize('size, qemu_size', [
    (1000, 1024), (1024 * 1024, 1024 * 1024), (1024 * 1024 + 1, 1049088)])
def test_raw_virtual_size_is_counted_as_qemu_does(conf, tmp_path, size,
                                                  qemu_size):
    image = tmp_path / 'disk.raw'
    image.write_bytes(imagebuilder.formatless_bytes(size))
    assert _inspect(image, 'raw', conf).findings['virtual_size'] == qemu_size
