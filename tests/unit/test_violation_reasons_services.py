"""Every field violation merchants, badges, governance and credentials raise carries a reason
a caller's program can branch on (issue 23), and names enum values as the wire does.

Read from the source, so a new check written without a reason fails here, not in an
integrator's program: each `.add(` / `.require(` on a Violations (named `v` or `violations`
throughout these services) and each `FieldViolation(` passes its reason explicitly, and a
reason written out is UPPER_SNAKE."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("merchants", "badges", "governance", "credentials")
VIOLATIONS_NAMES = {"v", "violations"}
# Where the reason sits among positional arguments, after the field and description.
REASON_AT = {"add": 2, "require": 3, "FieldViolation": 2}
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")


def _calls() -> list[tuple[str, int, str, ast.Call]]:
    found = []
    for service in SERVICES:
        for path in sorted((ROOT / "services" / service).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                if isinstance(f, ast.Attribute) and f.attr in ("add", "require") \
                        and isinstance(f.value, ast.Name) and f.value.id in VIOLATIONS_NAMES:
                    found.append((str(path.relative_to(ROOT)), node.lineno, f.attr, node))
                elif (isinstance(f, ast.Name) and f.id == "FieldViolation") or (
                        isinstance(f, ast.Attribute) and f.attr == "FieldViolation"):
                    found.append((str(path.relative_to(ROOT)), node.lineno, "FieldViolation",
                                  node))
    return found


CALLS = _calls()


def _reason(kind: str, call: ast.Call) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == "reason":
            return keyword.value
    at = REASON_AT[kind]
    return call.args[at] if len(call.args) > at else None


def test_the_check_sees_the_services_violations():
    # Not vacuous: every kind of call is there, in each service that validates requests.
    assert {kind for _, _, kind, _ in CALLS} == {"add", "require", "FieldViolation"}
    assert {path.split("/")[1] for path, _, _, _ in CALLS} >= {"merchants", "badges",
                                                              "governance"}


@pytest.mark.parametrize("path,line,kind,call", CALLS,
                         ids=[f"{p}:{n}" for p, n, _, _ in CALLS])
def test_every_violation_passes_a_reason(path, line, kind, call):
    reason = _reason(kind, call)
    assert reason is not None, f"{path}:{line}: {kind}(...) gives no reason"
    if isinstance(reason, ast.Constant):
        assert isinstance(reason.value, str) and UPPER_SNAKE.match(reason.value), (
            f"{path}:{line}: reason {reason.value!r} is not UPPER_SNAKE")


def test_descriptions_name_no_python_reprs():
    """`must be one of ['CITY']` is Python talking; callers read the wire's names."""
    for service in SERVICES:
        for path in sorted((ROOT / "services" / service).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"one of \{\[", text), path
            assert not re.search(r"for \w+ in (Category|ReportKind|PerkKind)\]", text), path

