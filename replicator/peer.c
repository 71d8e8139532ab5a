/* The peer link (peer.h). Everything named link_* runs under link_lock, on
 * the loop thread except link_flush_direct (a worker or an apply thread);
 * the connector thread only makes TCP connections and hands them over. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bufpool.h"
#include "log.h"
#include "peer.h"

#define PLAIN_BUFSIZE (256u << 10)
#define RX_CHUNK (256u << 10)
#define STAGE_SIZE (16u << 10)  /* one TLS record of small frames */
#define LOOP_SEND_MAX (32u << 10) /* the loop sends this much itself (link_flush) */
/* Answers the peer has not read: past this many, this node stops reading
 * its requests until half have left. A peer that works never gets near it
 * (it has at most its own requests in flight, a few hundred); one that
 * sends and never reads would otherwise make us queue answers without end. */
#define REPLY_BACKLOG_MAX 4096u

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

enum link_state { L_DOWN, L_TLS, L_HELLO, L_UP, L_CLOSING };

struct reply {                  /* an ACK/NACK on its way to the loop */
  struct hb_req req;
  struct hb_peer *peer;
  uint64_t link;
  uint64_t id;
  int err;
  struct hb_txitem tx;
};

struct hb_peer {
  struct hb_peer_config cfg;
  struct hb_peer_events ev;
  void *opaque;
  struct hb_loop *loop;
  int listen_fd;
  /* refusals before a link is up: anyone who reaches the port can cause
   * them, so they are logged at most REFUSAL_LOG_BURST per window */
  uint64_t refusal_window_ns;
  unsigned refusals_logged, refusals_suppressed;
  /* the listener: the peer's addresses, resolved once at start (no DNS
   * lookup per accept); none: connections are not filtered */
  struct { int family; unsigned char ip[16]; } peer_ips[8];
  unsigned n_peer_ips;

  /* connector <-> loop */
  pthread_t connector;
  bool connector_started;
  pthread_t keepalive;          /* keepalive_main */
  bool keepalive_started;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stopping;
  bool stopped;                 /* hb_peer_stop is done: submit nothing to the loop */
  bool wanted;                  /* hactl connect/disconnect */
  bool busy;                    /* a socket is with the loop */
  bool link_was_up;             /* that socket got as far as L_UP */
  struct hb_peer_info info;     /* under lock, for status */
  int up_flag;                  /* atomic hint for workers */
  int waiters;                  /* workers in hb_peer_io_wait (atomic) */

  /* The link: its state, its SSL and its buffers, under link_lock. The
   * loop thread takes it in every callback; a worker takes it to put its
   * own frame into the channel and, when no send is in flight, to send it
   * with its own send(2): no hop to the loop and back on the way out.
   * Recursive: an ACK made while a received frame is applied (inside the
   * loop's callback) is queued from there. */
  pthread_mutex_t link_lock;
  int lock_depth;               /* of link_lock, by its holder */
  struct hb_peer_io *incoming;  /* workers' requests not yet taken (a stack) */
  struct hb_req kick_req;       /* hands unsent output to the loop */
  bool kick_queued;
  struct hb_req flush_req;      /* flushes answers once a batch of completions is done */
  bool flush_queued;
  enum link_state st;
  int fd;
  struct hb_tls *tls;
  unsigned char *pout;          /* plaintext mode: out buffer */
  size_t pout_len;
  unsigned char *pin;           /* plaintext mode: in buffer */
  size_t pin_off, pin_len;
  bool eof;
  bool rx_paused;               /* the apply side is full: no recv until it drains */
  bool rx_backlog;              /* the peer does not read our answers: no recv until they leave */
  unsigned replies_queued;      /* answers in txq, not yet in the channel */
  struct hb_req rx_req, tx_req, timer_req, attach_req, want_req;
  bool rx_busy, tx_busy, timer_busy;
  size_t tx_inflight;           /* bytes of the channel's out run in the send */
  struct hb_txitem *txq, **txq_tail;
  unsigned char stage[STAGE_SIZE];
  size_t stage_len, stage_off;
  struct hb_txitem ctl_tx;      /* HELLO / PING / PONG / STATE: one at a time each */
  struct hb_txitem ping_tx, pong_tx, state_tx;
  bool ping_queued, pong_queued, state_queued;
  struct hb_state_msg state_next;
  bool state_pending;
  bool hello_sent;              /* our HELLO is out on this connection */
  struct hb_peer_io *pending, **pending_tail;
  uint64_t next_id;
  uint64_t link_gen;            /* which connection this is (1, 2, ...) */
  unsigned char *rx;            /* plaintext frames */
  size_t rx_len, rx_cap;
  struct hb_frame rxd_frame;    /* a WRITE whose data is being received */
  unsigned char *rxd;           /* straight into its own buffer (bufpool) */
  size_t rxd_got;
  uint64_t last_rx_ns, last_tx_ns, attach_ns;
  uint64_t timer_due_ns;        /* when the armed timer should fire (0: not armed) */
  uint64_t loop_beat_ns;        /* the loop's last sign of progress (atomic; keepalive_main) */
  char why[256];
};

/* ---- the channel: TLS or plaintext behind one interface ---- */

static ssize_t ch_write(struct hb_peer *p, const void *buf, size_t len)
{
  size_t n;

  if (p->tls)
    return hb_tls_write(p->tls, buf, len);
  n = PLAIN_BUFSIZE - p->pout_len;
  if (n == 0)
    return -EAGAIN;
  if (n > len)
    n = len;
  memcpy(p->pout + p->pout_len, buf, n);
  p->pout_len += n;
  return (ssize_t) n;
}

static size_t ch_pending_out(struct hb_peer *p, const void **buf)
{
  if (p->tls)
    return hb_tls_pending_out(p->tls, buf);
  *buf = p->pout;
  return p->pout_len;
}

static void ch_consume_out(struct hb_peer *p, size_t n)
{
  if (p->tls) {
    hb_tls_consume_out(p->tls, n);
    return;
  }
  memmove(p->pout, p->pout + n, p->pout_len - n);
  p->pout_len -= n;
}

static size_t ch_in_space(struct hb_peer *p, void **buf)
{
  if (p->tls)
    return hb_tls_in_space(p->tls, buf);
  if (p->pin_off == p->pin_len)
    p->pin_off = p->pin_len = 0;
  *buf = p->pin + p->pin_len;
  return PLAIN_BUFSIZE - p->pin_len;
}

static void ch_in_commit(struct hb_peer *p, size_t n)
{
  if (p->tls)
    hb_tls_in_commit(p->tls, n);
  else
    p->pin_len += n;
}

static ssize_t ch_read(struct hb_peer *p, void *buf, size_t len)
{
  size_t n;

  if (p->tls)
    return hb_tls_read(p->tls, buf, len);
  n = p->pin_len - p->pin_off;
  if (n == 0)
    return p->eof ? 0 : -EAGAIN;
  if (n > len)
    n = len;
  memcpy(buf, p->pin + p->pin_off, n);
  p->pin_off += n;
  return (ssize_t) n;
}

/* ---- the link ---- */

static void link_fail(struct hb_peer *p, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static void link_flush(struct hb_peer *p);
static void link_post_recv(struct hb_peer *p);
static void on_send(struct hb_req *req);

static bool is_stopping(struct hb_peer *p)
{
  pthread_mutex_lock(&p->lock);
  bool s = p->stopping;
  pthread_mutex_unlock(&p->lock);
  return s;
}

static void set_info_error(struct hb_peer *p, const char *why)
{
  pthread_mutex_lock(&p->lock);
  snprintf(p->info.last_error, sizeof p->info.last_error, "%s", why);
  pthread_mutex_unlock(&p->lock);
}

static void txq_push(struct hb_peer *p, struct hb_txitem *it)
{
  it->next = NULL;
  it->done = 0;
  *p->txq_tail = it;
  p->txq_tail = &it->next;
}

static void build(struct hb_txitem *it, const struct hb_frame *f,
                  const void *small, uint32_t small_len, const void *ext,
                  void (*written)(struct hb_txitem *))
{
  int r = hb_wire_encode_header(f, it->head, sizeof it->head);
  if (r != (int) HB_WIRE_HDR_SIZE)
    abort();    /* our own frame breaking the rules is a bug */
  if (small_len)
    memcpy(it->head + HB_WIRE_HDR_SIZE, small, small_len);
  it->head_len = HB_WIRE_HDR_SIZE + small_len;
  it->ext = ext;
  it->ext_len = ext ? f->payload_len : 0;
  it->written = written;
}

static void ctl_written(struct hb_txitem *it)
{
  (void) it;
}

static void ping_written(struct hb_txitem *it)
{
  struct hb_peer *p = (struct hb_peer *) ((char *) it - offsetof(struct hb_peer, ping_tx));
  p->ping_queued = false;
}

/* Under link_lock, no PING queued: queue one. */
static void queue_ping(struct hb_peer *p)
{
  struct hb_frame ping = { .type = HB_WIRE_PING };

  build(&p->ping_tx, &ping, NULL, 0, NULL, ping_written);
  p->ping_queued = true;
  txq_push(p, &p->ping_tx);
}

static void pong_written(struct hb_txitem *it)
{
  struct hb_peer *p = (struct hb_peer *) ((char *) it - offsetof(struct hb_peer, pong_tx));
  p->pong_queued = false;
}

static void state_written(struct hb_txitem *it);

static void queue_state(struct hb_peer *p)
{
  unsigned char buf[HB_WIRE_STATE_SIZE];
  struct hb_frame f = { .type = HB_WIRE_STATE, .payload_len = HB_WIRE_STATE_SIZE };

  struct hb_state_msg next;

  if (p->state_queued || p->st != L_UP)
    return;
  pthread_mutex_lock(&p->lock);
  bool pending = p->state_pending;
  next = p->state_next;
  p->state_pending = false;
  pthread_mutex_unlock(&p->lock);
  if (!pending)
    return;
  hb_wire_encode_state(&next, buf, sizeof buf);
  build(&p->state_tx, &f, buf, sizeof buf, NULL, state_written);
  p->state_queued = true;
  txq_push(p, &p->state_tx);
}

static void state_written(struct hb_txitem *it)
{
  struct hb_peer *p = (struct hb_peer *) ((char *) it - offsetof(struct hb_peer, state_tx));
  p->state_queued = false;
  queue_state(p);               /* a newer state came meanwhile */
}

/* Move queued frames into the channel, then start a send of its output. */
static bool link_open(const struct hb_peer *p)
{
  return p->st == L_HELLO || p->st == L_UP;
}

static void txq_pop(struct hb_peer *p)
{
  struct hb_txitem *it = p->txq;
  p->txq = it->next;
  if (!p->txq)
    p->txq_tail = &p->txq;
  it->written(it);
}

/* Bytes of the head item's payload not yet taken. */
static uint64_t ext_left(const struct hb_txitem *it)
{
  return it->done < it->head_len ? it->ext_len
                                 : it->ext_len - (it->done - it->head_len);
}

/* Copy queued frames into the stage, so that many small frames (headers,
 * ACKs, 4 KiB writes) become one TLS record and one write; a large payload
 * is left for link_flush to write without the copy. */
static void stage_fill(struct hb_peer *p)
{
  while (p->txq && p->stage_len < STAGE_SIZE) {
    struct hb_txitem *it = p->txq;
    size_t room = STAGE_SIZE - p->stage_len, n;

    if (it->done < it->head_len) {
      n = it->head_len - it->done;
      if (n > room)
        n = room;
      memcpy(p->stage + p->stage_len, it->head + it->done, n);
    } else {
      uint64_t left = ext_left(it);
      if (left > STAGE_SIZE / 2)
        return;                 /* goes straight to the channel */
      n = left < room ? (size_t) left : room;
      memcpy(p->stage + p->stage_len, it->ext + (it->done - it->head_len), n);
    }
    p->stage_len += n;
    it->done += n;
    if (it->done == (uint64_t) it->head_len + it->ext_len)
      txq_pop(p);
  }
}

/* Move queued frames into the channel; false when the link failed. */
static bool link_fill(struct hb_peer *p)
{
  while (link_open(p)) {
    const unsigned char *src;
    size_t len;
    bool staged = p->stage_off < p->stage_len;
    ssize_t w;

    if (!staged) {
      p->stage_off = p->stage_len = 0;
      if (!p->txq)
        break;
      stage_fill(p);
      staged = p->stage_len > 0;
    }
    if (staged) {
      src = p->stage + p->stage_off;
      len = p->stage_len - p->stage_off;
    } else {                    /* a large payload, written in place */
      struct hb_txitem *it = p->txq;
      src = it->ext + (it->done - it->head_len);
      len = (size_t) ext_left(it);
    }
    w = ch_write(p, src, len);
    if (w == -EAGAIN)
      break;
    if (w < 0) {
      link_fail(p, "TLS: %s", hb_tls_error(p->tls));
      return false;
    }
    if (staged) {
      p->stage_off += (size_t) w;
    } else {
      p->txq->done += (uint64_t) w;
      if (ext_left(p->txq) == 0)
        txq_pop(p);
    }
  }
  return true;
}

/* Loop thread: move queued frames into the channel, then start a send of
 * its output. */
/* Under link_lock, no send in flight: the channel's output leaves through
 * this thread's own send(2), as far as the socket takes it at once, while
 * each contiguous run of it is at most max bytes. 0, or the -errno of a
 * failed send (the link is not ended here); a link_fill that fails ends
 * the link itself (p->st says so). */
static int send_direct(struct hb_peer *p, size_t max)
{
  const void *out;
  size_t n;

  while (link_fill(p) && !p->tx_busy && (n = ch_pending_out(p, &out)) > 0 && n <= max) {
    ssize_t w = send(p->fd, out, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (w <= 0)
      return w < 0 ? -errno : -EIO;
    p->last_tx_ns = hb_now_ns();
    ch_consume_out(p, (size_t) w);
  }
  return 0;
}

static void link_flush(struct hb_peer *p)
{
  const void *out;
  size_t n;

  if (p->st == L_DOWN || p->st == L_CLOSING || p->tx_busy)
    return;
  /* Small output (answers, pings, a few small frames: all a Secondary
   * sends) leaves at once through our own send(2), as far as the socket
   * takes it; the ring is for what must wait for room, and for large
   * output, which a send in flight moves while the loop goes on. So on a
   * Secondary a send is in flight only while the socket is full, and the
   * keepalive thread can send while the loop writes into the page cache:
   * an io_uring send prepared just before such a write would stay "in
   * flight" until the write is over, and hold everything behind it. A
   * full socket, or an error: the ring's send takes the rest and reports
   * the error from its completion, as before. The callers (a failed
   * handshake sending its alert, attach) count on link_flush not ending
   * the link on a send error. send_direct moves queued frames into the
   * channel first (link_fill), which may end the link. */
  send_direct(p, LOOP_SEND_MAX);
  if (p->st == L_DOWN || p->st == L_CLOSING || (n = ch_pending_out(p, &out)) == 0)
    return;
  p->tx_busy = true;
  p->tx_inflight = n;
  p->tx_req = (struct hb_req) { .op = HB_OP_SEND, .fd = p->fd, .buf = (char *) out,
                                .len = n, .complete = on_send, .opaque = p };
  p->last_tx_ns = hb_now_ns();
  hb_loop_submit_local(p->loop, &p->tx_req);
}

static void on_link_call(struct hb_req *req);

/* Any other thread, under link_lock: the same, but when no send is in
 * flight the output goes out through this thread's own send(2), as far as
 * the socket takes it without waiting; what is left (a full socket, a large
 * payload past the channel's buffer) is the loop's. While the loop's send
 * is in flight the frames wait in the channel and leave with its next one:
 * batching comes from the queue depth. */
static void link_flush_direct(struct hb_peer *p)
{
  const void *out;

  if (p->st != L_UP)
    return;
  int r = send_direct(p, SIZE_MAX);
  if (r < 0 && p->st == L_UP) {
    link_fail(p, "send: %s", r == -EIO ? "no progress" : strerror(-r));
    return;
  }
  if (p->st != L_UP || p->tx_busy || p->kick_queued)
    return;
  if (p->txq || ch_pending_out(p, &out) > 0) {
    p->kick_queued = true;
    p->kick_req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_link_call, .opaque = p };
    if (hb_loop_submit(p->loop, &p->kick_req) < 0) {
      p->kick_queued = false;
      link_fail(p, "cannot hand the output to the loop thread");
    }
  }
}

/* A request the peer will not answer: the resource records it as out of
 * sync here, on the loop thread, before the worker is woken and before any
 * later handshake can look at the out-of-sync count. */
static void io_lost(struct hb_peer *p, struct hb_peer_io *io)
{
  io->result = io->timed_out ? -ETIMEDOUT : -ENOTCONN;
  if (p->ev.lost)
    p->ev.lost(p->opaque, &io->frame);
  sem_post(&io->done);
}

static void fail_pending(struct hb_peer *p)
{
  struct hb_peer_io *io = p->pending;

  p->pending = NULL;
  p->pending_tail = &p->pending;
  while (io) {
    struct hb_peer_io *next = io->next;
    io_lost(p, io);
    io = next;
  }
}

static void io_written(struct hb_txitem *it);

static void link_lock(struct hb_peer *p)
{
  pthread_mutex_lock(&p->link_lock);
  p->lock_depth++;
}

/* Under link_lock: the requests workers left on p->incoming, oldest first,
 * into the send queue (or answered -ENOTCONN, and recorded, when the link
 * is down), then out. */
static void take_incoming(struct hb_peer *p, bool on_loop)
{
  struct hb_peer_io *io = __atomic_exchange_n(&p->incoming, NULL, __ATOMIC_ACQUIRE);
  struct hb_peer_io *fifo = NULL;
  uint64_t now;

  if (!io)
    return;
  now = hb_now_ns();
  while (io) {                  /* the stack is newest first */
    struct hb_peer_io *next = io->next;
    io->next = fifo;
    fifo = io;
    io = next;
  }
  for (io = fifo; io; io = fifo) {
    fifo = io->next;
    if (p->st != L_UP) {
      io_lost(p, io);
      continue;
    }
    /* A STATE made before this PROMOTE (a demotion, a grant taken back)
     * leaves before it, as it would through the loop: the peer must not
     * weigh our promotion against our role of before. */
    if (io->frame.type == HB_WIRE_PROMOTE)
      queue_state(p);
    io->frame.id = ++p->next_id;
    io->queued_ns = now;
    build(&io->tx, &io->frame, NULL, 0, io->frame.payload_len ? io->payload : NULL,
          io_written);
    io->next = NULL;
    *p->pending_tail = io;
    p->pending_tail = &io->next;
    txq_push(p, &io->tx);
  }
  /* If that fails the link, the requests are answered -ENOTCONN. */
  if (on_loop)
    link_flush(p);
  else
    link_flush_direct(p);
}

/* The outermost unlock sends what workers queued meanwhile; a worker that
 * queues after that and finds the lock taken is served by the next holder,
 * or by this loop when the lock is free again. */
static void link_unlock(struct hb_peer *p, bool on_loop)
{
  for (;;) {
    if (p->lock_depth == 1)
      take_incoming(p, on_loop);
    bool outer = --p->lock_depth == 0;
    pthread_mutex_unlock(&p->link_lock);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);   /* pairs with hb_peer_send_io */
    if (!outer || !__atomic_load_n(&p->incoming, __ATOMIC_ACQUIRE))
      return;
    if (pthread_mutex_trylock(&p->link_lock) != 0)
      return;
    p->lock_depth++;
  }
}

/* Drop everything; once the ring holds no request on the socket, close it
 * and tell the connector. */
static void link_finish(struct hb_peer *p)
{
  if (p->rx_busy || p->tx_busy)
    return;                     /* their completions call us again */
  close(p->fd);
  p->fd = -1;
  hb_tls_free(p->tls);
  p->tls = NULL;
  p->st = L_DOWN;
  p->rx_len = 0;
  hb_buf_free(p->rxd, p->rxd_frame.payload_len);
  p->rxd = NULL;
  p->rx_paused = false;
  p->rx_backlog = false;
  p->stage_len = p->stage_off = 0;
  p->pout_len = p->pin_len = p->pin_off = 0;
  p->eof = false;
  pthread_mutex_lock(&p->lock);
  p->busy = false;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->lock);
}

#define REFUSAL_LOG_BURST 20
#define REFUSAL_LOG_WINDOW_NS (10ull * 1000000000u)

/* Under link_lock. */
static bool refusal_log_allowed(struct hb_peer *p)
{
  uint64_t now = hb_now_ns();

  if (now - p->refusal_window_ns > REFUSAL_LOG_WINDOW_NS) {
    p->refusal_window_ns = now;
    p->refusals_logged = 0;
  }
  if (p->refusals_logged < REFUSAL_LOG_BURST) {
    p->refusals_logged++;
    return true;
  }
  p->refusals_suppressed++;
  return false;
}

static void link_fail(struct hb_peer *p, const char *fmt, ...)
{
  bool was_up = p->st == L_UP, wanted;
  va_list ap;

  if (p->st == L_CLOSING || p->st == L_DOWN)
    return;
  va_start(ap, fmt);
  vsnprintf(p->why, sizeof p->why, fmt, ap);
  va_end(ap);
  if (was_up || refusal_log_allowed(p)) {
    if (!was_up && p->refusals_suppressed) {
      hb_error("peer %s: %s (and %u more refused connections not logged)", p->cfg.peer_name,
               p->why, p->refusals_suppressed);
      p->refusals_suppressed = 0;
    } else {
      hb_error("peer %s: %s", p->cfg.peer_name, p->why);
    }
  }
  set_info_error(p, p->why);
  __atomic_store_n(&p->up_flag, 0, __ATOMIC_RELEASE);
  pthread_mutex_lock(&p->lock);
  p->info.up = false;
  p->info.tls_version[0] = p->info.tls_cipher[0] = p->info.tls_peer[0] = 0;
  wanted = p->wanted;
  pthread_mutex_unlock(&p->lock);
  p->st = L_CLOSING;
  /* Frames not yet in the channel are dropped; their owners hear below. */
  for (struct hb_txitem *it = p->txq, *next; it; it = next) {
    next = it->next;
    if (it == &p->ping_tx) p->ping_queued = false;
    if (it == &p->pong_tx) p->pong_queued = false;
    if (it == &p->state_tx) p->state_queued = false;
    if (it->written != ctl_written && it->written != ping_written &&
        it->written != pong_written && it->written != state_written)
      it->written(it);          /* frees replies; worker frames are below */
  }
  p->txq = NULL;
  p->txq_tail = &p->txq;
  fail_pending(p);
  if (was_up && p->ev.down)
    p->ev.down(p->opaque, p->why, !wanted);
  shutdown(p->fd, SHUT_RDWR);   /* completes the ring's recv and send */
  link_finish(p);
}

static void send_hello(struct hb_peer *p)
{
  struct hb_hello h;
  unsigned char buf[HB_WIRE_HELLO_SIZE];
  struct hb_frame f = { .type = HB_WIRE_HELLO, .payload_len = HB_WIRE_HELLO_SIZE };

  memset(&h, 0, sizeof h);
  p->ev.make_hello(p->opaque, &h);
  if (hb_wire_encode_hello(&h, buf, sizeof buf) != (int) HB_WIRE_HELLO_SIZE) {
    link_fail(p, "cannot encode our HELLO");
    return;
  }
  build(&p->ctl_tx, &f, buf, sizeof buf, NULL, ctl_written);
  txq_push(p, &p->ctl_tx);
  p->hello_sent = true;
}

static void link_up(struct hb_peer *p, const struct hb_hello *remote)
{
  p->st = L_UP;
  pthread_mutex_lock(&p->lock);
  p->info.up = true;
  p->info.tls = p->tls != NULL;
  snprintf(p->info.tls_version, sizeof p->info.tls_version, "%s",
           p->tls ? hb_tls_version(p->tls) : "");
  snprintf(p->info.tls_cipher, sizeof p->info.tls_cipher, "%s",
           p->tls ? hb_tls_cipher(p->tls) : "");
  snprintf(p->info.tls_peer, sizeof p->info.tls_peer, "%s",
           p->tls ? hb_tls_peer(p->tls) : remote->node_name);
  p->info.last_error[0] = 0;
  p->link_was_up = true;
  pthread_mutex_unlock(&p->lock);
  __atomic_store_n(&p->up_flag, 1, __ATOMIC_RELEASE);
  hb_info("peer %s: connected (%s%s%s)", p->cfg.peer_name,
          p->tls ? hb_tls_version(p->tls) : "tls off, insecure",
          p->tls ? " " : "", p->tls ? hb_tls_cipher(p->tls) : "");
  if (p->ev.up)
    p->ev.up(p->opaque, remote);
  queue_state(p);
}

static void handle_ack(struct hb_peer *p, const struct hb_frame *f, const unsigned char *payload)
{
  struct hb_peer_io **pp = &p->pending, *io;
  int err = 0;
  char msg[128];

  while (*pp && (*pp)->frame.id != f->id)
    pp = &(*pp)->next;
  if (!(io = *pp)) {
    link_fail(p, "%s for unknown request id %llu", hb_wire_type_name(f->type),
              (unsigned long long) f->id);
    return;
  }
  if (!io->sent) {              /* its bytes are still ours to send */
    link_fail(p, "%s for request %llu before it was sent", hb_wire_type_name(f->type),
              (unsigned long long) f->id);
    return;
  }
  if (f->type == HB_WIRE_NACK &&
      hb_wire_decode_nack(payload, f->payload_len, &err, msg, sizeof msg) < 0) {
    link_fail(p, "bad NACK: %s", msg);
    return;
  }
  /* -ENOTCONN is this side's own answer: "the link dropped the request,
   * and ev_lost recorded it". A peer's NACK never means that, whatever
   * its disk said (a file system over FUSE whose daemon died says
   * ENOTCONN): it is a failure like any other, so the Primary records the
   * range and excludes the peer. */
  if (err == ENOTCONN)
    err = EIO;
  *pp = io->next;
  if (!*pp)
    p->pending_tail = pp;
  io->result = -err;
  sem_post(&io->done);
}

static void handle_frame(struct hb_peer *p, const struct hb_frame *f, const unsigned char *payload)
{
  char msg[256];

  if (p->st == L_HELLO) {
    struct hb_hello remote, local;
    if (f->type != HB_WIRE_HELLO) {
      link_fail(p, "%s frame before the handshake", hb_wire_type_name(f->type));
      return;
    }
    if (hb_wire_decode_hello(payload, f->payload_len, &remote, msg, sizeof msg) < 0) {
      link_fail(p, "bad HELLO: %s", msg);
      return;
    }
    memset(&local, 0, sizeof local);
    p->ev.make_hello(p->opaque, &local);
    if (hb_wire_check_hello(&local, &remote, msg, sizeof msg) < 0 ||
        strcmp(remote.node_name, p->cfg.peer_name) != 0) {
      if (!msg[0] || strcmp(remote.node_name, p->cfg.peer_name) != 0)
        snprintf(msg, sizeof msg, "peer says it is node '%s', expected '%s'",
                 remote.node_name, p->cfg.peer_name);
      link_flush(p);            /* our HELLO, so the peer judges for itself */
      link_fail(p, "handshake refused: %s", msg);
      return;
    }
    msg[0] = 0;
    /* Workers may send from the moment the resource says Connected (inside
     * ev.hello), so the link must already take requests: they queue on
     * p->incoming and leave once this frame is handled and the link is up
     * (we hold the link's lock). Were it the other way round, a write in
     * between would find the link "down", be recorded as out of sync only,
     * and the pair would stay Connected with different data. A refusal
     * clears the flag again (link_fail), before any request could have
     * been sent. */
    __atomic_store_n(&p->up_flag, 1, __ATOMIC_RELEASE);
    if (p->ev.hello(p->opaque, &remote, msg, sizeof msg) != 0) {
      /* Our HELLO may still wait in the queue (both sides send theirs at
       * once): out with it first, so that the peer reads it and reaches
       * its own verdict (both say SplitBrain, or each names what it
       * refuses) rather than only seeing the connection closed. */
      link_flush(p);
      link_fail(p, "connection refused: %s", msg);
      return;
    }
    link_up(p, &remote);
    return;
  }

  if (hb_wire_check_range(f, p->cfg.size, msg, sizeof msg) < 0) {
    link_fail(p, "%s", msg);
    return;
  }
  switch (f->type) {
  case HB_WIRE_ACK:
  case HB_WIRE_NACK:
    handle_ack(p, f, payload);
    return;
  case HB_WIRE_TRIM:
  case HB_WIRE_ZERO:
  case HB_WIRE_FLUSH:
    /* false: finish what is buffered, read no more. true after a false:
     * the apply side took its pause back (room came meanwhile), and no
     * resume will come to undo it. */
    p->rx_paused = !p->ev.apply(p->opaque, f, NULL, p->link_gen);
    return;
  case HB_WIRE_PING:
    if (!p->pong_queued) {
      struct hb_frame pong = { .type = HB_WIRE_PONG, .id = f->id };
      build(&p->pong_tx, &pong, NULL, 0, NULL, pong_written);
      p->pong_queued = true;
      txq_push(p, &p->pong_tx);
    }
    return;
  case HB_WIRE_PONG:
    return;
  case HB_WIRE_PROMOTE:
    hb_peer_reply_local(p, p->link_gen, f->id, p->ev.promote ? p->ev.promote(p->opaque) : -EBUSY);
    return;
  case HB_WIRE_STATE: {
    struct hb_state_msg s;
    if (hb_wire_decode_state(payload, f->payload_len, &s, msg, sizeof msg) < 0) {
      link_fail(p, "bad STATE: %s", msg);
      return;
    }
    if (p->ev.state)
      p->ev.state(p->opaque, &s);
    return;
  }
  default:
    link_fail(p, "unexpected %s frame", hb_wire_type_name(f->type));
  }
}

/* A WRITE whose data is all here: to the apply side, which owns it now. */
static void apply_data(struct hb_peer *p, const struct hb_frame *f, unsigned char *data)
{
  p->rx_paused = !p->ev.apply(p->opaque, f, data, p->link_gen);   /* as above */
}

/* A WRITE's header: its data goes into a buffer of its own, the part
 * already in rx by one copy and the rest straight from the channel, so
 * that a large write is never copied twice nor moved about in rx. Returns
 * the bytes of rx used (header and data), 0 when the link failed. */
static size_t begin_data(struct hb_peer *p, const struct hb_frame *f,
                         const unsigned char *at, size_t avail)
{
  size_t have = avail - HB_WIRE_HDR_SIZE;
  unsigned char *buf;
  char msg[256];

  if (hb_wire_check_range(f, p->cfg.size, msg, sizeof msg) < 0) {
    link_fail(p, "%s", msg);
    return 0;
  }
  buf = hb_buf_alloc(f->payload_len);
  if (!buf) {
    link_fail(p, "out of memory for a %u-byte write", f->payload_len);
    return 0;
  }
  if (have > f->payload_len)
    have = f->payload_len;
  memcpy(buf, at + HB_WIRE_HDR_SIZE, have);
  if (have == f->payload_len) {
    apply_data(p, f, buf);
  } else {
    p->rxd_frame = *f;
    p->rxd = buf;
    p->rxd_got = have;
  }
  return HB_WIRE_HDR_SIZE + have;
}

/* Read from the channel: into the data buffer of a WRITE being received,
 * or into rx. Returns bytes read, -EAGAIN, 0 at the end, or -1 after
 * link_fail. */
static ssize_t link_read(struct hb_peer *p)
{
  ssize_t n;

  if (p->rxd) {
    n = ch_read(p, p->rxd + p->rxd_got, p->rxd_frame.payload_len - p->rxd_got);
  } else {
    if (p->rx_cap - p->rx_len < RX_CHUNK) {
      size_t cap = p->rx_cap * 2;
      unsigned char *nb = realloc(p->rx, cap);
      if (!nb) {
        link_fail(p, "out of memory");
        return -1;
      }
      p->rx = nb;
      p->rx_cap = cap;
    }
    n = ch_read(p, p->rx + p->rx_len, p->rx_cap - p->rx_len);
  }
  if (n == 0) {
    link_fail(p, "peer closed the connection");
    return -1;
  }
  if (n < 0 && n != -EAGAIN) {
    link_fail(p, "TLS: %s", hb_tls_error(p->tls));
    return -1;
  }
  return n;
}

/* Act on every whole frame in rx; keep a partial one at its start. */
/* Types this build acts on. The others are valid on the wire (resync and
 * verify come later) but refused from the header, before their payload
 * (up to 64 MiB) is buffered. */
static bool handled_type(uint16_t type)
{
  switch (type) {
  case HB_WIRE_HELLO: case HB_WIRE_WRITE: case HB_WIRE_TRIM: case HB_WIRE_ZERO:
  case HB_WIRE_FLUSH: case HB_WIRE_ACK: case HB_WIRE_NACK: case HB_WIRE_PING:
  case HB_WIRE_PONG: case HB_WIRE_STATE: case HB_WIRE_PROMOTE:
    return true;
  default:
    return false;
  }
}

static bool link_frames(struct hb_peer *p)
{
  char msg[256];
  size_t off = 0;

  while (!p->rxd && p->rx_len - off >= HB_WIRE_HDR_SIZE) {
    struct hb_frame f;
    int r = hb_wire_decode_header(p->rx + off, p->rx_len - off, &f, msg, sizeof msg);
    if (r < 0) {
      link_fail(p, "bad frame from peer: %s", msg);
      return false;
    }
    if (p->st == L_HELLO && f.type != HB_WIRE_HELLO) {
      link_fail(p, "%s frame before the handshake", hb_wire_type_name(f.type));
      return false;
    }
    if (!handled_type(f.type)) {
      link_fail(p, "unexpected %s frame", hb_wire_type_name(f.type));
      return false;
    }
    if (f.type == HB_WIRE_WRITE) {
      size_t used = begin_data(p, &f, p->rx + off, p->rx_len - off);
      if (!used)
        return false;
      off += used;
    } else {
      if (p->rx_len - off < HB_WIRE_HDR_SIZE + (size_t) f.payload_len)
        break;
      handle_frame(p, &f, p->rx + off + HB_WIRE_HDR_SIZE);
      off += HB_WIRE_HDR_SIZE + f.payload_len;
    }
    if (p->st == L_CLOSING || p->st == L_DOWN)
      return false;
  }
  if (off) {
    memmove(p->rx, p->rx + off, p->rx_len - off);
    p->rx_len -= off;
  }
  return true;
}

/* Take plaintext out of the channel and act on every whole frame. */
static void link_process(struct hb_peer *p)
{
  if (p->st == L_TLS) {
    int r = hb_tls_handshake(p->tls);
    if (r == -EAGAIN) {
      link_flush(p);
      return;
    }
    if (r < 0) {
      link_flush(p);            /* the alert tells the peer why */
      link_fail(p, "TLS handshake: %s", hb_tls_error(p->tls));
      return;
    }
    p->st = L_HELLO;
    send_hello(p);
  }
  for (;;) {
    ssize_t n = link_read(p);
    if (n == -EAGAIN)
      break;
    if (n < 0)
      return;
    if (p->rxd) {
      p->rxd_got += (size_t) n;
      if (p->rxd_got == p->rxd_frame.payload_len) {
        unsigned char *data = p->rxd;
        p->rxd = NULL;
        apply_data(p, &p->rxd_frame, data);
        if (!link_frames(p))  /* frames that came after it in rx */
          return;
      }
      continue;
    }
    p->rx_len += (size_t) n;
    if (!link_frames(p))
      return;
  }
  link_flush(p);
}

static void on_recv_locked(struct hb_peer *p, struct hb_req *req)
{
  p->rx_busy = false;
  if (p->st == L_CLOSING) {
    link_finish(p);
    return;
  }
  if (req->res < 0) {
    link_fail(p, "recv: %s", strerror(-req->res));
    return;
  }
  if (req->res == 0) {
    if (p->tls)
      hb_tls_feed_eof(p->tls);
    p->eof = true;
  } else {
    ch_in_commit(p, (size_t) req->res);
    p->last_rx_ns = hb_now_ns();
  }
  link_process(p);
  if (p->st != L_CLOSING && p->st != L_DOWN) {
    if (p->eof)
      link_fail(p, "peer closed the connection");
    else if (!p->rx_paused && !p->rx_backlog)
      link_post_recv(p);
  }
}

static void on_recv(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  on_recv_locked(p, req);
  link_unlock(p, true);
}

/* Loop thread, under link_lock: the peer reads our answers again (half of
 * the backlog has left): so do we. Called when a send completes and on
 * every tick (answers may also leave through a worker's own send). */
static void backlog_check(struct hb_peer *p)
{
  if (!p->rx_backlog || p->replies_queued > REPLY_BACKLOG_MAX / 2)
    return;
  p->rx_backlog = false;
  p->last_rx_ns = hb_now_ns();  /* we were not listening */
  if ((p->st == L_HELLO || p->st == L_UP) && !p->rx_paused)
    link_post_recv(p);
}

static void link_post_recv(struct hb_peer *p)
{
  void *buf;
  size_t n;

  if (p->rx_busy)
    return;
  n = ch_in_space(p, &buf);
  if (n == 0) {
    link_fail(p, "receive buffer full");
    return;
  }
  p->rx_busy = true;
  p->rx_req = (struct hb_req) { .op = HB_OP_RECV, .fd = p->fd, .buf = buf, .len = n,
                                .complete = on_recv, .opaque = p };
  hb_loop_submit_local(p->loop, &p->rx_req);
}

static void on_send(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  p->tx_busy = false;
  if (p->st == L_CLOSING) {
    link_finish(p);
  } else if (req->res < 0) {
    link_fail(p, "send: %s", strerror(-req->res));
  } else {
    ch_consume_out(p, p->tx_inflight);
    link_flush(p);
    backlog_check(p);
  }
  link_unlock(p, true);
}

/* Loop thread: one of the link's two CALLs ran, the kick (a worker left
 * output for the loop) or the batch flush (answers made on the loop): it
 * may be queued again, and what is pending goes out. */
static void on_link_call(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  if (req == &p->kick_req)
    p->kick_queued = false;
  else
    p->flush_queued = false;
  link_flush(p);
  link_unlock(p, true);
}

static void on_timer(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;
  uint64_t now;

  link_lock(p);
  backlog_check(p);             /* before the clock: it may stamp last_rx_ns */
  /* The clock is read under the lock: a worker that took the lock just
   * before may have put a request on the list stamped later than a clock
   * read before it, and now - queued_ns would wrap. */
  now = hb_now_ns();
  p->timer_busy = false;
  __atomic_store_n(&p->loop_beat_ns, now, __ATOMIC_RELAXED);
  /* A timer that fires this late means this thread was held up (a Secondary's
   * page-cache write the kernel throttled): the peer's frames that came
   * meanwhile may be in completions not yet handled, so its silence proves
   * nothing on this tick. Nor while reading is paused (our apply side is
   * full): then we do not listen; but for no longer than we would wait
   * for a request (request-timeout), or a peer that died meanwhile would
   * keep this node Connected, and unpromotable, for good. The next tick
   * judges. */
  uint64_t paused_bound = (uint64_t) (p->cfg.request_timeout_ms > p->cfg.ping_timeout_ms
                                      ? p->cfg.request_timeout_ms : p->cfg.ping_timeout_ms) * 1000000u;
  bool held_up = (p->timer_due_ns &&
                  now > p->timer_due_ns + (uint64_t) p->cfg.ping_interval_ms * 500000u) ||
                 (p->rx_paused && now - p->last_rx_ns <= paused_bound);
  if (held_up && p->st == L_UP) {
    hb_debug("peer %s: the loop was held up or is not reading; not judging the ping timeout now",
             p->cfg.peer_name);
  } else if (p->st == L_UP) {
    uint64_t silent_ms = (now - p->last_rx_ns) / 1000000u;
    if (now - p->last_rx_ns > (uint64_t) p->cfg.ping_timeout_ms * 1000000u) {
      /* Say why we heard nothing: we may not have been listening. */
      if (p->rx_paused)
        link_fail(p, "our disk has not finished the peer's earlier requests for %llu ms, "
                  "so we stopped reading from it (request timeout); dropping the link",
                  (unsigned long long) silent_ms);
      else if (p->rx_backlog)
        link_fail(p, "the peer has not read our answers for %llu ms (%u waiting), so we "
                  "stopped reading from it; dropping the link",
                  (unsigned long long) silent_ms, p->replies_queued);
      else
        link_fail(p, "no answer for %u ms (ping timeout)", p->cfg.ping_timeout_ms);
    } else if (p->pending && p->pending->frame.type == HB_WIRE_PROMOTE &&
               now > p->pending->queued_ns &&
               now - p->pending->queued_ns > (uint64_t) p->cfg.ping_timeout_ms * 1000000u) {
      /* A PROMOTE is answered at once by the loop that answers our pings:
       * a peer that answers those and not this one is broken or hostile.
       * The operator's promotion is refused (-ETIMEDOUT) within the ping
       * timeout rather than holding the control socket for the request
       * timeout; the link is dropped, and connects again. */
      p->pending->timed_out = true;
      link_fail(p, "the peer answers pings but not our promotion request (%llu ms); "
                "dropping the link", (unsigned long long) ((now - p->pending->queued_ns) / 1000000u));
    } else if (p->pending && p->cfg.request_timeout_ms && now > p->pending->queued_ns &&
               now - p->pending->queued_ns > (uint64_t) p->cfg.request_timeout_ms * 1000000u) {
      /* The peer answers pings but not this request: its disk hangs.
       * As DRBD does when ko-count runs out, the peer is excluded: no
       * reconnection until `hactl connect`, or every request would wait
       * this long again. The list is in sending order: its head is the
       * oldest. Its requests complete here, recorded as out of sync. */
      pthread_mutex_lock(&p->lock);
      p->wanted = false;
      pthread_mutex_unlock(&p->lock);
      link_fail(p, "%s at %llu not answered within %u ms (request timeout): the peer's disk hangs?",
                hb_wire_type_name(p->pending->frame.type),
                (unsigned long long) p->pending->frame.offset, p->cfg.request_timeout_ms);
    } else if (now - p->last_rx_ns >= (uint64_t) p->cfg.ping_interval_ms * 1000000u &&
               !p->ping_queued) {
      queue_ping(p);
      link_flush(p);
    }
  } else if ((p->st == L_TLS || p->st == L_HELLO) &&
             now - p->attach_ns > (uint64_t) p->cfg.connect_timeout_ms * 1000000u) {
    link_fail(p, "handshake did not complete within %u ms", p->cfg.connect_timeout_ms);
  }
  if (!p->timer_busy && !is_stopping(p)) {
    p->timer_busy = true;
    p->timer_req = (struct hb_req) { .op = HB_OP_TIMEOUT, .complete = on_timer, .opaque = p,
      .timeout_ns = (uint64_t) (p->cfg.ping_interval_ms < 200 ? p->cfg.ping_interval_ms : 200) * 1000000u };
    p->timer_due_ns = now + p->timer_req.timeout_ns;
    hb_loop_submit_local(p->loop, &p->timer_req);
  }
  link_unlock(p, true);
}

/* A socket from the connector (req->fd; req->mode: 1 when we connected). */
static void attach_locked(struct hb_peer *p, struct hb_req *req)
{
  char err[256];

  p->fd = req->fd;
  p->hello_sent = false;
  p->link_gen++;
  p->attach_ns = p->last_rx_ns = hb_now_ns();
  if (!p->timer_busy) {
    p->timer_due_ns = 0;
    p->timer_req.opaque = p;
    on_timer(&p->timer_req);
  }
  if (p->cfg.tls) {
    if (hb_tls_new(p->cfg.tls, req->mode ? HB_TLS_CLIENT : HB_TLS_SERVER, &p->tls,
                   err, sizeof err) < 0) {
      p->st = L_HELLO;          /* so that link_fail cleans up */
      link_fail(p, "%s", err);
      return;
    }
    p->st = L_TLS;
    link_process(p);            /* the client speaks first */
  } else {
    p->st = L_HELLO;
    send_hello(p);
  }
  if (p->st != L_CLOSING && p->st != L_DOWN) {
    link_flush(p);
    link_post_recv(p);
  }
}

static void on_attach(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  attach_locked(p, req);
  link_unlock(p, true);
}

static void io_written(struct hb_txitem *it)
{
  ((struct hb_peer_io *) ((char *) it - offsetof(struct hb_peer_io, tx)))->sent = true;
}

static void reply_written(struct hb_txitem *it)
{
  struct reply *r = (struct reply *) ((char *) it - offsetof(struct reply, tx));

  r->peer->replies_queued--;
  free(r);
}

/* Under link_lock: put an answer in the send queue; false when its
 * connection is gone (then it is freed). */
static bool queue_reply(struct hb_peer *p, struct reply *r)
{
  unsigned char nack[HB_WIRE_NACK_SIZE];

  if (p->st != L_UP || r->link != p->link_gen) {
    free(r);                    /* that connection is gone */
    return false;
  }
  if (r->err) {
    struct hb_frame f = { .type = HB_WIRE_NACK, .id = r->id, .payload_len = HB_WIRE_NACK_SIZE };
    hb_wire_encode_nack(-r->err, nack, sizeof nack);
    build(&r->tx, &f, nack, sizeof nack, NULL, reply_written);
  } else {
    struct hb_frame f = { .type = HB_WIRE_ACK, .id = r->id };
    build(&r->tx, &f, NULL, 0, NULL, reply_written);
  }
  txq_push(p, &r->tx);
  if (++p->replies_queued > REPLY_BACKLOG_MAX && !p->rx_backlog) {
    p->rx_backlog = true;       /* read no more until they leave (backlog_check) */
    hb_debug("peer %s: %u answers not read by the peer; not reading its requests until "
             "half have left", p->cfg.peer_name, p->replies_queued);
  }
  return true;
}

static void on_reply(struct hb_req *req)
{
  struct reply *r = (struct reply *) req;
  struct hb_peer *p = r->peer;

  link_lock(p);
  if (queue_reply(p, r))
    link_flush(p);
  link_unlock(p, true);
}

static void on_want(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  if (req->mode == 0 && (p->st == L_TLS || p->st == L_HELLO || p->st == L_UP))
    link_fail(p, "%s", req->opaque2 ? (const char *) req->opaque2 : "disconnected by the operator");
  link_unlock(p, true);
  free(req);
}

static void on_resume(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  if (p->rx_paused) {
    p->rx_paused = false;
    /* We were not listening: the peer's silence is counted from now. */
    p->last_rx_ns = hb_now_ns();
    if ((p->st == L_HELLO || p->st == L_UP) && !p->rx_backlog)
      link_post_recv(p);
  }
  link_unlock(p, true);
  free(req);
}

/* Any thread: a CALL to the loop (req malloc'd, freed by its callback), or
 * nothing once the peer is stopped: apply completions and the resource's
 * state changes can still come while the loop is being stopped. */
static void submit_call(struct hb_peer *p, struct hb_req *req)
{
  pthread_mutex_lock(&p->lock);
  if (p->stopped || !p->loop || hb_loop_submit(p->loop, req) < 0)
    free(req);
  pthread_mutex_unlock(&p->lock);
}

void hb_peer_resume(struct hb_peer *p)
{
  struct hb_req *req = calloc(1, sizeof *req);

  if (!req) {
    hb_error("peer: out of memory to resume reading");
    return;
  }
  *req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_resume, .opaque = p };
  submit_call(p, req);
}

static void on_stop(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  if (p->st == L_TLS || p->st == L_HELLO || p->st == L_UP)
    link_fail(p, "shutting down");
  link_unlock(p, true);
  sem_post(req->opaque2);       /* p may be freed from here on */
}

/* ---- worker side ---- */

bool hb_peer_up(const struct hb_peer *p)
{
  return p && __atomic_load_n(&p->up_flag, __ATOMIC_ACQUIRE);
}

/* Workers do not wait for the link's lock: a worker pushes its request on
 * p->incoming and takes the lock only if it is free; whoever holds the
 * lock sends what is there before letting go (link_unlock), so under load
 * one thread puts many frames into one TLS record and one send while the
 * others go straight to waiting for their ACK. */
int hb_peer_send_io(struct hb_peer *p, struct hb_peer_io *io)
{
  struct hb_peer_io *head;

  if (!hb_peer_up(p))
    return -ENOTCONN;
  io->peer = p;
  io->result = 0;
  io->sent = false;
  io->timed_out = false;
  io->frame.payload_len = io->frame.type == HB_WIRE_WRITE ? io->frame.count : 0;
  sem_init(&io->done, 0, 0);
  head = __atomic_load_n(&p->incoming, __ATOMIC_RELAXED);
  do
    io->next = head;
  while (!__atomic_compare_exchange_n(&p->incoming, &head, io, true,
                                      __ATOMIC_RELEASE, __ATOMIC_RELAXED));
  /* Store incoming, then try the lock; the holder unlocks, then loads
   * incoming: each side must see the other's step (see link_unlock). */
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  if (pthread_mutex_trylock(&p->link_lock) == 0) {
    p->lock_depth++;
    link_unlock(p, false);
  }
  return 0;
}

int hb_peer_io_wait(struct hb_peer_io *io)
{
  struct hb_peer *p = io->peer;
  bool answered = false;

  if (__atomic_add_fetch(&p->waiters, 1, __ATOMIC_ACQ_REL) == 1 && p->cfg.ack_spin_ns) {
    uint64_t until = hb_now_ns() + p->cfg.ack_spin_ns;
    while (!(answered = sem_trywait(&io->done) == 0) &&
           __atomic_load_n(&p->waiters, __ATOMIC_ACQUIRE) == 1 && hb_now_ns() < until)
      for (int i = 0; i < 32; i++)
        cpu_relax();
  }
  while (!answered && !(answered = sem_wait(&io->done) == 0) && errno == EINTR)
    ;
  __atomic_sub_fetch(&p->waiters, 1, __ATOMIC_ACQ_REL);
  sem_destroy(&io->done);
  return io->result;
}

static struct reply *new_reply(struct hb_peer *p, uint64_t link, uint64_t id, int err)
{
  struct reply *r = calloc(1, sizeof *r);

  if (!r) {
    hb_error("peer: out of memory for a reply");
    return NULL;
  }
  r->peer = p;
  r->link = link;
  r->id = id;
  r->err = err;
  r->req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_reply };
  return r;
}

/* On the loop thread, the answer waits until the completions reaped with
 * it have run (a CALL queued locally runs after them): answers to a batch
 * of applied writes leave in one TLS record and one send. */
void hb_peer_reply_local(struct hb_peer *p, uint64_t link, uint64_t id, int err)
{
  struct reply *r = new_reply(p, link, id, err);

  if (!r)
    return;
  link_lock(p);
  if (queue_reply(p, r) && !p->flush_queued) {
    p->flush_queued = true;
    p->flush_req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_link_call, .opaque = p };
    hb_loop_submit_local(p->loop, &p->flush_req);
  }
  link_unlock(p, true);
}

/* Another thread (an apply worker) sends the answer itself. */
void hb_peer_reply(struct hb_peer *p, uint64_t link, uint64_t id, int err)
{
  struct reply *r = new_reply(p, link, id, err);

  if (!r)
    return;
  link_lock(p);
  if (queue_reply(p, r))
    link_flush_direct(p);
  link_unlock(p, false);
}

static void on_state(struct hb_req *req)
{
  struct hb_peer *p = req->opaque;

  link_lock(p);
  /* Our HELLO is out and no longer says what we are (promoted, demoted,
   * disk Failed since): the peer may judge it yet, and STATE cannot
   * follow before the link is up. A connection waits in the listener's
   * backlog for as long as that node does not accept (StandAlone), so in
   * clear, where the HELLO leaves at connect time, it can be old (found
   * by test-resource: a node promoted meanwhile was taken for a
   * Secondary, and only one side saw the split brain). Start again with
   * a HELLO made now. Once the link is up, the STATE below says it. */
  if (p->st == L_HELLO && p->hello_sent)
    link_fail(p, "our state changed during the handshake; connecting again");
  queue_state(p);
  link_flush(p);
  link_unlock(p, true);
  free(req);
}

void hb_peer_send_state(struct hb_peer *p, const struct hb_state_msg *s)
{
  struct hb_req *req = calloc(1, sizeof *req);

  if (!req)
    return;
  /* state_next is read on the loop; a newer state wins, except that a
   * declaration not yet sent (HB_HELLO_F_CONSISTENT: the operator said the
   * pair is identical) stays with it: a demotion right after a forced
   * promotion must not lose it, or the peer stays Inconsistent while this
   * node believes it UpToDate. */
  pthread_mutex_lock(&p->lock);
  uint32_t keep = p->state_pending ? p->state_next.flags & HB_HELLO_F_CONSISTENT : 0;
  p->state_next = *s;
  p->state_next.flags |= keep;
  p->state_pending = true;
  pthread_mutex_unlock(&p->lock);
  *req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_state, .opaque = p };
  submit_call(p, req);
}

/* Allow or forbid connecting; forbidding drops a live link on the loop,
 * with why (NULL: the operator disconnected). */
static void want(struct hb_peer *p, bool wanted, const char *why)
{
  size_t n = why ? strlen(why) + 1 : 0;
  struct hb_req *req = calloc(1, sizeof *req + n);

  pthread_mutex_lock(&p->lock);
  p->wanted = wanted;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->lock);
  if (!req)
    return;
  if (why)
    memcpy(req + 1, why, n);
  *req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_want, .opaque = p,
                           .mode = wanted, .opaque2 = why ? req + 1 : NULL };
  submit_call(p, req);
}

void hb_peer_set_wanted(struct hb_peer *p, bool wanted)
{
  want(p, wanted, NULL);
}

void hb_peer_exclude(struct hb_peer *p, const char *why)
{
  want(p, false, why);
}

void hb_peer_info(struct hb_peer *p, struct hb_peer_info *out)
{
  pthread_mutex_lock(&p->lock);
  *out = p->info;
  pthread_mutex_unlock(&p->lock);
}

/* ---- the connector thread ---- */

static int resolve(const char *host, const char *port, bool passive,
                   struct addrinfo **res, char *err, size_t errlen)
{
  struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                            .ai_flags = passive ? AI_PASSIVE : 0 };
  int r = getaddrinfo(host, port, &hints, res);

  if (r)
    return hb_fail(err, errlen, EINVAL, "%s:%s: %s", host, port, gai_strerror(r));
  return 0;
}

/* The IP address of sa (IPv4, or IPv6 with an IPv4-mapped address made
 * plain IPv4), as 16 bytes plus the family, for comparisons. */
static bool ip_of(const struct sockaddr *sa, int *family, unsigned char ip[16])
{
  static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

  memset(ip, 0, 16);
  if (sa->sa_family == AF_INET) {
    *family = AF_INET;
    memcpy(ip, &((const struct sockaddr_in *) sa)->sin_addr, 4);
    return true;
  }
  if (sa->sa_family == AF_INET6) {
    const unsigned char *a = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
    if (memcmp(a, mapped, 12) == 0) {
      *family = AF_INET;
      memcpy(ip, a + 12, 4);
    } else {
      *family = AF_INET6;
      memcpy(ip, a, 16);
    }
    return true;
  }
  return false;
}

/* The listener's filter, as DRBD's: only the peer's configured address may
 * connect; anyone else is dropped before a TLS handshake could hold the one
 * link slot for connect-timeout. The addresses are resolved once at start.
 * Where that cannot work it does not filter rather than lock the peer out:
 * the name does not resolve here (it says so once), or the peer's
 * addresses have none of the connection's family (one node configured
 * with IPv4, the other with IPv6). TLS authenticates the peer either way. */
static void learn_peer_ips(struct hb_peer *p)
{
  struct addrinfo *res;
  char err[256];

  if (resolve(p->cfg.peer_host, p->cfg.peer_port, false, &res, err, sizeof err) < 0) {
    hb_info("peer %s: cannot resolve its address here (%s): connections from any address "
            "go on to the TLS handshake", p->cfg.peer_name, err);
    return;
  }
  for (struct addrinfo *ai = res; ai && p->n_peer_ips < 8; ai = ai->ai_next) {
    int fam;
    unsigned char ip[16];
    if (ip_of(ai->ai_addr, &fam, ip)) {
      p->peer_ips[p->n_peer_ips].family = fam;
      memcpy(p->peer_ips[p->n_peer_ips].ip, ip, 16);
      p->n_peer_ips++;
    }
  }
  freeaddrinfo(res);
}

static bool from_peer(struct hb_peer *p, const struct sockaddr *sa, char *shown, size_t len)
{
  unsigned char ip[16];
  int fam;
  bool family_known = false;

  shown[0] = 0;
  if (!ip_of(sa, &fam, ip))
    return false;
  inet_ntop(fam, ip, shown, (socklen_t) len);
  for (unsigned i = 0; i < p->n_peer_ips; i++) {
    if (p->peer_ips[i].family != fam)
      continue;
    family_known = true;
    if (memcmp(p->peer_ips[i].ip, ip, 16) == 0)
      return true;
  }
  return !family_known;
}

/* The connecting side leaves from its own configured address when that is
 * a literal IP address, so that the peer's filter sees it on a host with
 * several. A name is left to the kernel's choice (a hostname may resolve to
 * 127.0.1.1 on Debian, which cannot reach the peer). */
static void bind_own(struct hb_peer *p, int fd, int family)
{
  struct addrinfo hints = { .ai_family = family, .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
  struct addrinfo *res;

  if (getaddrinfo(p->cfg.listen_host, "0", &hints, &res) != 0)
    return;
  if (bind(fd, res->ai_addr, res->ai_addrlen) < 0)
    hb_debug("peer %s: cannot leave from %s (%s): the kernel chooses", p->cfg.peer_name,
             p->cfg.listen_host, strerror(errno));
  freeaddrinfo(res);
}

static void tune(int fd)
{
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

/* Wait until the loop is done with the socket we gave it, or we stop. */
static bool wait_idle_and_wanted(struct hb_peer *p)
{
  pthread_mutex_lock(&p->lock);
  while (!p->stopping && (p->busy || !p->wanted))
    pthread_cond_wait(&p->cond, &p->lock);
  bool go = !p->stopping;
  pthread_mutex_unlock(&p->lock);
  return go;
}

static void hand_over(struct hb_peer *p, int fd, bool we_connected)
{
  tune(fd);
  pthread_mutex_lock(&p->lock);
  p->busy = true;
  pthread_mutex_unlock(&p->lock);
  p->attach_req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_attach, .opaque = p,
                                    .fd = fd, .mode = we_connected };
  if (hb_loop_submit(p->loop, &p->attach_req) < 0) {
    hb_error("peer %s: cannot hand the connection to the loop thread", p->cfg.peer_name);
    close(fd);
    pthread_mutex_lock(&p->lock);
    p->busy = false;
    pthread_mutex_unlock(&p->lock);
  }
}

/* Sleep up to ms, waking early when stopping. */
static void nap(struct hb_peer *p, unsigned ms)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);   /* p->cond waits on it */
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long) (ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&p->lock);
  if (!p->stopping)
    pthread_cond_timedwait(&p->cond, &p->lock, &ts);
  pthread_mutex_unlock(&p->lock);
}

/* Wait for the loop to be done with the socket; true when it got as far as
 * a working link (then the backoff starts again from the bottom). */
static bool link_worked(struct hb_peer *p)
{
  bool up;

  pthread_mutex_lock(&p->lock);
  while (!p->stopping && p->busy)
    pthread_cond_wait(&p->cond, &p->lock);
  up = p->link_was_up;
  p->link_was_up = false;
  pthread_mutex_unlock(&p->lock);
  return up;
}

/* connect(2) bounded by connect-timeout and cut short by stopping: a peer
 * host that is down or behind a firewall that drops packets would
 * otherwise hold this thread for the kernel's SYN retries (about two
 * minutes), and a node being stopped with it. Returns 0 or -errno; the
 * socket is blocking again on success (the loop wants it so). */
static int connect_bounded(struct hb_peer *p, int fd, const struct sockaddr *sa, socklen_t len,
                           uint64_t deadline)
{
  int fl = fcntl(fd, F_GETFL);

  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -errno;
  if (connect(fd, sa, len) < 0) {
    if (errno != EINPROGRESS)
      return -errno;
    for (;;) {
      struct pollfd pfd = { .fd = fd, .events = POLLOUT };
      int r, e = 0;
      socklen_t el = sizeof e;

      if (is_stopping(p))
        return -ECANCELED;
      if (hb_now_ns() >= deadline)
        return -ETIMEDOUT;
      uint64_t left_ms = (deadline - hb_now_ns()) / 1000000u + 1;
      r = poll(&pfd, 1, left_ms < 100 ? (int) left_ms : 100);
      if (r < 0 && errno != EINTR)
        return -errno;
      if (r <= 0)
        continue;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
        return -errno;
      if (e)
        return -e;
      break;
    }
  }
  return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

/* The node that connects backs off exponentially (100 ms to 5 s, +-25 %
 * jitter) after every attempt that did not give a working link, whether
 * the connect failed or the handshake was refused: a peer that keeps
 * refusing us is not hammered. */
/* Connector thread only: the same budget as refusal_log_allowed. */
static bool stranger_log_allowed(struct hb_peer *p, uint64_t *window, unsigned *logged,
                                 unsigned *suppressed)
{
  uint64_t now = hb_now_ns();

  if (now - *window > REFUSAL_LOG_WINDOW_NS) {
    if (*suppressed)
      hb_error("peer %s: %u more connections from other addresses were refused, not logged",
               p->cfg.peer_name, *suppressed);
    *window = now;
    *logged = 0;
    *suppressed = 0;
  }
  if (*logged < REFUSAL_LOG_BURST) {
    (*logged)++;
    return true;
  }
  (*suppressed)++;
  return false;
}

static void *connector_main(void *arg)
{
  struct hb_peer *p = arg;
  uint64_t stranger_window = 0;
  unsigned strangers_logged = 0, strangers_suppressed = 0;
  unsigned backoff = 100;
  unsigned seed = (unsigned) hb_now_ns();

  while (wait_idle_and_wanted(p)) {
    if (p->listen_fd >= 0) {
      struct pollfd pfd = { .fd = p->listen_fd, .events = POLLIN };
      if (poll(&pfd, 1, 200) <= 0)
        continue;
      struct sockaddr_storage from;
      socklen_t fromlen = sizeof from;
      char shown[INET6_ADDRSTRLEN];
      int fd = accept4(p->listen_fd, (struct sockaddr *) &from, &fromlen, SOCK_CLOEXEC);
      if (fd < 0)
        continue;
      if (!from_peer(p, (struct sockaddr *) &from, shown, sizeof shown)) {
        char why[256];
        close(fd);
        snprintf(why, sizeof why, "refused a connection from %s: not the peer's address (%s)",
                 shown[0] ? shown : "an unknown address", p->cfg.peer_host);
        /* Logged (within a budget), not put in the status: anyone
         * could otherwise hide the real reason the peer was refused. */
        if (stranger_log_allowed(p, &stranger_window, &strangers_logged, &strangers_suppressed))
          hb_error("peer %s: %s", p->cfg.peer_name, why);
        continue;
      }
      hand_over(p, fd, false);
      continue;
    }
    struct addrinfo *res;
    char err[256] = "";
    int fd = -1;
    if (resolve(p->cfg.peer_host, p->cfg.peer_port, false, &res, err, sizeof err) == 0) {
      /* One connect-timeout for the attempt, whatever the number of
       * addresses the name has. */
      uint64_t deadline = hb_now_ns() + (uint64_t) p->cfg.connect_timeout_ms * 1000000u;
      for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        int r;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0)
          bind_own(p, fd, ai->ai_family);
        if (fd >= 0 && (r = connect_bounded(p, fd, ai->ai_addr, ai->ai_addrlen, deadline)) < 0) {
          if (r == -ETIMEDOUT)
            snprintf(err, sizeof err, "connect to %s:%s: no answer within %u ms (connect-timeout)",
                     p->cfg.peer_host, p->cfg.peer_port, p->cfg.connect_timeout_ms);
          else
            snprintf(err, sizeof err, "connect to %s:%s: %s", p->cfg.peer_host,
                     p->cfg.peer_port, strerror(-r));
          close(fd);
          fd = -1;
        }
      }
      freeaddrinfo(res);
    }
    if (fd >= 0) {
      hand_over(p, fd, true);
      if (link_worked(p)) {
        backoff = 100;
        continue;
      }
    } else {
      set_info_error(p, err);
    }
    unsigned jitter = backoff / 2 ? (unsigned) rand_r(&seed) % (backoff / 2) : 0;
    nap(p, backoff - backoff / 4 + jitter);
    backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
  }
  return NULL;
}

/* ---- keepalive ---- */

/* DRBD answers pings from a thread that does no disk I/O (its asender).
 * Here the loop thread both runs the link and, on a Secondary, writes what
 * the Primary sent into the page cache, where dirty-page throttling or a
 * slow disk can hold it for longer than ping-timeout: the Primary, hearing
 * nothing, would declare a live node dead. This thread does no I/O but
 * this: when nothing has left for ping-interval, it puts a PING into the
 * channel and sends it with its own send(2), as a worker sends its frames
 * (the page-cache write runs out of the link's lock: resource.c). The peer
 * counts any bytes as life, and answers. A node that is really gone (killed,
 * stopped, its host down or cut off) sends nothing at all; a node whose
 * disk hangs still gets caught by the request timeout. */
static void *keepalive_main(void *arg)
{
  struct hb_peer *p = arg;
  /* Half an interval of silence, checked every quarter: the peer hears
   * us at least every 0.75 ping-interval, within any ping-timeout the
   * configuration accepts (longer than ping-interval). */
  uint64_t quiet = (uint64_t) p->cfg.ping_interval_ms * 500000u;
  uint64_t wedged = (uint64_t) (p->cfg.request_timeout_ms ? p->cfg.request_timeout_ms
                                                          : p->cfg.ping_timeout_ms) * 1000000u;
  unsigned tick = p->cfg.ping_interval_ms / 4;

  if (tick < 2)
    tick = 2;
  if (tick > 250)
    tick = 250;
  while (!is_stopping(p)) {
    nap(p, tick);
    link_lock(p);
    uint64_t now = hb_now_ns();
    /* A loop that has shown no progress (a timer tick, a page-cache write
     * done) for request-timeout is not held up by a write but stuck: stop
     * speaking for it, so that the peer judges this node as it is. */
    if (p->st == L_UP && !p->ping_queued && now - p->last_tx_ns >= quiet &&
        now - __atomic_load_n(&p->loop_beat_ns, __ATOMIC_RELAXED) < wedged) {
      queue_ping(p);
      link_flush_direct(p);
    }
    link_unlock(p, false);
  }
  return NULL;
}

void hb_peer_loop_beat(struct hb_peer *p)
{
  __atomic_store_n(&p->loop_beat_ns, hb_now_ns(), __ATOMIC_RELAXED);
}

/* ---- setup ---- */

int hb_peer_new(const struct hb_peer_config *cfg, const struct hb_peer_events *ev,
                void *opaque, struct hb_peer **out, char *err, size_t errlen)
{
  struct hb_peer *p = calloc(1, sizeof *p);
  int r;

  if (!p)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  p->cfg = *cfg;
  /* Our own copies: the caller's strings may live on its stack. */
  p->cfg.self_name = strdup(cfg->self_name);
  p->cfg.peer_name = strdup(cfg->peer_name);
  p->cfg.listen_host = strdup(cfg->listen_host);
  p->cfg.listen_port = strdup(cfg->listen_port);
  p->cfg.peer_host = strdup(cfg->peer_host);
  p->cfg.peer_port = strdup(cfg->peer_port);
  p->ev = *ev;
  p->opaque = opaque;
  p->listen_fd = -1;
  p->fd = -1;
  p->wanted = true;
  p->txq_tail = &p->txq;
  p->pending_tail = &p->pending;
  pthread_mutex_init(&p->lock, NULL);
  {
    /* Naps (the connector's backoff, the keepalive's tick) must not
     * stretch when the wall clock is stepped back. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
  }
  {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&p->link_lock, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  p->rx_cap = 2 * RX_CHUNK;
  p->rx = malloc(p->rx_cap);
  if (!cfg->tls) {
    p->pout = malloc(PLAIN_BUFSIZE);
    p->pin = malloc(PLAIN_BUFSIZE);
  }
  if (!p->rx || (!cfg->tls && (!p->pout || !p->pin)) || !p->cfg.self_name ||
      !p->cfg.peer_name || !p->cfg.listen_host || !p->cfg.listen_port ||
      !p->cfg.peer_host || !p->cfg.peer_port) {
    hb_peer_free(p);
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  }

  /* The node whose name sorts first listens; the other connects. */
  if (strcmp(cfg->self_name, cfg->peer_name) < 0) {
    struct addrinfo *res;
    int one = 1;
    r = resolve(cfg->listen_host, cfg->listen_port, true, &res, err, errlen);
    if (r < 0) {
      hb_peer_free(p);
      return r;
    }
    r = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
      int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0)
        continue;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4) == 0) {
        p->listen_fd = fd;
        r = 0;
        break;
      }
      r = -errno;
      close(fd);
    }
    freeaddrinfo(res);
    if (r < 0) {
      hb_peer_free(p);
      return hb_fail(err, errlen, -r, "cannot listen on %s:%s: %s", cfg->listen_host,
                     cfg->listen_port, strerror(-r));
    }
    learn_peer_ips(p);
  }
  *out = p;
  return 0;
}

int hb_peer_start(struct hb_peer *p, struct hb_loop *loop, char *err, size_t errlen)
{
  int r;

  if (!hb_loop_can(loop, HB_OP_SEND) || !hb_loop_can(loop, HB_OP_RECV) ||
      !hb_loop_can(loop, HB_OP_TIMEOUT))
    return hb_fail(err, errlen, ENOTSUP,
                   "the peer link needs io_uring, or libaio with aio POLL (Linux 4.18 or later)");
  p->loop = loop;
  r = pthread_create(&p->connector, NULL, connector_main, p);
  if (r)
    return hb_fail(err, errlen, r, "cannot start the connector thread: %s", strerror(r));
  p->connector_started = true;
  r = pthread_create(&p->keepalive, NULL, keepalive_main, p);
  if (r) {
    hb_peer_stop(p);
    return hb_fail(err, errlen, r, "cannot start the keepalive thread: %s", strerror(r));
  }
  p->keepalive_started = true;
  return 0;
}

void hb_peer_stop(struct hb_peer *p)
{
  sem_t done;
  struct hb_req req;

  if (!p)
    return;
  pthread_mutex_lock(&p->lock);
  p->stopping = true;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->lock);
  if (p->connector_started)
    pthread_join(p->connector, NULL);
  p->connector_started = false;
  if (p->keepalive_started)
    pthread_join(p->keepalive, NULL);
  p->keepalive_started = false;
  pthread_mutex_lock(&p->lock);
  bool done_already = !p->loop || p->stopped;
  pthread_mutex_unlock(&p->lock);
  if (done_already)
    return;
  /* Drop the link on the loop; its recv and send then complete, and the
   * timer stops re-arming, so the loop can be stopped after this. */
  sem_init(&done, 0, 0);
  req = (struct hb_req) { .op = HB_OP_CALL, .complete = on_stop, .opaque = p,
                          .opaque2 = &done };
  if (hb_loop_submit(p->loop, &req) == 0)
    while (sem_wait(&done) < 0 && errno == EINTR)
      ;
  sem_destroy(&done);
  pthread_mutex_lock(&p->lock);
  p->stopped = true;            /* a second call does nothing */
  pthread_mutex_unlock(&p->lock);
}

void hb_peer_free(struct hb_peer *p)
{
  if (!p)
    return;
  hb_peer_stop(p);
  if (p->listen_fd >= 0)
    close(p->listen_fd);
  free((char *) p->cfg.self_name);
  free((char *) p->cfg.peer_name);
  free((char *) p->cfg.listen_host);
  free((char *) p->cfg.listen_port);
  free((char *) p->cfg.peer_host);
  free((char *) p->cfg.peer_port);
  free(p->rx);
  free(p->pout);
  free(p->pin);
  pthread_cond_destroy(&p->cond);
  pthread_mutex_destroy(&p->lock);
  pthread_mutex_destroy(&p->link_lock);
  free(p);
}
