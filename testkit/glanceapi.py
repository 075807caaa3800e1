"""A real glance-api on 127.0.0.1 for the functional tests and benchmarks.

:class:`GlanceServer` writes a glance-api.conf, a paste pipeline and a
uWSGI ini into a temporary directory, creates the database schema with
``glance-manage db_sync`` and serves ``glance.wsgi.api:application`` with
uWSGI on a free loopback port, with the qimgintrospect import plugin
enabled. It stops the server by the pid of the uWSGI master it started
(the master's process group, so its worker goes too), never by name.

There is no Keystone: the paste pipeline puts :class:`TokenIdentity` in
front of Glance's ``context`` middleware. It plays keystonemiddleware's
part and turns a token ``USER:PROJECT:ROLE[,ROLE]`` into the identity
headers Glance reads, so every client (python-glanceclient, the CLI in
endpoint-and-token mode) talks to this Glance as it would to a real cloud,
and each project id is a real tenant of the catalogue.

The tests' ``glance_server`` fixture (tests/functional/glance_server.py,
session scope) starts one server for the whole test session; tests that
need it are skipped when glance or uWSGI is not installed.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_ROLES = 'admin,member,reader'
_PR_SET_PDEATHSIG = 1
#: Bounds of the waits for the server and for an import (counts of polls,
#: not assertions; generous, for a machine busy with other tests).
_START_POLLS = 1200
_IMPORT_POLLS = 3000
_POLL_INTERVAL = 0.1
#: Imports made again when Glance lost them to a locked SQLite database.
_IMPORT_ATTEMPTS = 3
#: How long a task Glance logged as processing may stay pending before
#: it counts as lost (its save failed).
_LEFT_PENDING_POLLS = 200
#: How much of the server's log an import that did not end reports.
_LOG_TAIL = 4000


def token(project_id, user_id=None, roles=ADMIN_ROLES):
    """The token :class:`TokenIdentity` turns into this identity."""
    return '%s:%s:%s' % (user_id or project_id, project_id, roles)


def new_project_id():
    return uuid.uuid4().hex


def auth_args(url, project_id):
    """The CLI's endpoint-and-token options for *project_id* at *url*."""
    return ['--os-auth-type', 'admin_token', '--os-endpoint', url,
            '--os-token', token(project_id)]


class TokenIdentity(object):
    """WSGI middleware: the identity of a ``USER:PROJECT:ROLES`` token.

    Identity headers a client sent itself are removed first, as
    keystonemiddleware does; a request without a well-formed token is
    refused with 401.
    """

    _HEADERS = ('HTTP_X_IDENTITY_STATUS', 'HTTP_X_USER_ID',
                'HTTP_X_PROJECT_ID', 'HTTP_X_TENANT_ID', 'HTTP_X_ROLES',
                'HTTP_X_ROLE')

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        for name in self._HEADERS:
            environ.pop(name, None)
        parts = environ.get('HTTP_X_AUTH_TOKEN', '').split(':')
        if len(parts) != 3 or not all(parts):
            start_response('401 Unauthorized',
                           [('Content-Type', 'text/plain')])
            return [b'token USER:PROJECT:ROLES required\n']
        user_id, project_id, roles = parts
        environ.update({'HTTP_X_IDENTITY_STATUS': 'Confirmed',
                        'HTTP_X_USER_ID': user_id,
                        'HTTP_X_PROJECT_ID': project_id,
                        'HTTP_X_ROLES': roles})
        return self.app(environ, start_response)

    @classmethod
    def factory(cls, global_conf, **local_conf):
        return cls


_PASTE_INI = """\
[composite:glance-api-tokenidentity]
paste.composite_factory = glance.api:root_app_factory
/: api

[composite:api]
paste.composite_factory = glance.api:pipeline_factory
tokenidentity = versionnegotiation tokenidentity context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[filter:versionnegotiation]
paste.filter_factory = \
glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[filter:tokenidentity]
paste.filter_factory = testkit.glanceapi:TokenIdentity.factory
"""


def glance_available():
    """Whether glance and uWSGI are installed beside this Python."""
    try:
        import glance  # noqa: F401
    except ImportError:
        return False
    return bool(_bin('uwsgi') and _bin('glance-manage'))


def _bin(name):
    return shutil.which(name, path=os.path.dirname(sys.executable))


def _terminate_with_parent():
    # A test run killed outright (no finally runs) must not leave a
    # server behind: the kernel sends the master SIGTERM when its parent
    # dies (PR_SET_PDEATHSIG), and die-on-term takes its worker along.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _free_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class GlanceServer(object):
    """One glance-api served by uWSGI from files under *base_dir*.

    :param plugin_options: ``{group: {option: value}}`` written into
        glance-api.conf beside the defaults (the plugin's policy, the
        workspace).
    """

    def __init__(self, base_dir, plugin_options=None):
        self.base_dir = str(base_dir)
        self.config_dir = os.path.join(self.base_dir, 'etc')
        self.workspace = os.path.join(self.base_dir, 'workspace')
        self.log_file = os.path.join(self.base_dir, 'glance-api.log')
        self.data_dir = os.path.join(self.base_dir, 'data')
        self.database = os.path.join(self.data_dir, 'glance.sqlite')
        self.plugin_options = plugin_options or {}
        self.port = None
        self.process = None

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def write_config(self):
        data = self.data_dir
        os.makedirs(self.config_dir, exist_ok=True)
        for sub in ('images', 'staging', 'tasks'):
            os.makedirs(os.path.join(data, sub), exist_ok=True)
        sections = {
            'DEFAULT': {
                'enabled_backends': 'fs:file',
                'enabled_import_methods': "['glance-direct']",
                'log_file': self.log_file,
                'debug': 'false',
            },
            'database': {'connection': 'sqlite:///' + self.database},
            'glance_store': {'default_backend': 'fs'},
            'fs': {'filesystem_store_datadir': data + '/images'},
            'os_glance_staging_store': {
                'filesystem_store_datadir': data + '/staging'},
            'os_glance_tasks_store': {
                'filesystem_store_datadir': data + '/tasks'},
            'paste_deploy': {'flavor': 'tokenidentity'},
            'image_import_opts': {
                'image_import_plugins': "['qimgintrospect']"},
            'introspection_workspace': {
                'directory': self.workspace,
                'min_free_mb': '0',
                'slot_wait_timeout': '60',
            },
        }
        for group, values in self.plugin_options.items():
            sections.setdefault(group, {}).update(
                {k: str(v) for k, v in values.items()})
        with open(os.path.join(self.config_dir, 'glance-api.conf'), 'w') as f:
            for group, values in sections.items():
                f.write('[%s]\n' % group)
                for name, value in values.items():
                    f.write('%s = %s\n' % (name, value))
                f.write('\n')
        with open(os.path.join(self.config_dir, 'glance-api-paste.ini'),
                  'w') as f:
            f.write(_PASTE_INI)

    def start(self):
        """Start the server and return once it answers on its port."""
        self.write_config()
        subprocess.run([_bin('glance-manage'), '--config-dir',
                        self.config_dir, 'db_sync'],
                       check=True, capture_output=True, timeout=300)
        self._use_write_ahead_log()
        self.port = _free_port()
        ini = os.path.join(self.config_dir, 'uwsgi.ini')
        with open(ini, 'w') as f:
            f.write(textwrap.dedent("""\
                [uwsgi]
                module = glance.wsgi.api:application
                http-socket = 127.0.0.1:%(port)d
                pythonpath = %(repo)s
                env = OS_GLANCE_CONFIG_DIR=%(config_dir)s
                master = true
                processes = 1
                threads = 4
                lazy-apps = true
                die-on-term = true
                need-app = true
                buffer-size = 65535
                # uWSGI closes the connection after each response: say so,
                # or a client reusing it gets "connection reset".
                add-header = Connection: close
                # Uploads arrive chunked, in pieces larger than uWSGI's 1 MiB
                # default limit.
                chunked-input-limit = 67108864
                """) % {'port': self.port, 'repo': REPO_ROOT,
                        'config_dir': self.config_dir})
        log = open(os.path.join(self.base_dir, 'uwsgi.log'), 'ab')
        with log:
            # A session of its own, so that stop() can end the master and
            # its worker as one process group, found by the master's pid.
            self.process = subprocess.Popen(
                [_bin('uwsgi'), '--ini', ini], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.base_dir,
                preexec_fn=_terminate_with_parent)
        try:
            self._wait_until_up()
        except Exception:
            self.stop()
            raise

    def _use_write_ahead_log(self):
        # Glance takes SQLite locks from its request threads and, during
        # an import, from two threads of the task at once; in SQLite's
        # default journal mode a reader blocks a writer and the loser
        # fails at once with "database is locked". The write-ahead log
        # (a setting stored in the database file) lets readers and one
        # writer go on together.
        with contextlib.closing(sqlite3.connect(self.database)) as db:
            db.execute('PRAGMA journal_mode=WAL')

    def _wait_until_up(self):
        for _ in range(_START_POLLS):
            if self.process.poll() is not None:
                raise RuntimeError('glance-api exited with %s; see %s'
                                   % (self.process.returncode, self.base_dir))
            try:
                with socket.create_connection(('127.0.0.1', self.port),
                                              timeout=1) as sock:
                    sock.sendall(b'GET /versions HTTP/1.0\r\n\r\n')
                    if sock.recv(12).startswith(b'HTTP/1.'):
                        return
            except OSError:
                pass
            time.sleep(_POLL_INTERVAL)
        raise RuntimeError('glance-api did not answer on port %d; see %s'
                           % (self.port, self.base_dir))

    def stop(self):
        """Stop the server this object started (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def client(self, project_id, roles=ADMIN_ROLES):
        """A python-glanceclient v2 client acting as *project_id*."""
        from glanceclient import client as glanceclient
        from keystoneauth1 import session
        from keystoneauth1 import token_endpoint

        auth = token_endpoint.Token(self.url, token(project_id, roles=roles))
        return glanceclient.Client('2', session=session.Session(auth=auth))

    def log_text(self):
        with contextlib.suppress(OSError):
            with open(self.log_file, errors='replace') as f:
                return f.read()
        return ''

    def import_image(self, client, path, disk_format, **properties):
        """Import *path* with glance-direct; return (image, task) once it ends.

        The task may have ended either way: the caller checks its status.
        An import that Glance lost or failed on its own SQLite database is
        made again with a new image (see :meth:`_lost_to_the_database`).
        """
        for _ in range(_IMPORT_ATTEMPTS):
            image, task = self._import_once(client, path, disk_format,
                                            properties)
            if not self._lost_to_the_database(task):
                break
        return image, task

    def _import_once(self, client, path, disk_format, properties):
        image = create_image(client, disk_format, **properties)
        with open(path, 'rb') as f:
            client.images.stage(image['id'], f)
        client.images.image_import(image['id'], method='glance-direct')
        left_pending = 0
        for _ in range(_IMPORT_POLLS):
            tasks = client.images.get_associated_image_tasks(
                image['id'])['tasks']
            ended = [t for t in tasks if t['status'] in ('success', 'failure')]
            if ended:
                return client.images.get(image['id']), ended[-1]
            if any(map(self._left_pending, tasks)):
                left_pending += 1
                if left_pending == _LEFT_PENDING_POLLS:
                    return client.images.get(image['id']), tasks[-1]
            time.sleep(_POLL_INTERVAL)
        states = [(t['id'], t['status']) for t in tasks]
        raise RuntimeError(
            'the import of %s did not end: its tasks are %s; the end of %s:'
            '\n%s' % (image['id'], states, self.log_file,
                      self.log_text()[-_LOG_TAIL:]))

    def _left_pending(self, task):
        # Glance logs the change to "processing" before it saves it; a task
        # whose save failed stays "pending" and nothing runs it any more.
        return task['status'] == 'pending' and (
            'Task [%s] status changing from pending to processing'
            % task['id']) in self.log_text()

    def _lost_to_the_database(self, task):
        """Whether Glance's SQLite storage, not the plugin, ended *task*.

        Glance takes SQLite locks from several threads of one import; the
        loser fails at once with "database is locked" (a database server
        waits instead). Either the task then failed with only "Internal
        Error" as its message and the reason in the log, or the failed
        save was its start and it stays pending.
        """
        if task['status'] == 'pending':
            return True
        return task['status'] == 'failure' and (
            'Failed to execute task %s: (sqlite3.OperationalError) '
            'database is locked' % task['id']) in self.log_text()


def create_image(client, disk_format, name='test', **properties):
    return client.images.create(name=name, disk_format=disk_format,
                                container_format='bare', **properties)


def upload_image(client, path, disk_format, **properties):
    """Create an image and upload *path* with PUT; return it, active.

    This is the upload without an import flow: no plugin runs.
    """
    image = create_image(client, disk_format, **properties)
    with open(path, 'rb') as f:
        client.images.upload(image['id'], f)
    return client.images.get(image['id'])
