/* Roles, disk and connection states, and the decisions on them: pure, no
 * I/O. The rules and why are at the top of role.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#include "bitmap.h"
#include "role.h"
#include "wire.h"

/* A role or disk state goes on the wire as its own value. */
_Static_assert(HB_ROLE_PRIMARY == (int) HB_WIRE_ROLE_PRIMARY, "role");
_Static_assert(HB_ROLE_SECONDARY == (int) HB_WIRE_ROLE_SECONDARY, "role");
_Static_assert(HB_DISK_UPTODATE == (int) HB_WIRE_DISK_UPTODATE, "disk");
_Static_assert(HB_DISK_INCONSISTENT == (int) HB_WIRE_DISK_INCONSISTENT,
               "disk");
_Static_assert(HB_DISK_OUTDATED == (int) HB_WIRE_DISK_OUTDATED, "disk");
_Static_assert(HB_DISK_DISKLESS == (int) HB_WIRE_DISK_DISKLESS, "disk");
_Static_assert(HB_DISK_FAILED == (int) HB_WIRE_DISK_FAILED, "disk");

/* ---- names ---------------------------------------------------------------- */

/* Indexed by value; [0] is the unknown name, which does not parse. */
static const char *const role_names[] = {
  [HB_ROLE_UNKNOWN] = "Unknown",
  [HB_ROLE_PRIMARY] = "Primary",
  [HB_ROLE_SECONDARY] = "Secondary",
};
static const char *const disk_names[] = {
  [HB_DISK_UNKNOWN] = "DUnknown",
  [HB_DISK_UPTODATE] = "UpToDate",
  [HB_DISK_INCONSISTENT] = "Inconsistent",
  [HB_DISK_OUTDATED] = "Outdated",
  [HB_DISK_DISKLESS] = "Diskless",
  [HB_DISK_FAILED] = "Failed",
};
static const char *const conn_names[] = {
  [0] = "?",
  [HB_CONN_STANDALONE] = "StandAlone",
  [HB_CONN_CONNECTING] = "Connecting",
  [HB_CONN_CONNECTED] = "Connected",
  [HB_CONN_SYNCSOURCE] = "SyncSource",
  [HB_CONN_SYNCTARGET] = "SyncTarget",
  [HB_CONN_SPLITBRAIN] = "SplitBrain",
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *name_of(const char *const *names, size_t n, unsigned v)
{
  return v < n ? names[v] : "?";
}

/* Index 1..n-1 whose name matches, or 0. */
static unsigned parse_in(const char *const *names, size_t n, const char *s)
{
  for (unsigned v = 1; s && v < n; v++)
    if (strcasecmp(s, names[v]) == 0)
      return v;
  return 0;
}

const char *hb_role_name(enum hb_role role)
{
  return name_of(role_names, COUNT(role_names), (unsigned) role);
}

const char *hb_disk_name(enum hb_disk disk)
{
  return name_of(disk_names, COUNT(disk_names), (unsigned) disk);
}

const char *hb_conn_name(enum hb_conn conn)
{
  return name_of(conn_names, COUNT(conn_names), (unsigned) conn);
}

int hb_role_parse(const char *name, enum hb_role *out)
{
  unsigned v = parse_in(role_names, COUNT(role_names), name);

  if (!v)
    return -EINVAL;
  *out = (enum hb_role) v;
  return 0;
}

int hb_disk_parse(const char *name, enum hb_disk *out)
{
  unsigned v = parse_in(disk_names, COUNT(disk_names), name);

  if (!v)
    return -EINVAL;
  *out = (enum hb_disk) v;
  return 0;
}

int hb_conn_parse(const char *name, enum hb_conn *out)
{
  unsigned v = parse_in(conn_names, COUNT(conn_names), name);

  if (!v)
    return -EINVAL;
  *out = (enum hb_conn) v;
  return 0;
}

bool hb_role_valid(unsigned role)
{
  return role >= 1 && role < COUNT(role_names);
}

bool hb_disk_valid(unsigned disk)
{
  return disk >= 1 && disk < COUNT(disk_names);
}

bool hb_conn_valid(unsigned conn)
{
  return conn >= 1 && conn < COUNT(conn_names);
}

bool hb_conn_is_connected(enum hb_conn conn)
{
  return conn == HB_CONN_CONNECTED || conn == HB_CONN_SYNCSOURCE ||
         conn == HB_CONN_SYNCTARGET;
}

/* ---- decisions ------------------------------------------------------------ */

/* Fill msg (may be NULL) with one line and return code. */
__attribute__((format(printf, 4, 5)))
static int answer(char *msg, size_t len, int code, const char *fmt, ...)
{
  va_list ap;

  if (msg && len) {
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
  }
  return code;
}

static int allowed(char *msg, size_t len)
{
  if (msg && len)
    msg[0] = '\0';
  return 0;
}

static bool has_no_disk(enum hb_disk disk)
{
  return disk == HB_DISK_DISKLESS || disk == HB_DISK_FAILED;
}

int hb_may_promote(const struct hb_node_state *s, bool force,
                   char *msg, size_t len)
{
  if (s->role == HB_ROLE_PRIMARY)
    return allowed(msg, len);
  if (s->peer_role == HB_ROLE_PRIMARY)
    return answer(msg, len, HB_REFUSED_PEER_PRIMARY,
                  "cannot promote: the peer is %s (two Primaries are never "
                  "allowed while connected); demote the peer first",
                  hb_role_name(s->peer_role));
  if (has_no_disk(s->disk))
    return answer(msg, len, HB_REFUSED_NO_DISK,
                  "cannot promote: the local disk is %s; there are no data "
                  "to serve", hb_disk_name(s->disk));
  if (s->conn == HB_CONN_SYNCTARGET)
    return answer(msg, len, HB_REFUSED_SYNC_TARGET,
                  "cannot promote: this node is SyncTarget; its data are "
                  "incomplete until the resync finishes");
  if (s->disk != HB_DISK_UPTODATE && s->peer_disk == HB_DISK_UPTODATE)
    return answer(msg, len, HB_REFUSED_PEER_UPTODATE,
                  "cannot promote: the local disk is %s and the peer's is "
                  "UpToDate; promote the peer instead",
                  hb_disk_name(s->disk));
  if (s->disk != HB_DISK_UPTODATE && !force)
    return answer(msg, len, HB_REFUSED_NOT_UPTODATE,
                  "cannot promote: the local disk is %s, not UpToDate; force "
                  "only if this node's data are the ones to keep",
                  hb_disk_name(s->disk));
  return allowed(msg, len);
}

int hb_may_demote(const struct hb_node_state *s, bool force,
                  char *msg, size_t len)
{
  if (s->role == HB_ROLE_SECONDARY)
    return allowed(msg, len);
  if (s->clients > 0 && !force) {
    bool one = s->clients == 1;

    return answer(msg, len, HB_REFUSED_CLIENTS,
                  "cannot demote: %u NBD client%s connected; disconnect "
                  "%s or force", s->clients, one ? " is" : "s are",
                  one ? "it" : "them");
  }
  return allowed(msg, len);
}

int hb_may_serve(const struct hb_node_state *s, char *msg, size_t len)
{
  if (s->role != HB_ROLE_PRIMARY)
    return answer(msg, len, HB_REFUSED_ROLE_SECONDARY,
                  "this node is %s; connect to the Primary",
                  hb_role_name(s->role));
  if (has_no_disk(s->disk))
    return answer(msg, len, HB_REFUSED_NO_DISK,
                  "this node is Primary but its disk is %s; there are no "
                  "data to serve", hb_disk_name(s->disk));
  return allowed(msg, len);
}

#define NO_RESYNC \
  "resync is not implemented yet (it comes with the metadata issue)"

int hb_on_handshake(const struct hb_node_state *local,
                    enum hb_role peer_role, enum hb_disk peer_disk,
                    bool peer_has_oos, char *msg, size_t len)
{
  bool ours_up, theirs_up;

  if (!hb_role_valid((unsigned) peer_role))
    return answer(msg, len, -EINVAL, "the peer sent an invalid role %u",
                  (unsigned) peer_role);
  if (!hb_disk_valid((unsigned) peer_disk))
    return answer(msg, len, -EINVAL, "the peer sent an invalid disk state %u",
                  (unsigned) peer_disk);
  if (local->role == HB_ROLE_PRIMARY && peer_role == HB_ROLE_PRIMARY)
    return answer(msg, len, HB_REFUSED_BOTH_PRIMARY,
                  "split brain: both nodes are Primary");
  if (local->oos_bytes > 0 && peer_has_oos)
    return answer(msg, len, HB_REFUSED_OUT_OF_SYNC,
                  "%" PRIu64 " bytes on this node are out of sync with the "
                  "peer, and the peer has some too; " NO_RESYNC,
                  local->oos_bytes);
  if (local->oos_bytes > 0)
    return answer(msg, len, HB_REFUSED_OUT_OF_SYNC,
                  "%" PRIu64 " bytes on this node are out of sync with the "
                  "peer; " NO_RESYNC, local->oos_bytes);
  if (peer_has_oos)
    return answer(msg, len, HB_REFUSED_OUT_OF_SYNC,
                  "the peer has blocks out of sync with this node; "
                  NO_RESYNC);
  ours_up = local->disk == HB_DISK_UPTODATE;
  theirs_up = peer_disk == HB_DISK_UPTODATE;
  if (ours_up != theirs_up)
    return answer(msg, len, HB_REFUSED_MAY_DIFFER,
                  "the replicas may differ: this node is %s and the peer is "
                  "%s; a full sync would be needed",
                  hb_disk_name(local->disk), hb_disk_name(peer_disk));
  return allowed(msg, len);
}

static bool has_data(enum hb_disk disk)
{
  return disk == HB_DISK_INCONSISTENT || disk == HB_DISK_OUTDATED;
}

bool hb_after_forced_promotion(const struct hb_node_state *before,
                               bool peer_has_oos)
{
  return before->conn == HB_CONN_CONNECTED &&
         before->peer_role == HB_ROLE_SECONDARY &&
         has_data(before->disk) && has_data(before->peer_disk) &&
         before->oos_bytes == 0 && !peer_has_oos;
}

/* ---- transitions ---------------------------------------------------------- */

void hb_state_promote(struct hb_node_state *s, bool force, bool peer_has_oos)
{
  if (s->role == HB_ROLE_PRIMARY)
    return;
  if (force && hb_after_forced_promotion(s, peer_has_oos))
    s->peer_disk = HB_DISK_UPTODATE;
  if (force)
    s->disk = HB_DISK_UPTODATE;
  s->role = HB_ROLE_PRIMARY;
}

void hb_state_demote(struct hb_node_state *s)
{
  s->role = HB_ROLE_SECONDARY;
}

void hb_state_connected(struct hb_node_state *s, enum hb_role peer_role,
                        enum hb_disk peer_disk)
{
  s->conn = HB_CONN_CONNECTED;
  s->peer_role = peer_role;
  s->peer_disk = peer_disk;
}

void hb_state_peer_changed(struct hb_node_state *s, enum hb_role peer_role,
                           enum hb_disk peer_disk)
{
  s->peer_role = peer_role;
  s->peer_disk = peer_disk;
}

void hb_state_peer_lost(struct hb_node_state *s)
{
  if (s->conn != HB_CONN_STANDALONE && s->conn != HB_CONN_SPLITBRAIN)
    s->conn = HB_CONN_CONNECTING;
  s->peer_role = HB_ROLE_UNKNOWN;
  s->peer_disk = HB_DISK_UNKNOWN;
}

int64_t hb_state_write_without_peer(struct hb_node_state *s,
                                    struct hb_bitmap *bm,
                                    uint64_t off, uint64_t len)
{
  int64_t n = hb_bitmap_set_range(bm, off, len);

  if (n >= 0)
    s->oos_bytes = hb_bitmap_oos_bytes(bm);
  return n;
}
