/*
 * Shadow block driver
 *
 * A shadow node has one child per storage tier.  The active child serves
 * guest I/O; the other children, the shadows, are kept identical to it by
 * mirrored writes and by a background copy.  Because a synced shadow
 * already holds the data, moving the disk to another tier is a switch of
 * the active child through blockdev-reopen, with no copy at switch time.
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
#include "qemu/memalign.h"
#include "qemu/module.h"
#include "qemu/option.h"
#include "qemu/timer.h"
#include "shadow.h"

/* Driver-specific option names, as in BlockdevOptionsShadow */
static const char *const shadow_option_names[] = {
    "children", "active-child", "chunk-size", "write-mode", "prewarm",
    "prewarm-speed", "read-from", "copy-on-read", "metadata", NULL
};

/* Parsed options of an open or a reopen */
typedef struct ShadowOptions {
    BlockdevOptionsShadow *qapi;
    int64_t chunk_size;
    ShadowWriteMode write_mode;
    ShadowPrewarm prewarm;
    uint64_t prewarm_speed;
    ShadowReadFrom read_from;
    bool copy_on_read;
} ShadowOptions;

typedef struct ShadowReopenState {
    ShadowOptions opts;
    ShadowChild *new_active;
} ShadowReopenState;

void shadow_account(ShadowCounters *c, bool write, int64_t bytes,
                    int64_t ns, int ret)
{
    if (ret < 0) {
        stat64_add(&c->failed_ops, 1);
        return;
    }
    if (write) {
        stat64_add(&c->wr_ops, 1);
        stat64_add(&c->wr_bytes, bytes);
        stat64_add(&c->wr_ns, ns);
    } else {
        stat64_add(&c->rd_ops, 1);
        stat64_add(&c->rd_bytes, bytes);
        stat64_add(&c->rd_ns, ns);
    }
}

/*
 * Wait until no tracked write or copy overlaps [@offset, @offset + @bytes),
 * then track @req over that range.  Called with s->lock held; the lock is
 * dropped while waiting.
 */
void coroutine_fn shadow_track_begin(BDRVShadowState *s, BlockReq *req,
                                     int64_t offset, int64_t bytes)
{
    BlockReq *conflict;

    while ((conflict = reqlist_find_conflict(&s->reqs, offset, bytes))) {
        qemu_co_queue_wait(&conflict->wait_queue, &s->lock);
    }
    reqlist_init_req(&s->reqs, req, offset, bytes);
}

static const char *shadow_child_name(ShadowChild *sc)
{
    return bdrv_get_node_name(sc->child->bs);
}

static ShadowChildState shadow_child_state(BDRVShadowState *s,
                                           ShadowChild *sc)
{
    if (sc == s->active) {
        return SHADOW_CHILD_STATE_ACTIVE;
    }
    if (sc->degraded) {
        return SHADOW_CHILD_STATE_DEGRADED;
    }
    if (shadow_map_stale_count(&sc->map) == 0) {
        return SHADOW_CHILD_STATE_SYNCED;
    }
    /* A copy paused by a drained section is still under way */
    if (s->copy_workers || shadow_copy_enabled(s)) {
        return SHADOW_CHILD_STATE_SYNCING;
    }
    return SHADOW_CHILD_STATE_STALE;
}

/*
 * A shadow failed: stop sending it I/O and tell the management layer.
 * Guest I/O goes on; a reopen or re-adding the child brings it back.
 */
void shadow_child_degrade(BDRVShadowState *s, ShadowChild *sc,
                          const char *operation, int ret)
{
    bool was_degraded;

    assert(sc != s->active);
    qemu_spin_lock(&s->lock);
    was_degraded = sc->degraded;
    sc->degraded = true;
    qemu_spin_unlock(&s->lock);

    if (!was_degraded) {
        warn_report("shadow: node '%s': %s on child '%s' failed: %s; "
                    "the child is degraded",
                    bdrv_get_node_name(s->bs), operation,
                    shadow_child_name(sc), strerror(-ret));
        qapi_event_send_shadow_child_degraded(bdrv_get_node_name(s->bs),
                                              shadow_child_name(sc),
                                              operation, strerror(-ret));
    }
}

/*
 * Options
 */

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
    int i;

    for (e = qdict_first(options); e; e = qdict_next(options, e)) {
        for (i = 0; shadow_option_names[i]; i++) {
            const char *rest;

            if (strstart(e->key, shadow_option_names[i], &rest) &&
                (*rest == '\0' || *rest == '.')) {
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

    if (consume) {
        shadow_del_options(options, false);
    }
    return true;

fail:
    shadow_options_free(opts);
    return false;
}

static ShadowChild *shadow_find_child(BDRVShadowState *s, const char *name)
{
    int i;

    for (i = 0; i < s->num_children; i++) {
        if (!strcmp(shadow_child_name(s->children[i]), name)) {
            return s->children[i];
        }
    }
    return NULL;
}

/*
 * Open and close
 */

static ShadowChild *shadow_new_child(BDRVShadowState *s, BdrvChild *child,
                                     bool stale)
{
    ShadowChild *sc = g_new0(ShadowChild, 1);

    sc->child = child;
    sc->slot = -1;
    shadow_map_init(&sc->map, s->nb_chunks, stale);
    return sc;
}

static void shadow_free_child(ShadowChild *sc)
{
    shadow_map_destroy(&sc->map);
    g_free(sc);
}

static int shadow_check_child_length(BDRVShadowState *s, BlockDriverState *bs,
                                     int64_t len, Error **errp)
{
    if (len < 0) {
        error_setg_errno(errp, -len, "shadow: cannot get the length of '%s'",
                         bdrv_get_node_name(bs));
        return len;
    }
    if (len < s->length) {
        error_setg(errp, "shadow: child '%s' is smaller than the active "
                   "child (%" PRId64 " < %" PRId64 " bytes)",
                   bdrv_get_node_name(bs), len, s->length);
        return -EINVAL;
    }
    return 0;
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
    qemu_spin_init(&s->lock);
    QLIST_INIT(&s->reqs);

    qdict_flatten(options);
    if (!shadow_parse_options(options, true, &opts, errp)) {
        return -EINVAL;
    }

    for (ref = opts.qapi->children; ref; ref = ref->next) {
        BlockdevRefList *prev;

        for (prev = opts.qapi->children; prev != ref; prev = prev->next) {
            if (ref->value->type == QTYPE_QSTRING &&
                prev->value->type == QTYPE_QSTRING &&
                !strcmp(ref->value->u.reference, prev->value->u.reference)) {
                error_setg(errp, "shadow: node '%s' is given twice",
                           ref->value->u.reference);
                shadow_options_free(&opts);
                return -EINVAL;
            }
        }
        n++;
    }
    children = g_new0(BdrvChild *, n);
    lengths = g_new0(int64_t, n);

    for (i = 0; i < n; i++) {
        g_autofree char *key = g_strdup_printf("children.%d", i);

        children[i] = bdrv_open_child(NULL, options, key, bs, &child_of_bds,
                                      BDRV_CHILD_DATA, false, errp);
        if (!children[i]) {
            goto fail;
        }
        bdrv_graph_rdlock_main_loop();
        lengths[i] = bdrv_getlength(children[i]->bs);
        bdrv_graph_rdunlock_main_loop();
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
    ret = shadow_check_child_length(s, children[active]->bs, s->length, errp);
    for (i = 0; i < n && ret == 0; i++) {
        ret = shadow_check_child_length(s, children[i]->bs, lengths[i], errp);
    }
    bdrv_graph_rdunlock_main_loop();
    if (ret < 0) {
        goto fail;
    }

    s->chunk_size = opts.chunk_size;
    s->nb_chunks = DIV_ROUND_UP(s->length, s->chunk_size);
    s->write_mode = opts.write_mode;
    s->read_from = opts.read_from;
    s->copy_on_read = opts.copy_on_read;
    s->copying = hbitmap_alloc(s->nb_chunks, 0);
    s->copy_region = -1;
    shadow_heat_init(&s->heat, s->length, s->chunk_size);
    ratelimit_init(&s->copy_limit);
    shadow_copy_set_speed(s, opts.prewarm_speed);

    s->num_children = n;
    s->next_child_index = n;
    s->children = g_new0(ShadowChild *, n);
    for (i = 0; i < n; i++) {
        /* Without persistent maps nothing is known about a shadow */
        s->children[i] = shadow_new_child(s, children[i], i != active);
    }

    s->meta.child = bdrv_open_child(NULL, options, "metadata", bs,
                                    &child_of_bds, BDRV_CHILD_METADATA, true,
                                    errp);
    if (*errp) {
        ret = -EINVAL;
        goto fail_children;
    }
    for (i = 0; s->meta.child && i < n; i++) {
        if (s->meta.child->bs == children[i]->bs) {
            error_setg(errp, "shadow: node '%s' cannot be both a child and "
                       "the metadata of the node",
                       bdrv_get_node_name(children[i]->bs));
            ret = -EINVAL;
            goto fail_children;
        }
    }
    if (s->meta.child) {
        bdrv_graph_rdlock_main_loop();
        ret = shadow_meta_open(s, s->children[active], errp);
        bdrv_graph_rdunlock_main_loop();
        if (ret < 0) {
            goto fail_children;
        }
    }

    /*
     * Only now may the copy start: drained sections end while the
     * metadata child opens, and the maps are not loaded before
     */
    s->active = s->children[active];
    s->prewarm = opts.prewarm;

    bs->total_sectors = DIV_ROUND_UP(s->length, BDRV_SECTOR_SIZE);
    bs->supported_write_flags = BDRV_REQ_WRITE_UNCHANGED | BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_WRITE_UNCHANGED | BDRV_REQ_FUA |
                               BDRV_REQ_MAY_UNMAP;

    shadow_options_free(&opts);
    shadow_copy_kick(s);
    return 0;

fail_children:
    /* Drained sections end while the children go: keep the copy away */
    s->copy_failed = true;
    s->active = NULL;
    s->num_children = 0;
    shadow_meta_destroy(s);
    bdrv_graph_wrlock();
    if (s->meta.child) {
        bdrv_unref_child(bs, s->meta.child);
        s->meta.child = NULL;
    }
    for (i = 0; i < n; i++) {
        bdrv_unref_child(bs, s->children[i]->child);
        shadow_free_child(s->children[i]);
    }
    bdrv_graph_wrunlock();
    g_free(s->children);
    s->children = NULL;
    hbitmap_free(s->copying);
    shadow_heat_destroy(&s->heat);
    ratelimit_destroy(&s->copy_limit);
    shadow_options_free(&opts);
    qemu_spin_destroy(&s->lock);
    return ret;

fail:
    bdrv_graph_wrlock();
    for (i = 0; i < n; i++) {
        if (children[i]) {
            bdrv_unref_child(bs, children[i]);
        }
    }
    bdrv_graph_wrunlock();
    shadow_options_free(&opts);
    qemu_spin_destroy(&s->lock);
    return ret;
}

static void shadow_close(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;
    int i;

    /* The node is drained: no copy is running */
    assert(!s->copy_workers);

    bdrv_graph_rdlock_main_loop();
    shadow_meta_close(s);
    bdrv_graph_rdunlock_main_loop();
    shadow_meta_destroy(s);

    bdrv_graph_wrlock();
    if (s->meta.child) {
        bdrv_unref_child(bs, s->meta.child);
        s->meta.child = NULL;
    }
    for (i = 0; i < s->num_children; i++) {
        bdrv_unref_child(bs, s->children[i]->child);
        shadow_free_child(s->children[i]);
    }
    bdrv_graph_wrunlock();

    g_free(s->children);
    hbitmap_free(s->copying);
    shadow_heat_destroy(&s->heat);
    ratelimit_destroy(&s->copy_limit);
    g_free(s->switched_from);
    qemu_spin_destroy(&s->lock);
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

/* A guest request starts: the copy yields to the guest for a while */
static void shadow_guest_begin(BDRVShadowState *s, int64_t now)
{
    qatomic_inc(&s->guest_inflight);
    qatomic_set(&s->guest_io_ns, now);
}

static void shadow_guest_end(BDRVShadowState *s)
{
    qatomic_dec(&s->guest_inflight);
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
static ShadowChild *shadow_pick_reader(BDRVShadowState *s, int64_t offset,
                                       int64_t bytes)
{
    ShadowChild *best = s->active, *oldest = s->active;
    bool explore = ++s->nb_reads % 64 == 0;
    int64_t first, end;
    int i;

    shadow_chunk_range(s, offset, bytes, &first, &end);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc == s->active || sc->degraded ||
            hbitmap_next_dirty(sc->map.stale, first, end - first) >= 0) {
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

static int coroutine_fn GRAPH_RDLOCK
shadow_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                 QEMUIOVector *qiov, BdrvRequestFlags flags)
{
    BDRVShadowState *s = bs->opaque;
    ShadowChild *sc = s->active;
    int64_t start = get_clock();
    int64_t now, first, end;
    bool urgent, hydrate;
    int ret;

    shadow_guest_begin(s, start);
    shadow_chunk_range(s, offset, bytes, &first, &end);
    qemu_spin_lock(&s->lock);
    /*
     * Heat is counted whatever the prewarm mode, so that turning pre-warm
     * on later finds the history
     */
    urgent = shadow_heat_access(&s->heat, offset, bytes, start,
                                s->copy_on_read);
    /* After an instant switch the active child may not hold it yet */
    hydrate = shadow_range_stale(&s->active->map, first, end);
    if (s->read_from == SHADOW_READ_FROM_FASTEST && !hydrate) {
        sc = shadow_pick_reader(s, offset, bytes);
    }
    qemu_spin_unlock(&s->lock);
    if (urgent && !qatomic_read(&s->copy_workers)) {
        shadow_copy_kick(s);
    }

    if (hydrate) {
        ret = shadow_copy_up(s, first, end);
        if (ret < 0) {
            now = get_clock();
            goto out;
        }
    }
    ret = bdrv_co_preadv(sc->child, offset, bytes, qiov, flags);
    now = get_clock();
    shadow_account(&sc->stats, false, bytes, now - start, ret);
    if (ret == 0) {
        shadow_note_read_latency(sc, now - start, now);
    } else if (sc != s->active) {
        /* A failing shadow never fails the guest: read the active child */
        shadow_child_degrade(s, sc, "read", ret);
        sc = s->active;
        ret = bdrv_co_preadv(sc->child, offset, bytes, qiov, flags);
        now = get_clock();
        shadow_account(&sc->stats, false, bytes, now - start, ret);
    }
out:
    shadow_account(&s->stats, false, bytes, now - start, ret);
    shadow_guest_end(s);
    return ret;
}

typedef enum ShadowWriteKind {
    SHADOW_WRITE,
    SHADOW_WRITE_ZEROES,
    SHADOW_DISCARD,
    SHADOW_FLUSH,
} ShadowWriteKind;

typedef struct ShadowFanout ShadowFanout;

typedef struct ShadowChildReq {
    ShadowFanout *fan;
    ShadowChild *sc;
    int ret;
} ShadowChildReq;

/* One request fanned out to several children in parallel */
struct ShadowFanout {
    Coroutine *co;
    int pending;
    /* The caller waits in shadow_fanout(), not in its own request */
    bool waiting;
    ShadowWriteKind kind;
    int64_t offset;
    int64_t bytes;
    QEMUIOVector *qiov;
    BdrvRequestFlags flags;
    int64_t start;

    /* One request per target, the active child first */
    ShadowChildReq *reqs;
    int n;
    ShadowChildReq stack_reqs[SHADOW_STACK_CHILDREN];
};

static const char *const shadow_write_kind_names[] = {
    [SHADOW_WRITE] = "write",
    [SHADOW_WRITE_ZEROES] = "write-zeroes",
    [SHADOW_DISCARD] = "discard",
    [SHADOW_FLUSH] = "flush",
};

static int coroutine_fn GRAPH_RDLOCK
shadow_child_write(ShadowFanout *fan, ShadowChild *sc)
{
    int ret;

    switch (fan->kind) {
    case SHADOW_WRITE:
        ret = bdrv_co_pwritev(sc->child, fan->offset, fan->bytes, fan->qiov,
                              fan->flags);
        break;
    case SHADOW_WRITE_ZEROES:
        ret = bdrv_co_pwrite_zeroes(sc->child, fan->offset, fan->bytes,
                                    fan->flags);
        break;
    case SHADOW_DISCARD:
        ret = bdrv_co_pdiscard(sc->child, fan->offset, fan->bytes);
        break;
    case SHADOW_FLUSH:
        ret = bdrv_co_flush(sc->child->bs);
        if (ret == 0) {
            stat64_add(&sc->stats.flush_ops, 1);
        } else {
            stat64_add(&sc->stats.failed_ops, 1);
        }
        return ret;
    default:
        g_assert_not_reached();
    }
    shadow_account(&sc->stats, true, fan->bytes, get_clock() - fan->start,
                   ret);
    return ret;
}

/*
 * This function can count as GRAPH_RDLOCK because shadow_fanout() holds the
 * graph lock and keeps it until this coroutine has terminated.
 */
static void coroutine_fn GRAPH_RDLOCK shadow_child_req_entry(void *opaque)
{
    ShadowChildReq *req = opaque;
    ShadowFanout *fan = req->fan;

    req->ret = shadow_child_write(fan, req->sc);
    if (--fan->pending == 0 && fan->waiting) {
        aio_co_wake(fan->co);
    }
}

/*
 * Targets of a request: the active child first, then, for a flush or in
 * sync mode, every shadow that is not degraded.  Up to
 * SHADOW_STACK_CHILDREN requests need no allocation.
 */
static void shadow_fanout_targets(BDRVShadowState *s, ShadowFanout *fan)
{
    int i;

    fan->reqs = s->num_children <= SHADOW_STACK_CHILDREN ?
                fan->stack_reqs : g_new(ShadowChildReq, s->num_children);
    fan->n = 0;
    fan->reqs[fan->n++] = (ShadowChildReq) { .fan = fan, .sc = s->active };
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];

        if (sc == s->active || sc->degraded) {
            continue;
        }
        if (fan->kind != SHADOW_FLUSH &&
            s->write_mode != SHADOW_WRITE_MODE_SYNC) {
            continue;
        }
        fan->reqs[fan->n++] = (ShadowChildReq) { .fan = fan, .sc = sc };
    }
}

static void shadow_fanout_free(ShadowFanout *fan)
{
    if (fan->reqs != fan->stack_reqs) {
        g_free(fan->reqs);
    }
}

/*
 * Send @fan to its targets at once and wait for all of them.  A shadow
 * that failed is degraded; the result of the active child is in
 * fan->reqs[0].ret.  Free the requests with shadow_fanout_free().
 */
static void coroutine_fn GRAPH_RDLOCK
shadow_fanout(BDRVShadowState *s, ShadowFanout *fan)
{
    int i;

    shadow_fanout_targets(s, fan);
    fan->co = qemu_coroutine_self();
    fan->pending = fan->n;
    for (i = 1; i < fan->n; i++) {
        Coroutine *co = qemu_coroutine_create(shadow_child_req_entry,
                                              &fan->reqs[i]);
        qemu_coroutine_enter(co);
    }
    /*
     * The first child, the active one, runs in this coroutine.  It may
     * yield inside its request, so the others must not wake this coroutine
     * until it waits below.
     */
    fan->reqs[0].ret = shadow_child_write(fan, fan->reqs[0].sc);
    fan->pending--;
    while (fan->pending > 0) {
        fan->waiting = true;
        qemu_coroutine_yield();
        fan->waiting = false;
    }

    for (i = 1; i < fan->n; i++) {
        if (fan->reqs[i].ret < 0) {
            shadow_child_degrade(s, fan->reqs[i].sc,
                                 shadow_write_kind_names[fan->kind],
                                 fan->reqs[i].ret);
        }
    }
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_write(BlockDriverState *bs, ShadowWriteKind kind, int64_t offset,
                int64_t bytes, QEMUIOVector *qiov, BdrvRequestFlags flags)
{
    BDRVShadowState *s = bs->opaque;
    int64_t start = get_clock();
    ShadowFanout fan = {
        .kind = kind, .offset = offset, .bytes = bytes, .qiov = qiov,
        .flags = flags, .start = start,
    };
    int64_t first, end, full_first, full_end;
    bool left_stale = false, head, tail, intent_ready;
    BlockReq req;
    int i, ret;

    shadow_chunk_range(s, offset, bytes, &first, &end);
    shadow_full_chunk_range(s, offset, bytes, &full_first, &full_end);

    shadow_guest_begin(s, start);
    qemu_spin_lock(&s->lock);
    shadow_heat_access(&s->heat, offset, bytes, start, false);
    /*
     * A chunk the active child does not hold yet is copied up before a
     * write covers part of it; chunks covered entirely need no copy.
     */
    head = first < full_first &&
           shadow_range_stale(&s->active->map, first, first + 1);
    tail = full_end < end && (end - 1 > first || !head) &&
           shadow_range_stale(&s->active->map, end - 1, end);
    qemu_spin_unlock(&s->lock);
    ret = 0;
    if (head) {
        ret = shadow_copy_up(s, first, first + 1);
    }
    if (tail && ret == 0) {
        ret = shadow_copy_up(s, end - 1, end);
    }
    if (ret < 0) {
        goto out;
    }

    qemu_spin_lock(&s->lock);
    shadow_track_begin(s, &req, offset, bytes);
    intent_ready = shadow_meta_intent_ready(s, first, end);
    qemu_spin_unlock(&s->lock);
    if (!intent_ready) {
        /* Its intent bits are durable before a write goes out */
        ret = shadow_meta_write_intent(s, first, end);
        if (ret < 0) {
            qemu_spin_lock(&s->lock);
            reqlist_remove_req(&req);
            qemu_spin_unlock(&s->lock);
            goto out;
        }
    }

    shadow_fanout(s, &fan);
    ret = fan.reqs[0].ret;

    qemu_spin_lock(&s->lock);
    if (ret == 0) {
        /* Whatever it held before, the active child holds these now */
        shadow_map_mark_valid(&s->active->map, full_first,
                              full_end - full_first);
    }
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        int j;

        if (sc == s->active) {
            continue;
        }
        for (j = 1; j < fan.n && fan.reqs[j].sc != sc; j++) {
            /* find the request sent to sc, if any */
        }
        if (j < fan.n && fan.reqs[j].ret == 0 && ret == 0 &&
            kind != SHADOW_DISCARD) {
            /*
             * Both sides hold the same bytes now: chunks the request
             * covered entirely are valid whatever they held before.
             * Discarded ranges may read back differently on each child.
             */
            shadow_map_mark_valid(&sc->map, full_first, full_end - full_first);
        } else {
            shadow_map_mark_stale(&sc->map, first, end - first);
            left_stale = true;
        }
    }
    reqlist_remove_req(&req);
    qemu_spin_unlock(&s->lock);
    shadow_fanout_free(&fan);

    if (ret == 0 && (flags & BDRV_REQ_FUA) && s->meta.child) {
        /* A FUA write commits the maps, as a flush does */
        ret = shadow_meta_commit(s, false);
    }
out:
    shadow_account(&s->stats, true, bytes, get_clock() - start, ret);
    shadow_guest_end(s);
    if (left_stale) {
        shadow_copy_kick(s);
    }
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                  QEMUIOVector *qiov, BdrvRequestFlags flags)
{
    return shadow_co_write(bs, SHADOW_WRITE, offset, bytes, qiov, flags);
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        BdrvRequestFlags flags)
{
    return shadow_co_write(bs, SHADOW_WRITE_ZEROES, offset, bytes, NULL,
                           flags);
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return shadow_co_write(bs, SHADOW_DISCARD, offset, bytes, NULL, 0);
}

/* Flush every child that is not degraded; the active child's result */
int coroutine_fn GRAPH_RDLOCK shadow_flush_children(BDRVShadowState *s)
{
    ShadowFanout fan = { .kind = SHADOW_FLUSH, .start = get_clock() };
    int ret;

    shadow_fanout(s, &fan);
    ret = fan.reqs[0].ret;
    shadow_fanout_free(&fan);
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK shadow_co_flush(BlockDriverState *bs)
{
    BDRVShadowState *s = bs->opaque;
    int ret;

    /* With metadata, the flush commits the maps (many flushes, one commit) */
    ret = shadow_meta_commit(s, false);
    if (ret == 0) {
        stat64_add(&s->stats.flush_ops, 1);
    }
    return ret;
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                       int64_t bytes, int64_t *pnum, int64_t *map,
                       BlockDriverState **file)
{
    BDRVShadowState *s = bs->opaque;

    /* The guest sees the active child: report its allocation */
    *pnum = bytes;
    *map = offset;
    *file = s->active->child->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

static int coroutine_fn GRAPH_RDLOCK
shadow_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                   PreallocMode prealloc, BdrvRequestFlags flags,
                   Error **errp)
{
    error_setg(errp, "Cannot resize shadow node '%s': its children must "
               "keep the same length", bdrv_get_node_name(bs));
    return -ENOTSUP;
}

/*
 * Permissions
 */

static void GRAPH_RDLOCK
shadow_child_perm(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role,
                  BlockReopenQueue *reopen_queue, uint64_t perm,
                  uint64_t shared, uint64_t *nperm, uint64_t *nshared)
{
    /*
     * The node writes every child on its own account (mirrored writes and
     * background copies), the way a format driver writes its metadata, so
     * take the permissions of a format node's storage child: write while
     * the node is writable, and nobody else may write or resize.  The node
     * never resizes a child itself.
     */
    bdrv_default_perms(bs, c, BDRV_CHILD_DATA | BDRV_CHILD_METADATA,
                       reopen_queue, perm, shared, nperm, nshared);
    *nperm &= ~BLK_PERM_RESIZE;
    *nshared &= ~(BLK_PERM_WRITE | BLK_PERM_RESIZE);
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
 * Reopen: switching the active child, changing the write mode
 */

static int shadow_reopen_prepare(BDRVReopenState *state,
                                 BlockReopenQueue *queue, Error **errp)
{
    BlockDriverState *bs = state->bs;
    BDRVShadowState *s = bs->opaque;
    g_autofree ShadowReopenState *rs = g_new0(ShadowReopenState, 1);
    BlockdevRefList *ref;
    ShadowChildState st;
    int n = 0;

    if (!shadow_parse_options(state->options, false, &rs->opts, errp)) {
        return -EINVAL;
    }

    GRAPH_RDLOCK_GUARD_MAINLOOP();

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
            error_setg(errp, "Node '%s' is not a child of shadow node '%s'; "
                       "add it with x-blockdev-change", name,
                       bdrv_get_node_name(bs));
            goto fail;
        }
        n++;
    }
    if (n != s->num_children) {
        error_setg(errp, "blockdev-reopen of shadow node '%s' must list each "
                   "of its %d children by node name; add or remove children "
                   "with x-blockdev-change",
                   bdrv_get_node_name(bs), s->num_children);
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

    if (s->meta.child && !s->meta.writable && (state->flags & BDRV_O_RDWR)) {
        error_setg(errp, "Cannot make shadow node '%s' writable: its "
                   "metadata was opened read-only; open the node read-write",
                   bdrv_get_node_name(bs));
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

    qemu_spin_lock(&s->lock);
    st = shadow_child_state(s, rs->new_active);
    qemu_spin_unlock(&s->lock);
    /*
     * With metadata, a child that is still syncing may take over at once:
     * it copies up what it does not hold yet (an instant switch)
     */
    if (st == SHADOW_CHILD_STATE_DEGRADED ||
        (!s->meta.child && st != SHADOW_CHILD_STATE_ACTIVE &&
         st != SHADOW_CHILD_STATE_SYNCED)) {
        error_setg(errp, "Cannot switch shadow node '%s' to child '%s': it is "
                   "%s (%" PRId64 " of %" PRId64 " bytes valid)",
                   bdrv_get_node_name(bs), shadow_child_name(rs->new_active),
                   ShadowChildState_str(st),
                   shadow_valid_bytes(s, rs->new_active), s->length);
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
    int i;

    qemu_spin_lock(&s->lock);
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
        s->active = rs->new_active;
    }
    s->write_mode = rs->opts.write_mode;
    s->prewarm = rs->opts.prewarm;
    s->read_from = rs->opts.read_from;
    s->copy_on_read = rs->opts.copy_on_read;
    shadow_copy_set_speed(s, rs->opts.prewarm_speed);
    /* A reopen retries degraded children and failed copies */
    for (i = 0; i < s->num_children; i++) {
        s->children[i]->degraded = false;
    }
    s->copy_failed = false;
    s->meta.failed = false;
    qemu_spin_unlock(&s->lock);

    shadow_options_free(&rs->opts);
    g_free(rs);
    state->opaque = NULL;
}

static void shadow_reopen_abort(BDRVReopenState *state)
{
    ShadowReopenState *rs = state->opaque;

    if (rs) {
        shadow_options_free(&rs->opts);
        g_free(rs);
        state->opaque = NULL;
    }
}

/*
 * Adding and removing shadows at runtime (x-blockdev-change)
 */

static void GRAPH_WRLOCK
shadow_add_child(BlockDriverState *bs, BlockDriverState *child_bs,
                 Error **errp)
{
    BDRVShadowState *s = bs->opaque;
    g_autofree char *name = NULL;
    BdrvChild *child;
    ShadowChild *sc;
    int ret;

    if (s->next_child_index == UINT_MAX) {
        error_setg(errp, "Too many children");
        return;
    }
    /*
     * Under the graph write lock bdrv_getlength() would wait for a read
     * lock: use the length the node already knows
     */
    if (shadow_check_child_length(s, child_bs,
                                  child_bs->total_sectors * BDRV_SECTOR_SIZE,
                                  errp) < 0) {
        return;
    }

    name = g_strdup_printf("children.%u", s->next_child_index);
    bdrv_ref(child_bs);
    child = bdrv_attach_child(bs, child_bs, name, &child_of_bds,
                              BDRV_CHILD_DATA, errp);
    if (!child) {
        return;
    }
    s->next_child_index++;

    sc = shadow_new_child(s, child, true);
    qemu_spin_lock(&s->lock);
    ret = shadow_meta_add_child(s, sc, errp);
    if (ret == 0) {
        s->children = g_renew(ShadowChild *, s->children,
                              s->num_children + 1);
        s->children[s->num_children++] = sc;
    }
    qemu_spin_unlock(&s->lock);
    if (ret < 0) {
        bdrv_unref_child(bs, child);
        shadow_free_child(sc);
        return;
    }
    shadow_meta_commit_soon(s);
    shadow_copy_kick(s);
}

static void GRAPH_WRLOCK
shadow_del_child(BlockDriverState *bs, BdrvChild *child, Error **errp)
{
    BDRVShadowState *s = bs->opaque;
    ShadowChild *sc = NULL;
    int i;

    for (i = 0; i < s->num_children; i++) {
        if (s->children[i]->child == child) {
            sc = s->children[i];
            break;
        }
    }
    /* bdrv_del_child() checked that it is our child */
    assert(sc);

    if (sc == s->active) {
        error_setg(errp, "Cannot remove the active child '%s' of shadow node "
                   "'%s'; switch to another child first",
                   shadow_child_name(sc), bdrv_get_node_name(bs));
        return;
    }

    qemu_spin_lock(&s->lock);
    shadow_meta_del_child(s, sc);
    memmove(&s->children[i], &s->children[i + 1],
            (s->num_children - i - 1) * sizeof(ShadowChild *));
    s->num_children--;
    qemu_spin_unlock(&s->lock);
    shadow_meta_commit_soon(s);

    bdrv_unref_child(bs, child);
    shadow_free_child(sc);
}

/*
 * Introspection
 */

static void shadow_fill_io_stats(ShadowIOStats *io, ShadowCounters *c)
{
    io->rd_operations = stat64_get(&c->rd_ops);
    io->rd_bytes = stat64_get(&c->rd_bytes);
    io->rd_total_time_ns = stat64_get(&c->rd_ns);
    io->wr_operations = stat64_get(&c->wr_ops);
    io->wr_bytes = stat64_get(&c->wr_bytes);
    io->wr_total_time_ns = stat64_get(&c->wr_ns);
    io->flush_operations = stat64_get(&c->flush_ops);
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

    qemu_spin_lock(&s->lock);
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        ShadowChildStats *cs = g_new0(ShadowChildStats, 1);

        shadow_fill_io_stats(qapi_ShadowChildStats_base(cs), &sc->stats);
        cs->node_name = g_strdup(shadow_child_name(sc));
        cs->state = shadow_child_state(s, sc);
        cs->valid_bytes = shadow_valid_bytes(s, sc);
        cs->failed_operations = stat64_get(&sc->stats.failed_ops);
        cs->copied_bytes = stat64_get(&sc->stats.copied_bytes);
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
    shadow_meta_detach_aio_context(bs->opaque);
}

static void shadow_attach_aio_context(BlockDriverState *bs,
                                      AioContext *new_context)
{
    shadow_meta_attach_aio_context(bs->opaque, new_context);
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

/* Options that blockdev-reopen may omit to reset them to their default */
static const char *const shadow_mutable_opts[] = {
    "active-child", "write-mode", "prewarm", "prewarm-speed", "read-from",
    "copy-on-read", NULL
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

    .bdrv_co_getlength                  = shadow_co_getlength,
    .bdrv_co_preadv                     = shadow_co_preadv,
    .bdrv_co_pwritev                    = shadow_co_pwritev,
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

static void bdrv_shadow_init(void)
{
    bdrv_register(&bdrv_shadow);
}

block_init(bdrv_shadow_init);
