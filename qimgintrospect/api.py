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
5. when ``[introspection_guest] enabled``,
   :mod:`~qimgintrospect.inspectors.guest` looks at the guest OS on the
   copy in a libguestfs appliance (read-only, format forced, no network);
6. :mod:`~qimgintrospect.normalise` merges the findings into Glance's
   vocabulary.

:func:`inspect_many` does the same for many images, and lets images of
one owner share an appliance: that is the slow step (tens of seconds
under emulation), and the copies of a group stay in one workspace slot
until their appliance is done.

The front ends (CLI, Glance plugin, audit) call only this module.
"""

import collections
from concurrent import futures
import contextlib

from oslo_config import cfg
from oslo_log import log as logging

from qimgintrospect import exception
from qimgintrospect.inspectors import guest
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
    outcome = _outcome(path, _inspect, path, disk_format, conf)
    if isinstance(outcome, exception.IntrospectionError):
        raise outcome
    return outcome


#: One image of a batch: its path, declared Glance disk format (or None)
#: and owner (images of different owners are never inspected together).
ImageRequest = collections.namedtuple('ImageRequest',
                                      ['path', 'disk_format', 'owner'])
ImageRequest.__new__.__defaults__ = (None, None)


def inspect_many(requests, conf=None):
    """Inspect several images; one broken image fails alone.

    Images of one ``owner`` are inspected in groups of up to
    ``[introspection_guest] drives_per_appliance`` that share one guest
    appliance (when guest detection is enabled). Images of different
    owners never share an appliance, nor do images without an owner. Up
    to ``max_workers`` groups are inspected at once.

    :param requests: iterable of :class:`ImageRequest`.
    :returns: a list, in the order of *requests*, holding for each image
        either its :class:`~qimgintrospect.normalise.Result` or the
        :class:`~qimgintrospect.exception.IntrospectionError` it raised.
    """
    conf = conf or CONF
    requests = list(requests)
    groups = _groups(requests, conf)
    results = [None] * len(requests)
    workers = min(len(groups), conf[opts.WORKSPACE_GROUP].max_workers)
    if workers <= 1:
        # In the calling thread, so that a slot it lends (a front end that
        # downloaded the images into it) is the one the group uses.
        outcomes = [_inspect_group([requests[i] for i in group], conf)
                    for group in groups]
    else:
        with futures.ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(
                lambda group: _inspect_group([requests[i] for i in group],
                                             conf), groups))
    for group, group_outcomes in zip(groups, outcomes):
        for index, outcome in zip(group, group_outcomes):
            results[index] = outcome
    return results


def batch_size(conf=None):
    """How many images of one owner :func:`inspect_many` puts together.

    A front end that gathers images for one call (the audit) gathers this
    many of one owner: they then form one group, inspected in the calling
    thread and, with guest detection on, in one appliance.
    """
    guest_conf = (conf or CONF)[opts.GUEST_GROUP]
    return guest_conf.drives_per_appliance if guest_conf.enabled else 1


def _inspect(path, disk_format, conf):
    # The header is checked before a slot is taken: a refused image never
    # waits for one, nor touches the workspace.
    with _checked_source(path, disk_format, conf) as (image, header):
        with workspace.Workspace.from_conf(conf).slot() as slot:
            prepared = _copy_and_measure(path, image, header, slot, conf)
            guest_findings, = _guest_stage([prepared], slot, conf)
    return _finish(prepared, guest_findings)


def _groups(requests, conf):
    """Split request indexes into the groups that may share an appliance.

    A group holds images of one owner only, at most drives_per_appliance
    of them (one when guest detection is off: nothing is shared then), in
    groups of even size so that parallel appliances finish together.
    """
    size = batch_size(conf)
    groups = []
    by_owner = {}
    for index, request in enumerate(requests):
        if request.owner is None:
            groups.append([index])
        else:
            by_owner.setdefault(request.owner, []).append(index)
    for indexes in by_owner.values():
        count = -(-len(indexes) // size)
        bounds = [len(indexes) * i // count for i in range(count + 1)]
        groups += [indexes[bounds[i]:bounds[i + 1]] for i in range(count)]
    return groups


def _inspect_group(batch, conf):
    """Inspect one group of requests; return an outcome per request.

    Each image gets its own header check, copy and qemu-img run; the
    copies stay in one workspace slot until their shared guest appliance
    is done.
    """
    def run():
        with workspace.Workspace.from_conf(conf).slot() as slot:
            outcomes = [
                _outcome(request.path, _prepare, request, slot, conf)
                for request in batch]
            ready = [n for n, outcome in enumerate(outcomes)
                     if isinstance(outcome, _Prepared)]
            found = _guest_stage([outcomes[n] for n in ready], slot, conf)
        for n, guest_findings in zip(ready, found):
            outcomes[n] = _outcome(batch[n].path, _finish, outcomes[n],
                                   guest_findings)
        return outcomes

    group_outcome = _outcome(', '.join(r.path for r in batch), run)
    if isinstance(group_outcome, exception.IntrospectionError):
        # The slot itself could not be had (workspace busy or unusable).
        return [group_outcome] * len(batch)
    return group_outcome


#: An image that passed the header check and qemu-img, with its findings
#: and the path of its workspace copy.
_Prepared = collections.namedtuple(
    '_Prepared', ['path', 'header', 'qemu_findings', 'copy_path'])


def _prepare(request, slot, conf):
    with _checked_source(request.path, request.disk_format, conf) as (
            image, header):
        return _copy_and_measure(request.path, image, header, slot, conf)


@contextlib.contextmanager
def _checked_source(path, disk_format, conf):
    """Open *path* and check its header; yield (source image, header)."""
    declared_format = normalise.glance_disk_format(disk_format)
    with source.open_image(path) as image:
        yield image, header_inspector.inspect(image.fd, image.size,
                                              declared_format, conf)


def _copy_and_measure(path, image, header, slot, conf):
    copy = slot.private_copy(image)
    header_inspector.confirm_copy(copy.path, header)
    qemu_findings = qemu_img.inspect(copy.path, header.format, conf, header)
    return _Prepared(path, header, qemu_findings, copy.path)


def _guest_stage(prepared, slot, conf):
    """Guest findings for each prepared image: a dict, or its error.

    When libguestfs is unusable the OS properties are skipped with a
    warning, unless fail_if_unavailable makes that the image's error.
    """
    guest_conf = conf[opts.GUEST_GROUP]
    if not guest_conf.enabled or not prepared:
        return [{}] * len(prepared)
    images = [guest.GuestImage(p.copy_path, p.header.format, p.path)
              for p in prepared]
    found = guest.inspect_images(images, conf, slot.directory)
    return [_unavailable_as_warning(f, guest_conf) for f in found]


def _unavailable_as_warning(found, guest_conf):
    if (isinstance(found, exception.IntrospectionError)
            and found.code == exception.GUEST_UNAVAILABLE
            and not guest_conf.fail_if_unavailable):
        return {'warnings': ['guest OS properties not set: %s (%s)'
                             % (found.message, found.code)]}
    return found


def _finish(prepared, guest_findings):
    if isinstance(guest_findings, exception.IntrospectionError):
        raise guest_findings
    header = prepared.header
    return normalise.merge(dict(header.findings, warnings=header.warnings),
                           prepared.qemu_findings, guest_findings)


def _outcome(path, func, *args):
    """Return ``func(*args)``, or the IntrospectionError it raised.

    Any other exception is a bug: it is logged with its traceback and
    becomes internal-error.
    """
    try:
        return func(*args)
    except exception.IntrospectionError as err:
        LOG.info('%s: %s (%s)', path, err.message, err.code)
        return err
    except Exception as err:
        LOG.exception('unexpected error inspecting %s', path)
        return exception.InspectionFailed(
            exception.INTERNAL_ERROR,
            'unexpected error: %s: %s' % (type(err).__name__, err))
