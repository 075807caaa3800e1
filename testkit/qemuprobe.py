"""Ask qemu itself which format it would guess, inside a sandbox.

:func:`compare` is the differential test of one image: what qimgintrospect
decided (through the core API, as any front end) against what qemu would
guess. An image we accepted as one format that qemu would open as another
is a disagreement, and a failure: whoever lets qemu guess would read it
with checks we never ran.

The header check reimplements qemu's format probes
(qimgintrospect/inspectors/probe.py); this module is the other side of
the differential test: it runs the real ``qemu-img info`` **without**
``-f`` on one image and reports the driver qemu's probe picked.

qemu-img runs under bubblewrap (Debian package ``bubblewrap``) with every
namespace unshared (no network, no other process), an empty root holding
only ``/usr`` (read-only: qemu-img and its libraries), ``/etc/ld.so.cache``,
a minimal ``/dev`` and the one image, bound read-only: a polyglot that
names ``/etc/hostname`` or another image finds nothing there. qemu's own
trace event ``bdrv_open_common`` names the driver it opens the image with,
printed before the driver reads anything else, so the guess is known even
when the open then fails (most mutants are broken images).
"""

import collections
import os
import re
import shutil
import subprocess
import tempfile

from qimgintrospect import api
from qimgintrospect import diskformats
from qimgintrospect import exception

#: What qemu guessed for one image: its driver name, and whether
#: ``qemu-img info`` then opened the image.
Guess = collections.namedtuple('Guess', ['driver', 'opened', 'stderr'])

# The name the image has inside the sandbox. Not *.dmg: qemu's dmg probe
# reads the name only, and the name is the consumer's choice.
_NAME = 'image'
# qemu's trace option that names the driver of every node it opens.
TRACE_ARGS = ('--trace', 'bdrv_open_common')
_TRACE = re.compile(r'^bdrv_open_common .*filename "(.*)" '
                    r'flags \S+ format_name "([^"]+)"$', re.MULTILINE)


def traced_driver(stderr, filename):
    """The format driver qemu opened *filename* with, from its trace.

    :returns: the driver name, or None when the trace names none.
    """
    for name, driver in _TRACE.findall(stderr):
        if name == filename and driver != 'file':
            return driver
    return None


class SandboxUnavailable(Exception):
    """The sandbox cannot be built here; the message says why."""


class QemuProbe(object):
    """Run ``qemu-img info`` without a format in a bubblewrap sandbox.

    :raises SandboxUnavailable: bwrap or qemu-img is missing, the sandbox
        cannot start, or it shows the image more than it should (a host
        file, a network interface): see :meth:`self_test`.
    """

    def __init__(self, timeout=20):
        self.timeout = timeout
        self.bwrap = shutil.which('bwrap')
        if self.bwrap is None:
            raise SandboxUnavailable('bubblewrap (bwrap) is not installed')
        self.qemu_img = shutil.which('qemu-img')
        if self.qemu_img is None or not self.qemu_img.startswith('/usr/'):
            raise SandboxUnavailable('no qemu-img under /usr: %s'
                                     % self.qemu_img)
        self.self_test()

    def command(self, path, *inner):
        """The bwrap argv that runs *inner* with *path* as ./image."""
        cmd = [self.bwrap, '--unshare-all', '--die-with-parent',
               '--new-session', '--clearenv',
               '--setenv', 'PATH', '/usr/bin', '--setenv', 'LC_ALL', 'C',
               '--setenv', 'MALLOC_ARENA_MAX', '2',
               '--ro-bind', '/usr', '/usr',
               '--symlink', 'usr/lib', '/lib',
               '--symlink', 'usr/lib64', '/lib64',
               '--symlink', 'usr/bin', '/bin',
               '--ro-bind', '/etc/ld.so.cache', '/etc/ld.so.cache',
               '--dev', '/dev', '--proc', '/proc',
               '--ro-bind', os.path.abspath(path), '/image/' + _NAME,
               '--chdir', '/image']
        return cmd + list(inner)

    def guess(self, path):
        """Return the :class:`Guess` qemu makes for the file at *path*."""
        proc = subprocess.run(
            self.command(path, 'prlimit', '--as=%d' % (1 << 30), '--cpu=10',
                         '--', 'qemu-img', *TRACE_ARGS, 'info',
                         '--output=json', _NAME),
            capture_output=True, text=True, timeout=self.timeout)
        driver = traced_driver(proc.stderr, _NAME)
        if driver is None:
            raise RuntimeError('qemu-img named no driver for %s: %s'
                               % (path, proc.stderr[-2000:]))
        return Guess(driver, proc.returncode == 0, proc.stderr)

    def self_test(self):
        """Prove the sandbox runs qemu-img and hides the host.

        :raises SandboxUnavailable: with the reason.
        """
        with tempfile.TemporaryDirectory(prefix='qimg-sandbox-') as tmp:
            path = os.path.join(tmp, 'probe.raw')
            with open(path, 'wb') as f:
                f.truncate(1024 * 1024)
            try:
                guess = self.guess(path)
            except (OSError, RuntimeError,
                    subprocess.TimeoutExpired) as err:
                raise SandboxUnavailable('qemu-img cannot run in bwrap: %s'
                                         % err)
            if guess.driver != 'raw' or not guess.opened:
                raise SandboxUnavailable('qemu-img in bwrap read a blank '
                                         'file as %s: %s'
                                         % (guess.driver, guess.stderr))
            seen = subprocess.run(
                self.command(path, 'sh', '-c',
                             'ls -A / /image; cat /proc/net/dev'),
                capture_output=True, text=True, timeout=self.timeout)
        if seen.returncode != 0:
            raise SandboxUnavailable('cannot look inside the sandbox: %s'
                                     % seen.stderr)
        lines = seen.stdout.split()
        for host_path in ('home', 'root', 'tmp', 'var', 'work'):
            if host_path in lines:
                raise SandboxUnavailable('the sandbox shows /%s'
                                         % host_path)
        interfaces = [word.rstrip(':') for word in lines
                      if word.endswith(':') and not word.startswith('/')]
        if set(interfaces) - {'lo'}:
            raise SandboxUnavailable('the sandbox has network interfaces: %s'
                                     % interfaces)


class Comparison(collections.namedtuple(
        'Comparison', ['name', 'declared', 'code', 'accepted_as',
                       'subformat', 'qemu', 'message'])):
    """One image through both: our outcome and qemu's guess.

    :ivar code: 'ok' or the error code we refused or failed it with.
    :ivar accepted_as: the Glance format we inspected it as, or None.
    :ivar subformat: the VHD subformat we found (fixed or dynamic).
    :ivar qemu: the :class:`Guess` of qemu-img without ``-f``.
    """

    __slots__ = ()

    @property
    def expected(self):
        """The qemu driver qemu must guess for the format we accepted."""
        return self.qemu_driver_of(self.accepted_as, self.subformat)

    @property
    def disagrees(self):
        """We accepted it, and qemu would open it as something else."""
        return self.accepted_as is not None and self.qemu.driver != (
            self.expected)

    @property
    def qemu_says_otherwise(self):
        """qemu would guess another format than the one claimed.

        The claimed format is the declared one, or else the one we
        accepted.
        """
        claimed = self.declared or self.accepted_as
        if claimed is None:
            return False
        if claimed == 'vhd':
            # qemu reads a fixed VHD (no footer copy at offset 0) as raw.
            return self.qemu.driver not in ('vpc', 'raw')
        return self.qemu.driver != self.qemu_driver_of(claimed)

    @staticmethod
    def qemu_driver_of(disk_format, subformat=None):
        """The driver qemu's probe picks for an image of *disk_format*."""
        if disk_format in ('raw', 'iso') or subformat == 'fixed':
            return 'raw'
        return diskformats.QEMU_DRIVERS[disk_format]


def compare(sandbox, name, path, declared, conf):
    """Inspect *path* (declared *declared*) and ask qemu.

    :returns: :class:`Comparison`; never raises for a broken or hostile
        image.
    """
    guess = sandbox.guess(path)
    try:
        result = api.inspect(path, declared, conf)
    except exception.IntrospectionError as err:
        return Comparison(name, declared, err.code, None, None, guess,
                          err.message)
    return Comparison(name, declared, 'ok', result.properties['disk_format'],
                      result.details.get('vhd_subformat'), guess, '')


def summarise(comparisons):
    """Counts over *comparisons*, for a report.

    :returns: an ordered dict: cases, accepted, refused or failed, cases
        where qemu would guess another format than the one claimed, those
        of them refused, and disagreements (accepted although qemu would
        guess otherwise: must be 0).
    """
    counts = collections.OrderedDict()
    counts['cases'] = len(comparisons)
    counts['accepted'] = sum(1 for c in comparisons if c.code == 'ok')
    counts['refused or failed'] = counts['cases'] - counts['accepted']
    other = [c for c in comparisons if c.qemu_says_otherwise]
    counts['qemu guesses another format'] = len(other)
    counts['of those, refused'] = sum(1 for c in other if c.code != 'ok')
    counts['disagreements'] = sum(1 for c in comparisons if c.disagrees)
    return counts
