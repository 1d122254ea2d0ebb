/*
 * Shadow block driver: the chunk-state layer
 *
 * This file owns which child holds which chunk, the range lock, every
 * change of that state and the order in which changes become durable.
 * The rest of the driver calls its verbs; none of it touches a map.
 *
 * A chunk is *valid* on a child when its content there is what the guest
 * sees (map.stale clear), else *stale*.  The invariants, each kept here:
 *
 * I1  Every chunk is valid on at least one child.  A chunk is never made
 *     stale on the last child that holds it (shadow_mark_stale()); if that
 *     child fails, reads of the chunk fail, as on any disk.
 * I2  Valid means identical: a child is valid for a chunk only if it got
 *     every write to that chunk since it became valid (or the write
 *     covered the chunk entirely).  So any child that holds a chunk may
 *     serve it, and hydration copies from any of them
 *     (shadow_state_write_done(), shadow_state_copied()).
 * I3  The active child lacks chunks only after an instant switch (with
 *     metadata, or on a read-only node); guest writes never leave a chunk
 *     partially written on an active child that lacks it: partial writes
 *     copy the chunk up first, under the range lock.
 * I4  map.unflushed and map.flushing hold the chunks whose content on the
 *     child changed since a flush of the child began.  When that flush or
 *     the child fails, its data for those chunks may be lost: they are
 *     made stale on it where another child holds them on its disk
 *     (flushed), and kept otherwise (shadow_flush_failed()).  While a
 *     degraded shadow keeps such a chunk, guest flushes retry its flush
 *     and fail as the active child's failure would, until a flush
 *     succeeds or another child's copy is flushed (shadow_settle_kept()).
 *
 * With a metadata child (docs/shadow-metadata.md), after dm-clone and
 * md's write-intent bitmap:
 *
 * D1  A valid bit becomes durable only after its data: a commit flushes
 *     children first (the periodic one all of them, a guest flush's those
 *     that got guest writes: shadow_flush_guest_written()), then writes a
 *     chunk as valid only if a completed flush covered the chunk becoming
 *     valid (not in map.fresh/fresh_flushing), or if it was durably valid
 *     and has not been stale since (map.durable).  Such a chunk may have
 *     new data in flight only from guest writes, which D2 covers; a write
 *     that lands during the commit's flush does not hold back the bit of
 *     a chunk that a flushed write made valid, which a guest flush needs.
 * D2  The intent bit of a chunk is durable before the first guest write
 *     to it goes out, and the header names the active child before the
 *     first write after a switch.  Bits are set a whole intent region at
 *     a time (more bits are only conservative), and cleared only for
 *     chunks whose region nobody wrote for a whole period, after a
 *     commit whose flush began after their last write.  After an unclean
 *     stop, a chunk with an intent bit stays valid on one child only (the
 *     recorded active child if it held it).
 * D3  Nothing is written to a child before the header says "in use"
 *     (shadow_state_begin_writing()); a clean stop flushes, commits and
 *     records each child's size and ctime, so that an image written
 *     while the node was not open is never trusted.
 * D4  Map units carry their slot's epoch: a slot given to a new child
 *     gets a new epoch, and the old child's units no longer count.
 * D5  Every chunk is valid on disk on some child at every moment, so that
 *     no crash can leave it without a holder: a commit writes the valid
 *     bits it sets, flushes, and only then clears bits, and only those of
 *     chunks another child keeps on disk after the commit; other clears
 *     wait, and so does the intent bit of their chunk
 *     (shadow_take_changes()).  A header counts the chunks of
 *     meta.recorded_length only: a disk that grows records its new length
 *     once a flush made the new chunks durable on the active child and
 *     the maps on disk show a holder of each (shadow_commit_length()).
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "qapi/error.h"
#include "qapi/qapi-events-block-shadow.h"
#include "qemu/bitmap.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "shadow.h"
#include "trace.h"

/*
 * Geometry
 */

int shadow_state_check_child_length(BDRVShadowState *s, BlockDriverState *bs,
                                    int64_t len, Error **errp)
{
    if (len < 0) {
        error_setg_errno(errp, -len, "shadow: cannot get the length of '%s'",
                         bdrv_get_node_name(bs));
        return len;
    }
    if (len < s->length) {
        error_setg(errp, "shadow: child '%s' is smaller than the disk (%"
                   PRId64 " < %" PRId64 " bytes)",
                   bdrv_get_node_name(bs), len, s->length);
        return -EINVAL;
    }
    return 0;
}

int shadow_state_check_geometry(int64_t length, int64_t chunk_size,
                                Error **errp)
{
    int64_t nb_chunks = DIV_ROUND_UP(length, chunk_size);

    if (nb_chunks > SHADOW_MAX_CHUNKS) {
        error_setg(errp, "shadow: a disk of %" PRId64 " bytes has %" PRId64
                   " chunks of %" PRId64 " bytes; at most %" PRId64
                   " chunks are supported: choose a chunk-size of at least %"
                   PRId64, length, nb_chunks, chunk_size, SHADOW_MAX_CHUNKS,
                   (int64_t)pow2ceil(DIV_ROUND_UP(length, SHADOW_MAX_CHUNKS)));
        return -EFBIG;
    }
    return 0;
}

void shadow_state_set_geometry(BDRVShadowState *s, int64_t length,
                               int64_t chunk_size)
{
    s->length = length;
    s->chunk_size = chunk_size;
    s->chunk_bits = ctz64(chunk_size);
    s->nb_chunks = DIV_ROUND_UP(length, chunk_size);
    s->meta.recorded_length = length;
    s->meta.length_to_record = length;
    s->grown_length = length;
}

/*
 * The slot table or the recorded length changed: the next commit writes a
 * header.  A header writer clears table_dirty only if nothing changed
 * since it took its image (table_gen): a grow that lands while another
 * header is being written must not be lost with it.
 */
static void shadow_table_changed(ShadowMeta *m)
{
    m->table_dirty = true;
    m->table_gen++;
}

void shadow_state_init(BDRVShadowState *s)
{
    qemu_spin_init(&s->lock);
    QLIST_INIT(&s->reqs);
    qemu_co_mutex_init(&s->resize_lock);
    qemu_co_mutex_init(&s->meta.io_lock);
    qemu_co_mutex_init(&s->meta.commit_lock);
    qemu_co_queue_init(&s->meta.commit_queue);
    s->meta.durable_active_slot = -1;
}

static void shadow_maps_read_free(ShadowMapsRead *kept)
{
    int j;

    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        g_free(kept->bits[j]);
        g_free(kept->seqs[j]);
    }
    g_free(kept);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ShadowMapsRead, shadow_maps_read_free)

void shadow_state_destroy(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;

    shadow_state_stop_timer(s);
    g_clear_pointer(&m->intent, hbitmap_free);
    g_clear_pointer(&m->intent_durable, hbitmap_free);
    g_clear_pointer(&m->written, hbitmap_free);
    g_clear_pointer(&m->read_inactive, shadow_maps_read_free);
    qemu_spin_destroy(&s->lock);
}

static int64_t shadow_nb_units(BDRVShadowState *s)
{
    return shadow_meta_nb_units(s->nb_chunks);
}

/*
 * The units a child's map has room for: at least one, because a NULL map
 * says the node has no metadata, and a disk of no chunks (that may grow)
 * has metadata
 */
static int64_t shadow_map_units(BDRVShadowState *s)
{
    return MAX(shadow_nb_units(s), 1);
}

/* The sum of @nb_units sequence numbers, as a slot records it */
static uint32_t shadow_seq_sum(const uint64_t *seqs, int64_t nb_units)
{
    uint32_t sum = 0;
    int64_t u;

    for (u = 0; u < nb_units; u++) {
        sum += (uint32_t)seqs[u];
    }
    return sum;
}

/*
 * Whether a slot's units, as read (@seqs), lack versions that the clean
 * header @slot recorded.  Every later write of a unit raises its number
 * (idle maps after that header, or a write that failed late), and a lost
 * write of a newer copy, or a copy found zeroed, leaves the older one:
 * only a sum that fell counts.
 */
static bool shadow_maps_lost(const ShadowSlot *slot, const uint64_t *seqs,
                             int64_t nb_units)
{
    uint32_t fell;

    if (!slot->seq_sum_known) {
        return false;
    }
    fell = slot->seq_sum - shadow_seq_sum(seqs, nb_units);
    return fell && fell < (1u << 31);
}

void shadow_child_map_init(BDRVShadowState *s, ShadowChild *sc, bool stale)
{
    ShadowChunkMap *map = &sc->map;

    qatomic_set(&s->maps_touched, true);
    map->stale = hbitmap_alloc(s->nb_chunks, 0);
    map->unflushed = hbitmap_alloc(s->nb_chunks, 0);
    map->flushing = hbitmap_alloc(s->nb_chunks, 0);
    map->fresh = hbitmap_alloc(s->nb_chunks, 0);
    map->fresh_flushing = hbitmap_alloc(s->nb_chunks, 0);
    if (stale && s->nb_chunks) {
        hbitmap_set(map->stale, 0, s->nb_chunks);
        qatomic_set(&s->copy_pending, true);
    }
    if (s->meta.child) {
        int64_t units = shadow_map_units(s);

        map->durable = g_malloc0(units * SHADOW_META_UNIT_PAYLOAD);
        map->dirty_units = bitmap_new(units);
        map->unsure_units = bitmap_new(units);
        map->unit_seq = g_new0(uint64_t, units);
        map->unit_seq_failed = g_new0(uint64_t, units);
        map->ondisk = g_malloc0(units * SHADOW_META_UNIT_PAYLOAD);
    }
    qemu_co_mutex_init(&sc->flush_lock);
}

void shadow_child_map_destroy(ShadowChild *sc)
{
    ShadowChunkMap *map = &sc->map;

    g_clear_pointer(&map->stale, hbitmap_free);
    g_clear_pointer(&map->unflushed, hbitmap_free);
    g_clear_pointer(&map->flushing, hbitmap_free);
    g_clear_pointer(&map->fresh, hbitmap_free);
    g_clear_pointer(&map->fresh_flushing, hbitmap_free);
    g_clear_pointer(&map->durable, g_free);
    g_clear_pointer(&map->dirty_units, g_free);
    g_clear_pointer(&map->unsure_units, g_free);
    g_clear_pointer(&map->unit_seq, g_free);
    g_clear_pointer(&map->unit_seq_failed, g_free);
    g_clear_pointer(&map->ondisk, g_free);
}

/*
 * Bits of byte arrays (durable maps): bit c % 8 of byte c / 8
 */

static bool shadow_bit_get(const uint8_t *bits, int64_t c)
{
    return bits[c / 8] & (1u << (c % 8));
}

/*
 * The first chunk in [@c, @end) whose bit is clear in @bits, or @end
 */
static int64_t shadow_bits_next_zero(const uint8_t *bits, int64_t c,
                                     int64_t end)
{
    uint64_t word;

    for (; c < end && c % 64; c++) {
        if (!shadow_bit_get(bits, c)) {
            return c;
        }
    }
    for (; c + 64 <= end; c += 64) {
        memcpy(&word, bits + c / 8, sizeof(word));
        if (word != UINT64_MAX) {
            break;
        }
    }
    for (; c < end; c++) {
        if (!shadow_bit_get(bits, c)) {
            return c;
        }
    }
    return end;
}

static void shadow_bits_clear(uint8_t *bits, int64_t first, int64_t count)
{
    int64_t c = first, end = first + count;

    for (; c < end && c % 8; c++) {
        bits[c / 8] &= ~(1u << (c % 8));
    }
    if (end - c >= 8) {
        memset(bits + c / 8, 0, (end - c) / 8);
        c += (end - c) / 8 * 8;
    }
    for (; c < end; c++) {
        bits[c / 8] &= ~(1u << (c % 8));
    }
}

/* Clear every bit of @hb, at a cost proportional to the bits set */
static void shadow_hbitmap_clear(HBitmap *hb)
{
    int64_t off = 0, bytes;

    while (hbitmap_count(hb) &&
           hbitmap_next_dirty_area(hb, off, INT64_MAX, INT64_MAX, &off,
                                   &bytes)) {
        hbitmap_reset(hb, off, bytes);
        off += bytes;
    }
}

/*
 * Chunk arithmetic and queries.  Callers hold s->lock where the maps are
 * read, unless said otherwise.
 */

/* Chunks touched by [@offset, @offset + @bytes): [*first, *end) */
void shadow_chunk_range(BDRVShadowState *s, int64_t offset, int64_t bytes,
                        int64_t *first, int64_t *end)
{
    *first = offset >> s->chunk_bits;
    *end = (MIN(offset + bytes, s->length) + s->chunk_size - 1) >>
           s->chunk_bits;
    if (*end < *first) {
        *end = *first;
    }
}

/*
 * Chunks entirely covered by [@offset, @offset + @bytes): [*first, *end).
 * The last chunk of the disk may be short; covering up to the end of the
 * disk covers it.
 */
void shadow_full_chunk_range(BDRVShadowState *s, int64_t offset,
                             int64_t bytes, int64_t *first, int64_t *end)
{
    int64_t stop = offset + bytes;

    *first = (offset + s->chunk_size - 1) >> s->chunk_bits;
    *end = stop >= s->length ? s->nb_chunks : stop >> s->chunk_bits;
    if (*end < *first) {
        *end = *first;
    }
}

/* Bytes of the disk in chunks [@first, @end) */
int64_t shadow_chunk_bytes(BDRVShadowState *s, int64_t first, int64_t end)
{
    return MIN(end * s->chunk_size, s->length) - first * s->chunk_size;
}

static bool shadow_has_stale(const HBitmap *stale, int64_t first, int64_t end)
{
    return end > first && hbitmap_count(stale) &&
           hbitmap_next_dirty(stale, first, end - first) >= 0;
}

/* Whether @sc holds every chunk of [@first, @end) */
bool shadow_state_holds(ShadowChild *sc, int64_t first, int64_t end)
{
    return !shadow_has_stale(sc->map.stale, first, end);
}

/* Whether the active child lacks a chunk of [@first, @end); unlocked */
bool shadow_state_active_lacks(BDRVShadowState *s, int64_t first,
                               int64_t end)
{
    bool lacks;

    if (qatomic_read(&s->active_complete)) {
        return false;
    }
    qemu_spin_lock(&s->lock);
    lacks = shadow_has_stale(s->active->map.stale, first, end);
    qemu_spin_unlock(&s->lock);
    return lacks;
}

/*
 * Whether the maps on disk say that the active child holds every chunk of
 * [@first, @end).  After an unclean stop only then does it keep a chunk
 * whose intent bit is set (D2), so a write that must be durable (FUA) to a
 * chunk not so recorded waits for a commit: a copy-up or a whole-chunk
 * write made the active child hold it in memory only.  While a commit
 * runs, map.durable already counts the units it is still writing
 * (shadow_take_changes()): the write waits for the next commit.
 */
bool shadow_state_active_durably_holds(BDRVShadowState *s, int64_t first,
                                       int64_t end)
{
    const uint8_t *durable;
    int64_t c;
    bool holds = true;

    if (qatomic_read(&s->meta.committing)) {
        return false;
    }
    qemu_spin_lock(&s->lock);
    durable = s->active->map.durable;
    for (c = first; durable && c < end && holds; c++) {
        holds = shadow_bit_get(durable, c);
    }
    qemu_spin_unlock(&s->lock);
    return holds;
}

/*
 * A child other than @except that holds chunk @chunk, a healthy one if
 * there is one; NULL if none does.
 */
ShadowChild *shadow_state_holder(BDRVShadowState *s, int64_t chunk,
                                 ShadowChild *except)
{
    ShadowChild *degraded = NULL;
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc == except || hbitmap_get(sc->map.stale, chunk)) {
            continue;
        }
        if (!sc->degraded) {
            return sc;
        }
        degraded = degraded ?: sc;
    }
    return degraded;
}

/*
 * How many chunks from @chunk (before @end) are in the same state as
 * @chunk on the active child, and held by @holder if the active child
 * lacks them
 */
int64_t shadow_state_run(BDRVShadowState *s, int64_t chunk, int64_t end,
                         ShadowChild *holder)
{
    HBitmap *astale = s->active->map.stale;
    int64_t next;

    if (!hbitmap_get(astale, chunk)) {
        next = hbitmap_next_dirty(astale, chunk, end - chunk);
        return (next < 0 ? end : next) - chunk;
    }
    next = hbitmap_next_zero(astale, chunk, end - chunk);
    end = next < 0 ? end : next;
    if (holder && holder != s->active) {
        next = hbitmap_next_dirty(holder->map.stale, chunk, end - chunk);
        end = next < 0 ? end : next;
    }
    return end - chunk;
}

/* Bytes of @sc known to hold what the guest sees.  Locked. */
int64_t shadow_valid_bytes(BDRVShadowState *s, ShadowChild *sc)
{
    int64_t stale = hbitmap_count(sc->map.stale);
    int64_t valid = (s->nb_chunks - stale) * s->chunk_size;

    /* The last chunk may be short */
    if (s->nb_chunks && !hbitmap_get(sc->map.stale, s->nb_chunks - 1)) {
        valid -= s->nb_chunks * s->chunk_size - s->length;
    }
    return MAX(valid, 0);
}

/* Whether some shadow that may be copied to lacks a chunk.  Unlocked. */
bool shadow_state_shadows_stale(BDRVShadowState *s)
{
    bool stale = false;
    int i;

    qemu_spin_lock(&s->lock);
    for (i = 0; i < s->num_children && !stale; i++) {
        ShadowChild *sc = s->children[i];

        stale = sc != s->active && !sc->degraded &&
                hbitmap_count(sc->map.stale);
    }
    qemu_spin_unlock(&s->lock);
    return stale;
}

ShadowChildState shadow_state_child_state(BDRVShadowState *s,
                                          ShadowChild *sc)
{
    if (sc == s->active) {
        return SHADOW_CHILD_STATE_ACTIVE;
    }
    if (sc->degraded) {
        return SHADOW_CHILD_STATE_DEGRADED;
    }
    if (hbitmap_count(sc->map.stale) == 0) {
        return SHADOW_CHILD_STATE_SYNCED;
    }
    /* A copy paused by a drained section is still under way */
    if (s->copy_workers || shadow_copy_enabled(s)) {
        return SHADOW_CHILD_STATE_SYNCING;
    }
    return SHADOW_CHILD_STATE_STALE;
}

/*
 * Whether @to may be the active child of the node, @writable after the
 * switch or reopen.  Without metadata a writable node's active child must
 * hold every chunk: nothing on disk would record what it lacks, and the
 * next open takes it for the whole disk.  With metadata, or on a
 * read-only node, it may lack chunks and hydrates (an instant switch): I1
 * guarantees a holder for each.  So a read-only node switched to a child
 * that lacks chunks becomes writable without metadata only once it holds
 * them.
 */
bool shadow_state_may_switch(BDRVShadowState *s, ShadowChild *to,
                             bool writable, Error **errp)
{
    ShadowChildState st;
    int64_t stale, valid, len;

    qemu_spin_lock(&s->lock);
    st = shadow_state_child_state(s, to);
    stale = hbitmap_count(to->map.stale);
    valid = shadow_valid_bytes(s, to);
    qemu_spin_unlock(&s->lock);

    len = to->child->bs->total_sectors * BDRV_SECTOR_SIZE;
    if (st == SHADOW_CHILD_STATE_DEGRADED && len < s->length) {
        /*
         * A reopen does not retry it (shadow_state_retry_degraded()), nor
         * see an image grown behind QEMU: the open does
         */
        error_setg(errp, "Cannot switch shadow node '%s' to child '%s': it "
                   "has %" PRId64 " bytes, the disk %" PRId64 "; grow its "
                   "image, then open the node again (or remove the child)",
                   bdrv_get_node_name(s->bs), shadow_child_name(to), len,
                   s->length);
        return false;
    }
    if (st == SHADOW_CHILD_STATE_DEGRADED) {
        error_setg(errp, "Cannot switch shadow node '%s' to child '%s': it is "
                   "degraded; reopen the node with the same options to "
                   "retry it", bdrv_get_node_name(s->bs),
                   shadow_child_name(to));
        return false;
    }
    if (!s->meta.child && writable && stale) {
        if (to == s->active) {
            error_setg(errp, "Cannot make shadow node '%s' writable: its "
                       "active child '%s' holds %" PRId64 " of %" PRId64
                       " bytes, and without metadata nothing would record "
                       "the rest; switch to a synced child first",
                       bdrv_get_node_name(s->bs), shadow_child_name(to),
                       valid, s->length);
        } else {
            error_setg(errp, "Cannot switch shadow node '%s' to child '%s': "
                       "it is %s (%" PRId64 " of %" PRId64 " bytes valid); "
                       "wait for SHADOW_CHILD_SYNCED, or give the node a "
                       "metadata child for instant switches",
                       bdrv_get_node_name(s->bs), shadow_child_name(to),
                       ShadowChildState_str(st), valid, s->length);
        }
        return false;
    }
    return true;
}

/*
 * With metadata: how many chunks no child but @except holds on disk.  Once
 * the slot table without @except is written, those would have no holder
 * after a crash (D5).  Locked.
 */
static int64_t shadow_state_durable_orphans(BDRVShadowState *s,
                                            ShadowChild *except)
{
    int64_t bytes = DIV_ROUND_UP(s->nb_chunks, 8), n = 0, k;
    int i;

    if (!s->meta.child || !s->meta.writable) {
        return 0;
    }
    for (k = 0; k < bytes; k++) {
        uint8_t held = 0, want = k + 1 < bytes || !(s->nb_chunks % 8) ?
                                 0xff : (1u << (s->nb_chunks % 8)) - 1;

        for (i = 0; i < s->num_children; i++) {
            ShadowChunkMap *map = &s->children[i]->map;

            /* A unit a failed commit left unsure holds nothing for sure */
            if (s->children[i] != except &&
                !test_bit(k / SHADOW_META_UNIT_PAYLOAD, map->unsure_units)) {
                held |= map->ondisk[k];
            }
        }
        n += ctpop8(want & ~held);
    }
    return n;
}

/* Whether @sc may be removed: it is not the last holder of any chunk */
bool shadow_state_may_remove(BDRVShadowState *s, ShadowChild *sc,
                             Error **errp)
{
    HBitmap *astale = s->active->map.stale;
    int64_t c, only = 0, durable_only;

    if (sc == s->active) {
        error_setg(errp, "Cannot remove the active child '%s' of shadow node "
                   "'%s'; switch to another child first",
                   shadow_child_name(sc), bdrv_get_node_name(s->bs));
        return false;
    }
    qemu_spin_lock(&s->lock);
    durable_only = shadow_state_durable_orphans(s, sc);
    for (c = hbitmap_next_dirty(astale, 0, s->nb_chunks); c >= 0;
         c = c + 1 < s->nb_chunks ?
             hbitmap_next_dirty(astale, c + 1, s->nb_chunks - c - 1) : -1) {
        if (!hbitmap_get(sc->map.stale, c) && !shadow_state_holder(s, c, sc)) {
            only++;
        }
    }
    qemu_spin_unlock(&s->lock);
    if (only) {
        error_setg(errp, "Cannot remove child '%s' of shadow node '%s': it "
                   "holds the only valid copy of %" PRId64 " chunks that the "
                   "active child '%s' has not hydrated yet",
                   shadow_child_name(sc), bdrv_get_node_name(s->bs), only,
                   shadow_child_name(s->active));
        return false;
    }
    if (durable_only) {
        error_setg(errp, "Cannot remove child '%s' of shadow node '%s' yet: "
                   "the metadata does not show another child holding %"
                   PRId64 " of its chunks; flush the node and retry",
                   shadow_child_name(sc), bdrv_get_node_name(s->bs),
                   durable_only);
        return false;
    }
    return true;
}

/*
 * The range lock
 */

/*
 * Wait until no locked range overlaps [@offset, @offset + @bytes), then
 * lock it with @req.  The caller does not hold s->lock.
 */
void coroutine_fn shadow_range_lock(BDRVShadowState *s, BlockReq *req,
                                    int64_t offset, int64_t bytes)
{
    BlockReq *conflict;

    qemu_spin_lock(&s->lock);
    while ((conflict = reqlist_find_conflict(&s->reqs, offset, bytes))) {
        qemu_co_queue_wait(&conflict->wait_queue, &s->lock);
    }
    reqlist_init_req(&s->reqs, req, offset, bytes);
    qemu_spin_unlock(&s->lock);
}

void coroutine_fn shadow_range_unlock(BDRVShadowState *s, BlockReq *req)
{
    qemu_spin_lock(&s->lock);
    reqlist_remove_req(req);
    qemu_spin_unlock(&s->lock);
}

/* Whether a locked range touches chunk @c.  Locked. */
static bool shadow_chunk_busy(BDRVShadowState *s, int64_t c)
{
    return reqlist_find_conflict(&s->reqs, c * s->chunk_size,
                                 shadow_chunk_bytes(s, c, c + 1));
}

/*
 * Transitions.  Every helper below is called with s->lock held.
 */

static void shadow_dirty_units(ShadowChild *sc, int64_t first, int64_t count)
{
    if (sc->map.dirty_units && count > 0) {
        int64_t u0 = first / SHADOW_META_UNIT_CHUNKS;
        int64_t u1 = (first + count - 1) / SHADOW_META_UNIT_CHUNKS;

        bitmap_set(sc->map.dirty_units, u0, u1 - u0 + 1);
    }
}

/* @sc's content changed in these chunks: they need a flush (I4, D1) */
static void shadow_mark_changed(ShadowChild *sc, int64_t first, int64_t count)
{
    if (count > 0) {
        hbitmap_set(sc->map.unflushed, first, count);
    }
}

static void shadow_mark_valid(BDRVShadowState *s, ShadowChild *sc,
                              int64_t first, int64_t count)
{
    int64_t off = first, bytes;

    if (count <= 0) {
        return;
    }
    qatomic_set(&s->maps_touched, true);
    /* Valid from now on: on disk once a flush covers it (D1) */
    while (hbitmap_next_dirty_area(sc->map.stale, off, first + count,
                                   INT64_MAX, &off, &bytes)) {
        hbitmap_set(sc->map.fresh, off, bytes);
        off += bytes;
    }
    hbitmap_reset(sc->map.stale, first, count);
    shadow_dirty_units(sc, first, count);
    if (sc == s->active && !hbitmap_count(sc->map.stale)) {
        qatomic_set(&s->active_complete, true);
    }
}

static void shadow_mark_stale_run(BDRVShadowState *s, ShadowChild *sc,
                                  int64_t first, int64_t count)
{
    GSList *l;

    for (l = s->verify_restale; l; l = l->next) {
        ShadowVerifyWatch *w = l->data;
        /* A job that has not seen the disk grow yet takes the rest then */
        int64_t size = w->nb_chunks;

        if ((sc->serial == w->child_serial ||
             (w->against_serial ? sc->serial == w->against_serial
                                : sc == s->active)) && first < size) {
            hbitmap_set(w->restale, first, MIN(count, size - first));
        }
    }
    qatomic_set(&s->copy_pending, true);
    qatomic_set(&s->maps_touched, true);
    hbitmap_set(sc->map.stale, first, count);
    shadow_dirty_units(sc, first, count);
    if (sc->map.durable) {
        /* D1: a durable valid bit is no longer to be trusted */
        shadow_bits_clear(sc->map.durable, first, count);
    }
    if (sc == s->active) {
        qatomic_set(&s->active_complete, false);
    }
}

/*
 * Make [@first, @first + @count) stale on @sc, except the chunks that no
 * other child holds (I1).  Returns whether every chunk was made stale.
 */
static bool shadow_mark_stale(BDRVShadowState *s, ShadowChild *sc,
                              int64_t first, int64_t count)
{
    int64_t c, end = first + count, run = -1;
    bool all = true;

    if (count <= 0) {
        return true;
    }
    if (sc != s->active &&
        !shadow_has_stale(s->active->map.stale, first, end)) {
        shadow_mark_stale_run(s, sc, first, count);
        return true;
    }
    for (c = first; c < end; c++) {
        bool keep = !hbitmap_get(sc->map.stale, c) &&
                    !shadow_state_holder(s, c, sc);

        if (keep) {
            all = false;
        }
        if (keep && run >= 0) {
            shadow_mark_stale_run(s, sc, run, c - run);
            run = -1;
        } else if (!keep && run < 0) {
            run = c;
        }
    }
    if (run >= 0) {
        shadow_mark_stale_run(s, sc, run, end - run);
    }
    return all;
}

/*
 * Whether a child other than @except holds chunk @c on its disk: valid,
 * and nothing it got for the chunk waits for a flush (I4).  Locked.
 */
static bool shadow_durable_holder(BDRVShadowState *s, int64_t c,
                                  ShadowChild *except)
{
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChunkMap *map = &s->children[i]->map;

        if (s->children[i] != except && !hbitmap_get(map->stale, c) &&
            !hbitmap_get(map->unflushed, c) &&
            !hbitmap_get(map->flushing, c) && !hbitmap_get(map->fresh, c) &&
            !hbitmap_get(map->fresh_flushing, c)) {
            return true;
        }
    }
    return false;
}

/*
 * After a failed flush of @sc, or when @sc is degraded: the chunks whose
 * content changed since its last successful flush may be lost (I4).
 * Those another child holds on its disk become stale on @sc (on the
 * active child, hydration brings them back); @sc keeps the others, whose
 * only copy that may be on a disk is perhaps its own, until a flush
 * succeeds or another child's copy is flushed (shadow_settle_kept()).
 * Chunks a request holds locked are left alone: their request decides.
 * What is kept stays unflushed.
 */
static void shadow_flush_failed(BDRVShadowState *s, ShadowChild *sc)
{
    HBitmap *lost = sc->map.flushing;
    int64_t off = 0, bytes, c;

    hbitmap_merge(lost, sc->map.unflushed, lost);
    shadow_hbitmap_clear(sc->map.unflushed);
    while (hbitmap_next_dirty_area(lost, off, s->nb_chunks, INT64_MAX,
                                   &off, &bytes)) {
        for (c = off; c < off + bytes; c++) {
            bool keep = shadow_chunk_busy(s, c) ||
                        !shadow_durable_holder(s, c, sc) ||
                        !shadow_mark_stale(s, sc, c, 1);

            if (keep) {
                hbitmap_set(sc->map.unflushed, c, 1);
            }
        }
        off += bytes;
    }
    shadow_hbitmap_clear(lost);
    trace_shadow_flush_failed(s, shadow_child_name(sc));
}

/*
 * A write, write-zeroes or discard of [@offset, @offset + @bytes) went
 * to the children in @reqs (the active child first) and they returned
 * @reqs[i].ret.  Within the range, every chunk the active child lacks is
 * covered entirely (I3: the caller copied up the others, or left them
 * out of a discard).  Update every child's map so that I1, I2 and I4
 * hold, and degrade the shadows that failed.  Returns whether a shadow
 * was left with chunks to copy.
 *
 * "The active child" is the one the write was sent to first, @reqs[0]:
 * a switch may have come while the write was in flight (from a client
 * that a drained section does not hold back), and then the new active
 * child is one of the others here; a chunk it did not get is stale on
 * it, and the caller copies it up.
 */
bool shadow_state_write_done(BDRVShadowState *s, ShadowWriteKind kind,
                             int64_t offset, int64_t bytes,
                             ShadowChildReq *reqs, int n)
{
    ShadowChild *active = reqs[0].sc;
    bool active_ok = reqs[0].ret == 0, left_stale = false;
    int64_t first, end, ffirst, fend, c, run;
    int i, pass;

    shadow_chunk_range(s, offset, bytes, &first, &end);
    shadow_full_chunk_range(s, offset, bytes, &ffirst, &fend);

    qemu_spin_lock(&s->lock);
    for (c = first; c < end; c += run) {
        bool had = !hbitmap_get(active->map.stale, c);
        int64_t full_a, full_b, winners = 0;

        run = shadow_state_run(s, c, end, NULL);
        full_a = MAX(c, ffirst);
        full_b = MIN(c + run, fend);

        if (!had) {
            assert(full_a == c && full_b == c + run);
            if (active_ok) {
                shadow_mark_valid(s, active, c, run);
            }
            for (i = 1; i < n && !active_ok; i++) {
                winners += reqs[i].ret == 0 && kind != SHADOW_DISCARD;
            }
        }
        if (had || active_ok) {
            shadow_mark_changed(active, c, run);
        }

        /* Valid first, then stale, so that I1 sees the new holders */
        for (pass = 0; pass < 2; pass++) {
            for (i = 0; i < s->num_children; i++) {
                ShadowChild *sc = s->children[i];
                int j;
                bool got_it;

                if (sc == active) {
                    continue;
                }
                for (j = 1; j < n && reqs[j].sc != sc; j++) {
                    /* the request sent to sc, if any */
                }
                got_it = j < n && reqs[j].ret == 0 && kind != SHADOW_DISCARD &&
                         (active_ok || !had);
                if (pass == 0 && got_it) {
                    /* It got the same bytes as the active child (I2) */
                    shadow_mark_changed(sc, c, run);
                    shadow_mark_valid(s, sc, full_a, full_b - full_a);
                } else if (pass == 1 && !got_it) {
                    if (j < n) {
                        /* A failed request may have left anything there */
                        shadow_mark_changed(sc, c, run);
                    }
                    if (had || active_ok || winners || j < n) {
                        /*
                         * Unless nothing reached any child: then the
                         * holders that got nothing keep the chunk
                         */
                        shadow_mark_stale(s, sc, c, run);
                        left_stale = true;
                    }
                }
            }
        }
    }
    qemu_spin_unlock(&s->lock);

    for (i = 1; i < n; i++) {
        /* The active child is never degraded: what it lacks is stale */
        if (reqs[i].ret < 0 && reqs[i].sc != s->active) {
            shadow_state_degrade(s, reqs[i].sc,
                                 kind == SHADOW_WRITE ? SHADOW_OPERATION_WRITE :
                                 kind == SHADOW_WRITE_ZEROES ?
                                 SHADOW_OPERATION_WRITE_ZEROES :
                                 SHADOW_OPERATION_DISCARD, reqs[i].ret);
        }
    }
    return left_stale;
}

/*
 * A copy of chunks [@first, @first + @nb) from @src to @target succeeded,
 * under the range lock.  @target holds them now if nothing changed their
 * state meanwhile: @src still holds them (a failure elsewhere may have
 * made them stale there) and @target is healthy.  Returns whether it
 * holds them, and in *@complete whether it now holds every chunk.
 */
bool shadow_state_copied(BDRVShadowState *s, ShadowChild *src,
                         ShadowChild *target, int64_t first, int64_t nb,
                         bool *complete)
{
    bool ok;

    qemu_spin_lock(&s->lock);
    ok = shadow_state_holds(src, first, first + nb) &&
         (target == s->active || !target->degraded);
    if (ok) {
        shadow_mark_changed(target, first, nb);
        shadow_mark_valid(s, target, first, nb);
    }
    *complete = ok && !hbitmap_count(target->map.stale);
    qemu_spin_unlock(&s->lock);
    return ok;
}

/*
 * A shadow failed: no more writes or copies go to it, and what it may
 * have lost is stale (I4).  It still serves, as a last resort, the
 * chunks only it holds.  A reopen, or removing and adding it again,
 * brings it back.
 */
void shadow_state_degrade(BDRVShadowState *s, ShadowChild *sc,
                          ShadowOperation op, int ret)
{
    bool was_degraded;

    assert(sc != s->active);
    qemu_spin_lock(&s->lock);
    was_degraded = sc->degraded;
    sc->degraded = true;
    shadow_flush_failed(s, sc);
    qemu_spin_unlock(&s->lock);

    if (!was_degraded) {
        trace_shadow_degrade(s, shadow_child_name(sc),
                             ShadowOperation_str(op), ret);
        warn_report("shadow: node '%s': %s on child '%s' failed: %s; "
                    "the child is degraded", bdrv_get_node_name(s->bs),
                    ShadowOperation_str(op), shadow_child_name(sc),
                    strerror(-ret));
        qapi_event_send_shadow_child_degraded(bdrv_get_node_name(s->bs),
                                              shadow_child_name(sc), op,
                                              strerror(-ret));
    }
}

/* The active child becomes @to.  In a drained section. */
void shadow_state_switch(BDRVShadowState *s, ShadowChild *to)
{
    qemu_spin_lock(&s->lock);
    s->active = to;
    qatomic_set(&s->active_complete, !hbitmap_count(to->map.stale));
    qemu_spin_unlock(&s->lock);
}

/* A reopen retries degraded children, a stopped copy and the metadata */
/*
 * A shadow shorter than the disk (degraded when the disk grew, so never
 * grown): nothing past its end is valid on it, and it gets no I/O, which
 * would write past its end, until a reopen finds it as long as the disk
 * (shadow_state_retry_degraded()).  At open; locked, or before any I/O.
 */
void shadow_state_short_child(BDRVShadowState *s, ShadowChild *sc,
                              int64_t len)
{
    int64_t first = len / s->chunk_size;

    shadow_mark_stale_run(s, sc, first, s->nb_chunks - first);
    sc->degraded = true;
    warn_report("shadow: node '%s': child '%s' has %" PRId64 " bytes, the "
                "disk %" PRId64 ": it is degraded until it is as long (grow "
                "its image, then open the node again; or remove the child)",
                bdrv_get_node_name(s->bs), shadow_child_name(sc), len,
                s->length);
}

void shadow_state_retry_degraded(BDRVShadowState *s)
{
    g_autofree bool *too_short = g_new(bool, s->num_children);
    int i;

    bdrv_graph_rdlock_main_loop();
    for (i = 0; i < s->num_children; i++) {
        /*
         * A child the disk grew past while it was degraded stays so:
         * copies to it would write past its end
         */
        too_short[i] = bdrv_getlength(s->children[i]->child->bs) < s->length;
    }
    bdrv_graph_rdunlock_main_loop();
    qemu_spin_lock(&s->lock);
    for (i = 0; i < s->num_children; i++) {
        s->children[i]->degraded = too_short[i];
    }
    s->copy_failed = false;
    s->copy_retry_delay_ns = 0;
    s->meta.failed = false;
    qemu_spin_unlock(&s->lock);
}

/*
 * Flushes
 */

/* Flush @sc; on failure, what it may have lost is stale (I4) */
static int coroutine_fn GRAPH_RDLOCK
shadow_flush_child(BDRVShadowState *s, ShadowChild *sc, void *opaque)
{
    int64_t guest_writes;
    int ret;

    qemu_co_mutex_lock(&sc->flush_lock);
    guest_writes = qatomic_read(&sc->guest_writes);
    qemu_spin_lock(&s->lock);
    if (hbitmap_count(sc->map.flushing)) {
        /* A failed flush left what it kept; a new one covers it too */
        hbitmap_merge(sc->map.flushing, sc->map.unflushed, sc->map.flushing);
        shadow_hbitmap_clear(sc->map.unflushed);
    } else {
        HBitmap *tmp = sc->map.flushing;

        sc->map.flushing = sc->map.unflushed;
        sc->map.unflushed = tmp;
    }
    /* A merge walks every word of a large disk's maps: swapped if it can */
    if (!hbitmap_count(sc->map.fresh_flushing)) {
        HBitmap *tmp = sc->map.fresh_flushing;

        sc->map.fresh_flushing = sc->map.fresh;
        sc->map.fresh = tmp;
    } else if (hbitmap_count(sc->map.fresh)) {
        hbitmap_merge(sc->map.fresh_flushing, sc->map.fresh,
                      sc->map.fresh_flushing);
        shadow_hbitmap_clear(sc->map.fresh);
    }
    qemu_spin_unlock(&s->lock);

    ret = bdrv_co_flush(sc->child->bs);

    qemu_spin_lock(&s->lock);
    if (ret == 0) {
        shadow_hbitmap_clear(sc->map.flushing);
        shadow_hbitmap_clear(sc->map.fresh_flushing);
        sc->guest_writes_flushed = guest_writes;
    } else {
        shadow_flush_failed(s, sc);
    }
    qemu_spin_unlock(&s->lock);
    qemu_co_mutex_unlock(&sc->flush_lock);

    if (ret == 0) {
        shadow_counters_add(&sc->stats, SHADOW_STAT_FLUSH_OPS, 1);
    } else {
        shadow_counters_add(&sc->stats, SHADOW_STAT_FAILED_OPS, 1);
        if (sc != s->active) {
            shadow_state_degrade(s, sc, SHADOW_OPERATION_FLUSH, ret);
        }
    }
    return ret;
}

/* What a degraded shadow's kept chunks still need (shadow_settle_kept()) */
typedef enum ShadowKept {
    SHADOW_KEPT_NONE,       /* nothing: each is on another child's disk */
    SHADOW_KEPT_WAITING,    /* another child holds one, not flushed yet */
    SHADOW_KEPT_ONLY,       /* the shadow holds the only copy of one */
} ShadowKept;

/*
 * The chunks a degraded shadow kept after a failed flush (in its
 * unflushed map, shadow_flush_failed()): those it no longer holds are
 * dropped, those another child now holds on its disk become stale on
 * it.  Says what the others need; a guest flush cannot vouch for them.
 * Stale ranges go at once (a disk grown by terabytes adds them).  Locked.
 */
static ShadowKept shadow_settle_kept(BDRVShadowState *s, ShadowChild *sc)
{
    HBitmap *kept = sc->map.unflushed;
    int64_t off = 0, bytes, c, v, end;
    ShadowKept left = SHADOW_KEPT_NONE;
    bool busy;

    while (off < s->nb_chunks &&
           hbitmap_next_dirty_area(kept, off, s->nb_chunks, INT64_MAX,
                                   &off, &bytes)) {
        end = off + bytes;
        for (c = off; c < end; c = v + 1) {
            v = hbitmap_next_zero(sc->map.stale, c, end - c);
            if (v < 0) {
                hbitmap_reset(kept, c, end - c);
                break;
            }
            if (v > c) {
                hbitmap_reset(kept, c, v - c);
            }
            busy = shadow_chunk_busy(s, v);
            if (!busy && shadow_durable_holder(s, v, sc) &&
                shadow_mark_stale(s, sc, v, 1)) {
                hbitmap_reset(kept, v, 1);
            } else if (busy || shadow_state_holder(s, v, sc)) {
                left = MAX(left, SHADOW_KEPT_WAITING);
            } else {
                left = SHADOW_KEPT_ONLY;
            }
        }
        off = end;
    }
    return left;
}

/*
 * Whether a flush of the guest's data must include @sc: a healthy shadow
 * with @all or with guest writes since its last flush, or a degraded one
 * that kept chunks no other child holds on its disk.  Locked.
 */
static bool shadow_flush_wants(BDRVShadowState *s, ShadowChild *sc, bool all)
{
    if (sc->degraded) {
        return shadow_settle_kept(s, sc) != SHADOW_KEPT_NONE;
    }
    return all ||
           qatomic_read(&sc->guest_writes) != sc->guest_writes_flushed;
}

/*
 * Flush the active child and the shadows shadow_flush_wants() names, in
 * parallel.  Returns the active child's result, or an error while a
 * degraded shadow keeps a chunk no other child holds on its disk (I4):
 * the guest's write to it may be nowhere on a disk.  Where another child
 * holds it but its copy changed during the flush (a write, a copy-up),
 * every child is flushed again, a few times, rather than fail the guest.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_flush_for_guest(BDRVShadowState *s, bool all)
{
    ShadowChildReq stack[SHADOW_STACK_CHILDREN];
    ShadowChildReq *reqs = s->num_children <= SHADOW_STACK_CHILDREN ?
                           stack : g_new(ShadowChildReq, s->num_children);
    ShadowKept kept, k;
    int n, i, j, ret, err, round;

    for (round = 0;; round++) {
        n = 0;
        reqs[n++] = (ShadowChildReq) { .sc = s->active };
        qemu_spin_lock(&s->lock);
        for (i = 0; i < s->num_children; i++) {
            ShadowChild *sc = s->children[i];

            if (sc != s->active && shadow_flush_wants(s, sc, all || round)) {
                reqs[n++] = (ShadowChildReq) { .sc = sc };
            }
        }
        qemu_spin_unlock(&s->lock);
        shadow_co_foreach(s, reqs, n, shadow_flush_child, NULL);
        ret = reqs[0].ret;
        if (ret < 0) {
            break;
        }

        kept = SHADOW_KEPT_NONE;
        err = -EIO;
        qemu_spin_lock(&s->lock);
        for (i = 0; i < s->num_children; i++) {
            ShadowChild *sc = s->children[i];

            if (sc == s->active || !sc->degraded) {
                continue;
            }
            k = shadow_settle_kept(s, sc);
            for (j = 1; j < n && k != SHADOW_KEPT_NONE; j++) {
                if (reqs[j].sc == sc && reqs[j].ret < 0) {
                    err = reqs[j].ret;
                }
            }
            kept = MAX(kept, k);
        }
        qemu_spin_unlock(&s->lock);
        if (kept == SHADOW_KEPT_NONE) {
            break;
        }
        if (kept == SHADOW_KEPT_ONLY || round + 1 == SHADOW_FLUSH_ROUNDS) {
            ret = err;
            break;
        }
    }
    if (reqs != stack) {
        g_free(reqs);
    }
    return ret;
}

/*
 * Flush the active child and every healthy shadow in parallel; returns
 * the active child's result, or the error of a shadow that kept the only
 * copy of a chunk
 */
int coroutine_fn shadow_state_flush_children(BDRVShadowState *s)
{
    return shadow_flush_for_guest(s, true);
}

typedef struct ShadowFlushChild {
    BDRVShadowState *s;
    ShadowChild *sc;
    int ret;
    bool done;
} ShadowFlushChild;

static void coroutine_fn shadow_flush_child_entry(void *opaque)
{
    ShadowFlushChild *f = opaque;

    bdrv_graph_co_rdlock();
    f->ret = shadow_flush_child(f->s, f->sc, NULL);
    bdrv_graph_co_rdunlock();
    f->done = true;
    aio_wait_kick();
}

/*
 * Whether @sc holds content no completed flush covers: the chunks that
 * changed since a flush began (I4; guest writes and copies alike), or
 * that a failed flush left
 */
bool shadow_state_unflushed(BDRVShadowState *s, ShadowChild *sc)
{
    bool ret;

    qemu_spin_lock(&s->lock);
    ret = hbitmap_count(sc->map.unflushed) || hbitmap_count(sc->map.flushing);
    qemu_spin_unlock(&s->lock);
    return ret;
}

/* Flush @sc from outside a coroutine, with the node drained */
int shadow_state_flush_child_sync(BDRVShadowState *s, ShadowChild *sc)
{
    ShadowFlushChild f = { .s = s, .sc = sc };

    aio_co_enter(bdrv_get_aio_context(s->bs),
                 qemu_coroutine_create(shadow_flush_child_entry, &f));
    BDRV_POLL_WHILE(s->bs, !f.done);
    return f.ret;
}

/*
 * A guest flush, and a clean stop: the active child, and the shadows that
 * got guest writes since their last flush.  Every child that holds a chunk
 * got every guest write to it (I2), so after a crash any holder of a chunk
 * serves what the guest flushed; and a chunk may be valid on disk with new
 * data in flight (D1), which only intent bits cover after a crash, and a
 * clean header has none.  What only the copy wrote need not be flushed:
 * the maps do not count it until a flush of its child, and without
 * metadata a switch flushes its target.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_flush_guest_written(BDRVShadowState *s)
{
    return shadow_flush_for_guest(s, false);
}

/* Without metadata, periodically: flush the shadows with unflushed data */
static int coroutine_fn GRAPH_RDLOCK shadow_flush_copied(BDRVShadowState *s)
{
    ShadowChildReq stack[SHADOW_STACK_CHILDREN];
    ShadowChildReq *reqs = s->num_children <= SHADOW_STACK_CHILDREN ?
                           stack : g_new(ShadowChildReq, s->num_children);
    int n = 0, i;

    qemu_spin_lock(&s->lock);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc != s->active && !sc->degraded &&
            hbitmap_count(sc->map.unflushed)) {
            reqs[n++] = (ShadowChildReq) { .sc = sc };
        }
    }
    qemu_spin_unlock(&s->lock);
    if (n) {
        shadow_co_foreach(s, reqs, n, shadow_flush_child, NULL);
    }
    if (reqs != stack) {
        g_free(reqs);
    }
    return 0;
}

/*
 * Growing the disk
 */

/* Resize the maps of @sc to @nb_chunks chunks; new chunks are stale */
static void shadow_child_map_grow(BDRVShadowState *s, ShadowChild *sc,
                                  int64_t old_nb, int64_t nb_chunks)
{
    ShadowChunkMap *map = &sc->map;

    qatomic_set(&s->maps_touched, true);
    hbitmap_truncate(map->stale, nb_chunks);
    hbitmap_truncate(map->unflushed, nb_chunks);
    hbitmap_truncate(map->flushing, nb_chunks);
    hbitmap_truncate(map->fresh, nb_chunks);
    hbitmap_truncate(map->fresh_flushing, nb_chunks);
    hbitmap_set(map->stale, old_nb, nb_chunks - old_nb);
    if (map->durable) {
        int64_t old_units = shadow_meta_nb_units(old_nb);
        int64_t units = shadow_meta_nb_units(nb_chunks);

        map->durable = g_realloc(map->durable,
                                 units * SHADOW_META_UNIT_PAYLOAD);
        memset(map->durable + old_units * SHADOW_META_UNIT_PAYLOAD, 0,
               (units - old_units) * SHADOW_META_UNIT_PAYLOAD);
        map->dirty_units = bitmap_zero_extend(map->dirty_units, old_units,
                                              units);
        map->unsure_units = bitmap_zero_extend(map->unsure_units,
                                               old_units, units);
        map->unit_seq = g_renew(uint64_t, map->unit_seq, units);
        memset(map->unit_seq + old_units, 0,
               (units - old_units) * sizeof(uint64_t));
        map->unit_seq_failed = g_renew(uint64_t, map->unit_seq_failed, units);
        memset(map->unit_seq_failed + old_units, 0,
               (units - old_units) * sizeof(uint64_t));
        map->ondisk = g_realloc(map->ondisk, units * SHADOW_META_UNIT_PAYLOAD);
        memset(map->ondisk + old_units * SHADOW_META_UNIT_PAYLOAD, 0,
               (units - old_units) * SHADOW_META_UNIT_PAYLOAD);
    }
}

/*
 * Make the node's length the one headers record (D5): flush the children,
 * which makes the chunks a grow added durable on the active child (and
 * the children's new sizes), then commit: the commit records the new
 * length once the map units on disk show a holder for every new chunk
 * (shadow_commit_length()).  Until then every header keeps the old length
 * (of a guest flush's commit, or of the first write after a switch), and
 * a crash leaves it, with the children's tails unused.  A chunk made
 * valid on another child meanwhile (a write after a switch) may miss one
 * commit: another flush and commit follow.  Under resize_lock.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_record_length(BDRVShadowState *s, Error **errp)
{
    ShadowMeta *m = &s->meta;
    int tries, ret = 0;

    for (tries = 0; m->child && m->recorded_length != s->length; tries++) {
        if (tries == SHADOW_RECORD_LENGTH_TRIES) {
            error_setg(errp, "shadow: the metadata of node '%s' does not "
                       "show a holder of every chunk after growing it to %"
                       PRId64 " bytes", bdrv_get_node_name(s->bs),
                       s->length);
            return -EIO;
        }
        ret = shadow_state_flush_children(s);
        if (ret < 0) {
            break;
        }
        qemu_spin_lock(&s->lock);
        m->length_to_record = s->length;
        qemu_spin_unlock(&s->lock);
        ret = shadow_state_commit(s, false);
        if (ret < 0) {
            break;
        }
    }
    if (ret < 0) {
        /*
         * The block layer keeps the old length (the truncate failed), and
         * so do the headers; a retried block_resize records the new one
         */
        error_setg_errno(errp, -ret, "shadow: node '%s' keeps its length: "
                         "its children grew to %" PRId64 " bytes, but the "
                         "metadata cannot record it (retry block_resize)",
                         bdrv_get_node_name(s->bs), s->length);
    }
    return ret;
}

/*
 * The node's own maps (the copy's, the intent map) and heat table grow to
 * @length bytes, once every child's map has grown.  Locked.
 */
static void shadow_grow_node_maps(BDRVShadowState *s, int64_t length)
{
    int64_t nb = DIV_ROUND_UP(length, s->chunk_size);

    hbitmap_truncate(s->copying, nb);
    if (s->meta.intent) {
        hbitmap_truncate(s->meta.intent, nb);
        hbitmap_truncate(s->meta.intent_durable, nb);
        hbitmap_truncate(s->meta.written, nb);
        s->meta.intent_size = nb;
    }
    s->length = length;
    s->nb_chunks = nb;
    shadow_heat_resize(&s->heat, length);
}

/*
 * Grow the node and every child to @length bytes (block_resize, or a
 * write past the end by a format node above).  The new bytes are zero on
 * a child whose truncate guaranteed it and which was not longer before;
 * a shadow holds them only if the active child's are zero too.  A shadow
 * that cannot grow is degraded; if the active child cannot, nothing
 * changes.
 */
int coroutine_fn shadow_state_grow(BDRVShadowState *s, int64_t length,
                                   Error **errp)
{
    g_autofree bool *zero = NULL;
    int64_t old_len, old_nb, nb, tail;
    bool active_zero = false;
    int i, ret = 0;

    qemu_co_mutex_lock(&s->resize_lock);
    old_len = s->length;
    old_nb = s->nb_chunks;
    if (length <= old_len) {
        /* Grown already; recorded too, unless that failed: try again */
        ret = shadow_record_length(s, errp);
        goto out;
    }
    ret = shadow_state_check_geometry(length, s->chunk_size, errp);
    if (ret < 0) {
        goto out;
    }
    /* A short last chunk grows: the active child must hold it first (I3) */
    tail = old_len % s->chunk_size ? old_nb - 1 : old_nb;
    ret = shadow_state_begin_writing(s);
    if (ret == 0 && tail < old_nb) {
        ret = shadow_copy_up(s, tail, old_nb);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "shadow: cannot prepare node '%s' for "
                         "growing", bdrv_get_node_name(s->bs));
        goto out;
    }
    if (s->meta.child) {
        ret = shadow_meta_ensure_size(s, DIV_ROUND_UP(length, s->chunk_size),
                                      errp);
        if (ret == 0) {
            ret = shadow_meta_zero_rows(s, old_nb,
                                        DIV_ROUND_UP(length, s->chunk_size),
                                        errp);
        }
        if (ret < 0) {
            goto out;
        }
    }

    zero = g_new0(bool, s->num_children);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        BlockDriverState *cbs = sc->child->bs;
        BdrvRequestFlags flags = cbs->supported_truncate_flags &
                                 BDRV_REQ_ZERO_WRITE;
        int64_t cur = bdrv_co_getlength(cbs);
        Error *local_err = NULL;

        if (sc != s->active && sc->degraded) {
            continue;
        }
        ret = cur < 0 ? cur : 0;
        if (ret == 0 && cur < length) {
            ret = bdrv_co_truncate(sc->child, length, false, PREALLOC_MODE_OFF,
                                   flags, &local_err);
        }
        if (ret < 0 && sc == s->active) {
            if (local_err) {
                error_propagate_prepend(errp, local_err, "shadow: cannot grow "
                                        "the active child '%s': ",
                                        shadow_child_name(sc));
            } else {
                error_setg_errno(errp, -ret, "shadow: cannot grow the active "
                                 "child '%s'", shadow_child_name(sc));
            }
            goto out;
        }
        if (ret < 0) {
            error_free(local_err);
            shadow_state_degrade(s, sc, SHADOW_OPERATION_TRUNCATE, ret);
            continue;
        }
        zero[i] = cur == old_len && (flags & BDRV_REQ_ZERO_WRITE);
        if (sc == s->active) {
            active_zero = zero[i];
        }
    }
    ret = 0;

    qemu_spin_lock(&s->lock);
    nb = DIV_ROUND_UP(length, s->chunk_size);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        shadow_child_map_grow(s, sc, old_nb, nb);
        shadow_mark_changed(sc, tail, nb - tail);
        if (sc == s->active) {
            /* What the active child holds there now is the disk */
            shadow_mark_valid(s, sc, old_nb, nb - old_nb);
        } else if (zero[i] && active_zero) {
            /* The tail chunk keeps its state: its new bytes are zero */
            shadow_mark_valid(s, sc, old_nb, nb - old_nb);
        } else {
            shadow_mark_stale_run(s, sc, tail, nb - tail);
        }
    }
    shadow_grow_node_maps(s, length);
    qemu_spin_unlock(&s->lock);
    trace_shadow_grow(s, old_len, length);

    ret = shadow_record_length(s, errp);
out:
    /*
     * A write past grown_length grows, or waits for the grow under way: it
     * moves only once the length is recorded, so that after a failed flush
     * or commit the next such write records it again, or fails
     */
    if (ret == 0) {
        qatomic_set(&s->grown_length, s->length);
    }
    qemu_co_mutex_unlock(&s->resize_lock);
    return ret;
}

/*
 * Without metadata, an activation knows nothing of what another process
 * did to the children while the node was inactive (a migration's
 * destination, or a storage daemon's node that went inactive and back).
 * It may have grown the disk, which only the active child's length says
 * now, and written the active child alone (async mode, a degraded
 * shadow).  It was given the same active child (the node's open trusts
 * it with every chunk), so that child holds every write: the disk is as
 * long as the active child, which holds the new chunks, and every shadow
 * is stale, as at open: but for what the active child lacks (a read-only
 * node after an instant switch), which its holder keeps (I1).  The node
 * is inactive: no I/O, no copy.
 */
int shadow_state_activate_unrecorded(BDRVShadowState *s, int64_t active_len,
                                     Error **errp)
{
    int64_t old_len = s->length, old_nb = s->nb_chunks, nb;
    int i;

    assert(!s->meta.child);
    if (active_len > old_len &&
        shadow_state_check_geometry(active_len, s->chunk_size, errp) < 0) {
        return -EFBIG;
    }

    qemu_spin_lock(&s->lock);
    if (active_len > old_len) {
        nb = DIV_ROUND_UP(active_len, s->chunk_size);
        for (i = 0; i < s->num_children; i++) {
            shadow_child_map_grow(s, s->children[i], old_nb, nb);
        }
        shadow_mark_valid(s, s->active, old_nb, nb - old_nb);
        shadow_grow_node_maps(s, active_len);
        qatomic_set(&s->grown_length, active_len);
    }
    for (i = 0; i < s->num_children; i++) {
        if (s->children[i] != s->active) {
            shadow_mark_stale(s, s->children[i], 0, s->nb_chunks);
        }
    }
    qemu_spin_unlock(&s->lock);
    if (active_len > old_len) {
        trace_shadow_grow(s, old_len, active_len);
    }
    return 0;
}

/*
 * Give the node a new length, with the maps it has without metadata (the
 * active child holds everything).  Only while no I/O can be in flight:
 * at open and activation.
 */
static void shadow_state_reset_geometry(BDRVShadowState *s, int64_t length)
{
    int i;

    qemu_spin_lock(&s->lock);
    shadow_state_set_geometry(s, length, s->chunk_size);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        shadow_child_map_destroy(sc);
        shadow_child_map_init(s, sc, sc != s->active);
    }
    hbitmap_free(s->copying);
    s->copying = hbitmap_alloc(s->nb_chunks, 0);
    shadow_heat_destroy(&s->heat);
    shadow_heat_init(&s->heat, s->length, s->chunk_size);
    qatomic_set(&s->active_complete, true);
    qemu_spin_unlock(&s->lock);
}

/*
 * Metadata: loading
 */

static uint64_t shadow_new_epoch(void)
{
    uint64_t e;

    do {
        e = ((uint64_t)g_random_int() << 32) | g_random_int();
    } while (!e);
    return e;
}

/* Whether @sc's child stores its data elsewhere since its slot was filled */
static bool GRAPH_RDLOCK shadow_storage_moved(ShadowChild *sc)
{
    BlockDriverState *leaf;

    if (!sc->storage) {
        return false;
    }
    leaf = shadow_storage_leaf(sc->child->bs);
    return leaf != sc->storage ||
           strcmp(bdrv_get_node_name(leaf), sc->storage_name);
}

/*
 * Whether a child's storage node changed since its slot was identified,
 * for the write path: the pointer only (the next commit also compares
 * names, in case a new node took a freed one's address)
 */
bool shadow_state_storage_moved(BDRVShadowState *s)
{
    int i;

    if (!s->writable) {
        return false;
    }
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc->storage &&
            shadow_storage_leaf(sc->child->bs) != sc->storage) {
            return true;
        }
    }
    return false;
}

/* @sc's maps (and slot) now describe the storage its child has now */
void shadow_state_storage_seen(ShadowChild *sc)
{
    BlockDriverState *leaf = shadow_storage_leaf(sc->child->bs);

    sc->storage = leaf;
    pstrcpy(sc->storage_name, sizeof(sc->storage_name),
            bdrv_get_node_name(leaf));
}

static void GRAPH_RDLOCK shadow_slot_fill(ShadowSlot *slot, ShadowChild *sc,
                                          const ShadowIdentity *id,
                                          uint64_t epoch)
{
    shadow_state_storage_seen(sc);
    memset(slot, 0, sizeof(*slot));
    slot->used = true;
    slot->epoch = epoch;
    slot->id = *id;
    slot->id.filename = NULL;
    pstrcpy(slot->node_name, sizeof(slot->node_name), shadow_child_name(sc));
    pstrcpy(slot->filename, sizeof(slot->filename), id->filename);
}

/* Whether @a and @b, of the same filename, are different files */
static bool shadow_other_file(const ShadowIdentity *a, const ShadowIdentity *b)
{
    return a->have_stat && b->have_stat &&
           (a->ino != b->ino ||
            (a->have_btime && b->have_btime &&
             (a->btime_sec != b->btime_sec ||
              a->btime_nsec != b->btime_nsec)));
}

/*
 * Whether the storage behind a slot was replaced or written while the
 * node did not hold it; NULL if not, else what happened
 */
static const char *shadow_slot_changed(const ShadowSlot *slot,
                                       const ShadowIdentity *id)
{
    if (shadow_other_file(&slot->id, id)) {
        return "replaced by another file";
    }
    if (slot->id.have_stat && id->have_stat) {
        /*
         * Any write, truncate or change of the file's times or mode makes
         * its ctime now, which nobody can set back.  A power loss may
         * leave an older ctime (a flush need not make it durable): only a
         * newer one means a change.
         */
        if (slot->stamped &&
            (slot->id.size != id->size ||
             id->ctime_sec > slot->id.ctime_sec ||
             (id->ctime_sec == slot->id.ctime_sec &&
              id->ctime_nsec > slot->id.ctime_nsec))) {
            return "written while the node was not open";
        }
    }
    return NULL;
}

/* Every chunk with its bit set in @intent stays valid on one child (D2) */
static int64_t shadow_recover(BDRVShadowState *s, HBitmap *intent,
                              ShadowChild *recorded)
{
    int64_t c, n = 0;
    int i;

    for (c = hbitmap_next_dirty(intent, 0, s->nb_chunks); c >= 0;
         c = c + 1 < s->nb_chunks ?
             hbitmap_next_dirty(intent, c + 1, s->nb_chunks - c - 1) : -1) {
        ShadowChild *keep = NULL;

        if (recorded && !hbitmap_get(recorded->map.stale, c)) {
            keep = recorded;
        }
        for (i = 0; i < s->num_children && !keep; i++) {
            if (!hbitmap_get(s->children[i]->map.stale, c)) {
                keep = s->children[i];
            }
        }
        for (i = 0; i < s->num_children; i++) {
            if (s->children[i] != keep) {
                shadow_mark_stale_run(s, s->children[i], c, 1);
            }
        }
        n++;
    }
    return n;
}

/* A new session writes a new intent map.  Locked or at open. */
static void shadow_state_reset_intent(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;

    if (m->intent && m->intent_size == s->nb_chunks) {
        /* Touches only what is set: an activation waits for this */
        shadow_hbitmap_clear(m->intent);
        shadow_hbitmap_clear(m->intent_durable);
        shadow_hbitmap_clear(m->written);
        return;
    }
    g_clear_pointer(&m->intent, hbitmap_free);
    g_clear_pointer(&m->intent_durable, hbitmap_free);
    g_clear_pointer(&m->written, hbitmap_free);
    m->intent = hbitmap_alloc(s->nb_chunks, 0);
    m->intent_durable = hbitmap_alloc(s->nb_chunks, 0);
    m->written = hbitmap_alloc(s->nb_chunks, 0);
    m->intent_size = s->nb_chunks;
}

/* Start fresh metadata: the active child holds everything */
static void shadow_state_format(BDRVShadowState *s, const ShadowIdentity *ids)
{
    ShadowMeta *m = &s->meta;
    int i;

    memset(m->slots, 0, sizeof(m->slots));
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        sc->slot = i;
        shadow_slot_fill(&m->slots[i], sc, &ids[i], shadow_new_epoch());
        if (sc == s->active) {
            shadow_dirty_units(sc, 0, s->nb_chunks);
        }
    }
    shadow_table_changed(m);
    m->in_use = false;
    m->durable_active_slot = -1;
    m->generation = 0;
    m->header_copy = 1;
    shadow_state_reset_intent(s);
}

/*
 * A note of shadow_state_load(); none from the load of a node opened
 * inactive, which reads the maps again, and reports, when it is activated
 */
static void G_GNUC_PRINTF(3, 4)
shadow_load_note(BDRVShadowState *s, bool warn, const char *fmt, ...)
{
    va_list ap;

    if (s->bs->open_flags & BDRV_O_INACTIVE) {
        return;
    }
    va_start(ap, fmt);
    if (warn) {
        warn_vreport(fmt, ap);
    } else {
        info_vreport(fmt, ap);
    }
    va_end(ap);
}

/*
 * @map's stale chunks are those its durable map (valid bits) does not
 * hold.  Built a piece at a time, for the reason of the load below.
 */
static void shadow_stale_from_durable(BDRVShadowState *s, ShadowChunkMap *map)
{
    uint8_t buf[4096];
    int64_t piece = sizeof(buf) * 8, c, n, k, bytes, used;

    QEMU_BUILD_BUG_ON(sizeof(buf) % sizeof(uint64_t));
    hbitmap_reset_all(map->stale);
    if (!s->nb_chunks) {
        return;     /* a disk of no chunks: nothing to finish */
    }
    for (c = 0; c < s->nb_chunks; c += piece) {
        n = MIN(piece, s->nb_chunks - c);
        used = DIV_ROUND_UP(n, 8);
        /* Deserializing reads whole words */
        bytes = ROUND_UP(used, sizeof(uint64_t));
        for (k = 0; k < used; k++) {
            buf[k] = ~map->durable[c / 8 + k];
        }
        memset(buf + used, 0, bytes - used);
        /*
         * No bit past the last chunk: a bit there, never counted, would
         * be revealed by the hbitmap_truncate() of a later grow (the
         * count then goes wrong)
         */
        if (n % 8) {
            buf[used - 1] &= (1u << (n % 8)) - 1;
        }
        hbitmap_deserialize_part(map->stale, buf, c, n, false);
    }
    hbitmap_deserialize_finish(map->stale);
}

/*
 * The same for map unit @u alone, and its ondisk copy: after a load read
 * that unit again into maps otherwise kept (SHADOW_KEEP_SOME).  Locked.
 */
static void shadow_unit_from_durable(BDRVShadowState *s, ShadowChunkMap *map,
                                     int64_t u)
{
    int64_t first = u * SHADOW_META_UNIT_CHUNKS;
    int64_t end = MIN(first + SHADOW_META_UNIT_CHUNKS, s->nb_chunks);
    int64_t c, run;

    memcpy(map->ondisk + u * SHADOW_META_UNIT_PAYLOAD,
           map->durable + u * SHADOW_META_UNIT_PAYLOAD,
           SHADOW_META_UNIT_PAYLOAD);
    if (first >= end) {
        return;
    }
    hbitmap_reset(map->stale, first, end - first);
    for (c = first; c < end; c += run) {
        bool valid = map->durable[c / 8] & (1u << (c % 8));

        /* whole bytes of one kind at once */
        for (run = 1; c + run < end; run++) {
            int64_t n = c + run;
            bool v;

            if (n % 8 == 0 && n + 8 <= end &&
                map->durable[n / 8] == (valid ? 0xff : 0)) {
                run += 7;
                continue;
            }
            v = map->durable[n / 8] & (1u << (n % 8));
            if (v != valid) {
                break;
            }
        }
        if (!valid) {
            hbitmap_set(map->stale, c, run);
        }
    }
}

/*
 * Whether the metadata node reads from its storage, not from a cache of
 * this host: an inactive node's reads may come from such a cache, which
 * QEMU drops when it activates the node (file-posix without
 * cache.direct=on drops the file's page cache), since another host may
 * have written the storage since.  Only a protocol node opened with
 * cache.direct=on, alone or under raw format nodes and filters, is known
 * to have no such cache (librbd's cache, too, is off with it).
 */
static bool GRAPH_RDLOCK shadow_meta_uncached(BDRVShadowState *s)
{
    BlockDriverState *bs;

    for (bs = s->meta.child->bs; bs; bs = bdrv_primary_bs(bs)) {
        if (!(bs->open_flags & BDRV_O_NOCACHE)) {
            return false;
        }
        if (bdrv_primary_bs(bs) && !bs->drv->is_filter &&
            strcmp(bs->drv->format_name, "raw")) {
            return false;
        }
    }
    return true;
}

/*
 * What a load while inactive read (@bits and @seqs by column, as
 * shadow_meta_read_maps() filled them), for the activation: the slots
 * whose every copy of every unit was intact.  NULL where the activation
 * must read again whatever the header says.
 */
static ShadowMapsRead * GRAPH_RDLOCK
shadow_maps_read_keep(BDRVShadowState *s, const ShadowMetaImage *img,
                      uint32_t want, const uint64_t *epochs, uint8_t **bits,
                      uint64_t **seqs, unsigned long **torn,
                      const int64_t *bad, uint32_t past_end)
{
    ShadowMapsRead *kept;
    int64_t units = MAX(shadow_meta_nb_units(img->nb_chunks), 1);
    int j;

    if (!shadow_meta_uncached(s)) {
        return NULL;
    }
    kept = g_new0(ShadowMapsRead, 1);
    kept->nb_chunks = img->nb_chunks;
    kept->session = img->session;
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        /* (a torn copy is rewritten, by the load below: not kept) */
        if (!(want & (1u << (1 + j))) || bad[1 + j] ||
            (past_end & (1u << (1 + j))) ||
            find_first_bit(torn[1 + j], units) < units) {
            continue;
        }
        kept->slots |= 1u << j;
        kept->epoch[j] = epochs[1 + j];
        kept->bits[j] = g_memdup2(bits[1 + j],
                                  units * SHADOW_META_UNIT_PAYLOAD);
        kept->seqs[j] = g_memdup2(seqs[1 + j], units * sizeof(uint64_t));
    }
    return kept;
}

/* What an activation can keep of what its inactive open read */
typedef enum ShadowKeep {
    SHADOW_KEEP_NONE,       /* nothing: every unit is read again */
    SHADOW_KEEP_ALL,        /* every unit */
    SHADOW_KEEP_SOME,       /* all but the units set in *@reread */
} ShadowKeep;

/* Whether the sum of each wanted slot's unit numbers is the one of @img */
static bool shadow_maps_sums_hold(const ShadowMetaImage *img, uint32_t want,
                                  uint64_t **seqs)
{
    int64_t units = shadow_meta_nb_units(img->nb_chunks);
    int j;

    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        if ((want & (1u << (1 + j))) &&
            img->slots[j].seq_sum != shadow_seq_sum(seqs[1 + j], units)) {
            return false;
        }
    }
    return true;
}

/*
 * How much of @kept holds as the maps are now, by the header @img (see
 * ShadowMapsRead), for the slots in @want.  A slot whose sum differs
 * holds but for the units whose numbers @img lists with other low bits
 * than the ones read: those are set in *@reread (a bitmap of units, which
 * the caller frees), to be read again, after which the sums must hold
 * (shadow_maps_sums_hold()).  If the list shows no such unit, what
 * changed is beyond what it can show: nothing holds.
 * @seqs: the children's unit numbers by column, which a @kept without
 * copies counts on.
 */
static ShadowKeep shadow_maps_read_hold(BDRVShadowState *s,
                                        const ShadowMapsRead *kept,
                                        const ShadowMetaImage *img,
                                        uint32_t want,
                                        uint64_t **seqs,
                                        unsigned long **reread)
{
    int64_t units = shadow_meta_nb_units(img->nb_chunks), u;
    g_autofree unsigned long *listed = NULL;
    const uint64_t *read;
    uint64_t low;
    bool found;
    int j, bits;

    *reread = NULL;
    if (!kept || img->in_use || !img->unique_seq ||
        img->session != kept->session ||
        img->nb_chunks != kept->nb_chunks || (want & 1)) {
        return SHADOW_KEEP_NONE;
    }
    if (kept->in_memory && qatomic_read(&s->maps_touched)) {
        return SHADOW_KEEP_NONE;    /* the maps in memory are not as read */
    }
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        const ShadowSlot *slot = &img->slots[j];

        if (!(want & (1u << (1 + j)))) {
            continue;
        }
        if (!(kept->slots & (1u << j)) || slot->epoch != kept->epoch[j] ||
            !slot->seq_sum_known) {
            return SHADOW_KEEP_NONE;
        }
        read = kept->in_memory ? seqs[1 + j] : kept->seqs[j];
        if (slot->seq_sum == shadow_seq_sum(read, units)) {
            continue;
        }
        if (!listed) {
            listed = bitmap_new(MAX(units, 1));
        }
        found = false;
        for (u = 0; u < units; u++) {
            bits = shadow_meta_listed_seq(img, j, u, &low);
            if (!bits) {
                return SHADOW_KEEP_NONE;    /* no list */
            }
            if ((read[u] ^ low) & ((1ull << bits) - 1)) {
                set_bit(u, listed);
                found = true;
            }
        }
        if (!found) {
            return SHADOW_KEEP_NONE;
        }
    }
    if (!listed) {
        return SHADOW_KEEP_ALL;
    }
    *reread = g_steal_pointer(&listed);
    return SHADOW_KEEP_SOME;
}

/*
 * Read the maps from the metadata child, check them and the children's
 * identities, recover after an unclean stop, and replace every child's
 * map with the result.  Writes nothing: shadow_state_begin_writing()
 * makes the result durable before the first write to a child.  On error
 * the maps are those of a node without metadata, or as they were but
 * for the durable maps and their sequence numbers, which may hold part
 * of what was read (shadow_state_load() then leaves the maps unknown).
 */
static int shadow_state_load_maps(BDRVShadowState *s, Error **errp)
{
    ShadowMeta *m = &s->meta;
    ShadowMetaImage img;
    g_autofree ShadowIdentity *ids = g_new0(ShadowIdentity, s->num_children);
    g_autofree ShadowChild **by_slot = g_new0(ShadowChild *,
                                              SHADOW_META_SLOTS);
    uint8_t *bits[SHADOW_META_COLUMNS] = { NULL };
    uint64_t *seqs[SHADOW_META_COLUMNS] = { NULL };
    unsigned long *torn[SHADOW_META_COLUMNS] = { NULL };
    uint64_t epochs[SHADOW_META_COLUMNS] = { 0 };
    int64_t bad[SHADOW_META_COLUMNS];
    const char *changed[SHADOW_META_SLOTS] = { NULL };
    HBitmap *intent = NULL, *astale;
    ShadowChild *recorded;
    int64_t size, old_nb, c, moved, recovered = 0, orphans = 0;
    uint32_t want = 0, past_end = 0, forgotten = 0, maps_lost = 0;
    g_autofree int64_t *short_len = NULL;
    /* Consumed by this load, whatever it finds */
    g_autoptr(ShadowMapsRead) kept = g_steal_pointer(&m->read_inactive);
    /* What this load, if inactive, keeps for the activation */
    g_autoptr(ShadowMapsRead) keep = NULL;
    /* The maps in memory are not yet what was read */
    bool remake = true;
    ShadowKeep hold;
    g_autofree unsigned long *reread = NULL;
    /* SHADOW_KEEP_SOME in memory: the unit numbers before the read again */
    uint64_t *before[SHADOW_META_COLUMNS] = { NULL };
    bool fresh;
    int i, j, ret;

    if (s->num_children > SHADOW_META_SLOTS) {
        error_setg(errp, "shadow: with metadata a node has at most %d "
                   "children", SHADOW_META_SLOTS);
        return -EINVAL;
    }
    for (i = 0; i < s->num_children; i++) {
        ret = shadow_meta_identify(s->children[i]->child->bs, &ids[i]);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "shadow: cannot identify the storage "
                             "of child '%s' (%s)",
                             shadow_child_name(s->children[i]),
                             ids[i].filename);
            return ret;
        }
        for (j = 0; j < i; j++) {
            if (!memcmp(ids[i].hash, ids[j].hash, sizeof(ids[i].hash))) {
                error_setg(errp, "shadow: children '%s' and '%s' use the same "
                           "storage (%s); with metadata each child needs its "
                           "own", shadow_child_name(s->children[j]),
                           shadow_child_name(s->children[i]),
                           ids[i].filename);
                return -EINVAL;
            }
        }
    }

    /* An activation that may keep the maps needs no row of them */
    ret = shadow_meta_read_header(s, &img, kept != NULL, &fresh, errp);
    if (ret < 0) {
        return ret;
    }
    /* A new disk has the active child's length (shadow_open()) */
    for (i = 0; fresh && i < s->num_children; i++) {
        BlockDriverState *cbs = s->children[i]->child->bs;

        ret = shadow_state_check_child_length(s, cbs, bdrv_getlength(cbs),
                                              errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (fresh && m->writable) {
        /* Better refused now than failing the guest's first write */
        ret = shadow_meta_ensure_size(s, s->nb_chunks, errp);
        if (ret < 0) {
            goto out;
        }
    }
    if (fresh) {
        shadow_state_format(s, ids);
        ret = 0;
        goto out;
    }

    if (img.chunk_size != s->chunk_size) {
        error_setg(errp, "shadow: metadata node '%s' was written with "
                   "chunk-size %" PRId64 ", but the node has chunk-size %"
                   PRId64, shadow_meta_name(s), img.chunk_size,
                   s->chunk_size);
        ret = -EINVAL;
        goto out;
    }
    /*
     * The disk has the length the metadata records.  The active child must
     * be that long; a shadow that is not (degraded when the disk grew, so
     * never grown) opens degraded, stale past its end (below)
     */
    short_len = g_new(int64_t, s->num_children);
    for (i = 0; i < s->num_children; i++) {
        int64_t len = bdrv_getlength(s->children[i]->child->bs);

        short_len[i] = len >= 0 && len < img.length ? len : -1;
        if (short_len[i] >= 0 && s->children[i] == s->active) {
            error_setg(errp, "shadow: metadata node '%s' describes a disk of "
                       "%" PRId64 " bytes, but child '%s' has only %" PRId64,
                       shadow_meta_name(s), img.length,
                       shadow_child_name(s->children[i]), len);
            ret = -EINVAL;
            goto out;
        }
    }
    if (img.length != s->length) {
        shadow_state_reset_geometry(s, img.length);
    }
    size = bdrv_getlength(m->child->bs);
    if (size >= 0 && size < shadow_meta_size(img.nb_chunks)) {
        error_setg(errp, "shadow: metadata node '%s' is corrupt: it has %"
                   PRId64 " bytes, its maps need %" PRId64,
                   shadow_meta_name(s), size,
                   shadow_meta_size(img.nb_chunks));
        ret = -EINVAL;
        goto out;
    }

    /* Each child has its slot, and each slot its child */
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        for (j = 0; j < SHADOW_META_SLOTS; j++) {
            if (img.slots[j].used &&
                !memcmp(img.slots[j].id.hash, ids[i].hash,
                        sizeof(ids[i].hash))) {
                break;
            }
        }
        if (j == SHADOW_META_SLOTS) {
            error_setg(errp, "shadow: child '%s' (%s) is not recorded in "
                       "metadata node '%s'; add children at runtime with "
                       "x-blockdev-change (one added just before the process "
                       "stopped may not be recorded yet: open the node "
                       "without it, then add it)", shadow_child_name(sc),
                       ids[i].filename, shadow_meta_name(s));
            ret = -EINVAL;
            goto out;
        }
        by_slot[j] = sc;
        /* Stamps count only in a header that was closed cleanly */
        img.slots[j].stamped &= !img.in_use;
        changed[j] = shadow_slot_changed(&img.slots[j], &ids[i]);
    }
    /*
     * A recorded child that is not given (x-blockdev-change removed it and
     * the process stopped before the next commit recorded that, or it was
     * left out) is forgotten, unless it was the active one or, checked
     * below with I1, holds the only copy of some chunks
     */
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        if (img.slots[j].used && !by_slot[j]) {
            if (j == img.active_slot) {
                error_setg(errp, "shadow: metadata node '%s' records child "
                           "'%s' (%s), the active child, which is not among "
                           "the children of node '%s'", shadow_meta_name(s),
                           img.slots[j].node_name, img.slots[j].filename,
                           bdrv_get_node_name(s->bs));
                ret = -EINVAL;
                goto out;
            }
            forgotten |= 1u << j;
        }
    }

    /*
     * Read the maps, and the intent map after an unclean stop.  The
     * geometry is the recorded one now.  A child's map is read straight
     * into its durable map: a buffer of the whole map would be pages to
     * fault in while a migration's guest waits.  Nothing reads the
     * durable maps until this load succeeds (a failed one leaves the
     * maps unknown, shadow_state_load()).
     */
    old_nb = img.nb_chunks;
    assert(old_nb == s->nb_chunks);
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        if (by_slot[j]) {
            want |= 1u << (1 + j);
            epochs[1 + j] = img.slots[j].epoch;
            bits[1 + j] = by_slot[j]->map.durable;
            seqs[1 + j] = by_slot[j]->map.unit_seq;
            torn[1 + j] = bitmap_new(shadow_map_units(s));
        }
    }
    if (img.in_use) {
        want |= 1;
        epochs[0] = img.session;
        bits[0] = g_malloc0(shadow_map_units(s) *
                            SHADOW_META_UNIT_PAYLOAD);
        seqs[0] = g_new0(uint64_t, shadow_map_units(s));
    }
    hold = shadow_maps_read_hold(s, kept, &img, want, seqs, &reread);
    if (hold != SHADOW_KEEP_NONE) {
        /* An activation, and nothing changed since the inactive load... */
        remake = !kept->in_memory;
        for (j = 0; remake && j < SHADOW_META_SLOTS; j++) {
            if (want & (1u << (1 + j))) {
                memcpy(bits[1 + j], kept->bits[j],
                       shadow_map_units(s) * SHADOW_META_UNIT_PAYLOAD);
                memcpy(seqs[1 + j], kept->seqs[j],
                       shadow_map_units(s) * sizeof(uint64_t));
            }
        }
    }
    if (hold == SHADOW_KEEP_SOME) {
        /* ...but the units whose numbers moved since */
        for (j = 0; !remake && j < SHADOW_META_SLOTS; j++) {
            if (want & (1u << (1 + j))) {
                before[1 + j] = g_memdup2(seqs[1 + j],
                                          shadow_map_units(s) *
                                          sizeof(uint64_t));
            }
        }
        ret = shadow_meta_read_maps(s, &img, reread, want, epochs, false,
                                    bits, seqs, torn, 1, bad, &past_end);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "shadow: cannot read metadata node "
                             "'%s'", shadow_meta_name(s));
            goto out;
        }
        for (j = 0; j < SHADOW_META_COLUMNS; j++) {
            if (bad[j]) {
                hold = SHADOW_KEEP_NONE;    /* the full read reports it */
            }
        }
        if (past_end || !shadow_maps_sums_hold(&img, want, seqs)) {
            hold = SHADOW_KEEP_NONE;
        }
        if (hold == SHADOW_KEEP_NONE) {
            remake = true;
        }
    }
    if (hold != SHADOW_KEEP_NONE) {
        memset(bad, 0, sizeof(bad));
        trace_shadow_load_kept(s, shadow_nb_units(s), kept->in_memory,
                               reread ? bitmap_count_one(reread,
                                                         shadow_nb_units(s))
                                      : 0);
    } else {
        past_end = 0;
        ret = shadow_meta_read_maps(s, &img, NULL, want, epochs, img.in_use,
                                    bits, seqs, torn, 1, bad, &past_end);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "shadow: cannot read metadata node "
                             "'%s'", shadow_meta_name(s));
            goto out;
        }
        if (s->bs->open_flags & BDRV_O_INACTIVE) {
            keep = shadow_maps_read_keep(s, &img, want, epochs, bits, seqs,
                                         torn, bad, past_end);
        }
    }
    /* As read from here on, until a change sets it */
    qatomic_set(&s->maps_touched, false);
    /*
     * Where the next writes go is the copies as read, not numbers that
     * failed before (a load starts a session of its own, below, and
     * ShadowMapsRead never spans two)
     */
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        if (by_slot[j]) {
            memset(by_slot[j]->map.unit_seq_failed, 0,
                   shadow_map_units(s) * sizeof(uint64_t));
        }
    }

    /* After a clean stop every unit of a slot is as it recorded (D3) */
    for (j = 0; !img.in_use && j < SHADOW_META_SLOTS; j++) {
        if (by_slot[j] && !changed[j] &&
            shadow_maps_lost(&img.slots[j], seqs[1 + j],
                             shadow_meta_nb_units(old_nb))) {
            maps_lost |= 1u << j;
        }
    }

    /* From here on nothing fails but the final checks */
    qemu_spin_lock(&s->lock);
    recorded = by_slot[img.active_slot];
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        ShadowChild *sc = by_slot[j];
        ShadowChunkMap *map;

        if (!sc) {
            continue;
        }
        map = &sc->map;
        sc->slot = j;
        if (remake) {
            shadow_stale_from_durable(s, map);
            memcpy(map->ondisk, map->durable,
                   shadow_nb_units(s) * SHADOW_META_UNIT_PAYLOAD);
        } else if (before[1 + j]) {
            /*
             * A unit of the same number is the same unit (ShadowMapsRead).
             * Unit by unit costs more per unit than the whole map does:
             * for many, the whole map.
             */
            moved = 0;
            for (c = 0; c < shadow_nb_units(s); c++) {
                moved += before[1 + j][c] != map->unit_seq[c];
            }
            if (moved > MAX(shadow_nb_units(s) / 16, 1)) {
                shadow_stale_from_durable(s, map);
                memcpy(map->ondisk, map->durable,
                       shadow_nb_units(s) * SHADOW_META_UNIT_PAYLOAD);
            } else {
                for (c = 0; c < shadow_nb_units(s); c++) {
                    if (before[1 + j][c] != map->unit_seq[c]) {
                        shadow_unit_from_durable(s, map, c);
                    }
                }
            }
        }
        shadow_hbitmap_clear(map->unflushed);
        shadow_hbitmap_clear(map->flushing);
        shadow_hbitmap_clear(map->fresh);
        shadow_hbitmap_clear(map->fresh_flushing);
        bitmap_zero(map->dirty_units, shadow_nb_units(s));
        bitmap_zero(map->unsure_units, shadow_nb_units(s));
        /*
         * The three changes below (torn, past the end, failed checks) do
         * not set maps_touched: shadow_maps_read_keep() keeps no slot
         * that has them, so no activation keeps these maps in memory.
         *
         * A copy that a crash tore stays torn until the unit is written
         * again, and a clean header makes it corruption (shadow_meta_
         * pick_copy()): written before any clean header, at the first
         * commit, over the torn copy (the other holds the current one)
         */
        for (c = find_first_bit(torn[1 + j], shadow_nb_units(s));
             c < shadow_nb_units(s);
             c = find_next_bit(torn[1 + j], shadow_nb_units(s), c + 1)) {
            set_bit(c, map->unsure_units);
            shadow_dirty_units(sc, c * SHADOW_META_UNIT_CHUNKS, 1);
        }
        if (past_end & (1u << (1 + j))) {
            /*
             * A grow that crashed before its header left bits past the
             * end.  Counted as set on disk, and their unit dirty, they go
             * with the first commit (before any write to a child, D3),
             * which writes the unit: until then ondisk is not exact, and
             * a grow's chunks then start with no holder on disk but
             * those it makes (shadow_commit_length() counts on that).
             */
            for (c = old_nb; c < shadow_meta_nb_units(old_nb) *
                                 SHADOW_META_UNIT_CHUNKS; c++) {
                map->ondisk[c / 8] |= 1u << (c % 8);
            }
            shadow_dirty_units(sc, MAX(old_nb - 1, 0), 1);
        }
        if (bad[1 + j]) {
            shadow_load_note(s, true, "shadow: node '%s': %" PRId64 " units "
                             "of the map of child '%s' in metadata node '%s' "
                             "fail their check; their chunks are stale on "
                             "that child", bdrv_get_node_name(s->bs),
                             bad[1 + j], shadow_child_name(sc),
                             shadow_meta_name(s));
            for (c = 0; c < shadow_meta_nb_units(old_nb); c++) {
                shadow_dirty_units(sc, c * SHADOW_META_UNIT_CHUNKS, 1);
            }
        }
    }

    if (img.in_use) {
        intent = hbitmap_alloc(s->nb_chunks, 0);
        if (s->nb_chunks) {
            hbitmap_deserialize_part(intent, bits[0], 0, s->nb_chunks, true);
        }
        if (bad[0]) {
            shadow_load_note(s, true, "shadow: node '%s': %" PRId64 " units "
                             "of the intent map in metadata node '%s' fail "
                             "their check; their chunks are treated as "
                             "written", bdrv_get_node_name(s->bs), bad[0],
                             shadow_meta_name(s));
        }
        recovered = shadow_recover(s, intent, recorded);
        hbitmap_free(intent);
    }

    /* A replaced or rewritten image, or maps that lost updates: not trusted */
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        ShadowChild *sc = by_slot[j];

        if (!sc || (!changed[j] && !(maps_lost & (1u << j)))) {
            continue;
        }
        if (maps_lost & (1u << j)) {
            /*
             * Its maps may say valid where the lost version said stale:
             * nothing it holds counts, the active child's included (I1
             * below refuses the open if no other child holds a chunk)
             */
            shadow_load_note(s, true, "shadow: node '%s': metadata node '%s' "
                             "lacks updates of the maps of child '%s' that "
                             "its last clean stop recorded (a lost or zeroed "
                             "write?); what the child holds is not trusted",
                             bdrv_get_node_name(s->bs), shadow_meta_name(s),
                             shadow_child_name(sc));
            shadow_mark_stale_run(s, sc, 0, s->nb_chunks);
            continue;
        }
        shadow_load_note(s, true, "shadow: node '%s': the storage of child "
                         "'%s' (%s) was %s", bdrv_get_node_name(s->bs),
                         shadow_child_name(sc), img.slots[j].filename,
                         changed[j]);
        if (sc == recorded && !hbitmap_count(sc->map.stale)) {
            /* What the active child holds now is the disk */
            for (i = 0; i < s->num_children; i++) {
                if (s->children[i] != sc) {
                    shadow_mark_stale_run(s, s->children[i], 0,
                                          s->nb_chunks);
                }
            }
        } else if (sc == recorded) {
            qemu_spin_unlock(&s->lock);
            error_setg(errp, "shadow: the storage of child '%s' (%s), the "
                       "active child recorded in metadata node '%s', was %s "
                       "while it was still hydrating; its chunks can no "
                       "longer be told apart.  To start over with '%s' as "
                       "the disk, give the node a zeroed metadata image",
                       shadow_child_name(sc), img.slots[j].filename,
                       shadow_meta_name(s), changed[j],
                       shadow_child_name(sc));
            ret = -EINVAL;
            goto out_reset;
        } else {
            shadow_mark_stale_run(s, sc, 0, s->nb_chunks);
        }
    }

    for (i = 0; i < s->num_children; i++) {
        if (short_len[i] >= 0) {
            shadow_state_short_child(s, s->children[i], short_len[i]);
        }
    }

    /*
     * I1 must hold, or data is missing.  Only the active child's stale
     * chunks need a holder: visiting those alone keeps the activation of
     * a large disk short.
     */
    astale = s->active->map.stale;
    for (c = hbitmap_next_dirty(astale, 0, s->nb_chunks); c >= 0;
         c = c + 1 < s->nb_chunks ?
             hbitmap_next_dirty(astale, c + 1, s->nb_chunks - c - 1) : -1) {
        if (!shadow_state_holder(s, c, s->active)) {
            orphans++;
        }
    }
    if (orphans && forgotten) {
        qemu_spin_unlock(&s->lock);
        j = ctz32(forgotten);
        error_setg(errp, "shadow: metadata node '%s' records child '%s' (%s), "
                   "which is not among the children of node '%s', and the "
                   "others lack %" PRId64 " chunks: give it back",
                   shadow_meta_name(s), img.slots[j].node_name,
                   img.slots[j].filename, bdrv_get_node_name(s->bs),
                   orphans);
        ret = -EINVAL;
        goto out_reset;
    }
    if (orphans) {
        qemu_spin_unlock(&s->lock);
        error_setg(errp, "shadow: metadata node '%s' says that no child "
                   "holds %" PRId64 " chunks (corrupt map units?); refusing "
                   "to guess.  To start over with '%s' as the disk, give the "
                   "node a zeroed metadata image", shadow_meta_name(s),
                   orphans, shadow_child_name(s->active));
        ret = -EINVAL;
        goto out_reset;
    }

    /* Node names and identities as they are now */
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        m->slots[j] = img.slots[j];
        if (forgotten & (1u << j)) {
            memset(&m->slots[j], 0, sizeof(m->slots[j]));
        }
        if (by_slot[j]) {
            for (i = 0; s->children[i] != by_slot[j]; i++) {
                /* find its identity */
            }
            shadow_slot_fill(&m->slots[j], by_slot[j], &ids[i],
                             img.slots[j].epoch);
            /* The stamps stay until the children are written */
            m->slots[j].stamped = img.slots[j].stamped;
            m->slots[j].id.size = img.slots[j].id.size;
            m->slots[j].id.ctime_sec = img.slots[j].id.ctime_sec;
            m->slots[j].id.ctime_nsec = img.slots[j].id.ctime_nsec;
        }
    }
    shadow_table_changed(m);
    m->in_use = false;
    /*
     * Its own session from the load on (a header not in use ignores it,
     * and the first write starts another): a session is then one process
     * between two loads, which ShadowMapsRead counts on
     */
    m->session = shadow_new_epoch();
    m->durable_active_slot = recorded ? img.active_slot : -1;
    shadow_state_reset_intent(s);
    qatomic_set(&s->active_complete, !hbitmap_count(s->active->map.stale));
    if (keep && !qatomic_read(&s->maps_touched)) {
        /* Nothing changed what was read: the maps in memory keep it */
        for (j = 0; j < SHADOW_META_SLOTS; j++) {
            g_clear_pointer(&keep->bits[j], g_free);
            g_clear_pointer(&keep->seqs[j], g_free);
        }
        keep->in_memory = true;
    }
    m->read_inactive = g_steal_pointer(&keep);
    qemu_spin_unlock(&s->lock);

    if (img.in_use) {
        shadow_load_note(s, false, "shadow: node '%s' was not closed "
                         "cleanly: %" PRId64 " chunks of regions with writes "
                         "in flight are now valid on one child only",
                         bdrv_get_node_name(s->bs), recovered);
    }
    if (!recorded) {
        /* Written before the removal of the active child was recorded */
        shadow_load_note(s, false, "shadow: node '%s' opens with active "
                         "child '%s', the metadata recorded a child it no "
                         "longer has", bdrv_get_node_name(s->bs),
                         shadow_child_name(s->active));
    } else if (recorded != s->active) {
        shadow_load_note(s, false, "shadow: node '%s' opens with active "
                         "child '%s', the metadata recorded '%s'",
                         bdrv_get_node_name(s->bs),
                         shadow_child_name(s->active),
                         shadow_child_name(recorded));
    }
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        if (forgotten & (1u << j)) {
            shadow_load_note(s, false, "shadow: node '%s': metadata node '%s' "
                             "records child '%s' (%s), which is not among "
                             "its children; no chunk depends on it, and it "
                             "is forgotten", bdrv_get_node_name(s->bs),
                             shadow_meta_name(s), img.slots[j].node_name,
                             img.slots[j].filename);
        }
    }
    trace_shadow_load(s, img.in_use, recovered);
    ret = 0;
    goto out;

out_reset:
    /* Back to the maps of a node without metadata */
    qemu_spin_lock(&s->lock);
    qatomic_set(&s->maps_touched, true);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc == s->active) {
            shadow_hbitmap_clear(sc->map.stale);
        } else {
            hbitmap_set(sc->map.stale, 0, s->nb_chunks);
        }
    }
    qatomic_set(&s->active_complete, true);
    qemu_spin_unlock(&s->lock);
out:
    /* The other columns are the children's maps */
    g_free(bits[0]);
    g_free(seqs[0]);
    for (j = 0; j < SHADOW_META_COLUMNS; j++) {
        g_free(torn[j]);
        g_free(before[j]);
    }
    shadow_meta_image_cleanup(&img);
    return ret;
}

/*
 * shadow_state_load_maps(), which an inactive node survives: after a
 * failed load there are no maps to read by, and until a load succeeds
 * (maps_unknown) reads, block status and switches fail
 */
int shadow_state_load(BDRVShadowState *s, Error **errp)
{
    int ret = shadow_state_load_maps(s, errp);

    s->maps_unknown = ret < 0;
    if (ret == 0) {
        /*
         * The maps are those on disk now, and the header is not in use:
         * a metadata write that failed before (a migration that failed
         * back) no longer stands between guest writes and the disk
         */
        qatomic_set(&s->meta.failed, false);
    }
    /* A failed load takes reads off the path that needs no map */
    qemu_spin_lock(&s->lock);
    qatomic_set(&s->active_complete,
                ret == 0 && !hbitmap_count(s->active->map.stale));
    qemu_spin_unlock(&s->lock);
    return ret;
}

/*
 * Metadata: writing
 */

/* Returns the table_gen the image is of */
static uint64_t shadow_header_image(BDRVShadowState *s, ShadowMetaImage *img,
                                    bool in_use, int active_slot)
{
    ShadowMeta *m = &s->meta;
    uint64_t gen;
    int64_t nb_units, u;
    bool listed;
    int i;

    memset(img, 0, sizeof(*img));
    img->in_use = in_use;
    img->chunk_size = s->chunk_size;
    img->active_slot = active_slot;
    img->session = m->session;
    memcpy(img->slots, m->slots, sizeof(img->slots));
    for (i = 0; i < SHADOW_META_SLOTS; i++) {
        /* While children may be written, no stamp holds (D3) */
        img->slots[i].stamped &= !in_use;
        img->slots[i].seq_sum_known = false;
    }
    /* (unit_seq: a grow in another thread may move it) */
    qemu_spin_lock(&s->lock);
    img->length = m->recorded_length;
    gen = m->table_gen;
    img->nb_chunks = DIV_ROUND_UP(img->length, s->chunk_size);
    nb_units = shadow_meta_nb_units(img->nb_chunks);
    /* And, if they fit, the low bits of each unit's number (ShadowMapsRead) */
    listed = !in_use && shadow_meta_list_seqs(img);
    for (i = 0; listed && i < s->num_children; i++) {
        listed = img->slots[s->children[i]->slot].used;
    }
    img->unit_seqs_known = listed;
    for (i = 0; !in_use && i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        img->slots[sc->slot].seq_sum_known = true;
        img->slots[sc->slot].seq_sum = shadow_seq_sum(sc->map.unit_seq,
                                                      nb_units);
        for (u = 0; listed && u < nb_units; u++) {
            shadow_meta_list_seq(img, sc->slot, u, sc->map.unit_seq[u]);
        }
    }
    qemu_spin_unlock(&s->lock);
    return gen;
}

/* A map unit on its way to disk */
typedef struct ShadowUnitWrite {
    ShadowChild *sc;    /* NULL for the intent map */
    int64_t index;
    uint8_t *buf;       /* the whole unit, as written */
    /* Once written: its number, and the unit's number before */
    uint64_t seq;
    uint64_t prev_seq;
} ShadowUnitWrite;

static void shadow_serialize(BDRVShadowState *s, HBitmap *hb, int64_t u,
                             uint8_t *out)
{
    int64_t start = u * SHADOW_META_UNIT_CHUNKS;
    int64_t count = MIN(SHADOW_META_UNIT_CHUNKS, s->nb_chunks - start);

    memset(out, 0, SHADOW_META_UNIT_PAYLOAD);
    hbitmap_serialize_part(hb, out, start, count);
}

static uint8_t *shadow_unit_bits(uint8_t *bits, int64_t u)
{
    return bits + u * SHADOW_META_UNIT_PAYLOAD;
}

/*
 * Unit @u of @sc's map as D1 allows it on disk now, into @want.  Returns
 * whether some valid chunk had to be left out (it waits for a flush).
 * Locked.
 */
static bool shadow_want_unit(BDRVShadowState *s, ShadowChild *sc, int64_t u,
                             uint8_t *want)
{
    ShadowChunkMap *map = &sc->map;
    uint8_t st[SHADOW_META_UNIT_PAYLOAD], un[SHADOW_META_UNIT_PAYLOAD];
    uint8_t fl[SHADOW_META_UNIT_PAYLOAD];
    uint8_t *trusted = shadow_unit_bits(map->durable, u);
    int64_t start = u * SHADOW_META_UNIT_CHUNKS;
    int64_t count = MIN(SHADOW_META_UNIT_CHUNKS, s->nb_chunks - start);
    bool held_back = false;
    int i;

    shadow_serialize(s, map->stale, u, st);
    shadow_serialize(s, map->fresh, u, un);
    shadow_serialize(s, map->fresh_flushing, u, fl);
    for (i = 0; i < SHADOW_META_UNIT_PAYLOAD; i++) {
        uint8_t pending = un[i] | fl[i];

        want[i] = ~st[i] & (~pending | trusted[i]);
        held_back |= ~st[i] & pending & ~trusted[i];
    }
    /* No bit past the disk's last chunk: bytes at once, not bits */
    if (count < SHADOW_META_UNIT_CHUNKS) {
        int64_t whole = DIV_ROUND_UP(count, 8);

        if (count % 8) {
            want[count / 8] &= (1u << (count % 8)) - 1;
        }
        memset(want + whole, 0, SHADOW_META_UNIT_PAYLOAD - whole);
    }
    return held_back;
}

/*
 * The map changes a commit writes, in two phases (D5): phase 1 only sets
 * valid bits (each unit as on disk, plus what D1 allows); phase 2, after a
 * flush of the metadata, clears the bits that must be cleared, but only
 * where another child holds the chunk on disk after phase 1; other clears
 * wait for a later commit.  A crash at any point leaves every chunk with a
 * holder on disk.
 */
typedef struct ShadowMapChanges {
    GArray *phase1;     /* ShadowUnitWrite */
    GArray *phase2;
} ShadowMapChanges;

/* One dirty unit of one child while a commit takes it */
typedef struct ShadowUnitPlan {
    uint8_t want[SHADOW_META_UNIT_PAYLOAD];    /* D1 allows these */
    uint8_t phase1[SHADOW_META_UNIT_PAYLOAD];  /* on disk | want */
    uint8_t final[SHADOW_META_UNIT_PAYLOAD];   /* want | clears that wait */
} ShadowUnitPlan;

static gpointer shadow_plan_key(BDRVShadowState *s, int child, int64_t u)
{
    return GSIZE_TO_POINTER(child * shadow_nb_units(s) + u + 1);
}

static ShadowUnitWrite shadow_unit_write(BDRVShadowState *s, ShadowChild *sc,
                                         int64_t u, const uint8_t *bits)
{
    ShadowUnitWrite w = {
        .sc = sc, .index = u,
        .buf = qemu_blockalign(s->meta.child->bs, SHADOW_META_UNIT),
    };

    memcpy(w.buf + SHADOW_META_UNIT_HEADER, bits, SHADOW_META_UNIT_PAYLOAD);
    return w;
}

/*
 * Every map unit that must be written now, for D1 and D5, with the trusted
 * bits updated as if the writes will succeed.  Locked.
 */
static ShadowMapChanges shadow_take_changes(BDRVShadowState *s)
{
    ShadowMapChanges ch = {
        .phase1 = g_array_new(false, false, sizeof(ShadowUnitWrite)),
        .phase2 = g_array_new(false, false, sizeof(ShadowUnitWrite)),
    };
    g_autoptr(GHashTable) plans = g_hash_table_new_full(g_direct_hash,
                                                        g_direct_equal, NULL,
                                                        g_free);
    g_autofree uint8_t *kept = g_malloc(SHADOW_META_UNIT_PAYLOAD);
    int64_t nb_units = shadow_nb_units(s);
    int64_t u;
    int i, j, k;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        for (u = find_first_bit(sc->map.dirty_units, nb_units); u < nb_units;
             u = find_next_bit(sc->map.dirty_units, nb_units, u + 1)) {
            ShadowUnitPlan *p = g_new(ShadowUnitPlan, 1);
            const uint8_t *on = shadow_unit_bits(sc->map.ondisk, u);

            if (!shadow_want_unit(s, sc, u, p->want)) {
                clear_bit(u, sc->map.dirty_units);
            }
            for (k = 0; k < SHADOW_META_UNIT_PAYLOAD; k++) {
                p->phase1[k] = on[k] | p->want[k];
            }
            memcpy(p->final, p->want, SHADOW_META_UNIT_PAYLOAD);
            g_hash_table_insert(plans, shadow_plan_key(s, i, u), p);
        }
    }

    /*
     * A chunk's bit may be cleared on one child only if another child
     * keeps it set on disk after phase 2: one that wants it (D1 allows its
     * valid bit), one this commit does not touch, or one whose own clear
     * of it waits.  Phase 1 bits are not enough: two children that both
     * clear a chunk would each count on the other.
     */
    for (u = 0; u < nb_units; u++) {
        bool planned = false;

        /* Most units have no change: a large disk has many */
        for (j = 0; j < s->num_children && !planned; j++) {
            planned = g_hash_table_contains(plans, shadow_plan_key(s, j, u));
        }
        if (!planned) {
            continue;
        }
        memset(kept, 0, SHADOW_META_UNIT_PAYLOAD);
        for (j = 0; j < s->num_children; j++) {
            ShadowUnitPlan *p = g_hash_table_lookup(plans,
                                                    shadow_plan_key(s, j, u));
            const uint8_t *keeps = p ? p->want :
                shadow_unit_bits(s->children[j]->map.ondisk, u);

            for (k = 0; k < SHADOW_META_UNIT_PAYLOAD; k++) {
                kept[k] |= keeps[k];
            }
        }
        /* Bits past the last chunk (a crashed grow's) go at once */
        for (k = (s->nb_chunks - u * SHADOW_META_UNIT_CHUNKS) / 8;
             u == nb_units - 1 && k < SHADOW_META_UNIT_PAYLOAD; k++) {
            int64_t c = u * SHADOW_META_UNIT_CHUNKS + k * 8;

            kept[k] |= c >= s->nb_chunks ? 0xff :
                       (uint8_t)(0xff << (s->nb_chunks - c));
        }

        for (i = 0; i < s->num_children; i++) {
            ShadowChild *sc = s->children[i];
            ShadowUnitPlan *p = g_hash_table_lookup(plans,
                                                    shadow_plan_key(s, i, u));
            bool clears = false;

            if (!p) {
                continue;
            }
            for (k = 0; k < SHADOW_META_UNIT_PAYLOAD; k++) {
                uint8_t clear = p->phase1[k] & ~p->want[k];
                uint8_t wait = clear & ~kept[k];

                if (wait) {
                    /* No other holder on disk: this one's clear waits */
                    p->final[k] |= wait;
                    kept[k] |= wait;
                    set_bit(u, sc->map.dirty_units);
                }
                clears |= clear & ~wait;
            }
            if (memcmp(p->phase1, shadow_unit_bits(sc->map.ondisk, u),
                       SHADOW_META_UNIT_PAYLOAD) ||
                test_bit(u, sc->map.unsure_units)) {
                ShadowUnitWrite w = shadow_unit_write(s, sc, u, p->phase1);

                g_array_append_val(ch.phase1, w);
            }
            if (clears) {
                ShadowUnitWrite w = shadow_unit_write(s, sc, u, p->final);

                g_array_append_val(ch.phase2, w);
            }
            /* Trusted: what D1 allows, not the clears that wait */
            qatomic_set(&s->maps_touched, true);
            memcpy(shadow_unit_bits(sc->map.durable, u), p->want,
                   SHADOW_META_UNIT_PAYLOAD);
        }
    }
    return ch;
}

/*
 * A commit did not write and flush all of @units: trust none of their
 * bits, and write them again (unsure_units).  Locked.
 */
static void shadow_untake_units(BDRVShadowState *s, GArray *units)
{
    guint i;

    for (i = 0; i < units->len; i++) {
        ShadowUnitWrite *w = &g_array_index(units, ShadowUnitWrite, i);

        if (w->sc) {
            qatomic_set(&s->maps_touched, true);
            memset(shadow_unit_bits(w->sc->map.durable, w->index), 0,
                   SHADOW_META_UNIT_PAYLOAD);
            set_bit(w->index, w->sc->map.dirty_units);
            set_bit(w->index, w->sc->map.unsure_units);
        }
    }
}

/*
 * No flush made @units durable: each written one may be lost, so it is
 * a write that failed (unit_seq_failed), and the unit's current version
 * the one before, maybe the only durable one, which the next write must
 * not overwrite.  Locked.
 */
static void shadow_units_not_durable(GArray *units)
{
    guint i;

    for (i = 0; i < units->len; i++) {
        ShadowUnitWrite *w = &g_array_index(units, ShadowUnitWrite, i);

        if (w->sc && w->seq) {
            ShadowChunkMap *map = &w->sc->map;

            map->unit_seq_failed[w->index] =
                MAX(map->unit_seq_failed[w->index], w->seq);
            map->unit_seq[w->index] = w->prev_seq;
        }
    }
}

/* @units are on disk, flushed: ondisk is exact for them.  Locked. */
static void shadow_units_sure(GArray *units)
{
    guint i;

    for (i = 0; i < units->len; i++) {
        ShadowUnitWrite *w = &g_array_index(units, ShadowUnitWrite, i);

        if (w->sc) {
            clear_bit(w->index, w->sc->map.unsure_units);
        }
    }
}

static void shadow_free_units(GArray *units)
{
    guint i;

    for (i = 0; i < units->len; i++) {
        qemu_vfree(g_array_index(units, ShadowUnitWrite, i).buf);
    }
    g_array_free(units, true);
}

/*
 * Write @units: each valid map unit as the next version of its unit (the
 * copy not holding the current one), recorded as on disk once written.
 * The maps' arrays are read and written under the lock: a grow from a
 * request in another thread may move them (shadow_child_map_grow()).
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_write_units(BDRVShadowState *s, GArray *units, BdrvRequestFlags flags)
{
    guint i;
    int ret = 0;

    for (i = 0; i < units->len && ret == 0; i++) {
        ShadowUnitWrite *w = &g_array_index(units, ShadowUnitWrite, i);
        ShadowChild *sc = w->sc;
        uint64_t prev_seq = 0, seq = 0;

        if (sc) {
            qemu_spin_lock(&s->lock);
            prev_seq = sc->map.unit_seq[w->index];
            seq = prev_seq + 1;
            if (sc->map.unit_seq_failed[w->index] >= seq) {
                /* It may be on disk: the same copy, a number of its own */
                seq = sc->map.unit_seq_failed[w->index] + 2;
            }
            qemu_spin_unlock(&s->lock);
        }
        if (sc) {
            shadow_meta_encode_unit(w->buf, 1 + sc->slot,
                                    s->meta.slots[sc->slot].epoch, w->index,
                                    seq, w->buf + SHADOW_META_UNIT_HEADER);
        }
        ret = bdrv_co_pwrite(s->meta.child,
                             shadow_meta_unit_offset(w->index,
                                                     sc ? 1 + sc->slot : 0,
                                                     seq),
                             SHADOW_META_UNIT, w->buf, flags);
        if (!sc) {
            continue;       /* the intent map: no child's map */
        }
        qemu_spin_lock(&s->lock);
        qatomic_set(&s->maps_touched, true);
        if (ret == 0) {
            /* The other copy holds the previous version from now on */
            w->prev_seq = prev_seq;
            w->seq = seq;
            sc->map.unit_seq[w->index] = seq;
            memcpy(shadow_unit_bits(sc->map.ondisk, w->index),
                   w->buf + SHADOW_META_UNIT_HEADER, SHADOW_META_UNIT_PAYLOAD);
        } else {
            sc->map.unit_seq_failed[w->index] = seq;
        }
        qemu_spin_unlock(&s->lock);
    }
    return ret;
}

/*
 * The first chunk in [@c, @end) that @map's child does not hold (see
 * shadow_commit_length()), or @end.  Locked.
 */
static int64_t shadow_held_until(ShadowChunkMap *map, int64_t c, int64_t end)
{
    HBitmap *not_held[] = { map->stale, map->fresh, map->fresh_flushing };
    int64_t stop = shadow_bits_next_zero(map->ondisk, c, end), d;
    int i;

    for (i = 0; i < ARRAY_SIZE(not_held) && stop > c; i++) {
        d = hbitmap_next_dirty(not_held[i], c, stop - c);
        if (d >= 0) {
            stop = d;
        }
    }
    return stop;
}

/*
 * D5 for a disk that grew: once the maps on disk (flushed, by this commit
 * or an earlier one) show a holder of every chunk up to length_to_record,
 * headers may record that length.  A holder is a child whose bit is set
 * on disk and on which the chunk is valid, its data flushed since: a bit
 * of a child the chunk is stale on may be going, and one of a chunk not
 * yet flushed is not a holder.  Called after phase 2, so that this
 * commit's header records the length.
 */
static void shadow_commit_length(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    int64_t c, end, held;
    int i;

    qemu_spin_lock(&s->lock);
    c = DIV_ROUND_UP(m->recorded_length, s->chunk_size);
    end = DIV_ROUND_UP(m->length_to_record, s->chunk_size);
    if (m->length_to_record <= m->recorded_length) {
        goto out;
    }
    /* By runs: a grow of terabytes is millions of chunks */
    while (c < end) {
        held = c;
        for (i = 0; i < s->num_children && held < end; i++) {
            held = MAX(held, shadow_held_until(&s->children[i]->map, c, end));
        }
        if (held == c) {
            trace_shadow_length_waits(s, m->length_to_record, c);
            goto out;
        }
        c = held;
    }
    m->recorded_length = m->length_to_record;
    shadow_table_changed(m);
out:
    qemu_spin_unlock(&s->lock);
}

/*
 * Write the map changes in their two phases, each followed by a flush of
 * the metadata node (D5).  On failure nothing written is trusted.
 * Returns how many units were written, or a negative error.
 */
static int coroutine_fn GRAPH_RDLOCK shadow_commit_maps(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    ShadowMapChanges ch;
    bool phase1_durable = false;
    int ret;

    qemu_spin_lock(&s->lock);
    ch = shadow_take_changes(s);
    qemu_spin_unlock(&s->lock);

    ret = shadow_write_units(s, ch.phase1, 0);
    if (ret == 0 && ch.phase1->len) {
        ret = bdrv_co_flush(m->child->bs);
    }
    if (ret == 0) {
        phase1_durable = true;
        qemu_spin_lock(&s->lock);
        shadow_units_sure(ch.phase1);
        qemu_spin_unlock(&s->lock);
        ret = shadow_write_units(s, ch.phase2, 0);
    }
    if (ret == 0 && ch.phase2->len) {
        ret = bdrv_co_flush(m->child->bs);
    }
    if (ret == 0) {
        shadow_commit_length(s);
    }
    if (ret < 0) {
        qemu_spin_lock(&s->lock);
        if (!phase1_durable) {
            shadow_units_not_durable(ch.phase1);
        }
        shadow_units_not_durable(ch.phase2);
        shadow_untake_units(s, ch.phase1);
        shadow_untake_units(s, ch.phase2);
        qemu_spin_unlock(&s->lock);
    } else {
        ret = ch.phase1->len + ch.phase2->len;
    }
    shadow_free_units(ch.phase1);
    shadow_free_units(ch.phase2);
    return ret;
}

static void shadow_meta_failed(BDRVShadowState *s, int ret)
{
    if (!s->meta.failed) {
        error_report("shadow: node '%s': writing metadata node '%s' failed: "
                     "%s; guest writes fail until the node is reopened",
                     bdrv_get_node_name(s->bs), shadow_meta_name(s),
                     strerror(-ret));
    }
    s->meta.failed = true;
}

static void shadow_meta_timer_cb(void *opaque);

/*
 * The periodic commit runs while the node may write: with metadata it
 * commits the maps; without, it flushes the shadows the copy wrote, so
 * that a failure loses little of its work (I4)
 */
void shadow_state_start_timer(BDRVShadowState *s, AioContext *ctx)
{
    ShadowMeta *m = &s->meta;

    if (s->writable && !m->timer) {
        m->timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS,
                                 shadow_meta_timer_cb, s);
        timer_mod(m->timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                            SHADOW_META_COMMIT_NS);
    }
}

void shadow_state_stop_timer(BDRVShadowState *s)
{
    if (s->meta.timer) {
        timer_free(s->meta.timer);
        s->meta.timer = NULL;
    }
}

/*
 * While no child was written in this session: write the map units that
 * differ from the disk (fresh metadata, recovery, slot changes).  No
 * flush of a child is owed for them (D1).  With io_lock held.
 */
static int coroutine_fn GRAPH_RDLOCK shadow_write_idle_maps(BDRVShadowState *s)
{
    Error *local_err = NULL;
    int ret;

    ret = shadow_meta_ensure_size(s, s->nb_chunks, &local_err);
    if (ret < 0) {
        /* Once: the periodic commit tries again every few seconds */
        if (s->meta.failed) {
            error_free(local_err);
        } else {
            error_report_err(local_err);
        }
        return ret;
    }
    ret = shadow_commit_maps(s);
    return ret < 0 ? ret : 0;
}

/* Nothing says what @sc's new storage holds: every chunk is stale (I1) */
static void shadow_storage_copy_again(BDRVShadowState *s, ShadowChild *sc)
{
    qemu_spin_lock(&s->lock);
    shadow_mark_stale(s, sc, 0, s->nb_chunks);
    qemu_spin_unlock(&s->lock);
    shadow_copy_kick(s);
}

/*
 * A child's storage may change under the node while it runs: an external
 * snapshot (blockdev-snapshot) of a tier puts an overlay over it, a
 * blockdev-reopen gives the tier's format node another file.  The maps
 * then describe what the child has in its new storage, and its slot must
 * name that storage: else the next open trusts the maps for the storage
 * the slot names, which lacks what was written since, and refuses the
 * new one.  A shadow turns stale: the node cannot tell an overlay, which
 * shows what its base held, from another image.  Done before each commit
 * and stop writes the slot table; io_lock held.
 */
static void coroutine_fn GRAPH_RDLOCK
shadow_state_check_storage(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        ShadowSlot *slot;
        ShadowIdentity id;

        if (!shadow_storage_moved(sc)) {
            continue;
        }
        if (sc->slot < 0) {
            shadow_state_storage_seen(sc);
            continue;
        }
        /*
         * A file that its name no longer reaches (deleted or renamed since
         * it was opened) is recorded by name alone: trying again would
         * make every write commit, and leave the old storage named
         */
        shadow_meta_identify(sc->child->bs, &id);
        slot = &m->slots[sc->slot];
        shadow_state_storage_seen(sc);
        if (!memcmp(slot->id.hash, id.hash, sizeof(id.hash)) &&
            !shadow_other_file(&slot->id, &id)) {
            continue;   /* another node over the same file */
        }
        warn_report("shadow: child '%s' of node '%s' now stores its data in "
                    "%s, not %s: metadata node '%s' records it there%s",
                    shadow_child_name(sc), bdrv_get_node_name(s->bs),
                    id.filename, slot->filename, shadow_meta_name(s),
                    sc == s->active ? "" : ", and it is copied again");
        trace_shadow_storage_changed(s, shadow_child_name(sc), id.filename);
        /* Same slot and epoch: the maps stay; no stamp for the new file */
        shadow_slot_fill(slot, sc, &id, slot->epoch);
        shadow_table_changed(m);
        if (sc != s->active) {
            shadow_storage_copy_again(s, sc);
        }
    }
}

/*
 * Without metadata nothing records a child's storage, but a shadow whose
 * storage node changed at run time (a blockdev-reopen gave its format
 * node another file) may hold anything there: it is copied again before
 * a switch could make it serve.  Checked before a switch and each write.
 */
void GRAPH_RDLOCK shadow_state_check_storage_unrecorded(BDRVShadowState *s)
{
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (!shadow_storage_moved(sc)) {
            continue;
        }
        shadow_state_storage_seen(sc);
        if (sc == s->active) {
            continue;
        }
        warn_report("shadow: child '%s' of node '%s' now stores its data in "
                    "node '%s': it is copied again", shadow_child_name(sc),
                    bdrv_get_node_name(s->bs), sc->storage_name);
        trace_shadow_storage_changed(s, shadow_child_name(sc),
                                     sc->storage_name);
        shadow_storage_copy_again(s, sc);
    }
}

/*
 * Make a change of the slot table (x-blockdev-change) durable while no
 * child has been written: the maps first, then a header that is not in
 * use.  Nothing to do once the header is in use: commits write the table.
 * Tried again after a failure, as a commit is: a guest flush that returns
 * success has recorded the children it was given.
 */
static int coroutine_fn GRAPH_RDLOCK shadow_sync_idle(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    ShadowMetaImage img;
    int ret = 0;

    qemu_co_mutex_lock(&m->io_lock);
    shadow_state_check_storage(s);
    if (!m->in_use && m->table_dirty) {
        uint64_t gen = 0;

        ret = shadow_write_idle_maps(s);
        if (ret == 0) {
            gen = shadow_header_image(s, &img, false, s->active->slot);
            ret = shadow_meta_write_header(s, &img);
        }
        if (ret == 0) {
            m->table_dirty = m->table_gen != gen;
            m->durable_active_slot = s->active->slot;
        } else {
            shadow_meta_failed(s, ret);
        }
    }
    qemu_co_mutex_unlock(&m->io_lock);
    return ret;
}

/*
 * D3: before the first write to any child, make the maps as loaded (and
 * recovered) durable, then mark the header in use for a new session;
 * before the first write after a switch, record the new active child
 * (D2).  Cheap once done.
 */
int coroutine_fn shadow_state_begin_writing(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    ShadowMetaImage img;
    uint64_t gen;
    int active_slot, i;
    int ret = 0;

    if (!m->child) {
        return 0;
    }
    if (!m->writable) {
        return -EROFS;
    }
    if (qatomic_read(&m->in_use) &&
        m->durable_active_slot == s->active->slot) {
        return qatomic_read(&m->failed) ? -EIO : 0;
    }

    qemu_co_mutex_lock(&m->io_lock);
    if (m->failed) {
        ret = -EIO;
        goto out;
    }
    active_slot = s->active->slot;
    if (m->in_use && m->durable_active_slot == active_slot) {
        /* Written while this one waited for the lock */
        goto out;
    }
    if (!m->in_use) {
        ret = shadow_write_idle_maps(s);
        if (ret < 0) {
            goto fail;
        }
        /*
         * A new session: intent units of the last one no longer count on
         * disk, so none of its bits is durable any more (D2).  A clean
         * stop left every child flushed and the maps committed.
         */
        m->session = shadow_new_epoch();
        qemu_spin_lock(&s->lock);
        shadow_hbitmap_clear(m->intent);
        shadow_hbitmap_clear(m->intent_durable);
        shadow_hbitmap_clear(m->written);
        qemu_spin_unlock(&s->lock);
    }
    gen = shadow_header_image(s, &img, true, active_slot);
    ret = shadow_meta_write_header(s, &img);
    if (ret < 0) {
        goto fail;
    }
    /*
     * Writes are coming: the stamps of a clean stop no longer hold.  Not
     * before the header that says so is written: if it fails, no child is
     * written, and a clean header written later keeps them.
     */
    for (i = 0; i < SHADOW_META_SLOTS; i++) {
        m->slots[i].stamped = false;
    }
    m->table_dirty = m->table_gen != gen;
    m->durable_active_slot = active_slot;
    qatomic_set(&m->in_use, true);
    trace_shadow_begin_writing(s, m->session, active_slot);
    goto out;

fail:
    if (!m->in_use) {
        /*
         * The idle maps may be on disk, newer than the clean header: the
         * next stop must write a clean header again, whose sums count
         * them (ShadowMapsRead)
         */
        m->table_dirty = true;
    }
    shadow_meta_failed(s, ret);
out:
    qemu_co_mutex_unlock(&m->io_lock);
    return ret;
}

/* Units [@u0, @u1] of the intent map, as they are now.  Locked. */
static GArray *shadow_take_intent(BDRVShadowState *s, int64_t u0, int64_t u1)
{
    GArray *units = g_array_new(false, false, sizeof(ShadowUnitWrite));
    uint8_t payload[SHADOW_META_UNIT_PAYLOAD];
    int64_t u;

    for (u = u0; u <= u1; u++) {
        ShadowUnitWrite w = {
            .index = u,
            .buf = qemu_blockalign(s->meta.child->bs, SHADOW_META_UNIT),
        };

        shadow_serialize(s, s->meta.intent, u, payload);
        shadow_meta_encode_unit(w.buf, 0, s->meta.session, u, 0, payload);
        g_array_append_val(units, w);
    }
    return units;
}

/*
 * D2: before a guest write to chunks [@first, @end) goes out, their
 * intent bits are durable and the header names the active child
 */
int coroutine_fn shadow_state_prepare_write(BDRVShadowState *s,
                                            int64_t first, int64_t end)
{
    ShadowMeta *m = &s->meta;
    GArray *units;
    bool ready;
    int ret;

    ret = shadow_state_begin_writing(s);
    if (ret < 0 || !m->child) {
        return ret;
    }
    qemu_spin_lock(&s->lock);
    hbitmap_set(m->written, first, end - first);
    ready = hbitmap_next_zero(m->intent_durable, first, end - first) < 0;
    qemu_spin_unlock(&s->lock);
    if (ready) {
        return 0;
    }

    /* The whole regions: later first writes to them need not wait */
    first = QEMU_ALIGN_DOWN(first, m->intent_chunks);
    end = MIN(QEMU_ALIGN_UP(end, m->intent_chunks), s->nb_chunks);
    qemu_co_mutex_lock(&m->io_lock);
    qemu_spin_lock(&s->lock);
    hbitmap_set(m->intent, first, end - first);
    units = shadow_take_intent(s, first / SHADOW_META_UNIT_CHUNKS,
                               (end - 1) / SHADOW_META_UNIT_CHUNKS);
    qemu_spin_unlock(&s->lock);
    ret = m->failed ? -EIO : shadow_write_units(s, units, BDRV_REQ_FUA);
    if (ret == 0) {
        qemu_spin_lock(&s->lock);
        hbitmap_set(m->intent_durable, first, end - first);
        qemu_spin_unlock(&s->lock);
        trace_shadow_intent(s, first, end);
    } else {
        shadow_meta_failed(s, ret);
    }
    qemu_co_mutex_unlock(&m->io_lock);
    shadow_free_units(units);
    return ret;
}

/*
 * Intent bits go a region at a time: a write sets a whole region's, and
 * a period without writes to the region clears them.  The walks below
 * step by region, so that their cost under the lock is the number of
 * regions, not of chunks.
 */

/* The region of chunk @c: its first chunk and its length.  Locked. */
static int64_t shadow_region(BDRVShadowState *s, int64_t c, int64_t *len)
{
    int64_t r = QEMU_ALIGN_DOWN(c, s->meta.intent_chunks);

    *len = MIN(s->meta.intent_chunks, s->nb_chunks - r);
    return r;
}

/*
 * Whether a chunk of [@first, @first + @count) is stale on some child in
 * memory but still valid on its disk (D5 holds the clear back): then the
 * intent bit must stay.  A child with no stale chunk there (a holder)
 * costs one lookup; otherwise 64 chunks at a time: skipped where the
 * disk's bits are all clear, else their stale ones checked.  Locked.
 */
static bool shadow_clear_waits(BDRVShadowState *s, int64_t first,
                               int64_t count)
{
    int64_t c, k, w_end, end = first + count;
    uint64_t word;
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChunkMap *map = &s->children[i]->map;

        if (hbitmap_next_dirty(map->stale, first, count) < 0) {
            continue;
        }
        for (c = first; c < end; c = w_end) {
            w_end = MIN(QEMU_ALIGN_DOWN(c, 64) + 64, end);
            if (c % 64 == 0 && w_end - c == 64) {
                memcpy(&word, map->ondisk + c / 8, sizeof(word));
                if (!word) {
                    continue;
                }
            }
            for (k = hbitmap_next_dirty(map->stale, c, w_end - c); k >= 0;
                 k = k + 1 < w_end ?
                     hbitmap_next_dirty(map->stale, k + 1, w_end - k - 1) :
                     -1) {
                if (shadow_bit_get(map->ondisk, k)) {
                    return true;
                }
            }
        }
    }
    return false;
}

/*
 * Intent bits that may be cleared once this commit is done (D2): the
 * regions nobody wrote since the previous periodic commit, with nothing
 * in flight.  Taken before the commit flushes the children.  Locked.
 */
static HBitmap *shadow_idle_intents(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    HBitmap *idle = NULL;
    int64_t c, r, n;

    for (c = hbitmap_next_dirty(m->intent_durable, 0, s->nb_chunks); c >= 0;
         c = r + n < s->nb_chunks ?
             hbitmap_next_dirty(m->intent_durable, r + n,
                                s->nb_chunks - r - n) : -1) {
        r = shadow_region(s, c, &n);
        if (hbitmap_next_dirty(m->written, r, n) >= 0 ||
            reqlist_find_conflict(&s->reqs, r * s->chunk_size,
                                  shadow_chunk_bytes(s, r, r + n))) {
            continue;
        }
        idle = idle ?: hbitmap_alloc(s->nb_chunks, 0);
        hbitmap_set(idle, r, n);
    }
    return idle;
}

/* Clear the bits of @idle not written since; a new period begins */
static int coroutine_fn GRAPH_RDLOCK
shadow_clear_intents(BDRVShadowState *s, HBitmap *idle)
{
    ShadowMeta *m = &s->meta;
    GArray *units = NULL;
    int64_t c, r, n, k, u0 = -1, u1 = -1;
    int ret = 0;

    qemu_co_mutex_lock(&m->io_lock);
    qemu_spin_lock(&s->lock);
    for (c = idle ? hbitmap_next_dirty(idle, 0, s->nb_chunks) : -1; c >= 0;
         c = r + n < s->nb_chunks ?
             hbitmap_next_dirty(idle, r + n, s->nb_chunks - r - n) : -1) {
        r = shadow_region(s, c, &n);
        if (hbitmap_next_dirty(m->written, r, n) >= 0) {
            continue;
        }
        if (!shadow_clear_waits(s, r, n)) {
            hbitmap_reset(m->intent, r, n);
            hbitmap_reset(m->intent_durable, r, n);
        } else {
            /* Rare: the chunks D5 holds keep their bits */
            for (k = r; k < r + n; k++) {
                if (!shadow_clear_waits(s, k, 1)) {
                    hbitmap_reset(m->intent, k, 1);
                    hbitmap_reset(m->intent_durable, k, 1);
                }
            }
        }
        u0 = u0 < 0 ? r / SHADOW_META_UNIT_CHUNKS : u0;
        u1 = (r + n - 1) / SHADOW_META_UNIT_CHUNKS;
    }
    shadow_hbitmap_clear(m->written);
    if (u0 >= 0) {
        units = shadow_take_intent(s, u0, u1);
    }
    qemu_spin_unlock(&s->lock);
    if (units) {
        /* Not flushed: a cleared bit that is lost is merely conservative */
        ret = shadow_write_units(s, units, 0);
        shadow_free_units(units);
    }
    qemu_co_mutex_unlock(&m->io_lock);
    return ret;
}

/* Whether a periodic commit has anything to do.  Locked. */
static bool GRAPH_RDLOCK shadow_commit_needed(BDRVShadowState *s)
{
    int64_t nb_units = shadow_nb_units(s);
    int i;

    if (s->meta.table_dirty || hbitmap_count(s->meta.intent_durable)) {
        return true;
    }
    for (i = 0; i < s->num_children; i++) {
        if (shadow_storage_moved(s->children[i])) {
            return true;
        }
        if (find_first_bit(s->children[i]->map.dirty_units, nb_units) <
            nb_units) {
            return true;
        }
    }
    return false;
}

/*
 * One commit (D1): flush the children, then write the map units that
 * changed and, if the slot table or the length changed, the header;
 * with @periodic, clear idle intent bits.  Returns the active child's
 * flush result, or the metadata's error.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_do_commit(BDRVShadowState *s, bool periodic)
{
    ShadowMeta *m = &s->meta;
    ShadowMetaImage img;
    HBitmap *idle = NULL;
    int units = 0;
    bool header = false;
    int ret, meta_ret = 0, active_slot;

    if (periodic) {
        qemu_spin_lock(&s->lock);
        idle = shadow_idle_intents(s);
        qemu_spin_unlock(&s->lock);
    }
    ret = periodic ? shadow_state_flush_children(s)
                   : shadow_flush_guest_written(s);
    if (ret < 0) {
        goto out;
    }

    /* Before the maps: a shadow it makes stale is so in this commit */
    qemu_co_mutex_lock(&m->io_lock);
    shadow_state_check_storage(s);
    qemu_co_mutex_unlock(&m->io_lock);
    units = shadow_commit_maps(s);
    meta_ret = MIN(units, 0);
    if (meta_ret == 0 && m->table_dirty) {
        qemu_co_mutex_lock(&m->io_lock);
        m->table_dirty = false;
        header = true;
        active_slot = m->durable_active_slot >= 0 ? m->durable_active_slot
                                                  : s->active->slot;
        shadow_header_image(s, &img, true, active_slot);
        meta_ret = shadow_meta_write_header(s, &img);
        if (meta_ret < 0) {
            m->table_dirty = true;
        } else {
            m->durable_active_slot = active_slot;
        }
        qemu_co_mutex_unlock(&m->io_lock);
    }
    if (meta_ret == 0 && periodic) {
        meta_ret = shadow_clear_intents(s, idle);
    }
    if (meta_ret < 0) {
        shadow_meta_failed(s, meta_ret);
        ret = meta_ret;
    }
    trace_shadow_commit(s, periodic, MAX(units, 0), header, ret);
out:
    if (idle) {
        hbitmap_free(idle);
    }
    return ret;
}

/*
 * Flush the children and, with metadata, commit the maps.  A caller is
 * served by a commit that began after it arrived, so the flushes that
 * arrive while a commit runs share the next one.  A periodic commit with
 * nothing to do flushes nothing and serves nobody.  Returns the active
 * child's flush result or the metadata's error.
 */
int coroutine_fn shadow_state_commit(BDRVShadowState *s, bool periodic)
{
    ShadowMeta *m = &s->meta;
    uint64_t ticket, mine;
    bool needed;
    int ret;

    if (!m->child || !m->writable) {
        return periodic ? shadow_flush_copied(s)
                        : shadow_flush_guest_written(s);
    }
    if (!qatomic_read(&m->in_use)) {
        /* No child was written: only a slot change may need writing */
        ret = shadow_sync_idle(s);
        return periodic || ret < 0 ? ret : shadow_flush_guest_written(s);
    }
    if (periodic) {
        qemu_spin_lock(&s->lock);
        needed = shadow_commit_needed(s);
        if (!needed) {
            shadow_hbitmap_clear(m->written);
        }
        qemu_spin_unlock(&s->lock);
        if (!needed) {
            return 0;
        }
    }

    qemu_co_mutex_lock(&m->commit_lock);
    ticket = m->commit_started + 1;
    while (m->commit_done < ticket) {
        if (m->committing) {
            qemu_co_queue_wait(&m->commit_queue, &m->commit_lock);
            continue;
        }
        qatomic_set(&m->committing, true);
        mine = ++m->commit_started;
        qemu_co_mutex_unlock(&m->commit_lock);
        ret = shadow_do_commit(s, periodic);
        qemu_co_mutex_lock(&m->commit_lock);
        m->commit_ret = ret;
        m->commit_done = mine;
        qatomic_set(&m->committing, false);
        qemu_co_queue_restart_all(&m->commit_queue);
        qemu_co_mutex_unlock(&m->commit_lock);
        return ret;
    }
    ret = m->commit_ret;
    qemu_co_mutex_unlock(&m->commit_lock);
    return ret;
}

/* The periodic commit, counted as a request in flight */
static void coroutine_fn shadow_periodic_entry(void *opaque)
{
    BDRVShadowState *s = opaque;

    bdrv_graph_co_rdlock();
    shadow_state_commit(s, true);
    bdrv_graph_co_rdunlock();
    if (s->meta.timer) {
        timer_mod(s->meta.timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                                 SHADOW_META_COMMIT_NS);
    }
    bdrv_dec_in_flight(s->bs);
}

static void shadow_meta_timer_cb(void *opaque)
{
    BDRVShadowState *s = opaque;

    /* Off the request path: old heat fades */
    shadow_heat_decay(&s->heat, get_clock());

    if (qatomic_read(&s->bs->quiesce_counter) || !s->writable) {
        /* Drained or inactive: try again later */
        timer_mod(s->meta.timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                                 SHADOW_META_COMMIT_NS);
        return;
    }
    shadow_copy_retry(s, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
    bdrv_inc_in_flight(s->bs);
    aio_co_enter(bdrv_get_aio_context(s->bs),
                 qemu_coroutine_create(shadow_periodic_entry, s));
}

/* Commit soon, e.g. after the set of children changed */
void shadow_state_commit_soon(BDRVShadowState *s)
{
    if (s->meta.timer) {
        timer_mod(s->meta.timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
    }
}

/*
 * A clean stop (close, inactivation for migration, reopen read-only):
 * commit everything, record each child's size and ctime, and mark the
 * header closed, so that the next open trusts the maps (D3).  Errors
 * leave the header in use: the next open recovers as after a crash.
 */
typedef struct ShadowStop {
    BDRVShadowState *s;
    bool keep_copies;
    int ret;
    bool done;
} ShadowStop;

static void coroutine_fn shadow_stop_entry(void *opaque)
{
    ShadowStop *st = opaque;
    BDRVShadowState *s = st->s;
    ShadowMeta *m = &s->meta;
    ShadowMetaImage img;
    uint64_t gen;
    int i, ret;

    bdrv_graph_co_rdlock();
    if (!m->in_use) {
        /* Nothing was written: the stamps of the last stop still hold */
        ret = shadow_sync_idle(s);
        goto out;
    }
    /* Flushing what the copy wrote keeps its progress in the maps */
    ret = st->keep_copies ? shadow_state_flush_children(s)
                          : shadow_flush_guest_written(s);
    if (ret == 0) {
        ret = shadow_state_commit(s, false);
    }
    if (ret == 0) {
        qemu_co_mutex_lock(&m->io_lock);
        gen = shadow_header_image(s, &img, false, s->active->slot);
        /* With the data flushed, the stamps say what the images look like */
        for (i = 0; i < s->num_children; i++) {
            ShadowChild *sc = s->children[i];
            ShadowSlot *slot = &img.slots[sc->slot];
            ShadowIdentity id;

            if (shadow_meta_identify(sc->child->bs, &id) == 0 &&
                id.have_stat) {
                slot->id.size = id.size;
                slot->id.ctime_sec = id.ctime_sec;
                slot->id.ctime_nsec = id.ctime_nsec;
                slot->stamped = true;
            }
        }
        /*
         * With FUA also at an inactivation, where a migrating guest waits
         * for it: a destination on another host reads the header from
         * the storage, and a copy left in this host's cache could be
         * written back after the destination wrote its own header to the
         * same copy, making this clean one current again.
         */
        ret = shadow_meta_write_header(s, &img);
        /*
         * Not in use either way: a write that failed may still have
         * reached the disk, and the node stays writable when the stop
         * fails (inactivation, read-only reopen).  Its next write to a
         * child writes a header in use first, over the same copy.  The
         * stamps hold either way until then; after a failure the table
         * stays dirty, so that the next stop or periodic commit writes
         * the clean header again (shadow_sync_idle()).
         */
        memcpy(m->slots, img.slots, sizeof(m->slots));
        m->table_dirty = ret < 0 || m->table_gen != gen;
        if (ret == 0) {
            m->durable_active_slot = s->active->slot;
        }
        qatomic_set(&m->in_use, false);
        qemu_co_mutex_unlock(&m->io_lock);
    }
out:
    bdrv_graph_co_rdunlock();
    st->ret = ret;
    st->done = true;
    aio_wait_kick();
}

/*
 * A clean stop of the metadata.  With @keep_copies (close, read-only
 * reopen) every child is flushed, so that the maps keep all the copy did;
 * without (a migration's inactivation, where the guest waits) only the
 * children that must be, and the destination copies the rest again.
 */
int shadow_state_stop(BDRVShadowState *s, bool keep_copies, Error **errp)
{
    ShadowStop st = { .s = s, .keep_copies = keep_copies };

    shadow_state_stop_timer(s);
    if (!s->meta.child || !s->meta.writable ||
        (!s->meta.in_use && !s->meta.table_dirty)) {
        return 0;
    }
    aio_co_enter(bdrv_get_aio_context(s->bs),
                 qemu_coroutine_create(shadow_stop_entry, &st));
    BDRV_POLL_WHILE(s->bs, !st.done);
    if (st.ret < 0) {
        error_setg_errno(errp, -st.ret, "shadow: node '%s': could not close "
                         "metadata node '%s' cleanly; the next open recovers "
                         "as after a crash", bdrv_get_node_name(s->bs),
                         shadow_meta_name(s));
        /* Writable still (a failed inactivation or read-only reopen) */
        shadow_state_start_timer(s, bdrv_get_aio_context(s->bs));
    }
    trace_shadow_stop(s, st.ret);
    return st.ret;
}

/*
 * x-blockdev-change: a new child takes a free slot with a new epoch (D4);
 * its map, all stale, needs no write.  The slot table is written by the
 * next commit, which the caller starts with shadow_state_commit_soon().
 * Locked.
 */
int shadow_state_add_child(BDRVShadowState *s, ShadowChild *sc, Error **errp)
{
    ShadowMeta *m = &s->meta;
    ShadowIdentity id;
    int i, ret, slot = -1;

    if (!m->child) {
        return 0;
    }
    ret = shadow_meta_identify(sc->child->bs, &id);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "shadow: cannot identify the storage of "
                         "node '%s' (%s)", shadow_child_name(sc), id.filename);
        return ret;
    }
    for (i = 0; i < SHADOW_META_SLOTS; i++) {
        if (!m->slots[i].used) {
            slot = slot < 0 ? i : slot;
        } else if (!memcmp(m->slots[i].id.hash, id.hash, sizeof(id.hash))) {
            error_setg(errp, "shadow: node '%s' uses the same storage (%s) as "
                       "child '%s'", shadow_child_name(sc), id.filename,
                       m->slots[i].node_name);
            return -EINVAL;
        }
    }
    if (slot < 0) {
        error_setg(errp, "shadow: with metadata a node has at most %d "
                   "children", SHADOW_META_SLOTS);
        return -ENOSPC;
    }
    sc->slot = slot;
    shadow_slot_fill(&m->slots[slot], sc, &id, shadow_new_epoch());
    shadow_table_changed(m);
    return 0;
}

/* x-blockdev-change: the slot is free for the next child (D4).  Locked. */
void shadow_state_del_child(BDRVShadowState *s, ShadowChild *sc)
{
    ShadowMeta *m = &s->meta;

    qatomic_set(&s->maps_touched, true);
    if (m->child && sc->slot >= 0) {
        memset(&m->slots[sc->slot], 0, sizeof(ShadowSlot));
        shadow_table_changed(m);
        if (m->durable_active_slot == sc->slot) {
            /*
             * The header that writes the freed slot must not name it as
             * the active child: it records the one serving by then.
             */
            m->durable_active_slot = -1;
        }
    }
}
