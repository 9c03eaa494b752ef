#!/usr/bin/env bash
# Install Debian packages for the set-up: `scripts/apt_install.sh "what they are for" PACKAGE...`.
# As root (CI on a fresh machine) directly, else through `sudo -n`, which fails with a message
# rather than waiting for a password nobody can type (CI has no terminal).
set -euo pipefail
why="$1"
shift
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$* missing ($why) and this is not a Debian-like system: install the equivalent packages" >&2
  exit 1
fi
if [[ "$(id -u)" != 0 ]]; then
  SUDO="sudo -n"
  command -v sudo >/dev/null 2>&1 || {
    echo "$* missing ($why): install them as root (apt-get install $*)" >&2
    exit 1
  }
else
  SUDO=
fi
echo "installing Debian's $* ($why)" >&2
# Through env: sudo drops DEBIAN_FRONTEND from the environment it is given (env_reset).
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
