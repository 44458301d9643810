"""Every field violation names its reason explicitly (issue 23): a caller's program branches on
BadRequest.FieldViolation.reason, so none may fall back to the default FIELD_INVALID by
omission. An AST scan of the code that raises them: each `<violations>.add(…)` /
`<violations>.require(…)` and each `FieldViolation(…)` passes a reason, positionally or as
`reason=`.

The directories scanned are listed below; add a service's directory once its violations carry
reasons (merchants, badges, governance, credentials are another change's)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

DIRECTORIES = [
    "shared",
    "services/identity",
    "services/training",
    "services/platform",
]

# How many positional arguments carry the reason: add(field, description, reason),
# require(condition, field, description, reason), FieldViolation(field, description, reason).
REASON_POSITION = {"add": 2, "require": 3, "FieldViolation": 2}


def _receiver(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _kind(call: ast.Call) -> str | None:
    """"add"/"require" for a call on something named like a Violations, "FieldViolation" for
    a FieldViolation built directly; None for any other call."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "FieldViolation":
        return "FieldViolation"
    if isinstance(func, ast.Attribute):
        if func.attr == "FieldViolation":
            return "FieldViolation"
        if func.attr in ("add", "require") and "violations" in _receiver(func.value).lower():
            return func.attr
    return None


def calls_without_reason(source: str, name: str) -> tuple[list[str], int]:
    """The violation-raising calls of `source` that pass no reason, and how many there are in
    all."""
    missing, seen = [], 0
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        kind = _kind(node)
        if kind is None:
            continue
        seen += 1
        positional = [a for a in node.args if not isinstance(a, ast.Starred)]
        explicit = len(positional) > REASON_POSITION[kind] or any(
            k.arg == "reason" or k.arg is None for k in node.keywords)
        if not explicit:
            missing.append(f"{name}:{node.lineno}: {ast.unparse(node)[:90]}")
    return missing, seen


def python_files() -> list[Path]:
    return sorted(p for d in DIRECTORIES for p in (REPO / d).rglob("*.py"))


def test_every_violation_names_its_reason() -> None:
    missing, seen = [], 0
    for path in python_files():
        found, count = calls_without_reason(path.read_text(), str(path.relative_to(REPO)))
        missing += found
        seen += count
    assert not missing, "violations without an explicit reason:\n" + "\n".join(missing)
    # The scan sees what it is meant to: a refactoring that renamed every `violations` would
    # otherwise leave this test passing over nothing.
    assert seen >= 60, seen


@pytest.mark.parametrize("source", [
    'violations.add("phone", "bad")',
    'self.violations.require(ok, "phone", "bad")',
    'FieldViolation("phone", "bad")',
    'errors.FieldViolation("phone", description="bad")',
])
def test_the_scan_finds_a_violation_without_a_reason(source: str) -> None:
    assert calls_without_reason(source, "x")[0]


@pytest.mark.parametrize("source", [
    'violations.add("phone", "bad", "PHONE_INVALID")',
    'violations.require(ok, "phone", "bad", reason=PHONE_INVALID)',
    'FieldViolation("phone", "bad", PHONE_INVALID)',
    'seen.add(x)',  # not a Violations
])
def test_the_scan_accepts_an_explicit_reason(source: str) -> None:
    assert not calls_without_reason(source, "x")[0]
