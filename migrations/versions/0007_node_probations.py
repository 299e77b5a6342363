"""Node probations: a node gpuops remediated waits, out of service, until enough healthy telemetry returns it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('node_probations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hostname', sa.String(length=253), nullable=False),
    sa.Column('gpu', sa.Integer(), nullable=True),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('action_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('checks', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('return_action_id', sa.Integer(), nullable=True),
    sa.Column('ticket_action_id', sa.Integer(), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['action_id'], ['actions.id'], name=op.f('fk_node_probations_action_id_actions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_node_probations_incident_id_incidents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['return_action_id'], ['actions.id'], name=op.f('fk_node_probations_return_action_id_actions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['ticket_action_id'], ['actions.id'], name=op.f('fk_node_probations_ticket_action_id_actions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_node_probations'))
    )
    with op.batch_alter_table('node_probations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_node_probations_hostname'), ['hostname'], unique=False)
        batch_op.create_index(batch_op.f('ix_node_probations_incident_id'), ['incident_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_node_probations_status'), ['status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('node_probations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_node_probations_status'))
        batch_op.drop_index(batch_op.f('ix_node_probations_incident_id'))
        batch_op.drop_index(batch_op.f('ix_node_probations_hostname'))
    op.drop_table('node_probations')
