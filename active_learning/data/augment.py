"""In-graph image augmentation for training episodes.

`affine_jitter` distorts every drawn image by its own small random affine
map: the augmentation of Koch et al.'s Siamese networks on Omniglot (Lake et
al.'s within-alphabet one-shot benchmark, 92%), which our encoder otherwise
never sees. At `strength=1` the ranges are Koch et al.'s: rotation within
+-10 degrees, shear within +-0.3 rad, scale in [0.8, 1.2] per axis, and a
shift of up to 2% of the image side (their 2 px of 105). Draws come from the
sampler's `tf.random.Generator`, so a seed and a restored checkpoint give
the same distortions.
"""

import math

import tensorflow as tf

# The ranges at strength 1 (one place: the docstring above quotes them).
MAX_ROTATION = math.radians(10.0)
MAX_SHEAR = 0.3
MAX_SCALE = 0.2
MAX_SHIFT = 0.02  # of the image side


def affine_matrices(rng, count, height, width, strength):
    """`[count, 8]` projective transforms (output pixel -> input pixel).

    Each is centre-preserving: rotation * shear * scale about the image
    centre, then a shift. The rows follow `ImageProjectiveTransformV3`'s
    layout `[a0, a1, a2, b0, b1, b2, 0, 0]`.
    """
    def uniform(bound):
        return rng.uniform([count], -bound * strength, bound * strength, dtype=tf.float32)

    angle = uniform(MAX_ROTATION)
    shear = uniform(MAX_SHEAR)
    scale_x = 1.0 + uniform(MAX_SCALE)
    scale_y = 1.0 + uniform(MAX_SCALE)
    shift_x = uniform(MAX_SHIFT) * width
    shift_y = uniform(MAX_SHIFT) * height
    cos, sin = tf.cos(angle), tf.sin(angle)
    # [[cos, -sin], [sin, cos]] @ [[1, shear], [0, 1]] @ diag(scale_x, scale_y)
    a0 = cos * scale_x
    a1 = (cos * shear - sin) * scale_y
    b0 = sin * scale_x
    b1 = (sin * shear + cos) * scale_y
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # x_in = A (x_out - c) + c + shift
    a2 = cx - a0 * cx - a1 * cy + shift_x
    b2 = cy - b0 * cx - b1 * cy + shift_y
    zeros = tf.zeros_like(a0)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=-1)


def affine_jitter(rng, images, strength, fill_value=0.0):
    """Each image `[..., H, W, C]` under its own random affine distortion.

    Args:
      rng: a `tf.random.Generator` (the sampler's).
      images: float32 `[..., H, W, C]`.
      strength: scales every range (0 leaves the images untouched and draws
        nothing, so a sampler's episode stream is what it was without jitter).
      fill_value: the background outside the source image (Omniglot's
        decoded background is 0).

    Returns:
      float32 images of the same shape, bilinearly resampled.
    """
    if strength == 0:
        return images
    shape = tf.shape(images)
    height, width = int(images.shape[-3]), int(images.shape[-2])
    flat = tf.reshape(images, tf.concat([[-1], shape[-3:]], axis=0))
    transforms = affine_matrices(rng, tf.shape(flat)[0], height, width, strength)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=flat, transforms=transforms, output_shape=[height, width],
        fill_value=fill_value, interpolation="BILINEAR", fill_mode="CONSTANT")
    return tf.reshape(warped, shape)
