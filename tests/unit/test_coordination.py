"""The audit worker without a coordination service, and bad URLs.

The group over a real redis-server is in
tests/functional/test_audit_coordination.py.
"""

import os

import pytest

from qimgintrospect import exception
from qimgintrospect.glance import coordination


def test_without_a_url_the_worker_is_alone():
    with coordination.worker(None) as me:
        assert isinstance(me, coordination.SoleWorker)
        assert me.members() == {me.member_id}
        assert me.owns('any-image') is True
        assert me.refresh() is False
        assert me.connected is True
        assert me.run_id


def test_a_sole_workers_claims_are_exclusive_until_released():
    me = coordination.SoleWorker()

    claim = me.claim('img')
    assert claim is not None and claim.held()
    assert me.claim('img') is None
    assert me.claim('other') is not None

    claim.release()
    assert not claim.held()
    claim.release()  # twice is harmless
    with me.claim('img') as again:
        assert again.held()
    assert me.claim('img') is not None


def test_member_ids_name_the_host_and_process():
    one, two = coordination.new_member_id(), coordination.new_member_id()

    assert one != two
    assert '.%d.' % os.getpid() in one


@pytest.mark.parametrize('url', ['nosuchdriver://host:1',
                                 'not a url at all'])
def test_a_url_no_driver_serves_is_a_usage_error(url):
    member = coordination.worker(url)

    with pytest.raises(exception.UsageError) as err:
        member.start()

    assert err.value.code == 'coordination-url-invalid'


def test_messages_do_not_show_the_password():
    assert coordination._safe('redis://:s3cret@host:6379?db=1') == (
        'redis://:***@host:6379?db=1')
    assert coordination._safe('redis://user:s3cret@host:6379') == (
        'redis://user:***@host:6379')
    assert coordination._safe('redis://host:6379') == 'redis://host:6379'


def test_a_member_not_started_owns_and_claims_nothing():
    member = coordination.GroupMember('redis://127.0.0.1:1')

    assert member.owns('img') is False
    assert member.claim('img') is None
    assert member.refresh() is False
    member.stop()  # never started: nothing to leave
