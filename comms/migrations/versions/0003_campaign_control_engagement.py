"""campaign fan-out cursor and fallback intro; subscriber engagement histograms

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("campaigns", sa.Column("fallback_intro", sa.Text(), nullable=True))
    op.add_column("campaigns", sa.Column("fanout_cursor", sa.String(length=64), nullable=True))
    op.add_column(
        "campaigns",
        sa.Column("fanout_done", sa.Boolean(), server_default="false", nullable=False),
    )
    op.create_table(
        "subscriber_engagement",
        sa.Column("subscriber_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("histogram", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("evidence", sa.Float(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"], ["subscribers.id"],
            name=op.f("fk_subscriber_engagement_subscriber_id_subscribers"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"],
            name=op.f("fk_subscriber_engagement_tenant_id_tenants"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("subscriber_id", name=op.f("pk_subscriber_engagement")),
    )  # fmt: skip
    op.create_index(
        op.f("ix_subscriber_engagement_tenant_id"), "subscriber_engagement", ["tenant_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_subscriber_engagement_tenant_id"), table_name="subscriber_engagement")
    op.drop_table("subscriber_engagement")
    op.drop_column("campaigns", "fanout_done")
    op.drop_column("campaigns", "fanout_cursor")
    op.drop_column("campaigns", "fallback_intro")
