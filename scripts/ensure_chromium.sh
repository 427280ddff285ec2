#!/usr/bin/env bash
# Headless Chromium for the report page test: install Debian's package when missing and we are allowed to.
set -u
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the report test..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will fail under CI and skip elsewhere"
else
  echo "note: chromium not found; install it (e.g. apt-get install chromium) to run the browser test"
fi
exit 0
