/* libFuzzer target: the configuration parser and validator.
 * Any input must load or fail with a message, never crash or leak. */
#include "config.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
quiet (const char *d, GLogLevelFlags l, const char *m, gpointer u)
{
  (void) d; (void) l; (void) m; (void) u;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GError *error = NULL;
  ShdConfig *c;

  g_log_set_default_handler (quiet, NULL);
  c = shd_config_load_data ((const char *) data, size, "fuzz.conf", &error);
  if (c == NULL) {
    g_assert (error != NULL && error->message != NULL);
    g_error_free (error);
    return 0;
  }
  g_assert (error == NULL);
  g_assert (c->disks->len > 0);
  for (guint i = 0; i < c->disks->len; i++) {
    const ShdDiskConfig *d = c->disks->pdata[i];

    g_assert (d->tiers->len > 0 && d->qmp && d->node && d->slo_latency_ms > 0);
    for (guint j = 0; j < d->tiers->len; j++)
      g_assert (shd_config_tier (c, ((ShdDiskTier *) d->tiers->pdata[j])->tier));
  }
  shd_config_free (c);
  return 0;
}
