"""Run the Great Expectations part of a table's checks over a pandas frame (GX 1.x).

One ephemeral Data Context per process, with one pandas data source and one whole-dataframe
batch definition; each table's checks become an ``ExpectationSuite`` that a
``ValidationDefinition`` runs on the frame. (A ``ValidationDefinition`` builds the batch once;
``get_batch().validate()`` builds it twice, and GX fingerprints every batch by hashing the
whole frame.) GX is imported here only, and only when a validation runs, so
``import pipeline.rules.checks`` stays cheap; its usage analytics and progress bars are off so stage
logs stay readable.
"""

from __future__ import annotations

import os
import warnings
from functools import cache
from typing import Any

from pipeline.rules.checks.report import FAILED, MAX_EXAMPLES, PASSED, CheckResult, plain
from pipeline.rules.checks.rules import Check


@cache
def _context() -> tuple[Any, Any]:
    """The process's ephemeral Data Context and its whole-dataframe batch definition."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("rstar")
    batch = source.add_dataframe_asset("table").add_batch_definition_whole_dataframe("whole")
    return context, batch


def build_suite(table: str, checks: list[Check]) -> Any:
    """The GX ``ExpectationSuite`` of these checks; each expectation's meta names its check."""
    import great_expectations as gx

    expectations = [
        getattr(gx.expectations, check.expectation)(**check.options, meta={"check": check.name})
        for check in checks
    ]
    return gx.ExpectationSuite(name=f"rstar_{table}", expectations=expectations)


def run_suite(
    table: str, frame: Any, checks: list[Check], id_columns: list[str]
) -> list[CheckResult]:
    """Validate ``frame`` (pandas) against ``checks``; one result per check, in their order.

    Examples are named by ``id_columns``, looked up here from the row numbers GX reports: GX's
    own ``unexpected_index_column_names`` collects the ids of *every* unexpected row, one
    pandas lookup each (minutes for a million bad rows).
    """
    if not checks:
        return []
    import great_expectations as gx

    context, batch = _context()
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        suite = context.suites.add_or_update(build_suite(table, checks))
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
        )
        outcome = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    by_name = {result.expectation_config.meta["check"]: result for result in outcome.results}
    return [_to_check_result(check, by_name[check.name], frame, id_columns) for check in checks]


def _to_check_result(check: Check, result: Any, frame: Any, id_columns: list[str]) -> CheckResult:
    error = _exception_message(result.exception_info)
    if error is not None:
        return CheckResult(check.name, list(check.columns), "gx", FAILED, detail=f"error: {error}")
    details = result.result or {}
    return CheckResult(
        check.name,
        list(check.columns),
        "gx",
        PASSED if result.success else FAILED,
        count=int(details.get("unexpected_count") or 0),
        examples=_examples(check, details, frame, id_columns),
        detail=result.expectation_config.type,
    )


def _examples(
    check: Check, details: dict[str, Any], frame: Any, id_columns: list[str]
) -> list[dict[str, Any]]:
    """Up to MAX_EXAMPLES bad rows: ids first, then the values judged."""
    rows = details.get("partial_unexpected_index_list") or []
    columns = list(dict.fromkeys([*id_columns, *check.columns]))
    if rows and all(isinstance(row, int) for row in rows):
        picked = frame.loc[rows[:MAX_EXAMPLES], columns]
        return [plain(example) for example in picked.to_dict("records")]
    values = details.get("partial_unexpected_list") or []
    return [plain(_value_example(check, value)) for value in values[:MAX_EXAMPLES]]


def _exception_message(info: Any) -> str | None:
    """The first line of the error an expectation raised, if any.

    GX 1.x gives ``{"raised_exception": ..., "exception_message": ...}``, or one such dict per
    metric that failed to compute.
    """
    if not isinstance(info, dict):
        return None
    found = (
        [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    )
    for entry in found:
        if entry.get("raised_exception"):
            return str(entry.get("exception_message") or "raised an exception").splitlines()[0]
    return None


def _value_example(check: Check, value: Any) -> dict[str, Any]:
    if isinstance(value, tuple) and len(value) == len(check.columns):
        return dict(zip(check.columns, value))
    return {check.columns[0]: value}
