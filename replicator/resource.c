/* The resource: one replicated device. It owns the local device (dev.c),
 * the loop thread, the peer link (peer.c), the role state (role.c), the
 * out-of-sync bitmap (bitmap.c) and the Secondary's apply workers; the
 * plugin talks only to it. Standalone (disk=) it is the device alone.
 *
 * The Primary's write path (protocol C): conflict check -> the frame handed
 * to the loop thread and the local write issued by the worker, in parallel
 * -> wait for both -> reply. Without a peer the write completes locally and
 * its blocks are set in the out-of-sync bitmap. */
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitmap.h"
#include "bufpool.h"
#include "config.h"
#include "ctl.h"
#include "dev.h"
#include "hablock.h"
#include "log.h"
#include "loop.h"
#include "peer.h"
#include "resource.h"
#include "role.h"
#include "tls.h"
#include "wire.h"

#define APPLY_THREADS 4
/* Requests from the peer being applied at once, at most: past this the link
 * stops reading the socket until half of them are done (an authenticated
 * peer still cannot make us hold unbounded memory). */
#define APPLY_HIGH 64
#define APPLY_LOW  (APPLY_HIGH / 2)

struct apply_item {
  struct apply_item *next;
  uint64_t link;
  struct hb_frame f;
  void *payload;
};

struct hb_res {
  struct hb_dev *dev;
  /* replicated mode only: */
  struct hb_config cfg;
  bool replicated;
  struct hb_loop *loop;
  struct hb_tls_ctx *tls;
  struct hb_peer *peer;
  struct hb_ctl *ctl;
  pthread_mutex_t lock;         /* state, bitmap, peer_oos */
  struct hb_node_state state;
  struct hb_bitmap bitmap;
  bool peer_oos;
  bool declare_pair;            /* next STATE tells the peer: pair identical */
  bool promoting;               /* our PROMOTE is waiting for the peer's answer */
  int own_requests;             /* replicate()/flush in progress (ev_promote) */
  int sending;                  /* requests decided "replicate" on a Connected
                                   link, not yet handed to it nor recorded
                                   (ev_hello waits for none): raised and
                                   read under lock, lowered atomically */
  int peer_writes;              /* the peer's requests being carried out (atomic) */
  int peer_writes_closed;       /* a promotion is waiting for them (atomic) */
  int closing;                  /* hb_res_close has begun (stall() reads it) */
  uint64_t role_epoch;          /* demotions so far (hb_res_client_stale) */
  bool fail_flush;              /* debug flag: fail the peer's FLUSH */
  bool fail_write;              /* debug flag: fail the peer's WRITEs */
  bool fail_local_flush;        /* debug flag: fail our clients' flushes here */
  bool fail_local_write;        /* debug flag: fail our clients' writes here */
  unsigned stall_flush_ms;      /* debug flag: hold the peer's FLUSH */
  unsigned stall_write_ms;      /* debug flag: hold each of the peer's WRITEs */
  unsigned stall_send_ms;       /* debug flag: hold our requests around the hand-over */
  unsigned long lost_sends;     /* requests the link was gone for at the hand-over (atomic) */
  bool force_aio;               /* debug flag: the loop as if io_uring were missing */
  int primary;                  /* atomic copy of state.role == Primary */
  int disk_failed;              /* atomic: state.disk became Failed */
  /* the Secondary's apply workers */
  pthread_t apply_thr[APPLY_THREADS];
  unsigned apply_started;
  pthread_mutex_t apply_lock;
  pthread_cond_t apply_cond;
  struct apply_item *apply_head, **apply_tail;
  bool apply_stop;
  int applying;                 /* peer requests received, not yet answered */
  int apply_paused;             /* the link was told to stop reading */
  char description[320];        /* what a client is told it reached */
};

/* ---- state ---- */

static void publish_role(struct hb_res *r)
{
  __atomic_store_n(&r->primary, r->state.role == HB_ROLE_PRIMARY, __ATOMIC_SEQ_CST);
}

/* Under r->lock: does this node hold blocks the peer lacks (the flag of
 * HELLO and STATE)? Not with a Failed disk, whatever it recorded before:
 * nothing on it can be relied on, and the peer must not wait for it
 * (may_promote_locked) nor take it for the better copy. */
static bool holds_oos(const struct hb_res *r)
{
  return r->state.oos_bytes > 0 && r->state.disk != HB_DISK_FAILED;
}

/* Under r->lock: the disk becomes Failed, in the state and in the copy
 * the data path reads without the lock. False if it already was. */
static bool fail_disk_locked(struct hb_res *r)
{
  if (r->state.disk == HB_DISK_FAILED)
    return false;
  r->state.disk = HB_DISK_FAILED;
  __atomic_store_n(&r->disk_failed, 1, __ATOMIC_SEQ_CST);
  return true;
}

static void send_state_locked(struct hb_res *r)
{
  struct hb_state_msg s = {
    .role = (uint8_t) r->state.role,
    .disk = (uint8_t) r->state.disk,
    .flags = (r->declare_pair ? HB_HELLO_F_CONSISTENT : 0) |
             (holds_oos(r) ? HB_HELLO_F_OUT_OF_SYNC : 0),
  };
  r->declare_pair = false;
  if (r->peer)
    hb_peer_send_state(r->peer, &s);
}

/* Under r->lock: record [off, off+len); true if it is the first range
 * out of sync (say so with say_recording, once the lock is let go). */
static bool record_locked(struct hb_res *r, uint64_t off, uint64_t len)
{
  bool first = r->state.oos_bytes == 0;
  hb_state_write_without_peer(&r->state, &r->bitmap, off, len);
  return first;
}

static void say_recording(struct hb_res *r)
{
  hb_info("%s: writing without the peer: changed blocks are recorded as out of sync",
          r->cfg.name);
}

/* Record [off, off+len) as out of sync; with unless_connected, only when
 * the link is not up (deciding under the lock the handshake takes).
 * Returns whether it recorded; when it did not, the caller sends and
 * settles the request (send_settled). */
static bool record_oos(struct hb_res *r, uint64_t off, uint64_t len, bool unless_connected)
{
  bool record, first = false;

  pthread_mutex_lock(&r->lock);
  record = !unless_connected || !hb_conn_is_connected(r->state.conn);
  if (record)
    first = record_locked(r, off, len);
  else
    __atomic_add_fetch(&r->sending, 1, __ATOMIC_RELAXED);   /* the caller sends: send_settled() */
  pthread_mutex_unlock(&r->lock);
  if (first)
    say_recording(r);
  return record;
}

static void mark_oos(struct hb_res *r, uint64_t off, uint64_t len)
{
  record_oos(r, off, len, false);
}

/* A request record_oos() let through to the link is settled: handed to
 * the link (which records it through ev_lost if it goes down), or, when
 * the link had gone down in between, recorded here, in the same critical
 * section that ends the count. Until then no handshake completes
 * (ev_hello): a new link must not look in sync while a write it never
 * carried is about to be recorded. */
static void send_settled(struct hb_res *r, uint64_t off, uint64_t len, bool lost)
{
  bool first;

  if (!lost) {                  /* the common case: no lock on the write path */
    __atomic_sub_fetch(&r->sending, 1, __ATOMIC_RELEASE);
    return;
  }
  pthread_mutex_lock(&r->lock);
  first = record_locked(r, off, len);
  __atomic_sub_fetch(&r->sending, 1, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&r->lock);
  if (first)
    say_recording(r);
}

/* The peer failed a request it had accepted: exclude it (StandAlone until
 * `hactl connect`) and say why. Any thread. */
__attribute__((format(printf, 2, 3)))
static void go_alone(struct hb_res *r, const char *fmt, ...)
{
  char why[256];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  hb_error("%s: %s", r->cfg.name, why);
  pthread_mutex_lock(&r->lock);
  r->state.conn = HB_CONN_STANDALONE;
  pthread_mutex_unlock(&r->lock);
  hb_peer_exclude(r->peer, why);
}

/* ---- peer events (loop thread) ---- */

static void ev_make_hello(void *opaque, struct hb_hello *h)
{
  struct hb_res *r = opaque;

  pthread_mutex_lock(&r->lock);
  h->proto_version = HB_WIRE_VERSION;
  h->node_id = (uint16_t) (r->cfg.self + 1);
  h->role = (uint8_t) r->state.role;
  h->disk = (uint8_t) r->state.disk;
  h->flags = holds_oos(r) ? HB_HELLO_F_OUT_OF_SYNC : 0;
  h->bm_granularity = 4096;
  h->exported_size = hb_dev_size(r->dev);
  snprintf(h->resource, sizeof h->resource, "%s", r->cfg.name);
  snprintf(h->node_name, sizeof h->node_name, "%s", hb_config_self(&r->cfg)->name);
  pthread_mutex_unlock(&r->lock);
}

static int ev_hello(void *opaque, const struct hb_hello *remote, char *msg, size_t len)
{
  struct hb_res *r = opaque;
  int ret, unsettled;

  pthread_mutex_lock(&r->lock);
  if (r->state.conn == HB_CONN_STANDALONE || r->state.conn == HB_CONN_SPLITBRAIN) {
    /* The operator disconnected us (or we excluded the peer) while this
     * connection was being made: it must not bring the link back. */
    snprintf(msg, len, "this node is %s; `hactl connect` allows the link again",
             hb_conn_name(r->state.conn));
    pthread_mutex_unlock(&r->lock);
    return -EPERM;
  }
  unsettled = __atomic_load_n(&r->sending, __ATOMIC_ACQUIRE);
  if (unsettled > 0) {
    /* Writes decided on the previous link are still on their way to it,
     * or to the bitmap if it went down first: not in sync yet, nor known
     * to differ. Refused for now; the link tries again. */
    snprintf(msg, len, "%d write%s of the previous connection still being settled; "
             "trying again", unsettled, unsettled == 1 ? "" : "s");
    pthread_mutex_unlock(&r->lock);
    return -EAGAIN;
  }
  ret = hb_on_handshake(&r->state, (enum hb_role) remote->role, (enum hb_disk) remote->disk,
                        remote->flags & HB_HELLO_F_OUT_OF_SYNC, msg, len);
  if (ret == 0) {
    r->peer_oos = false;
    hb_state_connected(&r->state, (enum hb_role) remote->role, (enum hb_disk) remote->disk);
  } else if (ret == HB_REFUSED_BOTH_PRIMARY) {
    /* Both nodes were made Primary while apart: trying again cannot help,
     * and which side's changes to give up is the operator's call. As DRBD
     * does, the link stays down (SplitBrain) until `hactl connect`. */
    r->state.conn = HB_CONN_SPLITBRAIN;
  }
  pthread_mutex_unlock(&r->lock);
  if (ret == HB_REFUSED_BOTH_PRIMARY) {
    hb_error("%s: split brain: this node and the peer are both Primary; the link stays "
             "down until `hactl connect` (demote the node whose changes are to be given "
             "up first)", r->cfg.name);
    hb_peer_exclude(r->peer, msg);
  }
  return ret;
}

static void ev_up(void *opaque, const struct hb_hello *remote)
{
  struct hb_res *r = opaque;
  hb_info("%s: connected to %s (%s, %s)", r->cfg.name, remote->node_name,
          hb_role_name((enum hb_role) remote->role), hb_disk_name((enum hb_disk) remote->disk));
}

static void ev_down(void *opaque, const char *why, bool standalone)
{
  struct hb_res *r = opaque;

  pthread_mutex_lock(&r->lock);
  hb_state_peer_lost(&r->state);
  if (standalone && r->state.conn != HB_CONN_SPLITBRAIN)
    r->state.conn = HB_CONN_STANDALONE;
  pthread_mutex_unlock(&r->lock);
  hb_info("%s: lost the peer (%s); %s%s", r->cfg.name, why,
          __atomic_load_n(&r->primary, __ATOMIC_ACQUIRE)
            ? "going on alone, recording what changes"
            : "keeping our data and waiting",
          standalone ? "; StandAlone until `hactl connect`" : "");
}

static void ev_state(void *opaque, const struct hb_state_msg *s)
{
  struct hb_res *r = opaque;
  bool peer_failed, alone;

  pthread_mutex_lock(&r->lock);
  if (s->role == HB_ROLE_PRIMARY && r->state.role == HB_ROLE_PRIMARY) {
    /* Cannot happen through the PROMOTE exchange; should it anyway, the
     * pair must not stay connected with two writers. */
    r->state.conn = HB_CONN_SPLITBRAIN;
    pthread_mutex_unlock(&r->lock);
    hb_error("%s: split brain: the peer says it is Primary and so is this node", r->cfg.name);
    hb_peer_exclude(r->peer, "split brain: both nodes are Primary");
    return;
  }
  peer_failed = r->state.role == HB_ROLE_PRIMARY && s->disk == HB_DISK_FAILED &&
                r->state.peer_disk != HB_DISK_FAILED;
  alone = r->state.conn == HB_CONN_STANDALONE;
  hb_state_peer_changed(&r->state, (enum hb_role) s->role, (enum hb_disk) s->disk);
  if ((s->flags & HB_HELLO_F_CONSISTENT) &&
      (r->state.disk == HB_DISK_INCONSISTENT || r->state.disk == HB_DISK_OUTDATED) &&
      r->state.oos_bytes == 0 && r->state.role == HB_ROLE_SECONDARY) {
    r->state.disk = HB_DISK_UPTODATE;
    hb_info("%s: the Primary declared the pair identical: disk UpToDate", r->cfg.name);
  }
  r->peer_oos = s->flags & HB_HELLO_F_OUT_OF_SYNC;
  pthread_mutex_unlock(&r->lock);
  if (peer_failed) {
    /* Its disk failed a request of ours: maybe a flush whose NACK was
     * lost with a link that dropped (the flush then completed here alone)
     * and whose writes the peer had acknowledged. Which of them it still
     * holds we cannot tell: as after a failed flush, the whole device is
     * out of sync, and we go on alone (if its NACK has not already made
     * us). */
    mark_oos(r, 0, hb_dev_size(r->dev));
    if (!alone)
      go_alone(r, "the peer says its disk failed; going on alone");
  }
}

struct direct_apply {
  struct hb_req req;
  struct hb_req call;           /* a page-cache write, run out of the link's lock */
  struct hb_res *res;
  uint64_t link, id;
  uint32_t len;                 /* of the payload buffer (bufpool) */
};

/* A peer request is answered: let the link read again when room is back. */
static void apply_done(struct hb_res *r)
{
  int left = __atomic_sub_fetch(&r->applying, 1, __ATOMIC_ACQ_REL);
  if (left <= APPLY_LOW && __atomic_exchange_n(&r->apply_paused, 0, __ATOMIC_ACQ_REL))
    hb_peer_resume(r->peer);
}

/* This Secondary could not apply what the Primary sent (a write, trim or
 * zero not done, a flush that did not make the data durable): its disk no
 * longer holds the Primary's data for sure, so it must not stay promotable
 * as UpToDate (DRBD detaches such a disk). The Primary hears it from the
 * NACK and then the STATE: true when the disk became Failed here, and the
 * caller sends the STATE (tell_failed) after its NACK, so that the Primary
 * reads first what failed. A node that is Primary itself refused the
 * request (EROFS): its disk is fine. */
static bool apply_failed(struct hb_res *r, uint16_t type, uint64_t off, int err)
{
  bool changed = false;

  hb_error("%s: applying the peer's %s at %llu: %s", r->cfg.name,
           hb_wire_type_name(type), (unsigned long long) off, strerror(-err));
  pthread_mutex_lock(&r->lock);
  if (r->state.role != HB_ROLE_PRIMARY)
    changed = fail_disk_locked(r);
  pthread_mutex_unlock(&r->lock);
  if (changed)
    hb_error("%s: the local disk failed a request from the Primary: disk Failed "
             "(not promotable until the data are made whole again)", r->cfg.name);
  return changed;
}

static void tell_failed(struct hb_res *r)
{
  pthread_mutex_lock(&r->lock);
  send_state_locked(r);
  pthread_mutex_unlock(&r->lock);
}

/* A request from the peer is about to be carried out on the disk: counted,
 * unless this node is Primary or a promotion is waiting for the count to
 * drain (false: refuse it, EROFS). Sequentially consistent with
 * drain_peer_writes: either the request sees the promotion coming, or the
 * promotion sees the request and waits for it, so a write of the former
 * Primary (from a link that went down a moment ago) never lands after this
 * node's own clients have written. */
static bool peer_write_begin(struct hb_res *r)
{
  __atomic_add_fetch(&r->peer_writes, 1, __ATOMIC_SEQ_CST);
  /* The door first, then the role: the promotion opens the door again
   * only after it has published the role, so a request that finds the
   * door open either came before the promotion closed it (and the drain
   * counts it) or comes after the role says Primary. */
  if (!__atomic_load_n(&r->peer_writes_closed, __ATOMIC_SEQ_CST) &&
      !__atomic_load_n(&r->primary, __ATOMIC_SEQ_CST))
    return true;
  __atomic_sub_fetch(&r->peer_writes, 1, __ATOMIC_SEQ_CST);
  return false;
}

static void peer_write_end(struct hb_res *r)
{
  __atomic_sub_fetch(&r->peer_writes, 1, __ATOMIC_SEQ_CST);
}

static void direct_applied(struct hb_req *req)
{
  struct direct_apply *a = (struct direct_apply *) req;
  /* Failed first: a promotion waiting for this write (drain_peer_writes)
   * must find the disk Failed once the count lets it go. */
  bool failed = req->res < 0 && apply_failed(a->res, HB_WIRE_WRITE, req->off, req->res);

  peer_write_end(a->res);
  hb_peer_reply_local(a->res->peer, a->link, a->id, req->res);
  if (failed)
    tell_failed(a->res);
  apply_done(a->res);
  hb_buf_free(req->buf, a->len);
  free(a);
}

static void stall(struct hb_res *r, unsigned ms);

/* On the loop thread, from a CALL: it runs once the callback that received
 * the frame has returned, so out of the link's lock. A write that dirty-page
 * throttling or a slow disk holds up holds the loop, not the link: the
 * peer's keepalive thread can still tell the Primary that this node lives
 * (peer.c), where a write under the lock would have had the Primary declare
 * it dead after ping-timeout. */
static void write_now(struct hb_req *call)
{
  struct direct_apply *a = call->opaque;
  struct hb_res *r = a->res;

  /* Counted since apply_queue (peer_write_begin): a promotion meanwhile
   * waits for this write. */
  if (r->stall_write_ms)
    stall(r, r->stall_write_ms);
  a->req.res = r->fail_write ? -EIO : hb_dev_write_now(&a->req);
  hb_peer_loop_beat(r->peer);   /* held, not stuck: the keepalive goes on */
  direct_applied(&a->req);
}

/* On the loop thread, under the link's lock. A write that needs no
 * read-modify-write goes to the disk through the loop's own ring, and its
 * ACK leaves from the completion: no thread hop on the Secondary. The rest
 * goes to the apply workers. */
static void apply_queue(struct hb_res *r, const struct hb_frame *f, void *payload,
                        uint64_t link);

static bool ev_apply(void *opaque, const struct hb_frame *f, void *payload, uint64_t link)
{
  struct hb_res *r = opaque;
  bool room = __atomic_add_fetch(&r->applying, 1, __ATOMIC_ACQ_REL) < APPLY_HIGH;

  if (!room)
    __atomic_store_n(&r->apply_paused, 1, __ATOMIC_RELEASE);
  apply_queue(r, f, payload, link);
  /* Answers that came in between may have missed the pause: check again. */
  if (!room && __atomic_load_n(&r->applying, __ATOMIC_ACQUIRE) <= APPLY_LOW &&
      __atomic_exchange_n(&r->apply_paused, 0, __ATOMIC_ACQ_REL))
    return true;
  return room;
}

static void apply_queue(struct hb_res *r, const struct hb_frame *f, void *payload,
                        uint64_t link)
{
  struct apply_item *it;

  if (f->type == HB_WIRE_WRITE && peer_write_begin(r)) {
    struct direct_apply *a = calloc(1, sizeof *a);
    unsigned flags = f->flags & HB_WIRE_F_FUA ? HB_FUA : 0;
    if (a && hb_dev_prep_write(r->dev, &a->req, payload, f->count, f->offset, flags)) {
      a->res = r;
      a->link = link;
      a->id = f->id;
      a->len = f->payload_len;
      a->req.complete = direct_applied;
      if (hb_dev_is_direct(r->dev) || (flags & HB_FUA)) {
        hb_loop_submit_local(r->loop, &a->req);
      } else {
        /* Through the page cache a write is a copy into memory (a few
         * microseconds), while io_uring hands buffered ext4 writes to a
         * kernel worker: this thread does it, as soon as the frames it
         * received with it are handled (write_now). */
        a->call = (struct hb_req) { .op = HB_OP_CALL, .complete = write_now, .opaque = a };
        hb_loop_submit_local(r->loop, &a->call);
      }
      return;
    }
    free(a);
    peer_write_end(r);
  }
  it = malloc(sizeof *it);

  if (!it) {
    hb_buf_free(payload, f->payload_len);
    bool failed = apply_failed(r, f->type, f->offset, -ENOMEM);
    hb_peer_reply(r->peer, link, f->id, -ENOMEM);
    if (failed)
      tell_failed(r);
    apply_done(r);
    return;
  }
  it->f = *f;
  it->link = link;
  it->payload = payload;
  it->next = NULL;
  pthread_mutex_lock(&r->apply_lock);
  *r->apply_tail = it;
  r->apply_tail = &it->next;
  pthread_cond_signal(&r->apply_cond);
  pthread_mutex_unlock(&r->apply_lock);
}

/* Debug (-D hablock.stall_flush_ms): a disk that hangs on a flush while the
 * node answers pings. Sleeps in slices so that a stopping node does not
 * wait for it. */
static void stall(struct hb_res *r, unsigned ms)
{
  uint64_t until = hb_now_ns() + (uint64_t) ms * 1000000u;

  while (!__atomic_load_n(&r->apply_stop, __ATOMIC_ACQUIRE) &&
         !__atomic_load_n(&r->closing, __ATOMIC_ACQUIRE) && hb_now_ns() < until)
    nanosleep(&(struct timespec) { .tv_nsec = 20000000 }, NULL);
}

/* The Secondary applies received requests with the same data path as a
 * standalone device. The Primary never has two overlapping requests in
 * flight (its conflict check), so they may be applied in any order. */
static void *apply_main(void *arg)
{
  struct hb_res *r = arg;

  for (;;) {
    struct apply_item *it;
    unsigned flags;
    bool refused, changes, failed = false;
    int ret;

    pthread_mutex_lock(&r->apply_lock);
    while (!r->apply_head && !r->apply_stop)
      pthread_cond_wait(&r->apply_cond, &r->apply_lock);
    it = r->apply_head;
    if (!it) {
      pthread_mutex_unlock(&r->apply_lock);
      return NULL;
    }
    r->apply_head = it->next;
    if (!r->apply_head)
      r->apply_tail = &r->apply_head;
    pthread_mutex_unlock(&r->apply_lock);

    flags = (it->f.flags & HB_WIRE_F_FUA ? HB_FUA : 0) |
            (it->f.flags & HB_WIRE_F_MAY_TRIM ? HB_MAY_TRIM : 0);
    /* A flush changes no data: a promotion need not wait for it. */
    changes = it->f.type != HB_WIRE_FLUSH;
    refused = changes ? !peer_write_begin(r) : __atomic_load_n(&r->primary, __ATOMIC_ACQUIRE);
    if (refused) {
      hb_error("%s: the peer sent %s while this node is Primary or being promoted: refused",
               r->cfg.name, hb_wire_type_name(it->f.type));
      ret = -EROFS;
    } else {
      switch (it->f.type) {
      case HB_WIRE_WRITE:
        if (r->stall_write_ms)
          stall(r, r->stall_write_ms);
        ret = r->fail_write ? -EIO
                            : hb_pwrite(r->dev, it->payload, it->f.count, it->f.offset, flags);
        break;
      case HB_WIRE_TRIM:
        ret = hb_trim(r->dev, it->f.count, it->f.offset, flags);
        break;
      case HB_WIRE_ZERO:
        ret = hb_zero(r->dev, it->f.count, it->f.offset, flags);
        break;
      default:
        if (r->stall_flush_ms)
          stall(r, r->stall_flush_ms);
        ret = r->fail_flush ? -EIO : hb_flush(r->dev);
        break;
      }
      /* Failed before the count lets a waiting promotion go (a refusal
       * by role, above, says nothing about the disk). */
      failed = ret < 0 && apply_failed(r, it->f.type, it->f.offset, ret);
      if (changes)
        peer_write_end(r);
    }
    hb_peer_reply(r->peer, it->link, it->f.id, ret);
    if (failed)
      tell_failed(r);
    apply_done(r);
    hb_buf_free(it->payload, it->f.payload_len);
    free(it);
  }
}

static void ev_lost(void *opaque, const struct hb_frame *f)
{
  if (f->type == HB_WIRE_WRITE || f->type == HB_WIRE_TRIM || f->type == HB_WIRE_ZERO)
    mark_oos(opaque, f->offset, f->count);
}

/* The peer asks to become Primary (loop thread). Granting makes its role
 * Primary here at once, so that our own promotion is refused from now on
 * (until its STATE says otherwise or the link drops). Two requests that
 * cross: the node listed first in the configuration goes first, on both
 * sides, so exactly one of them is granted. */
static int ev_promote(void *opaque)
{
  struct hb_res *r = opaque;
  int ret = 0;

  pthread_mutex_lock(&r->lock);
  if (r->state.role == HB_ROLE_PRIMARY) {
    hb_info("%s: refused the peer's promotion: this node is Primary", r->cfg.name);
    ret = -EBUSY;
  } else if (__atomic_load_n(&r->peer_writes_closed, __ATOMIC_SEQ_CST)) {
    /* Our own promotion is waiting for the former Primary's writes (the
     * link went down and came back meanwhile): ours is decided again
     * once they are done; the requester asks again. */
    ret = -EAGAIN;
  } else if (r->promoting && r->cfg.self < r->cfg.peer) {
    hb_info("%s: refused the peer's promotion: this node asked first in order", r->cfg.name);
    ret = -EBUSY;
  } else if (__atomic_load_n(&r->own_requests, __ATOMIC_SEQ_CST) > 0) {
    /* Just demoted with requests still in flight: the peer, once Primary,
     * would refuse them while our client is told they are done. The
     * requester asks again until they are answered. */
    ret = -EAGAIN;
  } else {
    r->state.peer_role = HB_ROLE_PRIMARY;
  }
  pthread_mutex_unlock(&r->lock);
  return ret;
}

static const struct hb_peer_events peer_events = {
  .lost = ev_lost,
  .make_hello = ev_make_hello,
  .hello = ev_hello,
  .up = ev_up,
  .down = ev_down,
  .apply = ev_apply,
  .state = ev_state,
  .promote = ev_promote,
};

/* ---- the control socket (hactl) ---- */

/* role.h's refusals as the control protocol's stable codes. */
static int ctl_code(int refusal)
{
  switch (refusal) {
  case HB_REFUSED_PEER_PRIMARY:
    return HB_CTL_PEER_PRIMARY;
  case HB_REFUSED_NOT_UPTODATE:
  case HB_REFUSED_PEER_UPTODATE:
  case HB_REFUSED_SYNC_TARGET:
    return HB_CTL_NOT_UPTODATE;
  case HB_REFUSED_CLIENTS:
    return HB_CTL_IN_USE;
  case HB_REFUSED_BOTH_PRIMARY:
    return HB_CTL_SPLIT_BRAIN;
  default:
    return refusal > 0 ? HB_CTL_REFUSED : refusal;
  }
}

static int ctl_status(void *opaque, struct hb_json_out *o)
{
  struct hb_res_status st;

  hb_res_status(opaque, &st);
  hb_json_add_str(o, "resource", st.resource);
  hb_json_add_str(o, "node", st.node);
  hb_json_add_str(o, "peer", st.peer);
  hb_json_add_str(o, "role", hb_role_name(st.state.role));
  hb_json_add_str(o, "disk", hb_disk_name(st.state.disk));
  hb_json_add_str(o, "connection", hb_conn_name(st.state.conn));
  if (st.state.peer_role)
    hb_json_add_str(o, "peer_role", hb_role_name(st.state.peer_role));
  else
    hb_json_add_str(o, "peer_role", "Unknown");
  if (st.state.peer_disk)
    hb_json_add_str(o, "peer_disk", hb_disk_name(st.state.peer_disk));
  else
    hb_json_add_str(o, "peer_disk", "DUnknown");
  hb_json_add_int(o, "out_of_sync_bytes", (int64_t) st.state.oos_bytes);
  hb_json_add_int(o, "clients", st.state.clients);
  hb_json_add_str(o, "io_backend", st.io);
  hb_json_add_str(o, "loop_backend", st.loop);
  hb_json_add_str(o, "last_error", st.link.last_error);
  hb_json_begin_obj(o, "tls");
  hb_json_add_bool(o, "enabled", st.tls_on);
  hb_json_add_str(o, "version", st.link.tls_version);
  hb_json_add_str(o, "cipher", st.link.tls_cipher);
  hb_json_add_str(o, "peer", st.link.tls_peer);
  hb_json_end_obj(o);
  return 0;
}

static int ctl_promote(void *opaque, bool force, char *msg, size_t len)
{
  return ctl_code(hb_res_promote(opaque, force, msg, len));
}

static int ctl_demote(void *opaque, bool force, char *msg, size_t len)
{
  return ctl_code(hb_res_demote(opaque, force, msg, len));
}

static int ctl_connect(void *opaque, char *msg, size_t len)
{
  hb_res_set_connect(opaque, true);
  return 0;
}

static int ctl_disconnect(void *opaque, char *msg, size_t len)
{
  hb_res_set_connect(opaque, false);
  return 0;
}

static const struct hb_ctl_ops ctl_ops = {
  .status = ctl_status,
  .promote = ctl_promote,
  .demote = ctl_demote,
  .connect = ctl_connect,
  .disconnect = ctl_disconnect,
};

/* ---- setup ---- */

static int open_replicated(struct hb_res *r, const struct hb_params *p, char *err, size_t errlen)
{
  const struct hb_config_node *self, *peer;
  struct hb_params local = *p;
  char port[8], pport[8];
  int ret;

  ret = hb_config_load(p->config, p->node, &r->cfg, err, errlen);
  if (ret < 0)
    return ret;
  r->replicated = true;
  r->fail_flush = p->fail_flush;
  r->fail_write = p->fail_write;
  r->fail_local_flush = p->fail_local_flush;
  r->fail_local_write = p->fail_local_write;
  r->stall_flush_ms = p->stall_flush_ms;
  r->stall_write_ms = p->stall_write_ms;
  r->stall_send_ms = p->stall_send_ms;
  r->force_aio = p->force_aio_fallback;
  self = hb_config_self(&r->cfg);
  peer = hb_config_peer(&r->cfg);
  if (r->cfg.tls == HB_TLS_OFF)
    hb_info("%s: TLS is off (%s:%u): the peer is not authenticated and data cross the network in clear",
            r->cfg.name, r->cfg.file, r->cfg.tls_off_line);

  local.disk = self->disk;
  /* Never the experimental page-cache write lock (dev.c): here the local
   * write overlaps the peer's round trip, and with the lock the pair did
   * 9 % fewer 4k QD32 writes (docs/architecture.md). */
  local.write_lock = false;
  /* Nor io=hybrid by default: on a replicated Primary it measured level
   * with io=sync (4k QD32 over TLS 14.3k against 14.4k writes/s, QD1
   * 164 against 161 us, four interleaved rounds, 00:35 UTC 2026-11-26),
   * and io=sync needs no second loop thread. */
  if (local.io == HB_IO_DEFAULT)
    local.io = HB_IO_SYNC;
  ret = hb_dev_open(&local, &r->dev, err, errlen);
  if (ret < 0)
    return ret;
  if (r->cfg.size && r->cfg.size != hb_dev_size(r->dev))
    return hb_fail(err, errlen, EINVAL,
                   "%s: [resource] size is %llu but disk %s has %llu bytes",
                   r->cfg.file, (unsigned long long) r->cfg.size, self->disk,
                   (unsigned long long) hb_dev_size(r->dev));
  ret = hb_bitmap_init(&r->bitmap, hb_dev_size(r->dev), 4096);
  if (ret < 0)
    return hb_fail(err, errlen, -ret, "cannot allocate the out-of-sync bitmap");

  if (r->cfg.tls != HB_TLS_OFF) {
    struct hb_tls_config tc = {
      .ca_file = r->cfg.tls_ca, .cert_file = r->cfg.tls_cert, .key_file = r->cfg.tls_key,
      .peer_name = peer->name, .psk_file = r->cfg.tls_psk,
      .ciphersuites = r->cfg.tls_ciphersuites,
    };
    ret = hb_tls_ctx_new(&tc, &r->tls, err, errlen);
    if (ret < 0)
      return ret;
  }
  snprintf(port, sizeof port, "%u", self->port);
  snprintf(pport, sizeof pport, "%u", peer->port);
  struct hb_peer_config pc = {
    .self_name = self->name, .peer_name = peer->name,
    .listen_host = self->host, .listen_port = port,
    .peer_host = peer->host, .peer_port = pport,
    .tls = r->tls, .size = hb_dev_size(r->dev),
    .ping_interval_ms = r->cfg.ping_interval_ms,
    .ping_timeout_ms = r->cfg.ping_timeout_ms,
    .connect_timeout_ms = r->cfg.connect_timeout_ms,
    .request_timeout_ms = r->cfg.request_timeout_ms,
    .ack_spin_ns = (p->ack_spin_us < 0 ? HB_ACK_SPIN_US_DEFAULT
                                       : (unsigned) p->ack_spin_us) * 1000u,
  };
  ret = hb_peer_new(&pc, &peer_events, r, &r->peer, err, errlen);
  if (ret < 0)
    return ret;
  /* Bound now so that a busy socket is reported on the terminal. */
  ret = hb_ctl_bind(self->control, &ctl_ops, r, &r->ctl, err, errlen);
  if (ret < 0)
    return ret;
  /* A node starts Secondary, its data not known to be UpToDate until the
   * operator says so (no metadata yet: a later issue keeps it on disk). */
  r->state = (struct hb_node_state) {
    .role = HB_ROLE_SECONDARY, .disk = HB_DISK_INCONSISTENT, .conn = HB_CONN_CONNECTING,
  };
  return 0;
}

/* "hablock: NAME", the disk's file name (not where it lives on the
 * server), in printable ASCII: a byte that is not becomes '?' (an NBD
 * description must be UTF-8). */
static void describe_disk(char *buf, size_t len, const char *path)
{
  const char *name = strrchr(path, '/');
  size_t n;

  name = name && name[1] ? name + 1 : path;
  n = (size_t) snprintf(buf, len, "hablock: %s", name);
  for (size_t i = strlen("hablock: "); i < n && i < len - 1; i++)
    if ((unsigned char) buf[i] < 0x20 || (unsigned char) buf[i] > 0x7e)
      buf[i] = '?';
}

int hb_res_open(const struct hb_params *p, struct hb_res **out, char *err, size_t errlen)
{
  struct hb_res *r = calloc(1, sizeof *r);
  int ret;

  if (!r)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  pthread_mutex_init(&r->lock, NULL);
  pthread_mutex_init(&r->apply_lock, NULL);
  pthread_cond_init(&r->apply_cond, NULL);
  r->apply_tail = &r->apply_head;
  ret = p->config ? open_replicated(r, p, err, errlen) : hb_dev_open(p, &r->dev, err, errlen);
  if (ret < 0) {
    hb_res_close(r);
    return ret;
  }
  if (!r->replicated) {
    r->state.role = HB_ROLE_PRIMARY;     /* standalone: always serves */
    r->state.disk = HB_DISK_UPTODATE;
    publish_role(r);
    describe_disk(r->description, sizeof r->description, p->disk);
  } else {
    snprintf(r->description, sizeof r->description, "hablock: resource %s, node %s",
             r->cfg.name, hb_config_self(&r->cfg)->name);
  }
  *out = r;
  return 0;
}

const char *hb_res_description(const struct hb_res *r)
{
  return r->description;
}

int hb_res_start(struct hb_res *r, char *err, size_t errlen)
{
  int ret = hb_dev_start(r->dev, err, errlen);

  if (ret < 0 || !r->replicated)
    return ret;
  /* The link's loop: io_uring, or libaio where a ring cannot be made. */
  char why[HB_ERRLEN] = "forced by -D hablock.force_aio_fallback=1";
  if (r->force_aio || hb_loop_probe(HB_LOOP_URING, 256, why, sizeof why) < 0) {
    hb_info("%s: replication loop: cannot create an io_uring ring (%s); using libaio",
            r->cfg.name, why);
    ret = hb_loop_start(HB_LOOP_AIO, 256, &r->loop, err, errlen);
  } else {
    ret = hb_loop_start(HB_LOOP_URING, 256, &r->loop, err, errlen);
  }
  if (ret < 0)
    return ret;
  for (unsigned i = 0; i < APPLY_THREADS; i++) {
    if (pthread_create(&r->apply_thr[i], NULL, apply_main, r))
      return hb_fail(err, errlen, EAGAIN, "cannot start the apply threads");
    r->apply_started++;
  }
  ret = hb_peer_start(r->peer, r->loop, err, errlen);
  if (ret < 0)
    return ret;
  return hb_ctl_run(r->ctl, err, errlen);
}

void hb_res_close(struct hb_res *r)
{
  if (!r)
    return;
  hb_ctl_stop(r->ctl);
  __atomic_store_n(&r->closing, 1, __ATOMIC_RELEASE);   /* cuts stall() short */
  hb_peer_stop(r->peer);
  pthread_mutex_lock(&r->apply_lock);
  __atomic_store_n(&r->apply_stop, true, __ATOMIC_RELEASE);   /* stall() reads it unlocked */
  pthread_cond_broadcast(&r->apply_cond);
  pthread_mutex_unlock(&r->apply_lock);
  for (unsigned i = 0; i < r->apply_started; i++)
    pthread_join(r->apply_thr[i], NULL);
  hb_loop_stop(r->loop);
  hb_peer_free(r->peer);
  hb_tls_ctx_free(r->tls);
  hb_dev_close(r->dev);
  if (r->replicated)
    hb_bitmap_free(&r->bitmap);
  hb_config_free(&r->cfg);
  pthread_cond_destroy(&r->apply_cond);
  pthread_mutex_destroy(&r->apply_lock);
  pthread_mutex_destroy(&r->lock);
  free(r);
}

struct hb_dev *hb_res_dev(struct hb_res *r)
{
  return r->dev;
}

/* ---- clients and roles ---- */

int hb_res_client_open(struct hb_res *r, uint64_t *epoch, char *msg, size_t len)
{
  int ret;

  pthread_mutex_lock(&r->lock);
  ret = hb_may_serve(&r->state, msg, len);
  if (ret == 0) {
    r->state.clients++;
    *epoch = __atomic_load_n(&r->role_epoch, __ATOMIC_ACQUIRE);
  }
  pthread_mutex_unlock(&r->lock);
  return ret;
}

bool hb_res_client_stale(struct hb_res *r, uint64_t epoch)
{
  return __atomic_load_n(&r->role_epoch, __ATOMIC_ACQUIRE) != epoch;
}

bool hb_res_can_fast_zero(struct hb_res *r)
{
  return !r->replicated && hb_dev_can_fast_zero(r->dev);
}

void hb_res_client_close(struct hb_res *r)
{
  pthread_mutex_lock(&r->lock);
  if (r->state.clients)
    r->state.clients--;
  pthread_mutex_unlock(&r->lock);
}

/* How long a promotion asks again while the peer drains its requests or
 * the link settles. */
#define PROMOTE_RETRY_NS (2000ull * 1000000u)

/* A promotion refused because of the peer: one line in msg, the code of
 * "the peer is Primary" (hactl exit status 3). */
static int answer_busy(char *msg, size_t len, const char *why)
{
  if (msg && len)
    snprintf(msg, len, "%s", why);
  return HB_REFUSED_PEER_PRIMARY;
}

/* Under r->lock: the role rules (role.c), and a connected peer that has
 * blocks this node does not is promoted instead, unless forced. */
static int may_promote_locked(struct hb_res *r, bool force, char *msg, size_t len)
{
  int ret = hb_may_promote(&r->state, force, msg, len);

  if (ret == 0 && !force && r->peer_oos && r->state.role != HB_ROLE_PRIMARY &&
      hb_conn_is_connected(r->state.conn))
    ret = answer_busy(msg, len, "cannot promote: the peer has blocks this node does not; "
                      "promote the peer instead");
  return ret;
}

/* Well inside hactl's own 10 s wait, with the PROMOTE exchange's 2 s. */
#define PROMOTE_DRAIN_NS (5000ull * 1000000u)

/* Under r->lock, the promotion decided: refuse the peer's requests from
 * now on and wait (the lock let go: the loop thread may need it to get to
 * the write it has queued) until those being carried out are done: a
 * write of the former Primary that the kernel holds up must not land
 * after this node's own clients have written. Then decide again on what
 * is known now: the link may have changed meanwhile. */
static int drain_peer_writes(struct hb_res *r, bool force, char *msg, size_t len)
{
  struct hb_node_state seen = r->state;
  uint64_t deadline = hb_now_ns() + PROMOTE_DRAIN_NS;
  int left, ret;

  __atomic_store_n(&r->peer_writes_closed, 1, __ATOMIC_SEQ_CST);
  if ((left = __atomic_load_n(&r->peer_writes, __ATOMIC_SEQ_CST)) == 0)
    return 0;
  hb_info("%s: promoting: waiting for %d request%s of the former Primary still being "
          "carried out here", r->cfg.name, left, left == 1 ? "" : "s");
  pthread_mutex_unlock(&r->lock);
  while ((left = __atomic_load_n(&r->peer_writes, __ATOMIC_SEQ_CST)) > 0 &&
         hb_now_ns() < deadline)
    nanosleep(&(struct timespec) { .tv_nsec = 1000000 }, NULL);
  pthread_mutex_lock(&r->lock);
  if (left > 0)
    ret = answer_busy(msg, len, "cannot promote: the former Primary's writes are still being "
                      "written here (a slow or hung disk); retry");
  else if (r->state.conn != seen.conn || r->state.peer_role != seen.peer_role)
    ret = answer_busy(msg, len, "cannot promote: the link to the peer changed state; retry");
  else
    ret = may_promote_locked(r, force, msg, len);
  if (left == 0)
    hb_info("%s: promoting: the former Primary's requests are done", r->cfg.name);
  if (ret != 0)
    send_state_locked(r);       /* takes back a grant we do not use */
  return ret;
}

int hb_res_promote(struct hb_res *r, bool force, char *msg, size_t len)
{
  bool recording = false, alone = false;
  int ret;

  if (!r->replicated)
    return 0;
  pthread_mutex_lock(&r->lock);
  for (uint64_t deadline = hb_now_ns() + PROMOTE_RETRY_NS;;) {
    /* Connected: ask the peer first (PROMOTE), so that two nodes promoted
     * at the same moment are never both Primary. */
    struct hb_peer_io io;
    int pr;

    ret = may_promote_locked(r, force, msg, len);
    if (ret != 0 || r->state.role == HB_ROLE_PRIMARY || !hb_conn_is_connected(r->state.conn))
      break;
    if (r->promoting) {
      pthread_mutex_unlock(&r->lock);
      return answer_busy(msg, len, "cannot promote: a promotion of this node is already in progress");
    }
    r->promoting = true;
    pthread_mutex_unlock(&r->lock);
    memset(&io, 0, sizeof io);
    io.frame.type = HB_WIRE_PROMOTE;
    pr = hb_peer_send_io(r->peer, &io) == 0 ? hb_peer_io_wait(&io) : -ENOTCONN;
    pthread_mutex_lock(&r->lock);
    r->promoting = false;
    if (pr == 0) {
      /* Granted: decide again on what we know now (a STATE may have come
       * meanwhile, saying the peer has blocks we do not). A grant we do
       * not use is taken back by the STATE below. */
      ret = may_promote_locked(r, force, msg, len);
      if (ret != 0)
        send_state_locked(r);
      break;
    }
    if (pr == -EBUSY) {
      pthread_mutex_unlock(&r->lock);
      return answer_busy(msg, len, "cannot promote: the peer is Primary or is being promoted "
                         "at this moment (two Primaries are never allowed while connected)");
    }
    if (pr == -ETIMEDOUT) {
      pthread_mutex_unlock(&r->lock);
      snprintf(msg, len, "cannot promote: the peer answers pings but did not answer the "
               "promotion request within the ping timeout (%u ms); the link to it was "
               "dropped; retry", r->cfg.ping_timeout_ms);
      return HB_REFUSED_PEER_PRIMARY;
    }
    if (pr != -EAGAIN && pr != -ENOTCONN) {
      pthread_mutex_unlock(&r->lock);
      snprintf(msg, len, "cannot promote: the peer answered the request with an error: %s",
               strerror(-pr));
      return HB_REFUSED_PEER_PRIMARY;
    }
    /* -EAGAIN: the peer still has requests of its own in flight (it was
     * just demoted); -ENOTCONN while the state still says Connected: the
     * link is between its handshake and being up, or going down. Ask
     * again shortly; once the link is down, the loop ends above and the
     * rules for a node without its peer apply. */
    if (hb_now_ns() > deadline) {
      pthread_mutex_unlock(&r->lock);
      return answer_busy(msg, len, pr == -EAGAIN
                         ? "cannot promote: the peer still has requests in flight; retry"
                         : "cannot promote: the link to the peer is changing state; retry");
    }
    pthread_mutex_unlock(&r->lock);
    nanosleep(&(struct timespec) { .tv_nsec = 10000000 }, NULL);
    pthread_mutex_lock(&r->lock);
  }
  if (ret == 0 && r->state.role != HB_ROLE_PRIMARY)
    ret = drain_peer_writes(r, force, msg, len);
  if (ret == 0 && r->state.role != HB_ROLE_PRIMARY) {
    struct hb_node_state before = r->state;
    hb_state_promote(&r->state, force, r->peer_oos);
    if (force && hb_after_forced_promotion(&before, r->peer_oos))
      r->declare_pair = true;
    /* Connected to a peer whose disk is Failed (a former Primary whose
     * disk failed, demoted for this promotion): it is no replica. As when
     * its disk fails under a Primary (ev_state), the whole device counts
     * as out of sync, recorded before a client can write, and we go on
     * alone. */
    if (hb_conn_is_connected(r->state.conn) && r->state.peer_disk == HB_DISK_FAILED) {
      recording = record_locked(r, 0, hb_dev_size(r->dev));
      alone = true;
    }
    publish_role(r);
    send_state_locked(r);
    hb_info("%s: promoted to Primary%s", r->cfg.name, force ? " (forced)" : "");
  }
  __atomic_store_n(&r->peer_writes_closed, 0, __ATOMIC_SEQ_CST);   /* primary covers it now */
  pthread_mutex_unlock(&r->lock);
  if (recording)
    say_recording(r);
  if (alone)
    go_alone(r, "the peer's disk is Failed: it is no replica; going on alone");
  return ret;
}

int hb_res_demote(struct hb_res *r, bool force, char *msg, size_t len)
{
  int ret;

  if (!r->replicated)
    return hb_fail(msg, len, EINVAL, "a standalone device (disk=) has no roles");
  pthread_mutex_lock(&r->lock);
  ret = hb_may_demote(&r->state, force, msg, len);
  if (ret == 0 && r->state.role != HB_ROLE_SECONDARY) {
    hb_state_demote(&r->state);
    __atomic_add_fetch(&r->role_epoch, 1, __ATOMIC_ACQ_REL);
    publish_role(r);
    send_state_locked(r);
    hb_info("%s: demoted to Secondary%s", r->cfg.name, force ? " (forced)" : "");
    if (r->state.clients)
      hb_info("%s: %u NBD client%s still connected: every request of theirs fails "
              "(EROFS) from now on", r->cfg.name, r->state.clients,
              r->state.clients == 1 ? " is" : "s are");
  }
  pthread_mutex_unlock(&r->lock);
  return ret;
}

void hb_res_set_connect(struct hb_res *r, bool wanted)
{
  if (!r->peer)
    return;
  pthread_mutex_lock(&r->lock);
  /* connect on a link that is up (or coming up) changes nothing: the
   * connection state also decides whether a write is replicated or only
   * recorded (record_oos), so it must never say Connecting while the
   * link is up. */
  if (!wanted)
    r->state.conn = HB_CONN_STANDALONE;
  else if (r->state.conn == HB_CONN_STANDALONE || r->state.conn == HB_CONN_SPLITBRAIN)
    r->state.conn = HB_CONN_CONNECTING;
  pthread_mutex_unlock(&r->lock);
  hb_peer_set_wanted(r->peer, wanted);
}

void hb_res_status(struct hb_res *r, struct hb_res_status *st)
{
  memset(st, 0, sizeof *st);
  pthread_mutex_lock(&r->lock);
  st->state = r->state;
  st->sending = __atomic_load_n(&r->sending, __ATOMIC_ACQUIRE);
  pthread_mutex_unlock(&r->lock);
  st->replicated = r->replicated;
  st->resource = r->replicated ? r->cfg.name : "";
  st->node = r->replicated ? hb_config_self(&r->cfg)->name : "";
  st->peer = r->replicated ? hb_config_peer(&r->cfg)->name : "";
  st->io = hb_io_name(hb_dev_io(r->dev));
  st->loop = r->loop ? r->loop->ops->name : "";
  st->lost_sends = __atomic_load_n(&r->lost_sends, __ATOMIC_ACQUIRE);
  st->applying = __atomic_load_n(&r->applying, __ATOMIC_ACQUIRE);
  st->tls_on = r->replicated && r->cfg.tls != HB_TLS_OFF;
  if (r->peer)
    hb_peer_info(r->peer, &st->link);
}

const char *hb_res_control_path(const struct hb_res *r)
{
  return r->replicated ? hb_config_self(&r->cfg)->control : NULL;
}

/* ---- the data path ---- */

/* Our own requests (a write, trim, zero or flush on its way to both
 * nodes) are counted before the role is checked: a node that has just been
 * demoted does not let its peer become Primary (ev_promote) while one of
 * them may still reach the peer. Either ev_promote sees the count, or the
 * request sees the demotion (both sides sequentially consistent). */
static void own_begin(struct hb_res *r)
{
  __atomic_add_fetch(&r->own_requests, 1, __ATOMIC_SEQ_CST);
}

static void own_end(struct hb_res *r)
{
  __atomic_sub_fetch(&r->own_requests, 1, __ATOMIC_SEQ_CST);
}

/* This Primary's own disk failed a write, trim, zero or flush of its
 * clients. The peer may have carried it out, and after a failed flush the
 * kernel no longer knows which of the pages it was given it could not
 * write back: the replicas may now differ where no bitmap of ours says
 * so. As DRBD detaches a disk that fails, the disk is Failed from here on
 * (not promotable, even forced; a handshake with an UpToDate peer is
 * refused), and every request of the clients fails with EIO rather than
 * read what may be stale or write one copy only. The peer hears it (a
 * STATE); connected until now, it holds every write acknowledged to the
 * clients and is the node to promote once this one is demoted. */
static void own_disk_failed(struct hb_res *r, const char *what, uint64_t off, int err)
{
  uint64_t only_here = 0;
  bool first, in_sync = false;

  pthread_mutex_lock(&r->lock);
  first = fail_disk_locked(r);
  if (first) {
    in_sync = hb_conn_is_connected(r->state.conn) && r->state.oos_bytes == 0;
    only_here = r->state.oos_bytes;
    send_state_locked(r);
  }
  pthread_mutex_unlock(&r->lock);
  hb_error("%s: the local disk failed a client's %s at %llu: %s", r->cfg.name, what,
           (unsigned long long) off, strerror(-err));
  if (!first)
    return;
  /* What to do next depends on whether the peer has everything: say so,
   * and never advise promoting a peer that lacks acknowledged writes. */
  if (in_sync)
    hb_error("%s: disk Failed: every request of the clients fails (EIO) from now on; the "
             "peer holds every acknowledged write: demote this node and promote the peer",
             r->cfg.name);
  else
    hb_error("%s: disk Failed: every request of the clients fails (EIO) from now on; the "
             "peer is not in sync (%llu bytes written without it are on this disk only)",
             r->cfg.name, (unsigned long long) only_here);
}

static bool disk_failed(struct hb_res *r)
{
  return __atomic_load_n(&r->disk_failed, __ATOMIC_SEQ_CST) != 0;
}

static int replicate_counted(struct hb_res *r, uint16_t type, const void *buf, uint32_t count,
                             uint64_t off, unsigned flags,
                             int (*local)(struct hb_res *, const void *, uint32_t, uint64_t,
                                          unsigned))
{
  struct hb_range range;
  struct hb_peer_io io;
  int ret, pr;
  bool sent;

  if (!hb_dev_in_bounds(r->dev, count, off))
    return -EINVAL;
  if (!__atomic_load_n(&r->primary, __ATOMIC_SEQ_CST))
    return -EROFS;              /* demoted under a connected client */
  if (disk_failed(r))
    return -EIO;
  if (count == 0)
    return 0;
  hb_dev_range_begin(r->dev, &range, off, count);
  memset(&io, 0, sizeof io);
  io.frame = (struct hb_frame) {
    .type = type, .offset = off, .count = count,
    .flags = (flags & HB_FUA ? HB_WIRE_F_FUA : 0) |
             (type == HB_WIRE_ZERO && (flags & HB_MAY_TRIM) ? HB_WIRE_F_MAY_TRIM : 0),
  };
  io.payload = buf;
  /* Decide "replicate or record" under the lock the handshake takes, and
   * record before writing: a handshake can never look at an out-of-sync
   * count that a write in progress is about to raise. Once handed to the
   * link, a request the peer does not answer is recorded by ev_lost. */
  sent = !record_oos(r, off, count, true);
  if (sent) {
    if (r->stall_send_ms)
      stall(r, r->stall_send_ms);
    sent = hb_peer_send_io(r->peer, &io) == 0;
    if (!sent) {                /* the link went down in between */
      __atomic_add_fetch(&r->lost_sends, 1, __ATOMIC_RELEASE);
      if (r->stall_send_ms)
        stall(r, r->stall_send_ms);
    }
    send_settled(r, off, count, !sent);
  }
  ret = local(r, buf, count, off, flags);
  pr = sent ? hb_peer_io_wait(&io) : 0;
  if (pr != 0 && pr != -ENOTCONN) {
    /* The peer does not have what the client is about to be told is
     * written: recorded, and the pair may not stay Connected as if in
     * sync (the peer also marks its own disk Failed, see apply_failed). */
    mark_oos(r, off, count);
    go_alone(r, "the peer failed %s at %llu (%s): its disk is failing; going on alone",
             hb_wire_type_name(type), (unsigned long long) off, strerror(-pr));
  }
  if (ret < 0)                  /* the peer may have it and we do not */
    own_disk_failed(r, hb_wire_type_name(type), off, ret);
  hb_dev_range_end(r->dev, &range);
  return ret;
}

static int replicate(struct hb_res *r, uint16_t type, const void *buf, uint32_t count,
                     uint64_t off, unsigned flags,
                     int (*local)(struct hb_res *, const void *, uint32_t, uint64_t, unsigned))
{
  int ret;

  own_begin(r);
  ret = replicate_counted(r, type, buf, count, off, flags, local);
  own_end(r);
  return ret;
}

static int local_write(struct hb_res *r, const void *buf, uint32_t count, uint64_t off, unsigned flags)
{
  if (r->fail_local_write)
    return -EIO;
  return hb_dev_write_locked(r->dev, buf, count, off, flags);
}

static int local_zero(struct hb_res *r, const void *buf, uint32_t count, uint64_t off, unsigned flags)
{
  return hb_dev_zero_locked(r->dev, count, off, flags);
}

/* A client that stayed connected through a forced demotion: nothing it
 * asks for is served any more (reads would be stale once the peer is
 * Primary, and a flush must not reach the new Primary as ours). nbdkit
 * 1.32 cannot close the connection from a plugin, so its requests fail. */
static bool demoted(struct hb_res *r)
{
  return r->replicated && !__atomic_load_n(&r->primary, __ATOMIC_ACQUIRE);
}

/* Why a client's read-side request is not served: demoted (EROFS), or
 * this node's disk Failed (EIO: what it holds may be stale); 0 to serve. */
static int read_refusal(struct hb_res *r)
{
  if (demoted(r))
    return -EROFS;
  return r->replicated && disk_failed(r) ? -EIO : 0;
}

int hb_res_pread(struct hb_res *r, void *buf, uint32_t count, uint64_t off)
{
  int ret = read_refusal(r);

  if (ret < 0)
    return ret;
  return hb_pread(r->dev, buf, count, off);
}

int hb_res_pwrite(struct hb_res *r, const void *buf, uint32_t count, uint64_t off, unsigned flags)
{
  if (!r->replicated)
    return hb_pwrite(r->dev, buf, count, off, flags);
  return replicate(r, HB_WIRE_WRITE, buf, count, off, flags, local_write);
}

int hb_res_trim(struct hb_res *r, uint32_t count, uint64_t off, unsigned flags)
{
  if (!r->replicated)
    return hb_trim(r->dev, count, off, flags);
  /* Trim is advisory, and two disks may discard differently (one reads
   * zeroes after it, the other old data): replicated, it is a zero that may
   * punch holes, whose result is defined on both nodes. */
  return replicate(r, HB_WIRE_ZERO, NULL, count, off, flags | HB_MAY_TRIM, local_zero);
}

int hb_res_zero(struct hb_res *r, uint32_t count, uint64_t off, unsigned flags)
{
  if (!r->replicated)
    return hb_zero(r->dev, count, off, flags);
  /* A fast zero that one node can do and the other cannot would make the
   * replicas differ: refuse it, the client then zeroes the slow way. */
  if (flags & HB_FAST_ZERO)
    return -ENOTSUP;
  return replicate(r, HB_WIRE_ZERO, NULL, count, off, flags, local_zero);
}

/* A flush covers every write completed on any connection, on both nodes:
 * local fdatasync in parallel with a FLUSH round trip. */
static int flush_counted(struct hb_res *r)
{
  struct hb_peer_io io;
  bool sent;
  int ret, pr;

  if (!__atomic_load_n(&r->primary, __ATOMIC_SEQ_CST))
    return -EROFS;
  if (disk_failed(r))
    return -EIO;
  memset(&io, 0, sizeof io);
  io.frame.type = HB_WIRE_FLUSH;
  sent = hb_peer_send_io(r->peer, &io) == 0;
  ret = r->fail_local_flush ? -EIO : hb_flush(r->dev);
  /* The kernel reports a failed write-back to one fdatasync of the file,
   * not to each: a flush that ran beside the one told must not say the
   * pages it did not see lost are durable. */
  if (ret == 0 && disk_failed(r))
    ret = -EIO;
  pr = sent ? hb_peer_io_wait(&io) : 0;
  if (pr != 0 && pr != -ENOTCONN) {
    /* The peer acknowledged writes that it now cannot make durable: which
     * ones we cannot tell, so the whole device counts as out of sync (no
     * reconnection without a full resync) and we go on alone, as with a
     * peer whose disk failed. The client's data are durable here. */
    mark_oos(r, 0, hb_dev_size(r->dev));
    go_alone(r, "the peer failed a flush (%s): its disk is failing; going on alone",
             strerror(-pr));
  }
  if (ret < 0)
    own_disk_failed(r, "FLUSH", 0, ret);
  return ret;
}

int hb_res_flush(struct hb_res *r)
{
  int ret;

  if (!r->replicated)
    return hb_flush(r->dev);
  own_begin(r);
  ret = flush_counted(r);
  own_end(r);
  return ret;
}

int hb_res_cache(struct hb_res *r, uint32_t count, uint64_t off)
{
  int ret = read_refusal(r);

  if (ret < 0)
    return ret;
  return hb_cache(r->dev, count, off);
}

/* Reads are local, so is the allocation they would see. */
int hb_res_extents(struct hb_res *r, uint32_t count, uint64_t off, bool req_one,
                   hb_extent_fn add, void *opaque)
{
  int ret = read_refusal(r);

  if (ret < 0)
    return ret;
  return hb_extents(r->dev, count, off, req_one, add, opaque);
}
