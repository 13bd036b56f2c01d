/* SPDX-License-Identifier: MIT */
/* §2.3 子进程传参 (arguments for a child process): pass arguments to the
 * child's task (Python's args=(5,)). The child sees the parent's memory as
 * it was at start, so a pointer to any value or struct of the parent works. */
#include <stdio.h>
#include <weft.h>

static int task(void *arg) {
  int count = *(const int *)arg;
  for (int i = 0; i < count; i++) printf("任务执行中..\n");
  printf("任务执行完成\n");
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int count = 5;
  weft_process sub_process = weft_process_new(task, .arg = &count);
  weft_process_start(sub_process);
  return 0;
}
