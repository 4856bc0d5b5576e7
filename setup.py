"""Build hook: the request path's modules compiled to C extensions with mypyc.

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

# The modules every request passes through (py-spy of bench/e2e's closed loop), and what
# they import from each other: compiled, the daemon spends about a third less CPU per request and
# the closed loop approves about a quarter more per second on 2 cores (docs/performance.md,
# "Compiled modules"). Not ledger/coalesce.py: compiled, a failing statement made asyncio's task
# step raise "invalid exception object" and then crash the process.
# The one rule for these modules: a coroutine never suspends inside an `except` or `finally`
# block. Compiled by mypyc, one that does leaves the exception it handles as the thread's
# handled exception, which other tasks then see, chain to and re-raise (a memory leak under
# fuzzing and a task ending with another request's error:
# docs/notes/mypyc-exception-state.md). tests/test_compiled_set.py checks it.
# The Makefile reads this list (one quoted path per line), and so does switch.compiled.listed().
COMPILED = [
    "specs/fastcodec.py",
    "switch/codec.py",
    "switch/context.py",
    "switch/dedup.py",
    "switch/framing.py",
    "switch/handlers/financial.py",
    "switch/mac.py",
    "switch/pipeline.py",
    "switch/routing.py",
    "switch/server.py",
    "switch/terminals.py",
    "switch/validation.py",
    "ledger/commands.py",
    "ledger/deadlines.py",
    "ledger/engine.py",
    "ledger/loyalty/lookup.py",
    "ledger/loyalty/operations.py",
    "ledger/loyalty/outcomes.py",
    "ledger/loyalty/rules.py",
]


def extensions() -> list:
    if os.environ.get("SWITCHD_PURE") == "1":
        return []
    from mypyc.build import mypycify

    # The runtime library they share goes inside a package (switch/_compiled__mypyc*.so), not
    # at the top of the tree, where the editable install's import hook would not look.
    return mypycify(COMPILED, opt_level="3", group_name="switch._compiled")


setup(ext_modules=extensions())
