/* A permanent move of a disk to one tier; see move.h.
 *
 * Each state waits for one thing, seen at the disk's samples or in the
 * reply of the one QMP command in flight (@busy):
 *
 *   preparing   the target's child is in the node (added if absent), no
 *               release is in flight that could take it out again, and
 *               an async disk is raised to sync;
 *   copying     the driver reports it synced (progress: its valid bytes;
 *               an async disk stays raised to sync until the switch, or
 *               its writes would keep the target stale);
 *   verifying   the x-shadow-verify job concluded without an error;
 *   switching   blockdev-reopen made it the active child;
 *   committing  every other tier's child removed (x-blockdev-change), then
 *               a blockdev-reopen naming the target alone: QEMU flushes the
 *               node first, which flushes the target and commits the
 *               metadata without the removed slots.  Only after that reply
 *               are the retired tiers' nodes deleted (blockdev-del) and
 *               their files deleted or renamed: until then a crash could
 *               leave metadata that still counts on them.  A retired
 *               rbd image is removed through librbd (rbdimage.h) last,
 *               once QEMU has closed it.  The files to retire are
 *               recorded ("retiring") before the first blockdev-del, so
 *               that a move run again after a stop retires what its
 *               interrupted run had closed but not yet removed.
 *
 * keep-as never replaces a file (renameat2 RENAME_NOREPLACE, or link and
 * unlink): several retired images are kept as PATH.0, PATH.1, ...
 *
 * Every callback holds a reference on the disk; the move belongs to the
 * disk and is freed with it, or replaced by the next move once finished. */
#define _GNU_SOURCE             /* renameat2 */
#include "disk-private.h"
#include "move.h"

#include "blockgraph.h"
#include "log.h"
#include "jsonutil.h"
#include "rbdimage.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The target's child must be in the node by then */
#define MOVE_ADD_TIMEOUT_S 60

static const char *const state_names[] = {
  [SHD_MOVE_PREPARING] = "preparing",
  [SHD_MOVE_COPYING] = "copying",
  [SHD_MOVE_VERIFYING] = "verifying",
  [SHD_MOVE_SWITCHING] = "switching",
  [SHD_MOVE_COMMITTING] = "committing",
  [SHD_MOVE_DONE] = "done",
  [SHD_MOVE_ABORTED] = "aborted",
  [SHD_MOVE_FAILED] = "failed",
};

struct _ShdMove {
  ShdDisk *disk;                /* not a reference: the disk owns the move */
  int target;
  char *tier, *child;
  gboolean verify;
  guint64 verify_speed;
  char *keep_as;
  ShdMoveState state;
  char *reason;                 /* failed or aborted: why */
  gboolean added;               /* the move added the target's child */
  gboolean was_paused;          /* the policy's state before: back to it after */
  gboolean busy;                /* a QMP command of the move is in flight */
  gboolean job_started;
  gboolean raised;              /* raised an async disk to sync: lowered again
                                   if the move ends before its switch */
  gboolean job_free;            /* no job of ours left in QEMU (a stopped
                                   shadowd's, an aborted move's) */
  char *job_id;
  gint64 start_us, state_us;    /* monotonic */
  gint64 start_wall_ms, end_wall_ms;
  /* progress of the current state, in bytes, and its rate */
  double done_bytes, total_bytes, rate_bps;
  double copy_s, verify_s;      /* how long each took */
  double verify_bps;
  /* committing: the children to remove, the nodes and files to retire */
  GPtrArray *old_children;
  gboolean durable_sent, durable;
  GPtrArray *retire_nodes;      /* parents first */
  GPtrArray *retire_files, *retire_file_nodes;
  GPtrArray *retire_rbd, *retire_rbd_nodes;     /* ShdRbdImage, its node */
  GString *retired;             /* what became of each, for the last record */
  GHashTable *deleted;          /* nodes blockdev-del removed */
  GPtrArray *kept;              /* storage shadowd does not remove */
  gboolean restored;            /* read back at start (shd_move_restore()) */
  GPtrArray *retire_dests;      /* each retire_files' keep-as name, or NULL
                                   to delete it */
  GPtrArray *retire_ids;        /* each retire_files' file_id() at the plan */
  /* what an earlier run of the same move (stopped, or failed) was
   * retiring: its files, their nodes deleted or being deleted, and the
   * names each is kept under (NULL: deleted), held as they were decided */
  GPtrArray *pending_files, *pending_dests, *pending_ids;
  gboolean pending_recorded;    /* the plan is in the move's state */
};

const char *
shd_move_state_name (ShdMoveState s)
{
  return s < G_N_ELEMENTS (state_names) ? state_names[s] : "?";
}

ShdMoveState
shd_move_state (ShdMove *move)
{
  return move->state;
}

int
shd_move_target (ShdMove *move)
{
  return move->target;
}

gboolean
shd_move_running (ShdMove *move)
{
  return move && move->state < SHD_MOVE_DONE;
}

void
shd_move_set_paused_after (ShdMove *move, gboolean paused)
{
  move->was_paused = paused;
}

void
shd_move_free (ShdMove *move)
{
  if (move == NULL)
    return;
  g_free (move->tier);
  g_free (move->child);
  g_free (move->keep_as);
  g_free (move->reason);
  g_free (move->job_id);
  g_clear_pointer (&move->old_children, g_ptr_array_unref);
  g_clear_pointer (&move->retire_nodes, g_ptr_array_unref);
  g_clear_pointer (&move->retire_files, g_ptr_array_unref);
  g_clear_pointer (&move->retire_file_nodes, g_ptr_array_unref);
  g_clear_pointer (&move->retire_rbd, g_ptr_array_unref);
  g_clear_pointer (&move->retire_rbd_nodes, g_ptr_array_unref);
  if (move->retired)
    g_string_free (move->retired, TRUE);
  g_clear_pointer (&move->deleted, g_hash_table_unref);
  g_clear_pointer (&move->kept, g_ptr_array_unref);
  g_clear_pointer (&move->retire_dests, g_ptr_array_unref);
  g_clear_pointer (&move->retire_ids, g_ptr_array_unref);
  g_clear_pointer (&move->pending_ids, g_ptr_array_unref);
  g_clear_pointer (&move->pending_files, g_ptr_array_unref);
  g_clear_pointer (&move->pending_dests, g_ptr_array_unref);
  g_free (move);
}

static const char *
disk_name (ShdMove *move)
{
  return shd_disk_name (move->disk);
}

static double
since_s (gint64 us)
{
  return (g_get_monotonic_time () - us) / 1e6;
}

/* The move's history: each state it enters is a decision of kind "move" */
static void
record (ShdMove *move, const char *what)
{
  g_autoptr (JsonNode) node = json_node_new (JSON_NODE_OBJECT);
  g_autoptr (GError) error = NULL;
  ShdDisk *disk = move->disk;

  json_node_take_object (node, shd_move_status (move));
  /* read back as the detail alone (shd_history_decisions()) */
  json_object_set_string_member (json_node_get_object (node), "kind", "move");
  json_object_set_string_member (json_node_get_object (node), "reason", what);
  json_object_set_boolean_member (json_node_get_object (node), "dry-run", FALSE);
  if (disk->history &&
      !shd_history_add_decision (disk->history, disk_name (move), g_get_real_time () / 1000,
                                 "move", what, node, &error))
    shd_log (G_LOG_LEVEL_WARNING, disk_name (move), "history", "%s", error->message);
  g_clear_error (&error);
  /* and as the disk's state, which a restart reads back (shd_move_restore()) */
  json_object_set_boolean_member (json_node_get_object (node), "was-paused", move->was_paused);
  if (disk->history &&
      !shd_history_set_state (disk->history, disk_name (move), "move", node, &error))
    shd_log (G_LOG_LEVEL_WARNING, disk_name (move), "history", "%s", error->message);
}

static void
enter (ShdMove *move, ShdMoveState state, const char *fmt, ...) G_GNUC_PRINTF (3, 4);

static void
enter (ShdMove *move, ShdMoveState state, const char *fmt, ...)
{
  g_autofree char *what = NULL;
  va_list ap;

  va_start (ap, fmt);
  what = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  if (move->state == SHD_MOVE_COPYING)
    move->copy_s = since_s (move->state_us);
  if (move->state == SHD_MOVE_VERIFYING) {
    move->verify_s = since_s (move->state_us);
    move->verify_bps = move->verify_s > 0 ? move->total_bytes / move->verify_s : NAN;
  }
  move->state = state;
  move->state_us = g_get_monotonic_time ();
  move->disk->recommend_us = 0;         /* it says "moved" once done */
  move->done_bytes = move->total_bytes = move->rate_bps = NAN;
  if (state >= SHD_MOVE_DONE) {
    move->end_wall_ms = g_get_real_time () / 1000;
    /* done: the disk stays on its tier; else the policy takes over again */
    shd_policy_set_paused (move->disk->policy, state == SHD_MOVE_DONE || move->was_paused);
  }
  if (state == SHD_MOVE_FAILED || state == SHD_MOVE_ABORTED) {
    g_free (move->reason);
    move->reason = g_strdup (what);
  }
  shd_log (state == SHD_MOVE_FAILED ? G_LOG_LEVEL_WARNING : G_LOG_LEVEL_MESSAGE,
           disk_name (move), "move", "%s: move to %s: %s: %s", disk_name (move), move->tier,
           shd_move_state_name (state), what);
  record (move, what);
}

/* ---- the reply of the move's command in flight ---- */

typedef struct {
  ShdDisk *disk;                /* a reference */
  ShdMove *move;
} MoveCtx;

static void
move_ctx_free (MoveCtx *ctx)
{
  g_object_unref (ctx->disk);
  g_free (ctx);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (MoveCtx, move_ctx_free)

static void
send (ShdMove *move, const char *command, JsonObject *args, GAsyncReadyCallback cb)
{
  MoveCtx *ctx = g_new0 (MoveCtx, 1);

  ctx->disk = g_object_ref (move->disk);
  ctx->move = move;
  move->busy = TRUE;
  shd_qmp_execute_async (move->disk->qmp, command, args, 0, move->disk->cancel, cb, ctx);
  if (args)
    json_object_unref (args);
}

/* The reply, or NULL: the move is gone (cancelled, replaced) or the command
 * failed (*error set, the move no longer busy) */
static JsonNode *
reply (GObject *src, GAsyncResult *res, MoveCtx *ctx, GError **error)
{
  JsonNode *ret = shd_qmp_execute_finish (SHD_QMP (src), res, error);

  if (g_error_matches (*error, G_IO_ERROR, G_IO_ERROR_CANCELLED) ||
      ctx->disk->move != ctx->move) {
    g_clear_pointer (&ret, json_node_unref);
    g_clear_error (error);
    return NULL;
  }
  ctx->move->busy = FALSE;
  if (!shd_move_running (ctx->move)) {
    /* aborted meanwhile: what the command did is undone or harmless */
    g_clear_pointer (&ret, json_node_unref);
    g_clear_error (error);
  }
  return ret;
}

/* ---- verifying ---- */

static void
on_verify_started (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = reply (src, res, ctx, &error);

  if (ret == NULL && error)
    enter (ctx->move, SHD_MOVE_FAILED, "x-shadow-verify: %s", error->message);
  else if (ret)
    ctx->move->job_started = TRUE;
}

/* A reply that only ends the wait: what the command did is checked
 * later, or harmless when it failed */
static void
on_reply_ignored (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  JsonNode *ret = reply (src, res, ctx, &error);

  if (ret)
    json_node_unref (ret);
}

static void
dismiss (ShdMove *move)
{
  JsonObject *args = json_object_new ();

  json_object_set_string_member (args, "id", move->job_id);
  move->job_started = FALSE;
  send (move, "job-dismiss", args, on_reply_ignored);
}

static void
on_jobs (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = reply (src, res, ctx, &error);
  ShdMove *move = ctx->move;
  JsonArray *jobs;
  JsonObject *job = NULL;
  const char *status, *job_error;

  if (ret == NULL) {
    if (error)
      shd_log (G_LOG_LEVEL_WARNING, disk_name (move), "move", "%s: query-jobs: %s",
               disk_name (move), error->message);
    return;
  }
  if (move->state != SHD_MOVE_VERIFYING || !JSON_NODE_HOLDS_ARRAY (ret))
    return;
  jobs = json_node_get_array (ret);
  for (guint i = 0; i < json_array_get_length (jobs); i++) {
    JsonObject *j = json_array_get_object_element (jobs, i);

    if (j && g_strcmp0 (json_object_get_string_member_with_default (j, "id", NULL),
                        move->job_id) == 0)
      job = j;
  }
  if (job == NULL) {
    /* QEMU restarted, or someone dismissed it */
    enter (move, SHD_MOVE_FAILED, "the verify job %s is gone", move->job_id);
    move->job_started = FALSE;
    return;
  }
  move->done_bytes = json_object_get_int_member_with_default (job, "current-progress", 0);
  move->total_bytes = json_object_get_int_member_with_default (job, "total-progress", 0);
  move->rate_bps = move->done_bytes / MAX (since_s (move->state_us), 1e-3);
  status = json_object_get_string_member_with_default (job, "status", "");
  if (strcmp (status, "concluded") != 0)
    return;
  job_error = json_object_get_string_member_with_default (job, "error", NULL);
  if (job_error) {
    enter (move, SHD_MOVE_FAILED, "verify: %s", job_error);
    /* the driver counts that copy as synced: it must not serve, ever */
    shd_disk_release_tier (move->disk, move->target);
  } else
    enter (move, SHD_MOVE_SWITCHING, "%s verified against the active child: %.0f MiB in %.1f s",
           move->child, move->total_bytes / 1048576, since_s (move->state_us));
  dismiss (move);
}

/* A job of ours may be left in QEMU by a shadowd that stopped or a move
 * aborted: cancelled, then dismissed, before the verify starts */
static void
on_leftover_jobs (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = reply (src, res, ctx, &error);
  ShdMove *move = ctx->move;
  JsonArray *jobs;
  JsonObject *args;

  if (ret == NULL || !JSON_NODE_HOLDS_ARRAY (ret))
    return;
  jobs = json_node_get_array (ret);
  for (guint i = 0; i < json_array_get_length (jobs); i++) {
    JsonObject *j = json_array_get_object_element (jobs, i);

    if (g_strcmp0 (json_object_get_string_member_with_default (j, "id", NULL),
                   move->job_id) != 0)
      continue;
    args = json_object_new ();
    json_object_set_string_member (args, "id", move->job_id);
    if (strcmp (json_object_get_string_member_with_default (j, "status", ""),
                "concluded") == 0) {
      send (move, "job-dismiss", args, on_reply_ignored);
    } else {
      shd_log (G_LOG_LEVEL_MESSAGE, disk_name (move), "move",
               "%s: cancelling the verify job %s left by an earlier move",
               disk_name (move), move->job_id);
      send (move, "job-cancel", args, on_reply_ignored);
    }
    return;   /* looked at again at the next step */
  }
  move->job_free = TRUE;
}

static void
verify_step (ShdMove *move)
{
  JsonObject *args;

  if (move->job_started) {
    send (move, "query-jobs", NULL, on_jobs);
    return;
  }
  if (!move->job_free) {
    send (move, "query-jobs", NULL, on_leftover_jobs);
    return;
  }
  args = json_object_new ();
  json_object_set_string_member (args, "job-id", move->job_id);
  json_object_set_string_member (args, "node-name", move->disk->cfg->node);
  json_object_set_string_member (args, "child", move->child);
  json_object_set_int_member (args, "speed", move->verify_speed);
  json_object_set_boolean_member (args, "auto-dismiss", FALSE);
  send (move, "x-shadow-verify", args, on_verify_started);
}

/* ---- switching ---- */

static void
on_switched (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = reply (src, res, ctx, &error);

  if (ret == NULL && error)
    enter (ctx->move, SHD_MOVE_FAILED, "blockdev-reopen to %s: %s", ctx->move->child,
           error->message);
  else if (ret)
    enter (ctx->move, SHD_MOVE_COMMITTING, "%s is the active child", ctx->move->child);
}

/* The node's options with the target active: still in sync mode while
 * other children are kept (an async disk was raised for the move), in the
 * disk's own mode once the target is alone */
static void
reopen (ShdMove *move, GPtrArray *children, GAsyncReadyCallback cb)
{
  JsonObject *args = json_object_new ();
  JsonArray *opts = json_array_new ();

  if (children) {
    move->disk->write_sync_raised = FALSE;
    move->raised = FALSE;
  }
  json_array_add_object_element (opts, shd_disk_node_options (move->disk, move->child,
                                                              move->disk->write_sync_raised,
                                                              children));
  json_object_set_array_member (args, "options", opts);
  send (move, "blockdev-reopen", args, cb);
}

/* ---- committing ---- */

static void commit_step (ShdMove *move);
static void retire_rbd_step (ShdMove *move);

static void
on_node_deleted (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = reply (src, res, ctx, &error);
  ShdMove *move = ctx->move;

  if (ret == NULL && error == NULL)
    return;
  if (ret == NULL && ((char *) move->retire_nodes->pdata[0])[0] == '#' &&
      strstr (error->message, "Failed to find node") != NULL) {
    /* gone with its parent: a node QEMU created for it (an inline
     * blockdev-add's "#blockN", a name no client can give), which only
     * its parents, deleted before it, owned */
    g_hash_table_add (move->deleted, g_strdup (move->retire_nodes->pdata[0]));
  } else if (ret == NULL) {
    shd_log (G_LOG_LEVEL_WARNING, disk_name (move), "move",
             "%s: move to %s: blockdev-del %s: %s; the node stays in QEMU",
             disk_name (move), move->tier, (char *) move->retire_nodes->pdata[0],
             error->message);
  } else {
    g_hash_table_add (move->deleted, g_strdup (move->retire_nodes->pdata[0]));
  }
  g_ptr_array_remove_index (move->retire_nodes, 0);
  commit_step (move);
}

/* "DEV:INODE:BIRTH" of @file itself (not a symlink's target), or NULL:
 * a file a stopped run recorded is retired only if it is still that file,
 * never one made since at its path (an inode number is soon reused: the
 * birth time, or the change time where there is none, tells them apart) */
static char *
file_id (const char *file)
{
  struct statx st;
  struct statx_timestamp t;

  if (statx (AT_FDCWD, file, AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &st) < 0 ||
      !S_ISREG (st.stx_mode))
    return NULL;
  t = st.stx_mask & STATX_BTIME ? st.stx_btime : st.stx_ctime;
  return g_strdup_printf ("%u.%u:%" G_GUINT64_FORMAT ":%" G_GINT64_FORMAT ".%09u",
                          st.stx_dev_major, st.stx_dev_minor, (guint64) st.stx_ino,
                          (gint64) t.tv_sec, t.tv_nsec);
}

/* The name of the @i-th of @n images kept under @keep_as */
static char *
keep_as_name (const char *keep_as, guint i, guint n)
{
  return n == 1 ? g_strdup (keep_as) : g_strdup_printf ("%s.%u", keep_as, i);
}

/* rename(2) that never replaces @dest: an operator's file stays theirs */
static int
rename_noreplace (const char *src, const char *dest)
{
  if (renameat2 (AT_FDCWD, src, AT_FDCWD, dest, RENAME_NOREPLACE) == 0)
    return 0;
  if (errno != EINVAL && errno != ENOSYS)
    return -1;
  /* a filesystem without RENAME_NOREPLACE: link(2) does not replace either */
  if (link (src, dest) < 0)
    return -1;
  return unlink (src);
}

/* The images of the retired tiers: deleted, or renamed to their keep-as
 * name; what became of each is appended to @what.  A file whose node is
 * NULL was closed by an earlier run (pending_files).  One that fails does
 * not stop the others: every one is accounted for. */
static gboolean
retire_files (ShdMove *move, GString *what)
{
  g_autoptr (GString) failed = g_string_new (NULL);

  for (guint i = 0; i < move->retire_files->len; i++) {
    const char *file = move->retire_files->pdata[i];
    const char *node = move->retire_file_nodes->pdata[i];
    const char *dest = move->retire_dests->pdata[i];

    g_autofree char *id = file_id (file);

    if (node && !g_hash_table_contains (move->deleted, node)) {
      /* QEMU still has it open for someone else */
      g_string_append_printf (what, "; %s kept: its node %s is still in QEMU", file, node);
      continue;
    }
    if (id == NULL || g_strcmp0 (id, move->retire_ids->pdata[i]) != 0) {
      g_string_append_printf (what, "; %s kept: it is not the file the plan found", file);
      continue;
    }

    if (dest) {
      if (rename_noreplace (file, dest) < 0) {
        g_string_append_printf (failed, "%s%s was not kept as %s (%s)%s",
                                failed->len ? "; " : "", file, dest, g_strerror (errno),
                                g_file_test (dest, G_FILE_TEST_EXISTS) &&
                                g_file_test (file, G_FILE_TEST_EXISTS) ?
                                ", both names exist" : ", it is where it was");
        continue;
      }
      shd_log (G_LOG_LEVEL_MESSAGE, disk_name (move), "retired", "%s: %s kept as %s",
               disk_name (move), file, dest);
      g_string_append_printf (what, "; %s kept as %s", file, dest);
    } else {
      if (g_unlink (file) < 0 && errno != ENOENT) {
        g_string_append_printf (failed, "%sdeleting %s failed (%s)", failed->len ? "; " : "",
                                file, g_strerror (errno));
        continue;
      }
      shd_log (G_LOG_LEVEL_MESSAGE, disk_name (move), "retired", "%s: %s deleted",
               disk_name (move), file);
      g_string_append_printf (what, "; %s deleted", file);
    }
  }
  if (failed->len) {
    enter (move, SHD_MOVE_FAILED, "the disk runs on %s alone, but its old images are not "
           "all retired: %s; %s; run the move again once fixed", move->child, failed->str,
           what->str);
    return FALSE;
  }
  return TRUE;
}

static void
on_rbd_removed (GObject *src G_GNUC_UNUSED, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  ShdMove *move = ctx->move;
  g_autofree char *spec = NULL;

  if (!shd_rbd_image_remove_finish (res, &error) &&
      g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;                     /* shadowd stopped before it started */
  if (ctx->disk->move != move)
    return;
  spec = shd_rbd_image_spec (move->retire_rbd->pdata[0]);
  if (error) {
    /* the disk did move: the image is only space, named for the operator */
    shd_log (G_LOG_LEVEL_WARNING, disk_name (move), "retired",
             "%s: the retired rbd image %s is kept: %s", disk_name (move), spec,
             error->message);
    g_string_append_printf (move->retired, "; rbd image %s kept: %s", spec, error->message);
  } else {
    shd_log (G_LOG_LEVEL_MESSAGE, disk_name (move), "retired", "%s: rbd image %s removed",
             disk_name (move), spec);
    g_string_append_printf (move->retired, "; rbd image %s removed", spec);
  }
  if (g_cancellable_is_cancelled (ctx->disk->cancel))
    return;                     /* the disk stopped meanwhile: said, nothing more */
  move->busy = FALSE;
  g_ptr_array_remove_index (move->retire_rbd, 0);
  g_ptr_array_remove_index (move->retire_rbd_nodes, 0);
  commit_step (move);
}

/* The next retired rbd image: removed once QEMU closed it (librbd
 * refuses an image a client holds open read-write), or kept with
 * keep-as, which names a file; then commit_step() again */
static void
retire_rbd_step (ShdMove *move)
{
  const ShdRbdImage *img;
  g_autofree char *spec = NULL, *what = NULL;
  MoveCtx *ctx;

  if (move->retire_rbd->len == 0) {
    commit_step (move);
    return;
  }
  img = move->retire_rbd->pdata[0];
  spec = shd_rbd_image_spec (img);
  if (!g_hash_table_contains (move->deleted, move->retire_rbd_nodes->pdata[0]) ||
      move->keep_as) {
    g_string_append_printf (move->retired, "; rbd image %s kept: %s", spec,
                            move->keep_as ? "keep-as renames files only" :
                            "its node is still in QEMU");
    g_ptr_array_remove_index (move->retire_rbd, 0);
    g_ptr_array_remove_index (move->retire_rbd_nodes, 0);
    commit_step (move);
    return;
  }
  ctx = g_new0 (MoveCtx, 1);
  ctx->disk = g_object_ref (move->disk);
  ctx->move = move;
  move->busy = TRUE;
  what = g_strdup_printf ("removing the retired rbd image %s", spec);
  shd_log (G_LOG_LEVEL_MESSAGE, disk_name (move), "move", "%s: move to %s: %s",
           disk_name (move), move->tier, what);
  /* what a stop in the middle leaves is in the move's state */
  record (move, what);
  shd_rbd_image_remove_async (img, move->disk->cancel, on_rbd_removed, ctx);
}

static void
on_durable (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = reply (src, res, ctx, &error);

  if (ret == NULL && error)
    enter (ctx->move, SHD_MOVE_FAILED,
           "flushing %s alone failed, so nothing was deleted: %s", ctx->move->child,
           error->message);
  else if (ret) {
    ctx->move->durable = TRUE;
    shd_log (G_LOG_LEVEL_MESSAGE, disk_name (ctx->move), "move",
             "%s: move to %s: %s alone, flushed and committed: the retired tiers go now",
             disk_name (ctx->move), ctx->move->tier, ctx->move->child);
    commit_step (ctx->move);
  }
}

static void
on_child_removed (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = reply (src, res, ctx, &error);
  ShdMove *move = ctx->move;

  if (ret == NULL && error) {
    enter (move, SHD_MOVE_FAILED, "removing %s from %s: %s",
           (char *) move->old_children->pdata[0], move->disk->cfg->node, error->message);
    return;
  }
  if (ret == NULL)
    return;
  shd_log (G_LOG_LEVEL_MESSAGE, disk_name (move), "move", "%s: move to %s: removed %s from %s",
           disk_name (move), move->tier, (char *) move->old_children->pdata[0],
           move->disk->cfg->node);
  g_ptr_array_remove_index (move->old_children, 0);
  commit_step (move);
}

typedef struct {
  MoveCtx *ctx;
  JsonNode *graph;
} GraphCtx;

/* What retiring the tier node `root` removes: its nodes, their files */
static void
retire_root (ShdMove *move, JsonNode *graph, JsonNode *nodes, const char *root)
{
  g_autoptr (GPtrArray) owned = shd_block_graph_owned (graph, root);
  g_autoptr (GPtrArray) files = NULL, file_nodes = NULL, rbd_nodes = NULL, others = NULL;

  files = shd_block_nodes_files (nodes, owned, &file_nodes, &rbd_nodes, &others);
  for (guint k = 0; k < owned->len; k++)
    g_ptr_array_add (move->retire_nodes, g_strdup (owned->pdata[k]));
  for (guint k = 0; k < files->len; k++) {
    if (g_file_test (files->pdata[k], G_FILE_TEST_IS_SYMLINK)) {
      /* deleting or renaming the link would leave its target, or make
       * it dangle: the operator's to settle */
      g_ptr_array_add (move->kept, g_strdup_printf ("%s (a symbolic link; its target is "
                                                    "not retired)",
                                                    (char *) files->pdata[k]));
      continue;
    }
    g_ptr_array_add (move->retire_files, g_strdup (files->pdata[k]));
    g_ptr_array_add (move->retire_file_nodes, g_strdup (file_nodes->pdata[k]));
  }
  for (guint k = 0; k < rbd_nodes->len; k++) {
    const char *node = rbd_nodes->pdata[k];
    g_autoptr (GError) error = NULL;
    ShdRbdImage *img = shd_rbd_image_parse (shd_block_nodes_filename (nodes, node), &error);

    if (img == NULL) {
      g_ptr_array_add (move->kept, g_strdup_printf ("%s (rbd: %s)", node, error->message));
      continue;
    }
    g_ptr_array_add (move->retire_rbd, img);
    g_ptr_array_add (move->retire_rbd_nodes, g_strdup (node));
  }
  for (guint k = 0; k < others->len; k++)
    g_ptr_array_add (move->kept, g_strdup (others->pdata[k]));
}

/* A node's name in the graph reply, by id */
static const char *
graph_node_name (JsonArray *gnodes, gint64 id)
{
  for (guint k = 0; gnodes && k < json_array_get_length (gnodes); k++) {
    JsonObject *n = json_array_get_object_element (gnodes, k);

    if (json_object_get_int_member_with_default (n, "id", -2) == id)
      return json_object_get_string_member_with_default (n, "name", NULL);
  }
  return NULL;
}

static gint64
graph_node_id (JsonArray *gnodes, const char *name)
{
  for (guint k = 0; gnodes && k < json_array_get_length (gnodes); k++) {
    JsonObject *n = json_array_get_object_element (gnodes, k);

    if (g_strcmp0 (json_object_get_string_member_with_default (n, "name", NULL), name) == 0)
      return json_object_get_int_member_with_default (n, "id", -1);
  }
  return -1;
}

static gboolean
graph_has_parent (JsonArray *edges, gint64 id)
{
  for (guint i = 0; edges && i < json_array_get_length (edges); i++)
    if (json_object_get_int_member_with_default (json_array_get_object_element (edges, i),
                                                 "child", -2) == id)
      return TRUE;
  return FALSE;
}

static gboolean
str_array_has (GPtrArray *a, const char *s)
{
  return a && g_ptr_array_find_with_equal_func (a, s, g_str_equal, NULL);
}

/* The nodes QEMU opens @file with: by name, by inode (a link, a path
 * through a symlink), or a json: name that spells it.  Returns those an
 * earlier run's blockdev-del left behind: the trees under the ones
 * without a parent, nodes of which only those trees hold; NULL if any
 * other holds it (QEMU uses it), with its name in @user. */
static GPtrArray *
file_leftovers (JsonNode *graph, JsonNode *nodes, const char *file, JsonArray *gnodes,
                JsonArray *edges, const char **user)
{
  JsonArray *a = JSON_NODE_HOLDS_ARRAY (nodes) ? json_node_get_array (nodes) : NULL;
  g_autoptr (GPtrArray) matches = g_ptr_array_new ();
  GPtrArray *left = g_ptr_array_new_with_free_func (g_free);
  struct stat fst, nst;
  gboolean have = stat (file, &fst) == 0;

  for (guint i = 0; a && i < json_array_get_length (a); i++) {
    JsonObject *n = json_array_get_object_element (a, i);
    const char *name = n ? json_object_get_string_member_with_default (n, "file", NULL) : NULL;

    if (name == NULL)
      continue;
    if (strcmp (name, file) == 0 ||
        (g_str_has_prefix (name, "json:") && strstr (name, file)) ||
        (have && stat (name, &nst) == 0 && nst.st_dev == fst.st_dev && nst.st_ino == fst.st_ino))
      g_ptr_array_add (matches, (gpointer) json_object_get_string_member_with_default (
                         n, "node-name", "?"));
  }
  for (guint i = 0; i < matches->len; i++) {
    if (!graph_has_parent (edges, graph_node_id (gnodes, matches->pdata[i]))) {
      g_autoptr (GPtrArray) owned = shd_block_graph_owned (graph, matches->pdata[i]);

      for (guint k = 0; k < owned->len; k++)
        if (!str_array_has (left, owned->pdata[k]))
          g_ptr_array_add (left, g_strdup (owned->pdata[k]));
    }
  }
  for (guint i = 0; i < matches->len; i++) {
    if (!str_array_has (left, matches->pdata[i])) {
      *user = matches->pdata[i];
      g_ptr_array_unref (left);
      return NULL;
    }
  }
  return left;
}

static int
pending_index (ShdMove *move, const char *file)
{
  guint i;

  if (move->pending_files &&
      g_ptr_array_find_with_equal_func (move->pending_files, file, g_str_equal, &i))
    return i;
  return -1;
}

/* The plan completed with the files an earlier run closed to retire
 * (pending_files), when still the same files: one QEMU opens no more
 * (NULL node: nothing to wait for), or through a node left without a
 * parent (an earlier run's blockdev-del of its parent), deleted first.
 * Then the name each file is kept under: the one an earlier run gave it,
 * else @keep_as, or keep_as.N (the lowest N free of the earlier names)
 * when there are several. */
static void
plan_files (ShdMove *move, JsonNode *graph, JsonNode *nodes, JsonArray *gnodes,
            JsonArray *edges)
{
  g_autoptr (GHashTable) used = g_hash_table_new (g_str_hash, g_str_equal);
  guint next = 0, fresh = 0;

  for (guint i = 0; move->pending_files && i < move->pending_files->len; i++) {
    const char *file = move->pending_files->pdata[i];
    g_autoptr (GPtrArray) left = NULL;
    g_autofree char *id = NULL;
    const char *user = NULL;

    if (move->pending_dests->pdata[i])
      g_hash_table_add (used, move->pending_dests->pdata[i]);
    if (pending_index (move, file) != (int) i || str_array_has (move->retire_files, file))
      continue;         /* listed twice, or in the plan */
    id = file_id (file);
    if (id == NULL || g_strcmp0 (id, move->pending_ids->pdata[i]) != 0) {
      if (g_file_test (file, G_FILE_TEST_EXISTS))
        g_ptr_array_add (move->kept, g_strdup_printf ("%s (not the file an earlier run "
                                                      "closed)", file));
      continue;         /* retired already, or another file now */
    }
    left = file_leftovers (graph, nodes, file, gnodes, edges, &user);
    if (left == NULL) {
      g_ptr_array_add (move->kept, g_strdup_printf ("%s (QEMU's node %s opens it)", file,
                                                    user));
      continue;
    }
    if (left->len && str_array_has (move->retire_nodes, left->pdata[0]))
      continue;         /* the plan has it, with what it keeps and retires */
    for (guint k = 0; k < left->len; k++)
      if (!str_array_has (move->retire_nodes, left->pdata[k]))
        g_ptr_array_add (move->retire_nodes, g_strdup (left->pdata[k]));
    g_ptr_array_add (move->retire_files, g_strdup (file));
    /* retired once its nodes are: the first is a root (none: no wait) */
    g_ptr_array_add (move->retire_file_nodes, left->len ? g_strdup (left->pdata[0]) : NULL);
  }
  move->retire_dests = g_ptr_array_new_with_free_func (g_free);
  move->retire_ids = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < move->retire_files->len; i++) {
    int p = pending_index (move, move->retire_files->pdata[i]);

    fresh += p < 0 || move->pending_dests->pdata[p] == NULL;
    g_ptr_array_add (move->retire_ids, file_id (move->retire_files->pdata[i]));
  }
  for (guint i = 0; i < move->retire_files->len; i++) {
    int p = pending_index (move, move->retire_files->pdata[i]);
    char *dest = NULL;

    if (p >= 0 && move->pending_dests->pdata[p]) {
      dest = g_strdup (move->pending_dests->pdata[p]);
    } else if (move->keep_as && fresh == 1 && !g_hash_table_contains (used, move->keep_as)) {
      dest = g_strdup (move->keep_as);
    } else if (move->keep_as) {
      do {
        g_free (dest);
        dest = g_strdup_printf ("%s.%u", move->keep_as, next++);
      } while (g_hash_table_contains (used, dest));
    }
    g_ptr_array_add (move->retire_dests, dest);
  }
}

/* Whether renaming @file into @dir stays in one mount (rename(2) does
 * not cross one, not even a bind mount of the same filesystem) */
static gboolean
same_mount (const char *file, const char *dir)
{
  struct statx f, d;
  const unsigned mask = STATX_MNT_ID | STATX_BASIC_STATS;

  if (statx (AT_FDCWD, file, AT_SYMLINK_NOFOLLOW, mask, &f) < 0 ||
      statx (AT_FDCWD, dir, 0, mask, &d) < 0)
    return FALSE;
  if (f.stx_dev_major != d.stx_dev_major || f.stx_dev_minor != d.stx_dev_minor)
    return FALSE;
  return !(f.stx_mask & d.stx_mask & STATX_MNT_ID) || f.stx_mnt_id == d.stx_mnt_id;
}

/* keep-as renames: every kept name free, in a directory shadowd can write
 * to, in the same mount as its image; checked before anything is removed */
static gboolean
keep_as_possible (ShdMove *move, GError **error)
{
  for (guint i = 0; i < move->retire_files->len; i++) {
    const char *file = move->retire_files->pdata[i];
    const char *dest = move->retire_dests->pdata[i];
    g_autofree char *dir = NULL;

    if (dest == NULL)
      continue;
    if (!g_path_is_absolute (dest)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "keep-as '%s' is not an absolute path", dest);
      return FALSE;
    }
    dir = g_path_get_dirname (dest);
    if (g_file_test (dest, G_FILE_TEST_EXISTS) || g_file_test (dest, G_FILE_TEST_IS_SYMLINK)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS,
                   "%s exists: keep-as does not overwrite", dest);
      return FALSE;
    }
    if (!g_file_test (dir, G_FILE_TEST_IS_DIR) || access (dir, W_OK | X_OK) < 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                   "keep-as %s: %s is not a directory shadowd can write to", dest, dir);
      return FALSE;
    }
    if (!same_mount (file, dir)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "%s is not in the same mount as %s: keep-as renames, it does not copy",
                   dest, file);
      return FALSE;
    }
  }
  return TRUE;
}

/* The retire plan: the node's children other than the target (to remove,
 * by edge name), and every other tier of the disk's configuration whose
 * node QEMU still has unused (a move resumed after a stop, a released
 * tier); for each, the nodes it owns and their files */
static void
on_commit_nodes (GObject *src, GAsyncResult *res, gpointer data)
{
  GraphCtx *gc = data;
  g_autoptr (MoveCtx) ctx = gc->ctx;
  g_autoptr (JsonNode) graph = gc->graph;
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) nodes = reply (src, res, ctx, &error);
  ShdMove *move = ctx->move;
  const ShdPolicyConfig *pc;
  JsonArray *edges, *gnodes;
  gint64 node_id;

  g_free (gc);
  if (nodes == NULL) {
    if (error)
      enter (move, SHD_MOVE_FAILED, "query-named-block-nodes: %s", error->message);
    return;
  }
  gnodes = json_object_get_array_member (json_node_get_object (graph), "nodes");
  edges = json_object_get_array_member (json_node_get_object (graph), "edges");
  node_id = graph_node_id (gnodes, move->disk->cfg->node);
  move->old_children = g_ptr_array_new_with_free_func (g_free);
  move->retire_nodes = g_ptr_array_new_with_free_func (g_free);
  move->retire_files = g_ptr_array_new_with_free_func (g_free);
  move->retire_file_nodes = g_ptr_array_new_with_free_func (g_free);
  move->retire_rbd = g_ptr_array_new_with_free_func ((GDestroyNotify) shd_rbd_image_free);
  move->retire_rbd_nodes = g_ptr_array_new_with_free_func (g_free);
  move->deleted = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  move->kept = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; edges && i < json_array_get_length (edges); i++) {
    JsonObject *e = json_array_get_object_element (edges, i);
    const char *edge = json_object_get_string_member_with_default (e, "name", "");
    const char *child;

    if (json_object_get_int_member_with_default (e, "parent", -2) != node_id ||
        !g_str_has_prefix (edge, "children."))
      continue;
    child = graph_node_name (gnodes, json_object_get_int_member_with_default (e, "child", -1));
    if (child == NULL || strcmp (child, move->child) == 0)
      continue;
    g_ptr_array_add (move->old_children, g_strdup (edge));
    retire_root (move, graph, nodes, child);
  }
  pc = shd_policy_config (move->disk->policy);
  for (guint t = 0; t < pc->n_tiers; t++) {
    gint64 id = graph_node_id (gnodes, pc->tiers[t].child);

    if ((int) t != move->target && id >= 0 && !graph_has_parent (edges, id))
      retire_root (move, graph, nodes, pc->tiers[t].child);
  }
  plan_files (move, graph, nodes, gnodes, edges);
  if (!keep_as_possible (move, &error)) {
    enter (move, SHD_MOVE_FAILED, "the disk runs on %s, but nothing%s was retired: %s; run "
           "the move again with another --keep-as", move->child,
           move->pending_files && move->pending_files->len ? " more" : "", error->message);
    return;
  }
  commit_step (move);
}

static void
on_commit_graph (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (MoveCtx) ctx = data;
  g_autoptr (GError) error = NULL;
  JsonNode *graph = reply (src, res, ctx, &error);
  JsonObject *args;
  GraphCtx *gc;

  if (graph == NULL) {
    if (error)
      enter (ctx->move, SHD_MOVE_FAILED, "x-debug-query-block-graph: %s", error->message);
    return;
  }
  gc = g_new0 (GraphCtx, 1);
  gc->graph = graph;
  gc->ctx = g_steal_pointer (&ctx);
  gc->ctx->move->busy = TRUE;
  args = json_object_new ();
  json_object_set_boolean_member (args, "flat", TRUE);
  shd_qmp_execute_async (gc->ctx->disk->qmp, "query-named-block-nodes", args, 0,
                         gc->ctx->disk->cancel, on_commit_nodes, gc);
  json_object_unref (args);
}

/* Committing, one command at a time: read the graph, remove the old
 * children, make the node durable without them, delete their nodes, then
 * their files */
static void
commit_step (ShdMove *move)
{
  JsonObject *args;

  if (move->state != SHD_MOVE_COMMITTING)
    return;
  if (move->old_children == NULL) {
    send (move, "x-debug-query-block-graph", NULL, on_commit_graph);
  } else if (move->old_children->len) {
    args = json_object_new ();
    json_object_set_string_member (args, "parent", move->disk->cfg->node);
    json_object_set_string_member (args, "child", move->old_children->pdata[0]);
    send (move, "x-blockdev-change", args, on_child_removed);
  } else if (!move->durable_sent) {
    g_autoptr (GPtrArray) only = g_ptr_array_new ();

    move->durable_sent = TRUE;
    g_ptr_array_add (only, move->child);
    reopen (move, only, on_durable);
  } else if (!move->durable) {
    /* a failed flush ended the move */
    return;
  } else if (!move->pending_recorded) {
    g_autofree char *files = NULL;

    /* a stop from here on leaves files only the move's state names */
    move->pending_recorded = TRUE;
    g_ptr_array_add (move->retire_files, NULL);
    files = g_strjoinv (", ", (char **) move->retire_files->pdata);
    g_ptr_array_remove_index (move->retire_files, move->retire_files->len - 1);
    if (*files) {
      g_autofree char *what = g_strdup_printf ("retiring %s", files);

      record (move, what);
    }
    commit_step (move);
  } else if (move->retire_nodes->len) {
    args = json_object_new ();
    json_object_set_string_member (args, "node-name", move->retire_nodes->pdata[0]);
    send (move, "blockdev-del", args, on_node_deleted);
  } else if (move->retired == NULL) {
    move->retired = g_string_new (NULL);
    g_string_append_printf (move->retired, "%s is the disk's only tier", move->child);
    if (!retire_files (move, move->retired))
      return;
    retire_rbd_step (move);
  } else if (move->retire_rbd->len) {
    retire_rbd_step (move);
  } else {
    for (guint i = 0; i < move->kept->len; i++)
      g_string_append_printf (move->retired, "; %s kept (shadowd does not remove it)",
                              (char *) move->kept->pdata[i]);
    enter (move, SHD_MOVE_DONE, "%s", move->retired->str);
  }
}

/* ---- the states driven by samples ---- */

void
shd_move_tick (ShdDisk *disk)
{
  ShdMove *move = disk->move;
  const ShdTierProfile *pr;

  if (move && move->raised && !shd_move_running (move) && !move->busy &&
      shd_qmp_is_ready (disk->qmp)) {
    /* raised by a shadowd that stopped: this one cannot know, so lowers
     * (once it knows the active child) */
    if (!move->restored || (disk->rates && !disk->reopen_in_flight)) {
      if (move->restored)
        disk->write_sync_raised = TRUE;
      if (shd_disk_lower_write_sync (disk))
        move->raised = FALSE;
    }
  }
  if (!shd_move_running (move) || move->busy || !shd_qmp_is_ready (disk->qmp))
    return;
  pr = shd_policy_profile (disk->policy, move->target);
  /* an async disk's writes would leave the target stale again and again:
   * mirrored until the switch, as for a pre-warm */
  if (move->state < SHD_MOVE_SWITCHING && shd_disk_raise_write_sync (disk))
    move->raised = TRUE;
  switch (move->state) {
  case SHD_MOVE_PREPARING:
    /* A release in flight (the aborted move's, the policy's) may yet
     * take the target's child out: its state is known from the first
     * sample after the release ended.  QMP answers in order, so that
     * sample was taken after the child left. */
    if (disk->release_in_flight || disk->samples <= disk->release_end_samples)
      break;
    /* an async disk is raised before the copy counts (a reopen in
     * flight, such as an aborted move's lowering, defers it) */
    if (shd_disk_write_async (disk) && !move->raised)
      break;
    if (pr->state) {
      enter (move, SHD_MOVE_COPYING, "%s is in %s", move->child, disk->cfg->node);
      break;
    }
    if (!move->added) {
      move->added = TRUE;
      shd_disk_add_tier (disk, move->target);
    } else if (since_s (move->state_us) > MOVE_ADD_TIMEOUT_S) {
      enter (move, SHD_MOVE_FAILED, "%s was not in %s after %d s (see the log)",
             move->child, disk->cfg->node, MOVE_ADD_TIMEOUT_S);
    }
    break;
  case SHD_MOVE_COPYING:
    if (pr->state == NULL) {
      enter (move, SHD_MOVE_FAILED, "%s left %s during the copy", move->child,
             disk->cfg->node);
    } else if (strcmp (pr->state, "active") == 0) {
      /* a move to the tier already serving: nothing to copy or switch */
      enter (move, SHD_MOVE_COMMITTING, "%s is already the active child", move->child);
      commit_step (move);
    } else if (strcmp (pr->state, "degraded") == 0) {
      enter (move, SHD_MOVE_FAILED, "%s degraded during the copy", move->child);
    } else if (strcmp (pr->state, "synced") == 0) {
      if (move->verify)
        enter (move, SHD_MOVE_VERIFYING, "%s synced in %.1f s", move->child,
               since_s (move->state_us));
      else
        enter (move, SHD_MOVE_SWITCHING, "%s synced in %.1f s", move->child,
               since_s (move->state_us));
    } else {
      move->total_bytes = disk->size_bytes;
      move->done_bytes = MIN ((double) pr->valid_bytes, (double) disk->size_bytes);
      move->rate_bps = pr->copy_bps;
    }
    break;
  case SHD_MOVE_VERIFYING:
    verify_step (move);
    break;
  case SHD_MOVE_SWITCHING:
    reopen (move, NULL, on_switched);
    break;
  case SHD_MOVE_COMMITTING:
    commit_step (move);
    break;
  default:
    break;
  }
}

/* The files this move or an earlier run of it closed to retire and that
 * are still there, with the name each is to be kept under (NULL: to
 * delete): what a stop must not forget */
static void
unretired (ShdMove *move, GPtrArray **files, GPtrArray **dests, GPtrArray **ids)
{
  *files = g_ptr_array_new_with_free_func (g_free);
  *dests = g_ptr_array_new_with_free_func (g_free);
  *ids = g_ptr_array_new_with_free_func (g_free);
  if (move->state == SHD_MOVE_DONE)
    return;
  if (move->pending_recorded) {
    for (guint i = 0; i < move->retire_files->len; i++) {
      if (move->retire_ids->pdata[i] == NULL ||
          !g_file_test (move->retire_files->pdata[i], G_FILE_TEST_EXISTS))
        continue;
      g_ptr_array_add (*files, g_strdup (move->retire_files->pdata[i]));
      g_ptr_array_add (*dests, g_strdup (move->retire_dests->pdata[i]));
      g_ptr_array_add (*ids, g_strdup (move->retire_ids->pdata[i]));
    }
  }
  for (guint i = 0; move->pending_files && i < move->pending_files->len; i++) {
    const char *file = move->pending_files->pdata[i];

    if (str_array_has (*files, file) || !g_file_test (file, G_FILE_TEST_EXISTS))
      continue;
    g_ptr_array_add (*files, g_strdup (file));
    g_ptr_array_add (*dests, g_strdup (move->pending_dests->pdata[i]));
    g_ptr_array_add (*ids, g_strdup (move->pending_ids->pdata[i]));
  }
}

void
shd_move_add_failed (ShdMove *move, int tier, const char *why)
{
  if (shd_move_running (move) && move->state == SHD_MOVE_PREPARING && move->target == tier &&
      move->added)
    enter (move, SHD_MOVE_FAILED, "adding %s to %s failed: %s", move->child,
           move->disk->cfg->node, why);
}

/* ---- requests ---- */

/* keep-as at request time: a free name in a directory shadowd can write;
 * the filesystem is checked against the images once they are known
 * (keep_as_possible()) */
static gboolean
keep_as_acceptable (ShdDisk *disk, const char *keep_as, GError **error)
{
  g_autofree char *dir = NULL;
  guint n = shd_policy_config (disk->policy)->n_tiers;

  if (!g_path_is_absolute (keep_as)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "keep-as must be an absolute path, not '%s'", keep_as);
    return FALSE;
  }
  dir = g_path_get_dirname (keep_as);
  if (!g_file_test (dir, G_FILE_TEST_IS_DIR) || access (dir, W_OK | X_OK) < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "keep-as %s: %s is not a directory shadowd can write to", keep_as, dir);
    return FALSE;
  }
  /* the names of one or of several kept images (keep_as_name()) */
  for (guint i = 0; i <= n; i++) {
    g_autofree char *name = i == n ? g_strdup (keep_as) : keep_as_name (keep_as, i, n);

    if (g_file_test (name, G_FILE_TEST_EXISTS) || g_file_test (name, G_FILE_TEST_IS_SYMLINK)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "%s exists: keep-as does not "
                   "overwrite", name);
      return FALSE;
    }
  }
  return TRUE;
}

JsonNode *
shd_disk_move (ShdDisk *disk, const ShdMoveRequest *req, GError **error)
{
  int target = shd_policy_tier_by_name (disk->policy, req->tier);
  g_autoptr (GPtrArray) pending = NULL, pending_dests = NULL, pending_ids = NULL;
  g_autofree char *keep_as_owned = NULL;
  const char *keep_as;
  ShdMove *earlier;
  gboolean was_paused, renamed;
  JsonNode *n;
  ShdMove *move;

  if (target < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "disk %s has no tier '%s'",
                 shd_disk_name (disk), req->tier);
    return NULL;
  }
  if (shd_move_running (disk->move)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY,
                 "disk %s is already moving to %s (%s); abort it first",
                 shd_disk_name (disk), disk->move->tier,
                 shd_move_state_name (disk->move->state));
    return NULL;
  }
  if (disk->move && disk->move->busy) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY,
                 "disk %s: the last move's command is still in flight; try again",
                 shd_disk_name (disk));
    return NULL;
  }
  if (!shd_qmp_is_ready (disk->qmp)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED, "disk %s is not connected",
                 shd_disk_name (disk));
    return NULL;
  }
  if (!disk->own_qmp) {
    /* the libvirt layer moves it (lvmove.c); it did not take it */
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "disk %s belongs to a libvirt domain: its move goes through libvirt, which "
                 "shadowd does not follow now", shd_disk_name (disk));
    return NULL;
  }
  /* a move after one that failed, was aborted or stopped with shadowd
   * (run again as its failure says, or another): */
  earlier = disk->move && (disk->move->state == SHD_MOVE_FAILED ||
                           disk->move->state == SHD_MOVE_ABORTED) ? disk->move : NULL;
  /* the earlier keep-as holds unless another is given: what the operator
   * asked to keep is never deleted by a later run; the names it took
   * itself are no reason to refuse it */
  keep_as = req->keep_as ? req->keep_as : earlier ? earlier->keep_as : NULL;
  renamed = req->keep_as && !(earlier && g_strcmp0 (earlier->keep_as, req->keep_as) == 0);
  if (renamed && !keep_as_acceptable (disk, req->keep_as, error))
    return NULL;
  /* the policy's state before the move: that of an interrupted one */
  was_paused = disk->move && disk->move->restored ? disk->move->was_paused :
               shd_policy_paused (disk->policy);
  /* and the files it closed but did not retire, as it meant to */
  if (earlier)
    unretired (earlier, &pending, &pending_dests, &pending_ids);
  /* a keep-as given now names all it retires */
  for (guint i = 0; renamed && pending && i < pending_dests->len; i++)
    g_clear_pointer (&pending_dests->pdata[i], g_free);
  keep_as_owned = g_strdup (keep_as);
  shd_move_free (disk->move);
  move = disk->move = g_new0 (ShdMove, 1);
  move->disk = disk;
  move->target = target;
  move->tier = g_strdup (req->tier);
  move->child = g_strdup (shd_policy_config (disk->policy)->tiers[target].child);
  move->verify = req->verify;
  move->verify_speed = req->verify_speed ? req->verify_speed : SHD_MOVE_VERIFY_SPEED_DEFAULT;
  move->keep_as = g_steal_pointer (&keep_as_owned);
  move->pending_files = g_steal_pointer (&pending);
  move->pending_dests = g_steal_pointer (&pending_dests);
  move->pending_ids = g_steal_pointer (&pending_ids);
  move->job_id = g_strdup_printf ("shadowd-verify-%s", disk->cfg->node);
  move->start_us = move->state_us = g_get_monotonic_time ();
  move->start_wall_ms = g_get_real_time () / 1000;
  move->copy_s = move->verify_s = move->verify_bps = NAN;
  move->done_bytes = move->total_bytes = move->rate_bps = NAN;
  move->state = SHD_MOVE_PREPARING;
  move->was_paused = was_paused;
  /* the policy decides but does not act while the move runs */
  shd_policy_set_paused (disk->policy, TRUE);
  shd_log (G_LOG_LEVEL_MESSAGE, shd_disk_name (disk), "move",
           "%s: operator requested a move to %s (%s)%s%s%s%s%s", shd_disk_name (disk),
           move->tier, move->child, move->verify ? ", verified" : "",
           move->keep_as ? ", keeping the old images as " : "",
           move->keep_as ? move->keep_as : "",
           move->keep_as && !req->keep_as ? " (the earlier move's --keep-as)" : "",
           move->pending_files && move->pending_files->len ?
           ", and retiring what the earlier move closed" : "");
  record (move, "requested");
  shd_move_tick (disk);
  n = json_node_new (JSON_NODE_OBJECT);
  json_node_take_object (n, shd_move_status (move));
  return n;
}

/* An aborted move's verify job cancelled: if that failed, the next
 * move clears what is left (on_leftover_jobs) */
static void
on_aborted_job (GObject *src, GAsyncResult *res, gpointer data)
{
  g_autoptr (GError) error = NULL;
  JsonNode *ret = shd_qmp_execute_finish (SHD_QMP (src), res, &error);

  move_ctx_free (data);
  if (ret)
    json_node_unref (ret);
}

JsonNode *
shd_disk_move_abort (ShdDisk *disk, GError **error)
{
  ShdMove *move = disk->move;
  JsonNode *n;

  if (!shd_move_running (move)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "disk %s has no move to abort",
                 shd_disk_name (disk));
    return NULL;
  }
  if (move->state >= SHD_MOVE_SWITCHING) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY,
                 "disk %s: the move to %s is %s; it can only go forward now",
                 shd_disk_name (disk), move->tier, shd_move_state_name (move->state));
    return NULL;
  }
  if (move->state == SHD_MOVE_VERIFYING) {
    JsonObject *args = json_object_new ();
    MoveCtx *ctx = g_new0 (MoveCtx, 1);

    /* cancelled, then dismissed by QEMU: no reply is awaited */
    json_object_set_string_member (args, "id", move->job_id);
    ctx->disk = g_object_ref (disk);
    ctx->move = move;
    shd_qmp_execute_async (disk->qmp, "job-cancel", args, 0, disk->cancel, on_aborted_job,
                           ctx);
    json_object_unref (args);
  }
  /* a child the move added goes again, as a release would (QMP keeps the
   * order: an add still in flight is done before the release looks) */
  if (move->added)
    shd_disk_release_tier (disk, move->target);
  /* a reply still in flight finds the move ended and does nothing */
  move->busy = FALSE;
  enter (move, SHD_MOVE_ABORTED, "aborted by the operator while %s",
         shd_move_state_name (move->state));
  n = json_node_new (JSON_NODE_OBJECT);
  json_node_take_object (n, shd_move_status (move));
  return n;
}

JsonObject *
shd_move_status (ShdMove *move)
{
  g_autoptr (GPtrArray) files = NULL, dests = NULL, ids = NULL;
  JsonObject *o;
  double eta = NAN;

  if (move == NULL)
    return NULL;
  o = json_object_new ();
  json_object_set_string_member (o, "tier", move->tier);
  json_object_set_string_member (o, "child", move->child);
  json_object_set_string_member (o, "state", shd_move_state_name (move->state));
  json_object_set_boolean_member (o, "verify", move->verify);
  json_object_set_int_member (o, "verify-speed", move->verify_speed);
  shd_json_set_str (o, "keep-as", move->keep_as);
  shd_json_set_str (o, "reason", move->reason);
  json_object_set_double_member (o, "start-time", move->start_wall_ms / 1000.0);
  if (move->end_wall_ms)
    json_object_set_double_member (o, "end-time", move->end_wall_ms / 1000.0);
  json_object_set_double_member (o, "elapsed-s", move->end_wall_ms ?
                                 (move->end_wall_ms - move->start_wall_ms) / 1000.0 :
                                 since_s (move->start_us));
  shd_json_set_num (o, "done-bytes", move->done_bytes);
  shd_json_set_num (o, "total-bytes", move->total_bytes);
  shd_json_set_num (o, "rate-bps", move->rate_bps);
  if (isfinite (move->rate_bps) && move->rate_bps > 0 && isfinite (move->total_bytes))
    eta = MAX (move->total_bytes - move->done_bytes, 0) / move->rate_bps;
  shd_json_set_num (o, "eta-s", eta);
  shd_json_set_num (o, "copy-s", move->copy_s);
  shd_json_set_num (o, "verify-s", move->verify_s);
  shd_json_set_num (o, "verify-bps", move->verify_bps);
  unretired (move, &files, &dests, &ids);
  if (files->len) {
    JsonArray *a = json_array_new ();

    for (guint i = 0; i < files->len; i++) {
      JsonObject *f = json_object_new ();

      json_object_set_string_member (f, "file", files->pdata[i]);
      shd_json_set_str (f, "keep-as", dests->pdata[i]);
      json_object_set_string_member (f, "id", ids->pdata[i]);
      json_array_add_object_element (a, f);
    }
    json_object_set_array_member (o, "retiring", a);
  }
  return o;
}

/* ---- Prometheus ---- */

static const ShdMetricFamily families[] = {
  { "shadowd_disk_move_state", SHD_METRIC_GAUGE,
    "1 for the state of the disk's last permanent move, with its target tier" },
  { "shadowd_disk_move_done_bytes", SHD_METRIC_GAUGE,
    "Bytes the running move's current state has copied or verified" },
  { "shadowd_disk_move_total_bytes", SHD_METRIC_GAUGE,
    "Bytes the running move's current state has to copy or verify" },
  { "shadowd_disk_move_rate_bytes_per_second", SHD_METRIC_GAUGE,
    "The running move's copy or verify rate" },
};

void
shd_move_declare_metrics (ShdMetrics *m)
{
  shd_metrics_declare (m, families, G_N_ELEMENTS (families));
}

static void
sample (ShdMetrics *m, const char *family, double v, const char *disk, const char *tier,
        const char *state)
{
  const char *labels[] = { "disk", disk, "tier", tier, state ? "state" : NULL, state, NULL };

  if (isfinite (v))
    shd_metrics_addv (m, family, v, labels);
}

void
shd_move_collect_metrics (ShdMove *move, const char *disk, ShdMetrics *m)
{
  if (move == NULL)
    return;
  for (guint s = 0; s < G_N_ELEMENTS (state_names); s++)
    sample (m, "shadowd_disk_move_state", move->state == s, disk, move->tier,
            state_names[s]);
  if (!shd_move_running (move))
    return;
  sample (m, "shadowd_disk_move_done_bytes", move->done_bytes, disk, move->tier, NULL);
  sample (m, "shadowd_disk_move_total_bytes", move->total_bytes, disk, move->tier, NULL);
  sample (m, "shadowd_disk_move_rate_bytes_per_second", move->rate_bps, disk, move->tier,
          NULL);
}

/* A number or boolean member of a recorded state, @dflt if absent or of
 * another type */
static double
json_number_member (JsonObject *o, const char *name, double dflt)
{
  JsonNode *n = json_object_get_member (o, name);
  GType t = n && JSON_NODE_HOLDS_VALUE (n) ? json_node_get_value_type (n) : G_TYPE_INVALID;

  if (t == G_TYPE_INT64 || t == G_TYPE_DOUBLE || t == G_TYPE_BOOLEAN)
    return json_node_get_double (n);
  return dflt;
}

/* A string member of a recorded state, "" if absent or of another type */
static const char *
json_string_member (JsonObject *o, const char *name)
{
  JsonNode *n = json_object_get_member (o, name);

  return n && json_node_get_value_type (n) == G_TYPE_STRING ? json_node_get_string (n) : "";
}

/* The files a stopped or failed run had closed to retire (unretired()),
 * read back; entries of another shape are left out */
static void
restore_retiring (ShdMove *move, JsonArray *a)
{
  move->pending_files = g_ptr_array_new_with_free_func (g_free);
  move->pending_dests = g_ptr_array_new_with_free_func (g_free);
  move->pending_ids = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonNode *e = json_array_get_element (a, i);
    JsonObject *f = JSON_NODE_HOLDS_OBJECT (e) ? json_node_get_object (e) : NULL;
    JsonNode *file = f ? json_object_get_member (f, "file") : NULL;
    JsonNode *dest = f ? json_object_get_member (f, "keep-as") : NULL;
    JsonNode *id = f ? json_object_get_member (f, "id") : NULL;

    if (file == NULL || json_node_get_value_type (file) != G_TYPE_STRING ||
        id == NULL || json_node_get_value_type (id) != G_TYPE_STRING ||
        !g_path_is_absolute (json_node_get_string (file)) ||
        (dest && !JSON_NODE_HOLDS_NULL (dest) &&
         (json_node_get_value_type (dest) != G_TYPE_STRING ||
          !g_path_is_absolute (json_node_get_string (dest)))))
      continue;
    g_ptr_array_add (move->pending_files, g_strdup (json_node_get_string (file)));
    g_ptr_array_add (move->pending_dests,
                     dest && !JSON_NODE_HOLDS_NULL (dest) ? g_strdup (json_node_get_string (dest))
                     : NULL);
    g_ptr_array_add (move->pending_ids, g_strdup (json_node_get_string (id)));
  }
}

void
shd_move_restore (ShdDisk *disk)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) node = NULL;
  JsonObject *o;
  JsonNode *retiring;
  ShdMove *move;
  const char *state;
  guint known;
  int target;

  if (disk->history == NULL || disk->move != NULL)
    return;
  node = shd_history_get_state (disk->history, shd_disk_name (disk), "move", &error);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT (node))
    return;
  o = json_node_get_object (node);
  state = json_string_member (o, "state");
  target = shd_policy_tier_by_name (disk->policy, json_string_member (o, "tier"));
  for (known = 0; known < G_N_ELEMENTS (state_names); known++)
    if (strcmp (state_names[known], state) == 0)
      break;
  if (target < 0 || known == G_N_ELEMENTS (state_names)) {
    shd_log (G_LOG_LEVEL_WARNING, shd_disk_name (disk), "move",
             "%s: the recorded move (state '%s', tier '%s') is not one this shadowd knows: "
             "ignored", shd_disk_name (disk), state, json_string_member (o, "tier"));
    return;
  }
  move = disk->move = g_new0 (ShdMove, 1);
  move->disk = disk;
  move->target = target;
  move->tier = g_strdup (json_string_member (o, "tier"));
  move->child = g_strdup (shd_policy_config (disk->policy)->tiers[target].child);
  move->verify = json_number_member (o, "verify", 0) != 0;
  move->verify_speed = MAX (json_number_member (o, "verify-speed", 0), 0);
  /* a keep-as that cannot be read keeps everything: a name that is not
   * absolute fails the retire before anything goes (keep_as_possible()) */
  if (json_object_has_member (o, "keep-as") &&
      !JSON_NODE_HOLDS_NULL (json_object_get_member (o, "keep-as")))
    move->keep_as = g_strdup (*json_string_member (o, "keep-as") ?
                              json_string_member (o, "keep-as") : "(unreadable)");
  move->job_id = g_strdup_printf ("shadowd-verify-%s", disk->cfg->node);
  move->was_paused = json_number_member (o, "was-paused", 0) != 0;
  move->start_wall_ms = (gint64) (json_number_member (o, "start-time", 0) * 1000);
  move->end_wall_ms = (gint64) (json_number_member (o, "end-time", 0) * 1000);
  move->start_us = move->state_us = g_get_monotonic_time ();
  move->done_bytes = move->total_bytes = move->rate_bps = NAN;
  move->copy_s = json_number_member (o, "copy-s", NAN);
  move->verify_s = json_number_member (o, "verify-s", NAN);
  move->verify_bps = json_number_member (o, "verify-bps", NAN);
  retiring = json_object_get_member (o, "retiring");
  if (retiring && JSON_NODE_HOLDS_ARRAY (retiring))
    restore_retiring (move, json_node_get_array (retiring));
  if (strcmp (state, "failed") == 0 || strcmp (state, "aborted") == 0) {
    /* kept for the next move: what it was to keep and to retire */
    move->state = strcmp (state, "failed") == 0 ? SHD_MOVE_FAILED : SHD_MOVE_ABORTED;
    move->reason = g_strdup (json_string_member (o, "reason"));
    return;
  }
  /* moved for good, or stopped half-way: either way the policy waits */
  shd_policy_set_paused (disk->policy, TRUE);
  if (strcmp (state, "done") == 0) {
    move->state = SHD_MOVE_DONE;
    shd_log (G_LOG_LEVEL_MESSAGE, shd_disk_name (disk), "move",
             "%s: moved to %s for good: the policy stays paused", shd_disk_name (disk),
             move->tier);
    return;
  }
  move->restored = TRUE;
  move->state = SHD_MOVE_FAILED;
  /* the dead shadowd may have left an async disk in write-mode sync */
  if (disk->cfg->write_mode && strcmp (disk->cfg->write_mode, "async") == 0)
    move->raised = TRUE;
  move->reason = g_strdup_printf ("shadowd stopped while the move was %s; run shadowctl move "
                                  "%s %s again to go on%s%s%s, or resume the disk to leave it",
                                  state, shd_disk_name (disk), move->tier,
                                  move->keep_as ? " (old images will be kept as " : "",
                                  move->keep_as ? move->keep_as : "",
                                  move->keep_as ? " or its .N names)" : "");
  shd_log (G_LOG_LEVEL_WARNING, shd_disk_name (disk), "move", "%s: move to %s: %s",
           shd_disk_name (disk), move->tier, move->reason);
}
