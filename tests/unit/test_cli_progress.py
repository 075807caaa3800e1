"""The CLI's displays of the core's stages: what they say, and when not.

The real terminal is in tests/functional/test_guest_accelerator.py (the
``inspect`` status line under a pseudo-terminal); here the phrases and
the bookkeeping of appliances, on a StringIO.
"""

import io
import logging

from qimgintrospect.cmd import progress as display
from qimgintrospect import progress


def _event(stage, key=None, started=100.0, timeout=None, accelerator=None,
           labels=('a.qcow2',)):
    return progress.Event(stage, tuple(labels), key, started, timeout,
                          accelerator)


def test_each_stage_has_its_phrase_and_its_clock():
    now = 112.4
    assert display.describe(_event('header'), now) == 'checking the header'
    assert display.describe(_event('qemu-img'), now) == 'qemu-img info'
    assert display.describe(_event('probe', 1, timeout=10), now) == (
        'guest: probing KVM  12 s of 10 s')
    assert display.describe(_event('launch', 2, timeout=180,
                                   accelerator='tcg'), now) == (
        'guest: starting the appliance under TCG  12 s of 180 s')
    assert display.describe(_event('inspect', 2, timeout=240,
                                   accelerator='kvm',
                                   labels=('a', 'b')), now) == (
        'guest: inspecting 2 drives under KVM  12 s of 240 s')


def test_the_audit_postfix_counts_appliances_starting_and_running():
    live = [_event('probe', 1, started=95.0, timeout=10),
            _event('launch', 2, started=90.0, accelerator='tcg',
                   timeout=180),
            _event('launch', 3, started=99.0, accelerator='tcg',
                   timeout=180),
            _event('inspect', 4, started=80.0, labels=('x', 'y', 'z'))]
    assert display.summarise(live, 100.0) == (
        'probing KVM 5 s; appliances: 2 starting under TCG (10 s of 180 s),'
        ' 1 inspecting 3 drives (20 s)')
    assert display.summarise([], 100.0) == ''


def _bar(stream):
    import tqdm
    return tqdm.tqdm(file=stream, disable=False, ncols=120, nrows=24)


def test_appliance_status_forgets_closed_appliances():
    stream = io.StringIO()
    status = display.ApplianceStatus(_bar(stream))
    status(_event('launch', 7, accelerator='tcg', timeout=180))
    assert '1 starting under TCG' in status.bar.postfix
    status(_event('inspect', 7, accelerator='tcg'))
    assert '1 inspecting 1 drive' in status.bar.postfix
    # Events without a key (header, copy, qemu-img) are not appliances.
    status(_event('header'))
    status(_event('closed', 7))
    assert status.bar.postfix == ''
    status.close()


def test_a_disabled_line_draws_nothing():
    stream = io.StringIO()
    line = display.StageLine(stream, enabled=False)
    with line.logging_through():
        line(_event('probe', 1, timeout=10))
    line.close()
    assert stream.getvalue() == ''


def test_log_records_go_through_the_line_at_their_own_level(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(stream, 'isatty', lambda: True, raising=False)
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        line = display.StageLine(stream, enabled=True)
        with line.logging_through():
            line(_event('launch', 1, timeout=180, accelerator='tcg'))
            logging.getLogger('qimgintrospect.test').warning('KVM broken')
            logging.getLogger('qimgintrospect.test').info('not shown')
            assert handler.stream is not stream
        assert handler.stream is stream
        line.close()
    finally:
        root.removeHandler(handler)
    written = stream.getvalue()
    assert 'KVM broken\n' in written
    assert 'not shown' not in written
    assert 'starting the appliance under TCG' in written
