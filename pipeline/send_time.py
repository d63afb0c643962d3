"""When to send: the next instant at a customer's best local hour (DESIGN.md "Engagement and send time").

The warehouse learns `best_send_hour`, an hour of the day in the customer's IANA timezone (UTC when
the CRM's timezone is missing or not an IANA name: models/intermediate/int_customer_hours_weighted);
`GET /api/v1/customers/{id}/send-time` turns it into an instant with `next_send_at`, the daylight
saving rules coming from the zone itself (zoneinfo).

Which names count as a timezone is one list, `seeds/iana_timezones.csv`, read here and by the dbt
models, so the API and the warehouse always agree on the hour's frame. It is written from the IANA
database that Python's zoneinfo reads (`python -m pipeline.send_time seeds/iana_timezones.csv`);
tests/test_send_time.py checks it against zoneinfo and DuckDB's ICU. No heavy import here: the API
process imports this module.
"""

from __future__ import annotations

import csv
import sys
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path

UTC_NAME = "UTC"
ZONE_SEED = Path(__file__).resolve().parents[1] / "seeds" / "iana_timezones.csv"
# names zoneinfo lists that are files of the database, not zones a CRM would hold
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@lru_cache(maxsize=1)
def known_zones() -> frozenset[str]:
    """The IANA names sendtime treats as timezones: the seed's, else the ones zoneinfo lists."""
    try:
        with open(ZONE_SEED, newline="") as fh:
            return frozenset(row["zone"] for row in csv.DictReader(fh))
    except OSError:
        return frozenset(zoneinfo.available_timezones() - NOT_ZONES)


def zone_of(name: str | None) -> tuple[str, zoneinfo.ZoneInfo]:
    """(name, zone) of a profile's timezone; ('UTC', UTC) when it is missing or unknown, exactly as
    the warehouse decides (the comparison is exact: 'europe/paris' is not a zone)."""
    if name and name in known_zones():
        try:
            return name, zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass  # listed but not installed on this host: the same fallback as an unknown name
    return UTC_NAME, zoneinfo.ZoneInfo(UTC_NAME)


def local_start(day: date, hour: int, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant at which `hour`:00 begins on `day` in `zone`.

    A wall-clock time the zone skips (clocks go forward) resolves, with fold=0, through the offset
    in force before the jump: the instant the clocks jump, e.g. 02:00 on the US spring-forward day
    is 07:00 UTC (03:00 EDT). A time that happens twice (clocks go back) is its first occurrence.
    """
    return datetime.combine(day, time(hour), tzinfo=zone).astimezone(UTC)


def next_send_at(after: datetime, local_hour: int, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first start of `local_hour` in `zone` strictly after `after` (aware, or naive UTC), in UTC."""
    if not 0 <= local_hour <= 23:
        raise ValueError(f"local_hour must be 0-23, not {local_hour}")
    if after.tzinfo is None:
        after = after.replace(tzinfo=UTC)
    today = after.astimezone(zone).date()
    for offset in range(-1, 3):  # a day either side covers every offset and DST jump
        candidate = local_start(today + timedelta(days=offset), local_hour, zone)
        if candidate > after:
            return candidate
    raise AssertionError("unreachable: a local hour occurs every day")  # pragma: no cover


def write_zone_seed(path: Path) -> int:
    """Write the timezone seed from the IANA database zoneinfo reads; returns the number of zones."""
    zones = sorted(zoneinfo.available_timezones() - NOT_ZONES)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["zone"])
        writer.writerows([z] for z in zones)
    return len(zones)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ZONE_SEED
    print(f"{write_zone_seed(target)} zones written to {target}")
