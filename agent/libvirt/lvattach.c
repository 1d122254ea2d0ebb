/* Insertion and removal of a libvirt disk's shadow node; see lvattach.h. */
#include "lvattach.h"

#include "rbdnode.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the block graph, as QEMU tells it ---- */

typedef struct {
  char *parent;
  char *child;
  char *name;                   /* "root", "file", "backing", "children.0" ... */
  gboolean from_backend;        /* parent is a device's BlockBackend */
} Edge;

typedef struct {
  JsonNode *nodes_reply;        /* query-named-block-nodes */
  JsonNode *graph_reply;        /* x-debug-query-block-graph */
  GHashTable *nodes;            /* node-name -> JsonObject (borrowed) */
  GPtrArray *edges;             /* Edge */
} Graph;

static void
edge_free (gpointer p)
{
  Edge *e = p;

  g_free (e->parent);
  g_free (e->child);
  g_free (e->name);
  g_free (e);
}

static void
graph_clear (Graph *g)
{
  g_clear_pointer (&g->nodes_reply, json_node_unref);
  g_clear_pointer (&g->graph_reply, json_node_unref);
  g_clear_pointer (&g->nodes, g_hash_table_unref);
  g_clear_pointer (&g->edges, g_ptr_array_unref);
}

static JsonNode *
run (const ShdLvMonitor *m, const char *command, JsonObject *args, GError **error)
{
  return m->mon (command, args, m->data, error);
}

/* Runs a command whose reply is of no interest. */
static gboolean
run0 (const ShdLvMonitor *m, const char *command, JsonObject *args, GError **error)
{
  g_autoptr (JsonNode) r = run (m, command, args, error);

  if (r == NULL)
    g_prefix_error (error, "%s: ", command);
  return r != NULL;
}

static gboolean
graph_load (const ShdLvMonitor *m, Graph *g, GError **error)
{
  g_autoptr (JsonObject) flat = json_object_new ();
  g_autoptr (GHashTable) ids = g_hash_table_new_full (NULL, NULL, NULL, g_free);
  g_autoptr (GHashTable) backends = g_hash_table_new (NULL, NULL);
  JsonArray *a;
  JsonObject *go;

  json_object_set_boolean_member (flat, "flat", TRUE);
  g->nodes_reply = run (m, "query-named-block-nodes", flat, error);
  if (g->nodes_reply == NULL)
    return FALSE;
  g->graph_reply = run (m, "x-debug-query-block-graph", NULL, error);
  if (g->graph_reply == NULL)
    return FALSE;
  if (!JSON_NODE_HOLDS_ARRAY (g->nodes_reply) || !JSON_NODE_HOLDS_OBJECT (g->graph_reply)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "unexpected block graph reply");
    return FALSE;
  }
  g->nodes = g_hash_table_new (g_str_hash, g_str_equal);
  a = json_node_get_array (g->nodes_reply);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *n = json_array_get_object_element (a, i);
    const char *name = n ? json_object_get_string_member_with_default (n, "node-name", NULL) : NULL;

    if (name)
      g_hash_table_insert (g->nodes, (gpointer) name, n);
  }
  go = json_node_get_object (g->graph_reply);
  a = json_object_get_array_member (go, "nodes");
  for (guint i = 0; a && i < json_array_get_length (a); i++) {
    JsonObject *n = json_array_get_object_element (a, i);
    gint64 id = json_object_get_int_member_with_default (n, "id", -1);

    g_hash_table_insert (ids, GINT_TO_POINTER ((int) id),
                         g_strdup (json_object_get_string_member_with_default (n, "name", "")));
    if (g_strcmp0 (json_object_get_string_member_with_default (n, "type", ""),
                   "block-backend") == 0)
      g_hash_table_add (backends, GINT_TO_POINTER ((int) id));
  }
  g->edges = g_ptr_array_new_with_free_func (edge_free);
  a = json_object_get_array_member (go, "edges");
  for (guint i = 0; a && i < json_array_get_length (a); i++) {
    JsonObject *e = json_array_get_object_element (a, i);
    int p = (int) json_object_get_int_member_with_default (e, "parent", -1);
    int c = (int) json_object_get_int_member_with_default (e, "child", -1);
    Edge *edge = g_new0 (Edge, 1);

    edge->parent = g_strdup (g_hash_table_lookup (ids, GINT_TO_POINTER (p)));
    edge->child = g_strdup (g_hash_table_lookup (ids, GINT_TO_POINTER (c)));
    edge->name = g_strdup (json_object_get_string_member_with_default (e, "name", ""));
    edge->from_backend = g_hash_table_contains (backends, GINT_TO_POINTER (p));
    g_ptr_array_add (g->edges, edge);
  }
  return TRUE;
}

static JsonObject *
node_info (const Graph *g, const char *name)
{
  return name ? g_hash_table_lookup (g->nodes, name) : NULL;
}

static const char *
node_str (const Graph *g, const char *name, const char *member)
{
  JsonObject *n = node_info (g, name);

  return n ? json_object_get_string_member_with_default (n, member, NULL) : NULL;
}

/* The node a device's BlockBackend uses: the backend's QOM path holds the
 * device id (libvirt's alias), /machine/peripheral/virtio-disk0/... */
static const char *
root_of (const Graph *g, const char *alias)
{
  g_autofree char *mid = g_strdup_printf ("/peripheral/%s/", alias);
  g_autofree char *end = g_strdup_printf ("/peripheral/%s", alias);

  for (guint i = 0; i < g->edges->len; i++) {
    const Edge *e = g->edges->pdata[i];

    if (e->from_backend && strcmp (e->name, "root") == 0 && e->parent &&
        (strstr (e->parent, mid) || g_str_has_suffix (e->parent, end) ||
         strcmp (e->parent, alias) == 0))
      return e->child;
  }
  return NULL;
}

static const char *
child_of (const Graph *g, const char *parent, const char *edge)
{
  for (guint i = 0; i < g->edges->len; i++) {
    const Edge *e = g->edges->pdata[i];

    if (g_strcmp0 (e->parent, parent) == 0 && strcmp (e->name, edge) == 0)
      return e->child;
  }
  return NULL;
}

static gboolean
has_parent (const Graph *g, const char *node)
{
  for (guint i = 0; i < g->edges->len; i++)
    if (g_strcmp0 (((Edge *) g->edges->pdata[i])->child, node) == 0)
      return TRUE;
  return FALSE;
}

/* The format node whose file the shadow is, wherever it is in the chain
 * now (a disk-only snapshot puts an overlay above it) */
static const char *
shadow_parent (const Graph *g, const char *shadow)
{
  for (guint i = 0; i < g->edges->len; i++) {
    const Edge *e = g->edges->pdata[i];

    if (g_strcmp0 (e->child, shadow) == 0 && strcmp (e->name, "file") == 0 && !e->from_backend)
      return e->parent;
  }
  return NULL;
}

/* A parent that is not one of the disk's own nodes (being deleted too) */
static gboolean
has_foreign_parent (const Graph *g, const char *node, const char *target)
{
  g_autofree char *shadow = shd_lv_node_shadow (target);
  g_autofree char *prefix = g_strdup_printf ("%s-", shadow);

  for (guint i = 0; i < g->edges->len; i++) {
    const Edge *e = g->edges->pdata[i];

    if (g_strcmp0 (e->child, node) == 0 && g_strcmp0 (e->parent, shadow) != 0 &&
        !g_str_has_prefix (e->parent ? e->parent : "", prefix))
      return TRUE;
  }
  return FALSE;
}

/* ---- files ---- */

/* Is path (absolute, without "..") inside one of the roots?  Resolved
 * through its deepest existing directory, so a symbolic link cannot lead
 * out of them. */
static gboolean
path_allowed (const char *path, const char *const *roots, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *rest = g_strdup ("");
  g_autofree char *real = NULL;
  g_autofree char *full = NULL;

  while (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    g_autofree char *base = g_path_get_basename (dir);
    char *up = g_path_get_dirname (dir);
    char *r = g_build_filename (base, rest, NULL);

    g_free (rest);
    rest = r;
    g_free (dir);
    dir = up;
  }
  real = realpath (dir, NULL);
  if (real == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "tier image %s: %s", path,
                 g_strerror (errno));
    return FALSE;
  }
  full = *rest ? g_build_filename (real, rest, NULL) : g_strdup (real);
  for (guint i = 0; roots && roots[i]; i++) {
    g_autofree char *root = realpath (roots[i], NULL);

    if (root && (strcmp (full, root) == 0 ||
                 (g_str_has_prefix (full, root) &&
                  (full[strlen (root)] == '/' || strcmp (root, "/") == 0))))
      return TRUE;
  }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
               "tier image %s is not in the disk image's directory or a [libvirt] "
               "tier-dirs directory", path);
  return FALSE;
}

/* A tier image: created if missing with mode 0600 and the owner of the
 * disk's own image (QEMU runs as that user and opens it by name); an
 * existing one must be a regular file other than the disk's image.  At
 * least len bytes long afterwards, or new_len if it was created (warm
 * maps leave existing images alone, but a tier image missing on this
 * host, a host-local tier after a migration, must be as long as the
 * disk for the shadow node to take it, stale). */
static gboolean
prepare_tier_file (const char *path, const struct stat *base, guint64 len, guint64 new_len,
                   GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);
  struct stat st;
  gboolean created = FALSE;
  int fd, saved;

  if (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    if (g_mkdir_with_parents (dir, 0700) < 0) {
      saved = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                   "cannot create directory %s: %s", dir, g_strerror (saved));
      return FALSE;
    }
    if (chown (dir, base->st_uid, base->st_gid) < 0 && errno != EPERM) {
      saved = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "chown %s: %s", dir,
                   g_strerror (saved));
      return FALSE;
    }
  }
  fd = g_open (path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0)
    created = TRUE;
  else if (errno == EEXIST)
    fd = g_open (path, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
  if (fd < 0 || fstat (fd, &st) < 0) {
    saved = errno;
    if (fd >= 0)
      close (fd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "tier image %s: %s",
                 path, g_strerror (saved));
    return FALSE;
  }
  if (!S_ISREG (st.st_mode) || (st.st_dev == base->st_dev && st.st_ino == base->st_ino) ||
      (!created && (st.st_uid != base->st_uid || st.st_nlink != 1))) {
    close (fd);
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                 "tier image %s is %s", path, !S_ISREG (st.st_mode) ? "not a regular file" :
                 st.st_ino == base->st_ino && st.st_dev == base->st_dev ?
                 "the disk's own image" : st.st_uid != base->st_uid ?
                 "not owned by the disk image's owner" : "a file with several links");
    return FALSE;
  }
  if (created && fchown (fd, base->st_uid, base->st_gid) < 0 && errno != EPERM) {
    saved = errno;
    close (fd);
    g_unlink (path);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "chown %s: %s", path,
                 g_strerror (saved));
    return FALSE;
  }
  if (created)
    len = MAX (len, new_len);
  if ((guint64) st.st_size < len && ftruncate (fd, (off_t) len) < 0) {
    saved = errno;
    close (fd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                 "cannot size tier image %s: %s", path, g_strerror (saved));
    return FALSE;
  }
  close (fd);
  return TRUE;
}

/* The owner a file tier of a disk on RBD gets (there is no image file to
 * take it from): that of the deepest existing directory of its path, which
 * the operator gives to QEMU's user (in *st). */
static gboolean
dir_owner (const char *path, struct stat *st, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);

  while (!g_file_test (dir, G_FILE_TEST_IS_DIR)) {
    char *up = g_path_get_dirname (dir);

    g_free (dir);
    dir = up;
  }
  if (g_stat (dir, st) < 0) {
    int saved = errno;

    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "%s: %s", dir,
                 g_strerror (saved));
    return FALSE;
  }
  return TRUE;
}

/* ---- the metadata child: warm or cold (docs/libvirt.md, "Warm restarts") ---- */

#define MD_HEADER 8192          /* one header copy (docs/shadow-metadata.md) */
#define MD_SLOTS 16
#define MD_SLOT_SIZE 256
#define MD_TABLE 256
#define MD_IN_USE 1
#define MD_SLOT_USED 1
#define MD_SLOT_STAMPED 8

guint32
shd_lv_md_crc32c (const guint8 *p, gsize n)
{
  guint32 crc = 0xffffffff;

  for (gsize i = 0; i < n; i++) {
    crc ^= p[i];
    for (guint k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0x82f63b78 & (0u - (crc & 1)));
  }
  return ~crc;
}

static guint32
le32 (const guint8 *p)
{
  return (guint32) p[0] | (guint32) p[1] << 8 | (guint32) p[2] << 16 | (guint32) p[3] << 24;
}

static guint64
le64 (const guint8 *p)
{
  return (guint64) le32 (p) | (guint64) le32 (p + 4) << 32;
}

/* Reads the current header copy of the metadata image: FALSE when the
 * file is empty or all zeroes (never written), or neither copy is intact
 * (then *why says so). */
static gboolean
md_header (const char *path, guint8 *hdr, char **why)
{
  g_autofree guint8 *buf = g_malloc0 (2 * MD_HEADER);
  guint64 best_gen = 0;
  gboolean found = FALSE, blank = TRUE;
  int fd = g_open (path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
  gssize n;

  if (fd < 0) {
    *why = g_strdup_printf ("cannot read %s: %s", path, g_strerror (errno));
    return FALSE;
  }
  n = pread (fd, buf, 2 * MD_HEADER, 0);
  close (fd);
  if (n < 0) {
    *why = g_strdup_printf ("cannot read %s: %s", path, g_strerror (errno));
    return FALSE;
  }
  for (gssize i = 0; i < n && blank; i++)
    blank = buf[i] == 0;
  if (blank)
    return FALSE;               /* nothing recorded: nothing to keep */
  for (guint c = 0; n == 2 * MD_HEADER && c < 2; c++) {
    guint8 *h = buf + c * MD_HEADER;
    guint32 sum = le32 (h + 92);

    if (memcmp (h, "SHADOWMD", 8) != 0 || le32 (h + 8) != 2 || le32 (h + 12) != MD_HEADER)
      continue;
    memset (h + 92, 0, 4);
    if (shd_lv_md_crc32c (h, MD_HEADER) != sum)
      continue;
    if (!found || le64 (h + 16) > best_gen) {
      best_gen = le64 (h + 16);
      memcpy (hdr, h, MD_HEADER);
      found = TRUE;
    }
  }
  if (!found)
    *why = g_strdup ("its header is not an intact version 2 header");
  return found;
}

/* May the maps of the metadata image at md_path be kept for a disk whose
 * own image is origin?  Only if the last stop was clean, the disk's own
 * image was the active tier then (it held every chunk), and it has not
 * changed since: its ctime and size are those recorded at that stop
 * (anything that writes, truncates or chowns a file sets its ctime to the
 * current time, and nothing can set it back).  Otherwise *why says what
 * failed and the maps must be forgotten. */
gboolean
shd_lv_md_keep (const char *md_path, const char *origin, char **why)
{
  return shd_lv_md_check (md_path, origin, NULL, why);
}

gboolean
shd_lv_md_check (const char *md_path, const char *origin, gboolean *origin_whole, char **why)
{
  g_autofree guint8 *hdr = g_malloc0 (MD_HEADER);
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  guint8 id[32];
  gsize id_len = sizeof (id);
  const guint8 *slot;
  guint32 active, flags;
  struct stat st;

  if (origin_whole)
    *origin_whole = TRUE;
  if (!md_header (md_path, hdr, why)) {
    /* an unreadable header may hide newer data on a tier */
    if (origin_whole && *why != NULL)
      *origin_whole = FALSE;
    if (*why == NULL)
      *why = g_strdup ("no maps recorded yet");
    return FALSE;
  }
  if (origin_whole)
    *origin_whole = FALSE;
  if (le64 (hdr + 24) & MD_IN_USE) {
    *why = g_strdup ("the shadow was not stopped cleanly (QEMU killed, host crash): "
                     "what reached the disk's image since cannot be known");
    return FALSE;
  }
  active = le32 (hdr + 60);
  if (active >= MD_SLOTS || le32 (hdr + 88) != MD_TABLE) {
    *why = g_strdup ("its header names no active tier");
    return FALSE;
  }
  slot = hdr + MD_TABLE + active * MD_SLOT_SIZE;
  flags = le32 (slot);
  g_checksum_update (sum, (const guchar *) origin, strlen (origin));
  g_checksum_get_digest (sum, id, &id_len);
  if (!(flags & MD_SLOT_USED) || memcmp (slot + 16, id, sizeof (id)) != 0) {
    *why = g_strdup ("the disk's own image was not the active tier at the last stop");
    return FALSE;
  }
  /* a clean stop with the origin active: it held every chunk (libvirt's
   * disks switch to their image only once it is synced) */
  if (origin_whole)
    *origin_whole = TRUE;
  if (!(flags & MD_SLOT_STAMPED)) {
    *why = g_strdup ("the disk's image has no size and ctime recorded at the last stop");
    return FALSE;
  }
  if (g_stat (origin, &st) < 0) {
    *why = g_strdup_printf ("%s: %s", origin, g_strerror (errno));
    return FALSE;
  }
  if ((gint64) le64 (slot + 72) != (gint64) st.st_ctim.tv_sec ||
      le32 (slot + 68) != (guint32) st.st_ctim.tv_nsec ||
      (gint64) le64 (slot + 80) != (gint64) st.st_size) {
    *why = g_strdup ("the disk's image changed while the shadow was out (its ctime or "
                     "size is not the one recorded at the last stop)");
    return FALSE;
  }
  return TRUE;
}

/* Forgets every map: an empty metadata image is formatted afresh, the
 * disk's image its active tier and every other tier stale. */
static gboolean
md_wipe (const char *path, GError **error)
{
  int fd = g_open (path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0);
  int saved;

  if (fd < 0 || ftruncate (fd, 0) < 0) {
    saved = errno;
    if (fd >= 0)
      close (fd);
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved),
                 "cannot empty the metadata image %s: %s", path, g_strerror (saved));
    return FALSE;
  }
  close (fd);
  return TRUE;
}

/* ---- QMP arguments ---- */

/* cache.direct and cache.no-flush as a node reports them */
static void
copy_cache (JsonObject *to, JsonObject *info)
{
  JsonObject *c = info && json_object_has_member (info, "cache") ?
                  json_object_get_object_member (info, "cache") : NULL;
  JsonObject *o;

  if (c == NULL)
    return;
  o = json_object_new ();
  json_object_set_boolean_member (o, "direct",
                                  json_object_get_boolean_member_with_default (c, "direct", FALSE));
  json_object_set_boolean_member (o, "no-flush",
                                  json_object_get_boolean_member_with_default (c, "no-flush", FALSE));
  json_object_set_object_member (to, "cache", o);
}

static JsonObject *
file_node (const char *driver, const char *node, const char *filename, JsonObject *like)
{
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "driver", driver);
  json_object_set_string_member (o, "node-name", node);
  json_object_set_string_member (o, "filename", filename);
  json_object_set_string_member (o, "discard", "unmap");
  copy_cache (o, like);
  return o;
}

/* The format node's options as libvirt gave them, with another file. */
static JsonObject *
format_options (const Graph *g, const char *root, const char *file, const ShdLvDomDisk *dd)
{
  JsonObject *info = node_info (g, root);
  JsonObject *o = json_object_new ();
  const char *drv = json_object_get_string_member_with_default (info, "drv", "raw");
  const char *backing = child_of (g, root, "backing");
  const char *dz = json_object_get_string_member_with_default (info, "detect_zeroes", NULL);

  json_object_set_string_member (o, "driver", drv);
  json_object_set_string_member (o, "node-name", root);
  json_object_set_boolean_member (o, "read-only",
                                  json_object_get_boolean_member_with_default (info, "ro", FALSE));
  json_object_set_string_member (o, "file", file);
  if (backing)
    json_object_set_string_member (o, "backing", backing);
  else if (strcmp (drv, "qcow2") == 0 || strcmp (drv, "qed") == 0 ||
           strcmp (drv, "vmdk") == 0)
    json_object_set_null_member (o, "backing");
  copy_cache (o, info);
  if (dz && strcmp (dz, "off") != 0)
    json_object_set_string_member (o, "detect-zeroes", dz);
  if (dd && dd->discard)
    json_object_set_string_member (o, "discard", dd->discard);
  return o;
}

/* libvirt's storage node's options as libvirt gives them */
static JsonObject *
storage_options (const Graph *g, const char *storage, const ShdLvDomDisk *dd)
{
  JsonObject *info = node_info (g, storage);
  JsonObject *o = json_object_new ();

  json_object_set_string_member (o, "driver",
                                 json_object_get_string_member_with_default (info, "drv", "file"));
  json_object_set_string_member (o, "node-name", storage);
  json_object_set_string_member (o, "filename",
                                 json_object_get_string_member_with_default (info, "file", ""));
  json_object_set_boolean_member (o, "auto-read-only", TRUE);
  json_object_set_string_member (o, "discard", "unmap");
  copy_cache (o, info);
  if (dd && dd->io && strcmp (dd->io, "default") != 0)
    json_object_set_string_member (o, "aio", dd->io);
  return o;
}

static void
set_typed (JsonObject *o, const char *key, const char *value)
{
  static const char *const ints[] = { "chunk-size", "prewarm-speed", NULL };

  if (g_strv_contains (ints, key))
    json_object_set_int_member (o, key, g_ascii_strtoll (value, NULL, 10));
  else if (strcmp (key, "copy-on-read") == 0)
    json_object_set_boolean_member (o, key, strcmp (value, "true") == 0);
  else
    json_object_set_string_member (o, key, value);
}

static JsonObject *
shadow_options (const ShdLvDisk *spec, GPtrArray *children, const char *active)
{
  static const char *const passed[] = {
    "chunk-size", "prewarm", "prewarm-speed", "read-from", "copy-on-read", NULL
  };
  g_autofree char *node = shd_lv_node_shadow (spec->target);
  JsonObject *o = json_object_new ();
  JsonArray *ch = json_array_new ();

  json_object_set_string_member (o, "driver", "shadow");
  json_object_set_string_member (o, "node-name", node);
  for (guint i = 0; i < children->len; i++)
    json_array_add_string_element (ch, children->pdata[i]);
  json_object_set_array_member (o, "children", ch);
  json_object_set_string_member (o, "active-child", active);
  /* async only with metadata (lvmeta.c): the maps say where data is */
  json_object_set_string_member (o, "write-mode",
                                 g_strcmp0 (g_hash_table_lookup (spec->disk_attrs,
                                                                 "write-mode"), "async") == 0 ?
                                 "async" : "sync");
  for (guint i = 0; passed[i]; i++) {
    const char *v = g_hash_table_lookup (spec->disk_attrs, passed[i]);

    if (v)
      set_typed (o, passed[i], v);
  }
  json_object_set_boolean_member (o, "copy-compare", shd_lv_disk_copy_compare (spec));
  return o;
}

static JsonObject *
reopen_args (JsonObject *first, JsonObject *second)
{
  JsonObject *args = json_object_new ();
  JsonArray *opts = json_array_new ();

  json_array_add_object_element (opts, first);
  if (second)
    json_array_add_object_element (opts, second);
  json_object_set_array_member (args, "options", opts);
  return args;
}

/* ---- removal of the agent's nodes ---- */

static gboolean is_rbd (const Graph *g, const char *node);
static JsonObject *rbd_storage_options (const ShdLvMonitor *m, const Graph *g,
                                        const char *storage, GError **error);

/* The format node's file for the one QMP command of a hand-over (attach,
 * detach) */
static char *
node_handover (const char *target)
{
  return g_strdup_printf ("shd-%s-tmp", target);
}

static void
del_node (const ShdLvMonitor *m, const Graph *g, const char *node)
{
  g_autoptr (JsonObject) args = NULL;
  g_autoptr (GError) error = NULL;

  if (node_info (g, node) == NULL)
    return;
  args = json_object_new ();
  json_object_set_string_member (args, "node-name", node);
  if (!run0 (m, "blockdev-del", args, &error))
    g_warning ("%s", error->message);
}

static void
del_group (const ShdLvMonitor *m, const char *id)
{
  g_autoptr (JsonObject) args = json_object_new ();
  g_autoptr (JsonNode) r = NULL;

  json_object_set_string_member (args, "id", id);
  r = run (m, "object-del", args, NULL);        /* absent: nothing to do */
}

/* Deletes every node named shd-TARGET*, parents first, and the throttle
 * groups; uses a fresh view of the graph. */
static void
delete_ours (const ShdLvMonitor *m, const char *target)
{
  Graph g = { 0 };
  g_autofree char *shadow = shd_lv_node_shadow (target);
  g_autofree char *base = shd_lv_node_base (target);
  g_autoptr (GError) error = NULL;

  if (!graph_load (m, &g, &error)) {
    g_warning ("cannot clean up after disk %s: %s", target, error->message);
    graph_clear (&g);
    return;
  }
  del_node (m, &g, shadow);
  {
    g_autofree char *md_node = shd_lv_node_meta (target);

    del_node (m, &g, md_node);
  }
  for (guint pass = 0; pass < 2; pass++) {
    /* throttle filters ('t') before the files under them ('f') */
    for (guint i = 0; i < 9; i++) {
      g_autofree char *n = shd_lv_node_tier (target, i, pass == 0);

      del_node (m, &g, n);
    }
  }
  for (guint i = 0; i < 9; i++) {
    g_autofree char *id = shd_lv_throttle_group (target, i);

    del_group (m, id);
  }
  if (!has_foreign_parent (&g, base, target))
    del_node (m, &g, base);
  {
    g_autofree char *tmp = node_handover (target);

    if (!has_foreign_parent (&g, tmp, target))
      del_node (m, &g, tmp);
  }
  graph_clear (&g);
}

/* With the format node on the hand-over node: deletes the shadow and the
 * rest of ours, so that libvirt's storage node is free, and gives it back
 * to the format node (reopening it too makes QEMU re-read its length).
 * The format node goes first: QEMU commits a reopen from the last node to
 * the first, and each node re-reads its length as it commits, so the
 * storage node must have its new length before the format node looks (a
 * raw node's length is its file's; the other way round a grown raw disk
 * shrinks back). */
static gboolean
give_back (const ShdLvMonitor *m, const Graph *g, const char *target, const char *root,
           const char *storage, const ShdLvDomDisk *dd, GError **error)
{
  g_autofree char *tmp = node_handover (target);
  g_autoptr (JsonObject) args = NULL;
  g_autoptr (JsonObject) del = json_object_new ();
  g_autoptr (GError) e = NULL;

  delete_ours (m, target);
  /* an rbd node's size is the image's at every moment, and its options
   * are libvirt's, which a reopen would have to repeat: only the format
   * node goes back */
  args = reopen_args (format_options (g, root, storage, dd),
                      is_rbd (g, storage) ? NULL : storage_options (g, storage, dd));
  if (!run0 (m, "blockdev-reopen", args, error)) {
    g_prefix_error (error, "disk %s: giving the image back to %s (the format node stays "
                    "on %s, unlocked): ", target, storage, tmp);
    return FALSE;
  }
  json_object_set_string_member (del, "node-name", tmp);
  if (!run0 (m, "blockdev-del", del, &e))
    g_warning ("disk %s: %s", target, e->message);
  return TRUE;
}

/* Puts the format node root on the hand-over node (a file node of its
 * own on the image, without locking: see attach_once), off libvirt's
 * storage node or the shadow.  Reuses one left over. */
static gboolean
hand_over (const ShdLvMonitor *m, const Graph *g, const char *target, const char *root,
           const char *storage, const ShdLvDomDisk *dd, GError **error)
{
  g_autofree char *tmp = node_handover (target);
  g_autoptr (JsonObject) args = NULL;

  if (node_info (g, tmp) == NULL) {
    g_autoptr (JsonObject) o = NULL;

    if (is_rbd (g, storage)) {
      /* A second rbd node on the image, with libvirt's options.  QEMU
       * takes no image lock on RBD, so this step unlocks nothing; the two
       * are librbd handles of one process (an image with exclusive-lock
       * passes its lock between them on their writes) */
      o = rbd_storage_options (m, g, storage, error);
      if (o == NULL)
        return FALSE;
      json_object_set_string_member (o, "node-name", tmp);
      json_object_set_string_member (o, "discard", "unmap");
      copy_cache (o, node_info (g, storage));
    } else {
      o = file_node (node_str (g, storage, "drv"), tmp, node_str (g, storage, "file"),
                     node_info (g, storage));
      json_object_set_string_member (o, "locking", "off");
    }
    if (!run0 (m, "blockdev-add", o, error))
      return FALSE;
  }
  args = reopen_args (format_options (g, root, tmp, dd), NULL);
  return run0 (m, "blockdev-reopen", args, error);
}

/* ---- RBD: a disk on an rbd image, tiers on rbd images ---- */

static gboolean
is_rbd (const Graph *g, const char *node)
{
  return g_strcmp0 (node_str (g, node, "drv"), "rbd") == 0;
}

/* libvirt's rbd storage node's options, from the json: filename QEMU
 * makes of them (pool, image, conf, user, server ...), with the key-secret
 * that filename leaves out: libvirt names the secret object it passes
 * the key in after the node, NODE-auth-secret0 (libvirt 9.0, checked in
 * /objects).  Any rbd node of that QEMU may use that object. */
static JsonObject *
rbd_storage_options (const ShdLvMonitor *m, const Graph *g, const char *storage,
                     GError **error)
{
  const char *fn = node_str (g, storage, "file");
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autofree char *secret = g_strdup_printf ("%s-auth-secret0", storage);
  g_autoptr (JsonObject) args = json_object_new ();
  g_autoptr (JsonNode) objs = NULL;
  JsonObject *o;

  if (fn == NULL || !g_str_has_prefix (fn, "json:") ||
      !json_parser_load_from_data (p, fn + 5, -1, NULL) ||
      !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p))) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                 "rbd node %s: its options are not known (filename %s)", storage,
                 fn ? fn : "none");
    return NULL;
  }
  o = json_object_ref (json_node_get_object (json_parser_get_root (p)));
  json_object_set_string_member (args, "path", "/objects");
  objs = run (m, "qom-list", args, NULL);
  for (guint i = 0; objs && JSON_NODE_HOLDS_ARRAY (objs) &&
       i < json_array_get_length (json_node_get_array (objs)); i++) {
    JsonObject *e = json_array_get_object_element (json_node_get_array (objs), i);

    if (e && g_strcmp0 (json_object_get_string_member_with_default (e, "name", ""),
                        secret) == 0)
      json_object_set_string_member (o, "key-secret", secret);
  }
  return o;
}

/* Where shadowd's own rbd nodes (tiers, metadata) find the cluster: those
 * of libvirt's storage node when the disk is on RBD (its monitors, conf,
 * user and secret object), each overridden by the <disk>'s rbd-conf,
 * rbd-user, rbd-key-secret.  Without them, librbd's defaults. */
static JsonObject *
rbd_location (const ShdLvDisk *spec, JsonObject *storage_opts)
{
  static const char *const inherited[] = {
    "conf", "user", "key-secret", "server", "auth-client-required", NULL
  };
  JsonObject *o = json_object_new ();
  const char *conf = g_hash_table_lookup (spec->disk_attrs, "rbd-conf");
  const char *user = g_hash_table_lookup (spec->disk_attrs, "rbd-user");
  const char *secret = g_hash_table_lookup (spec->disk_attrs, "rbd-key-secret");

  for (guint i = 0; storage_opts && inherited[i]; i++)
    if (json_object_has_member (storage_opts, inherited[i]))
      json_object_set_member (o, inherited[i],
                              json_node_copy (json_object_get_member (storage_opts,
                                                                      inherited[i])));
  if (conf)
    json_object_set_string_member (o, "conf", conf);
  if (user)
    json_object_set_string_member (o, "user", user);
  if (secret)
    json_object_set_string_member (o, "key-secret", secret);
  return o;
}

/* blockdev-create of the rbd image pool/image, blocking: the job is
 * polled until it concludes, then dismissed */
static gboolean
rbd_create (const ShdLvMonitor *m, const char *job, JsonObject *loc, guint64 size,
            GError **error)
{
  g_autoptr (JsonObject) args = shd_rbd_create_args (job, loc, size);
  g_autoptr (JsonObject) dis = json_object_new ();
  g_autoptr (JsonNode) r = NULL;
  g_autofree char *why = NULL;
  gboolean concluded = FALSE;

  if (!run0 (m, "blockdev-create", args, error))
    return FALSE;
  for (guint i = 0; i < SHD_RBD_JOB_POLLS && !concluded; i++) {
    g_autoptr (JsonNode) jobs = NULL;
    const char *jerr = NULL;

    g_usleep (SHD_RBD_JOB_POLL_MS * 1000);
    jobs = run (m, "query-jobs", NULL, error);
    if (jobs == NULL || !shd_rbd_job_state (jobs, job, &concluded, &jerr, error))
      return FALSE;
    why = g_strdup (jerr);
  }
  json_object_set_string_member (dis, "id", job);
  r = run (m, "job-dismiss", dis, NULL);        /* so that the id can be used again */
  if (!concluded || why) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", why ? why :
                 "blockdev-create did not conclude within a minute");
    return FALSE;
  }
  return TRUE;
}

/* A raw node over the rbd image pool/image (NODE-rbd), as a file tier's
 * node: opened if the image exists, else created with size bytes (through
 * QEMU) and opened.  *created says which. */
static gboolean
open_rbd (const ShdLvMonitor *m, const char *node, JsonObject *loc_in, const char *rbd,
          guint64 size, gboolean *created, GError **error)
{
  g_autofree char *pool = g_strndup (rbd, strcspn (rbd, "/"));
  const char *image = rbd + strlen (pool) + 1;
  g_autofree char *rbd_node = g_strdup_printf ("%s-rbd", node);
  g_autofree char *job = g_strdup_printf ("shadowd-create-%s", node);
  g_autoptr (JsonObject) loc = json_object_new ();
  g_autoptr (JsonObject) args = NULL;
  g_autoptr (GError) add_error = NULL;
  g_autoptr (GError) create_error = NULL;
  GList *members = json_object_get_members (loc_in);

  *created = FALSE;
  for (GList *l = members; l; l = l->next)
    json_object_set_member (loc, l->data,
                            json_node_copy (json_object_get_member (loc_in, l->data)));
  g_list_free (members);
  shd_rbd_set_location (loc, pool, image, NULL, NULL, NULL);
  args = shd_rbd_raw_node (node, rbd_node, loc);
  if (run0 (m, "blockdev-add", args, &add_error))
    return TRUE;
  /* the image may be missing: create it, then try once more.  An image
   * that exists is never created again: blockdev-create refuses it */
  if (!rbd_create (m, job, loc, size, &create_error)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                 "cannot open the rbd image %s (%s), nor create it (%s)", rbd,
                 add_error->message, create_error->message);
    return FALSE;
  }
  *created = TRUE;
  if (!run0 (m, "blockdev-add", args, error)) {
    g_prefix_error (error, "rbd image %s, created: ", rbd);
    return FALSE;
  }
  return TRUE;
}

/* ---- attach ---- */

static gboolean
check_root (const Graph *g, const ShdLvDomDisk *dd, const char **root, const char **file,
            GError **error)
{
  JsonObject *info;

  if (dd->alias == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                 "disk %s has no alias in the live XML: is the domain running?", dd->target);
    return FALSE;
  }
  *root = root_of (g, dd->alias);
  if (*root == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                 "disk %s (%s): no block node behind the device (an empty drive?)",
                 dd->target, dd->alias);
    return FALSE;
  }
  info = node_info (g, *root);
  *file = child_of (g, *root, "file");
  if (*file == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "disk %s: libvirt gave the device the storage node %s directly "
                 "(a raw image without a format node); the shadow goes under a format "
                 "node, and QEMU 10.0 cannot move a running device to another node. "
                 "Use a qcow2 image for this disk", dd->target, *root);
    return FALSE;
  }
  if (info && json_object_get_boolean_member_with_default (info, "encrypted", FALSE)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "disk %s: encrypted images are not supported", dd->target);
    return FALSE;
  }
  if (info && json_object_get_boolean_member_with_default (info, "ro", FALSE)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "disk %s is read-only: nothing to tier", dd->target);
    return FALSE;
  }
  return TRUE;
}

gboolean
shd_lv_is_attached (const ShdLvMonitor *m, const char *target, const ShdLvDomDisk *dd,
                    GError **error)
{
  Graph g = { 0 };
  g_autofree char *shadow = shd_lv_node_shadow (target);
  const char *root, *file;
  gboolean ok;

  if (!graph_load (m, &g, error)) {
    graph_clear (&g);
    return FALSE;
  }
  ok = (dd && dd->alias && (root = root_of (&g, dd->alias)) &&
        (file = child_of (&g, root, "file")) && strcmp (file, shadow) == 0) ||
       shadow_parent (&g, shadow) != NULL;
  graph_clear (&g);
  return ok;
}

/* libvirt's storage node or the device got a write or a discard since QEMU
 * opened the image: the highest offset written to the storage node (QEMU
 * keeps it for every node, for every write, write-zeroes included) and the
 * device's discards (a discard is not a write there). */
static gboolean
image_written (const ShdLvMonitor *m, const char *storage, const char *alias,
               gboolean *written, GError **error)
{
  g_autoptr (JsonObject) args = json_object_new ();
  g_autoptr (JsonNode) nodes = NULL;
  g_autoptr (JsonNode) devs = NULL;
  g_autofree char *mid = g_strdup_printf ("/peripheral/%s/", alias);
  gboolean seen_node = FALSE, seen_dev = FALSE;
  JsonArray *a;

  *written = TRUE;
  json_object_set_boolean_member (args, "query-nodes", TRUE);
  nodes = run (m, "query-blockstats", args, error);
  devs = nodes ? run (m, "query-blockstats", NULL, error) : NULL;
  if (devs == NULL || !JSON_NODE_HOLDS_ARRAY (nodes) || !JSON_NODE_HOLDS_ARRAY (devs)) {
    if (error && *error == NULL)
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "unexpected query-blockstats reply");
    return FALSE;
  }
  a = json_node_get_array (nodes);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *e = json_array_get_object_element (a, i);
    JsonObject *st = e && json_object_has_member (e, "stats") ?
                     json_object_get_object_member (e, "stats") : NULL;

    if (st && g_strcmp0 (json_object_get_string_member_with_default (e, "node-name", ""),
                         storage) == 0) {
      seen_node = TRUE;
      if (json_object_get_int_member_with_default (st, "wr_highest_offset", 1) != 0)
        return TRUE;
    }
  }
  a = json_node_get_array (devs);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *e = json_array_get_object_element (a, i);
    JsonObject *st = e && json_object_has_member (e, "stats") ?
                     json_object_get_object_member (e, "stats") : NULL;

    if (st && strstr (json_object_get_string_member_with_default (e, "qdev", ""), mid)) {
      seen_dev = TRUE;
      if (json_object_get_int_member_with_default (st, "unmap_operations", 1) != 0)
        return TRUE;
    }
  }
  *written = !seen_node || !seen_dev;
  return TRUE;
}

/* FALSE with error while QEMU is in a migration's final states: an
 * incoming QEMU's nodes are inactive and the source's shadow still writes
 * the tiers and the maps; an outgoing one's are inactive or about to be.
 * No file is touched then (docs/libvirt.md, "Live migration"). */
static gboolean
not_migrating (const ShdLvMonitor *m, const char *target, GError **error)
{
  static const char *const states[] = { "inmigrate", "finish-migrate", "postmigrate", NULL };
  g_autoptr (JsonNode) st = run (m, "query-status", NULL, error);
  const char *status;

  if (st == NULL)
    return FALSE;
  status = JSON_NODE_HOLDS_OBJECT (st) ?
           json_object_get_string_member_with_default (json_node_get_object (st), "status", "") : "";
  if (g_strv_contains (states, status)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "disk %s: QEMU is migrating (%s): "
                 "the shadow goes in once the domain runs", target, status);
    return FALSE;
  }
  return TRUE;
}

static gboolean
attach_once (const ShdLvMonitor *m, const ShdLvDisk *spec, const ShdLvDomDisk *dd,
             const char *const *tier_dirs, gboolean cold, ShdLvAttachResult *result,
             char **warmth, GError **error);
static const char *libvirt_storage (const Graph *g, const char *target, const char *path);

gboolean
shd_lv_attach (const ShdLvMonitor *m, const ShdLvDisk *spec, const ShdLvDomDisk *dd,
               const char *const *tier_dirs, ShdLvAttachResult *result, char **warmth,
               GError **error)
{
  g_autoptr (GError) e = NULL;
  g_autofree char *md = shd_lv_meta_path (spec);

  *warmth = NULL;
  if (attach_once (m, spec, dd, tier_dirs, FALSE, result, warmth, &e))
    return TRUE;
  if (md == NULL || *warmth == NULL || !g_str_has_prefix (*warmth, "tiers warm")) {
    g_propagate_error (error, g_steal_pointer (&e));
    return FALSE;
  }
  /* the kept maps were refused (a tier replaced, the tiers changed ...):
   * forget them and start cold */
  g_free (*warmth);
  *warmth = g_strdup_printf ("tiers cold: the shadow node refused the kept maps: %s",
                             e->message);
  {
    g_autofree char *why = g_steal_pointer (warmth);
    gboolean ok = attach_once (m, spec, dd, tier_dirs, TRUE, result, warmth, error);

    g_free (*warmth);
    *warmth = g_steal_pointer (&why);
    return ok;
  }
}

static gboolean
attach_once (const ShdLvMonitor *m, const ShdLvDisk *spec, const ShdLvDomDisk *dd,
             const char *const *tier_dirs, gboolean cold, ShdLvAttachResult *result,
             char **warmth, GError **error)
{
  Graph g = { 0 };
  g_autofree char *shadow = shd_lv_node_shadow (spec->target);
  g_autofree char *base = shd_lv_node_base (spec->target);
  g_autofree char *tmp = node_handover (spec->target);
  g_autoptr (GPtrArray) children = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *origin_child = NULL;
  g_autofree char *md = shd_lv_meta_path (spec);
  g_autofree char *md_node = shd_lv_node_meta (spec->target);
  g_autofree char *md_rbd = NULL;
  g_autofree char *why = NULL;
  g_autofree char *rbd_image = NULL;
  g_autoptr (JsonObject) rbd_opts = NULL;
  g_autoptr (JsonObject) rbd_loc = NULL;
  const char *root, *file, *storage_drv, *path, *fmt;
  JsonObject *rinfo, *finfo;
  guint64 len = 0;
  struct stat st;
  gboolean ok = FALSE, touched = FALSE, warm = FALSE, written = TRUE, handed = FALSE;
  gboolean disk_rbd, created;
  guint idx = 1;

  {
    gboolean r;
    g_autofree char *img = shd_lv_meta_image (spec, &r);

    if (r)
      md_rbd = g_steal_pointer (&img);
  }

  if (!not_migrating (m, spec->target, error) || !graph_load (m, &g, error) ||
      !check_root (&g, dd, &root, &file, error))
    goto out;
  if (strcmp (file, shadow) == 0) {
    if (g_strcmp0 (node_str (&g, shadow, "drv"), "shadow") != 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "disk %s: node %s is not a "
                   "shadow node", spec->target, shadow);
      goto out;
    }
    *result = SHD_LV_ADOPTED;
    ok = TRUE;
    goto adopted;
  }
  if (node_info (&g, shadow) && shadow_parent (&g, shadow)) {
    /* under an image that is no longer the top (a disk-only snapshot):
     * it still serves that image */
    *result = SHD_LV_ADOPTED;
    ok = TRUE;
    goto adopted;
  }
  if (node_info (&g, shadow) || node_info (&g, base) || node_info (&g, tmp)) {
    /* left over: a failed insertion, or the disk moved (blockcopy pivot) */
    delete_ours (m, spec->target);
    graph_clear (&g);
    if (!graph_load (m, &g, error) || !check_root (&g, dd, &root, &file, error))
      goto out;
    if (strcmp (file, tmp) == 0) {
      /* a hand-over that could not give the image back: do it now */
      const char *storage = libvirt_storage (&g, spec->target, node_str (&g, tmp, "file"));

      if (storage == NULL || !give_back (m, &g, spec->target, root, storage, dd, error)) {
        if (error && *error == NULL)
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "disk %s: the format node is on "
                       "shadowd's hand-over node %s, and libvirt's storage node is gone",
                       spec->target, tmp);
        goto out;
      }
      graph_clear (&g);
      if (!graph_load (m, &g, error) || !check_root (&g, dd, &root, &file, error))
        goto out;
    }
    if (node_info (&g, shadow)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "disk %s: a node %s is in the way "
                   "and cannot be deleted", spec->target, shadow);
      goto out;
    }
  }
  rinfo = node_info (&g, root);
  finfo = node_info (&g, file);
  storage_drv = node_str (&g, file, "drv");
  path = node_str (&g, file, "file");
  disk_rbd = g_strcmp0 (storage_drv, "rbd") == 0;
  if (finfo == NULL || path == NULL ||
      (g_strcmp0 (storage_drv, "file") != 0 && g_strcmp0 (storage_drv, "host_device") != 0 &&
       !disk_rbd)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "disk %s: its storage node %s is a %s node; only local files, block "
                 "devices and rbd images can be tiered", spec->target, file,
                 storage_drv ? storage_drv : "?");
    goto out;
  }
  if (disk_rbd && g_strcmp0 (g_hash_table_lookup (spec->disk_attrs, "write-mode"), "async") == 0) {
    /* a disk on RBD always starts cold, which would drop what only a
     * tier holds; and the hook settles image files only */
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                 "disk %s: write-mode async is not supported for a disk on RBD; use sync",
                 spec->target);
    goto out;
  }
  if (disk_rbd) {
    /* the disk is an rbd image: no file to stat, own or stamp */
    JsonObject *fimg = json_object_get_object_member (finfo, "image");

    rbd_opts = rbd_storage_options (m, &g, file, error);
    if (rbd_opts == NULL)
      goto out;
    rbd_image = g_strdup_printf ("%s/%s",
                                 json_object_get_string_member_with_default (rbd_opts, "pool", ""),
                                 json_object_get_string_member_with_default (rbd_opts, "image", ""));
    path = rbd_image;
    len = fimg ? (guint64) json_object_get_int_member_with_default (fimg, "virtual-size", 0) : 0;
  }
  if (dd->source && strcmp (dd->source, path) != 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                 "disk %s: QEMU's storage node %s has %s, the domain XML says %s",
                 spec->target, file, path, dd->source);
    goto out;
  }
  for (guint i = 0; disk_rbd && i < spec->tiers->len; i++) {
    const ShdLvTier *t = spec->tiers->pdata[i];

    if (g_strcmp0 (t->rbd, rbd_image) == 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "disk %s: tier %s is the disk's own image %s", spec->target, t->name,
                   rbd_image);
      goto out;
    }
  }
  if (!disk_rbd && g_stat (path, &st) < 0) {
    int saved = errno;

    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved), "%s: %s", path,
                 g_strerror (saved));
    goto out;
  }
  fmt = json_object_get_string_member_with_default (rinfo, "drv", "raw");
  /* New tier images as long as the image: a format that grows its file
   * grows the shadow node, and every tier with it, as it writes */
  if (!disk_rbd)
    len = S_ISREG (st.st_mode) ? (guint64) st.st_size : 0;
  if (disk_rbd || shd_lv_disk_on_rbd (spec)) {
    /* Always cold.  Keeping maps needs proof that no image changed while
     * the shadow was out: a file's ctime gives it, an rbd image has
     * nothing like it that QEMU reports (the driver identifies an rbd
     * child by its name only, so it could not see a tier image written
     * or replaced either), and shadowd cannot read an rbd metadata image */
    if (md_rbd || md) {
      g_free (*warmth);
      *warmth = g_strdup_printf ("tiers cold: %s is on RBD, whose images carry no stamp "
                                 "to prove them unchanged since the last stop",
                                 disk_rbd ? "the disk" : "a tier");
    }
  } else if (md) {
    /* Warm only if the maps describe the image as it is, and nothing
     * wrote it since QEMU opened it (docs/libvirt.md, "Warm restarts") */
    const char *rf = g_hash_table_lookup (spec->disk_attrs, "read-from");
    const char *wm = g_hash_table_lookup (spec->disk_attrs, "write-mode");

    /* Write-back: the newest data of a chunk may be on a tier only.  The
     * hook settles the image before QEMU opens it; if it did not, forgetting
     * the maps would lose those writes: keep them and refuse. */
    if (g_strcmp0 (wm, "async") == 0 && g_file_test (md, G_FILE_TEST_EXISTS)) {
      g_autofree char *w = NULL;
      gboolean whole = FALSE;

      shd_lv_md_check (md, path, &whole, &w);
      if (!whole) {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                     "disk %s is write-back and its image was not settled before QEMU "
                     "opened it (%s): newer data is on a tier; the maps are kept. Is the "
                     "shadowtier libvirt hook installed? Stop the domain and start it "
                     "again with it", spec->target, w);
        goto out;
      }
    }
    if (!cold && g_file_test (md, G_FILE_TEST_EXISTS)) {
      if (!image_written (m, file, dd->alias, &written, error))
        goto out;
      if (written)
        why = g_strdup ("the disk's image was written since QEMU opened it");
      else if (!shd_lv_md_keep (md, path, &why))
        ;
      else if (g_strcmp0 (rf, "fastest") == 0)
        why = g_strdup ("read-from is fastest: a tier could serve a read before the last check");
      else
        warm = TRUE;
    }
    g_free (*warmth);
    *warmth = warm ? g_strdup ("tiers warm: the maps kept at the last clean stop are valid") :
              g_strdup_printf ("tiers cold: %s", why ? why : "no maps recorded yet");
  }
  if (!disk_rbd && !S_ISREG (st.st_mode)) {
    /* a block device cannot grow; the tiers need its size */
    JsonObject *fimg = json_object_get_object_member (finfo, "image");

    len = fimg ? (guint64) json_object_get_int_member_with_default (fimg, "virtual-size", 0) : 0;
    if (strcmp (fmt, "raw") != 0) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                   "disk %s: a %s image on a block device cannot be tiered (it may "
                   "grow past the device's end only in a file)", spec->target, fmt);
      goto out;
    }
  }
  {
    g_autoptr (GStrvBuilder) b = g_strv_builder_new ();
    g_auto (GStrv) roots = NULL;
    g_autofree char *image_dir = g_path_get_dirname (path);

    /* a disk on RBD has no directory: its file tiers go under tier-dirs */
    if (!disk_rbd)
      g_strv_builder_add (b, image_dir);
    for (guint i = 0; tier_dirs && tier_dirs[i]; i++)
      g_strv_builder_add (b, tier_dirs[i]);
    roots = g_strv_builder_end (b);
    for (guint i = 0; i < spec->tiers->len; i++) {
      const ShdLvTier *t = spec->tiers->pdata[i];

      if (t->path && (!path_allowed (t->path, (const char *const *) roots, error) ||
                      (disk_rbd && !dir_owner (t->path, &st, error)) ||
                      !prepare_tier_file (t->path, &st, warm ? 0 : len, len, error)))
        goto out;
    }
    if (md && (!path_allowed (md, (const char *const *) roots, error) ||
               !prepare_tier_file (md, &st, 0, 0, error) || (!warm && !md_wipe (md, error))))
      goto out;
  }

  if (disk_rbd || shd_lv_disk_on_rbd (spec))
    rbd_loc = rbd_location (spec, rbd_opts);

  /* From here on, QEMU changes: undo on failure. */
  touched = TRUE;
  {
    /* The shadow's origin is libvirt's own storage node, through a raw
     * node that only passes requests on (no second open of the image):
     * the storage node keeps the image's lock for as long as the shadow
     * is in (docs/libvirt.md, "Why this layer") */
    g_autoptr (JsonObject) o = json_object_new ();

    json_object_set_string_member (o, "driver", "raw");
    json_object_set_string_member (o, "node-name", base);
    json_object_set_string_member (o, "file", file);
    json_object_set_string_member (o, "discard", "unmap");
    copy_cache (o, finfo);
    if (!run0 (m, "blockdev-add", o, error))
      goto out;
  }
  for (guint i = 0; i < spec->tiers->len; i++) {
    const ShdLvTier *t = spec->tiers->pdata[i];
    guint ti = t->origin ? 0 : idx++;
    gboolean thr = t->iops_limit || t->bps_limit;
    g_autofree char *fnode = t->origin ? g_strdup (base) : shd_lv_node_tier (spec->target, ti, FALSE);
    g_autofree char *top = thr ? shd_lv_node_tier (spec->target, ti, TRUE) : g_strdup (fnode);

    if (t->rbd) {
      /* an image that exists is only opened (it must be at least as long
       * as the disk: the shadow node refuses a shorter child) */
      if (!open_rbd (m, fnode, rbd_loc, t->rbd, len, &created, error)) {
        g_prefix_error (error, "disk %s: tier %s: ", spec->target, t->name);
        goto out;
      }
      if (created)
        g_message ("disk %s: created the rbd image %s (%.1f MiB) for tier %s", spec->target,
                   t->rbd, len / 1048576.0, t->name);
    } else if (!t->origin) {
      g_autoptr (JsonObject) o = file_node ("file", fnode, t->path, finfo);

      if (!run0 (m, "blockdev-add", o, error))
        goto out;
    }
    if (thr) {
      g_autofree char *gid = shd_lv_throttle_group (spec->target, ti);
      g_autoptr (JsonObject) grp = json_object_new ();
      g_autoptr (JsonObject) o = json_object_new ();
      JsonObject *limits = json_object_new ();

      json_object_set_string_member (grp, "qom-type", "throttle-group");
      json_object_set_string_member (grp, "id", gid);
      if (t->iops_limit)
        json_object_set_int_member (limits, "iops-total", (gint64) t->iops_limit);
      if (t->bps_limit)
        json_object_set_int_member (limits, "bps-total", (gint64) t->bps_limit);
      json_object_set_object_member (grp, "limits", limits);
      if (!run0 (m, "object-add", grp, error))
        goto out;
      json_object_set_string_member (o, "driver", "throttle");
      json_object_set_string_member (o, "node-name", top);
      json_object_set_string_member (o, "throttle-group", gid);
      json_object_set_string_member (o, "file", fnode);
      if (!run0 (m, "blockdev-add", o, error))
        goto out;
    }
    if (t->origin) {
      origin_child = g_strdup (top);
      g_ptr_array_insert (children, 0, g_strdup (top));
    } else {
      g_ptr_array_add (children, g_strdup (top));
    }
  }
  if (md) {
    g_autoptr (JsonObject) o = file_node ("file", md_node, md, finfo);

    if (!run0 (m, "blockdev-add", o, error))
      goto out;
  } else if (md_rbd) {
    /* The metadata image next to the first tier's, POOL/IMAGE.meta;
     * emptied every time (always cold, above): a metadata child of length
     * 0 is formatted afresh and grown by the driver, as an emptied file is */
    g_autoptr (JsonObject) args = json_object_new ();

    if (!open_rbd (m, md_node, rbd_loc, md_rbd, 0, &created, error)) {
      g_prefix_error (error, "disk %s: metadata image: ", spec->target);
      goto out;
    }
    json_object_set_string_member (args, "node-name", md_node);
    json_object_set_int_member (args, "size", 0);
    if (!created && !run0 (m, "block_resize", args, error)) {
      g_prefix_error (error, "disk %s: emptying the metadata image %s: ", spec->target, md_rbd);
      goto out;
    }
  }
  {
    /* The hand-over.  The shadow cannot take libvirt's storage node while
     * the format node has it: both write it and neither shares writing
     * (a read-only shadow does not share it either, and an inactive one
     * cannot go under an active node).  So the format node runs for one
     * QMP command on a file node of its own; without locking, because
     * QEMU's image locks would conflict with the storage node's until the
     * storage node is free.  Meanwhile nobody holds the lock: the shadow
     * takes it back when it opens, and fails to open if another process
     * got the image for writing in between. */
    handed = TRUE;
    if (!hand_over (m, &g, spec->target, root, file, dd, error))
      goto out;
  }
  if (warm) {
    /* The storage node has no parent now: what it counts is final.  A
     * write since the first check: the kept maps go */
    if (!image_written (m, file, dd->alias, &written, error))
      goto out;
    if (written) {
      gboolean ok2;

      if (!give_back (m, &g, spec->target, root, file, dd, error))
        goto out_handed;
      graph_clear (&g);
      ok2 = attach_once (m, spec, dd, tier_dirs, TRUE, result, warmth, error);
      g_free (*warmth);
      *warmth = g_strdup ("tiers cold: the disk's image was written while the shadow went in");
      return ok2;
    }
  }
  {
    g_autoptr (JsonObject) o = shadow_options (spec, children, origin_child);

    if (md || md_rbd)
      json_object_set_string_member (o, "metadata", md_node);
    /* No copy until the shadow is the format node's file: before that
     * the guest writes the image beside it, which the shadow does not
     * see, and a chunk copied before such a write would be valid on a
     * tier that holds its old data.  The copy starts with the reopen
     * below, once every write goes through the shadow. */
    json_object_set_string_member (o, "prewarm", "off");
    if (!run0 (m, "blockdev-add", o, error))
      goto out;
  }
  /* A warm start gives the image no room: a qcow2 image that outgrows its
   * file grows the shadow node (every tier and the maps) as it writes */
  {
    g_autoptr (JsonObject) args = reopen_args (format_options (&g, root, shadow, dd), NULL);

    if (!run0 (m, "blockdev-reopen", args, error))
      goto out;
  }
  handed = FALSE;
  *result = SHD_LV_INSERTED;
  ok = TRUE;
  if (warm) {
    /* the last check: no write reached the image beside the shadow while
     * it went in (the format node's file was the hand-over node until the
     * reopen above; that node has no parent now).  Until now the disk's
     * image is the active tier and the only one read, so nothing stale
     * was served; if it was written, the kept maps go and the tiers start
     * cold. */
    gboolean ok2;

    if (!image_written (m, tmp, dd->alias, &written, error)) {
      written = TRUE;
      g_clear_error (error);
    }
    if (written) {
      gboolean was = FALSE;

      graph_clear (&g);
      if (!shd_lv_detach (m, spec->target, dd, 0, &was, error)) {
        /* It stays in, with maps that may be stale on every tier but the
         * disk's own image (the active one, children.0): take those tiers
         * out of it, so that nothing can ever read them */
        for (guint i = children->len; i > 1; i--) {
          g_autoptr (JsonObject) args = json_object_new ();
          g_autofree char *name = g_strdup_printf ("children.%u", i - 1);
          g_autoptr (GError) e = NULL;

          json_object_set_string_member (args, "parent", shadow);
          json_object_set_string_member (args, "child", name);
          if (!run0 (m, "x-blockdev-change", args, &e))
            g_warning ("disk %s: %s", spec->target, e->message);
        }
        g_prefix_error (error, "disk %s: the disk's image was written while the shadow "
                        "went in, and taking it out again failed (its tiers were removed "
                        "from it): ", spec->target);
        g_free (*warmth);
        *warmth = NULL;
        return FALSE;
      }
      ok2 = attach_once (m, spec, dd, tier_dirs, TRUE, result, warmth, error);
      g_free (*warmth);
      *warmth = g_strdup ("tiers cold: the disk's image was written while the shadow went in");
      return ok2;
    }
  }
  {
    g_autoptr (JsonObject) args = json_object_new ();
    g_autoptr (GError) e = NULL;

    json_object_set_string_member (args, "node-name", tmp);
    if (!run0 (m, "blockdev-del", args, &e))
      g_warning ("disk %s: %s", spec->target, e->message);
  }
  {
    /* The shadow is in: the copy may start (prewarm as configured) */
    g_autoptr (JsonObject) o = shadow_options (spec, children, origin_child);
    g_autoptr (JsonObject) args = NULL;
    g_autoptr (GError) e = NULL;

    if (md || md_rbd)
      json_object_set_string_member (o, "metadata", md_node);
    args = reopen_args (g_steal_pointer (&o), NULL);
    /* the disk works without it: the agent's next reopen sets it again */
    if (!run0 (m, "blockdev-reopen", args, &e))
      g_warning ("disk %s: the shadow is in, but its copy did not start: %s",
                 spec->target, e->message);
  }
adopted:
  /* an older shadowd may have inserted it without one: the agent's
   * reopens must name the metadata child only if there is one */
  if (ok && *result == SHD_LV_ADOPTED && child_of (&g, shadow, "metadata"))
    *warmth = g_strdup ("metadata child in place");
out:
  if (!ok && touched) {
    g_autoptr (GError) e = NULL;

    /* a hand-over begun: the format node may be on the hand-over node */
    if (!handed)
      delete_ours (m, spec->target);
    else if (!give_back (m, &g, spec->target, root, file, dd, &e))
      g_warning ("%s", e->message);
  }
out_handed:
  graph_clear (&g);
  return ok;
}

/* ---- detach ---- */

/* The shadow node's active child and children, from its statistics. */
static gboolean
shadow_state (const ShdLvMonitor *m, const char *shadow, char **active, GPtrArray *children,
              GPtrArray *states, GError **error)
{
  g_autoptr (JsonObject) args = json_object_new ();
  g_autoptr (JsonNode) r = NULL;
  JsonArray *a;

  json_object_set_boolean_member (args, "query-nodes", TRUE);
  r = run (m, "query-blockstats", args, error);
  if (r == NULL || !JSON_NODE_HOLDS_ARRAY (r))
    return FALSE;
  a = json_node_get_array (r);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *e = json_array_get_object_element (a, i);
    JsonObject *ds;
    JsonArray *ch;

    if (g_strcmp0 (json_object_get_string_member_with_default (e, "node-name", ""), shadow) != 0 ||
        !json_object_has_member (e, "driver-specific"))
      continue;
    ds = json_object_get_object_member (e, "driver-specific");
    *active = g_strdup (json_object_get_string_member_with_default (ds, "active", ""));
    ch = json_object_get_array_member (ds, "children");
    for (guint j = 0; ch && j < json_array_get_length (ch); j++) {
      JsonObject *c = json_array_get_object_element (ch, j);

      g_ptr_array_add (children,
                       g_strdup (json_object_get_string_member_with_default (c, "node-name", "")));
      g_ptr_array_add (states,
                       g_strdup (json_object_get_string_member_with_default (c, "state", "")));
    }
    return TRUE;
  }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no statistics for node %s", shadow);
  return FALSE;
}

/* libvirt's own storage node for the image: same file, not ours, unused. */
static const char *
libvirt_storage (const Graph *g, const char *target, const char *path)
{
  g_autofree char *prefix = g_strdup_printf ("shd-%s", target);
  GHashTableIter it;
  gpointer k, v;

  g_hash_table_iter_init (&it, g->nodes);
  while (g_hash_table_iter_next (&it, &k, &v)) {
    const char *drv = json_object_get_string_member_with_default (v, "drv", "");

    if (!g_str_has_prefix (k, prefix) &&
        (strcmp (drv, "file") == 0 || strcmp (drv, "host_device") == 0 ||
         strcmp (drv, "rbd") == 0) &&
        g_strcmp0 (json_object_get_string_member_with_default (v, "file", NULL), path) == 0 &&
        !has_parent (g, k))
      return k;
  }
  return NULL;
}

gboolean
shd_lv_detach (const ShdLvMonitor *m, const char *target, const ShdLvDomDisk *dd,
               guint64 chunk_size, gboolean *was_attached, GError **error)
{
  Graph g = { 0 };
  g_autofree char *shadow = shd_lv_node_shadow (target);
  g_autofree char *base = shd_lv_node_base (target);
  g_autofree char *active = NULL;
  g_autoptr (GPtrArray) children = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) states = g_ptr_array_new_with_free_func (g_free);
  const char *root = NULL, *file = NULL, *storage, *path, *origin = NULL;
  gboolean ok = FALSE;

  *was_attached = FALSE;
  if (!graph_load (m, &g, error))
    goto out;
  root = shadow_parent (&g, shadow);
  if (root)
    file = shadow;
  if (g_strcmp0 (file, shadow) != 0) {
    /* under nothing (device gone, or moved by a block job): just clean up */
    *was_attached = node_info (&g, shadow) != NULL;
    graph_clear (&g);
    delete_ours (m, target);
    return TRUE;
  }
  *was_attached = TRUE;
  if (!shadow_state (m, shadow, &active, children, states, error))
    goto out;
  for (guint i = 0; i < children->len; i++) {
    const char *c = children->pdata[i];
    g_autofree char *t0 = shd_lv_node_tier (target, 0, TRUE);

    if (strcmp (c, base) == 0 || strcmp (c, t0) == 0)
      origin = c;
  }
  if (origin == NULL) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                 "disk %s: the shadow node has no origin child", target);
    goto out;
  }
  if (strcmp (active, origin) != 0) {
    const char *state = "?";
    g_autoptr (JsonObject) args = NULL;
    JsonObject *o = json_object_new ();
    JsonArray *ch = json_array_new ();

    for (guint i = 0; i < children->len; i++) {
      if (strcmp (children->pdata[i], origin) == 0)
        state = states->pdata[i];
      json_array_add_string_element (ch, children->pdata[i]);
    }
    if (strcmp (state, "synced") != 0) {
      json_array_unref (ch);
      json_object_unref (o);
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY,
                   "disk %s: the disk's own image is %s, not synced: it cannot go back "
                   "to libvirt yet (the data is on %s)", target, state, active);
      goto out;
    }
    json_object_set_string_member (o, "driver", "shadow");
    json_object_set_string_member (o, "node-name", shadow);
    json_object_set_array_member (o, "children", ch);
    json_object_set_string_member (o, "active-child", origin);
    json_object_set_string_member (o, "write-mode", "sync");
    if (chunk_size)
      json_object_set_int_member (o, "chunk-size", (gint64) chunk_size);
    if (child_of (&g, shadow, "metadata"))
      json_object_set_string_member (o, "metadata", child_of (&g, shadow, "metadata"));
    args = reopen_args (o, NULL);
    if (!run0 (m, "blockdev-reopen", args, error)) {
      g_prefix_error (error, "disk %s: switching back to its own image: ", target);
      goto out;
    }
  }
  path = node_str (&g, base, "file");
  if (g_strcmp0 (node_str (&g, base, "drv"), "raw") == 0) {
    /* on libvirt's storage node (through our raw node): the format node
     * cannot take it back while the shadow has it, so it goes through the
     * hand-over node for one QMP command, as at the insertion */
    storage = child_of (&g, base, "file");
    if (storage == NULL) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                   "disk %s: node %s has no file", target, base);
      goto out;
    }
    if (!hand_over (m, &g, target, root, storage, dd, error) ||
        !give_back (m, &g, target, root, storage, dd, error)) {
      g_prefix_error (error, "disk %s: giving the image back to %s: ", target, storage);
      goto out;
    }
  } else if ((storage = path ? libvirt_storage (&g, target, path) : NULL)) {
    /* inserted by an older shadowd: the shadow's origin is a file node
     * of its own, libvirt's storage node is free */
    /* reopening libvirt's storage node too makes QEMU re-read its length,
     * which the image may have grown while the shadow was in (qcow2
     * allocating, block_resize).  The format node goes first: QEMU commits
     * a reopen from the last node to the first, and each node re-reads
     * its length as it commits, so the storage node must have its new
     * length before the format node looks (a raw node's length is its
     * file's; the other way round a grown raw disk shrinks back) */
    g_autoptr (JsonObject) args =
      reopen_args (format_options (&g, root, storage, dd), storage_options (&g, storage, dd));

    if (!run0 (m, "blockdev-reopen", args, error)) {
      g_prefix_error (error, "disk %s: giving the image back to %s: ", target, storage);
      goto out;
    }
  } else {
    /* libvirt's node is gone: keep ours as the format node's file */
    g_autoptr (JsonObject) args = reopen_args (format_options (&g, root, base, dd), NULL);

    g_warning ("disk %s: libvirt's storage node for %s is gone; %s stays as the "
               "format node's file", target, path ? path : "?", base);
    if (!run0 (m, "blockdev-reopen", args, error))
      goto out;
  }
  {
    /* The guest runs on without the shadow: its next write may get the
     * ctime the clean stop records now (a clock tick is coarser than a
     * write), so the maps cannot prove anything at the next start:
     * forget them (docs/libvirt.md, "Warm restarts") */
    g_autofree char *md_node = shd_lv_node_meta (target);
    /* an rbd metadata image is emptied at every insertion instead */
    g_autofree char *md = g_strcmp0 (node_str (&g, md_node, "drv"), "file") == 0 ?
                          g_strdup (node_str (&g, md_node, "file")) : NULL;
    g_autoptr (GError) e = NULL;

    graph_clear (&g);
    delete_ours (m, target);
    /* never under a node that still has it open */
    if (md && graph_load (m, &g, &e) && node_info (&g, shadow) == NULL &&
        node_info (&g, md_node) == NULL)
      md_wipe (md, &e);
    else if (md && e == NULL)
      g_set_error (&e, G_IO_ERROR, G_IO_ERROR_BUSY, "the shadow node is still there");
    if (e)
      g_warning ("disk %s: the metadata image %s could not be emptied (%s): empty it "
                 "before the domain starts again", target, md ? md : "?", e->message);
    graph_clear (&g);
  }
  return TRUE;
out:
  graph_clear (&g);
  return ok;
}

gboolean
shd_lv_release_moved (const ShdLvMonitor *m, const char *target, const char *old,
                      GError **error)
{
  Graph g = { 0 };
  g_autofree char *shadow = shd_lv_node_shadow (target);
  const char *storage;

  if (!graph_load (m, &g, error))
    goto fail;
  if (shadow_parent (&g, shadow)) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_BUSY, "disk %s: the shadow node is still "
                 "under %s after the pivot", target, shadow_parent (&g, shadow));
    goto fail;
  }
  graph_clear (&g);
  delete_ours (m, target);
  /* libvirt's own delete of it failed while our node held it */
  if (!graph_load (m, &g, error))
    goto fail;
  storage = libvirt_storage (&g, target, old);
  if (storage)
    del_node (m, &g, storage);
  graph_clear (&g);
  return TRUE;

fail:
  graph_clear (&g);
  return FALSE;
}

gboolean
shd_lv_copy_nodes (const ShdLvMonitor *m, const char *image, char **source, char **copy,
                   GError **error)
{
  Graph g = { 0 };
  gboolean found = FALSE;

  if (!graph_load (m, &g, error))
    return FALSE;
  /* a job's edges are named by the job: the mirror's "source" and "target" */
  for (guint i = 0; i < g.edges->len && !found; i++) {
    const Edge *e = g.edges->pdata[i];
    const char *src;

    if (strcmp (e->name, "target") != 0 || g_strcmp0 (node_str (&g, e->child, "file"), image) != 0)
      continue;
    if ((src = child_of (&g, e->parent, "source")) == NULL)
      continue;
    *source = g_strdup (src);
    *copy = g_strdup (e->child);
    found = TRUE;
  }
  if (!found)
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "no block job copies the disk to %s",
                 image);
  graph_clear (&g);
  return found;
}

gboolean
shd_lv_release_copy (const ShdLvMonitor *m, const char *target, const char *image,
                     GError **error)
{
  Graph g = { 0 };
  g_autoptr (GPtrArray) formats = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter it;
  gpointer k, v;
  g_autofree char *prefix = g_strdup_printf ("shd-%s", target);
  const char *storage;

  if (!graph_load (m, &g, error))
    return FALSE;
  g_hash_table_iter_init (&it, g.nodes);
  while (g_hash_table_iter_next (&it, &k, &v)) {
    const char *drv = json_object_get_string_member_with_default (v, "drv", "");

    if (!g_str_has_prefix (k, prefix) && strcmp (drv, "file") != 0 &&
        strcmp (drv, "host_device") != 0 &&
        g_strcmp0 (json_object_get_string_member_with_default (v, "file", NULL), image) == 0 &&
        !has_parent (&g, k))
      g_ptr_array_add (formats, g_strdup (k));
  }
  for (guint i = 0; i < formats->len; i++)
    del_node (m, &g, formats->pdata[i]);
  graph_clear (&g);
  if (!graph_load (m, &g, error))
    return FALSE;
  if ((storage = libvirt_storage (&g, target, image)))
    del_node (m, &g, storage);
  graph_clear (&g);
  return TRUE;
}
