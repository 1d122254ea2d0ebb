/* The collector on canned query-blockstats replies. */
#include "collector.h"

#include <math.h>

/* One child's or the node's counters in a canned reply. */
typedef struct {
  guint64 rd_ops, rd_bytes, rd_ns, wr_ops, wr_bytes, wr_ns, flush;
} Io;

#define IO_FMT "\"rd-operations\": %" G_GUINT64_FORMAT ", \"rd-bytes\": %" G_GUINT64_FORMAT \
  ", \"rd-total-time-ns\": %" G_GUINT64_FORMAT ", \"wr-operations\": %" G_GUINT64_FORMAT \
  ", \"wr-bytes\": %" G_GUINT64_FORMAT ", \"wr-total-time-ns\": %" G_GUINT64_FORMAT \
  ", \"flush-operations\": %" G_GUINT64_FORMAT
#define IO_ARGS(x) (x).rd_ops, (x).rd_bytes, (x).rd_ns, (x).wr_ops, (x).wr_bytes, (x).wr_ns, (x).flush

static char *
io_text (Io x)
{
  return g_strdup_printf (IO_FMT, IO_ARGS (x));
}

/* A reply as QEMU sends it with query-nodes: a device entry whose parent
 * is the shadow node, the children's file nodes, and the shadow node on
 * its own again. */
static JsonNode *
reply (const char *active, Io node, Io a, guint64 a_copied, Io b, guint64 b_copied,
       guint64 b_failed, const char *extra_child)
{
  g_autofree char *ni = io_text (node), *ai = io_text (a), *bi = io_text (b);
  g_autofree char *shadow = g_strdup_printf (
    "{\"node-name\": \"sh0\", \"stats\": {\"rd_bytes\": 0, \"wr_bytes\": 0},"
    " \"driver-specific\": {\"driver\": \"shadow\", \"active\": \"%s\", %s,"
    " \"children\": ["
    "  {\"node-name\": \"tier-a\", \"state\": \"%s\", \"valid-bytes\": 1073741824,"
    "   \"failed-operations\": 0, \"copied-bytes\": %" G_GUINT64_FORMAT ", %s},"
    "  {\"node-name\": \"tier-b\", \"state\": \"syncing\", \"valid-bytes\": 536870912,"
    "   \"failed-operations\": %" G_GUINT64_FORMAT ", \"copied-bytes\": %" G_GUINT64_FORMAT ", %s}%s"
    " ]}}",
    active, ni, g_strcmp0 (active, "tier-a") == 0 ? "active" : "synced", a_copied, ai,
    b_failed, b_copied, bi, extra_child ? extra_child : "");
  g_autofree char *text = g_strdup_printf (
    "[{\"device\": \"\", \"node-name\": \"exp0\", \"stats\": {\"rd_bytes\": 0},"
    "  \"parent\": %s},"
    " {\"node-name\": \"tier-a\", \"stats\": {}, \"driver-specific\": {\"driver\": \"file\","
    "  \"discard-nb-ok\": 0, \"discard-nb-failed\": 0, \"discard-bytes-ok\": 0}},"
    " %s]", shadow, shadow);
  g_autoptr (GError) error = NULL;
  JsonNode *n = json_from_string (text, &error);

  g_assert_no_error (error);
  return n;
}

static const Io node0 = { 1000, 4096000, 2000000000, 500, 32768000, 2500000000, 10 };
/* +400 reads of 4 KiB at 2 ms, +100 writes of 64 KiB at 5 ms, +10 flushes */
static const Io node1 = { 1400, 4096000 + 400 * 4096, 2000000000u + 400u * 2000000u,
                          600, 32768000 + 100 * 65536, 2500000000u + 100u * 5000000u, 20 };
static const Io a0 = { 900, 3686400, 1800000000, 500, 32768000, 2500000000, 10 };
static const Io a1 = { 1300, 3686400 + 400 * 4096, 1800000000u + 400u * 2000000u,
                       600, 32768000 + 100 * 65536, 2500000000u + 100u * 5000000u, 20 };
static const Io b0 = { 0, 0, 0, 480, 31457280, 9600000000, 0 };
/* the shadow sees the mirrored writes, slower: 20 ms */
static const Io b1 = { 0, 0, 0, 580, 31457280 + 100 * 65536, G_GUINT64_CONSTANT (9600000000) + 100u * 20000000u, 0 };

#define SEC G_GINT64_CONSTANT (1000000)

static void
test_parse (void)
{
  g_autoptr (JsonNode) r = reply ("tier-a", node0, a0, 0, b0, 1 << 20, 3, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdShadowSample) s = shd_shadow_sample_parse (r, "sh0", 5 * SEC, &error);
  const ShdChildSample *b;

  g_assert_no_error (error);
  g_assert_cmpstr (s->active, ==, "tier-a");
  /* a node without a metadata child does not name one */
  g_assert_null (s->metadata);
  g_assert_cmpuint (s->io.rd_ops, ==, 1000);
  g_assert_cmpuint (s->io.wr_time_ns, ==, 2500000000u);
  g_assert_cmpuint (s->children->len, ==, 2);
  b = shd_shadow_sample_child (s, "tier-b");
  g_assert_nonnull (b);
  g_assert_cmpstr (b->state, ==, "syncing");
  g_assert_cmpuint (b->copied_bytes, ==, 1 << 20);
  g_assert_cmpuint (b->failed_ops, ==, 3);
  g_assert_cmpuint (b->valid_bytes, ==, 536870912);
  g_assert_null (shd_shadow_sample_child (s, "tier-z"));
}

static void
test_rates (void)
{
  g_autoptr (ShdCollector) c = shd_collector_new ("sh0");
  g_autoptr (JsonNode) r0 = reply ("tier-a", node0, a0, 0, b0, 1 << 20, 3, NULL);
  g_autoptr (JsonNode) r1 = reply ("tier-a", node1, a1, 0, b1, 3 << 20, 4, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdShadowRates) first = shd_collector_push (c, r0, 10 * SEC, &error);
  g_autoptr (ShdShadowRates) rt = NULL;
  const ShdChildRates *a, *b;

  /* Nothing to compare the first sample with. */
  g_assert_no_error (error);
  g_assert_null (first);
  rt = shd_collector_push (c, r1, 12 * SEC, &error);
  g_assert_no_error (error);
  g_assert_true (rt->valid);
  g_assert_false (rt->reset);
  g_assert_false (rt->active_changed);
  g_assert_cmpfloat_with_epsilon (rt->interval_s, 2, 1e-12);
  g_assert_cmpfloat_with_epsilon (rt->io.read_iops, 200, 1e-9);
  g_assert_cmpfloat_with_epsilon (rt->io.write_iops, 50, 1e-9);
  g_assert_cmpfloat_with_epsilon (rt->io.flush_iops, 5, 1e-9);
  g_assert_cmpfloat_with_epsilon (rt->io.read_bps, 200 * 4096, 1e-6);
  g_assert_cmpfloat_with_epsilon (rt->io.write_bps, 50 * 65536, 1e-6);
  g_assert_cmpfloat_with_epsilon (rt->io.read_latency_ms, 2, 1e-9);
  g_assert_cmpfloat_with_epsilon (rt->io.write_latency_ms, 5, 1e-9);
  g_assert_cmpfloat_with_epsilon (rt->io.latency_ms, 2.6, 1e-9);
  g_assert_cmpfloat_with_epsilon (rt->io.queue_depth, 0.65, 1e-9);

  a = shd_shadow_rates_child (rt, "tier-a");
  b = shd_shadow_rates_child (rt, "tier-b");
  g_assert_true (a->valid && b->valid);
  g_assert_cmpfloat_with_epsilon (a->io.read_latency_ms, 2, 1e-9);
  g_assert_cmpfloat_with_epsilon (b->io.write_latency_ms, 20, 1e-9);
  /* No reads reached the shadow: latency unknown, not zero. */
  g_assert_true (isnan (b->io.read_latency_ms));
  g_assert_cmpfloat (b->io.read_iops, ==, 0);
  g_assert_cmpfloat_with_epsilon (b->copy_bps, 1 << 20, 1e-6);
  g_assert_cmpfloat_with_epsilon (b->failed_per_s, 0.5, 1e-12);
  g_assert_cmpfloat_with_epsilon (b->io.queue_depth, 1.0, 1e-9);
  g_assert_cmpstr (b->state, ==, "syncing");
}

/* With copy-compare the copy advances by what it writes and by what it
 * finds identical: both count in its rate, which sizes the warm-up time */
static JsonNode *
reply_compared (guint64 copied, guint64 compared)
{
  g_autofree char *io = io_text (b0);
  g_autofree char *c = g_strdup_printf (
    ", {\"node-name\": \"tier-c\", \"state\": \"syncing\", \"valid-bytes\": 0,"
    " \"failed-operations\": 0, \"copied-bytes\": %" G_GUINT64_FORMAT ","
    " \"compared-bytes\": %" G_GUINT64_FORMAT ", %s}", copied, compared, io);

  return reply ("tier-a", node0, a0, 0, b0, 0, 0, c);
}

static void
test_compared (void)
{
  g_autoptr (ShdCollector) c = shd_collector_new ("sh0");
  g_autoptr (JsonNode) r0 = reply_compared (1 << 20, 0);
  g_autoptr (JsonNode) r1 = reply_compared (2 << 20, 7 << 20);
  g_autoptr (JsonNode) r2 = reply_compared (2 << 20, 6 << 20);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdShadowRates) first = shd_collector_push (c, r0, 10 * SEC, &error);
  g_autoptr (ShdShadowRates) rt = shd_collector_push (c, r1, 12 * SEC, &error);
  g_autoptr (ShdShadowRates) back = NULL;
  g_autoptr (ShdShadowSample) s = shd_shadow_sample_parse (r1, "sh0", 12 * SEC, &error);

  g_assert_no_error (error);
  g_assert_null (first);
  g_assert_cmpuint (shd_shadow_sample_child (s, "tier-c")->compared_bytes, ==, 7 << 20);
  /* a QEMU without the counter: 0 */
  g_assert_cmpuint (shd_shadow_sample_child (s, "tier-b")->compared_bytes, ==, 0);
  g_assert_cmpfloat_with_epsilon (shd_shadow_rates_child (rt, "tier-c")->copy_bps,
                                  4 << 20, 1e-6);
  /* a counter that went back: a new node, not a negative rate */
  back = shd_collector_push (c, r2, 14 * SEC, &error);
  g_assert_no_error (error);
  g_assert_true (back->reset);
}

/* A node with a metadata child names it: shadowd's reopens must */
static void
test_metadata (void)
{
  g_autoptr (JsonNode) r = json_from_string (
    "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"shadow\","
    " \"active\": \"a\", \"metadata\": \"md0\", \"rd-operations\": 1, \"rd-bytes\": 1,"
    " \"rd-total-time-ns\": 1, \"wr-operations\": 1, \"wr-bytes\": 1,"
    " \"wr-total-time-ns\": 1, \"flush-operations\": 1, \"children\": []}}]", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdShadowSample) s = shd_shadow_sample_parse (r, "sh0", 0, &error);

  g_assert_no_error (error);
  g_assert_cmpstr (s->metadata, ==, "md0");
}

static void
test_reset (void)
{
  g_autoptr (ShdCollector) c = shd_collector_new ("sh0");
  g_autoptr (JsonNode) r0 = reply ("tier-a", node0, a0, 0, b0, 0, 0, NULL);
  g_autoptr (JsonNode) r1 = reply ("tier-a", node1, a1, 0, b1, 0, 0, NULL);
  g_autoptr (GError) error = NULL;
  ShdShadowRates *rt;

  g_assert_null (shd_collector_push (c, r1, 1 * SEC, &error));
  /* QEMU restarted: every counter is smaller. */
  rt = shd_collector_push (c, r0, 2 * SEC, &error);
  g_assert_no_error (error);
  g_assert_true (rt->reset);
  g_assert_false (rt->valid);
  g_assert_true (isnan (rt->io.read_iops));
  g_assert_false (shd_shadow_rates_child (rt, "tier-a")->valid);
  shd_shadow_rates_free (rt);
  /* ... and the next interval counts from the new values. */
  rt = shd_collector_push (c, r1, 4 * SEC, &error);
  g_assert_true (rt->valid);
  g_assert_cmpfloat_with_epsilon (rt->io.read_iops, 200, 1e-9);
  shd_shadow_rates_free (rt);
}

static void
test_child_reset_only (void)
{
  g_autoptr (JsonNode) r0 = reply ("tier-a", node0, a0, 0, b1, 0, 0, NULL);
  g_autoptr (JsonNode) r1 = reply ("tier-a", node1, a1, 0, b0, 0, 0, NULL);
  g_autoptr (ShdShadowSample) s0 = shd_shadow_sample_parse (r0, "sh0", 0, NULL);
  g_autoptr (ShdShadowSample) s1 = shd_shadow_sample_parse (r1, "sh0", SEC, NULL);
  g_autoptr (ShdShadowRates) rt = shd_shadow_rates_compute (s0, s1);

  g_assert_true (rt->reset);
  g_assert_false (rt->valid);
  g_assert_false (shd_shadow_rates_child (rt, "tier-a")->valid);
}

static void
test_new_child_and_switch (void)
{
  const char *extra = ", {\"node-name\": \"tier-c\", \"state\": \"stale\", \"valid-bytes\": 0,"
                      " \"failed-operations\": 0, \"copied-bytes\": 0, \"rd-operations\": 0,"
                      " \"rd-bytes\": 0, \"rd-total-time-ns\": 0, \"wr-operations\": 0,"
                      " \"wr-bytes\": 0, \"wr-total-time-ns\": 0, \"flush-operations\": 0}";
  g_autoptr (JsonNode) r0 = reply ("tier-a", node0, a0, 0, b0, 0, 0, NULL);
  g_autoptr (JsonNode) r1 = reply ("tier-b", node1, a1, 0, b1, 0, 0, extra);
  g_autoptr (ShdShadowSample) s0 = shd_shadow_sample_parse (r0, "sh0", 0, NULL);
  g_autoptr (ShdShadowSample) s1 = shd_shadow_sample_parse (r1, "sh0", SEC, NULL);
  g_autoptr (ShdShadowRates) rt = shd_shadow_rates_compute (s0, s1);

  g_assert_true (rt->valid);
  g_assert_true (rt->active_changed);
  g_assert_cmpstr (rt->active, ==, "tier-b");
  g_assert_cmpuint (rt->children->len, ==, 3);
  g_assert_true (shd_shadow_rates_child (rt, "tier-a")->valid);
  g_assert_false (shd_shadow_rates_child (rt, "tier-c")->valid);
  g_assert_cmpstr (shd_shadow_rates_child (rt, "tier-a")->state, ==, "synced");
}

static void
test_idle_and_zero_interval (void)
{
  g_autoptr (JsonNode) r0 = reply ("tier-a", node0, a0, 0, b0, 0, 0, NULL);
  g_autoptr (ShdShadowSample) s0 = shd_shadow_sample_parse (r0, "sh0", 0, NULL);
  g_autoptr (ShdShadowSample) s1 = shd_shadow_sample_parse (r0, "sh0", SEC, NULL);
  g_autoptr (ShdShadowSample) s2 = shd_shadow_sample_parse (r0, "sh0", SEC, NULL);
  g_autoptr (ShdShadowRates) idle = shd_shadow_rates_compute (s0, s1);
  g_autoptr (ShdShadowRates) none = shd_shadow_rates_compute (s1, s2);

  g_assert_true (idle->valid);
  g_assert_cmpfloat (idle->io.read_iops, ==, 0);
  g_assert_cmpfloat (idle->io.queue_depth, ==, 0);
  g_assert_true (isnan (idle->io.latency_ms));
  g_assert_false (none->valid);
  g_assert_false (none->reset);
}

static void
test_errors (void)
{
  struct { const char *text; int code; const char *msg; } cases[] = {
    { "[]", SHD_COLLECTOR_ERROR_NO_NODE, "no node 'sh0'" },
    { "[{\"node-name\": \"sh0\", \"stats\": {}}]", SHD_COLLECTOR_ERROR_NOT_SHADOW, "" },
    { "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"file\"}}]",
      SHD_COLLECTOR_ERROR_NOT_SHADOW, "no shadow statistics" },
    { "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"shadow\","
      " \"active\": \"a\"}}]", SHD_COLLECTOR_ERROR_MALFORMED, "'rd-operations' is missing" },
    { "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"shadow\","
      " \"active\": 3}}]", SHD_COLLECTOR_ERROR_MALFORMED, "'active' is not a string" },
    { "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"shadow\","
      " \"active\": \"a\", \"metadata\": null}}]", SHD_COLLECTOR_ERROR_MALFORMED,
      "node 'sh0': 'metadata' is not a string" },
    { "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"shadow\", \"active\": \"a\","
      " \"rd-operations\": -1}}]", SHD_COLLECTOR_ERROR_MALFORMED, "not a non-negative" },
    { "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"shadow\", \"active\": \"a\","
      " \"rd-operations\": 1, \"rd-bytes\": 1, \"rd-total-time-ns\": 1, \"wr-operations\": 1,"
      " \"wr-bytes\": 1, \"wr-total-time-ns\": 1, \"flush-operations\": 1}}]",
      SHD_COLLECTOR_ERROR_MALFORMED, "'children' is missing" },
    { "[{\"node-name\": \"sh0\", \"driver-specific\": {\"driver\": \"shadow\", \"active\": \"a\","
      " \"rd-operations\": 1, \"rd-bytes\": 1, \"rd-total-time-ns\": 1, \"wr-operations\": 1,"
      " \"wr-bytes\": 1, \"wr-total-time-ns\": 1, \"flush-operations\": 1,"
      " \"children\": [{\"node-name\": \"x\", \"state\": \"active\"}]}}]",
      SHD_COLLECTOR_ERROR_MALFORMED, "node 'sh0' child 0: 'valid-bytes' is missing" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (JsonNode) n = json_from_string (cases[i].text, NULL);
    g_autoptr (GError) error = NULL;
    g_autoptr (ShdShadowSample) s = shd_shadow_sample_parse (n, "sh0", 0, &error);

    g_assert_null (s);
    g_assert_error (error, SHD_COLLECTOR_ERROR, cases[i].code);
    if (strstr (error->message, cases[i].msg) == NULL)
      g_error ("case %u: '%s' lacks '%s'", i, error->message, cases[i].msg);
  }
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/collector/parse", test_parse);
  g_test_add_func ("/collector/rates", test_rates);
  g_test_add_func ("/collector/metadata", test_metadata);
  g_test_add_func ("/collector/reset", test_reset);
  g_test_add_func ("/collector/compared", test_compared);
  g_test_add_func ("/collector/child-reset", test_child_reset_only);
  g_test_add_func ("/collector/new-child-and-switch", test_new_child_and_switch);
  g_test_add_func ("/collector/idle-and-zero-interval", test_idle_and_zero_interval);
  g_test_add_func ("/collector/errors", test_errors);
  return g_test_run ();
}
