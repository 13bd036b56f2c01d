/* SPDX-License-Identifier: MIT */
/* The dump's watchdog (weft_dump_later): a plain pthread, unknown to the
 * thread registry, that sums the records' counts of waits ended (dump.c):
 * while some thread waits and the sum does not move for the time given, it
 * dumps once, and again only after progress resumed and stopped again. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dump.h"
#include "internal.h"
#include "os/os.h"
#include "weft/dump.h"

/* The watchdog looks this often, as a fraction of its time, within bounds. */
#define WATCH_TICKS 10
#define WATCH_TICK_MIN_NS (10 * 1000 * 1000)
#define WATCH_TICK_MAX_NS (250 * 1000 * 1000)

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t watch_cv;
static bool watch_started;
static int64_t watch_after; /* ns without progress; 0: off */
static uint64_t watch_gen;  /* changed by every later or cancel */

static void *watch(void *unused) {
  (void)unused;
  pthread_mutex_lock(&watch_mu);
  uint64_t gen = watch_gen - 1, last = 0;
  int64_t quiet_since = 0;
  bool fired = false;
  for (;;) {
    if (watch_after == 0) {
      pthread_cond_wait(&watch_cv, &watch_mu);
      continue;
    }
    bool waiting;
    int64_t now = weft__os_now_ns();
    if (gen != watch_gen) { /* armed anew */
      gen = watch_gen;
      last = weft__dump_progress(&waiting);
      quiet_since = now;
      fired = false;
    }
    int64_t tick = watch_after / WATCH_TICKS;
    if (tick < WATCH_TICK_MIN_NS) tick = WATCH_TICK_MIN_NS;
    if (tick > WATCH_TICK_MAX_NS) tick = WATCH_TICK_MAX_NS;
    int64_t until = now + tick;
    struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
    pthread_cond_clockwait(&watch_cv, &watch_mu, CLOCK_MONOTONIC, &ts);
    if (watch_after == 0 || gen != watch_gen) continue;
    uint64_t sum = weft__dump_progress(&waiting);
    now = weft__os_now_ns();
    if (sum != last || !waiting) {
      last = sum;
      quiet_since = now;
      fired = false;
    } else if (!fired && now - quiet_since >= watch_after) {
      fired = true;
      char reason[64], *p = reason;
      const char *head = " (no weft wait ended for ";
      memcpy(p, head, strlen(head));
      p += strlen(head);
      int64_t ms = (now - quiet_since) / 1000000;
      p += snprintf(p, sizeof reason - (size_t)(p - reason) - 1, "%lld.%03lld s)",
                    (long long)(ms / 1000), (long long)(ms % 1000));
      *p = '\0';
      pthread_mutex_unlock(&watch_mu);
      weft__dump_to(2, reason);
      pthread_mutex_lock(&watch_mu);
    }
  }
  return NULL;
}

/* watch_mu held. */
static int start_watch_locked(void) {
  if (watch_started) return 0;
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&watch_cv, &attr);
  pthread_condattr_destroy(&attr);
  pthread_attr_t tattr;
  pthread_attr_init(&tattr);
  pthread_attr_setdetachstate(&tattr, PTHREAD_CREATE_DETACHED);
  pthread_t t;
  /* The watchdog must not take signals meant for the program's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int r = pthread_create(&t, &tattr, watch, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&tattr);
  if (r != 0) return -r;
  watch_started = true;
  return 0;
}

int weft_dump_later(double seconds) {
  if (!(seconds > 0) || weft__waits_forever(seconds))
    return weft__error(WEFT_EINVAL,
                       "weft_dump_later: seconds must be above 0 and at most 1e9, not %g", seconds);
  pthread_mutex_lock(&watch_mu);
  int r = start_watch_locked();
  if (r == 0) {
    watch_after = (int64_t)(seconds * 1e9);
    if (watch_after == 0) watch_after = 1;
    watch_gen++;
    pthread_cond_signal(&watch_cv);
  }
  pthread_mutex_unlock(&watch_mu);
  if (r != 0) return weft__error(r, "weft_dump_later: could not start the watchdog thread");
  return 0;
}

int weft_dump_cancel(void) {
  pthread_mutex_lock(&watch_mu);
  watch_after = 0;
  watch_gen++;
  if (watch_started) pthread_cond_signal(&watch_cv);
  pthread_mutex_unlock(&watch_mu);
  return 0;
}

WEFT__HOT void weft__dump_after_fork_child(void) {
  /* The watchdog thread stayed in the parent, maybe holding its mutex. */
  if (!watch_started) return;
  pthread_mutex_init(&watch_mu, NULL);
  watch_started = false;
  watch_after = 0;
}

void weft__dump_watch_init(void) {
  const char *after = getenv("WEFT_DUMP_AFTER");
  if (after != NULL && after[0] != '\0') {
    char *end;
    double s = strtod(after, &end);
    if (end == after || *end != '\0' || weft_dump_later(s) != 0)
      fprintf(stderr,
              "weft: WEFT_DUMP_AFTER=%s is not a number of seconds above 0; no watchdog\n", after);
  }
}
