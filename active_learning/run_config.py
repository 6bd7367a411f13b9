"""The run configuration: everything a training run was asked to do, typed.

A trained model directory holds `model_config.json` (the architecture,
`config.ModelConfig`) and `run_config.json`, written from a `RunConfig`:

  loop           the training loop (`LoopConfig`: steps, batch, intervals,
                 model_dir, init_from)
  train_config   the objective and optimizer (`training.TrainConfig`)
  episodes       the episode shape (`ClassEpisodeConfig`: N-way, K-shot
                 episodes of paper 4.1; `RatingsEpisodeConfig`: cold-start
                 users of paper 4.2)
  data           how the dataset is read and preprocessed
                 (`ClassificationData`, `RatingsData`), so that evaluation
                 and export rebuild the same classes or users from it alone
  recorded       facts observed when the run started (data summary, class
                 split, latent-factor fit): a report, not settings

Trainers build a `RunConfig` from their flags in `main()`; the training
loop, evaluation and export read only this object. `RunConfig.from_dict`
refuses a record with a missing or unknown field, naming it: a new run's
record is complete, so readers need no defaults of their own.
`load_run_config` also reads the records that older trainers wrote (flat,
without `format`): it fills what they lack from the flags they recorded, and
what they did not record from the defaults those trainers had, and says so
in a log line.
"""

import dataclasses
import json
import os
from typing import Optional, Tuple, Union

from absl import logging
import tensorflow as tf

from active_learning import checkpoints
from active_learning.training import TrainConfig

# Written as `format` in run_config.json; a record without it is older.
FORMAT = 2
# TrainConfig fields added after this format was fixed, with the value every
# run recorded before them had: such a run resumes, and reports, as trained.
TRAIN_FIELDS_ADDED_LATER = {"rating_oracle": "exact"}
# Likewise for every section, by the name of its config class.
FIELDS_ADDED_LATER = {"TrainConfig": TRAIN_FIELDS_ADDED_LATER,
                      "RatingsData": {"factor_fraction": 1.0, "split_seed": None},
                      "ClassEpisodeConfig": {"episode_classes": "random"},
                      "ClassificationData": {"jitter": 0.0},
                      "LoopConfig": {"init_encoder_from": None}}
# How the N classes of a training or validation episode are drawn: from all
# of the split's classes, or all from one group (an alphabet: Lake et al.'s
# within-alphabet protocol).
EPISODE_CLASSES = ("random", "within_alphabet")

CLASSIFICATION_TASKS = ("omniglot", "classification")
RATINGS_TASKS = ("movielens", "ratings")

# Paper 4.2.1: the 4,000 most-rated movies, the 6,000 users with the most
# ratings among them, episodes of 50 support and 10 held-out ratings; a
# sixth of the users test, a twelfth validation.
PAPER_RATINGS = dict(num_movies=4000, num_users=6000, support_size=50, query_size=10)
VALIDATION_FRACTION = 1 / 12
TEST_FRACTION = 1 / 6
# MovieLens (paper 4.2.2): 10 ratings requested per cold-start user.
RATINGS_BUDGET = 10

# Episode streams per purpose: fixed offsets from the run's --seed, so that
# the seed alone decides every episode and no two streams coincide.
#   train       training episodes
#   selection   the validation episodes a trainer picks its best checkpoint on
#   test        evaluation on the test split (trainers.evaluate)
#   validation  evaluation on the validation split (trainers.evaluate)
_EPISODE_SEED_OFFSETS = {"train": 0, "selection": 1_000_003, "test": 2_000_029,
                         "validation": 3_000_017}
EPISODE_PURPOSES = tuple(_EPISODE_SEED_OFFSETS)


def episode_seed(seed, purpose):
    """Seed of the episode sampler for `purpose` (see `EPISODE_PURPOSES`)."""
    if purpose not in _EPISODE_SEED_OFFSETS:
        raise ValueError(f"episode purpose must be one of {EPISODE_PURPOSES}, got {purpose!r}")
    return int(seed) + _EPISODE_SEED_OFFSETS[purpose]


# Random splits of a data split's users, likewise offset from --seed.
#   factor_users  the training users that fit the latent factors
#                 (RatingsData.factor_fraction)
_SPLIT_SEED_OFFSETS = {"factor_users": 5_000_011}


def split_seed(seed, purpose):
    """Seed of the user split for `purpose` (see `_SPLIT_SEED_OFFSETS`)."""
    if purpose not in _SPLIT_SEED_OFFSETS:
        raise ValueError(f"split purpose must be one of {tuple(_SPLIT_SEED_OFFSETS)}, "
                         f"got {purpose!r}")
    return int(seed) + _SPLIT_SEED_OFFSETS[purpose]


def _positive(config, names):
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The training loop (trainers.common.run_training)."""

    model_dir: str
    train_steps: int = 2000
    batch_size: int = 32           # episodes per update (global, all replicas)
    log_interval: int = 20
    eval_interval: int = 200
    checkpoint_interval: int = 100
    eval_episodes: int = 256       # validation episodes per evaluation
    final_eval_episodes: int = 1000
    keep_checkpoints: int = 3
    init_from: Optional[str] = None
    # Then the image encoder alone from this model directory (e.g. one written
    # by trainers.pretrain_encoder); the other weights stay init_from's.
    init_encoder_from: Optional[str] = None

    def __post_init__(self):
        if not self.model_dir:
            raise ValueError("model_dir is required (where checkpoints go)")
        _positive(self, ("train_steps", "batch_size", "log_interval", "eval_interval",
                         "checkpoint_interval", "eval_episodes", "final_eval_episodes"))
        if not isinstance(self.keep_checkpoints, int) or self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1 (the newest checkpoint is what a "
                             f"rerun resumes from), got {self.keep_checkpoints!r}")


@dataclasses.dataclass(frozen=True)
class ClassEpisodeConfig:
    """N-way episodes (paper 4.1): `ways` for training (several: a random N
    per step), `eval_ways` for validation, a pool of `items_per_class` items
    per class and a label budget (N * shots unless set)."""

    ways: Tuple[int, ...]
    eval_ways: int
    shots: int
    items_per_class: int
    budget: int
    episode_classes: str = "random"   # one of EPISODE_CLASSES

    def __post_init__(self):
        object.__setattr__(self, "ways", tuple(int(w) for w in self.ways))
        if not self.ways:
            raise ValueError("ways must name at least one N")
        if self.episode_classes not in EPISODE_CLASSES:
            raise ValueError(f"episode_classes must be one of {EPISODE_CLASSES}, got "
                             f"{self.episode_classes!r}")
        _positive(self, ("eval_ways", "shots", "items_per_class", "budget"))
        if any(w < 2 for w in self.ways + (self.eval_ways,)):
            raise ValueError(f"ways and eval_ways must be >= 2, got {list(self.ways)} and "
                             f"{self.eval_ways}")
        if self.budget > self.eval_ways * self.items_per_class:
            raise ValueError(f"budget {self.budget} exceeds the pool of {self.eval_ways} x "
                             f"{self.items_per_class} items")

    @property
    def mixed(self):
        return len(self.ways) > 1


@dataclasses.dataclass(frozen=True)
class RatingsEpisodeConfig:
    """Cold-start users (paper 4.2): `budget` ratings asked from a pool of
    `support_size`, the prediction judged on `query_size` held-out ones."""

    support_size: int
    query_size: int
    budget: int

    def __post_init__(self):
        _positive(self, ("support_size", "query_size", "budget"))
        if self.support_size < 2:
            raise ValueError(f"support_size must be >= 2, got {self.support_size}")
        if self.budget > self.support_size:
            raise ValueError(f"budget {self.budget} exceeds the pool of support_size="
                             f"{self.support_size} items")


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """How classification data are read and split (readers.load_class_data,
    splits.split_classes). `source` is the data spec (omniglot:PATH,
    folder:PATH, npz:PATH, csv:PATH, tfds:NAME)."""

    source: str
    image_size: Optional[int] = None
    image_channels: Optional[int] = None
    invert: bool = False
    label_col: str = "label"
    group_col: Optional[str] = None
    rotate: bool = False           # the four rotations of a training class are classes
    jitter: float = 0.0            # per-image affine distortion of training drawings
    split: str = "auto"
    test_alphabets: Optional[Tuple[str, ...]] = None
    validation_alphabets: Optional[Tuple[str, ...]] = None

    def __post_init__(self):
        if not self.source or ":" not in self.source:
            raise ValueError(f"source must be a data spec KIND:PATH, got {self.source!r}")
        if self.image_channels not in (None, 1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels!r}")
        if not 0.0 <= self.jitter <= 2.0:
            raise ValueError(f"jitter must lie in [0, 2] (1 is Koch et al.'s ranges), got "
                             f"{self.jitter!r}")
        if self.split not in ("auto", "vinyals", "lake", "alphabets"):
            raise ValueError(f"split must be auto, vinyals, lake or alphabets, got "
                             f"{self.split!r}")
        for name in ("test_alphabets", "validation_alphabets"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def omniglot(self):
        return self.source.startswith("omniglot:")

    def reader_kwargs(self):
        """`readers.load_class_data` options (besides the spec and cache)."""
        return dict(image_size=self.image_size, image_channels=self.image_channels,
                    invert=self.invert, label_col=self.label_col, group_col=self.group_col)


@dataclasses.dataclass(frozen=True)
class RatingsData:
    """How a ratings table is read, filtered and split, and the latent-factor
    item embeddings fitted on it (paper 4.2.1-4.2.2)."""

    source: str                    # csv:/tsv:/parquet:PATH, a GroupLens folder, tfds:NAME
    kind: str                      # ratings_reader.parse_source(source)[0]
    rating_min: Optional[float] = None   # None: the data's lowest
    rating_max: Optional[float] = None
    user_col: str = "userId"
    item_col: str = "movieId"
    rating_col: str = "rating"
    timestamp_col: Optional[str] = None
    sep: Optional[str] = None
    encoding: str = "utf-8"
    tfds_data_dir: Optional[str] = None
    num_movies: int = PAPER_RATINGS["num_movies"]
    num_users: int = PAPER_RATINGS["num_users"]
    validation_fraction: float = VALIDATION_FRACTION
    test_fraction: float = TEST_FRACTION
    latent_dim: int = 64
    latent_steps: int = 1000
    # The share of the training users whose ratings fit the latent factors;
    # below 1 the active learner trains on the other training users only, so
    # that its training episodes, like the test ones, come from users the
    # factors never saw (not in the paper, which fits and trains on all).
    factor_fraction: float = 1.0
    # Seed of the train/validation/test user split; None: the run's seed.
    # Fixed apart from --seed, runs that differ only in their training
    # randomness are measured on the same test users (a seed spread).
    split_seed: Optional[int] = None

    def __post_init__(self):
        if not self.source:
            raise ValueError("source is required (the ratings table)")
        if self.split_seed is not None and (
                not isinstance(self.split_seed, int) or isinstance(self.split_seed, bool)
                or self.split_seed < 0):
            raise ValueError(f"split_seed must be an integer >= 0 or null (the run's seed), "
                             f"got {self.split_seed!r}")
        _positive(self, ("num_movies", "num_users", "latent_dim", "latent_steps"))
        if not 0 < self.factor_fraction <= 1:
            raise ValueError(f"factor_fraction must lie in (0, 1], got {self.factor_fraction}")
        for name in ("validation_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")

    def reader_kwargs(self):
        """`ratings_reader.load_ratings` options (besides the source): the
        columns for a table, the TFDS folder for tfds:."""
        from active_learning.data import ratings_reader  # pylint: disable=g-import-not-at-top
        kwargs = {"rating_min": self.rating_min, "rating_max": self.rating_max}
        if self.kind in ratings_reader.TABLE_KINDS:
            kwargs.update(user_col=self.user_col, item_col=self.item_col,
                          rating_col=self.rating_col, timestamp_col=self.timestamp_col,
                          sep=self.sep, encoding=self.encoding)
        if self.kind == "tfds":
            kwargs.update(tfds_data_dir=self.tfds_data_dir)
        return kwargs

    def prep_kwargs(self, episodes, seed):
        """`ratings_prep.prepare` options: filters and the seeded user split."""
        return {"num_movies": self.num_movies, "num_users": self.num_users,
                "support_size": episodes.support_size, "query_size": episodes.query_size,
                "validation_fraction": self.validation_fraction,
                "test_fraction": self.test_fraction, "seed": self.user_split_seed(seed)}

    def user_split_seed(self, seed):
        """The seed of the user split: `split_seed`, or the run's `seed`."""
        return seed if self.split_seed is None else self.split_seed


_SECTIONS = {"loop": (LoopConfig,), "train_config": (TrainConfig,),
             "episodes": (ClassEpisodeConfig, RatingsEpisodeConfig),
             "data": (ClassificationData, RatingsData)}


def _build(cls, values, where):
    """`cls(**values)`, refusing missing and unknown fields by name (a field
    added after the record was written reads as older runs had it)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be an object, got {values!r}")
    values = {**FIELDS_ADDED_LATER.get(cls.__name__, {}), **values}
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    missing = [n for n in names if n not in values]
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {names}")
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}.{e}") from None


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run (see the module docstring)."""

    task: str
    dataset: str
    loop: LoopConfig
    train_config: TrainConfig
    episodes: Union[ClassEpisodeConfig, RatingsEpisodeConfig]
    data: Union[ClassificationData, RatingsData, None] = None
    recorded: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.task not in CLASSIFICATION_TASKS + RATINGS_TASKS:
            raise ValueError(f"task must be one of {CLASSIFICATION_TASKS + RATINGS_TASKS}, "
                             f"got {self.task!r}")
        ratings = self.task in RATINGS_TASKS
        episodes = RatingsEpisodeConfig if ratings else ClassEpisodeConfig
        data = RatingsData if ratings else ClassificationData
        if not isinstance(self.episodes, episodes):
            raise ValueError(f"episodes of a {self.task} run must be a {episodes.__name__}, "
                             f"got {type(self.episodes).__name__}")
        if self.data is not None and not isinstance(self.data, data):
            raise ValueError(f"data of a {self.task} run must be {data.__name__}, got "
                             f"{type(self.data).__name__}")
        if self.train_config.num_steps != self.episodes.budget:
            raise ValueError(f"train_config.num_steps={self.train_config.num_steps} must "
                             f"equal the label budget episodes.budget={self.episodes.budget}")
        if self.episodes.budget % self.train_config.query_batch:
            raise ValueError(f"train_config.query_batch={self.train_config.query_batch} must "
                             f"divide the label budget episodes.budget="
                             f"{self.episodes.budget} (labels arrive in whole rounds)")

    @property
    def seed(self):
        """The run's --seed: episodes, user and class splits, rollouts, init."""
        return self.train_config.seed

    @property
    def data_dir(self):
        """The data folder or table evaluation reads (None: the spec is
        the classification data's `source`, read with its options)."""
        if self.data is None:
            return None
        if isinstance(self.data, RatingsData):
            return self.data.source
        if self.data.omniglot:
            return self.data.source.partition(":")[2]
        return None

    def identity(self):
        """What a resumed run must share with the one that wrote its directory:
        task, dataset and episode shape (other settings may change)."""
        return json.loads(json.dumps(dict(task=self.task, dataset=self.dataset,
                                          **dataclasses.asdict(self.episodes))))

    def to_dict(self):
        values = {"format": FORMAT}
        values.update(dataclasses.asdict(self))
        return json.loads(json.dumps(values))  # tuples as lists, as read back

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        """The inverse of `to_dict`; a missing or unknown field is an error naming it."""
        values = dict(values)
        if values.pop("format", None) != FORMAT:
            raise ValueError(f"run config format must be {FORMAT} (older records: "
                             "load_run_config)")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        missing = [n for n in names if n not in values]
        if unknown or missing:
            raise ValueError(f"run config: unknown field(s) {unknown}, missing field(s) "
                             f"{missing}")
        task = values["task"]
        if task not in CLASSIFICATION_TASKS + RATINGS_TASKS:
            raise ValueError(f"run config task must be one of "
                             f"{CLASSIFICATION_TASKS + RATINGS_TASKS}, got {task!r}")
        which = 1 if task in RATINGS_TASKS else 0
        values["loop"] = _build(LoopConfig, values["loop"], "loop")
        values["train_config"] = _build(TrainConfig, values["train_config"], "train_config")
        values["episodes"] = _build(_SECTIONS["episodes"][which], values["episodes"],
                                    "episodes")
        if values["data"] is not None:
            values["data"] = _build(_SECTIONS["data"][which], values["data"], "data")
        if not isinstance(values["recorded"], dict):
            raise ValueError(f"recorded must be an object, got {values['recorded']!r}")
        try:
            return cls(**values)
        except ValueError as e:
            raise ValueError(f"run config: {e}") from None

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


def from_record(record, source="run_config.json", model_config=None):
    """A `RunConfig` from a run_config.json record of any format.

    A current record must be complete (`RunConfig.from_dict`); an older one
    is converted by `run_config_legacy.convert`, which logs what it filled in. None for
    an empty record (a SavedModel exported without one).
    """
    if not record:
        return None
    if "format" in record:
        return RunConfig.from_dict(record)
    from active_learning import run_config_legacy  # pylint: disable=g-import-not-at-top
    return run_config_legacy.convert(record, source, model_config=model_config)


def load_run_config(model_dir, model_config=None):
    """The `RunConfig` of a trained model directory, or None if it records none."""
    path = os.path.join(model_dir, checkpoints.RUN_CONFIG)
    if not tf.io.gfile.exists(path):
        return None
    if model_config is None and tf.io.gfile.exists(os.path.join(model_dir,
                                                                checkpoints.MODEL_CONFIG)):
        from active_learning.config import ModelConfig  # pylint: disable=g-import-not-at-top
        model_config = ModelConfig.from_dict(
            checkpoints.read_json(os.path.join(model_dir, checkpoints.MODEL_CONFIG)))
    return from_record(checkpoints.read_json(path), path, model_config=model_config)


def write_run_config(model_dir, run_config):
    """Writes `run_config.json` (atomically)."""
    checkpoints.write_json_atomic(os.path.join(model_dir, checkpoints.RUN_CONFIG),
                                  run_config.to_dict())


def log_filled(source, filled):
    if filled:
        logging.info("%s predates the typed run config (format %d); filled in: %s", source,
                     FORMAT, "; ".join(filled))
