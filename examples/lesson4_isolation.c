/* SPDX-License-Identifier: MIT */
/* §4 进程之间不共享全局变量 (processes do not share globals): the child
 * appends to a global list in its own copy of memory; the parent's list
 * stays empty. */
#include <stdio.h>
#include <weft.h>

static int global_list[5];
static int global_len;

static void print_list(const char *who) {
  printf("%s[", who);
  for (int i = 0; i < global_len; i++) printf(i ? ", %d" : "%d", global_list[i]);
  printf("]\n");
}

static int add_data(void *arg) {
  (void)arg;
  for (int i = 0; i < 5; i++) global_list[global_len++] = i;
  print_list("追加数据的子进程：");
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_process add_process = weft_process_new(add_data);
  weft_process_start(add_process);
  weft_process_join(add_process, WEFT_FOREVER);
  print_list("主进程读取的全局变量：");
  weft_process_close(add_process);
  return 0;
}
