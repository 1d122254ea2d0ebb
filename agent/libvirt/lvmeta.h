/* The per-disk configuration that a libvirt domain carries in its XML
 * <metadata> (docs/libvirt.md), and the few facts about the domain's
 * disks that the agent needs from the live domain XML.  Pure parsing: no
 * libvirt calls, so it is unit-tested (tests/test-lvmeta.c).
 *
 *   <shadow:shadowtier xmlns:shadow="https://shadowtier.example/xmlns/shadow/1">
 *     <shadow:disk target="vda" slo-latency-ms="5" [chunk-size prewarm ...]>
 *       <shadow:tier name="cheap" origin="yes" [iops-limit bps-limit]/>
 *       <shadow:tier name="fast" path="/var/lib/..." [cost-gib-month ...]/>
 *       <shadow:policy [min-dwell horizon ...]/>
 *       [<shadow:move tier image old [keep-as]/>]   (shadowd's own, lvmove.c)
 *     </shadow:disk>
 *   </shadow:shadowtier>
 */
#pragma once

#include "config.h"

#include <glib.h>

G_BEGIN_DECLS

#define SHD_LV_NS_URI "https://shadowtier.example/xmlns/shadow/1"
#define SHD_LV_NS_KEY "shadow"

typedef struct {
  char *name;                   /* tier name, as in [tier:NAME] */
  char *path;                   /* image file; NULL for the origin and rbd tiers */
  char *rbd;                    /* or an rbd image, POOL/IMAGE */
  gboolean origin;              /* the domain's own image */
  gboolean host_local;          /* on storage only this host reaches */
  char *cost;                   /* attribute text, NULL when absent */
  char *max_iops;
  char *latency_ms;
  guint64 iops_limit;           /* emulation: a throttle filter; 0 = none */
  guint64 bps_limit;
} ShdLvTier;

/* A permanent move in progress (lvmove.c), recorded in the metadata so
 * that a restarted shadowd finishes or cleans it up:
 * <move tier="fast" image="/new/path" old="/old/path" domain="UUID"
 *       old-id="maj.min:ino:btime" [keep-as="PATH"]/> */
typedef struct {
  char *tier;                   /* where the disk goes */
  char *image;                  /* the copy libvirt makes: the disk's new image */
  char *old;                    /* the disk's image before the move */
  char *keep_as;                /* the old image is renamed here; NULL: deleted */
  char *domain;                 /* the UUID of the domain it was made for */
  char *old_id;                 /* the old image's identity, "maj.min:ino:btime" */
  char *verify_speed;           /* --verify: bytes/s of the verify; or NULL */
} ShdLvMove;

typedef struct {
  char *target;                 /* vda */
  GPtrArray *tiers;             /* ShdLvTier, document order, origin included */
  GHashTable *disk_attrs;       /* the <disk> attributes other than target */
  GHashTable *policy_attrs;     /* the <policy> attributes */
  ShdLvMove *move;              /* a move in progress, or NULL; in neither key */
} ShdLvDisk;

/* Parses the metadata element.  Returns the disks (ShdLvDisk), or NULL
 * with an error that says what is wrong and where. */
GPtrArray *shd_lv_meta_parse (const char *xml, GError **error);

/* The metadata element again, without its namespace (for
 * virDomainSetMetadata): the disks as parsed, attributes sorted. */
char *shd_lv_meta_format (GPtrArray *disks);
/* The disk's tier of that name (names are unique), or NULL; d may be NULL */
ShdLvTier *shd_lv_disk_tier (const ShdLvDisk *d, const char *name);
/* After a move to @tier: that tier is the disk's own image, the old one is
 * gone, and so is the move's record.  FALSE when the disk is left with no
 * tier besides its own image (it then has nothing to shadow). */
gboolean shd_lv_disk_moved_to (ShdLvDisk *d, const char *tier);
void shd_lv_move_free (ShdLvMove *m);

/* The node names the agent uses for a disk (at most 31 characters). */
char *shd_lv_node_shadow (const char *target);
char *shd_lv_node_base (const char *target);
/* index 0 is the origin tier */
char *shd_lv_node_tier (const char *target, guint index, gboolean throttle);
char *shd_lv_throttle_group (const char *target, guint index);
/* The metadata child: its node, and its image, next to the first tier
 * image: PATH.meta, or POOL/IMAGE.meta (*rbd) for an rbd tier; NULL
 * when no tier has an image */
char *shd_lv_node_meta (const char *target);
char *shd_lv_meta_image (const ShdLvDisk *d, gboolean *rbd);
/* The metadata image file: NULL when none or an rbd image */
char *shd_lv_meta_path (const ShdLvDisk *d);
/* The images this host removes when the domain migrates away: those of
 * host-local tiers, and the metadata image next to a host-local first
 * tier.  NULL-terminated; empty when there are none. */
char **shd_lv_disk_local_images (const ShdLvDisk *d);
/* Has a tier on an rbd image */
gboolean shd_lv_disk_on_rbd (const ShdLvDisk *d);
gboolean shd_lv_disk_copy_compare (const ShdLvDisk *d);

/* Everything about the disk that needs a re-insertion when it changes;
 * policy knobs and the service level are not part of it.  Two disks have
 * the same key exactly when these are the same. */
char *shd_lv_disk_layout_key (const ShdLvDisk *d);
/* Everything about the disk: a change of any attribute, policy knob or
 * tier price gives another key. */
char *shd_lv_disk_full_key (const ShdLvDisk *d);

/* The disk as a [disk:NAME] group, validated by config.c against c's tiers;
 * tiers only the metadata knows (with cost-gib-month) are added to c. */
ShdDiskConfig *shd_lv_disk_config (ShdConfig *c, const char *domain, const ShdLvDisk *d,
                                   GError **error);

/* The name of a domain's disk in shadowd: DOMAIN.TARGET */
char *shd_lv_disk_name (const char *domain, const char *target);

/* A <disk> of the live domain XML. */
typedef struct {
  char *target;
  char *alias;                  /* virtio-disk0 */
  char *source;                 /* file path, POOL/IMAGE (rbd), or NULL */
  char *protocol;               /* network disks: rbd, nbd ...; else NULL */
  char *type;                   /* file, block, network, ... */
  char *format;                 /* driver type: qcow2, raw */
  char *discard;                /* driver discard, or NULL */
  char *io;                     /* driver io, or NULL */
  char *device;                 /* disk, cdrom, ... */
} ShdLvDomDisk;

GPtrArray *shd_lv_domain_disks (const char *xml, GError **error);
ShdLvDomDisk *shd_lv_dom_disk_copy (const ShdLvDomDisk *d);
void shd_lv_dom_disk_free (ShdLvDomDisk *d);
const ShdLvDomDisk *shd_lv_domain_disk (GPtrArray *disks, const char *target);

void shd_lv_disk_free (ShdLvDisk *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdLvDisk, shd_lv_disk_free)

G_END_DECLS
