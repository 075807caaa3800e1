"""Ranged reads from a real glance-api: the file store, and an http store.

The facts the remote package builds on, checked on Glance itself: on the
filesystem store ``GET /v2/images/{id}/file`` answers a ``Range`` (and a
suffix range) with ``206`` and a ``Content-Range`` that gives the size,
sends no ``Accept-Ranges`` and has no ``HEAD``; an image whose location
is on glance_store's http store (no ``READ_RANDOM``) gets ``400`` for a
range, and a whole ``200`` without one: the configuration in which a
caller must fall back to a whole download.

Then the front ends on it: every small image of the suite
(testkit/corpus.py) uploaded to the file store says the same read by
ranges as downloaded whole; the audit and ``glance`` read a file-store
image by ranges and fall back to a download for an http-store image,
and say so.
"""

import json
import os
import time

from glanceclient import exc as glance_exc
import pytest
import requests

from qimgintrospect import diskformats
from qimgintrospect import exception
from qimgintrospect.glance import client as glance_client
from qimgintrospect.remote import httpranges
from qimgintrospect.remote import image as remote_image
from testkit import config
from testkit import corpus as corpus_mod
from testkit import glanceapi
from testkit import imagebuilder
from testkit import nbdclient
from testkit import webserver
from tests.functional import glance_server

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
_ACTIVE_POLLS = 300
#: Glance's own [image_format] disk_formats (no qed, no luks).
GLANCE_DISK_FORMATS = ('raw', 'qcow2', 'vmdk', 'vhd', 'vhdx', 'vdi', 'iso',
                       'ploop')


@pytest.fixture(scope='module')
def qcow2(tmp_path_factory):
    directory = tmp_path_factory.mktemp('glance-images')
    raw = imagebuilder.sparse_raw(directory, 'data.raw', 256 * MiB, 16 * MiB)
    path = str(directory / 'data.qcow2')
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw, path)
    os.unlink(raw)
    return path


def _file_url(server, image):
    return '%s/v2/images/%s/file' % (server.url, image['id'])


@pytest.fixture(scope='module')
def file_store_image(glance_server, qcow2):
    """(project, client, image): *qcow2* uploaded to the file store."""
    project = glanceapi.new_project_id()
    client = glance_server.client(project)
    return project, client, glanceapi.upload_image(client, qcow2, 'qcow2')


def test_glance_file_store_answers_ranges_as_the_reader_expects(
        glance_server, file_store_image, qcow2):
    project, client, image = file_store_image
    url = _file_url(glance_server, image)
    token = {'X-Auth-Token': glanceapi.token(project)}
    with open(qcow2, 'rb') as f:
        data = f.read()
    size = len(data)
    assert image['size'] == size

    answer = requests.get(url, headers=dict(token, Range='bytes=0-99'))
    assert answer.status_code == 206
    assert answer.headers['Content-Range'] == 'bytes 0-99/%d' % size
    assert answer.content == data[:100]
    assert 'Accept-Ranges' not in answer.headers

    answer = requests.get(url, headers=dict(token, Range='bytes=-100'))
    assert answer.status_code == 206
    assert answer.headers['Content-Range'] == 'bytes %d-%d/%d' % (
        size - 100, size - 1, size)
    assert answer.content == data[-100:]

    # A range past the end is clipped to it, as the reader's probe needs.
    answer = requests.get(url, headers=dict(
        token, Range='bytes=%d-%d' % (size - 10, size + 1000)))
    assert answer.headers['Content-Range'] == 'bytes %d-%d/%d' % (
        size - 10, size - 1, size)

    assert requests.head(url, headers=token).status_code == 405


def test_reader_on_glance_with_python_glanceclients_session(
        glance_server, file_store_image, qcow2):
    project, client, image = file_store_image
    reader = httpranges.RangeReader.for_session(
        _file_url(glance_server, image), client.http_client,
        size=image['size'])
    with open(qcow2, 'rb') as f:
        data = f.read()
    assert reader.probe(64 * KiB) == data[:64 * KiB]
    assert reader.read(3 * MiB + 5, 1000) == data[3 * MiB + 5:3 * MiB + 1005]
    assert reader.read_tail(512) == (len(data) - 512, data[-512:])
    # Glance sends the image's checksum with every answer.
    assert reader.spec()['validators'] == {'Content-MD5': image['checksum']}


def test_reader_refuses_a_size_glance_does_not_give(glance_server,
                                                    file_store_image):
    project, client, image = file_store_image
    reader = httpranges.RangeReader.for_session(
        _file_url(glance_server, image), client.http_client,
        size=image['size'] - 1)
    with pytest.raises(exception.ImageRefused) as caught:
        reader.probe(64 * KiB)
    assert caught.value.code == exception.REMOTE_SIZE_MISMATCH


def test_qemu_img_reads_a_glance_image_through_the_export(
        glance_server, file_store_image, qcow2, slot):
    project, client, image = file_store_image
    with remote_image.open_remote(slot, _file_url(glance_server, image),
                                  session=client.http_client,
                                  size=image['size']) as remote:
        with remote.export() as export:
            through = nbdclient.qemu_img_info('qcow2', export.uri)
        stats = remote.stats()
    assert through == nbdclient.qemu_img_info('qcow2', qcow2)
    assert stats.bytes_fetched <= 256 * KiB
    assert stats.bytes_fetched < image['size'] / 50


def test_a_token_glance_refuses_is_an_auth_failure(glance_server,
                                                   file_store_image):
    project, client, image = file_store_image
    reader = httpranges.RangeReader.for_session(
        _file_url(glance_server, image), {'X-Auth-Token': 'not-a-token'},
        size=image['size'])
    with pytest.raises(exception.UsageError) as caught:
        reader.probe(64 * KiB)
    assert caught.value.code == exception.REMOTE_AUTH


@pytest.fixture(scope='module')
def http_store(tmp_path_factory, qcow2):
    """A glance-api with an http store, and nginx serving its image data.

    ``POST /v2/images/{id}/locations`` (Glance's add-location API, open to
    project members when the http store is enabled) puts an image's data
    on nginx; Glance only lets loopback through when allowed_hosts says
    so.
    """
    if webserver.nginx_binary() is None:
        pytest.skip('nginx is not installed')
    nginx = webserver.Nginx(tmp_path_factory.mktemp('nginx-store'),
                            os.path.dirname(qcow2))
    with nginx:
        with glance_server.serve(
                tmp_path_factory.mktemp('glance-http'), plugin_options={
                    'DEFAULT': {'enabled_backends': 'fs:file, web:http'},
                    'import_filtering_opts': {
                        'allowed_hosts': '[127.0.0.1]',
                        'allowed_ports': '[%d]' % nginx.port},
                }) as server:
            yield server, nginx


def _image_on_web(server, nginx, path, client=None):
    client = client or server.client(glanceapi.new_project_id())
    image = glanceapi.create_image(client, 'qcow2')
    client.http_client.post('/v2/images/%s/locations' % image['id'],
                            json={'url': nginx.url(os.path.basename(path))})
    for _ in range(_ACTIVE_POLLS):
        image = client.images.get(image['id'])
        if image['status'] == 'active':
            return client, image
        time.sleep(0.1)
    raise RuntimeError('image %s stayed %s' % (image['id'], image['status']))


def test_an_http_store_does_not_honour_ranges(http_store, qcow2, slot):
    server, nginx = http_store
    client, image = _image_on_web(server, nginx, qcow2)
    assert image['stores'] == 'web'
    assert image['size'] == os.path.getsize(qcow2)
    url = _file_url(server, image)
    with pytest.raises(exception.RangesNotHonoured) as caught:
        with remote_image.open_remote(slot, url, session=client.http_client,
                                      size=image['size']):
            pass
    assert 'Getting images randomly from this store is not supported' in (
        caught.value.message)
    assert os.listdir(slot.directory) == []
    # The whole download, the fallback, works there.
    headers = httpranges.KeystoneHeaders(client.http_client).headers()
    with requests.get(url, headers=headers, stream=True) as whole:
        assert whole.status_code == 200
        assert int(whole.headers['Content-Length']) == image['size']
        with open(qcow2, 'rb') as f:
            assert next(whole.iter_content(64 * KiB)) == f.read(64 * KiB)


@pytest.fixture(scope='module')
def corpus_on_glance(glance_server, tmp_path_factory):
    """(client, [(sample, image)]): the corpus's small images, in Glance.

    Those Glance takes: it checks an upload's format and safety itself
    (``[image_format] require_image_format_match``), so most hostile
    images never become active there.
    """
    samples = [s for s in corpus_mod.build(tmp_path_factory.mktemp('corpus'))
               if s.small]
    client = glance_server.client(glanceapi.new_project_id())
    uploaded = []
    for sample in samples:
        disk_format = diskformats.glance_name(sample.declared or 'raw')
        if disk_format not in GLANCE_DISK_FORMATS:
            continue
        try:
            uploaded.append((sample, glanceapi.upload_image(
                client, sample.path, disk_format)))
        except glance_exc.HTTPException:
            continue
    return client, uploaded


def test_every_image_says_by_ranges_what_its_download_says(
        corpus_on_glance, tmp_path):
    client, uploaded = corpus_on_glance
    images = []
    for sample, image in uploaded:
        try:
            glance_client.check_inspectable(image)
            images.append(image)
        except exception.UsageError:
            assert sample.name == 'empty.raw'
    outcomes = {}
    for mode in ('ranges', 'download'):
        conf = config.make_conf(tmp_path / mode,
                                introspection_remote={'read_mode': mode})
        outcomes[mode] = glance_client.inspect_images(client, images, conf)
        assert config.workspace_leftovers(tmp_path / mode) == []
    differences = []
    for image, ranged, whole in zip(images, outcomes['ranges'],
                                    outcomes['download']):
        if corpus_mod.comparable(ranged) != (
                corpus_mod.comparable(whole)):
            differences.append((image['name'], ranged, whole))
        if not isinstance(ranged, exception.IntrospectionError):
            assert ranged.details['read_by'] == 'ranges'
            assert whole.details['read_by'] == 'download'
            assert ranged.details['image_size'] == image['size'] == (
                whole.details['bytes_read'])
            assert ranged.details['bytes_read'] <= image['size']
    assert differences == []
    # Answers and refusals alike, of most of the corpus (55 of its 82
    # small images get into Glance here).
    assert len(images) > 40
    assert {isinstance(o, exception.IntrospectionError)
            for o in outcomes['ranges']} == {True, False}


def _audit(cli, server, state, project, *args):
    proc = cli.run('audit', '-f', 'json', '--state-file', str(state),
                   '--owner', project, *args,
                   *glanceapi.auth_args(server.url, project))
    assert proc.returncode == 0, proc.stderr
    assert 'Traceback' not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_a_store_without_ranges_falls_back_to_a_download(
        http_store, qcow2, cli, tmp_path):
    server, nginx = http_store
    project = glanceapi.new_project_id()
    # One after the other: Glance's SQLite takes one writer at a time.
    on_file = glanceapi.upload_image(server.client(project), qcow2,
                                     'qcow2')
    _, on_web = _image_on_web(server, nginx, qcow2, server.client(project))
    size = os.path.getsize(qcow2)
    state = tmp_path / 'state.db'
    # By ranges however small (auto downloads images under 64 MiB).
    cli.set('introspection_remote', 'min_ranged_size_mb', 0)

    report = _audit(cli, server, state, project)
    reads = report['summary']['reads']
    by_image = {r['image_id']: r for r in reads['images']}
    assert by_image[on_file['id']]['read_by'] == 'ranges'
    # The header checks' window and tail, and qemu-img's tables.
    assert by_image[on_file['id']]['bytes_read'] <= MiB < size / 16
    assert by_image[on_web['id']] == {
        'image_id': on_web['id'], 'read_by': 'download', 'size': size,
        'bytes_read': size, 'requests': 1}
    assert (reads['ranges']['images'], reads['download']['images']) == (1, 1)
    assert reads['total']['bytes_read'] == (
        size + by_image[on_file['id']]['bytes_read'])
    assert reads['total']['size'] == 2 * size
    assert report['summary']['images']['failed'] == 0

    # Ranges forced: the http-store image fails, and is asked again.
    cli.set('introspection_remote', 'read_mode', 'ranges')
    state = tmp_path / 'forced.db'
    report = _audit(cli, server, state, project)
    failed, = [row for row in report['differences']
               if row['difference'] == 'failed']
    assert failed['image_id'] == on_web['id']
    assert failed['note'].startswith('remote-ranges-not-honoured: ')
    cli.set('introspection_remote', 'read_mode', 'auto')
    report = _audit(cli, server, state, project)
    assert report['summary']['images']['unchanged'] == 1
    assert [r['image_id'] for r in report['summary']['reads']['images']] == [
        on_web['id']]

    # People see it too: after the audit's table, and glance's.
    proc = cli.run('audit', '--state-file', str(tmp_path / 'table.db'),
                   '--owner', project,
                   *glanceapi.auth_args(server.url, project))
    assert proc.returncode == 0, proc.stderr
    assert ('Reads of the 2 images inspected: 1 by ranges, ' in proc.stdout)
    assert '1 downloaded whole, %s' % _mib(size) in proc.stdout
    proc = cli.run('glance', on_file['id'], on_web['id'],
                   *glanceapi.auth_args(server.url, project))
    assert proc.returncode == 0, proc.stderr
    assert 'image %s: read by ranges, ' % on_file['id'] in proc.stdout
    assert 'image %s: downloaded whole, %s' % (on_web['id'], _mib(size)) in (
        proc.stdout)


def _mib(size):
    return '%.1f MiB' % (size / MiB)
