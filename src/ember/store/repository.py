"""Reading and writing Ember's records. Synchronous on purpose: the control plane calls it from
worker threads (`asyncio.to_thread`) and the group-commit writer from its own thread, so the
event loop never waits on the database.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ember.store.models import (
    Budget,
    Deployment,
    File,
    Model,
    Prediction,
    Release,
    ReplicaUsage,
    Setting,
    Token,
    Version,
)


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


PREDICTION_COLUMNS = [c.name for c in Prediction.__table__.columns]
USAGE_COLUMNS = [c.name for c in ReplicaUsage.__table__.columns]


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session = sessionmaker(engine, expire_on_commit=False)
        # Built once: constructing this statement costs more than executing it.
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(Prediction)
        self._upsert = insert.on_conflict_do_update(
            index_elements=["id"],
            set_={c: insert.excluded[c] for c in PREDICTION_COLUMNS if c != "id"},
        )
        usage = dialect.insert(ReplicaUsage)
        self._upsert_usage = usage.on_conflict_do_update(
            index_elements=["id"],
            set_={c: usage.excluded[c] for c in USAGE_COLUMNS if c != "id"},
            where=~ReplicaUsage.final,  # a final account is never overwritten by a checkpoint
        )

    # -- settings and tokens ----------------------------------------------------------

    def setting(self, key: str) -> str | None:
        with self.session() as session:
            row = session.get(Setting, key)
            return row.value if row else None

    def set_setting(self, key: str, value: str) -> None:
        with self.session.begin() as session:
            session.merge(Setting(key=key, value=value))

    def setting_or_create(self, key: str, make: Any) -> str:
        """The value of a setting, creating it with `make()` the first time (race-safe)."""
        value = self.setting(key)
        if value is not None:
            return value
        try:
            with self.session.begin() as session:
                if session.get(Setting, key) is None:
                    session.add(Setting(key=key, value=make()))
        except IntegrityError:  # another request made it between our read and our write
            pass
        value = self.setting(key)
        assert value is not None
        return value

    def create_token(
        self,
        name: str,
        owner: str,
        scope: str = "admin",
        token: str | None = None,
        rate_limit: str | None = None,
    ) -> tuple[Token, str]:
        """A new token (returned in clear exactly once) and its stored record."""
        token = token or "r8_" + secrets.token_urlsafe(30)
        record = Token(
            id="tok_" + secrets.token_hex(8),
            name=name,
            hash=hash_token(token),
            owner=owner,
            scope=scope,
            rate_limit=rate_limit,
            created_at=now(),
        )
        with self.session.begin() as session:
            session.add(record)
        return record, token

    def token_by_secret(self, token: str) -> Token | None:
        with self.session() as session:
            return session.scalar(select(Token).where(Token.hash == hash_token(token)))

    def token_names(self) -> dict[str, str]:
        with self.session() as session:
            return dict(session.execute(select(Token.id, Token.name)).all())  # type: ignore[arg-type]

    def tokens(self) -> list[Token]:
        with self.session() as session:
            return list(session.scalars(select(Token).order_by(Token.created_at)))

    def delete_token(self, token_id: str) -> bool:
        with self.session.begin() as session:
            record = session.get(Token, token_id)
            if record is None:
                return False
            session.delete(record)
            return True

    def count_tokens(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(Token)) or 0

    # -- models and versions ----------------------------------------------------------

    def model(self, owner: str, name: str) -> Model | None:
        with self.session() as session:
            return session.scalar(select(Model).where(Model.owner == owner, Model.name == name))

    def models(self) -> Sequence[Model]:
        with self.session() as session:
            return session.scalars(select(Model).order_by(Model.created_at.desc())).all()

    def create_model(self, **fields: Any) -> Model:
        record = Model(created_at=now(), **fields)
        with self.session.begin() as session:
            session.add(record)
        return record

    def delete_model(self, model_id: int) -> None:
        with self.session.begin() as session:
            session.execute(delete(Model).where(Model.id == model_id))

    def add_version(self, model: Model, **fields: Any) -> Version:
        record = Version(model_id=model.id, created_at=now(), **fields)
        with self.session.begin() as session:
            session.add(record)
            session.execute(
                update(Model).where(Model.id == model.id).values(latest_version_id=record.id)
            )
        model.latest_version_id = record.id
        return record

    def version(self, version_id: str) -> Version | None:
        with self.session() as session:
            return session.get(Version, version_id)

    def versions(self, model_id: int) -> Sequence[Version]:
        with self.session() as session:
            query = select(Version).where(Version.model_id == model_id)
            return session.scalars(query.order_by(Version.created_at.desc())).all()

    def model_by_id(self, model_id: int) -> Model | None:
        with self.session() as session:
            return session.get(Model, model_id)

    # -- deployments ------------------------------------------------------------------

    def deployment(self, owner: str, name: str) -> Deployment | None:
        with self.session() as session:
            query = select(Deployment).where(Deployment.owner == owner, Deployment.name == name)
            return session.scalar(query)

    def deployments(self) -> Sequence[Deployment]:
        with self.session() as session:
            return session.scalars(select(Deployment).order_by(Deployment.created_at)).all()

    def create_deployment(
        self, owner: str, name: str, **release: Any
    ) -> tuple[Deployment, Release]:
        with self.session.begin() as session:
            deployment = Deployment(owner=owner, name=name, created_at=now())
            session.add(deployment)
            session.flush()
            first = Release(deployment_id=deployment.id, number=1, created_at=now(), **release)
            session.add(first)
        return deployment, first

    def add_release(self, deployment: Deployment, **changes: Any) -> Release:
        with self.session.begin() as session:
            current = self._current_release(session, deployment.id)
            fields = {
                column: getattr(current, column)
                for column in (
                    "model_id",
                    "version_id",
                    "hardware",
                    "min_instances",
                    "max_instances",
                    "scaling",
                    "created_by",
                )
            }
            fields.update(changes)
            release = Release(
                deployment_id=deployment.id, number=current.number + 1, created_at=now(), **fields
            )
            session.add(release)
        return release

    @staticmethod
    def _current_release(session: Session, deployment_id: int) -> Release:
        query = select(Release).where(Release.deployment_id == deployment_id)
        release = session.scalar(query.order_by(Release.number.desc()).limit(1))
        assert release is not None, f"deployment {deployment_id} has no release"
        return release

    def current_release(self, deployment: Deployment) -> Release:
        with self.session() as session:
            return self._current_release(session, deployment.id)

    def delete_deployment(self, deployment_id: int) -> None:
        with self.session.begin() as session:
            session.execute(delete(Deployment).where(Deployment.id == deployment_id))

    # -- predictions ------------------------------------------------------------------

    def upsert_predictions(self, rows: Iterable[dict[str, Any]]) -> None:
        """Insert or update many predictions in one transaction (the group commit)."""
        rows = list(rows)
        if not rows:
            return
        with self.engine.begin() as connection:
            connection.execute(self._upsert, rows)

    def prediction(self, prediction_id: str) -> Prediction | None:
        with self.session() as session:
            return session.get(Prediction, prediction_id)

    def predictions_page(
        self,
        limit: int,
        before: tuple[datetime.datetime, str] | None = None,
        *,
        status: str | None = None,
        model: str | None = None,
        deployment: str | None = None,
        owner: str | None = None,
    ) -> list[Prediction]:
        """Newest first; `before` is the (created_at, id) of the last row of the previous page;
        each filter given must match exactly."""
        query = select(Prediction).order_by(Prediction.created_at.desc(), Prediction.id.desc())
        for column, wanted in (
            (Prediction.owner, owner),
            (Prediction.status, status),
            (Prediction.model, model),
            (Prediction.deployment, deployment),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if before is not None:
            created_at, prediction_id = before
            query = query.where(
                (Prediction.created_at < created_at)
                | ((Prediction.created_at == created_at) & (Prediction.id < prediction_id))
            )
        with self.session() as session:
            return list(session.scalars(query.limit(limit)))

    def unfinished_predictions(self) -> list[Prediction]:
        query = select(Prediction).where(Prediction.status.in_(("starting", "processing")))
        with self.session() as session:
            return list(session.scalars(query.order_by(Prediction.created_at)))

    # -- the cost ledger --------------------------------------------------------------

    def upsert_replica_usage(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.engine.begin() as connection:
                connection.execute(self._upsert_usage, rows)

    def close_unfinished_usage(self) -> int:
        """Make the last checkpoints of replicas of an Ember that died final: they stopped
        with it, when their checkpointed time ran out (at start, no replica is alive)."""
        with self.session.begin() as session:
            rows = list(session.scalars(select(ReplicaUsage).where(~ReplicaUsage.final)))
            for row in rows:
                lived = (
                    row.starting_seconds + row.busy_seconds + row.idle_seconds
                    + row.draining_seconds
                )  # fmt: skip
                row.stopped_at = row.requested_at + datetime.timedelta(seconds=lived)
                row.final = True
        return len(rows)

    def replica_usage_since(
        self, since: datetime.datetime | None, deployment: str | None = None
    ) -> list[ReplicaUsage]:
        """Replicas that lived at some point after `since` (all of them without it), of one
        deployment if given."""
        query = select(ReplicaUsage)
        if deployment is not None:
            query = query.where(ReplicaUsage.deployment == deployment)
        if since is not None:
            query = query.where(
                ReplicaUsage.stopped_at.is_(None) | (ReplicaUsage.stopped_at >= since)
            )
        with self.session() as session:
            return list(session.scalars(query.order_by(ReplicaUsage.requested_at)))

    def finished_predictions_since(
        self, since: datetime.datetime | None, deployment: str | None = None
    ) -> list[Prediction]:
        """Finished predictions created after `since` (of one deployment, if given), without
        their inputs and outputs."""
        query = select(Prediction).where(Prediction.completed_at.is_not(None))
        if since is not None:
            query = query.where(Prediction.created_at >= since)
        if deployment is not None:
            query = query.where(Prediction.deployment == deployment)
        columns = (
            Prediction.id,
            Prediction.owner,
            Prediction.model,
            Prediction.version_id,
            Prediction.deployment,
            Prediction.token_id,
            Prediction.status,
            Prediction.metrics,
            Prediction.created_at,
            Prediction.started_at,
            Prediction.completed_at,
        )
        with self.session() as session:
            return list(session.execute(query.with_only_columns(*columns)))  # type: ignore[arg-type]

    def budgets(self) -> list[Budget]:
        with self.session() as session:
            return list(session.scalars(select(Budget).order_by(Budget.created_at)))

    def add_budget(self, **fields: Any) -> Budget:
        record = Budget(id=f"b-{secrets.token_hex(6)}", created_at=now(), **fields)
        with self.session.begin() as session:
            session.add(record)
        return record

    def delete_budget(self, budget_id: str) -> bool:
        with self.session.begin() as session:
            return session.execute(delete(Budget).where(Budget.id == budget_id)).rowcount > 0

    # -- files ------------------------------------------------------------------------

    def add_file(self, **fields: Any) -> File:
        record = File(created_at=now(), **fields)
        with self.session.begin() as session:
            session.add(record)
        return record

    def file(self, file_id: str) -> File | None:
        with self.session() as session:
            return session.get(File, file_id)

    def files(self, owner: str) -> Sequence[File]:
        with self.session() as session:
            query = select(File).where(File.owner == owner).order_by(File.created_at.desc())
            return session.scalars(query).all()

    def delete_file(self, file_id: str) -> None:
        with self.session.begin() as session:
            session.execute(delete(File).where(File.id == file_id))
