"""Column presence and types, read from the Parquet schema (docs/data-contracts.md).

Types are checked on the file's Arrow schema, not on a pandas frame: pandas turns an integer
column with nulls into floats and a nullable bool into objects, so only the file says what was
written. No rows are read. A column of Arrow type ``null`` (every value null, as polars writes
an all-None column) passes for a nullable column of any kind.
"""

from __future__ import annotations

import pyarrow as pa

from pipeline.rules.checks.contracts import Column, Contract
from pipeline.rules.checks.report import FAILED, PASSED, CheckResult


def kind_of(data_type: pa.DataType) -> str:
    """The contract kind (``str``, ``int``, ``list[float]``, ...) of an Arrow type, or its name."""
    if pa.types.is_dictionary(data_type):
        return kind_of(data_type.value_type)
    if (
        pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or (pa.types.is_string_view(data_type))
    ):
        return "str"
    if pa.types.is_integer(data_type):
        return "int"
    if pa.types.is_floating(data_type):
        return "float"
    if pa.types.is_boolean(data_type):
        return "bool"
    if pa.types.is_null(data_type):
        return "null"
    if (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or (pa.types.is_list_view(data_type) or pa.types.is_fixed_size_list(data_type))
    ):
        return f"list[{kind_of(data_type.value_type)}]"
    return str(data_type)


def _fits(column: Column, found: str) -> bool:
    return found == column.kind or (found == "null" and column.nullable)


def schema_checks(contract: Contract, schema: pa.Schema, rows: int) -> list[CheckResult]:
    """One check per contract column: present, with a type of the stated kind."""
    found = {field.name: field.type for field in schema}
    results = []
    for column in contract.columns:
        name = f"{column.name} is {column.kind}"
        if column.name not in found:
            status, detail = FAILED, "column missing"
        else:
            kind = kind_of(found[column.name])
            ok = _fits(column, kind)
            status = PASSED if ok else FAILED
            detail = f"found {found[column.name]}" + ("" if ok else f", expected {column.kind}")
        results.append(
            CheckResult(
                name,
                [column.name],
                "schema",
                status,
                count=0 if status == PASSED else rows,
                detail=detail,
            )
        )
    return results
