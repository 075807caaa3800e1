"""The appliances of one call: shared first, alone where needed.

A :class:`Session` inspects the images of one owner. It launches one
appliance over all of them, takes each drive's answer that the census
vouches for (:func:`~qimgintrospect.inspectors.guest.census.answer_drives`)
and inspects the others again, each in an appliance of its own, where no
answer can come from another drive. It decides who is to blame when an
appliance fails:

* a launch that fails is blamed on the host only when an appliance
  without any image fails too (the *canary*); such a host is remembered
  for :data:`HOST_FAILURE_TTL` seconds per configuration, so a host that
  cannot launch does not cost every batch a ``launch_timeout``. A broken
  KVM is not such a host: the factory (the
  :class:`~qimgintrospect.inspectors.guest.accelerator.Launcher`) probes
  it and launches under software emulation instead, the canary
  included, so a host is unavailable only when neither KVM nor TCG can
  launch an appliance;
* a shared appliance that fails or dies sends every image not yet
  answered to an appliance of its own;
* an image alone in its appliance gets the error of that appliance.

Appliances are made by a factory (``open_appliance(images)`` returning a
context manager), so the rules above have fast tests without libguestfs.
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

import threading
import time

from oslo_log import log as logging

from qimgintrospect import exception
from qimgintrospect.inspectors.guest import appliance as appliance_mod
from qimgintrospect.inspectors.guest import census
from qimgintrospect.inspectors.guest import stage
from qimgintrospect import opts

LOG = logging.getLogger(__name__)

#: Formats whose contents an appliance cannot read without a key.
UNREADABLE_FORMATS = frozenset(['luks'])

#: Seconds a host that could not launch an appliance without any image
#: is remembered, per configuration. Where KVM hangs, each launch waits
#: for launch_timeout: later inspections then skip the guest stage at once
#: (guest-unavailable) instead of waiting twice per batch.
HOST_FAILURE_TTL = 300

_host_failures = {}
_host_failures_lock = threading.Lock()


class Session(object):
    """The inspections of one call over the images of one owner.

    :param open_appliance: ``open_appliance(images)`` returns a context
        manager that yields a launched appliance (with ``images``,
        ``devices`` and ``call()``), raising
        :class:`~.appliance.LaunchFailed` on entry when it does not start
        and :class:`~.appliance.ApplianceLost` from ``call()`` when it
        dies.
    :param images: the :class:`~qimgintrospect.inspectors.guest.GuestImage`
        list, of one owner.
    :param conf: the options; ``[introspection_guest]`` keys the memory
        of a host that cannot launch.
    """

    def __init__(self, open_appliance, images, conf):
        self.open_appliance = open_appliance
        self.images = images
        self.outcomes = [None] * len(images)
        group = conf[opts.GUEST_GROUP]
        self._host_key = (group.backend, tuple(group.backend_settings),
                          group.accelerator, group.memory_mb,
                          group.launch_timeout)
        self._canary = None

    def run(self):
        """Return, per image, its findings dict or its IntrospectionError.

        Never raises for one image's sake.
        """
        readable = []
        for index, image in enumerate(self.images):
            if image.disk_format in UNREADABLE_FORMATS:
                self.outcomes[index] = stage.findings(
                    stage.SKIPPED, 'guest OS detection skipped: %s contents '
                    'are encrypted' % image.disk_format)
            else:
                readable.append(index)
        if not readable:
            return self.outcomes
        for index in self._attempt(readable):
            # Alone in its appliance, no answer can involve another drive,
            # so this attempt leaves nothing to redo.
            self._attempt([index])
        return self.outcomes

    def _attempt(self, indexes):
        """Inspect *indexes* in one appliance; return those to redo alone."""
        host_failure = _recent_host_failure(self._host_key)
        if host_failure is not None:
            for i in indexes:
                self.outcomes[i] = host_failure
            return []
        retry = []
        try:
            with self.open_appliance(
                    [self.images[i] for i in indexes]) as appliance:
                _forget_host_failure(self._host_key)
                answers = census.answer_drives(appliance)
                for position, answer in enumerate(answers):
                    if answer is census.REDO_ALONE:
                        retry.append(indexes[position])
                    else:
                        self.outcomes[indexes[position]] = answer
        except appliance_mod.LaunchFailed as failed:
            retry = self._launch_failed(indexes, failed)
        except appliance_mod.ApplianceLost as lost:
            retry = self._lost(indexes, lost.error)
        except RuntimeError as err:
            # libguestfs refused a call that concerns every drive
            # (inspect_os, the census): the appliance is alive, but which
            # image caused it is not known.
            retry = self._lost(indexes, stage.findings(
                stage.FAILED, 'guest OS detection failed: %s'
                % appliance_mod.first_line(err)))
        return retry

    def _lost(self, indexes, outcome):
        pending = [i for i in indexes if self.outcomes[i] is None]
        if len(indexes) == 1:
            self.outcomes[indexes[0]] = outcome
            return []
        LOG.warning('appliance over %d drives failed; inspecting the %d not '
                    'yet answered alone', len(indexes), len(pending))
        return pending

    def _launch_failed(self, indexes, failed):
        host_error = self._host_cannot_launch()
        if host_error:
            for i in indexes:
                self.outcomes[i] = host_error
            return []
        if len(indexes) > 1:
            LOG.warning('appliance over %d drives did not start (%s), one '
                        'without them does; inspecting each alone',
                        len(indexes), failed.message)
            return list(indexes)
        code = (exception.GUEST_TIMEOUT if failed.timed_out
                else exception.GUEST_APPLIANCE_FAILED)
        self.outcomes[indexes[0]] = exception.InspectionFailed(
            code, 'the libguestfs appliance did not start with this image '
                  'attached: %s' % failed.message)
        return []

    def _host_cannot_launch(self):
        """Launch an appliance with no image; return its error, if any.

        Tells a host that cannot run appliances at all (no kernel, broken
        KVM, bogus backend) from an image that breaks its appliance.
        """
        if self._canary is None:
            try:
                with self.open_appliance([]):
                    self._canary = False
            except appliance_mod.LaunchFailed as failed:
                self._canary = exception.InspectionFailed(
                    exception.GUEST_UNAVAILABLE,
                    'the libguestfs appliance cannot start on this host: %s'
                    % failed.message)
                _remember_host_failure(self._host_key, self._canary)
            except appliance_mod.ApplianceLost:
                self._canary = False
        return self._canary


def _recent_host_failure(key):
    with _host_failures_lock:
        when, error = _host_failures.get(key, (None, None))
        if when is not None and time.monotonic() - when < HOST_FAILURE_TTL:
            return error
        _host_failures.pop(key, None)
        return None


def _remember_host_failure(key, error):
    LOG.warning('%s; guest OS detection is skipped for %d s',
                error.message, HOST_FAILURE_TTL)
    with _host_failures_lock:
        _host_failures[key] = (time.monotonic(), error)


def _forget_host_failure(key):
    with _host_failures_lock:
        _host_failures.pop(key, None)
