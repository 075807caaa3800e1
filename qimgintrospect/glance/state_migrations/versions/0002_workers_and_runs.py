"""Several workers: who recorded each image, and each run's journal.

Revision ID: 0002
Revises: 0001

Records carried over from before have no worker and no run (NULL).
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
from sqlalchemy.dialects import mysql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_DOCUMENT = sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql')


def upgrade():
    with op.batch_alter_table('inspected') as batch:
        batch.add_column(sa.Column('worker', sa.String(255), nullable=True))
        batch.add_column(sa.Column('run_id', sa.String(64), nullable=True))
    op.create_table(
        'audit_run_images',
        sa.Column('run_id', sa.String(64), primary_key=True),
        sa.Column('image_id', sa.String(64), primary_key=True),
        sa.Column('worker', sa.String(255), nullable=False),
        sa.Column('done_at', sa.String(40), nullable=False),
        sa.Column('outcome', _DOCUMENT, nullable=False),
        sa.Column('unchanged', sa.Boolean(), nullable=False),
        sa.Column('changed', sa.Boolean(), nullable=False),
        sa.Column('report_rows', _DOCUMENT, nullable=False),
    )
    op.create_table(
        'audit_run_workers',
        sa.Column('run_id', sa.String(64), primary_key=True),
        sa.Column('worker', sa.String(255), primary_key=True),
        sa.Column('hostname', sa.String(255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.String(40), nullable=False),
        sa.Column('finished_at', sa.String(40), nullable=True),
    )
