/*
 * Shadow block driver: background copy (pre-warm, hydration) and copy-up
 *
 * Up to SHADOW_COPY_WORKERS coroutines copy stale chunks from the active
 * child to the shadows.  After an instant switch they first hydrate the
 * new active child: the chunks it lacks are copied from a child that
 * holds them, in disk order, and guest requests copy up the chunks they
 * need at once.  Then they take, in this order: urgent regions (chunks
 * the guest read, with copy-on-read, and the regions ahead of sequential
 * streams), then with prewarm=hot-first the hottest regions, then the
 * rest in disk order.  Neighbouring stale chunks are merged into one
 * copy.  Unallocated and zero ranges are written as zeroes that may
 * unmap, so sparse images stay sparse.
 *
 * Every copy holds the range lock over its chunks, and only
 * shadow_state_copied() decides whether its target holds them afterwards.
 *
 * The copy yields to the guest: while guest requests are in flight, one
 * worker copies and takes at most a sixth of the time.  prewarm-speed
 * limits the data it copies.
 *
 * A worker counts as a request in flight (bdrv_inc_in_flight()) all the
 * time but one: while it waits for the graph lock.  So drain, reopen and
 * close wait for the run it is copying and for its sleep, which drain cuts
 * short; the worker sees the drained section and stops, and
 * shadow_drain_end() starts workers again.  It must not count while it
 * waits for the graph lock, because a graph writer may drain the node: a
 * drained section that ends inside bdrv_graph_wrlock() starts a worker,
 * and the writer's next drain would wait for a worker that waits for the
 * writer.  Once it has the lock, shadow_copy_worker_enter() counts it
 * again and looks whether the node is still open, not drained and in the
 * worker's AioContext; the ShadowCopyWorker outlives the node for this.
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
#include "qemu/host-utils.h"
#include "qemu/memalign.h"
#include "qemu/timer.h"
#include "shadow.h"
#include "trace.h"

/*
 * One background copy coroutine.  Shared by the coroutine and, while it is
 * on s->copy_worker_list, by the node: @refcnt counts both.
 */
struct ShadowCopyWorker {
    int refcnt;                 /* atomic */
    int index;                  /* bit in s->copy_workers */
    QemuSpin lock;
    /* The node, or NULL once the worker left it.  Protected by @lock. */
    BDRVShadowState *s;
    /* On s->copy_worker_list; protected by s->lock */
    QLIST_ENTRY(ShadowCopyWorker) next;
};

/* Whether the active child lacks chunks, after an instant switch */
static bool shadow_hydrating(BDRVShadowState *s)
{
    /* Drained sections may end while the node is being opened */
    return s->active && !qatomic_read(&s->active_complete);
}

/*
 * Whether stale chunks are being copied, drained sections aside.
 * Hydration goes on even with prewarm=off: it completes a switch.
 */
bool shadow_copy_enabled(BDRVShadowState *s)
{
    return (s->prewarm != SHADOW_PREWARM_OFF || shadow_hydrating(s)) &&
           !s->copy_failed && s->writable;
}

bool shadow_copy_may_run(BDRVShadowState *s)
{
    return shadow_copy_enabled(s) && !qatomic_read(&s->bs->quiesce_counter);
}

static bool shadow_copy_target(BDRVShadowState *s, ShadowChild *sc)
{
    return sc != s->active && !sc->degraded;
}

/* Whether chunk @c needs copying and no worker has it.  Locked. */
static bool shadow_copy_wanted(BDRVShadowState *s, int64_t c)
{
    int i;

    if (hbitmap_get(s->copying, c)) {
        return false;
    }
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (shadow_copy_target(s, sc) && hbitmap_get(sc->map.stale, c)) {
            return true;
        }
    }
    return false;
}

/* First wanted chunk in [@start, @end), or -1.  Locked. */
static int64_t shadow_copy_next(BDRVShadowState *s, int64_t start,
                                int64_t end)
{
    while (start < end) {
        int64_t best = -1;
        int i;

        for (i = 0; i < s->num_children; i++) {
            ShadowChild *sc = s->children[i];
            int64_t c;

            if (!shadow_copy_target(s, sc)) {
                continue;
            }
            c = hbitmap_next_dirty(sc->map.stale, start, end - start);
            if (c >= 0 && (best < 0 || c < best)) {
                best = c;
            }
        }
        if (best < 0 || !hbitmap_get(s->copying, best)) {
            return best;
        }
        /* A worker has it: look further */
        start = best + 1;
    }
    return -1;
}

static bool shadow_copy_region_wanted(void *opaque, int64_t region)
{
    BDRVShadowState *s = opaque;
    int64_t per_region = s->heat.region_size / s->chunk_size;
    int64_t first = region * per_region;

    return first < s->nb_chunks &&
           shadow_copy_next(s, first,
                            MIN(first + per_region, s->nb_chunks)) >= 0;
}

/*
 * The largest run a worker copies at once: at most SHADOW_COPY_RUN_NS on
 * the slowest target as measured so far (a single chunk until measured),
 * and a tenth of a second's worth under a speed limit.  Locked.
 */
static int64_t shadow_copy_max_chunks(BDRVShadowState *s)
{
    int64_t bytes = SHADOW_COPY_MAX_BYTES;
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (shadow_copy_target(s, sc)) {
            bytes = MIN(bytes, muldiv64(sc->copy_bps, SHADOW_COPY_RUN_NS,
                                        NANOSECONDS_PER_SECOND));
        }
    }
    if (s->prewarm_speed) {
        bytes = MIN(bytes, s->prewarm_speed / 10);
    }
    return MAX(bytes / s->chunk_size, 1);
}

/* A throughput sample of a copy write to @t (weight 1/8) */
static void shadow_note_copy_rate(ShadowChild *t, int64_t bytes, int64_t ns)
{
    int64_t bps = muldiv64(bytes, NANOSECONDS_PER_SECOND, MAX(ns, 1));
    int64_t avg = qatomic_read(&t->copy_bps);

    qatomic_set(&t->copy_bps, avg ? avg - avg / 8 + bps / 8 : bps);
}

/*
 * The next run of chunks the active child lacks and no worker copies, all
 * held by one child, which is returned in *@src.  Returns the number of
 * chunks, 0 if there is none.  Locked.
 */
static int64_t shadow_hydrate_pick(BDRVShadowState *s, int64_t max,
                                   int64_t *chunk, ShadowChild **src)
{
    HBitmap *stale = s->active->map.stale;
    int64_t c = s->hydrate_cursor, nb, busy;
    bool wrapped = false;

    for (;;) {
        c = c < s->nb_chunks ? hbitmap_next_dirty(stale, c, s->nb_chunks - c)
                             : -1;
        if (c < 0) {
            if (wrapped) {
                return 0;
            }
            wrapped = true;
            c = 0;
            continue;
        }
        *src = hbitmap_get(s->copying, c) ? NULL
                                          : shadow_state_holder(s, c,
                                                                s->active);
        if (*src) {
            break;
        }
        c++;
    }
    nb = shadow_state_run(s, c, MIN(c + max, s->nb_chunks), *src);
    busy = hbitmap_next_dirty(s->copying, c, nb);
    if (busy > c) {
        nb = busy - c;
    }
    s->hydrate_cursor = c + nb;
    hbitmap_set(s->copying, c, nb);
    *chunk = c;
    return nb;
}

/*
 * Choose the next run of wanted chunks and mark it as being copied.
 * Returns the number of chunks, 0 if there is nothing to copy.  While the
 * active child lacks chunks, only those are copied, with their source in
 * *@src; otherwise *@src is the active child.  Locked.
 */
static int64_t shadow_copy_pick(BDRVShadowState *s, int64_t *chunk,
                                ShadowChild **src)
{
    int64_t max = shadow_copy_max_chunks(s);
    int64_t first = -1, end = s->nb_chunks, nb;
    bool hot = s->prewarm == SHADOW_PREWARM_HOT_FIRST;

    *src = s->active;
    if (shadow_hydrating(s)) {
        return shadow_hydrate_pick(s, max, chunk, src);
    }
    if (s->prewarm == SHADOW_PREWARM_OFF) {
        return 0;
    }

    if (hot || s->copy_on_read) {
        /* Finish the region in hand before taking the next one */
        int64_t r = s->copy_region;

        if (r < 0 || !shadow_copy_region_wanted(s, r)) {
            r = shadow_heat_pop(&s->heat, !hot, shadow_copy_region_wanted, s);
            s->copy_region = r;
        }
        if (r >= 0) {
            int64_t per_region = s->heat.region_size / s->chunk_size;

            end = MIN((r + 1) * per_region, s->nb_chunks);
            first = shadow_copy_next(s, r * per_region, end);
        }
    }
    if (first < 0) {
        /* Cold data, in disk order from where the last run ended */
        end = s->nb_chunks;
        first = shadow_copy_next(s, MIN(s->copy_cursor, end), end);
        if (first < 0 && s->copy_cursor > 0) {
            first = shadow_copy_next(s, 0, end);
        }
        if (first < 0) {
            return 0;
        }
        s->copy_cursor = first;
    }

    for (nb = 1; nb < max && first + nb < end; nb++) {
        if (!shadow_copy_wanted(s, first + nb)) {
            break;
        }
    }
    if (end == s->nb_chunks || nb < max) {
        s->copy_cursor = MAX(s->copy_cursor, first + nb);
    }
    hbitmap_set(s->copying, first, nb);
    *chunk = first;
    return nb;
}

/*
 * Whether @t reads as zeroes in [@offset, @offset + @bytes) already.  Its
 * chunks count as valid only after a flush of @t that covers them (D1),
 * which makes durable whatever made them zero too: QEMU's first flush of
 * a node after its open is a real one (patches/0005), so a hole left by a
 * process killed before its flush cannot pass for durable.
 */
static bool coroutine_fn GRAPH_RDLOCK
shadow_reads_zero(ShadowChild *t, int64_t offset, int64_t bytes)
{
    int64_t pnum;
    int ret = bdrv_co_block_status_above(t->child->bs, NULL, offset, bytes,
                                         &pnum, NULL, NULL);

    return ret >= 0 && (ret & BDRV_BLOCK_ZERO) && pnum >= bytes;
}

/*
 * With copy-compare: whether @t already holds the piece at @pos that the
 * copy read into @buf (zeroes if @zero), read into @cmp_buf.  A target
 * that reads zeroes there without I/O differs from data at once; one that
 * fails to read is written, and its write tells.  Like a zero piece on a
 * target that reads zeroes, a piece found identical counts once a flush
 * of @t covers it (D1), which makes durable what another process may have
 * left in the page cache: the first flush after open is never skipped.
 */
static bool coroutine_fn GRAPH_RDLOCK
shadow_copy_same(ShadowChild *t, int64_t pos, int64_t bytes, bool zero,
                 const void *buf, void *cmp_buf)
{
    int64_t start;
    int ret;

    if (shadow_reads_zero(t, pos, bytes)) {
        return zero;
    }
    start = get_clock();
    ret = bdrv_co_pread(t->child, pos, bytes, cmp_buf, 0);
    shadow_account(&t->stats, false, bytes, get_clock() - start, ret);
    if (ret < 0) {
        return false;
    }
    return zero ? buffer_is_zero(cmp_buf, bytes)
                : memcmp(buf, cmp_buf, bytes) == 0;
}

/*
 * Copy [@offset, @offset + @bytes) from @src to @targets, in pieces of at
 * most SHADOW_COPY_PIECE bytes.  A failed target gets its error in
 * @target_ret and is skipped from then on.  With @cmp_buf (copy-compare),
 * a piece a target already holds is not written.  With @yield_to_drain,
 * stop after a piece when a drained section begins, so that it waits for
 * one piece at most (a switch, a migration's downtime); *@done says how
 * much was copied.  Returns the error of reading @src, if any.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_copy_range(BDRVShadowState *s, ShadowChild *src, void *buf,
                  void *cmp_buf, int64_t offset, int64_t bytes,
                  ShadowChild **targets, int *target_ret, int nb_targets,
                  int64_t *data_bytes, bool yield_to_drain, int64_t *done)
{
    int64_t end = offset + bytes;
    int64_t pos = offset;
    int i;

    *done = 0;
    while (pos < end) {
        int64_t n = MIN(end - pos, SHADOW_COPY_PIECE);
        int64_t pnum, start, ns;
        bool zero;
        int ret;

        /* Data a piece at a time; zeroes as far as they go in the run */
        ret = bdrv_co_block_status_above(src->child->bs, NULL, pos, end - pos,
                                         &pnum, NULL, NULL);
        if (ret < 0 || pnum <= 0) {
            pnum = n;
            zero = false;
        } else {
            zero = ret & BDRV_BLOCK_ZERO;
            if (!zero || cmp_buf) {
                /* a compare reads the target into @cmp_buf */
                pnum = MIN(pnum, n);
            }
        }

        if (!zero) {
            start = get_clock();
            ret = bdrv_co_pread(src->child, pos, pnum, buf, 0);
            shadow_account(&src->stats, false, pnum, get_clock() - start,
                           ret);
            if (ret < 0) {
                return ret;
            }
            zero = buffer_is_zero(buf, pnum);
        }

        for (i = 0; i < nb_targets; i++) {
            ShadowChild *t = targets[i];

            if (target_ret[i] < 0) {
                continue;
            }
            start = get_clock();
            /*
             * Nothing to write where the target holds the piece already:
             * a compare says so, or, without one, a fresh target that
             * reads zeroes (as mirror skips on one)
             */
            if (cmp_buf ? shadow_copy_same(t, pos, pnum, zero, buf, cmp_buf)
                        : zero && shadow_reads_zero(t, pos, pnum)) {
                if (cmp_buf) {
                    trace_shadow_copy_same(s, shadow_child_name(t), pos,
                                           pnum);
                    shadow_counters_add(&t->stats,
                                        SHADOW_STAT_COMPARED_BYTES, pnum);
                }
                /* the target advanced at the speed of the check */
                shadow_note_copy_rate(t, pnum, get_clock() - start);
                target_ret[i] = 0;
                continue;
            }
            if (zero) {
                ret = bdrv_co_pwrite_zeroes(t->child, pos, pnum,
                                            BDRV_REQ_MAY_UNMAP);
            } else {
                ret = bdrv_co_pwrite(t->child, pos, pnum, buf, 0);
            }
            ns = get_clock() - start;
            shadow_account(&t->stats, true, pnum, ns, ret);
            if (ret == 0) {
                shadow_note_copy_rate(t, pnum, ns);
            }
            if (ret == 0 && !zero) {
                /* Zero ranges are not copied, only written as zeroes */
                shadow_counters_add(&t->stats, SHADOW_STAT_COPIED_BYTES, pnum);
            }
            target_ret[i] = ret;
        }
        if (!zero) {
            *data_bytes += pnum;
        }
        pos += pnum;
        *done = pos - offset;
        if (yield_to_drain && qatomic_read(&s->bs->quiesce_counter)) {
            break;
        }
    }
    return 0;
}

/*
 * The worker stops: counted out under the lock, so no kick is missed.
 * @failed: on an error of the active child, which the copy cannot go
 * around; shadow_copy_retry() tries again later.
 */
static int shadow_copy_stop(BDRVShadowState *s, int index, bool failed)
{
    qemu_spin_lock(&s->lock);
    s->copy_workers &= ~(1u << index);
    if (failed && !s->copy_failed) {
        s->copy_failed = true;
        s->copy_retry_delay_ns = s->copy_retry_delay_ns ?
            MIN(2 * s->copy_retry_delay_ns, SHADOW_COPY_RETRY_MAX_NS) :
            SHADOW_COPY_RETRY_NS;
        s->copy_retry_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                           s->copy_retry_delay_ns;
    }
    qemu_spin_unlock(&s->lock);
    return 0;
}

/*
 * From the periodic timer, on a writable node outside drained sections:
 * a copy the active child stopped starts again once its delay is over.
 * An active child that still fails stops it again, for twice as long;
 * one that reads makes the next stop wait the first delay again.
 */
void shadow_copy_retry(BDRVShadowState *s, int64_t now)
{
    bool retry;

    qemu_spin_lock(&s->lock);
    retry = s->copy_failed && now >= s->copy_retry_ns;
    if (retry) {
        s->copy_failed = false;
    }
    qemu_spin_unlock(&s->lock);
    if (retry) {
        trace_shadow_copy_retry(s, s->copy_retry_delay_ns);
        shadow_copy_kick(s);
    }
}

/*
 * Copy one run of stale chunks.  Returns 1 when there may be more to do,
 * 0 when the worker must stop; in that case it is counted out under the
 * lock, so that shadow_copy_kick() never misses work.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_copy_step(BDRVShadowState *s, int index, void *buf,
                 int64_t *data_bytes)
{
    g_autofree ShadowChild **targets = NULL;
    g_autofree int *target_ret = NULL;
    int64_t chunk = 0, nb, offset, bytes, c, done, done_chunks;
    int nb_targets = 0, i, ret;
    ShadowChild *src = NULL;
    BlockReq req;

    if (shadow_state_begin_writing(s) < 0) {
        /* The metadata cannot record copies: no copy until a reopen */
        return shadow_copy_stop(s, index, true);
    }

    qemu_spin_lock(&s->lock);
    /* Under a speed limit one worker copies; the others stop here */
    nb = shadow_copy_may_run(s) && !(index && s->prewarm_speed) ?
         shadow_copy_pick(s, &chunk, &src) : 0;
    if (nb == 0) {
        if (shadow_copy_may_run(s) && !index &&
            s->prewarm != SHADOW_PREWARM_OFF) {
            /* Nothing left to copy: guest requests need not feed us */
            qatomic_set(&s->copy_pending, false);
        }
        s->copy_workers &= ~(1u << index);
        qemu_spin_unlock(&s->lock);
        return 0;
    }
    targets = g_new(ShadowChild *, s->num_children);
    target_ret = g_new0(int, s->num_children);
    if (src != s->active) {
        targets[nb_targets++] = s->active;
    }
    for (i = 0; i < s->num_children && src == s->active; i++) {
        ShadowChild *sc = s->children[i];

        if (!shadow_copy_target(s, sc)) {
            continue;
        }
        for (c = chunk; c < chunk + nb; c++) {
            if (hbitmap_get(sc->map.stale, c)) {
                targets[nb_targets++] = sc;
                break;
            }
        }
    }
    qemu_spin_unlock(&s->lock);

    offset = chunk * s->chunk_size;
    bytes = shadow_chunk_bytes(s, chunk, chunk + nb);
    shadow_range_lock(s, &req, offset, bytes);
    qemu_spin_lock(&s->lock);
    if (src != s->active &&
        (shadow_state_holds(s->active, chunk, chunk + nb) ||
         !shadow_state_holds(src, chunk, chunk + nb))) {
        /*
         * A guest request came first and the active child holds some of
         * these chunks now, or the source lost some.  Pick again.
         */
        hbitmap_reset(s->copying, chunk, nb);
        qemu_spin_unlock(&s->lock);
        shadow_range_unlock(s, &req);
        return 1;
    }
    qemu_spin_unlock(&s->lock);

    trace_shadow_copy_run(s, shadow_child_name(src), offset, bytes,
                          nb_targets);
    ret = shadow_copy_range(s, src, buf,
                            s->copy_compare ?
                            (uint8_t *)buf + SHADOW_COPY_MAX_BYTES : NULL,
                            offset, bytes, targets, target_ret, nb_targets,
                            data_bytes, true, &done);
    /* A drain may have cut the run short: what was copied whole counts */
    done_chunks = offset + done >= s->length ? nb : done >> s->chunk_bits;

    for (i = 0; i < nb_targets && done_chunks; i++) {
        ShadowChild *t = targets[i];
        bool complete;

        if (ret < 0 || target_ret[i] < 0) {
            continue;
        }
        if (shadow_state_copied(s, src, t, chunk, done_chunks, &complete) &&
            complete) {
            qapi_event_send_shadow_child_synced(bdrv_get_node_name(s->bs),
                                                shadow_child_name(t));
        }
    }
    qemu_spin_lock(&s->lock);
    hbitmap_reset(s->copying, chunk, nb);
    if (ret >= 0 && src == s->active) {
        /* The active child reads again: a later stop starts over */
        s->copy_retry_delay_ns = 0;
    }
    qemu_spin_unlock(&s->lock);
    shadow_range_unlock(s, &req);

    if (ret < 0 && src != s->active) {
        /* Another child may hold these chunks: go on without this one */
        shadow_state_degrade(s, src, SHADOW_OPERATION_COPY, ret);
        return 1;
    }
    if (ret < 0) {
        warn_report("shadow: node '%s': reading the active child '%s' for "
                    "the background copy failed: %s; the copy stops, and "
                    "starts again later or at the next reopen",
                    bdrv_get_node_name(s->bs), shadow_child_name(s->active),
                    strerror(-ret));
        return shadow_copy_stop(s, index, true);
    }
    for (i = 0; i < nb_targets; i++) {
        if (target_ret[i] < 0 && targets[i] == s->active) {
            warn_report("shadow: node '%s': copying up to the active child "
                        "'%s' failed: %s; the copy stops, and starts again "
                        "later or at the next reopen",
                        bdrv_get_node_name(s->bs),
                        shadow_child_name(targets[i]),
                        strerror(-target_ret[i]));
            return shadow_copy_stop(s, index, true);
        } else if (target_ret[i] < 0) {
            shadow_state_degrade(s, targets[i], SHADOW_OPERATION_COPY,
                                 target_ret[i]);
        }
    }
    return 1;
}

/*
 * Whether the guest has requests in flight or began one in the last
 * SHADOW_GUEST_BUSY_NS.  Guest requests read no clock: the copy notes when
 * it first sees the count of begun requests change.
 */
static bool shadow_guest_busy(BDRVShadowState *s)
{
    int64_t reqs = shadow_counters_get(&s->stats, SHADOW_STAT_GUEST_REQS);
    int64_t now = get_clock();

    if (reqs != qatomic_read(&s->guest_reqs_seen)) {
        qatomic_set(&s->guest_reqs_seen, reqs);
        qatomic_set(&s->guest_seen_ns, now);
    }
    return shadow_counters_get(&s->stats, SHADOW_STAT_GUEST_INFLIGHT) > 0 ||
           now - qatomic_read(&s->guest_seen_ns) < SHADOW_GUEST_BUSY_NS;
}

/* How long the first worker waits before its next run */
static int64_t shadow_copy_delay(BDRVShadowState *s, int64_t data_bytes,
                                 int64_t run_ns)
{
    int64_t delay = 0;

    if (s->prewarm_speed) {
        delay = ratelimit_calculate_delay(&s->copy_limit, data_bytes);
    }
    if (shadow_guest_busy(s)) {
        /* A sixth of the time at most: the guest goes first */
        delay = MAX(delay, 5 * run_ns);
    }
    return delay;
}

/*
 * Let the rest of the AioContext run, then wait @delay_ns unless a drained
 * section begins.  A step whose reads and writes complete without yielding
 * (a null-co or zero-backed child) would otherwise keep the event loop from
 * ever running; and a drain that begins in another thread between our check
 * of quiesce_counter and our sleep finds no sleeper to wake, so the sleep is
 * cut in slices that each look again.
 */
static void coroutine_fn shadow_copy_pause(BDRVShadowState *s, int index,
                                           int64_t delay_ns)
{
    int64_t deadline = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + delay_ns;

    aio_co_schedule(qemu_get_current_aio_context(), qemu_coroutine_self());
    qemu_coroutine_yield();

    while (!qatomic_read(&s->bs->quiesce_counter)) {
        int64_t left = deadline - qemu_clock_get_ns(QEMU_CLOCK_REALTIME);

        if (left <= 0) {
            break;
        }
        qemu_co_sleep_ns_wakeable(&s->copy_sleep[index], QEMU_CLOCK_REALTIME,
                                  MIN(left, SHADOW_COPY_SLEEP_SLICE_NS));
    }
}

static void shadow_copy_worker_unref(ShadowCopyWorker *w)
{
    if (qatomic_fetch_dec(&w->refcnt) == 1) {
        g_free(w);
    }
}

/*
 * The worker leaves the node: off the list, and with @stopped off
 * s->copy_workers too.  Called with w->lock held and w->s valid.  Returns
 * whether the caller must drop the list's reference.
 */
static bool shadow_copy_worker_leave_locked(BDRVShadowState *s,
                                            ShadowCopyWorker *w,
                                            bool stopped)
{
    bool listed;

    qemu_spin_lock(&s->lock);
    if (stopped) {
        s->copy_workers &= ~(1u << w->index);
    }
    listed = QLIST_IS_INSERTED(w, next);
    QLIST_SAFE_REMOVE(w, next);
    qemu_spin_unlock(&s->lock);
    w->s = NULL;
    return listed;
}

/*
 * The worker has the graph lock and wants to copy: count it in flight
 * again and return its node, or NULL if it must end.  It ends when the node
 * was closed meanwhile, when a drained section began (drain counted
 * quiesce_counter before it looked at in_flight, we count in_flight before
 * we look at quiesce_counter: one of us sees the other), or when the node
 * moved to another AioContext (a new worker starts there).
 */
static BDRVShadowState *shadow_copy_worker_enter(ShadowCopyWorker *w)
{
    BDRVShadowState *s;
    bool unref = false;

    qemu_spin_lock(&w->lock);
    s = w->s;
    if (s) {
        BlockDriverState *bs = s->bs;
        bool drained, moved;

        bdrv_inc_in_flight(bs);
        /* Pairs with drain's quiesce_counter++ before it reads in_flight */
        smp_mb();
        drained = qatomic_read(&bs->quiesce_counter);
        moved = bdrv_get_aio_context(bs) != qemu_get_current_aio_context();
        if (drained || moved) {
            unref = shadow_copy_worker_leave_locked(s, w, true);
            if (!drained) {
                shadow_copy_kick(s);
            }
            bdrv_dec_in_flight(bs);
            s = NULL;
        }
    }
    qemu_spin_unlock(&w->lock);
    if (unref) {
        shadow_copy_worker_unref(w);
    }
    return s;
}

/* The worker is done: it was counted in flight and w->s is valid */
static void shadow_copy_worker_exit(ShadowCopyWorker *w)
{
    BDRVShadowState *s = w->s;
    BlockDriverState *bs = s->bs;
    bool unref;

    qemu_spin_lock(&w->lock);
    /* shadow_copy_step() counted it out of s->copy_workers already */
    unref = shadow_copy_worker_leave_locked(s, w, false);
    bdrv_dec_in_flight(bs);
    qemu_spin_unlock(&w->lock);
    if (unref) {
        shadow_copy_worker_unref(w);
    }
}

static void coroutine_fn shadow_copy_entry(void *opaque)
{
    ShadowCopyWorker *w = opaque;
    BDRVShadowState *s = w->s;
    /* The copy's buffer, and copy-compare's after it */
    void *buf = qemu_blockalign(s->bs, 2 * SHADOW_COPY_MAX_BYTES);
    int ret;

    /* Started by shadow_copy_kick(), counted in flight */
    for (;;) {
        int64_t start = get_clock();
        int64_t data_bytes = 0;
        int64_t delay;

        if (w->index > 0 && shadow_guest_busy(s) && shadow_copy_may_run(s)) {
            /* While the guest is busy only the first worker copies */
            qemu_co_sleep_ns_wakeable(&s->copy_sleep[w->index],
                                      QEMU_CLOCK_REALTIME,
                                      SHADOW_GUEST_BUSY_NS);
            continue;
        }

        /* Not counted while we wait for the lock: s may go away */
        bdrv_dec_in_flight(s->bs);
        bdrv_graph_co_rdlock();
        s = shadow_copy_worker_enter(w);
        if (!s) {
            bdrv_graph_co_rdunlock();
            break;
        }
        ret = shadow_copy_step(s, w->index, buf, &data_bytes);
        bdrv_graph_co_rdunlock();
        if (ret == 0) {
            shadow_copy_worker_exit(w);
            break;
        }

        delay = w->index == 0 ?
                shadow_copy_delay(s, data_bytes, get_clock() - start) : 0;
        shadow_copy_pause(s, w->index, delay);
    }

    qemu_vfree(buf);
    shadow_copy_worker_unref(w);
}

/*
 * The node closes, drained: no worker copies, but some may wait for the
 * graph lock.  They find no node when they get it, and end.
 */
void shadow_copy_close(BDRVShadowState *s)
{
    ShadowCopyWorker *w;

    for (;;) {
        qemu_spin_lock(&s->lock);
        w = QLIST_FIRST(&s->copy_worker_list);
        if (w) {
            QLIST_SAFE_REMOVE(w, next);
            s->copy_workers &= ~(1u << w->index);
        }
        qemu_spin_unlock(&s->lock);
        if (!w) {
            break;
        }
        qemu_spin_lock(&w->lock);
        w->s = NULL;
        qemu_spin_unlock(&w->lock);
        shadow_copy_worker_unref(w);
    }
}

/* Wake sleeping workers, so that a drained section need not wait */
void shadow_copy_wake(BDRVShadowState *s)
{
    int i;

    for (i = 0; i < SHADOW_COPY_WORKERS; i++) {
        qemu_co_sleep_wake(&s->copy_sleep[i]);
    }
}

void shadow_copy_set_speed(BDRVShadowState *s, uint64_t speed)
{
    s->prewarm_speed = speed;
    ratelimit_set_speed(&s->copy_limit, speed, 100 * SCALE_MS);
}

/* Start copy workers if a child needs data and copying may run */
void shadow_copy_kick(BDRVShadowState *s)
{
    /* With a speed limit, one worker keeps the limit exact */
    int want = s->prewarm_speed ? 1 : SHADOW_COPY_WORKERS;
    unsigned start = 0;
    int i;

    qemu_spin_lock(&s->lock);
    if (shadow_copy_may_run(s) &&
        (shadow_hydrating(s) ||
         (s->prewarm != SHADOW_PREWARM_OFF &&
          shadow_copy_next(s, 0, s->nb_chunks) >= 0))) {
        for (i = 0; i < want; i++) {
            if (!(s->copy_workers & (1u << i))) {
                start |= 1u << i;
            }
        }
        s->copy_workers |= start;
    }
    qemu_spin_unlock(&s->lock);

    for (i = 0; i < SHADOW_COPY_WORKERS; i++) {
        ShadowCopyWorker *w;

        if (!(start & (1u << i))) {
            continue;
        }
        w = g_new0(ShadowCopyWorker, 1);
        w->refcnt = 2;
        w->index = i;
        w->s = s;
        qemu_spin_init(&w->lock);
        qemu_spin_lock(&s->lock);
        QLIST_INSERT_HEAD(&s->copy_worker_list, w, next);
        qemu_spin_unlock(&s->lock);
        bdrv_inc_in_flight(s->bs);
        aio_co_schedule(bdrv_get_aio_context(s->bs),
                        qemu_coroutine_create(shadow_copy_entry, w));
    }
}

/*
 * Copy up to the active child the chunks of [@first, @end) it lacks,
 * from children that hold them, with the range of those chunks locked by
 * the caller.  Returns a negative error if some chunk could not be had.
 */
int coroutine_fn shadow_copy_up_locked(BDRVShadowState *s, int64_t first,
                                       int64_t end)
{
    ShadowChild *active = s->active;
    void *buf = NULL;
    int64_t c, nb, data_bytes = 0, done;
    bool synced = false;
    int ret = 0;

    ret = shadow_state_begin_writing(s);
    for (c = first; c < end && ret == 0;) {
        ShadowChild *src;
        int target_ret = 0;
        int64_t offset;

        qemu_spin_lock(&s->lock);
        c = hbitmap_next_dirty(active->map.stale, c, end - c);
        src = c < 0 ? NULL : shadow_state_holder(s, c, active);
        nb = src ? shadow_state_run(s, c, end, src) : 0;
        qemu_spin_unlock(&s->lock);
        if (c < 0) {
            break;
        }
        if (!src) {
            /* I1 says this cannot happen; fail the request, not QEMU */
            ret = -EIO;
            break;
        }

        offset = c * s->chunk_size;
        buf = buf ?: qemu_blockalign(s->bs, SHADOW_COPY_MAX_BYTES);
        trace_shadow_copy_up(s, shadow_child_name(src), offset,
                             shadow_chunk_bytes(s, c, c + nb));
        ret = shadow_copy_range(s, src, buf, NULL, offset,
                                shadow_chunk_bytes(s, c, c + nb),
                                &active, &target_ret, 1, &data_bytes, false,
                                &done);
        if (ret < 0) {
            /* Try another child that holds these chunks */
            if (!src->degraded) {
                shadow_state_degrade(s, src, SHADOW_OPERATION_COPY, ret);
                ret = 0;
                continue;
            }
            break;
        }
        if (target_ret < 0) {
            ret = target_ret;
            break;
        }
        if (shadow_state_copied(s, src, active, c, nb, &synced)) {
            c += nb;
        }
    }
    qemu_vfree(buf);
    if (ret == 0 && synced) {
        qapi_event_send_shadow_child_synced(bdrv_get_node_name(s->bs),
                                            shadow_child_name(active));
    }
    return ret;
}

int coroutine_fn shadow_copy_up(BDRVShadowState *s, int64_t first,
                                int64_t end)
{
    BlockReq req;
    int ret;

    shadow_range_lock(s, &req, first * s->chunk_size,
                      shadow_chunk_bytes(s, first, end));
    ret = shadow_copy_up_locked(s, first, end);
    shadow_range_unlock(s, &req);
    return ret;
}
