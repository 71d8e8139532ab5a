/* Two replicated resources in one process, linked over loopback (TLS off).
 * - A write in progress while the link comes back must never leave the pair
 *   connected with different data: either it is replicated, or it is
 *   recorded as out of sync and the reconnection is refused (invariant 2).
 * - `connect` on a connected node changes nothing (writes stay replicated).
 * - Promotions of both nodes at the same moment: exactly one wins.
 * - A force-demoted node serves nothing more to the clients it kept, and
 *   their flush does not reach the new Primary.
 * - A Secondary that fails a request marks its disk Failed (not promotable)
 *   and the Primary goes on alone, StandAlone.
 * - The operator's declaration (forced promotion while connected) reaches
 *   the peer even when a demotion follows at once.
 * - A forced hand-over while the old Primary still has requests in flight:
 *   the new Primary is not made Primary before they are answered, so every
 *   request acknowledged to a client is on it.
 * - A Primary whose own disk fails a flush or a write marks it Failed and
 *   serves nothing more; the peer, promoted, has the data and goes on alone.
 * - Two Primaries that meet say SplitBrain and wait for the operator. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "hablock.h"
#include "resource.h"
#include "role.h"

static char dir[] = "/var/tmp/hablock-test-res.XXXXXX";
static char conf[300];
static struct hb_res *A, *B;
static char *buf;
static const uint32_t wlen = 8u << 20;
static int wret;

/* Two distinct free loopback ports: both sockets stay bound until both
 * are chosen (two calls one after the other may get the same port). */
static void free_ports(int port[2])
{
  int fd[2];

  for (int i = 0; i < 2; i++) {
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    fd[i] = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd[i] >= 0);
    assert_int_equal(bind(fd[i], (struct sockaddr *) &sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd[i], (struct sockaddr *) &sa, &len), 0);
    port[i] = ntohs(sa.sin_port);
  }
  close(fd[0]);
  close(fd[1]);
}

static int setup(void **state)
{
  int port[2];
  FILE *f;
  if (!mkdtemp(dir) || posix_memalign((void **) &buf, 4096, wlen))
    return -1;
  free_ports(port);
  snprintf(conf, sizeof conf, "%s/r0.conf", dir);
  f = fopen(conf, "w");
  if (!f)
    return -1;
  fprintf(f, "[resource]\nname = r0\ncontrol = %s/%%n.ctl\nping-interval = 200ms\n"
             "ping-timeout = 2s\nconnect-timeout = 5s\n[tls]\nmode = off\n"
             "[node alpha]\ndisk = %s/a.img\naddress = 127.0.0.1:%d\n"
             "[node bravo]\ndisk = %s/b.img\naddress = 127.0.0.1:%d\n",
          dir, dir, port[0], dir, port[1]);
  fclose(f);
  return 0;
}

static int teardown(void **state)
{
  char cmd[128];
  free(buf);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* A node of the pair, with p's debug settings (fail_*, stall_*). */
static struct hb_res *open_node_p(const char *node, struct hb_params p)
{
  struct hb_res *r;
  char err[HB_ERRLEN];

  p.config = conf;
  p.node = (char *) node;
  p.cache = HB_CACHE_WRITEBACK;
  if (hb_res_open(&p, &r, err, sizeof err) < 0 || hb_res_start(r, err, sizeof err) < 0)
    fail_msg("%s: %s", node, err);
  return r;
}

static struct hb_res *open_node(const char *node)
{
  return open_node_p(node, (struct hb_params) { 0 });
}

static struct hb_res_status st(struct hb_res *r)
{
  struct hb_res_status s;
  hb_res_status(r, &s);
  return s;
}

static bool both_up(void) { return st(A).link.up && st(B).link.up; }
static bool both_down(void) { return !st(A).link.up && !st(B).link.up; }
static bool b_uptodate(void) { return st(B).state.disk == HB_DISK_UPTODATE; }

static bool wait_until(bool (*cond)(void), int ms)
{
  struct timespec nap = { 0, 1000000 };
  for (int i = 0; i < ms; i++) {
    if (cond())
      return true;
    nanosleep(&nap, NULL);
  }
  return cond();
}

static void *writer(void *arg)
{
  wret = hb_res_pwrite(A, buf, wlen, 0, 0);
  return NULL;
}

static bool disks_differ(void)
{
  char cmd[300];
  snprintf(cmd, sizeof cmd, "cmp -s %s/a.img %s/b.img", dir, dir);
  return system(cmd) != 0;
}

static void test_reconnect_during_write(void **state)
{
  char cmd[300], msg[256];
  int trials = getenv("HB_TEST_RESOURCE_TRIALS") ? atoi(getenv("HB_TEST_RESOURCE_TRIALS")) : 4;

  for (int t = 0; t < trials; t++) {
    snprintf(cmd, sizeof cmd, "rm -f %s/*.img && truncate -s 16M %s/a.img %s/b.img", dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    memset(buf, 'A' + t, wlen);
    A = open_node("alpha");
    B = open_node("bravo");
    assert_true(wait_until(both_up, 10000));
    assert_int_equal(hb_res_promote(A, true, msg, sizeof msg), 0);
    assert_true(wait_until(b_uptodate, 5000));
    hb_res_set_connect(A, false);
    assert_true(wait_until(both_down, 5000));

    /* The write races the link coming back. */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer, NULL), 0);
    hb_res_set_connect(A, true);
    pthread_join(th, NULL);
    assert_int_equal(wret, 0);
    wait_until(both_up, 1500);
    assert_int_equal(hb_res_flush(A), 0);

    struct hb_res_status sa = st(A);
    bool differ = disks_differ();
    print_message("# trial %d: alpha %s, out of sync %llu, disks %s\n", t,
                  hb_conn_name(sa.state.conn), (unsigned long long) sa.state.oos_bytes,
                  differ ? "differ" : "same");
    if (differ && sa.link.up)
      fail_msg("trial %d: connected with different data", t);
    if (differ && sa.state.oos_bytes == 0)
      fail_msg("trial %d: the replicas differ and nothing is recorded", t);
    hb_res_close(A);
    hb_res_close(B);
  }
}

/* Fresh zero-filled disks, both nodes connected, alpha Primary (forced:
 * the pair declared identical), bravo UpToDate. */
/* pair_up with debug settings for each node. */
static void pair_up_with(struct hb_params alpha, struct hb_params bravo)
{
  char cmd[300], msg[256];

  snprintf(cmd, sizeof cmd, "rm -f %s/*.img && truncate -s 16M %s/a.img %s/b.img", dir, dir, dir);
  assert_int_equal(system(cmd), 0);
  A = open_node_p("alpha", alpha);
  B = open_node_p("bravo", bravo);
  assert_true(wait_until(both_up, 10000));
  assert_int_equal(hb_res_promote(A, true, msg, sizeof msg), 0);
  assert_true(wait_until(b_uptodate, 5000));
}

static void pair_up(bool bravo_fails_flush)
{
  pair_up_with((struct hb_params) { 0 }, (struct hb_params) { .fail_flush = bravo_fails_flush });
}

static void pair_down(void)
{
  hb_res_close(A);
  hb_res_close(B);
}

static void *one_write(void *arg)
{
  wret = hb_res_pwrite(A, buf, 4096, 0, 0);
  return NULL;
}

static bool a_lost_send(void) { return st(A).lost_sends == 1; }
static bool a_sending(void) { return st(A).sending == 1; }

/* A write decided while Connected whose hand-over then fails (the link
 * went down in between), and a new link that comes up before the write is
 * recorded: that link must not be taken as in sync, its peer never got the
 * write. Found in review: the handshake used to pass with nothing out of
 * sync and the write was recorded after it, so the pair said Connected with
 * a Secondary (UpToDate, promotable) lacking an acknowledged write. The
 * debug hook holds the write 1.5 s before the hand-over and 1.5 s after it
 * failed; the test moves the link in those windows. */
static void test_reconnect_while_a_write_settles(void **state)
{
  struct hb_res_status sa;
  pthread_t th;
  bool up;

  pair_up_with((struct hb_params) { .stall_send_ms = 1500 }, (struct hb_params) { 0 });
  memset(buf, 'q', 4096);
  assert_int_equal(pthread_create(&th, NULL, one_write, NULL), 0);
  assert_true(wait_until(a_sending, 1000));   /* decided while Connected */
  hb_res_set_connect(B, false);              /* down before the hand-over */
  assert_true(wait_until(both_down, 1000));
  assert_true(wait_until(a_lost_send, 5000)); /* failed; recorded in 1.5 s */
  hb_res_set_connect(B, true);
  up = wait_until(both_up, 1200);            /* inside that window */
  pthread_join(th, NULL);
  assert_int_equal(wret, 0);
  sa = st(A);
  print_message("# a new link %s while the write settled; now alpha %s, out of sync %llu\n",
                up ? "came up" : "was refused", hb_conn_name(sa.state.conn),
                (unsigned long long) sa.state.oos_bytes);
  assert_int_equal(sa.state.oos_bytes, 4096);
  if (up || sa.link.up)
    fail_msg("a link was taken as in sync while a write it never carried was being recorded");
  assert_true(disks_differ());
  pair_down();
}

static bool b_applying(void) { return st(B).applying == 1; }

/* A Secondary whose disk fails the write a promotion is waiting for (the
 * former Primary's, held by the kernel) is not promoted: its disk is
 * Failed by the time the promotion decides. The order inside the node
 * (Failed first, then the count the promotion drains) was found wrong in
 * review; the window between the two was too short for this test to hold
 * open, so it checks the outcome the order guarantees. */
static void test_promotion_waits_for_a_failing_write(void **state)
{
  struct hb_res_status sb;
  char msg[256];
  pthread_t th;
  int ret;

  pair_up_with((struct hb_params) { 0 },
               (struct hb_params) { .stall_write_ms = 800, .fail_write = true });
  memset(buf, 'f', 4096);
  assert_int_equal(pthread_create(&th, NULL, one_write, NULL), 0);
  assert_true(wait_until(b_applying, 2000));  /* bravo holds it 0.8 s, then fails it */
  hb_res_set_connect(A, false);                /* the Primary goes away */
  assert_true(wait_until(both_down, 2000));
  assert_int_equal(st(B).applying, 1);         /* still held: the promotion must wait */
  ret = hb_res_promote(B, false, msg, sizeof msg);
  pthread_join(th, NULL);
  assert_int_equal(wret, 0);                   /* alpha's client: done alone */
  sb = st(B);
  print_message("# promotion of bravo: %d (%s); bravo %s, %s\n", ret, msg,
                hb_role_name(sb.state.role), hb_disk_name(sb.state.disk));
  assert_int_not_equal(ret, 0);
  assert_int_equal(sb.state.role, HB_ROLE_SECONDARY);
  assert_int_equal(sb.state.disk, HB_DISK_FAILED);
  assert_int_equal(st(A).state.oos_bytes, 4096);
  pair_down();
}

static void test_connect_while_connected(void **state)
{
  pair_up(false);
  hb_res_set_connect(A, true);
  hb_res_set_connect(B, true);
  assert_int_equal(st(A).state.conn, HB_CONN_CONNECTED);
  assert_int_equal(st(B).state.conn, HB_CONN_CONNECTED);
  memset(buf, 'c', 4096);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 0, 0), 0);
  assert_int_equal(hb_res_flush(A), 0);
  assert_int_equal(st(A).state.oos_bytes, 0);
  assert_true(st(A).link.up);
  assert_false(disks_differ());
  pair_down();
}

static struct hb_res *prom_node;
static pthread_barrier_t prom_barrier;

static void *promoter(void *arg)
{
  char msg[256];
  int *ret = arg;
  pthread_barrier_wait(&prom_barrier);
  *ret = hb_res_promote(prom_node, false, msg, sizeof msg);
  return NULL;
}

static bool a_peer_secondary(void) { return st(A).state.peer_role == HB_ROLE_SECONDARY; }
static bool b_peer_secondary(void) { return st(B).state.peer_role == HB_ROLE_SECONDARY; }

/* Both Secondary and UpToDate; both promoted at once, many times: never
 * two Primaries, and exactly one promotion succeeds each time. */
static void test_concurrent_promotions(void **state)
{
  int trials = getenv("HB_TEST_RESOURCE_TRIALS") ? 10 * atoi(getenv("HB_TEST_RESOURCE_TRIALS")) : 40;
  char msg[256];
  unsigned wins[2] = { 0, 0 };

  pair_up(false);
  for (int t = 0; t < trials; t++) {
    pthread_t th;
    int ra = -1, rb = -1;

    if (st(A).state.role == HB_ROLE_PRIMARY)
      assert_int_equal(hb_res_demote(A, false, msg, sizeof msg), 0);
    if (st(B).state.role == HB_ROLE_PRIMARY)
      assert_int_equal(hb_res_demote(B, false, msg, sizeof msg), 0);
    assert_true(wait_until(a_peer_secondary, 5000));
    assert_true(wait_until(b_peer_secondary, 5000));
    assert_int_equal(st(A).state.disk, HB_DISK_UPTODATE);
    assert_int_equal(st(B).state.disk, HB_DISK_UPTODATE);

    assert_int_equal(pthread_barrier_init(&prom_barrier, NULL, 2), 0);
    prom_node = B;
    assert_int_equal(pthread_create(&th, NULL, promoter, &rb), 0);
    pthread_barrier_wait(&prom_barrier);
    ra = hb_res_promote(A, false, msg, sizeof msg);
    pthread_join(th, NULL);
    pthread_barrier_destroy(&prom_barrier);

    bool pa = st(A).state.role == HB_ROLE_PRIMARY, pb = st(B).state.role == HB_ROLE_PRIMARY;
    if (pa && pb)
      fail_msg("trial %d: both nodes are Primary (promote returned %d and %d)", t, ra, rb);
    if ((ra == 0) + (rb == 0) != 1)
      fail_msg("trial %d: %d promotions succeeded (returned %d and %d)", t,
               (ra == 0) + (rb == 0), ra, rb);
    assert_true(pa == (ra == 0) && pb == (rb == 0));
    if (ra != 0)
      assert_int_equal(ra, HB_REFUSED_PEER_PRIMARY);
    if (rb != 0)
      assert_int_equal(rb, HB_REFUSED_PEER_PRIMARY);
    assert_true(st(A).link.up);
    wins[pb]++;
  }
  print_message("# %d trials: alpha won %u, bravo won %u\n", trials, wins[0], wins[1]);
  pair_down();
}

/* A demoted node reports no allocation: this must not be called. */
static int no_extent(void *opaque, uint64_t off, uint64_t len, bool hole)
{
  fail_msg("extent [%llu, +%llu) reported by a demoted node", (unsigned long long) off,
           (unsigned long long) len);
  return -EIO;
}

static void test_force_demoted_serves_nothing(void **state)
{
  char msg[256];
  uint64_t epoch, epoch2;

  pair_up(false);
  assert_int_equal(hb_res_client_open(A, &epoch, msg, sizeof msg), 0);
  assert_int_equal(hb_res_demote(A, false, msg, sizeof msg), HB_REFUSED_CLIENTS);
  assert_int_equal(hb_res_demote(A, true, msg, sizeof msg), 0);
  assert_int_equal(hb_res_pread(A, buf, 4096, 0), -EROFS);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 0, 0), -EROFS);
  assert_int_equal(hb_res_flush(A), -EROFS);
  assert_int_equal(hb_res_cache(A, 4096, 0), -EROFS);
  assert_int_equal(hb_res_extents(A, 4096, 0, false, no_extent, NULL), -EROFS);
  assert_true(wait_until(b_peer_secondary, 5000));
  assert_int_equal(hb_res_promote(B, false, msg, sizeof msg), 0);
  /* The old client's flush goes nowhere: the pair stays together. */
  assert_int_equal(hb_res_flush(A), -EROFS);
  memset(buf, 'd', 4096);
  assert_int_equal(hb_res_pwrite(B, buf, 4096, 8192, 0), 0);
  assert_int_equal(hb_res_flush(B), 0);
  assert_true(st(A).link.up);
  assert_int_equal(st(A).state.oos_bytes, 0);
  assert_int_equal(st(B).state.oos_bytes, 0);
  assert_false(disks_differ());
  /* alpha Primary again: the client it kept through the demotion stays
   * stale (its view predates bravo's writes); a new client is served. */
  assert_int_equal(hb_res_demote(B, false, msg, sizeof msg), 0);
  assert_true(wait_until(a_peer_secondary, 5000));
  assert_int_equal(hb_res_promote(A, false, msg, sizeof msg), 0);
  assert_true(hb_res_client_stale(A, epoch));
  assert_int_equal(hb_res_client_open(A, &epoch2, msg, sizeof msg), 0);
  assert_false(hb_res_client_stale(A, epoch2));
  hb_res_client_close(A);
  hb_res_client_close(A);
  pair_down();
}

static bool a_standalone(void) { return st(A).state.conn == HB_CONN_STANDALONE && !st(A).link.up; }
static bool b_failed(void) { return st(B).state.disk == HB_DISK_FAILED; }

static void test_secondary_fails_request(void **state)
{
  char msg[256];

  pair_up(true);              /* bravo fails every FLUSH with EIO */
  memset(buf, 'e', 4096);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 0, 0), 0);
  assert_int_equal(hb_res_flush(A), 0);       /* durable on alpha */
  assert_true(wait_until(a_standalone, 5000));
  assert_true(wait_until(b_failed, 5000));
  assert_int_equal(st(A).state.role, HB_ROLE_PRIMARY);
  assert_true(st(A).state.oos_bytes > 0);
  /* bravo's data are not the Primary's for sure: not promotable, even
   * forced, now that alpha is gone. */
  hb_res_close(A);
  assert_true(hb_res_promote(B, false, msg, sizeof msg) != 0);
  assert_true(hb_res_promote(B, true, msg, sizeof msg) != 0);
  print_message("# bravo: %s\n", msg);
  hb_res_close(B);
}

static int flush_ret[4], zero_ret;
static int zero_done;

static void *flusher(void *arg)
{
  *(int *) arg = hb_res_flush(A);
  return NULL;
}

static void *zeroer(void *arg)
{
  zero_ret = hb_res_zero(A, 4096, 0, 0);
  __atomic_store_n(&zero_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void test_handover_with_requests_in_flight(void **state)
{
  char cmd[300], msg[256] = "";
  uint64_t epoch;
  pthread_t fl[4], z;
  unsigned char b0 = 0xff;
  FILE *f;
  int pb;

  snprintf(cmd, sizeof cmd, "rm -f %s/*.img && truncate -s 16M %s/a.img %s/b.img", dir, dir, dir);
  assert_int_equal(system(cmd), 0);
  A = open_node("alpha");
  B = open_node_p("bravo", (struct hb_params) { .stall_flush_ms = 1000 }); /* holds each FLUSH 1 s */
  assert_true(wait_until(both_up, 10000));
  assert_int_equal(hb_res_promote(A, true, msg, sizeof msg), 0);
  assert_true(wait_until(b_uptodate, 5000));
  memset(buf, 'x', 4096);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 0, 0), 0);
  assert_int_equal(hb_res_client_open(A, &epoch, msg, sizeof msg), 0);
  /* Four flushes take bravo's four apply threads; a ZERO queues behind
   * them. (The pauses only set the scene; the precondition is checked.) */
  zero_done = 0;
  for (int i = 0; i < 4; i++)
    assert_int_equal(pthread_create(&fl[i], NULL, flusher, &flush_ret[i]), 0);
  nanosleep(&(struct timespec) { .tv_nsec = 200000000 }, NULL);
  assert_int_equal(pthread_create(&z, NULL, zeroer, NULL), 0);
  nanosleep(&(struct timespec) { .tv_nsec = 100000000 }, NULL);
  assert_int_equal(hb_res_demote(A, true, msg, sizeof msg), 0);
  assert_true(wait_until(b_peer_secondary, 5000));
  if (__atomic_load_n(&zero_done, __ATOMIC_ACQUIRE))
    fail_msg("the scene did not happen: the ZERO was answered before bravo's promotion");
  pb = hb_res_promote(B, false, msg, sizeof msg);
  print_message("# bravo promote: %d %s\n", pb, msg);
  for (int i = 0; i < 4; i++)
    pthread_join(fl[i], NULL);
  pthread_join(z, NULL);
  for (int i = 0; i < 4; i++)
    assert_int_equal(flush_ret[i], 0);
  assert_int_equal(zero_ret, 0);
  snprintf(cmd, sizeof cmd, "%s/b.img", dir);
  assert_non_null(f = fopen(cmd, "r"));
  b0 = (unsigned char) fgetc(f);
  fclose(f);
  /* Promoted or told to retry, never Primary without the acknowledged ZERO. */
  if (pb == 0) {
    assert_int_equal(st(B).state.role, HB_ROLE_PRIMARY);
    if (b0 != 0)
      fail_msg("the ZERO was acknowledged to alpha's client, but the new Primary has 0x%02x at 0", b0);
  } else {
    assert_int_equal(pb, HB_REFUSED_PEER_PRIMARY);
    assert_int_equal(st(B).state.role, HB_ROLE_SECONDARY);
  }
  assert_int_equal(st(A).state.oos_bytes, 0);
  assert_true(st(A).link.up);
  hb_res_client_close(A);
  pair_down();
}

static int lost_flush_ret;

static void *lost_flush(void *arg)
{
  lost_flush_ret = hb_res_flush(A);
  return NULL;
}

static bool a_oos_all(void) { return st(A).state.oos_bytes == 16u << 20; }

/* A flush whose link drops while the peer's disk is on it completes here
 * alone (the client's data are durable on alpha); the link comes back; then
 * the peer's flush fails. Its NACK went with the old link, so only its
 * STATE (disk Failed) tells alpha: which of the writes it acknowledged it
 * still holds nobody knows, so alpha must count the whole device out of
 * sync and go on alone. Found in review: alpha stayed Connected with
 * nothing out of sync, replicating to a failed disk. */
static void test_peer_disk_fails_after_a_lost_flush(void **state)
{
  struct hb_res_status sa;
  pthread_t th;

  pair_up_with((struct hb_params) { 0 },
               (struct hb_params) { .stall_flush_ms = 2500, .fail_flush = true });
  memset(buf, 'l', 4096);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 0, 0), 0);
  assert_int_equal(pthread_create(&th, NULL, lost_flush, NULL), 0);
  assert_true(wait_until(b_applying, 2000));   /* bravo holds the FLUSH */
  hb_res_set_connect(A, false);
  assert_true(wait_until(both_down, 2000));
  pthread_join(th, NULL);
  assert_int_equal(lost_flush_ret, 0);          /* durable here; the peer was lost */
  hb_res_set_connect(A, true);
  assert_true(wait_until(both_up, 5000));       /* back before bravo's flush fails */
  assert_int_equal(st(B).applying, 1);
  assert_true(wait_until(b_failed, 5000));
  assert_true(wait_until(a_standalone, 3000));
  assert_true(wait_until(a_oos_all, 1000));
  sa = st(A);
  print_message("# after the peer's disk failed: alpha %s, peer disk %s, out of sync %llu\n",
                hb_conn_name(sa.state.conn), hb_disk_name(sa.state.peer_disk),
                (unsigned long long) sa.state.oos_bytes);
  assert_int_equal(sa.state.role, HB_ROLE_PRIMARY);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 8192, 0), 0);   /* alone */
  pair_down();
}

static bool a_link_up(void) { return st(A).link.up || st(A).state.conn == HB_CONN_CONNECTED; }

/* `hactl disconnect` while a connection is being made: that connection
 * must not bring the link back. Found in review: the connector had passed
 * its check of the operator's wish, the handshake then succeeded and the
 * node said Connected, StandAlone overwritten. */
static void test_disconnect_during_connect(void **state)
{
  char cmd[300];
  struct timespec nap = { 0, 50000000 };

  snprintf(cmd, sizeof cmd, "rm -f %s/*.img && truncate -s 16M %s/a.img %s/b.img", dir, dir, dir);
  assert_int_equal(system(cmd), 0);
  A = open_node("alpha");
  nanosleep(&nap, NULL);                        /* its connector is at work */
  hb_res_set_connect(A, false);
  B = open_node("bravo");
  /* No link may come up: watch for longer than a handshake takes here. */
  assert_false(wait_until(a_link_up, 1500));
  assert_int_equal(st(A).state.conn, HB_CONN_STANDALONE);
  hb_res_set_connect(A, true);                  /* the operator allows it again */
  assert_true(wait_until(both_up, 10000));
  pair_down();
}

static bool both_split(void)
{
  return st(A).state.conn == HB_CONN_SPLITBRAIN && st(B).state.conn == HB_CONN_SPLITBRAIN;
}

/* Both nodes made Primary while apart: when they meet, both say SplitBrain
 * and the link stays down until the operator connects again; once one of
 * them is demoted (neither wrote meanwhile), connect on both brings the
 * pair back. Found in review: the handshake was refused and tried again
 * for ever while the status said Connecting, and `connect` had nothing to
 * resolve. */
static void test_split_brain_waits_for_the_operator(void **state)
{
  char msg[256];

  pair_up(false);
  hb_res_set_connect(A, false);
  assert_true(wait_until(both_down, 5000));
  assert_int_equal(hb_res_promote(B, false, msg, sizeof msg), 0);   /* alone, UpToDate */
  hb_res_set_connect(A, true);
  if (!wait_until(both_split, 10000))
    fail_msg("not both SplitBrain: alpha %s (%s), bravo %s (%s)", hb_conn_name(st(A).state.conn),
             st(A).link.last_error, hb_conn_name(st(B).state.conn), st(B).link.last_error);
  /* no further attempt: watch for longer than a handshake takes here */
  assert_false(wait_until(a_link_up, 1500));
  assert_true(both_split());
  assert_int_equal(hb_res_demote(B, false, msg, sizeof msg), 0);
  hb_res_set_connect(B, true);
  hb_res_set_connect(A, true);
  assert_true(wait_until(both_up, 10000));
  assert_int_equal(st(A).state.conn, HB_CONN_CONNECTED);
  assert_int_equal(st(B).state.conn, HB_CONN_CONNECTED);
  pair_down();
}

static bool b_sees_a_failed(void) { return st(B).state.peer_disk == HB_DISK_FAILED; }
static bool b_sees_a_secondary(void) { return st(B).state.peer_role == HB_ROLE_SECONDARY; }

/* After alpha's own disk failed a request of its clients (fail_local_*),
 * checked the same way for a flush and a write: alpha serves nothing more,
 * bravo hears it, alpha is not promotable even forced, and bravo, promoted
 * once alpha is demoted, has the client's data and does not count alpha as
 * a replica. */
static void check_primary_disk_failed(void)
{
  char msg[256];
  char *back = NULL;

  assert_int_equal(st(A).state.disk, HB_DISK_FAILED);
  assert_int_equal(posix_memalign((void **) &back, 4096, 4096), 0);
  assert_int_equal(hb_res_pread(A, back, 4096, 0), -EIO);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 8192, 0), -EIO);
  assert_int_equal(hb_res_zero(A, 4096, 8192, 0), -EIO);
  assert_int_equal(hb_res_flush(A), -EIO);
  assert_true(wait_until(b_sees_a_failed, 5000));
  assert_int_equal(hb_res_demote(A, false, msg, sizeof msg), 0);
  assert_int_equal(hb_res_promote(A, true, msg, sizeof msg), HB_REFUSED_NO_DISK);
  assert_true(wait_until(b_sees_a_secondary, 5000));
  if (hb_res_promote(B, false, msg, sizeof msg) != 0)
    fail_msg("bravo not promoted: %s", msg);
  print_message("# bravo promoted: %s, out of sync %llu\n", hb_conn_name(st(B).state.conn),
                (unsigned long long) st(B).state.oos_bytes);
  assert_int_equal(st(B).state.conn, HB_CONN_STANDALONE);
  assert_int_equal(st(B).state.oos_bytes, 16u << 20);
  assert_int_equal(hb_res_pread(B, back, 4096, 0), 0);
  assert_memory_equal(back, buf, 4096);
  free(back);
}

/* The Primary's own disk fails a flush (pages it was given could not be
 * written back) while the peer's flush succeeds. Found in review: only the
 * peer's answer was looked at, so the pair stayed Connected, both
 * UpToDate, nothing recorded, with replicas that may differ. */
static void test_primary_disk_fails_a_flush(void **state)
{
  pair_up_with((struct hb_params) { .fail_local_flush = true }, (struct hb_params) { 0 });
  memset(buf, 'p', 4096);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 0, 0), 0);
  assert_int_equal(hb_res_flush(A), -EIO);
  check_primary_disk_failed();
  pair_down();
}

/* The Primary's own disk fails a write the peer carried out: the disk
 * Failed (the pair used to stay Connected and UpToDate, the range recorded
 * as if this node held what the peer lacked). */
static void test_primary_disk_fails_a_write(void **state)
{
  pair_up_with((struct hb_params) { .fail_local_write = true }, (struct hb_params) { 0 });
  memset(buf, 'w', 4096);
  assert_int_equal(hb_res_pwrite(A, buf, 4096, 0, 0), -EIO);
  check_primary_disk_failed();
  pair_down();
}

static void test_declaration_survives_demote(void **state)
{
  char cmd[300], msg[256];
  int runs = getenv("HB_TEST_RESOURCE_TRIALS") ? 5 * atoi(getenv("HB_TEST_RESOURCE_TRIALS")) : 10;

  for (int i = 0; i < runs; i++) {
    snprintf(cmd, sizeof cmd, "rm -f %s/*.img && truncate -s 16M %s/a.img %s/b.img", dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    A = open_node("alpha");
    B = open_node("bravo");
    assert_true(wait_until(both_up, 10000));
    assert_true(wait_until(b_sees_a_secondary, 5000));
    assert_int_equal(hb_res_promote(A, true, msg, sizeof msg), 0);
    assert_int_equal(hb_res_demote(A, false, msg, sizeof msg), 0);
    if (!wait_until(b_uptodate, 3000))
      fail_msg("run %d: the declaration was lost: alpha %s (peer %s), bravo %s", i,
               hb_disk_name(st(A).state.disk), hb_disk_name(st(A).state.peer_disk),
               hb_disk_name(st(B).state.disk));
    pair_down();
  }
}

/* Both nodes' log lines, with HB_TEST_LOG=1 (silent otherwise). */
static void log_stderr(enum hb_log_level level, const char *msg)
{
  if (getenv("HB_TEST_LOG"))
    fprintf(stderr, "# %s\n", msg);
}

int main(void)
{
  hb_set_log(log_stderr);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_reconnect_during_write),
    cmocka_unit_test(test_connect_while_connected),
    cmocka_unit_test(test_concurrent_promotions),
    cmocka_unit_test(test_force_demoted_serves_nothing),
    cmocka_unit_test(test_reconnect_while_a_write_settles),
    cmocka_unit_test(test_promotion_waits_for_a_failing_write),
    cmocka_unit_test(test_secondary_fails_request),
    cmocka_unit_test(test_handover_with_requests_in_flight),
    cmocka_unit_test(test_declaration_survives_demote),
    cmocka_unit_test(test_peer_disk_fails_after_a_lost_flush),
    cmocka_unit_test(test_disconnect_during_connect),
    cmocka_unit_test(test_split_brain_waits_for_the_operator),
    cmocka_unit_test(test_primary_disk_fails_a_flush),
    cmocka_unit_test(test_primary_disk_fails_a_write),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
