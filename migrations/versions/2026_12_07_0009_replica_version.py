"""what each replica runs, and whether a service's probes pass against it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("replicas") as batch_op:
        batch_op.add_column(sa.Column("version", sa.String(64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("probed", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch_op:
        batch_op.drop_column("probed")
        batch_op.drop_column("version")
