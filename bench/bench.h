/* SPDX-License-Identifier: MIT */
/* The benchmark harness. Every row times weft and its peers in the same run,
 * repeats each measurement and keeps the median, prints a readable table and
 * one machine-readable line per row:
 *     bench <row> <impl>=<ns per op> ...
 * Impl names: weft; c (raw libc/pthreads); python (CPython's stdlib, skipped
 * with a note when python3 is missing). */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdbool.h>

typedef struct bench_config {
  bool quick; /* a short run: the smoke check of make test */
  int reps;   /* repetitions per impl; the median is reported */
  char **only; /* row names to run (NULL-terminated), or NULL for all */
} bench_config;

/* Whether a row was asked for on the command line. */
bool bench_wanted(const bench_config *cfg, const char *row);

/* A body to time: runs the operation iters times. */
typedef void (*bench_fn)(long iters, void *arg);

/* One sample of an impl: runs the operation iters times and returns
 * nanoseconds per op (< 0 if it could not run). */
typedef double (*bench_sample)(long iters, void *arg);

/* A measured impl of a row: name and nanoseconds per op (< 0: skipped). */
typedef struct bench_result {
  const char *impl;
  double ns;
  char note[160];
} bench_result;

/* Times fn in this process; returns ns per op. */
double bench_time(bench_fn fn, long iters, void *arg);

/* Runs the weft-free C peer program (bench/peers.c) for a row and returns
 * its ns per op: raw libc/pthreads measured in a process that does not even
 * load libweft, as a user's own program would be. */
double bench_c_peer(const char *row, long iters);

/* Takes cfg->reps samples of each impl, interleaved (A B A B ...) so that
 * noise on this shared machine hits all of them alike, and stores each
 * impl's median ns/op in results[i].ns. */
void bench_measure(const bench_config *cfg, long iters, int n, const bench_sample *samples,
                   void *arg, bench_result *results);

/* Runs cmd (a shell command) and takes the number its last line starts with
 * as r->ns; if it fails, r->ns < 0 and a note "<who> skipped: <its last
 * line>". */
void bench_command(const char *cmd, const char *who, bench_result *r);

/* Runs bench/py/<script> with iteration and repetition counts; it prints the
 * median ns/op. Sets r->ns < 0 and a note if python3 or the script fails. */
void bench_python(const char *script, long iters, int reps, bench_result *r);

/* The same with more arguments after the counts (words, not quoted). */
void bench_python_arg(const char *script, const char *arg, long iters, int reps, bench_result *r);

/* Prints a row: the table (with each impl's ratio to the first) and the
 * machine-readable line. */
void bench_report(const char *row, int n, const bench_result *results);

/* Rows, one function per concept file. */
void bench_process_rows(const bench_config *cfg);
void bench_thread_rows(const bench_config *cfg);
void bench_sync_rows(const bench_config *cfg);
void bench_deadlock_rows(const bench_config *cfg);
void bench_queue_rows(const bench_config *cfg);
void bench_shm_rows(const bench_config *cfg);
void bench_pool_rows(const bench_config *cfg);
void bench_mpi_rows(const bench_config *cfg);

#endif
