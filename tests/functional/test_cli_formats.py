"""Every format Glance takes, made by the real qemu-img, through the CLI.

Each test runs the real ``qimg-introspect inspect -f json`` and checks the
properties against what the image was made with.
"""

import os

import pytest

from qimgintrospect import opts
from testkit import config
from testkit import imagebuilder

MiB = imagebuilder.MiB
SIZE = 64 * MiB

VMDK_DISKTYPES = {'monolithicSparse': 'sparse',
                  'streamOptimized': 'streamOptimized'}
VMDK_ADAPTERTYPES = {'ide': 'ide', 'buslogic': 'busLogic',
                     'lsilogic': 'lsiLogic'}
# Subformats whose data lives in files next to the descriptor.
VMDK_EXTERNAL = {'monolithicFlat': 'monolithicFlat-flat.vmdk',
                 'twoGbMaxExtentSparse': 'twoGbMaxExtentSparse-s001.vmdk',
                 'twoGbMaxExtentFlat': 'twoGbMaxExtentFlat-f001.vmdk'}


def _inspect_ok(cli, path, *args):
    code, out = cli.inspect_json(path, *args)
    assert code == 0, out
    assert set(out) == {'properties', 'details', 'warnings'}
    assert config.workspace_leftovers(cli.workspace) == []
    return out


@pytest.mark.parametrize('disk_format, qemu_options, details', [
    ('raw', None, {}),
    ('qcow2', {'compat': '0.10'}, {'qcow2_compat': '0.10',
                                   'cluster_size': 65536}),
    ('qcow2', {'compat': '1.1', 'cluster_size': '2M'},
     {'qcow2_compat': '1.1', 'cluster_size': 2 * MiB}),
    ('vhdx', None, {}),
    ('vdi', None, {}),
])
def test_simple_formats(cli, tmp_path, disk_format, qemu_options, details):
    image = imagebuilder.create(tmp_path, 'image', disk_format, SIZE,
                                qemu_options)
    out = _inspect_ok(cli, image, '--disk-format', disk_format)
    assert out['properties'] == {'disk_format': disk_format,
                                 'virtual_size': SIZE, 'min_disk': 1}
    for key, value in details.items():
        assert out['details'][key] == value
    # The format is detected the same way when it is not declared.
    assert _inspect_ok(cli, image)['properties'] == out['properties']


@pytest.mark.parametrize('subformat', ['dynamic', 'fixed'])
def test_vhd(cli, tmp_path, subformat):
    image = imagebuilder.create(tmp_path, 'image.vhd', 'vhd', SIZE,
                                {'subformat': subformat})
    out = _inspect_ok(cli, image, '--disk-format', 'vhd')
    assert out['properties']['disk_format'] == 'vhd'
    # VHD rounds the size up to its CHS geometry.
    assert SIZE <= out['properties']['virtual_size'] < SIZE + MiB
    assert out['details']['vhd_subformat'] == subformat
    # qemu's name for the format is accepted as the declared one.
    assert _inspect_ok(cli, image, '--disk-format', 'vpc')['properties'][
        'disk_format'] == 'vhd'


def test_ploop_when_allowed(cli, tmp_path):
    image = imagebuilder.create(tmp_path, 'image.hds', 'ploop', SIZE)
    code, out = cli.inspect_json(image, '--disk-format', 'ploop')
    assert code == 3 and out['error']['code'] == 'format-not-allowed'
    cli.set(opts.FORMATS_GROUP, 'allowed_formats', ['raw', 'ploop'])
    out = _inspect_ok(cli, image, '--disk-format', 'ploop')
    assert out['properties'] == {'disk_format': 'ploop',
                                 'virtual_size': SIZE, 'min_disk': 1}


def test_iso(cli, tmp_path):
    image = imagebuilder.iso(tmp_path)
    out = _inspect_ok(cli, image, '--disk-format', 'iso')
    assert out['properties']['disk_format'] == 'iso'
    assert out['properties']['virtual_size'] == os.path.getsize(image)


@pytest.mark.parametrize('label', ['gpt', 'dos'])
def test_partitioned_raw_is_raw(cli, tmp_path, label):
    image = imagebuilder.partitioned_raw(tmp_path, label=label)
    out = _inspect_ok(cli, image, '--disk-format', 'raw')
    assert out['properties'] == {'disk_format': 'raw', 'virtual_size': SIZE,
                                 'min_disk': 1}


@pytest.mark.parametrize('adapter', sorted(VMDK_ADAPTERTYPES))
@pytest.mark.parametrize('subformat', sorted(VMDK_DISKTYPES))
def test_vmdk_single_file(cli, tmp_path, subformat, adapter):
    image = imagebuilder.vmdk(tmp_path, 'disk.vmdk', subformat, adapter)
    out = _inspect_ok(cli, image, '--disk-format', 'vmdk')
    assert out['properties'] == {
        'disk_format': 'vmdk',
        'virtual_size': SIZE,
        'min_disk': 1,
        'vmware_disktype': VMDK_DISKTYPES[subformat],
        'vmware_adaptertype': VMDK_ADAPTERTYPES[adapter],
    }
    assert out['details']['vmdk_create_type'] == subformat
    assert out['warnings'] == []


def test_vmdk_adapter_without_glance_name(cli, tmp_path):
    image = imagebuilder.vmdk(tmp_path, 'disk.vmdk', 'streamOptimized',
                              'legacyESX')
    out = _inspect_ok(cli, image, '--disk-format', 'vmdk')
    assert 'vmware_adaptertype' not in out['properties']
    assert out['properties']['vmware_disktype'] == 'streamOptimized'
    assert any('legacyESX' in w for w in out['warnings'])


@pytest.mark.parametrize('subformat', sorted(VMDK_EXTERNAL))
def test_vmdk_with_external_extents_is_refused(cli, tmp_path, subformat):
    image = imagebuilder.vmdk(tmp_path, subformat + '.vmdk', subformat)
    code, out = cli.inspect_json(image, '--disk-format', 'vmdk')
    assert code == 3
    assert out['error']['code'] == 'vmdk-external-extent'
    assert VMDK_EXTERNAL[subformat] in out['error']['message']


def test_qcow2_declared_raw_is_refused(cli, tmp_path):
    image = imagebuilder.create(tmp_path, 'a.qcow2', 'qcow2', SIZE)
    code, out = cli.inspect_json(image, '--disk-format', 'raw')
    assert code == 3
    assert out == {'error': {
        'code': 'format-mismatch',
        'message': 'declared raw but the header is qcow2'}}
    assert config.workspace_leftovers(cli.workspace) == []


def test_random_bytes_declared_qcow2_are_refused(cli, tmp_path):
    image = tmp_path / 'random.bin'
    image.write_bytes(os.urandom(1 * MiB))
    code, out = cli.inspect_json(image, '--disk-format', 'qcow2')
    assert code == 3
    assert out['error']['code'] == 'format-mismatch'
    assert 'declared qcow2' in out['error']['message']


def test_missing_file_is_a_usage_error(cli, tmp_path):
    code, out = cli.inspect_json(tmp_path / 'nothing.qcow2')
    assert code == 2
    assert out['error']['code'] == 'file-not-found'


def test_unknown_format_name_is_a_usage_error(cli, tmp_path):
    image = imagebuilder.create(tmp_path, 'a.qcow2', 'qcow2', SIZE)
    code, out = cli.inspect_json(image, '--disk-format', 'floppy')
    assert code == 2
    assert out['error']['code'] == 'unknown-format-name'


def test_bad_arguments_exit_2(cli):
    proc = cli.run('inspect')
    assert proc.returncode == 2
    assert 'PATH' in proc.stderr


def test_table_output_is_for_people(cli, tmp_path):
    image = imagebuilder.vmdk(tmp_path, 'disk.vmdk', 'streamOptimized',
                              'buslogic')
    proc = cli.run('inspect', image)
    assert proc.returncode == 0
    assert 'vmware_adaptertype=busLogic' in proc.stdout
    assert proc.stdout.lstrip().startswith('+')


def test_error_without_json_goes_to_stderr(cli, tmp_path):
    image = imagebuilder.create(tmp_path, 'a.qcow2', 'qcow2', SIZE)
    proc = cli.run('inspect', image, '--disk-format', 'vmdk')
    assert proc.returncode == 3
    assert proc.stdout == ''
    assert proc.stderr.startswith('error [format-mismatch]: ')


def test_help_documents_exit_codes(cli):
    proc = cli.run('help', 'inspect')
    assert proc.returncode == 0
    for line in ('0: inspected', '2: usage error', '3: image refused',
                 '4: inspection failed'):
        assert line in proc.stdout
