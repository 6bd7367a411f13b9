"""Summary statistics of per-episode results: the mean and its 95% CI.

The paper reports held-out metrics as a mean over test episodes with a 95%
confidence interval (Table 1's +-); every curve and row of the evaluation
uses this one definition.
"""

import math

import numpy as np

Z_95 = 1.959963984540054


def mean_and_ci(samples, axis=0):
    """Mean and half-width of the normal 95% CI of the mean along `axis`."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[axis]
    mean = samples.mean(axis=axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    return mean, Z_95 * samples.std(axis=axis, ddof=1) / math.sqrt(n)
