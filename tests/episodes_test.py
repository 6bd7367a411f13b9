"""The class sampler's within-group episodes (Lake et al.'s one-shot protocol)."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from active_learning.data.episodes import ClassEpisodeSampler

# 4 groups: a has 6 classes, b 3, c 5, d 2; 4 items per class whose value
# encodes the class, so an episode's classes can be read from its items.
GROUPS = ["a"] * 6 + ["b"] * 3 + ["c"] * 5 + ["d"] * 2
NUM_CLASSES, PER_CLASS = len(GROUPS), 4


def _sampler(ways=3, rotate=False, seed=0, indices=None, **kwargs):
    if rotate:
        items = np.zeros([NUM_CLASSES * PER_CLASS, 4, 4, 1], np.float32)
        items[:, 0, 0, 0] = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    else:
        items = np.repeat(np.arange(NUM_CLASSES, dtype=np.float32), PER_CLASS)[:, None]
    starts = np.arange(NUM_CLASSES) * PER_CLASS
    counts = np.full(NUM_CLASSES, PER_CLASS)
    indices = np.arange(NUM_CLASSES) if indices is None else np.asarray(indices)
    return ClassEpisodeSampler(items, starts, counts, indices, ways=ways,
                               items_per_class=2, queries_per_class=1, rotate=rotate,
                               seed=seed, class_groups=GROUPS, within_group=True, **kwargs)


def _groups_of(batch):
    classes = batch["support"][..., 0].numpy().astype(int)
    return [{GROUPS[c] for c in row} for row in classes], classes


def test_every_episode_comes_from_one_group_with_enough_classes():
    sampler = _sampler(ways=4)
    batch = sampler.sample(200)
    groups, classes = _groups_of(batch)
    assert all(len(g) == 1 for g in groups)
    # Only a (6 classes) and c (5) hold 4 classes; both are drawn.
    assert {next(iter(g)) for g in groups} == {"a", "c"}
    for row, labels in zip(classes, batch["support_labels"].numpy()):
        assert len(set(row)) == 4                      # 4 distinct classes
        for label in range(4):                         # one class per label
            assert len(set(row[labels == label])) == 1
    # Queries come from the same classes under the same labels.
    queries = batch["queries"][..., 0].numpy().astype(int)
    for s, sl, q, ql in zip(classes, batch["support_labels"].numpy(), queries,
                            batch["query_labels"].numpy()):
        assert {(c, lab) for c, lab in zip(q, ql)} <= {(c, lab) for c, lab in zip(s, sl)}


def test_groups_are_drawn_uniformly_and_classes_within_them():
    sampler = _sampler(ways=2, seed=3)
    batch = sampler.sample(4000)
    groups, classes = _groups_of(batch)
    share = {k: np.mean([next(iter(g)) == k for g in groups]) for k in "abcd"}
    for k in "abcd":  # 4 eligible groups: 0.25 each; 4,000 draws, sd 0.007
        assert abs(share[k] - 0.25) < 0.035, share
    a_classes = np.concatenate([np.unique(r) for r, g in zip(classes, groups) if "a" in g])
    counts = np.bincount(a_classes, minlength=6)[:6]
    assert counts.min() > 0.8 * counts.mean(), counts


def test_split_subset_and_rotation_groups():
    # Classes 6..15 only: groups b, c, d. Under rotation each turned group is
    # its own: an episode never mixes turns or groups.
    indices = np.arange(6, NUM_CLASSES)
    sampler = _sampler(ways=3, rotate=True, indices=indices)
    batch = sampler.sample(300)
    images = batch["support"].numpy()[..., 0]                   # [B, S, 4, 4]
    classes = images.max(axis=(2, 3)).astype(int)               # the marked value
    corners = images.reshape(images.shape[:2] + (16,)).argmax(-1)  # where it went
    seen_turns = set()
    for row, where in zip(classes, corners):
        assert len({GROUPS[c] for c in row}) == 1
        assert GROUPS[row[0]] in "bc"          # d has 2 classes, a is not in the split
        assert len(set(where)) == 1            # one turn per episode
        seen_turns.add(int(where[0]))
    assert len(seen_turns) == 4


def test_same_seed_same_episodes():
    samplers = [_sampler(seed=5), _sampler(seed=5), _sampler(seed=6)]
    a, b, c = (s.sample(8) for s in samplers)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert not np.array_equal(a["support"].numpy(), c["support"].numpy())


def test_too_many_ways_for_every_group_is_refused_by_name():
    with pytest.raises(ValueError, match="largest group .6 classes"):
        _sampler(ways=7)
    sampler = _sampler(ways=3)
    with pytest.raises(ValueError, match="largest group"):
        sampler.sample(2, ways=7)
    with pytest.raises(tf.errors.InvalidArgumentError, match="in one group"):
        sampler.sample(2, ways=tf.constant(7))
    with pytest.raises(ValueError, match="class_groups with one group per class"):
        ClassEpisodeSampler(np.zeros([8, 1], np.float32), [0, 4], [4, 4], [0, 1], ways=2,
                            items_per_class=2, within_group=True)


def test_without_groups_the_draws_are_unchanged():
    items = np.repeat(np.arange(NUM_CLASSES, dtype=np.float32), PER_CLASS)[:, None]
    args = (items, np.arange(NUM_CLASSES) * PER_CLASS, np.full(NUM_CLASSES, PER_CLASS),
            np.arange(NUM_CLASSES))
    samplers = [ClassEpisodeSampler(*args, ways=3, items_per_class=2, seed=1),
                ClassEpisodeSampler(*args, ways=3, items_per_class=2, seed=1,
                                    class_groups=GROUPS)]
    plain, named = (s.sample(6) for s in samplers)
    for key in plain:
        np.testing.assert_array_equal(plain[key].numpy(), named[key].numpy())



def test_evaluation_episodes_draw_within_groups_when_asked():
    # The path `trainers.evaluate --episode_classes=within_alphabet` takes.
    from active_learning.data import class_data  # pylint: disable=g-import-not-at-top
    from active_learning.data.splits import ClassSplit  # pylint: disable=g-import-not-at-top
    from active_learning.evaluation import ClassEpisodes  # pylint: disable=g-import-not-at-top
    labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    data = class_data.from_labels(labels[:, None].astype(np.float32), labels, "features",
                                  groups=np.asarray(GROUPS)[labels])
    everything = np.arange(NUM_CLASSES)
    split = ClassSplit("given", everything, everything, everything)
    within = ClassEpisodes(data, split, items_per_class=1, within_group=True)
    sampler = within.make_sampler("test", 4, seed=0)()
    batch = sampler.sample(100)
    assert batch["support"].shape == (100, 4, 1)            # one item per class
    for row in batch["support"][..., 0].numpy().astype(int):
        assert len({GROUPS[c] for c in row}) == 1
    mixed = ClassEpisodes(data, split, items_per_class=1).make_sampler("test", 4, seed=0)()
    rows = mixed.sample(100)["support"][..., 0].numpy().astype(int)
    assert any(len({GROUPS[c] for c in row}) > 1 for row in rows)

if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
