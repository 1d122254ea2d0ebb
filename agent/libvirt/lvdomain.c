/* Domains: their QMP passthrough, the agents of their disks, and the jobs
 * that read their metadata and insert or remove shadows; see
 * lvprivate.h for the threads. */
#include "lvprivate.h"

#include "log.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the QMP passthrough, in lv->monitor ---- */

/* The transport's data, owned by the domain's ShdQmp */
typedef struct {
  Conn *c;                      /* a reference */
  char *uuid;
  ShdLvWorker *worker;          /* a reference */
} Passthrough;

static void
passthrough_free (gpointer p)
{
  Passthrough *t = p;

  conn_unref (t->c);
  g_free (t->uuid);
  shd_lv_worker_unref (t->worker);
  g_free (t);
}

/* One command: what the worker needs, copied */
typedef struct {
  Conn *c;                      /* a reference */
  char *uuid;
  char *line;
} MonitorCall;

static void
monitor_call_free (gpointer p)
{
  MonitorCall *m = p;

  conn_unref (m->c);
  g_free (m->uuid);
  g_free (m->line);
  g_free (m);
}

/* In a worker: the domain of uuid on c, or NULL with error */
static virDomainPtr
lookup (Conn *c, const char *uuid, GError **error)
{
  virConnectPtr v = conn_get (c, error);
  virDomainPtr d;

  if (v == NULL)
    return NULL;
  d = virDomainLookupByUUIDString (v, uuid);
  if (d == NULL)
    lv_set_error (error, NULL);
  virConnectClose (v);
  return d;
}

static char *
monitor_command (virDomainPtr dom, const char *line, GError **error)
{
  char *result = NULL;
  char *copy;

  if (virDomainQemuMonitorCommand (dom, line, &result, 0) < 0) {
    lv_set_error (error, NULL);
    return NULL;
  }
  copy = g_strdup (result);
  free (result);
  return copy;
}

static void
monitor_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  MonitorCall *m = data;
  g_autoptr (GError) error = NULL;
  virDomainPtr dom;
  char *reply;

  (void) source;
  (void) cancellable;
  dom = lookup (m->c, m->uuid, &error);
  if (dom == NULL) {
    g_task_return_error (task, g_steal_pointer (&error));
    return;
  }
  reply = monitor_command (dom, m->line, &error);
  virDomainFree (dom);
  if (reply)
    g_task_return_pointer (task, reply, g_free);
  else
    g_task_return_error (task, g_steal_pointer (&error));
}

static void
passthrough_send (const char *line, GTask *task, gpointer data)
{
  Passthrough *t = data;
  MonitorCall *m = g_new0 (MonitorCall, 1);

  m->c = conn_ref (t->c);
  m->uuid = g_strdup (t->uuid);
  m->line = g_strdup (line);
  g_task_set_task_data (task, m, monitor_call_free);
  shd_lv_worker_run (t->worker, task, monitor_thread);
}

/* The blocking monitor function of lvattach.h, in a worker */
JsonNode *
lv_monitor (const char *command, JsonObject *args, gpointer data, GError **error)
{
  g_autofree char *line = shd_qmp_command_line (command, args);
  g_autofree char *reply = monitor_command (data, line, error);

  if (reply == NULL)
    return NULL;
  return shd_qmp_parse_reply (command, reply, error);
}

/* ---- disks ---- */

static void
lvdisk_drop_agent (LvDisk *k)
{
  if (k->disk) {
    ShdLibvirt *lv = k->dom->c->lv;

    if (lv)
      shd_daemon_remove_disk (lv->dm, k->disk);
    else
      shd_disk_stop (k->disk);
    g_clear_object (&k->disk);
  }
}

static void
lvdisk_free (gpointer p)
{
  LvDisk *k = p;

  lvdisk_drop_agent (k);
  g_free (k->target);
  g_free (k->name);
  g_free (k->layout);
  g_free (k->full);
  g_clear_pointer (&k->cfg, shd_disk_config_unref);
  g_strfreev (k->local_images);
  g_free (k->error);
  g_free (k);
}

static const char *const state_names[LV_N_STATES] = {
  [LV_NEW] = "new",
  [LV_ATTACHING] = "attaching",
  [LV_ATTACHED] = "attached",
  [LV_DETACHING] = "detaching",
  [LV_DETACHED] = "detached",
  [LV_ERROR] = "error",
};

const char *
lv_state_name (LvState state)
{
  g_return_val_if_fail ((guint) state < LV_N_STATES, "?");
  return state_names[state];
}

static void
lvdisk_set (LvDisk *k, LvState state, const char *error)
{
  k->state = state;
  g_free (k->error);
  k->error = g_strdup (error);
}

static void
lvdisk_start_agent (LvDisk *k)
{
  ShdLibvirt *lv = k->dom->c->lv;
  g_autoptr (GError) error = NULL;

  lvdisk_drop_agent (k);
  k->disk = shd_disk_new_with_qmp (lv->config, k->cfg, shd_daemon_get_history (lv->dm),
                                   k->dom->qmp, &error);
  if (k->disk == NULL) {
    shd_log (G_LOG_LEVEL_WARNING, k->name, "libvirt", "%s: %s", k->name, error->message);
    lvdisk_set (k, LV_ERROR, error->message);
    return;
  }
  shd_daemon_add_disk (lv->dm, k->disk);
}

static LvDisk *
lvdisk_get (Dom *d, const char *target)
{
  LvDisk *k = g_hash_table_lookup (d->disks, target);

  if (k == NULL) {
    k = g_new0 (LvDisk, 1);
    k->dom = d;
    k->target = g_strdup (target);
    k->name = shd_lv_disk_name (d->name, target);
    k->state = LV_NEW;
    g_hash_table_insert (d->disks, k->target, k);
  }
  return k;
}

/* ---- domains ---- */

static void
dom_clear (Dom *d)
{
  g_hash_table_unref (d->disks);        /* drops the agents first */
  g_hash_table_unref (d->held);
  shd_qmp_custom_set_ready (d->qmp, FALSE, "domain gone");
  g_object_unref (d->qmp);
  conn_unref (d->c);
  g_free (d->uuid);
  g_free (d->name);
  g_free (d->meta_error);
}

static Dom *
dom_ref (Dom *d)
{
  return g_rc_box_acquire (d);
}

void
dom_unref (Dom *d)
{
  g_rc_box_release_full (d, (GDestroyNotify) dom_clear);
}

Dom *
dom_get (Conn *c, const char *uuid, const char *name)
{
  Dom *d = g_hash_table_lookup (c->doms, uuid);
  g_autofree char *label = NULL;
  Passthrough *t;

  if (d)
    return d;
  d = g_rc_box_new0 (Dom);
  d->c = conn_ref (c);
  d->uuid = g_strdup (uuid);
  d->name = g_strdup (name);
  d->disks = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, lvdisk_free);
  d->held = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  label = g_strdup_printf ("%s/%s", c->uri, d->name);
  t = g_new0 (Passthrough, 1);
  t->c = conn_ref (c);
  t->uuid = g_strdup (uuid);
  t->worker = shd_lv_worker_ref (c->lv->monitor);
  d->qmp = shd_qmp_new_custom (label, passthrough_send, t, passthrough_free);
  g_hash_table_insert (c->doms, d->uuid, d);
  return d;
}

/* The domain left this host for good (its QEMU is gone): the images of
 * its host-local tiers are a copy nobody will read again here.  The
 * destination has tier images of its own at the same paths. */
static void
remove_local_images (Dom *d)
{
  GHashTableIter it;
  gpointer val;

  g_hash_table_iter_init (&it, d->disks);
  while (g_hash_table_iter_next (&it, NULL, &val)) {
    LvDisk *k = val;

    for (guint i = 0; k->local_images && k->local_images[i]; i++) {
      const char *path = k->local_images[i];
      GStatBuf st;

      if (g_stat (path, &st) != 0)
        continue;
      if (g_unlink (path) != 0)
        shd_log (G_LOG_LEVEL_WARNING, k->name, "host-local", "domain %s migrated away: "
                 "cannot remove %s: %s", d->name, path, g_strerror (errno));
      else
        shd_log (G_LOG_LEVEL_MESSAGE, k->name, "host-local", "domain %s migrated away: "
                 "removed its host-local image %s (%" G_GINT64_FORMAT " bytes allocated)",
                 d->name, path, (gint64) st.st_blocks * 512);
    }
  }
}

/* The domain stopped: QEMU and every node with it are gone.  A job that
 * still runs keeps the Dom alive and finds it gone when it ends.
 * @migrated: it runs on another host now. */
void
dom_gone (Conn *c, const char *uuid, gboolean migrated)
{
  Dom *d = g_hash_table_lookup (c->doms, uuid);

  if (d == NULL)
    return;
  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "libvirt", "domain %s stopped%s: its disks are "
           "no longer managed", d->name, migrated ? " (migrated away)" : "");
  if (migrated)
    remove_local_images (d);
  g_hash_table_remove_all (d->disks);
  shd_qmp_custom_set_ready (d->qmp, FALSE, "domain stopped");
  g_hash_table_remove (c->doms, uuid);
}

gboolean
lv_foreach_disk (ShdLibvirt *lv, LvDiskFunc fn, gpointer data)
{
  for (guint i = 0; i < lv->conns->len; i++) {
    Conn *c = lv->conns->pdata[i];
    GHashTableIter it;
    gpointer k, v;

    if (c->doms == NULL)
      continue;
    g_hash_table_iter_init (&it, c->doms);
    while (g_hash_table_iter_next (&it, &k, &v)) {
      GHashTableIter di;
      gpointer dk, dv;

      g_hash_table_iter_init (&di, ((Dom *) v)->disks);
      while (g_hash_table_iter_next (&di, &dk, &dv))
        if (!fn (c, v, dv, data))
          return FALSE;
    }
  }
  return TRUE;
}

typedef struct {
  Dom *self;
  const char *name;
  const char *uri;              /* out: where the name is taken */
} NameTaken;

static gboolean
name_taken_one (Conn *c, Dom *d, LvDisk *k, gpointer data)
{
  NameTaken *t = data;

  if (d != t->self && k->disk && strcmp (k->name, t->name) == 0) {
    t->uri = c->uri;
    return FALSE;
  }
  return TRUE;
}

/* Another domain (on another connection) with the same name has the disk
 * name already: names are DOMAIN.TARGET. */
static const char *
name_taken (ShdLibvirt *lv, Dom *self, const char *name)
{
  NameTaken t = { self, name, NULL };

  lv_foreach_disk (lv, name_taken_one, &t);
  return t.uri;
}

/* ---- the jobs: read metadata, then insert or remove ---- */

typedef struct {
  char *target;
  ShdLvDisk *spec;              /* attach when set, else detach */
  ShdLvDomDisk *dd;             /* from the live XML; NULL when gone */
  guint64 chunk_size;
  /* results */
  gboolean ok;
  ShdLvAttachResult result;
  char *warmth;                 /* warm or cold, and why */
  gboolean was_attached;
  char *error;
  double ms;
} Op;

typedef struct {
  Conn *c;                      /* a reference */
  Dom *dom;                     /* a reference */
  int generation;
  char *uuid;
  /* read: what the domain says */
  gboolean inactive;            /* not running (any more) */
  gboolean migrating;           /* paused for a migration, in or out */
  GPtrArray *specs;             /* ShdLvDisk, or NULL */
  gboolean no_metadata;
  char *meta_error;
  GPtrArray *domdisks;          /* ShdLvDomDisk */
  char *xml_error;
  /* apply: what to do */
  GPtrArray *ops;               /* Op */
  char **tier_dirs;             /* a copy of [libvirt] tier-dirs */
  gboolean active_after;        /* the domain still ran after a failed op */
} Job;

static void
op_free (gpointer p)
{
  Op *o = p;

  shd_lv_dom_disk_free (o->dd);
  g_free (o->target);
  g_free (o->warmth);
  g_free (o->error);
  g_free (o);
}

static void
job_free (gpointer p)
{
  Job *j = p;

  dom_unref (j->dom);
  conn_unref (j->c);
  g_free (j->uuid);
  g_clear_pointer (&j->specs, g_ptr_array_unref);
  g_clear_pointer (&j->domdisks, g_ptr_array_unref);
  g_clear_pointer (&j->ops, g_ptr_array_unref);
  g_free (j->meta_error);
  g_free (j->xml_error);
  g_strfreev (j->tier_dirs);
  g_free (j);
}

static gboolean
read_work (gpointer data, GError **error)
{
  Job *j = data;
  g_autoptr (GError) e = NULL;
  virConnectPtr v = conn_get (j->c, error);
  virDomainPtr dom;
  char *meta, *xml;

  if (v == NULL)
    return FALSE;
  dom = virDomainLookupByUUIDString (v, j->uuid);
  virConnectClose (v);
  if (dom == NULL) {
    virErrorPtr err = virGetLastError ();

    if (err && err->code == VIR_ERR_NO_DOMAIN) {
      j->inactive = TRUE;       /* transient, and gone */
      return TRUE;
    }
    lv_set_error (error, NULL);
    return FALSE;
  }
  if (virDomainIsActive (dom) != 1) {
    j->inactive = TRUE;
    virDomainFree (dom);
    return TRUE;
  }
  {
    int state = 0, reason = 0;

    /* An incoming migration's QEMU has its nodes inactive, and the
     * source's shadow still writes the tiers and the maps; an outgoing
     * one's are being inactivated: neither is touched until the domain
     * runs again, on one side or the other (docs/libvirt.md, "Live
     * migration") */
    if (virDomainGetState (dom, &state, &reason, 0) == 0 &&
        ((state == VIR_DOMAIN_PAUSED &&
          (reason == VIR_DOMAIN_PAUSED_MIGRATION || reason == VIR_DOMAIN_PAUSED_POSTCOPY ||
           reason == VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)) ||
         (state == VIR_DOMAIN_RUNNING && reason == VIR_DOMAIN_RUNNING_POSTCOPY))) {
      j->migrating = TRUE;
      virDomainFree (dom);
      return TRUE;
    }
  }
  xml = virDomainGetXMLDesc (dom, 0);
  if (xml == NULL) {
    j->xml_error = g_strdup (virGetLastErrorMessage ());
  } else {
    j->domdisks = shd_lv_domain_disks (xml, &e);
    if (j->domdisks == NULL)
      j->xml_error = g_strdup (e->message);
    g_clear_error (&e);
    free (xml);
  }
  meta = virDomainGetMetadata (dom, VIR_DOMAIN_METADATA_ELEMENT, SHD_LV_NS_URI,
                               VIR_DOMAIN_AFFECT_LIVE);
  if (meta == NULL) {
    virErrorPtr err = virGetLastError ();

    if (err && err->code == VIR_ERR_NO_DOMAIN_METADATA)
      j->no_metadata = TRUE;
    else
      j->meta_error = g_strdup (virGetLastErrorMessage ());
  } else {
    j->specs = shd_lv_meta_parse (meta, &e);
    if (j->specs == NULL)
      j->meta_error = g_strdup (e->message);
    free (meta);
  }
  if (j->xml_error && virDomainIsActive (dom) != 1)
    j->inactive = TRUE;
  virDomainFree (dom);
  return TRUE;
}

static gboolean
apply_work (gpointer data, GError **error)
{
  Job *j = data;
  virDomainPtr dom = lookup (j->c, j->uuid, error);
  ShdLvMonitor m = { lv_monitor, dom };
  gboolean failed = FALSE;

  if (dom == NULL)
    return FALSE;
  for (guint i = 0; i < j->ops->len; i++) {
    Op *o = j->ops->pdata[i];
    g_autoptr (GError) e = NULL;
    gint64 t0 = g_get_monotonic_time ();

    if (o->spec)
      o->ok = shd_lv_attach (&m, o->spec, o->dd, (const char *const *) j->tier_dirs,
                             &o->result, &o->warmth, &e);
    else
      o->ok = shd_lv_detach (&m, o->target, o->dd, o->chunk_size, &o->was_attached, &e);
    o->ms = (g_get_monotonic_time () - t0) / 1000.0;
    if (!o->ok) {
      o->error = g_strdup (e->message);
      failed = TRUE;
    }
  }
  j->active_after = !failed || virDomainIsActive (dom) == 1;
  virDomainFree (dom);
  return TRUE;
}

/* The job's domain, if it is still the one the job was made for and
 * shadowd does not stop. */
static Dom *
job_dom (Job *j, const GError *error)
{
  Conn *c = j->c;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED) || c->lv == NULL ||
      c->lv->stopping || g_atomic_int_get (&c->generation) != j->generation)
    return NULL;
  return g_hash_table_lookup (c->doms, j->uuid) == j->dom ? j->dom : NULL;
}

/* Ends the job; looks again if something happened meanwhile. */
static void
job_done (Job *j, Dom *d)
{
  d->busy = FALSE;
  if (d->again && job_dom (j, NULL)) {
    d->again = FALSE;
    dom_reconcile (d);
  }
}

static void
applied (ShdLibvirt *lv, gpointer data, const GError *error)
{
  Job *j = data;
  Dom *d = job_dom (j, error);

  (void) lv;
  j->dom->busy = FALSE;
  if (d == NULL)
    return;
  if (error) {
    /* not one op ran: the domain or the connection went meanwhile */
    shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "domain %s: %s", d->name,
             error->message);
    for (guint i = 0; i < j->ops->len; i++) {
      LvDisk *k = g_hash_table_lookup (d->disks, ((Op *) j->ops->pdata[i])->target);

      if (k)
        lvdisk_set (k, LV_ERROR, error->message);
    }
    job_done (j, d);
    return;
  }
  for (guint i = 0; i < j->ops->len; i++) {
    Op *o = j->ops->pdata[i];
    LvDisk *k = g_hash_table_lookup (d->disks, o->target);

    if (!o->ok && !j->active_after) {
      shd_log (G_LOG_LEVEL_DEBUG, NULL, "libvirt", "domain %s disk %s: %s (domain stopping)",
               d->name, o->target, o->error);
      continue;
    }
    if (o->spec == NULL) {
      if (!o->ok) {
        shd_log (G_LOG_LEVEL_WARNING, k ? k->name : NULL, "detach-failed",
                 "domain %s disk %s: cannot detach: %s", d->name, o->target, o->error);
        if (k)
          lvdisk_set (k, LV_ERROR, o->error);
        continue;
      }
      if (o->was_attached)
        shd_log (G_LOG_LEVEL_MESSAGE, k ? k->name : NULL, "detached",
                 "domain %s disk %s: shadow removed in %.0f ms; the disk is libvirt's again",
                 d->name, o->target, o->ms);
      if (k && g_hash_table_contains (d->held, o->target))
        lvdisk_set (k, LV_DETACHED, NULL);
      else if (k && k->state == LV_DETACHING)
        g_hash_table_remove (d->disks, o->target);
      continue;
    }
    if (k == NULL)
      continue;
    if (!o->ok) {
      shd_log (G_LOG_LEVEL_WARNING, k->name, "attach-failed",
               "domain %s disk %s: cannot insert the shadow: %s", d->name, o->target,
               o->error);
      lvdisk_set (k, LV_ERROR, o->error);
      continue;
    }
    if (o->result == SHD_LV_ADOPTED && k->disk)
      continue;                 /* a routine look: still in place */
    k->adopted = o->result == SHD_LV_ADOPTED;
    k->attach_ms = o->ms;
    shd_log (G_LOG_LEVEL_MESSAGE, k->name, k->adopted ? "adopted" : "attached",
             "domain %s disk %s: %s (%.0f ms)%s%s%s", d->name, o->target,
             k->adopted ? "shadow already in place, adopted" : "shadow inserted", o->ms,
             o->warmth ? "; " : "", o->warmth ? o->warmth : "",
             o->warmth && g_str_has_prefix (o->warmth, "tiers cold") && k->cfg &&
             g_strcmp0 (k->cfg->copy_compare, "true") == 0 ?
             " (copy-compare: the copy checks the tier images and writes only what differs)" :
             "");
    /* the agent's reopens name the metadata child the node has */
    if (k->adopted && o->warmth == NULL && k->cfg)
      g_clear_pointer (&k->cfg->metadata, g_free);
    else if (k->adopted && k->cfg && k->cfg->metadata == NULL)
      k->cfg->metadata = shd_lv_node_meta (o->target);
    lvdisk_set (k, LV_ATTACHED, NULL);
    lvdisk_start_agent (k);
  }
  job_done (j, d);
}

static void
add_op (Job *j, const char *target, ShdLvDisk *spec, const ShdLvDomDisk *dd, guint64 chunk)
{
  Op *o = g_new0 (Op, 1);

  o->target = g_strdup (target);
  o->spec = spec;
  o->dd = shd_lv_dom_disk_copy (dd);
  o->chunk_size = chunk;
  g_ptr_array_add (j->ops, o);
}

/* What should be attached, and with which configuration: the ops */
static void
plan (ShdLibvirt *lv, Job *j, Dom *d)
{
  g_autoptr (GHashTable) wanted = g_hash_table_new (g_str_hash, g_str_equal);
  GHashTableIter it;
  gpointer key, val;

  j->ops = g_ptr_array_new_with_free_func (op_free);
  for (guint i = 0; j->specs && !d->stopping && i < j->specs->len; i++) {
    ShdLvDisk *s = j->specs->pdata[i];
    const ShdLvDomDisk *dd = shd_lv_domain_disk (j->domdisks, s->target);
    LvDisk *k = lvdisk_get (d, s->target);
    g_autoptr (GError) error = NULL;
    g_autofree char *layout = shd_lv_disk_layout_key (s);
    g_autofree char *full = shd_lv_disk_full_key (s);
    ShdDiskConfig *cfg;

    g_hash_table_add (wanted, s->target);
    /* a permanent move owns the disk until it ends (lvmove.c) */
    if (lv_move_running (d, s->target))
      continue;
    if (s->move) {
      lv_move_resume (d, s);
      continue;
    }
    if (g_hash_table_contains (d->held, s->target)) {
      g_hash_table_remove (wanted, s->target);
      continue;
    }
    if (dd == NULL) {
      g_autofree char *msg = g_strdup_printf ("the domain has no disk '%s'", s->target);

      if (g_strcmp0 (k->error, msg) != 0)
        shd_log (G_LOG_LEVEL_WARNING, k->name, "bad-metadata", "domain %s: %s", d->name, msg);
      lvdisk_set (k, LV_ERROR, msg);
      continue;
    }
    if (name_taken (lv, d, k->name)) {
      g_autofree char *msg = g_strdup_printf ("disk name %s is taken by a domain of the same "
                                              "name on %s", k->name,
                                              name_taken (lv, d, k->name));

      if (g_strcmp0 (k->error, msg) != 0)
        shd_log (G_LOG_LEVEL_WARNING, k->name, "name-taken", "%s", msg);
      lvdisk_set (k, LV_ERROR, msg);
      continue;
    }
    if (k->disk && g_strcmp0 (k->full, full) == 0 && k->state == LV_ATTACHED) {
      /* unchanged: only make sure it is still in place (block jobs) */
      add_op (j, s->target, s, dd, 0);
      continue;
    }
    cfg = shd_lv_disk_config (lv->config, d->name, s, &error);
    if (cfg == NULL) {
      if (g_strcmp0 (k->error, error->message) != 0)
        shd_log (G_LOG_LEVEL_WARNING, k->name, "bad-metadata", "%s", error->message);
      lvdisk_set (k, LV_ERROR, error->message);
      continue;
    }
    if (k->layout && strcmp (k->layout, layout) != 0 && k->disk) {
      /* new tiers: out with the old shadow first */
      lvdisk_drop_agent (k);
      add_op (j, s->target, NULL, dd, k->chunk_size);
    }
    lvdisk_drop_agent (k);
    g_clear_pointer (&k->cfg, shd_disk_config_unref);
    k->cfg = cfg;
    g_strfreev (k->local_images);
    k->local_images = shd_lv_disk_local_images (s);
    g_free (k->layout);
    k->layout = g_steal_pointer (&layout);
    g_free (k->full);
    k->full = g_steal_pointer (&full);
    k->chunk_size = g_hash_table_lookup (s->disk_attrs, "chunk-size") ?
                    g_ascii_strtoull (g_hash_table_lookup (s->disk_attrs, "chunk-size"), NULL, 10) : 0;
    lvdisk_set (k, LV_ATTACHING, NULL);
    add_op (j, s->target, s, dd, 0);
  }
  /* What should not be: metadata gone, disk held or unplugged, domain stopping */
  g_hash_table_iter_init (&it, d->disks);
  while (g_hash_table_iter_next (&it, &key, &val)) {
    LvDisk *k = val;
    const ShdLvDomDisk *dd = j->domdisks ? shd_lv_domain_disk (j->domdisks, k->target) : NULL;

    if ((g_hash_table_contains (wanted, k->target) && dd) || lv_move_running (d, k->target))
      continue;
    if (k->state == LV_DETACHED)
      continue;
    if (d->stopping && k->state == LV_ATTACHED && k->cfg && k->cfg->metadata && dd) {
      /* the guest is down: QEMU's exit closes the shadow, a clean stop
       * that keeps the maps for the next start (a detach now would not) */
      continue;
    }
    lvdisk_drop_agent (k);
    if (k->state == LV_ERROR && k->layout == NULL) {
      g_hash_table_iter_remove (&it);
      continue;
    }
    lvdisk_set (k, LV_DETACHING, NULL);
    add_op (j, k->target, NULL, dd, k->chunk_size);
  }
}

static void
read_done (ShdLibvirt *lv, gpointer data, const GError *error)
{
  Job *j = data;
  Dom *d = job_dom (j, error);
  Job *next;

  if (d == NULL) {
    j->dom->busy = FALSE;
    return;
  }
  if (error) {
    shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "domain %s: %s", d->name, error->message);
    job_done (j, d);
    return;
  }
  if (j->inactive) {
    /* not running: forget it, saying so if it had disks managed */
    d->busy = FALSE;
    if (g_hash_table_size (d->disks) > 0)
      dom_gone (j->c, j->uuid, FALSE);
    else
      g_hash_table_remove (j->c->doms, j->uuid);
    return;
  }
  if (j->migrating) {
    /* the event that ends it (resumed, stopped) looks again */
    shd_log (G_LOG_LEVEL_MESSAGE, NULL, "libvirt", "domain %s: paused for a migration; "
             "its shadows are left as they are until it runs or stops", d->name);
    job_done (j, d);
    return;
  }
  if (j->xml_error) {
    shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "domain %s: cannot read its XML: %s",
             d->name, j->xml_error);
    job_done (j, d);
    return;
  }
  if (j->meta_error) {
    /* keep what is attached: a typo must not pull disks out from under the guest */
    if (g_strcmp0 (d->meta_error, j->meta_error) != 0)
      shd_log (G_LOG_LEVEL_WARNING, NULL, "bad-metadata",
               "domain %s: its shadow metadata (%s) is not valid, nothing changes: %s",
               d->name, SHD_LV_NS_URI, j->meta_error);
    g_free (d->meta_error);
    d->meta_error = g_strdup (j->meta_error);
    job_done (j, d);
    return;
  }
  g_clear_pointer (&d->meta_error, g_free);
  plan (lv, j, d);
  if (j->ops->len == 0) {
    job_done (j, d);
    return;
  }
  /* the second step is a job of its own, with what the first one read */
  next = g_new0 (Job, 1);
  next->c = conn_ref (j->c);
  next->dom = dom_ref (d);
  next->generation = j->generation;
  next->uuid = g_strdup (j->uuid);
  next->specs = g_steal_pointer (&j->specs);      /* the ops point into them */
  next->ops = g_steal_pointer (&j->ops);
  next->tier_dirs = g_strdupv (lv->config->libvirt_tier_dirs);
  lv_run (lv, lv->calls, apply_work, applied, next, job_free);
}

void
dom_reconcile (Dom *d)
{
  Conn *c = d->c;
  Job *j;

  if (c->lv == NULL || c->lv->stopping)
    return;
  if (d->busy) {
    d->again = TRUE;
    return;
  }
  d->busy = TRUE;
  j = g_new0 (Job, 1);
  j->c = conn_ref (c);
  j->dom = dom_ref (d);
  j->generation = g_atomic_int_get (&c->generation);
  j->uuid = g_strdup (d->uuid);
  lv_run (c->lv, c->lv->calls, read_work, read_done, j, job_free);
}

void
dom_request (Dom *d, const char *target, gboolean attach)
{
  LvDisk *k = g_hash_table_lookup (d->disks, target);

  if (attach) {
    g_hash_table_remove (d->held, target);
    if (k && k->state == LV_DETACHED)
      lvdisk_set (k, LV_ATTACHING, NULL);
  } else {
    g_hash_table_add (d->held, g_strdup (target));
  }
  shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
  dom_reconcile (d);
}
