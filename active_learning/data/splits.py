"""Class splits: disjoint train / validation / test classes, by whole groups.

A meta-learner is judged on classes it never saw, so the split holds out
whole classes, and where the data has groups (Omniglot's alphabets, a
user's parent folders) whole groups. Works on any data with `alphabets`
(one group per class), `characters` (class names) and `background` (bool
per class): `OmniglotData` and `class_data.ClassData`.
"""

import dataclasses

import numpy as np

FULL_RELEASE_CHARACTERS = 1623
VINYALS_TRAIN_CHARACTERS = 1200


@dataclasses.dataclass(frozen=True, eq=False)
class ClassSplit:
    """Disjoint character indices (into `OmniglotData`) per split.

    `test_alphabets` / `validation_alphabets` name every alphabet with a
    character in that split (whole alphabets except in the Vinyals split,
    whose 1,200 / 423 cut falls inside one evaluation alphabet).
    """

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    test_alphabets: tuple = ()
    validation_alphabets: tuple = ()

    def describe(self):
        return {
            "split": self.name,
            "train_characters": int(len(self.train)),
            "validation_characters": int(len(self.validation)),
            "test_characters": int(len(self.test)),
            "test_alphabets": list(self.test_alphabets),
            "validation_alphabets": list(self.validation_alphabets),
        }


def _alphabets_of(data, indices):
    return tuple(dict.fromkeys(data.alphabets[i] for i in indices))


def _make_split(data, name, train, validation, test):
    as_index = lambda x: np.sort(np.asarray(x, np.int64).reshape(-1))
    train, validation, test = map(as_index, (train, validation, test))
    return ClassSplit(name, train, validation, test,
                      test_alphabets=_alphabets_of(data, test),
                      validation_alphabets=_alphabets_of(data, validation))


def _parse_names(names):
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    return names or None


def _check_known(names, known, what):
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError("unknown %s alphabet(s) %s; known alphabets: %s"
                         % (what, unknown, ", ".join(known)))


def _indices_of(data, alphabets):
    wanted = set(alphabets)
    return [i for i, a in enumerate(data.alphabets) if a in wanted]


def split_classes(data, split="auto", test_alphabets=None,
                  validation_alphabets=None, validation_characters=100,
                  seed=0, min_held_out=20):
    """Divides the characters of `data` into train / validation / test.

    Splits:
      vinyals: the split of Vinyals et al. (2016) used by Bachman et al.;
        needs the full release (1,623 characters). Characters in the fixed
        order of `load_omniglot` (background alphabets, then evaluation
        alphabets, each sorted by name, characters by number): the first
        1,200 are training, the other 423 test. Validation is the last
        `validation_characters` of those 1,200, so training keeps
        1,200 - `validation_characters`.
      lake: the split of Lake et al. (2015): train = background characters
        (964 in the full release), test = evaluation characters (659).
        Validation is whole background alphabets carved from train: a
        permutation (seeded by `seed`) of the sorted background alphabet
        names, taken in order until validation holds at least
        `validation_characters` (or `validation_alphabets` when given).
      alphabets: whole alphabets held out, for subsets of the release.
        `test_alphabets` / `validation_alphabets` name them when given;
        otherwise they come, in order, from a permutation (seeded by `seed`)
        of the sorted alphabet names: test takes alphabets until it holds at
        least max(`min_held_out`, 20% of characters), then validation until
        it holds at least max(`min_held_out`, 10%); the rest is training. On data with few
        alphabets at least one alphabet is always left for training (and
        for validation when it is chosen automatically).
      auto: vinyals on the full release, alphabets otherwise.

    Args:
      data: an `OmniglotData` (only `alphabets`, `characters`, `background`
        and the number of characters are used).
      split: "auto", "vinyals", "lake" or "alphabets".
      test_alphabets: list or comma-separated names (alphabets split only).
      validation_alphabets: list or comma-separated names (alphabets, lake).
      validation_characters: validation size for vinyals and lake.
      seed: seeds the alphabet permutation (lake, alphabets).
      min_held_out: smallest test / validation size of the alphabets split
        (Omniglot: 20, the largest N; a user's data: the episode's N).

    Returns:
      A `ClassSplit` of sorted, disjoint int64 index arrays.
    """
    count = len(data.characters)
    test_alphabets = _parse_names(test_alphabets)
    validation_alphabets = _parse_names(validation_alphabets)
    known = sorted(set(data.alphabets))
    if split == "auto":
        split = "vinyals" if count == FULL_RELEASE_CHARACTERS else "alphabets"
    if split not in ("vinyals", "lake", "alphabets"):
        raise ValueError("unknown split %r; expected auto, vinyals, lake or "
                         "alphabets" % (split,))
    if validation_characters < 0:
        raise ValueError("validation_characters must be >= 0, got %d"
                         % validation_characters)

    if split == "vinyals":
        if count != FULL_RELEASE_CHARACTERS:
            raise ValueError(
                "the vinyals split needs the full release (%d characters); "
                "this data has %d: use split='alphabets' or 'lake'"
                % (FULL_RELEASE_CHARACTERS, count))
        if test_alphabets or validation_alphabets:
            raise ValueError("the vinyals split is fixed; test_alphabets and "
                             "validation_alphabets need split='alphabets'")
        if validation_characters >= VINYALS_TRAIN_CHARACTERS:
            raise ValueError("validation_characters must be < %d"
                             % VINYALS_TRAIN_CHARACTERS)
        cut = VINYALS_TRAIN_CHARACTERS - validation_characters
        everything = np.arange(count)
        return _make_split(data, "vinyals", everything[:cut],
                           everything[cut:VINYALS_TRAIN_CHARACTERS],
                           everything[VINYALS_TRAIN_CHARACTERS:])

    rng = np.random.RandomState(seed)
    alphabet_size = {a: data.alphabets.count(a) for a in known}

    if split == "lake":
        background = np.asarray(data.background, bool)
        if background.all() or not background.any():
            raise ValueError(
                "the lake split needs both background and evaluation "
                "characters; this data has %d background and %d evaluation"
                % (background.sum(), (~background).sum()))
        if test_alphabets:
            raise ValueError("the lake split tests on the evaluation set; "
                             "test_alphabets needs split='alphabets'")
        background_alphabets = sorted(
            set(a for a, b in zip(data.alphabets, background) if b))
        if validation_alphabets:
            _check_known(validation_alphabets, background_alphabets,
                         "background (validation)")
            held = list(validation_alphabets)
        else:
            held, size = [], 0
            for name in rng.permutation(background_alphabets):
                # Keep one background alphabet for training.
                if (size >= validation_characters
                        or len(held) + 1 >= len(background_alphabets)):
                    break
                held.append(str(name))
                size += alphabet_size[str(name)]
        validation = _indices_of(data, held)
        held = set(held)
        train = [i for i in range(count)
                 if background[i] and data.alphabets[i] not in held]
        test = np.flatnonzero(~background)
        return _make_split(data, "lake", train, validation, test)

    # split == "alphabets"
    for names, what in ((test_alphabets, "test"),
                        (validation_alphabets, "validation")):
        if names:
            _check_known(names, known, what)
    if test_alphabets and validation_alphabets and (
            set(test_alphabets) & set(validation_alphabets)):
        raise ValueError("alphabets %s are both test and validation" % sorted(
            set(test_alphabets) & set(validation_alphabets)))
    order = [str(a) for a in rng.permutation(known)]
    taken = set(test_alphabets or ()) | set(validation_alphabets or ())
    free = [a for a in order if a not in taken]

    def take(target, reserve):
        # Whole alphabets until `target` characters, leaving `reserve`.
        chosen, size = [], 0
        while free and len(free) > reserve and (not chosen or size < target):
            name = free.pop(0)
            chosen.append(name)
            size += alphabet_size[name]
        return chosen

    if not test_alphabets:
        test_alphabets = take(max(min_held_out, 0.2 * count),
                              1 + (0 if validation_alphabets else 1))
    if not validation_alphabets:
        validation_alphabets = take(max(min_held_out, 0.1 * count), 1)
    if not test_alphabets or not validation_alphabets or not free:
        raise ValueError(
            "the alphabets split needs at least 3 alphabets (test, "
            "validation, train); this data has %d: %s"
            % (len(known), ", ".join(known)))
    held = set(test_alphabets) | set(validation_alphabets)
    train = [i for i, a in enumerate(data.alphabets) if a not in held]
    return _make_split(data, "alphabets", train,
                       _indices_of(data, validation_alphabets),
                       _indices_of(data, test_alphabets))
