#!/usr/bin/env bash
# CI: Debian's Chromium (and ChromeDriver) for the app's end-to-end browser test
# (tests/test_app.py drives /usr/bin/chromium with Playwright; no browser download).
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install_browser: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_browser: no apt-get on this machine; the browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "install_browser: $(/usr/bin/chromium --version)"
