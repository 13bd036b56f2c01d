/* SPDX-License-Identifier: MIT */
/* The tutorial's two-lock program on pthread mutexes, for the deadlock_abba_detect
 * row: thread 1 takes A then B, then thread 2 takes B then A, each ITERS
 * times, one after the other so that it never hangs. Built plain (run under
 * valgrind --tool=helgrind) and with -fsanitize=thread. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t a = PTHREAD_MUTEX_INITIALIZER, b = PTHREAD_MUTEX_INITIALIZER;
static long iters, counter;

static void *ab(void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    pthread_mutex_lock(&a);
    pthread_mutex_lock(&b);
    counter++;
    pthread_mutex_unlock(&b);
    pthread_mutex_unlock(&a);
  }
  return NULL;
}

static void *ba(void *arg) {
  (void)arg;
  for (long i = 0; i < iters; i++) {
    pthread_mutex_lock(&b);
    pthread_mutex_lock(&a);
    counter++;
    pthread_mutex_unlock(&a);
    pthread_mutex_unlock(&b);
  }
  return NULL;
}

int main(int argc, char **argv) {
  iters = argc > 1 ? atol(argv[1]) : 100000;
  pthread_t t;
  pthread_create(&t, NULL, ab, NULL);
  pthread_join(t, NULL);
  pthread_create(&t, NULL, ba, NULL);
  pthread_join(t, NULL);
  printf("counter %ld\n", counter);
  return counter == 2 * iters ? 0 : 1;
}
