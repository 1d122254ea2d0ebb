/* When shadowd keeps a libvirt disk's maps across a restart
 * (shd_lv_md_keep): metadata images built by hand, in the driver's format
 * (docs/shadow-metadata.md), against an origin file whose size and ctime
 * are stamped or not.  And the insertion's last check (shd_lv_attach
 * against a fake QEMU monitor): a write that reaches the image beside the
 * shadow while it goes in makes the tiers cold; the shadow never shares
 * libvirt's storage node with the format node. */
#include "lvattach.h"
#include "lvmeta.h"

#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HDR 8192

typedef struct {
  char *dir;
  char *origin;
  char *md;
} Fixture;

static void
put32 (guint8 *p, guint32 v)
{
  for (guint i = 0; i < 4; i++)
    p[i] = (guint8) (v >> (8 * i));
}

static void
put64 (guint8 *p, guint64 v)
{
  put32 (p, (guint32) v);
  put32 (p + 4, (guint32) (v >> 32));
}

typedef struct {
  guint64 generation;
  gboolean in_use;
  guint32 active;               /* slot of the active child */
  gboolean origin_in_active;    /* the active slot is the origin's */
  gboolean stamped;
  gboolean torn;                /* a wrong checksum */
} Copy;

/* One header copy; slot 0 is the origin's (or another file's), slot 1 a tier's */
static void
make_copy (const Fixture *f, guint8 *h, const Copy *c)
{
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  const char *who = c->origin_in_active ? f->origin : "/elsewhere/other.img";
  guint8 id[32];
  gsize len = sizeof (id);
  struct stat st;
  guint8 *slot = h + 256 + c->active * 256;

  memset (h, 0, HDR);
  memcpy (h, "SHADOWMD", 8);
  put32 (h + 8, 2);
  put32 (h + 12, HDR);
  put64 (h + 16, c->generation);
  put64 (h + 24, c->in_use ? 1 : 0);
  put64 (h + 32, 65536);
  put32 (h + 56, 16);
  put32 (h + 60, c->active);
  put64 (h + 72, 16384);
  put32 (h + 80, 4096);
  put32 (h + 84, 32512);
  put32 (h + 88, 256);
  g_checksum_update (sum, (const guchar *) who, strlen (who));
  g_checksum_get_digest (sum, id, &len);
  g_assert_cmpint (g_stat (f->origin, &st), ==, 0);
  put32 (slot, 1 | 2 | 4 | (c->stamped ? 8 : 0));
  memcpy (slot + 16, id, 32);
  put32 (slot + 68, (guint32) st.st_ctim.tv_nsec);
  put64 (slot + 72, (guint64) st.st_ctim.tv_sec);
  put64 (slot + 80, (guint64) st.st_size);
  put32 (h + 92, shd_lv_md_crc32c (h, HDR) ^ (c->torn ? 1 : 0));
}

static void
write_md (const Fixture *f, const Copy *c0, const Copy *c1)
{
  g_autofree guint8 *buf = g_malloc0 (2 * HDR + 4096);

  if (c0)
    make_copy (f, buf, c0);
  if (c1)
    make_copy (f, buf + HDR, c1);
  g_assert_true (g_file_set_contents (f->md, (const char *) buf, 2 * HDR + 4096, NULL));
}

static gboolean
keep (const Fixture *f, const char *expect)
{
  g_autofree char *why = NULL;
  gboolean k = shd_lv_md_keep (f->md, f->origin, &why);

  if (k)
    g_assert_null (why);
  else if (expect)
    g_assert_nonnull (strstr (why, expect));
  return k;
}

static void
setup (Fixture *f, gconstpointer data)
{
  (void) data;
  f->dir = g_dir_make_tmp ("test-lvwarm-XXXXXX", NULL);
  g_assert_nonnull (f->dir);
  f->origin = g_build_filename (f->dir, "vda.qcow2", NULL);
  f->md = g_build_filename (f->dir, "vda.fast.meta", NULL);
  g_assert_true (g_file_set_contents (f->origin, "image", -1, NULL));
}

static void
teardown (Fixture *f, gconstpointer data)
{
  (void) data;
  g_unlink (f->origin);
  g_unlink (f->md);
  g_rmdir (f->dir);
  g_free (f->dir);
  g_free (f->origin);
  g_free (f->md);
}

static const Copy clean = { 4, FALSE, 0, TRUE, TRUE, FALSE };

static void
test_nothing_recorded (Fixture *f, gconstpointer data)
{
  (void) data;
  g_assert_true (g_file_set_contents (f->md, "", 0, NULL));
  g_assert_false (keep (f, "no maps recorded yet"));
  write_md (f, NULL, NULL);     /* zeroes */
  g_assert_false (keep (f, "no maps recorded yet"));
}

static void
test_clean (Fixture *f, gconstpointer data)
{
  Copy older = clean;

  (void) data;
  older.generation = 3;
  older.in_use = TRUE;
  write_md (f, &older, &clean);
  g_assert_true (keep (f, NULL));
  /* the copies alternate: the newer one counts, wherever it is */
  write_md (f, &clean, &older);
  g_assert_true (keep (f, NULL));
}

static void
test_unclean (Fixture *f, gconstpointer data)
{
  Copy c = clean, older = clean;

  (void) data;
  c.in_use = TRUE;
  c.stamped = FALSE;
  older.generation = 3;
  write_md (f, &older, &c);
  g_assert_false (keep (f, "not stopped cleanly"));
  c.stamped = TRUE;             /* even with a stamp left over */
  write_md (f, &older, &c);
  g_assert_false (keep (f, "not stopped cleanly"));
}

static void
test_torn (Fixture *f, gconstpointer data)
{
  Copy newer = clean, older = clean, bad = clean;

  (void) data;
  /* a torn newer copy: the older intact one is current (the driver, too,
   * writes nothing to a child before its in-use header is complete) */
  newer.generation = 5;
  newer.in_use = TRUE;
  newer.torn = TRUE;
  write_md (f, &older, &newer);
  g_assert_true (keep (f, NULL));
  bad.torn = TRUE;
  write_md (f, &bad, &newer);
  g_assert_false (keep (f, "not an intact version 2 header"));
}

static void
test_other_active (Fixture *f, gconstpointer data)
{
  Copy c = clean;

  (void) data;
  c.origin_in_active = FALSE;
  write_md (f, &c, NULL);
  g_assert_false (keep (f, "was not the active tier"));
  c = clean;
  c.active = 3;                 /* an empty slot */
  write_md (f, &c, NULL);
  g_assert_true (keep (f, NULL));       /* slot 3 is the origin's here */
  c.active = 16;
  write_md (f, &c, NULL);
  g_assert_false (keep (f, "names no active tier"));
}

static void
test_not_stamped (Fixture *f, gconstpointer data)
{
  Copy c = clean;

  (void) data;
  c.stamped = FALSE;
  write_md (f, &c, NULL);
  g_assert_false (keep (f, "no size and ctime recorded"));
}

static void
test_origin_changed (Fixture *f, gconstpointer data)
{
  (void) data;
  write_md (f, &clean, NULL);
  g_assert_true (keep (f, NULL));
  /* a mode change: same size, a new ctime (past the clock's tick) */
  g_usleep (20000);
  g_assert_cmpint (g_chmod (f->origin, 0640), ==, 0);
  g_assert_false (keep (f, "changed while the shadow was out"));
  write_md (f, &clean, NULL);
  g_assert_true (keep (f, NULL));
  /* a write that changes the size */
  g_usleep (20000);
  g_assert_true (g_file_set_contents (f->origin, "image, written", -1, NULL));
  g_assert_false (keep (f, "changed while the shadow was out"));
}


/* ---- a fake QEMU monitor: the block graph libvirt gives a qcow2 disk,
 * and what shadowd adds to it ---- */

typedef struct {
  const char *image;
  GHashTable *nodes;            /* node name -> driver */
  GHashTable *files;            /* node name -> its file child */
  GPtrArray *shadow_children;   /* the shadow node's, while it exists */
  gboolean shadow_md;
  char *format_file;            /* the format node's file child */
  gboolean written;             /* libvirt's storage node got a write */
  gboolean write_at_handover;   /* ... just before the format node leaves it */
  gboolean write_in_window;     /* the hand-over node, before the reopen that puts the shadow in */
  gboolean tmp_written;
  gboolean fail_detach;         /* the hand-over that takes the shadow out fails */
  guint reopens;
  GString *log;
  /* the shadow's copy was started (a reopen without prewarm off), with the
   * shadow the format node's file by then */
  gboolean copy_started;
  const char *status;           /* query-status; NULL: running */
} Fake;

static void
add_node_info (JsonBuilder *b, const char *name, const char *drv, const char *file, gint64 size)
{
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "node-name");
  json_builder_add_string_value (b, name);
  json_builder_set_member_name (b, "drv");
  json_builder_add_string_value (b, drv);
  if (file) {
    json_builder_set_member_name (b, "file");
    json_builder_add_string_value (b, file);
  }
  json_builder_set_member_name (b, "ro");
  json_builder_add_boolean_value (b, FALSE);
  json_builder_set_member_name (b, "image");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "virtual-size");
  json_builder_add_int_value (b, size);
  json_builder_end_object (b);
  json_builder_end_object (b);
}

static void
add_edge (JsonBuilder *b, GHashTable *ids, const char *parent, const char *child, const char *name)
{
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "parent");
  json_builder_add_int_value (b, GPOINTER_TO_INT (g_hash_table_lookup (ids, parent)));
  json_builder_set_member_name (b, "child");
  json_builder_add_int_value (b, GPOINTER_TO_INT (g_hash_table_lookup (ids, child)));
  json_builder_set_member_name (b, "name");
  json_builder_add_string_value (b, name);
  json_builder_end_object (b);
}

#define BACKEND "/machine/peripheral/virtio-disk0/virtio-backend"

static JsonNode *
fake_monitor (const char *command, JsonObject *args, gpointer data, GError **error)
{
  Fake *f = data;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  GHashTableIter it;
  gpointer k, v;

  g_string_append_printf (f->log, "%s\n", command);
  if (strcmp (command, "query-status") == 0) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "running");
    json_builder_add_boolean_value (b, f->status == NULL);
    json_builder_set_member_name (b, "status");
    json_builder_add_string_value (b, f->status ? f->status : "running");
    json_builder_end_object (b);
  } else if (strcmp (command, "query-named-block-nodes") == 0) {
    json_builder_begin_array (b);
    add_node_info (b, "libvirt-1-format", "qcow2", f->image, 64 << 20);
    add_node_info (b, "libvirt-1-storage", "file", f->image, 1 << 20);
    g_hash_table_iter_init (&it, f->nodes);
    while (g_hash_table_iter_next (&it, &k, &v))
      add_node_info (b, k, v, strcmp (v, "file") == 0 || strcmp (v, "raw") == 0 ? f->image : NULL,
                     1 << 20);
    json_builder_end_array (b);
  } else if (strcmp (command, "x-debug-query-block-graph") == 0) {
    g_autoptr (GHashTable) ids = g_hash_table_new (g_str_hash, g_str_equal);
    g_autoptr (GPtrArray) names = g_ptr_array_new ();
    gint id = 1;

    g_ptr_array_add (names, BACKEND);
    g_ptr_array_add (names, "libvirt-1-format");
    g_ptr_array_add (names, "libvirt-1-storage");
    g_hash_table_iter_init (&it, f->nodes);
    while (g_hash_table_iter_next (&it, &k, &v))
      g_ptr_array_add (names, k);
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "nodes");
    json_builder_begin_array (b);
    for (guint i = 0; i < names->len; i++, id++) {
      g_hash_table_insert (ids, names->pdata[i], GINT_TO_POINTER (id));
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "id");
      json_builder_add_int_value (b, id);
      json_builder_set_member_name (b, "name");
      json_builder_add_string_value (b, names->pdata[i]);
      json_builder_set_member_name (b, "type");
      json_builder_add_string_value (b, i == 0 ? "block-backend" : "block-driver");
      json_builder_end_object (b);
    }
    json_builder_end_array (b);
    json_builder_set_member_name (b, "edges");
    json_builder_begin_array (b);
    add_edge (b, ids, BACKEND, "libvirt-1-format", "root");
    add_edge (b, ids, "libvirt-1-format", f->format_file, "file");
    g_hash_table_iter_init (&it, f->files);
    while (g_hash_table_iter_next (&it, &k, &v))
      add_edge (b, ids, k, v, "file");
    for (guint i = 0; f->shadow_children && i < f->shadow_children->len; i++) {
      g_autofree char *edge = g_strdup_printf ("children.%u", i);

      add_edge (b, ids, "shd-vda", f->shadow_children->pdata[i], edge);
    }
    if (f->shadow_children && f->shadow_md)
      add_edge (b, ids, "shd-vda", "shd-vda-md", "metadata");
    json_builder_end_array (b);
    json_builder_end_object (b);
  } else if (strcmp (command, "query-blockstats") == 0) {
    gboolean nodes = args && json_object_get_boolean_member_with_default (args, "query-nodes", FALSE);

    json_builder_begin_array (b);
    for (guint i = 0; i < (nodes ? 2 : 1); i++) {
      if (i == 1 && !g_hash_table_contains (f->nodes, "shd-vda-tmp"))
        break;
      json_builder_begin_object (b);
      if (nodes) {
        json_builder_set_member_name (b, "node-name");
        json_builder_add_string_value (b, i == 0 ? "libvirt-1-storage" : "shd-vda-tmp");
      } else {
        json_builder_set_member_name (b, "qdev");
        json_builder_add_string_value (b, BACKEND);
      }
      json_builder_set_member_name (b, "stats");
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "wr_highest_offset");
      json_builder_add_int_value (b, nodes && (i == 0 ? f->written : f->tmp_written) ? 4096 : 0);
      json_builder_set_member_name (b, "unmap_operations");
      json_builder_add_int_value (b, 0);
      json_builder_end_object (b);
      json_builder_end_object (b);
    }
    if (nodes && f->shadow_children) {
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "node-name");
      json_builder_add_string_value (b, "shd-vda");
      json_builder_set_member_name (b, "stats");
      json_builder_begin_object (b);
      json_builder_end_object (b);
      json_builder_set_member_name (b, "driver-specific");
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "active");
      json_builder_add_string_value (b, "shd-vda-base");
      json_builder_set_member_name (b, "children");
      json_builder_begin_array (b);
      for (guint i = 0; i < f->shadow_children->len; i++) {
        json_builder_begin_object (b);
        json_builder_set_member_name (b, "node-name");
        json_builder_add_string_value (b, f->shadow_children->pdata[i]);
        json_builder_set_member_name (b, "state");
        json_builder_add_string_value (b, i == 0 ? "active" : "synced");
        json_builder_end_object (b);
      }
      json_builder_end_array (b);
      json_builder_end_object (b);
      json_builder_end_object (b);
    }
    json_builder_end_array (b);
  } else if (strcmp (command, "blockdev-add") == 0) {
    const char *name = json_object_get_string_member (args, "node-name");
    const char *drv = json_object_get_string_member (args, "driver");

    if (strcmp (drv, "shadow") == 0) {
      JsonArray *ch = json_object_get_array_member (args, "children");
      const char *c0 = json_array_get_string_element (ch, 0);

      /* QEMU refuses a second writer of the format node's file */
      if (strcmp (f->format_file, "libvirt-1-storage") == 0 &&
          g_strcmp0 (g_hash_table_lookup (f->files, c0), "libvirt-1-storage") == 0) {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "fake: permission conflict on "
                     "node 'libvirt-1-storage'");
        return NULL;
      }

      f->shadow_children = g_ptr_array_new_with_free_func (g_free);
      for (guint i = 0; i < json_array_get_length (ch); i++)
        g_ptr_array_add (f->shadow_children, g_strdup (json_array_get_string_element (ch, i)));
      f->shadow_md = json_object_has_member (args, "metadata");
      /* no copy while the guest still writes the image beside it */
      g_assert_cmpstr (json_object_get_string_member_with_default (args, "prewarm", ""), ==,
                       "off");
      f->copy_started = FALSE;
    }
    /* the image is open in one node only, the storage node; the
     * hand-over node cannot take its lock */
    if (strcmp (drv, "file") == 0 && g_strcmp0 (json_object_get_string_member_with_default (
                                                   args, "filename", ""), f->image) == 0) {
      g_assert_cmpstr (name, ==, "shd-vda-tmp");
      g_assert_cmpstr (json_object_get_string_member_with_default (args, "locking", ""), ==,
                       "off");
      f->tmp_written = FALSE;
    }
    if (json_object_has_member (args, "file"))
      g_hash_table_insert (f->files, g_strdup (name),
                           g_strdup (json_object_get_string_member (args, "file")));
    g_hash_table_insert (f->nodes, g_strdup (name), g_strdup (drv));
    json_builder_begin_object (b);
    json_builder_end_object (b);
  } else if (strcmp (command, "blockdev-reopen") == 0) {
    JsonArray *opts = json_object_get_array_member (args, "options");

    JsonObject *o0 = json_array_get_object_element (opts, 0);

    if (f->fail_detach && strcmp (f->format_file, "shd-vda") == 0 &&
        g_strcmp0 (json_object_get_string_member_with_default (o0, "file", ""),
                   "shd-vda-tmp") == 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "fake: the detach fails");
      return NULL;
    }
    /* the format node back on libvirt's storage node: nothing else of
     * ours may hold it */
    if (g_strcmp0 (json_object_get_string_member_with_default (o0, "file", ""),
                   "libvirt-1-storage") == 0)
      g_assert_false (g_hash_table_contains (f->nodes, "shd-vda-base"));
    f->reopens++;
    for (guint i = 0; i < json_array_get_length (opts); i++) {
      JsonObject *o = json_array_get_object_element (opts, i);

      if (strcmp (json_object_get_string_member (o, "node-name"), "shd-vda") == 0 &&
          g_strcmp0 (json_object_get_string_member_with_default (o, "prewarm", NULL),
                     "off") != 0) {
        g_assert_cmpstr (f->format_file, ==, "shd-vda");
        f->copy_started = TRUE;
      }
      if (strcmp (json_object_get_string_member (o, "node-name"), "libvirt-1-format") == 0) {
        const char *file = json_object_get_string_member (o, "file");

        if (strcmp (file, "shd-vda") == 0 && f->write_in_window &&
            strcmp (f->format_file, "shd-vda-tmp") == 0) {
          f->tmp_written = TRUE;        /* the guest wrote while the shadow went in */
          f->write_in_window = FALSE;
        }
        if (strcmp (file, "shd-vda-tmp") == 0 && f->write_at_handover &&
            strcmp (f->format_file, "libvirt-1-storage") == 0) {
          f->written = TRUE;    /* ... just before the hand-over */
          f->write_at_handover = FALSE;
        }
        g_free (f->format_file);
        f->format_file = g_strdup (json_object_get_string_member (o, "file"));
      }
    }
    json_builder_begin_object (b);
    json_builder_end_object (b);
  } else if (strcmp (command, "x-blockdev-change") == 0) {
    g_assert_cmpstr (json_object_get_string_member (args, "parent"), ==, "shd-vda");
    g_assert_cmpstr (json_object_get_string_member (args, "child"), ==, "children.1");
    g_ptr_array_remove_index (f->shadow_children, 1);
    json_builder_begin_object (b);
    json_builder_end_object (b);
  } else if (strcmp (command, "blockdev-del") == 0) {
    const char *name = json_object_get_string_member (args, "node-name");

    g_hash_table_remove (f->nodes, name);
    g_hash_table_remove (f->files, name);
    if (strcmp (name, "shd-vda") == 0)
      g_clear_pointer (&f->shadow_children, g_ptr_array_unref);
    json_builder_begin_object (b);
    json_builder_end_object (b);
  } else {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "fake: no %s", command);
    return NULL;
  }
  return json_builder_get_root (b);
}

typedef struct {
  gboolean written_before;
  gboolean write_at_handover;
  gboolean write_in_window;
  gboolean fail_detach;
  const char *warmth;
  guint reopens;
  gboolean md_emptied;
  const char *status;           /* QEMU's run state, when not running */
} AttachCase;

static void
test_attach (Fixture *f, gconstpointer data)
{
  const AttachCase *ac = data;
  g_autofree char *fast = g_build_filename (f->dir, "vda.fast", NULL);
  g_autofree char *xml = g_strdup_printf (
    "<shadowtier xmlns=\"" SHD_LV_NS_URI "\"><disk target=\"vda\" slo-latency-ms=\"5\">"
    "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"%s\"/></disk></shadowtier>",
    fast);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_meta_parse (xml, &error);
  g_autofree char *warmth = NULL;
  ShdLvDomDisk dd = { .target = "vda", .alias = "virtio-disk0", .source = f->origin,
                      .type = "file", .format = "qcow2", .device = "disk" };
  Fake fk = { f->origin, g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free),
              g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free),
              NULL, FALSE, g_strdup ("libvirt-1-storage"), ac->written_before,
              ac->write_at_handover, ac->write_in_window, FALSE, ac->fail_detach, 0,
              g_string_new (NULL), FALSE, ac->status };
  ShdLvMonitor m = { fake_monitor, &fk };
  ShdLvAttachResult result;
  struct stat st;

  g_assert_no_error (error);
  g_free (f->md);
  f->md = g_strdup_printf ("%s.meta", fast);
  g_assert_true (g_file_set_contents (fast, "", 0, NULL));
  write_md (f, &clean, NULL);   /* kept maps that describe the image as it is */
  if (ac->status) {
    /* an incoming migration: refused before anything is touched, the
     * source's maps and tier images included */
    g_autofree char *before = NULL, *after = NULL;
    gsize n1 = 0, n2 = 0;

    g_assert_true (g_file_get_contents (f->md, &before, &n1, NULL));
    g_assert_false (shd_lv_attach (&m, disks->pdata[0], &dd, NULL, &result, &warmth, &error));
    g_assert_error (error, G_IO_ERROR, G_IO_ERROR_BUSY);
    g_assert_nonnull (strstr (error->message, ac->status));
    g_assert_cmpstr (fk.log->str, ==, "query-status\n");
    g_assert_true (g_file_get_contents (f->md, &after, &n2, NULL));
    g_assert_cmpmem (before, n1, after, n2);
    g_assert_cmpint (g_stat (fast, &st), ==, 0);
    g_assert_cmpint (st.st_size, ==, 0);
    g_assert_cmpstr (fk.format_file, ==, "libvirt-1-storage");
    goto out;
  }
  if (ac->fail_detach) {
    /* the shadow stays in, with the disk's own image as its only tier */
    g_assert_false (shd_lv_attach (&m, disks->pdata[0], &dd, NULL, &result, &warmth, &error));
    g_assert_nonnull (strstr (error->message, "its tiers were removed from it"));
    g_assert_null (warmth);
    g_assert_cmpuint (fk.shadow_children->len, ==, 1);
    g_assert_cmpstr (fk.shadow_children->pdata[0], ==, "shd-vda-base");
    g_assert_cmpstr (fk.format_file, ==, "shd-vda");
    goto out;
  }
  g_assert_true (shd_lv_attach (&m, disks->pdata[0], &dd, NULL, &result, &warmth, &error));
  g_assert_no_error (error);
  g_test_message ("%s", fk.log->str);
  g_assert_cmpint (result, ==, SHD_LV_INSERTED);
  g_assert_cmpstr (warmth, ==, ac->warmth);
  g_assert_cmpuint (fk.reopens, ==, ac->reopens);
  g_assert_cmpstr (fk.format_file, ==, "shd-vda");
  /* on libvirt's storage node, and the hand-over node gone */
  g_assert_cmpstr (g_hash_table_lookup (fk.files, "shd-vda-base"), ==, "libvirt-1-storage");
  g_assert_false (g_hash_table_contains (fk.nodes, "shd-vda-tmp"));
  g_assert_true (fk.copy_started);
  g_assert_true (fk.shadow_md);
  g_assert_cmpint (g_stat (f->md, &st), ==, 0);
  g_assert_cmpint (st.st_size == 0, ==, ac->md_emptied);
out:
  g_unlink (fast);
  g_hash_table_unref (fk.nodes);
  g_hash_table_unref (fk.files);
  g_clear_pointer (&fk.shadow_children, g_ptr_array_unref);
  g_free (fk.format_file);
  g_string_free (fk.log, TRUE);
}

/* the format node's reopens (hand-over, shadow), then the shadow's that
 * starts the copy */
static const AttachCase warm_case = {
  FALSE, FALSE, FALSE, FALSE, "tiers warm: the maps kept at the last clean stop are valid", 3,
  FALSE, NULL
};
static const AttachCase written_before = {
  TRUE, FALSE, FALSE, FALSE, "tiers cold: the disk's image was written since QEMU opened it",
  3, TRUE, NULL
};
/* given back before the shadow was added, inserted cold: five reopens */
static const AttachCase written_at_handover = {
  FALSE, TRUE, FALSE, FALSE,
  "tiers cold: the disk's image was written while the shadow went in", 5, TRUE, NULL
};
/* taken out again (two reopens), the maps emptied, inserted cold: seven */
static const AttachCase written_in_window = {
  FALSE, FALSE, TRUE, FALSE,
  "tiers cold: the disk's image was written while the shadow went in", 7, TRUE, NULL
};
static const AttachCase written_in_window_stuck = {
  FALSE, FALSE, TRUE, TRUE, NULL, 2, FALSE, NULL
};
/* a destination's QEMU before the migration's end */
static const AttachCase incoming = {
  FALSE, FALSE, FALSE, FALSE, NULL, 0, FALSE, "inmigrate"
};
/* a source's QEMU at the migration's end */
static const AttachCase outgoing = {
  FALSE, FALSE, FALSE, FALSE, NULL, 0, FALSE, "postmigrate"
};

/* The check value of CRC32C (RFC 3720, and QEMU's crc32c()): the
 * driver's headers are checked with the same function */
static void
test_crc32c (void)
{
  g_assert_cmphex (shd_lv_md_crc32c ((const guint8 *) "123456789", 9), ==, 0xe3069283);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
#define ADD(name, fn) g_test_add ("/lvwarm/" name, Fixture, NULL, setup, fn, teardown)
  g_test_add_func ("/lvwarm/crc32c", test_crc32c);
  ADD ("nothing-recorded", test_nothing_recorded);
  ADD ("clean", test_clean);
  ADD ("unclean", test_unclean);
  ADD ("torn", test_torn);
  ADD ("other-active", test_other_active);
  ADD ("not-stamped", test_not_stamped);
  ADD ("origin-changed", test_origin_changed);
  g_test_add ("/lvwarm/attach/warm", Fixture, &warm_case, setup, test_attach, teardown);
  g_test_add ("/lvwarm/attach/written-before", Fixture, &written_before, setup, test_attach,
              teardown);
  g_test_add ("/lvwarm/attach/written-at-handover", Fixture, &written_at_handover, setup,
              test_attach, teardown);
  g_test_add ("/lvwarm/attach/written-in-window", Fixture, &written_in_window, setup,
              test_attach, teardown);
  g_test_add ("/lvwarm/attach/written-in-window-stuck", Fixture, &written_in_window_stuck,
              setup, test_attach, teardown);
  g_test_add ("/lvwarm/attach/incoming", Fixture, &incoming, setup, test_attach, teardown);
  g_test_add ("/lvwarm/attach/outgoing", Fixture, &outgoing, setup, test_attach, teardown);
  return g_test_run ();
}
