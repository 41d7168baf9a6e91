"""Alembic environment: migrations run on a connection the registry hands over."""

from __future__ import annotations

from alembic import context

from services.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("error: migrations run through the registry (gatehouse registry --migrate)")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
