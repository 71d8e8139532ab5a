/* The wire codec: round trips, every rejection, and a mini fuzz. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "wire.h"

#define MiB (1u << 20)

/* A header written field by field, bypassing the encoder's checks. Magic
 * and version are stored XORed with the right values, so that zero (the
 * default of an initializer) means right. */
struct raw {
  uint32_t xmagic;
  uint16_t xversion;
  uint16_t type;
  uint32_t flags;
  uint32_t count;
  uint64_t id;
  uint64_t offset;
  uint32_t plen;
  uint32_t reserved;
};

static void raw_put(const struct raw *r, unsigned char *b)
{
  struct hb_wire_header h = {
    .magic = hb_le32_put(r->xmagic ^ HB_WIRE_MAGIC),
    .version = hb_le16_put((uint16_t) (r->xversion ^ HB_WIRE_VERSION)),
    .type = hb_le16_put(r->type),
    .flags = hb_le32_put(r->flags),
    .count = hb_le32_put(r->count),
    .id = hb_le64_put(r->id),
    .offset = hb_le64_put(r->offset),
    .payload_len = hb_le32_put(r->plen),
    .reserved = hb_le32_put(r->reserved),
  };
  memcpy(b, &h, sizeof h);
}

static void assert_one_line(const char *err)
{
  assert_true(err[0] != '\0');
  assert_null(strchr(err, '\n'));
}

/* ---- round trips -------------------------------------------------------- */

static const struct hb_frame valid[] = {
  { .type = HB_WIRE_HELLO, .payload_len = HB_WIRE_HELLO_SIZE },
  { .type = HB_WIRE_WRITE, .id = 1, .offset = 0, .count = 4096,
    .payload_len = 4096 },
  { .type = HB_WIRE_WRITE, .flags = HB_WIRE_F_FUA, .id = UINT64_MAX,
    .offset = 512, .count = 1, .payload_len = 1 },
  { .type = HB_WIRE_WRITE, .id = 7, .offset = UINT64_MAX - 64 * MiB,
    .count = 64 * MiB, .payload_len = 64 * MiB },
  { .type = HB_WIRE_TRIM, .id = 2, .offset = 1 << 30, .count = UINT32_MAX },
  { .type = HB_WIRE_TRIM, .flags = HB_WIRE_F_FUA, .id = 2, .count = 1 },
  { .type = HB_WIRE_ZERO, .flags = HB_WIRE_F_MAY_TRIM | HB_WIRE_F_FUA,
    .id = 3, .offset = 4096, .count = 8192 },
  { .type = HB_WIRE_FLUSH, .id = 4 },
  { .type = HB_WIRE_ACK, .id = 5 },
  { .type = HB_WIRE_NACK, .id = 6, .payload_len = HB_WIRE_NACK_SIZE },
  { .type = HB_WIRE_PING, .id = 8 },
  { .type = HB_WIRE_PONG, .id = 8 },
  { .type = HB_WIRE_STATE, .payload_len = HB_WIRE_STATE_SIZE },
  { .type = HB_WIRE_BITMAP, .offset = 0, .count = 1, .payload_len = 8 },
  { .type = HB_WIRE_BITMAP, .flags = HB_WIRE_F_LAST, .offset = 64 * 1000,
    .count = 65, .payload_len = 16 },
  { .type = HB_WIRE_BITMAP, .offset = 128, .count = 8 * MiB,
    .payload_len = MiB },
  { .type = HB_WIRE_RESYNC_REQ, .id = 9, .offset = 1 << 20,
    .count = 64 * MiB },
  { .type = HB_WIRE_RESYNC_DATA, .id = 9, .offset = 1 << 20,
    .count = 4096, .payload_len = 4096 },
  { .type = HB_WIRE_DIGEST, .flags = HB_WIRE_F_REPLY | HB_WIRE_F_VERIFY,
    .id = 10, .offset = 0, .count = 1 << 20,
    .payload_len = HB_WIRE_DIGEST_SIZE },
  { .type = HB_WIRE_PROMOTE, .id = 11 },
};

static void test_roundtrip(void **state)
{
  size_t i;

  for (i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    unsigned char buf[HB_WIRE_HDR_SIZE + 8];
    struct hb_frame out;
    char err[256] = "";
    int rc;

    rc = hb_wire_encode_header(&valid[i], buf, sizeof buf);
    assert_int_equal(rc, HB_WIRE_HDR_SIZE);
    rc = hb_wire_decode_header(buf, HB_WIRE_HDR_SIZE, &out, err, sizeof err);
    if (rc != 0)
      fail_msg("frame %zu (%s): %s", i, hb_wire_type_name(valid[i].type),
               err);
    assert_int_equal(out.type, valid[i].type);
    assert_int_equal(out.flags, valid[i].flags);
    assert_int_equal(out.count, valid[i].count);
    assert_int_equal(out.payload_len, valid[i].payload_len);
    assert_true(out.id == valid[i].id);
    assert_true(out.offset == valid[i].offset);
    /* Extra bytes after the header are the caller's business. */
    assert_int_equal(hb_wire_decode_header(buf, sizeof buf, &out, NULL, 0),
                     0);
  }
}

/* The exact bytes of one frame: pins the layout and the byte order. */
static void test_golden_bytes(void **state)
{
  static const unsigned char want[HB_WIRE_HDR_SIZE] = {
    0x48, 0x42, 0x4c, 0x4b,                         /* "HBLK" */
    0x02, 0x00,                                     /* version 2 */
    0x02, 0x00,                                     /* WRITE */
    0x01, 0x00, 0x00, 0x00,                         /* FUA */
    0x00, 0x10, 0x00, 0x00,                         /* count 4096 */
    0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* id */
    0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, /* offset 1 MiB */
    0x00, 0x10, 0x00, 0x00,                         /* payload 4096 */
    0x00, 0x00, 0x00, 0x00,                         /* reserved */
  };
  struct hb_frame f = {
    .type = HB_WIRE_WRITE, .flags = HB_WIRE_F_FUA, .count = 4096,
    .id = 0x0102030405060708ull, .offset = 1 << 20, .payload_len = 4096,
  };
  unsigned char buf[HB_WIRE_HDR_SIZE];

  assert_int_equal(hb_wire_encode_header(&f, buf, sizeof buf),
                   HB_WIRE_HDR_SIZE);
  assert_memory_equal(buf, want, sizeof want);
}

/* ---- rejections --------------------------------------------------------- */

#define R(...) ((struct raw) { __VA_ARGS__ })
#define MAGIC(v) ((uint32_t) (v) ^ HB_WIRE_MAGIC)
#define VERSION(v) ((uint16_t) ((v) ^ HB_WIRE_VERSION))

struct reject {
  const char *what;
  struct raw raw;
  int code;
  const char *msg;   /* substring of the error line */
};

static const struct reject rejects[] = {
  { "bad magic", R(.xmagic = MAGIC(0x12345678), .type = HB_WIRE_PING),
    HB_WIRE_EMAGIC, "bad magic 0x12345678" },
  { "magic byte-swapped",
    R(.xmagic = MAGIC(0x48424c4b), .type = HB_WIRE_PING),
    HB_WIRE_EMAGIC, "bad magic 0x48424c4b" },
  { "magic before version",
    R(.xmagic = MAGIC(0), .xversion = VERSION(9), .type = 999),
    HB_WIRE_EMAGIC, "bad magic" },
  { "version 1", R(.xversion = VERSION(1), .type = HB_WIRE_PING),
    HB_WIRE_EVERSION, "unsupported protocol version 1 (we speak 2)" },
  { "version 0", R(.xversion = VERSION(0), .type = HB_WIRE_PING),
    HB_WIRE_EVERSION, "unsupported protocol version 0 (we speak 2)" },
  { "version before type", R(.xversion = VERSION(3), .type = 999),
    HB_WIRE_EVERSION, "version 3" },
  { "type 0", R(.type = 0), HB_WIRE_ETYPE, "unknown frame type 0" },
  { "type 16", R(.type = 16), HB_WIRE_ETYPE, "unknown frame type 16" },
  { "type 65535", R(.type = 65535, .count = 5),
    HB_WIRE_ETYPE, "unknown frame type 65535" },
  { "type before length", R(.type = 77, .plen = UINT32_MAX),
    HB_WIRE_ETYPE, "unknown frame type 77" },
  { "reserved", R(.type = HB_WIRE_PING, .reserved = 1),
    HB_WIRE_EFIELD, "PING frame reserved field 0x1" },
  { "WRITE may-trim", R(.type = HB_WIRE_WRITE, .flags = HB_WIRE_F_MAY_TRIM,
                        .count = 512, .plen = 512),
    HB_WIRE_EFLAGS, "WRITE frame has unknown flags 0x2" },
  { "FLUSH fua", R(.type = HB_WIRE_FLUSH, .flags = HB_WIRE_F_FUA),
    HB_WIRE_EFLAGS, "FLUSH frame has unknown flags 0x1" },
  { "PING high flag", R(.type = HB_WIRE_PING, .flags = 0x80000000),
    HB_WIRE_EFLAGS, "PING frame has unknown flags 0x80000000" },
  { "WRITE too long", R(.type = HB_WIRE_WRITE, .count = 64 * MiB + 1,
                        .plen = 64 * MiB + 1),
    HB_WIRE_ELENGTH, "WRITE frame length 67108865 exceeds the limit of "
                     "67108864" },
  { "WRITE huge", R(.type = HB_WIRE_WRITE, .count = UINT32_MAX,
                    .plen = UINT32_MAX),
    HB_WIRE_ELENGTH, "WRITE frame length 4294967295 exceeds" },
  { "WRITE empty", R(.type = HB_WIRE_WRITE),
    HB_WIRE_ELENGTH, "WRITE frame with zero length" },
  { "WRITE payload short", R(.type = HB_WIRE_WRITE, .count = 4096,
                             .plen = 4095),
    HB_WIRE_ELENGTH, "WRITE frame payload length 4095 does not match its "
                     "data length 4096" },
  { "WRITE payload long", R(.type = HB_WIRE_WRITE, .count = 4096,
                            .plen = 8192),
    HB_WIRE_ELENGTH, "does not match" },
  { "RESYNC_DATA mismatch", R(.type = HB_WIRE_RESYNC_DATA, .count = 4096,
                              .plen = 0),
    HB_WIRE_ELENGTH, "RESYNC_DATA frame payload length 0" },
  { "RESYNC_REQ too long", R(.type = HB_WIRE_RESYNC_REQ,
                             .count = 64 * MiB + 1),
    HB_WIRE_ELENGTH, "RESYNC_REQ frame length 67108865 exceeds" },
  { "RESYNC_REQ payload", R(.type = HB_WIRE_RESYNC_REQ, .count = 4096,
                            .plen = 4096),
    HB_WIRE_ELENGTH, "RESYNC_REQ frame carries 4096 payload bytes" },
  { "TRIM payload", R(.type = HB_WIRE_TRIM, .count = 4096, .plen = 4096),
    HB_WIRE_ELENGTH, "TRIM frame carries 4096 payload bytes (expected none)"},
  { "TRIM empty", R(.type = HB_WIRE_TRIM),
    HB_WIRE_ELENGTH, "TRIM frame with zero length" },
  { "ZERO payload", R(.type = HB_WIRE_ZERO, .count = 1, .plen = 1),
    HB_WIRE_ELENGTH, "ZERO frame carries 1 payload bytes" },
  { "FLUSH count", R(.type = HB_WIRE_FLUSH, .count = 1),
    HB_WIRE_ELENGTH, "FLUSH frame length 1 (expected 0)" },
  { "PROMOTE count", R(.type = HB_WIRE_PROMOTE, .count = 1),
    HB_WIRE_ELENGTH, "PROMOTE frame length 1 (expected 0)" },
  { "PROMOTE payload", R(.type = HB_WIRE_PROMOTE, .plen = 8),
    HB_WIRE_ELENGTH, "PROMOTE frame carries 8 payload bytes" },
  { "PROMOTE flag", R(.type = HB_WIRE_PROMOTE, .flags = HB_WIRE_F_FUA),
    HB_WIRE_EFLAGS, "PROMOTE frame has unknown flags 0x1" },
  { "FLUSH offset", R(.type = HB_WIRE_FLUSH, .offset = 5),
    HB_WIRE_EFIELD, "FLUSH frame offset 5 (expected 0)" },
  { "FLUSH payload", R(.type = HB_WIRE_FLUSH, .plen = 1),
    HB_WIRE_ELENGTH, "FLUSH frame carries 1 payload bytes" },
  { "ACK payload", R(.type = HB_WIRE_ACK, .plen = 4),
    HB_WIRE_ELENGTH, "ACK frame carries 4 payload bytes" },
  { "PING payload", R(.type = HB_WIRE_PING, .plen = 8),
    HB_WIRE_ELENGTH, "PING frame carries 8 payload bytes" },
  { "PONG payload", R(.type = HB_WIRE_PONG, .plen = UINT32_MAX),
    HB_WIRE_ELENGTH, "PONG frame carries 4294967295 payload bytes" },
  { "NACK no payload", R(.type = HB_WIRE_NACK),
    HB_WIRE_ELENGTH, "NACK frame payload length 0 (expected 8)" },
  { "HELLO short", R(.type = HB_WIRE_HELLO, .plen = 100),
    HB_WIRE_ELENGTH, "HELLO frame payload length 100 (expected 192)" },
  { "HELLO long", R(.type = HB_WIRE_HELLO, .plen = 64 * MiB),
    HB_WIRE_ELENGTH, "HELLO frame payload length 67108864" },
  { "STATE payload", R(.type = HB_WIRE_STATE, .plen = 9),
    HB_WIRE_ELENGTH, "STATE frame payload length 9 (expected 8)" },
  { "DIGEST payload", R(.type = HB_WIRE_DIGEST, .count = 4096, .plen = 32),
    HB_WIRE_ELENGTH, "DIGEST frame payload length 32 (expected 72)" },
  { "DIGEST empty range", R(.type = HB_WIRE_DIGEST, .plen = 72),
    HB_WIRE_ELENGTH, "DIGEST frame with zero length" },
  { "BITMAP payload", R(.type = HB_WIRE_BITMAP, .count = 65, .plen = 8),
    HB_WIRE_ELENGTH, "BITMAP frame payload length 8 does not match 65 bits "
                     "(expected 16)" },
  { "BITMAP too many bits", R(.type = HB_WIRE_BITMAP, .count = 8 * MiB + 1,
                              .plen = MiB + 8),
    HB_WIRE_ELENGTH, "BITMAP frame length 8388609 exceeds the limit of "
                     "8388608" },
  { "BITMAP offset", R(.type = HB_WIRE_BITMAP, .offset = 63, .count = 1,
                       .plen = 8),
    HB_WIRE_EFIELD, "BITMAP frame bit offset 63 is not a multiple of 64" },
  { "BITMAP overflow", R(.type = HB_WIRE_BITMAP, .offset = UINT64_MAX - 63,
                         .count = 64, .plen = 8),
    HB_WIRE_ERANGE, "BITMAP frame range overflows" },
  { "WRITE overflow", R(.type = HB_WIRE_WRITE, .offset = UINT64_MAX - 10,
                        .count = 4096, .plen = 4096),
    HB_WIRE_ERANGE, "WRITE frame range overflows: offset "
                    "18446744073709551605 + length 4096" },
  { "TRIM overflow", R(.type = HB_WIRE_TRIM, .offset = UINT64_MAX,
                       .count = 1),
    HB_WIRE_ERANGE, "TRIM frame range overflows" },
  { "ZERO overflow", R(.type = HB_WIRE_ZERO, .offset = UINT64_MAX - 100,
                       .count = UINT32_MAX),
    HB_WIRE_ERANGE, NULL },
  { "RESYNC_REQ overflow", R(.type = HB_WIRE_RESYNC_REQ,
                             .offset = UINT64_MAX - 1, .count = 2),
    HB_WIRE_ERANGE, "RESYNC_REQ frame range overflows" },
  { "DIGEST overflow", R(.type = HB_WIRE_DIGEST, .offset = UINT64_MAX,
                         .count = 512, .plen = 72),
    HB_WIRE_ERANGE, "DIGEST frame range overflows" },
  { "length before overflow", R(.type = HB_WIRE_WRITE, .offset = UINT64_MAX,
                                .count = 4096, .plen = 1),
    HB_WIRE_ELENGTH, "does not match" },
};

static void test_rejects(void **state)
{
  size_t i;

  for (i = 0; i < sizeof rejects / sizeof rejects[0]; i++) {
    const struct reject *r = &rejects[i];
    unsigned char buf[HB_WIRE_HDR_SIZE];
    struct hb_frame out = { .type = 0xdead };
    char err[256] = "";
    int rc;

    raw_put(&r->raw, buf);
    rc = hb_wire_decode_header(buf, sizeof buf, &out, err, sizeof err);
    if (rc != r->code)
      fail_msg("%s: got %d (%s), want %d", r->what, rc, err, r->code);
    assert_one_line(err);
    if (r->msg && !strstr(err, r->msg))
      fail_msg("%s: message \"%s\" lacks \"%s\"", r->what, err, r->msg);
    assert_int_equal(out.type, 0xdead);  /* untouched on failure */
  }
}

static void test_truncated(void **state)
{
  unsigned char buf[HB_WIRE_HDR_SIZE];
  struct hb_frame f = { .type = HB_WIRE_PING, .id = 1 }, out;
  char err[256];
  size_t len;

  assert_int_equal(hb_wire_encode_header(&f, buf, sizeof buf),
                   HB_WIRE_HDR_SIZE);
  for (len = 0; len < HB_WIRE_HDR_SIZE; len++) {
    err[0] = '\0';
    assert_int_equal(hb_wire_decode_header(buf, len, &out, err, sizeof err),
                     HB_WIRE_ETRUNC);
    assert_one_line(err);
  }
  hb_wire_decode_header(buf, 39, &out, err, sizeof err);
  assert_string_equal(err, "truncated frame header: 39 bytes (need 40)");
  /* No error buffer, or a tiny one, is fine. */
  assert_int_equal(hb_wire_decode_header(buf, 3, &out, NULL, 0),
                   HB_WIRE_ETRUNC);
  assert_int_equal(hb_wire_decode_header(buf, 3, &out, err, 4),
                   HB_WIRE_ETRUNC);
  assert_string_equal(err, "tru");
}

/* The encoder refuses what the decoder would. */
static void test_encode_rejects(void **state)
{
  unsigned char buf[HB_WIRE_HDR_SIZE];
  struct hb_frame f;
  size_t i;

  for (i = 0; i < sizeof rejects / sizeof rejects[0]; i++) {
    const struct raw *r = &rejects[i].raw;

    if (r->xmagic || r->xversion || r->reserved)
      continue;
    f = (struct hb_frame) { .type = r->type, .flags = r->flags,
                            .count = r->count, .id = r->id,
                            .offset = r->offset, .payload_len = r->plen };
    if (hb_wire_encode_header(&f, buf, sizeof buf) != rejects[i].code)
      fail_msg("encode accepted %s", rejects[i].what);
  }
  f = valid[1];
  assert_int_equal(hb_wire_encode_header(&f, buf, HB_WIRE_HDR_SIZE - 1),
                   -ENOBUFS);
}

static void test_check_range(void **state)
{
  const uint64_t size = 1 << 30;
  struct hb_frame w = { .type = HB_WIRE_WRITE, .offset = size - 4096,
                        .count = 4096, .payload_len = 4096 };
  struct hb_frame z = { .type = HB_WIRE_ZERO, .offset = size,
                        .count = 1 };
  struct hb_frame fl = { .type = HB_WIRE_FLUSH };
  struct hb_frame bm = { .type = HB_WIRE_BITMAP, .offset = size * 64,
                         .count = 64, .payload_len = 8 };
  char err[256] = "";

  assert_int_equal(hb_wire_check_range(&w, size, err, sizeof err), 0);
  w.offset++;
  assert_int_equal(hb_wire_check_range(&w, size, err, sizeof err),
                   HB_WIRE_ERANGE);
  assert_string_equal(err, "WRITE frame range [1073737729, 1073741825) "
                      "exceeds the exported size 1073741824");
  assert_int_equal(hb_wire_check_range(&z, size, err, sizeof err),
                   HB_WIRE_ERANGE);
  assert_int_equal(hb_wire_check_range(&z, size + 1, err, sizeof err), 0);
  assert_int_equal(hb_wire_check_range(&fl, 0, err, sizeof err), 0);
  assert_int_equal(hb_wire_check_range(&bm, 0, err, sizeof err), 0);
  w.offset = UINT64_MAX;
  assert_int_equal(hb_wire_check_range(&w, UINT64_MAX, err, sizeof err),
                   HB_WIRE_ERANGE);
  assert_true(strstr(err, "overflows") != NULL);
  assert_true(hb_wire_type_has_range(HB_WIRE_DIGEST));
  assert_false(hb_wire_type_has_range(HB_WIRE_BITMAP));
  assert_false(hb_wire_type_has_range(0));
}

static void test_names(void **state)
{
  unsigned t;

  for (t = HB_WIRE_TYPE_MIN; t <= HB_WIRE_TYPE_MAX; t++)
    assert_string_not_equal(hb_wire_type_name(t), "?");
  assert_string_equal(hb_wire_type_name(HB_WIRE_RESYNC_DATA), "RESYNC_DATA");
  assert_string_equal(hb_wire_type_name(0), "?");
  assert_string_equal(hb_wire_type_name(HB_WIRE_TYPE_MAX + 1), "?");
  assert_string_equal(hb_wire_role_name(HB_WIRE_ROLE_PRIMARY), "Primary");
  assert_string_equal(hb_wire_disk_name(HB_WIRE_DISK_OUTDATED), "Outdated");
  assert_string_equal(hb_wire_disk_name(0), "?");
}

/* ---- HELLO -------------------------------------------------------------- */

static struct hb_hello hello_alpha(void)
{
  struct hb_hello h = {
    .proto_version = HB_WIRE_VERSION,
    .node_id = 1,
    .role = HB_WIRE_ROLE_PRIMARY,
    .disk = HB_WIRE_DISK_UPTODATE,
    .flags = HB_HELLO_F_CONSISTENT,
    .bm_granularity = 4096,
    .exported_size = 10ull << 30,
    .gen = { 0x1111111111111111ull, 0x2222, 0x3333, 0xffffffffffffffffull },
  };

  strcpy(h.resource, "r0");
  strcpy(h.node_name, "alpha");
  return h;
}

static void test_hello_roundtrip(void **state)
{
  struct hb_hello h = hello_alpha(), out;
  unsigned char buf[HB_WIRE_HELLO_SIZE + 1];
  char err[256] = "";

  assert_int_equal(hb_wire_encode_hello(&h, buf, sizeof buf),
                   HB_WIRE_HELLO_SIZE);
  assert_int_equal(hb_wire_decode_hello(buf, HB_WIRE_HELLO_SIZE, &out, err,
                                        sizeof err), 0);
  assert_memory_equal(&h, &out, sizeof h);
  /* Byte positions from docs/wire-protocol.md. */
  assert_int_equal(buf[0], 2);                         /* proto version */
  assert_int_equal(buf[4], 1);                         /* node id */
  assert_int_equal(buf[6], HB_WIRE_ROLE_PRIMARY);
  assert_int_equal(buf[7], HB_WIRE_DISK_UPTODATE);
  assert_int_equal(buf[16 + 4], 0x02);                 /* 10 GiB */
  assert_int_equal(buf[24], 0x11);                     /* gen[0] */
  assert_memory_equal(buf + 56, "r0\0\0", 4);
  assert_memory_equal(buf + 120, "alpha\0", 6);

  /* Longest names fit; one more byte does not. */
  memset(h.resource, 'x', HB_WIRE_NAME_MAX);
  h.resource[HB_WIRE_NAME_MAX] = '\0';
  assert_int_equal(hb_wire_encode_hello(&h, buf, sizeof buf),
                   HB_WIRE_HELLO_SIZE);
  assert_int_equal(hb_wire_decode_hello(buf, HB_WIRE_HELLO_SIZE, &out, err,
                                        sizeof err), 0);
  assert_string_equal(out.resource, h.resource);
  memset(h.resource, 'x', sizeof h.resource);
  assert_int_equal(hb_wire_encode_hello(&h, buf, sizeof buf),
                   HB_WIRE_EFIELD);
  h = hello_alpha();
  h.node_name[0] = '\0';
  assert_int_equal(hb_wire_encode_hello(&h, buf, sizeof buf),
                   HB_WIRE_EFIELD);
  h = hello_alpha();
  h.role = 0;
  assert_int_equal(hb_wire_encode_hello(&h, buf, sizeof buf),
                   HB_WIRE_EFIELD);
  h = hello_alpha();
  assert_int_equal(hb_wire_encode_hello(&h, buf, HB_WIRE_HELLO_SIZE - 1),
                   -ENOBUFS);
}

struct hello_reject {
  const char *what;
  size_t at;        /* byte to set */
  unsigned char value;
  int code;
  const char *msg;
};

static const struct hello_reject hello_rejects[] = {
  { "version", 0, 1, HB_WIRE_EVERSION,
    "unsupported protocol version 1 in HELLO (we speak 2)" },
  { "role 0", 6, 0, HB_WIRE_EFIELD, "HELLO has unknown role 0" },
  { "role 3", 6, 3, HB_WIRE_EFIELD, "HELLO has unknown role 3" },
  { "disk 0", 7, 0, HB_WIRE_EFIELD, "HELLO has unknown disk state 0" },
  { "disk 6", 7, 6, HB_WIRE_EFIELD, "HELLO has unknown disk state 6" },
  { "flags", 11, 0x80, HB_WIRE_EFLAGS, "HELLO has unknown flags 0x80000000" },
  { "reserved", 190, 1, HB_WIRE_EFIELD, "HELLO reserved field is not zero" },
  { "resource empty", 56, 0, HB_WIRE_EFIELD, "HELLO resource name is empty" },
  { "resource not padded", 60, 'z', HB_WIRE_EFIELD,
    "HELLO resource name is not NUL-padded" },
  { "resource control char", 57, '\n', HB_WIRE_EFIELD,
    "HELLO resource name has a non-printable byte 0x0a at 1" },
  { "resource high byte", 56, 0xc3, HB_WIRE_EFIELD, "non-printable byte 0xc3" },
  { "node name empty", 120, 0, HB_WIRE_EFIELD, "HELLO node name is empty" },
  { "node name not padded", 183, 1, HB_WIRE_EFIELD,
    "HELLO node name is not NUL-padded" },
};

static void test_hello_rejects(void **state)
{
  struct hb_hello h = hello_alpha(), out;
  unsigned char good[HB_WIRE_HELLO_SIZE], buf[HB_WIRE_HELLO_SIZE + 1];
  char err[256];
  size_t i;

  assert_int_equal(hb_wire_encode_hello(&h, good, sizeof good),
                   HB_WIRE_HELLO_SIZE);
  for (i = 0; i < sizeof hello_rejects / sizeof hello_rejects[0]; i++) {
    const struct hello_reject *r = &hello_rejects[i];
    int rc;

    memcpy(buf, good, sizeof good);
    buf[r->at] = r->value;
    err[0] = '\0';
    rc = hb_wire_decode_hello(buf, HB_WIRE_HELLO_SIZE, &out, err, sizeof err);
    if (rc != r->code || !strstr(err, r->msg))
      fail_msg("%s: got %d \"%s\", want %d \"%s\"", r->what, rc, err,
               r->code, r->msg);
    assert_one_line(err);
  }

  /* A name filling all 64 bytes has no NUL. */
  memcpy(buf, good, sizeof good);
  memset(buf + 56, 'r', 64);
  assert_int_equal(hb_wire_decode_hello(buf, HB_WIRE_HELLO_SIZE, &out, err,
                                        sizeof err), HB_WIRE_EFIELD);
  assert_string_equal(err, "HELLO resource name is not NUL-terminated");

  assert_int_equal(hb_wire_decode_hello(good, HB_WIRE_HELLO_SIZE - 1, &out,
                                        err, sizeof err), HB_WIRE_ETRUNC);
  assert_string_equal(err, "HELLO payload is 191 bytes (expected 192)");
  memcpy(buf, good, sizeof good);
  assert_int_equal(hb_wire_decode_hello(buf, sizeof buf, &out, err,
                                        sizeof err), HB_WIRE_ELENGTH);
}

static void test_check_hello(void **state)
{
  struct hb_hello a = hello_alpha(), b = hello_alpha();
  char err[256] = "";

  b.node_id = 2;
  strcpy(b.node_name, "bravo");
  b.role = HB_WIRE_ROLE_SECONDARY;
  assert_int_equal(hb_wire_check_hello(&a, &b, err, sizeof err), 0);
  assert_int_equal(hb_wire_check_hello(&b, &a, err, sizeof err), 0);

  b.proto_version = 1;
  assert_int_equal(hb_wire_check_hello(&a, &b, err, sizeof err),
                   HB_WIRE_EVERSION);
  assert_string_equal(err, "peer bravo speaks protocol version 1, "
                      "we speak 2");
  b.proto_version = HB_WIRE_VERSION;

  strcpy(b.resource, "r1");
  assert_int_equal(hb_wire_check_hello(&a, &b, err, sizeof err),
                   HB_WIRE_ERESOURCE);
  assert_string_equal(err, "peer bravo serves resource 'r1', we serve 'r0'");
  strcpy(b.resource, "r0");

  b.exported_size = a.exported_size - 4096;
  assert_int_equal(hb_wire_check_hello(&a, &b, err, sizeof err),
                   HB_WIRE_ESIZE);
  assert_string_equal(err, "peer bravo exports 10737414144 bytes of "
                      "resource 'r0', we export 10737418240");
  b.exported_size = a.exported_size;

  b.node_id = 1;
  assert_int_equal(hb_wire_check_hello(&a, &b, err, sizeof err),
                   HB_WIRE_ENODE);
  assert_true(strstr(err, "has our node id 1") != NULL);
}

/* ---- STATE, NACK, DIGEST ------------------------------------------------ */

static void test_state(void **state)
{
  struct hb_state_msg s = { .role = HB_WIRE_ROLE_SECONDARY,
                            .disk = HB_WIRE_DISK_INCONSISTENT,
                            .flags = HB_HELLO_F_CRASHED_PRIMARY }, out;
  unsigned char buf[HB_WIRE_STATE_SIZE];
  char err[256];

  assert_int_equal(hb_wire_encode_state(&s, buf, sizeof buf),
                   HB_WIRE_STATE_SIZE);
  assert_int_equal(hb_wire_decode_state(buf, sizeof buf, &out, err,
                                        sizeof err), 0);
  assert_int_equal(out.role, s.role);
  assert_int_equal(out.disk, s.disk);
  assert_int_equal(out.flags, s.flags);

  buf[0] = 9;
  assert_int_equal(hb_wire_decode_state(buf, sizeof buf, &out, err,
                                        sizeof err), HB_WIRE_EFIELD);
  assert_string_equal(err, "STATE has unknown role 9");
  buf[0] = HB_WIRE_ROLE_PRIMARY;
  buf[1] = 0;
  assert_int_equal(hb_wire_decode_state(buf, sizeof buf, &out, err,
                                        sizeof err), HB_WIRE_EFIELD);
  buf[1] = HB_WIRE_DISK_FAILED;
  buf[2] = 1;
  assert_int_equal(hb_wire_decode_state(buf, sizeof buf, &out, err,
                                        sizeof err), HB_WIRE_EFIELD);
  buf[2] = 0;
  buf[7] = 0x10;
  assert_int_equal(hb_wire_decode_state(buf, sizeof buf, &out, err,
                                        sizeof err), HB_WIRE_EFLAGS);
  assert_int_equal(hb_wire_decode_state(buf, 7, &out, err, sizeof err),
                   HB_WIRE_ETRUNC);
  s.disk = 0;
  assert_int_equal(hb_wire_encode_state(&s, buf, sizeof buf),
                   HB_WIRE_EFIELD);
}

static void test_nack(void **state)
{
  unsigned char buf[HB_WIRE_NACK_SIZE];
  char err[256];
  int e = 0;

  assert_int_equal(hb_wire_encode_nack(EIO, buf, sizeof buf),
                   HB_WIRE_NACK_SIZE);
  assert_int_equal(hb_wire_decode_nack(buf, sizeof buf, &e, err, sizeof err),
                   0);
  assert_int_equal(e, EIO);
  assert_int_equal(hb_wire_encode_nack(0, buf, sizeof buf), HB_WIRE_EFIELD);
  assert_int_equal(hb_wire_encode_nack(-EIO, buf, sizeof buf),
                   HB_WIRE_EFIELD);
  assert_int_equal(hb_wire_encode_nack(4096, buf, sizeof buf),
                   HB_WIRE_EFIELD);
  memset(buf, 0xff, 4);
  assert_int_equal(hb_wire_decode_nack(buf, sizeof buf, &e, err, sizeof err),
                   HB_WIRE_EFIELD);
  assert_string_equal(err, "NACK error 4294967295 is not an errno");
  hb_wire_encode_nack(ENOSPC, buf, sizeof buf);
  buf[5] = 1;
  assert_int_equal(hb_wire_decode_nack(buf, sizeof buf, &e, err, sizeof err),
                   HB_WIRE_EFIELD);
  assert_int_equal(hb_wire_decode_nack(buf, 9, &e, err, sizeof err),
                   HB_WIRE_ELENGTH);
}

static void test_digest(void **state)
{
  struct hb_digest d = { .alg = HB_DIGEST_SHA256, .len = 32 }, out;
  unsigned char buf[HB_WIRE_DIGEST_SIZE];
  char err[256];
  unsigned i;

  for (i = 0; i < 32; i++)
    d.bytes[i] = (uint8_t) (i * 7 + 1);
  assert_int_equal(hb_wire_encode_digest(&d, buf, sizeof buf),
                   HB_WIRE_DIGEST_SIZE);
  assert_int_equal(hb_wire_decode_digest(buf, sizeof buf, &out, err,
                                         sizeof err), 0);
  assert_int_equal(out.alg, HB_DIGEST_SHA256);
  assert_int_equal(out.len, 32);
  assert_memory_equal(out.bytes, d.bytes, 32);

  buf[8 + 40] = 1;  /* past the digest */
  assert_int_equal(hb_wire_decode_digest(buf, sizeof buf, &out, err,
                                         sizeof err), HB_WIRE_EFIELD);
  assert_string_equal(err, "DIGEST is not zero-padded");
  buf[8 + 40] = 0;
  buf[2] = 4;       /* wrong length for SHA-256 */
  assert_int_equal(hb_wire_decode_digest(buf, sizeof buf, &out, err,
                                         sizeof err), HB_WIRE_ELENGTH);
  assert_string_equal(err, "DIGEST length 4 (algorithm 2 gives 32)");
  buf[2] = 32;
  buf[0] = 9;
  assert_int_equal(hb_wire_decode_digest(buf, sizeof buf, &out, err,
                                         sizeof err), HB_WIRE_EFIELD);
  assert_string_equal(err, "DIGEST has unknown algorithm 9");
  buf[0] = HB_DIGEST_SHA256;
  buf[3] = 1;
  assert_int_equal(hb_wire_decode_digest(buf, sizeof buf, &out, err,
                                         sizeof err), HB_WIRE_EFIELD);
  d.len = 4;
  assert_int_equal(hb_wire_encode_digest(&d, buf, sizeof buf),
                   HB_WIRE_EFIELD);
  d.alg = HB_DIGEST_CRC32C;
  assert_int_equal(hb_wire_encode_digest(&d, buf, sizeof buf),
                   HB_WIRE_DIGEST_SIZE);
  assert_int_equal(hb_wire_decode_digest(buf, sizeof buf, &out, err,
                                         sizeof err), 0);
  assert_int_equal(out.len, 4);
}

/* ---- mini fuzz ---------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
  /* xorshift64*: fixed seed, same run every time. */
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545f4914f6cdd1dull;
}

static void fill_random(unsigned char *b, size_t n)
{
  size_t i;

  for (i = 0; i < n; i++)
    b[i] = (unsigned char) rnd();
}

/* Flip 1-4 random bits, or overwrite a random byte. */
static void mutate(unsigned char *b, size_t n)
{
  unsigned k = 1 + (unsigned) (rnd() % 4), i;

  if (rnd() % 4 == 0) {
    b[rnd() % n] = (unsigned char) rnd();
    return;
  }
  for (i = 0; i < k; i++) {
    size_t bit = rnd() % (n * 8);

    b[bit / 8] ^= (unsigned char) (1u << (bit % 8));
  }
}

/* Decode; accepted headers must re-encode to the same bytes (the format
 * has one spelling per frame), rejected ones leave one line. */
static unsigned fuzz_header_one(const unsigned char *buf)
{
  unsigned char again[HB_WIRE_HDR_SIZE];
  struct hb_frame f;
  char err[256] = "";
  int rc;

  rc = hb_wire_decode_header(buf, HB_WIRE_HDR_SIZE, &f, err, sizeof err);
  if (rc < 0) {
    assert_one_line(err);
    return 0;
  }
  assert_int_equal(hb_wire_encode_header(&f, again, sizeof again),
                   HB_WIRE_HDR_SIZE);
  assert_memory_equal(again, buf, HB_WIRE_HDR_SIZE);
  (void) hb_wire_check_range(&f, rnd(), err, sizeof err);
  return 1;
}

static void test_fuzz_header(void **state)
{
  unsigned char buf[HB_WIRE_HDR_SIZE];
  unsigned accepted = 0, i, v;

  for (i = 0; i < 100000; i++) {
    fill_random(buf, sizeof buf);
    accepted += fuzz_header_one(buf);
  }
  /* Random bytes virtually never carry the magic. */
  assert_true(accepted == 0);

  for (i = 0; i < 200000; i++) {
    v = (unsigned) (rnd() % (sizeof valid / sizeof valid[0]));
    assert_int_equal(hb_wire_encode_header(&valid[v], buf, sizeof buf),
                     HB_WIRE_HDR_SIZE);
    mutate(buf, sizeof buf);
    accepted += fuzz_header_one(buf);
  }
  /* Flips in id or offset stay valid: the mutations reach the checks. */
  assert_true(accepted > 1000);
  assert_true(accepted < 200000);
}

static void test_fuzz_payloads(void **state)
{
  unsigned char good[HB_WIRE_HELLO_SIZE], buf[HB_WIRE_HELLO_SIZE];
  unsigned char again[HB_WIRE_HELLO_SIZE];
  struct hb_hello h = hello_alpha(), out;
  struct hb_state_msg s;
  struct hb_digest d;
  char err[256];
  unsigned i, ok = 0;
  int e;

  assert_int_equal(hb_wire_encode_hello(&h, good, sizeof good),
                   HB_WIRE_HELLO_SIZE);
  for (i = 0; i < 100000; i++) {
    size_t len;

    if (i % 2) {
      fill_random(buf, sizeof buf);
    } else {
      memcpy(buf, good, sizeof good);
      mutate(buf, sizeof buf);
    }
    len = (i % 17 == 0) ? rnd() % sizeof buf : sizeof buf;
    err[0] = '\0';
    if (hb_wire_decode_hello(buf, len, &out, err, sizeof err) == 0) {
      ok++;
      assert_int_equal(hb_wire_encode_hello(&out, again, sizeof again),
                       HB_WIRE_HELLO_SIZE);
      assert_memory_equal(again, buf, sizeof again);
    } else {
      assert_one_line(err);
    }
    err[0] = '\0';
    if (hb_wire_decode_state(buf, i % 9, &s, err, sizeof err) < 0)
      assert_one_line(err);
    err[0] = '\0';
    if (hb_wire_decode_nack(buf, i % 9, &e, err, sizeof err) < 0)
      assert_one_line(err);
    else
      assert_true(e >= 1 && e <= 4095);
    err[0] = '\0';
    if (hb_wire_decode_digest(buf, HB_WIRE_DIGEST_SIZE - (i % 3 == 0), &d,
                              err, sizeof err) < 0)
      assert_one_line(err);
    else
      assert_true(d.len == 4 || d.len == 32);
  }
  assert_true(ok > 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_roundtrip),
    cmocka_unit_test(test_golden_bytes),
    cmocka_unit_test(test_rejects),
    cmocka_unit_test(test_truncated),
    cmocka_unit_test(test_encode_rejects),
    cmocka_unit_test(test_check_range),
    cmocka_unit_test(test_names),
    cmocka_unit_test(test_hello_roundtrip),
    cmocka_unit_test(test_hello_rejects),
    cmocka_unit_test(test_check_hello),
    cmocka_unit_test(test_state),
    cmocka_unit_test(test_nack),
    cmocka_unit_test(test_digest),
    cmocka_unit_test(test_fuzz_header),
    cmocka_unit_test(test_fuzz_payloads),
  };

  return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
