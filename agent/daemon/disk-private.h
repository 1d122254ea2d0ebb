/* ShdDisk's state, shared by the files that make up a disk's agent:
 * disk.c (sampling, decisions, status) and release.c (releasing a tier).
 * Not for other files. */
#pragma once

#include "collector.h"
#include "disk.h"
#include "move.h"
#include "recommend.h"

G_BEGIN_DECLS

struct _ShdDisk {
  GObject parent_instance;
  ShdDiskConfig *cfg;
  double interval_s;
  ShdHistory *history;          /* or NULL */
  ShdQmp *qmp;
  gboolean own_qmp;             /* FALSE: shared, started by its owner */
  gboolean stopped;
  gulong sig_ready, sig_disconnected, sig_event;
  ShdCollector *coll;
  ShdPolicy *policy;
  GCancellable *cancel;
  guint timer;
  gboolean query_in_flight;
  gboolean reopen_in_flight;
  gboolean write_sync_raised;
  gboolean warmed;
  guint64 samples, skipped;
  guint64 size_bytes;
  GPtrArray *children;          /* node names in the node's order */
  char *metadata;               /* the node's metadata child, as it says */
  ShdShadowRates *rates;        /* the latest */
  char *problem;                /* why there are no rates, logged once */
  GQueue decisions;             /* JsonNode, the newest last */
  int last_recorded_kind;       /* ShdDecisionKind; -1: none yet */
  int last_recorded_target;
  double last_recorded_t;
  guint64 decisions_total;
  guint64 reopen_failures;
  double last_pause_ms;         /* guest I/O pause of the last switch */
  gint64 t0_us;                 /* monotonic origin of policy time */
  gint64 last_step_wall_ms;
  double add_sent_t[SHD_POLICY_MAX_TIERS];     /* x-blockdev-change sent; -inf */
  /* the tiers' images: allocated bytes (NAN: not measured), read with
   * query-named-block-nodes every NODES_EVERY_S; fresh since the last step */
  double alloc[SHD_POLICY_MAX_TIERS];
  gboolean alloc_fresh;
  gboolean nodes_in_flight;
  double nodes_t;               /* policy time of the last read; -inf */
  gboolean release_in_flight;
  /* samples when the last release ended: until a later one, the samples
   * may still show the released child (move.c waits for it) */
  guint64 release_end_samples;
  /* a released tier's image was emptied where QEMU cannot say what it
   * allocates (rbd): charged 0 until its child is added again */
  gboolean emptied[SHD_POLICY_MAX_TIERS];
  gboolean alloc_unknown_logged[SHD_POLICY_MAX_TIERS];
  /* the tier's node is in QEMU (the last query-named-block-nodes); its
   * node is being opened (create.c) */
  gboolean node_seen[SHD_POLICY_MAX_TIERS];
  gboolean opening[SHD_POLICY_MAX_TIERS];
  /* a degraded child is retried by a reopen at repair_t (policy time; 0:
   * none degraded), repair_delay_s after the previous one */
  double repair_t;
  double repair_delay_s;
  /* the last permanent move (move.c), or NULL */
  ShdMove *move;
  /* whether to recommend one, from the history, and when it was computed
   * (monotonic us; 0: never) */
  ShdRecommendation recommend;
  gint64 recommend_us;
};

double shd_disk_policy_now (ShdDisk *disk);
/* Read the nodes again at the next tick (after a release, say). */
void shd_disk_refresh_nodes (ShdDisk *disk);

/* The shadow node's options for blockdev-reopen with `active_child`, the
 * children `children` (NULL: the node's, as last sampled) and write-mode
 * sync if `force_sync`. */
JsonObject *shd_disk_node_options (ShdDisk *disk, const char *active_child,
                                   gboolean force_sync, GPtrArray *children);
/* The disk is configured write-mode = async. */
gboolean shd_disk_write_async (ShdDisk *disk);
/* A disk configured write-mode = async: reopen the node in sync mode
 * until the next switch, so that a shadow being warmed (or moved to)
 * stays synced under writes.  TRUE if the node is, or is being, raised;
 * FALSE for a sync disk, or when it must wait (a reopen in flight, no
 * sample yet). */
gboolean shd_disk_raise_write_sync (ShdDisk *disk);
/* Back to the disk's own write mode after a raise that is no longer
 * needed (a move that ended before its switch).  TRUE once done or
 * nothing to do; FALSE when it must wait (a reopen in flight). */
gboolean shd_disk_lower_write_sync (ShdDisk *disk);
/* Add the tier's child now, opening its node first when shadowd makes it. */
void shd_disk_add_tier (ShdDisk *disk, int tier);

/* Add the tier's child node to the shadow node (x-blockdev-change). */
void shd_disk_add_child_node (ShdDisk *disk, int tier);
/* Adding the tier failed: logged, and the tier held unavailable. */
void shd_disk_add_failed (ShdDisk *disk, int tier, const char *why);

/* ---- create.c ---- */
/* Open the tier's node over its rbd image (tier-rbd.NAME), creating the
 * image when missing, then add it as the add above does. */
void shd_disk_open_tier_node (ShdDisk *disk, int tier);

/* ---- release.c ---- */
/* The policy's RELEASE of `tier`: remove its child from the node, then
 * give its image's space back (release = discard). */
void shd_disk_release_tier (ShdDisk *disk, int tier);

G_END_DECLS
