"""Reads the run_config.json records written before the typed `RunConfig`.

Those records were flat: the task's own keys (episode shape, data options,
data summary) beside `train_config` and `flags`, where `flags` held only the
training loop's flags. They left out what the trainers took from their other
flags: MovieLens runs record no `num_movies`, `num_users` or latent size.
`convert` builds a complete `RunConfig` from such a record: a value the
record holds is taken as it is, a missing one from the recorded flags, and
what neither holds from the defaults the trainers that wrote it had (the
dataclass defaults in `run_config`, which are the flags' defaults: the paper's
sizes). Everything filled in is named in one log line. The files themselves
are never rewritten.
"""

import dataclasses
import os

from active_learning import run_config as rc
from active_learning.training import TrainConfig

# Facts an older record kept beside its settings, moved to `recorded`.
_RECORDED = {"classification": ("data_summary", "split"),
             "ratings": ("data", "rating_scale", "item_id_type", "duplicates_dropped",
                         "latent_validation_rmse")}


class _Filler:
    """Looks values up in the record, then its flags, then the defaults; notes
    which were filled and from where."""

    def __init__(self, record):
        self.record = record
        self.flags = record.get("flags") or {}
        self.from_flags = []
        self.defaults = []

    def get(self, name, default, *places):
        """`name` from `places` (dicts; default: the record), its flags, `default`."""
        for place in places or (self.record,):
            if place.get(name) is not None:
                return place[name]
        if self.flags.get(name) is not None:
            self.from_flags.append(name)
            return self.flags[name]
        self.defaults.append(f"{name}={default!r}")
        return default

    def section(self, cls, values, overrides=None, **defaults):
        """`cls` from `values` (a recorded section), filling missing fields."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        out = {k: v for k, v in values.items() if k in known}
        dropped = sorted(set(values) - set(known))
        if dropped:
            self.defaults.append(f"dropped {cls.__name__} fields {dropped}")
        out.update(overrides or {})
        for name, field in known.items():
            if name in out:
                continue
            if name in defaults:
                default = defaults[name]
            elif field.default is not dataclasses.MISSING:
                default = field.default
            else:
                default = None
            out[name] = self.get(name, default, {})
        return cls(**out)

    def summary(self):
        parts = []
        if self.from_flags:
            parts.append("from its recorded flags: " + ", ".join(self.from_flags))
        if self.defaults:
            parts.append("not recorded, the defaults of the trainer that wrote it: "
                         + ", ".join(self.defaults))
        return parts


def convert(record, source="run_config.json", model_config=None):
    """A `RunConfig` from an older flat record (see the module docstring).

    Args:
      record: the parsed run_config.json.
      source: where it came from, for the log line (and, a file path, the
        model_dir of a record that names none).
      model_config: the run's `ModelConfig` if known: its item table width is
        the latent size a ratings run did not record.
    """
    fill = _Filler(record)
    task = record.get("task") or record.get("dataset")
    if not task:
        raise ValueError(f"{source} names no task: not a run record")
    dataset = record.get("dataset") or task
    ratings = task in rc.RATINGS_TASKS

    model_dir = os.path.dirname(source) if source.endswith(".json") else source
    loop = fill.section(rc.LoopConfig, {}, model_dir=model_dir)

    if ratings:
        prep = record.get("prep") or {}
        episodes = rc.RatingsEpisodeConfig(
            support_size=fill.get("support_size", rc.PAPER_RATINGS["support_size"],
                                  record, prep),
            query_size=fill.get("query_size", rc.PAPER_RATINGS["query_size"], record, prep),
            budget=fill.get("budget", rc.RATINGS_BUDGET))
    else:
        ways = record.get("ways")
        if ways is None:
            ways = [record["eval_ways"]] if record.get("eval_ways") else [5]
            fill.defaults.append(f"ways={ways}")
        ways = ways if isinstance(ways, list) else [ways]
        eval_ways = fill.get("eval_ways", max(ways))
        shots = fill.get("shots", 1)
        episodes = rc.ClassEpisodeConfig(
            ways=ways, eval_ways=eval_ways, shots=shots,
            items_per_class=fill.get("items_per_class", 5),
            budget=fill.get("budget", eval_ways * shots))

    train = dict(record.get("train_config") or {})
    train_config = fill.section(
        TrainConfig, train, overrides={"num_steps": episodes.budget},
        query_batch=record.get("query_batch") or 1, **rc.TRAIN_FIELDS_ADDED_LATER)

    data = _ratings_data(record, fill, model_config) if ratings else \
        _classification_data(record, fill, dataset)

    kind = "ratings" if ratings else "classification"
    used = {"task", "dataset", "flags", "train_config", "ways", "eval_ways", "shots",
            "items_per_class", "budget", "support_size", "query_size", "query_batch",
            "data_dir", "data_options", "rotate", "reader", "prep", "latent"}
    if not ratings:
        used.add("data")
    recorded = {k: v for k, v in record.items()
                if k in _RECORDED[kind] or k not in used}
    config = rc.RunConfig(task=task, dataset=dataset, loop=loop, train_config=train_config,
                          episodes=episodes, data=data, recorded=recorded)
    rc.log_filled(source, fill.summary())
    return config


def _classification_data(record, fill, dataset):
    spec = record.get("data") if isinstance(record.get("data"), str) else None
    data_dir = record.get("data_dir") or fill.flags.get("data_dir")
    if not spec and data_dir and dataset == "omniglot":
        spec = "omniglot:" + data_dir
    if not spec:
        fill.defaults.append("data=None (no data source recorded)")
        return None
    options = record.get("data_options") or {}
    split = (record.get("split") or {}).get("split", "auto")
    overrides = {"source": spec, "split": split, "test_alphabets": None,
                 "validation_alphabets": None}
    if record.get("rotate") is not None:
        overrides["rotate"] = record["rotate"]
    return fill.section(rc.ClassificationData, options, overrides=overrides,
                        rotate=dataset == "omniglot")


def _ratings_data(record, fill, model_config):
    from active_learning.data import ratings_reader  # pylint: disable=g-import-not-at-top
    reader = dict(record.get("reader") or {})
    source = reader.pop("source", None) or record.get("data_dir") or fill.flags.get("data_dir")
    if not source:
        fill.defaults.append("data=None (no data source recorded)")
        return None
    reader.setdefault("kind", ratings_reader.parse_source(source)[0])
    prep = record.get("prep") or {}
    latent = record.get("latent") or {}
    values = dict(reader)
    for name in ("num_movies", "num_users", "validation_fraction", "test_fraction"):
        if prep.get(name) is not None:
            values[name] = prep[name]
        elif record.get(name) is not None:
            values[name] = record[name]
    if latent.get("dim") is not None:
        values["latent_dim"] = latent["dim"]
    elif model_config is not None and model_config.item_table_dim:
        values["latent_dim"] = model_config.item_table_dim
        fill.defaults.append(f"latent_dim={model_config.item_table_dim} (the model's item "
                             "table width)")
    if latent.get("steps") is not None:
        values["latent_steps"] = latent["steps"]
    return fill.section(rc.RatingsData, values, overrides={"source": source})
