"""How the audit's workers share one run, and the one report it makes.

Every worker walks the whole catalogue (:mod:`~qimgintrospect.glance.
audit`). An image that needs nothing but a comparison with its record is
compared by every worker on its own: that costs a database read, and
every report then has it. An image to download, or whose record is to be
written to Glance, is acted on by one worker: the one the hash ring of the
group gives it to (:mod:`~qimgintrospect.glance.coordination`), under a
claim. The others keep it in their :class:`Share` until the run's journal
(:mod:`~qimgintrospect.glance.state`) has it:

* while it walks, a worker looks at the group after each page and every
  ``refresh_interval`` seconds; when the members changed (one joined,
  died or left), the images that moved to it are taken up, and its own
  images whose claim could not be had are tried again;
* once it has walked the catalogue, it waits, looking at the journal every
  :data:`WAIT_POLL` seconds, until every image it keeps is journalled. It
  takes an image itself when the ring gives it to this worker (its owner
  died: its claims expire ``lock_timeout`` seconds after its last
  heartbeat) or when the image's owner has walked the catalogue too (it
  did not list the image, or left it for the next run under
  ``--max-images``): a claim still decides who does it.

:class:`Ledger` remembers what this worker listed and what it finished
without the journal; :meth:`Ledger.whole_run` turns that and the journal
into the run's report, the same whichever worker makes it.
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
import time

from oslo_log import log as logging

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect.glance import report as report_mod
from qimgintrospect import normalise

LOG = logging.getLogger(__name__)

#: Seconds between two looks at the journal once this worker has walked
#: the catalogue and waits for the others.
WAIT_POLL = 2
#: How long a worker waits without the coordination service before it
#: gives up (coordination-unavailable): the images it keeps cannot be
#: claimed, nor can it tell who else is there.
COORDINATION_PATIENCE = 600
#: Above this many images kept, the whole run's journal is read at once
#: rather than asked about each image.
_WHOLE_JOURNAL_AT = 2000

#: What a worker did about one image, or what the journal says.
Entry = collections.namedtuple('Entry', [
    'image_id', 'worker', 'outcome', 'rows', 'changed', 'unchanged'])


class Share(object):
    """The images of the run this worker needs done and is not doing.

    :param member: this worker in its group
        (:class:`~qimgintrospect.glance.coordination.GroupMember` or
        ``SoleWorker``).
    :param state: the run's :class:`~qimgintrospect.glance.state.
        StateStore`; its ``worker`` is the member's id.
    :param refresh_interval: seconds between two looks at the group while
        walking.
    :param page_size: images per page of the catalogue: the group is
        looked at after each.
    :param batch_size: images of one owner inspected together
        (:func:`~qimgintrospect.api.batch_size`).

    ``len(share)`` is how many images it keeps.

    The ring places each image by a key (:meth:`owns`): its id, or, when
    images of one owner are inspected together (guest detection on: one
    appliance per batch), its owner and the rank of its batch among that
    owner's images as listed. Every worker lists the catalogue in the same
    order, so an owner's images go to one worker a batch at a time, and
    the appliance launches (the slow step) are not multiplied by the
    number of workers.
    """

    def __init__(self, member, state, refresh_interval, page_size,
                 batch_size=1):
        self.member = member
        self.state = state
        self.refresh_interval = refresh_interval
        self.page_size = page_size
        self.batch_size = batch_size
        self._keys = {}
        self._per_owner = collections.Counter()
        # Another member's, by the ring as last seen.
        self._others = collections.OrderedDict()
        # This worker's, but their claim could not be had yet.
        self._mine = collections.OrderedDict()
        self._listed = 0
        # The first image listed looks at the group: it may have changed
        # since this worker joined.
        self._next_refresh = 0
        self._next_poll = 0
        self._lost_since = None

    def __len__(self):
        return len(self._others) + len(self._mine)

    def keep(self, image):
        """Keep *image* until the journal has it or it can be taken."""
        if self.owns(image):
            self._mine[image['id']] = image
        else:
            self._others[image['id']] = image

    def listed(self, image):
        """Place an image listed; after a page, look at the group."""
        self._listed += 1
        if self._listed % self.page_size == 0:
            self._next_refresh = 0
        owner = image.get('owner')
        if self.batch_size > 1 and owner:
            rank = self._per_owner[owner]
            self._per_owner[owner] += 1
            self._keys[image['id']] = '%s/%d' % (owner,
                                                 rank // self.batch_size)

    def _key(self, image_id):
        return self._keys.get(image_id, image_id)

    def owns(self, image):
        """Whether the ring, as last seen, gives *image* to this worker."""
        return self.member.owns(self._key(image['id']))

    def catch_up(self):
        """While walking: the images to try to take now (given up here).

        When a refresh is due: those that moved to this worker if the
        group changed, and this worker's images whose claim failed.
        """
        now = time.monotonic()
        if now < self._next_refresh:
            return []
        self._next_refresh = now + self.refresh_interval
        if self._refresh():
            self._repartition()
        due = list(self._mine.values())
        self._mine.clear()
        return due

    def takeable(self):
        """Once walked: the images to try to take now (given up here).

        At most every :data:`WAIT_POLL` seconds: the images the journal
        now has are forgotten; of the others, this worker takes those the
        ring gives it and those whose owner is not walking the catalogue
        any more (see :meth:`StateStore.walking_workers`).

        :raises InspectionFailed: coordination-unavailable once the
            service has been unreachable :data:`COORDINATION_PATIENCE`
            seconds; state-database-unavailable.
        """
        if not self:
            return []
        now = time.monotonic()
        if now < self._next_poll:
            return []
        self._next_poll = now + WAIT_POLL
        self._forget(self._journalled())
        if self._refresh():
            self._repartition()
        walking = self.state.walking_workers()
        me = self.member.member_id
        due = []
        for kept in (self._mine, self._others):
            for image_id, image in list(kept.items()):
                owner = self.member.owner(self._key(image_id))
                if owner is not None and (owner == me
                                          or owner not in walking):
                    due.append(kept.pop(image_id))
        return due

    def pause(self):
        """Wait for the others a little (nothing of this worker's runs)."""
        time.sleep(max(0, min(WAIT_POLL, self._next_poll - time.monotonic())))

    def _journalled(self):
        ids = list(self._others) + list(self._mine)
        if len(ids) > _WHOLE_JOURNAL_AT:
            return self.state.journalled()
        return self.state.journalled(image_ids=ids)

    def _forget(self, image_ids):
        for image_id in image_ids:
            self._others.pop(image_id, None)
            self._mine.pop(image_id, None)

    def _refresh(self):
        changed = self.member.refresh()
        if self.member.connected:
            self._lost_since = None
        elif self._lost_since is None:
            self._lost_since = time.monotonic()
        elif time.monotonic() - self._lost_since > COORDINATION_PATIENCE:
            raise exception.InspectionFailed(
                exception.COORDINATION_UNAVAILABLE,
                'the coordination service has not answered for %d s; %d '
                'image(s) of this run are left for the next run'
                % (COORDINATION_PATIENCE, len(self)))
        return changed

    def _repartition(self):
        everything = list(self._others.values()) + list(self._mine.values())
        self._others.clear()
        self._mine.clear()
        for image in everything:
            self.keep(image)
        LOG.info('Audit group changed: %d image(s) are now this worker\'s '
                 'to take, %d wait for the others', len(self._mine),
                 len(self._others))


class RunReport(report_mod.Report):
    """A :class:`~qimgintrospect.glance.report.Report` of a whole run.

    Beside the rows, counts and sizes: the run's id, what each worker did
    (:meth:`StateStore.worker_figures`, with how many images each one
    journalled) and, for each row, the worker that made it.
    """

    def __init__(self):
        super().__init__()
        self.run_id = None
        #: One dict per worker of the run.
        self.workers = []
        #: The worker that made each row of :attr:`rows`.
        self.row_workers = []

    def summary(self, conf):
        """As :meth:`Report.summary`, with ``run``: its id and workers."""
        summary = super().summary(conf)
        summary['run'] = {'id': self.run_id, 'workers': self.workers}
        return summary


def tally(report, entry):
    """Count one image's *entry* in *report* and add its rows.

    ``inspected`` and ``incomplete`` are not counted here: see
    :meth:`Ledger.whole_run`.
    """
    counts, outcome = report.counts, entry.outcome
    if entry.unchanged:
        counts.unchanged += 1
    if isinstance(outcome, exception.UsageError):
        counts.not_inspected += 1
    elif isinstance(outcome, exception.ImageRefused):
        counts.refused += 1
    elif isinstance(outcome, exception.InspectionFailed):
        counts.failed += 1
    elif any(row.action for row in entry.rows):
        counts.differing += 1
    counts.changed += bool(entry.changed)
    report.rows.extend(entry.rows)
    if isinstance(report, RunReport):
        report.row_workers.extend([entry.worker] * len(entry.rows))


class Ledger(object):
    """What this worker listed, and what it finished without the journal.

    :param worker: this worker's id, for the rows it makes alone.
    """

    def __init__(self, worker):
        self.worker = worker
        # image id -> Entry, or None: listed, the journal should have it
        # (or it is left for the next run). In the order listed.
        self._listed = collections.OrderedDict()

    def listed(self, image):
        self._listed.setdefault(image['id'], None)

    def finished_here(self, image, outcome, rows, changed, unchanged):
        """This worker settled *image* itself, not in the journal."""
        self._listed[image['id']] = Entry(image['id'], self.worker, outcome,
                                          list(rows), changed, unchanged)

    def whole_run(self, report, state):
        """Make *report* the run's: every worker's rows and counts.

        For each image listed here, in the order listed: the journal's
        entry if any worker journalled it, else what this worker found on
        its own (not inspectable; compared from its record); else it was
        left for the next run (deferred). Images the journal has that this
        worker did not list (the catalogue changed between two workers'
        listings) are added at the end. ``listed`` and the sizes stay this
        worker's; ``reads`` (how the images were read) are every
        worker's, from the outcomes journalled.
        """
        journal = collections.OrderedDict(
            (e.image_id, e) for e in state.run_journal())
        listed = report.counts.listed
        report.counts = report_mod.Counts()
        report.counts.listed = listed
        report.rows = []
        report.row_workers = []
        report.reads = report_mod.Reads()
        for image_id, mine in self._listed.items():
            if image_id in journal:
                _tally_journalled(report, journal.pop(image_id))
            elif mine is not None:
                tally(report, mine)
            else:
                report.counts.deferred += 1
        for entry in journal.values():
            _tally_journalled(report, entry)
        report.run_id = state.run_id
        report.workers = state.worker_figures()
        return report


def _tally_journalled(report, line):
    """Count a journal line (:class:`StateStore.JournalEntry`)."""
    rows = [report_mod.Row(**row) for row in line.rows]
    outcome = line.outcome
    if outcome is None:
        # An error code this version does not know: say so, not nothing.
        outcome = exception.InspectionFailed(
            exception.INTERNAL_ERROR, 'journalled by a worker of another '
            'version: its outcome cannot be read')
    if not line.unchanged:
        report.counts.inspected += 1
        report.reads.add({'id': line.image_id}, outcome)
        if isinstance(outcome, normalise.Result) and api.incomplete(outcome):
            report.counts.incomplete += 1
    tally(report, Entry(line.image_id, line.worker, outcome, rows,
                        line.changed, line.unchanged))
