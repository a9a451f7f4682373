"""engagement histograms as packed float32; keyset index for fan-out; fan-out batch counters

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # float8[] → 168 little-endian float32; the models are rebuilt from events anyway
    op.execute("DELETE FROM subscriber_engagement")
    op.execute(
        "ALTER TABLE subscriber_engagement ALTER COLUMN histogram TYPE bytea USING NULL::bytea"
    )
    op.create_index("ix_subscribers_tenant_keyset", "subscribers", ["tenant_id", "id"])
    op.add_column("campaigns", sa.Column("fanout_batches", sa.Integer(), nullable=True))
    op.add_column(
        "campaigns",
        sa.Column("fanout_completed", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("campaigns", "fanout_completed")
    op.drop_column("campaigns", "fanout_batches")
    op.drop_index("ix_subscribers_tenant_keyset", table_name="subscribers")
    op.execute("DELETE FROM subscriber_engagement")
    op.execute(
        "ALTER TABLE subscriber_engagement ALTER COLUMN histogram TYPE double precision[] "
        "USING NULL"
    )
