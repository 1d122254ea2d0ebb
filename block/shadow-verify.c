/*
 * Shadow block driver: a job that verifies a child by content
 *
 * x-shadow-verify compares every chunk of one child of a shadow node with
 * another child (by default the active one), reading both.  A permanent
 * move verifies its target this way before it switches to it for good.
 *
 * A chunk is compared only while both children hold it (the maps say it
 * is valid on both) and under the range lock, so no guest write or copy
 * changes it on one side between the two reads.  A chunk one of them does
 * not hold yet is skipped and compared on a later pass, once the copy
 * brought it: the job ends when every chunk was compared once, and fails
 * if the children stop making that possible (SHADOW_VERIFY_STUCK_NS).  A
 * chunk made stale on either child after it was compared (a write-back
 * write, a failed write) is compared again once copied again
 * (s->verify_restale).
 *
 * The job looks its children up by name at every step, under the graph
 * read lock: a switch, a removed child or a grown disk between two steps
 * is seen at the next one.  What it compared is kept only while the node
 * is the one it began with: a child removed and added again under its
 * name (ShadowChild.serial), or an inactivation (its activation loads the
 * maps again, and may shrink the disk), ends the job with an error.  It
 * changes no state of the node.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "block/blockjob_int.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-block-shadow.h"
#include "qemu/job.h"
#include "qemu/memalign.h"
#include "shadow.h"
#include "trace.h"

typedef struct ShadowVerifyJob {
    BlockJob common;
    BlockDriverState *bs;
    char *child_name;
    char *against_name;     /* NULL: the active child, whichever it is */
    /* The node the job began with (its children's: @watch) */
    unsigned activations;
    /*
     * In s->verify_restale: @watch.restale under s->lock, also written by
     * requests; the serials are set once
     */
    ShadowVerifyWatch watch;

    /*
     * Only the job's coroutine touches these.  @todo has a bit per chunk
     * not compared yet; @cursor is where the current pass goes on.
     */
    HBitmap *todo;
    int64_t nb_chunks;
    int64_t length;
    int64_t cursor;
    bool pass_progress;
    ShadowVerifyClock clock;
    void *buf_a;
    void *buf_b;
} ShadowVerifyJob;

/*
 * The children to compare at this step, or an error that ends the job.
 * Graph read lock held.
 */
static int GRAPH_RDLOCK
shadow_verify_children(ShadowVerifyJob *vj, BDRVShadowState *s,
                       ShadowChild **target, ShadowChild **src, Error **errp)
{
    const char *node = bdrv_get_node_name(vj->bs);

    if (bdrv_is_inactive(vj->bs) ||
        qatomic_read(&s->activations) != vj->activations) {
        /*
         * Migrated: the destination writes the children now.  Or active
         * again (a failed migration): the maps were loaded again.
         */
        error_setg(errp, "Shadow node '%s' was inactivated before '%s' was "
                   "verified", node, vj->child_name);
        return -EBUSY;
    }
    *target = shadow_find_child(s, vj->child_name);
    if (!*target) {
        error_setg(errp, "Child '%s' left shadow node '%s' before it was "
                   "verified", vj->child_name, node);
        return -ENOENT;
    }
    if ((*target)->serial != vj->watch.child_serial) {
        error_setg(errp, "Child '%s' of shadow node '%s' was removed and "
                   "added again before it was verified", vj->child_name,
                   node);
        return -ESTALE;
    }
    if (vj->against_name) {
        *src = shadow_find_child(s, vj->against_name);
        if (!*src) {
            error_setg(errp, "Child '%s' left shadow node '%s' before '%s' "
                       "was verified against it", vj->against_name, node,
                       vj->child_name);
            return -ENOENT;
        }
        if ((*src)->serial != vj->watch.against_serial) {
            error_setg(errp, "Child '%s' of shadow node '%s' was removed and "
                       "added again before '%s' was verified against it",
                       vj->against_name, node, vj->child_name);
            return -ESTALE;
        }
    } else {
        *src = s->active;
        if (*src == *target) {
            error_setg(errp, "Child '%s' of shadow node '%s' became the "
                       "active child before it was verified; give "
                       "'against' to verify it against another child",
                       vj->child_name, node);
            return -EBUSY;
        }
    }
    if ((*target)->degraded || (*src)->degraded) {
        error_setg(errp, "Child '%s' of shadow node '%s' is degraded: it "
                   "cannot be verified",
                   shadow_child_name((*target)->degraded ? *target : *src),
                   node);
        return -EIO;
    }
    if (qatomic_read(&s->maps_unknown)) {
        error_setg(errp, "Shadow node '%s' does not know which chunks its "
                   "children hold", node);
        return -EIO;
    }
    return 0;
}

/*
 * The disk grew since the last step: its new chunks are to compare too.
 * Returns the bytes added to the job's work.  Under s->lock.
 */
static int64_t shadow_verify_grow(ShadowVerifyJob *vj, BDRVShadowState *s)
{
    int64_t first = vj->nb_chunks;
    int64_t again = 0, added;

    if (s->length <= vj->length) {
        return 0;
    }
    if (vj->length & (s->chunk_size - 1) && !hbitmap_get(vj->todo, first - 1)) {
        /* The old last chunk was short: it is compared again, whole */
        first--;
        again = vj->length - first * s->chunk_size;
    }
    hbitmap_truncate(vj->todo, s->nb_chunks);
    hbitmap_truncate(vj->watch.restale, s->nb_chunks);
    vj->watch.nb_chunks = s->nb_chunks;
    hbitmap_set(vj->todo, first, s->nb_chunks - first);
    added = s->length - vj->length + again;
    vj->length = s->length;
    vj->nb_chunks = s->nb_chunks;
    return added;
}

/*
 * Chunks compared before and made stale since: to compare again, once
 * copied again.  After shadow_verify_grow(), so that both bitmaps have
 * the disk's size.  Returns the bytes added to the job's work.  Under
 * s->lock.
 */
static int64_t shadow_verify_restaled(ShadowVerifyJob *vj,
                                      BDRVShadowState *s)
{
    int64_t last = vj->nb_chunks - 1;
    int64_t tail = vj->length & (s->chunk_size - 1);
    int64_t before = hbitmap_count(vj->todo);
    int64_t again;
    bool short_again;

    if (!hbitmap_count(vj->watch.restale)) {
        return 0;
    }
    short_again = tail && hbitmap_get(vj->watch.restale, last) &&
                  !hbitmap_get(vj->todo, last);
    hbitmap_merge(vj->todo, vj->watch.restale, vj->todo);
    hbitmap_reset_all(vj->watch.restale);
    again = (hbitmap_count(vj->todo) - before) * s->chunk_size;
    return short_again ? again - (s->chunk_size - tail) : again;
}

/*
 * The first run of chunks at or after @vj->cursor that is still to compare
 * and that both children hold, at most @max chunks; 0 if there is none
 * before the end of the disk.  Under s->lock.
 */
static int64_t shadow_verify_next_run(ShadowVerifyJob *vj, ShadowChild *a,
                                      ShadowChild *b, int64_t max,
                                      int64_t *first)
{
    int64_t end = vj->nb_chunks;
    int64_t c = vj->cursor;
    int64_t n, next;

    while (c < end) {
        if (!hbitmap_get(vj->todo, c)) {
            next = hbitmap_next_dirty(vj->todo, c, end - c);
        } else if (hbitmap_get(a->map.stale, c)) {
            next = hbitmap_next_zero(a->map.stale, c, end - c);
        } else if (hbitmap_get(b->map.stale, c)) {
            next = hbitmap_next_zero(b->map.stale, c, end - c);
        } else {
            break;
        }
        c = next < 0 ? end : next;
    }
    if (c >= end) {
        return 0;
    }
    for (n = 1; n < max && c + n < end; n++) {
        if (!hbitmap_get(vj->todo, c + n) ||
            hbitmap_get(a->map.stale, c + n) ||
            hbitmap_get(b->map.stale, c + n)) {
            break;
        }
    }
    *first = c;
    return n;
}

/* One of the two reads of shadow_read_both(), in a coroutine of its own */
typedef struct ShadowReadOne {
    BdrvChild *child;
    int64_t offset;
    int64_t bytes;
    void *buf;
    int ret;
    int *pending;               /* reads not yet done */
    Coroutine *waiter;
} ShadowReadOne;

static void coroutine_fn GRAPH_RDLOCK shadow_read_one_entry(void *opaque)
{
    ShadowReadOne *r = opaque;

    r->ret = bdrv_co_pread(r->child, r->offset, r->bytes, r->buf, 0);
    if (--*r->pending == 0) {
        qemu_coroutine_enter_if_inactive(r->waiter);
    }
}

/*
 * Read [@offset, @offset + @bytes) of @a into @buf_a and of @b into @buf_b
 * at the same time, as quorum's read_quorum_children() does: a comparison
 * takes the time of the slower node, not of both.  Returns 0, or the error
 * of the first that failed, *@failed.  Also x-shadow-verify-copy's.
 */
int coroutine_fn GRAPH_RDLOCK
shadow_read_both(BdrvChild *a, BdrvChild *b, int64_t offset, int64_t bytes,
                 void *buf_a, void *buf_b, BdrvChild **failed)
{
    int pending = 2;
    ShadowReadOne reads[2] = {
        { a, offset, bytes, buf_a, 0, &pending, qemu_coroutine_self() },
        { b, offset, bytes, buf_b, 0, &pending, qemu_coroutine_self() },
    };
    int k;

    for (k = 0; k < 2; k++) {
        qemu_coroutine_enter(qemu_coroutine_create(shadow_read_one_entry,
                                                   &reads[k]));
    }
    while (pending) {
        qemu_coroutine_yield();
    }
    for (k = 0; k < 2; k++) {
        if (reads[k].ret < 0) {
            *failed = reads[k].child;
            return reads[k].ret;
        }
    }
    return 0;
}

/*
 * Compare [@offset, @offset + @bytes) of both children, read at the same
 * time (the job's time is that of the slower child, not of both); range
 * locked.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_verify_compare(ShadowVerifyJob *vj, ShadowChild *target,
                      ShadowChild *src, int64_t offset, int64_t bytes,
                      Error **errp)
{
    const char *node = bdrv_get_node_name(vj->bs);
    int64_t done, n, i;

    for (done = 0; done < bytes; done += n) {
        BdrvChild *failed = NULL;
        int ret;

        n = MIN(bytes - done, SHADOW_COPY_MAX_BYTES);
        ret = shadow_read_both(src->child, target->child, offset + done, n,
                               vj->buf_a, vj->buf_b, &failed);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Reading child '%s' of shadow node "
                             "'%s' at offset %" PRId64 " failed",
                             shadow_child_name(failed == src->child ? src :
                                               target),
                             node, offset + done);
            return ret;
        }
        if (memcmp(vj->buf_a, vj->buf_b, n) == 0) {
            continue;
        }
        for (i = 0; ((uint8_t *)vj->buf_a)[i] == ((uint8_t *)vj->buf_b)[i];
             i++) {
            /* the first byte that differs */
        }
        trace_shadow_verify_mismatch(vj->bs, shadow_child_name(target),
                                     shadow_child_name(src), offset + done + i);
        error_setg(errp, "Child '%s' of shadow node '%s' differs from child "
                   "'%s' at offset %" PRId64, shadow_child_name(target), node,
                   shadow_child_name(src), offset + done + i);
        return -EILSEQ;
    }
    return 0;
}

/*
 * One step: compare the next run both children hold.  Returns 1 if it
 * compared something, 0 at the end of a pass, or a negative error.
 */
static int coroutine_fn shadow_verify_step(ShadowVerifyJob *vj,
                                           Error **errp)
{
    BDRVShadowState *s = vj->bs->opaque;
    ShadowChild *target, *src;
    int64_t first = 0, nb, offset, bytes, added;
    BlockReq req;
    bool held;
    int ret;

    GRAPH_RDLOCK_GUARD();

    ret = shadow_verify_children(vj, s, &target, &src, errp);
    if (ret < 0) {
        return ret;
    }
    qemu_spin_lock(&s->lock);
    if (s->length < vj->length) {
        /* Only an activation shrinks it, and that ended the job above */
        int64_t length = s->length;

        qemu_spin_unlock(&s->lock);
        error_setg(errp, "Shadow node '%s' shrank from %" PRId64 " to %"
                   PRId64 " bytes before '%s' was verified",
                   bdrv_get_node_name(vj->bs), vj->length, length,
                   vj->child_name);
        return -EIO;
    }
    added = shadow_verify_grow(vj, s);
    added += shadow_verify_restaled(vj, s);
    nb = shadow_verify_next_run(vj, target, src,
                                MAX(SHADOW_COPY_MAX_BYTES >> s->chunk_bits,
                                    1), &first);
    qemu_spin_unlock(&s->lock);
    if (added) {
        /* It takes a mutex: not under the spinlock */
        job_progress_increase_remaining(&vj->common.job, added);
    }
    if (nb == 0) {
        return 0;
    }

    offset = first * s->chunk_size;
    bytes = shadow_chunk_bytes(s, first, first + nb);
    shadow_range_lock(s, &req, offset, bytes);
    /* A write or copy that came first may have left a chunk stale */
    qemu_spin_lock(&s->lock);
    held = shadow_state_holds(target, first, first + nb) &&
           shadow_state_holds(src, first, first + nb);
    qemu_spin_unlock(&s->lock);
    if (held) {
        trace_shadow_verify_run(vj->bs, shadow_child_name(target),
                                shadow_child_name(src), offset, bytes);
        ret = shadow_verify_compare(vj, target, src, offset, bytes, errp);
    }
    shadow_range_unlock(s, &req);
    if (ret < 0) {
        return ret;
    }
    if (held) {
        hbitmap_reset(vj->todo, first, nb);
        job_progress_update(&vj->common.job, bytes);
        block_job_ratelimit_processed_bytes(&vj->common, bytes);
        vj->pass_progress = true;
        shadow_verify_clock_progress(&vj->clock);
    }
    vj->cursor = first + (held ? nb : 0);
    return 1;
}

/* Time paused (job-pause, drained sections) is not time stuck */
static void coroutine_fn shadow_verify_pause(Job *job)
{
    ShadowVerifyJob *vj = container_of(job, ShadowVerifyJob, common.job);

    shadow_verify_clock_pause(&vj->clock);
}

static void coroutine_fn shadow_verify_resume(Job *job)
{
    ShadowVerifyJob *vj = container_of(job, ShadowVerifyJob, common.job);

    shadow_verify_clock_resume(&vj->clock);
}

static int coroutine_fn shadow_verify_run(Job *job, Error **errp)
{
    ShadowVerifyJob *vj = container_of(job, ShadowVerifyJob, common.job);
    int ret;

    shadow_verify_clock_progress(&vj->clock);
    while (hbitmap_count(vj->todo)) {
        /* Even unlimited, this yields, so that drains and cancels get in */
        block_job_ratelimit_sleep(&vj->common);
        if (job_is_cancelled(job)) {
            return -ECANCELED;
        }
        ret = shadow_verify_step(vj, errp);
        if (ret < 0) {
            return ret;
        }
        if (ret > 0) {
            continue;
        }

        /* The end of a pass: go round again for what was skipped */
        if (!vj->pass_progress) {
            if (shadow_verify_clock_stuck(&vj->clock)) {
                BDRVShadowState *s = vj->bs->opaque;

                GRAPH_RDLOCK_GUARD();
                error_setg(errp, "Children '%s' and '%s' of shadow node "
                           "'%s' have not both held %" PRIu64 " of its "
                           "chunks for %d s: is the copy running?",
                           vj->child_name,
                           vj->against_name ?: shadow_child_name(s->active),
                           bdrv_get_node_name(vj->bs),
                           hbitmap_count(vj->todo),
                           (int)(SHADOW_VERIFY_STUCK_NS /
                                 NANOSECONDS_PER_SECOND));
                return -ETIMEDOUT;
            }
            job_sleep_ns(job, SHADOW_VERIFY_RETRY_NS);
        }
        vj->pass_progress = false;
        vj->cursor = 0;
    }
    return 0;
}

static void shadow_verify_clean(Job *job)
{
    ShadowVerifyJob *vj = container_of(job, ShadowVerifyJob, common.job);
    BDRVShadowState *s = vj->bs->opaque;

    qemu_spin_lock(&s->lock);
    s->verify_restale = g_slist_remove(s->verify_restale, &vj->watch);
    qemu_spin_unlock(&s->lock);
    hbitmap_free(vj->watch.restale);
    hbitmap_free(vj->todo);
    qemu_vfree(vj->buf_a);
    qemu_vfree(vj->buf_b);
    g_free(vj->child_name);
    g_free(vj->against_name);
}

static const BlockJobDriver shadow_verify_job_driver = {
    .job_driver = {
        .instance_size = sizeof(ShadowVerifyJob),
        .job_type      = JOB_TYPE_SHADOW_VERIFY,
        .free          = block_job_free,
        .user_resume   = block_job_user_resume,
        .run           = shadow_verify_run,
        .pause         = shadow_verify_pause,
        .resume        = shadow_verify_resume,
        .clean         = shadow_verify_clean,
    },
};

/* The checks of x-shadow-verify's arguments; graph read lock held */
static BDRVShadowState * GRAPH_RDLOCK
shadow_verify_check(BlockDriverState *bs, const char *child,
                    const char *against, Error **errp)
{
    BDRVShadowState *s;
    ShadowChild *target;

    if (!shadow_is_node(bs)) {
        error_setg(errp, "Node '%s' is not a shadow node",
                   bdrv_get_node_name(bs));
        return NULL;
    }
    s = bs->opaque;
    if (bdrv_is_inactive(bs)) {
        error_setg(errp, "Shadow node '%s' is inactive (an incoming "
                   "migration has not completed)", bdrv_get_node_name(bs));
        return NULL;
    }
    target = shadow_find_child(s, child);
    if (!target) {
        error_setg(errp, "Shadow node '%s' has no child '%s'",
                   bdrv_get_node_name(bs), child);
        return NULL;
    }
    if (against && !shadow_find_child(s, against)) {
        error_setg(errp, "Shadow node '%s' has no child '%s'",
                   bdrv_get_node_name(bs), against);
        return NULL;
    }
    if (against && !strcmp(against, child)) {
        error_setg(errp, "Child '%s' cannot be verified against itself",
                   child);
        return NULL;
    }
    if (!against && target == s->active) {
        error_setg(errp, "Child '%s' is the active child of shadow node "
                   "'%s': give 'against' to verify it against another child",
                   child, bdrv_get_node_name(bs));
        return NULL;
    }
    return s;
}

void qmp_x_shadow_verify(const char *job_id, const char *node_name,
                         const char *child, const char *against,
                         bool has_speed, int64_t speed,
                         bool has_auto_finalize, bool auto_finalize,
                         bool has_auto_dismiss, bool auto_dismiss,
                         Error **errp)
{
    BlockDriverState *bs;
    BDRVShadowState *s;
    ShadowVerifyJob *vj;
    int64_t nb_chunks, length;
    uint64_t child_serial = 0, against_serial = 0;
    int flags = JOB_DEFAULT;

    GLOBAL_STATE_CODE();

    bs = bdrv_lookup_bs(NULL, node_name, errp);
    if (!bs) {
        return;
    }
    bdrv_graph_rdlock_main_loop();
    s = shadow_verify_check(bs, child, against, errp);
    if (s) {
        child_serial = shadow_find_child(s, child)->serial;
        against_serial = against ? shadow_find_child(s, against)->serial : 0;
    }
    bdrv_graph_rdunlock_main_loop();
    if (!s) {
        return;
    }

    if (has_auto_finalize && !auto_finalize) {
        flags |= JOB_MANUAL_FINALIZE;
    }
    if (has_auto_dismiss && !auto_dismiss) {
        flags |= JOB_MANUAL_DISMISS;
    }
    /* The job only reads the children, through the node's own BdrvChild */
    vj = block_job_create(job_id ?: node_name, &shadow_verify_job_driver,
                          NULL, bs, 0, BLK_PERM_ALL, has_speed ? speed : 0,
                          flags, NULL, NULL, errp);
    if (!vj) {
        return;
    }
    /*
     * It changes nothing: mirrors, backups, resizes and other verifies of
     * the node may run beside it
     */
    bdrv_op_unblock_all(bs, vj->common.blocker);

    qemu_spin_lock(&s->lock);
    nb_chunks = s->nb_chunks;
    length = s->length;
    qemu_spin_unlock(&s->lock);
    /*
     * Allocated outside the spinlock; a grow in between is the first
     * step's to see, as any later one
     */
    vj->watch.restale = hbitmap_alloc(nb_chunks, 0);
    vj->watch.nb_chunks = nb_chunks;
    vj->watch.child_serial = child_serial;
    vj->watch.against_serial = against_serial;
    qemu_spin_lock(&s->lock);
    s->verify_restale = g_slist_prepend(s->verify_restale, &vj->watch);
    qemu_spin_unlock(&s->lock);

    vj->bs = bs;
    vj->child_name = g_strdup(child);
    vj->against_name = g_strdup(against);
    vj->activations = qatomic_read(&s->activations);
    vj->nb_chunks = nb_chunks;
    vj->length = length;
    vj->todo = hbitmap_alloc(nb_chunks, 0);
    hbitmap_set(vj->todo, 0, nb_chunks);
    vj->buf_a = qemu_blockalign(bs, SHADOW_COPY_MAX_BYTES);
    vj->buf_b = qemu_blockalign(bs, SHADOW_COPY_MAX_BYTES);
    job_progress_set_remaining(&vj->common.job, length);
    trace_shadow_verify_start(bs, child, against ?: "(active)", length);
    job_start(&vj->common.job);
}
