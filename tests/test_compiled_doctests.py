"""The doctests of the compiled modules (setup.py), which pytest's --doctest-modules cannot see.

mypyc drops docstrings, so a compiled module offers no doctests. Each is run here from its
source, executed as a private copy under the module's own name (so that exceptions print as
in the docstrings), which stands in sys.modules only while its doctests run. Interpreted (SWITCHD_PURE=1) there is nothing to do here; --doctest-modules runs them.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.machinery
import importlib.util
import io
import os
import re
import sys
from pathlib import Path

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
    listed = compiled.listed()
    assert len(listed) >= 5
    if compiled.extensions():
        assert compiled.check(listed) == []
        assert len(compiled.extensions()) == len(listed)
    else:
        assert compiled.stale() == []


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    # What stops the suite and makes the daemon warn (compiled_modules_stale) after an edit.
    pkg = tmp_path / "switch"
    pkg.mkdir()
    source = pkg / "pipeline.py"
    source.write_text("X = 1\n")
    ext = pkg / ("pipeline" + importlib.machinery.EXTENSION_SUFFIXES[0])
    ext.write_bytes(b"")
    (pkg / ("_compiled__mypyc" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    os.utime(source, (1_000, 1_000))
    os.utime(ext, (2_000, 2_000))
    assert list(compiled.extensions(tmp_path)) == ["switch.pipeline"]  # not the shared library
    assert compiled.stale(tmp_path) == []
    os.utime(source, (3_000, 3_000))  # edited after the build
    assert compiled.stale(tmp_path) == ["switch.pipeline"]
