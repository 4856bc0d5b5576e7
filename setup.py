"""Build hook: the request path's synchronous leaf modules compiled to C extensions with mypyc.

Everything else about the package is in pyproject.toml. The same source runs interpreted or
compiled; compiled, the daemon spends less CPU per request (docs/performance.md, "Compiled
modules"). mypyc ships with mypy, already a test dependency of ours.

``make venv`` installs the package interpreted (``SWITCHD_PURE=1 pip install -e``), then
compiles in place (``python setup.py build_ext --inplace``): mypyc type-checks the modules
against the installed libraries, which an isolated build environment would not have.
``SWITCHD_PURE=1`` anywhere builds nothing, and the package runs interpreted.
"""

from __future__ import annotations

import os

from setuptools import setup

# Only synchronous leaf modules: the codec, the fast codec, framing, MAC and validation, where
# most of the daemon's per-request CPU goes (docs/performance.md, "Compiled modules"). No module
# with a coroutine: compiled by mypyc, a coroutine suspended inside an `except` block leaves its
# exception as the thread's handled exception, which other tasks then see and chain to (a
# growing chain of exceptions, and a background task ending with another request's error;
# docs/notes/mypyc-exception-state.md). tests/test_compiled_set.py checks the rule.
# The Makefile reads this list (one quoted path per line), and so does switch.compiled.listed().
COMPILED = [
    "specs/fastcodec.py",
    "switch/codec.py",
    "switch/framing.py",
    "switch/mac.py",
    "switch/validation.py",
]


def extensions() -> list:
    if os.environ.get("SWITCHD_PURE") == "1":
        return []
    from mypyc.build import mypycify

    # The runtime library they share goes inside a package (switch/_compiled__mypyc*.so), not
    # at the top of the tree, where the editable install's import hook would not look.
    return mypycify(COMPILED, opt_level="3", group_name="switch._compiled")


setup(ext_modules=extensions())
