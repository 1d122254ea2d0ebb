/* shadowd and libvirt; see libvirt.h. */
#include "lvdaemon.h"

#include "commands.h"

#include "disk.h"
#include "log.h"
#include "lvattach.h"
#include "lvmeta.h"
#include "qmp.h"

#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>
#include <string.h>

#define RECONNECT_S 5           /* between attempts to reach libvirtd */
#define RESCAN_S 30             /* every domain is looked at again this often */

typedef struct _Conn Conn;
typedef struct _Dom Dom;

struct _ShdLibvirt {
  GObject parent_instance;
  ShdDaemon *dm;
  ShdConfig *config;            /* the daemon's */
  GPtrArray *conns;             /* Conn */
  GThread *event_thread;
  gint running;
  guint rescan_id;
  gboolean stopping;
};

struct _Conn {
  ShdLibvirt *lv;
  guint index;
  char *uri;
  virConnectPtr conn;
  int cb_lifecycle, cb_metadata, cb_removed, cb_job, cb_qemu;
  guint retry_id;
  guint generation;             /* bumped on every (re)connection */
  GHashTable *doms;             /* uuid -> Dom */
  char *last_error;
};

typedef struct {
  Dom *dom;
  char *target;
  char *name;                   /* DOMAIN.TARGET */
  char *layout;                 /* shd_lv_disk_layout_key of the attached spec */
  char *full;                   /* layout plus every attribute: recreate on change */
  ShdDiskConfig *cfg;
  ShdDisk *disk;                /* while attached */
  char *state;                  /* attaching, attached, detaching, detached, error */
  char *error;
  guint64 chunk_size;
  double attach_ms;
  gboolean adopted;
} LvDisk;

struct _Dom {
  Conn *c;
  char *uuid;
  char *name;
  virDomainPtr dom;
  ShdQmp *qmp;
  GHashTable *disks;            /* target -> LvDisk */
  GHashTable *held;             /* targets the operator detached */
  gboolean busy, again, stopping;
  char *meta_error;             /* the last one logged */
  guint refs;                   /* the table's and a running job's (main loop only) */
};

static void dom_reconcile (Dom *d);

/* ---- the monitor, from worker threads ---- */

static char *
transport (const char *command, gpointer data, GError **error)
{
  virDomainPtr dom = data;
  char *result = NULL;
  char *copy;

  if (virDomainQemuMonitorCommand (dom, command, &result, 0) < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", virGetLastErrorMessage ());
    return NULL;
  }
  copy = g_strdup (result);
  free (result);
  return copy;
}

static JsonNode *
monitor (const char *command, JsonObject *args, gpointer data, GError **error)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autofree char *line = NULL;
  g_autofree char *reply = NULL;

  json_builder_begin_object (b);
  json_builder_set_member_name (b, "execute");
  json_builder_add_string_value (b, command);
  if (args) {
    json_builder_set_member_name (b, "arguments");
    json_builder_add_value (b, json_node_init_object (json_node_alloc (), args));
  }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  line = json_generator_to_data (gen, NULL);
  reply = transport (line, data, error);
  if (reply == NULL)
    return NULL;
  return shd_qmp_parse_reply (command, reply, error);
}

/* ---- disks ---- */

static void
lvdisk_drop_agent (LvDisk *k)
{
  if (k->disk) {
    shd_daemon_remove_disk (k->dom->c->lv->dm, k->disk);
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
  g_clear_pointer (&k->cfg, shd_disk_config_unref); (void) (k->cfg);
  g_free (k->state);
  g_free (k->error);
  g_free (k);
}

static void
lvdisk_set (LvDisk *k, const char *state, const char *error)
{
  g_free (k->state);
  k->state = g_strdup (state);
  g_free (k->error);
  k->error = g_strdup (error);
}

static void
lvdisk_start_agent (LvDisk *k)
{
  ShdLibvirt *lv = k->dom->c->lv;
  g_autoptr (GError) error = NULL;
  ShdDisk *disk;

  lvdisk_drop_agent (k);
  disk = shd_disk_new_with_qmp (lv->config, k->cfg, shd_daemon_get_history (lv->dm),
                                k->dom->qmp, &error);
  if (disk == NULL) {
    shd_log (G_LOG_LEVEL_WARNING, k->name, "libvirt", "%s: %s", k->name, error->message);
    lvdisk_set (k, "error", error->message);
    return;
  }
  k->disk = disk;
  shd_daemon_add_disk (lv->dm, disk);
}

/* ---- domains ---- */

static void
dom_unref (gpointer p)
{
  Dom *d = p;

  if (--d->refs > 0)
    return;
  g_hash_table_unref (d->disks);        /* drops the agents first */
  g_hash_table_unref (d->held);
  if (d->qmp) {
    shd_qmp_custom_set_ready (d->qmp, FALSE, "domain gone");
    g_object_unref (d->qmp);
  }
  virDomainFree (d->dom);
  g_free (d->uuid);
  g_free (d->name);
  g_free (d->meta_error);
  g_free (d);
}

static void
domain_unref (gpointer p)
{
  virDomainFree (p);
}

static Dom *
dom_get (Conn *c, virDomainPtr vdom)
{
  char uuid[VIR_UUID_STRING_BUFLEN];
  Dom *d;
  g_autofree char *label = NULL;

  if (virDomainGetUUIDString (vdom, uuid) < 0)
    return NULL;
  d = g_hash_table_lookup (c->doms, uuid);
  if (d)
    return d;
  d = g_new0 (Dom, 1);
  d->c = c;
  d->uuid = g_strdup (uuid);
  d->name = g_strdup (virDomainGetName (vdom));
  d->disks = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, lvdisk_free);
  d->held = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  virDomainRef (vdom);
  d->dom = vdom;
  label = g_strdup_printf ("%s/%s", c->uri, d->name);
  virDomainRef (vdom);
  d->qmp = shd_qmp_new_custom (label, transport, vdom, domain_unref);
  d->refs = 1;
  g_hash_table_insert (c->doms, d->uuid, d);
  return d;
}

/* The domain stopped: QEMU and every node with it are gone.  A job that
 * still runs keeps the Dom alive and finds it gone when it ends. */
static void
dom_gone (Conn *c, const char *uuid)
{
  Dom *d = g_hash_table_lookup (c->doms, uuid);

  if (d == NULL)
    return;
  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "libvirt", "domain %s stopped: its disks are "
           "no longer managed", d->name);
  g_hash_table_remove_all (d->disks);
  shd_qmp_custom_set_ready (d->qmp, FALSE, "domain stopped");
  g_hash_table_remove (c->doms, uuid);
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
  gboolean was_attached;
  char *error;
  double ms;
} Op;

typedef struct {
  Conn *c;
  Dom *dom;                     /* a reference */
  guint generation;
  char *uuid;
  virDomainPtr vdom;
  /* phase 1: what the domain says */
  GPtrArray *specs;             /* ShdLvDisk, or NULL */
  gboolean no_metadata;
  char *meta_error;
  GPtrArray *domdisks;          /* ShdLvDomDisk */
  char *xml_error;
  /* phase 2: what to do */
  GPtrArray *ops;               /* Op */
  char **tier_dirs;             /* a copy of [libvirt] tier-dirs */
} Job;

static void
op_free (gpointer p)
{
  Op *o = p;

  g_free (o->target);
  g_free (o->error);
  g_free (o);
}

static void
job_free (Job *j)
{
  if (j->dom) {
    j->dom->busy = FALSE;
    dom_unref (j->dom);
  }
  g_free (j->uuid);
  virDomainFree (j->vdom);
  g_clear_pointer (&j->specs, g_ptr_array_unref);
  g_clear_pointer (&j->domdisks, g_ptr_array_unref);
  g_clear_pointer (&j->ops, g_ptr_array_unref);
  g_free (j->meta_error);
  g_free (j->xml_error);
  g_strfreev (j->tier_dirs);
  g_free (j);
}

static void
read_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  Job *j = data;
  g_autoptr (GError) error = NULL;
  char *meta, *xml;

  (void) source;
  (void) cancellable;
  xml = virDomainGetXMLDesc (j->vdom, 0);
  if (xml == NULL) {
    j->xml_error = g_strdup (virGetLastErrorMessage ());
  } else {
    j->domdisks = shd_lv_domain_disks (xml, &error);
    if (j->domdisks == NULL)
      j->xml_error = g_strdup (error->message);
    g_clear_error (&error);
    free (xml);
  }
  meta = virDomainGetMetadata (j->vdom, VIR_DOMAIN_METADATA_ELEMENT, SHD_LV_NS_URI,
                               VIR_DOMAIN_AFFECT_LIVE);
  if (meta == NULL) {
    virErrorPtr e = virGetLastError ();

    if (e && e->code == VIR_ERR_NO_DOMAIN_METADATA)
      j->no_metadata = TRUE;
    else
      j->meta_error = g_strdup (virGetLastErrorMessage ());
  } else {
    j->specs = shd_lv_meta_parse (meta, &error);
    if (j->specs == NULL)
      j->meta_error = g_strdup (error->message);
    free (meta);
  }
  g_task_return_boolean (task, TRUE);
}

static void
apply_thread (GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
  Job *j = data;
  ShdLvMonitor m = { monitor, j->vdom };

  (void) source;
  (void) cancellable;
  for (guint i = 0; i < j->ops->len; i++) {
    Op *o = j->ops->pdata[i];
    g_autoptr (GError) error = NULL;
    gint64 t0 = g_get_monotonic_time ();

    if (o->spec)
      o->ok = shd_lv_attach (&m, o->spec, o->dd, (const char *const *) j->tier_dirs,
                             &o->result, &error);
    else
      o->ok = shd_lv_detach (&m, o->target, o->dd, o->chunk_size, &o->was_attached, &error);
    o->ms = (g_get_monotonic_time () - t0) / 1000.0;
    if (!o->ok)
      o->error = g_strdup (error->message);
  }
  g_task_return_boolean (task, TRUE);
}

/* The job's domain, if it is still the one the job was made for. */
static Dom *
job_dom (Job *j)
{
  if (j->c->lv->stopping || j->c->generation != j->generation || j->c->conn == NULL)
    return NULL;
  return g_hash_table_lookup (j->c->doms, j->uuid) == j->dom ? j->dom : NULL;
}

/* Ends the job; looks again if something happened meanwhile. */
static void
job_done (Job *j)
{
  Dom *d = job_dom (j);
  gboolean again = d && d->again;

  if (d) {
    d->again = FALSE;
    d->refs++;                  /* past job_free */
  }
  job_free (j);
  if (d) {
    if (again)
      dom_reconcile (d);
    dom_unref (d);
  }
}

static void
applied (GObject *src, GAsyncResult *res, gpointer data)
{
  Job *j = data;
  Dom *d = job_dom (j);

  (void) src;
  (void) res;
  if (d == NULL) {
    job_free (j);
    return;
  }
  for (guint i = 0; i < j->ops->len; i++) {
    Op *o = j->ops->pdata[i];
    LvDisk *k = g_hash_table_lookup (d->disks, o->target);

    if (!o->ok && virDomainIsActive (d->dom) != 1) {
      shd_log (G_LOG_LEVEL_DEBUG, NULL, "libvirt", "domain %s disk %s: %s (domain stopping)",
               d->name, o->target, o->error);
      continue;
    }
    if (o->spec == NULL) {
      if (!o->ok) {
        shd_log (G_LOG_LEVEL_WARNING, k ? k->name : NULL, "detach-failed",
                 "domain %s disk %s: cannot detach: %s", d->name, o->target, o->error);
        if (k)
          lvdisk_set (k, "error", o->error);
        continue;
      }
      if (o->was_attached)
        shd_log (G_LOG_LEVEL_MESSAGE, k ? k->name : NULL, "detached",
                 "domain %s disk %s: shadow removed in %.0f ms; the disk is libvirt's again",
                 d->name, o->target, o->ms);
      if (k && g_hash_table_contains (d->held, o->target))
        lvdisk_set (k, "detached", NULL);
      else if (k && g_strcmp0 (k->state, "detaching") == 0)
        g_hash_table_remove (d->disks, o->target);
      continue;
    }
    if (k == NULL)
      continue;
    if (!o->ok) {
      shd_log (G_LOG_LEVEL_WARNING, k->name, "attach-failed",
               "domain %s disk %s: cannot insert the shadow: %s", d->name, o->target,
               o->error);
      lvdisk_set (k, "error", o->error);
      continue;
    }
    if (o->result == SHD_LV_ADOPTED && k->disk)
      continue;                 /* a routine look: still in place */
    k->adopted = o->result == SHD_LV_ADOPTED;
    k->attach_ms = o->ms;
    shd_log (G_LOG_LEVEL_MESSAGE, k->name, k->adopted ? "adopted" : "attached",
             "domain %s disk %s: %s (%.0f ms)", d->name, o->target,
             k->adopted ? "shadow already in place, adopted" : "shadow inserted", o->ms);
    lvdisk_set (k, "attached", NULL);
    lvdisk_start_agent (k);
  }
  job_done (j);
}

/* Calls @fn for every disk of every domain of every connection until it
 * returns FALSE; returns FALSE if it stopped. */
typedef gboolean (*DiskFunc) (Conn *c, Dom *d, LvDisk *k, gpointer data);

static gboolean
foreach_disk (ShdLibvirt *lv, DiskFunc fn, gpointer data)
{
  for (guint i = 0; i < lv->conns->len; i++) {
    Conn *c = lv->conns->pdata[i];
    GHashTableIter it;
    gpointer k, v;

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

  foreach_disk (lv, name_taken_one, &t);
  return t.uri;
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
    k->state = g_strdup ("new");
    g_hash_table_insert (d->disks, k->target, k);
  }
  return k;
}

static void
op_free_full (gpointer p)
{
  Op *o = p;

  shd_lv_dom_disk_free (o->dd);
  op_free (o);
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

static void
read_done (GObject *src, GAsyncResult *res, gpointer data)
{
  Job *j = data;
  Dom *d = job_dom (j);
  ShdLibvirt *lv = j->c->lv;
  g_autoptr (GHashTable) wanted = NULL;
  g_autoptr (GTask) task = NULL;
  GHashTableIter it;
  gpointer key, val;

  (void) src;
  (void) res;
  if (d == NULL) {
    job_free (j);
    return;
  }
  if (j->xml_error) {
    if (virDomainIsActive (d->dom) == 1)
      shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "domain %s: cannot read its XML: %s",
               d->name, j->xml_error);
    job_done (j);
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
    job_done (j);
    return;
  }
  g_clear_pointer (&d->meta_error, g_free);

  /* What should be attached, and with which configuration */
  wanted = g_hash_table_new (g_str_hash, g_str_equal);
  j->ops = g_ptr_array_new_with_free_func (op_free_full);
  for (guint i = 0; j->specs && !d->stopping && i < j->specs->len; i++) {
    ShdLvDisk *s = j->specs->pdata[i];
    const ShdLvDomDisk *dd = shd_lv_domain_disk (j->domdisks, s->target);
    LvDisk *k = lvdisk_get (d, s->target);
    g_autoptr (GError) error = NULL;
    g_autofree char *layout = shd_lv_disk_layout_key (s);
    g_autofree char *full = shd_lv_disk_full_key (s);
    ShdDiskConfig *cfg;

    g_hash_table_add (wanted, s->target);
    if (g_hash_table_contains (d->held, s->target)) {
      g_hash_table_remove (wanted, s->target);
      continue;
    }
    if (dd == NULL) {
      g_autofree char *msg = g_strdup_printf ("the domain has no disk '%s'", s->target);

      if (g_strcmp0 (k->error, msg) != 0)
        shd_log (G_LOG_LEVEL_WARNING, k->name, "bad-metadata", "domain %s: %s", d->name, msg);
      lvdisk_set (k, "error", msg);
      continue;
    }
    if (name_taken (lv, d, k->name)) {
      g_autofree char *msg = g_strdup_printf ("disk name %s is taken by a domain of the same "
                                              "name on %s", k->name,
                                              name_taken (lv, d, k->name));

      if (g_strcmp0 (k->error, msg) != 0)
        shd_log (G_LOG_LEVEL_WARNING, k->name, "name-taken", "%s", msg);
      lvdisk_set (k, "error", msg);
      continue;
    }
    if (k->disk && g_strcmp0 (k->full, full) == 0 && g_strcmp0 (k->state, "attached") == 0) {
      /* unchanged: only make sure it is still in place (block jobs) */
      add_op (j, s->target, s, dd, 0);
      continue;
    }
    cfg = shd_lv_disk_config (lv->config, d->name, s, &error);
    if (cfg == NULL) {
      if (g_strcmp0 (k->error, error->message) != 0)
        shd_log (G_LOG_LEVEL_WARNING, k->name, "bad-metadata", "%s", error->message);
      lvdisk_set (k, "error", error->message);
      continue;
    }
    if (k->layout && strcmp (k->layout, layout) != 0 && k->disk) {
      /* new tiers: out with the old shadow first */
      lvdisk_drop_agent (k);
      add_op (j, s->target, NULL, dd, k->chunk_size);
    }
    lvdisk_drop_agent (k);
    g_clear_pointer (&k->cfg, shd_disk_config_unref); (void) (k->cfg);
    k->cfg = cfg;
    g_free (k->layout);
    k->layout = g_steal_pointer (&layout);
    g_free (k->full);
    k->full = g_steal_pointer (&full);
    k->chunk_size = g_hash_table_lookup (s->disk_attrs, "chunk-size") ?
                    g_ascii_strtoull (g_hash_table_lookup (s->disk_attrs, "chunk-size"), NULL, 10) : 0;
    lvdisk_set (k, "attaching", NULL);
    add_op (j, s->target, s, dd, 0);
  }
  /* What should not be: metadata gone, disk held or unplugged, domain stopping */
  g_hash_table_iter_init (&it, d->disks);
  while (g_hash_table_iter_next (&it, &key, &val)) {
    LvDisk *k = val;
    const ShdLvDomDisk *dd = shd_lv_domain_disk (j->domdisks, k->target);

    if (g_hash_table_contains (wanted, k->target) && dd)
      continue;
    if (g_strcmp0 (k->state, "detached") == 0)
      continue;
    lvdisk_drop_agent (k);
    if (g_strcmp0 (k->state, "error") == 0 && k->layout == NULL) {
      g_hash_table_iter_remove (&it);
      continue;
    }
    lvdisk_set (k, "detaching", NULL);
    add_op (j, k->target, NULL, dd, k->chunk_size);
  }
  if (j->ops->len == 0) {
    job_done (j);
    return;
  }
  task = g_task_new (NULL, NULL, applied, j);
  g_task_set_task_data (task, j, NULL);
  g_task_run_in_thread (task, apply_thread);
}

static void
dom_reconcile (Dom *d)
{
  Conn *c = d->c;
  g_autoptr (GTask) task = NULL;
  Job *j;

  if (c->lv->stopping)
    return;
  if (d->busy) {
    d->again = TRUE;
    return;
  }
  d->busy = TRUE;
  j = g_new0 (Job, 1);
  j->c = c;
  j->dom = d;
  d->refs++;
  j->tier_dirs = g_strdupv (c->lv->config->libvirt_tier_dirs);
  j->generation = c->generation;
  j->uuid = g_strdup (d->uuid);
  virDomainRef (d->dom);
  j->vdom = d->dom;
  task = g_task_new (NULL, NULL, read_done, j);
  g_task_set_task_data (task, j, NULL);
  g_task_run_in_thread (task, read_thread);
}

/* ---- events, from libvirt's event thread to the main loop ---- */

typedef enum { EV_LIFECYCLE, EV_METADATA, EV_REMOVED, EV_JOB, EV_QEMU } EvKind;

typedef struct {
  ShdLibvirt *lv;
  guint conn_index;
  guint generation;
  EvKind kind;
  virDomainPtr vdom;
  int event, detail;
  char *text;                   /* metadata ns, device alias, QEMU event name */
  char *details;                /* QEMU event data */
  gint64 ts;
} Ev;

static void
ev_free (gpointer p)
{
  Ev *e = p;

  virDomainFree (e->vdom);
  g_free (e->text);
  g_free (e->details);
  g_free (e);
}

static gboolean
ev_main (gpointer data)
{
  Ev *e = data;
  Conn *c;
  Dom *d;
  char uuid[VIR_UUID_STRING_BUFLEN];

  if (e->lv->stopping || e->conn_index >= e->lv->conns->len)
    return G_SOURCE_REMOVE;
  c = e->lv->conns->pdata[e->conn_index];
  if (c->generation != e->generation || c->conn == NULL ||
      virDomainGetUUIDString (e->vdom, uuid) < 0)
    return G_SOURCE_REMOVE;
  switch (e->kind) {
  case EV_LIFECYCLE:
    if (e->event == VIR_DOMAIN_EVENT_STOPPED || e->event == VIR_DOMAIN_EVENT_CRASHED) {
      dom_gone (c, uuid);
    } else if (e->event == VIR_DOMAIN_EVENT_SHUTDOWN) {
      /* the guest is down; QEMU goes next: give the disks back while it can */
      d = g_hash_table_lookup (c->doms, uuid);
      if (d) {
        d->stopping = TRUE;
        dom_reconcile (d);
      }
    } else if (e->event == VIR_DOMAIN_EVENT_STARTED || e->event == VIR_DOMAIN_EVENT_RESUMED) {
      d = dom_get (c, e->vdom);
      if (d) {
        d->stopping = FALSE;
        shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
        dom_reconcile (d);
      }
    }
    break;
  case EV_METADATA:
    if (g_strcmp0 (e->text, SHD_LV_NS_URI) != 0)
      break;
    d = g_hash_table_lookup (c->doms, uuid);
    if (d == NULL && virDomainIsActive (e->vdom) == 1)
      d = dom_get (c, e->vdom);
    if (d) {
      shd_log (G_LOG_LEVEL_MESSAGE, NULL, "metadata", "domain %s: shadow metadata changed",
               d->name);
      shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
      dom_reconcile (d);
    }
    break;
  case EV_REMOVED:
    d = g_hash_table_lookup (c->doms, uuid);
    if (d) {
      shd_log (G_LOG_LEVEL_MESSAGE, NULL, "device-removed", "domain %s: device %s removed",
               d->name, e->text);
      dom_reconcile (d);
    }
    break;
  case EV_JOB:
    /* a finished block job may have moved the disk (blockcopy's pivot
     * puts the copy in; the shadow under the old image is left over) */
    d = g_hash_table_lookup (c->doms, uuid);
    if (d && e->event != VIR_DOMAIN_BLOCK_JOB_READY) {
      shd_log (G_LOG_LEVEL_MESSAGE, NULL, "block-job", "domain %s: block job on %s ended",
               d->name, e->text);
      dom_reconcile (d);
    }
    break;
  case EV_QEMU:
    d = g_hash_table_lookup (c->doms, uuid);
    if (d) {
      g_autoptr (JsonParser) p = json_parser_new ();
      JsonObject *data = NULL;

      if (e->details && json_parser_load_from_data (p, e->details, -1, NULL) &&
          JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
        data = json_node_get_object (json_parser_get_root (p));
      shd_qmp_custom_event (d->qmp, e->text, data, e->ts);
    }
    break;
  }
  return G_SOURCE_REMOVE;
}

static void
ev_post (Conn *c, EvKind kind, virDomainPtr vdom, int event, int detail, const char *text,
         const char *details, gint64 ts)
{
  Ev *e = g_new0 (Ev, 1);

  e->lv = c->lv;
  e->conn_index = c->index;
  e->generation = g_atomic_int_get (&c->generation);
  e->kind = kind;
  virDomainRef (vdom);
  e->vdom = vdom;
  e->event = event;
  e->detail = detail;
  e->text = g_strdup (text);
  e->details = g_strdup (details);
  e->ts = ts;
  g_main_context_invoke_full (NULL, G_PRIORITY_DEFAULT, ev_main, e, ev_free);
}

static int
on_lifecycle (virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque)
{
  (void) conn;
  ev_post (opaque, EV_LIFECYCLE, dom, event, detail, NULL, NULL, 0);
  return 0;
}

static void
on_metadata (virConnectPtr conn, virDomainPtr dom, int type, const char *nsuri, void *opaque)
{
  (void) conn;
  ev_post (opaque, EV_METADATA, dom, type, 0, nsuri, NULL, 0);
}

static void
on_removed (virConnectPtr conn, virDomainPtr dom, const char *alias, void *opaque)
{
  (void) conn;
  ev_post (opaque, EV_REMOVED, dom, 0, 0, alias, NULL, 0);
}

static void
on_block_job (virConnectPtr conn, virDomainPtr dom, const char *disk, int type, int status,
              void *opaque)
{
  (void) conn;
  ev_post (opaque, EV_JOB, dom, status, type, disk, NULL, 0);
}

static void
on_qemu_event (virConnectPtr conn, virDomainPtr dom, const char *event, long long seconds,
               unsigned int micros, const char *details, void *opaque)
{
  (void) conn;
  ev_post (opaque, EV_QEMU, dom, 0, 0, event, details,
           seconds >= 0 ? seconds * G_USEC_PER_SEC + micros : 0);
}

/* ---- connections ---- */

static void conn_schedule (Conn *c);

static gboolean
conn_closed_main (gpointer data)
{
  Conn *c = data;

  if (c->lv->stopping || c->conn == NULL)
    return G_SOURCE_REMOVE;
  shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "libvirt %s: connection lost; "
           "reconnecting every %d s", c->uri, RECONNECT_S);
  g_atomic_int_inc (&c->generation);
  {
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init (&it, c->doms);
    while (g_hash_table_iter_next (&it, &k, &v)) {
      Dom *d = v;

      /* the agents go now, even if a job still holds the domain */
      g_hash_table_remove_all (d->disks);
      shd_qmp_custom_set_ready (d->qmp, FALSE, "libvirt connection lost");
    }
  }
  g_hash_table_remove_all (c->doms);
  virConnectClose (c->conn);
  c->conn = NULL;
  conn_schedule (c);
  return G_SOURCE_REMOVE;
}

static void
on_close (virConnectPtr conn, int reason, void *opaque)
{
  (void) conn;
  (void) reason;
  g_main_context_invoke (NULL, conn_closed_main, opaque);
}

static gboolean
conn_open (gpointer data)
{
  Conn *c = data;
  virDomainPtr *doms = NULL;
  int n;

  c->retry_id = 0;
  /* read-write: the QEMU passthrough needs it (docs/libvirt.md) */
  c->conn = virConnectOpen (c->uri);
  if (c->conn == NULL) {
    const char *msg = virGetLastErrorMessage ();

    if (g_strcmp0 (c->last_error, msg) != 0)
      shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "libvirt %s: cannot connect: %s; "
               "retrying every %d s", c->uri, msg, RECONNECT_S);
    g_free (c->last_error);
    c->last_error = g_strdup (msg);
    conn_schedule (c);
    return G_SOURCE_REMOVE;
  }
  g_clear_pointer (&c->last_error, g_free);
  g_atomic_int_inc (&c->generation);
  virConnectRegisterCloseCallback (c->conn, on_close, c, NULL);
  c->cb_lifecycle = virConnectDomainEventRegisterAny (c->conn, NULL,
                                                      VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                      VIR_DOMAIN_EVENT_CALLBACK (on_lifecycle),
                                                      c, NULL);
  c->cb_metadata = virConnectDomainEventRegisterAny (c->conn, NULL,
                                                     VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                                                     VIR_DOMAIN_EVENT_CALLBACK (on_metadata),
                                                     c, NULL);
  c->cb_removed = virConnectDomainEventRegisterAny (c->conn, NULL,
                                                    VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                                    VIR_DOMAIN_EVENT_CALLBACK (on_removed),
                                                    c, NULL);
  c->cb_job = virConnectDomainEventRegisterAny (c->conn, NULL, VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2,
                                                VIR_DOMAIN_EVENT_CALLBACK (on_block_job),
                                                c, NULL);
  c->cb_qemu = virConnectDomainQemuMonitorEventRegister (c->conn, NULL, "^SHADOW_",
                                                         on_qemu_event, c, NULL,
                                                         VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX);
  if (c->cb_lifecycle < 0 || c->cb_metadata < 0 || c->cb_removed < 0 || c->cb_job < 0 ||
      c->cb_qemu < 0)
    shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "libvirt %s: cannot follow every "
             "event: %s", c->uri, virGetLastErrorMessage ());
  n = virConnectListAllDomains (c->conn, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "libvirt", "libvirt %s: connected, %d running "
           "domains", c->uri, MAX (n, 0));
  for (int i = 0; i < n; i++) {
    Dom *d = dom_get (c, doms[i]);

    if (d) {
      shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
      dom_reconcile (d);
    }
    virDomainFree (doms[i]);
  }
  free (doms);
  return G_SOURCE_REMOVE;
}

static void
conn_schedule (Conn *c)
{
  if (c->retry_id == 0 && !c->lv->stopping)
    c->retry_id = g_timeout_add_seconds (RECONNECT_S, conn_open, c);
}

static void
conn_free (gpointer p)
{
  Conn *c = p;
  GHashTableIter it;
  gpointer k, v;

  g_clear_handle_id (&c->retry_id, g_source_remove);
  /* the agents go now, even if a job still holds a domain */
  g_hash_table_iter_init (&it, c->doms);
  while (g_hash_table_iter_next (&it, &k, &v))
    g_hash_table_remove_all (((Dom *) v)->disks);
  g_hash_table_unref (c->doms);
  if (c->conn) {
    virConnectUnregisterCloseCallback (c->conn, on_close);
    if (c->cb_lifecycle >= 0)
      virConnectDomainEventDeregisterAny (c->conn, c->cb_lifecycle);
    if (c->cb_metadata >= 0)
      virConnectDomainEventDeregisterAny (c->conn, c->cb_metadata);
    if (c->cb_removed >= 0)
      virConnectDomainEventDeregisterAny (c->conn, c->cb_removed);
    if (c->cb_job >= 0)
      virConnectDomainEventDeregisterAny (c->conn, c->cb_job);
    if (c->cb_qemu >= 0)
      virConnectDomainQemuMonitorEventDeregister (c->conn, c->cb_qemu);
    virConnectClose (c->conn);
  }
  g_free (c->uri);
  g_free (c->last_error);
  g_free (c);
}

static gboolean
on_rescan (gpointer data)
{
  ShdLibvirt *lv = data;

  for (guint i = 0; i < lv->conns->len; i++) {
    Conn *c = lv->conns->pdata[i];
    GHashTableIter it;
    gpointer k, v;

    if (c->conn == NULL)
      continue;
    g_hash_table_iter_init (&it, c->doms);
    while (g_hash_table_iter_next (&it, &k, &v))
      dom_reconcile (v);
  }
  return G_SOURCE_CONTINUE;
}

/* ---- the event thread ---- */

static void
wake (int timer, void *opaque)
{
  (void) opaque;
  virEventRemoveTimeout (timer);
}

static gpointer
event_loop (gpointer data)
{
  ShdLibvirt *lv = data;

  while (g_atomic_int_get (&lv->running))
    if (virEventRunDefaultImpl () < 0) {
      g_warning ("libvirt's event loop failed: %s", virGetLastErrorMessage ());
      break;
    }
  return NULL;
}

static void
quiet_errors (void *data, virErrorPtr error)
{
  /* errors are reported where they happen, with context */
  (void) data;
  (void) error;
}

/* ---- public ---- */

G_DEFINE_TYPE (ShdLibvirt, shd_libvirt, G_TYPE_OBJECT)

gboolean
shd_libvirt_supported (void)
{
  return TRUE;
}

ShdLibvirt *
shd_libvirt_new (ShdDaemon *dm, char **uris, GError **error)
{
  g_autoptr (ShdLibvirt) lv = NULL;

  if (uris == NULL || uris[0] == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "no libvirt URI");
    return NULL;
  }
  virSetErrorFunc (NULL, quiet_errors);
  if (virInitialize () < 0 || virEventRegisterDefaultImpl () < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot initialize libvirt: %s",
                 virGetLastErrorMessage ());
    return NULL;
  }
  lv = g_object_new (SHD_TYPE_LIBVIRT, NULL);
  lv->dm = g_object_ref (dm);
  lv->config = shd_daemon_get_config (dm);
  lv->conns = g_ptr_array_new_with_free_func (conn_free);
  for (guint i = 0; uris[i]; i++) {
    Conn *c;

    for (guint j = 0; j < i; j++)
      if (strcmp (uris[i], uris[j]) == 0) {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                     "libvirt URI %s given twice", uris[i]);
        return NULL;
      }
    c = g_new0 (Conn, 1);
    c->lv = lv;
    c->index = i;
    c->uri = g_strdup (uris[i]);
    c->cb_lifecycle = c->cb_metadata = c->cb_removed = c->cb_job = c->cb_qemu = -1;
    c->doms = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, dom_unref);
    g_ptr_array_add (lv->conns, c);
  }
  g_atomic_int_set (&lv->running, 1);
  lv->event_thread = g_thread_new ("libvirt-events", event_loop, lv);
  return g_steal_pointer (&lv);
}

void
shd_libvirt_start (ShdLibvirt *lv)
{
  for (guint i = 0; i < lv->conns->len; i++)
    conn_open (lv->conns->pdata[i]);
  lv->rescan_id = g_timeout_add_seconds (RESCAN_S, on_rescan, lv);
}

static void
libvirt_stop (ShdLibvirt *lv)
{
  if (lv->stopping)
    return;
  lv->stopping = TRUE;
  g_clear_handle_id (&lv->rescan_id, g_source_remove);
  g_clear_pointer (&lv->conns, g_ptr_array_unref);
  if (lv->event_thread) {
    g_atomic_int_set (&lv->running, 0);
    virEventAddTimeout (0, wake, NULL, NULL);
    g_thread_join (lv->event_thread);
    lv->event_thread = NULL;
  }
}

void
shd_libvirt_shutdown_async (ShdLibvirt *lv, GAsyncReadyCallback callback, gpointer data)
{
  g_autoptr (GTask) task = g_task_new (lv, NULL, callback, data);

  libvirt_stop (lv);
  g_task_return_boolean (task, TRUE);
}

gboolean
shd_libvirt_shutdown_finish (ShdLibvirt *lv, GAsyncResult *res, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (res, lv), FALSE);
  return g_task_propagate_boolean (G_TASK (res), error);
}

static void
shd_libvirt_dispose (GObject *object)
{
  ShdLibvirt *lv = SHD_LIBVIRT (object);

  libvirt_stop (lv);
  g_clear_object (&lv->dm);
  G_OBJECT_CLASS (shd_libvirt_parent_class)->dispose (object);
}

static void
shd_libvirt_class_init (ShdLibvirtClass *klass)
{
  G_OBJECT_CLASS (klass)->dispose = shd_libvirt_dispose;
}

static void
shd_libvirt_init (ShdLibvirt *lv)
{
  (void) lv;
}

static void
status_one (JsonArray *a, Conn *c, Dom *d, LvDisk *k)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "name", k->name);
  json_object_set_string_member (o, "uri", c->uri);
  json_object_set_string_member (o, "domain", d->name);
  json_object_set_string_member (o, "target", k->target);
  json_object_set_string_member (o, "state", k->state);
  if (k->error)
    json_object_set_string_member (o, "error", k->error);
  else
    json_object_set_null_member (o, "error");
  json_object_set_boolean_member (o, "adopted", k->adopted);
  json_object_set_double_member (o, "attach-ms", k->attach_ms);
  json_object_set_boolean_member (o, "managed", k->disk != NULL);
  if (k->cfg)
    json_object_set_string_member (o, "node", k->cfg->node);
  json_array_add_object_element (a, o);
}

typedef struct {
  JsonArray *array;
  const char *name;             /* NULL: every disk */
} StatusQuery;

static gboolean
status_if_named (Conn *c, Dom *d, LvDisk *k, gpointer data)
{
  StatusQuery *q = data;

  if (q->name == NULL || strcmp (k->name, q->name) == 0)
    status_one (q->array, c, d, k);
  return TRUE;
}

static JsonNode *
libvirt_status (ShdLibvirt *lv, const char *name)
{
  StatusQuery q = { json_array_new (), name };
  JsonNode *n = json_node_new (JSON_NODE_ARRAY);

  foreach_disk (lv, status_if_named, &q);
  json_node_take_array (n, q.array);
  return n;
}

static gboolean
libvirt_request (ShdLibvirt *lv, const char *uri, const char *domain, const char *target,
                 gboolean attach, GError **error)
{
  for (guint i = 0; i < lv->conns->len; i++) {
    Conn *c = lv->conns->pdata[i];
    virDomainPtr vdom;
    Dom *d;

    if (uri && strcmp (uri, c->uri) != 0)
      continue;
    if (c->conn == NULL) {
      if (uri) {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                     "not connected to libvirt %s", c->uri);
        return FALSE;
      }
      continue;
    }
    vdom = virDomainLookupByName (c->conn, domain);
    if (vdom == NULL)
      continue;
    if (virDomainIsActive (vdom) != 1) {
      virDomainFree (vdom);
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED, "domain %s is not running",
                   domain);
      return FALSE;
    }
    if (attach) {
      /* say now what the metadata lacks, rather than time out later */
      g_autoptr (GError) perr = NULL;
      g_autoptr (GPtrArray) specs = NULL;
      char *meta = virDomainGetMetadata (vdom, VIR_DOMAIN_METADATA_ELEMENT, SHD_LV_NS_URI,
                                         VIR_DOMAIN_AFFECT_LIVE);
      gboolean found = FALSE;

      if (meta == NULL) {
        virDomainFree (vdom);
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                     "domain %s has no shadow metadata (%s)", domain, SHD_LV_NS_URI);
        return FALSE;
      }
      specs = shd_lv_meta_parse (meta, &perr);
      free (meta);
      for (guint i = 0; specs && i < specs->len; i++)
        found |= strcmp (((ShdLvDisk *) specs->pdata[i])->target, target) == 0;
      if (!found) {
        virDomainFree (vdom);
        if (perr)
          g_propagate_prefixed_error (error, g_steal_pointer (&perr),
                                      "domain %s: ", domain);
        else
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                       "domain %s: its shadow metadata has no disk %s", domain, target);
        return FALSE;
      }
    }
    d = dom_get (c, vdom);
    virDomainFree (vdom);
    if (d == NULL)
      break;
    if (attach) {
      LvDisk *k = g_hash_table_lookup (d->disks, target);

      g_hash_table_remove (d->held, target);
      if (k && g_strcmp0 (k->state, "detached") == 0)
        lvdisk_set (k, "attaching", NULL);
    } else {
      LvDisk *k = g_hash_table_lookup (d->disks, target);

      if (k == NULL) {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                     "domain %s has no shadowed disk %s", domain, target);
        return FALSE;
      }
      g_hash_table_add (d->held, g_strdup (target));
    }
    shd_log (G_LOG_LEVEL_MESSAGE, NULL, "request", "operator: %s domain %s disk %s",
             attach ? "attach" : "detach", domain, target);
    shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
    dom_reconcile (d);
    return TRUE;
  }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no running domain %s%s%s", domain,
               uri ? " on " : "", uri ? uri : "");
  return FALSE;
}

/* ---- control commands ---- */

static ShdLibvirt *
following (gpointer data, GError **error)
{
  if (data == NULL)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "shadowd follows no libvirt connection (--connect, [libvirt] uri)");
  return data;
}

static JsonNode *
cmd_libvirt (gpointer data, JsonObject *req, GError **error)
{
  ShdLibvirt *lv = following (data, error);

  return lv ? libvirt_status (lv, shd_request_string (req, "disk")) : NULL;
}

static JsonNode *
attach_detach (gpointer data, JsonObject *req, gboolean attach, GError **error)
{
  ShdLibvirt *lv = following (data, error);
  const char *domain = shd_request_string (req, "domain");
  const char *target = shd_request_string (req, "target");

  if (lv == NULL)
    return NULL;
  if (domain == NULL || target == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"domain\" and \"target\" are required");
    return NULL;
  }
  if (!libvirt_request (lv, shd_request_string (req, "uri"), domain, target, attach, error))
    return NULL;
  return json_node_init_string (json_node_alloc (), "requested");
}

static JsonNode *
cmd_attach (gpointer data, JsonObject *req, GError **error)
{
  return attach_detach (data, req, TRUE, error);
}

static JsonNode *
cmd_detach (gpointer data, JsonObject *req, GError **error)
{
  return attach_detach (data, req, FALSE, error);
}

static const ShdCommand commands[] = {
  { "libvirt", cmd_libvirt, NULL },
  { "attach", cmd_attach, NULL },
  { "detach", cmd_detach, NULL },
};

void
shd_libvirt_add_commands (ShdLibvirt *lv, ShdControl *ctl)
{
  shd_control_add_commands (ctl, commands, G_N_ELEMENTS (commands), (GObject *) lv);
}
