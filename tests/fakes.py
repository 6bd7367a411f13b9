"""Tiny synthetic episodes and models shared by the training and trainer tests."""

import functools

import numpy as np
import tensorflow as tf

from active_learning.config import ModelConfig
from active_learning.data import omniglot
from active_learning.data.schema import EPISODE_KEYS
from active_learning.model import ActiveMatchingNetwork


def character_images(num_characters=6, drawings=8, size=28, seed=0):
    """[C, D, size, size] images: one random prototype per character + noise."""
    rng = np.random.RandomState(seed)
    prototypes = (rng.rand(num_characters, 1, size, size) > 0.8).astype(np.float32)
    noise = rng.rand(num_characters, drawings, size, size) > 0.95
    return np.abs(prototypes - noise).astype(np.float32)


def tiny_sampler(ways=3, items_per_class=2, seed=0, num_characters=6):
    return omniglot.EpisodeSampler(character_images(num_characters), np.arange(num_characters),
                                   ways=ways, items_per_class=items_per_class, seed=seed)


def tiny_model(max_classes=4, task="classification", **kwargs):
    config = dict(task=task, max_classes=max_classes, embed_dim=8, units=8)
    config.update(kwargs)
    return ActiveMatchingNetwork(ModelConfig(**config))


# Small episodes of both tasks for the model, policy and rollout tests:
# B episodes, pools of P items from N classes, Q held-out items.
B, P, Q, N = 2, 6, 3, 3
NUM_ITEMS = 40
TASKS = ("classification", "regression")


def small_config(task, **overrides):
    """A small ModelConfig of either task (classification with the optional
    labelled-mass selector feature, as the Omniglot trainer builds it;
    regression with the paper's features only)."""
    if task == "classification":
        overrides.setdefault("labelled_mass_temperatures", (0.2,))
        return ModelConfig(embed_dim=16, units=16, max_classes=5, **overrides)
    return ModelConfig(task="regression", num_items=NUM_ITEMS, item_table_dim=8,
                       embed_dim=16, units=16, max_classes=5, **overrides)


def small_episode(task, seed=0):
    """(support, support_labels, queries, query_labels) as tensors."""
    rng = np.random.RandomState(seed)
    if task == "classification":
        labels = np.stack([rng.permutation(np.arange(P) % N) for _ in range(B)])
        return (tf.constant(rng.rand(B, P, 28, 28, 1), tf.float32),
                tf.constant(labels, tf.int32),
                tf.constant(rng.rand(B, Q, 28, 28, 1), tf.float32),
                tf.constant(rng.randint(0, N, (B, Q)), tf.int32))
    items = np.stack([rng.choice(NUM_ITEMS, P + Q, replace=False) for _ in range(B)])
    ratings = rng.randint(1, 11, (B, P + Q)) / 2.0
    return (tf.constant(items[:, :P], tf.int32), tf.constant(ratings[:, :P], tf.float32),
            tf.constant(items[:, P:], tf.int32), tf.constant(ratings[:, P:], tf.float32))


@functools.lru_cache(maxsize=None)
def small_batch(task, seed=0):
    """`small_episode` as a batch dict (cached: the same object each call)."""
    support, support_labels, queries, query_labels = small_episode(task, seed)
    return dict(zip(EPISODE_KEYS, (support, support_labels, queries, query_labels)))
