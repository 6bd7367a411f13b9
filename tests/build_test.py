"""Keeps the Bazel BUILD files true to the sources (parsed with Python's ast).

Fails when a `.py` file of the packages is in no BUILD target, when a BUILD
`srcs` entry names a missing file, when a `//package` dependency has no
BUILD file, when a test file has no py_test (or a py_test no test file), when
a test file does not run its tests as a script (Bazel's py_test runs the file
as `__main__`: without the pytest call at its end it runs nothing and passes),
or when a BUILD file's requirement() names a package setup.py does not install.
"""

import ast
import glob
import os
import re
import sys

import pytest

# realpath: under `bazel test` this file is a symlink into the checkout, whose
# BUILD files are what is checked.
REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
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


def names_of_test_files():
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "tests", "*_test.py")))


def py_test_mains(build):
    """{file a py_test runs as __main__: target name} for a BUILD file."""
    mains = {}
    for rule, kwargs in rules(build):
        if rule == "py_test":
            main = kwargs.get("main", kwargs["name"] + ".py")
            assert main in string_items(kwargs.get("srcs")), (
                f"py_test {kwargs['name']!r}: its main {main!r} is not in its srcs")
            mains[main] = kwargs["name"]
    return mains


def test_every_test_file_has_a_py_test_and_every_py_test_a_test_file():
    mains = py_test_mains(os.path.join(REPO, "tests", "BUILD"))
    files = names_of_test_files()
    assert not set(files) - set(mains), (
        f"test files with no py_test in tests/BUILD: {sorted(set(files) - set(mains))}")
    assert not set(mains) - set(files), (
        f"py_tests in tests/BUILD whose main is no tests/*_test.py: "
        f"{sorted(set(mains) - set(files))}")


def runs_pytest_as_main(source):
    """Whether a module ends its `if __name__ == "__main__":` with
    `sys.exit(pytest.main([__file__, ...]))`, which runs every kind of test in
    it (functions, fixtures, TestCase classes) the way .ci/run does."""
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
                and [getattr(c, "value", None) for c in node.test.comparators] == ["__main__"]):
            continue
        for stmt in node.body:
            call = getattr(stmt, "value", None)
            if (isinstance(call, ast.Call) and ast.unparse(call.func) == "sys.exit"
                    and len(call.args) == 1 and isinstance(call.args[0], ast.Call)
                    and ast.unparse(call.args[0].func) == "pytest.main"
                    and call.args[0].args
                    and isinstance(call.args[0].args[0], ast.List)
                    and call.args[0].args[0].elts
                    and ast.unparse(call.args[0].args[0].elts[0]) == "__file__"):
                return True
    return False


@pytest.mark.parametrize("name", names_of_test_files())
def test_test_file_runs_its_tests_as_a_script(name):
    with open(os.path.join(REPO, "tests", name), encoding="utf-8") as f:
        source = f.read()
    assert runs_pytest_as_main(source), (
        f"tests/{name} runs nothing as a script (Bazel's py_test): end it with\n"
        f'if __name__ == "__main__":\n'
        f'    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))')


def test_main_checker_refuses_runners_that_skip_pytest_tests():
    good = 'if __name__ == "__main__":\n    sys.exit(pytest.main([__file__, "-q"]))\n'
    assert runs_pytest_as_main("import sys\n" + good)
    # tf.test.main() runs TestCase classes only, not the module's test functions.
    assert not runs_pytest_as_main('if __name__ == "__main__":\n    tf.test.main()\n')
    assert not runs_pytest_as_main("def test_x():\n    pass\n")
    # The exit status must reach Bazel.
    assert not runs_pytest_as_main('if __name__ == "__main__":\n    pytest.main([__file__])\n')


def normalized(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def setup_py_packages():
    """Normalised names of install_requires and every extra of setup.py."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    specs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            specs += ast.literal_eval(node.value)
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            for extra in ast.literal_eval(node.value).values():
                specs += extra
    return {normalized(re.match(r"[A-Za-z0-9_.-]+", s).group()) for s in specs}


def test_requirements_are_packages_setup_py_installs():
    """requirement("x") names a target of the local pip repository, which has
    one per package of setup.py (WORKSPACE): a name outside setup.py would be
    a package .venv does not have."""
    named = set()
    for path in build_files():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "requirement"):
                named.add(normalized(ast.literal_eval(node.args[0])))
    packages = setup_py_packages()
    assert named and not named - packages, (
        f"requirement() of packages not in setup.py: {sorted(named - packages)}")
    pip_build = os.path.join(REPO, "third_party", "bazel", "pip", "BUILD")
    targets = {kwargs["name"] for rule, kwargs in rules(pip_build) if rule == "py_library"}
    assert targets == packages, (
        f"third_party/bazel/pip/BUILD and setup.py name different packages: "
        f"{sorted(targets ^ packages)}")


def test_checker_catches_a_missing_source(tmp_path):
    build = tmp_path / "BUILD"
    build.write_text('py_library(name = "x", srcs = ["gone.py"])\n')
    (rule, kwargs), = rules(str(build))
    assert rule == "py_library"
    assert not os.path.isfile(tmp_path / string_items(kwargs["srcs"])[0])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
