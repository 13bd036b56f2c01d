/* SPDX-License-Identifier: MIT */
/* Shared memory that can travel to a child started by spawn or forkserver.
 *
 * Every piece of memory weft shares between processes is a region: a memory
 * file (memfd) mapped shared, whose descriptor the process keeps. A forked
 * child inherits the mappings as they are; a spawned one is sent every
 * region's descriptor and maps it at the same address, so that pointers into
 * shared memory -- a weft_lock *, a weft_shared_alloc block -- mean the same
 * in both. Regions are placed in an address window the program's own
 * mappings do not use, so the same addresses are free in a fresh image.
 *
 * Small blocks (weft_shared_alloc, the primitives' *_new, Values) share
 * arenas: a region cut into blocks from its start, unmapped once every block
 * this process took from it is freed. A block is never reused, so a child
 * that still uses a block its parent freed keeps it whole. Only the process
 * that made an arena allocates from it. */
#ifndef WEFT_REGION_H
#define WEFT_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Maps size bytes of zeroed shared memory as a region of its own. NULL with
 * a negated errno in *err on failure. */
void *weft__region_new(size_t size, int *err);

/* Unmaps a region from weft__region_new and closes its file. */
void weft__region_free(void *base);

/* A zeroed block of size bytes, 64-byte aligned, from an arena (or a region
 * of its own when large). NULL with a negated errno in *err on failure. */
void *weft__region_block(size_t size, int *err);

/* Gives back a block of weft__region_block: the arena goes once all of its
 * blocks are back. false if block is not a live block of this process. */
bool weft__region_block_free(void *block);

/* Whether block is a live block of this process. */
bool weft__region_block_live(const void *block);

/* Whether p points into one of this process's regions. */
bool weft__region_holds(const void *p);

/* What names the shared memory at p in every process, wherever each maps
 * it: the file behind it (device and inode) and the offset in that file.
 * For regions and for the named segments noted below. false if p is in
 * neither. */
bool weft__region_identify(const void *p, uint64_t *dev, uint64_t *ino, uint64_t *off);

/* A named segment (shm.c) mapped at base, which another process may map
 * elsewhere: noted so that weft__region_identify knows it, and forgotten
 * before it is unmapped. Not a region: it does not travel with a start. */
void weft__region_note_mapping(void *base, size_t size, uint64_t dev, uint64_t ino);
void weft__region_forget_mapping(void *base);

/* ---- travel: what a spawn or forkserver start sends its child ----
 * A parcel is built in the parent before the start (every region of the
 * process, with duplicates of their descriptors, and the objects given),
 * sent on the start socket after the start message, and applied by the
 * child before its target runs. */
struct weft__parcel;

/* Builds the parcel for a start: objects is the NULL-terminated list of
 * handles given to the process (NULL: none). NULL with the error recorded
 * for `call` if an object cannot travel or memory ran out. */
struct weft__parcel *weft__parcel_pack(const void *const *objects, const char *call);

/* Checks that every object of a NULL-terminated list can travel to another
 * process: 0, or WEFT_EINVAL / WEFT_ECLOSED recorded for `call`. */
int weft__parcel_check(const void *const *objects, const char *call);

/* Sends the parcel on fd: 0 or a negative code. */
int weft__parcel_send(int fd, const struct weft__parcel *p);

/* Closes the parcel's descriptors and frees it. */
void weft__parcel_free(struct weft__parcel *p);

/* In a child: reads a parcel from fd and maps and registers what it holds.
 * 0, or a negative code with a sentence in buf. */
int weft__parcel_receive(int fd, char *buf, size_t size);

/* One object of a parcel, as sent. */
struct weft__object_rec {
  uint64_t handle; /* the id the object has in the parent, and will have in the child */
  uint32_t kind;   /* enum weft__ref_kind */
  int32_t fd;      /* index of its descriptor among the parcel's, -1: none */
  uint64_t ptr;    /* a Value's or a process queue's object, in shared memory */
  uint64_t size;
  uint32_t flags;
  uint32_t pad_;
  uint64_t dev, ino;
  char name[256];
};

/* The kinds that carry a descriptor (pipe.c, shm.c): fill rec and *fd (a
 * descriptor the parcel then owns) for the parent's object h, or record an
 * error for `call`; in the child, register the object under the same
 * handle from rec and fd (taking fd on success): 0 or a negative code. */
int weft__conn_export(const void *h, struct weft__object_rec *rec, int *fd, const char *call);
int weft__conn_import(const void *h, const struct weft__object_rec *rec, int fd);
int weft__shm_export(const void *h, struct weft__object_rec *rec, int *fd, const char *call);
int weft__shm_import(const void *h, const struct weft__object_rec *rec, int fd);

/* Fork handlers: the region table stays whole across fork. */
void weft__region_before_fork(void);
void weft__region_after_fork(void);

#endif
