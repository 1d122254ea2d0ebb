/* The SQLite history: full resolution, minute aggregates, decisions,
 * retention, and surviving a reopen. */
#include "history.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static char *
tmp_db (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp ("shd-history-XXXXXX", &error);

  g_assert_no_error (error);
  return g_build_filename (dir, "history.db", NULL);
}

static void
rm_db (const char *path)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *wal = g_strconcat (path, "-wal", NULL);
  g_autofree char *shm = g_strconcat (path, "-shm", NULL);

  g_unlink (path);
  g_unlink (wal);
  g_unlink (shm);
  g_rmdir (dir);
}

static void
test_roundtrip (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = tmp_db ();
  g_autoptr (ShdHistory) h = shd_history_open (path, 1, 7, &error);
  gint64 now = g_get_real_time () / 1000;
  gint64 t0 = now - now % 60000 - 2 * 3600 * 1000;   /* two hours ago, on a minute */
  g_autoptr (JsonNode) full = NULL, minutes = NULL, dec = NULL;
  g_autoptr (GArray) recent = NULL;
  JsonArray *a;
  JsonObject *o;

  g_assert_no_error (error);
  /* two hours of one sample per second: 0..59 in each minute, for two disks */
  for (gint64 i = 0; i < 2 * 3600; i++) {
    ShdHistorySample s = {
      .disk = "d1", .t_ms = t0 + i * 1000, .iops = (double) (i % 60),
      .read_iops = 1, .write_iops = 2, .bps = 4096.0 * (i % 60),
      .latency_ms = i % 2 ? 1.0 : NAN, .forecast = 5, .forecast_hi = 9,
      .tier = i < 3600 ? "cheap" : "fast",
    };

    g_assert_true (shd_history_add_sample (h, &s, &error));
    s.disk = "d2";
    g_assert_true (shd_history_add_sample (h, &s, &error));
    if (i % 600 == 0)
      g_assert_true (shd_history_flush (h, &error));
  }
  g_assert_true (shd_history_add_decision (h, "d1", t0 + 1000, "switch-up",
                                           "because", NULL, &error));
  {
    g_autoptr (JsonNode) detail = json_from_string ("{\"kind\": \"switch-back\", "
                                                    "\"load\": 3.5}", NULL);
    g_assert_true (shd_history_add_decision (h, "d1", t0 + 5000, "switch-back",
                                             "quiet", detail, &error));
  }
  g_assert_no_error (error);

  full = shd_history_samples (h, "d1", t0, t0 + 120000, SHD_HISTORY_FULL, 0, &error);
  g_assert_no_error (error);
  a = json_node_get_array (full);
  g_assert_cmpuint (json_array_get_length (a), ==, 120);
  o = json_array_get_object_element (a, 7);
  g_assert_cmpfloat (json_object_get_double_member (o, "iops"), ==, 7);
  g_assert_cmpfloat (json_object_get_double_member (o, "time"), ==, (t0 + 7000) / 1000.0);
  g_assert_cmpfloat (json_object_get_double_member (o, "latency-ms"), ==, 1);
  g_assert_true (json_node_is_null (json_object_get_member (
    json_array_get_object_element (a, 6), "latency-ms")));
  g_assert_cmpstr (json_object_get_string_member (o, "tier"), ==, "cheap");

  /* limit keeps the newest */
  json_node_unref (full);
  full = shd_history_samples (h, NULL, t0, t0 + 120000, SHD_HISTORY_FULL, 10, &error);
  a = json_node_get_array (full);
  g_assert_cmpuint (json_array_get_length (a), ==, 10);
  o = json_array_get_object_element (a, 9);
  g_assert_cmpfloat (json_object_get_double_member (o, "time"), ==, (t0 + 119000) / 1000.0);

  minutes = shd_history_samples (h, "d1", t0, t0 + 2 * 3600 * 1000, SHD_HISTORY_MINUTE,
                                 0, &error);
  a = json_node_get_array (minutes);
  g_assert_cmpuint (json_array_get_length (a), ==, 120);
  o = json_array_get_object_element (a, 0);
  g_assert_cmpint (json_object_get_int_member (o, "samples"), ==, 60);
  g_assert_cmpfloat (json_object_get_double_member (o, "iops"), ==, 29.5);
  g_assert_cmpfloat (json_object_get_double_member (o, "iops-max"), ==, 59);
  g_assert_cmpfloat (json_object_get_double_member (o, "latency-ms"), ==, 1);
  g_assert_cmpfloat (json_object_get_double_member (o, "forecast-upper"), ==, 9);
  o = json_array_get_object_element (a, 119);
  g_assert_cmpstr (json_object_get_string_member (o, "tier"), ==, "fast");

  dec = shd_history_decisions (h, "d1", 0, 0, &error);
  a = json_node_get_array (dec);
  g_assert_cmpuint (json_array_get_length (a), ==, 2);
  o = json_array_get_object_element (a, 0);
  g_assert_cmpstr (json_object_get_string_member (o, "reason"), ==, "because");
  o = json_array_get_object_element (a, 1);
  g_assert_cmpstr (json_object_get_string_member (o, "kind"), ==, "switch-back");
  g_assert_cmpfloat (json_object_get_double_member (o, "load"), ==, 3.5);
  g_assert_cmpstr (json_object_get_string_member (o, "disk"), ==, "d1");

  recent = shd_history_recent_load (h, "d1", 5, now, 3 * 3600 * 1000, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (recent->len, ==, 5);
  g_assert_cmpfloat (g_array_index (recent, double, 4), ==, (2 * 3600 - 1) % 60);

  /* retention: full resolution for 1 hour, minutes for 7 days */
  g_assert_cmpint (shd_history_prune (h, now, &error), >, 0);
  g_assert_no_error (error);
  g_clear_pointer (&full, json_node_unref);
  full = shd_history_samples (h, "d1", 0, G_MAXINT64, SHD_HISTORY_FULL, 0, &error);
  g_assert_cmpuint (json_array_get_length (json_node_get_array (full)), <=, 3600);
  g_assert_cmpuint (json_array_get_length (json_node_get_array (full)), >=, 3500);

  /* survives a reopen */
  g_clear_pointer (&h, shd_history_unref);
  h = shd_history_open (path, 1, 7, &error);
  g_assert_no_error (error);
  g_clear_pointer (&minutes, json_node_unref);
  minutes = shd_history_samples (h, "d2", 0, G_MAXINT64, SHD_HISTORY_MINUTE, 0, &error);
  g_assert_cmpuint (json_array_get_length (json_node_get_array (minutes)), ==, 120);
  g_clear_pointer (&h, shd_history_unref);
  rm_db (path);
}

static void
test_bad_path (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdHistory) h = shd_history_open ("/nonexistent/dir/history.db", 1, 1, &error);

  g_assert_null (h);
  g_assert_error (error, SHD_HISTORY_ERROR, 0);
  g_assert_nonnull (strstr (error->message, "/nonexistent/dir/history.db"));
}

/* The seasonal scale's buckets and the tiers' allocation: stored,
 * replaced, read back oldest first, pruned, kept over a reopen. */
static void
test_buckets_and_tiers (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = tmp_db ();
  gint64 now_ms = g_get_real_time () / 1000, now_b = now_ms / 300000;
  g_autoptr (GArray) b = NULL;
  g_autoptr (JsonNode) t = NULL;
  JsonArray *a;

  {
    g_autoptr (ShdHistory) h = shd_history_open (path, 1, 7, &error);

    g_assert_no_error (error);
    for (gint64 i = now_b - 100; i < now_b; i++)
      g_assert_true (shd_history_add_bucket (h, "d", 300, i, (double) (i % 7), &error));
    g_assert_true (shd_history_add_bucket (h, "d", 300, now_b - 1, 99, &error));
    g_assert_true (shd_history_add_bucket (h, "d", 60, now_b, 5, &error));
    /* older than history-days: pruned */
    g_assert_true (shd_history_add_bucket (h, "d", 300, now_b - 8 * 288, 1, &error));
    g_assert_true (shd_history_add_tier_sample (h, "d", now_ms - 1000, "fast", 1 << 20,
                                                "warming", FALSE, &error));
    g_assert_true (shd_history_add_tier_sample (h, "d", now_ms, "fast", NAN, "absent",
                                                FALSE, &error));
    g_assert_true (shd_history_add_tier_sample (h, "d", now_ms - 2 * 3600 * 1000, "fast",
                                                1, "ready", TRUE, &error));
    g_assert_cmpint (shd_history_prune (h, now_ms, &error), >=, 2);
    g_assert_no_error (error);
  }
  {
    g_autoptr (ShdHistory) h = shd_history_open (path, 1, 7, &error);

    g_assert_no_error (error);
    b = shd_history_buckets (h, "d", 300, 0, 0, &error);
    g_assert_no_error (error);
    g_assert_cmpuint (b->len, ==, 100);
    g_assert_cmpint (g_array_index (b, ShdHistoryBucket, 0).index, ==, now_b - 100);
    g_assert_cmpfloat (g_array_index (b, ShdHistoryBucket, 99).value, ==, 99);
    g_clear_pointer (&b, g_array_unref);
    b = shd_history_buckets (h, "d", 300, 0, 10, &error);
    g_assert_cmpuint (b->len, ==, 10);
    g_assert_cmpint (g_array_index (b, ShdHistoryBucket, 0).index, ==, now_b - 10);
    t = shd_history_tier_samples (h, "d", now_ms - 60000, 0, &error);
    g_assert_no_error (error);
    a = json_node_get_array (t);
    g_assert_cmpuint (json_array_get_length (a), ==, 2);
    g_assert_cmpfloat (json_object_get_double_member (json_array_get_object_element (a, 0),
                                                      "allocated-bytes"), ==, 1 << 20);
    g_assert_cmpstr (json_object_get_string_member (json_array_get_object_element (a, 1),
                                                    "phase"), ==, "absent");
  }
  rm_db (path);
}

/* A disk's state: replaced, kept over pruning and a reopen, per disk */
static void
test_state (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = tmp_db ();
  ShdHistory *h = shd_history_open (path, 1, 1, &error);
  g_autoptr (JsonNode) v1 = json_from_string ("{\"state\": \"copying\"}", NULL);
  g_autoptr (JsonNode) v2 = json_from_string ("{\"state\": \"done\"}", NULL);
  g_autoptr (JsonNode) got = NULL, none = NULL, other = NULL;

  g_assert_no_error (error);
  none = shd_history_get_state (h, "d1", "move", &error);
  g_assert_no_error (error);
  g_assert_null (none);
  g_assert_true (shd_history_set_state (h, "d1", "move", v1, &error));
  g_assert_true (shd_history_set_state (h, "d1", "move", v2, &error));
  /* pruning far in the future leaves it */
  g_assert_cmpint (shd_history_prune (h, g_get_real_time () / 1000 + 100 * 86400000LL,
                                      &error), >=, 0);
  shd_history_unref (h);
  h = shd_history_open (path, 1, 1, &error);
  g_assert_no_error (error);
  got = shd_history_get_state (h, "d1", "move", &error);
  g_assert_nonnull (got);
  g_assert_cmpstr (json_object_get_string_member (json_node_get_object (got), "state"), ==,
                   "done");
  other = shd_history_get_state (h, "d2", "move", &error);
  g_assert_null (other);
  shd_history_unref (h);
  rm_db (path);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/history/roundtrip", test_roundtrip);
  g_test_add_func ("/history/bad-path", test_bad_path);
  g_test_add_func ("/history/buckets-and-tiers", test_buckets_and_tiers);
  g_test_add_func ("/history/state", test_state);
  return g_test_run ();
}
