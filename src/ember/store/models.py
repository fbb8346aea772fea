"""The database schema: tokens, models, versions, deployments and their releases,
predictions, uploaded files, platform settings, and the cost ledger of replicas.

JSON columns hold what the API returns verbatim (inputs, outputs, metrics, OpenAPI schemas),
so a prediction read back after a restart is the same object the client saw.
"""

from __future__ import annotations

import datetime

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """Platform-wide values that must survive restarts (e.g. the webhook signing secret,
    which is kept encrypted: see control/sealing.py)."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # e.g. webhook_secret:<owner>
    value: Mapped[str] = mapped_column(Text)


class Token(Base):
    """An API token; only its SHA-256 is stored."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(20), default="admin")
    # e.g. "600/min": requests this token may make (None: the server's default, if any)
    rate_limit: Mapped[str | None] = mapped_column(String(30), nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    visibility: Mapped[str] = mapped_column(String(20), default="private")
    hardware: Mapped[str] = mapped_column(String(50), default="cpu")
    latest_version_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_models_owner_name", "owner", "name", unique=True),)


class Version(Base):
    """One immutable build of a package: its files, spec and OpenAPI schema."""

    __tablename__ = "versions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    package_dir: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict] = mapped_column(JSON)
    openapi_schema: Mapped[dict] = mapped_column(JSON)
    cog_version: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("ix_deployments_owner_name", "owner", "name", unique=True),)


class Release(Base):
    """A deployment's configuration at one point: every PATCH makes a new numbered release."""

    __tablename__ = "releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"))
    hardware: Mapped[str] = mapped_column(String(50))
    min_instances: Mapped[int] = mapped_column(Integer, default=0)
    max_instances: Mapped[int] = mapped_column(Integer, default=1)
    scaling: Mapped[dict] = mapped_column(JSON, default=dict)  # the other ScalingSettings
    created_by: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_releases_deployment_number", "deployment_id", "number", unique=True),
    )


class Prediction(Base):
    __tablename__ = "predictions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(201))
    version_id: Mapped[str] = mapped_column(String(64))
    deployment: Mapped[str | None] = mapped_column(String(201), nullable=True)
    token_id: Mapped[str | None] = mapped_column(String(40), nullable=True)  # who pays
    status: Mapped[str] = mapped_column(String(20))
    input: Mapped[dict] = mapped_column(JSON)
    output: Mapped[object | None] = mapped_column(JSON, nullable=True)
    logs: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(20), default="api")
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    streams_output: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_events_filter: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # The request's context for the predictor (Cog's `context`): sealed, it may hold keys.
    context: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    completed_at: Mapped[datetime.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    __table_args__ = (
        Index("ix_predictions_created_at", "created_at"),
        Index("ix_predictions_status", "status"),
        Index("ix_predictions_owner_created_at", "owner", "created_at"),
    )


class File(Base):
    """An uploaded input file (POST /v1/files)."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    file_metadata: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class ReplicaUsage(Base):
    """One replica's life in the cost ledger: seconds by state at its hardware's rate.

    Written while it lives (checkpoints) and when its process is gone (`final`); the parts
    sum to its wall time, and `cost` is wall time x `rate`.
    """

    __tablename__ = "replica_usage"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the replica id
    deployment: Mapped[str] = mapped_column(String(201))  # "owner/name" or "version:<id>"
    hardware: Mapped[str] = mapped_column(String(50))
    tier: Mapped[str] = mapped_column(String(20))
    rate: Mapped[float] = mapped_column(Float)  # USD per second when it started
    requested_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    starting_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    busy_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    idle_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    draining_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    attributed_start_cost: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (Index("ix_replica_usage_requested_at", "requested_at"),)


class Budget(Base):
    """A spend limit: what one API token's predictions, or one deployment's replicas, may cost
    per UTC day or month before new predictions are refused (402)."""

    __tablename__ = "budgets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(20))  # "token" or "deployment"
    target: Mapped[str] = mapped_column(String(201))  # a token id, or "owner/name"
    period: Mapped[str] = mapped_column(String(10))  # "day" or "month"
    limit_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
