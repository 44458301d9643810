"""`qiji stats`: what its options mean before anything is asked — the city's days, the last day
included, the request fields they fill — and a table that lines up Chinese labels."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.tools import cli, stats_cli


def parsed(*argv: str):
    return cli.build_parser().parse_args(["stats", *argv])


def test_a_month_is_asked_from_its_first_day_to_its_last_in_the_citys_time():
    args = parsed("export", "--measure", "riders_registered", "--measure", "training_hours",
                  "--from", "2026-03-01", "--to", "2026-03-31", "-o", "march.xlsx")
    assert args.start == datetime(2026, 2, 28, 16, tzinfo=UTC)
    assert args.end == datetime(2026, 3, 31, 16, tzinfo=UTC)  # 1 April, midnight in the city
    assert args.measure == ["riders_registered", "training_hours"]
    assert (args.dimension, args.granularity, args.within, args.as_of) == (
        "city", "month", None, None)
    fields = stats_cli._query_fields(args)
    assert fields["within_organisation_id"] == "" and "as_of_time" not in fields
    moment = parsed("show", "--measure", "x", "--from", "2026-03-01T08:00:00+08:00",
                    "--to", "2026-03-02T08:00:00+08:00", "--as-of", "2026-04-01")
    assert moment.end == datetime(2026, 3, 2, 0, tzinfo=UTC)  # a moment is where it ends
    assert stats_cli._query_fields(moment)["as_of_time"].ToDatetime(tzinfo=UTC) == \
        datetime(2026, 3, 31, 16, tzinfo=UTC)


def test_field_violations_are_said_as_the_options_that_set_them():
    assert stats_cli._flag("measures[0]") == "--measure #1"
    assert stats_cli._flag("end_time") == "--to"
    assert stats_cli._flag("within_organisation_id") == "--within"
    assert stats_cli._flag("granularity") == "--granularity"


def test_a_table_lines_up_chinese_labels_and_right_aligns_numbers():
    lines = stats_cli.table(["期间", "街道", "数值"], [["2026-03", "荷花池街道", "12"],
                                                     ["2026-03", "西林街道", "7.5"]]).splitlines()
    assert [stats_cli.width(line) for line in lines[1:]] == [stats_cli.width(lines[1])] * 3
    assert lines[2].endswith("  12") and lines[3].endswith(" 7.5")
