"""Ranged reads over HTTP: a real nginx, and a real server that lies.

nginx (Debian's nginx-light, started here on a free loopback port)
honours ranges, or not under ``/noranges/`` (``max_ranges 0``), and
redirects. testkit.webserver.LyingServer makes every fault nginx never
makes; each must be refused with its own code.
"""

import os

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import plugin as ks_plugin
from keystoneauth1 import session as ks_session
import pytest
import requests

from qimgintrospect import exception
from qimgintrospect.remote import httpranges
from testkit import webserver

KiB = 1024
SIZE = 256 * KiB + 123


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """(directory, {name: bytes}) of the files nginx serves."""
    root = tmp_path_factory.mktemp('www')
    files = {'image.bin': os.urandom(SIZE), 'tiny.bin': b'0123456789'}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root, files


@pytest.fixture(scope='module')
def nginx(tmp_path_factory, served):
    if webserver.nginx_binary() is None:
        pytest.skip('nginx is not installed (bindep: nginx-light)')
    server = webserver.Nginx(tmp_path_factory.mktemp('nginx'), served[0])
    with server:
        yield server


@pytest.fixture(scope='module')
def liar():
    with webserver.LyingServer(os.urandom(SIZE)) as server:
        yield server


def _code(call):
    with pytest.raises(exception.IntrospectionError) as caught:
        call()
    return caught.value


def test_the_first_answer_gives_the_size(nginx, served):
    data = served[1]['image.bin']
    reader = httpranges.RangeReader(nginx.url('image.bin'))
    assert reader.probe(64 * KiB) == data[:64 * KiB]
    assert reader.size == SIZE
    assert (reader.requests, reader.bytes_fetched) == (1, 64 * KiB)


def test_an_image_shorter_than_the_probe_is_read_whole(nginx):
    reader = httpranges.RangeReader(nginx.url('tiny.bin'))
    assert reader.probe(64 * KiB) == b'0123456789'
    assert reader.size == 10


def test_reads_and_the_suffix_tail_are_the_file_bytes(nginx, served):
    data = served[1]['image.bin']
    reader = httpranges.RangeReader(nginx.url('image.bin'), size=SIZE)
    assert reader.read(1000, 5000) == data[1000:6000]
    assert reader.read(SIZE - 1, 1) == data[-1:]
    assert reader.read_tail(100) == (SIZE - 100, data[-100:])
    assert reader.read_tail(SIZE + 50) == (0, data)
    ranges = [entry[2] for entry in nginx.requests()[-4:]]
    assert ranges == ['bytes=1000-5999', 'bytes=%d-%d' % (SIZE - 1, SIZE - 1),
                      'bytes=-100', 'bytes=-%d' % (SIZE + 50)]


def test_reads_outside_the_image_are_not_sent(nginx):
    reader = httpranges.RangeReader(nginx.url('image.bin'), size=SIZE)
    with pytest.raises(ValueError):
        reader.read(SIZE - 1, 2)
    with pytest.raises(ValueError):
        httpranges.RangeReader(nginx.url('image.bin')).read(0, 1)
    assert reader.requests == 0


def test_a_size_other_than_the_known_one_is_refused(nginx):
    reader = httpranges.RangeReader(nginx.url('image.bin'), size=SIZE + 1)
    err = _code(lambda: reader.probe(4096))
    assert err.code == exception.REMOTE_SIZE_MISMATCH
    assert isinstance(err, exception.ImageRefused)


def test_nginx_without_ranges_is_the_fallback_signal(nginx):
    reader = httpranges.RangeReader(nginx.url('noranges/image.bin'))
    with pytest.raises(exception.RangesNotHonoured) as caught:
        reader.probe(64 * KiB)
    assert caught.value.code == exception.REMOTE_RANGES_NOT_HONOURED
    assert 'whole image (200' in caught.value.message
    assert reader.bytes_fetched == 0
    assert nginx.requests()[-1][1:4] == (
        '/noranges/image.bin', 'bytes=0-65535', 200)


def test_a_redirect_within_the_server_is_followed(nginx, served):
    reader = httpranges.RangeReader(nginx.url('moved/image.bin'))
    assert reader.probe(100) == served[1]['image.bin'][:100]
    assert reader.requests == 2
    assert [e[1:4] for e in nginx.requests()[-2:]] == [
        ('/moved/image.bin', 'bytes=0-99', 302),
        ('/image.bin', 'bytes=0-99', 206)]


def test_a_redirect_to_another_host_is_refused(nginx):
    reader = httpranges.RangeReader(nginx.url('elsewhere/image.bin'))
    err = _code(lambda: reader.probe(100))
    assert err.code == exception.REMOTE_REDIRECT
    assert '127.0.0.2' in err.message


@pytest.mark.parametrize('lie,code', [
    ('wrong-range', exception.REMOTE_RANGE_MISMATCH),
    ('no-content-range', exception.REMOTE_RANGE_MISMATCH),
    ('too-long', exception.REMOTE_BODY_TOO_LONG),
    ('too-long-unannounced', exception.REMOTE_BODY_TOO_LONG),
    ('too-short', exception.REMOTE_BODY_TOO_SHORT),
    ('too-short-announced', exception.REMOTE_BODY_TOO_SHORT),
    ('gzip', exception.REMOTE_CONTENT_ENCODED),
    ('redirect-away', exception.REMOTE_REDIRECT),
])
def test_each_lie_is_refused_with_its_code(liar, lie, code):
    reader = httpranges.RangeReader(liar.url(lie), size=SIZE)
    err = _code(lambda: reader.read(4096, 8192))
    assert err.code == code, err.message
    assert isinstance(err, exception.ImageRefused)
    assert reader.bytes_fetched == 0


def test_a_wrong_total_is_refused_when_the_size_is_known(liar):
    reader = httpranges.RangeReader(liar.url('wrong-total'), size=SIZE)
    assert _code(lambda: reader.probe(4096)).code == (
        exception.REMOTE_SIZE_MISMATCH)


def test_a_wrong_total_is_caught_at_the_end_when_it_is_not(liar):
    # Without Glance's size the first answer is believed; the bytes it
    # claims past the real end cannot be served as asked.
    reader = httpranges.RangeReader(liar.url('wrong-total'))
    reader.probe(4096)
    assert reader.size == SIZE + 1
    assert _code(lambda: reader.read(SIZE - 10, 11)).code == (
        exception.REMOTE_RANGE_MISMATCH)


def test_a_redirect_elsewhere_is_not_followed(liar):
    before = len(liar.seen)
    reader = httpranges.RangeReader(liar.url('redirect-away'))
    _code(lambda: reader.probe(100))
    assert liar.seen[before:] == [('/redirect-away', 'bytes=0-99')]


def test_a_redirect_here_is_followed(liar):
    reader = httpranges.RangeReader(liar.url('redirect-here'))
    assert reader.probe(100) == liar.data[:100]
    assert reader.requests == 2


def test_a_server_that_ignores_ranges_is_the_fallback_signal(liar):
    reader = httpranges.RangeReader(liar.url('whole'))
    with pytest.raises(exception.RangesNotHonoured):
        reader.probe(100)


def test_an_image_that_changes_between_reads_is_refused(liar):
    reader = httpranges.RangeReader(liar.url('changing'))
    reader.probe(100)
    err = _code(lambda: reader.read(100, 100))
    assert err.code == exception.IMAGE_CHANGED
    assert 'ETag' in err.message


def test_validators_seen_by_another_reader_are_kept(liar):
    # The plugin's reader gets the parent's validators in its spec.
    spec = dict(httpranges.RangeReader(liar.url('honest')).spec(),
                size=SIZE, validators={'ETag': '"v0"'})
    reader = httpranges.RangeReader.from_spec(spec)
    assert _code(lambda: reader.read(0, 10)).code == exception.IMAGE_CHANGED


@pytest.mark.parametrize('status,probing,code', [
    (400, True, exception.REMOTE_RANGES_NOT_HONOURED),
    (501, True, exception.REMOTE_RANGES_NOT_HONOURED),
    (400, False, exception.REMOTE_HTTP_ERROR),
    (500, True, exception.REMOTE_HTTP_ERROR),
    (204, True, exception.REMOTE_HTTP_ERROR),
    (404, True, exception.REMOTE_NOT_FOUND),
    (410, False, exception.REMOTE_NOT_FOUND),
    (401, True, exception.REMOTE_AUTH),
    (403, False, exception.REMOTE_AUTH),
])
def test_error_statuses(liar, status, probing, code):
    reader = httpranges.RangeReader(liar.url('status/%d' % status),
                                    size=SIZE)
    call = (lambda: reader.probe(100)) if probing else (
        lambda: reader.read(0, 100))
    err = _code(call)
    assert err.code == code
    assert isinstance(err, exception.RangesNotHonoured) == (
        code == exception.REMOTE_RANGES_NOT_HONOURED)


def test_nothing_listening_is_unreachable():
    port = webserver.free_port()
    reader = httpranges.RangeReader('http://127.0.0.1:%d/x' % port,
                                    timeout=(2, 2))
    assert _code(lambda: reader.probe(100)).code == (
        exception.REMOTE_UNREACHABLE)


def test_only_http_urls():
    with pytest.raises(ValueError):
        httpranges.RangeReader('file:///etc/passwd')


def test_headers_file_is_read_again_when_replaced(liar, tmp_path):
    path = str(tmp_path / 'auth.json')
    liar.token = 'token-1'
    httpranges.write_headers(path, {'X-Auth-Token': 'token-1'})
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    reader = httpranges.RangeReader(liar.url('token'), size=SIZE,
                                    auth=httpranges.HeadersFile(path))
    assert reader.read(0, 10) == liar.data[:10]
    liar.token = 'token-2'
    err = _code(lambda: reader.read(10, 10))
    assert err.code == exception.REMOTE_AUTH
    httpranges.write_headers(path, {'X-Auth-Token': 'token-2'})
    assert reader.read(10, 10) == liar.data[10:20]
    liar.token = 'token-1'


class RotatingToken(ks_plugin.BaseAuthPlugin):
    """A keystoneauth plugin whose token changes when it is invalidated."""

    def __init__(self):
        super().__init__()
        self.number = 1

    def get_token(self, session, **kwargs):
        return 'token-%d' % self.number

    def invalidate(self):
        self.number += 1
        return True


def test_a_keystoneauth_session_renews_its_token_after_a_401(liar):
    session = ks_session.Session(auth=RotatingToken())
    liar.token = 'token-2'
    try:
        reader = httpranges.RangeReader.for_session(
            liar.url('token'), session, size=SIZE)
        assert reader.read(0, 10) == liar.data[:10]
        assert reader.requests == 2
        assert [h for p, h in liar.seen[-2:]] == ['bytes=0-9'] * 2
    finally:
        liar.token = 'token-1'


def test_keystoneauth_sessions_and_adapters_lend_their_tokens():
    session = ks_session.Session(auth=RotatingToken(), verify='/ca.pem')
    for lender in (session, ks_adapter.Adapter(session)):
        auth, tls = httpranges.credentials(lender)
        assert isinstance(auth, httpranges.KeystoneHeaders)
        assert auth.headers() == {'X-Auth-Token': 'token-1'}
        assert tls == {'verify': '/ca.pem', 'cert': None}
    # An Adapter's own auth plugin wins over its session's.
    other = RotatingToken()
    other.number = 7
    auth, _ = httpranges.credentials(ks_adapter.Adapter(session, auth=other))
    assert auth.headers() == {'X-Auth-Token': 'token-7'}
    assert auth.refresh()
    assert auth.headers() == {'X-Auth-Token': 'token-8'}


class BrokenToken(ks_plugin.BaseAuthPlugin):
    """A keystoneauth plugin that cannot get a token (Keystone is down)."""

    def get_token(self, session, **kwargs):
        raise ks_exceptions.ConnectFailure('keystone is down')


def test_credentials_that_cannot_be_had_are_an_auth_failure(liar):
    reader = httpranges.RangeReader.for_session(
        liar.url('token'), ks_session.Session(auth=BrokenToken()), size=SIZE)
    err = _code(lambda: reader.read(0, 10))
    assert err.code == exception.REMOTE_AUTH
    assert 'keystone is down' in err.message
    assert reader.requests == 0


def test_a_requests_session_gives_its_headers(liar):
    http = requests.Session()
    http.headers['X-Auth-Token'] = 'token-1'
    auth, tls = httpranges.credentials(http)
    assert auth.headers() == {'X-Auth-Token': 'token-1'}
    assert tls == {'verify': True, 'cert': None}
    reader = httpranges.RangeReader.for_session(liar.url('token'), http,
                                                size=SIZE)
    assert reader.read(0, 10) == liar.data[:10]


def test_the_spec_holds_no_credentials(liar):
    reader = httpranges.RangeReader.for_session(
        liar.url('honest'), {'X-Auth-Token': 'secret-token'}, size=SIZE)
    reader.read(0, 10)
    assert 'secret-token' not in repr(reader.spec())
