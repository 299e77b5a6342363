"""The streaming detectors' state, one row per shard of the fleet.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 21:43:47.251258
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('detector_states',
    sa.Column('shard', sa.String(length=64), nullable=False),
    sa.Column('last_ts', sa.Float(), nullable=False),
    sa.Column('state', sa.LargeBinary(), nullable=True),
    sa.Column('cycles', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('shard', name=op.f('pk_detector_states'))
    )


def downgrade() -> None:
    op.drop_table('detector_states')
