"""The core and the CLI on remote images: the same answers, by ranges.

Every image of the suite (testkit/corpus.py: the format images, the
hostile ones, fuzzed ones) is served by a real nginx and inspected twice
through the core: from its file, and by its URL, read by ranges through
the nbdkit export. The outcomes must be the same (properties, details but
how the image was read, warnings; the same error code), and qemu-img must
run for exactly the same images: every check before it runs on ranges
first. The CLI inspects a URL by ranges and falls back to a download
where nginx does not honour them; a server that lies is refused with its
own code; the options set the budget.

TWO libguestfs appliance launches in this module, in parallel: one guest,
from its file and by ranges.
"""

import os
import shutil
import stat

import pytest

from qimgintrospect import api
from qimgintrospect import exception
from qimgintrospect import normalise
from qimgintrospect import opts
from testkit import config
from testkit import corpus as corpus_mod
from testkit import guestimages
from testkit import imagebuilder
from testkit import webserver

MiB = imagebuilder.MiB

pytestmark = pytest.mark.skipif(
    not shutil.which('nbdkit') or webserver.nginx_binary() is None,
    reason='nbdkit (nbdkit-plugin-python) and nginx are needed')


@pytest.fixture(scope='module')
def corpus_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('corpus')


@pytest.fixture(scope='module')
def corpus(corpus_dir):
    return corpus_mod.build(corpus_dir)


@pytest.fixture(scope='module')
def nginx(tmp_path_factory, corpus_dir, corpus):
    with webserver.Nginx(tmp_path_factory.mktemp('nginx'),
                         corpus_dir) as server:
        yield server


def _recording_qemu_img(directory):
    """A qemu-img that logs each target it is given, then runs the real one.

    :returns: (its path, the log's path).
    """
    log = os.path.join(str(directory), 'qemu-img.log')
    path = os.path.join(str(directory), 'qemu-img')
    with open(path, 'w') as f:
        f.write('#!/bin/sh\nfor target; do :; done\n'
                'echo "$target" >> %s\nexec %s "$@"\n'
                % (log, shutil.which('qemu-img')))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path, log


def _runs(log):
    try:
        with open(log) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def test_every_image_says_by_ranges_what_its_file_says(corpus, nginx,
                                                       tmp_path):
    qemu_img, log = _recording_qemu_img(tmp_path)
    conf = config.make_conf(tmp_path / 'ws', introspection_qemu_img={
        'qemu_img_path': qemu_img})
    differences, stages, kinds = [], [], set()
    for sample in corpus:
        runs = len(_runs(log))
        local = _outcome(api.inspect, sample.path, sample.declared, conf)
        local_runs = len(_runs(log)) - runs
        remote = _outcome(api.inspect_url, nginx.url(sample.name),
                          sample.declared, conf)
        remote_runs = len(_runs(log)) - runs - local_runs
        if corpus_mod.comparable(local) != corpus_mod.comparable(remote):
            differences.append((sample.name, corpus_mod.comparable(local),
                                corpus_mod.comparable(remote)))
        # qemu-img runs for the same images both ways: nothing reaches
        # it by ranges that the checks before it stop in a file.
        if local_runs != remote_runs:
            stages.append((sample.name, local_runs, remote_runs))
        kinds.add(_kind(local, local_runs))
        if not isinstance(remote, exception.IntrospectionError):
            size = os.path.getsize(sample.path)
            assert remote.details['read_by'] == 'ranges', sample
            assert remote.details['image_size'] == size
            assert 0 < remote.details['bytes_read'] <= size
    assert differences == []
    assert stages == []
    assert any(t.startswith('nbd+unix:///?socket=') for t in _runs(log))
    assert config.workspace_leftovers(tmp_path / 'ws') == []
    # The corpus reaches every stage: answers, refusals and failures of
    # the checks before qemu-img, failures qemu-img or its caps found.
    assert kinds >= {'ok', 'refused before qemu-img',
                     'failed before qemu-img', 'failed in qemu-img'}, kinds


def _outcome(inspect, target, declared, conf):
    try:
        return inspect(target, declared, conf)
    except exception.IntrospectionError as err:
        return err


def _kind(outcome, qemu_img_runs):
    if not isinstance(outcome, exception.IntrospectionError):
        return 'ok'
    return '%s %s qemu-img' % (
        {2: 'usage', 3: 'refused', 4: 'failed'}[outcome.exit_code],
        'in' if qemu_img_runs else 'before')


@pytest.mark.parametrize('path, code', [
    # A size one byte too long: the tail the header checks read next
    # does not end where the size says.
    ('wrong-total', exception.REMOTE_RANGE_MISMATCH),
    # The first answer lies: the header checks never see a byte.
    ('gzip', exception.REMOTE_CONTENT_ENCODED),
    ('redirect-away', exception.REMOTE_REDIRECT),
    # The first block comes honestly; qemu-img's reads meet the lie.
    ('later/wrong-range', exception.REMOTE_RANGE_MISMATCH),
    ('later/too-long-unannounced', exception.REMOTE_BODY_TOO_LONG),
    ('later/changing', exception.IMAGE_CHANGED),
])
def test_a_server_that_lies_is_refused_with_its_code(lying_qcow2, conf,
                                                     path, code):
    with webserver.LyingServer(lying_qcow2) as liar:
        with pytest.raises(exception.ImageRefused) as caught:
            api.inspect_url(liar.url(path), 'qcow2', conf)
    assert caught.value.code == code
    assert config.workspace_leftovers(
        conf[opts.WORKSPACE_GROUP].directory) == []


def test_the_options_bound_what_is_read(corpus, nginx, conf):
    conf.set_override('block_size_kb', 1024, opts.REMOTE_GROUP)
    conf.set_override('budget_mb', 1, opts.REMOTE_GROUP)
    # The first block is the budget; the tail is one block too many.
    with pytest.raises(exception.InspectionFailed) as caught:
        api.inspect_url(nginx.url('gpt.raw'), 'raw', conf)
    assert caught.value.code == exception.WORKSPACE_QUOTA
    conf.set_override('budget_mb', 2, opts.REMOTE_GROUP)
    result = api.inspect_url(nginx.url('gpt.raw'), 'raw', conf)
    assert (result.details['bytes_read'], result.details['requests']) == (
        2 * MiB, 2)


def test_read_mode_chooses_the_way(corpus, nginx, conf):
    noranges = nginx.url('noranges/data.qcow2')
    result = api.inspect_url(noranges, None, conf)
    size = os.path.getsize(os.path.join(nginx.root, 'data.qcow2'))
    assert (result.details['read_by'], result.details['bytes_read']) == (
        'download', size)
    conf.set_override('read_mode', 'ranges', opts.REMOTE_GROUP)
    with pytest.raises(exception.RangesNotHonoured):
        api.inspect_url(noranges, None, conf)
    conf.set_override('read_mode', 'download', opts.REMOTE_GROUP)
    before = len(nginx.requests())
    result = api.inspect_url(nginx.url('data.qcow2'), None, conf)
    assert result.details['read_by'] == 'download'
    assert [r[2] for r in nginx.requests()[before:]] == ['-']
    assert config.workspace_leftovers(
        conf[opts.WORKSPACE_GROUP].directory) == []


def test_the_cli_inspects_a_url_by_ranges(corpus, nginx, cli):
    name = 'streamOptimized-buslogic.vmdk'
    before = len(nginx.requests())
    rc, out = cli.inspect_json(nginx.url(name))
    assert rc == 0, out
    assert out['properties'] == {
        'disk_format': 'vmdk', 'virtual_size': corpus_mod.SIZE,
        'min_disk': normalise.min_disk(corpus_mod.SIZE),
        'vmware_disktype': 'streamOptimized',
        'vmware_adaptertype': 'busLogic'}
    assert out['details']['read_by'] == 'ranges'
    served = nginx.requests()[before:]
    assert served and all(status == 206 and rng.startswith('bytes=')
                          for _, _, rng, status, _ in served)
    assert sum(sent for *_, sent in served) == out['details']['bytes_read']
    assert config.workspace_leftovers(cli.workspace) == []

    # Where nginx does not honour ranges, the image is downloaded whole.
    rc, out = cli.inspect_json(nginx.url('noranges/' + name))
    assert (rc, out['details']['read_by']) == (0, 'download'), out
    cli.set(opts.REMOTE_GROUP, 'read_mode', 'ranges')
    rc, out = cli.inspect_json(nginx.url('noranges/' + name))
    assert (rc, out['error']['code']) == (4, 'remote-ranges-not-honoured')


def test_the_cli_refuses_a_hostile_url_as_it_refuses_the_file(corpus, nginx,
                                                              cli):
    sample, = [s for s in corpus if s.name == 'backed.qcow2']
    local_rc, local = cli.inspect_json(sample.path)
    rc, out = cli.inspect_json(nginx.url(sample.name))
    assert (rc, out) == (local_rc, local) == (3, {'error': {
        'code': 'backing-file', 'message': local['error']['message']}})
    rc, out = cli.inspect_json(nginx.url('no-such.qcow2'))
    assert (rc, out['error']['code']) == (2, 'remote-not-found')


@pytest.fixture(scope='module')
def guest_image(tmp_path_factory):
    # Made without an appliance: the two below are this module's only.
    directory = tmp_path_factory.mktemp('guest')
    return guestimages.host_debian(directory, admin_user='opsadmin')


def test_one_guest_says_by_ranges_what_its_file_says(tmp_path_factory,
                                                     guest_image, tmp_path):
    pytest.importorskip('guestfs', reason='python3-guestfs is not installed')
    conf = config.make_conf(
        tmp_path / 'ws', guest=True,
        introspection_workspace={'max_workers': 2,
                                 'slot_wait_timeout': 600})
    root = os.path.dirname(guest_image)
    with webserver.Nginx(tmp_path_factory.mktemp('nginx-guest'),
                         root) as server:
        # Two owners: two appliances at once, one over the file, one
        # over the export.
        local, remote = api.inspect_many([
            api.ImageRequest(guest_image, 'qcow2', 'tenant-a'),
            api.RemoteRequest(server.url(os.path.basename(guest_image)),
                              'qcow2', 'tenant-b')], conf)
    assert corpus_mod.comparable(local) == corpus_mod.comparable(remote)
    assert remote.properties['os_distro'] == 'debian'
    assert remote.properties['os_admin_user'] == 'opsadmin'
    assert remote.details['guest_stage'] == 'complete'
    assert remote.details['read_by'] == 'ranges'
    assert remote.details['bytes_read'] < remote.details['image_size']
    assert config.workspace_leftovers(tmp_path / 'ws') == []
