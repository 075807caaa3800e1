"""How a remote image is to be read: the option, and the host's nbdkit."""

import pytest

from qimgintrospect import opts
from qimgintrospect.remote import nbdexport
from qimgintrospect.remote import source as remote_source

MiB = 1024 * 1024


@pytest.fixture
def without_nbdkit(monkeypatch, tmp_path):
    # A PATH where nbdkit is not: whether it can run is asked again.
    monkeypatch.setenv('PATH', str(tmp_path))
    monkeypatch.setattr(nbdexport, '_availability', {})
    monkeypatch.setattr(remote_source, '_warned', [])


@pytest.mark.parametrize('mode, read_as', [
    ('auto', 'download'), ('ranges', 'ranges'), ('download', 'download')])
def test_without_nbdkit_auto_downloads_and_ranges_stays(
        conf, without_nbdkit, caplog, mode, read_as):
    conf.set_override('read_mode', mode, opts.REMOTE_GROUP)
    assert remote_source.read_mode(conf) == read_as
    assert remote_source.read_mode(conf) == read_as
    warnings = [r.getMessage() for r in caplog.records
                if 'downloaded whole' in r.getMessage()]
    assert warnings == (['remote images are downloaded whole: nbdkit is not '
                         'installed (Debian packages nbdkit and '
                         'nbdkit-plugin-python)'] if mode == 'auto' else [])


def test_a_request_is_named_by_its_label_or_url():
    request = remote_source.RemoteRequest('http://h/i.qcow2', 'qcow2')
    assert (request.owner, request.session, request.size,
            request.download) == (None, None, None, None)
    assert request.path == 'http://h/i.qcow2'
    assert request._replace(label='image 1').path == 'image 1'


@pytest.mark.parametrize('mode, size, read_as', [
    ('auto', None, 'auto'), ('auto', 64 * MiB, 'auto'),
    ('auto', 64 * MiB - 1, 'download'), ('ranges', 1, 'ranges')])
def test_auto_downloads_a_small_image_whole(conf, monkeypatch, mode, size,
                                            read_as):
    monkeypatch.setattr(nbdexport, '_availability', {'answer': None})
    conf.set_override('read_mode', mode, opts.REMOTE_GROUP)
    conf.set_override('min_ranged_size_mb', 64, opts.REMOTE_GROUP)
    assert remote_source.read_mode(conf, size) == read_as
