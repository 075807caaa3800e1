"""A remote image opened for reading by ranges inside a workspace slot.

:func:`open_remote` is what a front end calls instead of downloading:

* its first request (the first block) tells whether the server honours
  ranges; when it does not,
  :class:`~qimgintrospect.exception.RangesNotHonoured` is raised before
  anything is reserved or written, and the caller downloads the image
  whole as before;
* then the byte budget (at most the image's size) is reserved in the
  slot's quota and the block cache is made in the slot: its data file is
  the workspace copy, holding exactly what was read;
* :meth:`RemoteImage.read_at` reads as :func:`qimgintrospect.source.read_at`
  does on a local file (the header checks), and
  :meth:`RemoteImage.export` serves the same cache over NBD (qemu-img,
  the appliance): nothing is fetched twice;
* the cache and the connection are closed when the block ends; the files
  go with the slot.
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
import os
import uuid

from qimgintrospect.remote import blockcache
from qimgintrospect.remote import httpranges
from qimgintrospect.remote import nbdexport


class RemoteImage(object):
    """A remote image being read; see :func:`open_remote`.

    :ivar url: where it is read from.
    :ivar size: its size in bytes.
    :ivar path: the workspace copy (the cache's sparse data file). Only
        the blocks read are in it: hand it to no tool, use
        :meth:`export`.
    """

    def __init__(self, url, cache, directory, auth):
        self.url = url
        self.cache = cache
        self.size = cache.size
        self.path = cache.path
        self._directory = directory
        self._auth = auth

    def read_at(self, length, offset):
        """At most *length* bytes at *offset*, as ``os.pread`` gives them.

        :raises IntrospectionError: as :meth:`.BlockCache.read`.
        """
        if offset >= self.size or length <= 0:
            return b''
        return self.cache.read(offset, min(length, self.size - offset))

    def export(self, **kwargs):
        """Serve the image over NBD: see :func:`.nbdexport.serve`."""
        return nbdexport.serve(self._directory, self.cache, self._auth,
                               **kwargs)

    def stats(self):
        """:class:`.CacheStats`: bytes and requests of every reader."""
        return self.cache.stats()


@contextlib.contextmanager
def open_remote(slot, url, session=None, size=None, budget=None,
                block_size=blockcache.DEFAULT_BLOCK_SIZE, name='remote',
                **reader_options):
    """Open *url* for ranged reads into *slot*; yield a RemoteImage.

    :param slot: a :class:`qimgintrospect.workspace.Slot` (its
        ``directory`` and ``reserve``).
    :param session: credentials and TLS settings (see
        :func:`.httpranges.credentials`): None, headers, a keystoneauth
        Session or Adapter, a requests Session.
    :param size: the size the image must have (Glance's ``size``), or
        None to take the server's word.
    :param budget: the most bytes to fetch (None: the image's size).
    :raises RangesNotHonoured: fall back to a whole download.
    :raises IntrospectionError: what the first request met (see
        :class:`.RangeReader`); workspace-quota-exceeded and
        workspace-no-space (the reservation).
    """
    auth, tls = httpranges.credentials(session)
    tls.update(reader_options)
    reader = httpranges.RangeReader(url, auth=auth, size=size, **tls)
    try:
        first = reader.probe(block_size)
        limit = reader.size if budget is None else min(budget, reader.size)
        slot.reserve(limit, url)
        path = os.path.join(slot.directory,
                            '%s-%s' % (name, uuid.uuid4().hex[:12]))
        cache = blockcache.BlockCache.create(path, reader.size, limit,
                                             reader, block_size)
        try:
            cache.insert(0, first, reader.requests)
            yield RemoteImage(url, cache, slot.directory, auth)
        finally:
            cache.close()
    finally:
        reader.close()
