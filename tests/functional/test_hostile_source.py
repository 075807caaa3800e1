"""Hostile input that is not a plain image file (issue 3).

Links, FIFOs, devices, odd names, and files that change while they are
copied.

Through the real CLI where the path itself is the attack; through the core
API where the attack needs a moment between two steps (the file changing
after its header was checked), which is made deterministic by running the
real copy a moment late, after the test has changed the file.
"""

import json
import os
import socket
import stat

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect import opts
from qimgintrospect import workspace
from testkit import config
from testkit import hostileimages as hostile
from testkit import imagebuilder
from tests import canary

MiB = imagebuilder.MiB


def _refused(cli, path, code, *args):
    proc = cli.run('inspect', path, '-f', 'json', *args, timeout=30)
    assert 'Traceback' not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    assert (proc.returncode, out['error']['code']) == (3, code), out
    assert not os.path.exists(cli.workspace)
    return out['error']['message']


# Not a regular file ----------------------------------------------------------

def test_symlink_to_etc_shadow_is_refused(cli, images):
    link = images / 'image.qcow2'
    link.symlink_to('/etc/shadow')
    message = _refused(cli, str(link), 'symlink', '--disk-format', 'qcow2')
    assert '/etc/shadow' in message


def test_symlink_to_another_image_is_refused_and_target_never_opened(
        cli, images):
    target = hostile.qcow2(images, 'other-tenant.qcow2')
    link = images / 'mine.qcow2'
    link.symlink_to(target)
    with canary.FileCanary(target) as watch:
        message = _refused(cli, str(link), 'symlink')
        assert watch.opened() == []
        # Positive control: following the link does open the target.
        with open(str(link), 'rb') as f:
            f.read(1)
        assert watch.opened() == [target]
    assert target in message


def test_fifo_is_refused_without_hanging_or_opening_it(cli, images):
    # The CLI run has a 30 s timeout: a hang fails the test. The FIFO's
    # writer is blocked in open() until some reader opens it.
    with canary.FifoCanary(images / 'image.fifo') as fifo:
        message = _refused(cli, fifo.path, 'not-a-regular-file',
                           '--disk-format', 'raw')
        assert not fifo.opened()
        # Positive control: any reader opening it releases the writer.
        fd = os.open(fifo.path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert fifo.opened(timeout=5)
        finally:
            os.close(fd)
    assert 'FIFO' in message


@pytest.mark.parametrize('kind, make', [
    ('character device', lambda p: os.mknod(p, stat.S_IFCHR | 0o600,
                                            os.makedev(1, 3))),
    ('block device', lambda p: os.mknod(p, stat.S_IFBLK | 0o600,
                                        os.makedev(7, 0))),
    ('directory', os.mkdir),
    ('socket', lambda p: socket.socket(socket.AF_UNIX).bind(p)),
])
def test_special_files_are_refused(cli, images, kind, make):
    path = str(images / 'image')
    try:
        make(path)
    except PermissionError:
        pytest.skip('making a %s needs privileges' % kind)
    message = _refused(cli, path, 'not-a-regular-file')
    assert kind in message


def test_dev_null_is_refused(cli):
    message = _refused(cli, '/dev/null', 'not-a-regular-file')
    assert 'character device' in message


# Odd names -----------------------------------------------------------------

ODD_NAMES = [
    'space, tab\tand\nnewline, "double" and \'single\' quotes.qcow2',
    '-starts-with-dash.qcow2',
    'json:{"driver": "raw", "file": {"filename": "x"}}',
    'nbd:127.0.0.1:1', 'file:image.qcow2',
    'semi;colon && $(echo no) `id` %s%n.qcow2', 'ünïcödé-名前.qcow2',
    'x' * 250,
]


@pytest.mark.parametrize('name', ODD_NAMES)
def test_odd_names_are_inspected_as_plain_files(cli, images, name):
    # The name reaches qemu-img nowhere (it reads a copy with a fixed
    # name), so a protocol-like name is still just a file name.
    image = hostile.qcow2(images, 'plain.qcow2')
    odd = os.path.join(str(images), name)
    os.rename(image, odd)
    path = odd if not name.startswith('-') else './' + name
    proc = cli.run('inspect', path, '-f', 'json', cwd=str(images),
                   timeout=30)
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)['properties']['disk_format'] == 'qcow2'


def test_non_utf8_name_is_inspected(cli, images):
    image = hostile.qcow2(images, 'plain.qcow2')
    odd = os.path.join(os.fsencode(str(images)), b'bad-\xff\xfe.qcow2')
    os.rename(image, odd)
    proc = cli.run('inspect', odd, '-f', 'json', timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)['properties']['disk_format'] == 'qcow2'


def test_odd_name_in_a_refusal_is_reported_cleanly(cli, images):
    # The message names the path: newline, quote and a non-UTF-8 byte
    # must not break the JSON object or the one-line table-mode error.
    link = os.path.join(os.fsencode(str(images)), b'evil\n"name\xff')
    os.symlink('/etc/shadow', link)
    proc = cli.run('inspect', link, '-f', 'json', timeout=30)
    assert (proc.returncode, proc.stderr) == (3, '')
    assert json.loads(proc.stdout)['error']['code'] == 'symlink'
    proc = cli.run('inspect', link, timeout=30)
    assert proc.returncode == 3
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.startswith('error [symlink]')


# The copy, never the original --------------------------------------------

def test_qemu_img_never_opens_the_original(cli, images):
    image = hostile.qcow2(images, 'image.qcow2')
    with canary.FileCanary(str(images)) as watch:
        proc = cli.run('inspect', image, '-f', 'json', timeout=30)
        assert proc.returncode == 0, proc.stdout
        # One open, by qimg-introspect itself; qemu-img opens what it
        # reads twice (probe, then use), so it would show up.
        events = [e for e in watch.events() if 'OPEN' in e[2]]
    assert [name for _path, name, _flags in events] == ['image.qcow2']


class _LateCopy(object):
    """Run *change* on the source, then the real copy.

    A file that changes between its header check and its copy, every time.
    """

    def __init__(self, monkeypatch, change):
        self._copy = workspace.Slot.private_copy
        self._change = change
        monkeypatch.setattr(workspace.Slot, 'private_copy', self)

    def __get__(self, slot, owner):
        def private_copy(source, *args, **kwargs):
            self._change(source.path)
            return self._copy(slot, source, *args, **kwargs)
        return private_copy


def test_file_that_grows_while_copied_is_inspected_as_opened(
        conf, images, monkeypatch):
    image = hostile.raw_file(images, 'growing.raw', MiB,
                             imagebuilder.formatless_bytes(MiB))

    def grow(path):
        with open(path, 'ab') as f:
            f.write(os.urandom(MiB))
    _LateCopy(monkeypatch, grow)
    result = api.inspect(image, 'raw', conf)
    assert os.path.getsize(image) == 2 * MiB
    assert result.properties['virtual_size'] == MiB


def test_header_changed_while_copied_is_refused(conf, images, monkeypatch):
    # Checked clean, then made to name a backing file: the copy no longer
    # holds the checked header, and nothing reads the canary.
    target = hostile.raw_file(images, 'canary.raw')
    image = hostile.qcow2(images, 'swapped.qcow2')
    backed = hostile.qcow2_backed_by(images, 'backed.qcow2', target)
    with open(backed, 'rb') as f:
        evil_header = f.read(4096)

    def swap(path):
        imagebuilder.write_data(path, 0, evil_header)
    _LateCopy(monkeypatch, swap)
    with canary.FileCanary(target) as watch:
        with pytest.raises(exception.ImageRefused) as err:
            api.inspect(image, 'qcow2', conf)
        assert watch.opened() == []
    assert err.value.code == 'image-changed-during-copy'
    assert 'changed' in err.value.message
    assert config.workspace_leftovers(
        conf[opts.WORKSPACE_GROUP].directory) == []


def test_file_that_shrinks_while_copied_is_refused(conf, images,
                                                   monkeypatch):
    image = hostile.qcow2(images, 'shrinking.qcow2')
    size = os.path.getsize(image)
    _LateCopy(monkeypatch, lambda path: os.truncate(path, size // 2))
    with pytest.raises(exception.ImageRefused) as err:
        api.inspect(image, 'qcow2', conf)
    assert err.value.code == 'image-changed-during-copy'
