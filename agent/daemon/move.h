/* A permanent move of a disk to one tier (shadowctl move): the target's
 * child is added if absent and copied (hot-first, by the driver), may be
 * verified by content (x-shadow-verify), becomes the active child, and
 * then the other tiers are retired: their children removed, and, once a
 * flush of the node made the metadata durable without them, their images
 * deleted (or renamed to a name the operator chose).
 *
 *   preparing -> copying -> [verifying] -> switching -> committing -> done
 *        \___________\___________\____ aborted (shadowctl move --abort)
 *   any state but done -> failed, with the reason
 *
 * Abort is refused once the switch was sent: from then on the move can
 * only go forward (run it again after a failure: it resumes where the node
 * is).  While a move runs the policy decides but does not act; once done
 * the disk stays paused on its new tier.
 *
 * The move lives in its disk (disk-private.h); shd_move_tick() runs it at
 * each sample. */
#pragma once

#include "disk.h"

G_BEGIN_DECLS

/* The verify's speed unless the request says: the guest keeps its service */
#define SHD_MOVE_VERIFY_SPEED_DEFAULT (64 * 1048576ULL)

typedef enum {
  SHD_MOVE_PREPARING,
  SHD_MOVE_COPYING,
  SHD_MOVE_VERIFYING,
  SHD_MOVE_SWITCHING,
  SHD_MOVE_COMMITTING,
  SHD_MOVE_DONE,
  SHD_MOVE_ABORTED,
  SHD_MOVE_FAILED,
} ShdMoveState;

typedef struct {
  const char *tier;
  gboolean verify;
  guint64 verify_speed;         /* bytes/s; 0: the default */
  const char *keep_as;          /* rename the retired image here; NULL: delete */
} ShdMoveRequest;

typedef struct _ShdMove ShdMove;

const char *shd_move_state_name (ShdMoveState s);

/* Starts a move of the disk (none running); the move's status. */
JsonNode *shd_disk_move (ShdDisk *disk, const ShdMoveRequest *req, GError **error);
/* Aborts the running move before its switch; its status. */
JsonNode *shd_disk_move_abort (ShdDisk *disk, GError **error);
/* The move's status, or NULL when the disk never moved. */
JsonObject *shd_move_status (ShdMove *move);
gboolean shd_move_running (ShdMove *move);
ShdMoveState shd_move_state (ShdMove *move);
/* The index of the tier the move goes to */
int shd_move_target (ShdMove *move);
/* The operator paused or resumed the disk while it moves: the policy is
 * in that state once the move ends (unless it is done) */
void shd_move_set_paused_after (ShdMove *move, gboolean paused);
void shd_move_free (ShdMove *move);

/* At start: the disk's last move as the history kept it.  A move done
 * keeps the disk paused on its tier; one that shadowd's stop interrupted
 * is failed, and the disk paused until the operator moves or resumes it. */
void shd_move_restore (ShdDisk *disk);

/* One step, at each sample (disk.c) */
void shd_move_tick (ShdDisk *disk);
/* Adding @tier's child to the node failed (disk.c): a move preparing it
 * fails with @why at once */
void shd_move_add_failed (ShdMove *move, int tier, const char *why);

/* Prometheus */
void shd_move_declare_metrics (ShdMetrics *m);
void shd_move_collect_metrics (ShdMove *move, const char *disk, ShdMetrics *m);

G_END_DECLS
