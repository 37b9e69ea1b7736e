"""How figures read in everything a person reads: report.md, the model card, the command line.

One module, so that a value missing from a report reads the same everywhere ("n/a", never "-%" or "None") and a
rate, a percentage, a size or a time has one spelling in the report and in the card that quotes it.
"""

from __future__ import annotations

from typing import Any

NA = "n/a"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fixed(value: Any, digits: int) -> str:
    """12.35 for fixed(12.345, 2)."""
    return f"{value:.{digits}f}" if is_number(value) else NA


def compact(value: Any, digits: int = 3) -> str:
    """Fixed digits, or scientific notation where fixed digits would hide the value (1.2e-07, 3.4e+06)."""
    if value is None:
        return NA
    if isinstance(value, float):
        if value and (abs(value) < 10 ** -digits or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return str(value)


def significant(value: Any, unit: str = "") -> str:
    """Three significant digits with a unit; yes/NO for a flag."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}{unit}"
    return f"{value}{unit}"


def plain(value: Any) -> str:
    return f"{value:g}" if is_number(value) else NA


def scientific(value: Any) -> str:
    return f"{value:.2e}" if is_number(value) else NA


def rate(value: Any) -> str:
    """A rate in [0, 1] as a percentage: 0.875 -> 87.5%."""
    return f"{100 * value:.1f}%" if is_number(value) else NA


def percent(value: Any, digits: int = 2) -> str:
    """A value already in percent: 3.456 -> 3.46%."""
    return f"{value:.{digits}f}%" if is_number(value) else NA


def seconds(value: Any) -> str:
    return f"{value:.1f} s" if is_number(value) else NA


def gigabytes(size: Any) -> str:
    return f"{size / 1e9:.2f} GB" if is_number(size) else NA


def human_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def exact_bytes(size: int) -> str:
    return f"{size:,}"


def count(value: int | None) -> str:
    """A parameter count: 1.1B (1,100,000,000)."""
    if not value:
        return NA
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit} ({value:,})"
    return f"{value:,}"


def plural(number: Any, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def table_cell(text: Any) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")
