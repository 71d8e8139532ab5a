/* The control socket server (replicator/ctl.c) with stub operations: every
 * command, refusals and failures, malformed and hostile requests, silent
 * and slow clients, too many clients, and start-up against stale, foreign
 * and already-served sockets. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctl.h"
#include "hablock.h"

/* ---- stub operations ---------------------------------------------------- */

/* What each command returns and what it saw. Commands run on the control
 * thread while the test thread waits for the response, so the response
 * orders every access. */
static struct stub {
  int rc;                 /* returned by promote/demote/connect/disconnect */
  const char *msg;        /* copied into msg */
  int status_rc;
  size_t status_pad;      /* a string of this many bytes in the status */
  bool status_unbalanced;
  const char *role;       /* status "role" */
  int calls;
  const char *last;       /* last command called */
  bool last_force;
  int delay_ms;           /* promote..disconnect take this long, after */
  sem_t started;          /* posting this (when delay_ms is set) */
  const char *violation;  /* the server broke the ops contract (checked
                           * at teardown: cmocka cannot fail a test from
                           * the control thread) */
} stub;

static void stub_reset(void)
{
  memset(&stub, 0, sizeof stub);
  stub.role = "Secondary";
}

static int stub_status(void *opaque, struct hb_json_out *o)
{
  if (opaque != &stub)
    stub.violation = "status: wrong opaque";
  stub.calls++;
  stub.last = "status";
  if (stub.status_rc)
    return stub.status_rc;
  hb_json_add_str(o, "resource", "r0");
  hb_json_add_str(o, "node", "alpha");
  hb_json_add_str(o, "role", stub.role);
  hb_json_add_str(o, "disk", "UpToDate");
  hb_json_add_str(o, "connection", "Connected");
  hb_json_add_str(o, "peer_role", "Primary");
  hb_json_add_int(o, "out_of_sync_bytes", 12345678901LL);
  hb_json_add_str(o, "io_backend", "uring");
  hb_json_begin_obj(o, "tls");
  hb_json_add_bool(o, "enabled", true);
  hb_json_add_str(o, "version", "TLSv1.3");
  hb_json_add_str(o, "cipher", "TLS_AES_256_GCM_SHA384");
  hb_json_add_str(o, "peer", "CN=beta \"quoted\"\n");
  if (!stub.status_unbalanced)
    hb_json_end_obj(o);
  if (stub.status_pad) {
    char *pad = malloc(stub.status_pad + 1);
    memset(pad, 'x', stub.status_pad);
    pad[stub.status_pad] = '\0';
    hb_json_add_str(o, "pad", pad);
    free(pad);
  }
  return 0;
}

static int stub_result(const char *name, bool force, char *msg, size_t len)
{
  if (len != HB_CTL_MSG_MAX)
    stub.violation = "msg buffer of the wrong size";
  if (msg[0])
    stub.violation = "msg not empty on entry";
  stub.calls++;
  stub.last = name;
  stub.last_force = force;
  if (stub.msg)
    snprintf(msg, len, "%s", stub.msg);
  if (stub.delay_ms) {
    sem_post(&stub.started);
    usleep((useconds_t) stub.delay_ms * 1000);
  }
  return stub.rc;
}

static int stub_promote(void *opaque, bool force, char *msg, size_t len)
{
  return stub_result("promote", force, msg, len);
}

static int stub_demote(void *opaque, bool force, char *msg, size_t len)
{
  return stub_result("demote", force, msg, len);
}

static int stub_connect(void *opaque, char *msg, size_t len)
{
  return stub_result("connect", false, msg, len);
}

static int stub_disconnect(void *opaque, char *msg, size_t len)
{
  return stub_result("disconnect", false, msg, len);
}

static const struct hb_ctl_ops stub_ops = {
  .status = stub_status,
  .promote = stub_promote,
  .demote = stub_demote,
  .connect = stub_connect,
  .disconnect = stub_disconnect,
};

/* ---- fixture: a server on a temp socket ---------------------------------- */

struct fix {
  char dir[64];
  char path[128];         /* dir/run/r0.ctl: run/ is created by the server */
  struct hb_ctl *ctl;
};

static void log_stderr(enum hb_log_level level, const char *msg)
{
  if (level != HB_LOG_DEBUG || getenv("HB_TEST_DEBUG"))
    fprintf(stderr, "# %s\n", msg);
}

static void rm_rf(const char *dir)
{
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
  struct fix *f = calloc(1, sizeof *f);
  char err[HB_ERRLEN] = "";

  stub_reset();
  snprintf(f->dir, sizeof f->dir, "/tmp/hb-test-ctl.XXXXXX");
  if (!mkdtemp(f->dir))
    return -1;
  snprintf(f->path, sizeof f->path, "%s/run/r0.ctl", f->dir);
  if (hb_ctl_start(f->path, &stub_ops, &stub, &f->ctl, err, sizeof err) != 0) {
    fprintf(stderr, "# hb_ctl_start: %s\n", err);
    return -1;
  }
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fix *f = *state;

  hb_ctl_stop(f->ctl);
  rm_rf(f->dir);
  free(f);
  if (stub.violation) {
    fprintf(stderr, "# %s\n", stub.violation);
    return -1;
  }
  return 0;
}

/* ---- a client ----------------------------------------------------------- */

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sun_path(struct sockaddr_un *sa, const char *path)
{
  size_t n = strlen(path);

  assert_true(n < sizeof sa->sun_path);
  memcpy(sa->sun_path, path, n + 1);
}

static int dial(const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  assert_true(fd >= 0);
  sun_path(&sa, path);
  if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

static void send_bytes(int fd, const char *buf, size_t len)
{
  while (len) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    assert_true(n > 0);
    buf += n;
    len -= (size_t) n;
  }
}

/* Read everything until EOF (the server closes after its response),
 * within TIMEOUT_MS. Returns the byte count; fails the test on timeout. */
static size_t read_all(int fd, char *buf, size_t cap, int timeout_ms)
{
  int64_t deadline = now_ms() + timeout_ms;
  size_t len = 0;

  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int64_t left = deadline - now_ms();
    if (left <= 0 || poll(&p, 1, (int) left) == 0)
      fail_msg("no response within %d ms (got %zu bytes)", timeout_ms, len);
    assert_true(len < cap);
    ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n < 0 && errno == ECONNRESET)
      break;
    assert_true(n >= 0);
    if (n == 0)
      break;
    len += (size_t) n;
  }
  buf[len] = '\0';
  return len;
}

static char resp[HB_CTL_RESPONSE_MAX + 16];

/* Send LEN raw bytes, read the response, check it is one line, parse it. */
static void raw_request(const char *path, const char *req, size_t len,
                        struct hb_json_doc *d)
{
  char err[256];
  int fd = dial(path);
  size_t n;

  assert_true(fd >= 0);
  send_bytes(fd, req, len);
  n = read_all(fd, resp, sizeof resp, 5000);
  close(fd);
  assert_true(n >= 3);
  assert_int_equal(resp[n - 1], '\n');
  assert_null(memchr(resp, '\n', n - 1));
  assert_true(n <= HB_CTL_RESPONSE_MAX);
  if (hb_json_parse(resp, n - 1, d, err, sizeof err) != 0)
    fail_msg("response is not JSON: %s: %s", err, resp);
}

#define RAW(path, lit, d) raw_request(path, lit, sizeof lit - 1, d)

static void request(const char *path, const char *line, struct hb_json_doc *d)
{
  char buf[HB_CTL_REQUEST_MAX + 2];
  int n = snprintf(buf, sizeof buf, "%s\n", line);
  raw_request(path, buf, (size_t) n, d);
}

static void assert_ok(const struct hb_json_doc *d)
{
  bool found;
  if (!hb_json_get_bool(d, "ok", &found))
    fail_msg("expected ok, got %s", resp);
  assert_true(found);
  assert_null(hb_json_get(d, "code"));
  assert_null(hb_json_get(d, "error"));
}

/* {"ok":false,"code":CODE,"error":...} with ERROR containing WANT. */
static void assert_error(const struct hb_json_doc *d, int code, const char *want)
{
  bool found;
  int64_t c = 0;
  const char *e = hb_json_get_str(d, "error");

  assert_false(hb_json_get_bool(d, "ok", &found));
  assert_true(found);
  assert_true(hb_json_get_int(d, "code", &c));
  if (c != code || !e || !strstr(e, want))
    fail_msg("expected code %d and an error with \"%s\", got %s", code, want,
             resp);
  assert_int_equal(d->nfields, 3);
}

/* ---- start-up ------------------------------------------------------------ */

static void test_start_files(void **state)
{
  struct fix *f = *state;
  char dir[160], lock[160];
  struct stat st;

  snprintf(dir, sizeof dir, "%s/run", f->dir);
  assert_int_equal(stat(dir, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0700);
  assert_int_equal(lstat(f->path, &st), 0);
  assert_true(S_ISSOCK(st.st_mode));
  assert_int_equal(st.st_mode & 07777, 0600);
  snprintf(lock, sizeof lock, "%s.lock", f->path);
  assert_int_equal(stat(lock, &st), 0);
  /* stop removes the socket; a new server starts on the same path */
  hb_ctl_stop(f->ctl);
  f->ctl = NULL;
  assert_int_equal(lstat(f->path, &st), -1);
  assert_int_equal(errno, ENOENT);
  char err[HB_ERRLEN];
  assert_int_equal(hb_ctl_start(f->path, &stub_ops, &stub, &f->ctl, err,
                                sizeof err), 0);
  struct hb_json_doc d;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_ok(&d);
  hb_json_free(&d);
}

/* ---- the commands ------------------------------------------------------- */

static void test_status(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;
  int64_t v;
  bool found;

  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_ok(&d);
  assert_string_equal(hb_json_get_str(&d, "resource"), "r0");
  assert_string_equal(hb_json_get_str(&d, "node"), "alpha");
  assert_string_equal(hb_json_get_str(&d, "role"), "Secondary");
  assert_string_equal(hb_json_get_str(&d, "disk"), "UpToDate");
  assert_string_equal(hb_json_get_str(&d, "connection"), "Connected");
  assert_string_equal(hb_json_get_str(&d, "peer_role"), "Primary");
  assert_true(hb_json_get_int(&d, "out_of_sync_bytes", &v));
  assert_true(v == 12345678901LL);
  assert_string_equal(hb_json_get_str(&d, "io_backend"), "uring");
  assert_int_equal(hb_json_get(&d, "tls")->type, HB_JSON_OBJECT);
  assert_true(hb_json_get_bool(&d, "tls.enabled", &found));
  assert_string_equal(hb_json_get_str(&d, "tls.version"), "TLSv1.3");
  assert_string_equal(hb_json_get_str(&d, "tls.cipher"), "TLS_AES_256_GCM_SHA384");
  /* the writer escaped the quote and the newline; they come back */
  assert_string_equal(hb_json_get_str(&d, "tls.peer"), "CN=beta \"quoted\"\n");
  assert_non_null(strstr(resp, "\\\"quoted\\\"\\n"));
  assert_true(strncmp(resp, "{\"ok\":true,", 11) == 0);
  hb_json_free(&d);
  assert_string_equal(stub.last, "status");
  assert_int_equal(stub.calls, 1);

  /* the state is read at each request */
  stub.role = "Primary";
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_string_equal(hb_json_get_str(&d, "role"), "Primary");
  hb_json_free(&d);
}

static void test_status_failures(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;

  stub.status_rc = -EIO;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_error(&d, -EIO, "status failed: Input/output error");
  hb_json_free(&d);

  stub.status_rc = 7;     /* not a valid result for status */
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_error(&d, -EPROTO, "status returned 7");
  hb_json_free(&d);
  stub.status_rc = 0;

  stub.status_unbalanced = true;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_error(&d, -EPROTO, "malformed JSON");
  hb_json_free(&d);
  stub.status_unbalanced = false;

  /* a status that does not fit in a response line */
  stub.status_pad = HB_CTL_RESPONSE_MAX;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_error(&d, -EMSGSIZE, "status response longer than 65536 bytes");
  hb_json_free(&d);
  /* one that just fits: the response is 65536 bytes with its '\n' */
  stub.status_pad = 0;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  size_t base = strlen(resp) + strlen(",\"pad\":\"\"");
  hb_json_free(&d);
  stub.status_pad = HB_CTL_RESPONSE_MAX - base;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_ok(&d);
  assert_int_equal(strlen(resp), HB_CTL_RESPONSE_MAX);
  hb_json_free(&d);
  stub.status_pad++;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_error(&d, -EMSGSIZE, "longer than");
  hb_json_free(&d);
}

static void test_promote_demote(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;

  request(f->path, "{\"cmd\":\"promote\"}", &d);
  assert_ok(&d);
  assert_int_equal(d.nfields, 1);            /* no message */
  assert_string_equal(stub.last, "promote");
  assert_false(stub.last_force);
  hb_json_free(&d);

  request(f->path, "{\"cmd\":\"promote\",\"force\":true}", &d);
  assert_ok(&d);
  assert_true(stub.last_force);
  hb_json_free(&d);

  request(f->path, "{\"force\":false,\"cmd\":\"demote\"}", &d);
  assert_ok(&d);
  assert_string_equal(stub.last, "demote");
  assert_false(stub.last_force);
  hb_json_free(&d);

  request(f->path, "{\"cmd\":\"demote\",\"force\":true}", &d);
  assert_true(stub.last_force);
  hb_json_free(&d);

  /* a note on success */
  stub.msg = "already Primary";
  request(f->path, "{\"cmd\":\"promote\"}", &d);
  assert_ok(&d);
  assert_string_equal(hb_json_get_str(&d, "message"), "already Primary");
  hb_json_free(&d);

  /* refusals: a positive code, the message */
  stub.rc = HB_CTL_PEER_PRIMARY;
  stub.msg = "peer beta is Primary";
  request(f->path, "{\"cmd\":\"promote\"}", &d);
  assert_error(&d, HB_CTL_PEER_PRIMARY, "promote refused: peer beta is Primary");
  hb_json_free(&d);
  stub.rc = HB_CTL_IN_USE;
  stub.msg = NULL;
  request(f->path, "{\"cmd\":\"demote\"}", &d);
  assert_error(&d, HB_CTL_IN_USE, "demote refused");
  assert_string_equal(hb_json_get_str(&d, "error"), "demote refused");
  hb_json_free(&d);

  /* failures: -errno, the message or strerror */
  stub.rc = -EIO;
  stub.msg = "metadata write failed";
  request(f->path, "{\"cmd\":\"promote\",\"force\":true}", &d);
  assert_error(&d, -EIO, "promote failed: metadata write failed");
  hb_json_free(&d);
  stub.msg = NULL;
  request(f->path, "{\"cmd\":\"demote\"}", &d);
  assert_error(&d, -EIO, "demote failed: Input/output error");
  hb_json_free(&d);
}

static void test_connect_disconnect(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;

  request(f->path, "{\"cmd\":\"connect\"}", &d);
  assert_ok(&d);
  assert_string_equal(stub.last, "connect");
  hb_json_free(&d);
  request(f->path, "{\"cmd\":\"disconnect\"}", &d);
  assert_ok(&d);
  assert_string_equal(stub.last, "disconnect");
  hb_json_free(&d);

  /* a message with control characters stays one line */
  stub.rc = -ENETUNREACH;
  stub.msg = "cannot reach\npeer\tbeta\r";
  request(f->path, "{\"cmd\":\"connect\"}", &d);
  assert_error(&d, -ENETUNREACH, "connect failed: cannot reach peer beta ");
  hb_json_free(&d);
  stub.rc = HB_CTL_SPLIT_BRAIN;
  stub.msg = "split brain: choose a victim";
  request(f->path, "{\"cmd\":\"connect\"}", &d);
  assert_error(&d, HB_CTL_SPLIT_BRAIN, "connect refused: split brain");
  hb_json_free(&d);
}

static void test_missing_ops(void **state)
{
  struct fix *f = *state;
  static const struct hb_ctl_ops none = { 0 };
  struct hb_ctl *ctl;
  char err[HB_ERRLEN], path[160];
  struct hb_json_doc d;
  static const char *const cmds[] = {
    "status", "promote", "demote", "connect", "disconnect",
  };

  snprintf(path, sizeof path, "%s/none.ctl", f->dir);
  assert_int_equal(hb_ctl_start(path, &none, NULL, &ctl, err, sizeof err), 0);
  for (size_t k = 0; k < 5; k++) {
    char req[64], want[64];
    snprintf(req, sizeof req, "{\"cmd\":\"%s\"}", cmds[k]);
    snprintf(want, sizeof want, "%s is not supported", cmds[k]);
    request(path, req, &d);
    assert_error(&d, -EOPNOTSUPP, want);
    hb_json_free(&d);
  }
  hb_ctl_stop(ctl);
}

/* ---- malformed requests ------------------------------------------------- */

static const struct {
  const char *req;        /* sent as is (with its '\n') */
  size_t len;             /* 0: strlen */
  const char *error;      /* expected in the error, code -EINVAL */
} malformed[] = {
  { "hello\n", 0, "malformed request: at byte 0: expected '{' (a JSON object), got 'h'" },
  { "\n", 0, "malformed request: empty line" },
  { "\r\n", 0, "malformed request: empty line" },
  { "{}\n", 0, "malformed request: no \"cmd\" member" },
  { "{\"cmd\":42}\n", 0, "malformed request: \"cmd\" must be a string, not integer" },
  { "{\"cmd\":null}\n", 0, "\"cmd\" must be a string, not null" },
  { "{\"cmd\":{\"x\":1}}\n", 0, "\"cmd\" must be a string, not object" },
  { "{\"cmd\":[\"status\"]}\n", 0, "\"cmd\" must be a string, not array" },
  { "{\"cmd\":\"reboot\"}\n", 0, "unknown command \"reboot\"" },
  { "{\"cmd\":\"STATUS\"}\n", 0, "unknown command \"STATUS\"" },
  { "{\"cmd\":\"\"}\n", 0, "unknown command \"\"" },
  { "{\"cmd\":\"promote\",\"force\":\"yes\"}\n", 0,
    "malformed request: \"force\" must be a boolean, not string" },
  { "{\"cmd\":\"promote\",\"force\":1}\n", 0, "\"force\" must be a boolean, not integer" },
  { "{\"cmd\":\"status\",\"force\":true}\n", 0,
    "malformed request: unknown member \"force\" for command status" },
  { "{\"cmd\":\"connect\",\"force\":true}\n", 0, "unknown member \"force\" for command connect" },
  { "{\"cmd\":\"promote\",\"extra\":{\"a\":1}}\n", 0, "unknown member \"extra\" for command promote" },
  { "{\"cmd\":\"status\"}x\n", 0, "at byte 16: 'x' after the object" },
  { "{\"cmd\":\"status\",\"cmd\":\"promote\"}\n", 0, "duplicate key \"cmd\"" },
  { "[\"status\"]\n", 0, "expected '{' (a JSON object), got '['" },
  { "{\"cmd\":\"status\"\n", 0, "at byte 15: expected ',' or '}', got end of input" },
  { "{\"cmd\":\"stat\\u0000us\"}\n", 0, "\\u0000 (NUL) is not allowed in a string" },
  { "\0{\"cmd\":\"status\"}\n", 18, "at byte 0: expected '{' (a JSON object), got byte 0x00" },
  { "{\"cmd\":\"status\"}\0\n", 18, "byte 0x00 after the object" },
  { "{\"cmd\":\"\xff\xfe\"}\n", 0, "invalid UTF-8 in a string" },
  { "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", 12, "got byte 0x16" }, /* a TLS hello */
  { "GET / HTTP/1.1\r\n", 0, "got 'G'" },
};

static void test_malformed(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;

  for (size_t k = 0; k < sizeof malformed / sizeof malformed[0]; k++) {
    const char *r = malformed[k].req;
    raw_request(f->path, r, malformed[k].len ? malformed[k].len : strlen(r), &d);
    assert_error(&d, -EINVAL, malformed[k].error);
    hb_json_free(&d);
  }
  assert_int_equal(stub.calls, 0);     /* nothing reached the resource */
}

/* Lenient framing: CRLF, no final newline before EOF, bytes after the
 * newline, a request split over many writes. */
static void test_framing(void **state)
{
  struct fix *f = *state;
  static const char req[] = "{\"cmd\":\"status\"}";
  struct hb_json_doc d;
  int fd;

  RAW(f->path, "{\"cmd\":\"status\"}\r\n", &d);
  assert_ok(&d);
  hb_json_free(&d);
  RAW(f->path, "{\"cmd\":\"status\"}\n{\"cmd\":\"promote\"}\n", &d);
  assert_ok(&d);
  assert_string_equal(stub.last, "status");   /* the second line is ignored */
  hb_json_free(&d);
  RAW(f->path, " \t{ \"cmd\" : \"status\" } \n", &d);
  assert_ok(&d);
  hb_json_free(&d);

  /* no newline, then shutdown(SHUT_WR): still a request */
  fd = dial(f->path);
  send_bytes(fd, req, sizeof req - 1);
  shutdown(fd, SHUT_WR);
  size_t n = read_all(fd, resp, sizeof resp, 5000);
  close(fd);
  assert_true(n > 0);
  assert_true(strncmp(resp, "{\"ok\":true", 10) == 0);

  /* byte by byte */
  fd = dial(f->path);
  for (size_t k = 0; k < sizeof req - 1; k++) {
    send_bytes(fd, req + k, 1);
    usleep(200);
  }
  send_bytes(fd, "\n", 1);
  n = read_all(fd, resp, sizeof resp, 5000);
  close(fd);
  assert_true(strncmp(resp, "{\"ok\":true", 10) == 0);

  /* connect and hang up without a byte: nothing happens */
  fd = dial(f->path);
  close(fd);
  request(f->path, req, &d);
  assert_ok(&d);
  hb_json_free(&d);
}

static void test_overlong(void **state)
{
  struct fix *f = *state;
  char *buf = malloc(3 * HB_CTL_REQUEST_MAX);
  struct hb_json_doc d;
  static const char req[] = "{\"cmd\":\"status\"}";

  /* exactly HB_CTL_REQUEST_MAX bytes before the '\n' (padded with
   * spaces): accepted */
  memset(buf, ' ', HB_CTL_REQUEST_MAX);
  memcpy(buf, req, sizeof req - 1);
  buf[HB_CTL_REQUEST_MAX] = '\n';
  raw_request(f->path, buf, HB_CTL_REQUEST_MAX + 1, &d);
  assert_ok(&d);
  hb_json_free(&d);
  /* one more: refused */
  memset(buf, ' ', HB_CTL_REQUEST_MAX + 1);
  memcpy(buf, req, sizeof req - 1);
  buf[HB_CTL_REQUEST_MAX + 1] = '\n';
  raw_request(f->path, buf, HB_CTL_REQUEST_MAX + 2, &d);
  assert_error(&d, -EMSGSIZE, "request longer than 4096 bytes");
  hb_json_free(&d);
  /* a long line with no newline at all */
  memset(buf, 'a', 3 * HB_CTL_REQUEST_MAX);
  raw_request(f->path, buf, 3 * HB_CTL_REQUEST_MAX, &d);
  assert_error(&d, -EMSGSIZE, "request longer than 4096 bytes");
  hb_json_free(&d);
  free(buf);
  assert_int_equal(stub.calls, 1);
}

/* Random bytes: every line gets an error response; the server lives on. */
static void test_garbage(void **state)
{
  struct fix *f = *state;
  unsigned seed = 4242;
  char buf[300];
  struct hb_json_doc d;

  for (int iter = 0; iter < 300; iter++) {
    size_t len = 1 + (size_t) (rand_r(&seed) % 250);
    for (size_t k = 0; k < len; k++) {
      buf[k] = (char) rand_r(&seed);
      if (buf[k] == '\n')
        buf[k] = '{';
    }
    buf[len] = '\n';
    raw_request(f->path, buf, len + 1, &d);
    assert_error(&d, -EINVAL, "malformed request");
    hb_json_free(&d);
  }
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_ok(&d);
  hb_json_free(&d);
}

/* ---- slow, silent and many clients -------------------------------------- */

/* A client that says nothing holds no one up, and is dropped at its
 * deadline with a reason; so is one that stops in the middle of a line. */
static void test_silent_client(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;
  int64_t t0;
  int silent, partial;

  hb_ctl_set_timeout(f->ctl, 1500);
  silent = dial(f->path);
  partial = dial(f->path);
  assert_true(silent >= 0 && partial >= 0);
  send_bytes(partial, "{\"cmd\":", 7);
  t0 = now_ms();
  for (int k = 0; k < 20; k++) {
    request(f->path, "{\"cmd\":\"status\"}", &d);
    assert_ok(&d);
    hb_json_free(&d);
  }
  /* twenty answers long before the silent ones' deadline */
  assert_true(now_ms() - t0 < 1000);
  size_t n = read_all(silent, resp, sizeof resp, 5000);
  assert_true(n > 0);
  assert_true(hb_json_parse(resp, n - 1, &d, NULL, 0) == 0);
  assert_error(&d, -ETIMEDOUT, "no complete request within 1500 ms");
  hb_json_free(&d);
  assert_true(now_ms() - t0 >= 1400);
  n = read_all(partial, resp, sizeof resp, 5000);
  assert_true(hb_json_parse(resp, n - 1, &d, NULL, 0) == 0);
  assert_error(&d, -ETIMEDOUT, "no complete request");
  hb_json_free(&d);
  close(silent);
  close(partial);
  assert_int_equal(stub.calls, 20);
}

/* A client that sends its request and never reads the answer, and one that
 * sends a request followed by megabytes: neither blocks the server. */
static void test_rude_clients(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;
  int deaf, flood;
  char *big = calloc(1, 1 << 20);

  hb_ctl_set_timeout(f->ctl, 1000);
  stub.status_pad = 60000;
  deaf = dial(f->path);
  send_bytes(deaf, "{\"cmd\":\"status\"}\n", 17);
  flood = dial(f->path);
  send_bytes(flood, "{\"cmd\":\"connect\"}\n", 18);
  /* the server reads one line and closes: the rest of the flood fails */
  fcntl(flood, F_SETFL, O_NONBLOCK);
  for (int k = 0; k < 64; k++)
    if (send(flood, big, 1 << 20, MSG_NOSIGNAL) < 0)
      break;
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_ok(&d);
  hb_json_free(&d);
  close(deaf);
  close(flood);
  free(big);
}

/* A command that outlasts other clients' deadlines: a client whose
 * complete request waited meanwhile is still served, not timed out. */
static void test_slow_command(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;
  char err[256];
  int a, b;
  size_t n;

  hb_ctl_set_timeout(f->ctl, 400);
  assert_int_equal(sem_init(&stub.started, 0, 0), 0);
  stub.delay_ms = 1000;
  b = dial(f->path);          /* accepted before a: the backlog is in order */
  a = dial(f->path);
  send_bytes(a, "{\"cmd\":\"promote\"}\n", 19);
  assert_int_equal(sem_wait(&stub.started), 0);
  /* a's promote runs now, past b's deadline */
  send_bytes(b, "{\"cmd\":\"status\"}\n", 17);
  n = read_all(a, resp, sizeof resp, 5000);
  assert_int_equal(hb_json_parse(resp, n - 1, &d, err, sizeof err), 0);
  assert_ok(&d);
  hb_json_free(&d);
  n = read_all(b, resp, sizeof resp, 5000);
  assert_int_equal(hb_json_parse(resp, n - 1, &d, err, sizeof err), 0);
  assert_ok(&d);
  assert_string_equal(hb_json_get_str(&d, "role"), "Secondary");
  hb_json_free(&d);
  close(a);
  close(b);
  sem_destroy(&stub.started);
}

/* More clients than slots: the newcomer waits in the backlog and is served
 * once a slot frees. Found in review: it used to be refused at once
 * (-EBUSY), and hactl exited 1, which Pacemaker takes for a failed
 * monitor. */
static void test_too_many_clients(void **state)
{
  struct fix *f = *state;
  int fds[HB_CTL_CONNS_MAX], extra;
  struct pollfd p;
  struct hb_json_doc d;
  char err[256];
  size_t n;

  for (int k = 0; k < HB_CTL_CONNS_MAX; k++) {
    fds[k] = dial(f->path);
    assert_true(fds[k] >= 0);
  }
  extra = dial(f->path);
  assert_true(extra >= 0);
  send_bytes(extra, "{\"cmd\":\"status\"}\n", 17);
  /* the silent ones hold every slot: no answer yet, not a refusal */
  p = (struct pollfd) { .fd = extra, .events = POLLIN };
  assert_int_equal(poll(&p, 1, 500), 0);
  close(fds[0]);
  n = read_all(extra, resp, sizeof resp, 3000);
  assert_int_equal(hb_json_parse(resp, n - 1, &d, err, sizeof err), 0);
  assert_ok(&d);
  hb_json_free(&d);
  close(extra);
  for (int k = 1; k < HB_CTL_CONNS_MAX; k++)
    close(fds[k]);
}

#define BURST (HB_CTL_CONNS_MAX + 4)

/* A burst of clients while a long command holds the thread (as after a
 * promotion, when every monitor that waited calls at once): each is
 * served, none turned away. */
static void test_burst_during_slow_command(void **state)
{
  struct fix *f = *state;
  struct hb_json_doc d;
  char err[256];
  int a, fds[BURST];
  size_t n;

  assert_int_equal(sem_init(&stub.started, 0, 0), 0);
  stub.delay_ms = 1000;
  a = dial(f->path);
  send_bytes(a, "{\"cmd\":\"promote\"}\n", 19);
  assert_int_equal(sem_wait(&stub.started), 0);
  for (int k = 0; k < BURST; k++) {
    fds[k] = dial(f->path);
    assert_true(fds[k] >= 0);
    send_bytes(fds[k], "{\"cmd\":\"status\"}\n", 17);
  }
  n = read_all(a, resp, sizeof resp, 5000);
  assert_int_equal(hb_json_parse(resp, n - 1, &d, err, sizeof err), 0);
  assert_ok(&d);
  hb_json_free(&d);
  for (int k = 0; k < BURST; k++) {
    n = read_all(fds[k], resp, sizeof resp, 5000);
    if (hb_json_parse(resp, n - 1, &d, err, sizeof err) != 0)
      fail_msg("client %d: not JSON: %s", k, resp);
    if (!hb_json_get_bool(&d, "ok", NULL))
      fail_msg("client %d of %d was not served: %s", k, BURST, resp);
    hb_json_free(&d);
    close(fds[k]);
  }
  close(a);
  sem_destroy(&stub.started);
}

#define THREADS 6
#define PER_THREAD 100

static void *hammer(void *arg)
{
  const char *path = arg;
  struct hb_json_doc d;
  char buf[1024], err[256];

  /* no cmocka assertion on this thread */
  for (int k = 0; k < PER_THREAD; k++) {
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ssize_t n;
    size_t len = 0;
    sun_path(&sa, path);
    if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0 ||
        send(fd, "{\"cmd\":\"status\"}\n", 17, MSG_NOSIGNAL) != 17)
      return (void *) 1;
    while ((n = recv(fd, buf + len, sizeof buf - 1 - len, 0)) > 0)
      len += (size_t) n;
    close(fd);
    /* every one served, whatever the load */
    if (len < 2 || hb_json_parse(buf, len - 1, &d, err, sizeof err) != 0)
      return (void *) 2;
    bool ok = hb_json_get_bool(&d, "ok", NULL);
    hb_json_free(&d);
    if (!ok)
      return (void *) 3;
  }
  return NULL;
}

static void test_concurrent_clients(void **state)
{
  struct fix *f = *state;
  pthread_t th[THREADS];
  void *r;

  for (int k = 0; k < THREADS; k++)
    assert_int_equal(pthread_create(&th[k], NULL, hammer, f->path), 0);
  for (int k = 0; k < THREADS; k++) {
    assert_int_equal(pthread_join(th[k], &r), 0);
    assert_null(r);
  }
}

/* hb_ctl_stop with clients connected returns at once and hangs them up. */
static void test_stop_with_clients(void **state)
{
  struct fix *f = *state;
  int fd = dial(f->path), fd2 = dial(f->path);
  int64_t t0;
  char c;

  send_bytes(fd2, "{\"cmd\"", 6);
  usleep(50000);
  t0 = now_ms();
  hb_ctl_stop(f->ctl);
  f->ctl = NULL;
  assert_true(now_ms() - t0 < 1000);
  /* EOF, or a reset if it was still in the backlog */
  assert_true(recv(fd, &c, 1, 0) <= 0);
  assert_true(recv(fd2, &c, 1, 0) <= 0);
  close(fd);
  close(fd2);
  assert_int_equal(dial(f->path), -ENOENT);
}

/* ---- start-up against what is already there ------------------------------ */

static void test_stale_socket(void **state)
{
  struct fix *f = *state;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  char path[160], err[HB_ERRLEN] = "";
  struct hb_ctl *ctl;
  struct hb_json_doc d;
  int fd;

  /* a socket file nobody listens on, as a crashed server leaves it */
  snprintf(path, sizeof path, "%s/stale.ctl", f->dir);
  sun_path(&sa, path);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
  close(fd);
  assert_int_equal(dial(path), -ECONNREFUSED);
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err), 0);
  request(path, "{\"cmd\":\"status\"}", &d);
  assert_ok(&d);
  hb_json_free(&d);
  hb_ctl_stop(ctl);
}

static void test_already_served(void **state)
{
  struct fix *f = *state;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  char path[160], err[HB_ERRLEN] = "", want[600];
  struct hb_ctl *ctl = (void *) 1;
  struct hb_json_doc d;
  int fd;

  /* our own server on the path: its lock says so */
  assert_int_equal(hb_ctl_start(f->path, &stub_ops, &stub, &ctl, err,
                                sizeof err), -EADDRINUSE);
  assert_null(ctl);
  snprintf(want, sizeof want, "control socket %s is already served by "
           "another process (%s.lock is locked)", f->path, f->path);
  assert_string_equal(err, want);
  /* the first server is untouched */
  request(f->path, "{\"cmd\":\"status\"}", &d);
  assert_ok(&d);
  hb_json_free(&d);

  /* a foreign process listening there (no lock): it answers, so refuse */
  snprintf(path, sizeof path, "%s/foreign.ctl", f->dir);
  sun_path(&sa, path);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 4), 0);
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err),
                   -EADDRINUSE);
  snprintf(want, sizeof want, "control socket %s is already served by "
           "another process", path);
  assert_string_equal(err, want);
  assert_int_equal(access(path, F_OK), 0);    /* not removed */
  close(fd);
  /* once it is gone, the stale socket is taken over */
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err), 0);
  hb_ctl_stop(ctl);
}

/* Bind in one step (nbdkit's .get_ready), serve in another (.after_fork):
 * a client that came in between is served once the thread runs. */
static void test_bind_then_run(void **state)
{
  struct fix *f = *state;
  char path[160], err[HB_ERRLEN] = "";
  struct hb_ctl *ctl;
  struct hb_json_doc d;
  struct stat st;
  int fd;

  snprintf(path, sizeof path, "%s/later.ctl", f->dir);
  assert_int_equal(hb_ctl_bind(path, &stub_ops, &stub, &ctl, err, sizeof err), 0);
  assert_int_equal(lstat(path, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600);
  fd = dial(path);
  assert_true(fd >= 0);
  send_bytes(fd, "{\"cmd\":\"status\"}\n", 17);
  assert_int_equal(stub.calls, 0);
  assert_int_equal(hb_ctl_run(ctl, err, sizeof err), 0);
  size_t n = read_all(fd, resp, sizeof resp, 5000);
  close(fd);
  assert_int_equal(hb_json_parse(resp, n - 1, &d, err, sizeof err), 0);
  assert_ok(&d);
  hb_json_free(&d);
  assert_int_equal(hb_ctl_run(ctl, err, sizeof err), -EALREADY);
  hb_ctl_stop(ctl);
  assert_int_equal(lstat(path, &st), -1);

  /* bound, never run: stop still removes the socket, releases the lock */
  assert_int_equal(hb_ctl_bind(path, &stub_ops, &stub, &ctl, err, sizeof err), 0);
  hb_ctl_stop(ctl);
  assert_int_equal(lstat(path, &st), -1);
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err), 0);
  hb_ctl_stop(ctl);
}

static void test_bad_paths(void **state)
{
  struct fix *f = *state;
  char path[256], err[HB_ERRLEN] = "", want[600];
  struct hb_ctl *ctl;
  int fd;

  /* a regular file is not ours to remove */
  snprintf(path, sizeof path, "%s/file.ctl", f->dir);
  fd = open(path, O_CREAT | O_WRONLY, 0600);
  assert_int_equal(write(fd, "data", 4), 4);
  close(fd);
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err),
                   -EEXIST);
  snprintf(want, sizeof want, "control socket %s: the path exists and is not "
           "a socket", path);
  assert_string_equal(err, want);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 4);

  /* a directory neither */
  snprintf(path, sizeof path, "%s/adir.ctl", f->dir);
  assert_int_equal(mkdir(path, 0700), 0);
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err),
                   -EEXIST);

  /* longer than sun_path */
  memset(path, 'p', sizeof path);
  path[0] = '/';
  path[150] = '\0';
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err),
                   -ENAMETOOLONG);
  assert_non_null(strstr(err, "longer than 107 bytes"));

  /* empty, and a parent that cannot be created */
  assert_int_equal(hb_ctl_start("", &stub_ops, &stub, &ctl, err, sizeof err),
                   -EINVAL);
  snprintf(path, sizeof path, "%s/file.ctl/sub/r0.ctl", f->dir);
  assert_int_equal(hb_ctl_start(path, &stub_ops, &stub, &ctl, err, sizeof err),
                   -ENOTDIR);
  assert_non_null(strstr(err, "cannot create directory"));
  hb_ctl_stop(NULL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_start_files, setup, teardown),
    cmocka_unit_test_setup_teardown(test_status, setup, teardown),
    cmocka_unit_test_setup_teardown(test_status_failures, setup, teardown),
    cmocka_unit_test_setup_teardown(test_promote_demote, setup, teardown),
    cmocka_unit_test_setup_teardown(test_connect_disconnect, setup, teardown),
    cmocka_unit_test_setup_teardown(test_missing_ops, setup, teardown),
    cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_framing, setup, teardown),
    cmocka_unit_test_setup_teardown(test_overlong, setup, teardown),
    cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
    cmocka_unit_test_setup_teardown(test_silent_client, setup, teardown),
    cmocka_unit_test_setup_teardown(test_rude_clients, setup, teardown),
    cmocka_unit_test_setup_teardown(test_slow_command, setup, teardown),
    cmocka_unit_test_setup_teardown(test_too_many_clients, setup, teardown),
    cmocka_unit_test_setup_teardown(test_burst_during_slow_command, setup, teardown),
    cmocka_unit_test_setup_teardown(test_concurrent_clients, setup, teardown),
    cmocka_unit_test_setup_teardown(test_stop_with_clients, setup, teardown),
    cmocka_unit_test_setup_teardown(test_stale_socket, setup, teardown),
    cmocka_unit_test_setup_teardown(test_already_served, setup, teardown),
    cmocka_unit_test_setup_teardown(test_bind_then_run, setup, teardown),
    cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
  };

  hb_set_log(log_stderr);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
