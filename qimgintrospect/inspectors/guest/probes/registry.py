"""Windows registry hives, read with hivex inside the appliance.

:class:`Hive` opens one hive file of the mounted system volume read-only
(libguestfs's ``hivex_*`` calls: the hive is parsed by hivex in the
appliance, never in this process) and answers values by key path; the
raw value bytes are decoded here by :func:`decode`, a pure function.

A hive comes from the guest and may be hostile: a hive file above
:data:`MAX_HIVE` is not opened, a value's data is cut at
:data:`MAX_VALUE`, a string is made printable and short, and any call
hivex refuses reads as "absent". Key and value names are matched as
Windows matches them, without regard to case (hivex's
``node_get_child`` does the same).
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

import struct

from oslo_utils import units

from qimgintrospect.inspectors.guest.probes import common

# Registry value types (winnt.h).
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_DWORD_BIG_ENDIAN = 5
REG_MULTI_SZ = 7
REG_QWORD = 11

#: A SOFTWARE hive of a long-lived server reaches a few hundred MiB.
MAX_HIVE = 1 * units.Gi
#: Longest value data kept (the values read here are short strings and
#: numbers).
MAX_VALUE = 64 * units.Ki
_MAX_MULTI = 64


def decode(kind, data):
    """A registry value's data as Python: str, int, list of str or bytes.

    :param kind: the value's type (``REG_*``).
    :param data: its raw bytes (UTF-16LE for strings, little-endian
        numbers).
    :returns: str for REG_SZ and REG_EXPAND_SZ (up to the first NUL),
        int for REG_DWORD, REG_DWORD_BIG_ENDIAN and REG_QWORD (None when
        the data is too short), a list of str for REG_MULTI_SZ, the bytes
        for anything else. Never raises.
    """
    data = bytes(data[:MAX_VALUE])
    if kind in (REG_SZ, REG_EXPAND_SZ):
        return _utf16(data)
    if kind == REG_DWORD:
        return struct.unpack('<I', data[:4])[0] if len(data) >= 4 else None
    if kind == REG_DWORD_BIG_ENDIAN:
        return struct.unpack('>I', data[:4])[0] if len(data) >= 4 else None
    if kind == REG_QWORD:
        return struct.unpack('<Q', data[:8])[0] if len(data) >= 8 else None
    if kind == REG_MULTI_SZ:
        even = data[:len(data) - len(data) % 2]
        text = even.decode('utf-16-le', 'replace')
        return [common.text(s) for s in text.split('\0') if s][:_MAX_MULTI]
    return data


def _utf16(data):
    text = data[:len(data) - len(data) % 2].decode('utf-16-le', 'replace')
    return common.text(text.split('\0', 1)[0])


class Hive(object):
    """One hive of the mounted guest, open in the appliance's hivex.

    Use as a context manager; :meth:`value` and :meth:`has_key` answer
    None/False for anything hivex cannot read.

    :param path: the hive's path on the mounted volume, in any case
        (``/Windows/System32/config/SOFTWARE``).
    """

    def __init__(self, appliance, path):
        self.appliance = appliance
        self.path = path
        self.opened = False
        self._nodes = {}

    def __enter__(self):
        real = common.windows_path(self.appliance, self.path)
        size = common.file_size(self.appliance, real) if real else None
        if size is None or size > MAX_HIVE:
            return self
        try:
            self.appliance.call('hivex_open', real, write=False)
            self.opened = True
        except RuntimeError:
            pass
        return self

    def __exit__(self, *exc_info):
        if self.opened:
            self.opened = False
            try:
                self.appliance.call('hivex_close')
            except RuntimeError:
                pass
        return False

    def node(self, key):
        """The node of *key* (backslash-separated, from the root), or None."""
        if not self.opened:
            return None
        key = key.strip('\\')
        if key in self._nodes:
            return self._nodes[key]
        parent, _, name = key.rpartition('\\')
        node = self.node(parent) if parent else self._root()
        if node:
            try:
                node = self.appliance.call('hivex_node_get_child', node,
                                           name) or None
            except RuntimeError:
                node = None
        self._nodes[key] = node
        return node

    def _root(self):
        try:
            return self.appliance.call('hivex_root')
        except RuntimeError:
            return None

    def has_key(self, key):
        return self.node(key) is not None

    def value(self, key, name):
        """The decoded value *name* of *key* (see :func:`decode`), or None."""
        node = self.node(key)
        if node is None:
            return None
        try:
            handle = self.appliance.call('hivex_node_get_value', node, name)
            if not handle:
                return None
            kind = self.appliance.call('hivex_value_type', handle)
            data = self.appliance.call('hivex_value_value', handle)
        except RuntimeError:
            return None
        return decode(kind, data)
