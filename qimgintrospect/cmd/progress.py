"""What the CLI shows on stderr while the core works.

The core reports its stages to a :mod:`qimgintrospect.progress` observer;
the two displays here turn them into tqdm output on stderr, only when
stderr is a terminal (stdout keeps the JSON or table alone):

* :class:`StageLine` (``inspect``): one line naming the stage, and for
  the guest stage how long the KVM probe, the appliance's start or its
  inspection has taken against its timeout
  (``guest: starting the appliance under TCG  12 s of 180 s``);
* :class:`ApplianceStatus` (``audit``): the probe and the appliances
  starting and running, as the postfix of the audit's progress bar.

A ticker thread redraws every second, so the seconds count while the core
is blocked in libguestfs; log records are routed through tqdm so they do
not tear the line.
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

import contextlib
import logging
import os
import threading
import time

import tqdm

from qimgintrospect import progress

_TICK = 1.0

_ACCELERATORS = {'kvm': ' under KVM', 'tcg': ' under TCG'}


def screen(stream):
    """tqdm's ``ncols`` and ``nrows`` for the terminal *stream* is.

    80 by 24 where it says 0 (a fresh pseudo-terminal does), where tqdm
    would otherwise draw nothing.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return {'ncols': 80, 'nrows': 24}
    return {'ncols': size.columns or 80, 'nrows': size.lines or 24}


def _seconds(event, now):
    spent = '%d s' % (now - event.started)
    if event.timeout:
        spent += ' of %d s' % event.timeout
    return spent


def _images(labels):
    return '%d drive%s' % (len(labels), '' if len(labels) == 1 else 's')


def describe(event, now):
    """One event as a short phrase, with the time spent so far."""
    stage = event.stage
    if stage == progress.HEADER:
        return 'checking the header'
    if stage == progress.COPY:
        return 'copying into the workspace'
    if stage == progress.QEMU_IMG:
        return 'qemu-img info'
    if stage == progress.PROBE:
        return 'guest: probing KVM  %s' % _seconds(event, now)
    if stage == progress.LAUNCH:
        return 'guest: starting the appliance%s  %s' % (
            _ACCELERATORS.get(event.accelerator, ''), _seconds(event, now))
    if stage == progress.INSPECT:
        return 'guest: inspecting %s%s  %s' % (
            _images(event.labels), _ACCELERATORS.get(event.accelerator, ''),
            _seconds(event, now))
    return stage


class _Ticking(object):
    """A tqdm display redrawn every second until closed."""

    def __init__(self, bar):
        self.bar = bar
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if not bar.disable:
            self._thread = threading.Thread(target=self._tick, daemon=True,
                                            name='progress-ticker')
            self._thread.start()

    def _tick(self):
        while not self._stop.wait(_TICK):
            self.redraw()

    def redraw(self):
        raise NotImplementedError

    def close(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.bar.close()

    @contextlib.contextmanager
    def logging_through(self):
        """Route the log records meant for the bar's stream through tqdm.

        The handlers keep their level and format; only their stream is
        lent to tqdm, which clears the line, writes the record and draws
        the line again.
        """
        if self.bar.disable:
            yield self
            return
        stream = self.bar.fp
        handlers = [h for h in logging.getLogger().handlers
                    if isinstance(h, logging.StreamHandler)
                    and getattr(h, 'stream', None) in (stream, _raw(stream))]
        if not handlers:
            yield self
            return
        proxy = _ThroughTqdm(_raw(stream))
        previous = [h.setStream(proxy) for h in handlers]
        try:
            yield self
        finally:
            for handler, old in zip(handlers, previous):
                handler.setStream(old)


def _raw(stream):
    # tqdm wraps the file it is given; handlers hold the original.
    return getattr(stream, '_wrapped', stream)


class _ThroughTqdm(object):
    """A stream whose writes go through tqdm.write."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        tqdm.tqdm.write(text, file=self.stream, end='')

    def flush(self):
        self.stream.flush()


class StageLine(_Ticking):
    """One status line for one image: ``inspect``'s observer.

    :param stream: where to draw (the CLI's stderr).
    :param enabled: draw at all (stderr is a terminal and not
        ``--no-progress``); disabled, it only ignores events.
    """

    def __init__(self, stream, enabled):
        self._current = None
        super().__init__(tqdm.tqdm(file=stream, bar_format='{desc}',
                                   disable=not enabled, leave=False,
                                   **screen(stream)))

    def __call__(self, event):
        with self._lock:
            if event.stage == progress.CLOSED:
                if (self._current is not None
                        and self._current.key == event.key):
                    self._current = None
            else:
                self._current = event
        self.redraw()

    def redraw(self):
        with self._lock:
            current = self._current
        if current is not None and not self.bar.disable:
            self.bar.set_description_str(
                'qimg-introspect: ' + describe(current, time.monotonic()))


class ApplianceStatus(_Ticking):
    """The guest stage as the postfix of the audit's progress bar.

    ``probing KVM 3 s; appliances: 1 starting under TCG (12 s), 1
    inspecting (40 s)``. The audit's own counting (``bar.update``) stays
    the audit's.
    """

    def __init__(self, bar):
        self._live = {}
        super().__init__(bar)

    def __call__(self, event):
        if event.key is None:
            return
        with self._lock:
            if event.stage == progress.CLOSED:
                self._live.pop(event.key, None)
            else:
                self._live[event.key] = event
        self.redraw()

    def redraw(self):
        with self._lock:
            live = list(self._live.values())
        if self.bar.disable:
            return
        self.bar.set_postfix_str(summarise(live, time.monotonic()))

    def close(self):
        with self._lock:
            self._live.clear()
        super().close()


def summarise(events, now):
    """The probe and appliances of *events* (the live ones) in one line."""
    parts = []
    for event in events:
        if event.stage == progress.PROBE:
            parts.append('probing KVM %d s' % (now - event.started))
    starting = [e for e in events if e.stage == progress.LAUNCH]
    running = [e for e in events if e.stage == progress.INSPECT]
    if starting or running:
        appliances = []
        if starting:
            oldest = min(starting, key=lambda e: e.started)
            appliances.append('%d starting%s (%s)' % (
                len(starting), _ACCELERATORS.get(oldest.accelerator, ''),
                _seconds(oldest, now)))
        if running:
            oldest = min(running, key=lambda e: e.started)
            appliances.append('%d inspecting %s (%d s)' % (
                len(running), _images([label for e in running
                                       for label in e.labels]),
                now - oldest.started))
        parts.append('appliances: ' + ', '.join(appliances))
    return '; '.join(parts)
