"""KVM or TCG: the plan, the verdict kept across processes, the fallback.

No appliance starts here: the probe and the appliance are replaced where
a test needs one to behave as a broken or a working KVM would (a real
one is in tests/functional/test_guest_accelerator.py). The libguestfs
handles that only read settings (``get_hv``, ``version``) are real.
"""

import json
import multiprocessing
import os
import time

import pytest

from qimgintrospect.inspectors.guest import accelerator
from qimgintrospect.inspectors.guest import appliance
from qimgintrospect.inspectors.guest import console
from qimgintrospect.inspectors.guest import verdicts
from qimgintrospect import opts

guestfs = pytest.importorskip('guestfs',
                              reason='python3-guestfs is not installed')


@pytest.fixture
def gconf(conf, workspace_dir, monkeypatch):
    """Guest detection on, accelerator auto, the environment neutral."""
    monkeypatch.delenv('LIBGUESTFS_BACKEND_SETTINGS', raising=False)
    monkeypatch.delenv('LIBGUESTFS_HV', raising=False)
    conf.set_override('enabled', True, opts.GUEST_GROUP)
    os.makedirs(str(workspace_dir), mode=0o700)
    return conf


def _fingerprint(**changes):
    current = verdicts.fingerprint('/usr/bin/qemu-system-x86_64', '1.48.6',
                                   'direct')
    current.update(changes)
    return current


def _verdict(accelerator_name='tcg', made_at=None, fingerprint=None):
    return verdicts.Verdict(
        accelerator_name, 'a test says so', time.time()
        if made_at is None else made_at, 0.1,
        _fingerprint() if fingerprint is None else fingerprint)


# The store.

def test_a_saved_verdict_is_loaded_on_the_same_host(workspace_dir):
    store = verdicts.VerdictStore(str(workspace_dir))
    saved = _verdict()
    store.save(saved)
    assert store.load(_fingerprint()) == saved
    assert os.stat(store.directory).st_mode & 0o777 == 0o700
    # Replaced in place: no temporary file is left beside it.
    assert os.listdir(store.directory) == ['accelerator.json']


@pytest.mark.parametrize('change', [
    {'kernel': '6.1.0-99-amd64 #1 SMP'},
    {'qemu': {'path': '/usr/bin/qemu-system-x86_64', 'size': 1,
              'mtime_ns': 2, 'rdev': 0}},
    {'libguestfs': '1.52.0'},
    {'kvm_device': None},
    {'cpu': 'another'},
    {'host': 'elsewhere'},
])
def test_a_verdict_is_forgotten_when_the_host_changes(workspace_dir,
                                                      change):
    store = verdicts.VerdictStore(str(workspace_dir))
    store.save(_verdict())
    assert store.load(_fingerprint(**change)) is None
    assert verdicts.differences(_fingerprint(), _fingerprint(**change)) == (
        sorted(change))


def test_a_verdict_is_forgotten_when_too_old(workspace_dir):
    store = verdicts.VerdictStore(str(workspace_dir))
    store.save(_verdict(made_at=time.time() - verdicts.MAX_AGE - 60))
    assert store.load(_fingerprint()) is None
    store.save(_verdict(made_at=time.time() - verdicts.MAX_AGE + 60))
    assert store.load(_fingerprint()) is not None


@pytest.mark.parametrize('content', ['', '{', '[]', '{"format": 1}',
                                     '{"format": 99, "accelerator": "kvm"}'])
def test_an_unreadable_verdict_is_ignored(workspace_dir, content):
    store = verdicts.VerdictStore(str(workspace_dir))
    os.makedirs(store.directory)
    with open(store.path, 'w') as f:
        f.write(content)
    assert store.load(_fingerprint()) is None


def _probe_in_a_process(workspace, counter, results):
    # A process of its own, as the max_workers processes sharing a
    # workspace are: it counts the probes it runs in *counter*.
    from testkit import config

    def counting_probe(gfs, conf, workdir):
        with open(counter, 'a') as f:
            f.write('%d\n' % os.getpid())
        time.sleep(0.5)
        return verdicts.Verdict('tcg', 'counted', time.time(), 0.5, None)

    accelerator.probe = counting_probe
    accelerator.kvm_usable = lambda: True
    conf = config.make_conf(workspace, guest=True, **{
        opts.GUEST_GROUP: {'backend_settings': []}})
    gfs = appliance.load_binding()
    chooser = accelerator.Chooser(gfs, conf, workspace,
                                  verdicts.VerdictStore(workspace))
    results.put(chooser.plan().accelerator)


def test_processes_sharing_a_workspace_probe_once(gconf, workspace_dir,
                                                  tmp_path):
    counter = str(tmp_path / 'probes')
    context = multiprocessing.get_context('fork')
    results = context.Queue()
    workers = [context.Process(target=_probe_in_a_process,
                               args=(str(workspace_dir), counter, results))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert sorted(results.get(timeout=5) for _ in workers) == ['tcg'] * 4
    with open(counter) as f:
        assert len(f.read().split()) == 1
    with open(verdicts.VerdictStore(str(workspace_dir)).path) as f:
        assert json.load(f)['reason'] == 'counted'


# The plan.

def _chooser(gconf, workspace_dir, probes=None, monkeypatch=None):
    if probes is not None:
        def fake_probe(gfs, conf, workdir):
            verdict = probes.pop(0)
            return verdict and verdict._replace(made_at=time.time())

        monkeypatch.setattr(accelerator, 'probe', fake_probe)
    return accelerator.Chooser(appliance.load_binding(), gconf,
                               str(workspace_dir),
                               verdicts.VerdictStore(str(workspace_dir)))


@pytest.mark.parametrize('option, settings, env, expected', [
    ('auto', ['force_tcg'], None, ('tcg', [])),
    ('auto', ['force_kvm'], None, ('kvm', [])),
    ('auto', [], 'force_tcg', ('tcg', [])),
    ('kvm', [], None, ('kvm', ['force_kvm'])),
    ('tcg', [], None, ('tcg', ['force_tcg'])),
    # backend_settings win over the option.
    ('kvm', ['force_tcg'], None, ('tcg', [])),
])
def test_the_configuration_decides_without_a_probe(
        gconf, workspace_dir, monkeypatch, option, settings, env, expected):
    gconf.set_override('accelerator', option, opts.GUEST_GROUP)
    gconf.set_override('backend_settings', settings, opts.GUEST_GROUP)
    if env:
        monkeypatch.setenv('LIBGUESTFS_BACKEND_SETTINGS', env)
    plan = _chooser(gconf, workspace_dir, [], monkeypatch).plan()
    assert (plan.accelerator, plan.settings) == expected
    assert plan.verdict is None


def test_no_kvm_device_is_tcg_without_a_probe(gconf, workspace_dir,
                                              monkeypatch, tmp_path):
    monkeypatch.setattr(accelerator, '_KVM_DEVICE', str(tmp_path / 'none'))
    plan = _chooser(gconf, workspace_dir, [], monkeypatch).plan()
    assert (plan.accelerator, plan.settings) == ('tcg', ['force_tcg'])


def test_another_backend_is_not_probed(gconf, workspace_dir, monkeypatch):
    gconf.set_override('backend', 'libvirt', opts.GUEST_GROUP)
    plan = _chooser(gconf, workspace_dir, [], monkeypatch).plan()
    assert (plan.accelerator, plan.settings) == ('default', [])


@pytest.fixture
def with_kvm(monkeypatch):
    monkeypatch.setattr(accelerator, 'kvm_usable', lambda: True)


def test_a_probe_verdict_is_kept_and_reused(gconf, workspace_dir,
                                            monkeypatch, with_kvm):
    probes = [_verdict('tcg')]
    plan = _chooser(gconf, workspace_dir, probes, monkeypatch).plan()
    assert (plan.accelerator, plan.settings) == ('tcg', ['force_tcg'])
    assert probes == []
    # Another session (another process) finds it: no probe left to run.
    again = _chooser(gconf, workspace_dir, [], monkeypatch).plan()
    assert again.verdict == plan.verdict


def test_a_probe_that_decides_nothing_leaves_libguestfs_its_default(
        gconf, workspace_dir, monkeypatch, with_kvm):
    probes = [None, _verdict('kvm')]
    plan = _chooser(gconf, workspace_dir, probes, monkeypatch).plan()
    assert (plan.accelerator, plan.settings) == ('default', [])
    # Nothing was remembered: the next session probes again.
    plan = _chooser(gconf, workspace_dir, probes, monkeypatch).plan()
    assert (plan.accelerator, plan.settings) == ('kvm', [])


def _failed(guest_spoke):
    c = console.Console()
    c.feed('qemu-system-x86_64: error: failed to set MSR 0x10a\n')
    if guest_spoke:
        c.feed('SeaBIOS (version 1.16)\n')
    return appliance.LaunchFailed('it failed', False, 'kvm', c)


def test_a_silent_failure_under_kvm_probes_again_once(
        gconf, workspace_dir, monkeypatch, with_kvm):
    probes = [_verdict('kvm'), _verdict('tcg')]
    chooser = _chooser(gconf, workspace_dir, probes, monkeypatch)
    plan = chooser.plan()
    assert plan.accelerator == 'kvm'
    fallback = chooser.after_failure(plan, _failed(guest_spoke=False))
    assert (fallback.accelerator, fallback.settings) == ('tcg', ['force_tcg'])
    assert chooser.plan() == fallback
    assert chooser.after_failure(fallback, _failed(False)) is None
    # The new verdict is the one kept.
    assert _chooser(gconf, workspace_dir, [], monkeypatch).plan() == fallback


def test_a_failure_after_the_guest_spoke_is_not_kvms(
        gconf, workspace_dir, monkeypatch, with_kvm):
    probes = [_verdict('kvm')]
    chooser = _chooser(gconf, workspace_dir, probes, monkeypatch)
    plan = chooser.plan()
    assert chooser.after_failure(plan, _failed(guest_spoke=True)) is None
    # Nor is a failure under a configured accelerator probed.
    forced = accelerator.Plan('kvm', ['force_kvm'], None, 'accelerator')
    assert chooser.after_failure(forced, _failed(False)) is None


# The fallback keeps the appliance whole.

class _Appliance(object):
    """Launches only under force_tcg, as on a host whose KVM aborts."""

    launches = []

    def __init__(self, gfs, images, conf, workdir, accelerator_name,
                 settings, verbose=False):
        self.images = list(images)
        self.accelerator = accelerator_name
        self.settings = settings

    def __enter__(self):
        self.launches.append((self.accelerator, [i.label
                                                 for i in self.images]))
        if 'force_tcg' not in self.settings:
            raise _failed(guest_spoke=False)
        return self

    def __exit__(self, *exc_info):
        return False


def test_a_fallback_relaunches_the_same_appliance_under_tcg(
        gconf, workspace_dir, monkeypatch, with_kvm):
    from qimgintrospect.inspectors import guest
    monkeypatch.setattr(_Appliance, 'launches', [])
    monkeypatch.setattr(accelerator.appliance_mod, 'Appliance', _Appliance)
    # KVM worked when it was probed; it aborts now.
    _chooser(gconf, workspace_dir, [_verdict('kvm')], monkeypatch).plan()
    monkeypatch.setattr(accelerator, 'probe', lambda *a, **k: _verdict(
        'tcg', made_at=time.time() + 1))
    events = []
    launcher = accelerator.Launcher(
        appliance.load_binding(), gconf, str(workspace_dir),
        verdicts.VerdictStore(str(workspace_dir)), events.append)
    images = [guest.GuestImage('/copy/%d' % n, 'qcow2', 'image-%d' % n)
              for n in range(3)]
    with launcher(images) as launched:
        assert launched.accelerator == 'tcg'
        assert [i.label for i in launched.images] == [
            'image-0', 'image-1', 'image-2']
    with launcher(images[:1]):
        pass
    labels = ['image-0', 'image-1', 'image-2']
    # One batch: under KVM, then the same drives under TCG; the next
    # launch of the session goes to TCG at once.
    assert _Appliance.launches == [('kvm', labels), ('tcg', labels),
                                   ('tcg', ['image-0'])]
    assert [(e.stage, e.accelerator) for e in events[:7]] == [
        ('launch', 'kvm'), ('closed', None), ('probe', 'kvm'),
        ('closed', None), ('launch', 'tcg'), ('inspect', 'tcg'),
        ('closed', None)]
