/* shadowctl move: a permanent move of a disk to one tier, through shadowd
 * (daemon/move.h), followed until it ends unless --no-wait. */
#include "ctl.h"

#include "client.h"

#include <math.h>
#include <string.h>

/* The disk's move as status shows it; NULL if shadowd does not answer */
static JsonObject *
move_state (const char *disk)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *req = ctl_request ("status");
  g_autoptr (JsonObject) lv = NULL;
  JsonArray *a;
  JsonNode *n;

  json_object_set_string_member (req, "disk", disk);
  ret = shd_control_call (ctl_control_path, req, ctl_timeout_ms, &error);
  json_object_unref (req);
  if (ret && JSON_NODE_HOLDS_ARRAY (ret) &&
      json_array_get_length (a = json_node_get_array (ret)) > 0 &&
      (n = json_object_get_member (json_array_get_object_element (a, 0), "move")) &&
      JSON_NODE_HOLDS_OBJECT (n))
    return json_object_ref (json_node_get_object (n));
  /* a libvirt domain's disk moves through libvirt: its libvirt state has
   * the move, attached or not */
  lv = ctl_libvirt_state (disk);
  if (lv && (n = json_object_get_member (lv, "move")) && JSON_NODE_HOLDS_OBJECT (n))
    return json_object_ref (json_node_get_object (n));
  return NULL;
}

static void
print_progress (const char *disk, JsonObject *m)
{
  double done = ctl_num (m, "done-bytes"), total = ctl_num (m, "total-bytes");
  g_autofree char *eta = ctl_fmt_num (ctl_num (m, "eta-s"), "%.0f s");
  g_autofree char *rate = ctl_fmt_num (ctl_num (m, "rate-bps") / 1048576, "%.1f MiB/s");

  if (isfinite (done) && isfinite (total) && total > 0)
    g_print ("%s: %s to %s: %.0f of %.0f MiB (%.0f%%), %s, ETA %s\n", disk,
             ctl_str (m, "state", "?"), ctl_str (m, "tier", "?"), done / 1048576,
             total / 1048576, 100 * done / total, rate, eta);
  else
    g_print ("%s: %s to %s\n", disk, ctl_str (m, "state", "?"), ctl_str (m, "tier", "?"));
}

int
ctl_cmd_move (const CtlCommand *cmd, int argc, char **argv)
{
  gboolean json = FALSE, verify = FALSE, abort_move = FALSE, no_wait = FALSE;
  gint64 verify_speed = 0, copy_speed = 0;
  char *keep_as = NULL;
  GOptionEntry entries[] = {
    { "verify", 0, 0, G_OPTION_ARG_NONE, &verify,
      "Compare every chunk of the new copy with the old one before the switch", NULL },
    { "verify-speed", 0, 0, G_OPTION_ARG_INT64, &verify_speed,
      "Bytes per second the verify reads from each side (default 64 MiB/s)", "BYTES" },
    { "copy-speed", 0, 0, G_OPTION_ARG_INT64, &copy_speed,
      "Bytes per second libvirt's copy may take (a libvirt domain's disk; default: no "
      "limit)", "BYTES" },
    { "keep-as", 0, 0, G_OPTION_ARG_FILENAME, &keep_as,
      "Rename the old image to PATH instead of deleting it", "PATH" },
    { "abort", 0, 0, G_OPTION_ARG_NONE, &abort_move,
      "Abort the running move (before its switch)", NULL },
    { "no-wait", 0, 0, G_OPTION_ARG_NONE, &no_wait, "Return once requested", NULL },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autofree char *keep_as_owned = NULL;
  g_autoptr (JsonNode) ret = NULL;
  const char *disk, *last_state = "";
  JsonObject *req;
  gint64 last_print = 0;
  int rc;

  (void) cmd;
  if (!ctl_parse_opts (&argc, &argv, "DISK TIER | DISK --abort - move the disk to TIER for "
                       "good and retire its other tiers", entries, 1, 2))
    return EXIT_USAGE;
  keep_as_owned = keep_as;
  if (abort_move != (argc == 2) || verify_speed < 0 || copy_speed < 0) {
    g_printerr ("%s: usage: %s move DISK TIER [--verify] [--verify-speed BYTES] "
                "[--copy-speed BYTES] [--keep-as PATH] [--no-wait] [--json]\n"
                "       %s move DISK --abort\n", ctl_prog, ctl_prog, ctl_prog);
    return EXIT_USAGE;
  }
  disk = argv[1];
  req = ctl_request ("move");
  json_object_set_string_member (req, "disk", disk);
  if (abort_move) {
    json_object_set_boolean_member (req, "abort", TRUE);
  } else {
    json_object_set_string_member (req, "tier", argv[2]);
    json_object_set_boolean_member (req, "verify", verify);
    if (verify_speed)
      json_object_set_int_member (req, "verify-speed", verify_speed);
    if (copy_speed)
      json_object_set_int_member (req, "copy-speed", copy_speed);
    if (keep_as) {
      g_autofree char *abs = g_canonicalize_filename (keep_as, NULL);

      json_object_set_string_member (req, "keep-as", abs);
    }
  }
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  if (abort_move || no_wait) {
    if (json)
      ctl_print_json (ret);
    else
      g_print ("%s: move to %s %s\n", disk,
               ctl_str (json_node_get_object (ret), "tier", "?"),
               abort_move ? "aborted" : "requested");
    return EXIT_SUCCESS;
  }
  /* follow it: a line per state, and progress every 5 s */
  for (;;) {
    g_autoptr (JsonObject) m = move_state (disk);
    const char *state;
    gint64 now = g_get_monotonic_time ();

    if (m == NULL) {
      g_printerr ("%s: %s: shadowd no longer reports the move\n", ctl_prog, disk);
      return EXIT_FAILURE;
    }
    state = ctl_str (m, "state", "?");
    if (strcmp (state, "done") == 0 || strcmp (state, "aborted") == 0 ||
        strcmp (state, "failed") == 0) {
      if (json) {
        g_autoptr (JsonNode) n = json_node_new (JSON_NODE_OBJECT);

        json_node_set_object (n, m);
        ctl_print_json (n);
      } else if (strcmp (state, "done") == 0) {
        g_autofree char *copy = ctl_fmt_num (ctl_num (m, "copy-s"), "%.1f s");
        g_autofree char *check = ctl_fmt_num (ctl_num (m, "verify-s"), "%.1f s");

        g_print ("%s: moved to %s in %.1f s (copy %s, verify %s)\n", disk,
                 ctl_str (m, "tier", "?"), ctl_num (m, "elapsed-s"), copy, check);
        /* what became of the old image (a libvirt move says it here) */
        if (ctl_str (m, "reason", NULL))
          g_print ("%s: %s\n", disk, ctl_str (m, "reason", ""));
      } else {
        g_printerr ("%s: move to %s %s: %s\n", disk, ctl_str (m, "tier", "?"), state,
                    ctl_str (m, "reason", "?"));
      }
      return strcmp (state, "done") == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
    }
    if (!json && (strcmp (state, last_state) != 0 || now - last_print > 5 * G_USEC_PER_SEC)) {
      print_progress (disk, m);
      last_print = now;
    }
    last_state = g_intern_string (state);
    g_usleep (250 * 1000);
  }
}
