/* SPDX-License-Identifier: MIT */
/* §4 进程之间不共享全局变量, and how a child starts: a child started by
 * fork is a copy of the parent and sees its globals as they were; one
 * started by spawn is a fresh run of the program, and one started by the
 * forkserver a fork of such a run made once, so both see fresh ones. A
 * fork copies the parent's page tables, so its cost grows with the parent;
 * spawn and forkserver cost the same from a parent of any size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

#define GROWN_MIB 256

static int global_value = 0;

static int show(void *arg) {
  printf("%s 启动的子进程看到的全局变量：%d\n", (const char *)arg, global_value);
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (weft_forkserver_ensure_running() != 0) { /* early, while the program is small and alone */
    printf("forkserver: %s\n", weft_last_error());
    return 1;
  }
  global_value = 100;
  size_t size = (size_t)GROWN_MIB << 20;
  char *grown = malloc(size);
  if (grown == NULL) return 1;
  memset(grown, 1, size); /* touched, so fork has page tables to copy */
  printf("主进程：全局变量 = %d，已占用 %d MiB 内存\n", global_value, GROWN_MIB);
  const char *methods[] = {"fork", "spawn", "forkserver"};
  double took[3];
  for (int i = 0; i < 3; i++) {
    weft_process p = weft_process_new(show, .args = methods[i], .args_size = strlen(methods[i]) + 1,
                                      .start_method = methods[i]);
    double t0 = weft_monotonic();
    if (weft_process_start(p) != 0 || weft_process_join(p, WEFT_FOREVER) != 0) {
      printf("%s: %s\n", methods[i], weft_last_error());
      return 1;
    }
    took[i] = weft_monotonic() - t0;
    weft_process_close(p);
  }
  for (int i = 0; i < 3; i++) printf("%s：启动并等待子进程结束用时 %.1f ms\n", methods[i], took[i] * 1e3);
  free(grown);
  return 0;
}
