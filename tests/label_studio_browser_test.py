"""Three rounds of labelling in Label Studio's web page, in headless Chromium.

What a person does: log in, open the project's "Next batch" tab, choose
"Label Tasks As Displayed", look at each drawing (with the model's guess
already ticked from round 2 on), tick the right character, Submit; after the
batch, go back to the tab and find the next batch there. The bridge runs as
the real command (`python -m export.label_studio`) in a subprocess, and is
killed with SIGKILL in the middle of round 2 and started again.

Checked: the tab's tasks each round, and the order the editor serves them
in, are the SavedModel's `select` output for the labels submitted so far (in
submission order); the editor shows the model's prediction ticked from round
2 on and it is the `predict` output; the pre-annotations change after each
round; after the restart no task is asked twice. Screenshots of a round go
to `$LABEL_STUDIO_FIGURES` (docs/figures for the docs, else a temporary
folder) as `label_studio_*.png`; the time from the last Submit of a
round to the next batch in the tab is printed (`pytest -s`).

Needs Chromium (Debian's `chromium`, or `$CHROMIUM`), Playwright from PyPI
(no browser download: it drives that Chromium) and the Label Studio server
(scripts/install_label_studio.sh); skips, naming what is missing, otherwise.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import active_learning  # noqa: F401,E402  (first: sets TensorFlow's log level)

import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from export import label_studio as bridge_lib
from export import saved_model as export_lib
from export.label_studio_api import LabelStudioClient
from tests.conftest import SHIPPED_DATA
from tests.label_studio_server import running_label_studio

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(REPO, "models", "omniglot_5way_1shot_mass")
# Screenshots go to tmp unless asked for: a test run should not dirty the
# checkout. `LABEL_STUDIO_FIGURES=docs/figures` refreshes the docs' ones.
FIGURES_ENV = "LABEL_STUDIO_FIGURES"
BATCH, ROUNDS = 5, 3
POOL_ARGS = dict(ways=5, items_per_class=5, groups="Greek,Sanskrit", seed=3)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium():
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
        "chromium-browser")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("Chromium is not installed (apt-get install chromium, or set $CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[label_studio]')")
    return path


class BridgeProcess:
    """`python -m export.label_studio ...` in a subprocess, its output in a file."""

    def __init__(self, args, env, log_path):
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "export.label_studio"] + args, cwd=REPO, env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, text, seconds=180):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"the bridge did not print {text!r}; its output:\n"
                             f"{self.output()[-3000:]}")

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # as a crash would
            self.process.wait(timeout=30)
        self._log.close()


class Reference:
    """The episode through the SavedModel's signatures, called directly."""

    def __init__(self, loaded, items):
        self.sig = loaded.signatures
        self.items = tf.constant(items[None], tf.float32)
        out = self.sig["begin"](support=self.items)
        self.episode = dict(embeddings=out["embeddings"], state=out["state"],
                            labels=tf.fill([1, len(items)], -1),
                            labeled=tf.zeros([1, len(items)], tf.int32))

    def observe(self, index, label):
        out = self.sig["observe"](**self.episode, index=tf.constant([index], tf.int32),
                                  label=tf.constant([label], tf.int32))
        self.episode.update(state=out["state"], labels=out["labels"],
                            labeled=out["labeled"])

    def select(self, k):
        return self.sig["select"](**self.episode, k=tf.constant(k))["top_k"].numpy()[0].tolist()

    def predict(self):
        return self.sig["predict"](**self.episode, queries=self.items)["probabilities"].numpy()[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    executable = chromium()
    with running_label_studio() as server:
        export_dir = str(tmp_path_factory.mktemp("export"))
        path = export_lib.export_model_dir(MODEL_DIR, export_dir)
        yield server, executable, path


def test_three_rounds_in_a_browser_with_a_restart(setup, tmp_path):
    from playwright.sync_api import sync_playwright

    server, executable, export_path = setup
    figures = os.path.join(REPO, os.environ.get(FIGURES_ENV) or str(tmp_path))
    os.makedirs(figures, exist_ok=True)
    client = LabelStudioClient(server.url, server.token)
    token_file = tmp_path / "token"
    token_file.write_text(server.token)
    token_file.chmod(0o600)
    omniglot = str(SHIPPED_DATA / "omniglot")
    args = [f"--pool=omniglot:{omniglot}", f"--ways={POOL_ARGS['ways']}",
            f"--items_per_class={POOL_ARGS['items_per_class']}",
            f"--groups={POOL_ARGS['groups']}", f"--seed={POOL_ARGS['seed']}",
            f"--model={export_path}", f"--url={server.url}", f"--token_file={token_file}",
            f"--batch={BATCH}", f"--budget={BATCH * ROUNDS}", "--poll_seconds=0.5",
            "--project=Omniglot in the browser"]
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("LABEL_STUDIO_API_KEY", None)
    log_path = str(tmp_path / "bridge.log")
    bridge = BridgeProcess(args, env, log_path)

    pool = bridge_lib.load_pool(f"omniglot:{omniglot}", **POOL_ARGS)
    loaded = tf.saved_model.load(export_path)
    ref = Reference(loaded, pool.items)
    names = {}  # class name -> index, in first-submission order

    try:
        bridge.wait_for("After 0 labels: asking")
        (project,) = [p for p in client.projects() if p["title"] == "Omniglot in the browser"]
        (view,) = [v for v in client.views(project["id"])
                   if v["data"].get("title") == bridge_lib.VIEW_TITLE]
        tab = f"{server.url}/projects/{project['id']}/data?tab={view['id']}"
        item_of = {t["id"]: int(t["data"]["item"]) for t in client.tasks(project["id"])}

        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{server.url}/user/login/")
            page.fill("input[name=email]", server.username)
            page.fill("input[name=password]", server.password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")

            asked, shown_scores, round_times = [], [], []
            for round_number in range(1, ROUNDS + 1):
                # The tab, as the annotator sees it, holds select's top k in order.
                page.goto(tab)
                page.get_by_role("button", name="Label All Tasks").wait_for()
                page.wait_for_load_state("networkidle")
                expected = ref.select(BATCH)
                in_tab = [item_of[t["id"]] for t in client.tasks(project["id"], view["id"])]
                assert in_tab == expected, f"round {round_number}"
                page.get_by_text(f"Tasks: {BATCH} / {len(pool.items)}").wait_for()
                assert not set(expected) & set(asked), "an item was asked twice"
                asked += expected
                predictions = {item_of[t["id"]]: t["predictions"]
                               for t in client.tasks(project["id"])}
                probabilities = ref.predict()  # what the pre-annotations should say
                known = list(names)
                if round_number == 2:
                    page.screenshot(path=os.path.join(figures, "label_studio_batch.png"))
                if round_number > 1:
                    shown_scores.append({i: p[0]["score"] for i, p in predictions.items()
                                         if p})

                # "Label Tasks As Displayed": the editor walks the tab in order.
                box = page.get_by_role("button", name="Label All Tasks").bounding_box()
                page.mouse.click(box["x"] + box["width"] + 15, box["y"] + box["height"] / 2)
                with page.expect_response(lambda r: "id=next_task" in r.url) as served:
                    page.get_by_text("Label Tasks As Displayed").click()
                served_items = []
                for position in range(BATCH):
                    task = served.value.json()
                    item = item_of[task["id"]]
                    served_items.append(item)
                    page.get_by_text("Which class is this?").wait_for()
                    radios = page.locator("input[type=radio]")
                    radios.first.wait_for()
                    ticked = [i for i in range(radios.count()) if radios.nth(i).is_checked()]
                    if round_number == 1:
                        assert ticked == []  # nothing labelled yet: no guess
                    else:
                        # The model's guess is ticked: predict's best named class.
                        (guess,) = predictions[item][0]["result"][0]["value"]["choices"]
                        assert [pool.class_names[i] for i in ticked] == [guess]
                        best = int(np.argmax(probabilities[item][:len(known)]))
                        assert guess == known[best]
                        if round_number == 2 and position == 0:
                            page.screenshot(path=os.path.join(figures,
                                                              "label_studio_task.png"))
                    truth = pool.truth[item]
                    page.get_by_text(truth).click()  # its label, as a person would
                    assert radios.nth(pool.class_names.index(truth)).is_checked()
                    names.setdefault(truth, len(names))
                    ref.observe(item, names[truth])
                    if round_number == 2 and position == 2:
                        # Kill the bridge mid-round and start it again.
                        bridge.kill()
                        bridge = BridgeProcess(args, env, log_path)
                        bridge.wait_for(f"Resumed: {BATCH + 2} labels")
                    with page.expect_response(lambda r: "id=next_task" in r.url) as served:
                        page.get_by_role("button", name="Submit current annotation").click()
                    submitted = time.monotonic()
                assert served_items == expected, f"round {round_number}: editor order"
                assert served.value.status == 404  # the batch is done: nothing more
                if round_number < ROUNDS:
                    bridge.wait_for(f"After {BATCH * round_number} labels: asking")
                    # Next batch in the tab: read as the bridge's log says it is.
                    round_times.append(time.monotonic() - submitted)
            bridge.wait_for("Done: 15 labels.")
            context.close()
    finally:
        bridge.kill()

    output = bridge.output()
    assert server.token not in output
    assert len(asked) == len(set(asked)) == BATCH * ROUNDS
    # Pre-annotations moved on: tasks unlabelled in both rounds 2 and 3 got
    # new scores; every score is a probability.
    before, after = shown_scores
    assert any(before[i] != after[i] for i in set(before) & set(after))
    assert all(0.0 < s <= 1.0 for scores in shown_scores for s in scores.values())
    final = {item_of[t["id"]]: t for t in client.tasks(project["id"])}
    assert all(final[i]["annotations"] for i in asked)
    print(f"\nseconds from the last Submit of a round to the next batch: "
          f"{', '.join(f'{t:.1f}' for t in round_times)}; the bridge's share:")
    print("\n".join(line for line in output.splitlines() if "to read the answers" in line))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
