"""The nbdkit plugin that serves a remote image from its block cache.

nbdkit's python plugin runs this file (:func:`.nbdexport.serve` starts
it) with one parameter, ``spec=PATH``: a JSON file naming the URL and
what the parent's reader learnt (size, validators, TLS settings), the
cache's data file and the files for credentials and for a failure. It
guarantees:

* read-only: no write, trim or zero callback exists;
* every read goes through :meth:`.BlockCache.read` with a
  :class:`.RangeReader` rebuilt from the spec, so its answers pass the
  parent's checks, a block the parent fetched (the header, the tail) is
  not fetched again, and the budget is the parent's;
* the first error met is written to the failure file (its code and
  message) for the parent to raise, since an NBD client sees only
  ``EIO``; every read after it fails at once, so a server caught lying
  is not asked again;
* credentials come from a file the parent keeps fresh
  (:class:`.HeadersFile`), never from a command line.

nbdkit's embedded interpreter is Debian's python3; the parent puts its
own ``sys.path`` in ``PYTHONPATH`` so the imports below resolve as they
do in the parent.
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

import errno
import io
import json
import os

import nbdkit

from qimgintrospect import exception
from qimgintrospect.remote import blockcache
from qimgintrospect.remote import httpranges

API_VERSION = 2

_state = {'spec': None, 'cache': None, 'failure': None, 'failed': False}


def config(key, value):
    if key != 'spec':
        raise ValueError('unknown parameter %s' % key)
    _state['spec'] = value


def config_complete():
    if _state['spec'] is None:
        raise ValueError('spec=PATH is required')
    with io.open(_state['spec']) as f:
        spec = json.load(f)
    auth = httpranges.HeadersFile(spec['auth']) if spec['auth'] else None
    reader = httpranges.RangeReader.from_spec(spec['reader'], auth)
    _state['cache'] = blockcache.BlockCache.attach(spec['cache'], reader)
    _state['failure'] = spec['failure']


def thread_model():
    # Reads are serialised by the cache's lock anyway; one at a time
    # keeps the plugin simple and the server's load predictable.
    return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS


def open(readonly):
    return {}


def get_size(handle):
    return _state['cache'].size


def can_write(handle):
    return False


def can_multi_conn(handle):
    # Read-only and never changing: every connection sees the same bytes.
    return True


def pread(handle, buf, offset, flags):
    if _state['failed']:
        nbdkit.set_error(errno.EIO)
        raise RuntimeError('an earlier read failed; see the failure file')
    try:
        buf[:] = _state['cache'].read(offset, len(buf))
    except exception.IntrospectionError as err:
        _fail(err.code, err.message)
        raise
    except Exception as err:
        _fail(exception.INTERNAL_ERROR,
              'nbdkit plugin: %s: %s' % (type(err).__name__, err))
        raise


def _fail(code, message):
    """Record the first failure for the parent; fail every later read."""
    _state['failed'] = True
    nbdkit.set_error(errno.EIO)
    # Written whole, then linked into place: the parent never sees half of
    # it, and only the first failure is kept.
    path = _state['failure']
    tmp = '%s.%d' % (path, os.getpid())
    with io.open(tmp, 'w') as f:
        json.dump({'code': code, 'message': message}, f)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
