"""Which Linux kernel (and initramfs) a guest boots by default.

virt-v2v asks the guest's own tools (``grubby --default-kernel``, run in
the appliance); running a tenant's binaries is not acceptable here, so
the boot loader's files are parsed, in this order:

1. Boot Loader Specification entries (Fedora, RHEL 8+ and rebuilds:
   ``/boot/loader/entries/*.conf``), the default being GRUB's
   ``saved_entry`` (``grubenv``) or, without one, the entry GRUB's
   blscfg sorts first (the newest version);
2. a GRUB menu (``/boot/grub/grub.cfg``, ``/boot/grub2/grub.cfg``), its
   ``set default=`` (an index, ``N>M`` into a submenu, a title or an
   id, or ``${saved_entry}``) applied to its menu entries;
3. the ``/vmlinuz`` link Debian's kernel packages keep on the newest
   kernel, or the only kernel in /boot.

Paths named by these files are reduced to their last component in
``/boot``: a guest's configuration never makes the probe read elsewhere.
The pure parsers are :func:`parse_grub_cfg`, :func:`grub_default`,
:func:`parse_bls_entry`, :func:`parse_grubenv`.
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
import re
import shlex

from qimgintrospect.inspectors.guest.probes import common

#: The kernel a guest boots: its release (``uname -r``), the paths of its
#: image and initramfs in the guest (``/boot/...``; initramfs None when
#: the entry names none) and how it was found.
BootKernel = collections.namedtuple('BootKernel', [
    'version', 'vmlinuz', 'initramfs', 'source'])

_VERSION_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$')
_BLS_DIR = '/boot/loader/entries'
_GRUBENVS = ('/boot/grub2/grubenv', '/boot/grub/grubenv')
_GRUB_CFGS = ('/boot/grub/grub.cfg', '/boot/grub2/grub.cfg')
_MAX_BLS_ENTRIES = 64

#: One menu entry of a grub.cfg: title, id, and the linux and initrd
#: paths its commands name; a submenu has ``children``.
MenuEntry = collections.namedtuple('MenuEntry', [
    'title', 'entry_id', 'linux', 'initrd', 'children'])


def default_kernel(appliance, warnings):
    """The :class:`BootKernel` the guest mounted at ``/`` boots, or None.

    :param warnings: list the reasons it could not be found go to.
    """
    for finder in (_from_bls, _from_grub_cfg, _from_links):
        found = finder(appliance)
        if found is not None:
            return found
    if any(n.startswith('vmlinuz') for n in common.listing(appliance,
                                                           '/boot')):
        # A guest without any kernel (a container's tree) has nothing to
        # boot: that is no news.
        warnings.append('Linux: the default kernel could not be told from '
                        'the boot loader configuration; disk and NIC '
                        'models not checked')
    return None


def _from_bls(appliance):
    names = [n for n in common.listing(appliance, _BLS_DIR)
             if n.endswith('.conf')][:_MAX_BLS_ENTRIES]
    entries = {}
    for name in names:
        data = common.read_small(appliance, '%s/%s' % (_BLS_DIR, name),
                                 common.MAX_TEXT_FILE)
        if data is not None:
            entries[name[:-len('.conf')]] = parse_bls_entry(data)
    if not entries:
        return None
    saved = _grubenv(appliance).get('saved_entry')
    if saved in entries:
        chosen, how = entries[saved], 'BLS entry %s (saved_entry)' % saved
    else:
        name = max(entries, key=lambda n: version_key(
            entries[n].get('version') or n))
        chosen, how = entries[name], 'BLS entry %s (newest)' % name
    return _kernel(appliance, chosen.get('linux'), chosen.get('initrd'), how)


def _grubenv(appliance):
    for path in _GRUBENVS:
        data = common.read_small(appliance, path, common.MAX_TEXT_FILE)
        if data is not None:
            return parse_grubenv(data)
    return {}


def _from_grub_cfg(appliance):
    for path in _GRUB_CFGS:
        data = common.read_small(appliance, path, common.MAX_CONFIG_FILE)
        if data is None:
            continue
        defaults, entries = parse_grub_cfg(data)
        if not entries:
            continue
        entry = grub_default(defaults, entries, _grubenv(appliance))
        if entry is None:
            return None
        return _kernel(appliance, entry.linux, entry.initrd,
                       '%s entry %r' % (path, entry.title))
    return None


def _from_links(appliance):
    for link in ('/vmlinuz', '/boot/vmlinuz'):
        try:
            target = appliance.call('readlink', link)
        except RuntimeError:
            continue
        version = _version_of(target)
        if version:
            initrd = _initramfs_for(appliance, version)
            return _kernel(appliance, target, initrd, '%s link' % link)
    kernels = [n for n in common.listing(appliance, '/boot')
               if n.startswith('vmlinuz-') and '-rescue-' not in n]
    if len(kernels) == 1:
        version = _version_of(kernels[0])
        return _kernel(appliance, kernels[0],
                       _initramfs_for(appliance, version),
                       'the only kernel in /boot')
    return None


def _initramfs_for(appliance, version):
    for name in ('initrd.img-%s' % version, 'initramfs-%s.img' % version):
        if common.is_file(appliance, '/boot/' + name):
            return name
    return None


def _kernel(appliance, linux, initrd, how):
    vmlinuz = _in_boot(linux)
    version = _version_of(vmlinuz)
    if version is None or not common.is_file(appliance, vmlinuz):
        return None
    initramfs = _in_boot(initrd) if initrd else None
    return BootKernel(version, vmlinuz, initramfs, how)


def _in_boot(path):
    """A path a boot entry names, as the file of that name in /boot."""
    if not path:
        return None
    name = path.replace('\\', '/').rsplit('/', 1)[-1]
    if name in ('', '.', '..'):
        return None
    return '/boot/' + name


def _version_of(path):
    name = (path or '').rsplit('/', 1)[-1]
    if not name.startswith('vmlinuz-'):
        return None
    version = name[len('vmlinuz-'):]
    return version if _VERSION_RE.match(version) else None


def parse_bls_entry(data):
    """A BLS entry (bytes) as a dict of its first ``key value`` lines."""
    fields = {}
    for line in data.decode('utf-8', 'replace').splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not parts[0].startswith('#'):
            fields.setdefault(parts[0], parts[1].strip())
    if 'initrd' in fields:
        # Several initrds (microcode first): the last is the kernel's.
        fields['initrd'] = fields['initrd'].split()[-1]
    return fields


def parse_grubenv(data):
    """GRUB's environment block (bytes) as a dict."""
    env = {}
    for line in data.decode('utf-8', 'replace').splitlines():
        if line.startswith('#') or '=' not in line:
            continue
        key, value = line.split('=', 1)
        env[key.strip()] = value.strip()
    return env


def version_key(text):
    """A sort key comparing versions roughly as rpm does.

    Numbers compare as numbers, letters as text, numbers above letters.
    """
    return [(1, int(part), '') if part.isdigit() else (0, 0, part)
            for part in re.findall(r'\d+|[A-Za-z]+', text or '')]


def parse_grub_cfg(data):
    """The ``set default=`` values and the menu of a grub.cfg (bytes).

    :returns: ``(defaults, entries)``: every top-level ``default`` value
        in order, and the top-level :class:`MenuEntry` list (submenus
        holding theirs). Nothing is evaluated; a line that cannot be
        split is skipped.
    """
    defaults = []
    root = []
    stack = [(None, root)]  # (entry under construction, its children)
    current = None
    for raw in data.decode('utf-8', 'replace').splitlines():
        line = raw.strip()
        if not line or line.startswith('#'):
            continue
        try:
            words = shlex.split(line, comments=False, posix=True)
        except ValueError:
            continue
        if not words:
            continue
        head = words[0]
        if head in ('menuentry', 'submenu') and line.endswith('{'):
            title = words[1] if len(words) > 1 else ''
            entry_id = None
            for index, word in enumerate(words):
                if word in ('$menuentry_id_option', '--id') and (
                        index + 1 < len(words)):
                    entry_id = words[index + 1]
            entry = {'title': title, 'id': entry_id, 'linux': None,
                     'initrd': None, 'children': [] if head == 'submenu'
                     else None}
            stack[-1][1].append(entry)
            stack.append((entry, entry['children'] if head == 'submenu'
                          else []))
            current = entry if head == 'menuentry' else None
            continue
        if line == '}' or line.startswith('}'):
            if len(stack) > 1:
                stack.pop()
            current = None
            continue
        if current is not None and head in ('linux', 'linux16',
                                            'linuxefi') and len(words) > 1:
            current['linux'] = words[1]
        elif current is not None and head in ('initrd', 'initrd16',
                                              'initrdefi') and len(words) > 1:
            current['initrd'] = words[-1]
        elif (head == 'set' and len(stack) == 1 and len(words) > 1
              and words[1].startswith('default=')):
            defaults.append(words[1][len('default='):])
    return defaults, [_entry(e) for e in root]


def _entry(raw):
    children = raw['children']
    return MenuEntry(raw['title'], raw['id'], raw['linux'], raw['initrd'],
                     None if children is None
                     else [_entry(c) for c in children])


def grub_default(defaults, entries, env):
    """The menu entry GRUB boots: the last ``default`` that applies.

    ``${next_entry}`` (a one-time boot) is skipped; ``${saved_entry}``
    is read from *env*; an empty or unknown default is entry 0, as in
    GRUB.
    """
    value = '0'
    for candidate in defaults:
        if 'next_entry' in candidate:
            continue
        value = candidate
    if value.startswith('${') or value.startswith('$'):
        name = value.strip('${}')
        value = env.get(name) or '0'
    if value == 'saved':
        value = env.get('saved_entry') or '0'
    entry = _find(entries, value.split('>'))
    if entry is None:
        entry = _find(entries, ['0'])
    while entry is not None and entry.children is not None:
        # A submenu chosen whole boots its first entry.
        entry = entry.children[0] if entry.children else None
    return entry


def _find(entries, path):
    if not path or not entries:
        return None
    key, rest = path[0].strip(), path[1:]
    found = None
    if key.isdigit():
        index = int(key)
        found = entries[index] if index < len(entries) else None
    else:
        found = next((e for e in entries
                      if key in (e.title, e.entry_id)), None)
    if found is None or not rest:
        return found
    return _find(found.children or [], rest)
