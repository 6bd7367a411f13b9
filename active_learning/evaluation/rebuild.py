"""A trained run's own data and episodes, rebuilt from what its model recorded.

Episodes come from the split the model was trained with (its
`run_config.json`), so test classes / users are never ones it trained on:
`class_episodes` re-reads the classification data and rebuilds the class
split, `movielens_episodes` re-prepares the ratings run's users.
`resolve_data_dir` finds the data the run recorded. Every episode stream is
seeded from the evaluation seed and the split alone (`episode_seed`), so
every policy sees the same episodes.
"""

import dataclasses
import os

import numpy as np

from active_learning import run_config as run_configs
from active_learning.data import class_data
from active_learning.data import latent_factors
from active_learning.data import omniglot
from active_learning.data import paths as data_paths
from active_learning.data import ratings_episodes
from active_learning.data import ratings_prep
from active_learning.data import ratings_reader
from active_learning.data import readers
from active_learning.data import splits
from active_learning.data.episodes import ClassEpisodeSampler

# Seed of the episode sampler for a split (the same for every policy).
episode_seed = run_configs.episode_seed


def resolve_data_dir(data_dir, run_config, model_path):
    """`data_dir`, else the run's recorded one (relative paths tried from here, from
    the model directory's parent, and the repository's shipped copy of Omniglot).

    Runs on a user's own data (`run_config.data.source`, trainers.classification)
    record the data spec itself: for them this returns `data_dir` (None keeps
    the recorded spec; a path replaces the spec's path).
    """
    if data_dir:
        return data_dir
    if run_config is not None and run_config.dataset == "classification":
        return None
    recorded = run_config.data_dir if run_config is not None else None
    if not recorded:
        raise ValueError(f"{model_path} records no data_dir; pass --data_dir")
    # A ratings table is recorded as kind:PATH (csv:, tsv:, parquet:); the
    # path part is resolved like a folder.
    kind, sep, rest = recorded.partition(":")
    prefix, path = (kind + sep, rest) if sep and kind in ("csv", "tsv", "parquet") \
        else ("", recorded)
    if recorded.startswith("tfds") or os.path.isabs(path):
        return recorded
    for base in (os.getcwd(), os.path.dirname(os.path.abspath(model_path))):
        candidate = os.path.normpath(os.path.join(base, path))
        if os.path.exists(candidate):
            return prefix + candidate
    shipped = data_paths.resolve_data_dir(path)
    if os.path.exists(shipped):
        return prefix + shipped
    raise FileNotFoundError(
        f"the data_dir {recorded!r} recorded by {model_path} was not found relative to "
        f"{os.getcwd()} or the model directory; pass --data_dir")


@dataclasses.dataclass
class ClassEpisodes:
    """The run's classification data (`class_data.ClassData`) and its class split."""

    data: object
    classes: object
    items_per_class: int = 5
    # All N classes of an episode from one group (an alphabet): Lake et al.'s
    # within-alphabet one-shot protocol.
    within_group: bool = False

    def num_classes(self, split):
        return len(getattr(self.classes, split))

    def make_sampler(self, split, ways, seed):
        """A function returning a freshly seeded sampler (same episodes each time)."""
        indices = getattr(self.classes, split)

        def make():
            return ClassEpisodeSampler(
                self.data.items, self.data.class_starts, self.data.class_counts, indices,
                ways=ways, items_per_class=self.items_per_class,
                seed=episode_seed(seed, split), class_names=self.data.class_names,
                class_groups=self.data.groups, within_group=self.within_group)
        return make


def class_episodes(run_config, data_dir=None, cache_dir=None):
    """Loads the run's data and rebuilds the class split recorded in `run_config`.

    Omniglot runs read the release in `data_dir`; runs on other data re-read
    the recorded `data` spec with the recorded options (`data_dir`, when
    given, replaces the spec's path). Raises if the data gives other split
    sizes than the run recorded (other data than it was trained on).
    """
    if run_config.dataset == "classification":
        spec = run_config.data.source
        if data_dir:
            spec = f"{readers.parse_spec(spec)[0]}:{data_dir}"
        data = readers.load_class_data(spec, cache_dir=cache_dir,
                                       **run_config.data.reader_kwargs())
        data_dir = spec
    else:
        data = class_data.from_omniglot(omniglot.load_omniglot(data_dir, cache_dir=cache_dir))
    recorded = run_config.recorded.get("split") or {}
    name = recorded.get("split", run_config.data.split if run_config.data else "auto")
    kwargs = {}
    if name == "alphabets":
        kwargs = dict(test_alphabets=recorded.get("test_alphabets"),
                      validation_alphabets=recorded.get("validation_alphabets"))
    elif name == "lake":
        kwargs = dict(validation_alphabets=recorded.get("validation_alphabets"))
    elif name == "vinyals" and "validation_characters" in recorded:
        kwargs = dict(validation_characters=recorded["validation_characters"])
    classes = splits.split_classes(data, split=name, seed=run_config.seed, **kwargs)
    described = classes.describe()
    for key in ("train_characters", "validation_characters", "test_characters"):
        if key in recorded and recorded[key] != described[key]:
            raise ValueError(
                f"the class split rebuilt from {data_dir} ({described}) differs from the one "
                f"the model was trained with ({recorded}): pass the run's --data_dir")
    return ClassEpisodes(data, classes, run_config.episodes.items_per_class)


@dataclasses.dataclass
class MovieLensEpisodes:
    """Prepared ratings, latent factors (may be None) and Popular-Entropy scores."""

    data: object
    factors: object
    item_scores: np.ndarray

    def make_sampler(self, split, seed):
        users = self.data.split(split)

        def make():
            return ratings_episodes.EpisodeSampler(users, self.data.support_size,
                                                   self.data.query_size,
                                                   seed=episode_seed(seed, split))
        return make


def movielens_episodes(run_config, data_dir, vocabulary=None, latent_factors_path=None):
    """Re-prepares the run's users (same source, columns, filters, user split).

    Works for every ratings run: `run_config.data` (a `RatingsData`) gives
    the columns, scale and filters (`run_config.load_run_config` fills them
    for runs that predate it). The item vocabulary must equal the model's
    (`vocabulary.npz`): that is the check that the data and the filtering
    are the ones it was trained on.
    """
    options = run_config.data
    kind = options.kind
    if kind in ratings_reader.TABLE_KINDS and ratings_reader.parse_source(data_dir)[0] != kind:
        data_dir = f"{kind}:{data_dir}"  # --data_dir=PATH for a run trained on kind:PATH
    ratings = ratings_reader.load_ratings(data_dir, **options.reader_kwargs())
    data = ratings_prep.prepare(ratings, **options.prep_kwargs(run_config.episodes,
                                                                run_config.seed))
    if vocabulary is not None and not np.array_equal(np.asarray(vocabulary), data.movie_ids):
        raise ValueError(
            f"the items kept from {data_dir} ({data.num_movies}) are not the model's "
            f"vocabulary ({len(vocabulary)} items): other data or filtering than the run "
            "was trained with")
    factors = None
    if latent_factors_path and os.path.exists(latent_factors_path):
        factors = latent_factors.load_latent_factors(latent_factors_path,
                                                     movie_ids=data.movie_ids)
    return MovieLensEpisodes(data, factors, ratings_prep.popularity_entropy(data))
