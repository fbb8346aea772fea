"""The one internal model of a predictor, whichever format it came from.

A loader (Ember, Cog, Truss) turns user code into a `Predictor`: its inputs with their
constraints, its output type and kind, how to set it up and how to call it. The worker only
ever sees this model; the schema generator only ever reads it. `predictor_from_target` is the
part the loaders share (a class, an instance or a function with a typed predict method), here
below them so that no loader imports another for it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from ember.engines.base import OPENAI_METHODS
from ember.packages.spec import PackageSpec
from ember.types import (
    AsyncConcatenateIterator,
    ConcatenateIterator,
    File,
    InputSpec,
    Path,
)


class OutputKind(str, enum.Enum):  # noqa: UP042 - StrEnum is 3.11+, model envs may be 3.10
    """How a prediction's output comes back."""

    VALUE = "value"  # one JSON value
    FILE = "file"  # a file, or a structure holding files
    ITERATOR = "iterator"  # a stream of items, sent as they are produced
    CONCATENATE = "concatenate"  # a stream of text chunks meant to be joined


class PredictorError(Exception):
    """A predictor whose signature Ember cannot serve; the message says what to change."""


_ITERATOR_ORIGINS = {
    Iterator,
    AsyncIterator,
    typing.Iterator,
    typing.AsyncIterator,
    typing.Generator,
    typing.AsyncGenerator,
    collections.abc.Generator,
    collections.abc.AsyncGenerator,
}
_CONCATENATE_ORIGINS = {ConcatenateIterator, AsyncConcatenateIterator}
_FILE_TYPES = (Path, File)


@dataclasses.dataclass
class InputField:
    """One named input of a predictor."""

    name: str
    annotation: Any
    spec: InputSpec
    order: int

    @property
    def required(self) -> bool:
        """Whether a caller must give it: `Optional[T]` without a default defaults to None."""
        return self.spec.required and not is_optional(self.annotation)

    @property
    def default(self) -> Any:
        return None if self.spec.required and not self.required else self.spec.default


@dataclasses.dataclass
class Predictor:
    """A loaded predictor: everything the worker needs to set it up and call it."""

    name: str
    setup: Callable[[], Any]
    predict: Callable[..., Any]
    inputs: list[InputField]
    output_type: Any
    accepts_extra_inputs: bool = False
    max_concurrency: int = 1
    healthcheck: Callable[[], Any] | None = None
    # Truss passes the whole input dict as one argument instead of keyword arguments.
    call_with_input_dict: bool = False
    reject_unknown_inputs: bool = False
    # OpenAI route ("chat.completions", "completions", "embeddings") → handler of its body.
    openai: dict[str, Callable[[dict[str, Any]], Any]] = dataclasses.field(default_factory=dict)
    input_model: type[BaseModel] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.input_model = build_input_model(
            self.inputs, self.accepts_extra_inputs, self.reject_unknown_inputs
        )

    @property
    def is_async(self) -> bool:
        return is_async_callable(self.predict)

    @property
    def output_kind(self) -> OutputKind:
        return output_kind(self.output_type)


def openai_handlers(instance: Any) -> dict[str, Callable[[dict[str, Any]], Any]]:
    """The OpenAI routes a predictor object serves itself, by Truss's method names."""
    if instance is None:
        return {}
    handlers = {}
    for route, method in OPENAI_METHODS.items():
        handler = getattr(instance, method, None)
        if callable(handler):
            handlers[route] = handler
    return handlers


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True for `async def` functions and async generators."""
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def iterator_item(annotation: Any) -> tuple[Any, bool] | None:
    """(item type, concatenate?) when the annotation is a streamed output, else None."""
    origin = typing.get_origin(annotation) or annotation
    if origin in _CONCATENATE_ORIGINS:
        args = typing.get_args(annotation)
        return (args[0] if args else str), True
    if origin in _ITERATOR_ORIGINS:
        args = typing.get_args(annotation)
        return (args[0] if args else Any), False
    return None


def _mentions_file(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, _FILE_TYPES):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return any(_mentions_file(f.annotation) for f in annotation.model_fields.values())
    return any(_mentions_file(arg) for arg in typing.get_args(annotation))


def output_kind(annotation: Any) -> OutputKind:
    item = iterator_item(annotation)
    if item is not None:
        return OutputKind.CONCATENATE if item[1] else OutputKind.ITERATOR
    return OutputKind.FILE if _mentions_file(annotation) else OutputKind.VALUE


def inputs_from_signature(fn: Callable[..., Any]) -> tuple[list[InputField], bool]:
    """Read a predict function's parameters into input fields.

    Returns the fields and whether the function takes `**kwargs` (extra inputs allowed).
    Defaults may be `Input(...)`, a plain value, or absent (required); `Annotated[T,
    Input(...)]` works too. `Optional[T]` without a default defaults to None, as in Cog.
    """
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a NameError in an annotation is the user's to fix
        raise PredictorError(f"cannot read the type hints of {fn.__qualname__}: {exc}") from exc
    fields: list[InputField] = []
    extra = False
    for order, param in enumerate(inspect.signature(fn).parameters.values()):
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            extra = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise PredictorError(f"{fn.__qualname__}: *{param.name} cannot be an input")
        annotation = hints.get(param.name)
        if annotation is None:
            raise PredictorError(
                f"input {param.name!r} of {fn.__qualname__} has no type annotation: "
                f"write e.g. `{param.name}: str`"
            )
        spec = _spec_for(param, annotation)
        annotation = _without_input_specs(annotation)
        fields.append(InputField(param.name, annotation, spec, order))
    return fields, extra


def _spec_for(param: inspect.Parameter, annotation: Any) -> InputSpec:
    if isinstance(param.default, InputSpec):
        spec = param.default
    elif typing.get_origin(annotation) is Annotated and any(
        isinstance(a, InputSpec) for a in typing.get_args(annotation)[1:]
    ):
        spec = next(a for a in typing.get_args(annotation)[1:] if isinstance(a, InputSpec))
        if param.default is not inspect.Parameter.empty:
            spec = _replace_default(spec, param.default)
    elif param.default is inspect.Parameter.empty:
        spec = InputSpec()
    else:
        spec = InputSpec(default=param.default)
    return spec


def _without_input_specs(annotation: Any) -> Any:
    """The bare type of an `Annotated[...]` input, but for Cog's `Opaque` marker.

    `Opaque` must stay: pydantic reads it to accept a third-party type as plain JSON, without
    it `Annotated[ThirdPartyClass, Opaque]` is unservable. Other metadata goes, as before, so
    that loaders and the worker keep seeing e.g. a plain `Path` for file inputs.
    """
    if typing.get_origin(annotation) is not Annotated:
        return annotation
    base, *metadata = typing.get_args(annotation)
    kept = [m for m in metadata if getattr(m, "__ember_opaque__", False)]
    return Annotated[(base, *kept)] if kept else base  # type: ignore[return-value]


def _replace_default(spec: InputSpec, default: Any) -> InputSpec:
    return dataclasses.replace(spec, default=default)


def is_optional(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return type(None) in typing.get_args(annotation) and typing.get_origin(annotation) in (
        typing.Union,
        types.UnionType,
    )


def _choices_type(name: str, base: Any, choices: list[str | int]) -> type[enum.Enum]:
    """Cog turns `choices` into an enum component named after the parameter.

    Members get neutral names (v0, v1, ...): only the values show in the schema, and a value
    such as "mro" or "_x_" would not be a valid member name.
    """
    values = list(dict.fromkeys(choices))
    members = [(f"v{i}", value) for i, value in enumerate(values)]
    if base is str:
        return enum.Enum(name, members, type=str)  # type: ignore[return-value]
    if base is int:
        return enum.IntEnum(name, members)  # type: ignore[return-value]
    raise PredictorError(
        f"input {name!r} uses choices, which only work with str or int inputs (got {base!r})"
    )


def _check_accept(input_field: InputField) -> None:
    """`Input(accept=...)` describes file inputs only; Cog's build refuses it elsewhere."""
    if "x-cog-accept" in input_field.spec.extra and not _mentions_file(input_field.annotation):
        raise PredictorError(
            f"accept is only valid on Path or File inputs (parameter '{input_field.name}')"
        )


def _default_values(input_field: InputField) -> list[Any]:
    """The default as a list of items to check (a list default checks each item)."""
    default = input_field.spec.default
    if input_field.spec.required or default is None:
        return []
    return list(default) if isinstance(default, (list, tuple)) else [default]


def _check_default(input_field: InputField) -> None:
    """Refuse a default that breaks its own constraints, at load, as Cog's build does.

    Pydantic does not validate defaults, so without this check the model would deploy and
    every request omitting the input would run with a value the schema says is impossible.
    """
    spec, name = input_field.spec, input_field.name
    values = _default_values(input_field)
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    texts = [v for v in values if isinstance(v, str)]
    problem = None
    if spec.ge is not None and any(v < spec.ge for v in numbers):
        problem = f"must be at minimum {spec.ge}"
    elif spec.le is not None and any(v > spec.le for v in numbers):
        problem = f"must be at maximum {spec.le}"
    elif spec.min_length is not None and any(len(v) < spec.min_length for v in texts):
        problem = f"must have a length of at minimum {spec.min_length}"
    elif spec.max_length is not None and any(len(v) > spec.max_length for v in texts):
        problem = f"must have a length of at maximum {spec.max_length}"
    elif spec.regex is not None and not all(re.match(spec.regex, v) for v in texts):
        problem = f"does not match the pattern {spec.regex!r}"
    elif spec.choices and any(v not in spec.choices for v in values):
        problem = f"is not one of the choices {spec.choices!r}"
    if problem:
        raise PredictorError(f"invalid default for input '{name}': {spec.default!r} {problem}")


def _field_info(input_field: InputField) -> tuple[Any, FieldInfo]:
    _check_accept(input_field)
    _check_default(input_field)
    spec = input_field.spec
    annotation = input_field.annotation
    extra: dict[str, Any] = {"x-order": input_field.order, **spec.extra}
    if spec.choices:
        annotation = _choices_type(input_field.name, annotation, spec.choices)
    kwargs: dict[str, Any] = {
        "default": input_field.default,
        "description": spec.description,
        "ge": spec.ge,
        "le": spec.le,
        "min_length": spec.min_length,
        "max_length": spec.max_length,
        "pattern": spec.regex,
        "json_schema_extra": extra,
    }
    if spec.deprecated is not None:
        kwargs["deprecated"] = spec.deprecated
    return annotation, Field(**kwargs)


class _ExtraInputs(BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class _StrictInputs(BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


def build_input_model(
    fields: list[InputField], accepts_extra: bool, strict: bool = False
) -> type[BaseModel]:
    """A pydantic model named `Input` that validates inputs and yields Cog's schema.

    Unknown inputs are ignored, as Cog and Replicate do, unless `strict` (Ember's own format,
    where a misspelt input name should be an error, not a silently used default).
    """
    definitions = {f.name: _field_info(f) for f in fields}
    base = _ExtraInputs if accepts_extra else _StrictInputs if strict else None
    return create_model("Input", __base__=base, **definitions)  # type: ignore[call-overload]


def _is_enum_value(value: Any) -> bool:
    return isinstance(value, enum.Enum)


def _is_union_with_float(annotation: Any) -> bool:
    """`str | float`, `Union[int, float]`...: a union in which a JSON integer could turn float."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return False
    return float in typing.get_args(annotation)


def _json_union_value(name: str, raw: Any, value: Any) -> Any:
    """The value a union input keeps: JSON numbers keep their type, booleans are no numbers.

    Pydantic's lax union makes `1` a float when the union has no `int` member, and `true`
    a float 1.0; Cog passes 1 through as an int (models branch on `isinstance(value, int)`)
    and refuses a boolean for `str | float`, as the gateway's JSON Schema check does.
    """
    if type(raw) is int and type(value) is float and value == raw:
        return raw
    if type(raw) is bool and type(value) is not bool:
        raise pydantic.ValidationError.from_exception_data(
            "Input", [{"type": "float_type", "loc": (name,), "input": raw}]
        )
    return value


def validated_inputs(predictor: Predictor, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate raw inputs against the predictor's input model → keyword arguments.

    Raises pydantic.ValidationError naming each bad field.
    """
    model = predictor.input_model.model_validate(raw)
    unions = {f.name for f in predictor.inputs if _is_union_with_float(f.annotation)}
    values: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        values[name] = value.value if _is_enum_value(value) else value
        if name in unions:
            values[name] = _json_union_value(name, raw.get(name), values[name])
    if model.model_extra:
        values.update(model.model_extra)
    return values


def predictor_from_target(
    spec: PackageSpec,
    target: Any,
    method: str = "predict",
    setup_kwargs: dict[str, Any] | None = None,
    reject_unknown_inputs: bool = False,
) -> Predictor:
    """Build a Predictor from a class (instantiated here), an instance, or a plain function.

    A class may also serve OpenAI's API itself with `chat_completions`, `completions` or
    `embeddings` methods (Truss's hook names) taking the request body.
    """
    if inspect.isclass(target):
        instance = target()
    elif inspect.isfunction(target):
        instance = None
    elif hasattr(target, method):
        instance = target
    else:
        raise PredictorError(f"{spec.predictor} is neither a class nor a function")
    if instance is None:
        predict, setup, healthcheck = target, None, None
    else:
        predict = getattr(instance, method, None)
        if predict is None:
            raise PredictorError(f"{type(instance).__name__} has no {method}() method")
        setup = getattr(instance, "setup", None)
        healthcheck = getattr(instance, "healthcheck", None)
    inputs, extra = inputs_from_signature(predict)
    if inspect.signature(predict).return_annotation is inspect.Signature.empty:
        raise PredictorError(
            f"{spec.predictor}: {method}() needs a return type annotation, e.g. `-> str`"
        )
    output_type = typing.get_type_hints(predict).get("return", Any)
    kwargs = setup_kwargs or {}
    return Predictor(
        name=spec.name,
        setup=(lambda: setup(**kwargs)) if setup else (lambda: None),
        predict=predict,
        inputs=inputs,
        output_type=output_type,
        accepts_extra_inputs=extra,
        max_concurrency=spec.max_concurrency,
        healthcheck=healthcheck,
        reject_unknown_inputs=reject_unknown_inputs,
        openai=openai_handlers(instance),
    )
