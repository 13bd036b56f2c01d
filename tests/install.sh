#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs weft from BUILD_DIR into a scratch prefix and builds a small
# consumer three ways: pkg-config (shared), pkg-config --static, and CMake's
# find_package(weft). Each consumer must run and print the expected line.
set -eu
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
cat > "$tmp/consumer.c" <<'C'
#include <stdio.h>
#include <weft.h>
static int child(void *arg) { (void)arg; return 7; }
int main(void) {
  weft_process p = weft_process_new(child, .name = "consumer");
  if (weft_process_start(p) != 0 || weft_process_join(p, WEFT_FOREVER) != 0) return 1;
  int code = 0;
  weft_process_exitcode(p, &code);
  printf("weft %s exitcode %d\n", weft_version(), code);
  return code == 7 ? 0 : 1;
}
C
libdir=$(dirname "$(find "$tmp/prefix" -name libweft.a | head -1)")/
export PKG_CONFIG_PATH="${libdir}pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -o "$tmp/shared" "$tmp/consumer.c" $(pkg-config --cflags --libs weft)
LD_LIBRARY_PATH="$libdir" "$tmp/shared" | grep -q 'exitcode 7'
# shellcheck disable=SC2046
cc -std=c11 -o "$tmp/static" "$tmp/consumer.c" $(pkg-config --cflags weft) \
  "${libdir}libweft.a" -pthread
"$tmp/static" | grep -q 'exitcode 7'
mkdir "$tmp/cm"
cat > "$tmp/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.25)
project(consumer C)
find_package(weft REQUIRED)
add_executable(consumer ../consumer.c)
target_link_libraries(consumer PRIVATE weft::weft)
CM
cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" > "$tmp/cm.log" 2>&1 \
  || { cat "$tmp/cm.log"; exit 1; }
cmake --build "$tmp/cm/build" > "$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; exit 1; }
LD_LIBRARY_PATH="$libdir" "$tmp/cm/build/consumer" | grep -q 'exitcode 7'
# Only the API is exported from the shared library.
if nm -D --defined-only "${libdir}libweft.so" | awk '{print $3}' | grep -v '^weft_' | grep -q .; then
  echo "libweft.so exports symbols outside weft_*:"
  nm -D --defined-only "${libdir}libweft.so" | awk '{print $3}' | grep -v '^weft_'
  exit 1
fi
