/* SPDX-License-Identifier: MIT */
/* The runtime: library start-up, fork handlers and exit rules. Each
 * subsystem exposes its hooks here and runtime.c calls them in order. */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

/* Runs the exit rules of every subsystem, as at the end of main. */
void weft__runtime_exit_rules(void);

/* Process subsystem hooks (process.c). */
void weft__process_init(void);
void weft__process_exit_rules(void);
void weft__process_before_fork(void);
void weft__process_after_fork_parent(void);
void weft__process_after_fork_child(void);

/* Thread subsystem hooks (thread.c). */
void weft__thread_init(void);
void weft__thread_exit_rules(void);
void weft__thread_before_fork(void);
void weft__thread_after_fork_parent(void);
void weft__thread_after_fork_child(void);

/* Shared memory hooks (shm.c): the exit rules unlink the names this process
 * created and did not unlink; the child needs no fork hook. */
void weft__shm_exit_rules(void);
void weft__shm_before_fork(void);
void weft__shm_after_fork_parent(void);

/* Shared memory blocks (shared.c): the set of blocks this process mapped
 * stays whole across fork. */
void weft__shared_before_fork(void);
void weft__shared_after_fork_parent(void);
void weft__shared_after_fork_child(void);

/* The forkserver (forkserver.c): a forked child does not share its
 * parent's server. */
void weft__forkserver_before_fork(void);
void weft__forkserver_after_fork_parent(void);
void weft__forkserver_after_fork_child(void);

/* Pool subsystem hooks (pool.c). */
void weft__pool_before_fork(void);
void weft__pool_exit_rules(void);
void weft__pool_after_fork_parent(void);
void weft__pool_after_fork_child(void);

#endif
