"""What the platform knows about a package without importing its code.

Each format (Ember, Cog, Truss) is read from its YAML into one `PackageSpec`. The control
plane builds environments, reserves resources and starts replicas from this alone; only the
worker, inside the package's environment, imports the predictor itself.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ember.packages import safe_yaml

PackageFormat = Literal["ember", "cog", "truss"]

# What a package may claim. A manifest is a few KiB. The whole spec travels to each replica
# as one environment variable, which Linux caps at 128 KiB (MAX_ARG_STRLEN): past that a
# replica cannot even start. One replica is at most one large machine; a prediction takes at
# most a day, as a deployment's request_timeout; concurrency as its target_concurrency.
MAX_MANIFEST_BYTES = 64 * 1024
MAX_SPEC_BYTES = 120 * 1024
MAX_GPUS = 16
MAX_CPUS = 512
MAX_MEMORY = 4 * 2**40
MAX_TIMEOUT = 24 * 3600
MAX_CONCURRENCY = 10_000

Concurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY, strict=True)]
Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT, allow_inf_nan=False)]


class PackageError(Exception):
    """A package that cannot be read or loaded; the message says what to fix."""


def package_file(root: str | Path, relative: str, what: str) -> Path:
    """The file `relative` names inside the package folder `root`; PackageError if it is
    missing or lies outside the folder (`../`, an absolute path, a link out): an uploaded
    package must not make Ember read or run another file of the machine."""
    folder = Path(root).resolve()
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder):
        raise PackageError(
            f"{what} {relative!r} is outside the package folder: name a file inside it"
        )
    if not path.is_file():
        raise PackageError(f"{what} {relative!r} not found in {root}")
    return path


def read_small_text(path: Path, limit: int = MAX_MANIFEST_BYTES) -> str:
    """A manifest's (or requirements file's) text; PackageError past `limit` bytes, read no
    further (the package may hold 20 GiB)."""
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise PackageError(
            f"{path} is larger than {limit // 1024} KiB: it holds settings, not data"
        )
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise PackageError(f"{path} is not UTF-8 text: {exc}") from exc


def read_manifest(path: Path) -> dict[str, Any]:
    """A package's YAML file as a mapping, read within bounds (`safe_yaml`), or a
    PackageError saying what is wrong with it."""
    try:
        content = safe_yaml.load(read_small_text(path)) or {}
    except yaml.YAMLError as exc:
        raise PackageError(f"{path} is not valid YAML: {exc}") from exc
    except ValueError as exc:  # a bound (safe_yaml), or an integer of 5,000 digits
        raise PackageError(f"{path} cannot be read: {exc}") from exc
    if not isinstance(content, dict):
        raise PackageError(f"{path} must be a mapping of settings")
    return content


def error_lines(exc: ValidationError) -> list[str]:
    """Each problem of a pydantic error as `field.path: what is wrong`."""
    lines = []
    for error in exc.errors():
        where = ".".join(map(str, error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines


def describe_errors(exc: ValidationError) -> str:
    """A pydantic error as indented lines, one per problem."""
    return "\n".join(f"  {line}" for line in error_lines(exc))


class GpuSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        description="GPU model, e.g. H100, A100-80GB, L4",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=64,
    )
    count: int = Field(default=1, ge=1, le=MAX_GPUS, description="GPUs for one replica")


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_memory(value: str | int) -> int:
    """'2Gi', '512Mi', '4GB' or a byte count → bytes."""
    if isinstance(value, int):
        return value
    match = _MEMORY.match(value)
    if not match:
        raise ValueError(f"memory {value!r} is not a size such as '2Gi' or '512Mi'")
    number, unit = match.groups()
    size = float(number) * _MEMORY_UNITS[unit.lower() if unit else None]
    if not math.isfinite(size):  # 400 digits of nines
        raise ValueError(f"memory {value!r} is not a size such as '2Gi' or '512Mi'")
    return int(size)


def parse_cpu(value: str | float | int) -> float:
    """'500m', '2' or 1.5 → cores."""
    if isinstance(value, str) and value.endswith("m"):
        return int(value[:-1]) / 1000
    return float(value)


class Resources(BaseModel):
    """What one replica needs: accelerators, CPU cores and memory, each within what one
    machine has (a claim past it can never be placed, and used to be taken at its word)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gpu: GpuSpec | None = None
    cpu: float = 1.0
    memory: int = 2 * 2**30

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu_shorthand(cls, value: Any) -> Any:
        # "H100" or "H100:2" as in Truss's accelerator field.
        if isinstance(value, str):
            gpu_type, _, count = value.partition(":")
            if count and not count.isdigit():
                raise ValueError(f"gpu {value!r} must look like 'H100' or 'H100:2'")
            return {"type": gpu_type, "count": int(count or 1)}
        return value

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> float:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"cpu {value!r} must be a number of cores such as 2 or '500m'")
        try:
            cores = parse_cpu(value)
        except OverflowError:
            cores = math.inf
        if not (math.isfinite(cores) and 0 < cores <= MAX_CPUS):
            raise ValueError(f"cpu {value!r} must be more than 0 and at most {MAX_CPUS} cores")
        return cores

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ValueError(f"memory {value!r} must be a size such as '2Gi' or '512Mi'")
        size = parse_memory(value)
        if not 0 < size <= MAX_MEMORY:
            raise ValueError(
                f"memory {value!r} must be more than 0 and at most {MAX_MEMORY // 2**40}Ti"
            )
        return size


class EngineSpec(BaseModel):
    """A serving engine Ember ships (``ember.engines.<name>``) in place of user code."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="llama_cpp, vllm or sentence_transformers")
    model: str | None = Field(
        default=None,
        description="model file or folder: relative to the package, absolute, or "
        "'pkg:<module>/<path>' inside an installed Python package",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the engine's settings")


# What network a replica's sandbox has (`ember.runtime.sandbox`).
Network = Literal["egress", "none"]


class PackageSpec(BaseModel):
    """One model package, whatever format it was written in."""

    model_config = ConfigDict(allow_inf_nan=False)

    name: str
    format: PackageFormat
    root: str = Field(description="absolute path of the package folder")
    predictor: str = Field(description="'file.py:Name' relative to root")
    python_version: str | None = None
    requirements: list[str] = Field(default_factory=list)
    install_no_deps: list[str] = Field(
        default_factory=list,
        description="requirements installed without their dependencies (weights-only packages)",
    )
    system_packages: list[str] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    max_concurrency: Concurrency = 1
    timeout: Timeout | None = Field(default=None, description="seconds per prediction")
    setup_in_host: bool = Field(
        default=True,
        description="run setup() once in the warm host and fork replicas after it (CPU "
        "packages); turn off when setup() opens connections or files replicas must not share",
    )
    scaling: dict[str, Any] = Field(default_factory=dict)
    network: Network = Field(
        default="egress",
        description="egress: outgoing connections under the server's egress rules (never the "
        "host's loopback or private addresses); none: no network at all",
    )
    engine: EngineSpec | None = None
    aliases: list[str] = Field(
        default_factory=list, description="other names the OpenAI API's `model` field accepts"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="format-specific settings the loader needs (e.g. Truss's whole config)",
    )

    def predictor_parts(self) -> tuple[str, str]:
        """('file.py', 'Name') from the predictor reference."""
        module, sep, attribute = self.predictor.rpartition(":")
        if not sep or not module or not attribute:
            raise PackageError(
                f"predictor {self.predictor!r} must look like 'predict.py:Predictor'"
            )
        return module, attribute
