/* The control socket server: see ctl.h for the protocol. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "log.h"

struct conn {
  int fd;                 /* -1: free slot */
  int64_t deadline;       /* CLOCK_MONOTONIC, ms */
  size_t inlen;
  char *out;              /* non-NULL: the response, being sent */
  size_t outlen, outoff;
  char in[HB_CTL_REQUEST_MAX + 1];  /* the line and its '\n' */
};

struct hb_ctl {
  char *path;
  int lfd;                /* listening socket */
  int lockfd;             /* PATH.lock, flock'ed */
  int stopfd;             /* eventfd: hb_ctl_stop wakes the thread */
  dev_t dev;              /* of our socket, to remove only ours */
  ino_t ino;
  pthread_t thread;
  bool running;           /* the thread was started */
  const struct hb_ctl_ops *ops;
  void *opaque;
  atomic_uint timeout_ms;
  struct conn conns[HB_CTL_CONNS_MAX];
  char resp[HB_CTL_RESPONSE_MAX];   /* a response is formatted here */
};

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- responses ---------------------------------------------------------- */

/* MSG as one line: control characters become spaces. */
static void one_line(char *msg)
{
  for (unsigned char *p = (unsigned char *) msg; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      *p = ' ';
}

/* {"ok":false,"code":CODE,"error":MSG} in c->resp, discarding whatever
 * was there. Returns its length. */
static size_t error_response(struct hb_ctl *c, int code, const char *msg)
{
  struct hb_json_out o;
  char line[HB_CTL_MSG_MAX + 64];
  int n;

  snprintf(line, sizeof line, "%s", msg);
  one_line(line);
  hb_json_out_init(&o, c->resp, sizeof c->resp);
  hb_json_add_bool(&o, "ok", false);
  hb_json_add_int(&o, "code", code);
  hb_json_add_str(&o, "error", line);
  n = hb_json_out_end(&o);
  return n > 0 ? (size_t) n : 0;  /* cannot fail: far below the size */
}

static size_t errorf(struct hb_ctl *c, int code, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

static size_t errorf(struct hb_ctl *c, int code, const char *fmt, ...)
{
  char msg[HB_CTL_MSG_MAX + 64];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return error_response(c, code, msg);
}

static const char *errstr(int err, char *buf, size_t len)
{
  return strerror_r(err, buf, len);
}

/* ---- commands ----------------------------------------------------------- */

static size_t run_status(struct hb_ctl *c, bool force)
{
  struct hb_json_out o;
  char eb[128];
  int r;

  hb_debug("control: status");
  if (!c->ops->status)
    return errorf(c, -EOPNOTSUPP, "status is not supported by this server");
  hb_json_out_init(&o, c->resp, sizeof c->resp);  /* '\n' takes the NUL's place */
  hb_json_add_bool(&o, "ok", true);
  r = c->ops->status(c->opaque, &o);
  if (r < 0)
    return errorf(c, r, "status failed: %s", errstr(-r, eb, sizeof eb));
  if (r > 0)
    return errorf(c, -EPROTO, "status returned %d: not a valid result", r);
  r = hb_json_out_end(&o);
  if (r == -ENOSPC)
    return errorf(c, -EMSGSIZE, "status response longer than %d bytes",
                  HB_CTL_RESPONSE_MAX);
  if (r < 0)
    return errorf(c, -EPROTO, "status produced malformed JSON "
                  "(an object left open, or a NULL key)");
  return (size_t) r;
}

/* The four state-changing commands share the shape: a result and a line. */
static size_t result_response(struct hb_ctl *c, const char *name, bool force,
                              int r, char *msg)
{
  struct hb_json_out o;
  char eb[128];
  int n;

  msg[HB_CTL_MSG_MAX - 1] = '\0';
  one_line(msg);
  hb_debug("control: %s%s: %d%s%s", name, force ? " --force" : "", r,
           *msg ? ": " : "", msg);
  if (r > 0)
    return errorf(c, r, "%s refused%s%s", name, *msg ? ": " : "", msg);
  if (r < 0)
    return errorf(c, r, "%s failed: %s", name,
                  *msg ? msg : errstr(-r, eb, sizeof eb));
  hb_json_out_init(&o, c->resp, sizeof c->resp);
  hb_json_add_bool(&o, "ok", true);
  if (*msg)
    hb_json_add_str(&o, "message", msg);
  n = hb_json_out_end(&o);
  return n > 0 ? (size_t) n : 0;
}

static size_t run_promote(struct hb_ctl *c, bool force)
{
  char msg[HB_CTL_MSG_MAX] = "";

  if (!c->ops->promote)
    return errorf(c, -EOPNOTSUPP, "promote is not supported by this server");
  return result_response(c, "promote", force,
                         c->ops->promote(c->opaque, force, msg, sizeof msg), msg);
}

static size_t run_demote(struct hb_ctl *c, bool force)
{
  char msg[HB_CTL_MSG_MAX] = "";

  if (!c->ops->demote)
    return errorf(c, -EOPNOTSUPP, "demote is not supported by this server");
  return result_response(c, "demote", force,
                         c->ops->demote(c->opaque, force, msg, sizeof msg), msg);
}

static size_t run_connect(struct hb_ctl *c, bool force)
{
  char msg[HB_CTL_MSG_MAX] = "";

  if (!c->ops->connect)
    return errorf(c, -EOPNOTSUPP, "connect is not supported by this server");
  return result_response(c, "connect", false,
                         c->ops->connect(c->opaque, msg, sizeof msg), msg);
}

static size_t run_disconnect(struct hb_ctl *c, bool force)
{
  char msg[HB_CTL_MSG_MAX] = "";

  if (!c->ops->disconnect)
    return errorf(c, -EOPNOTSUPP, "disconnect is not supported by this server");
  return result_response(c, "disconnect", false,
                         c->ops->disconnect(c->opaque, msg, sizeof msg), msg);
}

static const struct ctl_cmd {
  const char *name;
  bool has_force;           /* accepts "force": boolean */
  size_t (*run)(struct hb_ctl *c, bool force);
} ctl_cmds[] = {
  { "status",     false, run_status },
  { "promote",    true,  run_promote },
  { "demote",     true,  run_demote },
  { "connect",    false, run_connect },
  { "disconnect", false, run_disconnect },
};

/* Check the request's members and run its command. */
static size_t dispatch(struct hb_ctl *c, const struct hb_json_doc *req)
{
  const struct hb_json_field *f = hb_json_get(req, "cmd");
  const struct ctl_cmd *cmd = NULL;
  bool force = false;

  if (!f)
    return errorf(c, -EINVAL, "malformed request: no \"cmd\" member");
  if (f->type != HB_JSON_STRING)
    return errorf(c, -EINVAL, "malformed request: \"cmd\" must be a string, "
                  "not %s", hb_json_type_name(f->type));
  for (size_t k = 0; k < sizeof ctl_cmds / sizeof ctl_cmds[0]; k++)
    if (strcmp(f->s, ctl_cmds[k].name) == 0)
      cmd = &ctl_cmds[k];
  if (!cmd)
    return errorf(c, -EINVAL, "unknown command \"%.64s\"", f->s);
  for (size_t k = 0; k < req->nfields; k++) {
    f = &req->fields[k];
    if (f->depth != 0 || strcmp(f->key, "cmd") == 0)
      continue;
    if (strcmp(f->key, "force") == 0 && cmd->has_force) {
      if (f->type != HB_JSON_BOOL)
        return errorf(c, -EINVAL, "malformed request: \"force\" must be a "
                      "boolean, not %s", hb_json_type_name(f->type));
      force = f->b;
      continue;
    }
    return errorf(c, -EINVAL, "malformed request: unknown member \"%.64s\" "
                  "for command %s", f->key, cmd->name);
  }
  return cmd->run(c, force);
}

/* Build the response to LINE (LEN bytes, '\n' removed) in c->resp. */
static size_t handle_line(struct hb_ctl *c, char *line, size_t len)
{
  struct hb_json_doc req;
  char perr[HB_CTL_MSG_MAX];
  size_t n;

  if (len && line[len - 1] == '\r')
    len--;
  if (len == 0)
    return errorf(c, -EINVAL, "malformed request: empty line");
  if (hb_json_parse(line, len, &req, perr, sizeof perr) < 0)
    return errorf(c, -EINVAL, "malformed request: %s", perr);
  n = dispatch(c, &req);
  hb_json_free(&req);
  return n;
}

/* ---- connections -------------------------------------------------------- */

static void conn_close(struct conn *cn)
{
  if (cn->fd >= 0)
    close(cn->fd);
  free(cn->out);
  cn->fd = -1;
  cn->out = NULL;
  cn->inlen = cn->outlen = cn->outoff = 0;
}

/* Send what the socket takes now; close when done or on error. */
static void conn_send(struct conn *cn)
{
  while (cn->outoff < cn->outlen) {
    ssize_t n = send(cn->fd, cn->out + cn->outoff, cn->outlen - cn->outoff,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        conn_close(cn);
      return;
    }
    cn->outoff += (size_t) n;
  }
  conn_close(cn);
}

/* Queue the LEN bytes in c->resp (plus '\n') as CN's response. */
static void conn_respond(struct hb_ctl *c, struct conn *cn, size_t len)
{
  cn->out = malloc(len + 1);
  if (!cn->out) {
    conn_close(cn);
    return;
  }
  memcpy(cn->out, c->resp, len);
  cn->out[len] = '\n';
  cn->outlen = len + 1;
  cn->outoff = 0;
  cn->deadline = now_ms() + atomic_load(&c->timeout_ms);
  conn_send(cn);
}

static void conn_read(struct hb_ctl *c, struct conn *cn)
{
  size_t room = sizeof cn->in - cn->inlen;
  ssize_t n;
  char *nl;

  n = recv(cn->fd, cn->in + cn->inlen, room, MSG_DONTWAIT);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      conn_close(cn);
    return;
  }
  if (n == 0) {
    /* End of input: a last line without '\n' is still a request. */
    if (cn->inlen == 0)
      conn_close(cn);
    else
      conn_respond(c, cn, handle_line(c, cn->in, cn->inlen));
    return;
  }
  nl = memchr(cn->in + cn->inlen, '\n', (size_t) n);
  cn->inlen += (size_t) n;
  if (nl)
    conn_respond(c, cn, handle_line(c, cn->in, (size_t) (nl - cn->in)));
  else if (cn->inlen == sizeof cn->in)
    conn_respond(c, cn, errorf(c, -EMSGSIZE, "request longer than %d bytes",
                               HB_CTL_REQUEST_MAX));
}

/* The deadline passed: tell a client that never finished its request. */
static void conn_expire(struct hb_ctl *c, struct conn *cn)
{
  size_t n;

  if (!cn->out) {
    n = errorf(c, -ETIMEDOUT, "no complete request within %u ms",
               atomic_load(&c->timeout_ms));
    c->resp[n] = '\n';
    /* best effort: the client may not be reading */
    if (send(cn->fd, c->resp, n + 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
      hb_debug("control: timed-out client: %m");
  }
  conn_close(cn);
}

static struct conn *free_slot(struct hb_ctl *c)
{
  for (size_t k = 0; k < HB_CTL_CONNS_MAX; k++)
    if (c->conns[k].fd < 0)
      return &c->conns[k];
  return NULL;
}

/* As many as there are free slots: the others wait in the listen backlog
 * (and hactl waits for its turn until its own deadline) rather than being
 * turned away while a long command holds this thread. */
static void accept_all(struct hb_ctl *c)
{
  struct conn *cn;

  while ((cn = free_slot(c))) {
    int fd = accept4(c->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        hb_error("control socket %s: accept: %m", c->path);
      return;
    }
    cn->fd = fd;
    cn->inlen = 0;
    cn->deadline = now_ms() + atomic_load(&c->timeout_ms);
  }
}

static void *ctl_thread(void *arg)
{
  struct hb_ctl *c = arg;
  struct pollfd pfd[2 + HB_CTL_CONNS_MAX];
  struct conn *who[2 + HB_CTL_CONNS_MAX];

  for (;;) {
    int64_t now = now_ms(), next = -1;
    nfds_t n = 2;
    int r;

    pfd[0] = (struct pollfd) { .fd = c->stopfd, .events = POLLIN };
    /* every slot taken: leave new clients in the backlog (poll skips -1) */
    pfd[1] = (struct pollfd) { .fd = free_slot(c) ? c->lfd : -1, .events = POLLIN };
    for (size_t k = 0; k < HB_CTL_CONNS_MAX; k++) {
      struct conn *cn = &c->conns[k];
      if (cn->fd < 0)
        continue;
      pfd[n] = (struct pollfd) { .fd = cn->fd,
                                 .events = cn->out ? POLLOUT : POLLIN };
      who[n++] = cn;
      if (next < 0 || cn->deadline < next)
        next = cn->deadline;
    }
    r = poll(pfd, n, next < 0 ? -1 : (int) (next > now ? next - now : 0));
    if (r < 0) {
      if (errno == EINTR)
        continue;
      hb_error("control socket %s: poll: %m", c->path);
      return NULL;
    }
    if (pfd[0].revents)
      return NULL;
    for (nfds_t k = 2; k < n; k++) {
      struct conn *cn = who[k];
      if (pfd[k].revents & (POLLIN | POLLOUT | POLLHUP | POLLERR)) {
        if (cn->out)
          conn_send(cn);
        else
          conn_read(c, cn);
      }
    }
    /* A command may have run long enough for other deadlines to pass
     * while their requests or responses waited on us: a last try each,
     * then they expire. */
    now = now_ms();
    for (size_t k = 0; k < HB_CTL_CONNS_MAX; k++) {
      struct conn *cn = &c->conns[k];
      if (cn->fd < 0 || cn->deadline > now)
        continue;
      if (cn->out)
        conn_send(cn);
      else
        conn_read(c, cn);
      if (cn->fd >= 0 && cn->deadline <= now)
        conn_expire(c, cn);
    }
    if (pfd[1].revents)
      accept_all(c);
  }
}

/* ---- start and stop ----------------------------------------------------- */

/* Create the missing directories above PATH, mode 0700. */
static int make_parents(const char *path, char *err, size_t errlen)
{
  char dir[PATH_MAX];
  char *slash;

  snprintf(dir, sizeof dir, "%s", path);
  slash = strrchr(dir, '/');
  if (!slash || slash == dir)
    return 0;
  *slash = '\0';
  for (char *p = dir + 1; ; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
      return hb_fail(err, errlen, errno, "cannot create directory %s for "
                     "control socket %s: %m", dir, path);
    *p = saved;
    if (saved == '\0')
      break;
  }
  return 0;
}

/* An existing PATH: remove it if it is a stale socket, else refuse. */
static int clear_stale(const char *path, char *err, size_t errlen)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  struct stat st;
  int fd, r, e;

  if (lstat(path, &st) < 0) {
    if (errno == ENOENT)
      return 0;
    return hb_fail(err, errlen, errno, "control socket %s: %m", path);
  }
  if (!S_ISSOCK(st.st_mode))
    return hb_fail(err, errlen, EEXIST, "control socket %s: the path exists "
                   "and is not a socket", path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return hb_fail(err, errlen, errno, "socket: %m");
  memcpy(sa.sun_path, path, strlen(path) + 1);
  r = connect(fd, (struct sockaddr *) &sa, sizeof sa);
  e = errno;
  close(fd);
  if (r == 0 || e == EAGAIN || e == EINPROGRESS)
    return hb_fail(err, errlen, EADDRINUSE, "control socket %s is already "
                   "served by another process", path);
  if (e != ECONNREFUSED)
    return hb_fail(err, errlen, e, "control socket %s exists and cannot be "
                   "probed: %s", path, strerror(e));
  if (unlink(path) < 0 && errno != ENOENT)
    return hb_fail(err, errlen, errno, "cannot remove stale control socket "
                   "%s: %m", path);
  hb_info("removed stale control socket %s", path);
  return 0;
}

static int take_lock(struct hb_ctl *c, char *err, size_t errlen)
{
  char lock[PATH_MAX];

  if ((size_t) snprintf(lock, sizeof lock, "%s.lock", c->path) >= sizeof lock)
    return hb_fail(err, errlen, ENAMETOOLONG, "control socket %s: path too "
                   "long", c->path);
  c->lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (c->lockfd < 0)
    return hb_fail(err, errlen, errno, "cannot open lock file %s: %m", lock);
  if (flock(c->lockfd, LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK)
      return hb_fail(err, errlen, EADDRINUSE, "control socket %s is already "
                     "served by another process (%s is locked)", c->path, lock);
    return hb_fail(err, errlen, errno, "cannot lock %s: %m", lock);
  }
  return 0;
}

static int bind_socket(struct hb_ctl *c, char *err, size_t errlen)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  struct stat st;

  memcpy(sa.sun_path, c->path, strlen(c->path) + 1);
  c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (c->lfd < 0)
    return hb_fail(err, errlen, errno, "socket: %m");
  /* Linux gives a bound socket the mode of its inode (less the umask):
   * 0600 from the start, not after a chmod that a client could race. */
  if (fchmod(c->lfd, 0600) < 0)
    return hb_fail(err, errlen, errno, "control socket %s: fchmod: %m", c->path);
  if (bind(c->lfd, (struct sockaddr *) &sa, sizeof sa) < 0)
    return hb_fail(err, errlen, errno, "cannot bind control socket %s: %m",
                   c->path);
  if (chmod(c->path, 0600) < 0 || stat(c->path, &st) < 0)
    return hb_fail(err, errlen, errno, "control socket %s: %m", c->path);
  c->dev = st.st_dev;
  c->ino = st.st_ino;
  if (listen(c->lfd, 64) < 0)
    return hb_fail(err, errlen, errno, "cannot listen on control socket %s: %m",
                   c->path);
  return 0;
}

static void ctl_free(struct hb_ctl *c)
{
  struct stat st;

  if (c->lfd >= 0) {
    close(c->lfd);
    /* Remove the socket only if it is still the one we bound. */
    if (c->ino && stat(c->path, &st) == 0 && st.st_dev == c->dev &&
        st.st_ino == c->ino)
      unlink(c->path);
  }
  for (size_t k = 0; k < HB_CTL_CONNS_MAX; k++)
    conn_close(&c->conns[k]);
  if (c->stopfd >= 0)
    close(c->stopfd);
  if (c->lockfd >= 0)
    close(c->lockfd);
  free(c->path);
  free(c);
}

int hb_ctl_bind(const char *path, const struct hb_ctl_ops *ops, void *opaque,
                struct hb_ctl **out, char *err, size_t errlen)
{
  struct sockaddr_un sa;
  struct hb_ctl *c;
  int r;

  *out = NULL;
  if (!path || !*path)
    return hb_fail(err, errlen, EINVAL, "no control socket path");
  if (strlen(path) >= sizeof sa.sun_path)
    return hb_fail(err, errlen, ENAMETOOLONG, "control socket path %s is "
                   "longer than %zu bytes", path, sizeof sa.sun_path - 1);
  c = calloc(1, sizeof *c);
  if (!c)
    return hb_fail(err, errlen, ENOMEM, "out of memory");
  c->lfd = c->lockfd = c->stopfd = -1;
  for (size_t k = 0; k < HB_CTL_CONNS_MAX; k++)
    c->conns[k].fd = -1;
  c->ops = ops;
  c->opaque = opaque;
  atomic_init(&c->timeout_ms, HB_CTL_TIMEOUT_MS);
  c->path = strdup(path);
  if (!c->path) {
    r = hb_fail(err, errlen, ENOMEM, "out of memory");
    goto fail;
  }
  if ((r = make_parents(path, err, errlen)) < 0 ||
      (r = take_lock(c, err, errlen)) < 0 ||
      (r = clear_stale(path, err, errlen)) < 0 ||
      (r = bind_socket(c, err, errlen)) < 0)
    goto fail;
  *out = c;
  return 0;
fail:
  ctl_free(c);
  return r;
}

int hb_ctl_run(struct hb_ctl *c, char *err, size_t errlen)
{
  sigset_t all, old;
  int r;

  if (c->running)
    return hb_fail(err, errlen, EALREADY, "control socket %s: already "
                   "served", c->path);
  if (c->stopfd < 0) {
    c->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->stopfd < 0)
      return hb_fail(err, errlen, errno, "eventfd: %m");
  }
  /* Signals are for nbdkit's main thread, not this one. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  r = pthread_create(&c->thread, NULL, ctl_thread, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r != 0)
    return hb_fail(err, errlen, r, "cannot start the control thread: %s",
                   strerror(r));
  c->running = true;
  hb_debug("control socket %s: serving", c->path);
  return 0;
}

int hb_ctl_start(const char *path, const struct hb_ctl_ops *ops, void *opaque,
                 struct hb_ctl **out, char *err, size_t errlen)
{
  int r = hb_ctl_bind(path, ops, opaque, out, err, errlen);

  if (r == 0 && (r = hb_ctl_run(*out, err, errlen)) < 0) {
    hb_ctl_stop(*out);
    *out = NULL;
  }
  return r;
}

void hb_ctl_stop(struct hb_ctl *c)
{
  uint64_t one = 1;

  if (!c)
    return;
  if (c->running) {
    if (write(c->stopfd, &one, sizeof one) < 0)
      hb_error("control socket %s: cannot wake the thread: %m", c->path);
    pthread_join(c->thread, NULL);
  }
  ctl_free(c);
}

void hb_ctl_set_timeout(struct hb_ctl *c, unsigned ms)
{
  atomic_store(&c->timeout_ms, ms);
}
