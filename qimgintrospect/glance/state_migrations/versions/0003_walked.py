"""When each worker of a run finished walking the catalogue.

Revision ID: 0003
Revises: 0002

A worker still waiting for an image another worker owns may take it once
that worker has walked the whole catalogue: the owner will not come to it
(it never listed it, or it left it for the next run).
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

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_run_workers') as batch:
        batch.add_column(sa.Column('walked_at', sa.String(40),
                                   nullable=True))
