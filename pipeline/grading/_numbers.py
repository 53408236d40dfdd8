"""The one rule for comparing a float with a number, shared by the fast path and the worker.

A program prints floats (``72.0``, ``0.30000000000000004``, ``4.999999999999999``) and models
round (``0.333333`` for 1/3). math-verify rounds floats to 6 decimals, which alone makes
``1e-7 == 2e-7``; so two numbers, at least one written as a float, agree when they are equal to
6 decimals *and* within a relative 1e-4 (with an absolute floor for values near zero).
Two exact numbers agree only when equal. Standard library only: the worker imports it too.
"""

from __future__ import annotations

from fractions import Fraction

FLOAT_DECIMALS = 6  # math-verify's float_rounding
FLOAT_REL_TOL = 1e-4
FLOAT_ABS_TOL = 1e-12


def numbers_agree(x: Fraction, x_is_float: bool, y: Fraction, y_is_float: bool) -> bool:
    """Whether ``x`` and ``y`` are the same answer; ``*_is_float`` says it was written as one."""
    if x == y:
        return True
    if not (x_is_float or y_is_float):
        return False
    if round(x, FLOAT_DECIMALS) != round(y, FLOAT_DECIMALS):
        return False
    return abs(x - y) <= max(Fraction(FLOAT_REL_TOL) * max(abs(x), abs(y)), Fraction(FLOAT_ABS_TOL))
