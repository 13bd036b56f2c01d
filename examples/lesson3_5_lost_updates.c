/* SPDX-License-Identifier: MIT */
/* §3.5 多线程同时对全局变量操作数据发生错误 (threads updating one global lose
 * updates): two threads each add 1 to a global a million times, without a
 * lock, and updates are lost: both read the same value, both write value+1.
 * The read and the write are separate atomic operations (a relaxed load,
 * then a relaxed store), so the loss is shown without undefined behaviour
 * and ThreadSanitizer stays quiet; a plain `g_num++` would lose updates the
 * same way but is a data race in C. */
#include <stdio.h>
#include <weft.h>

static int g_num;

static void *add_million(void *arg) {
  (void)arg;
  for (int i = 0; i < 1000000; i++) {
    int value = __atomic_load_n(&g_num, __ATOMIC_RELAXED);  /* read g_num */
    __atomic_store_n(&g_num, value + 1, __ATOMIC_RELAXED);  /* write g_num + 1 */
  }
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_thread first_thread = weft_thread_new(add_million);
  weft_thread second_thread = weft_thread_new(add_million);
  weft_thread_start(first_thread);
  weft_thread_start(second_thread);
  weft_thread_join(first_thread, WEFT_FOREVER, NULL);
  weft_thread_join(second_thread, WEFT_FOREVER, NULL);
  int total = __atomic_load_n(&g_num, __ATOMIC_RELAXED);
  printf("g_num: %d (2000000 expected, %d updates lost)\n", total, 2000000 - total);
  return 0;
}
