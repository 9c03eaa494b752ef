#!/usr/bin/env bash
# Debian's Chromium and its WebDriver for the console's browser tests (tests/test_console_browser.py).
# Installed from the distribution's packages when missing: nothing downloads a browser of its own.
set -euo pipefail
if command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1 && command -v "${CHROMEDRIVER:-chromedriver}" >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium and chromedriver are missing and this is not a Debian-like system: install both, then" \
    "set CHROMIUM and CHROMEDRIVER to their paths if they are not on PATH as chromium / chromedriver" >&2
  exit 1
fi
if [[ "$(id -u)" != 0 ]]; then
  # -n: fail with a message instead of waiting for a password nobody can type (CI has no terminal).
  SUDO="sudo -n"
  command -v sudo >/dev/null 2>&1 || {
    echo "chromium and chromium-driver are missing: install them as root (apt-get install chromium chromium-driver)" >&2
    exit 1
  }
else
  SUDO=
fi
echo "installing Debian's chromium and chromium-driver for the console's browser tests" >&2
# Through env: sudo drops DEBIAN_FRONTEND from the environment it is given (env_reset).
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-dejavu-core >/dev/null
