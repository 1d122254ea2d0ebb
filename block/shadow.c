/*
 * Shadow block driver
 *
 * A shadow node has one child per storage tier.  The active child serves
 * guest I/O; the other children, the shadows, are kept identical to it by
 * mirrored writes and by a background copy.  Because a synced shadow
 * already holds the data, moving the disk to another tier is a switch of
 * the active child through blockdev-reopen, with no copy at switch time.
 *
 * This file parses options, opens and closes the node, routes guest I/O
 * to the children and reports statistics.  Which child holds which chunk,
 * and every rule about it, lives in shadow-state.c.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "block/qdict.h"
#include "qapi/error.h"
#include "qapi/qapi-events-block-shadow.h"
#include "qapi/qapi-visit-block-core.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "qobject/qstring.h"
#include "qapi/qobject-input-visitor.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/iov.h"
#include "qemu/memalign.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/timer.h"
#include "shadow.h"
#include "trace.h"

/* Driver-specific option names, as in BlockdevOptionsShadow */
static const char *const shadow_option_names[] = {
    "children", "active-child", "chunk-size", "write-mode", "prewarm",
    "prewarm-speed", "read-from", "copy-on-read", "metadata",
    "intent-granularity", "copy-compare", "x-bounce-writes", NULL
};

/* Parsed options of an open or a reopen */
typedef struct ShadowOptions {
    BlockdevOptionsShadow *qapi;
    int64_t chunk_size;
    int64_t intent_granularity;
    ShadowWriteMode write_mode;
    ShadowPrewarm prewarm;
    uint64_t prewarm_speed;
    ShadowReadFrom read_from;
    bool copy_on_read;
    bool copy_compare;
    bool bounce_writes;
} ShadowOptions;

typedef struct ShadowReopenState {
    ShadowOptions opts;
    ShadowChild *new_active;
    bool writable;
} ShadowReopenState;

const char *shadow_child_name(ShadowChild *sc)
{
    return bdrv_get_node_name(sc->child->bs);
}

/*
 * Running one operation on several children in parallel
 */

struct ShadowForeach {
    BDRVShadowState *s;
    Coroutine *co;
    int pending;
    /* The caller waits in shadow_co_foreach(), not in its own request */
    bool waiting;
    ShadowChildFn fn;
    void *opaque;
};

/*
 * This function can count as GRAPH_RDLOCK because shadow_co_foreach()
 * holds the graph lock and keeps it until this coroutine has terminated.
 */
static void coroutine_fn GRAPH_RDLOCK shadow_foreach_entry(void *opaque)
{
    ShadowChildReq *req = opaque;
    ShadowForeach *all = req->all;

    req->ret = all->fn(all->s, req->sc, all->opaque);
    if (--all->pending == 0 && all->waiting) {
        aio_co_wake(all->co);
    }
}

/*
 * Run @fn on the children of @reqs at once and wait for all of them; the
 * results are in @reqs[i].ret.  @reqs[0] runs in this coroutine.
 */
void coroutine_fn shadow_co_foreach(BDRVShadowState *s, ShadowChildReq *reqs,
                                    int n, ShadowChildFn fn, void *opaque)
{
    ShadowForeach all = {
        .s = s, .co = qemu_coroutine_self(), .pending = n, .fn = fn,
        .opaque = opaque,
    };
    int i;

    for (i = 0; i < n; i++) {
        reqs[i].all = &all;
    }
    for (i = 1; i < n; i++) {
        qemu_coroutine_enter(qemu_coroutine_create(shadow_foreach_entry,
                                                   &reqs[i]));
    }
    /*
     * The first request runs in this coroutine.  It may yield inside, so
     * the others must not wake this coroutine until it waits below.
     */
    reqs[0].ret = fn(s, reqs[0].sc, opaque);
    all.pending--;
    while (all.pending > 0) {
        all.waiting = true;
        qemu_coroutine_yield();
        all.waiting = false;
    }
}

/*
 * Options
 */

/* Whether the flattened key @key is option @name or part of it */
static bool shadow_key_of(const char *key, const char *name)
{
    const char *rest;

    return strstart(key, name, &rest) && (*rest == '\0' || *rest == '.');
}

/*
 * Remove the driver's options from @qdict; with @children also the
 * references to children, which bdrv_open_child() consumes otherwise
 */
static void shadow_del_options(QDict *qdict, bool children)
{
    int i;

    for (i = 0; shadow_option_names[i]; i++) {
        g_autofree char *prefix = g_strdup_printf("%s.",
                                                  shadow_option_names[i]);

        if (!children && (!strcmp(shadow_option_names[i], "children") ||
                          !strcmp(shadow_option_names[i], "metadata"))) {
            continue;
        }
        qdict_del(qdict, shadow_option_names[i]);
        qdict_extract_subqdict(qdict, NULL, prefix);
    }
}

static void shadow_options_free(ShadowOptions *opts)
{
    qapi_free_BlockdevOptionsShadow(opts->qapi);
    opts->qapi = NULL;
}

/*
 * Parse the driver's own options from the flattened @options with the
 * QAPI visitor.  With @consume, the options other than the children
 * (which bdrv_open_child() consumes) are removed from @options.
 */
static bool shadow_parse_options(QDict *options, bool consume,
                                 ShadowOptions *opts, Error **errp)
{
    g_autoptr(QDict) own = qdict_new();
    const QDictEntry *e;
    Visitor *v;
    BlockdevOptionsShadow *o = NULL;
    BlockdevRefList *ref, *prev;
    int i;

    for (e = qdict_first(options); e; e = qdict_next(options, e)) {
        for (i = 0; shadow_option_names[i]; i++) {
            if (shadow_key_of(e->key, shadow_option_names[i])) {
                qdict_put_obj(own, e->key, qobject_ref(e->value));
                break;
            }
        }
    }

    v = qobject_input_visitor_new_flat_confused(own, errp);
    if (!v) {
        return false;
    }
    visit_type_BlockdevOptionsShadow(v, NULL, &o, errp);
    visit_free(v);
    if (!o) {
        return false;
    }
    opts->qapi = o;

    if (!o->children) {
        error_setg(errp, "shadow: at least one child is required");
        goto fail;
    }
    for (ref = o->children; ref; ref = ref->next) {
        for (prev = o->children; prev != ref; prev = prev->next) {
            if (ref->value->type == QTYPE_QSTRING &&
                prev->value->type == QTYPE_QSTRING &&
                !strcmp(ref->value->u.reference, prev->value->u.reference)) {
                error_setg(errp, "shadow: node '%s' is listed twice in "
                           "'children'", ref->value->u.reference);
                goto fail;
            }
        }
    }

    opts->chunk_size = o->has_chunk_size ? o->chunk_size
                                         : SHADOW_DEFAULT_CHUNK_SIZE;
    if (!is_power_of_2(opts->chunk_size) ||
        opts->chunk_size < SHADOW_MIN_CHUNK_SIZE ||
        opts->chunk_size > SHADOW_MAX_CHUNK_SIZE) {
        error_setg(errp, "shadow: chunk-size must be a power of two from "
                   "%" PRId64 " to %" PRId64 " bytes, not %" PRIu64,
                   (int64_t)SHADOW_MIN_CHUNK_SIZE,
                   (int64_t)SHADOW_MAX_CHUNK_SIZE, o->chunk_size);
        goto fail;
    }

    opts->intent_granularity = o->has_intent_granularity ?
                               o->intent_granularity :
                               MAX(SHADOW_DEFAULT_INTENT_GRANULARITY,
                                   opts->chunk_size);
    if (!is_power_of_2(opts->intent_granularity) ||
        opts->intent_granularity < opts->chunk_size ||
        opts->intent_granularity > SHADOW_MAX_INTENT_GRANULARITY) {
        error_setg(errp, "shadow: intent-granularity must be a power of two "
                   "from chunk-size (%" PRId64 ") to %" PRId64 " bytes, "
                   "not %" PRIu64, opts->chunk_size,
                   (int64_t)SHADOW_MAX_INTENT_GRANULARITY,
                   o->intent_granularity);
        goto fail;
    }

    opts->write_mode = o->has_write_mode ? o->write_mode
                                         : SHADOW_WRITE_MODE_SYNC;
    opts->prewarm = o->has_prewarm ? o->prewarm : SHADOW_PREWARM_HOT_FIRST;
    opts->prewarm_speed = o->has_prewarm_speed ? o->prewarm_speed : 0;
    if (opts->prewarm_speed > INT64_MAX) {
        /* QMP turns -1 into UINT64_MAX: refuse it rather than mean "fast" */
        error_setg(errp, "shadow: prewarm-speed must be from 0 (unlimited) "
                   "to %" PRId64 " bytes per second", INT64_MAX);
        goto fail;
    }
    opts->read_from = o->has_read_from ? o->read_from
                                       : SHADOW_READ_FROM_ACTIVE;
    opts->copy_on_read = o->has_copy_on_read ? o->copy_on_read : true;
    opts->copy_compare = o->has_copy_compare && o->copy_compare;
    opts->bounce_writes = o->has_x_bounce_writes ? o->x_bounce_writes : true;

    if (consume) {
        shadow_del_options(options, false);
    }
    return true;

fail:
    shadow_options_free(opts);
    return false;
}

ShadowChild *shadow_find_child(BDRVShadowState *s, const char *name)
{
    int i;

    for (i = 0; i < s->num_children; i++) {
        if (!strcmp(shadow_child_name(s->children[i]), name)) {
            return s->children[i];
        }
    }
    return NULL;
}

/* The child that is a filter over node @name, if any */
static ShadowChild * GRAPH_RDLOCK
shadow_find_filtered_child(BDRVShadowState *s, const char *name)
{
    int i;

    for (i = 0; i < s->num_children; i++) {
        BlockDriverState *below = bdrv_skip_filters(s->children[i]->child->bs);

        if (below && below != s->children[i]->child->bs &&
            !strcmp(bdrv_get_node_name(below), name)) {
            return s->children[i];
        }
    }
    return NULL;
}

/*
 * x-blockdev-change renames nothing, but a later blockdev-reopen lists
 * the children as they are then: forget the references recorded at open
 * or at the last reopen, as bdrv_open() does for every child
 */
static void shadow_forget_child_options(BlockDriverState *bs)
{
    qdict_del(bs->options, "children");
    qdict_extract_subqdict(bs->options, NULL, "children.");
    qdict_del(bs->explicit_options, "children");
    qdict_extract_subqdict(bs->explicit_options, NULL, "children.");
}

/*
 * Open and close
 */

static ShadowChild *shadow_new_child(BDRVShadowState *s, BdrvChild *child,
                                     bool stale)
{
    ShadowChild *sc = g_new0(ShadowChild, 1);

    sc->child = child;
    sc->serial = ++s->next_child_serial;
    sc->slot = -1;
    shadow_state_storage_seen(sc);
    shadow_child_map_init(s, sc, stale);
    return sc;
}

static void shadow_free_child(ShadowChild *sc)
{
    shadow_child_map_destroy(sc);
    g_free(sc);
}

static int shadow_open(BlockDriverState *bs, QDict *options, int flags,
                       Error **errp)
{
    ERRP_GUARD();
    BDRVShadowState *s = bs->opaque;
    ShadowOptions opts = { 0 };
    g_autofree BdrvChild **children = NULL;
    g_autofree int64_t *lengths = NULL;
    BlockdevRefList *ref;
    int n = 0, i, active = 0;
    int ret = -EINVAL;

    s->bs = bs;
    shadow_state_init(s);

    qdict_flatten(options);
    if (!shadow_parse_options(options, true, &opts, errp)) {
        goto fail_early;
    }
    for (ref = opts.qapi->children; ref; ref = ref->next) {
        n++;
    }
    children = g_new0(BdrvChild *, n);
    lengths = g_new0(int64_t, n);

    for (i = 0; i < n; i++) {
        g_autofree char *key = g_strdup_printf("children.%d", i);
        g_autofree char *name = g_strdup(qdict_get_try_str(options, key));
        Error *local_err = NULL;

        children[i] = bdrv_open_child(NULL, options, key, bs, &child_of_bds,
                                      BDRV_CHILD_DATA, false, &local_err);
        if (!children[i]) {
            /* QEMU's messages ("Block node is read-only") name no node */
            error_propagate_prepend(errp, local_err,
                                    "Cannot open %s%s%s of shadow node '%s': ",
                                    name ? "child '" : "", name ?: key,
                                    name ? "'" : "", bdrv_get_node_name(bs));
            goto fail;
        }
        bdrv_graph_rdlock_main_loop();
        lengths[i] = bdrv_getlength(children[i]->bs);
        bdrv_graph_rdunlock_main_loop();
    }
    for (i = 0; i < n; i++) {
        int j;

        for (j = 0; j < i; j++) {
            if (children[i]->bs == children[j]->bs) {
                error_setg(errp, "shadow: node '%s' is a child twice",
                           bdrv_get_node_name(children[i]->bs));
                goto fail;
            }
        }
        if (children[i]->bs == bs) {
            error_setg(errp, "shadow: a node cannot be its own child");
            goto fail;
        }
    }

    bdrv_graph_rdlock_main_loop();
    if (opts.qapi->active_child) {
        for (active = 0; active < n; active++) {
            if (!strcmp(bdrv_get_node_name(children[active]->bs),
                        opts.qapi->active_child)) {
                break;
            }
        }
        if (active == n) {
            error_setg(errp, "shadow: active-child '%s' is not a child of "
                       "this node", opts.qapi->active_child);
            bdrv_graph_rdunlock_main_loop();
            goto fail;
        }
    }
    s->length = lengths[active];
    ret = 0;
    for (i = 0; i < n && ret == 0; i++) {
        /*
         * With metadata the disk has the length it records, which a crash
         * while growing leaves shorter than the active child's: the
         * children are checked against it when the maps are loaded
         */
        if (opts.qapi->metadata && lengths[i] >= 0) {
            continue;
        }
        ret = shadow_state_check_child_length(s, children[i]->bs, lengths[i],
                                              errp);
    }
    bdrv_graph_rdunlock_main_loop();
    if (ret == 0) {
        ret = shadow_state_check_geometry(s->length, opts.chunk_size, errp);
    }
    if (ret < 0) {
        goto fail;
    }

    shadow_state_set_geometry(s, s->length, opts.chunk_size);
    s->meta.intent_chunks = opts.intent_granularity / opts.chunk_size;
    s->write_mode = opts.write_mode;
    s->read_from = opts.read_from;
    s->copy_on_read = opts.copy_on_read;
    s->copy_compare = opts.copy_compare;
    s->bounce_writes = opts.bounce_writes;
    s->writable = (flags & BDRV_O_RDWR) && !(flags & BDRV_O_INACTIVE);
    s->copying = hbitmap_alloc(s->nb_chunks, 0);
    s->copy_region = -1;
    shadow_heat_init(&s->heat, s->length, s->chunk_size);
    ratelimit_init(&s->copy_limit);
    shadow_copy_set_speed(s, opts.prewarm_speed);

    {
        g_autofree char *name = g_strdup(qdict_get_try_str(options,
                                                           "metadata"));
        Error *local_err = NULL;

        s->meta.child = bdrv_open_child(NULL, options, "metadata", bs,
                                        &child_of_bds, BDRV_CHILD_METADATA,
                                        true, &local_err);
        if (local_err) {
            error_propagate_prepend(errp, local_err,
                                    "Cannot open the metadata%s%s%s of "
                                    "shadow node '%s': ", name ? " '" : "",
                                    name ?: "", name ? "'" : "",
                                    bdrv_get_node_name(bs));
            ret = -EINVAL;
            goto fail_state;
        }
    }
    for (i = 0; s->meta.child && i < n; i++) {
        if (s->meta.child->bs == children[i]->bs || s->meta.child->bs == bs) {
            error_setg(errp, "shadow: node '%s' cannot be both a child and "
                       "the metadata of the node",
                       bdrv_get_node_name(s->meta.child->bs));
            ret = -EINVAL;
            goto fail_state;
        }
    }

    s->num_children = n;
    s->next_child_index = n;
    s->children = g_new0(ShadowChild *, n);
    for (i = 0; i < n; i++) {
        /* Without persistent maps nothing is known about a shadow */
        s->children[i] = shadow_new_child(s, children[i], i != active);
    }
    s->active = s->children[active];
    qatomic_set(&s->active_complete, true);

    /*
     * An inactive node (incoming migration) reads its maps again when it
     * is activated: until then another process may be writing them.  Its
     * reads go by the maps as they are now, or fail if they cannot be
     * read: by the default maps the active child would hold everything.
     */
    s->meta.writable = s->writable;
    if (s->meta.child) {
        Error *local_err = NULL;

        bdrv_graph_rdlock_main_loop();
        ret = shadow_state_load(s, &local_err);
        bdrv_graph_rdunlock_main_loop();
        if (ret < 0 && !(flags & BDRV_O_INACTIVE)) {
            error_propagate(errp, local_err);
            goto fail_children;
        }
        if (ret < 0) {
            error_prepend(&local_err, "shadow: node '%s' is inactive and "
                          "fails its reads until it is activated: ",
                          bdrv_get_node_name(bs));
            warn_report_err(local_err);
        }
    }

    /* Only now may the copy start: the maps are loaded */
    s->prewarm = opts.prewarm;
    bs->total_sectors = DIV_ROUND_UP(s->length, BDRV_SECTOR_SIZE);
    bs->supported_write_flags = BDRV_REQ_WRITE_UNCHANGED | BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_WRITE_UNCHANGED | BDRV_REQ_FUA |
                               BDRV_REQ_MAY_UNMAP;
    bs->supported_truncate_flags =
        s->active->child->bs->supported_truncate_flags & BDRV_REQ_ZERO_WRITE;

    shadow_options_free(&opts);
    shadow_state_start_timer(s, bdrv_get_aio_context(bs));
    shadow_copy_kick(s);
    return 0;

fail_children:
    for (i = 0; i < n; i++) {
        children[i] = s->children[i]->child;
        shadow_free_child(s->children[i]);
    }
    g_clear_pointer(&s->children, g_free);
    s->num_children = 0;
    s->active = NULL;
fail_state:
    /* Drained sections end while the children go: keep the copy away */
    s->copy_failed = true;
    hbitmap_free(s->copying);
    shadow_heat_destroy(&s->heat);
    ratelimit_destroy(&s->copy_limit);
fail:
    bdrv_graph_wrlock();
    if (s->meta.child) {
        bdrv_unref_child(bs, s->meta.child);
        s->meta.child = NULL;
    }
    for (i = 0; i < n; i++) {
        if (children[i]) {
            bdrv_unref_child(bs, children[i]);
        }
    }
    bdrv_graph_wrunlock();
fail_early:
    shadow_options_free(&opts);
    shadow_state_destroy(s);
    return ret;
}

static void shadow_close(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;
    Error *local_err = NULL;
    bool drained;
    int i;

    /* The node is drained: no copy runs, but a worker may wait to */
    shadow_copy_close(s);

    bdrv_graph_rdlock_main_loop();
    if (shadow_state_stop(s, true, &local_err) < 0) {
        error_report_err(local_err);
    }
    bdrv_graph_rdunlock_main_loop();
    s->writable = false;
    shadow_state_stop_timer(s);

    /*
     * As quorum_close() does (patches/0019); the node left the list of
     * nodes before its close, so a drain of every node skips it
     */
    drained = bdrv_graph_wrlock_for_unref(bdrv_get_aio_context(bs));
    if (s->meta.child) {
        bdrv_unref_child(bs, s->meta.child);
        s->meta.child = NULL;
    }
    for (i = 0; i < s->num_children; i++) {
        bdrv_unref_child(bs, s->children[i]->child);
        shadow_free_child(s->children[i]);
    }
    bdrv_graph_wrunlock_for_unref(drained);

    g_free(s->children);
    hbitmap_free(s->copying);
    shadow_heat_destroy(&s->heat);
    ratelimit_destroy(&s->copy_limit);
    g_free(s->switched_from);
    while (s->nb_bounce_cached) {
        qemu_vfree(s->bounce_cached[--s->nb_bounce_cached]);
    }
    shadow_state_destroy(s);
}

/*
 * Guest I/O
 */

static int64_t coroutine_fn GRAPH_RDLOCK
shadow_co_getlength(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;

    return s->length;
}

/*
 * A guest request starts: the copy yields to the guest for a while
 * (shadow_guest_busy()).  @sh is the node's shard for the calling thread.
 * For a read, returns how many reads its time counts for: 0 when it is
 * not timed.
 */
static int shadow_guest_begin(BDRVShadowState *s, ShadowCounterShard *sh,
                              bool read)
{
    shadow_shard_add(&s->stats, sh, SHADOW_STAT_GUEST_INFLIGHT, 1);
    shadow_shard_add(&s->stats, sh, SHADOW_STAT_GUEST_REQS, 1);
    if (!read) {
        return 1;
    }
    if (!sh) {
        return 1;
    }
    return shadow_shard_add(&s->stats, sh, SHADOW_STAT_GUEST_READS, 1) %
           SHADOW_READ_SAMPLE ? 0 : SHADOW_READ_SAMPLE;
}

static void shadow_guest_end(BDRVShadowState *s)
{
    shadow_counters_add(&s->stats, SHADOW_STAT_GUEST_INFLIGHT, -1);
}

/* A read latency sample for @sc's moving average (weight 1/8) */
static void shadow_note_read_latency(ShadowChild *sc, int64_t ns,
                                     int64_t now)
{
    int64_t avg = qatomic_read(&sc->read_ns);

    qatomic_set(&sc->read_ns, avg ? avg - avg / 8 + ns / 8 : MAX(ns, 1));
    qatomic_set(&sc->read_stamp, now);
}

/*
 * With read-from=fastest, the in-sync child with the lowest read latency
 * that holds every chunk of the request; a child never measured counts as
 * fastest, so that it gets measured.  One read in 64 goes to the child
 * measured longest ago, to keep the averages fresh.  Locked.
 */
static ShadowChild *shadow_pick_reader(BDRVShadowState *s, int64_t first,
                                       int64_t end)
{
    ShadowChild *best = s->active, *oldest = s->active;
    bool explore = ++s->nb_reads % 64 == 0;
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc == s->active || sc->degraded ||
            !shadow_state_holds(sc, first, end)) {
            continue;
        }
        if (sc->read_ns < best->read_ns) {
            best = sc;
        }
        if (sc->read_stamp < oldest->read_stamp) {
            oldest = sc;
        }
    }
    return explore ? oldest : best;
}

/*
 * A read whose active child lacks chunks, on a node that cannot copy them
 * up now: each run of chunks is read from a child that holds it, without
 * copying anything
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_read_through(BDRVShadowState *s, int64_t offset, int64_t bytes,
                    QEMUIOVector *qiov, size_t qiov_offset,
                    BdrvRequestFlags flags)
{
    int64_t pos = offset, stop = offset + bytes;

    while (pos < stop) {
        int64_t c = pos / s->chunk_size, end, run, n;
        ShadowChild *sc;
        int ret;

        end = DIV_ROUND_UP(MIN(stop, s->length), s->chunk_size);
        qemu_spin_lock(&s->lock);
        sc = hbitmap_get(s->active->map.stale, c) ?
             shadow_state_holder(s, c, s->active) : s->active;
        run = sc ? shadow_state_run(s, c, end, sc) : 0;
        qemu_spin_unlock(&s->lock);
        if (!sc) {
            return -EIO;
        }
        n = MIN(stop, (c + run) * s->chunk_size) - pos;
        trace_shadow_read_through(s, shadow_child_name(sc), pos, n);
        ret = bdrv_co_preadv_part(sc->child, pos, n, qiov,
                                  qiov_offset + (pos - offset), flags);
        if (ret < 0) {
            return ret;
        }
        pos += n;
    }
    return 0;
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_preadv_part(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      QEMUIOVector *qiov, size_t qiov_offset,
                      BdrvRequestFlags flags)
{
    BDRVShadowState *s = bs->opaque;
    ShadowChild *sc = s->active, *served = NULL;
    AioContext *ctx = qemu_get_current_aio_context(), *end_ctx;
    ShadowCounterShard *sh = shadow_counters_shard_of(&s->stats, ctx);
    /*
     * Most reads are not timed: a clock read costs more than the rest.
     * read-from=fastest times every read, to compare the children.
     */
    int weight = shadow_guest_begin(s, sh, true);
    bool timed = weight || s->read_from == SHADOW_READ_FROM_FASTEST;
    int64_t start = timed ? get_clock() : 0;
    int64_t ns = 0, first, end;
    bool urgent, copying, complete;
    int ret;

    /*
     * Heat is counted whatever the prewarm mode, so that turning pre-warm
     * on later finds the history.  The lock is taken only when a region's
     * level rose, or while a copy may use what this read tells
     */
    copying = qatomic_read(&s->copy_pending) &&
              s->prewarm != SHADOW_PREWARM_OFF;
    if (shadow_heat_count(&s->heat, offset, bytes) || copying) {
        qemu_spin_lock(&s->lock);
        urgent = shadow_heat_queue(&s->heat, offset, bytes, copying,
                                   s->copy_on_read);
        qemu_spin_unlock(&s->lock);
        if (urgent && !qatomic_read(&s->copy_workers)) {
            shadow_copy_kick(s);
        }
    }

    /* An active child that holds everything, read alone: no map to see */
    complete = qatomic_read(&s->active_complete);
    if (!complete && s->maps_unknown) {
        ret = -EIO;
        goto out;
    }
    if (!complete || s->read_from == SHADOW_READ_FROM_FASTEST) {
        shadow_chunk_range(s, offset, bytes, &first, &end);
        if (complete) {
            qemu_spin_lock(&s->lock);
            sc = shadow_pick_reader(s, first, end);
            qemu_spin_unlock(&s->lock);
        } else if (shadow_state_active_lacks(s, first, end)) {
            /*
             * After an instant switch the active child may not hold it
             * yet: copy it up, or when the node may not write (read-only,
             * inactive, its metadata failing) or the copy-up fails, read
             * it where it is
             */
            ret = s->writable && !qatomic_read(&s->meta.failed) ?
                  shadow_copy_up(s, first, end) : -EROFS;
            if (ret < 0) {
                ret = shadow_read_through(s, offset, bytes, qiov,
                                          qiov_offset, flags);
                goto out;
            }
        }
    }

    if (trace_event_get_state_backends(TRACE_SHADOW_READ)) {
        /* Not even the child's name on the read path unless tracing */
        trace_shadow_read(s, shadow_child_name(sc), offset, bytes);
    }
    ret = bdrv_co_preadv_part(sc->child, offset, bytes, qiov, qiov_offset,
                              flags);
    if (ret < 0 && sc != s->active) {
        /* A failing shadow never fails the guest: read the active child */
        shadow_account(&sc->stats, false, bytes, 0, ret);
        shadow_state_degrade(s, sc, SHADOW_OPERATION_READ, ret);
        sc = s->active;
        ret = bdrv_co_preadv_part(sc->child, offset, bytes, qiov,
                                  qiov_offset, flags);
    }
    served = sc;
out:
    if (timed) {
        int64_t now = get_clock();

        ns = now - start;
        if (served && ret == 0) {
            shadow_note_read_latency(served, ns, now);
        }
    }
    /* Counted by the thread the read ends in: see shadow-stats.c */
    end_ctx = qemu_get_current_aio_context();
    if (end_ctx != ctx) {
        sh = shadow_counters_shard_of(&s->stats, end_ctx);
    }
    if (served) {
        shadow_account_shard(&served->stats,
                             shadow_counters_shard_of(&served->stats, end_ctx),
                             false, bytes, ns, weight, ret);
    }
    shadow_account_shard(&s->stats, sh, false, bytes, ns, weight, ret);
    shadow_shard_add(&s->stats, sh, SHADOW_STAT_GUEST_INFLIGHT, -1);
    return ret;
}

/* One guest write, write-zeroes, discard or flush, as sent to children */
typedef struct ShadowIO {
    ShadowWriteKind kind;
    int64_t offset;
    int64_t bytes;
    QEMUIOVector *qiov;
    size_t qiov_offset;
    BdrvRequestFlags flags;
    int64_t start;
} ShadowIO;

static int coroutine_fn GRAPH_RDLOCK
shadow_child_io(BDRVShadowState *s, ShadowChild *sc, void *opaque)
{
    ShadowIO *io = opaque;
    /* Shadows need no FUA: their durability is the commit's business */
    BdrvRequestFlags flags = sc == s->active ? io->flags
                                             : io->flags & ~BDRV_REQ_FUA;
    int ret;

    switch (io->kind) {
    case SHADOW_WRITE:
        ret = bdrv_co_pwritev_part(sc->child, io->offset, io->bytes, io->qiov,
                                   io->qiov_offset, flags);
        break;
    case SHADOW_WRITE_ZEROES:
        ret = bdrv_co_pwrite_zeroes(sc->child, io->offset, io->bytes, flags);
        break;
    case SHADOW_DISCARD:
        ret = bdrv_co_pdiscard(sc->child, io->offset, io->bytes);
        break;
    default:
        g_assert_not_reached();
    }
    /* Once complete: a flush that begins later covers it */
    qatomic_inc(&sc->guest_writes);
    shadow_account(&sc->stats, true, io->bytes, get_clock() - io->start, ret);
    return ret;
}

/*
 * Bounce buffers for mirrored writes: small ones are kept for the next
 * write, since allocating an aligned buffer costs as much as copying 4 KiB
 */
static void *shadow_bounce_get(BDRVShadowState *s, size_t bytes)
{
    void *buf = NULL;

    if (bytes > SHADOW_BOUNCE_CACHED_BYTES) {
        return qemu_try_blockalign(s->bs, bytes);
    }
    qemu_spin_lock(&s->lock);
    if (s->nb_bounce_cached) {
        buf = s->bounce_cached[--s->nb_bounce_cached];
    }
    qemu_spin_unlock(&s->lock);
    return buf ?: qemu_try_blockalign(s->bs, SHADOW_BOUNCE_CACHED_BYTES);
}

static void shadow_bounce_put(BDRVShadowState *s, void *buf, size_t bytes)
{
    if (buf && bytes <= SHADOW_BOUNCE_CACHED_BYTES) {
        qemu_spin_lock(&s->lock);
        if (s->nb_bounce_cached < SHADOW_BOUNCE_CACHED) {
            s->bounce_cached[s->nb_bounce_cached++] = buf;
            buf = NULL;
        }
        qemu_spin_unlock(&s->lock);
    }
    qemu_vfree(buf);
}

/*
 * A write, write-zeroes or discard.  The range lock keeps it apart from
 * overlapping writes and copies, so that every child sees overlapping
 * writes in the same order and no copy lands between its halves.
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_co_write(BlockDriverState *bs, ShadowWriteKind kind, int64_t offset,
                int64_t bytes, QEMUIOVector *qiov, size_t qiov_offset,
                BdrvRequestFlags flags)
{
    BDRVShadowState *s = bs->opaque;
    int64_t start = get_clock();
    ShadowIO io = {
        .kind = kind, .offset = offset, .bytes = bytes, .qiov = qiov,
        .qiov_offset = qiov_offset, .flags = flags, .start = start,
    };
    ShadowChildReq stack[SHADOW_STACK_CHILDREN], *reqs = stack;
    ShadowChild *active;
    QEMUIOVector bounce_qiov;
    void *bounce = NULL;
    int64_t first, end, full_first, full_end, lock_off, lock_bytes;
    bool head = false, tail = false, left_stale = false;
    bool commit = false;
    bool copying;
    BlockReq req;
    int i, n, ret;

    if (offset + bytes > qatomic_read(&s->grown_length)) {
        /*
         * A format node above allocates past the end: grow first, or wait
         * for the grow under way to make the new length durable
         */
        Error *local_err = NULL;

        ret = shadow_state_grow(s, offset + bytes, &local_err);
        if (ret < 0) {
            error_report_err(local_err);
            return ret;
        }
    }

    if (shadow_state_storage_moved(s)) {
        /*
         * A tier's storage changed under the node (an overlay from
         * blockdev-snapshot): its slot must name the new storage before
         * a write lands there, or after a crash the metadata would look
         * for the write in the old one.  A commit records it.
         */
        if (!s->meta.child) {
            shadow_state_check_storage_unrecorded(s);
        } else {
            ret = shadow_state_commit(s, false);
            if (ret < 0) {
                return ret;
            }
        }
    }

    shadow_guest_begin(s, shadow_counters_shard(&s->stats), false);
    shadow_chunk_range(s, offset, bytes, &first, &end);
    shadow_full_chunk_range(s, offset, bytes, &full_first, &full_end);
    copying = qatomic_read(&s->copy_pending) &&
              s->prewarm != SHADOW_PREWARM_OFF;
    if (shadow_heat_count(&s->heat, offset, bytes) || copying) {
        qemu_spin_lock(&s->lock);
        shadow_heat_queue(&s->heat, offset, bytes, copying, false);
        qemu_spin_unlock(&s->lock);
    }

    /*
     * I3: a chunk the active child lacks is copied up before a write
     * covers part of it, with the whole chunk locked; a discard leaves
     * such chunks out instead
     */
retry:
    lock_off = offset;
    lock_bytes = bytes;
    for (;;) {
        shadow_range_lock(s, &req, lock_off, lock_bytes);
        active = s->active;
        head = first < full_first &&
               shadow_state_active_lacks(s, first, first + 1);
        tail = full_end < end && shadow_state_active_lacks(s, end - 1, end);
        if ((!head && !tail) || kind == SHADOW_DISCARD ||
            lock_off == first * s->chunk_size) {
            break;
        }
        shadow_range_unlock(s, &req);
        lock_off = first * s->chunk_size;
        lock_bytes = shadow_chunk_bytes(s, first, end);
    }
    ret = 0;
    if (kind == SHADOW_DISCARD) {
        if (head) {
            io.offset = MIN(full_first * s->chunk_size, offset + bytes);
        }
        if (tail) {
            io.bytes = MAX(MIN(offset + bytes, full_end * s->chunk_size) -
                           io.offset, 0);
        } else {
            io.bytes = offset + bytes - io.offset;
        }
        if (io.bytes == 0) {
            goto unlock;
        }
        shadow_chunk_range(s, io.offset, io.bytes, &first, &end);
        if (shadow_state_active_lacks(s, first, end)) {
            /*
             * A child may ignore a discard or leave anything there, and
             * the active child's copy of a chunk it lacks is older than
             * what the guest wrote last: after the discard it would
             * serve that.  A discard is advisory: skip it while the
             * range is not hydrated
             */
            trace_shadow_discard_skipped(s, io.offset, io.bytes);
            goto unlock;
        }
    } else {
        if (head) {
            ret = shadow_copy_up_locked(s, first, first + 1);
        }
        if (tail && ret == 0) {
            ret = shadow_copy_up_locked(s, end - 1, end);
        }
    }
    if (ret == 0) {
        /* D2: intent first */
        ret = shadow_state_prepare_write(s, first, end);
    }
    if (ret < 0) {
        goto unlock;
    }
    if (s->active != active) {
        /*
         * A switch came while this request waited (a client that the
         * switch's drained section does not hold back): what it checked
         * and copied up, and the header D2 wrote, were for the old active
         * child.  Start over.  From here on it does not wait until its
         * children's I/O, where a switch is handled at completion.
         */
        shadow_range_unlock(s, &req);
        io.offset = offset;
        io.bytes = bytes;
        shadow_chunk_range(s, offset, bytes, &first, &end);
        goto retry;
    }

    /* The targets: the active child, and in sync mode every healthy shadow */
    reqs = s->num_children <= SHADOW_STACK_CHILDREN ?
           stack : g_new(ShadowChildReq, s->num_children);
    n = 0;
    reqs[n++] = (ShadowChildReq) { .sc = active };
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc == active) {
            continue;
        }
        if (sc->degraded || kind == SHADOW_DISCARD ||
            s->write_mode != SHADOW_WRITE_MODE_SYNC) {
            continue;
        }
        reqs[n++] = (ShadowChildReq) { .sc = sc };
    }
    if (kind == SHADOW_WRITE && n > 1 && s->bounce_writes) {
        /*
         * The guest may change its buffer while the write is in flight;
         * every child must get the same bytes (I2), so send a copy
         */
        bounce = shadow_bounce_get(s, io.bytes);
        if (!bounce) {
            ret = -ENOMEM;
            goto unlock;
        }
        qemu_iovec_to_buf(qiov, qiov_offset, bounce, io.bytes);
        qemu_iovec_init_buf(&bounce_qiov, bounce, io.bytes);
        io.qiov = &bounce_qiov;
        io.qiov_offset = 0;
    }
    shadow_co_foreach(s, reqs, n, shadow_child_io, &io);
    left_stale = shadow_state_write_done(s, kind, io.offset, io.bytes, reqs,
                                         n);
    ret = reqs[0].ret;
    if (ret == 0 && reqs[0].sc != s->active) {
        /*
         * A switch came while the write was in flight: NBD clients and
         * write-blocking mirrors are not held back by the switch's drained
         * section.  The new active child must hold what the write wrote
         * before it completes (I3: it lacks chunks only after an instant
         * switch), so copy up, with whole chunks locked, what it did not
         * get.
         */
        trace_shadow_write_switched(s, io.offset, io.bytes,
                                    shadow_child_name(reqs[0].sc),
                                    shadow_child_name(s->active));
        shadow_range_unlock(s, &req);
        shadow_range_lock(s, &req, first * s->chunk_size,
                          shadow_chunk_bytes(s, first, end));
        ret = shadow_copy_up_locked(s, first, end);
    }
    commit = ret == 0 && (flags & BDRV_REQ_FUA) && s->meta.child &&
             !shadow_state_active_durably_holds(s, first, end);

unlock:
    shadow_range_unlock(s, &req);
    if (commit) {
        /*
         * The maps on disk do not say yet that the active child holds
         * these chunks: they must before the write counts as durable
         */
        ret = shadow_state_commit(s, false);
    }
    shadow_bounce_put(s, bounce, io.bytes);
    if (reqs != stack) {
        g_free(reqs);
    }
    shadow_account(&s->stats, true, bytes, get_clock() - start, ret);
    shadow_guest_end(s);
    if (left_stale) {
        shadow_copy_kick(s);
    }
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_pwritev_part(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       QEMUIOVector *qiov, size_t qiov_offset,
                       BdrvRequestFlags flags)
{
    return shadow_co_write(bs, SHADOW_WRITE, offset, bytes, qiov, qiov_offset,
                           flags);
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        BdrvRequestFlags flags)
{
    return shadow_co_write(bs, SHADOW_WRITE_ZEROES, offset, bytes, NULL, 0,
                           flags);
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return shadow_co_write(bs, SHADOW_DISCARD, offset, bytes, NULL, 0, 0);
}

static int coroutine_fn GRAPH_RDLOCK shadow_co_flush(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;
    int ret;

    /* With metadata, the flush commits the maps (many flushes, one commit) */
    ret = shadow_state_commit(s, false);
    if (ret == 0) {
        shadow_counters_add(&s->stats, SHADOW_STAT_FLUSH_OPS, 1);
    }
    return ret;
}

/*
 * Block status: what the guest reads comes from the active child, except
 * where it lacks chunks after an instant switch; there it comes from the
 * child that holds them, so tools that copy by block status (backups,
 * mirrors, qemu-img convert) never take a chunk still to hydrate for a
 * hole
 */
static int coroutine_fn GRAPH_RDLOCK
shadow_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                       int64_t bytes, int64_t *pnum, int64_t *map,
                       BlockDriverState **file)
{
    BDRVShadowState *s = bs->opaque;
    ShadowChild *sc = s->active;
    int64_t c = offset / s->chunk_size, end, run;

    *map = offset;
    if (qatomic_read(&s->active_complete)) {
        *pnum = bytes;
        *file = sc->child->bs;
        return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
    }
    if (s->maps_unknown) {
        return -EIO;
    }
    end = DIV_ROUND_UP(MIN(offset + bytes, s->length), s->chunk_size);
    qemu_spin_lock(&s->lock);
    if (hbitmap_get(s->active->map.stale, c)) {
        sc = shadow_state_holder(s, c, s->active);
    }
    run = shadow_state_run(s, c, end, sc);
    qemu_spin_unlock(&s->lock);

    *pnum = MIN(offset + bytes, (c + run) * s->chunk_size) - offset;
    if (!sc) {
        /* Nobody holds it (I1 says never): let the reader find out */
        return BDRV_BLOCK_DATA;
    }
    *file = sc->child->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                   PreallocMode prealloc, BdrvRequestFlags flags,
                   Error **errp)
{
    BDRVShadowState *s = bs->opaque;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "Cannot resize shadow node '%s' with preallocation "
                   "mode '%s'", bdrv_get_node_name(bs),
                   PreallocMode_str(prealloc));
        return -ENOTSUP;
    }
    if (offset < s->length) {
        error_setg(errp, "Cannot shrink shadow node '%s' from %" PRId64
                   " to %" PRId64 " bytes: shadow nodes only grow",
                   bdrv_get_node_name(bs), s->length, offset);
        return -ENOTSUP;
    }
    if (!s->writable) {
        error_setg(errp, "Cannot resize shadow node '%s': it is read-only",
                   bdrv_get_node_name(bs));
        return -EACCES;
    }
    return shadow_state_grow(s, offset, errp);
}

/*
 * Permissions
 */

static void GRAPH_RDLOCK
shadow_child_perm(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role,
                  BlockReopenQueue *reopen_queue, uint64_t perm,
                  uint64_t shared, uint64_t *nperm, uint64_t *nshared)
{
    /* The tiers are the data children; the metadata child is not one */
    bool tier = role & BDRV_CHILD_DATA;

    /*
     * The node writes every child on its own account (mirrored writes,
     * background copies, growing), the way a format driver writes its
     * metadata: take the permissions of a format node's storage child.
     * Nobody else may write or resize a tier while the node is active;
     * an inactive node shares everything, as migration needs.
     */
    bdrv_default_perms(bs, c, role | BDRV_CHILD_METADATA, reopen_queue, perm,
                       shared, nperm, nshared);
    if (tier && !(perm & BLK_PERM_RESIZE)) {
        /*
         * Tiers grow only when the node does (block_resize, a format node
         * above writing past the end), and those users hold the resize
         * permission on the node while they may: only then take it
         */
        *nperm &= ~BLK_PERM_RESIZE;
    }
}

/*
 * Drain: the background copy counts as in flight.  It stops at the next
 * chunk boundary when a drained section begins and restarts at its end.
 */

static void shadow_drain_begin(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;

    s->drain_start_ns = get_clock();
    shadow_copy_wake(s);
}

typedef struct ShadowSwitchedEvent {
    char *node_name;
    char *child;
    char *old_child;
    uint64_t pause_ns;
} ShadowSwitchedEvent;

static void shadow_switched_event_bh(void *opaque)
{
    ShadowSwitchedEvent *ev = opaque;

    qapi_event_send_shadow_switched(ev->node_name, ev->child, ev->old_child,
                                    ev->pause_ns);
    g_free(ev->node_name);
    g_free(ev->child);
    g_free(ev->old_child);
    g_free(ev);
}

static void shadow_drain_end(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;

    if (s->switched_from) {
        ShadowSwitchedEvent *ev = g_new(ShadowSwitchedEvent, 1);

        *ev = (ShadowSwitchedEvent) {
            .node_name = g_strdup(bdrv_get_node_name(bs)),
            .child = g_strdup(shadow_child_name(s->active)),
            .old_child = g_steal_pointer(&s->switched_from),
            .pause_ns = get_clock() - s->drain_start_ns,
        };
        /*
         * Emitting formats and queues JSON for every monitor, which takes
         * longer than the switch itself: do it once the guest runs again
         */
        aio_bh_schedule_oneshot(qemu_get_aio_context(),
                                shadow_switched_event_bh, ev);
    }
    shadow_copy_kick(s);
}

/*
 * Reopen: switching the active child, changing modes, read-only
 */

static void shadow_reopen_list_error(BlockDriverState *bs, Error **errp)
{
    BDRVShadowState *s = bs->opaque;

    error_setg(errp, "blockdev-reopen of shadow node '%s' must list each of "
               "its %d children by node name; add or remove children with "
               "x-blockdev-change", bdrv_get_node_name(bs), s->num_children);
}

/*
 * A reopen that omits the children or the metadata child keeps them, as
 * QEMU's own drivers keep a "file" that a reopen omits.  QEMU's internal
 * reopens (block-commit making its base writable,
 * bdrv_reopen_set_read_only()) pass the options recorded at open, from
 * which bdrv_open() removed every child; and QEMU takes a child given as
 * a definition ("children.N.*", "metadata.*") as new options for that
 * child, which leaves no reference either.  The active child is listed
 * first: it stays active unless the options name another.  A list that
 * lost only some of its entries so cannot be told from one that omits a
 * child: that is an error.
 */
static bool GRAPH_RDLOCK
shadow_reopen_keep_omitted(BlockDriverState *bs, QDict *options,
                           Error **errp)
{
    BDRVShadowState *s = bs->opaque;
    const QDictEntry *e;
    int i, n = 0;

    if (s->meta.child && !qdict_haskey(options, "metadata")) {
        qdict_put_str(options, "metadata",
                      bdrv_get_node_name(s->meta.child->bs));
    }
    for (e = qdict_first(options); e; e = qdict_next(options, e)) {
        if (shadow_key_of(e->key, "children")) {
            /* (an empty list stays as "children": the parser refuses it) */
            if (!qdict_haskey(options, "children") &&
                !qdict_haskey(options, "children.0")) {
                shadow_reopen_list_error(bs, errp);
                return false;
            }
            return true;
        }
    }
    qdict_put_str(options, "children.0", shadow_child_name(s->active));
    for (i = 0; i < s->num_children; i++) {
        g_autofree char *key = NULL;

        if (s->children[i] == s->active) {
            continue;
        }
        key = g_strdup_printf("children.%d", ++n);
        qdict_put_str(options, key, shadow_child_name(s->children[i]));
    }
    return true;
}

static int shadow_reopen_prepare(BDRVReopenState *state,
                                 BlockReopenQueue *queue, Error **errp)
{
    BlockDriverState *bs = state->bs;
    BDRVShadowState *s = bs->opaque;
    g_autofree ShadowReopenState *rs = g_new0(ShadowReopenState, 1);
    BlockdevRefList *ref;
    int n = 0;

    GRAPH_RDLOCK_GUARD_MAINLOOP();

    if (!shadow_reopen_keep_omitted(bs, state->options, errp)) {
        return -EINVAL;
    }
    if (!shadow_parse_options(state->options, false, &rs->opts, errp)) {
        return -EINVAL;
    }

    /*
     * QEMU's reopen would only flip BDRV_O_INACTIVE, without inactivating
     * or invalidating anything: the copy would write to children that no
     * longer let it, or maps last read before an inactive period be used
     */
    if ((state->flags ^ bs->open_flags) & BDRV_O_INACTIVE) {
        error_setg(errp, "blockdev-reopen cannot make shadow node '%s' %s; "
                   "use blockdev-set-active%s", bdrv_get_node_name(bs),
                   state->flags & BDRV_O_INACTIVE ? "inactive" : "active",
                   state->flags & BDRV_O_INACTIVE ? "" :
                   ", or give \"active\": false to reopen it while it is "
                   "inactive");
        goto fail;
    }

    /* The set of children changes with x-blockdev-change only */
    for (ref = rs->opts.qapi->children; ref; ref = ref->next) {
        const char *name;

        if (ref->value->type != QTYPE_QSTRING) {
            error_setg(errp, "Cannot define new children of shadow node "
                       "'%s' in blockdev-reopen; refer to them by node name",
                       bdrv_get_node_name(bs));
            goto fail;
        }
        name = ref->value->u.reference;
        if (!shadow_find_child(s, name)) {
            ShadowChild *over = shadow_find_filtered_child(s, name);

            if (over) {
                error_setg(errp, "Node '%s' is not a child of shadow node "
                           "'%s': its child '%s' is a filter over it (a "
                           "block job, such as a backup, inserts one); name "
                           "that node, or reopen after the job",
                           name, bdrv_get_node_name(bs),
                           shadow_child_name(over));
            } else {
                error_setg(errp, "Node '%s' is not a child of shadow node "
                           "'%s'; add it with x-blockdev-change", name,
                           bdrv_get_node_name(bs));
            }
            goto fail;
        }
        n++;
    }
    if (n != s->num_children) {
        shadow_reopen_list_error(bs, errp);
        goto fail;
    }

    if (rs->opts.chunk_size != s->chunk_size) {
        error_setg(errp, "Cannot change the chunk-size of shadow node '%s'",
                   bdrv_get_node_name(bs));
        goto fail;
    }

    if (!!rs->opts.qapi->metadata != !!s->meta.child ||
        (s->meta.child &&
         (rs->opts.qapi->metadata->type != QTYPE_QSTRING ||
          strcmp(rs->opts.qapi->metadata->u.reference,
                 bdrv_get_node_name(s->meta.child->bs))))) {
        error_setg(errp, "Cannot change the metadata child of shadow node "
                   "'%s'%s", bdrv_get_node_name(bs),
                   s->meta.child ? "; refer to it by its node name" : "");
        goto fail;
    }

    rs->new_active = shadow_find_child(s, rs->opts.qapi->active_child ?:
                                rs->opts.qapi->children->value->u.reference);
    if (!rs->new_active) {
        error_setg(errp, "shadow: active-child '%s' is not a child of node "
                   "'%s'", rs->opts.qapi->active_child,
                   bdrv_get_node_name(bs));
        goto fail;
    }
    rs->writable = (state->flags & BDRV_O_RDWR) &&
                   !(bs->open_flags & BDRV_O_INACTIVE);
    if (rs->new_active != s->active && s->maps_unknown) {
        error_setg(errp, "Cannot switch shadow node '%s': it is inactive and "
                   "could not read its maps", bdrv_get_node_name(bs));
        goto fail;
    }
    if (!s->meta.child) {
        shadow_state_check_storage_unrecorded(s);
    }
    if ((rs->new_active != s->active || (rs->writable && !s->writable)) &&
        !shadow_state_may_switch(s, rs->new_active, rs->writable, errp)) {
        goto fail;
    }
    if (rs->new_active != s->active && s->writable && !s->meta.child &&
        shadow_state_unflushed(s, rs->new_active)) {
        /*
         * What the copy wrote to the new active child may not be on its
         * disk yet, and without metadata nothing would say so after a
         * crash: flush it before it serves alone, unless a flush since
         * covered all it got (the node is drained: nothing changes it
         * until the switch).  With metadata the maps count only what a
         * flush made durable (D1), and hydration brings back the rest.
         */
        int ret = shadow_state_flush_child_sync(s, rs->new_active);

        if (ret < 0) {
            error_setg_errno(errp, -ret, "shadow: cannot switch node '%s' "
                             "to '%s': flushing it failed",
                             bdrv_get_node_name(bs),
                             shadow_child_name(rs->new_active));
            goto fail;
        }
    }
    if (s->writable && !rs->writable &&
        shadow_state_stop(s, true, errp) < 0) {
        /* Read-only from now on: the metadata is closed cleanly first */
        goto fail;
    }

    /* Everything is handled here: keep the generic code from checking */
    shadow_del_options(state->options, true);

    state->opaque = g_steal_pointer(&rs);
    return 0;

fail:
    shadow_options_free(&rs->opts);
    return -EINVAL;
}

static void shadow_reopen_commit(BDRVReopenState *state)
{
    BDRVShadowState *s = state->bs->opaque;
    ShadowReopenState *rs = state->opaque;

    if (rs->new_active != s->active) {
        /*
         * Every map says which chunks of its child hold what the guest
         * sees, whichever child is active: the old active child holds
         * everything (or what it had hydrated), and the new one copies up
         * the chunks it lacks.  The header records the new active child
         * before the first write after the switch.
         */
        g_free(s->switched_from);
        s->switched_from = g_strdup(shadow_child_name(s->active));
        trace_shadow_switch(s, s->switched_from,
                            shadow_child_name(rs->new_active));
        shadow_state_switch(s, rs->new_active);
    }
    s->meta.intent_chunks = rs->opts.intent_granularity / s->chunk_size;
    s->write_mode = rs->opts.write_mode;
    s->prewarm = rs->opts.prewarm;
    s->read_from = rs->opts.read_from;
    s->copy_on_read = rs->opts.copy_on_read;
    s->copy_compare = rs->opts.copy_compare;
    s->bounce_writes = rs->opts.bounce_writes;
    s->writable = rs->writable;
    s->meta.writable = rs->writable;
    if (s->writable) {
        shadow_state_start_timer(s, bdrv_get_aio_context(state->bs));
    } else {
        shadow_state_stop_timer(s);
    }
    shadow_copy_set_speed(s, rs->opts.prewarm_speed);
    shadow_state_retry_degraded(s);

    shadow_options_free(&rs->opts);
    g_free(rs);
    state->opaque = NULL;
}

static void shadow_reopen_abort(BDRVReopenState *state)
{
    BDRVShadowState *s = state->bs->opaque;
    ShadowReopenState *rs = state->opaque;

    /*
     * A clean stop for read-only stays as it is: the next write marks the
     * metadata in use again
     */
    shadow_state_start_timer(s, bdrv_get_aio_context(state->bs));
    if (rs) {
        shadow_options_free(&rs->opts);
        g_free(rs);
        state->opaque = NULL;
    }
}

/*
 * Migration: inactivate and activate
 */

/*
 * QEMU calls this once the node's parents agreed to let it go inactive
 * (patches/0009): if it succeeds, nothing fails for the node after it,
 * so the node stays stopped only while it is inactive, and
 * bdrv_co_invalidate_cache() starts it again.  If it fails, the node
 * stays active and writable (shadow_state_stop()).
 */
static int GRAPH_RDLOCK shadow_inactivate(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;
    Error *local_err = NULL;
    int ret;

    /* The copy stops, and stays stopped once not writable */
    bdrv_drained_begin(bs);
    ret = shadow_state_stop(s, false, &local_err);
    if (ret == 0) {
        s->writable = false;
        s->meta.writable = false;
        shadow_state_stop_timer(s);
    }
    bdrv_drained_end(bs);
    if (ret < 0) {
        error_report_err(local_err);
    }
    return ret;
}

static void coroutine_fn GRAPH_RDLOCK
shadow_co_invalidate_cache(BlockDriverState *bs, Error **errp)
{
    BDRVShadowState *s = bs->opaque;

    int64_t len;
    int i;

    /* What a verify job compared before may not hold after this */
    qatomic_inc(&s->activations);
    /* A switch made while inactive, without metadata, is checked here */
    if (bdrv_is_writable(bs) &&
        !shadow_state_may_switch(s, s->active, true, errp)) {
        return;
    }
    /*
     * An inactive node shares resizing its children: one may have grown
     * or shrunk.  With metadata the disk has the length it records (its
     * load checks the children); without, as at open, the active child's.
     * The active child must hold the disk; a shorter shadow is degraded.
     */
    len = bdrv_co_getlength(s->active->child->bs);
    if (!s->meta.child && len >= 0 &&
        shadow_state_activate_unrecorded(s, len, errp) < 0) {
        return;
    }
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        len = bdrv_co_getlength(sc->child->bs);
        if (sc == s->active || len < 0) {
            if (shadow_state_check_child_length(s, sc->child->bs, len,
                                                errp) < 0) {
                return;
            }
        } else if (len < s->length && !sc->degraded) {
            shadow_state_short_child(s, sc, len);
        }
    }
    s->writable = bdrv_is_writable(bs);
    s->meta.writable = s->writable;
    /*
     * Another process wrote the maps while this one was inactive.  If
     * they cannot be read, the node stays inactive, with no maps to read
     * by (shadow_state_load())
     */
    if (s->meta.child && shadow_state_load(s, errp) < 0) {
        s->writable = false;
        s->meta.writable = false;
        return;
    }
    bs->total_sectors = DIV_ROUND_UP(s->length, BDRV_SECTOR_SIZE);
    shadow_state_start_timer(s, bdrv_get_aio_context(bs));
    shadow_copy_kick(s);
}

/*
 * Adding and removing shadows at runtime (x-blockdev-change)
 */

/*
 * An inactive node belongs to the other end of a migration: its maps
 * cannot record a new or removed child, and the activation that reloads
 * them would then refuse the node.
 */
static bool shadow_may_change_children(BlockDriverState *bs, Error **errp)
{
    if (bs->open_flags & BDRV_O_INACTIVE) {
        error_setg(errp, "Cannot change the children of shadow node '%s' "
                   "while it is inactive; activate it first",
                   bdrv_get_node_name(bs));
        return false;
    }
    return true;
}

static void GRAPH_WRLOCK
shadow_add_child(BlockDriverState *bs, BlockDriverState *child_bs,
                 Error **errp)
{
    BDRVShadowState *s = bs->opaque;
    g_autofree char *name = NULL;
    BdrvChild *child;
    ShadowChild *sc;
    Error *local_err = NULL;
    int ret, i;

    if (!shadow_may_change_children(bs, errp)) {
        return;
    }
    if (s->next_child_index == UINT_MAX) {
        error_setg(errp, "Too many children");
        return;
    }
    if (child_bs == bs || (s->meta.child && child_bs == s->meta.child->bs)) {
        error_setg(errp, "Node '%s' cannot be a child of shadow node '%s'",
                   bdrv_get_node_name(child_bs), bdrv_get_node_name(bs));
        return;
    }
    for (i = 0; i < s->num_children; i++) {
        if (s->children[i]->child->bs == child_bs) {
            error_setg(errp, "Node '%s' is already a child of shadow node "
                       "'%s'", bdrv_get_node_name(child_bs),
                       bdrv_get_node_name(bs));
            return;
        }
    }
    /*
     * Under the graph write lock bdrv_getlength() would wait for a read
     * lock: use the length the node already knows
     */
    if (shadow_state_check_child_length(s, child_bs,
                                        child_bs->total_sectors *
                                        BDRV_SECTOR_SIZE, errp) < 0) {
        return;
    }

    name = g_strdup_printf("children.%u", s->next_child_index);
    bdrv_ref(child_bs);
    child = bdrv_attach_child(bs, child_bs, name, &child_of_bds,
                              BDRV_CHILD_DATA, &local_err);
    if (!child) {
        error_propagate_prepend(errp, local_err,
                                "Cannot add node '%s' to shadow node '%s': ",
                                bdrv_get_node_name(child_bs),
                                bdrv_get_node_name(bs));
        return;
    }
    s->next_child_index++;

    sc = shadow_new_child(s, child, true);
    ret = shadow_state_add_child(s, sc, errp);
    if (ret < 0) {
        bdrv_unref_child(bs, child);
        shadow_free_child(sc);
        return;
    }
    qemu_spin_lock(&s->lock);
    s->children = g_renew(ShadowChild *, s->children, s->num_children + 1);
    s->children[s->num_children++] = sc;
    qemu_spin_unlock(&s->lock);
    shadow_forget_child_options(bs);
    shadow_state_commit_soon(s);
    shadow_copy_kick(s);
}

static void GRAPH_WRLOCK
shadow_del_child(BlockDriverState *bs, BdrvChild *child, Error **errp)
{
    BDRVShadowState *s = bs->opaque;
    ShadowChild *sc = NULL;
    int i;

    if (!shadow_may_change_children(bs, errp)) {
        return;
    }
    if (s->meta.child && child == s->meta.child) {
        error_setg(errp, "Cannot remove the metadata child '%s' of shadow "
                   "node '%s'", bdrv_get_node_name(child->bs),
                   bdrv_get_node_name(bs));
        return;
    }
    for (i = 0; i < s->num_children; i++) {
        if (s->children[i]->child == child) {
            sc = s->children[i];
            break;
        }
    }
    if (!sc) {
        error_setg(errp, "Node '%s' is not a tier of shadow node '%s'",
                   bdrv_get_node_name(child->bs), bdrv_get_node_name(bs));
        return;
    }
    if (!shadow_state_may_remove(s, sc, errp)) {
        return;
    }

    qemu_spin_lock(&s->lock);
    shadow_state_del_child(s, sc);
    memmove(&s->children[i], &s->children[i + 1],
            (s->num_children - i - 1) * sizeof(ShadowChild *));
    s->num_children--;
    qemu_spin_unlock(&s->lock);
    shadow_forget_child_options(bs);
    shadow_state_commit_soon(s);

    bdrv_unref_child(bs, child);
    shadow_free_child(sc);

    /*
     * QEMU's reopen pairs the list of children it is given with the
     * children of those names ("children.N" is the Nth entry), and a child
     * given inline at blockdev-add whose name the shorter list lacks would
     * be reopened with no options ("Option 'driver' cannot be reset"), so
     * that the node could never switch again.  From now on such children
     * are reopened on their own, as those added by node name are.
     */
    for (i = 0; i < s->num_children; i++) {
        BlockDriverState *child_bs = s->children[i]->child->bs;

        if (child_bs->inherits_from == bs) {
            child_bs->inherits_from = NULL;
        }
    }
}

/*
 * Introspection
 */

static void shadow_fill_io_stats(ShadowIOStats *io, ShadowCounters *c)
{
    io->rd_operations = shadow_counters_get(c, SHADOW_STAT_RD_OPS);
    io->rd_bytes = shadow_counters_get(c, SHADOW_STAT_RD_BYTES);
    io->rd_total_time_ns = shadow_counters_get(c, SHADOW_STAT_RD_NS);
    io->wr_operations = shadow_counters_get(c, SHADOW_STAT_WR_OPS);
    io->wr_bytes = shadow_counters_get(c, SHADOW_STAT_WR_BYTES);
    io->wr_total_time_ns = shadow_counters_get(c, SHADOW_STAT_WR_NS);
    io->flush_operations = shadow_counters_get(c, SHADOW_STAT_FLUSH_OPS);
}

static BlockStatsSpecific *shadow_get_specific_stats(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;
    BlockStatsSpecific *stats = g_new0(BlockStatsSpecific, 1);
    BlockStatsSpecificShadow *sh = &stats->u.shadow;
    ShadowChildStatsList **tail = &sh->children;
    int i;

    stats->driver = BLOCKDEV_DRIVER_SHADOW;
    shadow_fill_io_stats(qapi_BlockStatsSpecificShadow_base(sh), &s->stats);
    sh->active = g_strdup(shadow_child_name(s->active));
    if (s->meta.child) {
        /* a reopen must name it: management reads it here */
        sh->metadata = g_strdup(bdrv_get_node_name(s->meta.child->bs));
    }

    qemu_spin_lock(&s->lock);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        ShadowChildStats *cs = g_new0(ShadowChildStats, 1);

        shadow_fill_io_stats(qapi_ShadowChildStats_base(cs), &sc->stats);
        cs->node_name = g_strdup(shadow_child_name(sc));
        cs->state = shadow_state_child_state(s, sc);
        cs->valid_bytes = shadow_valid_bytes(s, sc);
        cs->failed_operations = shadow_counters_get(&sc->stats,
                                                    SHADOW_STAT_FAILED_OPS);
        cs->copied_bytes = shadow_counters_get(&sc->stats,
                                               SHADOW_STAT_COPIED_BYTES);
        cs->compared_bytes = shadow_counters_get(&sc->stats,
                                                 SHADOW_STAT_COMPARED_BYTES);
        QAPI_LIST_APPEND(tail, cs);
    }
    qemu_spin_unlock(&s->lock);

    return stats;
}

static void GRAPH_RDLOCK
shadow_gather_child_options(BlockDriverState *bs, QDict *target,
                            bool backing_overridden)
{
    BDRVShadowState *s = bs->opaque;
    QList *children_list;
    int i;

    /* As quorum does: the children are listed under "children" */
    qdict_del(target, "children");
    children_list = qlist_new();
    qdict_put(target, "children", children_list);

    for (i = 0; i < s->num_children; i++) {
        qlist_append(children_list,
                     qobject_ref(s->children[i]->child->bs->full_open_options));
    }
    if (s->meta.child) {
        qdict_put(target, "metadata",
                  qobject_ref(s->meta.child->bs->full_open_options));
    }
}

static void shadow_detach_aio_context(BlockDriverState *bs)
{
    shadow_state_stop_timer(bs->opaque);
}

static void shadow_attach_aio_context(BlockDriverState *bs,
                                      AioContext *new_context)
{
    shadow_state_start_timer(bs->opaque, new_context);
}

static char *shadow_dirname(BlockDriverState *bs, Error **errp)
{
    /* In general, there are multiple BDSs with different dirnames below */
    error_setg(errp, "Cannot generate a base directory for shadow nodes");
    return NULL;
}

static bool GRAPH_RDLOCK
shadow_recurse_can_replace(BlockDriverState *bs, BlockDriverState *to_replace)
{
    /* Replacing one child would leave the others out of step */
    return false;
}

static const char *const shadow_strong_runtime_opts[] = {
    NULL
};

/*
 * Options that blockdev-reopen may omit to reset them to their default.
 * The children listed by the last reopen are among them: a reopen lists
 * the children as they are now, and shadow_reopen_prepare() checks that
 * list itself, with a message that says what is wrong with it.
 */
static const char *const shadow_mutable_opts[] = {
    "active-child", "write-mode", "prewarm", "prewarm-speed", "read-from",
    "copy-on-read", "intent-granularity", "copy-compare", "x-bounce-writes",
    "children.0", "children.1", "children.2", "children.3", "children.4",
    "children.5", "children.6", "children.7", "children.8", "children.9",
    "children.10", "children.11", "children.12", "children.13", "children.14",
    "children.15", "children.16", "children.17", "children.18", "children.19",
    "children.20", "children.21", "children.22", "children.23", "children.24",
    "children.25", "children.26", "children.27", "children.28", "children.29",
    "children.30", "children.31", "children.32", "children.33", "children.34",
    "children.35", "children.36", "children.37", "children.38", "children.39",
    "children.40", "children.41", "children.42", "children.43", "children.44",
    "children.45", "children.46", "children.47", "children.48", "children.49",
    "children.50", "children.51", "children.52", "children.53", "children.54",
    "children.55", "children.56", "children.57", "children.58", "children.59",
    "children.60", "children.61", "children.62", "children.63",
    NULL
};

static BlockDriver bdrv_shadow = {
    .format_name                        = "shadow",
    .instance_size                      = sizeof(BDRVShadowState),

    .bdrv_open                          = shadow_open,
    .bdrv_close                         = shadow_close,
    .bdrv_reopen_prepare                = shadow_reopen_prepare,
    .bdrv_reopen_commit                 = shadow_reopen_commit,
    .bdrv_reopen_abort                  = shadow_reopen_abort,
    .bdrv_gather_child_options          = shadow_gather_child_options,
    .bdrv_dirname                       = shadow_dirname,

    .bdrv_child_perm                    = shadow_child_perm,
    .bdrv_drain_begin                   = shadow_drain_begin,
    .bdrv_drain_end                     = shadow_drain_end,
    .bdrv_detach_aio_context            = shadow_detach_aio_context,
    .bdrv_attach_aio_context            = shadow_attach_aio_context,
    .bdrv_inactivate                    = shadow_inactivate,
    .bdrv_co_invalidate_cache           = shadow_co_invalidate_cache,

    .bdrv_co_getlength                  = shadow_co_getlength,
    .bdrv_co_preadv_part                = shadow_co_preadv_part,
    .bdrv_co_pwritev_part               = shadow_co_pwritev_part,
    .bdrv_co_pwrite_zeroes              = shadow_co_pwrite_zeroes,
    .bdrv_co_pdiscard                   = shadow_co_pdiscard,
    .bdrv_co_flush                      = shadow_co_flush,
    .bdrv_co_block_status               = shadow_co_block_status,
    .bdrv_co_truncate                   = shadow_co_truncate,

    .bdrv_add_child                     = shadow_add_child,
    .bdrv_del_child                     = shadow_del_child,

    .bdrv_get_specific_stats            = shadow_get_specific_stats,
    .bdrv_recurse_can_replace           = shadow_recurse_can_replace,

    .strong_runtime_opts                = shadow_strong_runtime_opts,
    .mutable_opts                       = shadow_mutable_opts,
};

bool shadow_is_node(BlockDriverState *bs)
{
    return bs->drv == &bdrv_shadow;
}

static void bdrv_shadow_init(void)
{
    bdrv_register(&bdrv_shadow);
}

block_init(bdrv_shadow_init);
