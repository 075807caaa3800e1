"""The session's real glance-api, as a fixture (tests/conftest.py loads it).

The server itself is :mod:`testkit.glanceapi`, which the benchmarks use
too; its names are importable from here as well, as they were before it
moved.
"""

import pytest

from testkit import glanceapi

ADMIN_ROLES = glanceapi.ADMIN_ROLES
GlanceServer = glanceapi.GlanceServer
TokenIdentity = glanceapi.TokenIdentity
auth_args = glanceapi.auth_args
create_image = glanceapi.create_image
glance_available = glanceapi.glance_available
new_project_id = glanceapi.new_project_id
token = glanceapi.token
upload_image = glanceapi.upload_image


@pytest.fixture(scope='session')
def glance_server(tmp_path_factory):
    """One real glance-api with the plugin enabled, for the session."""
    if not glanceapi.glance_available():
        pytest.skip('glance and uWSGI are not installed (test-requirements)')
    server = glanceapi.GlanceServer(tmp_path_factory.mktemp('glance'))
    server.start()
    try:
        yield server
    finally:
        server.stop()
