/* The daemon's control commands; see commands.h. */
#include "commands.h"

#include "move.h"

#include <string.h>

const char *
shd_request_string (JsonObject *req, const char *name)
{
  JsonNode *n = json_object_get_member (req, name);

  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING ?
         json_node_get_string (n) : NULL;
}

double
shd_request_number (JsonObject *req, const char *name, double dflt)
{
  JsonNode *n = json_object_get_member (req, name);

  if (n == NULL || !JSON_NODE_HOLDS_VALUE (n))
    return dflt;
  if (json_node_get_value_type (n) == G_TYPE_INT64)
    return json_node_get_int (n);
  if (json_node_get_value_type (n) == G_TYPE_DOUBLE)
    return json_node_get_double (n);
  return dflt;
}

/* The disks a request is about: "disk" if given, else all (or an error
 * when required). */
static GPtrArray *
selected (ShdDaemon *dm, JsonObject *req, gboolean required, GError **error)
{
  const char *name = shd_request_string (req, "disk");
  g_autoptr (GPtrArray) out = g_ptr_array_new_with_free_func (g_object_unref);

  if (name) {
    ShdDisk *d = shd_daemon_find_disk (dm, name, error);

    if (d == NULL)
      return NULL;
    g_ptr_array_add (out, g_object_ref (d));
  } else if (required) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"disk\" is required");
    return NULL;
  } else {
    GPtrArray *all = shd_daemon_get_disks (dm);

    for (guint i = 0; i < all->len; i++)
      g_ptr_array_add (out, g_object_ref (all->pdata[i]));
  }
  return g_steal_pointer (&out);
}

static JsonNode *
array_node (JsonArray *a)
{
  JsonNode *n = json_node_new (JSON_NODE_ARRAY);

  json_node_take_array (n, a);
  return n;
}

/* Every disk's decisions kept in memory, in one array */
static JsonNode *
memory_decisions (GPtrArray *disks, guint limit)
{
  JsonArray *a = json_array_new ();

  for (guint i = 0; i < disks->len; i++) {
    g_autoptr (JsonNode) d = shd_disk_decisions (disks->pdata[i], limit);
    JsonArray *da = json_node_get_array (d);

    for (guint j = 0; j < json_array_get_length (da); j++)
      json_array_add_element (a, json_array_dup_element (da, j));
  }
  return array_node (a);
}

static JsonNode *
cmd_status (gpointer data, JsonObject *req, GError **error)
{
  g_autoptr (GPtrArray) disks = selected (data, req, FALSE, error);
  JsonArray *a;

  if (disks == NULL)
    return NULL;
  a = json_array_new ();
  for (guint i = 0; i < disks->len; i++)
    json_array_add_element (a, shd_disk_status (disks->pdata[i]));
  return array_node (a);
}

static const struct {
  const char *name;
  ShdHistoryResolution res;
} resolutions[] = {
  { "auto", SHD_HISTORY_AUTO },
  { "full", SHD_HISTORY_FULL },
  { "minute", SHD_HISTORY_MINUTE },
};

static gboolean
parse_resolution (const char *s, ShdHistoryResolution *out, GError **error)
{
  if (s == NULL)
    s = "auto";
  for (guint i = 0; i < G_N_ELEMENTS (resolutions); i++)
    if (strcmp (s, resolutions[i].name) == 0) {
      *out = resolutions[i].res;
      return TRUE;
    }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
               "\"resolution\" is auto, full or minute");
  return FALSE;
}

static JsonNode *
cmd_history (gpointer data, JsonObject *req, GError **error)
{
  ShdDaemon *dm = data;
  ShdHistory *history = shd_daemon_get_history (dm);
  const char *disk = shd_request_string (req, "disk");
  const char *what = shd_request_string (req, "what");
  double since_s = shd_request_number (req, "since", 3600);
  double limit = shd_request_number (req, "limit", 0);
  gint64 since_ms = g_get_real_time () / 1000 - (gint64) (since_s * 1000);
  ShdHistoryResolution r;

  if (disk && shd_daemon_find_disk (dm, disk, error) == NULL)
    return NULL;
  if (limit < 0 || since_s < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"since\" and \"limit\" must not be negative");
    return NULL;
  }
  if (!parse_resolution (shd_request_string (req, "resolution"), &r, error))
    return NULL;
  if (what == NULL)
    what = "samples";
  if (strcmp (what, "decisions") == 0) {
    g_autoptr (GPtrArray) disks = NULL;

    if (history)
      return shd_history_decisions (history, disk, since_ms, (guint) limit, error);
    /* no database: what is still in memory */
    disks = selected (dm, req, FALSE, error);
    return disks ? memory_decisions (disks, (guint) limit) : NULL;
  }
  if (strcmp (what, "samples") != 0 && strcmp (what, "tiers") != 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"what\" is samples, decisions or tiers");
    return NULL;
  }
  if (history == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "no history: [shadowd] state is empty");
    return NULL;
  }
  if (strcmp (what, "tiers") == 0)
    return shd_history_tier_samples (history, disk, since_ms, (guint) limit, error);
  return shd_history_samples (history, disk, since_ms, G_MAXINT64, r, (guint) limit, error);
}

static JsonNode *
cmd_decisions (gpointer data, JsonObject *req, GError **error)
{
  g_autoptr (GPtrArray) disks = selected (data, req, FALSE, error);

  return disks ? memory_decisions (disks, (guint) shd_request_number (req, "limit", 0)) :
         NULL;
}

static JsonNode *
cmd_forecast (gpointer data, JsonObject *req, GError **error)
{
  double steps = shd_request_number (req, "steps", 0);
  g_autoptr (GPtrArray) disks = selected (data, req, FALSE, error);
  JsonArray *a;

  if (disks == NULL)
    return NULL;
  a = json_array_new ();
  for (guint i = 0; i < disks->len; i++)
    json_array_add_element (a, shd_disk_forecast (disks->pdata[i],
                                                  steps > 0 ? (guint) steps : 0));
  return array_node (a);
}

/* The disk and tier of prewarm and switch */
static ShdDisk *
disk_and_tier (ShdDaemon *dm, JsonObject *req, const char **tier, GError **error)
{
  const char *name = shd_request_string (req, "disk");

  if (name == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"disk\" is required");
    return NULL;
  }
  *tier = shd_request_string (req, "tier");
  if (shd_daemon_find_disk (dm, name, error) == NULL)
    return NULL;
  if (*tier == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"tier\" is required");
    return NULL;
  }
  return shd_daemon_find_disk (dm, name, error);
}

static JsonNode *
cmd_prewarm (gpointer data, JsonObject *req, GError **error)
{
  const char *tier;
  ShdDisk *disk = disk_and_tier (data, req, &tier, error);

  return disk ? shd_disk_prewarm (disk, tier, error) : NULL;
}

static JsonNode *
cmd_switch (gpointer data, JsonObject *req, GError **error)
{
  const char *tier;
  ShdDisk *disk = disk_and_tier (data, req, &tier, error);

  if (disk == NULL || !shd_disk_request_switch (disk, tier, error))
    return NULL;
  return json_node_init_string (json_node_alloc (), "requested");
}

/* {"disk", "tier", "verify", "verify-speed", "keep-as"} or {"disk", "abort"};
 * a libvirt domain's disk also "copy-speed" */
static JsonNode *
cmd_move (gpointer data, JsonObject *req, GError **error)
{
  const char *name = shd_request_string (req, "disk");
  JsonNode *abort = json_object_get_member (req, "abort");
  JsonNode *verify = json_object_get_member (req, "verify");
  double speed = shd_request_number (req, "verify-speed", 0);
  ShdMoveRequest mr = { 0 };
  JsonNode *handled;
  ShdDisk *disk;

  if (name == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"disk\" is required");
    return NULL;
  }
  /* a libvirt domain's disk moves through libvirt (lvmove.c) */
  if (shd_daemon_handle_move (data, req, &handled, error))
    return handled;
  if ((disk = shd_daemon_find_disk (data, name, error)) == NULL)
    return NULL;
  if (abort && JSON_NODE_HOLDS_VALUE (abort) && json_node_get_boolean (abort))
    return shd_disk_move_abort (disk, error);
  mr.tier = shd_request_string (req, "tier");
  mr.verify = verify && JSON_NODE_HOLDS_VALUE (verify) && json_node_get_boolean (verify);
  mr.keep_as = shd_request_string (req, "keep-as");
  if (mr.tier == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"tier\" is required");
    return NULL;
  }
  if (!(speed >= 0) || speed > 1e15) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"verify-speed\" is a number of bytes per second");
    return NULL;
  }
  mr.verify_speed = (guint64) speed;
  if (json_object_has_member (req, "copy-speed")) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "--copy-speed is for a libvirt domain's disk: the copy of disk %s runs at "
                 "its prewarm-speed", name);
    return NULL;
  }
  return shd_disk_move (disk, &mr, error);
}

static JsonNode *
set_paused (ShdDaemon *dm, JsonObject *req, gboolean paused, GError **error)
{
  g_autoptr (GPtrArray) disks = selected (dm, req, FALSE, error);
  JsonArray *a;

  if (disks == NULL)
    return NULL;
  a = json_array_new ();
  for (guint i = 0; i < disks->len; i++) {
    shd_disk_set_paused (disks->pdata[i], paused);
    json_array_add_string_element (a, shd_disk_name (disks->pdata[i]));
  }
  return array_node (a);
}

static JsonNode *
cmd_pause (gpointer data, JsonObject *req, GError **error)
{
  return set_paused (data, req, TRUE, error);
}

static JsonNode *
cmd_resume (gpointer data, JsonObject *req, GError **error)
{
  return set_paused (data, req, FALSE, error);
}

/* Past load for the seasonal forecast: {"disk", "bucket-s", "buckets":
 * [[index, IOPS], ...]} (shadowctl import sends a file in parts) */
static JsonNode *
cmd_import (gpointer data, JsonObject *req, GError **error)
{
  const char *name = shd_request_string (req, "disk");
  double bucket_s = shd_request_number (req, "bucket-s", 0);
  JsonNode *b = json_object_get_member (req, "buckets");
  ShdDisk *disk;

  if (name == NULL || !(bucket_s > 0) || b == NULL || !JSON_NODE_HOLDS_ARRAY (b)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"disk\", \"bucket-s\" and \"buckets\" are required");
    return NULL;
  }
  disk = shd_daemon_find_disk (data, name, error);
  return disk ? shd_disk_import_buckets (disk, bucket_s, json_node_get_array (b), error) : NULL;
}

static JsonNode *
cmd_version (gpointer data, JsonObject *req, GError **error)
{
  (void) data;
  (void) req;
  (void) error;
  return json_node_init_string (json_node_alloc (), SHADOWD_VERSION);
}

static const ShdCommand commands[] = {
  { "status", cmd_status, NULL },
  { "history", cmd_history, NULL },
  { "decisions", cmd_decisions, NULL },
  { "forecast", cmd_forecast, NULL },
  { "prewarm", cmd_prewarm, NULL },
  { "switch", cmd_switch, NULL },
  { "move", cmd_move, NULL },
  { "pause", cmd_pause, NULL },
  { "resume", cmd_resume, NULL },
  { "import", cmd_import, NULL },
  { "version", cmd_version, NULL },
};

void
shd_daemon_add_commands (ShdDaemon *dm, ShdControl *ctl)
{
  shd_control_add_commands (ctl, commands, G_N_ELEMENTS (commands), G_OBJECT (dm));
}
