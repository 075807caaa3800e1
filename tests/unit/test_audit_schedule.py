"""The shipped cron entry and systemd units run an audit the CLI accepts."""

import configparser
import os
import shlex

import pytest

from qimgintrospect.cmd import audit as audit_cmd
from qimgintrospect.cmd import shell

ETC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'etc')


def _parse(argv):
    """Parse *argv* (after the program name) as cliff would, or fail."""
    app = shell.IntrospectApp()
    parser = app.build_option_parser('', '0')
    options, rest = parser.parse_known_args(argv)
    assert rest[0] == 'audit'
    command = audit_cmd.Audit(app, options)
    return command.get_parser('qimg-introspect audit').parse_args(rest[1:])


def _unit(name):
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str
    unit.read(os.path.join(ETC, 'systemd', name))
    return unit


def test_cron_entry():
    with open(os.path.join(ETC, 'qimgintrospect-audit.cron')) as f:
        jobs = [line for line in f if line.strip()
                and not line.startswith('#') and '=' not in line.split()[0]]
    assert len(jobs) == 1
    fields = shlex.split(jobs[0])
    # minute hour day month weekday user command...
    assert fields[5] == 'qimgintrospect'
    command = fields[fields.index('qimg-introspect') + 1:fields.index('>>')]
    args = _parse(command)
    assert args.apply and args.no_progress and args.formatter == 'json'


def test_systemd_service_and_timer():
    service = _unit('qimgintrospect-audit.service')
    exec_start = shlex.split(service['Service']['ExecStart'])
    assert exec_start[0].endswith('/qimg-introspect')
    args = _parse(exec_start[1:])
    assert args.apply and args.formatter == 'json'
    assert service['Service']['Type'] == 'oneshot'

    timer = _unit('qimgintrospect-audit.timer')
    assert timer['Timer']['OnCalendar']
    assert timer['Install']['WantedBy'] == 'timers.target'


@pytest.mark.parametrize('argv', [['audit', '--max-images', 'x'],
                                  ['audit', '--updated-since', 'yesterday']])
def test_the_parser_used_here_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        _parse(argv)
