"""Alembic's environment for the PostgreSQL schema: run by ``storage.schema.upgrade`` on a connection it
holds (under an advisory lock), never from a URL of its own."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations with `layerfreeze migrate` (LAYERFREEZE_DATABASE_URL set)")
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
