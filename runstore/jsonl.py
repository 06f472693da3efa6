"""Live segments' JSONL lines: encoding a batch of records, decoding lines back.

The writer hands over a batch of records by column (`Columns`: field name -> list of
values, `format.RECORD_FIELDS[stream]`) and encodes it as one JSONL line of those
columns; readers decode lines back to columns (`tables` makes Arrow of them). Columns,
not record tuples, because every step then works on whole lists in C (orjson, pyarrow)
rather than record by record in Python. Imports no pyarrow: the job's hot path needs
only this.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ._storable import INT64_MAX, INT64_MIN, key_text
from .errors import RunstoreError
from .format import (
    FORMAT_VERSION,
    METRICS,
    RECORD_FIELDS,
    SPECIAL,
    check_format_version,
)

__all__ = [
    "JSON_OPTIONS",
    "MAX_RECORDS_PER_LINE",
    "Columns",
    "DecodedLines",
    "JsonText",
    "columns_of_records",
    "decode_lines",
    "encode_lines",
    "header_line",
    "json_default",
    "json_options",
    "record_count",
    "slice_columns",
    "uniform_keys",
]

#: A batch of records by field: {field name: [value of each record]}.
Columns = dict[str, list[Any]]

#: At most this many records go on one line, so a line stays small enough for any JSON
#: reader (DuckDB's default limit is 16 MB per object).
MAX_RECORDS_PER_LINE: Final = 8192

#: How runstore encodes JSON everywhere: numpy values as numbers, non-string keys as text.
JSON_OPTIONS: Final = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_WITHOUT_NUMPY: Final = orjson.OPT_NON_STR_KEYS


def json_options() -> int:
    """`JSON_OPTIONS` once numpy is loaded; before, no value can be numpy's, and asking
    orjson to look for numpy values would import it (~70 ms) at the first bytes or
    object it does not know."""
    return JSON_OPTIONS if "numpy" in sys.modules else _WITHOUT_NUMPY


_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_NONFINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
#: A run of 20 digits, which may be an int beyond 64 bits (2**64 has 20), is found as 20
#: zeros in the line with every digit made a zero: a tenth of a regex's time, a pass in C.
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS: Final = b"0" * 20


class JsonText(bytes):
    """A metric value encoded as JSON when the job logged it, so later changes to the
    job's objects cannot alter the record. (An event's data is JSON made the same way,
    kept as plain bytes: in a record, any bytes are JSON.)"""

    __slots__ = ()


def json_default(value: object) -> object:
    """orjson's `default`: bytes are JSON made already; anything else its repr."""
    if isinstance(value, bytes):  # JSON made at the call: JsonText, or an event's data
        return orjson.Fragment(value if type(value) is bytes else bytes(value))
    return repr(value)


def header_line(stream: str, writer_id: str, number: int) -> bytes:
    """The first line of every live segment: what it holds and in which format."""
    header = {
        "runstore": FORMAT_VERSION,
        "stream": stream,
        "writer": writer_id,
        "segment": number,
        "fields": RECORD_FIELDS[stream],
    }
    return orjson.dumps(header) + b"\n"


def columns_of_records(stream: str, records: Sequence[Sequence[Any]]) -> Columns:
    """Columns of record tuples (transposed in C)."""
    fields = RECORD_FIELDS[stream]
    if not records:
        return {name: [] for name in fields}
    return dict(zip(fields, map(list, zip(*records, strict=True)), strict=True))


def record_count(columns: Columns) -> int:
    return len(columns["seq"])


def slice_columns(columns: Columns, start: int, stop: int) -> Columns:
    return {name: values[start:stop] for name, values in columns.items()}


def _special_text(value: object) -> str | None:
    if type(value) is float and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        return str(value)
    return None


def _with_special(columns: Columns) -> Columns:
    """Metrics columns whose values JSON cannot hold are null in `values`, with their
    text in the `special` column; keys as text (what JSON makes of them anyway)."""
    values: list[dict[str, Any]] = []
    special: list[dict[str, str] | None] = []
    for record in columns["values"]:
        plain: dict[str, Any] = {}
        texts: dict[str, str] = {}
        for key, value in record.items():
            name = key_text(key)
            text = _special_text(value)
            if text is None:
                plain[name] = value
            else:
                plain[name] = None
                texts[name] = text
        values.append(plain)
        special.append(texts or None)
    out = {**columns, "values": values}
    if any(special):
        out[SPECIAL] = special
    return out


def encode_lines(stream: str, columns: Columns, *, finite: bool = False) -> list[bytes]:
    """Newline-terminated JSONL lines holding a batch of records, at most
    MAX_RECORDS_PER_LINE records each: one line per flush, so a torn line costs one
    flush at most. `finite`: the caller knows every metric value is a finite float, so
    orjson needs none of its slower options (a key JSON cannot name still falls back).

    Each line as orjson made it, newline included, never joined: a copy of megabytes
    costs as much in page faults as in copying."""
    count = record_count(columns)
    if count <= MAX_RECORDS_PER_LINE:
        return [_encode_line(stream, columns, finite)]
    return [
        _encode_line(stream, slice_columns(columns, start, start + MAX_RECORDS_PER_LINE), finite)
        for start in range(0, count, MAX_RECORDS_PER_LINE)
    ]


def _encode_line(stream: str, chunk: Columns, finite: bool) -> bytes:
    options, default = (0, None) if finite else (json_options(), json_default)
    try:
        line = orjson.dumps(chunk, option=options | _NEWLINE, default=default)
    except (TypeError, orjson.JSONEncodeError):
        line = b""  # an int beyond 64 bits, a key JSON cannot name: the careful path
    if stream == METRICS and (not line or (not finite and b"null" in line)):
        # JSON writes NaN and infinities as null: keep them in the `special` column.
        return orjson.dumps(
            _with_special(chunk), option=json_options() | _NEWLINE, default=json_default
        )
    if not line:
        return orjson.dumps(chunk, option=_NEWLINE, default=json_default)  # raises: counted
    return line


@dataclass
class DecodedLines:
    """The complete lines of a live segment from some offset on."""

    #: The records of every good line, by column (metrics values restored from `special`).
    columns: Columns
    #: Offset just past the last complete line: where the next read starts.
    end: int = 0
    #: Bytes after the last newline: a line still being written, or torn by a crash.
    torn_bytes: int = 0
    header: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


def _restore_special(values: list[Any], special: list[Any]) -> str | None:
    """Put the values of a metrics line's `special` column back; a problem or None."""
    if type(special) is not list or len(special) != len(values):
        return "its special column does not match its records"
    for index, texts in enumerate(special):
        if texts is None:
            continue
        if type(texts) is not dict:
            return "its special column holds a value that is not an object"
        restored = dict(values[index])
        for key, text in texts.items():
            if text in _NONFINITE:
                restored[key] = _NONFINITE[text]
            else:
                try:
                    restored[key] = int(text)
                except (TypeError, ValueError):
                    return f"its special column holds {text!r}, not a number"
        values[index] = restored
    return None


#: The fields a line of each stream may hold.
_LINE_FIELDS: Final = {
    stream: frozenset(fields) | ({SPECIAL} if stream == METRICS else set())
    for stream, fields in RECORD_FIELDS.items()
}


def _line_problem(stream: str, line: dict[str, Any]) -> str | None:
    """Why a parsed line is not a batch of `stream` records, or None if it is."""
    fields = RECORD_FIELDS[stream]
    seqs = line.get("seq")
    if type(seqs) is not list:
        return f"not a line of {stream} records"
    if not line.keys() <= _LINE_FIELDS[stream]:
        extra = sorted(line.keys() - _LINE_FIELDS[stream])
        return f"not a line of {stream} records (unknown field {extra[0]!r})"
    for name in fields:
        column = line.get(name)
        if type(column) is not list or len(column) != len(seqs):
            return f"not a line of {stream} records (field {name!r} missing or of another length)"
    if stream == METRICS:
        if not all(type(v) is dict for v in line["values"]):
            return "not a line of metrics records (a values entry is not an object)"
        if SPECIAL in line:
            return _restore_special(line["values"], line[SPECIAL])
    return None


def decode_lines(
    stream: str,
    data: bytes,
    *,
    start: int = 0,
    where: str = "",
    columns: Columns | None = None,
) -> DecodedLines:
    """Records of the complete lines in `data[start:]`.

    An unterminated last line is left for a later read (never reported); a complete line
    that is not valid is reported in `problems` with its offset and skipped.
    `columns`: append the records to these (a reader decoding many segments to convert
    them at once) instead of new ones.
    """
    fields = RECORD_FIELDS[stream]
    if columns is None:
        columns = {name: [] for name in fields}
    result = DecodedLines(columns=columns, end=start)
    last_newline = data.rfind(b"\n", start)
    if last_newline < 0:
        result.torn_bytes = len(data) - start
        return result
    result.end = last_newline + 1
    result.torn_bytes = len(data) - result.end
    offset = start
    for line in data[start:last_newline].split(b"\n"):
        line_offset = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        try:
            parsed = _loads(line)
        except ValueError as exc:  # orjson's and json's JSONDecodeError
            result.problems.append(f"{where} byte {line_offset}: not valid JSON ({exc}); skipped")
            continue
        if type(parsed) is dict and "runstore" in parsed:
            problem = _check_header(stream, parsed)
            if problem:
                result.problems.append(f"{where} byte {line_offset}: {problem}")
            else:
                result.header = parsed
            continue
        problem = (
            f"not a line of {stream} records"
            if type(parsed) is not dict
            else _line_problem(stream, parsed)
        )
        if problem:
            result.problems.append(f"{where} byte {line_offset}: {problem}; skipped")
            continue
        for name in fields:
            result.columns[name].extend(parsed[name])
    return result


def _loads(line: bytes) -> Any:
    """A line parsed, ints beyond 64 bits exactly (in an event's data: orjson would read
    them as floats). The common line has none and goes to orjson."""
    if _LONG_DIGITS in line.translate(_DIGITS_TO_ZERO):
        return json.loads(line)
    return orjson.loads(line)


def _check_header(stream: str, header: dict[str, Any]) -> str | None:
    if header.get("stream") != stream:
        return f"not a {stream} segment header"
    try:
        check_format_version(header.get("runstore"), "segment header")
    except RunstoreError as exc:
        return str(exc)
    return None


#: Calls whose keys are compared at once in `uniform_keys`.
_KEY_CHECK_SLICE: Final = 1024


def uniform_keys(values: Sequence[dict[Any, Any]]) -> list[str] | None:
    """The keys of the first record if every record has exactly those string keys, in
    that order (the usual training loop); else None."""
    if not values:
        return None
    keys = list(values[0])
    if not keys or not all(type(key) is str for key in keys):
        return None
    step = _KEY_CHECK_SLICE  # compared in C a slice at a time: a list the size of the
    expected = keys * step  # batch would be fresh memory (page faults)
    for start in range(0, len(values), step):
        chunk = values[start : start + step]
        if len(chunk) < step:
            expected = keys * len(chunk)
        if list(itertools.chain.from_iterable(chunk)) != expected:
            return None
    return keys
