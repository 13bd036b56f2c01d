#!/bin/sh
# SPDX-License-Identifier: MIT
# Checks the README's "Install and link" section: runs its install command
# for BUILD_DIR into a scratch prefix, then builds a small consumer each way
# the section shows -- pkg-config with an rpath, with LD_LIBRARY_PATH, against
# the static library, and CMake's find_package(weft) -- plus a C++ program
# that includes weft.h and a C program that calls every option macro with no
# options under -std=c11 -pedantic -Werror. Each line the test runs must
# appear word for word in README.md.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
libdir="<dir>/lib"

fail() { echo "install test: $*" >&2; exit 1; }

readme() { # readme LINE: fails unless README.md holds LINE; prints it for this install
  grep -Fqx -- "$1" "$src/README.md" || fail "README.md lacks the line: $1"
  printf '%s\n' "$1" | sed "s|<dir>/lib|$libdir|g; s|<dir>|$prefix|g"
}

run() { # run LOG COMMAND: runs COMMAND with sh in $tmp, shows its output if it fails
  (cd "$tmp" && sh -c "$2") > "$tmp/$1.log" 2>&1 || { cat "$tmp/$1.log"; fail "failed: $2"; }
}

# The install command, in the source tree, on the build directory given.
install_cmd=$(readme 'cmake -B build && cmake --build build && cmake --install build --prefix <dir>')
install_cmd=$(printf '%s\n' "$install_cmd" | sed "s| build | '$build' |g")
(cd "$src" && sh -c "$install_cmd") > "$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log"; fail "failed: $install_cmd"; }
libdir=$(dirname "$(find "$prefix" -name libweft.a | head -1)")
[ -f "$libdir/libweft.so" ] || fail "no libweft.so installed"
[ -f "$prefix/include/weft.h" ] || fail "no weft.h installed"

cat > "$tmp/app.c" <<'C'
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
expect() { # expect COMMAND...: the consumer must run and say exitcode 7
  "$@" > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "$* failed"; }
  grep -q 'exitcode 7' "$tmp/out" || { cat "$tmp/out"; fail "$* printed the wrong line"; }
}

# pkg-config: with an rpath (no environment needed at run time), without one
# (LD_LIBRARY_PATH), and against the static library.
export PKG_CONFIG_PATH
PKG_CONFIG_PATH=$(readme 'export PKG_CONFIG_PATH=<dir>/lib/pkgconfig' | sed 's|^export PKG_CONFIG_PATH=||')
[ "$PKG_CONFIG_PATH" = "$libdir/pkgconfig" ] || fail "no pkg-config file in $libdir/pkgconfig"
run rpath "$(readme 'cc -std=c11 app.c $(pkg-config --cflags --libs weft) -Wl,-rpath,<dir>/lib -o app')"
expect env -u LD_LIBRARY_PATH "$tmp/app"
run plain "$(readme 'cc -std=c11 app.c $(pkg-config --cflags --libs weft) -o app')"
ld_line=$(readme 'LD_LIBRARY_PATH=<dir>/lib ./app')
(cd "$tmp" && sh -c "$ld_line") > "$tmp/out" 2>&1 || { cat "$tmp/out"; fail "failed: $ld_line"; }
grep -q 'exitcode 7' "$tmp/out" || fail "$ld_line printed the wrong line"
run static "$(readme 'cc -std=c11 app.c $(pkg-config --cflags weft) <dir>/lib/libweft.a -pthread -o app')"
expect env -u LD_LIBRARY_PATH "$tmp/app"

# CMake: find_package(weft) and the imported target; CMake gives the program
# an rpath to the installed library, so it runs as it is.
mkdir "$tmp/cm"
cp "$tmp/app.c" "$tmp/cm/app.c"
{
  echo 'cmake_minimum_required(VERSION 3.25)'
  echo 'project(app C)'
  readme 'find_package(weft REQUIRED)'
  echo 'add_executable(app app.c)'
  readme 'target_link_libraries(app PRIVATE weft::weft)'
} > "$tmp/cm/CMakeLists.txt"
cm_line=$(readme 'cmake -B build -DCMAKE_PREFIX_PATH=<dir> && cmake --build build')
(cd "$tmp/cm" && sh -c "$cm_line") > "$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; fail "failed: $cm_line"; }
expect env -u LD_LIBRARY_PATH "$tmp/cm/build/app"

# C++: the headers declare the API extern "C"; options come through the
# *_opts functions, since the option macros use C's compound literals.
cat > "$tmp/app.cpp" <<'CXX'
#include <cstdio>
#include <weft.h>
static int child(void *) { return 7; }
int main() {
  weft_process_options opts = {};
  opts.size_ = sizeof opts;
  opts.name = "consumer";
  weft_process p = weft_process_new_opts(child, &opts);
  if (weft_process_start(p) != 0 || weft_process_join(p, WEFT_FOREVER) != 0) return 1;
  int code = 0;
  weft_process_exitcode(p, &code);
  std::printf("weft %s from C++ exitcode %d\n", weft_version(), code);
  return code == 7 ? 0 : 1;
}
CXX
# shellcheck disable=SC2046
c++ -std=c++11 -Wall -Wextra -pedantic -Werror -o "$tmp/cxx" "$tmp/app.cpp" \
  $(pkg-config --cflags --libs weft) -Wl,-rpath,"$libdir" > "$tmp/cxx.log" 2>&1 \
  || { cat "$tmp/cxx.log"; fail "the C++ program did not build"; }
expect "$tmp/cxx"

# Every option macro with no options (and a few with some) is ISO C11.
cat > "$tmp/pedantic.c" <<'C'
#include <stddef.h>
#include <weft.h>
static int child(void *arg) { (void)arg; return 0; }
static void *thread_main(void *arg) { return arg; }
static int task(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg; (void)len; (void)result; (void)result_len;
  return 0;
}
static bool no_items(void *item, void *arg) { (void)item; (void)arg; return false; }
void every_macro(void);
void every_macro(void) {
  weft_lock l;
  weft_rlock rl;
  weft_cond c;
  weft_semaphore s;
  weft_barrier b;
  weft_conn *ca, *cb;
  int items[1] = {1}, results[1];
  weft_lock_init(&l);
  weft_lock_init(&l, .name = "l");
  weft_rlock_init(&rl);
  weft_cond_init(&c);
  weft_semaphore_init(&s, 1);
  weft_barrier_init(&b, 1);
  weft_process p = weft_process_new(child);
  weft_process p2 = weft_process_new(child, .name = "p", .daemon = true);
  weft_thread t = weft_thread_new(thread_main);
  weft_queue *q = weft_queue_new();
  weft_mpqueue *mq = weft_mpqueue_new();
  weft_shm *shm = weft_shm_new(64);
  weft_shm *att = weft_shm_attach("/weft-none");
  weft_value *v = weft_value_new("i");
  weft_value *a = weft_array_new("i", 4);
  int pr = weft_pipe(&ca, &cb);
  weft_pool tp = weft_thread_pool_new();
  weft_pool pp = weft_process_pool_new();
  weft_future f = weft_pool_apply_async(pp, task, NULL, 0);
  int mr = weft_pool_map(pp, task, items, sizeof items[0], 1, results, sizeof results[0]);
  weft_imap *it = weft_pool_imap(pp, task, no_items, NULL, sizeof(int), sizeof(int));
  weft_imap *iu = weft_pool_imap_unordered(pp, task, no_items, NULL, sizeof(int), sizeof(int));
  weft_imap *iw =
      weft_pool_imap_unordered(pp, task, no_items, NULL, sizeof(int), sizeof(int), .window = 2);
  weft_lock *nl = weft_lock_new();
  weft_rlock *nrl = weft_rlock_new();
  weft_cond *nc = weft_cond_new();
  weft_semaphore *ns = weft_semaphore_new(1);
  weft_barrier *nb = weft_barrier_new(2);
  weft_process ps = weft_process_new(child, .args = items, .args_size = sizeof items,
                                     .start_method = "spawn");
  (void)p; (void)p2; (void)t; (void)q; (void)mq; (void)shm; (void)att; (void)v; (void)a;
  (void)pr; (void)tp; (void)f; (void)mr; (void)it; (void)iu; (void)iw;
  (void)nl; (void)nrl; (void)nc; (void)ns; (void)nb; (void)ps;
}
int main(void) { return 0; }
C
# shellcheck disable=SC2046
cc -std=c11 -pedantic -Wall -Wextra -Werror -o "$tmp/pedantic" "$tmp/pedantic.c" \
  $(pkg-config --cflags --libs weft) > "$tmp/pedantic.log" 2>&1 \
  || { cat "$tmp/pedantic.log"; fail "the option macros are not warning-free ISO C11"; }

# The MPI backend, when weft was built with MPI: pkg-config and the CMake
# component, each program started as it is (no mpiexec: a local pool).
if [ -f "$libdir/libweft_mpi.so" ]; then
  [ -f "$prefix/include/weft/mpi.h" ] || fail "no weft/mpi.h installed"
  cat > "$tmp/app_mpi.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <weft.h>
#include <weft/mpi.h>
static int seven(const void *arg, size_t len, void *result, size_t *result_len) {
  (void)arg; (void)len;
  memcpy(result, "7", 1);
  *result_len = 1;
  return 0;
}
int main(int argc, char **argv) {
  if (weft_mpi_init(&argc, &argv) != 0) return 1;
  weft_pool pool = weft_process_pool_new(.workers = 1);
  weft_future f = weft_pool_apply_async(pool, seven, NULL, 0);
  const void *data;
  size_t len;
  if (weft_future_result_bytes(f, WEFT_FOREVER, &data, &len) != 0 || len != 1) return 1;
  printf("weft_mpi exitcode %c\n", *(const char *)data);
  return 0;
}
C
  run mpi_pc "$(readme 'cc -std=c11 app_mpi.c $(pkg-config --cflags --libs weft-mpi) -Wl,-rpath,<dir>/lib -o app_mpi')"
  expect env -u LD_LIBRARY_PATH "$tmp/app_mpi"
  mkdir "$tmp/cm_mpi"
  cp "$tmp/app_mpi.c" "$tmp/cm_mpi/app.c"
  {
    echo 'cmake_minimum_required(VERSION 3.25)'
    echo 'project(app C)'
    readme 'find_package(weft REQUIRED COMPONENTS mpi)'
    echo 'add_executable(app app.c)'
    readme 'target_link_libraries(app PRIVATE weft::weft_mpi)'
  } > "$tmp/cm_mpi/CMakeLists.txt"
  (cd "$tmp/cm_mpi" && sh -c "$cm_line") > "$tmp/cm_mpi.log" 2>&1 \
    || { cat "$tmp/cm_mpi.log"; fail "failed: find_package(weft COMPONENTS mpi)"; }
  expect env -u LD_LIBRARY_PATH "$tmp/cm_mpi/build/app"
fi

# Only the API is exported from the shared library.
if nm -D --defined-only "$libdir/libweft.so" | awk '{print $3}' | grep -v '^weft_' | grep -q .; then
  echo "libweft.so exports symbols outside weft_*:"
  nm -D --defined-only "$libdir/libweft.so" | awk '{print $3}' | grep -v '^weft_'
  exit 1
fi
