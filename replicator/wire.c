/* The peer wire protocol: encode and decode, pure, no I/O. See wire.h and
 * docs/wire-protocol.md. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "wire.h"

/* The layout is the protocol: pin every size and the offsets that
 * docs/wire-protocol.md lists. */
_Static_assert(sizeof(struct hb_le16) == 2, "le16");
_Static_assert(sizeof(struct hb_le32) == 4, "le32");
_Static_assert(sizeof(struct hb_le64) == 8, "le64");
_Static_assert(sizeof(struct hb_wire_header) == HB_WIRE_HDR_SIZE, "header");
_Static_assert(offsetof(struct hb_wire_header, version) == 4, "version");
_Static_assert(offsetof(struct hb_wire_header, type) == 6, "type");
_Static_assert(offsetof(struct hb_wire_header, flags) == 8, "flags");
_Static_assert(offsetof(struct hb_wire_header, count) == 12, "count");
_Static_assert(offsetof(struct hb_wire_header, id) == 16, "id");
_Static_assert(offsetof(struct hb_wire_header, offset) == 24, "offset");
_Static_assert(offsetof(struct hb_wire_header, payload_len) == 32, "plen");
_Static_assert(offsetof(struct hb_wire_header, reserved) == 36, "reserved");
_Static_assert(sizeof(struct hb_wire_hello) == HB_WIRE_HELLO_SIZE, "hello");
_Static_assert(offsetof(struct hb_wire_hello, node_id) == 4, "node_id");
_Static_assert(offsetof(struct hb_wire_hello, role) == 6, "role");
_Static_assert(offsetof(struct hb_wire_hello, disk) == 7, "disk");
_Static_assert(offsetof(struct hb_wire_hello, flags) == 8, "hflags");
_Static_assert(offsetof(struct hb_wire_hello, bm_granularity) == 12, "gran");
_Static_assert(offsetof(struct hb_wire_hello, exported_size) == 16, "size");
_Static_assert(offsetof(struct hb_wire_hello, gen) == 24, "gen");
_Static_assert(offsetof(struct hb_wire_hello, resource) == 56, "resource");
_Static_assert(offsetof(struct hb_wire_hello, node_name) == 120, "node");
_Static_assert(offsetof(struct hb_wire_hello, reserved) == 184, "hreserved");
_Static_assert(sizeof(struct hb_wire_state) == HB_WIRE_STATE_SIZE, "state");
_Static_assert(sizeof(struct hb_wire_nack) == HB_WIRE_NACK_SIZE, "nack");
_Static_assert(sizeof(struct hb_wire_digest) == HB_WIRE_DIGEST_SIZE, "digest");
_Static_assert(offsetof(struct hb_wire_digest, digest) == 8, "digest bytes");
_Static_assert(HB_WIRE_MAX_BITMAP % 8 == 0, "bitmap words");

/* What a type's count, offset and payload may be. */
enum count_rule {
  COUNT_NONE,   /* count and offset are zero */
  COUNT_BYTES,  /* 1..max bytes of device range at offset */
  COUNT_BITS,   /* 1..max bits of the bitmap at bit offset (multiple of 64) */
};
enum payload_rule {
  PAYLOAD_NONE,   /* no payload */
  PAYLOAD_FIXED,  /* exactly `fixed` bytes */
  PAYLOAD_COUNT,  /* exactly count bytes (data) */
  PAYLOAD_BITS,   /* count bits in whole le64 words */
};

struct type_rule {
  const char *name;
  uint32_t flags;             /* flags the type accepts */
  enum count_rule count;
  uint32_t max_count;
  enum payload_rule payload;
  uint32_t fixed;
  bool range;                 /* hb_wire_check_range applies */
};

static const struct type_rule rules[HB_WIRE_TYPE_MAX + 1] = {
  [HB_WIRE_HELLO] = { "HELLO", 0, COUNT_NONE, 0,
                      PAYLOAD_FIXED, HB_WIRE_HELLO_SIZE, false },
  [HB_WIRE_WRITE] = { "WRITE", HB_WIRE_F_FUA, COUNT_BYTES, HB_WIRE_MAX_DATA,
                      PAYLOAD_COUNT, 0, true },
  [HB_WIRE_TRIM] = { "TRIM", HB_WIRE_F_FUA, COUNT_BYTES, UINT32_MAX,
                     PAYLOAD_NONE, 0, true },
  [HB_WIRE_ZERO] = { "ZERO", HB_WIRE_F_FUA | HB_WIRE_F_MAY_TRIM, COUNT_BYTES,
                     UINT32_MAX, PAYLOAD_NONE, 0, true },
  [HB_WIRE_FLUSH] = { "FLUSH", 0, COUNT_NONE, 0, PAYLOAD_NONE, 0, false },
  [HB_WIRE_ACK] = { "ACK", 0, COUNT_NONE, 0, PAYLOAD_NONE, 0, false },
  [HB_WIRE_NACK] = { "NACK", 0, COUNT_NONE, 0,
                     PAYLOAD_FIXED, HB_WIRE_NACK_SIZE, false },
  [HB_WIRE_PING] = { "PING", 0, COUNT_NONE, 0, PAYLOAD_NONE, 0, false },
  [HB_WIRE_PONG] = { "PONG", 0, COUNT_NONE, 0, PAYLOAD_NONE, 0, false },
  [HB_WIRE_STATE] = { "STATE", 0, COUNT_NONE, 0,
                      PAYLOAD_FIXED, HB_WIRE_STATE_SIZE, false },
  [HB_WIRE_BITMAP] = { "BITMAP", HB_WIRE_F_LAST, COUNT_BITS,
                       HB_WIRE_MAX_BITMAP * 8, PAYLOAD_BITS, 0, false },
  [HB_WIRE_RESYNC_REQ] = { "RESYNC_REQ", 0, COUNT_BYTES, HB_WIRE_MAX_DATA,
                           PAYLOAD_NONE, 0, true },
  [HB_WIRE_RESYNC_DATA] = { "RESYNC_DATA", 0, COUNT_BYTES, HB_WIRE_MAX_DATA,
                            PAYLOAD_COUNT, 0, true },
  [HB_WIRE_DIGEST] = { "DIGEST", HB_WIRE_F_REPLY | HB_WIRE_F_VERIFY,
                       COUNT_BYTES, HB_WIRE_MAX_DATA,
                       PAYLOAD_FIXED, HB_WIRE_DIGEST_SIZE, true },
  [HB_WIRE_PROMOTE] = { "PROMOTE", 0, COUNT_NONE, 0, PAYLOAD_NONE, 0, false },
};

static const struct type_rule *rule_of(unsigned type)
{
  if (type < HB_WIRE_TYPE_MIN || type > HB_WIRE_TYPE_MAX)
    return NULL;
  return &rules[type];
}

const char *hb_wire_type_name(unsigned type)
{
  const struct type_rule *r = rule_of(type);

  return r ? r->name : "?";
}

bool hb_wire_type_has_range(unsigned type)
{
  const struct type_rule *r = rule_of(type);

  return r && r->range;
}

const char *hb_wire_role_name(unsigned role)
{
  switch (role) {
  case HB_WIRE_ROLE_PRIMARY: return "Primary";
  case HB_WIRE_ROLE_SECONDARY: return "Secondary";
  default: return "?";
  }
}

const char *hb_wire_disk_name(unsigned disk)
{
  switch (disk) {
  case HB_WIRE_DISK_UPTODATE: return "UpToDate";
  case HB_WIRE_DISK_INCONSISTENT: return "Inconsistent";
  case HB_WIRE_DISK_OUTDATED: return "Outdated";
  case HB_WIRE_DISK_DISKLESS: return "Diskless";
  case HB_WIRE_DISK_FAILED: return "Failed";
  default: return "?";
  }
}

static bool role_valid(unsigned role)
{
  return role == HB_WIRE_ROLE_PRIMARY || role == HB_WIRE_ROLE_SECONDARY;
}

static bool disk_valid(unsigned disk)
{
  return disk >= HB_WIRE_DISK_UPTODATE && disk <= HB_WIRE_DISK_FAILED;
}

/* ---- header ------------------------------------------------------------- */

/* Length rules: the count against its limit, then the payload length. */
static int check_lengths(const struct type_rule *r, const struct hb_frame *f,
                         char *err, size_t errlen)
{
  switch (r->count) {
  case COUNT_NONE:
    if (f->count != 0)
      return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                     "%s frame length %" PRIu32 " (expected 0)",
                     r->name, f->count);
    break;
  case COUNT_BYTES:
  case COUNT_BITS:
    if (f->count > r->max_count)
      return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                     "%s frame length %" PRIu32 " exceeds the limit of %"
                     PRIu32, r->name, f->count, r->max_count);
    if (f->count == 0)
      return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                     "%s frame with zero length", r->name);
    break;
  }

  switch (r->payload) {
  case PAYLOAD_NONE:
    if (f->payload_len != 0)
      return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                     "%s frame carries %" PRIu32 " payload bytes "
                     "(expected none)", r->name, f->payload_len);
    break;
  case PAYLOAD_FIXED:
    if (f->payload_len != r->fixed)
      return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                     "%s frame payload length %" PRIu32 " (expected %"
                     PRIu32 ")", r->name, f->payload_len, r->fixed);
    break;
  case PAYLOAD_COUNT:
    if (f->payload_len != f->count)
      return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                     "%s frame payload length %" PRIu32 " does not match "
                     "its data length %" PRIu32,
                     r->name, f->payload_len, f->count);
    break;
  case PAYLOAD_BITS:
    if (f->payload_len != hb_wire_bitmap_payload_len(f->count))
      return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                     "%s frame payload length %" PRIu32 " does not match "
                     "%" PRIu32 " bits (expected %" PRIu32 ")",
                     r->name, f->payload_len, f->count,
                     hb_wire_bitmap_payload_len(f->count));
    break;
  }
  return 0;
}

static int check_offset(const struct type_rule *r, const struct hb_frame *f,
                        char *err, size_t errlen)
{
  uint64_t end;

  switch (r->count) {
  case COUNT_NONE:
    if (f->offset != 0)
      return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                     "%s frame offset %" PRIu64 " (expected 0)",
                     r->name, f->offset);
    return 0;
  case COUNT_BITS:
    if (f->offset % 64 != 0)
      return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                     "%s frame bit offset %" PRIu64
                     " is not a multiple of 64", r->name, f->offset);
    break;
  case COUNT_BYTES:
    break;
  }
  if (__builtin_add_overflow(f->offset, (uint64_t) f->count, &end))
    return hb_fail(err, errlen, -HB_WIRE_ERANGE,
                   "%s frame range overflows: offset %" PRIu64
                   " + length %" PRIu32, r->name, f->offset, f->count);
  return 0;
}

int hb_wire_check_frame(const struct hb_frame *f, char *err, size_t errlen)
{
  const struct type_rule *r = rule_of(f->type);
  int rc;

  if (!r)
    return hb_fail(err, errlen, -HB_WIRE_ETYPE,
                   "unknown frame type %u", (unsigned) f->type);
  if (f->flags & ~r->flags)
    return hb_fail(err, errlen, -HB_WIRE_EFLAGS,
                   "%s frame has unknown flags 0x%" PRIx32, r->name,
                   f->flags & ~r->flags);
  rc = check_lengths(r, f, err, errlen);
  if (rc < 0)
    return rc;
  return check_offset(r, f, err, errlen);
}

int hb_wire_encode_header(const struct hb_frame *f, void *buf, size_t buflen)
{
  struct hb_wire_header h;
  int rc;

  if (buflen < HB_WIRE_HDR_SIZE)
    return -ENOBUFS;
  rc = hb_wire_check_frame(f, NULL, 0);
  if (rc < 0)
    return rc;

  h = (struct hb_wire_header) {
    .magic = hb_le32_put(HB_WIRE_MAGIC),
    .version = hb_le16_put(HB_WIRE_VERSION),
    .type = hb_le16_put(f->type),
    .flags = hb_le32_put(f->flags),
    .count = hb_le32_put(f->count),
    .id = hb_le64_put(f->id),
    .offset = hb_le64_put(f->offset),
    .payload_len = hb_le32_put(f->payload_len),
    .reserved = hb_le32_put(0),
  };
  memcpy(buf, &h, sizeof h);
  return HB_WIRE_HDR_SIZE;
}

int hb_wire_decode_header(const void *buf, size_t len, struct hb_frame *out,
                          char *err, size_t errlen)
{
  struct hb_wire_header h;
  uint32_t magic, type, reserved;
  uint16_t version;
  struct hb_frame f;
  int rc;

  if (len < HB_WIRE_HDR_SIZE)
    return hb_fail(err, errlen, -HB_WIRE_ETRUNC,
                   "truncated frame header: %zu bytes (need %u)",
                   len, HB_WIRE_HDR_SIZE);
  memcpy(&h, buf, sizeof h);

  magic = hb_le32_get(h.magic);
  if (magic != HB_WIRE_MAGIC)
    return hb_fail(err, errlen, -HB_WIRE_EMAGIC,
                   "bad magic 0x%08" PRIx32 " (expected 0x%08x)",
                   magic, HB_WIRE_MAGIC);
  version = hb_le16_get(h.version);
  if (version != HB_WIRE_VERSION)
    return hb_fail(err, errlen, -HB_WIRE_EVERSION,
                   "unsupported protocol version %u (we speak %u)",
                   (unsigned) version, HB_WIRE_VERSION);
  type = hb_le16_get(h.type);
  if (!rule_of(type))
    return hb_fail(err, errlen, -HB_WIRE_ETYPE,
                   "unknown frame type %" PRIu32, type);
  reserved = hb_le32_get(h.reserved);
  if (reserved != 0)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "%s frame reserved field 0x%" PRIx32 " (expected 0)",
                   hb_wire_type_name(type), reserved);

  f = (struct hb_frame) {
    .type = (uint16_t) type,
    .flags = hb_le32_get(h.flags),
    .count = hb_le32_get(h.count),
    .payload_len = hb_le32_get(h.payload_len),
    .id = hb_le64_get(h.id),
    .offset = hb_le64_get(h.offset),
  };
  rc = hb_wire_check_frame(&f, err, errlen);
  if (rc < 0)
    return rc;
  *out = f;
  return 0;
}

int hb_wire_check_range(const struct hb_frame *f, uint64_t size,
                        char *err, size_t errlen)
{
  uint64_t end;

  if (!hb_wire_type_has_range(f->type))
    return 0;
  if (__builtin_add_overflow(f->offset, (uint64_t) f->count, &end))
    return hb_fail(err, errlen, -HB_WIRE_ERANGE,
                   "%s frame range overflows: offset %" PRIu64
                   " + length %" PRIu32,
                   hb_wire_type_name(f->type), f->offset, f->count);
  if (end > size)
    return hb_fail(err, errlen, -HB_WIRE_ERANGE,
                   "%s frame range [%" PRIu64 ", %" PRIu64 ") exceeds the "
                   "exported size %" PRIu64,
                   hb_wire_type_name(f->type), f->offset, end, size);
  return 0;
}

/* ---- names -------------------------------------------------------------- */

/* Copy a C string into a NUL-padded wire field; fails when empty or longer
 * than HB_WIRE_NAME_MAX. */
static int name_put(char dst[HB_WIRE_NAME_MAX + 1], const char *src)
{
  size_t n = strnlen(src, HB_WIRE_NAME_MAX + 1);

  if (n == 0 || n > HB_WIRE_NAME_MAX)
    return -1;
  memset(dst, 0, HB_WIRE_NAME_MAX + 1);
  memcpy(dst, src, n);
  return 0;
}

/* Take a NUL-padded wire field: non-empty, NUL-terminated, NUL after the
 * first NUL, printable ASCII before it. */
static int name_get(char dst[HB_WIRE_NAME_MAX + 1],
                    const char src[HB_WIRE_NAME_MAX + 1], const char *what,
                    char *err, size_t errlen)
{
  size_t n = strnlen(src, HB_WIRE_NAME_MAX + 1);
  size_t i;

  if (n == 0)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD, "HELLO %s is empty", what);
  if (n > HB_WIRE_NAME_MAX)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "HELLO %s is not NUL-terminated", what);
  for (i = 0; i < n; i++)
    if (src[i] < 0x21 || src[i] > 0x7e)
      return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                     "HELLO %s has a non-printable byte 0x%02x at %zu",
                     what, (unsigned) (unsigned char) src[i], i);
  for (i = n; i <= HB_WIRE_NAME_MAX; i++)
    if (src[i] != 0)
      return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                     "HELLO %s is not NUL-padded", what);
  memcpy(dst, src, HB_WIRE_NAME_MAX + 1);
  return 0;
}

static bool name_printable(const char *s)
{
  for (; *s; s++)
    if (*s < 0x21 || *s > 0x7e)
      return false;
  return true;
}

/* ---- HELLO -------------------------------------------------------------- */

int hb_wire_encode_hello(const struct hb_hello *h, void *buf, size_t buflen)
{
  struct hb_wire_hello w;
  unsigned i;

  if (buflen < HB_WIRE_HELLO_SIZE)
    return -ENOBUFS;
  if (!role_valid(h->role) || !disk_valid(h->disk) ||
      (h->flags & ~HB_HELLO_F_ALL))
    return HB_WIRE_EFIELD;

  memset(&w, 0, sizeof w);
  if (name_put(w.resource, h->resource) < 0 ||
      name_put(w.node_name, h->node_name) < 0 ||
      !name_printable(w.resource) || !name_printable(w.node_name))
    return HB_WIRE_EFIELD;
  w.proto_version = hb_le32_put(h->proto_version);
  w.node_id = hb_le16_put(h->node_id);
  w.role = h->role;
  w.disk = h->disk;
  w.flags = hb_le32_put(h->flags);
  w.bm_granularity = hb_le32_put(h->bm_granularity);
  w.exported_size = hb_le64_put(h->exported_size);
  for (i = 0; i < HB_WIRE_GEN_COUNT; i++)
    w.gen[i] = hb_le64_put(h->gen[i]);
  w.reserved = hb_le64_put(0);
  memcpy(buf, &w, sizeof w);
  return HB_WIRE_HELLO_SIZE;
}

int hb_wire_decode_hello(const void *buf, size_t len, struct hb_hello *out,
                         char *err, size_t errlen)
{
  struct hb_wire_hello w;
  struct hb_hello h;
  uint32_t flags;
  unsigned i;
  int rc;

  if (len != HB_WIRE_HELLO_SIZE)
    return hb_fail(err, errlen,
                   len < HB_WIRE_HELLO_SIZE ? -HB_WIRE_ETRUNC
                                            : -HB_WIRE_ELENGTH,
                   "HELLO payload is %zu bytes (expected %u)",
                   len, HB_WIRE_HELLO_SIZE);
  memcpy(&w, buf, sizeof w);

  memset(&h, 0, sizeof h);
  h.proto_version = hb_le32_get(w.proto_version);
  if (h.proto_version != HB_WIRE_VERSION)
    return hb_fail(err, errlen, -HB_WIRE_EVERSION,
                   "unsupported protocol version %" PRIu32 " in HELLO "
                   "(we speak %u)", h.proto_version, HB_WIRE_VERSION);
  if (!role_valid(w.role))
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "HELLO has unknown role %u", (unsigned) w.role);
  if (!disk_valid(w.disk))
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "HELLO has unknown disk state %u", (unsigned) w.disk);
  flags = hb_le32_get(w.flags);
  if (flags & ~HB_HELLO_F_ALL)
    return hb_fail(err, errlen, -HB_WIRE_EFLAGS,
                   "HELLO has unknown flags 0x%" PRIx32,
                   flags & ~HB_HELLO_F_ALL);
  if (hb_le64_get(w.reserved) != 0)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "HELLO reserved field is not zero");
  rc = name_get(h.resource, w.resource, "resource name", err, errlen);
  if (rc < 0)
    return rc;
  rc = name_get(h.node_name, w.node_name, "node name", err, errlen);
  if (rc < 0)
    return rc;

  h.node_id = hb_le16_get(w.node_id);
  h.role = w.role;
  h.disk = w.disk;
  h.flags = flags;
  h.bm_granularity = hb_le32_get(w.bm_granularity);
  h.exported_size = hb_le64_get(w.exported_size);
  for (i = 0; i < HB_WIRE_GEN_COUNT; i++)
    h.gen[i] = hb_le64_get(w.gen[i]);
  *out = h;
  return 0;
}

int hb_wire_check_hello(const struct hb_hello *local,
                        const struct hb_hello *remote,
                        char *err, size_t errlen)
{
  if (remote->proto_version != local->proto_version)
    return hb_fail(err, errlen, -HB_WIRE_EVERSION,
                   "peer %s speaks protocol version %" PRIu32
                   ", we speak %" PRIu32, remote->node_name,
                   remote->proto_version, local->proto_version);
  if (strcmp(remote->resource, local->resource) != 0)
    return hb_fail(err, errlen, -HB_WIRE_ERESOURCE,
                   "peer %s serves resource '%s', we serve '%s'",
                   remote->node_name, remote->resource, local->resource);
  if (remote->exported_size != local->exported_size)
    return hb_fail(err, errlen, -HB_WIRE_ESIZE,
                   "peer %s exports %" PRIu64 " bytes of resource '%s', "
                   "we export %" PRIu64, remote->node_name,
                   remote->exported_size, local->resource,
                   local->exported_size);
  if (remote->node_id == local->node_id)
    return hb_fail(err, errlen, -HB_WIRE_ENODE,
                   "peer %s has our node id %u (same node section on both "
                   "nodes?)", remote->node_name, (unsigned) local->node_id);
  return 0;
}

/* ---- STATE, NACK, DIGEST ------------------------------------------------ */

int hb_wire_encode_state(const struct hb_state_msg *s, void *buf,
                         size_t buflen)
{
  struct hb_wire_state w;

  if (buflen < HB_WIRE_STATE_SIZE)
    return -ENOBUFS;
  if (!role_valid(s->role) || !disk_valid(s->disk) ||
      (s->flags & ~HB_HELLO_F_ALL))
    return HB_WIRE_EFIELD;
  w = (struct hb_wire_state) {
    .role = s->role,
    .disk = s->disk,
    .reserved = hb_le16_put(0),
    .flags = hb_le32_put(s->flags),
  };
  memcpy(buf, &w, sizeof w);
  return HB_WIRE_STATE_SIZE;
}

int hb_wire_decode_state(const void *buf, size_t len, struct hb_state_msg *out,
                         char *err, size_t errlen)
{
  struct hb_wire_state w;
  uint32_t flags;

  if (len != HB_WIRE_STATE_SIZE)
    return hb_fail(err, errlen,
                   len < HB_WIRE_STATE_SIZE ? -HB_WIRE_ETRUNC
                                            : -HB_WIRE_ELENGTH,
                   "STATE payload is %zu bytes (expected %u)",
                   len, HB_WIRE_STATE_SIZE);
  memcpy(&w, buf, sizeof w);
  if (!role_valid(w.role))
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "STATE has unknown role %u", (unsigned) w.role);
  if (!disk_valid(w.disk))
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "STATE has unknown disk state %u", (unsigned) w.disk);
  if (hb_le16_get(w.reserved) != 0)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "STATE reserved field is not zero");
  flags = hb_le32_get(w.flags);
  if (flags & ~HB_HELLO_F_ALL)
    return hb_fail(err, errlen, -HB_WIRE_EFLAGS,
                   "STATE has unknown flags 0x%" PRIx32,
                   flags & ~HB_HELLO_F_ALL);
  *out = (struct hb_state_msg) { .role = w.role, .disk = w.disk,
                                 .flags = flags };
  return 0;
}

int hb_wire_encode_nack(int errnum, void *buf, size_t buflen)
{
  struct hb_wire_nack w;

  if (buflen < HB_WIRE_NACK_SIZE)
    return -ENOBUFS;
  if (errnum < 1 || errnum > 4095)
    return HB_WIRE_EFIELD;
  w = (struct hb_wire_nack) {
    .error = hb_le32_put((uint32_t) errnum),
    .reserved = hb_le32_put(0),
  };
  memcpy(buf, &w, sizeof w);
  return HB_WIRE_NACK_SIZE;
}

int hb_wire_decode_nack(const void *buf, size_t len, int *errnum,
                        char *err, size_t errlen)
{
  struct hb_wire_nack w;
  uint32_t e;

  if (len != HB_WIRE_NACK_SIZE)
    return hb_fail(err, errlen,
                   len < HB_WIRE_NACK_SIZE ? -HB_WIRE_ETRUNC
                                           : -HB_WIRE_ELENGTH,
                   "NACK payload is %zu bytes (expected %u)",
                   len, HB_WIRE_NACK_SIZE);
  memcpy(&w, buf, sizeof w);
  e = hb_le32_get(w.error);
  if (e < 1 || e > 4095)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "NACK error %" PRIu32 " is not an errno", e);
  if (hb_le32_get(w.reserved) != 0)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "NACK reserved field is not zero");
  *errnum = (int) e;
  return 0;
}

/* The digest length each algorithm produces; 0 for an unknown one. */
static unsigned digest_len(unsigned alg)
{
  switch (alg) {
  case HB_DIGEST_CRC32C: return 4;
  case HB_DIGEST_SHA256: return 32;
  default: return 0;
  }
}

int hb_wire_encode_digest(const struct hb_digest *d, void *buf, size_t buflen)
{
  struct hb_wire_digest w;

  if (buflen < HB_WIRE_DIGEST_SIZE)
    return -ENOBUFS;
  if (digest_len(d->alg) == 0 || d->len != digest_len(d->alg))
    return HB_WIRE_EFIELD;
  memset(&w, 0, sizeof w);
  w.alg = hb_le16_put(d->alg);
  w.len = d->len;
  memcpy(w.digest, d->bytes, d->len);
  memcpy(buf, &w, sizeof w);
  return HB_WIRE_DIGEST_SIZE;
}

int hb_wire_decode_digest(const void *buf, size_t len, struct hb_digest *out,
                          char *err, size_t errlen)
{
  struct hb_wire_digest w;
  unsigned alg, want, i;

  if (len != HB_WIRE_DIGEST_SIZE)
    return hb_fail(err, errlen,
                   len < HB_WIRE_DIGEST_SIZE ? -HB_WIRE_ETRUNC
                                             : -HB_WIRE_ELENGTH,
                   "DIGEST payload is %zu bytes (expected %u)",
                   len, HB_WIRE_DIGEST_SIZE);
  memcpy(&w, buf, sizeof w);
  alg = hb_le16_get(w.alg);
  want = digest_len(alg);
  if (want == 0)
    return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                   "DIGEST has unknown algorithm %u", alg);
  if (w.len != want)
    return hb_fail(err, errlen, -HB_WIRE_ELENGTH,
                   "DIGEST length %u (algorithm %u gives %u)",
                   (unsigned) w.len, alg, want);
  for (i = 0; i < sizeof w.reserved; i++)
    if (w.reserved[i] != 0)
      return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                     "DIGEST reserved field is not zero");
  for (i = want; i < HB_WIRE_DIGEST_MAX; i++)
    if (w.digest[i] != 0)
      return hb_fail(err, errlen, -HB_WIRE_EFIELD,
                     "DIGEST is not zero-padded");
  memset(out, 0, sizeof *out);
  out->alg = (uint16_t) alg;
  out->len = w.len;
  memcpy(out->bytes, w.digest, want);
  return 0;
}
