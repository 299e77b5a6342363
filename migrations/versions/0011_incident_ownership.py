"""Incident ownership: acknowledgements, assignees, notes, silences and maintenance windows.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 16:45:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.add_column(sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('acknowledged_by', sa.String(length=128), nullable=True))
        batch.add_column(sa.Column('assignee', sa.String(length=128), nullable=True))
    with op.batch_alter_table('silences') as batch:
        batch.add_column(sa.Column('expired_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('expired_by', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('silences') as batch:
        batch.drop_column('expired_by')
        batch.drop_column('expired_at')
    with op.batch_alter_table('incidents') as batch:
        batch.drop_column('assignee')
        batch.drop_column('acknowledged_by')
        batch.drop_column('acknowledged_at')
