/* shadowd's libvirt side: connections to one or more libvirt URIs, the
 * domains whose XML <metadata> describes shadowed disks (lvmeta.h), their
 * QMP through libvirt's QEMU passthrough, and the insertion and removal of
 * the shadow nodes (lvattach.h) as domains start, stop, change their
 * metadata, lose a disk, or as the operator asks (virsh-shadow).
 *
 * libvirt's events come on a thread of their own (libvirt's default event
 * loop); they are handed to the GLib main loop, where all state lives.
 * QMP commands and insertions block, so they run in worker threads. */
#pragma once

#include "config.h"
#include "history.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct _ShdLibvirt ShdLibvirt;

/* disks: the daemon's array of ShdDisk (with shd_disk_free as its free
 * function); the disks of libvirt domains are added to it and removed
 * from it as they come and go.  config is written to: tiers that only a
 * domain's metadata defines are added. */
ShdLibvirt *shd_libvirt_new (ShdConfig *config, ShdHistory *history, char **uris,
                             GPtrArray *disks, GError **error);
/* Connects (retrying in the background) and adopts running domains. */
void shd_libvirt_start (ShdLibvirt *lv);
/* Leaves the shadows in place (a restarted agent adopts them). */
void shd_libvirt_free (ShdLibvirt *lv);

/* {name, uri, domain, target, state, error, ...} for each domain disk
 * with shadow metadata; name NULL for all. */
JsonNode *shd_libvirt_status (ShdLibvirt *lv, const char *name);

/* The operator's attach (TRUE) or detach (FALSE) of one disk; uri NULL:
 * the only connection, or the one that has the domain.  Returns at once;
 * the disk's state in shd_libvirt_status follows. */
gboolean shd_libvirt_request (ShdLibvirt *lv, const char *uri, const char *domain,
                              const char *target, gboolean attach, GError **error);

G_END_DECLS
