/* A libvirt domain's shadow metadata: the documented example parses into
 * the disk configuration shadowd runs with; each mistake gets a message
 * that says what is wrong; the live domain XML gives each disk's alias. */
#include "lvmeta.h"

#include <string.h>

#define NS "xmlns:shadow=\"" SHD_LV_NS_URI "\""

/* As virDomainGetMetadata returns it */
static const char example[] =
  "<shadow:shadowtier " NS ">\n"
  "  <shadow:disk target=\"vda\" slo-latency-ms=\"5\" chunk-size=\"65536\" prewarm=\"sequential\">\n"
  "    <shadow:tier name=\"cheap\" origin=\"yes\" iops-limit=\"150\"/>\n"
  "    <shadow:tier name=\"fast\" path=\"/var/lib/shadowtier/vm1-vda.fast\" cost-gib-month=\"0.12\"/>\n"
  "    <shadow:policy min-dwell=\"30\" switch-back-after=\"120\"/>\n"
  "  </shadow:disk>\n"
  "</shadow:shadowtier>\n";

static ShdConfig *
base_config (void)
{
  static const char text[] = "[tier:cheap]\ncost-gib-month = 0.02\n"
                             "[libvirt]\nuri = qemu:///system;qemu+ssh://h2/system\n"
                             "tier-dirs = /srv/nvme;/srv/ssd\n";
  g_autoptr (GError) error = NULL;
  ShdConfig *c = shd_config_load_data (text, strlen (text), "test.conf", &error);

  g_assert_no_error (error);
  g_assert_cmpuint (g_strv_length (c->libvirt_uris), ==, 2);
  g_assert_cmpstr (c->libvirt_uris[1], ==, "qemu+ssh://h2/system");
  g_assert_cmpuint (g_strv_length (c->libvirt_tier_dirs), ==, 2);
  g_assert_cmpuint (c->disks->len, ==, 0);
  return c;
}

static void
test_example (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_meta_parse (example, &error);
  g_autoptr (ShdConfig) c = base_config ();
  g_autoptr (ShdDiskConfig) dc = NULL;
  const ShdLvDisk *d;
  const ShdLvTier *t;
  const ShdDiskTier *dt;

  g_assert_no_error (error);
  g_assert_cmpuint (disks->len, ==, 1);
  d = disks->pdata[0];
  g_assert_cmpstr (d->target, ==, "vda");
  g_assert_cmpuint (d->tiers->len, ==, 2);
  t = d->tiers->pdata[0];
  g_assert_true (t->origin);
  g_assert_null (t->path);
  g_assert_cmpuint (t->iops_limit, ==, 150);
  t = d->tiers->pdata[1];
  g_assert_cmpstr (t->path, ==, "/var/lib/shadowtier/vm1-vda.fast");

  dc = shd_lv_disk_config (c, "vm1", d, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (dc->name, ==, "vm1.vda");
  g_assert_cmpstr (dc->node, ==, "shd-vda");
  g_assert_cmpstr (dc->write_mode, ==, "sync");
  g_assert_cmpstr (dc->prewarm, ==, "sequential");
  g_assert_cmpstr (dc->chunk_size, ==, "65536");
  /* a tier with an image: a metadata child, named on every reopen */
  g_assert_cmpstr (dc->metadata, ==, "shd-vda-md");
  {
    g_autofree char *md = shd_lv_meta_path (d);

    g_assert_cmpstr (md, ==, "/var/lib/shadowtier/vm1-vda.fast.meta");
  }
  g_assert_cmpfloat (dc->slo_latency_ms, ==, 5);
  g_assert_cmpfloat (dc->knobs.min_dwell_s, ==, 30);
  g_assert_cmpfloat (dc->knobs.switch_back_after_s, ==, 120);
  g_assert_false (dc->add_children);
  g_assert_cmpuint (dc->tiers->len, ==, 2);
  dt = dc->tiers->pdata[0];
  g_assert_cmpstr (dt->tier, ==, "cheap");
  g_assert_cmpstr (dt->child, ==, "shd-vda-t0");       /* throttled origin */
  dt = dc->tiers->pdata[1];
  g_assert_cmpstr (dt->tier, ==, "fast");
  g_assert_cmpstr (dt->child, ==, "shd-vda-f1");
  /* the tier only the metadata knows joined the configuration */
  g_assert_nonnull (shd_config_tier (c, "fast"));
  g_assert_cmpfloat (shd_config_tier (c, "fast")->cost_gib_month, ==, 0.12);
  /* and the file's own tier kept its cost */
  g_assert_cmpfloat (shd_config_tier (c, "cheap")->cost_gib_month, ==, 0.02);
}

static void
test_layout_key (void)
{
  g_autoptr (GPtrArray) a = shd_lv_meta_parse (example, NULL);
  g_autofree char *policy_changed = g_strdup (example);
  g_autofree char *tier_changed = NULL;
  g_autoptr (GPtrArray) b = NULL, c = NULL;
  g_autofree char *ka = NULL, *kb = NULL, *kc = NULL;
  char *p = strstr (policy_changed, "min-dwell=\"30\"");

  g_assert_nonnull (p);
  p[12] = '4';                  /* min-dwell="40": a knob, not the layout */
  b = shd_lv_meta_parse (policy_changed, NULL);
  {
    GString *s = g_string_new (example);

    g_string_replace (s, "vm1-vda.fast", "vm1-vda.faster", 1);
    tier_changed = g_string_free (s, FALSE);
  }
  c = shd_lv_meta_parse (tier_changed, NULL);
  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_assert_nonnull (c);
  ka = shd_lv_disk_layout_key (a->pdata[0]);
  kb = shd_lv_disk_layout_key (b->pdata[0]);
  kc = shd_lv_disk_layout_key (c->pdata[0]);
  g_assert_cmpstr (ka, ==, kb);
  g_assert_cmpstr (ka, !=, kc);
  {
    g_autofree char *fa = shd_lv_disk_full_key (a->pdata[0]);
    g_autofree char *fb = shd_lv_disk_full_key (b->pdata[0]);
    g_autofree char *fa2 = shd_lv_disk_full_key (a->pdata[0]);

    g_assert_cmpstr (fa, !=, fb);
    g_assert_cmpstr (fa, ==, fa2);
  }
}

/* Two descriptions that differ only in where a separator is: a path
 * holding ",0,0,0|slow," against two tiers; a policy value holding
 * ";min-dwell=3" against two knobs.  Their keys differ. */
static void
test_keys_escaped (void)
{
  static const char *const one_tier =
    "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
    "<tier name=\"cheap\" origin=\"yes\"/>"
    "<tier name=\"fast\" path=\"/a,0,0,0|slow,/b\"/>"
    "<policy horizon=\"5;min-dwell=3\"/></disk></shadowtier>";
  static const char *const two_tiers =
    "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
    "<tier name=\"cheap\" origin=\"yes\"/>"
    "<tier name=\"fast\" path=\"/a\"/><tier name=\"slow\" path=\"/b\"/>"
    "<policy horizon=\"5\" min-dwell=\"3\"/></disk></shadowtier>";
  static const char *const two_knobs =
    "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
    "<tier name=\"cheap\" origin=\"yes\"/>"
    "<tier name=\"fast\" path=\"/a,0,0,0|slow,/b\"/>"
    "<policy horizon=\"5\" min-dwell=\"3\"/></disk></shadowtier>";
  g_autoptr (GPtrArray) a = shd_lv_meta_parse (one_tier, NULL);
  g_autoptr (GPtrArray) b = shd_lv_meta_parse (two_tiers, NULL);
  g_autoptr (GPtrArray) c = shd_lv_meta_parse (two_knobs, NULL);
  g_autofree char *la = NULL, *lb = NULL, *fa = NULL, *fc = NULL;

  g_assert_nonnull (a);
  g_assert_nonnull (b);
  g_assert_nonnull (c);
  la = shd_lv_disk_layout_key (a->pdata[0]);
  lb = shd_lv_disk_layout_key (b->pdata[0]);
  g_assert_cmpstr (la, !=, lb);
  fa = shd_lv_disk_full_key (a->pdata[0]);
  fc = shd_lv_disk_full_key (c->pdata[0]);
  g_assert_cmpstr (fa, !=, fc);
}

static void
check_bad (const char *xml, const char *expect)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_meta_parse (xml, &error);

  g_assert_null (disks);
  g_assert_nonnull (error);
  if (strstr (error->message, expect) == NULL)
    g_error ("expected '%s' in: %s", expect, error->message);
}

static void
test_bad (void)
{
  check_bad ("<shadowtier><disk slo-latency-ms=\"5\"/></shadowtier>", "has no target");
  check_bad ("<shadowtier><disk target=\"vda;rm\"/></shadowtier>", "not a target dev name");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "</disk></shadowtier>", "at least one tier besides the origin");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" path=\"/x\"/>"
             "<tier name=\"b\" path=\"/y\"/></disk></shadowtier>",
             "exactly one tier must be origin");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" path=\"relative.img\"/></disk></shadowtier>", "not absolute");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" path=\"/x\" colour=\"red\"/></disk></shadowtier>",
             "no attribute 'colour'");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" rbd=\"ssd/x\" host-local=\"yes\"/></disk></shadowtier>",
             "host-local=\"yes\" is for a tier with a path");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\" "
             "host-local=\"yes\"/><tier name=\"b\" path=\"/x\"/></disk></shadowtier>",
             "host-local=\"yes\" is for a tier with a path");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" path=\"/x\" host-local=\"maybe\"/></disk></shadowtier>",
             "is yes or no, not 'maybe'");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" path=\"/x\"/><tier name=\"c\" path=\"/x\"/></disk></shadowtier>",
             "have the same image");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" path=\"/x\" rbd=\"ssd/x\"/></disk></shadowtier>",
             "a path or an rbd image, not both");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" rbd=\"ssd/x@snap\"/></disk></shadowtier>", "is not POOL/IMAGE");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" rbd=\"ssd/x.meta\"/></disk></shadowtier>", "is not POOL/IMAGE");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" rbd=\"ssd\"/></disk></shadowtier>", "is not POOL/IMAGE");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\" rbd=\"p/i\"/>"
             "<tier name=\"b\" rbd=\"ssd/x\"/></disk></shadowtier>", "takes no rbd image");
  check_bad ("<shadowtier><disk target=\"vda\"><tier name=\"a\" origin=\"yes\"/>"
             "<tier name=\"b\" rbd=\"ssd/x\"/><tier name=\"c\" rbd=\"ssd/x\"/></disk></shadowtier>",
             "have the same rbd image");
  check_bad ("<shadowtier><disk target=\"vda\"><mirror/></disk></shadowtier>",
             "unexpected <mirror>");
  check_bad ("<other/>", "expected <shadowtier>");
  check_bad ("<shadowtier><disk target=\"vda\">", "");      /* truncated */
  check_bad ("<shadowtier></shadowtier>", "no <disk>");
}

static void
config_error (const char *xml, const char *expect)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_meta_parse (xml, &error);
  g_autoptr (ShdConfig) c = base_config ();
  g_autoptr (ShdDiskConfig) dc = NULL;

  g_assert_no_error (error);
  dc = shd_lv_disk_config (c, "vm1", disks->pdata[0], &error);
  g_assert_null (dc);
  g_assert_nonnull (error);
  if (strstr (error->message, expect) == NULL)
    g_error ("expected '%s' in: %s", expect, error->message);
}

static void
test_config_async (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_meta_parse (
      "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\" write-mode=\"async\">"
      "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
      "cost-gib-month=\"1\"/></disk></shadowtier>", &error);
  g_autoptr (ShdConfig) c = base_config ();
  g_autoptr (ShdDiskConfig) dc = NULL;

  g_assert_no_error (error);
  dc = shd_lv_disk_config (c, "vm1", disks->pdata[0], &error);
  g_assert_no_error (error);
  g_assert_cmpstr (dc->write_mode, ==, "async");
  /* write-back's copies go to chunks that changed: no compare */
  g_assert_cmpstr (dc->copy_compare, ==, "false");
}

/* copy-compare: on for a sync disk unless the metadata says otherwise */
static void
test_config_copy_compare (void)
{
  static const struct {
    const char *attrs;
    const char *expect;
  } cases[] = {
    { "", "true" },
    { " write-mode=\"sync\"", "true" },
    { " copy-compare=\"false\"", "false" },
    { " write-mode=\"async\" copy-compare=\"true\"", "true" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++) {
    g_autoptr (GError) error = NULL;
    g_autofree char *xml = g_strdup_printf (
        "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\"%s>"
        "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
        "cost-gib-month=\"1\"/></disk></shadowtier>", cases[i].attrs);
    g_autoptr (GPtrArray) disks = shd_lv_meta_parse (xml, &error);
    g_autoptr (ShdConfig) c = base_config ();
    g_autoptr (ShdDiskConfig) dc = NULL;

    g_assert_no_error (error);
    dc = shd_lv_disk_config (c, "vm1", disks->pdata[0], &error);
    g_assert_no_error (error);
    g_assert_cmpstr (dc->copy_compare, ==, cases[i].expect);
    g_assert_cmpint (shd_lv_disk_copy_compare (disks->pdata[0]), ==,
                     strcmp (cases[i].expect, "true") == 0);
  }
  /* a value that is not a boolean is refused, not taken as false */
  config_error ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\" copy-compare=\"yes\">"
                "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
                "cost-gib-month=\"1\"/></disk></shadowtier>", "'yes' is not a boolean");
}

static void
test_config_errors (void)
{
  /* unknown tier: neither in the file nor priced in the metadata */
  config_error ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
                "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"gold\" path=\"/x\"/>"
                "</disk></shadowtier>", "tier 'gold' is unknown");
  config_error ("<shadowtier><disk target=\"vda\">"
                "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
                "cost-gib-month=\"1\"/></disk></shadowtier>", "slo-latency-ms' is missing");
  config_error ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\" write-mode=\"back\">"
                "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
                "cost-gib-month=\"1\"/></disk></shadowtier>", "write-mode must be sync or async");
  /* write-back keeps newer data on a tier, which RBD tiers lose at
   * every restart (always cold) */
  config_error ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\" write-mode=\"async\">"
                "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
                "cost-gib-month=\"1\"/><tier name=\"ssd\" rbd=\"ssd/x\" "
                "cost-gib-month=\"0.5\"/></disk></shadowtier>",
                "write-mode async is not supported with rbd tiers");
  config_error ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\" chunk-size=\"1000\">"
                "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
                "cost-gib-month=\"1\"/></disk></shadowtier>", "not a power of two");
  config_error ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
                "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/x\" "
                "cost-gib-month=\"1\"/><policy min-dwel=\"3\"/></disk></shadowtier>",
                "unknown key");
}

static const char domain_xml[] =
  "<domain type='qemu' id='1'><name>vm1</name><devices>"
  "<emulator>/usr/bin/qemu-system-x86_64</emulator>"
  "<disk type='file' device='disk'><driver name='qemu' type='qcow2' discard='unmap'/>"
  "<source file='/images/vm1.qcow2' index='1'/><backingStore/>"
  "<target dev='vda' bus='virtio'/><alias name='virtio-disk0'/></disk>"
  "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
  "<target dev='hdc' bus='ide'/><readonly/><alias name='ide0-1-0'/></disk>"
  "</devices><metadata><shadow:shadowtier " NS "><shadow:disk target='vdz'/>"
  "</shadow:shadowtier></metadata></domain>";

static void
test_domain_xml (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_domain_disks (domain_xml, &error);
  const ShdLvDomDisk *d;

  g_assert_no_error (error);
  g_assert_cmpuint (disks->len, ==, 2);
  d = shd_lv_domain_disk (disks, "vda");
  g_assert_nonnull (d);
  g_assert_cmpstr (d->alias, ==, "virtio-disk0");
  g_assert_cmpstr (d->source, ==, "/images/vm1.qcow2");
  g_assert_cmpstr (d->format, ==, "qcow2");
  g_assert_cmpstr (d->discard, ==, "unmap");
  d = shd_lv_domain_disk (disks, "hdc");
  g_assert_nonnull (d);
  g_assert_null (d->source);
  g_assert_cmpstr (d->device, ==, "cdrom");
  g_assert_null (shd_lv_domain_disk (disks, "vdz"));
}

/* rbd tiers: the metadata image goes next to the first tier's image,
 * an rbd image when that tier is one; the disk on RBD is POOL/IMAGE */
static void
test_rbd (void)
{
  static const char meta[] =
    "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\" rbd-user=\"qemu\">"
    "<tier name=\"cheap\" origin=\"yes\"/>"
    "<tier name=\"fast\" rbd=\"ssd/vm1-vda\" cost-gib-month=\"0.1\"/>"
    "<tier name=\"nvme\" path=\"/srv/vm1-vda\" cost-gib-month=\"0.2\"/>"
    "</disk></shadowtier>";
  static const char dom[] =
    "<domain><devices><disk type='network' device='disk'><driver name='qemu' type='raw'/>"
    "<source protocol='rbd' name='hdd/vm1'><host name='10.0.0.1' port='3300'/></source>"
    "<target dev='vda' bus='virtio'/></disk></devices></domain>";
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_meta_parse (meta, &error);
  g_autoptr (GPtrArray) dd = NULL;
  g_autofree char *md = NULL;
  g_autofree char *path = NULL;
  g_autofree char *k1 = NULL;
  g_autofree char *k2 = NULL;
  gboolean rbd = FALSE;
  ShdLvDisk *d;

  g_assert_no_error (error);
  d = disks->pdata[0];
  g_assert_cmpstr (((ShdLvTier *) d->tiers->pdata[1])->rbd, ==, "ssd/vm1-vda");
  md = shd_lv_meta_image (d, &rbd);
  g_assert_cmpstr (md, ==, "ssd/vm1-vda.meta");
  g_assert_true (rbd);
  path = shd_lv_meta_path (d);
  g_assert_null (path);
  g_assert_true (shd_lv_disk_on_rbd (d));
  /* the cluster's settings are part of the layout: another user re-inserts */
  k1 = shd_lv_disk_layout_key (d);
  g_hash_table_insert (d->disk_attrs, g_strdup ("rbd-user"), g_strdup ("other"));
  k2 = shd_lv_disk_layout_key (d);
  g_assert_cmpstr (k1, !=, k2);

  dd = shd_lv_domain_disks (dom, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (((ShdLvDomDisk *) dd->pdata[0])->source, ==, "hdd/vm1");
  g_assert_cmpstr (((ShdLvDomDisk *) dd->pdata[0])->protocol, ==, "rbd");
  g_assert_cmpstr (((ShdLvDomDisk *) dd->pdata[0])->type, ==, "network");
}

/* What a host removes when the domain migrates away */
static void
test_host_local (void)
{
  static const char first[] =
    "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
    "<tier name=\"cheap\" origin=\"yes\"/>"
    "<tier name=\"nvme\" path=\"/local/vda\" host-local=\"yes\"/>"
    "<tier name=\"fast\" path=\"/shared/vda\" host-local=\"no\"/>"
    "</disk></shadowtier>";
  static const char second[] =
    "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
    "<tier name=\"cheap\" origin=\"yes\"/>"
    "<tier name=\"fast\" path=\"/shared/vda\"/>"
    "<tier name=\"nvme\" path=\"/local/vda\" host-local=\"yes\"/>"
    "</disk></shadowtier>";
  static const char none[] =
    "<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
    "<tier name=\"cheap\" origin=\"yes\"/><tier name=\"fast\" path=\"/shared/vda\"/>"
    "</disk></shadowtier>";
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) a = shd_lv_meta_parse (first, &error);
  g_autoptr (GPtrArray) b = NULL;
  g_autoptr (GPtrArray) c = NULL;
  g_auto (GStrv) la = NULL;
  g_auto (GStrv) lb = NULL;
  g_auto (GStrv) lc = NULL;

  g_assert_no_error (error);
  b = shd_lv_meta_parse (second, &error);
  g_assert_no_error (error);
  c = shd_lv_meta_parse (none, &error);
  g_assert_no_error (error);
  /* the metadata image is next to the first tier: local with it */
  la = shd_lv_disk_local_images (a->pdata[0]);
  g_assert_cmpuint (g_strv_length (la), ==, 2);
  g_assert_cmpstr (la[0], ==, "/local/vda");
  g_assert_cmpstr (la[1], ==, "/local/vda.meta");
  lb = shd_lv_disk_local_images (b->pdata[0]);
  g_assert_cmpuint (g_strv_length (lb), ==, 1);
  g_assert_cmpstr (lb[0], ==, "/local/vda");
  lc = shd_lv_disk_local_images (c->pdata[0]);
  g_assert_cmpuint (g_strv_length (lc), ==, 0);
}

static void
test_names (void)
{
  g_autofree char *a = shd_lv_node_shadow ("vdabcdef");
  g_autofree char *b = shd_lv_node_base ("vdabcdef");
  g_autofree char *c = shd_lv_node_tier ("vdabcdef", 8, TRUE);
  g_autofree char *d = shd_lv_throttle_group ("vdabcdef", 8);

  /* QEMU's node names are at most 31 bytes */
  g_assert_cmpuint (strlen (a), <=, 31);
  g_assert_cmpuint (strlen (b), <=, 31);
  g_assert_cmpuint (strlen (c), <=, 31);
  g_assert_cmpuint (strlen (d), <=, 31);
  g_assert_cmpstr (c, ==, "shd-vdabcdef-t8");
}

/* shadowd writes the metadata back (a move's record, then its result):
 * what it writes parses into the same disks, with attributes escaped; the
 * move's result makes the target tier the disk's own image */
static void
test_format_and_move (void)
{
  static const char xml[] =
    "<shadow:shadowtier " NS ">\n"
    "  <shadow:disk target=\"vda\" slo-latency-ms=\"5\" prewarm=\"sequential\">\n"
    "    <shadow:tier name=\"cheap\" origin=\"yes\" iops-limit=\"150\"/>\n"
    "    <shadow:tier name=\"fast\" path=\"/srv/a&amp;b/vda.fast\" host-local=\"yes\" "
    "cost-gib-month=\"0.12\"/>\n"
    "    <shadow:tier name=\"mid\" path=\"/srv/ssd/vda.mid\" bps-limit=\"1048576\"/>\n"
    "    <shadow:policy min-dwell=\"30\"/>\n"
    "    <shadow:move tier=\"fast\" image=\"/srv/a&amp;b/vm1-vda.qcow2\" old=\"/img/vda.qcow2\" "
    "verify-speed=\"67108864\"/>\n"
    "  </shadow:disk>\n"
    "  <shadow:disk target=\"vdb\" slo-latency-ms=\"5\">\n"
    "    <shadow:tier name=\"cheap\" origin=\"yes\"/>\n"
    "    <shadow:tier name=\"fast\" path=\"/srv/nvme/vdb.fast\"/>\n"
    "  </shadow:disk>\n"
    "</shadow:shadowtier>\n";
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) disks = shd_lv_meta_parse (xml, &error);
  g_autoptr (GPtrArray) again = NULL;
  g_autofree char *text = NULL, *text2 = NULL, *key1 = NULL, *key2 = NULL;
  ShdLvDisk *d, *b;
  ShdLvTier *t;

  g_assert_no_error (error);
  d = disks->pdata[0];
  g_assert_nonnull (d->move);
  g_assert_cmpstr (d->move->tier, ==, "fast");
  g_assert_cmpstr (d->move->image, ==, "/srv/a&b/vm1-vda.qcow2");
  g_assert_null (d->move->keep_as);
  g_assert_cmpstr (d->move->verify_speed, ==, "67108864");
  text = shd_lv_meta_format (disks);
  again = shd_lv_meta_parse (text, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (again->len, ==, 2);
  text2 = shd_lv_meta_format (again);
  g_assert_cmpstr (text, ==, text2);
  key1 = shd_lv_disk_full_key (d);
  key2 = shd_lv_disk_full_key (again->pdata[0]);
  g_assert_cmpstr (key1, ==, key2);
  g_assert_cmpstr (((ShdLvDisk *) again->pdata[0])->move->old, ==, "/img/vda.qcow2");
  g_assert_cmpstr (((ShdLvDisk *) again->pdata[0])->move->verify_speed, ==, "67108864");

  /* moved to fast: fast is the origin (no path, not host-local), cheap is
   * gone, mid stays as it was, the record goes */
  g_assert_true (shd_lv_disk_moved_to (d, "fast"));
  g_assert_null (d->move);
  g_assert_cmpuint (d->tiers->len, ==, 2);
  t = d->tiers->pdata[0];
  g_assert_cmpstr (t->name, ==, "fast");
  g_assert_true (t->origin);
  g_assert_null (t->path);
  g_assert_false (t->host_local);
  g_assert_cmpstr (t->cost, ==, "0.12");
  t = d->tiers->pdata[1];
  g_assert_cmpstr (t->name, ==, "mid");
  g_assert_cmpuint (t->bps_limit, ==, 1048576);
  /* and it still parses; twice is once */
  g_clear_pointer (&text, g_free);
  text = shd_lv_meta_format (disks);
  g_clear_pointer (&again, g_ptr_array_unref);
  again = shd_lv_meta_parse (text, &error);
  g_assert_no_error (error);
  g_assert_true (shd_lv_disk_moved_to (again->pdata[0], "fast"));
  g_assert_cmpuint (((ShdLvDisk *) again->pdata[0])->tiers->len, ==, 2);
  /* a disk with one other tier has nothing left to shadow */
  b = disks->pdata[1];
  g_assert_false (shd_lv_disk_moved_to (b, "fast"));

  /* a hand-made record is checked like the rest */
  g_clear_pointer (&again, g_ptr_array_unref);
  again = shd_lv_meta_parse ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
                             "<tier name=\"a\" origin=\"yes\"/><tier name=\"b\" path=\"/x\"/>"
                             "<move tier=\"b\" image=\"rel/img\" old=\"/o\"/></disk></shadowtier>",
                             &error);
  g_assert_null (again);
  g_assert_nonnull (strstr (error->message, "<move> paths must be absolute"));
  g_clear_error (&error);
  again = shd_lv_meta_parse ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
                             "<tier name=\"a\" origin=\"yes\"/><tier name=\"b\" path=\"/x\"/>"
                             "<move tier=\"b\" old=\"/o\"/></disk></shadowtier>", &error);
  g_assert_null (again);
  g_assert_nonnull (strstr (error->message, "<move> needs tier, image and old"));
  g_clear_error (&error);
  again = shd_lv_meta_parse ("<shadowtier><disk target=\"vda\" slo-latency-ms=\"5\">"
                             "<tier name=\"a\" origin=\"yes\"/><tier name=\"b\" path=\"/x\"/>"
                             "<move tier=\"b\" image=\"/i\" old=\"/o\" verify=\"yes\"/></disk>"
                             "</shadowtier>", &error);
  g_assert_null (again);
  g_assert_nonnull (strstr (error->message, "<move> has no attribute 'verify'"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/lvmeta/example", test_example);
  g_test_add_func ("/lvmeta/layout-key", test_layout_key);
  g_test_add_func ("/lvmeta/keys-escaped", test_keys_escaped);
  g_test_add_func ("/lvmeta/bad", test_bad);
  g_test_add_func ("/lvmeta/config-errors", test_config_errors);
  g_test_add_func ("/lvmeta/config-async", test_config_async);
  g_test_add_func ("/lvmeta/config-copy-compare", test_config_copy_compare);
  g_test_add_func ("/lvmeta/domain-xml", test_domain_xml);
  g_test_add_func ("/lvmeta/names", test_names);
  g_test_add_func ("/lvmeta/rbd", test_rbd);
  g_test_add_func ("/lvmeta/host-local", test_host_local);
  g_test_add_func ("/lvmeta/format-and-move", test_format_and_move);
  return g_test_run ();
}
