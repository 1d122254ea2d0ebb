/* Removing a retired RBD image through librbd; see rbdimage.h. */
#include "rbdimage.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <string.h>

void
shd_rbd_image_free (ShdRbdImage *img)
{
  if (img == NULL)
    return;
  g_free (img->pool);
  g_free (img->nspace);
  g_free (img->image);
  g_free (img->conf);
  g_free (img->user);
  g_free (img);
}

static ShdRbdImage *
image_copy (const ShdRbdImage *img)
{
  ShdRbdImage *c = g_new0 (ShdRbdImage, 1);

  c->pool = g_strdup (img->pool);
  c->nspace = g_strdup (img->nspace);
  c->image = g_strdup (img->image);
  c->conf = g_strdup (img->conf);
  c->user = g_strdup (img->user);
  return c;
}

char *
shd_rbd_image_spec (const ShdRbdImage *img)
{
  if (img->nspace)
    return g_strdup_printf ("%s/%s/%s", img->pool, img->nspace, img->image);
  return g_strdup_printf ("%s/%s", img->pool, img->image);
}

static const char *
member (JsonObject *o, const char *name)
{
  JsonNode *n = json_object_get_member (o, name);

  return n && JSON_NODE_HOLDS_VALUE (n) && json_node_get_value_type (n) == G_TYPE_STRING ?
         json_node_get_string (n) : NULL;
}

static ShdRbdImage *
parse_json (const char *text, GError **error)
{
  static const char *const known[] = { "driver", "pool", "namespace", "image", "conf", "user",
                                       "snapshot", "password-secret", NULL };
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (ShdRbdImage) img = NULL;
  g_autoptr (GList) members = NULL;
  JsonObject *o;

  if (!json_parser_load_from_data (parser, text, -1, error))
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser))) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "not a JSON object");
    return NULL;
  }
  o = json_node_get_object (json_parser_get_root (parser));
  if (g_strcmp0 (member (o, "driver"), "rbd") != 0) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "its driver is not rbd");
    return NULL;
  }
  members = json_object_get_members (o);
  for (GList *l = members; l; l = l->next) {
    /* one that says where the cluster is (server.N.host) or how to talk
     * to it: librados would have to be told the same, or it could reach
     * another cluster's image of that name */
    if (!g_strv_contains (known, l->data)) {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "it sets '%s', which "
                   "shadowd does not pass to librbd", (char *) l->data);
      return NULL;
    }
  }
  if (member (o, "snapshot")) {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "it names a snapshot");
    return NULL;
  }
  img = g_new0 (ShdRbdImage, 1);
  img->pool = g_strdup (member (o, "pool"));
  img->image = g_strdup (member (o, "image"));
  img->nspace = g_strdup (member (o, "namespace"));
  img->conf = g_strdup (member (o, "conf"));
  img->user = g_strdup (member (o, "user"));
  return g_steal_pointer (&img);
}

/* The next field of a legacy "rbd:" filename, up to an unescaped
 * character of @stops, unescaped; *p is left on the stop */
static char *
legacy_field (const char **p, const char *stops)
{
  GString *s = g_string_new (NULL);

  while (**p && !strchr (stops, **p)) {
    if (**p == '\\' && (*p)[1])
      (*p)++;
    g_string_append_c (s, **p);
    (*p)++;
  }
  return g_string_free (s, FALSE);
}

/* rbd:POOL[/NAMESPACE]/IMAGE[@SNAPSHOT][:KEY=VALUE...], as QEMU's
 * qemu_rbd_parse_filename() reads it */
static ShdRbdImage *
parse_legacy (const char *p, GError **error)
{
  g_autoptr (ShdRbdImage) img = g_new0 (ShdRbdImage, 1);
  g_autofree char *second = NULL;

  img->pool = legacy_field (&p, "/@:");
  if (*p != '/') {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "no image name");
    return NULL;
  }
  p++;
  second = legacy_field (&p, "/@:");
  if (*p == '/') {
    p++;
    img->nspace = g_steal_pointer (&second);
    img->image = legacy_field (&p, "@:");
  } else {
    img->image = g_steal_pointer (&second);
  }
  if (*p == '@') {
    g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "it names a snapshot");
    return NULL;
  }
  while (*p == ':') {
    g_autofree char *key = NULL, *value = NULL;

    p++;
    key = legacy_field (&p, "=:");
    if (*p != '=') {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "'%s' has no value", key);
      return NULL;
    }
    p++;
    value = legacy_field (&p, ":");
    if (strcmp (key, "conf") == 0) {
      g_free (img->conf);
      img->conf = g_steal_pointer (&value);
    } else if (strcmp (key, "id") == 0) {
      g_free (img->user);
      img->user = g_steal_pointer (&value);
    } else {
      /* QEMU hands the others to librados (mon_host, keyring...) */
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "it sets '%s', which "
                   "shadowd does not pass to librbd", key);
      return NULL;
    }
  }
  return g_steal_pointer (&img);
}

ShdRbdImage *
shd_rbd_image_parse (const char *filename, GError **error)
{
  g_autoptr (GError) why = NULL;
  g_autoptr (ShdRbdImage) img = NULL;

  if (filename == NULL)
    g_set_error (&why, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "no filename");
  else if (g_str_has_prefix (filename, "json:"))
    img = parse_json (filename + strlen ("json:"), &why);
  else if (g_str_has_prefix (filename, "rbd:"))
    img = parse_legacy (filename + strlen ("rbd:"), &why);
  else
    g_set_error (&why, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "not an rbd filename");
  if (img && img->nspace && !*img->nspace)
    g_clear_pointer (&img->nspace, g_free);
  if (img && (img->pool == NULL || !*img->pool || img->image == NULL || !*img->image)) {
    g_set_error (&why, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "no pool or no image");
    g_clear_pointer (&img, shd_rbd_image_free);
  }
  if (img == NULL) {
    /* not the filename itself: a legacy one may carry a key */
    g_set_error (error, G_IO_ERROR, why->code, "its filename names no rbd image shadowd "
                 "can remove: %s", why->message);
    return NULL;
  }
  return g_steal_pointer (&img);
}

static void
set_rados_error (GError **error, int r, const char *what, const ShdRbdImage *img)
{
  g_autofree char *spec = shd_rbd_image_spec (img);
  int code = r == -EBUSY ? G_IO_ERROR_BUSY :
             r == -ETIMEDOUT ? G_IO_ERROR_TIMED_OUT :
             r == -ENOTEMPTY ? G_IO_ERROR_NOT_EMPTY : g_io_error_from_errno (-r);

  g_set_error (error, G_IO_ERROR, code, "%s (rbd image %s): %s%s", what, spec,
               g_strerror (-r),
               r == -EBUSY ? " (it is still open: a watcher holds it)" :
               r == -ENOTEMPTY ? " (it has snapshots)" : "");
}

static void
remove_in_thread (GTask *task, gpointer source G_GNUC_UNUSED, gpointer data,
                  GCancellable *cancellable G_GNUC_UNUSED)
{
  const ShdRbdImage *img = data;
  g_autofree char *timeout = g_strdup_printf ("%d", SHD_RBD_TIMEOUT_S);
  GError *error = NULL;
  rados_t cluster = NULL;
  rados_ioctx_t io = NULL;
  int r;

  if (g_task_return_error_if_cancelled (task))
    return;
  r = rados_create (&cluster, img->user);
  if (r < 0) {
    set_rados_error (&error, r, "creating a cluster handle", img);
    goto out;
  }
  r = rados_conf_read_file (cluster, img->conf);
  if (r < 0) {
    set_rados_error (&error, r, img->conf ? "reading the ceph.conf" :
                     "finding a ceph.conf", img);
    goto out;
  }
  /* unbounded by default: a cluster that went away must not hold the
   * move for ever */
  rados_conf_set (cluster, "client_mount_timeout", timeout);
  rados_conf_set (cluster, "rados_mon_op_timeout", timeout);
  rados_conf_set (cluster, "rados_osd_op_timeout", timeout);
  /* a client of a few seconds: no admin socket, which would clash with
   * that of QEMU's client when the conf gives one path for all */
  rados_conf_set (cluster, "admin_socket", "");
  r = rados_connect (cluster);
  if (r < 0) {
    set_rados_error (&error, r, "connecting to the cluster", img);
    goto out;
  }
  r = rados_ioctx_create (cluster, img->pool, &io);
  if (r < 0) {
    set_rados_error (&error, r, "opening the pool", img);
    goto out;
  }
  if (img->nspace)
    rados_ioctx_set_namespace (io, img->nspace);
  r = rbd_remove (io, img->image);
  if (r < 0)
    set_rados_error (&error, r, "removing the image", img);

out:
  if (io)
    rados_ioctx_destroy (io);
  if (cluster)
    rados_shutdown (cluster);
  if (error)
    g_task_return_error (task, error);
  else
    g_task_return_boolean (task, TRUE);
}

void
shd_rbd_image_remove_async (const ShdRbdImage *img, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer data)
{
  g_autoptr (GTask) task = g_task_new (NULL, cancellable, callback, data);
  ShdRbdImage *copy = image_copy (img);

  /* once started, its outcome is reported even if shadowd stops */
  g_task_set_check_cancellable (task, FALSE);
  g_task_set_source_tag (task, shd_rbd_image_remove_async);
  g_task_set_task_data (task, copy, (GDestroyNotify) shd_rbd_image_free);
  g_task_run_in_thread (task, remove_in_thread);
}

gboolean
shd_rbd_image_remove_finish (GAsyncResult *res, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (res, NULL), FALSE);
  return g_task_propagate_boolean (G_TASK (res), error);
}
