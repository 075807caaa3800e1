"""The diff policy shared by the import plugin, ``glance`` and ``audit``."""

from qimgintrospect.glance import properties as p

FOUND = {'disk_format': 'vmdk', 'virtual_size': 1024,
         'vmware_disktype': 'streamOptimized',
         'vmware_adaptertype': 'busLogic'}


def _by_name(differences):
    return {d.name: d for d in differences}


def test_missing_wrong_and_same():
    glance = {'disk_format': 'vmdk', 'virtual_size': 1024,
              'vmware_adaptertype': 'ide'}

    diffs = _by_name(p.compare(FOUND, glance))

    assert diffs['disk_format'] == p.Difference(
        'disk_format', 'vmdk', 'vmdk', p.SAME, p.NOTHING)
    assert diffs['vmware_disktype'] == p.Difference(
        'vmware_disktype', None, 'streamOptimized', p.MISSING, p.SET)
    assert diffs['vmware_adaptertype'] == p.Difference(
        'vmware_adaptertype', 'ide', 'busLogic', p.WRONG, p.SET)


def test_values_compare_as_glance_stores_them():
    # Glance returns extra properties as strings.
    diffs = _by_name(p.compare({'virtual_size': 1024},
                               {'virtual_size': '1024'}))
    assert diffs['virtual_size'].kind == p.SAME


def test_without_overwrite_a_wrong_value_is_kept_and_is_a_conflict():
    diffs = p.compare(FOUND, {'vmware_adaptertype': 'ide'}, overwrite=False)

    by_name = _by_name(diffs)
    assert by_name['vmware_adaptertype'].action == p.KEEP
    assert by_name['vmware_disktype'].action == p.SET
    assert p.conflicts(diffs) == [by_name['vmware_adaptertype']]


def test_core_attributes_are_read_only():
    diffs = _by_name(p.compare(FOUND, {'disk_format': 'vmdk',
                                       'virtual_size': 2048}))

    assert diffs['virtual_size'].kind == p.WRONG
    assert diffs['virtual_size'].action == p.READ_ONLY
    to_set, to_remove = p.changes(diffs.values())
    assert 'virtual_size' not in to_set


def test_vmware_property_on_another_format_is_stale():
    found = {'disk_format': 'qcow2', 'virtual_size': 1024}
    glance = {'disk_format': 'qcow2', 'vmware_disktype': 'sparse',
              'hw_disk_bus': 'scsi'}

    kept = _by_name(p.compare(found, glance))
    removed = _by_name(p.compare(found, glance, remove_stale=True))

    assert kept['vmware_disktype'] == p.Difference(
        'vmware_disktype', 'sparse', None, p.STALE, p.KEEP)
    assert removed['vmware_disktype'].action == p.REMOVE
    # Not a property of one disk format: never stale.
    assert 'hw_disk_bus' not in removed


def test_vmware_property_absent_from_a_vmdk_is_not_stale():
    # A VMDK whose descriptor names no adapter: the admin's value stands.
    found = {'disk_format': 'vmdk', 'vmware_disktype': 'sparse'}
    diffs = _by_name(p.compare(found, {'vmware_adaptertype': 'ide'},
                               remove_stale=True))
    assert 'vmware_adaptertype' not in diffs


def test_changes_lists_what_to_set_and_what_to_remove():
    to_set, to_remove = p.changes(p.compare(FOUND, {'disk_format': 'vmdk'}))
    assert to_set == {'vmware_disktype': 'streamOptimized',
                      'vmware_adaptertype': 'busLogic'}
    assert to_remove == []

    to_set, to_remove = p.changes(p.compare(
        {'disk_format': 'qcow2', 'virtual_size': 1},
        {'vmware_adaptertype': 'ide'}, remove_stale=True))
    assert to_set == {}
    assert to_remove == ['vmware_adaptertype']


def test_min_disk_is_a_floor_that_may_be_raised():
    found = {'disk_format': 'qcow2', 'virtual_size': 1, 'min_disk': 10}
    for glance, kind, action in ((0, p.MISSING, p.SET),
                                 (None, p.MISSING, p.SET),
                                 (4, p.WRONG, p.SET),
                                 (10, p.SAME, p.NOTHING),
                                 # An admin may want more: never lowered.
                                 (20, p.SAME, p.NOTHING)):
        diff = _by_name(p.compare(found, {'min_disk': glance}))['min_disk']
        assert (diff.kind, diff.action) == (kind, action), glance
    # A core attribute, but one Glance lets change; written as a number.
    to_set, _ = p.changes(p.compare(found, {'min_disk': 4}))
    assert to_set == {'min_disk': 10}
    kept = _by_name(p.compare(found, {'min_disk': 4}, overwrite=False))
    assert kept['min_disk'].action == p.KEEP
