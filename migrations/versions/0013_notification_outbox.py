"""Notifications beyond Slack: the outbox of webhook and PagerDuty events.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 16:45:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notification_ledger',
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('triggered', sa.Boolean(), nullable=False),
    sa.Column('escalated', sa.Boolean(), nullable=False),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved', sa.Boolean(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'],
                            name=op.f('fk_notification_ledger_incident_id_incidents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('channel', 'incident_id', name=op.f('pk_notification_ledger'))
    )
    op.create_index(op.f('ix_notification_ledger_resolved'), 'notification_ledger', ['resolved'], unique=False)
    op.create_table('notification_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'],
                            name=op.f('fk_notification_outbox_incident_id_incidents'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_outbox'))
    )
    op.create_index(op.f('ix_notification_outbox_incident_id'), 'notification_outbox', ['incident_id'], unique=False)
    op.create_index('ix_notification_outbox_due', 'notification_outbox', ['status', 'channel', 'next_attempt_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_notification_outbox_due', table_name='notification_outbox')
    op.drop_index(op.f('ix_notification_outbox_incident_id'), table_name='notification_outbox')
    op.drop_table('notification_outbox')
    op.drop_index(op.f('ix_notification_ledger_resolved'), table_name='notification_ledger')
    op.drop_table('notification_ledger')
