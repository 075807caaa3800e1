"""``qimg-introspect inspect PATH|URL``: inspect one image.

A local file, or an http(s) URL: a web server's image, read by ranges
where the server honours them (``[introspection_remote] read_mode``), for
operators who vet a ``web-download`` source before importing it.
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
import urllib.parse

from cliff import show

from qimgintrospect import api
from qimgintrospect.cmd import common
from qimgintrospect.cmd import progress
from qimgintrospect.cmd import shell


#: URL schemes read as remote images; anything else is a local path.
URL_SCHEMES = ('http', 'https')


class Inspect(common.ErrorReporting, show.ShowOne):
    """Inspect a disk image and print its Glance properties."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = shell.EXIT_CODES_HELP
        parser.add_argument(
            'path', metavar='PATH',
            help='Disk image file to inspect (only read), or the http(s) '
                 'URL of one: read by ranges where the server honours '
                 'them, else downloaded whole ([introspection_remote] '
                 'read_mode).')
        parser.add_argument(
            '--disk-format', metavar='FMT',
            help='Format the image is declared as (Glance name: raw, qcow2, '
                 'vmdk, vhd, vhdx, vdi, iso, ploop). The image is refused '
                 'when its header says otherwise. Default: the detected '
                 'format.')
        parser.add_argument(
            '--no-progress', action='store_true',
            help='No status line on stderr (there is none unless stderr '
                 'is a terminal).')
        return parser

    def take_action(self, parsed_args):
        stderr = self.app.stderr
        line = progress.StageLine(stderr, not parsed_args.no_progress
                                  and stderr.isatty())
        try:
            with line.logging_through():
                if (urllib.parse.urlsplit(parsed_args.path).scheme
                        in URL_SCHEMES):
                    result = api.inspect_url(parsed_args.path,
                                             parsed_args.disk_format,
                                             observer=line)
                else:
                    result = api.inspect(parsed_args.path,
                                         parsed_args.disk_format,
                                         observer=line)
        finally:
            line.close()
        return (('properties', 'details', 'warnings'),
                (common.DictColumn(result.properties),
                 common.DictColumn(result.details),
                 common.ListColumn(result.warnings)))
