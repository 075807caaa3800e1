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


def test_systemd_units_of_a_worker_among_several_hosts():
    service = _unit('qimgintrospect-audit-worker.service')
    exec_start = shlex.split(service['Service']['ExecStart'])
    args = _parse(exec_start[1:])
    assert args.apply and args.formatter == 'json'
    # The URLs, passwords included, are in the configuration file.
    assert args.coordination is None and args.state_connection is None
    assert '--config-file' in exec_start

    timer = _unit('qimgintrospect-audit-worker.timer')
    # Every host at the same moment: they share the catalogue from its
    # first page.
    assert timer['Timer']['RandomizedDelaySec'] == '0'
    assert timer['Timer']['OnCalendar'] == _unit(
        'qimgintrospect-audit.timer')['Timer']['OnCalendar']


def test_the_audit_accepts_a_coordination_and_a_database_url():
    args = _parse(['audit', '--coordination', 'redis://h:6379',
                   '--state-connection', 'postgresql://u:p@db/audit'])
    assert (args.coordination, args.state_connection) == (
        'redis://h:6379', 'postgresql://u:p@db/audit')


@pytest.mark.parametrize('argv', [['audit', '--max-images', 'x'],
                                  ['audit', '--updated-since', 'yesterday'],
                                  ['audit', '--state-file', 'f',
                                   '--state-connection', 'sqlite:///f']])
def test_the_parser_used_here_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        _parse(argv)
