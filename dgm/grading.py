"""The course's grading rule (see the course page of the book).

Three project tasks of 10 points each (30 in all) earn a bonus on the written exam:
0.1 / 0.2 / 0.3 grade points at 25 / 50 / 75 % of all project points. The bonus applies
only when the exam is passed (grade 4.0 or better) and never makes a grade better than 1.0.
"""

from __future__ import annotations

import math

__all__ = ["PROJECT_POINTS", "BONUS_STEPS", "EXAM_GRADES", "bonus", "final_grade"]

#: Points of all project tasks together (three tasks, 10 points each).
PROJECT_POINTS: float = 30.0
#: (share of all project points, bonus in grade points), from the highest step down.
BONUS_STEPS: tuple[tuple[float, float], ...] = ((0.75, 0.3), (0.50, 0.2), (0.25, 0.1))
#: Grades an exam can receive (German scale; 5.0 fails).
EXAM_GRADES: tuple[float, ...] = (1.0, 1.3, 1.7, 2.0, 2.3, 2.7, 3.0, 3.3, 3.7, 4.0, 5.0)
PASS_GRADE = 4.0


def bonus(points: float, max_points: float = PROJECT_POINTS) -> float:
    """Bonus in grade points for ``points`` out of ``max_points`` project points."""
    if isinstance(points, bool) or not isinstance(points, (int, float)) or math.isnan(points):
        raise TypeError(f"points must be a number, got {points!r}")
    if not 0 <= points <= max_points:
        raise ValueError(f"points must lie in [0, {max_points:g}], got {points!r}")
    for share, b in BONUS_STEPS:
        if points >= share * max_points:
            return b
    return 0.0


def final_grade(exam_grade: float, points: float, max_points: float = PROJECT_POINTS) -> float:
    """Course grade: the exam grade improved by the project bonus when the exam is passed.

    ``exam_grade`` is one of :data:`EXAM_GRADES`. A failed exam (5.0) stays failed; a passed
    one is lowered by :func:`bonus`, but not below 1.0.
    """
    if isinstance(exam_grade, bool) or exam_grade not in EXAM_GRADES:
        raise ValueError(f"exam_grade must be one of {', '.join(f'{g:.1f}' for g in EXAM_GRADES)}; got {exam_grade!r}")
    b = bonus(points, max_points)
    if exam_grade > PASS_GRADE:
        return exam_grade
    return round(max(1.0, exam_grade - b), 1)
