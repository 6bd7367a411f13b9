"""In-graph N-way episodes from items grouped by class (any item kind).

`ClassEpisodeSampler` draws batches in the one episode format of
`active_learning.data.schema` from items stored flat, class after class:
images `[N, H, W, C]` or feature vectors `[N, F]`, with each class's first
row and count. Classes may hold different numbers of items (a user's
folders rarely hold the same count); a class never gives more items to an
episode than it has, which the constructor checks against the episode shape
with an error that names the class.

The random state is `self.rng`, a `tf.random.Generator` tracked by
`tf.train.Checkpoint(sampler=...)`: the same seed gives the same episodes,
and a restored checkpoint continues the same stream.
"""

import numpy as np
import tensorflow as tf

from active_learning.data.augment import affine_jitter
from active_learning.data.sampling import make_generator
from active_learning.data.sampling import sample_without_replacement


def _rotate_each(images, turns):
    """Rotates each image `[..., H, H, C]` by 90 * `turns[...]` degrees."""
    shape = tf.shape(images)
    flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], axis=0))
    # All four rotations of the episode's few images, then pick one per
    # image: rot90 takes one scalar k per call.
    rotations = tf.stack([tf.image.rot90(flat, k) for k in range(4)], axis=1)
    picked = tf.gather(rotations, tf.reshape(turns, [-1]), batch_dims=1)
    return tf.reshape(picked, shape)


class ClassEpisodeSampler(tf.Module):
    """Draws batches of N-way episodes in-graph.

    Each episode takes N distinct classes and, per class,
    `items_per_class + queries_per_class` distinct items: the first
    `items_per_class` go to the support set (the pool the active learner
    labels), the rest to the held-out queries. Classes get labels 0..N-1 in
    a random order; support items and queries are shuffled.

    With `rotate=True` (square images only) the class pool is four times
    larger: class c is class `c // 4` turned by `90 * (c % 4)` degrees
    (Santoro et al., Vinyals et al.), rotated in-graph per drawn image.

    With `within_group=True` all N classes of an episode come from one group
    (Lake et al.'s one-shot protocol: 20 characters of one alphabet), the
    group drawn uniformly among those holding at least N classes. Under
    `rotate`, each (group, rotation) pair is a group of its own: a turned
    alphabet is a new script.

    With `jitter > 0` (images only) every drawn image gets its own small
    random affine distortion (`augment.affine_jitter`, Koch et al.'s ranges
    times `jitter`): training episodes only.
    """

    def __init__(self, items, class_starts, class_counts, class_indices, ways,
                 items_per_class=5, queries_per_class=1, rotate=False, seed=0,
                 class_names=None, class_groups=None, within_group=False, jitter=0.0,
                 name=None):
        """Holds the items of `class_indices` and a seeded generator.

        Args:
          items: `[N, ...]` float32 items, class after class.
          class_starts, class_counts: `[C]` first row and item count of each class.
          class_indices: classes this sampler draws from (a split).
          ways: default number of classes per episode (>= 2).
          items_per_class: support items per class (>= 1).
          queries_per_class: query items per class (>= 0).
          rotate: multiply the classes by the four 90-degree rotations.
          seed: seed of the generator.
          class_names: `[C]` names, for errors (default "class <index>").
          class_groups: `[C]` group of each class (an alphabet); needed by
            `within_group`.
          within_group: draw the N classes of an episode from one group.
          jitter: strength of the per-image affine distortion (0: none; 1:
            Koch et al.'s ranges). Images `[N, H, W, C]` only.
          name: module name.
        """
        super().__init__(name=name)
        items = np.asarray(items, np.float32)
        starts = np.asarray(class_starts, np.int64).reshape(-1)
        counts = np.asarray(class_counts, np.int64).reshape(-1)
        if starts.shape != counts.shape:
            raise ValueError(f"class_starts {starts.shape} and class_counts "
                             f"{counts.shape} differ in shape")
        class_indices = np.asarray(class_indices, np.int64).reshape(-1)
        if class_indices.size == 0:
            raise ValueError("class_indices is empty")
        if class_indices.min() < 0 or class_indices.max() >= len(starts):
            raise ValueError("class_indices must lie in [0, %d), got [%d, %d]"
                             % (len(starts), class_indices.min(), class_indices.max()))
        if len(np.unique(class_indices)) != class_indices.size:
            raise ValueError("class_indices has repeated classes")
        if rotate and (items.ndim != 4 or items.shape[1] != items.shape[2]):
            raise ValueError("rotate=True needs square images [N, H, H, C], got items "
                             f"of shape {items.shape}")
        jitter = float(jitter)
        if not 0.0 <= jitter <= 2.0:
            raise ValueError(f"jitter must lie in [0, 2] (1 is Koch et al.'s ranges), got "
                             f"{jitter}")
        if jitter and items.ndim != 4:
            raise ValueError("jitter > 0 needs images [N, H, W, C], got items of shape "
                             f"{items.shape}")
        if items_per_class < 1:
            raise ValueError("items_per_class must be >= 1, got %d" % items_per_class)
        if queries_per_class < 0:
            raise ValueError("queries_per_class must be >= 0, got %d" % queries_per_class)
        per_class = items_per_class + queries_per_class
        counts = counts[class_indices]
        short = np.flatnonzero(counts < per_class)
        if short.size:
            c = int(class_indices[short[0]])
            label = class_names[c] if class_names is not None else f"class {c}"
            raise ValueError(
                f"{label} has {int(counts[short[0]])} items; episodes of "
                f"{items_per_class} pool + {queries_per_class} held-out items per class "
                f"need {per_class} ({short.size} of {counts.size} classes have fewer): "
                "lower --items_per_class/--shots, or leave such classes out")
        self.num_characters = int(class_indices.size)
        self.num_classes = self.num_characters * (4 if rotate else 1)
        self.drawings_per_class = int(counts.max())
        self.rotate = bool(rotate)
        self.jitter = jitter
        self.within_group = bool(within_group)
        if self.within_group:
            self._init_groups(class_groups, class_indices, len(starts))
        self._check_ways(ways)
        self.ways = int(ways)
        self.items_per_class = int(items_per_class)
        self.queries_per_class = int(queries_per_class)
        self.image_shape = tuple(int(d) for d in items.shape[1:])
        # Only the split's rows, so a sampler holds no more than it draws.
        rows = np.concatenate([np.arange(s, s + n) for s, n in
                               zip(starts[class_indices], counts)])
        self._items = tf.constant(items[rows])
        self._starts = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), tf.int32)
        self._counts = tf.constant(counts, tf.int32)
        # Equal counts (Omniglot's 20 drawings) need no mask: the same draws
        # as an unmasked sampler, so the episodes of a seed never change.
        self._ragged = bool((counts != counts[0]).any())
        self.rng = make_generator(seed)

    def _init_groups(self, class_groups, class_indices, num_all):
        """The `[G, M]` padded class lists of each group, for in-graph draws."""
        if class_groups is None or len(class_groups) != num_all:
            raise ValueError(
                "within_group=True needs class_groups with one group per class "
                f"({num_all}), got {None if class_groups is None else len(class_groups)}")
        names = np.asarray([str(g) for g in class_groups])[class_indices]
        keys = np.unique(names)
        group_of = np.searchsorted(keys, names)
        if self.rotate:  # class c is character c // 4 turned c % 4 times
            group_of = np.repeat(group_of * 4, 4) + np.tile(np.arange(4), len(group_of))
        members = [np.flatnonzero(group_of == g) for g in range(group_of.max() + 1)]
        sizes = np.array([len(m) for m in members])
        self.group_sizes = sizes
        self.largest_group = int(sizes.max())
        padded = np.zeros([len(members), self.largest_group], np.int64)
        for g, m in enumerate(members):
            padded[g, :len(m)] = m
        self._group_members = tf.constant(padded, tf.int32)
        self._group_sizes = tf.constant(sizes, tf.int32)

    def _draw_classes(self, batch_size, ways):
        """`[B, N]` distinct classes per episode, in a uniformly random order."""
        if not self.within_group:
            return sample_without_replacement(
                self.rng, [batch_size], self.num_classes, ways)
        eligible = tf.broadcast_to(self._group_sizes >= ways,
                                   [batch_size, tf.size(self._group_sizes)])
        group = sample_without_replacement(
            self.rng, [batch_size], tf.size(self._group_sizes), 1, valid=eligible)[:, 0]
        valid = (tf.range(self.largest_group)[None, :]
                 < tf.gather(self._group_sizes, group)[:, None])
        slots = sample_without_replacement(
            self.rng, [batch_size], self.largest_group, ways, valid=valid)
        return tf.gather(tf.gather(self._group_members, group), slots, batch_dims=1)

    def _check_ways(self, ways):
        if ways < 2:
            raise ValueError("ways must be >= 2, got %d" % ways)
        if ways > self.num_classes:
            raise ValueError(
                "ways = %d exceeds the %d classes available (%d classes%s)"
                % (ways, self.num_classes, self.num_characters,
                   " x 4 rotations" if self.num_classes > self.num_characters else ""))
        if self.within_group and ways > self.largest_group:
            raise ValueError(
                f"ways = {ways} exceeds the largest group ({self.largest_group} classes): "
                "within-group episodes need a group with at least that many classes")

    @tf.function
    def sample(self, batch_size, ways=None):
        """A batch of episodes.

        Args:
          batch_size: episodes per batch (int or scalar int tensor).
          ways: classes per episode, default `self.ways` (int or scalar
            tensor; a Python int retraces once per value).

        Returns:
          the episode dict of `active_learning.data.schema`: `support`
          float32 `[B, N*items, *item_shape]`, `support_labels` int32
          `[B, N*items]`, `queries` float32 `[B, N*queries, *item_shape]`,
          `query_labels` int32 `[B, N*queries]`.
        """
        if ways is None:
            ways = self.ways
        if isinstance(ways, int):
            self._check_ways(ways)
        else:
            ways = tf.cast(ways, tf.int32)
            # The checks run before any draw reads `ways` (else a slice or a
            # reshape fails first, with a message that names neither).
            with tf.control_dependencies([
                    tf.debugging.assert_greater_equal(ways, 2, "ways must be >= 2"),
                    tf.debugging.assert_less_equal(
                        ways, self.largest_group if self.within_group else self.num_classes,
                        "ways exceeds the classes available (in one group, with "
                        "within_group)")]):
                ways = tf.identity(ways)
        items, queries = self.items_per_class, self.queries_per_class
        per_class = items + queries
        batch_size = tf.cast(batch_size, tf.int32) if not isinstance(
            batch_size, int) else batch_size

        # The drawn classes come in a uniformly random order, so labelling
        # slot j as class j already is a random relabelling per episode.
        classes = self._draw_classes(batch_size, ways)              # [B, N]
        characters = classes // 4 if self.rotate else classes
        valid = None
        if self._ragged:
            valid = (tf.range(self.drawings_per_class)[None, None, :]
                     < tf.gather(self._counts, characters)[..., None])
        drawings = sample_without_replacement(
            self.rng, [batch_size, ways], self.drawings_per_class,
            per_class, valid=valid)                                 # [B, N, M]
        rows = tf.gather(self._starts, characters)[..., None] + drawings
        picked = tf.gather(self._items, rows)
        if self.rotate:
            turns = tf.broadcast_to((classes % 4)[..., None], tf.shape(drawings))
            picked = _rotate_each(picked, turns)
        picked = affine_jitter(self.rng, picked, self.jitter)
        labels = tf.broadcast_to(
            tf.range(ways, dtype=tf.int32)[None, :, None], tf.shape(drawings))

        def flatten_and_shuffle(part_items, part_labels, count):
            size = ways * count
            part_items = tf.reshape(part_items, [batch_size, size] + list(self.image_shape))
            part_labels = tf.reshape(part_labels, [batch_size, size])
            order = sample_without_replacement(self.rng, [batch_size], size, size)
            return (tf.gather(part_items, order, batch_dims=1),
                    tf.gather(part_labels, order, batch_dims=1))

        support, support_labels = flatten_and_shuffle(
            picked[:, :, :items], labels[:, :, :items], items)
        if queries:
            query_items, query_labels = flatten_and_shuffle(
                picked[:, :, items:], labels[:, :, items:], queries)
        else:
            query_items = tf.zeros([batch_size, 0] + list(self.image_shape))
            query_labels = tf.zeros([batch_size, 0], tf.int32)
        return {
            "support": support,
            "support_labels": support_labels,
            "queries": query_items,
            "query_labels": query_labels,
        }

    def dataset(self, batch_size, ways=None):
        """An infinite `tf.data.Dataset` whose elements are `sample(...)`.

        Elements draw from `self.rng` when the pipeline produces them, so a
        prefetching pipeline moves the generator ahead of what the consumer
        has seen; checkpoint the sampler only with an unbuffered pipeline if
        exact resumption matters.
        """
        return tf.data.Dataset.from_tensors(0).repeat().map(
            lambda _: self.sample(batch_size, ways))
