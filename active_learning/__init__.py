"""Learning algorithms for active learning (Bachman, Sordoni & Trischler, 2017).

A meta-learned active learner: across many related tasks, a model learns which
unlabelled item to ask about next, how to represent items, and how to predict
from the few labels it gathered.
"""

import os as _os
import sys as _sys


def _import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up banner kept off stderr.

    TensorFlow 2.21 prints oneDNN/CUDA notices through absl before its log
    level can be read; they are noise for users of this package. Stderr is
    restored before any Python error surfaces.
    """
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in _sys.modules or _os.environ.get("ACTIVE_LEARNING_VERBOSE_TF"):
        return
    try:
        saved = _os.dup(2)
    except OSError:
        return
    try:
        with open(_os.devnull, "w") as devnull:
            _os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                _os.dup2(saved, 2)
    finally:
        _os.close(saved)


_import_tensorflow_quietly()

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `import active_learning` stays light for the data tools.
    if name == "ActiveSession":
        from active_learning.session import ActiveSession
        return ActiveSession
    raise AttributeError(f"module 'active_learning' has no attribute {name!r}")
