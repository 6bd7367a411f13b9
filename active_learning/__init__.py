"""Learning algorithms for active learning (Bachman, Sordoni & Trischler, 2017).

A meta-learned active learner: across many related tasks, a model learns which
unlabelled item to ask about next, how to represent items, and how to predict
from the few labels it gathered.
"""

import os as _os

# TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it loads: 2 keeps its C++
# INFO and WARNING lines out of a run's output, and a value the user exported
# wins (README "TensorFlow's log messages"). Nothing else is hidden: the few
# lines TensorFlow 2.21 prints while loading, before that level applies, stay,
# as do errors of the libraries it loads.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so `import active_learning` stays light for the data tools.
    if name == "ActiveSession":
        from active_learning.session import ActiveSession
        return ActiveSession
    raise AttributeError(f"module 'active_learning' has no attribute {name!r}")
