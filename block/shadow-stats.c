/*
 * Shadow block driver: I/O counters that cost the request path little
 *
 * Every guest request counts itself on the node and on the child that
 * served it; a read through the node must cost little more than one
 * through a raw node, so counting takes neither a lock nor an atomic
 * read-modify-write.  Each ShadowCounters is split in shards, one per
 * AioContext that counts in it: requests of one AioContext run in its one
 * thread (the main loop's under the BQL), so a shard has a single writer,
 * which adds with plain loads and stores; readers sum the shards with
 * relaxed loads, which a 64-bit host never tears.  A thread with no
 * AioContext, or one that finds every shard taken, counts in the last
 * shard with atomic additions.  A sum is exact; one shard alone means
 * nothing (a request may begin in one thread and end in another).
 *
 * Guest reads are timed one in SHADOW_READ_SAMPLE, and that time counts
 * for all of them, so that most reads read no clock; writes, flushes and
 * copies are all timed.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/atomic.h"
#include "block/aio.h"
#include "shadow.h"

/*
 * The shard of @c for @ctx, the calling thread's AioContext, or NULL for
 * the shared last one.  A request that counts in several ShadowCounters
 * looks its AioContext up once.
 */
ShadowCounterShard *shadow_counters_shard_of(ShadowCounters *c,
                                             AioContext *ctx)
{
    int i;

    if (!ctx) {
        return NULL;
    }
    for (i = 0; i < SHADOW_COUNTER_SHARDS - 1; i++) {
        AioContext *owner = qatomic_read(&c->shard[i].ctx);

        if (owner == ctx) {
            return &c->shard[i];
        }
        if (!owner && !qatomic_cmpxchg(&c->shard[i].ctx, NULL, ctx)) {
            return &c->shard[i];
        }
    }
    return NULL;
}

/* The calling thread's shard of @c, or NULL for the shared last one */
ShadowCounterShard *shadow_counters_shard(ShadowCounters *c)
{
    return shadow_counters_shard_of(c, qemu_get_current_aio_context());
}

void shadow_counters_add(ShadowCounters *c, ShadowStat stat, int64_t n)
{
    shadow_shard_add(c, shadow_counters_shard(c), stat, n);
}

int64_t shadow_counters_get(ShadowCounters *c, ShadowStat stat)
{
    int64_t sum = 0;
    int i;

    for (i = 0; i < SHADOW_COUNTER_SHARDS; i++) {
        sum += qatomic_read(&c->shard[i].v[stat]);
    }
    return sum;
}

void shadow_account_weighted(ShadowCounters *c, bool write, int64_t bytes,
                             int64_t ns, int weight, int ret)
{
    shadow_account_shard(c, shadow_counters_shard(c), write, bytes, ns, weight,
                         ret);
}

void shadow_account(ShadowCounters *c, bool write, int64_t bytes, int64_t ns,
                    int ret)
{
    shadow_account_weighted(c, write, bytes, ns, 1, ret);
}
