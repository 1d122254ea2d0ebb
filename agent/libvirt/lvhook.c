/* shadowtier-libvirt-hook: libvirt's qemu hook for write-back disks
 * (docs/libvirt.md, "Write-back").
 *
 *   /etc/libvirt/hooks/qemu DOMAIN OPERATION SUB-OPERATION EXTRA < domain XML
 *
 * prepare: before QEMU opens any image, every write-back disk's own image
 *   is settled: a qemu-storage-daemon opens the shadow exactly as the domain
 *   had it (image, tier images, metadata image) with the image as active
 *   child, waits until the image holds every chunk, and closes it cleanly.
 *   If that cannot be done, the start fails: QEMU must not open a stale
 *   image.
 * release: the same, best effort, so that a stopped domain's image is
 *   complete as soon as QEMU is gone.
 * migrate: refused for a domain with a write-back disk.
 *
 * libvirt forbids hooks to call libvirt: this reads the XML on stdin only. */
#include "blockgraph.h"
#include "collector.h"
#include "lvattach.h"
#include "lvmeta.h"
#include "qmp.h"

#include <gio/gio.h>
#include <gio/gunixinputstream.h>
#include <json-glib/json-glib.h>
#include <string.h>

static char *opt_qsd;

/* The <shadowtier> element of a domain XML, with its namespace checked. */
static char *
shadowtier_element (const char *xml)
{
  g_autoptr (GRegex) re = g_regex_new ("<(([A-Za-z_][\\w.-]*):)?shadowtier\\b[^>]*>.*?"
                                       "</(\\2:)?shadowtier>", G_REGEX_DOTALL, 0, NULL);
  g_autoptr (GMatchInfo) mi = NULL;
  g_autofree char *el = NULL;

  if (!g_regex_match (re, xml, 0, &mi))
    return NULL;
  el = g_match_info_fetch (mi, 0);
  if (strstr (el, SHD_LV_NS_URI) == NULL)
    return NULL;
  return g_steal_pointer (&el);
}

/* The emulator's qemu-storage-daemon: next to it (a build tree or an
 * installed prefix), else PATH. */
static char *
find_qsd (const char *xml)
{
  g_autoptr (GRegex) re = g_regex_new ("<emulator>([^<]+)</emulator>", 0, 0, NULL);
  g_autoptr (GMatchInfo) mi = NULL;

  if (opt_qsd)
    return g_strdup (opt_qsd);
  if (g_regex_match (re, xml, 0, &mi)) {
    g_autofree char *emu = g_match_info_fetch (mi, 1);
    g_autofree char *d = g_path_get_dirname (emu);
    const char *cand[] = { "storage-daemon/qemu-storage-daemon", "qemu-storage-daemon", NULL };

    for (guint i = 0; cand[i]; i++) {
      g_autofree char *p = g_build_filename (d, cand[i], NULL);

      if (g_file_test (p, G_FILE_TEST_IS_EXECUTABLE))
        return g_steal_pointer (&p);
    }
  }
  return g_find_program_in_path ("qemu-storage-daemon");
}

typedef struct {
  GDataInputStream *in;
  GOutputStream *out;
} Qmp;

/* One command (args taken); its "return", or NULL with the error.  Events
 * are skipped: the state is polled. */
static JsonNode *
qmp_cmd (Qmp *q, const char *cmd, JsonObject *args, GError **error)
{
  g_autofree char *line = shd_qmp_command_line (cmd, args);

  if (args)
    json_object_unref (args);
  if (!g_output_stream_write_all (q->out, line, strlen (line), NULL, NULL, error) ||
      !g_output_stream_write_all (q->out, "\n", 1, NULL, NULL, error) ||
      !g_output_stream_flush (q->out, NULL, error))
    return NULL;
  for (;;) {
    g_autofree char *reply = g_data_input_stream_read_line (q->in, NULL, NULL, error);
    g_autoptr (JsonParser) p = json_parser_new ();
    JsonNode *root;

    if (reply == NULL) {
      if (error && *error == NULL)
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED,
                     "qemu-storage-daemon closed its monitor");
      return NULL;
    }
    if (!json_parser_load_from_data (p, reply, -1, error))
      return NULL;
    root = json_parser_get_root (p);
    if (root && JSON_NODE_HOLDS_OBJECT (root) &&
        json_object_has_member (json_node_get_object (root), "event"))
      continue;
    return shd_qmp_parse_reply (cmd, reply, error);
  }
}

/* Bytes the node is long, and bytes its child "o" (the image) holds. */
static gboolean
origin_progress (Qmp *q, gint64 *len, gint64 *valid, GError **error)
{
  JsonObject *a = json_object_new ();
  g_autoptr (JsonNode) nodes = NULL;
  g_autoptr (JsonNode) stats = NULL;
  g_autoptr (ShdShadowSample) sample = NULL;
  const ShdChildSample *o;

  json_object_set_boolean_member (a, "flat", TRUE);
  nodes = qmp_cmd (q, "query-named-block-nodes", a, error);
  if (nodes == NULL)
    return FALSE;
  a = json_object_new ();
  json_object_set_boolean_member (a, "query-nodes", TRUE);
  stats = qmp_cmd (q, "query-blockstats", a, error);
  if (stats == NULL)
    return FALSE;
  sample = shd_shadow_sample_parse (stats, "sh", 0, error);
  if (sample == NULL)
    return FALSE;
  o = shd_shadow_sample_child (sample, "o");
  *len = shd_block_nodes_virtual_size (nodes, "sh");
  if (o == NULL || *len < 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "no statistics of the shadow node");
    return FALSE;
  }
  if (g_strcmp0 (o->state, "degraded") == 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "the disk's image failed "
                 "(degraded) while it was brought up to date");
    return FALSE;
  }
  *valid = (gint64) o->valid_bytes;
  return TRUE;
}

static char *
blockdev_json (JsonObject *o)
{
  g_autoptr (JsonNode) n = json_node_new (JSON_NODE_OBJECT);

  json_node_take_object (n, o);
  return json_to_string (n, FALSE);
}

static JsonObject *
file_node (const char *name, const char *path)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "driver", "file");
  json_object_set_string_member (o, "node-name", name);
  json_object_set_string_member (o, "filename", path);
  return o;
}

/* Brings the disk's image up to date from its tiers; TRUE when it holds
 * every chunk and the metadata records a clean stop with it active. */
static gboolean
settle (const char *xml, const ShdLvDisk *d, const char *image, GError **error)
{
  g_autofree char *md = shd_lv_meta_path (d);
  g_autofree char *qsd = find_qsd (xml);
  g_autofree char *why = NULL;
  g_autoptr (GPtrArray) argv = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GSubprocess) p = NULL;
  g_autoptr (GDataInputStream) in = NULL;
  g_autofree char *greeting = NULL;
  g_autoptr (JsonNode) r = NULL;
  g_autoptr (GBytes) err_out = NULL;
  JsonObject *sh;
  JsonArray *ch;
  const char *chunk = g_hash_table_lookup (d->disk_attrs, "chunk-size");
  gboolean whole = FALSE;
  gint64 len = 0, valid = 0, t0 = g_get_monotonic_time ();
  Qmp q;

  /* No maps (no metadata image: the first start): nothing newer anywhere */
  if (!g_file_test (md, G_FILE_TEST_EXISTS))
    return TRUE;
  if (qsd == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no qemu-storage-daemon with the "
                 "shadow driver found (next to the emulator, or give --qsd)");
    return FALSE;
  }
  for (guint i = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];

    if (t->path && !g_file_test (t->path, G_FILE_TEST_IS_REGULAR)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "tier %s: its image %s is "
                   "missing, and the newest data of the disk may be on it", t->name, t->path);
      return FALSE;
    }
  }
  /* The children as shadowd gives them: identities are the files' paths,
   * the throttle filters do not count (docs/shadow-metadata.md) */
  g_ptr_array_add (argv, g_strdup (qsd));
  sh = json_object_new ();
  ch = json_array_new ();
  for (guint i = 0, n = 0; i < d->tiers->len; i++) {
    const ShdLvTier *t = d->tiers->pdata[i];
    g_autofree char *name = t->origin ? g_strdup ("o") : g_strdup_printf ("t%u", n++);

    g_ptr_array_add (argv, g_strdup ("--blockdev"));
    g_ptr_array_add (argv, blockdev_json (file_node (name, t->origin ? image : t->path)));
    json_array_add_string_element (ch, name);
  }
  g_ptr_array_add (argv, g_strdup ("--blockdev"));
  g_ptr_array_add (argv, blockdev_json (file_node ("md", md)));
  json_object_set_string_member (sh, "driver", "shadow");
  json_object_set_string_member (sh, "node-name", "sh");
  json_object_set_array_member (sh, "children", ch);
  /* an instant switch to the image: it hydrates from the tiers */
  json_object_set_string_member (sh, "active-child", "o");
  json_object_set_string_member (sh, "metadata", "md");
  json_object_set_string_member (sh, "write-mode", "sync");
  if (chunk)
    json_object_set_int_member (sh, "chunk-size", g_ascii_strtoll (chunk, NULL, 10));
  g_ptr_array_add (argv, g_strdup ("--blockdev"));
  g_ptr_array_add (argv, blockdev_json (sh));
  g_ptr_array_add (argv, g_strdup ("--chardev"));
  g_ptr_array_add (argv, g_strdup ("stdio,id=m"));
  g_ptr_array_add (argv, g_strdup ("--monitor"));
  g_ptr_array_add (argv, g_strdup ("chardev=m"));
  g_ptr_array_add (argv, NULL);

  p = g_subprocess_newv ((const char *const *) argv->pdata,
                         G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                         G_SUBPROCESS_FLAGS_STDERR_PIPE, error);
  if (p == NULL)
    return FALSE;
  in = g_data_input_stream_new (g_subprocess_get_stdout_pipe (p));
  q.in = in;
  q.out = g_subprocess_get_stdin_pipe (p);
  greeting = g_data_input_stream_read_line (in, NULL, NULL, NULL);
  if (greeting == NULL || !(r = qmp_cmd (&q, "qmp_capabilities", NULL, error)))
    goto failed;
  for (;;) {
    if (!origin_progress (&q, &len, &valid, error))
      goto failed;
    if (valid >= len)
      break;
    g_usleep (50 * 1000);
  }
  g_clear_pointer (&r, json_node_unref);
  /* quit closes the node: a clean stop, stamps taken after the last write */
  r = qmp_cmd (&q, "quit", NULL, NULL);
  if (!g_subprocess_wait_check (p, NULL, error))
    goto failed;
  g_clear_pointer (&why, g_free);
  if (!shd_lv_md_check (md, image, &whole, &why) || !whole) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "the image was brought up to date, "
                 "but its metadata does not say so: %s", why);
    return FALSE;
  }
  g_printerr ("shadowtier: disk %s: image settled (node of %" G_GINT64_FORMAT " bytes), %.0f ms\n",
              d->target, len, (g_get_monotonic_time () - t0) / 1000.0);
  return TRUE;

failed:
  g_subprocess_force_exit (p);
  g_subprocess_communicate (p, NULL, NULL, NULL, &err_out, NULL);
  if (err_out && g_bytes_get_size (err_out)) {
    g_autofree char *s = g_strndup (g_bytes_get_data (err_out, NULL), g_bytes_get_size (err_out));

    g_prefix_error (error, "%s: ", g_strstrip (s));
  }
  return FALSE;
}

int
main (int argc, char **argv)
{
  g_autoptr (GOptionContext) oc = g_option_context_new ("DOMAIN OPERATION SUB-OPERATION EXTRA");
  GOptionEntry entries[] = {
    { "qsd", 0, 0, G_OPTION_ARG_FILENAME, &opt_qsd,
      "qemu-storage-daemon with the shadow driver (default: next to the emulator)", "PATH" },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (GError) error = NULL;
  g_autofree char *xml = NULL;
  g_autofree char *el = NULL;
  g_autoptr (GPtrArray) disks = NULL;
  g_autoptr (GPtrArray) domdisks = NULL;
  g_autoptr (GInputStream) stdin_s = NULL;
  g_autoptr (GOutputStream) buf = g_memory_output_stream_new_resizable ();
  const char *op;
  gboolean release;
  int rc = 0;

  g_option_context_add_main_entries (oc, entries, NULL);
  if (!g_option_context_parse (oc, &argc, &argv, &error) || argc < 3) {
    g_printerr ("shadowtier hook: %s\n", error ? error->message : "usage: DOMAIN OPERATION ...");
    return 2;
  }
  op = argv[2];
  release = strcmp (op, "release") == 0;
  if (strcmp (op, "prepare") != 0 && strcmp (op, "migrate") != 0 && !release)
    return 0;
  stdin_s = g_unix_input_stream_new (0, FALSE);
  if (g_output_stream_splice (buf, stdin_s, G_OUTPUT_STREAM_SPLICE_CLOSE_TARGET, NULL,
                              &error) < 0) {
    g_printerr ("shadowtier hook: reading the domain XML: %s\n", error->message);
    return release ? 0 : 1;
  }
  xml = g_strndup (g_memory_output_stream_get_data (G_MEMORY_OUTPUT_STREAM (buf)),
                   g_memory_output_stream_get_data_size (G_MEMORY_OUTPUT_STREAM (buf)));
  el = shadowtier_element (xml);
  if (el == NULL)
    return 0;                   /* not ours */
  disks = shd_lv_meta_parse (el, &error);
  domdisks = disks ? shd_lv_domain_disks (xml, &error) : NULL;
  if (domdisks == NULL) {
    /* shadowd never inserted a shadow for metadata it cannot read */
    g_printerr ("shadowtier hook: domain %s: %s (nothing settled)\n", argv[1], error->message);
    return 0;
  }
  for (guint i = 0; i < disks->len; i++) {
    const ShdLvDisk *d = disks->pdata[i];
    const ShdLvDomDisk *dd = shd_lv_domain_disk (domdisks, d->target);
    gboolean async = g_strcmp0 (g_hash_table_lookup (d->disk_attrs, "write-mode"),
                                "async") == 0;

    if (!async || dd == NULL || dd->source == NULL)
      continue;
    if (strcmp (op, "migrate") == 0) {
      /* the destination opens the image while the source's tiers may
       * still hold newer data, and nothing runs on the source before */
      g_printerr ("shadowtier: domain %s: disk %s is write-back (write-mode=\"async\"): "
                  "migration refused; set write-mode=\"sync\" and wait until its own "
                  "tier is synced (virsh-shadow %s %s status) first\n",
                  argv[1], d->target, argv[1], d->target);
      return 1;
    }
    g_clear_error (&error);
    /*
     * Settled at every start: a clean stop with the image active does not
     * prove it whole (an instant switch to it may have left chunks to
     * hydrate).  A write-through disk is not settled: its image holds
     * every write, and after an unclean stop the maps cannot tell a
     * write made to the image while it was down (no stamps), which a
     * settle would overwrite for the chunks in flight at the crash.
     */
    if (!settle (xml, d, dd->source, &error)) {
      g_printerr ("shadowtier: domain %s: disk %s is write-back and its image %s could not "
                  "be brought up to date from its tiers: %s%s\n", argv[1], d->target,
                  dd->source, error->message,
                  release ? "" : "; QEMU is not started on a stale image");
      rc = release ? 0 : 1;
    }
  }
  return rc;
}
