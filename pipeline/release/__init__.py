"""Release: the Hub-ready dataset folder, its card, and diffs between two dataset versions.

``publish`` (``rstar publish``), ``card`` (the dataset card) and ``diff`` (``rstar diff``: rows
added, removed and changed between two revisions, joined on the stable ids).
"""
