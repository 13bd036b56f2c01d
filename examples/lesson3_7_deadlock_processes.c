/* SPDX-License-Identifier: MIT */
/* §3.7 死锁 (deadlock), between processes: the same two locks taken in
 * opposite orders, by two processes that share them in shared memory. With
 * Python's multiprocessing.Lock both would hang for good. weft follows the
 * chain of waits through both processes: in error mode (as with
 * WEFT_DEADLOCK=error) the process that began to wait last gets
 * WEFT_EDEADLK with a report, and the other keeps waiting. The refused
 * process then waits for the lock at most 2 seconds, with its watchdog
 * armed: after 0.5 s without progress it prints weft_dump(), which shows
 * its thread waiting, the other process holding that lock and waiting in
 * turn, and the cycle. Then it releases its lock, backs off and retries,
 * and both processes finish instead of hanging. */
#include <stdio.h>
#include <weft.h>

/* Made before the processes start, in shared memory: both see the same. */
static weft_lock *lock_a, *lock_b;
static weft_barrier *both_hold_one;

struct plan {
  const char *who;
  weft_lock **first, **second;
};

static int worker(void *arg) {
  const struct plan *p = arg;
  weft_lock *first = *p->first, *second = *p->second;
  for (int round = 0;; round++) {
    weft_lock_acquire(first, WEFT_FOREVER);
    printf("%s 拿到 %s，想要 %s\n", p->who, first->name, second->name);
    if (round == 0) weft_barrier_wait(both_hold_one, 5); /* both hold one lock now */
    if (weft_lock_acquire(second, WEFT_FOREVER) == 0) break;
    printf("%s: 会死锁 (WEFT_EDEADLK)，最多再等 2 秒\n", p->who);
    weft_dump_later(0.5); /* a dump if no wait of this process ends for 0.5 s */
    int r = weft_lock_acquire(second, 2); /* a wait that ends by itself */
    weft_dump_cancel();
    if (r == 0) break;
    printf("%s: 2 秒内没拿到 %s，先释放 %s 再重试\n", p->who, second->name, first->name);
    weft_lock_release(first);
    weft_sleep(0.05); /* back off: let the other process through */
  }
  printf("%s 完成\n", p->who);
  weft_lock_release(second);
  weft_lock_release(first);
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR);
  lock_a = weft_lock_new(.name = "锁A");
  lock_b = weft_lock_new(.name = "锁B");
  both_hold_one = weft_barrier_new(2);
  if (lock_a == NULL || lock_b == NULL || both_hold_one == NULL) {
    fprintf(stderr, "%s\n", weft_last_error());
    return 1;
  }
  struct plan one = {"进程1", &lock_a, &lock_b}, two = {"进程2", &lock_b, &lock_a};
  weft_process p1 = weft_process_new(worker, .arg = &one, .name = "进程1");
  weft_process p2 = weft_process_new(worker, .arg = &two, .name = "进程2");
  weft_process_start(p1);
  weft_process_start(p2);
  weft_process_join(p1, WEFT_FOREVER);
  weft_process_join(p2, WEFT_FOREVER);
  printf("两个进程都完成了，没有卡死\n");
  return 0;
}
