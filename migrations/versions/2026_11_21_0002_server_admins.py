"""server admins

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("admin", sa.Boolean(), server_default="0", nullable=False))
    op.execute("UPDATE users SET admin = true WHERE name = 'admin'")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("admin")
