"""``qimg-introspect``: the cliff application that hosts the subcommands.

Subcommands are entry points in the ``qimgintrospect.cli`` namespace
(setup.cfg). The application adds ``--config-file``/``--config-dir``,
loads the oslo.config files before any command runs, and turns SIGTERM
and SIGHUP into a normal exit so the workspace is always cleaned.
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
import signal
import sys

from cliff import app
from cliff import commandmanager
from oslo_config import cfg
import pbr.version

from qimgintrospect import exception
from qimgintrospect import opts

# Plain text for --help that is also valid reStructuredText for the
# generated CLI reference.
EXIT_CODES_HELP = """\
exit codes:

* 0: inspected
* 2: usage error (bad arguments, missing file, unknown format name)
* 3: image refused as unsafe or not what it claims
* 4: inspection failed (tool error, limit hit, corrupt or truncated image,
  workspace full)
"""


class IntrospectApp(app.App):

    # Quiet by default: stdout may be JSON for a script, and an error is
    # already reported once by the command. -v shows INFO, -vv DEBUG.
    DEFAULT_VERBOSE_LEVEL = 0

    def __init__(self):
        super().__init__(
            description='Read Glance image properties from disk images.',
            version=pbr.version.VersionInfo('qimgintrospect').version_string(),
            command_manager=commandmanager.CommandManager(
                'qimgintrospect.cli'),
            deferred_help=True)

    def build_option_parser(self, description, version,
                            argparse_kwargs=None):
        argparse_kwargs = dict(
            argparse_kwargs or {}, epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter)
        parser = super().build_option_parser(description, version,
                                             argparse_kwargs)
        parser.add_argument(
            '--config-file', action='append', metavar='PATH',
            help='oslo.config file to read (repeatable). Default: '
                 'qimgintrospect.conf in the usual places '
                 '(~/.qimgintrospect, ~, /etc/qimgintrospect, /etc).')
        parser.add_argument(
            '--config-dir', metavar='DIR',
            help='Directory of *.conf files read after --config-file.')
        return parser

    def initialize_app(self, argv):
        opts.register_opts(cfg.CONF)
        args = ['--config-dir', self.options.config_dir] \
            if self.options.config_dir else []
        try:
            cfg.CONF(args, project='qimgintrospect',
                     default_config_files=self.options.config_file)
        except (cfg.ConfigFilesNotFoundError, cfg.Error) as err:
            self.stderr.write('qimg-introspect: configuration error: %s\n'
                              % err)
            raise SystemExit(exception.EXIT_USAGE)


#: The signals that arrived, in order.
_SIGNALLED = []


def _exit_on_signal(signum, frame):
    # SystemExit unwinds through every finally block, which is what
    # empties the workspace.
    _SIGNALLED.append(signum)
    raise SystemExit(128 + signum)


def main(argv=None):
    """Run a subcommand; exit 128 + N when signal N stopped it.

    The signal's exit code holds even where an error raised while
    unwinding took the SystemExit's place.
    """
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    code = IntrospectApp().run(sys.argv[1:] if argv is None else argv)
    return 128 + _SIGNALLED[0] if _SIGNALLED else code


if __name__ == '__main__':
    sys.exit(main())
