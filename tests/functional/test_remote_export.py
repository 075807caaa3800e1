"""Remote images through the nbdkit export: qemu-img, libguestfs, faults.

Images are built with qemu-img (and mkfs.ext4 for a guest), served by a
real nginx on loopback, read by ranges into a real workspace slot and
exported by a real nbdkit with this project's python plugin. qemu-img
must say through the export what it says on the local file, while the
slot holds a small fraction of the image; nginx's access log shows that
no byte was fetched twice. A real lying server shows that a lie met by
the plugin (inside qemu-img's reads) comes back with its own code.

ONE libguestfs appliance launch in this module (software emulation).
"""

import os
import shutil
import signal
import stat
import subprocess
import time

from keystoneauth1 import plugin as ks_plugin
from keystoneauth1 import session as ks_session
import pytest

from qimgintrospect import exception
from qimgintrospect.remote import image as remote_image
from qimgintrospect import workspace
from testkit import config
from testkit import imagebuilder
from testkit import nbdclient
from testkit import webserver

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

pytestmark = pytest.mark.skipif(
    not shutil.which('nbdkit') or webserver.nginx_binary() is None,
    reason='nbdkit (nbdkit-plugin-python) and nginx are needed')

#: name -> (format, what qemu-img info must read at most).
IMAGES = {
    'data.qcow2': ('qcow2', 256 * KiB),
    # qemu's VMDK driver reads the first MiB whatever the image (it looks
    # for a text descriptor there).
    'stream.vmdk': ('vmdk', 1 * MiB + 64 * KiB),
    'sparse.raw': ('raw', 64 * KiB),
}


@pytest.fixture(scope='module')
def www(tmp_path_factory):
    """The images nginx serves: built once for the module."""
    root = tmp_path_factory.mktemp('www')
    data = imagebuilder.sparse_raw(root, 'data.raw', 1 * GiB, 64 * MiB)
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', data,
                          str(root / 'data.qcow2'))
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'vmdk', '-o',
                          'subformat=streamOptimized', data,
                          str(root / 'stream.vmdk'))
    os.unlink(data)
    imagebuilder.partitioned_raw(root, 'sparse.raw', 4 * GiB)
    return root


@pytest.fixture(scope='module')
def nginx(tmp_path_factory, www):
    with webserver.Nginx(tmp_path_factory.mktemp('nginx'), www) as server:
        yield server


def _fetched_ranges(nginx, name, since=0):
    """(first, last) of every byte range nginx served for /name.

    :param since: how many of nginx's requests to skip (another test's).
    """
    ranges = []
    for method, uri, asked, status, sent in nginx.requests()[since:]:
        if uri == '/' + name and status == 206:
            first, last = map(int, asked[len('bytes='):].split('-'))
            ranges.append((first, last))
    return ranges


@pytest.mark.parametrize('name', sorted(IMAGES))
def test_qemu_img_says_through_the_export_what_it_says_locally(
        nginx, www, slot, name):
    fmt, most = IMAGES[name]
    path = str(www / name)
    before = len(nginx.requests())
    with remote_image.open_remote(slot, nginx.url(name)) as remote:
        # What the header checks will do first: the head and the tail.
        head = remote.read_at(128 * KiB, 0)
        tail = remote.read_at(64 * KiB, remote.size - 64 * KiB)
        with open(path, 'rb') as f:
            assert head == f.read(128 * KiB)
            f.seek(-64 * KiB, os.SEEK_END)
            assert tail == f.read()
        with remote.export() as export:
            through = nbdclient.qemu_img_info(fmt, export.uri)
            names = nbdclient.qemu_img_filenames(fmt, export.uri)
        assert through == nbdclient.qemu_img_info(fmt, path)
        assert set(names) == {export.qemu_filename}
        stats = remote.stats()
    size = os.path.getsize(path)
    assert stats.size == size
    assert stats.bytes_fetched <= most + 192 * KiB
    assert stats.bytes_fetched < size / 20
    assert stats.allocated <= stats.bytes_fetched
    # No byte was fetched twice: the plugin found what the parent read.
    ranges = sorted(_fetched_ranges(nginx, name, before))
    assert sum(last - first + 1 for first, last in ranges) == (
        stats.bytes_fetched)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:])), ranges
    assert len(ranges) <= stats.requests


def test_the_export_lives_in_a_private_directory_and_goes(nginx, slot):
    with remote_image.open_remote(slot, nginx.url('data.qcow2')) as remote:
        with remote.export() as export:
            directory = os.path.dirname(export.socket)
            assert os.path.dirname(directory) == slot.directory
            assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
            assert stat.S_ISSOCK(os.stat(export.socket).st_mode)
            assert export.uri == 'nbd+unix:///?socket=' + export.socket
            with open('/proc/%d/cmdline' % export.pid, 'rb') as f:
                cmdline = f.read().split(b'\0')
            assert b'--readonly' in cmdline and b'--unix' in cmdline
            assert b'--exit-with-parent' in cmdline
            pid = export.pid
        assert not os.path.exists(directory)
        assert not _alive(pid)


def test_the_export_cannot_be_written(nginx, slot):
    with remote_image.open_remote(slot, nginx.url('sparse.raw')) as remote:
        with remote.export() as export:
            proc = subprocess.run(
                ['qemu-io', '-f', 'raw', '-c', 'write 0 512', export.uri],
                capture_output=True, text=True, timeout=60)
            assert proc.returncode != 0
            assert nbdclient.read_through(export.uri, 0, 16) == (
                remote.read_at(16, 0))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open('/proc/%d/stat' % pid) as f:
        return f.read().split()[2] != 'Z'


@pytest.mark.parametrize('lie,code', [
    ('wrong-range', exception.REMOTE_RANGE_MISMATCH),
    ('too-long', exception.REMOTE_BODY_TOO_LONG),
    ('changing', exception.IMAGE_CHANGED),
])
def test_a_lie_met_by_the_plugin_comes_back_with_its_code(
        lying_qcow2, slot, lie, code):
    with webserver.LyingServer(lying_qcow2) as liar:
        # The first block comes honestly; the plugin meets the lie.
        with remote_image.open_remote(slot,
                                      liar.url('later/' + lie)) as remote:
            with pytest.raises(exception.IntrospectionError) as caught:
                with remote.export() as export:
                    nbdclient.qemu_img_info('qcow2', export.uri)
            assert remote.stats().bytes_fetched == 64 * KiB
    assert caught.value.code == code
    # In place of the client's own failure, which it is chained to.
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert 'Input/output error' in str(caught.value.__cause__)


def test_a_failure_is_raised_even_when_the_client_coped(lying_qcow2, slot):
    with webserver.LyingServer(lying_qcow2) as liar:
        with remote_image.open_remote(
                slot, liar.url('later/wrong-range')) as remote:
            with pytest.raises(exception.ImageRefused) as caught:
                with remote.export() as export:
                    with pytest.raises(RuntimeError):
                        nbdclient.read_through(export.uri, MiB, 16)
                    # A later read fails at once: the liar is not asked.
                    asked = len(liar.seen)
                    with pytest.raises(RuntimeError):
                        nbdclient.read_through(export.uri, 2 * MiB, 16)
                    assert len(liar.seen) == asked
    assert caught.value.code == exception.REMOTE_RANGE_MISMATCH


def test_the_budget_holds_inside_the_plugin(nginx, slot):
    with remote_image.open_remote(slot, nginx.url('stream.vmdk'),
                                  budget=256 * KiB) as remote:
        with pytest.raises(exception.InspectionFailed) as caught:
            with remote.export() as export:
                nbdclient.qemu_img_info('vmdk', export.uri)
        assert remote.stats().bytes_fetched <= 256 * KiB
    assert caught.value.code == exception.WORKSPACE_QUOTA


def test_the_budget_is_reserved_in_the_quota(nginx, tmp_path):
    ws = workspace.Workspace(str(tmp_path / 'ws'), 1 * GiB, 0, 1, 0)
    with ws.slot() as held:
        with pytest.raises(exception.InspectionFailed) as caught:
            with remote_image.open_remote(held, nginx.url('sparse.raw')):
                pass
        assert caught.value.code == exception.WORKSPACE_QUOTA
        with remote_image.open_remote(held, nginx.url('sparse.raw'),
                                      budget=16 * MiB):
            assert ws.reserved_bytes() == 16 * MiB


def test_ranges_not_honoured_reserves_and_writes_nothing(nginx, slot):
    with pytest.raises(exception.RangesNotHonoured):
        with remote_image.open_remote(slot,
                                      nginx.url('noranges/data.qcow2')):
            pass
    assert os.listdir(slot.directory) == []
    assert slot.workspace.reserved_bytes() == 0


def test_an_nbdkit_that_died_is_an_export_failure(nginx, slot):
    with remote_image.open_remote(slot, nginx.url('data.qcow2')) as remote:
        with pytest.raises(exception.InspectionFailed) as caught:
            with remote.export() as export:
                os.kill(export.pid, signal.SIGKILL)
                for _ in range(100):
                    if not _alive(export.pid):
                        break
                    time.sleep(0.05)
    assert caught.value.code == exception.REMOTE_EXPORT_FAILED
    assert 'exited with -9' in caught.value.message


def test_an_nbdkit_that_cannot_start_is_an_export_failure(nginx, slot,
                                                          monkeypatch):
    # The plugin's interpreter cannot import the package: nbdkit stops
    # before it serves.
    monkeypatch.setattr('qimgintrospect.remote.nbdexport._plugin_path',
                        lambda: '/nonexistent')
    monkeypatch.setattr('qimgintrospect.remote.nbdexport.PLUGIN',
                        '/nonexistent/plugin.py')
    with remote_image.open_remote(slot, nginx.url('data.qcow2')) as remote:
        with pytest.raises(exception.InspectionFailed) as caught:
            with remote.export():
                pass
    assert caught.value.code == exception.REMOTE_EXPORT_FAILED
    assert 'before it served' in caught.value.message
    assert [n for n in os.listdir(slot.directory)
            if n.startswith('nbd-')] == []


class SwitchableToken(ks_plugin.BaseAuthPlugin):
    """A keystoneauth plugin whose token the test renews."""

    def __init__(self):
        super().__init__()
        self.token = 'token-1'

    def get_token(self, session, **kwargs):
        return self.token


def test_the_plugin_gets_renewed_tokens_without_a_command_line(slot):
    data = os.urandom(4 * MiB)
    auth = SwitchableToken()
    with webserver.LyingServer(data) as server:
        url = server.url('token')
        with remote_image.open_remote(
                slot, url, session=ks_session.Session(auth=auth)) as remote:
            with remote.export(refresh_interval=0.1) as export:
                directory = os.path.dirname(export.socket)
                credentials = os.path.join(directory, 'auth.json')
                assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
                with open('/proc/%d/cmdline' % export.pid, 'rb') as f:
                    assert b'token-1' not in f.read()
                with open('/proc/%d/environ' % export.pid, 'rb') as f:
                    assert b'token-1' not in f.read()
                assert nbdclient.read_through(export.uri, MiB, 16) == (
                    data[MiB:MiB + 16])
                # keystoneauth renews the token; the server wants the
                # new one from now on.
                auth.token = server.token = 'token-2'
                for _ in range(100):
                    with open(credentials) as f:
                        if 'token-2' in f.read():
                            break
                    time.sleep(0.05)
                assert nbdclient.read_through(export.uri, 2 * MiB, 16) == (
                    data[2 * MiB:2 * MiB + 16])
        assert [h for p, h in server.seen] == [
            'bytes=0-65535', 'bytes=1048576-1114111',
            'bytes=2097152-2162687']


@pytest.fixture(scope='module')
def guest_qcow2(tmp_path_factory):
    """An Ubuntu-like guest: a whole-disk ext4 with 100 MiB of other data.

    Made with mkfs.ext4 -d (no appliance), converted to qcow2.
    """
    directory = tmp_path_factory.mktemp('guest')
    tree = directory / 'tree'
    for sub in ('etc', 'bin', 'srv'):
        (tree / sub).mkdir(parents=True)
    (tree / 'etc' / 'os-release').write_text(
        'ID=ubuntu\nVERSION_ID="22.04"\nNAME="Ubuntu"\n'
        'PRETTY_NAME="Ubuntu 22.04.3 LTS"\n')
    (tree / 'etc' / 'fstab').write_text('/dev/sda / ext4 defaults 0 1\n')
    shutil.copy('/bin/ls', str(tree / 'bin' / 'ls'))
    (tree / 'srv' / 'blob').write_bytes(os.urandom(100 * MiB))
    raw = str(directory / 'guest.raw')
    subprocess.run(['mkfs.ext4', '-q', '-F', '-d', str(tree), '-L', 'root',
                    raw, '256M'], check=True, capture_output=True)
    path = str(directory / 'guest.qcow2')
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw, path)
    os.unlink(raw)
    return path


def test_libguestfs_inspects_the_export_reading_a_small_fraction(
        tmp_path_factory, guest_qcow2, slot):
    guestfs = pytest.importorskip('guestfs')
    root = os.path.dirname(guest_qcow2)
    with webserver.Nginx(tmp_path_factory.mktemp('nginx-guest'),
                         root) as server:
        with remote_image.open_remote(
                slot, server.url('guest.qcow2')) as remote:
            with remote.export() as export:
                g = guestfs.GuestFS(python_return_dict=True)
                try:
                    g.set_backend_settings(config.BACKEND_SETTINGS)
                    g.add_drive_opts('', protocol='nbd',
                                     server=export.server, format='qcow2',
                                     readonly=True)
                    g.launch()
                    roots = g.inspect_os()
                    distro = [g.inspect_get_distro(r) for r in roots]
                    g.mount_ro(roots[0], '/')
                    os_release = g.cat('/etc/os-release')
                    g.shutdown()
                finally:
                    g.close()
            stats = remote.stats()
        fetched = sorted(_fetched_ranges(server, 'guest.qcow2'))
    assert roots == ['/dev/sda']
    assert distro == ['ubuntu']
    assert os_release.startswith('ID=ubuntu\n')
    size = os.path.getsize(guest_qcow2)
    assert stats.bytes_fetched < size / 10
    assert all(a[1] < b[0] for a, b in zip(fetched, fetched[1:]))
    assert stats.bytes_fetched == sum(b - a + 1 for a, b in fetched)
