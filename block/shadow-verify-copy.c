/*
 * Shadow block driver: a job that verifies a mirror's copy by content
 *
 * x-shadow-verify-copy compares what a node holds (the disk as its guest
 * sees it) with the target of a mirror job that copies it, reading both,
 * before the mirror is completed.  A permanent move of a libvirt domain's
 * disk verifies libvirt's block copy this way before its pivot: the copy
 * is an image of its own layout, so only the content the two nodes give
 * can be compared, not their bytes on disk.
 *
 * The mirror keeps its target in step, but not at every instant: a guest
 * write reaches the target later (background mode) or on its own path
 * (write-blocking mode), and the mirror marks what it still has to copy
 * in a dirty bitmap without a name, on the filter it puts over the
 * source.  So a piece read equal on both is compared; a piece read
 * different is read again inside a drained section of both nodes, where
 * no request is in flight and the mirror is paused.  If such a bitmap
 * (on the source or a filter over it) marks any of it, the mirror has yet
 * to copy it and the piece is compared on a later pass; if none does and
 * it still differs, the target is not a copy of the source and the job
 * fails, saying where.  The job ends when every piece was compared once,
 * and fails if it could compare none for SHADOW_VERIFY_STUCK_NS.
 *
 * The job reads both nodes without taking CONSISTENT_READ: the mirror
 * does not share it on its target until the copy is complete, and the job
 * knows which of the target's pieces to trust.  It changes nothing.  A
 * piece compared and changed afterwards on one side only (by something
 * else than the mirror) is not compared again.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block-global-state.h"
#include "block/block-io.h"
#include "block/block_int.h"
#include "block/blockjob_int.h"
#include "block/dirty-bitmap.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-block-shadow.h"
#include "qemu/hbitmap.h"
#include "qemu/job.h"
#include "qemu/memalign.h"
#include "qemu/units.h"
#include "shadow.h"
#include "trace.h"

/* The unit compared, read and deferred */
#define SHADOW_VERIFY_COPY_PIECE (1 * MiB)

typedef struct ShadowVerifyCopyJob {
    BlockJob common;
    /* The job's own BdrvChild of each node; set once */
    BdrvChild *source;
    BdrvChild *target;
    int64_t length;

    /*
     * Set by the job's coroutine around its drained sections, read by
     * drained_poll in the same AioContext
     */
    bool in_drain;

    /* Only the job's coroutine touches these */
    HBitmap *todo;              /* a bit per piece not compared yet */
    int64_t nb_pieces;
    int64_t cursor;
    bool pass_progress;
    ShadowVerifyClock clock;
    void *buf_a;
    void *buf_b;
} ShadowVerifyCopyJob;

/*
 * Read [@offset, @offset + @bytes) of both nodes at the same time.
 * Returns the offset of the first byte that differs, -1 if none does, or
 * a negative error below -1.
 */
static int64_t coroutine_fn
shadow_verify_copy_read(ShadowVerifyCopyJob *vj, int64_t offset,
                        int64_t bytes, Error **errp)
{
    BdrvChild *failed = NULL;
    int64_t i;
    int ret;

    GRAPH_RDLOCK_GUARD();

    ret = shadow_read_both(vj->source, vj->target, offset, bytes, vj->buf_a,
                           vj->buf_b, &failed);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Reading node '%s' at offset %" PRId64
                         " failed", bdrv_get_node_name(failed->bs), offset);
        return MIN(ret, -2);
    }
    if (memcmp(vj->buf_a, vj->buf_b, bytes) == 0) {
        return -1;
    }
    for (i = 0; ((uint8_t *)vj->buf_a)[i] == ((uint8_t *)vj->buf_b)[i]; i++) {
        /* the first byte that differs */
    }
    return offset + i;
}

/*
 * Whether a dirty bitmap of @bs without a name marks any of the range;
 * *@seen is set if @bs has such a bitmap at all
 */
static bool shadow_verify_copy_node_dirty(BlockDriverState *bs,
                                          int64_t offset, int64_t bytes,
                                          bool *seen)
{
    BdrvDirtyBitmap *bm;
    bool dirty = false;

    /* It protects both the list and the bits */
    qemu_mutex_lock(&bs->dirty_bitmap_mutex);
    FOR_EACH_DIRTY_BITMAP(bs, bm) {
        if (bdrv_dirty_bitmap_name(bm)) {
            continue;
        }
        *seen = true;
        if (bdrv_dirty_bitmap_next_dirty(bm, offset, bytes) >= 0) {
            dirty = true;
            break;
        }
    }
    qemu_mutex_unlock(&bs->dirty_bitmap_mutex);
    return dirty;
}

/*
 * Whether the range is still to copy: a dirty bitmap without a name marks
 * any of it on @bs or on a filter above it.  A mirror keeps its bitmap on
 * the filter it inserts over its source (mirror_top).  *@seen is set if
 * there is such a bitmap at all: without one, no mirror copies @bs.
 * Inside a drained section, so no request changes the bitmaps.
 */
static bool GRAPH_RDLOCK
shadow_verify_copy_dirty(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         bool *seen)
{
    BdrvChild *c;

    if (shadow_verify_copy_node_dirty(bs, offset, bytes, seen)) {
        return true;
    }
    QLIST_FOREACH(c, &bs->parents, next_parent) {
        BlockDriverState *parent;

        if (!c->klass->parent_is_bds) {
            continue;
        }
        parent = c->opaque;
        if (parent->drv && parent->drv->is_filter &&
            bdrv_filter_child(parent) == c &&
            shadow_verify_copy_dirty(parent, offset, bytes, seen)) {
            return true;
        }
    }
    return false;
}

/*
 * A piece read different: read it again with both nodes drained.
 * Returns 1 if it is equal, 0 if the mirror has yet to copy it, or a
 * negative error (-EILSEQ: it differs).
 */
static int coroutine_fn
shadow_verify_copy_settle(ShadowVerifyCopyJob *vj, int64_t offset,
                          int64_t bytes, Error **errp)
{
    int64_t differs = -1;
    bool dirty, seen = false;

    vj->in_drain = true;
    bdrv_drained_begin(vj->source->bs);
    bdrv_drained_begin(vj->target->bs);
    bdrv_graph_co_rdlock();
    dirty = shadow_verify_copy_dirty(vj->source->bs, offset, bytes, &seen);
    bdrv_graph_co_rdunlock();
    if (!dirty) {
        differs = shadow_verify_copy_read(vj, offset, bytes, errp);
    }
    bdrv_drained_end(vj->target->bs);
    bdrv_drained_end(vj->source->bs);
    vj->in_drain = false;

    if (dirty) {
        trace_shadow_verify_copy_deferred(vj, offset, bytes);
        return 0;
    }
    if (differs < -1) {
        return differs;
    }
    if (differs >= 0 && !seen) {
        trace_shadow_verify_copy_mismatch(vj, differs);
        error_setg(errp, "Node '%s' differs from node '%s' at offset %" PRId64
                   ", and no mirror copies '%s' (it has no copy's dirty "
                   "bitmap)", bdrv_get_node_name(vj->target->bs),
                   bdrv_get_node_name(vj->source->bs), differs,
                   bdrv_get_node_name(vj->source->bs));
        return -EILSEQ;
    }
    if (differs >= 0) {
        trace_shadow_verify_copy_mismatch(vj, differs);
        error_setg(errp, "Node '%s' differs from node '%s' that copies it "
                   "at offset %" PRId64 " (the copy holds it as done)",
                   bdrv_get_node_name(vj->target->bs),
                   bdrv_get_node_name(vj->source->bs), differs);
        return -EILSEQ;
    }
    return 1;
}

/*
 * Compare the next piece still to compare.  Returns 1 if it looked at
 * one, 0 at the end of a pass, or a negative error.
 */
static int coroutine_fn shadow_verify_copy_step(ShadowVerifyCopyJob *vj,
                                                Error **errp)
{
    int64_t piece, offset, bytes, differs;
    int ret;

    piece = vj->cursor < vj->nb_pieces ?
            hbitmap_next_dirty(vj->todo, vj->cursor,
                               vj->nb_pieces - vj->cursor) : -1;
    if (piece < 0) {
        return 0;
    }
    offset = piece * SHADOW_VERIFY_COPY_PIECE;
    bytes = MIN(SHADOW_VERIFY_COPY_PIECE, vj->length - offset);
    vj->cursor = piece + 1;

    trace_shadow_verify_copy_run(vj, offset, bytes);
    differs = shadow_verify_copy_read(vj, offset, bytes, errp);
    if (differs < -1) {
        return differs;
    }
    ret = 1;
    if (differs >= 0) {
        ret = shadow_verify_copy_settle(vj, offset, bytes, errp);
        if (ret < 0) {
            return ret;
        }
    }
    /* A deferred piece was read all the same */
    block_job_ratelimit_processed_bytes(&vj->common, bytes);
    if (ret > 0) {
        hbitmap_reset(vj->todo, piece, 1);
        job_progress_update(&vj->common.job, bytes);
        vj->pass_progress = true;
        shadow_verify_clock_progress(&vj->clock);
    }
    return 1;
}

/* Time paused (job-pause, drained sections) is not time stuck */
static void coroutine_fn shadow_verify_copy_pause(Job *job)
{
    ShadowVerifyCopyJob *vj = container_of(job, ShadowVerifyCopyJob,
                                           common.job);

    shadow_verify_clock_pause(&vj->clock);
}

static void coroutine_fn shadow_verify_copy_resume(Job *job)
{
    ShadowVerifyCopyJob *vj = container_of(job, ShadowVerifyCopyJob,
                                           common.job);

    shadow_verify_clock_resume(&vj->clock);
}

/* The job has no request of its own in flight only in its drained section */
static bool shadow_verify_copy_drained_poll(BlockJob *job)
{
    ShadowVerifyCopyJob *vj = container_of(job, ShadowVerifyCopyJob, common);

    return !vj->in_drain;
}

static int coroutine_fn shadow_verify_copy_run(Job *job, Error **errp)
{
    ShadowVerifyCopyJob *vj = container_of(job, ShadowVerifyCopyJob,
                                           common.job);
    int ret;

    shadow_verify_clock_progress(&vj->clock);
    while (hbitmap_count(vj->todo)) {
        /* Even unlimited, this yields, so that drains and cancels get in */
        block_job_ratelimit_sleep(&vj->common);
        if (job_is_cancelled(job)) {
            return -ECANCELED;
        }
        ret = shadow_verify_copy_step(vj, errp);
        if (ret < 0) {
            return ret;
        }
        if (ret > 0) {
            continue;
        }

        /* The end of a pass: go round again for what was deferred */
        if (!vj->pass_progress) {
            if (shadow_verify_clock_stuck(&vj->clock)) {
                int64_t first = hbitmap_next_dirty(vj->todo, 0,
                                                   vj->nb_pieces);

                error_setg(errp, "Node '%s' has not held %" PRIu64 " MiB of "
                           "node '%s' as copied for %d s (the first at "
                           "offset %" PRId64 "): is the mirror running?",
                           bdrv_get_node_name(vj->target->bs),
                           hbitmap_count(vj->todo) *
                           (SHADOW_VERIFY_COPY_PIECE / MiB),
                           bdrv_get_node_name(vj->source->bs),
                           (int)(SHADOW_VERIFY_STUCK_NS /
                                 NANOSECONDS_PER_SECOND),
                           first * SHADOW_VERIFY_COPY_PIECE);
                return -ETIMEDOUT;
            }
            job_sleep_ns(job, SHADOW_VERIFY_RETRY_NS);
        }
        vj->pass_progress = false;
        vj->cursor = 0;
    }
    return 0;
}

static void shadow_verify_copy_clean(Job *job)
{
    ShadowVerifyCopyJob *vj = container_of(job, ShadowVerifyCopyJob,
                                           common.job);

    hbitmap_free(vj->todo);
    qemu_vfree(vj->buf_a);
    qemu_vfree(vj->buf_b);
}

static const BlockJobDriver shadow_verify_copy_job_driver = {
    .job_driver = {
        .instance_size = sizeof(ShadowVerifyCopyJob),
        .job_type      = JOB_TYPE_SHADOW_VERIFY,
        .free          = block_job_free,
        .user_resume   = block_job_user_resume,
        .run           = shadow_verify_copy_run,
        .pause         = shadow_verify_copy_pause,
        .resume        = shadow_verify_copy_resume,
        .clean         = shadow_verify_copy_clean,
    },
    .drained_poll      = shadow_verify_copy_drained_poll,
};

void qmp_x_shadow_verify_copy(const char *job_id, const char *node_name,
                              const char *target, bool has_speed,
                              int64_t speed,
                              bool has_auto_finalize, bool auto_finalize,
                              bool has_auto_dismiss, bool auto_dismiss,
                              Error **errp)
{
    BlockDriverState *bs, *target_bs;
    ShadowVerifyCopyJob *vj;
    int64_t length, target_length;
    int flags = JOB_DEFAULT;
    int ret;

    GLOBAL_STATE_CODE();

    bs = bdrv_lookup_bs(NULL, node_name, errp);
    if (!bs) {
        return;
    }
    target_bs = bdrv_lookup_bs(NULL, target, errp);
    if (!target_bs) {
        return;
    }
    if (bs == target_bs) {
        error_setg(errp, "Node '%s' cannot be verified against itself",
                   node_name);
        return;
    }
    bdrv_graph_rdlock_main_loop();
    if (bdrv_is_inactive(bs) || bdrv_is_inactive(target_bs)) {
        bdrv_graph_rdunlock_main_loop();
        error_setg(errp, "Node '%s' is inactive (an incoming migration has "
                   "not completed)",
                   bdrv_get_node_name(bdrv_is_inactive(bs) ? bs : target_bs));
        return;
    }
    bdrv_graph_rdunlock_main_loop();
    length = bdrv_getlength(bs);
    target_length = bdrv_getlength(target_bs);
    if (length < 0 || target_length < 0) {
        error_setg_errno(errp, -(length < 0 ? length : target_length),
                         "Cannot get the length of node '%s'",
                         length < 0 ? node_name : target);
        return;
    }
    if (length != target_length) {
        error_setg(errp, "Node '%s' has %" PRId64 " bytes and node '%s' "
                   "%" PRId64 ": it is not a copy of it", target,
                   target_length, node_name, length);
        return;
    }

    if (has_auto_finalize && !auto_finalize) {
        flags |= JOB_MANUAL_FINALIZE;
    }
    if (has_auto_dismiss && !auto_dismiss) {
        flags |= JOB_MANUAL_DISMISS;
    }
    /* It only reads, and asks no consistent read of the copy (above) */
    vj = block_job_create(job_id ?: node_name, &shadow_verify_copy_job_driver,
                          NULL, bs, 0, BLK_PERM_ALL, has_speed ? speed : 0,
                          flags, NULL, NULL, errp);
    if (!vj) {
        return;
    }
    vj->source = vj->common.nodes->data;
    bdrv_graph_wrlock();
    ret = block_job_add_bdrv(&vj->common, "target", target_bs, 0,
                             BLK_PERM_ALL, errp);
    bdrv_graph_wrunlock();
    if (ret < 0) {
        job_early_fail(&vj->common.job);
        return;
    }
    /* block_job_add_bdrv() prepends the node's child */
    vj->target = vj->common.nodes->data;
    /*
     * It changes nothing: the mirror, and anything else of the nodes, go
     * on beside it
     */
    bdrv_op_unblock_all(bs, vj->common.blocker);
    bdrv_op_unblock_all(target_bs, vj->common.blocker);

    vj->length = length;
    vj->nb_pieces = DIV_ROUND_UP(length, SHADOW_VERIFY_COPY_PIECE);
    vj->todo = hbitmap_alloc(vj->nb_pieces, 0);
    hbitmap_set(vj->todo, 0, vj->nb_pieces);
    vj->buf_a = qemu_blockalign(bs, SHADOW_VERIFY_COPY_PIECE);
    vj->buf_b = qemu_blockalign(target_bs, SHADOW_VERIFY_COPY_PIECE);
    job_progress_set_remaining(&vj->common.job, length);
    trace_shadow_verify_copy_start(vj, node_name, target, length);
    job_start(&vj->common.job);
}
