"""CDM column types this app acts on, and the date/time text their producers write. Pure.

A CDM folder declares each column's type: `dataType` in model.json (`dateTime`, `dateTimeOffset`,
`date`, ...), `dataFormat` or `dataType` in a manifest's entity definition (`DateTime`, ...). Only the
temporal ones change how a cell is read: a column declared `dateTime` feeds a date or datetime field
of ActiveCampaign without a hand-declared `inputFormat` (docs/configuration.md, "Column types").

What the producers write in such columns (their documentation and the real files in tests/corpus):
- ISO 8601 with up to 7 fractional digits and `Z` or an offset (`2022-05-05T14:58:50.4855780Z`,
  `2023-12-01T08:25:39.0000000+00:00`): Finance and operations, Synapse Link, Customer Insights;
- the US 12-hour form `6/15/2023 12:03:02 PM` (Synapse Link for Dataverse's `SinkCreatedOn` and
  `SinkModifiedOn`, and its model.json annotations), and the same without the time for a `date`.
"""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["DATE", "DATE_TIME", "DATE_TIME_OFFSET", "TEMPORAL_TYPES", "producer_moment", "temporal_type"]

DATE = "date"
DATE_TIME = "dateTime"
DATE_TIME_OFFSET = "dateTimeOffset"
TEMPORAL_TYPES = (DATE, DATE_TIME, DATE_TIME_OFFSET)

_BY_FOLDED = {t.casefold(): t for t in TEMPORAL_TYPES}
# M/d/yyyy, optionally h:mm[:ss[.fffffff]] with AM/PM (or a 24-hour H:mm[:ss]).
_US = re.compile(
    r"(?P<m>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})"
    r"(?:[ T](?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,7}))?)?(?:\s*(?P<p>[AaPp][Mm]))?)?"
)


def temporal_type(declared: object) -> str | None:
    """`date`, `dateTime` or `dateTimeOffset` for a declared CDM type in any spelling
    (`DateTime`, `datetime`, the object model's `DATE_TIME`), else None."""
    if not isinstance(declared, str):
        return None
    return _BY_FOLDED.get(declared.replace("_", "").casefold())


def producer_moment(value: str) -> datetime | None:
    """A trimmed cell of a temporal column as its producers write it, or None when it is not one."""
    try:
        return datetime.fromisoformat(value)  # 3.11: 'Z', offsets, 7 fractional digits
    except ValueError:
        pass
    match = _US.fullmatch(value)
    if match is None:
        return None
    g = match.groupdict()
    hour = int(g["H"] or 0)
    if g["p"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if g["p"][0] in "Pp" else 0)
    try:
        return datetime(
            int(g["y"]),
            int(g["m"]),
            int(g["d"]),
            hour,
            int(g["M"] or 0),
            int(g["S"] or 0),
            int((g["f"] or "0")[:6].ljust(6, "0")),
        )
    except ValueError:
        return None
