"""Train the active Matching Network on N-way Omniglot episodes (paper 4.1).

    python -m trainers.omniglot --flagfile=trainers/configs/omniglot_5way_1shot.cfg

The Omniglot preset of `trainers.classification`: the same flags, with
`--data_dir` naming a folder of the release zips (the repository ships them in
`data/omniglot` and `data/omniglot-full`) or `tfds[:DIR]`, and rotation
augmentation on by default. Rerunning the same command resumes from the
newest checkpoint in --model_dir.
"""

from absl import app, flags

from trainers import classification
from trainers import common
from trainers.classification import build_setup, setup_from_flags  # noqa: F401
from trainers.classification import main

# `--help` shows the flags a user sets, which live in these two modules.
flags.adopt_module_key_flags(classification)
flags.adopt_module_key_flags(common)

if __name__ == "__main__":
    flags.mark_flags_as_required(["data_dir", "model_dir"])
    app.run(main)
