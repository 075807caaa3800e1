"""Can this host run a libguestfs appliance at all, and if not, why?

:func:`check` is the quick pre-flight that ``tools/check-appliance`` runs
before the test suite (and an operator can run after installing): it
names the missing piece (the Python binding, a kernel for supermin to
build the appliance from) before it launches an appliance without any
image, and reports how long that took or the first line of its error.
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

import glob
import os
import tempfile
import time

from qimgintrospect import exception
from qimgintrospect.inspectors.guest import appliance

#: Where supermin looks for the host's kernel (SUPERMIN_KERNEL overrides).
_KERNELS = '/boot/vmlinuz-*'


def check(conf, workdir=None):
    """Launch an appliance without any image; return seconds it took.

    :param workdir: a directory for the appliance's files (default: a
        temporary directory, removed afterwards).
    :raises InspectionFailed: guest-unavailable, with the reason: the
        binding cannot be imported, supermin has no kernel to build the
        appliance from, or the appliance did not start (libguestfs's
        first line of error, or the launch timeout).
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
        try:
            with appliance.Appliance(gfs, [], conf, tmp):
                pass
        except appliance.LaunchFailed as failed:
            raise _unavailable('the appliance did not start: %s'
                               % failed.message)
        return time.monotonic() - started


def _unavailable(message):
    return exception.InspectionFailed(exception.GUEST_UNAVAILABLE, message)
