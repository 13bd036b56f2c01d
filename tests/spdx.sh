#!/bin/sh
# SPDX-License-Identifier: MIT
# Fails, naming the files, if a source file does not open with the licence
# line (after its #! line, if it has one). Run from anywhere.
set -eu
cd "$(dirname "$0")/.."
missing=0
for f in $(find src include tests examples bench scripts cmake .ci \
             -type f \( -name '*.c' -o -name '*.h' -o -name '*.sh' -o -name '*.py' \
                        -o -name '*.in' -o -name 'CMakeLists.txt' -o -path '.ci/*' \
                        -o -path 'scripts/*' \) | sort) CMakeLists.txt Makefile; do
  case "$f" in
    *.c|*.h) want='/* SPDX-License-Identifier: MIT */' ;;
    *) want='# SPDX-License-Identifier: MIT' ;;
  esac
  first=$(head -1 "$f")
  case "$first" in '#!'*) first=$(sed -n 2p "$f") ;; esac
  if [ "$first" != "$want" ]; then
    echo "$f: first line is not: $want"
    missing=1
  fi
done
exit "$missing"
