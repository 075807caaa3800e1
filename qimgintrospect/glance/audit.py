"""The audit of a Glance catalogue: the walk, batched and resumable.

:class:`Audit` walks the catalogue page by page, gathers up to
:func:`~qimgintrospect.api.batch_size` images of one owner into a batch
(:class:`~qimgintrospect.api.Batches`, the core's own rule), inspects up
to ``max_workers`` batches at once (each downloaded into one workspace
slot and inspected together by
:func:`~qimgintrospect.glance.client.inspect_images`: one guest appliance
per batch), and reports (:mod:`~qimgintrospect.glance.report`) and, when
asked, writes back what differs. What each image said is kept in the
:mod:`~qimgintrospect.glance.state` store as soon as it is known.
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


import queue
import threading

from concurrent import futures
from oslo_log import log as logging

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect.glance import client as glance_client
from qimgintrospect.glance import report as report_mod
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

#: Seconds an interrupted run waits for its downloads to stop.
INTERRUPT_GRACE = 5

#: Errors that say nothing about the image's data: not recorded, so the
#: next run tries again.
TRANSIENT = frozenset([
    exception.WORKSPACE_QUOTA, exception.WORKSPACE_NO_SPACE,
    exception.WORKSPACE_BUSY, exception.WORKSPACE_UNUSABLE,
    exception.DOWNLOAD_FAILED, exception.GLANCE_UNREACHABLE,
    exception.GLANCE_AUTH, exception.IMAGE_NOT_FOUND,
    exception.QEMU_IMG_NOT_FOUND, exception.INTERNAL_ERROR,
    exception.READ_ERROR, exception.FILE_NOT_FOUND,
    # The appliance could not start, or the host was too slow for it.
    exception.GUEST_UNAVAILABLE, exception.GUEST_TIMEOUT,
    # Reads by ranges that met the network, Glance or nbdkit, or a
    # read_mode the next run may not have.
    exception.REMOTE_UNREACHABLE, exception.REMOTE_HTTP_ERROR,
    exception.REMOTE_AUTH, exception.REMOTE_NOT_FOUND,
    exception.REMOTE_EXPORT_FAILED, exception.REMOTE_RANGES_NOT_HONOURED,
])


def checksum_of(image):
    """The key of the image's data: its multihash, else its MD5, or None."""
    return image.get('os_hash_value') or image.get('checksum')


class Audit(object):
    """One run over a catalogue.

    :param client: a python-glanceclient v2 client (admin credentials see
        every tenant's images).
    :param conf: the oslo.config options (workspace, audit).
    :param state: a :class:`~qimgintrospect.glance.state.StateStore`.
    :param policy: a :class:`~qimgintrospect.glance.report.Policy`.
    :param max_images: inspect at most this many images in this run (the
        rest are counted as deferred, for the next run); None: no limit.
    :param progress: called in the calling thread as
        ``progress(image, outcome, unchanged)`` after each image.
    :param observer: a :mod:`qimgintrospect.progress` observer for the
        core's stages (KVM probe, appliances), called from the workers.
    """

    def __init__(self, client, conf, state, policy, max_images=None,
                 progress=None, observer=None):
        self.client = client
        self.conf = conf
        self.state = state
        self.policy = policy
        self.max_images = max_images
        self.progress = progress
        self.observer = observer
        self.workers = conf[opts.WORKSPACE_GROUP].max_workers
        # Images of one owner are gathered into batches that share a
        # workspace slot and, with guest detection on, one appliance.
        self.batch_size = api.batch_size(conf)

    def run(self, filters):
        """Walk the images that match *filters*; return their Report.

        If the run is interrupted (an exception, KeyboardInterrupt, the
        SystemExit of a signal), the downloads under way stop at their next
        chunk, their slots are emptied, and what was recorded stays.
        """
        report = report_mod.Report()
        stop = threading.Event()
        pending = {}
        gathering = api.Batches(self.batch_size)
        pool = _DaemonPool(self.workers)

        def submit(batch):
            pending[pool.submit(self._inspect, batch, stop)] = batch

        try:
            listing = glance_client.list_images(
                self.client, filters,
                self.conf[opts.AUDIT_GROUP].page_size)
            for image in listing:
                if self._needs_inspection(image, report, pending, gathering):
                    for batch in gathering.add(image, image.get('owner')):
                        submit(batch)
                # Two batches waiting per worker keep every worker busy
                # without holding the whole catalogue in memory.
                while len(pending) >= 2 * self.workers:
                    self._collect(pending, report)
            for batch in gathering.flush():
                submit(batch)
            while pending:
                self._collect(pending, report)
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            # Downloads stop at their next chunk and empty their slots; a
            # worker still busy after the grace period (waiting for a slot,
            # or in qemu-img) is a daemon thread and does not hold the
            # process: its slot is swept by the next run.
            futures.wait(list(pending), timeout=INTERRUPT_GRACE)
            raise
        finally:
            pool.close()
        return report

    def _needs_inspection(self, image, report, pending, gathering):
        """Count *image*; True when it is to be downloaded and inspected.

        An image that is not inspectable, unchanged since it was recorded,
        or past --max-images is finished (or deferred) here.
        """
        report.counts.listed += 1
        if image.get('size'):
            report.sizes.append(image['size'])
        try:
            glance_client.check_inspectable(image)
        except exception.IntrospectionError as err:
            self._finish(image, err, report, unchanged=False)
            return False
        checksum = checksum_of(image)
        # An image without a checksum (a location added by hand) cannot be
        # recognised next time: it is inspected on every run.
        recorded = (self.state.get(image['id'], checksum) if checksum
                    else None)
        if recorded is not None:
            self._finish(image, recorded, report, unchanged=True)
            return False
        queued = sum(len(batch) for batch in pending.values()) + len(
            gathering)
        if (self.max_images is not None
                and report.counts.inspected + queued >= self.max_images):
            report.counts.deferred += 1
            return False
        return True

    def _inspect(self, batch, stop):
        # Runs in a worker thread: it returns an outcome per image, never
        # raises, so that one image's trouble stays that image's.
        try:
            return glance_client.inspect_images(self.client, batch,
                                                self.conf, stop,
                                                self.observer)
        except exception.IntrospectionError as err:
            return [err] * len(batch)
        except Exception as err:
            LOG.exception('unexpected error auditing images %s',
                          ', '.join(image['id'] for image in batch))
            return [exception.InspectionFailed(
                exception.INTERNAL_ERROR,
                'unexpected error: %s: %s' % (type(err).__name__, err))
            ] * len(batch)

    def _collect(self, pending, report):
        done, _ = futures.wait(list(pending),
                               return_when=futures.FIRST_COMPLETED)
        for future in done:
            batch = pending.pop(future)
            for image, outcome in zip(batch, future.result()):
                report.counts.inspected += 1
                report.reads.add(image, outcome)
                if self._settled(outcome, report) and checksum_of(image):
                    self.state.put(image['id'], checksum_of(image), outcome)
                self._finish(image, outcome, report, unchanged=False)

    @staticmethod
    def _settled(outcome, report):
        """True when *outcome* is the image's answer, to be recorded.

        Not when it says nothing about the image's data (a transient
        error), nor when a stage is missing that may succeed next time
        (the guest appliance could not start): the next run asks again.
        """
        if isinstance(outcome, exception.IntrospectionError):
            return outcome.code not in TRANSIENT
        if api.incomplete(outcome):
            report.counts.incomplete += 1
            return False
        return True

    def _finish(self, image, outcome, report, unchanged):
        if unchanged:
            report.counts.unchanged += 1
        if isinstance(outcome, exception.UsageError):
            # Not a finding about the image (no data yet, a kernel image,
            # deleted meanwhile): counted, not listed, or every run would
            # list every AMI of the catalogue.
            report.counts.not_inspected += 1
            rows, changed = [], False
        else:
            rows, changed = report_mod.image_rows(self.client, image,
                                                  outcome, self.policy)
        if isinstance(outcome, exception.ImageRefused):
            report.counts.refused += 1
        elif isinstance(outcome, exception.InspectionFailed):
            report.counts.failed += 1
        elif any(row.action for row in rows):
            report.counts.differing += 1
        report.counts.changed += changed
        report.rows.extend(rows)
        if self.progress is not None:
            self.progress(image, outcome, unchanged)


class _DaemonPool(object):
    """*size* daemon threads that run submitted calls, with futures.

    Unlike ThreadPoolExecutor, whose threads the interpreter joins at exit,
    these never keep an interrupted audit from exiting.
    """

    def __init__(self, size):
        self._queue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name='audit-%d' % n)
                         for n in range(size)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn, *args):
        future = futures.Future()
        self._queue.put((future, fn, args))
        return future

    def close(self):
        """Let every thread end once the calls already queued are done."""
        for _ in self._threads:
            self._queue.put(None)

    def _work(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as err:
                future.set_exception(err)
