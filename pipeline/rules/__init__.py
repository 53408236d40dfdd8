"""The data rules: the tables a round derives from its trees, and the checks they must pass.

``sql`` (trajectories, SFT rows, Q-value preference pairs and round statistics in DuckDB SQL),
``filter`` (re-runs every picked program and re-grades its answer), ``checks`` (every table
against its contract in docs/data-contracts.md). The stable public path of ``derive_pairs`` and
``derive_sft`` is ``pipeline.sql``.
"""
