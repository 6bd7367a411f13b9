"""Items grouped by class: the one in-memory form of every classification data set.

Omniglot, a folder of class subfolders, an `.npz` of arrays, a TFDS image
data set and a table of feature vectors all become a `ClassData`; the class
splits (`splits.py`) and the episode sampler (`episodes.py`) read only this.
"""

import dataclasses

import numpy as np

KINDS = ("image", "features")


@dataclasses.dataclass(frozen=True, eq=False)
class ClassData:
    """Items stored class after class.

    Attributes:
      items: float32 `[N, H, W, C]` images in [0, 1] or `[N, F]` features.
      class_starts: int64 `[K]` first row of each class in `items`.
      class_counts: int64 `[K]` items of each class.
      class_names: `[K]` names (folder names, label values).
      groups: `[K]` group of each class (an Omniglot alphabet, a parent
        folder); splits hold out whole groups. A class is its own group
        when the data has none.
      kind: "image" or "features".
      source: where it was read from (for summaries and errors).
      ink: images follow Omniglot's convention (ink = 1 on a 0 background).
      notes: `{rule: count}` of documented rules applied while reading
        (e.g. images converted to the requested channels).
      background: bool `[K]`, Omniglot's background set (the lake split);
        all True for other data.
    """

    items: np.ndarray
    class_starts: np.ndarray
    class_counts: np.ndarray
    class_names: tuple
    groups: tuple
    kind: str
    source: str = ""
    ink: bool = False
    notes: dict = dataclasses.field(default_factory=dict)
    background: np.ndarray = None

    def __post_init__(self):
        if self.background is None:
            object.__setattr__(self, "background", np.ones(len(self.class_names), bool))
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        expected_ndim = 4 if self.kind == "image" else 2
        if self.items.ndim != expected_ndim:
            raise ValueError(f"{self.kind} items must have {expected_ndim} dimensions "
                             f"([N, H, W, C] or [N, F]); got shape {self.items.shape}")
        k = len(self.class_names)
        if (self.class_starts.shape != (k,) or self.class_counts.shape != (k,)
                or len(self.groups) != k):
            raise ValueError(f"inconsistent ClassData: {k} class names, starts "
                             f"{self.class_starts.shape}, counts {self.class_counts.shape}, "
                             f"{len(self.groups)} groups")
        if int(self.class_counts.sum()) != len(self.items):
            raise ValueError(f"class counts sum to {int(self.class_counts.sum())} but there "
                             f"are {len(self.items)} items")

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def num_items(self):
        return len(self.items)

    @property
    def item_shape(self):
        return tuple(int(d) for d in self.items.shape[1:])

    # The names the Omniglot splits use (`splits.split_classes`).
    @property
    def alphabets(self):
        return self.groups

    @property
    def characters(self):
        return self.class_names

    def describe(self):
        counts = self.class_counts
        out = {
            "source": self.source, "kind": self.kind, "item_shape": list(self.item_shape),
            "classes": self.num_classes, "items": self.num_items,
            "groups": len(set(self.groups)),
            "items_per_class": {"min": int(counts.min()), "median": float(np.median(counts)),
                                "max": int(counts.max())},
        }
        if self.notes:
            out["notes"] = dict(self.notes)
        return out


def from_labels(items, labels, kind, groups=None, source="", ink=False, notes=None,
                where="labels"):
    """A `ClassData` from items `[N, ...]` and one label per item.

    Items are reordered class after class (classes sorted by label, items in
    their given order within a class). `groups` gives one group per item;
    every item of a class must have the same group.
    """
    items = np.asarray(items)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(items):
        raise ValueError(f"{where}: need one label per item ({len(items)} items), got "
                         f"shape {labels.shape}")
    names, inverse = np.unique(labels, return_inverse=True)
    if len(names) < 2:
        raise ValueError(f"{where}: the labels hold {len(names)} class "
                         f"({names.tolist()}); episodes need at least 2 classes (and "
                         "meta-training many)")
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(names)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    if groups is None:
        class_groups = tuple(str(n) for n in names)
    else:
        groups = np.asarray(groups)
        if groups.shape != labels.shape:
            raise ValueError(f"{where}: groups must have one entry per item, got shape "
                             f"{groups.shape} for {len(labels)} items")
        class_groups = []
        for c, name in enumerate(names):
            found = np.unique(groups[inverse == c])
            if len(found) != 1:
                raise ValueError(f"{where}: class {name!r} has items in several groups "
                                 f"{found.tolist()[:5]}; a class belongs to one group")
            class_groups.append(str(found[0]))
        class_groups = tuple(class_groups)
    return ClassData(
        items=np.ascontiguousarray(items[order], np.float32), class_starts=starts,
        class_counts=counts, class_names=tuple(str(n) for n in names), groups=class_groups,
        kind=kind, source=source, ink=ink, notes=dict(notes or {}))


def from_omniglot(data):
    """`OmniglotData` `[C, 20, 28, 28]` as a `ClassData` (same order, ink = 1)."""
    count, drawings = data.images.shape[:2]
    return ClassData(
        items=data.images.reshape((count * drawings,) + data.images.shape[2:] + (1,)),
        class_starts=np.arange(count, dtype=np.int64) * drawings,
        class_counts=np.full(count, drawings, np.int64),
        class_names=tuple(data.characters), groups=tuple(data.alphabets), kind="image",
        source=",".join(data.sources), ink=True, background=np.asarray(data.background))
