"""``qimg-introspect glance IMAGE_ID...``: Glance images, side by side.

Each image is read into the workspace (by ranges where its store honours
them, else downloaded whole), inspected, and its properties listed next to
Glance's; ``--apply`` writes the difference back. After the table, one
line per image says how it was read and how many bytes that took (on
stderr unless the format is ``table``).
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

from cliff import lister
from oslo_config import cfg

from qimgintrospect.cmd import common
from qimgintrospect.cmd import shell
from qimgintrospect import exception
from qimgintrospect.glance import client as glance_client
from qimgintrospect.glance import report as report_mod

CONF = cfg.CONF

#: Errors that stop the whole command: no other image would fare better.
_FATAL = frozenset([exception.GLANCE_AUTH, exception.GLANCE_UNREACHABLE,
                    exception.GLANCE_BAD_REQUEST])

# Plain text for --help that is also valid reStructuredText for the
# generated CLI reference.
AUTH_HELP = """\
authentication:

* as the openstack CLI: --os-cloud with clouds.yaml, OS_CLOUD and the
  other OS variables, or the --os options below
* endpoint and token: --os-auth-type admin_token --os-endpoint URL
  --os-token TOKEN
"""


def add_policy_arguments(parser):
    """The options that say what to write back to Glance."""
    parser.add_argument(
        '--apply', action='store_true',
        help='Write the differences to Glance: set missing and wrong '
             'properties. Without it nothing is changed.')
    parser.add_argument(
        '--only-missing', action='store_true',
        help='With --apply, set only properties Glance lacks; keep values '
             'that differ from the image\'s.')
    parser.add_argument(
        '--remove-stale', action='store_true',
        help='With --apply, also remove properties that contradict the '
             'image (a vmware_* property on an image that is not a VMDK). '
             'Never done unless asked: an admin may have set them.')


def policy_from(parsed_args):
    return report_mod.Policy(apply=parsed_args.apply,
                             overwrite=not parsed_args.only_missing,
                             remove_stale=parsed_args.remove_stale)


def _share(part, whole):
    return '%.3g %%' % (100.0 * part / whole) if whole else '-'


def read_line(read):
    """How one image was read, for people (an item of Reads.images)."""
    if read['read_by'] == 'ranges':
        return ('image %s: read by ranges, %s of %s (%s) in %d requests'
                % (read['image_id'], common.human_size(read['bytes_read']),
                   common.human_size(read['size']),
                   _share(read['bytes_read'], read['size']),
                   read['requests']))
    return 'image %s: downloaded whole, %s' % (
        read['image_id'], common.human_size(read['bytes_read']))


def reads_summary(reads):
    """The reads of a run (Reads.to_dict()), in one line for people."""
    ranges, whole, total = (reads['ranges'], reads['download'],
                            reads['total'])
    return ('Reads of the %d images inspected: %d by ranges, %s of their '
            '%s (%s) in %d requests; %d downloaded whole, %s; in all %s '
            'read of %s (%s).' % (
                total['images'], ranges['images'],
                common.human_size(ranges['bytes_read']),
                common.human_size(ranges['size']),
                _share(ranges['bytes_read'], ranges['size']),
                ranges['requests'], whole['images'],
                common.human_size(whole['bytes_read']),
                common.human_size(total['bytes_read']),
                common.human_size(total['size']),
                _share(total['bytes_read'], total['size'])))


def display_rows(parsed_args, rows):
    """Rows for cliff: None is an empty cell except in JSON and YAML."""
    if getattr(parsed_args, 'formatter', None) in ('json', 'yaml'):
        return rows
    return [tuple('' if value is None else value for value in row)
            for row in rows]


class GlanceImages(common.ErrorReporting, lister.Lister):
    """Inspect Glance images; show Glance's properties and the image's."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = AUTH_HELP + '\n' + shell.EXIT_CODES_HELP
        parser.add_argument('image_ids', nargs='+', metavar='IMAGE_ID',
                            help='Glance image to inspect (repeatable).')
        add_policy_arguments(parser)
        self._auth_names = glance_client.add_auth_arguments(parser)
        return parser

    def run(self, parsed_args):
        self._worst = exception.EXIT_OK
        self._reads = report_mod.Reads()
        return super().run(parsed_args) or self._worst

    def produce_output(self, parsed_args, column_names, data):
        result = super().produce_output(parsed_args, column_names, data)
        out = (self.app.stdout if parsed_args.formatter == 'table'
               else self.app.stderr)
        for read in self._reads.images:
            out.write(read_line(read) + '\n')
        return result

    def take_action(self, parsed_args):
        client = glance_client.from_arguments(parsed_args, self._auth_names)
        policy = policy_from(parsed_args)
        rows = []
        for image_id in parsed_args.image_ids:
            image = {'id': image_id}
            try:
                image = glance_client.get_image(client, image_id)
                outcome = glance_client.inspect_image(client, image, CONF)
            except exception.IntrospectionError as err:
                if err.code in _FATAL:
                    raise
                outcome = err
                self._worst = max(self._worst, err.exit_code)
            self._reads.add(image, outcome)
            image_rows, _ = report_mod.image_rows(
                client, image, outcome, policy, include_same=True)
            rows.extend(image_rows)
        return report_mod.COLUMNS, display_rows(parsed_args, rows)
