"""Can this host run a libguestfs appliance at all, and if not, why?

:func:`check` is the quick pre-flight that ``tools/check-appliance`` runs
before the test suite (and an operator can run after installing): it
names the missing piece (the Python binding, a kernel for supermin to
build the appliance from) before it launches an appliance without any
image the way inspections do (probing KVM first, falling back to
software emulation where KVM is broken), and reports how long that took
and under which accelerator, or why it failed: libguestfs's error and
the last lines qemu and the appliance wrote.
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
import glob
import os
import tempfile
import time

from qimgintrospect import exception
from qimgintrospect.inspectors.guest import accelerator as accelerator_mod
from qimgintrospect.inspectors.guest import appliance

#: Where supermin looks for the host's kernel (SUPERMIN_KERNEL overrides).
_KERNELS = '/boot/vmlinuz-*'

#: A successful check: ``seconds`` the launch took (the KVM probe
#: included), the ``accelerator`` it ran under (``kvm``, ``tcg``,
#: ``default``) and ``why`` that one.
Report = collections.namedtuple('Report', ['seconds', 'accelerator', 'why'])


class CheckFailed(exception.InspectionFailed):
    """guest-unavailable, with what the appliance said before it ended.

    :ivar accelerator: what it last ran under, or None if it never ran.
    :ivar why: what chose that accelerator, or None.
    :ivar output: the last lines qemu and the appliance wrote.
    """

    def __init__(self, message, accelerator=None, why=None, output=()):
        super().__init__(exception.GUEST_UNAVAILABLE, message)
        self.accelerator = accelerator
        self.why = why
        self.output = list(output)


def check(conf, workdir=None):
    """Launch an appliance without any image as inspections would.

    Probes KVM first (without remembering the verdict) unless the
    configuration chooses the accelerator.

    :param workdir: a directory for the appliance's files (default: a
        temporary directory, removed afterwards).
    :returns: a :class:`Report`.
    :raises CheckFailed: guest-unavailable, with the reason: the binding
        cannot be imported, supermin has no kernel to build the appliance
        from, or the appliance did not start (libguestfs's error or the
        launch timeout, the accelerator, the last lines of output).
    """
    try:
        gfs = appliance.load_binding()
    except (ImportError, OSError) as err:
        raise _unavailable('the libguestfs Python binding cannot be '
                           'imported (%s): install python3-guestfs and run '
                           'with a Python that sees it (Debian\'s python3, '
                           'or a venv with system site-packages)' % err)
    kernel = os.environ.get('SUPERMIN_KERNEL')
    kernels = [kernel] if kernel else glob.glob(_KERNELS)
    readable = [k for k in kernels if os.access(k, os.R_OK)]
    if not readable:
        raise _unavailable(
            'no readable kernel %s: supermin builds the appliance from the '
            'host\'s kernel; install one (Debian: linux-image-amd64, in '
            'bindep.txt\'s guestfs profile)'
            % (kernel or 'in /boot'))
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        started = time.monotonic()
        # Verbose: should it fail, the kernel's last lines say where.
        launcher = accelerator_mod.Launcher(gfs, conf, tmp, verbose=True)
        try:
            with launcher([]) as launched:
                used = launched.accelerator
        except appliance.LaunchFailed as failed:
            plan = launcher.chooser.plan()
            raise CheckFailed('the appliance did not start: %s'
                              % failed.reason, failed.accelerator,
                              plan.why, failed.console.tail(8))
        return Report(time.monotonic() - started, used,
                      launcher.chooser.plan().why)


def _unavailable(message):
    return CheckFailed(message)
