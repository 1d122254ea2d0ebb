/* Reading QEMU's block graph for releasing a tier, on replies recorded
 * from qemu-storage-daemon 10.0 with a shadow node over a throttled raw
 * file, a plain file and a qcow2 image, and an rbd image under a raw node
 * and alone. */
#include "blockgraph.h"

#include <string.h>

static const char graph_json[] =
  "{\"nodes\": [{\"id\": 6, \"name\": \"sh0\", \"type\": \"block-driver\"},"
  " {\"id\": 5, \"name\": \"tier-c\", \"type\": \"block-driver\"},"
  " {\"id\": 4, \"name\": \"fc\", \"type\": \"block-driver\"},"
  " {\"id\": 3, \"name\": \"tier-b\", \"type\": \"block-driver\"},"
  " {\"id\": 2, \"name\": \"tier-a\", \"type\": \"block-driver\"},"
  " {\"id\": 7, \"name\": \"ra\", \"type\": \"block-driver\"},"
  " {\"id\": 1, \"name\": \"a-file\", \"type\": \"block-driver\"},"
  " {\"id\": 8, \"name\": \"tier-d\", \"type\": \"block-driver\"},"
  " {\"id\": 9, \"name\": \"rd\", \"type\": \"block-driver\"},"
  " {\"id\": 10, \"name\": \"tier-e\", \"type\": \"block-driver\"}],"
  " \"edges\": [{\"parent\": 6, \"child\": 2, \"name\": \"children.0\", \"perm\": [], \"shared-perm\": []},"
  " {\"parent\": 6, \"child\": 3, \"name\": \"children.2\", \"perm\": [], \"shared-perm\": []},"
  " {\"parent\": 2, \"child\": 7, \"name\": \"file\", \"perm\": [], \"shared-perm\": []},"
  " {\"parent\": 7, \"child\": 1, \"name\": \"file\", \"perm\": [], \"shared-perm\": []},"
  " {\"parent\": 5, \"child\": 4, \"name\": \"file\", \"perm\": [], \"shared-perm\": []},"
  " {\"parent\": 8, \"child\": 9, \"name\": \"file\", \"perm\": [], \"shared-perm\": []}]}";

static const char nodes_json[] =
  "[{\"node-name\": \"sh0\", \"drv\": \"shadow\", \"file\": \"json:{}\","
  "  \"image\": {\"virtual-size\": 67108864, \"actual-size\": 100663296}},"
  " {\"node-name\": \"tier-a\", \"drv\": \"throttle\", \"file\": \"json:{}\","
  "  \"image\": {\"virtual-size\": 67108864, \"actual-size\": 33554432}},"
  " {\"node-name\": \"ra\", \"drv\": \"raw\", \"file\": \"/srv/a.img\","
  "  \"image\": {\"virtual-size\": 67108864, \"actual-size\": 33554432}},"
  " {\"node-name\": \"a-file\", \"drv\": \"file\", \"file\": \"/srv/a.img\","
  "  \"image\": {\"virtual-size\": 67108864, \"actual-size\": 33554432}},"
  " {\"node-name\": \"tier-b\", \"drv\": \"file\", \"file\": \"/srv/b.img\","
  "  \"image\": {\"virtual-size\": 67108864, \"actual-size\": 0}},"
  " {\"node-name\": \"tier-c\", \"drv\": \"qcow2\", \"file\": \"/srv/c.qcow2\","
  "  \"image\": {\"virtual-size\": 67108864, \"actual-size\": 200704}},"
  " {\"node-name\": \"fc\", \"drv\": \"file\", \"file\": \"/srv/c.qcow2\","
  "  \"image\": {\"virtual-size\": 196616, \"actual-size\": 200704}},"
  " {\"node-name\": \"tier-d\", \"drv\": \"raw\", \"file\": \"json:{}\","
  "  \"image\": {\"virtual-size\": 67108864}},"
  " {\"node-name\": \"rd\", \"drv\": \"rbd\", \"file\": \"json:{}\","
  "  \"image\": {\"virtual-size\": 67108864}},"
  " {\"node-name\": \"tier-e\", \"drv\": \"rbd\", \"file\": \"json:{}\","
  "  \"image\": {\"virtual-size\": 67108864}}]";

static JsonNode *
parse (const char *text)
{
  g_autoptr (GError) error = NULL;
  JsonNode *n = json_from_string (text, &error);

  g_assert_no_error (error);
  return n;
}

static void
test_child_name (void)
{
  g_autoptr (JsonNode) g = parse (graph_json);
  g_autofree char *a = shd_block_graph_child_name (g, "sh0", "tier-a");
  g_autofree char *b = shd_block_graph_child_name (g, "sh0", "tier-b");
  g_autofree char *c = shd_block_graph_child_name (g, "sh0", "tier-c");
  g_autofree char *x = shd_block_graph_child_name (g, "nope", "tier-a");

  g_assert_cmpstr (a, ==, "children.0");
  /* added again after a release: the next number */
  g_assert_cmpstr (b, ==, "children.2");
  g_assert_null (c);
  g_assert_null (x);
}

static void
test_file_under (void)
{
  g_autoptr (JsonNode) g = parse (graph_json);
  g_autoptr (JsonNode) n = parse (nodes_json);
  g_autofree char *why = NULL;
  g_autofree char *a = shd_block_graph_file_under (g, n, "tier-a", &why);
  g_autofree char *b = NULL;
  g_autofree char *c = NULL;

  /* throttle over raw over file: the file */
  g_assert_cmpstr (a, ==, "/srv/a.img");
  b = shd_block_graph_file_under (g, n, "tier-b", &why);
  g_assert_cmpstr (b, ==, "/srv/b.img");
  /* qcow2: holes in its file would destroy it */
  c = shd_block_graph_file_under (g, n, "tier-c", &why);
  g_assert_null (c);
  g_assert_nonnull (strstr (why, "qcow2"));
  g_clear_pointer (&why, g_free);
  /* an rbd image is no file */
  g_assert_null (shd_block_graph_file_under (g, n, "tier-d", &why));
  g_assert_nonnull (strstr (why, "not a file"));
}

static void
test_rbd_under (void)
{
  g_autoptr (JsonNode) g = parse (graph_json);
  g_autoptr (JsonNode) n = parse (nodes_json);
  g_autofree char *why = NULL;
  g_autofree char *d = shd_block_graph_rbd_under (g, n, "tier-d", &why);
  g_autofree char *e = shd_block_graph_rbd_under (g, n, "tier-e", &why);
  g_autofree char *a = NULL;
  g_autofree char *c = NULL;

  /* raw over rbd, and rbd alone */
  g_assert_cmpstr (d, ==, "rd");
  g_assert_cmpstr (e, ==, "tier-e");
  a = shd_block_graph_rbd_under (g, n, "tier-a", &why);
  g_assert_null (a);
  g_assert_nonnull (strstr (why, "not an rbd image"));
  g_clear_pointer (&why, g_free);
  c = shd_block_graph_rbd_under (g, n, "tier-c", &why);
  g_assert_null (c);
  g_assert_nonnull (strstr (why, "qcow2"));
}

static void
test_allocated (void)
{
  g_autoptr (JsonNode) n = parse (nodes_json);

  g_assert_cmpint (shd_block_nodes_allocated (n, "tier-a"), ==, 33554432);
  /* QEMU's rbd driver does not say */
  g_assert_cmpint (shd_block_nodes_allocated (n, "tier-e"), ==, SHD_BLOCK_ALLOCATED_UNKNOWN);
  g_assert_cmpint (shd_block_nodes_allocated (n, "gone"), ==, -1);
  g_assert_cmpint (shd_block_nodes_virtual_size (n, "tier-e"), ==, 67108864);
  g_assert_cmpint (shd_block_nodes_virtual_size (n, "gone"), ==, -1);
}

static char *
joined (GPtrArray *a)
{
  g_ptr_array_add (a, NULL);
  return g_strjoinv (",", (char **) a->pdata);
}

static void
test_owned (void)
{
  g_autoptr (JsonNode) g = parse (graph_json);
  g_autoptr (JsonNode) nodes = parse (nodes_json);
  /* x and y share r: retiring x leaves r (and its file) to y */
  g_autoptr (JsonNode) shared = parse (
    "{\"nodes\": [{\"id\": 1, \"name\": \"x\"}, {\"id\": 2, \"name\": \"y\"},"
    " {\"id\": 3, \"name\": \"r\"}, {\"id\": 4, \"name\": \"f\"}],"
    " \"edges\": [{\"parent\": 1, \"child\": 3, \"name\": \"file\"},"
    " {\"parent\": 2, \"child\": 3, \"name\": \"file\"},"
    " {\"parent\": 3, \"child\": 4, \"name\": \"file\"}]}");
  g_autoptr (GPtrArray) a = shd_block_graph_owned (g, "tier-a");
  g_autoptr (GPtrArray) d = shd_block_graph_owned (g, "tier-d");
  g_autoptr (GPtrArray) x = shd_block_graph_owned (shared, "x");
  g_autoptr (GPtrArray) r = shd_block_graph_owned (shared, "r");
  g_autoptr (GPtrArray) none = shd_block_graph_owned (g, "nope");
  g_autoptr (GPtrArray) a_others = NULL, d_others = NULL, a_nodes = NULL;
  g_autoptr (GPtrArray) a_files = shd_block_nodes_files (nodes, a, &a_nodes, NULL, &a_others);
  g_autoptr (GPtrArray) d_files = shd_block_nodes_files (nodes, d, NULL, NULL, &d_others);
  g_autofree char *sa = NULL, *sd = NULL, *sx = NULL, *sr = NULL;

  g_assert_cmpuint (a_files->len, ==, 1);
  g_assert_cmpstr (a_files->pdata[0], ==, "/srv/a.img");
  g_assert_cmpstr (a_nodes->pdata[0], ==, "a-file");
  g_assert_cmpuint (a_others->len, ==, 0);
  g_assert_cmpuint (d_files->len, ==, 0);
  g_assert_cmpuint (d_others->len, ==, 1);
  g_assert_cmpstr (d_others->pdata[0], ==, "rd (rbd)");
  {
    g_autoptr (GPtrArray) rbd = NULL, others = NULL;
    g_autoptr (GPtrArray) files = shd_block_nodes_files (nodes, d, NULL, &rbd, &others);

    g_assert_cmpuint (files->len, ==, 0);
    g_assert_cmpuint (others->len, ==, 0);
    g_assert_cmpuint (rbd->len, ==, 1);
    g_assert_cmpstr (rbd->pdata[0], ==, "rd");
    g_assert_nonnull (shd_block_nodes_filename (nodes, "rd"));
    g_assert_null (shd_block_nodes_filename (nodes, "nope"));
  }
  sa = joined (a);
  sd = joined (d);
  sx = joined (x);
  sr = joined (r);
  g_assert_cmpstr (sa, ==, "tier-a,ra,a-file");
  g_assert_cmpstr (sd, ==, "tier-d,rd");
  g_assert_cmpstr (sx, ==, "x");
  g_assert_cmpstr (sr, ==, "r,f");
  g_assert_cmpuint (none->len, ==, 0);
  {
    /* q, a qcow2 tier over its file qf and a base image b (over bf):
     * the base is not the tier's to retire */
    g_autoptr (JsonNode) chain = parse (
      "{\"nodes\": [{\"id\": 1, \"name\": \"q\"}, {\"id\": 2, \"name\": \"qf\"},"
      " {\"id\": 3, \"name\": \"b\"}, {\"id\": 4, \"name\": \"bf\"}],"
      " \"edges\": [{\"parent\": 1, \"child\": 2, \"name\": \"file\"},"
      " {\"parent\": 1, \"child\": 3, \"name\": \"backing\"},"
      " {\"parent\": 3, \"child\": 4, \"name\": \"file\"}]}");
    g_autoptr (GPtrArray) q = shd_block_graph_owned (chain, "q");
    g_autofree char *sq = joined (q);

    g_assert_cmpstr (sq, ==, "q,qf");
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/blockgraph/child-name", test_child_name);
  g_test_add_func ("/blockgraph/file-under", test_file_under);
  g_test_add_func ("/blockgraph/rbd-under", test_rbd_under);
  g_test_add_func ("/blockgraph/allocated", test_allocated);
  g_test_add_func ("/blockgraph/owned", test_owned);
  return g_test_run ();
}
