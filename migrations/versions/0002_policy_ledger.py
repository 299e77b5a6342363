"""Policy ledger (node leases, breaker state), silences and maintenance windows, hardware tickets,
execution claims on actions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 21:31:19.246499
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('policy_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('breaker_open', sa.Boolean(), nullable=False),
    sa.Column('breaker_opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('breaker_reason', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_state'))
    )
    op.create_table('silences',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('hostname', sa.String(length=253), nullable=True),
    sa.Column('family', sa.String(length=32), nullable=True),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_silences'))
    )
    op.create_table('hardware_tickets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('action_id', sa.Integer(), nullable=True),
    sa.Column('hostname', sa.String(length=253), nullable=False),
    sa.Column('gpu', sa.Integer(), nullable=True),
    sa.Column('uuid', sa.String(length=64), nullable=True),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('webhook_status', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['action_id'], ['actions.id'], name=op.f('fk_hardware_tickets_action_id_actions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_hardware_tickets_incident_id_incidents'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hardware_tickets'))
    )
    with op.batch_alter_table('hardware_tickets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hardware_tickets_incident_id'), ['incident_id'], unique=False)

    op.create_table('node_leases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hostname', sa.String(length=253), nullable=False),
    sa.Column('action_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['action_id'], ['actions.id'], name=op.f('fk_node_leases_action_id_actions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_leases'))
    )
    with op.batch_alter_table('node_leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_leases_action_id'), ['action_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_node_leases_hostname'), ['hostname'], unique=False)

    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approvals_required', sa.Integer(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('verdict', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('diff', sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('claim_expires_at', sa.DateTime(timezone=True), nullable=True))

    op.bulk_insert(sa.table("policy_state", sa.column("id", sa.Integer), sa.column("breaker_open", sa.Boolean),
                            sa.column("breaker_reason", sa.Text), sa.column("updated_at", sa.DateTime(timezone=True))),
                   [{"id": 1, "breaker_open": False, "breaker_reason": "",
                     "updated_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}])


def downgrade() -> None:
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.drop_column('claim_expires_at')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('attempts')
        batch_op.drop_column('diff')
        batch_op.drop_column('verdict')
        batch_op.drop_column('approvals_required')

    with op.batch_alter_table('node_leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_leases_hostname'))
        batch_op.drop_index(batch_op.f('ix_node_leases_action_id'))

    op.drop_table('node_leases')
    with op.batch_alter_table('hardware_tickets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hardware_tickets_incident_id'))

    op.drop_table('hardware_tickets')
    op.drop_table('silences')
    op.drop_table('policy_state')
