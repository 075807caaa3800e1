"""Tables generated from the code, so the documentation cannot drift.

``.. qimg-error-codes::`` lists every error code declared in
``qimgintrospect.exception.CODES`` with its exit code (option
``:exit-code: 3`` keeps one category); ``.. qimg-resource-caps::`` lists
the qemu-img and workspace limits with their defaults from ``opts.py``.
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

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.parsers.rst import directives

from qimgintrospect import exception
from qimgintrospect import opts


def _table(headers, rows, widths):
    table = nodes.table()
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    head += _row(headers)
    body = nodes.tbody()
    group += body
    for row in rows:
        body += _row(row)
    return table


def _row(cells):
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += nodes.paragraph(text=str(cell))
        row += entry
    return row


class ErrorCodes(Directive):
    option_spec = {'exit-code': directives.nonnegative_int}

    def run(self):
        wanted = self.options.get('exit-code')
        rows = [(code, exit_code, description)
                for code, (exit_code, description)
                in sorted(exception.CODES.items(), key=lambda i: (i[1][0],
                                                                  i[0]))
                if wanted is None or exit_code == wanted]
        return [_table(('code', 'exit', 'meaning'), rows, (25, 5, 70))]


class ResourceCaps(Directive):
    _CAPS = (
        (opts.QEMU_IMG_GROUP, 'cpu_time', 'seconds'),
        (opts.QEMU_IMG_GROUP, 'address_space', 'bytes'),
        (opts.QEMU_IMG_GROUP, 'stack_size', 'bytes'),
        (opts.QEMU_IMG_GROUP, 'timeout', 'seconds'),
        (opts.FORMATS_GROUP, 'max_virtual_size_gb', 'GiB'),
        (opts.WORKSPACE_GROUP, 'quota_mb', 'MiB'),
        (opts.WORKSPACE_GROUP, 'min_free_mb', 'MiB'),
        (opts.WORKSPACE_GROUP, 'max_workers', 'inspections'),
        (opts.WORKSPACE_GROUP, 'slot_wait_timeout', 'seconds'),
    )

    def run(self):
        by_group = dict(opts.list_opts())
        rows = []
        for group, name, unit in self._CAPS:
            opt = next(o for o in by_group[group] if o.dest == name)
            rows.append(('[%s] %s' % (group, name), opt.default, unit))
        return [_table(('option', 'default', 'unit'), rows, (45, 15, 15))]


def setup(app):
    app.add_directive('qimg-error-codes', ErrorCodes)
    app.add_directive('qimg-resource-caps', ResourceCaps)
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
