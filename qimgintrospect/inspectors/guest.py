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

"""What libguestfs finds inside checked workspace copies: the guest OS.

:func:`inspect_images` takes the copies of ONE owner (several images share
an appliance only when they share an owner; the caller groups them) and
returns, per image, raw findings in libguestfs's own terms
(``guest_distro='archlinux'``) or the error of that image alone;
:func:`qimgintrospect.normalise.guest_properties` maps them to Glance's
vocabulary.

The appliance is a small VM: it mounts the guest's filesystems, not this
host. :class:`Appliance` owns its handle: drives are added read-only with
their format forced to the one the header check verified (never probed),
there is no network, a watchdog kills its qemu past the timeouts, and it
is always shut down.

Isolation inside one appliance. The kernel and libguestfs of an appliance
see all its drives as one machine, so an image's answer could come from
another drive. Measured here with libguestfs 1.48:

* ``inspect_os()`` resolves each guest's fstab (``LABEL=``, ``UUID=``,
  ``/dev/vda1``) across all drives: two images made from one base each
  got the other's partition as ``/``. libguestfs reads a root's distro,
  version and architecture from the root filesystem itself, and merges
  in only one other filesystem, a separate ``/usr`` found through the
  fstab. So a root is placed on the drive of its own device, and its
  answer is trusted only if its ``/usr`` (when separate) is on the same
  drive; everything this module reads itself is mounted from that drive
  only, never through another root's mountpoints.
* What the kernel keys by identifier hides one of two images outright:
  two LVM volume groups of the same name (every installer's default)
  made both roots vanish from ``inspect_os()``, and a cloned PV is
  ignored. LVM PVs and VG names, md arrays and btrfs filesystems that
  two drives share make those images *entangled*: a census of every
  partition's identifiers after launch finds them.

An image that is entangled, or whose answer may involve another drive,
is inspected again in an appliance of its own, where the question cannot
arise; so is every image not yet answered when a shared appliance dies.
A launch that fails is blamed on the host only when an appliance without
any image fails too.
"""

import collections
import importlib
import re
import shutil
import tempfile
import threading
import time

from oslo_log import log as logging
import psutil
import yaml

from qimgintrospect import exception
from qimgintrospect import normalise
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

#: One image for the appliance: the workspace copy, its verified Glance
#: disk format, and a label for logs (the user's path).
GuestImage = collections.namedtuple('GuestImage',
                                    ['path', 'disk_format', 'label'])

#: Formats whose contents an appliance cannot read without a key.
UNREADABLE_FORMATS = frozenset(['luks'])

# GPT and MBR partition types of an EFI system partition (blkid spelling).
_ESP_TYPES = frozenset(['c12a7328-f81f-11d2-ba4b-00a0c93ec93b', '0xef'])
# blkid TYPEs whose UUID the appliance's kernel or LVM keys on: two drives
# with the same one are not independent.
_KERNEL_KEYED_TYPES = frozenset(['LVM2_member', 'linux_raid_member', 'btrfs',
                                 'zfs_member', 'ddf_raid_member',
                                 'isw_raid_member'])
_QEMU_GA_PATHS = ('/usr/bin/qemu-ga', '/usr/sbin/qemu-ga',
                  '/usr/libexec/qemu-ga', '/usr/local/bin/qemu-ga',
                  '/usr/local/sbin/qemu-ga', '/bin/qemu-ga', '/sbin/qemu-ga')
_WINDOWS_QEMU_GA = ('Program Files', 'Qemu-ga', 'qemu-ga.exe')
_OS_RELEASE_PATHS = ('/etc/os-release', '/usr/lib/os-release')
_CLOUD_CFG = '/etc/cloud/cloud.cfg'
_CLOUD_CFG_D = '/etc/cloud/cloud.cfg.d'
_CLOUD_DISABLED = '/etc/cloud/cloud-init.disabled'

# Bounds on what is read from a guest (it may be hostile).
_MAX_TEXT_FILE = 64 * 1024
_MAX_CONFIG_FILE = 256 * 1024
_MAX_CONFIG_FILES = 64
_MAX_EFI_ENTRIES = 64
_MAX_STRING = 255
_KILL_POLL = 0.5

_LV_RE = re.compile(r'^/dev/(?:mapper/)?([^/]+)/([^/]+)$')

#: Where a volume group or md array that spans drives is placed: on no
#: single drive, so its roots are nobody's answer.
_ELSEWHERE = -1

#: Seconds a host that could not launch an appliance without any image
#: is remembered, per configuration. Where KVM hangs, each launch waits
#: for launch_timeout: later inspections then skip the guest stage at once
#: (guest-unavailable) instead of waiting twice per batch.
HOST_FAILURE_TTL = 300

_binding = None
_binding_lock = threading.Lock()
_host_failures = {}
_host_failures_lock = threading.Lock()


def inspect_images(images, conf, workdir):
    """Inspect the guest OS of images of one owner.

    :param images: list of :class:`GuestImage`; they share appliances, so
        the caller must never mix owners.
    :param workdir: a private directory (the workspace slot) for the
        appliances' temporary files.
    :returns: a list, in the order of *images*, holding for each image
        either a findings dict (``guest_*`` keys, ``warnings``) or the
        :class:`~qimgintrospect.exception.IntrospectionError` of that image
        (guest-unavailable, guest-timeout, guest-appliance-failed). Never
        raises for one image's sake; no appliance outlives the call.
    """
    try:
        gfs = _load_binding()
    except (ImportError, OSError) as err:
        error = exception.InspectionFailed(
            exception.GUEST_UNAVAILABLE,
            'libguestfs Python binding (python3-guestfs) cannot be '
            'imported: %s' % err)
        return [error] * len(images)
    return _Session(gfs, images, conf, workdir).run()


def _load_binding():
    global _binding
    with _binding_lock:
        if _binding is None:
            _binding = importlib.import_module('guestfs')
        return _binding


class _Session(object):
    """Inspections of one call: shared appliance first, then solo ones."""

    def __init__(self, gfs, images, conf, workdir):
        self.gfs = gfs
        self.images = images
        self.conf = conf
        self.workdir = workdir
        self.outcomes = [None] * len(images)
        group = conf[opts.GUEST_GROUP]
        self._host_key = (group.backend, tuple(group.backend_settings),
                          group.memory_mb, group.launch_timeout)
        self._canary = None

    def run(self):
        readable = []
        for index, image in enumerate(self.images):
            if image.disk_format in UNREADABLE_FORMATS:
                self.outcomes[index] = {'warnings': [
                    'guest OS detection skipped: %s contents are encrypted'
                    % image.disk_format]}
            else:
                readable.append(index)
        if not readable:
            return self.outcomes
        for index in self._attempt(readable):
            # Alone in its appliance, no answer can involve another drive,
            # so this attempt leaves nothing to redo.
            self._attempt([index])
        return self.outcomes

    def _attempt(self, indexes):
        """Inspect *indexes* in one appliance; return those to redo alone."""
        images = [self.images[i] for i in indexes]
        host_failure = _recent_host_failure(self._host_key)
        if host_failure is not None:
            for i in indexes:
                self.outcomes[i] = host_failure
            return []
        retry = []
        try:
            with Appliance(self.gfs, images, self.conf,
                           self.workdir) as appliance:
                _forget_host_failure(self._host_key)
                answers = _inspect_drives(appliance)
                for position, answer in enumerate(answers):
                    if answer is _REDO_ALONE:
                        retry.append(indexes[position])
                    else:
                        self.outcomes[indexes[position]] = answer
        except _LaunchFailed as failed:
            retry = self._launch_failed(indexes, failed)
        except _ApplianceLost as lost:
            retry = self._lost(indexes, lost.error)
        except RuntimeError as err:
            # libguestfs refused a call that concerns every drive
            # (inspect_os, the census): the appliance is alive, but which
            # image caused it is not known.
            retry = self._lost(indexes, {'warnings': [
                'guest OS detection failed: %s' % _first_line(err)]})
        return retry

    def _lost(self, indexes, outcome):
        pending = [i for i in indexes if self.outcomes[i] is None]
        if len(indexes) == 1:
            self.outcomes[indexes[0]] = outcome
            return []
        LOG.warning('appliance over %d drives failed; inspecting the %d not '
                    'yet answered alone', len(indexes), len(pending))
        return pending

    def _launch_failed(self, indexes, failed):
        host_error = self._host_cannot_launch()
        if host_error:
            for i in indexes:
                self.outcomes[i] = host_error
            return []
        if len(indexes) > 1:
            LOG.warning('appliance over %d drives did not start (%s), one '
                        'without them does; inspecting each alone',
                        len(indexes), failed.message)
            return list(indexes)
        code = (exception.GUEST_TIMEOUT if failed.timed_out
                else exception.GUEST_APPLIANCE_FAILED)
        self.outcomes[indexes[0]] = exception.InspectionFailed(
            code, 'the libguestfs appliance did not start with this image '
                  'attached: %s' % failed.message)
        return []

    def _host_cannot_launch(self):
        """Launch an appliance with no image; return its error, if any.

        Tells a host that cannot run appliances at all (no kernel, broken
        KVM, bogus backend) from an image that breaks its appliance.
        """
        if self._canary is None:
            try:
                with Appliance(self.gfs, [], self.conf, self.workdir):
                    self._canary = False
            except _LaunchFailed as failed:
                self._canary = exception.InspectionFailed(
                    exception.GUEST_UNAVAILABLE,
                    'the libguestfs appliance cannot start on this host: %s'
                    % failed.message)
                _remember_host_failure(self._host_key, self._canary)
            except _ApplianceLost:
                self._canary = False
        return self._canary


def _recent_host_failure(key):
    with _host_failures_lock:
        when, error = _host_failures.get(key, (None, None))
        if when is not None and time.monotonic() - when < HOST_FAILURE_TTL:
            return error
        _host_failures.pop(key, None)
        return None


def _remember_host_failure(key, error):
    LOG.warning('%s; guest OS detection is skipped for %d s',
                error.message, HOST_FAILURE_TTL)
    with _host_failures_lock:
        _host_failures[key] = (time.monotonic(), error)


def _forget_host_failure(key):
    with _host_failures_lock:
        _host_failures.pop(key, None)


class _LaunchFailed(Exception):
    def __init__(self, message, timed_out):
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


class _ApplianceLost(Exception):
    """The appliance died or was killed after it had started."""

    def __init__(self, error):
        super().__init__(error.message)
        self.error = error


#: Marks an image whose answer must come from an appliance of its own.
_REDO_ALONE = object()


class Appliance(object):
    """One libguestfs appliance over the drives of some images.

    The context manager is the only owner of the libguestfs handle. On
    entry it launches the appliance (drives read-only, format forced, no
    network) under a watchdog that kills its qemu past
    ``launch_timeout``, then allows ``inspect_timeout`` per drive for the
    calls made inside the block. On exit, whatever happened, the appliance
    is shut down, its qemu is gone and its temporary files are removed.

    :raises _LaunchFailed: on entry, when the appliance did not start.
    Calls made with :meth:`call` raise RuntimeError when libguestfs
    refuses one call and :class:`_ApplianceLost` when the appliance is
    dead or out of time.
    """

    def __init__(self, gfs, images, conf, workdir):
        self.gfs = gfs
        self.images = list(images)
        self.group = conf[opts.GUEST_GROUP]
        self.workdir = workdir
        self.handle = None
        self.devices = []
        self._watchdog = None
        self._tmpdir = None
        self._qemu = None

    def __enter__(self):
        self._tmpdir = tempfile.mkdtemp(prefix='guestfs-', dir=self.workdir)
        try:
            self._launch()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, *exc_info):
        self._close()
        return False

    def _launch(self):
        started = time.monotonic()
        try:
            g = self.gfs.GuestFS(python_return_dict=True, close_on_exit=False)
            self.handle = g
            self._configure(g)
            self._watchdog = _Watchdog(self._tmpdir)
            self._watchdog.arm(self.group.launch_timeout)
            g.launch()
        except RuntimeError as err:
            raise _LaunchFailed(self._why(err, 'launch_timeout'),
                                self._watchdog is not None
                                and self._watchdog.fired)
        if self._watchdog.fired:
            raise _LaunchFailed('past launch_timeout', True)
        self._qemu = _process(g.get_pid())
        self.devices = g.list_devices()[:len(self.images)]
        self._watchdog.arm(self.group.inspect_timeout
                           * max(len(self.images), 1))
        LOG.info('libguestfs appliance over %d drive(s) up in %.1f s: %s',
                 len(self.images), time.monotonic() - started,
                 ', '.join(i.label for i in self.images) or '(none)')

    def _configure(self, g):
        # The appliance's overlays stay in the workspace slot; the path
        # also tells the watchdog which qemu is ours.
        g.set_tmpdir(self._tmpdir)
        g.set_identifier('qimgintrospect')
        if self.group.backend:
            g.set_backend(self.group.backend)
        if self.group.backend_settings:
            g.set_backend_settings(self.group.backend_settings)
        g.set_network(False)
        g.set_memsize(self.group.memory_mb)
        g.set_autosync(False)
        for image in self.images:
            g.add_drive_opts(image.path, readonly=True,
                             format=normalise.QEMU_DRIVERS[image.disk_format])
        if not self.images:
            g.add_drive_scratch(16 * 1024 * 1024)

    def call(self, name, *args, **kwargs):
        """Run one libguestfs call on the handle.

        :raises RuntimeError: libguestfs refused this call; the appliance
            is still alive.
        :raises _ApplianceLost: the appliance is dead or out of time.
        """
        if self._watchdog.fired:
            raise self._lost(None)
        try:
            return getattr(self.handle, name)(*args, **kwargs)
        except RuntimeError as err:
            if self._watchdog.fired or not _alive(self._qemu):
                raise self._lost(err)
            raise

    def _lost(self, err):
        if self._watchdog.fired:
            return _ApplianceLost(exception.InspectionFailed(
                exception.GUEST_TIMEOUT,
                'the libguestfs appliance ran past inspect_timeout (%d s '
                'per drive) and was killed' % self.group.inspect_timeout))
        return _ApplianceLost(exception.InspectionFailed(
            exception.GUEST_APPLIANCE_FAILED,
            'the libguestfs appliance died during inspection: %s'
            % _first_line(err)))

    def _why(self, err, timeout_name):
        if self._watchdog is not None and self._watchdog.fired:
            return 'past %s (%d s), killed' % (
                timeout_name, getattr(self.group, timeout_name))
        return _first_line(err)

    def _close(self):
        g, self.handle = self.handle, None
        try:
            if g is not None:
                if _alive(self._qemu) and not (
                        self._watchdog and self._watchdog.fired):
                    try:
                        g.shutdown()
                    except RuntimeError as err:
                        LOG.debug('appliance shutdown: %s', err)
                g.close()
        finally:
            if self._watchdog is not None:
                self._watchdog.stop()
            if self._tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None


class _Watchdog(object):
    """Kills the appliance's qemu once its deadline has passed.

    The qemu is found among this process's children by *marker* (the
    appliance's private temporary directory, on its command line), so
    the watchdog can act while the launching thread is blocked inside
    libguestfs, even before libguestfs knows the pid. Killing qemu makes
    the blocked call fail.
    """

    def __init__(self, marker):
        self.marker = marker
        self.fired = False
        self._deadline = None
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='guestfs-watchdog')
        self._thread.start()

    def arm(self, seconds):
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._cond.notify()

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self):
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    self.fired = True
                    break
                self._cond.wait(remaining)
            # Keep killing until stopped: qemu may not exist yet when the
            # deadline passes (libguestfs builds its appliance first).
            while self.fired and not self._stopped:
                self._kill()
                self._cond.wait(_KILL_POLL)

    def _kill(self):
        for child in psutil.Process().children():
            try:
                if (child.name().startswith('qemu')
                        and any(self.marker in arg
                                for arg in child.cmdline())):
                    LOG.warning('killing libguestfs appliance %d: past its '
                                'deadline', child.pid)
                    child.kill()
            except psutil.Error:
                continue


def _process(pid):
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _alive(process):
    if process is None:
        return False
    try:
        return (process.is_running()
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _first_line(err):
    text = str(err or 'appliance closed the connection').strip()
    return text.splitlines()[0] if text else text


# The inspection proper, in one launched appliance.

def _inspect_drives(appliance):
    """Return, per drive of *appliance*, findings or :data:`_REDO_ALONE`."""
    census = _Census(appliance)
    count = len(appliance.images)
    shared = count > 1
    answers = [None] * count
    clean = [k for k in range(count)
             if not (shared and k in census.entangled)]
    for k in set(range(count)) - set(clean):
        LOG.info('%s shares LVM, md or btrfs identifiers with another drive; '
                 'inspecting it alone', appliance.images[k].label)
        answers[k] = _REDO_ALONE
    if not clean:
        return answers
    roots = appliance.call('inspect_os')
    placed = {root: census.drive_of(root, shared) for root in roots}
    if shared and None in placed.values():
        # A root we cannot place could belong to any drive.
        return [_REDO_ALONE] * count
    for k in clean:
        mine = [root for root in roots if placed[root] == k]
        try:
            answers[k] = _image_findings(appliance, census, k, mine, shared)
        except _Ambiguous as why:
            LOG.info('%s: %s; inspecting it alone',
                     appliance.images[k].label, why)
            answers[k] = _REDO_ALONE
        except RuntimeError as err:
            # Only this image's calls failed; the appliance is alive.
            answers[k] = {'warnings': ['guest OS detection failed: %s'
                                       % _first_line(err)]}
    return answers


class _Ambiguous(Exception):
    """This drive's answer might involve another drive."""


class _Census(object):
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
                self._vg_drive.update((n, _ELSEWHERE) for n in names)
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
                    self._vg_drive[name] = _ELSEWHERE
        except RuntimeError as err:
            LOG.info('LVM census failed (%s); LVM drives are entangled',
                     _first_line(err))
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
                    self._md_drive[md] = _ELSEWHERE
        except RuntimeError as err:
            LOG.info('md census failed: %s', _first_line(err))

    def drive_of(self, mountable, shared=True):
        """Return the drive index holding *mountable*.

        None when it cannot be placed; :data:`_ELSEWHERE` when it spans
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

    def esp_partitions(self, k):
        """EFI system partitions (vfat) of drive *k*."""
        return sorted(
            device for device, info in self.blkid.items()
            if self.drive_of_device.get(device) == k
            and (info.get('PART_ENTRY_TYPE') or '').lower() in _ESP_TYPES
            and info.get('TYPE') == 'vfat')


def _plain_uuid(uuid):
    return uuid.replace('-', '').lower()


def _image_findings(appliance, census, k, roots, shared):
    """Findings for drive *k*, whose OS roots are *roots*."""
    if not roots:
        return {'guest_roots': 0}
    if len(roots) > 1:
        names = ', '.join(_relative(appliance, k, r) for r in roots)
        return {'guest_roots': len(roots), 'warnings': [
            'guest OS detection found %d operating systems (%s); OS '
            'properties not set' % (len(roots), names)]}
    root = roots[0]
    findings = _libguestfs_answers(appliance, root)
    findings['guest_root'] = _relative(appliance, k, root)
    mountpoints = appliance.call('inspect_get_mountpoints', root)
    usr = mountpoints.get('/usr')
    if shared and usr is not None and census.drive_of(usr) != k:
        raise _Ambiguous('its /usr resolves to %s, outside its drive' % usr)
    if shared and findings.get('guest_distro') == 'coreos':
        raise _Ambiguous('CoreOS roots are merged across drives')
    warnings = []
    findings.update(_look_inside(appliance, root, usr,
                                 findings['guest_os_type'], warnings))
    loaders = _efi_loaders(appliance, census.esp_partitions(k), warnings)
    findings['guest_firmware'] = 'uefi' if loaders else 'bios'
    if loaders:
        findings['guest_efi_loaders'] = loaders
    findings['warnings'] = warnings
    return findings


def _libguestfs_answers(appliance, root):
    def ask(name, kind=str):
        try:
            value = appliance.call('inspect_get_' + name, root)
        except RuntimeError:
            return None
        if kind is str:
            value = _text(value)
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
    return answers


def _relative(appliance, k, device):
    # Name a device as it would be in an appliance of its own, so that
    # batched and solo answers read the same: the third drive's
    # /dev/sdc1 is /dev/sda1.
    disk = appliance.devices[k]
    for prefix in ('', 'btrfsvol:'):
        if device.startswith(prefix + disk):
            return prefix + '/dev/sda' + device[len(prefix + disk):]
    return device


def _look_inside(appliance, root, usr, os_type, warnings):
    """Mount the root (and its /usr, on the same drive) read-only; read."""
    found = {}
    appliance.call('umount_all')
    try:
        appliance.call('mount_ro', root, '/')
    except RuntimeError as err:
        warnings.append('guest root could not be mounted to look for '
                        'cloud-init and the guest agent: %s'
                        % _first_line(err))
        return found
    try:
        if usr is not None and _is_dir(appliance, '/usr'):
            try:
                appliance.call('mount_ro', usr, '/usr')
            except RuntimeError as err:
                warnings.append('guest /usr could not be mounted: %s'
                                % _first_line(err))
        if os_type == 'windows':
            found['guest_qemu_guest_agent'] = _windows_has_guest_agent(
                appliance)
            return found
        found.update(_os_release(appliance))
        found.update(_cloud_init(appliance, warnings))
        found['guest_qemu_guest_agent'] = any(
            _is_file(appliance, path) for path in _QEMU_GA_PATHS)
        return found
    finally:
        appliance.call('umount_all')


def _is_file(appliance, path):
    try:
        return appliance.call('is_file', path, followsymlinks=True)
    except RuntimeError:
        return False


def _is_dir(appliance, path):
    try:
        return appliance.call('is_dir', path, followsymlinks=True)
    except RuntimeError:
        return False


def _read_small(appliance, path, limit):
    """The bytes of a guest file of at most *limit* bytes, else None."""
    try:
        if not appliance.call('is_file', path, followsymlinks=True):
            return None
        if appliance.call('filesize', path) > limit:
            return None
        return appliance.call('read_file', path)
    except RuntimeError:
        return None


def _os_release(appliance):
    for path in _OS_RELEASE_PATHS:
        data = _read_small(appliance, path, _MAX_TEXT_FILE)
        if data is not None:
            fields = parse_os_release(data)
            found = {}
            if fields.get('ID'):
                found['guest_os_release_id'] = _text(fields['ID'])
            if fields.get('VERSION_ID'):
                found['guest_version_id'] = _text(fields['VERSION_ID'])
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
    if not _is_file(appliance, _CLOUD_CFG):
        return {}
    found = {'guest_cloud_init': ('disabled'
                                  if _is_file(appliance, _CLOUD_DISABLED)
                                  else 'enabled')}
    paths = [_CLOUD_CFG]
    if _is_dir(appliance, _CLOUD_CFG_D):
        try:
            names = sorted(n for n in appliance.call('ls', _CLOUD_CFG_D)
                           if n.endswith('.cfg'))
        except RuntimeError:
            names = []
        if len(names) > _MAX_CONFIG_FILES:
            warnings.append('cloud-init: only the first %d of %d files in '
                            '%s were read' % (_MAX_CONFIG_FILES, len(names),
                                              _CLOUD_CFG_D))
        paths += ['%s/%s' % (_CLOUD_CFG_D, n)
                  for n in names[:_MAX_CONFIG_FILES]]
    documents = []
    for path in paths:
        data = _read_small(appliance, path, _MAX_CONFIG_FILE)
        try:
            document = yaml.safe_load(data) if data else None
        except (yaml.YAMLError, RecursionError, ValueError) as err:
            warnings.append('cloud-init: %s is not valid YAML: %s'
                            % (path, _first_line(err)))
            continue
        if isinstance(document, dict):
            documents.append(document)
    user = cloud_init_default_user(documents)
    if user is not None:
        found['guest_cloud_init_user'] = _text(str(user))
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


def _windows_has_guest_agent(appliance):
    path = '/' + '/'.join(_WINDOWS_QEMU_GA)
    try:
        # NTFS names are case-insensitive; the appliance's are not.
        return _is_file(appliance,
                        appliance.call('case_sensitive_path', path))
    except RuntimeError:
        return False


def _efi_loaders(appliance, partitions, warnings):
    """EFI loaders (``/EFI/<dir>/<name>.efi``) on the given ESPs."""
    loaders = []
    for partition in partitions:
        appliance.call('umount_all')
        try:
            appliance.call('mount_ro', partition, '/')
        except RuntimeError as err:
            warnings.append('EFI system partition could not be mounted: %s'
                            % _first_line(err))
            continue
        try:
            loaders += _loaders_on_mounted_esp(appliance)
        finally:
            appliance.call('umount_all')
    return sorted(set(loaders))[:_MAX_EFI_ENTRIES]


def _loaders_on_mounted_esp(appliance):
    found = []
    efi = _child_named(appliance, '/', 'efi')
    if efi is None:
        return found
    for vendor in _listing(appliance, efi)[:_MAX_EFI_ENTRIES]:
        directory = '%s/%s' % (efi, vendor)
        if not _is_dir(appliance, directory):
            continue
        for name in _listing(appliance, directory)[:_MAX_EFI_ENTRIES]:
            path = '%s/%s' % (directory, name)
            if name.lower().endswith('.efi') and _is_file(appliance, path):
                found.append(_text(path))
    return found


def _child_named(appliance, directory, name):
    # FAT is case-insensitive: firmware finds \EFI\BOOT whatever the case.
    for entry in _listing(appliance, directory):
        if entry.lower() == name:
            return directory.rstrip('/') + '/' + entry
    return None


def _listing(appliance, directory):
    try:
        return sorted(appliance.call('ls', directory))
    except RuntimeError:
        return []


def _text(value):
    """A guest-supplied string made safe to print: printable, bounded."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode('utf-8', 'replace')
    value = ''.join(c for c in str(value) if c.isprintable())
    return value[:_MAX_STRING]
