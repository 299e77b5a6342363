"""Audit events name the HMAC key that signed them (NULL: written before the chain had a key).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 15:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no table rebuild on SQLite), so the append-only triggers stay as they are.
    op.add_column('audit_events', sa.Column('key_id', sa.String(length=16), nullable=True))


def downgrade() -> None:
    op.drop_column('audit_events', 'key_id')
