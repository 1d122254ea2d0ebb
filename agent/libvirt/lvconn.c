/* Connections to libvirt: set-up and tear-down in a worker, events from
 * libvirt's event thread to the main loop; see lvprivate.h. */
#include "lvprivate.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

Conn *
conn_new (ShdLibvirt *lv, const char *uri, guint index)
{
  Conn *c = g_atomic_rc_box_new0 (Conn);

  c->uri = g_strdup (uri);
  c->index = index;
  c->context = g_main_context_ref_thread_default ();
  g_mutex_init (&c->lock);
  c->cb_lifecycle = c->cb_metadata = c->cb_removed = c->cb_job = c->cb_qemu = -1;
  c->lv = lv;
  c->doms = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) dom_unref);
  return c;
}

Conn *
conn_ref (Conn *c)
{
  return g_atomic_rc_box_acquire (c);
}

/* The last reference may go in any thread (libvirt's freecb, a worker):
 * by then the main-loop state was cleared (conn_detach) and the libvirt
 * connection closed (conn_close_now), so only memory is left. */
static void
conn_clear (Conn *c)
{
  g_warn_if_fail (c->vconn == NULL);
  g_clear_pointer (&c->doms, g_hash_table_unref);
  g_mutex_clear (&c->lock);
  g_main_context_unref (c->context);
  g_free (c->uri);
  g_free (c->last_error);
}

void
conn_unref (Conn *c)
{
  g_atomic_rc_box_release_full (c, (GDestroyNotify) conn_clear);
}

static void
conn_unref_cb (void *opaque)
{
  conn_unref (opaque);
}

virConnectPtr
conn_get (Conn *c, GError **error)
{
  virConnectPtr v;

  g_mutex_lock (&c->lock);
  v = c->vconn;
  if (v)
    virConnectRef (v);
  g_mutex_unlock (&c->lock);
  if (v == NULL)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED, "not connected to libvirt %s",
                 c->uri);
  return v;
}

/* ---- events: libvirt's thread -> the main loop ---- */

typedef enum { EV_LIFECYCLE, EV_METADATA, EV_REMOVED, EV_JOB, EV_QEMU, EV_CLOSED } EvKind;

typedef struct {
  Conn *conn;                   /* a reference */
  int generation;               /* the connection's when it came */
  EvKind kind;
  char *uuid;
  char *name;
  int event, detail;
  char *text;                   /* metadata ns, device alias, QEMU event name */
  char *details;                /* QEMU event data */
  gint64 ts;
} Ev;

static void
ev_free (gpointer p)
{
  Ev *e = p;

  conn_unref (e->conn);
  g_free (e->uuid);
  g_free (e->name);
  g_free (e->text);
  g_free (e->details);
  g_free (e);
}

static void conn_lost (Conn *c);

static gboolean
ev_main (gpointer data)
{
  Ev *e = data;
  Conn *c = e->conn;
  Dom *d;

  if (c->lv == NULL || c->lv->stopping) {
    c->dropped++;               /* shadowd stops */
    return G_SOURCE_REMOVE;
  }
  if (e->generation != g_atomic_int_get (&c->generation))
    return G_SOURCE_REMOVE;     /* an older connection's */
  d = e->uuid ? g_hash_table_lookup (c->doms, e->uuid) : NULL;
  switch (e->kind) {
  case EV_CLOSED:
    conn_lost (c);
    break;
  case EV_LIFECYCLE:
    shd_log (G_LOG_LEVEL_DEBUG, NULL, "libvirt", "domain %s: lifecycle event %d, detail %d",
             e->name, e->event, e->detail);
    if (e->event == VIR_DOMAIN_EVENT_STOPPED || e->event == VIR_DOMAIN_EVENT_CRASHED) {
      dom_gone (c, e->uuid, e->event == VIR_DOMAIN_EVENT_STOPPED &&
                e->detail == VIR_DOMAIN_EVENT_STOPPED_MIGRATED);
    } else if (e->event == VIR_DOMAIN_EVENT_SHUTDOWN) {
      /* the guest is down; QEMU goes next: give the disks back while it
       * can, except those whose maps QEMU's exit keeps (lvdomain.c) */
      if (d) {
        shd_log (G_LOG_LEVEL_MESSAGE, NULL, "libvirt", "domain %s: the guest shut down; "
                 "disks without a metadata child go back to libvirt", d->name);
        d->stopping = TRUE;
        dom_reconcile (d);
      }
    } else if (e->event == VIR_DOMAIN_EVENT_STARTED || e->event == VIR_DOMAIN_EVENT_RESUMED) {
      d = dom_get (c, e->uuid, e->name);
      d->stopping = FALSE;
      shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
      dom_reconcile (d);
    }
    break;
  case EV_METADATA:
    if (g_strcmp0 (e->text, SHD_LV_NS_URI) != 0) {
      shd_log (G_LOG_LEVEL_DEBUG, NULL, "metadata", "domain %s: metadata %s changed, "
               "not shadowtier's", e->name, e->text ? e->text : "(description)");
      break;
    }
    /* a domain not seen yet may not run: its first look says */
    if (d == NULL)
      d = dom_get (c, e->uuid, e->name);
    shd_log (G_LOG_LEVEL_MESSAGE, NULL, "metadata", "domain %s: shadow metadata changed",
             d->name);
    shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
    dom_reconcile (d);
    break;
  case EV_REMOVED:
    if (d) {
      shd_log (G_LOG_LEVEL_MESSAGE, NULL, "device-removed", "domain %s: device %s removed",
               d->name, e->text);
      dom_reconcile (d);
    }
    break;
  case EV_JOB:
    /* a finished block job may have moved the disk (blockcopy's pivot
     * puts the copy in; the shadow under the old image is left over) */
    if (d && e->event != VIR_DOMAIN_BLOCK_JOB_READY) {
      shd_log (G_LOG_LEVEL_MESSAGE, NULL, "block-job", "domain %s: block job on %s ended",
               d->name, e->text);
      dom_reconcile (d);
    }
    break;
  case EV_QEMU:
    if (d) {
      g_autoptr (JsonParser) p = json_parser_new ();
      JsonObject *obj = NULL;

      if (e->details && json_parser_load_from_data (p, e->details, -1, NULL) &&
          JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p)))
        obj = json_node_get_object (json_parser_get_root (p));
      shd_qmp_custom_event (d->qmp, e->text, obj, e->ts);
    }
    break;
  }
  return G_SOURCE_REMOVE;
}

/* In libvirt's event thread: copy, and hand to the main loop.  The domain
 * accessors used here read the virDomainPtr itself; nothing asks libvirtd
 * (which would deadlock this thread). */
static void
ev_post (Conn *c, EvKind kind, virDomainPtr vdom, int event, int detail, const char *text,
         const char *details, gint64 ts)
{
  Ev *e = g_new0 (Ev, 1);
  char uuid[VIR_UUID_STRING_BUFLEN];

  e->conn = conn_ref (c);
  e->generation = g_atomic_int_get (&c->generation);
  e->kind = kind;
  if (vdom && virDomainGetUUIDString (vdom, uuid) == 0) {
    e->uuid = g_strdup (uuid);
    e->name = g_strdup (virDomainGetName (vdom));
  }
  e->event = event;
  e->detail = detail;
  e->text = g_strdup (text);
  e->details = g_strdup (details);
  e->ts = ts;
  if (vdom && e->uuid == NULL) {
    ev_free (e);
    return;
  }
  g_main_context_invoke_full (c->context, G_PRIORITY_DEFAULT, ev_main, e, ev_free);
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

static void
on_close (virConnectPtr conn, int reason, void *opaque)
{
  (void) conn;
  (void) reason;
  ev_post (opaque, EV_CLOSED, NULL, 0, 0, NULL, NULL, 0);
}

/* ---- set-up and tear-down, in a worker ---- */

/* Takes the libvirt connection out of c and closes it: callbacks first
 * (libvirt releases their references with conn_unref_cb) */
void
conn_close_now (Conn *c)
{
  virConnectPtr v;
  gboolean close_cb;
  int ids[5];

  g_mutex_lock (&c->lock);
  v = g_steal_pointer (&c->vconn);
  close_cb = c->close_cb;
  c->close_cb = FALSE;
  ids[0] = c->cb_lifecycle;
  ids[1] = c->cb_metadata;
  ids[2] = c->cb_removed;
  ids[3] = c->cb_job;
  ids[4] = c->cb_qemu;
  c->cb_lifecycle = c->cb_metadata = c->cb_removed = c->cb_job = c->cb_qemu = -1;
  g_mutex_unlock (&c->lock);
  if (v == NULL)
    return;
  if (close_cb)
    virConnectUnregisterCloseCallback (v, on_close);
  for (guint i = 0; i < 4; i++)
    if (ids[i] >= 0)
      virConnectDomainEventDeregisterAny (v, ids[i]);
  if (ids[4] >= 0)
    virConnectDomainQemuMonitorEventDeregister (v, ids[4]);
  virConnectClose (v);
}

typedef struct {
  char *uuid;
  char *name;
} DomInfo;

static void
dom_info_free (gpointer p)
{
  DomInfo *i = p;

  g_free (i->uuid);
  g_free (i->name);
  g_free (i);
}

typedef struct {
  Conn *c;                      /* a reference */
  int generation;               /* out */
  GPtrArray *running;           /* out: DomInfo */
  char *warning;                /* out */
} Connect;

static void
connect_free (gpointer p)
{
  Connect *o = p;

  conn_unref (o->c);
  g_clear_pointer (&o->running, g_ptr_array_unref);
  g_free (o->warning);
  g_free (o);
}

static gboolean
connect_work (gpointer data, GError **error)
{
  Connect *o = data;
  Conn *c = o->c;
  virConnectPtr v;
  virDomainPtr *doms = NULL;
  gboolean close_cb;
  int n, ids[5];

  /* what is left of a lost connection first */
  conn_close_now (c);
  /* read-write: the QEMU passthrough needs it (docs/libvirt.md) */
  v = virConnectOpen (c->uri);
  if (v == NULL) {
    lv_set_error (error, NULL);
    return FALSE;
  }
  /* events of this connection carry its generation from the first one */
  o->generation = g_atomic_int_add (&c->generation, 1) + 1;
  close_cb = virConnectRegisterCloseCallback (v, on_close, conn_ref (c), conn_unref_cb) == 0;
  if (!close_cb)
    conn_unref (c);
#define REGISTER(id, fn)                                                        \
  virConnectDomainEventRegisterAny (v, NULL, id, VIR_DOMAIN_EVENT_CALLBACK (fn), \
                                    conn_ref (c), conn_unref_cb)
  ids[0] = REGISTER (VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle);
  ids[1] = REGISTER (VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, on_metadata);
  ids[2] = REGISTER (VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, on_removed);
  ids[3] = REGISTER (VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, on_block_job);
#undef REGISTER
  ids[4] = virConnectDomainQemuMonitorEventRegister (v, NULL, "^SHADOW_", on_qemu_event,
                                                     conn_ref (c), conn_unref_cb,
                                                     VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX);
  for (guint i = 0; i < G_N_ELEMENTS (ids); i++)
    if (ids[i] < 0) {
      conn_unref (c);           /* not registered: libvirt keeps no reference */
      if (o->warning == NULL)
        o->warning = g_strdup (virGetLastErrorMessage ());
    }
  o->running = g_ptr_array_new_with_free_func (dom_info_free);
  n = virConnectListAllDomains (v, &doms, VIR_CONNECT_LIST_DOMAINS_ACTIVE);
  for (int i = 0; i < n; i++) {
    char uuid[VIR_UUID_STRING_BUFLEN];

    if (virDomainGetUUIDString (doms[i], uuid) == 0) {
      DomInfo *info = g_new0 (DomInfo, 1);

      info->uuid = g_strdup (uuid);
      info->name = g_strdup (virDomainGetName (doms[i]));
      g_ptr_array_add (o->running, info);
    }
    virDomainFree (doms[i]);
  }
  free (doms);
  g_mutex_lock (&c->lock);
  c->vconn = v;
  c->close_cb = close_cb;
  c->cb_lifecycle = ids[0];
  c->cb_metadata = ids[1];
  c->cb_removed = ids[2];
  c->cb_job = ids[3];
  c->cb_qemu = ids[4];
  g_mutex_unlock (&c->lock);
  return TRUE;
}

static gboolean
retry (gpointer data)
{
  Conn *c = data;

  c->retry_id = 0;
  conn_connect (c);
  return G_SOURCE_REMOVE;
}

static void
schedule_retry (Conn *c)
{
  if (c->retry_id == 0 && c->lv && !c->lv->stopping)
    c->retry_id = g_timeout_add_seconds (LV_RECONNECT_S, retry, c);
}

static void
connected (ShdLibvirt *lv, gpointer data, const GError *error)
{
  Connect *o = data;
  Conn *c = o->c;

  (void) lv;
  c->opening = FALSE;
  if (c->lv == NULL || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;                     /* stopping: the last job closes it */
  if (error) {
    if (g_strcmp0 (c->last_error, error->message) != 0)
      shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "libvirt %s: cannot connect: %s; "
               "retrying every %d s", c->uri, error->message, LV_RECONNECT_S);
    g_free (c->last_error);
    c->last_error = g_strdup (error->message);
    schedule_retry (c);
    return;
  }
  if (o->generation != g_atomic_int_get (&c->generation))
    return;                     /* lost already; its close event reconnects */
  g_clear_pointer (&c->last_error, g_free);
  c->connected = TRUE;
  if (o->warning)
    shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "libvirt %s: cannot follow every "
             "event: %s", c->uri, o->warning);
  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "libvirt", "libvirt %s: connected, %u running "
           "domains", c->uri, o->running->len);
  for (guint i = 0; i < o->running->len; i++) {
    DomInfo *info = o->running->pdata[i];
    Dom *d = dom_get (c, info->uuid, info->name);

    shd_qmp_custom_set_ready (d->qmp, TRUE, NULL);
    dom_reconcile (d);
  }
}

void
conn_connect (Conn *c)
{
  Connect *o;

  if (c->opening || c->lv == NULL || c->lv->stopping)
    return;
  c->opening = TRUE;
  o = g_new0 (Connect, 1);
  o->c = conn_ref (c);
  lv_run (c->lv, c->lv->calls, connect_work, connected, o, connect_free);
}

/* Forget the domains: their agents go now, even if a job still holds one */
static void
drop_domains (Conn *c, const char *why)
{
  g_autoptr (GList) doms = g_hash_table_get_values (c->doms);

  for (GList *l = doms; l; l = l->next) {
    Dom *d = l->data;

    g_hash_table_remove_all (d->disks);
    shd_qmp_custom_set_ready (d->qmp, FALSE, why);
  }
  g_hash_table_remove_all (c->doms);
}

/* libvirtd went away (its close callback) */
static void
conn_lost (Conn *c)
{
  shd_log (G_LOG_LEVEL_WARNING, NULL, "libvirt", "libvirt %s: connection lost; "
           "reconnecting every %d s", c->uri, LV_RECONNECT_S);
  g_atomic_int_inc (&c->generation);
  c->connected = FALSE;
  drop_domains (c, "libvirt connection lost");
  /* the next connect closes what is left of this one first */
  schedule_retry (c);
}

void
conn_detach (Conn *c)
{
  g_clear_handle_id (&c->retry_id, g_source_remove);
  g_atomic_int_inc (&c->generation);
  drop_domains (c, "shadowd stops");
  c->connected = FALSE;
  c->lv = NULL;
}
