#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what `make test` needs when it is missing, from Debian's packages:
# cmake, the Check test framework (check), pkg-config and a C++ compiler
# (g++), the last two for the install test, and Open MPI (openmpi-bin,
# libopenmpi-dev) for the MPI backend's tests. Needs root for apt-get; run by
# another user it names the packages and the command, and fails.
set -eu
missing=""
command -v cmake >/dev/null 2>&1 || missing="$missing cmake"
[ -f /usr/include/check.h ] || missing="$missing check"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
command -v c++ >/dev/null 2>&1 || missing="$missing g++"
command -v mpicc >/dev/null 2>&1 || missing="$missing libopenmpi-dev"
command -v mpiexec >/dev/null 2>&1 || missing="$missing openmpi-bin"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "make test needs the Debian packages:$missing" >&2
  echo "install them as root, then run make test again:" >&2
  echo "  sudo apt-get install -y$missing" >&2
  exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || { echo "apt-get update failed" >&2; exit 1; }
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null \
  || { echo "apt-get install$missing failed" >&2; exit 1; }
