"""Brings a model directory's checkpoints back to a state a run can resume from.

A run can die at any instruction (`kill -9`, power loss, a full disk): in the
middle of writing a checkpoint's data, between the data and the index file
`checkpoints/checkpoint`, or while TensorFlow's sharded save still holds its
`ckpt-N_temp` folder. Before a trainer opens its CheckpointManagers it calls,
in this order:

  clean_temporary_files(model_dir)   half-written temp folders and JSON temps
  rebuild_index(directory)           `checkpoint` index agrees with the files
  restore_newest(state, directory)   newest checkpoint that restores; corrupt
                                     newer ones are moved to `corrupt/`

so a truncated newest checkpoint falls back to an older one (with a warning
naming the skipped file) instead of failing, and a garbled index is rebuilt
from the checkpoint files present instead of silently restarting at step 0.
"""

import os
import re
import time

from absl import logging
import tensorflow as tf

INDEX = "checkpoint"
CORRUPT = "corrupt"
_CKPT_INDEX = re.compile(r"^(ckpt-(\d+))\.index$")
# TensorFlow's sharded-save folder; write_json_atomic's, save_vocabulary's and
# LatentFactors.save's temporary files.
_TEMP = re.compile(r"^ckpt-\d+_temp|\.tmp-\d+$|\.tmp\.npz$|\.npz\.\w+\.tmp$")


def clean_temporary_files(model_dir, subdirs=("checkpoints", "best")):
    """Removes what an interrupted write left: `ckpt-N_temp*`, `*.tmp-PID`.

    Returns the removed paths. Only names that a finished write never
    leaves behind are touched.
    """
    removed = []
    for folder in [model_dir] + [os.path.join(model_dir, s) for s in subdirs]:
        if not tf.io.gfile.isdir(folder):
            continue
        for name in tf.io.gfile.listdir(folder):
            name = name.rstrip("/")
            if _TEMP.search(name) or (folder != model_dir and name.startswith(f"{INDEX}.tmp")):
                path = os.path.join(folder, name)
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                else:
                    tf.io.gfile.remove(path)
                removed.append(path)
    if removed:
        logging.info("removed files of an interrupted write: %s", ", ".join(removed))
    return removed


def checkpoints_present(directory):
    """Checkpoint prefixes with an index and data file on disk, oldest first."""
    if not tf.io.gfile.isdir(directory):
        return []
    names = {n.rstrip("/") for n in tf.io.gfile.listdir(directory)}
    found = []
    for name in names:
        match = _CKPT_INDEX.match(name)
        if match and any(n.startswith(match.group(1) + ".data-") for n in names):
            found.append((int(match.group(2)), os.path.join(directory, match.group(1))))
    return [path for _, path in sorted(found)]


def _write_index(directory, paths):
    lines = [f'model_checkpoint_path: "{os.path.basename(paths[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in paths]
    target = os.path.join(directory, INDEX)
    tmp = f"{target}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(tmp, target, overwrite=True)


def _listed(directory):
    """Paths the index names, or None when it is missing or unreadable."""
    path = os.path.join(directory, INDEX)
    if not tf.io.gfile.exists(path):
        return None
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (ValueError, tf.errors.OpError):
        state = None
    if state is None:
        logging.warning("%s is unreadable; rebuilding it from the checkpoint files present",
                        path)
        return None
    return list(state.all_model_checkpoint_paths)


def rebuild_index(directory):
    """Makes `directory/checkpoint` name exactly the checkpoints on disk.

    The index goes stale when a run dies between writing a checkpoint and
    recording it, when a person deletes a bad `ckpt-N.*`, or when the index
    itself is damaged. Returns the checkpoint prefixes, oldest first.
    """
    present = checkpoints_present(directory)
    listed = _listed(directory)
    if listed is not None and [os.path.basename(p) for p in listed] == \
            [os.path.basename(p) for p in present]:
        return present
    if not present:
        if listed is not None or tf.io.gfile.exists(os.path.join(directory, INDEX)):
            logging.warning("%s names checkpoints that are gone; removing it",
                            os.path.join(directory, INDEX))
            tf.io.gfile.remove(os.path.join(directory, INDEX))
        return present
    if listed is not None:
        logging.warning("%s listed %s but the files present are %s; rebuilt from the files",
                        os.path.join(directory, INDEX),
                        [os.path.basename(p) for p in listed],
                        [os.path.basename(p) for p in present])
    _write_index(directory, present)
    return present


def _set_aside(prefix):
    """Moves the files of checkpoint `prefix` into `corrupt/` beside it."""
    directory, stem = os.path.split(prefix)
    target = os.path.join(directory, CORRUPT, time.strftime("%Y%m%d-%H%M%S"))
    tf.io.gfile.makedirs(target)
    for name in tf.io.gfile.listdir(directory):
        if name.startswith(stem + "."):
            tf.io.gfile.rename(os.path.join(directory, name), os.path.join(target, name),
                               overwrite=True)
    return target


def restore_newest(state, directory):
    """Restores `state` from the newest checkpoint in `directory` that loads.

    Checkpoints that fail to restore (truncated or corrupted files) are
    skipped with a warning naming them and moved to `directory/corrupt/`, so
    that the run continues from the newest good one and later saves do not
    collide with them. Returns the restored path, or None when `directory`
    holds no checkpoint.

    Raises:
      SystemExit: checkpoints exist but none restores.
    """
    skipped = []
    for path in reversed(rebuild_index(directory)):
        try:
            state.restore(path).assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001  (any read error means: not usable)
            moved = _set_aside(path)
            logging.warning("skipping checkpoint %s: it does not restore (%s: %s); its files "
                            "were moved to %s. Falling back to an older checkpoint.",
                            path, type(e).__name__, str(e).splitlines()[0][:300], moved)
            skipped.append(f"{path} ({type(e).__name__})")
            continue
        if skipped:
            rebuild_index(directory)
        return path
    if skipped:
        raise SystemExit(
            f"no checkpoint in {directory} restores: {', '.join(skipped)} (moved to "
            f"{os.path.join(directory, CORRUPT)}). They are corrupt or were written by "
            "another model; use a new --model_dir, or --init_from a directory with good "
            "weights.")
    return None
