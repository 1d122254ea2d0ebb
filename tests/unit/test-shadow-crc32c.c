/*
 * crc32c() against a bit-by-bit reference: the shadow driver checksums
 * its metadata with it, and patches/0008 computes it with SSE4.2 where
 * the host has it.  Every length to 300 bytes at every alignment, the
 * table path and the accelerated one alike.
 *
 * Copyright (c) 2026 The shadowtier authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/crc32c.h"
#include "host/cpuinfo.h"

/* CRC-32C (Castagnoli, reflected), one bit at a time */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *data, size_t len)
{
    int k;

    while (len--) {
        crc ^= *data++;
        for (k = 0; k < 8; k++) {
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78 : crc >> 1;
        }
    }
    return crc ^ 0xffffffff;
}

static void check_all(void)
{
    g_autofree uint8_t *buf = g_malloc(300 + 8);
    GRand *rand = g_rand_new_with_seed(20261203);
    size_t off, len, i;

    for (i = 0; i < 308; i++) {
        buf[i] = g_rand_int(rand);
    }
    g_rand_free(rand);
    for (off = 0; off < 8; off++) {
        for (len = 0; len <= 300; len++) {
            uint32_t want = crc32c_bitwise(0xffffffff, buf + off, len);
            uint32_t got = crc32c(0xffffffff, buf + off, len);

            if (want != got) {
                g_test_message("offset %zu, length %zu: 0x%08x, want 0x%08x",
                               off, len, got, want);
            }
            g_assert_cmphex(got, ==, want);
        }
    }
}

/* The check value of the CRC catalogue */
static void test_check_value(void)
{
    g_assert_cmphex(crc32c(0xffffffff, (const uint8_t *)"123456789", 9), ==,
                    0xe3069283);
}

static void test_host(void)
{
#ifdef CPUINFO_SSE42
    g_test_message("SSE4.2 crc32c %s", cpuinfo & CPUINFO_SSE42 ?
                   "in use" : "not on this host: the table is checked twice");
#endif
    check_all();
}

/*
 * A checksum taken in pieces, as a caller that checksums a header and
 * then its body would: every split of 300 bytes from an odd address, so
 * that the accelerated path's 8-byte steps and byte-wise tail meet at
 * every place
 */
static void test_chained(void)
{
    g_autofree uint8_t *buf = g_malloc(301);
    size_t split, i;
    uint32_t whole;

    for (i = 0; i < 301; i++) {
        buf[i] = i * 7 + 3;
    }
    whole = crc32c_bitwise(0xffffffff, buf + 1, 300);
    for (split = 0; split <= 300; split++) {
        uint32_t head = crc32c(0xffffffff, buf + 1, split);
        uint32_t got = crc32c(head ^ 0xffffffff, buf + 1 + split, 300 - split);

        if (got != whole) {
            g_test_message("split at %zu: 0x%08x, want 0x%08x",
                           split, got, whole);
        }
        g_assert_cmphex(got, ==, whole);
    }
}

/* With the host's acceleration turned off: the table */
static void test_table(void)
{
#ifdef CPUINFO_SSE42
    unsigned saved = cpuinfo;

    cpuinfo &= ~CPUINFO_SSE42;
    check_all();
    cpuinfo = saved;
#else
    g_test_skip("no accelerated crc32c on this host architecture");
#endif
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/shadow/crc32c/check-value", test_check_value);
    g_test_add_func("/shadow/crc32c/host", test_host);
    g_test_add_func("/shadow/crc32c/chained", test_chained);
    g_test_add_func("/shadow/crc32c/table", test_table);
    return g_test_run();
}
