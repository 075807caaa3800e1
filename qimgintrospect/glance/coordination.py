"""One audit worker's place among the others: tooz membership and claims.

Every worker walks the same catalogue, so the image ids are the work and
nobody has to hand it out. Workers share it the way Ceilometer's polling
agents and Gnocchi's metricd share theirs, with tooz:

* each worker is a member of one tooz group, kept alive by tooz's
  heartbeat thread; a member whose heartbeat lapses (a worker killed, a
  host lost) drops out of the group after the driver's
  ``membership_timeout``;
* a consistent hash ring over the members (tooz's partitioner) says which
  member an image belongs to (:meth:`GroupMember.owns`); when the members
  change, about 1/N of the ids move, and :meth:`GroupMember.refresh` says
  so, so that the walk looks again at what it left to others;
* the ring only shares the work: while members disagree about who is in
  the group (for a heartbeat or two) two of them may both think an image
  theirs. A claim (:meth:`GroupMember.claim`, a tooz lock) makes the work
  on an image exclusive; the heartbeat keeps a claim alive while its
  holder lives, and it expires ``lock_timeout`` seconds after a killed
  holder's last heartbeat: a stuck claim cannot block an image for good.

The group also gives the run its id: the first member of an empty group
makes one, and every member that joins while the group is not empty takes
the id of its oldest member (under a tooz lock, so that workers started
together agree), so the workers' records form one run.

Without a coordination URL, :class:`SoleWorker` has the same interface
and is the only member of its own group.
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

import os
import socket
import threading
import time
import urllib.parse
import uuid

from oslo_log import log as logging
import tooz
from tooz import coordination as tooz_coordination
from tooz import hashring
from tooz import partitioner

from qimgintrospect import exception

LOG = logging.getLogger(__name__)

#: The tooz group every audit worker joins.
GROUP = 'qimgintrospect-audit'
#: How long a joining worker waits for another that is joining.
JOIN_WAIT = 60
#: How long a leaving worker waits for the service to hear it.
STOP_WAIT = 10

# tooz's Redis driver retries and translates the errors of its locks and
# heartbeats, but its group calls (get_members, join, leave: futures run by
# its executor) raise the redis client's own errors since tooz commit
# a025b4d "Retry on redis connection errors" dropped their translator.
try:
    from redis import exceptions as redis_exceptions
except ImportError:  # another driver's client only
    redis_exceptions = None
if redis_exceptions is None:
    _UNREACHABLE = (tooz_coordination.ToozConnectionError,)
    _TROUBLE = (tooz.ToozError,)
else:
    _UNREACHABLE = (tooz_coordination.ToozConnectionError,
                    redis_exceptions.ConnectionError,
                    redis_exceptions.TimeoutError)
    _TROUBLE = (tooz.ToozError, redis_exceptions.RedisError)


def new_member_id():
    """``HOST.PID.RANDOM``: unique even when a worker restarts at once."""
    return '%s.%d.%s' % (socket.gethostname(), os.getpid(),
                         uuid.uuid4().hex[:8])


def worker(url=None, member_id=None, **kwargs):
    """The member this worker is: of the group at *url*, or alone.

    Use it as a context manager: it joins on entry and leaves on exit.
    *kwargs* go to :class:`GroupMember` when there is a *url*.
    """
    if url:
        return GroupMember(url, member_id=member_id, **kwargs)
    return SoleWorker(member_id=member_id)


class Claim(object):
    """The right to work on one image, until released or expired.

    Release it when the image's outcome is recorded: a claim released
    earlier lets another worker take the image before the record shows.
    """

    def __init__(self, image_id, lock=None, forget=None):
        self.image_id = image_id
        self._lock = lock
        self._forget = forget

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()

    def held(self):
        """Whether the claim is still this worker's.

        False once it expired (its holder was cut off from the service
        longer than the claim's expiry) and, maybe, another took it.
        """
        if self._lock is None:
            return self._forget is not None
        try:
            return self._lock.is_still_owner()
        except _TROUBLE as err:
            LOG.warning('Cannot tell whether the claim of image %s is still '
                        'held: %s', self.image_id, err)
            return False

    def release(self):
        """Give the image up; never raises (an unreleased claim expires)."""
        forget, self._forget = self._forget, None
        if forget is None:
            return
        forget()
        if self._lock is not None:
            try:
                self._lock.release()
            except _TROUBLE as err:
                LOG.warning('Could not release the claim of image %s (it '
                            'expires by itself): %s', self.image_id, err)


class _Worker(object):
    """A worker's membership as a context: started, and always stopped."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


class SoleWorker(_Worker):
    """A worker without a coordination service: every image is its own.

    Claims are still exclusive within the process, as they are across
    processes with :class:`GroupMember`.
    """

    def __init__(self, member_id=None):
        self.member_id = member_id or new_member_id()
        self.run_id = uuid.uuid4().hex
        self._claimed = set()
        self._mutex = threading.Lock()

    @property
    def connected(self):
        return True

    def start(self):
        pass

    def stop(self):
        pass

    def members(self):
        return frozenset([self.member_id])

    def owns(self, image_id):
        return True

    def owner(self, image_id):
        return self.member_id

    def claim(self, image_id):
        """A :class:`Claim` on *image_id*, or None if already claimed."""
        with self._mutex:
            if image_id in self._claimed:
                return None
            self._claimed.add(image_id)
        return Claim(image_id, forget=lambda: self._unclaim(image_id))

    def _unclaim(self, image_id):
        with self._mutex:
            self._claimed.discard(image_id)

    def refresh(self):
        return False


class GroupMember(_Worker):
    """This worker as a member of the audit group at a tooz *url*.

    :param url: a tooz backend URL, e.g. ``redis://HOST:6379`` (see tooz's
        drivers; Redis, etcd3gw and ZooKeeper have heartbeats, groups and
        expiring locks). The driver's options may be in the query string:
        for Redis, ``membership_timeout`` (seconds without a heartbeat
        before a member drops out), ``lock_timeout`` (a claim's expiry
        after its holder's last heartbeat, whole seconds) and ``timeout``
        (socket).
    :param member_id: this worker's id (default :func:`new_member_id`).
    :param group: the group's name; workers of one audit share it.
    :param membership_timeout: overrides the URL's ``membership_timeout``.
    :param claim_timeout: overrides the URL's ``lock_timeout``.
    :raises UsageError: ``coordination-url-invalid`` from :meth:`start`
        for a URL no installed tooz driver serves.
    :raises InspectionFailed: ``coordination-unavailable`` from
        :meth:`start` if the service does not answer.

    After :meth:`start`, the service may go away and come back: calls do
    not raise; :meth:`owns` answers from the last ring seen,
    :meth:`claim` returns None, and :meth:`refresh` joins the group again
    once the service answers (a Redis restarted without its data has
    forgotten the group).
    """

    def __init__(self, url, member_id=None, group=GROUP,
                 membership_timeout=None, claim_timeout=None):
        self.url = url
        self.member_id = member_id or new_member_id()
        self.group = group
        self.run_id = None
        self._options = {}
        if membership_timeout is not None:
            self._options['membership_timeout'] = membership_timeout
        if claim_timeout is not None:
            self._options['lock_timeout'] = claim_timeout
        self._coordinator = None
        self._partitioner = None
        self._view = frozenset()
        self._connected = False
        self._joined_at = None
        # owns() reads the ring while refresh() changes it.
        self._mutex = threading.RLock()
        self._claimed = set()

    @property
    def _group_id(self):
        return self.group.encode()

    @property
    def connected(self):
        """Whether the service answered the last call that needed it."""
        return self._connected

    def start(self):
        """Connect, start heartbeating, join the group and learn the run."""
        try:
            self._coordinator = tooz_coordination.get_coordinator(
                self.url, self.member_id.encode(), **self._options)
        except (RuntimeError, ImportError, ValueError,
                tooz.ToozError) as err:
            # stevedore raises NoMatches (a RuntimeError) for a scheme no
            # installed driver serves.
            raise exception.UsageError(
                exception.COORDINATION_URL_INVALID,
                'coordination URL %s: %s' % (_safe(self.url), err))
        try:
            self._coordinator.start(start_heart=True)
            self._join()
        except _TROUBLE as err:
            _stop_coordinator(self._coordinator)
            self._coordinator = None
            raise exception.InspectionFailed(
                exception.COORDINATION_UNAVAILABLE,
                'coordination service %s: %s' % (_safe(self.url), err))
        self._connected = True
        self.refresh()

    def stop(self, wait=None):
        """Leave the group and stop heartbeating; never raises.

        The other members see this one gone at their next refresh, without
        waiting for its heartbeat to lapse, and claims still held are
        released. If the service does not answer within *wait* seconds
        (default :data:`STOP_WAIT`; each call to an unreachable Redis takes
        a minute of tooz's and its client's retries), this worker goes
        without a word: the others drop it when its heartbeat lapses, and
        its claims expire, as if it had been killed.
        """
        with self._mutex:
            coordinator, self._coordinator = self._coordinator, None
            partitioner_, self._partitioner = self._partitioner, None
        if coordinator is None:
            return
        leaving = threading.Thread(
            target=_leave, args=(coordinator, partitioner_),
            name='audit-leave', daemon=True)
        leaving.start()
        leaving.join(STOP_WAIT if wait is None else wait)
        if leaving.is_alive():
            coordinator.heart.stop()
            LOG.warning('The coordination service did not answer: this '
                        'worker leaves the audit group without a word')

    def _capabilities(self):
        # 'weight' is what tooz's partitioner reads; the rest is ours.
        return {'weight': 1, 'run_id': self.run_id,
                'joined_at': self._joined_at,
                'hostname': socket.gethostname(), 'pid': os.getpid()}

    def _join(self):
        lock = self._coordinator.get_lock(
            ('%s-join' % self.group).encode())
        if not lock.acquire(blocking=JOIN_WAIT):
            raise tooz.ToozError('another worker held the join lock for '
                                 '%d s' % JOIN_WAIT)
        try:
            if self.run_id is None:
                self.run_id = self._current_run() or uuid.uuid4().hex
                self._joined_at = time.time()
            # What Coordinator.join_partitioned_group() does, with our
            # capabilities beside the weight the partitioner reads.
            try:
                self._coordinator.join_group_create(
                    self._group_id, capabilities=self._capabilities())
            except tooz_coordination.MemberAlreadyExist:
                self._coordinator.update_capabilities(
                    self._group_id, self._capabilities()).get()
            self._partitioner = partitioner.Partitioner(
                self._coordinator, self._group_id)
        finally:
            lock.release()

    def _current_run(self):
        """The run id of the group's oldest member, or None if empty."""
        try:
            members = self._coordinator.get_members(self._group_id).get()
        except tooz_coordination.GroupNotCreated:
            return None
        runs = []
        for member in members:
            try:
                caps = self._coordinator.get_member_capabilities(
                    self._group_id, member).get()
            except tooz_coordination.MemberNotJoined:
                continue  # left meanwhile
            if isinstance(caps, dict) and caps.get('run_id'):
                runs.append((caps.get('joined_at') or 0, caps['run_id']))
        return min(runs)[1] if runs else None

    def _rejoin(self):
        """Join again after the group forgot this member."""
        LOG.warning('This worker is no longer in the audit group (its '
                    'heartbeat lapsed, or the coordination service lost its '
                    'data): joining again')
        if self._partitioner is not None:
            self._partitioner.stop()
            self._partitioner = None
        self._join()

    def members(self):
        """The members in the ring as last seen (ids)."""
        with self._mutex:
            return self._view

    def owns(self, image_id):
        """Whether *image_id* is this worker's, by the ring as last seen."""
        with self._mutex:
            if self._partitioner is None:
                return False
            return self._partitioner.belongs_to_self(image_id)

    def owner(self, image_id):
        """The member *image_id* is for, by the ring as last seen, or None.

        None while this worker has no ring (never reached the service).
        """
        with self._mutex:
            if self._partitioner is None:
                return None
            try:
                found = self._partitioner.members_for_object(image_id)
            except hashring.UnknownNode:
                return None
        for member in found:
            return member.decode() if isinstance(member, bytes) else member
        return None

    def claim(self, image_id):
        """A :class:`Claim` on *image_id*, or None.

        None when another worker holds it, when this worker does already,
        or when the service does not answer. Does not wait for another
        worker; the call that finds the service gone takes as long as tooz
        and its client retry (about a minute with Redis), and later calls
        return None at once until :meth:`refresh` finds it back.
        """
        with self._mutex:
            if (image_id in self._claimed or self._coordinator is None
                    or not self._connected):
                return None
            self._claimed.add(image_id)
        lock = self._coordinator.get_lock(
            ('%s-claim-%s' % (self.group, image_id)).encode())
        try:
            acquired = lock.acquire(blocking=False)
            self._connected = True
        except _TROUBLE as err:
            LOG.warning('Cannot claim image %s: %s', image_id, err)
            self._connected = False
            acquired = False
        if not acquired:
            self._unclaim(image_id)
            return None
        return Claim(image_id, lock, lambda: self._unclaim(image_id))

    def _unclaim(self, image_id):
        with self._mutex:
            self._claimed.discard(image_id)

    def refresh(self):
        """Catch up with the group; True if its members changed.

        Runs tooz's watchers (which move the ring), joins again if the
        group no longer has this member, and rebuilds the ring if it
        disagrees with the group. A change means images may have moved to
        this worker: the walk looks again at those it left to others.
        Returns False, and keeps the last ring, while the service does not
        answer.
        """
        with self._mutex:
            if self._coordinator is None:
                return False
            try:
                members = self._catch_up()
            except _UNREACHABLE as err:
                if self._connected:
                    LOG.warning('Coordination service unreachable: %s', err)
                self._connected = False
                return False
            except _TROUBLE as err:
                # A member joined or left while the ring was read: the
                # next refresh reads it again.
                LOG.debug('Audit group changed while read: %s', err)
                return False
            self._connected = True
            view = frozenset(m.decode() for m in members)
            changed, self._view = view != self._view, view
            if changed:
                LOG.info('Audit group: %d member(s): %s', len(view),
                         ', '.join(sorted(view)))
            return changed

    def _catch_up(self):
        me = self.member_id.encode()
        try:
            self._coordinator.run_watchers()
        except hashring.UnknownNode:
            # The ring missed a member that has now left: rebuilt below.
            pass
        members = self._members()
        if me not in members:
            self._rejoin()
            members = self._members()
        if self._partitioner is None or set(
                self._partitioner.ring.nodes) != members:
            if self._partitioner is not None:
                self._partitioner.stop()
            self._partitioner = partitioner.Partitioner(
                self._coordinator, self._group_id)
            # The new ring is made of the members it read itself.
            members = set(self._partitioner.ring.nodes)
        return members

    def _members(self):
        try:
            return self._coordinator.get_members(self._group_id).get()
        except tooz_coordination.GroupNotCreated:
            return set()


def _leave(coordinator, partitioner_):
    if partitioner_ is not None:
        try:
            coordinator.leave_partitioned_group(partitioner_)
        except _TROUBLE as err:
            LOG.warning('Could not leave the audit group (the others drop '
                        'this worker when its heartbeat lapses): %s', err)
    _stop_coordinator(coordinator)


def _stop_coordinator(coordinator):
    try:
        coordinator.stop()
    except _TROUBLE as err:
        # The heartbeat thread is stopped before anything that can fail;
        # what may stay behind are the driver's daemon threads.
        LOG.warning('Coordination service: %s', err)


def _safe(url):
    """*url* without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(
        ':%s@' % parts.password, ':***@', 1)).geturl()
