"""Rating predictors of the MovieLens baselines that are not the model (paper 4.2.3).

The paper compares the active Matching Network with two classical
predictors that see the latent-factor movie embeddings (4.2.2) of the movies
a new user has rated so far:

- Regression: "regularized linear regression on movies from the support set
  whose ratings have been observed incrementally in random order", the
  regulariser tuned for every label count on validation episodes.
  `RidgeRegression` fits the user's weights on the embeddings of the rated
  movies; `tune_regulariser` picks the penalty from a grid.
- Gaussian Process: "selects the next movie to label in proportion to the
  variance of the predictive posterior distribution over its rating".
  `GaussianProcessRegressor` gives that posterior (mean and variance); the
  selection itself is `policies.GPVariancePolicy`, run by
  `evaluation.rating_baselines` on the same kernel.

Both predict the residual of a rating around a per-movie prior mean (the
latent-factor model's global + movie bias, fitted on training users only), so
what they learn from a user's few ratings is only how this user differs.

Everything is batched over episodes (`[E, n, D]` features, `[E, n]` ratings)
and runs in numpy: the systems are at most 10 x 10 per episode, far below
what a graph would pay off for. Episodes are scored by RMSE per episode (one
user's held-out ratings), then averaged over episodes, as the paper reports
(4.2.1) -- not by one RMSE pooled over all ratings, which would weigh users
with large errors more (`rmse_per_episode`).
"""

import numpy as np


def rmse_per_episode(predictions, targets, mask=None):
    """[E] root mean squared error of each episode's held-out ratings.

    Args:
      predictions, targets: `[E, Q]` (or `[Q]` for one episode).
      mask: optional bool `[E, Q]`, False on padding to ignore.
    """
    predictions = np.asarray(predictions, np.float64)
    targets = np.asarray(targets, np.float64)
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {predictions.shape} and targets "
                         f"{targets.shape} differ in shape")
    squared = np.square(predictions - targets)
    if mask is None:
        return np.sqrt(squared.mean(axis=-1))
    mask = np.asarray(mask, bool)
    counts = mask.sum(axis=-1)
    if (counts == 0).any():
        raise ValueError("an episode has no held-out rating to score")
    return np.sqrt(np.where(mask, squared, 0.0).sum(axis=-1) / counts)


def mean_rmse_per_episode(predictions, targets, mask=None):
    """The paper's metric: RMSE of each episode, then the mean over episodes."""
    return float(rmse_per_episode(predictions, targets, mask).mean())


def pooled_rmse(predictions, targets):
    """One RMSE over every rating of every episode (not the paper's metric)."""
    error = np.asarray(predictions, np.float64) - np.asarray(targets, np.float64)
    return float(np.sqrt(np.mean(np.square(error))))


def _batched(x, y, queries):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    queries = np.asarray(queries, np.float64)
    if x.ndim != 3 or y.shape != x.shape[:2] or queries.ndim != 3 or (
            queries.shape[0] != x.shape[0] or queries.shape[2] != x.shape[2]):
        raise ValueError(
            "expected x [E, n, D], y [E, n], queries [E, Q, D]; got "
            f"{x.shape}, {y.shape}, {queries.shape}")
    return x, y, queries


def _offset(prior, shape):
    if prior is None:
        return np.zeros(shape, np.float64)
    prior = np.asarray(prior, np.float64)
    if prior.shape != shape:
        raise ValueError(f"prior mean of shape {prior.shape}, expected {shape}")
    return prior


class RidgeRegression:
    """Per-episode ridge regression of ratings on item features.

    For each episode, fits `w` minimising
        sum_i (y_i - m_i - [x_i, 1] . w)^2 + l2 * |w|^2
    and predicts `m_q + [x_q, 1] . w`, where `m` is an optional prior mean
    per item. The constant feature is the user's offset; it is penalised
    like the rest, since with one or two ratings an unpenalised offset would
    copy their noise into every prediction.

    `l2 = 0` gives the minimum-norm least-squares solution (the limit of
    ridge as the penalty vanishes).
    """

    def __init__(self, l2):
        if not l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.l2 = float(l2)

    def fit_predict(self, x, y, queries, prior=None, query_prior=None):
        """Predictions `[E, Q]` for `queries [E, Q, D]` from `x [E, n, D]`, `y [E, n]`."""
        x, y, queries = _batched(x, y, queries)
        residual = y - _offset(prior, y.shape)
        ones = np.ones(x.shape[:2] + (1,))
        features = np.concatenate([x, ones], axis=-1)
        query_features = np.concatenate([queries, np.ones(queries.shape[:2] + (1,))], -1)
        n, d = features.shape[1], features.shape[2]
        if self.l2 == 0.0:
            weights = np.einsum("eij,ej->ei", np.linalg.pinv(features), residual)
        elif n > d:
            # Primal: a d x d system, the smaller one when ratings outnumber features.
            gram = np.einsum("eni,enj->eij", features, features) + self.l2 * np.eye(d)
            weights = np.linalg.solve(gram, np.einsum("eni,en->ei", features,
                                                      residual)[..., None])[..., 0]
        else:
            # Dual: an n x n system (n = labels so far, at most 10 here).
            kernel = np.einsum("eid,ejd->eij", features, features) + self.l2 * np.eye(n)
            alpha = np.linalg.solve(kernel, residual[..., None])[..., 0]
            weights = np.einsum("end,en->ed", features, alpha)
        predictions = np.einsum("eqd,ed->eq", query_features, weights)
        return predictions + _offset(query_prior, predictions.shape)


def kernel_matrix(a, b, kernel="cosine", bias_variance=0.0):
    """`[E, n, m]` kernel between item features `a [E, n, D]` and `b [E, m, D]`.

    cosine: the similarity the model's policies use (`policies.gp_posterior_variance`),
    1 on the diagonal; linear: the plain dot product. `bias_variance` adds a
    constant kernel: a per-user offset shared by all items, which the cosine
    of nearly orthogonal embeddings cannot express on its own.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if kernel == "linear":
        return np.einsum("end,emd->enm", a, b) + bias_variance
    if kernel == "cosine":
        def unit(v):
            return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        return np.einsum("end,emd->enm", unit(a), unit(b)) + bias_variance
    raise ValueError(f"unknown kernel {kernel!r}; expected 'cosine' or 'linear'")


class GaussianProcessRegressor:
    """Exact GP regression per episode: ratings = prior mean + f + noise.

    f ~ GP(0, signal_variance * k) with `k` from `kernel_matrix` (by default
    cosine + a constant `bias_variance` for the user's offset), Gaussian
    observation noise of variance `noise` * signal_variance. The posterior at
    held-out items q given rated items X with ratings y and prior means m:

        mean_q = m_q + K_qX (K_XX + noise I)^-1 (y - m_X)
        var_q  = signal_variance * (k_qq - K_qX (K_XX + noise I)^-1 K_Xq)

    The posterior mean depends on the noise-to-signal ratio only, which is
    the regulariser that `tune_regulariser` sets per label count.
    """

    def __init__(self, noise=0.1, signal_variance=1.0, kernel="cosine", bias_variance=1.0):
        if not noise > 0:
            raise ValueError(f"noise must be > 0, got {noise}")
        if not signal_variance > 0:
            raise ValueError(f"signal_variance must be > 0, got {signal_variance}")
        if not bias_variance >= 0:
            raise ValueError(f"bias_variance must be >= 0, got {bias_variance}")
        kernel_matrix(np.zeros([1, 1, 1]), np.zeros([1, 1, 1]), kernel)  # validates
        self.noise = float(noise)
        self.signal_variance = float(signal_variance)
        self.kernel = kernel
        self.bias_variance = float(bias_variance)

    def kernel_matrix(self, a, b):
        return kernel_matrix(a, b, self.kernel, self.bias_variance)

    def posterior(self, x, y, queries, prior=None, query_prior=None):
        """(mean `[E, Q]`, variance `[E, Q]`) at `queries` given `x`, `y`."""
        x, y, queries = _batched(x, y, queries)
        n = x.shape[1]
        system = self.kernel_matrix(x, x) + self.noise * np.eye(n)
        cross = self.kernel_matrix(queries, x)                         # [E, Q, n]
        residual = y - _offset(prior, y.shape)
        solved = np.linalg.solve(system, np.swapaxes(cross, 1, 2))     # [E, n, Q]
        mean = np.einsum("enq,en->eq", solved, residual)
        prior_variance = np.einsum("eqq->eq", self.kernel_matrix(queries, queries))
        reduction = np.einsum("eqn,enq->eq", cross, solved)
        variance = self.signal_variance * np.maximum(prior_variance - reduction, 0.0)
        return mean + _offset(query_prior, mean.shape), variance

    def fit_predict(self, x, y, queries, prior=None, query_prior=None):
        """Posterior mean `[E, Q]` (the same call shape as `RidgeRegression`)."""
        return self.posterior(x, y, queries, prior, query_prior)[0]


def tune_regulariser(grid, make_predictor, x, y, queries, query_targets, prior=None,
                     query_prior=None):
    """Picks the grid value whose predictor has the lowest mean per-episode RMSE.

    Args:
      grid: candidate regulariser values (ridge `l2`, GP `noise`).
      make_predictor: value -> an object with `fit_predict(x, y, queries,
        prior, query_prior)`, e.g. `RidgeRegression`.
      x, y: the rated items' features `[E, n, D]` and ratings `[E, n]` of
        validation episodes.
      queries, query_targets: their held-out items `[E, Q, D]` and ratings.

    Returns:
      (best value, list of the mean per-episode RMSE of every grid value).
      Ties go to the first grid value.
    """
    grid = list(grid)
    if not grid:
        raise ValueError("the regulariser grid is empty")
    scores = []
    for value in grid:
        predictions = make_predictor(value).fit_predict(x, y, queries, prior, query_prior)
        scores.append(mean_rmse_per_episode(predictions, query_targets))
    return grid[int(np.argmin(scores))], scores
