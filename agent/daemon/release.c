/* Releasing a tier: the policy decided nothing wants its copy (policy.h,
 * "released").  Three steps, each a callback holding the disk:
 *
 *  1. x-debug-query-block-graph: the name under which the tier's child
 *     hangs from the shadow node (children.N, which changes each time it
 *     is added again);
 *  2. x-blockdev-change {parent, child}: the driver removes it, or refuses
 *     when the child still holds the only valid copy of some chunks (the
 *     active child hydrating), which the policy hears as a failed release;
 *  3. with release = discard: query-named-block-nodes and the graph again
 *     say which file is under the tier's node, and when holes there zero
 *     exactly its data (blockgraph.h); discard.c punches them in a thread.
 *     Nothing writes the file any more: the child left the node.  An rbd
 *     image instead is emptied through QEMU (the node stays, open):
 *     block_resize of the tier's node to 0, which frees its objects, and
 *     back to its size.
 *
 * The tier's node stays in QEMU, so adding the child again (the next
 * pre-warm) needs nothing but x-blockdev-change; the copy starts over. */
#include "disk-private.h"

#include "blockgraph.h"
#include "discard.h"
#include "log.h"

#include <math.h>
#include <string.h>

typedef struct {
  ShdDisk *disk;                /* a reference */
  int tier;
  char *child;                  /* the tier's node */
  JsonNode *graph;
  gint64 size;                  /* the tier's node's, while an rbd image is emptied */
} ReleaseCtx;

static void
release_ctx_free (ReleaseCtx *ctx)
{
  g_object_unref (ctx->disk);
  g_free (ctx->child);
  g_clear_pointer (&ctx->graph, json_node_unref);
  g_free (ctx);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ReleaseCtx, release_ctx_free)

static const char *
tier_name (ReleaseCtx *ctx)
{
  return shd_policy_tier_name (shd_disk_policy (ctx->disk), ctx->tier);
}

static void
done (ReleaseCtx *ctx)
{
  ctx->disk->release_in_flight = FALSE;
  ctx->disk->release_end_samples = ctx->disk->samples;
  shd_disk_refresh_nodes (ctx->disk);
}

static void
failed (ReleaseCtx *ctx, const char *what, const char *why)
{
  shd_log (G_LOG_LEVEL_WARNING, ctx->disk->cfg->name, "release-failed",
           "%s: releasing %s (%s): %s: %s", ctx->disk->cfg->name, tier_name (ctx), ctx->child,
           what, why);
  shd_policy_release_failed (shd_disk_policy (ctx->disk), ctx->tier, why);
  done (ctx);
}

static void
on_discarded (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ReleaseCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  guint64 before = 0, after = 0;

  (void) src;
  if (!shd_discard_file_finish (res, &before, &after, &error)) {
    if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
      shd_log (G_LOG_LEVEL_WARNING, ctx->disk->cfg->name, "discard-failed",
               "%s: %s's child is out of the node, but its space was not given back: %s",
               ctx->disk->cfg->name, tier_name (ctx), error->message);
  } else {
    shd_log (G_LOG_LEVEL_MESSAGE, ctx->disk->cfg->name, "discarded",
             "%s: %s's image gave back %.1f MiB (%.1f MiB allocated before, %.1f now)",
             ctx->disk->cfg->name, tier_name (ctx),
             (before > after ? before - after : 0) / 1048576.0, before / 1048576.0,
             after / 1048576.0);
  }
  done (ctx);
}

static void
resize (ReleaseCtx *ctx, gint64 size, GAsyncReadyCallback done_cb)
{
  JsonObject *args = json_object_new ();
  ShdDisk *disk = ctx->disk;

  json_object_set_string_member (args, "node-name", ctx->child);
  json_object_set_int_member (args, "size", size);
  shd_qmp_execute_async (disk->qmp, "block_resize", args, 0, disk->cancel, done_cb, ctx);
  json_object_unref (args);
}

static void
on_rbd_regrown (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ReleaseCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ret == NULL) {
    /* Adding the child again is refused until it has the disk's size */
    shd_log (G_LOG_LEVEL_CRITICAL, ctx->disk->cfg->name, "discard-failed",
             "%s: %s's rbd image was emptied, but growing %s back to %" G_GINT64_FORMAT
             " bytes failed: %s; the tier cannot be added again until it is resized",
             ctx->disk->cfg->name, tier_name (ctx), ctx->child, ctx->size, error->message);
  } else {
    ctx->disk->emptied[ctx->tier] = TRUE;
    shd_log (G_LOG_LEVEL_MESSAGE, ctx->disk->cfg->name, "discarded",
             "%s: %s's rbd image gave back its space (%s resized to 0 and back to %.1f MiB)",
             ctx->disk->cfg->name, tier_name (ctx), ctx->child, ctx->size / 1048576.0);
  }
  done (ctx);
}

static void
on_rbd_shrunk (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ReleaseCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  gint64 size;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ret == NULL) {
    shd_log (G_LOG_LEVEL_WARNING, ctx->disk->cfg->name, "discard-failed",
             "%s: %s's child is out of the node, but its rbd image was not emptied: %s",
             ctx->disk->cfg->name, tier_name (ctx), error->message);
    done (ctx);
    return;
  }
  size = ctx->size;
  resize (g_steal_pointer (&ctx), size, on_rbd_regrown);
}

static void
on_nodes (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ReleaseCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) nodes = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  g_autofree char *why = NULL;
  g_autofree char *file = NULL;
  GCancellable *cancel;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (nodes == NULL) {
    shd_log (G_LOG_LEVEL_WARNING, ctx->disk->cfg->name, "discard-failed",
             "%s: %s's child is out of the node; its space stays: %s", ctx->disk->cfg->name,
             tier_name (ctx), error->message);
    done (ctx);
    return;
  }
  file = shd_block_graph_file_under (ctx->graph, nodes, ctx->child, &why);
  if (file == NULL) {
    g_autofree char *why_rbd = NULL;
    g_autofree char *rbd = shd_block_graph_rbd_under (ctx->graph, nodes, ctx->child, &why_rbd);

    ctx->size = shd_block_nodes_virtual_size (nodes, ctx->child);
    if (rbd != NULL && ctx->size > 0) {
      resize (g_steal_pointer (&ctx), 0, on_rbd_shrunk);
      return;
    }
    shd_log (G_LOG_LEVEL_WARNING, ctx->disk->cfg->name, "discard-skipped",
             "%s: %s's child is out of the node; its space stays: %s", ctx->disk->cfg->name,
             tier_name (ctx), why);
    done (ctx);
    return;
  }
  cancel = ctx->disk->cancel;
  shd_discard_file_async (file, cancel, on_discarded, g_steal_pointer (&ctx));
}

static void
on_removed (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ReleaseCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  JsonObject *args;
  ShdDisk *disk;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ret == NULL) {
    failed (ctx, "x-blockdev-change", error->message);
    return;
  }
  shd_log (G_LOG_LEVEL_MESSAGE, ctx->disk->cfg->name, "released",
           "%s: released %s: child %s removed from %s", ctx->disk->cfg->name, tier_name (ctx),
           ctx->child, ctx->disk->cfg->node);
  if (g_strcmp0 (ctx->disk->cfg->release, "discard") != 0) {
    done (ctx);
    return;
  }
  disk = ctx->disk;
  args = json_object_new ();
  json_object_set_boolean_member (args, "flat", TRUE);
  shd_qmp_execute_async (disk->qmp, "query-named-block-nodes", args, 0, disk->cancel,
                         on_nodes, g_steal_pointer (&ctx));
  json_object_unref (args);
}

static void
on_graph (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (ReleaseCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autofree char *name = NULL;
  JsonObject *args;
  ShdDisk *disk;

  ctx->graph = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ctx->graph == NULL) {
    failed (ctx, "x-debug-query-block-graph", error->message);
    return;
  }
  name = shd_block_graph_child_name (ctx->graph, ctx->disk->cfg->node, ctx->child);
  if (name == NULL) {
    shd_log (G_LOG_LEVEL_MESSAGE, ctx->disk->cfg->name, "released",
             "%s: %s's child %s is not in %s any more", ctx->disk->cfg->name,
             tier_name (ctx), ctx->child, ctx->disk->cfg->node);
    done (ctx);
    return;
  }
  disk = ctx->disk;
  args = json_object_new ();
  json_object_set_string_member (args, "parent", disk->cfg->node);
  json_object_set_string_member (args, "child", name);
  /* (the context goes to the next callback: disk stays referenced by it) */
  shd_qmp_execute_async (disk->qmp, "x-blockdev-change", args, 0, disk->cancel,
                         on_removed, g_steal_pointer (&ctx));
  json_object_unref (args);
}

void
shd_disk_release_tier (ShdDisk *disk, int tier)
{
  const ShdPolicyConfig *pc = shd_policy_config (disk->policy);
  ReleaseCtx *ctx;

  g_return_if_fail (tier >= 0 && (guint) tier < pc->n_tiers);
  if (disk->release_in_flight)
    return;
  disk->release_in_flight = TRUE;
  ctx = g_new0 (ReleaseCtx, 1);
  ctx->disk = g_object_ref (disk);
  ctx->tier = tier;
  ctx->child = g_strdup (pc->tiers[tier].child);
  shd_qmp_execute_async (disk->qmp, "x-debug-query-block-graph", NULL, 0, disk->cancel,
                         on_graph, ctx);
}
