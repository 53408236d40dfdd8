"""Problems: the seed problems with reference solutions in the step format (docs/algorithm.md).

``sources`` reads every source (generated, GSM8K, MATH-style, any table, the Hub), dedupes and
splits; ``generator`` makes arithmetic and algebra problems at five levels; ``gsm8k`` turns
GSM8K's worked solutions into code steps. ``pipeline.problems.load_problems`` is the stable
public path (DESIGN.md's interface).
"""

from pipeline.problems.sources import load_problems

__all__ = ["load_problems"]
