#!/usr/bin/env bash
# Make sure the programs the browser and monitoring tests drive are installed: Chromium (the
# dashboard test) and Prometheus with promtool (the metrics, dashboards and alerts tests).
# Installs them from Debian's packages where it can; otherwise those tests skip and say why.
set -u
wanted=""
command -v chromium >/dev/null || wanted="$wanted chromium"
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || wanted="$wanted prometheus"
[ -z "$wanted" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "not installed:$wanted (install them to run the browser and Prometheus tests)" >&2
  exit 0
fi
echo "installing$wanted from Debian's packages"
export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -q --no-install-recommends $wanted >/dev/null; }
install || { apt-get update -q >/dev/null && install; } || echo "could not install:$wanted" >&2
exit 0
