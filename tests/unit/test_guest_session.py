"""The session's rules: who is to blame when an appliance does not start.

The appliances are made by a factory (the accelerator's Launcher in
production); here a fake one that fails as told, so the rules run in
milliseconds. Where KVM is broken the Launcher has already fallen back
to TCG by the time the session sees a failure: what reaches the session
is a host where neither starts.
"""

import contextlib

import pytest

from qimgintrospect import exception
from qimgintrospect.inspectors import guest
from qimgintrospect.inspectors.guest import appliance
from qimgintrospect.inspectors.guest import census
from qimgintrospect.inspectors.guest import session
from qimgintrospect import opts


@pytest.fixture(autouse=True)
def fresh_host_memory(monkeypatch):
    monkeypatch.setattr(session, '_host_failures', {})


@pytest.fixture
def answered(monkeypatch):
    # Every drive of a launched appliance gets an answer naming it.
    monkeypatch.setattr(census, 'answer_drives', lambda launched: [
        {'guest_stage': 'complete', 'warnings': [], 'label': i.label}
        for i in launched.images])


class Factory(object):
    """open_appliance(images); *broken(images)* says if it fails."""

    def __init__(self, broken):
        self.broken = broken
        self.launches = []

    @contextlib.contextmanager
    def __call__(self, images):
        self.launches.append([i.label for i in images])
        if self.broken(images):
            raise appliance.LaunchFailed(
                'past launch_timeout (180 s), killed [software emulation '
                '(TCG)]', True, 'tcg')

        class Launched(object):
            pass

        launched = Launched()
        launched.images = images
        yield launched


def _images(*labels, disk_format='qcow2'):
    return [guest.GuestImage('/copy/' + label, disk_format, label)
            for label in labels]


def test_a_host_where_nothing_starts_is_remembered(conf, answered):
    factory = Factory(lambda images: True)
    outcomes = session.Session(factory, _images('a', 'b'), conf).run()
    # The batch, then the canary without any image: the host's fault.
    assert factory.launches == [['a', 'b'], []]
    for outcome in outcomes:
        assert outcome.code == exception.GUEST_UNAVAILABLE
        assert 'TCG' in outcome.message
    # The next batch does not even try.
    again = session.Session(factory, _images('c'), conf).run()
    assert factory.launches == [['a', 'b'], []]
    assert again[0].message == outcomes[0].message


def test_the_memory_is_per_accelerator_option(conf, answered):
    session.Session(Factory(lambda images: True), _images('a'), conf).run()
    conf.set_override('accelerator', 'kvm', opts.GUEST_GROUP)
    factory = Factory(lambda images: False)
    outcomes = session.Session(factory, _images('a'), conf).run()
    assert factory.launches == [['a']]
    assert outcomes[0]['label'] == 'a'


def test_an_image_that_breaks_its_appliance_is_not_the_hosts_fault(
        conf, answered):
    factory = Factory(lambda images: any(i.label == 'bad' for i in images))
    outcomes = session.Session(factory, _images('good', 'bad'), conf).run()
    # The batch, the canary (fine), then each image alone.
    assert factory.launches == [['good', 'bad'], [], ['good'], ['bad']]
    assert outcomes[0]['label'] == 'good'
    assert outcomes[1].code == exception.GUEST_TIMEOUT
    # Nothing is remembered against the host.
    assert session._host_failures == {}


def test_encrypted_images_never_reach_an_appliance(conf, answered):
    factory = Factory(lambda images: False)
    outcomes = session.Session(
        factory, _images('secret', disk_format='luks'), conf).run()
    assert factory.launches == []
    assert outcomes[0]['guest_stage'] == 'skipped'
