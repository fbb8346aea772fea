"""Connecting to the database and bringing its schema up to date.

SQLite (the embedded default) runs in WAL mode with `synchronous=NORMAL`: a commit is in the
operating system's hands when it returns, so it survives a kill -9 of Ember (not a power
cut), and commits cost microseconds instead of an fsync. PostgreSQL sessions use
`synchronous_commit=off` for the same trade: the PostgreSQL server keeps committed data
across a crash of Ember; only a crash of the database machine itself could lose the last
fraction of a second.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'ember.db'}"


def normalise_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _postgres_session(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    dbapi_connection.commit()


def connect(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
        event.listen(engine, "connect", _postgres_session)
    return engine


def migrate(engine: Engine) -> None:
    """Apply every Alembic migration not yet applied (a no-op when up to date)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def aware(value: datetime.datetime | None) -> datetime.datetime | None:
    """SQLite hands datetimes back without their timezone; Ember stores them in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value
