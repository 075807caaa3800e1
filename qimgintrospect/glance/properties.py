"""Glance's properties against the image's: the differences and the policy.

:func:`compare` is the one place that decides, for every front end, what
to write to Glance:

* a property the image says and Glance lacks is *missing*: set it;
* a property both have with different values is *wrong*: set it, unless
  the caller keeps existing values (the import plugin keeps the
  uploader's by default);
* a property Glance has that only makes sense for another format (a
  ``vmware_adaptertype`` on a qcow2) is *stale*: removed only when the
  caller asks, since an admin may have set it on purpose;
* core attributes (``disk_format``, ``virtual_size``) are compared too, but
  Glance does not let them change once an image has data: *read-only*;
* ``min_disk`` (a core attribute Glance lets change) is a floor: Glance's
  value is *same* when it is at least the image's, *missing* when it is
  0 (no minimum), *wrong* when it is smaller.

Nothing outside :data:`qimgintrospect.normalise.VOCABULARY` is ever
touched.
"""
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

import collections

from qimgintrospect import normalise

SAME = 'same'
MISSING = 'missing'
WRONG = 'wrong'
STALE = 'stale'

SET = 'set'
REMOVE = 'remove'
KEEP = 'keep'
READ_ONLY = 'read-only'
NOTHING = ''

#: Properties that only describe images of one disk format.
FORMAT_ONLY = {
    'vmware_disktype': 'vmdk',
    'vmware_adaptertype': 'vmdk',
}

#: One property: its name, Glance's value, the image's value (None where
#: absent), the kind of difference and the action the policy chose.
Difference = collections.namedtuple(
    'Difference', ['name', 'glance', 'image', 'kind', 'action'])


def compare(found, glance, overwrite=True, remove_stale=False):
    """Compare the image's properties with Glance's.

    :param found: the properties the image says (``Result.properties``).
    :param glance: the image as Glance shows it: core attributes and extra
        properties in one dict (python-glanceclient's image, or
        ``action.image_extra_properties`` plus attributes in the plugin).
    :param overwrite: set a *wrong* property (else keep Glance's value).
    :param remove_stale: remove a *stale* property (else keep it).
    :returns: a list of :class:`Difference`, sorted by name, one for every
        property the image says and every stale property Glance has.
    """
    differences = []
    for name, value in found.items():
        current = glance.get(name)
        core = normalise.VOCABULARY[name].core
        if name in normalise.MINIMUMS:
            kind = _floor_kind(current, value)
        elif current is None:
            kind = MISSING
        elif str(current) == str(value):
            kind = SAME
        else:
            kind = WRONG
        if kind == SAME:
            action = NOTHING
        elif core and name not in normalise.MINIMUMS:
            action = READ_ONLY
        elif kind == MISSING or overwrite:
            action = SET
        else:
            action = KEEP
        differences.append(Difference(name, current, value, kind, action))

    disk_format = found.get('disk_format') or glance.get('disk_format')
    for name, only_format in FORMAT_ONLY.items():
        if (name not in found and glance.get(name) is not None
                and disk_format != only_format):
            differences.append(Difference(
                name, glance[name], None, STALE,
                REMOVE if remove_stale else KEEP))
    return sorted(differences)


def _floor_kind(current, value):
    try:
        current = int(current or 0)
    except (TypeError, ValueError):
        return WRONG
    if current == 0:
        return MISSING
    return SAME if current >= value else WRONG


def changes(differences):
    """What to write: ``(properties to set, names to remove)``.

    Values are strings, as Glance stores extra properties, except the
    core attributes that may change (``min_disk``, an integer); read-only
    and kept differences are left out.
    """
    to_set = {d.name: d.image if d.name in normalise.MINIMUMS
              else str(d.image) for d in differences if d.action == SET}
    to_remove = sorted(d.name for d in differences if d.action == REMOVE)
    return to_set, to_remove


def conflicts(differences):
    """The wrong properties the policy keeps (to be logged)."""
    return [d for d in differences if d.kind == WRONG and d.action == KEEP]
