/* SPDX-License-Identifier: MIT */
/* 进程间通信 (communication between processes), after §4: processes do not
 * share globals, so they talk through objects made for it. A producer
 * process puts messages into a process queue and closes it; a consumer
 * process takes them until the queue says it is closed and drained. Then two
 * processes each add 1 to a shared Value 1,000,000 times, under the Value's
 * lock: §3.6's lesson, across processes, and the sum comes out right. */
#include <stdio.h>
#include <string.h>
#include <weft.h>

static weft_mpqueue *queue;
static weft_value *counter;

static int producer(void *arg) {
  (void)arg;
  for (int i = 0; i < 5; i++) {
    char msg[32];
    int len = snprintf(msg, sizeof msg, "消息 %d", i);
    weft_mpqueue_put(queue, msg, (size_t)len, WEFT_FOREVER);
  }
  weft_mpqueue_close(queue); /* nothing more: the consumer stops once it took the rest */
  return 0;
}

static int consumer(void *arg) {
  (void)arg;
  char msg[32];
  size_t len;
  while (weft_mpqueue_get(queue, msg, sizeof msg, &len, WEFT_FOREVER) == 0)
    printf("消费者进程收到：%.*s\n", (int)len, msg);
  printf("队列已关闭，消费者进程退出\n");
  return 0;
}

static int add_one_million(void *arg) {
  (void)arg;
  int *value = weft_value_ptr(counter);
  for (int i = 0; i < 1000000; i++) {
    weft_rlock_acquire(weft_value_get_lock(counter), WEFT_FOREVER); /* with counter.get_lock(): */
    *value += 1;
    weft_rlock_release(weft_value_get_lock(counter));
  }
  return 0;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  queue = weft_mpqueue_new(.capacity = 4096); /* before start: the children share it */
  counter = weft_value_new("i");
  if (queue == NULL || counter == NULL) {
    fprintf(stderr, "%s\n", weft_last_error());
    return 1;
  }

  weft_process producer_process = weft_process_new(producer);
  weft_process consumer_process = weft_process_new(consumer);
  weft_process_start(producer_process);
  weft_process_start(consumer_process);
  weft_process_join(producer_process, WEFT_FOREVER);
  weft_process_join(consumer_process, WEFT_FOREVER);

  weft_process adders[2] = {weft_process_new(add_one_million), weft_process_new(add_one_million)};
  for (int i = 0; i < 2; i++) weft_process_start(adders[i]);
  for (int i = 0; i < 2; i++) weft_process_join(adders[i], WEFT_FOREVER);
  int sum;
  weft_value_load(counter, 0, 1, &sum);
  printf("两个进程各加 1000000 次，共享的 Value：%d\n", sum);

  weft_process all[4] = {producer_process, consumer_process, adders[0], adders[1]};
  for (int i = 0; i < 4; i++) weft_process_close(all[i]);
  weft_mpqueue_free(queue);
  weft_value_free(counter);
  return 0;
}
