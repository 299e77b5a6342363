"""Dead letters: task messages the workers gave up on, with their error.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 22:10:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=128), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    op.create_index(op.f('ix_dead_letters_task'), 'dead_letters', ['task'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_dead_letters_task'), table_name='dead_letters')
    op.drop_table('dead_letters')
