#!/usr/bin/env bash
# Debian's Chromium and its WebDriver for the console's browser tests (tests/console/test_console_browser.py).
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
exec "$(dirname "$0")/apt_install.sh" "for the console's browser tests" chromium chromium-driver fonts-dejavu-core
