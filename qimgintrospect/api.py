"""The one entry of the core: image files in, Glance properties out.

Read :func:`inspect_many` top to bottom to see where every property comes
from; :func:`inspect` is a batch of one. For each image:

1. :mod:`~qimgintrospect.source` opens the user's file without following
   links or blocking on FIFOs;
2. :mod:`~qimgintrospect.inspectors.header` reads only the header, decides
   the real format and refuses anything unsafe, before any tool runs and
   before a workspace slot is taken;
3. :mod:`~qimgintrospect.workspace` gives one of ``max_workers`` slots,
   where a private copy is made within the quota; the header check is
   confirmed on the copy, the only file any tool ever sees;
4. :mod:`~qimgintrospect.inspectors.qemu_img` runs qemu-img on the copy,
   format forced, under CPU, memory and time caps;
5. when ``[introspection_guest] enabled``,
   :mod:`~qimgintrospect.inspectors.guest` looks at the guest OS on the
   copies in a libguestfs appliance (read-only, format forced, no
   network): images of one owner share one, which is the slow step (tens
   of seconds under emulation), so their copies stay in one slot until
   their appliance is done;
6. :mod:`~qimgintrospect.normalise` merges the findings into Glance's
   vocabulary.

A remote image (a :class:`RemoteRequest`: Glance's image data, a web
server's file) is read by ranges where its server honours them
(:mod:`~qimgintrospect.remote`): the workspace slot is taken first, its
header and tail are fetched into a block cache there and checked as in
step 2, and qemu-img and the appliance read it through a read-only NBD
export of that cache, so nothing of it is copied but what they read.
Where ranges are not honoured it is downloaded whole into the slot and
inspected as a local file. ``details`` says which way it was read
(``read_by``) and how many bytes that took (``bytes_read``).

Each image's outcome is recorded once, as a result or as the
:class:`~qimgintrospect.exception.IntrospectionError` that stopped it: one
broken image fails alone. The front ends (CLI, Glance plugin, audit) call
only this module.
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
from concurrent import futures
import contextlib

from oslo_config import cfg
from oslo_log import log as logging

from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect.inspectors import guest
from qimgintrospect.inspectors.guest import stage as guest_stage
from qimgintrospect.inspectors import header as header_inspector
from qimgintrospect.inspectors import qemu_img
from qimgintrospect import normalise
from qimgintrospect import opts
from qimgintrospect import progress
from qimgintrospect.remote import source as remote_source
from qimgintrospect import source
from qimgintrospect import workspace

LOG = logging.getLogger(__name__)

CONF = cfg.CONF
opts.register_opts(CONF)

#: One image of a batch: its path, declared Glance disk format (or None:
#: the detected one, which must still be allowed) and owner (images of
#: different owners never share a guest appliance, nor do images without
#: an owner).
ImageRequest = collections.namedtuple('ImageRequest',
                                      ['path', 'disk_format', 'owner'])
ImageRequest.__new__.__defaults__ = (None, None)

#: One remote image of a batch: see
#: :class:`qimgintrospect.remote.source.RemoteRequest`.
RemoteRequest = remote_source.RemoteRequest


def inspect(path, disk_format=None, conf=None, run_guest=True,
            observer=None):
    """Inspect the image file at *path*: a batch of one.

    :param path: the image; it is only read, never modified.
    :param disk_format: the Glance disk format the caller declares (qemu's
        ``vpc`` and ``parallels`` are accepted as ``vhd`` and ``ploop``).
        None: use the detected format, which must still be allowed.
    :param conf: oslo.config ConfigOpts; default the global CONF.
    :param run_guest: False never runs the guest stage, whatever
        ``[introspection_guest] enabled`` says (the Glance plugin's own
        switch).
    :param observer: None, or a callable told of each stage as a
        :class:`qimgintrospect.progress.Event` (the CLI's status line).
    :returns: :class:`qimgintrospect.normalise.Result` with ``properties``,
        ``details`` and ``warnings``.
    :raises IntrospectionError: and nothing else; its ``code`` names the
        check or step that failed, its ``exit_code`` is 2, 3 or 4. The
        workspace holds nothing of this call once it returns or raises.
    """
    outcome, = _run([ImageRequest(path, disk_format)], conf or CONF,
                    None, run_guest, observer)
    return outcome.result()


def inspect_url(url, disk_format=None, conf=None, session=None,
                run_guest=True, observer=None):
    """Inspect the image at the http(s) *url*: a batch of one.

    Read by ranges, or downloaded whole, as ``[introspection_remote]
    read_mode`` says; otherwise as :func:`inspect`.

    :param session: credentials (see :class:`RemoteRequest`), or None.
    :raises IntrospectionError: as :func:`inspect`, and the ``remote-*``
        codes of :mod:`qimgintrospect.remote.httpranges`.
    """
    outcome, = _run([RemoteRequest(url, disk_format, session=session)],
                    conf or CONF, None, run_guest, observer)
    return outcome.result()


def inspect_many(requests, conf=None, slot=None, run_guest=True,
                 observer=None):
    """Inspect several images; one broken image fails alone.

    Images of one ``owner`` are inspected in batches of up to
    :func:`batch_size` that share one guest appliance (when guest
    detection is enabled); images of different owners never share one.

    :param requests: iterable of :class:`ImageRequest` and
        :class:`RemoteRequest`.
    :param slot: a :class:`~qimgintrospect.workspace.Slot` the caller
        holds (a front end that downloaded the images into it): every
        batch is then inspected in it, one after the other, and no other
        slot is taken. None: up to ``max_workers`` batches at once, each
        in a slot of its own.
    :param run_guest: as for :func:`inspect`.
    :param observer: as for :func:`inspect`; called from every batch's
        thread, so it must be thread-safe.
    :returns: a list, in the order of *requests*, holding for each image
        either its :class:`~qimgintrospect.normalise.Result` or the
        :class:`~qimgintrospect.exception.IntrospectionError` that stopped
        it.
    """
    return [outcome.exception() or outcome.result()
            for outcome in _run(list(requests), conf or CONF, slot,
                                run_guest, observer)]


def batch_size(conf=None):
    """How many images of one owner are inspected in one batch.

    A front end that gathers images for one call (the audit) gathers this
    many of one owner, with a :class:`Batches`: they then form one batch,
    inspected in one slot and, with guest detection on, in one appliance.
    """
    guest_conf = (conf or CONF)[opts.GUEST_GROUP]
    return guest_conf.drives_per_appliance if guest_conf.enabled else 1


class Batches(object):
    """Gathers items into batches of up to *size* items of one owner.

    The one batching rule of the project, greedy and in order: a batch is
    complete once it holds *size* items of its owner. Items without an
    owner (None) are batches of their own: they share nothing with
    anybody.
    """

    def __init__(self, size):
        self.size = size
        self._by_owner = collections.OrderedDict()

    def __len__(self):
        return sum(len(items) for items in self._by_owner.values())

    def add(self, item, owner):
        """Gather *item*; return the batches it completed (0 or 1)."""
        if owner is None or self.size <= 1:
            return [[item]]
        items = self._by_owner.setdefault(owner, [])
        items.append(item)
        if len(items) < self.size:
            return []
        del self._by_owner[owner]
        return [items]

    def flush(self):
        """Return the batches still gathering, and forget them."""
        batches = list(self._by_owner.values())
        self._by_owner.clear()
        return batches


def incomplete(result):
    """True when *result* lacks a stage that may succeed on another run.

    The guest stage could not run (no appliance could start on this host)
    or libguestfs failed part-way: the format properties stand, the OS
    properties are missing. A record of such a result should not be kept
    as the image's answer (the audit asks again next run).
    """
    return result.details.get(guest_stage.KEY) in guest_stage.RETRIABLE


def _run(requests, conf, slot, run_guest, observer=None):
    """One :class:`~concurrent.futures.Future` per request, all done."""
    outcomes = [futures.Future() for _ in requests]
    batches = Batches(batch_size(conf) if run_guest else 1)
    groups = []
    for index, request in enumerate(requests):
        groups += batches.add(index, request.owner)
    groups += batches.flush()

    def inspect_group(group):
        _inspect_batch([requests[i] for i in group],
                       [outcomes[i] for i in group], conf, slot, run_guest,
                       observer)

    workers = min(len(groups), conf[opts.WORKSPACE_GROUP].max_workers)
    if slot is not None or workers <= 1:
        for group in groups:
            inspect_group(group)
    else:
        with futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(inspect_group, groups))
    return outcomes


def _inspect_batch(requests, outcomes, conf, slot, run_guest,
                   observer=None):
    """Inspect one batch; set each image's outcome."""
    progress.notify(observer, progress.HEADER, [r.path for r in requests])
    with contextlib.ExitStack() as stack:
        checked = []
        remote = []
        # Headers first, before a slot is taken: a refused image never
        # waits for one, nor touches the workspace. Each source stays open
        # (what was checked is what is copied) until its copy is made.
        for request, outcome in zip(requests, outcomes):
            if isinstance(request, RemoteRequest):
                # Its header is fetched into the slot: checked there.
                remote.append((request, outcome))
                continue
            opened = stack.enter_context(contextlib.ExitStack())
            with _recorded(outcome, request.path):
                checked.append((request, outcome, opened,
                                opened.enter_context(_checked_source(
                                    request.path, request.disk_format,
                                    conf))))
        if not checked and not remote:
            return
        with _recorded_for_all([c[1] for c in checked]
                               + [r[1] for r in remote], requests):
            if slot is None:
                slot = stack.enter_context(
                    workspace.Workspace.from_conf(conf).slot())
            prepared = []
            for request, outcome, opened, (image, header) in checked:
                with opened, _recorded(outcome, request.path):
                    prepared.append((outcome, _copy_and_measure(
                        request.path, image, header, slot, conf, observer)))
            for request, outcome in remote:
                with _recorded(outcome, request.path):
                    prepared.append((outcome, _prepare_remote(
                        request, slot, conf, stack, observer)))
            found = _guest_findings([p for _, p in prepared], slot, conf,
                                    run_guest, observer)
            for (outcome, image), guest_findings in zip(prepared, found):
                with _recorded(outcome, image.path):
                    outcome.set_result(_finish(image, guest_findings,
                                               conf))


#: An image that passed the header check and qemu-img, with its findings
#: and the path of its workspace copy. A remote image read by ranges has
#: an NBD export instead (``server``; ``copy_path`` is its export name);
#: ``reads``, for a remote image, ends its reads (stops its export,
#: raising what the export met) and returns how it was read.
_Prepared = collections.namedtuple(
    '_Prepared', ['path', 'header', 'qemu_findings', 'copy_path', 'server',
                  'reads'])
_Prepared.__new__.__defaults__ = (None, None)


@contextlib.contextmanager
def _checked_source(path, disk_format, conf):
    """Open *path* and check its header; yield (source image, header)."""
    declared_format = diskformats.glance_name(disk_format)
    with source.open_image(path) as image:
        yield image, header_inspector.inspect(image.fd, image.size,
                                              declared_format, conf)


def _copy_and_measure(path, image, header, slot, conf, observer=None):
    progress.notify(observer, progress.COPY, [path])
    copy = slot.private_copy(image)
    header_inspector.confirm_copy(copy.path, header)
    progress.notify(observer, progress.QEMU_IMG, [path])
    qemu_findings = qemu_img.inspect(copy.path, header.format, conf, header)
    return _Prepared(path, header, qemu_findings, copy.path)


def _prepare_remote(request, slot, conf, batch, observer=None):
    """Check and measure a remote image in *slot*: by ranges, or whole.

    By ranges unless ``read_mode`` is ``download`` (or ``auto`` says a
    download costs less); whole (then as a local file) when its server
    does not honour ranges and ``read_mode`` is ``auto``.

    :param batch: the batch's ExitStack: the image's cache stays open
        until the batch ends, its export until ``reads`` is called.
    :raises RangesNotHonoured: ``read_mode`` is ``ranges`` and the server
        does not honour them.
    """
    declared_format = diskformats.glance_name(request.disk_format)
    mode = remote_source.read_mode(conf, request.size)
    if mode != remote_source.DOWNLOAD:
        try:
            remote = batch.enter_context(
                remote_source.open_ranged(request, slot, conf))
        except exception.RangesNotHonoured as err:
            if mode == remote_source.RANGES:
                raise
            LOG.info('%s: downloading it whole: %s', request.path,
                     err.message)
        else:
            return _measure_ranged(request.path, remote, declared_format,
                                   conf, batch, observer)
    copy, figures = remote_source.download(request, slot, conf)
    with _checked_source(copy.path, request.disk_format, conf) as (
            image, header):
        prepared = _copy_and_measure(request.path, image, header, slot,
                                     conf, observer)
    return prepared._replace(reads=lambda: figures)


def _measure_ranged(label, remote, declared_format, conf, batch,
                    observer=None):
    """Header check and qemu-img through an export of *remote*."""
    header = header_inspector.inspect(remote, remote.size, declared_format,
                                      conf)
    # The export sees how its block ends: a failure its plugin met (a
    # lying server) is raised in place of qemu-img's EIO.
    with contextlib.ExitStack() as starting:
        export = starting.enter_context(remote.export())
        progress.notify(observer, progress.QEMU_IMG, [label])
        qemu_findings = qemu_img.inspect(export.uri, header.format, conf,
                                         header,
                                         filename=export.qemu_filename)
        # Served on for the guest stage; stopped by reads(), or with the
        # batch at the latest.
        serving = batch.enter_context(starting.pop_all())

    def reads():
        serving.close()
        return remote_source.ranged_figures(remote.stats())
    return _Prepared(label, header, qemu_findings, '', export.server, reads)


def _guest_findings(prepared, slot, conf, run_guest, observer=None):
    """Guest findings for each prepared image: None, a dict, or its error."""
    if not (run_guest and conf[opts.GUEST_GROUP].enabled) or not prepared:
        return [None] * len(prepared)
    images = [guest.GuestImage(p.copy_path, p.header.format, p.path,
                               p.server) for p in prepared]
    return guest.inspect_images(images, conf, slot.directory, observer)


def _finish(prepared, guest_findings, conf):
    """Merge the findings of one image into its Result.

    :param guest_findings: None (no guest stage), a findings dict, or the
        IntrospectionError of the image's guest stage: raised, except
        guest-unavailable, which is a warning unless fail_if_unavailable.
    """
    # A remote image's reads end first: what its export met wins.
    reads = prepared.reads() if prepared.reads else {}
    if isinstance(guest_findings, exception.IntrospectionError):
        if (guest_findings.code != exception.GUEST_UNAVAILABLE
                or conf[opts.GUEST_GROUP].fail_if_unavailable):
            raise guest_findings
        guest_findings = guest_stage.findings(
            guest_stage.UNAVAILABLE, 'guest OS properties not set: %s (%s)'
            % (guest_findings.message, guest_findings.code))
    header = prepared.header
    return normalise.merge(dict(header.findings, warnings=header.warnings),
                           prepared.qemu_findings, guest_findings or {},
                           reads)


@contextlib.contextmanager
def _recorded(outcome, path):
    """Record an error raised in the block as *outcome*'s exception.

    Any error but an IntrospectionError is a bug: it is logged with its
    traceback and recorded as internal-error.
    """
    try:
        yield
    except exception.IntrospectionError as err:
        LOG.info('%s: %s (%s)', path, err.message, err.code)
        outcome.set_exception(err)
    except Exception as err:
        LOG.exception('unexpected error inspecting %s', path)
        outcome.set_exception(exception.InspectionFailed(
            exception.INTERNAL_ERROR,
            'unexpected error: %s: %s' % (type(err).__name__, err)))


@contextlib.contextmanager
def _recorded_for_all(outcomes, requests):
    """Record an error of the block as every unset outcome's exception.

    For what stops a whole batch (no workspace slot to be had).
    """
    label = ', '.join(r.path for r in requests)
    shared = futures.Future()
    with _recorded(shared, label):
        yield
    if shared.done():
        for outcome in outcomes:
            if not outcome.done():
                outcome.set_exception(shared.exception())
