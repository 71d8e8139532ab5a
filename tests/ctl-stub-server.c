/* A control socket served with stub operations, for hactl's tests
 * (tests/e2e/t0100-hactl.sh). Not installed.
 *
 *   ctl-stub-server [OPTION...] SOCKET
 *
 * It keeps a pretend state (role, peer role, disk, connection, clients)
 * that the commands change the way a resource would, with its refusals:
 * promote is refused while the connected peer is Primary or the disk is
 * not UpToDate, demote while clients are connected, both unless forced.
 * Runs until SIGTERM or SIGINT, then removes its socket and exits 0.
 *
 *   --resource NAME  --node NAME  --peer NAME   names (r0, alpha, beta)
 *   --role R  --peer-role R  --disk D  --connection C   the initial state
 *   --clients N       NBD clients connected (demote is refused)
 *   --tls-off         status says TLS is off
 *   --fail-connect    connect fails with -ENETUNREACH
 *   --delay-ms N      every command takes N ms (for hactl --timeout)
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "hablock.h"

struct stub {
  const char *resource, *node, *peer;
  char role[32], peer_role[32], disk[32], connection[32];
  int clients;
  bool tls_off, fail_connect;
  long delay_ms;
};

static void delay(const struct stub *s)
{
  struct timespec ts = { s->delay_ms / 1000, (s->delay_ms % 1000) * 1000000 };

  if (s->delay_ms > 0)
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
      ;
}

static void set(char *field, const char *value)
{
  snprintf(field, 32, "%s", value);
}

static int stub_status(void *opaque, struct hb_json_out *o)
{
  struct stub *s = opaque;

  delay(s);
  hb_json_add_str(o, "resource", s->resource);
  hb_json_add_str(o, "node", s->node);
  hb_json_add_str(o, "role", s->role);
  hb_json_add_str(o, "disk", s->disk);
  hb_json_add_str(o, "connection", s->connection);
  hb_json_add_str(o, "peer_role", s->peer_role);
  hb_json_add_int(o, "out_of_sync_bytes",
                  strcmp(s->connection, "StandAlone") == 0 ? 3 << 20 : 0);
  hb_json_add_str(o, "io_backend", "uring");
  hb_json_begin_obj(o, "tls");
  hb_json_add_bool(o, "enabled", !s->tls_off);
  if (!s->tls_off) {
    hb_json_add_str(o, "version", "TLSv1.3");
    hb_json_add_str(o, "cipher", "TLS_AES_256_GCM_SHA384");
    hb_json_add_str(o, "peer", s->peer);
  }
  hb_json_end_obj(o);
  hb_json_add_int(o, "clients", s->clients);
  return 0;
}

static int stub_promote(void *opaque, bool force, char *msg, size_t len)
{
  struct stub *s = opaque;

  delay(s);
  if (strcmp(s->role, "Primary") == 0) {
    snprintf(msg, len, "already Primary");
    return 0;
  }
  if (!force && strcmp(s->connection, "Connected") == 0 &&
      strcmp(s->peer_role, "Primary") == 0) {
    snprintf(msg, len, "peer %s is Primary", s->peer);
    return HB_CTL_PEER_PRIMARY;
  }
  if (!force && strcmp(s->disk, "UpToDate") != 0) {
    snprintf(msg, len, "disk is %s, not UpToDate", s->disk);
    return HB_CTL_NOT_UPTODATE;
  }
  set(s->role, "Primary");
  return 0;
}

static int stub_demote(void *opaque, bool force, char *msg, size_t len)
{
  struct stub *s = opaque;

  delay(s);
  if (strcmp(s->role, "Secondary") == 0) {
    snprintf(msg, len, "already Secondary");
    return 0;
  }
  if (!force && s->clients > 0) {
    snprintf(msg, len, "%d NBD client%s connected", s->clients,
             s->clients == 1 ? "" : "s");
    return HB_CTL_IN_USE;
  }
  s->clients = 0;
  set(s->role, "Secondary");
  return 0;
}

static int stub_connect(void *opaque, char *msg, size_t len)
{
  struct stub *s = opaque;

  delay(s);
  if (s->fail_connect) {
    snprintf(msg, len, "cannot reach peer %s at 192.0.2.1:7789", s->peer);
    return -ENETUNREACH;
  }
  set(s->connection, "Connected");
  set(s->peer_role, "Secondary");
  return 0;
}

static int stub_disconnect(void *opaque, char *msg, size_t len)
{
  struct stub *s = opaque;

  delay(s);
  set(s->connection, "StandAlone");
  set(s->peer_role, "Unknown");
  return 0;
}

static const struct hb_ctl_ops stub_ops = {
  .status = stub_status,
  .promote = stub_promote,
  .demote = stub_demote,
  .connect = stub_connect,
  .disconnect = stub_disconnect,
};

static void log_stderr(enum hb_log_level level, const char *msg)
{
  fprintf(stderr, "ctl-stub-server: %s\n", msg);
}

static void usage(void)
{
  fprintf(stderr, "usage: ctl-stub-server [--resource N] [--node N] [--peer N] "
          "[--role R] [--peer-role R] [--disk D] [--connection C] "
          "[--clients N] [--tls-off] [--fail-connect] [--delay-ms N] SOCKET\n");
  exit(2);
}

int main(int argc, char **argv)
{
  struct stub s = {
    .resource = "r0", .node = "alpha", .peer = "beta",
    .role = "Secondary", .peer_role = "Secondary", .disk = "UpToDate",
    .connection = "Connected",
  };
  const char *path = NULL;
  char err[HB_ERRLEN];
  struct hb_ctl *ctl;
  sigset_t sigs;
  int sig;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool val = true;

    if (strcmp(a, "--resource") == 0 && v)       s.resource = v;
    else if (strcmp(a, "--node") == 0 && v)      s.node = v;
    else if (strcmp(a, "--peer") == 0 && v)      s.peer = v;
    else if (strcmp(a, "--role") == 0 && v)      set(s.role, v);
    else if (strcmp(a, "--peer-role") == 0 && v) set(s.peer_role, v);
    else if (strcmp(a, "--disk") == 0 && v)      set(s.disk, v);
    else if (strcmp(a, "--connection") == 0 && v) set(s.connection, v);
    else if (strcmp(a, "--clients") == 0 && v)   s.clients = atoi(v);
    else if (strcmp(a, "--delay-ms") == 0 && v)  s.delay_ms = atol(v);
    else {
      val = false;
      if (strcmp(a, "--tls-off") == 0)
        s.tls_off = true;
      else if (strcmp(a, "--fail-connect") == 0)
        s.fail_connect = true;
      else if (a[0] != '-' && !path)
        path = a;
      else
        usage();
    }
    if (val)
      i++;
  }
  if (!path)
    usage();

  hb_set_log(log_stderr);
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  if (hb_ctl_start(path, &stub_ops, &s, &ctl, err, sizeof err) < 0) {
    fprintf(stderr, "ctl-stub-server: %s\n", err);
    return 1;
  }
  sigwait(&sigs, &sig);
  hb_ctl_stop(ctl);
  return 0;
}
