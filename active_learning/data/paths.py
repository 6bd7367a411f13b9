"""Where data folders are found: the user's path, or the copy this repository ships.

The quick and paper-scale flagfiles name `data/omniglot` and
`data/omniglot-full`, folders of this repository (data/README.md), so a
fresh clone trains offline. A relative path is looked up from the working
directory first, then from the repository root, so the flagfiles also work
when a trainer runs from another directory. Run records written before the
data shipped name `../shared/data/omniglot*`; where that folder is absent the
shipped copy of the same name is used (same pixels; data/README.md).
"""

import os

from absl import logging

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SHIPPED_DATA = os.path.join(REPOSITORY_ROOT, "data")
# Folder names that have a shipped copy with the same contents.
SHIPPED_NAMES = ("omniglot", "omniglot-full")


def resolve_data_dir(path):
    """`path` itself when it exists; else the repository's or shipped copy.

    Returns `path` unchanged when nothing matches, so the reader raises its
    own error naming what it expected.
    """
    path = os.fspath(path)
    if os.path.exists(path) or ":" in path.split(os.sep)[0]:
        return path  # Present, or a scheme such as "tfds:" / "npz:".
    candidates = []
    if not os.path.isabs(path):
        candidates.append(os.path.join(REPOSITORY_ROOT, path))
    name = os.path.basename(os.path.normpath(path))
    if name in SHIPPED_NAMES:
        candidates.append(os.path.join(SHIPPED_DATA, name))
    for candidate in candidates:
        if os.path.isdir(candidate):
            if os.path.normpath(candidate) != os.path.normpath(
                    os.path.join(REPOSITORY_ROOT, path)):
                logging.warning("data folder %r not found; using the copy "
                                "shipped in %s", path, candidate)
            return candidate
    return path
