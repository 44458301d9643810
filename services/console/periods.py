"""The period picker: what a page's query string asks for (granularity, first and last day,
"as of" moment, drill-down organisation), read and checked in the city's time (CST). Bad
input is a `BadPeriod` naming the field and saying what is wrong, in Chinese, for the page."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from shared.values import CITY_TIME

GRANULARITIES = {"day": "DAY", "week": "WEEK", "month": "MONTH"}
GRANULARITY_LABELS = {"day": "按日", "week": "按周", "month": "按月"}
# What the console asks for at most; the API refuses longer ranges with RANGE_TOO_LONG too.
MAX_DAYS = {"day": 366, "week": 5 * 366, "month": 5 * 366}
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?")
_MONTH = re.compile(r"[0-9]{4}-[0-9]{2}")


class BadPeriod(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Period:
    """A range of whole days [first, last] in the city's time, cut by `granularity`."""

    granularity: str  # day, week, month
    first: date
    last: date
    as_of: datetime | None
    within: str

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), CITY_TIME)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), CITY_TIME)

    @property
    def api_granularity(self) -> str:
        return GRANULARITIES[self.granularity]

    def labels(self) -> list[str]:
        """Every period's label in the range, as the API writes them ("2026-03-05",
        "2026-W10", "2026-03"): a period without facts has no figure in the answer, and is
        shown as 0."""
        found = []
        if self.granularity == "month":
            at = month_start(self.first)
            while at <= self.last:
                found.append(f"{at:%Y-%m}")
                at = add_months(at, 1)
        elif self.granularity == "week":
            at = self.first - timedelta(days=self.first.weekday())
            while at <= self.last:
                year, week, _ = at.isocalendar()
                found.append(f"{year}-W{week:02d}")
                at += timedelta(days=7)
        else:
            at = self.first
            while at <= self.last:
                found.append(at.isoformat())
                at += timedelta(days=1)
        return found

    def query(self, **changes: str) -> dict[str, str]:
        """The query string of this period (with `changes`), for links that keep it."""
        values = {"g": self.granularity, "from": self.first.isoformat(),
                  "to": self.last.isoformat(),
                  "as_of": self.as_of.astimezone(CITY_TIME).strftime("%Y-%m-%dT%H:%M")
                  if self.as_of else "", "within": self.within}
        values.update(changes)
        return {k: v for k, v in values.items() if v}


def today(now: datetime) -> date:
    return now.astimezone(CITY_TIME).date()


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _day(params: Mapping[str, str], name: str, label: str) -> date | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    if not _DAY.fullmatch(raw):
        raise BadPeriod(name, f"{label}应写作 年-月-日（如 2026-03-01），收到 {raw[:40]!r}")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadPeriod(name, f"{label} {raw} 不是日历上的一天") from None


def as_of_moment(params: Mapping[str, str], now: datetime) -> datetime | None:
    raw = params.get("as_of", "").strip()
    if not raw:
        return None
    if not _MOMENT.fullmatch(raw):
        raise BadPeriod("as_of", "“截至”时刻应写作 年-月-日 时:分（如 2026-04-01T00:00），"
                        f"收到 {raw[:40]!r}")
    try:
        at = datetime.fromisoformat(raw.replace(" ", "T")).replace(tzinfo=CITY_TIME)
    except ValueError:
        raise BadPeriod("as_of", f"“截至”时刻 {raw} 不存在") from None
    if at > now:
        raise BadPeriod("as_of", "“截至”时刻不能在将来：数据只能回看已经记录下的样子")
    return at


def within_of(params: Mapping[str, str]) -> str:
    raw = params.get("within", "").strip()
    if not raw:
        return ""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadPeriod("within", f"机构标识应为 UUID，收到 {raw[:40]!r}") from None


def period_from(params: Mapping[str, str], now: datetime) -> Period:
    """The period a page's query string asks for; defaults: by month, the last six months."""
    granularity = params.get("g", "month").strip() or "month"
    if granularity not in GRANULARITIES:
        raise BadPeriod("g", "粒度只能是 日、周、月（day、week、month），"
                        f"收到 {granularity[:20]!r}")
    last = _day(params, "to", "结束日期") or today(now)
    first = _day(params, "from", "开始日期") or {
        "day": last - timedelta(days=29),
        "week": last - timedelta(days=7 * 12 - 1),
        "month": add_months(month_start(last), -5)}[granularity]
    if first > last:
        raise BadPeriod("from", f"开始日期 {first} 晚于结束日期 {last}")
    if (last - first).days + 1 > MAX_DAYS[granularity]:
        raise BadPeriod("to", f"{GRANULARITY_LABELS[granularity]}最多查看 "
                        f"{MAX_DAYS[granularity]} 天，所选为 {(last - first).days + 1} 天")
    return Period(granularity, first, last, as_of_moment(params, now), within_of(params))


def month_of(params: Mapping[str, str], now: datetime) -> date:
    """The overview's month (`month=2026-03`), this month by default."""
    raw = params.get("month", "").strip()
    if not raw:
        return month_start(today(now))
    if not _MONTH.fullmatch(raw) or not 1 <= int(raw[5:]) <= 12:
        raise BadPeriod("month", f"月份应写作 年-月（如 2026-03），收到 {raw[:20]!r}")
    return date(int(raw[:4]), int(raw[5:]), 1)
