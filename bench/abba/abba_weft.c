/* SPDX-License-Identifier: MIT */
/* The same program on weft locks with deadlock detection on (warn). */
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

static weft_lock a = WEFT_LOCK_INIT_NAMED("A"), b = WEFT_LOCK_INIT_NAMED("B");
static long iters, counter;

static void *ab(void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    weft_lock_acquire(&a, WEFT_FOREVER);
    weft_lock_acquire(&b, WEFT_FOREVER);
    counter++;
    weft_lock_release(&b);
    weft_lock_release(&a);
  }
  return NULL;
}

static void *ba(void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    weft_lock_acquire(&b, WEFT_FOREVER);
    weft_lock_acquire(&a, WEFT_FOREVER);
    counter++;
    weft_lock_release(&a);
    weft_lock_release(&b);
  }
  return NULL;
}

int main(int argc, char **argv) {
  iters = argc > 1 ? atol(argv[1]) : 100000;
  weft_deadlock_set_mode(WEFT_DEADLOCK_WARN);
  weft_thread t = weft_thread_new(ab);
  weft_thread_start(t);
  weft_thread_join(t, WEFT_FOREVER, NULL);
  weft_thread u = weft_thread_new(ba);
  weft_thread_start(u);
  weft_thread_join(u, WEFT_FOREVER, NULL);
  printf("counter %ld\n", counter);
  return counter == 2 * iters ? 0 : 1;
}
