"""What this host's KVM probe found, remembered across processes.

A KVM probe (:mod:`~qimgintrospect.inspectors.guest.accelerator`) costs
half a second where KVM works and up to ``accelerator_probe_timeout``
where it hangs: its :class:`Verdict` is kept in the workspace, so that
the next process (the CLI's next run, the Glance plugin after a restart,
the audit's next batch) launches under the right accelerator at once.

A verdict holds for :data:`MAX_AGE` seconds and only on the host it was
made on: its :func:`fingerprint` names the qemu binary libguestfs runs
(path, size, mtime), the kernel, ``/dev/kvm``, the CPU, libguestfs's
version and the backend; any change and the verdict is forgotten.

The file is ``<workspace>/.host/accelerator.json``. It is replaced
atomically (written aside, then renamed), so a reader never sees half of
it; a process that is to probe holds the workspace's external lock
``accelerator`` (oslo.concurrency, as the workspace's slots), so the
``max_workers`` processes sharing the workspace probe once between them.
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
import hashlib
import json
import os
import socket
import tempfile
import time

from oslo_concurrency import lockutils
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: Seconds a verdict holds even if nothing on the host seems to change
#: (the outer hypervisor of a VM may be upgraded or the VM migrated).
MAX_AGE = 24 * 3600

#: The directory of the workspace that holds facts about the host.
HOST_DIR = '.host'
_FILE = 'accelerator.json'
_LOCK = 'accelerator'
_FORMAT = 1

#: What a probe concluded. ``accelerator``: ``kvm`` (the guest ran) or
#: ``tcg`` (KVM is unusable); ``reason``: why, in a sentence; ``made_at``:
#: wall-clock time (seconds since the epoch); ``probe_seconds``: how long
#: the probe took; ``fingerprint``: the host it was made on.
Verdict = collections.namedtuple('Verdict', [
    'accelerator', 'reason', 'made_at', 'probe_seconds', 'fingerprint'])


def age(verdict):
    """Seconds since *verdict* was made."""
    return max(0.0, time.time() - verdict.made_at)


def fingerprint(hv, libguestfs_version, backend):
    """What the verdict of a probe depends on, as a JSON-able dict.

    :param hv: the qemu binary libguestfs runs (``get_hv()``, which
        honours ``LIBGUESTFS_HV``).
    """
    uname = os.uname()
    return {
        'host': socket.gethostname(),
        'kernel': '%s %s' % (uname.release, uname.version),
        'qemu': _file_identity(hv),
        'kvm_device': _device_identity('/dev/kvm'),
        'cpu': _cpu_identity(),
        'libguestfs': libguestfs_version,
        'backend': backend,
    }


def _file_identity(path):
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return {'path': path, 'missing': True}
    return {'path': real, 'size': st.st_size, 'mtime_ns': st.st_mtime_ns,
            'rdev': st.st_rdev}


def _device_identity(path):
    # A device node's times change with use; its number does not.
    try:
        return os.stat(path).st_rdev
    except OSError:
        return None


def _cpu_identity():
    # A VM migrated to another host may get another CPU model or flags,
    # which is what nested KVM breaks on.
    try:
        with open('/proc/cpuinfo') as f:
            text = f.read().split('\n\n', 1)[0]
    except OSError:
        return None
    wanted = [line for line in text.splitlines()
              if line.split(':', 1)[0].strip() in ('vendor_id', 'model name',
                                                   'flags')]
    return hashlib.sha256('\n'.join(wanted).encode()).hexdigest()[:16]


def differences(old, new):
    """The fingerprint keys whose values differ, sorted."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class VerdictStore(object):
    """The verdict file of one workspace directory.

    :param workspace_dir: the ``[introspection_workspace] directory``;
        it must exist (the workspace creates it before any appliance).
    """

    def __init__(self, workspace_dir):
        self.directory = os.path.join(os.path.abspath(workspace_dir),
                                      HOST_DIR)
        self.path = os.path.join(self.directory, _FILE)
        self._lock_dir = os.path.join(os.path.abspath(workspace_dir),
                                      '.locks')

    def load(self, current):
        """The stored verdict if it holds for fingerprint *current*.

        A verdict made on another host, too old, or unreadable is
        forgotten (logged, and None is returned); the file is left for
        the next :meth:`save` to replace.
        """
        try:
            with open(self.path) as f:
                data = json.load(f)
            if data.pop('format', None) != _FORMAT:
                raise ValueError('unknown format')
            verdict = Verdict(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:
            LOG.warning('ignoring the unreadable KVM verdict %s: %s',
                        self.path, err)
            return None
        changed = differences(verdict.fingerprint, current)
        if changed:
            LOG.info('forgetting the KVM verdict of %s: the host changed '
                     'since (%s)', self.path, ', '.join(changed))
            return None
        if age(verdict) > MAX_AGE:
            LOG.info('forgetting the KVM verdict of %s: made %d h ago',
                     self.path, age(verdict) // 3600)
            return None
        return verdict

    def save(self, verdict):
        """Replace the stored verdict with *verdict*, atomically.

        A verdict that cannot be written is logged and only lost: the
        next process probes again.
        """
        data = dict(verdict._asdict(), format=_FORMAT)
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix='.accelerator-',
                                       dir=self.directory)
            try:
                with os.fdopen(fd, 'w') as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                    f.write('\n')
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as err:
            LOG.warning('cannot record the KVM verdict in %s: %s',
                        self.path, err)

    def forget(self):
        """Remove the stored verdict (the next launch probes again)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    @contextlib.contextmanager
    def probing(self):
        """Hold the right to probe: one thread of one process at a time.

        The others wait here, then find the verdict just saved.
        """
        os.makedirs(self._lock_dir, mode=0o700, exist_ok=True)
        with lockutils.lock('%s/%s' % (self.directory, _LOCK),
                            external=False):
            with lockutils.external_lock(_LOCK, lock_path=self._lock_dir):
                yield
