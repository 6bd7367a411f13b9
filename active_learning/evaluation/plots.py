"""Plots of evaluation records: one small PNG per table or figure.

`plot_record` draws Table 1's accuracy curves (the paper's number as a
cross), Figure 3's two panels (accuracy and distinct labels found by
labels requested), Figure 4's RMSE curves and a batch-query table's
curves, with 95% CI bands or error bars.
"""

import numpy as np


def _new_figure(width, height):
    # The object API draws off-screen with the Agg canvas and touches no
    # global pyplot state, so it works headless and inside tests. Imported
    # here, not above: the trainers import the evaluation package for its
    # runner and should not pay for matplotlib.
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
    return Figure(figsize=(width, height), dpi=80, layout="constrained")


def _band(axes, x, mean, ci, label, **style):
    mean, ci = np.asarray(mean), np.asarray(ci)
    line, = axes.plot(x, mean, label=label, **style)
    axes.fill_between(x, mean - ci, mean + ci, color=line.get_color(), alpha=0.2, lw=0)
    return line.get_color()


def _integer_ticks(*axes_list):
    from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
    for axes in axes_list:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if axes.get_ylabel() == "distinct labels":
            axes.yaxis.set_major_locator(MaxNLocator(integer=True))


def plot_record(record, path):
    """Draws a record's figure as a small PNG at `path`."""
    figure = record["figure"]
    if figure == "table1":
        fig = _new_figure(5.0, 3.4)
        axes = fig.add_subplot()
        x = np.arange(1, record["labels"] + 1)
        for row in record["rows"]:
            color = _band(axes, x, row["curve"], row["curve_ci"], row["label"], marker=".")
            if row["paper_accuracy"] is not None:
                axes.plot([record["labels"]], [row["paper_accuracy"]], "x", color=color,
                          ms=7, mew=2)
        _integer_ticks(axes)
        axes.set_xlabel("labels requested")
        axes.set_ylabel("held-out accuracy (%)")
        axes.set_title(f"Omniglot {record['ways']}-way {record['shots']}-shot "
                       f"({record['episodes']} {record['split']} episodes; x = paper)",
                       fontsize=9)
        axes.legend(fontsize=7)
    elif figure == "figure3":
        fig = _new_figure(9.0, 3.4)
        left, right = fig.subplots(1, 2)
        ways = record["ways"]
        x = np.arange(1, len(record["labels"]) + 1)
        lo = ways if record["max_labels"] >= ways else 1
        keep = (x >= lo) & (x <= record["max_labels"])
        for row in record["left"]["rows"]:
            # MN random may be the very same run as the random policy: dashed,
            # so that the curve under it stays visible.
            style = {"linestyle": "--"} if row["key"] == "mn_random" else {}
            _band(left, x[keep], np.asarray(row["accuracy"])[keep],
                  np.asarray(row["ci"])[keep], row["label"], **style)
        for point in record["left"]["points"]:
            left.errorbar([point["labels"]], [point["accuracy"]], yerr=[point["ci"]],
                          fmt="o", label=point["label"])
        left.set_xlabel("labels requested")
        left.set_ylabel("accuracy (%)")
        left.set_title(f"{ways}-way, {record['episodes']} {record['split']} episodes",
                       fontsize=9)
        left.legend(fontsize=7)
        keep = x <= record["distinct_max"]
        for row in record["right"]["rows"]:
            right.plot(x[keep], np.asarray(row["distinct_labels"])[keep], label=row["label"])
        right.set_xlabel("labels requested")
        right.set_ylabel("distinct labels")
        right.set_title(f"tested {ways}-way", fontsize=9)
        _integer_ticks(left, right)
        right.legend(fontsize=7)
    elif figure in ("figure4", "cold_start"):
        fig = _new_figure(5.0, 3.6)
        axes = fig.add_subplot()
        x = np.asarray(record["labels"])
        for row in record["rows"]:
            if row["rmse"] is not None:
                axes.errorbar(x, row["rmse"], yerr=row["ci"], label=row["label"],
                              marker=".", capsize=2)
        axes.set_xlabel("number of labels requested")
        _integer_ticks(axes)
        axes.set_ylabel("RMSE (per user, averaged)")
        axes.set_title(f"MovieLens, {record['episodes']} {record['split']} episodes",
                       fontsize=9)
        axes.legend(fontsize=7)
    elif figure == "batch":
        fig = _new_figure(5.0, 3.4)
        axes = fig.add_subplot()
        for row in record["rows"]:
            axes.errorbar(row["labels"], row["curve"], yerr=row["curve_ci"],
                          label=f"{row['label']} (k={row['query_batch']})", marker=".",
                          capsize=2)
        axes.set_xlabel("labels requested")
        _integer_ticks(axes)
        axes.set_ylabel("held-out accuracy (%)" if record["task"] == "omniglot"
                        else "RMSE (per user, averaged)")
        axes.set_title(f"{record['labels']} labels in rounds of {record['query_batch']}, "
                       f"{record['episodes']} {record['split']} episodes", fontsize=9)
        axes.legend(fontsize=6)
    else:
        raise ValueError(f"unknown figure {figure!r}")
    fig.savefig(path)
