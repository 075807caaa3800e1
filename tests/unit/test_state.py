"""The state store's own logic on SQLite: the file, its migration, codes.

What the store does on SQLite and on PostgreSQL alike is in
tests/functional/test_audit_state_store.py.
"""

import datetime
import json
import os
import sqlite3

import pytest
import sqlalchemy

from qimgintrospect import exception
from qimgintrospect.glance import state
from qimgintrospect import normalise

RESULT = normalise.Result({'disk_format': 'vmdk',
                           'vmware_disktype': 'sparse'},
                          {'cluster_size': 65536}, ['a warning'])

#: The state file as qimgintrospect wrote it before alembic, verbatim:
#: its schema, and its INSERT of an outcome encoded as it encoded them.
LEGACY_SCHEMA = """
        CREATE TABLE IF NOT EXISTS inspected (
            image_id TEXT PRIMARY KEY,
            checksum TEXT NOT NULL,
            version TEXT NOT NULL,
            inspected_at TEXT NOT NULL,
            outcome TEXT NOT NULL
        )"""
LEGACY_PUT = 'INSERT OR REPLACE INTO inspected VALUES (?, ?, ?, ?, ?)'
LEGACY_GET = ('SELECT outcome FROM inspected WHERE image_id = ? AND '
              'checksum = ? AND version = ?')


def _legacy_file(path, records):
    """A state file written by the version before alembic."""
    db = sqlite3.connect(str(path))
    with db:
        db.execute(LEGACY_SCHEMA)
        for image_id, checksum, version, outcome in records:
            db.execute(LEGACY_PUT, (
                image_id, checksum, version,
                datetime.datetime.now(datetime.timezone.utc).isoformat(),
                json.dumps(state._encode(outcome), sort_keys=True)))
    db.close()


@pytest.fixture
def store(tmp_path):
    store = state.StateStore(str(tmp_path / 'sub' / 'state.db'), '1.0')
    yield store
    store.close()


def test_a_state_file_from_before_alembic_is_carried_over(tmp_path):
    path = tmp_path / 'audit.sqlite'
    refused = exception.ImageRefused(exception.BACKING_FILE, 'names /x')
    _legacy_file(path, [('img-1', 'sum-1', '1.0', RESULT),
                        ('img-2', 'sum-2', '1.0', refused),
                        ('img-3', 'sum-3', '0.9', RESULT)])

    store = state.StateStore(str(path), '1.0', worker='w', run_id='r')
    try:
        assert store.count() == 3
        assert store.get('img-1', 'sum-1').to_dict() == RESULT.to_dict()
        assert store.get('img-2', 'sum-2').code == 'backing-file'
        assert store.get('img-3', 'sum-3') is None  # another version
        assert state.current_revision(store._engine) == (
            state.head_revision())
        # New records go beside the old ones, with who made them.
        store.put('img-4', 'sum-4', RESULT)
    finally:
        store.close()

    db = sqlite3.connect(str(path))
    rows = dict(db.execute(
        'SELECT image_id, worker FROM inspected').fetchall())
    # The old version's own query still reads the carried-over file.
    old_read = db.execute(LEGACY_GET, ('img-1', 'sum-1', '1.0')).fetchone()
    db.close()
    assert rows == {'img-1': None, 'img-2': None, 'img-3': None,
                    'img-4': 'w'}
    assert json.loads(old_read[0]) == {'result': RESULT.to_dict()}


def test_a_carried_over_file_is_migrated_once(tmp_path):
    path = tmp_path / 'audit.sqlite'
    _legacy_file(path, [('img-1', 'sum-1', '1.0', RESULT)])
    state.StateStore(str(path), '1.0').close()

    again = state.StateStore(str(path), '1.0')
    try:
        assert again.get('img-1', 'sum-1') is not None
    finally:
        again.close()
    db = sqlite3.connect(str(path))
    versions = db.execute('SELECT version_num FROM %s'
                          % state.VERSION_TABLE).fetchall()
    db.close()
    assert versions == [(state.head_revision(),)]


def test_a_file_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / 'audit.sqlite'
    state.StateStore(str(path), '1.0').close()
    db = sqlite3.connect(str(path))
    with db:
        db.execute("UPDATE %s SET version_num = '9999'"
                   % state.VERSION_TABLE)
    db.close()

    with pytest.raises(exception.UsageError) as err:
        state.StateStore(str(path), '1.0')

    assert err.value.code == 'state-file-unusable'
    assert '9999' in err.value.message


def test_unusable_state_file_is_a_usage_error(tmp_path):
    (tmp_path / 'file').write_text('')

    with pytest.raises(exception.UsageError) as err:
        state.StateStore(str(tmp_path / 'file' / 'state.db'))

    assert err.value.code == 'state-file-unusable'


def test_not_a_database_is_a_usage_error(tmp_path):
    path = tmp_path / 'state.db'
    path.write_bytes(b'not sqlite at all ' * 100)

    with pytest.raises(exception.UsageError) as err:
        state.StateStore(str(path))

    assert err.value.code == 'state-file-unusable'


def test_state_file_directory_is_private(tmp_path):
    state.StateStore(str(tmp_path / 'new' / 'state.db')).close()
    assert os.stat(tmp_path / 'new').st_mode & 0o777 == 0o700


def test_records_survive_the_process_and_the_version_counts(tmp_path):
    path = str(tmp_path / 'state.db')
    first = state.StateStore(path, '1.0')
    first.put('img-1', 'sum', RESULT)
    first.close()

    same = state.StateStore(path, '1.0')
    upgraded = state.StateStore(path, '2.0')
    try:
        assert same.get('img-1', 'sum') is not None
        assert upgraded.get('img-1', 'sum') is None
    finally:
        same.close()
        upgraded.close()


def test_worker_and_run_default_to_this_process_and_a_new_run(store,
                                                              tmp_path):
    other = state.StateStore(store.path, '1.0')
    try:
        assert store.worker == state.default_worker_id()
        assert store.worker.endswith('.%d' % os.getpid())
        assert store.run_id != other.run_id
    finally:
        other.close()


def test_figures_of_a_worker_that_did_nothing(store):
    store.enter_run(hostname='h', pid=7)
    store.enter_run(hostname='h', pid=7)  # again, after a reconnection

    figure, = store.worker_figures()

    assert (figure['hostname'], figure['pid'], figure['inspected'],
            figure['from_record']) == ('h', 7, 0, 0)
    assert figure['images_per_minute'] is None


def test_an_outcome_round_trips_through_its_encoding():
    failed = exception.InspectionFailed(exception.IMAGE_TRUNCATED, 'short')

    assert state._loads(state._dumps(RESULT)).to_dict() == RESULT.to_dict()
    back = state._loads(state._dumps(failed))
    assert (type(back), back.code, back.message) == (
        exception.InspectionFailed, 'image-truncated', 'short')
    assert state._decode({'error': {'code': 'gone', 'message': 'm'}}) is None


def test_urls_and_paths():
    assert state.is_url('postgresql+psycopg2://u:p@db/audit')
    assert state.is_url('sqlite:////var/lib/x.sqlite')
    assert not state.is_url('/var/lib/qimgintrospect/audit.sqlite')


def test_fingerprint_follows_the_options_that_shape_findings(conf):
    before = state.fingerprint(conf)

    conf.set_override('max_workers', 7, 'introspection_workspace')
    assert state.fingerprint(conf) == before

    # How an appliance is started is not what it finds.
    conf.set_override('backend_settings', ['force_tcg'],
                      'introspection_guest')
    conf.set_override('launch_timeout', 7, 'introspection_guest')
    assert state.fingerprint(conf) == before

    conf.set_override('vmdk_allowed_types', ['streamOptimized'],
                      'introspection_formats')
    assert state.fingerprint(conf) != before
    turned_on = state.fingerprint(conf)
    conf.set_override('enabled', True, 'introspection_guest')
    assert state.fingerprint(conf) != turned_on
    # A hibernated guest recorded with a warning is refused now.
    refusing = state.fingerprint(conf)
    conf.set_override('refuse_unbootable', True, 'introspection_guest')
    assert state.fingerprint(conf) != refusing


def test_state_store_uses_the_configured_file_and_fingerprint(conf,
                                                              tmp_path):
    conf.set_override('state_file', str(tmp_path / 'conf.sqlite'),
                      'introspection_audit')

    with state.state_store(conf, worker='w') as store:
        store.put('img', 'sum', RESULT)
        assert store.path == str(tmp_path / 'conf.sqlite')
        assert store.version == state.fingerprint(conf)
        assert store.worker == 'w'


@pytest.mark.parametrize('failure', [
    sqlalchemy.exc.PendingRollbackError('rolled back'),
    sqlalchemy.exc.OperationalError('SELECT', {}, Exception('cut'))])
def test_a_signal_inside_a_call_is_not_a_broken_database(store, monkeypatch,
                                                         failure):
    calls = []

    def interrupted():
        calls.append(1)
        try:
            raise SystemExit(143)
        except SystemExit:
            raise failure
    monkeypatch.setattr(store, '_count', interrupted)

    with pytest.raises(SystemExit) as err:
        store.count()

    assert err.value.code == 143
    assert len(calls) == 1  # not retried


def test_a_signal_while_the_file_is_migrated_is_not_a_broken_file(
        tmp_path, monkeypatch):
    def interrupted(engine):
        try:
            raise SystemExit(143)
        except SystemExit:
            raise sqlalchemy.exc.PendingRollbackError(
                "Can't reconnect until invalid transaction is rolled back")
    monkeypatch.setattr(state, 'migrate', interrupted)

    with pytest.raises(SystemExit):
        state.StateStore(str(tmp_path / 'state.db'))
