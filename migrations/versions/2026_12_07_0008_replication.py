"""what several copies of each process share: write notices, leases, the internal CA

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Taken by every write just before it commits (services/registry/write_notices.py).
        op.execute("CREATE SEQUENCE IF NOT EXISTS gatehouse_write_seq")
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "control_plane_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("public", sa.LargeBinary(), nullable=False),
        sa.Column("private_encrypted", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "redeemed_join_tokens",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )


def downgrade() -> None:
    op.drop_table("redeemed_join_tokens")
    op.drop_table("control_plane_secrets")
    op.drop_table("leases")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS gatehouse_write_seq")
