"""One libguestfs appliance: launched boxed in, always shut down.

:class:`Appliance` is the only owner of a libguestfs handle. It adds the
drives read-only with their format forced to the one the header check
verified (never probed), without network, with its temporary files in a
private directory of the workspace slot; a :class:`Watchdog` kills its
qemu once ``launch_timeout`` (then ``inspect_timeout`` per drive) has
passed; and on exit, whatever happened, the appliance is shut down, its
qemu is gone and its temporary files are removed.

Which accelerator it runs under is the caller's choice (extra backend
settings such as ``force_tcg``, see
:mod:`~qimgintrospect.inspectors.guest.accelerator`); an appliance made
as a *probe* is verbose and is stopped as soon as its guest writes to the
console, or ``probe_timeout`` seconds after qemu started without it. Its
:class:`~qimgintrospect.inspectors.guest.console.Console` keeps the last
lines qemu and the guest wrote, which is what a failed launch reports.

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
from qimgintrospect.inspectors.guest import console as console_mod
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


#: How logs and messages name what an appliance ran under.
ACCELERATOR_NAMES = {
    'kvm': 'KVM',
    'tcg': 'software emulation (TCG)',
    'default': "libguestfs's default accelerator",
}

# libguestfs's words when it has nothing better to say.
_UNINFORMATIVE = ('guestfs_launch failed', 'child process died',
                  'appliance closed the connection')


class LaunchFailed(Exception):
    """The appliance did not start; *timed_out* when it was killed.

    :ivar reason: the message without the console's last lines or the
        accelerator.
    :ivar accelerator: what it was launched under (``kvm``, ``tcg``,
        ``default``).
    :ivar console: its :class:`~.console.Console`: what qemu and the guest
        wrote before it ended.
    """

    def __init__(self, message, timed_out, accelerator='default',
                 console=None, reason=None):
        super().__init__(message)
        self.message = message
        self.reason = reason or message
        self.timed_out = timed_out
        self.accelerator = accelerator
        self.console = console or console_mod.Console()

    @property
    def guest_spoke(self):
        """True when the guest itself wrote something: its CPU ran."""
        return self.console.life is not None


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
    :param accelerator: ``kvm``, ``tcg`` or ``default``: only names it in
        logs and errors; *settings* are what choose it.
    :param settings: backend settings added to the configured ones (for
        example ``['force_tcg']``).
    :param probe_timeout: make this a probe: verbose, stopped as soon as
        its guest writes to the console, or killed *probe_timeout* seconds
        after qemu started without a word. A probe never starts: entering
        it always raises :class:`LaunchFailed`, whose ``guest_spoke`` and
        ``console`` say what happened.
    :param verbose: libguestfs's verbose mode (always for a probe): the
        console then holds the firmware's and every kernel line, which is
        what a diagnosis wants; it slows a launch under emulation.
    :raises LaunchFailed: on entry, when the appliance did not start.

    Calls made with :meth:`call` raise RuntimeError when libguestfs
    refuses one call and :class:`ApplianceLost` when the appliance is
    dead or out of time.
    """

    def __init__(self, gfs, images, conf, workdir, accelerator='default',
                 settings=(), probe_timeout=None, verbose=False):
        self.gfs = gfs
        self.images = list(images)
        self.group = conf[opts.GUEST_GROUP]
        self.workdir = workdir
        self.accelerator = accelerator
        self.settings = list(settings)
        self.probe_timeout = probe_timeout
        self.verbose = verbose or bool(probe_timeout)
        self.console = console_mod.Console(
            on_qemu_start=self._qemu_started if probe_timeout else None,
            on_life=self._guest_spoke if probe_timeout else None)
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
            # A probe's kill is its answer, not an incident.
            self._watchdog = Watchdog(self._tmpdir,
                                      quiet=bool(self.probe_timeout))
            self._watchdog.arm(self.group.launch_timeout)
            g.launch()
        except RuntimeError as err:
            raise self._launch_failed(err)
        if self._watchdog.fired or self._watchdog.stopped_early:
            raise self._launch_failed(None)
        self._qemu = _process(g.get_pid())
        self.devices = g.list_devices()[:len(self.images)]
        self._watchdog.arm(self.group.inspect_timeout
                           * max(len(self.images), 1))
        LOG.info('libguestfs appliance over %d drive(s) up in %.1f s under '
                 '%s: %s', len(self.images), time.monotonic() - started,
                 ACCELERATOR_NAMES[self.accelerator],
                 ', '.join(i.label for i in self.images) or '(none)')

    def _configure(self, g):
        # The appliance's overlays stay in the workspace slot; the path
        # also tells the watchdog which qemu is ours.
        g.set_tmpdir(self._tmpdir)
        g.set_identifier('qimgintrospect')
        # qemu's own words reach this callback even without verbose mode:
        # they are what a failed launch reports.
        events = self.gfs.EVENT_APPLIANCE
        if self.verbose:
            # Verbose makes the firmware and kernel write to the console,
            # and libguestfs echo the qemu command line; its own debug
            # messages would go to stderr without a callback of their own.
            g.set_verbose(True)
            g.set_event_callback(_log_library_message,
                                 self.gfs.EVENT_LIBRARY
                                 | self.gfs.EVENT_WARNING)
        g.set_event_callback(self.console.event_callback, events)
        if self.group.backend:
            g.set_backend(self.group.backend)
        settings = list(self.group.backend_settings) or list(
            g.get_backend_settings())
        settings += [s for s in self.settings if s not in settings]
        if settings:
            g.set_backend_settings(settings)
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

    def _launch_failed(self, err):
        """The LaunchFailed for a launch that ended with *err*."""
        watchdog = self._watchdog
        timed_out = watchdog is not None and watchdog.fired
        if timed_out:
            why = 'past %s (%d s), killed' % (
                watchdog.reason, watchdog.seconds)
        elif watchdog is not None and watchdog.stopped_early:
            why = watchdog.reason
        else:
            why = first_line(err)
        said = self.console.describe()
        if said and why.startswith(_UNINFORMATIVE):
            why = 'qemu or its appliance ended before the launch completed'
            message = '%s: %s' % (why, said)
        elif said and timed_out:
            message = '%s; its last output: %s' % (why, said)
        else:
            message = why
        return LaunchFailed('%s [%s]' % (message, ACCELERATOR_NAMES[
            self.accelerator]), timed_out, self.accelerator, self.console,
            why)

    def _qemu_started(self, accelerators):
        # The probe's clock starts with qemu, not with libguestfs's own
        # preparations (building the appliance can take a minute).
        self._watchdog.arm(self.probe_timeout, 'accelerator_probe_timeout')

    def _guest_spoke(self, line):
        self._watchdog.kill_now('stopped once its guest wrote to the '
                                'console')

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

    :ivar fired: the deadline passed and qemu was killed.
    :ivar stopped_early: :meth:`kill_now` was called.
    :ivar reason: the name of the deadline that passed, or why
        :meth:`kill_now` was called.
    """

    def __init__(self, marker, quiet=False):
        self.marker = marker
        self.quiet = quiet
        self.fired = False
        self.stopped_early = False
        self.reason = None
        self.seconds = None
        self._deadline = None
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='guestfs-watchdog')
        self._thread.start()

    def arm(self, seconds, reason='launch_timeout'):
        """Fire *seconds* from now (replacing any earlier deadline).

        :param reason: the option the deadline comes from, for messages.
        """
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self.seconds = seconds
            self.reason = reason
            self._cond.notify()

    def kill_now(self, reason):
        """Kill qemu now (and until stopped), without it being a timeout."""
        with self._cond:
            if self.fired or self.stopped_early:
                return
            self.stopped_early = True
            self.reason = reason
            self._cond.notify()

    def stop(self):
        """Stop watching; returns once the watchdog thread has ended."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self):
        with self._cond:
            while not self._stopped and not self.stopped_early:
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
            while (self.fired or self.stopped_early) and not self._stopped:
                self._kill()
                self._cond.wait(_KILL_POLL)

    def _kill(self):
        for child in psutil.Process().children():
            try:
                if (child.name().startswith('qemu')
                        and any(self.marker in arg
                                for arg in child.cmdline())):
                    if self.fired:
                        LOG.log(logging.INFO if self.quiet else
                                logging.WARNING, 'killing libguestfs '
                                'appliance %d: past its deadline (%s, %d s)',
                                child.pid, self.reason, self.seconds)
                    else:
                        LOG.debug('killing libguestfs appliance %d: %s',
                                  child.pid, self.reason)
                    child.kill()
            except psutil.Error:
                continue


def _log_library_message(event, event_handle, buf, array):
    LOG.debug('libguestfs: %s', buf)


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
