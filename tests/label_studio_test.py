"""The Label Studio bridge against a real Label Studio server.

A server from `.venv-label-studio/` (scripts/install_label_studio.sh) runs on
a localhost port with a temporary SQLite data directory; the tests skip,
naming the install command, where it is not installed. Annotations are
submitted through Label Studio's REST API, as the web page does.

What is checked, against the SavedModel's own signatures called directly
(begin / observe / select / predict, not through the bridge's session):
the tasks offered each round, in the Data Manager tab's order, are the
`select` output for the labels submitted so far; the labels reach `observe`
in submission order; the pre-annotations are the `predict` output and
change from round to round; a bridge started again on the same project
(the first one gone) keeps the batch on offer and asks nothing twice.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402  (first: sets TensorFlow's log level)

import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tensorflow as tf

from export import label_studio as bridge_lib
from export import saved_model as export_lib
from export.label_studio_api import LabelStudioClient, LabelStudioError, check_url
from tests.conftest import SHARED_DATA, SHIPPED_DATA
from tests.label_studio_server import running_label_studio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(REPO, "models", "omniglot_5way_1shot_mass")
BATCH = 5


# ------------------------------------------------------------- reference
class Reference:
    """The episode computed with the SavedModel's signatures, step by step."""

    def __init__(self, loaded, items):
        self.sig = loaded.signatures
        out = self.sig["begin"](support=tf.constant(items[None], tf.float32))
        self.embeddings, self.state = out["embeddings"], out["state"]
        self.labels = tf.fill([1, len(items)], -1)
        self.labeled = tf.zeros([1, len(items)], tf.int32)

    def _episode(self):
        return dict(embeddings=self.embeddings, state=self.state, labels=self.labels,
                    labeled=self.labeled)

    def observe(self, index, label):
        out = self.sig["observe"](**self._episode(), index=tf.constant([index], tf.int32),
                                  label=tf.constant([label], tf.int32))
        self.state, self.labels, self.labeled = out["state"], out["labels"], out["labeled"]

    def select(self, k):
        out = self.sig["select"](**self._episode(), k=tf.constant(k, tf.int32))
        return out["top_k"].numpy()[0].tolist(), out["probabilities"].numpy()[0]

    def predict(self, items):
        out = self.sig["predict"](**self._episode(),
                                  queries=tf.constant(items[None], tf.float32))
        return out["probabilities"].numpy()[0]


# -------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def server():
    with running_label_studio() as started:
        yield started


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("export"))
    return tf.saved_model.load(export_lib.export_model_dir(MODEL_DIR, export_dir))


@pytest.fixture(scope="module")
def pool():
    return bridge_lib.load_pool(f"omniglot:{SHIPPED_DATA / 'omniglot'}", ways=5,
                                items_per_class=5, groups="Greek,Sanskrit", seed=3)


def choose(name):
    return [{"from_name": "label", "to_name": "image", "type": "choices",
             "value": {"choices": [name]}}]


def offered(client, bridge):
    """Pool items in the 'Next batch' tab, in the tab's order."""
    return [int(t["data"]["item"]) for t in client.tasks(bridge.project_id, bridge.view_id)]


def predictions_by_item(client, bridge):
    tasks = client.tasks(bridge.project_id)
    return {int(t["data"]["item"]): t["predictions"] for t in tasks}


def project(client, bridge):
    return client.request("GET", f"/api/projects/{bridge.project_id}/")


# ------------------------------------------------------------------ tests
def test_rounds_follow_select_and_a_restart_asks_nothing_twice(server, loaded, pool):
    client = LabelStudioClient(server.url, server.token)
    lines = []
    first = bridge_lib.Bridge(client, loaded, pool, batch=BATCH, budget=20,
                              project_title="rounds", log=lines.append).connect()
    first.rebuild()
    ref = Reference(loaded, pool.items)
    tasks = {int(t["data"]["item"]): t["id"] for t in client.tasks(first.project_id)}
    assert sorted(tasks) == list(range(len(pool.items)))

    # Round 1: nothing labelled; the tab holds select's top k, in order.
    assert first.step() == "asked"
    round1 = offered(client, first)
    assert round1 == ref.select(BATCH)[0]
    assert first.step() == "waiting"  # nothing submitted yet: same batch stays
    assert offered(client, first) == round1
    assert not any(predictions_by_item(client, first).values())  # nothing to predict from

    # The annotator submits in an order of their own; observe reads that order.
    submitted = list(np.random.default_rng(0).permutation(round1))
    names = {}
    for item in submitted:
        client.annotate(tasks[item], choose(pool.truth[item]))
        names.setdefault(pool.truth[item], len(names))
        ref.observe(item, names[pool.truth[item]])
    assert first.step() == "asked"
    assert first.session.labeled_indices.tolist() == submitted
    assert first.session.labels.tolist() == [names[pool.truth[i]] for i in submitted]
    round2 = offered(client, first)
    top, probabilities = ref.select(BATCH)
    assert round2 == top
    np.testing.assert_allclose(first.session.probabilities(), probabilities, atol=1e-5)

    # Pre-annotations: predict's most likely named class and its probability,
    # on every unlabelled task, under the project's current model version.
    version = project(client, first)["model_version"]
    assert version == "active-learner-5-labels"
    predicted = ref.predict(pool.items)
    index_names = list(names)
    shown2 = predictions_by_item(client, first)
    for item, found in shown2.items():
        if item in submitted:
            assert found == []
            continue
        (prediction,) = found
        best = int(np.argmax(predicted[item][:len(names)]))
        assert prediction["model_version"] == version
        assert prediction["result"][0]["value"]["choices"] == [index_names[best]]
        assert prediction["score"] == pytest.approx(float(predicted[item][best]), abs=1e-5)

    # Two answers of round 2 (one a skip), then the bridge is gone.
    client.annotate(tasks[round2[1]], choose(pool.truth[round2[1]]))
    client.annotate(tasks[round2[0]], [], was_cancelled=True)
    del first

    second = bridge_lib.Bridge(client, loaded, pool, batch=BATCH, budget=20,
                               project_title="rounds", log=lines.append).connect()
    second.rebuild()
    assert second.session.labeled_indices.tolist() == submitted + [round2[1]]
    assert second.session.skipped_indices.tolist() == [round2[0]]
    assert second.step() == "waiting"  # the half-done batch stays on offer
    assert offered(client, second) == round2[2:]  # answered tasks leave the tab

    names.setdefault(pool.truth[round2[1]], len(names))
    ref.observe(round2[1], names[pool.truth[round2[1]]])
    for item in round2[2:]:
        client.annotate(tasks[item], choose(pool.truth[item]))
        names.setdefault(pool.truth[item], len(names))
        ref.observe(item, names[pool.truth[item]])
    assert second.step() == "asked"
    round3 = offered(client, second)
    _, probabilities = ref.select(BATCH)
    probabilities[round2[0]] = -1.0  # skipped: never asked again
    candidates = [int(i) for i in np.argsort(-probabilities, kind="stable")
                  if ref.labeled.numpy()[0, i] == 0 and i != round2[0]]
    assert round3 == candidates[:BATCH]
    asked = round1 + round2 + round3
    assert len(asked) == len(set(asked)), asked

    # The pre-annotations moved on with the labels.
    assert project(client, second)["model_version"] == "active-learner-9-labels"
    shown3 = predictions_by_item(client, second)
    changed = [i for i in round3 if shown3[i][0]["score"] != shown2[i][0]["score"]]
    assert changed, "pre-annotation scores did not change after a round"
    assert all(shown3[i] == [] for i in round2)
    assert client.model_versions(second.project_id) == {
        "active-learner-9-labels": len(pool.items) - 9 - 1}  # unlabelled, unskipped
    assert any(line.startswith("After 5 labels: asking for 5") for line in lines)
    assert not any(server.token in line for line in lines)


def test_a_model_over_rest_offers_the_same_tasks(server, loaded, pool):
    from tests.session_test import FakeServing

    serving = FakeServing(loaded)
    try:
        client = LabelStudioClient(server.url, server.token)
        bridge = bridge_lib.Bridge(client, serving.url, pool, batch=BATCH,
                                   project_title="over rest", log=lambda line: None)
        bridge.connect().rebuild()
        assert bridge.step() == "asked"
        assert offered(client, bridge) == Reference(loaded, pool.items).select(BATCH)[0]
        assert serving.requests > 0
    finally:
        serving.close()


def test_ratings_pool_with_a_star_control(server, tmp_path):
    movies = SHARED_DATA / "movielens" / "ml-latest-small"
    if not movies.is_dir():
        pytest.skip("../shared/data/movielens/ml-latest-small is not present")
    path = export_lib.export_model_dir(os.path.join(REPO, "models", "movielens"),
                                       str(tmp_path))
    model = tf.saved_model.load(path)
    pool = bridge_lib.load_pool(f"movielens:{movies}", pool_size=12, seed=0,
                                vocabulary=model.vocabulary.numpy())
    assert pool.control == "rating" and all(d["title"] for d in pool.data)
    client = LabelStudioClient(server.url, server.token)
    bridge = bridge_lib.Bridge(client, model, pool, batch=3, project_title="ratings",
                               log=lambda line: None)
    bridge.connect().rebuild()
    assert bridge.step() == "asked"
    sig = model.signatures
    episode = dict(sig["begin"](support=tf.constant(pool.items[None], tf.int64)))
    episode = dict(embeddings=episode["embeddings"], state=episode["state"],
                   labels=tf.zeros([1, len(pool.items)]),
                   labeled=tf.zeros([1, len(pool.items)], tf.int32))
    top_k = sig["select"](**episode, k=tf.constant(3))["top_k"].numpy()[0].tolist()
    round1 = offered(client, bridge)
    assert round1 == top_k
    tasks = {int(t["data"]["item"]): t["id"] for t in client.tasks(bridge.project_id)}
    for item, stars in zip(round1, (5, 2, 4)):
        client.annotate(tasks[item], [{"from_name": "rating", "to_name": "title",
                                       "type": "rating", "value": {"rating": stars}}])
    assert bridge.step() == "asked"
    assert bridge.session.labels.tolist() == [5.0, 2.0, 4.0]
    shown = predictions_by_item(client, bridge)
    stars = [p[0]["result"][0]["value"]["rating"] for i, p in shown.items()
             if i not in round1]
    assert len(stars) == len(pool.items) - 3 and all(1 <= s <= 5 for s in stars)
    assert all(shown[i] == [] for i in round1)


def test_classes_not_known_in_advance_are_typed(server, loaded, pool, tmp_path):
    from PIL import Image

    # A flat folder: no class names to offer, so the person types them.
    for i, image in enumerate(pool.items[:10]):
        drawing = np.rint(255 * (1 - image[..., 0])).astype(np.uint8)  # dark on white
        Image.fromarray(drawing).save(tmp_path / f"{i:02d}.png")
    flat = bridge_lib.load_pool(f"folder:{tmp_path}", invert=True)
    assert flat.control == "textarea"
    np.testing.assert_allclose(flat.items, pool.items[:10], atol=1 / 255)
    client = LabelStudioClient(server.url, server.token)
    bridge = bridge_lib.Bridge(client, loaded, flat, batch=3, project_title="typed",
                               log=lambda line: None)
    bridge.connect().rebuild()
    assert bridge.step() == "asked"
    round1 = offered(client, bridge)
    tasks = {int(t["data"]["item"]): t["id"] for t in client.tasks(bridge.project_id)}
    typed = {round1[0]: " Zeta ", round1[1]: "alpha", round1[2]: "Zeta"}
    for item in round1:
        client.annotate(tasks[item], [{"from_name": "label", "to_name": "image",
                                       "type": "textarea",
                                       "value": {"text": [typed[item]]}}])
    assert bridge.step() == "asked"
    # Indices in the order the names first came: Zeta 0, alpha 1.
    assert bridge.class_indices == {"Zeta": 0, "alpha": 1}
    assert bridge.session.labels.tolist() == [0, 1, 0]
    shown = predictions_by_item(client, bridge)
    texts = {p[0]["result"][0]["value"]["text"][0] for i, p in shown.items() if p}
    assert texts <= {"Zeta", "alpha"} and texts


def test_another_pool_in_the_project_is_refused(server, loaded, pool):
    client = LabelStudioClient(server.url, server.token)
    bridge_lib.Bridge(client, loaded, pool, project_title="one pool",
                      log=lambda line: None).connect()
    other = bridge_lib.load_pool(f"omniglot:{SHIPPED_DATA / 'omniglot'}", ways=5,
                                 items_per_class=5, seed=4)
    with pytest.raises(ValueError, match="holds another pool.*--project"):
        bridge_lib.Bridge(client, loaded, other, project_title="one pool",
                          log=lambda line: None).connect()


def test_a_refused_token_says_where_to_get_one(server):
    client = LabelStudioClient(server.url, "not-the-token")
    with pytest.raises(LabelStudioError, match="refused the token.*Access Token|refused the token"):
        client.projects()


def test_a_personal_access_token_works(server):
    # A personal access token, as the web page's Account & Settings makes one.
    legacy = LabelStudioClient(server.url, server.token)
    personal = legacy.request("POST", "/api/token/", {})["token"]
    client = LabelStudioClient(server.url, personal)
    titles = {p["title"] for p in client.projects()}
    assert titles == {p["title"] for p in legacy.projects()}
    assert personal not in repr(client)


# --------------------------------------------------- without the server
def test_plain_http_only_to_this_machine():
    assert check_url("http://localhost:8080/") == "http://localhost:8080"
    assert check_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert check_url("http://[::1]:8080") == "http://[::1]:8080"
    assert check_url("https://labels.example.com") == "https://labels.example.com"
    with pytest.raises(ValueError, match="plain HTTP.*--allow_insecure_http"):
        check_url("http://labels.example.com:8080")
    assert check_url("http://10.0.0.5:8080", allow_insecure_http=True)
    with pytest.raises(ValueError, match="--url must be"):
        check_url("localhost:8080")


def test_token_from_environment_or_file(tmp_path):
    assert bridge_lib.read_token(environ={"LABEL_STUDIO_API_KEY": " abc \n"}) == "abc"
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert bridge_lib.read_token(str(path), environ={}) == "from-file"
    with pytest.raises(ValueError, match=r"\$LABEL_STUDIO_API_KEY or pass --token_file"):
        bridge_lib.read_token(environ={})
    with pytest.raises(ValueError, match="--token_file=.*cannot read"):
        bridge_lib.read_token(str(tmp_path / "missing"), environ={})
    client = LabelStudioClient("http://localhost:1", "secret-token-value")
    assert "secret-token-value" not in repr(client)


def test_label_configs_parse_and_name_their_controls(tmp_path):
    from PIL import Image

    for name in ("a", "b"):
        (tmp_path / "classes" / name).mkdir(parents=True)
        for j in range(2):
            Image.new("L", (105, 105), 255).save(tmp_path / "classes" / name / f"{j}.png")
    (tmp_path / "flat").mkdir()
    Image.new("L", (28, 28), 0).save(tmp_path / "flat" / "x.png")
    known = bridge_lib.load_pool(f"folder:{tmp_path / 'classes'}", ways=2,
                                 items_per_class=2, invert=True)
    assert known.control == "choices" and known.class_names == ["a", "b"]
    assert known.items.shape == (4, 28, 28, 1) and known.items.max() == 0.0  # white: no ink
    assert sorted(known.truth) == ["a", "a", "b", "b"]
    flat = bridge_lib.load_pool(f"folder:{tmp_path / 'flat'}", invert=True)
    assert flat.control == "textarea" and flat.items.min() == 1.0  # black: all ink
    assert flat.data[0]["image"].startswith("data:image/png;base64,")
    choices = ET.fromstring(bridge_lib.label_config(known))
    assert [c.get("value") for c in choices.iter("Choice")] == ["a", "b"]
    assert ET.fromstring(bridge_lib.label_config(flat)).find("TextArea") is not None
    rating = bridge_lib.Pool(np.array([1, 2]), [{"title": "A"}, {"title": "B"}], "rating")
    assert ET.fromstring(bridge_lib.label_config(rating)).find("Rating").get(
        "maxRating") == "5"
    with pytest.raises(ValueError, match="--ways=3 but only 2 classes"):
        bridge_lib.load_pool(f"folder:{tmp_path / 'classes'}", ways=3, items_per_class=2)
    with pytest.raises(FileNotFoundError, match="folder:.*no such directory"):
        bridge_lib.load_pool(f"folder:{tmp_path / 'nowhere'}")


def test_a_title_label_studio_would_refuse_is_named(pool):
    with pytest.raises(ValueError, match="--project=.*longer than the 50 characters"):
        bridge_lib.Bridge(None, None, pool, project_title="x" * 51)
    assert len(bridge_lib.Bridge(None, None, pool).project_title) <= 50


def test_answers_are_read_in_submission_order():
    def task(item, *annotations):
        return {"data": {"item": item}, "annotations": list(annotations)}

    tasks = [task(0, {"id": 7, "result": choose("b")}),
             task(1, {"id": 3, "result": [], "was_cancelled": True}),
             task(2, {"id": 5, "result": [{"type": "textarea",
                                           "value": {"text": ["  new   class "]}}]}),
             task(3)]
    found = bridge_lib.answers_in_order(tasks, "choices")
    assert [(a, i) for a, i, _ in found] == [(3, 1), (7, 0)]
    assert found[0][2] is bridge_lib.SKIPPED and found[1][2] == "b"
    assert bridge_lib.answers_in_order(tasks, "textarea")[1][2] == "new class"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
