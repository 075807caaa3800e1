"""Where an inspection is, for a front end that shows it.

The core never prints. :func:`qimgintrospect.api.inspect` and
:func:`~qimgintrospect.api.inspect_many` take an optional *observer*, a
callable that receives an :class:`Event` each time a batch of images
enters a stage; the CLI turns them into a status line or a progress bar.

An observer is called from the thread doing the work (several at once in
``inspect_many``), so it must be thread-safe and quick; whatever it
raises is logged and ignored: a display never breaks an inspection.
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
import itertools
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: The header of each image is read and checked.
HEADER = 'header'
#: The private copy is made in the workspace.
COPY = 'copy'
#: qemu-img runs on the copy.
QEMU_IMG = 'qemu-img'
#: KVM is being probed: an appliance without any image started under KVM
#: and stopped as soon as its guest writes (``timeout``: the probe's).
PROBE = 'probe'
#: An appliance is starting (``accelerator``; ``timeout``: launch_timeout).
LAUNCH = 'launch'
#: The appliance is up and its drives are inspected (``timeout``: the
#: inspect_timeout of all its drives).
INSPECT = 'inspect'
#: The appliance is shut down, whatever happened.
CLOSED = 'closed'

#: One step. ``stage``: one of the names above; ``labels``: the images it
#: concerns (their paths); ``key``: the same for every event of one
#: appliance (LAUNCH, INSPECT, CLOSED) or probe, else None; ``started``:
#: time.monotonic() when the stage began; ``timeout``: seconds the stage
#: may last, or None; ``accelerator``: ``kvm``, ``tcg`` or ``default`` for
#: an appliance, else None.
Event = collections.namedtuple('Event', ['stage', 'labels', 'key', 'started',
                                         'timeout', 'accelerator'])

_keys = itertools.count(1)


def new_key():
    """A key for the events of one appliance or probe."""
    return next(_keys)


def notify(observer, stage, labels, key=None, timeout=None,
           accelerator=None):
    """Send *observer* (if any) an Event for *stage*, starting now.

    Never raises.
    """
    if observer is None:
        return
    try:
        observer(Event(stage, tuple(labels), key, time.monotonic(), timeout,
                       accelerator))
    except Exception:
        LOG.exception('progress observer failed on %s', stage)
