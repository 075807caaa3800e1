"""How workers share a run: who takes which image, and the run's report.

Pure logic over a real SQLite state store; the group is a fixed ring
(:class:`Ring`) standing for what a tooz member would say. Real workers
over redis and PostgreSQL are in tests/functional/test_audit_workers.py.
"""

import pytest

from qimgintrospect import exception
from qimgintrospect.glance import report as report_mod
from qimgintrospect.glance import state
from qimgintrospect.glance import workers
from qimgintrospect import normalise
from testkit import config

RESULT = normalise.Result({'disk_format': 'qcow2'}, {}, [])
INCOMPLETE = normalise.Result({'disk_format': 'qcow2'},
                              {'guest_stage': 'unavailable'}, [])


class Ring(object):
    """A group whose ring is a dict: key -> member; no service behind."""

    def __init__(self, member_id, owners, connected=True):
        self.member_id = member_id
        self.owners = owners
        self.connected = connected
        self.changed = False
        self.asked = []

    def owns(self, key):
        return self.owner(key) == self.member_id

    def owner(self, key):
        self.asked.append(key)
        return self.owners.get(key)

    def refresh(self):
        changed, self.changed = self.changed, False
        return changed


@pytest.fixture
def stores(tmp_path):
    opened = []

    def open_store(worker, run_id='run-1'):
        store = state.StateStore(str(tmp_path / 'state.sqlite'), '1.0',
                                 worker=worker, run_id=run_id)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def _image(image_id, owner='p1'):
    return {'id': image_id, 'owner': owner}


def _row(image_id, prop='vmware_disktype', action='would set'):
    return report_mod.Row(image_id, 'p1', prop, None, 'sparse', 'missing',
                          action, '')


def test_the_run_report_is_the_journal_and_what_each_worker_did_alone(
        stores):
    me, other = stores('w1'), stores('w2')
    me.enter_run()
    other.enter_run()
    other.journal('b', RESULT, rows=[_row('b')])
    me.journal('c', exception.InspectionFailed(
        exception.GLANCE_UNREACHABLE, 'HTTP 500'))
    other.journal('e', INCOMPLETE)
    other.journal('z', RESULT, unchanged=True, changed=True,
                  rows=[_row('z', action='set')])
    report = workers.RunReport()
    ledger = workers.Ledger('w1')
    for image_id in 'abcde':
        ledger.listed(_image(image_id))
        report.counts.listed += 1
    ledger.finished_here(_image('a'), RESULT, [_row('a')], False, True)
    ledger.finished_here(_image('d'), exception.UsageError(
        exception.IMAGE_HAS_NO_DATA, 'queued'), [], False, False)
    me.leave_run()

    ledger.whole_run(report, me)

    counts = report.counts.to_dict()
    assert counts == dict(
        counts, listed=5, inspected=3, unchanged=2, failed=1,
        not_inspected=1, incomplete=1, differing=3, changed=1, deferred=0)
    # In the order listed, then what others did beyond this listing.
    assert [(r.image_id, w) for r, w in zip(
        report.rows, report.row_workers) if r.property] == [
            ('a', 'w1'), ('b', 'w2'), ('z', 'w2')]
    assert report.run_id == 'run-1'
    assert {f['worker']: f['inspected'] for f in report.workers} == {
        'w1': 1, 'w2': 2}
    summary = report.summary(config.make_conf('/nonexistent'))
    assert summary['run']['id'] == 'run-1'


def test_an_image_nobody_settled_was_left_for_the_next_run(stores):
    me = stores('w1')
    report = workers.RunReport()
    ledger = workers.Ledger('w1')
    ledger.listed(_image('a'))

    ledger.whole_run(report, me)

    assert report.counts.deferred == 1
    assert report.rows == []


def _share(store, ring, batch_size=1):
    return workers.Share(ring, store, refresh_interval=3600, page_size=100,
                         batch_size=batch_size)


def test_images_wait_for_their_owner_until_it_has_walked(stores):
    me, other = stores('w1'), stores('w2')
    me.enter_run()
    other.enter_run()
    ring = Ring('w1', {'a': 'w2', 'b': 'w2', 'c': 'w1', 'd': 'gone'})
    share = _share(me, ring)
    for image_id in 'abcd':
        share.listed(_image(image_id))
        share.keep(_image(image_id))
    assert len(share) == 4

    # Mine, and one whose owner is no worker of this run: taken now; the
    # others wait while w2 walks.
    assert sorted(i['id'] for i in share.takeable()) == ['c', 'd']
    assert sorted(i['id'] for i in share.takeable()) == []  # not yet due

    other.journal('a', RESULT)
    other.mark_walked()
    share._next_poll = 0
    # a is done; b, which w2 walked past, is this worker's to try.
    assert [i['id'] for i in share.takeable()] == ['b']
    assert len(share) == 0


def test_a_change_of_members_gives_images_to_try_again(stores):
    ring = Ring('w1', {'a': 'w2', 'b': 'w1'})
    share = _share(stores('w1'), ring)
    for image_id in 'ab':
        share.keep(_image(image_id))

    # b is mine but its claim failed: tried again at each refresh.
    assert [i['id'] for i in share.catch_up()] == ['b']
    assert share.catch_up() == []  # not due yet

    ring.owners['a'] = 'w1'
    ring.changed = True
    share._next_refresh = 0
    assert [i['id'] for i in share.catch_up()] == ['a']


def test_a_page_end_looks_at_the_group(stores):
    ring = Ring('w1', {})
    share = workers.Share(ring, stores('w1'), refresh_interval=3600,
                          page_size=2)
    share.catch_up()  # the first image looks at the group
    share.listed(_image('a'))
    assert share._next_refresh > 0
    share.listed(_image('b'))
    assert share._next_refresh == 0


def test_an_owners_images_go_to_one_worker_a_batch_at_a_time(stores):
    ring = Ring('w1', {})
    share = _share(stores('w1'), ring, batch_size=2)
    images = [_image('i%d' % n, 'p1') for n in range(5)] + [
        _image('x', 'p2'), _image('y', None)]
    for image in images:
        share.listed(image)
        share.owns(image)

    assert ring.asked == ['p1/0', 'p1/0', 'p1/1', 'p1/1', 'p1/2', 'p2/0',
                          'y']


def test_a_coordination_service_away_too_long_ends_the_wait(stores,
                                                            monkeypatch):
    monkeypatch.setattr(workers, 'COORDINATION_PATIENCE', 0)
    stores('w2').enter_run()  # walking: a waits for it
    ring = Ring('w1', {'a': 'w2'}, connected=False)
    share = _share(stores('w1'), ring)
    share.keep(_image('a'))

    share.takeable()  # the outage begins
    share._next_poll = 0
    with pytest.raises(exception.InspectionFailed) as err:
        share.takeable()
    assert err.value.code == 'coordination-unavailable'
