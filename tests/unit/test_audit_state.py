"""The audit's state store, report rows and summary figures (no Glance)."""

import os
import sqlite3

import pytest

from qimgintrospect import exception
from qimgintrospect.glance import report
from qimgintrospect.glance import sizing
from qimgintrospect.glance import state
from qimgintrospect import normalise

MiB = 1024 ** 2
GiB = 1024 ** 3

RESULT = normalise.Result({'disk_format': 'vmdk',
                           'vmware_disktype': 'sparse'},
                          {'cluster_size': 65536}, ['a warning'])


@pytest.fixture
def store(tmp_path):
    store = state.StateStore(str(tmp_path / 'sub' / 'state.db'), '1.0')
    yield store
    store.close()


def test_a_record_is_found_by_id_and_checksum(store):
    store.put('img-1', 'sum-a', RESULT)

    found = store.get('img-1', 'sum-a')

    assert found.to_dict() == RESULT.to_dict()
    assert store.get('img-1', 'sum-b') is None  # the data changed
    assert store.get('img-2', 'sum-a') is None


def test_errors_come_back_as_their_category(store):
    store.put('refused', 'x', exception.ImageRefused(
        exception.BACKING_FILE, 'names /etc/passwd'))
    store.put('broken', 'y', exception.InspectionFailed(
        exception.IMAGE_TRUNCATED, 'ends early'))

    refused = store.get('refused', 'x')
    broken = store.get('broken', 'y')

    assert isinstance(refused, exception.ImageRefused)
    assert (refused.code, refused.message) == ('backing-file',
                                               'names /etc/passwd')
    assert isinstance(broken, exception.InspectionFailed)
    assert broken.code == 'image-truncated'


def test_a_new_checksum_replaces_the_record(store):
    store.put('img-1', 'old', RESULT)
    store.put('img-1', 'new', RESULT)

    assert store.get('img-1', 'old') is None
    assert store.get('img-1', 'new') is not None
    assert store.count() == 1


def test_records_survive_the_process_and_the_version_counts(tmp_path):
    path = str(tmp_path / 'state.db')
    first = state.StateStore(path, '1.0')
    first.put('img-1', 'sum', RESULT)
    first.close()  # each put is already committed; close is not needed

    same = state.StateStore(path, '1.0')
    upgraded = state.StateStore(path, '2.0')
    try:
        assert same.get('img-1', 'sum') is not None
        assert upgraded.get('img-1', 'sum') is None
    finally:
        same.close()
        upgraded.close()


def test_a_record_with_an_unknown_code_does_not_count(store, tmp_path):
    db = sqlite3.connect(store.path)
    with db:
        db.execute("INSERT INTO inspected (image_id, checksum, version, "
                   "inspected_at, outcome) VALUES ('img', 'sum', '1.0', 'x', "
                   "'{\"error\": {\"code\": \"gone\", \"message\": \"m\"}}')")
    db.close()

    assert store.get('img', 'sum') is None


def test_unusable_state_file_is_a_usage_error(tmp_path):
    (tmp_path / 'file').write_text('')

    with pytest.raises(exception.UsageError) as err:
        state.StateStore(str(tmp_path / 'file' / 'state.db'))

    assert err.value.code == 'state-file-unusable'


def test_state_file_directory_is_private(tmp_path):
    state.StateStore(str(tmp_path / 'new' / 'state.db')).close()
    assert os.stat(tmp_path / 'new').st_mode & 0o777 == 0o700


def test_size_distribution():
    sizes = [10 * MiB, 200 * MiB, 2 * GiB, 3 * GiB, 20 * GiB]

    dist = sizing.size_distribution(sizes)

    assert dist['count'] == 5
    assert dist['total'] == sum(sizes)
    assert (dist['min'], dist['median'], dist['max']) == (
        10 * MiB, 2 * GiB, 20 * GiB)
    assert dist['p90'] == 20 * GiB
    assert [b['count'] for b in dist['buckets']] == [1, 1, 2, 1, 0]


def test_size_distribution_of_nothing():
    dist = sizing.size_distribution([])
    assert dist['count'] == dist['max'] == dist['mean'] == 0
    assert sum(b['count'] for b in dist['buckets']) == 0


def test_workspace_needs_the_largest_images_twice(conf):
    conf.set_override('max_workers', 2, 'introspection_workspace')
    conf.set_override('quota_mb', 10 * 1024, 'introspection_workspace')

    needs = sizing.workspace_needs([1 * GiB, 3 * GiB, 2 * GiB], conf)

    # A download and the core's private copy, for the two largest.
    assert needs['needed_bytes'] == 2 * (3 + 2) * GiB
    assert needs['typical_bytes'] == 2 * 2 * 2 * GiB
    assert needs['enough'] is True
    assert sizing.workspace_needs([8 * GiB], conf)['enough'] is False


def test_rows_of_a_refused_image():
    rows, changed = report.image_rows(
        None, {'id': 'img', 'owner': 'p'},
        exception.ImageRefused(exception.BACKING_FILE, 'names /etc/passwd'),
        report.Policy(apply=True))

    assert changed is False
    assert rows == [report.Row('img', 'p', '', None, None, 'refused', '',
                               'backing-file: names /etc/passwd')]


def test_rows_without_apply_say_what_would_be_done():
    image = {'id': 'img', 'owner': 'p', 'disk_format': 'vmdk',
             'vmware_disktype': 'sparse'}
    rows, changed = report.image_rows(None, image, RESULT, report.Policy())
    assert changed is False
    assert rows == []

    image['vmware_disktype'] = 'preallocated'
    rows, _ = report.image_rows(None, image, RESULT, report.Policy())
    assert [(r.property, r.difference, r.action) for r in rows] == [
        ('vmware_disktype', 'wrong', 'would set')]

    rows, _ = report.image_rows(None, image, RESULT,
                                report.Policy(overwrite=False),
                                include_same=True)
    assert [(r.property, r.action) for r in rows] == [
        ('disk_format', ''), ('vmware_disktype', 'kept')]


def test_fingerprint_follows_the_options_that_shape_findings(conf):
    before = state.fingerprint(conf)

    conf.set_override('max_workers', 7, 'introspection_workspace')
    assert state.fingerprint(conf) == before

    # How an appliance is started is not what it finds.
    conf.set_override('backend_settings', ['force_tcg'],
                      'introspection_guest')
    conf.set_override('launch_timeout', 7, 'introspection_guest')
    assert state.fingerprint(conf) == before

    conf.set_override('vmdk_allowed_types', ['streamOptimized'],
                      'introspection_formats')
    assert state.fingerprint(conf) != before
    turned_on = state.fingerprint(conf)
    conf.set_override('enabled', True, 'introspection_guest')
    assert state.fingerprint(conf) != turned_on
