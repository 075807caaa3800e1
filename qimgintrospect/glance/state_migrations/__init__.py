"""Alembic migrations of the audit state database.

:func:`qimgintrospect.glance.state.migrate` runs them whenever a state
store is opened; there is no separate command. A new revision is a new
file in ``versions/`` (see ``script.py.mako``) whose ``down_revision``
is the current head, written by hand so that it runs the same on SQLite
(batch operations), PostgreSQL and MariaDB/MySQL, and a test that opens a
database of the revision before it.
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
