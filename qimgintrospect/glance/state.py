"""What the audit learnt, per image id and checksum: the state store.

A record is committed as soon as an image's outcome is known, so a later
run inspects only images that are new or whose data changed, and an
interrupted run continues where it stopped. A record counts only for the
:func:`fingerprint` (qimgintrospect's version and the options that shape
findings) that made it.
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
import datetime
import hashlib
import json
import os
import sqlite3

import pbr.version

from qimgintrospect import exception
from qimgintrospect import normalise
from qimgintrospect import opts

_CATEGORIES = {cls.exit_code: cls for cls in (
    exception.UsageError, exception.ImageRefused, exception.InspectionFailed)}


class StateStore(object):
    """What the audit learnt, per image id and checksum, in a SQLite file.

    Each :meth:`put` is its own transaction, so whatever was recorded
    before an interruption is there for the next run. A record made under
    another *version* (see :func:`fingerprint`) does not count: that
    version, or that configuration, may have found other properties.
    """

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS inspected (
            image_id TEXT PRIMARY KEY,
            checksum TEXT NOT NULL,
            version TEXT NOT NULL,
            inspected_at TEXT NOT NULL,
            outcome TEXT NOT NULL
        )"""

    def __init__(self, path, version=None):
        self.path = path
        self.version = version or pbr.version.VersionInfo(
            'qimgintrospect').version_string()
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(path)
            with self._db:
                self._db.execute(self._SCHEMA)
        except (OSError, sqlite3.Error) as err:
            raise exception.UsageError(
                exception.STATE_FILE_UNUSABLE,
                'audit state file %s: %s' % (path, err))

    def get(self, image_id, checksum):
        """The outcome recorded for this image at this checksum, or None."""
        row = self._db.execute(
            'SELECT outcome FROM inspected WHERE image_id = ? AND '
            'checksum = ? AND version = ?',
            (image_id, checksum, self.version)).fetchone()
        return None if row is None else _decode(json.loads(row[0]))

    def put(self, image_id, checksum, outcome):
        """Record *outcome* (a Result or an IntrospectionError)."""
        with self._db:
            self._db.execute(
                'INSERT OR REPLACE INTO inspected VALUES (?, ?, ?, ?, ?)',
                (image_id, checksum, self.version,
                 datetime.datetime.now(datetime.timezone.utc).isoformat(),
                 json.dumps(_encode(outcome), sort_keys=True)))

    def count(self):
        return self._db.execute('SELECT COUNT(*) FROM inspected').fetchone()[0]

    def close(self):
        self._db.close()


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


#: Options whose values change what an image is found to say, by group
#: (None: all the group's options).
#: Of [introspection_guest], only whether the stage runs: the others
#: (backend, timeouts, memory) decide whether an appliance starts, not what
#: it finds, and a result whose appliance did not start is not recorded.
_FINDING_OPTIONS = {opts.QEMU_IMG_GROUP: None, opts.FORMATS_GROUP: None,
                    opts.GUEST_GROUP: ('enabled',)}


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
    return '%s/%s' % (pbr.version.VersionInfo(
        'qimgintrospect').version_string(), digest[:16])


@contextlib.contextmanager
def state_store(conf, path=None):
    """A :class:`StateStore` on *path* (default: the configured one).

    Its records count for this :func:`fingerprint` of *conf* only.
    """
    store = StateStore(path or conf[opts.AUDIT_GROUP].state_file,
                       fingerprint(conf))
    try:
        yield store
    finally:
        store.close()
