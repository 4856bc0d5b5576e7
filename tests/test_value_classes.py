"""Dataclasses with an __init__ of their own (see ledger.commands) keep their fields' contract.

``dataclasses.replace``, ``fields``, equality and repr go by the fields; the constructor
is written out by hand (a frozen dataclass's generated one is slower). So its parameters
must be the fields, in order, and where a field still declares a default, the same one.
Read from the sources.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _own_init_dataclasses() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in sorted([*ROOT.glob("switch/**/*.py"), *ROOT.glob("ledger/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if (isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "dataclass"
                        and any(k.arg == "init" and isinstance(k.value, ast.Constant) and k.value.value is False
                                for k in deco.keywords)):
                    found.append((module, node))
    return found


CLASSES = _own_init_dataclasses()


def test_the_hot_value_classes_are_found() -> None:
    names = {cls.name for _module, cls in CLASSES}
    assert {"Leg", "Command", "Result", "Request", "Outcome", "RequestContext", "_Pending"} <= names


@pytest.mark.parametrize(("module", "cls"), CLASSES, ids=[f"{m}.{c.name}" for m, c in CLASSES])
def test_init_takes_the_fields_in_order_with_their_defaults(module: str, cls: ast.ClassDef) -> None:
    fields = [(s.target.id, s.value) for s in cls.body
              if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    init = next(s for s in cls.body if isinstance(s, ast.FunctionDef) and s.name == "__init__")
    params = [a.arg for a in init.args.args[1:]]
    assert params == [name for name, _ in fields]
    defaults = dict(zip(params[len(params) - len(init.args.defaults):], init.args.defaults, strict=True))
    for name, declared in fields:
        if declared is None:
            continue
        if isinstance(declared, ast.Call):  # field(default=...): compare the default itself
            declared = next(k.value for k in declared.keywords if k.arg == "default")
        assert name in defaults and ast.dump(defaults[name]) == ast.dump(declared), name
    # Every parameter is stored under its own name (a field left out would be missing, not None).
    stored = {t.attr for s in ast.walk(init) if isinstance(s, ast.Assign)
              for t in s.targets if isinstance(t, ast.Attribute) and getattr(t.value, "id", "") == "self"}
    assert stored == set(params)
    runtime = getattr(importlib.import_module(module), cls.name)
    assert [f.name for f in dataclasses.fields(runtime)] == params
