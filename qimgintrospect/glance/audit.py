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

"""The audit of a Glance catalogue, and what ``glance IMAGE_ID`` shares.

:class:`Audit` walks the catalogue page by page, inspects up to
``max_workers`` batches at once (up to :func:`~qimgintrospect.api.batch_size`
images of one owner, downloaded into one workspace slot and inspected
together by :func:`~qimgintrospect.glance.client.inspect_images`: one
guest appliance per batch), compares what each
image says with what Glance has (:mod:`~qimgintrospect.glance.properties`)
and, when asked, writes the difference back.

:class:`StateStore` makes the audit resumable: what an image said is
committed, per image id and checksum, as soon as it is known. A later run
downloads only images that are new or whose data changed (the report is
still complete: unchanged images are compared from the record), and a run
that was interrupted continues where it stopped.
"""

import collections
import contextlib
import datetime
import hashlib
import json
import os
import queue
import sqlite3
import statistics
import threading

from concurrent import futures
from oslo_log import log as logging
import pbr.version

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect.glance import client as glance_client
from qimgintrospect.glance import properties
from qimgintrospect import normalise
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

#: One line of a report. ``difference`` is a kind from
#: :mod:`~qimgintrospect.glance.properties`, or, for an image that was not
#: compared, ``refused``, ``failed`` or ``not-inspected`` with the reason
#: in ``note``.
Row = collections.namedtuple('Row', [
    'image_id', 'owner', 'property', 'glance', 'image', 'difference',
    'action', 'note'])
COLUMNS = Row._fields

#: Seconds an interrupted run waits for its downloads to stop.
INTERRUPT_GRACE = 5

REFUSED = 'refused'
FAILED = 'failed'
NOT_INSPECTED = 'not-inspected'

#: Action column: what the policy chose, as done or as it would be done.
_ACTION_WORDS = {
    # action: (without --apply, with --apply)
    properties.SET: ('would set', 'set'),
    properties.REMOVE: ('would remove', 'removed'),
    properties.KEEP: ('kept', 'kept'),
    properties.READ_ONLY: ('read-only', 'read-only'),
    properties.NOTHING: ('', ''),
}

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
])

_CATEGORIES = {cls.exit_code: cls for cls in (
    exception.UsageError, exception.ImageRefused, exception.InspectionFailed)}


class Policy(collections.namedtuple('Policy', [
        'apply', 'overwrite', 'remove_stale'])):
    """What to do about differences: write them or not, and which."""

    __slots__ = ()

    def __new__(cls, apply=False, overwrite=True, remove_stale=False):
        return super().__new__(cls, apply, overwrite, remove_stale)


def checksum_of(image):
    """The key of the image's data: its multihash, else its MD5, or None."""
    return image.get('os_hash_value') or image.get('checksum')


def image_rows(client, image, outcome, policy, include_same=False):
    """Compare one image's outcome with Glance and apply the policy.

    :param outcome: a :class:`~qimgintrospect.normalise.Result` or the
        :class:`~qimgintrospect.exception.IntrospectionError` the image
        raised.
    :returns: ``(rows, changed)``: the report lines for this image and
        whether Glance was changed.
    """
    image_id, owner = image['id'], image.get('owner')
    if isinstance(outcome, exception.IntrospectionError):
        kind = {exception.EXIT_REFUSED: REFUSED,
                exception.EXIT_FAILED: FAILED}.get(outcome.exit_code,
                                                   NOT_INSPECTED)
        note = '%s: %s' % (outcome.code, outcome.message)
        return [Row(image_id, owner, '', None, None, kind, '', note)], False

    differences = properties.compare(
        outcome.properties, image, overwrite=policy.overwrite,
        remove_stale=policy.remove_stale)
    to_set, to_remove = properties.changes(differences)
    note = ''
    changed = False
    if policy.apply and (to_set or to_remove):
        try:
            glance_client.update_image(client, image_id, to_set, to_remove)
            changed = True
        except exception.IntrospectionError as err:
            note = '%s: %s' % (err.code, err.message)
    rows = []
    for d in differences:
        if d.kind == properties.SAME and not include_same:
            continue
        words = _ACTION_WORDS[d.action]
        rows.append(Row(image_id, owner, d.name, d.glance, d.image, d.kind,
                        words[1] if changed else words[0],
                        note if d.action in (properties.SET,
                                             properties.REMOVE) else ''))
    return rows, changed


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


class Counts(object):
    """How many images a run saw, and what became of them."""

    FIELDS = ('listed', 'inspected', 'unchanged', 'refused', 'failed',
              'not_inspected', 'deferred', 'differing', 'changed')

    def __init__(self):
        for field in self.FIELDS:
            setattr(self, field, 0)

    def to_dict(self):
        return {field: getattr(self, field) for field in self.FIELDS}


class Report(object):
    """The rows of a run, its counts and the sizes of the images listed."""

    def __init__(self):
        self.rows = []
        self.counts = Counts()
        self.sizes = []

    def summary(self, conf):
        """Counts, the image-size distribution and the workspace it needs."""
        return {'images': self.counts.to_dict(),
                'sizes': size_distribution(self.sizes),
                'workspace': workspace_needs(self.sizes, conf)}


#: Buckets of the size distribution: (upper bound in bytes, label).
SIZE_BUCKETS = (
    (100 * 1024 ** 2, '< 100 MiB'),
    (1024 ** 3, '100 MiB - 1 GiB'),
    (10 * 1024 ** 3, '1 - 10 GiB'),
    (100 * 1024 ** 3, '10 - 100 GiB'),
    (None, '>= 100 GiB'),
)


def size_distribution(sizes):
    """Count, total, min, median, mean, 90th percentile, max and buckets.

    Every figure is in bytes; all are 0 for an empty catalogue.
    """
    ordered = sorted(sizes)
    buckets = collections.OrderedDict((label, 0) for _, label in SIZE_BUCKETS)
    for size in ordered:
        for bound, label in SIZE_BUCKETS:
            if bound is None or size < bound:
                buckets[label] += 1
                break
    if not ordered:
        figures = dict.fromkeys(('min', 'median', 'mean', 'p90', 'max'), 0)
    else:
        figures = {
            'min': ordered[0],
            'median': int(statistics.median(ordered)),
            'mean': int(statistics.fmean(ordered)),
            'p90': ordered[min(len(ordered) - 1,
                               (len(ordered) * 9 + 9) // 10 - 1)],
            'max': ordered[-1],
        }
    return dict(figures, count=len(ordered), total=sum(ordered),
                buckets=[{'range': label, 'count': count}
                         for label, count in buckets.items()])


def workspace_needs(sizes, conf):
    """The workspace quota ``max_workers`` needs for this catalogue.

    Each image being inspected holds its download and the core's private
    copy of it, both counted against the quota: twice its size.

    :returns: ``max_workers``, the configured ``quota_bytes``,
        ``needed_bytes`` (the max_workers largest images at once, so any
        mix of images fits), ``typical_bytes`` (max_workers images of the
        mean size) and ``enough`` (whether the quota covers needed_bytes).
    """
    group = conf[opts.WORKSPACE_GROUP]
    workers = group.max_workers
    largest = sorted(sizes)[-workers:]
    needed = 2 * sum(largest)
    mean = statistics.fmean(sizes) if sizes else 0
    quota = group.quota_mb * 1024 ** 2
    return {'max_workers': workers, 'quota_bytes': quota,
            'needed_bytes': needed, 'typical_bytes': int(2 * workers * mean),
            'enough': needed <= quota}


class Audit(object):
    """One run over a catalogue.

    :param client: a python-glanceclient v2 client (admin credentials see
        every tenant's images).
    :param conf: the oslo.config options (workspace, audit).
    :param state: a :class:`StateStore`.
    :param policy: a :class:`Policy`.
    :param max_images: inspect at most this many images in this run (the
        rest are counted as deferred, for the next run); None: no limit.
    :param progress: called in the calling thread as
        ``progress(image, outcome, unchanged)`` after each image.
    """

    def __init__(self, client, conf, state, policy, max_images=None,
                 progress=None):
        self.client = client
        self.conf = conf
        self.state = state
        self.policy = policy
        self.max_images = max_images
        self.progress = progress
        self.workers = conf[opts.WORKSPACE_GROUP].max_workers
        # Images of one owner are gathered into batches that share a
        # workspace slot and, with guest detection on, one appliance.
        self.batch_size = api.batch_size(conf)

    def run(self, filters):
        """Walk the images that match *filters* and return a :class:`Report`.

        If the run is interrupted (an exception, KeyboardInterrupt, the
        SystemExit of a signal), the downloads under way stop at their next
        chunk, their slots are emptied, and what was recorded stays.
        """
        report = Report()
        stop = threading.Event()
        pending = {}
        gathering = _Batches(self.batch_size)
        pool = _DaemonPool(self.workers)

        def submit(batch):
            pending[pool.submit(self._inspect, batch, stop)] = batch

        try:
            listing = glance_client.list_images(
                self.client, filters,
                self.conf[opts.AUDIT_GROUP].page_size)
            for image in listing:
                if self._needs_inspection(image, report, pending, gathering):
                    for batch in gathering.add(image):
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
                                                self.conf, stop)
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
                code = getattr(outcome, 'code', None)
                if code not in TRANSIENT and checksum_of(image):
                    self.state.put(image['id'], checksum_of(image), outcome)
                self._finish(image, outcome, report, unchanged=False)

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
            rows, changed = image_rows(self.client, image, outcome,
                                       self.policy)
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


class _Batches(object):
    """Gathers images into batches of up to *size* images of one owner.

    Images without an owner are batches of their own: they share nothing
    with anybody.
    """

    def __init__(self, size):
        self.size = size
        self._by_owner = collections.OrderedDict()

    def __len__(self):
        return sum(len(images) for images in self._by_owner.values())

    def add(self, image):
        """Gather *image*; return the batches it completed (0 or 1)."""
        owner = image.get('owner')
        if owner is None or self.size <= 1:
            return [[image]]
        images = self._by_owner.setdefault(owner, [])
        images.append(image)
        if len(images) < self.size:
            return []
        del self._by_owner[owner]
        return [images]

    def flush(self):
        """Return the batches still gathering, and forget them."""
        batches = list(self._by_owner.values())
        self._by_owner.clear()
        return batches


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


#: Option groups whose values change what an image is found to say.
_FINDING_GROUPS = (opts.QEMU_IMG_GROUP, opts.FORMATS_GROUP, opts.GUEST_GROUP)


def fingerprint(conf):
    """This qimgintrospect's version and the options that shape findings.

    Records made under another fingerprint do not count: after an upgrade,
    or once an operator allows a format or turns on guest detection, every
    image is looked at again.
    """
    values = {group: {opt.dest: conf[group][opt.dest] for opt in group_opts}
              for group, group_opts in opts.list_opts()
              if group in _FINDING_GROUPS}
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
