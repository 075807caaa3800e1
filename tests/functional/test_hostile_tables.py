"""Tables checked whole, qcow2 flags qemu acts on, benign images (issue 9).

Every table qemu reads at open (VMDK grain directories, the footer of a
streamOptimized VMDK, qcow2 L1, refcount and snapshot tables, the VHD
block allocation table, the VDI block map) must end inside the file: qemu
reads what lies past the end as zeros and allocates the table whole, so
the header check refuses it before any copy (image-truncated). The qcow2
corrupt bit and encryption are named. And images that are not attacks
(extended L2, zstd compression, hundreds of snapshots, every format at
odd sizes) pass, with the virtual size the header computed the way qemu
does equal to qemu-img's.
"""

import json
import os
import struct
import subprocess

import pytest

from qimgintrospect import api
from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect.inspectors import header as header_inspector
from qimgintrospect.inspectors import qemu_img
from qimgintrospect import opts
from qimgintrospect import source
from testkit import config
from testkit import hostileimages as hostile
from testkit import imagebuilder
from tests.functional.test_hostile import api_refused
from tests.functional.test_hostile import inspected
from tests.functional.test_hostile import refused

MiB = imagebuilder.MiB
SECTOR = hostile.SECTOR


def qemu_info(path, qemu_format):
    """An unguarded ``qemu-img info -f`` (a positive control)."""
    proc = hostile.qemu_img('info', '--output=json', '-f', qemu_format, path)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# VMDK: the footer of a stream, grain directories -----------------------------

def test_vmdk_stream_with_a_footer_is_read_as_qemu_reads_it(cli, images):
    image = hostile.vmdk_stream_with_footer(images, 'stream.vmdk')
    out = inspected(cli, image, '--disk-format', 'vmdk')
    assert out['properties']['vmware_disktype'] == 'streamOptimized'
    assert out['properties']['virtual_size'] == MiB
    assert qemu_info(image, 'vmdk')['virtual-size'] == MiB


@pytest.mark.parametrize('field, fmt, value, words', [
    (12, '<Q', 1 << 31, 'on the capacity: 2048 in the header, 2147483648'),
    (20, '<Q', 8, 'on the granularity'),
    (44, '<I', 128, 'on the num_gtes_per_gt'),
    (64, '<Q', 64, 'on the grain_offset'),
    (8, '<I', 0x30001, 'on the flags'),
])
def test_vmdk_footer_that_disagrees_with_the_header(cli, conf, images, field,
                                                    fmt, value, words):
    image = hostile.vmdk_stream_with_footer(images, 'lie.vmdk',
                                            {field: (fmt, value)})
    message = refused(cli, image, '--disk-format', 'vmdk',
                      code='vmdk-footer-invalid')
    assert words in message
    if field == 12:
        # Positive control: qemu goes by the footer, not by the header
        # that oslo's inspector reads.
        assert qemu_info(image, 'vmdk')['virtual-size'] == value * SECTOR


def test_vmdk_footer_whose_grain_directory_is_past_the_end(cli, images):
    size_after = os.path.getsize(hostile.vmdk_stream_with_footer(
        images, 'probe.vmdk')) + 4096
    image = hostile.vmdk_stream_with_footer(
        images, 'far.vmdk', {56: ('<Q', size_after // SECTOR)})
    message = refused(cli, image, '--disk-format', 'vmdk',
                      code='image-truncated', exit_code=4)
    assert 'VMDK grain directory' in message


@pytest.mark.parametrize('what', ['marker', 'end-of-stream', 'magic',
                                  'another footer'])
def test_vmdk_footer_that_is_no_footer(conf, images, what):
    image = hostile.vmdk_stream_with_footer(images, 'bad.vmdk')
    size = os.path.getsize(image)
    if what == 'marker':
        hostile.patch(image, size - 3 * SECTOR + 12, '<I', 1)
    elif what == 'end-of-stream':
        hostile.patch(image, size - SECTOR, '<Q', 7)
    elif what == 'magic':
        imagebuilder.write_data(image, size - 2 * SECTOR, b'XXXX')
    else:
        hostile.patch(image, size - 2 * SECTOR + 56, '<Q',
                      hostile.VMDK_GD_AT_END)
    api_refused(conf, image, 'vmdk', code='vmdk-footer-invalid')


def test_vmdk_grain_directory_past_the_end(cli, images):
    # 4 TiB of one-sector grains: a 64 MiB grain directory (and as much
    # for its redundant copy) at sector 21 of a 200 KiB file.
    image = hostile.vmdk_with_grain_directory(images, 'gd.vmdk', 1 << 33, 1)
    message = refused(cli, image, '--disk-format', 'vmdk',
                      code='image-truncated', exit_code=4)
    assert 'grain directory (16777216 entries)' in message
    # Positive control: qemu-img allocates both and reads zeros past the
    # end; it opens the image.
    assert qemu_info(image, 'vmdk')['virtual-size'] == 1 << 42


def test_vmdk_redundant_grain_directory_past_the_end(conf, images):
    image = imagebuilder.vmdk(images, 'rgd.vmdk', 'monolithicSparse',
                              'lsilogic', MiB)
    hostile.patch(image, 48, '<Q', 1 << 20)
    message = api_refused(conf, image, 'vmdk', code='image-truncated',
                          exit_code=4)
    assert 'redundant grain directory' in message


# qcow2: every table whole, the corrupt bit, encryption -----------------------

def test_qcow2_snapshot_table_past_the_end(cli, images):
    image = hostile.qcow2_with_snapshots(images, 'snap.qcow2', 1, MiB, 0)
    offset, count = hostile.qcow2_snapshot_entry(image)
    assert count == 1
    # A name of 64 KiB: the table now ends past the end of the file.
    hostile.patch(image, offset + 14, '>H', 0xffff)
    message = refused(cli, image, '--disk-format', 'qcow2',
                      code='image-truncated', exit_code=4)
    assert 'qcow2 snapshot table (1 entries)' in message
    # Positive control: qemu-img allocates the 64 KiB name, reads what is
    # past the end as zeros, and opens the image.
    assert qemu_info(image, 'qcow2')['snapshots'][0]['name'] == 's0'


def test_qcow2_snapshot_count_past_the_end(conf, images):
    image = hostile.qcow2_with_snapshots(images, 'many.qcow2', 1, MiB, 0)
    hostile.patch(image, 60, '>I', 65536)
    message = api_refused(conf, image, 'qcow2', code='image-truncated',
                          exit_code=4)
    assert '65536 entries) at its smallest' in message


@pytest.mark.parametrize('field, fmt, value, table', [
    (36, '>I', 1 << 20, 'L1 table'),
    (56, '>I', 1 << 10, 'refcount table')])
def test_qcow2_tables_past_the_end(conf, images, field, fmt, value, table):
    image = hostile.qcow2(images, 'table.qcow2')
    hostile.patch(image, field, fmt, value)
    message = api_refused(conf, image, 'qcow2', code='image-truncated',
                          exit_code=4)
    assert table in message


def test_qcow2_with_its_corrupt_bit_set(cli, images):
    image = hostile.qcow2(images, 'corrupt.qcow2')
    hostile.patch(image, 72, '>Q', 1 << 1)
    message = refused(cli, image, '--disk-format', 'qcow2',
                      code='image-corrupt', exit_code=4)
    assert 'corrupt bit' in message
    # Positive control: qemu-img info (read-only) opens it, and says so;
    # nothing can open it for writing.
    assert qemu_info(image, 'qcow2')['format-specific']['data']['corrupt']
    proc = subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write 0 512',
                           image], capture_output=True, text=True)
    assert 'Image is corrupt' in proc.stdout + proc.stderr


def _luks_qcow2(directory, name='luks.qcow2'):
    return imagebuilder.create(
        directory, name, 'qcow2', MiB,
        {'encrypt.format': 'luks', 'encrypt.key-secret': 'sec0',
         'encrypt.iter-time': 100},
        extra=('--object', 'secret,id=sec0,data=test-passphrase'))


def test_luks_encrypted_qcow2_is_refused_by_default(cli, images):
    image = _luks_qcow2(images)
    message = refused(cli, image, '--disk-format', 'qcow2',
                      code='image-encrypted')
    assert 'LUKS-encrypted' in message and 'allow_encrypted' in message


def test_luks_encrypted_qcow2_when_allowed(cli, images):
    cli.set(opts.FORMATS_GROUP, 'allow_encrypted', True)
    image = _luks_qcow2(images)
    out = inspected(cli, image, '--disk-format', 'qcow2')
    assert out['properties'] == {'disk_format': 'qcow2',
                                 'virtual_size': MiB}
    assert out['details']['qcow2_encryption'] == 'luks'
    assert out['details']['encrypted'] is True
    assert any('LUKS-encrypted' in w for w in out['warnings'])


@pytest.mark.parametrize('allow', [False, True])
def test_aes_encrypted_qcow2_is_always_refused(cli, images, allow):
    cli.set(opts.FORMATS_GROUP, 'allow_encrypted', allow)
    image = imagebuilder.create(
        images, 'aes.qcow2', 'qcow2', MiB,
        {'encrypt.format': 'aes', 'encrypt.key-secret': 'sec0'},
        extra=('--object', 'secret,id=sec0,data=test-passphrase'))
    message = refused(cli, image, '--disk-format', 'qcow2',
                      code='image-encrypted')
    assert 'AES' in message and 'never accepted' in message
    assert qemu_info(image, 'qcow2')['encrypted']


def test_encryption_qemu_img_reports_is_refused_too(conf, images):
    # The second line: should the header check miss it, qemu-img's word
    # that the image is encrypted still refuses it.
    image = _luks_qcow2(images)
    conf.set_override('allow_encrypted', True, opts.FORMATS_GROUP)
    with source.open_image(image) as opened:
        header = header_inspector.inspect(opened.fd, opened.size, 'qcow2',
                                          conf)
    conf.set_override('allow_encrypted', False, opts.FORMATS_GROUP)
    with pytest.raises(exception.ImageRefused) as err:
        qemu_img.inspect(image, 'qcow2', conf, header)
    assert err.value.code == 'image-encrypted'
    assert err.value.message == 'qemu-img reports an encrypted image (luks)'


# VHD and VDI tables ----------------------------------------------------------

def test_vhd_block_allocation_table_past_the_end(conf, images):
    image = imagebuilder.create(images, 'bat.vhd', 'vhd', MiB)
    with open(image, 'r+b') as f:
        footer = f.read(SECTOR)
        data_offset = struct.unpack_from('>Q', footer, 16)[0]
        f.seek(data_offset)
        dynamic = bytearray(f.read(1024))
        struct.pack_into('>I', dynamic, 28, 1 << 20)
        hostile.vhd_checksum(dynamic, 36)
        f.seek(data_offset)
        f.write(dynamic)
    message = api_refused(conf, image, 'vhd', code='image-truncated',
                          exit_code=4)
    assert 'block allocation table' in message


def test_vdi_block_map_past_the_end(conf, images):
    image = imagebuilder.create(images, 'map.vdi', 'vdi', MiB)
    hostile.patch(image, 0x180, '<I', 1 << 20)
    message = api_refused(conf, image, 'vdi', code='image-truncated',
                          exit_code=4)
    assert 'VDI block map' in message


# Benign images pass ----------------------------------------------------------

@pytest.mark.parametrize('options, key, value', [
    ({'extended_l2': 'on'}, 'qcow2_extended_l2', True),
    ({'compression_type': 'zstd'}, 'qcow2_compression_type', 'zstd')])
def test_qcow2_incompatible_features_qemu_knows(cli, images, options, key,
                                                value):
    image = imagebuilder.create(images, 'feature.qcow2', 'qcow2', MiB,
                                options)
    out = inspected(cli, image, '--disk-format', 'qcow2')
    assert out['details'][key] == value
    assert out['warnings'] == []


@pytest.fixture(scope='module')
def many_snapshots(tmp_path_factory):
    """A 20 MiB qcow2 with 256 internal snapshots (about 12 s to make)."""
    return hostile.qcow2_with_snapshots(tmp_path_factory.mktemp('snap'),
                                        'snapshots.qcow2', 256)


@pytest.mark.timeout(600)
def test_many_snapshots_pass_every_time_under_the_default_caps(
        conf, many_snapshots):
    # qemu-img starts a varying number of threads on this image; under
    # the 1 GiB cap it used to die in qemu_thread_create 3 to 7 runs in 10.
    assert conf[opts.QEMU_IMG_GROUP].address_space == 1 << 30
    outcomes = []
    for _run in range(20):
        try:
            result = api.inspect(many_snapshots, 'qcow2', conf)
            outcomes.append(result.properties['virtual_size'])
        except exception.IntrospectionError as err:
            outcomes.append(err.code)
    assert outcomes == [20 * MiB] * 20
    assert config.workspace_leftovers(
        conf[opts.WORKSPACE_GROUP].directory) == []


# The virtual size, as qemu computes it --------------------------------------

SIZES = [1000, MiB, MiB + 1, 10 ** 9 + 7]


@pytest.mark.parametrize('disk_format, options', [
    ('raw', None), ('qcow2', None), ('qcow2', {'compat': '0.10'}),
    ('vmdk', {'subformat': 'monolithicSparse'}),
    ('vmdk', {'subformat': 'streamOptimized'}),
    ('vhd', {'subformat': 'dynamic'}), ('vhd', {'subformat': 'fixed'}),
    ('vhd', {'subformat': 'fixed', 'force_size': 'on'}),
    ('vhdx', None), ('vdi', None), ('ploop', None), ('luks', None)])
def test_header_virtual_size_is_qemus(conf, images, disk_format, options):
    conf.set_override('allowed_formats', list(diskformats.GLANCE_DISK_FORMATS),
                      opts.FORMATS_GROUP)
    if disk_format == 'luks':
        options = {'iter-time': 100}
    for size in SIZES:
        if options and options.get('force_size') and size % SECTOR:
            continue
        image = imagebuilder.create(images, 'sized', disk_format, size,
                                    options)
        with source.open_image(image) as opened:
            header = header_inspector.inspect(opened.fd, opened.size,
                                              disk_format, conf)
        qemu_size = qemu_info(
            image, imagebuilder.QEMU_CREATE[disk_format])['virtual-size']
        assert header.findings['virtual_size'] == qemu_size, size
        result = api.inspect(image, disk_format, conf)
        assert result.properties['virtual_size'] == qemu_size
        os.unlink(image)


def test_iso_virtual_size_is_its_file_as_qemu_reads_it(conf, images):
    image = imagebuilder.iso(images)
    with open(image, 'ab') as f:
        f.write(b'x' * 1000)     # no longer a whole number of sectors
    result = api.inspect(image, 'iso', conf)
    assert result.properties['virtual_size'] == qemu_info(
        image, 'raw')['virtual-size']


@pytest.mark.parametrize('creator, by_geometry', [
    (b'vpc ', True), (b'qemu', True), (b'xxxx', True), (b'win ', False),
    (b'qem2', False), (b'd2v ', False), (b'CTXS', False),
    (b'tap\x00', False)])
@pytest.mark.parametrize('subformat', ['dynamic', 'fixed'])
def test_vhd_size_by_geometry_or_by_current_size(conf, images, creator,
                                                 by_geometry, subformat):
    # qemu sizes a VHD by its CHS geometry unless a creator it trusts
    # wrote it; make the two differ and the header must follow qemu.
    image = imagebuilder.create(images, 'geo.vhd', 'vhd', 100 * MiB,
                                {'subformat': subformat})
    with open(image, 'r+b') as f:
        places = (0, -SECTOR) if subformat == 'dynamic' else (-SECTOR,)
        for place in places:
            f.seek(place, os.SEEK_END if place < 0 else os.SEEK_SET)
            footer = bytearray(f.read(SECTOR))
            current, = struct.unpack_from('>Q', footer, 48)
            footer[28:32] = creator
            struct.pack_into('>HBB', footer, 56, 100, 16, 63)
            hostile.vhd_checksum(footer, 64)
            f.seek(place, os.SEEK_END if place < 0 else os.SEEK_SET)
            f.write(footer)
    # The geometry says less than the disk holds: a dynamic disk's block
    # table must cover what qemu will read.
    geometry = 100 * 16 * 63 * SECTOR
    assert geometry < current
    expected = geometry if by_geometry else current
    assert qemu_info(image, 'vpc')['virtual-size'] == expected
    result = api.inspect(image, 'vhd', conf)
    assert result.properties['virtual_size'] == expected


def test_virtual_size_qemu_img_disagrees_with(conf, images):
    # A header that computed another size than qemu-img reports (here,
    # another image's header: no real image makes the two differ).
    small = imagebuilder.create(images, 'small.qcow2', 'qcow2', MiB)
    large = imagebuilder.create(images, 'large.qcow2', 'qcow2', 2 * MiB)
    with source.open_image(large) as opened:
        header = header_inspector.inspect(opened.fd, opened.size, 'qcow2',
                                          conf)
    with pytest.raises(exception.ImageRefused) as err:
        qemu_img.inspect(small, 'qcow2', conf, header)
    assert err.value.code == 'qemu-img-format-disagrees'
    assert err.value.message == (
        'qemu-img reports a virtual size of 1048576 bytes, but the header '
        'says 2097152 bytes as qemu reads it')
