/* SPDX-License-Identifier: MIT */
/* The tour: runs every lesson, one after the other, each under its section
 * number and title in the tutorial the lessons follow (a Chinese tutorial on
 * concurrency and parallelism), and fails if any lesson fails. The lessons
 * are the programs beside this one; read their sources in examples/. */
#define _GNU_SOURCE
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const struct {
  const char *program;
  const char *heading;
  bool mpi; /* run a second time on MPI ranks, when Open MPI is installed */
} lessons[] = {
    {"lesson2_1_processes", "§2.1 创建子进程 — two child processes dance and sing at the same time", false},
    {"lesson2_2_pid", "§2.2 获取进程编号和杀死子进程 — pids, current_process(), a child kills itself", false},
    {"lesson2_3_args", "§2.3 子进程传参 — passing arguments to a child process", false},
    {"lesson2_4_daemon", "§2.4 主进程退出子进程直接销毁 — a daemon child dies with the main process", false},
    {"lesson3_1_threads", "§3.1 创建子线程 — two threads sing and dance, each printing current_thread()", false},
    {"lesson3_3_daemon_thread", "§3.3 关闭主线程销毁子线程 — a daemon thread dies with the main thread", false},
    {"lesson3_4_shared_globals", "§3.4 线程之间共享全局变量 — threads share globals", false},
    {"lesson3_5_lost_updates", "§3.5 多线程同时对全局变量操作数据发生错误 — lost updates without a lock", false},
    {"lesson3_6_mutex", "§3.6 互斥锁 — a mutex makes the two sums right", false},
    {"lesson3_7_deadlock", "§3.7 死锁 — a deadlock, detected, dumped and backed out of instead of hanging", false},
    {"lesson3_7_deadlock_processes", "§3.7 死锁 — the same deadlock between two processes sharing two locks, reported, dumped and backed out of", false},
    {"lesson4_isolation", "§4 进程之间不共享全局变量 — processes do not share globals", false},
    {"lesson4_start_methods", "§4 进程之间不共享全局变量 — a child started by fork, spawn or the forkserver, from a grown parent", false},
    {"lesson5_ipc", "§4+ 进程间通信 — a queue between two processes, and a shared Value counted right", false},
    {"lesson6_pool", "§4++ 进程池 — a process pool survives a crashing task, and speeds up the rest", false},
    {"lesson7_cluster", "§4+++ 多台机器 — the same pool on local processes, then on 4 MPI ranks", true},
};

/* Runs argv[0] (a path), or under mpiexec on 5 ranks (rank 0 and 4 workers). */
static int run_argv(char **argv) {
  pid_t pid;
  int err = posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ);
  if (err != 0) {
    fprintf(stderr, "tour: cannot run %s: %s\n", argv[0], strerror(err));
    return -1;
  }
  int status;
  while (waitpid(pid, &status, 0) < 0) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int run(const char *dir, const char *program, bool on_mpi) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, program);
  if (!on_mpi) return run_argv((char *[]){path, NULL});
  /* Every rank on this machine: no ssh needed; root must say it may. */
  char *argv[10] = {"mpiexec", "--oversubscribe", "--mca", "plm_rsh_agent", "false", "-n", "5"};
  int n = 7;
  if (geteuid() == 0) argv[n++] = "--allow-run-as-root";
  argv[n++] = path;
  argv[n] = NULL;
  return run_argv(argv);
}

static bool installed(const char *dir, const char *program) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, program);
  return access(path, X_OK) == 0;
}

int main(void) {
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n < 0) {
    perror("tour: /proc/self/exe");
    return 1;
  }
  self[n] = '\0';
  const char *dir = dirname(self);
  int failed = 0;
  for (size_t i = 0; i < sizeof lessons / sizeof lessons[0]; i++) {
    printf("\n==== %s\n     (examples/%s%s.c)\n\n", lessons[i].heading,
           lessons[i].mpi ? "mpi/" : "", lessons[i].program);
    fflush(stdout);
    if (lessons[i].mpi && !installed(dir, lessons[i].program)) {
      printf("(skipped: weft was built without MPI; apt-get install openmpi-bin libopenmpi-dev,\n"
             " then build again)\n");
      continue;
    }
    int rc = run(dir, lessons[i].program, false);
    if (rc == 0 && lessons[i].mpi) {
      printf("\n$ mpiexec -n 5 %s\n", lessons[i].program);
      fflush(stdout);
      rc = run(dir, lessons[i].program, true);
    }
    if (rc != 0) {
      printf("!!!! %s failed with status %d\n", lessons[i].program, rc);
      failed++;
    }
  }
  printf("\n==== tour done: %zu lessons, %d failed\n", sizeof lessons / sizeof lessons[0], failed);
  return failed != 0;
}
