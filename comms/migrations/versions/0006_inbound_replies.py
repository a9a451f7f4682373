"""inbound replies: reply domain and consumer per tenant, inbound_replies

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("reply_domain", sa.String(253), nullable=True))
    op.create_unique_constraint("uq_tenants_reply_domain", "tenants", ["reply_domain"])
    op.add_column("tenants", sa.Column("reply_consumer_url", sa.String(2000), nullable=True))
    op.create_table(
        "inbound_replies",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False, index=True,
        ),
        sa.Column("raw_key", sa.String(300), nullable=False, unique=True),
        sa.Column(
            "delivery_id", sa.Uuid(), sa.ForeignKey("deliveries.id", ondelete="SET NULL"),
            nullable=True, index=True,
        ),
        sa.Column(
            "subscriber_id", sa.Uuid(), sa.ForeignKey("subscribers.id", ondelete="SET NULL"),
            nullable=True, index=True,
        ),
        sa.Column(
            "campaign_id", sa.Uuid(), sa.ForeignKey("campaigns.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_address", sa.String(320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("message_id_header", sa.String(998), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("dkim", sa.String(16), nullable=False),
        sa.Column("spf", sa.String(16), nullable=False),
        sa.Column("dmarc", sa.String(16), nullable=False),
        sa.Column("spam_score", sa.Float(), nullable=True),
        sa.Column("auto_reply", sa.Boolean(), nullable=False),
        sa.Column("details", postgresql.JSONB(), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("threaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forwarded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forward_attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_forward_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_forward_error", sa.Text(), nullable=True),
    )  # fmt: skip
    op.create_index(
        "ix_inbound_replies_forward_due",
        "inbound_replies",
        ["next_forward_at"],
        postgresql_where=sa.text("forwarded_at IS NULL AND threaded_at IS NOT NULL"),
    )
    op.create_index(
        "ix_inbound_replies_tenant_keyset", "inbound_replies", ["tenant_id", "received_at", "id"]
    )


def downgrade() -> None:
    op.drop_table("inbound_replies")
    op.drop_constraint("uq_tenants_reply_domain", "tenants")
    op.drop_column("tenants", "reply_consumer_url")
    op.drop_column("tenants", "reply_domain")
