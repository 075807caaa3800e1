"""One libguestfs appliance: launched boxed in, always shut down.

:class:`Appliance` is the only owner of a libguestfs handle. It adds the
drives read-only with their format forced to the one the header check
verified (never probed), without network, with its temporary files in a
private directory of the workspace slot; a :class:`Watchdog` kills its
qemu once ``launch_timeout`` (then ``inspect_timeout`` per drive) has
passed; and on exit, whatever happened, the appliance is shut down, its
qemu is gone and its temporary files are removed.

What can go wrong is one of two exceptions: :class:`LaunchFailed` (it
never started) and :class:`ApplianceLost` (it started, then died or ran
out of time); a call libguestfs refuses while the appliance lives stays a
``RuntimeError``.
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

import importlib
import shutil
import tempfile
import threading
import time

from oslo_log import log as logging
from oslo_utils import units
import psutil

from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

_KILL_POLL = 0.5
# An appliance launched without any image still needs one drive.
_SCRATCH_DRIVE = 16 * units.Mi

_binding = None
_binding_lock = threading.Lock()


def load_binding():
    """Import the libguestfs Python binding once; return the module.

    :raises ImportError: python3-guestfs is not installed (or not visible
        to this Python).
    :raises OSError: the binding's shared library cannot be loaded.
    """
    global _binding
    with _binding_lock:
        if _binding is None:
            _binding = importlib.import_module('guestfs')
        return _binding


class LaunchFailed(Exception):
    """The appliance did not start; *timed_out* when it was killed."""

    def __init__(self, message, timed_out):
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


class ApplianceLost(Exception):
    """The appliance died or was killed after it had started.

    :ivar error: the :class:`~qimgintrospect.exception.InspectionFailed`
        (guest-timeout or guest-appliance-failed) for the images that had
        no answer yet.
    """

    def __init__(self, error):
        super().__init__(error.message)
        self.error = error


class Appliance(object):
    """One libguestfs appliance over the drives of some images.

    :param gfs: the libguestfs binding (:func:`load_binding`).
    :param images: :class:`~qimgintrospect.inspectors.guest.GuestImage`
        list; none launches an appliance over a scratch drive only (the
        test of whether this host can launch one at all).
    :param conf: the options (``[introspection_guest]``).
    :param workdir: a private directory for the appliance's files.
    :raises LaunchFailed: on entry, when the appliance did not start.

    Calls made with :meth:`call` raise RuntimeError when libguestfs
    refuses one call and :class:`ApplianceLost` when the appliance is
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
            self._watchdog = Watchdog(self._tmpdir)
            self._watchdog.arm(self.group.launch_timeout)
            g.launch()
        except RuntimeError as err:
            raise LaunchFailed(self._why(err, 'launch_timeout'),
                               self._watchdog is not None
                               and self._watchdog.fired)
        if self._watchdog.fired:
            raise LaunchFailed('past launch_timeout', True)
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
                             format=diskformats.QEMU_DRIVERS[
                                 image.disk_format],
                             **_protocol(image))
        if not self.images:
            g.add_drive_scratch(_SCRATCH_DRIVE)

    def call(self, name, *args, **kwargs):
        """Run one libguestfs call on the handle.

        :raises RuntimeError: libguestfs refused this call; the appliance
            is still alive.
        :raises ApplianceLost: the appliance is dead or out of time.
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
            return ApplianceLost(exception.InspectionFailed(
                exception.GUEST_TIMEOUT,
                'the libguestfs appliance ran past inspect_timeout (%d s '
                'per drive) and was killed' % self.group.inspect_timeout))
        return ApplianceLost(exception.InspectionFailed(
            exception.GUEST_APPLIANCE_FAILED,
            'the libguestfs appliance died during inspection: %s'
            % first_line(err)))

    def _why(self, err, timeout_name):
        if self._watchdog is not None and self._watchdog.fired:
            return 'past %s (%d s), killed' % (
                timeout_name, getattr(self.group, timeout_name))
        return first_line(err)

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


class Watchdog(object):
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
        """Fire *seconds* from now (replacing any earlier deadline)."""
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._cond.notify()

    def stop(self):
        """Stop watching; returns once the watchdog thread has ended."""
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


def _protocol(image):
    """add_drive_opts arguments for where *image* is: a file, or NBD."""
    if image.server is None:
        return {}
    return {'protocol': 'nbd', 'server': list(image.server)}


def first_line(err):
    """The first line of a libguestfs error, for a one-line message."""
    text = str(err or 'appliance closed the connection').strip()
    return text.splitlines()[0] if text else text


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
