"""The Alembic migrations build exactly the schema the SQLAlchemy models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from ember.store.db import connect, migrate, sqlite_url
from ember.store.models import Base


def test_migrations_match_the_models(tmp_path: Path) -> None:
    engine = connect(sqlite_url(tmp_path))
    migrate(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
