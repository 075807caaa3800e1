"""What is inside one guest: libguestfs's identification, then our probes.

Two steps per OS root, so that the census can vouch for a root between
them (:mod:`~qimgintrospect.inspectors.guest.census`):

1. :func:`identify` asks libguestfs who the OS is (type, distribution,
   version, architecture), as it read them from the root itself;
2. :func:`look_inside` mounts that root read-only (with its ``/usr`` and
   ``/boot`` when separate), runs the probe module of its family
   (:mod:`.linux` for Linux and other Unix-likes, :mod:`.windows`), then
   :mod:`.firmware` on the drive's own boot structures, and
   :mod:`.unbootable` on what they found. A drive without an OS root goes
   to :func:`without_os` (a BitLocker system volume is such a drive).

A family module reads only its own evidence and returns plain findings in
the guest's terms (``guest_*`` keys); :mod:`qimgintrospect.normalise` maps
them to Glance's vocabulary. New OS knowledge is a new module here.
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

from qimgintrospect.inspectors.guest import appliance as appliance_mod
from qimgintrospect.inspectors.guest.probes import common
from qimgintrospect.inspectors.guest.probes import firmware
from qimgintrospect.inspectors.guest.probes import linux
from qimgintrospect.inspectors.guest.probes import unbootable
from qimgintrospect.inspectors.guest.probes import windows
from qimgintrospect.inspectors.guest import stage

#: libguestfs OS type -> the probe of that family; any other type (the
#: BSDs, hurd, ...) is Unix-like and gets the Linux probe.
_FAMILIES = {'windows': windows.probe}


def identify(appliance, root, root_name):
    """libguestfs's answers about the OS at *root*, as findings.

    :param root_name: the root's device as named in an appliance of its
        own (``guest_root``).
    """
    def ask(name, kind=str):
        try:
            value = appliance.call('inspect_get_' + name, root)
        except RuntimeError:
            return None
        if kind is str:
            value = common.text(value)
            return None if value in (None, 'unknown') else value
        return value

    # Each answer is a round trip to the appliance (tens of ms under
    # emulation; inspect_get_osinfo several hundred): ask only for what
    # becomes a property or helps a person read the result.
    answers = {
        'guest_roots': 1,
        'guest_os_type': ask('type') or 'unknown',
        'guest_distro': ask('distro'),
        'guest_major_version': ask('major_version', int),
        'guest_minor_version': ask('minor_version', int),
        'guest_arch': ask('arch'),
        'guest_product_name': ask('product_name'),
        'guest_hostname': ask('hostname'),
    }
    if answers['guest_os_type'] == 'windows':
        answers['guest_product_variant'] = ask('product_variant')
    answers['guest_root'] = root_name
    return answers


def look_inside(appliance, root, usr, boot, drive, identity):
    """*identity* completed with what the family and firmware probes find.

    :param usr: the device of the guest's separate ``/usr``, or None.
    :param boot: the device of the guest's separate ``/boot``, or None.
    :param drive: the root's :class:`~.common.Drive`.
    :returns: the findings, with a ``warnings`` list; or the
        :class:`~qimgintrospect.exception.ImageRefused` of a guest that
        cannot boot, when ``refuse_unbootable`` says so.
    """
    findings = dict(identity)
    warnings = []
    findings.update(_mounted(appliance, root, usr, boot,
                             identity['guest_os_type'], warnings))
    return _finish(appliance, drive, findings, warnings)


def without_os(appliance, drive):
    """The findings of a drive on which libguestfs found no OS root.

    Its boot loaders and BitLocker volumes still say something: a
    Windows whose system volume is encrypted is such a drive.
    """
    return _finish(appliance, drive, {'guest_roots': 0}, [])


def _finish(appliance, drive, findings, warnings):
    findings.update(firmware.probe(appliance, drive, warnings))
    volumes = unbootable.bitlocker_volumes(drive)
    if volumes:
        findings['guest_bitlocker_volumes'] = volumes
    findings[stage.KEY] = stage.COMPLETE
    findings['warnings'] = warnings
    group = getattr(appliance, 'group', None)
    return unbootable.judge(findings, bool(
        group is not None and group.refuse_unbootable))


def _mounted(appliance, root, usr, boot, os_type, warnings):
    """Mount the root (its /usr and /boot, on the same drive) read-only."""
    appliance.call('umount_all')
    try:
        appliance.call('mount_ro', root, '/')
    except RuntimeError as err:
        warnings.append('guest root could not be mounted to look for '
                        'cloud-init and the guest agent: %s'
                        % appliance_mod.first_line(err))
        return {}
    try:
        for device, mountpoint in ((usr, '/usr'), (boot, '/boot')):
            if device is None or device == root or not common.is_dir(
                    appliance, mountpoint):
                continue
            try:
                appliance.call('mount_ro', device, mountpoint)
            except RuntimeError as err:
                warnings.append('guest %s could not be mounted: %s'
                                % (mountpoint,
                                   appliance_mod.first_line(err)))
        return _FAMILIES.get(os_type, linux.probe)(appliance, warnings)
    finally:
        appliance.call('umount_all')
