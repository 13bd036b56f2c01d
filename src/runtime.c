/* Library start-up: registers the fork handlers that keep weft's internal
 * state consistent in a child, and the exit hook that applies Python's exit
 * rules when main returns or exit() is called. */
#include "runtime.h"

#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

WEFT__HOT void weft__runtime_exit_rules(void) { weft__process_exit_rules(); }

static void at_exit(void) { weft__runtime_exit_rules(); }

/* A constructor, so the rules hold even for a program whose first weft call
 * comes from a thread; user handlers registered later run before ours, as
 * they run before multiprocessing's in Python. */
__attribute__((constructor)) static void weft__init(void) {
  weft__process_init();
  pthread_atfork(weft__process_before_fork, weft__process_after_fork_parent,
                 weft__process_after_fork_child);
  atexit(at_exit);
}
