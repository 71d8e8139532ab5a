/* Two replicated resources in one process, linked over loopback (TLS off):
 * a write in progress while the link comes back must never leave the pair
 * connected with different data. Either the write is replicated, or it is
 * recorded as out of sync and the reconnection is refused (invariant 2). */
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

static int free_port(void)
{
  struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t len = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM, 0), port;
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
  port = ntohs(sa.sin_port);
  close(fd);
  return port;
}

static int setup(void **state)
{
  FILE *f;
  if (!mkdtemp(dir) || posix_memalign((void **) &buf, 4096, wlen))
    return -1;
  snprintf(conf, sizeof conf, "%s/r0.conf", dir);
  f = fopen(conf, "w");
  if (!f)
    return -1;
  fprintf(f, "[resource]\nname = r0\ncontrol = %s/%%n.ctl\nping-interval = 200ms\n"
             "ping-timeout = 2s\nconnect-timeout = 5s\n[tls]\nmode = off\n"
             "[node alpha]\ndisk = %s/a.img\naddress = 127.0.0.1:%d\n"
             "[node bravo]\ndisk = %s/b.img\naddress = 127.0.0.1:%d\n",
          dir, dir, free_port(), dir, free_port());
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

static struct hb_res *open_node(const char *node)
{
  struct hb_params p = { .config = conf, .node = (char *) node, .cache = HB_CACHE_WRITEBACK };
  struct hb_res *r;
  char err[HB_ERRLEN];
  if (hb_res_open(&p, &r, err, sizeof err) < 0 || hb_res_start(r, err, sizeof err) < 0)
    fail_msg("%s: %s", node, err);
  return r;
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

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_reconnect_during_write),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
