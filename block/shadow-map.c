/*
 * Shadow block driver: per-child chunk maps
 *
 * Each child has a map with one bit per chunk that says whether the chunk
 * may differ from the active child.  The maps are HBitmaps so that the
 * next stale chunk and the number of stale chunks are cheap to find even
 * on large disks.  Callers hold BDRVShadowState.lock.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "shadow.h"

void shadow_map_init(ShadowMap *map, int64_t nb_chunks, bool stale)
{
    map->nb_chunks = nb_chunks;
    map->stale = hbitmap_alloc(nb_chunks, 0);
    if (stale && nb_chunks) {
        hbitmap_set(map->stale, 0, nb_chunks);
    }
}

/* From now on, remember which units of @map change; all are dirty now */
void shadow_map_track_changes(ShadowMap *map)
{
    if (!map->dirty) {
        map->dirty = hbitmap_alloc(map->nb_chunks,
                                   ctz32(SHADOW_META_UNIT_CHUNKS));
    }
    if (map->nb_chunks) {
        hbitmap_set(map->dirty, 0, map->nb_chunks);
    }
}

void shadow_map_destroy(ShadowMap *map)
{
    g_clear_pointer(&map->stale, hbitmap_free);
    g_clear_pointer(&map->dirty, hbitmap_free);
}

void shadow_map_mark_stale(ShadowMap *map, int64_t first, int64_t count)
{
    if (count <= 0) {
        return;
    }
    if (map->dirty && hbitmap_next_zero(map->stale, first, count) >= 0) {
        hbitmap_set(map->dirty, first, count);
    }
    hbitmap_set(map->stale, first, count);
}

void shadow_map_mark_valid(ShadowMap *map, int64_t first, int64_t count)
{
    if (count <= 0) {
        return;
    }
    if (map->dirty && hbitmap_next_dirty(map->stale, first, count) >= 0) {
        hbitmap_set(map->dirty, first, count);
    }
    hbitmap_reset(map->stale, first, count);
}

/* Whether any chunk of [@first, @end) is stale in @map */
bool shadow_range_stale(const ShadowMap *map, int64_t first, int64_t end)
{
    return end > first && hbitmap_count(map->stale) &&
           hbitmap_next_dirty(map->stale, first, end - first) >= 0;
}

/*
 * A child other than the active one that holds chunk @chunk and can be
 * read, for copying up to an active child that does not hold it yet;
 * NULL if none does.
 */
ShadowChild *shadow_source_for(BDRVShadowState *s, int64_t chunk)
{
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc != s->active && !sc->degraded &&
            !shadow_map_is_stale(&sc->map, chunk)) {
            return sc;
        }
    }
    return NULL;
}

bool shadow_map_is_stale(const ShadowMap *map, int64_t chunk)
{
    return hbitmap_get(map->stale, chunk);
}

int64_t shadow_map_stale_count(const ShadowMap *map)
{
    return hbitmap_count(map->stale);
}

/* Returns the first stale chunk at or after @start, or -1 */
int64_t shadow_map_next_stale(const ShadowMap *map, int64_t start)
{
    if (start >= map->nb_chunks) {
        return -1;
    }
    return hbitmap_next_dirty(map->stale, start, map->nb_chunks - start);
}

/* Chunks touched by [@offset, @offset + @bytes): [*first, *end) */
void shadow_chunk_range(BDRVShadowState *s, int64_t offset, int64_t bytes,
                        int64_t *first, int64_t *end)
{
    *first = offset / s->chunk_size;
    *end = DIV_ROUND_UP(MIN(offset + bytes, s->length), s->chunk_size);
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

    *first = DIV_ROUND_UP(offset, s->chunk_size);
    *end = stop >= s->length ? s->nb_chunks : stop / s->chunk_size;
    if (*end < *first) {
        *end = *first;
    }
}

/* Bytes of @sc known to hold what the guest sees */
int64_t shadow_valid_bytes(BDRVShadowState *s, ShadowChild *sc)
{
    int64_t stale = shadow_map_stale_count(&sc->map);
    int64_t valid;

    valid = (s->nb_chunks - stale) * s->chunk_size;
    /* The last chunk may be short */
    if (stale == 0 || !shadow_map_is_stale(&sc->map, s->nb_chunks - 1)) {
        valid -= s->nb_chunks * s->chunk_size - s->length;
    }
    return MAX(valid, 0);
}
