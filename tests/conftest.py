"""Fixtures shared by every test: a private configuration, images, the CLI.

* ``conf``: an oslo.config ConfigOpts with every option registered and a
  workspace in the test's own tmp directory;
* ``image_dir``: a session-wide directory for images built once;
* ``slot``: a held slot of a private workspace, for the remote readers;
* ``lying_qcow2``: the bytes of a small qcow2 whose tables lie past its
  first 64 KiB, for servers that lie about them;
* ``cli``: runs the real ``qimg-introspect`` console script with a config
  file that points at the test's workspace, and decodes its JSON;
* ``glance_server``: one real glance-api for the session
  (tests/functional/glance_server.py, registered below).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from qimgintrospect import opts
from qimgintrospect import workspace
from testkit import config
from testkit import imagebuilder

pytest_plugins = ['tests.functional.glance_server']


@pytest.fixture
def conf(tmp_path):
    """A fresh ConfigOpts; the workspace is ``tmp_path/workspace``."""
    return config.make_conf(tmp_path / 'workspace')


@pytest.fixture
def images(tmp_path):
    """A directory for the images of one test, apart from its config."""
    path = tmp_path / 'images'
    path.mkdir()
    return path


@pytest.fixture
def workspace_dir(tmp_path):
    return tmp_path / 'workspace'


@pytest.fixture(scope='session')
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('images')


@pytest.fixture
def slot(tmp_path):
    ws = workspace.Workspace(str(tmp_path / 'ws'), 8 * 1024 ** 3, 0, 1, 0)
    with ws.slot() as held:
        yield held


@pytest.fixture(scope='session')
def lying_qcow2(tmp_path_factory):
    directory = tmp_path_factory.mktemp('liar')
    mib = imagebuilder.MiB
    raw = imagebuilder.sparse_raw(directory, 'small.raw', 64 * mib, 2 * mib)
    path = str(directory / 'small.qcow2')
    imagebuilder.qemu_img('convert', '-f', 'raw', '-O', 'qcow2', raw, path)
    with open(path, 'rb') as f:
        return f.read()


class CLI(object):
    """The real console script, configured for one test."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.config_file = tmp_path / 'qimgintrospect.conf'
        self.overrides = config.overrides(tmp_path / 'workspace')
        self.write_config()

    def set(self, group, name, value):
        self.overrides.setdefault(group, {})[name] = value
        self.write_config()

    def write_config(self):
        config.write_config_file(self.config_file, self.overrides)

    @staticmethod
    def command():
        script = shutil.which('qimg-introspect',
                              path=os.path.dirname(sys.executable))
        if script:
            return [script]
        return [sys.executable, '-m', 'qimgintrospect.cmd.shell']

    def run(self, *args, timeout=120, **kwargs):
        """Run ``qimg-introspect ARGS --config-file F``; return the process."""
        cmd = self.command() + list(args) + [
            '--config-file', str(self.config_file)]
        return subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    def inspect_json(self, path, *args, **kwargs):
        """``inspect PATH -f json``: return (exit code, decoded stdout)."""
        proc = self.run('inspect', str(path), '-f', 'json', *args, **kwargs)
        assert 'Traceback' not in proc.stderr, proc.stderr
        return proc.returncode, json.loads(proc.stdout)

    @property
    def workspace(self):
        return self.overrides[opts.WORKSPACE_GROUP]['directory']


@pytest.fixture
def cli(tmp_path):
    return CLI(tmp_path)
