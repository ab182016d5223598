"""Secrets are compared in constant time: no ``==``/``!=`` between a token, password, key
or VNC auth response and another value anywhere in the services' and libraries' code.

A source scan (the AST, not grep): a comparison whose operand names a secret
(``token``, ``password``, ``secret``, ``response`` of VNC auth ...) against anything but
a literal fails, unless it is listed below with the reason it is not a secret compare.
Use ``hmac.compare_digest`` (as ``proto/rfb/auth.py`` does for the VNC response).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = [*REPO.glob("libs/*/src/**/*.py"), *REPO.glob("services/*/src/**/*.py")]
SECRET = re.compile(r"(^|_)(token|tokens|password|passwd|secret|secret_key|response|"
                    r"challenge|token_hash|hashed)$", re.IGNORECASE)
# (path suffix, source of the comparison): why each is not a secret compared in variable time
ALLOWED = {
    # SHA-256 digests of tokens (what the stores keep), counted or matched against what
    # this process already holds: learning a digest's prefix gives no token (preimage).
    ("sessions/limits.py", "session.token_hash == hashed"),
    ("sessions/control.py", "session.token_hash == event['token_hash']"),
    # the secret key's file *path*, to name the option in a config error
    ("runtime/keys.py", "exc.path == secret"),
}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
        return None  # a call's result: judged by what it is compared with
    return None


def _secret_compares(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
            if not isinstance(op, ast.Eq | ast.NotEq):
                continue
            if isinstance(left, ast.Constant) or isinstance(right, ast.Constant):
                continue  # against a literal (None, "", a fixed name): no secret on the other side
            names = [_name(left), _name(right)]
            if any(n and SECRET.search(n) for n in names):
                found.append(ast.unparse(node))
    return found


def test_no_secret_is_compared_with_eq() -> None:
    assert len(SOURCES) > 50, "the source scan found too few files"
    offending = []
    for path in SOURCES:
        rel = path.relative_to(REPO).as_posix()
        for expr in _secret_compares(path):
            if not any(rel.endswith(suffix) and expr == allowed for suffix, allowed in ALLOWED):
                offending.append(f"{rel}: {expr}")
    assert not offending, "compare secrets with hmac.compare_digest:\n" + "\n".join(offending)


def test_the_scan_sees_a_variable_time_compare() -> None:
    """The check itself: it flags the comparisons it is meant to flag."""
    probe = REPO / "tests" / "unit" / "_compare_probe.txt"
    src = ("def f(token, stored, password, other):\n"
           "    return token == stored or other != password or token == 'x'\n")
    probe.write_text(src)
    try:
        found = _secret_compares(probe)
    finally:
        probe.unlink()
    assert sorted(found) == ["other != password", "token == stored"], found
