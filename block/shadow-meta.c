/*
 * Shadow block driver: persistent chunk maps on a metadata child
 *
 * With a metadata child, each child's chunk map and a write-intent map
 * survive a restart.  The format is described in docs/shadow-metadata.md.
 * The rules, after dm-clone and md's write-intent bitmap:
 *
 * - a valid bit is never durable before its data: a commit takes the
 *   maps' changes first, then flushes the children, then writes them;
 * - the intent bit of a chunk is durable before the first guest write to
 *   it; intent bits are cleared only by the periodic commit, for chunks
 *   nobody wrote since the previous one and whose maps are durable;
 * - guest flushes and FUA writes commit, and the flushes that arrive
 *   while a commit runs share the next one;
 * - after an unclean stop, a chunk with an intent bit is kept only on one
 *   child that held it (the active one when it did) and is stale on every
 *   other child.
 *
 * Only the SHADOW_META_UNIT-byte units of a map that changed are written.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/crc32c.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/memalign.h"
#include "shadow.h"

#define SHADOW_META_MAGIC         "SHADOWMD"
#define SHADOW_META_VERSION       1
#define SHADOW_META_HEADER_SIZE   4096
#define SHADOW_META_TABLE_OFFSET  (2 * SHADOW_META_HEADER_SIZE)
#define SHADOW_META_TABLE_SIZE    (SHADOW_META_SLOTS * sizeof(ShadowMetaSlot))
#define SHADOW_META_INTENT_OFFSET (SHADOW_META_TABLE_OFFSET + 4096)

/* Header flags */
#define SHADOW_META_IN_USE        1     /* opened for writing, not closed */

/* Slot flags */
#define SHADOW_META_SLOT_USED     1

typedef struct QEMU_PACKED ShadowMetaHeader {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t generation;
    uint64_t flags;
    uint64_t chunk_size;
    uint64_t length;
    uint64_t nb_chunks;
    uint32_t nb_slots;
    uint32_t active_slot;
    uint64_t table_offset;
    uint64_t intent_offset;
    uint64_t maps_offset;
    uint64_t map_bytes;
    uint32_t crc;
    uint32_t reserved;
} ShadowMetaHeader;

QEMU_BUILD_BUG_ON(sizeof(ShadowMetaSlot) != 256);
QEMU_BUILD_BUG_ON(SHADOW_META_TABLE_SIZE != 4096);

/* A unit of a map on its way to disk */
typedef struct ShadowMetaUnit {
    ShadowChild *sc;        /* NULL for the slot table */
    int64_t unit;
    int64_t offset;
    uint8_t *buf;
    int64_t bytes;
} ShadowMetaUnit;

static const char *shadow_meta_name(BDRVShadowState *s)
{
    return bdrv_get_node_name(s->meta.child->bs);
}

static int64_t shadow_meta_map_offset(BDRVShadowState *s, int slot)
{
    return s->meta.maps_offset + slot * s->meta.map_bytes;
}

static int64_t shadow_meta_nb_units(BDRVShadowState *s)
{
    return DIV_ROUND_UP(s->nb_chunks, SHADOW_META_UNIT_CHUNKS);
}

/*
 * Unit @u of @hb as stored on disk, into @buf (SHADOW_META_UNIT bytes).
 * Maps are stored as valid bits (@invert the stale bits); bits past the
 * last chunk are zero.
 */
static void shadow_meta_serialize_unit(BDRVShadowState *s, HBitmap *hb,
                                       bool invert, int64_t u, uint8_t *buf)
{
    int64_t start = u * SHADOW_META_UNIT_CHUNKS;
    int64_t count = MIN(SHADOW_META_UNIT_CHUNKS, s->nb_chunks - start);
    int64_t b;
    int i;

    memset(buf, 0, SHADOW_META_UNIT);
    hbitmap_serialize_part(hb, buf, start, count);
    if (invert) {
        for (i = 0; i < SHADOW_META_UNIT; i++) {
            buf[i] = ~buf[i];
        }
        for (b = count; b < SHADOW_META_UNIT_CHUNKS; b++) {
            buf[b / 8] &= ~(1u << (b % 8));
        }
    }
}

/* Load a whole bitmap from @buf (map_bytes, as on disk) into @hb */
static void shadow_meta_deserialize(BDRVShadowState *s, HBitmap *hb,
                                    bool invert, uint8_t *buf)
{
    int64_t b;
    int64_t i;

    if (invert) {
        for (i = 0; i < s->meta.map_bytes; i++) {
            buf[i] = ~buf[i];
        }
    }
    for (b = s->nb_chunks; b < ROUND_UP(s->nb_chunks, 64); b++) {
        buf[b / 8] &= ~(1u << (b % 8));
    }
    hbitmap_deserialize_part(hb, buf, 0, s->nb_chunks, true);
}

/*
 * A child's identity: the SHA-256 of the filename of the storage under
 * its filters, which survives renaming nodes and changing filters such
 * as throttle.
 */
static const char *GRAPH_RDLOCK
shadow_meta_identity(BlockDriverState *bs, uint8_t identity[32])
{
    BlockDriverState *leaf = bdrv_skip_filters(bs) ?: bs;
    const char *name = leaf->filename[0] ? leaf->filename
                                          : bdrv_get_node_name(leaf);
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = 32;

    g_checksum_update(sum, (const guchar *)name, strlen(name));
    g_checksum_get_digest(sum, identity, &len);
    return name;
}

static void shadow_meta_fill_slot(ShadowMetaSlot *slot, const char *node_name,
                                  const uint8_t identity[32],
                                  const char *filename)
{
    memset(slot, 0, sizeof(*slot));
    slot->flags = cpu_to_le32(SHADOW_META_SLOT_USED);
    memcpy(slot->identity, identity, 32);
    pstrcpy(slot->node_name, sizeof(slot->node_name), node_name);
    pstrcpy(slot->filename, sizeof(slot->filename), filename);
}

static bool shadow_meta_slot_used(const ShadowMetaSlot *slot)
{
    return le32_to_cpu(slot->flags) & SHADOW_META_SLOT_USED;
}

/* Write the next header copy: in use or closed, with the active slot */
static int GRAPH_RDLOCK shadow_meta_write_header(BDRVShadowState *s,
                                                 bool in_use, int active_slot)
{
    ShadowMeta *m = &s->meta;
    uint8_t *buf = qemu_blockalign0(m->child->bs, SHADOW_META_HEADER_SIZE);
    ShadowMetaHeader *h = (ShadowMetaHeader *)buf;
    int copy = m->header_copy ^ 1;
    int ret;

    memcpy(h->magic, SHADOW_META_MAGIC, sizeof(h->magic));
    h->version = cpu_to_le32(SHADOW_META_VERSION);
    h->header_size = cpu_to_le32(sizeof(*h));
    h->generation = cpu_to_le64(m->generation + 1);
    h->flags = cpu_to_le64(in_use ? SHADOW_META_IN_USE : 0);
    h->chunk_size = cpu_to_le64(s->chunk_size);
    h->length = cpu_to_le64(s->length);
    h->nb_chunks = cpu_to_le64(s->nb_chunks);
    h->nb_slots = cpu_to_le32(SHADOW_META_SLOTS);
    h->active_slot = cpu_to_le32(active_slot);
    h->table_offset = cpu_to_le64(SHADOW_META_TABLE_OFFSET);
    h->intent_offset = cpu_to_le64(SHADOW_META_INTENT_OFFSET);
    h->maps_offset = cpu_to_le64(m->maps_offset);
    h->map_bytes = cpu_to_le64(m->map_bytes);
    h->crc = cpu_to_le32(crc32c(0xffffffff, buf, sizeof(*h)));

    ret = bdrv_pwrite(m->child, copy * SHADOW_META_HEADER_SIZE,
                      SHADOW_META_HEADER_SIZE, buf, BDRV_REQ_FUA);
    qemu_vfree(buf);
    if (ret == 0) {
        m->generation++;
        m->header_copy = copy;
        m->durable_active_slot = active_slot;
    }
    return ret;
}

/* A header copy that is ours and intact, or NULL */
static ShadowMetaHeader *shadow_meta_check_header(uint8_t *buf)
{
    ShadowMetaHeader *h = (ShadowMetaHeader *)buf;
    uint32_t crc = le32_to_cpu(h->crc);

    if (memcmp(h->magic, SHADOW_META_MAGIC, sizeof(h->magic))) {
        return NULL;
    }
    h->crc = 0;
    if (le32_to_cpu(h->version) == SHADOW_META_VERSION &&
        crc32c(0xffffffff, buf, sizeof(*h)) != crc) {
        return NULL;
    }
    h->crc = cpu_to_le32(crc);
    return h;
}

/* The layout for this node's geometry */
static void shadow_meta_layout(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;

    m->map_bytes = ROUND_UP(DIV_ROUND_UP(s->nb_chunks, 8), 4096);
    m->maps_offset = SHADOW_META_INTENT_OFFSET + m->map_bytes;
}

static int GRAPH_RDLOCK shadow_meta_read_header(BDRVShadowState *s,
                                                bool *fresh,
                                                ShadowMetaHeader *out,
                                                Error **errp)
{
    ShadowMeta *m = &s->meta;
    uint8_t *buf = qemu_blockalign(m->child->bs, 2 * SHADOW_META_HEADER_SIZE);
    ShadowMetaHeader *h[2];
    int ret, i, best = -1;

    ret = bdrv_pread(m->child, 0, 2 * SHADOW_META_HEADER_SIZE, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "shadow: cannot read metadata node '%s'",
                         shadow_meta_name(s));
        goto out;
    }
    for (i = 0; i < 2; i++) {
        h[i] = shadow_meta_check_header(buf + i * SHADOW_META_HEADER_SIZE);
        if (h[i] && (best < 0 || le64_to_cpu(h[i]->generation) >
                                 le64_to_cpu(h[best]->generation))) {
            best = i;
        }
    }
    *fresh = false;
    if (best < 0) {
        bool has_magic = false;

        for (i = 0; i < 2; i++) {
            has_magic |= !memcmp(buf + i * SHADOW_META_HEADER_SIZE,
                                 SHADOW_META_MAGIC, 8);
        }
        if (has_magic) {
            error_setg(errp, "shadow: metadata node '%s' is corrupt: no "
                       "header copy passes its checksum",
                       shadow_meta_name(s));
            ret = -EINVAL;
        } else if (buffer_is_zero(buf, 2 * SHADOW_META_HEADER_SIZE)) {
            *fresh = true;
        } else {
            error_setg(errp, "shadow: metadata node '%s' does not hold shadow "
                       "metadata (no '%s' magic); to start new metadata, "
                       "give an image filled with zeroes",
                       shadow_meta_name(s), SHADOW_META_MAGIC);
            ret = -EINVAL;
        }
        goto out;
    }
    *out = *h[best];
    m->header_copy = best;
    m->generation = le64_to_cpu(out->generation);
out:
    qemu_vfree(buf);
    return ret < 0 ? ret : 0;
}

/* Whether the header describes this node, as far as the format goes */
static int shadow_meta_check_geometry(BDRVShadowState *s,
                                      const ShadowMetaHeader *h, Error **errp)
{
    ShadowMeta *m = &s->meta;

    if (le32_to_cpu(h->version) != SHADOW_META_VERSION) {
        error_setg(errp, "shadow: metadata node '%s' has format version %u; "
                   "this QEMU reads version %d only", shadow_meta_name(s),
                   le32_to_cpu(h->version), SHADOW_META_VERSION);
        return -ENOTSUP;
    }
    if (le64_to_cpu(h->chunk_size) != s->chunk_size) {
        error_setg(errp, "shadow: metadata node '%s' was written with "
                   "chunk-size %" PRIu64 ", but the node has chunk-size %"
                   PRId64, shadow_meta_name(s), le64_to_cpu(h->chunk_size),
                   s->chunk_size);
        return -EINVAL;
    }
    if (le64_to_cpu(h->length) != s->length) {
        error_setg(errp, "shadow: metadata node '%s' describes a disk of %"
                   PRIu64 " bytes, but the active child has %" PRId64,
                   shadow_meta_name(s), le64_to_cpu(h->length), s->length);
        return -EINVAL;
    }
    if (le64_to_cpu(h->nb_chunks) != s->nb_chunks ||
        le32_to_cpu(h->nb_slots) != SHADOW_META_SLOTS ||
        le32_to_cpu(h->active_slot) >= SHADOW_META_SLOTS ||
        le64_to_cpu(h->table_offset) != SHADOW_META_TABLE_OFFSET ||
        le64_to_cpu(h->intent_offset) != SHADOW_META_INTENT_OFFSET ||
        le64_to_cpu(h->maps_offset) != m->maps_offset ||
        le64_to_cpu(h->map_bytes) != m->map_bytes) {
        error_setg(errp, "shadow: metadata node '%s' is corrupt: its layout "
                   "does not follow from its geometry", shadow_meta_name(s));
        return -EINVAL;
    }
    return 0;
}

/*
 * Give each child its slot: every child must be recorded, and every
 * recorded child must be there.  With @fresh, the slots are assigned.
 */
static int GRAPH_RDLOCK shadow_meta_match_children(BDRVShadowState *s,
                                                   bool fresh, Error **errp)
{
    ShadowMeta *m = &s->meta;
    bool matched[SHADOW_META_SLOTS] = { false };
    uint8_t ids[SHADOW_META_SLOTS][32];
    int i, j;

    if (s->num_children > SHADOW_META_SLOTS) {
        error_setg(errp, "shadow: with metadata a node has at most %d "
                   "children", SHADOW_META_SLOTS);
        return -EINVAL;
    }
    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        uint8_t *id = ids[i];
        const char *filename = shadow_meta_identity(sc->child->bs, id);

        for (j = 0; j < i; j++) {
            if (!memcmp(id, ids[j], sizeof(ids[j]))) {
                error_setg(errp, "shadow: children '%s' and '%s' use the same "
                           "storage (%s); with metadata each child needs its "
                           "own", bdrv_get_node_name(s->children[j]->child->bs),
                           bdrv_get_node_name(sc->child->bs), filename);
                return -EINVAL;
            }
        }
        if (fresh) {
            sc->slot = i;
        } else {
            for (j = 0; j < SHADOW_META_SLOTS; j++) {
                if (shadow_meta_slot_used(&m->slots[j]) &&
                    !memcmp(m->slots[j].identity, id, sizeof(ids[i]))) {
                    break;
                }
            }
            if (j == SHADOW_META_SLOTS) {
                error_setg(errp, "shadow: child '%s' (%s) is not recorded in "
                           "metadata node '%s'; add children at runtime with "
                           "x-blockdev-change",
                           bdrv_get_node_name(sc->child->bs), filename,
                           shadow_meta_name(s));
                return -EINVAL;
            }
            sc->slot = j;
        }
        matched[sc->slot] = true;
        /* Node names may have changed: record the current ones */
        shadow_meta_fill_slot(&m->slots[sc->slot],
                              bdrv_get_node_name(sc->child->bs), id, filename);
    }
    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        if (!matched[j] && shadow_meta_slot_used(&m->slots[j])) {
            ShadowMetaSlot *slot = &m->slots[j];

            error_setg(errp, "shadow: metadata node '%s' records child '%.*s' "
                       "(%.*s), which is not among the children of node '%s'",
                       shadow_meta_name(s), (int)sizeof(slot->node_name),
                       slot->node_name, (int)sizeof(slot->filename),
                       slot->filename, bdrv_get_node_name(s->bs));
            return -EINVAL;
        }
    }
    m->table_dirty = true;
    return 0;
}

static ShadowChild *shadow_meta_child_in_slot(BDRVShadowState *s, int slot)
{
    int i;

    for (i = 0; i < s->num_children; i++) {
        if (s->children[i]->slot == slot) {
            return s->children[i];
        }
    }
    return NULL;
}

/*
 * After an unclean stop: each chunk with an intent bit may differ between
 * children.  Keep it on the child that was active if that child held it,
 * else on one child that held it, and make it stale everywhere else.
 * Returns the number of such chunks.
 */
static int64_t shadow_meta_recover(BDRVShadowState *s, HBitmap *intent,
                                   ShadowChild *recorded)
{
    int64_t c, n = 0;
    int i;

    for (c = hbitmap_next_dirty(intent, 0, s->nb_chunks); c >= 0;
         c = hbitmap_next_dirty(intent, c + 1, s->nb_chunks - c - 1)) {
        ShadowChild *keep = NULL;

        if (recorded && !shadow_map_is_stale(&recorded->map, c)) {
            keep = recorded;
        }
        for (i = 0; i < s->num_children && !keep; i++) {
            if (!shadow_map_is_stale(&s->children[i]->map, c)) {
                keep = s->children[i];
            }
        }
        for (i = 0; i < s->num_children; i++) {
            if (s->children[i] != keep) {
                shadow_map_mark_stale(&s->children[i]->map, c, 1);
            }
        }
        n++;
        if (c == s->nb_chunks - 1) {
            break;
        }
    }
    return n;
}

static void shadow_meta_timer_cb(void *opaque);

/*
 * Load the maps from the metadata child (s->meta.child), or start new
 * metadata on an image of zeroes.  The children and their maps are set
 * up as without metadata; the maps are replaced by what was recorded.
 */
int shadow_meta_open(BDRVShadowState *s, ShadowChild *active, Error **errp)
{
    ShadowMeta *m = &s->meta;
    ShadowMetaHeader h;
    g_autofree uint8_t *map_buf = NULL;
    HBitmap *intent = NULL;
    ShadowChild *recorded = NULL;
    bool fresh, in_use = false;
    int64_t size, need, recovered = 0;
    int ret, i;

    m->writable = (bdrv_get_flags(s->bs) & BDRV_O_RDWR) &&
                  !(bdrv_get_flags(s->bs) & BDRV_O_INACTIVE);
    for (i = 0; i < s->num_children; i++) {
        s->children[i]->slot = -1;
    }
    shadow_meta_layout(s);

    size = bdrv_getlength(m->child->bs);
    if (size < 0) {
        error_setg_errno(errp, -size, "shadow: cannot get the length of "
                         "metadata node '%s'", shadow_meta_name(s));
        return size;
    }
    need = shadow_meta_map_offset(s, SHADOW_META_SLOTS);
    if (size < need) {
        error_setg(errp, "shadow: metadata node '%s' is too small for this "
                   "disk: %" PRId64 " bytes, needs %" PRId64,
                   shadow_meta_name(s), size, need);
        return -ENOSPC;
    }

    ret = shadow_meta_read_header(s, &fresh, &h, errp);
    if (ret < 0) {
        return ret;
    }
    if (!fresh) {
        ret = shadow_meta_check_geometry(s, &h, errp);
        if (ret < 0) {
            return ret;
        }
        ret = bdrv_pread(m->child, SHADOW_META_TABLE_OFFSET,
                         SHADOW_META_TABLE_SIZE, m->slots, 0);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "shadow: cannot read metadata node "
                             "'%s'", shadow_meta_name(s));
            return ret;
        }
        in_use = le64_to_cpu(h.flags) & SHADOW_META_IN_USE;
    } else if (!m->writable) {
        error_setg(errp, "shadow: metadata node '%s' is empty and the node "
                   "is read-only", shadow_meta_name(s));
        return -EINVAL;
    }
    ret = shadow_meta_match_children(s, fresh, errp);
    if (ret < 0) {
        return ret;
    }

    if (!fresh) {
        map_buf = g_malloc(m->map_bytes);
        for (i = 0; i < s->num_children; i++) {
            ShadowChild *sc = s->children[i];

            ret = bdrv_pread(m->child, shadow_meta_map_offset(s, sc->slot),
                             m->map_bytes, map_buf, 0);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "shadow: cannot read metadata "
                                 "node '%s'", shadow_meta_name(s));
                return ret;
            }
            hbitmap_reset_all(sc->map.stale);
            shadow_meta_deserialize(s, sc->map.stale, true, map_buf);
        }
        recorded = shadow_meta_child_in_slot(s,
                                             le32_to_cpu(h.active_slot));
        if (in_use) {
            ret = bdrv_pread(m->child, SHADOW_META_INTENT_OFFSET,
                             m->map_bytes, map_buf, 0);
            if (ret < 0) {
                error_setg_errno(errp, -ret, "shadow: cannot read metadata "
                                 "node '%s'", shadow_meta_name(s));
                return ret;
            }
            intent = hbitmap_alloc(s->nb_chunks, 0);
            shadow_meta_deserialize(s, intent, false, map_buf);
            recovered = shadow_meta_recover(s, intent, recorded);
            hbitmap_free(intent);
        }
    }

    for (i = 0; i < s->num_children; i++) {
        /* Everything is written out at open when new or recovered */
        shadow_map_track_changes(&s->children[i]->map);
        if (!fresh && !in_use) {
            hbitmap_reset_all(s->children[i]->map.dirty);
        }
    }
    m->intent = hbitmap_alloc(s->nb_chunks, 0);
    m->intent_durable = hbitmap_alloc(s->nb_chunks, 0);
    m->written = hbitmap_alloc(s->nb_chunks, 0);
    qemu_co_mutex_init(&m->io_lock);
    qemu_co_mutex_init(&m->commit_lock);
    qemu_co_queue_init(&m->commit_queue);
    m->durable_active_slot = fresh ? -1 : le32_to_cpu(h.active_slot);

    if (in_use) {
        info_report("shadow: node '%s' was not closed cleanly: %" PRId64
                    " chunks that had writes in flight are now stale on all "
                    "children but one", bdrv_get_node_name(s->bs), recovered);
    }
    if (recorded && recorded != active) {
        info_report("shadow: node '%s' opens with active child '%s', the "
                    "metadata recorded '%s'", bdrv_get_node_name(s->bs),
                    bdrv_get_node_name(active->child->bs),
                    bdrv_get_node_name(recorded->child->bs));
    }

    if (!m->writable) {
        return 0;
    }

    /*
     * New: clear the maps and the intent map.  Recovered: write the maps
     * and only then clear the intent map.  Then mark the header in use.
     */
    if (fresh) {
        ret = bdrv_pwrite_zeroes(m->child, SHADOW_META_TABLE_OFFSET,
                                 need - SHADOW_META_TABLE_OFFSET, 0);
    }
    for (i = 0; i < s->num_children && ret == 0; i++) {
        ShadowChild *sc = s->children[i];
        int64_t u;

        if (!hbitmap_count(sc->map.dirty)) {
            continue;
        }
        map_buf = map_buf ?: g_malloc(m->map_bytes);
        for (u = 0; u < shadow_meta_nb_units(s); u++) {
            shadow_meta_serialize_unit(s, sc->map.stale, true, u,
                                       map_buf + u * SHADOW_META_UNIT);
        }
        ret = bdrv_pwrite(m->child, shadow_meta_map_offset(s, sc->slot),
                          shadow_meta_nb_units(s) * SHADOW_META_UNIT,
                          map_buf, 0);
        hbitmap_reset_all(sc->map.dirty);
    }
    if (ret == 0) {
        ret = bdrv_pwrite(m->child, SHADOW_META_TABLE_OFFSET,
                          SHADOW_META_TABLE_SIZE, m->slots, 0);
        m->table_dirty = false;
    }
    if (ret == 0) {
        ret = bdrv_flush(m->child->bs);
    }
    if (ret == 0 && in_use) {
        ret = bdrv_pwrite_zeroes(m->child, SHADOW_META_INTENT_OFFSET,
                                 m->map_bytes, 0);
    }
    if (ret == 0) {
        ret = shadow_meta_write_header(s, true, active->slot);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "shadow: cannot write metadata node '%s'",
                         shadow_meta_name(s));
        return ret;
    }

    m->timer = aio_timer_new(bdrv_get_aio_context(s->bs), QEMU_CLOCK_REALTIME,
                             SCALE_NS, shadow_meta_timer_cb, s);
    timer_mod(m->timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                        SHADOW_META_COMMIT_NS);
    return 0;
}

void shadow_meta_destroy(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;

    if (m->timer) {
        timer_free(m->timer);
        m->timer = NULL;
    }
    g_clear_pointer(&m->intent, hbitmap_free);
    g_clear_pointer(&m->intent_durable, hbitmap_free);
    g_clear_pointer(&m->written, hbitmap_free);
}

/*
 * Write intent
 */

/* Whether a write to [@first, @end) may go out now.  Locked. */
bool shadow_meta_intent_ready(BDRVShadowState *s, int64_t first, int64_t end)
{
    ShadowMeta *m = &s->meta;

    if (!m->child || !m->writable) {
        return true;
    }
    hbitmap_set(m->written, first, end - first);
    return m->durable_active_slot == s->active->slot &&
           hbitmap_next_zero(m->intent_durable, first, end - first) < 0;
}

/*
 * Make the intent bits of [@first, @end) durable, and the active child
 * recorded in the header, before a write to those chunks goes out.
 */
int coroutine_fn GRAPH_RDLOCK
shadow_meta_write_intent(BDRVShadowState *s, int64_t first, int64_t end)
{
    ShadowMeta *m = &s->meta;
    int64_t u0 = first / SHADOW_META_UNIT_CHUNKS;
    int64_t u1 = (end - 1) / SHADOW_META_UNIT_CHUNKS;
    uint8_t *buf = NULL;
    int active_slot;
    bool ready;
    int64_t u;
    int ret = 0;

    qemu_co_mutex_lock(&m->io_lock);
    qemu_spin_lock(&s->lock);
    ready = shadow_meta_intent_ready(s, first, end);
    active_slot = s->active->slot;
    if (!ready) {
        hbitmap_set(m->intent, first, end - first);
        buf = qemu_blockalign(m->child->bs,
                              (u1 - u0 + 1) * SHADOW_META_UNIT);
        for (u = u0; u <= u1; u++) {
            shadow_meta_serialize_unit(s, m->intent, false, u,
                                       buf + (u - u0) * SHADOW_META_UNIT);
        }
    }
    qemu_spin_unlock(&s->lock);

    if (!ready && m->failed) {
        ret = -EIO;
    }
    if (!ready && ret == 0 && active_slot != m->durable_active_slot) {
        /* The first write after a switch records the new active child */
        ret = shadow_meta_write_header(s, true, active_slot);
    }
    if (!ready && ret == 0) {
        ret = bdrv_co_pwrite(m->child,
                             SHADOW_META_INTENT_OFFSET + u0 * SHADOW_META_UNIT,
                             (u1 - u0 + 1) * SHADOW_META_UNIT, buf,
                             BDRV_REQ_FUA);
    }
    if (!ready && ret == 0) {
        qemu_spin_lock(&s->lock);
        hbitmap_set(m->intent_durable, first, end - first);
        qemu_spin_unlock(&s->lock);
    }
    qemu_co_mutex_unlock(&m->io_lock);
    qemu_vfree(buf);

    if (ret < 0 && !m->failed) {
        m->failed = true;
        error_report("shadow: node '%s': writing metadata node '%s' failed: "
                     "%s; guest writes fail until the node is reopened",
                     bdrv_get_node_name(s->bs), shadow_meta_name(s),
                     strerror(-ret));
    }
    return ret;
}

/*
 * Commits
 */

/* Units of the maps that changed, serialised now.  Locked. */
static GArray *shadow_meta_take_changes(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    GArray *units = g_array_new(false, false, sizeof(ShadowMetaUnit));
    int i;

    for (i = 0; i < s->num_children; i++) {
        ShadowChild *sc = s->children[i];
        int64_t c;

        for (c = hbitmap_next_dirty(sc->map.dirty, 0, s->nb_chunks); c >= 0;
             c = hbitmap_next_dirty(sc->map.dirty, c, s->nb_chunks - c)) {
            ShadowMetaUnit unit = {
                .sc = sc,
                .unit = c / SHADOW_META_UNIT_CHUNKS,
                .bytes = SHADOW_META_UNIT,
                .buf = qemu_blockalign(m->child->bs, SHADOW_META_UNIT),
            };

            unit.offset = shadow_meta_map_offset(s, sc->slot) +
                          unit.unit * SHADOW_META_UNIT;
            shadow_meta_serialize_unit(s, sc->map.stale, true, unit.unit,
                                       unit.buf);
            g_array_append_val(units, unit);
            c = (unit.unit + 1) * SHADOW_META_UNIT_CHUNKS;
            if (c >= s->nb_chunks) {
                break;
            }
        }
        hbitmap_reset_all(sc->map.dirty);
    }
    if (m->table_dirty) {
        ShadowMetaUnit unit = {
            .offset = SHADOW_META_TABLE_OFFSET,
            .bytes = SHADOW_META_TABLE_SIZE,
            .buf = qemu_blockalign(m->child->bs, SHADOW_META_TABLE_SIZE),
        };

        memcpy(unit.buf, m->slots, SHADOW_META_TABLE_SIZE);
        g_array_append_val(units, unit);
        m->table_dirty = false;
    }
    return units;
}

/* Put back what a failed commit did not write.  Locked. */
static void shadow_meta_untake_changes(BDRVShadowState *s, GArray *units)
{
    guint i;

    for (i = 0; i < units->len; i++) {
        ShadowMetaUnit *unit = &g_array_index(units, ShadowMetaUnit, i);

        if (unit->sc) {
            hbitmap_set(unit->sc->map.dirty,
                        unit->unit * SHADOW_META_UNIT_CHUNKS, 1);
        } else {
            s->meta.table_dirty = true;
        }
    }
}

static void shadow_meta_free_units(GArray *units)
{
    guint i;

    for (i = 0; i < units->len; i++) {
        qemu_vfree(g_array_index(units, ShadowMetaUnit, i).buf);
    }
    g_array_free(units, true);
}

/* Whether a write or a copy to chunk @c is in flight.  Locked. */
static bool shadow_meta_chunk_busy(BDRVShadowState *s, int64_t c)
{
    return reqlist_find_conflict(&s->reqs, c * s->chunk_size,
                                 MIN(s->chunk_size,
                                     s->length - c * s->chunk_size));
}

/*
 * Intent bits that may be cleared once the maps taken now are durable:
 * chunks nobody wrote in this period or the one before and with nothing
 * in flight.  Locked.
 */
static HBitmap *shadow_meta_idle_intents(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    HBitmap *idle = NULL;
    int64_t c;

    for (c = hbitmap_next_dirty(m->intent_durable, 0, s->nb_chunks); c >= 0;
         c = c + 1 < s->nb_chunks ?
             hbitmap_next_dirty(m->intent_durable, c + 1,
                                s->nb_chunks - c - 1) : -1) {
        if (hbitmap_get(m->written, c) || shadow_meta_chunk_busy(s, c)) {
            continue;
        }
        idle = idle ?: hbitmap_alloc(s->nb_chunks, 0);
        hbitmap_set(idle, c, 1);
    }
    return idle;
}

/* Clear the intent bits of @idle not written since; write those units */
static int coroutine_fn GRAPH_RDLOCK
shadow_meta_clear_intents(BDRVShadowState *s, HBitmap *idle)
{
    ShadowMeta *m = &s->meta;
    g_autoptr(GArray) units = g_array_new(false, false, sizeof(int64_t));
    uint8_t *buf = qemu_blockalign(m->child->bs, SHADOW_META_UNIT);
    int64_t c, last_unit = -1;
    guint i;
    int ret = 0;

    qemu_co_mutex_lock(&m->io_lock);
    qemu_spin_lock(&s->lock);
    if (idle) {
        for (c = hbitmap_next_dirty(idle, 0, s->nb_chunks); c >= 0;
             c = c + 1 < s->nb_chunks ?
                 hbitmap_next_dirty(idle, c + 1, s->nb_chunks - c - 1) : -1) {
            int64_t u = c / SHADOW_META_UNIT_CHUNKS;

            if (hbitmap_get(m->written, c)) {
                continue;
            }
            hbitmap_reset(m->intent, c, 1);
            hbitmap_reset(m->intent_durable, c, 1);
            if (u != last_unit) {
                g_array_append_val(units, u);
                last_unit = u;
            }
        }
    }
    /* A new period begins */
    hbitmap_reset_all(m->written);
    qemu_spin_unlock(&s->lock);

    for (i = 0; i < units->len && ret == 0; i++) {
        int64_t u = g_array_index(units, int64_t, i);

        qemu_spin_lock(&s->lock);
        shadow_meta_serialize_unit(s, m->intent, false, u, buf);
        qemu_spin_unlock(&s->lock);
        /* Not flushed: a clear bit that is lost is merely conservative */
        ret = bdrv_co_pwrite(m->child,
                             SHADOW_META_INTENT_OFFSET + u * SHADOW_META_UNIT,
                             SHADOW_META_UNIT, buf, 0);
    }
    qemu_co_mutex_unlock(&m->io_lock);
    qemu_vfree(buf);
    return ret;
}

/* One commit; with @periodic, also clear idle intent bits */
static int coroutine_fn GRAPH_RDLOCK
shadow_meta_do_commit(BDRVShadowState *s, bool periodic)
{
    ShadowMeta *m = &s->meta;
    GArray *units;
    HBitmap *idle = NULL;
    guint i;
    int ret, meta_ret = 0;

    /* Valid bits taken now have their data written: flush it first */
    qemu_spin_lock(&s->lock);
    units = shadow_meta_take_changes(s);
    if (periodic) {
        idle = shadow_meta_idle_intents(s);
    }

    if (periodic && !units->len && !idle) {
        /* Nothing to write: a new period begins */
        hbitmap_reset_all(m->written);
        qemu_spin_unlock(&s->lock);
        shadow_meta_free_units(units);
        return 0;
    }
    qemu_spin_unlock(&s->lock);
    ret = shadow_flush_children(s);
    if (ret < 0) {
        goto out;
    }
    for (i = 0; i < units->len && meta_ret == 0; i++) {
        ShadowMetaUnit *unit = &g_array_index(units, ShadowMetaUnit, i);

        meta_ret = bdrv_co_pwrite(m->child, unit->offset, unit->bytes,
                                  unit->buf, 0);
    }
    if (meta_ret == 0 && units->len) {
        meta_ret = bdrv_co_flush(m->child->bs);
    }
    if (meta_ret == 0 && periodic) {
        meta_ret = shadow_meta_clear_intents(s, idle);
    }
out:
    if (ret < 0 || meta_ret < 0) {
        qemu_spin_lock(&s->lock);
        shadow_meta_untake_changes(s, units);
        qemu_spin_unlock(&s->lock);
    }
    if (meta_ret < 0) {
        if (!m->failed) {
            error_report("shadow: node '%s': writing metadata node '%s' "
                         "failed: %s", bdrv_get_node_name(s->bs),
                         shadow_meta_name(s), strerror(-meta_ret));
        }
        m->failed = true;
        ret = meta_ret;
    }
    if (idle) {
        hbitmap_free(idle);
    }
    shadow_meta_free_units(units);
    return ret;
}

/*
 * Flush the children and commit the maps.  A caller is served by a commit
 * that starts after it arrived, so the flushes that arrive while a commit
 * runs all share the next one.  Returns the active child's flush result
 * or the metadata child's error.
 */
int coroutine_fn GRAPH_RDLOCK shadow_meta_commit(BDRVShadowState *s,
                                                 bool periodic)
{
    ShadowMeta *m = &s->meta;
    uint64_t ticket, mine;
    int ret;

    if (!m->child || !m->writable) {
        return shadow_flush_children(s);
    }
    qemu_co_mutex_lock(&m->commit_lock);
    ticket = m->commit_started + 1;
    while (m->commit_done < ticket) {
        if (m->committing) {
            qemu_co_queue_wait(&m->commit_queue, &m->commit_lock);
            continue;
        }
        m->committing = true;
        mine = ++m->commit_started;
        qemu_co_mutex_unlock(&m->commit_lock);
        ret = shadow_meta_do_commit(s, periodic);
        qemu_co_mutex_lock(&m->commit_lock);
        m->commit_ret = ret;
        m->commit_done = mine;
        m->committing = false;
        qemu_co_queue_restart_all(&m->commit_queue);
        qemu_co_mutex_unlock(&m->commit_lock);
        return ret;
    }
    ret = m->commit_ret;
    qemu_co_mutex_unlock(&m->commit_lock);
    return ret;
}

/* The periodic commit, counted as a request in flight */
static void coroutine_fn shadow_meta_periodic_entry(void *opaque)
{
    BDRVShadowState *s = opaque;

    bdrv_graph_co_rdlock();
    shadow_meta_commit(s, true);
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

    if (qatomic_read(&s->bs->quiesce_counter) || !bdrv_is_writable(s->bs)) {
        /* Drained or inactive: try again later */
        timer_mod(s->meta.timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) +
                                 SHADOW_META_COMMIT_NS);
        return;
    }
    bdrv_inc_in_flight(s->bs);
    aio_co_enter(bdrv_get_aio_context(s->bs),
                 qemu_coroutine_create(shadow_meta_periodic_entry, s));
}

/* Commit soon, e.g. after the set of children changed */
void shadow_meta_commit_soon(BDRVShadowState *s)
{
    if (s->meta.timer) {
        timer_mod(s->meta.timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME));
    }
}

void shadow_meta_attach_aio_context(BDRVShadowState *s, AioContext *ctx)
{
    if (s->meta.child && s->meta.writable) {
        s->meta.timer = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_NS,
                                      shadow_meta_timer_cb, s);
        shadow_meta_commit_soon(s);
    }
}

void shadow_meta_detach_aio_context(BDRVShadowState *s)
{
    if (s->meta.timer) {
        timer_free(s->meta.timer);
        s->meta.timer = NULL;
    }
}

/*
 * Clean close, drained: commit everything, clear the intent map, and mark
 * the header closed.  Errors leave the header in use, so the next open
 * recovers as after a crash.
 */
void shadow_meta_close(BDRVShadowState *s)
{
    ShadowMeta *m = &s->meta;
    GArray *units;
    guint i;
    int ret = 0;

    if (!m->child || !m->writable) {
        return;
    }
    for (i = 0; i < s->num_children; i++) {
        if (!s->children[i]->degraded &&
            bdrv_flush(s->children[i]->child->bs) < 0 &&
            s->children[i] == s->active) {
            ret = -EIO;
        }
    }
    qemu_spin_lock(&s->lock);
    units = shadow_meta_take_changes(s);
    qemu_spin_unlock(&s->lock);
    for (i = 0; i < units->len && ret == 0; i++) {
        ShadowMetaUnit *unit = &g_array_index(units, ShadowMetaUnit, i);

        ret = bdrv_pwrite(m->child, unit->offset, unit->bytes, unit->buf, 0);
    }
    shadow_meta_free_units(units);
    if (ret == 0) {
        ret = bdrv_flush(m->child->bs);
    }
    if (ret == 0) {
        ret = bdrv_pwrite_zeroes(m->child, SHADOW_META_INTENT_OFFSET,
                                 m->map_bytes, 0);
    }
    if (ret == 0) {
        ret = bdrv_flush(m->child->bs);
    }
    if (ret == 0) {
        ret = shadow_meta_write_header(s, false, s->active->slot);
    }
    if (ret < 0) {
        error_report("shadow: node '%s': could not close metadata node '%s' "
                     "cleanly: %s; the next open recovers as after a crash",
                     bdrv_get_node_name(s->bs), shadow_meta_name(s),
                     strerror(-ret));
    }
}

/*
 * x-blockdev-change: a new child takes a free slot; its map, all stale,
 * and the slot table are written by the next commit, which the caller
 * starts at once with shadow_meta_commit_soon().  Locked.
 */
int shadow_meta_add_child(BDRVShadowState *s, ShadowChild *sc, Error **errp)
{
    ShadowMeta *m = &s->meta;
    uint8_t id[32];
    const char *filename;
    int i, slot = -1;

    if (!m->child) {
        return 0;
    }
    filename = shadow_meta_identity(sc->child->bs, id);
    for (i = 0; i < SHADOW_META_SLOTS; i++) {
        if (!shadow_meta_slot_used(&m->slots[i])) {
            slot = slot < 0 ? i : slot;
        } else if (!memcmp(m->slots[i].identity, id, sizeof(id))) {
            error_setg(errp, "shadow: node '%s' uses the same storage (%s) as "
                       "child '%.*s'", bdrv_get_node_name(sc->child->bs),
                       filename, (int)sizeof(m->slots[i].node_name),
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
    shadow_meta_fill_slot(&m->slots[slot], bdrv_get_node_name(sc->child->bs),
                          id, filename);
    m->table_dirty = true;
    shadow_map_track_changes(&sc->map);
    return 0;
}

void shadow_meta_del_child(BDRVShadowState *s, ShadowChild *sc)
{
    ShadowMeta *m = &s->meta;

    if (!m->child || sc->slot < 0) {
        return;
    }
    memset(&m->slots[sc->slot], 0, sizeof(ShadowMetaSlot));
    m->table_dirty = true;
}
