"""Which drive each answer comes from, inside one shared appliance.

The kernel and libguestfs of an appliance see all its drives as one
machine, so an image's answer could come from another drive. Measured here
with libguestfs 1.48:

* ``inspect_os()`` resolves each guest's fstab (``LABEL=``, ``UUID=``,
  ``/dev/vda1``) across all drives: two images made from one base each
  got the other's partition as ``/``. libguestfs reads a root's distro,
  version and architecture from the root filesystem itself, and merges
  in only one other filesystem, a separate ``/usr`` found through the
  fstab. So a root is placed on the drive of its own device, and its
  answer is trusted only if its ``/usr`` (when separate) is on the same
  drive; everything the probes read is mounted from that drive only,
  never through another root's mountpoints.
* What the kernel keys by identifier hides one of two images outright:
  two LVM volume groups of the same name (every installer's default)
  made both roots vanish from ``inspect_os()``, and a cloned PV is
  ignored. LVM PVs and VG names, md arrays and btrfs filesystems that
  two drives share make those images *entangled*: the :class:`Census` of
  every partition's identifiers after launch finds them.

:func:`answer_drives` returns, per drive, its findings (from
:mod:`~qimgintrospect.inspectors.guest.probes`) or :data:`REDO_ALONE` for
an image that is entangled or whose answer may involve another drive; the
session inspects those again in an appliance of their own, where the
question cannot arise.
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

from oslo_log import log as logging

from qimgintrospect.inspectors.guest import appliance as appliance_mod
from qimgintrospect.inspectors.guest import probes
from qimgintrospect.inspectors.guest.probes import common
from qimgintrospect.inspectors.guest import stage

LOG = logging.getLogger(__name__)

#: Marks an image whose answer must come from an appliance of its own.
REDO_ALONE = object()

#: Where a volume group or md array that spans drives is placed: on no
#: single drive, so its roots are nobody's answer.
ELSEWHERE = -1

# GPT and MBR partition types of an EFI system partition (blkid spelling).
_ESP_TYPES = frozenset(['c12a7328-f81f-11d2-ba4b-00a0c93ec93b', '0xef'])
# blkid TYPEs whose UUID the appliance's kernel or LVM keys on: two drives
# with the same one are not independent.
_KERNEL_KEYED_TYPES = frozenset(['LVM2_member', 'linux_raid_member', 'btrfs',
                                 'zfs_member', 'ddf_raid_member',
                                 'isw_raid_member'])
_LV_RE = re.compile(r'^/dev/(?:mapper/)?([^/]+)/([^/]+)$')


def answer_drives(appliance):
    """Return, per drive of *appliance*, findings or :data:`REDO_ALONE`.

    :raises RuntimeError: a call that concerns every drive (the census,
        ``inspect_os``) was refused.
    :raises ApplianceLost: the appliance died or ran out of time.
    """
    census = Census(appliance)
    count = len(appliance.images)
    shared = count > 1
    answers = [None] * count
    clean = [k for k in range(count)
             if not (shared and k in census.entangled)]
    for k in set(range(count)) - set(clean):
        LOG.info('%s shares LVM, md or btrfs identifiers with another drive; '
                 'inspecting it alone', appliance.images[k].label)
        answers[k] = REDO_ALONE
    if not clean:
        return answers
    roots = appliance.call('inspect_os')
    placed = {root: census.drive_of(root, shared) for root in roots}
    if shared and None in placed.values():
        # A root we cannot place could belong to any drive.
        return [REDO_ALONE] * count
    for k in clean:
        mine = [root for root in roots if placed[root] == k]
        try:
            answers[k] = _drive_findings(appliance, census, k, mine, shared)
        except _Ambiguous as why:
            LOG.info('%s: %s; inspecting it alone',
                     appliance.images[k].label, why)
            answers[k] = REDO_ALONE
        except RuntimeError as err:
            # Only this image's calls failed; the appliance is alive.
            answers[k] = stage.findings(
                stage.FAILED, 'guest OS detection failed: %s'
                % appliance_mod.first_line(err))
    return answers


class _Ambiguous(Exception):
    """This drive's answer might involve another drive."""


def _drive_findings(appliance, census, k, roots, shared):
    """Findings for drive *k*, whose OS roots are *roots*."""
    if not roots:
        return probes.without_os(appliance, census.drive(k))
    if len(roots) > 1:
        names = ', '.join(relative(appliance, k, r) for r in roots)
        return dict(stage.findings(
            stage.COMPLETE, 'guest OS detection found %d operating systems '
            '(%s); OS properties not set' % (len(roots), names)),
            guest_roots=len(roots))
    root = roots[0]
    identity = probes.identify(appliance, root, relative(appliance, k, root))
    mountpoints = appliance.call('inspect_get_mountpoints', root)
    usr = mountpoints.get('/usr')
    if shared and usr is not None and census.drive_of(usr) != k:
        raise _Ambiguous('its /usr resolves to %s, outside its drive' % usr)
    if shared and identity.get('guest_distro') == 'coreos':
        raise _Ambiguous('CoreOS roots are merged across drives')
    boot = mountpoints.get('/boot')
    if shared and boot is not None and census.drive_of(boot) != k:
        raise _Ambiguous('its /boot resolves to %s, outside its drive'
                         % boot)
    return probes.look_inside(appliance, root, usr, boot, census.drive(k),
                              identity)


def relative(appliance, k, device):
    """*device* of drive *k* named as in an appliance of its own.

    So that batched and solo answers read the same: the third drive's
    /dev/sdc1 is /dev/sda1.
    """
    disk = appliance.devices[k]
    for prefix in ('', 'btrfsvol:'):
        if device.startswith(prefix + disk):
            return prefix + '/dev/sda' + device[len(prefix + disk):]
    return device


class Census(object):
    """Which drive every partition, LVM volume group and md array is on.

    Reads each partition's identifiers once (blkid) and finds the drives
    that are *entangled*: those sharing an identifier that the kernel or
    LVM keys on with another drive of the appliance.
    """

    def __init__(self, appliance):
        self.appliance = appliance
        self.devices = appliance.devices
        self.drive_of_device = {d: k for k, d in enumerate(self.devices)}
        self.blkid = {}
        self.entangled = set()
        self._vg_drive = {}
        self._md_drive = {}
        self._read_block_devices()
        keyed = self._keyed_identifiers()
        for drives in keyed.values():
            if len(drives) > 1:
                self.entangled |= drives
        if any(b.get('TYPE') == 'LVM2_member' for b in self.blkid.values()):
            self._place_volume_groups(keyed)
        if any(b.get('TYPE') == 'linux_raid_member'
               for b in self.blkid.values()):
            self._place_md_arrays()

    def _read_block_devices(self):
        partitions = [p for p in self.appliance.call('list_partitions')
                      if self._drive_of_partition(p) is not None]
        with_table = {self._drive_of_partition(p) for p in partitions}
        # A drive without partitions may hold a filesystem directly.
        bare = [d for k, d in enumerate(self.devices) if k not in with_table]
        for device in partitions + bare:
            try:
                self.blkid[device] = self.appliance.call('blkid', device)
            except RuntimeError:
                self.blkid[device] = {}
            self.drive_of_device[device] = self._drive_of_partition(device)

    def _drive_of_partition(self, device):
        if device in self.drive_of_device:
            return self.drive_of_device[device]
        for k, disk in enumerate(self.devices):
            if device.startswith(disk) and device[len(disk):].isdigit():
                return k
        return None

    def _keyed_identifiers(self):
        keyed = collections.defaultdict(set)
        for device, info in self.blkid.items():
            if info.get('TYPE') in _KERNEL_KEYED_TYPES and info.get('UUID'):
                key = (info['TYPE'], _plain_uuid(info['UUID']))
                keyed[key].add(self.drive_of_device[device])
        return keyed

    def _place_volume_groups(self, keyed):
        lvm_drives = {self.drive_of_device[d] for d, b in self.blkid.items()
                      if b.get('TYPE') == 'LVM2_member'}
        try:
            names = self.appliance.call('vgs')
            if len(names) != len(set(names)):
                # Two VGs of one name: LVM activates neither, and which
                # drive holds which is not knowable from here.
                self.entangled |= lvm_drives
                self._vg_drive.update((n, ELSEWHERE) for n in names)
                return
            for name in names:
                drives = set()
                for uuid in self.appliance.call('vgpvuuids', name):
                    drives |= keyed.get(('LVM2_member', _plain_uuid(uuid)),
                                        set())
                if len(drives) == 1:
                    self._vg_drive[name] = drives.pop()
                else:
                    self.entangled |= drives
                    self._vg_drive[name] = ELSEWHERE
        except RuntimeError as err:
            LOG.info('LVM census failed (%s); LVM drives are entangled',
                     appliance_mod.first_line(err))
            self.entangled |= lvm_drives

    def _place_md_arrays(self):
        try:
            for md in self.appliance.call('list_md_devices'):
                drives = set()
                for member in self.appliance.call('md_stat', md):
                    name = member['mdstat_device']
                    if not name.startswith('/dev/'):
                        name = '/dev/' + name
                    drives.add(self._drive_of_partition(name))
                if len(drives) == 1 and None not in drives:
                    self._md_drive[md] = drives.pop()
                else:
                    self.entangled |= drives - {None}
                    self._md_drive[md] = ELSEWHERE
        except RuntimeError as err:
            LOG.info('md census failed: %s', appliance_mod.first_line(err))

    def drive_of(self, mountable, shared=True):
        """Return the drive index holding *mountable*.

        None when it cannot be placed; :data:`ELSEWHERE` when it spans
        drives. With a single drive everything is on drive 0.
        """
        if not shared:
            return 0
        device = mountable
        if device.startswith('btrfsvol:'):
            device = self._btrfs_device(device[len('btrfsvol:'):])
        if device in self.drive_of_device:
            return self.drive_of_device[device]
        if device in self._md_drive:
            return self._md_drive[device]
        match = _LV_RE.match(device)
        if match and match.group(1) in self._vg_drive:
            return self._vg_drive[match.group(1)]
        return None

    def _btrfs_device(self, path):
        for device in sorted(self.drive_of_device, key=len, reverse=True):
            if path.startswith(device + '/'):
                return device
        return path

    def drive(self, k):
        """Drive *k* as the probes see it: its partitions' blkid answers."""
        partitions = collections.OrderedDict(
            (device, info) for device, info in sorted(self.blkid.items())
            if self.drive_of_device.get(device) == k)
        return common.Drive(
            self.devices[k], partitions,
            {d: relative(self.appliance, k, d) for d in partitions})

    def esp_partitions(self, k):
        """EFI system partitions (vfat) of drive *k*."""
        return sorted(
            device for device, info in self.blkid.items()
            if self.drive_of_device.get(device) == k
            and (info.get('PART_ENTRY_TYPE') or '').lower() in _ESP_TYPES
            and info.get('TYPE') == 'vfat')


def _plain_uuid(uuid):
    return uuid.replace('-', '').lower()
