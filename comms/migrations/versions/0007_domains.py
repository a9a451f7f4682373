"""domains as code: tenant sending domains, notify URL per tenant

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = ("pending", "verifying", "verified", "failed", "drifted")


def upgrade() -> None:
    op.add_column("tenants", sa.Column("notify_url", sa.String(2000), nullable=True))
    state = postgresql.ENUM(*STATES, name="domain_state")
    state.create(op.get_bind())
    op.create_table(
        "domains",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "tenant_id", sa.Uuid(), sa.ForeignKey("tenants.id", ondelete="CASCADE"),
            nullable=False, index=True,
        ),
        sa.Column("name", sa.String(253), nullable=False, index=True),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column(
            "state", postgresql.ENUM(*STATES, name="domain_state", create_type=False),
            nullable=False,
        ),
        sa.Column("challenge", sa.String(64), nullable=False),
        sa.Column("dkim_tokens", postgresql.ARRAY(sa.String(128)), nullable=False),
        sa.Column("dns_provider", sa.String(32), nullable=False),
        sa.Column("dns_settings", postgresql.JSONB(), nullable=False),
        sa.Column("dns_secrets", postgresql.JSONB(), nullable=True),
        sa.Column("sync_paused", sa.Text(), nullable=True),
        sa.Column("published", postgresql.JSONB(), nullable=False),
        sa.Column("findings", postgresql.JSONB(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
            nullable=False,
        ),
        sa.UniqueConstraint("tenant_id", "name"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("domains")
    postgresql.ENUM(name="domain_state").drop(op.get_bind())
    op.drop_column("tenants", "notify_url")
