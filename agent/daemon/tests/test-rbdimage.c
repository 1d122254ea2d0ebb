/* Which rbd image a retired node's filename names (rbdimage.h), and a
 * removal that cannot reach a cluster failing with a message instead of
 * hanging. */
#include "rbdimage.h"

#include <glib/gstdio.h>
#include <string.h>

static void
check (const char *filename, const char *spec, const char *conf, const char *user)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdRbdImage) img = shd_rbd_image_parse (filename, &error);
  g_autofree char *got = NULL;

  g_assert_no_error (error);
  got = shd_rbd_image_spec (img);
  g_assert_cmpstr (got, ==, spec);
  g_assert_cmpstr (img->conf, ==, conf);
  g_assert_cmpstr (img->user, ==, user);
}

static void
refuse (const char *filename, const char *why)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdRbdImage) img = shd_rbd_image_parse (filename, &error);

  g_assert_null (img);
  g_assert_nonnull (error);
  if (strstr (error->message, why) == NULL)
    g_error ("'%s': '%s' lacks '%s'", filename, error->message, why);
  /* the filename may carry a key: never in the message */
  g_assert_null (strstr (error->message, "secret123"));
}

static void
test_parse (void)
{
  check ("json:{\"driver\": \"rbd\", \"pool\": \"ssd\", \"image\": \"tier-b\", "
         "\"conf\": \"/etc/ceph/c.conf\", \"user\": \"admin\"}",
         "ssd/tier-b", "/etc/ceph/c.conf", "admin");
  check ("json:{\"driver\": \"rbd\", \"pool\": \"p\", \"namespace\": \"ns\", \"image\": \"i\"}",
         "p/ns/i", NULL, NULL);
  check ("rbd:ssd/vm1:conf=/etc/ceph/x.conf:id=cinder", "ssd/vm1", "/etc/ceph/x.conf", "cinder");
  check ("rbd:p/ns/img", "p/ns/img", NULL, NULL);
  check ("json:{\"driver\": \"rbd\", \"pool\": \"p\", \"namespace\": \"\", \"image\": \"i\"}",
         "p/i", NULL, NULL);
  /* QEMU's escapes: a backslash takes the next character as it is */
  check ("rbd:p/a\\:b:conf=/c", "p/a:b", "/c", NULL);
  refuse ("rbd:p/img@snap1", "snapshot");
  refuse ("json:{\"driver\": \"rbd\", \"pool\": \"p\", \"image\": \"i\", \"snapshot\": \"s\"}",
          "snapshot");
  refuse ("json:{\"driver\": \"file\", \"filename\": \"/x\"}", "not rbd");
  refuse ("json:{\"driver\": \"rbd\", \"pool\": \"p\"}", "no pool or no image");
  refuse ("rbd:onlypool", "no image");
  refuse ("/srv/a.img", "not an rbd filename");
  refuse ("json:{broken", "names no rbd image");
  refuse (NULL, "no filename");
  /* where the cluster is, or how to reach it, that librados would not be
   * told: another cluster's image of that name could go */
  refuse ("json:{\"driver\": \"rbd\", \"pool\": \"p\", \"image\": \"i\", "
          "\"server.0.host\": \"10.0.0.1\", \"server.0.port\": \"6789\"}",
          "it sets 'server.0.host'");
  refuse ("rbd:p/i:mon_host=10.0.0.1:key=secret123", "it sets 'mon_host'");
  refuse ("rbd:p/i:conf", "'conf' has no value");
}

static void
on_removed (GObject *src G_GNUC_UNUSED, GAsyncResult *res, gpointer data)
{
  GError **out = data;

  g_assert_false (shd_rbd_image_remove_finish (res, out));
}

/* A cluster that cannot be reached: the removal fails and says which
 * image and why */
static void
test_unreachable (void)
{
  g_autofree char *dir = g_dir_make_tmp ("test-rbdimage-XXXXXX", NULL);
  g_autofree char *conf = g_build_filename (dir, "ceph.conf", NULL);
  g_autofree char *missing = g_build_filename (dir, "missing.conf", NULL);
  g_autofree char *nowhere_name = g_strdup_printf ("rbd:ssd/gone:conf=%s", missing);
  g_autofree char *unreachable_name = g_strdup_printf ("rbd:ssd/gone:conf=%s", conf);
  g_autoptr (ShdRbdImage) nowhere = shd_rbd_image_parse (nowhere_name, NULL);
  g_autoptr (ShdRbdImage) unreachable = shd_rbd_image_parse (unreachable_name, NULL);
  g_autoptr (GError) error = NULL;

  /* no monitor to ask (one that does not answer takes the 20 s of
   * SHD_RBD_TIMEOUT_S, too long for a unit test) */
  g_assert_true (g_file_set_contents (conf, "[global]\nauth supported = none\n", -1, NULL));
  /* no conf at all: said so at once */
  shd_rbd_image_remove_async (nowhere, NULL, on_removed, &error);
  while (error == NULL)
    g_main_context_iteration (NULL, TRUE);
  g_assert_nonnull (strstr (error->message, "rbd image ssd/gone"));
  g_assert_nonnull (strstr (error->message, "reading the ceph.conf"));
  g_clear_error (&error);
  shd_rbd_image_remove_async (unreachable, NULL, on_removed, &error);
  while (error == NULL)
    g_main_context_iteration (NULL, TRUE);
  g_test_message ("%s", error->message);
  g_assert_nonnull (strstr (error->message, "connecting to the cluster (rbd image ssd/gone)"));
  g_unlink (conf);
  g_rmdir (dir);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/rbdimage/parse", test_parse);
  g_test_add_func ("/rbdimage/unreachable", test_unreachable);
  return g_test_run ();
}
