"""ember.yaml's open-ended sections, `scaling` and `engine_options`, checked when the package
is read rather than taken as any value.

Both used to be `dict[str, Any]`: a misspelt setting passed silently, and a hostile package
put whatever it liked there (an alias bomb ended as a 500). Each is now checked against the
settings something reads, with the ranges that reader accepts, and an unknown name is refused
with the names that are known. The scaling ranges are defined here and read by
`ember.control.scaling` too; the engine tables mirror the engines, which import torch or
llama.cpp; tests/unit/test_package_bounds.py fails when a name drifts from its reader.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ember.packages.spec import error_lines


class _Section(BaseModel):
    """Known names only, exact types (`true` is not 1, "5" not a number), finite numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, value: Any) -> Any:
        # pydantic's own "Extra inputs are not permitted" does not say what is permitted.
        if isinstance(value, dict):
            unknown = sorted(str(name) for name in value if name not in cls.model_fields)
            if unknown:
                raise ValueError(
                    f"unknown {', '.join(map(repr, unknown))}: known: {', '.join(cls.model_fields)}"
                )
        return value


# The ranges of a deployment's scaling settings, kept here, below both of their readers:
# `ember.control.scaling.ScalingSettings` and a package's `scaling:` defaults (ScalingDefaults).
SCALING_BOUNDS: dict[str, dict[str, float]] = {
    "min_instances": {"ge": 0, "le": 100},
    "max_instances": {"ge": 1, "le": 100},
    "target_concurrency": {"ge": 1, "le": 10_000},
    "scale_up_delay": {"ge": 0, "le": 3600},
    "scale_down_delay": {"ge": 0, "le": 3600},
    "idle_timeout": {"ge": 0, "le": 24 * 3600},
    "queue_limit": {"ge": 0, "le": 1_000_000},
    "request_timeout": {"gt": 0, "le": 24 * 3600},
    "prediction_retries": {"ge": 0, "le": 5},
}
ColdStartTier = Literal["auto", "warm-host", "disk", "cold"]


class ScalingDefaults(_Section):
    """`scaling:` in ember.yaml: defaults for the package's deployments, by the names and
    within the ranges of `ember.control.scaling.ScalingSettings`. Left out, a setting takes
    the deployment's default."""

    min_instances: int | None = Field(default=None, **SCALING_BOUNDS["min_instances"])
    max_instances: int | None = Field(default=None, **SCALING_BOUNDS["max_instances"])
    target_concurrency: int | None = Field(default=None, **SCALING_BOUNDS["target_concurrency"])
    scale_up_delay: float | None = Field(default=None, **SCALING_BOUNDS["scale_up_delay"])
    scale_down_delay: float | None = Field(default=None, **SCALING_BOUNDS["scale_down_delay"])
    idle_timeout: float | None = Field(default=None, **SCALING_BOUNDS["idle_timeout"])
    queue_limit: int | None = Field(default=None, **SCALING_BOUNDS["queue_limit"])
    # Windows such as 'mon-fri 08:00-19:00=1', read where a deployment applies them.
    keep_warm: list[str] | None = Field(default=None, max_length=50)
    request_timeout: float | None = Field(default=None, **SCALING_BOUNDS["request_timeout"])
    cold_start_tier: ColdStartTier | None = None
    prediction_retries: int | None = Field(default=None, **SCALING_BOUNDS["prediction_retries"])

    @field_validator("keep_warm")
    @classmethod
    def _short_windows(cls, value: list[str] | None) -> list[str] | None:
        if value and any(len(window) > 100 for window in value):
            raise ValueError("a keep_warm window is a short text such as 'mon-fri 08:00-19:00=1'")
        return value


class LlamaCppSampling(_Section):
    """`engine_options.sampling` of llama_cpp (`ember.engines.llama_cpp_sampling`), within
    the ranges OpenAI documents for the same request fields."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=-1, le=100_000)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)


class LlamaCppOptions(_Section):
    """llama_cpp's engine_options (`ember.engines.llama_cpp_setup.OPTIONS`)."""

    n_ctx: int | None = Field(default=None, ge=1, le=2**20)
    n_threads: int | None = Field(default=None, ge=1, le=1024)
    n_batch: int | None = Field(default=None, ge=1, le=2**20)
    parallel: int | None = Field(default=None, ge=1, le=256)
    cached_prompts: int | None = Field(default=None, ge=0, le=255)
    lora_adapters: dict[str, str] | None = Field(default=None, max_length=256)
    chat_format: str | None = Field(default=None, max_length=100)
    n_gpu_layers: int | None = Field(default=None, ge=-1, le=100_000)
    use_mmap: bool | None = None
    sampling: LlamaCppSampling | None = None


class SentenceTransformersOptions(_Section):
    """sentence_transformers' engine_options (`ember.engines.sentence_transformers.OPTIONS`)."""

    device: str | None = Field(default=None, max_length=32)
    max_batch_size: int | None = Field(default=None, ge=1, le=65_536)
    batch_wait_ms: float | None = Field(default=None, ge=0, le=10_000)
    normalize: bool | None = None
    threads: int | None = Field(default=None, ge=1, le=1024)
    matryoshka_dimensions: list[int] | None = Field(default=None, max_length=64)

    @field_validator("matryoshka_dimensions")
    @classmethod
    def _dimensions(cls, value: list[int] | None) -> list[int] | None:
        if value and not all(1 <= d <= 65_536 for d in value):
            raise ValueError("each of matryoshka_dimensions must be between 1 and 65536")
        return value


class VllmOptions(BaseModel):
    """vllm's engine_options are vLLM's own `AsyncEngineArgs` fields, which vary with its
    version and are checked by name when the replica starts vLLM; here, only that they look
    like such names (their size and numbers are bounded with the whole manifest's)."""

    model_config = ConfigDict(extra="allow", strict=True)

    chat_template: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _argument_names(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if not (isinstance(name, str) and name.isidentifier() and name.islower()):
                raise ValueError(
                    f"{name!r} is not a vLLM engine argument: use AsyncEngineArgs' field names "
                    "(max_model_len, gpu_memory_utilization, dtype, tensor_parallel_size...)"
                )
        return value


ENGINE_OPTIONS: dict[str, type[BaseModel]] = {
    "llama_cpp": LlamaCppOptions,
    "sentence_transformers": SentenceTransformersOptions,
    "vllm": VllmOptions,
}


def check_engine_options(engine: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against `engine`'s, as written (only the names given); a ValueError
    naming each problem on one line, and for an unknown name the names that are known."""
    try:
        return ENGINE_OPTIONS[engine].model_validate(options).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ValueError(f"for the {engine} engine: {'; '.join(error_lines(exc))}") from None
