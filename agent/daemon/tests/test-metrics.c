/* The Prometheus text format: families grouped with HELP and TYPE, label
 * values escaped, numbers as Prometheus spells them whatever the locale. */
#include "metrics.h"

#include <locale.h>
#include <math.h>
#include <string.h>

static const ShdMetricFamily families[] = {
  { "t_up", SHD_METRIC_GAUGE, "Up" },
  { "t_disk_iops", SHD_METRIC_GAUGE, "IOPS \\ by op\nand disk" },
  { "t_disk_samples_total", SHD_METRIC_COUNTER, "Samples" },
  { "t_unused", SHD_METRIC_GAUGE, "Never sampled" },
};

static void
test_grouped (void)
{
  g_autoptr (ShdMetrics) m = shd_metrics_new ();
  g_autofree char *text = NULL;

  shd_metrics_declare (m, families, G_N_ELEMENTS (families));
  /* disk by disk, as the daemon walks them */
  shd_metrics_add (m, "t_disk_iops", 1.5, "disk", "a", "op", "read", NULL);
  shd_metrics_add (m, "t_disk_samples_total", 10, "disk", "a", NULL);
  shd_metrics_add (m, "t_disk_iops", 2, "disk", "b", "op", "read", NULL);
  shd_metrics_add (m, "t_disk_samples_total", 20, "disk", "b", NULL);
  shd_metrics_add (m, "t_up", 1, NULL);
  text = shd_metrics_render (m);
  g_assert_cmpstr (text, ==,
                   "# HELP t_up Up\n"
                   "# TYPE t_up gauge\n"
                   "t_up 1\n"
                   "# HELP t_disk_iops IOPS \\\\ by op\\nand disk\n"
                   "# TYPE t_disk_iops gauge\n"
                   "t_disk_iops{disk=\"a\",op=\"read\"} 1.5\n"
                   "t_disk_iops{disk=\"b\",op=\"read\"} 2\n"
                   "# HELP t_disk_samples_total Samples\n"
                   "# TYPE t_disk_samples_total counter\n"
                   "t_disk_samples_total{disk=\"a\"} 10\n"
                   "t_disk_samples_total{disk=\"b\"} 20\n");
}

static void
test_escaped (void)
{
  g_autoptr (ShdMetrics) m = shd_metrics_new ();
  g_autofree char *text = NULL;

  shd_metrics_declare (m, families, G_N_ELEMENTS (families));
  /* a libvirt domain may be called anything but '/' */
  shd_metrics_add (m, "t_up", 1, "disk", "web \"blue\" \\ 1\nx.vda", NULL);
  /* not UTF-8: made valid */
  shd_metrics_add (m, "t_up", 2, "disk", "caf\xe9", NULL);
  text = shd_metrics_render (m);
  g_assert_nonnull (strstr (text, "t_up{disk=\"web \\\"blue\\\" \\\\ 1\\nx.vda\"} 1\n"));
  g_assert_nonnull (strstr (text, "t_up{disk=\"caf\xef\xbf\xbd\"} 2\n"));
  g_assert_true (g_utf8_validate (text, -1, NULL));
}

static void
test_numbers (void)
{
  g_autoptr (ShdMetrics) m = shd_metrics_new ();
  g_autofree char *text = NULL;

  /* a locale with a decimal comma must not leak into the output */
  setlocale (LC_NUMERIC, "de_DE.UTF-8");
  shd_metrics_declare (m, families, G_N_ELEMENTS (families));
  shd_metrics_add (m, "t_up", 0.25, "v", "quarter", NULL);
  shd_metrics_add (m, "t_up", NAN, "v", "nan", NULL);
  shd_metrics_add (m, "t_up", INFINITY, "v", "inf", NULL);
  shd_metrics_add (m, "t_up", -INFINITY, "v", "-inf", NULL);
  shd_metrics_add (m, "t_up", 1e21, "v", "big", NULL);
  text = shd_metrics_render (m);
  setlocale (LC_NUMERIC, "C");
  g_assert_nonnull (strstr (text, "t_up{v=\"quarter\"} 0.25\n"));
  g_assert_nonnull (strstr (text, "t_up{v=\"nan\"} NaN\n"));
  g_assert_nonnull (strstr (text, "t_up{v=\"inf\"} +Inf\n"));
  g_assert_nonnull (strstr (text, "t_up{v=\"-inf\"} -Inf\n"));
  g_assert_nonnull (strstr (text, "t_up{v=\"big\"} 1e+21\n"));
}

static void
test_misuse (void)
{
  if (g_test_subprocess ()) {
    g_autoptr (ShdMetrics) m = shd_metrics_new ();

    shd_metrics_declare (m, families, G_N_ELEMENTS (families));
    shd_metrics_add (m, "t_undeclared", 1, NULL);
    return;
  }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*CRITICAL*");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/metrics/grouped", test_grouped);
  g_test_add_func ("/metrics/escaped", test_escaped);
  g_test_add_func ("/metrics/numbers", test_numbers);
  g_test_add_func ("/metrics/misuse", test_misuse);
  return g_test_run ();
}
