"""What every subcommand shares: error reporting and exit codes."""
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

import json

from cliff import columns
from oslo_utils import units

from qimgintrospect import exception


class DictColumn(columns.FormattableColumn):
    """A dict: ``key=value`` lines in a table, the dict itself in JSON."""

    def human_readable(self):
        return '\n'.join('%s=%s' % item
                         for item in sorted(self._value.items()))

    def machine_readable(self):
        return dict(self._value)


class ListColumn(columns.FormattableColumn):
    """A list: one item per line in a table, the list itself in JSON."""

    def human_readable(self):
        return '\n'.join(str(item) for item in self._value)

    def machine_readable(self):
        return list(self._value)


class ErrorReporting(object):
    """Mixin for cliff commands: an IntrospectionError becomes an exit code.

    With ``-f json`` the error is the one JSON object on stdout,
    ``{"error": {"code": ..., "message": ...}}``; otherwise it is one line
    on stderr. Either way the command exits with the error's exit code.
    """

    def run(self, parsed_args):
        try:
            return super().run(parsed_args)
        except exception.IntrospectionError as err:
            self.report_error(parsed_args, err)
            return err.exit_code

    def report_error(self, parsed_args, err):
        if getattr(parsed_args, 'formatter', None) == 'json':
            indent = None if getattr(parsed_args, 'noindent', False) else 2
            json.dump({'error': err.to_dict()}, self.app.stdout,
                      indent=indent)
            self.app.stdout.write('\n')
        else:
            self.app.stderr.write('error [%s]: %s\n' % (err.code,
                                                        err.message))


def human_size(nbytes):
    """*nbytes* in the largest binary unit under it (``1.5 GiB``)."""
    for unit, name in ((units.Ti, 'TiB'), (units.Gi, 'GiB'),
                       (units.Mi, 'MiB'), (units.Ki, 'KiB')):
        if nbytes >= unit:
            return '%.1f %s' % (nbytes / unit, name)
    return '%d B' % nbytes
