/* QMP arguments for nodes over RBD images; see rbdnode.h. */
#include "rbdnode.h"

#include <gio/gio.h>

void
shd_rbd_set_location (JsonObject *o, const char *pool, const char *image, const char *conf,
                      const char *user, const char *key_secret)
{
  json_object_set_string_member (o, "pool", pool);
  json_object_set_string_member (o, "image", image);
  if (conf && *conf)
    json_object_set_string_member (o, "conf", conf);
  if (user)
    json_object_set_string_member (o, "user", user);
  if (key_secret)
    json_object_set_string_member (o, "key-secret", key_secret);
}

/* A new object with o's members (json_node_copy would share o itself);
 * only top-level members are added to it */
static JsonObject *
copy_object (JsonObject *o)
{
  JsonObject *c = json_object_new ();
  g_autoptr (GList) members = json_object_get_members (o);

  for (GList *l = members; l; l = l->next)
    json_object_set_member (c, l->data, json_node_copy (json_object_get_member (o, l->data)));
  return c;
}

JsonObject *
shd_rbd_raw_node (const char *node, const char *rbd_node, JsonObject *loc)
{
  JsonObject *args = json_object_new ();
  JsonObject *file = copy_object (loc);
  JsonObject *cache = json_object_new ();

  json_object_set_string_member (file, "driver", "rbd");
  if (rbd_node)
    json_object_set_string_member (file, "node-name", rbd_node);
  json_object_set_boolean_member (cache, "direct", TRUE);
  json_object_set_object_member (file, "cache", cache);
  json_object_set_string_member (args, "driver", "raw");
  json_object_set_string_member (args, "node-name", node);
  json_object_set_object_member (args, "file", file);
  return args;
}

JsonObject *
shd_rbd_create_args (const char *job_id, JsonObject *loc, guint64 size)
{
  JsonObject *args = json_object_new ();
  JsonObject *options = json_object_new ();

  json_object_set_string_member (options, "driver", "rbd");
  json_object_set_object_member (options, "location", copy_object (loc));
  json_object_set_int_member (options, "size", (gint64) size);
  json_object_set_string_member (args, "job-id", job_id);
  json_object_set_object_member (args, "options", options);
  return args;
}

gboolean
shd_rbd_job_state (JsonNode *jobs, const char *job_id, gboolean *concluded,
                   const char **job_error, GError **error)
{
  JsonArray *a = jobs && JSON_NODE_HOLDS_ARRAY (jobs) ? json_node_get_array (jobs) : NULL;

  *concluded = FALSE;
  *job_error = NULL;
  for (guint i = 0; a && i < json_array_get_length (a); i++) {
    JsonObject *j = json_array_get_object_element (a, i);

    if (j == NULL ||
        g_strcmp0 (json_object_get_string_member_with_default (j, "id", NULL), job_id) != 0)
      continue;
    *concluded = g_strcmp0 (json_object_get_string_member_with_default (j, "status", ""),
                            "concluded") == 0;
    if (*concluded)
      *job_error = json_object_get_string_member_with_default (j, "error", NULL);
    return TRUE;
  }
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "the blockdev-create job is gone");
  return FALSE;
}
