"""The C text of 8-bit state (``state_dtype="8bit"``): the constants the prelude's ``q8_load`` / ``q8_store`` read
and each map's tables, printed from descend.plan.blockwise (floats in hexadecimal: exact)."""
from __future__ import annotations

import math

from ..plan import blockwise


def table_name(signed: bool) -> str:
    return "Q8_SIGNED" if signed else "Q8_UNSIGNED"


def defines(signs: set[bool]) -> list[str]:
    """The constants of the portable search (before the prelude), where a kernel keeps 8-bit state."""
    if not signs:
        return []
    return [f"#define Q8_CELL_BITS {blockwise.CELL_BITS}", f"#define Q8_TINY_EXPONENT {blockwise.TINY_EXPONENT}",
            f"#define Q8_EXPONENTS {blockwise.EXPONENTS}", f"#define Q8_LOW_BITS {blockwise.LOW_BITS}",
            f"#define Q8_LOW {blockwise.LOW}u", f"#define Q8_NAN_CELL {2 * blockwise.EXPONENTS << blockwise.CELL_BITS}u"]


def _array(kind: str, name: str, values, size: int | None = None) -> str:
    values = list(values) + [0] * ((size or len(values)) - len(values))
    if kind == "float":
        text = ["INFINITY" if v == math.inf else "(-INFINITY)" if v == -math.inf else f"{float(v).hex()}f" for v in values]
    else:
        text = [str(int(v)) for v in values]
    return f"static const {kind} {name}[{len(values)}] = {{" + ",".join(text) + "};"


def tables(signs: set[bool]) -> list[str]:
    """Each map's tables and its ``q8_map_t`` (after the prelude, which declares the type)."""
    lines = []
    for signed in sorted(signs):
        name = table_name(signed)
        plan, (code, threshold) = blockwise.decades(signed), blockwise.cells(signed)
        lines += [_array("float", f"{name}_VALUES", blockwise.dynamic_map(signed)),
                  _array("float", f"{name}_BOUNDARY", plan["boundaries"]),
                  _array("float", f"{name}_A", plan["A"], 16), _array("float", f"{name}_C", plan["C"], 16),
                  _array("float", f"{name}_DECADE", plan["thresholds"]),
                  _array("int32_t", f"{name}_COUNT", plan["count"], 16),
                  _array("int32_t", f"{name}_BASE", plan["base"], 16),
                  _array("int32_t", f"{name}_NEGATIVE", plan["negative"], 16),
                  _array("uint8_t", f"{name}_CODE", code), _array("uint16_t", f"{name}_THRESHOLD", threshold),
                  f"static const q8_map_t {name} = {{{name}_VALUES, {name}_BOUNDARY, {name}_A, {name}_C, {name}_DECADE, "
                  f"{name}_COUNT, {name}_BASE, {name}_NEGATIVE, {name}_CODE, {name}_THRESHOLD, {int(signed)}}};"]
    return lines
