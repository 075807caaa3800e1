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

The same walk runs on every host of an audit shared through a
coordination service: each image to act on is claimed by the worker the
group gives it to, and the others wait for it in the run's journal
(:mod:`~qimgintrospect.glance.workers`); alone, this worker is given
every image.
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
from qimgintrospect.glance import properties
from qimgintrospect.glance import report as report_mod
from qimgintrospect.glance import workers as workers_mod
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
    """One run over a catalogue, by this worker.

    :param client: a python-glanceclient v2 client (admin credentials see
        every tenant's images).
    :param conf: the oslo.config options (workspace, audit).
    :param state: a :class:`~qimgintrospect.glance.state.StateStore`; its
        ``worker`` and ``run_id`` are this worker's and the run's.
    :param policy: a :class:`~qimgintrospect.glance.report.Policy`.
    :param max_images: inspect at most this many images in this run (the
        rest are counted as deferred, for the next run); None: no limit.
        With several workers, each inspects at most this many.
    :param progress: called in the calling thread as
        ``progress(image, outcome, unchanged)`` after each image this
        worker settled.
    :param observer: a :mod:`qimgintrospect.progress` observer for the
        core's stages (KVM probe, appliances), called from the workers.
    :param member: this worker in its audit group
        (:class:`~qimgintrospect.glance.coordination.GroupMember`, started);
        default: alone (``SoleWorker``).
    """

    def __init__(self, client, conf, state, policy, max_images=None,
                 progress=None, observer=None, member=None):
        self.client = client
        self.conf = conf
        self.state = state
        self.policy = policy
        self.max_images = max_images
        self.progress = progress
        self.observer = observer
        self.member = member or _alone(state.worker)
        self.workers = conf[opts.WORKSPACE_GROUP].max_workers
        # Images of one owner are gathered into batches that share a
        # workspace slot and, with guest detection on, one appliance.
        self.batch_size = api.batch_size(conf)
        # The claims this worker holds, by image id: from the moment an
        # image is queued until its outcome is journalled.
        self._claims = {}

    def run(self, filters):
        """Walk the images that match *filters*; return the run's Report.

        The report is the whole run's (a
        :class:`~qimgintrospect.glance.workers.RunReport`), whichever
        worker settled each image: this returns once every image listed
        is settled by one of them or left for the next run.

        If the run is interrupted (an exception, KeyboardInterrupt, the
        SystemExit of a signal), the downloads under way stop at their next
        chunk, their slots are emptied, the claims are released, and what
        was recorded stays.

        :raises InspectionFailed: glance-unreachable (a page of the
            catalogue, after ``list_retries``), state-database-unavailable,
            coordination-unavailable.
        """
        report = workers_mod.RunReport()
        audit_conf = self.conf[opts.AUDIT_GROUP]
        ledger = workers_mod.Ledger(self.state.worker)
        share = workers_mod.Share(self.member, self.state,
                                  audit_conf.refresh_interval,
                                  audit_conf.page_size, self.batch_size)
        stop = threading.Event()
        pending = {}
        gathering = api.Batches(self.batch_size)
        pool = _DaemonPool(self.workers)

        def submit(batch):
            pending[pool.submit(self._inspect, batch, stop)] = batch

        def take(images):
            for image in images:
                if self._take(image, report, ledger, share, pending,
                              gathering):
                    for batch in gathering.add(image, image.get('owner')):
                        submit(batch)

        self.state.enter_run()
        try:
            listing = glance_client.list_images(
                self.client, filters, audit_conf.page_size,
                retries=audit_conf.list_retries)
            for image in listing:
                share.listed(image)
                take(share.catch_up())
                if self._needs_action(image, report, ledger):
                    if share.owns(image):
                        take([image])
                    else:
                        share.keep(image)
                # Two batches waiting per worker keep every worker busy
                # without holding the whole catalogue in memory.
                while len(pending) >= 2 * self.workers:
                    self._collect(pending, report, ledger,
                                  workers_mod.WAIT_POLL)
                    take(share.catch_up())
            for batch in gathering.flush():
                submit(batch)
            self.state.mark_walked()
            # The rest of this worker's, and what the others leave to it.
            while pending or share:
                if pending:
                    self._collect(pending, report, ledger,
                                  workers_mod.WAIT_POLL)
                else:
                    share.pause()
                take(share.takeable())
                for batch in gathering.flush():
                    submit(batch)
        except BaseException:
            stop.set()
            for future in pending:
                future.cancel()
            # Downloads stop at their next chunk and empty their slots; a
            # worker still busy after the grace period (waiting for a slot,
            # or in qemu-img) is a daemon thread and does not hold the
            # process: its slot is swept by the next run.
            futures.wait(list(pending), timeout=INTERRUPT_GRACE)
            self._release_claims()
            raise
        finally:
            pool.close()
        self.state.leave_run()
        return ledger.whole_run(report, self.state)

    def _needs_action(self, image, report, ledger):
        """Count *image*; True when one worker is to act on it.

        An image that is not inspectable, or unchanged since it was
        recorded with nothing to write to Glance, is settled here, by
        every worker that lists it (no claim, no journal line).
        """
        report.counts.listed += 1
        ledger.listed(image)
        if image.get('size'):
            report.sizes.append(image['size'])
        try:
            glance_client.check_inspectable(image)
        except exception.IntrospectionError as err:
            self._finish(image, err, report, ledger, unchanged=False)
            return False
        checksum = checksum_of(image)
        # An image without a checksum (a location added by hand) cannot be
        # recognised next time: it is inspected on every run.
        recorded = (self.state.get(image['id'], checksum) if checksum
                    else None)
        if recorded is not None and not self._to_write(image, recorded):
            self._finish(image, recorded, report, ledger, unchanged=True)
            return False
        return True

    def _to_write(self, image, outcome):
        """Whether the policy writes anything to Glance for *outcome*."""
        if not self.policy.apply or isinstance(
                outcome, exception.IntrospectionError):
            return False
        to_set, to_remove = properties.changes(properties.compare(
            outcome.properties, image, overwrite=self.policy.overwrite,
            remove_stale=self.policy.remove_stale))
        return bool(to_set or to_remove)

    def _take(self, image, report, ledger, share, pending, gathering):
        """Claim *image* and act on it; True when it is to be inspected.

        Without the claim it is kept in *share* for later. With it, the
        image is looked at again (another worker may have settled it since
        it was listed): journalled already, it is let go; recorded, its
        record is written to Glance and journalled; past --max-images, it
        is left for the next run; otherwise the claim is held until its
        outcome is journalled.
        """
        image_id = image['id']
        claim = self.member.claim(image_id)
        if claim is None:
            share.keep(image)
            return False
        self._claims[image_id] = claim
        journalled, recorded = self.state.look_again(image_id,
                                                     checksum_of(image))
        if journalled:
            self._release(image_id)
            return False
        if recorded is not None:
            self._finish(image, recorded, report, ledger, unchanged=True,
                         journal=True)
            return False
        queued = sum(len(batch) for batch in pending.values()) + len(
            gathering)
        if (self.max_images is not None
                and report.counts.inspected + queued >= self.max_images):
            report.counts.deferred += 1
            self._release(image_id)
            return False
        return True

    def _release(self, image_id):
        claim = self._claims.pop(image_id, None)
        if claim is not None:
            claim.release()

    def _release_claims(self):
        if not self.member.connected:
            # Each call would wait for the service: the claims expire.
            LOG.warning('%d claim(s) left to expire: the coordination '
                        'service does not answer', len(self._claims))
            self._claims.clear()
            return
        for image_id in list(self._claims):
            self._release(image_id)

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

    def _collect(self, pending, report, ledger, timeout=None):
        done, _ = futures.wait(list(pending), timeout=timeout,
                               return_when=futures.FIRST_COMPLETED)
        for future in done:
            batch = pending.pop(future)
            for image, outcome in zip(batch, future.result()):
                report.counts.inspected += 1
                report.reads.add(image, outcome)
                if self._settled(outcome, report) and checksum_of(image):
                    # Another worker may have recorded the image first:
                    # Glance is written with what the record says.
                    outcome = self.state.put(image['id'],
                                             checksum_of(image), outcome)
                self._finish(image, outcome, report, ledger,
                             unchanged=False, journal=True)

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

    def _finish(self, image, outcome, report, ledger, unchanged,
                journal=False):
        """Compare, write what the policy says, count, and tell.

        :param journal: this worker acted on the image for the whole run
            (under its claim, released here): the run's journal has it.
            Otherwise every worker settles it alike, each on its own.
        """
        if isinstance(outcome, exception.UsageError):
            # Not a finding about the image (no data yet, a kernel image,
            # deleted meanwhile): counted, not listed, or every run would
            # list every AMI of the catalogue.
            rows, changed = [], False
        else:
            rows, changed = report_mod.image_rows(self.client, image,
                                                  outcome, self.policy)
        if journal:
            self.state.journal(image['id'], outcome, rows, changed,
                               unchanged)
            self._release(image['id'])
        else:
            ledger.finished_here(image, outcome, rows, changed, unchanged)
        workers_mod.tally(report, workers_mod.Entry(
            image['id'], self.state.worker, outcome, rows, changed,
            unchanged))
        if self.progress is not None:
            self.progress(image, outcome, unchanged)


def _alone(worker_id):
    """A worker without a coordination service: every image is its own."""
    # Imported here: every qimg-introspect command imports this module,
    # and tooz pulls in futurist (and eventlet where it is installed).
    from qimgintrospect.glance import coordination
    return coordination.SoleWorker(worker_id)


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
