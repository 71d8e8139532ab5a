/* Fuzz target: the wire codec (replicator/wire.c). A header is decoded,
 * checked and re-encoded (what decodes must encode to the same bytes); the
 * rest of the input goes to the payload decoder of the header's type (or of
 * type data[0] % 16 when the header does not decode), and what decodes
 * re-encodes to the same bytes too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "wire.h"
#include "fuzz.h"

static struct hb_hello local_hello(void)
{
  struct hb_hello h;
  memset(&h, 0, sizeof h);
  h.proto_version = HB_WIRE_VERSION;
  h.node_id = 1;
  h.role = HB_WIRE_ROLE_SECONDARY;
  h.disk = HB_WIRE_DISK_UPTODATE;
  h.flags = HB_HELLO_F_CONSISTENT;
  h.bm_granularity = 4096;
  h.exported_size = 1ull << 30;
  strcpy(h.resource, "r0");
  strcpy(h.node_name, "ha1");
  return h;
}

/* What decoded must encode (n bytes) to the same size bytes it came from. */
static void same(const char *what, int n, int size, const void *re, const void *orig)
{
  if (n != size || memcmp(re, orig, (size_t) size) != 0) {
    fprintf(stderr, "%s round-trip mismatch (encoded %d bytes)\n", what, n);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char err[256];
  struct hb_frame f;
  struct hb_hello local = local_hello();
  uint8_t re[HB_WIRE_HELLO_SIZE + 8];
  int rc;

  rc = hb_wire_decode_header(data, size, &f, err, sizeof err);
  if (rc == 0) {
    /* Property: what decodes re-encodes to the same 40 bytes. */
    int n = hb_wire_encode_header(&f, re, sizeof re);
    if (n != HB_WIRE_HDR_SIZE || memcmp(re, data, HB_WIRE_HDR_SIZE) != 0) {
      fprintf(stderr, "header round-trip mismatch (enc=%d)\n", n);
      abort();
    }
    if (hb_wire_check_frame(&f, err, sizeof err) != 0)
      abort();
    (void) hb_wire_check_range(&f, local.exported_size, err, sizeof err);
    (void) hb_wire_check_range(&f, UINT64_MAX, err, sizeof err);
    (void) hb_wire_check_range(&f, 0, err, sizeof err);
    (void) hb_wire_type_name(f.type);
  } else {
    f.type = size ? data[0] % 16 : 0;
  }
  const uint8_t *pl = size > HB_WIRE_HDR_SIZE ? data + HB_WIRE_HDR_SIZE : data;
  size_t plen = size > HB_WIRE_HDR_SIZE ? size - HB_WIRE_HDR_SIZE : size;
  /* Exact-size copy on the heap so ASan catches over-reads. */
  uint8_t *p = malloc(plen ? plen : 1);
  memcpy(p, pl, plen);

  switch (f.type) {
  case HB_WIRE_HELLO: {
    struct hb_hello h;
    if (hb_wire_decode_hello(p, plen, &h, err, sizeof err) == 0) {
      (void) hb_wire_check_hello(&local, &h, err, sizeof err);
      (void) hb_wire_check_hello(&h, &local, err, sizeof err);
      (void) hb_wire_check_hello(&h, &h, err, sizeof err);
      same("HELLO", hb_wire_encode_hello(&h, re, sizeof re), HB_WIRE_HELLO_SIZE, re, p);
      if (strlen(h.resource) > HB_WIRE_NAME_MAX || strlen(h.node_name) > HB_WIRE_NAME_MAX)
        abort();
      (void) hb_wire_role_name(h.role);
      (void) hb_wire_disk_name(h.disk);
    }
    break;
  }
  case HB_WIRE_STATE: {
    struct hb_state_msg s;
    if (hb_wire_decode_state(p, plen, &s, err, sizeof err) == 0) {
      same("STATE", hb_wire_encode_state(&s, re, sizeof re), HB_WIRE_STATE_SIZE, re, p);
    }
    break;
  }
  case HB_WIRE_NACK: {
    int e;
    if (hb_wire_decode_nack(p, plen, &e, err, sizeof err) == 0) {
      same("NACK", hb_wire_encode_nack(e, re, sizeof re), HB_WIRE_NACK_SIZE, re, p);
    }
    break;
  }
  case HB_WIRE_DIGEST: {
    struct hb_digest d;
    if (hb_wire_decode_digest(p, plen, &d, err, sizeof err) == 0) {
      same("DIGEST", hb_wire_encode_digest(&d, re, sizeof re), HB_WIRE_DIGEST_SIZE, re, p);
    }
    break;
  }
  default:
    break;
  }
  free(p);
  return 0;
}
