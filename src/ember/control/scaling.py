"""A deployment's scaling settings, with defaults chosen against the peers'
(shared/docs/autoscaling.md):

- min_instances 0 (Knative 0, Baseten 0, Ray 1): serverless, no bill while idle.
- max_instances 1 (Baseten 1, Ray 1, Knative unlimited): a GPU bill never grows unasked.
- target_concurrency = the model's concurrency (Knative 100 x 70%, Baseten 1 x 70%, Ray 2):
  a replica's slots are what it can run at once; no idle headroom is paid for on GPUs.
- scale_up_delay 0 s (Ray 30 s, Knative 0 s when panicking): a waiting request costs most.
- scale_down_delay 60 s (Knative's 60 s window, Ray 600 s, Baseten 900 s): holds capacity
  through short lulls without paying 10-15 minutes after every burst.
- idle_timeout learned, else 300 s (Modal 60 s, Knative 30 s + 60 s): the deployment's own idle
  gaps decide (policies/keepalive.py); five minutes until there is enough history.
- queue_limit 10,000 (Knative's activator holds 10,000 per revision): bursts wait at zero;
  beyond the limit, 429 with Retry-After.
- keep_warm none (Modal and Baseten offer schedules): opt-in, e.g. "mon-fri 08:00-19:00=1".
- request_timeout = the package's `timeout` (Cog none, Truss 60 s for streaming reads),
  counted from when a replica picks the request up, never from its arrival.
- prediction_retries 1 (Cog's director retries nothing; Modal retries on request): a
  prediction whose replica died (kill -9, OOM, lost node, no heartbeat) before it produced
  any output runs again on another replica; one that produced output fails with the reason.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ember.control.errors import InvalidRequest
from ember.control.hardware import HARDWARE
from ember.packages.native_sections import SCALING_BOUNDS as BOUNDS
from ember.packages.native_sections import ColdStartTier

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALIASES = {
    "weekdays": "mon-fri",
    "weekends": "sat-sun",
    "daily": "mon-sun",
    "every day": "mon-sun",
}
_WINDOW = re.compile(
    r"^\s*(?P<days>[a-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})"
    r"\s*=\s*(?P<count>\d+)\s*$"
)


@dataclass(frozen=True)
class KeepWarmWindow:
    """Keep at least `count` replicas between `start` and `end` (UTC) on the given weekdays.

    An `end` before `start` runs past midnight into the next day.
    """

    days: frozenset[int]  # 0 = Monday
    start: datetime.time
    end: datetime.time
    count: int

    def active(self, moment: datetime.datetime) -> bool:
        moment = moment.astimezone(datetime.UTC)
        now = moment.time()
        if self.start <= self.end:
            return moment.weekday() in self.days and self.start <= now < self.end
        if now >= self.start:  # the evening part, on one of the days
            return moment.weekday() in self.days
        return (moment.weekday() - 1) % 7 in self.days and now < self.end

    def __str__(self) -> str:
        days = ",".join(DAYS[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M}={self.count}"


def _parse_days(text: str) -> frozenset[int]:
    text = _ALIASES.get(text.strip(), text.strip())
    days: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"{part!r} is not a day or range of days such as mon-fri")
        a, b = DAYS.index(first), DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def parse_keep_warm(text: str) -> KeepWarmWindow:
    """'mon-fri 08:00-19:00=1', 'weekdays 08:00-19:00=2', 'sat,sun 22:00-02:00=1' (UTC)."""
    match = _WINDOW.match(text.lower())
    if not match:
        raise ValueError(
            f"keep-warm window {text!r} must look like 'mon-fri 08:00-19:00=1' "
            "(days, UTC start-end, '=', replicas)"
        )
    try:
        start = datetime.time.fromisoformat(match["start"].zfill(5))
        end = datetime.time.fromisoformat(match["end"].zfill(5))
    except ValueError:
        raise ValueError(f"keep-warm window {text!r} has an invalid time") from None
    if start == end:
        raise ValueError(f"keep-warm window {text!r} starts and ends at the same time")
    return KeepWarmWindow(_parse_days(match["days"]), start, end, int(match["count"]))


def keep_warm_floor(windows: list[KeepWarmWindow], moment: datetime.datetime) -> int:
    """Replicas the keep-warm windows require at `moment`."""
    return max((w.count for w in windows if w.active(moment)), default=0)


class ScalingSettings(BaseModel):
    """How one deployment scales. Every field can change while it runs."""

    model_config = ConfigDict(extra="forbid")

    min_instances: int = Field(default=0, **BOUNDS["min_instances"])
    max_instances: int = Field(default=1, **BOUNDS["max_instances"])
    target_concurrency: int | None = Field(
        default=None,
        description="predictions per replica; default: its slots",
        **BOUNDS["target_concurrency"],
    )
    scale_up_delay: float = Field(default=0.0, **BOUNDS["scale_up_delay"])
    scale_down_delay: float = Field(default=60.0, **BOUNDS["scale_down_delay"])
    idle_timeout: float | None = Field(
        default=None,
        description="seconds idle before zero; default: learned",
        **BOUNDS["idle_timeout"],
    )
    queue_limit: int = Field(default=10_000, **BOUNDS["queue_limit"])
    keep_warm: list[str] = Field(default_factory=list)
    request_timeout: float | None = Field(default=None, **BOUNDS["request_timeout"])
    cold_start_tier: ColdStartTier = "auto"
    prediction_retries: int = Field(
        default=1,
        description="runs more of a prediction whose replica died before it produced output",
        **BOUNDS["prediction_retries"],
    )

    @field_validator("keep_warm")
    @classmethod
    def _valid_windows(cls, value: list[str]) -> list[str]:
        return [str(parse_keep_warm(text)) for text in value]

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSettings:
        if self.min_instances > self.max_instances:
            raise ValueError(
                f"min_instances ({self.min_instances}) cannot exceed "
                f"max_instances ({self.max_instances})"
            )
        return self

    @property
    def windows(self) -> list[KeepWarmWindow]:
        return [parse_keep_warm(text) for text in self.keep_warm]


DEFAULT_IDLE_TIMEOUT = 300.0


def validated(
    hardware: str, min_instances: int, max_instances: int, extra: dict[str, Any]
) -> ScalingSettings:
    """A release's scaling settings, validated, or InvalidRequest saying what is wrong."""
    if hardware not in HARDWARE:
        raise InvalidRequest(f"unknown hardware {hardware!r}: see GET /v1/hardware")
    try:
        return ScalingSettings(min_instances=min_instances, max_instances=max_instances, **extra)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'scaling'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise InvalidRequest(f"invalid scaling settings: {problems}") from None


def release_settings(release: Any) -> ScalingSettings:
    """The settings a stored release (`store.models.Release`) holds."""
    return ScalingSettings(
        min_instances=release.min_instances,
        max_instances=release.max_instances,
        **(release.scaling or {}),
    )


def extra_settings(settings: ScalingSettings) -> dict[str, Any]:
    """What a release stores beside its min/max columns (only values set explicitly)."""
    return settings.model_dump(exclude={"min_instances", "max_instances"}, exclude_unset=True)
