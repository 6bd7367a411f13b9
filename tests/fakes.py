"""Tiny synthetic episodes and models shared by the training and trainer tests."""

import numpy as np

from active_learning.config import ModelConfig
from active_learning.data import omniglot
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
