"""Batches: what the audit gathers and how inspect_many runs them."""

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect.glance import audit
from qimgintrospect import opts
from qimgintrospect import workspace
from testkit import imagebuilder


def _image(n, owner):
    return {'id': 'image-%d' % n, 'owner': owner}


def test_batches_gather_one_owner_up_to_the_size():
    batches = audit._Batches(3)
    done = []
    for n, owner in enumerate(['a', 'b', 'a', 'a', 'b', None, 'a']):
        done += batches.add(_image(n, owner))
    assert [[i['id'] for i in b] for b in done] == [
        ['image-0', 'image-2', 'image-3'], ['image-5']]
    assert len(batches) == 3
    assert [[i['id'] for i in b] for b in batches.flush()] == [
        ['image-1', 'image-4'], ['image-6']]
    assert len(batches) == 0


def test_batch_size_follows_guest_detection(conf):
    conf.set_override('drives_per_appliance', 5, opts.GUEST_GROUP)
    assert api.batch_size(conf) == 1
    conf.set_override('enabled', True, opts.GUEST_GROUP)
    assert api.batch_size(conf) == 5


def test_one_worker_inspects_in_the_lent_slot(conf, tmp_path):
    # With one slot held and lent by this thread, inspect_many must use it:
    # a slot of its own would wait until workspace-busy.
    conf.set_override('max_workers', 1, opts.WORKSPACE_GROUP)
    conf.set_override('slot_wait_timeout', 1, opts.WORKSPACE_GROUP)
    paths = [imagebuilder.create(tmp_path, 'i%d.qcow2' % n, 'qcow2')
             for n in range(3)]
    ws = workspace.Workspace.from_conf(conf)
    with ws.slot() as slot, slot.lend():
        results = api.inspect_many(
            [api.ImageRequest(p, 'qcow2', 'owner') for p in paths], conf)
    assert [r.properties['disk_format'] for r in results] == ['qcow2'] * 3


def test_without_a_lent_slot_the_held_slot_is_busy(conf, tmp_path):
    conf.set_override('max_workers', 1, opts.WORKSPACE_GROUP)
    conf.set_override('slot_wait_timeout', 0, opts.WORKSPACE_GROUP)
    path = imagebuilder.create(tmp_path, 'i.qcow2', 'qcow2')
    ws = workspace.Workspace.from_conf(conf)
    with ws.slot():
        result, = api.inspect_many([api.ImageRequest(path, 'qcow2')], conf)
    assert isinstance(result, exception.InspectionFailed)
    assert result.code == 'workspace-busy'


@pytest.mark.parametrize('owners, groups', [
    # Even groups, so that parallel appliances finish together.
    (['a', 'a', 'a', 'a', 'a'], [[0, 1], [2, 3, 4]]),
    (['a', 'b', 'a', None], [[3], [0, 2], [1]]),
])
def test_groups_never_mix_owners(conf, owners, groups):
    conf.set_override('enabled', True, opts.GUEST_GROUP)
    conf.set_override('drives_per_appliance', 3, opts.GUEST_GROUP)
    requests = [api.ImageRequest('/x', None, owner) for owner in owners]
    assert api._groups(requests, conf) == groups
