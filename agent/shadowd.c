/* shadowd: the host agent.  Reads its configuration, follows each disk
 * over QMP, decides and acts per disk (disk.c, policy.c), keeps a history
 * (history.c), answers shadowctl on the control socket and Prometheus on
 * the metrics port (control.c). */
#include "config.h"
#include "control.h"
#include "disk.h"
#include "history.h"
#include "log.h"
#ifdef HAVE_LIBVIRT
#include "libvirt.h"
#endif

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  ShdConfig *config;
  ShdHistory *history;
  GPtrArray *disks;             /* ShdDisk */
  ShdControl *control;
  ShdMetrics *metrics;
#ifdef HAVE_LIBVIRT
  ShdLibvirt *libvirt;
#endif
  GMainLoop *loop;
  guint flush_timer, prune_timer;
  gint64 started_us;
} Daemon;

/* ---- systemd readiness, without libsystemd ---- */

static void
sd_notify_msg (const char *msg)
{
  const char *path = g_getenv ("NOTIFY_SOCKET");
  g_autoptr (GSocket) sock = NULL;
  g_autoptr (GSocketAddress) addr = NULL;

  if (path == NULL || *path == '\0')
    return;
  sock = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM,
                       G_SOCKET_PROTOCOL_DEFAULT, NULL);
  if (sock == NULL)
    return;
  if (path[0] == '@')
    addr = g_unix_socket_address_new_with_type (path + 1, -1,
                                                G_UNIX_SOCKET_ADDRESS_ABSTRACT);
  else
    addr = g_unix_socket_address_new (path);
  g_socket_send_to (sock, addr, msg, strlen (msg), NULL, NULL);
}

/* ---- control commands ---- */

static ShdDisk *
find_disk (Daemon *dm, const char *name, GError **error)
{
  for (guint i = 0; i < dm->disks->len; i++)
    if (strcmp (shd_disk_name (dm->disks->pdata[i]), name) == 0)
      return dm->disks->pdata[i];
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no disk '%s'", name);
  return NULL;
}

static const char *
opt_str (JsonObject *req, const char *name)
{
  JsonNode *n = json_object_get_member (req, name);

  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING ?
         json_node_get_string (n) : NULL;
}

static double
opt_num (JsonObject *req, const char *name, double dflt)
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

/* The disks a request is about: "disk" if given, else all. */
static GPtrArray *
selected (Daemon *dm, JsonObject *req, gboolean required, GError **error)
{
  const char *name = opt_str (req, "disk");
  GPtrArray *out = g_ptr_array_new ();

  if (name) {
    ShdDisk *d = find_disk (dm, name, error);

    if (d == NULL) {
      g_ptr_array_unref (out);
      return NULL;
    }
    g_ptr_array_add (out, d);
  } else if (required) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"disk\" is required");
    g_ptr_array_unref (out);
    return NULL;
  } else {
    for (guint i = 0; i < dm->disks->len; i++)
      g_ptr_array_add (out, dm->disks->pdata[i]);
  }
  return out;
}

static JsonNode *
array_of (GPtrArray *disks, JsonNode *(*f) (ShdDisk *))
{
  JsonArray *a = json_array_new ();
  JsonNode *n = json_node_new (JSON_NODE_ARRAY);

  for (guint i = 0; i < disks->len; i++)
    json_array_add_element (a, f (disks->pdata[i]));
  json_node_take_array (n, a);
  return n;
}

static JsonNode *
names_of (GPtrArray *disks)
{
  JsonArray *a = json_array_new ();
  JsonNode *n = json_node_new (JSON_NODE_ARRAY);

  for (guint i = 0; i < disks->len; i++)
    json_array_add_string_element (a, shd_disk_name (disks->pdata[i]));
  json_node_take_array (n, a);
  return n;
}

static JsonNode *
cmd_history (Daemon *dm, JsonObject *req, GError **error)
{
  const char *disk = opt_str (req, "disk");
  const char *what = opt_str (req, "what");
  const char *res = opt_str (req, "resolution");
  double since_s = opt_num (req, "since", 3600);
  double limit = opt_num (req, "limit", 0);
  gint64 now_ms = g_get_real_time () / 1000;
  gint64 since_ms = now_ms - (gint64) (since_s * 1000);
  ShdHistoryResolution r = SHD_HISTORY_AUTO;

  if (disk && find_disk (dm, disk, error) == NULL)
    return NULL;
  if (limit < 0 || since_s < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"since\" and \"limit\" must not be negative");
    return NULL;
  }
  if (res == NULL || strcmp (res, "auto") == 0)
    r = SHD_HISTORY_AUTO;
  else if (strcmp (res, "full") == 0)
    r = SHD_HISTORY_FULL;
  else if (strcmp (res, "minute") == 0)
    r = SHD_HISTORY_MINUTE;
  else {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"resolution\" is auto, full or minute");
    return NULL;
  }
  if (what && strcmp (what, "decisions") == 0) {
    if (dm->history)
      return shd_history_decisions (dm->history, disk, since_ms, (guint) limit, error);
    /* no database: what is still in memory */
    {
      g_autoptr (GPtrArray) disks = selected (dm, req, FALSE, error);
      JsonArray *a = json_array_new ();
      JsonNode *n = json_node_new (JSON_NODE_ARRAY);

      for (guint i = 0; i < disks->len; i++) {
        g_autoptr (JsonNode) d = shd_disk_decisions (disks->pdata[i], (guint) limit);
        JsonArray *da = json_node_get_array (d);

        for (guint j = 0; j < json_array_get_length (da); j++)
          json_array_add_element (a, json_array_dup_element (da, j));
      }
      json_node_take_array (n, a);
      return n;
    }
  }
  if (what && strcmp (what, "samples") != 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "\"what\" is samples or decisions");
    return NULL;
  }
  if (dm->history == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "no history: [shadowd] state is empty");
    return NULL;
  }
  return shd_history_samples (dm->history, disk, since_ms, G_MAXINT64, r, (guint) limit,
                              error);
}

static JsonNode *
forecast_default (ShdDisk *d)
{
  return shd_disk_forecast (d, 0);
}

static JsonNode *
handle (JsonObject *req, gpointer data, GError **error)
{
  Daemon *dm = data;
  const char *cmd = opt_str (req, "command");
  g_autoptr (GPtrArray) disks = NULL;

  if (cmd == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "a request needs a \"command\"");
    return NULL;
  }
  if (strcmp (cmd, "status") == 0) {
    disks = selected (dm, req, FALSE, error);
    return disks ? array_of (disks, shd_disk_status) : NULL;
  }
  if (strcmp (cmd, "history") == 0)
    return cmd_history (dm, req, error);
  if (strcmp (cmd, "decisions") == 0) {
    JsonArray *a;
    JsonNode *n;

    disks = selected (dm, req, FALSE, error);
    if (disks == NULL)
      return NULL;
    a = json_array_new ();
    for (guint i = 0; i < disks->len; i++) {
      g_autoptr (JsonNode) d = shd_disk_decisions (disks->pdata[i],
                                                   (guint) opt_num (req, "limit", 0));
      JsonArray *da = json_node_get_array (d);

      for (guint j = 0; j < json_array_get_length (da); j++)
        json_array_add_element (a, json_array_dup_element (da, j));
    }
    n = json_node_new (JSON_NODE_ARRAY);
    json_node_take_array (n, a);
    return n;
  }
  if (strcmp (cmd, "forecast") == 0) {
    double steps = opt_num (req, "steps", 0);

    disks = selected (dm, req, FALSE, error);
    if (disks == NULL)
      return NULL;
    if (steps > 0) {
      JsonArray *a = json_array_new ();
      JsonNode *n = json_node_new (JSON_NODE_ARRAY);

      for (guint i = 0; i < disks->len; i++)
        json_array_add_element (a, shd_disk_forecast (disks->pdata[i], (guint) steps));
      json_node_take_array (n, a);
      return n;
    }
    return array_of (disks, forecast_default);
  }
  if (strcmp (cmd, "switch") == 0 || strcmp (cmd, "prewarm") == 0) {
    const char *tier = opt_str (req, "tier");

    disks = selected (dm, req, TRUE, error);
    if (disks == NULL)
      return NULL;
    if (tier == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "\"tier\" is required");
      return NULL;
    }
    if (strcmp (cmd, "prewarm") == 0)
      return shd_disk_prewarm (disks->pdata[0], tier, error);
    if (!shd_disk_request_switch (disks->pdata[0], tier, error))
      return NULL;
    return json_node_init_string (json_node_alloc (), "requested");
  }
  if (strcmp (cmd, "pause") == 0 || strcmp (cmd, "resume") == 0) {
    disks = selected (dm, req, FALSE, error);
    if (disks == NULL)
      return NULL;
    for (guint i = 0; i < disks->len; i++)
      shd_disk_set_paused (disks->pdata[i], strcmp (cmd, "pause") == 0);
    return names_of (disks);
  }
  if (strcmp (cmd, "version") == 0)
    return json_node_init_string (json_node_alloc (), SHADOWD_VERSION);
  if (strcmp (cmd, "libvirt") == 0 || strcmp (cmd, "attach") == 0 ||
      strcmp (cmd, "detach") == 0) {
#ifdef HAVE_LIBVIRT
    const char *domain = opt_str (req, "domain"), *target = opt_str (req, "target");

    if (dm->libvirt == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "shadowd follows no libvirt connection (--connect, [libvirt] uri)");
      return NULL;
    }
    if (strcmp (cmd, "libvirt") == 0)
      return shd_libvirt_status (dm->libvirt, opt_str (req, "disk"));
    if (domain == NULL || target == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "\"domain\" and \"target\" are required");
      return NULL;
    }
    if (!shd_libvirt_request (dm->libvirt, opt_str (req, "uri"), domain, target,
                              strcmp (cmd, "attach") == 0, error))
      return NULL;
    return json_node_init_string (json_node_alloc (), "requested");
#else
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "this shadowd was built without libvirt");
    return NULL;
#endif
  }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
               "unknown command '%s' (status, history, decisions, forecast, prewarm, "
               "switch, pause, resume, version, libvirt, attach, detach)", cmd);
  return NULL;
}

/* ---- metrics ---- */

static void
metrics (GString *out, gpointer data)
{
  Daemon *dm = data;

  g_string_append_printf (out, "# shadowd %s\n", SHADOWD_VERSION);
  g_string_append_printf (out, "shadowd_up 1\nshadowd_disks %u\n", dm->disks->len);
  g_string_append_printf (out, "shadowd_uptime_seconds %.3f\n",
                          (g_get_monotonic_time () - dm->started_us) / 1e6);
  g_string_append_printf (out, "shadowd_interval_seconds %g\n", dm->config->interval_s);
  for (guint i = 0; i < dm->disks->len; i++)
    shd_disk_metrics (dm->disks->pdata[i], out);
}

/* ---- the loop ---- */

static gboolean
on_flush (gpointer data)
{
  Daemon *dm = data;
  g_autoptr (GError) error = NULL;

  if (!shd_history_flush (dm->history, &error))
    shd_log (G_LOG_LEVEL_WARNING, NULL, "history", "%s", error->message);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_prune (gpointer data)
{
  Daemon *dm = data;
  g_autoptr (GError) error = NULL;
  gint64 n = shd_history_prune (dm->history, g_get_real_time () / 1000, &error);

  if (n < 0)
    shd_log (G_LOG_LEVEL_WARNING, NULL, "history", "%s", error->message);
  else if (n > 0)
    shd_log (G_LOG_LEVEL_DEBUG, NULL, "history", "pruned %" G_GINT64_FORMAT " rows", n);
  return G_SOURCE_CONTINUE;
}

static gboolean
on_signal (gpointer data)
{
  Daemon *dm = data;

  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "stop", "stopping");
  sd_notify_msg ("STOPPING=1");
  g_main_loop_quit (dm->loop);
  return G_SOURCE_CONTINUE;
}

static void
daemon_clear (Daemon *dm)
{
  g_clear_handle_id (&dm->flush_timer, g_source_remove);
  g_clear_handle_id (&dm->prune_timer, g_source_remove);
  g_clear_pointer (&dm->control, shd_control_free);
#ifdef HAVE_LIBVIRT
  /* its disks are in dm->disks: first */
  g_clear_pointer (&dm->libvirt, shd_libvirt_free);
#endif
  g_clear_pointer (&dm->metrics, shd_metrics_free);
  g_clear_pointer (&dm->disks, g_ptr_array_unref);
  /* let cancelled operations finish before their owners go */
  for (int i = 0; i < 100 && g_main_context_iteration (NULL, FALSE); i++)
    ;
  g_clear_pointer (&dm->history, shd_history_close);
  g_clear_pointer (&dm->loop, g_main_loop_unref);
  g_clear_pointer (&dm->config, shd_config_free);
}

int
main (int argc, char **argv)
{
  g_autofree char *config_path = NULL;
  g_auto (GStrv) connect = NULL;
  gboolean version = FALSE, dry_run = FALSE, check = FALSE, verbose = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path,
      "Configuration file (default /etc/shadowd/shadowd.conf)", "FILE" },
    { "connect", 0, 0, G_OPTION_ARG_STRING_ARRAY, &connect,
      "Follow the domains of this libvirt URI (repeatable; replaces [libvirt] uri)", "URI" },
    { "dry-run", 'n', 0, G_OPTION_ARG_NONE, &dry_run,
      "Decide and log, never switch (every disk)", NULL },
    { "check", 0, 0, G_OPTION_ARG_NONE, &check,
      "Validate the configuration and exit", NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &verbose, "Log every decision", NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- shadow tiering agent");
  g_autoptr (GError) error = NULL;
  Daemon dm = { 0 };

  setlocale (LC_ALL, "");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    g_printerr ("shadowd: %s\n", error->message);
    return 2;
  }
  if (version) {
    g_print ("shadowd %s\n", SHADOWD_VERSION);
    return EXIT_SUCCESS;
  }
  if (argc > 1) {
    g_printerr ("shadowd: unexpected argument '%s'\n", argv[1]);
    return 2;
  }
  if (connect) {
#ifdef HAVE_LIBVIRT
    /* the file's settings (if any) with the URIs of the command line */
    g_autoptr (GKeyFile) kf = g_key_file_new ();
    g_autofree char *data = NULL;
    gsize len;
    gboolean given = config_path != NULL;

    if (!given)
      config_path = g_strdup ("/etc/shadowd/shadowd.conf");
    if ((given || g_file_test (config_path, G_FILE_TEST_EXISTS)) &&
        !g_key_file_load_from_file (kf, config_path, G_KEY_FILE_KEEP_COMMENTS, &error)) {
      g_printerr ("shadowd: %s: %s\n", config_path, error->message);
      return 2;
    }
    g_key_file_set_string_list (kf, "libvirt", "uri", (const char *const *) connect,
                                g_strv_length (connect));
    data = g_key_file_to_data (kf, &len, NULL);
    dm.config = shd_config_load_data (data, len, config_path, &error);
#else
    g_printerr ("shadowd: --connect: this shadowd was built without libvirt\n");
    return 2;
#endif
  } else {
    if (config_path == NULL)
      config_path = g_strdup ("/etc/shadowd/shadowd.conf");
    dm.config = shd_config_load_file (config_path, &error);
  }
  if (dm.config == NULL) {
    g_printerr ("shadowd: %s\n", error->message);
    return 2;
  }
  if (dry_run) {
    dm.config->dry_run = TRUE;
    for (guint i = 0; i < dm.config->disks->len; i++)
      ((ShdDiskConfig *) dm.config->disks->pdata[i])->dry_run = TRUE;
  }
  if (check) {
    g_print ("%s: OK, %u tiers, %u disks, %u libvirt URIs\n", config_path,
             dm.config->tiers->len, dm.config->disks->len,
             dm.config->libvirt_uris ? g_strv_length (dm.config->libvirt_uris) : 0);
    shd_config_free (dm.config);
    return EXIT_SUCCESS;
  }

  shd_log_setup (verbose);
  dm.started_us = g_get_monotonic_time ();
  dm.loop = g_main_loop_new (NULL, FALSE);
  if (*dm.config->state) {
    g_autofree char *dir = g_path_get_dirname (dm.config->state);

    g_mkdir_with_parents (dir, 0750);
    dm.history = shd_history_open (dm.config->state, dm.config->history_full_hours,
                                   dm.config->history_days, &error);
    if (dm.history == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      daemon_clear (&dm);
      return EXIT_FAILURE;
    }
    on_prune (&dm);
    dm.flush_timer = g_timeout_add ((guint) MAX (dm.config->interval_s * 1000, 200),
                                    on_flush, &dm);
    dm.prune_timer = g_timeout_add_seconds (600, on_prune, &dm);
  }
  dm.disks = g_ptr_array_new_with_free_func ((GDestroyNotify) shd_disk_free);
  for (guint i = 0; i < dm.config->disks->len; i++) {
    ShdDisk *disk = shd_disk_new (dm.config, dm.config->disks->pdata[i], dm.history, &error);

    if (disk == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      daemon_clear (&dm);
      return EXIT_FAILURE;
    }
    g_ptr_array_add (dm.disks, disk);
  }
  if (*dm.config->control) {
    dm.control = shd_control_new (dm.config->control, handle, &dm, &error);
    if (dm.control == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      daemon_clear (&dm);
      return EXIT_FAILURE;
    }
  }
  if (dm.config->metrics_port) {
    dm.metrics = shd_metrics_new (dm.config->metrics_address, dm.config->metrics_port,
                                  metrics, &dm, &error);
    if (dm.metrics == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      daemon_clear (&dm);
      return EXIT_FAILURE;
    }
  }
  for (guint i = 0; i < dm.disks->len; i++)
    shd_disk_start (dm.disks->pdata[i]);
  if (dm.config->libvirt_uris) {
#ifdef HAVE_LIBVIRT
    dm.libvirt = shd_libvirt_new (dm.config, dm.history, dm.config->libvirt_uris, dm.disks,
                                  &error);
    if (dm.libvirt == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      daemon_clear (&dm);
      return EXIT_FAILURE;
    }
    shd_libvirt_start (dm.libvirt);
#else
    g_printerr ("shadowd: [libvirt]: this shadowd was built without libvirt\n");
    daemon_clear (&dm);
    return EXIT_FAILURE;
#endif
  }
  g_unix_signal_add (SIGTERM, on_signal, &dm);
  g_unix_signal_add (SIGINT, on_signal, &dm);
  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "start",
           "shadowd %s: %u disks, %u libvirt URIs, interval %g s%s%s%s%s", SHADOWD_VERSION,
           dm.config->disks->len,
           dm.config->libvirt_uris ? g_strv_length (dm.config->libvirt_uris) : 0,
           dm.config->interval_s,
           *dm.config->control ? ", control " : "", dm.config->control,
           dm.config->dry_run ? ", dry run" : "", dm.history ? ", history on" : "");
  sd_notify_msg ("READY=1");
  g_main_loop_run (dm.loop);
  daemon_clear (&dm);
  return EXIT_SUCCESS;
}
