"""Properties of the course's grading rule (dgm.grading)."""

from __future__ import annotations

import math

import pytest

from dgm.grading import BONUS_STEPS, EXAM_GRADES, PROJECT_POINTS, bonus, final_grade

PASSED = [g for g in EXAM_GRADES if g <= 4.0]


@pytest.mark.parametrize(
    "points, expected",
    [(0, 0.0), (7.49, 0.0), (7.5, 0.1), (14.99, 0.1), (15, 0.2), (22.49, 0.2), (22.5, 0.3), (30, 0.3)],
)
def test_bonus_thresholds_are_25_50_75_percent_of_30_points(points, expected):
    assert PROJECT_POINTS == 30
    assert bonus(points) == expected


def test_bonus_steps_match_the_documented_rule():
    assert sorted(BONUS_STEPS) == [(0.25, 0.1), (0.50, 0.2), (0.75, 0.3)]


def test_bonus_is_monotone_in_points():
    pts = [k / 10 for k in range(0, 301)]
    values = [bonus(p) for p in pts]
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert set(values) == {0.0, 0.1, 0.2, 0.3}


def test_bonus_scales_with_max_points():
    assert bonus(5, max_points=20) == 0.1
    assert bonus(4.99, max_points=20) == 0.0
    assert bonus(15, max_points=20) == 0.3


def test_failed_exam_stays_failed():
    for points in (0, 7.5, 15, 22.5, 30):
        assert final_grade(5.0, points) == 5.0


@pytest.mark.parametrize("exam", [1.0, 1.3])
def test_grade_never_better_than_1_0(exam):
    assert final_grade(exam, 30) == 1.0


def test_examples():
    assert final_grade(2.3, 30) == 2.0
    assert final_grade(2.3, 15) == 2.1
    assert final_grade(2.3, 7.5) == 2.2
    assert final_grade(2.3, 7.49) == 2.3
    assert final_grade(4.0, 30) == 3.7


@pytest.mark.parametrize("exam", EXAM_GRADES)
@pytest.mark.parametrize("points", [0, 7.5, 15, 22.5, 30])
def test_final_grade_lies_between_1_0_and_the_exam_grade(exam, points):
    g = final_grade(exam, points)
    assert 1.0 <= g <= exam
    if exam <= 4.0:  # passed: improved by exactly the bonus, unless clamped at 1.0
        assert g == pytest.approx(max(1.0, exam - bonus(points)), abs=1e-12)
        assert round(g, 1) == g
    else:
        assert g == exam


@pytest.mark.parametrize("exam", PASSED)
def test_more_points_never_give_a_worse_grade(exam):
    grades = [final_grade(exam, p) for p in range(0, 31)]
    assert all(a >= b for a, b in zip(grades, grades[1:]))


@pytest.mark.parametrize("points", [-1, -0.01, 30.01, 31, math.inf, -math.inf])
def test_points_out_of_range_raise(points):
    with pytest.raises(ValueError):
        bonus(points)
    with pytest.raises(ValueError):
        final_grade(2.0, points)


@pytest.mark.parametrize("points", [True, False, math.nan, "30", None])
def test_points_that_are_not_numbers_raise(points):
    with pytest.raises(TypeError):
        bonus(points)
    with pytest.raises(TypeError):
        final_grade(2.0, points)


@pytest.mark.parametrize("exam", [2.5, 0.7, 6.0, math.nan, "2.0", None])
def test_exam_grade_off_the_scale_raises(exam):
    with pytest.raises(ValueError):
        final_grade(exam, 10)


def test_bool_exam_grade_raises():
    with pytest.raises((TypeError, ValueError)):
        final_grade(True, 10)

