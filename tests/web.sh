#!/usr/bin/env bash
# The widget's tests: node --test on the pure drawing module, then the unmodified widget in headless
# Chromium. Installs what is missing on a fresh Debian machine (run as root there: no sudo), and skips
# what is already in place, so a second run only runs the tests.
#   bash tests/web.sh                     # test
#   bash tests/web.sh --write-screenshot  # test, then regenerate web/assets/widget.png
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "tests/web.sh: $* missing; install it (as root: apt-get install -y $*)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v node >/dev/null || apt_install nodejs npm
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM_PATH:-}" ] || apt_install chromium

# npm writes node_modules/.package-lock.json on install: older than package-lock.json = stale.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ ! -d node_modules/playwright-core ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

node --test tests/js/*.test.mjs
node --test tests/browser/*.test.mjs
if [ "${1:-}" = "--write-screenshot" ]; then
  node tests/browser/screenshot.mjs
fi
