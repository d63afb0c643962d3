"""Synthetic source files with real data's mess and planted preferences (docs/ingest.md, "The generator").

Deterministic: the same arguments give byte-identical files (numpy PCG64 from `seed`, a fixed end
time, no clock, no hash randomization). Events are built column-wise with numpy/pyarrow and
written file by file (each file's lines are one Arrow string buffer), so 10M events take about a
minute and memory stays bounded by one file's rows. CDC and catalog files are small and use orjson.

Product ids: canonical `P00042` (`P` + 5 digits). Legacy ids follow one rule, kept in
`LEGACY_ALIASES` (the dbt seed `seeds/product_id_aliases.csv` is generated from it): every product
number n that is a multiple of 5 and at most 1000 has the legacy alias `SKU-<n>` (no zero padding).
Sources also use lower-case ids (`p00042`, `sku-40`), which the canonical rule upper-cases.
"""

from __future__ import annotations

import csv
import hashlib
import math
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

GENERATOR_END = datetime(2026, 11, 25)  # fixed, so output never depends on the clock
WINDOW_DAYS = 180
EVENTS_PER_FILE = 1_000_000
EVENTS_PER_PART = 100_000  # rows built in memory at once (bounds the generator's memory)

LEGACY_ALIAS_EVERY = 5
LEGACY_ALIAS_MAX = 1000
LEGACY_ALIASES: dict[str, str] = {
    f"SKU-{n}": f"P{n:05d}" for n in range(LEGACY_ALIAS_EVERY, LEGACY_ALIAS_MAX + 1, LEGACY_ALIAS_EVERY)
}

CATEGORIES: dict[str, tuple[tuple[str, ...], float]] = {
    # category: (nouns for product names, median price in USD)
    "running": (("Running Shoe", "Trail Shoe", "Racing Flat", "Running Sock", "Running Vest"), 95.0),
    "outerwear": (("Rain Jacket", "Down Parka", "Fleece", "Windbreaker", "Softshell"), 140.0),
    "tops": (("T-Shirt", "Polo", "Henley", "Tank Top", "Long Sleeve"), 30.0),
    "bottoms": (("Chino", "Jogger", "Short", "Legging", "Jean"), 55.0),
    "bags": (("Backpack", "Duffel", "Tote", "Sling Bag", "Hip Pack"), 70.0),
    "accessories": (("Cap", "Beanie", "Belt", "Sunglasses", "Glove"), 25.0),
    "outdoor": (("Tent", "Sleeping Bag", "Headlamp", "Camp Stove", "Trekking Pole"), 120.0),
    "fitness": (("Yoga Mat", "Kettlebell", "Resistance Band", "Foam Roller", "Jump Rope"), 35.0),
    "nutrition": (("Protein Bar", "Energy Gel", "Electrolyte Mix", "Recovery Shake", "Trail Mix"), 15.0),
    "electronics": (("GPS Watch", "Heart Rate Strap", "Earbuds", "Bike Computer", "Power Bank"), 180.0),
    "cycling": (("Bike Helmet", "Bike Light", "Cycling Jersey", "Bike Lock", "Saddle Bag"), 60.0),
    "swim": (("Swimsuit", "Goggles", "Swim Cap", "Towel", "Kickboard"), 28.0),
}
CATEGORY_NAMES = tuple(CATEGORIES)
# bought together: a product's complements come from its own category and this one
COMPLEMENT_OF = {
    "running": "nutrition",
    "outerwear": "accessories",
    "tops": "bottoms",
    "bottoms": "tops",
    "bags": "outdoor",
    "accessories": "outerwear",
    "outdoor": "bags",
    "fitness": "nutrition",
    "nutrition": "fitness",
    "electronics": "running",
    "cycling": "electronics",
    "swim": "fitness",
}
ADJECTIVES = ("Classic", "Pro", "Ultra", "Lite", "Everyday", "Alpine", "Urban", "Summit", "Breeze", "Core")
COLORS = ("Black", "Navy", "Olive", "Red", "Grey", "White", "Blue", "Sand")

# country, locale, IANA timezone, currency, UTC offset in minutes used for local timestamps
COUNTRIES = (
    ("US", "en-US", "America/New_York", "USD", -300),
    ("US", "en-US", "America/Los_Angeles", "USD", -480),
    ("GB", "en-GB", "Europe/London", "GBP", 0),
    ("DE", "de-DE", "Europe/Berlin", "EUR", 60),
    ("FR", "fr-FR", "Europe/Paris", "EUR", 60),
    ("CA", "en-CA", "America/Toronto", "CAD", -300),
    ("AU", "en-AU", "Australia/Sydney", "AUD", 660),
    ("NL", "nl-NL", "Europe/Amsterdam", "EUR", 60),
    ("ES", "es-ES", "Europe/Madrid", "EUR", 60),
)
COUNTRY_WEIGHTS = (0.28, 0.14, 0.14, 0.1, 0.08, 0.08, 0.07, 0.06, 0.05)
# approximate USD -> currency factors, consistent with seeds/currency_rates.csv
FX_FROM_USD = {"USD": 1.0, "EUR": 0.926, "GBP": 0.787, "CAD": 1.37, "AUD": 1.515}
FIRST_NAMES = (
    "Ava",
    "Liam",
    "Mia",
    "Noah",
    "Emma",
    "Lucas",
    "Sofia",
    "Leon",
    "Chloe",
    "Mateo",
    "Hannah",
    "Oliver",
    "Zoe",
    "Elias",
    "Amelia",
    "Finn",
    "Isla",
    "Hugo",
    "Lea",
    "Jack",
    "Nora",
    "Luca",
)
LAST_NAMES = (
    "Smith",
    "Garcia",
    "Muller",
    "Martin",
    "Brown",
    "Rossi",
    "Dubois",
    "Jansen",
    "Taylor",
    "Lopez",
    "Schmidt",
    "Wilson",
    "Moreau",
    "Bakker",
    "Clark",
    "Fischer",
    "Silva",
    "Young",
    "King",
    "Weber",
)

EVENT_TYPES = (
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "search",
    "email_open",
    "email_click",
    "purchase",
    "signup",
    "wishlist_add",
    "email_delivered",
    "email_bounce",
    "email_unsubscribe",
    "email_spam_report",
)
EVENT_WEIGHTS = (0.2, 0.36, 0.1, 0.025, 0.08, 0.07, 0.03, 0.03, 0.005, 0.02, 0.075, 0.002, 0.002, 0.001)
EMAIL_TYPES = np.array([EVENT_TYPES.index(t) for t in EVENT_TYPES if t.startswith("email_")])
OPEN_OR_CLICK = np.array([EVENT_TYPES.index("email_open"), EVENT_TYPES.index("email_click")])
DELIVERED = EVENT_TYPES.index("email_delivered")

# send time (DESIGN.md "Engagement and send time"): each customer has a planted local hour and a
# habit. Strong habits open and click within an hour of it 80% of the time, weak ones 40%, the
# unhabitual at random daytime hours; 15% have no email history at all. Site activity follows the
# hour more loosely. Preferred hours lean toward a country's habit (the peers' signal).
HABITS = ("strong", "weak", "none", "no_email")
HABIT_SHARES = (0.35, 0.35, 0.15, 0.15)
HABIT_NEAR = np.array([0.8, 0.4, 0.0, 0.0])  # email opens and clicks within an hour of the preferred one
HABIT_SITE_NEAR = np.array([0.5, 0.3, 0.0, 0.45])  # site activity within an hour of it
COUNTRY_HOUR = {"US": 20, "GB": 19, "DE": 7, "FR": 21, "CA": 20, "AU": 8, "NL": 7, "ES": 22}
SHARE_COUNTRY_HOUR = 0.45  # preferred hours drawn near the country's habit; the rest from the day's mixture
SHARE_EMAIL_BY_HASH = 0.3  # engagement events that carry the recipient's email hash, not the customer_id
CAMPAIGN_UTC_HOUR = 14  # when the brand sends: deliveries land then, whatever the recipient's habit
SEARCH_TERMS = (
    "running shoes",
    "rain jacket",
    "yoga mat",
    "gps watch",
    "backpack",
    "protein",
    "tent",
    "bike light",
    "goggles",
    "hoodie",
)
ORDER_STATUS_FLOW = ("placed", "paid", "shipped", "delivered")

SHARE_LATE = 0.02  # events of a file that belong to an earlier file's time slice
SHARE_DUPLICATE = 0.01  # events re-sent (same event_id, same body)
SHARE_INVALID = 0.005  # broken records, each kind of the source contract
SHARE_ANONYMOUS_VISITORS = 0.05
SHARE_LINKED = 0.35  # customers who browse anonymously before a login links them
EPOCH = np.datetime64("1970-01-01T00:00:00", "ms")


def _ms(value: datetime) -> int:
    return int((value - datetime(1970, 1, 1)).total_seconds() * 1000)


class _Catalog:
    def __init__(self, rng: np.random.Generator, products: int) -> None:
        n = products
        self.n = n
        self.number = np.arange(1, n + 1)
        self.ids = np.array([f"P{i:05d}" for i in self.number], dtype=object)
        self.category = rng.permutation(np.arange(n) % len(CATEGORY_NAMES))
        base = np.array([CATEGORIES[CATEGORY_NAMES[c]][1] for c in self.category])
        self.price_usd = np.round(base * rng.lognormal(0, 0.35, n), 0) - 0.01
        self.price_usd = np.maximum(self.price_usd, 2.99)
        self.currency = rng.choice(np.array(["USD", "EUR", "GBP"], dtype=object), n, p=[0.75, 0.15, 0.1])
        self.in_stock = rng.random(n) < 0.92
        self.name = np.array(
            [
                f"{ADJECTIVES[a]} {CATEGORIES[CATEGORY_NAMES[c]][0][k]} - {COLORS[col]}"
                for a, c, k, col in zip(
                    rng.integers(0, len(ADJECTIVES), n),
                    self.category,
                    rng.integers(0, 5, n),
                    rng.integers(0, len(COLORS), n),
                )
            ],
            dtype=object,
        )
        # popularity: Zipf-like within each category, so "popular in category" exists
        self.popularity = 1.0 / (1 + rng.permutation(n)) ** 0.6 + 1e-9
        self.by_category = [np.flatnonzero(self.category == c) for c in range(len(CATEGORY_NAMES))]
        cdf = np.zeros(n)
        order = np.concatenate(self.by_category) if n else np.array([], dtype=int)
        self.order = order
        self.offsets = np.zeros(len(CATEGORY_NAMES) + 1, dtype=int)
        for c, members in enumerate(self.by_category):
            self.offsets[c + 1] = self.offsets[c] + len(members)
            if len(members):
                w = np.cumsum(self.popularity[members])
                cdf[self.offsets[c] : self.offsets[c + 1]] = c + w / w[-1]
        self.cdf = cdf
        # complements: two from the complement category, one from the own category
        self.complements = np.zeros((n, 3), dtype=int)
        for p in range(n):
            own = self.by_category[self.category[p]]
            other = self.by_category[CATEGORY_NAMES.index(COMPLEMENT_OF[CATEGORY_NAMES[self.category[p]]])]
            pool = other if len(other) else own
            self.complements[p, :2] = pool[rng.integers(0, len(pool), 2)]
            self.complements[p, 2] = own[rng.integers(0, len(own))]

    def pick(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
        """A product index per entry of `categories`, by popularity within the category."""
        cats = categories.copy()
        empty = np.array([len(m) == 0 for m in self.by_category])
        if empty.any():  # tiny catalogs: fall back to any non-empty category
            cats[empty[cats]] = int(np.flatnonzero(~empty)[0])
        pos = np.searchsorted(self.cdf, cats + rng.random(len(cats)) * 0.999999, side="right")
        pos = np.clip(pos, self.offsets[cats], self.offsets[cats + 1] - 1)
        return self.order[pos]


class _People:
    def __init__(self, rng: np.random.Generator, customers: int, start_ms: int, end_ms: int) -> None:
        n = customers
        self.n = n
        self.ids = np.array([f"C{i:07d}" for i in range(1, n + 1)], dtype=object)
        self.ids_arrow = pa.array(self.ids, pa.large_string())
        self.country = rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS)
        self.pref1 = rng.integers(0, len(CATEGORY_NAMES), n)
        second = rng.integers(0, len(CATEGORY_NAMES), n)
        self.pref2 = np.where(rng.random(n) < 0.55, second, self.pref1)
        self.activity = rng.lognormal(0, 1.0, n)
        span = end_ms - start_ms
        # each customer is active in a sub-window: some stopped months ago (at_risk, lapsed)
        a = rng.random(n) * 0.6
        b = np.minimum(1.0, a + 0.25 + rng.random(n) * 0.75)
        self.active_from = start_ms + (a * span).astype(np.int64)
        self.active_to = start_ms + (b * span).astype(np.int64)
        self.anon = np.array([f"anon-{x:012x}" for x in rng.integers(0, 2**48, n)], dtype=object)
        self.linked = rng.random(n) < SHARE_LINKED
        self.link_at = self.active_from + ((self.active_to - self.active_from) * rng.random(n) * 0.5).astype(np.int64)
        # a shared device: a few anonymous ids are linked to two customers (earliest link wins)
        shared = np.flatnonzero(self.linked & (rng.random(n) < 0.01))
        if len(shared) > 1:
            self.anon[shared[1:]] = self.anon[shared[:-1]]
        self.in_crm = rng.random(n) < 0.98  # the rest only appear in events and orders
        self.created_ms = self.active_from - rng.integers(0, 400, n) * 86_400_000
        # send time: a preferred local hour and a habit (see HABITS)
        self.habit = rng.choice(len(HABITS), n, p=HABIT_SHARES)
        country_hour = np.array([COUNTRY_HOUR.get(COUNTRIES[c][0], 12) for c in self.country])
        near_country = (country_hour + np.rint(rng.normal(0, 1.2, n)).astype(int)) % 24
        mixture = rng.choice(24, n, p=_HOUR_MIXTURE)
        self.pref_hour = np.where(rng.random(n) < SHARE_COUNTRY_HOUR, near_country, mixture)
        # the hash of the email the CRM holds (the generator's _customer_row), as webhooks send it
        self.email_hash = np.array([_email_digest(_email(i)) for i in range(n)], dtype=object)


def _hour_mixture() -> np.ndarray:
    """When people read email, over the day: mornings, lunch and (most) evenings, little at night."""
    weights = np.full(24, 0.3)
    weights[0:6] = 0.05
    weights[[7, 8, 9]] = [2.0, 2.5, 1.5]
    weights[[12, 13]] = [1.5, 1.2]
    weights[[18, 19, 20, 21, 22]] = [1.5, 2.5, 3.0, 2.5, 1.2]
    return weights / weights.sum()


_HOUR_MIXTURE = _hour_mixture()
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _email(i: int) -> str:
    """Customer i's email as normalized downstream (the CRM row may add case and spaces)."""
    return f"{FIRST_NAMES[i % len(FIRST_NAMES)]}.{LAST_NAMES[(i * 7) % len(LAST_NAMES)]}{i + 1}@example.com".lower()


def _email_digest(email: str) -> str:
    """pipeline.store.email_hash's digest (the generator imports nothing of the pipeline)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


class _Offsets:
    """UTC offsets (ms) of the generator's timezones by the hour, daylight saving included (zoneinfo),
    so a planted local hour is the local hour the warehouse computes."""

    def __init__(self, start_ms: int, end_ms: int) -> None:
        self.base = start_ms - 3 * DAY_MS - (start_ms % HOUR_MS)
        hours = np.arange(self.base, end_ms + 3 * DAY_MS, HOUR_MS)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        self.table = np.zeros((len(COUNTRIES), len(hours)), dtype=np.int64)
        for c, (_, _, zone, _, _) in enumerate(COUNTRIES):
            tz = zoneinfo.ZoneInfo(zone)
            # offsets change at whole UTC hours in these zones: one lookup per hour is exact
            self.table[c] = [
                int((epoch + timedelta(milliseconds=int(h))).astimezone(tz).utcoffset().total_seconds()) * 1000
                for h in hours
            ]

    def at(self, country: np.ndarray, ms: np.ndarray) -> np.ndarray:
        index = np.clip((ms - self.base) // HOUR_MS, 0, self.table.shape[1] - 1)
        return self.table[country, index]

    def at_local_hour(self, country: np.ndarray, ms: np.ndarray, hour: np.ndarray, minute_ms: np.ndarray) -> np.ndarray:
        """The instant of `hour`:minute local on the local day of `ms`."""
        offset = self.at(country, ms)
        local = ms + offset
        target = local - local % DAY_MS + hour * HOUR_MS + minute_ms
        return target - self.at(country, target - offset)


def _s(values: np.ndarray | list) -> pa.Array:
    return pa.array(values, pa.large_string())


def _lit(part: pa.Array | str) -> pa.Array | pa.Scalar:
    if isinstance(part, str):
        return pa.scalar(part, pa.large_string())
    return part.cast(pa.large_string()) if part.type == pa.string() else part


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*[_lit(p) for p in parts], _lit(""))


def _opt(mask: np.ndarray, text: pa.Array) -> pa.Array:
    """`text` where mask, else ''."""
    return pc.if_else(pa.array(mask), text, _lit(""))


def _t_sep(text: pa.Array) -> pa.Array:
    return pc.replace_substring(text, " ", "T", max_replacements=1)


def _format_ts(rng: np.random.Generator, ms: np.ndarray, offsets_min: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Mixed forms: ISO Z with ms (65%), local time with offset (12%), naive UTC (10%), epoch ms (13%).
    Returns the JSON text (quoted, or bare digits for epoch ms) and whether it is a JSON number."""
    n = len(ms)
    kind = rng.choice(4, n, p=[0.65, 0.12, 0.10, 0.13])
    # casting a timestamp to text is far faster than strftime: "YYYY-MM-DD HH:MM:SS[.mmm]"
    iso_z = _join(_t_sep(pa.array(ms, pa.timestamp("ms")).cast(pa.large_string())), "Z")
    local = pa.array((ms + offsets_min.astype(np.int64) * 60_000) // 1000, pa.timestamp("s"))
    # few distinct offsets: format each once, then expand through a dictionary (no Python per row)
    uniq, inverse = np.unique(offsets_min, return_inverse=True)
    texts = [("-" if o < 0 else "+") + f"{abs(int(o)) // 60:02d}:{abs(int(o)) % 60:02d}" for o in uniq]
    suffix = pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), pa.array(texts, pa.large_string()))
    with_offset = _join(_t_sep(local.cast(pa.large_string())), suffix.cast(pa.large_string()))
    naive = pa.array(ms // 1000, pa.timestamp("s")).cast(pa.large_string())
    epoch = pa.array(ms).cast(pa.large_string())
    quoted = pc.case_when(
        pa.StructArray.from_arrays([pa.array(kind == 0), pa.array(kind == 1), pa.array(kind == 2)], ["z", "o", "n"]),
        _join('"', iso_z, '"'),
        _join('"', with_offset, '"'),
        _join('"', naive.cast(pa.large_string()), '"'),
        epoch,
    )
    return quoted, kind == 3


def _product_text(rng: np.random.Generator, catalog: _Catalog, idx: np.ndarray) -> pa.Array:
    """Product ids as sources send them: canonical, lower-case, legacy alias, legacy lower-case."""
    number = catalog.number[idx]
    canonical = catalog.ids[idx]
    r = rng.random(len(idx))
    has_alias = (number % LEGACY_ALIAS_EVERY == 0) & (number <= LEGACY_ALIAS_MAX)
    legacy = np.char.add("SKU-", number.astype(str)).astype(object)
    out = canonical.copy()
    lower = r < 0.05
    out[lower] = np.char.lower(canonical[lower].astype(str))
    use_legacy = has_alias & (r >= 0.05) & (r < 0.35)
    out[use_legacy] = legacy[use_legacy]
    legacy_lower = use_legacy & (r >= 0.30)
    out[legacy_lower] = np.char.lower(legacy[legacy_lower].astype(str))
    return _s(out)


def _cents_text(cents: np.ndarray) -> pa.Array:
    whole = pa.array(cents // 100).cast(pa.large_string())
    frac = pc.utf8_lpad(pa.array(cents % 100).cast(pa.large_string()), 2, "0")
    return _join(whole, ".", frac)


class _Orders:
    """Purchases collected while generating events; written as orders and order_items CDC."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, str, list[tuple[int, int, int]]]] = []


def _planted_times(
    rng: np.random.Generator,
    ms: np.ndarray,
    who: np.ndarray,
    known: np.ndarray,
    etype: np.ndarray,
    people: _People,
    offsets: _Offsets,
    window: tuple[int, int],
) -> np.ndarray:
    """Event times moved, within their local day, to the customer's habits (see HABITS): opens and
    clicks near the preferred hour with the habit's probability, else at a random daytime hour;
    site activity likewise, more loosely; deliveries at the campaign hour. Anonymous visitors keep
    their times. An instant pushed out of the data's window moves a day back in."""
    n = len(ms)
    if not people.n or not n:
        return ms
    w = np.where(known, who, 0)
    habit, pref, country = people.habit[w], people.pref_hour[w], people.country[w]
    engagement = known & np.isin(etype, OPEN_OR_CLICK)
    site = known & ~np.isin(etype, EMAIL_TYPES)
    draw = rng.random(n)
    near = np.where(engagement, draw < HABIT_NEAR[habit], draw < HABIT_SITE_NEAR[habit])
    jitter = rng.choice(np.array([-1, 0, 0, 0, 1]), n)
    hour = np.where(near, (pref + jitter) % 24, rng.integers(7, 24, n))
    minute_ms = rng.integers(0, HOUR_MS, n)
    moved = offsets.at_local_hour(country, ms, hour, minute_ms)
    campaign = ms - ms % DAY_MS + CAMPAIGN_UTC_HOUR * HOUR_MS + minute_ms // 3
    out = np.where(engagement | site, moved, ms)
    out = np.where(known & (etype == DELIVERED), campaign, out)
    start, end = window
    out = np.where(out >= end, out - DAY_MS, out)
    return np.where(out < start, out + DAY_MS, out)


def _events_file(
    rng: np.random.Generator,
    lo: int,
    hi: int,
    count: int,
    catalog: _Catalog,
    people: _People,
    late_from: int,
    orders: _Orders,
    next_id: int,
    offsets: _Offsets | None = None,
    window: tuple[int, int] = (0, 0),
) -> tuple[dict[str, pa.Array], int]:
    """Columns of events in the time slice [lo, hi), plus late events from [late_from, lo)."""
    ms = rng.integers(lo, hi, count)
    late = (rng.random(count) < SHARE_LATE) & (late_from < lo)
    ms[late] = rng.integers(late_from, lo, int(late.sum())) if late_from < lo else ms[late]
    ms.sort(kind="stable")

    # who: known customers active at that time, weighted by activity; some anonymous visitors
    who = np.full(count, -1)
    visitor = rng.random(count) < SHARE_ANONYMOUS_VISITORS
    if people.n:
        active = (people.active_from <= hi) & (people.active_to >= lo)
        weights = people.activity * np.where(active, 1.0, 0.02)
        cdf = np.cumsum(weights)
        who = np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right").clip(0, people.n - 1)
        who[visitor] = -1
    known = who >= 0
    w = np.where(known, who, 0)

    etype = rng.choice(len(EVENT_TYPES), count, p=EVENT_WEIGHTS)
    etype[
        ~known
        & np.isin(etype, [EVENT_TYPES.index(t) for t in ("purchase", "signup", "add_to_cart", "remove_from_cart")])
    ] = 0
    # email goes to known customers only, and never to those planted without an email history
    no_email = ~known | (people.habit[w] == HABITS.index("no_email") if people.n else True)
    etype[no_email & np.isin(etype, EMAIL_TYPES)] = 0
    if offsets is not None:
        ms = _planted_times(rng, ms, who, known, etype, people, offsets, window)
        order = np.argsort(ms, kind="stable")
        ms, who, visitor, known, w, etype = ms[order], who[order], visitor[order], known[order], w[order], etype[order]
    is_email = known & np.isin(etype, EMAIL_TYPES)

    # product: mostly from the customer's preferred categories
    pref = np.where(rng.random(count) < 0.5, people.pref1[w] if people.n else 0, people.pref2[w] if people.n else 0)
    random_cat = rng.integers(0, len(CATEGORY_NAMES), count)
    strength = np.where(np.isin(etype, [2, 7]), 0.88, 0.75)
    category = np.where(known & (rng.random(count) < strength), pref, random_cat)
    product = catalog.pick(rng, category)
    has_product = np.isin(etype, [1, 2, 3, 7]) | ((etype == 0) & (rng.random(count) < 0.3))

    # identity: linked customers browse anonymously before their login
    anon_only = known & people.linked[w] & (ms < people.link_at[w]) if people.n else np.zeros(count, bool)
    both = known & ~anon_only & people.linked[w] & (rng.random(count) < 0.2) if people.n else np.zeros(count, bool)
    pool = np.array([f"anon-v{next_id:08x}{x:05x}" for x in range(max(1, count // 20))], dtype=object)
    visitor_anon = pool[rng.integers(0, len(pool), count)]
    customer_text = people.ids_arrow.take(pa.array(w))
    anon_text = pc.if_else(
        pa.array(known), pa.array(people.anon, pa.large_string()).take(pa.array(w)), _s(visitor_anon)
    )
    # the email platform knows the recipient: a customer_id in its custom args, or only the address
    by_hash = is_email & (rng.random(count) < SHARE_EMAIL_BY_HASH) & (people.in_crm[w] if people.n else False)
    show_customer = known & (~anon_only | is_email) & ~by_hash
    show_anon = (~known | anon_only | both) & ~is_email

    offsets = np.array([COUNTRIES[c][4] for c in (people.country[w] if people.n else np.zeros(count, int))])
    ts, _ = _format_ts(rng, ms, offsets)

    ids = pa.array(np.arange(next_id, next_id + count)).cast(pa.large_string())
    event_id = _join("ev-", pc.utf8_lpad(ids, 10, "0"))

    # purchases are orders: the product, often a complement, sometimes another preferred product
    purchase_rows = np.flatnonzero((etype == 7) & known)
    order_ids = np.empty(count, dtype=object)
    order_ids[:] = ""
    base_order = len(orders.rows)
    for k, i in enumerate(purchase_rows):
        order_id = f"O{base_order + k + 1:08d}"
        order_ids[i] = order_id
        items = [(int(product[i]), 1 + int(rng.random() < 0.15), 0)]
        if rng.random() < 0.55:
            items.append((int(catalog.complements[product[i], rng.integers(0, 2)]), 1, 0))
        if rng.random() < 0.15:
            items.append((int(catalog.complements[product[i], 2]), 1, 0))
        orders.rows.append((order_id, str(people.ids[w[i]]), int(ms[i]), COUNTRIES[people.country[w[i]]][3], items))

    price_cents = np.rint(catalog.price_usd[product] * 100).astype(np.int64)
    props = pc.case_when(
        pa.StructArray.from_arrays(
            [pa.array(etype == 7), pa.array(has_product), pa.array(etype == 4), pa.array(np.isin(etype, EMAIL_TYPES))],
            ["buy", "prod", "search", "email"],
        ),
        _join('{"order_id":"', _s(order_ids), '","value":', _cents_text(price_cents), ',"currency":"USD"}'),
        _join(
            '{"price":',
            _cents_text(price_cents),
            ',"currency":"USD","url":"https://shop.example.com/p/',
            _s(catalog.ids[product]),
            '"}',
        ),
        _join('{"query":"', _s(np.array(SEARCH_TERMS, dtype=object)[rng.integers(0, len(SEARCH_TERMS), count)]), '"}'),
        _join('{"campaign_id":"cmp-', pa.array(rng.integers(100, 140, count)).cast(pa.large_string()), '"}'),
        _join('{"url":"https://shop.example.com/', _s(np.array(CATEGORY_NAMES, dtype=object)[category]), '"}'),
    )
    type_text = np.array(EVENT_TYPES, dtype=object)[etype]
    messy_type = rng.random(count) < 0.005
    type_text[messy_type] = np.char.add(" ", np.char.title(type_text[messy_type].astype(str)))
    columns = {
        "event_id": event_id,
        "event_type": _s(type_text),
        "occurred_at": ts,
        "customer_id": pc.if_else(pa.array(show_customer), customer_text, pa.scalar(None, pa.large_string())),
        "anonymous_id": pc.if_else(pa.array(show_anon), anon_text, pa.scalar(None, pa.large_string())),
        "product_id": pc.if_else(
            pa.array(has_product), _product_text(rng, catalog, product), pa.scalar(None, pa.large_string())
        ),
        "properties": props,
        "email_hash": pc.if_else(
            pa.array(by_hash),
            pa.array(people.email_hash if people.n else [""], pa.large_string()).take(pa.array(w)),
            pa.scalar(None, pa.large_string()),
        ),
    }
    # the login that links an anonymous id: one per linked customer, in the slice of its time
    if people.n:
        link = np.flatnonzero(
            people.linked & (people.link_at >= lo) & (people.link_at < hi) & (people.active_to > people.active_from)
        )
        if len(link):
            n = len(link)
            lts, _ = _format_ts(rng, people.link_at[link], np.array([COUNTRIES[c][4] for c in people.country[link]]))
            lid = pa.array(np.arange(next_id + count, next_id + count + n)).cast(pa.large_string())
            login = {
                "event_id": _join("ev-", pc.utf8_lpad(lid, 10, "0")),
                "event_type": _s(["login"] * n),
                "occurred_at": lts,
                "customer_id": _s(people.ids[link]),
                "anonymous_id": _s(people.anon[link]),
                "product_id": pa.nulls(n, pa.large_string()),
                "properties": _s(['{"method":"password"}'] * n),
                "email_hash": pa.nulls(n, pa.large_string()),
            }
            columns = {k: pa.concat_arrays([columns[k], login[k]]) for k in columns}
            count += n
    return columns, next_id + count


def _event_lines(columns: dict[str, pa.Array]) -> pa.Array:
    """One JSON object text per event (no trailing newline); absent fields are omitted."""

    def opt(name: str) -> pa.Array:
        col = columns[name]
        return pc.if_else(pc.is_valid(col), _join(f',"{name}":"', pc.fill_null(col, _lit("")), '"'), _lit(""))

    return _join(
        '{"event_id":"',
        columns["event_id"],
        '","event_type":"',
        columns["event_type"],
        '","occurred_at":',
        columns["occurred_at"],
        opt("customer_id"),
        opt("anonymous_id"),
        opt("product_id"),
        opt("email_hash"),
        ',"properties":',
        columns["properties"],
        "}",
    )


_INVALID_EVENT_LINES = (
    '{"event_id":"ev-bad-{n}","event_type":"page_view","occurred_at":"2026-10-0',  # truncated line
    '{"event_type":"page_view","occurred_at":"2026-10-01T10:00:00Z","customer_id":"C0000001"}',
    '{"event_id":"ev-bad-{n}","event_type":"page_view","occurred_at":"yesterday","customer_id":"C0000001"}',
    '{"event_id":"ev-bad-{n}","event_type":"page_view","occurred_at":"2026-13-45T99:00:00Z","anonymous_id":"anon-x"}',
    '{"event_id":"ev-bad-{n}","event_type":"product_view","occurred_at":"2026-10-01T10:00:00Z","customer_id":"C0000002"}',
    '{"event_id":"ev-bad-{n}","event_type":"page_view","occurred_at":"2026-10-01T10:00:00Z"}',
    '{"event_id":{n},"event_type":"page_view","occurred_at":"2026-10-01T10:00:00Z","customer_id":"C0000003"}',
    '["not", "an", "object"]',
)


def _mess(rng: np.random.Generator, lines: pa.Array, tag: int, previous: pa.Array | None) -> pa.Array:
    """Re-sent duplicates (within the file and from the previous one) and a few invalid lines."""
    n = len(lines)
    dup = rng.choice(n, int(n * SHARE_DUPLICATE), replace=False) if n else np.array([], int)
    parts = [lines]
    if len(dup):
        parts.append(lines.take(pa.array(np.sort(dup))))
    if previous is not None and len(previous):
        k = max(1, int(len(previous) * SHARE_DUPLICATE / 2))
        parts.append(previous.take(pa.array(np.sort(rng.choice(len(previous), k, replace=False)))))
    bad_n = max(1, int(n * SHARE_INVALID)) if n else 0
    kinds = rng.integers(0, len(_INVALID_EVENT_LINES), bad_n)
    parts.append(_s([_INVALID_EVENT_LINES[k].replace("{n}", str(tag + i)) for i, k in enumerate(kinds)]))
    merged = pa.concat_arrays(parts)
    # extras are spread through the file, not appended as a block
    order = np.argsort(np.concatenate([np.arange(n), rng.integers(0, max(n, 1), len(merged) - n)]), kind="stable")
    return merged.take(pa.array(order))


def _write_lines(fh: BinaryIO, lines: pa.Array) -> None:
    """The lines' Arrow data buffer plus newlines is the file: no Python per line."""
    text = _join(lines, "\n").cast(pa.large_string())
    if len(text):
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
        fh.write(memoryview(text.buffers()[2])[offsets[0] : offsets[-1]])


CSV_COLUMNS = (
    "event_id",
    "event_type",
    "occurred_at",
    "customer_id",
    "anonymous_id",
    "product_id",
    "properties",
    "email_hash",
)


def _events_csv_table(columns: dict[str, pa.Array], rng: np.random.Generator) -> pa.Table:
    # CSV cells are text: strip the JSON quotes of string timestamps (epoch ms stay digits)
    ts_text = pc.replace_substring(columns["occurred_at"], '"', "")
    n = len(ts_text)
    bad = rng.random(n) < SHARE_INVALID
    kind = rng.integers(0, 3, n)
    event_id = pc.if_else(pa.array(bad & (kind == 0)), _lit(""), columns["event_id"])  # missing required field
    ts_text = pc.if_else(pa.array(bad & (kind == 1)), _lit("not a time"), ts_text)  # unparseable timestamp
    customer = pc.if_else(pa.array(bad & (kind == 2)), pa.scalar(None, pa.large_string()), columns["customer_id"])
    anon = pc.if_else(pa.array(bad & (kind == 2)), pa.scalar(None, pa.large_string()), columns["anonymous_id"])
    table = pa.table(
        [
            event_id,
            columns["event_type"],
            ts_text,
            customer,
            anon,
            columns["product_id"],
            columns["properties"],
            columns["email_hash"],
        ],
        names=list(CSV_COLUMNS),
    )
    dup = np.sort(rng.choice(n, int(n * SHARE_DUPLICATE), replace=False)) if n else np.array([], int)
    table = pa.concat_tables([table, table.take(pa.array(dup, pa.int64()))])
    order = np.argsort(np.concatenate([np.arange(n), rng.integers(0, max(n, 1), len(dup))]), kind="stable")
    return table.take(pa.array(order))


class _Sink:
    """Writes JSON lines in buffered batches; `bad` lines go in at given row positions."""

    def __init__(self, path: Path, bad: list[tuple[int, str]] | None = None) -> None:
        self.fh = open(path, "wb")
        self.buf: list[bytes] = []
        self.count = 0
        self.bad = sorted(bad or [])

    def add(self, row: dict) -> None:
        while self.bad and self.bad[0][0] <= self.count:
            self.buf.append(self.bad.pop(0)[1].encode() + b"\n")
        self.buf.append(orjson.dumps(row) + b"\n")
        self.count += 1
        if len(self.buf) >= 20_000:
            self.fh.write(b"".join(self.buf))
            self.buf.clear()

    def close(self) -> None:
        self.buf.extend(text.encode() + b"\n" for _, text in self.bad)
        self.fh.write(b"".join(self.buf))
        self.fh.close()


def _customer_row(people: _People, rng: np.random.Generator, i: int, updated_ms: int) -> dict:
    country, locale, tz, _, _ = COUNTRIES[people.country[i]]
    first, last = FIRST_NAMES[i % len(FIRST_NAMES)], LAST_NAMES[(i * 7) % len(LAST_NAMES)]
    email = f"{first}.{last}{i + 1}@example.com"  # _email(i), normalized
    if rng.random() < 0.1:  # mixed case and stray spaces: normalized downstream
        email = f"  {email.upper()} "
    return {
        "customer_id": str(people.ids[i]),
        "email": email,
        "first_name": first,
        "last_name": last,
        "country": country.lower() if rng.random() < 0.05 else country,
        "locale": locale,
        "timezone": tz,
        "marketing_consent": bool(rng.random() < 0.7),
        "created_at": _iso(int(people.created_ms[i])),
        "updated_at": _iso(updated_ms),
    }


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"


def _customers_cdc(
    rng: np.random.Generator, people: _People, start_ms: int, end_ms: int, first: _Sink, second: _Sink
) -> None:
    """Snapshot + creates (file 1); updates, out-of-order updates, lsn ties, deletes (file 2)."""
    lsn = 1_000
    states: dict[int, dict] = {}
    for i in np.flatnonzero(people.in_crm):
        i = int(i)
        row = _customer_row(people, rng, i, int(max(people.created_ms[i], start_ms - 86_400_000)))
        states[i] = row
        lsn += 1
        if people.created_ms[i] < start_ms:
            first.add({"op": "r", "ts_ms": start_ms, "before": None, "after": row, "source": {"lsn": lsn}})
        else:
            first.add(
                {"op": "c", "ts_ms": int(people.created_ms[i]), "before": None, "after": row, "source": {"lsn": lsn}}
            )
    keys = sorted(states)
    for i in keys:
        r = rng.random()
        if r < 0.2:  # a plain update
            ts = int(rng.integers(start_ms, end_ms))
            new = dict(states[i], marketing_consent=not states[i]["marketing_consent"], updated_at=_iso(ts))
            lsn += 1
            second.add({"op": "u", "ts_ms": ts, "before": states[i], "after": new, "source": {"lsn": lsn}})
            states[i] = new
        elif r < 0.23:  # two updates arriving in reverse order: the greater ts_ms must win
            t1 = int(rng.integers(start_ms, end_ms - 10_000))
            a = dict(states[i], locale="en-US", updated_at=_iso(t1))
            b = dict(states[i], locale="en-GB", updated_at=_iso(t1 + 5_000))
            second.add({"op": "u", "ts_ms": t1 + 5_000, "before": a, "after": b, "source": {"lsn": lsn + 2}})
            second.add({"op": "u", "ts_ms": t1, "before": states[i], "after": a, "source": {"lsn": lsn + 1}})
            lsn += 2
            states[i] = b
        elif r < 0.24:  # same ts_ms twice: the greater source.lsn wins, although it comes first
            t1 = int(rng.integers(start_ms, end_ms))
            a = dict(states[i], first_name=states[i]["first_name"] + " ", updated_at=_iso(t1))
            b = dict(states[i], timezone="Europe/Dublin", updated_at=_iso(t1))
            second.add({"op": "u", "ts_ms": t1, "before": states[i], "after": b, "source": {"lsn": lsn + 2}})
            second.add({"op": "u", "ts_ms": t1, "before": states[i], "after": a, "source": {"lsn": lsn + 1}})
            lsn += 2
            states[i] = b
        elif r < 0.25:  # deleted in the CRM: must disappear from profiles
            ts = int(rng.integers(end_ms - 20 * 86_400_000, end_ms))
            lsn += 1
            second.add({"op": "d", "ts_ms": ts, "before": states[i], "after": None, "source": {"lsn": lsn}})
        elif r < 0.26:  # a new email: engagement sent to the old address no longer finds the customer
            ts = int(rng.integers(start_ms, end_ms))
            new = dict(states[i], email=states[i]["email"].strip().replace("@", ".new@"), updated_at=_iso(ts))
            lsn += 1
            second.add({"op": "u", "ts_ms": ts, "before": states[i], "after": new, "source": {"lsn": lsn}})
            states[i] = new


def _orders_cdc(
    rng: np.random.Generator, orders: _Orders, catalog: _Catalog, end_ms: int, first: _Sink, second: _Sink, items: _Sink
) -> None:
    """Orders (creates, then status updates in a second file) and their items."""
    lsn = 5_000_000
    day = 86_400_000
    for order_id, customer_id, created, currency, lines in sorted(orders.rows, key=lambda r: r[2]):
        fx = FX_FROM_USD[currency]
        total = 0.0
        for k, (p, qty, _) in enumerate(lines, start=1):
            unit = round(float(catalog.price_usd[p]) * fx, 2)
            total += unit * qty
            number = int(catalog.number[p])
            pid = str(catalog.ids[p])
            if number % LEGACY_ALIAS_EVERY == 0 and number <= LEGACY_ALIAS_MAX and rng.random() < 0.3:
                pid = f"SKU-{number}"
            elif rng.random() < 0.05:
                pid = pid.lower()
            lsn += 1
            items.add(
                {
                    "op": "c",
                    "ts_ms": created,
                    "before": None,
                    "source": {"lsn": lsn},
                    "after": {
                        "order_item_id": f"{order_id}-{k}",
                        "order_id": order_id,
                        "product_id": pid,
                        "quantity": qty,
                        "unit_price": unit,
                    },
                }
            )
        row = {
            "order_id": order_id,
            "customer_id": customer_id,
            "status": "placed",
            "currency": currency,
            "total_amount": round(total, 2),
            "created_at": _iso(created),
            "updated_at": _iso(created),
        }
        lsn += 1
        first.add({"op": "c", "ts_ms": created, "before": None, "after": row, "source": {"lsn": lsn}})
        r = rng.random()
        flow = ["paid", "shipped", "delivered"]
        if r < 0.05:
            flow = ["cancelled"]
        elif r < 0.08:
            flow = ["paid", "shipped", "delivered", "refunded"]
        ts = created
        prev = row
        for step, status in enumerate(flow):
            ts = ts + int(rng.integers(10 * 60_000, 3 * day)) if step else ts + int(rng.integers(60_000, 3_600_000))
            if ts >= end_ms:
                break
            new = dict(prev, status=status, updated_at=_iso(ts))
            lsn += 1
            change = {"op": "u", "ts_ms": ts, "before": prev, "after": new, "source": {"lsn": lsn}}
            (first if step == 0 else second).add(change)
            prev = new


_BAD_CUSTOMERS = (
    '{"op":"c","ts_ms":1767225600000,"after":{"customer_id":"C0000001","email":',
    '{"op":"x","ts_ms":1767225600000,"after":{"customer_id":"C0000001"}}',
    '{"op":"u","after":{"customer_id":"C0000001"}}',
    '{"op":"u","ts_ms":1767225600000,"after":{"customer_id":"C0000001","created_at":"31/12/2025"}}',
    '{"op":"u","ts_ms":1767225600000,"after":{"email":"someone@example.com"}}',
    '{"op":"d","ts_ms":1767225600000,"before":null}',
)
_BAD_ORDERS = (
    '{"op":"u","ts_ms":"soon","after":{"order_id":"O00000001"}}',
    '{"op":"u","ts_ms":1767225600000,"after":{"order_id":"O00000001","status":"lost"}}',
    '{"op":"u","ts_ms":1767225600000,"after":{"order_id":"O00000001","total_amount":"a lot"}}',
)
_BAD_ITEMS = ('{"op":"c","ts_ms":1767225600000,"after":{"order_item_id":"x-1","quantity":"two"}}',)


def _bad_rows(rng: np.random.Generator, kinds: tuple[str, ...], size: int) -> list[tuple[int, str]]:
    """About SHARE_INVALID of `size` rows, at least one of each kind, at random positions."""
    n = max(len(kinds), int(size * SHARE_INVALID))
    return [(int(rng.integers(0, max(size, 1))), kinds[i % len(kinds)]) for i in range(n)]


def _catalog_files(out: Path, rng: np.random.Generator, catalog: _Catalog) -> list[Path]:
    path = out / "products.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["product_id", "name", "category", "price", "currency", "url", "image_url", "in_stock"])
        for p in range(catalog.n):
            pid = str(catalog.ids[p])
            cur = str(catalog.currency[p])
            w.writerow(
                [
                    pid.lower() if rng.random() < 0.02 else pid,
                    catalog.name[p],
                    CATEGORY_NAMES[catalog.category[p]],
                    f"{catalog.price_usd[p] * FX_FROM_USD[cur]:.2f}",
                    cur,
                    f"https://shop.example.com/p/{pid.lower()}",
                    f"https://cdn.example.com/img/{pid}.jpg",
                    "true" if catalog.in_stock[p] else "false",
                ]
            )
        w.writerow(["", "Nameless", "tops", "10.00", "USD", "", "", "true"])  # missing product_id
        w.writerow(["P99999", "Broken Price", "tops", "ten", "USD", "", "", "yes"])
    update = out / "products-0002.jsonl"
    rows = []
    for p in np.flatnonzero(rng.random(catalog.n) < 0.05):
        cur = str(catalog.currency[p])
        rows.append(
            {
                "product_id": str(catalog.ids[p]),
                "name": str(catalog.name[p]),
                "category": CATEGORY_NAMES[catalog.category[p]],
                "price": round(float(catalog.price_usd[p]) * FX_FROM_USD[cur] * 0.9, 2),
                "currency": cur,
                "url": f"https://shop.example.com/p/{str(catalog.ids[p]).lower()}",
                "image_url": f"https://cdn.example.com/img/{catalog.ids[p]}.jpg",
                "in_stock": not bool(catalog.in_stock[p]),
            }
        )
    sink = _Sink(update)
    for row in rows:
        sink.add(row)
    sink.close()
    return [path, update]


def write_legacy_aliases(path: Path) -> Path:
    """`LEGACY_ALIASES` as `alias,product_id` CSV: the generator's copy, and the dbt seed's source
    (`python -c "from pipeline.generate import write_legacy_aliases as w; w('seeds/product_id_aliases.csv')"`)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["alias", "product_id"])
        w.writerows(sorted(LEGACY_ALIASES.items(), key=lambda kv: kv[1]))
    return Path(path)


def generate(
    out_dir: Path,
    *,
    customers: int,
    events: int,
    products: int,
    seed: int,
    events_format: str = "jsonl",
    end: datetime = GENERATOR_END,
) -> dict[str, list[Path]]:
    """Write source files under `out_dir`; returns source -> files in ingestion order."""
    if events_format not in ("jsonl", "csv"):
        raise ValueError(f"events_format must be jsonl or csv, not {events_format!r}")
    if customers < 1 or products < 1 or events < 0:
        raise ValueError("need at least one customer and one product")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    end_ms = _ms(end)
    start_ms = end_ms - WINDOW_DAYS * 86_400_000
    catalog = _Catalog(rng, products)
    people = _People(rng, customers, start_ms, end_ms)
    orders = _Orders()
    offsets = _Offsets(start_ms, end_ms)

    files = max(3, math.ceil(events / EVENTS_PER_FILE)) if events else 0
    event_paths: list[Path] = []
    previous: pa.Array | None = None
    next_id = 1
    span = (end_ms - start_ms) / files if files else 0
    for f in range(files):
        count = events // files + (1 if f < events % files else 0)
        lo = start_ms + int(f * span)
        parts = max(1, math.ceil(count / EVENTS_PER_PART))  # bounded memory: a file is written in parts
        path = out / f"events-{f + 1:04d}.{events_format}"
        with open(path, "wb") as fh:
            writer = None
            for j in range(parts):
                n = count // parts + (1 if j < count % parts else 0)
                a, b = lo + int(j * span / parts), lo + int((j + 1) * span / parts)
                columns, next_id = _events_file(
                    rng, a, b, n, catalog, people, start_ms if f else a, orders, next_id, offsets, (start_ms, end_ms)
                )
                if events_format == "csv":
                    table = _events_csv_table(columns, rng)
                    if writer is None:
                        writer = pacsv.CSVWriter(fh, table.schema)
                    writer.write_table(table)
                else:
                    lines = _event_lines(columns)
                    _write_lines(fh, _mess(rng, lines, next_id, previous))
                    previous = lines
            if writer is not None:
                writer.close()
        event_paths.append(path)

    paths = {
        "customers": [out / "customers-0001.jsonl", out / "customers-0002.jsonl"],
        "orders": [out / "orders-0001.jsonl", out / "orders-0002.jsonl"],
        "order_items": [out / "order_items-0001.jsonl"],
    }
    # invalid changes (~0.5%) at random positions of the CDC files
    n_crm = int(people.in_crm.sum())
    sinks = [
        _Sink(p, _bad_rows(rng, bad, size))
        for p, bad, size in zip(
            paths["customers"] + paths["orders"] + paths["order_items"],
            (_BAD_CUSTOMERS[:1], _BAD_CUSTOMERS[1:], _BAD_ORDERS[:1], _BAD_ORDERS[1:], _BAD_ITEMS),
            (n_crm, n_crm // 4, len(orders.rows) * 2, len(orders.rows) * 2, len(orders.rows)),
        )
    ]
    _customers_cdc(rng, people, start_ms, end_ms, sinks[0], sinks[1])
    _orders_cdc(rng, orders, catalog, end_ms, sinks[2], sinks[3], sinks[4])
    for sink in sinks:
        sink.close()
    product_paths = _catalog_files(out, rng, catalog)
    write_legacy_aliases(out / "product_id_aliases.csv")
    return {
        "products": product_paths,
        "customers": paths["customers"],
        "orders": paths["orders"],
        "order_items": paths["order_items"],
        "events": event_paths,
    }
