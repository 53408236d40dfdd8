"""Grading: the +1 / -1 of a terminal step, answer extraction and equivalence.

``answer`` (``extract_answer``, ``is_equivalent``: a fast path, then math-verify in a worker
process), ``_process`` and ``_worker`` (that worker), ``_numbers`` (the rule for plain numbers).
The stable public path is ``pipeline.answer``.
"""
