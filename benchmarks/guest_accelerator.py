#!/usr/bin/env python3
"""What the KVM probe costs: where KVM hangs, where it aborts, where it works.

Hosts this machine is not are stood for by a qemu wrapper that libguestfs
runs instead of qemu (``LIBGUESTFS_HV``, testkit/qemuwrapper.py):

* ``kvm-hangs``: a guest under KVM hangs without a word (nested KVM on
  many VMs);
* ``kvm-as-tcg``: a guest under KVM boots, under software emulation
  (``accel=kvm`` rewritten to ``accel=tcg``, ``-cpu max``): KVM works as
  far as the probe can tell. The probe's time is then an upper bound of
  the real one: under TCG the firmware writes its banner later than
  under KVM;
* the real qemu, whose KVM aborts on this machine (``failed to set MSR
  0x10a``).

It prints, from fresh workspaces (so every default run probes):

1. the probe alone, ``--repeat`` times each: the seconds from nothing to
   the verdict, and the verdict; then the cost of a process that finds
   the verdict stored (no probe);
2. one guest inspected (``api.inspect``, one small Ubuntu-like guest)
   where KVM hangs: the default configuration (probe, then TCG) against
   ``backend_settings = force_tcg`` (what an operator had to set), and
   plain libguestfs (``guestfish run``, accel=kvm:tcg), which waits
   for its own launch timeout, killed here at ``--plain-cap`` seconds;
3. the same guest where KVM works (``kvm-as-tcg``): the default
   configuration (probe, then the appliance under "KVM") against
   ``accelerator = kvm`` (no probe): the probe's overhead.

Totals under emulation vary by several seconds from run to run on a
shared machine; the probe's own seconds (measured on their own, and
inside each default run from the verdict it leaves) are the precise
figure.

    python benchmarks/guest_accelerator.py [--repeat N] [--quick]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from qimgintrospect import api  # noqa: E402
from qimgintrospect import exception  # noqa: E402
from qimgintrospect.inspectors.guest import accelerator  # noqa: E402
from qimgintrospect.inspectors.guest import appliance  # noqa: E402
from qimgintrospect.inspectors.guest import verdicts  # noqa: E402
from qimgintrospect import opts  # noqa: E402
from testkit import config  # noqa: E402
from testkit import guestimages  # noqa: E402
from testkit import qemuwrapper  # noqa: E402

AUTO = {opts.GUEST_GROUP: {'backend_settings': []}}
FORCE_TCG = {opts.GUEST_GROUP: {'backend_settings': ['force_tcg']}}
FORCE_KVM = {opts.GUEST_GROUP: {'backend_settings': [],
                                'accelerator': 'kvm'}}


class Host(object):
    """One stood-for host: LIBGUESTFS_HV set while it is used."""

    def __init__(self, directory, mode):
        self.mode = mode
        self.wrapper = (qemuwrapper.write(os.path.join(directory, mode), mode)
                        if mode != 'real' else None)

    def __enter__(self):
        self._saved = {k: os.environ.get(k) for k in (
            'LIBGUESTFS_HV', 'LIBGUESTFS_BACKEND_SETTINGS')}
        os.environ.pop('LIBGUESTFS_BACKEND_SETTINGS', None)
        if self.wrapper:
            os.environ['LIBGUESTFS_HV'] = self.wrapper.path
        return self

    def __exit__(self, *exc_info):
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fresh_workspace(directory):
    path = tempfile.mkdtemp(prefix='ws-', dir=directory)
    os.chmod(path, 0o700)
    return path


def time_probe(directory, repeat):
    """[(seconds, accelerator)] of *repeat* probes from nothing."""
    gfs = appliance.load_binding()
    runs = []
    for _ in range(repeat):
        workspace = fresh_workspace(directory)
        conf = config.make_conf(workspace, guest=True, **AUTO)
        chooser = accelerator.Chooser(gfs, conf, workspace,
                                      verdicts.VerdictStore(workspace))
        start = time.perf_counter()
        plan = chooser.plan()
        runs.append((time.perf_counter() - start, plan.accelerator))
    return runs


def time_stored_verdict(directory, repeat=20):
    """Seconds a process takes to find the stored verdict (no probe)."""
    gfs = appliance.load_binding()
    workspace = fresh_workspace(directory)
    conf = config.make_conf(workspace, guest=True, **AUTO)
    accelerator.Chooser(gfs, conf, workspace,
                        verdicts.VerdictStore(workspace)).plan()
    times = []
    for _ in range(repeat):
        chooser = accelerator.Chooser(gfs, conf, workspace,
                                      verdicts.VerdictStore(workspace))
        start = time.perf_counter()
        chooser.plan()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_inspection(directory, image, groups):
    """(seconds, the verdict's probe seconds or None, os_distro)."""
    workspace = fresh_workspace(directory)
    conf = config.make_conf(workspace, guest=True, **groups)
    start = time.perf_counter()
    result = api.inspect(image, None, conf)
    wall = time.perf_counter() - start
    if isinstance(result, exception.IntrospectionError):
        return wall, None, 'error %s' % result.code
    try:
        with open(verdicts.VerdictStore(workspace).path) as f:
            probe = json.load(f)['probe_seconds']
    except FileNotFoundError:
        probe = None
    return wall, probe, result.properties.get('os_distro')


def time_plain_guestfish(image, cap, tmpdir, settings=None):
    """Seconds of ``guestfish -a IMAGE run`` (accel as libguestfs picks).

    :returns: (seconds or None if killed at *cap*, whether it succeeded).
    """
    env = dict(os.environ, LIBGUESTFS_BACKEND='direct', TMPDIR=tmpdir)
    env.pop('LIBGUESTFS_BACKEND_SETTINGS', None)
    if settings:
        env['LIBGUESTFS_BACKEND_SETTINGS'] = settings
    start = time.perf_counter()
    proc = subprocess.Popen(['guestfish', '--ro', '-a', image, 'run'],
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(cap)
        return time.perf_counter() - start, proc.returncode == 0
    except subprocess.TimeoutExpired:
        # guestfish's qemu is in its session: stop them all.
        os.killpg(proc.pid, 9)
        proc.wait()
        return None, False


def _stats(values):
    return 'median %.2f s (min %.2f, max %.2f)' % (
        statistics.median(values), min(values), max(values))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=5,
                        help='probes timed per host (default 5)')
    parser.add_argument('--inspections', type=int, default=2,
                        help='inspections timed per configuration, '
                             'alternated (default 2)')
    parser.add_argument('--plain-cap', type=int, default=60,
                        help='seconds plain guestfish may hang (default 60)')
    parser.add_argument('--quick', action='store_true',
                        help='only the probes, no appliance')
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix='accel-bench-')
    try:
        # One wrapper per host for the whole run: libguestfs queries a new
        # qemu binary's features once (cached afterwards, for probe and
        # appliance alike), on the first probe below, which is not counted.
        hosts = {mode: Host(directory, mode)
                 for mode in ('kvm-hangs', 'real', 'kvm-as-tcg')}
        print('1. The probe alone, from a fresh workspace (%d each)'
              % args.repeat)
        for mode, label in (
                ('kvm-hangs', 'KVM hangs (wrapper)'),
                ('real', 'KVM aborts (this machine\'s real qemu)'),
                ('kvm-as-tcg', 'KVM works (wrapper: accel=kvm run as tcg)')):
            with hosts[mode]:
                time_probe(directory, 1)
                runs = time_probe(directory, args.repeat)
            print('   %-44s %s -> %s' % (label, _stats([r[0] for r in runs]),
                                         sorted({r[1] for r in runs})))
        with hosts['kvm-as-tcg']:
            stored = time_stored_verdict(directory)
        print('   %-44s median %.4f s'
              % ('verdict found stored (next process)', stored))
        if args.quick:
            return 0

        start = time.perf_counter()
        image = guestimages.build(os.path.join(directory, 'guest'),
                                  ['ubuntu'])['ubuntu']
        print('\n(built one guest in %.0f s, not counted)'
              % (time.perf_counter() - start))

        print('\n2. One guest where KVM hangs (%d runs each, alternated)'
              % args.inspections)
        with hosts['kvm-hangs']:
            auto, forced = alternate(directory, image, AUTO, FORCE_TCG,
                                     args.inspections)
            plain, _ = time_plain_guestfish(image, args.plain_cap,
                                            directory)
            plain_tcg, ok = time_plain_guestfish(image, args.plain_cap * 3,
                                                 directory, 'force_tcg')
        report(auto, 'default configuration: probe, then TCG')
        report(forced, 'backend_settings = force_tcg (no probe)')
        print('   %-52s %s' % (
            'plain guestfish run (accel=kvm:tcg)',
            'hung, killed at %d s' % args.plain_cap if plain is None
            else '%.1f s' % plain))
        print('   %-52s %.1f s%s' % (
            'plain guestfish run, force_tcg (launch only)', plain_tcg or -1,
            '' if ok else ' (failed)'))
        compare(auto, forced)

        print('\n3. One guest where KVM works (accel=kvm run as tcg; %d runs '
              'each, alternated)' % args.inspections)
        with hosts['kvm-as-tcg']:
            auto, forced = alternate(directory, image, AUTO, FORCE_KVM,
                                     args.inspections)
        report(auto, 'default configuration: probe, then "KVM"')
        report(forced, 'accelerator = kvm (no probe)')
        compare(auto, forced)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def alternate(directory, image, first, second, count):
    """*count* inspections with each configuration, in turns."""
    runs = ([], [])
    for _ in range(count):
        for groups, into in ((first, runs[0]), (second, runs[1])):
            into.append(time_inspection(directory, image, groups))
    return runs


def report(runs, label):
    walls = [r[0] for r in runs]
    probes = [r[1] for r in runs if r[1] is not None]
    print('   %-52s %s%s %s' % (
        label, _stats(walls),
        ', probe %s' % _stats(probes) if probes else '',
        sorted({r[2] for r in runs})))


def compare(auto, forced):
    print('   with the probe - without: %+.1f s (medians; the probe itself: '
          '%.2f s, the rest is the run-to-run noise of emulation on a '
          'shared machine)' % (
              statistics.median([r[0] for r in auto])
              - statistics.median([r[0] for r in forced]),
              statistics.median([r[1] for r in auto])))


if __name__ == '__main__':
    sys.exit(main())
