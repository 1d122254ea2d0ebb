/* shadowd's configuration file: a GLib key file (DESIGN.md section 7).
 *
 *   [shadowd]        interval, control, state, metrics-port, dry-run, ...
 *                    and the policy defaults for every disk
 *   [libvirt]        uri = qemu:///system;...  libvirt connections whose
 *                    domains carry per-disk configuration (libvirt.h)
 *   [tier:NAME]      cost-gib-month, optional capacity, latency and copy-rate
 *                    priors, keep-warm
 *   [disk:NAME]      qmp, node, tier.<tier> = child node, slo-latency-ms,
 *                    per-disk policy overrides, and the shadow node's own
 *                    options (chunk-size, write-mode, ...) that the agent
 *                    passes through on every blockdev-reopen
 *
 * Loading validates everything and reports the first problem as
 * "FILE:LINE: [group] key: what is wrong". */
#pragma once

#include "policy.h"

#include <glib.h>

G_BEGIN_DECLS

#define SHD_CONFIG_ERROR (shd_config_error_quark ())
GQuark shd_config_error_quark (void);

typedef enum {
  SHD_CONFIG_ERROR_PARSE,       /* not a key file */
  SHD_CONFIG_ERROR_INVALID,     /* a value, key or group is wrong */
} ShdConfigError;

typedef struct {
  char *name;
  double cost_gib_month;
  double max_iops;              /* prior capacity; 0: unknown, learned */
  double latency_ms;            /* prior base latency; 0: unknown, measured */
  double copy_mib_s;            /* prior copy rate onto it; 0: unknown, measured */
  double keep_warm_bytes;       /* a copy this small is not released */
} ShdTierConfig;

typedef struct {
  char *tier;                   /* a [tier:NAME] */
  char *child;                  /* the child node serving it */
  /* tier-rbd.NAME = POOL/IMAGE: shadowd opens the child node over that
   * rbd image when QEMU lacks it, creating the image if missing */
  char *rbd_pool;
  char *rbd_image;
} ShdDiskTier;

typedef struct {
  char *name;
  char *qmp;                    /* QMP socket path */
  char *node;                   /* the shadow node */
  GPtrArray *tiers;             /* ShdDiskTier, in file order */
  double slo_latency_ms;
  double size_gib;              /* for cost; 0: read from the node */
  ShdPolicyKnobs knobs;
  gboolean dry_run;
  gboolean add_children;        /* pre-warm adds a tier's child missing from the node */
  gboolean instant_switch;      /* the node has a metadata child */
  char *release;                /* discard (default) or keep: a released tier's image */
  char *origin;                 /* the tier whose child is the disk's own image;
                                   NULL: the cheapest */
  gboolean release_origin;      /* the origin's copy may be released too */
  /* the rbd nodes shadowd opens (tier-rbd.NAME): Ceph configuration file,
   * client id, QEMU secret object with its key; NULL: librbd's defaults */
  char *rbd_conf;
  char *rbd_user;
  char *rbd_key_secret;
  /* The shadow node's options, sent as configured on every reopen; only
   * the keys present in the file are sent (node is the string form as
   * written, typed when sent). */
  char *chunk_size;             /* integer */
  char *write_mode;
  char *prewarm;
  char *prewarm_speed;          /* integer */
  char *read_from;
  char *copy_on_read;           /* boolean */
  char *copy_compare;           /* boolean */
  char *metadata;               /* node name of the node's metadata child, or NULL */
} ShdDiskConfig;

typedef struct {
  char *path;                   /* the file it came from */
  double interval_s;
  char *control;                /* control socket path; "" = none */
  char *state;                  /* SQLite history; "" = none */
  guint metrics_port;           /* 0: no metrics endpoint */
  char *metrics_address;        /* loopback by default */
  gboolean dry_run;
  gboolean add_children;
  char *release;                /* the disks' default */
  gboolean release_origin;      /* the disks' default */
  double history_full_hours;    /* full resolution kept this long */
  double history_days;          /* one-minute aggregates kept this long */
  guint qmp_timeout_ms;
  ShdPolicyKnobs knobs;         /* defaults */
  GPtrArray *tiers;             /* ShdTierConfig, in file order */
  GPtrArray *disks;             /* ShdDiskConfig, in file order */
  char **libvirt_uris;          /* [libvirt] uri: NULL or a non-empty list */
  char **libvirt_tier_dirs;     /* [libvirt] tier-dirs: where tier images may be, or NULL */
} ShdConfig;

ShdConfig *shd_config_load_file (const char *path, GError **error);
/* path is only used in messages. */
ShdConfig *shd_config_load_data (const char *data, gsize len, const char *path,
                                 GError **error);
void shd_config_free (ShdConfig *c);
/* A disk's configuration is reference-counted: the disk's agent holds it
 * for as long as it lives. */
ShdDiskConfig *shd_disk_config_ref (ShdDiskConfig *d);
void shd_disk_config_unref (ShdDiskConfig *d);

/* One [disk:NAME] group of kf, validated as the file's would be (against
 * c's tiers and disks), but not added to c: the caller owns it.  origin
 * names where it came from in messages. */
ShdDiskConfig *shd_config_load_disk (ShdConfig *c, GKeyFile *kf, const char *group,
                                     const char *origin, GError **error);
/* Adds [tier:NAME] unless c already has that tier. */
gboolean shd_config_add_tier (ShdConfig *c, const char *name, double cost_gib_month,
                              double max_iops, double latency_ms, GError **error);

const ShdTierConfig *shd_config_tier (const ShdConfig *c, const char *name);
const ShdDiskConfig *shd_config_disk (const ShdConfig *c, const char *name);

/* The policy's configuration for disk d (shd_policy_config_clear frees
 * it).  FALSE with error when the disk has more tiers than
 * SHD_POLICY_MAX_TIERS. */
gboolean shd_config_disk_policy (const ShdConfig *c, const ShdDiskConfig *d,
                                 ShdPolicyConfig *cfg, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdConfig, shd_config_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdDiskConfig, shd_disk_config_unref)

G_END_DECLS
