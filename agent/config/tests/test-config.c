/* The configuration file: good files load with the right values and
 * defaults; each kind of mistake is reported with its file, line, group
 * and key. */
#include "config.h"

#include <glib/gstdio.h>
#include <unistd.h>
#include <string.h>

#define DESIGN_EXAMPLE                          \
  "[shadowd]\n"                                 \
  "interval = 1\n"                              \
  "control = /run/shadowd/control.sock\n"       \
  "state = /var/lib/shadowd/history.db\n"       \
  "\n"                                          \
  "[tier:cheap]\n"                              \
  "cost-gib-month = 0.02\n"                     \
  "\n"                                          \
  "[tier:fast]\n"                               \
  "cost-gib-month = 0.12\n"                     \
  "\n"                                          \
  "[disk:vm1-vda]\n"                            \
  "qmp = /run/vm1.qmp\n"                        \
  "node = sh0\n"                                \
  "tier.cheap = tier-a\n"                       \
  "tier.fast = tier-b\n"                        \
  "slo-latency-ms = 5\n"

static ShdConfig *
load (const char *text, GError **error)
{
  return shd_config_load_data (text, strlen (text), "test.conf", error);
}

static void
test_design_example (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdConfig) c = load (DESIGN_EXAMPLE, &error);
  const ShdDiskConfig *d;
  const ShdDiskTier *t;

  g_assert_no_error (error);
  g_assert_nonnull (c);
  g_assert_cmpfloat (c->interval_s, ==, 1);
  g_assert_cmpstr (c->control, ==, "/run/shadowd/control.sock");
  g_assert_cmpstr (c->state, ==, "/var/lib/shadowd/history.db");
  g_assert_cmpuint (c->tiers->len, ==, 2);
  g_assert_cmpfloat (shd_config_tier (c, "cheap")->cost_gib_month, ==, 0.02);
  g_assert_cmpfloat (shd_config_tier (c, "fast")->cost_gib_month, ==, 0.12);
  g_assert_null (shd_config_tier (c, "nope"));
  g_assert_cmpuint (c->disks->len, ==, 1);
  d = shd_config_disk (c, "vm1-vda");
  g_assert_nonnull (d);
  g_assert_cmpstr (d->qmp, ==, "/run/vm1.qmp");
  g_assert_cmpstr (d->node, ==, "sh0");
  g_assert_cmpfloat (d->slo_latency_ms, ==, 5);
  g_assert_cmpuint (d->tiers->len, ==, 2);
  t = d->tiers->pdata[0];
  g_assert_cmpstr (t->tier, ==, "cheap");
  g_assert_cmpstr (t->child, ==, "tier-a");
  t = d->tiers->pdata[1];
  g_assert_cmpstr (t->tier, ==, "fast");
  g_assert_cmpstr (t->child, ==, "tier-b");
  /* defaults */
  g_assert_cmpuint (c->metrics_port, ==, 9477);
  g_assert_cmpstr (c->metrics_address, ==, "127.0.0.1");
  g_assert_false (c->dry_run);
  g_assert_false (d->dry_run);
  g_assert_true (d->add_children);
  g_assert_cmpfloat (d->knobs.min_dwell_s, ==, 60);
  g_assert_cmpuint (d->knobs.max_switches_per_hour, ==, 6);
  g_assert_cmpfloat (d->knobs.hysteresis, ==, 0.25);
  g_assert_null (d->chunk_size);
  g_assert_null (d->write_mode);
  g_assert_null (d->prewarm);
}

static void
test_overrides (void)
{
  static const char text[] =
    "# every knob\n"
    "[shadowd]\n"
    "interval = 0.5\n"
    "control =\n"
    "state =\n"
    "metrics-port = 0\n"
    "metrics-address = ::1\n"
    "dry-run = true\n"
    "min-dwell = 30\n"
    "max-switches-per-hour = 4\n"
    "hysteresis = 0.3\n"
    "switch-back-after = 45\n"
    "spike-sensitivity = 2\n"
    "horizon = 10\n"
    "prediction-level = 0.95\n"
    "max-utilization = 0.7\n"
    "violation-intervals = 2\n"
    "period = 48\n"
    "history-full-hours = 1\n"
    "history-days = 7\n"
    "qmp-timeout-ms = 2000\n"
    "[tier:cheap]\n"
    "cost-gib-month = 0.02\n"
    "max-iops = 200\n"
    "latency-ms = 4\n"
    "[tier:fast]\n"
    "cost-gib-month = 0.12\n"
    "[disk:a]\n"
    "qmp = /tmp/a.qmp\n"
    "node = sh0\n"
    "tier.fast = tb\n"
    "tier.cheap = ta\n"
    "slo-latency-ms = 2.5\n"
    "min-dwell = 5\n"
    "dry-run = false\n"
    "add-children = false\n"
    "chunk-size = 1048576\n"
    "write-mode = sync\n"
    "prewarm = sequential\n"
    "prewarm-speed = 0\n"
    "read-from = active\n"
    "copy-on-read = true\n"
    "copy-compare = true\n"
    "size-gib = 100\n"
    "[disk:b]\n"
    "qmp = /tmp/b.qmp\n"
    "node = sh0\n"
    "tier.cheap = x\n"
    "slo-latency-ms = 10\n";
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdConfig) c = load (text, &error);
  const ShdDiskConfig *a, *b;

  g_assert_no_error (error);
  g_assert_cmpfloat (c->interval_s, ==, 0.5);
  g_assert_cmpstr (c->control, ==, "");
  g_assert_cmpstr (c->state, ==, "");
  g_assert_cmpuint (c->metrics_port, ==, 0);
  g_assert_cmpstr (c->metrics_address, ==, "::1");
  g_assert_true (c->dry_run);
  g_assert_cmpfloat (c->history_full_hours, ==, 1);
  g_assert_cmpfloat (c->history_days, ==, 7);
  g_assert_cmpuint (c->qmp_timeout_ms, ==, 2000);
  g_assert_cmpfloat (shd_config_tier (c, "cheap")->max_iops, ==, 200);
  g_assert_cmpfloat (shd_config_tier (c, "cheap")->latency_ms, ==, 4);
  a = shd_config_disk (c, "a");
  b = shd_config_disk (c, "b");
  /* per-disk override, the rest inherited from [shadowd] */
  g_assert_cmpfloat (a->knobs.min_dwell_s, ==, 5);
  g_assert_cmpfloat (b->knobs.min_dwell_s, ==, 30);
  g_assert_cmpuint (a->knobs.max_switches_per_hour, ==, 4);
  g_assert_cmpfloat (a->knobs.hysteresis, ==, 0.3);
  g_assert_cmpfloat (a->knobs.switch_back_after_s, ==, 45);
  g_assert_cmpfloat (a->knobs.spike_sensitivity, ==, 2);
  g_assert_cmpfloat (a->knobs.horizon_s, ==, 10);
  g_assert_cmpfloat (a->knobs.level, ==, 0.95);
  g_assert_cmpfloat (a->knobs.max_utilization, ==, 0.7);
  g_assert_cmpuint (a->knobs.violation_intervals, ==, 2);
  g_assert_cmpuint (a->knobs.period, ==, 48);
  g_assert_false (a->dry_run);
  g_assert_true (b->dry_run);
  g_assert_false (a->add_children);
  g_assert_true (b->add_children);
  g_assert_cmpstr (a->chunk_size, ==, "1048576");
  g_assert_cmpstr (a->write_mode, ==, "sync");
  g_assert_cmpstr (a->prewarm, ==, "sequential");
  g_assert_cmpstr (a->prewarm_speed, ==, "0");
  g_assert_cmpstr (a->read_from, ==, "active");
  g_assert_cmpstr (a->copy_on_read, ==, "true");
  g_assert_cmpstr (a->copy_compare, ==, "true");
  g_assert_null (b->copy_compare);
  g_assert_cmpfloat (a->size_gib, ==, 100);
  /* tiers in file order */
  g_assert_cmpstr (((ShdDiskTier *) a->tiers->pdata[0])->tier, ==, "fast");
  g_assert_cmpstr (((ShdDiskTier *) a->tiers->pdata[1])->child, ==, "ta");
}

static void
test_file (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp ("shd-config-XXXXXX", &path, &error);
  g_autoptr (ShdConfig) c = NULL;

  g_assert_no_error (error);
  close (fd);
  g_assert_true (g_file_set_contents (path, DESIGN_EXAMPLE, -1, &error));
  c = shd_config_load_file (path, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (c->path, ==, path);
  g_unlink (path);
  g_clear_pointer (&c, shd_config_free);
  c = shd_config_load_file (path, &error);
  g_assert_null (c);
  g_assert_error (error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
}

/* One bad file per row: the whole message must match exactly. */
static const struct {
  const char *text;
  const char *message;
} bad[] = {
  { "not a key file\n",
    "test.conf: Key file contains line *" },
  { "[shadowd]\nseasons = 86400;a day\n",
    "test.conf:2: [shadowd] seasons: 'a day' is not a number of seconds" },
  { "[shadowd]\nbucket = 300\nseasons = 600\n",
    "test.conf:3: [shadowd] seasons: a season of 600 s is shorter than 4 buckets of 300 s" },
  { "[shadowd]\nrelease = shred\n",
    "test.conf:2: [shadowd] release: 'shred' is not one of: discard, keep" },
  { "[shadowd]\nrelease-origin = maybe\n",
    "test.conf:2: [shadowd] release-origin: 'maybe' is not a boolean (true or false)" },
  { "[tier:cheap]\ncost-gib-month = 0.02\n[disk:a]\nqmp = q\nnode = n\n"
    "slo-latency-ms = 5\ntier.cheap = c\norigin = fast\n",
    "test.conf:8: [disk:a] origin: the disk has no tier 'fast'" },
  { "[tier:cheap]\ncost-gib-month = 0.02\n[disk:a]\nqmp = q\nnode = n\n"
    "slo-latency-ms = 5\ntier.cheap = c\ncopy-compare = yes\n",
    "test.conf:8: [disk:a] copy-compare: 'yes' is not a boolean (true or false)" },
  { "[shadowd]\nforecast = maybe\n",
    "test.conf:2: [shadowd] forecast: 'maybe' is not a boolean (true or false)" },
  { "[tier:fast]\ncost-gib-month = 1\nkeep-warm = 2 parsecs\n",
    "test.conf:3: [tier:fast] keep-warm: '2 parsecs': unknown unit (K, M, G, T)" },
  { "[shadowd]\ninterval = fast\n",
    "test.conf:2: [shadowd] interval: 'fast' is not a number" },
  { "[shadowd]\ninterval = 1 seconds between samples\n",
    "test.conf:2: [shadowd] interval: '1 seconds between samples' is not a number" },
  { "[shadowd]\n\ninterval = 0\n",
    "test.conf:3: [shadowd] interval: 0 must be between 0.05 and 3600" },
  { "[shadowd]\nintervall = 1\n",
    "test.conf:2: [shadowd] intervall: unknown key" },
  { "[shadowd]\ncontrol = run/x.sock\n",
    "test.conf:2: [shadowd] control: 'run/x.sock' is not an absolute path" },
  { "[shadowd]\ncontrol = /run/\xff\n",
    "test.conf:2: [shadowd] control: not a valid string (bad escape or UTF-8)" },
  { "[shadowd]\nmetrics-port = 70000\n",
    "test.conf:2: [shadowd] metrics-port: 70000 must be between 0 and 65535" },
  { "[shadowd]\nmetrics-address = localhost\n",
    "test.conf:2: [shadowd] metrics-address: 'localhost' is not an IP address" },
  { "[shadowd]\ndry-run = yes\n",
    "test.conf:2: [shadowd] dry-run: 'yes' is not a boolean (true or false)" },
  { "[shadowd]\nhysteresis = -0.1\n",
    "test.conf:2: [shadowd] hysteresis: -0.1 must be between 0 and 0.9" },
  { "[shadowd]\nmax-switches-per-hour = -1\n",
    "test.conf:2: [shadowd] max-switches-per-hour: '-1' is not a non-negative integer" },
  { "[shadowd]\n[vm]\nx = 1\n",
    "test.conf:2: [vm]: unknown group (expected [shadowd], [libvirt], [tier:NAME] or [disk:NAME])" },
  { "[tier:cheap]\nmax-iops = 3\n",
    "test.conf:1: [tier:cheap]: the key 'cost-gib-month' is missing" },
  { "[tier:cheap]\ncost-gib-month = free\n",
    "test.conf:2: [tier:cheap] cost-gib-month: 'free' is not a number" },
  { "[tier:a b]\ncost-gib-month = 1\n",
    "test.conf:1: [tier:a b]: 'a b' is not a valid tier name (letters, digits, '-', '_', '.')" },
  { "[tier:cheap]\ncost-gib-month = 1\n",
    "test.conf: no [disk:NAME] group and no [libvirt] uri: nothing to manage" },
  { "[libvirt]\ntier-dirs = /srv\n",
    "test.conf:1: [libvirt] uri: give at least one libvirt URI, e.g. qemu:///system "
    "(several are separated by ';')" },
  { "[libvirt]\nuri = system\n",
    "test.conf:2: [libvirt] uri: 'system' is not a libvirt URI" },
  { "[libvirt]\nuri = qemu:///system\ntier-dirs = /srv;relative\n",
    "test.conf:3: [libvirt] tier-dirs: 'relative' is not an absolute path" },
  { "[libvirt]\nuri = qemu:///system\nurl = x\n",
    "test.conf:3: [libvirt] url: unknown key" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nnode = sh0\ntier.cheap = a\nslo-latency-ms = 1\n",
    "test.conf:3: [disk:d]: the key 'qmp' is missing" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\ntier.cheap = a\n",
    "test.conf:3: [disk:d]: the key 'slo-latency-ms' is missing" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 0\n",
    "test.conf:7: [disk:d] slo-latency-ms: 0 must be greater than 0 and at most 1e+06" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.fast = a\nslo-latency-ms = 1\n",
    "test.conf:6: [disk:d] tier.fast: there is no [tier:fast] group" },
  { "[tier:cheap]\ncost-gib-month = 1\n[tier:fast]\ncost-gib-month = 2\n[disk:d]\n"
    "qmp = /q\nnode = sh0\ntier.cheap = a\ntier.fast = a\nslo-latency-ms = 1\n",
    "test.conf:9: [disk:d] tier.fast: child 'a' already serves tier 'cheap'" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\nslo-latency-ms = 1\n",
    "test.conf:3: [disk:d]: no tier: add 'tier.<name> = <child node>' for each tier "
    "the disk has" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\nchunk-size = 1000\n",
    "test.conf:8: [disk:d] chunk-size: '1000' is not a power of two from 4096 to 67108864" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\nwrite-mode = lazy\n",
    "test.conf:8: [disk:d] write-mode: 'lazy' is not one of: sync, async" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\nprewarm = hot\n",
    "test.conf:8: [disk:d] prewarm: 'hot' is not one of: off, sequential, hot-first" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\ncolour = blue\n",
    "test.conf:8: [disk:d] colour: unknown key" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = \n"
    "tier.cheap = a\nslo-latency-ms = 1\n",
    "test.conf:5: [disk:d] node: empty value" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = sh0\nslo-latency-ms = 1\n",
    "test.conf:6: [disk:d] tier.cheap: the child cannot be the shadow node itself" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\n[disk:e]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = b\nslo-latency-ms = 1\n",
    "test.conf:10: [disk:e] node: node 'sh0' on /q is already managed as disk 'd'" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\nmin-dwell = soon\n",
    "test.conf:8: [disk:d] min-dwell: 'soon' is not a number" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\ntier-rbd.fast = ssd/x\n",
    "test.conf:8: [disk:d] tier-rbd.fast: there is no 'tier.fast' naming the tier's node" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\ntier-rbd.cheap = ssd/x@snap\n",
    "test.conf:8: [disk:d] tier-rbd.cheap: 'ssd/x@snap' is not POOL/IMAGE (an rbd image: "
    "no snapshot, no options)" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\ntier-rbd.cheap = x\n",
    "test.conf:8: [disk:d] tier-rbd.cheap: 'x' is not POOL/IMAGE (an rbd image: "
    "no snapshot, no options)" },
  { "[tier:cheap]\ncost-gib-month = 1\n[disk:d]\nqmp = /q\nnode = sh0\n"
    "tier.cheap = a\nslo-latency-ms = 1\nrbd-conf = ceph.conf\n",
    "test.conf:8: [disk:d] rbd-conf: 'ceph.conf' is not an absolute path" },
};

/* Disk d on tiers cheap (node a) and fast (node b); keys may follow */
#define TWO_TIER_DISK "[tier:cheap]\ncost-gib-month = 1\n" \
                      "[tier:fast]\ncost-gib-month = 2\n" \
                      "[disk:d]\nqmp = /q\nnode = sh0\nslo-latency-ms = 1\n" \
                      "tier.cheap = a\ntier.fast = b\n"

static void
test_rbd_tier (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdConfig) c = load (TWO_TIER_DISK "tier-rbd.fast = ssd/vm1-vda\n"
                                  "rbd-conf = /etc/ceph/ceph.conf\nrbd-user = shadow\n",
                                  &error);
  const ShdDiskConfig *d;
  const ShdDiskTier *cheap, *fast;

  g_assert_no_error (error);
  d = c->disks->pdata[0];
  cheap = d->tiers->pdata[0];
  fast = d->tiers->pdata[1];
  g_assert_null (cheap->rbd_pool);
  g_assert_cmpstr (fast->child, ==, "b");
  g_assert_cmpstr (fast->rbd_pool, ==, "ssd");
  g_assert_cmpstr (fast->rbd_image, ==, "vm1-vda");
  g_assert_cmpstr (d->rbd_conf, ==, "/etc/ceph/ceph.conf");
  g_assert_cmpstr (d->rbd_user, ==, "shadow");
  g_assert_null (d->rbd_key_secret);
}

/* A group given twice: its keys are listed as often as they are given
 * (GKeyFile), and the last value counts, with nothing leaked (the config
 * fuzzer found the leak) */
static void
test_rbd_tier_twice (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdConfig) c = load (TWO_TIER_DISK "tier-rbd.fast = ssd/one\n"
                                  "[disk:d]\ntier-rbd.fast = hdd/two\n", &error);
  const ShdDiskTier *fast;

  g_assert_no_error (error);
  fast = ((const ShdDiskConfig *) c->disks->pdata[0])->tiers->pdata[1];
  g_assert_cmpstr (fast->rbd_pool, ==, "hdd");
  g_assert_cmpstr (fast->rbd_image, ==, "two");
}

/* Disk names: what a libvirt domain may be called (quotes, backslashes,
 * spaces, any script), but no control characters */
static void
test_disk_names (void)
{
  static const char *const good[] = { "web \"blue\" \\ 1.vda", "caf\xc3\xa9.vda", "a" };
  static const char *const bad[] = { "a\tb", "caf\xe9" };

  for (guint i = 0; i < G_N_ELEMENTS (good) + G_N_ELEMENTS (bad); i++) {
    const char *name = i < G_N_ELEMENTS (good) ? good[i] : bad[i - G_N_ELEMENTS (good)];
    g_autofree char *text = g_strdup_printf ("[tier:t]\ncost-gib-month = 1\n[disk:%s]\n"
                                             "qmp = /q\nnode = n\ntier.t = c\n"
                                             "slo-latency-ms = 1\n", name);
    g_autoptr (GError) error = NULL;
    g_autoptr (ShdConfig) c = load (text, &error);

    if (i < G_N_ELEMENTS (good)) {
      g_assert_no_error (error);
      g_assert_cmpstr (((ShdDiskConfig *) c->disks->pdata[0])->name, ==, name);
    } else {
      g_assert_null (c);
      g_assert_nonnull (error);
    }
  }
}

static void
test_bad (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_autoptr (GError) error = NULL;
    g_autoptr (ShdConfig) c = load (bad[i].text, &error);

    g_test_message ("case %u: %s", i, bad[i].message);
    g_assert_null (c);
    g_assert_nonnull (error);
    g_assert_true (error->domain == SHD_CONFIG_ERROR);
    if (!g_pattern_match_simple (bad[i].message, error->message))
      g_error ("case %u: expected\n  %s\ngot\n  %s", i, bad[i].message, error->message);
  }
}

/* The keys of forecasting, the lifecycle and simulation, and what the
 * policy gets of them */
static void
test_lifecycle_keys (void)
{
  static const char text[] =
    "[shadowd]\n"
    "control =\n"
    "state =\n"
    "bucket = 60\n"
    "seasons = 86400; 604800\n"
    "lookahead = 7200\n"
    "release-after = 1800\n"
    "base-window = 7200\n"
    "release = keep\n"
    "release-origin = true\n"
    "[tier:cheap]\n"
    "cost-gib-month = 0.02\n"
    "copy-mib-s = 150\n"
    "[tier:fast]\n"
    "cost-gib-month = 0.12\n"
    "keep-warm = 2GiB\n"
    "[disk:a]\n"
    "qmp = /tmp/a.qmp\n"
    "node = sh0\n"
    "tier.cheap = ta\n"
    "tier.fast = tb\n"
    "slo-latency-ms = 5\n"
    "size-gib = 10\n"
    "instant-switch = true\n"
    "origin = fast\n"
    "forecast = false\n"
    "switch-lead = 30\n"
    "prewarm-margin = 10\n";
  g_autoptr (GError) error = NULL;
  g_autoptr (ShdConfig) c = load (text, &error);
  const ShdDiskConfig *d;
  ShdPolicyConfig pc;

  g_assert_no_error (error);
  d = shd_config_disk (c, "a");
  g_assert_cmpstr (d->release, ==, "keep");
  g_assert_true (d->instant_switch);
  g_assert_false (d->knobs.forecast);
  g_assert_true (c->knobs.forecast);
  g_assert_cmpfloat (d->knobs.bucket_s, ==, 60);
  g_assert_cmpfloat (d->knobs.seasons_s[0], ==, 86400);
  g_assert_cmpfloat (d->knobs.seasons_s[1], ==, 604800);
  g_assert_cmpfloat (d->knobs.seasons_s[2], ==, 0);
  g_assert_cmpfloat (d->knobs.lookahead_s, ==, 7200);
  g_assert_cmpfloat (d->knobs.release_after_s, ==, 1800);
  g_assert_cmpfloat (d->knobs.base_window_s, ==, 7200);
  g_assert_cmpfloat (d->knobs.switch_lead_s, ==, 30);
  g_assert_cmpfloat (c->knobs.switch_lead_s, ==, 60);
  g_assert_true (shd_config_disk_policy (c, d, &pc, &error));
  g_assert_cmpfloat (pc.tiers[0].prior_copy_bps, ==, 150.0 * 1024 * 1024);
  g_assert_cmpfloat (pc.tiers[1].keep_warm_bytes, ==, 2.0 * 1024 * 1024 * 1024);
  g_assert_true (pc.instant_switch);
  g_assert_cmpstr (pc.origin, ==, "fast");
  g_assert_true (pc.release_origin);
  g_assert_cmpuint (pc.size_bytes, ==, 10ull << 30);
  shd_policy_config_clear (&pc);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/config/design-example", test_design_example);
  g_test_add_func ("/config/overrides", test_overrides);
  g_test_add_func ("/config/file", test_file);
  g_test_add_func ("/config/disk-names", test_disk_names);
  g_test_add_func ("/config/bad", test_bad);
  g_test_add_func ("/config/rbd-tier", test_rbd_tier);
  g_test_add_func ("/config/rbd-tier-twice", test_rbd_tier_twice);
  g_test_add_func ("/config/lifecycle-keys", test_lifecycle_keys);
  return g_test_run ();
}
