"""suppression unique with NULLS NOT DISTINCT and a detail; deliveries by provider message id

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("uq_suppression_entries_tenant_id", "suppression_entries", type_="unique")
    op.create_unique_constraint(
        "uq_suppression_entries_tenant_id",
        "suppression_entries",
        ["tenant_id", "address"],
        postgresql_nulls_not_distinct=True,
    )
    op.add_column("suppression_entries", sa.Column("detail", sa.Text(), nullable=True))
    op.create_index(
        op.f("ix_deliveries_provider_message_id"), "deliveries", ["provider_message_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_deliveries_provider_message_id"), table_name="deliveries")
    op.drop_column("suppression_entries", "detail")
    op.drop_constraint("uq_suppression_entries_tenant_id", "suppression_entries", type_="unique")
    op.create_unique_constraint(
        "uq_suppression_entries_tenant_id", "suppression_entries", ["tenant_id", "address"]
    )
