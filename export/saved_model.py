"""Exports a trained model as a versioned SavedModel for TF Serving.

    python -m export.saved_model --model_dir=DIR --export_dir=BASE \\
        [--version=N] [--checkpoint=best|latest]

writes `BASE/N/` (N defaults to the next free integer), the layout that
`tensorflow_model_server --model_base_path=BASE` watches. The SavedModel holds
the signatures of `export.serving.ServingModule` (begin, select, observe,
predict, metadata); see docs/serving.md.
"""

import os
import re
import shutil
import sys

import active_learning  # noqa: F401  (sets TensorFlow's log level before it loads)
import tensorflow as tf

from active_learning import checkpoints
from active_learning import run_config as run_configs
from active_learning.session import resolve_saved_model
from export.serving import ServingModule

_VERSION_RE = re.compile(r"^\d+$")


def existing_versions(export_dir):
    """Sorted integer versions present under `export_dir`."""
    if not tf.io.gfile.isdir(export_dir):
        return []
    return sorted(int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_dir)
                  if _VERSION_RE.match(name.rstrip("/")))


def next_version(export_dir):
    """The next free version number (1 for an empty base directory)."""
    versions = existing_versions(export_dir) + _reserved_versions(export_dir)
    return max(versions) + 1 if versions else 1


_RESERVATION = re.compile(r"^\.version-(\d+)\.lock$")


def _reserved_versions(export_dir):
    """Versions another export is writing now (or a crashed one claimed)."""
    if not os.path.isdir(export_dir):
        return []
    return [int(m.group(1)) for m in map(_RESERVATION.match, os.listdir(export_dir)) if m]


def _reserve(export_dir, version):
    """Claims `version` for this export: True, or False when it is taken.

    Two exports started at once into one base directory would otherwise both
    pick the same next version and one would die renaming its files into
    place. The claim is a file created with O_EXCL, atomic on a local file
    system; a remote base directory (gs://, ...) is not claimed, and a
    collision there still fails with FileExistsError.
    """
    if "://" in export_dir:
        return not tf.io.gfile.exists(os.path.join(export_dir, str(version)))
    if os.path.exists(os.path.join(export_dir, str(version))):
        return False
    try:
        fd = os.open(os.path.join(export_dir, f".version-{version}.lock"),
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    if os.path.exists(os.path.join(export_dir, str(version))):  # written meanwhile
        _release(export_dir, version)
        return False
    return True


def claim_version(export_dir, version=None):
    """Reserves `version` (default: the next free one) for one export.

    Returns the version; the caller releases it with `_release` once the
    version folder is in place (or the export failed).

    Raises:
      FileExistsError: the given version exists or another export holds it.
      ValueError: the version is not a positive integer.
    """
    tf.io.gfile.makedirs(export_dir)
    if version is None:
        version = next_version(export_dir)
        while not _reserve(export_dir, version):  # another export took it
            version += 1
        return version
    version = int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    _refuse_existing(export_dir, version)
    if not _reserve(export_dir, version):
        raise FileExistsError(
            f"another export is writing {os.path.join(export_dir, str(version))} now (or "
            f"one that crashed left {export_dir}/.version-{version}.lock: delete it if no "
            "export is running); omit --version to use the next free one")
    return version


def _release(export_dir, version):
    if "://" not in export_dir:
        try:
            os.remove(os.path.join(export_dir, f".version-{version}.lock"))
        except FileNotFoundError:
            pass


def latest_export(path):
    """`path` itself if it is a SavedModel, else its highest version folder."""
    return resolve_saved_model(path)


def _refuse_existing(export_dir, version):
    """The version's path; FileExistsError if it exists (never overwritten)."""
    target = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(target):
        raise FileExistsError(
            f"{target} already exists; refusing to overwrite an exported version "
            f"(choose another --version, or omit it to use {next_version(export_dir)})")
    return target


def export_saved_model(model, export_dir, version=None, vocabulary=None,
                       run_config=None, checkpoint=""):
    """Writes `model`'s serving signatures to `export_dir/<version>/`.

    Args:
      model: an `ActiveMatchingNetwork` with its weights.
      export_dir: the base directory (TF Serving's `--model_base_path`).
      version: positive integer; defaults to the next free one.
      vocabulary: ratings models: the movieId of each item index.
      run_config: optional dict, reported by the `metadata` signature.
      checkpoint: optional checkpoint path, reported by `metadata`.

    Returns:
      The path of the written version directory.

    Raises:
      FileExistsError: that version already exists (never overwritten).
    """
    version = claim_version(export_dir, version)
    target = os.path.join(export_dir, str(version))
    try:
        module = ServingModule(model, vocabulary=vocabulary, run_config=run_config,
                               version=version, checkpoint=checkpoint)
        # TF Serving loads any integer-named folder it sees, so the model is
        # written under a non-integer name and renamed into place when complete.
        tmp = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.rmtree(tmp)
        try:
            tf.saved_model.save(module, tmp, signatures=module.signatures())
            tf.io.gfile.rename(tmp, target)
        except tf.errors.AlreadyExistsError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(f"{target} was written by another export meanwhile; "
                                  "export again to use the next free version") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        _release(export_dir, version)
    return target


def export_model_dir(model_dir, export_dir, version=None, which="best"):
    """Loads a trained model directory and exports it; returns the path."""
    if version is not None:
        _refuse_existing(export_dir, version)  # before the (slow) model load
    model, path = checkpoints.load_model(model_dir, which)
    vocabulary = None
    if model.config.task == "regression":
        vocabulary = checkpoints.load_vocabulary(model_dir)
    # The complete run config (an older directory's record filled in, see
    # run_config.load_run_config): what `metadata` reports and evaluation reads.
    run_config = run_configs.load_run_config(model_dir, model.config)
    return export_saved_model(model, export_dir, version=version, vocabulary=vocabulary,
                              run_config=run_config and run_config.to_dict(), checkpoint=path)


def run_command(model_dir, export_dir, version=None, which="best", stdout=None,
                stderr=None):
    """The command's body: exports, reports; returns the exit status (0 or 1)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        path = export_model_dir(model_dir, export_dir, version=version, which=which)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"export failed: {e}", file=stderr, flush=True)
        return 1
    print(f"exported {model_dir} to {path}", file=stdout, flush=True)
    return 0


def main(argv=None):
    """Entry point: `python -m export.saved_model --model_dir=... --export_dir=...`."""
    from absl import app, flags, logging

    flags.DEFINE_string("model_dir", None, "Trained model directory (model_config.json, "
                        "checkpoints/, best/, vocabulary.npz for ratings).")
    flags.DEFINE_string("export_dir", None, "Base directory; the SavedModel goes to "
                        "EXPORT_DIR/VERSION/ (TF Serving's --model_base_path).")
    flags.DEFINE_integer("version", None, "Version number; default: the next free one.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                      "Which checkpoint to export (best falls back to latest).")
    flags.mark_flags_as_required(["model_dir", "export_dir"])
    FLAGS = flags.FLAGS

    def run(unused_argv):
        if not FLAGS["verbosity"].present:
            # SavedModel writing logs routine INFO lines ("Assets written
            # to ..."); the command prints its own one-line summary.
            logging.set_verbosity(logging.WARNING)
            tf.get_logger().setLevel("WARNING")
        return run_command(FLAGS.model_dir, FLAGS.export_dir, version=FLAGS.version,
                           which=FLAGS.checkpoint)

    app.run(run, argv=argv)


if __name__ == "__main__":
    main()
