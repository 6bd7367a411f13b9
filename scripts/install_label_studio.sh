#!/usr/bin/env bash
# Installs the Label Studio server into its own virtual environment,
# .venv-label-studio/ at the repository root (git-ignored).
#
# The server pins its own Django/numpy/protobuf stack, which would fight
# TensorFlow's in the package's .venv; a separate venv keeps both intact. The
# bridge (export/label_studio.py) talks to the server over HTTP only.
#
#   scripts/install_label_studio.sh            # label-studio 1.23
#   LABEL_STUDIO_VERSION=1.23.0 scripts/install_label_studio.sh
#
# Idempotent: an existing venv with label-studio importable is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LABEL_STUDIO_VENV:-.venv-label-studio}
VERSION=${LABEL_STUDIO_VERSION:-1.23.*}
if [ -x "$VENV/bin/label-studio" ] && "$VENV/bin/python" -c "import label_studio" 2>/dev/null; then
  echo "label-studio already installed in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -qq --disable-pip-version-check "label-studio==$VERSION"
"$VENV/bin/python" -c "import importlib.metadata as m; print(\"label-studio\", m.version(\"label-studio\"), \"in $VENV\")"
