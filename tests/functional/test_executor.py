"""The executor's error paths, each made real.

The memory cap and a non-zero exit use the real qemu-img (so does the CPU
cap in tests/functional/test_hostile.py, on a VDI whose 2 GiB block map
costs qemu-img seconds of CPU). A qemu-img that sleeps cannot be made from
an image, so the timeout, and a process that spins forever, use small
stand-in programs: the kernel limit and the kill are still real.
"""

import os
import stat
import time

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect import executor
from qimgintrospect import opts
from testkit import config
from testkit import imagebuilder


def _stand_in(tmp_path, name, body):
    path = tmp_path / name
    path.write_text('#!/bin/sh\n' + body + '\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture(scope='module')
def qcow2(tmp_path_factory):
    directory = tmp_path_factory.mktemp('executor')
    return imagebuilder.create(directory, 'small.qcow2', 'qcow2')


def _assert_pid_gone(pid_file):
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while os.path.exists('/proc/%d' % pid):
        with open('/proc/%d/stat' % pid) as f:
            if f.read().split()[2] == 'Z':
                break
        assert time.monotonic() < deadline, 'process %d still runs' % pid
        time.sleep(0.05)


def test_info_returns_qemu_img_json(conf, qcow2):
    info = executor.qemu_img_info(qcow2, 'qcow2', conf)
    assert info['format'] == 'qcow2'
    assert info['virtual-size'] == 64 * imagebuilder.MiB


def test_command_forces_format_and_caps_first(conf):
    limits = executor.Limits(cpu_time=7, address_space=123456, timeout=9)
    cmd = executor.build_command('/x/image', 'vpc', conf, limits)
    assert cmd[0] == 'prlimit'
    assert '--cpu=7' in cmd and '--as=123456' in cmd
    assert cmd[cmd.index('--') + 1] == 'qemu-img'
    assert cmd[-4:] == ['--output=json', '-f', 'vpc', '/x/image']


def test_command_caps_the_stack(conf):
    cmd = executor.build_command('/x/image', 'qcow2', conf,
                                 executor.Limits.from_conf(conf))
    assert '--stack=%d' % (2 * 1024 * 1024) in cmd[:cmd.index('--')]


def test_qemu_img_runs_with_few_arenas_and_small_stacks(
        conf, qcow2, tmp_path):
    # What makes qemu-img's memory use under the address-space cap the
    # same whatever number of threads it starts (issue 9): a stand-in
    # reports the environment and limits the real prlimit gave it.
    report = tmp_path / 'report'
    conf.set_override(
        'qemu_img_path',
        _stand_in(tmp_path, 'reporter',
                  '{ env; echo "stack $(ulimit -s)"; } > %s; echo {}'
                  % report),
        opts.QEMU_IMG_GROUP)
    executor.qemu_img_info(qcow2, 'qcow2', conf)
    seen = report.read_text().splitlines()
    assert 'MALLOC_ARENA_MAX=2' in seen
    assert 'G_SLICE=always-malloc' in seen
    assert 'LC_ALL=C' in seen
    assert 'stack 2048' in seen


def test_root_helper_runs_inside_the_caps(conf):
    conf.set_override('root_helper', 'sudo qimg-rootwrap /etc/rw.conf',
                      opts.QEMU_IMG_GROUP)
    cmd = executor.build_command('/x/image', 'raw', conf,
                                 executor.Limits.from_conf(conf))
    after = cmd[cmd.index('--') + 1:]
    assert after[:4] == ['sudo', 'qimg-rootwrap', '/etc/rw.conf', 'qemu-img']


def test_relative_path_is_rejected(conf):
    with pytest.raises(ValueError):
        executor.qemu_img_info('relative.qcow2', 'qcow2', conf)


@pytest.mark.parametrize('target', [
    'nbd://127.0.0.1:10809/export', 'nbd+unix:///?socket=relative/sock',
    'nbd+unix:///name?socket=/x/sock', 'nbd+unix:///?socket=/x/s&tls=1',
    'nbd:unix:/x/sock', 'json:{"file": {"driver": "nbd"}}'])
def test_no_target_but_an_nbd_export_on_a_unix_socket(conf, target):
    with pytest.raises(ValueError):
        executor.qemu_img_info(target, 'raw', conf)


def test_an_export_is_named_in_messages_without_its_socket_path(
        conf, tmp_path):
    # Nothing listens there: the real qemu-img fails naming the socket.
    socket_path = str(tmp_path / 'nbd-x' / 'sock')
    with pytest.raises(exception.QemuImgFailed) as err:
        executor.qemu_img_info('nbd+unix:///?socket=' + socket_path, 'raw',
                               conf)
    assert str(tmp_path) not in err.value.message
    assert 'nbd-export' in err.value.message


def test_memory_cap_stops_real_qemu_img(conf, qcow2):
    limits = executor.Limits(cpu_time=30, address_space=20 * 1024 * 1024,
                             timeout=30)
    with pytest.raises(exception.QemuImgLimitExceeded) as err:
        executor.qemu_img_info(qcow2, 'qcow2', conf, limits)
    assert err.value.code == 'qemu-img-limit-exceeded'
    assert 'address-space cap of 20971520' in err.value.message


def test_cpu_cap_kills_a_spinning_process(conf, qcow2, tmp_path):
    conf.set_override('qemu_img_path',
                      _stand_in(tmp_path, 'spin', 'while :; do :; done'),
                      opts.QEMU_IMG_GROUP)
    limits = executor.Limits(cpu_time=1, address_space=1 << 30, timeout=60)
    with pytest.raises(exception.QemuImgLimitExceeded) as err:
        executor.qemu_img_info(qcow2, 'qcow2', conf, limits)
    assert 'CPU-time cap of 1 s' in err.value.message


def test_timeout_kills_the_process(conf, qcow2, tmp_path):
    pid_file = tmp_path / 'pid'
    conf.set_override(
        'qemu_img_path',
        _stand_in(tmp_path, 'hang', 'echo $$ > %s; exec sleep 300' % pid_file),
        opts.QEMU_IMG_GROUP)
    limits = executor.Limits(cpu_time=30, address_space=1 << 30, timeout=1)
    with pytest.raises(exception.QemuImgTimeout) as err:
        executor.qemu_img_info(qcow2, 'qcow2', conf, limits)
    assert err.value.code == 'qemu-img-timeout'
    _assert_pid_gone(pid_file)


@pytest.mark.parametrize('option, missing', [
    ('qemu_img_path', '/nonexistent/qemu-img'),
    ('prlimit_path', '/nonexistent/prlimit'),
])
def test_missing_tool(conf, qcow2, option, missing):
    conf.set_override(option, missing, opts.QEMU_IMG_GROUP)
    with pytest.raises(exception.QemuImgNotFound) as err:
        executor.qemu_img_info(qcow2, 'qcow2', conf)
    assert missing in err.value.message


def test_non_zero_exit_of_real_qemu_img(conf, qcow2):
    # Forcing a format the file is not makes the real qemu-img fail.
    with pytest.raises(exception.QemuImgFailed) as err:
        executor.qemu_img_info(qcow2, 'vmdk', conf)
    assert err.value.code == 'qemu-img-failed'
    assert 'status 1' in err.value.message


@pytest.mark.parametrize('output', ['not json', '[1, 2]', ''])
def test_unparsable_output(conf, qcow2, tmp_path, output):
    conf.set_override('qemu_img_path',
                      _stand_in(tmp_path, 'liar', "printf '%s'" % output),
                      opts.QEMU_IMG_GROUP)
    with pytest.raises(exception.QemuImgBadOutput) as err:
        executor.qemu_img_info(qcow2, 'qcow2', conf)
    assert err.value.code == 'qemu-img-bad-output'


@pytest.mark.parametrize('stand_in, limits, code', [
    ('while :; do :; done', {'cpu_time': 1}, 'qemu-img-limit-exceeded'),
    ('exec sleep 300', {'timeout': 1}, 'qemu-img-timeout'),
    ('echo garbage', {}, 'qemu-img-bad-output'),
    ('echo broken >&2; exit 1', {}, 'qemu-img-failed'),
])
def test_core_api_error_leaves_workspace_empty(conf, qcow2, tmp_path,
                                               stand_in, limits, code):
    conf.set_override('qemu_img_path', _stand_in(tmp_path, 'tool', stand_in),
                      opts.QEMU_IMG_GROUP)
    for name, value in limits.items():
        conf.set_override(name, value, opts.QEMU_IMG_GROUP)
    with pytest.raises(exception.InspectionFailed) as err:
        api.inspect(qcow2, 'qcow2', conf)
    assert err.value.code == code
    assert err.value.exit_code == 4
    assert config.workspace_leftovers(
        conf[opts.WORKSPACE_GROUP].directory) == []


def test_core_api_missing_tool_leaves_workspace_empty(conf, qcow2):
    conf.set_override('qemu_img_path', '/nonexistent/qemu-img',
                      opts.QEMU_IMG_GROUP)
    with pytest.raises(exception.InspectionFailed) as err:
        api.inspect(qcow2, 'qcow2', conf)
    assert err.value.code == 'qemu-img-not-found'
    assert config.workspace_leftovers(
        conf[opts.WORKSPACE_GROUP].directory) == []
