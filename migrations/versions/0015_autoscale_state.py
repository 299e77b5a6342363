"""Autoscaling: the cold starts the autoscaler saw (pod created to Ready), shared by every process and restart,
and the row a cycle claims so that two workers do not decide the same period.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 16:45:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'autoscale_cold_starts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('namespace', sa.String(length=253), nullable=False),
        sa.Column('deployment', sa.String(length=253), nullable=False),
        sa.Column('pod', sa.String(length=253), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('ready_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_autoscale_cold_starts')),
        sa.UniqueConstraint('pod', name=op.f('uq_autoscale_cold_starts_pod')),
    )
    op.create_index('ix_autoscale_cold_starts_deployment', 'autoscale_cold_starts', ['namespace', 'deployment'],
                    unique=False)
    op.create_table(
        'autoscale_cycles',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('last_run', sa.Float(), nullable=False),
        sa.Column('worker', sa.String(length=253), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_autoscale_cycles')),
    )


def downgrade() -> None:
    op.drop_table('autoscale_cycles')
    op.drop_index('ix_autoscale_cold_starts_deployment', table_name='autoscale_cold_starts')
    op.drop_table('autoscale_cold_starts')
