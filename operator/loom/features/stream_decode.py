"""Stream entries -> an Arrow table: the entry encoding of `loom features stream`.

Encoding: an entry is a flat hash of field -> value (what `XADD stream * user_id 42 event_time ...` writes).
Every field becomes a column named as the field; values are text (UTF-8), so every column is a string
column, except the timestamp field, which is parsed into `timestamp[us, UTC]`: RFC 3339 with `Z` or an
offset (`2026-11-01T10:00:00.250Z`, `2026-11-01T12:00:00+02:00`; fractions to nanoseconds, truncated to
microseconds) or epoch milliseconds (`1793527200250`). A field an entry lacks is null in its row. The
transform casts what it needs (`CAST(clicks AS BIGINT)`, `TRY_CAST`), as DuckDB SQL or a Python function.

Rule: an entry that cannot become a row is refused here, with a reason, before the transform sees it: no
entity key field or an empty one, no timestamp field or one that is neither form above, a value that is not
UTF-8. The caller dead-letters it. The parse is vectorized per column (pyarrow casts and regexes); Python
touches a value only to pick it out of redis-py's dicts and, rarely, to name what was wrong with it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TS_TYPE = pa.timestamp("us", tz="UTC")
_MILLIS = r"^-?[0-9]{1,15}$"

Entry = Mapping[bytes, bytes]


@dataclass
class Decoded:
    """The rows of the entries that decoded, and the reason each other entry was refused.

    `index[i]` is the position (in the entries given) of row i of `table`; `refused` maps a position to
    its one-line reason.
    """

    table: pa.Table
    index: np.ndarray[tuple[int], np.dtype[np.int64]]
    refused: dict[int, str] = field(default_factory=dict)


def decode(entries: Sequence[Entry], keys: Sequence[str], timestamp: str) -> Decoded:
    """The entries as a table: string columns in first-seen field order, the timestamp parsed."""
    n = len(entries)
    refused: dict[int, str] = {}
    raw_names = list(dict.fromkeys(itertools.chain.from_iterable(entries)))
    names = [name.decode("utf-8", "replace") for name in raw_names]
    columns: dict[str, pa.Array] = {}
    for raw, name in zip(raw_names, names, strict=True):
        values = pa.array([e.get(raw) for e in entries], pa.binary())
        columns[name] = _text(values, name, refused)
    for key in keys:
        column = columns.get(key)
        if column is None:
            _refuse_all(refused, n, f"entry has no entity key field {key}")
            continue
        _refuse(refused, pc.is_null(column), f"entry has no entity key field {key}")
        _refuse(refused, pc.equal(pc.utf8_length(column), 0), f"entry has an empty entity key {key}")
    if timestamp in columns:
        columns[timestamp] = _timestamps(columns[timestamp], timestamp, refused)
    else:
        _refuse_all(refused, n, f"entry has no timestamp field {timestamp}")
    good = np.ones(n, dtype=bool)
    good[list(refused)] = False
    table = pa.table(columns) if columns else pa.table({timestamp: pa.nulls(n, TS_TYPE)})
    if not good.all():
        table = table.filter(pa.array(good))
    return Decoded(table=table, index=np.flatnonzero(good).astype(np.int64), refused=refused)


def _text(values: pa.Array, name: str, refused: dict[int, str]) -> pa.Array:
    """Binary values as UTF-8 strings; an entry with a value that is not UTF-8 is refused (null here)."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        pass
    ok = []
    for i, value in enumerate(values.to_pylist()):
        try:
            if value is not None:
                value.decode("utf-8")
            ok.append(True)
        except UnicodeDecodeError:
            ok.append(False)
            refused.setdefault(i, f"field {name} is not UTF-8 text")
    return pc.if_else(pa.array(ok), values, pa.scalar(None, pa.binary())).cast(pa.string())


def _timestamps(text: pa.Array, name: str, refused: dict[int, str]) -> pa.Array:
    """RFC 3339 or epoch-millisecond text as timestamp[us, UTC]; other values refuse their entry."""
    is_millis = pc.fill_null(pc.match_substring_regex(text, _MILLIS), False)
    millis = pc.if_else(is_millis, text, pa.scalar(None, pa.string())).cast(pa.int64())
    from_millis = pc.multiply(millis, 1000).cast(pa.int64()).cast(TS_TYPE)
    rfc = pc.if_else(is_millis, pa.scalar(None, pa.string()), text)
    try:
        parsed = rfc.cast(pa.timestamp("ns", tz="UTC")).cast(TS_TYPE, safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = pa.array([_parse_one(v) for v in rfc.to_pylist()], TS_TYPE)
    out = pc.if_else(is_millis, from_millis, parsed)
    bad = pc.and_(pc.is_valid(text), pc.is_null(out))
    _refuse(
        refused,
        bad,
        f"field {name} is neither an RFC 3339 time with a zone (2026-11-01T10:00:00Z) nor epoch milliseconds",
    )
    _refuse(refused, pc.is_null(text), f"entry has no timestamp field {name}")
    return out


def _parse_one(value: str | None) -> datetime | None:
    """The slow path, for a column Arrow's cast refused: one value, None when it is not RFC 3339."""
    if value is None:
        return None
    text = value.strip().upper()
    head, dot, rest = text.partition(".")
    if dot:  # Python parses at most microseconds: cut the fraction, keep the zone
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def _refuse(refused: dict[int, str], mask: pa.Array, reason: str) -> None:
    for i in np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False)):
        refused.setdefault(int(i), reason)


def _refuse_all(refused: dict[int, str], n: int, reason: str) -> None:
    for i in range(n):
        refused.setdefault(i, reason)
