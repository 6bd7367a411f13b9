"""Held-out evaluation of selection policies: anytime curves, the paper's tables.

`python -m trainers.evaluate` is the command line. The package, one job a
module:

- `metrics`: the mean over episodes and its 95% confidence interval.
- `runner`: `evaluate_policy` rolls a policy out on a fixed, seeded stream
  of episodes and gives per-label-count curves; `evaluate_series` runs an
  experiment's series on the same episodes.
- `loading`: `load_evaluation_model`, a trained model directory or an
  exported SavedModel with the run config it was trained with.
- `rebuild`: the run's own data, class split or users, and episode
  samplers, rebuilt from that run config.
- `rows`: the series an experiment measures and the rows of its record.
- `experiments`: Table 1, Figure 3, Figure 4 (Bachman et al., ICML 2017)
  and the batch-query table.
- `rating_baselines`: Figure 4's Regression and Gaussian Process series.
- `cold_start`: the classic cold-start baselines (global mean, bias model,
  latent-factor fold-in) beside the models, statistics over test users.
- `paper`: the paper's published numbers.
- `reports`, `plots`: a record as CSV, JSON, Markdown and PNG.

The names callers use are re-exported here (`evaluation.run_table1`, ...).
"""

from active_learning.evaluation.cold_start import cold_start_markdown, run_cold_start
from active_learning.evaluation.experiments import (BATCH_ROWS, check_classification,
                                                    run_batch_table, run_figure3,
                                                    run_figure4, run_table1)
from active_learning.evaluation.loading import (LoadedModel, is_saved_model,
                                                load_evaluation_model)
from active_learning.evaluation.metrics import Z_95, mean_and_ci
from active_learning.evaluation.paper import (FIGURE4_HEURISTICS,
                                              PAPER_FIGURE4_IMPROVEMENT_PCT, PAPER_TABLE1,
                                              TABLE1_ROWS)
from active_learning.evaluation.plots import plot_record
from active_learning.evaluation.rating_baselines import (BASELINE_PRIORS, DEFAULT_GP_GRID,
                                                         DEFAULT_RIDGE_GRID,
                                                         collect_rating_episodes,
                                                         evaluate_rating_baseline,
                                                         gp_variance_orders,
                                                         measure_baselines, random_orders)
from active_learning.evaluation.rebuild import (ClassEpisodes, MovieLensEpisodes,
                                                class_episodes, episode_seed,
                                                movielens_episodes,
                                                resolve_data_dir)
from active_learning.evaluation.reports import (MARKDOWN, batch_markdown, csv_rows,
                                                figure3_markdown, figure4_markdown,
                                                machine_description, output_name,
                                                table1_markdown, write_outputs)
from active_learning.evaluation.rows import Series
from active_learning.evaluation.runner import (ProgressLog, evaluate_policy,
                                               evaluate_series, make_rollout_fn)
from active_learning.policies import EVAL_POLICY_NAMES, BalancedPolicy, make_eval_policy

__all__ = [
    "BASELINE_PRIORS", "BATCH_ROWS", "BalancedPolicy", "ClassEpisodes", "DEFAULT_GP_GRID",
    "DEFAULT_RIDGE_GRID", "EVAL_POLICY_NAMES", "FIGURE4_HEURISTICS", "LoadedModel",
    "MARKDOWN", "MovieLensEpisodes", "PAPER_FIGURE4_IMPROVEMENT_PCT", "PAPER_TABLE1",
    "ProgressLog", "Series", "TABLE1_ROWS", "Z_95", "batch_markdown", "check_classification",
    "class_episodes", "cold_start_markdown", "collect_rating_episodes", "csv_rows", "episode_seed",
    "evaluate_policy", "evaluate_rating_baseline", "evaluate_series", "figure3_markdown",
    "figure4_markdown", "gp_variance_orders", "is_saved_model", "load_evaluation_model",
    "machine_description", "make_eval_policy", "make_rollout_fn", "mean_and_ci",
    "measure_baselines", "movielens_episodes", "output_name", "plot_record",
    "random_orders", "resolve_data_dir", "run_batch_table", "run_cold_start",
    "run_figure3", "run_figure4", "run_table1", "table1_markdown", "write_outputs",
]
