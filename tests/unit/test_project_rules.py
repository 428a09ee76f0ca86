"""The project's rules that a tool can check, checked here rather than by reading (the layer order
and "Dagster only in defs/" are import-linter's: ``lint-imports``, [tool.importlinter]):

* Dagster's private names (``dagster._...``, ``dagster_shared``, any ``dagster_*._...``) are
  imported only in ``defs/dagster_internals.py``, by the package and by the tests;
* no test module imports another test module (helpers live in ``tests/helpers``);
* no comment or docstring names a ``.py`` file that does not exist.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.environment import REPO

PACKAGE = REPO / "competition_pipeline"
#: The test harness, a distribution of its own (harness/pyproject.toml): the same rules.
HARNESS = REPO / "harness" / "competition_harness"
TESTS = REPO / "tests"
INTERNALS = PACKAGE / "defs" / "dagster_internals.py"
PRIVATE = re.compile(r"^(dagster(_\w+)?\._|dagster_shared(\.|$))")


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


def _imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module


def private_dagster_imports(paths: list[Path]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} {module}"
        for path in paths
        for line, module in _imported_modules(path)
        if PRIVATE.match(module)
    ]


def test_private_dagster_names_are_imported_only_from_dagster_internals() -> None:
    paths = [p for p in _sources(PACKAGE, HARNESS, TESTS) if p != INTERNALS]
    assert private_dagster_imports(paths) == []
    # The rule sees what it is about: the one file that may, does.
    assert private_dagster_imports([INTERNALS])


def test_no_test_module_imports_another_test_module() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line} {module}"
        for path in _sources(TESTS)
        for line, module in _imported_modules(path)
        if module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert found == []


_PY_NAME = re.compile(r"[\w./-]*\w\.py\b")


def _comments_and_docstrings(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                yield node.body[0].lineno, docstring


def _yaml_comments(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "#" in line:
            yield number, line[line.index("#") :]


def missing_files_named(paths: list[Path], existing: set[str]) -> list[str]:
    """``file:line name`` for each ``.py`` name (with or without its directory) in a comment or
    docstring that is no file of the repository (matched by its trailing path)."""
    missing = []
    for path in paths:
        texts = _yaml_comments(path) if path.suffix == ".yaml" else _comments_and_docstrings(path)
        for line, text in texts:
            for name in _PY_NAME.findall(text):
                tail = name.lstrip("./")
                if not any(f == tail or f.endswith(f"/{tail}") for f in existing):
                    missing.append(f"{path.relative_to(REPO)}:{line} {name}")
    return missing


def _repository_python_files() -> set[str]:
    """Every ``.py`` file of the repository (not the virtualenv's, the local state's or builds')."""
    tops = [p for p in REPO.iterdir() if not p.name.startswith(".") and p.name != "build"]
    return {
        p.relative_to(REPO).as_posix()
        for top in tops
        for p in ([top] if top.is_file() else top.rglob("*.py"))
        if p.suffix == ".py"
    }


def test_no_comment_names_a_python_file_that_does_not_exist() -> None:
    yaml = [REPO / "dagster.yaml", REPO / "workspace.yaml", *(REPO / "docs").rglob("*.yaml")]
    paths = [*_sources(PACKAGE, HARNESS, TESTS), *yaml]
    existing = _repository_python_files()
    assert missing_files_named(paths, existing) == []


def test_the_comment_scan_reports_a_file_that_is_gone() -> None:
    # dagster_internals.py's docstring names its test: were that file gone, the line is reported.
    existing = _repository_python_files() - {"tests/unit/test_dagster_internals.py"}
    assert missing_files_named([INTERNALS], existing) == [
        "competition_pipeline/defs/dagster_internals.py:1 tests/unit/test_dagster_internals.py"
    ]


def settings_reads(path: Path) -> list[str]:
    """``file:line`` of each ``load``/``current`` of ``competition_pipeline.settings`` in ``path``,
    whatever name the module or function is imported under."""
    tree = ast.parse(path.read_text())
    modules, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "competition_pipeline":
            modules |= {a.asname or a.name for a in node.names if a.name == "settings"}
        elif isinstance(node, ast.ImportFrom) and node.module == "competition_pipeline.settings":
            functions |= {a.asname or a.name for a in node.names if a.name in {"load", "current"}}
        elif isinstance(node, ast.Import):
            modules |= {
                a.asname
                for a in node.names
                if a.name == "competition_pipeline.settings" and a.asname
            }
    return [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (
                isinstance(node.func, ast.Attribute)
                and node.func.attr in {"load", "current"}
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in modules
            )
            or (isinstance(node.func, ast.Name) and node.func.id in functions)
        )
    ]


def test_the_dagster_layer_reads_no_settings_but_those_build_defs_is_given(monkeypatch) -> None:
    # No module of defs/ reads the settings from the environment itself (``settings.load()``,
    # ``settings.current()``). Per-tick reads of the alert targets (``alert_targets``: secrets
    # that change without a restart, configuration.md) are not settings.
    assert [read for path in _sources(PACKAGE / "defs") for read in settings_reads(path)] == []
    # ... and the jobs' defaults are the given settings', whatever the environment holds.
    from dataclasses import replace

    import dagster as dg

    from competition_pipeline import settings
    from competition_pipeline.definitions import build_defs

    # The environment says otherwise; the given settings win.
    monkeypatch.setenv("FILL_RETENTION_MONTHS", "20")
    monkeypatch.setenv("RUN_HISTORY_RETENTION_DAYS", "9")
    monkeypatch.setenv("COMPETITION_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    given = replace(settings.load({}), retention_months=7, run_history_retention_days=1.5)
    defs = build_defs(given)
    retention = dg.validate_run_config(defs.resolve_job_def("competition_fill_retention_job"))
    assert retention["ops"]["retire_old_months"]["config"]["older_than_months"] == 7
    pruning = dg.validate_run_config(defs.resolve_job_def("competition_prune_run_history"))
    assert pruning["ops"]["prune_superseded_runs"]["config"]["retention_days"] == 1.5
