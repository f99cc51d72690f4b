"""Release plans: the target color and the steps that move traffic to it.

A plan comes from a YAML file, the API, or CLI flags
(``--steps 5,25,50,100 --interval 30s``) and is validated into the same
frozen model. Steps:

* ``weight: N`` — set the target's share to N%. The share is taken from (or
  given back to) the colors not being released, in proportion to their
  current weights — or only from ``source`` when a source color is named.
* ``pause: 30s`` — wait, analysing the target's counters at every tick; a
  failing analysis rolls the release back; too little data extends the wait.
* ``pause: manual`` — wait until ``promote``.
* ``analysis: {...}`` — the thresholds the following pauses use.

Blue/green is the one-step plan ``[weight: 100]``.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Final, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue

from prism.core.model import DurationMs, Name, _Frozen, json_pattern, parse_duration_ms

__all__ = [
    "DEFAULT_WINDOW_MS",
    "MAX_WINDOW_TICKS",
    "Analysis",
    "AnalysisStep",
    "Judge",
    "PauseStep",
    "ReleasePlan",
    "Step",
    "Webhook",
    "WeightStep",
]

#: The most ticks one analysis window may span (the record keeps one sample per tick).
MAX_WINDOW_TICKS: Final = 100
#: The sliding window judged when a plan names none.
DEFAULT_WINDOW_MS: Final = 10_000

_URL = re.compile(
    r"https?://[A-Za-z0-9.-]{1,253}(:\d{1,5})?(/[A-Za-z0-9._~/%?&=+-]{0,500})?", re.ASCII
)


class Judge(_Frozen):
    """The statistical judge (:mod:`prism.release.judge`): a metric fails when the target's
    ticks are worse than stable's with ``p < alpha`` (one-sided Mann-Whitney U) *and* by
    more than its effect threshold; fewer than ``min_samples`` ticks a side: not judged."""

    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    min_samples: int = Field(default=8, ge=3, le=100, strict=True)
    max_5xx_increase: float = Field(default=0.01, ge=0, le=1)
    max_response_increase: float = Field(default=0.2, ge=0, le=100)


class Analysis(_Frozen):
    """Thresholds judged over a window of HAProxy counters of the target color's backend.

    The counters are read every ``tick_ms`` and judged over a sliding window of
    the last ``window_ms`` (or, when that holds fewer than ``min_requests``
    target requests, over the whole step so far). Fewer than ``min_requests``
    requests means *wait*, never pass. Ratios "vs stable" compare with the
    color the release moves traffic from, over the same window; ``*_floor``
    keeps tiny baselines from making every blip a failure.

    With the request log (``prism serve`` receives one line per request from
    HAProxy), the counts judged are the log's exact ones, and the ``max_p*``
    ceilings judge response-time quantiles over the same window. A quantile
    rule waits until the window's log holds ``min_requests`` lines: without log
    data it never passes.

    Each tick's reading is pass, fail, inconclusive (still too little data
    after ``max_wait_ms``) or error (no reading at all). Per step, the release
    rolls back at the ``failure_limit + 1``-th failed reading, and *holds* (and
    notifies) at the ``inconclusive_limit + 1``-th inconclusive reading or the
    ``consecutive_error_limit + 1``-th error in a row.
    """

    min_requests: int = Field(default=20, ge=1, le=10_000_000, strict=True)
    max_5xx_ratio: float = Field(default=0.05, ge=0, le=1)
    max_5xx_ratio_vs_stable: float | None = Field(default=2.0, ge=1, le=1000)
    ratio_floor: float = Field(default=0.01, ge=0, le=1)
    max_mean_response_ms: int | None = Field(default=2000, ge=1, le=3_600_000)
    max_response_vs_stable: float | None = Field(default=3.0, ge=1, le=1000)
    response_floor_ms: int = Field(default=50, ge=0, le=60_000)
    #: response-time quantiles from HAProxy's request log (absolute ceilings, ms)
    max_p50_response_ms: int | None = Field(default=None, ge=1, le=3_600_000, strict=True)
    max_p95_response_ms: int | None = Field(default=None, ge=1, le=3_600_000, strict=True)
    max_p99_response_ms: int | None = Field(default=None, ge=1, le=3_600_000, strict=True)
    #: the target's p99 may be at most this many times stable's (at least response_floor_ms)
    max_p99_vs_stable: float | None = Field(default=None, ge=1, le=1000)
    tick_ms: DurationMs = Field(default=1000, ge=100, le=600_000)
    #: None: 10 s, stretched to one tick and shrunk to MAX_WINDOW_TICKS ticks as needed
    window_ms: DurationMs | None = Field(default=None, ge=100, le=600_000)
    max_wait_ms: DurationMs = Field(default=60_000, ge=100, le=86_400_000)
    failure_limit: int = Field(default=0, ge=0, le=1000, strict=True)
    inconclusive_limit: int = Field(default=0, ge=0, le=1000, strict=True)
    consecutive_error_limit: int = Field(default=4, ge=0, le=1000, strict=True)
    judge: Judge | None = None

    @model_validator(mode="after")
    def _window_fits(self) -> Analysis:
        # the record keeps one sample per tick of the window: bound it
        if self.window_ms is None:
            return self
        if self.window_ms < self.tick_ms:
            raise ValueError("window_ms must be at least tick_ms")
        if self.window_ms > self.tick_ms * MAX_WINDOW_TICKS:
            raise ValueError(
                f"window_ms may span at most {MAX_WINDOW_TICKS} ticks "
                f"({self.tick_ms * MAX_WINDOW_TICKS} ms at tick_ms {self.tick_ms})"
            )
        return self

    @property
    def window(self) -> int:
        """The sliding window judged, in ms: ``window_ms``, or the default 10 s fitted to
        the tick (records saved before ``window_ms`` existed load with any tick)."""
        if self.window_ms is not None:
            return self.window_ms
        return min(max(DEFAULT_WINDOW_MS, self.tick_ms), self.tick_ms * MAX_WINDOW_TICKS)


class Webhook(_Frozen):
    """Where release events are POSTed as JSON."""

    url: str = Field(json_schema_extra={"pattern": json_pattern(_URL)})
    timeout_ms: DurationMs = Field(default=3000, ge=10, le=60_000)
    retries: int = Field(default=3, ge=0, le=10, strict=True)
    events: tuple[str, ...] | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if _URL.fullmatch(value) is None:
            raise ValueError("a webhook URL is http(s)://host[:port][/path] in plain ASCII")
        return value


class WeightStep(_Frozen):
    weight: int = Field(ge=0, le=100, strict=True)
    source: Name | None = None


def _pause_schema(schema: JsonSchemaValue) -> None:
    """A pause is a duration (ms or ``30s``) or ``manual``."""
    schema.pop("anyOf", None)
    schema["anyOf"] = [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": json_pattern(r"\d{1,9}(ms|s|m|h)?")},
        {"const": "manual"},
    ]


class PauseStep(_Frozen):
    pause: int | Literal["manual"] = Field(json_schema_extra=_pause_schema)

    @field_validator("pause", mode="before")
    @classmethod
    def _duration(cls, value: object) -> int | str:
        if value == "manual":
            return "manual"
        return parse_duration_ms(value)


class AnalysisStep(_Frozen):
    analysis: Analysis


Step = Annotated[WeightStep | PauseStep | AnalysisStep, Field(union_mode="left_to_right")]


class ReleasePlan(_Frozen):
    """A target color and the steps that move traffic to it."""

    to: Name
    steps: tuple[Step, ...] = Field(
        default=(WeightStep(weight=100),),
        # at least one weight step
        json_schema_extra={"maxItems": 100, "contains": {"required": ["weight"]}},
    )
    analysis: Analysis = Analysis()
    smoke: bool = True
    drain_timeout_ms: DurationMs | None = None
    #: a rollback capped for lost servers keeps returning traffic as they come back, this long
    rollback_ramp_ms: DurationMs | None = Field(default=None, ge=1000, le=3_600_000)
    webhooks: tuple[Webhook, ...] = Field(default=(), max_length=16)
    confirm: Webhook | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ReleasePlan:
        weights = [s.weight for s in self.steps if isinstance(s, WeightStep)]
        if not weights:
            raise ValueError("a plan needs at least one weight step")
        if len(self.steps) > 100:
            raise ValueError("a plan has at most 100 steps")
        if any(b < a for a, b in itertools.pairwise(weights)):
            raise ValueError("weight steps must not go down (abort rolls back)")
        return self

    @property
    def final_weight(self) -> int:
        return [s.weight for s in self.steps if isinstance(s, WeightStep)][-1]
