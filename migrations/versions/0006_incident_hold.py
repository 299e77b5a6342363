"""Incidents: the data time until which the agent holds a node action (the soak before acting on a node).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.add_column(sa.Column('held_until', sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f('ix_incidents_held_until'), ['held_until'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('incidents') as batch:
        batch.drop_index(batch.f('ix_incidents_held_until'))
        batch.drop_column('held_until')
