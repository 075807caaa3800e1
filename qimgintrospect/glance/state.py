"""The audit's state: what each image said, shared by every worker.

:class:`StateStore` keeps, per image id, what the image said at one
checksum under one :func:`fingerprint` (the cache that makes a later run
download only new or changed images), and, per run, what each worker did
(the journal one report for the whole run is made from, and the figures
per worker). It lives in a SQLite file (the default, for one host) or in a
database server every worker reaches (PostgreSQL with psycopg2,
MariaDB/MySQL with PyMySQL), through SQLAlchemy, with oslo.db's engine
(pinged connections, errors translated across drivers, retries).

The schema is versioned with alembic (``state_migrations/``) and brought
to this version's head every time a store is opened, under a lock so that
workers starting together migrate once. A SQLite file written before
alembic (one table ``inspected``) is recognised and carried over, its
records intact.

Several workers may record the same image (a claim expired while its
holder was cut off from the coordination service): for one checksum and
one fingerprint, the first record wins and :meth:`StateStore.put` returns
it to the later ones, so Glance is only ever written with the one outcome
the store holds; likewise the journal keeps the first worker's line for an
image. Each worker also says when it has walked the whole catalogue
(:meth:`StateStore.mark_walked`), after which the others may take the
images of its share it has not journalled.
"""
#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

import collections
import contextlib
import datetime
import hashlib
import json
import os
import socket
import uuid

from alembic import command as alembic_command
from alembic import config as alembic_config
from alembic import migration as alembic_migration
from alembic import script as alembic_script
from alembic import util as alembic_util
from oslo_concurrency import lockutils
from oslo_db import api as db_api
from oslo_db import exception as db_exc
from oslo_db.sqlalchemy import engines
from oslo_log import log as logging
import pbr.version
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from qimgintrospect import exception
from qimgintrospect import normalise
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

#: Alembic's bookkeeping table; not alembic's default name, so the state
#: can share a database with a service that uses alembic itself.
VERSION_TABLE = 'qimgintrospect_audit_version'
#: The revision that is the schema of the files written before alembic.
LEGACY_REVISION = '0001'
#: pg_advisory_xact_lock's key: a stable bigint from the version table name.
_LOCK_KEY = int.from_bytes(
    hashlib.sha256(VERSION_TABLE.encode()).digest()[:8], 'big', signed=True)
_MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'state_migrations')

#: How often a call retries a database that does not answer, and the first
#: wait (doubled each time, up to _MAX_RETRY_INTERVAL): about a minute in
#: all, longer than a database server takes to restart.
DB_RETRIES = 10
DB_RETRY_INTERVAL = 1
_MAX_RETRY_INTERVAL = 10
#: SQLite: how long a writer waits for another process's transaction.
_SQLITE_BUSY_MS = 30000
#: put(): rounds of update / insert / read before giving up; each round
#: only repeats when another worker changed the record in between.
_PUT_ROUNDS = 10
#: Image ids per query when the journal is asked about some images only.
_IDS_PER_QUERY = 500

_CATEGORIES = {cls.exit_code: cls for cls in (
    exception.UsageError, exception.ImageRefused, exception.InspectionFailed)}

# An outcome with a guest's details can pass MySQL's 64 KiB TEXT.
_DOCUMENT = sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql')

metadata = sa.MetaData()

#: What each image said: one record per image id, the latest.
inspected = sa.Table(
    'inspected', metadata,
    sa.Column('image_id', sa.String(64), primary_key=True),
    sa.Column('checksum', sa.String(255), nullable=False),
    sa.Column('version', sa.String(255), nullable=False),
    sa.Column('inspected_at', sa.String(40), nullable=False),
    sa.Column('outcome', _DOCUMENT, nullable=False),
    # Who made the record and in which run (NULL in carried-over records).
    sa.Column('worker', sa.String(255), nullable=True),
    sa.Column('run_id', sa.String(64), nullable=True),
)

#: What a run did about each image it had to act on, and which worker.
run_images = sa.Table(
    'audit_run_images', metadata,
    sa.Column('run_id', sa.String(64), primary_key=True),
    sa.Column('image_id', sa.String(64), primary_key=True),
    sa.Column('worker', sa.String(255), nullable=False),
    sa.Column('done_at', sa.String(40), nullable=False),
    sa.Column('outcome', _DOCUMENT, nullable=False),
    # True: compared from the record, not downloaded.
    sa.Column('unchanged', sa.Boolean(), nullable=False),
    # True: Glance was written.
    sa.Column('changed', sa.Boolean(), nullable=False),
    sa.Column('report_rows', _DOCUMENT, nullable=False),
)

#: The workers of a run, for the figures per worker.
run_workers = sa.Table(
    'audit_run_workers', metadata,
    sa.Column('run_id', sa.String(64), primary_key=True),
    sa.Column('worker', sa.String(255), primary_key=True),
    sa.Column('hostname', sa.String(255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.String(40), nullable=False),
    sa.Column('finished_at', sa.String(40), nullable=True),
    # When it had listed the whole catalogue and queued all it owned.
    sa.Column('walked_at', sa.String(40), nullable=True),
)

#: One line of a run's journal; ``outcome`` decoded, ``rows`` as dicts.
JournalEntry = collections.namedtuple('JournalEntry', [
    'image_id', 'worker', 'done_at', 'outcome', 'rows', 'changed',
    'unchanged'])


def default_worker_id():
    """``HOST.PID``: who records, when no coordination member id is given."""
    return '%s.%d' % (socket.gethostname(), os.getpid())


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='microseconds')


def _package_version():
    return pbr.version.VersionInfo('qimgintrospect').version_string()


def _encode(outcome):
    if isinstance(outcome, exception.IntrospectionError):
        return {'error': outcome.to_dict()}
    return {'result': outcome.to_dict()}


def _decode(record):
    if 'error' in record:
        code = record['error']['code']
        category = _CATEGORIES.get(exception.CODES.get(code, (None,))[0])
        if category is None:
            return None
        return category(code, record['error']['message'])
    result = record['result']
    return normalise.Result(result['properties'], result['details'],
                            result['warnings'])


def _dumps(outcome):
    return json.dumps(_encode(outcome), sort_keys=True)


def _loads(text):
    return _decode(json.loads(text))


def _row_dict(row):
    return dict(row._asdict()) if hasattr(row, '_asdict') else dict(row)


def is_url(location):
    """True when *location* is a database URL rather than a file path."""
    return '://' in location


class StateStore(object):
    """What the audit learnt, per image id and checksum, and per run.

    :param location: a SQLite file path (its directory is created private
        to the owner), or a SQLAlchemy database URL:
        ``postgresql+psycopg2://USER:PASSWORD@HOST/DB``,
        ``mysql+pymysql://USER:PASSWORD@HOST/DB``, ``sqlite:///PATH``.
    :param version: the fingerprint records count for (default: this
        qimgintrospect's version); a record made under another does not.
    :param worker: who records (default :func:`default_worker_id`); with
        coordination, the member id.
    :param run_id: the run records belong to (default: a new one).
    :param retries: how often a call retries a database that does not
        answer (a restart, a failover) before it gives up.
    :param retry_interval: the first wait between retries, in seconds.
    :raises UsageError: ``state-file-unusable`` if the file or database
        cannot be opened or migrated.
    :raises InspectionFailed: ``state-database-unavailable`` if the
        database server does not answer, even after *retries*.

    Every call is its own transaction: what was recorded before an
    interruption stays. A call that finds the database gone (a restart)
    reconnects (connections are pinged before use) and is retried, waiting
    about a minute in all by default; only then does it raise
    ``state-database-unavailable``, and what it was to record is not
    recorded (the image is inspected again by the next run).
    """

    def __init__(self, location, version=None, worker=None, run_id=None,
                 retries=DB_RETRIES, retry_interval=DB_RETRY_INTERVAL):
        self.location = location
        self.version = version or _package_version()
        self.worker = worker or default_worker_id()
        self.run_id = run_id or uuid.uuid4().hex
        #: The SQLite file, or None for a database server.
        self.path = None
        self._engine = None
        self.display = location
        self._retrying = db_api.wrap_db_retry(
            max_retries=retries, retry_interval=retry_interval,
            inc_retry_interval=True, max_retry_interval=_MAX_RETRY_INTERVAL,
            retry_on_disconnect=True, retry_on_deadlock=True,
            exception_checker=_database_trouble)
        try:
            url = self._url(location)
            self.display = url.render_as_string(hide_password=True)
            # The first connection is retried below, with every other call.
            self._engine = engines.create_engine(
                url, max_retries=0, mysql_sql_mode='TRADITIONAL')
            if self.dialect == 'sqlite':
                sa.event.listen(self._engine, 'connect', _sqlite_pragmas)
                # No server to wait for: a file that cannot be opened now
                # will not open in a minute.
                migrate(self._engine)
            else:
                self._retrying(migrate)(self._engine)
        except (db_exc.DBConnectionError, sa.exc.OperationalError) as err:
            self._dispose()
            _raise_interruption(err)
            if self.path is None:
                raise self._unavailable(err)
            raise self._unusable(err)
        except (OSError, ValueError, ImportError, sa.exc.SQLAlchemyError,
                db_exc.DBError, alembic_util.CommandError) as err:
            self._dispose()
            _raise_interruption(err)
            raise self._unusable(err)

    def _unusable(self, err):
        return exception.UsageError(
            exception.STATE_FILE_UNUSABLE,
            'audit state %s: %s' % (self.display, err))

    def _unavailable(self, err):
        return exception.InspectionFailed(
            exception.STATE_UNAVAILABLE,
            'audit state database %s: %s' % (self.display, err))

    def _url(self, location):
        if is_url(location):
            return sa.engine.make_url(location)
        self.path = os.path.abspath(location)
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        return sa.engine.URL.create('sqlite', database=self.path)

    @property
    def dialect(self):
        """``sqlite``, ``postgresql`` or ``mysql``."""
        return self._engine.dialect.name

    def _call(self, fn, *args):
        try:
            return self._retrying(fn)(*args)
        except (db_exc.DBConnectionError, sa.exc.OperationalError) as err:
            _raise_interruption(err)
            raise self._unavailable(err)
        except sa.exc.SQLAlchemyError as err:
            _raise_interruption(err)
            raise

    # The cache: what each image said.

    def get(self, image_id, checksum):
        """The outcome recorded for this image at this checksum, or None.

        None too for a record made under another version, or whose error
        code this version does not know.
        """
        return self._call(self._get, image_id, checksum)

    def _get(self, image_id, checksum):
        with self._engine.connect() as conn:
            text = conn.execute(sa.select(inspected.c.outcome).where(
                inspected.c.image_id == image_id,
                inspected.c.checksum == checksum,
                inspected.c.version == self.version)).scalar()
        return None if text is None else _loads(text)

    def put(self, image_id, checksum, outcome):
        """Record *outcome* (a Result or an IntrospectionError).

        A record of other data (another checksum) or made under another
        version is replaced. A record of the same data under the same
        version that another worker made first is kept.

        :returns: the outcome that counts: *outcome* itself, or what the
            other worker recorded first (the caller writes Glance with
            that one, so an image is never given two different answers).
        """
        return self._call(self._put, image_id, checksum, outcome)

    def _put(self, image_id, checksum, outcome):
        values = dict(image_id=image_id, checksum=checksum,
                      version=self.version, inspected_at=_now(),
                      outcome=_dumps(outcome), worker=self.worker,
                      run_id=self.run_id)
        mine = inspected.c.image_id == image_id
        other_data = sa.or_(inspected.c.checksum != checksum,
                            inspected.c.version != self.version)
        for _ in range(_PUT_ROUNDS):
            # Safe against another worker doing the same at the same time:
            # the UPDATE only matches a record to replace, the INSERT fails
            # on the primary key, and the record read then is the one that
            # made it fail (read for update: the latest, not a snapshot).
            with self._engine.begin() as conn:
                if conn.execute(inspected.update().where(
                        mine, other_data).values(values)).rowcount:
                    return outcome
                try:
                    with conn.begin_nested():
                        conn.execute(inspected.insert().values(values))
                    return outcome
                except db_exc.DBDuplicateEntry:
                    pass
                found = conn.execute(sa.select(
                    inspected.c.checksum, inspected.c.version,
                    inspected.c.outcome).where(mine).with_for_update(
                    )).first()
                if found is None or (found.checksum, found.version) != (
                        checksum, self.version):
                    continue  # replaced or removed meanwhile: once more
                first = _loads(found.outcome)
                if first is not None:
                    return first
                # A record no version of ours can read stands for nothing.
                if conn.execute(inspected.update().where(
                        mine, inspected.c.outcome == found.outcome).values(
                        values)).rowcount:
                    return outcome
        raise exception.InspectionFailed(
            exception.INTERNAL_ERROR,
            'the record of image %s kept changing under this worker'
            % image_id)

    def look_again(self, image_id, checksum):
        """``(journalled, record)`` of an image, in one round trip.

        What a worker that has just claimed the image needs to know:
        *journalled*: whether the run's journal has the image (another
        worker settled it meanwhile); *record*: as :meth:`get` (None
        without a *checksum*).
        """
        return self._call(self._look_again, image_id, checksum)

    def _look_again(self, image_id, checksum):
        with self._engine.connect() as conn:
            journalled = conn.execute(sa.select(run_images.c.image_id).where(
                run_images.c.run_id == self.run_id,
                run_images.c.image_id == image_id)).first() is not None
            text = None if not checksum else conn.execute(sa.select(
                inspected.c.outcome).where(
                    inspected.c.image_id == image_id,
                    inspected.c.checksum == checksum,
                    inspected.c.version == self.version)).scalar()
        return journalled, None if text is None else _loads(text)

    def count(self):
        """How many images have a record (of any version)."""
        return self._call(self._count)

    def _count(self):
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(inspected)).scalar()

    # The journal: what this run did, and who did it.

    def enter_run(self, hostname=None, pid=None):
        """Say that this worker takes part in :attr:`run_id` from now."""
        self._call(self._enter_run, hostname or socket.gethostname(),
                   os.getpid() if pid is None else pid)

    def _enter_run(self, hostname, pid):
        values = dict(run_id=self.run_id, worker=self.worker,
                      hostname=hostname, pid=pid, started_at=_now(),
                      finished_at=None, walked_at=None)
        try:
            with self._engine.begin() as conn:
                conn.execute(run_workers.insert().values(values))
        except db_exc.DBDuplicateEntry:
            pass  # entered already (a reconnection): the first start counts

    def leave_run(self):
        """Say that this worker's part in :attr:`run_id` is over."""
        self._call(self._leave_run)

    def _leave_run(self):
        self._stamp_run_worker(finished_at=_now())

    def _stamp_run_worker(self, **values):
        with self._engine.begin() as conn:
            conn.execute(run_workers.update().where(
                run_workers.c.run_id == self.run_id,
                run_workers.c.worker == self.worker).values(**values))

    def mark_walked(self):
        """Say that this worker has walked the whole catalogue.

        From then on it takes up no image it had not queued, so the others
        may take any image of its share it has not journalled (see
        :meth:`walking_workers`).
        """
        self._call(self._mark_walked)

    def _mark_walked(self):
        self._stamp_run_worker(walked_at=_now())

    def walking_workers(self, run_id=None):
        """The workers of the run still walking the catalogue.

        Those that entered the run and have not said
        :meth:`mark_walked` (a worker killed while walking stays in it:
        the coordination service, not this, says it is gone).
        """
        return self._call(self._walking_workers, run_id or self.run_id)

    def _walking_workers(self, run_id):
        with self._engine.connect() as conn:
            return set(conn.execute(sa.select(run_workers.c.worker).where(
                run_workers.c.run_id == run_id,
                run_workers.c.walked_at.is_(None))).scalars())

    def journal(self, image_id, outcome, rows=(), changed=False,
                unchanged=False):
        """Record what this worker did about *image_id* in this run.

        :param outcome: what the image said (inspected now, or, with
            *unchanged*, the record it was compared from).
        :param rows: the report's rows for the image (namedtuples or
            dicts), with the actions as done.
        :param changed: whether Glance was written.
        :returns: True if the line is this worker's; False if another
            worker journalled the image first in this run (two workers
            held a claim on it in turn, after a claim expired or the
            coordination service lost it): the first line is kept, it
            says what was done to Glance. A later call of the same worker
            for the same image replaces its own line.
        """
        return self._call(self._journal, dict(
            run_id=self.run_id, image_id=image_id, worker=self.worker,
            done_at=_now(), outcome=_dumps(outcome),
            unchanged=bool(unchanged), changed=bool(changed),
            report_rows=json.dumps([_row_dict(r) for r in rows],
                                   sort_keys=True)))

    def _journal(self, values):
        try:
            with self._engine.begin() as conn:
                conn.execute(run_images.insert().values(values))
            return True
        except db_exc.DBDuplicateEntry:
            with self._engine.begin() as conn:
                return bool(conn.execute(run_images.update().where(
                    run_images.c.run_id == values['run_id'],
                    run_images.c.image_id == values['image_id'],
                    run_images.c.worker == values['worker']).values(
                        values)).rowcount)

    def journalled(self, run_id=None, image_ids=None):
        """The ids of the images the run's journal has (any worker).

        :param image_ids: ask about these only (fewer rows to read than
            the whole run's journal); None: every image.
        """
        return self._call(self._journalled, run_id or self.run_id,
                          None if image_ids is None else list(image_ids))

    def _journalled(self, run_id, image_ids):
        query = sa.select(run_images.c.image_id).where(
            run_images.c.run_id == run_id)
        with self._engine.connect() as conn:
            if image_ids is None:
                return set(conn.execute(query).scalars())
            found = set()
            for start in range(0, len(image_ids), _IDS_PER_QUERY):
                found.update(conn.execute(query.where(
                    run_images.c.image_id.in_(
                        image_ids[start:start + _IDS_PER_QUERY]))).scalars())
            return found

    def run_journal(self, run_id=None):
        """The run's :class:`JournalEntry` list, every worker's, by id."""
        return self._call(self._run_journal, run_id or self.run_id)

    def _run_journal(self, run_id):
        with self._engine.connect() as conn:
            found = conn.execute(sa.select(run_images).where(
                run_images.c.run_id == run_id).order_by(
                    run_images.c.image_id)).all()
        return [JournalEntry(r.image_id, r.worker, r.done_at,
                             _loads(r.outcome), json.loads(r.report_rows),
                             r.changed, r.unchanged) for r in found]

    def worker_figures(self, run_id=None):
        """What each worker of the run did, and how fast.

        :returns: one dict per worker that entered the run, ordered by
            start: ``worker``, ``hostname``, ``pid``, ``started_at``,
            ``finished_at`` (None: still running, or killed), ``inspected``
            (images downloaded and inspected), ``from_record`` (compared
            from the record and acted upon), ``seconds`` (from its start to
            its end, or to its last journal line) and ``images_per_minute``
            (inspected images per minute of that time; None for no time).
        """
        return self._call(self._worker_figures, run_id or self.run_id)

    def _worker_figures(self, run_id):
        done = sa.select(
            run_images.c.worker, run_images.c.unchanged,
            sa.func.count().label('images'),
            sa.func.max(run_images.c.done_at).label('last')).where(
                run_images.c.run_id == run_id).group_by(
                    run_images.c.worker, run_images.c.unchanged)
        with self._engine.connect() as conn:
            workers = conn.execute(sa.select(run_workers).where(
                run_workers.c.run_id == run_id).order_by(
                    run_workers.c.started_at)).all()
            counts = conn.execute(done).all()
        figures = []
        for w in workers:
            mine = [c for c in counts if c.worker == w.worker]
            inspected_now = sum(c.images for c in mine if not c.unchanged)
            end = w.finished_at or max([c.last for c in mine],
                                       default=w.started_at)
            seconds = round((datetime.datetime.fromisoformat(end)
                             - datetime.datetime.fromisoformat(w.started_at)
                             ).total_seconds(), 3)
            figures.append({
                'worker': w.worker, 'hostname': w.hostname, 'pid': w.pid,
                'started_at': w.started_at, 'finished_at': w.finished_at,
                'inspected': inspected_now,
                'from_record': sum(c.images for c in mine if c.unchanged),
                'seconds': seconds,
                'images_per_minute': (round(60.0 * inspected_now / seconds,
                                            2) if seconds > 0 else None),
            })
        return figures

    def close(self):
        """Let go of every connection; every call before was committed."""
        self._dispose()

    def _dispose(self):
        if self._engine is not None:
            self._engine.dispose()


def _interruption(err):
    """The signal's exit or Ctrl-C that *err* was raised over, or None.

    A signal ends the process with SystemExit wherever it lands
    (:mod:`qimgintrospect.cmd.shell`); in the middle of a statement,
    SQLAlchemy's rollback on the way out then raises its own error
    ("Can't reconnect until invalid transaction is rolled back"), which
    must neither pass for a broken database nor be retried.
    """
    cause = err.__context__
    while cause is not None:
        if isinstance(cause, (SystemExit, KeyboardInterrupt)):
            return cause
        cause = cause.__context__
    return None


def _raise_interruption(err):
    """Raise what :func:`_interruption` finds under *err*, if anything."""
    interruption = _interruption(err)
    if interruption is not None:
        raise interruption


def _database_trouble(exc):
    """Whether *exc* is the database's trouble, worth a retry.

    oslo.db turns a lost connection into DBConnectionError, but not every
    refused one (its PostgreSQL pattern is libpq's wording before 14, "could
    not connect to server"). An OperationalError is, in DB-API terms, the
    database's operation failing (refused, cut, shutting down, locked), never
    a mistake in the statement: retried alike.
    """
    return (isinstance(exc, sa.exc.OperationalError)
            and _interruption(exc) is None)


def _sqlite_pragmas(dbapi_connection, connection_record):
    # Several workers of one host may share the file: readers do not
    # block the writer in the write-ahead log, and a writer waits for
    # another's transaction instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA busy_timeout = %d' % _SQLITE_BUSY_MS)
    cursor.execute('PRAGMA journal_mode = WAL')
    cursor.close()


def _alembic_config(connection):
    config = alembic_config.Config()
    config.set_main_option('script_location', _MIGRATIONS)
    config.attributes['connection'] = connection
    return config


@contextlib.contextmanager
def _migration_lock(engine):
    """Only one process migrates a database at a time.

    Held until the migration is committed, so the next process sees it
    whole. PostgreSQL's lock is taken in the migration's own transaction
    (:func:`_lock_in_transaction`) and ends with it.
    """
    dialect = engine.dialect.name
    if dialect == 'mysql':
        # A session lock, on a connection of its own.
        with engine.connect() as conn:
            conn.execute(sa.text('SELECT GET_LOCK(:name, 300)'),
                         {'name': VERSION_TABLE})
            try:
                yield
            finally:
                conn.execute(sa.text('SELECT RELEASE_LOCK(:name)'),
                             {'name': VERSION_TABLE})
    elif dialect == 'sqlite' and engine.url.database not in (None, '',
                                                             ':memory:'):
        # A lock file beside the database file, in the same private
        # directory.
        path = os.path.abspath(engine.url.database)
        with lockutils.lock(os.path.basename(path) + '.migrate',
                            external=True,
                            lock_path=os.path.dirname(path)):
            yield
    else:
        yield


def _lock_in_transaction(connection):
    if connection.dialect.name == 'postgresql':
        connection.execute(sa.text('SELECT pg_advisory_xact_lock(:key)'),
                           {'key': _LOCK_KEY})


def migrate(engine):
    """Bring the database of *engine* to this version's schema.

    A database without the version table but with the ``inspected`` table
    is a state file from before alembic: it is marked as the revision that
    is its schema, then upgraded like any other.

    :raises: oslo_db and alembic errors; :class:`StateStore` turns them
        into ``state-file-unusable``.
    """
    with _migration_lock(engine), engine.begin() as connection:
        _lock_in_transaction(connection)
        config = _alembic_config(connection)
        tables = set(sa.inspect(connection).get_table_names())
        if inspected.name in tables and VERSION_TABLE not in tables:
            LOG.info('Carrying the audit state of a version before alembic '
                     'over (revision %s)', LEGACY_REVISION)
            alembic_command.stamp(config, LEGACY_REVISION)
        alembic_command.upgrade(config, 'head')


def head_revision():
    """The revision this version's schema is at."""
    return alembic_script.ScriptDirectory(_MIGRATIONS).get_current_head()


def current_revision(engine):
    """The revision the database of *engine* is at, or None."""
    with engine.connect() as connection:
        return alembic_migration.MigrationContext.configure(
            connection, opts={'version_table': VERSION_TABLE}
        ).get_current_revision()


#: Options whose values change what an image is found to say, by group
#: (None: all the group's options). Of [introspection_guest], whether the
#: stage runs and whether an unbootable guest is refused: the others
#: (backend, timeouts, memory) decide whether an appliance starts, not what
#: it finds, and a result whose appliance did not start is not recorded.
_FINDING_OPTIONS = {opts.QEMU_IMG_GROUP: None, opts.FORMATS_GROUP: None,
                    opts.GUEST_GROUP: ('enabled', 'refuse_unbootable')}


def fingerprint(conf):
    """This qimgintrospect's version and the options that shape findings.

    Records made under another fingerprint do not count: after an upgrade,
    or once an operator allows a format or turns on guest detection, every
    image is looked at again.
    """
    values = {}
    for group, group_opts in opts.list_opts():
        if group in _FINDING_OPTIONS:
            names = _FINDING_OPTIONS[group] or [o.dest for o in group_opts]
            values[group] = {name: conf[group][name] for name in names}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True,
                                       default=str).encode()).hexdigest()
    return '%s/%s' % (_package_version(), digest[:16])


def configured_location(conf):
    """``state_connection`` if set, else ``state_file``."""
    group = conf[opts.AUDIT_GROUP]
    return group.state_connection or group.state_file


@contextlib.contextmanager
def state_store(conf, location=None, worker=None, run_id=None):
    """A :class:`StateStore` on *location* (default: the configured one).

    Its records count for this :func:`fingerprint` of *conf* only.
    """
    store = StateStore(location or configured_location(conf),
                       fingerprint(conf), worker=worker, run_id=run_id)
    try:
        yield store
    finally:
        store.close()
