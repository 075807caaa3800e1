"""Options: one place, listed for the generator, sample kept in sync."""

import os
import subprocess
import sys

from oslo_config import cfg

from qimgintrospect import opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_list_opts_lists_every_registered_option():
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    listed = {(group, opt.dest) for group, group_opts in opts.list_opts()
              for opt in group_opts}
    registered = {(group.name, name) for group in conf._groups.values()
                  for name in group._opts}
    assert listed == registered


def test_register_twice_is_harmless():
    # The plugin, the CLI and api.py each register on the global CONF: a
    # second registration must neither fail (oslo.config raises
    # DuplicateOptError for a different option of the same name) nor
    # lose a value already set.
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override('max_workers', 7, opts.WORKSPACE_GROUP)
    opts.register_opts(conf)
    assert conf[opts.WORKSPACE_GROUP].max_workers == 7
    registered = sorted((group.name, name)
                        for group in conf._groups.values()
                        for name in group._opts)
    assert registered == sorted((group, opt.dest)
                                for group, group_opts in opts.list_opts()
                                for opt in group_opts)


def test_sample_config_is_up_to_date(tmp_path):
    generated = tmp_path / 'sample.conf'
    subprocess.run(
        [sys.executable, '-m', 'oslo_config.generator',
         '--namespace', 'qimgintrospect', '--wrap-width', '79',
         '--output-file', str(generated)],
        check=True, cwd=ROOT, capture_output=True)
    with open(os.path.join(ROOT, 'etc', 'qimgintrospect.conf.sample')) as f:
        assert generated.read_text() == f.read(), (
            'etc/qimgintrospect.conf.sample is stale: run tox -e genconfig')
