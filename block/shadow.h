/*
 * Shadow block driver: state shared by shadow.c, shadow-map.c and
 * shadow-copy.c
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef BLOCK_SHADOW_H
#define BLOCK_SHADOW_H

#include "block/block-io.h"
#include "block/block_int.h"
#include "block/reqlist.h"
#include "qapi/qapi-types-block-core.h"
#include "qemu/hbitmap.h"
#include "qemu/stats64.h"
#include "qemu/units.h"

#define SHADOW_MIN_CHUNK_SIZE     (4 * KiB)
#define SHADOW_MAX_CHUNK_SIZE     (64 * MiB)
#define SHADOW_DEFAULT_CHUNK_SIZE (64 * KiB)

/* Largest single background copy; neighbouring stale chunks are merged */
#define SHADOW_COPY_MAX_BYTES     (1 * MiB)

/*
 * Which chunks of one child are out of date.  A set bit means the chunk
 * may differ from the active child; a clear bit means it is known to be
 * identical.
 */
typedef struct ShadowMap {
    HBitmap *stale;
    int64_t nb_chunks;
} ShadowMap;

/* I/O counters, as seen by the node or by one child */
typedef struct ShadowCounters {
    Stat64 rd_ops;
    Stat64 rd_bytes;
    Stat64 rd_ns;
    Stat64 wr_ops;
    Stat64 wr_bytes;
    Stat64 wr_ns;
    Stat64 flush_ops;
    Stat64 failed_ops;
    Stat64 copied_bytes;
} ShadowCounters;

typedef struct ShadowChild {
    BdrvChild *child;
    ShadowMap map;
    /* An I/O error happened; no more I/O until a reopen or re-add */
    bool degraded;
    ShadowCounters stats;
} ShadowChild;

typedef struct BDRVShadowState {
    BlockDriverState *bs;

    /*
     * Children, in the order they were given.  Changed only with the
     * graph write lock held, so I/O coroutines may read it freely.
     */
    ShadowChild **children;
    int num_children;
    unsigned next_child_index;
    ShadowChild *active;

    int64_t length;
    int64_t chunk_size;
    int64_t nb_chunks;
    ShadowWriteMode write_mode;
    ShadowPrewarm prewarm;

    /* Protects the maps, @reqs and the copier's bookkeeping */
    QemuMutex lock;
    /*
     * Writes (their exact range) and copies (whole chunks) in flight.
     * Overlapping ones wait for each other, so that no copy lands on a
     * shadow in between the halves of a mirrored write.
     */
    BlockReqList reqs;

    /* Background copy */
    bool copy_running;
    bool copy_failed;
    int64_t copy_cursor;
    void *copy_buf;

    /* Guest-facing counters of the node */
    ShadowCounters stats;

    /* A switch committed during the current drained section */
    int64_t drain_start_ns;
    char *switched_from;
} BDRVShadowState;

/* shadow-map.c */
void shadow_map_init(ShadowMap *map, int64_t nb_chunks, bool stale);
void shadow_map_destroy(ShadowMap *map);
void shadow_map_mark_stale(ShadowMap *map, int64_t first, int64_t count);
void shadow_map_mark_valid(ShadowMap *map, int64_t first, int64_t count);
bool shadow_map_is_stale(const ShadowMap *map, int64_t chunk);
int64_t shadow_map_stale_count(const ShadowMap *map);
int64_t shadow_map_next_stale(const ShadowMap *map, int64_t start);
void shadow_chunk_range(BDRVShadowState *s, int64_t offset, int64_t bytes,
                        int64_t *first, int64_t *end);
void shadow_full_chunk_range(BDRVShadowState *s, int64_t offset,
                             int64_t bytes, int64_t *first, int64_t *end);
int64_t shadow_valid_bytes(BDRVShadowState *s, ShadowChild *sc);

/* shadow.c */
void coroutine_fn shadow_track_begin(BDRVShadowState *s, BlockReq *req,
                                     int64_t offset, int64_t bytes);
void shadow_child_degrade(BDRVShadowState *s, ShadowChild *sc,
                          const char *operation, int ret);
void shadow_account(ShadowCounters *c, bool write, int64_t bytes,
                    int64_t start_ns, int ret);

/* shadow-copy.c */
void shadow_copy_kick(BDRVShadowState *s);
bool shadow_copy_enabled(BDRVShadowState *s);
bool shadow_copy_may_run(BDRVShadowState *s);

#endif /* BLOCK_SHADOW_H */
