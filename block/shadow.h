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
#include "qemu/coroutine.h"
#include "qemu/hbitmap.h"
#include "qemu/ratelimit.h"
#include "qemu/stats64.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/units.h"

#define SHADOW_MIN_CHUNK_SIZE     (4 * KiB)
#define SHADOW_MAX_CHUNK_SIZE     (64 * MiB)
#define SHADOW_DEFAULT_CHUNK_SIZE (64 * KiB)

/* Largest single background copy; neighbouring stale chunks are merged */
#define SHADOW_COPY_MAX_BYTES     (1 * MiB)
/*
 * A copy run is sized to take about this long on its slowest target, so a
 * guest request or a drained section never waits long behind copies
 */
#define SHADOW_COPY_RUN_NS        (20 * SCALE_MS)
/* Background copies in flight at once when the guest is idle */
#define SHADOW_COPY_WORKERS       4
/* The guest counts as busy this long after its last request */
#define SHADOW_GUEST_BUSY_NS      (10 * SCALE_MS)

/* Children a write fans out to without allocating */
#define SHADOW_STACK_CHILDREN     4

/* Heat tracking for hot-first pre-warming (shadow-heat.c) */
#define SHADOW_HEAT_REGION        (1 * MiB)
#define SHADOW_HEAT_LEVELS        16
#define SHADOW_HEAT_QUEUE_MAX     4096
#define SHADOW_HEAT_DECAY_NS      (10 * NANOSECONDS_PER_SECOND)
#define SHADOW_STREAMS            4

/*
 * Which chunks of one child are out of date.  A set bit means the chunk
 * may differ from the active child; a clear bit means it is known to be
 * identical.
 */
typedef struct ShadowMap {
    HBitmap *stale;
    int64_t nb_chunks;
    /*
     * With metadata: which SHADOW_META_UNIT_CHUNKS-chunk units of the map
     * changed since they were last written out (NULL without metadata)
     */
    HBitmap *dirty;
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
    /* The child's slot in the metadata, or -1 */
    int slot;
    /* An I/O error happened; no more I/O until a reopen or re-add */
    bool degraded;
    ShadowCounters stats;
    /* Moving average of read latency (0: never measured) and its age */
    int64_t read_ns;
    int64_t read_stamp;
    /* Moving average of background copy throughput, bytes/s (0: unknown) */
    int64_t copy_bps;
} ShadowChild;

/* A FIFO of region numbers with a fixed capacity */
typedef struct ShadowRegionQueue {
    uint32_t *ring;
    uint32_t head;
    uint32_t len;
} ShadowRegionQueue;

typedef struct ShadowStream {
    int64_t next;       /* where the next sequential request would start */
    int64_t len;        /* sequential requests seen */
    uint64_t used;
} ShadowStream;

typedef struct ShadowHeat {
    int64_t region_size;
    int64_t nb_regions;
    uint16_t *count;    /* decayed access count per region */
    uint8_t *queued;    /* 1 + the queue a region sits on, 0 for none */
    ShadowRegionQueue queue[SHADOW_HEAT_LEVELS + 1];
    int64_t last_decay_ns;
    ShadowStream streams[SHADOW_STREAMS];
    uint64_t stream_clock;
} ShadowHeat;

/*
 * Persistent maps (shadow-meta.c); the on-disk format is described in
 * docs/shadow-metadata.md
 */
#define SHADOW_META_SLOTS         16
/* Maps are written in units of this many bytes, never whole */
#define SHADOW_META_UNIT          512
#define SHADOW_META_UNIT_CHUNKS   (SHADOW_META_UNIT * 8)
/* A periodic commit bounds the copy work a crash loses */
#define SHADOW_META_COMMIT_NS     (5 * NANOSECONDS_PER_SECOND)

typedef struct QEMU_PACKED ShadowMetaSlot {
    uint32_t flags;
    uint32_t reserved;
    uint8_t identity[32];
    char node_name[64];
    char filename[152];
} ShadowMetaSlot;

typedef struct ShadowMeta {
    BdrvChild *child;
    bool writable;
    uint64_t generation;
    int header_copy;
    int64_t map_bytes;
    int64_t maps_offset;
    ShadowMetaSlot slots[SHADOW_META_SLOTS];
    bool table_dirty;
    /* Slot of the active child as the header on disk records it */
    int durable_active_slot;

    /*
     * Write intent: @intent is what the intent map on disk holds or is
     * about to hold, @intent_durable what it holds for sure.  A guest
     * write goes out only once its chunks are in @intent_durable.
     * @written: chunks written since the last periodic commit; their
     * intent bits stay set.
     */
    HBitmap *intent;
    HBitmap *intent_durable;
    HBitmap *written;
    /* Serialises writes of the header and of the intent map */
    CoMutex io_lock;

    /* Commits: started and completed ones, and who waits for them */
    CoMutex commit_lock;
    bool committing;
    uint64_t commit_started;
    uint64_t commit_done;
    int commit_ret;
    CoQueue commit_queue;
    QEMUTimer *timer;
    bool failed;
} ShadowMeta;

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
    uint64_t prewarm_speed;
    ShadowReadFrom read_from;
    bool copy_on_read;

    /* Protects the maps, @reqs and the copier's bookkeeping */
    QemuSpin lock;
    /*
     * Writes (their exact range) and copies (whole chunks) in flight.
     * Overlapping ones wait for each other, so that no copy lands on a
     * shadow in between the halves of a mirrored write.
     */
    BlockReqList reqs;

    /* Persistent maps; meta.child is NULL without metadata */
    ShadowMeta meta;

    /* Background copy: running workers (a bit each), what they copy, pacing */
    unsigned copy_workers;
    bool copy_failed;
    int64_t copy_cursor;
    int64_t hydrate_cursor;
    int64_t copy_region;        /* hot region being copied, or -1 */
    HBitmap *copying;
    ShadowHeat heat;
    RateLimit copy_limit;
    QemuCoSleep copy_sleep[SHADOW_COPY_WORKERS];

    /* Guest requests in flight, and when the last one started */
    int guest_inflight;
    int64_t guest_io_ns;
    uint64_t nb_reads;

    /* Guest-facing counters of the node */
    ShadowCounters stats;

    /* A switch committed during the current drained section */
    int64_t drain_start_ns;
    char *switched_from;
} BDRVShadowState;

/* shadow-map.c */
void shadow_map_init(ShadowMap *map, int64_t nb_chunks, bool stale);
void shadow_map_track_changes(ShadowMap *map);
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
bool shadow_range_stale(const ShadowMap *map, int64_t first, int64_t end);
ShadowChild *shadow_source_for(BDRVShadowState *s, int64_t chunk);

/* shadow-meta.c */
int GRAPH_RDLOCK shadow_meta_open(BDRVShadowState *s, ShadowChild *active,
                                  Error **errp);
void GRAPH_RDLOCK shadow_meta_close(BDRVShadowState *s);
void shadow_meta_destroy(BDRVShadowState *s);
int coroutine_fn GRAPH_RDLOCK
shadow_meta_write_intent(BDRVShadowState *s, int64_t first, int64_t end);
bool shadow_meta_intent_ready(BDRVShadowState *s, int64_t first, int64_t end);
int coroutine_fn GRAPH_RDLOCK shadow_meta_commit(BDRVShadowState *s,
                                                 bool periodic);
int GRAPH_RDLOCK shadow_meta_add_child(BDRVShadowState *s, ShadowChild *sc,
                                       Error **errp);
void shadow_meta_del_child(BDRVShadowState *s, ShadowChild *sc);
void shadow_meta_commit_soon(BDRVShadowState *s);
void shadow_meta_attach_aio_context(BDRVShadowState *s, AioContext *ctx);
void shadow_meta_detach_aio_context(BDRVShadowState *s);

/* shadow.c */
int coroutine_fn GRAPH_RDLOCK shadow_flush_children(BDRVShadowState *s);
void coroutine_fn shadow_track_begin(BDRVShadowState *s, BlockReq *req,
                                     int64_t offset, int64_t bytes);
void shadow_child_degrade(BDRVShadowState *s, ShadowChild *sc,
                          const char *operation, int ret);
void shadow_account(ShadowCounters *c, bool write, int64_t bytes,
                    int64_t ns, int ret);

/* shadow-heat.c */
void shadow_heat_init(ShadowHeat *h, int64_t length, int64_t chunk_size);
void shadow_heat_destroy(ShadowHeat *h);
bool shadow_heat_access(ShadowHeat *h, int64_t offset, int64_t bytes,
                        int64_t now, bool urgent);
int64_t shadow_heat_pop(ShadowHeat *h, bool urgent_only,
                        bool (*needed)(void *opaque, int64_t region),
                        void *opaque);

/* shadow-copy.c */
void shadow_copy_kick(BDRVShadowState *s);
bool shadow_copy_enabled(BDRVShadowState *s);
bool shadow_copy_may_run(BDRVShadowState *s);
void shadow_copy_wake(BDRVShadowState *s);
void shadow_copy_set_speed(BDRVShadowState *s, uint64_t speed);
int coroutine_fn GRAPH_RDLOCK shadow_copy_up(BDRVShadowState *s,
                                             int64_t first, int64_t end);

#endif /* BLOCK_SHADOW_H */
