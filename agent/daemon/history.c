/* The agent's history in SQLite; see history.h. */
#include "history.h"

#include <math.h>
#include <sqlite3.h>
#include <string.h>

G_DEFINE_QUARK (shd-history-error-quark, shd_history_error)

struct _ShdHistory {
  sqlite3 *db;
  char *path;
  double full_hours, days;
  gboolean in_txn;
  sqlite3_stmt *ins_sample, *ins_minute, *ins_decision, *ins_bucket, *ins_tier;
};

static const char schema[] =
  "PRAGMA journal_mode=WAL;"
  "PRAGMA synchronous=NORMAL;"
  "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
  "INSERT OR IGNORE INTO meta VALUES ('schema', '1');"
  "CREATE TABLE IF NOT EXISTS samples ("
  "  disk TEXT NOT NULL, t INTEGER NOT NULL, iops REAL, read_iops REAL,"
  "  write_iops REAL, bps REAL, latency_ms REAL, forecast REAL, forecast_hi REAL,"
  "  tier TEXT);"
  "CREATE INDEX IF NOT EXISTS samples_disk_t ON samples (disk, t);"
  "CREATE INDEX IF NOT EXISTS samples_t ON samples (t);"
  "CREATE TABLE IF NOT EXISTS minutes ("
  "  disk TEXT NOT NULL, t INTEGER NOT NULL, n INTEGER NOT NULL,"
  "  iops_sum REAL NOT NULL, iops_max REAL NOT NULL, bps_sum REAL NOT NULL,"
  "  lat_sum REAL NOT NULL, lat_n INTEGER NOT NULL, lat_max REAL,"
  "  fc_sum REAL NOT NULL, fc_n INTEGER NOT NULL, fc_hi_max REAL, tier TEXT,"
  "  PRIMARY KEY (disk, t));"
  "CREATE TABLE IF NOT EXISTS decisions ("
  "  disk TEXT NOT NULL, t INTEGER NOT NULL, kind TEXT NOT NULL,"
  "  reason TEXT NOT NULL, detail TEXT);"
  "CREATE INDEX IF NOT EXISTS decisions_disk_t ON decisions (disk, t);"
  /* the seasonal scale: a disk's load per bucket of wall time (the
   * bucket's index is floor(unix seconds / bucket_s)) */
  "CREATE TABLE IF NOT EXISTS buckets ("
  "  disk TEXT NOT NULL, bucket_s REAL NOT NULL, idx INTEGER NOT NULL, value REAL NOT NULL,"
  "  PRIMARY KEY (disk, bucket_s, idx));"
  /* what each tier's image had allocated, its phase, and whether active */
  "CREATE TABLE IF NOT EXISTS tiers ("
  "  disk TEXT NOT NULL, t INTEGER NOT NULL, tier TEXT NOT NULL, allocated REAL,"
  "  phase TEXT, active INTEGER NOT NULL);"
  "CREATE INDEX IF NOT EXISTS tiers_disk_t ON tiers (disk, t);";

static gboolean
db_fail (ShdHistory *h, GError **error, const char *what)
{
  g_set_error (error, SHD_HISTORY_ERROR, 0, "%s: %s: %s", h->path, what,
               sqlite3_errmsg (h->db));
  return FALSE;
}

static gboolean
exec (ShdHistory *h, const char *sql, GError **error)
{
  char *msg = NULL;

  if (sqlite3_exec (h->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    g_set_error (error, SHD_HISTORY_ERROR, 0, "%s: %s", h->path, msg ? msg : "error");
    sqlite3_free (msg);
    return FALSE;
  }
  return TRUE;
}

static void
history_clear (ShdHistory *h)
{
  if (h->in_txn)
    shd_history_flush (h, NULL);
  sqlite3_finalize (h->ins_sample);
  sqlite3_finalize (h->ins_minute);
  sqlite3_finalize (h->ins_decision);
  sqlite3_finalize (h->ins_bucket);
  sqlite3_finalize (h->ins_tier);
  sqlite3_close (h->db);
  g_free (h->path);
}

ShdHistory *
shd_history_ref (ShdHistory *h)
{
  return g_rc_box_acquire (h);
}

void
shd_history_unref (ShdHistory *h)
{
  g_rc_box_release_full (h, (GDestroyNotify) history_clear);
}

ShdHistory *
shd_history_open (const char *path, double full_hours, double days, GError **error)
{
  g_autoptr (ShdHistory) h = g_rc_box_new0 (ShdHistory);

  h->path = g_strdup (path);
  h->full_hours = full_hours;
  h->days = days;
  if (sqlite3_open_v2 (path, &h->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                       SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    db_fail (h, error, "cannot open");
    return NULL;
  }
  sqlite3_busy_timeout (h->db, 2000);
  if (!exec (h, schema, error))
    return NULL;
  if (sqlite3_prepare_v2 (h->db,
        "INSERT INTO samples VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        -1, &h->ins_sample, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2 (h->db,
        "INSERT INTO minutes VALUES (?1, ?2, 1, ?3, ?3, ?4, coalesce(?5, 0),"
        "  ?5 IS NOT NULL, ?5, coalesce(?6, 0), ?6 IS NOT NULL, ?7, ?8)"
        " ON CONFLICT (disk, t) DO UPDATE SET n = n + 1,"
        "  iops_sum = iops_sum + excluded.iops_sum,"
        "  iops_max = max(iops_max, excluded.iops_max),"
        "  bps_sum = bps_sum + excluded.bps_sum,"
        "  lat_sum = lat_sum + excluded.lat_sum, lat_n = lat_n + excluded.lat_n,"
        "  lat_max = max(coalesce(lat_max, excluded.lat_max), coalesce(excluded.lat_max, lat_max)),"
        "  fc_sum = fc_sum + excluded.fc_sum, fc_n = fc_n + excluded.fc_n,"
        "  fc_hi_max = max(coalesce(fc_hi_max, excluded.fc_hi_max),"
        "                  coalesce(excluded.fc_hi_max, fc_hi_max)),"
        "  tier = excluded.tier",
        -1, &h->ins_minute, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2 (h->db, "INSERT INTO decisions VALUES (?1, ?2, ?3, ?4, ?5)",
        -1, &h->ins_decision, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2 (h->db, "INSERT INTO buckets VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT (disk, bucket_s, idx) DO UPDATE SET value = excluded.value",
        -1, &h->ins_bucket, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2 (h->db, "INSERT INTO tiers VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        -1, &h->ins_tier, NULL) != SQLITE_OK) {
    db_fail (h, error, "cannot prepare statements");
    return NULL;
  }
  return g_steal_pointer (&h);
}

static gboolean
begin (ShdHistory *h, GError **error)
{
  if (h->in_txn)
    return TRUE;
  if (!exec (h, "BEGIN", error))
    return FALSE;
  h->in_txn = TRUE;
  return TRUE;
}

gboolean
shd_history_flush (ShdHistory *h, GError **error)
{
  if (!h->in_txn)
    return TRUE;
  h->in_txn = FALSE;
  if (!exec (h, "COMMIT", error)) {
    exec (h, "ROLLBACK", NULL);
    return FALSE;
  }
  return TRUE;
}

static void
bind_real (sqlite3_stmt *st, int i, double v)
{
  if (isfinite (v))
    sqlite3_bind_double (st, i, v);
  else
    sqlite3_bind_null (st, i);
}

static void
bind_text (sqlite3_stmt *st, int i, const char *v)
{
  if (v)
    sqlite3_bind_text (st, i, v, -1, SQLITE_TRANSIENT);
  else
    sqlite3_bind_null (st, i);
}

static gboolean
run (ShdHistory *h, sqlite3_stmt *st, GError **error)
{
  int rc = sqlite3_step (st);

  sqlite3_reset (st);
  sqlite3_clear_bindings (st);
  if (rc != SQLITE_DONE)
    return db_fail (h, error, "write failed");
  return TRUE;
}

gboolean
shd_history_add_sample (ShdHistory *h, const ShdHistorySample *s, GError **error)
{
  sqlite3_stmt *st = h->ins_sample;

  if (!begin (h, error))
    return FALSE;
  bind_text (st, 1, s->disk);
  sqlite3_bind_int64 (st, 2, s->t_ms);
  bind_real (st, 3, s->iops);
  bind_real (st, 4, s->read_iops);
  bind_real (st, 5, s->write_iops);
  bind_real (st, 6, s->bps);
  bind_real (st, 7, s->latency_ms);
  bind_real (st, 8, s->forecast);
  bind_real (st, 9, s->forecast_hi);
  bind_text (st, 10, s->tier);
  if (!run (h, st, error))
    return FALSE;

  st = h->ins_minute;
  bind_text (st, 1, s->disk);
  sqlite3_bind_int64 (st, 2, s->t_ms - s->t_ms % 60000);
  sqlite3_bind_double (st, 3, isfinite (s->iops) ? s->iops : 0);
  sqlite3_bind_double (st, 4, isfinite (s->bps) ? s->bps : 0);
  bind_real (st, 5, s->latency_ms);
  bind_real (st, 6, s->forecast);
  bind_real (st, 7, s->forecast_hi);
  bind_text (st, 8, s->tier);
  return run (h, st, error);
}

gboolean
shd_history_add_decision (ShdHistory *h, const char *disk, gint64 t_ms,
                          const char *kind, const char *reason, JsonNode *detail,
                          GError **error)
{
  sqlite3_stmt *st = h->ins_decision;
  g_autofree char *text = detail ? json_to_string (detail, FALSE) : NULL;

  if (!begin (h, error))
    return FALSE;
  bind_text (st, 1, disk);
  sqlite3_bind_int64 (st, 2, t_ms);
  bind_text (st, 3, kind);
  bind_text (st, 4, reason);
  bind_text (st, 5, text);
  return run (h, st, error);
}

gint64
shd_history_prune (ShdHistory *h, gint64 now_ms, GError **error)
{
  gint64 full = now_ms - (gint64) (h->full_hours * 3600e3);
  gint64 agg = now_ms - (gint64) (h->days * 86400e3);
  g_autofree char *sql = g_strdup_printf (
    "DELETE FROM samples WHERE t < %" G_GINT64_FORMAT ";"
    "DELETE FROM minutes WHERE t < %" G_GINT64_FORMAT ";"
    "DELETE FROM decisions WHERE t < %" G_GINT64_FORMAT ";"
    "DELETE FROM tiers WHERE t < %" G_GINT64_FORMAT ";"
    "DELETE FROM buckets WHERE (idx + 1) * bucket_s * 1000 < %" G_GINT64_FORMAT ";",
    full, agg, agg, full, agg);
  gint64 before = sqlite3_total_changes64 (h->db);

  if (!shd_history_flush (h, error) || !exec (h, sql, error))
    return -1;
  return sqlite3_total_changes64 (h->db) - before;
}

static void
add_col (JsonBuilder *b, sqlite3_stmt *st, int col, const char *name)
{
  json_builder_set_member_name (b, name);
  switch (sqlite3_column_type (st, col)) {
  case SQLITE_NULL:
    json_builder_add_null_value (b);
    break;
  case SQLITE_INTEGER:
    json_builder_add_int_value (b, sqlite3_column_int64 (st, col));
    break;
  case SQLITE_FLOAT:
    json_builder_add_double_value (b, sqlite3_column_double (st, col));
    break;
  default:
    json_builder_add_string_value (b, (const char *) sqlite3_column_text (st, col));
  }
}

JsonNode *
shd_history_samples (ShdHistory *h, const char *disk, gint64 since_ms, gint64 until_ms,
                     ShdHistoryResolution res, guint limit, GError **error)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  sqlite3_stmt *st = NULL;
  const char *sql;
  gint64 full_from = g_get_real_time () / 1000 - (gint64) (h->full_hours * 3600e3);

  if (!shd_history_flush (h, error))
    return NULL;
  if (res == SHD_HISTORY_AUTO)
    res = since_ms >= full_from ? SHD_HISTORY_FULL : SHD_HISTORY_MINUTE;
  /* the newest `limit`, returned oldest first */
  if (res == SHD_HISTORY_FULL)
    sql = "SELECT * FROM (SELECT disk, t, iops, read_iops, write_iops, bps, latency_ms,"
          " forecast, forecast_hi, tier FROM samples"
          " WHERE (?1 IS NULL OR disk = ?1) AND t >= ?2 AND t < ?3"
          " ORDER BY t DESC LIMIT ?4) ORDER BY t, disk";
  else
    sql = "SELECT * FROM (SELECT disk, t, iops_sum / n, NULL, NULL, bps_sum / n,"
          " CASE WHEN lat_n > 0 THEN lat_sum / lat_n END,"
          " CASE WHEN fc_n > 0 THEN fc_sum / fc_n END, fc_hi_max, tier, n, iops_max,"
          " lat_max FROM minutes"
          " WHERE (?1 IS NULL OR disk = ?1) AND t >= ?2 AND t < ?3"
          " ORDER BY t DESC LIMIT ?4) ORDER BY t, disk";
  if (sqlite3_prepare_v2 (h->db, sql, -1, &st, NULL) != SQLITE_OK) {
    db_fail (h, error, "query failed");
    return NULL;
  }
  bind_text (st, 1, disk);
  sqlite3_bind_int64 (st, 2, since_ms);
  sqlite3_bind_int64 (st, 3, until_ms);
  sqlite3_bind_int64 (st, 4, limit ? (gint64) limit : -1);
  json_builder_begin_array (b);
  while (sqlite3_step (st) == SQLITE_ROW) {
    json_builder_begin_object (b);
    add_col (b, st, 0, "disk");
    json_builder_set_member_name (b, "time");
    json_builder_add_double_value (b, sqlite3_column_int64 (st, 1) / 1000.0);
    add_col (b, st, 2, "iops");
    if (res == SHD_HISTORY_FULL) {
      add_col (b, st, 3, "read-iops");
      add_col (b, st, 4, "write-iops");
    }
    add_col (b, st, 5, "bps");
    add_col (b, st, 6, "latency-ms");
    add_col (b, st, 7, "forecast");
    add_col (b, st, 8, "forecast-upper");
    add_col (b, st, 9, "tier");
    if (res == SHD_HISTORY_MINUTE) {
      add_col (b, st, 10, "samples");
      add_col (b, st, 11, "iops-max");
      add_col (b, st, 12, "latency-max-ms");
    }
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  sqlite3_finalize (st);
  return json_builder_get_root (b);
}

/* Rows pending are written first; then @sql prepared with ?1 the disk (NULL:
 * every disk), ?2 the earliest time and ?3 the row limit (0: none).  NULL
 * with @error set on failure. */
static sqlite3_stmt *
query_newest (ShdHistory *h, const char *sql, const char *disk, gint64 since_ms, guint limit,
              GError **error)
{
  sqlite3_stmt *st = NULL;

  if (!shd_history_flush (h, error))
    return NULL;
  if (sqlite3_prepare_v2 (h->db, sql, -1, &st, NULL) != SQLITE_OK) {
    db_fail (h, error, "query failed");
    return NULL;
  }
  bind_text (st, 1, disk);
  sqlite3_bind_int64 (st, 2, since_ms);
  sqlite3_bind_int64 (st, 3, limit ? (gint64) limit : -1);
  return st;
}

JsonNode *
shd_history_decisions (ShdHistory *h, const char *disk, gint64 since_ms, guint limit,
                       GError **error)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  sqlite3_stmt *st = query_newest (h,
        "SELECT * FROM (SELECT disk, t, kind, reason, detail FROM decisions"
        " WHERE (?1 IS NULL OR disk = ?1) AND t >= ?2 ORDER BY t DESC LIMIT ?3)"
        " ORDER BY t, disk", disk, since_ms, limit, error);

  if (st == NULL)
    return NULL;
  json_builder_begin_array (b);
  while (sqlite3_step (st) == SQLITE_ROW) {
    const char *detail = (const char *) sqlite3_column_text (st, 4);
    g_autoptr (JsonNode) dn = detail ? json_from_string (detail, NULL) : NULL;

    if (dn && JSON_NODE_HOLDS_OBJECT (dn)) {
      JsonObject *o = json_node_get_object (dn);

      json_object_set_string_member (o, "disk", (const char *) sqlite3_column_text (st, 0));
      json_object_set_double_member (o, "time", sqlite3_column_int64 (st, 1) / 1000.0);
      json_builder_add_value (b, g_steal_pointer (&dn));
      continue;
    }
    json_builder_begin_object (b);
    add_col (b, st, 0, "disk");
    json_builder_set_member_name (b, "time");
    json_builder_add_double_value (b, sqlite3_column_int64 (st, 1) / 1000.0);
    add_col (b, st, 2, "kind");
    add_col (b, st, 3, "reason");
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  sqlite3_finalize (st);
  return json_builder_get_root (b);
}

GArray *
shd_history_recent_load (ShdHistory *h, const char *disk, guint n, gint64 now_ms,
                         gint64 max_age_ms, GError **error)
{
  GArray *out = g_array_new (FALSE, FALSE, sizeof (double));
  sqlite3_stmt *st = NULL;

  if (!shd_history_flush (h, error) ||
      sqlite3_prepare_v2 (h->db,
        "SELECT iops FROM (SELECT t, iops FROM samples WHERE disk = ?1 AND t >= ?2"
        " AND iops IS NOT NULL ORDER BY t DESC LIMIT ?3) ORDER BY t", -1, &st,
        NULL) != SQLITE_OK) {
    if (st == NULL && error && *error == NULL)
      db_fail (h, error, "query failed");
    g_array_unref (out);
    return NULL;
  }
  bind_text (st, 1, disk);
  sqlite3_bind_int64 (st, 2, now_ms - max_age_ms);
  sqlite3_bind_int64 (st, 3, n);
  while (sqlite3_step (st) == SQLITE_ROW) {
    double v = sqlite3_column_double (st, 0);

    g_array_append_val (out, v);
  }
  sqlite3_finalize (st);
  return out;
}

gboolean
shd_history_add_bucket (ShdHistory *h, const char *disk, double bucket_s, gint64 index,
                        double value, GError **error)
{
  sqlite3_stmt *st = h->ins_bucket;

  if (!begin (h, error))
    return FALSE;
  bind_text (st, 1, disk);
  sqlite3_bind_double (st, 2, bucket_s);
  sqlite3_bind_int64 (st, 3, index);
  sqlite3_bind_double (st, 4, value);
  return run (h, st, error);
}

GArray *
shd_history_buckets (ShdHistory *h, const char *disk, double bucket_s, gint64 since_index,
                     guint limit, GError **error)
{
  GArray *out = g_array_new (FALSE, FALSE, sizeof (ShdHistoryBucket));
  sqlite3_stmt *st = NULL;

  if (!shd_history_flush (h, error))
    goto fail;
  if (sqlite3_prepare_v2 (h->db,
        "SELECT idx, value FROM (SELECT idx, value FROM buckets"
        " WHERE disk = ?1 AND bucket_s = ?2 AND idx >= ?3 ORDER BY idx DESC LIMIT ?4)"
        " ORDER BY idx", -1, &st, NULL) != SQLITE_OK) {
    db_fail (h, error, "query failed");
    goto fail;
  }
  bind_text (st, 1, disk);
  sqlite3_bind_double (st, 2, bucket_s);
  sqlite3_bind_int64 (st, 3, since_index);
  sqlite3_bind_int64 (st, 4, limit ? (gint64) limit : -1);
  while (sqlite3_step (st) == SQLITE_ROW) {
    ShdHistoryBucket b = { sqlite3_column_int64 (st, 0), sqlite3_column_double (st, 1) };

    g_array_append_val (out, b);
  }
  sqlite3_finalize (st);
  return out;

fail:
  g_array_unref (out);
  return NULL;
}

gboolean
shd_history_add_tier_sample (ShdHistory *h, const char *disk, gint64 t_ms, const char *tier,
                             double allocated, const char *phase, gboolean active,
                             GError **error)
{
  sqlite3_stmt *st = h->ins_tier;

  if (!begin (h, error))
    return FALSE;
  bind_text (st, 1, disk);
  sqlite3_bind_int64 (st, 2, t_ms);
  bind_text (st, 3, tier);
  bind_real (st, 4, allocated);
  bind_text (st, 5, phase);
  sqlite3_bind_int (st, 6, active);
  return run (h, st, error);
}

JsonNode *
shd_history_tier_samples (ShdHistory *h, const char *disk, gint64 since_ms, guint limit,
                          GError **error)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  sqlite3_stmt *st = query_newest (h,
        "SELECT * FROM (SELECT disk, t, tier, allocated, phase, active FROM tiers"
        " WHERE (?1 IS NULL OR disk = ?1) AND t >= ?2 ORDER BY t DESC LIMIT ?3)"
        " ORDER BY t, disk, tier", disk, since_ms, limit, error);

  if (st == NULL)
    return NULL;
  json_builder_begin_array (b);
  while (sqlite3_step (st) == SQLITE_ROW) {
    json_builder_begin_object (b);
    add_col (b, st, 0, "disk");
    json_builder_set_member_name (b, "time");
    json_builder_add_double_value (b, sqlite3_column_int64 (st, 1) / 1000.0);
    add_col (b, st, 2, "tier");
    add_col (b, st, 3, "allocated-bytes");
    add_col (b, st, 4, "phase");
    json_builder_set_member_name (b, "active");
    json_builder_add_boolean_value (b, sqlite3_column_int (st, 5) != 0);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  sqlite3_finalize (st);
  return json_builder_get_root (b);
}

/* The meta table's key of a disk's state */
static char *
state_key (const char *disk, const char *key)
{
  return g_strdup_printf ("disk:%s:%s", disk, key);
}

gboolean
shd_history_set_state (ShdHistory *h, const char *disk, const char *key, JsonNode *value,
                       GError **error)
{
  g_autofree char *k = state_key (disk, key);
  g_autofree char *text = json_to_string (value, FALSE);
  sqlite3_stmt *st = NULL;
  gboolean ok;

  /* what was batched first, then this on its own: committed on return */
  if (!shd_history_flush (h, error))
    return FALSE;
  if (sqlite3_prepare_v2 (h->db, "INSERT OR REPLACE INTO meta VALUES (?1, ?2)", -1, &st,
                          NULL) != SQLITE_OK) {
    db_fail (h, error, "cannot store a disk's state");
    return FALSE;
  }
  bind_text (st, 1, k);
  bind_text (st, 2, text);
  ok = sqlite3_step (st) == SQLITE_DONE;
  if (!ok)
    db_fail (h, error, "cannot store a disk's state");
  sqlite3_finalize (st);
  return ok;
}

JsonNode *
shd_history_get_state (ShdHistory *h, const char *disk, const char *key, GError **error)
{
  g_autofree char *k = state_key (disk, key);
  sqlite3_stmt *st = NULL;
  JsonNode *out = NULL;

  if (sqlite3_prepare_v2 (h->db, "SELECT value FROM meta WHERE key = ?1", -1, &st,
                          NULL) != SQLITE_OK) {
    db_fail (h, error, "cannot read a disk's state");
    return NULL;
  }
  bind_text (st, 1, k);
  if (sqlite3_step (st) == SQLITE_ROW && sqlite3_column_text (st, 0))
    out = json_from_string ((const char *) sqlite3_column_text (st, 0), NULL);
  sqlite3_finalize (st);
  return out;
}
