"""Which of our modules run compiled (mypyc, see setup.py), and whether one is stale.

A compiled module is a C extension beside its source, and Python loads it instead of the .py.
Edit the .py and the extension no longer says what the source says: ``make venv`` rebuilds it.
Until then the daemon logs a warning at start and the test suite refuses to run.

    python -m switch.compiled [SOURCE ...]   # exit 1 unless each (default: setup.py's list) is compiled and fresh
"""

from __future__ import annotations

import importlib.machinery
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("switch", "ledger", "specs")


def _module(source: Path, root: Path = ROOT) -> str:
    return ".".join(source.relative_to(root).with_suffix("").parts)


def extensions(root: Path = ROOT) -> dict[str, tuple[Path, Path]]:
    """Module name -> (compiled extension, source) for each of our modules built beside its .py."""
    found: dict[str, tuple[Path, Path]] = {}
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for package in PACKAGES:
            for ext in (root / package).rglob("*" + suffix):
                source = ext.with_name(ext.name[: -len(suffix)] + ".py")
                if source.exists():  # (the runtime library they share has no source)
                    found[_module(source, root)] = (ext, source)
    return found


def stale(root: Path = ROOT, built: dict[str, tuple[Path, Path]] | None = None) -> list[str]:
    """Modules edited since they were compiled (their source is newer than their extension;
    ``make venv`` touches every extension after a build, since mypyc rewrites only what changed).
    ``built``: what :func:`extensions` found, when the caller has it already."""
    found = extensions(root) if built is None else built
    return sorted(name for name, (ext, source) in found.items() if ext.stat().st_mtime < source.stat().st_mtime)


def listed(root: Path = ROOT) -> list[str]:
    """The sources setup.py compiles (its COMPILED list: one quoted path per line, as the
    Makefile's sed reads it too)."""
    return re.findall(r'^    "([a-z_/]+\.py)",$', (root / "setup.py").read_text(), re.MULTILINE)


def summary() -> dict[str, object]:
    """For the daemon's start-up log line: how many modules run compiled, and which are stale."""
    built = extensions()
    return {"compiled_modules": len(built), "stale_compiled_modules": stale(built=built) or None}


def check(sources: list[str]) -> list[str]:
    """Problems (empty when none): each source given must have a compiled extension beside it
    (which Python then loads instead of the .py) built since its last edit."""
    built = extensions()
    old = set(stale(built=built))
    problems = []
    for path in sources:
        name = _module((ROOT / path).resolve())
        if name not in built:
            problems.append(f"{path}: not compiled (run `make venv`; see setup.py)")
        elif name in old:
            problems.append(f"{path}: compiled before its last edit (run `make venv`)")
    return problems


if __name__ == "__main__":
    sources = sys.argv[1:] or listed()
    found = check(sources)
    for line in found:
        print(f"switch.compiled: {line}", file=sys.stderr)
    if not found:
        print(f"switch.compiled: {len(sources)} modules compiled and current")
    sys.exit(1 if found else 0)
