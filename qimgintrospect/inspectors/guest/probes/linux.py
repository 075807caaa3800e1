"""Linux (and other Unix-like) guests: os-release, cloud-init, qemu-ga, boot.

Reads the mounted root of one guest: the distributor's own name and
version (os-release(5)), the default user cloud-init creates, whether
the QEMU guest agent is installed, and which disks and NICs the default
kernel (:mod:`.kernels`) can drive at boot: built in
(``modules.builtin``), in its initramfs (:mod:`.initramfs`, read here
from the archive's bytes) or, for a NIC, installed (``modules.dep``);
:mod:`.devices` turns those into ready buses and models. Returns plain
findings in the guest's own terms (``guest_*`` keys);
:mod:`qimgintrospect.normalise` maps them to Glance's vocabulary.
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


from oslo_utils import units
import yaml

from qimgintrospect.inspectors.guest import appliance as appliance_mod
from qimgintrospect.inspectors.guest.probes import common
from qimgintrospect.inspectors.guest.probes import devices
from qimgintrospect.inspectors.guest.probes import initramfs
from qimgintrospect.inspectors.guest.probes import kernels

_QEMU_GA_PATHS = ('/usr/bin/qemu-ga', '/usr/sbin/qemu-ga',
                  '/usr/libexec/qemu-ga', '/usr/local/bin/qemu-ga',
                  '/usr/local/sbin/qemu-ga', '/bin/qemu-ga', '/sbin/qemu-ga')
_OS_RELEASE_PATHS = ('/etc/os-release', '/usr/lib/os-release')
_CLOUD_CFG = '/etc/cloud/cloud.cfg'
_CLOUD_CFG_D = '/etc/cloud/cloud.cfg.d'
_CLOUD_DISABLED = '/etc/cloud/cloud-init.disabled'
_MODULE_DIRS = ('/lib/modules', '/usr/lib/modules')
#: modules.dep of a distribution kernel is well under 1 MiB.
_MAX_MODULES_DEP = 16 * units.Mi


def probe(appliance, warnings):
    """Findings of the guest whose root is mounted at ``/``.

    :param warnings: list the probe appends what a person should know to.
    """
    found = {}
    found.update(_os_release(appliance))
    found.update(_cloud_init(appliance, warnings))
    found['guest_qemu_guest_agent'] = any(
        common.is_file(appliance, path) for path in _QEMU_GA_PATHS)
    found.update(boot_devices(appliance, warnings))
    return found


def boot_devices(appliance, warnings):
    """The default kernel, and the disks and NICs it drives at boot."""
    kernel = kernels.default_kernel(appliance, warnings)
    if kernel is None:
        return {'guest_default_kernel': None}
    found = {'guest_default_kernel': kernel.version,
             'guest_default_kernel_from': common.text(kernel.source),
             'guest_initramfs': kernel.initramfs}
    directory = next((d for d in ('%s/%s' % (m, kernel.version)
                                  for m in _MODULE_DIRS)
                      if common.is_dir(appliance, d)), None)
    builtin, on_disk = set(), set()
    if directory is not None:
        builtin = _module_names(common.read_bounded(
            appliance, directory + '/modules.builtin', _MAX_MODULES_DEP))
        on_disk = _module_names(common.read_bounded(
            appliance, directory + '/modules.dep', _MAX_MODULES_DEP))
    in_initramfs, listed = _initramfs_modules(appliance, kernel, found)
    ready = devices.linux(builtin, in_initramfs, on_disk)
    if not listed and 'virtio' not in ready['guest_disk_buses']:
        # Without the whole initramfs, only what is built in is known.
        warnings.append('Linux: the initramfs %s could not be read (%s); '
                        'disk bus not checked' % (
                            kernel.initramfs, found['guest_initramfs_error']))
        ready['guest_disk_buses'] = None
    found.update(ready)
    return found


def _module_names(data):
    """Module names in modules.builtin or modules.dep text."""
    names = set()
    for line in (data or b'').decode('utf-8', 'replace').splitlines():
        name = devices.module_name(line.split(':', 1)[0].strip())
        if name:
            names.add(name)
    return names


def _initramfs_modules(appliance, kernel, found):
    """(module names of the default kernel in its initramfs, listed?)."""
    if kernel.initramfs is None:
        return set(), True  # no initramfs: only what is built in
    size = common.file_size(appliance, kernel.initramfs)
    if size is None:
        found['guest_initramfs_error'] = 'not a file'
        return set(), False
    marker = '/modules/%s/' % kernel.version
    modules = set()

    def enough(names):
        name = names[-1]
        if marker in '/' + name:
            module = devices.module_name(name)
            if module:
                modules.add(module)
        return devices.LINUX_DISK_MODULE_NAMES <= modules

    def read(offset, count):
        return common.pread(appliance, kernel.initramfs, count, offset)

    listing = initramfs.list_names(read, size, enough)
    found['guest_initramfs_segments'] = listing.segments
    if listing.error is not None:
        found['guest_initramfs_error'] = common.text(str(listing.error))
        return modules, False
    return modules, True


def _os_release(appliance):
    for path in _OS_RELEASE_PATHS:
        data = common.read_small(appliance, path, common.MAX_TEXT_FILE)
        if data is not None:
            fields = parse_os_release(data)
            found = {}
            if fields.get('ID'):
                found['guest_os_release_id'] = common.text(fields['ID'])
            if fields.get('VERSION_ID'):
                found['guest_version_id'] = common.text(fields['VERSION_ID'])
            return found
    return {}


def parse_os_release(data):
    """Parse os-release(5) text (bytes) into a dict of its fields.

    Only ``KEY=value`` lines count; one level of single or double quotes
    is removed. Nothing is evaluated.
    """
    fields = {}
    for line in data.decode('utf-8', 'replace').splitlines():
        line = line.strip()
        if not line or line.startswith('#') or '=' not in line:
            continue
        key, value = line.split('=', 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            value = value[1:-1].replace('\\"', '"').replace('\\\\', '\\')
        fields[key.strip()] = value
    return fields


def _cloud_init(appliance, warnings):
    if not common.is_file(appliance, _CLOUD_CFG):
        return {}
    found = {'guest_cloud_init': ('disabled'
                                  if common.is_file(appliance, _CLOUD_DISABLED)
                                  else 'enabled')}
    paths = [_CLOUD_CFG]
    if common.is_dir(appliance, _CLOUD_CFG_D):
        try:
            names = sorted(n for n in appliance.call('ls', _CLOUD_CFG_D)
                           if n.endswith('.cfg'))
        except RuntimeError:
            names = []
        if len(names) > common.MAX_ENTRIES:
            warnings.append('cloud-init: only the first %d of %d files in '
                            '%s were read' % (common.MAX_ENTRIES, len(names),
                                              _CLOUD_CFG_D))
        paths += ['%s/%s' % (_CLOUD_CFG_D, n)
                  for n in names[:common.MAX_ENTRIES]]
    documents = []
    for path in paths:
        data = common.read_small(appliance, path, common.MAX_CONFIG_FILE)
        try:
            document = yaml.safe_load(data) if data else None
        except (yaml.YAMLError, RecursionError, ValueError) as err:
            warnings.append('cloud-init: %s is not valid YAML: %s'
                            % (path, appliance_mod.first_line(err)))
            continue
        if isinstance(document, dict):
            documents.append(document)
    user = cloud_init_default_user(documents)
    if user is not None:
        found['guest_cloud_init_user'] = common.text(str(user))
    return found


def cloud_init_default_user(documents):
    """Return the default user cloud-init creates, or None.

    :param documents: the parsed ``cloud.cfg`` followed by the
        ``cloud.cfg.d/*.cfg`` files in name order, as cloud-init reads
        them: a later file wins, dictionaries merge key by key.
    :returns: the name from ``user`` (the old spelling) or
        ``system_info.default_user.name``, unless ``users`` leaves out
        ``default``; None when no name is configured.
    """
    config = {}
    for document in documents:
        config = _merge_config(document, config)
    users = config.get('users', ['default'])
    if isinstance(users, str):
        users = [u.strip() for u in users.split(',')]
    if not isinstance(users, list) or 'default' not in users:
        return None
    legacy = config.get('user')
    if isinstance(legacy, dict):
        legacy = legacy.get('name')
    if isinstance(legacy, str) and legacy:
        return legacy
    system_info = config.get('system_info')
    default_user = (system_info.get('default_user')
                    if isinstance(system_info, dict) else None)
    name = (default_user.get('name')
            if isinstance(default_user, dict) else None)
    return name if isinstance(name, str) and name else None


def _merge_config(high, low):
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_config(value, merged[key])
        else:
            merged[key] = value
    return merged
