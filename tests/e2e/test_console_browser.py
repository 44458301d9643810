"""The console in a real browser: Debian's chromium (headless, driven by Playwright) at
1366×768 opens the console of a running Qiji — `qiji run` on its embedded default, with the
city's report told by `qiji demo` — signs in with a token, and holds what the pages show
against the gRPC answers for the same token: the overview, an area's figures, the drill-down
city → district → street, "as of" a moment beside today's view, the three rates, a report's
and a rider's audit trail, and the CSV and XLSX exports, downloaded and opened. No page may
log a JavaScript error. Screenshots of the main pages go to build/screenshots/console-*.png."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from qiji.governance.v1 import governance_service_pb2 as gpb
from qiji.governance.v1 import governance_service_pb2_grpc as gpb_grpc
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as ipb_grpc
from qiji.statistics.v1 import statistics_service_pb2 as spb
from qiji.statistics.v1 import statistics_service_pb2_grpc as spb_grpc

from shared.auth import add_caller
from shared.config import port_from_base
from shared.tools.cli import wait_http_ready
from shared.values import CITY_TIME
from tests.conftest import missing_server
from tests.e2e.conftest import REPO, ToldQiji

pytestmark = pytest.mark.e2e

SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = Path(os.environ.get("QIJI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--lang=zh-CN",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
# The date inputs read as the city reads them (2026/07/01, 年/月/日) only when chromium's own
# locale is zh-CN: on Linux it takes it from LANGUAGE (not --lang, nor the context's locale,
# which sets navigator.language and Intl only), and only if its zh-CN pack is installed.
CHROMIUM_LOCALES = Path(os.environ.get("QIJI_CHROMIUM_LOCALES", "/usr/lib/chromium/locales"))
CHROMIUM_ENV = {**os.environ, "LANGUAGE": "zh_CN"}
VIEWPORT = {"width": 1366, "height": 768}
START_TIMEOUT = 120.0
CATCH_UP_TIMEOUT = 60.0


@dataclass
class Running:
    """A Qiji with the demo's city in it, and how to reach it."""

    console: str
    addresses: dict[str, str]
    token: str
    tokens_file: Path
    before_demo: datetime
    channels: dict[str, grpc.Channel]

    def stub(self, service: str, stub: Any) -> Any:
        if service not in self.channels:
            self.channels[service] = grpc.insecure_channel(self.addresses[service])
        return stub(self.channels[service])

    @property
    def statistics(self) -> Any:
        return self.stub("statistics", spb_grpc.StatisticsServiceStub)

    @property
    def identity(self) -> Any:
        return self.stub("identity", ipb_grpc.IdentityServiceStub)

    @property
    def governance(self) -> Any:
        return self.stub("governance", gpb_grpc.GovernanceServiceStub)

    def md(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token or self.token}"),)


def _stamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def _caught_up(qiji: Running) -> bool:
    positions = qiji.statistics.GetFreshness(spb.GetFreshnessRequest(), metadata=qiji.md(),
                                             timeout=5).positions
    return len(positions) == 5 and all(
        p.last_position and p.position >= p.last_position for p in positions)


@pytest.fixture(scope="module")
def qiji(told_qiji: ToldQiji) -> Iterator[Running]:
    """The told Qiji the demo's tests use too (`qiji run` on its embedded default, the city's
    report told once by `qiji demo`), once its console is ready and its figures have caught up
    with the story."""
    base, data_dir = told_qiji.port_base, told_qiji.data_dir
    console = f"http://127.0.0.1:{port_from_base(base, 'console')}"
    if not wait_http_ready(f"{console}/readyz", told_qiji.proc, START_TIMEOUT):
        log = (data_dir / "qiji.log").read_text(errors="replace")
        pytest.fail(f"the console did not come up with `qiji run`:\n{log[-6000:]}")
    told = told_qiji.first
    assert told.returncode == 0, told.stdout[-3000:] + told.stderr[-3000:]
    addresses = {name: f"127.0.0.1:{port_from_base(base, name)}"
                 for name in ("identity", "governance", "statistics")}
    running = Running(console, addresses, (data_dir / "admin.token").read_text().strip(),
                      data_dir / "tokens.json", told_qiji.before_demo, {})
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    while not _caught_up(running):
        assert time.monotonic() < deadline, "the figures did not catch up with the demo"
        time.sleep(0.5)
    try:
        yield running
    finally:
        for channel in running.channels.values():
            channel.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing_server(f"no chromium at {CHROMIUM} (apt-get install chromium "
                       "fonts-wqy-microhei)")
    if not (CHROMIUM_LOCALES / "zh-CN.pak").exists():
        missing_server(f"chromium has no zh-CN locale in {CHROMIUM_LOCALES}: its date inputs "
                       "would read mm/dd/yyyy (apt-get install chromium-l10n)")
    from playwright.sync_api import sync_playwright
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS,
                                     env=CHROMIUM_ENV)
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """One browser tab of the console, signed in, that records every JavaScript error."""

    def __init__(self, browser: Any, qiji: Running, token: str):
        self.context = browser.new_context(viewport=VIEWPORT, locale="zh-CN",
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"{m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.base = qiji.console
        self.page.goto(f"{self.base}/")
        assert "/signin" in self.page.url
        self.page.fill("input[name=token]", token)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state("networkidle")
        assert "/signin" not in self.page.url, self.page.content()[-2000:]

    def open(self, path: str) -> Any:
        self.page.goto(f"{self.base}{path}")
        return self.settled()

    def settled(self) -> Any:
        self.page.wait_for_load_state("networkidle")
        for chart in self.page.query_selector_all(".chart"):
            assert chart.get_attribute("data-drawn") == "true", "a chart was not drawn"
        # Readable at 1366×768: nothing wider than the screen.
        assert self.page.evaluate("document.documentElement.scrollWidth") <= VIEWPORT["width"]
        return self.page

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)

    def shown(self, selector: str = "[data-measure][data-value]") -> dict[tuple[str, ...], str]:
        """(measure, dimension, key, period) -> the value the page shows."""
        found = {}
        for cell in self.page.query_selector_all(selector):
            key = tuple(cell.get_attribute(a) or "" for a in (
                "data-measure", "data-dimension", "data-key", "data-period"))
            found[key] = cell.get_attribute("data-value") or ""
            assert cell.inner_text().strip() == found[key]
        return found

    def forgive_status(self, status: int) -> None:
        """The browser logs a page answered with an error status (the 403 page asked for) as
        a failed load: that one is expected, and is no JavaScript error."""
        logged = f"the server responded with a status of {status}"
        found = [e for e in self.errors if logged in e]
        assert len(found) == 1, self.errors
        self.errors.remove(found[0])

    def close(self) -> None:
        errors = list(self.errors)
        self.context.close()
        assert errors == [], errors


@pytest.fixture()
def admin(browser: Any, qiji: Running) -> Iterator[Page]:
    page = Page(browser, qiji, qiji.token)
    yield page
    page.close()


def figures(qiji: Running, measure: str, dimension: str, granularity: str, start: datetime,
            end: datetime, *, within: str = "", as_of: datetime | None = None,
            token: str | None = None) -> dict[tuple[str, str], Any]:
    """(key, period label) -> the gRPC answer's figure."""
    reply = qiji.statistics.QueryFigures(spb.QueryFiguresRequest(
        measure=measure, dimension=spb.Dimension.Value(f"DIMENSION_{dimension}"),
        granularity=spb.Granularity.Value(f"GRANULARITY_{granularity}"),
        start_time=_stamp(start), end_time=_stamp(end), within_organisation_id=within,
        page_size=5000, **({"as_of_time": _stamp(as_of)} if as_of else {})),
        metadata=qiji.md(token), timeout=10)
    return {(f.key, f.period_label): f for f in reply.figures}


def midnight(day: date) -> datetime:
    return datetime.combine(day, day_time(), CITY_TIME)


def this_month() -> tuple[date, date, date]:
    today = datetime.now(CITY_TIME).date()
    month = today.replace(day=1)
    previous = (month - timedelta(days=1)).replace(day=1)
    following = (month + timedelta(days=32)).replace(day=1)
    return previous, month, following


def org_named(qiji: Running, kind: str, name: str) -> str:
    reply = qiji.identity.ListOrganisations(ipb.ListOrganisationsRequest(
        kind=ipb.OrganisationKind.Value(f"ORGANISATION_KIND_{kind}"), page_size=500),
        metadata=qiji.md(), timeout=10)
    return next(o.organisation_id for o in reply.organisations if o.name == name)


def test_the_overview_shows_the_figures_the_api_answers(admin: Page, qiji: Running) -> None:
    page = admin.open("/")
    admin.shot("overview")
    previous, month, following = this_month()
    shown = admin.shown()
    measures = qiji.statistics.ListMeasures(spb.ListMeasuresRequest(), metadata=qiji.md(),
                                            timeout=10).measures
    assert len(shown) == 2 * len(measures)
    for m in measures:
        answered = figures(qiji, m.name, "CITY", "MONTH", midnight(previous),
                           midnight(following))
        for label in (f"{previous:%Y-%m}", f"{month:%Y-%m}"):
            figure = answered.get(("", label))
            assert Decimal(shown[(m.name, "CITY", "", label)]) == \
                Decimal(figure.value if figure else "0"), (m.name, label)
    # The demo's city is in the figures: its four riders passed pre-job training.
    assert any(Decimal(v) > 0 for (name, *_), v in shown.items() if name.startswith("riders"))
    assert "骑手" in page.inner_text("nav.areas") and "数据更新" in page.inner_text("footer")


def explained(qiji: Running, page: Any) -> None:
    """The selected measure is explained as the service explains it to officials, in Chinese."""
    selected = page.get_attribute("[data-selected]", "data-selected")
    measures = qiji.statistics.ListMeasures(spb.ListMeasuresRequest(), metadata=qiji.md(),
                                            timeout=10).measures
    measure = next(m for m in measures if m.name == selected)
    assert re.search(r"[\u4e00-\u9fff]", measure.explanation)
    assert page.inner_text("[data-selected] .explanation").strip() == measure.explanation
    shown = [page.inner_text("body"), *(t.get_attribute("title") or ""
                                        for t in page.query_selector_all("[title]"))]
    assert not any(measure.description in text for text in shown)


def test_an_area_drills_down_from_the_city_to_the_street(admin: Page, qiji: Running) -> None:
    page = admin.open("/areas/training?g=month")
    admin.shot("training")
    explained(qiji, page)
    zhonglou = org_named(qiji, "DISTRICT", "钟楼区")
    hehuachi = org_named(qiji, "STREET", "荷花池街道")
    selected = page.get_attribute("[data-selected]", "data-selected")
    first = page.input_value("input[name=from]")
    last = page.input_value("input[name=to]")
    start = midnight(date.fromisoformat(first))
    end = midnight(date.fromisoformat(last) + timedelta(days=1))
    whole = f"{first}/{(date.fromisoformat(last) + timedelta(days=1)).isoformat()}"

    by_district = figures(qiji, selected, "DISTRICT", "WHOLE_RANGE", start, end)
    shown = admin.shown()
    for (key, label), figure in by_district.items():
        assert shown[(selected, "DISTRICT", key, label)] == figure.value
    assert (selected, "DISTRICT", zhonglou, whole) in shown

    page.click(f"a.drill[data-org='{zhonglou}']")
    admin.settled()
    assert "钟楼区" in page.inner_text("nav.crumbs")
    by_street = figures(qiji, selected, "STREET", "WHOLE_RANGE", start, end, within=zhonglou)
    shown = admin.shown()
    assert by_street and all(shown[(selected, "STREET", key, label)] == f.value
                             for (key, label), f in by_street.items())
    admin.shot("training-zhonglou")

    page.click(f"a.drill[data-org='{hehuachi}']")
    admin.settled()
    assert page.inner_text("nav.crumbs").split("›")[-1].strip() == "荷花池街道"
    series = figures(qiji, selected, "CITY", "MONTH", start, end, within=hehuachi)
    shown = admin.shown()
    for (key, label), figure in series.items():
        assert shown[(selected, "CITY", key, label)] == figure.value
    admin.shot("training-hehuachi")


def test_as_of_a_moment_before_the_demo_shows_the_difference_to_today(
        admin: Page, qiji: Running) -> None:
    then = qiji.before_demo.astimezone(CITY_TIME).replace(second=0, microsecond=0)
    page = admin.open(f"/areas/riders?g=month&as_of={then:%Y-%m-%dT%H:%M}")
    admin.shot("riders-as-of")
    assert then.strftime("%Y-%m-%d %H:%M") in page.inner_text(".asof")
    first = page.input_value("input[name=from]")
    last = page.input_value("input[name=to]")
    selected = page.get_attribute("[data-selected]", "data-selected")
    answered = figures(qiji, selected, "CITY", "MONTH", midnight(date.fromisoformat(first)),
                       midnight(date.fromisoformat(last) + timedelta(days=1)), as_of=then)
    rows = page.query_selector_all("table.figures[data-dimension='CITY'] tbody tr")
    seen = 0
    for row in rows:
        cell = row.query_selector("td[data-value]")
        figure = answered.get(("", cell.get_attribute("data-period")))
        if figure is None:
            continue
        seen += 1
        assert cell.get_attribute("data-value") == figure.value
        assert row.query_selector("td.now").inner_text() == figure.current_value
    this = f"{datetime.now(CITY_TIME):%Y-%m}"
    assert seen and Decimal(answered[("", this)].current_value) > Decimal(
        answered[("", this)].value)  # the demo's riders came after that moment


def test_the_three_rates_are_governances_answers(admin: Page, qiji: Running) -> None:
    page = admin.open("/areas/governance?g=month")
    admin.shot("governance")
    explained(qiji, page)
    zhonglou = org_named(qiji, "DISTRICT", "钟楼区")
    first = page.input_value("input[name=from]")
    last = page.input_value("input[name=to]")
    rates = qiji.governance.GetServiceRates(gpb.GetServiceRatesRequest(
        district_id=zhonglou, start_time=_stamp(midnight(date.fromisoformat(first))),
        end_time=_stamp(midnight(date.fromisoformat(last) + timedelta(days=1)))),
        metadata=qiji.md(), timeout=10).service_rates
    row = page.query_selector(f"table.rates tr[data-unit='{zhonglou}']")
    assert row.query_selector("[data-rate=assignments]").inner_text() == str(rates.assignments)
    for rate in ("response", "resolution", "satisfaction"):
        assert row.query_selector(f"[data-rate={rate}]").get_attribute("data-percent") == \
            getattr(rates, f"{rate}_rate").percent
    assert rates.assignments > 0  # the demo's emergency report


def exported_rows(rows: list[list[str]]) -> set[tuple[str, str, str, Decimal]]:
    """(measure label, period, place, value) of each figure row of a file: 指标, 单位, 期间,
    期间开始, 期间结束, <the dimension>, 数值."""
    return {(r[0], r[2], r[5], Decimal(r[6])) for r in rows if len(r) >= 7 and r[6]}


def test_the_exports_download_and_open_with_the_api_figures(
        admin: Page, qiji: Running, tmp_path: Path) -> None:
    page = admin.open("/areas/care?g=month")
    first = page.input_value("input[name=from]")
    last = page.input_value("input[name=to]")
    start = midnight(date.fromisoformat(first))
    end = midnight(date.fromisoformat(last) + timedelta(days=1))
    care = [m for m in qiji.statistics.ListMeasures(
        spb.ListMeasuresRequest(), metadata=qiji.md(), timeout=10).measures
        if m.service == "merchants" and ("care" in m.name or "礼包" in m.label)]
    expected = {(m.label, f.period_label, f.key_label, Decimal(f.value))
                for m in care for f in figures(qiji, m.name, "DISTRICT", "MONTH", start,
                                               end).values()}
    assert expected, "the demo handed out care packages"

    with page.expect_download() as csv_download:
        page.click(".exports a:text('CSV')")
    saved = tmp_path / csv_download.value.suggested_filename
    csv_download.value.save_as(saved)
    raw = saved.read_bytes()
    assert saved.suffix == ".csv"
    assert raw.startswith(b"\xef\xbb\xbf")  # a BOM: spreadsheet programs read the headers
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows[0][:3] == ["指标", "单位", "期间"] and rows[0][5] == "区"
    assert expected <= exported_rows(rows[1:])

    with page.expect_download() as xlsx_download:
        page.click(".exports a:text('Excel')")
    book_path = tmp_path / xlsx_download.value.suggested_filename
    xlsx_download.value.save_as(book_path)
    assert book_path.suffix == ".xlsx"
    import openpyxl
    book = openpyxl.load_workbook(book_path, read_only=True)
    # The figures' sheet first (a second one, 说明, says how they stand).
    cells = [["" if c is None else str(c) for c in row]
             for row in book.worksheets[0].iter_rows(values_only=True)]
    book.close()
    assert cells[0][:3] == ["指标", "单位", "期间"]
    assert expected <= exported_rows(cells[1:])


def test_a_reports_and_a_riders_audit_trail_as_the_services_answer(
        admin: Page, qiji: Running) -> None:
    report = qiji.governance.ListReports(gpb.ListReportsRequest(page_size=10),
                                         metadata=qiji.md(), timeout=10).reports[0]
    history = qiji.governance.GetReportHistory(gpb.GetReportHistoryRequest(
        report_id=report.report_id), metadata=qiji.md(), timeout=10).entries
    page = admin.open("/audit")
    page.select_option("select[name=kind]", "report")
    page.fill("input[name=id]", report.report_id)
    page.click("form.picker button[type=submit]")
    admin.settled()
    admin.shot("audit-report")
    rows = page.query_selector_all("table.history tbody tr")
    assert [r.query_selector("code").inner_text() for r in rows] == \
        [x.event_type for x in history]

    rider = qiji.identity.ListRiders(ipb.ListRidersRequest(page_size=1), metadata=qiji.md(),
                                     timeout=10).riders[0]
    page = admin.open(f"/audit?kind=rider&id={rider.rider_id}")
    admin.shot("audit-rider")
    facts = page.inner_text("dl.facts")
    assert rider.phone in facts and rider.name in facts
    assert "Rider.Registered" in page.inner_text("table.history")


def test_a_street_office_sees_its_street_and_is_told_when_it_asks_beyond(
        browser: Any, qiji: Running) -> None:
    hehuachi = org_named(qiji, "STREET", "荷花池街道")
    token = add_caller(qiji.tokens_file, "e2e-console-street", ["street_office"], hehuachi)
    time.sleep(1.5)  # the services read the tokens file again when it changes
    street = Page(browser, qiji, token)
    try:
        street.open("/")
        shown = street.shown()
        previous, _, following = this_month()
        for (measure, _, _, label), value in list(shown.items())[:12]:
            figure = figures(qiji, measure, "CITY", "MONTH", midnight(previous),
                             midnight(following), token=token).get(("", label))
            assert Decimal(value) == Decimal(figure.value if figure else "0"), measure
        street.shot("overview-street-office")
        zhonglou = org_named(qiji, "DISTRICT", "钟楼区")
        page = street.open(f"/areas/riders?within={zhonglou}")
        assert page.query_selector(".problem[data-status='403']") is not None
        assert "无权查看" in page.inner_text("h1")
        street.forgive_status(403)
        street.shot("permission-denied")
    finally:
        street.close()


def test_signing_out_ends_the_session(admin: Page) -> None:
    page = admin.open("/")
    page.click("form.signout button")
    admin.settled()
    assert "/signin" in page.url and "已退出登录" in page.inner_text("main")
    page.goto(f"{admin.base}/areas/riders")
    assert "/signin" in page.url
    admin.shot("signin")
    assert re.search(r"令牌", page.inner_text("main"))
