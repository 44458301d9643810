"""The console's pages: server-rendered HTML in the city's words (Chinese), one stylesheet and
one small script served as files (no inline script or style: the CSP allows neither), the
charts' data in a `<script type="application/json">` block that the script hands to ECharts.
Every figure shown carries its measure, dimension, key and period in data- attributes, so that
a program (the browser test) can hold it against the API's answer."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from html import escape
from typing import Any
from urllib.parse import urlencode

from services.console.areas import AREAS, DIMENSION_LABELS, KIND_LABELS, SERVICE_LABELS, Area
from services.console.periods import GRANULARITY_LABELS, Period
from services.console.source import (
    FeedPositionInfo,
    Figure,
    FigureAnswer,
    MeasureInfo,
    OrganisationInfo,
    Violation,
)
from shared.values import CITY_TIME

TITLE = "骑迹 · 骑手友好城市统计"


def e(value: object) -> str:
    return escape(str(value), quote=True)


def number(value: Decimal | None) -> str:
    """A figure as the city writes it: exact, no exponent, no trailing zeros."""
    if value is None:
        return "—"
    text = format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def difference(then: Decimal, now: Decimal | None) -> str:
    if now is None:
        return ""
    delta = now - then
    return "0" if delta == 0 else ("+" if delta > 0 else "") + number(delta)


def city_time(at: datetime | None, seconds: bool = False) -> str:
    if at is None:
        return "—"
    return at.astimezone(CITY_TIME).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else ""))


@dataclass
class Charts:
    """The charts of one page: their data goes into the page's JSON block."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def draw(self, kind: str, title: str, categories: Sequence[str],
            series: Sequence[tuple[str, Sequence[Decimal]]], unit: str,
            links: Sequence[str] = ()) -> str:
        ident = f"chart-{len(self.items) + 1}"
        self.items.append({"id": ident, "kind": kind, "title": title, "unit": unit,
                           "categories": list(categories), "links": list(links),
                           "series": [{"name": name, "data": [float(v) for v in values]}
                                      for name, values in series]})
        return (f'<div class="chart" id="{ident}" role="img" aria-label="{e(title)}"></div>')

    def block(self) -> str:
        # No executable script: a JSON data block, read by /static/console.js. "<" is escaped
        # so that no label can close the block.
        text = json.dumps({"charts": self.items}, ensure_ascii=False).replace("<", "\\u003c")
        return f'<script type="application/json" id="console-data">{text}</script>'


# ---------------------------------------------------------------------------- the frame


def _nav(active: str, query: dict[str, str]) -> str:
    keep = {k: v for k, v in query.items() if k in ("within",)}
    links = [("overview", "总览", "/?" + urlencode(keep))]
    links += [(a.slug, a.label, f"/areas/{a.slug}?" + urlencode(query)) for a in AREAS]
    links.append(("audit", "审计查询", "/audit"))
    current = ' class="active" aria-current="page"'
    return "".join(f'<a href="{e(href.rstrip("?"))}"{current if slug == active else ""}>'
                   f"{e(label)}</a>" for slug, label, href in links)


def page(title: str, body: str, *, active: str = "", query: dict[str, str] | None = None,
         csrf: str = "", charts: Charts | None = None,
         freshness: Sequence[FeedPositionInfo] = ()) -> str:
    signed_in = bool(csrf)
    header = (f'<nav class="areas">{_nav(active, query or {})}</nav>'
              f'<form method="post" action="/signout" class="signout">'
              f'<input type="hidden" name="csrf" value="{e(csrf)}">'
              f'<button type="submit">退出登录</button></form>') if signed_in else ""
    scripts = (f'{charts.block()}<script src="/static/vendor/echarts.min.js"></script>'
               f'<script src="/static/console.js"></script>') if charts and charts.items else ""
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} — {TITLE}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/console.css"></head>
<body><header class="top"><div class="brand">骑迹 <span>骑手友好城市 · 统计与审计</span></div>
{header}</header>
<main>{body}</main>
<footer>{_freshness(freshness)}<span>只读控制台 · 数据来自骑迹各服务的 gRPC 接口</span></footer>
{scripts}</body></html>"""


def _freshness(positions: Sequence[FeedPositionInfo]) -> str:
    if not positions:
        return ""
    parts = []
    for p in positions:
        behind = max(0, p.last_position - p.position)
        parts.append(f'<span data-service="{e(p.service)}" data-position="{p.position}">'
                     f"{e(SERVICE_LABELS.get(p.service, p.service))} 已读至第 {p.position} 条"
                     f"{f'（落后 {behind} 条）' if behind else ''}</span>")
    return f'<div class="freshness">数据更新：{"；".join(parts)}</div>'


def breadcrumb(path: Sequence[OrganisationInfo], link: str, query: dict[str, str]) -> str:
    """全市 › 钟楼区 › 荷花池街道: each step a link to that level."""
    steps = [f'<a href="{e(link)}?{e(urlencode({**query, "within": ""}))}">全市</a>']
    for o in path:
        steps.append(f'<a href="{e(link)}?{e(urlencode({**query, "within": o.organisation_id}))}"'
                     f' data-org="{e(o.organisation_id)}">{e(o.name)}</a>')
    return f'<nav class="crumbs" aria-label="层级">{" › ".join(steps)}</nav>'


# ---------------------------------------------------------------------------- sign-in


def sign_in(csrf: str, message: str = "", next_path: str = "/") -> str:
    note = f'<p class="alert" role="alert">{e(message)}</p>' if message else ""
    return page("登录", f"""
<section class="card narrow"><h1>登录统计控制台</h1>
<p>请输入贵单位调用骑迹接口所用的令牌（Bearer token）。
能看到哪些数字，由各服务按令牌的角色与所属机构决定：
市、区级部门看全市，街道看本街道及其社区，社区看本社区，平台看本平台骑手。</p>
{note}
<form method="post" action="/signin" autocomplete="off">
<input type="hidden" name="csrf" value="{e(csrf)}">
<input type="hidden" name="next" value="{e(next_path)}">
<label>令牌 <input type="password" name="token" required autofocus></label>
<button type="submit">登录</button></form>
<p class="muted">令牌只保存在服务器端，浏览器只持有随机会话号；
30 分钟无操作自动退出。</p></section>""")


def problem(status: int, title: str, message: str, violations: Sequence[Violation] = (),
            *, csrf: str = "", back: str = "/") -> str:
    listed = "".join(f'<li data-field="{e(v.field)}" data-reason="{e(v.reason)}">'
                     f"<code>{e(v.field)}</code>：{e(v.description)}</li>" for v in violations)
    return page(title, f"""
<section class="card narrow problem" data-status="{status}"><h1>{e(title)}</h1>
<p role="alert">{e(message)}</p>{f'<ul>{listed}</ul>' if listed else ''}
<p><a href="{e(back)}">返回</a></p></section>""", csrf=csrf)


# ---------------------------------------------------------------------------- figures


def _cell(answer: FigureAnswer, f: Figure, *, as_of: bool) -> str:
    attrs = (f'data-measure="{e(answer.ask.measure)}" data-dimension="{e(answer.ask.dimension)}"'
             f' data-key="{e(f.key)}" data-period="{e(f.period_label)}"'
             f' data-value="{e(number(f.value))}"')
    cells = f'<td class="num" {attrs}>{e(number(f.value))}</td>'
    if as_of:
        cells += (f'<td class="num now">{e(number(f.current_value))}</td>'
                  f'<td class="num diff">{e(difference(f.value, f.current_value))}</td>')
    return cells


def _as_of_heads(as_of: bool) -> str:
    return "<th>今日所见</th><th>差额</th>" if as_of else ""


def overview(month: date, previous: date, areas: Sequence[tuple[Area, list[tuple[
        MeasureInfo, FigureAnswer]]]], *, path: Sequence[OrganisationInfo], within: str,
        csrf: str, freshness: Sequence[FeedPositionInfo], export_query: dict[str, Any],
        places: Sequence[OrganisationInfo] = ()) -> str:
    month_label = f"{month.year}年{month.month}月"
    cards = []
    for area, rows in areas:
        lines = []
        for measure, answer in rows:
            by_label = {f.period_label: f for f in answer.figures}
            last = by_label.get(f"{previous:%Y-%m}")
            this = by_label.get(f"{month:%Y-%m}")
            cells = []
            for label, f in ((f"{previous:%Y-%m}", last), (f"{month:%Y-%m}", this)):
                value = f.value if f else Decimal(0)
                cells.append(f'<td class="num" data-measure="{e(measure.name)}" '
                             f'data-dimension="CITY" data-key="" data-period="{e(label)}" '
                             f'data-value="{e(number(value))}">{e(number(value))}</td>')
            change = difference(last.value if last else Decimal(0),
                                this.value if this else Decimal(0))
            lines.append(f'<tr><th scope="row" title="{e(measure.explanation)}">'
                         f'{e(measure.label)}<span class="unit">（{e(measure.unit)}）</span></th>'
                         f'{"".join(cells)}<td class="num diff">{e(change)}</td></tr>')
        if not lines:
            lines.append('<tr><td colspan="4" class="muted">暂无指标</td></tr>')
        link = f"/areas/{area.slug}?" + urlencode({"within": within} if within else {})
        cards.append(f"""<section class="card area" data-area="{e(area.slug)}">
<h2><a href="{e(link.rstrip('?'))}">{e(area.label)}</a></h2><p class="muted">{e(area.about)}</p>
<table><thead><tr><th>指标</th><th>上月 {previous:%Y-%m}</th><th>本月 {month:%Y-%m}</th>
<th>变化</th></tr></thead><tbody>{''.join(lines)}</tbody></table></section>""")
    choices = [("", "全市（您可见的范围）"), *((p.organisation_id, "　" * i + p.name)
                                              for i, p in enumerate(path)),
               *((p.organisation_id, "　" * len(path) + p.name) for p in places)]
    options = "".join(f'<option value="{e(v)}"{" selected" if v == within else ""}>{e(label)}'
                      "</option>" for v, label in choices)
    picker = f"""<form method="get" action="/" class="picker">
<label>范围 <select name="within">{options}</select></label>
<label>月份 <input type="month" name="month" value="{month:%Y-%m}"></label>
<button type="submit">查看</button>
<a class="button" href="{_export(export_query, 'csv')}" download>导出 CSV</a>
<a class="button" href="{_export(export_query, 'xlsx')}" download>导出 Excel</a>
</form>"""
    body = (f'<h1>项目总览 · {month_label}</h1>'
            f'{breadcrumb(path, "/", {"month": f"{month:%Y-%m}"})}{picker}'
            f'<div class="grid">{"".join(cards)}</div>')
    return page(f"项目总览 {month_label}", body, active="overview",
                query={"within": within} if within else {}, csrf=csrf, freshness=freshness)


def period_picker(action: str, period: Period, hidden: dict[str, str]) -> str:
    options = "".join(f'<option value="{g}"{" selected" if g == period.granularity else ""}>'
                      f"{label}</option>" for g, label in GRANULARITY_LABELS.items())
    as_of = period.as_of.astimezone(CITY_TIME).strftime("%Y-%m-%dT%H:%M") if period.as_of else ""
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
                     for k, v in hidden.items() if v)
    clear = (f'<a href="{e(action)}?{e(urlencode(period.query(as_of="", **hidden)))}">'
             "回到今日所见</a>") if period.as_of else ""
    return f"""<form method="get" action="{e(action)}" class="picker">{fields}
<label>粒度 <select name="g">{options}</select></label>
<label>从 <input type="date" name="from" value="{period.first.isoformat()}"></label>
<label>到 <input type="date" name="to" value="{period.last.isoformat()}"></label>
<label title="数据当时的样子：只计入该时刻以前记录的事件">截至
<input type="datetime-local" name="as_of" value="{e(as_of)}"></label>
<button type="submit">查询</button>{clear}</form>"""


def _figures_table(answer: FigureAnswer, *, key_head: str, by_key: bool, as_of: bool,
                   drill: dict[str, str] | None = None) -> str:
    rows = []
    for f in answer.figures:
        name = f.key_label or f.key or "全部"
        if drill is not None and f.key and f.key in drill:
            name_html = (f'<a href="{e(drill[f.key])}" class="drill" data-org="{e(f.key)}">'
                         f"{e(name)}</a>")
        else:
            name_html = e(name)
        first = name_html if by_key else e(f.period_label)
        rows.append(f"<tr><th scope=\"row\">{first}</th>{_cell(answer, f, as_of=as_of)}</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{4 if as_of else 2}" class="muted">'
                    "这段时间没有数据</td></tr>")
    unit = answer.measure.unit
    return (f'<table class="figures" data-measure="{e(answer.ask.measure)}" '
            f'data-dimension="{e(answer.ask.dimension)}"><thead><tr><th>{e(key_head)}</th>'
            f"<th>{'当时' if as_of else '数值'}（{e(unit)}）</th>{_as_of_heads(as_of)}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            + ('<p class="muted">数据较多，仅显示前 20000 条；完整数据请导出。</p>'
               if answer.truncated else ""))


def _series(m: MeasureInfo, figures: Sequence[Figure], as_of: bool
            ) -> list[tuple[str, list[Decimal]]]:
    """A chart's series: the figures, and with "as of" today's view of them beside."""
    if not as_of:
        return [(m.label, [f.value for f in figures])]
    return [("当时", [f.value for f in figures]),
            ("今日所见", [f.value if f.current_value is None else f.current_value
                      for f in figures])]


def _every_period(answer: FigureAnswer, period: Period) -> FigureAnswer:
    """The series with a 0 for each period of the range that has no figure (the API leaves
    those out)."""
    by_label = {f.period_label: f for f in answer.figures if not f.key}
    if len(by_label) != len(answer.figures):
        return answer  # not one figure per period: shown as answered
    zero = Decimal(0)
    figures = [by_label.get(label) or Figure(period.start, period.end, label, "", "", zero,
                                             zero if period.as_of else None)
               for label in period.labels()]
    figures += [f for label, f in by_label.items() if label not in set(period.labels())]
    return replace(answer, figures=figures)


def _export(query: dict[str, Any], file_format: str) -> str:
    return e("/export?" + urlencode({**query, "format": file_format}, doseq=True))


def _split(chart: str, table: str) -> str:
    return f'<div class="split">{chart}<div class="side">{table}</div></div>'


@dataclass
class AreaView:
    """What an area page shows, gathered by the app."""

    area: Area
    period: Period
    path: list[OrganisationInfo]
    totals: list[tuple[MeasureInfo, FigureAnswer | None]]
    selected: MeasureInfo | None
    series: FigureAnswer | None
    places: FigureAnswer | None
    place_drill: dict[str, str]
    breakdowns: list[FigureAnswer]
    rates: list[tuple[OrganisationInfo, Any, str]]
    rates_note: str
    export_query: dict[str, Any]


def area_page(view: AreaView, *, csrf: str, freshness: Sequence[FeedPositionInfo]) -> str:
    period, charts = view.period, Charts()
    as_of = period.as_of is not None
    link = f"/areas/{view.area.slug}"
    keep = period.query()
    cards = []
    for measure, answer in view.totals:
        total = answer.figures[0] if answer and answer.figures else None
        value = total.value if total else Decimal(0)
        chosen = view.selected is not None and measure.name == view.selected.name
        href = f"{link}?{urlencode({**keep, 'm': measure.name})}"
        now = (f'<span class="now">今日所见 {e(number(total.current_value))}</span>'
               if as_of and total is not None else "")
        cards.append(f'<a class="total{" chosen" if chosen else ""}" href="{e(href)}" '
                     f'title="{e(measure.explanation)}"><span class="label">{e(measure.label)}'
                     f'</span><span class="value" data-measure="{e(measure.name)}" '
                     f'data-dimension="CITY" data-key="" data-period="WHOLE_RANGE" '
                     f'data-value="{e(number(value))}">{e(number(value))}</span>'
                     f'<span class="unit">{e(measure.unit)}</span>{now}</a>')
    if not cards:
        cards.append('<p class="muted">本领域暂无指标。</p>')
    parts = [f'<h1>{e(view.area.label)}</h1>',
             breadcrumb(view.path, link, {k: v for k, v in keep.items() if k != "within"}),
             period_picker(link, period, {"within": period.within,
                                          "m": view.selected.name if view.selected else ""})]
    if as_of:
        parts.append(f'<p class="asof" role="note">显示 {e(city_time(period.as_of))}（北京时间）'
                     "时记录在案的数据；“今日所见”为现在的同一数字，差额即此后补录或更正的部分。</p>")
    parts.append(f'<div class="totals">{"".join(cards)}</div>')
    dimension = str(view.export_query.get("dimension", "CITY"))
    if dimension != "CITY":
        by = f"按{DIMENSION_LABELS.get(dimension, dimension)}"
    else:
        by = "本级合计" if view.path else "全市"
    parts.append(f"""<div class="exports">导出本领域全部指标（{e(by)}，
{e(GRANULARITY_LABELS[period.granularity])}）：
<a class="button" href="{_export(view.export_query, 'csv')}" download>CSV</a>
<a class="button" href="{_export(view.export_query, 'xlsx')}" download>Excel</a></div>""")
    if view.selected and view.series:
        m = view.selected
        view.series = _every_period(view.series, period)
        chart = charts.draw("line" if period.granularity == "day" else "bar",
                           f"{m.label}（{GRANULARITY_LABELS[period.granularity]}）",
                           [f.period_label for f in view.series.figures],
                           _series(m, view.series.figures, as_of), m.unit)
        parts.append(f"""<section class="card measure" data-selected="{e(m.name)}">
<h2>{e(m.label)} <span class="unit">单位：{e(m.unit)}</span></h2>
<p class="muted explanation">{e(m.explanation)}</p>
{_split(chart, _figures_table(view.series, key_head='时段', by_key=False, as_of=as_of))}
</section>""")
        if view.places is not None:
            places = view.places
            label = DIMENSION_LABELS[places.ask.dimension]
            chart = charts.draw("bar", f"{m.label} · 按{label}",
                               [f.key_label or f.key for f in places.figures],
                               _series(m, places.figures, as_of), m.unit,
                               links=[view.place_drill.get(f.key, "") for f in places.figures])
            table = _figures_table(places, key_head=label, by_key=True, as_of=as_of,
                                   drill=view.place_drill)
            parts.append(f"""<section class="card places"><h2>按{e(label)}
<span class="muted">点击名称逐级查看</span></h2>{_split(chart, table)}</section>""")
        others = []
        for answer in view.breakdowns:
            label = DIMENSION_LABELS[answer.ask.dimension]
            chart = charts.draw("bar", f"{m.label} · 按{label}",
                               [f.key_label or f.key for f in answer.figures],
                               _series(m, answer.figures, as_of), m.unit)
            others.append(f"""<section class="card breakdown"><h2>按{e(label)}</h2>{chart}
{_figures_table(answer, key_head=label, by_key=True, as_of=as_of)}</section>""")
        if others:
            parts.append(f'<div class="breakdowns">{"".join(others)}</div>')
    if view.area.slug == "governance":
        parts.append(_rates(view.rates, view.rates_note, period))
    return page(view.area.label, "".join(parts), active=view.area.slug,
                query={k: v for k, v in keep.items() if k != "m"}, csrf=csrf, charts=charts,
                freshness=freshness)


def _percent(rate: Any) -> str:
    if not rate.denominator:
        return '<span class="muted">—</span>'
    return (f'<span class="rate">{e(rate.percent)}%</span>'
            f'<span class="muted">（{rate.numerator}/{rate.denominator}）</span>')


def _rates(rates: Sequence[tuple[OrganisationInfo, Any, str]], note: str, period: Period) -> str:
    rows = []
    for unit, found, refused in rates:
        if found is None:
            rows.append(f'<tr data-unit="{e(unit.organisation_id)}"><th scope="row">'
                        f'{e(unit.name)}</th><td colspan="4" class="muted">{e(refused)}</td></tr>')
            continue
        rows.append(
            f'<tr data-unit="{e(unit.organisation_id)}"><th scope="row">{e(unit.name)}</th>'
            f'<td class="num" data-rate="assignments">{found.assignments}</td>'
            f'<td data-rate="response" data-percent="{e(found.response_rate.percent)}">'
            f"{_percent(found.response_rate)}</td>"
            f'<td data-rate="resolution" data-percent="{e(found.resolution_rate.percent)}">'
            f"{_percent(found.resolution_rate)}</td>"
            f'<td data-rate="satisfaction" data-percent="{e(found.satisfaction_rate.percent)}">'
            f"{_percent(found.satisfaction_rate)}</td></tr>")
    if not rows:
        rows.append(f'<tr><td colspan="5" class="muted">{e(note or "没有可显示的单位")}</td></tr>')
    as_of = f"，截至 {e(city_time(period.as_of))}" if period.as_of else ""
    return f"""<section class="card rates"><h2>接诉即办 · 三率</h2>
<p class="muted">{period.first} 至 {period.last} 派单的工单{as_of}。
响应率：按时响应的派单占应响应的派单；办结率：办结占已办完（办结或退回）；满意率：满意与基本满意占已评价。{e(note)}</p>
<table class="rates"><thead><tr><th>单位</th><th>派单数</th><th>响应率</th><th>办结率</th>
<th>满意率</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></section>"""


# ---------------------------------------------------------------------------- audit


def audit_form(kind: str, ident: str) -> str:
    options = "".join(f'<option value="{k}"{" selected" if k == kind else ""}>{label}</option>'
                      for k, label in (("report", "上报事项（预警、直报、社情民意）"),
                                       ("rider", "骑手")))
    return f"""<form method="get" action="/audit" class="picker">
<label>查什么 <select name="kind">{options}</select></label>
<label>编号 <input type="text" name="id" value="{e(ident)}" size="40" placeholder="UUID"
required></label>
<button type="submit">查询</button></form>"""


def _entries(entries: Iterable[tuple[str, str, str, str, str]]) -> str:
    rows = [f"<tr><td>{e(at)}</td><td><code>{e(kind)}</code></td><td>{e(who)}</td>"
            f"<td>{e(how)}</td><td class=\"details\">{details}</td></tr>"
            for at, kind, who, how, details in entries]
    if not rows:
        return '<p class="muted">没有记录。</p>'
    return ("<table class=\"history\"><thead><tr><th>时间（北京时间）</th><th>事件</th>"
            "<th>操作者</th><th>途径</th><th>内容</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def audit_page(kind: str, ident: str, result: str, *, csrf: str) -> str:
    return page("审计查询", f"""<h1>审计查询</h1>
<p class="muted">一件上报事项或一位骑手的完整记录：谁、何时、通过什么接口做了什么。
个人信息按各服务的脱敏规则显示。</p>
{audit_form(kind, ident)}{result}""", active="audit", csrf=csrf)


def report_trail(report_id: str, entries: Sequence[Any]) -> str:
    shown = []
    for x in entries:
        details = "".join(f"<div><span class=\"k\">{e(k)}</span> {e(v)}</div>"
                          for k, v in sorted(x.details.items()))
        shown.append((city_time(_utc(x.time), seconds=True), x.event_type, x.principal, x.rpc,
                      details))
    return (f'<section class="card trail" data-report="{e(report_id)}"><h2>上报事项 '
            f"<code>{e(report_id)}</code> 的记录（{len(entries)} 条）</h2>"
            f"{_entries(shown)}</section>")


def _utc(ts: Any) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if ts.seconds or ts.nanos else None


RIDER_STATUS = {"REGISTERED": "已注册", "VERIFIED": "已核验", "ACTIVE": "在岗",
                "SUSPENDED": "暂停", "LEFT": "已离开"}


def rider_trail(rider: Any, status: str, names: dict[str, str], history: Sequence[Any] | None,
                history_note: str) -> str:
    facts = [("姓名", rider.name), ("手机", rider.phone), ("身份证号", rider.national_id or "—"),
             ("状态", RIDER_STATUS.get(status, status)),
             ("常住街道", names.get(rider.home_street_id, rider.home_street_id)),
             ("站点", names.get(rider.station_id, rider.station_id)),
             ("注册时间", city_time(_utc(rider.register_time))),
             ("平台骑手号", rider.platform_rider_id)]
    card = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts)
    if history is None:
        events = f'<p class="muted" role="note">{e(history_note)}</p>'
    else:
        events = _entries((city_time(_utc(x.time), seconds=True), x.event_type, x.principal,
                           x.roles, e(x.summary)) for x in history)
    return (f'<section class="card trail" data-rider="{e(rider.rider_id)}"><h2>骑手 '
            f"<code>{e(rider.rider_id)}</code></h2><dl class=\"facts\">{card}</dl>"
            f"<h3>事件历史</h3>{events}</section>")


def kinds_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)
