#!/usr/bin/env bash
# Starts Label Studio on this machine for the active-learning bridge.
#
#   scripts/start_label_studio.sh            # http://localhost:8080
#   LABEL_STUDIO_PORT=8081 scripts/start_label_studio.sh
#
# Everything lives in .label-studio/ (git-ignored): the SQLite database and
# media (data/), and, made on the first start with mode 0600, the API token
# (token) and the password of the user LABEL_STUDIO_USERNAME (password).
# They reach the server through its environment, never its command line, so
# they do not show in `ps`. The bridge reads the same token file:
#   python -m export.label_studio ... --token_file=.label-studio/token
# Legacy tokens are enabled for this organisation because a fixed token can
# then be set before the first start; a personal access token made in the web
# page (Account & Settings) works with the bridge as well.
#
# The server listens on 127.0.0.1 only. The first start creates the database
# (about 75 s on 2 cores); later starts take about 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LABEL_STUDIO_VENV:-.venv-label-studio}
HOME_DIR=${LABEL_STUDIO_HOME:-.label-studio}
PORT=${LABEL_STUDIO_PORT:-8080}
USERNAME=${LABEL_STUDIO_USERNAME:-annotator@localhost}
if [ ! -x "$VENV/bin/label-studio" ]; then
  echo "Label Studio is not installed in $VENV: run scripts/install_label_studio.sh" >&2
  exit 1
fi
mkdir -p "$HOME_DIR/data"
chmod 700 "$HOME_DIR"
umask 077
[ -s "$HOME_DIR/token" ] || python3 -c "import secrets; print(secrets.token_hex(20))" > "$HOME_DIR/token"
[ -s "$HOME_DIR/password" ] || python3 -c "import secrets; print(secrets.token_urlsafe(12))" > "$HOME_DIR/password"
echo "Label Studio on http://localhost:$PORT; log in as $USERNAME with the password in $HOME_DIR/password"
LABEL_STUDIO_BASE_DATA_DIR="$(cd "$HOME_DIR/data" && pwd)" \
LABEL_STUDIO_USERNAME="$USERNAME" \
LABEL_STUDIO_PASSWORD="$(cat "$HOME_DIR/password")" \
LABEL_STUDIO_USER_TOKEN="$(cat "$HOME_DIR/token")" \
LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
  exec "$VENV/bin/label-studio" start --no-browser --internal-host 127.0.0.1 --port "$PORT"
