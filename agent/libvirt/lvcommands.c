/* The libvirt layer's control commands: libvirt (the domain disks and
 * their state, from the main loop's records), attach and detach (the
 * operator's; their look-ups run in a worker, and the answer comes when
 * they are done). */
#include "lvprivate.h"

#include "commands.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static ShdLibvirt *
following (gpointer data, GError **error)
{
  if (data == NULL)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "shadowd follows no libvirt connection (--connect, [libvirt] uri)");
  return data;
}

/* ---- libvirt [disk] ---- */

typedef struct {
  ShdLibvirt *lv;
  JsonArray *array;
  const char *name;             /* NULL: every disk */
  GHashTable *seen;             /* the names given */
} StatusQuery;

static gboolean
status_one (Conn *c, Dom *d, LvDisk *k, gpointer data)
{
  StatusQuery *q = data;
  JsonObject *o;

  if (q->name && strcmp (k->name, q->name) != 0)
    return TRUE;
  o = json_object_new ();
  json_object_set_string_member (o, "name", k->name);
  json_object_set_string_member (o, "uri", c->uri);
  json_object_set_string_member (o, "domain", d->name);
  json_object_set_string_member (o, "target", k->target);
  json_object_set_string_member (o, "state", lv_state_name (k->state));
  if (k->error)
    json_object_set_string_member (o, "error", k->error);
  else
    json_object_set_null_member (o, "error");
  json_object_set_boolean_member (o, "adopted", k->adopted);
  json_object_set_double_member (o, "attach-ms", k->attach_ms);
  json_object_set_boolean_member (o, "managed", k->disk != NULL);
  if (k->cfg)
    json_object_set_string_member (o, "node", k->cfg->node);
  g_hash_table_add (q->seen, k->name);
  {
    JsonObject *move = lv_move_status (q->lv, k->name);

    if (move)
      json_object_set_object_member (o, "move", move);
  }
  json_array_add_object_element (q->array, o);
  return TRUE;
}

/* The last moves of disks that have no shadow metadata any more (a move
 * left them without a second tier) or whose domain stopped */
static void
moves_of_others (ShdLibvirt *lv, StatusQuery *q)
{
  GHashTableIter it;
  gpointer name;

  g_hash_table_iter_init (&it, lv->moves);
  while (g_hash_table_iter_next (&it, &name, NULL)) {
    JsonObject *o;

    if (g_hash_table_contains (q->seen, name) || (q->name && strcmp (name, q->name) != 0))
      continue;
    o = json_object_new ();
    json_object_set_string_member (o, "name", name);
    {
      /* DOMAIN.TARGET: a target has no dot */
      g_autofree char *domain = g_strndup (name, strrchr (name, '.') - (char *) name);

      json_object_set_string_member (o, "domain", domain);
      json_object_set_string_member (o, "target", strrchr (name, '.') + 1);
    }
    json_object_set_string_member (o, "state", "unmanaged");
    json_object_set_null_member (o, "error");
    json_object_set_boolean_member (o, "managed", FALSE);
    json_object_set_object_member (o, "move", lv_move_status (lv, name));
    json_array_add_object_element (q->array, o);
  }
}

static JsonNode *
cmd_libvirt (gpointer data, JsonObject *req, GError **error)
{
  ShdLibvirt *lv = following (data, error);
  StatusQuery q;
  JsonNode *n;

  if (lv == NULL)
    return NULL;
  q.lv = lv;
  q.array = json_array_new ();
  q.seen = g_hash_table_new (g_str_hash, g_str_equal);
  q.name = shd_request_string (req, "disk");
  lv_foreach_disk (lv, status_one, &q);
  moves_of_others (lv, &q);
  g_hash_table_unref (q.seen);
  n = json_node_new (JSON_NODE_ARRAY);
  json_node_take_array (n, q.array);
  return n;
}

/* ---- attach and detach DOMAIN TARGET [uri] ---- */

typedef struct {
  GTask *task;                  /* the control command's */
  char *uri;                    /* or NULL: any connection */
  char *domain;
  char *target;
  gboolean attach;
  /* found, in a worker */
  guint conn_index;
  char *uuid;
  char *name;
  GPtrArray *specs;             /* attach: the metadata's disks */
} Lookup;

static void
lookup_free (gpointer p)
{
  Lookup *l = p;

  g_object_unref (l->task);
  g_free (l->uri);
  g_free (l->domain);
  g_free (l->target);
  g_free (l->uuid);
  g_free (l->name);
  g_clear_pointer (&l->specs, g_ptr_array_unref);
  g_free (l);
}

typedef struct {
  Lookup *l;
  GPtrArray *conns;             /* Conn references: the worker's own */
} LookupWork;

/* In a worker: the running domain of that name on the first connection
 * that has it; for attach, its metadata must describe target */
static gboolean
lookup_domain (Lookup *l, Conn *c, gboolean *found, GError **error)
{
  virConnectPtr v;
  virDomainPtr dom;
  char uuid[VIR_UUID_STRING_BUFLEN];
  gboolean ok = FALSE;

  v = conn_get (c, NULL);
  if (v == NULL) {
    if (l->uri) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED,
                   "not connected to libvirt %s", c->uri);
      return FALSE;
    }
    return TRUE;                /* try the others */
  }
  dom = virDomainLookupByName (v, l->domain);
  virConnectClose (v);
  if (dom == NULL)
    return TRUE;
  *found = TRUE;
  if (virDomainIsActive (dom) != 1) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_CONNECTED, "domain %s is not running",
                 l->domain);
    goto out;
  }
  if (virDomainGetUUIDString (dom, uuid) < 0) {
    lv_set_error (error, l->domain);
    goto out;
  }
  if (l->attach) {
    /* say now what the metadata lacks, rather than time out later */
    g_autoptr (GError) perr = NULL;
    char *meta = virDomainGetMetadata (dom, VIR_DOMAIN_METADATA_ELEMENT, SHD_LV_NS_URI,
                                       VIR_DOMAIN_AFFECT_LIVE);
    gboolean described = FALSE;

    if (meta == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                   "domain %s has no shadow metadata (%s)", l->domain, SHD_LV_NS_URI);
      goto out;
    }
    l->specs = shd_lv_meta_parse (meta, &perr);
    free (meta);
    for (guint i = 0; l->specs && i < l->specs->len; i++)
      described |= strcmp (((ShdLvDisk *) l->specs->pdata[i])->target, l->target) == 0;
    if (!described) {
      if (perr)
        g_propagate_prefixed_error (error, g_steal_pointer (&perr), "domain %s: ", l->domain);
      else
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                     "domain %s: its shadow metadata has no disk %s", l->domain, l->target);
      goto out;
    }
  }
  l->conn_index = c->index;
  l->uuid = g_strdup (uuid);
  l->name = g_strdup (virDomainGetName (dom));
  ok = TRUE;
out:
  virDomainFree (dom);
  return ok;
}

static gboolean
lookup_work (gpointer data, GError **error)
{
  LookupWork *w = data;
  Lookup *l = w->l;

  for (guint i = 0; i < w->conns->len; i++) {
    Conn *c = w->conns->pdata[i];
    gboolean found = FALSE;

    if (l->uri && strcmp (l->uri, c->uri) != 0)
      continue;
    if (!lookup_domain (l, c, &found, error))
      return FALSE;
    if (found)
      return TRUE;
  }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no running domain %s%s%s", l->domain,
               l->uri ? " on " : "", l->uri ? l->uri : "");
  return FALSE;
}

static void
lookup_work_free (gpointer p)
{
  LookupWork *w = p;

  lookup_free (w->l);
  g_ptr_array_unref (w->conns);
  g_free (w);
}

static void
looked_up (ShdLibvirt *lv, gpointer data, const GError *error)
{
  LookupWork *w = data;
  Lookup *l = w->l;
  Conn *c;
  Dom *d;

  if (error) {
    g_task_return_error (l->task, g_error_copy (error));
    return;
  }
  c = lv->conns->pdata[l->conn_index];
  if (c->lv == NULL) {
    g_task_return_new_error (l->task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "shadowd is stopping");
    return;
  }
  d = dom_get (c, l->uuid, l->name);
  if (!l->attach && !g_hash_table_contains (d->disks, l->target)) {
    g_task_return_new_error (l->task, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                             "domain %s has no shadowed disk %s", l->domain, l->target);
    return;
  }
  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "request", "operator: %s domain %s disk %s",
           l->attach ? "attach" : "detach", l->domain, l->target);
  dom_request (d, l->target, l->attach);
  g_task_return_pointer (l->task, json_node_init_string (json_node_alloc (), "requested"),
                         (GDestroyNotify) json_node_unref);
}

static void
attach_detach (gpointer data, JsonObject *req, GTask *task, gboolean attach)
{
  g_autoptr (GTask) owned = task;
  g_autoptr (GError) error = NULL;
  ShdLibvirt *lv = following (data, &error);
  const char *domain = shd_request_string (req, "domain");
  const char *target = shd_request_string (req, "target");
  LookupWork *w;
  Lookup *l;

  if (lv == NULL) {
    g_task_return_error (task, g_steal_pointer (&error));
    return;
  }
  if (domain == NULL || target == NULL) {
    g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                             "\"domain\" and \"target\" are required");
    return;
  }
  if (lv->stopping) {
    g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_CANCELLED, "shadowd is stopping");
    return;
  }
  l = g_new0 (Lookup, 1);
  l->task = g_steal_pointer (&owned);
  l->uri = g_strdup (shd_request_string (req, "uri"));
  l->domain = g_strdup (domain);
  l->target = g_strdup (target);
  l->attach = attach;
  w = g_new0 (LookupWork, 1);
  w->l = l;
  w->conns = g_ptr_array_new_with_free_func ((GDestroyNotify) conn_unref);
  for (guint i = 0; i < lv->conns->len; i++)
    g_ptr_array_add (w->conns, conn_ref (lv->conns->pdata[i]));
  lv_run (lv, lv->calls, lookup_work, looked_up, w, lookup_work_free);
}

static void
cmd_attach (gpointer data, JsonObject *req, GTask *task)
{
  attach_detach (data, req, task, TRUE);
}

static void
cmd_detach (gpointer data, JsonObject *req, GTask *task)
{
  attach_detach (data, req, task, FALSE);
}

static const ShdCommand commands[] = {
  { "libvirt", cmd_libvirt, NULL },
  { "attach", NULL, cmd_attach },
  { "detach", NULL, cmd_detach },
};

void
lv_add_commands (ShdLibvirt *lv, ShdControl *ctl)
{
  shd_control_add_commands (ctl, commands, G_N_ELEMENTS (commands), (GObject *) lv);
}
