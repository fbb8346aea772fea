"""The types a predictor's signature is written with.

Ember, Cog and Truss predictors all describe their inputs and outputs with these: the Cog
shim re-exports them under Cog's names, so one validation and schema path serves every
packaging format. They depend only on pydantic, because they are imported inside model
environments next to the user's own libraries.
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import CoreSchema, core_schema

Item = TypeVar("Item")

_MISSING: Any = ...


@dataclass(frozen=True)
class InputSpec:
    """What `Input(...)` records about one parameter: its default and its constraints.

    A plain record rather than a pydantic `FieldInfo`, so loaders can read it without
    pydantic internals and turn it into a field only when the input model is built.
    """

    default: Any = _MISSING
    description: str | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    regex: str | None = None
    choices: list[str | int] | None = None
    deprecated: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def Input(
    default: Any = _MISSING,
    description: str | None = None,
    ge: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    regex: str | None = None,
    choices: list[str | int] | None = None,
    deprecated: bool | None = None,
) -> Any:
    """Describe one predictor input: default, help text and constraints.

    Use it as a parameter default (`steps: int = Input(default=20, ge=1)`), as Cog does,
    or inside `Annotated[int, Input(ge=1)] = 20`. Leaving out `default` makes the input
    required.
    """
    return InputSpec(
        default=default,
        description=description,
        ge=ge,
        le=le,
        min_length=min_length,
        max_length=max_length,
        regex=regex,
        choices=list(choices) if choices is not None else None,
        deprecated=deprecated,
    )


class Path(pathlib.PosixPath):
    """A file given to or returned by a predictor.

    As an input it arrives as a local path: the worker has already fetched URLs and decoded
    data URIs into a private folder. As an output it is sent back as a file.
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string", "format": "uri"}

    @classmethod
    def _validate(cls, value: Any) -> Path:
        if isinstance(value, cls):
            return value
        if isinstance(value, (str, pathlib.PurePath)):
            return cls(value)
        raise ValueError(f"expected a file (URL, data URI or path), got {type(value).__name__}")


class File(io.IOBase):
    """Cog's deprecated file input: the predictor receives an open binary file."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return {"type": "string", "format": "uri"}

    @classmethod
    def _validate(cls, value: Any) -> io.IOBase:
        if isinstance(value, io.IOBase):
            return value
        if isinstance(value, (str, pathlib.PurePath)):
            return open(value, "rb")
        raise ValueError(f"expected a file (URL, data URI or path), got {type(value).__name__}")


class Secret(pydantic.SecretStr):
    """A string input kept out of logs, reprs and stored inputs; read it with
    `get_secret_value()`."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema.update(
            {"type": "string", "format": "password", "x-cog-secret": True, "writeOnly": True}
        )
        return json_schema


class CancelationException(BaseException):
    """Raised inside a synchronous predict() when its prediction is canceled or times out.

    A BaseException, so a predictor's `except Exception` does not swallow it; async
    predictors get `asyncio.CancelledError` instead.
    """


class ConcatenateIterator(Iterator[Item]):
    """Streamed text whose chunks are meant to be joined (LLM tokens)."""


class AsyncConcatenateIterator(AsyncIterator[Item]):
    """The async form of `ConcatenateIterator`, for async predictors."""
