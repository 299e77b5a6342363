"""Cost: GPU usage by deployment and allocated-but-idle GPUs, for the cost view.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 16:45:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'gpu_usage',
        sa.Column('hostname', sa.String(length=253), nullable=False),
        sa.Column('gpu', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('model_name', sa.String(length=128), nullable=False),
        sa.Column('namespace', sa.String(length=253), nullable=False),
        sa.Column('pod', sa.String(length=253), nullable=False),
        sa.Column('deployment', sa.String(length=253), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('low_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('hostname', 'gpu', name=op.f('pk_gpu_usage')),
    )
    op.create_index(op.f('ix_gpu_usage_namespace'), 'gpu_usage', ['namespace'], unique=False)
    op.create_index(op.f('ix_gpu_usage_state'), 'gpu_usage', ['state'], unique=False)
    op.create_table(
        'gpu_hours',
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('namespace', sa.String(length=253), nullable=False),
        sa.Column('deployment', sa.String(length=253), nullable=False),
        sa.Column('provisioned_s', sa.Float(), nullable=False),
        sa.Column('busy_s', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'namespace', 'deployment', name=op.f('pk_gpu_hours')),
    )


def downgrade() -> None:
    op.drop_table('gpu_hours')
    op.drop_index(op.f('ix_gpu_usage_state'), table_name='gpu_usage')
    op.drop_index(op.f('ix_gpu_usage_namespace'), table_name='gpu_usage')
    op.drop_table('gpu_usage')
