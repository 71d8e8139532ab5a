/* The control socket: the server side that hactl talks to.
 *
 * Each node's nbdkit process serves one Unix stream socket per resource
 * (`control` in the configuration, default /run/hablock/NAME.ctl). One
 * thread accepts connections and serves them: every connection carries one
 * request line and gets one response line, then the server closes it.
 *
 * Protocol (one JSON object per line, UTF-8, '\n' ends a line; a '\r'
 * before it is ignored, and so is anything after it):
 *
 *   {"cmd":"status"}
 *   {"cmd":"promote","force":false}     "force" is optional (false)
 *   {"cmd":"demote","force":true}
 *   {"cmd":"connect"}
 *   {"cmd":"disconnect"}
 *
 *   {"ok":true, ...}                    status adds its members here; the
 *                                       other commands may add "message"
 *   {"ok":false,"code":N,"error":"one line"}
 *
 * N > 0 is a refusal: the command was understood and the node said no for
 * a documented reason (enum hb_ctl_refusal; hactl exits 3). N < 0 is a
 * failure, a negative errno (hactl exits 1, or 5 for -ETIMEDOUT): -EINVAL for a malformed
 * request (not JSON, no "cmd", an unknown command or key, a value of the
 * wrong type, an empty line), -EMSGSIZE for a request longer than
 * HB_CTL_REQUEST_MAX bytes or a status bigger than HB_CTL_RESPONSE_MAX,
 * -ETIMEDOUT when no complete request came within the timeout, -EOPNOTSUPP for a
 * command that this server's ops table leaves NULL, -EPROTO for a status
 * callback that broke its contract, or whatever the command itself
 * returned. The error string names the problem.
 *
 * Robustness: the thread multiplexes up to HB_CTL_CONNS_MAX connections
 * with poll(), so a client that connects and says nothing, or reads its
 * response slowly, does not hold up the others; each connection has a
 * deadline (HB_CTL_TIMEOUT_MS to send its request, as long again to take
 * its response) after which it is closed. Beyond HB_CTL_CONNS_MAX, new
 * connections wait in the listen backlog until a slot frees: a burst of
 * clients (after a long promotion, say) is served in turn, not refused.
 * Commands themselves run one at a
 * time on this thread, in the order their requests completed; a request
 * that was complete when a long command ended is served, not timed out.
 *
 * Start-up (hb_ctl_start):
 *  - missing parent directories are created with mode 0700;
 *  - PATH.lock is created and locked (flock) for as long as the server
 *    runs, so that two processes starting at once cannot both take the
 *    socket; a held lock means another process serves PATH: refused;
 *  - an existing PATH is removed only if it is a socket that nobody
 *    answers on (a stale one left by a crash); a socket that answers is
 *    refused, and so is anything that is not a socket;
 *  - the socket is created with mode 0600 (no window with a wider mode).
 * hb_ctl_stop removes the socket (if it is still ours) and releases the
 * lock; the lock file stays, as lock files do.
 */
#ifndef HB_CTL_H
#define HB_CTL_H

#include <stdbool.h>
#include <stddef.h>

#include "json.h"

#define HB_CTL_DIR          "/run/hablock"  /* default: HB_CTL_DIR/NAME.ctl */
#define HB_CTL_REQUEST_MAX  4096     /* bytes of a request, '\n' excluded */
#define HB_CTL_RESPONSE_MAX 65536    /* bytes of a response, '\n' included */
#define HB_CTL_TIMEOUT_MS   5000     /* per connection, see above */
#define HB_CTL_CONNS_MAX    8        /* connections served at once */
#define HB_CTL_MSG_MAX      256      /* the msg buffer given to a command */

/* Refusal codes: stable numbers, part of the protocol (hactl --json shows
 * them; the OCF agent may test them). A command may return any positive
 * code; these are the documented ones. */
enum hb_ctl_refusal {
  HB_CTL_REFUSED      = 1,  /* refused for the reason in the message */
  HB_CTL_PEER_PRIMARY = 2,  /* promote: the connected peer is Primary */
  HB_CTL_NOT_UPTODATE = 3,  /* promote: this node's data is not UpToDate */
  HB_CTL_IN_USE       = 4,  /* demote: NBD clients are connected */
  HB_CTL_SPLIT_BRAIN  = 5,  /* split brain: reserved for its resolution commands */
};

/* What the resource provides. Every function runs on the control thread,
 * one at a time, and should return within a few seconds (a client waits
 * for it). A NULL entry makes its command fail with -EOPNOTSUPP.
 *
 * status: add members to the response object with the hb_json_add_*()
 *   calls. The object is already open and already holds "ok":true: do not
 *   add "ok", "code" or "error", and leave every nested object closed.
 *   Members (see hactl(1)): resource, node, role, disk, connection,
 *   peer_role, out_of_sync_bytes, io_backend, loop_backend, and an object tls {enabled,
 *   version, cipher, peer}; more may be added freely. Return 0 or -errno.
 *
 * promote, demote, connect, disconnect: return 0 when done (or nothing
 *   was to do), a positive refusal code, or -errno; MSG (LEN bytes, a
 *   NUL-terminated empty string on entry) takes one line: the reason of a
 *   refusal or failure, or a note on success ("already Primary"), sent as
 *   "error" or "message". Control characters in it are sent as spaces.
 *   FORCE is the operator's --force: promote despite a peer or data that
 *   is not UpToDate, demote despite connected clients. */
struct hb_ctl_ops {
  int (*status)(void *opaque, struct hb_json_out *out);
  int (*promote)(void *opaque, bool force, char *msg, size_t len);
  int (*demote)(void *opaque, bool force, char *msg, size_t len);
  int (*connect)(void *opaque, char *msg, size_t len);
  int (*disconnect)(void *opaque, char *msg, size_t len);
};

struct hb_ctl;

/* Bind PATH and start the control thread. OPS and OPAQUE must outlive the
 * server. Returns 0, or -errno with one line in ERR naming the problem:
 * -ENAMETOOLONG (longer than a Unix socket path may be), -EADDRINUSE
 * (another process serves PATH), -EEXIST (PATH is not a socket), or the
 * error of the failing call, naming the path. */
int hb_ctl_start(const char *path, const struct hb_ctl_ops *ops, void *opaque,
                 struct hb_ctl **out, char *err, size_t errlen);
/* hb_ctl_start in two steps, for a server that forks in between (nbdkit
 * binds in .get_ready, where errors reach the user's terminal, and starts
 * threads in .after_fork): hb_ctl_bind does everything but the thread
 * (clients that connect meanwhile wait in the backlog); hb_ctl_run starts
 * it (-EALREADY if it runs). The socket and the lock are inherited by a
 * forked child. hb_ctl_stop releases a bound server too. */
int hb_ctl_bind(const char *path, const struct hb_ctl_ops *ops, void *opaque,
                struct hb_ctl **out, char *err, size_t errlen);
int hb_ctl_run(struct hb_ctl *c, char *err, size_t errlen);
/* Stop the thread (waiting for a running command), close every connection,
 * remove the socket. NULL is allowed. */
void hb_ctl_stop(struct hb_ctl *c);
/* The per-connection deadline, in milliseconds (tests shorten it). Applies
 * to connections accepted afterwards. */
void hb_ctl_set_timeout(struct hb_ctl *c, unsigned ms);

#endif
