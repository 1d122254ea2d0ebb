/*
 * Shadow block driver: the on-disk metadata format, version 2
 *
 * This file knows how the metadata is laid out and checked; it decides
 * nothing about when to write what (shadow-state.c does).  The format is
 * described in docs/shadow-metadata.md:
 *
 *   0       header copy 0: header fields, then the slot table
 *   8192    header copy 1
 *   16384   rows of units: row u holds unit u of the intent map, then
 *           two copies of unit u of the valid map of each of the 16 slots
 *
 * Every header copy and every unit carries a CRC-32C.  A unit also names
 * its column (intent or slot), its index and an epoch: the slot's epoch
 * for a valid map, so that the units a removed child left behind never
 * count for the child that takes its slot, and the session's for the
 * intent map, so that leftovers of an earlier session are ignored.
 * Valid maps alternate between their two copies, each write carrying a
 * sequence number, so that a write torn by a crash leaves the previous
 * version.  Growing the disk appends rows; nothing ever moves.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/stat.h>
#include "block/aio_task.h"
#include "block/block_int.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "qemu/crc32c.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "shadow.h"

#define SHADOW_META_MAGIC         "SHADOWMD"
#define SHADOW_META_VERSION       2
#define SHADOW_META_HEADER_SIZE   8192
#define SHADOW_META_TABLE_OFFSET  256
#define SHADOW_META_ROWS_OFFSET   (2 * SHADOW_META_HEADER_SIZE)
/* Units in a row: the intent map's, then two per slot */
#define SHADOW_META_ROW_UNITS     (1 + 2 * SHADOW_META_SLOTS)
/*
 * Rows read with the header: the maps of a disk up to about 2 GiB (64 KiB
 * chunks) come in the header's read.  More would be whole rows, most of
 * them other columns, on the path of every larger disk's activation.
 */
#define SHADOW_META_HEADER_ROWS   1
/* Rows read at once when loading the maps */
#define SHADOW_META_LOAD_ROWS     16

/* Header flags */
#define SHADOW_META_IN_USE        1     /* children may be written */
/*
 * The writer never used a unit's sequence number twice, and started a
 * session at each load (ShadowMapsRead).  Every header this driver writes
 * has it; one of an older writer does not, and QEMUs that do not know
 * the flag ignore it.
 */
#define SHADOW_META_UNIQUE_SEQ    2
/*
 * A header not in use lists, for each used slot, the low bits of each
 * unit's sequence number (SHADOW_META_SEQS_OFFSET,
 * shadow_meta_listed_seq()), when they fit
 */
#define SHADOW_META_UNIT_SEQS     4

/* Slot flags */
#define SHADOW_META_SLOT_USED     1
#define SHADOW_META_SLOT_STAT     2     /* ino recorded */
#define SHADOW_META_SLOT_BTIME    4     /* birth time recorded */
#define SHADOW_META_SLOT_STAMPED  8     /* size, ctime at a clean stop */
#define SHADOW_META_SLOT_SEQ_SUM  16    /* sum of its units' sequences */

struct QEMU_PACKED ShadowMetaHeader {
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
    uint64_t session;
    uint64_t rows_offset;
    uint32_t unit_size;
    uint32_t unit_chunks;
    uint32_t table_offset;
    uint32_t crc;
};

typedef struct QEMU_PACKED ShadowMetaSlotDisk {
    uint32_t flags;
    uint32_t seq_sum;
    uint64_t epoch;
    uint8_t identity[32];
    uint64_t ino;
    int64_t btime_sec;
    uint32_t btime_nsec;
    uint32_t ctime_nsec;
    int64_t ctime_sec;
    int64_t size;
    char node_name[64];
    char filename[104];
} ShadowMetaSlotDisk;

typedef struct QEMU_PACKED ShadowMetaUnitHeader {
    uint32_t crc;
    uint32_t column;
    uint64_t epoch;
    uint64_t index;
    uint64_t seq;
} ShadowMetaUnitHeader;

QEMU_BUILD_BUG_ON(sizeof(ShadowMetaHeader) != 96);
QEMU_BUILD_BUG_ON(sizeof(ShadowMetaSlotDisk) != 256);
QEMU_BUILD_BUG_ON(sizeof(ShadowMetaUnitHeader) != SHADOW_META_UNIT_HEADER);
QEMU_BUILD_BUG_ON(SHADOW_META_TABLE_OFFSET +
                  SHADOW_META_SLOTS * sizeof(ShadowMetaSlotDisk) >
                  SHADOW_META_HEADER_SIZE);
/* The units' numbers: the rest of the header after the table */
#define SHADOW_META_SEQS_OFFSET \
    (SHADOW_META_TABLE_OFFSET + SHADOW_META_SLOTS * sizeof(ShadowMetaSlotDisk))
QEMU_BUILD_BUG_ON(SHADOW_META_SEQS_OFFSET + SHADOW_META_SEQS_BYTES !=
                  SHADOW_META_HEADER_SIZE);
/* hbitmap (de)serialisation works on 64-bit words */
QEMU_BUILD_BUG_ON(SHADOW_META_UNIT_CHUNKS % 64);

typedef enum ShadowUnitCheck {
    SHADOW_UNIT_EMPTY,      /* never written, or left by an older epoch */
    SHADOW_UNIT_OK,
    SHADOW_UNIT_BAD,        /* checksum or placement wrong */
} ShadowUnitCheck;

const char *shadow_meta_name(BDRVShadowState *s)
{
    return bdrv_get_node_name(s->meta.child->bs);
}

int64_t shadow_meta_nb_units(int64_t nb_chunks)
{
    return DIV_ROUND_UP(nb_chunks, SHADOW_META_UNIT_CHUNKS);
}

/*
 * Where unit @index of @column is: the intent map has one copy; a valid
 * map's version @seq is in copy @seq % 2
 */
int64_t shadow_meta_unit_offset(int64_t index, int column, uint64_t seq)
{
    int pos = column ? 1 + 2 * (column - 1) + (seq & 1) : 0;

    return SHADOW_META_ROWS_OFFSET +
           (index * SHADOW_META_ROW_UNITS + pos) * SHADOW_META_UNIT;
}

/* Bytes the metadata node needs for a disk of @nb_chunks chunks */
int64_t shadow_meta_size(int64_t nb_chunks)
{
    return shadow_meta_unit_offset(shadow_meta_nb_units(nb_chunks), 0, 0);
}

/*
 * Identity
 */

/* The node that stores @bs's data: below its filters and formats */
BlockDriverState *shadow_storage_leaf(BlockDriverState *bs)
{
    for (;;) {
        bs = bdrv_skip_filters(bs) ?: bs;
        if (!bs->file) {
            return bs;
        }
        bs = bs->file->bs;
    }
}

/*
 * What identifies @bs's storage: the SHA-256 of its filename, which
 * survives renaming nodes and adding or removing filters such as
 * throttle; and for a local file its inode number and birth time, which
 * a new file at the same path does not share, and its size and ctime,
 * which tell whether it was written while the node did not hold it.
 */
int shadow_meta_identify(BlockDriverState *bs, ShadowIdentity *id)
{
    BlockDriverState *leaf = shadow_storage_leaf(bs);
    const char *name;

    if (qemu_in_main_thread() &&
        (!leaf->drv || strcmp(leaf->drv->format_name, "file"))) {
        /*
         * A file's name is its path; other nodes' names (json:{...}) are
         * made when asked for, and may differ until then
         */
        bdrv_refresh_filename(leaf);
    }
    name = leaf->filename[0] ? leaf->filename : bdrv_get_node_name(leaf);
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = sizeof(id->hash);

    memset(id, 0, sizeof(*id));
    g_checksum_update(sum, (const guchar *)name, strlen(name));
    g_checksum_get_digest(sum, id->hash, &len);
    id->filename = name;

    if (!leaf->drv || strcmp(leaf->drv->format_name, "file")) {
        return 0;
    }
#if defined(CONFIG_LINUX) && defined(STATX_BTIME)
    {
        struct statx stx;

        if (statx(AT_FDCWD, name, 0, STATX_INO | STATX_SIZE | STATX_CTIME |
                  STATX_BTIME, &stx) < 0) {
            return -errno;
        }
        id->have_stat = true;
        id->ino = stx.stx_ino;
        id->size = stx.stx_size;
        id->ctime_sec = stx.stx_ctime.tv_sec;
        id->ctime_nsec = stx.stx_ctime.tv_nsec;
        if (stx.stx_mask & STATX_BTIME) {
            id->have_btime = true;
            id->btime_sec = stx.stx_btime.tv_sec;
            id->btime_nsec = stx.stx_btime.tv_nsec;
        }
    }
#else
    {
        struct stat st;

        if (stat(name, &st) < 0) {
            return -errno;
        }
        id->have_stat = true;
        id->ino = st.st_ino;
        id->size = st.st_size;
        id->ctime_sec = st.st_ctim.tv_sec;
        id->ctime_nsec = st.st_ctim.tv_nsec;
    }
#endif
    return 0;
}

/*
 * Header and slot table
 */

static void shadow_meta_slot_to_disk(const ShadowSlot *slot,
                                     ShadowMetaSlotDisk *d)
{
    uint32_t flags = SHADOW_META_SLOT_USED;

    memset(d, 0, sizeof(*d));
    if (!slot->used) {
        return;
    }
    if (slot->id.have_stat) {
        flags |= SHADOW_META_SLOT_STAT;
        d->ino = cpu_to_le64(slot->id.ino);
    }
    if (slot->id.have_btime) {
        flags |= SHADOW_META_SLOT_BTIME;
        d->btime_sec = cpu_to_le64(slot->id.btime_sec);
        d->btime_nsec = cpu_to_le32(slot->id.btime_nsec);
    }
    if (slot->stamped) {
        flags |= SHADOW_META_SLOT_STAMPED;
        d->size = cpu_to_le64(slot->id.size);
        d->ctime_sec = cpu_to_le64(slot->id.ctime_sec);
        d->ctime_nsec = cpu_to_le32(slot->id.ctime_nsec);
    }
    if (slot->seq_sum_known) {
        flags |= SHADOW_META_SLOT_SEQ_SUM;
        d->seq_sum = cpu_to_le32(slot->seq_sum);
    }
    d->flags = cpu_to_le32(flags);
    d->epoch = cpu_to_le64(slot->epoch);
    memcpy(d->identity, slot->id.hash, sizeof(d->identity));
    strncpy(d->node_name, slot->node_name, sizeof(d->node_name));
    strncpy(d->filename, slot->filename, sizeof(d->filename));
}

static void shadow_meta_slot_from_disk(const ShadowMetaSlotDisk *d,
                                       ShadowSlot *slot)
{
    uint32_t flags = le32_to_cpu(d->flags);

    memset(slot, 0, sizeof(*slot));
    slot->used = flags & SHADOW_META_SLOT_USED;
    if (!slot->used) {
        return;
    }
    slot->epoch = le64_to_cpu(d->epoch);
    memcpy(slot->id.hash, d->identity, sizeof(slot->id.hash));
    slot->id.have_stat = flags & SHADOW_META_SLOT_STAT;
    slot->id.ino = le64_to_cpu(d->ino);
    slot->id.have_btime = flags & SHADOW_META_SLOT_BTIME;
    slot->id.btime_sec = le64_to_cpu(d->btime_sec);
    slot->id.btime_nsec = le32_to_cpu(d->btime_nsec);
    slot->stamped = flags & SHADOW_META_SLOT_STAMPED;
    slot->seq_sum_known = flags & SHADOW_META_SLOT_SEQ_SUM;
    slot->seq_sum = le32_to_cpu(d->seq_sum);
    slot->id.size = le64_to_cpu(d->size);
    slot->id.ctime_sec = le64_to_cpu(d->ctime_sec);
    slot->id.ctime_nsec = le32_to_cpu(d->ctime_nsec);
    memcpy(slot->node_name, d->node_name,
           MIN(sizeof(slot->node_name) - 1, sizeof(d->node_name)));
    memcpy(slot->filename, d->filename,
           MIN(sizeof(slot->filename) - 1, sizeof(d->filename)));
}

/* Write @img to the header copy not written last, with FUA */
int shadow_meta_write_header(BDRVShadowState *s, const ShadowMetaImage *img)
{
    ShadowMeta *m = &s->meta;
    uint8_t *buf = qemu_blockalign0(m->child->bs, SHADOW_META_HEADER_SIZE);
    ShadowMetaHeader *h = (ShadowMetaHeader *)buf;
    ShadowMetaSlotDisk *table =
        (ShadowMetaSlotDisk *)(buf + SHADOW_META_TABLE_OFFSET);
    int copy = m->header_copy ^ 1;
    int i, ret;

    memcpy(h->magic, SHADOW_META_MAGIC, sizeof(h->magic));
    h->version = cpu_to_le32(SHADOW_META_VERSION);
    h->header_size = cpu_to_le32(SHADOW_META_HEADER_SIZE);
    h->generation = cpu_to_le64(m->generation + 1);
    h->flags = cpu_to_le64((img->in_use ? SHADOW_META_IN_USE : 0) |
                           SHADOW_META_UNIQUE_SEQ |
                           (img->unit_seqs_known && !img->in_use ?
                            SHADOW_META_UNIT_SEQS : 0));
    h->chunk_size = cpu_to_le64(img->chunk_size);
    h->length = cpu_to_le64(img->length);
    h->nb_chunks = cpu_to_le64(img->nb_chunks);
    h->nb_slots = cpu_to_le32(SHADOW_META_SLOTS);
    h->active_slot = cpu_to_le32(img->active_slot);
    h->session = cpu_to_le64(img->session);
    h->rows_offset = cpu_to_le64(SHADOW_META_ROWS_OFFSET);
    h->unit_size = cpu_to_le32(SHADOW_META_UNIT);
    h->unit_chunks = cpu_to_le32(SHADOW_META_UNIT_CHUNKS);
    h->table_offset = cpu_to_le32(SHADOW_META_TABLE_OFFSET);
    for (i = 0; i < SHADOW_META_SLOTS; i++) {
        shadow_meta_slot_to_disk(&img->slots[i], &table[i]);
    }
    if (img->unit_seqs_known && !img->in_use) {
        memcpy(buf + SHADOW_META_SEQS_OFFSET, img->unit_seqs,
               SHADOW_META_SEQS_BYTES);
    }
    h->crc = cpu_to_le32(crc32c(0xffffffff, buf, SHADOW_META_HEADER_SIZE));

    ret = bdrv_pwrite(m->child, copy * SHADOW_META_HEADER_SIZE,
                      SHADOW_META_HEADER_SIZE, buf, BDRV_REQ_FUA);
    qemu_vfree(buf);
    if (ret == 0) {
        m->generation++;
        m->header_copy = copy;
    }
    return ret;
}

/* Whether @buf holds a header copy of this version that is intact */
static bool shadow_meta_header_ok(uint8_t *buf)
{
    ShadowMetaHeader *h = (ShadowMetaHeader *)buf;
    uint32_t crc = le32_to_cpu(h->crc);
    bool ok;

    if (memcmp(h->magic, SHADOW_META_MAGIC, sizeof(h->magic)) ||
        le32_to_cpu(h->version) != SHADOW_META_VERSION) {
        return false;
    }
    h->crc = 0;
    ok = crc32c(0xffffffff, buf, SHADOW_META_HEADER_SIZE) == crc;
    h->crc = cpu_to_le32(crc);
    return ok;
}

/* Whether the header's layout is the one this code writes */
static int shadow_meta_check_layout(BDRVShadowState *s,
                                    const ShadowMetaHeader *h, Error **errp)
{
    if (le32_to_cpu(h->header_size) != SHADOW_META_HEADER_SIZE ||
        le32_to_cpu(h->nb_slots) != SHADOW_META_SLOTS ||
        le64_to_cpu(h->rows_offset) != SHADOW_META_ROWS_OFFSET ||
        le32_to_cpu(h->unit_size) != SHADOW_META_UNIT ||
        le32_to_cpu(h->unit_chunks) != SHADOW_META_UNIT_CHUNKS ||
        le32_to_cpu(h->table_offset) != SHADOW_META_TABLE_OFFSET ||
        le32_to_cpu(h->active_slot) >= SHADOW_META_SLOTS ||
        le64_to_cpu(h->chunk_size) == 0 ||
        le64_to_cpu(h->length) > BDRV_MAX_LENGTH ||
        le64_to_cpu(h->nb_chunks) !=
            DIV_ROUND_UP(le64_to_cpu(h->length), le64_to_cpu(h->chunk_size))) {
        error_setg(errp, "shadow: metadata node '%s' is corrupt: its header "
                   "describes a layout this format does not have",
                   shadow_meta_name(s));
        return -EINVAL;
    }
    return 0;
}

/*
 * Read the current header copy into @img, with the first rows of maps
 * unless @header_only.  *@fresh: the node is all zeroes and no metadata
 * was ever written (@img is left alone).
 */
int shadow_meta_read_header(BDRVShadowState *s, ShadowMetaImage *img,
                            bool header_only, bool *fresh, Error **errp)
{
    ShadowMeta *m = &s->meta;
    int64_t row_bytes = SHADOW_META_ROW_UNITS * SHADOW_META_UNIT;
    int64_t len = bdrv_getlength(m->child->bs);
    int64_t nb_rows = len < 0 || header_only ? 0 :
                      MIN(SHADOW_META_HEADER_ROWS,
                          (len - SHADOW_META_ROWS_OFFSET) / row_bytes);
    int64_t bytes = SHADOW_META_ROWS_OFFSET + MAX(nb_rows, 0) * row_bytes;
    uint8_t *buf = qemu_blockalign(m->child->bs, bytes);
    ShadowMetaHeader *h;
    ShadowMetaSlotDisk *table;
    int ret, i, best = -1;

    memset(img, 0, sizeof(*img));
    *fresh = false;
    /*
     * The first rows of maps come with the header, in one read: a
     * migration's destination waits for the load with the guest stopped
     */
    ret = bdrv_pread(m->child, 0, bytes, buf, 0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "shadow: cannot read metadata node '%s'",
                         shadow_meta_name(s));
        goto out;
    }
    for (i = 0; i < 2; i++) {
        ShadowMetaHeader *b = (ShadowMetaHeader *)
                              (buf + MAX(best, 0) * SHADOW_META_HEADER_SIZE);

        h = (ShadowMetaHeader *)(buf + i * SHADOW_META_HEADER_SIZE);
        if (shadow_meta_header_ok((uint8_t *)h) &&
            (best < 0 ||
             le64_to_cpu(h->generation) > le64_to_cpu(b->generation))) {
            best = i;
        }
    }
    if (best < 0) {
        ret = -EINVAL;
        for (i = 0; i < 2; i++) {
            h = (ShadowMetaHeader *)(buf + i * SHADOW_META_HEADER_SIZE);
            if (!memcmp(h->magic, SHADOW_META_MAGIC, sizeof(h->magic)) &&
                le32_to_cpu(h->version) != SHADOW_META_VERSION) {
                error_setg(errp, "shadow: metadata node '%s' has format "
                           "version %u; this QEMU reads version %d only.  To "
                           "start over, give a zeroed metadata image (every "
                           "shadow is then copied again)",
                           shadow_meta_name(s), le32_to_cpu(h->version),
                           SHADOW_META_VERSION);
                ret = -ENOTSUP;
                goto out;
            }
        }
        if (!memcmp(buf, SHADOW_META_MAGIC, 8) ||
            !memcmp(buf + SHADOW_META_HEADER_SIZE, SHADOW_META_MAGIC, 8)) {
            error_setg(errp, "shadow: metadata node '%s' is corrupt: no "
                       "header copy passes its checksum",
                       shadow_meta_name(s));
        } else if (buffer_is_zero(buf, 2 * SHADOW_META_HEADER_SIZE)) {
            *fresh = true;
            ret = 0;
        } else {
            error_setg(errp, "shadow: metadata node '%s' does not hold shadow "
                       "metadata (no '%s' magic); to start new metadata, "
                       "give an image filled with zeroes",
                       shadow_meta_name(s), SHADOW_META_MAGIC);
        }
        goto out;
    }

    h = (ShadowMetaHeader *)(buf + best * SHADOW_META_HEADER_SIZE);
    ret = shadow_meta_check_layout(s, h, errp);
    if (ret < 0) {
        goto out;
    }
    m->header_copy = best;
    m->generation = le64_to_cpu(h->generation);
    img->generation = m->generation;
    img->in_use = le64_to_cpu(h->flags) & SHADOW_META_IN_USE;
    img->unique_seq = le64_to_cpu(h->flags) & SHADOW_META_UNIQUE_SEQ;
    img->unit_seqs_known = !img->in_use &&
        (le64_to_cpu(h->flags) & SHADOW_META_UNIT_SEQS);
    if (img->unit_seqs_known) {
        memcpy(img->unit_seqs, (uint8_t *)h + SHADOW_META_SEQS_OFFSET,
               SHADOW_META_SEQS_BYTES);
    }
    img->chunk_size = le64_to_cpu(h->chunk_size);
    img->length = le64_to_cpu(h->length);
    img->nb_chunks = le64_to_cpu(h->nb_chunks);
    img->active_slot = le32_to_cpu(h->active_slot);
    img->session = le64_to_cpu(h->session);
    table = (ShadowMetaSlotDisk *)((uint8_t *)h + SHADOW_META_TABLE_OFFSET);
    for (i = 0; i < SHADOW_META_SLOTS; i++) {
        shadow_meta_slot_from_disk(&table[i], &img->slots[i]);
    }
    img->buf = buf;
    img->rows = buf + SHADOW_META_ROWS_OFFSET;
    img->nb_rows = MAX(nb_rows, 0);
    return 0;
out:
    qemu_vfree(buf);
    return ret < 0 ? ret : 0;
}

/*
 * How many low bits of each unit's number @img's list holds: the most of
 * 16, 8, 4, 2 and 1 with which the numbers of every used slot fit after
 * the list's first byte (which says it); 0 if not even one bit does.
 * The list's header must have its geometry and slots.
 */
int shadow_meta_seq_bits(const ShadowMetaImage *img)
{
    int64_t entries = 0;
    int bits, j;

    for (j = 0; j < SHADOW_META_SLOTS; j++) {
        if (img->slots[j].used) {
            entries += shadow_meta_nb_units(img->nb_chunks);
        }
    }
    for (bits = 16; bits; bits /= 2) {
        if (entries * bits <= (SHADOW_META_SEQS_BYTES - 1) * 8) {
            return bits;
        }
    }
    return 0;
}

/*
 * Where in @img's list the number of @slot's unit @u starts, in bits
 * from the start of the entries; -1 if @slot is not used
 */
static int64_t shadow_meta_seq_pos(const ShadowMetaImage *img, int slot,
                                   int64_t u, int bits)
{
    int64_t before = 0;
    int j;

    if (!img->slots[slot].used) {
        return -1;
    }
    for (j = 0; j < slot; j++) {
        before += img->slots[j].used;
    }
    return (before * shadow_meta_nb_units(img->nb_chunks) + u) * bits;
}

/*
 * Start @img's list of unit numbers (it must have its geometry and
 * slots); false if no number fits in it
 */
bool shadow_meta_list_seqs(ShadowMetaImage *img)
{
    int bits = shadow_meta_seq_bits(img);

    memset(img->unit_seqs, 0, sizeof(img->unit_seqs));
    img->unit_seqs[0] = bits;
    img->unit_seqs_known = bits > 0;
    return img->unit_seqs_known;
}

/* List in @img the low bits of @seq as the number of @slot's unit @u */
void shadow_meta_list_seq(ShadowMetaImage *img, int slot, int64_t u,
                          uint64_t seq)
{
    int bits = img->unit_seqs[0];
    int64_t pos = shadow_meta_seq_pos(img, slot, u, bits);
    uint8_t *entries = img->unit_seqs + 1;
    int k;

    if (!img->unit_seqs_known || pos < 0) {
        return;     /* (the caller lists used slots only) */
    }
    for (k = 0; k < bits; k++) {
        if (seq & (1ull << k)) {
            entries[(pos + k) / 8] |= 1u << ((pos + k) % 8);
        }
    }
}

/*
 * The low bits of the number of @slot's unit @u as @img lists it, into
 * *@low, and how many they are; 0 if @img has no valid list for @slot
 * (the count it says is not the one its geometry and slots give)
 */
int shadow_meta_listed_seq(const ShadowMetaImage *img, int slot, int64_t u,
                           uint64_t *low)
{
    int bits = img->unit_seqs[0];
    int64_t pos;
    const uint8_t *entries = img->unit_seqs + 1;
    int k;

    if (!img->unit_seqs_known || bits != shadow_meta_seq_bits(img) ||
        !bits || u >= shadow_meta_nb_units(img->nb_chunks)) {
        return 0;
    }
    pos = shadow_meta_seq_pos(img, slot, u, bits);
    if (pos < 0) {
        return 0;
    }
    *low = 0;
    for (k = 0; k < bits; k++) {
        if (entries[(pos + k) / 8] & (1u << ((pos + k) % 8))) {
            *low |= 1ull << k;
        }
    }
    return bits;
}

/* Free what shadow_meta_read_header() read besides the header */
void shadow_meta_image_cleanup(ShadowMetaImage *img)
{
    qemu_vfree(img->buf);
    img->buf = img->rows = NULL;
    img->nb_rows = 0;
}

/*
 * Units
 */

/* Fill @unit (SHADOW_META_UNIT bytes) with its header and @payload */
void shadow_meta_encode_unit(uint8_t *unit, int column, uint64_t epoch,
                             int64_t index, uint64_t seq,
                             const uint8_t *payload)
{
    ShadowMetaUnitHeader *h = (ShadowMetaUnitHeader *)unit;

    memset(h, 0, sizeof(*h));
    h->column = cpu_to_le32(column);
    h->epoch = cpu_to_le64(epoch);
    h->index = cpu_to_le64(index);
    h->seq = cpu_to_le64(seq);
    memcpy(unit + SHADOW_META_UNIT_HEADER, payload, SHADOW_META_UNIT_PAYLOAD);
    h->crc = cpu_to_le32(crc32c(0xffffffff, unit, SHADOW_META_UNIT));
}

static ShadowUnitCheck shadow_meta_check_unit(uint8_t *unit, int column,
                                              uint64_t epoch, int64_t index,
                                              uint64_t *seq)
{
    ShadowMetaUnitHeader *h = (ShadowMetaUnitHeader *)unit;
    uint32_t crc = le32_to_cpu(h->crc);
    uint32_t actual;

    if (buffer_is_zero(unit, SHADOW_META_UNIT)) {
        return SHADOW_UNIT_EMPTY;
    }
    h->crc = 0;
    actual = crc32c(0xffffffff, unit, SHADOW_META_UNIT);
    h->crc = cpu_to_le32(crc);
    if (actual != crc || le32_to_cpu(h->column) != column ||
        le64_to_cpu(h->index) != index) {
        return SHADOW_UNIT_BAD;
    }
    *seq = le64_to_cpu(h->seq);
    return le64_to_cpu(h->epoch) == epoch ? SHADOW_UNIT_OK
                                          : SHADOW_UNIT_EMPTY;
}

/*
 * Which copy of a valid map's unit holds its current version, from what
 * the two copies hold (@res, with sequence numbers @seq); -1 for none
 * (empty, or bad: *@bad says which).  After a crash (@torn_ok) the newest
 * intact copy is current: the other may be a write the crash tore.  After
 * a clean stop nothing was torn, and a copy that fails its check is
 * corruption: the whole unit is then bad, never an older version.
 */
static int shadow_meta_pick_copy(const ShadowUnitCheck *res,
                                 const uint64_t *seq, bool torn_ok,
                                 bool *bad)
{
    bool ok0 = res[0] == SHADOW_UNIT_OK, ok1 = res[1] == SHADOW_UNIT_OK;

    *bad = res[0] == SHADOW_UNIT_BAD || res[1] == SHADOW_UNIT_BAD;
    if (*bad && !torn_ok) {
        return -1;
    }
    if (ok0 || ok1) {
        *bad = false;
        return ok0 && (!ok1 || seq[0] > seq[1]) ? 0 : 1;
    }
    return -1;
}

/*
 * Reading rows of maps.  A load needs only its columns' units (two
 * children with metadata: 4 or 5 of a row's 33), and on a large disk
 * reading whole rows is most of an activation's time, which a migrating
 * guest waits for.  When the units it needs are under half a row, each
 * row's span of them is read on its own into @buf, one span after the
 * other (shadow_rows_stride()), SHADOW_META_READ_WORKERS reads in
 * flight; else whole rows, in one read.
 */
#define SHADOW_META_READ_WORKERS 8

typedef struct ShadowRowsRead {
    BdrvChild *child;
    int64_t first_row;
    int64_t rows;
    int first_pos;              /* the span: units [first_pos, end_pos) */
    int end_pos;
    uint8_t *buf;
    int ret;
    bool done;
} ShadowRowsRead;

/* Whether the rows' spans are read, rather than whole rows */
static bool shadow_rows_by_span(int first_pos, int end_pos)
{
    return end_pos - first_pos <= SHADOW_META_ROW_UNITS / 2;
}

/*
 * A buffer of rows holds each row's span, or the whole row: the bytes
 * from one row to the next there, and the offset in the row of what a
 * row's first byte there is
 */
static int64_t shadow_rows_stride(int first_pos, int end_pos)
{
    return (shadow_rows_by_span(first_pos, end_pos) ?
            end_pos - first_pos : SHADOW_META_ROW_UNITS) * SHADOW_META_UNIT;
}

static int64_t shadow_rows_skip(int first_pos, int end_pos)
{
    return shadow_rows_by_span(first_pos, end_pos) ?
           first_pos * SHADOW_META_UNIT : 0;
}

typedef struct ShadowRowTask {
    AioTask task;               /* first: the pool frees it */
    BdrvChild *child;
    int64_t offset;
    int64_t bytes;
    uint8_t *buf;
} ShadowRowTask;

/* As qcow2's tasks: the graph lock is the caller's, who waits for them */
static int coroutine_fn GRAPH_RDLOCK shadow_meta_row_task(AioTask *task)
{
    ShadowRowTask *t = container_of(task, ShadowRowTask, task);

    return bdrv_co_pread(t->child, t->offset, t->bytes, t->buf, 0);
}

static int coroutine_fn GRAPH_RDLOCK
shadow_meta_co_read_rows(ShadowRowsRead *r)
{
    int64_t stride = shadow_rows_stride(r->first_pos, r->end_pos);
    int64_t skip = shadow_rows_skip(r->first_pos, r->end_pos);
    AioTaskPool *pool;
    int64_t i;
    int ret;

    if (r->end_pos <= r->first_pos) {
        return 0;       /* no column wanted */
    }
    if (!shadow_rows_by_span(r->first_pos, r->end_pos)) {
        return bdrv_co_pread(r->child,
                             shadow_meta_unit_offset(r->first_row, 0, 0),
                             r->rows * stride, r->buf, 0);
    }
    pool = aio_task_pool_new(SHADOW_META_READ_WORKERS);
    for (i = 0; i < r->rows && aio_task_pool_status(pool) == 0; i++) {
        ShadowRowTask *t = g_new(ShadowRowTask, 1);

        *t = (ShadowRowTask) {
            .task.func = shadow_meta_row_task,
            .child = r->child,
            .offset = shadow_meta_unit_offset(r->first_row + i, 0, 0) + skip,
            .bytes = stride,
            .buf = r->buf + i * stride,
        };
        aio_task_pool_start_task(pool, &t->task);
    }
    aio_task_pool_wait_all(pool);
    ret = aio_task_pool_status(pool);
    aio_task_pool_free(pool);
    return ret;
}

static void coroutine_fn shadow_meta_read_rows_entry(void *opaque)
{
    ShadowRowsRead *r = opaque;

    bdrv_graph_co_rdlock();
    r->ret = shadow_meta_co_read_rows(r);
    bdrv_graph_co_rdunlock();
    r->done = true;
    aio_wait_kick();
}

/*
 * Read what @r says into its buffer; in or out of a coroutine, in the
 * shape of a co_wrapper_mixed_bdrv_rdlock wrapper such as bdrv_pread()
 */
static int GRAPH_RDLOCK shadow_meta_read_rows(ShadowRowsRead *r)
{
    if (qemu_in_coroutine()) {
        /* An activation: the caller holds the graph's read lock */
        return shadow_meta_co_read_rows(r);
    }
    aio_co_enter(bdrv_get_aio_context(r->child->bs),
                 qemu_coroutine_create(shadow_meta_read_rows_entry, r));
    BDRV_POLL_WHILE(r->child->bs, !r->done);
    return r->ret;
}

/*
 * Read the maps of every column @want says (a bit per column) of @img
 * (the rows shadow_meta_read_header() read, then the metadata node), in
 * the rows (units) set in @rows_wanted (and any rows read with the
 * header), or if NULL in every row, into
 * @bits[column] (SHADOW_META_UNIT_PAYLOAD bytes per unit, as many units
 * as @img's chunks need), each checked against @epochs[column]; for the
 * valid maps, the sequence number of each unit's current version into
 * @seqs[column] (or of its newest intact copy).  An empty unit or one of
 * another epoch reads as zeroes; a unit that fails its check reads as
 * ones in the columns of @bad_is_set, else as zeroes, and is counted in
 * @bad_units[column].  @torn_ok: see shadow_meta_pick_copy(); a valid
 * map's unit read from one copy while the other failed its check is set
 * in @torn[column] (a bitmap of units).  Bits past the last chunk are
 * zero; the columns that had some are set in @past_end.
 */
int shadow_meta_read_maps(BDRVShadowState *s, const ShadowMetaImage *img,
                          const unsigned long *rows_wanted,
                          uint32_t want, const uint64_t *epochs,
                          bool torn_ok, uint8_t **bits, uint64_t **seqs,
                          unsigned long **torn, uint32_t bad_is_set,
                          int64_t *bad_units, uint32_t *past_end)
{
    ShadowMeta *m = &s->meta;
    int64_t nb_chunks = img->nb_chunks;
    int64_t nb_units = shadow_meta_nb_units(nb_chunks);
    int64_t row_bytes = SHADOW_META_ROW_UNITS * SHADOW_META_UNIT;
    uint8_t *read_buf = NULL, *buf;
    ShadowRowsRead rr;
    int64_t u, b, rows, stride, skip;
    int ret = 0, col, first_pos = SHADOW_META_ROW_UNITS, end_pos = 0;

    for (col = 0; col < SHADOW_META_COLUMNS; col++) {
        bad_units[col] = 0;
        if (want & (1u << col)) {
            int pos = shadow_meta_unit_offset(0, col, 0) / SHADOW_META_UNIT -
                      SHADOW_META_ROWS_OFFSET / SHADOW_META_UNIT;

            first_pos = MIN(first_pos, pos);
            end_pos = MAX(end_pos, pos + (col ? 2 : 1));
        }
    }
    if (end_pos <= first_pos) {
        return 0;       /* no column wanted */
    }
    for (u = 0; u < nb_units; u += rows) {
        if (rows_wanted) {
            u = find_next_bit(rows_wanted, nb_units, u);
            if (u >= nb_units) {
                break;
            }
        }
        if (u < img->nb_rows) {
            /* Whole rows, read with the header */
            rows = MIN(img->nb_rows, nb_units) - u;
            buf = img->rows + u * row_bytes;
            stride = row_bytes;
            skip = 0;
        } else {
            rows = MIN(SHADOW_META_LOAD_ROWS, nb_units - u);
            if (rows_wanted) {
                /* The wanted rows from @u on, those alone */
                rows = MIN(rows,
                           find_next_zero_bit(rows_wanted, nb_units, u) - u);
            }
            stride = shadow_rows_stride(first_pos, end_pos);
            skip = shadow_rows_skip(first_pos, end_pos);
            if (!read_buf) {
                /* No batch is longer */
                read_buf = qemu_blockalign(m->child->bs,
                                           MIN(SHADOW_META_LOAD_ROWS,
                                               nb_units) * stride);
            }
            buf = read_buf;
            rr = (ShadowRowsRead) {
                .child = m->child,
                .first_row = u,
                .rows = rows,
                .first_pos = first_pos,
                .end_pos = end_pos,
                .buf = buf,
            };
            ret = shadow_meta_read_rows(&rr);
            if (ret < 0) {
                break;
            }
        }
        for (col = 0; col < SHADOW_META_COLUMNS; col++) {
            int64_t r;

            if (!(want & (1u << col))) {
                continue;
            }
            for (r = 0; r < rows; r++) {
                uint8_t *row = buf + r * stride;
                uint8_t *payload = bits[col] +
                                   (u + r) * SHADOW_META_UNIT_PAYLOAD;
                uint8_t *unit[2];
                ShadowUnitCheck res[2] = { SHADOW_UNIT_EMPTY,
                                           SHADOW_UNIT_EMPTY };
                uint64_t seq[2] = { 0, 0 };
                bool bad;
                int c, pick;

                for (c = 0; c < (col ? 2 : 1); c++) {
                    unit[c] = row + (shadow_meta_unit_offset(0, col, c) -
                                     SHADOW_META_ROWS_OFFSET - skip);
                    res[c] = shadow_meta_check_unit(unit[c], col, epochs[col],
                                                    u + r, &seq[c]);
                }
                if (col) {
                    pick = shadow_meta_pick_copy(res, seq, torn_ok, &bad);
                    if (pick >= 0 && res[pick ^ 1] == SHADOW_UNIT_BAD) {
                        set_bit(u + r, torn[col]);
                    }
                    seqs[col][u + r] = MAX(res[0] == SHADOW_UNIT_OK ?
                                           seq[0] : 0,
                                           res[1] == SHADOW_UNIT_OK ?
                                           seq[1] : 0);
                } else {
                    pick = res[0] == SHADOW_UNIT_OK ? 0 : -1;
                    bad = res[0] == SHADOW_UNIT_BAD;
                }
                if (pick >= 0) {
                    memcpy(payload, unit[pick] + SHADOW_META_UNIT_HEADER,
                           SHADOW_META_UNIT_PAYLOAD);
                } else {
                    memset(payload,
                           bad && (bad_is_set & (1u << col)) ? 0xff : 0,
                           SHADOW_META_UNIT_PAYLOAD);
                    bad_units[col] += bad;
                }
            }
        }
    }
    for (col = 0; ret >= 0 && col < SHADOW_META_COLUMNS; col++) {
        if (!(want & (1u << col))) {
            continue;
        }
        for (b = nb_chunks; b < nb_units * SHADOW_META_UNIT_CHUNKS; b++) {
            if (bits[col][b / 8] & (1u << (b % 8))) {
                *past_end |= 1u << col;
            }
            bits[col][b / 8] &= ~(1u << (b % 8));
        }
    }
    qemu_vfree(read_buf);
    return ret < 0 ? ret : 0;
}

/*
 * Grow the metadata node, if needed, to hold maps of @nb_chunks chunks;
 * in or out of a coroutine
 */
int shadow_meta_ensure_size(BDRVShadowState *s, int64_t nb_chunks,
                            Error **errp)
{
    ShadowMeta *m = &s->meta;
    int64_t need = shadow_meta_size(nb_chunks);
    int64_t size = bdrv_getlength(m->child->bs);
    int ret;

    if (size < 0) {
        error_setg_errno(errp, -size, "shadow: cannot get the length of "
                         "metadata node '%s'", shadow_meta_name(s));
        return size;
    }
    if (size >= need) {
        return 0;
    }
    ret = bdrv_truncate(m->child, need, false, PREALLOC_MODE_OFF, 0, errp);
    if (ret < 0) {
        error_prepend(errp, "shadow: metadata node '%s' has %" PRId64
                      " bytes, the maps need %" PRId64 ", and it cannot "
                      "grow: ", shadow_meta_name(s), size, need);
    }
    return ret;
}

/*
 * Zero the rows that a disk growing from @old_nb to @nb_chunks chunks
 * adds.  A grow that crashed before its header may have written units
 * there, with sequence numbers this one's would not pass; zeroed, they
 * read as never written.  The flush of a commit's first phase makes this
 * durable before any header records the new length.
 */
int coroutine_fn shadow_meta_zero_rows(BDRVShadowState *s, int64_t old_nb,
                                       int64_t nb_chunks, Error **errp)
{
    ShadowMeta *m = &s->meta;
    int64_t first = shadow_meta_nb_units(old_nb);
    int64_t end = shadow_meta_nb_units(nb_chunks);
    int64_t offset = shadow_meta_unit_offset(first, 0, 0);
    int ret;

    if (end <= first) {
        return 0;
    }
    ret = bdrv_co_pwrite_zeroes(m->child, offset,
                                shadow_meta_unit_offset(end, 0, 0) - offset,
                                0);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "shadow: cannot clear the new rows of "
                         "metadata node '%s'", shadow_meta_name(s));
    }
    return ret;
}
