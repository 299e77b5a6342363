"""Node probations: the fence action that takes a GPU needing replacement from the device plugin, so its node can
return with its other GPUs.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 16:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('node_probations') as batch:
        batch.add_column(sa.Column('fence_action_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f('fk_node_probations_fence_action_id_actions'), 'actions',
                                 ['fence_action_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('node_probations') as batch:
        batch.drop_constraint(batch.f('fk_node_probations_fence_action_id_actions'), type_='foreignkey')
        batch.drop_column('fence_action_id')
