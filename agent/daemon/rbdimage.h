/* Removing an RBD image that a permanent move retired (move.c), through
 * librbd: QEMU has no command that deletes an image.
 *
 * The only file of the agent that includes librados' and librbd's
 * headers.  Their calls block (a monitor or OSD round trip each, a
 * timeout when the cluster is unreachable), so they run in a GTask's
 * thread; the client's timeouts bound them (SHD_RBD_TIMEOUT_S). */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Each monitor and OSD operation of the removal gives up after this */
#define SHD_RBD_TIMEOUT_S 20

/* Where an image is, as a retired node's QEMU filename names it */
typedef struct {
  char *pool;
  char *nspace;                 /* the pool's namespace, or NULL */
  char *image;
  char *conf;                   /* ceph.conf, or NULL: librados' default */
  char *user;                   /* the cephx id, or NULL: "admin" */
} ShdRbdImage;

void shd_rbd_image_free (ShdRbdImage *img);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (ShdRbdImage, shd_rbd_image_free)

/* The image an rbd node's filename names, as query-named-block-nodes
 * reports it: "json:{...}" (a node opened with options) or
 * "rbd:POOL/IMAGE[:key=value...]".  NULL with error when it names none
 * (a snapshot included: a retired image is never a snapshot), or when it
 * sets anything librados would need besides the ceph.conf and the user
 * (monitors, a keyring...): the removal must reach the cluster QEMU
 * reached, as QEMU does: the conf and user named, else librados'
 * defaults. */
ShdRbdImage *shd_rbd_image_parse (const char *filename, GError **error);

/* "POOL/IMAGE" or "POOL/NAMESPACE/IMAGE" */
char *shd_rbd_image_spec (const ShdRbdImage *img);

/* Removes the image (its snapshots must be gone; one a client holds
 * open read-write fails with G_IO_ERROR_BUSY; one not there fails too).
 * @cancellable only keeps it from starting: once started, it ends and
 * says how. */
void shd_rbd_image_remove_async (const ShdRbdImage *img, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer data);
gboolean shd_rbd_image_remove_finish (GAsyncResult *res, GError **error);

G_END_DECLS
