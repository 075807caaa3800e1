"""The alembic environment: migrate on the connection the store gives.

Only :func:`qimgintrospect.glance.state.migrate` runs these migrations; it
passes its connection (inside its transaction and migration lock) in
``config.attributes['connection']``, the way alembic's cookbook shares a
connection with programmatic commands. Offline (SQL script) mode is not
offered.
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

from alembic import context

from qimgintrospect.glance import state

connection = context.config.attributes.get('connection')
if connection is None:
    raise RuntimeError('the audit state is migrated by '
                       'qimgintrospect.glance.state.migrate() only')

context.configure(connection=connection,
                  target_metadata=state.metadata,
                  version_table=state.VERSION_TABLE,
                  # SQLite alters a table by copying it.
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
