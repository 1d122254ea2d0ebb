/* Permanent moves of a libvirt domain's disk (shadowctl move DOMAIN.TARGET
 * TIER, virsh-shadow DOMAIN TARGET move TIER).
 *
 * The move is libvirt's own block copy of the disk into a new image in the
 * target tier's directory, then its pivot; then the domain's shadow
 * metadata says that the disk lives on that tier.  Why libvirt's copy and
 * not the shadow's tier image: the domain's definition must end up naming
 * the new image through a libvirt operation, or the next start without
 * shadowd would use the old one, and the only libvirt operation that
 * changes a running disk's image is a block copy's pivot, whose
 * destination libvirt opens itself (the shadow holds its tier images).
 * The copy reads the disk through the shadow, so from the tier it is on.
 *
 * States (ShdMoveState), all in the worker lv->moves, one move at a time:
 *   preparing   checks; the move recorded in the metadata (<move>, lvmeta.h)
 *               before anything is made
 *   copying     virDomainBlockCopy to IMAGE, until the mirror is ready
 *   verifying   (--verify) x-shadow-verify-copy compares IMAGE's node with
 *               the disk's by content while the mirror keeps it in step
 *   switching   the pivot: libvirt's live and persistent definitions name
 *               IMAGE from now on
 *   committing  IMAGE flushed to its storage; then the old image deleted or
 *               renamed, the target tier's own image removed, and the
 *               metadata rewritten: the tier is the disk's own image and the
 *               record is gone
 * Abort (before switching) cancels the verify and the copy and removes
 * IMAGE; so does a failure before the pivot, a difference found included.
 * Nothing of the old image is touched before the pivot, and it is released
 * only once IMAGE is durable and the persistent definition names it.
 *
 * The record makes a move outlive shadowd: a shadowd that finds one
 * (lv_move_resume, from the domain's look) takes the move up where libvirt
 * is: the copy job still running (copying), the disk already on IMAGE
 * (committing), or neither (the copy died with QEMU or libvirtd: failed,
 * IMAGE removed). */
#define _GNU_SOURCE             /* statx */
#include "lvprivate.h"

#include "commands.h"
#include "log.h"
#include "move.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define POLL_MS 200
/* how long a domain whose copy vanished may take to show as stopped */
#define STOP_SETTLE_MS 3000

/* Shared by the main loop (Dom->moves) and the worker: a GAtomicRcBox */
struct _LvMove {
  /* set once, before the work starts */
  Conn *c;                      /* a reference */
  ShdLibvirt *lv;
  char *uuid;
  char *domain;
  char *target;
  char *name;                   /* DOMAIN.TARGET */
  char *tier;
  char *keep_as;                /* or NULL: the old image is deleted */
  guint64 copy_speed;           /* bytes/s for libvirt's copy; 0: no limit */
  gboolean verify;
  guint64 verify_speed;         /* bytes/s compared */
  gboolean resumed;             /* taken up from a record */
  gboolean libvirt_lost;        /* the worker's: libvirt stopped answering; wait */
  char *record_domain;          /* resumed: the record's domain and old-id */
  char *old_id;                 /* the old image's identity (file_id) */
  gint64 start_us;
  gint abort;                   /* atomic: the operator asked */
  /* the worker's, read by the main loop under lock */
  GMutex lock;
  ShdMoveState state;
  char *image;                  /* the new image */
  char *old;                    /* the old image */
  char *reason;                 /* why it failed or what it left */
  guint64 done_bytes, total_bytes;
  double rate_bps;
  double copy_s, verify_s, verify_bps;
  gint64 end_us;
  gboolean running;
};

static void
lv_move_clear (LvMove *m)
{
  conn_unref (m->c);
  g_free (m->uuid);
  g_free (m->domain);
  g_free (m->target);
  g_free (m->name);
  g_free (m->tier);
  g_free (m->keep_as);
  g_free (m->record_domain);
  g_free (m->old_id);
  g_free (m->image);
  g_free (m->old);
  g_free (m->reason);
  g_mutex_clear (&m->lock);
}

static LvMove *
lv_move_ref (LvMove *m)
{
  return g_atomic_rc_box_acquire (m);
}

void
lv_move_unref (LvMove *m)
{
  g_atomic_rc_box_release_full (m, (GDestroyNotify) lv_move_clear);
}

static JsonObject *move_to_json (LvMove *m);

/* A state in the history, as a plain disk's move records it (move.c): a
 * decision of kind "move" with the move's status; written by the main loop */
typedef struct {
  ShdLibvirt *lv;               /* a reference */
  char *name;
  char *reason;
  JsonNode *detail;
  gint64 t_ms;
} Record;

static void
record_free (gpointer p)
{
  Record *r = p;

  g_object_unref (r->lv);
  g_free (r->name);
  g_free (r->reason);
  json_node_unref (r->detail);
  g_free (r);
}

static gboolean
record_in_main (gpointer p)
{
  Record *r = p;
  /* a shutdown closes the history next */
  ShdHistory *h = r->lv->dm && !r->lv->stopping ? shd_daemon_get_history (r->lv->dm) : NULL;
  g_autoptr (GError) e = NULL;

  if (h && !shd_history_add_decision (h, r->name, r->t_ms, "move", r->reason, r->detail, &e))
    shd_log (G_LOG_LEVEL_WARNING, r->name, "history", "%s", e->message);
  return G_SOURCE_REMOVE;
}

static void
record (LvMove *m, const char *what)
{
  Record *r = g_new0 (Record, 1);
  JsonObject *o = move_to_json (m);

  json_object_set_string_member (o, "kind", "move");
  json_object_set_string_member (o, "reason", what);
  json_object_set_boolean_member (o, "dry-run", FALSE);
  r->lv = g_object_ref (m->lv);
  r->name = g_strdup (m->name);
  r->reason = g_strdup (what);
  r->detail = json_node_init_object (json_node_alloc (), o);
  json_object_unref (o);
  r->t_ms = g_get_real_time () / 1000;
  g_main_context_invoke_full (m->c->context, G_PRIORITY_DEFAULT, record_in_main, r,
                              record_free);
}

static void
set_state (LvMove *m, ShdMoveState state)
{
  g_mutex_lock (&m->lock);
  m->state = state;
  g_mutex_unlock (&m->lock);
  shd_log (G_LOG_LEVEL_MESSAGE, m->name, "move", "%s: move to %s: %s", m->name, m->tier,
           shd_move_state_name (state));
  record (m, shd_move_state_name (state));
}

static gboolean G_GNUC_PRINTF (3, 4)
end_move (LvMove *m, ShdMoveState state, const char *fmt, ...)
{
  va_list ap;

  g_mutex_lock (&m->lock);
  m->state = state;
  g_free (m->reason);
  va_start (ap, fmt);
  m->reason = fmt ? g_strdup_vprintf (fmt, ap) : NULL;
  va_end (ap);
  m->end_us = g_get_monotonic_time ();
  g_mutex_unlock (&m->lock);
  shd_log (state == SHD_MOVE_DONE ? G_LOG_LEVEL_MESSAGE : G_LOG_LEVEL_WARNING, m->name,
           "move", "%s: move to %s %s%s%s", m->name, m->tier, shd_move_state_name (state),
           m->reason ? ": " : "", m->reason ? m->reason : "");
  {
    g_autofree char *what = g_strdup_printf ("%s%s%s", shd_move_state_name (state),
                                             m->reason ? ": " : "", m->reason ? m->reason : "");

    record (m, what);
  }
  return state == SHD_MOVE_DONE;
}

/* A file's identity: device, inode and birth time (inode numbers are
 * reused at once); NULL when it cannot be read */
static char *
file_id (const char *path)
{
  struct statx st;

  if (statx (AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME, &st) < 0 ||
      !S_ISREG (st.stx_mode))
    return NULL;
  return g_strdup_printf ("%u.%u:%" G_GUINT64_FORMAT ":%lld.%09u", st.stx_dev_major,
                          st.stx_dev_minor, (guint64) st.stx_ino,
                          (st.stx_mask & STATX_BTIME) ? (long long) st.stx_btime.tv_sec : 0LL,
                          (st.stx_mask & STATX_BTIME) ? st.stx_btime.tv_nsec : 0);
}

/* ---- the record and the metadata (worker) ---- */

/* The disk's metadata (LIVE or CONFIG), parsed; NULL when there is none */
static GPtrArray *
read_meta (virDomainPtr dom, unsigned int flags, GError **error)
{
  char *xml = virDomainGetMetadata (dom, VIR_DOMAIN_METADATA_ELEMENT, SHD_LV_NS_URI, flags);
  GPtrArray *disks;

  if (xml == NULL) {
    virErrorPtr err = virGetLastError ();

    if (err && err->code == VIR_ERR_NO_DOMAIN_METADATA)
      return g_ptr_array_new_with_free_func ((GDestroyNotify) shd_lv_disk_free);
    lv_set_error (error, "cannot read the shadow metadata");
    return NULL;
  }
  disks = shd_lv_meta_parse (xml, error);
  free (xml);
  return disks;
}

static ShdLvDisk *
meta_disk (GPtrArray *disks, const char *target)
{
  for (guint i = 0; disks && i < disks->len; i++)
    if (strcmp (((ShdLvDisk *) disks->pdata[i])->target, target) == 0)
      return disks->pdata[i];
  return NULL;
}

typedef enum { RECORD_SET, RECORD_CLEAR, RECORD_COMMIT } RecordOp;

/* Applies op to the disk's metadata, live and persistent: the record set
 * (from m), cleared, or the move committed (shd_lv_disk_moved_to; a disk
 * left without a second tier leaves the metadata).  A definition without
 * the disk is left as it is. */
static gboolean
update_meta (LvMove *m, virDomainPtr dom, RecordOp op, GError **error)
{
  unsigned int which[] = { VIR_DOMAIN_AFFECT_LIVE, VIR_DOMAIN_AFFECT_CONFIG };
  int active_r = virDomainIsActive (dom), persistent_r = virDomainIsPersistent (dom);
  gboolean active = active_r == 1, persistent = persistent_r == 1;

  if (active_r < 0 || persistent_r < 0) {
    lv_set_error (error, "libvirt does not answer");
    return FALSE;
  }
  for (guint w = 0; w < G_N_ELEMENTS (which); w++) {
    g_autoptr (GPtrArray) disks = NULL;
    g_autofree char *xml = NULL;
    ShdLvDisk *d;

    if ((which[w] == VIR_DOMAIN_AFFECT_LIVE && !active) ||
        (which[w] == VIR_DOMAIN_AFFECT_CONFIG && !persistent))
      continue;
    if ((disks = read_meta (dom, which[w], error)) == NULL)
      return FALSE;
    if ((d = meta_disk (disks, m->target)) == NULL)
      continue;
    switch (op) {
    case RECORD_SET:
      shd_lv_move_free (d->move);
      d->move = g_new0 (ShdLvMove, 1);
      d->move->tier = g_strdup (m->tier);
      d->move->image = g_strdup (m->image);
      d->move->old = g_strdup (m->old);
      d->move->keep_as = g_strdup (m->keep_as);
      d->move->domain = g_strdup (m->uuid);
      d->move->old_id = g_strdup (m->old_id);
      if (m->verify)
        d->move->verify_speed = g_strdup_printf ("%" G_GUINT64_FORMAT, m->verify_speed);
      break;
    case RECORD_CLEAR:
      g_clear_pointer (&d->move, shd_lv_move_free);
      break;
    case RECORD_COMMIT:
      if (!shd_lv_disk_moved_to (d, m->tier))
        g_ptr_array_remove (disks, d);
      break;
    }
    if (disks->len > 0)
      xml = shd_lv_meta_format (disks);
    if (virDomainSetMetadata (dom, VIR_DOMAIN_METADATA_ELEMENT, xml, xml ? SHD_LV_NS_KEY : NULL,
                              SHD_LV_NS_URI, which[w]) < 0) {
      lv_set_error (error, "cannot write the shadow metadata");
      return FALSE;
    }
  }
  return TRUE;
}

/* ---- libvirt's view of the disk (worker) ---- */

/* The disk's image in the live (or persistent) definition */
static char *
disk_source (virDomainPtr dom, const char *target, unsigned int flags, char **format)
{
  char *xml = virDomainGetXMLDesc (dom, flags);
  g_autoptr (GPtrArray) disks = NULL;
  const ShdLvDomDisk *dd;
  char *source = NULL;

  if (xml == NULL)
    return NULL;
  disks = shd_lv_domain_disks (xml, NULL);
  free (xml);
  dd = disks ? shd_lv_domain_disk (disks, target) : NULL;
  if (dd && g_strcmp0 (dd->type, "file") == 0) {
    source = g_strdup (dd->source);
    if (format)
      *format = g_strdup (dd->format);
  }
  return source;
}

/* 1: a copy job, 0: no job, -1: another job or an error */
static int
copy_job (virDomainPtr dom, const char *target, virDomainBlockJobInfo *info)
{
  int r = virDomainGetBlockJobInfo (dom, target, info, 0);

  if (r <= 0)
    return r;
  return info->type == VIR_DOMAIN_BLOCK_JOB_TYPE_COPY ? 1 : -1;
}

static gboolean
sync_file (const char *path, GError **error)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  if (fd < 0 || fsync (fd) < 0) {
    int e = errno;

    if (fd >= 0)
      close (fd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "cannot flush %s: %s", path,
                 g_strerror (e));
    return FALSE;
  }
  close (fd);
  return TRUE;
}

/* Removes what a move that did not pivot made, on evidence only: libvirt
 * answers, no copy job runs, and the definition names another image.
 * Otherwise (libvirt out of reach: its pivot may still happen) the new
 * image and the record stay for the next look to decide.  TRUE if undone. */
static void verify_drop (LvMove *m, virDomainPtr dom);

static gboolean
undo_copy (LvMove *m, virDomainPtr dom)
{
  virDomainBlockJobInfo info;
  g_autoptr (GError) e = NULL;
  g_autofree char *source = NULL;
  int active = virDomainIsActive (dom);

  /* a verify (this shadowd's or a killed one's) holds the copy's node,
   * which libvirt deletes when it cancels the copy */
  if (active == 1)
    verify_drop (m, dom);

  if (active == 1 && copy_job (dom, m->target, &info) == 1 &&
      virDomainBlockJobAbort (dom, m->target, 0) < 0)
    shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: cannot cancel the copy: %s", m->name,
             virGetLastErrorMessage ());
  if (active < 0 || (active == 1 && copy_job (dom, m->target, &info) != 0))
    return FALSE;
  source = disk_source (dom, m->target, 0, NULL);
  if (source == NULL || strcmp (source, m->image) == 0)
    return FALSE;
  if (active == 1) {
    ShdLvMonitor mon = { lv_monitor, dom };

    if (!shd_lv_release_copy (&mon, m->target, m->image, &e)) {
      shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: the copy's nodes: %s", m->name,
               e->message);
      g_clear_error (&e);
    }
  }
  if (unlink (m->image) < 0 && errno != ENOENT)
    shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: cannot remove the copy %s: %s",
             m->name, m->image, g_strerror (errno));
  if (!update_meta (m, dom, RECORD_CLEAR, &e))
    shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: %s", m->name, e->message);
  return TRUE;
}

/* libvirt stopped answering (libvirtd restarts): the move waits for it
 * (move_work), then goes on from its record as a restarted shadowd would.
 * Returns FALSE: the move is not over. */
static gboolean
lose_libvirt (LvMove *m, const char *why)
{
  m->libvirt_lost = TRUE;
  g_mutex_lock (&m->lock);
  g_free (m->reason);
  m->reason = g_strdup_printf ("libvirt does not answer (%s); waiting for it", why);
  g_mutex_unlock (&m->lock);
  shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: move to %s: %s", m->name, m->tier,
           m->reason);
  return FALSE;
}

/* Ends a move before its pivot */
static gboolean
end_before_pivot (LvMove *m, virDomainPtr dom, ShdMoveState state, const char *why)
{
  if (undo_copy (m, dom))
    return end_move (m, state, "%s; the disk is still %s, the copy was removed", why, m->old);
  if (virDomainIsActive (dom) < 0)
    return lose_libvirt (m, why);
  return end_move (m, state, "%s; libvirt cannot tell whether the disk uses the copy %s: it "
                   "is kept, with the move's record, for shadowd's next look", why, m->image);
}

/* The new image: in the tier image's directory, named after the disk */
static char *
new_image_path (const char *tier_path, const char *domain, const char *target,
                const char *format, const char *old)
{
  g_autofree char *dir = g_path_get_dirname (tier_path);

  for (guint n = 1; n < 100; n++) {
    g_autofree char *base = n == 1 ? g_strdup_printf ("%s-%s.%s", domain, target, format) :
                            g_strdup_printf ("%s-%s.%u.%s", domain, target, n, format);
    char *path = g_build_filename (dir, base, NULL);

    if (strcmp (path, old) != 0 && !g_file_test (path, G_FILE_TEST_EXISTS) &&
        !g_file_test (path, G_FILE_TEST_IS_SYMLINK))
      return path;
    g_free (path);
  }
  return NULL;
}

static gboolean
prepare (LvMove *m, virDomainPtr dom, char **tier_image)
{
  g_autoptr (GError) e = NULL;
  g_autoptr (GPtrArray) disks = read_meta (dom, VIR_DOMAIN_AFFECT_LIVE, &e);
  g_autofree char *format = NULL, *old = NULL;
  virDomainBlockJobInfo info;
  ShdLvDisk *d;
  ShdLvTier *t;

  if (disks == NULL)
    return end_move (m, SHD_MOVE_FAILED, "%s", e->message);
  if ((d = meta_disk (disks, m->target)) == NULL)
    return end_move (m, SHD_MOVE_FAILED, "the domain's shadow metadata has no disk %s",
                     m->target);
  if ((t = shd_lv_disk_tier (d, m->tier)) == NULL)
    return end_move (m, SHD_MOVE_FAILED, "disk %s has no tier '%s'", m->name, m->tier);
  if (t->origin)
    return end_move (m, SHD_MOVE_FAILED, "tier %s is already the disk's own image", m->tier);
  if (t->path == NULL)
    return end_move (m, SHD_MOVE_FAILED, "tier %s is an rbd image: a libvirt disk moves to a "
                     "tier with a path in this version", m->tier);
  if (d->move)
    return end_move (m, SHD_MOVE_FAILED, "the metadata records a move to %s already",
                     d->move->tier);
  if ((old = disk_source (dom, m->target, 0, &format)) == NULL)
    return end_move (m, SHD_MOVE_FAILED, "the domain's disk %s is not a file image",
                     m->target);
  if (format == NULL)
    format = g_strdup ("raw");
  if (copy_job (dom, m->target, &info) != 0)
    return end_move (m, SHD_MOVE_FAILED, "disk %s has a block job running; let it end first",
                     m->target);
  if (m->keep_as && (g_file_test (m->keep_as, G_FILE_TEST_EXISTS) ||
                     g_file_test (m->keep_as, G_FILE_TEST_IS_SYMLINK)))
    return end_move (m, SHD_MOVE_FAILED, "--keep-as %s exists; nothing was changed", m->keep_as);
  g_mutex_lock (&m->lock);
  m->old = g_strdup (old);
  m->image = new_image_path (t->path, m->domain, m->target, format, old);
  g_mutex_unlock (&m->lock);
  if (m->image == NULL)
    return end_move (m, SHD_MOVE_FAILED, "no free name for the new image next to %s", t->path);
  if ((m->old_id = file_id (old)) == NULL)
    return end_move (m, SHD_MOVE_FAILED, "the disk's image %s is not a regular file", old);
  if (m->keep_as) {
    g_autofree char *dir = g_path_get_dirname (m->keep_as);
    struct stat so, sd;

    /* renamed by link(): the same filesystem, never over a file */
    if (stat (dir, &sd) < 0 || !S_ISDIR (sd.st_mode))
      return end_move (m, SHD_MOVE_FAILED, "--keep-as %s: %s is not a directory; nothing was "
                       "changed", m->keep_as, dir);
    if (stat (old, &so) < 0 || so.st_dev != sd.st_dev)
      return end_move (m, SHD_MOVE_FAILED, "--keep-as %s is not on the filesystem of %s (a "
                       "rename does not copy); nothing was changed", m->keep_as, old);
    if (strcmp (m->keep_as, m->image) == 0)
      return end_move (m, SHD_MOVE_FAILED, "--keep-as %s is the new image's name; nothing was "
                       "changed", m->keep_as);
  }
  *tier_image = g_strdup (t->path);
  if (!update_meta (m, dom, RECORD_SET, &e))
    return end_move (m, SHD_MOVE_FAILED, "%s", e->message);
  set_state (m, SHD_MOVE_COPYING);
  {
    g_autofree char *xml = g_markup_printf_escaped ("<disk type='file'><source file='%s'/>"
                                                    "<driver type='%s'/></disk>", m->image,
                                                    format);

    virTypedParameter speed[1] = { { VIR_DOMAIN_BLOCK_COPY_BANDWIDTH, VIR_TYPED_PARAM_ULLONG,
                                     { .ul = m->copy_speed } } };

    if (virDomainBlockCopy (dom, m->target, xml, speed, m->copy_speed ? 1 : 0,
                            VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB) < 0) {
      g_autofree char *msg = g_strdup_printf ("libvirt cannot start the copy: %s",
                                              virGetLastErrorMessage ());

      return end_before_pivot (m, dom, SHD_MOVE_FAILED, msg);
    }
  }
  return TRUE;
}

/* A state's progress, as status shows it: its rate is measured over at
 * least 1 s since the sample @r holds, which then moves on */
typedef struct {
  gint64 last_us;
  guint64 last_cur;
} Rate;

static void
set_progress (LvMove *m, guint64 cur, guint64 end, Rate *r)
{
  gint64 now = g_get_monotonic_time ();

  g_mutex_lock (&m->lock);
  m->done_bytes = cur;
  m->total_bytes = end;
  if (now - r->last_us >= G_USEC_PER_SEC) {
    m->rate_bps = (cur - MIN (cur, r->last_cur)) * 1e6 / (now - r->last_us);
    r->last_us = now;
    r->last_cur = cur;
  }
  g_mutex_unlock (&m->lock);
}

/* copying: until the mirror is ready (libvirt reports cur == end only then) */
static gboolean
wait_ready (LvMove *m, virDomainPtr dom)
{
  gint64 t0 = g_get_monotonic_time ();
  Rate rate = { t0, 0 };

  for (;;) {
    virDomainBlockJobInfo info = { 0 };
    int r;

    if (g_cancellable_is_cancelled (m->lv->cancel))
      return FALSE;             /* shadowd stops: the record takes it up again */
    if (g_atomic_int_get (&m->abort))
      return end_before_pivot (m, dom, SHD_MOVE_ABORTED, "aborted");
    r = copy_job (dom, m->target, &info);
    if (r != 1) {
      g_autofree char *msg = g_strdup_printf ("libvirt's copy ended before its pivot (%s)",
                                              r < 0 ? virGetLastErrorMessage () : "it is gone");

      /* When QEMU dies, libvirt drops the job at once and marks the
       * domain inactive a moment later: give it that moment */
      for (int i = 0; i < STOP_SETTLE_MS / POLL_MS && virDomainIsActive (dom) == 1; i++)
        g_usleep (POLL_MS * 1000);
      if (virDomainIsActive (dom) == 0)
        return end_before_pivot (m, dom, SHD_MOVE_FAILED, "the domain stopped during the copy");
      return end_before_pivot (m, dom, SHD_MOVE_FAILED, msg);
    }
    set_progress (m, info.cur, info.end, &rate);
    if (info.end > 0 && info.cur == info.end)
      break;
    g_usleep (POLL_MS * 1000);
  }
  g_mutex_lock (&m->lock);
  m->copy_s = (g_get_monotonic_time () - t0) / 1e6;
  g_mutex_unlock (&m->lock);
  return TRUE;
}

/* The verify job's entry in query-jobs; NULL if it is gone, or (*error)
 * if QEMU does not answer */
static JsonObject *
verify_job (virDomainPtr dom, const char *id, GError **error)
{
  g_autoptr (JsonNode) r = lv_monitor ("query-jobs", NULL, dom, error);
  JsonArray *a;

  if (r == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY (r)) {
    lv_set_error (error, "query-jobs gave no list");
    return NULL;
  }
  a = json_node_get_array (r);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *j = json_array_get_object_element (a, i);

    if (j && g_strcmp0 (json_object_get_string_member_with_default (j, "id", NULL), id) == 0)
      return json_object_ref (j);
  }
  return NULL;
}

static char *
verify_job_id (LvMove *m)
{
  return g_strdup_printf ("shadowd-verify-%s", m->target);
}

/* Cancels and dismisses the verify job, and waits until it is gone: it
 * keeps the copy's target node in use, which libvirt deletes after a
 * pivot or a cancel */
static void
verify_drop (LvMove *m, virDomainPtr dom)
{
  g_autofree char *id = verify_job_id (m);
  g_autoptr (JsonObject) args = json_object_new ();
  gint64 until = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

  json_object_set_string_member (args, "id", id);
  while (g_get_monotonic_time () < until) {
    g_autoptr (JsonObject) j = verify_job (dom, id, NULL);
    g_autoptr (JsonNode) r = NULL;
    const char *status;

    if (j == NULL)
      return;
    status = json_object_get_string_member_with_default (j, "status", "");
    if (strcmp (status, "concluded") == 0)
      r = lv_monitor ("job-dismiss", args, dom, NULL);
    else if (strcmp (status, "aborting") != 0)
      r = lv_monitor ("job-cancel", args, dom, NULL);
    g_usleep (POLL_MS * 1000);
  }
  shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: the verify job %s did not end in 10 s",
           m->name, id);
}

/* verifying: the copy's content compared with the disk's through QEMU, the
 * mirror keeping it in step meanwhile (x-shadow-verify-copy) */
static gboolean
verify_copy (LvMove *m, virDomainPtr dom)
{
  ShdLvMonitor mon = { lv_monitor, dom };
  g_autoptr (GError) e = NULL;
  g_autoptr (JsonObject) args = json_object_new ();
  g_autoptr (JsonNode) r = NULL;
  g_autofree char *source = NULL, *copy = NULL;
  g_autofree char *id = verify_job_id (m);
  gint64 t0 = g_get_monotonic_time ();
  Rate rate = { t0, 0 };
  guint64 total = 0;

  g_mutex_lock (&m->lock);
  m->done_bytes = m->total_bytes = 0;
  m->rate_bps = NAN;
  g_mutex_unlock (&m->lock);
  set_state (m, SHD_MOVE_VERIFYING);
  /* one a shadowd that stopped while verifying left behind */
  verify_drop (m, dom);
  if (!shd_lv_copy_nodes (&mon, m->image, &source, &copy, &e)) {
    g_autofree char *msg = g_strdup_printf ("the copy cannot be verified: %s", e->message);

    return end_before_pivot (m, dom, SHD_MOVE_FAILED, msg);
  }
  json_object_set_string_member (args, "job-id", id);
  json_object_set_string_member (args, "node-name", source);
  json_object_set_string_member (args, "target", copy);
  json_object_set_int_member (args, "speed", (gint64) m->verify_speed);
  json_object_set_boolean_member (args, "auto-dismiss", FALSE);
  if ((r = lv_monitor ("x-shadow-verify-copy", args, dom, &e)) == NULL) {
    g_autofree char *msg = g_strdup_printf ("x-shadow-verify-copy: %s", e->message);

    return end_before_pivot (m, dom, SHD_MOVE_FAILED, msg);
  }
  shd_log (G_LOG_LEVEL_MESSAGE, m->name, "move", "%s: verifying %s (node %s) against the disk "
           "(node %s) at %" G_GUINT64_FORMAT " bytes/s", m->name, m->image, copy, source,
           m->verify_speed);
  for (;;) {
    g_autoptr (JsonObject) j = NULL;
    virDomainBlockJobInfo info;
    const char *status, *err;

    if (g_cancellable_is_cancelled (m->lv->cancel)) {
      verify_drop (m, dom);
      return FALSE;             /* shadowd stops: the record takes it up again */
    }
    if (g_atomic_int_get (&m->abort)) {
      verify_drop (m, dom);
      return end_before_pivot (m, dom, SHD_MOVE_ABORTED, "aborted");
    }
    g_clear_error (&e);
    j = verify_job (dom, id, &e);
    if (j == NULL && e && virDomainIsActive (dom) < 0)
      return lose_libvirt (m, "while verifying");      /* the job runs on */
    if (j == NULL || copy_job (dom, m->target, &info) != 1) {
      const char *why = virDomainIsActive (dom) == 0 ? "the domain stopped during the verify" :
                        j == NULL ? "the verify job is gone" :
                        "libvirt's copy ended during the verify";

      verify_drop (m, dom);
      return end_before_pivot (m, dom, SHD_MOVE_FAILED, why);
    }
    total = (guint64) MAX (json_object_get_int_member_with_default (j, "total-progress", 0), 0);
    set_progress (m, (guint64) MAX (json_object_get_int_member_with_default (j,
                                                                             "current-progress",
                                                                             0), 0),
                  total, &rate);
    status = json_object_get_string_member_with_default (j, "status", "");
    if (strcmp (status, "concluded") == 0) {
      g_autofree char *why = NULL;

      err = json_object_get_string_member_with_default (j, "error", NULL);
      why = err ? g_strdup_printf ("the verify found the copy wrong: %s", err) : NULL;
      verify_drop (m, dom);
      if (why)
        return end_before_pivot (m, dom, SHD_MOVE_FAILED, why);
      break;
    }
    g_usleep (POLL_MS * 1000);
  }
  g_mutex_lock (&m->lock);
  m->verify_s = (g_get_monotonic_time () - t0) / 1e6;
  m->verify_bps = m->verify_s > 0 ? total / m->verify_s : NAN;
  g_mutex_unlock (&m->lock);
  shd_log (G_LOG_LEVEL_MESSAGE, m->name, "move", "%s: the copy is verified: %" G_GUINT64_FORMAT
           " bytes compared in %.1f s", m->name, total, m->verify_s);
  return TRUE;
}

static gboolean
same_dir (const char *a, const char *b)
{
  g_autofree char *da = g_path_get_dirname (a);
  g_autofree char *db = g_path_get_dirname (b);

  return strcmp (da, db) == 0;
}

/* committing: the old image goes only once the new one is durable and
 * named by the persistent definition */
static gboolean
commit (LvMove *m, virDomainPtr dom, const char *tier_image)
{
  g_autoptr (GError) e = NULL;
  g_autofree char *config_source = NULL;
  g_autoptr (GString) left = g_string_new (NULL);
  gboolean keep_old = FALSE, old_verified;

  int persistent;
  g_autofree char *id = NULL;

  set_state (m, SHD_MOVE_COMMITTING);
  if (!sync_file (m->image, &e))
    return end_move (m, SHD_MOVE_FAILED, "%s; the old image %s is kept", e->message, m->old);
  if ((persistent = virDomainIsPersistent (dom)) < 0)
    return lose_libvirt (m, "before the commit; nothing is retired yet");
  /* only the file the move started from is retired */
  id = file_id (m->old);
  if (id && g_strcmp0 (id, m->old_id) != 0) {
    g_string_append_printf (left, "%s is not the image the move started from: it is kept",
                            m->old);
    keep_old = TRUE;
  }
  old_verified = !keep_old;
  if (!keep_old && persistent == 1) {
    config_source = disk_source (dom, m->target, VIR_DOMAIN_XML_INACTIVE, NULL);
    if (g_strcmp0 (config_source, m->image) != 0) {
      g_string_append_printf (left, "the persistent definition names %s, not the new image: "
                              "the old image %s is kept (virsh edit)",
                              config_source ? config_source : "no file", m->old);
      keep_old = TRUE;
    }
  }
  if (!keep_old && g_file_test (m->old, G_FILE_TEST_EXISTS)) {
    if (m->keep_as) {
      if (link (m->old, m->keep_as) < 0 || unlink (m->old) < 0)
        g_string_append_printf (left, "cannot rename %s to %s: %s; it is kept", m->old,
                                m->keep_as, g_strerror (errno));
      else
        g_string_append_printf (left, "the old image is kept as %s", m->keep_as);
    } else if (unlink (m->old) < 0) {
      g_string_append_printf (left, "cannot delete the old image %s: %s", m->old,
                              g_strerror (errno));
    } else {
      g_string_append_printf (left, "the old image %s is deleted", m->old);
    }
  }
  /* the tier's own image was a shadow copy of the old image; it sits in
   * the directory of the new one (prepare) */
  if (tier_image && g_strcmp0 (tier_image, m->image) != 0 && old_verified &&
      same_dir (tier_image, m->image) &&
      unlink (tier_image) < 0 && errno != ENOENT)
    g_string_append_printf (left, "; cannot remove the tier image %s: %s", tier_image,
                            g_strerror (errno));
  /* the shadow's metadata image goes with the arrangement it described:
   * it sits next to the first tier with an image, which may change */
  {
    unsigned int where = virDomainIsActive (dom) == 1 ? VIR_DOMAIN_AFFECT_LIVE :
                         VIR_DOMAIN_AFFECT_CONFIG;
    g_autoptr (GPtrArray) disks = read_meta (dom, where, NULL);
    ShdLvDisk *d = meta_disk (disks, m->target);

    if (d) {
      g_autofree char *md_old = shd_lv_meta_path (d);
      g_autofree char *md_new = shd_lv_disk_moved_to (d, m->tier) ? shd_lv_meta_path (d) : NULL;

      if (old_verified && md_old && g_strcmp0 (md_old, md_new) != 0 &&
          same_dir (md_old, m->image) && unlink (md_old) < 0 && errno != ENOENT)
        g_string_append_printf (left, "; cannot remove the shadow's metadata image %s: %s",
                                md_old, g_strerror (errno));
    }
  }
  if (!update_meta (m, dom, RECORD_COMMIT, &e)) {
    g_string_append_printf (left, "; %s", e->message);
    if (virDomainIsActive (dom) < 0)
      return lose_libvirt (m, left->str);       /* the commit is done again */
    return end_move (m, SHD_MOVE_FAILED, "%s", left->str);
  }
  return end_move (m, SHD_MOVE_DONE, "%s", left->str);
}

/* After the pivot: QEMU lets go of the old image (the shadow held it) */
static void
release_old (LvMove *m, virDomainPtr dom)
{
  ShdLvMonitor mon = { lv_monitor, dom };
  g_autoptr (GError) e = NULL;

  if (!shd_lv_release_moved (&mon, m->target, m->old, &e))
    shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: after the pivot: %s", m->name,
             e->message);
}

/* A record is acted on only if it is one this disk's move wrote: made for
 * this domain, its new image named as prepare names it in the tier's
 * directory, and the disk on its old or its new image.  Anything else
 * (a definition copied from another domain during its move, a hand-made
 * record) could name any file to delete. */
static gboolean
record_is_ours (LvMove *m, const char *source, const char *tier_image)
{
  g_autofree char *base = g_path_get_basename (m->image);
  g_autofree char *prefix = g_strdup_printf ("%s-%s.", m->domain, m->target);

  return g_strcmp0 (m->record_domain, m->uuid) == 0 && m->old_id != NULL &&
         tier_image != NULL && same_dir (tier_image, m->image) &&
         g_str_has_prefix (base, prefix) && strcmp (m->image, m->old) != 0 &&
         (strcmp (source, m->old) == 0 || strcmp (source, m->image) == 0);
}

static void
run_move (LvMove *m, virDomainPtr dom)
{
  g_autofree char *tier_image = NULL, *source = NULL;

  if (!m->resumed) {
    if (g_atomic_int_get (&m->abort)) {
      end_move (m, SHD_MOVE_ABORTED, "before it started; nothing was changed");
      return;
    }
    if (!prepare (m, dom, &tier_image) || !wait_ready (m, dom) ||
        (m->verify && !verify_copy (m, dom)))
      return;
  } else {
    virDomainBlockJobInfo info;
    g_autoptr (GPtrArray) disks = read_meta (dom, VIR_DOMAIN_AFFECT_LIVE, NULL);
    ShdLvTier *t = shd_lv_disk_tier (meta_disk (disks, m->target), m->tier);

    tier_image = t ? g_strdup (t->path) : NULL;
    source = disk_source (dom, m->target, 0, NULL);
    if (source == NULL) {
      end_move (m, SHD_MOVE_FAILED, "libvirt does not tell the disk's image (%s); the record "
                "stays for shadowd's next look", virGetLastErrorMessage ());
      return;
    }
    if (!record_is_ours (m, source, tier_image)) {
      g_autoptr (GError) e = NULL;

      if (!update_meta (m, dom, RECORD_CLEAR, &e))
        shd_log (G_LOG_LEVEL_WARNING, m->name, "move", "%s: %s", m->name, e->message);
      end_move (m, SHD_MOVE_FAILED, "the metadata's <move> does not describe a move of this "
                "disk (copied from another domain, or written by hand): it is dropped, and "
                "no file was touched");
      return;
    }
    if (g_strcmp0 (source, m->image) == 0) {
      if (virDomainIsActive (dom) == 1)
        release_old (m, dom);
      commit (m, dom, tier_image);
      return;
    }
    if (copy_job (dom, m->target, &info) != 1) {
      end_before_pivot (m, dom, SHD_MOVE_FAILED, "the copy was lost before its pivot (cancelled, "
                        "or QEMU or libvirtd stopped)");
      return;
    }
    set_state (m, SHD_MOVE_COPYING);
    if (!wait_ready (m, dom) || (m->verify && !verify_copy (m, dom)))
      return;
  }
  /* under the lock the abort request checks the state with: an abort is
   * either seen here or refused there */
  g_mutex_lock (&m->lock);
  if (g_atomic_int_get (&m->abort)) {
    g_mutex_unlock (&m->lock);
    end_before_pivot (m, dom, SHD_MOVE_ABORTED, "aborted");
    return;
  }
  m->state = SHD_MOVE_SWITCHING;
  g_mutex_unlock (&m->lock);
  shd_log (G_LOG_LEVEL_MESSAGE, m->name, "move", "%s: move to %s: switching", m->name, m->tier);
  if (virDomainBlockJobAbort (dom, m->target, VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) < 0) {
    g_autofree char *msg = g_strdup (virGetLastErrorMessage ());

    g_free (source);
    source = disk_source (dom, m->target, 0, NULL);
    if (source && strcmp (source, m->image) != 0) {
      g_autofree char *why = g_strdup_printf ("the pivot failed (%s)", msg);

      end_before_pivot (m, dom, SHD_MOVE_FAILED, why);
      return;
    }
    if (source == NULL) {
      /* libvirt out of reach: whether it pivoted is for the next look */
      g_autofree char *why = g_strdup_printf ("the pivot's outcome is unknown: %s", msg);

      lose_libvirt (m, why);
      return;
    }
  }
  release_old (m, dom);
  commit (m, dom, tier_image);
}

/* The domain on shadowd's connection once libvirt answers again, or NULL
 * after LIBVIRT_WAIT_S or when shadowd stops */
#define LIBVIRT_WAIT_S 120
static virDomainPtr
wait_libvirt (LvMove *m)
{
  gint64 until = g_get_monotonic_time () + LIBVIRT_WAIT_S * G_USEC_PER_SEC;

  while (g_get_monotonic_time () < until && !g_cancellable_is_cancelled (m->lv->cancel)) {
    virConnectPtr v = conn_get (m->c, NULL);
    virDomainPtr dom = v ? virDomainLookupByUUIDString (v, m->uuid) : NULL;

    if (v)
      virConnectClose (v);
    if (dom && virDomainIsActive (dom) >= 0)
      return dom;
    if (dom)
      virDomainFree (dom);
    g_usleep (G_USEC_PER_SEC);
  }
  return NULL;
}

static gboolean
move_work (gpointer data, GError **error)
{
  LvMove *m = data;
  virConnectPtr v = conn_get (m->c, error);
  virDomainPtr dom;

  if (v == NULL) {
    end_move (m, SHD_MOVE_FAILED, "libvirt is not reachable: %s", (*error)->message);
    return TRUE;
  }
  dom = virDomainLookupByUUIDString (v, m->uuid);
  virConnectClose (v);
  if (dom == NULL) {
    end_move (m, SHD_MOVE_FAILED, "the domain is gone");
    return TRUE;
  }
  run_move (m, dom);
  virDomainFree (dom);
  while (m->libvirt_lost) {
    m->libvirt_lost = FALSE;
    if ((dom = wait_libvirt (m)) == NULL) {
      if (!g_cancellable_is_cancelled (m->lv->cancel))
        end_move (m, SHD_MOVE_FAILED, "libvirt did not answer for %d s; the move's record "
                  "stays, and shadowd's next look at the domain finishes or undoes it",
                  LIBVIRT_WAIT_S);
      return TRUE;
    }
    /* from the record it wrote, as a restarted shadowd would */
    shd_log (G_LOG_LEVEL_MESSAGE, m->name, "move", "%s: libvirt answers again: taking the "
             "move to %s up from its record", m->name, m->tier);
    if (m->record_domain == NULL)
      m->record_domain = g_strdup (m->uuid);
    g_mutex_lock (&m->lock);
    m->resumed = TRUE;
    g_clear_pointer (&m->reason, g_free);
    g_mutex_unlock (&m->lock);
    run_move (m, dom);
    virDomainFree (dom);
  }
  return TRUE;
}

/* ---- the main loop's side ---- */

static void
move_done (ShdLibvirt *lv, gpointer data, const GError *error)
{
  LvMove *m = data;
  Dom *d;

  (void) error;
  g_mutex_lock (&m->lock);
  m->running = FALSE;
  g_mutex_unlock (&m->lock);
  if (lv->stopping || m->c->lv == NULL)
    return;
  /* the disk's shadow follows the metadata the move left */
  d = g_hash_table_lookup (m->c->doms, m->uuid);
  if (d)
    dom_reconcile (d);
}

static void
start (Dom *d, LvMove *m)
{
  g_hash_table_replace (d->c->lv->moves, g_strdup (m->name), m);
  m->running = TRUE;
  lv_run (d->c->lv, d->c->lv->mover, move_work, move_done, lv_move_ref (m),
          (GDestroyNotify) lv_move_unref);
}

static LvMove *
lv_move_new (Dom *d, const char *target, const char *tier, const char *keep_as)
{
  LvMove *m = g_atomic_rc_box_new0 (LvMove);

  g_mutex_init (&m->lock);
  m->c = conn_ref (d->c);
  m->lv = d->c->lv;
  m->uuid = g_strdup (d->uuid);
  m->domain = g_strdup (d->name);
  m->target = g_strdup (target);
  m->name = shd_lv_disk_name (d->name, target);
  m->tier = g_strdup (tier);
  m->keep_as = g_strdup (keep_as);
  m->start_us = g_get_monotonic_time ();
  m->state = SHD_MOVE_PREPARING;
  m->done_bytes = m->total_bytes = 0;
  m->rate_bps = m->copy_s = m->verify_s = m->verify_bps = NAN;
  return m;
}

static LvMove *
find_move (Dom *d, const char *target)
{
  g_autofree char *name = shd_lv_disk_name (d->name, target);

  return d->c->lv ? g_hash_table_lookup (d->c->lv->moves, name) : NULL;
}

gboolean
lv_move_running (Dom *d, const char *target)
{
  LvMove *m = find_move (d, target);
  gboolean running;

  if (m == NULL)
    return FALSE;
  g_mutex_lock (&m->lock);
  running = m->running;
  g_mutex_unlock (&m->lock);
  return running;
}

void
lv_move_resume (Dom *d, const ShdLvDisk *spec)
{
  LvMove *m;

  if (spec->move == NULL || lv_move_running (d, spec->target))
    return;
  m = lv_move_new (d, spec->target, spec->move->tier, spec->move->keep_as);
  m->resumed = TRUE;
  m->image = g_strdup (spec->move->image);
  m->old = g_strdup (spec->move->old);
  m->record_domain = g_strdup (spec->move->domain);
  m->old_id = g_strdup (spec->move->old_id);
  /* a record of --verify asks for it again; an unreadable speed, the default */
  m->verify = spec->move->verify_speed != NULL;
  if (m->verify && !g_ascii_string_to_unsigned (spec->move->verify_speed, 10, 1, G_MAXINT64,
                                                &m->verify_speed, NULL))
    m->verify_speed = SHD_MOVE_VERIFY_SPEED_DEFAULT;
  shd_log (G_LOG_LEVEL_MESSAGE, m->name, "move", "%s: the metadata records a move to %s "
           "(%s): taking it up", m->name, m->tier, m->image);
  start (d, m);
}

static JsonObject *
move_to_json (LvMove *m)
{
  JsonObject *o;
  gint64 now = g_get_monotonic_time ();
  double left;

  o = json_object_new ();
  g_mutex_lock (&m->lock);
  json_object_set_string_member (o, "state", shd_move_state_name (m->state));
  json_object_set_string_member (o, "tier", m->tier);
  json_object_set_string_member (o, "how", "libvirt block copy");
  if (m->image)
    json_object_set_string_member (o, "image", m->image);
  if (m->old)
    json_object_set_string_member (o, "old-image", m->old);
  if (m->keep_as)
    json_object_set_string_member (o, "keep-as", m->keep_as);
  json_object_set_boolean_member (o, "resumed", m->resumed);
  if (m->copy_speed)
    json_object_set_double_member (o, "copy-speed", (double) m->copy_speed);
  json_object_set_double_member (o, "done-bytes", (double) m->done_bytes);
  json_object_set_double_member (o, "total-bytes", (double) m->total_bytes);
  if (isfinite (m->rate_bps)) {
    json_object_set_double_member (o, "rate-bps", m->rate_bps);
    left = m->total_bytes > m->done_bytes && m->rate_bps > 0 ?
           (m->total_bytes - m->done_bytes) / m->rate_bps : 0;
    json_object_set_double_member (o, "eta-s", left);
  }
  if (isfinite (m->copy_s))
    json_object_set_double_member (o, "copy-s", m->copy_s);
  json_object_set_boolean_member (o, "verify", m->verify);
  if (m->verify)
    json_object_set_int_member (o, "verify-speed", (gint64) m->verify_speed);
  if (isfinite (m->verify_s))
    json_object_set_double_member (o, "verify-s", m->verify_s);
  if (isfinite (m->verify_bps))
    json_object_set_double_member (o, "verify-bps", m->verify_bps);
  json_object_set_double_member (o, "elapsed-s",
                                 ((m->end_us ? m->end_us : now) - m->start_us) / 1e6);
  if (m->reason)
    json_object_set_string_member (o, "reason", m->reason);
  g_mutex_unlock (&m->lock);
  return o;
}

JsonObject *
lv_move_status (ShdLibvirt *lv, const char *name)
{
  LvMove *m = g_hash_table_lookup (lv->moves, name);

  return m ? move_to_json (m) : NULL;
}

/* The moves' shadowd_disk_move_* samples, as move.c gives a plain disk's
 * (the families are declared with the disks') */
void
lv_move_collect_metrics (ShdLibvirt *lv, ShdMetrics *metrics)
{
  GHashTableIter it;
  gpointer k, v;

  g_hash_table_iter_init (&it, lv->moves);
  while (g_hash_table_iter_next (&it, &k, &v)) {
    LvMove *m = v;

    g_mutex_lock (&m->lock);
    for (ShdMoveState s = SHD_MOVE_PREPARING; s <= SHD_MOVE_FAILED; s++)
      shd_metrics_add (metrics, "shadowd_disk_move_state", m->state == s, "disk", m->name,
                       "tier", m->tier, "state", shd_move_state_name (s), NULL);
    if (m->running) {
      shd_metrics_add (metrics, "shadowd_disk_move_done_bytes", (double) m->done_bytes,
                       "disk", m->name, "tier", m->tier, NULL);
      shd_metrics_add (metrics, "shadowd_disk_move_total_bytes", (double) m->total_bytes,
                       "disk", m->name, "tier", m->tier, NULL);
      if (isfinite (m->rate_bps))
        shd_metrics_add (metrics, "shadowd_disk_move_rate_bytes_per_second", m->rate_bps,
                         "disk", m->name, "tier", m->tier, NULL);
    }
    g_mutex_unlock (&m->lock);
  }
}

/* ---- the request (ShdMoveHandler) ---- */

typedef struct {
  const char *name;
  Dom *dom;
  char *target;
} FindDisk;

static gboolean
find_one (Conn *c, Dom *d, LvDisk *k, gpointer data)
{
  FindDisk *f = data;

  (void) c;
  if (strcmp (k->name, f->name) != 0)
    return TRUE;
  f->dom = d;
  f->target = k->target;
  return FALSE;
}

gboolean
lv_move_handle (gpointer data, JsonObject *req, JsonNode **result, GError **error)
{
  ShdLibvirt *lv = data;
  FindDisk f = { shd_request_string (req, "disk"), NULL, NULL };
  JsonNode *abort = json_object_get_member (req, "abort");
  JsonNode *verify = json_object_get_member (req, "verify");
  const char *tier = shd_request_string (req, "tier");
  const char *keep_as = shd_request_string (req, "keep-as");
  double copy_speed = shd_request_number (req, "copy-speed", 0);
  double verify_speed = shd_request_number (req, "verify-speed", 0);
  LvMove *m;

  *result = NULL;
  if (f.name == NULL)
    return FALSE;
  lv_foreach_disk (lv, find_one, &f);
  if (f.dom == NULL) {
    /* a plain disk, or a name only a libvirt domain's disk has */
    if (strchr (f.name, '.') == NULL || shd_daemon_find_disk (lv->dm, f.name, NULL))
      return FALSE;
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no disk '%s': a libvirt domain's "
                 "disk moves while its domain runs and its shadow metadata describes the disk "
                 "(see shadowctl libvirt)", f.name);
    return TRUE;
  }
  if (lv->stopping) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "shadowd is stopping");
    return TRUE;
  }
  m = find_move (f.dom, f.target);
  if (abort && JSON_NODE_HOLDS_VALUE (abort) && json_node_get_boolean (abort)) {
    if (!lv_move_running (f.dom, f.target)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "disk %s has no move to abort",
                   f.name);
      return TRUE;
    }
    g_mutex_lock (&m->lock);
    if (m->state >= SHD_MOVE_SWITCHING) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "disk %s: the move to %s is %s; it "
                   "can only go forward now", f.name, m->tier, shd_move_state_name (m->state));
      g_mutex_unlock (&m->lock);
      return TRUE;
    }
    g_atomic_int_set (&m->abort, 1);
    g_mutex_unlock (&m->lock);
  } else {
    if (tier == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"tier\" is required");
      return TRUE;
    }
    if (!(verify_speed >= 0) || verify_speed > 1e15) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "\"verify-speed\" is a number of bytes per second");
      return TRUE;
    }
    if (!(copy_speed >= 0) || copy_speed > 1e15) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "\"copy-speed\" is a number of bytes per second");
      return TRUE;
    }
    if (keep_as && !g_path_is_absolute (keep_as)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "--keep-as %s is not an absolute path", keep_as);
      return TRUE;
    }
    if (lv_move_running (f.dom, f.target)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "disk %s is already moving to %s; "
                   "abort it first", f.name, m->tier);
      return TRUE;
    }
    m = lv_move_new (f.dom, f.target, tier, keep_as);
    m->copy_speed = (guint64) copy_speed;
    m->verify = verify && JSON_NODE_HOLDS_VALUE (verify) && json_node_get_boolean (verify);
    m->verify_speed = verify_speed > 0 ? (guint64) verify_speed : SHD_MOVE_VERIFY_SPEED_DEFAULT;
    shd_log (G_LOG_LEVEL_MESSAGE, m->name, "move", "%s: operator requested a move to %s "
             "(libvirt block copy%s)%s%s", m->name, tier, m->verify ? ", verified" : "",
             keep_as ? ", keeping the old image as " : "", keep_as ? keep_as : "");
    start (f.dom, m);
  }
  *result = json_node_new (JSON_NODE_OBJECT);
  json_node_take_object (*result, lv_move_status (lv, f.name));
  return TRUE;
}
