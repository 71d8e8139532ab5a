/* The device's write path in pieces, for the resource (resource.c), which
 * puts the replication between the conflict check and the local I/O. The
 * public hb_pwrite/hb_trim/hb_zero (hablock.h) are these pieces in a row. */
#ifndef HB_DEV_H
#define HB_DEV_H

#include <stdbool.h>
#include <stdint.h>

#include "hablock.h"
#include "inflight.h"
#include "loop.h"

bool hb_dev_in_bounds(const struct hb_dev *d, uint64_t len, uint64_t off);
/* The conflict check: wait for overlapping writes, then register [off, off+len). */
void hb_dev_range_begin(struct hb_dev *d, struct hb_range *r, uint64_t off, uint64_t len);
void hb_dev_range_end(struct hb_dev *d, struct hb_range *r);
/* The local I/O, with the range registered. */
int hb_dev_write_locked(struct hb_dev *d, const void *buf, uint32_t count,
                        uint64_t off, unsigned flags);
int hb_dev_trim_locked(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags);
int hb_dev_zero_locked(struct hb_dev *d, uint32_t count, uint64_t off, unsigned flags);

bool hb_dev_is_direct(const struct hb_dev *d);
/* io=hybrid: how many writes went to the loop because another was in
 * progress (for tests). */
unsigned long hb_dev_hybrid_handed(const struct hb_dev *d);
/* Carry out a write that hb_dev_prep_write filled, with a plain syscall. */
int hb_dev_write_now(const struct hb_req *req);
/* Fill req (an HB_OP_WRITE for a loop) to write buf straight to the disk,
 * if the request needs no bounce buffer or read-modify-write; false when
 * it does (use hb_pwrite instead). */
bool hb_dev_prep_write(struct hb_dev *d, struct hb_req *req, void *buf, uint32_t count,
                       uint64_t off, unsigned flags);

#endif
