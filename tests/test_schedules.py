import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempo_search.schedules import (
    DEFAULT_HORIZON,
    DEFAULT_WIDENING_SCHEDULE,
    BezierSchedule,
    FlatLinearSchedule,
    Schedule,
    admitted_count,
    constant_schedule,
    widening_threshold,
)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def bezier(t, p0, p1, p2, p3):
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def test_bezier_endpoints():
    schedule = BezierSchedule(0.3, 0.2, 0.05, 0.01)
    assert schedule(0.0) == pytest.approx(0.3)
    assert schedule(1.0) == pytest.approx(0.01)


@pytest.mark.parametrize("t", [0.1, 0.25, 0.5, 0.8])
def test_bezier_matches_formula(t):
    schedule = BezierSchedule(0.9, 0.1, 0.6, 0.2)
    assert schedule(t) == pytest.approx(bezier(t, 0.9, 0.1, 0.6, 0.2))


def test_bezier_clamps_progress():
    schedule = BezierSchedule(0.8, 0.5, 0.3, 0.1)
    assert schedule(-2.0) == pytest.approx(0.8)
    assert schedule(5.0) == pytest.approx(0.1)


def test_bezier_nan_progress_rejected():
    with pytest.raises(ValueError, match="progress"):
        BezierSchedule(0.8, 0.5, 0.3, 0.1)(math.nan)


@settings(max_examples=200, deadline=None)
@given(p0=unit, p1=unit, p2=unit, p3=unit, t=st.floats(min_value=-1.0, max_value=2.0))
def test_bezier_stays_in_unit_interval(p0, p1, p2, p3, t):
    value = BezierSchedule(p0, p1, p2, p3)(t)
    assert 0.0 <= value <= 1.0


@settings(max_examples=100, deadline=None)
@given(points=st.lists(unit, min_size=4, max_size=4), reverse=st.booleans())
def test_bezier_monotone_control_points(points, reverse):
    points = sorted(points, reverse=reverse)
    schedule = BezierSchedule(*points)
    values = [schedule(i / 50) for i in range(51)]
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert schedule.is_monotone()
    if reverse:
        assert max(steps) <= 1e-12
    else:
        assert min(steps) >= -1e-12


def test_bezier_is_monotone_non_monotone_curve():
    schedule = BezierSchedule(0.1, 0.9, 0.9, 0.1)
    assert not schedule.is_monotone()


def test_bezier_is_monotone_non_monotone_points_monotone_curve():
    # Control points 0, 0.5, 0.4, 1 are not sorted, but B'(t) / 3 has coefficients
    # (0.5, -0.1, 0.6), whose minimum 0.5 - 0.36 / 1.2 = 0.2 is positive.
    schedule = BezierSchedule(0.0, 0.5, 0.4, 1.0)
    values = [schedule(i / 200) for i in range(201)]
    assert schedule.is_monotone()
    assert all(b >= a for a, b in itertools.pairwise(values))


def test_bezier_is_monotone_catches_interior_dip():
    # B'(t) / 3 has coefficients (0.3, -0.5, 0.3): positive at both ends, so checking the
    # endpoint slopes alone would call it monotone, but at t = 0.5 it is
    # 0.25 * 0.3 + 0.5 * (-0.5) + 0.25 * 0.3 = -0.1.
    schedule = BezierSchedule(0.2, 0.5, 0.0, 0.3)
    values = [schedule(i / 200) for i in range(201)]
    assert any(b < a for a, b in itertools.pairwise(values))
    assert any(b > a for a, b in itertools.pairwise(values))
    assert not schedule.is_monotone()


@pytest.mark.parametrize("name", ["p0", "p1", "p2", "p3"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, math.inf, math.nan])
def test_bezier_rejects_invalid_control_point(name, bad):
    points = {"p0": 0.5, "p1": 0.4, "p2": 0.3, "p3": 0.2}
    points[name] = bad
    with pytest.raises(ValueError, match=name):
        BezierSchedule(**points)


def test_bezier_rejects_non_number():
    with pytest.raises(TypeError, match="p1"):
        BezierSchedule(0.5, "0.4", 0.3, 0.2)


def test_bezier_rejects_invalid_horizon():
    with pytest.raises(ValueError, match="horizon"):
        BezierSchedule(0.5, 0.4, 0.3, 0.2, horizon=0)


def test_bezier_from_string():
    schedule = BezierSchedule.from_string(" 0.3, 0.2,0.05 ,0.01", horizon=10)
    assert schedule == BezierSchedule(0.3, 0.2, 0.05, 0.01, horizon=10)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.3,0.2,0.05", "3 comma-separated values"),
        ("0.3,0.2,0.05,0.01,0.0", "5 comma-separated values"),
        ("0.3,abc,0.05,0.01", "'abc', which is not a number"),
        ("0.3,,0.05,0.01", "which is not a number"),
        ("0.3,0.2,0.05,2", "p3=2.0"),
    ],
)
def test_bezier_from_string_invalid(text, message):
    with pytest.raises(ValueError, match=message):
        BezierSchedule.from_string(text)


def test_bezier_at_visits():
    schedule = BezierSchedule(0.9, 0.5, 0.2, 0.1, horizon=20)
    assert schedule.at_visits(5) == pytest.approx(bezier(0.25, 0.9, 0.5, 0.2, 0.1))
    assert schedule.at_visits(5, 10) == pytest.approx(bezier(0.5, 0.9, 0.5, 0.2, 0.1))
    assert schedule.at_visits(100) == pytest.approx(0.1)


def test_at_visits_rejects_negative_count():
    with pytest.raises(ValueError, match="visit_count"):
        BezierSchedule(0.9, 0.5, 0.2, 0.1).at_visits(-1)


def test_flat_linear_values():
    schedule = FlatLinearSchedule(0.6, 0.1, flat_fraction=0.2)
    assert schedule(0.0) == pytest.approx(0.6)
    assert schedule(0.2) == pytest.approx(0.6)
    assert schedule(0.6) == pytest.approx(0.6 + (0.1 - 0.6) * (0.4 / 0.8))
    assert schedule(1.0) == pytest.approx(0.1)
    assert schedule.is_monotone()


def test_flat_linear_fully_flat():
    schedule = FlatLinearSchedule(0.6, 0.1, flat_fraction=1.0)
    assert schedule(1.0) == pytest.approx(0.6)


def test_flat_linear_requires_keyword_flat_fraction():
    with pytest.raises(TypeError):
        FlatLinearSchedule(0.6, 0.1, 0.2)


def test_flat_linear_rejects_invalid_flat_fraction():
    with pytest.raises(ValueError, match="flat_fraction"):
        FlatLinearSchedule(0.6, 0.1, flat_fraction=1.2)


def test_flat_linear_from_string():
    schedule = FlatLinearSchedule.from_string("0.5,0.05,0.2")
    assert schedule == FlatLinearSchedule(0.5, 0.05, flat_fraction=0.2)


def test_flat_linear_from_string_wrong_count():
    with pytest.raises(ValueError, match="start,end,flat_fraction"):
        FlatLinearSchedule.from_string("0.5,0.05")


def test_schedules_satisfy_protocol():
    assert isinstance(BezierSchedule(0.5, 0.4, 0.3, 0.2), Schedule)
    assert isinstance(FlatLinearSchedule(0.5, 0.1, flat_fraction=0.0), Schedule)


def test_constant_schedule():
    schedule = constant_schedule(0.2)
    assert schedule(0.0) == pytest.approx(0.2)
    assert schedule(0.37) == pytest.approx(0.2)
    assert schedule(1.0) == pytest.approx(0.2)


def test_default_widening_schedule_shape():
    assert DEFAULT_WIDENING_SCHEDULE(0.0) == pytest.approx(1.0)
    assert DEFAULT_WIDENING_SCHEDULE(1.0) == pytest.approx(0.01)
    assert DEFAULT_WIDENING_SCHEDULE.horizon == DEFAULT_HORIZON
    assert DEFAULT_WIDENING_SCHEDULE.is_monotone()


def test_plot_returns_axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedule = BezierSchedule(0.9, 0.5, 0.2, 0.1)
    ax = schedule.plot(num_points=11)
    (line,) = ax.get_lines()
    assert len(line.get_xdata()) == 11
    assert line.get_ydata()[-1] == pytest.approx(0.1)
    plt.close(ax.figure)


def test_plot_draws_on_given_axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    returned = FlatLinearSchedule(0.5, 0.1, flat_fraction=0.5).plot(ax)
    assert returned is ax
    plt.close(ax.figure)


def test_admitted_count_counts_priors_reaching_threshold():
    assert admitted_count([0.5, 0.3, 0.1, 0.05], 0.1, max_width=10) == 3


def test_admitted_count_at_least_one():
    assert admitted_count([0.5, 0.3], 0.9, max_width=10) == 1


def test_admitted_count_at_most_max_width():
    assert admitted_count([0.3, 0.3, 0.2, 0.2], 0.0, max_width=2) == 2


def test_admitted_count_no_candidates():
    assert admitted_count([], 0.5, max_width=4) == 0


def test_admitted_count_rejects_unsorted():
    with pytest.raises(ValueError, match="descending"):
        admitted_count([0.1, 0.5], 0.2, max_width=4)


def test_admitted_count_rejects_invalid_max_width():
    with pytest.raises(ValueError, match="max_width"):
        admitted_count([0.5], 0.2, max_width=0)


def test_widening_admits_children_in_order():
    priors = [0.5, 0.2, 0.1, 0.04, 0.02, 0.005]
    points = (1.0, 0.25, 0.05, 0.01)
    horizon = 32
    schedule = BezierSchedule(*points, horizon=horizon)

    counts = []
    for visit_count in range(horizon + 1):
        threshold = widening_threshold(schedule, visit_count)
        expected_threshold = bezier(visit_count / horizon, *points)
        assert threshold == pytest.approx(expected_threshold)
        count = admitted_count(priors, threshold, max_width=len(priors))
        expected_count = max(1, sum(p >= expected_threshold for p in priors))
        assert count == expected_count
        counts.append(count)

    # The schedule is decreasing, so children open one after another and never close.
    assert all(b >= a for a, b in itertools.pairwise(counts))
    assert counts[0] == 1
    assert counts[-1] == 5  # 0.005 stays below the final threshold 0.01

    # Child i opens at the first visit count whose threshold is at most its prior.
    for i, prior in enumerate(priors[1:5], start=1):
        first_open = counts.index(i + 1)
        assert bezier(first_open / horizon, *points) <= prior
        assert bezier((first_open - 1) / horizon, *points) > prior


def test_widening_threshold_explicit_horizon():
    schedule = BezierSchedule(1.0, 0.25, 0.05, 0.01, horizon=32)
    assert widening_threshold(schedule, 8, 16) == pytest.approx(bezier(0.5, 1.0, 0.25, 0.05, 0.01))
