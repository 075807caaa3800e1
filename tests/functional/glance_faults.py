"""A test glance-api whose requests the test can fail, hold and count.

Glance answering 5xx for one image cannot be made to happen for real, and
"a worker in the middle of an image" is a moment a test must be able to
hold, not guess: :class:`FaultInjection` is WSGI middleware put first in
the paste pipeline of :class:`FaultyGlanceServer` (the test glance-api of
:mod:`tests.functional.glance_server`, otherwise unchanged). It reads
rules from ``faults.json`` in its directory whenever the file changes:

    {"rules": [{"method": "GET", "path": "^/v2/images/ID/file$",
                "status": 503, "times": 2, "skip": 0},
               {"name": "start", "method": "GET", "path": "^/v2/images$",
                "hold": true, "times": 3}]}

A rule matches a request by method and a regular expression on its path;
the first *skip* matches pass, then *times* matches (-1: all) are failed
with *status*, or, with *hold*, wait until the test releases them (the
file ``release-NAME``; ``held-NAME-N`` says which project's request is
held). Every request is logged in ``requests.log`` as ``METHOD PATH
PROJECT STATUS`` (the project of the token: each audit worker of a test
uses its own), so a test tells which workers read each image. Writes
(PATCH, PUT, ...) are served one at a time: the test glance-api's SQLite
fails a second writer where a database server would make it wait.
"""

import collections
import json
import os
import re
import threading
import time

from testkit import glanceapi

#: How long a held request waits for its release at most (a test that
#: died must not hold a uWSGI thread for ever).
_HOLD_LIMIT = 600
_POLL = 0.05


class FaultInjection(object):
    """WSGI middleware: fail, hold, log requests as ``faults.json`` says."""

    def __init__(self, app, directory):
        self.app = app
        self.directory = directory
        self._mutex = threading.Lock()
        # The test glance-api keeps its catalogue in SQLite, where two
        # writers at once fail with "database is locked" (a 500); a real
        # Glance's database server lets them wait. Writes are taken one
        # at a time, so that a 5xx the test sees is one it asked for.
        self._writes = threading.Lock()
        self._rules = []
        self._mtime = None

    @classmethod
    def factory(cls, global_conf, **local_conf):
        def make(app):
            return cls(app, local_conf['directory'])
        return make

    def _path(self, name):
        return os.path.join(self.directory, name)

    def _load(self):
        path = self._path('faults.json')
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        self._rules = []
        if mtime is not None:
            with open(path) as f:
                for rule in json.load(f)['rules']:
                    rule = dict(rule, seen=0, pattern=re.compile(
                        rule['path']))
                    self._rules.append(rule)

    def _match(self, method, path):
        """The rule that acts on this request, and its count, or None."""
        with self._mutex:
            self._load()
            for rule in self._rules:
                if rule.get('method', method) != method or not rule[
                        'pattern'].search(path):
                    continue
                rule['seen'] += 1
                n = rule['seen'] - rule.get('skip', 0)
                times = rule.get('times', -1)
                if n >= 1 and (times < 0 or n <= times):
                    return rule, n
        return None

    def __call__(self, environ, start_response):
        method, path = environ['REQUEST_METHOD'], environ['PATH_INFO']
        parts = environ.get('HTTP_X_AUTH_TOKEN', '').split(':')
        project = parts[1] if len(parts) == 3 else '-'
        found = self._match(method, path)
        status = None
        if found is not None:
            rule, n = found
            if rule.get('hold'):
                self._hold(rule['name'], n, project)
            else:
                status = rule.get('status', 503)
        self._log(method, path, project, status or '-')
        if status is not None:
            start_response('%d Injected Fault' % status,
                           [('Content-Type', 'text/plain')])
            return [b'fault injected by the test\n']
        if method in ('GET', 'HEAD'):
            return self.app(environ, start_response)
        with self._writes:
            return list(self.app(environ, start_response))

    def _hold(self, name, n, project):
        # Whole or not at all: the test reads it as soon as it appears.
        held = self._path('held-%s-%d' % (name, n))
        with open(held + '.new', 'w') as f:
            f.write(project)
        os.replace(held + '.new', held)
        release = self._path('release-%s' % name)
        deadline = time.monotonic() + _HOLD_LIMIT
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(_POLL)

    def _log(self, method, path, project, status):
        with self._mutex, open(self._path('requests.log'), 'a') as f:
            f.write('%s %s %s %s\n' % (method, path, project, status))


class FaultyGlanceServer(glanceapi.GlanceServer):
    """The test glance-api with :class:`FaultInjection` in front."""

    @property
    def faults_dir(self):
        return os.path.join(self.base_dir, 'faults')

    def write_config(self):
        super().write_config()
        os.makedirs(self.faults_dir, exist_ok=True)
        paste = os.path.join(self.config_dir, 'glance-api-paste.ini')
        with open(paste) as f:
            text = f.read()
        # First in every pipeline: it sees each request as the client sent
        # it, token included.
        text = re.sub(r'(?m)^(\w+ = )(versionnegotiation )', r'\1faults \2',
                      text)
        text += ('\n[filter:faults]\npaste.filter_factory = '
                 '%s:FaultInjection.factory\ndirectory = %s\n'
                 % (__name__, self.faults_dir))
        with open(paste, 'w') as f:
            f.write(text)

    def set_faults(self, *rules):
        """Replace the rules (none: every request is served)."""
        for name in os.listdir(self.faults_dir):
            if name.startswith(('held-', 'release-')):
                os.unlink(os.path.join(self.faults_dir, name))
        path = os.path.join(self.faults_dir, 'faults.json')
        with open(path + '.new', 'w') as f:
            json.dump({'rules': list(rules)}, f)
        os.replace(path + '.new', path)
        # The middleware reloads on a new mtime: make sure it is new even
        # on a coarse clock.
        stamp = time.time_ns() + 1000
        os.utime(path, ns=(stamp, stamp))

    def held(self, name):
        """{n: project} of the requests a hold rule *name* holds."""
        found = {}
        for entry in os.listdir(self.faults_dir):
            prefix = 'held-%s-' % name
            if entry.startswith(prefix) and not entry.endswith('.new'):
                with open(os.path.join(self.faults_dir, entry)) as f:
                    found[int(entry[len(prefix):])] = f.read()
        return found

    def release(self, name):
        open(os.path.join(self.faults_dir, 'release-%s' % name), 'w').close()

    def requests(self):
        """[(method, path, project, status)] of every request so far."""
        try:
            with open(os.path.join(self.faults_dir, 'requests.log')) as f:
                return [tuple(line.split()) for line in f]
        except FileNotFoundError:
            return []

    def readers(self, since=0):
        """{image id: set of projects} that read the image's data.

        From request number *since* on; one project per audit worker. A
        worker may read an image in one request (a download) or several
        (ranged reads): this counts workers, not requests.
        """
        found = collections.defaultdict(set)
        for method, path, project, status in self.requests()[since:]:
            match = re.match(r'^/v2/images/([^/]+)/file$', path)
            if method == 'GET' and match and status == '-':
                found[match.group(1)].add(project)
        return dict(found)


def hold_rule(name, path, times=1, method='GET'):
    return {'name': name, 'method': method, 'path': path, 'hold': True,
            'times': times}


def fail_rule(path, status=503, times=-1, skip=0, method='GET'):
    return {'method': method, 'path': path, 'status': status,
            'times': times, 'skip': skip}


def file_path(image_id):
    """The path of an image's data, as a rule's regular expression."""
    return '^/v2/images/%s/file$' % re.escape(image_id)


#: The path of a catalogue listing (every page).
LISTING = '^/v2/images$'
