/* SPDX-License-Identifier: MIT */
/* §3.4 线程之间共享全局变量 (threads share globals): one thread appends
 * 0..4 to a global list; after join, another thread reads the same list. */
#include <stdio.h>
#include <weft.h>

static int global_list[5];
static int global_len;

static void print_list(const char *who) {
  printf("%s[", who);
  for (int i = 0; i < global_len; i++) printf(i ? ", %d" : "%d", global_list[i]);
  printf("]\n");
}

static void *add_data(void *arg) {
  (void)arg;
  char repr[WEFT_THREAD_REPR_MAX];
  printf("追加的线程： %s\n", weft_thread_repr(weft_current_thread(), repr, sizeof repr));
  for (int i = 0; i < 5; i++) global_list[global_len++] = i;
  print_list("追加的线程： ");
  return NULL;
}

static void *read_data(void *arg) {
  (void)arg;
  char repr[WEFT_THREAD_REPR_MAX];
  printf("读取的线程： %s\n", weft_thread_repr(weft_current_thread(), repr, sizeof repr));
  print_list("读取的线程： ");
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_thread add_thread = weft_thread_new(add_data);
  weft_thread read_thread = weft_thread_new(read_data);
  weft_thread_start(add_thread);
  weft_thread_join(add_thread, WEFT_FOREVER, NULL); /* 线程等待: the reader starts after */
  weft_thread_start(read_thread);
  return 0;
}
