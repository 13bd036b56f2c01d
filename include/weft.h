/* SPDX-License-Identifier: MIT */
/* weft.h — Python's multiprocessing and threading model for C.
 * Include this umbrella header, or the concept headers under weft/. */
#ifndef WEFT_H
#define WEFT_H

#ifdef __cplusplus
extern "C" {
#endif

#include "weft/common.h"
#include "weft/deadlock.h"
#include "weft/dump.h"
#include "weft/error.h"
#include "weft/lockstat.h"
#include "weft/pipe.h"
#include "weft/pool.h"
#include "weft/process.h"
#include "weft/queue.h"
#include "weft/shm.h"
#include "weft/sync.h"
#include "weft/thread.h"

#ifdef __cplusplus
}
#endif

#endif
