"""The programme's areas as the city reports them, and which measures of the catalogue each
shows. The catalogue (ListMeasures) is the truth about measures: an area takes the measures of
its service, and the two services that feed two areas each (merchants: perks and care
packages; badges: badges and volunteer hours) are split by what the measure counts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.console.source import MeasureInfo


def _is_care(m: MeasureInfo) -> bool:
    return "care" in m.name or "礼包" in m.label


def _is_volunteering(m: MeasureInfo) -> bool:
    return "volunteer" in m.name or "志愿" in m.label


@dataclass(frozen=True)
class Area:
    slug: str
    label: str
    service: str
    takes: Callable[[MeasureInfo], bool]
    about: str

    def measures(self, catalogue: Iterable[MeasureInfo]) -> list[MeasureInfo]:
        return [m for m in catalogue if m.service == self.service and self.takes(m)]


AREAS = (
    Area("riders", "骑手", "identity", lambda m: True,
         "骑手注册、平台核验、在岗与岗前培训合格"),
    Area("training", "四时课程", "training", lambda m: True,
         "红色思政、技能培训、个性优化、基层治理四条课程的场次、到课与学时"),
    Area("merchants", "友好商户与优惠", "merchants", lambda m: not _is_care(m),
         "友好商户、优惠项目、领取、核销与冲正"),
    Area("care", "关爱礼包", "merchants", _is_care,
         "街道关爱礼包的分配与发放"),
    Area("volunteering", "爱心公益", "badges", _is_volunteering,
         "社区确认的志愿服务时长"),
    Area("badges", "徽章", "badges", lambda m: not _is_volunteering(m),
         "金蜂骑士、青蜂骑士等徽章的授予与撤销"),
    Area("governance", "基层治理", "governance", lambda m: True,
         "预警、直报、社情民意的上报与办理，以及响应率、办结率、满意率（接诉即办）"),
)
BY_SLUG = {a.slug: a for a in AREAS}

# The drill-down: the dimension that breaks a level into the next (city → district → street
# → community), by the kind of the organisation the page is within.
CHILD_DIMENSION = {"": "DISTRICT", "CITY": "DISTRICT", "DISTRICT": "STREET",
                   "STREET": "COMMUNITY"}
# Breakdowns beside the places, shown for a measure that has them.
OTHER_DIMENSIONS = ("TRACK", "REPORT_KIND", "REPORT_CATEGORY", "MERCHANT", "STATION",
                    "PLATFORM")
DIMENSION_LABELS = {
    "CITY": "全市", "DISTRICT": "区", "STREET": "街道", "COMMUNITY": "社区",
    "STATION": "站点", "MERCHANT": "商户", "PLATFORM": "平台", "TRACK": "课程",
    "REPORT_KIND": "上报类型", "REPORT_CATEGORY": "事项类别"}
KIND_LABELS = {"CITY": "市", "DISTRICT": "区", "STREET": "街道", "COMMUNITY": "社区",
               "STATION": "站点", "MERCHANT": "商户", "PLATFORM": "平台",
               "DEPARTMENT": "部门"}
SERVICE_LABELS = {"identity": "骑手", "training": "培训", "merchants": "商户",
                  "badges": "徽章", "governance": "治理"}
