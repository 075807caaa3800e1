"""Glance vocabulary: names, mappings and validation."""

import glob
import json
import os
import sys

import pytest

from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect import normalise


@pytest.mark.parametrize('given, glance', [
    ('qcow2', 'qcow2'), ('VMDK', 'vmdk'), ('vpc', 'vhd'), ('vhd', 'vhd'),
    ('parallels', 'ploop'), ('iso', 'iso'), (None, None),
])
def test_glance_disk_format(given, glance):
    assert diskformats.glance_name(given) == glance


def test_unknown_disk_format_name():
    with pytest.raises(exception.UsageError) as err:
        diskformats.glance_name('floppy')
    assert err.value.code == 'unknown-format-name'


def test_every_glance_format_has_a_qemu_driver():
    for disk_format in normalise.VOCABULARY['disk_format'].allowed:
        assert disk_format in diskformats.QEMU_DRIVERS


@pytest.mark.parametrize('create_type, adapter, disktype, adaptertype', [
    ('streamOptimized', 'buslogic', 'streamOptimized', 'busLogic'),
    ('monolithicSparse', 'lsilogic', 'sparse', 'lsiLogic'),
    ('monolithicSparse', 'lsisas1068', 'sparse', 'lsiLogicsas'),
    ('monolithicSparse', 'pvscsi', 'sparse', 'paraVirtual'),
    ('streamoptimized', 'IDE', 'streamOptimized', 'ide'),
])
def test_vmdk_mapping(create_type, adapter, disktype, adaptertype):
    result = normalise.merge({'format': 'vmdk', 'virtual_size': 512,
                              'vmdk_create_type': create_type,
                              'vmdk_adapter_type': adapter})
    assert result.properties == {'disk_format': 'vmdk', 'virtual_size': 512,
                                 'min_disk': 1,
                                 'vmware_disktype': disktype,
                                 'vmware_adaptertype': adaptertype}
    # The descriptor's own words stay in details, both of them.
    assert result.details == {'vmdk_create_type': create_type,
                              'vmdk_adapter_type': adapter}


@pytest.mark.parametrize('create_type', ['monolithicFlat', 'vmfs',
                                         'twoGbMaxExtentSparse'])
def test_a_vmdk_type_that_is_never_accepted_has_no_disktype(create_type):
    # The header check refuses these (their data is in other files);
    # should one reach the normaliser, it sets no vmware_disktype.
    result = normalise.merge({'format': 'vmdk', 'virtual_size': 512,
                              'vmdk_create_type': create_type})
    assert 'vmware_disktype' not in result.properties


def test_later_source_wins_and_details_are_separate():
    result = normalise.merge(
        {'format': 'qcow2', 'virtual_size': 1, 'warnings': ['w1']},
        {'virtual_size': 2, 'cluster_size': 65536, 'qcow2_compat': '1.1'})
    assert result.properties == {'disk_format': 'qcow2', 'virtual_size': 2,
                                 'min_disk': 1}
    assert result.details == {'cluster_size': 65536, 'qcow2_compat': '1.1'}
    assert result.warnings == ['w1']


def test_values_outside_the_vocabulary_are_dropped_with_a_warning():
    warnings = []
    valid = normalise.validate({'vmware_disktype': 'thick',
                                'virtual_size': '12',
                                'made_up': 'x',
                                'disk_format': 'qcow2'}, warnings)
    assert valid == {'disk_format': 'qcow2'}
    assert len(warnings) == 3


def test_unmapped_adapter_is_a_warning_not_a_value():
    result = normalise.merge({'format': 'vmdk', 'virtual_size': 1,
                              'vmdk_adapter_type': 'legacyESX'})
    assert 'vmware_adaptertype' not in result.properties
    assert result.warnings == ["VMDK adapter type 'legacyESX' has no Glance "
                               "vmware_adaptertype; not set"]


def test_core_attributes_split():
    core, extra = normalise.core_attributes(
        {'disk_format': 'vmdk', 'virtual_size': 1,
         'vmware_disktype': 'sparse'})
    assert core == {'disk_format': 'vmdk', 'virtual_size': 1}
    assert extra == {'vmware_disktype': 'sparse'}


def _metadefs_dir():
    for prefix in (sys.prefix, '/usr/local', '/usr'):
        path = os.path.join(prefix, 'etc', 'glance', 'metadefs')
        if glob.glob(os.path.join(path, '*.json')):
            return path
    return None


def _metadef_enums(directory):
    enums = {}
    for path in glob.glob(os.path.join(directory, '*.json')):
        with open(path) as f:
            namespace = json.load(f)
        props = dict(namespace.get('properties', {}))
        for obj in namespace.get('objects', []):
            props.update(obj.get('properties', {}))
        # Image properties of a namespace whose association has a prefix
        # carry it (compute-vtpm-hw's tpm_version is hw_tpm_version).
        prefixes = {association.get('prefix') or '' for association in
                    namespace.get('resource_type_associations', [])
                    if association.get('name') == 'OS::Glance::Image'}
        for name, prop in props.items():
            if prop.get('enum'):
                for prefix in prefixes | {''}:
                    enums.setdefault(prefix + name, set()).update(
                        prop['enum'])
    return enums


def test_vocabulary_matches_glance_metadefs():
    directory = _metadefs_dir()
    if directory is None:
        pytest.skip('glance (and its metadefs) is not installed here')
    enums = _metadef_enums(directory)
    checked = 0
    for name, rule in normalise.VOCABULARY.items():
        if rule.allowed is not None and name in enums:
            assert rule.allowed <= enums[name], name
            checked += 1
    assert checked >= 2
    # Every property of issue 11 with a Glance enum was compared.
    for name in ('hw_disk_bus', 'hw_vif_model', 'hw_tpm_version',
                 'hw_firmware_type'):
        assert name in enums, name
    # os_secure_boot is not in Glance's metadefs: Nova's enum is used.
    assert 'os_secure_boot' not in enums
