"""A qemu for libguestfs (``LIBGUESTFS_HV``) whose KVM behaves as told.

The tests and the benchmark of the KVM probe need hosts this machine is
not: one where KVM hangs without a word (as nested KVM does on many VMs),
one where it aborts, one where it works. :func:`write` puts a small
script named ``qemu-system-x86_64`` in a directory; libguestfs runs it
wherever it would run qemu, and it

* appends its command line, one JSON line per run, to a log
  (:meth:`Wrapper.runs`), which is how a test proves a probe did or did
  not happen;
* in mode ``kvm-hangs``: sleeps, printing nothing, when a guest would
  boot under KVM (``accel=kvm...`` or ``-enable-kvm`` with ``-kernel``);
* in mode ``kvm-aborts``: prints qemu's words from these machines
  (``failed to set MSR 0x10a``) and aborts in the same case;
* in mode ``kvm-as-tcg``: boots such a guest under software emulation
  instead (``accel=tcg``, ``-cpu max``): a working KVM as far as the
  probe can tell, only slower;
* otherwise execs the real qemu with the same arguments, in the same
  process.

libguestfs's own queries of qemu (``-help``, ``-qmp stdio`` asking
whether KVM is enabled) boot no guest and always reach the real qemu, as
they do on the real broken hosts.
"""

import json
import os
import shutil
import sys

REAL_QEMU = '/usr/bin/qemu-system-x86_64'
MODES = ('kvm-hangs', 'kvm-aborts', 'kvm-as-tcg', 'pass-through')
#: Longest a hanging run sleeps if nobody kills it (a bug), in seconds.
HANG_SECONDS = 900

_SCRIPT = r'''#!{python} -IS
# Written by testkit/qemuwrapper.py (mode {mode}).
import json, os, re, sys, time
MODE, LOG, REAL = {mode!r}, {log!r}, {real!r}
args = sys.argv[1:]
kvm = any('accel=kvm' in a or a == '-enable-kvm' for a in args)
boot = '-kernel' in args
with open(LOG, 'a') as f:
    f.write(json.dumps({{'time': time.time(), 'pid': os.getpid(),
                         'kvm': kvm, 'boot': boot, 'args': args}}) + '\n')
if kvm and boot and MODE == 'kvm-hangs':
    time.sleep({hang})
    sys.exit(1)
if kvm and boot and MODE == 'kvm-aborts':
    sys.stderr.write('qemu-system-x86_64: error: failed to set MSR 0x10a '
                     'to 0x69\n')
    sys.stderr.flush()
    os.abort()
if kvm and boot and MODE == 'kvm-as-tcg':
    args = [re.sub(r'accel=kvm(:tcg)?', 'accel=tcg', a)
            for a in args if a != '-enable-kvm']
    args = ['max' if a.startswith('host') and i and args[i - 1] == '-cpu'
            else a for i, a in enumerate(args)]
os.execv(REAL, [REAL] + args)
'''


def _python():
    # The system's Python, isolated and without site (-IS): it starts in
    # a tenth of a second where a virtualenv's takes three, which would
    # count as the probe's time in the benchmark.
    for candidate in ('/usr/bin/python3', shutil.which('python3'),
                      sys.executable):
        if candidate and os.path.isabs(candidate):
            return candidate
    raise RuntimeError('no python3 for the qemu wrapper')


class Wrapper(object):
    """A written wrapper: ``path`` for LIBGUESTFS_HV, ``log`` of its runs."""

    def __init__(self, path, log):
        self.path = path
        self.log = log

    def environ(self, base=None):
        """*base* (default os.environ) with LIBGUESTFS_HV set to it.

        LIBGUESTFS_BACKEND_SETTINGS is removed: a ``force_tcg`` there
        would skip the probe being tested.
        """
        env = dict(os.environ if base is None else base,
                   LIBGUESTFS_HV=self.path)
        env.pop('LIBGUESTFS_BACKEND_SETTINGS', None)
        return env

    def runs(self):
        """Every run so far: dicts with time, pid, kvm, boot, args."""
        try:
            with open(self.log) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def boots(self, kvm=None):
        """The runs that booted a guest; only those under KVM if *kvm*."""
        return [r for r in self.runs() if r['boot']
                and (kvm is None or r['kvm'] == kvm)]


def write(directory, mode):
    """Write a wrapper in *directory*; return its :class:`Wrapper`.

    Each call writes a new file (a new mtime), so libguestfs's cache of
    qemu's features and the KVM verdict's fingerprint see a new qemu.
    """
    if mode not in MODES:
        raise ValueError('mode must be one of %s' % ', '.join(MODES))
    directory = os.path.abspath(str(directory))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'qemu-system-x86_64')
    log = os.path.join(directory, 'runs.jsonl')
    text = _SCRIPT.format(python=_python(), mode=mode, log=log,
                          real=REAL_QEMU, hang=HANG_SECONDS)
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, 0o755)
    return Wrapper(path, log)
