"""Fixtures of the in-process tests (the actors driven against the real PostgreSQL)."""

from __future__ import annotations

import pytest

from pg import migrate
from storage.database import Database


@pytest.fixture
async def db(new_database, request):
    """An open :class:`storage.database.Database` on a fresh, migrated database of its own
    (named after the test module), closed after the test."""
    db = Database(new_database(f"paycast_{request.module.__name__.rsplit('.', 1)[-1].removeprefix('test_')}"))
    await db.open()
    try:
        await db.run(migrate.apply)
        yield db
    finally:
        await db.close()
