"""``qimg-introspect audit`` over a real multi-tenant Glance catalogue.

The module has a glance-api of its own, so that it knows every image of
the catalogue: three tenants, each with a VMDK Glance knows nothing about,
a VMDK Glance has a wrong adapter type for, a plain qcow2 and a qcow2 with
a stale vmware_disktype. Images are uploaded with PUT: no plugin fixes
them on the way in.
"""

import csv
import io
import json
import os
import pty
import select
import signal
import subprocess
import time

import pytest

from qimgintrospect.glance import audit
from qimgintrospect.glance import report as report_mod
from qimgintrospect.glance import state as state_mod
from qimgintrospect import workspace
from testkit import config
from testkit import glanceapi
from testkit import guestimages
from testkit import imagebuilder
from tests.functional import glance_server

TENANTS = 3
#: Fixes --apply makes per tenant: two on "bus", two on "lsi", and
#: min_disk on each of the four images.
FIXES = 4 + 4
_POLLS = 600


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    with glance_server.serve(tmp_path_factory.mktemp('glance-audit')) as s:
        yield s


@pytest.fixture(scope='module')
def catalogue(server, tmp_path_factory):
    """{project id: {kind: image id}} for the tenants' images."""
    images = tmp_path_factory.mktemp('audit-images')
    bus = imagebuilder.vmdk(images, 'bus.vmdk', subformat='streamOptimized',
                            adapter='buslogic')
    lsi = imagebuilder.vmdk(images, 'lsi.vmdk', adapter='lsilogic')
    plain = imagebuilder.create(images, 'plain.qcow2', 'qcow2')
    tenants = {}
    for _ in range(TENANTS):
        project = glanceapi.new_project_id()
        client = server.client(project)
        tenants[project] = {
            'bus': glanceapi.upload_image(client, bus, 'vmdk')['id'],
            'lsi': glanceapi.upload_image(client, lsi, 'vmdk',
                                          vmware_adaptertype='ide')['id'],
            'plain': glanceapi.upload_image(client, plain, 'qcow2')['id'],
            'stale': glanceapi.upload_image(client, plain, 'qcow2',
                                            vmware_disktype='sparse')['id'],
        }
    return tenants


@pytest.fixture(scope='module')
def admin(server):
    return server.client(glanceapi.new_project_id())


def _catalogue_size(admin):
    return len(list(admin.images.list(filters={'visibility': 'all',
                                               'status': 'active'})))


def _audit(cli, server, state, *args):
    """Run ``audit -f json`` as an admin; return the decoded report."""
    admin_project = glanceapi.new_project_id()
    proc = cli.run('audit', '-f', 'json', '--state-file', str(state), *args,
                   *glanceapi.auth_args(server.url, admin_project))
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def _rows(report, **match):
    return [row for row in report['differences']
            if all(row[k] == v for k, v in match.items())]


def test_dry_run_finds_missing_wrong_and_stale(cli, server, catalogue,
                                               admin, tmp_path):
    report = _audit(cli, server, tmp_path / 'state.db')

    counts = report['summary']['images']
    assert counts['listed'] == counts['inspected'] == 4 * TENANTS
    assert counts['changed'] == 0
    for project, ids in catalogue.items():
        bus = {row['property']: row for row in _rows(report,
                                                     image_id=ids['bus'])}
        assert bus['vmware_disktype'] == dict(
            bus['vmware_disktype'], owner=project, glance=None,
            image='streamOptimized', difference='missing',
            action='would set')
        assert bus['vmware_adaptertype']['image'] == 'busLogic'
        lsi = {row['property']: row for row in _rows(report,
                                                     image_id=ids['lsi'])}
        assert lsi['vmware_adaptertype'] == dict(
            lsi['vmware_adaptertype'], glance='ide', image='lsiLogic',
            difference='wrong', action='would set')
        assert lsi['vmware_disktype']['image'] == 'sparse'
        # Glance's min_disk is 0 (none) on every image: 1 GiB is needed.
        for image_id in ids.values():
            assert _rows(report, image_id=image_id, property='min_disk') == [
                dict(_rows(report, image_id=image_id,
                           property='min_disk')[0], glance=0, image=1,
                     difference='missing', action='would set')]
        assert _rows(report, image_id=ids['plain']) == _rows(
            report, image_id=ids['plain'], property='min_disk')
        stale = _rows(report, image_id=ids['stale'],
                      property='vmware_disktype')
        assert stale == [dict(
            stale[0], property='vmware_disktype', glance='sparse',
            image=None, difference='stale', action='kept')]
        # Nothing was written.
        image = admin.images.get(ids['lsi'])
        assert image['vmware_adaptertype'] == 'ide'
        assert 'vmware_disktype' not in image
    assert config.workspace_leftovers(cli.workspace) == []


def test_summary_sizes_and_workspace_need(cli, server, catalogue, admin,
                                          tmp_path):
    cli.set('introspection_workspace', 'max_workers', 3)
    report = _audit(cli, server, tmp_path / 'state.db')

    sizes = sorted(image['size'] for image in admin.images.list(
        filters={'visibility': 'all', 'status': 'active'}))
    summary = report['summary']
    assert summary['sizes']['count'] == len(sizes)
    assert summary['sizes']['total'] == sum(sizes)
    assert (summary['sizes']['min'], summary['sizes']['max']) == (
        sizes[0], sizes[-1])
    assert summary['sizes']['buckets'][0] == {'range': '< 100 MiB',
                                              'count': len(sizes)}
    assert summary['workspace']['max_workers'] == 3
    assert summary['workspace']['needed_bytes'] == 2 * sum(sizes[-3:])
    assert summary['workspace']['enough'] is True


def test_apply_fixes_every_tenant_and_a_second_run_skips(
        cli, server, catalogue, admin, tmp_path):
    state = tmp_path / 'state.db'
    report = _audit(cli, server, state, '--apply')

    assert report['summary']['images']['changed'] == 4 * TENANTS
    assert len(_rows(report, action='set')) == FIXES * TENANTS
    for project, ids in catalogue.items():
        # Read back as the owner: the admin's audit fixed the tenant's own
        # images.
        owner = server.client(project)
        bus = owner.images.get(ids['bus'])
        assert (bus['vmware_disktype'], bus['vmware_adaptertype']) == (
            'streamOptimized', 'busLogic')
        lsi = owner.images.get(ids['lsi'])
        assert (lsi['vmware_disktype'], lsi['vmware_adaptertype']) == (
            'sparse', 'lsiLogic')
        assert owner.images.get(ids['stale'])['vmware_disktype'] == 'sparse'

    # A new image arrives; the others are unchanged since the state was
    # written, and are not downloaded again.
    newcomer = glanceapi.upload_image(
        admin, imagebuilder.create(tmp_path, 'new.qcow2', 'qcow2'), 'qcow2')
    second = _audit(cli, server, state, '--apply')

    counts = second['summary']['images']
    assert counts['listed'] == _catalogue_size(admin)
    assert counts['inspected'] == 1
    assert counts['unchanged'] == counts['listed'] - 1
    # The newcomer's min_disk, and nothing else.
    assert counts['changed'] == 1
    assert [(r['image_id'], r['property']) for r in _rows(
        second, action='set')] == [(newcomer['id'], 'min_disk')]


def test_filters_and_csv(cli, server, catalogue, admin, tmp_path):
    state = tmp_path / 'state.db'
    project = sorted(catalogue)[0]
    report = _audit(cli, server, state, '--owner', project)
    assert report['summary']['images']['listed'] == 4
    assert {row['owner'] for row in report['differences']} <= {project}

    report = _audit(cli, server, state, '--disk-format', 'vmdk',
                    '--updated-since', '2000-01-01T00:00:00Z')
    assert report['summary']['images']['listed'] == 2 * TENANTS

    proc = cli.run('audit', '-f', 'csv', '--state-file', str(state),
                   *glanceapi.auth_args(server.url, project))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout)))
    assert rows[0] == list(report_mod.COLUMNS)
    assert 'Workspace: max_workers=' in proc.stderr


def test_interrupted_audit_resumes(cli, conf, server, catalogue, admin,
                                   tmp_path):
    state_path = tmp_path / 'state.db'
    seen = []

    def interrupt_after_two(image, outcome, unchanged):
        seen.append(image['id'])
        if len(seen) == 2:
            raise KeyboardInterrupt  # Ctrl-C, at a known point

    with state_mod.state_store(conf, str(state_path)) as state:
        run = audit.Audit(admin, conf, state, report_mod.Policy(),
                          progress=interrupt_after_two)
        with pytest.raises(KeyboardInterrupt):
            run.run({'visibility': 'all', 'status': 'active'})
        assert state.count() == 2
    assert config.workspace_leftovers(
        conf.introspection_workspace.directory) == []

    report = _audit(cli, server, state_path)

    counts = report['summary']['images']
    assert counts['unchanged'] == 2
    assert counts['inspected'] == counts['listed'] - 2


def test_max_images_leaves_the_rest_for_the_next_run(cli, server, catalogue,
                                                     admin, tmp_path):
    state = tmp_path / 'state.db'
    first = _audit(cli, server, state, '--max-images', '3')
    total = first['summary']['images']['listed']
    assert first['summary']['images']['inspected'] == 3
    assert first['summary']['images']['deferred'] == total - 3

    second = _audit(cli, server, state)
    assert second['summary']['images']['inspected'] == total - 3
    assert second['summary']['images']['unchanged'] == 3


def test_sigterm_stops_an_audit_cleanly(cli, server, catalogue, tmp_path):
    cli.set('introspection_workspace', 'max_workers', 1)
    cli.set('introspection_workspace', 'slot_wait_timeout', 600)
    state = tmp_path / 'state.db'
    # Hold the only workspace slot: the audit lists the catalogue and then
    # waits for the slot, until the signal comes.
    ws = workspace.Workspace(cli.workspace, 2 ** 30, 0, 1, 0)
    with ws.slot():
        proc = subprocess.Popen(
            cli.command() + ['audit', '--state-file', str(state),
                             '--config-file', str(cli.config_file)]
            + glanceapi.auth_args(server.url, glanceapi.new_project_id()),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(_POLLS):
                if state.exists() or proc.poll() is not None:
                    break
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert proc.returncode == 128 + signal.SIGTERM, err
    assert 'Traceback' not in err
    assert config.workspace_leftovers(cli.workspace) == []
    # The state file is whole: the next run can use it.
    store = state_mod.StateStore(str(state))
    assert store.count() == 0
    store.close()


def test_progress_bar_on_a_terminal(cli, server, catalogue, tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        cli.command() + ['audit', '-f', 'value', '-c', 'image_id',
                         '--state-file', str(tmp_path / 'state.db'),
                         '--config-file', str(cli.config_file)]
        + glanceapi.auth_args(server.url, glanceapi.new_project_id()),
        stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    terminal = b''
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the audit closed its end
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(master)
        proc.wait(timeout=120)

    assert proc.returncode == 0
    assert b' images' in terminal and b'\r' in terminal


def test_refusals_are_findings_and_a_new_configuration_rechecks_them(
        cli, server, catalogue, tmp_path):
    state = tmp_path / 'state.db'
    # Glance accepts the monolithicSparse "lsi" images; this does not.
    cli.set('introspection_formats', 'vmdk_allowed_types', 'streamOptimized')
    lsi = {ids['lsi'] for ids in catalogue.values()}

    first = _audit(cli, server, state)
    second = _audit(cli, server, state)

    for report in (first, second):
        refused = _rows(report, difference='refused')
        assert {row['image_id'] for row in refused} == lsi
        assert all(row['note'].startswith('vmdk-subformat-not-allowed: ')
                   for row in refused)
        assert report['summary']['images']['refused'] == TENANTS
    # The refusals were recorded: the second run downloaded nothing.
    assert second['summary']['images']['inspected'] == 0

    # The operator allows the type again: the records no longer count.
    cli.set('introspection_formats', 'vmdk_allowed_types',
            'streamOptimized,monolithicSparse')
    counts = _audit(cli, server, state)['summary']['images']
    assert counts['refused'] == 0
    assert counts['inspected'] == counts['listed']


def test_images_of_one_owner_share_one_slot(cli, server, catalogue, admin,
                                            tmp_path):
    # Guest detection on makes the audit gather each tenant's four images
    # into one batch: one workspace slot (max_workers = 1, and no time to
    # wait for a second one) and one inspect_many call. The bogus backend
    # makes the appliance unusable at once, so only the warning path runs.
    cli.set('introspection_workspace', 'max_workers', 1)
    cli.set('introspection_workspace', 'slot_wait_timeout', 0)
    cli.set('introspection_guest', 'enabled', True)
    cli.set('introspection_guest', 'backend', 'bogus')
    cli.set('introspection_guest', 'drives_per_appliance', 4)
    report = _audit(cli, server, tmp_path / 'state.db')

    counts = report['summary']['images']
    assert counts['listed'] == counts['inspected'] == _catalogue_size(admin)
    assert counts['failed'] == counts['refused'] == 0
    assert config.workspace_leftovers(cli.workspace) == []


def test_an_audit_without_its_guest_stage_asks_again_next_run(
        cli, server, tmp_path):
    # A host whose appliance cannot start (a backend that does not exist:
    # real libguestfs, failing as fast as a host without a kernel) gives
    # the format properties and a warning; the audit must not keep that
    # as the image's answer. Once the appliance works, the next run
    # inspects the image again and finds its OS.
    guest = guestimages.build(tmp_path / 'guest', ['ubuntu'])['ubuntu']
    project = glanceapi.new_project_id()
    image_id = glanceapi.upload_image(server.client(project), guest,
                                      'qcow2')['id']
    state = tmp_path / 'state.db'
    cli.set('introspection_guest', 'enabled', True)
    cli.set('introspection_guest', 'backend', 'bogus')

    broken = _audit(cli, server, state, '--owner', project)
    assert broken['summary']['images']['incomplete'] == 1
    assert _rows(broken, image_id=image_id, property='os_distro') == []

    cli.set('introspection_guest', 'backend', 'direct')
    cli.set('introspection_guest', 'backend_settings',
            config.BACKEND_SETTINGS)
    working = _audit(cli, server, state, '--owner', project)
    counts = working['summary']['images']
    assert (counts['inspected'], counts['unchanged'],
            counts['incomplete']) == (1, 0, 0)
    os_distro, = _rows(working, image_id=image_id, property='os_distro')
    assert os_distro['image'] == 'ubuntu'

    # Now the answer is complete, and kept.
    again = _audit(cli, server, state, '--owner', project)
    assert again['summary']['images']['unchanged'] == 1
