/* Roles, disk and connection states, and the decisions on them: pure, no
 * I/O, no threads, no locks (the caller owns the state and serializes).
 *
 * The rules, and the invariants of docs/architecture.md (DESIGN.md) they
 * enforce:
 *
 * Promotion (invariant 3, "one Primary"):
 *   - Already Primary: allowed, nothing changes (promote is idempotent, so an
 *     OCF agent may retry it).
 *   - The connected peer is Primary: refused, even with force. Two Primaries
 *     on a connected pair would both accept writes to the same blocks and
 *     replicate them into each other: the replicas would diverge. Force
 *     exists for a peer that is gone, not for one that is there.
 *   - The local disk is Diskless or Failed: refused, even with force. There
 *     are no local data to serve, and reads are served locally.
 *   - This node is SyncTarget: refused, even with force. Its data are
 *     incomplete until the resync finishes (and the SyncSource holds the
 *     good copy: promote it instead).
 *   - The local disk is not UpToDate while the connected peer's is: refused,
 *     even with force. Promoting the stale side would serve stale data and
 *     replicate writes over a peer that still claims UpToDate, a silent
 *     divergence (invariant 2). Promote the peer.
 *   - The local disk is not UpToDate (Inconsistent, Outdated): refused unless
 *     forced. A forced promotion makes this node's data the reference: its
 *     disk becomes UpToDate (hb_state_promote).
 *   - A forced promotion while Connected to a Secondary whose disk is not
 *     UpToDate either, with nothing out of sync on either side, declares the
 *     pair identical: the peer's disk becomes UpToDate too
 *     (hb_after_forced_promotion). This is the documented way to start a new
 *     pair from two disks known identical (both zero-filled, or one copied
 *     onto the other before the first start).
 *
 * Demotion (invariant 4): a Primary with NBD clients connected refuses to
 * demote unless forced (then the caller drops the clients first). Already
 * Secondary: allowed, nothing changes.
 *
 * Serving (invariant 4): an NBD client may connect only to a Primary with a
 * disk; the refusal names the role.
 *
 * Handshake (invariants 2 and 3): until resync exists, a connection is
 * accepted only when the replicas are known identical, because nothing
 * could bring them back together. Refused, in this order:
 *   - both nodes Primary: split brain;
 *   - either side has blocks out of sync (writes happened without the
 *     peer): resync is needed;
 *   - one side UpToDate and the other not: they may differ, a full sync
 *     would be needed.
 * Accepted: both UpToDate with nothing out of sync, or both not UpToDate
 * (nobody serves data then, until a forced promotion declares them
 * identical).
 *
 * Peer lost: the connection goes back to Connecting (StandAlone and
 * SplitBrain stay: they wait for the operator), the peer's role and disk
 * become unknown. The role and the disk state do not change: a Primary keeps
 * serving (its writes from now on are marked out of sync), a Secondary keeps
 * its disk state.
 *
 * Every decision returns 0 when allowed, a positive enum hb_refusal when
 * refused (an expected answer, not an error), or a negative errno for bad
 * input, and fills msg (may be NULL) with one line: the reason, or "" when
 * allowed. */
#ifndef HB_ROLE_H
#define HB_ROLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hb_bitmap;

/* The numeric values are the wire's (enum hb_wire_role, hb_wire_disk; role.c
 * asserts it). 0 is "unknown": the peer's, while not connected. */
enum hb_role {
  HB_ROLE_UNKNOWN = 0,
  HB_ROLE_PRIMARY = 1,
  HB_ROLE_SECONDARY = 2,
};

enum hb_disk {
  HB_DISK_UNKNOWN = 0,
  HB_DISK_UPTODATE = 1,
  HB_DISK_INCONSISTENT = 2,
  HB_DISK_OUTDATED = 3,
  HB_DISK_DISKLESS = 4,
  HB_DISK_FAILED = 5,
};

/* Not on the wire; 0 is never valid, like the others. */
enum hb_conn {
  HB_CONN_STANDALONE = 1,  /* not trying to connect (operator, or stopped) */
  HB_CONN_CONNECTING = 2,  /* trying to reach the peer */
  HB_CONN_CONNECTED = 3,   /* replicating */
  HB_CONN_SYNCSOURCE = 4,  /* connected, sending a resync */
  HB_CONN_SYNCTARGET = 5,  /* connected, receiving a resync */
  HB_CONN_SPLITBRAIN = 6,  /* both sides changed: waits for the operator */
};

/* Positive refusal codes (0 is "allowed"; negative values are -errno). */
enum hb_refusal {
  HB_REFUSED_PEER_PRIMARY = 1,   /* promote: the connected peer is Primary */
  HB_REFUSED_NOT_UPTODATE = 2,   /* promote: own disk not UpToDate, no force */
  HB_REFUSED_CLIENTS = 3,        /* demote: NBD clients connected, no force */
  HB_REFUSED_BOTH_PRIMARY = 4,   /* handshake: split brain, both Primary */
  HB_REFUSED_OUT_OF_SYNC = 5,    /* handshake: out-of-sync blocks, no resync */
  HB_REFUSED_MAY_DIFFER = 6,     /* handshake: one UpToDate, the other not */
  HB_REFUSED_ROLE_SECONDARY = 7, /* serve: this node is not Primary */
  HB_REFUSED_NO_DISK = 8,        /* promote, serve: disk Diskless or Failed */
  HB_REFUSED_PEER_UPTODATE = 9,  /* promote: the peer holds the good copy */
  HB_REFUSED_SYNC_TARGET = 10,   /* promote: resync into this node running */
};

struct hb_node_state {
  enum hb_role role;
  enum hb_disk disk;
  enum hb_conn conn;
  enum hb_role peer_role;   /* HB_ROLE_UNKNOWN (0) when not connected */
  enum hb_disk peer_disk;   /* HB_DISK_UNKNOWN (0) when not connected */
  unsigned clients;         /* NBD clients connected */
  uint64_t oos_bytes;       /* bytes marked out of sync with the peer */
};

/* ---- names ---------------------------------------------------------------- */

/* DRBD's names: "Primary", "Secondary", "Unknown" (0); "UpToDate",
 * "Inconsistent", "Outdated", "Diskless", "Failed", "DUnknown" (0);
 * "StandAlone", "Connecting", "Connected", "SyncSource", "SyncTarget",
 * "SplitBrain". "?" for a value outside the enum. */
const char *hb_role_name(enum hb_role role);
const char *hb_disk_name(enum hb_disk disk);
const char *hb_conn_name(enum hb_conn conn);

/* Parse a name (case-insensitive) into *out. Only real states parse: the
 * unknown names ("Unknown", "DUnknown") and "?" do not. Returns 0, or
 * -EINVAL with *out untouched. */
int hb_role_parse(const char *name, enum hb_role *out);
int hb_disk_parse(const char *name, enum hb_disk *out);
int hb_conn_parse(const char *name, enum hb_conn *out);

/* Whether v is a real (non-zero, in range) value of the enum. */
bool hb_role_valid(unsigned role);
bool hb_disk_valid(unsigned disk);
bool hb_conn_valid(unsigned conn);

/* Whether the state carries a live link to the peer (Connected, SyncSource,
 * SyncTarget). */
bool hb_conn_is_connected(enum hb_conn conn);

/* ---- decisions ------------------------------------------------------------ */

/* May this node become Primary? In order:
 *   already Primary                     0
 *   peer_role Primary (even forced)     HB_REFUSED_PEER_PRIMARY
 *     "cannot promote: the peer is Primary (two Primaries are never allowed
 *      while connected); demote the peer first"
 *   disk Diskless/Failed (even forced)  HB_REFUSED_NO_DISK
 *     "cannot promote: the local disk is Failed; there are no data to serve"
 *   conn SyncTarget (even forced)       HB_REFUSED_SYNC_TARGET
 *     "cannot promote: this node is SyncTarget; its data are incomplete
 *      until the resync finishes"
 *   disk not UpToDate, peer_disk UpToDate (even forced)
 *                                       HB_REFUSED_PEER_UPTODATE
 *     "cannot promote: the local disk is Outdated and the peer's is
 *      UpToDate; promote the peer instead"
 *   disk not UpToDate, not forced       HB_REFUSED_NOT_UPTODATE
 *     "cannot promote: the local disk is Inconsistent, not UpToDate; force
 *      only if this node's data are the ones to keep"
 *   otherwise                           0 */
int hb_may_promote(const struct hb_node_state *s, bool force,
                   char *msg, size_t len);

/* May this node become Secondary?
 *   already Secondary                   0
 *   clients > 0, not forced             HB_REFUSED_CLIENTS
 *     "cannot demote: 2 NBD clients are connected; disconnect them or force"
 *     ("1 NBD client is connected; disconnect it or force")
 *   otherwise                           0 (forced: drop the clients first) */
int hb_may_demote(const struct hb_node_state *s, bool force,
                  char *msg, size_t len);

/* May an NBD client connect to this node?
 *   role not Primary                    HB_REFUSED_ROLE_SECONDARY
 *     "this node is Secondary; connect to the Primary"
 *   disk Diskless/Failed                HB_REFUSED_NO_DISK
 *     "this node is Primary but its disk is Failed; there are no data to
 *      serve"
 *   otherwise                           0 */
int hb_may_serve(const struct hb_node_state *s, char *msg, size_t len);

/* May the connection with a peer that announced (peer_role, peer_disk,
 * whether it has out-of-sync blocks) go on? In order:
 *   peer_role or peer_disk invalid      -EINVAL
 *     "the peer sent an invalid role 7" / "... invalid disk state 9"
 *   both Primary                        HB_REFUSED_BOTH_PRIMARY
 *     "split brain: both nodes are Primary"
 *   local oos_bytes > 0 or peer_has_oos HB_REFUSED_OUT_OF_SYNC
 *     "4096 bytes on this node are out of sync with the peer; resync is not
 *      implemented yet (it comes with the metadata issue)"
 *     "the peer has blocks out of sync with this node; resync ..."
 *     "4096 bytes on this node are out of sync with the peer, and the peer
 *      has some too; resync ..."
 *   exactly one side UpToDate           HB_REFUSED_MAY_DIFFER
 *     "the replicas may differ: this node is UpToDate and the peer is
 *      Inconsistent; a full sync would be needed"
 *   otherwise                           0 */
int hb_on_handshake(const struct hb_node_state *local,
                    enum hb_role peer_role, enum hb_disk peer_disk,
                    bool peer_has_oos, char *msg, size_t len);

/* Given the state just before a promotion that hb_may_promote(before, true)
 * allowed: does the peer's disk become UpToDate too? True when the link is
 * Connected (no resync running), the peer is Secondary, neither disk was
 * UpToDate, both sides have a disk (Inconsistent or Outdated), and neither
 * side has out-of-sync blocks. Both nodes then mark their disk UpToDate (the
 * peer learns it through a STATE message). */
bool hb_after_forced_promotion(const struct hb_node_state *before,
                               bool peer_has_oos);

/* ---- transitions ---------------------------------------------------------- */

/* Become Primary (after hb_may_promote returned 0 with the same force). A
 * forced promotion makes the local disk UpToDate, and the peer's too when
 * hb_after_forced_promotion says so. */
void hb_state_promote(struct hb_node_state *s, bool force, bool peer_has_oos);

/* Become Secondary (after hb_may_demote returned 0). The disk state stays. */
void hb_state_demote(struct hb_node_state *s);

/* The handshake accepted (hb_on_handshake returned 0): Connected, with the
 * peer's role and disk. */
void hb_state_connected(struct hb_node_state *s, enum hb_role peer_role,
                        enum hb_disk peer_disk);

/* The peer announced a new role or disk state (a STATE message). */
void hb_state_peer_changed(struct hb_node_state *s, enum hb_role peer_role,
                           enum hb_disk peer_disk);

/* The link to the peer is gone: Connecting (StandAlone and SplitBrain stay),
 * peer role and disk unknown. Role, disk and oos_bytes stay: a Primary keeps
 * serving, a Secondary keeps its disk state. */
void hb_state_peer_lost(struct hb_node_state *s);

/* A write, trim or zero of [off, off+len) completed locally without the peer:
 * mark it in the out-of-sync bitmap and refresh oos_bytes from it. Returns
 * the number of bits newly set, or hb_bitmap_set_range's -errno (nothing
 * changed then). */
int64_t hb_state_write_without_peer(struct hb_node_state *s,
                                    struct hb_bitmap *bm,
                                    uint64_t off, uint64_t len);

#endif
