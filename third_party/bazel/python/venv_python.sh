#!/bin/sh
# The interpreter of every Bazel py_test/py_binary: the repository's
# .venv/bin/python, where `pip install -e '.[test]'` put TensorFlow and the
# rest (README "Bazel"). Bazel runs this file through a symlink in the
# runfiles tree; its real path is in the checkout, three folders below the root.
repo=$(dirname "$(readlink -f "$0")")/../../..
python="$repo/.venv/bin/python"
if [ ! -x "$python" ]; then
  echo "$(readlink -f "$repo")/.venv/bin/python is missing: create it with" \
       "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
  exit 2
fi
exec "$python" "$@"
