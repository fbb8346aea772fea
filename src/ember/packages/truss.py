"""Truss packages, unchanged: config.yaml + model/model.py with class `Model`.

Follows Truss's model wrapper: constructor keyword arguments are injected only when the
constructor accepts them, `load()` runs once, `preprocess → predict → postprocess` per request
(each may be async), a generator from predict streams, and `runtime.predict_concurrency`
bounds concurrent predictions.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from ember.packages.importing import load_attribute
from ember.packages.predictor import Predictor, openai_handlers
from ember.packages.spec import PackageError, PackageSpec, Resources, read_manifest

MANIFEST = "config.yaml"


def _python_version(value: str | None) -> str | None:
    """Truss writes 'py311'; Ember wants '3.11'."""
    if not value:
        return None
    digits = value.removeprefix("py")
    return f"{digits[0]}.{digits[1:]}" if "." not in digits else digits


def _resources(raw: dict[str, Any]) -> Resources:
    fields: dict[str, Any] = {}
    if raw.get("cpu") is not None:
        fields["cpu"] = str(raw["cpu"])
    if raw.get("memory") is not None:
        fields["memory"] = str(raw["memory"])
    if raw.get("accelerator"):
        fields["gpu"] = str(raw["accelerator"])
    elif raw.get("use_gpu"):
        fields["gpu"] = "any"
    return Resources(**fields)


def read_spec(root: Path) -> PackageSpec:
    config = read_manifest(root / MANIFEST)
    requirements = [str(r) for r in config.get("requirements") or []]
    if config.get("requirements_file"):
        from ember.packages.native import read_requirements

        requirements += read_requirements(root, str(config["requirements_file"]))
    module_dir = config.get("model_module_dir", "model")
    filename = config.get("model_class_filename", "model.py")
    class_name = config.get("model_class_name", "Model")
    runtime = config.get("runtime") or {}
    name = str(config.get("model_name") or root.resolve().name)
    return PackageSpec(
        name=name.lower().replace(" ", "-"),
        format="truss",
        root=str(root),
        predictor=f"{module_dir}/{filename}:{class_name}",
        python_version=_python_version(config.get("python_version")),
        requirements=requirements,
        system_packages=[str(p) for p in config.get("system_packages") or []],
        environment={
            str(k): str(v) for k, v in (config.get("environment_variables") or {}).items()
        },
        resources=_resources(config.get("resources") or {}),
        max_concurrency=runtime.get("predict_concurrency", 1),  # the spec checks it
        options={"config": config},
    )


def _secrets(config: dict[str, Any]) -> dict[str, str | None]:
    """Truss declares secret names; their values come from the replica's environment."""
    return {name: os.environ.get(name) for name in (config.get("secrets") or {})}


def _init_kwargs(model_class: type, spec: PackageSpec) -> dict[str, Any]:
    config = spec.options.get("config", {})
    offered = {
        "config": config,
        "data_dir": Path(spec.root) / str(config.get("data_dir", "data")),
        "secrets": _secrets(config),
        "environment": {"name": os.environ.get("EMBER_ENVIRONMENT", "production")},
    }
    # The class's own signature: for a class without __init__ it is (), not object's (*a, **kw).
    parameters = inspect.signature(model_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return offered
    return {k: v for k, v in offered.items() if k in parameters}


def _chain(model: Any) -> Callable[[Any], Any]:
    """preprocess → predict → postprocess as one callable, async if any step is."""
    pre = getattr(model, "preprocess", None)
    post = getattr(model, "postprocess", None)
    predict = model.predict
    steps = [s for s in (pre, predict, post) if s is not None]
    if not any(inspect.iscoroutinefunction(s) or inspect.isasyncgenfunction(s) for s in steps):

        def run_sync(model_input: Any) -> Any:
            value = pre(model_input) if pre else model_input
            output = predict(value)
            # A streamed output goes out item by item; Truss does not postprocess streams.
            if post and not isinstance(output, Iterator):
                output = post(output)
            return output

        return run_sync

    async def run_async(model_input: Any) -> Any:
        value = await _step(pre, model_input) if pre else model_input
        output = await _step(predict, value)
        if post and not isinstance(output, (Iterator, AsyncIterator)):
            output = await _step(post, output)
        return output

    return run_async


async def _step(fn: Callable[[Any], Any], value: Any) -> Any:
    """One hook: awaited if async, run in a thread if sync (as Truss does), so a blocking
    step neither stalls the other predictions nor the worker's cancellation."""
    if inspect.isasyncgenfunction(fn):
        return fn(value)
    if inspect.iscoroutinefunction(fn):
        return await fn(value)
    return await asyncio.to_thread(fn, value)


def _hook(handler: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    """Truss's OpenAI hooks may take the raw request after the body
    (`chat_completions(self, model_input, request)`); Ember has no Starlette request to give
    a replica, so it passes None, which Truss models use only to check for disconnects."""
    if len(inspect.signature(handler).parameters) < 2:
        return handler
    if inspect.iscoroutinefunction(handler):

        async def call_async(body: dict[str, Any]) -> Any:
            return await handler(body, None)

        return call_async

    def call(body: dict[str, Any]) -> Any:  # generators (sync or async) stream as they are
        return handler(body, None)

    return call


def load(spec: PackageSpec) -> Predictor:
    model_class = load_attribute(spec)
    if not inspect.isclass(model_class) or not hasattr(model_class, "predict"):
        raise PackageError(f"{spec.predictor} must be a class with a predict(model_input) method")
    model = model_class(**_init_kwargs(model_class, spec))
    streams = inspect.isgeneratorfunction(model.predict) or inspect.isasyncgenfunction(
        model.predict
    )
    load_fn = getattr(model, "load", None)
    return Predictor(
        name=spec.name,
        setup=load_fn if load_fn else (lambda: None),
        predict=_chain(model),
        inputs=[],
        output_type=Iterator[Any] if streams else Any,
        accepts_extra_inputs=True,
        max_concurrency=spec.max_concurrency,
        healthcheck=getattr(model, "is_healthy", None),
        call_with_input_dict=True,
        openai={route: _hook(h) for route, h in openai_handlers(model).items()},
    )
