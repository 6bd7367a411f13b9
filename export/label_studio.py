"""Puts a trained active learner behind Label Studio: the model picks, people label.

    export LABEL_STUDIO_API_KEY=...            # or --token_file=PATH
    python -m export.label_studio --pool=omniglot:data/omniglot \\
        --model=/abs/exports/omniglot --url=http://localhost:8080 --batch=5 --budget=15

Each round the bridge asks the model (`ActiveSession.query(k=--batch)`, the
SavedModel's or TF Serving's `select`) which items a person should label
next, and puts exactly those, in the model's order, into a Data Manager tab
"Next batch": the tab shows the unanswered tasks with a positive task field
`batch_rank` (1 = first, 0 = not asked now), sorted by it. In that tab, "Label Tasks As Displayed"
(the arrow beside "Label All Tasks") walks exactly those tasks in that order;
Label Studio 1.23's plain "Label All Tasks" ignores a tab's filters.
When every task of the batch has a submitted (or skipped) annotation, the
bridge feeds the labels to `observe` in the order they were submitted,
writes the model's predictions for the still-unlabelled tasks back as
pre-annotations (with the predicted class's probability as score), and
asks for the next batch, until `--budget` labels are in or nothing is left.

Pools (`--pool`), read with the trainers' data layer
(`active_learning.data.readers`, docs/own_data.md):
  omniglot:DIR, folder:DIR (class subfolders), npz:PATH, tfds:NAME, or a
                 bare path: `--ways` classes x `--items_per_class` items,
                 drawn (seeded) from `--groups` (Omniglot alphabets, parent
                 folders) if given; the class names are known, so a Choices
                 control lists them ("Greek/character03").
  folder:DIR     with the images directly in DIR (no class subfolders): the
                 classes are not known in advance, so a text field takes a
                 class name, new or seen before.
  movielens:DIR  ratings: `--pool_size` movies of movies.csv that the model
                 knows (most rated first when ratings.csv is there), shown
                 by title with a 1-5 star Rating control.
Class names map to the model's class indices in the order they are first
submitted. `--invert` reads dark drawings on light paper as ink = 1, for
models trained that way on folder or npz data (Omniglot is read so already).

Resuming: the bridge keeps no state of its own. On start it rebuilds the
episode from the project: every submitted annotation is read again, in
submission order, and a batch still being labelled is kept; so a bridge
killed at any point and started again asks nothing twice and chooses what
the first would have chosen.

Security: the token comes from `$LABEL_STUDIO_API_KEY` or `--token_file`,
never from a flag value, and is never printed; plain HTTP is refused for a
`--url` that is not this machine unless `--allow_insecure_http`.
"""

import base64
import dataclasses
import hashlib
import io
import os
import sys
import time
from xml.sax.saxutils import quoteattr

import numpy as np

from export.label_studio_api import LabelStudioClient, LabelStudioError, check_url

TOKEN_ENV = "LABEL_STUDIO_API_KEY"  # the name label-studio-sdk reads too
VIEW_TITLE = "Next batch"
RANK_FIELD = "batch_rank"
MAX_TITLE = 50  # Label Studio refuses longer project titles
_HIDDEN_COLUMNS = (
    "inner_id", "annotators", "annotations_results", "annotations_ids",
    "predictions_results", "predictions_model_versions", "file_upload",
    "storage_filename", "created_at", "updated_at", "updated_by", "avg_lead_time",
    "draft_exists", "comment_count", "last_comment_updated_at",
    "unresolved_comment_count", "comment_authors", "total_predictions")


# -------------------------------------------------------------------- pools
@dataclasses.dataclass
class Pool:
    """What the bridge puts in front of people.

    Attributes:
      items: what the model reads: images `[P, H, W, C]` in [0, 1], or
        movieIds `[P]`.
      data: one Label Studio task data dict per item (without bookkeeping).
      control: "choices" (known class names), "textarea" (classes typed
        as they come) or "rating".
      class_names: the Choices values (None otherwise).
      description: one line naming the source.
      truth: ground-truth class names when the source has them (tests and
        demos use them; never sent to Label Studio).
      name: a short name for the default project title.
    """

    items: np.ndarray
    data: list
    control: str
    class_names: list = None
    description: str = ""
    truth: list = None
    name: str = "pool"

    @property
    def fingerprint(self):
        """Identifies the pool: a project holding another pool is not reused."""
        digest = hashlib.sha256(np.ascontiguousarray(self.items).tobytes())
        digest.update(repr((self.control, self.class_names)).encode())
        return digest.hexdigest()[:16]


def image_data_url(image, ink=False):
    """A PNG data URL of an image `[H, W(, C)]` in [0, 1].

    `ink`: the pixels are ink = 1 (Omniglot's convention, or `--invert`), so
    the picture shows 1 - pixel: dark strokes on white, as drawn. Data URLs
    need no file storage and work offline: the browser decodes them itself,
    so Label Studio needs no access to the pool's files.
    """
    from PIL import Image

    image = np.asarray(image, np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if ink:
        image = 1.0 - image
    pixels = np.clip(np.rint(255.0 * image), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _flat_folder(path):
    """Image files directly in `path` (no class subfolders), or None."""
    from active_learning.data import decoding

    if not os.path.isdir(path):
        raise FileNotFoundError(f"--pool=folder:{path}: no such directory")
    entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
    if any(os.path.isdir(os.path.join(path, e)) for e in entries):
        return None
    files = [os.path.join(path, e) for e in entries
             if e.lower().endswith(decoding.IMAGE_SUFFIXES)]
    if not files:
        raise ValueError(f"--pool=folder:{path} holds no images "
                         f"({', '.join(decoding.IMAGE_SUFFIXES)}), directly or in class "
                         "subfolders")
    return files


def _unlabelled_folder_pool(path, files, image_size, channels, invert):
    from active_learning.data import decoding

    images = []
    for f in files:
        with open(f, "rb") as handle:
            images.append(decoding.decode_image(handle.read(), f, channels, image_size,
                                                invert))
    images = np.stack(images).astype(np.float32)
    data = [{"image": image_data_url(im, invert), "file": os.path.relpath(f, path)}
            for im, f in zip(images, files)]
    return Pool(images, data, "textarea", None, f"folder {path} (classes not known)", None,
                os.path.basename(os.path.normpath(path)))


def _class_pool(spec, image_size, channels, invert, ways, items_per_class, groups, seed):
    """`ways` classes x `items_per_class` items of any classification data spec."""
    from active_learning.data import readers

    data = readers.load_class_data(spec, image_size=image_size, image_channels=channels,
                                   invert=invert)
    if data.kind != "image":
        raise ValueError(f"--pool={spec}: {data.kind} items have nothing to show an "
                         "annotator; the bridge takes images or movies")
    classes = np.arange(len(data.class_names))
    if groups:
        wanted = [g.strip() for g in groups.split(",") if g.strip()]
        unknown = sorted(set(wanted) - set(data.groups))
        if unknown:
            raise ValueError(f"--groups names {unknown}, not in {spec}; it has "
                             f"{sorted(set(data.groups))[:20]}")
        classes = classes[np.isin(np.asarray(data.groups), wanted)]
    classes = classes[data.class_counts[classes] >= items_per_class]
    if ways > len(classes):
        raise ValueError(f"--ways={ways} but only {len(classes)} classes of {spec} have "
                         f"--items_per_class={items_per_class} items")
    rng = np.random.default_rng(seed)
    picked = rng.choice(classes, ways, replace=False)
    rows = [(c, int(data.class_starts[c]) + int(j)) for c in picked
            for j in rng.choice(int(data.class_counts[c]), items_per_class, replace=False)]
    # The model reads the pool as a sequence and was trained on shuffled pools.
    rows = [rows[i] for i in rng.permutation(len(rows))]
    images = np.stack([data.items[r] for _, r in rows]).astype(np.float32)
    names = [data.class_names[c] for c in picked]
    truth = [data.class_names[c] for c, _ in rows]
    kind = spec.partition(":")[0] if ":" in spec else "data"
    return Pool(images, [{"image": image_data_url(im, data.ink)} for im in images],
                "choices", sorted(names),
                f"{spec}: {ways} classes x {items_per_class} items, seed {seed}", truth,
                f"{kind} {ways}x{items_per_class} seed {seed}")


def _movielens_pool(path, vocabulary, pool_size, seed):
    from active_learning.data import movielens
    from export.elicit import choose_pool

    titles = movielens.load_movie_titles(path)
    popularity = None
    ratings = os.path.join(path, "ratings.csv")
    if os.path.exists(ratings):
        counts = movielens.read_ratings_file(ratings)["movie_id"].value_counts()
        popularity = {int(k): int(v) for k, v in counts.items()}
    if vocabulary is None:
        raise ValueError("a movielens pool needs the model's movieIds: give --model as a "
                         "SavedModel path, or --vocabulary=SAVED_MODEL with a REST --model")
    ids = choose_pool(vocabulary, titles, pool_size, seed, popularity)
    return Pool(ids, [{"title": titles[int(m)], "movieId": int(m)} for m in ids], "rating",
                None, f"movielens {path}: {len(ids)} movies, seed {seed}", None,
                f"MovieLens {len(ids)} movies seed {seed}")


def load_pool(spec, image_size=28, image_channels=1, ways=5, items_per_class=5,
              groups=None, pool_size=50, seed=0, vocabulary=None, invert=False):
    """Reads `--pool` (see the module docstring) for a model of that input size."""
    kind, sep, path = spec.partition(":")
    if sep and kind == "movielens":
        return _movielens_pool(path, vocabulary, pool_size, seed)
    if sep and kind == "folder":
        files = _flat_folder(path)
        if files is not None:
            return _unlabelled_folder_pool(path, files, image_size, image_channels, invert)
    return _class_pool(spec, image_size, image_channels, invert, ways, items_per_class,
                       groups, seed)


def model_metadata(model):
    """The `metadata` signature of a loaded SavedModel or a TF Serving URL."""
    if isinstance(model, str):
        from export.client import RestClient

        return RestClient(model).metadata()
    import tensorflow as tf

    out = model.signatures["metadata"](dummy=tf.constant(0))
    return {k: (v.numpy().decode() if v.dtype == tf.string else v.numpy().item())
            for k, v in out.items()}


def label_config(pool):
    """The labelling interface XML for the pool's control."""
    if pool.control == "rating":
        return ('<View>\n  <Header value="How would you rate this movie?"/>\n'
                '  <Text name="title" value="$title"/>\n'
                '  <Rating name="rating" toName="title" maxRating="5" icon="star" '
                'size="large" required="true"/>\n</View>\n')
    head = ('<View>\n  <Image name="image" value="$image" maxWidth="280px" '
            'smoothing="false"/>\n')
    if pool.control == "choices":
        choices = "\n".join(f"    <Choice value={quoteattr(n)}/>" for n in pool.class_names)
        return (head + '  <Header value="Which class is this?"/>\n'
                '  <Choices name="label" toName="image" choice="single-radio" '
                f'required="true">\n{choices}\n  </Choices>\n</View>\n')
    return (head + '  <Header value="Which class is this? Type a name used before, or a '
            'new one."/>\n  <TextArea name="label" toName="image" maxSubmissions="1" '
            'required="true" placeholder="class name"/>\n</View>\n')


# ------------------------------------------------------------ annotations
SKIPPED = object()


def read_answer(annotation, control):
    """The class name / rating an annotation gives; SKIPPED; None if empty."""
    if annotation.get("was_cancelled"):
        return SKIPPED
    for region in annotation.get("result") or []:
        value = region.get("value", {})
        if control == "choices" and value.get("choices"):
            return str(value["choices"][0])
        if control == "textarea" and value.get("text"):
            text = " ".join(str(value["text"][0]).split())
            return text or None
        if control == "rating" and value.get("rating") is not None:
            return float(value["rating"])
    return None


def answers_in_order(tasks, control):
    """[(annotation id, pool item, answer)] by submission order.

    The first annotation of a task (lowest id) counts; Label Studio ids grow
    with creation time, so this order is the order people submitted in.
    """
    found = []
    for task in tasks:
        for annotation in sorted(task.get("annotations") or [], key=lambda a: a["id"]):
            answer = read_answer(annotation, control)
            if answer is not None:
                found.append((annotation["id"], int(task["data"]["item"]), answer))
                break
    found.sort()
    return found


# ------------------------------------------------------------------ bridge
class Bridge:
    """Runs active-learning rounds of one pool in one Label Studio project.

    Args:
      client: a `LabelStudioClient`.
      model: what `ActiveSession` takes: a SavedModel path or loaded
        SavedModel, a TF Serving URL, or an in-memory model.
      pool: a `Pool`.
      batch: how many tasks each round asks for (k of `select`).
      budget: how many labels to ask for in all (skips do not count).
      project_title: the project to create or reuse.
      seed: the session's seed (breaks exact ties).
      log: prints one progress line.
    """

    def __init__(self, client, model, pool, batch=10, budget=None, project_title=None,
                 seed=0, log=print):
        if batch < 1:
            raise ValueError(f"--batch must be >= 1, got {batch}")
        self.client = client
        self.model = model
        self.pool = pool
        self.batch = int(batch)
        self.budget = len(pool.items) if budget is None else int(budget)
        self.project_title = project_title or f"Active learning: {pool.name}"[:MAX_TITLE]
        if len(self.project_title) > MAX_TITLE:
            raise ValueError(f"--project={self.project_title!r} is longer than the "
                             f"{MAX_TITLE} characters Label Studio allows for a title")
        self.seed = int(seed)
        self.log = log
        self.project_id = None
        self.view_id = None
        self.task_ids = None  # pool item -> Label Studio task id
        self.rounds = 0  # batches offered by this run

    # ------------------------------------------------------------- project
    def connect(self):
        """Creates the project, its tasks and its view, or finds them again."""
        marker = f"pool {self.pool.fingerprint}"
        found = [p for p in self.client.projects() if p["title"] == self.project_title]
        if found:
            project = found[0]
            if marker not in (project.get("description") or ""):
                raise ValueError(
                    f"Label Studio project {self.project_title!r} (id {project['id']}) "
                    f"holds another pool than {self.pool.description} ({marker}); pass "
                    "--project=ANOTHER_TITLE, or delete that project to start over")
            self.project_id = project["id"]
            self.log(f"Reusing project {self.project_id} {self.project_title!r}")
        else:
            project = self.client.create_project(
                title=self.project_title,
                description=f"Tasks chosen by an active learner; {self.pool.description}; "
                            f"{marker}",
                label_config=label_config(self.pool),
                # Shows the model's predictions as pre-annotations.
                show_collab_predictions=True,
                # One annotation per task: the model reads each label once.
                maximum_annotations=1)
            self.project_id = project["id"]
            self.log(f"Created project {self.project_id} {self.project_title!r}")
        tasks = self.client.tasks(self.project_id, fields="task_only")
        if not tasks:
            self.client.import_tasks(self.project_id, [
                {"data": dict(d, item=i, **{RANK_FIELD: 0})}
                for i, d in enumerate(self.pool.data)])
            tasks = self.client.tasks(self.project_id, fields="task_only")
        items = sorted(int(t["data"]["item"]) for t in tasks)
        if items != list(range(len(self.pool.items))):
            raise ValueError(f"project {self.project_id} holds {len(tasks)} tasks, not the "
                             f"{len(self.pool.items)} of the pool; delete it to start over")
        self.task_ids = {int(t["data"]["item"]): t["id"] for t in tasks}
        views = self.client.views(self.project_id)
        view = [v for v in views if v["data"].get("title") == VIEW_TITLE]
        if view:
            self.view_id = view[0]["id"]
        else:
            self.view_id = self.client.create_view(self.project_id, {
                "title": VIEW_TITLE,
                # On offer and not answered yet: a submitted or skipped task
                # leaves the tab, so the bridge need not reset its rank (each
                # task update costs Label Studio a third of a second).
                "filters": {"conjunction": "and", "items": [
                    {"filter": f"filter:tasks:data.{RANK_FIELD}", "operator": "greater",
                     "type": "Number", "value": 0},
                    {"filter": "filter:tasks:total_annotations", "operator": "equal",
                     "type": "Number", "value": 0},
                    {"filter": "filter:tasks:cancelled_annotations", "operator": "equal",
                     "type": "Number", "value": 0}]},
                "ordering": [f"tasks:data.{RANK_FIELD}"],
                # Leaves the columns an annotator needs in view.
                "hiddenColumns": {"explore": [f"tasks:{c}" for c in _HIDDEN_COLUMNS],
                                  "labeling": []}})["id"]
        return self

    # ------------------------------------------------------------- episode
    def _new_session(self):
        from active_learning.session import ActiveSession  # TensorFlow: only when used

        return ActiveSession(self.model, self.pool.items, seed=self.seed)

    def _class_index(self, name):
        """Classes map to indices in the order they are first submitted."""
        if name not in self.class_indices:
            limit = self.session.max_classes
            if len(self.class_indices) >= limit:
                raise ValueError(
                    f"the class {name!r} is the {limit + 1}th distinct class, but the "
                    f"model reads at most {limit} classes; relabel that task with a class "
                    "used before, or use a model trained with more ways")
            self.class_indices[name] = len(self.class_indices)
        return self.class_indices[name]

    def _label_of(self, answer):
        if self.pool.control == "rating":
            lo, hi = self.session.rating_range
            return float(np.clip(answer, lo, hi))
        return self._class_index(answer)

    def rebuild(self, tasks=None):
        """Starts the episode again from every annotation in the project."""
        self.session = self._new_session()
        self.class_indices = {}
        self.seen = set()  # annotation ids already read
        self.read(tasks)

    def read(self, tasks=None):
        """Teaches the model the annotations it has not read yet; how many."""
        tasks = self.client.tasks(self.project_id) if tasks is None else tasks
        new = [(a, i, x) for a, i, x in answers_in_order(tasks, self.pool.control)
               if a not in self.seen]
        skips = [i for _, i, x in new if x is SKIPPED]
        labelled = [(i, self._label_of(x)) for _, i, x in new if x is not SKIPPED]
        if skips:
            # A skip changes no state: the model only stops considering the item.
            self.session.skip(skips)
        if labelled:
            indices, labels = zip(*labelled)
            self.session.teach(list(indices), list(labels))
        self.seen.update(a for a, _, _ in new)
        return len(new)

    @property
    def labelled(self):
        return len(self.session.labeled_indices)

    def current_batch(self, tasks):
        """Pool items with a rank, in rank order (answered ones may linger)."""
        ranked = [(t["data"].get(RANK_FIELD) or 0, int(t["data"]["item"])) for t in tasks]
        return [i for r, i in sorted(ranked) if r > 0]

    # --------------------------------------------------------------- write
    def _predictions(self):
        """Pre-annotations for the unlabelled tasks: [(item, result, score)]."""
        left = self.session.unlabeled_indices
        if not len(left) or not self.labelled:
            return []  # nothing to predict from yet
        predicted = self.session.predict()
        out = []
        if self.pool.control == "rating":
            for i in left:
                stars = int(np.clip(np.rint(predicted[i]), 1, 5))
                out.append((int(i), [{"from_name": "rating", "to_name": "title",
                                      "type": "rating", "value": {"rating": stars}}],
                            None))
            return out
        names = list(self.class_indices)  # index order
        for i in left:
            p = predicted[i][:len(names)]
            best = int(np.argmax(p))
            kind = self.pool.control
            value = {"choices": [names[best]]} if kind == "choices" else {"text": [names[best]]}
            out.append((int(i), [{"from_name": "label", "to_name": "image", "type": kind,
                                  "value": value}], float(predicted[i][best])))
        return out

    def model_version(self):
        return f"active-learner-{self.labelled}-labels"

    def write_predictions(self):
        version = self.model_version()
        predictions = self._predictions()
        for old in self.client.model_versions(self.project_id) or {}:
            if old != version:
                self.client.delete_model_version(self.project_id, old)
        if predictions and version not in (self.client.model_versions(self.project_id) or {}):
            self.client.import_predictions(self.project_id, [
                dict({"task": self.task_ids[i], "result": r, "model_version": version},
                     **({} if s is None else {"score": s}))
                for i, r, s in predictions])
        if predictions:
            # The project's model version picks which predictions pre-fill the
            # editor (Label Studio refuses a version without predictions).
            self.client.update_project(self.project_id, model_version=version)
        return len(predictions)

    def offer(self, items, tasks):
        """Puts `items` (in this order) into the view; takes the rest out.

        Answered tasks keep their old rank: the tab leaves them out anyway.
        """
        rank = {int(i): r for r, i in enumerate(items, 1)}
        answered = {i for _, i, _ in answers_in_order(tasks, self.pool.control)}
        for task in tasks:
            item = int(task["data"]["item"])
            want = rank.get(item, 0)
            if item in answered and not want:
                continue
            if (task["data"].get(RANK_FIELD) or 0) != want:
                data = {k: v for k, v in task["data"].items()}
                data[RANK_FIELD] = want
                self.client.update_task(task["id"], data)

    # ---------------------------------------------------------------- loop
    def step(self):
        """One poll: "waiting", "asked" (a new batch is on offer) or "done"."""
        tasks = self.client.tasks(self.project_id)
        answered = {i for _, i, _ in answers_in_order(tasks, self.pool.control)}
        pending = [i for i in self.current_batch(tasks) if i not in answered]
        if pending:
            return "waiting"
        started = time.monotonic()
        self.read(tasks)
        k = min(self.batch, self.budget - self.labelled, len(self.session.unlabeled_indices))
        if k <= 0:
            self.write_predictions()
            self.offer([], tasks)
            return "done"
        items = [int(i) for i in self.session.query(k)]
        count = self.write_predictions()
        self.offer(items, tasks)
        self.rounds += 1
        self.log(f"After {self.labelled} labels: asking for {len(items)} (pool items "
                 f"{items}); {count} pre-annotations; {time.monotonic() - started:.1f}s "
                 "to read the answers and choose")
        return "asked"

    def run(self, poll_seconds=2.0, max_rounds=None):
        """Polls until the budget is spent, the pool is used up, or max_rounds."""
        self.rebuild()
        if self.labelled:
            self.log(f"Resumed: {self.labelled} labels and "
                     f"{len(self.session.skipped_indices)} skips read from the project")
        while True:
            state = self.step()
            if state == "done":
                self.log(f"Done: {self.labelled} labels.")
                return
            if state == "asked" and max_rounds is not None and self.rounds >= max_rounds:
                # Stop after offering: the last batch stays on offer for a restart.
                return
            time.sleep(poll_seconds)


# -------------------------------------------------------------------- main
def read_token(token_file=None, environ=os.environ):
    """The API token from `--token_file` or `$LABEL_STUDIO_API_KEY`."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ValueError(f"--token_file={token_file}: cannot read it ({e.strerror})") \
                from None
        if not token:
            raise ValueError(f"--token_file={token_file} is empty")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ValueError(f"no Label Studio token: set ${TOKEN_ENV} or pass --token_file=PATH "
                         "(Label Studio: Account & Settings -> Access Token)")
    return token


def main(argv=None):
    """Entry point: `python -m export.label_studio --pool=... --model=... --url=...`."""
    from absl import app, flags

    flags.DEFINE_string("pool", None, "omniglot:DIR, folder:DIR or movielens:DIR.")
    flags.DEFINE_string("model", None, "SavedModel path (base or version directory) or "
                        "TF Serving URL http://HOST:PORT/v1/models/NAME.")
    flags.DEFINE_string("vocabulary", None, "For a movielens pool with a REST --model: a "
                        "SavedModel whose movieIds to choose from.")
    flags.DEFINE_string("url", "http://localhost:8080", "Label Studio address.")
    flags.DEFINE_bool("allow_insecure_http", False, "Allow plain http:// to a host other "
                      "than this machine.")
    flags.DEFINE_string("token_file", None, f"File holding the API token (default: "
                        f"${TOKEN_ENV}).")
    flags.DEFINE_string("project", None, "Project title to create or reuse.")
    flags.DEFINE_integer("batch", 10, "Tasks per round (k of select).")
    flags.DEFINE_integer("budget", None, "Labels to ask for in all (default: the pool).")
    flags.DEFINE_integer("ways", 5, "Classes in an image pool.")
    flags.DEFINE_integer("items_per_class", 5, "Items per class in an image pool.")
    flags.DEFINE_string("groups", None, "Comma-separated groups (Omniglot alphabets, "
                        "parent folders) to draw the classes from (default: all).")
    flags.DEFINE_bool("invert", False, "Images: 1 - pixel (dark drawings on light "
                      "paper as ink = 1); Omniglot is read so already.")
    flags.DEFINE_integer("pool_size", 50, "movielens: movies in the pool.")
    flags.DEFINE_integer("seed", 0, "Seeds the pool and the session.")
    flags.DEFINE_float("poll_seconds", 2.0, "Seconds between looks at the project.")
    flags.DEFINE_integer("rounds", None, "Stop after offering this many batches.")
    flags.mark_flags_as_required(["pool", "model"])
    FLAGS = flags.FLAGS

    def run(unused_argv):
        def log(line):
            print(line, flush=True)

        try:
            url = check_url(FLAGS.url, FLAGS.allow_insecure_http)
            token = read_token(FLAGS.token_file)
            import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
            import tensorflow as tf

            from active_learning.session import resolve_saved_model

            model, vocabulary = FLAGS.model, None
            if not FLAGS.model.startswith(("http://", "https://")):
                model = tf.saved_model.load(resolve_saved_model(FLAGS.model))
                vocabulary = getattr(model, "vocabulary", None)
            elif FLAGS.vocabulary:
                loaded = tf.saved_model.load(resolve_saved_model(FLAGS.vocabulary))
                vocabulary = getattr(loaded, "vocabulary", None)
            if vocabulary is not None:
                vocabulary = vocabulary.numpy()
            meta = model_metadata(model)
            pool = load_pool(FLAGS.pool, int(meta.get("image_size", 28)),
                             int(meta.get("image_channels", 1)), FLAGS.ways,
                             FLAGS.items_per_class, FLAGS.groups, FLAGS.pool_size,
                             FLAGS.seed, vocabulary, FLAGS.invert)
            client = LabelStudioClient(url, token)
            client.wait_until_up(30)
            bridge = Bridge(client, model, pool, FLAGS.batch, FLAGS.budget, FLAGS.project,
                            FLAGS.seed, log).connect()
            log(f"Open {url}/projects/{bridge.project_id}/data?tab={bridge.view_id} and "
                "choose 'Label Tasks As Displayed' (the arrow beside 'Label All Tasks') "
                "to label the model's picks in its order.")
            bridge.run(FLAGS.poll_seconds, FLAGS.rounds)
        except (OSError, ValueError, LabelStudioError) as e:
            print(f"label_studio: {e}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:
            log("Stopped; run the same command again to continue.")
        return 0

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
