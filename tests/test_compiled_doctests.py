"""The doctests of the compiled modules (setup.py), which pytest's --doctest-modules cannot see.

mypyc drops docstrings, so a compiled module offers no doctests. Each is run here from its
source, executed as a private copy under the module's own name (so that exceptions print as
in the docstrings), which stands in sys.modules only while its doctests run. Interpreted (SWITCHD_PURE=1) there is nothing to do here; --doctest-modules runs them.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import re
import sys

import pytest

from switch import compiled


def _with_doctests() -> list[str]:
    return sorted(name for name, (_ext, source) in compiled.extensions().items()
                  if re.search(r"^\s*>>> (?!#)", source.read_text(), re.MULTILINE))


@pytest.mark.parametrize("name", _with_doctests())
def test_doctests_of_a_compiled_module_pass_from_its_source(name: str) -> None:
    _ext, source = compiled.extensions()[name]
    built = importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    out = io.StringIO()
    runner = doctest.DocTestRunner(verbose=False)
    # While it runs, the copy stands in sys.modules (doctest finds a function's tests only when
    # its module is the one registered under its name); the compiled module is put back after.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
        for test in tests:
            runner.run(test, out=out.write)
    finally:
        sys.modules[name] = built
    assert runner.tries > 0 and runner.failures == 0, out.getvalue()


def test_the_compiled_modules_are_the_ones_setup_py_lists() -> None:
    # Either all of them (make venv) or none (SWITCHD_PURE=1): never a stale or partial build.
    listed = re.findall(r'^    "([a-z_/]+\.py)",$', (compiled.ROOT / "setup.py").read_text(), re.MULTILINE)
    assert len(listed) >= 10
    if compiled.extensions():
        assert compiled.check(listed) == []
        assert len(compiled.extensions()) == len(listed)
    else:
        assert compiled.stale() == []
