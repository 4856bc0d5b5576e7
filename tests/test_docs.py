"""The documents against the repository: config keys, cited files, the README's length.

- docs/configuration.md's key table lists exactly the keys of the schema in switch/config.py,
  each with the schema's default (the expected keys are read from the schema at test time);
- every repository file cited in README.md, docs/, specs/*.md and in the comments and
  docstrings of the code exists;
- README.md stays a manual: at most 200 lines.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from switch import config

ROOT = Path(__file__).resolve().parent.parent
README_LINES_MAX = 200
LISTENERS = "listeners[]"

# Top-level directories whose files the documents and comments cite.
_TOP = r"(?:switch|ledger|specs|tools|tests|bench|config|systemd|docs|cli|portal|\.ci)"
_EXT = r"(?:py|md|json|sql|toml|yml|yaml|service|csv|txt)"
# `bench/results/e2e.json`, `tools/_*.py`, `ledger/migrations/0006_lean_writes.sql` ...
_PATH = re.compile(rf"(?<![\w-]){_TOP}/[\w.*{{}},/-]*?[\w*}}]\.{_EXT}\b")
# A bare upper-case document name: README.md, HOST-INTERFACE.md ...
_BARE_DOC = re.compile(r"(?<![\w/.-])[A-Z][A-Z0-9_-]+\.md\b")
# Top-level files cited by name.
_TOP_FILE = re.compile(r"(?<![\w/.-])(?:setup\.py|pyproject\.toml)\b")
# Markdown links to local files: [text](../specs/X.md#anchor)
_MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")

# `bench/x.py`, `docs/x.md`: any file of that directory, not a citation.
_PLACEHOLDER_STEMS = {"x", "X", "NAME"}

# Generated or vendored trees are not the project's own words.
_SKIP_DIRS = {".git", ".venv", "build", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
              "switchd.egg-info", "var", "node_modules"}


def _expected_keys() -> dict[tuple[str, str], Any]:
    keys: dict[tuple[str, str], Any] = {}
    for section, (schema, _cls) in config.SECTIONS.items():
        for key, (_kind, default, _check) in schema.items():
            keys[(section, key)] = default
    for key, (_kind, default, _check) in config.LISTENER_SCHEMA.items():
        keys[(LISTENERS, key)] = default
    return keys


def _documented_keys() -> dict[tuple[str, str], str]:
    """The rows of docs/configuration.md's key table: (section, key) -> default cell."""
    rows: dict[tuple[str, str], str] = {}
    header_seen = False
    for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if [c.lower() for c in cells[:4]] == ["section", "key", "type", "default"]:
            header_seen = True
            continue
        if not header_seen or not line.startswith("|"):
            if header_seen and rows:
                break  # the table ended
            continue
        if set(cells[0]) <= set("-: "):
            continue  # the separator row
        section, key, default = (c.strip("`") for c in (cells[0], cells[1], cells[3]))
        assert (section, key) not in rows, f"docs/configuration.md lists {section}.{key} twice"
        rows[(section, key)] = default
    assert header_seen, "docs/configuration.md has no | Section | Key | Type | Default | table"
    return rows


def _toml_value(text: str) -> Any:
    return tomllib.loads(f"v = {text}")["v"]


def _same_value(shown: Any, default: Any) -> bool:
    # TOML keeps booleans apart from numbers, and so does the schema; 10 and 10.0 are one value.
    if isinstance(shown, bool) or isinstance(default, bool):
        return type(shown) is type(default) and shown == default
    return bool(shown == default)


def test_configuration_doc_lists_every_key_with_its_default() -> None:
    expected = _expected_keys()
    documented = _documented_keys()
    missing = sorted(f"{s}.{k}" for s, k in expected.keys() - documented.keys())
    unknown = sorted(f"{s}.{k}" for s, k in documented.keys() - expected.keys())
    assert not missing, f"keys of the schema missing from docs/configuration.md: {missing}"
    assert not unknown, f"docs/configuration.md lists keys the schema does not have: {unknown}"
    wrong = []
    for where, default in expected.items():
        try:
            shown = _toml_value(documented[where])
        except tomllib.TOMLDecodeError:
            shown = documented[where]
        if not _same_value(shown, default):
            wrong.append(f"{where[0]}.{where[1]}: documented {documented[where]}, schema {default!r}")
    assert not wrong, "defaults in docs/configuration.md differ from the schema: " + "; ".join(wrong)


def _files(pattern: str) -> Iterator[Path]:
    for path in sorted(ROOT.glob(pattern)):
        if path.is_file() and not _SKIP_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


def _python_comments_and_docstrings(text: str) -> str:
    parts: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                parts.append(tok.string)
    except (tokenize.TokenError, SyntaxError):
        pass
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                parts.append(doc)
    return "\n".join(parts)


def _line_comments(text: str, marker: str) -> str:
    return "\n".join(line.split(marker, 1)[1] for line in text.splitlines() if marker in line)


def _cited_texts() -> Iterator[tuple[Path, str]]:
    """(file, the part of it that is prose): documents whole, code by its comments."""
    docs = [ROOT / "README.md", *_files("docs/**/*.md"), *_files("specs/*.md")]
    for path in docs:
        yield path, path.read_text(encoding="utf-8")
    for top in ("switch", "ledger", "specs", "tools", "tests", "bench", "cli", "portal"):
        for path in _files(f"{top}/**/*.py"):
            yield path, _python_comments_and_docstrings(path.read_text(encoding="utf-8"))
        for path in _files(f"{top}/**/*.sql"):
            yield path, _line_comments(path.read_text(encoding="utf-8"), "--")
    for path in [*_files("config/*.toml"), *_files("config/*.yml"), *_files("systemd/*"),
                 ROOT / "Makefile", ROOT / "setup.py", ROOT / "pyproject.toml"]:
        if path.is_file():
            yield path, _line_comments(path.read_text(encoding="utf-8"), "#")


def _expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for alt in match.group(1).split(",")
            for p in _expand_braces(path[:match.start()] + alt + path[match.end():])]


def _exists(cited: str) -> bool:
    if Path(cited).stem in _PLACEHOLDER_STEMS:
        return True  # a pattern in prose, as in `python bench/x.py`
    return all(any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists() for p in _expand_braces(cited))


def _bare_doc_exists(name: str) -> bool:
    return any(p.name == name for p in _files(f"**/{name}"))


def test_every_cited_file_exists() -> None:
    dangling: list[str] = []
    for path, text in _cited_texts():
        where = path.relative_to(ROOT)
        for cited in set(_PATH.findall(text)) | set(_TOP_FILE.findall(text)):
            if not _exists(cited):
                dangling.append(f"{where}: {cited}")
        for name in set(_BARE_DOC.findall(text)):
            if not _bare_doc_exists(name):
                dangling.append(f"{where}: {name}")
        if path.suffix == ".md":
            for target in set(_MD_LINK.findall(text)):
                if re.match(r"[a-z]+:", target):
                    continue  # a URL
                if not (path.parent / target).exists():
                    dangling.append(f"{where}: link {target}")
    assert not dangling, "cited files that the repository does not have:\n" + "\n".join(sorted(dangling))


def test_readme_is_a_manual_not_a_diary() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_LINES_MAX, f"README.md has {len(lines)} lines; at most {README_LINES_MAX}"
