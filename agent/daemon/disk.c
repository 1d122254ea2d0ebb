/* One managed disk; see disk.h. */
#include "disk.h"
#include "disk-private.h"

#include "blockgraph.h"
#include "collector.h"
#include "decision.h"
#include "jsonutil.h"
#include "log.h"
#include "qmp.h"

#include <math.h>
#include <string.h>

#define MAX_DECISIONS 256       /* kept in memory per disk */
#define REPEAT_RECORD_S 60      /* a repeated non-hold decision is recorded this often */
#define NODES_EVERY_S 10        /* the nodes (size, allocation) are read this often, or
                                   every seasonal bucket if shorter (a compressed day) */


G_DEFINE_TYPE (ShdDisk, shd_disk, G_TYPE_OBJECT)

const char *shd_disk_name (ShdDisk *disk) { return disk->cfg->name; }
ShdPolicy *shd_disk_policy (ShdDisk *disk) { return disk->policy; }

/* ---- actions ---- */

JsonObject *
shd_disk_node_options (ShdDisk *disk, const char *active_child, gboolean force_sync,
                       GPtrArray *children)
{
  const ShdDiskConfig *c = disk->cfg;
  JsonObject *o = json_object_new ();
  JsonArray *ch = json_array_new ();

  if (children == NULL)
    children = disk->children;
  json_object_set_string_member (o, "driver", "shadow");
  json_object_set_string_member (o, "node-name", c->node);
  for (guint i = 0; i < children->len; i++)
    json_array_add_string_element (ch, children->pdata[i]);
  json_object_set_array_member (o, "children", ch);
  json_object_set_string_member (o, "active-child", active_child);
  /* only what the disk was configured with, typed as QMP wants it */
  if (c->chunk_size)
    json_object_set_int_member (o, "chunk-size", g_ascii_strtoll (c->chunk_size, NULL, 10));
  if (force_sync)
    json_object_set_string_member (o, "write-mode", "sync");
  else if (c->write_mode)
    json_object_set_string_member (o, "write-mode", c->write_mode);
  if (c->prewarm)
    json_object_set_string_member (o, "prewarm", c->prewarm);
  if (c->prewarm_speed)
    json_object_set_int_member (o, "prewarm-speed",
                                g_ascii_strtoll (c->prewarm_speed, NULL, 10));
  if (c->read_from)
    json_object_set_string_member (o, "read-from", c->read_from);
  if (c->copy_on_read)
    json_object_set_boolean_member (o, "copy-on-read",
                                    strcmp (c->copy_on_read, "true") == 0);
  if (c->copy_compare)
    json_object_set_boolean_member (o, "copy-compare",
                                    strcmp (c->copy_compare, "true") == 0);
  /* a reopen must name the metadata child the node has: the node says
   * which (the configuration's is only for a QEMU that does not) */
  if (disk->metadata)
    json_object_set_string_member (o, "metadata", disk->metadata);
  else if (c->metadata)
    json_object_set_string_member (o, "metadata", c->metadata);
  return o;
}

typedef struct {
  ShdDisk *disk;                /* a reference */
  char *child;
  gboolean is_switch;
} ReopenCtx;

static void
reopen_ctx_free (ReopenCtx *ctx)
{
  g_object_unref (ctx->disk);
  g_free (ctx->child);
  g_free (ctx);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ReopenCtx, reopen_ctx_free)

static void
reopen_done (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ReopenCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;                     /* stopped */
  ctx->disk->reopen_in_flight = FALSE;
  if (ret == NULL) {
    ctx->disk->reopen_failures++;
    shd_log (G_LOG_LEVEL_WARNING, ctx->disk->cfg->name, "reopen-failed",
             "%s: blockdev-reopen to %s failed: %s", ctx->disk->cfg->name,
             ctx->child, error->message);
    if (ctx->is_switch)
      shd_policy_switch_failed (ctx->disk->policy, error->message);
    else
      ctx->disk->write_sync_raised = FALSE;
  } else if (ctx->is_switch) {
    ctx->disk->write_sync_raised = FALSE;
  }
}

static void
reopen (ShdDisk *disk, const char *active_child, gboolean force_sync, gboolean is_switch)
{
  JsonObject *args = json_object_new ();
  JsonArray *opts = json_array_new ();
  ReopenCtx *ctx = g_new0 (ReopenCtx, 1);

  json_array_add_object_element (opts, shd_disk_node_options (disk, active_child, force_sync,
                                                              NULL));
  json_object_set_array_member (args, "options", opts);
  ctx->disk = g_object_ref (disk);
  ctx->child = g_strdup (active_child);
  ctx->is_switch = is_switch;
  disk->reopen_in_flight = TRUE;
  shd_qmp_execute_async (disk->qmp, "blockdev-reopen", args, 0, disk->cancel,
                         reopen_done, ctx);
  json_object_unref (args);
}

gboolean
shd_disk_write_async (ShdDisk *disk)
{
  return g_strcmp0 (disk->cfg->write_mode, "async") == 0;
}

gboolean
shd_disk_raise_write_sync (ShdDisk *disk)
{
  if (!shd_disk_write_async (disk))
    return FALSE;
  if (disk->write_sync_raised)
    return TRUE;
  if (disk->rates == NULL || disk->reopen_in_flight)
    return FALSE;
  disk->write_sync_raised = TRUE;
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "write-mode",
           "%s: reopening %s in write-mode sync while a shadow is warmed", disk->cfg->name,
           disk->cfg->node);
  reopen (disk, disk->rates->active, TRUE, FALSE);
  return TRUE;
}

gboolean
shd_disk_lower_write_sync (ShdDisk *disk)
{
  if (!disk->write_sync_raised)
    return TRUE;
  if (disk->rates == NULL || disk->reopen_in_flight)
    return FALSE;
  disk->write_sync_raised = FALSE;
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "write-mode",
           "%s: reopening %s in write-mode %s again", disk->cfg->name, disk->cfg->node,
           disk->cfg->write_mode);
  reopen (disk, disk->rates->active, FALSE, FALSE);
  return TRUE;
}

#define ADD_RETRY_S 10          /* an added child should show up by then */
#define ADD_FAIL_HOLD_S 300     /* a tier whose child could not be added */

typedef struct {
  ShdDisk *disk;                /* a reference */
  int tier;
} AddCtx;

static void
add_ctx_free (AddCtx *ctx)
{
  g_object_unref (ctx->disk);
  g_free (ctx);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AddCtx, add_ctx_free)

static double
policy_now (ShdDisk *disk)
{
  return (g_get_monotonic_time () - disk->t0_us) / 1e6;
}

double
shd_disk_policy_now (ShdDisk *disk)
{
  return policy_now (disk);
}

void
shd_disk_refresh_nodes (ShdDisk *disk)
{
  disk->nodes_t = -INFINITY;
}

static void
add_done (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (AddCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  ShdDisk *disk = ctx->disk;
  const ShdPolicyTier *t;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  t = &shd_policy_config (disk->policy)->tiers[ctx->tier];
  if (ret == NULL) {
    shd_disk_add_failed (disk, ctx->tier, error->message);
  } else {
    shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "added",
             "%s: added %s (tier %s) to %s; it is being pre-warmed", disk->cfg->name,
             t->child, t->tier, disk->cfg->node);
  }
}

void
shd_disk_add_failed (ShdDisk *disk, int tier, const char *why)
{
  const ShdPolicyTier *t = &shd_policy_config (disk->policy)->tiers[tier];

  shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "add-failed",
           "%s: cannot add %s (tier %s) to %s: %s; not trying again for %d s",
           disk->cfg->name, t->child, t->tier, disk->cfg->node, why, ADD_FAIL_HOLD_S);
  shd_policy_mark_unavailable (disk->policy, tier, policy_now (disk) + ADD_FAIL_HOLD_S);
  shd_move_add_failed (disk->move, tier, why);
}

/* Pre-warm a tier whose child is not in the node: add it, after opening
 * its node when shadowd makes it (create.c) and QEMU lacks it. */
static void
add_child (ShdDisk *disk, int tier)
{
  const ShdDiskTier *dt = disk->cfg->tiers->pdata[tier];
  double now = policy_now (disk);

  if (now - disk->add_sent_t[tier] < ADD_RETRY_S || disk->opening[tier])
    return;
  disk->add_sent_t[tier] = now;
  if (dt->rbd_pool && !disk->node_seen[tier])
    shd_disk_open_tier_node (disk, tier);
  else
    shd_disk_add_child_node (disk, tier);
}

void
shd_disk_add_tier (ShdDisk *disk, int tier)
{
  disk->add_sent_t[tier] = -INFINITY;
  add_child (disk, tier);
}

void
shd_disk_add_child_node (ShdDisk *disk, int tier)
{
  JsonObject *args;
  AddCtx *ctx;

  args = json_object_new ();
  json_object_set_string_member (args, "parent", disk->cfg->node);
  json_object_set_string_member (args, "node",
                                 shd_policy_config (disk->policy)->tiers[tier].child);
  ctx = g_new0 (AddCtx, 1);
  ctx->disk = g_object_ref (disk);
  ctx->tier = tier;
  shd_qmp_execute_async (disk->qmp, "x-blockdev-change", args, 0, disk->cancel,
                         add_done, ctx);
  json_object_unref (args);
}

/* ---- decisions ---- */

static void
record (ShdDisk *disk, const ShdDecision *d, gint64 wall_ms)
{
  gboolean notable = d->kind != SHD_DECISION_HOLD && d->kind != SHD_DECISION_NO_DATA;
  gboolean changed = disk->last_recorded_kind != (int) d->kind ||
                     disk->last_recorded_target != d->target;
  g_autoptr (JsonNode) node = NULL;
  g_autoptr (GError) error = NULL;

  disk->decisions_total++;
  if (!notable && !changed) {
    shd_log (G_LOG_LEVEL_DEBUG, disk->cfg->name, shd_decision_kind_name (d->kind), "%s: %s",
             disk->cfg->name, d->reason);
    return;
  }
  /* an action not taken (paused, dry run) is no news either when it
   * repeats: a disk paused on its tier under load would log it each
   * interval */
  if (!changed && (d->action == SHD_ACTION_NONE || d->dry_run) &&
      d->t - disk->last_recorded_t < REPEAT_RECORD_S) {
    shd_log (G_LOG_LEVEL_DEBUG, disk->cfg->name, shd_decision_kind_name (d->kind), "%s: %s",
             disk->cfg->name, d->reason);
    return;
  }
  disk->last_recorded_kind = d->kind;
  disk->last_recorded_target = d->target;
  disk->last_recorded_t = d->t;
  node = shd_decision_to_json (d, disk->policy, wall_ms);
  shd_decision_log (disk->cfg->name, d, shd_policy_tier_name (disk->policy, d->from),
                    shd_policy_tier_name (disk->policy, d->target));
  g_queue_push_tail (&disk->decisions, json_node_ref (node));
  while (disk->decisions.length > MAX_DECISIONS)
    json_node_unref (g_queue_pop_head (&disk->decisions));
  if (disk->history &&
      !shd_history_add_decision (disk->history, disk->cfg->name, wall_ms,
                                 shd_decision_kind_name (d->kind),
                                 d->reason, node, &error))
    shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "history", "%s", error->message);
}

static void
problem (ShdDisk *disk, const char *msg)
{
  if (g_strcmp0 (disk->problem, msg) == 0)
    return;
  g_free (disk->problem);
  disk->problem = g_strdup (msg);
  if (msg)
    shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "no-rates", "%s: %s",
             disk->cfg->name, msg);
}

/* The seasonal scale from the stored buckets (and imported ones): up to
 * six weeks of 5-minute buckets, what the forecaster keeps with a week's
 * season (history-days may keep fewer), so that a restarted agent knows
 * yesterday and last week. */
#define WARM_BUCKETS 12096

static void
warm_buckets (ShdDisk *disk)
{
  const ShdOutlook *o = shd_policy_outlook (disk->policy);
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) b = NULL;
  double bucket_s;

  if (o == NULL || disk->history == NULL)
    return;
  bucket_s = shd_outlook_bucket_s (o);
  b = shd_history_buckets (disk->history, disk->cfg->name, bucket_s, 0, WARM_BUCKETS, &error);
  if (b == NULL) {
    shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "history", "%s", error->message);
    return;
  }
  for (guint i = 0; i < b->len; i++) {
    const ShdHistoryBucket *e = &g_array_index (b, ShdHistoryBucket, i);

    shd_policy_feed_bucket (disk->policy, e->index, e->value);
  }
  if (b->len > 0)
    shd_log (G_LOG_LEVEL_INFO, disk->cfg->name, "warm",
             "%s: seasonal forecast warmed with %u buckets of %.0f s from the history "
             "(season in use: %u buckets)", disk->cfg->name, b->len, bucket_s,
             shd_outlook_period (o));
}

static void
warm_from_history (ShdDisk *disk)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) load = NULL;
  gint64 max_age = (gint64) (600 * disk->interval_s * 1000);

  disk->warmed = TRUE;
  if (disk->history == NULL)
    return;
  load = shd_history_recent_load (disk->history, disk->cfg->name, 512,
                                  g_get_real_time () / 1000, max_age, &error);
  if (load == NULL) {
    shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "history", "%s", error->message);
    return;
  }
  if (load->len > 0) {
    shd_policy_warm (disk->policy, (double *) load->data, load->len);
    shd_log (G_LOG_LEVEL_INFO, disk->cfg->name, "warm",
             "%s: forecaster warmed with %u samples from the history",
             disk->cfg->name, load->len);
  }
  warm_buckets (disk);
}

#define REPAIR_FIRST_S 30        /* a degraded child is retried after this */
#define REPAIR_MAX_S 960        /* and then after twice as long, up to this */

/* The driver takes a degraded child back only at a reopen, which retries
 * it (docs/shadow-driver.md); nothing else would reopen the node while the
 * disk stays where it is.  So a reopen with the node's options as they
 * are, REPAIR_FIRST_S after a child degraded, then twice as long each time
 * one is still degraded.  A child that fails again only degrades again. */
static void
repair_degraded (ShdDisk *disk, const ShdShadowRates *rates, gboolean dry_run)
{
  const char *degraded = NULL;
  double now = policy_now (disk);

  for (guint i = 0; i < rates->children->len && !degraded; i++) {
    const ShdChildRates *cr = rates->children->pdata[i];

    if (g_strcmp0 (cr->state, "degraded") == 0)
      degraded = cr->node_name;
  }
  if (degraded == NULL) {
    disk->repair_t = 0;
    disk->repair_delay_s = 0;
    return;
  }
  if (disk->repair_t == 0) {
    disk->repair_delay_s = REPAIR_FIRST_S;
    disk->repair_t = now + disk->repair_delay_s;
    return;
  }
  if (now < disk->repair_t || dry_run || disk->reopen_in_flight)
    return;
  disk->repair_delay_s = MIN (2 * disk->repair_delay_s, REPAIR_MAX_S);
  disk->repair_t = now + disk->repair_delay_s;
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "repair",
           "%s: child %s is degraded: reopening %s to retry it (again in %.0f s "
           "if it still is)", disk->cfg->name, degraded, disk->cfg->node,
           disk->repair_delay_s);
  reopen (disk, rates->active, disk->write_sync_raised, FALSE);
}

static void
on_stats (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ShdDisk) disk = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) reply = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  ShdShadowRates *rates;
  const ShdShadowSample *sample;
  ShdPolicyInput in;
  const ShdDecision *d;
  gint64 now_us = g_get_monotonic_time (), wall_ms = g_get_real_time () / 1000;
  double pt = NAN, lo, hi = NAN;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;                     /* stopped */
  disk->query_in_flight = FALSE;
  if (reply == NULL) {
    if (!g_error_matches (error, SHD_QMP_ERROR, SHD_QMP_ERROR_DISCONNECTED))
      problem (disk, error->message);
    return;
  }
  rates = shd_collector_push (disk->coll, reply, now_us, &error);
  if (error) {
    problem (disk, error->message);
    return;
  }
  problem (disk, NULL);
  sample = shd_collector_last (disk->coll);
  g_ptr_array_set_size (disk->children, 0);
  for (guint i = 0; i < sample->children->len; i++) {
    const ShdChildSample *cs = sample->children->pdata[i];

    g_ptr_array_add (disk->children, g_strdup (cs->node_name));
  }
  if (g_strcmp0 (disk->metadata, sample->metadata) != 0) {
    g_free (disk->metadata);
    disk->metadata = g_strdup (sample->metadata);
    if (disk->metadata && disk->cfg->metadata && strcmp (disk->metadata, disk->cfg->metadata))
      shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "metadata",
               "%s: node %s's metadata child is %s, not %s as configured: its reopens "
               "name %s", disk->cfg->name, disk->cfg->node, disk->metadata,
               disk->cfg->metadata, disk->metadata);
  }
  if (rates == NULL)
    return;                     /* the first sample: nothing to compare with */
  if (!disk->warmed)
    warm_from_history (disk);
  g_clear_pointer (&disk->rates, shd_shadow_rates_free);
  disk->rates = rates;
  disk->samples++;

  shd_policy_input_init (&in);
  in.t = (now_us - disk->t0_us) / 1e6;
  in.wall = wall_ms / 1000.0;
  in.valid = rates->valid;
  in.iops = rates->io.read_iops + rates->io.write_iops;
  in.bps = rates->io.read_bps + rates->io.write_bps;
  in.latency_ms = rates->io.latency_ms;
  in.active = rates->active;
  in.size_bytes = disk->size_bytes;
  for (guint i = 0; i < rates->children->len && in.n_children < SHD_POLICY_MAX_TIERS; i++) {
    const ShdChildRates *cr = rates->children->pdata[i];
    ShdPolicyChild *c = &in.children[in.n_children++];

    c->child = cr->node_name;
    c->state = cr->state;
    c->valid = cr->valid;
    c->iops = cr->io.read_iops + cr->io.write_iops;
    c->latency_ms = cr->io.latency_ms;
    c->copy_bps = cr->copy_bps;
    c->valid_bytes = cr->valid_bytes;
  }
  if (disk->alloc_fresh) {
    for (guint i = 0; i < SHD_POLICY_MAX_TIERS; i++)
      in.allocated[i] = disk->alloc[i];
    disk->alloc_fresh = FALSE;
  }
  in.reopen_in_flight = disk->reopen_in_flight;
  d = shd_policy_step (disk->policy, &in);
  disk->last_step_wall_ms = wall_ms;
  if (d->bucket_closed && disk->history &&
      !shd_history_add_bucket (disk->history, disk->cfg->name,
                               shd_outlook_bucket_s (shd_policy_outlook (disk->policy)),
                               d->bucket_index, d->bucket_value, &error))
    shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "history", "%s", error->message);
  g_clear_error (&error);

  if (!d->dry_run && d->action == SHD_ACTION_RELEASE && !disk->release_in_flight) {
    shd_disk_release_tier (disk, d->target);
  } else if (!d->dry_run && disk->reopen_in_flight) {
    /* the policy decides its own switches again at the next step, and
     * holds the operator's (in.reopen_in_flight) */
  } else if (!d->dry_run) {
    if (d->action == SHD_ACTION_SWITCH) {
      reopen (disk, shd_policy_config (disk->policy)->tiers[d->target].child, FALSE, TRUE);
    } else if (d->action == SHD_ACTION_PREWARM && d->target >= 0 &&
               shd_policy_profile (disk->policy, d->target)->state == NULL) {
      add_child (disk, d->target);
    } else if (d->action == SHD_ACTION_PREWARM) {
      shd_disk_raise_write_sync (disk);
    }
  }
  record (disk, d, wall_ms);
  repair_degraded (disk, rates, d->dry_run);
  shd_move_tick (disk);

  if (disk->history) {
    ShdHistorySample hs = {
      .disk = disk->cfg->name, .t_ms = wall_ms, .iops = in.iops,
      .read_iops = rates->io.read_iops, .write_iops = rates->io.write_iops,
      .bps = in.bps, .latency_ms = in.latency_ms, .forecast = NAN, .forecast_hi = NAN,
      .tier = shd_policy_tier_name (disk->policy, shd_policy_tier_by_child (disk->policy, rates->active)),
    };

    if (shd_policy_forecast (disk->policy, 1, &pt, &lo, &hi)) {
      hs.forecast = pt;
      hs.forecast_hi = hi;
    }
    if (!shd_history_add_sample (disk->history, &hs, &error))
      shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "history", "%s", error->message);
  }
}

static void read_nodes (ShdDisk *disk);

static double
nodes_every (ShdDisk *disk)
{
  const ShdOutlook *o = shd_policy_outlook (disk->policy);
  double every = o ? MIN (NODES_EVERY_S, shd_outlook_bucket_s (o)) : NODES_EVERY_S;

  return MAX (every, disk->interval_s) - 0.05;
}

static gboolean
on_timer (gpointer data)
{
  ShdDisk *disk = data;
  JsonObject *args;

  if (!shd_qmp_is_ready (disk->qmp))
    return G_SOURCE_CONTINUE;
  if (disk->query_in_flight) {
    disk->skipped++;
    return G_SOURCE_CONTINUE;
  }
  args = json_object_new ();
  json_object_set_boolean_member (args, "query-nodes", TRUE);
  disk->query_in_flight = TRUE;
  shd_qmp_execute_async (disk->qmp, "query-blockstats", args, 0, disk->cancel,
                         on_stats, g_object_ref (disk));
  json_object_unref (args);
  if (!disk->nodes_in_flight && policy_now (disk) - disk->nodes_t >= nodes_every (disk))
    read_nodes (disk);
  return G_SOURCE_CONTINUE;
}

/* What each tier's image has allocated: the tier's node's actual-size
 * (through filters, QEMU reports its file's); 0 when the node is gone.
 * Where QEMU does not know it (rbd), the node's whole size, which bounds
 * it from above: a cost is never under-counted; 0 once a release emptied
 * the image, while the tier's child stays out of the node.
 * Into the policy's cost at the next step, and into the history. */
static void
note_allocation (ShdDisk *disk, JsonNode *nodes)
{
  const ShdPolicyConfig *pc = shd_policy_config (disk->policy);
  gint64 wall_ms = g_get_real_time () / 1000;
  int active = shd_policy_active (disk->policy);

  for (guint i = 0; i < pc->n_tiers; i++) {
    gint64 a = shd_block_nodes_allocated (nodes, pc->tiers[i].child);
    g_autoptr (GError) error = NULL;

    for (guint j = 0; j < disk->children->len; j++)
      if (strcmp (disk->children->pdata[j], pc->tiers[i].child) == 0)
        disk->emptied[i] = FALSE;       /* in the node: it holds a copy again */
    if (a == SHD_BLOCK_ALLOCATED_UNKNOWN && disk->emptied[i]) {
      a = 0;
    } else if (a == SHD_BLOCK_ALLOCATED_UNKNOWN) {
      a = shd_block_nodes_virtual_size (nodes, pc->tiers[i].child);
      if (!disk->alloc_unknown_logged[i])
        shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "allocation",
                 "%s: QEMU does not say what %s (tier %s) allocates: it is charged "
                 "at its whole size, %.1f MiB", disk->cfg->name, pc->tiers[i].child,
                 pc->tiers[i].tier, a / 1048576.0);
      disk->alloc_unknown_logged[i] = TRUE;
    }
    disk->node_seen[i] = shd_block_nodes_virtual_size (nodes, pc->tiers[i].child) >= 0;
    disk->alloc[i] = a < 0 ? 0 : (double) a;
    if (disk->history &&
        !shd_history_add_tier_sample (disk->history, disk->cfg->name, wall_ms,
                                      pc->tiers[i].tier, disk->alloc[i],
                                      shd_tier_phase_name (shd_policy_tier_life (disk->policy,
                                                                                 i)->phase),
                                      (int) i == active, &error))
      shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "history", "%s", error->message);
  }
  disk->alloc_fresh = TRUE;
}

static void
on_nodes (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ShdDisk) disk = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) reply = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  JsonArray *a;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  disk->nodes_in_flight = FALSE;
  if (reply == NULL || !JSON_NODE_HOLDS_ARRAY (reply))
    return;
  note_allocation (disk, reply);
  a = json_node_get_array (reply);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *n = json_array_get_object_element (a, i);
    JsonObject *img;

    if (n == NULL || g_strcmp0 (json_object_get_string_member_with_default (n, "node-name", ""),
                                disk->cfg->node) != 0)
      continue;
    if (g_strcmp0 (json_object_get_string_member_with_default (n, "drv", ""), "shadow") != 0)
      shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "not-shadow",
               "%s: node %s is a %s node, not a shadow node", disk->cfg->name,
               disk->cfg->node, json_object_get_string_member_with_default (n, "drv", "?"));
    img = json_object_get_object_member (n, "image");
    if (img && json_object_has_member (img, "virtual-size"))
      disk->size_bytes = json_object_get_int_member (img, "virtual-size");
    return;
  }
  problem (disk, "the node is not in query-named-block-nodes");
}

static void
read_nodes (ShdDisk *disk)
{
  JsonObject *args = json_object_new ();

  disk->nodes_in_flight = TRUE;
  disk->nodes_t = policy_now (disk);
  json_object_set_boolean_member (args, "flat", TRUE);
  shd_qmp_execute_async (disk->qmp, "query-named-block-nodes", args, 0, disk->cancel,
                         on_nodes, g_object_ref (disk));
  json_object_unref (args);
}

static void
on_ready (ShdQmp *qmp, gpointer data)
{
  ShdDisk *disk = data;

  /* anything may have changed while away: start the counters afresh and
   * re-read the node */
  shd_collector_reset (disk->coll);
  disk->query_in_flight = FALSE;
  disk->reopen_in_flight = FALSE;
  disk->write_sync_raised = FALSE;
  disk->nodes_in_flight = FALSE;
  disk->release_in_flight = FALSE;
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "connected",
           "%s: connected to %s (connection %u)", disk->cfg->name,
           shd_qmp_get_path (qmp), shd_qmp_get_connection_count (qmp));
  read_nodes (disk);
  on_timer (disk);
}

static void
on_disconnected (ShdQmp *qmp, const char *reason, gpointer data)
{
  ShdDisk *disk = data;

  (void) qmp;
  disk->query_in_flight = FALSE;
  disk->reopen_in_flight = FALSE;
  shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "disconnected",
           "%s: QMP connection lost: %s; reconnecting", disk->cfg->name, reason);
}

/* ---- the shadow node's events ---- */

static void
on_switched (ShdDisk *disk, JsonObject *data, const char *child)
{
  disk->last_pause_ms = json_object_get_int_member_with_default (data, "pause-ns", 0) / 1e6;
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "switched",
           "%s: switched %s -> %s, guest I/O paused %.3f ms", disk->cfg->name,
           json_object_get_string_member_with_default (data, "old-child", "?"), child,
           disk->last_pause_ms);
}

static void
on_degraded (ShdDisk *disk, JsonObject *data, const char *child)
{
  shd_log (G_LOG_LEVEL_WARNING, disk->cfg->name, "degraded", "%s: child %s degraded: %s",
           disk->cfg->name, child,
           json_object_get_string_member_with_default (data, "error", "?"));
}

static void
on_synced (ShdDisk *disk, JsonObject *data, const char *child)
{
  (void) data;
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "synced", "%s: child %s is synced",
           disk->cfg->name, child);
}

static const struct {
  const char *name;
  void (*func) (ShdDisk *disk, JsonObject *data, const char *child);
} shadow_events[] = {
  { "SHADOW_SWITCHED", on_switched },
  { "SHADOW_CHILD_DEGRADED", on_degraded },
  { "SHADOW_CHILD_SYNCED", on_synced },
};

static void
on_event (ShdQmp *qmp, const char *name, JsonObject *data, gint64 ts, gpointer user)
{
  ShdDisk *disk = user;
  const char *node = json_object_get_string_member_with_default (data, "node-name", "");

  (void) qmp;
  (void) ts;
  if (strcmp (node, disk->cfg->node) != 0)
    return;                     /* another node's, or not a shadow node's event */
  for (guint i = 0; i < G_N_ELEMENTS (shadow_events); i++)
    if (strcmp (name, shadow_events[i].name) == 0)
      shadow_events[i].func (disk, data,
                             json_object_get_string_member_with_default (data, "child", "?"));
}

ShdDisk *
shd_disk_new (const ShdConfig *c, ShdDiskConfig *d, ShdHistory *history, GError **error)
{
  return shd_disk_new_with_qmp (c, d, history, NULL, error);
}

ShdDisk *
shd_disk_new_with_qmp (const ShdConfig *c, ShdDiskConfig *d, ShdHistory *history,
                       ShdQmp *qmp, GError **error)
{
  ShdDisk *disk;
  ShdPolicyConfig pc;
  ShdQmpConfig qc;

  if (!shd_config_disk_policy (c, d, &pc, error))
    return NULL;
  disk = g_object_new (SHD_TYPE_DISK, NULL);
  disk->cfg = shd_disk_config_ref (d);
  disk->interval_s = c->interval_s;
  disk->history = history ? shd_history_ref (history) : NULL;
  disk->policy = shd_policy_new (&pc);
  shd_policy_config_clear (&pc);
  disk->coll = shd_collector_new (d->node);
  shd_qmp_config_init (&qc);
  qc.command_timeout_ms = c->qmp_timeout_ms;
  if (qmp) {
    disk->qmp = g_object_ref (qmp);
  } else {
    disk->qmp = shd_qmp_new (d->qmp, &qc);
    disk->own_qmp = TRUE;
  }
  disk->sig_ready = g_signal_connect (disk->qmp, "ready", G_CALLBACK (on_ready), disk);
  disk->sig_disconnected = g_signal_connect (disk->qmp, "disconnected",
                                             G_CALLBACK (on_disconnected), disk);
  disk->sig_event = g_signal_connect (disk->qmp, "event", G_CALLBACK (on_event), disk);
  return disk;
}

void
shd_disk_start (ShdDisk *disk)
{
  guint ms = (guint) MAX (disk->interval_s * 1000, 10);

  g_return_if_fail (!disk->stopped && disk->timer == 0);
  shd_move_restore (disk);
  disk->timer = g_timeout_add (ms, on_timer, disk);
  if (disk->own_qmp)
    shd_qmp_start (disk->qmp);
  else if (shd_qmp_is_ready (disk->qmp))
    on_ready (disk->qmp, disk);
}

void
shd_disk_stop (ShdDisk *disk)
{
  if (disk->stopped)
    return;
  disk->stopped = TRUE;
  g_cancellable_cancel (disk->cancel);
  g_clear_handle_id (&disk->timer, g_source_remove);
  g_clear_signal_handler (&disk->sig_ready, disk->qmp);
  g_clear_signal_handler (&disk->sig_disconnected, disk->qmp);
  g_clear_signal_handler (&disk->sig_event, disk->qmp);
  if (disk->own_qmp)
    shd_qmp_stop (disk->qmp);
}

static void
shd_disk_dispose (GObject *object)
{
  ShdDisk *disk = SHD_DISK (object);

  if (disk->qmp) {
    shd_disk_stop (disk);
    g_clear_object (&disk->qmp);
  }
  G_OBJECT_CLASS (shd_disk_parent_class)->dispose (object);
}

static void
shd_disk_finalize (GObject *object)
{
  ShdDisk *disk = SHD_DISK (object);

  g_clear_pointer (&disk->move, shd_move_free);
  g_object_unref (disk->cancel);
  shd_policy_free (disk->policy);
  shd_collector_free (disk->coll);
  g_ptr_array_unref (disk->children);
  g_free (disk->metadata);
  g_clear_pointer (&disk->rates, shd_shadow_rates_free);
  g_queue_clear_full (&disk->decisions, (GDestroyNotify) json_node_unref);
  g_free (disk->problem);
  g_clear_pointer (&disk->history, shd_history_unref);
  shd_disk_config_unref (disk->cfg);
  G_OBJECT_CLASS (shd_disk_parent_class)->finalize (object);
}

static void
shd_disk_class_init (ShdDiskClass *klass)
{
  GObjectClass *oc = G_OBJECT_CLASS (klass);

  oc->dispose = shd_disk_dispose;
  oc->finalize = shd_disk_finalize;
}

static void
shd_disk_init (ShdDisk *disk)
{
  disk->cancel = g_cancellable_new ();
  disk->children = g_ptr_array_new_with_free_func (g_free);
  disk->last_recorded_kind = -1;
  disk->last_recorded_target = -2;
  disk->last_pause_ms = NAN;
  disk->t0_us = g_get_monotonic_time ();
  for (guint i = 0; i < SHD_POLICY_MAX_TIERS; i++) {
    disk->add_sent_t[i] = -INFINITY;
    disk->alloc[i] = NAN;
  }
  disk->nodes_t = -INFINITY;
  g_queue_init (&disk->decisions);
}

/* ---- operator commands ---- */

static int
find_tier (ShdDisk *disk, const char *tier, GError **error)
{
  int i = shd_policy_tier_by_name (disk->policy, tier);

  if (i < 0)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                 "disk %s has no tier '%s'", disk->cfg->name, tier);
  return i;
}

/* An operator's request that would change the node under a running move
 * (which may be retiring that very tier) waits for its end */
static gboolean
refuse_during_move (ShdDisk *disk, const char *what, GError **error)
{
  if (!shd_move_running (disk->move))
    return FALSE;
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "disk %s is moving to %s (%s); "
               "%s once the move has ended%s", disk->cfg->name,
               shd_policy_tier_name (disk->policy, shd_move_target (disk->move)),
               shd_move_state_name (shd_move_state (disk->move)), what,
               shd_move_state (disk->move) < SHD_MOVE_SWITCHING ? ", or abort it" : "");
  return TRUE;
}

gboolean
shd_disk_request_switch (ShdDisk *disk, const char *tier, GError **error)
{
  int i = find_tier (disk, tier, error);

  if (i < 0 || refuse_during_move (disk, "switch", error))
    return FALSE;
  shd_policy_request_switch (disk->policy, i);
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "request",
           "%s: operator requested a switch to %s", disk->cfg->name, tier);
  return TRUE;
}

void
shd_disk_set_paused (ShdDisk *disk, gboolean paused)
{
  if (shd_move_running (disk->move)) {
    shd_move_set_paused_after (disk->move, paused);
    shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, paused ? "paused" : "resumed",
             "%s: a move is running: %s once it ends", disk->cfg->name,
             paused ? "paused" : "resumed");
    return;
  }
  if (shd_policy_paused (disk->policy) != paused)
    shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, paused ? "paused" : "resumed",
             "%s: %s", disk->cfg->name, paused ? "paused: deciding, not acting" : "resumed");
  shd_policy_set_paused (disk->policy, paused);
}

static JsonObject *
tier_json (ShdDisk *disk, int i)
{
  const ShdPolicyConfig *pc = shd_policy_config (disk->policy);
  const ShdTierProfile *pr = shd_policy_profile (disk->policy, i);
  JsonObject *o = json_object_new ();
  guint64 stale = disk->size_bytes > pr->valid_bytes ? disk->size_bytes - pr->valid_bytes : 0;

  json_object_set_string_member (o, "name", pc->tiers[i].tier);
  json_object_set_string_member (o, "child", pc->tiers[i].child);
  shd_json_set_str (o, "state", pr->state);
  json_object_set_double_member (o, "cost-gib-month", pc->tiers[i].cost_gib_month);
  shd_json_set_num (o, "latency-ms", pr->latency_ms);
  shd_json_set_num (o, "base-latency-ms", pr->base_latency_ms);
  shd_json_set_num (o, "capacity-iops", pr->capacity_iops > 0 ? pr->capacity_iops : NAN);
  shd_json_set_num (o, "limit-iops", shd_policy_tier_limit (disk->policy, i));
  json_object_set_int_member (o, "valid-bytes", pr->valid_bytes);
  json_object_set_int_member (o, "stale-bytes", disk->size_bytes ? stale : 0);
  shd_json_set_num (o, "copy-bps", pr->copy_bps);
  shd_json_set_num (o, "copy-rate-idle-bps", pr->copy_rate0);
  /* the lifecycle and what the tier costs (policy.h, cost.h) */
  {
    const ShdTierLife *l = shd_policy_tier_life (disk->policy, i);
    const ShdCost *c = shd_policy_cost (disk->policy);
    double now = policy_now (disk), wall = g_get_real_time () / 1e6;

    json_object_set_string_member (o, "phase", shd_tier_phase_name (l->phase));
    shd_json_set_num (o, "warm-start", isfinite (l->warm_start_t) ? wall - (now - l->warm_start_t) : NAN);
    shd_json_set_num (o, "ready-time", isfinite (l->ready_t) ? wall - (now - l->ready_t) : NAN);
    shd_json_set_num (o, "released-time", isfinite (l->released_t) ? wall - (now - l->released_t) : NAN);
    json_object_set_int_member (o, "warms", l->warms);
    json_object_set_int_member (o, "releases", l->releases);
    shd_json_set_num (o, "allocated-bytes", disk->alloc[i]);
    shd_json_set_num (o, "gib-hours", shd_cost_gib_hours (c, i));
    shd_json_set_num (o, "cost", shd_cost_amount (c, i, pc->tiers[i].cost_gib_month));
  }
  return o;
}

JsonNode *
shd_disk_prewarm (ShdDisk *disk, const char *tier, GError **error)
{
  int i = find_tier (disk, tier, error);
  const ShdTierProfile *pr;
  JsonObject *o;
  JsonNode *n;
  double eta = NAN;

  if (i < 0 || refuse_during_move (disk, "pre-warm", error))
    return NULL;
  pr = shd_policy_profile (disk->policy, i);
  o = tier_json (disk, i);
  if (pr->state == NULL) {
    if (!shd_qmp_is_ready (disk->qmp)) {
      json_object_unref (o);
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED, "disk %s is not connected",
                   disk->cfg->name);
      return NULL;
    }
    disk->add_sent_t[i] = -INFINITY;
    add_child (disk, i);
    json_object_set_boolean_member (o, "adding", TRUE);
  }
  if (!disk->write_sync_raised && shd_disk_raise_write_sync (disk))
    json_object_set_boolean_member (o, "write-mode-raised", TRUE);
  if (pr->state && (strcmp (pr->state, "synced") == 0 || strcmp (pr->state, "active") == 0))
    eta = 0;
  else if (isfinite (pr->copy_bps) && pr->copy_bps > 0 && disk->size_bytes)
    eta = (disk->size_bytes - MIN (disk->size_bytes, pr->valid_bytes)) / pr->copy_bps;
  shd_json_set_num (o, "eta-s", eta);
  n = json_node_new (JSON_NODE_OBJECT);
  json_node_take_object (n, o);
  return n;
}

JsonNode *
shd_disk_decisions (ShdDisk *disk, guint limit)
{
  JsonArray *a = json_array_new ();
  JsonNode *n = json_node_new (JSON_NODE_ARRAY);
  guint skip = limit && disk->decisions.length > limit ? disk->decisions.length - limit : 0;
  guint i = 0;

  for (GList *l = disk->decisions.head; l; l = l->next, i++) {
    JsonNode *copy;

    if (i < skip)
      continue;
    copy = json_node_copy (l->data);
    json_object_set_string_member (json_node_get_object (copy), "disk", disk->cfg->name);
    json_array_add_element (a, copy);
  }
  json_node_take_array (n, a);
  return n;
}

JsonNode *
shd_disk_forecast (ShdDisk *disk, guint steps)
{
  JsonObject *o = json_object_new ();
  JsonArray *a = json_array_new ();
  JsonNode *n = json_node_new (JSON_NODE_OBJECT);
  double pt, lo, hi;

  if (steps == 0)
    steps = shd_policy_horizon_steps (disk->policy);
  steps = MIN (steps, 3600);
  json_object_set_string_member (o, "name", disk->cfg->name);
  json_object_set_string_member (o, "model", shd_policy_model (disk->policy));
  json_object_set_double_member (o, "interval-s", disk->interval_s);
  json_object_set_double_member (o, "level", shd_policy_config (disk->policy)->knobs.level);
  for (guint h = 1; h <= steps; h++) {
    JsonObject *e;

    if (!shd_policy_forecast (disk->policy, h, &pt, &lo, &hi))
      break;
    e = json_object_new ();
    json_object_set_int_member (e, "step", h);
    json_object_set_double_member (e, "seconds", h * disk->interval_s);
    shd_json_set_num (e, "iops", pt);
    shd_json_set_num (e, "lower", lo);
    shd_json_set_num (e, "upper", hi);
    json_array_add_object_element (a, e);
  }
  json_object_set_array_member (o, "forecast", a);
  json_node_take_object (n, o);
  return n;
}

#define RECOMMEND_EVERY_S 600      /* the history is read this often */
#define RECOMMEND_SOON_S 5         /* ... or this often, with too little of it */
#define RECOMMEND_WINDOW_S (7 * 86400.0)

/* Whether to recommend a permanent move, from the tier that served each
 * minute of the last week (recommend.h) */
static const ShdRecommendation *
recommendation (ShdDisk *disk)
{
  const ShdPolicyConfig *pc = shd_policy_config (disk->policy);
  gint64 now = g_get_monotonic_time ();
  double seconds[SHD_POLICY_MAX_TIERS] = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) rows = NULL;
  JsonArray *a;

  /* read again soon while too little is known for a recommendation */
  if (disk->recommend_us && now - disk->recommend_us <
      (disk->recommend.measured_s < SHD_RECOMMEND_MIN_S ? RECOMMEND_SOON_S :
       RECOMMEND_EVERY_S) * G_USEC_PER_SEC)
    return &disk->recommend;
  disk->recommend_us = now;
  if (disk->history)
    rows = shd_history_samples (disk->history, disk->cfg->name,
                                g_get_real_time () / 1000 - (gint64) (RECOMMEND_WINDOW_S * 1000),
                                G_MAXINT64, SHD_HISTORY_MINUTE, 0, &error);
  a = rows && JSON_NODE_HOLDS_ARRAY (rows) ? json_node_get_array (rows) : NULL;
  for (guint i = 0; a && i < json_array_get_length (a); i++) {
    JsonObject *r = json_array_get_object_element (a, i);
    int t = shd_policy_tier_by_name (disk->policy,
                                     json_object_get_string_member_with_default (r, "tier", ""));

    if (t >= 0)
      seconds[t] += json_object_get_int_member_with_default (r, "samples", 0) *
                    disk->interval_s;
  }
  shd_recommend (pc, seconds, pc->n_tiers,
                 disk->move && shd_move_state (disk->move) == SHD_MOVE_DONE ?
                 shd_move_target (disk->move) : -1, &disk->recommend);
  return &disk->recommend;
}

JsonNode *
shd_disk_status (ShdDisk *disk)
{
  ShdPolicy *p = disk->policy;
  const ShdPolicyConfig *pc = shd_policy_config (p);
  const ShdDecision *d = shd_policy_last (p);
  JsonObject *o = json_object_new (), *load = json_object_new (), *fc = json_object_new ();
  JsonArray *tiers = json_array_new ();
  JsonNode *n = json_node_new (JSON_NODE_OBJECT);
  int active = disk->rates ? shd_policy_tier_by_child (p, disk->rates->active) : -1;
  double pt, lo, hi;

  json_object_set_string_member (o, "name", disk->cfg->name);
  json_object_set_string_member (o, "node", disk->cfg->node);
  json_object_set_string_member (o, "qmp", disk->cfg->qmp);
  json_object_set_boolean_member (o, "connected", shd_qmp_is_ready (disk->qmp));
  json_object_set_int_member (o, "connections", shd_qmp_get_connection_count (disk->qmp));
  shd_json_set_str (o, "active-tier", shd_policy_tier_name (p, active));
  shd_json_set_str (o, "active-child", disk->rates ? disk->rates->active : NULL);
  if (pc->dry_run)
    shd_json_set_str (o, "decided-tier", shd_policy_tier_name (p, shd_policy_active (p)));
  json_object_set_boolean_member (o, "dry-run", pc->dry_run);
  json_object_set_boolean_member (o, "paused", shd_policy_paused (p));
  json_object_set_double_member (o, "slo-latency-ms", pc->slo_latency_ms);
  json_object_set_int_member (o, "size-bytes", disk->size_bytes);
  shd_json_set_str (o, "problem", disk->problem);
  json_object_set_int_member (o, "samples", disk->samples);
  json_object_set_int_member (o, "switches", shd_policy_switch_count (p));
  shd_json_set_num (o, "last-switch-pause-ms", disk->last_pause_ms);

  if (disk->rates) {
    const ShdIoRates *io = &disk->rates->io;

    json_object_set_boolean_member (load, "valid", disk->rates->valid);
    shd_json_set_num (load, "iops", io->read_iops + io->write_iops);
    shd_json_set_num (load, "read-iops", io->read_iops);
    shd_json_set_num (load, "write-iops", io->write_iops);
    shd_json_set_num (load, "bps", io->read_bps + io->write_bps);
    shd_json_set_num (load, "latency-ms", io->latency_ms);
    shd_json_set_num (load, "queue-depth", io->queue_depth);
  }
  json_object_set_object_member (o, "load", load);

  json_object_set_string_member (fc, "model", shd_policy_model (p));
  json_object_set_double_member (fc, "horizon-s", pc->knobs.horizon_s);
  if (shd_policy_forecast (p, 1, &pt, &lo, &hi)) {
    shd_json_set_num (fc, "next", pt);
    shd_json_set_num (fc, "lower", lo);
    shd_json_set_num (fc, "upper", hi);
  }
  shd_json_set_num (fc, "horizon-upper", d->forecast_hi);
  json_object_set_boolean_member (fc, "spike", d->spike);
  json_object_set_object_member (o, "forecast", fc);

  for (guint i = 0; i < pc->n_tiers; i++)
    json_array_add_object_element (tiers, tier_json (disk, i));
  json_object_set_array_member (o, "tiers", tiers);
  {
    const ShdCost *c = shd_policy_cost (p);
    const ShdOutlook *ol = shd_policy_outlook (p);
    JsonObject *co = json_object_new ();
    double total = 0;

    for (guint i = 0; i < pc->n_tiers; i++)
      total += shd_cost_amount (c, i, pc->tiers[i].cost_gib_month);
    json_object_set_double_member (co, "total", total);
    json_object_set_double_member (co, "violation-s", c->violation_s);
    json_object_set_double_member (co, "accounted-s", c->seconds);
    json_object_set_object_member (o, "cost", co);
    json_object_set_int_member (o, "releases", shd_policy_release_count (p));
    if (ol) {
      JsonObject *so = json_object_new ();

      json_object_set_double_member (so, "bucket-s", shd_outlook_bucket_s (ol));
      json_object_set_int_member (so, "buckets", shd_outlook_count (ol));
      json_object_set_int_member (so, "season-buckets", shd_outlook_period (ol));
      shd_json_set_str (so, "model", shd_outlook_period (ol) ? shd_outlook_model (ol) : NULL);
      shd_json_set_num (so, "onset-s", d->onset_s);
      shd_json_set_num (so, "peak", d->outlook_peak);
      json_object_set_object_member (fc, "seasonal", so);
    }
  }
  json_object_set_member (o, "last-decision",
                          shd_decision_to_json (d, p, disk->last_step_wall_ms));
  if (disk->move)
    json_object_set_object_member (o, "move", shd_move_status (disk->move));
  {
    const ShdRecommendation *r = recommendation (disk);
    JsonObject *ro = json_object_new ();

    json_object_set_boolean_member (ro, "move", r->recommended);
    shd_json_set_str (ro, "tier", shd_policy_tier_name (p, r->tier));
    shd_json_set_num (ro, "share", r->tier >= 0 ? r->share : NAN);
    json_object_set_double_member (ro, "measured-s", r->measured_s);
    json_object_set_double_member (ro, "others-cost-gib-month", r->others_cost_month);
    json_object_set_string_member (ro, "reason", r->reason);
    json_object_set_object_member (o, "recommendation", ro);
  }
  json_node_take_object (n, o);
  return n;
}

/* ---- Prometheus ---- */

static const ShdMetricFamily families[] = {
  { "shadowd_disk_connected", SHD_METRIC_GAUGE, "1 while the disk's QMP connection is ready" },
  { "shadowd_disk_qmp_connections_total", SHD_METRIC_COUNTER,
    "QMP connections negotiated, reconnections included" },
  { "shadowd_disk_samples_total", SHD_METRIC_COUNTER, "Intervals sampled" },
  { "shadowd_disk_samples_skipped_total", SHD_METRIC_COUNTER,
    "Intervals skipped because the previous query-blockstats was still in flight" },
  { "shadowd_disk_switches_total", SHD_METRIC_COUNTER, "Tier switches decided" },
  { "shadowd_disk_reopen_failures_total", SHD_METRIC_COUNTER, "Failed blockdev-reopen commands" },
  { "shadowd_disk_paused", SHD_METRIC_GAUGE, "1 while the operator paused the disk" },
  { "shadowd_disk_dry_run", SHD_METRIC_GAUGE, "1 when the disk decides without acting" },
  { "shadowd_disk_slo_latency_seconds", SHD_METRIC_GAUGE, "The disk's latency objective" },
  { "shadowd_disk_spike", SHD_METRIC_GAUGE, "1 while a load spike is in progress" },
  { "shadowd_disk_iops", SHD_METRIC_GAUGE, "Guest-facing operations per second, by op" },
  { "shadowd_disk_bytes_per_second", SHD_METRIC_GAUGE, "Guest-facing bytes per second, by op" },
  { "shadowd_disk_latency_seconds", SHD_METRIC_GAUGE,
    "Mean latency of reads and writes over the last interval" },
  { "shadowd_disk_queue_depth", SHD_METRIC_GAUGE, "Mean requests in flight (Little's law)" },
  { "shadowd_disk_forecast_iops", SHD_METRIC_GAUGE, "Point forecast of the next interval's load" },
  { "shadowd_disk_forecast_upper_iops", SHD_METRIC_GAUGE,
    "Upper bound of the next interval's load" },
  { "shadowd_disk_forecast_horizon_upper_iops", SHD_METRIC_GAUGE,
    "Highest upper bound of the load over the policy's horizon" },
  { "shadowd_disk_cost_gib_month", SHD_METRIC_GAUGE, "Cost per GiB and month of the active tier" },
  { "shadowd_disk_tier_active", SHD_METRIC_GAUGE, "1 for the tier serving guest I/O" },
  { "shadowd_disk_tier_state", SHD_METRIC_GAUGE,
    "1 for the tier's child state (active, synced, syncing, stale, degraded, absent)" },
  { "shadowd_disk_tier_latency_seconds", SHD_METRIC_GAUGE, "Last latency measured on the tier" },
  { "shadowd_disk_tier_base_latency_seconds", SHD_METRIC_GAUGE,
    "The tier's latency at light load, as measured or configured" },
  { "shadowd_disk_tier_capacity_iops", SHD_METRIC_GAUGE,
    "The load the tier was seen to carry at most, or its configured max-iops" },
  { "shadowd_disk_tier_limit_iops", SHD_METRIC_GAUGE,
    "The load the tier carries within the latency objective" },
  { "shadowd_disk_tier_valid_bytes", SHD_METRIC_GAUGE, "Bytes of the tier's child in step" },
  { "shadowd_disk_tier_allocated_bytes", SHD_METRIC_GAUGE,
    "Bytes the tier's image has allocated, as QEMU measures it" },
  { "shadowd_disk_tier_phase", SHD_METRIC_GAUGE,
    "1 for the tier's lifecycle phase (absent, warming, ready, active, degraded)" },
  { "shadowd_disk_tier_allocated_byte_seconds_total", SHD_METRIC_COUNTER,
    "Allocated bytes of the tier's image integrated over time since the agent started "
    "(divide by 3600 * 2^30 for GiB-hours)" },
  { "shadowd_disk_tier_cost_total", SHD_METRIC_COUNTER,
    "What the tier's image has cost since the agent started, at its cost-gib-month" },
  { "shadowd_disk_tier_releases_total", SHD_METRIC_COUNTER, "Times the tier's copy was released" },
  { "shadowd_disk_slo_violation_seconds_total", SHD_METRIC_COUNTER,
    "Seconds in which the active tier missed the latency objective" },
  { "shadowd_disk_move_recommended", SHD_METRIC_GAUGE,
    "1 when the disk spent most of the last week on the tier: a permanent move is recommended" },
  { "shadowd_disk_forecast_onset_seconds", SHD_METRIC_GAUGE,
    "Seconds until the seasonal forecast exceeds the active tier's limit (absent: not within "
    "the lookahead)" },
};

void
shd_disk_declare_metrics (ShdMetrics *m)
{
  shd_metrics_declare (m, families, G_N_ELEMENTS (families));
  shd_move_declare_metrics (m);
}

/* A sample unless v is unknown (NaN; infinity: unbounded) */
static void G_GNUC_NULL_TERMINATED
metric (ShdMetrics *m, const char *family, double v, const char *disk, ...)
{
  g_autoptr (GPtrArray) labels = g_ptr_array_new ();
  va_list ap;
  const char *s;

  if (!isfinite (v))
    return;
  g_ptr_array_add (labels, (gpointer) "disk");
  g_ptr_array_add (labels, (gpointer) disk);
  va_start (ap, disk);
  while ((s = va_arg (ap, const char *)) != NULL)
    g_ptr_array_add (labels, (gpointer) s);
  va_end (ap);
  g_ptr_array_add (labels, NULL);
  shd_metrics_addv (m, family, v, (const char *const *) labels->pdata);
}

void
shd_disk_collect_metrics (ShdDisk *disk, ShdMetrics *m)
{
  ShdPolicy *p = disk->policy;
  const ShdPolicyConfig *pc = shd_policy_config (p);
  const char *name = disk->cfg->name;
  const ShdDecision *d = shd_policy_last (p);
  int active = disk->rates ? shd_policy_tier_by_child (p, disk->rates->active) : -1;
  double pt, lo, hi;

  metric (m, "shadowd_disk_connected", shd_qmp_is_ready (disk->qmp), name, NULL);
  metric (m, "shadowd_disk_qmp_connections_total", shd_qmp_get_connection_count (disk->qmp),
          name, NULL);
  metric (m, "shadowd_disk_samples_total", disk->samples, name, NULL);
  metric (m, "shadowd_disk_samples_skipped_total", disk->skipped, name, NULL);
  metric (m, "shadowd_disk_switches_total", shd_policy_switch_count (p), name, NULL);
  metric (m, "shadowd_disk_reopen_failures_total", disk->reopen_failures, name, NULL);
  metric (m, "shadowd_disk_paused", shd_policy_paused (p), name, NULL);
  metric (m, "shadowd_disk_dry_run", pc->dry_run, name, NULL);
  metric (m, "shadowd_disk_slo_latency_seconds", pc->slo_latency_ms / 1000, name, NULL);
  metric (m, "shadowd_disk_spike", d->spike, name, NULL);
  if (disk->rates) {
    const ShdIoRates *io = &disk->rates->io;

    metric (m, "shadowd_disk_iops", io->read_iops, name, "op", "read", NULL);
    metric (m, "shadowd_disk_iops", io->write_iops, name, "op", "write", NULL);
    metric (m, "shadowd_disk_bytes_per_second", io->read_bps, name, "op", "read", NULL);
    metric (m, "shadowd_disk_bytes_per_second", io->write_bps, name, "op", "write", NULL);
    metric (m, "shadowd_disk_latency_seconds", io->latency_ms / 1000, name, NULL);
    metric (m, "shadowd_disk_queue_depth", io->queue_depth, name, NULL);
  }
  if (shd_policy_forecast (p, 1, &pt, &lo, &hi)) {
    metric (m, "shadowd_disk_forecast_iops", pt, name, NULL);
    metric (m, "shadowd_disk_forecast_upper_iops", hi, name, NULL);
  }
  metric (m, "shadowd_disk_forecast_horizon_upper_iops", d->forecast_hi, name, NULL);
  if (active >= 0)
    metric (m, "shadowd_disk_cost_gib_month", pc->tiers[active].cost_gib_month, name, NULL);
  for (guint i = 0; i < pc->n_tiers; i++) {
    const ShdTierProfile *pr = shd_policy_profile (p, i);
    const char *t = pc->tiers[i].tier;

    metric (m, "shadowd_disk_tier_active", (int) i == active, name, "tier", t, NULL);
    metric (m, "shadowd_disk_tier_state", 1, name, "tier", t,
            "state", pr->state ? pr->state : "absent", NULL);
    metric (m, "shadowd_disk_tier_latency_seconds", pr->latency_ms / 1000, name,
            "tier", t, NULL);
    metric (m, "shadowd_disk_tier_base_latency_seconds", pr->base_latency_ms / 1000, name,
            "tier", t, NULL);
    if (pr->capacity_iops > 0)
      metric (m, "shadowd_disk_tier_capacity_iops", pr->capacity_iops, name, "tier", t, NULL);
    metric (m, "shadowd_disk_tier_limit_iops", shd_policy_tier_limit (p, i), name,
            "tier", t, NULL);
    metric (m, "shadowd_disk_tier_valid_bytes", pr->valid_bytes, name, "tier", t, NULL);
    metric (m, "shadowd_disk_tier_allocated_bytes", disk->alloc[i], name, "tier", t, NULL);
    metric (m, "shadowd_disk_tier_phase", 1, name, "tier", t, "phase",
            shd_tier_phase_name (shd_policy_tier_life (p, i)->phase), NULL);
    metric (m, "shadowd_disk_tier_allocated_byte_seconds_total",
            shd_policy_cost (p)->byte_seconds[i], name, "tier", t, NULL);
    metric (m, "shadowd_disk_tier_cost_total",
            shd_cost_amount (shd_policy_cost (p), i, pc->tiers[i].cost_gib_month), name,
            "tier", t, NULL);
    metric (m, "shadowd_disk_tier_releases_total", shd_policy_tier_life (p, i)->releases, name,
            "tier", t, NULL);
  }
  metric (m, "shadowd_disk_slo_violation_seconds_total", shd_policy_cost (p)->violation_s,
          name, NULL);
  metric (m, "shadowd_disk_forecast_onset_seconds", d->onset_s, name, NULL);
  shd_move_collect_metrics (disk->move, name, m);
  if (recommendation (disk)->tier >= 0)
    metric (m, "shadowd_disk_move_recommended", disk->recommend.recommended, name, "tier",
            pc->tiers[disk->recommend.tier].tier, NULL);
}

/* Bucket i of an import: [index, value] */
static gboolean
import_entry (JsonArray *buckets, guint i, gint64 *index, double *value, GError **error)
{
  JsonArray *e = json_array_get_array_element (buckets, i);

  if (e == NULL || json_array_get_length (e) != 2 ||
      json_node_get_value_type (json_array_get_element (e, 0)) != G_TYPE_INT64) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "bucket %u is not [index, value]", i);
    return FALSE;
  }
  *index = json_array_get_int_element (e, 0);
  *value = json_node_get_value_type (json_array_get_element (e, 1)) == G_TYPE_INT64 ?
           json_array_get_int_element (e, 1) : json_array_get_double_element (e, 1);
  if (*index < 0 || !isfinite (*value) || *value < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "bucket %u: a negative index or value", i);
    return FALSE;
  }
  return TRUE;
}

JsonNode *
shd_disk_import_buckets (ShdDisk *disk, double bucket_s, JsonArray *buckets, GError **error)
{
  const ShdOutlook *o = shd_policy_outlook (disk->policy);
  JsonObject *r;
  JsonNode *n;
  guint stored = 0, len = json_array_get_length (buckets);
  gboolean older = FALSE;
  gint64 index;
  double value;

  if (o == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "disk %s does not forecast (forecast = false)", disk->cfg->name);
    return NULL;
  }
  if (fabs (bucket_s - shd_outlook_bucket_s (o)) > 1e-6) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "disk %s has buckets of %g s, not %g", disk->cfg->name,
                 shd_outlook_bucket_s (o), bucket_s);
    return NULL;
  }
  /* All or nothing; and whether some are older than what was learned
   * (shadowd ran for a while already): those cannot be learned on top */
  for (guint i = 0; i < len; i++) {
    if (!import_entry (buckets, i, &index, &value, error))
      return NULL;
    older |= index <= shd_outlook_last (o);
  }
  if (older)
    shd_policy_forget_buckets (disk->policy);
  for (guint i = 0; i < len; i++) {
    import_entry (buckets, i, &index, &value, NULL);
    if (disk->history) {
      g_autoptr (GError) e2 = NULL;

      if (!shd_history_add_bucket (disk->history, disk->cfg->name, bucket_s, index, value,
                                   &e2)) {
        g_propagate_error (error, g_steal_pointer (&e2));
        return NULL;
      }
      stored++;
    }
    if (!older || !disk->history)
      shd_policy_feed_bucket (disk->policy, index, value);
  }
  if (disk->history)
    shd_history_flush (disk->history, NULL);
  /* Learned again in order from the history, the import among them */
  if (older && disk->history)
    warm_buckets (disk);
  shd_log (G_LOG_LEVEL_MESSAGE, disk->cfg->name, "imported",
           "%s: %u buckets of %.0f s imported (%u stored)%s; season in use: %u buckets",
           disk->cfg->name, len, bucket_s, stored,
           !older ? "" : disk->history ? "; relearned with the history"
                                       : "; without a history, only these are learned",
           shd_outlook_period (o));
  r = json_object_new ();
  json_object_set_int_member (r, "imported", json_array_get_length (buckets));
  json_object_set_int_member (r, "stored", stored);
  json_object_set_int_member (r, "buckets", shd_outlook_count (o));
  json_object_set_int_member (r, "season-buckets", shd_outlook_period (o));
  n = json_node_new (JSON_NODE_OBJECT);
  json_node_take_object (n, r);
  return n;
}
