"""Exercises for the sdelab book: starters to fill in, reference solutions, and their checks.

In a chapter (or any notebook), write your function and check it in one line::

    from exercises import check
    check(vp_kernel)          # prints a pass, or what failed

With pytest, run the same checks against your starter files or the reference solutions::

    pytest exercises --impl=starter -k ch01     # your code in exercises/ch01_forward.py
    pytest exercises                            # the reference solutions (what CI runs)
"""

from .registry import EXERCISES, check

__all__ = ["check", "EXERCISES"]
