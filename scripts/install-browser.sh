#!/usr/bin/env bash
# Install Debian's Chromium and its WebDriver for the web page's browser tests (tests/web/).
# Idempotent: does nothing when both are present. Needs root (or sudo) and the distribution's package mirror.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  echo "install-browser: chromium and chromedriver already installed"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver
/usr/bin/chromium --version
/usr/bin/chromedriver --version
