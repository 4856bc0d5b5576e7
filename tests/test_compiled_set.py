"""The one rule for compiled modules (setup.py): a coroutine never suspends in ``except`` or ``finally``.

Compiled by mypyc, a coroutine that suspends inside an ``except`` block leaves the exception it
handles as the thread's handled exception: the next task the event loop runs sees it in
``sys.exc_info()``, every exception raised there is chained to it (``__context__``), and a
``finally`` block that suspends re-raises a stale one when it resumes. Under fuzzing that made
the daemon's memory grow with every undecodable frame and a ledger task end with another
request's ``CodecError`` (docs/notes/mypyc-exception-state.md). Interpreted, CPython swaps the
handled-exception state with each coroutine, so none of that happens. What must wait is done
after the block: note what happened inside it, act below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from switch import compiled

ROOT = Path(__file__).resolve().parent.parent
SUSPENDS = (ast.Await, ast.AsyncFor, ast.AsyncWith)


def suspensions_in_handlers(source: str, name: str = "m.py") -> list[str]:
    """Each await, ``async for`` or ``async with`` inside an except handler or a finally block."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Try | ast.TryStar):
            continue
        blocks = [("except", h.body) for h in node.handlers] + [("finally", node.finalbody)]
        for kind, body in blocks:
            for statement in body:
                found += [f"{name}:{sub.lineno}: suspends in {kind}" for sub in ast.walk(statement)
                          if isinstance(sub, SUSPENDS)]
    return found


@pytest.mark.parametrize("path", compiled.listed())
def test_no_compiled_coroutine_suspends_in_except_or_finally(path: str) -> None:
    assert suspensions_in_handlers((ROOT / path).read_text(encoding="utf-8"), path) == []


def test_the_rule_sees_each_kind() -> None:
    source = (
        "async def f():\n"
        "    try:\n"
        "        await g()\n"           # allowed: in the try body
        "    except E:\n"
        "        await h()\n"           # 5
        "    finally:\n"
        "        async with m():\n"     # 7
        "            pass\n"
    )
    assert suspensions_in_handlers(source) == ["m.py:5: suspends in except", "m.py:7: suspends in finally"]
