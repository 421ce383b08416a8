"""Settlement report comparison: a connector's CSV against what Paycast recorded."""

from __future__ import annotations

import csv
import io
import re

from domain.errors import InvalidRequest

COLUMNS = ("connector_txn_id", "amount", "currency", "status")
MAX_ROWS = 100_000
# An integer in minor units: ASCII digits only (str.isdigit also takes "¹", which int()
# refuses), at most 18 of them (a bigint, as amounts are stored).
_AMOUNT = re.compile(r"-?[0-9]{1,18}")


def parse_csv(text: str) -> list[dict]:
    """Rows of a settlement CSV (header row first, the contract (docs/api.md)).

    Raises:
      InvalidRequest: missing header columns, a bad amount, too many rows, or
        text the csv module cannot read (a lone carriage return inside a
        line, a field over its size limit).
    """
    if "\x00" in text:
        raise InvalidRequest("NUL characters are not allowed in the CSV.", param="body")
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _rows(reader)
    except csv.Error as exc:
        # The default dialect's only errors once NULs are out: a bare carriage
        # return inside a line, and a field over the csv module's size limit.
        why = "a carriage return inside a line (end lines with \\n or \\r\\n)" if "new-line" in str(exc) else str(exc)
        raise InvalidRequest(f"Line {reader.line_num + 1}: the CSV cannot be read: {why}.", param="body") from None


def _rows(reader: csv.DictReader) -> list[dict]:
    if reader.fieldnames is None or any(c not in reader.fieldnames for c in COLUMNS):
        raise InvalidRequest(f"The CSV must start with a header row: {','.join(COLUMNS)}.", param="body")
    rows = []
    for line, row in enumerate(reader, start=2):
        if len(rows) >= MAX_ROWS:
            raise InvalidRequest(f"At most {MAX_ROWS} rows per report.", param="body")
        txn = (row.get("connector_txn_id") or "").strip()
        amount = (row.get("amount") or "").strip()
        if not txn or not _AMOUNT.fullmatch(amount):
            raise InvalidRequest(f"Line {line}: connector_txn_id and an integer amount are required.", param="body")
        rows.append({"connector_txn_id": txn, "amount": int(amount),
                     "currency": (row.get("currency") or "").strip().upper(),
                     "status": (row.get("status") or "").strip().lower()})
    return rows


def compare(report: list[dict], ours: dict[str, dict]) -> dict:
    """Match report rows with our attempts by ``connector_txn_id``.

    Args:
      ours: txn id → ``{"amount", "currency", "status"}`` for this connector.

    Returns:
      ``matched`` (count), ``mismatched`` (rows with the differing fields),
      ``missing_in_paycast`` and ``missing_in_report`` (txn ids).
    """
    matched = 0
    mismatched = []
    seen = set()
    missing_in_paycast = []
    for row in report:
        txn = row["connector_txn_id"]
        seen.add(txn)
        mine = ours.get(txn)
        if mine is None:
            missing_in_paycast.append(txn)
            continue
        fields = [f for f in ("amount", "currency", "status") if row[f] != mine[f]]
        if fields:
            mismatched.append({"connector_txn_id": txn, "fields": fields,
                               "paycast": {f: mine[f] for f in fields}, "report": {f: row[f] for f in fields}})
        else:
            matched += 1
    missing_in_report = sorted(t for t, mine in ours.items() if t not in seen and mine["status"] == "succeeded")
    return {"matched": matched, "mismatched": mismatched, "missing_in_paycast": missing_in_paycast,
            "missing_in_report": missing_in_report}
