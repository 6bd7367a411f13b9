"""Report writers: a record as Markdown, CSV and JSON (and a PNG, `plots`).

`write_outputs` writes `<name>.json`, `.csv`, `.png` and `.md` of one
record from `experiments` (Table 1, Figure 3, Figure 4, a batch-query
table). The Markdown puts ours beside the paper's numbers where it has
them; the CSV is long-format, one line per series and label count. The
writers read records as plain dicts, so a record loaded back from its JSON
renders the same.
"""

import csv
import os
import platform

import numpy as np
import tensorflow as tf

from active_learning import checkpoints
from active_learning.evaluation.cold_start import cold_start_markdown
from active_learning.evaluation.plots import plot_record


def machine_description():
    """Where a measurement ran, for the record."""
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "tensorflow": tf.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU"))}


def _pct(value, ci=None, digits=1):
    if value is None:
        return "—"
    text = f"{value:.{digits}f}%"
    return text if ci is None else f"{text} ± {ci:.{max(digits, 2)}f}"


def _rmse_text(value, ci):
    return "—" if value is None else f"{value:.4f} ± {ci:.4f}"


def _ticks(first, last, step):
    ticks = list(range(first, last + 1, step))
    return ticks if ticks and ticks[-1] == last else ticks + [last]


def _header(record):
    return (f"{record['episodes']} {record['split']} episodes, seed {record['seed']}, "
            f"batch {record['batch_size']}; model `{record['model']}`")


def table1_markdown(record):
    """Table 1 as markdown: every row, ours beside the paper's."""
    n, k = record["ways"], record["shots"]
    # Records written before other data were Omniglot's.
    omniglot = record.get("task", "omniglot") == "omniglot"
    paper_head = "paper (Table 1) | " if omniglot else ""
    lines = [f"**{record.get('data', 'Omniglot')} {n}-way {k}-shot ({record['labels']} labels "
             "requested)**: " + _header(record), "",
             f"| Model | policy | ours: accuracy ± 95% CI | {paper_head}"
             f"distinct labels | all {n} classes found |",
             "| --- | --- | ---: |" + (" ---: |" if omniglot else "") + " ---: | ---: |"]
    for row in record["rows"]:
        paper = ""
        if omniglot:
            paper = (_pct(row["paper_accuracy"], row["paper_ci"])
                     if row["paper_accuracy"] is not None else "— (not in the paper)") + " | "
        lines.append(f"| {row['label']} | `{row['policy']}` | "
                     f"{_pct(row['accuracy'], row['ci'])} | {paper}"
                     f"{row['distinct_labels']:.2f} | {100 * row['found_all']:.1f}% |")
    lines.append("")
    lines.append("Accuracy after each label (ours, %):")
    lines.append("")
    labels = list(range(1, record["labels"] + 1))
    lines.append("| Model | " + " | ".join(str(t) for t in labels) + " |")
    lines.append("| --- |" + " ---: |" * len(labels))
    for row in record["rows"]:
        lines.append(f"| {row['label']} | " + " | ".join(f"{v:.1f}" for v in row["curve"])
                     + " |")
    return "\n".join(lines) + "\n"


def figure3_markdown(record):
    """Figure 3 as markdown: the accuracy panel at ticks, then distinct labels found."""
    ways = record["ways"]
    left_ticks = _ticks(ways, record["max_labels"], 5) if record["max_labels"] >= ways else \
        _ticks(1, record["max_labels"], 5)
    right_ticks = _ticks(5, record["distinct_max"], 5) if record["distinct_max"] >= 5 else \
        list(range(1, record["distinct_max"] + 1))
    lines = [f"**Omniglot {ways}-way, Figure 3**: " + _header(record), "",
             "Left: held-out accuracy (%) by labels requested.", "",
             "| Series | " + " | ".join(str(t) for t in left_ticks) + " |",
             "| --- |" + " ---: |" * len(left_ticks)]
    for row in record["left"]["rows"]:
        lines.append(f"| {row['label']} | " + " | ".join(
            f"{row['accuracy'][t - 1]:.1f} ± {row['ci'][t - 1]:.1f}" for t in left_ticks)
            + " |")
    for point in record["left"]["points"]:
        cells = [f"{point['accuracy']:.1f} ± {point['ci']:.1f}" if t == point["labels"]
                 else "" for t in left_ticks]
        lines.append(f"| {point['label']} | " + " | ".join(cells) + " |")
    lines += ["", f"Right: distinct labels among those requested ({ways}-way test episodes).",
              "", "| Series | model | " + " | ".join(str(t) for t in right_ticks) + " |",
              "| --- | --- |" + " ---: |" * len(right_ticks)]
    for row in record["right"]["rows"]:
        lines.append(f"| {row['label']} | `{row['model']}` | " + " | ".join(
            f"{row['distinct_labels'][t - 1]:.2f}" for t in right_ticks) + " |")
    notes = [f"- {r['label']}: {r['note']}" for r in record["left"]["rows"] if r.get("note")]
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines) + "\n"


def figure4_markdown(record):
    """Figure 4 as markdown: RMSE per label count, the improvement, the tuned values."""
    labels = record["labels"]
    lines = [f"**MovieLens, Figure 4** (pool {record['support_size']} movies, "
             f"{record['query_size']} held-out ratings; RMSE per episode, then the mean): "
             + _header(record), "",
             "| Series | " + " | ".join(str(t) for t in labels) + " |",
             "| --- |" + " ---: |" * len(labels)]
    for row in record["rows"]:
        if row["rmse"] is None:
            lines.append(f"| {row['label']} | " + " | ".join("—" for _ in labels) + " |")
            continue
        lines.append(f"| {row['label']} | " + " | ".join(
            _rmse_text(row["rmse"][t - 1], row["ci"][t - 1]) for t in labels) + " |")
    improvement = record.get("improvement")
    lines.append("")
    if improvement:
        lines.append(
            f"After {improvement['labels']} labels: Active MN {improvement['active_rmse']:.4f} "
            f"vs best baseline {improvement['best_baseline']} "
            f"{improvement['best_baseline_rmse']:.4f}: improvement "
            f"{improvement['improvement_pct']:+.2f}% (paper, MovieLens-20M: "
            f"{record['paper_improvement_pct']:+.1f}%).")
    tuning = record.get("tuning") or {}
    for key, name in (("ridge", "ridge l2"), ("gp", "GP noise ratio")):
        if key in tuning:
            lines.append(f"Tuned {name} per label count on {tuning['tune_episodes']} "
                         f"{tuning['tune_split']} episodes: "
                         + ", ".join(f"{v:g}" for v in tuning[key]["best"]) + ".")
    notes = [f"- {r['label']}: {r['note']}" for r in record["rows"] if r.get("note")]
    if notes:
        lines += ["", "Notes:"] + notes
    return "\n".join(lines) + "\n"


def batch_markdown(record):
    """A batch-query table: every row's final metric, distinct classes, curve."""
    classification = record["task"] == "omniglot"
    what = (f"Omniglot {record['ways']}-way" if classification else "MovieLens")
    k, rounds = record["query_batch"], record["rounds"]
    metric = "accuracy ± 95% CI" if classification else "RMSE ± 95% CI"
    lines = [f"**{what}, {record['labels']} labels as {rounds} round"
             f"{'s' if rounds > 1 else ''} of {k}** (model trained with K = "
             f"{record['trained_query_batch']}): " + _header(record), "",
             f"| Policy | k | {metric} |" + (" distinct classes | all found |"
                                            if classification else ""),
             "| --- | ---: | ---: |" + (" ---: | ---: |" if classification else "")]
    for row in record["rows"]:
        value = (_pct(row["metric"], row["ci"]) if classification
                 else _rmse_text(row["metric"], row["ci"]))
        extra = (f" {row['distinct_labels']:.2f} | {100 * row['found_all']:.1f}% |"
                 if classification else "")
        lines.append(f"| {row['label']} | {row['query_batch']} | {value} |{extra}")
    return "\n".join(lines) + "\n"


MARKDOWN = {"table1": table1_markdown, "figure3": figure3_markdown,
            "figure4": figure4_markdown, "batch": batch_markdown,
            "cold_start": cold_start_markdown}


def csv_rows(record):
    """Long-format rows (one per series and label count) of a record."""
    out = []
    figure = record["figure"]

    def add(panel, row, metric, values, cis=None, paper_at=None):
        for t, value in enumerate(values, 1):
            item = {"figure": figure, "panel": panel, "row": row["key"],
                    "label": row["label"], "policy": row["policy"], "model": row["model"],
                    "labels_requested": t, "metric": metric, "value": value,
                    "ci": None if cis is None else cis[t - 1],
                    "paper_value": None, "paper_ci": None}
            if paper_at == t:
                item["paper_value"] = row.get("paper_accuracy")
                item["paper_ci"] = row.get("paper_ci")
            out.append(item)

    if figure == "table1":
        for row in record["rows"]:
            add("table", row, "accuracy_pct", row["curve"], row["curve_ci"],
                paper_at=record["labels"])
    elif figure == "figure3":
        for row in record["left"]["rows"]:
            add("left", row, "accuracy_pct", row["accuracy"], row["ci"])
        for point in record["left"]["points"]:
            out.append({"figure": figure, "panel": "left_points", "row": "balanced",
                        "label": point["label"], "policy": "balanced",
                        "model": record["model"], "labels_requested": point["labels"],
                        "metric": "accuracy_pct", "value": point["accuracy"],
                        "ci": point["ci"], "paper_value": None, "paper_ci": None})
        for row in record["right"]["rows"]:
            add("right", row, "distinct_labels", row["distinct_labels"])
    elif figure in ("figure4", "cold_start"):
        for row in record["rows"]:
            if row["rmse"] is not None:
                add("curve", row, "rmse", row["rmse"], row["ci"])
    elif figure == "batch":
        for row in record["rows"]:
            for t, value, ci in zip(row["labels"], row["curve"], row["curve_ci"]):
                out.append({"figure": figure, "panel": f"k{row['query_batch']}",
                            "row": row["key"], "label": row["label"],
                            "policy": row["policy"], "model": row["model"],
                            "labels_requested": t, "metric": record["metric"],
                            "value": value, "ci": ci, "paper_value": None,
                            "paper_ci": None})
    else:
        raise ValueError(f"unknown figure {figure!r}")
    return out


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def output_name(record):
    """File stem for a record: table1_5way1shot, figure3_20way, figure4."""
    if record["figure"] == "table1":
        return f"table1_{record['ways']}way{record['shots']}shot"
    if record["figure"] == "figure3":
        return f"figure3_{record['ways']}way"
    if record["figure"] == "batch":
        what = f"{record['ways']}way" if record["task"] == "omniglot" else "movielens"
        return f"batch_{what}_{record['rounds']}x{record['query_batch']}"
    prior = (record.get("tuning") or {}).get("baseline_prior", "global")
    name = record["figure"] if prior == "global" else f"{record['figure']}_{prior}"
    return name + ("_baselines" if record.get("baselines_only") else "")


def write_outputs(output_dir, record, name=None):
    """Writes `<name>.json`, `.csv`, `.png` and `.md` into `output_dir`; their paths."""
    tf.io.gfile.makedirs(output_dir)
    name = name or output_name(record)
    paths = {ext: os.path.join(output_dir, f"{name}.{ext}")
             for ext in ("json", "csv", "png", "md")}
    checkpoints.write_json_atomic(paths["json"], _json_ready(record))
    rows = csv_rows(record)
    with open(paths["csv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["figure"])
        writer.writeheader()
        writer.writerows(rows)
    plot_record(record, paths["png"])
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(MARKDOWN[record["figure"]](record))
    return paths
