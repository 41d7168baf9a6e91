"""service API keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column(
            "service_id",
            sa.String(length=40),
            sa.ForeignKey("services.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("service_id", "name"),
        sa.UniqueConstraint("key_hash"),
    )
    op.create_index("ix_service_keys_service_id", "service_keys", ["service_id"])


def downgrade() -> None:
    op.drop_index("ix_service_keys_service_id", table_name="service_keys")
    op.drop_table("service_keys")
