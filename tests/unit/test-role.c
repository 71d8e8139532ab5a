/* Roles and states: every decision row with its exact message, the
 * handshake matrix, the transitions, and sweeps over every state that check
 * the invariants (one Primary, no client on a Secondary) directly. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bitmap.h"
#include "role.h"
#include "wire.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Short names for the tables. */
#define P HB_ROLE_PRIMARY
#define S HB_ROLE_SECONDARY
#define UR HB_ROLE_UNKNOWN
#define UTD HB_DISK_UPTODATE
#define INC HB_DISK_INCONSISTENT
#define OUT HB_DISK_OUTDATED
#define DL HB_DISK_DISKLESS
#define FL HB_DISK_FAILED
#define UD HB_DISK_UNKNOWN
#define SA HB_CONN_STANDALONE
#define CING HB_CONN_CONNECTING
#define CON HB_CONN_CONNECTED
#define SRC HB_CONN_SYNCSOURCE
#define TGT HB_CONN_SYNCTARGET
#define SB HB_CONN_SPLITBRAIN

static void assert_one_line(const char *msg)
{
  assert_null(strchr(msg, '\n'));
}

/* Call a decision twice: with a buffer (checked against want) and with a
 * NULL buffer (same code). */
static void check_msg(int got, int want_code, const char *msg,
                      const char *want_msg, size_t row)
{
  if (got != want_code || strcmp(msg, want_msg) != 0)
    print_message("# row %zu: got %d \"%s\", want %d \"%s\"\n",
                  row, got, msg, want_code, want_msg);
  assert_int_equal(got, want_code);
  assert_string_equal(msg, want_msg);
  assert_one_line(msg);
}

/* ---- names ---------------------------------------------------------------- */

static void test_names(void **state)
{
  static const struct { unsigned v; const char *name; } roles[] = {
    { 0, "Unknown" }, { 1, "Primary" }, { 2, "Secondary" }, { 3, "?" },
    { 255, "?" },
  }, disks[] = {
    { 0, "DUnknown" }, { 1, "UpToDate" }, { 2, "Inconsistent" },
    { 3, "Outdated" }, { 4, "Diskless" }, { 5, "Failed" }, { 6, "?" },
    { 1000, "?" },
  }, conns[] = {
    { 0, "?" }, { 1, "StandAlone" }, { 2, "Connecting" }, { 3, "Connected" },
    { 4, "SyncSource" }, { 5, "SyncTarget" }, { 6, "SplitBrain" },
    { 7, "?" },
  };

  for (size_t i = 0; i < N(roles); i++)
    assert_string_equal(hb_role_name((enum hb_role) roles[i].v),
                        roles[i].name);
  for (size_t i = 0; i < N(disks); i++)
    assert_string_equal(hb_disk_name((enum hb_disk) disks[i].v),
                        disks[i].name);
  for (size_t i = 0; i < N(conns); i++)
    assert_string_equal(hb_conn_name((enum hb_conn) conns[i].v),
                        conns[i].name);

  /* The wire codec names them the same way. */
  for (unsigned v = 0; v < 8; v++) {
    if (hb_role_valid(v))
      assert_string_equal(hb_role_name((enum hb_role) v),
                          hb_wire_role_name(v));
    if (hb_disk_valid(v))
      assert_string_equal(hb_disk_name((enum hb_disk) v),
                          hb_wire_disk_name(v));
  }
}

static void test_valid(void **state)
{
  static const struct { unsigned v; bool role, disk, conn; } rows[] = {
    { 0, false, false, false },
    { 1, true, true, true },
    { 2, true, true, true },
    { 3, false, true, true },
    { 5, false, true, true },
    { 6, false, false, true },
    { 7, false, false, false },
    { UINT32_MAX, false, false, false },
  };

  for (size_t i = 0; i < N(rows); i++) {
    assert_int_equal(hb_role_valid(rows[i].v), rows[i].role);
    assert_int_equal(hb_disk_valid(rows[i].v), rows[i].disk);
    assert_int_equal(hb_conn_valid(rows[i].v), rows[i].conn);
  }
  assert_false(hb_conn_is_connected(SA));
  assert_false(hb_conn_is_connected(CING));
  assert_true(hb_conn_is_connected(CON));
  assert_true(hb_conn_is_connected(SRC));
  assert_true(hb_conn_is_connected(TGT));
  assert_false(hb_conn_is_connected(SB));
}

static void test_parse(void **state)
{
  enum hb_role r;
  enum hb_disk d;
  enum hb_conn c;

  /* Every real value round-trips through its name, in any case. */
  for (unsigned v = 1; v <= 2; v++) {
    char up[32];
    const char *name = hb_role_name((enum hb_role) v);

    assert_int_equal(hb_role_parse(name, &r), 0);
    assert_int_equal(r, v);
    for (size_t i = 0; i <= strlen(name); i++)
      up[i] = (char) (name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32
                                                        : name[i]);
    assert_int_equal(hb_role_parse(up, &r), 0);
    assert_int_equal(r, v);
  }
  for (unsigned v = 1; v <= 5; v++) {
    assert_int_equal(hb_disk_parse(hb_disk_name((enum hb_disk) v), &d), 0);
    assert_int_equal(d, v);
  }
  for (unsigned v = 1; v <= 6; v++) {
    assert_int_equal(hb_conn_parse(hb_conn_name((enum hb_conn) v), &c), 0);
    assert_int_equal(c, v);
  }
  assert_int_equal(hb_role_parse("primary", &r), 0);
  assert_int_equal(r, P);
  assert_int_equal(hb_disk_parse("uptodate", &d), 0);
  assert_int_equal(d, UTD);
  assert_int_equal(hb_conn_parse("STANDALONE", &c), 0);
  assert_int_equal(c, SA);

  /* Rejections leave *out alone. */
  static const char *const bad_roles[] = {
    "", "Unknown", "?", "Primar", "Primary ", " Primary", "Primaryx", "1",
  };
  static const char *const bad_disks[] = {
    "", "DUnknown", "?", "Up-To-Date", "UpToDat", "Consistent",
  };
  static const char *const bad_conns[] = {
    "", "?", "Connect", "Syncing", "Split Brain", "WFConnection",
  };

  r = (enum hb_role) 77;
  d = (enum hb_disk) 77;
  c = (enum hb_conn) 77;
  for (size_t i = 0; i < N(bad_roles); i++)
    assert_int_equal(hb_role_parse(bad_roles[i], &r), -EINVAL);
  for (size_t i = 0; i < N(bad_disks); i++)
    assert_int_equal(hb_disk_parse(bad_disks[i], &d), -EINVAL);
  for (size_t i = 0; i < N(bad_conns); i++)
    assert_int_equal(hb_conn_parse(bad_conns[i], &c), -EINVAL);
  assert_int_equal(hb_role_parse(NULL, &r), -EINVAL);
  assert_int_equal(r, 77);
  assert_int_equal(d, 77);
  assert_int_equal(c, 77);
}

/* ---- promote -------------------------------------------------------------- */

struct decision_row {
  struct hb_node_state s;
  bool force;
  int code;
  const char *msg;
};

#define ST(role_, disk_, conn_, prole_, pdisk_, clients_, oos_) \
  { .role = role_, .disk = disk_, .conn = conn_, .peer_role = prole_, \
    .peer_disk = pdisk_, .clients = clients_, .oos_bytes = oos_ }

#define M_PEER_PRIMARY "cannot promote: the peer is Primary (two Primaries " \
  "are never allowed while connected); demote the peer first"
#define M_NOT_UTD(d) "cannot promote: the local disk is " d ", not " \
  "UpToDate; force only if this node's data are the ones to keep"
#define M_NO_DISK(d) "cannot promote: the local disk is " d "; there are " \
  "no data to serve"
#define M_PEER_UTD(d) "cannot promote: the local disk is " d " and the " \
  "peer's is UpToDate; promote the peer instead"
#define M_SYNC_TARGET "cannot promote: this node is SyncTarget; its data " \
  "are incomplete until the resync finishes"

static const struct decision_row promote_rows[] = {
  /* already Primary: idempotent, whatever else holds */
  { ST(P, UTD, CON, S, UTD, 0, 0), false, 0, "" },
  { ST(P, UTD, CING, UR, UD, 3, 4096), false, 0, "" },
  { ST(P, UTD, CON, S, UTD, 0, 0), true, 0, "" },
  { ST(P, INC, SA, UR, UD, 0, 0), false, 0, "" },
  /* UpToDate Secondary: allowed, alone or beside a Secondary */
  { ST(S, UTD, SA, UR, UD, 0, 0), false, 0, "" },
  { ST(S, UTD, CING, UR, UD, 0, 0), false, 0, "" },
  { ST(S, UTD, CON, S, UTD, 0, 0), false, 0, "" },
  { ST(S, UTD, CON, S, UTD, 0, 0), true, 0, "" },
  { ST(S, UTD, SRC, S, INC, 0, 0), false, 0, "" },
  { ST(S, UTD, CING, UR, UD, 0, 1 << 20), false, 0, "" },
  { ST(S, UTD, SB, UR, UD, 0, 0), false, 0, "" },
  /* the connected peer is Primary: refused, even forced */
  { ST(S, UTD, CON, P, UTD, 0, 0), false, HB_REFUSED_PEER_PRIMARY,
    M_PEER_PRIMARY },
  { ST(S, UTD, CON, P, UTD, 0, 0), true, HB_REFUSED_PEER_PRIMARY,
    M_PEER_PRIMARY },
  { ST(S, INC, CON, P, INC, 0, 0), true, HB_REFUSED_PEER_PRIMARY,
    M_PEER_PRIMARY },
  { ST(S, FL, CON, P, UTD, 0, 0), true, HB_REFUSED_PEER_PRIMARY,
    M_PEER_PRIMARY },
  { ST(S, INC, TGT, P, UTD, 0, 0), true, HB_REFUSED_PEER_PRIMARY,
    M_PEER_PRIMARY },
  /* no local disk: refused, even forced */
  { ST(S, DL, SA, UR, UD, 0, 0), false, HB_REFUSED_NO_DISK,
    M_NO_DISK("Diskless") },
  { ST(S, DL, SA, UR, UD, 0, 0), true, HB_REFUSED_NO_DISK,
    M_NO_DISK("Diskless") },
  { ST(S, FL, CON, S, UTD, 0, 0), true, HB_REFUSED_NO_DISK,
    M_NO_DISK("Failed") },
  { ST(S, FL, CING, UR, UD, 0, 0), false, HB_REFUSED_NO_DISK,
    M_NO_DISK("Failed") },
  /* resync into this node: refused, even forced */
  { ST(S, INC, TGT, S, UTD, 0, 0), false, HB_REFUSED_SYNC_TARGET,
    M_SYNC_TARGET },
  { ST(S, INC, TGT, S, UTD, 0, 0), true, HB_REFUSED_SYNC_TARGET,
    M_SYNC_TARGET },
  { ST(S, INC, TGT, S, INC, 0, 0), true, HB_REFUSED_SYNC_TARGET,
    M_SYNC_TARGET },
  /* the peer holds the good copy: refused, even forced */
  { ST(S, OUT, CON, S, UTD, 0, 0), false, HB_REFUSED_PEER_UPTODATE,
    M_PEER_UTD("Outdated") },
  { ST(S, OUT, CON, S, UTD, 0, 0), true, HB_REFUSED_PEER_UPTODATE,
    M_PEER_UTD("Outdated") },
  { ST(S, INC, SRC, S, UTD, 0, 0), true, HB_REFUSED_PEER_UPTODATE,
    M_PEER_UTD("Inconsistent") },
  /* not UpToDate: refused unless forced */
  { ST(S, INC, SA, UR, UD, 0, 0), false, HB_REFUSED_NOT_UPTODATE,
    M_NOT_UTD("Inconsistent") },
  { ST(S, INC, SA, UR, UD, 0, 0), true, 0, "" },
  { ST(S, OUT, CING, UR, UD, 0, 0), false, HB_REFUSED_NOT_UPTODATE,
    M_NOT_UTD("Outdated") },
  { ST(S, OUT, CING, UR, UD, 0, 0), true, 0, "" },
  { ST(S, INC, CON, S, INC, 0, 0), false, HB_REFUSED_NOT_UPTODATE,
    M_NOT_UTD("Inconsistent") },
  { ST(S, INC, CON, S, INC, 0, 0), true, 0, "" },
  { ST(S, OUT, CON, S, FL, 0, 0), false, HB_REFUSED_NOT_UPTODATE,
    M_NOT_UTD("Outdated") },
  { ST(S, OUT, CON, S, FL, 0, 0), true, 0, "" },
  { ST(S, OUT, SB, UR, UD, 0, 8192), false, HB_REFUSED_NOT_UPTODATE,
    M_NOT_UTD("Outdated") },
  { ST(S, OUT, SB, UR, UD, 0, 8192), true, 0, "" },
};

static void test_promote(void **state)
{
  for (size_t i = 0; i < N(promote_rows); i++) {
    const struct decision_row *r = &promote_rows[i];
    char msg[256];

    memset(msg, 'x', sizeof msg);
    check_msg(hb_may_promote(&r->s, r->force, msg, sizeof msg), r->code,
              msg, r->msg, i);
    assert_int_equal(hb_may_promote(&r->s, r->force, NULL, 0), r->code);
    assert_int_equal(hb_may_promote(&r->s, r->force, msg, 0), r->code);
  }
}

/* A short buffer gets a truncated, terminated line. */
static void test_short_buffer(void **state)
{
  struct hb_node_state s = ST(S, INC, SA, UR, UD, 0, 0);
  char msg[12];

  memset(msg, 'x', sizeof msg);
  assert_int_equal(hb_may_promote(&s, false, msg, sizeof msg),
                   HB_REFUSED_NOT_UPTODATE);
  assert_string_equal(msg, "cannot prom");
  s.disk = UTD;
  memset(msg, 'x', sizeof msg);
  assert_int_equal(hb_may_promote(&s, false, msg, 1), 0);
  assert_int_equal(msg[0], '\0');
}

/* Every state, forced or not: promotion is never allowed beside a connected
 * Primary, never without data, and without force only from UpToDate; a
 * message is given exactly when refused. */
static void test_promote_sweep(void **state)
{
  unsigned allowed = 0, refused = 0;

  for (unsigned role = 1; role <= 2; role++)
  for (unsigned disk = 1; disk <= 5; disk++)
  for (unsigned conn = 1; conn <= 6; conn++)
  for (unsigned prole = 0; prole <= 2; prole++)
  for (unsigned pdisk = 0; pdisk <= 5; pdisk++)
  for (unsigned force = 0; force <= 1; force++) {
    struct hb_node_state s = ST((enum hb_role) role, (enum hb_disk) disk,
                                (enum hb_conn) conn, (enum hb_role) prole,
                                (enum hb_disk) pdisk, 1, 0);
    char msg[256];
    int code = hb_may_promote(&s, force, msg, sizeof msg);

    assert_true(code >= 0);
    assert_int_equal(code == 0, msg[0] == '\0');
    assert_one_line(msg);
    if (code) {
      refused++;
      continue;
    }
    allowed++;
    if (role == P)
      continue;
    assert_int_not_equal(prole, P);
    assert_int_not_equal(conn, TGT);
    assert_true(disk == UTD || disk == INC || disk == OUT);
    if (!force)
      assert_int_equal(disk, UTD);
    if (disk != UTD)
      assert_int_not_equal(pdisk, UTD);
  }
  assert_true(allowed > 0 && refused > 0);
}

/* ---- demote --------------------------------------------------------------- */

static const struct decision_row demote_rows[] = {
  { ST(S, UTD, CON, P, UTD, 0, 0), false, 0, "" },
  { ST(S, INC, SA, UR, UD, 5, 0), false, 0, "" },
  { ST(S, UTD, CON, P, UTD, 2, 0), true, 0, "" },
  { ST(P, UTD, CON, S, UTD, 0, 0), false, 0, "" },
  { ST(P, UTD, CING, UR, UD, 0, 4096), false, 0, "" },
  { ST(P, UTD, CON, S, UTD, 0, 0), true, 0, "" },
  { ST(P, UTD, CON, S, UTD, 1, 0), false, HB_REFUSED_CLIENTS,
    "cannot demote: 1 NBD client is connected; disconnect it or force" },
  { ST(P, UTD, CON, S, UTD, 2, 0), false, HB_REFUSED_CLIENTS,
    "cannot demote: 2 NBD clients are connected; disconnect them or force" },
  { ST(P, FL, SA, UR, UD, 4294967295u, 0), false, HB_REFUSED_CLIENTS,
    "cannot demote: 4294967295 NBD clients are connected; disconnect them "
    "or force" },
  { ST(P, UTD, CON, S, UTD, 1, 0), true, 0, "" },
  { ST(P, UTD, SA, UR, UD, 16, 0), true, 0, "" },
};

static void test_demote(void **state)
{
  for (size_t i = 0; i < N(demote_rows); i++) {
    const struct decision_row *r = &demote_rows[i];
    char msg[256];

    memset(msg, 'x', sizeof msg);
    check_msg(hb_may_demote(&r->s, r->force, msg, sizeof msg), r->code,
              msg, r->msg, i);
    assert_int_equal(hb_may_demote(&r->s, r->force, NULL, 0), r->code);
  }
}

/* ---- serve ---------------------------------------------------------------- */

static const struct decision_row serve_rows[] = {
  { ST(P, UTD, CON, S, UTD, 0, 0), false, 0, "" },
  { ST(P, UTD, CING, UR, UD, 7, 1 << 30), false, 0, "" },
  { ST(P, UTD, SRC, S, INC, 1, 0), false, 0, "" },
  { ST(P, INC, SA, UR, UD, 0, 0), false, 0, "" },
  { ST(S, UTD, CON, P, UTD, 0, 0), false, HB_REFUSED_ROLE_SECONDARY,
    "this node is Secondary; connect to the Primary" },
  { ST(S, UTD, SA, UR, UD, 0, 0), false, HB_REFUSED_ROLE_SECONDARY,
    "this node is Secondary; connect to the Primary" },
  { ST(S, FL, SA, UR, UD, 0, 0), false, HB_REFUSED_ROLE_SECONDARY,
    "this node is Secondary; connect to the Primary" },
  { ST(UR, UD, SA, UR, UD, 0, 0), false, HB_REFUSED_ROLE_SECONDARY,
    "this node is Unknown; connect to the Primary" },
  { ST(P, FL, CON, S, UTD, 0, 0), false, HB_REFUSED_NO_DISK,
    "this node is Primary but its disk is Failed; there are no data to "
    "serve" },
  { ST(P, DL, SA, UR, UD, 0, 0), false, HB_REFUSED_NO_DISK,
    "this node is Primary but its disk is Diskless; there are no data to "
    "serve" },
};

static void test_serve(void **state)
{
  for (size_t i = 0; i < N(serve_rows); i++) {
    const struct decision_row *r = &serve_rows[i];
    char msg[256];

    memset(msg, 'x', sizeof msg);
    check_msg(hb_may_serve(&r->s, msg, sizeof msg), r->code, msg, r->msg, i);
    assert_int_equal(hb_may_serve(&r->s, NULL, 0), r->code);
  }
}

/* Invariant 4 over every state: only a Primary serves. */
static void test_serve_sweep(void **state)
{
  for (unsigned role = 0; role <= 2; role++)
  for (unsigned disk = 0; disk <= 5; disk++)
  for (unsigned conn = 1; conn <= 6; conn++) {
    struct hb_node_state s = ST((enum hb_role) role, (enum hb_disk) disk,
                                (enum hb_conn) conn, UR, UD, 0, 0);
    int code = hb_may_serve(&s, NULL, 0);

    if (role != P)
      assert_int_equal(code, HB_REFUSED_ROLE_SECONDARY);
    else if (disk == DL || disk == FL)
      assert_int_equal(code, HB_REFUSED_NO_DISK);
    else
      assert_int_equal(code, 0);
  }
}

/* ---- handshake ------------------------------------------------------------ */

struct handshake_row {
  struct hb_node_state local;
  enum hb_role peer_role;
  enum hb_disk peer_disk;
  bool peer_oos;
  int code;
  const char *msg;
};

#define M_RESYNC "resync is not implemented yet (it comes with the " \
  "metadata issue)"

static const struct handshake_row handshake_rows[] = {
  /* identical replicas */
  { ST(S, UTD, CING, UR, UD, 0, 0), S, UTD, false, 0, "" },
  { ST(P, UTD, CING, UR, UD, 2, 0), S, UTD, false, 0, "" },
  { ST(S, UTD, CING, UR, UD, 0, 0), P, UTD, false, 0, "" },
  { ST(S, INC, CING, UR, UD, 0, 0), S, INC, false, 0, "" },
  { ST(S, OUT, CING, UR, UD, 0, 0), S, INC, false, 0, "" },
  { ST(S, FL, CING, UR, UD, 0, 0), S, DL, false, 0, "" },
  /* split brain */
  { ST(P, UTD, CING, UR, UD, 1, 0), P, UTD, false, HB_REFUSED_BOTH_PRIMARY,
    "split brain: both nodes are Primary" },
  { ST(P, UTD, CING, UR, UD, 1, 4096), P, INC, true, HB_REFUSED_BOTH_PRIMARY,
    "split brain: both nodes are Primary" },
  /* out of sync on either side */
  { ST(P, UTD, CING, UR, UD, 1, 4096), S, UTD, false, HB_REFUSED_OUT_OF_SYNC,
    "4096 bytes on this node are out of sync with the peer; " M_RESYNC },
  { ST(S, UTD, CING, UR, UD, 0, 0), P, UTD, true, HB_REFUSED_OUT_OF_SYNC,
    "the peer has blocks out of sync with this node; " M_RESYNC },
  { ST(S, UTD, CING, UR, UD, 0, 1000), P, UTD, true, HB_REFUSED_OUT_OF_SYNC,
    "1000 bytes on this node are out of sync with the peer, and the peer "
    "has some too; " M_RESYNC },
  { ST(S, INC, CING, UR, UD, 0, UINT64_MAX), S, OUT, false,
    HB_REFUSED_OUT_OF_SYNC, "18446744073709551615 bytes on this node are "
    "out of sync with the peer; " M_RESYNC },
  /* one UpToDate, the other not */
  { ST(P, UTD, CING, UR, UD, 0, 0), S, INC, false, HB_REFUSED_MAY_DIFFER,
    "the replicas may differ: this node is UpToDate and the peer is "
    "Inconsistent; a full sync would be needed" },
  { ST(S, OUT, CING, UR, UD, 0, 0), P, UTD, false, HB_REFUSED_MAY_DIFFER,
    "the replicas may differ: this node is Outdated and the peer is "
    "UpToDate; a full sync would be needed" },
  { ST(S, UTD, CING, UR, UD, 0, 0), S, FL, false, HB_REFUSED_MAY_DIFFER,
    "the replicas may differ: this node is UpToDate and the peer is "
    "Failed; a full sync would be needed" },
  /* garbage from the peer */
  { ST(S, UTD, CING, UR, UD, 0, 0), UR, UTD, false, -EINVAL,
    "the peer sent an invalid role 0" },
  { ST(S, UTD, CING, UR, UD, 0, 0), (enum hb_role) 3, UTD, false, -EINVAL,
    "the peer sent an invalid role 3" },
  { ST(S, UTD, CING, UR, UD, 0, 0), S, UD, false, -EINVAL,
    "the peer sent an invalid disk state 0" },
  { ST(S, UTD, CING, UR, UD, 0, 0), S, (enum hb_disk) 6, false, -EINVAL,
    "the peer sent an invalid disk state 6" },
};

static void test_handshake(void **state)
{
  for (size_t i = 0; i < N(handshake_rows); i++) {
    const struct handshake_row *r = &handshake_rows[i];
    char msg[256];

    memset(msg, 'x', sizeof msg);
    check_msg(hb_on_handshake(&r->local, r->peer_role, r->peer_disk,
                              r->peer_oos, msg, sizeof msg),
              r->code, msg, r->msg, i);
    assert_int_equal(hb_on_handshake(&r->local, r->peer_role, r->peer_disk,
                                     r->peer_oos, NULL, 0), r->code);
  }
}

/* Local disk (row) x peer disk (column), nothing out of sync: '.' accepted,
 * 'D' HB_REFUSED_MAY_DIFFER. Order UpToDate Inconsistent Outdated Diskless
 * Failed. */
static const char disk_matrix[5][6] = {
  ".DDDD",
  "D....",
  "D....",
  "D....",
  "D....",
};

/* Every role pair x disk pair x out-of-sync combination, against the
 * precedence: both Primary, then out of sync, then the disk matrix. Both
 * sides' views of one pair agree. */
static void test_handshake_matrix(void **state)
{
  static const uint64_t oos[] = { 0, 512, 1 };
  unsigned seen[16] = { 0 };

  for (unsigned lr = 1; lr <= 2; lr++)
  for (unsigned pr = 1; pr <= 2; pr++)
  for (unsigned ld = 1; ld <= 5; ld++)
  for (unsigned pd = 1; pd <= 5; pd++)
  for (size_t lo = 0; lo < N(oos); lo++)
  for (unsigned po = 0; po <= 1; po++) {
    struct hb_node_state local = ST((enum hb_role) lr, (enum hb_disk) ld,
                                    CING, UR, UD, 0, oos[lo]);
    struct hb_node_state peer = ST((enum hb_role) pr, (enum hb_disk) pd,
                                   CING, UR, UD, 0, po ? 4096 : 0);
    char msg[256];
    int want, got, mirror;

    if (lr == P && pr == P)
      want = HB_REFUSED_BOTH_PRIMARY;
    else if (oos[lo] || po)
      want = HB_REFUSED_OUT_OF_SYNC;
    else if (disk_matrix[ld - 1][pd - 1] == 'D')
      want = HB_REFUSED_MAY_DIFFER;
    else
      want = 0;
    got = hb_on_handshake(&local, (enum hb_role) pr, (enum hb_disk) pd,
                          po, msg, sizeof msg);
    assert_int_equal(got, want);
    assert_int_equal(got == 0, msg[0] == '\0');
    assert_one_line(msg);
    mirror = hb_on_handshake(&peer, (enum hb_role) lr, (enum hb_disk) ld,
                             oos[lo] != 0, NULL, 0);
    assert_int_equal(mirror, got);
    seen[got]++;
    /* Accepted means the replicas are known identical. */
    if (got == 0) {
      assert_true(oos[lo] == 0 && !po);
      assert_int_equal(ld == UTD, pd == UTD);
    }
  }
  assert_true(seen[0] && seen[HB_REFUSED_BOTH_PRIMARY] &&
              seen[HB_REFUSED_OUT_OF_SYNC] && seen[HB_REFUSED_MAY_DIFFER]);
}

/* ---- forced promotion ----------------------------------------------------- */

static const struct {
  struct hb_node_state before;
  bool peer_oos;
  bool peer_uptodate;
} forced_rows[] = {
  /* two fresh disks known identical: both become UpToDate */
  { ST(S, INC, CON, S, INC, 0, 0), false, true },
  { ST(S, OUT, CON, S, INC, 0, 0), false, true },
  { ST(S, INC, CON, S, OUT, 0, 0), false, true },
  { ST(S, OUT, CON, S, OUT, 0, 0), false, true },
  /* out of sync on either side */
  { ST(S, INC, CON, S, INC, 0, 4096), false, false },
  { ST(S, INC, CON, S, INC, 0, 0), true, false },
  /* not connected, or a resync or a split brain */
  { ST(S, INC, CING, UR, UD, 0, 0), false, false },
  { ST(S, INC, SA, UR, UD, 0, 0), false, false },
  { ST(S, INC, SRC, S, INC, 0, 0), false, false },
  { ST(S, INC, SB, UR, UD, 0, 0), false, false },
  /* the peer has no disk, or is UpToDate, or Primary */
  { ST(S, INC, CON, S, DL, 0, 0), false, false },
  { ST(S, INC, CON, S, FL, 0, 0), false, false },
  { ST(S, INC, CON, S, UTD, 0, 0), false, false },
  { ST(S, INC, CON, P, INC, 0, 0), false, false },
  /* our disk was UpToDate already: force was not needed */
  { ST(S, UTD, CON, S, INC, 0, 0), false, false },
  { ST(S, UTD, CON, S, UTD, 0, 0), false, false },
};

static void test_forced_promotion(void **state)
{
  for (size_t i = 0; i < N(forced_rows); i++) {
    print_message("# row %zu\n", i);
    assert_int_equal(hb_after_forced_promotion(&forced_rows[i].before,
                                               forced_rows[i].peer_oos),
                     forced_rows[i].peer_uptodate);
  }
}

/* ---- transitions ---------------------------------------------------------- */

static void test_promote_transition(void **state)
{
  static const struct {
    struct hb_node_state s;
    bool force, peer_oos;
    struct hb_node_state want;
  } rows[] = {
    { ST(S, UTD, CON, S, UTD, 0, 0), false, false,
      ST(P, UTD, CON, S, UTD, 0, 0) },
    { ST(S, INC, SA, UR, UD, 0, 0), true, false,
      ST(P, UTD, SA, UR, UD, 0, 0) },
    { ST(S, OUT, CING, UR, UD, 0, 512), true, false,
      ST(P, UTD, CING, UR, UD, 0, 512) },
    { ST(S, INC, CON, S, INC, 0, 0), true, false,
      ST(P, UTD, CON, S, UTD, 0, 0) },
    { ST(S, INC, CON, S, INC, 0, 0), true, true,
      ST(P, UTD, CON, S, INC, 0, 0) },
    { ST(S, UTD, CON, S, INC, 0, 0), true, false,
      ST(P, UTD, CON, S, INC, 0, 0) },
    /* already Primary: nothing changes, even forced */
    { ST(P, INC, CON, S, INC, 2, 0), true, false,
      ST(P, INC, CON, S, INC, 2, 0) },
  };

  for (size_t i = 0; i < N(rows); i++) {
    struct hb_node_state s = rows[i].s;

    print_message("# row %zu\n", i);
    hb_state_promote(&s, rows[i].force, rows[i].peer_oos);
    assert_memory_equal(&s, &rows[i].want, sizeof s);
  }
}

static void test_peer_lost(void **state)
{
  static const struct {
    enum hb_conn from, to;
  } conns[] = {
    { CON, CING }, { SRC, CING }, { TGT, CING }, { CING, CING },
    { SA, SA }, { SB, SB },
  };

  for (size_t i = 0; i < N(conns); i++)
  for (unsigned role = 1; role <= 2; role++)
  for (unsigned disk = 1; disk <= 5; disk++) {
    struct hb_node_state s = ST((enum hb_role) role, (enum hb_disk) disk,
                                conns[i].from, S, UTD, 3, 8192);
    struct hb_node_state want = ST((enum hb_role) role, (enum hb_disk) disk,
                                   conns[i].to, UR, UD, 3, 8192);

    hb_state_peer_lost(&s);
    assert_memory_equal(&s, &want, sizeof s);
    /* A Primary keeps serving. */
    if (role == P && disk != DL && disk != FL)
      assert_int_equal(hb_may_serve(&s, NULL, 0), 0);
  }
}

static void test_connected_and_changes(void **state)
{
  struct hb_node_state s = ST(S, UTD, CING, UR, UD, 0, 0);
  struct hb_node_state want = ST(S, UTD, CON, P, UTD, 0, 0);

  hb_state_connected(&s, P, UTD);
  assert_memory_equal(&s, &want, sizeof s);
  hb_state_peer_changed(&s, S, OUT);
  want.peer_role = S;
  want.peer_disk = OUT;
  assert_memory_equal(&s, &want, sizeof s);

  s = (struct hb_node_state) ST(P, UTD, CON, S, UTD, 0, 0);
  hb_state_demote(&s);
  want = (struct hb_node_state) ST(S, UTD, CON, S, UTD, 0, 0);
  assert_memory_equal(&s, &want, sizeof s);
  hb_state_demote(&s);
  assert_memory_equal(&s, &want, sizeof s);
}

static void test_write_without_peer(void **state)
{
  struct hb_bitmap bm;
  struct hb_node_state s = ST(P, UTD, CING, UR, UD, 1, 0);

  assert_int_equal(hb_bitmap_init(&bm, 10000, 4096), 0);
  assert_int_equal(hb_state_write_without_peer(&s, &bm, 0, 1), 1);
  assert_int_equal(s.oos_bytes, 4096);
  assert_int_equal(hb_state_write_without_peer(&s, &bm, 100, 200), 0);
  assert_int_equal(s.oos_bytes, 4096);
  /* the partial last bit counts its 1808 bytes */
  assert_int_equal(hb_state_write_without_peer(&s, &bm, 9999, 1), 1);
  assert_int_equal(s.oos_bytes, 4096 + 1808);
  assert_int_equal(hb_state_write_without_peer(&s, &bm, 0, 0), 0);
  assert_int_equal(hb_state_write_without_peer(&s, &bm, 9999, 2), -ERANGE);
  assert_int_equal(hb_state_write_without_peer(&s, &bm, UINT64_MAX, 2),
                   -ERANGE);
  assert_int_equal(s.oos_bytes, 4096 + 1808);
  assert_int_equal(hb_state_write_without_peer(&s, &bm, 0, 10000), 1);
  assert_int_equal(s.oos_bytes, 10000);
  hb_bitmap_free(&bm);
}

/* The life of a pair, step by step, through the decisions and the
 * transitions: two zero-filled disks become a pair by a forced promotion;
 * the Secondary cannot take over while the Primary is there; writes during a
 * disconnection keep the pair apart; an operator's takeover afterwards is
 * split brain on reconnect. */
static void test_story(void **state)
{
  struct hb_node_state a = ST(S, INC, CING, UR, UD, 0, 0);
  struct hb_node_state b = ST(S, INC, CING, UR, UD, 0, 0);
  struct hb_bitmap bm;
  char msg[256];

  assert_int_equal(hb_bitmap_init(&bm, 1 << 20, 0), 0);
  /* Fresh disks: nobody UpToDate, nobody may serve; they connect. */
  assert_int_equal(hb_on_handshake(&a, b.role, b.disk, false, msg,
                                   sizeof msg), 0);
  assert_int_equal(hb_on_handshake(&b, a.role, a.disk, false, msg,
                                   sizeof msg), 0);
  hb_state_connected(&a, b.role, b.disk);
  hb_state_connected(&b, a.role, a.disk);
  assert_int_equal(hb_may_promote(&a, false, msg, sizeof msg),
                   HB_REFUSED_NOT_UPTODATE);
  assert_int_equal(hb_may_serve(&a, msg, sizeof msg),
                   HB_REFUSED_ROLE_SECONDARY);

  /* The operator declares them identical by forcing A. */
  assert_int_equal(hb_may_promote(&a, true, msg, sizeof msg), 0);
  assert_true(hb_after_forced_promotion(&a, false));
  hb_state_promote(&a, true, false);
  assert_int_equal(a.role, P);
  assert_int_equal(a.disk, UTD);
  assert_int_equal(a.peer_disk, UTD);
  /* B learns it through STATE. */
  b.disk = UTD;
  hb_state_peer_changed(&b, a.role, a.disk);
  assert_int_equal(hb_may_serve(&a, msg, sizeof msg), 0);
  a.clients = 1;

  /* B may not take over while A is there, forced or not. */
  assert_int_equal(hb_may_promote(&b, false, msg, sizeof msg),
                   HB_REFUSED_PEER_PRIMARY);
  assert_int_equal(hb_may_promote(&b, true, msg, sizeof msg),
                   HB_REFUSED_PEER_PRIMARY);
  assert_int_equal(hb_may_serve(&b, msg, sizeof msg),
                   HB_REFUSED_ROLE_SECONDARY);
  assert_int_equal(hb_may_demote(&a, false, msg, sizeof msg),
                   HB_REFUSED_CLIENTS);

  /* The link drops; A keeps serving and marks its writes. */
  hb_state_peer_lost(&a);
  hb_state_peer_lost(&b);
  assert_int_equal(hb_may_serve(&a, msg, sizeof msg), 0);
  assert_int_equal(hb_state_write_without_peer(&a, &bm, 4096, 8192), 2);
  assert_int_equal(a.oos_bytes, 8192);
  assert_int_equal(b.disk, UTD);
  assert_int_equal(hb_on_handshake(&a, b.role, b.disk, false, msg,
                                   sizeof msg), HB_REFUSED_OUT_OF_SYNC);
  assert_string_equal(msg, "8192 bytes on this node are out of sync with "
                      "the peer; " M_RESYNC);
  assert_int_equal(hb_on_handshake(&b, a.role, a.disk, true, msg,
                                   sizeof msg), HB_REFUSED_OUT_OF_SYNC);

  /* The operator promotes B too while apart: split brain on reconnect. */
  assert_int_equal(hb_may_promote(&b, false, msg, sizeof msg), 0);
  hb_state_promote(&b, false, false);
  assert_int_equal(hb_on_handshake(&a, b.role, b.disk, false, msg,
                                   sizeof msg), HB_REFUSED_BOTH_PRIMARY);
  assert_int_equal(hb_on_handshake(&b, a.role, a.disk, true, msg,
                                   sizeof msg), HB_REFUSED_BOTH_PRIMARY);
  hb_bitmap_free(&bm);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_names),
    cmocka_unit_test(test_valid),
    cmocka_unit_test(test_parse),
    cmocka_unit_test(test_promote),
    cmocka_unit_test(test_short_buffer),
    cmocka_unit_test(test_promote_sweep),
    cmocka_unit_test(test_demote),
    cmocka_unit_test(test_serve),
    cmocka_unit_test(test_serve_sweep),
    cmocka_unit_test(test_handshake),
    cmocka_unit_test(test_handshake_matrix),
    cmocka_unit_test(test_forced_promotion),
    cmocka_unit_test(test_promote_transition),
    cmocka_unit_test(test_peer_lost),
    cmocka_unit_test(test_connected_and_changes),
    cmocka_unit_test(test_write_without_peer),
    cmocka_unit_test(test_story),
  };

  return cmocka_run_group_tests_name("role", tests, NULL, NULL);
}
