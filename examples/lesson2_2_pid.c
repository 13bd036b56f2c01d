/* SPDX-License-Identifier: MIT */
/* §2.2 获取进程编号和杀死子进程 (process ids, killing a child): process ids,
 * current_process(), and a child that kills itself with signal 9 (the parent
 * then reads exit code -9). */
#define _POSIX_C_SOURCE 200809L /* kill() under -std=c11 */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
#include <weft.h>

static int dance(void *arg) {
  (void)arg;
  char repr[WEFT_PROCESS_REPR_MAX];
  printf("dance: %d\n", (int)getpid());
  printf("dance: %s\n", weft_process_repr(weft_current_process(), repr, sizeof repr));
  for (int i = 0; i < 5; i++) {
    printf("跳舞中...%d\n", i);
    kill(getpid(), SIGKILL); /* os.kill(os.getpid(), 9) */
  }
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  char repr[WEFT_PROCESS_REPR_MAX];
  printf("main: %d\n", (int)getpid());
  printf("main: %s\n", weft_process_repr(weft_current_process(), repr, sizeof repr));
  weft_process dance_process = weft_process_new(dance, .name = "myprocess1");
  weft_process_start(dance_process);
  weft_process_join(dance_process, WEFT_FOREVER);
  int exitcode = 0;
  weft_process_exitcode(dance_process, &exitcode);
  printf("main: myprocess1 exitcode = %d\n", exitcode);
  printf("main: %s\n", weft_process_repr(dance_process, repr, sizeof repr));
  weft_process_close(dance_process);
  return 0;
}
