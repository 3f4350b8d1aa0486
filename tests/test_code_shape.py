"""Shape rules of the package's code that review would otherwise have to check by eye."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lam_fast"

#: issue 12: functions in these layers stay short; a longer one says why in its docstring
SHORT_FUNCTION_PACKAGES = ("data", "training", "eval")
MAX_FUNCTION_LINES = 60
LONG_REASON = "Long because"

#: identical runs of this many code lines in two places are one piece of code written twice
DUPLICATE_LINES = 6


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_functions_are_short_or_say_why():
    long = []
    for package in SHORT_FUNCTION_PACKAGES:
        for path in sorted((PACKAGE / package).rglob("*.py")):
            for node in _functions(ast.parse(path.read_text())):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, (f"functions over {MAX_FUNCTION_LINES} lines without '{LONG_REASON} ...' in the docstring:\n"
                      + "\n".join(long))


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are code: no blanks, comments, docstrings or
    function signatures (two functions of one API may share their parameter list)."""
    tree = ast.parse(path.read_text())
    prose = set()
    for node in _functions(tree):
        prose.update(range(node.lineno, node.body[0].lineno))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            prose.update(range(body[0].lineno, body[0].end_lineno + 1))
    kept = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if text and not text.startswith("#") and number not in prose:
            kept.append((number, text))
    return kept


def test_no_code_is_written_twice():
    seen = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = _code_lines(path)
        for i in range(len(lines) - DUPLICATE_LINES + 1):
            window = tuple(text for _, text in lines[i:i + DUPLICATE_LINES])
            if sum(len(text) > 12 for text in window) >= DUPLICATE_LINES - 1:  # not just brackets
                seen[window].append(f"{path.relative_to(ROOT)}:{lines[i][0]}")
    repeated = {places[0]: places[1:] for places in seen.values() if len(places) > 1}
    assert not repeated, "identical code blocks:\n" + "\n".join(f"{a} == {', '.join(b)}" for a, b in repeated.items())
