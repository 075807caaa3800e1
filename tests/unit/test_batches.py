"""Batches: the one rule by which images of one owner are put together."""

import pytest

from qimgintrospect import api
from qimgintrospect import opts


def _image(n, owner):
    return {'id': 'image-%d' % n, 'owner': owner}


def test_batches_gather_one_owner_up_to_the_size():
    batches = api.Batches(3)
    done = []
    for n, owner in enumerate(['a', 'b', 'a', 'a', 'b', None, 'a']):
        done += batches.add(_image(n, owner), owner)
    assert [[i['id'] for i in b] for b in done] == [
        ['image-0', 'image-2', 'image-3'], ['image-5']]
    assert len(batches) == 3
    assert [[i['id'] for i in b] for b in batches.flush()] == [
        ['image-1', 'image-4'], ['image-6']]
    assert len(batches) == 0


@pytest.mark.parametrize('owners, size', [
    (['a'] * 8, 4),
    (['a'] * 9, 4),
    (['a', 'b'] * 5, 3),
    (['a', None, 'b', None, 'a'], 8),
    (['x'] * 3 + ['y'] * 7, 25),
    (['a'] * 5, 1),
])
def test_batches_never_mix_owners_and_stay_within_the_size(owners, size):
    batches = api.Batches(size)
    groups = []
    for index, owner in enumerate(owners):
        groups += batches.add(index, owner)
    groups += batches.flush()
    assert sorted(i for g in groups for i in g) == list(range(len(owners)))
    for group in groups:
        assert len({owners[i] for i in group}) == 1
        assert len(group) <= size
        # Images without an owner are never put with anything.
        assert owners[group[0]] is not None or len(group) == 1
        assert group == sorted(group)
    for owner in set(owners) - {None}:
        # As few batches as the size allows.
        count = owners.count(owner)
        assert len([g for g in groups if owners[g[0]] == owner]) == (
            -(-count // size))


def test_batch_size_follows_guest_detection(conf):
    conf.set_override('drives_per_appliance', 5, opts.GUEST_GROUP)
    assert api.batch_size(conf) == 1
    conf.set_override('enabled', True, opts.GUEST_GROUP)
    assert api.batch_size(conf) == 5
