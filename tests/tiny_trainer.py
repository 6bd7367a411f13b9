"""The real training loop on the tiny synthetic task, as a process of its own.

    python -m tests.tiny_trainer --model_dir=DIR [any trainers.common flag]

Tests that kill or signal a training process run this: it goes through
`trainers.common.run_training` exactly as `trainers.omniglot` does, but on
`tests.fakes` episodes and model, so a whole run takes seconds.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import active_learning  # noqa: F401,E402
from active_learning.run_config import ClassEpisodeConfig  # noqa: E402
from tests import fakes  # noqa: E402
from trainers import common  # noqa: E402

FLAGS = flags.FLAGS


def main(argv):
    del argv
    common.quiet_logs()
    # The same weights and episodes on every start, as a rerun of a trainer
    # gets from its flags; a resumed run then replaces them from the checkpoint.
    strategy = common.make_strategy(FLAGS.strategy)
    keras.utils.set_random_seed(1)
    tf.config.experimental.enable_op_determinism()
    with strategy.scope():
        model = fakes.tiny_model()
    setup = common.TaskSetup(
        name="omniglot", model=model, train_sampler=fakes.tiny_sampler(seed=3),
        make_eval_sampler=lambda: fakes.tiny_sampler(seed=99),
        eval_policies=["greedy", "random"], num_steps=2, higher_is_better=True,
        metric_name="accuracy")
    episodes = ClassEpisodeConfig(ways=[3], eval_ways=3, shots=1, items_per_class=2, budget=2)
    common.run_training(setup, common.run_config_from_flags("omniglot", episodes, None),
                        strategy)


if __name__ == "__main__":
    flags.mark_flags_as_required(["model_dir"])
    app.run(main)
