"""The figures' files, as a department opens them: a CSV the csv module (and a spreadsheet
program, thanks to the byte-order mark) reads with its Chinese headers, an XLSX openpyxl loads,
the values exact; and a large export written in chunks with memory that stays flat however many
figures it holds."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import openpyxl

from services.statistics import export
from services.statistics.application import FigureRow
from services.statistics.domain.facts import Dimension, Measure, MeasureKind

HOURS = Measure(name="training_hours", label="培训学时", unit="小时", service="training",
                dimensions=frozenset({Dimension.CITY, Dimension.STREET}), description="",
                explanation="通过课程的学时之和，以场次开始时间计入当期。",
                kind=MeasureKind.FLOW, scale=60)
RIDERS = Measure(name="riders_registered", label="注册骑手", unit="人", service="identity",
                 dimensions=frozenset({Dimension.CITY, Dimension.STREET}), description="",
                 explanation="")
# 1 March 2026 in the city (UTC+8) is 28 February 16:00 UTC.
MARCH = datetime(2026, 2, 28, 16, tzinfo=UTC)
APRIL = datetime(2026, 3, 31, 16, tzinfo=UTC)


def row(value: str, key_label: str = "荷花池街道", current: str | None = None) -> FigureRow:
    return FigureRow(period_start=MARCH, period_end=APRIL, period_label="2026-03",
                     key="2f6b0d3c-0000-4000-8000-000000000001", key_label=key_label,
                     value=Decimal(value),
                     current_value=Decimal(current) if current is not None else None)


def written(fmt: str, sections: list[export.Section], dimension: Dimension = Dimension.STREET,
            as_of: bool = False, **options: Any) -> tuple[bytes, list[int]]:
    data, progress = [], []
    for part in export.write(fmt, sections, dimension, as_of, **options):
        if isinstance(part, export.Chunk):
            data.append(part.data)
        else:
            progress.append(part.rows_written)
    return b"".join(data), progress


def test_a_csv_starts_with_a_bom_and_holds_one_row_per_figure_under_chinese_headers():
    data, progress = written(export.CSV, [
        export.Section(HOURS, [row("37.5"), row("12", "红梅街道")]),
        export.Section(RIDERS, [row("3")])])
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert rows == [
        ["指标", "单位", "期间", "期间开始", "期间结束", "街道", "数值"],
        ["培训学时", "小时", "2026-03", "2026-03-01", "2026-03-31", "荷花池街道", "37.5"],
        ["培训学时", "小时", "2026-03", "2026-03-01", "2026-03-31", "红梅街道", "12"],
        ["注册骑手", "人", "2026-03", "2026-03-01", "2026-03-31", "荷花池街道", "3"]]
    assert progress[-1] == 3


def test_figures_as_they_stood_show_then_now_and_the_correction():
    data, _ = written(export.CSV, [export.Section(HOURS, [row("10", current="12.5"),
                                                         row("4", "红梅街道")])],
                      as_of=True)
    header, first, second = csv.reader(io.StringIO(data.decode("utf-8-sig")))
    assert header[-3:] == ["当时数值", "现值", "更正"]
    assert first[-3:] == ["10", "12.5", "2.5"]
    assert second[-3:] == ["4", "4", "0"]


def test_the_dimension_column_is_headed_in_the_citys_words():
    for dimension, heading in ((Dimension.CITY, "范围"), (Dimension.COMMUNITY, "社区"),
                               (Dimension.TRACK, "课程方向"), (Dimension.REPORT_KIND, "上报类型")):
        assert export.headers(dimension, as_of=False)[5] == heading
    assert set(export.DIMENSION_HEADERS) == set(Dimension)


def test_an_xlsx_opens_with_its_headers_numbers_and_days():
    data, progress = written(export.XLSX, [export.Section(HOURS, [row("37.5"), row("12")])],
                             as_of=False)
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    [sheet] = workbook.worksheets
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("指标", "单位", "期间", "期间开始", "期间结束", "街道", "数值")
    assert rows[1][:3] == ("培训学时", "小时", "2026-03")
    assert rows[1][3].date().isoformat() == "2026-03-01"
    assert rows[1][4].date().isoformat() == "2026-03-31"
    assert rows[1][5:] == ("荷花池街道", 37.5)
    assert rows[2][6] == 12 and isinstance(rows[2][6], int)
    assert progress[-1] == 2


def test_an_xlsx_says_on_a_second_sheet_when_its_figures_stand_and_what_each_measure_is():
    notes = export.notes([HOURS, RIDERS], APRIL, APRIL + timedelta(days=2))
    data, _ = written(export.XLSX, [export.Section(HOURS, [row("1", current="2")])],
                      as_of=True, notes=notes)
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    assert workbook.sheetnames == ["数据", "说明"]
    said = dict(workbook["说明"].iter_rows(values_only=True))
    assert said["数据截至"].startswith("2026-04-01 00:00:00")  # 1 April in the city
    # Each measure as the officials read it (口径说明), with the name a query gives it.
    assert said["培训学时（小时）"] == \
        "通过课程的学时之和，以场次开始时间计入当期。（指标代码：training_hours）"
    assert "注册骑手（人）" in said


def test_file_names_say_what_over_which_days_and_as_of_when():
    assert export.file_name(["training_hours"], MARCH, APRIL, None, export.CSV) == \
        "qiji-figures-training_hours-2026-03-01_2026-03-31.csv"
    assert export.file_name(["a", "b"], MARCH, APRIL, APRIL + timedelta(hours=1),
                            export.XLSX) == \
        "qiji-figures-2-measures-2026-03-01_2026-03-31-asof-2026-04-01.xlsx"


def many(n: int) -> Iterator[FigureRow]:
    """n figures, made as they are read (as the read model's pages are)."""
    for i in range(n):
        yield FigureRow(period_start=MARCH, period_end=APRIL, period_label="2026-03",
                        key=f"key-{i % 500}", key_label=f"第{i % 500}街道",
                        value=Decimal(i) / 4)


def peak_while_writing(fmt: str, n: int) -> tuple[int, int]:
    """(bytes written, peak traced memory) for an export of n figures, its chunks dropped as
    a stream's are once sent."""
    tracemalloc.start()
    try:
        size = 0
        for part in export.write(fmt, [export.Section(HOURS, many(n))], Dimension.STREET,
                                 False):
            if isinstance(part, export.Chunk):
                size += len(part.data)
        return size, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_csv_export_keeps_memory_flat():
    small_size, small_peak = peak_while_writing(export.CSV, 5_000)
    large_size, large_peak = peak_while_writing(export.CSV, 50_000)
    assert large_size > 9 * small_size  # ten times the figures...
    # ...in about the same memory: a chunk and a row, never the file.
    assert large_peak < small_peak * 1.5 + 256 * 1024, (small_peak, large_peak)
    assert large_peak < 2 * 1024 * 1024


def test_a_large_xlsx_export_keeps_memory_flat():
    # Smaller than the CSV's: openpyxl under tracemalloc writes about a thousand rows a second.
    small_size, small_peak = peak_while_writing(export.XLSX, 1_000)
    large_size, large_peak = peak_while_writing(export.XLSX, 10_000)
    assert large_size > 5 * small_size
    # The workbook's distinct texts stay in memory (the same 500 street names here), the
    # rows go to a temporary file.
    assert large_peak < small_peak * 1.5 + 512 * 1024, (small_peak, large_peak)
