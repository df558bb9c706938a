"""Job, model, blob and idempotency records (the SQLite file's schema version 2), and blob pins.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Flags are integers 0/1 as in SQLite, so that one SQL text serves both dialects; times are seconds since
# the epoch as double precision (REAL would be 4 bytes here).
TIME = sa.Double


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("finished_at", TIME),
        sa.Column("dry_run", sa.Integer, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("input_filename", sa.Text, nullable=False),
        sa.Column("input_bytes", sa.BigInteger, nullable=False),
        sa.Column("input_sha256", sa.Text, nullable=False),
        sa.Column("output_filename", sa.Text),
        sa.Column("output_bytes", sa.BigInteger),
        sa.Column("output_sha256", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("holds_blob", sa.Integer, nullable=False, server_default="1"),
        sa.Column("inline_digest", sa.Integer, nullable=False, server_default="1"),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')",
                           name="jobs_status_check"),
    )
    op.create_index("jobs_tenant_seq", "jobs", ["tenant", "seq"])
    op.create_index("jobs_status", "jobs", ["status"])
    op.create_index("jobs_input_sha256", "jobs", ["input_sha256"])
    op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", TIME, nullable=False),
        sa.CheckConstraint("id = 1", name="heartbeat_one_row"),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("tenant", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("format", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
    )
    op.create_index("models_tenant_sha256", "models", ["tenant", "sha256"], unique=True)
    op.create_index("models_tenant_seq", "models", ["tenant", "seq"])
    op.create_table(
        "model_files",
        sa.Column("model_id", sa.Text, primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
    )
    op.create_index("model_files_sha256", "model_files", ["sha256"])
    op.create_table(
        "idempotency",
        sa.Column("tenant", sa.Text, primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("headers", sa.Text),
        sa.Column("body", sa.LargeBinary),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "pins",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
    )


def downgrade() -> None:
    for table in ("pins", "idempotency", "model_files", "models", "blobs", "heartbeat", "jobs"):
        op.drop_table(table)
