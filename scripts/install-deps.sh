#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what the tests need when it is missing: Debian's Check test
# framework (and pkg-config, used by the install test). Needs root for apt-get.
set -eu
missing=""
[ -f /usr/include/check.h ] || missing="$missing check"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "make test needs the Debian packages:$missing" >&2
  echo "install them as root:  apt-get install -y$missing" >&2
  exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || { echo "apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null \
  || { echo "apt-get install$missing failed" >&2; exit 1; }
