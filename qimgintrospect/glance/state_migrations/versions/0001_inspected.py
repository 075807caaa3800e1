"""The state file's table before alembic: what each image said.

Revision ID: 0001
Revises: none

A SQLite state file written before alembic has exactly this table and no
version table; it is stamped with this revision, not created again.
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

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'inspected',
        sa.Column('image_id', sa.String(64), primary_key=True),
        sa.Column('checksum', sa.String(255), nullable=False),
        sa.Column('version', sa.String(255), nullable=False),
        sa.Column('inspected_at', sa.String(40), nullable=False),
        sa.Column('outcome',
                  sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql'),
                  nullable=False),
    )
