/* shadowd: the host agent.  main() and the wiring of the layers: the
 * configuration, the daemon and its disks (daemon/), the control socket
 * with the daemon's and the libvirt layer's commands, the metrics
 * endpoint, the libvirt domains (libvirt/), signals and sd_notify. */
#include "commands.h"
#include "config.h"
#include "control.h"
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "lvdaemon.h"
#include "notify.h"

#include <glib-unix.h>
#include <locale.h>
#include <stdlib.h>

#define DEFAULT_CONFIG "/etc/shadowd/shadowd.conf"

/* GET /metrics */
static char *
render_metrics (gpointer data)
{
  return shd_daemon_render_metrics (SHD_DAEMON (data));
}

static gboolean
on_signal (gpointer data)
{
  shd_log (G_LOG_LEVEL_MESSAGE, NULL, "stop", "stopping");
  shd_notify ("STOPPING=1");
  g_main_loop_quit (data);
  return G_SOURCE_CONTINUE;
}

static void
on_stopped (GObject *src, GAsyncResult *res, gpointer data)
{
  (void) src;
  (void) res;
  g_main_loop_quit (data);
}

/* The configuration file, with --connect's URIs in place of [libvirt] uri */
static ShdConfig *
load_config (const char *path, gboolean given, char **connect, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autofree char *data = NULL;
  gsize len;

  if (connect == NULL)
    return shd_config_load_file (path, error);
  if ((given || g_file_test (path, G_FILE_TEST_EXISTS)) &&
      !g_key_file_load_from_file (kf, path, G_KEY_FILE_KEEP_COMMENTS, error)) {
    g_prefix_error (error, "%s: ", path);
    return NULL;
  }
  g_key_file_set_string_list (kf, "libvirt", "uri", (const char *const *) connect,
                              g_strv_length (connect));
  data = g_key_file_to_data (kf, &len, NULL);
  return shd_config_load_data (data, len, path, error);
}

int
main (int argc, char **argv)
{
  g_autofree char *config_path = NULL;
  g_auto (GStrv) connect = NULL;
  gboolean version = FALSE, dry_run = FALSE, check = FALSE, verbose = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path,
      "Configuration file (default " DEFAULT_CONFIG ")", "FILE" },
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
  g_autoptr (ShdConfig) config = NULL;
  g_autoptr (ShdDaemon) dm = NULL;
  g_autoptr (ShdControl) control = NULL;
  g_autoptr (ShdHttpServer) metrics = NULL;
  g_autoptr (ShdLibvirt) lv = NULL;
  g_autoptr (GMainLoop) loop = NULL;
  gboolean given;
  guint sigterm, sigint;

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
  if (connect && !shd_libvirt_supported ()) {
    g_printerr ("shadowd: --connect: this shadowd was built without libvirt\n");
    return 2;
  }
  given = config_path != NULL;
  if (!given)
    config_path = g_strdup (DEFAULT_CONFIG);
  config = load_config (config_path, given, connect, &error);
  if (config == NULL) {
    g_printerr ("shadowd: %s\n", error->message);
    return 2;
  }
  if (dry_run) {
    config->dry_run = TRUE;
    for (guint i = 0; i < config->disks->len; i++)
      ((ShdDiskConfig *) config->disks->pdata[i])->dry_run = TRUE;
  }
  if (check) {
    g_print ("%s: OK, %u tiers, %u disks, %u libvirt URIs\n", config_path,
             config->tiers->len, config->disks->len,
             config->libvirt_uris ? g_strv_length (config->libvirt_uris) : 0);
    return EXIT_SUCCESS;
  }

  shd_log_setup (verbose);
  loop = g_main_loop_new (NULL, FALSE);
  /* the control socket first: it tells whether another shadowd runs
   * (requests wait for the main loop, when the commands are in) */
  if (*config->control) {
    control = shd_control_new (config->control, &error);
    if (control == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      return EXIT_FAILURE;
    }
  }
  dm = shd_daemon_new (g_steal_pointer (&config), &error);
  if (dm == NULL) {
    g_printerr ("shadowd: %s\n", error->message);
    return EXIT_FAILURE;
  }
  config = NULL;
  if (shd_daemon_get_config (dm)->libvirt_uris) {
    lv = shd_libvirt_new (dm, shd_daemon_get_config (dm)->libvirt_uris, &error);
    if (lv == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      return EXIT_FAILURE;
    }
  }
  if (control) {
    shd_daemon_add_commands (dm, control);
    shd_libvirt_add_commands (lv, control);
  }
  if (shd_daemon_get_config (dm)->metrics_port) {
    metrics = shd_http_server_new (shd_daemon_get_config (dm)->metrics_address,
                                   shd_daemon_get_config (dm)->metrics_port, render_metrics,
                                   G_OBJECT (dm), &error);
    if (metrics == NULL) {
      g_printerr ("shadowd: %s\n", error->message);
      return EXIT_FAILURE;
    }
  }
  shd_daemon_start (dm);
  if (lv)
    shd_libvirt_start (lv);
  sigterm = g_unix_signal_add (SIGTERM, on_signal, loop);
  sigint = g_unix_signal_add (SIGINT, on_signal, loop);
  {
    const ShdConfig *c = shd_daemon_get_config (dm);

    shd_log (G_LOG_LEVEL_MESSAGE, NULL, "start",
             "shadowd %s: %u disks, %u libvirt URIs, interval %g s%s%s%s%s", SHADOWD_VERSION,
             c->disks->len, c->libvirt_uris ? g_strv_length (c->libvirt_uris) : 0,
             c->interval_s, *c->control ? ", control " : "", c->control,
             c->dry_run ? ", dry run" : "",
             shd_daemon_get_history (dm) ? ", history on" : "");
  }
  shd_notify ("READY=1");
  g_main_loop_run (loop);

  /* Shutdown: no new requests; libvirt's work ends (it stops its disks);
   * then the daemon's disks, and the history last. */
  g_source_remove (sigterm);
  g_source_remove (sigint);
  if (control)
    shd_control_close (control);
  if (metrics)
    shd_http_server_close (metrics);
  if (lv) {
    shd_libvirt_shutdown_async (lv, on_stopped, loop);
    g_main_loop_run (loop);
  }
  shd_daemon_shutdown_async (dm, on_stopped, loop);
  g_main_loop_run (loop);
  return EXIT_SUCCESS;
}
