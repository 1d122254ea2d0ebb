/*
 * Shadow block driver: which regions to pre-warm first
 *
 * Guest accesses are counted per region (SHADOW_HEAT_REGION bytes, or one
 * chunk when chunks are larger, or more on very large disks).  As in
 * dm-cache's smq policy, a region's count places it on one of
 * SHADOW_HEAT_LEVELS queues (level = 1 + log2 of the count), the copier
 * takes regions from the hottest level first, and every
 * SHADOW_HEAT_DECAY_NS all counts are halved so that old heat fades.
 * Queues are not reordered on decay: a region found on a level above its
 * current one is moved down when it is taken.
 *
 * One more queue, above all levels, holds urgent regions: chunks the guest
 * read (copy-on-read) and the regions just ahead of a sequential stream.
 *
 * Counting is on every guest request's path, so it takes no lock and no
 * atomic read-modify-write: a count is a plain increment, and a region's
 * level changes only when its count reaches a power of two, which is when
 * the caller takes BDRVShadowState.lock to queue it (shadow_heat_queue()).
 * The queues, the streams and @queued are protected by that lock.  Decay
 * runs from the periodic timer, off the request path.  An increment that
 * races with decay or with one in another thread may be lost, which only
 * makes heat a little cooler.  A count array that
 * the disk outgrew is kept until the node closes, since a request may
 * still be counting in it.
 *
 * Memory is bounded: five bytes per region, at most
 * SHADOW_HEAT_MAX_REGIONS regions, and SHADOW_HEAT_QUEUE_MAX entries per
 * queue, the oldest dropped first.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "qemu/host-utils.h"
#include "qemu/timer.h"
#include "shadow.h"

#define SHADOW_HEAT_URGENT    SHADOW_HEAT_LEVELS
#define SHADOW_STREAM_MIN     4     /* sequential requests before a stream */
#define SHADOW_STREAM_AHEAD   4     /* regions copied ahead of a stream */

static int shadow_heat_level(uint32_t count)
{
    return count ? MIN(SHADOW_HEAT_LEVELS, 32 - clz32(count)) : 0;
}

/*
 * Regions are SHADOW_HEAT_REGION bytes, at least a chunk, and large
 * enough that a disk has at most SHADOW_HEAT_MAX_REGIONS of them
 */
void shadow_heat_init(ShadowHeat *h, int64_t length, int64_t chunk_size)
{
    memset(h, 0, sizeof(*h));
    h->region_size = MAX(SHADOW_HEAT_REGION, chunk_size);
    h->region_size = MAX(h->region_size,
                         pow2ceil(DIV_ROUND_UP(length,
                                               SHADOW_HEAT_MAX_REGIONS)));
    h->region_bits = ctz64(h->region_size);
    h->nb_regions = DIV_ROUND_UP(length, h->region_size);
    h->count = g_new0(uint32_t, h->nb_regions);
    h->queued = g_new0(uint8_t, h->nb_regions);
    h->last_decay_ns = get_clock();
}

void shadow_heat_destroy(ShadowHeat *h)
{
    int i;

    for (i = 0; i <= SHADOW_HEAT_URGENT; i++) {
        g_free(h->queue[i].ring);
    }
    g_free(h->count);
    g_free(h->queued);
    g_slist_free_full(h->retired, g_free);
    memset(h, 0, sizeof(*h));
}

/*
 * The disk grew to @length bytes; history is kept if regions suffice.
 * Locked.
 */
void shadow_heat_resize(ShadowHeat *h, int64_t length)
{
    int64_t nb = DIV_ROUND_UP(length, h->region_size);
    uint32_t *count;

    if (nb > SHADOW_HEAT_MAX_REGIONS) {
        /* Start over with larger regions; requests may count meanwhile */
        ShadowHeat fresh;
        int i;

        shadow_heat_init(&fresh, length, h->region_size);
        for (i = 0; i <= SHADOW_HEAT_URGENT; i++) {
            g_free(h->queue[i].ring);
        }
        g_free(h->queued);
        fresh.retired = g_slist_prepend(h->retired, h->count);
        *h = fresh;
        return;
    }
    count = g_new0(uint32_t, nb);
    memcpy(count, h->count, h->nb_regions * sizeof(*count));
    h->retired = g_slist_prepend(h->retired, h->count);
    h->queued = g_renew(uint8_t, h->queued, nb);
    memset(h->queued + h->nb_regions, 0, nb - h->nb_regions);
    qatomic_set(&h->count, count);
    qatomic_set(&h->nb_regions, nb);
}

/* Queue @region on queue @q (a level, or SHADOW_HEAT_URGENT).  Locked. */
static void shadow_heat_push(ShadowHeat *h, int q, uint32_t region)
{
    ShadowRegionQueue *rq = &h->queue[q];

    if (!rq->ring) {
        rq->ring = g_new(uint32_t, SHADOW_HEAT_QUEUE_MAX);
    }
    if (rq->len == SHADOW_HEAT_QUEUE_MAX) {
        /* Full: the oldest entry loses its place */
        uint32_t old = rq->ring[rq->head];

        if (h->queued[old] == q + 1) {
            h->queued[old] = 0;
        }
        rq->head = (rq->head + 1) % SHADOW_HEAT_QUEUE_MAX;
        rq->len--;
    }
    rq->ring[(rq->head + rq->len) % SHADOW_HEAT_QUEUE_MAX] = region;
    rq->len++;
    h->queued[region] = q + 1;
}

/* Halve every count, once a decay period has passed; from the timer */
void shadow_heat_decay(ShadowHeat *h, int64_t now)
{
    uint32_t *count = qatomic_read(&h->count);
    int64_t nb = qatomic_read(&h->nb_regions);
    int64_t r;

    if (now - h->last_decay_ns < SHADOW_HEAT_DECAY_NS) {
        return;
    }
    for (r = 0; r < nb; r++) {
        qatomic_set(&count[r], qatomic_read(&count[r]) >> 1);
    }
    h->last_decay_ns = now;
}

/*
 * Count an access; no lock.  Returns whether a region's level rose, in
 * which case the caller queues it with shadow_heat_queue().
 */
bool shadow_heat_count(ShadowHeat *h, int64_t offset, int64_t bytes)
{
    uint32_t *count = qatomic_read(&h->count);
    int64_t nb = qatomic_read(&h->nb_regions);
    int64_t first = offset >> h->region_bits;
    int64_t end = MIN((offset + bytes + h->region_size - 1) >> h->region_bits,
                      nb);
    bool rose = false;
    int64_t r;

    for (r = first; r < end; r++) {
        uint32_t c = qatomic_read(&count[r]) + 1;

        qatomic_set(&count[r], c);

        rose |= is_power_of_2(c) && c <= (1u << (SHADOW_HEAT_LEVELS - 1));
    }
    return rose;
}

/* Queue [@first, @end) as urgent; returns whether anything was new */
static bool shadow_heat_urgent(ShadowHeat *h, int64_t first, int64_t end)
{
    bool queued = false;
    int64_t r;

    for (r = first; r < MIN(end, h->nb_regions); r++) {
        if (h->queued[r] != SHADOW_HEAT_URGENT + 1) {
            shadow_heat_push(h, SHADOW_HEAT_URGENT, r);
            queued = true;
        }
    }
    return queued;
}

/*
 * A sequential stream: a request that starts where an earlier one ended.
 * After SHADOW_STREAM_MIN of them, the regions ahead of it are urgent.
 */
static bool shadow_heat_stream(ShadowHeat *h, int64_t offset, int64_t bytes)
{
    ShadowStream *lru = &h->streams[0];
    int i;

    h->stream_clock++;
    for (i = 0; i < SHADOW_STREAMS; i++) {
        ShadowStream *st = &h->streams[i];

        if (st->len && st->next == offset) {
            st->next = offset + bytes;
            st->len++;
            st->used = h->stream_clock;
            if (st->len >= SHADOW_STREAM_MIN) {
                int64_t r = st->next / h->region_size;

                return shadow_heat_urgent(h, r, r + SHADOW_STREAM_AHEAD);
            }
            return false;
        }
        if (st->used < lru->used) {
            lru = st;
        }
    }
    *lru = (ShadowStream) {
        .next = offset + bytes, .len = 1, .used = h->stream_clock,
    };
    return false;
}

/*
 * Queue the regions of an access whose level rose; with @copying (some
 * shadow lacks data), follow sequential streams and, with @urgent, queue
 * the access's regions as urgent.  Returns whether urgent work was
 * queued, so that the caller starts the copy only when there may be
 * something new to do.  Locked.
 */
bool shadow_heat_queue(ShadowHeat *h, int64_t offset, int64_t bytes,
                       bool copying, bool urgent)
{
    int64_t first = offset / h->region_size;
    int64_t end = MIN(DIV_ROUND_UP(offset + bytes, h->region_size),
                      h->nb_regions);
    bool queued = false;
    int64_t r;

    for (r = first; r < end; r++) {
        int level = shadow_heat_level(qatomic_read(&h->count[r]));

        if (h->queued[r] < level && h->queued[r] != SHADOW_HEAT_URGENT + 1) {
            shadow_heat_push(h, level - 1, r);
        }
    }
    if (!copying) {
        return false;
    }
    if (urgent) {
        queued = shadow_heat_urgent(h, first, end);
    }
    return shadow_heat_stream(h, offset, bytes) || queued;
}

/*
 * Take the hottest queued region for which @needed says there is work, or
 * return -1.  With @urgent_only, only the urgent queue is looked at.
 * Locked.
 */
int64_t shadow_heat_pop(ShadowHeat *h, bool urgent_only,
                        bool (*needed)(void *opaque, int64_t region),
                        void *opaque)
{
    int q;

    for (q = SHADOW_HEAT_URGENT; q >= 0; q--) {
        ShadowRegionQueue *rq = &h->queue[q];

        if (urgent_only && q != SHADOW_HEAT_URGENT) {
            break;
        }
        while (rq->len) {
            uint32_t r = rq->ring[rq->head];
            int level;

            rq->head = (rq->head + 1) % SHADOW_HEAT_QUEUE_MAX;
            rq->len--;
            if (h->queued[r] != q + 1) {
                continue;       /* queued again elsewhere since */
            }
            h->queued[r] = 0;
            level = shadow_heat_level(qatomic_read(&h->count[r]));
            if (q != SHADOW_HEAT_URGENT && level < q + 1) {
                /* Its heat decayed: it belongs on a lower level */
                if (level) {
                    shadow_heat_push(h, level - 1, r);
                }
                continue;
            }
            if (needed(opaque, r)) {
                return r;
            }
        }
    }
    return -1;
}
