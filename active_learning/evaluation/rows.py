"""The series an experiment measures and the row each writes into its record.

A `Series` says what to run: a policy driving one model's weights (paper
Table 1's rows, Figure 3's and Figure 4's curves). After the run, each
series becomes a row record: `RowRecord` holds what every row carries (its
key, label, policy, model, note, seconds) and the subclasses add each
table's measurements. `dataclasses.asdict` of a row gives the dict the
record's JSON, CSV and Markdown writers read.
"""

import dataclasses
from typing import List, Optional

from active_learning.evaluation.loading import LoadedModel


@dataclasses.dataclass(frozen=True)
class Series:
    """One series to measure: `policy` driving `model`'s weights.

    `key` names it in the record; `query_batch` K > 1 asks labels in rounds
    of K; `kind` sorts Figure 4's series (heuristic, active, reference).
    """

    key: str
    label: str
    policy: str
    model: LoadedModel
    note: str = ""
    query_batch: int = 1
    kind: str = ""


@dataclasses.dataclass
class RowRecord:
    """What every row of a record carries: the series and how long it ran."""

    key: str
    label: str
    policy: str
    model: str
    note: str
    seconds: Optional[float]

    @classmethod
    def of(cls, series, result, **measured):
        """The row of `series`, whose `evaluate_policy` result is `result`."""
        return cls(key=series.key, label=series.label, policy=series.policy,
                   model=series.model.source, note=series.note,
                   seconds=result.get("seconds"), **measured)


@dataclasses.dataclass
class Table1Row(RowRecord):
    """Accuracy (%) after N*K labels, its curve, and the paper's number."""

    accuracy: float
    ci: float
    distinct_labels: float
    found_all: float
    curve: List[float]
    curve_ci: List[float]
    paper_accuracy: Optional[float]
    paper_ci: Optional[float]


@dataclasses.dataclass
class BatchRow(RowRecord):
    """The metric after the last round of `query_batch` labels, and its curve."""

    query_batch: int
    labels: List[int]
    metric: float
    ci: float
    curve: List[float]
    curve_ci: List[float]
    distinct_labels: Optional[float]
    found_all: Optional[float]
    distinct_curve: Optional[List[float]]


@dataclasses.dataclass
class Figure3Row(RowRecord):
    """Accuracy (%) and distinct labels found after each label."""

    accuracy: List[float]
    ci: List[float]
    distinct_labels: List[float]
    found_all: List[float]


@dataclasses.dataclass
class Figure4Row(RowRecord):
    """RMSE per episode, averaged, after each label (None: not measured)."""

    kind: str
    rmse: Optional[List[float]]
    ci: Optional[List[float]]


@dataclasses.dataclass
class BaselineRow:
    """A Figure 4 rating baseline (Regression, Gaussian Process): no model weights."""

    key: str
    label: str
    policy: str
    model: str
    kind: str
    rmse: Optional[List[float]]
    ci: Optional[List[float]]
    seconds: Optional[float] = None
    note: str = ""
