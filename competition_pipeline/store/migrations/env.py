"""Alembic environment: migrations always run on the connection that
:mod:`competition_pipeline.store.schema` hands over, inside its transaction and under its advisory
lock (never from an alembic.ini URL)."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():  # a no-op inside the caller's transaction
    context.run_migrations()
