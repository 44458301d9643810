"""`qiji stats ...`: the city's figures from the command line — a table in the terminal
(`show`), a file for the month's report (`export`, CSV or XLSX, over gRPC with progress), and
the operator's rebuild of the read model from the five services' logs (`rebuild`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import unicodedata
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from shared.tools import addressing
from shared.tools.addressing import Deployment

SERVICE = "statistics"
DIMENSIONS = ("city", "district", "street", "community", "station", "merchant", "platform",
              "track", "report_kind", "report_category")
GRANULARITIES = {"day": "GRANULARITY_DAY", "week": "GRANULARITY_WEEK",
                 "month": "GRANULARITY_MONTH", "range": "GRANULARITY_WHOLE_RANGE"}
FORMATS = ("csv", "xlsx")
RPC_TIMEOUT = 30.0
# An export may take long; it is abandoned only if nothing arrives for this long.
EXPORT_TIMEOUT = 3600.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    from shared.tools.cli import moment  # cli imports this module: import back when called

    stats = commands.add_parser(
        "stats", help="the city's figures: show a table, export a file, rebuild the read model",
        description="The city's figures (qiji.statistics.v1). A caller's token: --token, "
        "$QIJI_TOKEN, else the admin token beside the stack. Dates are the city's "
        "(China Standard Time); --to is the last day included.")
    addressing.add_arguments(stats)
    actions = stats.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text, description=help_text)
        addressing.add_arguments(parser)
        return parser

    for name, help_text in (("show", "a measure's figures as a table in the terminal"),
                            ("export", "figures as a CSV or XLSX file (Chinese headers), with "
                             "progress")):
        parser = action(name, help_text)
        if name == "show":
            parser.add_argument("--measure", required=True, help="a measure's name, e.g. "
                                "training_hours (`qiji stats measures` lists them)")
        else:
            parser.add_argument("--measure", action="append", required=True,
                                help="a measure's name (repeat for several, in one file)")
        parser.add_argument("--dimension", choices=DIMENSIONS, default="city",
                            help="what to break the figures down by (default: city)")
        parser.add_argument("--granularity", choices=sorted(GRANULARITIES), default="month",
                            help="the periods (default: month; range: one period)")
        parser.add_argument("--from", dest="start", required=True, type=moment,
                            metavar="DATE", help="the first day, e.g. 2026-03-01 (or a moment "
                            "in ISO 8601)")
        parser.add_argument("--to", dest="end", required=True, type=end_moment, metavar="DATE",
                            help="the last day included, e.g. 2026-03-31 (or, in ISO 8601, the "
                            "moment the range ends)")
        parser.add_argument("--as-of", type=moment, default=None, metavar="MOMENT",
                            help="the figures as they stood then (e.g. 2026-04-01: its "
                            "midnight in the city), beside today's")
        # No default to convert (argparse runs a string default through `type`).
        parser.add_argument("--within", default=None, type=_organisation_id,
                            metavar="ORGANISATION_ID",
                            help="only the figures within this district, street, community, "
                            "station, merchant or platform (the drill-down)")
        if name == "export":
            parser.add_argument("--format", choices=FORMATS, default=None,
                                help="csv or xlsx (default: from the file name's suffix)")
            parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                                help="where to write the file (written whole, then renamed)")
    action("measures", "every measure: its name, what the city calls it, its unit, what it "
           "can be broken down by")
    action("freshness", "how far the figures have read each service's log")
    rebuild = action("rebuild", "(operator) drop the read model and replay the five "
                     "services' logs into it, with progress; safe beside the running figures "
                     "process (each batch applies once)")
    rebuild.add_argument("--yes", action="store_true",
                         help="do it: the figures are empty until the replay reaches them")


def _organisation_id(raw: str) -> str:
    from shared.tools.cli import id_argument
    return id_argument(raw)


def end_moment(raw: str) -> datetime:
    """argparse type of --to: a bare date is the last day included (its range ends at the next
    midnight in the city); a moment is where the range ends."""
    from shared.tools.cli import moment  # cli imports this module: import back when called
    when = moment(raw)
    return when + timedelta(days=1) if len(raw.strip()) == 10 else when


def answer(args: argparse.Namespace) -> int:
    from shared.tools.cli import OK, CommandFailed
    deployment = addressing.resolve(args)
    if args.action == "rebuild":
        return rebuild(args, deployment)
    if args.action == "export" and args.format is None:
        suffix = args.output.suffix.lower().lstrip(".")
        if suffix not in FORMATS:
            raise CommandFailed(f"{args.output}: give --format csv or xlsx (or name the file "
                                ".csv or .xlsx)")
        args.format = suffix
    token = deployment.require_token()
    address = deployment.addresses[SERVICE]
    from qiji.statistics.v1 import statistics_service_pb2_grpc as pb_grpc
    with deployment.dialer()(SERVICE) as channel:
        stub = pb_grpc.StatisticsServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")]
        try:
            if args.action == "measures":
                _measures(stub, metadata)
            elif args.action == "freshness":
                _freshness(stub, metadata)
            elif args.action == "show":
                _show(stub, metadata, args)
            else:
                _export(stub, metadata, args)
        except grpc.RpcError as error:
            raise failed(error, address) from None
    return OK


def failed(error: grpc.RpcError, address: str) -> Exception:
    """The command's one line for a refused call: every field violation when there are some."""
    from shared.tools.cli import rpc_failed
    refused = rpc_failed(error, SERVICE, address)
    status = rpc_status.from_call(error) if isinstance(error, grpc.Call) else None
    bad = error_details_pb2.BadRequest()
    if status is not None and any(detail.Unpack(bad) and bad.field_violations
                                  for detail in status.details):
        refused.args = ("INVALID_ARGUMENT: " + "; ".join(
            f"{_flag(v.field)}: {v.description} ({v.reason})" for v in bad.field_violations),)
    return refused


def _flag(field: str) -> str:
    """The option that sets a request field, as the user typed it."""
    names = {"start_time": "--from", "end_time": "--to", "as_of_time": "--as-of",
             "within_organisation_id": "--within"}
    if field.startswith("measures["):  # measures[1]: the second --measure given
        return f"--measure #{int(field[len('measures['):-1]) + 1}"
    if field == "measures":
        return "--measure"
    return names.get(field, f"--{field.replace('_', '-')}")


def _ts(when: datetime | None) -> Timestamp | None:
    if when is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _query_fields(args: argparse.Namespace) -> dict[str, Any]:
    from qiji.statistics.v1 import statistics_service_pb2 as pb
    fields: dict[str, Any] = {
        "dimension": pb.Dimension.Value(f"DIMENSION_{args.dimension.upper()}"),
        "granularity": pb.Granularity.Value(GRANULARITIES[args.granularity]),
        "start_time": _ts(args.start), "end_time": _ts(args.end),
        "within_organisation_id": args.within or ""}
    if args.as_of is not None:
        fields["as_of_time"] = _ts(args.as_of)
    return fields


def _measures(stub: Any, metadata: list[tuple[str, str]]) -> None:
    from qiji.statistics.v1 import statistics_service_pb2 as pb
    reply = stub.ListMeasures(pb.ListMeasuresRequest(), metadata=metadata, timeout=RPC_TIMEOUT)
    rows = [[m.name, m.label, m.unit, m.service,
             pb.MeasureKind.Name(m.kind).removeprefix("MEASURE_KIND_").lower(),
             ",".join(pb.Dimension.Name(d).removeprefix("DIMENSION_").lower()
                      for d in m.dimensions)] for m in reply.measures]
    print(table(["名称 name", "指标", "单位", "service", "kind", "dimensions"], rows))


def _freshness(stub: Any, metadata: list[tuple[str, str]]) -> None:
    from qiji.statistics.v1 import statistics_service_pb2 as pb
    reply = stub.GetFreshness(pb.GetFreshnessRequest(), metadata=metadata, timeout=RPC_TIMEOUT)
    rows = [[p.service, str(p.position), str(p.last_position or "-"),
             str(max(0, p.last_position - p.position)) if p.last_position else "-",
             _local(p.read_time) if p.HasField("read_time") else "never"]
            for p in reply.positions]
    print(table(["service", "position", "last", "behind", "read"], rows))


def _local(stamp: Timestamp) -> str:
    return stamp.ToDatetime().replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _show(stub: Any, metadata: list[tuple[str, str]], args: argparse.Namespace) -> None:
    from qiji.statistics.v1 import statistics_service_pb2 as pb
    token, rows, measure, as_of = "", [], None, None
    while True:
        reply = stub.QueryFigures(pb.QueryFiguresRequest(
            measure=args.measure, page_token=token, **_query_fields(args)),
            metadata=metadata, timeout=RPC_TIMEOUT)
        measure, as_of = reply.measure, reply.as_of_time
        for f in reply.figures:
            row = [f.period_label, f.key_label or f.key or "-", f.value]
            if args.as_of is not None:
                row += [f.current_value, _difference(f.value, f.current_value)]
            rows.append(row)
        token = reply.next_page_token
        if not token:
            break
    from services.statistics.domain.facts import Dimension
    from services.statistics.export import DIMENSION_HEADERS
    heading = ["期间", DIMENSION_HEADERS[Dimension(args.dimension.upper())]]
    heading += ["当时数值", "现值", "更正"] if args.as_of is not None else ["数值"]
    assert measure is not None
    stood = as_of.ToDatetime().replace(tzinfo=None).isoformat(timespec="seconds")
    print(f"{measure.label} ({measure.name}, {measure.unit})   as of {stood}Z")
    print(table(heading, rows) if rows else "(no figures)")


def _difference(then: str, now: str) -> str:
    from decimal import Decimal

    from services.statistics.export import decimal_text
    return decimal_text(Decimal(now or then) - Decimal(then))


def _export(stub: Any, metadata: list[tuple[str, str]], args: argparse.Namespace) -> None:
    from qiji.statistics.v1 import statistics_service_pb2 as pb
    request = pb.ExportFiguresRequest(
        measures=args.measure,
        format=pb.EXPORT_FORMAT_XLSX if args.format == "xlsx" else pb.EXPORT_FORMAT_CSV,
        **_query_fields(args))
    partial = args.output.with_name(args.output.name + ".part")
    progress = Progress(sys.stderr)
    written = 0
    out = None
    try:
        for message in stub.ExportFigures(request, metadata=metadata, timeout=EXPORT_TIMEOUT):
            part = message.WhichOneof("part")
            if part == "started":
                # Opened once the figures accept the request: a refused one leaves no file.
                out = open(partial, "wb")  # closed below, whatever happens
                started = message.started
                progress.say(f"exporting {started.rows_total} figures as "
                             f"{started.file_name} to {args.output}")
                progress.total = started.rows_total
            elif part == "progress":
                progress.update(message.progress.rows_written)
            elif out is not None:
                out.write(message.chunk)
                written += len(message.chunk)
        if out is None:
            raise OSError(f"{SERVICE} sent no file")
        out.close()
        os.replace(partial, args.output)
    finally:
        if out is not None:
            out.close()
        partial.unlink(missing_ok=True)
    progress.done(f"wrote {args.output} ({written} bytes)")


class Progress:
    """Rows written of the total: one updating line on a terminal, a line now and then
    elsewhere (a log)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.total = 0
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last = 0.0

    def say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def update(self, rows: int) -> None:
        now = time.monotonic()
        share = f" ({100 * rows // self.total}%)" if self.total else ""
        line = f"  {rows}/{self.total} rows{share}"
        if self._tty:
            print(f"\r{line}", end="", file=self.stream, flush=True)
        elif now - self._last >= 1.0 or rows >= self.total:
            self.say(line)
            self._last = now

    def done(self, line: str) -> None:
        if self._tty:
            print(file=self.stream)
        self.say(line)


def rebuild(args: argparse.Namespace, deployment: Deployment) -> int:
    """Drops the figures' read model and replays the five services' logs into it, in this
    process, against the store the figures process uses (its STATISTICS_* / QIJI_* settings,
    or the stack's with --run-dir) and the feeds of the deployment, read with the caller's
    token (the city admin's: the feeds are the city admin's and Qiji's own). The running
    figures process may go on: each batch applies once, whoever reads it."""
    from services.statistics.service import make_statistics
    from shared.config import load_settings
    from shared.logging import configure
    from shared.tools.cli import OK, CommandFailed

    if not args.yes:
        raise CommandFailed("this drops every figure and replays the five logs (the figures "
                            "are empty until the replay reaches them): give --yes to do it")
    env = dict(os.environ)
    run_dir = getattr(args, "run_dir", None) or env.get("QIJI_RUN_DIR")
    if run_dir:
        from shared.tools.ops import OpsError
        from shared.tools.ops.stack import Stack
        try:
            stack = Stack.resolve(Path(run_dir), {})
        except OpsError as error:
            raise CommandFailed(str(error)) from None
        env = stack.settings_env()
        if not stack.settings().master_key:
            env["QIJI_MASTER_KEY_FILE"] = str(stack.master_key_file)
    env.update({f"STATISTICS_{s.upper()}_ADDRESS": a for s, a in deployment.addresses.items()
                if s != SERVICE})
    settings = load_settings(SERVICE, env)
    # The read model says how far it is as it goes (statistics.rebuild.progress lines).
    configure(SERVICE, "console")
    started = time.monotonic()
    statistics = make_statistics(settings, token=deployment.require_token())
    upstreams = ", ".join(f"{s} at {a}" for s, a in deployment.addresses.items()
                          if s in settings.upstreams and s not in ("platform", SERVICE))
    try:
        print(f"rebuilding the figures in {_where(settings)} from {upstreams}",
              file=sys.stderr, flush=True)
        events = statistics.rebuild()
        positions = {p.service: p.position for p in statistics.freshness()}
    except grpc.RpcError as error:
        from shared.tools.cli import rpc_failed
        raise rpc_failed(error, "a service's feed", upstreams) from None
    finally:
        statistics.close()
    print(f"rebuilt from {events} events in {time.monotonic() - started:.1f} s: "
          + ", ".join(f"{s} to {p}" for s, p in positions.items()))
    return OK


def _where(settings: Any) -> str:
    if settings.persistence == "postgres":
        return (f"PostgreSQL {settings.postgres_host}:{settings.postgres_port}/"
                f"{settings.postgres_dbname} schema {settings.postgres_schema}")
    return f"{settings.data_dir}"


def width(text: str) -> int:
    """Columns a text takes in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(heading: list[str], rows: list[list[str]]) -> str:
    widths = [max(width(str(r[i])) for r in [heading, *rows]) for i in range(len(heading))]
    numeric = [all(_is_number(str(r[i])) for r in rows) and rows for i in range(len(heading))]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            pad = " " * (widths[i] - width(str(cell)))
            out.append(pad + str(cell) if numeric[i] else str(cell) + pad)
        return "  ".join(out).rstrip()

    return "\n".join([line(heading), line(["-" * w for w in widths]),
                      *(line(r) for r in rows)])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

