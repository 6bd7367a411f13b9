"""Affine jitter of training drawings (`active_learning.data.augment`)."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from active_learning.data import augment
from active_learning.data.episodes import ClassEpisodeSampler
from active_learning.data.sampling import make_generator

CLASSES, PER_CLASS, SIDE = 6, 4, 12


def _images():
    """Each drawing a filled square whose side encodes its class."""
    items = np.zeros([CLASSES * PER_CLASS, SIDE, SIDE, 1], np.float32)
    for row in range(CLASSES * PER_CLASS):
        half = 1 + row // PER_CLASS // 2
        items[row, SIDE // 2 - half:SIDE // 2 + half, SIDE // 2 - half:SIDE // 2 + half] = 1.0
    return items


def _sampler(jitter, seed=3):
    return ClassEpisodeSampler(_images(), np.arange(CLASSES) * PER_CLASS,
                               np.full(CLASSES, PER_CLASS), np.arange(CLASSES), ways=3,
                               items_per_class=2, queries_per_class=1, seed=seed,
                               jitter=jitter)


def test_matrices_stay_within_the_documented_ranges():
    count, strength = 4000, 1.0
    m = augment.affine_matrices(make_generator(0), count, SIDE, SIDE, strength).numpy()
    a = m[:, [0, 1, 3, 4]].reshape(count, 2, 2)
    # Rotation and shear keep the area; only the two scales change it.
    det = np.linalg.det(a)
    lo, hi = (1 - augment.MAX_SCALE) ** 2, (1 + augment.MAX_SCALE) ** 2
    assert det.min() >= lo - 1e-5 and det.max() <= hi + 1e-5
    assert det.min() < 0.75 and det.max() > 1.3          # the range is used, not only its middle
    # The centre moves by the shift alone, at most 2% of the side per axis.
    c = (SIDE - 1) / 2.0
    moved = np.stack([m[:, 0] * c + m[:, 1] * c + m[:, 2], m[:, 3] * c + m[:, 4] * c + m[:, 5]],
                     -1) - c
    assert np.abs(moved).max() <= augment.MAX_SHIFT * SIDE + 1e-5
    assert np.all(m[:, 6:] == 0)                           # affine, not projective
    # Strength scales every range: half strength, at most half the shift.
    half = augment.affine_matrices(make_generator(0), count, SIDE, SIDE, 0.5).numpy()
    assert np.abs(half[:, 2] - (c - half[:, 0] * c - half[:, 1] * c)).max() \
        <= 0.5 * augment.MAX_SHIFT * SIDE + 1e-5


def test_jitter_distorts_each_image_on_its_own_and_keeps_values_in_range():
    images = tf.constant(_images())
    out = augment.affine_jitter(make_generator(1), images, 1.0).numpy()
    assert out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6   # bilinear, background fill 0
    changed = np.abs(out - images.numpy()).reshape(len(out), -1).max(1)
    assert np.all(changed > 0.05)                         # every image moved
    # Two copies of one drawing get different distortions.
    twice = augment.affine_jitter(make_generator(1), tf.stack([images[5], images[5]]), 1.0)
    assert np.abs(twice[0] - twice[1]).max() > 0.05
    # Ink is roughly kept: scales of at most 1.2 per axis change the area by < 1.44x.
    ratio = out.reshape(len(out), -1).sum(1) / images.numpy().reshape(len(out), -1).sum(1)
    assert np.all((ratio > 0.5) & (ratio < 1.6))
    # A batch shape before the image axes is kept.
    nested = augment.affine_jitter(make_generator(1), tf.reshape(images, [4, 6, SIDE, SIDE, 1]),
                                   1.0)
    np.testing.assert_allclose(tf.reshape(nested, images.shape), out, atol=1e-6)


def test_zero_jitter_leaves_the_episode_stream_as_it_was():
    plain = ClassEpisodeSampler(_images(), np.arange(CLASSES) * PER_CLASS,
                                np.full(CLASSES, PER_CLASS), np.arange(CLASSES), ways=3,
                                items_per_class=2, queries_per_class=1, seed=3)
    zero = _sampler(0.0)
    for _ in range(2):                     # the second batch: the generator kept pace
        a, b = plain.sample(5), zero.sample(5)
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())


def test_jittered_episodes_are_seeded_and_keep_their_labels():
    samplers = [_sampler(1.0, seed=4), _sampler(1.0, seed=4), _sampler(0.0, seed=4)]
    first, again, plain = (s.sample(8) for s in samplers)
    for key in first:
        np.testing.assert_array_equal(first[key].numpy(), again[key].numpy())
    assert np.abs(first["support"].numpy() - plain["support"].numpy()).max() > 0.05
    # The labels still name classes: same-label items have the same square
    # size (up to the distortion), so the mean ink per label differs by class.
    ink = first["support"].numpy().sum(axis=(2, 3, 4))
    labels = first["support_labels"].numpy()
    for row_ink, row_labels in zip(ink, labels):
        for label in range(3):
            same = row_ink[row_labels == label]
            assert same.max() / same.min() < 2.2


@pytest.mark.parametrize("jitter", [-0.1, 2.5])
def test_out_of_range_jitter_is_refused(jitter):
    with pytest.raises(ValueError, match="jitter must lie in"):
        _sampler(jitter)


def test_jitter_needs_images():
    with pytest.raises(ValueError, match="jitter > 0 needs images"):
        ClassEpisodeSampler(np.zeros([8, 3], np.float32), [0, 4], [4, 4], [0, 1], ways=2,
                            items_per_class=2, jitter=1.0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
