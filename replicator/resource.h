/* The resource (resource.c): what the plugin and the control socket use. */
#ifndef HB_RESOURCE_H
#define HB_RESOURCE_H

#include "hablock.h"
#include "peer.h"
#include "role.h"

struct hb_res_status {
  bool replicated;
  const char *resource, *node, *peer, *io;
  const char *loop;             /* the replication loop's backend, "" standalone */
  bool tls_on;
  struct hb_node_state state;
  struct hb_peer_info link;
  unsigned long lost_sends;     /* requests decided for a link that was gone
                                   at the hand-over, and recorded instead */
  int applying;                 /* the peer's requests received, not yet answered */
  int sending;                  /* our requests decided for the link, not yet
                                   handed to it nor recorded */
};

void hb_res_status(struct hb_res *r, struct hb_res_status *st);
const char *hb_res_control_path(const struct hb_res *r);
/* 0, a positive refusal code (role.h) with msg, or -errno with msg. */
int hb_res_promote(struct hb_res *r, bool force, char *msg, size_t len);
int hb_res_demote(struct hb_res *r, bool force, char *msg, size_t len);
void hb_res_set_connect(struct hb_res *r, bool wanted);

#endif
