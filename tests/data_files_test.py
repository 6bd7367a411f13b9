"""The shipped Omniglot files are the ones data/README.md lists, byte for byte.

A damaged or replaced zip would still decode to something; the sums catch it
before a result is quoted from it.
"""

import hashlib
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "data")


def listed_sums():
    with open(os.path.join(DATA, "README.md"), encoding="utf-8") as f:
        return re.findall(r"^([0-9a-f]{64})  (\S+)$", f.read(), re.M)


def test_readme_lists_every_shipped_file():
    listed = {path for _, path in listed_sums()}
    shipped = set()
    for folder in ("omniglot", "omniglot-full"):
        shipped |= {f"{folder}/{name}" for name in os.listdir(os.path.join(DATA, folder))}
    assert listed == shipped
    # The budget for shipped data: at most 20 MB.
    assert sum(os.path.getsize(os.path.join(DATA, p)) for p in shipped) < 20e6


@pytest.mark.parametrize("digest,path", listed_sums(), ids=lambda v: v if "/" in str(v) else "")
def test_shipped_file_matches_its_sum(digest, path):
    sha = hashlib.sha256()
    with open(os.path.join(DATA, path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    assert sha.hexdigest() == digest, f"data/{path} differs from data/README.md"


def test_repository_paths_resolve_from_any_directory(tmp_path, monkeypatch):
    from active_learning.data import paths  # pylint: disable=g-import-not-at-top
    monkeypatch.chdir(tmp_path)
    assert paths.resolve_data_dir("data/omniglot") == os.path.join(REPO, "data/omniglot")
    # A run record of the time before the data shipped names ../shared/data.
    assert paths.resolve_data_dir("../nowhere/shared/data/omniglot-full") == os.path.join(
        DATA, "omniglot-full")
    # Anything else comes back unchanged, for the reader to name in its error.
    assert paths.resolve_data_dir("no/such/folder") == "no/such/folder"
    assert paths.resolve_data_dir("tfds:omniglot") == "tfds:omniglot"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
