/* SPDX-License-Identifier: MIT */
/* §2.1 创建子进程 (creating child processes): two child processes, one
 * dancing and one singing. Main returns right after starting them; like
 * Python, weft then waits for both non-daemon children before the program
 * ends. */
#include <stdio.h>
#include <weft.h>

static int dance(void *arg) {
  (void)arg;
  for (int i = 0; i < 5; i++) {
    printf("跳舞中...\n");
    weft_sleep(0.2);
  }
  return 0;
}

static int sing(void *arg) {
  (void)arg;
  for (int i = 0; i < 5; i++) {
    printf("唱歌中...\n");
    weft_sleep(0.2);
  }
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* lines interleave as they happen, even through a pipe */
  weft_process dance_process = weft_process_new(dance, .name = "myprocess1");
  weft_process sing_process = weft_process_new(sing);
  weft_process_start(dance_process);
  weft_process_start(sing_process);
  return 0;
}
