"""Audit workers sharing image ids through tooz over a real redis-server.

Each member runs in a process of its own (tests/functional/
coordination_member.py), standing for one host; the tests kill them with
SIGKILL, stop and restart redis-server (which, without persistence, forgets
every group, heartbeat and lock) and check that every image id always has
exactly one owner among the live members, that a dead member's ids and
claims pass to the others, and that a member cut off from redis comes
back.

The heartbeat and claim timeouts are a few seconds so that the tests are
short; the waits below are bounded counts of polls, not timing
assertions.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from testkit import dbservers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
#: Seconds without a heartbeat before a member drops out, and a claim's
#: expiry after its holder's last heartbeat (tooz's Redis options).
TIMEOUT = 3
IMAGES = [str(uuid.uuid4()) for _ in range(400)]
_POLLS = 600
_POLL_INTERVAL = 0.1


@pytest.fixture(scope='module')
def redis_server():
    if not dbservers.RedisServer.available():
        pytest.skip('redis-server is not installed (bindep: test)')
    with dbservers.RedisServer() as server:
        yield server


@pytest.fixture
def own_redis():
    """A redis-server of the test's own, for tests that stop it."""
    if not dbservers.RedisServer.available():
        pytest.skip('redis-server is not installed (bindep: test)')
    with dbservers.RedisServer() as server:
        yield server


class Member(object):
    """A coordination_member process, asked questions over its stdin."""

    def __init__(self, server, group, name):
        self.name = name
        self._stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [REPO_ROOT, os.environ.get('PYTHONPATH')])))
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'tests.functional.coordination_member',
             server.url(membership_timeout=TIMEOUT, lock_timeout=TIMEOUT),
             group, name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True, cwd=REPO_ROOT, env=env)
        self.member_id = self.run_id = None

    def wait_joined(self):
        hello = self._read()
        self.member_id, self.run_id = hello['member'], hello['run_id']

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            self._stderr.seek(0)
            raise AssertionError('member %s ended: %s' % (
                self.name, self._stderr.read().decode(errors='replace')
                [-3000:]))
        return json.loads(line)

    def ask(self, op, **args):
        self.process.stdin.write(json.dumps(dict(args, op=op)) + '\n')
        self.process.stdin.flush()
        return self._read()

    def refresh(self):
        return self.ask('refresh')

    def owned(self, ids=IMAGES):
        return set(self.ask('owned', ids=list(ids))['owned'])

    def claim(self, image_id):
        return self.ask('claim', id=image_id)['claimed']

    def release(self, image_id):
        return self.ask('release', id=image_id)['released']

    def held(self, image_id):
        return self.ask('held', id=image_id)['held']

    def kill(self):
        """SIGKILL: no leave, no release; the heartbeat just stops."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def leave(self):
        answer = self.ask('leave')
        self.process.wait(timeout=60)
        return answer

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            stream.close()
        self._stderr.close()


@pytest.fixture
def members():
    """Start members with ``members(server, group, n)``; all are killed."""
    started = []

    def start(server, group, count):
        # Started together, as hosts would be (and the join lock is what
        # makes them agree on the run).
        new = [Member(server, group, 'w%d' % (len(started) + i))
               for i in range(count)]
        started.extend(new)
        for member in new:
            member.wait_joined()
        return new

    yield start
    for member in started:
        member.close()


def _new_group():
    return 'audit-test-%s' % uuid.uuid4().hex[:8]


def _until_all_see(members, count):
    """Refresh until each member sees *count* members.

    :returns: {name: last refresh answer, with ``changed`` true if any
        refresh along the way said the group had changed}.
    """
    views, changed = {}, set()
    for _ in range(_POLLS):
        views = {m.name: m.refresh() for m in members}
        changed.update(name for name, v in views.items() if v['changed'])
        if all(len(v['members']) == count and v['connected']
               for v in views.values()):
            for name, view in views.items():
                view['changed'] = name in changed
            return views
        time.sleep(_POLL_INTERVAL)
    raise AssertionError('members never all saw %d members: %s'
                         % (count, views))


def _assert_partition(members, ids=IMAGES):
    """Every id is owned by exactly one of *members*; return who owns what."""
    owned = {m.name: m.owned(ids) for m in members}
    for name, mine in owned.items():
        for other, theirs in owned.items():
            if other != name:
                assert not mine & theirs, (name, other, mine & theirs)
    assert set().union(*owned.values()) == set(ids)
    return owned


def test_every_image_belongs_to_exactly_one_member(redis_server, members):
    workers = members(redis_server, _new_group(), 3)

    views = _until_all_see(workers, 3)

    assert {frozenset(v['members']) for v in views.values()} == {
        frozenset(w.member_id for w in workers)}
    owned = _assert_partition(workers)
    # Each host takes a share (a consistent hash ring: not equal shares).
    assert all(owned.values()), {k: len(v) for k, v in owned.items()}
    # One run for the three workers: the first made it, the others took it.
    assert len({w.run_id for w in workers}) == 1


def test_a_killed_members_images_move_to_the_others(redis_server, members):
    workers = members(redis_server, _new_group(), 3)
    _until_all_see(workers, 3)
    before = _assert_partition(workers)
    victim, survivors = workers[0], workers[1:]

    victim.kill()
    # Its heartbeat lapses after TIMEOUT seconds; then the survivors'
    # refresh drops it from their ring.
    views = _until_all_see(survivors, 2)

    # Each survivor was told, so that its walk looks again.
    assert all(v['changed'] for v in views.values())
    after = _assert_partition(survivors)
    # The dead member's ids went to the survivors, and only those moved.
    for survivor in survivors:
        assert before[survivor.name] <= after[survivor.name]
    assert before[victim.name] <= set().union(*after.values())


def test_a_claim_is_exclusive_and_outlives_its_timeout_while_held(
        redis_server, members):
    first, second = members(redis_server, _new_group(), 2)
    image = IMAGES[0]

    assert first.claim(image) is True
    assert second.claim(image) is False
    assert first.claim(image) is False  # not twice, either
    # The holder's heartbeat keeps the claim past its expiry.
    time.sleep(2 * TIMEOUT)
    assert second.claim(image) is False

    assert first.release(image) is True
    assert second.claim(image) is True


def test_a_claim_held_by_a_killed_worker_expires(redis_server, members):
    group = _new_group()
    holder, waiter = members(redis_server, group, 2)
    image = IMAGES[1]
    assert holder.claim(image) is True
    assert waiter.claim(image) is False

    holder.kill()

    for _ in range(_POLLS):
        if waiter.claim(image):
            break
        time.sleep(_POLL_INTERVAL)
    else:
        raise AssertionError('the dead worker\'s claim never expired')
    # Taken over, and exclusive again.
    newcomer, = members(redis_server, group, 1)
    assert newcomer.claim(image) is False


def test_a_member_that_leaves_is_gone_at_once(redis_server, members):
    staying, leaving = members(redis_server, _new_group(), 2)
    _until_all_see([staying, leaving], 2)
    assert leaving.claim(IMAGES[2]) is True

    assert leaving.leave() == {'left': True}

    # No heartbeat to wait for: the very next refresh sees it gone, and
    # its claims were released.
    view = staying.refresh()
    assert view['changed'] is True
    assert view['members'] == [staying.member_id]
    assert staying.owned() == set(IMAGES)
    assert staying.claim(IMAGES[2]) is True


def test_run_id_is_shared_until_the_group_empties(redis_server, members):
    group = _new_group()
    first, second = members(redis_server, group, 2)
    assert first.run_id == second.run_id

    first.leave()
    third, = members(redis_server, group, 1)
    assert third.run_id == second.run_id  # the run goes on

    second.leave()
    third.leave()
    fourth, = members(redis_server, group, 1)
    assert fourth.run_id != first.run_id  # a new run


def test_members_that_lose_redis_recover(own_redis, members):
    workers = members(own_redis, _new_group(), 3)
    _until_all_see(workers, 3)
    before = _assert_partition(workers)
    run_ids = {w.run_id for w in workers}
    assert workers[0].claim(IMAGES[3]) is True

    own_redis.stop()
    for worker in workers:
        assert worker.refresh()['connected'] is False
        # No claim while the service is away...
        assert worker.claim(IMAGES[4]) is False
        # ...and the last ring still answers.
        assert worker.owned() == before[worker.name]

    # Restarted without its data: groups, heartbeats and claims are gone.
    own_redis.start()
    views = _until_all_see(workers, 3)

    assert {frozenset(v['members']) for v in views.values()} == {
        frozenset(w.member_id for w in workers)}
    _assert_partition(workers)
    assert workers[1].claim(IMAGES[4]) is True
    assert workers[2].claim(IMAGES[4]) is False
    assert {w.run_id for w in workers} == run_ids
    # The claim redis forgot: its holder can tell, and another may take
    # the image (the state store keeps the first outcome recorded).
    assert workers[0].held(IMAGES[3]) is False
    assert workers[1].claim(IMAGES[3]) is True
