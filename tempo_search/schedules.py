"""Threshold schedules over progress and the progressive-widening rule built on them.

A schedule maps progress ``t`` in ``[0, 1]`` to a probability threshold in ``[0, 1]``. Progress is
either the fraction of generation done or, for progressive widening, ``visit_count / horizon`` of
one node. A node admits as children the candidate tokens whose prior reaches the threshold at its
current visit count, so a decaying schedule opens more children as the node is visited more.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)

#: Number of visits after which a node's schedule reaches its end value. A starting point chosen
#: by hand so that a node visited a few dozen times is fully widened, not a tuned value.
DEFAULT_HORIZON = 32

# Slack when comparing derivative signs in ``is_monotone``, so that a flat segment computed in
# floating point still counts as monotone.
_MONOTONE_TOLERANCE = 1e-12


@runtime_checkable
class Schedule(Protocol):
    """A threshold in ``[0, 1]`` as a function of progress in ``[0, 1]``."""

    horizon: int

    def __call__(self, progress: float) -> float: ...

    def at_visits(self, visit_count: float, horizon: float | None = None) -> float: ...

    def is_monotone(self) -> bool: ...

    def plot(self, ax: Axes | None = None, num_points: int = 100) -> Axes: ...


def _check_threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a float in [0, 1], got {value!r} of type {type(value).__name__}"
        )
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name}={value!r} is not a probability threshold; pass a finite value in [0, 1]"
        )
    return float(value)


def _check_horizon(horizon: float) -> float:
    if isinstance(horizon, bool) or not isinstance(horizon, numbers.Real):
        raise TypeError(f"horizon must be a positive number of visits, got {horizon!r}")
    if not math.isfinite(horizon) or horizon <= 0:
        raise ValueError(f"horizon={horizon!r} is invalid; pass a positive number of visits")
    return horizon


def _clamp_progress(progress: float) -> float:
    if math.isnan(progress):
        raise ValueError("progress=nan is invalid; pass a number (it is clamped to [0, 1])")
    return min(1.0, max(0.0, float(progress)))


def _progress_at_visits(visit_count: float, horizon: float) -> float:
    _check_horizon(horizon)
    if not math.isfinite(visit_count) or visit_count < 0:
        raise ValueError(f"visit_count={visit_count!r} is invalid; pass a count >= 0")
    return min(1.0, visit_count / horizon)


def _parse_numbers(text: str, *, expected: int, meaning: str) -> list[float]:
    if not isinstance(text, str):
        raise TypeError(f"schedule string must be a str, got {type(text).__name__}")
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != expected:
        raise ValueError(
            f"schedule string {text!r} has {len(parts)} comma-separated values; "
            f"pass {expected} ({meaning}), for example {'0.5,' * (expected - 1)}0.1"
        )
    values = []
    for part in parts:
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(
                f"schedule string {text!r} contains {part!r}, which is not a number; "
                f"pass {expected} comma-separated numbers ({meaning})"
            ) from None
    return values


def _plot_schedule(schedule: Schedule, ax: Axes | None, num_points: int) -> Axes:
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points={num_points!r} is invalid; pass an int >= 2")
    import matplotlib.pyplot as plt  # Imported here so that the library does not need matplotlib.

    if ax is None:
        _, ax = plt.subplots()
    progress = [i / (num_points - 1) for i in range(num_points)]
    ax.plot(progress, [schedule(t) for t in progress], label=repr(schedule))
    ax.set_xlabel("progress")
    ax.set_ylabel("threshold")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    return ax


@dataclass(frozen=True)
class BezierSchedule:
    """Cubic Bezier curve in threshold space over progress ``t`` in ``[0, 1]``.

    ``B(t) = (1-t)^3 p0 + 3 (1-t)^2 t p1 + 3 (1-t) t^2 p2 + t^3 p3``. The time coordinates of the
    four control points are evenly spaced (0, 1/3, 2/3, 1), so the curve's time coordinate equals
    ``t`` and the curve is a function of progress. Each value is a convex combination of the
    control points, so control points in ``[0, 1]`` keep every value in ``[0, 1]``.

    Args:
        p0, p1, p2, p3: value control points, probability thresholds in ``[0, 1]``.
            ``B(0) = p0`` and ``B(1) = p3``.
        horizon: visits at which a node reaches progress 1 in ``at_visits``
            (default ``DEFAULT_HORIZON``).

    Example:
        >>> schedule = BezierSchedule.from_string("0.3,0.2,0.05,0.01")
        >>> schedule(0.0), schedule(1.0)
        (0.3, 0.01)
    """

    p0: float
    p1: float
    p2: float
    p3: float
    horizon: int = field(default=DEFAULT_HORIZON, kw_only=True)

    def __post_init__(self) -> None:
        for name in ("p0", "p1", "p2", "p3"):
            object.__setattr__(self, name, _check_threshold(name, getattr(self, name)))
        _check_horizon(self.horizon)

    @property
    def control_points(self) -> tuple[float, float, float, float]:
        return (self.p0, self.p1, self.p2, self.p3)

    def __call__(self, progress: float) -> float:
        """Return ``B(t)`` with ``t`` = ``progress`` clamped to ``[0, 1]``."""
        t = _clamp_progress(progress)
        s = 1.0 - t
        value = s**3 * self.p0 + 3 * s**2 * t * self.p1 + 3 * s * t**2 * self.p2 + t**3 * self.p3
        # Rounding can step a hair outside the convex hull of the control points.
        points = self.control_points
        return min(max(points), max(min(points), value))

    def at_visits(self, visit_count: float, horizon: float | None = None) -> float:
        """Return the threshold at progress ``visit_count / horizon`` (``self.horizon`` if None)."""
        return self(_progress_at_visits(visit_count, self.horizon if horizon is None else horizon))

    def is_monotone(self) -> bool:
        """Return True when ``B`` is non-increasing or non-decreasing on the whole of ``[0, 1]``.

        The check is exact, not sampled: ``B'(t) / 3`` is the quadratic Bernstein polynomial with
        coefficients ``d = (p1 - p0, p2 - p1, p3 - p2)``, whose extrema on ``[0, 1]`` lie at the
        endpoints or at its vertex.
        """
        d0, d1, d2 = self.p1 - self.p0, self.p2 - self.p1, self.p3 - self.p2
        candidates = [0.0, 1.0]
        # Power form: d0 + 2 (d1 - d0) t + (d0 - 2 d1 + d2) t^2, vertex at (d0 - d1) / curvature.
        curvature = d0 - 2 * d1 + d2
        if curvature != 0.0:
            vertex = (d0 - d1) / curvature
            if 0.0 < vertex < 1.0:
                candidates.append(vertex)
        slopes = [(1 - t) ** 2 * d0 + 2 * (1 - t) * t * d1 + t**2 * d2 for t in candidates]
        return min(slopes) >= -_MONOTONE_TOLERANCE or max(slopes) <= _MONOTONE_TOLERANCE

    def plot(self, ax: Axes | None = None, num_points: int = 100) -> Axes:
        """Draw the schedule on ``ax`` (a new figure if None) and return the Axes."""
        return _plot_schedule(self, ax, num_points)

    @classmethod
    def from_string(cls, text: str, *, horizon: int = DEFAULT_HORIZON) -> BezierSchedule:
        """Parse ``"p0,p1,p2,p3"`` as used on the command line, e.g. ``"0.3,0.2,0.05,0.01"``."""
        p0, p1, p2, p3 = _parse_numbers(text, expected=4, meaning="p0,p1,p2,p3 in [0, 1]")
        return cls(p0, p1, p2, p3, horizon=horizon)


@dataclass(frozen=True)
class FlatLinearSchedule:
    """Threshold that stays at ``start`` until ``flat_fraction``, then moves linearly to ``end``.

    With ``flat_fraction = 1`` the schedule is ``start`` everywhere, including progress 1.

    Args:
        start: threshold in ``[0, 1]`` on ``[0, flat_fraction]``.
        end: threshold in ``[0, 1]`` at progress 1.
        flat_fraction: progress in ``[0, 1]`` where the linear part begins.
        horizon: visits at which a node reaches progress 1 in ``at_visits``
            (default ``DEFAULT_HORIZON``).
    """

    start: float
    end: float
    flat_fraction: float = field(kw_only=True)
    horizon: int = field(default=DEFAULT_HORIZON, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _check_threshold("start", self.start))
        object.__setattr__(self, "end", _check_threshold("end", self.end))
        object.__setattr__(
            self, "flat_fraction", _check_threshold("flat_fraction", self.flat_fraction)
        )
        _check_horizon(self.horizon)

    def __call__(self, progress: float) -> float:
        """Return the threshold at ``progress`` clamped to ``[0, 1]``."""
        t = _clamp_progress(progress)
        if t <= self.flat_fraction:
            return self.start
        fraction = (t - self.flat_fraction) / (1.0 - self.flat_fraction)
        value = (1.0 - fraction) * self.start + fraction * self.end
        return min(max(self.start, self.end), max(min(self.start, self.end), value))

    def at_visits(self, visit_count: float, horizon: float | None = None) -> float:
        """Return the threshold at progress ``visit_count / horizon`` (``self.horizon`` if None)."""
        return self(_progress_at_visits(visit_count, self.horizon if horizon is None else horizon))

    def is_monotone(self) -> bool:
        """Return True: a flat part followed by a linear part never changes direction."""
        return True

    def plot(self, ax: Axes | None = None, num_points: int = 100) -> Axes:
        """Draw the schedule on ``ax`` (a new figure if None) and return the Axes."""
        return _plot_schedule(self, ax, num_points)

    @classmethod
    def from_string(cls, text: str, *, horizon: int = DEFAULT_HORIZON) -> FlatLinearSchedule:
        """Parse ``"start,end,flat_fraction"`` as used on the command line, e.g. ``"0.5,0.05,0.2"``."""
        start, end, flat_fraction = _parse_numbers(
            text, expected=3, meaning="start,end,flat_fraction in [0, 1]"
        )
        return cls(start, end, flat_fraction=flat_fraction, horizon=horizon)


def constant_schedule(value: float, *, horizon: int = DEFAULT_HORIZON) -> BezierSchedule:
    """Return a schedule that is ``value`` at every progress (all four control points equal)."""
    return BezierSchedule(value, value, value, value, horizon=horizon)


#: Default progressive-widening schedule, a hand-chosen shape rather than a tuned one. It starts at
#: 1.0, so a fresh node admits only its top token (``admitted_count`` keeps at least one). It decays
#: fast, then slowly, to 0.01 at ``DEFAULT_HORIZON`` visits, from where every token with a prior of
#: at least 1% is admitted up to ``max_width``. Halfway, the threshold is about 0.24.
DEFAULT_WIDENING_SCHEDULE = BezierSchedule(1.0, 0.25, 0.05, 0.01)


def widening_threshold(
    schedule: Schedule, visit_count: float, horizon: float | None = None
) -> float:
    """Return the prior a child needs to be admitted at a node with ``visit_count`` visits.

    Progress is ``visit_count / horizon`` clamped to 1, with ``schedule.horizon`` when ``horizon``
    is None.
    """
    return schedule.at_visits(visit_count, horizon)


def admitted_count(
    sorted_priors: torch.Tensor | Sequence[float], threshold: float, max_width: int
) -> int:
    """Return how many of a node's candidates are admitted as children.

    Args:
        sorted_priors: ``[num_candidates]`` candidate priors sorted in descending order.
        threshold: minimum prior for admission, e.g. from ``widening_threshold``.
        max_width: maximum number of children of one node.

    Returns:
        The number of priors ``>= threshold``, raised to 1 so that a node always has its top
        candidate and capped at ``max_width``. Because the priors are sorted, the admitted children
        are the first ones. Returns 0 only when there are no candidates (a dead end).
    """
    if isinstance(max_width, bool) or not isinstance(max_width, int) or max_width < 1:
        raise ValueError(f"max_width={max_width!r} is invalid; pass an int >= 1")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold must be a float, got {threshold!r}")
    if math.isnan(threshold):
        raise ValueError("threshold=nan is invalid; pass a probability in [0, 1]")
    priors = torch.as_tensor(sorted_priors, dtype=torch.float64)
    if priors.ndim != 1:
        raise ValueError(
            f"sorted_priors has shape {tuple(priors.shape)}; pass a 1-D [num_candidates] sequence"
        )
    if priors.numel() == 0:
        return 0
    if bool((priors[1:] > priors[:-1]).any()):
        raise ValueError(
            "sorted_priors is not sorted in descending order; sort it first "
            "(top_candidates returns it sorted)"
        )

    num_reaching = int((priors >= threshold).sum())
    return min(max_width, max(1, num_reaching))
