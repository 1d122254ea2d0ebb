/*
 * Unit tests of the shadow block driver that need control over a child's
 * timing, which no real driver gives: a guest that changes its buffer
 * while a sync write is in flight must not make the children differ.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "block/block_int.h"
#include "system/block-backend.h"
#include "qapi/error.h"
#include "qobject/qdict.h"
#include "qemu/main-loop.h"
#include "qemu/memalign.h"
#include "qemu/units.h"
#include "block/shadow.h"

#define REC_SIZE    (1 * MiB)
#define REC_BYTES   4096

/* A child that records what it was asked to write; a slow one looks late */
typedef struct BDRVRecState {
    uint8_t data[REC_BYTES];
    bool slow;
    bool started;
    bool done;
} BDRVRecState;

static int rec_open(BlockDriverState *bs, QDict *options, int flags,
                    Error **errp)
{
    BDRVRecState *s = bs->opaque;

    s->slow = qdict_get_try_bool(options, "slow", false);
    qdict_del(options, "slow");
    bs->total_sectors = REC_SIZE / BDRV_SECTOR_SIZE;
    return 0;
}

static int coroutine_fn rec_co_preadv(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, QEMUIOVector *qiov,
                                      BdrvRequestFlags flags)
{
    qemu_iovec_memset(qiov, 0, 0, bytes);
    return 0;
}

static int coroutine_fn rec_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, QEMUIOVector *qiov,
                                       BdrvRequestFlags flags)
{
    BDRVRecState *s = bs->opaque;

    s->started = true;
    if (s->slow) {
        /* The guest changes its buffer meanwhile */
        qemu_co_sleep_ns(QEMU_CLOCK_REALTIME, 20 * SCALE_MS);
    }
    qemu_iovec_to_buf(qiov, 0, s->data, MIN(bytes, REC_BYTES));
    s->done = true;
    return 0;
}

static int coroutine_fn rec_co_flush(BlockDriverState *bs)
{
    return 0;
}

static int64_t coroutine_fn rec_co_getlength(BlockDriverState *bs)
{
    return REC_SIZE;
}

static BlockDriver bdrv_rec = {
    .format_name            = "shadow-test-rec",
    .instance_size          = sizeof(BDRVRecState),
    .bdrv_open              = rec_open,
    .bdrv_co_preadv         = rec_co_preadv,
    .bdrv_co_pwritev        = rec_co_pwritev,
    .bdrv_co_flush_to_disk  = rec_co_flush,
    .bdrv_co_getlength      = rec_co_getlength,
    .bdrv_child_perm        = bdrv_default_perms,
};

static BlockDriverState *rec_node(const char *name, bool slow)
{
    QDict *opts = qdict_new();

    qdict_put_str(opts, "driver", "shadow-test-rec");
    qdict_put_str(opts, "node-name", name);
    qdict_put_bool(opts, "slow", slow);
    return bdrv_open(NULL, NULL, opts, BDRV_O_RDWR, &error_abort);
}

typedef struct WriteDone {
    bool done;
    int ret;
} WriteDone;

static void write_cb(void *opaque, int ret)
{
    WriteDone *w = opaque;

    w->ret = ret;
    w->done = true;
}

/*
 * A sync write to two children, the second one slow; the guest changes
 * its buffer once the fast one has its copy.  With the buffer copied
 * (@bounce), both children get what the guest asked to write.
 */
static void test_buffer_changed_in_flight(const void *opaque)
{
    bool bounce = GPOINTER_TO_INT(opaque);
    BlockDriverState *fast = rec_node("fast", false);
    BlockDriverState *slow = rec_node("slow", true);
    BDRVRecState *fs = fast->opaque, *ss = slow->opaque;
    AioContext *ctx = qemu_get_aio_context();
    QDict *opts = qdict_new();
    BlockDriverState *shadow;
    BlockBackend *blk;
    QEMUIOVector qiov;
    WriteDone w = { 0 };
    uint8_t *buf = qemu_blockalign0(fast, REC_BYTES);
    uint8_t expected[REC_BYTES];

    qdict_put_str(opts, "driver", "shadow");
    qdict_put_str(opts, "node-name", "sh0");
    qdict_put_str(opts, "children.0", "fast");
    qdict_put_str(opts, "children.1", "slow");
    qdict_put_str(opts, "prewarm", "off");
    qdict_put_bool(opts, "x-bounce-writes", bounce);
    shadow = bdrv_open(NULL, NULL, opts, BDRV_O_RDWR, &error_abort);
    blk = blk_new(ctx, BLK_PERM_WRITE | BLK_PERM_CONSISTENT_READ,
                  BLK_PERM_ALL);
    blk_insert_bs(blk, shadow, &error_abort);

    memset(buf, 0xaa, REC_BYTES);
    memset(expected, 0xaa, REC_BYTES);
    qemu_iovec_init_buf(&qiov, buf, REC_BYTES);
    blk_aio_pwritev(blk, 0, &qiov, 0, write_cb, &w);
    while (!fs->done || !ss->started) {
        aio_poll(ctx, true);
    }
    g_assert_false(w.done);
    memset(buf, 0xbb, REC_BYTES);
    while (!w.done) {
        aio_poll(ctx, true);
    }
    g_assert_cmpint(w.ret, ==, 0);
    g_assert_cmpmem(fs->data, REC_BYTES, expected, REC_BYTES);
    if (bounce) {
        g_assert_cmpmem(ss->data, REC_BYTES, expected, REC_BYTES);
    } else {
        /* What the copy is for: without it, the children differ */
        g_assert_cmpint(ss->data[0], ==, 0xbb);
    }

    blk_unref(blk);
    bdrv_unref(shadow);
    bdrv_unref(fast);
    bdrv_unref(slow);
    qemu_vfree(buf);
}

/*
 * The clean header's list of unit numbers (shadow_meta_list_seq()): for
 * geometries on each side of every width's limit and random sets of
 * used slots, every used slot's every unit reads back the low bits of
 * the number listed for it, whatever was listed for the others; a slot
 * not used, a unit past the end or a width byte that is not the one the
 * geometry gives reads as no list.  Random by GTest's seed: the
 * "random seed" line it prints, given to --seed, repeats a run.
 */
static void test_seq_list(void)
{
    const int64_t entries_max = (SHADOW_META_SEQS_BYTES - 1) * 8;
    int width, round;

    for (round = 0; round < 64; round++) {
        ShadowMetaImage *img = g_new0(ShadowMetaImage, 1);
        int nb_used = g_test_rand_int_range(1, SHADOW_META_SLOTS + 1);
        int used[SHADOW_META_SLOTS], j, k, tmp, bits, want_bits;
        int64_t units, u, limit;
        g_autofree uint64_t *seqs = NULL;
        uint64_t low, mask;

        /* nb_used distinct slots, not necessarily the first ones */
        for (j = 0; j < SHADOW_META_SLOTS; j++) {
            used[j] = j;
        }
        for (j = 0; j < nb_used; j++) {
            k = g_test_rand_int_range(j, SHADOW_META_SLOTS);
            tmp = used[j];
            used[j] = used[k];
            used[k] = tmp;
            img->slots[used[j]].used = true;
        }
        /* units per slot: at, one under or one over a width's limit */
        width = 1 << g_test_rand_int_range(0, 5);
        limit = entries_max / width / nb_used;
        units = MAX(limit + g_test_rand_int_range(-1, 2), 1);
        img->nb_chunks = units * SHADOW_META_UNIT_CHUNKS -
                         g_test_rand_int_range(0, SHADOW_META_UNIT_CHUNKS);
        g_assert_cmpint(shadow_meta_nb_units(img->nb_chunks), ==, units);

        for (want_bits = 16; want_bits; want_bits /= 2) {
            if (units * nb_used * want_bits <= entries_max) {
                break;
            }
        }
        bits = shadow_meta_seq_bits(img);
        g_assert_cmpint(bits, ==, want_bits);
        g_assert_cmpint(shadow_meta_list_seqs(img), ==, bits > 0);
        if (!bits) {
            g_assert_cmpint(shadow_meta_listed_seq(img, used[0], 0, &low),
                            ==, 0);
            g_free(img);
            continue;
        }

        seqs = g_new(uint64_t, SHADOW_META_SLOTS * units);
        for (j = 0; j < SHADOW_META_SLOTS * units; j++) {
            seqs[j] = ((uint64_t)g_test_rand_int() << 32) | g_test_rand_int();
        }
        for (j = 0; j < SHADOW_META_SLOTS; j++) {
            for (u = 0; u < units; u++) {
                /* a slot not used lists nothing, and overwrites nothing */
                shadow_meta_list_seq(img, j, u, seqs[j * units + u]);
            }
        }
        mask = (1ull << bits) - 1;
        for (j = 0; j < SHADOW_META_SLOTS; j++) {
            for (u = 0; u < units; u++) {
                if (!img->slots[j].used) {
                    g_assert_cmpint(shadow_meta_listed_seq(img, j, u, &low),
                                    ==, 0);
                    continue;
                }
                g_assert_cmpint(shadow_meta_listed_seq(img, j, u, &low),
                                ==, bits);
                g_assert_cmphex(low, ==, seqs[j * units + u] & mask);
            }
        }
        g_assert_cmpint(shadow_meta_listed_seq(img, used[0], units, &low),
                        ==, 0);
        /* a list written for another geometry is no list */
        img->unit_seqs[0] = bits == 16 ? 8 : bits * 2;
        g_assert_cmpint(shadow_meta_listed_seq(img, used[0], 0, &low),
                        ==, 0);
        g_free(img);
    }
}

int main(int argc, char **argv)
{
    bdrv_init();
    qemu_init_main_loop(&error_abort);
    bdrv_register(&bdrv_rec);
    g_test_init(&argc, &argv, NULL);

    g_test_add_data_func("/shadow/sync-write/buffer-copied",
                         GINT_TO_POINTER(true),
                         test_buffer_changed_in_flight);
    g_test_add_data_func("/shadow/sync-write/buffer-not-copied",
                         GINT_TO_POINTER(false),
                         test_buffer_changed_in_flight);
    g_test_add_func("/shadow/meta/seq-list", test_seq_list);
    return g_test_run();
}
