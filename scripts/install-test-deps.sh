#!/usr/bin/env bash
# Installs what the browser tests need that pip cannot provide: Debian's Chromium.
# Playwright drives it through executablePath=/usr/bin/chromium; we never run
# `playwright install` (it downloads its own browser, which this network refuses).
# Safe to run repeatedly: it does nothing when Chromium is already there.
set -euo pipefail

CHROMIUM="${IDENTITY_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "install-test-deps: chromium present at $CHROMIUM"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-test-deps: not root and no sudo; install chromium yourself" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version
