"""Test-wide settings: quiet TensorFlow and the paths to real data.

Omniglot ships in the repository (data/README.md), so its tests run
everywhere; MovieLens may not be redistributed and is read from
../shared/data beside the checkout when present.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pathlib

import pytest

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
SHIPPED_DATA = pathlib.Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def shipped_data():
    """Path to the repository's data/ folder (Omniglot, always present)."""
    assert (SHIPPED_DATA / "omniglot").is_dir(), "data/omniglot is part of the repository"
    return SHIPPED_DATA


@pytest.fixture
def shared_data():
    """Path to ../shared/data beside the checkout; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the checkout")
    return SHARED_DATA


# Scheduling. CI runs `pytest -n 2 --dist loadscope`: each test class (or
# module, for module-level tests) goes to one worker as a unit. xdist's
# default order puts the scopes with the most tests first, which leaves the
# single long tests (a kill loop, two-worker training) for the end, where
# one worker runs them while the other idles. Instead, scopes marked
# `heavy(seconds)` go first, longest first (seconds as measured on a 2-core
# machine with --durations), then the rest in file order.

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "heavy(seconds): a slow scope, scheduled first (tests/conftest.py)")
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _scope(item):
    return item.nodeid.rsplit("::", 1)[0] if item.cls is not None else item.nodeid.split("::")[0]


def pytest_collection_modifyitems(config, items):
    weight = {}
    for item in items:
        for mark in item.iter_markers("heavy"):
            scope = _scope(item)
            weight[scope] = max(weight.get(scope, 0.0), float(mark.args[0]))
    # A stable sort: tests within a scope keep their order.
    items.sort(key=lambda item: -weight.get(_scope(item), 0.0))
