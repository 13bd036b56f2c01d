/* SPDX-License-Identifier: MIT */
/* §3.7 死锁 (deadlock): each thread holds one lock and waits for the
 * other, and the program stops responding. weft sees it coming: in error
 * mode (as with WEFT_DEADLOCK=error) the acquire that would close the cycle
 * returns WEFT_EDEADLK with a report. That thread then waits for the lock
 * at most 2 seconds; meanwhile the main thread, seeing neither finish,
 * prints weft_dump(): both threads waiting, on which lock, from which line,
 * holding which, and the cycle. Then the bounded wait runs out, that thread
 * backs off, and both finish instead of hanging. */
#include <stdio.h>
#include <weft.h>

static weft_lock lock_a = WEFT_LOCK_INIT_NAMED("锁A");
static weft_lock lock_b = WEFT_LOCK_INIT_NAMED("锁B");
static weft_barrier both_hold_one = WEFT_BARRIER_INIT(2);

struct plan {
  const char *who;
  weft_lock *first, *second;
};

static void *worker(void *arg) {
  const struct plan *p = arg;
  for (;;) {
    weft_lock_acquire(p->first, WEFT_FOREVER);
    printf("%s 拿到 %s，想要 %s\n", p->who, p->first->name, p->second->name);
    weft_barrier_wait(&both_hold_one, 5); /* both hold one lock now: the classic deadlock */
    if (weft_lock_acquire(p->second, WEFT_FOREVER) == 0) break;
    printf("%s: 会死锁 (WEFT_EDEADLK)，最多再等 2 秒\n", p->who);
    if (weft_lock_acquire(p->second, 2) == 0) break; /* a wait that ends by itself */
    printf("%s: 2 秒内没拿到 %s，先释放 %s 再重试\n", p->who, p->second->name, p->first->name);
    weft_lock_release(p->first);
    weft_barrier_abort(&both_hold_one); /* the retry must not wait for a partner */
    weft_sleep(0.05);                   /* back off: let the other thread through */
  }
  printf("%s 完成\n", p->who);
  weft_lock_release(p->second);
  weft_lock_release(p->first);
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR);
  struct plan one = {"线程1", &lock_a, &lock_b}, two = {"线程2", &lock_b, &lock_a};
  weft_thread t1 = weft_thread_new(worker, .arg = &one, .name = "线程1");
  weft_thread t2 = weft_thread_new(worker, .arg = &two, .name = "线程2");
  weft_thread_start(t1);
  weft_thread_start(t2);
  if (weft_thread_join(t1, 0.5, NULL) == WEFT_ETIMEDOUT) {
    printf("主线程: 0.5 秒了还没完成，看看每个线程在等什么:\n");
    weft_dump(); /* to stderr; WEFT_DUMP_SIGNAL=1 would print it on Ctrl-\ too */
  }
  weft_thread_join(t1, WEFT_FOREVER, NULL);
  weft_thread_join(t2, WEFT_FOREVER, NULL);
  printf("两个线程都完成了，没有卡死\n");
  return 0;
}
