"""Web servers for the tests of ranged reads: a real nginx, and a liar.

* :class:`Nginx`: Debian's nginx (nginx-light) serving a directory on
  127.0.0.1 and a free port, from a configuration written into a
  temporary directory. It honours ``Range`` under ``/``; ``/noranges/``
  serves the same files with ``max_ranges 0`` (whole answers only),
  ``/moved/`` redirects within the server and ``/elsewhere/`` to another
  host (127.0.0.2). Its access log records each request's ``Range`` and
  the bytes sent, so a test can count what was fetched.
* :class:`LyingServer`: a real HTTP server (``http.server``, in a
  thread) serving one byte string, whose paths each break the rules of
  ranged answers in one way (see :data:`LIES`): the faults nginx never
  makes.

Both are started by the test and stopped by it (nginx by its own pid;
the kernel also ends it if the test process dies), never left running.
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
import ctypes
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
_START_POLLS = 200
_POLL_INTERVAL = 0.05

_NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid %(base)s/nginx.pid;
error_log %(base)s/error.log warn;
events { worker_connections 64; }
http {
    log_format ranges '$request_method $uri "$http_range" $status '
                      '$body_bytes_sent';
    access_log %(base)s/access.log ranges;
    client_body_temp_path %(base)s/tmp/body;
    proxy_temp_path %(base)s/tmp/proxy;
    fastcgi_temp_path %(base)s/tmp/fastcgi;
    uwsgi_temp_path %(base)s/tmp/uwsgi;
    scgi_temp_path %(base)s/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {
        listen 127.0.0.1:%(port)d;
        root %(root)s;
        limit_rate %(limit_rate)s;
        location / { }
        location /noranges/ {
            alias %(root)s/;
            max_ranges 0;
        }
        location ~ ^/moved/(.*)$ {
            return 302 /$1;
        }
        location ~ ^/elsewhere/(.*)$ {
            return 302 http://127.0.0.2:%(port)d/$1;
        }
    }
}
"""

_LOG_LINE = re.compile(r'^(\S+) (\S+) "([^"]*)" (\d+) (\d+)$')


def free_port():
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _terminate_with_parent():
    # A test run killed outright must not leave a server behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def nginx_binary():
    """Path of nginx, or None when it is not installed."""
    return shutil.which('nginx', path=os.environ.get('PATH', '') +
                        ':/usr/sbin:/sbin')


class Nginx(object):
    """nginx serving the files under *root* at :meth:`url`.

    :param limit_rate: nginx's per-connection rate cap (``125m``: about
        1 Gbit/s), to stand for a network slower than loopback; 0: none.
    """

    def __init__(self, base_dir, root, limit_rate=0):
        self.limit_rate = limit_rate
        self.base_dir = str(base_dir)
        self.root = os.path.abspath(str(root))
        self.port = None
        self.process = None
        self.access_log = os.path.join(self.base_dir, 'access.log')

    def url(self, path=''):
        return 'http://127.0.0.1:%d/%s' % (self.port, path.lstrip('/'))

    def start(self):
        """Start nginx; return once it answers."""
        os.makedirs(os.path.join(self.base_dir, 'tmp'), exist_ok=True)
        self.port = free_port()
        conf = os.path.join(self.base_dir, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(_NGINX_CONF % {'base': self.base_dir, 'root': self.root,
                                   'port': self.port,
                                   'limit_rate': self.limit_rate})
        log = os.path.join(self.base_dir, 'error.log')
        with open(os.path.join(self.base_dir, 'stderr.log'), 'ab') as err:
            self.process = subprocess.Popen(
                [nginx_binary(), '-p', self.base_dir, '-c', conf, '-e', log],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                preexec_fn=_terminate_with_parent)
        try:
            _wait_for_port(self.port, self.process, self.base_dir)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop the nginx this object started (SIGTERM, then SIGKILL)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def requests(self):
        """The requests served so far: (method, uri, range, status, bytes)."""
        entries = []
        with contextlib.suppress(FileNotFoundError):
            with open(self.access_log) as f:
                for line in f:
                    match = _LOG_LINE.match(line.strip())
                    if match:
                        method, uri, rng, status, sent = match.groups()
                        entries.append((method, uri, rng, int(status),
                                        int(sent)))
        return entries

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _wait_for_port(port, process, where):
    for _ in range(_START_POLLS):
        if process.poll() is not None:
            raise RuntimeError('server exited with %s; see %s'
                               % (process.returncode, where))
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                return
        except OSError:
            time.sleep(_POLL_INTERVAL)
    raise RuntimeError('server did not answer on port %d; see %s'
                       % (port, where))


class _QuietServer(http.server.ThreadingHTTPServer):
    """Clients that hang up early (on a lie, by design) are no error."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


#: Path -> how :class:`LyingServer` answers a ranged GET there.
LIES = {
    'honest': 'a correct 206',
    'wrong-total': 'Content-Range total one byte more than the data',
    'wrong-range': 'the bytes 512 further on, with their own Content-Range',
    'no-content-range': '206 without a Content-Range',
    'too-long': 'Content-Length and body 100 bytes longer than asked',
    'too-long-unannounced': 'no Content-Length, 100 bytes more, then close',
    'too-short': 'the right Content-Length, then close after half',
    'too-short-announced': 'Content-Length and body half the range',
    'whole': '200 with the whole body (ranges ignored)',
    'redirect-away': '302 to the same path on 127.0.0.2',
    'redirect-here': '302 to /honest on this server',
    'changing': 'a new ETag on every answer',
    'gzip': 'Content-Encoding: gzip',
    'token': '401 unless X-Auth-Token is the server\'s current token',
}
_RANGE = re.compile(r'^bytes=(\d*)-(\d*)$')


class LyingServer(object):
    """A real HTTP server whose paths each lie in one way (:data:`LIES`).

    ``/NAME`` lies on every request; ``/later/NAME`` answers the ranges
    that start at 0 honestly and lies on the others, so that a reader's
    first request passes and a later one (the nbdkit plugin's) meets the
    lie. ``/status/NNN`` answers NNN. :attr:`seen` lists (path, Range
    header) of every request.
    """

    def __init__(self, data):
        self.data = data
        self.token = 'token-1'
        self.seen = []
        self._etag = 0
        self._server = None
        self._thread = None

    @property
    def port(self):
        return self._server.server_address[1]

    def url(self, path):
        return 'http://127.0.0.1:%d/%s' % (self.port, path.lstrip('/'))

    def start(self):
        liar = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def do_GET(self):
                liar._answer(self)

            def log_message(self, *args):
                pass

        self._server = _QuietServer(('127.0.0.1', 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _answer(self, handler):
        path = handler.path
        asked = handler.headers.get('Range')
        self.seen.append((path, asked))
        if path.startswith('/status/'):
            return self._send(handler, int(path[8:]), {}, b'no\n')
        later = path.startswith('/later/')
        lie = path[7:] if later else path[1:]
        first, last = self._parse(asked)
        if later and first == 0:
            lie = 'honest'
        size = len(self.data)
        headers = {'ETag': '"v1"'}
        if lie == 'whole' or first is None:
            return self._send(handler, 200, headers, self.data)
        if lie == 'token' and (handler.headers.get('X-Auth-Token')
                               != self.token):
            return self._send(handler, 401, {}, b'bad token\n')
        if lie == 'redirect-away':
            return self._send(handler, 302, {
                'Location': 'http://127.0.0.2:%d%s' % (self.port, path)},
                b'')
        if lie == 'redirect-here':
            return self._send(handler, 302, {'Location': '/honest'}, b'')
        if lie == 'changing':
            self._etag += 1
            headers['ETag'] = '"changed-%d"' % self._etag
        if lie == 'wrong-range':
            first, last = first + 512, min(last + 512, size - 1)
        body = self.data[first:last + 1]
        headers['Content-Range'] = 'bytes %d-%d/%d' % (
            first, last, size + (lie == 'wrong-total'))
        if lie == 'no-content-range':
            del headers['Content-Range']
        if lie == 'gzip':
            headers['Content-Encoding'] = 'gzip'
        length = len(body)
        if lie == 'too-long':
            body += b'x' * 100
            length = len(body)
        elif lie == 'too-long-unannounced':
            body += b'x' * 100
            length = None
        elif lie == 'too-short':
            body = body[:len(body) // 2]
        elif lie == 'too-short-announced':
            body = body[:len(body) // 2]
            length = len(body)
        self._send(handler, 206, headers, body, length)

    def _parse(self, asked):
        """(first, last) of a single range, clipped; (None, None): none."""
        match = _RANGE.match(asked or '')
        if not match:
            return None, None
        size = len(self.data)
        start, end = match.groups()
        if not start:
            return max(size - int(end), 0), size - 1
        return int(start), min(int(end) if end else size - 1, size - 1)

    @staticmethod
    def _send(handler, status, headers, body, length=-1):
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if length == -1:
            length = len(body)
        if length is None:
            handler.send_header('Connection', 'close')
            handler.close_connection = True
        else:
            handler.send_header('Content-Length', str(length))
        if len(body) < (length or 0):
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
