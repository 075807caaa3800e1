"""KVM or software emulation: which one the appliances of this host use.

libguestfs asks qemu for ``accel=kvm:tcg``, and qemu falls back to
software emulation (TCG) only when KVM cannot even initialise. Inside
many VMs ``/dev/kvm`` exists but nested KVM is broken: qemu aborts
(``failed to set MSR 0x10a``) or the guest hangs without a word, and
every launch would wait for ``launch_timeout``. So with ``[introspection_
guest] accelerator = auto`` (the default) the host is asked first, once:

* the **probe** is an appliance without any image started under KVM
  only (``force_kvm``) in verbose mode, stopped as soon as its guest
  writes to the console (the firmware's banner, a fraction of a second
  after qemu starts where KVM works), or killed ``accelerator_probe_
  timeout`` seconds after qemu started without a word, or found dead
  (qemu aborted): then KVM is unusable and appliances run under TCG,
  with a warning that says why;
* its :class:`~qimgintrospect.inspectors.guest.verdicts.Verdict` is kept
  in the workspace (:mod:`~qimgintrospect.inspectors.guest.verdicts`),
  so later processes do not probe again until the host changes;
* should an appliance launched under KVM later fail without its guest
  ever writing a word (KVM broke since the verdict), the probe runs
  again, and if KVM is now unusable the same appliance, all its drives,
  is launched again under TCG (:class:`Launcher`).

No probe runs when the choice is made already: ``accelerator = kvm`` or
``tcg`` (``force_kvm``/``force_tcg``), ``backend_settings`` (or
``LIBGUESTFS_BACKEND_SETTINGS``) holding ``force_kvm`` or ``force_tcg``
(those win over ``accelerator``), no usable ``/dev/kvm`` (TCG), or a
backend other than ``direct`` (libguestfs's default: only the direct
backend runs qemu as a child of this process, which the probe watches).
A probe that cannot even start qemu (no kernel for supermin, a broken
libguestfs) decides nothing: libguestfs's default is used, and the
session's canary tells the host's failure from the image's.
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
import contextlib
import os
import tempfile
import threading
import time

from oslo_log import log as logging

from qimgintrospect.inspectors.guest import appliance as appliance_mod
from qimgintrospect.inspectors.guest import verdicts
from qimgintrospect import opts
from qimgintrospect import progress

LOG = logging.getLogger(__name__)

AUTO = 'auto'
KVM = 'kvm'
TCG = 'tcg'
#: libguestfs's own choice (``accel=kvm:tcg``), not probed.
DEFAULT = 'default'

#: What to launch appliances with. ``accelerator``: ``kvm``, ``tcg`` or
#: ``default``; ``settings``: backend settings to add; ``verdict``: the
#: probe's Verdict it follows (None when nothing was probed); ``why``:
#: what decided it, for logs.
Plan = collections.namedtuple('Plan', ['accelerator', 'settings', 'verdict',
                                       'why'])

_KVM_DEVICE = '/dev/kvm'
# Labels of appliances without any image, in progress events.
PROBE_LABEL = '(KVM probe)'
HOST_CHECK_LABEL = '(no image: host check)'

_warned = set()
_warned_lock = threading.Lock()


def kvm_usable():
    """Whether /dev/kvm exists and this process may open it."""
    return os.access(_KVM_DEVICE, os.R_OK | os.W_OK)


def effective_settings(gfs, conf):
    """The backend settings appliances get before any accelerator's.

    ``[introspection_guest] backend_settings``, or when empty what
    libguestfs reads from ``LIBGUESTFS_BACKEND_SETTINGS``.
    """
    configured = list(conf[opts.GUEST_GROUP].backend_settings)
    if configured:
        return configured
    g = gfs.GuestFS(python_return_dict=True, close_on_exit=False)
    try:
        return list(g.get_backend_settings())
    finally:
        g.close()


def forced_plan(gfs, conf):
    """The Plan when the configuration decides it without a probe, or None.

    :returns: None when ``accelerator = auto`` and nothing forces either.
    """
    group = conf[opts.GUEST_GROUP]
    settings = effective_settings(gfs, conf)
    for accelerator in (TCG, KVM):
        if 'force_' + accelerator in settings:
            if group.accelerator not in (AUTO, accelerator):
                _warn_once('backend_settings force_%s wins over accelerator '
                           '= %s' % (accelerator, group.accelerator))
            return Plan(accelerator, [], None,
                        'backend_settings hold force_' + accelerator)
    if group.accelerator != AUTO:
        return Plan(group.accelerator, ['force_' + group.accelerator], None,
                    'accelerator = ' + group.accelerator)
    if (group.backend or 'direct') != 'direct':
        return Plan(DEFAULT, [], None,
                    'backend %s is not probed' % group.backend)
    if not kvm_usable():
        return Plan(TCG, ['force_tcg'], None,
                    '%s is missing or not accessible' % _KVM_DEVICE)
    return None


def plan_from(verdict):
    """The Plan a probe's verdict calls for."""
    if verdict.accelerator == KVM:
        # libguestfs's own accel=kvm:tcg: the command line the probe saw
        # run, and qemu still falls back should /dev/kvm go away.
        return Plan(KVM, [], verdict, 'the KVM probe: ' + verdict.reason)
    return Plan(TCG, ['force_tcg'], verdict,
                'the KVM probe: ' + verdict.reason)


def probe(gfs, conf, workdir):
    """Start an appliance without any image under KVM; return a Verdict.

    :returns: a :class:`~.verdicts.Verdict` without fingerprint (``kvm``
        when the guest wrote to the console, ``tcg`` when qemu started
        and then wrote nothing within ``accelerator_probe_timeout`` or
        ended), or None when qemu never started (the probe decides
        nothing). Never raises for the appliance's sake.
    """
    timeout = conf[opts.GUEST_GROUP].accelerator_probe_timeout
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='kvm-probe-',
                                     dir=workdir) as tmp:
        try:
            with appliance_mod.Appliance(gfs, [], conf, tmp, KVM,
                                         ['force_kvm'], timeout) as probed:
                console, failed = probed.console, None
        except appliance_mod.LaunchFailed as err:
            console, failed = err.console, err
    seconds = time.monotonic() - started
    if console.life is not None:
        reason = ('the guest wrote to its console %.1f s after qemu started '
                  'under KVM' % (console.life_at - (console.qemu_started
                                                    or console.life_at)))
        return verdicts.Verdict(KVM, reason, time.time(), seconds, None)
    if failed is None:
        return verdicts.Verdict(KVM, 'an appliance started under KVM',
                                time.time(), seconds, None)
    if 'kvm not available' in failed.message:
        return verdicts.Verdict(TCG, 'qemu reports no KVM', time.time(),
                                seconds, None)
    if console.qemu_started is None:
        LOG.warning('the KVM probe could not start qemu, so it decides '
                    'nothing: %s', failed.message)
        return None
    if failed.timed_out:
        reason = ('an appliance started under KVM wrote nothing to its '
                  'console within %d s (accelerator_probe_timeout), as '
                  'where nested KVM hangs' % timeout)
    else:
        reason = ('qemu ended under KVM before its guest wrote anything: %s'
                  % (console.describe(2) or appliance_mod.first_line(
                      failed)))
    return verdicts.Verdict(TCG, reason, time.time(), seconds, None)


class Chooser(object):
    """The accelerator of the appliances of one session.

    :param store: a :class:`~.verdicts.VerdictStore`, or None to probe
        without remembering (the pre-flight check).
    :param workdir: where the probe's appliance keeps its files.
    """

    def __init__(self, gfs, conf, workdir, store, observer=None):
        self.gfs = gfs
        self.conf = conf
        self.workdir = workdir
        self.store = store
        self.observer = observer
        self._plan = None
        self._reprobed = False

    def plan(self):
        """The Plan for the next appliance (probing first when needed)."""
        if self._plan is None:
            self._plan = forced_plan(self.gfs, self.conf)
        if self._plan is None:
            verdict = self._verdict()
            self._plan = (plan_from(verdict) if verdict is not None else
                          Plan(DEFAULT, [], None, 'the KVM probe decided '
                               'nothing'))
        return self._plan

    def after_failure(self, plan, failed):
        """The Plan to launch the same appliance with again, or None.

        Only a launch under a KVM verdict whose guest never wrote a word
        is suspect, and only once per session: KVM is probed again, and
        if it is now unusable the answer is TCG.
        """
        if (plan.accelerator != KVM or plan.verdict is None
                or failed.guest_spoke or self._reprobed):
            return None
        self._reprobed = True
        LOG.warning('an appliance launched under KVM ended before its guest '
                    'wrote anything (%s); probing KVM again', failed.message)
        verdict = self._verdict(older_than=plan.verdict)
        if verdict is None or verdict.accelerator == KVM:
            return None
        self._plan = plan_from(verdict)
        return self._plan

    def _verdict(self, older_than=None):
        """The stored verdict, else a new one; None if the probe failed.

        :param older_than: a verdict to ignore, and any made before it.
        """
        g = self.gfs.GuestFS(python_return_dict=True, close_on_exit=False)
        try:
            current = verdicts.fingerprint(
                g.get_hv(), '%(major)d.%(minor)d.%(release)d' % g.version(),
                self.conf[opts.GUEST_GROUP].backend)
        finally:
            g.close()
        stored = self._stored(current, older_than)
        if stored is not None:
            return stored
        lock = (self.store.probing() if self.store is not None
                else contextlib.nullcontext())
        # Shown from the wait on another process's probe on: to whoever
        # watches, that wait is the probe.
        key = progress.new_key()
        progress.notify(self.observer, progress.PROBE, [PROBE_LABEL], key,
                        self.conf[opts.GUEST_GROUP].accelerator_probe_timeout,
                        KVM)
        try:
            with lock:
                # Another process may have probed while this one waited.
                stored = self._stored(current, older_than)
                if stored is not None:
                    return stored
                verdict = probe(self.gfs, self.conf, self.workdir)
                if verdict is None:
                    return None
                verdict = verdict._replace(fingerprint=current)
                self._announce(verdict)
                if self.store is not None:
                    self.store.save(verdict)
                return verdict
        finally:
            progress.notify(self.observer, progress.CLOSED, [PROBE_LABEL],
                            key)

    def _stored(self, current, older_than):
        if self.store is None:
            return None
        stored = self.store.load(current)
        if stored is None or (older_than is not None
                              and stored.made_at <= older_than.made_at):
            return None
        LOG.info('appliances run under %s: the KVM probe of %d min ago '
                 'found that %s', appliance_mod.ACCELERATOR_NAMES[
                     stored.accelerator], verdicts.age(stored) // 60,
                 stored.reason)
        return stored

    def _announce(self, verdict):
        if verdict.accelerator == KVM:
            LOG.info('KVM works on this host: %s (probe: %.1f s)',
                     verdict.reason, verdict.probe_seconds)
            return
        LOG.warning(
            'KVM is unusable on this host: %s. libguestfs appliances run '
            'under software emulation (TCG) instead, several times slower%s.'
            ' Set [introspection_guest] accelerator = tcg to skip this probe '
            '(%.1f s).', verdict.reason.rstrip('.'),
            '; this is remembered in %s until qemu, the kernel or libguestfs '
            'change (%d h at most)' % (self.store.path,
                                       verdicts.MAX_AGE // 3600)
            if self.store is not None else '', verdict.probe_seconds)


class Launcher(object):
    """Opens the appliances of a session under the host's accelerator.

    It is the session's ``open_appliance``: ``launcher(images)`` is a
    context manager that yields a launched
    :class:`~.appliance.Appliance`. When a launch under KVM fails and
    :meth:`Chooser.after_failure` finds KVM unusable now, the same
    appliance (all its drives) is launched again under TCG; otherwise
    the :class:`~.appliance.LaunchFailed` is raised for the session to
    judge.

    :param store: a :class:`~.verdicts.VerdictStore`, or None to probe
        without remembering.
    :param observer: a :mod:`qimgintrospect.progress` observer.
    :param verbose: launch the appliances in verbose mode (a diagnosis).
    """

    def __init__(self, gfs, conf, workdir, store=None, observer=None,
                 verbose=False):
        self.gfs = gfs
        self.conf = conf
        self.workdir = workdir
        self.observer = observer
        self.verbose = verbose
        self.chooser = Chooser(gfs, conf, workdir, store, observer)

    @contextlib.contextmanager
    def __call__(self, images):
        with contextlib.ExitStack() as stack:
            plan = self.chooser.plan()
            try:
                launched = self._launch(stack, images, plan)
            except appliance_mod.LaunchFailed as failed:
                fallback = self.chooser.after_failure(plan, failed)
                if fallback is None:
                    raise
                LOG.warning('launching the same appliance (%d drive(s)) '
                            'again under %s', len(images),
                            appliance_mod.ACCELERATOR_NAMES[
                                fallback.accelerator])
                launched = self._launch(stack, images, fallback)
            yield launched

    def _launch(self, stack, images, plan):
        """Launch an appliance under *plan*; its exit joins *stack*."""
        group = self.conf[opts.GUEST_GROUP]
        labels = [i.label for i in images] or [HOST_CHECK_LABEL]
        key = progress.new_key()
        progress.notify(self.observer, progress.LAUNCH, labels, key,
                        group.launch_timeout, plan.accelerator)
        try:
            launched = stack.enter_context(appliance_mod.Appliance(
                self.gfs, images, self.conf, self.workdir, plan.accelerator,
                plan.settings, verbose=self.verbose))
        except BaseException:
            progress.notify(self.observer, progress.CLOSED, labels, key)
            raise
        stack.callback(progress.notify, self.observer, progress.CLOSED,
                       labels, key)
        progress.notify(self.observer, progress.INSPECT, labels, key,
                        group.inspect_timeout * max(len(images), 1),
                        plan.accelerator)
        return launched


def _warn_once(message):
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    LOG.warning(message)
