"""inspect_many over real qemu-img: the slot a front end hands it."""

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect import opts
from qimgintrospect import workspace
from testkit import imagebuilder


def _qcow2_images(tmp_path, count):
    return [imagebuilder.create(tmp_path, 'i%d.qcow2' % n, 'qcow2')
            for n in range(count)]


def test_one_worker_inspects_in_the_given_slot(conf, tmp_path):
    # With the one slot held by the caller, inspect_many must use it: a
    # slot of its own would wait until workspace-busy.
    conf.set_override('max_workers', 1, opts.WORKSPACE_GROUP)
    conf.set_override('slot_wait_timeout', 0, opts.WORKSPACE_GROUP)
    paths = _qcow2_images(tmp_path, 3)
    with workspace.Workspace.from_conf(conf).slot() as slot:
        results = api.inspect_many(
            [api.ImageRequest(p, 'qcow2', 'owner') for p in paths], conf,
            slot=slot)
    assert [r.properties['disk_format'] for r in results] == ['qcow2'] * 3


def test_a_batch_of_two_owners_takes_no_other_slot(conf, tmp_path):
    # Two owners make two batches, which max_workers = 2 could run at
    # once; in the caller's slot they run one after the other. Every other
    # slot is held here, so taking one would end in workspace-busy.
    conf.set_override('max_workers', 2, opts.WORKSPACE_GROUP)
    conf.set_override('slot_wait_timeout', 0, opts.WORKSPACE_GROUP)
    conf.set_override('enabled', True, opts.GUEST_GROUP)
    conf.set_override('drives_per_appliance', 2, opts.GUEST_GROUP)
    paths = _qcow2_images(tmp_path, 4)
    requests = [api.ImageRequest(p, 'qcow2', owner)
                for p, owner in zip(paths, ['a', 'b', 'a', 'b'])]
    ws = workspace.Workspace.from_conf(conf)
    with ws.slot() as slot, ws.slot():
        results = api.inspect_many(requests, conf, slot=slot,
                                   run_guest=False)
    assert [getattr(r, 'code', None) for r in results] == [None] * 4
    assert [r.properties['disk_format'] for r in results] == ['qcow2'] * 4


@pytest.mark.parametrize('disk_format, code', [
    # A qcow2 said to be one waits for a slot that never frees.
    ('qcow2', exception.WORKSPACE_BUSY),
    # A refused image never waits: the header is checked before a slot
    # is taken.
    ('vmdk', exception.FORMAT_MISMATCH),
])
def test_a_batch_without_the_held_slot_waits_unless_refused(conf, tmp_path,
                                                            disk_format,
                                                            code):
    conf.set_override('max_workers', 1, opts.WORKSPACE_GROUP)
    conf.set_override('slot_wait_timeout', 0, opts.WORKSPACE_GROUP)
    path, = _qcow2_images(tmp_path, 1)
    with workspace.Workspace.from_conf(conf).slot():
        result, = api.inspect_many([api.ImageRequest(path, disk_format)],
                                   conf)
    assert isinstance(result, exception.IntrospectionError)
    assert result.code == code
