"""A real redis-server and a real PostgreSQL, for tests and benchmarks.

The audit's workers share a coordination service (tooz over Redis) and a
state database (PostgreSQL); the tests run the real servers of the Debian
packages ``redis-server`` and ``postgresql`` (bindep.txt, profile test).

Each server lives in a temporary directory of its own, listens on
127.0.0.1 on a free port (and PostgreSQL on a Unix socket in its
directory), is started without daemonizing so that the process this module
started is the server itself, and is stopped by that pid, never by name.
Both can be stopped and started again on the same port and data, which is
how the tests make a service outage. A server also gets SIGTERM when the
process that started it dies (PR_SET_PDEATHSIG), so an interrupted test
session leaves nothing running.

PostgreSQL refuses to run as root: when this process is root, initdb and
postgres run as the ``postgres`` user the Debian package creates, and the
directory belongs to that user.
"""

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

_PR_SET_PDEATHSIG = 1
#: Bounds of the waits for a server to answer or to stop (counts of polls,
#: not assertions; generous, for a machine busy with other tests).
_START_POLLS = 600
_STOP_POLLS = 300
_POLL_INTERVAL = 0.05
_LOG_TAIL = 3000


class ServerError(Exception):
    """A server did not start or did not stop; the message has its log."""


def free_port():
    """A TCP port on 127.0.0.1 nobody listens on (at the time of asking)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _die_with_parent():
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(
        _PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _answers(port):
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=1):
            return True
    except OSError:
        return False


class _Server(object):
    """One server process in *directory*, stopped and started by its pid."""

    name = 'server'

    def __init__(self):
        self.directory = None
        self.port = None
        self.process = None
        self._log = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.cleanup()

    @property
    def pid(self):
        return self.process.pid if self.running else None

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def log_text(self):
        """The end of the server's log, for failure messages."""
        try:
            with open(self._log, errors='replace') as f:
                return f.read()[-_LOG_TAIL:]
        except (OSError, TypeError):
            return ''

    def start(self):
        """Create the directory (first time only), start, wait until up."""
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix='qimg-%s-' % self.name)
            self._log = os.path.join(self.directory, '%s.log' % self.name)
            self.port = free_port()
            self._prepare()
        self._spawn()
        for _ in range(_START_POLLS):
            if self.process.poll() is not None:
                raise ServerError('%s exited with %s:\n%s' % (
                    self.name, self.process.returncode, self.log_text()))
            if _answers(self.port) and self._ready():
                return
            time.sleep(_POLL_INTERVAL)
        self.stop()
        raise ServerError('%s did not answer on port %d:\n%s' % (
            self.name, self.port, self.log_text()))

    def stop(self, sig=signal.SIGTERM):
        """Stop the server by its pid (*sig*, then SIGKILL); keep its data."""
        if not self.running:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=_STOP_POLLS * _POLL_INTERVAL)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # Nobody may answer on the port once stop() returns: a restart
        # test relies on the outage being real.
        for _ in range(_STOP_POLLS):
            if not _answers(self.port):
                return
            time.sleep(_POLL_INTERVAL)

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
                self.directory = None

    def _popen(self, argv, **kwargs):
        log = open(self._log, 'ab')
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.directory,
                preexec_fn=_die_with_parent, **kwargs)
        finally:
            log.close()

    def _prepare(self):
        pass

    def _spawn(self):
        raise NotImplementedError

    def _ready(self):
        return True


class RedisServer(_Server):
    """redis-server with no persistence: a restart loses every key.

    That is the harshest restart a coordination service can have (tooz's
    groups, heartbeats and locks all vanish), and the one the tests make.
    """

    name = 'redis'

    @staticmethod
    def available():
        return shutil.which('redis-server') is not None

    def url(self, **options):
        """A tooz URL for this server; *options* go in the query string."""
        query = '&'.join('%s=%s' % item for item in sorted(options.items()))
        return 'redis://127.0.0.1:%d%s' % (self.port,
                                           '?' + query if query else '')

    def _spawn(self):
        self.process = self._popen([
            shutil.which('redis-server'), '--port', str(self.port),
            '--bind', '127.0.0.1', '--dir', self.directory,
            '--save', '', '--appendonly', 'no', '--daemonize', 'no',
            '--protected-mode', 'yes'])

    def _ready(self):
        try:
            with socket.create_connection(('127.0.0.1', self.port),
                                          timeout=1) as sock:
                sock.sendall(b'PING\r\n')
                return sock.recv(64).startswith(b'+PONG')
        except OSError:
            return False


def postgres_bin_dir():
    """The bin directory of the newest Debian PostgreSQL, or None."""
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/postgres'),
                   key=lambda p: int(p.split('/')[4]))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer(_Server):
    """A PostgreSQL cluster of its own, with a database *database*.

    The superuser is *user*, trusted on 127.0.0.1 and on the socket (no
    password): the cluster is private to the test's directory and port.
    Stopping is PostgreSQL's fast shutdown (SIGINT), what ``pg_ctl stop``
    and ``systemctl restart postgresql`` do: sessions are cut, which is the
    restart the audit's state store must survive.
    """

    name = 'postgres'
    user = 'qimg'
    database = 'audit'

    def __init__(self):
        super().__init__()
        self.bin_dir = postgres_bin_dir()
        self._first_start = False
        # postgres refuses to run as root.
        self._run_as = {}
        if os.geteuid() == 0:
            self._run_as = dict(user='postgres', group='postgres',
                                extra_groups=[])

    @staticmethod
    def available():
        if postgres_bin_dir() is None:
            return False
        if os.geteuid() == 0:
            try:
                pwd.getpwnam('postgres')
            except KeyError:
                return False
        return True

    def url(self, database=None, driver='postgresql+psycopg2'):
        """The SQLAlchemy URL of *database* (default: the one made)."""
        return '%s://%s@127.0.0.1:%d/%s' % (driver, self.user, self.port,
                                            database or self.database)

    def stop(self, sig=signal.SIGINT):
        super().stop(sig)

    def _prepare(self):
        if self._run_as:
            account = pwd.getpwnam(self._run_as['user'])
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        proc = subprocess.run(
            [os.path.join(self.bin_dir, 'initdb'), '-D', self._data,
             '-U', self.user, '--auth=trust', '-E', 'UTF8', '--no-sync'],
            cwd=self.directory, capture_output=True, text=True,
            **self._run_as)
        if proc.returncode != 0:
            raise ServerError('initdb failed: %s' % proc.stderr[-_LOG_TAIL:])
        self._first_start = True

    @property
    def _data(self):
        return os.path.join(self.directory, 'data')

    def _spawn(self):
        self.process = self._popen(
            [os.path.join(self.bin_dir, 'postgres'), '-D', self._data,
             '-p', str(self.port), '-c', 'listen_addresses=127.0.0.1',
             '-c', 'unix_socket_directories=%s' % self.directory,
             # A test cluster: what it loses in a power cut does not
             # matter; a clean shutdown still writes everything.
             '-c', 'fsync=off', '-c', 'full_page_writes=off'],
            **self._run_as)

    def _ready(self):
        proc = subprocess.run(
            [os.path.join(self.bin_dir, 'psql'), '-h', '127.0.0.1', '-p',
             str(self.port), '-U', self.user, '-d', 'postgres', '-Atqc',
             'SELECT 1'], capture_output=True, text=True)
        if proc.returncode != 0:
            return False
        if self._first_start:
            self.psql('CREATE DATABASE %s' % self.database,
                      database='postgres')
            self._first_start = False
        return True

    def psql(self, sql, database=None):
        """Run *sql* with psql as the superuser; return its output."""
        proc = subprocess.run(
            [os.path.join(self.bin_dir, 'psql'), '-h', '127.0.0.1', '-p',
             str(self.port), '-U', self.user, '-d',
             database or self.database, '-v', 'ON_ERROR_STOP=1', '-Atqc',
             sql], capture_output=True, text=True)
        if proc.returncode != 0:
            raise ServerError('psql %r: %s' % (sql, proc.stderr))
        return proc.stdout
