"""A broken KVM costs one short probe, once per host; a working one nothing.

libguestfs runs a qemu wrapper (``LIBGUESTFS_HV``, testkit/qemuwrapper.py)
that behaves as the KVM of the host being tested: it hangs without a word
or aborts when a guest would boot under KVM, or boots it under software
emulation instead (a working KVM, as far as the probe can tell), and it
logs every run, which is how these tests see whether a probe happened.
Everything else is real: libguestfs, qemu, the appliance, the CLI.

Appliance launches cost 20-40 s each here: three in this module (the
CLI twice, one batch of two drives); the rest only probe, or are killed
within seconds.
"""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import psutil
import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect.inspectors.guest import accelerator
from qimgintrospect.inspectors.guest import appliance
from qimgintrospect.inspectors.guest import session
from qimgintrospect.inspectors.guest import verdicts
from qimgintrospect import opts
from testkit import config
from testkit import guestimages
from testkit import imagebuilder
from testkit import qemuwrapper

pytest.importorskip('guestfs', reason='python3-guestfs is not installed')
if not os.path.exists(qemuwrapper.REAL_QEMU):
    pytest.skip('qemu-system-x86_64 is not installed',
                allow_module_level=True)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
UBUNTU = guestimages.GUESTS['ubuntu'].os_release
# The default configuration, not the tests' forced software emulation.
AUTO = {opts.GUEST_GROUP: {'backend_settings': []}}


@pytest.fixture(scope='module')
def ubuntu(tmp_path_factory):
    # Built before any test points LIBGUESTFS_HV at a wrapper.
    return guestimages.build(tmp_path_factory.mktemp('guests'),
                             ['ubuntu'])['ubuntu']


@pytest.fixture
def kvm_here(monkeypatch):
    # The wrappers stand for KVM; the probe needs /dev/kvm to try it.
    if not accelerator.kvm_usable():
        pytest.skip('no usable /dev/kvm: nothing to probe')
    monkeypatch.delenv('LIBGUESTFS_BACKEND_SETTINGS', raising=False)


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _drives(run):
    # The appliance's own root drive, plus one per image (or the scratch
    # drive of an appliance without any image).
    return run['args'].count('-drive') - 1


def _qemu_children():
    return [p for p in psutil.Process().children(recursive=True)
            if p.name().startswith('qemu')]


def _run_on_a_terminal(command, env, timeout):
    """Run *command* with stderr on a pseudo-terminal; stdout piped.

    :returns: (exit code, stdout, what the terminal received).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 120, 0,
                                                       0))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    received = b''
    stdout = proc.stdout
    open_fds = [master, stdout.fileno()]
    out = b''
    try:
        while open_fds:
            ready, _, _ = select.select(open_fds, [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError('no output for %d s' % timeout)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b''
                if not data:
                    open_fds.remove(fd)
                elif fd == master:
                    received += data
                else:
                    out += data
        return proc.wait(timeout), out.decode(), received.decode(
            'utf-8', 'replace')
    finally:
        os.close(master)
        stdout.close()


def _guest_properties(output):
    properties = output['properties']
    assert properties['os_distro'] == UBUNTU['ID']
    assert properties['os_version'] == UBUNTU['VERSION_ID']
    assert output['warnings'] == []


def test_a_hanging_kvm_costs_one_probe_then_none(cli, ubuntu, tmp_path,
                                                 kvm_here):
    wrapper = qemuwrapper.write(tmp_path / 'hv', 'kvm-hangs')
    env = wrapper.environ()
    cli.set(opts.GUEST_GROUP, 'enabled', True)
    command = cli.command() + ['inspect', ubuntu, '-f', 'json',
                               '--config-file', str(cli.config_file)]

    # The first process: the default configuration, on a terminal.
    code, stdout, terminal = _run_on_a_terminal(command, env, timeout=600)
    assert code == 0, terminal
    _guest_properties(json.loads(stdout))
    probes = wrapper.boots(kvm=True)
    assert len(probes) == 1
    probe, = probes
    # The probe had no image, it was killed, and TCG came after it.
    assert _drives(probe) == 1
    assert _gone(probe['pid'])
    emulated = wrapper.boots(kvm=False)
    assert len(emulated) == 1 and _drives(emulated[0]) == 1
    assert emulated[0]['time'] > probe['time']
    # What the operator saw: the stages, the probe, the warning.
    for said in ('probing KVM', 'starting the appliance under TCG',
                 'inspecting 1 drive under TCG',
                 'KVM is unusable on this host',
                 'wrote nothing to its console within 10 s'):
        assert said in terminal
    store = verdicts.VerdictStore(cli.workspace)
    with open(store.path) as f:
        verdict = json.load(f)
    assert verdict['accelerator'] == 'tcg'
    assert verdict['fingerprint']['qemu']['path'] == wrapper.path
    assert config.workspace_leftovers(cli.workspace) == []

    # The second process reuses the verdict: not one run under KVM.
    runs = len(wrapper.runs())
    code, output = cli.inspect_json(ubuntu, env=env, timeout=600)
    assert code == 0, output
    _guest_properties(output)
    later = wrapper.runs()[runs:]
    assert [r['kvm'] for r in later if r['boot']] == [False]
    assert not any(r['kvm'] for r in later)


def test_a_working_kvm_passes_the_probe_at_once(tmp_path, monkeypatch,
                                                kvm_here):
    wrapper = qemuwrapper.write(tmp_path / 'hv', 'kvm-as-tcg')
    monkeypatch.setenv('LIBGUESTFS_HV', wrapper.path)
    workspace = tmp_path / 'workspace'
    os.makedirs(str(workspace), mode=0o700)
    conf = config.make_conf(workspace, guest=True, **AUTO)
    store = verdicts.VerdictStore(str(workspace))
    chooser = accelerator.Chooser(appliance.load_binding(), conf,
                                  str(workspace), store)
    plan = chooser.plan()
    assert (plan.accelerator, plan.settings) == ('kvm', [])
    assert 'wrote to its console' in plan.verdict.reason
    probe, = wrapper.boots()
    assert probe['kvm'] and _drives(probe) == 1
    # Stopped as soon as the guest spoke: nothing left running.
    assert _gone(probe['pid'])
    assert _qemu_children() == []
    assert store.load(plan.verdict.fingerprint) == plan.verdict


def test_a_kvm_that_broke_since_its_verdict_keeps_the_batch(
        ubuntu, tmp_path, monkeypatch, kvm_here):
    wrapper = qemuwrapper.write(tmp_path / 'hv', 'kvm-aborts')
    monkeypatch.setenv('LIBGUESTFS_HV', wrapper.path)
    workspace = tmp_path / 'workspace'
    os.makedirs(str(workspace), mode=0o700)
    conf = config.make_conf(workspace, guest=True, **AUTO)
    # KVM worked an hour ago, on this very host.
    gfs = appliance.load_binding()
    g = gfs.GuestFS(python_return_dict=True, close_on_exit=False)
    current = verdicts.fingerprint(
        g.get_hv(), '%(major)d.%(minor)d.%(release)d' % g.version(),
        conf[opts.GUEST_GROUP].backend)
    g.close()
    store = verdicts.VerdictStore(str(workspace))
    store.save(verdicts.Verdict('kvm', 'it worked', time.time() - 3600,
                                0.4, current))
    blank = imagebuilder.create(tmp_path, 'blank.qcow2', 'qcow2')
    outcomes = api.inspect_many([api.ImageRequest(ubuntu, None, 'tenant'),
                                 api.ImageRequest(blank, None, 'tenant')],
                                conf)
    for outcome in outcomes:
        assert not isinstance(outcome, exception.IntrospectionError), outcome
    assert outcomes[0].properties['os_distro'] == UBUNTU['ID']
    assert outcomes[1].details['guest_roots'] == 0
    # The batch under KVM (aborted), the probe (aborted), then the same
    # batch, both drives, under TCG, and nothing else.
    assert [(r['kvm'], _drives(r)) for r in wrapper.boots()] == [
        (True, 2), (True, 1), (False, 2)]
    assert store.load(current).accelerator == 'tcg'
    assert _qemu_children() == []
    assert config.workspace_leftovers(workspace) == []


def test_a_host_where_neither_kvm_nor_tcg_starts_is_remembered(
        ubuntu, tmp_path, monkeypatch, kvm_here):
    monkeypatch.setattr(session, '_host_failures', {})
    wrapper = qemuwrapper.write(tmp_path / 'hv', 'kvm-hangs')
    monkeypatch.setenv('LIBGUESTFS_HV', wrapper.path)
    workspace = tmp_path / 'workspace'
    # No boot under emulation fits in 6 s: TCG fails too.
    conf = config.make_conf(workspace, guest=True, **{opts.GUEST_GROUP: {
        'backend_settings': [], 'accelerator_probe_timeout': 2,
        'launch_timeout': 6}})
    first = api.inspect(ubuntu, None, conf)
    # The probe, the image's appliance and the canary (both under TCG).
    assert [(r['kvm'], _drives(r)) for r in wrapper.boots()] == [
        (True, 1), (False, 1), (False, 1)]
    warning, = first.warnings
    assert exception.GUEST_UNAVAILABLE in warning
    assert 'cannot start on this host' in warning
    assert 'software emulation (TCG)' in warning
    assert first.details['guest_stage'] == 'unavailable'
    assert first.properties['disk_format'] == 'qcow2'
    # Remembered: the next inspection launches nothing, probes nothing.
    second = api.inspect(ubuntu, None, conf)
    assert len(wrapper.boots()) == 3
    assert second.warnings == first.warnings
    assert _qemu_children() == []
    assert config.workspace_leftovers(workspace) == []


def _check_appliance(config_file, env):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tools', 'check-appliance'),
         '--config-file',
         str(config_file)], capture_output=True, text=True, env=env,
        timeout=300)


def test_check_appliance_says_why_in_qemus_words(tmp_path, kvm_here):
    wrapper = qemuwrapper.write(tmp_path / 'hv', 'kvm-aborts')
    config_file = tmp_path / 'kvm.conf'
    config.write_config_file(config_file, {
        opts.GUEST_GROUP: {'accelerator': 'kvm'}})
    proc = _check_appliance(config_file, wrapper.environ())
    assert proc.returncode == 1
    first = proc.stderr.splitlines()[0]
    assert first.startswith('check-appliance: FAILED [guest-unavailable] '
                            'under KVM (accelerator = kvm)')
    assert 'guestfs_launch failed' not in proc.stderr
    assert ('    qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69'
            in proc.stderr.splitlines())


def test_check_appliance_names_the_fallback_and_where_the_boot_stopped(
        tmp_path, kvm_here):
    wrapper = qemuwrapper.write(tmp_path / 'hv', 'kvm-hangs')
    config_file = tmp_path / 'short.conf'
    # Too short for any boot under emulation: it fails, under TCG.
    config.write_config_file(config_file, {opts.GUEST_GROUP: {
        'accelerator_probe_timeout': 2, 'launch_timeout': 8}})
    proc = _check_appliance(config_file, wrapper.environ())
    assert proc.returncode == 1
    failed = [line for line in proc.stderr.splitlines()
              if line.startswith('check-appliance: FAILED')]
    assert failed == [
        'check-appliance: FAILED [guest-unavailable] under software '
        'emulation (TCG) (the KVM probe: an appliance started under KVM '
        'wrote nothing to its console within 2 s (accelerator_probe_timeout)'
        ', as where nested KVM hangs): the appliance did not start: past '
        'launch_timeout (8 s), killed']
    # Verbose: the last console lines, where the boot stopped. How far a
    # TCG boot gets in 8 s depends on the machine's load: the firmware's
    # banner on a busy host, the kernel's log on an idle one.
    tail = proc.stderr.split('wrote:', 1)[1]
    assert re.search(r'SeaBIOS|^ +\[ *\d+\.\d+\] ', tail, re.M), tail
    assert [r['kvm'] for r in wrapper.boots()] == [True, False]
    assert all(_gone(r['pid']) for r in wrapper.boots())
