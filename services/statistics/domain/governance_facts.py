"""What governance's events count as in the city's figures: its measures and a mapper per topic.

Reports (移动探头) are counted in the report's street, by kind and category, with the platform
and station of the rider who reported. Each is counted once when submitted; its handling once
per round: the first acknowledgement of a round, its closing as resolved or rejected, the
street office's verification. An unsatisfied rating may reopen a closed report (reports_reopened,
at the moment of the reopening) and start a second round: the first round's closing stays in
its period — the department did close it then, and governance's own resolution rate keeps it
too — and the second round's closing counts when it comes. When the street office upholds the
outcome instead, the report closes again as it was; that closing restores what was counted
already and counts nothing new. reports_in_hand (在办) is the stock of what is open: +1 at
submission and at a reopening, −1 at each closing and when merged as a duplicate.

The three rates (response, resolution, satisfaction) stay governance's (GetServiceRates):
the ratings here are counts of answers given, each at its own moment.

Help requests (帮扶) are counts only: nothing the rider said, nothing the caseworker wrote, not
even the kind (a kind of trouble by station could name a rider). A request asked at the
street office's counter is counted for its street and the city but never with a platform or a
station: the platform never hears of it, and no figure may tell it (nor one a request stored
before the channel was recorded: where it was asked is not known, so it is kept the quieter
way). Mediation cases (调处) count in their street."""

from __future__ import annotations

from typing import Any

from services.governance import events as topics
from services.statistics.domain.facts import (
    PLACE_DIMENSIONS,
    RIDER_DIMENSIONS,
    Dimension,
    Directory,
    Event,
    Fact,
    Mapper,
    Measure,
    MeasureKind,
    Memory,
    Where,
    measure_maker,
)
from services.statistics.domain.mapping import (
    fact,
    kept_moment,
    kept_where,
    moment,
    moment_kept,
    rider_where,
    where_kept,
)

SERVICE = "governance"

REPORTS_SUBMITTED = "reports_submitted"
REPORTS_MERGED_AS_DUPLICATES = "reports_merged_as_duplicates"
REPORTS_ACKNOWLEDGED = "reports_acknowledged"
REPORTS_CLOSED = "reports_closed"
REPORTS_RESOLVED = "reports_resolved"
REPORTS_REJECTED = "reports_rejected"
REPORTS_VERIFIED = "reports_verified"
REPORTS_REOPENED = "reports_reopened"
REPORTS_IN_HAND = "reports_in_hand"
RATINGS_SATISFIED = "report_ratings_satisfied"
RATINGS_BASICALLY_SATISFIED = "report_ratings_basically_satisfied"
RATINGS_UNSATISFIED = "report_ratings_unsatisfied"
HELP_REQUESTS_ASKED = "help_requests_asked"
HELP_REQUESTS_ANSWERED = "help_requests_answered"
MEDIATION_CASES_OPENED = "mediation_cases_opened"
MEDIATION_CASES_AGREED = "mediation_cases_agreed"
MEDIATION_CASES_FAILED = "mediation_cases_failed"
MEDIATION_CASES_REOPENED = "mediation_cases_reopened"

# The report kinds and categories as the city's reports name them (KEY_LABELS below).
REPORT_KIND_LABELS: dict[str, str] = {
    "ANOMALY_WARNING": "异常情况预警",
    "EMERGENCY": "突发事件直报",
    "PUBLIC_SENTIMENT": "社情民意传达",
}
REPORT_CATEGORY_LABELS: dict[str, str] = {
    "ROAD_HAZARD": "道路隐患",
    "FIRE": "火情",
    "PUBLIC_SECURITY": "治安",
    "PERSON_IN_NEED": "人员求助",
    "DISPUTE": "矛盾纠纷",
    "ENVIRONMENT": "环境卫生",
    "UTILITIES": "水电气热",
    "OTHER": "其他",
}

_D = Dimension
# catalogue.key_labels() reads them: the labels of the keys of REPORT_KIND and REPORT_CATEGORY.
KEY_LABELS = {_D.REPORT_KIND: REPORT_KIND_LABELS, _D.REPORT_CATEGORY: REPORT_CATEGORY_LABELS}
_REPORT = frozenset({_D.CITY, _D.DISTRICT, _D.STREET, _D.STATION, _D.PLATFORM,
                     _D.REPORT_KIND, _D.REPORT_CATEGORY})
_OF_RIDER = RIDER_DIMENSIONS
_IN_STREET = PLACE_DIMENSIONS
_ROUND = ("Each report once per round of handling (a report reopened and handled again counts "
          "again in the period of its second round)")
_ROUND_ZH = "每件事项每轮办理计一次（重办后再次办理的，在第二轮所在的期间再计一次）"


_measure = measure_maker(SERVICE)


MEASURES: tuple[Measure, ...] = (
    _measure(REPORTS_SUBMITTED, "骑手上报事项", "件", _REPORT,
             "Reports riders submitted (异常情况预警, 突发事件直报, 社情民意传达), at the moment "
             "of submission, in the report's street, by kind and category, with the platform "
             "and station of the rider. Duplicates of an open report count too "
             "(reports_merged_as_duplicates says how many).",
             "骑手上报的事项件数（异常情况预警、突发事件直报、社情民意传达），以上报时间计入"
             "当期；按事项所在街道、上报类型和类别统计，并计上报骑手的平台和站点。与在办事项"
             "重复的也计入（其件数见“合并重复事项”）。"),
    _measure(REPORTS_MERGED_AS_DUPLICATES, "合并重复事项", "件", _REPORT,
             "Reports linked to an open report of the same incident instead of being routed, "
             "at their submission, where the report was counted.",
             "因与同一事件的在办事项重复而合并、未另行派单的上报件数，以上报时间计入当期；"
             "计入该上报所计的街道、类型、类别、平台和站点。"),
    _measure(REPORTS_ACKNOWLEDGED, "签收事项", "件", _REPORT,
             f"Reports a department acknowledged: {_ROUND.lower()}, at the first "
             "acknowledgement of the round by any of its departments (a transfer within the "
             "round does not count it again).",
             f"承办部门签收的事项件数：{_ROUND_ZH}，以该轮任一部门首次签收的时间计入当期"
             "（同一轮内转办的不重复计）。"),
    _measure(REPORTS_CLOSED, "办结事项", "件", _REPORT,
             f"Reports closed, resolved or rejected, every department having answered: "
             f"{_ROUND.lower()}, at the closing. A closing that upholds a reopened report's "
             "outcome restores what was counted and counts nothing new.",
             f"各承办部门均已答复、已办结（已解决或退回）的事项件数：{_ROUND_ZH}，以办结时间"
             "计入当期。重办事项办结后维持原结果的，恢复原先所计，不另计新件。"),
    _measure(REPORTS_RESOLVED, "已解决事项", "件", _REPORT,
             "Reports closed as resolved (at least one department resolved it), as "
             "reports_closed counts them.",
             "办结时为已解决（至少一个承办部门已解决）的事项件数，计法同“办结事项”。"),
    _measure(REPORTS_REJECTED, "退回事项", "件", _REPORT,
             "Reports closed as rejected (every department rejected it: a duplicate, nothing "
             "to act on), as reports_closed counts them.",
             "办结时为退回（所有承办部门均退回：如重复上报、无须处置）的事项件数，计法同"
             "“办结事项”。"),
    _measure(REPORTS_VERIFIED, "核实事项", "件", _REPORT,
             "Resolved reports the street office verified, at the verification; an upheld "
             "outcome's verification again counts nothing new.",
             "经街道办核实的已解决事项件数，以核实时间计入当期；维持原结果后再次核实的，不另计。"),
    _measure(REPORTS_REOPENED, "重办事项", "件", _REPORT,
             "Closed reports the rider's unsatisfied rating reopened for the street office, "
             "at the moment of the reopening. What was counted of the earlier round stays in "
             "its period.",
             "骑手评价不满意、重新交街道办办理的已办结事项件数，以重办时间计入当期。上一轮已计"
             "的数字仍留在原来的期间。"),
    _measure(REPORTS_IN_HAND, "在办事项", "件", _REPORT,
             "Reports open at the end of the period: submitted or reopened and not closed "
             "since (a duplicate is merged at once and never open).",
             "期末尚在办理的事项件数（存量）：已上报或已重办、此后尚未办结的；重复上报的当即"
             "合并，不计为在办。", MeasureKind.STOCK),
    _measure(RATINGS_SATISFIED, "满意评价", "次", _REPORT,
             "Riders' ratings of a closed report's outcome answered 满意 (satisfied), at the "
             "moment of the rating; a report rated again after a second round counts each "
             "answer. The satisfaction rate is governance's (GetServiceRates).",
             "骑手对已办结事项的办理结果评价为“满意”的次数，以评价时间计入当期；第二轮办理后"
             "再次评价的，每次评价都计。满意率见“接诉即办 · 三率”。"),
    _measure(RATINGS_BASICALLY_SATISFIED, "基本满意评价", "次", _REPORT,
             "Ratings answered 基本满意 (basically satisfied), as report_ratings_satisfied.",
             "评价为“基本满意”的次数，计法同“满意评价”。"),
    _measure(RATINGS_UNSATISFIED, "不满意评价", "次", _REPORT,
             "Ratings answered 不满意 (unsatisfied), as report_ratings_satisfied; the first "
             "one of a report reopens it (reports_reopened).",
             "评价为“不满意”的次数，计法同“满意评价”；一件事项的首次不满意评价使其重办"
             "（见“重办事项”）。"),
    _measure(HELP_REQUESTS_ASKED, "帮扶求助", "件", _OF_RIDER,
             "Riders' requests for help (帮扶: hardship, legal aid, psychological support, "
             "work injury, labour disputes), at the moment asked, in the rider's home street. "
             "Counts only: nothing of what was said. With the rider's platform and station "
             "only when asked through the platform; one asked at the street office's counter "
             "counts for its street and the city, never for a platform.",
             "骑手提出的帮扶求助件数（生活困难、法律援助、心理支持、工伤、劳动争议），以求助"
             "时间计入当期；按骑手常住街道统计。只计件数，不含求助内容。经平台提出的，计骑手的"
             "平台和站点；在街道办窗口提出的，只计入该街道和全市，不计入任何平台。"),
    _measure(HELP_REQUESTS_ANSWERED, "帮扶办结", "件", _OF_RIDER,
             "Help requests every department they went to gave its outcome on, at the last "
             "outcome, where the request was counted.",
             "所转各部门均已答复结果的帮扶求助件数，以最后一个部门答复的时间计入当期；计入该"
             "求助所计的街道、平台和站点。"),
    _measure(MEDIATION_CASES_OPENED, "调处受理", "件", _IN_STREET,
             "Mediation cases (调处) the street office opened, at the opening, in its street.",
             "街道办受理的矛盾纠纷调处案件数，以受理时间计入当期；按受理的街道统计。"),
    _measure(MEDIATION_CASES_AGREED, "调处成功", "件", _IN_STREET,
             "Mediation cases that ended in an agreement, at the agreement, in the case's "
             "street; a case reopened (its agreement broken) and agreed again counts again.",
             "达成调解协议的调处案件数，以达成协议的时间计入当期；按案件所在街道统计。协议未"
             "履行而重启、再次达成协议的，再计一次。"),
    _measure(MEDIATION_CASES_FAILED, "调处未成", "件", _IN_STREET,
             "Mediation cases closed without an agreement, at the closing, in the case's "
             "street.",
             "未达成协议而结案的调处案件数，以结案时间计入当期；按案件所在街道统计。"),
    _measure(MEDIATION_CASES_REOPENED, "调处重启", "件", _IN_STREET,
             "Agreed mediation cases reopened after a follow-up found the agreement broken, "
             "at the follow-up, in the case's street.",
             "回访发现协议未履行而重启的已调解案件数，以回访时间计入当期；按案件所在街道统计。"),
)

_REPORT_MEMORY, _HELP, _CASE = "report", "help", "mediation"
_RATINGS = {"SATISFIED": RATINGS_SATISFIED, "BASICALLY_SATISFIED": RATINGS_BASICALLY_SATISFIED,
            "UNSATISFIED": RATINGS_UNSATISFIED}


# ---------------------------------------------------------------------------- reports


def _report(event: Event, memory: Memory) -> dict[str, Any]:
    return dict(memory.get(_REPORT_MEMORY, event.originator_id) or {})


def _report_fact(measure: str, event: Event, at: Any, report: dict[str, Any],
                 value: int = 1) -> Fact:
    return fact(measure, event, at, where_kept(report.get("where")), value,
                report_kind=str(report.get("kind", "")),
                report_category=str(report.get("category", "")))


def report_submitted(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    report = {"where": kept_where(rider_where(directory, s["rider_id"],
                                              street_id=s["street_id"])),
              "kind": s["kind"], "category": s["category"],
              "submitted_at": kept_moment(moment(event, "submitted_at")),
              "acknowledged": False, "upheld_version": 0}
    memory.put(_REPORT_MEMORY, event.originator_id, report)
    at = moment(event, "submitted_at")
    return [_report_fact(REPORTS_SUBMITTED, event, at, report),
            _report_fact(REPORTS_IN_HAND, event, at, report)]


def report_linked_as_duplicate(event: Event, directory: Directory, memory: Memory
                               ) -> list[Fact]:
    report = _report(event, memory)
    # Merged in the same save as its submission: at that moment, so that it is never open.
    at = moment_kept(report.get("submitted_at"), event.recorded_at)
    return [_report_fact(REPORTS_MERGED_AS_DUPLICATES, event, at, report),
            _report_fact(REPORTS_IN_HAND, event, at, report, -1)]


def report_acknowledged(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    report = _report(event, memory)
    if report.get("acknowledged"):
        return []  # another department of the round, or the receiver of a transfer
    memory.put(_REPORT_MEMORY, event.originator_id, {**report, "acknowledged": True})
    return [_report_fact(REPORTS_ACKNOWLEDGED, event, moment(event, "at"), report)]


def _upholds(event: Event, report: dict[str, Any], step: int) -> bool:
    """Whether the event is the closing (step 1) or the verification (step 2) an upheld
    outcome stores right after OutcomeUpheld, in the same save."""
    upheld = int(report.get("upheld_version") or 0)
    return bool(upheld) and event.originator_version == upheld + step


def report_closed(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    report = _report(event, memory)
    at = moment(event, "at")
    closing = [_report_fact(REPORTS_IN_HAND, event, at, report, -1)]
    if _upholds(event, report, 1):
        return closing
    outcome = REPORTS_RESOLVED if event.state.get("outcome") == "RESOLVED" else REPORTS_REJECTED
    return [_report_fact(REPORTS_CLOSED, event, at, report),
            _report_fact(outcome, event, at, report), *closing]


def report_verified(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    report = _report(event, memory)
    if _upholds(event, report, 2):
        return []
    return [_report_fact(REPORTS_VERIFIED, event, moment(event, "at"), report)]


def report_reopened(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    report = _report(event, memory)
    memory.put(_REPORT_MEMORY, event.originator_id, {**report, "acknowledged": False})
    at = moment(event, "at")
    return [_report_fact(REPORTS_REOPENED, event, at, report),
            _report_fact(REPORTS_IN_HAND, event, at, report)]


def report_outcome_upheld(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    report = _report(event, memory)
    memory.put(_REPORT_MEMORY, event.originator_id,
               {**report, "upheld_version": event.originator_version})
    return []


def report_rated(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    measure = _RATINGS.get(str(event.state.get("rating")))
    if measure is None:
        return []
    return [_report_fact(measure, event, moment(event, "at"), _report(event, memory))]


# ---------------------------------------------------------------------------- help (帮扶)


def help_requested(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    s = event.state
    where = rider_where(directory, s["rider_id"], street_id=s.get("home_street_id") or "",
                        platform_sees=s.get("asked_through") == "PLATFORM")
    memory.put(_HELP, event.originator_id, {"where": kept_where(where)})
    return [fact(HELP_REQUESTS_ASKED, event, moment(event, "requested_at"), where)]


def help_closed(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    where = where_kept((memory.get(_HELP, event.originator_id) or {}).get("where"))
    return [fact(HELP_REQUESTS_ANSWERED, event, moment(event, "at"), where)]


# ---------------------------------------------------------------------------- mediation (调处)


def mediation_opened(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
    street = str(event.state["street_id"])
    memory.put(_CASE, event.originator_id, {"street_id": street})
    return [fact(MEDIATION_CASES_OPENED, event, moment(event, "opened_at"),
                 Where(street_id=street))]


def _case_step(measure: str) -> Mapper:
    def mapper(event: Event, directory: Directory, memory: Memory) -> list[Fact]:
        street = str((memory.get(_CASE, event.originator_id) or {}).get("street_id", ""))
        return [fact(measure, event, moment(event, "at"), Where(street_id=street))]
    mapper.__name__ = f"mediation_{measure}"
    return mapper


mediation_agreed = _case_step(MEDIATION_CASES_AGREED)
mediation_failed = _case_step(MEDIATION_CASES_FAILED)
mediation_reopened = _case_step(MEDIATION_CASES_REOPENED)


MAPPERS: dict[str, Mapper] = {
    topics.REPORT_SUBMITTED: report_submitted,
    topics.REPORT_LINKED_AS_DUPLICATE: report_linked_as_duplicate,
    topics.REPORT_ACKNOWLEDGED: report_acknowledged,
    topics.REPORT_CLOSED: report_closed,
    topics.REPORT_VERIFIED: report_verified,
    topics.REPORT_REOPENED: report_reopened,
    topics.REPORT_OUTCOME_UPHELD: report_outcome_upheld,
    topics.REPORT_RATED: report_rated,
    topics.HELP_REQUESTED: help_requested,
    topics.HELP_CLOSED: help_closed,
    topics.MEDIATION_OPENED: mediation_opened,
    topics.MEDIATION_AGREED: mediation_agreed,
    topics.MEDIATION_FAILED: mediation_failed,
    topics.MEDIATION_REOPENED: mediation_reopened,
}
