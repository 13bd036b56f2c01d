/* SPDX-License-Identifier: MIT */
/* Tests of the timeout rule of weft/common.h, for every public call that
 * takes a timeout: WEFT_FOREVER (and anything above 1e9 s) waits as long as
 * it takes; every other value <= 0, negative ones included, does not wait
 * (the call succeeds if it can at once, else gives its "not yet" result);
 * NaN is WEFT_EINVAL.
 *
 * Each call is described by a struct timed (how to put its object where the
 * call cannot succeed at once, where it can, and how another thread lets a
 * waiting call succeed) and run through check_timed. Helper threads and
 * tasks wait on flags with a bounded timeout (GATE_S), so a bug fails the
 * test instead of hanging it. */
#define _GNU_SOURCE
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define GATE_S 20.0 /* a helper gives up after this: the test has failed by then */
/* A call asked not to wait returns within this (with room for a loaded
 * machine); a wait that wrongly took the timeout for "forever" would not
 * return at all. */
#define QUICK_S (SLOW > 1 ? 2.0 : 0.5)
#define LATE_S 0.05 /* another thread lets a waiting call succeed after this */

static const double no_wait[] = {-1.0, -1e-9, -1e9, -INFINITY, 0.0, -0.0};
static const double forever[] = {WEFT_FOREVER, 2e9};

struct timed {
  const char *name;
  /* The call; where it takes something on success that the next check
   * needs back (a lock), it gives it back. */
  int (*call)(void *ctx, double timeout);
  int ok;      /* its result when it succeeds */
  int not_yet; /* its result when it cannot succeed at once */
  void (*blocked)(void *ctx); /* puts ctx where the call cannot succeed at once */
  void (*ready)(void *ctx);   /* where it can; NULL if no call can succeed without waiting */
  void (*unblock)(void *ctx); /* from another thread, during a wait: lets it succeed */
  void (*after)(void *ctx);   /* after a wait that unblock ended (may be NULL) */
};

struct unblocker {
  const struct timed *t;
  void *ctx;
};

static void *unblocker_main(void *arg) {
  struct unblocker *u = arg;
  nap(LATE_S);
  u->t->unblock(u->ctx);
  return NULL;
}

static void check_timed(const struct timed *t, void *ctx) {
  for (size_t i = 0; i < sizeof no_wait / sizeof no_wait[0]; i++) {
    t->blocked(ctx);
    double t0 = weft_monotonic();
    int rc = t->call(ctx, no_wait[i]);
    double took = weft_monotonic() - t0;
    ck_assert_msg(rc == t->not_yet, "%s(%g) cannot succeed: %d, expected %d (%s)", t->name,
                  no_wait[i], rc, t->not_yet, weft_last_error());
    ck_assert_msg(took < QUICK_S, "%s(%g) waited %.3f s", t->name, no_wait[i], took);
  }
  ck_assert_msg(t->call(ctx, NAN) == WEFT_EINVAL, "%s(NaN) while blocked", t->name);

  if (t->ready != NULL) {
    t->ready(ctx);
    ck_assert_msg(t->call(ctx, NAN) == WEFT_EINVAL, "%s(NaN) while ready", t->name);
    for (size_t i = 0; i < sizeof no_wait / sizeof no_wait[0]; i++) {
      t->ready(ctx);
      double t0 = weft_monotonic();
      int rc = t->call(ctx, no_wait[i]);
      double took = weft_monotonic() - t0;
      ck_assert_msg(rc == t->ok, "%s(%g) can succeed: %d, expected %d (%s)", t->name,
                    no_wait[i], rc, t->ok, weft_last_error());
      ck_assert_msg(took < QUICK_S, "%s(%g) took %.3f s", t->name, no_wait[i], took);
    }
  }

  for (size_t i = 0; i < sizeof forever / sizeof forever[0]; i++) {
    t->blocked(ctx);
    struct unblocker u = {t, ctx};
    pthread_t th = spawn(unblocker_main, &u);
    double t0 = weft_monotonic();
    int rc = t->call(ctx, forever[i]);
    double took = weft_monotonic() - t0;
    join(th);
    if (t->after != NULL) t->after(ctx);
    ck_assert_msg(rc == t->ok, "%s(%g): %d, expected %d (%s)", t->name, forever[i], rc, t->ok,
                  weft_last_error());
    ck_assert_msg(took >= LATE_S * 0.8, "%s(%g) returned after %.3f s, before it could succeed",
                  t->name, forever[i], took);
  }
}

/* ---- a thread that holds a lock until let go ---- */

struct holder {
  int (*take)(void *obj);
  int (*give)(void *obj);
  void *obj;
  int held, let_go, gave;
  bool on;
  pthread_t t;
};

static void *holder_main(void *arg) {
  struct holder *h = arg;
  if (h->take(h->obj) != 0) return NULL;
  st(&h->held, 1);
  wait_ge(&h->let_go, 1, GATE_S);
  st(&h->gave, h->give(h->obj) == 0);
  return NULL;
}

static void hold_on(struct holder *h) {
  if (h->on) return;
  h->held = h->let_go = h->gave = 0;
  h->t = spawn(holder_main, h);
  ck_assert(wait_ge(&h->held, 1, GATE_S));
  h->on = true;
}

static void hold_off(struct holder *h) {
  if (!h->on) return;
  st(&h->let_go, 1);
  join(h->t);
  ck_assert(ld(&h->gave));
  h->on = false;
}

/* ---- Lock, RLock, Condition.acquire ---- */

struct lockx {
  weft_lock lock;
  weft_rlock rlock;
  weft_cond cond;
  struct holder h;
};

static int lock_take(void *o) { return (weft_lock_acquire)(o, GATE_S); }
static int lock_give(void *o) { return weft_lock_release(o); }
static int rlock_take(void *o) { return (weft_rlock_acquire)(o, GATE_S); }
static int rlock_give(void *o) { return weft_rlock_release(o); }
static int cond_take(void *o) { return (weft_cond_acquire)(o, GATE_S); }
static int cond_give(void *o) { return weft_cond_release(o); }

static void held_elsewhere(void *ctx) { hold_on(&((struct lockx *)ctx)->h); }
static void free_now(void *ctx) { hold_off(&((struct lockx *)ctx)->h); }
static void let_go(void *ctx) { st(&((struct lockx *)ctx)->h.let_go, 1); }

static int lock_call(void *ctx, double timeout) {
  struct lockx *x = ctx;
  int rc = weft_lock_acquire(&x->lock, timeout);
  if (rc == 0) ck_assert_int_eq(weft_lock_release(&x->lock), 0);
  return rc;
}

static int rlock_call(void *ctx, double timeout) {
  struct lockx *x = ctx;
  int rc = weft_rlock_acquire(&x->rlock, timeout);
  if (rc == 0) ck_assert_int_eq(weft_rlock_release(&x->rlock), 0);
  return rc;
}

static int cond_acquire_call(void *ctx, double timeout) {
  struct lockx *x = ctx;
  int rc = weft_cond_acquire(&x->cond, timeout);
  if (rc == 0) ck_assert_int_eq(weft_cond_release(&x->cond), 0);
  return rc;
}


START_TEST(lock_rlock_and_condition_acquire) {
  struct lockx x;
  memset(&x, 0, sizeof x);
  ck_assert_int_eq(weft_lock_init(&x.lock), 0);
  ck_assert_int_eq(weft_rlock_init(&x.rlock), 0);
  ck_assert_int_eq(weft_cond_init(&x.cond), 0);
  struct {
    struct timed t;
    int (*take)(void *);
    int (*give)(void *);
    void *obj;
  } kinds[] = {
      {{"weft_lock_acquire", lock_call, 0, WEFT_ETIMEDOUT, held_elsewhere, free_now, let_go,
        free_now},
       lock_take, lock_give, &x.lock},
      {{"weft_rlock_acquire", rlock_call, 0, WEFT_ETIMEDOUT, held_elsewhere, free_now, let_go,
        free_now},
       rlock_take, rlock_give, &x.rlock},
      {{"weft_cond_acquire", cond_acquire_call, 0, WEFT_ETIMEDOUT, held_elsewhere, free_now,
        let_go, free_now},
       cond_take, cond_give, &x.cond},
  };
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    x.h = (struct holder){.take = kinds[k].take, .give = kinds[k].give, .obj = kinds[k].obj};
    check_timed(&kinds[k].t, &x);
    hold_off(&x.h);
  }
  /* An RLock its caller owns is taken again at once, whatever the timeout. */
  ck_assert_int_eq(weft_rlock_acquire(&x.rlock, WEFT_FOREVER), 0);
  for (size_t i = 0; i < sizeof no_wait / sizeof no_wait[0]; i++)
    ck_assert_int_eq(weft_rlock_acquire(&x.rlock, no_wait[i]), 0);
  for (size_t i = 0; i <= sizeof no_wait / sizeof no_wait[0]; i++)
    ck_assert_int_eq(weft_rlock_release(&x.rlock), 0);
}
END_TEST

/* ---- Condition.wait and wait_for ---- */

struct condx {
  weft_lock lock;
  weft_cond cond;
  bool flag; /* under the lock */
};

static void cond_nothing(void *ctx) { (void)ctx; }

static int cond_wait_call(void *ctx, double timeout) {
  return weft_cond_wait(&((struct condx *)ctx)->cond, timeout);
}

/* The waiter holds the lock until it waits, so the notify cannot come
 * before the wait. */
static void cond_notify_one(void *ctx) {
  struct condx *x = ctx;
  if (weft_cond_acquire(&x->cond, GATE_S) != 0) return;
  x->flag = true;
  weft_cond_notify(&x->cond, 1);
  weft_cond_release(&x->cond);
}

static bool flag_set(void *ctx) { return ((struct condx *)ctx)->flag; }

static int cond_wait_for_call(void *ctx, double timeout) {
  return weft_cond_wait_for(&((struct condx *)ctx)->cond, flag_set, ctx, timeout);
}

static void flag_clear(void *ctx) { ((struct condx *)ctx)->flag = false; }
static void flag_raise(void *ctx) { ((struct condx *)ctx)->flag = true; }

START_TEST(condition_wait_and_wait_for) {
  struct condx x = {.lock = WEFT_LOCK_INIT, .flag = false};
  /* wait over the Condition's own RLock, wait_for over a Lock. */
  ck_assert_int_eq(weft_cond_init(&x.cond), 0);
  ck_assert_int_eq(weft_cond_acquire(&x.cond, WEFT_FOREVER), 0);
  /* A wait succeeds only if notified while it waits: there is no "at once". */
  struct timed wait = {"weft_cond_wait", cond_wait_call,  0, WEFT_ETIMEDOUT, cond_nothing, NULL,
                       cond_notify_one,  NULL};
  check_timed(&wait, &x);
  ck_assert_int_eq(weft_cond_release(&x.cond), 0);

  ck_assert_int_eq(weft_cond_init(&x.cond, .lock = &x.lock), 0);
  ck_assert_int_eq(weft_cond_acquire(&x.cond, WEFT_FOREVER), 0);
  struct timed wait_for = {"weft_cond_wait_for", cond_wait_for_call, 1, 0, flag_clear, flag_raise,
                           cond_notify_one,      NULL};
  check_timed(&wait_for, &x);
  ck_assert_int_eq(weft_cond_release(&x.cond), 0);
}
END_TEST

/* ---- Semaphore, Event ---- */

static int sem_call(void *ctx, double timeout) { return weft_semaphore_acquire(ctx, timeout); }
static void sem_drain(void *ctx) {
  while (weft_semaphore_acquire(ctx, 0) == 0) {
  }
}
static void sem_give(void *ctx) { weft_semaphore_release(ctx, 1); }

static int event_call(void *ctx, double timeout) { return weft_event_wait(ctx, timeout); }
static void event_clear(void *ctx) { weft_event_clear(ctx); }
static void event_set(void *ctx) { weft_event_set(ctx); }

START_TEST(semaphore_and_event) {
  weft_semaphore s;
  ck_assert_int_eq(weft_semaphore_init(&s, 0), 0);
  struct timed sem = {"weft_semaphore_acquire", sem_call, 0,       WEFT_ETIMEDOUT, sem_drain,
                      sem_give,                 sem_give, NULL};
  check_timed(&sem, &s);
  weft_semaphore b;
  ck_assert_int_eq(weft_semaphore_init(&b, 1, .bounded = true), 0);
  sem.name = "weft_semaphore_acquire (bounded)";
  check_timed(&sem, &b);

  weft_event e = WEFT_EVENT_INIT;
  struct timed ev = {"weft_event_wait", event_call, 0,    WEFT_ETIMEDOUT, event_clear, event_set,
                     event_set,         NULL};
  check_timed(&ev, &e);
}
END_TEST

/* ---- Barrier ---- */

struct barx {
  weft_barrier b;
  pthread_t partner;
  bool partner_on;
  int partner_rc;
};

static void *partner_main(void *arg) {
  struct barx *x = arg;
  x->partner_rc = weft_barrier_wait(&x->b, GATE_S);
  return NULL;
}

/* Empty and whole: the caller would be the first of two. */
static void bar_empty(void *ctx) {
  struct barx *x = ctx;
  ck_assert_int_eq(weft_barrier_reset(&x->b), 0); /* a partner left waiting gets EBROKEN */
  if (x->partner_on) join(x->partner);
  x->partner_on = false;
  ck_assert(!weft_barrier_broken(&x->b));
}

/* The other party is waiting: the caller is the last to arrive. */
static void bar_partner_waits(void *ctx) {
  struct barx *x = ctx;
  bar_empty(x);
  x->partner = spawn(partner_main, x);
  x->partner_on = true;
  double end = test_now() + GATE_S;
  while (weft_barrier_n_waiting(&x->b) != 1 && test_now() < end) nap_ms(1);
  ck_assert_int_eq(weft_barrier_n_waiting(&x->b), 1);
}

static int bar_call(void *ctx, double timeout) {
  struct barx *x = ctx;
  int rc = weft_barrier_wait(&x->b, timeout);
  if (rc >= 0 && x->partner_on) {
    join(x->partner);
    x->partner_on = false;
    ck_assert_int_eq(rc + x->partner_rc, 1); /* indexes 0 and 1 */
  }
  return rc >= 0 ? 0 : rc;
}

static void bar_arrive(void *ctx) { weft_barrier_wait(&((struct barx *)ctx)->b, GATE_S); }

START_TEST(barrier_wait) {
  /* As in Python, a timeout breaks the barrier. */
  struct timed bar = {"weft_barrier_wait", bar_call,   0,   WEFT_EBROKEN, bar_empty,
                      bar_partner_waits,   bar_arrive, NULL};
  /* A long default, which no timeout <= 0 may fall back on, and one
   * shorter than LATE_S, which WEFT_FOREVER and 2e9 must not fall back on. */
  const double defaults[] = {GATE_S, 0.02};
  for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
    struct barx x = {.partner_on = false};
    ck_assert_int_eq(weft_barrier_init(&x.b, 2, .timeout = defaults[i]), 0);
    check_timed(&bar, &x);
    bar_empty(&x);
  }
  /* WEFT_DEFAULT does take the default. */
  struct barx x = {.partner_on = false};
  ck_assert_int_eq(weft_barrier_init(&x.b, 2, .timeout = 0.02), 0);
  double t0 = weft_monotonic();
  ck_assert_int_eq(weft_barrier_wait(&x.b, WEFT_DEFAULT), WEFT_EBROKEN);
  ck_assert_double_ge(weft_monotonic() - t0, 0.015);
}
END_TEST

/* ---- thread queues ---- */

static int q_get_call(void *ctx, double timeout) {
  void *item;
  return weft_queue_get(ctx, &item, timeout);
}
static int q_put_call(void *ctx, double timeout) { return weft_queue_put(ctx, NULL, timeout); }
static void q_drain(void *ctx) {
  void *item;
  while (weft_queue_get(ctx, &item, 0) == 0) {
  }
}
static void q_fill(void *ctx) {
  while (weft_queue_put(ctx, NULL, 0) == 0) {
  }
}
static void q_put_one(void *ctx) { ck_assert_int_eq(weft_queue_put(ctx, NULL, 0), 0); }
static void q_take_one(void *ctx) {
  void *item;
  weft_queue_get(ctx, &item, GATE_S);
}

/* join: one item put and not yet done, or none. */
struct joinq {
  weft_queue *q;
  weft_mpqueue *mq;
  int unfinished;
};

static int q_join_call(void *ctx, double timeout) {
  return weft_queue_join(((struct joinq *)ctx)->q, timeout);
}
static void q_one_unfinished(void *ctx) {
  struct joinq *j = ctx;
  if (j->unfinished == 0) ck_assert_int_eq(weft_queue_put(j->q, NULL, 0), 0);
  j->unfinished = 1;
}
static void q_finish_one(void *ctx) {
  struct joinq *j = ctx;
  void *item;
  if (weft_queue_get(j->q, &item, GATE_S) == 0) weft_queue_task_done(j->q);
}
static void q_all_finished(void *ctx) {
  struct joinq *j = ctx;
  if (j->unfinished == 1) q_finish_one(j);
  j->unfinished = 0;
}
static void unfinished_none(void *ctx) { ((struct joinq *)ctx)->unfinished = 0; }

START_TEST(queue_put_get_join) {
  weft_queue *q = weft_queue_new();
  ck_assert_ptr_nonnull(q);
  struct timed get = {"weft_queue_get", q_get_call, 0,   WEFT_EEMPTY, q_drain, q_put_one,
                      q_put_one,        NULL};
  check_timed(&get, q);
  weft_queue *bounded = weft_queue_new(.maxsize = 1);
  ck_assert_ptr_nonnull(bounded);
  struct timed put = {"weft_queue_put", q_put_call, 0,    WEFT_EFULL, q_fill, q_drain,
                      q_take_one,       NULL};
  check_timed(&put, bounded);
  struct joinq j = {.q = weft_queue_new()};
  ck_assert_ptr_nonnull(j.q);
  struct timed join_ = {"weft_queue_join", q_join_call,  0,           WEFT_ETIMEDOUT,
                        q_one_unfinished,  q_all_finished, q_finish_one, unfinished_none};
  check_timed(&join_, &j);
  ck_assert_int_eq(weft_queue_free(q), 0);
  ck_assert_int_eq(weft_queue_free(bounded), 0);
  ck_assert_int_eq(weft_queue_free(j.q), 0);
}
END_TEST

/* ---- process queues ---- */

static int mq_get_call(void *ctx, double timeout) {
  char buf[8];
  size_t len;
  return weft_mpqueue_get(ctx, buf, sizeof buf, &len, timeout);
}
static int mq_put_call(void *ctx, double timeout) { return weft_mpqueue_put(ctx, "m", 1, timeout); }
static void mq_drain(void *ctx) {
  while (mq_get_call(ctx, 0) == 0) {
  }
}
static void mq_fill(void *ctx) {
  while (mq_put_call(ctx, 0) == 0) {
  }
}
static void mq_put_one(void *ctx) { ck_assert_int_eq(mq_put_call(ctx, 0), 0); }
static void mq_take_one(void *ctx) { mq_get_call(ctx, GATE_S); }

static int mq_join_call(void *ctx, double timeout) {
  return weft_mpqueue_join(((struct joinq *)ctx)->mq, timeout);
}
static void mq_one_unfinished(void *ctx) {
  struct joinq *j = ctx;
  if (j->unfinished == 0) ck_assert_int_eq(mq_put_call(j->mq, 0), 0);
  j->unfinished = 1;
}
static void mq_finish_one(void *ctx) {
  struct joinq *j = ctx;
  if (mq_get_call(j->mq, GATE_S) == 0) weft_mpqueue_task_done(j->mq);
}
static void mq_all_finished(void *ctx) {
  struct joinq *j = ctx;
  if (j->unfinished == 1) mq_finish_one(j);
  j->unfinished = 0;
}

START_TEST(mpqueue_put_get_join) {
  weft_mpqueue *q = weft_mpqueue_new(.capacity = 4096);
  ck_assert_ptr_nonnull(q);
  struct timed get = {"weft_mpqueue_get", mq_get_call, 0,   WEFT_EEMPTY, mq_drain, mq_put_one,
                      mq_put_one,         NULL};
  check_timed(&get, q);
  weft_mpqueue *bounded = weft_mpqueue_new(.capacity = 4096, .maxsize = 1);
  ck_assert_ptr_nonnull(bounded);
  struct timed put = {"weft_mpqueue_put", mq_put_call, 0,    WEFT_EFULL, mq_fill, mq_drain,
                      mq_take_one,        NULL};
  check_timed(&put, bounded);
  struct joinq j = {.mq = weft_mpqueue_new(.capacity = 4096)};
  ck_assert_ptr_nonnull(j.mq);
  struct timed join_ = {"weft_mpqueue_join", mq_join_call,    0,             WEFT_ETIMEDOUT,
                        mq_one_unfinished,   mq_all_finished, mq_finish_one, unfinished_none};
  check_timed(&join_, &j);
  ck_assert_int_eq(weft_mpqueue_free(q), 0);
  ck_assert_int_eq(weft_mpqueue_free(bounded), 0);
  ck_assert_int_eq(weft_mpqueue_free(j.mq), 0);
}
END_TEST

/* ---- Pipe ---- */

struct pipex {
  weft_conn *a, *b;
};

static int recv_call(void *ctx, double timeout) {
  char buf[8];
  size_t len;
  return weft_conn_recv(((struct pipex *)ctx)->a, buf, sizeof buf, &len, timeout);
}
static int poll_call(void *ctx, double timeout) {
  return weft_conn_poll(((struct pipex *)ctx)->a, timeout);
}
static void pipe_drain(void *ctx) {
  while (recv_call(ctx, 0) == 0) {
  }
}
static void pipe_send(void *ctx) {
  ck_assert_int_eq(weft_conn_send(((struct pipex *)ctx)->b, "m", 1), 0);
}
static void pipe_send_late(void *ctx) { weft_conn_send(((struct pipex *)ctx)->b, "m", 1); }

START_TEST(conn_recv_and_poll) {
  struct pipex x;
  ck_assert_int_eq(weft_pipe(&x.a, &x.b), 0);
  struct timed recv = {"weft_conn_recv", recv_call,      0,   WEFT_ETIMEDOUT, pipe_drain,
                       pipe_send,        pipe_send_late, NULL};
  check_timed(&recv, &x);
  /* poll: 1 when there is something to read, 0 when not. */
  struct timed poll = {"weft_conn_poll", poll_call,      1,         0, pipe_drain, pipe_send,
                       pipe_send_late,   pipe_drain};
  check_timed(&poll, &x);
  ck_assert_int_eq(weft_conn_close(x.a), 0);
  ck_assert_int_eq(weft_conn_close(x.b), 0);
}
END_TEST

/* ---- Thread.join ---- */

struct threadx {
  weft_thread t;
  int gate;
  bool running; /* started, and its gate not yet opened */
};

static void *gated_thread(void *arg) {
  wait_ge(arg, 1, GATE_S);
  return NULL;
}

static int thread_join_call(void *ctx, double timeout) {
  return weft_thread_join(((struct threadx *)ctx)->t, timeout, NULL);
}
static void thread_running(void *ctx) {
  struct threadx *x = ctx;
  if (x->running) return;
  if (x->t.id != 0) ck_assert_int_eq(weft_thread_close(x->t), 0);
  x->gate = 0;
  x->t = weft_thread_new(gated_thread, .arg = &x->gate);
  ck_assert_int_eq(weft_thread_start(x->t), 0);
  x->running = true;
}
static void thread_open_gate(void *ctx) { st(&((struct threadx *)ctx)->gate, 1); }
static void thread_finished(void *ctx) {
  struct threadx *x = ctx;
  if (x->running) thread_open_gate(x);
  double end = test_now() + GATE_S;
  while (weft_thread_is_alive(x->t) && test_now() < end) nap_ms(1);
  ck_assert(!weft_thread_is_alive(x->t));
  x->running = false;
}
static void thread_gone(void *ctx) { ((struct threadx *)ctx)->running = false; }

START_TEST(thread_join) {
  struct threadx x = {.running = false};
  struct timed join_ = {"weft_thread_join", thread_join_call, 0,          WEFT_ETIMEDOUT,
                        thread_running,     thread_finished,  thread_open_gate, thread_gone};
  check_timed(&join_, &x);
  ck_assert_int_eq(weft_thread_close(x.t), 0);
}
END_TEST

/* ---- Process.join ---- */

struct processx {
  weft_process p;
  int *gate; /* shared with the child */
  bool running;
};

static int gated_process(void *arg) { return wait_ge(arg, 1, GATE_S) ? 0 : 1; }

static int process_join_call(void *ctx, double timeout) {
  return weft_process_join(((struct processx *)ctx)->p, timeout);
}
static void process_running(void *ctx) {
  struct processx *x = ctx;
  if (x->running) return;
  if (x->p.id != 0) ck_assert_int_eq(weft_process_close(x->p), 0);
  st(x->gate, 0);
  x->p = start_process(gated_process, x->gate);
  x->running = true;
}
static void process_open_gate(void *ctx) { st(((struct processx *)ctx)->gate, 1); }
static void process_stopped(void *ctx) {
  struct processx *x = ctx;
  if (!x->running) return;
  process_open_gate(x);
  ck_assert_int_eq(weft_process_join(x->p, GATE_S), 0);
  x->running = false;
}
static void process_gone(void *ctx) { ((struct processx *)ctx)->running = false; }

START_TEST(process_join) {
  struct processx x = {.gate = shared(sizeof(int)), .running = false};
  struct timed join_ = {"weft_process_join", process_join_call, 0,
                        WEFT_ETIMEDOUT,      process_running,   process_stopped,
                        process_open_gate,   process_gone};
  check_timed(&join_, &x);
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(x.p, &code), 0);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(weft_process_close(x.p), 0);
}
END_TEST

/* ---- futures: result, result_bytes, futures_wait, as_completed ---- */

static int gated_task(void *arg, void **result) {
  *result = arg;
  return wait_ge(arg, 1, GATE_S) ? 0 : 1;
}

/* arg holds a pointer to the gate (shared memory in a process pool). */
static int gated_bytes(const void *arg, size_t len, void *result, size_t *result_len) {
  int *gate;
  if (len != sizeof gate) return 2;
  memcpy(&gate, arg, sizeof gate);
  if (!wait_ge(gate, 1, GATE_S)) return 1;
  memcpy(result, "ok", 2);
  *result_len = 2;
  return 0;
}

#define GATES 32

struct futx {
  weft_pool pool;
  int *gates; /* GATES of them, one per future made */
  int used;
  int *gate;  /* the current future's */
  weft_future f;
  bool pending; /* f's gate is not yet opened */
  bool bytes;   /* f is a bytes task */
  bool all;     /* for futures_wait */
  weft_as_completed *ac;
};

static void fut_pending(void *ctx) {
  struct futx *x = ctx;
  if (x->pending) return;
  if (x->f.id != 0) ck_assert_int_eq(weft_future_close(x->f), 0);
  ck_assert_int_lt(x->used, GATES);
  x->gate = &x->gates[x->used++];
  st(x->gate, 0);
  x->f = x->bytes ? weft_pool_apply_async(x->pool, gated_bytes, &x->gate, sizeof x->gate)
                  : weft_pool_submit(x->pool, gated_task, x->gate);
  ck_assert_msg(x->f.id != 0, "%s", weft_last_error());
  x->pending = true;
}
static void fut_open_gate(void *ctx) { st(((struct futx *)ctx)->gate, 1); }
static void fut_done(void *ctx) {
  struct futx *x = ctx;
  if (x->f.id == 0) fut_pending(x);
  if (!x->pending) return;
  fut_open_gate(x);
  ck_assert_int_eq(weft_future_result(x->f, GATE_S, NULL), 0);
  x->pending = false;
}
static void fut_settled(void *ctx) { ((struct futx *)ctx)->pending = false; }

static int result_call(void *ctx, double timeout) {
  void *r = NULL;
  int rc = weft_future_result(((struct futx *)ctx)->f, timeout, &r);
  if (rc == 0) ck_assert_ptr_eq(r, ((struct futx *)ctx)->gate);
  return rc;
}
static int result_bytes_call(void *ctx, double timeout) {
  const void *data = NULL;
  size_t len = 0;
  int rc = weft_future_result_bytes(((struct futx *)ctx)->f, timeout, &data, &len);
  if (rc == 0) ck_assert(len == 2 && memcmp(data, "ok", 2) == 0);
  return rc;
}
static int futures_wait_call(void *ctx, double timeout) {
  struct futx *x = ctx;
  return weft_futures_wait(&x->f, 1, x->all, timeout);
}

/* as_completed: a fresh watcher over the current future each time, since
 * each gives its future once. */
static void ac_renew(struct futx *x) {
  weft_as_completed_free(x->ac);
  x->ac = weft_as_completed_new(&x->f, 1);
  ck_assert_ptr_nonnull(x->ac);
}
static void ac_pending(void *ctx) {
  fut_pending(ctx);
  ac_renew(ctx);
}
static void ac_done(void *ctx) {
  fut_done(ctx);
  ac_renew(ctx);
}
static int ac_call(void *ctx, double timeout) {
  struct futx *x = ctx;
  weft_future got = {0};
  size_t index = 99;
  int rc = weft_as_completed_next(x->ac, timeout, &got, &index);
  if (rc == 0) ck_assert(got.id == x->f.id && index == 0);
  return rc;
}

static void fut_cleanup(struct futx *x) {
  for (int i = 0; i < GATES; i++) st(&x->gates[i], 1);
  weft_as_completed_free(x->ac);
  x->ac = NULL;
  if (x->f.id != 0) ck_assert_int_eq(weft_future_close(x->f), 0);
  x->f.id = 0;
  x->pending = false;
}

START_TEST(future_result_wait_and_as_completed) {
  int gates[GATES] = {0};
  struct futx x = {.pool = weft_thread_pool_new(.workers = 1), .gates = gates};
  ck_assert_msg(x.pool.id != 0, "%s", weft_last_error());
  struct timed result = {"weft_future_result", result_call,   0,          WEFT_ETIMEDOUT,
                         fut_pending,          fut_done,      fut_open_gate, fut_settled};
  check_timed(&result, &x);
  x.bytes = true;
  struct timed bytes = {"weft_future_result_bytes", result_bytes_call, 0, WEFT_ETIMEDOUT,
                        fut_pending, fut_done, fut_open_gate, fut_settled};
  check_timed(&bytes, &x);
  x.bytes = false;
  struct timed wait = {"weft_futures_wait", futures_wait_call, 0,          WEFT_ETIMEDOUT,
                       fut_pending,         fut_done,          fut_open_gate, fut_settled};
  x.all = true;
  check_timed(&wait, &x);
  x.all = false;
  check_timed(&wait, &x);
  struct timed ac = {"weft_as_completed_next", ac_call, 0, WEFT_ETIMEDOUT, ac_pending, ac_done,
                     fut_open_gate, fut_settled};
  check_timed(&ac, &x);
  fut_cleanup(&x);
  ck_assert_int_eq(weft_pool_close(x.pool), 0);
  ck_assert_int_eq(weft_pool_join(x.pool, GATE_S), 0);
  ck_assert_int_eq(weft_pool_free(x.pool), 0);
}
END_TEST

/* ---- imap_next ---- */

#define IMAP_N 12
static int imap_gates[IMAP_N], imap_started[IMAP_N];

static int imap_task(const void *arg, size_t len, void *result, size_t *result_len) {
  int i;
  if (len != sizeof i) return 2;
  memcpy(&i, arg, sizeof i);
  st(&imap_started[i], 1);
  if (!wait_ge(&imap_gates[i], 1, GATE_S)) return 1;
  int square = i * i;
  memcpy(result, &square, sizeof square);
  *result_len = sizeof square;
  return 0;
}

static bool imap_source(void *item, void *arg) {
  int *n = arg;
  if (*n >= IMAP_N) return false;
  memcpy(item, n, sizeof *n);
  (*n)++;
  return true;
}

struct imapx {
  weft_imap *it;
  int next;    /* the item the next result is for */
  int pending; /* the item an unblock lets through */
};

static void imap_pending(void *ctx) {
  struct imapx *x = ctx;
  ck_assert(!ld(&imap_gates[x->next]));
  x->pending = x->next;
}
/* One worker runs the items in order and settles each before it begins the
 * next: once item next + 1 has begun, item next's result is there. */
static void imap_ready(void *ctx) {
  struct imapx *x = ctx;
  ck_assert_int_lt(x->next + 1, IMAP_N);
  st(&imap_gates[x->next], 1);
  ck_assert(wait_ge(&imap_started[x->next + 1], 1, GATE_S));
}
static void imap_open_gate(void *ctx) { st(&imap_gates[((struct imapx *)ctx)->pending], 1); }
static int imap_call(void *ctx, double timeout) {
  struct imapx *x = ctx;
  size_t index = 99;
  int square = -1;
  int rc = weft_imap_next(x->it, timeout, &index, &square);
  if (rc == 0) {
    ck_assert_int_eq((int)index, x->next);
    ck_assert_int_eq(square, x->next * x->next);
    x->next++;
  }
  return rc;
}

START_TEST(imap_next) {
  for (int unordered = 0; unordered < 2; unordered++) {
    memset(imap_gates, 0, sizeof imap_gates);
    memset(imap_started, 0, sizeof imap_started);
    weft_pool pool = weft_thread_pool_new(.workers = 1);
    ck_assert_msg(pool.id != 0, "%s", weft_last_error());
    int n = 0;
    struct imapx x = {.it = weft_pool_imap(pool, imap_task, imap_source, &n, sizeof(int),
                                           sizeof(int), .window = IMAP_N,
                                           .unordered = unordered != 0)};
    ck_assert_msg(x.it != NULL, "%s", weft_last_error());
    struct timed next = {unordered ? "weft_imap_next (unordered)" : "weft_imap_next",
                         imap_call,    0,          WEFT_ETIMEDOUT, imap_pending, imap_ready,
                         imap_open_gate, NULL};
    check_timed(&next, &x);
    for (int i = 0; i < IMAP_N; i++) st(&imap_gates[i], 1);
    ck_assert_int_eq(weft_imap_free(x.it), 0);
    ck_assert_int_eq(weft_pool_close(pool), 0);
    ck_assert_int_eq(weft_pool_join(pool, GATE_S), 0);
    ck_assert_int_eq(weft_pool_free(pool), 0);
  }
}
END_TEST

/* ---- Pool.join, thread and process pools ---- */

struct poolx {
  weft_pool pool;
  int *gate; /* shared with a process pool's workers */
  bool processes;
  bool live; /* closed, with a task waiting at its gate */
};

static void pool_busy(void *ctx) {
  struct poolx *x = ctx;
  if (x->live) return;
  if (x->pool.id != 0) ck_assert_int_eq(weft_pool_free(x->pool), 0);
  st(x->gate, 0);
  x->pool = x->processes ? weft_process_pool_new(.workers = 1) : weft_thread_pool_new(.workers = 1);
  ck_assert_msg(x->pool.id != 0, "%s", weft_last_error());
  weft_future f = x->processes
                      ? weft_pool_apply_async(x->pool, gated_bytes, &x->gate, sizeof x->gate)
                      : weft_pool_submit(x->pool, gated_task, x->gate);
  ck_assert_msg(f.id != 0, "%s", weft_last_error());
  ck_assert_int_eq(weft_future_close(f), 0);
  ck_assert_int_eq(weft_pool_close(x->pool), 0);
  x->live = true;
}
static void pool_open_gate(void *ctx) { st(((struct poolx *)ctx)->gate, 1); }
static void pool_joined(void *ctx) {
  struct poolx *x = ctx;
  if (!x->live) return;
  pool_open_gate(x);
  ck_assert_int_eq(weft_pool_join(x->pool, GATE_S), 0);
  x->live = false;
}
static void pool_ended(void *ctx) { ((struct poolx *)ctx)->live = false; }
static int pool_join_call(void *ctx, double timeout) {
  return weft_pool_join(((struct poolx *)ctx)->pool, timeout);
}

START_TEST(pool_join) {
  for (int processes = 0; processes < 2; processes++) {
    struct poolx x = {.gate = shared(sizeof(int)), .processes = processes != 0};
    struct timed join_ = {processes ? "weft_pool_join (processes)" : "weft_pool_join (threads)",
                          pool_join_call, 0,           WEFT_ETIMEDOUT, pool_busy, pool_joined,
                          pool_open_gate, pool_ended};
    check_timed(&join_, &x);
    ck_assert_int_eq(weft_pool_free(x.pool), 0);
  }
}
END_TEST

/* ---- the exit rules' daemon grace ---- */

struct grace {
  double grace;
  int daemon_ready;
  pid_t daemon_pid;
  double returned_at; /* when the child's target returned */
};

static int sigterm_proof_daemon(void *arg) {
  signal(SIGTERM, SIG_IGN);
  st(arg, 1);
  for (;;) pause();
  return 0;
}

static int child_with_daemon(void *arg) {
  struct grace *g = arg;
  if (weft_set_daemon_grace(g->grace) != 0) return 2;
  weft_process d = weft_process_new(sigterm_proof_daemon, .arg = &g->daemon_ready, .daemon = true);
  if (weft_process_start(d) != 0) return 3;
  if (!wait_ge(&g->daemon_ready, 1, GATE_S)) return 4;
  g->daemon_pid = weft_process_pid(d);
  g->returned_at = weft_monotonic(); /* read after the join */
  return 0; /* the exit rules: SIGTERM the daemon, wait the grace, SIGKILL */
}

/* How long the child took to exit after its target returned. */
static double exit_with_grace(double grace) {
  struct grace *g = shared(sizeof *g);
  *g = (struct grace){.grace = grace};
  weft_process p = start_process(child_with_daemon, g);
  ck_assert_int_eq(weft_process_join(p, GATE_S), 0);
  double took = weft_monotonic() - g->returned_at;
  int code = -1;
  ck_assert_int_eq(weft_process_exitcode(p, &code), 0);
  ck_assert_int_eq(code, 0);
  ck_assert_int_eq(weft_process_close(p), 0);
  ck_assert(wait_pid_gone(g->daemon_pid, GATE_S));
  weft_shared_free(g);
  return took;
}

START_TEST(daemon_grace) {
  /* The daemon ignores SIGTERM: only SIGKILL, once the grace is over, ends
   * it, and the child waits for that. */
  for (size_t i = 0; i < sizeof no_wait / sizeof no_wait[0]; i++) {
    double took = exit_with_grace(no_wait[i]);
    ck_assert_msg(took < QUICK_S, "grace %g: the exit took %.3f s", no_wait[i], took);
  }
  ck_assert_double_ge(exit_with_grace(0.3), 0.25);
  ck_assert_int_eq(weft_set_daemon_grace(NAN), WEFT_EINVAL);
}
END_TEST

/* ---- the deadlock detector: only a wait for ever is a blocking acquire ---- */

static int reports;
static void count_report(const char *report, void *arg) {
  (void)report;
  (void)arg;
  inc(&reports);
}

START_TEST(deadlock_detector_blocks_only_for_ever) {
  ck_assert_int_eq(weft_deadlock_set_mode(WEFT_DEADLOCK_ERROR), 0);
  ck_assert_int_eq(weft_deadlock_set_hook(count_report, NULL), 0);
  weft_lock a = WEFT_LOCK_INIT, b = WEFT_LOCK_INIT;
  ck_assert_int_eq(weft_lock_acquire(&a, WEFT_FOREVER), 0);
  /* Re-acquiring a Lock one holds deadlocks only if the acquire would wait
   * for ever. */
  for (size_t i = 0; i < sizeof no_wait / sizeof no_wait[0]; i++)
    ck_assert_int_eq(weft_lock_acquire(&a, no_wait[i]), WEFT_ETIMEDOUT);
  ck_assert_int_eq(ld(&reports), 0);
  ck_assert_int_eq(weft_lock_acquire(&a, WEFT_FOREVER), WEFT_EDEADLK);
  ck_assert_int_eq(weft_lock_acquire(&a, 2e9), WEFT_EDEADLK);
  ck_assert_int_ge(ld(&reports), 1);
  /* b taken under a without waiting records no order a -> b, so b then a
   * closes no cycle. */
  int before = ld(&reports);
  ck_assert_int_eq(weft_lock_acquire(&b, -1.0), 0);
  ck_assert_int_eq(weft_lock_release(&b), 0);
  ck_assert_int_eq(weft_lock_release(&a), 0);
  ck_assert_int_eq(weft_lock_acquire(&b, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(&a, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_release(&a), 0);
  ck_assert_int_eq(weft_lock_release(&b), 0);
  ck_assert_int_eq(ld(&reports), before);
  /* While b under a taken for ever does. */
  ck_assert_int_eq(weft_lock_acquire(&a, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(&b, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_release(&b), 0);
  ck_assert_int_eq(weft_lock_release(&a), 0);
  ck_assert_int_eq(weft_lock_acquire(&b, WEFT_FOREVER), 0);
  ck_assert_int_eq(weft_lock_acquire(&a, WEFT_FOREVER), 0);
  ck_assert_int_eq(ld(&reports), before + 1);
  ck_assert_int_eq(weft_lock_release(&a), 0);
  ck_assert_int_eq(weft_lock_release(&b), 0);
  weft_deadlock_set_hook(NULL, NULL);
  weft_deadlock_set_mode(WEFT_DEADLOCK_OFF);
}
END_TEST

/* ---- sleep and the clock ---- */

START_TEST(sleep_refuses_negative) {
  const double bad[] = {-1.0, -1e-9, -1e9, -INFINITY, NAN};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_int_eq(weft_sleep(bad[i]), WEFT_EINVAL);
  double t0 = weft_monotonic();
  ck_assert_int_eq(weft_sleep(0.0), 0);
  ck_assert_int_eq(weft_sleep(-0.0), 0);
  ck_assert_double_lt(weft_monotonic() - t0, QUICK_S);
  t0 = weft_monotonic();
  ck_assert_int_eq(weft_sleep(0.05), 0);
  ck_assert_double_ge(weft_monotonic() - t0, 0.05);
}
END_TEST

START_TEST(monotonic_clock) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double theirs = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
  double ours = weft_monotonic();
  ck_assert_double_ge(ours, theirs);
  ck_assert_double_lt(ours - theirs, 0.1);
  double last = ours;
  for (int i = 0; i < 100000; i++) {
    double now = weft_monotonic();
    ck_assert_double_ge(now, last);
    last = now;
  }
  /* A deadline that has passed gives a negative timeout: no wait. */
  weft_queue *q = weft_queue_new();
  void *item;
  double deadline = weft_monotonic() - 1;
  double t0 = weft_monotonic();
  ck_assert_int_eq(weft_queue_get(q, &item, deadline - weft_monotonic()), WEFT_EEMPTY);
  ck_assert_double_lt(weft_monotonic() - t0, QUICK_S);
  ck_assert_int_eq(weft_queue_free(q), 0);
}
END_TEST

Suite *weft_test_suite(void) {
  Suite *s = suite_create("timeouts");
  TCase *tc = weft_tcase("sync", 60);
  tcase_add_test(tc, lock_rlock_and_condition_acquire);
  tcase_add_test(tc, condition_wait_and_wait_for);
  tcase_add_test(tc, semaphore_and_event);
  tcase_add_test(tc, barrier_wait);
  tcase_add_test(tc, deadlock_detector_blocks_only_for_ever);
  suite_add_tcase(s, tc);

  tc = weft_tcase("queues_and_pipes", 60);
  tcase_add_test(tc, queue_put_get_join);
  tcase_add_test(tc, mpqueue_put_get_join);
  tcase_add_test(tc, conn_recv_and_poll);
  suite_add_tcase(s, tc);

  tc = weft_tcase("threads_and_processes", 60);
  tcase_add_test(tc, thread_join);
  tcase_add_test(tc, process_join);
  tcase_add_test(tc, daemon_grace);
  suite_add_tcase(s, tc);

  tc = weft_tcase("pools", 60);
  tcase_add_test(tc, future_result_wait_and_as_completed);
  tcase_add_test(tc, imap_next);
  tcase_add_test(tc, pool_join);
  suite_add_tcase(s, tc);

  tc = weft_tcase("clock", 20);
  tcase_add_test(tc, sleep_refuses_negative);
  tcase_add_test(tc, monotonic_clock);
  suite_add_tcase(s, tc);
  return s;
}
