"""Glance's disk formats: their names, qemu's drivers, what is inspected.

The one place that says which Glance ``disk_format`` values name a disk
image this project inspects, which qemu block driver reads each, and the
other names people use for them. Options, the normaliser, the Glance
plugin and the Glance client all ask here.
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

from qimgintrospect import exception

#: Glance disk format -> qemu block driver that reads it.
QEMU_DRIVERS = {
    'raw': 'raw', 'iso': 'raw', 'qcow2': 'qcow2', 'vmdk': 'vmdk',
    'vhd': 'vpc', 'vhdx': 'vhdx', 'vdi': 'vdi', 'ploop': 'parallels',
    'qed': 'qed', 'luks': 'luks',
}

#: The Glance disk formats that name a disk image, in Glance's spelling.
GLANCE_DISK_FORMATS = tuple(QEMU_DRIVERS)

#: Names people also use for a Glance disk format (qemu's, mostly).
_ALIASES = {'vpc': 'vhd', 'parallels': 'ploop'}


def glance_name(name):
    """Return the Glance spelling of a disk format name, or None for None.

    :raises UsageError: unknown-format-name.
    """
    if name is None:
        return None
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in QEMU_DRIVERS:
        raise exception.UsageError(
            exception.UNKNOWN_FORMAT_NAME,
            'unknown disk format %r (known: %s)'
            % (name, ', '.join(sorted(QEMU_DRIVERS))))
    return key


def is_disk_image(container_format, disk_format):
    """True when a Glance image with these formats holds a disk to inspect.

    Only ``bare`` containers (or none) hold the disk itself; ``ami``,
    ``aki``, ``ari`` and the other non-disk formats are left alone.
    """
    return (container_format in (None, 'bare')
            and disk_format in QEMU_DRIVERS)
