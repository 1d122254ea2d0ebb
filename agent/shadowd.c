/* shadowd: the host agent.  The daemon loop (config, collector, policy,
 * control socket) is assembled from the agent's modules in later work;
 * for now the program only identifies itself. */
#include <glib.h>
#include <locale.h>
#include <stdlib.h>

int
main (int argc, char **argv)
{
  g_autofree char *config = NULL;
  gboolean version = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config, "Configuration file", "FILE" },
    { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version", NULL },
    { NULL }
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- shadow tiering agent");
  g_autoptr (GError) error = NULL;

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
  g_printerr ("shadowd: the daemon loop is not implemented yet\n");
  return EXIT_FAILURE;
}
