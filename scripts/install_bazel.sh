#!/usr/bin/env bash
# Installs Bazel as Debian ships it, for `bazel test //tests/...` offline
# (README "Bazel"): bazel-bootstrap (Bazel 4.2.3) and bazel-bootstrap-source,
# whose /usr/src/bazel-bootstrap/mock_repos hold the stand-ins for the
# repositories Bazel would download (.bazelrc points at them).
#
#   scripts/install_bazel.sh      # Debian 12 or another apt-get system with them
#
# Runs apt-get as root, or through sudo. Idempotent: nothing is done when
# both packages are installed. Exits non-zero, its last line saying why, when
# they cannot be installed (no apt-get, no network, not root).
set -euo pipefail
PACKAGES=(bazel-bootstrap bazel-bootstrap-source)
MOCK_REPOS=/usr/src/bazel-bootstrap/mock_repos

installed() {
  command -v bazel >/dev/null 2>&1 && [ -d "$MOCK_REPOS/rules_cc" ] &&
    [ "$(dpkg-query -W -f='${Status}\n' "${PACKAGES[@]}" 2>/dev/null |
         grep -cx 'install ok installed')" = "${#PACKAGES[@]}" ]
}

if installed; then
  echo "Bazel already installed: $(dpkg-query -W -f='${Package} ${Version}  ' "${PACKAGES[@]}")"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get on this machine: install Debian's ${PACKAGES[*]} (4.2.3) another way" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "apt-get needs root and there is no sudo: run this script as root" >&2
    exit 1
  fi
  SUDO=(sudo)
fi
if ! "${SUDO[@]}" apt-get update -qq; then
  echo "apt-get update failed (no network or no Debian mirror?)" >&2
  exit 1
fi
if ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${PACKAGES[@]}" >/dev/null; then
  echo "apt-get install ${PACKAGES[*]} failed (not in this release's archive, or no network?)" >&2
  exit 1
fi
installed || { echo "${PACKAGES[*]} installed, but bazel or $MOCK_REPOS is missing" >&2; exit 1; }
echo "installed: $(dpkg-query -W -f='${Package} ${Version}  ' "${PACKAGES[@]}")"
