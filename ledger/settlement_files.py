"""Settlement files for a cleared day: one CSV per merchant, a summary CSV and a summary JSON.

Layout: ``<directory>/<YYYY-MM-DD>/merchant-<MID>.csv``, ``summary.csv``,
``summary.json``. Every file is written atomically (temporary file, fsync,
rename), and its content depends only on the stored clearing figures, so a
re-run rewrites byte-identical files. The summary JSON carries the SHA-256 of
every other file; the summary CSV carries each merchant file's.

>>> merchant_csv({"merchant_id": "M1", "net_minor": 5})
'field,value\\nmerchant_id,M1\\nnet_minor,5\\n'
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from ledger import clearing

MERCHANT_FIELDS = (
    "business_date", "merchant_id", "program", "currency_asset",
    "issue_count", "points_issued", "issue_price_minor", "issued_minor",
    "redeem_count", "points_redeemed", "redeem_value_minor", "redeemed_minor",
    "load_count", "sv_loaded_minor", "spend_count", "sv_spent_minor",
    "void_count", "refund_count", "reversal_count", "fees_minor", "net_minor", "journal_id",
)
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class WrittenFile:
    """A file written for the day, with its SHA-256."""

    path: Path
    sha256: str


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256.

    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, fsync, rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def merchant_csv(row: dict[str, Any]) -> str:
    """One merchant's settlement as ``field,value`` lines (stable order)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["field", "value"])
    for name in MERCHANT_FIELDS:
        if name in row:
            w.writerow([name, "" if row[name] is None else row[name]])
    return out.getvalue()


def merchant_file_name(merchant_id: str) -> str:
    """A file name for a merchant id (ids are already safe; this keeps it so).

    >>> merchant_file_name("M0001")
    'merchant-M0001.csv'
    """
    return f"merchant-{_SAFE.sub('_', merchant_id)}.csv"


async def write_day(conn: asyncpg.Connection | asyncpg.Pool, day: dt.date, directory: Path) -> list[WrittenFile]:
    """Write the day's settlement files; returns every file written (summary JSON last)."""
    rows = await clearing.figures(conn, day)
    if not rows and not await clearing.is_cleared(conn, day):
        raise clearing.ClearingError(f"business day {day} is not cleared")
    mx = await clearing.matrix(conn, day)
    when = await clearing.cleared_at(conn, day)
    target = directory / day.isoformat()
    written: list[WrittenFile] = []
    summary_rows: list[list[Any]] = []
    for r in rows:
        data = merchant_csv(r).encode()
        path = target / merchant_file_name(r["merchant_id"])
        write_atomically(path, data)
        digest = sha256_hex(data)
        written.append(WrittenFile(path, digest))
        summary_rows.append([r.get(f) for f in MERCHANT_FIELDS] + [path.name, digest])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*MERCHANT_FIELDS, "file", "sha256"])
    for sr in summary_rows:
        w.writerow(["" if v is None else v for v in sr])
    summary_csv = out.getvalue().encode()
    csv_path = target / "summary.csv"
    write_atomically(csv_path, summary_csv)
    written.append(WrittenFile(csv_path, sha256_hex(summary_csv)))
    totals: dict[str, dict[str, int]] = {}
    for r in rows:
        t = totals.setdefault(r["currency_asset"], {"merchants": 0, "net_minor": 0, "pay_minor": 0,
                                                    "collect_minor": 0, "fees_minor": 0})
        t["merchants"] += 1
        t["net_minor"] += int(r["net_minor"])
        t["pay_minor"] += max(int(r["net_minor"]), 0)
        t["collect_minor"] += max(-int(r["net_minor"]), 0)
        t["fees_minor"] += int(r["fees_minor"])
    doc = {
        "business_date": day.isoformat(),
        "cleared_at": when.isoformat() if when else None,
        "totals": totals,
        "merchants": [{f: r.get(f) for f in MERCHANT_FIELDS} for r in rows],
        "alliance_matrix": mx,
        # The operator's exchange desk per program (specs/ACCOUNTING.md, "Exchange between programs").
        "exchange_desk": await clearing.exchange_figures(conn, day),
        "files": {f.path.name: f.sha256 for f in written},
    }
    data = (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()
    json_path = target / "summary.json"
    write_atomically(json_path, data)
    written.append(WrittenFile(json_path, sha256_hex(data)))
    return written


SUMMARY_BYTES_MAX = 64 * 1024 * 1024


def read_summary(directory: Path, day: dt.date) -> dict[str, Any] | None:
    """The day's summary.json as written by write_day; None when the day has no files."""
    path = directory / day.isoformat() / "summary.json"
    try:
        if path.stat().st_size > SUMMARY_BYTES_MAX:
            return None
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def day_file(directory: Path, day: dt.date, merchant_id: str | None) -> tuple[str, bytes] | None:
    """A settlement file of the day, found through its summary, never through a caller's path:
    the merchant's CSV (``merchant_id``) or, for None, summary.csv. Its content must match the
    SHA-256 the summary recorded; returns (file name, content) or None."""
    summary = read_summary(directory, day)
    if summary is None:
        return None
    if merchant_id is None:
        name = "summary.csv"
    else:
        known = {m.get("merchant_id") for m in summary.get("merchants", []) if isinstance(m, dict)}
        if merchant_id not in known:
            return None
        name = merchant_file_name(merchant_id)
    digest = summary.get("files", {}).get(name)
    try:
        data = (directory / day.isoformat() / name).read_bytes()
    except OSError:
        return None
    return (name, data) if digest == sha256_hex(data) else None


def summary_json(directory: Path, day: dt.date) -> bytes | None:
    """The day's summary.json as stored (it carries every other file's SHA-256, not its own)."""
    path = directory / day.isoformat() / "summary.json"
    try:
        return path.read_bytes() if path.stat().st_size <= SUMMARY_BYTES_MAX else None
    except OSError:
        return None
