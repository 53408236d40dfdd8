"""The stable public path of answer grading (DESIGN.md); the code is pipeline.grading.answer."""

from pipeline.grading.answer import extract_answer, is_equivalent

__all__ = ["extract_answer", "is_equivalent"]
