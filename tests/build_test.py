"""Keeps the Bazel BUILD files true to the sources (parsed with Python's ast).

Fails when a `.py` file of the packages is in no BUILD target, when a BUILD
`srcs` entry names a missing file, or when a `//package` dependency has no
BUILD file.
"""

import ast
import glob
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("active_learning", "trainers", "export", "tests")
PY_RULES = ("py_library", "py_binary", "py_test")


def build_files():
    found = []
    for pattern in ("BUILD",) + tuple(f"{p}/**/BUILD" for p in PACKAGES):
        found += glob.glob(os.path.join(REPO, pattern), recursive=True)
    return sorted(set(found))


def rules(path):
    """(rule name, keyword dict of literal values) for each call in a BUILD file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            kwargs = {}
            for kw in node.keywords:
                try:
                    kwargs[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    kwargs[kw.arg] = kw.value  # glob(...), requirement(...) lists
            out.append((node.func.id, kwargs))
    return out


def string_items(value):
    if isinstance(value, ast.List):
        return [e.value for e in value.elts if isinstance(e, ast.Constant)]
    return list(value or [])


def test_build_files_exist_for_every_package():
    for package in PACKAGES:
        for root, dirs, files in os.walk(os.path.join(REPO, package)):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            if any(f.endswith(".py") for f in files):
                assert "BUILD" in files, f"{os.path.relpath(root, REPO)} has .py files but no BUILD"
    assert os.path.exists(os.path.join(REPO, "BUILD")), "no top-level BUILD"


@pytest.mark.parametrize("path", build_files(), ids=lambda p: os.path.relpath(p, REPO))
def test_srcs_name_existing_files_and_deps_resolve(path):
    here = os.path.dirname(path)
    names = []
    for rule, kwargs in rules(path):
        if rule not in PY_RULES:
            continue
        assert "name" in kwargs, f"{path}: a {rule} without a name"
        names.append(kwargs["name"])
        for src in string_items(kwargs.get("srcs")):
            assert os.path.isfile(os.path.join(here, src)), (
                f"{os.path.relpath(path, REPO)}: {rule} {kwargs['name']!r} lists missing "
                f"source {src!r}")
        for dep in string_items(kwargs.get("deps")):
            if isinstance(dep, str) and dep.startswith("//"):
                package = dep[2:].split(":")[0]
                assert os.path.isfile(os.path.join(REPO, package, "BUILD")), (
                    f"{os.path.relpath(path, REPO)}: dependency {dep} has no BUILD file")
    assert len(names) == len(set(names)), f"{path}: duplicate target names {names}"


def test_every_python_file_is_in_a_target():
    missing = []
    for package in PACKAGES:
        for path in glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True):
            build = os.path.join(os.path.dirname(path), "BUILD")
            listed = set()
            if os.path.exists(build):
                for rule, kwargs in rules(build):
                    if rule in PY_RULES:
                        listed.update(string_items(kwargs.get("srcs")))
            if os.path.basename(path) not in listed:
                missing.append(os.path.relpath(path, REPO))
    assert not missing, f"Python files in no BUILD target: {missing}"


def test_checker_catches_a_missing_source(tmp_path):
    build = tmp_path / "BUILD"
    build.write_text('py_library(name = "x", srcs = ["gone.py"])\n')
    (rule, kwargs), = rules(str(build))
    assert rule == "py_library"
    assert not os.path.isfile(tmp_path / string_items(kwargs["srcs"])[0])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
