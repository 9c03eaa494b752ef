#!/usr/bin/env bash
# Debian's Chromium and its WebDriver for the console's browser tests (tests/test_console_browser.py).
# Installed from the distribution's packages when missing: nothing downloads a browser of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  SUDO=sudo
  command -v sudo >/dev/null 2>&1 || {
    echo "chromium and chromium-driver are missing: install them as root (apt-get install chromium chromium-driver)" >&2
    exit 1
  }
else
  SUDO=
fi
echo "installing Debian's chromium and chromium-driver for the console's browser tests" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
