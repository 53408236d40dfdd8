"""What a validation found: one :class:`CheckResult` per check, gathered in a report.

Every check, whatever ran it (the Parquet schema, a Great Expectations expectation or a DuckDB
query), reports the same shape: its readable name, the columns it reads, how many rows break it
and up to :data:`MAX_EXAMPLES` of them, each named by the table's id columns.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.io import write_json

MAX_EXAMPLES = 5  # kept in the JSON report
SUMMARY_EXAMPLES = 3  # shown in the short report
MAX_TEXT = 60  # characters of a string value kept in an example

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass
class CheckResult:
    """One check of one table.

    ``count`` is the number of ``unit`` (rows, or trees for a rule about whole trees) that
    break the check; for a missing or mistyped column, every row. ``engine`` is ``schema``,
    ``gx`` or ``sql``; ``detail`` says more in words (the Great Expectations type, a found
    type, why a check was skipped, the error a check raised).
    """

    check: str
    columns: list[str]
    engine: str
    status: str
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    unit: str = "rows"

    @property
    def failed(self) -> bool:
        return self.status == FAILED


Failure = CheckResult  # a failure is a CheckResult whose status is "failed"


@dataclass
class ValidationReport:
    """The checks of one table file against its contract (docs/data-contracts.md)."""

    table: str
    path: str
    rows: int
    checks: list[CheckResult]
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if check.failed]

    @property
    def skipped(self) -> list[CheckResult]:
        return [check for check in self.checks if check.status == SKIPPED]

    def summary(self) -> str:
        """A few readable lines: the verdict, then one line per failed check with examples."""
        ran = len(self.checks) - len(self.skipped)
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        head = f"{self.table} {self.path}: "
        if self.success:
            head += f"all {ran} checks passed ({self.rows} rows{skipped})"
            return head
        head += f"{len(self.failures)} of {ran} checks failed ({self.rows} rows{skipped})"
        return "\n".join([head, *(f"  - {_failure_line(check)}" for check in self.failures)])

    def to_dict(self) -> dict[str, Any]:
        """The full report as a JSON-ready dict; what :func:`write_report` writes."""
        return {
            "table": self.table,
            "path": self.path,
            "rows": self.rows,
            "success": self.success,
            "checks_run": len(self.checks) - len(self.skipped),
            "failed": len(self.failures),
            "seconds": round(self.seconds, 3),
            "params": self.params,
            "checks": [asdict(check) for check in self.checks],
        }

    def to_json(self) -> str:
        """The full report as JSON text (every check, passed ones included)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)


def write_report(report: ValidationReport, path: str | Path) -> None:
    """Write the full JSON report atomically (temporary name, then rename)."""
    write_json(Path(path), report.to_dict())


def _failure_line(check: CheckResult) -> str:
    if check.engine == "schema" or check.detail.startswith("error"):
        return f"{check.check}: {check.detail}"
    unit = check.unit[:-1] if check.count == 1 and check.unit.endswith("s") else check.unit
    line = f"{check.check}: {check.count} {unit}"
    if check.examples:
        shown = check.examples[:SUMMARY_EXAMPLES]
        line += ", e.g. " + "; ".join(format_example(example) for example in shown)
    return line


def format_example(example: dict[str, Any]) -> str:
    return " ".join(f"{key}={_short(value)}" for key, value in example.items())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def plain(value: Any) -> Any:
    """A JSON-ready copy of a value from pandas, numpy or DuckDB; long strings shortened."""
    if value is None:
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar/array
        value = value.tolist()
    if isinstance(value, float):  # NaN is a null; +-inf is kept as text (JSON has no inf)
        return None if math.isnan(value) else value if math.isfinite(value) else str(value)
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 3] + "..."
    if isinstance(value, (list, tuple)):
        items = [plain(item) for item in list(value)[:MAX_EXAMPLES]]
        return items + (["..."] if len(value) > MAX_EXAMPLES else [])
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    text = str(value)
    return None if text in ("<NA>", "NaT", "nan") else text  # pandas NA / NaT
