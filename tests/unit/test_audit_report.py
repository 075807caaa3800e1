"""The audit's report rows and its sizing figures (no Glance)."""

from qimgintrospect.cmd import audit as audit_cmd
from qimgintrospect import exception
from qimgintrospect.glance import report
from qimgintrospect.glance import sizing
from qimgintrospect import normalise

MiB = 1024 ** 2
GiB = 1024 ** 3

RESULT = normalise.Result({'disk_format': 'vmdk',
                           'vmware_disktype': 'sparse'},
                          {'cluster_size': 65536}, ['a warning'])


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


def test_the_summary_for_people_says_sizes_in_binary_units(conf):
    report_ = report.Report()
    report_.sizes = [512, 3 * MiB, 2 * GiB]
    report_.counts.listed = 3

    text = audit_cmd.format_summary(report_.summary(conf))

    assert 'Images: 3 listed, 0 inspected' in text
    assert ('Image sizes (3 images, 2.0 GiB in all): min 512 B, median '
            '3.0 MiB, mean 683.7 MiB, 90% under 2.0 GiB, max 2.0 GiB.'
            in text)
    assert 'Reads of the 0 images inspected' in text
