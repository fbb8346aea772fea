"""Request traces for the autoscaling simulator (bench/simulate.py): load them, or make them.

A trace is, per model, the arrival times (seconds from the trace's start, sorted) and the
service time of each request (seconds a replica with concurrency 1 is busy with it). Plain
lists of floats: the simulator's event loop reads them by index, nothing heavier.

Sources:

- The Azure LLM inference traces of November 2023 (``shared/traces/azure_llm_2023_*.csv``,
  columns ``TIMESTAMP, ContextTokens, GeneratedTokens``; Patel et al., "Splitwise", ISCA 2024,
  CC-BY 4.0). One hour each and dense (2.6 and 5.5 req/s), so they are replayed *split and
  stretched* (``azure()``): every request is given to one of ``models`` models drawn from a
  Zipf(``ZIPF_EXPONENT``) popularity (a seeded draw per request, so one request's model does not
  depend on the others), and arrival times are multiplied by ``time_scale`` (12: the hour
  becomes 12 hours). The result keeps the trace's own burst structure and token sizes, but most
  models now have idle gaps of minutes to hours, where scale-to-zero matters. ``models=1,
  time_scale=1`` replays the raw trace as one dense deployment.
- Any CSV or JSONL file of requests (``load()``): an arrival time (seconds, or an ISO date),
  optionally a model name, and a service time in seconds or token counts.
- Synthetic sporadic multi-model traffic (``sporadic()``) and bursty traffic (``bursty()``).

Service time from tokens (``service_seconds``): ``ContextTokens / PREFILL_TOKENS_PER_S +
GeneratedTokens / DECODE_TOKENS_PER_S`` — a 7-8B model on one modern GPU at batch size 1:
prefill at about 5,000 tokens/s, decoding at about 50 tokens/s. Medians: code 1469/13 tokens ->
0.55 s, conversation 1020/129 tokens -> 2.8 s.
"""

from __future__ import annotations

import bisect
import csv
import datetime
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

PREFILL_TOKENS_PER_S = 5000.0
DECODE_TOKENS_PER_S = 50.0
ZIPF_EXPONENT = 1.5
"""Popularity of model k (1-based) is proportional to 1 / k**1.5: with 20 models the top one
gets 46% of the requests and the last one 0.5% (code trace x12: about one request per 16 min)."""

AZURE_FILES = {
    "azure-code": "azure_llm_2023_code.csv",
    "azure-conv": "azure_llm_2023_conv.csv",
}


@dataclass
class Trace:
    name: str
    description: str
    duration: float  # seconds observed: billing ends here (or when the last request finishes)
    models: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(len(arrivals) for arrivals, _ in self.models.values())

    @property
    def busy_seconds(self) -> float:
        return sum(sum(services) for _, services in self.models.values())


def service_seconds(context_tokens: float, generated_tokens: float) -> float:
    return context_tokens / PREFILL_TOKENS_PER_S + generated_tokens / DECODE_TOKENS_PER_S


def traces_dir() -> Path:
    """``$EMBER_TRACES_DIR``, else ``shared/traces`` in the checkout or beside it."""
    if os.environ.get("EMBER_TRACES_DIR"):
        return Path(os.environ["EMBER_TRACES_DIR"])
    root = Path(__file__).resolve().parents[1]
    for candidate in (root / "shared" / "traces", root.parent / "shared" / "traces"):
        if candidate.is_dir():
            return candidate
    return root.parent / "shared" / "traces"


def _build(
    name: str, description: str, rows: list[tuple[float, str, float]], duration: float | None
) -> Trace:
    """Rows (arrival, model, service) in any order -> a Trace with per-model sorted lists."""
    rows.sort(key=lambda row: (row[0], row[1]))
    models: dict[str, tuple[list[float], list[float]]] = {}
    for arrival, model, service in rows:
        arrivals, services = models.setdefault(model, ([], []))
        arrivals.append(arrival)
        services.append(service)
    end = max((row[0] + row[2] for row in rows), default=0.0)
    return Trace(name, description, max(duration or 0.0, end), dict(sorted(models.items())))


def _parse_time(text: str) -> float:
    """Seconds as a number, or an ISO date and time (any number of fractional digits)."""
    try:
        return float(text)
    except ValueError:
        pass
    text = text.strip().replace("T", " ")
    if "." in text:  # Python's parser takes at most 6 fractional digits; Azure writes 7
        head, _, fraction = text.partition(".")
        digits = "".join(ch for ch in fraction if ch.isdigit())
        rest = fraction[len(digits) :]
        text = f"{head}.{(digits + '000000')[:6]}{rest}"
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _zipf_cdf(models: int, exponent: float) -> list[float]:
    weights = [1.0 / (k**exponent) for k in range(1, models + 1)]
    total = sum(weights)
    cdf, running = [], 0.0
    for weight in weights:
        running += weight / total
        cdf.append(running)
    cdf[-1] = 1.0
    return cdf


def split_models(
    times: list[float],
    services: list[float],
    *,
    prefix: str,
    models: int,
    time_scale: float,
    seed: int,
) -> list[tuple[float, str, float]]:
    """Give each request to one of `models` Zipf-popular models; stretch time by `time_scale`."""
    rng = random.Random(f"split:{seed}")
    cdf = _zipf_cdf(models, ZIPF_EXPONENT)
    width = len(str(models - 1))
    names = [f"{prefix}-{k:0{width}d}" for k in range(models)]
    rows = []
    for arrival, service in zip(times, services, strict=True):
        k = bisect.bisect_left(cdf, rng.random()) if models > 1 else 0
        rows.append((arrival * time_scale, names[min(k, models - 1)], service))
    return rows


def azure(kind: str, *, models: int = 20, time_scale: float = 12.0, seed: int = 0) -> Trace:
    """One of the Azure LLM 2023 traces, split across `models` and stretched by `time_scale`."""
    path = traces_dir() / AZURE_FILES[kind]
    times, services = _read_tokens_csv(path)
    rows = split_models(
        times, services, prefix=kind.removeprefix("azure-"), models=models,
        time_scale=time_scale, seed=seed,
    )  # fmt: skip
    duration = (times[-1] if times else 0.0) * time_scale
    description = (
        f"{path.name} ({times[-1] / 60 if times else 0:.0f} min), "
        f"split across {models} Zipf({ZIPF_EXPONENT}) models, time x{time_scale:g} "
        f"({duration / 3600:.1f} h); service = ctx/{PREFILL_TOKENS_PER_S:.0f} + "
        f"gen/{DECODE_TOKENS_PER_S:.0f} tok/s"
    )
    return _build(kind, description, rows, duration)


def _read_tokens_csv(path: Path) -> tuple[list[float], list[float]]:
    """Azure-style CSV (TIMESTAMP, ContextTokens, GeneratedTokens) -> (seconds, service)."""
    times: list[float] = []
    services: list[float] = []
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader)]
        t_col = header.index("timestamp")
        c_col, g_col = header.index("contexttokens"), header.index("generatedtokens")
        for row in reader:
            if not row:
                continue
            times.append(_parse_time(row[t_col]))
            services.append(service_seconds(float(row[c_col]), float(row[g_col])))
    if times:
        first = min(times)
        times = [t - first for t in times]
    order = sorted(range(len(times)), key=times.__getitem__)
    return [times[i] for i in order], [services[i] for i in order]


_TIME = ("time", "arrival", "arrival_time", "timestamp", "t")
_MODEL = ("model", "deployment", "function", "app", "name")
_SERVICE = ("service", "service_time", "service_seconds", "duration", "seconds", "work")
_CONTEXT = ("contexttokens", "context_tokens", "prompt_tokens", "input_tokens")
_GENERATED = ("generatedtokens", "generated_tokens", "completion_tokens", "output_tokens")


def _pick(keys: dict[str, str], names: tuple[str, ...]) -> str | None:
    return next((keys[name] for name in names if name in keys), None)


def load(path: str | Path, *, models: int = 20, time_scale: float = 12.0, seed: int = 0) -> Trace:
    """A CSV (with a header) or JSONL file of requests.

    Columns/keys, case-insensitive: the arrival time (``time``/``arrival``/``timestamp``: seconds
    or an ISO date), optionally the model (``model``/``deployment``/``function``/``app``), and
    the work: ``service`` seconds (also ``service_time``/``duration``/``seconds``) or token counts
    (``ContextTokens``/``GeneratedTokens``, ``prompt_tokens``/``completion_tokens``). Times are
    shifted so the first request arrives at 0. A file without a model column (the Azure traces)
    is split across `models` Zipf models and stretched by `time_scale`, like ``azure()``; a file
    with one is replayed as is.
    """
    path = Path(path)
    if path.suffix in (".jsonl", ".ndjson"):
        with open(path) as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    else:
        with open(path, newline="") as handle:
            records = list(csv.DictReader(handle))
    if not records:
        raise ValueError(f"{path}: no requests")
    keys = {key.strip().lower(): key for key in records[0]}
    t_key, m_key = _pick(keys, _TIME), _pick(keys, _MODEL)
    s_key, c_key, g_key = _pick(keys, _SERVICE), _pick(keys, _CONTEXT), _pick(keys, _GENERATED)
    if t_key is None:
        raise ValueError(f"{path}: no arrival time column (one of {', '.join(_TIME)})")
    if s_key is None and (c_key is None or g_key is None):
        raise ValueError(f"{path}: no service time ({', '.join(_SERVICE)}) nor token columns")

    def service_of(record: dict) -> float:
        if s_key is not None:
            return float(record[s_key])
        return service_seconds(float(record[c_key]), float(record[g_key]))  # type: ignore[index]

    times = [_parse_time(str(record[t_key])) for record in records]
    first = min(times)
    times = [t - first for t in times]
    services = [service_of(record) for record in records]
    if m_key is None:
        order = sorted(range(len(times)), key=times.__getitem__)
        rows = split_models(
            [times[i] for i in order], [services[i] for i in order], prefix=path.stem,
            models=models, time_scale=time_scale, seed=seed,
        )  # fmt: skip
        how = f"split across {models} Zipf models, time x{time_scale:g}"
        duration = max(times) * time_scale
    else:
        rows = [(t, str(r[m_key]), s) for t, r, s in zip(times, records, services, strict=True)]
        how = f"{len({row[1] for row in rows})} models as recorded"
        duration = max(times)
    description = f"{path.name}, {how}"
    return _build(path.stem, description, rows, duration)


def _lognormal_service(rng: random.Random, median: float, sigma: float) -> float:
    return min(max(median * math.exp(rng.gauss(0.0, sigma)), 0.05), 120.0)


def sporadic(
    *,
    models: int = 20,
    hours: float = 48.0,
    seed: int = 0,
    min_gap: float = 60.0,
    max_gap: float = 6 * 3600.0,
    periodic_every: int = 4,
    service_median: float = 2.0,
) -> Trace:
    """Sporadic multi-model traffic: model i's mean gap is log-spaced from `min_gap` (1/min) to
    `max_gap` (1/6 h). Every `periodic_every`-th model (i % 4 == 3) is a periodic job (cron-like:
    a fixed period with a random phase and +-2% jitter); the others are Poisson. Service times
    are lognormal (median 2 s, sigma 0.6, clipped to 0.05-120 s). Seeded: the same seed gives
    the same trace."""
    rng = random.Random(f"sporadic:{seed}")
    duration = hours * 3600.0
    rows: list[tuple[float, str, float]] = []
    width = len(str(models - 1))
    for i in range(models):
        frac = i / (models - 1) if models > 1 else 0.0
        gap = min_gap * (max_gap / min_gap) ** frac
        periodic = periodic_every > 0 and i % periodic_every == periodic_every - 1
        name = f"{'cron' if periodic else 'poisson'}-{i:0{width}d}"
        t = rng.uniform(0.0, gap)
        while t < duration:
            rows.append((t, name, _lognormal_service(rng, service_median, 0.6)))
            if periodic:
                t += gap * (1.0 + rng.uniform(-0.02, 0.02))
            else:
                t += rng.expovariate(1.0 / gap)
    description = (
        f"synthetic, {models} models over {hours:g} h: mean gaps {min_gap / 60:g} min to "
        f"{max_gap / 3600:g} h (log-spaced), every {periodic_every}th periodic (+-2%), "
        f"others Poisson; service lognormal median {service_median:g} s"
    )
    return _build("sporadic", description, rows, duration)


def bursty(
    *,
    models: int = 10,
    hours: float = 12.0,
    seed: int = 0,
    min_gap: float = 600.0,
    max_gap: float = 2 * 3600.0,
    burst_mean: int = 15,
    burst_rate: float = 3.0,
    service_median: float = 1.5,
) -> Trace:
    """Bursty traffic (ON/OFF): model i's bursts arrive as a Poisson process with a mean gap
    log-spaced from 10 min to 2 h; a burst is 1 + geometric(mean `burst_mean`) requests arriving
    at `burst_rate` req/s (Poisson); service lognormal median 1.5 s. Tests scale-out from zero."""
    rng = random.Random(f"bursty:{seed}")
    duration = hours * 3600.0
    rows: list[tuple[float, str, float]] = []
    width = len(str(models - 1))
    for i in range(models):
        frac = i / (models - 1) if models > 1 else 0.0
        gap = min_gap * (max_gap / min_gap) ** frac
        name = f"burst-{i:0{width}d}"
        t = rng.expovariate(1.0 / gap)
        while t < duration:
            size = 1
            while rng.random() > 1.0 / burst_mean:
                size += 1
            s = t
            for _ in range(size):
                rows.append((s, name, _lognormal_service(rng, service_median, 0.5)))
                s += rng.expovariate(burst_rate)
            t = s + rng.expovariate(1.0 / gap)
    description = (
        f"synthetic, {models} models over {hours:g} h: bursts every {min_gap / 60:g} min to "
        f"{max_gap / 3600:g} h (Poisson), ~{burst_mean} requests at {burst_rate:g} req/s each; "
        f"service lognormal median {service_median:g} s"
    )
    return _build("bursty", description, rows, duration)


def synthetic(
    name: str, requests: list[tuple[float, str, float]], duration: float | None = None
) -> Trace:
    """A trace from explicit (arrival, model, service) rows: for tests and experiments."""
    return _build(name, f"{len(requests)} given requests", list(requests), duration)
