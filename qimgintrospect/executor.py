"""Run ``qemu-img info`` on an untrusted image, boxed in.

One function, :func:`qemu_img_info`. What it guarantees:

* the format is always forced with ``-f``: qemu-img never probes it, so the
  file cannot choose how it is parsed;
* qemu-img runs under util-linux ``prlimit`` with the CPU-time,
  address-space and stack caps of :class:`Limits` (rendered by
  oslo.concurrency's ``ProcessLimits``), in its own process group, and is
  killed with that group when the wall-clock timeout passes: no process
  outlives the call;
* what qemu-img may allocate under the address-space cap does not depend
  on the machine's load: qemu-img starts a varying number of I/O threads
  (up to 64), and each would reserve a glibc malloc arena (64 MiB of
  address space) and a stack as large as the stack limit (8 MiB by
  default). :data:`ENVIRONMENT` bounds the arenas, the stack cap bounds
  the stacks, so a benign image never hits the cap because of a race;
* every way it can go wrong is one named error from
  :mod:`qimgintrospect.exception`, never a raw ``OSError`` or traceback.
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

import json
import os
import re
import signal
import subprocess

from oslo_concurrency import processutils
from oslo_log import log as logging

from qimgintrospect import exception
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

# util-linux prlimit exits with these when it cannot exec the command.
_EXEC_NOT_FOUND = 127
_EXEC_FAILED = 126

#: The environment qemu-img runs with, besides PATH. Two malloc arenas
#: (the main one and one for every other thread) instead of eight per core;
#: glib's slice allocator (per-thread magazines) replaced by malloc. Behind
#: a root helper, sudo must keep these (``env_keep``).
ENVIRONMENT = {'LC_ALL': 'C', 'MALLOC_ARENA_MAX': '2',
               'G_SLICE': 'always-malloc'}

_CPU_SIGNALS = (signal.SIGKILL, signal.SIGXCPU)
# Words qemu-img and glib print when an allocation fails under RLIMIT_AS.
_MEMORY_WORDS = ('alloc', 'memory', 'resource temporarily unavailable')
_MAX_STDERR = 400
# qemu-img's own words for an image that ends before its tables do, and
# for one whose tables it found inconsistent (qemu 7.2 block drivers).
# Only these: any other failure stays qemu-img-failed.
_TRUNCATED = re.compile(
    r'truncated|(after|beyond|past) the end of (the )?file|'
    r'end of file', re.IGNORECASE)
_CORRUPT = re.compile(
    r'corrupt|checksum|offset invalid|too (small|big|large|much)|'
    r'no valid vhdx header|unsupported vdi image|exceeds cluster size|'
    r'entry size is invalid|invalid block size|unknown compression type|'
    r'does not contain a reference count table|must not be set',
    re.IGNORECASE)
# The one target qemu-img is given besides an absolute path: the read-only
# NBD export of a remote image on a Unix socket in the workspace
# (qimgintrospect.remote.nbdexport). Nothing else: no host, no query.
NBD_UNIX_URI = re.compile(r'^nbd\+unix:///\?socket=(/[^?&#]+)$')


class Limits(processutils.ProcessLimits):
    """The resource caps of one qemu-img run, with its wall-clock timeout.

    The stack cap is also the size of every thread's stack (glibc sizes
    them by it), so it bounds what qemu-img's threads reserve.
    """

    def __init__(self, cpu_time, address_space, timeout,
                 stack_size=opts.QEMU_IMG_STACK_SIZE):
        super().__init__(cpu_time=cpu_time, address_space=address_space,
                         stack_size=stack_size)
        self.timeout = timeout

    @classmethod
    def from_conf(cls, conf):
        group = conf[opts.QEMU_IMG_GROUP]
        return cls(group.cpu_time, group.address_space, group.timeout,
                   group.stack_size)


def build_command(path, qemu_format, conf, limits):
    """Return the argv that runs qemu-img info on *path*, caps first.

    prlimit is the outermost command so that the caps also bind a root
    helper and everything it starts.
    """
    group = conf[opts.QEMU_IMG_GROUP]
    cmd = [group.prlimit_path] + limits.prlimit_args() + ['--']
    if group.root_helper:
        cmd += group.root_helper.split()
    cmd += [group.qemu_img_path, 'info', '--output=json',
            '-f', qemu_format, path]
    return cmd


def qemu_img_info(path, qemu_format, conf, limits=None):
    """Run ``qemu-img info --output=json -f qemu_format path``.

    :param path: absolute path of a regular file the caller owns (a
        workspace copy). Absolute, so qemu-img cannot read a ``proto:``
        prefix into it. Or the ``nbd+unix:///?socket=/ABS/PATH`` URI of
        a remote image's export (:data:`NBD_UNIX_URI`).
    :param qemu_format: qemu's driver name (``vpc``, not ``vhd``).
    :param conf: an oslo.config ConfigOpts with the options registered.
    :param limits: :class:`Limits`; default from *conf*.
    :returns: the decoded JSON object qemu-img printed.
    :raises QemuImgNotFound: prlimit or qemu-img cannot be executed.
    :raises QemuImgTimeout: the run passed ``limits.timeout``; it was killed.
    :raises QemuImgLimitExceeded: the CPU or address-space cap stopped it.
    :raises QemuImgFailed: qemu-img exited non-zero or died of a signal;
        a :class:`QemuImgFoundImageBroken` (image-truncated or
        image-corrupt) when qemu-img's message says the image is cut short
        or its tables are inconsistent.
    :raises QemuImgBadOutput: stdout is not a JSON object.
    """
    if not (os.path.isabs(path) or NBD_UNIX_URI.match(path)):
        raise ValueError('qemu_img_info needs an absolute path or an '
                         'nbd+unix URI: %r' % path)
    limits = limits or Limits.from_conf(conf)
    cmd = build_command(path, qemu_format, conf, limits)
    started = []
    try:
        stdout, _stderr = processutils.execute(
            *cmd,
            env_variables=dict(ENVIRONMENT,
                               PATH=os.environ.get('PATH', os.defpath)),
            # A session of its own, so a timeout can kill the whole group.
            preexec_fn=os.setsid,
            on_execute=started.append,
            timeout=limits.timeout,
            loglevel=logging.DEBUG)
    except subprocess.TimeoutExpired:
        _kill_group(started[0])
        raise exception.QemuImgTimeout(
            'qemu-img info on %s ran for more than %s s and was killed'
            % (qemu_format, limits.timeout))
    except OSError as err:
        raise exception.QemuImgNotFound(
            'cannot run %s: %s' % (cmd[0], err.strerror))
    except processutils.ProcessExecutionError as err:
        raise _classify_failure(err, cmd, conf, limits)
    return _decode(stdout)


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        # A root helper's children are not ours to kill; the CPU cap they
        # inherited still bounds them.
        LOG.warning('could not kill process group %d of a timed-out '
                    'qemu-img run', proc.pid)
    proc.communicate()


def _classify_failure(err, cmd, conf, limits):
    """Map a failed run to the named error that says what happened."""
    # The message goes back to whoever uploaded the image: it names the
    # copy by its file name, not by the host's workspace path.
    stderr = _scrubbed((err.stderr or '').strip(), cmd[-1])
    brief = stderr[:_MAX_STDERR]
    rc = err.exit_code
    signum = -rc if rc is not None and rc < 0 else None
    if signum is None and conf[opts.QEMU_IMG_GROUP].root_helper and rc > 128:
        # sudo and rootwrap report a child's signal as 128 + N.
        signum = rc - 128
    if rc in (_EXEC_NOT_FOUND, _EXEC_FAILED) and 'prlimit' in stderr:
        return exception.QemuImgNotFound(
            'cannot run %s: %s' % (conf[opts.QEMU_IMG_GROUP].qemu_img_path,
                                   brief))
    memory_words = any(w in stderr.lower() for w in _MEMORY_WORDS)
    if signum in _CPU_SIGNALS:
        return exception.QemuImgLimitExceeded(
            'qemu-img was killed by %s: its CPU-time cap of %s s was reached'
            % (signal.Signals(signum).name, limits.cpu_time))
    if memory_words and (signum is not None or rc == 1):
        return exception.QemuImgLimitExceeded(
            'qemu-img ran out of memory under its address-space cap of %s '
            'bytes: %s' % (limits.address_space, brief))
    if signum is not None:
        return exception.QemuImgFailed(
            'qemu-img died of signal %s: %s' % (_signal_name(signum), brief))
    if rc == 1 and _TRUNCATED.search(stderr):
        return exception.QemuImgFoundImageBroken(
            exception.IMAGE_TRUNCATED,
            'qemu-img found the image truncated: %s' % brief)
    if rc == 1 and _CORRUPT.search(stderr):
        return exception.QemuImgFoundImageBroken(
            exception.IMAGE_CORRUPT,
            'qemu-img found the image corrupt: %s' % brief)
    return exception.QemuImgFailed(
        'qemu-img exited with status %s: %s' % (rc, brief))


def _scrubbed(text, target):
    """*text* naming the image as its file name, not by a host path."""
    match = NBD_UNIX_URI.match(target)
    if match is None:
        return text.replace(target, os.path.basename(target))
    socket_path = match.group(1)
    # qemu-img spells the URI its own way (one slash fewer) in messages.
    for spelling in (target, 'nbd+unix://?socket=' + socket_path,
                     socket_path):
        text = text.replace(spelling, 'nbd-export')
    return text


def _signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _decode(stdout):
    try:
        info = json.loads(stdout)
    except ValueError as err:
        raise exception.QemuImgBadOutput(
            'qemu-img printed output that is not JSON (%s): %r'
            % (err, stdout[:200]))
    if not isinstance(info, dict):
        raise exception.QemuImgBadOutput(
            'qemu-img printed JSON that is not an object: %r' % stdout[:200])
    return info
