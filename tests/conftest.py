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
