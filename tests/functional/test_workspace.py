"""The workspace: private sparse copies, quota, free space, slots, cleanup."""

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from qimgintrospect import exception
from qimgintrospect import opts
from qimgintrospect import source
from qimgintrospect import workspace
from testkit import config
from testkit import imagebuilder
from tests import conftest

MiB = imagebuilder.MiB


def _workspace(directory, quota_mb=1024, min_free_mb=0, max_workers=2,
               wait=0):
    return workspace.Workspace(str(directory), quota_mb * MiB,
                               min_free_mb * MiB, max_workers, wait)


def _digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_sparse_copy_writes_only_allocated_bytes(tmp_path):
    image = imagebuilder.sparse_raw(tmp_path, 'sparse.raw', 1024 * MiB,
                                    16 * MiB)
    ws = _workspace(tmp_path / 'ws')
    with source.open_image(image) as src, ws.slot() as slot:
        copy = slot.private_copy(src)
        assert copy.method == 'sparse'
        assert copy.bytes_copied == src.allocated
        st = os.stat(copy.path)
        assert st.st_size == 1024 * MiB
        assert st.st_blocks * 512 <= src.allocated * 1.1
        assert _digest(copy.path) == _digest(image)


def test_copy_is_private_and_source_untouched(tmp_path):
    image = imagebuilder.create(tmp_path, 'a.qcow2', 'qcow2')
    before = (os.stat(image).st_mtime_ns, _digest(image))
    ws = _workspace(tmp_path / 'ws')
    with source.open_image(image) as src, ws.slot() as slot:
        copy = slot.private_copy(src)
        assert os.stat(copy.path).st_mode & 0o777 == 0o600
        assert os.stat(ws.directory).st_mode & 0o777 == 0o700
    assert (os.stat(image).st_mtime_ns, _digest(image)) == before
    assert config.workspace_leftovers(ws.directory) == []


def test_quota_refuses_before_copying(tmp_path):
    image = imagebuilder.sparse_raw(tmp_path, 'big.raw', 64 * MiB, 8 * MiB)
    ws = _workspace(tmp_path / 'ws', quota_mb=4)
    with source.open_image(image) as src, ws.slot() as slot:
        with pytest.raises(exception.InspectionFailed) as err:
            slot.private_copy(src)
        assert err.value.code == 'workspace-quota-exceeded'
        assert os.listdir(slot.directory) == []
    assert config.workspace_leftovers(ws.directory) == []


def test_quota_counts_copies_held_by_other_slots(tmp_path):
    image = imagebuilder.sparse_raw(tmp_path, 'six.raw', 6 * MiB, 6 * MiB)
    ws = _workspace(tmp_path / 'ws', quota_mb=10)
    with source.open_image(image) as src:
        with ws.slot() as first:
            first.private_copy(src)
            with ws.slot() as second:
                with pytest.raises(exception.InspectionFailed) as err:
                    second.private_copy(src)
                assert err.value.code == 'workspace-quota-exceeded'
        # Both released: the quota is free again.
        with ws.slot() as third:
            third.private_copy(src)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A real 8 MiB tmpfs, so 'disk full' is real, not simulated."""
    mountpoint = tmp_path / 'tiny'
    mountpoint.mkdir()
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs',
                           str(mountpoint)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip('cannot mount a tmpfs here: %s' % proc.stderr)
    yield mountpoint
    subprocess.run(['umount', '-l', str(mountpoint)], check=True)


@pytest.fixture
def reflink_filesystem(tmp_path):
    """A real XFS with reflink on a loop device (where loop devices work)."""
    backing = tmp_path / 'xfs.img'
    mountpoint = tmp_path / 'xfs'
    mountpoint.mkdir()
    with open(backing, 'wb') as f:
        f.truncate(512 * MiB)
    made = subprocess.run(['mkfs.xfs', '-q', '-m', 'reflink=1', str(backing)],
                          capture_output=True)
    mounted = made.returncode == 0 and subprocess.run(
        ['mount', '-o', 'loop', str(backing), str(mountpoint)],
        capture_output=True).returncode == 0
    if not mounted:
        pytest.skip('cannot mount a loop XFS here: %s' % made.stderr)
    yield mountpoint
    subprocess.run(['umount', str(mountpoint)], check=True)


def test_reflink_copy_reads_no_data(reflink_filesystem):
    image = imagebuilder.sparse_raw(reflink_filesystem, 'data.raw', 64 * MiB,
                                    32 * MiB)
    ws = _workspace(reflink_filesystem / 'ws')
    with source.open_image(image) as src, ws.slot() as slot:
        copy = slot.private_copy(src)
        assert copy.method == 'reflink'
        assert copy.bytes_copied == 0
        assert _digest(copy.path) == _digest(image)
    assert config.workspace_leftovers(ws.directory) == []


def test_full_filesystem_refuses_up_front(tmp_path, tiny_filesystem):
    image = imagebuilder.sparse_raw(tmp_path, 'data.raw', 32 * MiB, 16 * MiB)
    ws = _workspace(tiny_filesystem / 'ws')
    with source.open_image(image) as src, ws.slot() as slot:
        with pytest.raises(exception.InspectionFailed) as err:
            slot.private_copy(src)
    assert err.value.code == 'workspace-no-space'
    assert config.workspace_leftovers(ws.directory) == []


def test_filesystem_filling_during_copy(tmp_path, tiny_filesystem):
    # The up-front check sees 1 MiB allocated; the tenant then fills the
    # holes of the file it still owns, so the copy needs 8 MiB and the
    # real disk fills in the middle of it.
    image = imagebuilder.sparse_raw(tmp_path, 'grows.raw', 8 * MiB, 1 * MiB)
    (tiny_filesystem / 'filler').write_bytes(b'\1' * 3 * MiB)
    ws = _workspace(tiny_filesystem / 'ws')
    with source.open_image(image) as src, ws.slot() as slot:
        with open(image, 'r+b') as f:
            f.write(os.urandom(8 * MiB))
        with pytest.raises(exception.InspectionFailed) as err:
            slot.private_copy(src)
    assert err.value.code == 'workspace-no-space'
    assert config.workspace_leftovers(ws.directory) == []


def test_unsafe_workspace_directory_is_refused(tmp_path):
    directory = tmp_path / 'ws'
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    with pytest.raises(exception.InspectionFailed) as err:
        _workspace(directory).ensure()
    assert err.value.code == 'workspace-unusable'


def _hold_slot(directory, ready, release):
    ws = _workspace(directory, max_workers=1)
    with ws.slot() as slot:
        with open(os.path.join(slot.directory, 'held'), 'w') as f:
            f.write('x')
        ready.set()
        release.wait(30)


def test_max_workers_counts_other_processes(tmp_path):
    directory = tmp_path / 'ws'
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_slot,
                                     args=(str(directory), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        ws = _workspace(directory, max_workers=1, wait=1)
        with pytest.raises(exception.InspectionFailed) as err:
            with ws.slot():
                pass
        assert err.value.code == 'workspace-busy'
        release.set()
        holder.join(30)
        with ws.slot() as slot:
            assert os.listdir(slot.directory) == []
    finally:
        release.set()
        holder.join(30)


def test_max_workers_counts_threads(tmp_path):
    ws = _workspace(tmp_path / 'ws', max_workers=2)
    with ws.slot() as first, ws.slot() as second:
        assert first.index != second.index
        with pytest.raises(exception.InspectionFailed) as err:
            with ws.slot():
                pass
        assert err.value.code == 'workspace-busy'


def test_leftovers_of_a_killed_process_are_swept(tmp_path):
    directory = tmp_path / 'ws'
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_slot,
                                     args=(str(directory), ready, release))
    holder.start()
    assert ready.wait(30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert config.workspace_leftovers(directory)
    assert _workspace(directory).sweep() == 1
    assert config.workspace_leftovers(directory) == []


def test_cli_cleans_workspace_on_sigterm(cli, tmp_path):
    image = imagebuilder.create(tmp_path, 'a.qcow2', 'qcow2')
    started = tmp_path / 'started'
    hang = tmp_path / 'hang'
    hang.write_text('#!/bin/sh\ntouch %s\nexec sleep 300\n' % started)
    hang.chmod(0o755)
    cli.set(opts.QEMU_IMG_GROUP, 'qemu_img_path', str(hang))
    proc = subprocess.Popen(
        conftest.CLI.command() + ['inspect', image, '-f', 'json',
                                  '--config-file', str(cli.config_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    assert config.workspace_leftovers(cli.workspace)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert 'Traceback' not in err
    assert config.workspace_leftovers(cli.workspace) == []


def test_sweep_runs_when_a_process_first_uses_the_workspace(tmp_path):
    directory = tmp_path / 'ws'
    stale = directory / 'slot-0'
    stale.mkdir(parents=True)
    (stale / 'image').write_bytes(b'stale')
    (directory / '.locks').mkdir()
    (directory / '.locks' / 'slot-0').write_bytes(b'')
    os.chmod(directory, 0o700)
    code = ('import sys; from qimgintrospect import workspace as w; '
            'ws = w.Workspace(sys.argv[1], 1 << 30, 0, 1, 0); ws.ensure()')
    subprocess.run([sys.executable, '-c', code, str(directory)], check=True)
    assert not stale.exists()
