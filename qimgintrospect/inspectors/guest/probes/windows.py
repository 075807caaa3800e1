"""Windows guests: the registry and the files of the mounted system volume.

Reads, with hivex in the appliance (:mod:`.registry`):

* from SOFTWARE, the product: ``CurrentBuildNumber``, ``InstallationType``
  and ``EditionID`` (:mod:`.windows_versions`; ``ProductName`` is kept
  for people only: Windows 11 still calls itself Windows 10);
* from SYSTEM, in the current control set (``Select\\Current``): the
  QEMU guest agent's and cloudbase-init's services, Fast Startup
  (``Control\\Session Manager\\Power\\HiberbootEnabled``), and the
  storage and network drivers the guest can boot with
  (:mod:`.devices`);

and from the files: cloudbase-init's configuration (the ``--config-file``
its service runs with), ``hiberfil.sys``'s signature. Returns plain
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

import configparser
import re

from qimgintrospect.inspectors.guest.probes import common
from qimgintrospect.inspectors.guest.probes import devices
from qimgintrospect.inspectors.guest.probes import registry
from qimgintrospect.inspectors.guest.probes import windows_versions

SOFTWARE = '/Windows/System32/config/SOFTWARE'
SYSTEM = '/Windows/System32/config/SYSTEM'
_CURRENT_VERSION = 'Microsoft\\Windows NT\\CurrentVersion'

#: Start values of a service (Services\\<name>\\Start).
DISABLED = 4

#: The QEMU guest agent's service: ``QEMU-GA`` as its MSI installs it
#: (qga/installer/qemu-ga.wxs), ``qemu-ga`` as ``qemu-ga -s install``
#: registers it (qga/service-win32.h); the executable the MSI installs.
QEMU_GA_SERVICES = ('QEMU-GA', 'qemu-ga')
QEMU_GA_FILE = '/Program Files/Qemu-ga/qemu-ga.exe'

#: cloudbase-init: its service (cloudbaseinit/osutils/windows.py), the
#: configuration its installer writes, and its own default for
#: ``username`` (cloudbaseinit/conf/default.py).
CLOUDBASE_INIT_SERVICE = 'cloudbase-init'
CLOUDBASE_INIT_CONF = ('/Program Files/Cloudbase Solutions/Cloudbase-Init/'
                       'conf/cloudbase-init.conf')
CLOUDBASE_INIT_DEFAULT_USER = 'Admin'
_CONFIG_FILE_RE = re.compile(r'--config-file[= ]+(?:"([^"]+)"|(\S+))',
                             re.IGNORECASE)

#: hiberfil.sys signatures (libyal libhibr): a hibernated system
#: (``hibr`` up to XP, ``HIBR`` from Vista, also Windows 8+ Fast Startup's
#: hybrid shutdown) or a resume in progress (``RSTR``); ``wake``/``WAKE``
#: and a zeroed page are what a resumed or cleanly shut down one leaves.
HIBERNATED_SIGNATURES = frozenset([b'hibr', b'HIBR', b'RSTR'])
CLEAN_SIGNATURES = frozenset([b'wake', b'WAKE', b'\0\0\0\0'])


def probe(appliance, warnings):
    """Findings of the guest whose system volume is mounted at ``/``.

    :param warnings: list the probe appends what a person should know to.
    """
    found = {}
    with registry.Hive(appliance, SOFTWARE) as software:
        found.update(_product(software, warnings))
    with registry.Hive(appliance, SYSTEM) as system:
        control_set = _control_set(system)
        if control_set is not None:
            found['guest_windows_control_set'] = control_set
            found.update(_guest_agent(appliance, system, control_set))
            found.update(_cloudbase_init(appliance, system, control_set,
                                         warnings))
            found['guest_fast_startup'] = system.value(
                control_set + '\\Control\\Session Manager\\Power',
                'HiberbootEnabled') == 1
            found.update(devices.windows(appliance, system, control_set))
    found.update(_hibernation(appliance))
    return found


def _product(software, warnings):
    if not software.opened:
        warnings.append('Windows: the SOFTWARE hive could not be read; '
                        'os_version not set')
        return {}
    values = {name: software.value(_CURRENT_VERSION, name) for name in (
        'CurrentBuildNumber', 'CurrentBuild', 'InstallationType',
        'EditionID', 'DisplayVersion', 'ReleaseId', 'ProductName')}
    build = values['CurrentBuildNumber'] or values['CurrentBuild']
    found = {
        'guest_windows_build': build,
        'guest_windows_installation_type': values['InstallationType'],
        'guest_windows_edition_id': values['EditionID'],
        'guest_windows_display_version': (values['DisplayVersion']
                                          or values['ReleaseId']),
    }
    product, why = windows_versions.product(
        build, values['InstallationType'], values['EditionID'])
    if product is None:
        found['guest_windows_product'] = None
        warnings.append('Windows: %s; os_version not set' % why)
        return found
    found.update({
        'guest_windows_product': product.name,
        'guest_windows_version': product.version,
        'guest_windows_server': product.server,
        'guest_osinfo': product.osinfo,
        'guest_vmware_guest_id': product.vmware,
    })
    return found


def _control_set(system):
    current = system.value('Select', 'Current')
    if not isinstance(current, int) or not 0 < current < 1000:
        return None
    return 'ControlSet%03d' % current


def _service(system, control_set, name):
    """(Start value, ImagePath) of a service; (None, None) when absent."""
    key = '%s\\Services\\%s' % (control_set, name)
    if not system.has_key(key):
        return None, None
    return system.value(key, 'Start'), system.value(key, 'ImagePath')


def _guest_agent(appliance, system, control_set):
    for name in QEMU_GA_SERVICES:
        start, _ = _service(system, control_set, name)
        if start is not None:
            break
    found = {'guest_qemu_guest_agent_file': common.windows_path(
        appliance, QEMU_GA_FILE) is not None}
    if start is not None:
        found['guest_qemu_guest_agent_service_start'] = start
    # The service is what runs it: present and not disabled.
    found['guest_qemu_guest_agent'] = start is not None and start != DISABLED
    return found


def _cloudbase_init(appliance, system, control_set, warnings):
    start, image_path = _service(system, control_set, CLOUDBASE_INIT_SERVICE)
    if start is None:
        return {}
    found = {'guest_cloudbase_init': ('disabled' if start == DISABLED
                                      else 'enabled')}
    path = config_file_of(image_path) or CLOUDBASE_INIT_CONF
    real = common.windows_path(appliance, path)
    data = (common.read_small(appliance, real, common.MAX_CONFIG_FILE)
            if real else None)
    if data is None:
        warnings.append('cloudbase-init: its configuration %s could not be '
                        'read; os_admin_user not set' % path)
        return found
    found['guest_cloudbase_init_config'] = common.text(real)
    user = cloudbase_init_user(data)
    if user is None:
        warnings.append('cloudbase-init: %s is not a configuration file it '
                        'can read; os_admin_user not set' % path)
    else:
        found['guest_cloudbase_init_user'] = user
    return found


def config_file_of(image_path):
    """The guest path of ``--config-file`` in a service's ImagePath.

    :returns: a path on the mounted C: volume (``/Program Files/...``),
        or None when there is none or it is on another drive.
    """
    match = _CONFIG_FILE_RE.search(image_path or '')
    if not match:
        return None
    path = (match.group(1) or match.group(2)).replace('\\', '/')
    if not path.lower().startswith('c:/'):
        return None
    return path[2:]


def cloudbase_init_user(data):
    """The account cloudbase-init's configuration *data* (bytes) creates.

    ``[DEFAULT] username``, else cloudbase-init's own default ``Admin``.
    None when *data* is not an INI file Python's configparser reads (a
    configuration cloudbase-init's own oslo.config parser would refuse
    too).
    """
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       default_section='DEFAULT')
    parser.optionxform = str  # oslo.config option names keep their case
    try:
        parser.read_string(data.decode('utf-8-sig', 'replace'))
    except (configparser.Error, ValueError):
        return None
    user = parser.defaults().get('username')
    if user is None:
        return CLOUDBASE_INIT_DEFAULT_USER
    return common.text(user.strip().strip('"\''))


def hibernation_state(signature):
    """``hibernated``, ``clean`` or ``unknown`` for hiberfil.sys's 4 bytes."""
    if signature in HIBERNATED_SIGNATURES:
        return 'hibernated'
    if signature in CLEAN_SIGNATURES:
        return 'clean'
    return 'unknown'


def _hibernation(appliance):
    path = common.windows_path(appliance, '/hiberfil.sys')
    if path is None:
        return {'guest_hiberfil': None}
    head = common.pread(appliance, path, 4) or b''
    return {'guest_hiberfil': hibernation_state(head),
            'guest_hiberfil_signature': common.text(
                head.decode('latin-1')) if head.strip(b'\0') else ''}
