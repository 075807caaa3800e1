"""The shipped rootwrap filter admits exactly the command the executor runs."""

import os

from oslo_rootwrap import wrapper
import pytest

from qimgintrospect import executor
from qimgintrospect import opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HELPER = 'sudo qimgintrospect-rootwrap /etc/qimgintrospect/rootwrap.conf'


@pytest.fixture
def filters():
    return wrapper.load_filters([os.path.join(ROOT, 'rootwrap.d')])


def _command_behind_helper(conf, qemu_format, path):
    conf.set_override('root_helper', HELPER, opts.QEMU_IMG_GROUP)
    cmd = executor.build_command(path, qemu_format, conf,
                                 executor.Limits.from_conf(conf))
    return cmd[cmd.index('--') + 1 + len(HELPER.split()):]


@pytest.mark.parametrize('target, name', [
    ('/var/lib/qimgintrospect/ws/image', 'qemu-img'),
    ('nbd+unix:///?socket=/var/lib/qimgintrospect/ws/slot-0/nbd-x/sock',
     'qemu-img-nbd'),
], ids=['copy', 'export'])
@pytest.mark.parametrize('qemu_format', ['raw', 'qcow2', 'vmdk', 'vpc',
                                         'vhdx', 'vdi', 'parallels'])
def test_executor_command_is_allowed(conf, filters, qemu_format, target,
                                     name):
    userargs = _command_behind_helper(conf, qemu_format, target)
    matched = wrapper.match_filter(filters, userargs, exec_dirs=['/usr/bin'])
    assert matched.name == name


@pytest.mark.parametrize('userargs', [
    ['qemu-img', 'info', '/x/image'],                       # probed format
    ['qemu-img', 'info', '--output=json', '-f', 'qcow2', 'relative'],
    ['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', '/a', '/b'],
    ['qemu-img', 'info', '--output=json', '-f', 'json:{}', '/x'],
    # NBD: a Unix socket only, its path absolute, nothing after it.
    ['qemu-img', 'info', '--output=json', '-f', 'raw',
     'nbd://127.0.0.1:10809/export'],
    ['qemu-img', 'info', '--output=json', '-f', 'raw',
     'nbd+unix:///?socket=sock'],
    ['qemu-img', 'info', '--output=json', '-f', 'raw',
     'nbd+unix:///export?socket=/x/sock'],
    ['qemu-img', 'info', '--output=json', '-f', 'raw',
     'nbd+unix:///?socket=/x/sock&tls-creds=t'],
    ['cat', '/etc/shadow'],
])
def test_other_commands_are_refused(filters, userargs):
    with pytest.raises(wrapper.NoFilterMatched):
        wrapper.match_filter(filters, userargs, exec_dirs=['/usr/bin'])
