"""Slack: the approval message of each action, and an outbox of posts retried while Slack is unreachable.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 09:30:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('slack_messages',
    sa.Column('action_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.String(length=32), nullable=True),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['action_id'], ['actions.id'], name=op.f('fk_slack_messages_action_id_actions'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('action_id', name=op.f('pk_slack_messages'))
    )
    op.create_table('slack_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('action_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('broadcast', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['action_id'], ['actions.id'], name=op.f('fk_slack_outbox_action_id_actions'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_slack_outbox'))
    )
    op.create_index(op.f('ix_slack_outbox_action_id'), 'slack_outbox', ['action_id'], unique=False)
    op.create_index(op.f('ix_slack_outbox_status'), 'slack_outbox', ['status'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_slack_outbox_status'), table_name='slack_outbox')
    op.drop_index(op.f('ix_slack_outbox_action_id'), table_name='slack_outbox')
    op.drop_table('slack_outbox')
    op.drop_table('slack_messages')
