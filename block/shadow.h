/*
 * Shadow block driver: state shared by its files
 *
 *   shadow.c        options, open and close, reopen (switch), guest I/O
 *                   routing, permissions, statistics
 *   shadow-state.c  the chunk-state layer: maps, range lock, validity
 *                   transitions and their durability rules, commits
 *   shadow-meta.c   the on-disk metadata format (docs/shadow-metadata.md)
 *   shadow-copy.c   background copy (pre-warm, hydration) and copy-up
 *   shadow-heat.c   hot-region ranking for hot-first pre-warming
 *   shadow-verify.c the x-shadow-verify job: compares two children
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
/*
 * A write sets the intent bits of a whole aligned region at once, as md's
 * write-intent bitmap does with its bitmap chunk: one metadata write then
 * serves every later first write to the region, at the cost of copying
 * the whole region again after an unclean stop.
 */
#define SHADOW_DEFAULT_INTENT_GRANULARITY (16 * MiB)
#define SHADOW_MAX_INTENT_GRANULARITY     (1 * GiB)
/*
 * A map holds at most this many chunks (64 MiB of bits per map and per
 * child): a larger disk needs a larger chunk-size
 */
#define SHADOW_MAX_CHUNKS         (INT64_C(1) << 29)

/* Largest single background copy; neighbouring stale chunks are merged */
#define SHADOW_COPY_MAX_BYTES     (1 * MiB)
/*
 * A copy reads and writes this much at a time; a drained section (a
 * switch, a migration's downtime) waits for one such piece at most
 */
#define SHADOW_COPY_PIECE         (256 * KiB)
/*
 * A copy run is sized to take about this long on its slowest target, so a
 * guest request or a drained section never waits long behind copies
 */
#define SHADOW_COPY_RUN_NS        (20 * SCALE_MS)
/* Background copies in flight at once when the guest is idle */
#define SHADOW_COPY_WORKERS       4
/* A rate-limited worker looks for a drained section this often */
#define SHADOW_COPY_SLEEP_SLICE_NS (10 * SCALE_MS)
/* The guest counts as busy this long after its last request */
#define SHADOW_GUEST_BUSY_NS      (10 * SCALE_MS)

/* Bounce buffers of mirrored writes up to this size are reused */
#define SHADOW_BOUNCE_CACHED_BYTES (64 * KiB)
#define SHADOW_BOUNCE_CACHED       16

/* Children a write fans out to without allocating */
#define SHADOW_STACK_CHILDREN     4

/* Heat tracking for hot-first pre-warming (shadow-heat.c) */
#define SHADOW_HEAT_REGION        (1 * MiB)
/* At most this many regions: larger disks get larger regions */
#define SHADOW_HEAT_MAX_REGIONS   (1 << 22)
#define SHADOW_HEAT_LEVELS        16
#define SHADOW_HEAT_QUEUE_MAX     4096
#define SHADOW_HEAT_DECAY_NS      (10 * NANOSECONDS_PER_SECOND)
#define SHADOW_STREAMS            4

/* Metadata (shadow-meta.c, docs/shadow-metadata.md) */
#define SHADOW_META_SLOTS         16
/* Maps are stored in units of this many bytes, each with a checksum */
#define SHADOW_META_UNIT          4096
#define SHADOW_META_UNIT_HEADER   32
#define SHADOW_META_UNIT_PAYLOAD  (SHADOW_META_UNIT - SHADOW_META_UNIT_HEADER)
#define SHADOW_META_UNIT_CHUNKS   (SHADOW_META_UNIT_PAYLOAD * 8)
/* Rounds of a guest flush while a failed shadow's kept chunks wait */
#define SHADOW_FLUSH_ROUNDS       3
/* A periodic commit bounds the copy work a crash loses */
#define SHADOW_META_COMMIT_NS     (5 * NANOSECONDS_PER_SECOND)
/* Flushes and commits a grow tries before it fails (shadow_record_length()) */
#define SHADOW_RECORD_LENGTH_TRIES 8
/* A copy stopped by the active child is retried after this, then longer */
#define SHADOW_COPY_RETRY_NS      (5 * NANOSECONDS_PER_SECOND)
#define SHADOW_COPY_RETRY_MAX_NS  (320 * NANOSECONDS_PER_SECOND)

/* What a request to a child does, for routing, accounting and events */
typedef enum ShadowWriteKind {
    SHADOW_WRITE,
    SHADOW_WRITE_ZEROES,
    SHADOW_DISCARD,
    SHADOW_FLUSH,
} ShadowWriteKind;

/* I/O counters, as seen by the node or by one child (shadow-stats.c) */
typedef enum ShadowStat {
    SHADOW_STAT_RD_OPS,
    SHADOW_STAT_RD_BYTES,
    SHADOW_STAT_RD_NS,
    SHADOW_STAT_WR_OPS,
    SHADOW_STAT_WR_BYTES,
    SHADOW_STAT_WR_NS,
    SHADOW_STAT_FLUSH_OPS,
    SHADOW_STAT_FAILED_OPS,
    SHADOW_STAT_COPIED_BYTES,
    SHADOW_STAT_COMPARED_BYTES,
    /* The node's only: guest requests in flight, begun, and reads begun */
    SHADOW_STAT_GUEST_INFLIGHT,
    SHADOW_STAT_GUEST_REQS,
    SHADOW_STAT_GUEST_READS,
    SHADOW_STAT__MAX
} ShadowStat;

/* Shards of counters: one per AioContext, the last one shared */
#define SHADOW_COUNTER_SHARDS     8
/* Guest reads are timed one in this many */
#define SHADOW_READ_SAMPLE        32

typedef struct ShadowCounterShard {
    AioContext *ctx;            /* the thread that counts here; NULL: free */
    int64_t v[SHADOW_STAT__MAX];
} QEMU_ALIGNED(64) ShadowCounterShard;

typedef struct ShadowCounters {
    ShadowCounterShard shard[SHADOW_COUNTER_SHARDS];
} ShadowCounters;

/*
 * The chunk state of one child; shadow-state.c owns it and documents the
 * invariants.  All bitmaps have one bit per chunk and are protected by
 * BDRVShadowState.lock.
 */
typedef struct ShadowChunkMap {
    /* 1: the chunk may differ from what the guest sees */
    HBitmap *stale;
    /* 1: the chunk's content on this child changed since a flush began */
    HBitmap *unflushed;
    /* 1: changed before the flush of this child that is under way began */
    HBitmap *flushing;
    /*
     * 1: the chunk became valid on this child (a copy, a write that covered
     * it) since a flush began; and before the flush under way began.  A
     * later write to a valid chunk does not count: intent bits cover it.
     */
    HBitmap *fresh;
    HBitmap *fresh_flushing;
    /*
     * With metadata: the valid bits on disk that may still be trusted,
     * SHADOW_META_UNIT_PAYLOAD bytes per unit; which units must be written
     * at the next commit; and the sequence number of each unit's current
     * version on disk (it is in copy seq % 2; the next write goes to the
     * other copy)
     */
    uint8_t *durable;
    unsigned long *dirty_units;
    uint64_t *unit_seq;
    /*
     * With metadata: the last sequence number a write of each unit failed
     * with since the load, 0 if none.  That write may have reached the
     * disk, so the next write of the unit skips past it, to the same copy
     * (shadow_write_units()): a unit's number names one content, which
     * an activation that keeps the maps read while inactive relies on
     * (ShadowMapsRead).
     */
    uint64_t *unit_seq_failed;
    /*
     * With metadata: the valid bits of each unit's current version on
     * disk; for an unsure unit (below), of the version last written,
     * which unit_seq does not name if no flush made it durable
     */
    uint8_t *ondisk;
    /*
     * Units a failed commit wrote or meant to write: the disk may hold
     * that version or the previous one, and ondisk the first.  The next
     * commit writes them again in its first phase, whatever they hold,
     * and flushes, before ondisk counts for them (shadow_untake_units())
     */
    unsigned long *unsure_units;
} ShadowChunkMap;

typedef struct ShadowChild {
    BdrvChild *child;
    /*
     * A number no earlier child of the node had: a job that looks its
     * child up by name tells the child it began with from one removed
     * and added again under that name (BQL)
     */
    uint64_t serial;
    ShadowChunkMap map;
    /* The child's slot in the metadata, or -1 */
    int slot;
    /*
     * The node that stored the child's data when its slot was last
     * identified (or, without metadata, when it was added), and its
     * name (a pointer alone may be reused), for
     * shadow_state_check_storage(); never dereferenced (BQL or io_lock)
     */
    const BlockDriverState *storage;
    char storage_name[32];
    /* An I/O error happened: no more writes or copies go to it */
    bool degraded;
    /* One flush at a time, so that map.flushing says what a flush covers */
    CoMutex flush_lock;
    /*
     * Guest writes sent to the child (atomic), and how many of them the
     * last successful flush covered (under flush_lock): a clean stop
     * flushes the shadows that got guest writes since
     */
    int64_t guest_writes;
    int64_t guest_writes_flushed;
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

/* See shadow-heat.c for what protects what */
typedef struct ShadowHeat {
    int64_t region_size;
    int region_bits;    /* log2(region_size) */
    int64_t nb_regions;
    uint32_t *count;    /* decayed access count per region, atomic */
    uint8_t *queued;    /* 1 + the queue a region sits on, 0 for none */
    ShadowRegionQueue queue[SHADOW_HEAT_LEVELS + 1];
    int64_t last_decay_ns;
    ShadowStream streams[SHADOW_STREAMS];
    uint64_t stream_clock;
    GSList *retired;    /* count arrays the disk outgrew */
} ShadowHeat;

/* A child's storage, as far as the metadata can identify it */
typedef struct ShadowIdentity {
    uint8_t hash[32];       /* SHA-256 of the storage's filename */
    const char *filename;
    bool have_stat;         /* a local file or device: the fields below */
    bool have_btime;
    uint64_t ino;
    int64_t btime_sec;
    uint32_t btime_nsec;
    int64_t ctime_sec;
    uint32_t ctime_nsec;
    int64_t size;
} ShadowIdentity;

/* One slot of the metadata's slot table, in host order */
typedef struct ShadowSlot {
    bool used;
    /* Map units of this slot count only if they carry this epoch */
    uint64_t epoch;
    ShadowIdentity id;
    /* size and ctime recorded at a clean stop, to detect later writes */
    bool stamped;
    /*
     * In a header that is not in use: the sum (mod 2^32) of the sequence
     * numbers of the slot's map units on disk, to detect a lost write of
     * a unit's newer copy (shadow_maps_lost())
     */
    bool seq_sum_known;
    uint32_t seq_sum;
    char node_name[64];
    char filename[104];
} ShadowSlot;

/*
 * The map units of the children as a node opened inactive (a migration's
 * destination, while the source still runs) read them, before that load
 * made anything of them.  Its activation keeps them rather than reading
 * every unit again while the guest waits, if the header the source wrote
 * when it stopped proves that no unit changed since: a clean header of
 * the same session (one writer, no crash between), the same geometry,
 * and for each slot the same epoch and the same sum of its units'
 * sequence numbers; a writer that says it keeps the rules below (an
 * older one does not); and units read from the storage, not from a
 * cache of this host that the activation drops.  Numbers only grow, and
 * a number names one content (ShadowChunkMap.unit_seq_failed); after a
 * clean stop, no unit on disk has a number above the one the source
 * counts (a write that failed or was not flushed is written again before
 * the clean header): so an equal sum means every unit is the one read
 * here.  Anything else reads the maps again.
 *
 * Where that load made the maps of what it read and nothing changed
 * them since (no recovery, no other change: BDRVShadowState.maps_touched),
 * the maps in memory are what the activation would make again
 * (@in_memory): it keeps them as they are.  Else it makes them again
 * from the copies in @bits and @seqs.
 *
 * A slot whose sum differs (a copy or an async write during the
 * migration) keeps all but the units whose numbers' low bits, as the
 * header lists them, are not those read: those are read again, and then
 * every sum must hold.  The list only says where to look: a unit whose
 * number moved by a multiple of what the bits hold, or anything else it
 * misses, fails a sum, and every unit is read again.
 */
typedef struct ShadowMapsRead {
    int64_t nb_chunks;
    uint64_t session;
    uint32_t slots;                             /* bit j: slot j was read */
    uint64_t epoch[SHADOW_META_SLOTS];
    bool in_memory;                     /* then @bits and @seqs are NULL */
    uint8_t *bits[SHADOW_META_SLOTS];
    uint64_t *seqs[SHADOW_META_SLOTS];
} ShadowMapsRead;

typedef struct ShadowMeta {
    BdrvChild *child;
    /* The node may write its metadata now (writable and active) */
    bool writable;
    uint64_t generation;
    int header_copy;
    int64_t nb_units;
    ShadowSlot slots[SHADOW_META_SLOTS];
    /*
     * The slot table or the recorded length changed since the header;
     * table_gen counts the changes (shadow_table_changed())
     */
    bool table_dirty;
    uint64_t table_gen;
    /*
     * The length headers record: the node's, but while the node grows
     * the old one until every new chunk has a durable holder (D5;
     * shadow_state_grow()).  @length_to_record: the node's length once a
     * flush made the grown children durable; a commit moves
     * recorded_length to it once the map units on disk show a holder
     * for every chunk up to it (shadow_commit_length()).  Under the
     * spinlock.
     */
    int64_t recorded_length;
    int64_t length_to_record;
    /*
     * @in_use: the header on disk says "in use" for the session
     * @session, with @durable_active_slot as the active child.  Until
     * then no child is written (shadow_state_begin_writing()).  False
     * means no child was written since the last header write, which may
     * have failed: the header on disk is the clean one or the one before
     * it, and either holds.  @durable_active_slot is -1 once that child
     * was removed: the next header records the active child instead.
     */
    bool in_use;
    uint64_t session;
    int durable_active_slot;

    /*
     * Write intent: @intent is what the intent map on disk holds or is
     * about to hold, @intent_durable what it holds for sure.  A guest
     * write goes out only once its chunks are in @intent_durable.
     * @written: chunks written since the last periodic commit; the
     * intent bits of their regions stay set.  A region is
     * @intent_chunks chunks (a power of two), aligned: a write makes the
     * intent bits of its whole regions durable.  Set at open and reopen.
     */
    HBitmap *intent;
    HBitmap *intent_durable;
    HBitmap *written;
    int64_t intent_chunks;
    /* The size of the three bitmaps above, in chunks */
    int64_t intent_size;
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
    /* Writing the metadata failed: guest writes fail until a reopen */
    bool failed;
    /* What a load while inactive read, until the activation; or NULL */
    ShadowMapsRead *read_inactive;
} ShadowMeta;

typedef struct ShadowCopyWorker ShadowCopyWorker;

/*
 * What an x-shadow-verify job compares, for shadow_mark_stale_run(): the
 * chunks made stale on its children since it last looked, which it
 * compares again (a chunk compared, then stale and copied again, is a
 * new copy).  Under BDRVShadowState.lock.
 */
typedef struct ShadowVerifyWatch {
    HBitmap *restale;
    int64_t nb_chunks;          /* @restale's size */
    uint64_t child_serial;
    uint64_t against_serial;    /* 0: the active child, whichever it is */
} ShadowVerifyWatch;

typedef struct BDRVShadowState {
    BlockDriverState *bs;

    /*
     * Children, in the order they were given.  Changed only with the
     * graph write lock held, so I/O coroutines may read it freely.
     */
    ShadowChild **children;
    int num_children;
    unsigned next_child_index;
    uint64_t next_child_serial;
    ShadowChild *active;
    /*
     * The active child holds every chunk, so reads need not look at the
     * maps.  Cleared only in drained sections (switch), set under @lock.
     */
    bool active_complete;
    /* The node may write its children: writable and not inactive */
    bool writable;
    /*
     * Times the node was activated after an inactivation (counted as its
     * maps are loaded again): a job that slept through an inactivation
     * and the activation after it (a failed migration) sees that
     */
    unsigned activations;
    /*
     * The last load of the maps failed, which only an inactive node
     * survives (at open, or a failed activation): reads fail until a
     * load succeeds.  Set and cleared by shadow_state_load(), in the main
     * loop, with no request in flight.
     */
    bool maps_unknown;
    /*
     * A child's maps changed since the last load made them from what it
     * read (stale or durable bits, units written, a child added, removed
     * or grown): set by every such change, cleared by a load once it has
     * read (ShadowMapsRead)
     */
    bool maps_touched;

    /*
     * Grown under @lock by shadow_state_grow(); shrunk only when an
     * activation loads the maps again (shadow_state_reset_geometry())
     */
    int64_t length;
    int64_t chunk_size;
    int chunk_bits;             /* log2(chunk_size): hot paths shift */
    int64_t nb_chunks;
    /*
     * @length once the last grow completed (with metadata: recorded).
     * A write past it waits for the grow under way, by taking
     * @resize_lock: the new chunks are in @length before the new length
     * is durable, and a write there acknowledged and flushed before then
     * would be lost to a crash.  Set under @resize_lock.
     */
    int64_t grown_length;
    CoMutex resize_lock;

    ShadowWriteMode write_mode;
    ShadowPrewarm prewarm;
    uint64_t prewarm_speed;
    ShadowReadFrom read_from;
    bool copy_on_read;
    /* The background copy writes only what differs on the target */
    bool copy_compare;
    /* Sync writes send the children a copy of the guest's buffer */
    bool bounce_writes;

    /*
     * Protects every ShadowChunkMap, @reqs, @copying, the intent bitmaps,
     * @verify_restale and the copier's bookkeeping
     */
    QemuSpin lock;
    /* A ShadowVerifyWatch per running x-shadow-verify job */
    GSList *verify_restale;
    /*
     * The range lock: guest writes (their exact range), copies and
     * copy-ups (whole chunks) in flight.  Overlapping ones wait for each
     * other (shadow_range_lock()).
     */
    BlockReqList reqs;

    /* Persistent maps; meta.child is NULL without metadata */
    ShadowMeta meta;

    /*
     * Some shadow may lack chunks that a copy would bring (set whenever a
     * shadow turns stale, cleared by a copy worker that finds nothing):
     * until then guest requests need not feed the copier
     */
    bool copy_pending;

    /* Background copy: running workers (a bit each), what they copy, pacing */
    unsigned copy_workers;
    QLIST_HEAD(, ShadowCopyWorker) copy_worker_list;
    /*
     * The copy stopped on an error of the active child.  The periodic
     * timer retries it from @copy_retry_ns on (shadow_copy_retry()); the
     * delay doubles while the retries fail, up to SHADOW_COPY_RETRY_MAX_NS.
     */
    bool copy_failed;
    int64_t copy_retry_ns;
    int64_t copy_retry_delay_ns;
    int64_t copy_cursor;
    int64_t hydrate_cursor;
    int64_t copy_region;        /* hot region being copied, or -1 */
    HBitmap *copying;
    ShadowHeat heat;
    RateLimit copy_limit;
    QemuCoSleep copy_sleep[SHADOW_COPY_WORKERS];

    /* Guest requests in flight, and when the last one started */
    /* Bounce buffers kept for mirrored writes (lock) */
    void *bounce_cached[SHADOW_BOUNCE_CACHED];
    int nb_bounce_cached;

    /* The guest requests the copy last saw begun, and when (copy workers) */
    int64_t guest_reqs_seen;
    int64_t guest_seen_ns;
    uint64_t nb_reads;

    /* Guest-facing counters of the node */
    ShadowCounters stats;

    /* A switch committed during the current drained section */
    int64_t drain_start_ns;
    char *switched_from;
} BDRVShadowState;

/* One child's part of an operation run on several children at once */
typedef struct ShadowForeach ShadowForeach;
typedef struct ShadowChildReq {
    ShadowForeach *all;
    ShadowChild *sc;
    int ret;
} ShadowChildReq;

typedef int coroutine_fn GRAPH_RDLOCK_PTR
(*ShadowChildFn)(BDRVShadowState *s, ShadowChild *sc, void *opaque);

/* shadow-state.c: setup */
void shadow_state_init(BDRVShadowState *s);
void shadow_state_destroy(BDRVShadowState *s);
int shadow_state_check_geometry(int64_t length, int64_t chunk_size,
                                Error **errp);
/* A child of @len bytes (negative: the error getting it) can hold the disk */
int shadow_state_check_child_length(BDRVShadowState *s, BlockDriverState *bs,
                                    int64_t len, Error **errp);
void shadow_state_set_geometry(BDRVShadowState *s, int64_t length,
                               int64_t chunk_size);
void shadow_child_map_init(BDRVShadowState *s, ShadowChild *sc, bool stale);
void shadow_child_map_destroy(ShadowChild *sc);

/* shadow-state.c: the range lock */
void coroutine_fn shadow_range_lock(BDRVShadowState *s, BlockReq *req,
                                    int64_t offset, int64_t bytes);
void coroutine_fn shadow_range_unlock(BDRVShadowState *s, BlockReq *req);

/* shadow-state.c: queries */
void shadow_chunk_range(BDRVShadowState *s, int64_t offset, int64_t bytes,
                        int64_t *first, int64_t *end);
void shadow_full_chunk_range(BDRVShadowState *s, int64_t offset,
                             int64_t bytes, int64_t *first, int64_t *end);
int64_t shadow_chunk_bytes(BDRVShadowState *s, int64_t first, int64_t end);
bool shadow_state_active_durably_holds(BDRVShadowState *s, int64_t first,
                                       int64_t end);
bool shadow_state_active_lacks(BDRVShadowState *s, int64_t first,
                               int64_t end);
bool shadow_state_holds(ShadowChild *sc, int64_t first, int64_t end);
ShadowChild *shadow_state_holder(BDRVShadowState *s, int64_t chunk,
                                 ShadowChild *except);
int64_t shadow_state_run(BDRVShadowState *s, int64_t chunk, int64_t end,
                         ShadowChild *holder);
int64_t shadow_valid_bytes(BDRVShadowState *s, ShadowChild *sc);
ShadowChildState shadow_state_child_state(BDRVShadowState *s,
                                          ShadowChild *sc);
bool shadow_state_shadows_stale(BDRVShadowState *s);
bool shadow_state_may_switch(BDRVShadowState *s, ShadowChild *to,
                             bool writable, Error **errp);
bool shadow_state_may_remove(BDRVShadowState *s, ShadowChild *sc,
                             Error **errp);

/* shadow-state.c: transitions */
bool shadow_state_write_done(BDRVShadowState *s, ShadowWriteKind kind,
                             int64_t offset, int64_t bytes,
                             ShadowChildReq *reqs, int n);
bool shadow_state_copied(BDRVShadowState *s, ShadowChild *src,
                         ShadowChild *target, int64_t first, int64_t nb,
                         bool *complete);
void shadow_state_degrade(BDRVShadowState *s, ShadowChild *sc,
                          ShadowOperation op, int ret);
void shadow_state_switch(BDRVShadowState *s, ShadowChild *to);
void shadow_state_short_child(BDRVShadowState *s, ShadowChild *sc,
                              int64_t len);
void shadow_state_retry_degraded(BDRVShadowState *s);
int shadow_state_activate_unrecorded(BDRVShadowState *s, int64_t active_len,
                                     Error **errp);
int coroutine_fn GRAPH_RDLOCK shadow_state_flush_children(BDRVShadowState *s);
bool shadow_state_unflushed(BDRVShadowState *s, ShadowChild *sc);
int shadow_state_flush_child_sync(BDRVShadowState *s, ShadowChild *sc);
int coroutine_fn GRAPH_RDLOCK shadow_state_grow(BDRVShadowState *s,
                                                int64_t length,
                                                Error **errp);

/* shadow-state.c: durability (with metadata) */
int GRAPH_RDLOCK shadow_state_load(BDRVShadowState *s, Error **errp);
int coroutine_fn GRAPH_RDLOCK shadow_state_begin_writing(BDRVShadowState *s);
int coroutine_fn GRAPH_RDLOCK shadow_state_prepare_write(BDRVShadowState *s,
                                                         int64_t first,
                                                         int64_t end);
void GRAPH_RDLOCK shadow_state_storage_seen(ShadowChild *sc);
bool GRAPH_RDLOCK shadow_state_storage_moved(BDRVShadowState *s);
void GRAPH_RDLOCK shadow_state_check_storage_unrecorded(BDRVShadowState *s);
int coroutine_fn GRAPH_RDLOCK shadow_state_commit(BDRVShadowState *s,
                                                  bool periodic);
int GRAPH_RDLOCK shadow_state_stop(BDRVShadowState *s, bool keep_copies,
                                  Error **errp);
int GRAPH_RDLOCK shadow_state_add_child(BDRVShadowState *s, ShadowChild *sc,
                                        Error **errp);
void shadow_state_del_child(BDRVShadowState *s, ShadowChild *sc);
void shadow_state_commit_soon(BDRVShadowState *s);
void shadow_state_start_timer(BDRVShadowState *s, AioContext *ctx);
void shadow_state_stop_timer(BDRVShadowState *s);

/* shadow-meta.c: the on-disk format; column 0 is the intent map */
#define SHADOW_META_COLUMNS       (1 + SHADOW_META_SLOTS)
/* The header's room for the units' numbers, after the slot table */
#define SHADOW_META_SEQS_BYTES    3840
typedef struct ShadowMetaHeader ShadowMetaHeader;
typedef struct ShadowMetaImage {
    uint64_t generation;
    bool in_use;
    bool unique_seq;        /* its writer keeps ShadowMapsRead's rules */
    int64_t chunk_size;
    int64_t length;
    int64_t nb_chunks;
    int active_slot;
    uint64_t session;
    ShadowSlot slots[SHADOW_META_SLOTS];
    /*
     * Read along with the header: its first @nb_rows rows of maps at
     * @rows, inside @buf (shadow_meta_image_cleanup() frees it)
     */
    uint8_t *buf;
    uint8_t *rows;
    int64_t nb_rows;
    /*
     * In a header not in use, if they fit: the number of bits listed
     * per unit, then for each used slot, in slot order, the low bits of
     * each unit's sequence number (shadow_meta_listed_seq())
     */
    bool unit_seqs_known;
    uint8_t unit_seqs[SHADOW_META_SEQS_BYTES];
} ShadowMetaImage;

int64_t shadow_meta_nb_units(int64_t nb_chunks);
int64_t shadow_meta_size(int64_t nb_chunks);
const char *shadow_meta_name(BDRVShadowState *s);
BlockDriverState *GRAPH_RDLOCK shadow_storage_leaf(BlockDriverState *bs);
int GRAPH_RDLOCK shadow_meta_identify(BlockDriverState *bs,
                                      ShadowIdentity *id);
int GRAPH_RDLOCK shadow_meta_read_header(BDRVShadowState *s,
                                         ShadowMetaImage *img,
                                         bool header_only, bool *fresh,
                                         Error **errp);
int GRAPH_RDLOCK shadow_meta_write_header(BDRVShadowState *s,
                                          const ShadowMetaImage *img);
void shadow_meta_image_cleanup(ShadowMetaImage *img);
int shadow_meta_seq_bits(const ShadowMetaImage *img);
bool shadow_meta_list_seqs(ShadowMetaImage *img);
void shadow_meta_list_seq(ShadowMetaImage *img, int slot, int64_t u,
                          uint64_t seq);
int shadow_meta_listed_seq(const ShadowMetaImage *img, int slot, int64_t u,
                           uint64_t *low);
int GRAPH_RDLOCK shadow_meta_read_maps(BDRVShadowState *s,
                                       const ShadowMetaImage *img,
                                       const unsigned long *rows_wanted,
                                       uint32_t want, const uint64_t *epochs,
                                       bool torn_ok, uint8_t **bits,
                                       uint64_t **seqs, unsigned long **torn,
                                       uint32_t bad_is_set,
                                       int64_t *bad_units,
                                       uint32_t *past_end);
void shadow_meta_encode_unit(uint8_t *unit, int column, uint64_t epoch,
                             int64_t index, uint64_t seq,
                             const uint8_t *payload);
int64_t shadow_meta_unit_offset(int64_t index, int column, uint64_t seq);
int GRAPH_RDLOCK shadow_meta_ensure_size(BDRVShadowState *s,
                                         int64_t nb_chunks, Error **errp);
int coroutine_fn GRAPH_RDLOCK shadow_meta_zero_rows(BDRVShadowState *s,
                                                    int64_t old_nb,
                                                    int64_t nb_chunks,
                                                    Error **errp);

/* shadow.c */
bool shadow_is_node(BlockDriverState *bs);
/* The child with node name @name, or NULL */
ShadowChild *shadow_find_child(BDRVShadowState *s, const char *name);
void coroutine_fn GRAPH_RDLOCK shadow_co_foreach(BDRVShadowState *s,
                                                 ShadowChildReq *reqs, int n,
                                                 ShadowChildFn fn,
                                                 void *opaque);
/* shadow-stats.c */
ShadowCounterShard *shadow_counters_shard_of(ShadowCounters *c,
                                             AioContext *ctx);
ShadowCounterShard *shadow_counters_shard(ShadowCounters *c);
void shadow_counters_add(ShadowCounters *c, ShadowStat stat, int64_t n);
int64_t shadow_counters_get(ShadowCounters *c, ShadowStat stat);
void shadow_account_weighted(ShadowCounters *c, bool write, int64_t bytes,
                             int64_t ns, int weight, int ret);
void shadow_account(ShadowCounters *c, bool write, int64_t bytes, int64_t ns,
                    int ret);
const char *shadow_child_name(ShadowChild *sc);

/*
 * The counting itself is inline: it runs several times on every guest
 * request, where a call costs as much as the addition (see shadow-stats.c
 * for the shards)
 */

/* Add @n to @stat in @sh (from shadow_counters_shard()); the old value */
static inline int64_t shadow_shard_add(ShadowCounters *c,
                                       ShadowCounterShard *sh,
                                       ShadowStat stat, int64_t n)
{
    int64_t old;

    if (!sh) {
        return qatomic_fetch_add(&c->shard[SHADOW_COUNTER_SHARDS - 1].v[stat],
                                 n);
    }
    old = qatomic_read(&sh->v[stat]);
    qatomic_set(&sh->v[stat], old + n);
    return old;
}

/*
 * One request of @bytes, failed if @ret < 0.  @ns is its time, counted
 * @weight times; nothing is counted for the time when @weight is 0.
 */
static inline void shadow_account_shard(ShadowCounters *c,
                                        ShadowCounterShard *sh, bool write,
                                        int64_t bytes, int64_t ns, int weight,
                                        int ret)
{
    if (ret < 0) {
        shadow_shard_add(c, sh, SHADOW_STAT_FAILED_OPS, 1);
        return;
    }
    shadow_shard_add(c, sh, write ? SHADOW_STAT_WR_OPS : SHADOW_STAT_RD_OPS,
                     1);
    shadow_shard_add(c, sh, write ? SHADOW_STAT_WR_BYTES :
                     SHADOW_STAT_RD_BYTES, bytes);
    if (weight) {
        shadow_shard_add(c, sh, write ? SHADOW_STAT_WR_NS : SHADOW_STAT_RD_NS,
                         ns * weight);
    }
}

/* shadow-heat.c */
void shadow_heat_init(ShadowHeat *h, int64_t length, int64_t chunk_size);
void shadow_heat_destroy(ShadowHeat *h);
void shadow_heat_resize(ShadowHeat *h, int64_t length);
bool shadow_heat_count(ShadowHeat *h, int64_t offset, int64_t bytes);
bool shadow_heat_queue(ShadowHeat *h, int64_t offset, int64_t bytes,
                       bool copying, bool urgent);
void shadow_heat_decay(ShadowHeat *h, int64_t now);
int64_t shadow_heat_pop(ShadowHeat *h, bool urgent_only,
                        bool (*needed)(void *opaque, int64_t region),
                        void *opaque);

/* shadow-copy.c */
void shadow_copy_kick(BDRVShadowState *s);
void shadow_copy_retry(BDRVShadowState *s, int64_t now);
bool shadow_copy_enabled(BDRVShadowState *s);
bool shadow_copy_may_run(BDRVShadowState *s);
void shadow_copy_wake(BDRVShadowState *s);
void shadow_copy_close(BDRVShadowState *s);
void shadow_copy_set_speed(BDRVShadowState *s, uint64_t speed);
int coroutine_fn GRAPH_RDLOCK shadow_copy_up_locked(BDRVShadowState *s,
                                                    int64_t first,
                                                    int64_t end);
int coroutine_fn GRAPH_RDLOCK shadow_copy_up(BDRVShadowState *s,
                                             int64_t first, int64_t end);

/*
 * How long a verify job (x-shadow-verify, x-shadow-verify-copy) has
 * compared nothing, the time it was paused left out: job-pause and
 * drained sections are no sign of a copy that does not run.  Only the
 * job's coroutine and its pause and resume callbacks touch it.
 */
typedef struct ShadowVerifyClock {
    int64_t last_progress_ns;   /* moved on by the time paused since */
    int64_t paused_ns;
} ShadowVerifyClock;

/* A pass that compared nothing waits this long before the next one */
#define SHADOW_VERIFY_RETRY_NS (100 * SCALE_MS)
/* The job fails when it compared nothing for this long */
#define SHADOW_VERIFY_STUCK_NS (30 * NANOSECONDS_PER_SECOND)

static inline void shadow_verify_clock_progress(ShadowVerifyClock *c)
{
    c->last_progress_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
}

static inline void shadow_verify_clock_pause(ShadowVerifyClock *c)
{
    c->paused_ns = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
}

static inline void shadow_verify_clock_resume(ShadowVerifyClock *c)
{
    c->last_progress_ns += qemu_clock_get_ns(QEMU_CLOCK_REALTIME) -
                           c->paused_ns;
}

static inline bool shadow_verify_clock_stuck(ShadowVerifyClock *c)
{
    return qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - c->last_progress_ns >
           SHADOW_VERIFY_STUCK_NS;
}

/* shadow-verify.c */
int coroutine_fn GRAPH_RDLOCK
shadow_read_both(BdrvChild *a, BdrvChild *b, int64_t offset, int64_t bytes,
                 void *buf_a, void *buf_b, BdrvChild **failed);

#endif /* BLOCK_SHADOW_H */
