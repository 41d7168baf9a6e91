"""certificates, ACME challenges and accounts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 23:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GATEWAY = "gateways.id"


def upgrade() -> None:
    op.create_table(
        "tls_certificates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column(
            "gateway_id", sa.String(length=40), sa.ForeignKey(GATEWAY, ondelete="CASCADE"), nullable=False
        ),
        sa.Column("hostnames", sa.String(length=1024), nullable=False),
        sa.Column("issuer", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("chain_pem", sa.Text(), nullable=False),
        sa.Column("key_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("renew_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("gateway_id", "hostnames"),
    )
    op.create_index("ix_tls_certificates_project_id", "tls_certificates", ["project_id"])
    op.create_index("ix_tls_certificates_gateway_id", "tls_certificates", ["gateway_id"])
    op.create_table(
        "acme_challenges",
        sa.Column("token", sa.String(length=255), nullable=False),
        sa.Column("key_authorization", sa.String(length=512), nullable=False),
        sa.Column(
            "gateway_id", sa.String(length=40), sa.ForeignKey(GATEWAY, ondelete="CASCADE"), nullable=False
        ),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("resource_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index("ix_acme_challenges_gateway_id", "acme_challenges", ["gateway_id"])
    op.create_table(
        "acme_accounts",
        sa.Column("directory_url", sa.String(length=512), nullable=False),
        sa.Column("key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("registration_json", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("directory_url"),
    )


def downgrade() -> None:
    op.drop_table("acme_accounts")
    op.drop_index("ix_acme_challenges_gateway_id", table_name="acme_challenges")
    op.drop_table("acme_challenges")
    op.drop_index("ix_tls_certificates_gateway_id", table_name="tls_certificates")
    op.drop_index("ix_tls_certificates_project_id", table_name="tls_certificates")
    op.drop_table("tls_certificates")
