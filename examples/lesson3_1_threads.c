/* SPDX-License-Identifier: MIT */
/* §3.1 创建子线程 (creating threads): two threads, sing and dance, each
 * printing current_thread(). Their lines interleave as the scheduler
 * decides; main returns at once and, as in Python, the program waits for
 * both (non-daemon) threads. */
#include <stdio.h>
#include <weft.h>

static void *sing(void *arg) {
  (void)arg;
  char repr[WEFT_THREAD_REPR_MAX];
  printf("sing当前执行的线程为： %s\n", weft_thread_repr(weft_current_thread(), repr, sizeof repr));
  for (int i = 0; i < 3; i++) {
    printf("正在唱歌...%d\n", i);
    weft_sleep(1);
  }
  return NULL;
}

static void *dance(void *arg) {
  (void)arg;
  char repr[WEFT_THREAD_REPR_MAX];
  printf("dance当前执行的线程为： %s\n", weft_thread_repr(weft_current_thread(), repr, sizeof repr));
  for (int i = 0; i < 3; i++) {
    printf("正在跳舞...%d\n", i);
    weft_sleep(1);
  }
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  char repr[WEFT_THREAD_REPR_MAX];
  printf("当前执行的线程为： %s\n", weft_thread_repr(weft_current_thread(), repr, sizeof repr));
  weft_thread sing_thread = weft_thread_new(sing);
  weft_thread dance_thread = weft_thread_new(dance);
  weft_thread_start(sing_thread);
  weft_thread_start(dance_thread);
  return 0;
}
