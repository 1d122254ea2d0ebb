/* Opening a tier's node when QEMU lacks it (tier-rbd.NAME = POOL/IMAGE in
 * the disk's configuration): a raw node named as the tier's child, over
 * an rbd node on POOL/IMAGE.  Through QEMU only (librbd only removes
 * images a move retired: rbdimage.h),
 * each step a callback holding the context:
 *
 *  1. blockdev-add of the two nodes; a node of that name already there is
 *     fine: the chain goes on;
 *  2. when that fails the image may be missing: blockdev-create (a job)
 *     with the disk's size, polled with query-jobs until it concludes,
 *     job-dismiss, and blockdev-add again, once;
 *  3. the tier's child is added to the shadow node (disk.c).
 *
 * An existing image is only opened: blockdev-create refuses one that
 * exists, and its error then comes with blockdev-add's.  A failure is
 * logged and the tier held unavailable as for a failed add. */
#include "disk-private.h"

#include "log.h"
#include "rbdnode.h"

#include <string.h>

typedef struct {
  ShdDisk *disk;                /* a reference */
  int tier;
  char *job;                    /* blockdev-create's job id */
  char *add_error;              /* why the first blockdev-add failed */
  guint polls;
} OpenCtx;

static void
open_ctx_free (OpenCtx *ctx)
{
  ctx->disk->opening[ctx->tier] = FALSE;
  g_object_unref (ctx->disk);
  g_free (ctx->job);
  g_free (ctx->add_error);
  g_free (ctx);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (OpenCtx, open_ctx_free)

static const ShdDiskTier *
disk_tier (OpenCtx *ctx)
{
  return ctx->disk->cfg->tiers->pdata[ctx->tier];
}

/* What librbd needs to reach the image: BlockdevOptionsRbd's keys */
static JsonObject *
location (ShdDisk *disk, const ShdDiskTier *dt)
{
  JsonObject *o = json_object_new ();

  shd_rbd_set_location (o, dt->rbd_pool, dt->rbd_image, disk->cfg->rbd_conf,
                        disk->cfg->rbd_user, disk->cfg->rbd_key_secret);
  return o;
}

static void
failed (OpenCtx *ctx, const char *why)
{
  const ShdDiskTier *dt = disk_tier (ctx);
  g_autofree char *msg = NULL;

  msg = ctx->add_error && g_strcmp0 (ctx->add_error, why) != 0 ?
        g_strdup_printf ("cannot open the rbd image %s/%s (%s), nor create it (%s)",
                         dt->rbd_pool, dt->rbd_image, ctx->add_error, why) :
        g_strdup_printf ("cannot open the rbd image %s/%s: %s", dt->rbd_pool,
                         dt->rbd_image, why);
  shd_disk_add_failed (ctx->disk, ctx->tier, msg);
}

static void add_node (OpenCtx *ctx);

static void
on_dismissed (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (OpenCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  const ShdDiskTier *dt = disk_tier (ctx);

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ret == NULL)              /* the image is there: it only stays listed */
    shd_log (G_LOG_LEVEL_WARNING, ctx->disk->cfg->name, "create",
             "%s: job-dismiss %s: %s", ctx->disk->cfg->name, ctx->job, error->message);
  shd_log (G_LOG_LEVEL_MESSAGE, ctx->disk->cfg->name, "created",
           "%s: created the rbd image %s/%s (%.1f MiB) for tier %s", ctx->disk->cfg->name,
           dt->rbd_pool, dt->rbd_image, ctx->disk->size_bytes / 1048576.0, dt->tier);
  add_node (g_steal_pointer (&ctx));
}

static gboolean poll_job (gpointer data);

static void
on_jobs (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (OpenCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  JsonObject *args;
  const char *why;
  gboolean concluded;
  ShdDisk *disk = ctx->disk;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ret == NULL) {
    failed (ctx, error->message);
    return;
  }
  if (!shd_rbd_job_state (ret, ctx->job, &concluded, &why, &error)) {
    failed (ctx, error->message);
    return;
  }
  if (!concluded) {
    if (++ctx->polls >= SHD_RBD_JOB_POLLS) {
      failed (ctx, "blockdev-create did not conclude within a minute");
      return;
    }
    g_timeout_add (SHD_RBD_JOB_POLL_MS, poll_job, g_steal_pointer (&ctx));
    return;
  }
  if (why) {
    g_autofree char *copy = g_strdup (why);

    /* dismissed all the same, so that the id can be used again */
    args = json_object_new ();
    json_object_set_string_member (args, "id", ctx->job);
    shd_qmp_execute_async (disk->qmp, "job-dismiss", args, 0, NULL, NULL, NULL);
    json_object_unref (args);
    failed (ctx, copy);
    return;
  }
  args = json_object_new ();
  json_object_set_string_member (args, "id", ctx->job);
  shd_qmp_execute_async (disk->qmp, "job-dismiss", args, 0, disk->cancel, on_dismissed,
                         g_steal_pointer (&ctx));
  json_object_unref (args);
}

static gboolean
poll_job (gpointer data)
{
  OpenCtx *ctx = data;

  if (g_cancellable_is_cancelled (ctx->disk->cancel)) {
    open_ctx_free (ctx);
    return G_SOURCE_REMOVE;
  }
  shd_qmp_execute_async (ctx->disk->qmp, "query-jobs", NULL, 0, ctx->disk->cancel, on_jobs,
                         ctx);
  return G_SOURCE_REMOVE;
}

static void
on_create_started (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (OpenCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ret == NULL) {
    failed (ctx, error->message);
    return;
  }
  g_timeout_add (SHD_RBD_JOB_POLL_MS, poll_job, g_steal_pointer (&ctx));
}

static void
create_image (OpenCtx *ctx)
{
  ShdDisk *disk = ctx->disk;
  const ShdDiskTier *dt = disk_tier (ctx);
  g_autoptr (JsonObject) loc = NULL;
  JsonObject *args;

  if (disk->size_bytes == 0) {
    failed (ctx, "the disk's size is not known yet");
    open_ctx_free (ctx);
    return;
  }
  ctx->job = g_strdup_printf ("shadowd-create-%s", dt->child);
  loc = location (disk, dt);
  args = shd_rbd_create_args (ctx->job, loc, disk->size_bytes);
  shd_qmp_execute_async (disk->qmp, "blockdev-create", args, 0, disk->cancel,
                         on_create_started, ctx);
  json_object_unref (args);
}

static void
on_added (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (OpenCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);
  const ShdDiskTier *dt = disk_tier (ctx);

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  if (ret == NULL && strstr (error->message, "Duplicate nodes with node-name") == NULL) {
    if (ctx->job == NULL) {
      /* the image may be missing: create it, then try again once */
      ctx->add_error = g_strdup (error->message);
      create_image (g_steal_pointer (&ctx));
      return;
    }
    failed (ctx, error->message);
    return;
  }
  if (ret != NULL)
    shd_log (G_LOG_LEVEL_MESSAGE, ctx->disk->cfg->name, "opened",
             "%s: opened the rbd image %s/%s as node %s (tier %s)", ctx->disk->cfg->name,
             dt->rbd_pool, dt->rbd_image, dt->child, dt->tier);
  shd_disk_add_child_node (ctx->disk, ctx->tier);
}

static void
add_node (OpenCtx *ctx)
{
  ShdDisk *disk = ctx->disk;
  const ShdDiskTier *dt = disk_tier (ctx);
  g_autoptr (JsonObject) loc = location (disk, dt);
  JsonObject *args = shd_rbd_raw_node (dt->child, NULL, loc);
  shd_qmp_execute_async (disk->qmp, "blockdev-add", args, 0, disk->cancel, on_added, ctx);
  json_object_unref (args);
}

void
shd_disk_open_tier_node (ShdDisk *disk, int tier)
{
  OpenCtx *ctx;

  g_return_if_fail (tier >= 0 && (guint) tier < disk->cfg->tiers->len);
  if (disk->opening[tier])
    return;
  disk->opening[tier] = TRUE;
  ctx = g_new0 (OpenCtx, 1);
  ctx->disk = g_object_ref (disk);
  ctx->tier = tier;
  add_node (ctx);
}
