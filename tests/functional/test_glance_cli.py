"""``qimg-introspect glance IMAGE_ID...`` against a real glance-api.

The images are uploaded with PUT (no import plugin runs), so Glance holds
whatever properties the test gives them; the CLI downloads each one into
its workspace, inspects it and compares.
"""

import json
import os
import socket

import pytest

from testkit import config
from testkit import glanceapi
from testkit import imagebuilder

MiB = 1024 * 1024


@pytest.fixture(scope='module')
def project():
    return glanceapi.new_project_id()


@pytest.fixture(scope='module')
def tenant(glance_server, project):
    return glance_server.client(project)


def _glance(cli, server, project, *args, env=None):
    """Run ``glance ARGS -f json``; return (exit code, rows or error)."""
    proc = cli.run('glance', *args, '-f', 'json',
                   *glanceapi.auth_args(server.url, project), env=env)
    assert 'Traceback' not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _by_property(rows):
    return {row['property']: row for row in rows}


@pytest.fixture
def wrong_vmdk(tenant, tmp_path):
    """A busLogic streamOptimized VMDK that Glance says is ide."""
    path = imagebuilder.vmdk(tmp_path, 'bus.vmdk',
                             subformat='streamOptimized', adapter='buslogic')
    return glanceapi.upload_image(tenant, path, 'vmdk',
                                  vmware_adaptertype='ide')


def test_properties_side_by_side_without_changes(cli, glance_server,
                                                 project, tenant, wrong_vmdk):
    code, rows = _glance(cli, glance_server, project, wrong_vmdk['id'])

    assert code == 0
    props = _by_property(rows)
    assert props['disk_format'] == dict(
        props['disk_format'], glance='vmdk', image='vmdk',
        difference='same', action='')
    assert props['virtual_size']['image'] == 64 * MiB
    assert props['vmware_adaptertype'] == dict(
        props['vmware_adaptertype'], glance='ide', image='busLogic',
        difference='wrong', action='would set')
    assert props['vmware_disktype'] == dict(
        props['vmware_disktype'], glance=None, image='streamOptimized',
        difference='missing', action='would set')
    assert {row['owner'] for row in rows} == {project}
    after = tenant.images.get(wrong_vmdk['id'])
    assert after['vmware_adaptertype'] == 'ide'
    assert 'vmware_disktype' not in after
    assert config.workspace_leftovers(cli.workspace) == []


def test_apply_writes_missing_and_wrong(cli, glance_server, project, tenant,
                                        wrong_vmdk):
    code, rows = _glance(cli, glance_server, project, wrong_vmdk['id'],
                         '--apply')

    assert code == 0
    assert _by_property(rows)['vmware_adaptertype']['action'] == 'set'
    after = tenant.images.get(wrong_vmdk['id'])
    assert after['vmware_adaptertype'] == 'busLogic'
    assert after['vmware_disktype'] == 'streamOptimized'
    # A core attribute Glance lets change on an active image.
    assert _by_property(rows)['min_disk'] == dict(
        _by_property(rows)['min_disk'], glance=0, image=1,
        difference='missing', action='set')
    assert after['min_disk'] == 1


def test_only_missing_keeps_existing_values(cli, glance_server, project,
                                            tenant, wrong_vmdk):
    code, rows = _glance(cli, glance_server, project, wrong_vmdk['id'],
                         '--apply', '--only-missing')

    assert code == 0
    assert _by_property(rows)['vmware_adaptertype']['action'] == 'kept'
    after = tenant.images.get(wrong_vmdk['id'])
    assert after['vmware_adaptertype'] == 'ide'
    assert after['vmware_disktype'] == 'streamOptimized'


def test_stale_property_removed_only_when_asked(cli, glance_server, project,
                                                tenant, tmp_path):
    path = imagebuilder.create(tmp_path, 'plain.qcow2', 'qcow2')
    image = glanceapi.upload_image(tenant, path, 'qcow2',
                                   vmware_disktype='sparse')

    code, rows = _glance(cli, glance_server, project, image['id'], '--apply')
    assert code == 0
    assert _by_property(rows)['vmware_disktype'] == dict(
        _by_property(rows)['vmware_disktype'], glance='sparse', image=None,
        difference='stale', action='kept')
    assert tenant.images.get(image['id'])['vmware_disktype'] == 'sparse'

    code, rows = _glance(cli, glance_server, project, image['id'], '--apply',
                         '--remove-stale')
    assert code == 0
    assert _by_property(rows)['vmware_disktype']['action'] == 'removed'
    assert 'vmware_disktype' not in tenant.images.get(image['id'])


def test_refused_image_is_a_row_and_exit_3(cli, glance_server, project,
                                           tenant, tmp_path):
    # Glance accepts monolithicSparse; this configuration does not.
    cli.set('introspection_formats', 'vmdk_allowed_types', 'streamOptimized')
    path = imagebuilder.vmdk(tmp_path, 'sparse.vmdk')
    refused = glanceapi.upload_image(tenant, path, 'vmdk')

    code, rows = _glance(cli, glance_server, project, refused['id'],
                         'no-such-image')

    assert code == 3
    assert rows[0]['difference'] == 'refused'
    assert rows[0]['note'].startswith('vmdk-subformat-not-allowed: ')
    assert rows[1] == dict(rows[1], image_id='no-such-image',
                           difference='not-inspected')
    assert rows[1]['note'].startswith('image-not-found: ')
    assert config.workspace_leftovers(cli.workspace) == []


def test_clouds_yaml_and_os_cloud(cli, glance_server, project, wrong_vmdk,
                                  tmp_path):
    clouds = tmp_path / 'clouds.yaml'
    clouds.write_text(
        'clouds:\n'
        '  lab:\n'
        '    auth_type: admin_token\n'
        '    auth:\n'
        '      endpoint: %s\n'
        '      token: "%s"\n' % (glance_server.url, glanceapi.token(project)))
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds))

    proc = cli.run('glance', wrong_vmdk['id'], '-f', 'json', '-c',
                   'property', '-c', 'image', '--os-cloud', 'lab', env=env)

    assert proc.returncode == 0, proc.stderr
    assert {'property': 'vmware_adaptertype', 'image': 'busLogic'} in (
        json.loads(proc.stdout))


def test_os_variables(cli, glance_server, project, wrong_vmdk):
    env = dict(os.environ, OS_AUTH_TYPE='admin_token',
               OS_ENDPOINT=glance_server.url,
               OS_TOKEN=glanceapi.token(project))

    proc = cli.run('glance', wrong_vmdk['id'], '-f', 'value', '-c',
                   'property', env=env)

    assert proc.returncode == 0, proc.stderr
    assert 'vmware_disktype' in proc.stdout.split()


def test_refused_credentials_exit_2(cli, glance_server, wrong_vmdk):
    proc = cli.run('glance', wrong_vmdk['id'], '-f', 'json',
                   '--os-auth-type', 'admin_token',
                   '--os-endpoint', glance_server.url,
                   '--os-token', 'not-a-token')

    assert proc.returncode == 2
    assert json.loads(proc.stdout)['error']['code'] == 'glance-auth-failed'


def test_unreachable_glance_exit_4(cli, project):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        closed = 'http://127.0.0.1:%d' % sock.getsockname()[1]
    proc = cli.run('glance', 'any', '-f', 'json',
                   *glanceapi.auth_args(closed, project))

    assert proc.returncode == 4
    assert json.loads(proc.stdout)['error']['code'] == 'glance-unreachable'
