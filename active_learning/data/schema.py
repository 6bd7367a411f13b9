"""The one episode format every sampler emits and every learner reads.

An episode batch is a dict with these four keys, whatever the item type
(meta-dataset's lesson: one episode format, so rollout, training, evaluation
and benchmark never branch on the data set):

  support         `[B, P, ...]` the pool the active learner may ask about:
                  float32 images `[B, P, H, W, C]`, float32 feature vectors
                  `[B, P, F]`, or int32 item indices `[B, P]` (ratings).
  support_labels  `[B, P]` the answers a person would give: int32 classes
                  `0..N-1` per episode, or float32 ratings.
  queries         `[B, Q, ...]` held-out items, same kind as `support`.
  query_labels    `[B, Q]` their labels, same kind as `support_labels`.

A sampler may add keys of its own (the ratings sampler adds `user_index`);
consumers ignore keys they do not know.
"""

import collections

EPISODE_KEYS = ("support", "support_labels", "queries", "query_labels")

Episode = collections.namedtuple("Episode", EPISODE_KEYS)


def episode_from_batch(batch):
    """The `Episode` of a batch dict; names the missing keys if any."""
    missing = [k for k in EPISODE_KEYS if k not in batch]
    if missing:
        raise ValueError(
            f"an episode batch needs the keys {list(EPISODE_KEYS)} "
            f"(active_learning.data.schema); missing {missing}, got "
            f"{sorted(batch)}")
    return Episode(*(batch[k] for k in EPISODE_KEYS))
