"""A Glance client the way OpenStack CLIs make one, and image reads.

Authentication is openstack.config's, as in python-openstackclient:
``--os-cloud`` and clouds.yaml, ``OS_*`` variables and ``--os-*`` options,
any keystoneauth plugin; ``--os-auth-type admin_token --os-endpoint URL
--os-token TOKEN`` is the endpoint-and-token mode. The session is a
keystoneauth session and the client python-glanceclient's v2.

An image's data is read by ranges (``GET /v2/images/{id}/file`` with a
``Range``, through the client's own keystoneauth session) where its store
can read at an offset, and downloaded whole (python-glanceclient, checksum
verified) where it cannot or ``[introspection_remote] read_mode`` says so:
:func:`inspect_images` hands the core one
:class:`~qimgintrospect.api.RemoteRequest` per image, and the core
chooses.

Every Glance, keystoneauth or network error leaves this module as an
:class:`~qimgintrospect.exception.IntrospectionError` with one of the
codes declared for the Glance front ends.
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
import functools
import sys
import time

from glanceclient import client as glanceclient
from glanceclient import exc as glance_exc
from keystoneauth1 import exceptions as ks_exc
from oslo_log import log as logging
import requests

from qimgintrospect import api
from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect import workspace

LOG = logging.getLogger(__name__)

#: The longest wait between two requests for a page of the catalogue.
MAX_LIST_RETRY_INTERVAL = 30


def _openstacksdk():
    # Imported when first used: cliff imports every command's module when
    # the CLI starts, and openstacksdk alone takes about 0.3 s to import,
    # which `qimg-introspect inspect` should not pay.
    import openstack.config
    import openstack.exceptions
    return openstack


def add_auth_arguments(parser, argv=None):
    """Add openstack.config's ``--os-*`` options to an argparse *parser*.

    :param argv: the command line, which decides the auth plugin whose
        options are added (``--os-auth-type``); default ``sys.argv``.
    :returns: the set of argument names added, for :func:`from_arguments`.
    """
    before = {action.dest for action in parser._actions}
    _openstacksdk().config.OpenStackConfig().register_argparse_arguments(
        parser, sys.argv[1:] if argv is None else argv)
    return {action.dest for action in parser._actions} - before


def from_arguments(parsed_args, names):
    """A Glance v2 client from the options :func:`add_auth_arguments` added.

    :raises UsageError: glance-auth-failed (no cloud, bad clouds.yaml, no
        credentials).
    """
    auth_args = type(parsed_args)(**{
        name: getattr(parsed_args, name) for name in names
        if hasattr(parsed_args, name)})
    with _translated('connecting to Glance'):
        sdk = _openstacksdk()
        try:
            cloud = sdk.config.OpenStackConfig().get_one(argparse=auth_args)
        except sdk.exceptions.ConfigException as err:
            raise exception.UsageError(
                exception.GLANCE_AUTH, 'cloud configuration: %s' % err)
        return glanceclient.Client(
            '2', session=cloud.get_session(),
            service_type='image',
            interface=cloud.get_interface('image'),
            region_name=cloud.get_region_name('image'),
            endpoint_override=cloud.get_endpoint('image'))


def get_image(client, image_id):
    """Return the image as Glance shows it (a dict-like).

    :raises UsageError: image-not-found, glance-auth-failed.
    :raises InspectionFailed: glance-unreachable.
    """
    with _translated('reading image %s' % image_id):
        try:
            return client.images.get(image_id)
        except glance_exc.HTTPNotFound:
            raise exception.UsageError(
                exception.IMAGE_NOT_FOUND,
                'no image %s in this Glance (or not visible to these '
                'credentials)' % image_id)


def list_images(client, filters, page_size, retries=0, retry_interval=1):
    """Yield every image that matches *filters*, oldest first, page by page.

    :param retries: how often a page Glance did not answer (a 5xx, a
        connection refused or cut) is asked again, after
        *retry_interval* seconds, doubled each time up to
        :data:`MAX_LIST_RETRY_INTERVAL`; the count starts again once a
        page comes. The listing goes on after the last image received
        (Glance's ``marker``): no image is yielded twice.
    :raises: as :func:`get_image`; glance-unreachable once the retries
        are spent.
    """
    marker = None
    failures = 0
    while True:
        kwargs = dict(filters=dict(filters), page_size=page_size,
                      sort_key='created_at', sort_dir='asc')
        if marker is not None:
            kwargs['marker'] = marker
        try:
            with _translated('listing images'):
                for image in client.images.list(**kwargs):
                    marker, failures = image['id'], 0
                    yield image
            return
        except exception.InspectionFailed as err:
            if err.code != exception.GLANCE_UNREACHABLE or (
                    failures >= retries):
                raise
            wait = min(MAX_LIST_RETRY_INTERVAL,
                       retry_interval * 2 ** failures)
            failures += 1
            LOG.warning('%s; asking again in %s s (%d of %d)',
                        err.message, wait, failures, retries)
            time.sleep(wait)


def update_image(client, image_id, to_set, to_remove):
    """Set the properties *to_set* and remove *to_remove* on one image.

    :raises InspectionFailed: glance-update-failed, glance-unreachable.
    """
    with _translated('updating image %s' % image_id):
        try:
            client.images.update(image_id, remove_props=to_remove or None,
                                 **to_set)
        except (glance_exc.HTTPForbidden, glance_exc.HTTPConflict,
                glance_exc.HTTPBadRequest, glance_exc.HTTPNotFound) as err:
            raise exception.InspectionFailed(
                exception.GLANCE_UPDATE_FAILED,
                'Glance refused to update image %s: %s'
                % (image_id, _detail(err)))


def check_inspectable(image):
    """Refuse, before any download, an image the core cannot inspect.

    :raises UsageError: image-has-no-data (not active), not-a-disk-image
        (container not ``bare``, or a disk format such as ``ami``).
    """
    if image.get('status') != 'active' or not image.get('size'):
        raise exception.UsageError(
            exception.IMAGE_HAS_NO_DATA,
            'image %s is %s: it has no data to inspect'
            % (image['id'], image.get('status')))
    if not diskformats.is_disk_image(image.get('container_format'),
                                     image.get('disk_format')):
        raise exception.UsageError(
            exception.IMAGE_NOT_DISK,
            'image %s: %s/%s data is not a disk image this tool inspects'
            % (image['id'], image.get('container_format'),
               image.get('disk_format')))


def inspect_image(client, image, conf, stop=None):
    """Read *image* into the workspace and inspect it with the core.

    :param image: the image as Glance shows it (needs ``id``, ``size``,
        ``status``, ``disk_format``).
    :param stop: a :class:`threading.Event`; when it is set the download
        stops at the next chunk with download-failed.
    :returns: :class:`qimgintrospect.normalise.Result`.
    :raises IntrospectionError: image-has-no-data, not-a-disk-image,
        download-failed, glance-unreachable, or whatever the core raises.
    """
    check_inspectable(image)
    outcome, = inspect_images(client, [image], conf, stop)
    if isinstance(outcome, exception.IntrospectionError):
        raise outcome
    return outcome


def inspect_images(client, images, conf, stop=None, observer=None):
    """Read inspectable *images* of one owner and inspect them together.

    Each image is read by ranges where its store honours them, else
    downloaded whole (see the module's docstring; ``details.read_by``
    says which). What is read and the core's private copies of downloads
    share one slot of the workspace (so ``max_workers`` slots at most are
    on disk at once, each within the quota), the slot is emptied however
    this returns, and the core inspects the images with one
    :func:`api.inspect_many` call: one guest appliance for up to
    :func:`api.batch_size` images of one owner.

    :param observer: passed to :func:`api.inspect_many`.
    :returns: for each image, its Result or the IntrospectionError that
        stopped its reads or inspection; one image fails alone.
    :raises IntrospectionError: only what stops them all (no slot, no
        image endpoint).
    """
    requests = [api.RemoteRequest(
        image_data_url(client, image['id']), image.get('disk_format'),
        image.get('owner'),
        session=client.http_client, size=image['size'],
        download=functools.partial(_receive, client, image, stop=stop),
        label='image %s' % image['id']) for image in images]
    with workspace.Workspace.from_conf(conf).slot() as slot:
        return api.inspect_many(requests, conf, slot=slot,
                                observer=observer)


def image_data_url(client, image_id):
    """The URL of the image's data, where python-glanceclient gets it.

    keystoneauth joins the client's image endpoint and the path
    ``/v2/images/{id}/file`` so; the ranged reads ask the same URL.

    :raises UsageError: glance-auth-failed (no credentials to find the
        endpoint with).
    :raises InspectionFailed: glance-unreachable.
    """
    with _translated('finding the image endpoint'):
        endpoint = client.http_client.get_endpoint()
    if not endpoint:
        raise exception.InspectionFailed(
            exception.GLANCE_UNREACHABLE,
            'the catalogue has no image endpoint for these credentials')
    return '%s/v2/images/%s/file' % (endpoint.rstrip('/'), image_id)


def _receive(client, image, slot, stop):
    """Stream *image* into *slot*; return the workspace Copy."""
    copy = slot.receive(_download(client, image, stop), image['size'])
    if copy.size != image['size']:
        raise exception.InspectionFailed(
            exception.DOWNLOAD_FAILED,
            'image %s: Glance sent %d bytes of %d'
            % (image['id'], copy.size, image['size']))
    return copy


def _download(client, image, stop):
    """Yield the image's data, checksum verified, errors translated."""
    image_id = image['id']
    with _translated('downloading image %s' % image_id):
        body = client.images.data(image_id)
    if body is None:
        raise exception.UsageError(
            exception.IMAGE_HAS_NO_DATA, 'image %s has no data' % image_id)
    try:
        for chunk in body:
            if stop is not None and stop.is_set():
                raise exception.InspectionFailed(
                    exception.DOWNLOAD_FAILED,
                    'download of image %s stopped' % image_id)
            yield chunk
    # python-glanceclient raises IOError when the checksum differs; the
    # others are a connection that broke in the middle of the body.
    except (OSError, requests.RequestException,
            ks_exc.ClientException) as err:
        raise exception.InspectionFailed(
            exception.DOWNLOAD_FAILED,
            'download of image %s failed: %s' % (image_id, err))


@contextlib.contextmanager
def _translated(doing):
    try:
        yield
    except exception.IntrospectionError:
        raise
    except (glance_exc.HTTPUnauthorized, ks_exc.Unauthorized,
            ks_exc.MissingAuthPlugin, ks_exc.AuthorizationFailure,
            ks_exc.OptionError) as err:
        raise exception.UsageError(
            exception.GLANCE_AUTH,
            '%s: credentials refused or missing: %s' % (doing, _detail(err)))
    except glance_exc.HTTPNotFound as err:
        raise exception.UsageError(
            exception.IMAGE_NOT_FOUND, '%s: %s' % (doing, _detail(err)))
    except glance_exc.HTTPBadRequest as err:
        raise exception.UsageError(
            exception.GLANCE_BAD_REQUEST, '%s: %s' % (doing, _detail(err)))
    except glance_exc.HTTPForbidden as err:
        raise exception.UsageError(
            exception.GLANCE_AUTH,
            '%s: forbidden to these credentials: %s' % (doing, _detail(err)))
    except (glance_exc.CommunicationError, glance_exc.HTTPException,
            ks_exc.ClientException, requests.RequestException) as err:
        raise exception.InspectionFailed(
            exception.GLANCE_UNREACHABLE,
            '%s: %s' % (doing, _detail(err)))


def _detail(err):
    return (getattr(err, 'details', None) or str(err)).strip()
