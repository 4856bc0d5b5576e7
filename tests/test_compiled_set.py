"""The compiled set (setup.py) holds only synchronous leaf modules.

Compiled by mypyc, a coroutine that is suspended inside an ``except`` block leaves the exception
it handles as the thread's handled exception: the next task the event loop runs sees it in
``sys.exc_info()``, every exception raised there is chained to it (``__context__``), and a
re-raise can raise it instead of its own error. Under fuzzing that made the daemon's memory grow
with every undecodable frame and a ledger task end with another request's ``CodecError``
(docs/notes/mypyc-exception-state.md). Interpreted, CPython swaps the handled-exception state
with each coroutine, so none of that happens: a compiled module may not define a coroutine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from switch import compiled

ROOT = Path(__file__).resolve().parent.parent


def _coroutines(source: Path) -> list[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    return [f"{source.name}:{node.lineno}" for node in ast.walk(tree)
            if isinstance(node, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor | ast.AsyncWith)]


@pytest.mark.parametrize("path", compiled.listed())
def test_a_compiled_module_defines_no_coroutine(path: str) -> None:
    assert _coroutines(ROOT / path) == []


def test_the_rule_sees_a_coroutine(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("async def f():\n    await g()\n")
    assert _coroutines(source) == ["m.py:1", "m.py:2"]
