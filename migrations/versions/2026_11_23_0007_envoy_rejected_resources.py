"""the resources each Envoy refuses

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("envoy_status") as batch_op:
        batch_op.add_column(sa.Column("rejected_resources", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("envoy_status") as batch_op:
        batch_op.drop_column("rejected_resources")
