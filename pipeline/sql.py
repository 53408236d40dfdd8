"""The stable public path of the SQL rules (DESIGN.md); the code is pipeline.rules.sql."""

from pipeline.rules.sql import derive_pairs, derive_sft

__all__ = ["derive_pairs", "derive_sft"]
