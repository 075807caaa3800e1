"""Real glance-api servers as pytest fixtures (tests/conftest.py loads it).

The server itself is :mod:`testkit.glanceapi`, which the benchmarks use
too; this module only starts and stops it for the tests.
"""

import contextlib

import pytest

from testkit import glanceapi


@contextlib.contextmanager
def serve(directory, server_class=glanceapi.GlanceServer, **kwargs):
    """A started glance-api keeping its files in ``directory``, as a context.

    Skips the test where Glance is not installed; the server is stopped
    however the block ends.
    """
    if not glanceapi.glance_available():
        pytest.skip('glance and uWSGI are not installed (test-requirements)')
    server = server_class(directory, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope='session')
def glance_server(tmp_path_factory):
    """One real glance-api with the plugin enabled, for the session."""
    with serve(tmp_path_factory.mktemp('glance')) as server:
        yield server
