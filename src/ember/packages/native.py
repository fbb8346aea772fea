"""Ember's own package format: `ember.yaml` plus a class with `setup()` and a typed
`predict()`.

Designed to be the nicest of the three to write: no base class, no framework import needed
for simple models, `Annotated` or default-style `Input(...)`, sync or async, and one YAML
file that says everything a deployment needs (requirements, resources, scaling defaults).
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ember.packages.importing import load_attribute
from ember.packages.predictor import Predictor, PredictorError, inputs_from_signature
from ember.packages.spec import PackageError, PackageSpec, Resources, read_manifest

MANIFEST = "ember.yaml"


class EmberManifest(BaseModel):
    """The fields of ember.yaml. Unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="lowercase model name")
    predictor: str = Field(description="'predict.py:Predictor'")
    python_version: str | None = None
    requirements: list[str] | str = Field(
        default_factory=list, description="requirement lines, or the path of a requirements file"
    )
    system_packages: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    concurrency: int = Field(default=1, ge=1, description="predictions one replica runs at once")
    timeout: float | None = Field(default=None, gt=0, description="seconds per prediction")
    setup_in_host: bool = Field(
        default=True, description="set up once in the warm host, then fork replicas (CPU only)"
    )
    scaling: dict[str, Any] = Field(default_factory=dict)


def read_requirements(root: Path, value: list[str] | str) -> list[str]:
    """Requirement lines from a list or from a requirements file inside the package."""
    if isinstance(value, list):
        return [line.strip() for line in value if line.strip()]
    path = root / value
    if not path.is_file():
        raise PackageError(f"requirements file {value!r} not found in {root}")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def read_spec(root: Path) -> PackageSpec:
    try:
        manifest = EmberManifest.model_validate(read_manifest(root / MANIFEST))
    except ValidationError as exc:
        raise PackageError(f"{root / MANIFEST} is invalid:\n{_describe(exc)}") from exc
    return PackageSpec(
        name=manifest.name,
        format="ember",
        root=str(root),
        predictor=manifest.predictor,
        python_version=manifest.python_version,
        requirements=read_requirements(root, manifest.requirements),
        system_packages=manifest.system_packages,
        environment=manifest.environment,
        resources=manifest.resources,
        max_concurrency=manifest.concurrency,
        timeout=manifest.timeout,
        setup_in_host=manifest.setup_in_host,
        scaling=manifest.scaling,
    )


def _describe(exc: ValidationError) -> str:
    return "\n".join(
        f"  {'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


def predictor_from_target(
    spec: PackageSpec,
    target: Any,
    method: str = "predict",
    setup_kwargs: dict[str, Any] | None = None,
    reject_unknown_inputs: bool = False,
) -> Predictor:
    """Build a Predictor from a class (instantiated here) or a plain function."""
    if inspect.isclass(target):
        instance = target()
        predict = getattr(instance, method, None)
        if predict is None:
            raise PredictorError(f"{target.__name__} has no {method}() method")
        setup = getattr(instance, "setup", None)
        healthcheck = getattr(instance, "healthcheck", None)
    elif callable(target):
        predict, setup, healthcheck = target, None, None
    else:
        raise PredictorError(f"{spec.predictor} is neither a class nor a function")
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
    )


def load(spec: PackageSpec) -> Predictor:
    return predictor_from_target(spec, load_attribute(spec), reject_unknown_inputs=True)
