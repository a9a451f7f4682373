"""failover position on deliveries, operator API keys, provider config updated_at

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "deliveries",
        sa.Column("failover_index", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "api_keys",
        sa.Column("scope", sa.String(length=16), server_default="tenant", nullable=False),
    )
    op.alter_column("api_keys", "tenant_id", existing_type=sa.Uuid(), nullable=True)
    op.add_column(
        "provider_configs",
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("provider_configs", "updated_at")
    op.execute("DELETE FROM api_keys WHERE tenant_id IS NULL")
    op.alter_column("api_keys", "tenant_id", existing_type=sa.Uuid(), nullable=False)
    op.drop_column("api_keys", "scope")
    op.drop_column("deliveries", "failover_index")
