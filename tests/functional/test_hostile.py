"""Hostile images (issue 3): every known attack is refused, and proven so.

Each image is real: qemu-img makes it, then bytes are patched at the
offsets the format specifications give. Each runs through the real
``qimg-introspect`` CLI. Where the image points at a file or a port, a
canary sits there (tests/canary.py) and the test proves two things: the
inspection never touched it, and an unguarded qemu-img does (the positive
control, run after the inspection, which shows the canary would have
fired). A refusal by the header check must come before any copy: the
workspace directory is never even created.
"""

import json
import os
import shutil
import subprocess

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect import opts
from testkit import config
from testkit import hostileimages as hostile
from testkit import imagebuilder
from tests import canary

MiB = imagebuilder.MiB


def refused(cli, path, *args, code, exit_code=exception.EXIT_REFUSED,
            before_copy=True):
    """Inspect *path* with the CLI; assert it failed with *code*.

    :param before_copy: the refusal must come from the header check, so
        the workspace directory is never created.
    :returns: the error message.
    """
    rc, out = cli.inspect_json(path, *args)
    assert 'error' in out, out
    assert (rc, out['error']['code']) == (exit_code, code), out
    assert exception.CODES[code][0] == exit_code
    if before_copy:
        assert not os.path.exists(cli.workspace), (
            'refused after a copy was made')
    return out['error']['message']


def api_refused(conf, path, declared=None, code=None,
                exit_code=exception.EXIT_REFUSED, before_copy=True):
    """The same as :func:`refused`, through the core API in-process."""
    with pytest.raises(exception.IntrospectionError) as err:
        api.inspect(str(path), declared, conf)
    assert (err.value.exit_code, err.value.code) == (exit_code, code), (
        err.value.message)
    if before_copy:
        assert not os.path.exists(conf[opts.WORKSPACE_GROUP].directory), (
            'refused after a copy was made')
    return err.value.message


def inspected(cli, path, *args):
    rc, out = cli.inspect_json(path, *args)
    assert rc == 0, out
    return out


def _control_opens(watch, *qemu_img_args):
    """Positive control: an unguarded qemu-img opens a watched path."""
    hostile.qemu_img(*qemu_img_args)
    opened = watch.opened()
    assert opened, 'qemu-img %s did not touch the canary' % (
        ' '.join(qemu_img_args))
    return opened


# qcow2 backing files -----------------------------------------------------

@pytest.mark.parametrize('backing_of', [
    pytest.param(lambda d: str(d / 'canary.raw'), id='absolute'),
    pytest.param(lambda d: 'canary.raw', id='relative'),
    pytest.param(lambda d: '../canary.raw', id='parent-dir'),
    pytest.param(lambda d: 'json:{"driver": "raw", "file": {"driver": '
                           '"file", "filename": "%s"}}' % (d / 'canary.raw'),
                 id='json'),
])
def test_backing_file_is_refused_and_never_opened(cli, conf, images,
                                                  backing_of):
    if backing_of(images).startswith('..'):
        # The image sits one level down so that ../ reaches the canary.
        home = images / 'sub'
        home.mkdir()
    else:
        home = images
    target = images / 'canary.raw'
    hostile.raw_file(images, 'canary.raw')
    backing = backing_of(images)
    image = hostile.qcow2_backed_by(home, 'backed.qcow2', backing)
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'qcow2',
                          code='backing-file')
        assert repr(backing) in message
        # Detected rather than declared: the same refusal.
        assert api_refused(conf, image, code='backing-file') == message
        assert watch.opened() == []
        _control_opens(watch, 'info', '--backing-chain', '-f', 'qcow2',
                       image)


@pytest.mark.parametrize('url', ['nbd:127.0.0.1:%d',
                                 'nbd://127.0.0.1:%d/export',
                                 'http://127.0.0.1:%d/disk.raw'],
                         ids=['nbd', 'nbd-uri', 'http'])
def test_network_backing_file_is_refused_and_never_dialled(cli, images,
                                                           url):
    with canary.TcpCanary() as listener:
        backing = url % listener.port
        image = hostile.qcow2_backed_by(images, 'net.qcow2', backing)
        message = refused(cli, image, '--disk-format', 'qcow2',
                          code='backing-file')
        assert repr(backing) in message
        assert not listener.dialled()
        # Positive control: qemu-img following the chain dials the port.
        proc = subprocess.Popen(
            ['qemu-img', 'info', '--backing-chain', '-f', 'qcow2', image],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            dialled = listener.dialled(timeout=10)
        finally:
            proc.kill()
            _out, stderr = proc.communicate()
        if not dialled and 'Unknown protocol' in stderr:
            pytest.skip('this qemu-img has no %s driver (qemu-block-extra)'
                        % backing.split(':')[0])
        assert dialled, stderr


def test_missing_backing_file_is_still_refused(cli, images):
    image = hostile.qcow2_backed_by(images, 'orphan.qcow2',
                                    str(images / 'does-not-exist'))
    message = refused(cli, image, '--disk-format', 'qcow2',
                      code='backing-file')
    assert 'does-not-exist' in message


def test_backing_file_name_past_the_end_is_refused(cli, images):
    image = hostile.qcow2(images, 'dangling.qcow2')
    size = os.path.getsize(image)
    hostile.patch(image, 8, '>QI', size + 4096, 12)
    message = refused(cli, image, code='backing-file')
    assert 'past the end of the file' in message


# qcow2 external data files, features, versions ---------------------------

@pytest.mark.parametrize('raw', [False, True], ids=['data-file',
                                                    'data-file-raw'])
def test_external_data_file_is_refused_and_never_opened(cli, images, raw):
    target = str(images / 'canary.data')
    image = hostile.qcow2_with_data_file(images, 'external.qcow2', target,
                                         raw)
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'qcow2',
                          code='data-file')
        assert watch.opened() == []
        # qemu-img info leaves the data file shut; anything that reads the
        # disk (check, convert, a guest) opens it.
        _control_opens(watch, 'check', '-f', 'qcow2', image)
    assert repr(target) in message


def test_data_file_name_beyond_the_first_sector_is_named(cli, images):
    # An unknown extension pushes the data-file name past byte 512, where
    # oslo's header region ends; qemu still finds and opens it.
    target = str(images / 'canary.data')
    image = hostile.qcow2_with_data_file(images, 'pushed.qcow2', target)
    hostile.qcow2_push_extensions(image)
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, code='data-file')
        assert watch.opened() == []
        _control_opens(watch, 'check', '-f', 'qcow2', image)
    assert repr(target) in message


def test_unknown_incompatible_features_are_refused(cli, conf, images):
    image = hostile.qcow2(images, 'future.qcow2')
    for bits in (1 << 5, 1 << 17, 1 << 40, 1 << 63):
        hostile.patch(image, 72, '>Q', bits)
        message = api_refused(conf, image, 'qcow2',
                              code='qcow2-unknown-features')
        assert '0x%x' % bits in message
        # qemu-img agrees that it cannot read such an image.
        assert hostile.qemu_img('info', '-f', 'qcow2', image).returncode
    refused(cli, image, code='qcow2-unknown-features')


def test_qcow2_version_other_than_2_or_3_is_refused(cli, conf, images):
    image = hostile.qcow2(images, 'version.qcow2')
    for version in (0, 1, 4, 0xffffffff):
        hostile.patch(image, 4, '>I', version)
        message = api_refused(conf, image, code='qcow2-version')
        assert 'version %d' % version in message
    refused(cli, image, '--disk-format', 'qcow2', code='qcow2-version')


# VMDK extents and descriptors --------------------------------------------

@pytest.mark.parametrize('subformat, extent_suffixes', [
    ('monolithicFlat', ['-flat.vmdk']),
    ('twoGbMaxExtentFlat', ['-f001.vmdk']),
    ('twoGbMaxExtentSparse', ['-s001.vmdk']),
])
def test_vmdk_with_extent_files_is_refused_and_extents_never_opened(
        cli, images, subformat, extent_suffixes):
    image = imagebuilder.vmdk(images, 'split.vmdk', subformat, 'lsilogic',
                              MiB)
    extents = [str(images / ('split' + s)) for s in extent_suffixes]
    with canary.FileCanary(*extents) as watch:
        message = refused(cli, image, '--disk-format', 'vmdk',
                          code='vmdk-external-extent')
        assert watch.opened() == []
        _control_opens(watch, 'info', '-f', 'vmdk', image)
    for extent in extents:
        assert os.path.basename(extent) in message


@pytest.mark.parametrize('name_of', [
    pytest.param(lambda d: str(d / 'canary.raw'), id='absolute'),
    pytest.param(lambda d: 'canary.raw', id='relative'),
    pytest.param(lambda d: '../canary.raw', id='parent-dir'),
])
def test_vmdk_descriptor_file_naming_a_canary(cli, images, name_of):
    home = images / 'sub' if name_of(images).startswith('..') else images
    home.mkdir(exist_ok=True)
    target = hostile.raw_file(images, 'canary.raw')
    name = name_of(images)
    image = hostile.vmdk_descriptor_file(home, 'desc.vmdk',
                                         ['RW 2048 FLAT "%s" 0' % name])
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, code='vmdk-external-extent')
        assert watch.opened() == []
        _control_opens(watch, 'info', '-f', 'vmdk', image)
    assert repr(name) in message


def test_vmdk_descriptor_file_naming_etc(cli, images):
    image = hostile.vmdk_descriptor_file(
        images, 'shadow.vmdk', ['RW 2048 FLAT "/etc/shadow" 0'])
    message = refused(cli, image, '--disk-format', 'vmdk',
                      code='vmdk-external-extent')
    assert "'/etc/shadow'" in message


def test_sparse_vmdk_with_a_second_extent(cli, images):
    target = hostile.raw_file(images, 'canary.raw')
    descriptor = hostile.sparse_descriptor(
        ['RW 2048 SPARSE "sparse.vmdk"', 'RW 2048 FLAT "canary.raw" 0'])
    image = hostile.vmdk_sparse(images, 'sparse.vmdk', descriptor)
    message = refused(cli, image, code='vmdk-external-extent')
    assert "FLAT 'canary.raw'" in message
    assert os.path.exists(target)


def test_sparse_vmdk_with_capacity_zero_redirects_to_extents(cli, images):
    # With capacity 0, qemu reads the embedded descriptor as a descriptor
    # file and opens every extent it names.
    target = hostile.raw_file(images, 'canary.raw')
    descriptor = hostile.sparse_descriptor(['RW 2048 FLAT "canary.raw" 0'],
                                           create_type='monolithicFlat')
    image = hostile.vmdk_sparse(images, 'zero.vmdk', descriptor, capacity=0)
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'vmdk',
                          code='vmdk-external-extent')
        assert watch.opened() == []
        _control_opens(watch, 'info', '-f', 'vmdk', image)
    assert "'canary.raw'" in message


@pytest.mark.parametrize('name', ['/etc/passwd', '../other.vmdk'])
def test_sparse_vmdk_extent_naming_a_path(conf, images, name):
    descriptor = hostile.sparse_descriptor(['RW 2048 SPARSE "%s"' % name])
    image = hostile.vmdk_sparse(images, 'path.vmdk', descriptor)
    message = api_refused(conf, image, code='vmdk-external-extent')
    assert repr(name) in message


@pytest.mark.parametrize('hint_line', [
    'parentFileNameHint="%s"',
    '# a comment qemu still reads: parentFileNameHint="%s"'])
def test_vmdk_parent_file_is_refused_and_never_opened(cli, images,
                                                      hint_line):
    target = str(images / 'canary.vmdk')
    imagebuilder.vmdk(images, 'canary.vmdk', 'monolithicSparse', 'ide', MiB)
    descriptor = hostile.sparse_descriptor(
        ['RW 2048 SPARSE "child.vmdk"'], extra=hint_line % target + '\n')
    image = hostile.vmdk_sparse(images, 'child.vmdk', descriptor)
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'vmdk',
                          code='backing-file')
        assert watch.opened() == []
        _control_opens(watch, 'info', '--backing-chain', '-f', 'vmdk', image)
    assert repr(target) in message


@pytest.mark.parametrize('field, value, words', [
    # Descriptor offset (sectors) beyond the end of the file.
    (28, 1 << 40, 'past the end of the'),
    # Descriptor at sector 0: the binary header itself.
    (28, 0, 'sector 0'),
    # A descriptor size asking for a huge allocation.
    (36, 1 << 50, 'must be between'),
    # A descriptor size that runs past the end of a complete file.
    (36, 2000, 'runs past the end'),
])
def test_vmdk_descriptor_outside_the_file_is_refused(conf, images, field,
                                                     value, words):
    image = imagebuilder.vmdk(images, 'desc.vmdk', 'monolithicSparse',
                              'lsilogic', MiB)
    hostile.patch(image, field, '<Q', value)
    message = api_refused(conf, image, 'vmdk',
                          code='vmdk-descriptor-invalid')
    assert words in message
    assert str(value) in message


def test_vmdk_descriptor_outside_the_file_through_the_cli(cli, images):
    image = imagebuilder.vmdk(images, 'desc.vmdk', 'monolithicSparse',
                              'lsilogic', MiB)
    hostile.patch(image, 28, '<Q', 1 << 40)
    message = refused(cli, image, code='vmdk-descriptor-invalid')
    assert 'sector %d' % (1 << 40) in message


def test_vmdk3_cowd_extent_is_refused(conf, images):
    image = imagebuilder.vmdk(images, 'cowd.vmdk', 'monolithicSparse',
                              'lsilogic', MiB)
    imagebuilder.write_data(image, 0, b'COWD')
    api_refused(conf, image, 'vmdk', code='vmdk-subformat-not-allowed')


def test_vmdk_descriptor_line_not_understood_is_named(conf, images):
    descriptor = hostile.sparse_descriptor(
        ['RW 2048 SPARSE "odd.vmdk"'], extra='include "/etc/passwd"\n')
    image = hostile.vmdk_sparse(images, 'odd.vmdk', descriptor)
    message = api_refused(conf, image, 'vmdk',
                          code='vmdk-descriptor-invalid')
    assert 'include "/etc/passwd"' in message


def test_differencing_vhd_is_refused_naming_its_parent(cli, images):
    parent = str(images / 'parent.vhd')
    image = hostile.vhd_differencing(images, 'child.vhd', parent)
    message = refused(cli, image, '--disk-format', 'vhd',
                      code='backing-file')
    assert repr(parent) in message


# Format lies ---------------------------------------------------------------

@pytest.fixture(scope='module')
def made(tmp_path_factory):
    """make(directory, name, disk_format, options): a 1 MiB image.

    Images are built once per module and copied: a LUKS image costs
    qemu-img seconds of key derivation.
    """
    cache = tmp_path_factory.mktemp('made')
    built = {}

    def make(directory, name, disk_format, options=None):
        if disk_format == 'luks':
            # A fast key derivation: these tests are not about LUKS.
            options = dict(options or {}, **{'iter-time': 10})
        key = (disk_format, tuple(sorted((options or {}).items())))
        if key not in built:
            built[key] = imagebuilder.create(cache, 'image-%d' % len(built),
                                             disk_format, MiB, options)
        path = str(directory / name)
        shutil.copyfile(built[key], path)
        return path
    return make


@pytest.mark.parametrize('disk_format, options', [
    ('qcow2', None), ('vmdk', {'subformat': 'streamOptimized'}),
    ('vhd', None), ('vhd', {'subformat': 'fixed'}), ('vhdx', None),
    ('vdi', None), ('luks', None), ('qed', None), ('ploop', None)])
def test_format_declared_as_raw_is_refused(conf, images, made, disk_format,
                                           options):
    image = made(images, 'lie', disk_format, options)
    message = api_refused(conf, image, 'raw', code='format-mismatch')
    assert 'declared raw' in message
    assert disk_format in message


def test_format_declared_as_raw_through_the_cli(cli, images):
    image = hostile.qcow2(images, 'lie.qcow2')
    message = refused(cli, image, '--disk-format', 'raw',
                      code='format-mismatch')
    assert message == 'declared raw but the header is qcow2'


@pytest.mark.parametrize('content', ['data', 'zeros', 'gpt'])
def test_raw_declared_as_a_format_is_refused(cli, conf, images, content):
    if content == 'gpt':
        image = imagebuilder.partitioned_raw(images, 'disk.raw', MiB)
    else:
        data = (imagebuilder.formatless_bytes(MiB) if content == 'data'
                else b'')
        image = hostile.raw_file(images, 'disk.raw', MiB, data)
    for declared in ('qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso'):
        message = api_refused(conf, image, declared, code='format-mismatch')
        assert message == 'declared %s but the header is raw' % declared
    refused(cli, image, '--disk-format', 'qcow2', code='format-mismatch')


def test_truncated_qcow2_declared_raw_names_the_magic(cli, images):
    image = hostile.qcow2(images, 'cut.qcow2')
    os.truncate(image, 60)
    message = refused(cli, image, '--disk-format', 'raw',
                      code='format-mismatch')
    assert 'qcow2 magic' in message


def test_iso_with_a_qcow2_header_is_ambiguous(cli, conf, images):
    target = hostile.raw_file(images, 'canary.raw')
    backed = hostile.qcow2_backed_by(images, 'hidden.qcow2', target)
    image = hostile.iso_with_header_of(images, 'hybrid.iso', backed)
    with canary.FileCanary(target) as watch:
        message = refused(cli, image, '--disk-format', 'iso',
                          code='format-ambiguous')
        for declared in ('qcow2', None):
            assert api_refused(conf, image, declared,
                               code='format-ambiguous') == message
        assert watch.opened() == []
        # qemu-img probing reads the ISO as qcow2 and follows its backing
        # file: why a file must match one format only.
        probe = hostile.qemu_img('info', '--output=json', image)
        assert json.loads(probe.stdout)['format'] == 'qcow2'
        _control_opens(watch, 'info', '--backing-chain', image)
    assert 'iso' in message and 'qcow2' in message


def test_qcow2_with_a_fixed_vhd_footer_is_ambiguous(cli, images):
    image = hostile.qcow2(images, 'both.qcow2')
    vhd = imagebuilder.create(images, 'fixed.vhd', 'vhd', MiB,
                              {'subformat': 'fixed'})
    with open(vhd, 'rb') as f:
        f.seek(-512, os.SEEK_END)
        footer = f.read()
    with open(image, 'ab') as f:
        f.write(footer)
    message = refused(cli, image, code='format-ambiguous')
    assert 'qcow2' in message and 'vhd' in message


# Formats not allowed by default -----------------------------------------

@pytest.mark.parametrize('disk_format, declared', [
    ('qed', None), ('qed', 'qed'), ('luks', None), ('luks', 'luks'),
    ('ploop', None), ('ploop', 'ploop'), ('ploop', 'parallels')])
def test_format_not_allowed_by_default(conf, images, made, disk_format,
                                       declared):
    image = made(images, 'image', disk_format)
    message = api_refused(conf, image, declared, code='format-not-allowed')
    assert disk_format in message


def test_format_not_allowed_through_the_cli(cli, images):
    image = imagebuilder.create(images, 'image.qed', 'qed', MiB)
    message = refused(cli, image, code='format-not-allowed')
    assert 'qed' in message


def test_allowed_formats_is_configuration(cli, images):
    image = imagebuilder.create(images, 'image.hds', 'ploop', MiB)
    cli.set(opts.FORMATS_GROUP, 'allowed_formats', ['raw', 'ploop'])
    out = inspected(cli, image)
    assert out['properties']['disk_format'] == 'ploop'
    qcow2 = hostile.qcow2(images, 'now-refused.qcow2')
    refused(cli, qcow2, code='format-not-allowed', before_copy=False)


# Resource attacks -----------------------------------------------------------

def test_absurd_virtual_size_is_refused_before_any_copy(cli, images):
    image = hostile.qcow2(images, 'huge.qcow2', size=5 * 1024 ** 4)
    message = refused(cli, image, code='virtual-size-too-large')
    assert str(5 * 1024 ** 4) in message


@pytest.mark.parametrize('disk_format, options', [
    ('qcow2', None), ('vmdk', {'subformat': 'streamOptimized'}),
    ('vmdk', None), ('vhd', None), ('vhdx', None), ('vdi', None),
    ('raw', None)])
def test_virtual_size_above_the_configured_maximum(conf, images,
                                                   disk_format, options):
    conf.set_override('max_virtual_size_gb', 1, opts.FORMATS_GROUP)
    image = imagebuilder.create(images, 'big', disk_format, 2 * 1024 ** 3,
                                options)
    message = api_refused(conf, image, code='virtual-size-too-large')
    assert 'above the 1 GiB maximum' in message


@pytest.mark.parametrize('make, entries', [
    (hostile.vdi_with_block_map, 0x1fffff80),
    (hostile.vhd_with_table, 0x1fffffff)], ids=['vdi', 'vhd'])
def test_table_too_large_for_memory_stops_at_the_cap(cli, images, make,
                                                     entries):
    # The table (entries * 4 bytes, 2 GiB) lies inside a sparse file, so
    # no header check refuses it: qemu-img tries to allocate it, and the
    # 1 GiB address-space cap (the default) stops it.
    image = make(images, 'table', entries)
    rc, out = cli.inspect_json(image)
    assert (rc, out['error']['code']) == (4, 'qemu-img-limit-exceeded'), out
    assert 'address-space cap of %d' % (1 << 30) in out['error']['message']
    assert config.workspace_leftovers(cli.workspace) == []


def test_table_too_large_for_cpu_stops_at_the_cap(cli, images):
    # With memory to spare, zeroing the same 2 GiB table costs seconds of
    # CPU: the CPU-time cap ends it.
    cli.set(opts.QEMU_IMG_GROUP, 'address_space', 8 * 1024 ** 3)
    cli.set(opts.QEMU_IMG_GROUP, 'cpu_time', 1)
    image = hostile.vdi_with_block_map(images, 'cpu.vdi', 0x1fffff80)
    rc, out = cli.inspect_json(image)
    assert (rc, out['error']['code']) == (4, 'qemu-img-limit-exceeded'), out
    assert 'CPU-time cap of 1 s' in out['error']['message']


# Broken images ---------------------------------------------------------------

def test_empty_file(cli, images):
    image = hostile.raw_file(images, 'empty', 0)
    refused(cli, image, '--disk-format', 'qcow2', code='image-empty',
            exit_code=4)
    refused(cli, image, code='image-empty', exit_code=4)


@pytest.mark.parametrize('disk_format, options, keep', [
    ('qcow2', None, 50), ('qcow2', None, 511),
    ('vmdk', None, 40), ('vmdk', None, 1000),
    ('vhd', None, 300), ('vhdx', None, 70 * 1024), ('vdi', None, 400)])
@pytest.mark.parametrize('declared', [True, False],
                         ids=['declared', 'detected'])
def test_truncated_header(conf, images, disk_format, options, keep,
                          declared):
    image = imagebuilder.create(images, 'cut', disk_format, MiB, options)
    os.truncate(image, keep)
    message = api_refused(conf, image, disk_format if declared else None,
                          code='image-truncated', exit_code=4)
    assert str(keep) in message


@pytest.mark.parametrize('disk_format, options, keep, table', [
    ('qcow2', None, 4096, 'L1 table'),
    ('qcow2', {'compat': '0.10'}, 65536, 'L1 table'),
    ('vmdk', None, 32768, 'grain_offset'),
    ('vhd', None, 1024, 'dynamic header'),
    ('vhd', None, 1538, 'allocation table'),
    ('vdi', None, 514, 'block map')])
def test_truncated_table(conf, images, disk_format, options, keep, table):
    image = imagebuilder.create(images, 'cut', disk_format, MiB, options)
    os.truncate(image, keep)
    message = api_refused(conf, image, code='image-truncated', exit_code=4)
    assert table in message


def test_truncated_image_through_the_cli(cli, images):
    image = hostile.qcow2(images, 'cut.qcow2')
    os.truncate(image, 4096)
    message = refused(cli, image, code='image-truncated', exit_code=4)
    assert 'L1 table' in message


def test_truncated_table_found_by_qemu_img(cli, images):
    # The dynamic VHD's allocation table points at a data block past the
    # end: only qemu-img reads the table, and says the image was cut.
    data = hostile.raw_file(images, 'data.raw', 4 * MiB, os.urandom(4 * MiB))
    image = str(images / 'cut.vhd')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'vpc', data,
                    image], check=True)
    os.truncate(image, os.path.getsize(image) - MiB)
    rc, out = cli.inspect_json(image)
    assert (rc, out['error']['code']) == (4, 'image-truncated'), out
    assert 'qemu-img' in out['error']['message']


@pytest.mark.parametrize('patch, words', [
    # cluster_bits 30: qemu allows 9..21.
    ((20, '>I', 30), 'cluster_bits'),
    # Encrypted with LUKS but no crypto header: qemu-img 7.2 crashes.
    ((32, '>I', 2), 'no crypto header'),
    ((32, '>I', 7), 'encryption method 7'),
])
def test_corrupt_qcow2_header(conf, images, patch, words):
    image = hostile.qcow2(images, 'bad.qcow2')
    hostile.patch(image, *patch)
    message = api_refused(conf, image, code='image-corrupt', exit_code=4)
    assert words in message


@pytest.mark.parametrize('disk_format, patch, words', [
    # A refcount table offset that is not cluster-aligned.
    ('qcow2', (48, '>Q', 65536 + 8), 'offset invalid'),
    # A VHD footer whose checksum does not add up.
    ('vhd', (64, '>I', 0x12345678), 'checksum'),
])
def test_corrupt_table_found_by_qemu_img(cli, images, disk_format, patch,
                                         words):
    image = imagebuilder.create(images, 'bad', disk_format, MiB)
    hostile.patch(image, *patch)
    rc, out = cli.inspect_json(image, '--disk-format', disk_format)
    assert (rc, out['error']['code']) == (4, 'image-corrupt'), out
    assert words in out['error']['message']
