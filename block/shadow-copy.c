/*
 * Shadow block driver: background copy to the shadows (pre-warm)
 *
 * One coroutine per node copies stale chunks from the active child to the
 * shadows.  It counts as a request in flight, so drain, reopen and close
 * wait for the chunk it is copying; it stops at the next chunk when the
 * node is drained and shadow_drain_end() starts it again.  Unallocated
 * and zero ranges are written as zeroes that may unmap, so sparse images
 * stay sparse.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "qapi/qapi-events-block-shadow.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "qemu/timer.h"
#include "shadow.h"

/* Whether stale chunks are being copied, drained sections aside */
bool shadow_copy_enabled(BDRVShadowState *s)
{
    return s->prewarm != SHADOW_PREWARM_OFF && !s->copy_failed &&
           bdrv_is_writable(s->bs);
}

bool shadow_copy_may_run(BDRVShadowState *s)
{
    return shadow_copy_enabled(s) && !qatomic_read(&s->bs->quiesce_counter);
}

static bool shadow_copy_target(BDRVShadowState *s, ShadowChild *sc)
{
    return sc != s->active && !sc->degraded;
}

/* First chunk at or after @start that a shadow needs, or -1.  Locked. */
static int64_t shadow_copy_next(BDRVShadowState *s, int64_t start)
{
    int64_t best = -1;
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        int64_t chunk;

        if (!shadow_copy_target(s, sc)) {
            continue;
        }
        chunk = shadow_map_next_stale(&sc->map, start);
        if (chunk >= 0 && (best < 0 || chunk < best)) {
            best = chunk;
        }
    }
    return best;
}

/*
 * Choose the next run of chunks to copy, in disk order from where the last
 * copy ended, and the shadows that need it.  Neighbouring chunks are merged
 * up to SHADOW_COPY_MAX_BYTES.  Returns the number of chunks, 0 if there is
 * nothing to copy.  Locked.
 */
static int64_t shadow_copy_pick(BDRVShadowState *s, int64_t *chunk,
                                ShadowChild **targets, int *nb_targets)
{
    int64_t max_chunks = MAX(SHADOW_COPY_MAX_BYTES / s->chunk_size, 1);
    int64_t first, nb;
    int i;

    first = shadow_copy_next(s, s->copy_cursor);
    if (first < 0 && s->copy_cursor > 0) {
        first = shadow_copy_next(s, 0);
    }
    if (first < 0) {
        return 0;
    }

    *nb_targets = 0;
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (shadow_copy_target(s, sc) && shadow_map_is_stale(&sc->map, first)) {
            targets[(*nb_targets)++] = sc;
        }
    }

    for (nb = 1; nb < max_chunks && first + nb < s->nb_chunks; nb++) {
        bool needed = false;

        for (i = 0; i < *nb_targets && !needed; i++) {
            needed = shadow_map_is_stale(&targets[i]->map, first + nb);
        }
        if (!needed) {
            break;
        }
    }
    *chunk = first;
    return nb;
}

/*
 * Copy [@offset, @offset + @bytes) from the active child to @targets.
 * A failed target gets its error in @target_ret and is skipped from then
 * on.  Returns the error of the active child, if any.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_copy_range(BDRVShadowState *s, int64_t offset, int64_t bytes,
                  ShadowChild **targets, int *target_ret, int nb_targets)
{
    ShadowChild *src = s->active;
    int64_t end = offset + bytes;
    int64_t pos = offset;
    int i;

    while (pos < end) {
        int64_t n = MIN(end - pos, SHADOW_COPY_MAX_BYTES);
        int64_t pnum, start;
        bool zero;
        int ret;

        ret = bdrv_co_block_status_above(src->child->bs, NULL, pos, n, &pnum,
                                         NULL, NULL);
        if (ret < 0) {
            pnum = n;
            zero = false;
        } else {
            zero = ret & BDRV_BLOCK_ZERO;
        }

        if (!zero) {
            start = get_clock();
            ret = bdrv_co_pread(src->child, pos, pnum, s->copy_buf, 0);
            shadow_account(&src->stats, false, pnum, start, ret);
            if (ret < 0) {
                return ret;
            }
            zero = buffer_is_zero(s->copy_buf, pnum);
        }

        for (i = 0; i < nb_targets; i++) {
            ShadowChild *t = targets[i];

            if (target_ret[i] < 0) {
                continue;
            }
            start = get_clock();
            if (zero) {
                ret = bdrv_co_pwrite_zeroes(t->child, pos, pnum,
                                            BDRV_REQ_MAY_UNMAP);
            } else {
                ret = bdrv_co_pwrite(t->child, pos, pnum, s->copy_buf, 0);
            }
            shadow_account(&t->stats, true, pnum, start, ret);
            if (ret == 0 && !zero) {
                /* Zero ranges are not copied, only written as zeroes */
                stat64_add(&t->stats.copied_bytes, pnum);
            }
            target_ret[i] = ret;
        }
        pos += pnum;
    }
    return 0;
}

/*
 * Copy one run of stale chunks.  Returns 1 when there may be more to do,
 * 0 when the copier must stop; in that case copy_running is cleared under
 * the lock, so that shadow_copy_kick() never misses work.
 */
static int coroutine_fn GRAPH_RDLOCK shadow_copy_step(BDRVShadowState *s)
{
    g_autofree ShadowChild **targets = g_new(ShadowChild *, s->num_children);
    g_autofree int *target_ret = g_new0(int, s->num_children);
    g_autofree bool *synced = g_new0(bool, s->num_children);
    int64_t chunk = 0, nb, offset, bytes;
    int nb_targets = 0, i, ret;
    BlockReq req;

    qemu_mutex_lock(&s->lock);
    nb = shadow_copy_may_run(s) ?
         shadow_copy_pick(s, &chunk, targets, &nb_targets) : 0;
    if (nb == 0) {
        s->copy_running = false;
        qemu_mutex_unlock(&s->lock);
        return 0;
    }
    offset = chunk * s->chunk_size;
    bytes = MIN(nb * s->chunk_size, s->length - offset);
    shadow_track_begin(s, &req, offset, bytes);
    qemu_mutex_unlock(&s->lock);

    if (!s->copy_buf) {
        s->copy_buf = qemu_blockalign(s->bs, SHADOW_COPY_MAX_BYTES);
    }
    ret = shadow_copy_range(s, offset, bytes, targets, target_ret,
                            nb_targets);

    qemu_mutex_lock(&s->lock);
    for (i = 0; i < nb_targets && ret == 0; i++) {
        ShadowChild *t = targets[i];

        if (target_ret[i] == 0) {
            /* Under the range lock, no write changed these chunks since */
            shadow_map_mark_valid(&t->map, chunk, nb);
            synced[i] = shadow_map_stale_count(&t->map) == 0;
        }
    }
    reqlist_remove_req(&req);
    s->copy_cursor = chunk + nb;
    if (ret < 0) {
        s->copy_failed = true;
        s->copy_running = false;
    }
    qemu_mutex_unlock(&s->lock);

    for (i = 0; i < nb_targets; i++) {
        if (target_ret[i] < 0) {
            shadow_child_degrade(s, targets[i], "copy", target_ret[i]);
        } else if (synced[i]) {
            qapi_event_send_shadow_child_synced(
                bdrv_get_node_name(s->bs),
                bdrv_get_node_name(targets[i]->child->bs));
        }
    }
    if (ret < 0) {
        warn_report("shadow: node '%s': reading the active child '%s' for "
                    "the background copy failed: %s; the copy stops until "
                    "the next reopen", bdrv_get_node_name(s->bs),
                    bdrv_get_node_name(s->active->child->bs), strerror(-ret));
        return 0;
    }
    return 1;
}

static void coroutine_fn shadow_copy_entry(void *opaque)
{
    BDRVShadowState *s = opaque;
    BlockDriverState *bs = s->bs;
    int ret;

    do {
        bdrv_graph_co_rdlock();
        ret = shadow_copy_step(s);
        bdrv_graph_co_rdunlock();
    } while (ret > 0);

    bdrv_dec_in_flight(bs);
}

/* Start the copier if a shadow needs data and it may run */
void shadow_copy_kick(BDRVShadowState *s)
{
    bool start;

    qemu_mutex_lock(&s->lock);
    start = !s->copy_running && shadow_copy_may_run(s) &&
            shadow_copy_next(s, 0) >= 0;
    if (start) {
        s->copy_running = true;
    }
    qemu_mutex_unlock(&s->lock);

    if (start) {
        bdrv_inc_in_flight(s->bs);
        aio_co_schedule(bdrv_get_aio_context(s->bs),
                        qemu_coroutine_create(shadow_copy_entry, s));
    }
}
