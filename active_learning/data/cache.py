"""A cache of decoded arrays that is never left half-written.

Decoding thousands of image files takes seconds to minutes; readers store
the result as an `.npz` named by a hash of the source files' names, sizes
and modification times (`source_key`), so an edited source is decoded anew.
Writes go to a temporary file that replaces the target in one rename: a
reader sees no file or a whole one, never part of one, even when a run is
killed mid-write.
"""

import contextlib
import hashlib
import json
import os
import tempfile

from absl import logging
import numpy as np


def default_cache_dir(name):
    """`$XDG_CACHE_HOME/active_learning/<name>` (or under `~/.cache`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    return os.path.join(base, "active_learning", name)


def source_key(paths, extra=()):
    """Hash of `paths`' names, sizes and mtimes (folders: every file in them)."""
    entries = [list(extra)]
    for path in paths:
        stat = os.stat(path)
        entries.append((os.path.basename(path), stat.st_size, stat.st_mtime_ns))
        if os.path.isdir(path):
            # A folder's own mtime misses edits to files in subfolders.
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for file_name in sorted(files):
                    full = os.path.join(root, file_name)
                    stat = os.stat(full)
                    entries.append((os.path.relpath(full, path), stat.st_size,
                                    stat.st_mtime_ns))
    digest = hashlib.sha256(json.dumps(entries).encode("utf-8"))
    return digest.hexdigest()[:24]


def read_arrays(path, what="cache"):
    """{name: array} of an `.npz`, or None when missing or unusable (logged)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {k: arrays[k] for k in arrays.files}
    except Exception as err:  # Any damage means: rebuild it.
        logging.warning("ignoring unusable %s %s (%s); rebuilding it", what, path, err)
        return None


def write_arrays(path, arrays, what="cache"):
    """Writes `{name: array}` to `path` atomically; a failure only logs a warning."""
    tmp = None
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; a cache of public data need not be.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        logging.warning("could not write %s %s: %s", what, path, err)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
