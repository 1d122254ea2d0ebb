/* shadowd's libvirt side: connections to one or more libvirt URIs, the
 * domains whose XML <metadata> describes shadowed disks (lvmeta.h), their
 * QMP through libvirt's QEMU passthrough, and the insertion and removal of
 * the shadow nodes (lvattach.h) as domains start, stop, change their
 * metadata, lose a disk, or as the operator asks (virsh-shadow).  The
 * disks it manages are the daemon's (shd_daemon_add_disk), and so is the
 * scrape its metrics go into (shd_daemon_add_metrics_source).
 *
 * Built without libvirt (lvstub.c), shd_libvirt_new() fails and the
 * commands say so. */
#pragma once

#include "control.h"
#include "daemon.h"

G_BEGIN_DECLS

#define SHD_TYPE_LIBVIRT (shd_libvirt_get_type ())
G_DECLARE_FINAL_TYPE (ShdLibvirt, shd_libvirt, SHD, LIBVIRT, GObject)

/* FALSE when built without libvirt. */
gboolean shd_libvirt_supported (void);

ShdLibvirt *shd_libvirt_new (ShdDaemon *dm, char **uris, GError **error);
/* Connects (retrying in the background) and adopts running domains. */
void shd_libvirt_start (ShdLibvirt *lv);
/* Leaves the shadows in place (a restarted agent adopts them): stops
 * following, lets what runs end, and completes once nothing of libvirt's
 * runs any more. */
void shd_libvirt_shutdown_async (ShdLibvirt *lv, GAsyncReadyCallback callback, gpointer data);
gboolean shd_libvirt_shutdown_finish (ShdLibvirt *lv, GAsyncResult *res, GError **error);

/* The commands libvirt, attach and detach; lv NULL: shadowd follows no
 * libvirt connection, and they say so. */
void shd_libvirt_add_commands (ShdLibvirt *lv, ShdControl *ctl);

G_END_DECLS
