"""Every `qiji` subcommand answers bad input with one clear line and a non-zero exit, never a
traceback. The cases are made from the command's own parser: a new subcommand, option or
argument is covered as soon as it exists (a new positional argument needs its bad values in
BAD below, or the first test says so).

Nothing here reaches a running Qiji: the commands that would call one are pointed at ports
where nothing listens, and the data folder is an empty one of the test's own."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.tools import addressing, cli
from shared.tools.demo import free_port_base

ID = "0d6c2f3e-6a51-4a8e-9a0e-5b3c0f2d7e11"
# A value each positional argument accepts, and values it must refuse (with one line).
GOOD: dict[str, str] = {
    "service": "identity", "aggregate_id": ID, "moment": "2026-03-01", "services": "identity",
    "perk_id": ID, "rider_id": ID, "badge_class_id": ID, "award_id": ID,
    "file": "{tmp}/credential.jwt", "principal": "platform-company",
}
BAD: dict[str, list[str]] = {
    "service": ["billing", ""],
    "aggregate_id": ["foo", "", "../../etc/passwd", ID + "0"],
    "moment": ["2026-13-45", "yesterday", "", "2026-03-01T25:00"],
    "services": ["foo", "identity,training", "platform"],
    "perk_id": ["not-a-perk"], "rider_id": ["R-1"], "badge_class_id": ["金蜂骑士"],
    "award_id": ["award-1"],
    "file": ["{tmp}/missing.jwt", "{tmp}", "{tmp}/empty.jwt", "{tmp}/binary.jwt"],
    "principal": ["", "platform company", "a" * 129, "tab\there"],
}
# Options that take any text, and why; any other option without a type needs bad values here.
FREE_TEXT = {
    "--host": "a host name or address: dialled, and refused by the network if wrong",
    "--token": "a token: refused by the service if wrong (UNAUTHENTICATED, one line)",
    "--certificate-subject": "a certificate's name: only ever compared",
    "--feed-token": "a token: refused by the feed if wrong (UNAUTHENTICATED, one line)",
    "--measure": "a measure's name: one the catalogue lacks is refused by the figures "
                 "(INVALID_ARGUMENT MEASURE_UNKNOWN, one line)",
}
BAD_OPTIONS: dict[str, list[str]] = {
    "--organisation-id": ["nope", "12345"],
    "--subscribe": ["qiji.nope", "qiji.training.v1.NoSuchEvent"],
    "--checkpoints": ["{tmp}/missing.jsonl", "{tmp}/credential.jwt", "{tmp}/binary.jwt"],
    "--out": ["{tmp}"],
}
# Values no typed option accepts.
NOT_A_VALUE = ["nope!", ""]
PORT_BASES = ["70000", "0", "-5", "65529"]


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
           ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable subcommand: its words (`audit`, `as-of`) and its parser."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser
        return
    for name, child in subcommands[0].choices.items():
        yield from leaves(child, (*path, name))


LEAVES = dict(leaves(cli.build_parser()))


def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


# Values for the options a subcommand requires.
REQUIRED = {"--role": "auditor", "--organisation-id": ID, "--out": "{tmp}/witness.jsonl",
            "--measure": "riders_registered", "--from": "2026-03-01", "--to": "2026-03-31",
            "--output": "{tmp}/figures.csv"}


def good_words(parser: argparse.ArgumentParser, *, but: str = "", bad: str = "") -> list[str]:
    """Values for every positional argument (`bad` for the one named `but`) and every
    required option."""
    words = [bad if a.dest == but else GOOD[a.dest] for a in positionals(parser)]
    for option in options(parser):
        if option.required:
            words += [option.option_strings[-1], REQUIRED[option.option_strings[-1]]]
    return words


def elsewhere(parser: argparse.ArgumentParser) -> list[str]:
    """Where nothing listens, with a token, for the commands that call Qiji."""
    if any(o.dest == "port_base" for o in options(parser)) and "run" not in parser.prog:
        return ["--port-base", "{base}", "--token", "qiji_some-token"]
    return []


def cases() -> Iterator[Any]:
    for path, parser in LEAVES.items():
        name = " ".join(path)
        required = [a for a in parser._actions if a.required]
        if required:
            yield pytest.param([*path], id=f"{name}: nothing given")
        yield pytest.param([*path, *good_words(parser), "--no-such-option"],
                           id=f"{name}: an unknown option")
        for action in positionals(parser):
            for value in BAD[action.dest]:
                yield pytest.param(
                    [*path, *good_words(parser, but=action.dest, bad=value),
                     *elsewhere(parser)], id=f"{name}: {action.dest}={value!r}")
        for action in options(parser):
            flag = action.option_strings[-1]
            if flag in BAD_OPTIONS:
                values = BAD_OPTIONS[flag]
            elif action.choices:
                values = ["no-such-choice"]
            elif action.type is not None and action.type not in (str, Path):
                values = [*NOT_A_VALUE, *(PORT_BASES if action.type is addressing.port_base
                                          else [])]
            else:
                continue
            for value in values:
                yield pytest.param([*path, *good_words(parser), flag, value],
                                   id=f"{name}: {flag}={value!r}")
        if elsewhere(parser):
            # Well-formed, but Qiji is not where the command looks, or no token is at hand.
            yield pytest.param([*path, *good_words(parser), *elsewhere(parser)],
                               id=f"{name}: Qiji not there")
            yield pytest.param([*path, *good_words(parser), "--port-base", "{base}"],
                               id=f"{name}: no token")
            yield pytest.param([*path, *good_words(parser), "--run-dir", "{tmp}"],
                               id=f"{name}: not a run directory")
            yield pytest.param([*path, *good_words(parser), "--run-dir", "{tmp}",
                                "--port-base", "{base}"], id=f"{name}: two places at once")
            yield pytest.param([*path, *good_words(parser), "--address", "badges:50054"],
                               id=f"{name}: an address without its service")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """An environment that names no Qiji: an empty data folder, no token, no addresses."""
    for name in list(__import__("os").environ):
        if name.startswith(("QIJI_", "RELAY_", *(f"{s.upper()}_" for s in cli.SERVICES))):
            monkeypatch.delenv(name)
    monkeypatch.setenv("QIJI_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "credential.jwt").write_text("eyJhbGciOiJFZERTQSJ9.e30.c2ln\n")
    (tmp_path / "empty.jwt").write_text("")
    (tmp_path / "binary.jwt").write_bytes(b"\xff\xfe\x00\x81")
    return {"tmp": str(tmp_path), "base": str(free_port_base())}


def test_every_argument_has_bad_values_to_try() -> None:
    missing = {f"{' '.join(path)} {a.dest}" for path, parser in LEAVES.items()
               for a in positionals(parser) if a.dest not in BAD or a.dest not in GOOD}
    assert not missing, f"add them to GOOD and BAD: {sorted(missing)}"
    text = {f"{' '.join(path)} {a.option_strings[-1]}" for path, parser in LEAVES.items()
            for a in options(parser) if a.type in (None, str) and not a.choices
            and a.nargs != 0 and a.option_strings[-1] not in {*FREE_TEXT, *BAD_OPTIONS}}
    assert not text, f"add bad values to BAD_OPTIONS, or say in FREE_TEXT why any do: {text}"


@pytest.mark.parametrize("argv", list(cases()))
def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(
        argv: list[str], world: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [word.format(**world) for word in argv]
    code = cli.main(argv)  # an exception escaping here is the traceback a user would see
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if line.strip()]
    assert code != 0, (argv, out, err)
    assert "Traceback" not in out + err
    assert "unexpected error" not in err, err
    assert len(said) == 1, said
    assert said[0].startswith("qiji"), said


@pytest.mark.parametrize("path", list(LEAVES), ids=" ".join)
def test_every_subcommand_has_its_own_help(
        path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*path, "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: qiji {' '.join(path)}")
