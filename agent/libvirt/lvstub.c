/* The libvirt layer of a shadowd built without libvirt-dev; see
 * lvdaemon.h. */
#include "lvdaemon.h"

#define NOT_BUILT "this shadowd was built without libvirt"

struct _ShdLibvirt {
  GObject parent_instance;
};

G_DEFINE_TYPE (ShdLibvirt, shd_libvirt, G_TYPE_OBJECT)

static void shd_libvirt_class_init (ShdLibvirtClass *klass) { (void) klass; }
static void shd_libvirt_init (ShdLibvirt *lv) { (void) lv; }

gboolean
shd_libvirt_supported (void)
{
  return FALSE;
}

ShdLibvirt *
shd_libvirt_new (ShdDaemon *dm, char **uris, GError **error)
{
  (void) dm;
  (void) uris;
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "[libvirt]: " NOT_BUILT);
  return NULL;
}

void
shd_libvirt_start (ShdLibvirt *lv)
{
  (void) lv;
}

void
shd_libvirt_shutdown_async (ShdLibvirt *lv, GAsyncReadyCallback callback, gpointer data)
{
  g_autoptr (GTask) task = g_task_new (lv, NULL, callback, data);

  g_task_return_boolean (task, TRUE);
}

gboolean
shd_libvirt_shutdown_finish (ShdLibvirt *lv, GAsyncResult *res, GError **error)
{
  g_return_val_if_fail (g_task_is_valid (res, lv), FALSE);
  return g_task_propagate_boolean (G_TASK (res), error);
}

static JsonNode *
not_built (gpointer data, JsonObject *req, GError **error)
{
  (void) data;
  (void) req;
  g_set_error_literal (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, NOT_BUILT);
  return NULL;
}

static const ShdCommand commands[] = {
  { "libvirt", not_built, NULL },
  { "attach", not_built, NULL },
  { "detach", not_built, NULL },
};

void
shd_libvirt_add_commands (ShdLibvirt *lv, ShdControl *ctl)
{
  shd_control_add_commands (ctl, commands, G_N_ELEMENTS (commands), (GObject *) lv);
}
