"""A remote image as the core's source: read by ranges, or downloaded.

A front end asks for a remote image with a :class:`RemoteRequest` (its
URL, credentials, size, and how to download it whole);
:func:`qimgintrospect.api.inspect_many` then reads it the way
``[introspection_remote] read_mode`` says:

* :func:`open_ranged`: by ranges, into a block cache in the workspace
  slot, within the byte budget (:func:`qimgintrospect.remote.image.open_remote`
  with the configured budget, block size and timeout); its first request
  raises :class:`~qimgintrospect.exception.RangesNotHonoured` when the
  server cannot serve ranges;
* :func:`download`: whole, into the slot, as before ranges existed (the
  request's own downloader, or one checked GET);
* either way, :func:`ranged_figures` and :func:`download_figures` say
  in ``details`` how the image was read (:data:`DETAILS`).
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

from oslo_log import log as logging
from oslo_utils import units

from qimgintrospect import opts
from qimgintrospect.remote import httpranges
from qimgintrospect.remote import image as remote_image
from qimgintrospect.remote import nbdexport

LOG = logging.getLogger(__name__)

AUTO = 'auto'
RANGES = 'ranges'
DOWNLOAD = 'download'

#: What ``details`` says about how a remote image was read: ``read_by``
#: (``ranges`` or ``download``), ``bytes_read`` (bytes the server sent),
#: ``requests`` (HTTP requests made) and ``image_size`` (the image's
#: bytes: what a whole download moves).
DETAILS = ('read_by', 'bytes_read', 'requests', 'image_size')

_warned = []


class RemoteRequest(collections.namedtuple('RemoteRequest', [
        'url', 'disk_format', 'owner', 'session', 'size', 'download',
        'label'])):
    """One remote image for :func:`qimgintrospect.api.inspect_many`.

    :ivar url: its http(s) URL (Glance's ``/v2/images/{id}/file``, a web
        server's file).
    :ivar disk_format, owner: as for
        :class:`qimgintrospect.api.ImageRequest`.
    :ivar session: credentials and TLS settings (see
        :func:`.httpranges.credentials`): None, headers, a keystoneauth
        Session or Adapter (python-glanceclient's ``http_client``).
    :ivar size: the size the image must have (Glance's ``size``), or None
        to take the server's word.
    :ivar download: ``download(slot)`` downloads the image whole into the
        slot and returns the :class:`~qimgintrospect.workspace.Copy`
        (Glance's client, which verifies the checksum); None: one checked
        GET of *url*.
    :ivar label: what logs and messages call it (default the URL).
    """

    __slots__ = ()

    def __new__(cls, url, disk_format=None, owner=None, session=None,
                size=None, download=None, label=None):
        return super().__new__(cls, url, disk_format, owner, session, size,
                               download, label)

    @property
    def path(self):
        """The name of the image in logs, as ImageRequest's ``path``."""
        return self.label or self.url


def read_mode(conf, size=None):
    """How to read a remote image of *size* bytes: AUTO, RANGES, DOWNLOAD.

    ``[introspection_remote] read_mode``; but DOWNLOAD for AUTO when the
    size is known and below ``min_ranged_size_mb``, or on a host where
    nbdkit or its python plugin cannot run (logged once): ranges need the
    export. RANGES stays: its images then fail with remote-export-failed,
    which names what is missing.
    """
    group = conf[opts.REMOTE_GROUP]
    mode = group.read_mode
    if mode == AUTO and size is not None and (
            size < group.min_ranged_size_mb * units.Mi):
        return DOWNLOAD
    if mode == AUTO:
        missing = nbdexport.available()
        if missing is not None:
            if not _warned:
                _warned.append(missing)
                LOG.warning('remote images are downloaded whole: %s (Debian '
                            'packages nbdkit and nbdkit-plugin-python)',
                            missing)
            return DOWNLOAD
    return mode


@contextlib.contextmanager
def open_ranged(request, slot, conf):
    """Open *request*'s image for ranged reads in *slot*; yield it.

    :returns: (in the block) a :class:`.image.RemoteImage` whose budget,
        block size and timeout are ``[introspection_remote]``'s.
    :raises RangesNotHonoured: the first request says the server cannot
        serve ranges; nothing was reserved or written.
    :raises IntrospectionError: as :func:`.image.open_remote`.
    """
    group = conf[opts.REMOTE_GROUP]
    with remote_image.open_remote(
            slot, request.url, session=request.session, size=request.size,
            budget=group.budget_mb * units.Mi,
            block_size=group.block_size_kb * units.Ki,
            timeout=(group.timeout, group.timeout)) as remote:
        yield remote


def download(request, slot, conf):
    """Download *request*'s image whole into *slot*.

    :returns: (the workspace :class:`~qimgintrospect.workspace.Copy`, its
        :data:`DETAILS`).
    :raises IntrospectionError: what the downloader raises; for a plain
        GET, as :meth:`.httpranges.RangeReader.whole`, and
        workspace-quota-exceeded, workspace-no-space.
    """
    if request.download is not None:
        copy = request.download(slot)
        return copy, download_figures(copy.size, 1)
    timeout = conf[opts.REMOTE_GROUP].timeout
    reader = httpranges.RangeReader.for_session(
        request.url, request.session, size=request.size,
        timeout=(timeout, timeout))
    try:
        size, chunks = reader.whole()
        copy = slot.receive(chunks, size)
    finally:
        reader.close()
    return copy, download_figures(copy.size, reader.requests)


def ranged_figures(stats):
    """:data:`DETAILS` of an image read by ranges (its cache's stats)."""
    return {'read_by': RANGES, 'bytes_read': stats.bytes_fetched,
            'requests': stats.requests, 'image_size': stats.size}


def download_figures(size, requests):
    """:data:`DETAILS` of an image downloaded whole."""
    return {'read_by': DOWNLOAD, 'bytes_read': size, 'requests': requests,
            'image_size': size}
