/* Nodes over RBD images that shadowd opens and creates through QEMU (it
 * uses librbd only to remove retired images): the QMP arguments, and the
 * state of the blockdev-create job.  Shared by the plain QEMU / qemu-storage-daemon side (create.c,
 * asynchronous) and the libvirt side (lvattach.c, blocking). */
#pragma once

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* How long a caller waits for blockdev-create: rbd create takes a round
 * trip or two; the client timeouts of the conf bound each */
#define SHD_RBD_JOB_POLL_MS 200
#define SHD_RBD_JOB_POLLS 300

/* Sets BlockdevOptionsRbd's location on o: pool and image, and conf,
 * user and key-secret unless NULL (librbd's defaults then). */
void shd_rbd_set_location (JsonObject *o, const char *pool, const char *image,
                           const char *conf, const char *user, const char *key_secret);

/* blockdev-add arguments: a raw node named node over an rbd node
 * (named rbd_node unless NULL) whose location is loc (copied).  No
 * librbd cache (cache.direct): a completed write is on the OSDs, and an
 * error comes with the request that failed (docs/ceph.md). */
JsonObject *shd_rbd_raw_node (const char *node, const char *rbd_node, JsonObject *loc);

/* blockdev-create arguments: job job_id creating the image of loc
 * (copied) with size bytes. */
JsonObject *shd_rbd_create_args (const char *job_id, JsonObject *loc, guint64 size);

/* The job job_id in a query-jobs reply: *concluded, and *job_error (its
 * error, or NULL) once concluded.  FALSE with error when it is not
 * listed. */
gboolean shd_rbd_job_state (JsonNode *jobs, const char *job_id, gboolean *concluded,
                            const char **job_error, GError **error);

G_END_DECLS
