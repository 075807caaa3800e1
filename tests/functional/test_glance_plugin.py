"""The image-import plugin inside a real glance-api (glance-direct imports).

Every image is built here with qemu-img; Glance runs the plugin from the
entry point this package installs, on the data it staged itself.
"""

import subprocess

import pytest

from testkit import config
from testkit import glanceapi
from testkit import imagebuilder
from tests.functional import glance_server

MiB = 1024 * 1024


@pytest.fixture(scope='module')
def tenant(glance_server):
    return glance_server.client(glanceapi.new_project_id())


def test_vmdk_import_gets_vmware_properties(glance_server, tenant, tmp_path):
    path = imagebuilder.vmdk(tmp_path, 'bus.vmdk',
                             subformat='streamOptimized', adapter='buslogic')

    image, task = glance_server.import_image(tenant, path, 'vmdk')

    assert task['status'] == 'success', task['message']
    assert image['status'] == 'active'
    assert image['vmware_disktype'] == 'streamOptimized'
    assert image['vmware_adaptertype'] == 'busLogic'
    assert image['virtual_size'] == 64 * MiB
    # Set through the image repository: the import actions cannot.
    assert image['min_disk'] == 1
    assert config.workspace_leftovers(glance_server.workspace) == []


def test_backing_file_qcow2_import_fails_with_the_reason(glance_server,
                                                         tenant, tmp_path):
    path = str(tmp_path / 'hostile.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b',
                    '/etc/hostname', '-F', 'raw', path, '64M'], check=True)

    image, task = glance_server.import_image(tenant, path, 'qcow2')

    assert task['status'] == 'failure'
    assert task['message'].startswith('qimgintrospect: backing-file: ')
    assert '/etc/hostname' in task['message']
    # Never stored: the plugin ran before Glance copied the data to a store.
    assert image['status'] == 'importing'
    assert not image.get('stores')
    assert config.workspace_leftovers(glance_server.workspace) == []


def test_format_mismatch_fails_the_import(glance_server, tenant, tmp_path):
    path = imagebuilder.create(tmp_path, 'really.qcow2', 'qcow2')

    image, task = glance_server.import_image(tenant, path, 'vmdk')

    assert task['status'] == 'failure'
    assert task['message'].startswith('qimgintrospect: format-mismatch: ')
    assert image['status'] != 'active'


def test_uploader_value_is_kept_and_the_conflict_logged(glance_server,
                                                        tenant, tmp_path):
    path = imagebuilder.vmdk(tmp_path, 'lsi.vmdk', adapter='lsilogic')

    image, task = glance_server.import_image(tenant, path, 'vmdk',
                                             vmware_adaptertype='ide')

    assert task['status'] == 'success', task['message']
    assert image['vmware_adaptertype'] == 'ide'
    assert image['vmware_disktype'] == 'sparse'
    assert ('the uploader set vmware_adaptertype=ide but the image says '
            'lsiLogic' in glance_server.log_text())


def test_data_that_is_not_a_disk_image_is_left_alone(glance_server, tenant,
                                                     tmp_path):
    path = tmp_path / 'kernel'
    path.write_bytes(b'\x7fELF' + bytes(4096))

    image, task = glance_server.import_image(tenant, str(path), 'aki')

    assert task['status'] == 'success', task['message']
    assert image['status'] == 'active'
    assert 'qimgintrospect_warning' not in image


# A second glance-api whose plugin only warns and replaces the uploader's
# values, with a VDI-less allowed_formats and a 1 MiB workspace quota. Guest
# inspection is enabled for the core, on a libguestfs backend that cannot
# start, and must fail the inspection if it runs: the plugin turns it off
# for itself ([introspection_import] guest_inspection defaults to false).
@pytest.fixture(scope='module')
def lenient_server(tmp_path_factory):
    options = {
        'introspection_import': {
            'on_refusal': 'warn',
            'overwrite_uploader_properties': 'true',
        },
        'introspection_formats': {
            'allowed_formats': 'raw,qcow2,vmdk',
        },
        'introspection_workspace': {'quota_mb': 1},
        'introspection_guest': {
            'enabled': 'true',
            'fail_if_unavailable': 'true',
            'backend': 'no-such-backend',
        },
    }
    with glance_server.serve(tmp_path_factory.mktemp('glance-lenient'),
                             plugin_options=options) as server:
        yield server


def test_warn_policy_imports_a_refused_image_with_a_warning(lenient_server,
                                                            tmp_path):
    client = lenient_server.client(glanceapi.new_project_id())
    path = imagebuilder.create(tmp_path, 'disk.vdi', 'vdi')

    image, task = lenient_server.import_image(client, path, 'vdi')

    assert task['status'] == 'success', task['message']
    assert image['status'] == 'active'
    assert image['qimgintrospect_warning'].startswith('format-not-allowed: ')
    assert config.workspace_leftovers(lenient_server.workspace) == []


def test_overwrite_policy_replaces_the_uploader_value(lenient_server,
                                                      tmp_path):
    client = lenient_server.client(glanceapi.new_project_id())
    path = imagebuilder.vmdk(tmp_path, 'bus.vmdk', adapter='buslogic')

    image, task = lenient_server.import_image(client, path, 'vmdk',
                                              vmware_adaptertype='ide')

    assert task['status'] == 'success', task['message']
    assert image['vmware_adaptertype'] == 'busLogic'


def test_guest_inspection_is_off_for_the_plugin(lenient_server, tmp_path):
    client = lenient_server.client(glanceapi.new_project_id())
    path = imagebuilder.create(tmp_path, 'disk.qcow2', 'qcow2')

    image, task = lenient_server.import_image(client, path, 'qcow2')

    assert task['status'] == 'success', task['message']
    assert 'qimgintrospect_warning' not in image
    assert 'os_distro' not in image


def test_workspace_quota_holds_inside_glance(lenient_server, tmp_path):
    client = lenient_server.client(glanceapi.new_project_id())
    path = imagebuilder.sparse_raw(tmp_path, 'big.raw', 8 * MiB, 4 * MiB)

    image, task = lenient_server.import_image(client, path, 'raw')

    # on_failure stays "fail" on this server: the import fails, and the
    # copy that did not fit was never made.
    assert task['status'] == 'failure'
    assert task['message'].startswith(
        'qimgintrospect: workspace-quota-exceeded: ')
    assert image['status'] != 'active'
    assert config.workspace_leftovers(lenient_server.workspace) == []
