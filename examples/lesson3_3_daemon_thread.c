/* SPDX-License-Identifier: MIT */
/* §3.3 关闭主线程销毁子线程 (the main thread ends, its daemon thread goes
 * with it): a daemon thread is abandoned when the main thread ends, so no
 * line of it follows "over". (It sleeps 0.7 s where the tutorial sleeps 0.5 s:
 * at 0.5 its third line would race main's "over" at 1 s, and the output would
 * not always be the tutorial's. 0.7 leaves the second line 0.3 s before
 * "over" and the process 0.4 s after it to exit.) */
#include <stdio.h>
#include <weft.h>

static void *show_info(void *arg) {
  (void)arg;
  for (int i = 0; i < 5; i++) {
    printf("test: %d\n", i);
    weft_sleep(0.7);
  }
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_thread sub_thread = weft_thread_new(show_info, .daemon = true);
  weft_thread_start(sub_thread);
  weft_sleep(1);
  printf("over\n");
  return 0;
}
