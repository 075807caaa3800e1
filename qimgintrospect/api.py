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

"""The one entry of the core: an image file in, Glance properties out.

Read :func:`inspect` top to bottom to see where every property comes from:

1. :mod:`~qimgintrospect.source` opens the user's file without following
   links or blocking on FIFOs;
2. :mod:`~qimgintrospect.inspectors.header` reads only the header, decides
   the real format and refuses anything unsafe, before any tool runs;
3. :mod:`~qimgintrospect.workspace` takes one of ``max_workers`` slots and
   makes a private copy, within the quota; the header check is confirmed
   on the copy, the only file any tool ever sees;
4. :mod:`~qimgintrospect.inspectors.qemu_img` runs qemu-img on the copy,
   format forced, under CPU, memory and time caps;
5. :mod:`~qimgintrospect.normalise` merges the findings into Glance's
   vocabulary.

The front ends (CLI, Glance plugin, audit) call only this module.
"""

import collections

from oslo_config import cfg
from oslo_log import log as logging

from qimgintrospect import exception
from qimgintrospect.inspectors import header as header_inspector
from qimgintrospect.inspectors import qemu_img
from qimgintrospect import normalise
from qimgintrospect import opts
from qimgintrospect import source
from qimgintrospect import workspace

LOG = logging.getLogger(__name__)

CONF = cfg.CONF
opts.register_opts(CONF)


def inspect(path, disk_format=None, conf=None):
    """Inspect the image file at *path*.

    :param path: the image; it is only read, never modified.
    :param disk_format: the Glance disk format the caller declares (qemu's
        ``vpc`` and ``parallels`` are accepted as ``vhd`` and ``ploop``).
        None: use the detected format, which must still be allowed.
    :param conf: oslo.config ConfigOpts; default the global CONF.
    :returns: :class:`qimgintrospect.normalise.Result` with ``properties``,
        ``details`` and ``warnings``.
    :raises IntrospectionError: and nothing else; its ``code`` names the
        check or step that failed, its ``exit_code`` is 2, 3 or 4. The
        workspace holds nothing of this call once it returns or raises.
    """
    conf = conf or CONF
    try:
        return _inspect(path, normalise.glance_disk_format(disk_format), conf)
    except exception.IntrospectionError as err:
        LOG.info('%s: %s (%s)', path, err.message, err.code)
        raise
    except Exception as err:
        LOG.exception('unexpected error inspecting %s', path)
        raise exception.InspectionFailed(
            exception.INTERNAL_ERROR,
            'unexpected error: %s: %s' % (type(err).__name__, err))


#: One image of a batch: its path, declared Glance disk format (or None)
#: and owner (images of different owners are never inspected together).
ImageRequest = collections.namedtuple('ImageRequest',
                                      ['path', 'disk_format', 'owner'])
ImageRequest.__new__.__defaults__ = (None, None)


def inspect_many(requests, conf=None):
    """Inspect several images; one broken image fails alone.

    :param requests: iterable of :class:`ImageRequest`.
    :returns: a list, in the order of *requests*, holding for each image
        either its :class:`~qimgintrospect.normalise.Result` or the
        :class:`~qimgintrospect.exception.IntrospectionError` it raised.
    """
    results = []
    for request in requests:
        try:
            results.append(inspect(request.path, request.disk_format, conf))
        except exception.IntrospectionError as err:
            results.append(err)
    return results


def _inspect(path, declared_format, conf):
    with source.open_image(path) as image:
        header = header_inspector.inspect(image.fd, image.size,
                                          declared_format, conf)
        with workspace.Workspace.from_conf(conf).slot() as slot:
            copy = slot.private_copy(image)
            header_inspector.confirm_copy(copy.path, header)
            qemu_findings = qemu_img.inspect(copy.path, header.format, conf)
    return normalise.merge(dict(header.findings, warnings=header.warnings),
                           qemu_findings)
