"""Model configuration: the one place that fixes the architecture's sizes.

A checkpoint is only meaningful together with the config that built the
model; trainers save it as `model_config.json` beside the checkpoints, and
export refuses a checkpoint whose config does not match.
"""

import dataclasses
import json

TASKS = ("classification", "regression")
# How a classification model encodes items: the paper's conv net over images
# or an MLP over feature vectors (a user's own embeddings or tabular data).
ENCODERS = ("conv", "mlp")
# How a ratings model predicts: the paper's convex combination of the
# observed ratings, or from each item's prior plus a learned fold-in of the
# user's residuals (`layers/prior_predictor.py`).
RATING_PREDICTORS = ("paper", "prior")

# How the selector computes its item-item features: from the full cosine
# matrix every step, or from a per-episode index in O(pool x labelled) per
# step (layers/selector.py, layers/selection_index.py).
SELECTOR_FEATURES = ("exact", "scalable")

# Fields added after models were exported and sessions saved: `to_json`
# leaves them out at their default, so the JSON (and with it the metadata
# signature's model_config and every model fingerprint) of a model that does
# not use them stays what it was.
_LATER_FIELDS = {"rating_predictor": "paper", "selector_features": "exact", "selector_neighbours": 32,
                 "selection_chunk": 1024, "encoder_residual_blocks": 0}

# The Omniglot trainer's default `labelled_mass_temperatures` (the benchmark
# times the same model).
OMNIGLOT_LABELLED_MASS_TEMPERATURES = (0.1, 0.3)

# The pixel contract of image models, checked wherever images come in (the
# serving signatures, ActiveSession): the end of every pixel-value error.
PIXEL_CONTRACT = ("looks like 0-255 or inverted ink: images are float32 in [0, 1], "
                  "ink = 1")
# Omniglot-style drawings are mostly background (mean pixel about 0.1-0.2);
# an image whose mean is above this is light ink on dark paper, inverted.
MAX_MEAN_PIXEL = 0.5


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and task of an `ActiveMatchingNetwork`.

    Attributes:
      task: "classification" (Omniglot) or "regression" (MovieLens ratings).
      max_classes: width of the one-hot labels; a model reads any N <= this.
      embed_dim: width of item embeddings x' and x''.
      units: width of the context LSTMs, the controller and the matching LSTM.
      matching_steps: K, the slow predictor's matching iterations (paper: 3).
      image_size: side of the square images (conv encoder).
      image_channels: 1 (grey-scale) or 3 (RGB) (conv encoder).
      ink_images: images follow Omniglot's convention, sparse ink = 1 on a
        0 background (the paper's data); False for photographs and other
        images whose pixels may be anything in [0, 1]. Serving uses it to
        tell an inverted or 0-255 image from a real one.
      encoder: "conv" (images) or "mlp" (feature vectors), classification.
      encoder_residual_blocks: conv encoder only (not in the paper, which
        is 0): 3x3 residual blocks x + leaky_relu(conv(x)) after the paper's
        three convolutions, at 7x7. Their kernels start at zero, so a model
        warm-started (`--init_from`) from a paper-encoder model begins as
        exactly that model and training only adds to it.
      feature_size: width of the feature vectors (mlp encoder).
      feature_hidden: hidden widths of the mlp encoder.
      num_items: vocabulary size of the item table (regression).
      item_table_dim: width of that table (the latent-factor dimension).
      train_item_table: whether the item table keeps learning.
      rating_min, rating_max: the rating scale (regression).
      rating_prior: initial prediction before any rating is seen.
      item_prior: regression only. Each held-out item gets a prior rating,
        rating_prior + a learned per-item bias, and the slow predictor's
        attention gets one more slot, on that prior, with a learned logit:
        predictions shrink towards what the item usually gets until the
        user's own ratings outweigh it (not in the paper; see
        docs/results.md, Figure 4).
      rating_predictor: regression only. "paper": the paper's predictors, a
        convex combination of the observed ratings (3.2.5-3.2.6). "prior":
        each item starts from its prior rating (rating_prior + a learned
        per-item bias) and the user's residuals on the observed items move
        it, through a ridge fold-in of a user vector and offset on the item
        table's latent factors (learned penalties) plus a gated attention
        correction; one rating then moves every prediction without making
        them equal (not in the paper; `layers/prior_predictor.py`). Its
        `begin` embeddings carry each pool item's prior and latent vector
        after the embed_dim matching features (`embedding_width`).
      labelled_mass_temperatures: one extra selector feature per temperature:
        the share of an item's softmax attention over the pool that falls on
        labelled items (not in the paper; see layers/selector.py). Empty:
        the paper's six cosine features only.
      selector_features: "exact" (the default, the reference): the
        selector's item-item features from the pool's full cosine matrix,
        P^2 cosines per step. "scalable": from a per-episode selection
        index (`layers/selection_index.py`), O(P x labelled) per step; the
        same features, except that max/min cosine to the unlabelled items
        is approximated when all of an item's `selector_neighbours` nearest
        (farthest) items are labelled. Same weights either way.
      selector_neighbours: k, the nearest and farthest items the scalable
        index keeps per item; with k >= pool - 1 it matches "exact".
      selection_chunk: rows per block when the scalable index is built
        (memory O(batch x chunk x pool)).
    """

    task: str = "classification"
    max_classes: int = 20
    embed_dim: int = 64
    units: int = 64
    matching_steps: int = 3
    image_size: int = 28
    image_channels: int = 1
    ink_images: bool = True
    encoder: str = "conv"
    encoder_residual_blocks: int = 0
    feature_size: int = 0
    feature_hidden: tuple = (256,)
    num_items: int = 0
    item_table_dim: int = 0
    train_item_table: bool = True
    rating_min: float = 0.5
    rating_max: float = 5.0
    rating_prior: float = 3.5
    item_prior: bool = False
    rating_predictor: str = "paper"
    labelled_mass_temperatures: tuple = ()
    selector_features: str = "exact"
    selector_neighbours: int = 32
    selection_chunk: int = 1024

    def __post_init__(self):
        # JSON gives a list; a tuple keeps the frozen config hashable.
        object.__setattr__(self, "labelled_mass_temperatures",
                           tuple(float(t) for t in self.labelled_mass_temperatures))
        object.__setattr__(self, "feature_hidden", tuple(int(u) for u in self.feature_hidden))
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.task == "classification" and self.encoder == "conv":
            if self.image_channels not in (1, 3):
                raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels}")
            if self.image_size < 4:
                raise ValueError(f"image_size must be >= 4, got {self.image_size}")
        if self.encoder_residual_blocks < 0:
            raise ValueError("encoder_residual_blocks must be >= 0, got "
                             f"{self.encoder_residual_blocks}")
        if self.encoder_residual_blocks and not (self.task == "classification"
                                                 and self.encoder == "conv"):
            raise ValueError("encoder_residual_blocks is for the conv (image) encoder "
                             f"only; this model's encoder is {self.encoder!r} "
                             f"({self.task})")
        if self.task == "classification" and self.encoder == "mlp" and self.feature_size < 1:
            raise ValueError("an mlp encoder needs feature_size >= 1 (the width of the "
                             f"feature vectors), got {self.feature_size}")
        if any(u < 1 for u in self.feature_hidden):
            raise ValueError(f"feature_hidden widths must be >= 1, got {self.feature_hidden}")
        if any(not t > 0 for t in self.labelled_mass_temperatures):
            raise ValueError("labelled_mass_temperatures must be > 0, got "
                             f"{list(self.labelled_mass_temperatures)}")
        if self.selector_features not in SELECTOR_FEATURES:
            raise ValueError(f"selector_features must be one of {SELECTOR_FEATURES}, got "
                             f"{self.selector_features!r}")
        for name in ("selector_neighbours", "selection_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "classification" and self.max_classes < 2:
            raise ValueError(f"max_classes must be >= 2, got {self.max_classes}")
        if self.task == "regression" and self.num_items < 1:
            raise ValueError("a regression model needs num_items >= 1 (the item vocabulary size)")
        if self.item_prior and self.task != "regression":
            raise ValueError("item_prior is for regression (ratings) models only")
        if self.rating_predictor not in RATING_PREDICTORS:
            raise ValueError(f"rating_predictor must be one of {RATING_PREDICTORS}, "
                             f"got {self.rating_predictor!r}")
        if self.rating_predictor == "prior":
            if self.task != "regression":
                raise ValueError("rating_predictor='prior' is for regression (ratings) "
                                 "models only; classification models use 'paper'")
            if self.item_prior:
                raise ValueError("item_prior and rating_predictor='prior' are two ways of "
                                 "using each item's prior rating; choose one")
        for name in ("embed_dim", "units", "matching_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def item_shape(self):
        """Shape of one item as the model takes it (after the pool axes)."""
        if self.task == "regression":
            return ()
        if self.encoder == "mlp":
            return (self.feature_size,)
        return (self.image_size, self.image_size, self.image_channels)

    @property
    def table_width(self):
        """Width of the item table (regression): the latent-factor dimension."""
        return int(self.item_table_dim or self.embed_dim)

    @property
    def embedding_width(self):
        """Width D of the `embeddings` that `begin` returns and the other
        steps take: embed_dim, plus the prior and the latent vector of each
        pool item for the prior-aware rating predictor."""
        if self.rating_predictor == "prior":
            return int(self.embed_dim) + 1 + self.table_width
        return int(self.embed_dim)

    def to_json(self):
        values = dataclasses.asdict(self)
        for name, default in _LATER_FIELDS.items():
            if values[name] == default:
                del values[name]
        return json.dumps(values, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))
