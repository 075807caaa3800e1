"""The audit state store on SQLite and on a real PostgreSQL server.

Every test of the store's behaviour runs on both (parametrized): the
embedded default and the server several workers share. Each PostgreSQL
test gets a database of its own in one server for the module; the tests
that restart the server have a server of their own.
"""

import subprocess
import sys
import threading
import time
import uuid

from alembic import autogenerate
from alembic import migration
import pytest
import sqlalchemy as sa

from qimgintrospect import exception
from qimgintrospect.glance import state
from qimgintrospect import normalise
from testkit import dbservers

RESULT = normalise.Result({'disk_format': 'vmdk',
                           'vmware_disktype': 'sparse'},
                          {'cluster_size': 65536}, ['a warning'])
OTHER = normalise.Result({'disk_format': 'vmdk',
                          'vmware_disktype': 'streamOptimized'}, {}, [])
_POLLS = 600


def _postgres_or_skip():
    if not dbservers.PostgresServer.available():
        pytest.skip('PostgreSQL is not installed (bindep: test)')


@pytest.fixture(scope='module')
def postgres():
    _postgres_or_skip()
    with dbservers.PostgresServer() as server:
        yield server


@pytest.fixture(params=['sqlite', 'postgresql'])
def location(request, tmp_path):
    """Where a test's state lives: a SQLite file, or a new database."""
    if request.param == 'sqlite':
        return str(tmp_path / 'state' / 'audit.sqlite')
    server = request.getfixturevalue('postgres')
    name = 'audit_%s' % uuid.uuid4().hex[:12]
    server.psql('CREATE DATABASE %s' % name, database='postgres')
    return server.url(database=name)


@pytest.fixture
def stores(location):
    """``stores(**kwargs)`` opens a store on the test's location."""
    opened = []

    def open_store(**kwargs):
        kwargs.setdefault('version', '1.0')
        store = state.StateStore(location, **kwargs)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def _engine(location):
    if state.is_url(location):
        return sa.create_engine(location, poolclass=sa.pool.NullPool)
    return sa.create_engine('sqlite:///' + location,
                            poolclass=sa.pool.NullPool)


def test_a_record_is_found_by_id_checksum_and_version(stores):
    store = stores()

    assert store.put('img-1', 'sum-a', RESULT) is RESULT

    assert store.get('img-1', 'sum-a').to_dict() == RESULT.to_dict()
    assert store.get('img-1', 'sum-b') is None
    assert store.get('img-2', 'sum-a') is None
    assert stores(version='2.0').get('img-1', 'sum-a') is None
    assert store.count() == 1


def test_errors_come_back_as_their_category(stores):
    store = stores()
    store.put('refused', 'x', exception.ImageRefused(
        exception.BACKING_FILE, 'names /etc/passwd'))
    store.put('broken', 'y', exception.InspectionFailed(
        exception.IMAGE_TRUNCATED, 'ends early'))

    refused, broken = store.get('refused', 'x'), store.get('broken', 'y')

    assert isinstance(refused, exception.ImageRefused)
    assert (refused.code, refused.message) == ('backing-file',
                                               'names /etc/passwd')
    assert isinstance(broken, exception.InspectionFailed)
    assert broken.code == 'image-truncated'


def test_new_data_or_a_new_version_replaces_the_record(stores):
    store = stores()
    store.put('img-1', 'old', RESULT)

    assert store.put('img-1', 'new', OTHER) is OTHER
    assert store.get('img-1', 'old') is None
    assert store.get('img-1', 'new').to_dict() == OTHER.to_dict()

    upgraded = stores(version='2.0')
    assert upgraded.put('img-1', 'new', RESULT) is RESULT
    assert upgraded.get('img-1', 'new').to_dict() == RESULT.to_dict()
    assert store.count() == 1


def test_the_first_record_of_the_same_data_wins(stores, location):
    first = stores(worker='host-a.1', run_id='run-1')
    second = stores(worker='host-b.2', run_id='run-1')
    first.put('img', 'sum', RESULT)

    # Another worker inspected the same image meanwhile (its claim had
    # expired) and found something else: the first record stays, and the
    # second worker is told what counts.
    kept = second.put('img', 'sum', OTHER)

    assert kept.to_dict() == RESULT.to_dict()
    assert second.get('img', 'sum').to_dict() == RESULT.to_dict()
    with _engine(location).connect() as conn:
        row = conn.execute(sa.select(state.inspected)).one()
    assert (row.worker, row.run_id) == ('host-a.1', 'run-1')


def test_racing_workers_agree_on_every_image(stores):
    workers = [stores(worker='w%d' % n) for n in range(3)]
    outcomes = [RESULT, OTHER, exception.InspectionFailed(
        exception.IMAGE_TRUNCATED, 'ends early')]
    images = ['img-%d' % n for n in range(25)]
    answers = {n: {} for n in range(3)}
    start = threading.Barrier(3)

    def work(n):
        start.wait()
        for image in images:
            answers[n][image] = workers[n].put(image, 'sum',
                                               outcomes[n]).to_dict()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for image in images:
        recorded = workers[0].get(image, 'sum').to_dict()
        assert [answers[n][image] for n in range(3)] == [recorded] * 3
    assert workers[0].count() == len(images)


def test_a_record_with_an_unknown_code_is_replaced(stores, location):
    store = stores()
    store.put('img', 'sum', RESULT)
    with _engine(location).begin() as conn:
        conn.execute(state.inspected.update().values(
            outcome='{"error": {"code": "gone", "message": "m"}}'))

    assert store.get('img', 'sum') is None
    assert store.put('img', 'sum', OTHER) is OTHER
    assert store.get('img', 'sum').to_dict() == OTHER.to_dict()


def test_one_journal_for_the_run_whichever_worker(stores):
    run = uuid.uuid4().hex
    a = stores(worker='host-a.1', run_id=run)
    b = stores(worker='host-b.2', run_id=run)
    other_run = stores(worker='host-a.1')
    a.enter_run()
    b.enter_run()
    row = {'image_id': 'img-1', 'owner': 'p', 'property': 'vmware_disktype',
           'glance': None, 'image': 'sparse', 'difference': 'missing',
           'action': 'set', 'note': ''}

    a.journal('img-1', RESULT, rows=[row], changed=True)
    b.journal('img-2', OTHER, unchanged=True)
    b.journal('img-3', exception.InspectionFailed(
        exception.GLANCE_UNREACHABLE, 'HTTP 503'))
    other_run.journal('img-4', RESULT)
    a.leave_run()

    entries = {e.image_id: e for e in b.run_journal()}
    assert sorted(entries) == ['img-1', 'img-2', 'img-3']
    assert a.journalled() == {'img-1', 'img-2', 'img-3'}
    assert (entries['img-1'].worker, entries['img-1'].rows,
            entries['img-1'].changed) == ('host-a.1', [row], True)
    assert entries['img-2'].unchanged is True
    assert entries['img-2'].outcome.to_dict() == OTHER.to_dict()
    assert entries['img-3'].outcome.code == 'glance-unreachable'

    figures = {f['worker']: f for f in a.worker_figures()}
    assert (figures['host-a.1']['inspected'],
            figures['host-a.1']['from_record']) == (1, 0)
    assert (figures['host-b.2']['inspected'],
            figures['host-b.2']['from_record']) == (1, 1)
    assert figures['host-a.1']['finished_at'] is not None
    assert figures['host-b.2']['finished_at'] is None  # still running

    # Another worker's line for the same image does not replace the
    # first (it says what was written to Glance); a worker's own does.
    assert b.journal('img-1', OTHER) is False
    first = b.run_journal()[0]
    assert (first.worker, first.changed) == ('host-a.1', True)
    assert a.journal('img-1', OTHER) is True
    assert b.run_journal()[0].outcome.to_dict() == OTHER.to_dict()
    assert a.journalled(image_ids=['img-3', 'img-4', 'img-9']) == {'img-3'}


def test_a_claimed_image_is_looked_at_again_in_one_call(stores):
    run = uuid.uuid4().hex
    a = stores(worker='host-a.1', run_id=run)
    b = stores(worker='host-b.2', run_id=run)
    assert b.look_again('img', 'sum') == (False, None)

    a.put('img', 'sum', RESULT)
    journalled, record = b.look_again('img', 'sum')
    assert (journalled, record.to_dict()) == (False, RESULT.to_dict())

    a.journal('img', RESULT)
    assert b.look_again('img', 'sum')[0] is True
    assert b.look_again('img', None) == (True, None)
    other_run = stores(run_id='another')
    assert other_run.look_again('img', 'other') == (False, None)


def test_workers_say_when_they_have_walked_the_catalogue(stores):
    run = uuid.uuid4().hex
    a = stores(worker='host-a.1', run_id=run)
    b = stores(worker='host-b.2', run_id=run)
    a.enter_run()
    b.enter_run()
    assert a.walking_workers() == {'host-a.1', 'host-b.2'}

    b.mark_walked()

    assert a.walking_workers() == {'host-a.1'}
    assert stores(run_id='another').walking_workers() == set()


def test_the_schema_is_the_model_and_at_head(stores, location):
    stores()

    engine = _engine(location)
    with engine.connect() as conn:
        context = migration.MigrationContext.configure(
            conn, opts={'version_table': state.VERSION_TABLE})
        assert context.get_current_revision() == state.head_revision()
        differences = autogenerate.compare_metadata(context, state.metadata)
    assert [d for d in differences
            if not (d[0] == 'remove_table'
                    and d[1].name == state.VERSION_TABLE)] == []


def test_workers_starting_together_migrate_once(location):
    # Three processes open the same new database at the same moment.
    script = ('import sys; from qimgintrospect.glance import state; '
              'state.StateStore(sys.argv[1], "1.0").close()')
    procs = [subprocess.Popen([sys.executable, '-c', script, location],
                              stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [proc.communicate()[1] for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    with _engine(location).connect() as conn:
        assert conn.execute(sa.text(
            'SELECT version_num FROM %s' % state.VERSION_TABLE)).all() == [
                (state.head_revision(),)]


def test_an_unknown_database_driver_is_a_usage_error():
    with pytest.raises(exception.UsageError) as err:
        state.StateStore('nosuchdb://user:secret@host/db')

    assert err.value.code == 'state-file-unusable'
    assert 'secret' not in err.value.message


# A database server that goes away: PostgreSQL only.

@pytest.fixture
def own_postgres():
    _postgres_or_skip()
    with dbservers.PostgresServer() as server:
        yield server


def test_a_restart_between_two_puts(own_postgres):
    store = state.StateStore(own_postgres.url(), '1.0')
    try:
        store.put('img-1', 'sum', RESULT)
        own_postgres.restart()  # every session of the pool is cut

        store.put('img-2', 'sum', OTHER)

        assert store.get('img-1', 'sum').to_dict() == RESULT.to_dict()
        assert store.get('img-2', 'sum').to_dict() == OTHER.to_dict()
    finally:
        store.close()


def test_a_put_during_an_outage_waits_for_the_database(own_postgres):
    store = state.StateStore(own_postgres.url(), '1.0', retries=30,
                             retry_interval=0.2)
    done = threading.Event()
    result = []
    try:
        store.put('img-1', 'sum', RESULT)
        own_postgres.stop()

        def put():
            result.append(store.put('img-2', 'sum', OTHER))
            done.set()

        thread = threading.Thread(target=put, daemon=True)
        thread.start()
        # While the server is down the put cannot complete.
        assert not done.wait(1)
        own_postgres.start()
        thread.join(_POLLS * 0.1)

        assert result == [OTHER]
        assert store.get('img-2', 'sum').to_dict() == OTHER.to_dict()
    finally:
        store.close()


def test_a_database_that_stays_away_is_an_error(own_postgres):
    store = state.StateStore(own_postgres.url(), '1.0', retries=2,
                             retry_interval=0.1)
    try:
        own_postgres.stop()

        with pytest.raises(exception.InspectionFailed) as err:
            store.put('img', 'sum', RESULT)
        assert err.value.code == 'state-database-unavailable'

        own_postgres.start()
        assert store.get('img', 'sum') is None  # it was not recorded
    finally:
        store.close()
    own_postgres.stop()

    with pytest.raises(exception.InspectionFailed) as err:
        state.StateStore(own_postgres.url(), '1.0', retries=1,
                         retry_interval=0.1)
    assert err.value.code == 'state-database-unavailable'


def test_time_is_recorded_per_worker(stores):
    store = stores(worker='w')
    store.enter_run()
    time.sleep(0.01)
    store.journal('img', RESULT)
    store.leave_run()

    figure, = store.worker_figures()

    assert figure['seconds'] > 0
    assert figure['images_per_minute'] == round(60 / figure['seconds'], 2)
