"""The trained reference models committed under models/ load and do their job.

docs/results.md quotes tables measured on these models; a clean checkout
reproduces them with `trainers.evaluate`. Here: every model loads from its
directory, and with ../shared/data present it beats random selection on a
few held-out episodes (a property, not the committed numbers, which take
1,000 episodes to measure).
"""

import dataclasses
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from active_learning import checkpoints
from active_learning import evaluation
from active_learning import run_config as run_configs

MODELS = pathlib.Path(__file__).resolve().parents[1] / "models"
MODEL_DIRS = sorted(p for p in MODELS.iterdir() if (p / "model_config.json").exists()
                    and not (p / "pretrain.json").exists()) if MODELS.is_dir() else []


def test_there_are_reference_models():
    names = {p.name for p in MODEL_DIRS}
    assert {"omniglot_lake_5way_1shot", "omniglot_lake_20way", "omniglot_full_5way_1shot",
            "omniglot_full_10way_1shot", "omniglot_full_15way", "omniglot_full_20way",
            "omniglot_full_mixed", "movielens"} <= names, names


# (heuristic model, the policy it was trained with, the active model it stands beside)
HEURISTIC_MODELS = [(f"movielens_{p}", p, "movielens")
                    for p in ("min_max_cos", "popular_entropy", "entropy")] + [
    ("omniglot_full_20way_random", "random", "omniglot_full_20way")] + [
    (f"movielens_prior_{p}", p, "movielens_prior")
    for p in ("random", "popular_entropy", "min_max_cos")]


@pytest.mark.parametrize("name,policy,active", HEURISTIC_MODELS, ids=lambda v: str(v))
def test_heuristic_model_is_the_active_architecture_trained_with_that_policy(
        name, policy, active):
    # Figures 3 and 4 compare a heuristic driving a model trained with it, so
    # such a model differs from the active one only in the training policy,
    # and its best checkpoint was chosen by how that policy did.
    model_dir = MODELS / name
    # Either record format: the typed RunConfig or the older flags record.
    assert run_configs.load_run_config(str(model_dir)).train_config.policy == policy
    with open(model_dir / "best.json") as f:
        assert json.load(f)["policy"] == policy
    assert checkpoints.load_model_config(str(model_dir)) == \
        checkpoints.load_model_config(str(MODELS / active))
    if (MODELS / active / "vocabulary.npz").exists():
        assert (model_dir / "vocabulary.npz").read_bytes() == \
            (MODELS / active / "vocabulary.npz").read_bytes()


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_loads_its_best_checkpoint(model_dir):
    loaded = evaluation.load_evaluation_model(str(model_dir))
    assert loaded.source.endswith(f"ckpt-{_best_step(model_dir)}")
    assert loaded.run_config, "run_config.json is missing"
    # Every weight came from the checkpoint: none is still at its initial value 0.
    assert all(np.any(v.numpy() != 0) for v in loaded.model.trainable_variables
               if "bias" not in v.path and "item_bias" not in v.path)


def _best_step(model_dir):
    with open(model_dir / "best.json") as f:
        return json.load(f)["step"]


def _held_out_curves(loaded, make_sampler, num_steps, episodes=100):
    curves = {}
    for name in ("greedy", "random"):
        policy = evaluation.make_eval_policy(name, loaded.model.config.task)
        sampler = make_sampler()  # held: its tf.function method refers to it weakly
        curves[name] = evaluation.evaluate_policy(
            loaded.model, sampler.sample, policy, num_steps, episodes, 50, seed=0)
    return curves


@pytest.mark.parametrize("name", ["omniglot_lake_5way_1shot", "omniglot_full_5way_1shot",
                                  "omniglot_full_5way_1shot_pre"])
def test_omniglot_model_beats_random_labels(shipped_data, name):
    data_dir = shipped_data / "omniglot-full"
    loaded = evaluation.load_evaluation_model(str(MODELS / name))
    episodes = evaluation.class_episodes(loaded.run_config, str(data_dir))
    curves = _held_out_curves(loaded, episodes.make_sampler("test", 5, seed=0), 5)
    greedy, random = curves["greedy"], curves["random"]
    # Committed tables (1,000 episodes): about 97% and 4.97 classes against 69% and 3.55.
    assert greedy["metric"][-1] > random["metric"][-1] + 0.15
    assert greedy["distinct_labels"][-1] > 4.6 > random["distinct_labels"][-1]


def test_pretrained_encoder_beats_its_start_on_validation(shipped_data):
    # models/encoder_vinyals: models/omniglot_full_5way_1shot's encoder after
    # 4,000 steps of prototypical pretraining (trainers.pretrain_encoder). Its
    # pretrain.json records 20-way one-shot validation accuracy 82.6% at the
    # start and 87.5% at its best step, 1,000 episodes each.
    from active_learning import pretraining  # pylint: disable=g-import-not-at-top
    record = json.loads((MODELS / "encoder_vinyals" / "pretrain.json").read_text())
    pretrained, path = checkpoints.load_model(str(MODELS / "encoder_vinyals"))
    assert path.endswith(f"ckpt-{record['best']['step']}")
    start = evaluation.load_evaluation_model(str(MODELS / record["init_from"].split("/")[-1]))
    episodes = dataclasses.replace(
        evaluation.class_episodes(start.run_config, str(shipped_data / "omniglot-full")),
        items_per_class=1)
    accuracy = {}
    for name, model in (("start", start.model), ("pretrained", pretrained)):
        sampler = episodes.make_sampler("validation", 20, seed=0)()
        accuracy[name] = pretraining.one_shot_accuracy(model.encoder, sampler, 200, 50)
    assert accuracy["pretrained"] > accuracy["start"] + 0.03, accuracy


# (model, within-alphabet episodes, at least this many classes asked about per
# episode, at least this accuracy): the lake 20-way model's committed table has
# 94.4% at 30 labels; the within-alphabet model's 81.1% at 20 labels, 18.7
# classes asked about on average.
SERVED_LAKE_MODELS = [("omniglot_lake_20way", False, 18, 0.7),
                      ("omniglot_lake_20way_within", True, 15, 0.55)]


@pytest.mark.heavy(50)
@pytest.mark.parametrize("name,within,min_classes,min_accuracy", SERVED_LAKE_MODELS,
                         ids=lambda v: str(v))
def test_lake_20way_model_runs_through_its_exported_signatures(
        shipped_data, tmp_path, name, within, min_classes, min_accuracy):
    # The serving contract end to end on real data: export the committed model,
    # drive 20-way held-out-alphabet episodes through the SavedModel's
    # begin/select/observe/predict, and get what the in-memory model gets.
    import dataclasses  # pylint: disable=g-import-not-at-top
    from active_learning.session import ActiveSession  # pylint: disable=g-import-not-at-top
    from export import saved_model as export_lib  # pylint: disable=g-import-not-at-top
    data_dir = shipped_data / "omniglot-full"
    model_dir = MODELS / name
    loaded = evaluation.load_evaluation_model(str(model_dir))
    assert loaded.run_config.recorded["split"]["split"] == "lake"
    budget = loaded.run_config.episodes.budget
    export_path = export_lib.export_model_dir(str(model_dir), str(tmp_path))
    episodes = dataclasses.replace(
        evaluation.class_episodes(loaded.run_config, str(data_dir)), within_group=within)
    sampler = episodes.make_sampler("test", 20, seed=0)()
    batch = {k: v.numpy() for k, v in sampler.sample(2).items()}
    correct = []
    for b in range(2):
        pool, truth = batch["support"][b], batch["support_labels"][b]
        runs = []
        for source in (export_path, loaded.model):
            session = ActiveSession(source, pool, seed=0)
            asked = []
            for _ in range(budget):                   # the model's label budget
                (index,) = session.query()
                asked.append(int(index))
                session.teach(index, int(truth[index]))
            runs.append((asked, session.predict(batch["queries"][b])))
        (asked, probabilities), (asked_in_memory, probabilities_in_memory) = runs
        assert asked == asked_in_memory
        np.testing.assert_allclose(probabilities, probabilities_in_memory, atol=1e-4)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        assert len(set(truth[asked])) >= min_classes  # most classes asked about
        correct.append(probabilities.argmax(-1) == batch["query_labels"][b])
    # 20 classes, so chance is 5%.
    assert np.mean(correct) > min_accuracy


def test_movielens_model_beats_random_selection(shared_data):
    model_dir = MODELS / "movielens"
    if not model_dir.is_dir():
        pytest.skip("no MovieLens reference model committed")
    data_dir = shared_data / "movielens" / "ml-latest-small"
    if not data_dir.is_dir():
        pytest.skip("ml-latest-small is not in ../shared/data")
    loaded = evaluation.load_evaluation_model(str(model_dir))
    episodes = evaluation.movielens_episodes(loaded.run_config, str(data_dir),
                                             vocabulary=loaded.vocabulary)
    curves = _held_out_curves(loaded, episodes.make_sampler("test", seed=0), 10, episodes=200)
    greedy, random = curves["greedy"]["metric"], curves["random"]["metric"]
    assert greedy[-1] < greedy[0]          # more ratings, lower RMSE
    assert np.mean(greedy[1:]) < np.mean(random[1:])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
