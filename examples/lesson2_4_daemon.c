/* SPDX-License-Identifier: MIT */
/* §2.4 主进程退出子进程直接销毁 (the main process exits, its daemon child
 * goes with it): a daemon child is destroyed when the main process exits, so no
 * line of it follows "over". weft sends it SIGTERM at exit (SIGKILL if it
 * ignores that for a second), and kills it too if the parent itself is
 * killed. The other way: weft_process_terminate(sub_process) before exit. */
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

static int task(void *arg) {
  (void)arg;
  for (int i = 0; i < 10; i++) {
    printf("任务执行中...\n");
    weft_sleep(0.2);
  }
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_process sub_process = weft_process_new(task, .daemon = true);
  weft_process_start(sub_process);
  weft_sleep(0.5);
  printf("over\n");
  exit(0);
}
