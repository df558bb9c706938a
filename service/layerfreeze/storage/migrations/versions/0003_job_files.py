"""The files of the model directory a job freezes, each a blob the job holds (SQLite: created on open).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_files",
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "path"),
    )
    op.create_index("job_files_sha256", "job_files", ["sha256"])


def downgrade() -> None:
    op.drop_index("job_files_sha256", table_name="job_files")
    op.drop_table("job_files")
