#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""Glance's vocabulary, and the merge of raw findings into it.

The inspectors report raw findings in their own terms (qemu's ``vpc``, a
VMDK descriptor's ``buslogic``). :func:`merge` turns them into

* ``properties``: what Glance stores, spelled as Glance's metadefs and
  Nova spell it; every value is checked against :data:`VOCABULARY` and a
  value outside it is dropped with a warning, never emitted;
* ``details``: format facts that are not Glance properties (cluster size,
  qcow2 compat, dirty flag, actual size);
* ``warnings``: what a person should know but that did not stop anything.

:data:`VOCABULARY` mirrors Glance's ``etc/metadefs`` (a functional test
compares them, so a drift fails the build).
"""

import collections

from qimgintrospect import exception
from qimgintrospect import opts

#: Glance disk format -> qemu block driver that reads it.
QEMU_DRIVERS = {
    'raw': 'raw', 'iso': 'raw', 'qcow2': 'qcow2', 'vmdk': 'vmdk',
    'vhd': 'vpc', 'vhdx': 'vhdx', 'vdi': 'vdi', 'ploop': 'parallels',
    'qed': 'qed', 'luks': 'luks',
}
#: Names people also use for a Glance disk format (qemu's, mostly).
_FORMAT_ALIASES = {'vpc': 'vhd', 'parallels': 'ploop'}

#: VMDK createType (lower case) -> Glance/Nova vmware_disktype.
VMWARE_DISKTYPES = {
    'streamoptimized': 'streamOptimized',
    'monolithicsparse': 'sparse',
    'monolithicflat': 'preallocated',
    'vmfs': 'preallocated',
}

#: VMDK ddb.adapterType (lower case) -> Glance/Nova vmware_adaptertype.
VMWARE_ADAPTERTYPES = {
    'lsilogic': 'lsiLogic',
    'buslogic': 'busLogic',
    'lsisas1068': 'lsiLogicsas',
    'lsilogicsas': 'lsiLogicsas',
    'pvscsi': 'paraVirtual',
    'paravirtual': 'paraVirtual',
    'ide': 'ide',
}

Property = collections.namedtuple('Property', ['kind', 'allowed', 'core'])

#: Property -> (kind, allowed values or None, is it a core image attribute).
VOCABULARY = {
    'disk_format': Property(str, frozenset(opts.GLANCE_DISK_FORMATS), True),
    'virtual_size': Property(int, None, True),
    'vmware_disktype': Property(
        str, frozenset(['streamOptimized', 'sparse', 'preallocated']), False),
    'vmware_adaptertype': Property(
        str, frozenset(['lsiLogic', 'lsiLogicsas', 'paraVirtual', 'busLogic',
                        'ide']), False),
}


class Result(object):
    """What the core returns: properties, details and warnings."""

    def __init__(self, properties, details, warnings):
        self.properties = properties
        self.details = details
        self.warnings = warnings

    def to_dict(self):
        return {'properties': dict(self.properties),
                'details': dict(self.details),
                'warnings': list(self.warnings)}

    def __repr__(self):
        return 'Result(%r)' % self.to_dict()


def glance_disk_format(name):
    """Return the Glance spelling of a disk format name, or None for None.

    :raises UsageError: unknown-format-name.
    """
    if name is None:
        return None
    key = _FORMAT_ALIASES.get(name.lower(), name.lower())
    if key not in QEMU_DRIVERS:
        raise exception.UsageError(
            exception.UNKNOWN_FORMAT_NAME,
            'unknown disk format %r (known: %s)'
            % (name, ', '.join(sorted(QEMU_DRIVERS))))
    return key


def merge(*sources):
    """Merge raw findings into a :class:`Result`.

    :param sources: dicts of raw findings, least authoritative first (a
        later source's value for the same finding wins); a ``warnings``
        key carries that source's warnings.
    """
    findings = {}
    warnings = []
    for source in sources:
        for key, value in source.items():
            if key == 'warnings':
                warnings.extend(value)
                continue
            if value is None:
                continue
            findings[key] = value

    properties = {'disk_format': findings.pop('format', None),
                  'virtual_size': findings.pop('virtual_size', None)}
    create_type = findings.get('vmdk_create_type')
    if create_type:
        properties['vmware_disktype'] = VMWARE_DISKTYPES.get(
            create_type.lower())
    adapter = findings.pop('vmdk_adapter_type', None)
    if adapter:
        properties['vmware_adaptertype'] = VMWARE_ADAPTERTYPES.get(
            adapter.lower())
        if properties['vmware_adaptertype'] is None:
            warnings.append('VMDK adapter type %r has no Glance '
                            'vmware_adaptertype; not set' % adapter)
    properties = validate(properties, warnings)
    return Result(properties, findings, warnings)


def validate(properties, warnings):
    """Return the properties whose values are in :data:`VOCABULARY`.

    A property that is unknown or whose value is outside the vocabulary is
    dropped and a warning added; None values are dropped silently.
    """
    valid = {}
    for name, value in properties.items():
        if value is None:
            continue
        rule = VOCABULARY.get(name)
        if rule is None:
            warnings.append('%s is not in the Glance vocabulary; not set'
                            % name)
        elif not isinstance(value, rule.kind) or (
                rule.allowed is not None and value not in rule.allowed):
            warnings.append('%s=%r is not an allowed value; not set'
                            % (name, value))
        else:
            valid[name] = value
    return valid


def core_attributes(properties):
    """Split *properties* into (core image attributes, extra properties)."""
    core = {k: v for k, v in properties.items()
            if k in VOCABULARY and VOCABULARY[k].core}
    extra = {k: v for k, v in properties.items() if k not in core}
    return core, extra
