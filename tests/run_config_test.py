"""The typed run configuration: round trip, field errors, older records, episode seeds."""

import dataclasses
import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import logging  # noqa: E402
import pytest  # noqa: E402

from active_learning import run_config as rc  # noqa: E402
from active_learning.training import TrainConfig  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = sorted(glob.glob(os.path.join(REPO, "models", "*", "run_config.json")))


def _is_typed(path):
    with open(path) as f:
        return "format" in json.load(f)


# Models trained before the typed run config (their files stay as written)
# and after it.
LEGACY_MODELS = [p for p in MODELS if not _is_typed(p)]
TYPED_MODELS = [p for p in MODELS if _is_typed(p)]


def _ratings_run(**loop):
    episodes = rc.RatingsEpisodeConfig(support_size=50, query_size=10, budget=10)
    data = rc.RatingsData(source="csv:ratings.csv", kind="csv", user_col="customer",
                          rating_min=1.0, num_movies=300, latent_dim=8)
    return rc.RunConfig(task="ratings", dataset="ratings",
                        loop=rc.LoopConfig(model_dir="runs/r", **loop),
                        train_config=TrainConfig(num_steps=10, query_batch=2, seed=7),
                        episodes=episodes, data=data, recorded={"data": {"kept_users": 9}})


def _class_run():
    episodes = rc.ClassEpisodeConfig(ways=[5, 10], eval_ways=10, shots=1, items_per_class=5,
                                     budget=10)
    data = rc.ClassificationData(source="omniglot:data/omniglot", rotate=True,
                                 test_alphabets=["Greek"])
    return rc.RunConfig(task="omniglot", dataset="omniglot",
                        loop=rc.LoopConfig(model_dir="runs/o", init_from="models/x"),
                        train_config=TrainConfig(num_steps=10), episodes=episodes, data=data)


@pytest.mark.parametrize("make", [_ratings_run, _class_run])
def test_to_json_from_dict_round_trip(make):
    run = make()
    again = rc.RunConfig.from_json(run.to_json())
    assert again == run
    assert isinstance(again.episodes, type(run.episodes))
    assert json.loads(again.to_json()) == json.loads(run.to_json())


def test_ratings_record_holds_every_preprocessing_value():
    record = _ratings_run().to_dict()
    assert record["data"]["num_movies"] == 300 and record["data"]["latent_dim"] == 8
    assert record["data"]["num_users"] == rc.PAPER_RATINGS["num_users"]
    assert record["episodes"] == {"support_size": 50, "query_size": 10, "budget": 10}
    assert record["train_config"]["rating_oracle"] == "closed_form"  # a new run's default
    assert _ratings_run().data.prep_kwargs(_ratings_run().episodes, 7)["seed"] == 7


def test_a_fixed_split_seed_keeps_the_users_whatever_the_run_seed():
    run = _ratings_run()
    fixed = dataclasses.replace(run.data, split_seed=0)
    assert fixed.prep_kwargs(run.episodes, 7)["seed"] == 0
    assert fixed.prep_kwargs(run.episodes, 2)["seed"] == 0


@pytest.mark.parametrize("section, field, value, message", [
    ("loop", "batch_size", 0, "loop.batch_size must be an integer >= 1, got 0"),
    ("loop", "keep_checkpoints", 0, "loop.keep_checkpoints must be >= 1"),
    ("episodes", "support_size", 1, "episodes.support_size must be >= 2"),
    ("data", "test_fraction", 1.5, "data.test_fraction must lie in \\(0, 1\\)"),
    ("train_config", "learning_rate", -1.0, "train_config.learning_rate must be > 0"),
])
def test_a_bad_value_is_named_by_its_field(section, field, value, message):
    record = _ratings_run().to_dict()
    record[section][field] = value
    with pytest.raises(ValueError, match=message):
        rc.RunConfig.from_dict(record)


def test_missing_and_unknown_fields_are_named_not_defaulted():
    record = _ratings_run().to_dict()
    del record["data"]["num_users"]
    with pytest.raises(ValueError, match="data: missing field\\(s\\) \\['num_users'\\]"):
        rc.RunConfig.from_dict(record)
    record = _ratings_run().to_dict()
    record["loop"]["eval_every"] = 3
    with pytest.raises(ValueError, match="loop: unknown field\\(s\\) \\['eval_every'\\]"):
        rc.RunConfig.from_dict(record)
    record = _ratings_run().to_dict()
    del record["format"]
    with pytest.raises(ValueError, match="format must be 2"):
        rc.RunConfig.from_dict(record)


# Fields added after format 2: (run, section, field, the value older runs
# had, a value that is refused, the message).
ADDED_LATER = [
    # rating_oracle: older runs imitated the exact oracle (new default: closed form).
    (_ratings_run, "train_config", "rating_oracle", "exact", "fast", "must be one of"),
    # episode_classes: older classification runs drew from the whole split.
    (_class_run, "episodes", "episode_classes", "random", "one_alphabet", "must be one of"),
    # factor_fraction: older runs fitted the factors on every training user.
    (_ratings_run, "data", "factor_fraction", 1.0, 1.5, "must lie in \\(0, 1\\]"),
    (_ratings_run, "data", "factor_fraction", 1.0, 0.0, "must lie in \\(0, 1\\]"),
    # split_seed: older runs split their users with the run's seed.
    (_ratings_run, "data", "split_seed", None, -1, "must be an integer >= 0"),
    (_ratings_run, "data", "split_seed", None, 1.5, "must be an integer >= 0"),
]


@pytest.mark.parametrize("make, section, field, older, bad, message", ADDED_LATER)
def test_a_field_added_later_reads_as_the_older_runs_had_it(make, section, field, older, bad,
                                                              message):
    record = make().to_dict()
    del record[section][field]
    assert getattr(getattr(rc.RunConfig.from_dict(record), section), field) == older
    record[section][field] = bad
    with pytest.raises(ValueError, match=f"{section}.{field} {message}"):
        rc.RunConfig.from_dict(record)


def test_budget_and_train_steps_must_agree():
    run = _ratings_run().to_dict()
    run["train_config"]["num_steps"] = 8
    with pytest.raises(ValueError, match="train_config.num_steps=8 must equal the label "
                       "budget episodes.budget=10"):
        rc.RunConfig.from_dict(run)


def test_episode_seeds_keep_their_offsets():
    # The streams the committed results were made with.
    assert rc.episode_seed(5, "train") == 5
    assert rc.episode_seed(5, "selection") == 5 + 1_000_003
    assert rc.episode_seed(5, "test") == 5 + 2_000_029
    assert rc.episode_seed(5, "validation") == 5 + 3_000_017
    with pytest.raises(ValueError, match="purpose must be one of"):
        rc.episode_seed(0, "val")


def _load_logging(path, monkeypatch):
    """(the JSON record, its loaded RunConfig, the lines logged while loading)."""
    lines = []
    monkeypatch.setattr(logging, "info", lambda fmt, *args: lines.append(fmt % args))
    with open(path) as f:
        record = json.load(f)
    return record, rc.load_run_config(os.path.dirname(path)), lines


@pytest.mark.parametrize("path", TYPED_MODELS,
                         ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_committed_typed_records_load_as_written(path, monkeypatch):
    record, run, lines = _load_logging(path, monkeypatch)
    assert not any("predates the typed run config" in line for line in lines)
    assert json.loads(run.to_json()) == record


@pytest.mark.parametrize("path", LEGACY_MODELS,
                         ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_committed_model_directories_load_and_say_what_was_filled(path, monkeypatch):
    record, run, lines = _load_logging(path, monkeypatch)
    assert "format" not in record  # the files stay as they are
    assert any("predates the typed run config" in line for line in lines)
    assert rc.RunConfig.from_json(run.to_json()) == run
    assert run.task == record["task"] and run.seed == record["flags"]["seed"]
    assert run.episodes.budget == record["budget"]
    assert run.train_config.policy == record["train_config"]["policy"]
    assert run.loop.batch_size == record["flags"]["batch_size"]
    assert run.data_dir == record["data_dir"]
    if run.task == "movielens":
        # Not recorded by the older trainer: its defaults, the paper's sizes.
        assert (run.data.num_movies, run.data.num_users) == (4000, 6000)
        assert run.data.latent_dim == 64  # the model's item table width
        assert any("num_movies=4000" in line for line in lines)
        assert run.recorded["data"] == record["data"]
    else:
        assert list(run.episodes.ways) == record["ways"]
        assert run.data.rotate == record["rotate"]
        assert run.recorded["split"] == record["split"]


def test_an_older_record_with_its_flags_fills_from_them():
    record = {"task": "movielens", "dataset": "movielens", "data_dir": "ml", "budget": 10,
              "support_size": 40, "query_size": 10,
              "flags": {"seed": 3, "batch_size": 8, "model_dir": "runs/m"},
              "train_config": {"num_steps": 10, "seed": 3, "policy": "learned"}}
    run = rc.from_record(record, "old/run_config.json")
    assert run.loop.batch_size == 8 and run.loop.model_dir == "runs/m"
    assert run.episodes.support_size == 40
    assert run.data.prep_kwargs(run.episodes, run.seed) == dict(
        num_movies=4000, num_users=6000, support_size=40, query_size=10,
        validation_fraction=1 / 12, test_fraction=1 / 6, seed=3)
    assert rc.from_record({}) is None


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
