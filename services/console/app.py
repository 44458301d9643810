"""The console's HTTP routes (Starlette): read the page's question, ask Qiji through
`QijiSource` with the signed-in caller's token, render. Read-only: every page is a GET; the
only POSTs are signing in and out, each checked against a token the form carries. A refusal
is a page that says why (400 with what was wrong, 401 sign in again, 403 not in your scope,
404, 503), never a traceback."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.console import pages
from services.console.areas import BY_SLUG, CHILD_DIMENSION, DIMENSION_LABELS, OTHER_DIMENSIONS
from services.console.periods import (
    BadPeriod,
    Period,
    add_months,
    month_of,
    period_from,
    within_of,
)
from services.console.sessions import Session, Sessions
from services.console.source import (
    Denied,
    FigureAnswer,
    FigureAsk,
    MeasureInfo,
    Missing,
    NotSignedIn,
    OrganisationInfo,
    QijiSource,
    Refused,
    Unreachable,
    Upstream,
    Violation,
)
from shared.errors import is_uuid
from shared.values import CITY_TIME
from shared.web import Observed

log = structlog.get_logger(__name__)
T = TypeVar("T")

STATIC = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "qiji_console"
SIGNIN_COOKIE = "qiji_console_signin"
MAX_FORM = 8_192
# How long a session keeps the catalogue (ListMeasures) before asking again.
CATALOGUE_SECONDS = 60.0
EXPORT_FORMATS = {"csv": "CSV", "xlsx": "XLSX"}
EXPORT_GRANULARITIES = {"day": "DAY", "week": "WEEK", "month": "MONTH", "whole": "WHOLE_RANGE"}
MAX_EXPORT_MEASURES = 50
# The three rates are asked over at most this many days (governance's own limit).
RATES_MAX_DAYS = 366
# Scripts only from this origin (the page's own file and the vendored ECharts), styles only
# from the stylesheet; forms post only here; no frames.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")


class Problem(Exception):
    """An answer that is a page saying what went wrong."""

    def __init__(self, status: int, title: str, message: str,
                 violations: tuple[Violation, ...] = ()):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.violations = violations


class SignInFirst(Exception):
    """No live session: to the sign-in page, saying why (none, expired, refused)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


SIGN_IN_MESSAGES = {
    "expired": "会话已过期，请重新登录。",
    "refused": "令牌已失效（被停用或轮换），请用新令牌重新登录。",
    "signed-out": "已退出登录。",
}


def build_app(source: QijiSource, *, assets_dir: Path, sessions: Sessions,
              service: str = "console", secure_cookies: bool = False,
              clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Observed:
    """The ASGI application over `source` (Qiji's gRPC APIs); `assets_dir` holds the vendored
    ECharts (`make console-assets`)."""

    async def call(fn: Callable[..., T], *args: Any) -> T:
        """A blocking gRPC call off the event loop; the services' refusals as pages."""
        try:
            return await run_in_threadpool(fn, *args)
        except NotSignedIn:
            raise SignInFirst("refused") from None
        except Denied as denied:
            why = denied.reason or "PERMISSION_DENIED"
            raise Problem(403, "无权查看", "您的令牌无权查看这些数据：它只能看到其角色和所属机构"
                          f"范围内的数字。（{why}：{denied.message}）") from None
        except Missing as missing:
            raise Problem(404, "未找到", "所查的对象不存在，或不在您可见的范围内。"
                          f"（{missing.reason}：{missing.message}）") from None
        except Refused as refused:
            raise Problem(400, "查询条件有误", f"服务拒绝了这次查询：{refused.message}",
                          refused.violations) from None
        except Unreachable as down:
            log.warning("upstream.unreachable", code=down.message)
            raise Problem(503, "服务暂时无法访问", "统计或业务服务暂时无法应答，请稍后再试。"
                          ) from None

    def session_of(request: Request) -> tuple[str, Session]:
        ident = request.cookies.get(SESSION_COOKIE, "")
        if not ident:
            raise SignInFirst("")
        session = sessions.get(ident)
        if session is None:
            raise SignInFirst("expired")
        return ident, session

    async def catalogue(session: Session) -> list[MeasureInfo]:
        kept = session.kept.get("measures")
        if kept and kept[0] > time.monotonic():
            return list(kept[1])
        found = await call(source.measures, session.token)
        session.kept["measures"] = (time.monotonic() + CATALOGUE_SECONDS, found)
        return found

    async def path_to(token: str, within: str) -> list[OrganisationInfo]:
        """The organisations from the city down to `within` (the city itself left out: it is
        the breadcrumb's 全市)."""
        path: list[OrganisationInfo] = []
        ident = within
        while ident and len(path) < 8:
            org = await call(source.organisation, token, ident)
            if org.kind != "CITY":
                path.insert(0, org)
            ident = org.parent_id
        return path

    async def places_below(token: str, path: list[OrganisationInfo]) -> list[OrganisationInfo]:
        """The places one level down, for the overview's 范围 (the districts of the city, the
        streets of a district, the communities of a street)."""
        level = path[-1] if path else None
        kind = {None: "DISTRICT", "CITY": "DISTRICT", "DISTRICT": "STREET",
                "STREET": "COMMUNITY"}.get(level.kind if level else None)
        if kind is None:
            return []
        return await call(source.organisations, token, kind,
                          level.organisation_id if level else "")

    async def figures_of(token: str, asks: list[FigureAsk]) -> list[FigureAnswer]:
        return list(await asyncio.gather(*(call(source.figures, token, a) for a in asks)))

    async def freshness(token: str) -> list[Any]:
        try:
            return await call(source.freshness, token)
        except Problem:
            return []  # the page's figures matter more than the footer

    # ------------------------------------------------------------------ sign-in

    async def signin_page(request: Request) -> Response:
        why = request.query_params.get("why", "")
        nonce = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
        response = _html(pages.sign_in(nonce, SIGN_IN_MESSAGES.get(why, ""),
                                       _safe_next(request.query_params.get("next", "/"))))
        _set_cookie(response, SIGNIN_COOKIE, nonce, secure_cookies, max_age=3600)
        return response

    async def signin(request: Request) -> Response:
        form = await _form(request)
        nonce = request.cookies.get(SIGNIN_COOKIE, "")
        if not nonce or not secrets.compare_digest(nonce, form.get("csrf", "")):
            raise Problem(403, "登录表单已失效",
                          "请重新打开登录页再登录（登录只接受本站登录页提交的表单）。")
        token = form.get("token", "").strip()
        next_path = _safe_next(form.get("next", "/"))
        if not token:
            return _html(pages.sign_in(nonce, "请输入令牌。", next_path), 400)
        try:
            await run_in_threadpool(source.measures, token)
        except NotSignedIn:
            log.info("console.signin_refused")
            return _html(pages.sign_in(nonce, "令牌无效或已停用。", next_path), 401)
        except Denied:
            return _html(pages.sign_in(nonce, "此令牌的角色无权查看统计数据（需市、街道、社区、"
                                       "社会工作部、平台、商户或审计、运维角色）。", next_path),
                         403)
        except Upstream:
            raise Problem(503, "服务暂时无法访问", "统计服务暂时无法应答，请稍后再登录。") from None
        # A new id at every sign-in (never one the browser brought), and the old one ended.
        sessions.end(request.cookies.get(SESSION_COOKIE, ""))
        ident, _ = sessions.start(token)
        log.info("console.signed_in", sessions=len(sessions))
        response = RedirectResponse(next_path, status_code=303)
        _set_cookie(response, SESSION_COOKIE, ident, secure_cookies)
        response.delete_cookie(SIGNIN_COOKIE, path="/")
        return response

    async def signout(request: Request) -> Response:
        form = await _form(request)
        ident = request.cookies.get(SESSION_COOKIE, "")
        session = sessions.get(ident) if ident else None
        if session is not None:
            if not secrets.compare_digest(session.csrf, form.get("csrf", "")):
                raise Problem(403, "无法退出", "退出请求不是从本站页面发出的。")
            sessions.end(ident)
        response = RedirectResponse("/signin?why=signed-out", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ pages

    async def overview(request: Request) -> Response:
        _, session = session_of(request)
        params = dict(request.query_params)
        now = clock()
        month = month_of(params, now)
        within = within_of(params)
        previous, following = add_months(month, -1), add_months(month, 1)
        measures = await catalogue(session)
        path = await path_to(session.token, within)
        start, end = _midnight(previous), _midnight(following)
        asks = [FigureAsk(m.name, "CITY", "MONTH", start, end, None, within) for m in measures]
        answers = dict(zip([m.name for m in measures],
                           await figures_of(session.token, asks), strict=True))
        areas = [(area, [(m, answers[m.name]) for m in area.measures(measures)])
                 for area in BY_SLUG.values()]
        export = {"m": [m.name for m in measures], "dimension": "CITY", "g": "month",
                  "from": previous.isoformat(), "to": (following - timedelta(days=1)).isoformat(),
                  **({"within": within} if within else {})}
        return _html(pages.overview(month, previous, areas, path=path, within=within,
                                    csrf=session.csrf, freshness=await freshness(session.token),
                                    export_query=export,
                                    places=await places_below(session.token, path)))

    async def area(request: Request) -> Response:
        _, session = session_of(request)
        slug = request.path_params["slug"]
        if slug not in BY_SLUG:
            raise Problem(404, "未找到", f"没有名为 {slug[:40]!r} 的领域。")
        the_area = BY_SLUG[slug]
        now = clock()
        period = period_from(dict(request.query_params), now)
        token = session.token
        measures = the_area.measures(await catalogue(session))
        chosen = request.query_params.get("m", "")
        selected = next((m for m in measures if m.name == chosen), measures[0] if measures
                        else None)
        path = await path_to(token, period.within)
        level = path[-1].kind if path else ""
        child = CHILD_DIMENSION.get(level, "")

        def ask(measure: str, dimension: str, granularity: str) -> FigureAsk:
            return FigureAsk(measure, dimension, granularity, period.start, period.end,
                             period.as_of, period.within)

        asks = [ask(m.name, "CITY", "WHOLE_RANGE") for m in measures]
        series = places = None
        breakdowns: list[FigureAnswer] = []
        if selected is not None:
            extra = [ask(selected.name, "CITY", period.api_granularity)]
            if child and child in selected.dimensions:
                extra.append(ask(selected.name, child, "WHOLE_RANGE"))
            extra += [ask(selected.name, d, "WHOLE_RANGE") for d in OTHER_DIMENSIONS
                      if d in selected.dimensions]
            answers = await figures_of(token, asks + extra)
            totals_answers, rest = answers[:len(asks)], answers[len(asks):]
            series = rest.pop(0)
            if rest and rest[0].ask.dimension == child:
                places = rest.pop(0)
            breakdowns = rest
        else:
            totals_answers = []
        totals: list[tuple[MeasureInfo, FigureAnswer | None]] = list(
            zip(measures, totals_answers, strict=False))
        place_drill = {f.key: f"/areas/{slug}?" + urlencode(period.query(
            within=f.key, m=selected.name if selected else ""))
            for f in (places.figures if places else []) if is_uuid(f.key)}
        rates: list[tuple[OrganisationInfo, Any, str]] = []
        rates_note = ""
        if slug == "governance":
            rates, rates_note = await service_rates(token, period, path, now)
        dimension = child if child and measures and all(
            child in m.dimensions for m in measures) else "CITY"
        export = {"m": [m.name for m in measures], "dimension": dimension,
                  **period.query()}
        view = pages.AreaView(the_area, period, path, totals, selected, series, places,
                              place_drill, breakdowns, rates, rates_note, export)
        return _html(pages.area_page(view, csrf=session.csrf,
                                     freshness=await freshness(token)))

    async def service_rates(token: str, period: Period, path: list[OrganisationInfo],
                            now: datetime) -> tuple[list[tuple[OrganisationInfo, Any, str]], str]:
        """The three rates of the units one level down (the districts of the city, a
        district and its streets, a street), each as governance answers this caller."""
        if period.start > now:
            return [], "所选时段尚未开始，三率无从统计。"
        start, note = period.start, ""
        if (period.end - start).days > RATES_MAX_DAYS:
            start = period.end - timedelta(days=RATES_MAX_DAYS)
            note = f"三率最多统计 {RATES_MAX_DAYS} 天：此处为所选时段的最后 {RATES_MAX_DAYS} 天。"
        level = path[-1] if path else None
        units: list[tuple[str, OrganisationInfo]]
        if level is None or level.kind == "CITY":
            units = [("district", o) for o in await call(source.organisations, token, "DISTRICT")]
        elif level.kind == "DISTRICT":
            units = [("district", level)] + [("street", o) for o in await call(
                source.organisations, token, "STREET", level.organisation_id)]
        elif level.kind == "STREET":
            units = [("street", level)]
        else:
            return [], "三率按区、街道统计。"

        async def one(unit: str, org: OrganisationInfo) -> tuple[OrganisationInfo, Any, str]:
            try:
                found = await run_in_threadpool(source.service_rates, token, unit,
                                                org.organisation_id, start, period.end,
                                                period.as_of)
            except Denied:
                return org, None, "无权查看该单位的三率"
            except Refused as refused:
                return org, None, f"无法统计：{refused.message}"
            except NotSignedIn:
                raise SignInFirst("refused") from None
            except Upstream:
                return org, None, "治理服务暂时无法应答"
            return org, found, ""
        return list(await asyncio.gather(*(one(u, o) for u, o in units))), note

    async def export(request: Request) -> Response:
        _, session = session_of(request)
        params = request.query_params
        measures = [m for m in params.getlist("m") if m]
        if not measures or len(measures) > MAX_EXPORT_MEASURES:
            raise Problem(400, "导出条件有误", f"请选择 1 到 {MAX_EXPORT_MEASURES} 个指标（m）。")
        file_format = EXPORT_FORMATS.get(params.get("format", ""))
        if file_format is None:
            raise Problem(400, "导出条件有误", "格式只能是 csv 或 xlsx。")
        dimension = params.get("dimension", "CITY")
        if dimension not in DIMENSION_LABELS:
            raise Problem(400, "导出条件有误", f"没有 {dimension[:30]!r} 这一维度。")
        g = params.get("g", "month")
        plain = {k: v for k, v in params.items() if k in ("from", "to", "as_of", "within")}
        period = period_from({**plain, "g": g if g in ("day", "week", "month") else "month"},
                             clock())
        if g not in EXPORT_GRANULARITIES:
            raise Problem(400, "导出条件有误", "粒度只能是 day、week、month 或 whole。")
        ask = FigureAsk("", dimension, EXPORT_GRANULARITIES[g], period.start, period.end,
                        period.as_of, period.within)
        exported = await call(source.export, session.token, measures, ask, file_format)
        log.info("console.export", rows=exported.rows_total, format=file_format,
                 measures=len(measures))
        return StreamingResponse(exported.chunks, media_type=exported.media_type, headers={
            "Content-Disposition": _attachment(exported.file_name),
            "Cache-Control": "no-store", "X-Rows-Total": str(exported.rows_total)})

    async def audit(request: Request) -> Response:
        _, session = session_of(request)
        kind = request.query_params.get("kind", "report")
        ident = request.query_params.get("id", "").strip()
        if kind not in ("report", "rider"):
            raise Problem(400, "查询条件有误", "只能查上报事项（report）或骑手（rider）。")
        result = ""
        if ident:
            if not is_uuid(ident):
                raise Problem(400, "查询条件有误", f"编号应为 UUID，收到 {ident[:60]!r}。",
                              (Violation("id", "must be a UUID", "INVALID_ID"),))
            ident = str(uuid.UUID(ident))
            if kind == "report":
                entries = await call(source.report_history, session.token, ident)
                result = pages.report_trail(ident, entries)
            else:
                result = await rider_trail(session.token, ident)
        return _html(pages.audit_page(kind, ident, result, csrf=session.csrf))

    async def rider_trail(token: str, rider_id: str) -> str:
        from qiji.identity.v1 import identity_service_pb2 as ipb
        rider = await call(source.rider, token, rider_id)
        names: dict[str, str] = {}
        for org_id in (rider.home_street_id, rider.station_id):
            if org_id:
                try:
                    names[org_id] = (await call(source.organisation, token, org_id)).name
                except Problem:
                    pass
        history: list[Any] | None
        note = ""
        try:
            history = await run_in_threadpool(source.rider_history, token, rider_id)
        except Denied:
            history, note = None, "事件历史仅审计员可查看（审计角色的令牌）。"
        except Missing:
            history = []
        except NotSignedIn:
            raise SignInFirst("refused") from None
        except Upstream:
            history, note = None, "身份服务暂时无法应答事件历史。"
        status = ipb.RiderStatus.Name(rider.status).removeprefix("RIDER_STATUS_")
        return pages.rider_trail(rider, status, names, history, note)

    # ------------------------------------------------------------------ plumbing

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await run_in_threadpool(source.ping)
        except Upstream:
            return JSONResponse({"status": "unavailable", "statistics": "unreachable"},
                                status_code=503)
        return JSONResponse({"status": "ok"})

    routes = [
        Route("/", overview),
        Route("/areas/{slug}", area),
        Route("/export", export),
        Route("/audit", audit),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Mount("/static/vendor", StaticFiles(directory=assets_dir, check_dir=False)),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]

    async def sign_in_first(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInFirst)
        if exc.why == "refused":
            sessions.end(request.cookies.get(SESSION_COOKIE, ""))
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = {"next": here, **({"why": exc.why} if exc.why else {})}
        response = RedirectResponse(f"/signin?{urlencode(query)}", status_code=303)
        if exc.why:
            response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def csrf_of(request: Request) -> str:
        ident = request.cookies.get(SESSION_COOKIE, "")
        session = sessions.get(ident) if ident else None
        return session.csrf if session else ""

    async def problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return _html(pages.problem(exc.status, exc.title, exc.message, exc.violations,
                                   csrf=csrf_of(request), back=_back(request)), exc.status)

    async def bad_period(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadPeriod)
        return _html(pages.problem(400, "查询条件有误", exc.message,
                                   (Violation(exc.field, exc.message, "PERIOD_INVALID"),),
                                   csrf=csrf_of(request), back=_back(request)), 400)

    async def http_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = {404: "未找到", 405: "不支持的请求"}.get(exc.status_code, "请求有误")
        return _html(pages.problem(exc.status_code, title, str(exc.detail),
                                   csrf=csrf_of(request)), exc.status_code)

    async def unexpected(request: Request, exc: Exception) -> Response:
        correlation = uuid.uuid4().hex
        log.exception("http.failed", path=request.url.path, correlation_id=correlation)
        return _html(pages.problem(500, "出错了", f"控制台内部出错，已记录。请把此编号告知运维："
                                                  f"{correlation}"), 500)

    app = Starlette(routes=routes, exception_handlers={
        SignInFirst: sign_in_first, Problem: problem, BadPeriod: bad_period,
        HTTPException: http_problem, Exception: unexpected})
    return Observed(app, service)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, day_time(), CITY_TIME)


def _safe_next(raw: str) -> str:
    """Only a path of this console: never another site (//evil.example, https://...)."""
    if not raw.startswith("/") or raw.startswith("//") or "\\" in raw or len(raw) > 2000:
        return "/"
    return raw


def _back(request: Request) -> str:
    return request.url.path if request.url.path.startswith(("/areas/", "/audit")) else "/"


def _set_cookie(response: Response, name: str, value: str, secure: bool,
                max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=secure)


def _attachment(file_name: str) -> str:
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_"
                         for c in file_name) or "qiji-figures"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(file_name)}"


async def _form(request: Request) -> dict[str, str]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM:
        raise Problem(413, "表单过大", f"表单最多 {MAX_FORM} 字节。")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise Problem(413, "表单过大", f"表单最多 {MAX_FORM} 字节。")
        chunks.append(chunk)
    parsed = parse_qs(b"".join(chunks).decode("utf-8", "replace"))
    return {k: v[0] for k, v in parsed.items()}


def _html(text: str, status: int = 200) -> Response:
    return HTMLResponse(text, status_code=status, headers={
        "Content-Security-Policy": CSP, "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"})
