/* QEMU's block graph, read for releasing a tier; see blockgraph.h. */
#include "blockgraph.h"

#include <string.h>

/* node ids by node-name in a graph reply; -1 when absent */
static gint64
graph_id (JsonObject *graph, const char *name)
{
  JsonArray *nodes = json_object_get_array_member (graph, "nodes");

  for (guint i = 0; nodes && i < json_array_get_length (nodes); i++) {
    JsonObject *n = json_array_get_object_element (nodes, i);

    if (n && g_strcmp0 (json_object_get_string_member_with_default (n, "name", NULL),
                        name) == 0)
      return json_object_get_int_member_with_default (n, "id", -1);
  }
  return -1;
}

static const char *
graph_name (JsonObject *graph, gint64 id)
{
  JsonArray *nodes = json_object_get_array_member (graph, "nodes");

  for (guint i = 0; nodes && i < json_array_get_length (nodes); i++) {
    JsonObject *n = json_array_get_object_element (nodes, i);

    if (n && json_object_get_int_member_with_default (n, "id", -2) == id)
      return json_object_get_string_member_with_default (n, "name", NULL);
  }
  return NULL;
}

static JsonObject *
graph_object (JsonNode *graph)
{
  return graph && JSON_NODE_HOLDS_OBJECT (graph) ? json_node_get_object (graph) : NULL;
}

char *
shd_block_graph_child_name (JsonNode *graph_node, const char *parent, const char *child)
{
  JsonObject *graph = graph_object (graph_node);
  JsonArray *edges;
  gint64 p, c;

  if (graph == NULL)
    return NULL;
  p = graph_id (graph, parent);
  c = graph_id (graph, child);
  edges = json_object_get_array_member (graph, "edges");
  if (p < 0 || c < 0 || edges == NULL)
    return NULL;
  for (guint i = 0; i < json_array_get_length (edges); i++) {
    JsonObject *e = json_array_get_object_element (edges, i);

    if (e && json_object_get_int_member_with_default (e, "parent", -1) == p &&
        json_object_get_int_member_with_default (e, "child", -1) == c)
      return g_strdup (json_object_get_string_member_with_default (e, "name", NULL));
  }
  return NULL;
}

static JsonObject *
named_node (JsonNode *nodes, const char *name)
{
  JsonArray *a;

  if (nodes == NULL || !JSON_NODE_HOLDS_ARRAY (nodes))
    return NULL;
  a = json_node_get_array (nodes);
  for (guint i = 0; i < json_array_get_length (a); i++) {
    JsonObject *n = json_array_get_object_element (a, i);

    if (n && g_strcmp0 (json_object_get_string_member_with_default (n, "node-name", NULL),
                        name) == 0)
      return n;
  }
  return NULL;
}

static gint64
virtual_size (JsonObject *n)
{
  JsonObject *img = json_object_get_object_member (n, "image");

  return img ? json_object_get_int_member_with_default (img, "virtual-size", -1) : -1;
}

gint64
shd_block_nodes_allocated (JsonNode *nodes, const char *node)
{
  JsonObject *n = named_node (nodes, node), *img;

  if (n == NULL)
    return -1;
  img = json_object_get_object_member (n, "image");
  if (img == NULL || !json_object_has_member (img, "actual-size"))
    return SHD_BLOCK_ALLOCATED_UNKNOWN;
  return json_object_get_int_member (img, "actual-size");
}

gint64
shd_block_nodes_virtual_size (JsonNode *nodes, const char *node)
{
  JsonObject *n = named_node (nodes, node);

  return n ? virtual_size (n) : -1;
}

/* The protocol node under `node` (driver file or rbd): reached by
 * following each node's only child, through filters and a raw format node
 * that maps the whole of it; its name in *proto.  NULL with *why when it
 * is not so. */
static JsonObject *
storage_under (JsonNode *graph_node, JsonNode *nodes, const char *node, const char **proto,
               char **why)
{
  static const char *const filters[] = { "throttle", "copy-on-read", "preallocate", NULL };
  static const char *const protocols[] = { "file", "rbd", NULL };
  JsonObject *graph = graph_object (graph_node);
  JsonArray *edges;
  const char *name = node;
  gint64 tier_size = -1;

  if (graph == NULL || (edges = json_object_get_array_member (graph, "edges")) == NULL) {
    *why = g_strdup ("no block graph");
    return NULL;
  }
  for (guint depth = 0; depth < 16; depth++) {
    JsonObject *n = named_node (nodes, name);
    const char *drv;
    gint64 id, child = -1;
    guint children = 0;

    if (n == NULL) {
      *why = g_strdup_printf ("node %s is not in query-named-block-nodes", name);
      return NULL;
    }
    drv = json_object_get_string_member_with_default (n, "drv", "?");
    if (tier_size < 0)
      tier_size = virtual_size (n);
    if (g_strv_contains (protocols, drv)) {
      if (virtual_size (n) != tier_size) {
        *why = g_strdup_printf ("node %s is larger than the tier's node %s: a raw node with "
                                "an offset or a size", name, node);
        return NULL;
      }
      *proto = name;
      return n;
    }
    if (strcmp (drv, "raw") != 0 && !g_strv_contains (filters, drv)) {
      *why = g_strdup_printf ("node %s is a %s node: emptying its storage would destroy it",
                              name, drv);
      return NULL;
    }
    id = graph_id (graph, name);
    for (guint i = 0; i < json_array_get_length (edges); i++) {
      JsonObject *e = json_array_get_object_element (edges, i);

      if (e && json_object_get_int_member_with_default (e, "parent", -1) == id) {
        child = json_object_get_int_member_with_default (e, "child", -1);
        children++;
      }
    }
    if (children != 1 || (name = graph_name (graph, child)) == NULL) {
      *why = g_strdup_printf ("node %s does not have exactly one child", node);
      return NULL;
    }
  }
  *why = g_strdup_printf ("the chain under %s is too deep", node);
  return NULL;
}

char *
shd_block_graph_file_under (JsonNode *graph, JsonNode *nodes, const char *node, char **why)
{
  const char *proto = NULL;
  JsonObject *n = storage_under (graph, nodes, node, &proto, why);
  const char *file;

  if (n == NULL)
    return NULL;
  if (strcmp (json_object_get_string_member_with_default (n, "drv", "?"), "file") != 0) {
    *why = g_strdup_printf ("node %s is not a file", proto);
    return NULL;
  }
  file = json_object_get_string_member_with_default (n, "file", NULL);
  if (file == NULL || !g_path_is_absolute (file)) {
    *why = g_strdup_printf ("node %s has no file name", proto);
    return NULL;
  }
  return g_strdup (file);
}

char *
shd_block_graph_rbd_under (JsonNode *graph, JsonNode *nodes, const char *node, char **why)
{
  const char *proto = NULL;
  JsonObject *n = storage_under (graph, nodes, node, &proto, why);

  if (n == NULL)
    return NULL;
  if (strcmp (json_object_get_string_member_with_default (n, "drv", "?"), "rbd") != 0) {
    *why = g_strdup_printf ("node %s is not an rbd image", proto);
    return NULL;
  }
  return g_strdup (proto);
}

/* Whether every parent of node `id` is in `set` (ids) */
static gboolean
parents_within (JsonArray *edges, gint64 id, GArray *set)
{
  for (guint i = 0; i < json_array_get_length (edges); i++) {
    JsonObject *e = json_array_get_object_element (edges, i);
    gint64 parent;
    gboolean in = FALSE;

    if (e == NULL || json_object_get_int_member_with_default (e, "child", -1) != id)
      continue;
    parent = json_object_get_int_member_with_default (e, "parent", -1);
    for (guint j = 0; j < set->len && !in; j++)
      in = g_array_index (set, gint64, j) == parent;
    if (!in)
      return FALSE;
  }
  return TRUE;
}

GPtrArray *
shd_block_graph_owned (JsonNode *graph_node, const char *node)
{
  JsonObject *graph = graph_object (graph_node);
  GPtrArray *out = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GArray) set = g_array_new (FALSE, FALSE, sizeof (gint64));
  JsonArray *edges;
  gint64 root;

  if (graph == NULL || (edges = json_object_get_array_member (graph, "edges")) == NULL ||
      (root = graph_id (graph, node)) < 0)
    return out;
  g_array_append_val (set, root);
  /* breadth first: a node joins once all its parents have */
  for (guint k = 0; k < set->len; k++) {
    gint64 id = g_array_index (set, gint64, k);

    for (guint i = 0; i < json_array_get_length (edges); i++) {
      JsonObject *e = json_array_get_object_element (edges, i);
      gint64 child;
      gboolean seen = FALSE;

      if (e == NULL || json_object_get_int_member_with_default (e, "parent", -1) != id)
        continue;
      /* a backing image is data the tier shares (a base image, other
       * VMs' overlays on it), never its own, even when this QEMU has no
       * other user of it */
      if (g_strcmp0 (json_object_get_string_member_with_default (e, "name", NULL),
                     "backing") == 0)
        continue;
      child = json_object_get_int_member_with_default (e, "child", -1);
      for (guint j = 0; j < set->len && !seen; j++)
        seen = g_array_index (set, gint64, j) == child;
      if (!seen && parents_within (edges, child, set))
        g_array_append_val (set, child);
    }
  }
  for (guint k = 0; k < set->len; k++) {
    const char *name = graph_name (graph, g_array_index (set, gint64, k));

    if (name)
      g_ptr_array_add (out, g_strdup (name));
  }
  return out;
}

GPtrArray *
shd_block_nodes_files (JsonNode *nodes, GPtrArray *owned, GPtrArray **file_nodes,
                       GPtrArray **rbd_nodes, GPtrArray **others)
{
  static const char *const protocols[] = { "file", "host_device", "rbd", "nbd", "iscsi",
                                           "nfs", "ssh", "http", "https", "gluster", NULL };
  GPtrArray *files = g_ptr_array_new_with_free_func (g_free);

  *others = g_ptr_array_new_with_free_func (g_free);
  if (file_nodes)
    *file_nodes = g_ptr_array_new_with_free_func (g_free);
  if (rbd_nodes)
    *rbd_nodes = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; i < owned->len; i++) {
    JsonObject *n = named_node (nodes, owned->pdata[i]);
    const char *drv, *file;

    if (n == NULL)
      continue;
    drv = json_object_get_string_member_with_default (n, "drv", "?");
    file = json_object_get_string_member_with_default (n, "file", NULL);
    if (strcmp (drv, "file") == 0 && file && g_path_is_absolute (file)) {
      g_ptr_array_add (files, g_strdup (file));
      if (file_nodes)
        g_ptr_array_add (*file_nodes, g_strdup (owned->pdata[i]));
    } else if (rbd_nodes && strcmp (drv, "rbd") == 0) {
      g_ptr_array_add (*rbd_nodes, g_strdup (owned->pdata[i]));
    } else if (g_strv_contains (protocols, drv))
      g_ptr_array_add (*others, g_strdup_printf ("%s (%s)", (char *) owned->pdata[i], drv));
  }
  return files;
}

const char *
shd_block_nodes_filename (JsonNode *nodes, const char *node)
{
  JsonObject *n = named_node (nodes, node);

  return n ? json_object_get_string_member_with_default (n, "file", NULL) : NULL;
}
