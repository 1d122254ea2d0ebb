/* Putting a shadow node under a libvirt disk's format node, and taking it
 * out again (docs/libvirt.md, "How the shadow is inserted").
 *
 *   device -> libvirt-1-format (qcow2) -> libvirt-1-storage (file)
 * becomes
 *   device -> libvirt-1-format (qcow2) -> shd-vda (shadow)
 *                                           +- shd-vda-base (raw) -> libvirt-1-storage
 *                                           +- shd-vda-f1 (file, a tier image) ...
 *
 * libvirt's storage node stays the only node with the image open, and
 * keeps its lock, except for one QMP command at each end (the hand-over
 * node shd-vda-tmp, see docs).
 *
 * Every step is one QMP command through a blocking monitor function (the
 * caller's: libvirt's QEMU passthrough), so this runs in a worker thread.
 * Failed insertions are rolled back. */
#pragma once

#include "lvmeta.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Runs one QMP command; returns its "return" value or NULL with error. */
typedef JsonNode *(*ShdLvMonitorFunc) (const char *command, JsonObject *args,
                                       gpointer data, GError **error);

typedef struct {
  ShdLvMonitorFunc mon;
  gpointer data;
} ShdLvMonitor;

typedef enum {
  SHD_LV_INSERTED,              /* the shadow was put in now */
  SHD_LV_ADOPTED,               /* it was already there (agent restart) */
} ShdLvAttachResult;

/* Inserts the shadow node for spec under the disk dd of the live XML.
 * Creates missing tier images (mode 0600, owned like the disk's image, as
 * long as the image); never changes the disk's image.  Tier
 * images must be under the disk image's directory or one of tier_dirs;
 * an existing one must belong to the image's owner.  Returns
 * FALSE with a message that says why it cannot (a raw disk without a
 * format node, an encrypted image, storage that is not a local file ...).
 * A disk whose tiers have images gets a metadata child (PATH.meta of the
 * first tier image): its maps are kept (warm) only when they are provably
 * those of the image as it is (docs/libvirt.md, "Warm restarts"), else
 * forgotten (cold).  *warmth: "tiers warm: ..." or "tiers cold: why", or
 * "metadata child in place" when adopted; NULL without a metadata child. */
gboolean shd_lv_attach (const ShdLvMonitor *m, const ShdLvDisk *spec, const ShdLvDomDisk *dd,
                        const char *const *tier_dirs, ShdLvAttachResult *result,
                        char **warmth, GError **error);

/* May the maps of the metadata image at md_path be kept for the disk whose
 * own image is origin?  Only if its current header (intact, the newer of
 * the two copies) records a clean stop, origin as the active tier then,
 * and origin's size and ctime at that stop, which must be its size and
 * ctime now.  FALSE with *why (newly allocated) otherwise, an empty or
 * all-zero image included ("no maps recorded yet"). */
gboolean shd_lv_md_keep (const char *md_path, const char *origin, char **why);
/* The same, and *origin_whole (if not NULL) tells whether the disk's own
 * image held every chunk at the last stop: no maps recorded, or a clean
 * stop with origin active.  A write-back disk must not start otherwise:
 * newer data may be on a tier (docs/libvirt.md, "Write-back"). */
gboolean shd_lv_md_check (const char *md_path, const char *origin, gboolean *origin_whole,
                          char **why);
/* The CRC32C (Castagnoli) the driver's metadata header carries. */
guint32 shd_lv_md_crc32c (const guint8 *p, gsize n);

/* Gives the disk back to libvirt's own nodes: switches to the origin tier
 * first if needed (refused when the origin is not in sync), points the
 * format node at libvirt's storage node again, and deletes the agent's
 * nodes.  chunk_size: the node's, for the switch back (0: default).
 * dd NULL: the device is gone; only the agent's nodes are deleted.
 * *was_attached tells whether there was anything to do. */
gboolean shd_lv_detach (const ShdLvMonitor *m, const char *target, const ShdLvDomDisk *dd,
                        guint64 chunk_size, gboolean *was_attached, GError **error);

/* Is the shadow of target under dd's format node now? */
/* After a permanent move's pivot (lvmove.c): the shadow, under nothing
 * now, is deleted with its nodes, and so is libvirt's storage node of the
 * old image @old that they held (libvirt's own delete of it failed). */
gboolean shd_lv_release_moved (const ShdLvMonitor *m, const char *target, const char *old,
                               GError **error);

/* The nodes of the block copy of a disk into @image that runs now: the
 * copy's source (the disk's node, under the mirror's filter) and its
 * target, the format node of @image.  FALSE with an error if no job
 * copies into @image. */
gboolean shd_lv_copy_nodes (const ShdLvMonitor *m, const char *image, char **source,
                            char **copy, GError **error);

/* After a copy into @image ended without its pivot: the nodes libvirt
 * opened on @image and could not delete (a verify job held them then) are
 * deleted, if nothing uses them now; QEMU would keep the file open. */
gboolean shd_lv_release_copy (const ShdLvMonitor *m, const char *target, const char *image,
                              GError **error);

gboolean shd_lv_is_attached (const ShdLvMonitor *m, const char *target,
                             const ShdLvDomDisk *dd, GError **error);

G_END_DECLS
