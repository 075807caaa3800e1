"""Ranged reads from a real glance-api: the file store, and an http store.

The facts the remote package builds on, checked on Glance itself: on the
filesystem store ``GET /v2/images/{id}/file`` answers a ``Range`` (and a
suffix range) with ``206`` and a ``Content-Range`` that gives the size,
sends no ``Accept-Ranges`` and has no ``HEAD``; an image whose location
is on glance_store's http store (no ``READ_RANDOM``) gets ``400`` for a
range, and a whole ``200`` without one: the configuration in which a
caller must fall back to a whole download (phase 2 tests the fallback
there).
"""

import os
import time

import pytest
import requests

from qimgintrospect import exception
from qimgintrospect.remote import httpranges
from qimgintrospect.remote import image as remote_image
from qimgintrospect import workspace
from testkit import imagebuilder
from testkit import nbdclient
from testkit import webserver
from tests.functional import glance_server as glance_api

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
_ACTIVE_POLLS = 300


@pytest.fixture(scope='module')
def qcow2(tmp_path_factory):
    directory = tmp_path_factory.mktemp('glance-images')
    raw = imagebuilder.sparse_raw(directory, 'data.raw', 256 * MiB, 16 * MiB)
    path = str(directory / 'data.qcow2')
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw, path)
    os.unlink(raw)
    return path


@pytest.fixture
def slot(tmp_path):
    ws = workspace.Workspace(str(tmp_path / 'ws'), 8 * GiB, 0, 1, 0)
    with ws.slot() as held:
        yield held


def _file_url(server, image):
    return '%s/v2/images/%s/file' % (server.url, image['id'])


@pytest.fixture(scope='module')
def file_store_image(glance_server, qcow2):
    """(project, client, image): *qcow2* uploaded to the file store."""
    project = glance_api.new_project_id()
    client = glance_server.client(project)
    return project, client, glance_api.upload_image(client, qcow2, 'qcow2')


def test_glance_file_store_answers_ranges_as_the_reader_expects(
        glance_server, file_store_image, qcow2):
    project, client, image = file_store_image
    url = _file_url(glance_server, image)
    token = {'X-Auth-Token': glance_api.token(project)}
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
    if not glance_api.glance_available():
        pytest.skip('glance and uWSGI are not installed')
    if webserver.nginx_binary() is None:
        pytest.skip('nginx is not installed')
    nginx = webserver.Nginx(tmp_path_factory.mktemp('nginx-store'),
                            os.path.dirname(qcow2))
    with nginx:
        server = glance_api.GlanceServer(
            tmp_path_factory.mktemp('glance-http'), plugin_options={
                'DEFAULT': {'enabled_backends': 'fs:file, web:http'},
                'import_filtering_opts': {
                    'allowed_hosts': '[127.0.0.1]',
                    'allowed_ports': '[%d]' % nginx.port},
            })
        server.start()
        try:
            yield server, nginx
        finally:
            server.stop()


def _image_on_web(server, nginx, path):
    client = server.client(glance_api.new_project_id())
    image = glance_api.create_image(client, 'qcow2')
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
