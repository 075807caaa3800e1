"""A remote image served read-only over NBD by nbdkit, on a Unix socket.

:func:`serve` guarantees:

* nbdkit runs read-only (``--readonly``) with this package's plugin
  (:mod:`.nbdplugin`), listening only on a Unix socket in a new directory
  of mode 0700 inside the caller's directory (a workspace slot);
* the block starts once nbdkit accepts connections (it writes its
  pidfile then) and gets an :class:`Export`: ``uri`` for qemu-img,
  ``server`` for libguestfs's ``add_drive_opts``;
* nbdkit is stopped by its own pid (SIGTERM, then SIGKILL) however the
  block ends; ``--exit-with-parent`` ends it if this process dies first
  (nbdkit watches the *thread* that started it, which a ``with`` block
  outlives), and the export directory is removed;
* the plugin attaches to the caller's :class:`.BlockCache`: what the
  caller read already (the header, the tail) is not fetched again, and
  the cache's counters include the plugin's reads;
* a failure the plugin met (a lying server, the budget) is raised here
  with its own code: in place of the error the NBD client made of its
  ``EIO`` (chained to it) when the block raises, by :meth:`Export.check`,
  and when the block ends. An nbdkit that died, or never served, is
  ``remote-export-failed`` with the end of its log;
* credentials never appear on a command line or in the environment: the
  headers go to a file of mode 0600 beside the socket. Renewable ones
  (a keystoneauth session) are asked for again every
  ``refresh_interval`` seconds while the block runs, and the file is
  replaced when they changed; keystoneauth renews a token two minutes
  before it expires, so with the default of 60 s the plugin's token has
  a minute left at worst. A revoked token is ``remote-auth-failed``.
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

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from oslo_log import log as logging

from qimgintrospect import exception
from qimgintrospect.remote import httpranges

LOG = logging.getLogger(__name__)

PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'nbdplugin.py')
START_TIMEOUT = 30
STOP_TIMEOUT = 10
REFRESH_INTERVAL = 60
# sun_path is 108 bytes, its terminating NUL included.
_MAX_SOCKET_PATH = 107
_POLL_INTERVAL = 0.05
_LOG_TAIL = 2000

_availability = {}
_availability_lock = threading.Lock()


class Export(object):
    """A running export. ``uri``: ``nbd+unix:///?socket=PATH``."""

    def __init__(self, directory, process):
        self.directory = directory
        self.socket = os.path.join(directory, 'sock')
        self.uri = 'nbd+unix:///?socket=' + self.socket
        #: How qemu-img names the export in its JSON (``filename``, a
        #: VMDK's extents): its own spelling of the URI.
        self.qemu_filename = 'nbd+unix://?socket=' + self.socket
        #: For libguestfs: ``add_drive_opts(uri_path, protocol='nbd',
        #: server=export.server, ...)``.
        self.server = ['unix:' + self.socket]
        self.pid = process.pid
        self._process = process
        self._failure_path = os.path.join(directory, 'failure.json')
        self._log_path = os.path.join(directory, 'nbdkit.log')

    def failure(self):
        """The error the plugin recorded, rebuilt, or None."""
        try:
            with open(self._failure_path) as f:
                recorded = json.load(f)
        except FileNotFoundError:
            return None
        return exception.error_from_code(recorded['code'],
                                         recorded['message'])

    def check(self):
        """Raise what went wrong in the export so far, if anything.

        :raises IntrospectionError: the plugin's failure, with its code.
        :raises InspectionFailed: remote-export-failed (nbdkit died).
        """
        failure = self.failure()
        if failure is not None:
            raise failure
        if self._process.poll() is not None:
            raise exception.InspectionFailed(
                exception.REMOTE_EXPORT_FAILED,
                'nbdkit (pid %d) exited with %s while serving; its log '
                'ends: %s' % (self.pid, self._process.returncode,
                              self.log_tail()))

    def log_tail(self):
        try:
            with open(self._log_path, 'rb') as f:
                f.seek(max(os.fstat(f.fileno()).st_size - _LOG_TAIL, 0))
                return f.read().decode('utf-8', 'replace').strip()
        except OSError:
            return ''


def available():
    """Whether nbdkit and its python plugin can run here (asked once).

    :returns: None when they can, else why not (one line).
    """
    with _availability_lock:
        if 'answer' not in _availability:
            _availability['answer'] = _ask_nbdkit()
        return _availability['answer']


def _ask_nbdkit():
    nbdkit = shutil.which('nbdkit')
    if nbdkit is None:
        return 'nbdkit is not installed'
    try:
        subprocess.run([nbdkit, 'python', '--version'], check=True,
                       capture_output=True, timeout=START_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as err:
        return 'nbdkit cannot load its python plugin: %s' % (
            getattr(err, 'stderr', None) or err)
    return None


@contextlib.contextmanager
def serve(directory, cache, auth=None, start_timeout=START_TIMEOUT,
          refresh_interval=REFRESH_INTERVAL):
    """Serve *cache* (its reader's image) read-only; yield an Export.

    :param directory: where the export's directory is made (a slot).
    :param cache: a :class:`.BlockCache` whose ``reader`` is a
        :class:`.RangeReader`.
    :param auth: the reader's credentials (see
        :func:`.httpranges.credentials`), or None.
    :raises InspectionFailed: remote-export-failed (nbdkit missing, did
        not start, or died), and whatever the plugin recorded.
    """
    nbdkit = shutil.which('nbdkit')
    if nbdkit is None:
        raise exception.InspectionFailed(
            exception.REMOTE_EXPORT_FAILED,
            'nbdkit is not installed (Debian packages nbdkit and '
            'nbdkit-plugin-python)')
    export_dir = tempfile.mkdtemp(prefix='nbd-', dir=directory)
    try:
        socket_path = os.path.join(export_dir, 'sock')
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            raise exception.InspectionFailed(
                exception.REMOTE_EXPORT_FAILED,
                'the socket path %s is longer than a Unix socket allows '
                '(%d bytes): use a shorter workspace directory'
                % (socket_path, _MAX_SOCKET_PATH))
        spec_path = _write_spec(export_dir, cache, auth)
        process = _start(nbdkit, export_dir, spec_path)
    except BaseException:
        shutil.rmtree(export_dir, ignore_errors=True)
        raise
    export = Export(export_dir, process)
    stop_refreshing = threading.Event()
    try:
        _wait_until_serving(export, process, start_timeout)
        if auth is not None and auth.renews:
            threading.Thread(
                target=_keep_fresh, daemon=True,
                name='nbdkit-credentials-%d' % process.pid,
                args=(auth, os.path.join(export_dir, 'auth.json'),
                      refresh_interval, stop_refreshing)).start()
        try:
            yield export
        except Exception as err:
            failure = export.failure()
            if failure is not None:
                raise failure from err
            raise
        export.check()
    finally:
        stop_refreshing.set()
        _stop(process)
        shutil.rmtree(export_dir, ignore_errors=True)


def _write_spec(export_dir, cache, auth):
    auth_path = None
    if auth is not None:
        auth_path = os.path.join(export_dir, 'auth.json')
        httpranges.write_headers(auth_path, auth.headers())
    spec = {'reader': cache.reader.spec(), 'cache': cache.path,
            'auth': auth_path,
            'failure': os.path.join(export_dir, 'failure.json')}
    path = os.path.join(export_dir, 'spec.json')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                 0o600)
    with open(fd, 'w') as f:
        json.dump(spec, f)
    return path


def _plugin_path():
    """sys.path for nbdkit's interpreter: this package's root, then ours."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(PLUGIN)))
    paths = [root] + [p for p in sys.path if p and os.path.isdir(p)]
    return os.pathsep.join(dict.fromkeys(paths))


def _start(nbdkit, export_dir, spec_path):
    env = dict(os.environ, PYTHONPATH=_plugin_path(),
               PYTHONDONTWRITEBYTECODE='1')
    cmd = [nbdkit, '--exit-with-parent', '--readonly',
           '--unix', os.path.join(export_dir, 'sock'),
           '--pidfile', os.path.join(export_dir, 'nbdkit.pid'),
           'python', PLUGIN, 'spec=' + spec_path]
    with open(os.path.join(export_dir, 'nbdkit.log'), 'wb') as log:
        try:
            return subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, cwd=export_dir,
                close_fds=True)
        except OSError as err:
            raise exception.InspectionFailed(
                exception.REMOTE_EXPORT_FAILED,
                'cannot start nbdkit: %s' % err)


def _wait_until_serving(export, process, timeout):
    pidfile = os.path.join(export.directory, 'nbdkit.pid')
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise exception.InspectionFailed(
                exception.REMOTE_EXPORT_FAILED,
                'nbdkit exited with %s before it served; its log ends: %s'
                % (process.returncode, export.log_tail()))
        with contextlib.suppress(OSError):
            with open(pidfile) as f:
                if f.read().strip() == str(process.pid):
                    LOG.debug('nbdkit %d serves %s', process.pid,
                              export.uri)
                    return
        if time.monotonic() >= deadline:
            raise exception.InspectionFailed(
                exception.REMOTE_EXPORT_FAILED,
                'nbdkit did not serve within %s s; its log ends: %s'
                % (timeout, export.log_tail()))
        time.sleep(_POLL_INTERVAL)


def _keep_fresh(auth, path, interval, stop):
    last = None
    while not stop.wait(interval):
        try:
            headers = auth.headers()
            if headers != last:
                httpranges.write_headers(path, headers)
                last = headers
        except Exception:
            # The plugin keeps the headers it has; if they expire, its
            # next request is remote-auth-failed, which says why.
            LOG.exception('cannot renew the credentials of the export')


def _stop(process):
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
