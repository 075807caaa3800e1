"""Three audit workers sharing one catalogue, and the faults they survive.

Three ``qimg-introspect audit --coordination redis://... --state-connection
postgresql://...`` processes on this machine stand for three hosts: each
has its own workspace and its own admin project (so Glance's request log
tells whose download each was). The services are real: a redis-server and
a PostgreSQL started in temporary directories (testkit/dbservers.py), and
the test glance-api with a multi-tenant catalogue of small format-only
images. Glance's own faults (a 5xx for one image, a listing page that
fails) and the moments a test must hold (every worker has joined; a worker
is in the middle of an image) come from a middleware in front of it
(tests/functional/glance_faults.py).

The coordination timeouts are 3 s (a killed worker's share and claims pass
to the others 3 s after its last heartbeat) and workers look at their
group every second, so that the tests are short. Waits are bounded polls,
never timing assertions; the outages last a fixed couple of seconds (an
input of the test, not a guess about when something happens).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from qimgintrospect import exception
from qimgintrospect.glance import audit
from qimgintrospect.glance import coordination
from qimgintrospect.glance import report as report_mod
from qimgintrospect.glance import state as state_mod
from testkit import config
from testkit import dbservers
from testkit import glanceapi
from testkit import imagebuilder
from tests.functional import glance_faults as faults
from tests.functional import glance_server

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TENANTS = 3
PLAIN_PER_TENANT = 6
#: Seconds without a heartbeat before a worker drops out of the group,
#: and a claim's expiry after its holder's last heartbeat.
TIMEOUT = 3
WORKERS = 3
#: How long the coordination service or the database stays away.
OUTAGE = 2
_POLLS = 1200
_POLL_INTERVAL = 0.1
_RUN_TIMEOUT = 600


def _require(server_class, what):
    if not server_class.available():
        pytest.skip('%s is not installed (bindep: test)' % what)


@pytest.fixture(scope='module')
def glance(tmp_path_factory):
    with glance_server.serve(tmp_path_factory.mktemp('glance-w'),
                             faults.FaultyGlanceServer) as server:
        yield server


@pytest.fixture(scope='module')
def catalogue(glance, tmp_path_factory):
    """{image id: project} of every image of the catalogue.

    Each tenant has a VMDK Glance knows nothing about, one whose adapter
    type Glance has wrong, and a few plain qcow2 and raw images.
    """
    catalogue = Catalogue()
    images = tmp_path_factory.mktemp('worker-images')
    bus = imagebuilder.vmdk(images, 'bus.vmdk', subformat='streamOptimized',
                            adapter='buslogic')
    lsi = imagebuilder.vmdk(images, 'lsi.vmdk', adapter='lsilogic')
    plain = imagebuilder.create(images, 'plain.qcow2', 'qcow2')
    raw = imagebuilder.create(images, 'plain.raw', 'raw',
                              size=imagebuilder.MiB)
    for _ in range(TENANTS):
        project = glanceapi.new_project_id()
        client = glance.client(project)
        uploads = [('bus', bus, 'vmdk', {}),
                   ('lsi', lsi, 'vmdk', {'vmware_adaptertype': 'ide'})]
        uploads += [('plain', plain if n % 2 else raw,
                     'qcow2' if n % 2 else 'raw', {})
                    for n in range(PLAIN_PER_TENANT)]
        for kind, path, disk_format, props in uploads:
            # min_disk as it should be (these images are at most 64 MiB):
            # what the workers fix is the VMDKs' properties alone.
            image_id = glanceapi.upload_image(client, path, disk_format,
                                              min_disk=1, **props)['id']
            catalogue[image_id] = project
            catalogue.kinds.setdefault(kind, []).append(image_id)
    return catalogue


class Catalogue(dict):
    """{image id: project}; ``kinds``: {bus, lsi, plain: [image ids]}."""

    def __init__(self):
        super().__init__()
        self.kinds = {}


@pytest.fixture(scope='module')
def postgres():
    _require(dbservers.PostgresServer, 'PostgreSQL')
    with dbservers.PostgresServer() as server:
        yield server


@pytest.fixture
def database(postgres):
    """A new database of the module's server: the run's shared state."""
    name = 'audit_%s' % uuid.uuid4().hex[:12]
    postgres.psql('CREATE DATABASE %s' % name, database='postgres')
    return postgres.url(database=name)


@pytest.fixture
def redis():
    """A redis-server of the test's own.

    A worker a test killed must not linger in the next test's group.
    """
    _require(dbservers.RedisServer, 'redis-server')
    with dbservers.RedisServer() as server:
        yield server


class Worker(object):
    """One ``qimg-introspect audit`` process: one host of the audit."""

    def __init__(self, name, command, directory):
        self.name = name
        self.project = glanceapi.new_project_id()
        self._out = open(os.path.join(directory, name + '.out'), 'w+')
        self._err = open(os.path.join(directory, name + '.err'), 'w+')
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [REPO_ROOT, os.environ.get('PYTHONPATH')])))
        self.process = subprocess.Popen(
            command(self.project), stdout=self._out, stderr=self._err,
            stdin=subprocess.DEVNULL, text=True, env=env, cwd=directory)

    def wait(self):
        """Wait for the end; return (exit code, stdout, stderr)."""
        code = self.process.wait(timeout=_RUN_TIMEOUT)
        self._out.seek(0)
        self._err.seek(0)
        return code, self._out.read(), self._err.read()

    def report(self, logged_tracebacks=False):
        """The decoded JSON report of a worker that must succeed.

        :param logged_tracebacks: allow tracebacks in the log (tooz logs
            one per claim a restarted redis forgot).
        """
        code, out, err = self.wait()
        assert code == 0, '%s exited %s:\n%s' % (self.name, code, err)
        assert logged_tracebacks or 'Traceback' not in err, err
        return json.loads(out)

    def kill(self):
        """SIGKILL: no release, no goodbye; its heartbeat just stops."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._out.close()
        self._err.close()


@pytest.fixture
def workers(cli, glance, tmp_path):
    """Start audit workers: ``workers(n, coordination, state, *args)``.

    Glance's fault *rules* are put in place first.
    Unless *together* is false, they are held at their first listing
    request until all n have joined their group and asked for it: started
    together, as hosts whose timers fire at the same time. Every worker
    still running at the end is killed.
    """
    started = []

    def start(count, coordination_url, state, *args, rules=(),
              together=True, audit_options=None):
        directory = tempfile.mkdtemp(dir=tmp_path, prefix='run-')
        rules = list(rules)
        if together:
            rules.insert(0, faults.hold_rule('start', faults.LISTING,
                                             times=count))
        glance.set_faults(*rules)
        new = []
        for n in range(count):
            name = 'w%d' % (len(started) + n)
            conf = os.path.join(directory, name + '.conf')
            config.write_config_file(conf, config.overrides(
                os.path.join(directory, name + '-workspace'),
                introspection_audit=dict(
                    {'refresh_interval': 1, 'page_size': 4},
                    **(audit_options or {}))))
            argv = ['audit', '-f', 'json', '--config-file', conf,
                    '--state-connection' if state_mod.is_url(state)
                    else '--state-file', state]
            if coordination_url:
                argv += ['--coordination', coordination_url]
            argv += list(args)

            def command(project, argv=argv):
                return (cli.command() + argv
                        + glanceapi.auth_args(glance.url, project))

            new.append(Worker(name, command, directory))
        started.extend(new)
        if together:
            _poll(lambda: len(glance.held('start')) == count
                  or any(w.process.poll() is not None for w in new),
                  'the workers to reach Glance')
            for worker in new:
                assert worker.process.poll() is None, worker.wait()
            glance.release('start')
        return new

    yield start
    glance.set_faults()
    for worker in started:
        worker.close()


def _poll(condition, what):
    for _ in range(_POLLS):
        if condition():
            return
        time.sleep(_POLL_INTERVAL)
    raise AssertionError('waited in vain for %s' % what)


def _url(redis):
    return redis.url(membership_timeout=TIMEOUT, lock_timeout=TIMEOUT)


def _journal(database, run_id):
    store = state_mod.StateStore(database)
    try:
        return {e.image_id: e for e in store.run_journal(run_id)}
    finally:
        store.close()


def _records(database):
    """{image id: (worker, outcome)} of the records in the state."""
    store = state_mod.StateStore(database)
    try:
        with store._engine.connect() as conn:
            return {row.image_id: (row.worker, state_mod._loads(row.outcome))
                    for row in conn.execute(state_mod.inspected.select())}
    finally:
        store.close()


def _rows(report):
    """The report's rows without the worker: what all workers agree on."""
    return sorted(tuple(row[c] or '' for c in report_mod.COLUMNS)
                  for row in report['differences'])


def _figures(report):
    return {f['pid']: f for f in report['summary']['run']['workers']}


def _reset_vmdks(glance, catalogue):
    """Give the VMDKs back what Glance had when they were uploaded.

    The module's tests share the catalogue, and --apply fixes them.
    """
    for kind, remove in (('bus', ['vmware_disktype', 'vmware_adaptertype']),
                         ('lsi', ['vmware_disktype'])):
        for image_id in catalogue.kinds[kind]:
            client = glance.client(catalogue[image_id])
            present = [p for p in remove
                       if p in client.images.get(image_id)]
            extra = {'vmware_adaptertype': 'ide'} if kind == 'lsi' else {}
            client.images.update(image_id, remove_props=present or None,
                                 **extra)


def _assert_one_report(reports, catalogue):
    """The workers' reports are one report of one run over *catalogue*."""
    first = reports[0]
    for report in reports:
        assert report['summary']['run']['id'] == first['summary']['run'][
            'id']
        assert report['summary']['images'] == first['summary']['images']
        # How the images were read: every worker's, from the journal.
        assert report['summary']['reads'] == first['summary']['reads']
        assert _rows(report) == _rows(first)
        assert report['summary']['images']['listed'] == len(catalogue)


def test_three_workers_inspect_every_image_once_and_agree(
        workers, glance, catalogue, database, redis):
    _reset_vmdks(glance, catalogue)
    since = len(glance.requests())
    team = workers(WORKERS, _url(redis), database, '--apply')
    reports = [w.report() for w in team]

    _assert_one_report(reports, catalogue)
    counts = reports[0]['summary']['images']
    assert (counts['inspected'], counts['unchanged']) == (len(catalogue), 0)
    assert counts['changed'] == 2 * TENANTS  # the two VMDKs of each tenant
    assert reports[0]['summary']['reads']['total']['images'] == len(
        catalogue)
    # Each image's data was read by exactly one worker.
    readers = glance.readers(since)
    assert set(readers) == set(catalogue)
    assert all(len(projects) == 1 for projects in readers.values()), readers
    # Each worker took a share, and the journal, the records and Glance's
    # log agree on who did what.
    figures = _figures(reports[0])
    by_pid = {w.process.pid: w for w in team}
    assert sorted(figures) == sorted(by_pid)
    assert sum(f['inspected'] for f in figures.values()) == len(catalogue)
    assert all(f['inspected'] > 0 for f in figures.values()), figures
    project_of = {f['worker']: by_pid[pid].project
                  for pid, f in figures.items()}
    journal = _journal(database, reports[0]['summary']['run']['id'])
    records = _records(database)
    assert set(journal) == set(records) == set(catalogue)
    for image_id, entry in journal.items():
        assert readers[image_id] == {project_of[entry.worker]}
        assert records[image_id][0] == entry.worker
    # Which worker made each row is said.
    for report in reports:
        for row in report['differences']:
            assert journal[row['image_id']].worker == row['worker']
    # The fixes are in Glance, read back as the owner.
    fixed = [r for r in reports[0]['differences'] if r['action'] == 'set']
    for row in fixed:
        image = glance.client(catalogue[row['image_id']]).images.get(
            row['image_id'])
        assert image[row['property']] == row['image']

    # A second run touches nothing unchanged: no download, no write.
    since = len(glance.requests())
    again = [w.report() for w in workers(WORKERS, _url(redis), database,
                                         '--apply')]

    _assert_one_report(again, catalogue)
    counts = again[0]['summary']['images']
    assert (counts['inspected'], counts['unchanged'], counts['changed']) == (
        0, len(catalogue), 0)
    assert again[0]['summary']['run']['id'] != reports[0]['summary']['run'][
        'id']
    # Only reads of the catalogue (and of the schema the client asks
    # for): no image data, no write.
    assert [r for r in glance.requests()[since:]
            if r[0] != 'GET' or r[1].endswith('/file')] == []


def test_a_worker_killed_mid_image_leaves_its_share_to_the_others(
        workers, glance, catalogue, database, redis):
    held = sorted(catalogue)[len(catalogue) // 2]
    since = len(glance.requests())
    team = workers(WORKERS, _url(redis), database, rules=[
        faults.hold_rule('victim', faults.file_path(held))])
    # Whoever the ring gave the image to is now downloading it, holding
    # its claim and a workspace slot.
    _poll(lambda: glance.held('victim'), 'a worker to download the image')
    victim_project = glance.held('victim')[1]
    victim, = [w for w in team if w.project == victim_project]
    survivors = [w for w in team if w is not victim]

    victim.kill()
    glance.release('victim')
    reports = [w.report() for w in survivors]

    _assert_one_report(reports, catalogue)
    counts = reports[0]['summary']['images']
    # Killed between recording an image and journalling it, the victim
    # leaves a record a survivor journals without reading the image again.
    assert counts['inspected'] + counts['unchanged'] == len(catalogue)
    assert counts['failed'] == counts['not_inspected'] == 0
    assert counts['deferred'] == 0
    journal = _journal(database, reports[0]['summary']['run']['id'])
    assert set(journal) == set(_records(database)) == set(catalogue)
    figures = _figures(reports[0])
    dead = figures[victim.process.pid]
    assert dead['finished_at'] is None
    assert journal[held].worker != dead['worker']
    # The image it was in the middle of was read again by another.
    readers = glance.readers(since)[held]
    assert victim.project in readers and len(readers) == 2


def test_workers_that_lose_redis_for_a_while_recover(
        workers, glance, catalogue, database, redis):
    held = sorted(catalogue)[0]
    team = workers(WORKERS, _url(redis), database, rules=[
        faults.hold_rule('held', faults.file_path(held))])
    _poll(lambda: glance.held('held'), 'the run to be under way')

    # Restarted without persistence: groups, heartbeats and claims are
    # gone, and the workers must join again.
    redis.stop()
    time.sleep(OUTAGE)
    redis.start()
    glance.release('held')
    reports = [w.report(logged_tracebacks=True) for w in team]

    _assert_one_report(reports, catalogue)
    assert reports[0]['summary']['images']['inspected'] == len(catalogue)
    journal = _journal(database, reports[0]['summary']['run']['id'])
    records = _records(database)
    assert set(journal) == set(records) == set(catalogue)
    # An image two workers inspected (its claim was lost with redis) was
    # still given one answer: the journal says what the record says.
    for image_id, entry in journal.items():
        assert entry.outcome.to_dict() == records[image_id][1].to_dict()


@pytest.fixture
def own_postgres():
    _require(dbservers.PostgresServer, 'PostgreSQL')
    with dbservers.PostgresServer() as server:
        yield server


def test_the_database_restarting_mid_run(workers, glance, catalogue,
                                         own_postgres, redis):
    held = sorted(catalogue)[-1]
    team = workers(WORKERS, _url(redis), own_postgres.url(), rules=[
        faults.hold_rule('held', faults.file_path(held))])
    _poll(lambda: glance.held('held'), 'the run to be under way')

    own_postgres.stop()  # every session is cut
    time.sleep(OUTAGE)
    own_postgres.start()
    glance.release('held')
    reports = [w.report() for w in team]

    _assert_one_report(reports, catalogue)
    assert reports[0]['summary']['images']['inspected'] == len(catalogue)
    journal = _journal(own_postgres.url(),
                       reports[0]['summary']['run']['id'])
    assert set(journal) == set(_records(own_postgres.url())) == set(
        catalogue)


def test_glance_5xx_for_some_images_is_retried_next_run(
        workers, glance, catalogue, database, redis):
    broken = sorted(catalogue.kinds['plain'][:2])
    # A VMDK whose properties Glance lacks, and refuses to take.
    unwritten = catalogue.kinds['bus'][0]
    _reset_vmdks(glance, catalogue)
    team = workers(WORKERS, _url(redis), database, '--apply', rules=[
        faults.fail_rule(faults.file_path(image_id), status=500)
        for image_id in broken] + [faults.fail_rule(
            '^/v2/images/%s$' % unwritten, method='PATCH')])
    reports = [w.report() for w in team]

    _assert_one_report(reports, catalogue)
    counts = reports[0]['summary']['images']
    assert counts['failed'] == len(broken)
    failed = [r for r in reports[0]['differences']
              if r['difference'] == 'failed']
    assert sorted(r['image_id'] for r in failed) == broken
    # Glance's error, which says nothing about the image: transient.
    assert all(r['note'].split(':')[0] in audit.TRANSIENT for r in failed)
    refused_writes = [r for r in reports[0]['differences']
                      if r['image_id'] == unwritten]
    assert refused_writes and all(
        r['action'] == 'would set'
        and r['note'].startswith('glance-unreachable: updating image')
        for r in refused_writes)
    assert counts['changed'] == 2 * TENANTS - 1
    # Journalled (the run is done with them), not recorded (they are not
    # the images' answer); the image Glance would not update is recorded:
    # what it says is known.
    assert set(_journal(database, reports[0]['summary']['run']['id'])) == (
        set(catalogue))
    assert set(_records(database)) == set(catalogue) - set(broken)

    since = len(glance.requests())
    again = [w.report() for w in workers(WORKERS, _url(redis), database,
                                         '--apply')]

    _assert_one_report(again, catalogue)
    counts = again[0]['summary']['images']
    assert (counts['inspected'], counts['unchanged'], counts['failed']) == (
        len(broken), len(catalogue) - len(broken), 0)
    assert sorted(glance.readers(since)) == broken
    # The update Glance refused is made from the record, by one worker,
    # without reading the image again.
    assert counts['changed'] == 1
    line = _journal(database, again[0]['summary']['run']['id'])[unwritten]
    assert (line.unchanged, line.changed) == (True, True)
    image = glance.client(catalogue[unwritten]).images.get(unwritten)
    assert image['vmware_disktype'] == 'streamOptimized'
    assert [r[1] for r in glance.requests()[since:] if r[0] == 'PATCH'] == [
        '/v2/images/%s' % unwritten]


def test_a_stuck_claim_expires(workers, glance, catalogue, database, redis):
    stuck = sorted(catalogue)[3]
    # A worker that claimed an image and died holding it (a process of
    # its own in the audit's group, killed without a word).
    holder = subprocess.Popen(
        [sys.executable, '-m', 'tests.functional.coordination_member',
         _url(redis), coordination.GROUP, 'dead-worker'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=REPO_ROOT)
    try:
        assert json.loads(holder.stdout.readline())['member']
        holder.stdin.write(json.dumps({'op': 'claim', 'id': stuck}) + '\n')
        holder.stdin.flush()
        assert json.loads(holder.stdout.readline()) == {'claimed': True}
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()

    report, = [w.report() for w in workers(1, _url(redis), database)]

    counts = report['summary']['images']
    assert counts['inspected'] == len(catalogue)
    journal = _journal(database, report['summary']['run']['id'])
    assert set(journal) == set(catalogue)


def test_a_listing_page_glance_fails_is_asked_again(
        workers, glance, catalogue, tmp_path):
    state = str(tmp_path / 'state.sqlite')
    since = len(glance.requests())
    # The second page fails twice, then comes.
    worker, = workers(1, None, state, together=False, rules=[
        faults.fail_rule(faults.LISTING, skip=1, times=2)])
    report = worker.report()

    assert report['summary']['images']['listed'] == len(catalogue)
    assert report['summary']['images']['inspected'] == len(catalogue)
    assert [r[3] for r in glance.requests()[since:]
            if r[1] == '/v2/images'][:4] == ['-', '503', '503', '-']

    # Glance that keeps failing: the audit gives up, exit 4.
    worker, = workers(1, None, state, together=False,
                      rules=[faults.fail_rule(faults.LISTING)],
                      audit_options={'list_retries': 1})
    code, out, err = worker.wait()
    assert code == exception.EXIT_FAILED, err
    assert json.loads(out)['error']['code'] == 'glance-unreachable'


def test_a_lost_database_releases_the_claims(conf, glance, catalogue,
                                             own_postgres, redis):
    # In this process, to see the claims: they expire only after a minute
    # here, so that only their release makes them free again.
    url = redis.url(membership_timeout=TIMEOUT, lock_timeout=60)
    held = sorted(catalogue)[0]
    conf.set_override('page_size', 4, 'introspection_audit')
    glance.set_faults(faults.hold_rule('held', faults.file_path(held)))
    outcome = []

    def run():
        try:
            with coordination.worker(url) as member:
                store = state_mod.StateStore(
                    own_postgres.url(), worker=member.member_id,
                    run_id=member.run_id, retries=1, retry_interval=0.1)
                try:
                    client = glance.client(glanceapi.new_project_id())
                    audit.Audit(client, conf, store, report_mod.Policy(),
                                member=member).run(
                        {'visibility': 'all', 'status': 'active'})
                finally:
                    store.close()
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    _poll(lambda: glance.held('held'), 'the run to be under way')
    own_postgres.stop()
    glance.release('held')
    thread.join(_RUN_TIMEOUT)

    err, = outcome
    assert isinstance(err, exception.InspectionFailed)
    assert err.code == 'state-database-unavailable'
    assert err.exit_code == exception.EXIT_FAILED
    with coordination.worker(url) as other:
        claims = [other.claim(image_id) for image_id in catalogue]
        assert None not in claims
        for claim in claims:
            claim.release()
    assert config.workspace_leftovers(
        conf.introspection_workspace.directory) == []
