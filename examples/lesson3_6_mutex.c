/* SPDX-License-Identifier: MIT */
/* §3.6 互斥锁 (the mutex): the same two threads with a mutex. Each holds the
 * lock for its whole loop, as in the tutorial, so the first prints 1000000
 * and the second 2000000: no update is lost. The tutorial ends with "a lock
 * costs speed"; weft's lock contention profile shows what it cost here:
 * how often each thread took the lock, whether one had to wait for the
 * other, and for how long (docs/lockstat.md). */
#include <stdio.h>
#include <weft.h>

static int g_num;
static weft_lock lock = WEFT_LOCK_INIT_NAMED("lock");

static void *sum_num1(void *arg) {
  (void)arg;
  weft_lock_acquire(&lock, WEFT_FOREVER); /* 上锁 */
  for (int i = 0; i < 1000000; i++) g_num += 1;
  printf("sum1: %d\n", g_num);
  weft_lock_release(&lock); /* 释放锁 */
  return NULL;
}

static void *sum_num2(void *arg) {
  (void)arg;
  weft_lock_acquire(&lock, WEFT_FOREVER);
  for (int i = 0; i < 1000000; i++) g_num += 1;
  printf("sum2: %d\n", g_num);
  weft_lock_release(&lock);
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_lockstat_enable(.quiet = true); /* count every acquire from here on */
  weft_thread first_thread = weft_thread_new(sum_num1);
  weft_thread second_thread = weft_thread_new(sum_num2);
  weft_thread_start(first_thread);
  weft_thread_start(second_thread);
  weft_thread_join(first_thread, WEFT_FOREVER, NULL);
  weft_thread_join(second_thread, WEFT_FOREVER, NULL);
  weft_lockstat_print(); /* the contention table of the two threads, on stderr */
  return 0;
}
