"""The console's routes against a stand-in Qiji over real gRPC (tests/fake_qiji.py): signing
in and out, what a page shows of the services' answers, and every refusal as a page that says
why — a bad period, no token, an expired session, a token the services refuse, a scope that
does not reach (PERMISSION_DENIED) — never a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from services.console.app import CSP, SESSION_COOKIE, build_app
from services.console.sessions import Sessions
from services.console.source import QijiSource
from tests.fake_qiji import BEIDAJIE, HEHUACHI, REPORT, RIDER, ZHONGLOU, FakeQiji, value_of

NOW = datetime(2026, 4, 10, 4, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def qiji() -> Iterator[FakeQiji]:
    fake = FakeQiji()
    yield fake
    fake.stop()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def client(qiji: FakeQiji, tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    (tmp_path / "echarts.min.js").write_text("/* echarts stand-in */")
    source = QijiSource(qiji.addresses)
    app = build_app(source, assets_dir=tmp_path, sessions=Sessions(60, 3600, clock=clock),
                    clock=lambda: NOW)
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as test_client:
        yield test_client
    source.close()


def sign_in(client: TestClient, token: str = "city-token") -> None:
    form = client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    reply = client.post("/signin", data={"csrf": csrf.group(1), "token": token, "next": "/"})
    assert reply.status_code == 303, reply.text
    assert reply.headers["location"] == "/"


def test_without_a_session_every_page_sends_the_caller_to_sign_in(client: TestClient) -> None:
    for path in ("/", "/areas/training?g=week", "/audit", "/export?m=x&format=csv"):
        reply = client.get(path)
        assert reply.status_code == 303
        assert reply.headers["location"].startswith("/signin?next=")
    assert client.get("/signin").status_code == 200


def test_signing_in_keeps_the_token_on_the_server_behind_a_strict_cookie(
        client: TestClient) -> None:
    form = client.get("/signin")
    assert "令牌" in form.text and form.headers["content-security-policy"] == CSP
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    reply = client.post("/signin", data={"csrf": csrf, "token": "city-token", "next": "/"})
    cookie = reply.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "city-token" not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "项目总览" in page.text
    assert "city-token" not in page.text


def test_a_sign_in_without_the_forms_own_check_is_refused(client: TestClient) -> None:
    # A form posted from another site carries no check (its SameSite=Strict cookie stays home).
    reply = client.post("/signin", data={"csrf": "forged", "token": "city-token"})
    assert reply.status_code == 403
    assert "登录表单已失效" in reply.text
    assert SESSION_COOKIE not in reply.headers.get("set-cookie", "")


def test_an_unknown_token_and_a_token_without_figures_are_told_apart(
        client: TestClient) -> None:
    form = client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    unknown = client.post("/signin", data={"csrf": csrf, "token": "made-up"})
    assert unknown.status_code == 401 and "令牌无效或已停用" in unknown.text
    nobody = client.post("/signin", data={"csrf": csrf, "token": "nobody-token"})
    assert nobody.status_code == 403 and "无权查看统计数据" in nobody.text
    empty = client.post("/signin", data={"csrf": csrf, "token": "  "})
    assert empty.status_code == 400 and "请输入令牌" in empty.text


def test_an_expired_session_asks_to_sign_in_again(client: TestClient, clock: Clock) -> None:
    sign_in(client)
    assert client.get("/").status_code == 200
    clock.now += 61  # idle longer than the session may be
    reply = client.get("/areas/riders")
    assert reply.status_code == 303
    assert "why=expired" in reply.headers["location"]
    page = client.get(reply.headers["location"])
    assert "会话已过期" in page.text


def test_signing_out_needs_the_pages_own_check_and_ends_the_session(
        client: TestClient) -> None:
    sign_in(client)
    page = client.get("/")
    csrf = re.search(r'action="/signout".*?name="csrf" value="([^"]+)"', page.text, re.S)
    assert csrf
    assert client.post("/signout", data={"csrf": "forged"}).status_code == 403
    assert client.get("/").status_code == 200
    out = client.post("/signout", data={"csrf": csrf.group(1)})
    assert out.status_code == 303 and "signed-out" in out.headers["location"]
    assert client.get("/").status_code == 303


def cells(html: str) -> dict[tuple[str, str, str, str], str]:
    """(measure, dimension, key, period) -> the value a page shows."""
    found = {}
    for m in re.finditer(r'data-measure="([^"]*)" data-dimension="([^"]*)" data-key="([^"]*)" '
                         r'data-period="([^"]*)" data-value="([^"]*)"', html):
        found[m.group(1, 2, 3, 4)] = m.group(5)
    return found


def test_the_overview_shows_this_month_beside_the_last_as_the_service_answered(
        client: TestClient) -> None:
    sign_in(client)
    page = client.get("/?month=2026-03")
    assert page.status_code == 200
    shown = cells(page.text)
    for measure in ("riders_registered", "training_hours", "reports_submitted"):
        for month in ("2026-02", "2026-03"):
            assert shown[(measure, "CITY", "", month)] == value_of(measure, "CITY", month, "")
    for area in ("骑手", "四时课程", "友好商户与优惠", "关爱礼包", "爱心公益", "徽章", "基层治理"):
        assert area in page.text
    # Each area's measures sit in its own card.
    care = page.text.split('data-area="care"')[1].split("</section>")[0]
    assert "关爱礼包发放" in care and "优惠核销" not in care
    assert "数据更新" in page.text


def test_an_area_page_drills_down_from_the_city_to_a_street(
        client: TestClient, qiji: FakeQiji) -> None:
    sign_in(client)
    city = client.get("/areas/training?g=month&from=2026-01-01&to=2026-03-31")
    assert city.status_code == 200
    shown = cells(city.text)
    assert shown[("training_hours", "DISTRICT", ZHONGLOU, "2026-01-01/2026-04-01")] == \
        value_of("training_hours", "DISTRICT", "2026-01-01/2026-04-01", ZHONGLOU)
    assert shown[("training_hours", "TRACK", "SKILLS", "2026-01-01/2026-04-01")]
    assert shown[("training_hours", "CITY", "", "2026-03")]
    assert 'id="console-data"' in city.text and "/static/vendor/echarts.min.js" in city.text
    drill = re.search(r'<a href="([^"]+)" class="drill" data-org="' + ZHONGLOU, city.text)
    assert drill
    district = client.get(drill.group(1).replace("&amp;", "&"))
    assert district.status_code == 200
    assert "钟楼区" in district.text.split('class="crumbs"')[1].split("</nav>")[0]
    assert ("training_hours", "STREET", HEHUACHI, "2026-01-01/2026-04-01") in cells(district.text)
    assert qiji.statistics.asked[-1].within_organisation_id == ZHONGLOU
    street = client.get(f"/areas/training?within={HEHUACHI}")
    assert ("training_hours", "COMMUNITY", BEIDAJIE, "2026-01-01/2026-04-10") in \
        cells(street.text) or "北大街社区" in street.text


def test_a_measure_is_explained_in_chinese_not_in_the_developers_english(
        client: TestClient) -> None:
    sign_in(client)
    page = client.get("/areas/training?g=month&m=training_hours")
    assert page.status_code == 200
    assert '<html lang="zh-CN">' in page.text
    selected = page.text.split('data-selected="training_hours"')[1].split("</section>")[0]
    assert '<p class="muted explanation">培训学时的口径：测试用</p>' in selected
    # The totals' and the overview's hints too; the English definition is nowhere.
    assert 'title="培训学时的口径：测试用"' in page.text
    overview = client.get("/?month=2026-03")
    assert 'title="注册骑手的口径：测试用"' in overview.text
    assert "for the tests" not in page.text + overview.text


def test_as_of_shows_the_figure_then_beside_today_and_the_difference(
        client: TestClient) -> None:
    sign_in(client)
    page = client.get("/areas/riders?g=month&from=2026-03-01&to=2026-03-31"
                      "&as_of=2026-04-01T00:00")
    assert page.status_code == 200
    assert "今日所见" in page.text and "差额" in page.text
    assert "2026-04-01 00:00" in page.text
    assert re.search(r'class="num diff">\+2<', page.text)


def test_a_bad_period_is_a_page_saying_what_is_wrong(client: TestClient) -> None:
    sign_in(client)
    for query, words in (("g=year", "粒度"), ("from=2026-13-01", "不是日历上的一天"),
                         ("from=2026-04-01&to=2026-03-01", "晚于"),
                         ("from=03/01/2026", "年-月-日"), ("as_of=2030-01-01T00:00", "将来"),
                         ("g=day&from=2024-01-01&to=2026-03-01", "最多"),
                         ("within=not-a-uuid", "UUID")):
        reply = client.get(f"/areas/riders?{query}")
        assert reply.status_code == 400, query
        assert words in reply.text, (query, reply.text[-800:])
        assert "Traceback" not in reply.text
        assert reply.headers["content-security-policy"] == CSP
    assert client.get("/?month=2026-13").status_code == 400


def test_a_refusal_of_the_service_is_shown_with_its_field_violations(
        client: TestClient) -> None:
    sign_in(client)
    reply = client.get("/export?m=no_such_measure&format=csv&g=month")
    assert reply.status_code == 400
    assert 'data-reason="MEASURE_UNKNOWN"' in reply.text and "no_such_measure" in reply.text


def test_permission_denied_is_a_page_not_a_traceback(client: TestClient) -> None:
    sign_in(client, "street-token")
    reply = client.get(f"/areas/riders?within={ZHONGLOU}")
    assert reply.status_code == 403
    assert "无权查看" in reply.text and "OUT_OF_SCOPE" in reply.text
    own = client.get(f"/areas/governance?within={HEHUACHI}")
    assert own.status_code == 200
    rates = own.text.split('class="card rates"')[1]
    assert 'data-rate="response" data-percent="90.00"' in rates


def test_the_three_rates_of_a_unit_out_of_scope_say_so_beside_the_others(
        client: TestClient) -> None:
    sign_in(client, "street-token")
    page = client.get("/areas/governance")  # the city level: every district's rates
    assert page.status_code == 200
    assert page.text.count("无权查看该单位的三率") == 2


def test_an_unknown_page_and_an_unknown_area_are_pages_too(client: TestClient) -> None:
    sign_in(client)
    assert client.get("/areas/nowhere").status_code == 404
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "未找到" in missing.text


def test_an_export_streams_the_file_the_service_made(client: TestClient) -> None:
    sign_in(client)
    reply = client.get("/export?m=riders_registered&m=training_hours&dimension=DISTRICT"
                       "&g=month&from=2026-01-01&to=2026-03-31&format=csv")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    assert "filename*=UTF-8''qiji-figures-%E6%B5%8B%E8%AF%95.csv" in \
        reply.headers["content-disposition"]
    text = reply.content.decode("utf-8-sig")
    assert text.splitlines()[0] == "指标,时段,键,名称,数值"
    assert f"training_hours,2026-02,{ZHONGLOU},钟楼区," in text
    bad = client.get("/export?m=riders_registered&format=pdf")
    assert bad.status_code == 400 and "csv 或 xlsx" in bad.text


def test_the_audit_trail_of_a_report_and_of_a_rider_as_the_services_mask_them(
        client: TestClient) -> None:
    sign_in(client, "street-token")
    report = client.get(f"/audit?kind=report&id={REPORT}")
    assert report.status_code == 200
    assert "Report.Submitted" in report.text and "[withheld: 12 characters]" in report.text
    rider = client.get(f"/audit?kind=rider&id={RIDER}")
    assert "荷花池街道" in rider.text and "事件历史仅审计员可查看" in rider.text
    client.cookies.clear()
    sign_in(client, "auditor-token")
    audited = client.get(f"/audit?kind=rider&id={RIDER}")
    assert "138****1234" in audited.text and "13800001234" not in audited.text
    assert "Rider.Registered" in audited.text and "[sealed]" in audited.text
    assert client.get("/audit?kind=rider&id=nope").status_code == 400
    assert client.get(f"/audit?kind=report&id={RIDER}").status_code == 404


def test_pages_run_no_inline_script_and_the_static_files_are_served(
        client: TestClient) -> None:
    sign_in(client)
    page = client.get("/areas/training")
    scripts = re.findall(r"<script([^>]*)>", page.text)
    assert scripts and all('src="' in s or 'type="application/json"' in s for s in scripts)
    assert " style=" not in page.text and "onclick" not in page.text
    assert client.get("/static/console.js").status_code == 200
    assert client.get("/static/console.css").status_code == 200
    assert client.get("/static/vendor/echarts.min.js").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_a_rotated_token_ends_the_session(client: TestClient, qiji: FakeQiji,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import fake_qiji
    sign_in(client, "street-token")
    monkeypatch.delitem(fake_qiji.TOKENS, "street-token")
    reply = client.get("/areas/riders?g=week")
    assert reply.status_code == 303 and "why=refused" in reply.headers["location"]
    assert client.get("/").status_code == 303


def test_the_overview_can_be_narrowed_to_a_place_one_level_at_a_time(
        client: TestClient, qiji: FakeQiji) -> None:
    sign_in(client)
    city = client.get("/")
    scope = city.text.split('<select name="within">')[1].split("</select>")[0]
    assert "钟楼区" in scope and "天宁区" in scope and "荷花池街道" not in scope
    district = client.get(f"/?within={ZHONGLOU}&month=2026-03")
    scope = district.text.split('<select name="within">')[1].split("</select>")[0]
    assert f'value="{ZHONGLOU}" selected' in scope and "荷花池街道" in scope
    assert qiji.statistics.asked[-1].within_organisation_id == ZHONGLOU
    shown = cells(district.text)
    assert shown[("badges_awarded", "CITY", "", "2026-03")] == value_of(
        "badges_awarded", "CITY", "2026-03", ZHONGLOU)


def test_signing_in_again_gives_a_new_session_and_ends_the_old_one(client: TestClient) -> None:
    sign_in(client)
    first = client.cookies.get(SESSION_COOKIE)
    sign_in(client, "street-token")
    second = client.cookies.get(SESSION_COOKIE)
    assert first and second and first != second
    client.cookies.set(SESSION_COOKIE, first)
    reply = client.get("/")
    assert reply.status_code == 303 and "why=expired" in reply.headers["location"]
