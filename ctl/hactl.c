/* hactl: the command-line client of a hablock resource's control socket.
 *
 *   hactl [--socket PATH | --resource NAME] [--timeout S] COMMAND [ARGS]
 *
 * The command table below is also the help text (`hactl help`). Each
 * command sends one request line and reads one response line (protocol in
 * replicator/ctl.h). The exit status is an API (hactl.h, hactl(1)): 0 ok,
 * 1 error, 2 usage, 3 refused, 4 not running, 5 timeout. A failure prints
 * one line on stderr naming the problem.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "hb-build.h"
#include "ctl.h"
#include "json.h"
#include "hactl.h"

#define DEFAULT_TIMEOUT_S 10.0
#define MAX_TIMEOUT_S     86400.0

struct globals {
  const char *socket;       /* --socket, or built from --resource */
  char sockbuf[sizeof ((struct sockaddr_un *) 0)->sun_path + 64];
  double timeout;           /* seconds */
  int64_t deadline;         /* CLOCK_MONOTONIC ms, set before connecting */
};

struct command;
typedef int (*command_fn)(const struct command *cmd, struct globals *g,
                          bool flag, const char *arg);

/* One row per command: this table is the dispatcher and the help text. */
struct command {
  const char *name;
  command_fn handler;
  const char *flag;         /* the one option it takes, or NULL */
  const char *args;         /* its arguments, for the usage line */
  const char *summary;      /* one line for `hactl help` */
  const char *help;         /* more for `hactl help NAME` */
};

static int cmd_status(const struct command *, struct globals *, bool, const char *);
static int cmd_promote(const struct command *, struct globals *, bool, const char *);
static int cmd_demote(const struct command *, struct globals *, bool, const char *);
static int cmd_simple(const struct command *, struct globals *, bool, const char *);
static int cmd_help(const struct command *, struct globals *, bool, const char *);

static const struct command commands[] = {
  { "status", cmd_status, "--json", "[--json]",
    "Show role, disk, connection, peer, out-of-sync bytes and TLS.",
    "Prints one aligned \"name: value\" line per item. With --json, prints\n"
    "the server's JSON object as it came, on one line." },
  { "promote", cmd_promote, "--force", "[--force]",
    "Make this node Primary.",
    "Refused (exit 3) while the connected peer is Primary or this node's\n"
    "data is not UpToDate. --force promotes anyway: the operator takes the\n"
    "risk of diverging data." },
  { "demote", cmd_demote, "--force", "[--force]",
    "Make this node Secondary.",
    "Refused (exit 3) while NBD clients are connected. --force demotes\n"
    "anyway: every request of those clients fails (EROFS) from then on." },
  { "connect", cmd_simple, NULL, "",
    "Connect to the peer (leave StandAlone).",
    "Starts connecting; `hactl status` shows the connection state. Refused\n"
    "(exit 3) after a split brain until the operator resolves it." },
  { "disconnect", cmd_simple, NULL, "",
    "Disconnect from the peer and stay StandAlone.",
    "Writes go on locally and are marked out of sync for a later resync." },
  { "help", cmd_help, NULL, "[COMMAND]",
    "Show this help, or one command's.",
    NULL },
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

/* ---- messages ----------------------------------------------------------- */

static void errmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr, "hactl: ...". */
static void errmsg(const char *fmt, ...)
{
  int saved = errno;   /* for %m */
  va_list ap;

  fputs("hactl: ", stderr);
  errno = saved;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
  va_list ap;

  fputs("hactl: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputs(" (see 'hactl help')\n", stderr);
  return HACTL_EXIT_USAGE;
}

/* A string from the server, made safe for a terminal: control characters
 * (C0, DEL, C1) become '?'. Valid UTF-8 is guaranteed by the parser. */
static void print_safe(FILE *f, const char *s)
{
  const unsigned char *p = (const unsigned char *) s;

  for (; *p; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      fputc('?', f);
    } else if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
      fputc('?', f);
      p++;
    } else {
      fputc(*p, f);
    }
  }
}

/* ---- talking to the server ---------------------------------------------- */

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ms_left(const struct globals *g)
{
  int64_t left = g->deadline - now_ms();
  return left < 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int) left;
}

static int timed_out(const struct globals *g, const char *what)
{
  errmsg("timed out after %gs %s %s", g->timeout, what, g->socket);
  return HACTL_EXIT_TIMEOUT;
}

static int do_connect(struct globals *g, int *fdp)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd, e;

  memcpy(sa.sun_path, g->socket, strlen(g->socket) + 1);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    errmsg("socket: %m");
    return HACTL_EXIT_ERROR;
  }
  /* A Unix socket connects at once or not at all; EAGAIN means the
   * server's backlog is full: try again until the deadline. */
  while (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
    e = errno;
    if (e == EINTR)
      continue;
    if (e == EAGAIN) {
      if (ms_left(g) == 0) {
        close(fd);
        return timed_out(g, "waiting to connect to");
      }
      poll(NULL, 0, 10);
      continue;
    }
    close(fd);
    if (e == ENOENT) {
      errmsg("no control socket %s: the resource is not running", g->socket);
      return HACTL_EXIT_NOT_RUNNING;
    }
    if (e == ECONNREFUSED) {
      errmsg("nothing serves the control socket %s: the resource is not "
             "running", g->socket);
      return HACTL_EXIT_NOT_RUNNING;
    }
    errmsg("cannot connect to %s: %s", g->socket, strerror(e));
    return HACTL_EXIT_ERROR;
  }
  *fdp = fd;
  return HACTL_EXIT_OK;
}

static int send_all(struct globals *g, int fd, const char *buf, size_t len)
{
  while (len) {
    struct pollfd p = { .fd = fd, .events = POLLOUT };
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        errmsg("cannot send to %s: %m", g->socket);
        return HACTL_EXIT_ERROR;
      }
      if (poll(&p, 1, ms_left(g)) == 0)
        return timed_out(g, "sending to");
      continue;
    }
    buf += n;
    len -= (size_t) n;
  }
  return HACTL_EXIT_OK;
}

/* Read one line (without its '\n') into BUF, NUL-terminated. */
static int recv_line(struct globals *g, int fd, char *buf, size_t cap,
                     size_t *lenp)
{
  size_t len = 0;

  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t n;
    char *nl;

    if (len == cap - 1) {
      errmsg("response from %s longer than %zu bytes", g->socket, cap - 1);
      return HACTL_EXIT_ERROR;
    }
    n = recv(fd, buf + len, cap - 1 - len, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        errmsg("cannot read from %s: %m", g->socket);
        return HACTL_EXIT_ERROR;
      }
      if (poll(&p, 1, ms_left(g)) == 0)
        return timed_out(g, "waiting for a response from");
      continue;
    }
    if (n == 0) {
      errmsg("%s closed the connection %s", g->socket,
             len ? "in the middle of a response" : "without a response");
      return HACTL_EXIT_ERROR;
    }
    nl = memchr(buf + len, '\n', (size_t) n);
    len += (size_t) n;
    if (nl) {
      *nl = '\0';
      *lenp = (size_t) (nl - buf);
      return HACTL_EXIT_OK;
    }
  }
}

/* Send REQ, read the response into RESP and parse it into DOC. Returns an
 * exit status: on anything but 0 the problem is reported and DOC is empty. */
static int exchange(struct globals *g, const char *req, char *resp,
                    size_t cap, struct hb_json_doc *doc)
{
  char perr[256], line[HB_CTL_REQUEST_MAX + 2];
  size_t len;
  int fd = -1, rc;

  doc->fields = NULL;
  doc->nfields = 0;
  snprintf(line, sizeof line, "%s\n", req);
  g->deadline = now_ms() + (int64_t) (g->timeout * 1000);
  rc = do_connect(g, &fd);
  if (rc == 0)
    rc = send_all(g, fd, line, strlen(line));
  if (rc == 0)
    rc = recv_line(g, fd, resp, cap, &len);
  if (fd >= 0)
    close(fd);
  if (rc != 0)
    return rc;
  if (hb_json_parse(resp, len, doc, perr, sizeof perr) < 0) {
    errmsg("malformed response from %s: %s", g->socket, perr);
    return HACTL_EXIT_ERROR;
  }
  return HACTL_EXIT_OK;
}

/* The exit status a parsed response stands for; reports a failure. */
static int response_status(const struct globals *g, const struct hb_json_doc *d)
{
  bool found, ok = hb_json_get_bool(d, "ok", &found);
  const char *error = hb_json_get_str(d, "error");
  int64_t code = 0;

  if (!found) {
    errmsg("malformed response from %s: no boolean \"ok\"", g->socket);
    return HACTL_EXIT_ERROR;
  }
  if (ok)
    return HACTL_EXIT_OK;
  hb_json_get_int(d, "code", &code);
  fputs("hactl: ", stderr);
  if (error && *error)
    print_safe(stderr, error);
  else
    fprintf(stderr, "the server gave no reason (code %" PRId64 ")", code);
  fputc('\n', stderr);
  if (code > 0)
    return HACTL_EXIT_REFUSED;
  if (code == -ETIMEDOUT)
    return HACTL_EXIT_TIMEOUT;
  return HACTL_EXIT_ERROR;
}

/* Build {"cmd":NAME[,"force":FORCE]}. */
static void build_request(char *buf, size_t cap, const char *name,
                          bool with_force, bool force)
{
  struct hb_json_out o;

  hb_json_out_init(&o, buf, cap);
  hb_json_add_str(&o, "cmd", name);
  if (with_force)
    hb_json_add_bool(&o, "force", force);
  hb_json_out_end(&o);   /* a few bytes in a 4 KiB buffer: cannot fail */
}

/* Run a command that answers with ok or an error, and maybe a message. */
static int simple_request(struct globals *g, const char *name, bool with_force,
                          bool force)
{
  static char resp[HB_CTL_RESPONSE_MAX + 1];
  char req[HB_CTL_REQUEST_MAX];
  struct hb_json_doc d;
  const char *msg;
  int rc;

  build_request(req, sizeof req, name, with_force, force);
  rc = exchange(g, req, resp, sizeof resp, &d);
  if (rc == 0)
    rc = response_status(g, &d);
  if (rc == 0 && (msg = hb_json_get_str(&d, "message")) && *msg) {
    print_safe(stdout, msg);
    putchar('\n');
  }
  hb_json_free(&d);
  return rc;
}

/* ---- status ------------------------------------------------------------- */

struct row {
  char label[HB_JSON_PATH_MAX + 1];
  char value[512];
};

struct rows {
  struct row r[HB_JSON_FIELDS_MAX + 1];
  size_t n;
};

static struct row *add_row(struct rows *rs, const char *label)
{
  struct row *r = &rs->r[rs->n++];

  snprintf(r->label, sizeof r->label, "%s", label);
  r->value[0] = '\0';
  return r;
}

static void format_bytes(char *buf, size_t len, int64_t v)
{
  static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
  double x = (double) v;
  size_t u = 0;

  if (v < 1024) {
    snprintf(buf, len, "%" PRId64 " B", v);
    return;
  }
  x /= 1024;
  while (x >= 1024 && u + 1 < sizeof unit / sizeof unit[0]) {
    x /= 1024;
    u++;
  }
  snprintf(buf, len, "%.1f %s (%" PRId64 " bytes)", x, unit[u], v);
}

/* A scalar as text; false for objects and arrays (their members follow). */
static bool format_value(char *buf, size_t len, const struct hb_json_field *f)
{
  switch (f->type) {
  case HB_JSON_STRING: snprintf(buf, len, "%s", f->s); return true;
  case HB_JSON_INT:    snprintf(buf, len, "%" PRId64, f->i); return true;
  case HB_JSON_NUMBER: snprintf(buf, len, "%g", f->d); return true;
  case HB_JSON_BOOL:   snprintf(buf, len, "%s", f->b ? "yes" : "no"); return true;
  case HB_JSON_NULL:   snprintf(buf, len, "-"); return true;
  case HB_JSON_OBJECT:
  case HB_JSON_ARRAY:  return false;
  }
  return false;
}

/* The known members, in display order, with their labels. */
static const struct {
  const char *path, *label;
} known[] = {
  { "resource", "resource" },
  { "node", "node" },
  { "role", "role" },
  { "disk", "disk" },
  { "connection", "connection" },
  { "peer", "peer" },
  { "peer_role", "peer role" },
  { "peer_disk", "peer disk" },
  { "out_of_sync_bytes", "out of sync" },
  { "clients", "clients" },
  { "io_backend", "io backend" },
  { "loop_backend", "loop backend" },
  { "tls", "tls" },             /* one line, format_tls() */
  { "last_error", "last error" },
};

static bool is_known(const char *path)
{
  static const char *const others[] = {
    "ok", "tls.enabled", "tls.version", "tls.cipher", "tls.peer",
  };
  for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
    if (strcmp(path, known[k].path) == 0)
      return true;
  for (size_t k = 0; k < sizeof others / sizeof others[0]; k++)
    if (strcmp(path, others[k]) == 0)
      return true;
  return false;
}

/* "TLSv1.3, TLS_AES_256_GCM_SHA384, peer beta", or "off". */
static void format_tls(char *buf, size_t len, const struct hb_json_doc *d)
{
  const char *parts[3] = {
    hb_json_get_str(d, "tls.version"), hb_json_get_str(d, "tls.cipher"),
    hb_json_get_str(d, "tls.peer"),
  };
  bool found, on = hb_json_get_bool(d, "tls.enabled", &found);
  size_t n = 0;

  buf[0] = '\0';
  if (found && !on) {
    snprintf(buf, len, "off");
    return;
  }
  for (size_t k = 0; k < 3; k++) {
    if (!parts[k] || !*parts[k] || n >= len)
      continue;
    n += (size_t) snprintf(buf + n, len - n, "%s%s%s", n ? ", " : "",
                           k == 2 ? "peer " : "", parts[k]);
  }
  if (!buf[0])
    snprintf(buf, len, "%s", found ? "on" : "-");
}

static void print_status(const struct hb_json_doc *d)
{
  static struct rows rs;
  const struct hb_json_field *f;
  size_t width = 0;
  int64_t oos;

  rs.n = 0;
  /* A null or empty member has nothing to say: no line. */
  for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
    if (!(f = hb_json_get(d, known[k].path)) || f->type == HB_JSON_NULL ||
        (f->type == HB_JSON_STRING && !*f->s))
      continue;
    struct row *r = add_row(&rs, known[k].label);
    if (strcmp(known[k].path, "tls") == 0)
      format_tls(r->value, sizeof r->value, d);
    else if (strcmp(known[k].path, "out_of_sync_bytes") == 0 &&
             hb_json_get_int(d, known[k].path, &oos) && oos >= 0)
      format_bytes(r->value, sizeof r->value, oos);
    else if (!format_value(r->value, sizeof r->value, f))
      snprintf(r->value, sizeof r->value, "(%s)", hb_json_type_name(f->type));
  }
  /* Members this hactl does not know yet still show, by their path. */
  for (size_t k = 0; k < d->nfields; k++) {
    f = &d->fields[k];
    if (is_known(f->path) || f->type == HB_JSON_NULL ||
        (f->type == HB_JSON_STRING && !*f->s))
      continue;
    char value[sizeof rs.r[0].value];
    if (format_value(value, sizeof value, f))
      snprintf(add_row(&rs, f->path)->value, sizeof value, "%s", value);
  }
  for (size_t k = 0; k < rs.n; k++)
    if (strlen(rs.r[k].label) > width)
      width = strlen(rs.r[k].label);
  for (size_t k = 0; k < rs.n; k++) {
    printf("%s:%*s", rs.r[k].label,
           (int) (width - strlen(rs.r[k].label) + 2), "");
    print_safe(stdout, rs.r[k].value);
    putchar('\n');
  }
}

static int cmd_status(const struct command *cmd, struct globals *g, bool json,
                      const char *arg)
{
  static char resp[HB_CTL_RESPONSE_MAX + 1];
  char req[HB_CTL_REQUEST_MAX];
  struct hb_json_doc d;
  int rc;

  build_request(req, sizeof req, cmd->name, false, false);
  rc = exchange(g, req, resp, sizeof resp, &d);
  if (rc != 0)
    return rc;
  if (json)
    puts(resp);   /* as it came: the parser does not modify it */
  rc = response_status(g, &d);
  if (rc == 0 && !json)
    print_status(&d);
  hb_json_free(&d);
  return rc;
}

/* ---- the other commands ------------------------------------------------- */

static int cmd_promote(const struct command *cmd, struct globals *g,
                       bool force, const char *arg)
{
  return simple_request(g, cmd->name, true, force);
}

static int cmd_demote(const struct command *cmd, struct globals *g,
                      bool force, const char *arg)
{
  return simple_request(g, cmd->name, true, force);
}

static int cmd_simple(const struct command *cmd, struct globals *g, bool flag,
                      const char *arg)
{
  return simple_request(g, cmd->name, false, false);
}

static const struct command *find_command(const char *name)
{
  for (size_t k = 0; k < NCOMMANDS; k++)
    if (strcmp(commands[k].name, name) == 0)
      return &commands[k];
  return NULL;
}

static void print_usage_line(FILE *f)
{
  fputs("Usage: hactl [--socket PATH | --resource NAME] [--timeout S] "
        "COMMAND [ARGS]\n", f);
}

static int cmd_help(const struct command *cmd, struct globals *g, bool flag,
                    const char *topic)
{
  const struct command *c;
  char synopsis[64];

  if (topic) {
    if (!(c = find_command(topic)))
      return usage_error("no command '%s'", topic);
    printf("Usage: hactl [OPTIONS] %s%s%s\n\n%s\n", c->name,
           *c->args ? " " : "", c->args, c->summary);
    if (c->help)
      printf("%s\n", c->help);
    return HACTL_EXIT_OK;
  }
  print_usage_line(stdout);
  puts("\nTalk to a hablock resource through its control socket.\n\n"
       "Commands:");
  for (size_t k = 0; k < NCOMMANDS; k++) {
    c = &commands[k];
    snprintf(synopsis, sizeof synopsis, "%s%s%s", c->name, *c->args ? " " : "",
             c->args);
    printf("  %-20s %s\n", synopsis, c->summary);
  }
  printf("\nOptions:\n"
         "  -s, --socket PATH    the control socket\n"
         "  -r, --resource NAME  the control socket %s/NAME.ctl\n"
         "  -t, --timeout S      give up after S seconds (default %g)\n"
         "  -h, --help           this help\n"
         "  -V, --version        hactl's version\n"
         "\nExit status: %d ok, %d error, %d usage, %d refused, %d not running,"
         " %d timeout.\n",
         HB_CTL_DIR, DEFAULT_TIMEOUT_S, HACTL_EXIT_OK, HACTL_EXIT_ERROR,
         HACTL_EXIT_USAGE, HACTL_EXIT_REFUSED, HACTL_EXIT_NOT_RUNNING,
         HACTL_EXIT_TIMEOUT);
  return HACTL_EXIT_OK;
}

/* ---- the command line --------------------------------------------------- */

/* If ARGV[*I] is option LONG_ (or SHORT_) taking a value, store the value
 * in *VAL and return 1 (advancing *I past it); -1 if its value is missing;
 * 0 if it is another argument. */
static int take_option(int argc, char **argv, int *i, const char *short_,
                       const char *long_, const char **val)
{
  const char *a = argv[*i];
  size_t n = strlen(long_);

  if (strncmp(a, long_, n) == 0 && a[n] == '=') {
    *val = a + n + 1;
    return 1;
  }
  if (strcmp(a, long_) != 0 && strcmp(a, short_) != 0)
    return 0;
  if (*i + 1 >= argc)
    return -1;
  *val = argv[++*i];
  return 1;
}

static int set_resource(struct globals *g, const char *name)
{
  if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 ||
      strcmp(name, "..") == 0)
    return usage_error("--resource: '%s' is not a resource name", name);
  if ((size_t) snprintf(g->sockbuf, sizeof g->sockbuf, "%s/%s.ctl", HB_CTL_DIR,
                        name) >= sizeof ((struct sockaddr_un *) 0)->sun_path)
    return usage_error("--resource: name '%.40s...' too long", name);
  g->socket = g->sockbuf;
  return 0;
}

static int set_timeout(struct globals *g, const char *s)
{
  char *end;
  double t;

  errno = 0;
  t = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(t) || t <= 0 || t > MAX_TIMEOUT_S)
    return usage_error("--timeout: '%s' is not a number of seconds in "
                       "(0, %g]", s, MAX_TIMEOUT_S);
  g->timeout = t;
  return 0;
}

static int finish_output(int rc)
{
  if (fflush(stdout) != 0 || ferror(stdout)) {
    errmsg("cannot write the output: %m");
    return rc ? rc : HACTL_EXIT_ERROR;
  }
  return rc;
}

int main(int argc, char **argv)
{
  struct globals g = { .timeout = DEFAULT_TIMEOUT_S };
  const struct command *cmd = NULL;
  const char *val, *socket_opt = NULL, *resource = NULL, *arg = NULL;
  bool flag = false;
  int r;

  /* A reader that went away (`hactl status | head -0`) is a failure to
   * write the output, exit 1 with its line (finish_output), not death by
   * SIGPIPE, whose status is outside the API. */
  signal(SIGPIPE, SIG_IGN);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];

    if ((r = take_option(argc, argv, &i, "-s", "--socket", &val)) != 0) {
      if (r < 0)
        return usage_error("%s needs a path", a);
      socket_opt = val;
    } else if ((r = take_option(argc, argv, &i, "-r", "--resource", &val)) != 0) {
      if (r < 0)
        return usage_error("%s needs a name", a);
      resource = val;
    } else if ((r = take_option(argc, argv, &i, "-t", "--timeout", &val)) != 0) {
      if (r < 0)
        return usage_error("%s needs a number of seconds", a);
      if (set_timeout(&g, val))
        return HACTL_EXIT_USAGE;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      return finish_output(cmd_help(NULL, &g, false, cmd ? cmd->name : NULL));
    } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
      printf("hactl %s\n", HABLOCK_VERSION);
      return finish_output(HACTL_EXIT_OK);
    } else if (!cmd) {
      if (a[0] == '-')
        return usage_error("unknown option '%s'", a);
      if (!(cmd = find_command(a)))
        return usage_error("unknown command '%s'", a);
    } else if (cmd->flag && strcmp(a, cmd->flag) == 0) {
      flag = true;
    } else if (cmd->handler == cmd_help && !arg && a[0] != '-') {
      arg = a;
    } else {
      return usage_error("%s: unexpected argument '%s' (usage: hactl %s%s%s)",
                         cmd->name, a, cmd->name, *cmd->args ? " " : "",
                         cmd->args);
    }
  }
  if (!cmd)
    return usage_error("no command given");
  if (cmd->handler != cmd_help) {
    if (socket_opt && resource)
      return usage_error("give --socket or --resource, not both");
    if (resource && set_resource(&g, resource))
      return HACTL_EXIT_USAGE;
    if (socket_opt)
      g.socket = socket_opt;
    if (!g.socket)
      return usage_error("which resource? give --socket PATH or "
                         "--resource NAME");
    if (!*g.socket ||
        strlen(g.socket) >= sizeof ((struct sockaddr_un *) 0)->sun_path)
      return usage_error("--socket: '%s' is not a usable socket path",
                         g.socket);
  }
  return finish_output(cmd->handler(cmd, &g, flag, arg));
}
