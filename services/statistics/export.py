"""The city's figures as a file a department opens in a spreadsheet: CSV (UTF-8 with a byte-order
mark, so that Excel and WPS read the Chinese headers) or XLSX, written row by row and handed out
in chunks. However many figures an export holds, it keeps one chunk of CSV in memory, or (XLSX)
openpyxl's write-only worksheet, which streams rows to a temporary file; only the distinct
texts of the workbook (labels, periods) stay in memory.

One row per figure, its columns (the city's own words):
  指标, 单位, 期间, 期间开始, 期间结束, <the dimension: 街道, 社区...>, 数值
and, for figures as they stood at a moment (as_of), instead of 数值:
  当时数值 (the value then), 现值 (the value now), 更正 (now minus then: the late corrections).
期间结束 is the period's last day (inclusive), as the city writes a period: 2026-03-01 至
2026-03-31."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from services.statistics.domain.facts import Dimension, Measure
from shared.values import CITY_TIME

CSV, XLSX = "CSV", "XLSX"
FORMATS = (CSV, XLSX)
MEDIA_TYPES = {
    CSV: "text/csv; charset=utf-8",
    XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
EXTENSIONS = {CSV: "csv", XLSX: "xlsx"}
# A chunk of the file per message: well under gRPC's 4 MiB message limit, and few messages.
CHUNK_BYTES = 64 * 1024
# A progress message after every so many rows written.
PROGRESS_ROWS = 2000
SHEET_TITLE = "数据"
NOTES_TITLE = "说明"

# The dimension's column, headed as the city's reports head it.
DIMENSION_HEADERS = {
    Dimension.CITY: "范围",
    Dimension.DISTRICT: "区",
    Dimension.STREET: "街道",
    Dimension.COMMUNITY: "社区",
    Dimension.STATION: "站点",
    Dimension.MERCHANT: "商户",
    Dimension.PLATFORM: "平台",
    Dimension.TRACK: "课程方向",
    Dimension.REPORT_KIND: "上报类型",
    Dimension.REPORT_CATEGORY: "上报类别",
}
LEADING_HEADERS = ("指标", "单位", "期间", "期间开始", "期间结束")
VALUE_HEADERS = ("数值",)
AS_OF_HEADERS = ("当时数值", "现值", "更正")


def headers(dimension: Dimension, as_of: bool) -> list[str]:
    return [*LEADING_HEADERS, DIMENSION_HEADERS[dimension],
            *(AS_OF_HEADERS if as_of else VALUE_HEADERS)]


@dataclass(frozen=True)
class Section:
    """One measure's figures, in the order the file holds them."""

    measure: Measure
    rows: Iterable[object]  # FigureRow (services/statistics/application.py)


@dataclass(frozen=True)
class Chunk:
    """The next bytes of the file."""

    data: bytes


@dataclass(frozen=True)
class Progress:
    rows_written: int


def notes(measures: Sequence[Measure], as_of: datetime | None, now: datetime
          ) -> list[tuple[str, str]]:
    """What an export's figures are, for its 说明 sheet: when they stand, and each measure's
    definition as the officials read it (口径说明: what is counted, and when)."""
    found = [("导出时间", _moment(now)),
             ("数据截至", _moment(as_of or now) + ("（当时数值；现值为导出时）" if as_of else "")),
             ("时间", "中国标准时间 (UTC+8)；期间结束为该期间最后一日")]
    found += [(f"{m.label}（{m.unit}）", f"{m.explanation}（指标代码：{m.name}）")
              for m in measures]
    return found


def _moment(at: datetime) -> str:
    return at.astimezone(CITY_TIME).strftime("%Y-%m-%d %H:%M:%S")


def file_name(measures: list[str], start: datetime, end: datetime, as_of: datetime | None,
              fmt: str) -> str:
    """e.g. qiji-figures-training_hours-2026-03-01_2026-03-31-asof-2026-04-01.xlsx: what, over
    which days (in the city's time, the last one included) and as of which day."""
    what = measures[0] if len(measures) == 1 else f"{len(measures)}-measures"
    first, last = local_day(start), last_day(end)
    name = f"qiji-figures-{what}-{first.isoformat()}_{last.isoformat()}"
    if as_of is not None:
        name += f"-asof-{local_day(as_of).isoformat()}"
    return f"{name}.{EXTENSIONS[fmt]}"


def local_day(at: datetime) -> date:
    return at.astimezone(CITY_TIME).date()


def last_day(end: datetime) -> date:
    """The last day of a period that ends (exclusively) at `end`."""
    return (end.astimezone(CITY_TIME) - timedelta(microseconds=1)).date()


def _cells(measure: Measure, row: object, as_of: bool) -> list[object]:
    """One figure's cells: texts, days and decimals (each format writes them its own way)."""
    value: Decimal = row.value  # type: ignore[attr-defined]
    cells: list[object] = [
        measure.label, measure.unit, row.period_label,  # type: ignore[attr-defined]
        local_day(row.period_start), last_day(row.period_end),  # type: ignore[attr-defined]
        row.key_label or row.key,  # type: ignore[attr-defined]
    ]
    if as_of:
        current: Decimal = row.current_value  # type: ignore[attr-defined]
        if current is None:
            current = value
        cells += [value, current, current - value]
    else:
        cells.append(value)
    return cells


def write(fmt: str, sections: Iterable[Section], dimension: Dimension, as_of: bool, *,
          notes: Sequence[tuple[str, str]] = (), chunk_bytes: int = CHUNK_BYTES,
          progress_rows: int = PROGRESS_ROWS) -> Iterator[Chunk | Progress]:
    """The file, as chunks in order, with a Progress after every `progress_rows` rows and one
    at the end. Rows are read from `sections` only as the file is consumed. `notes`: what the
    figures are (as of when, each measure's definition), as (item, text): an XLSX's second
    sheet 说明; a CSV stays one plain table."""
    if fmt == CSV:
        return _csv(sections, dimension, as_of, chunk_bytes, progress_rows)
    if fmt == XLSX:
        return _xlsx(sections, dimension, as_of, notes, chunk_bytes, progress_rows)
    raise ValueError(f"no such export format: {fmt}")


def _csv(sections: Iterable[Section], dimension: Dimension, as_of: bool, chunk_bytes: int,
         progress_rows: int) -> Iterator[Chunk | Progress]:
    buffer = io.StringIO()
    # The BOM: without it, spreadsheet programs on Chinese Windows read UTF-8 as GBK.
    buffer.write("\ufeff")
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    writer.writerow(headers(dimension, as_of))
    written = 0
    for section in sections:
        for row in section.rows:
            writer.writerow([_text(c) for c in _cells(section.measure, row, as_of)])
            written += 1
            if buffer.tell() >= chunk_bytes:
                yield Chunk(buffer.getvalue().encode("utf-8"))
                buffer.seek(0)
                buffer.truncate()
            if written % progress_rows == 0:
                yield Progress(written)
    if buffer.tell():
        yield Chunk(buffer.getvalue().encode("utf-8"))
    yield Progress(written)


def decimal_text(value: Decimal) -> str:
    """A figure exact and plain, as the wire and the CSV give it: "12", "37.5" (never "1E+1"
    or "37.50")."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _text(cell: object) -> str:
    if isinstance(cell, Decimal):
        return decimal_text(cell)
    if isinstance(cell, date):
        return cell.isoformat()
    return str(cell)


def _xlsx(sections: Iterable[Section], dimension: Dimension, as_of: bool,
          notes: Sequence[tuple[str, str]], chunk_bytes: int, progress_rows: int
          ) -> Iterator[Chunk | Progress]:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(SHEET_TITLE)
    title = headers(dimension, as_of)
    # Widths before any row: a write-only sheet takes none after.
    for letter, width in zip("ABCDEFGHI", (16, 6, 24, 12, 12, 24, 12, 12, 12), strict=False):
        sheet.column_dimensions[letter].width = width
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    head = []
    for text in title:
        cell = WriteOnlyCell(sheet, value=text)
        cell.font = bold
        head.append(cell)
    sheet.append(head)
    written = 0
    for section in sections:
        for row in section.rows:
            sheet.append([_number(c) for c in _cells(section.measure, row, as_of)])
            written += 1
            if written % progress_rows == 0:
                yield Progress(written)
    if notes:
        about = workbook.create_sheet(NOTES_TITLE)
        about.column_dimensions["A"].width = 16
        about.column_dimensions["B"].width = 80
        for item, text in notes:
            about.append([item, text])
    # The zip is written at the end (its directory comes last): to a temporary file, then read
    # back in chunks. Removed whatever happens, even when the caller stops reading.
    handle, path = tempfile.mkstemp(prefix="qiji-figures-", suffix=".xlsx")
    os.close(handle)
    try:
        workbook.save(path)
        yield Progress(written)
        with open(path, "rb") as saved:
            while data := saved.read(chunk_bytes):
                yield Chunk(data)
    finally:
        os.unlink(path)


def _number(cell: object) -> object:
    # Whole numbers as integers (Excel shows 12, not 12.0); the rest as exact decimals.
    if isinstance(cell, Decimal) and cell == cell.to_integral_value():
        return int(cell)
    return cell
