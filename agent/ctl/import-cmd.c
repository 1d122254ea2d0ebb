/* shadowctl import: past load from a CSV file into a disk's seasonal
 * forecast, through shadowd (which learns it and keeps it in its
 * history).  The rows are per-interval counts, the last one ending at
 * --end (default: where the bucket under way began, so that rows of a
 * bucket or a multiple line up with buckets); they become the disk's buckets here (a bucket's
 * value is the 90th percentile of the rows in it, as shadowd makes them,
 * or the row's rate when a row spans several buckets) and go in parts
 * small enough for the control socket. */
#include "ctl.h"

#include "csv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PART 1000               /* buckets per request */
#define EDGE 1e-6               /* of a bucket: where a row's edge meets a bucket's */
#define QUANTILE 0.9            /* as the outlook's (policy/outlook.h) */

static int
cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;

  return x < y ? -1 : x > y;
}

static double
quantile (GArray *v)
{
  double rank, lo;
  guint i;

  qsort (v->data, v->len, sizeof (double), cmp_double);
  rank = QUANTILE * (v->len - 1);
  i = (guint) floor (rank);
  lo = g_array_index (v, double, i);
  return i + 1 < v->len ? lo + (rank - i) * (g_array_index (v, double, i + 1) - lo) : lo;
}

/* The disk's bucket size, from its status. */
static double
disk_bucket_s (const char *disk)
{
  JsonObject *req = ctl_request ("status");
  g_autoptr (JsonNode) ret = NULL;
  JsonObject *st, *fc, *sf;

  json_object_set_string_member (req, "disk", disk);
  if (ctl_call (req, &ret) != EXIT_SUCCESS)
    return -1;
  st = json_array_get_object_element (json_node_get_array (ret), 0);
  fc = st ? json_object_get_object_member (st, "forecast") : NULL;
  sf = fc ? json_object_get_object_member (fc, "seasonal") : NULL;
  if (sf == NULL) {
    g_printerr ("%s import: disk %s does not forecast (forecast = false)\n", ctl_prog, disk);
    return -1;
  }
  return ctl_num (sf, "bucket-s");
}

static int
send_part (const char *disk, double bucket_s, JsonArray *part, guint *season)
{
  JsonObject *req = ctl_request ("import");
  g_autoptr (JsonNode) ret = NULL;
  int rc;

  json_object_set_string_member (req, "disk", disk);
  json_object_set_double_member (req, "bucket-s", bucket_s);
  json_object_set_array_member (req, "buckets", part);
  if ((rc = ctl_call (req, &ret)) != EXIT_SUCCESS)
    return rc;
  *season = (guint) ctl_num (json_node_get_object (ret), "season-buckets");
  return EXIT_SUCCESS;
}

int
ctl_cmd_import (const CtlCommand *cmd, int argc, char **argv)
{
  g_autofree char *column = NULL;
  double interval = 0, end = 0;
  gboolean json = FALSE;
  GOptionEntry entries[] = {
    { "column", 'c', 0, G_OPTION_ARG_STRING, &column, "Column of per-row counts", "NAME" },
    { "interval-s", 0, 0, G_OPTION_ARG_DOUBLE, &interval, "Seconds per row", "S" },
    { "end", 0, 0, G_OPTION_ARG_DOUBLE, &end,
      "When the last row ends, in Unix seconds (default: the start of the bucket under way)", "T" },
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON", NULL },
    { NULL, 0, 0, 0, NULL, NULL, NULL }
  };
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) values = NULL;
  g_autoptr (GArray) in_bucket = g_array_new (FALSE, FALSE, sizeof (double));
  JsonArray *part = NULL;
  double bucket_s, start;
  gint64 cur = -1, now_bucket;
  guint sent = 0, season = 0;
  int rc = EXIT_SUCCESS;

  (void) cmd;
  if (!ctl_parse_opts (&argc, &argv, "DISK FILE.csv --column NAME --interval-s S - past load "
                       "for the seasonal forecast", entries, 2, 2))
    return EXIT_USAGE;
  if (column == NULL || !(interval > 0) || end < 0) {
    g_printerr ("%s import: --column and --interval-s are required\n", ctl_prog);
    return EXIT_USAGE;
  }
  values = shd_csv_read_column (argv[2], column, &error);
  if (values == NULL) {
    g_printerr ("%s import: %s\n", ctl_prog, error->message);
    return EXIT_FAILURE;
  }
  if ((bucket_s = disk_bucket_s (argv[1])) <= 0)
    return EXIT_FAILURE;
  now_bucket = (gint64) floor (g_get_real_time () / 1e6 / bucket_s);
  if (end == 0)
    end = now_bucket * bucket_s;
  start = end - values->len * interval;

  /* rows to buckets: a row covers [start + r S, start + (r + 1) S) */
  for (guint r = 0; r <= values->len && rc == EXIT_SUCCESS; r++) {
    double t0 = start + r * interval, rate;
    gint64 first, last;

    if (r == values->len) {
      first = last = G_MAXINT64;        /* flush */
      rate = 0;
    } else {
      rate = MAX (g_array_index (values, double, r), 0) / interval;
      /* a row's edge on a bucket's edge is in one bucket only: the
       * tolerance is in buckets, above a double's error at Unix times */
      first = (gint64) floor (t0 / bucket_s + EDGE);
      last = MAX ((gint64) floor ((t0 + interval) / bucket_s - EDGE), first);
    }
    for (gint64 b = first; b <= last && rc == EXIT_SUCCESS; b++) {
      if (b != cur && cur >= 0 && in_bucket->len > 0) {
        JsonArray *e;

        /* the bucket under way now is shadowd's to gather */
        if (cur < now_bucket) {
          e = json_array_new ();
          json_array_add_int_element (e, cur);
          json_array_add_double_element (e, quantile (in_bucket));
          if (part == NULL)
            part = json_array_new ();
          json_array_add_array_element (part, e);
          if (json_array_get_length (part) >= PART) {
            sent += json_array_get_length (part);
            rc = send_part (argv[1], bucket_s, g_steal_pointer (&part), &season);
          }
        }
        g_array_set_size (in_bucket, 0);
      }
      if (b == G_MAXINT64)
        break;
      cur = b;
      g_array_append_val (in_bucket, rate);
    }
  }
  if (rc == EXIT_SUCCESS && part && json_array_get_length (part) > 0) {
    sent += json_array_get_length (part);
    rc = send_part (argv[1], bucket_s, g_steal_pointer (&part), &season);
  }
  g_clear_pointer (&part, json_array_unref);
  if (rc != EXIT_SUCCESS)
    return rc;
  if (json) {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    g_autoptr (JsonNode) n = NULL;

    json_builder_begin_object (b);
    json_builder_set_member_name (b, "disk");
    json_builder_add_string_value (b, argv[1]);
    json_builder_set_member_name (b, "rows");
    json_builder_add_int_value (b, values->len);
    json_builder_set_member_name (b, "buckets");
    json_builder_add_int_value (b, sent);
    json_builder_set_member_name (b, "bucket-s");
    json_builder_add_double_value (b, bucket_s);
    json_builder_set_member_name (b, "season-buckets");
    json_builder_add_int_value (b, season);
    json_builder_end_object (b);
    n = json_builder_get_root (b);
    ctl_print_json (n);
  } else if (season) {
    g_print ("%s: %u rows imported as %u buckets of %.0f s; season in use: %u buckets\n",
             argv[1], values->len, sent, bucket_s, season);
  } else {
    g_print ("%s: %u rows imported as %u buckets of %.0f s; no season in use yet\n",
             argv[1], values->len, sent, bucket_s);
  }
  return EXIT_SUCCESS;
}
