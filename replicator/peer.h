/* The peer link: one TCP connection to the other node, TLS 1.3 (tls.c) or
 * plaintext when the configuration says tls = off, framed by wire.c.
 *
 * Threads: a connector thread makes the TCP connection (the node whose name
 * sorts first listens, the other connects with exponential backoff and
 * jitter) and hands the socket to the loop thread, which runs the link: the
 * TLS handshake, io_uring recv of ciphertext (always one posted), the HELLO
 * exchange, received frames, pings, and io_uring sends of what is queued
 * while a send is in flight (many frames per send: batching comes from the
 * queue depth). The link's state and its SSL are under one lock: a worker
 * (hb_peer_send_io) or an apply thread (hb_peer_reply) takes it to put its
 * frame into the channel and, when no send is in flight, sends it with its
 * own send(2), which saves a hop to the loop and back at low depth. Workers
 * wait on their own semaphore for the ACK, which the loop thread reads. */
#ifndef HB_PEER_H
#define HB_PEER_H

#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "tls.h"
#include "wire.h"

struct hb_peer;

/* A frame waiting to be written into the channel. */
struct hb_txitem {
  struct hb_txitem *next;
  unsigned char head[HB_WIRE_HDR_SIZE + HB_WIRE_HELLO_SIZE]; /* header + small payload */
  uint32_t head_len;
  const unsigned char *ext;     /* large payload (WRITE data), not copied */
  uint32_t ext_len;
  uint64_t done;                /* bytes of head + ext written so far */
  void (*written)(struct hb_txitem *it);  /* loop thread, once all written */
};

/* One replicated request, on the stack of the worker that waits for it. */
struct hb_peer_io {
  struct hb_peer *peer;
  struct hb_frame frame;        /* type, flags, offset, count; id set by the loop */
  const void *payload;          /* WRITE data (count bytes) */
  struct hb_txitem tx;
  struct hb_peer_io *next;      /* the link's list of requests awaiting ACK */
  uint64_t queued_ns;           /* when it joined that list (request timeout) */
  int result;                   /* 0 ACK, -errno NACK, -ENOTCONN link lost,
                                 * -ETIMEDOUT a PROMOTE the peer did not answer */
  bool sent;                    /* all its bytes are in the channel */
  bool timed_out;               /* not answered in time: -ETIMEDOUT, not -ENOTCONN */
  sem_t done;
};

struct hb_peer_events {
  /* Run with the link's lock held, on the loop thread or on a worker or
   * apply thread that is sending (a failed send ends the link there): they
   * must not wait for the loop nor call back into the peer, except
   * hb_peer_reply_local from apply on the loop thread. */
  void (*make_hello)(void *opaque, struct hb_hello *out);
  /* 0: accept the peer; otherwise refuse with one line in msg. */
  int (*hello)(void *opaque, const struct hb_hello *remote, char *msg, size_t len);
  void (*up)(void *opaque, const struct hb_hello *remote);
  /* standalone: the link is not wanted any more (hactl disconnect, or the
   * peer excluded after a request timeout): no reconnection by itself. */
  void (*down)(void *opaque, const char *why, bool standalone);
  /* A data frame (WRITE TRIM ZERO FLUSH) to apply; a WRITE's payload comes
   * from hb_buf_alloc (4096-aligned, f->payload_len bytes) and passes to the
   * callee, which gives it back with hb_buf_free (NULL for the others). Answer with hb_peer_reply(), giving
   * back link (which connection the frame came on). Return false when the
   * callee holds as much as it will: the link reads nothing more from the
   * socket until hb_peer_resume(). */
  bool (*apply)(void *opaque, const struct hb_frame *f, void *payload, uint64_t link);
  void (*state)(void *opaque, const struct hb_state_msg *s);
  /* The peer asks to become Primary (PROMOTE): 0 grants, -EBUSY refuses. */
  int (*promote)(void *opaque);
  /* A worker's request that the peer will not answer (the link is down or
   * went down): called before the worker wakes, so that whatever it
   * records is in place before any later handshake. */
  void (*lost)(void *opaque, const struct hb_frame *f);
};

struct hb_peer_config {
  const char *self_name, *peer_name;
  const char *listen_host, *listen_port;  /* ours */
  const char *peer_host, *peer_port;      /* theirs */
  struct hb_tls_ctx *tls;                 /* NULL: plaintext (tls = off) */
  uint64_t size;                          /* exported size, for range checks */
  unsigned ping_interval_ms, ping_timeout_ms, connect_timeout_ms;
  unsigned request_timeout_ms;           /* an unanswered request ends the link */
  unsigned ack_spin_ns;                   /* see hb_peer_io_wait */
};

/* A worker alone in waiting for an ACK spins this long before it sleeps.
 * Waking a thread on the other, idle CPU costs about 20 us on this kind of
 * virtual machine (a halted vCPU must be woken: two threads passing a
 * semaphore back and forth take 39 us a round trip on two CPUs, 4 us on
 * one), and at queue depth 1 a replicated write waits for three such
 * wake-ups in a row; the spin removes the last one. With two or more
 * waiters nobody spins: the CPU is better spent on their work. */
#define HB_ACK_SPIN_US_DEFAULT 50u

/* Bind the listening socket (if we listen) so errors reach the terminal. */
int hb_peer_new(const struct hb_peer_config *cfg, const struct hb_peer_events *ev,
                void *opaque, struct hb_peer **out, char *err, size_t errlen);
/* Start the connector thread; the link runs on loop (an io_uring loop). */
int hb_peer_start(struct hb_peer *p, struct hb_loop *loop, char *err, size_t errlen);
/* Stop connecting and drop the link (before stopping the loop). */
void hb_peer_stop(struct hb_peer *p);
/* After the loop has stopped. */
void hb_peer_free(struct hb_peer *p);

/* Whether the link is up (handshake done): a hint read without a lock. */
bool hb_peer_up(const struct hb_peer *p);

/* Worker side: send io's frame; returns 0 (then hb_peer_io_wait) or
 * -ENOTCONN when the link is down (nothing was sent). The wait returns 0
 * (ACK), -errno (NACK) or -ENOTCONN (the link dropped it; recorded). */
int hb_peer_send_io(struct hb_peer *p, struct hb_peer_io *io);
int hb_peer_io_wait(struct hb_peer_io *io);

/* Any thread: answer a frame from the peer (0: ACK, else NACK with -err).
 * An answer for a connection that is gone is dropped: request ids belong to
 * one connection. */
void hb_peer_reply(struct hb_peer *p, uint64_t link, uint64_t id, int err);
/* The same, from the loop thread itself (no hop). */
void hb_peer_reply_local(struct hb_peer *p, uint64_t link, uint64_t id, int err);
/* Any thread: the apply side has room again (after apply returned false). */
void hb_peer_resume(struct hb_peer *p);

/* The loop thread made progress outside the link (a Secondary's page-cache
 * write is done): the keepalive goes on speaking for a loop that is held
 * up, not for one that is stuck. */
void hb_peer_loop_beat(struct hb_peer *p);
/* Any thread: tell the peer our role and disk state. */
void hb_peer_send_state(struct hb_peer *p, const struct hb_state_msg *s);
/* Any thread: allow or forbid connecting (hactl connect / disconnect);
 * forbidding drops a live link. */
void hb_peer_set_wanted(struct hb_peer *p, bool wanted);
/* Any thread: forbid connecting and drop a live link, logging why (the
 * peer failed a request): StandAlone until hb_peer_set_wanted(p, true). */
void hb_peer_exclude(struct hb_peer *p, const char *why);

struct hb_peer_info {
  bool up;
  bool tls;
  char tls_version[32], tls_cipher[64], tls_peer[128];
  char last_error[256];
};
void hb_peer_info(struct hb_peer *p, struct hb_peer_info *out);

#endif
