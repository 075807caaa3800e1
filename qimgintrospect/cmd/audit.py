"""``qimg-introspect audit``: compare a whole Glance catalogue.

The report lists every difference (``-f table`` for people, ``-f json`` or
``-f csv`` for scripts) and ends with a summary: what the run did, the
catalogue's image sizes, the workspace ``max_workers`` needs and how the
images were read (by ranges or whole, bytes read beside sizes). In JSON
and YAML the output is one object, ``{"differences": [...], "summary":
{...}}``; in CSV and value formats stdout holds only the rows and the
summary goes to stderr.
"""
#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

import argparse
import json

from cliff import lister
from oslo_config import cfg
from oslo_utils import timeutils
import tqdm
import yaml

from qimgintrospect.cmd import common
from qimgintrospect.cmd import glance as glance_cmd
from qimgintrospect.cmd import progress as progress_display
from qimgintrospect.glance import audit
from qimgintrospect.glance import client as glance_client
from qimgintrospect.glance import report as report_mod
from qimgintrospect.glance import state as state_mod
from qimgintrospect import opts

CONF = cfg.CONF

EPILOG = """\
The audit is resumable: [introspection_audit] state_file (or --state-file)
records what each image said at which checksum, so a second run downloads
only new or changed images and an interrupted run continues.

several hosts: the same command with --coordination URL (a tooz URL,
e.g. redis://HOST:6379) and --state-connection URL (a database all hosts
reach) on each host, or [introspection_audit] coordination_url and
state_connection; each image is inspected by one of them, and each prints
the report of the whole run.

exit codes:

* 0: the catalogue was walked (refused images are findings, in the report)
* 2: usage error (bad arguments, credentials, state file, coordination URL)
* 4: Glance, the state database or the coordination service could not be
  reached
"""


def _since(value):
    try:
        when = timeutils.parse_isotime(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err))
    # Glance's filter syntax, in UTC.
    return 'gte:' + timeutils.normalize_time(when).strftime(
        '%Y-%m-%dT%H:%M:%SZ')


class Audit(common.ErrorReporting, lister.Lister):
    """Inspect every image of a Glance catalogue; report what differs."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = glance_cmd.AUTH_HELP + '\n' + EPILOG
        parser.add_argument(
            '--status', default='active',
            help='Only images with this status (default: active; only '
                 'active images have data).')
        parser.add_argument('--owner', metavar='PROJECT_ID',
                            help='Only images owned by this project.')
        parser.add_argument(
            '--visibility', default='all',
            choices=['all', 'public', 'private', 'shared', 'community'],
            help='Only images of this visibility (default: all).')
        parser.add_argument('--disk-format', metavar='FMT',
                            help='Only images of this disk format.')
        parser.add_argument(
            '--updated-since', metavar='ISO8601', type=_since,
            help='Only images updated at or after this time, for example '
                 '2024-05-01T00:00:00Z.')
        state = parser.add_mutually_exclusive_group()
        state.add_argument(
            '--state-file', metavar='PATH',
            help='SQLite state file (default: [introspection_audit] '
                 'state_connection, else state_file).')
        state.add_argument(
            '--state-connection', metavar='URL',
            help='SQLAlchemy URL of the state database the workers of '
                 'several hosts share, e.g. '
                 'postgresql+psycopg2://USER:PASSWORD@HOST/DB (default: '
                 '[introspection_audit] state_connection). Prefer the '
                 'option in the configuration file: a password on the '
                 'command line is seen by every user of the host.')
        parser.add_argument(
            '--coordination', metavar='URL',
            help='tooz URL of the coordination service shared with the '
                 'audit workers of other hosts, e.g. redis://HOST:6379 '
                 '(default: [introspection_audit] coordination_url; '
                 'none: this host audits alone).')
        parser.add_argument(
            '--max-images', metavar='N', type=int,
            help='Download and inspect at most N images in this run; the '
                 'rest wait for the next run (a time budget for cron).')
        parser.add_argument(
            '--no-progress', action='store_true',
            help='No progress bar (there is none unless stderr is a '
                 'terminal).')
        glance_cmd.add_policy_arguments(parser)
        self._auth_names = glance_client.add_auth_arguments(parser)
        return parser

    def take_action(self, parsed_args):
        client = glance_client.from_arguments(parsed_args, self._auth_names)
        filters = {name: getattr(parsed_args, attr) for name, attr in (
            ('status', 'status'), ('owner', 'owner'),
            ('visibility', 'visibility'), ('disk_format', 'disk_format'),
            ('updated_at', 'updated_since')) if getattr(parsed_args, attr)}
        bar = tqdm.tqdm(unit=' images', file=self.app.stderr,
                        disable=parsed_args.no_progress
                        or not self.app.stderr.isatty(),
                        **progress_display.screen(self.app.stderr))
        # The probe and the appliances starting and running, beside the
        # count of images.
        appliances = progress_display.ApplianceStatus(bar)

        def progress(image, outcome, unchanged):
            bar.update(1)

        # Imported here: cliff imports every command's module when the CLI
        # starts, and tooz pulls in futurist (and eventlet where it is
        # installed), which `qimg-introspect inspect` should not pay.
        from qimgintrospect.glance import coordination
        audit_conf = CONF[opts.AUDIT_GROUP]
        location = (parsed_args.state_connection or parsed_args.state_file
                    or state_mod.configured_location(CONF))
        # Joined first: the group says which run this worker is part of.
        with coordination.worker(parsed_args.coordination
                                 or audit_conf.coordination_url) as member, \
                state_mod.state_store(CONF, location,
                                      worker=member.member_id,
                                      run_id=member.run_id) as state:
            if (isinstance(member, coordination.GroupMember)
                    and state.dialect == 'sqlite'):
                self.app.stderr.write(
                    'warning: the audit state is the SQLite file %s: '
                    'workers on other hosts cannot share it; set '
                    '[introspection_audit] state_connection to a database '
                    'they all reach\n' % state.display)
            run = audit.Audit(client, CONF, state,
                              glance_cmd.policy_from(parsed_args),
                              max_images=parsed_args.max_images,
                              progress=progress, observer=appliances,
                              member=member)
            try:
                with appliances.logging_through():
                    report = run.run(filters)
            except (KeyboardInterrupt, SystemExit):
                self.app.stderr.write(
                    'audit interrupted: %d images are recorded in %s; run '
                    'it again to continue\n'
                    % (state.count(), state.display))
                raise
            finally:
                appliances.close()
        self._summary = report.summary(CONF)
        if len(report.workers) > 1:
            # Several workers made the report: say which made each row.
            return report_mod.COLUMNS + ('worker',), glance_cmd.display_rows(
                parsed_args, [tuple(row) + (worker,) for row, worker in zip(
                    report.rows, report.row_workers)])
        return report_mod.COLUMNS, glance_cmd.display_rows(parsed_args,
                                                           report.rows)

    def produce_output(self, parsed_args, column_names, data):
        if parsed_args.formatter in ('json', 'yaml'):
            columns, selector = self._generate_columns_and_selector(
                parsed_args, column_names)
            if selector:
                data = (self._compress_iterable(row, selector)
                        for row in data)
            document = {'differences': [dict(zip(columns, row))
                                        for row in data],
                        'summary': self._summary}
            if parsed_args.formatter == 'json':
                json.dump(document, self.app.stdout,
                          indent=None if parsed_args.noindent else 2)
                self.app.stdout.write('\n')
            else:
                yaml.safe_dump(document, self.app.stdout,
                               default_flow_style=False)
            return 0
        super().produce_output(parsed_args, column_names, data)
        out = (self.app.stdout if parsed_args.formatter == 'table'
               else self.app.stderr)
        out.write(format_summary(self._summary))
        return 0


def format_summary(summary):
    """The summary as lines of text for people."""
    images, sizes, ws = (summary['images'], summary['sizes'],
                         summary['workspace'])
    size = {key: common.human_size(sizes[key])
            for key in ('total', 'min', 'median', 'mean', 'p90', 'max')}
    size['count'] = sizes['count']
    lines = [
        '',
        'Images: %(listed)d listed, %(inspected)d inspected, %(unchanged)d '
        'unchanged since the last run, %(refused)d refused, %(failed)d '
        'failed, %(incomplete)d without their guest OS properties (asked '
        'again next run), %(not_inspected)d not inspectable, %(deferred)d '
        'left for the next run; %(differing)d differ, %(changed)d changed '
        'in Glance.' % images,
        'Image sizes (%(count)d images, %(total)s in all): min %(min)s, '
        'median %(median)s, mean %(mean)s, 90%% under %(p90)s, max %(max)s.'
        % size,
        '  ' + ', '.join('%s: %d' % (b['range'], b['count'])
                         for b in sizes['buckets']),
        'Workspace: max_workers=%d needs a quota of %s for any mix of these '
        'images (%s for images of the mean size); the quota is %s: %s.' % (
            ws['max_workers'], common.human_size(ws['needed_bytes']),
            common.human_size(ws['typical_bytes']),
            common.human_size(ws['quota_bytes']),
            'enough' if ws['enough'] else 'NOT enough for the largest'),
        glance_cmd.reads_summary(summary['reads']),
    ]
    lines.extend(_workers_summary(summary.get('run')))
    return '\n'.join(lines) + '\n'


def _workers_summary(run):
    """Lines on the run's workers: what each did, and how fast."""
    if not run or not run['workers']:
        return []
    lines = ['Run %s: %d worker(s).' % (run['id'], len(run['workers']))]
    for figure in run['workers']:
        rate = figure['images_per_minute']
        lines.append(
            '  %s (%s, pid %d): %d inspected, %d settled from their record, '
            'in %.0f s%s%s.' % (
                figure['worker'], figure['hostname'], figure['pid'],
                figure['inspected'], figure['from_record'],
                figure['seconds'],
                '' if rate is None else ', %.1f images/min' % rate,
                '' if figure['finished_at'] else ' (not finished)'))
    return lines
