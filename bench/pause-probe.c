/*
 * pause-probe: the guest-visible pause of a QMP command.
 *
 * Keeps 32 random 4 KiB reads in flight on an NBD export and timestamps
 * every completion, sends one QMP command on a second monitor, waits for
 * its reply (and, if given, for an event), and prints:
 *
 *   pause_ms   the longest time without a completed read from sending
 *              the command until the first completion after it finished
 *   first_ms   from sending the command to the first completion after it
 *   done_ms    from sending the command until it finished
 *   floor_ms   the longest gap in the 300 ms before the command, for scale
 *
 * A Python client cannot do this: its own scheduling hides sub-millisecond
 * pauses.  Usage:
 *   pause-probe NBD_SOCKET EXPORT QMP_SOCKET COMMAND_JSON [EVENT]
 *
 * Copyright (c) 2026 The shadowtier authors
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QD 32
#define BLOCK 4096
#define WARMUP_NS 300000000LL
#define AFTER_NS 100000000LL

static void die(const char *what)
{
    fprintf(stderr, "pause-probe: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int connect_unix(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    if (fd < 0) {
        die("socket");
    }
    if (strlen(path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "pause-probe: socket path too long: %s\n", path);
        exit(1);
    }
    strcpy(addr.sun_path, path);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        die(path);
    }
    return fd;
}

static void read_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);

        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            errno = n ? errno : ECONNRESET;
            die("read");
        }
        p += n;
        len -= n;
    }
}

static void write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("write");
        }
        p += n;
        len -= n;
    }
}

/* NBD: fixed newstyle handshake with NBD_OPT_GO; returns the export size */
static uint64_t nbd_handshake(int fd, const char *export)
{
    struct {
        uint64_t magic, opt;
        uint16_t flags;
    } __attribute__((packed)) greeting;
    uint32_t client_flags = htobe32(3), namelen = strlen(export);
    uint64_t size = 0;

    read_all(fd, &greeting, sizeof(greeting));
    if (be64toh(greeting.magic) != 0x4e42444d41474943ULL) {
        fprintf(stderr, "pause-probe: not an NBD server\n");
        exit(1);
    }
    write_all(fd, &client_flags, 4);
    {
        struct {
            uint64_t magic;
            uint32_t opt, len, namelen;
        } __attribute__((packed)) go = {
            htobe64(0x49484156454F5054ULL), htobe32(7),
            htobe32(4 + namelen + 2), htobe32(namelen),
        };
        uint16_t ninfo = 0;

        write_all(fd, &go, sizeof(go));
        write_all(fd, export, namelen);
        write_all(fd, &ninfo, 2);
    }
    for (;;) {
        struct {
            uint64_t magic;
            uint32_t opt, type, len;
        } __attribute__((packed)) rep;
        char payload[1024];
        uint32_t len, type;

        read_all(fd, &rep, sizeof(rep));
        len = be32toh(rep.len);
        type = be32toh(rep.type);
        if (len > sizeof(payload)) {
            fprintf(stderr, "pause-probe: option reply too long\n");
            exit(1);
        }
        read_all(fd, payload, len);
        if (type == 1) {
            break;
        }
        if (type == 3 && len >= 10 && payload[0] == 0 && payload[1] == 0) {
            memcpy(&size, payload + 2, 8);
            size = be64toh(size);
        } else if (type & 0x80000000u) {
            fprintf(stderr, "pause-probe: NBD_OPT_GO refused\n");
            exit(1);
        }
    }
    return size;
}

static void nbd_read(int fd, uint64_t handle, uint64_t offset)
{
    struct {
        uint32_t magic;
        uint16_t flags, type;
        uint64_t handle, offset;
        uint32_t len;
    } __attribute__((packed)) req = {
        htobe32(0x25609513), 0, 0, handle, htobe64(offset), htobe32(BLOCK),
    };

    write_all(fd, &req, sizeof(req));
}

/* Reads lines from the QMP socket; returns 1 when @what is in a line */
static int qmp_poll_line(int fd, const char *what)
{
    static char buf[65536];
    static size_t used;
    ssize_t n = read(fd, buf + used, sizeof(buf) - 1 - used);
    char *nl;

    if (n <= 0) {
        errno = n ? errno : ECONNRESET;
        die("QMP read");
    }
    used += n;
    buf[used] = '\0';
    while ((nl = strchr(buf, '\n'))) {
        int found;

        *nl = '\0';
        found = strstr(buf, what) != NULL;
        if (strstr(buf, "\"error\"")) {
            fprintf(stderr, "pause-probe: QMP error: %s\n", buf);
            exit(1);
        }
        memmove(buf, nl + 1, used - (nl + 1 - buf) + 1);
        used -= nl + 1 - buf;
        if (found) {
            return 1;
        }
    }
    return 0;
}

static void qmp_wait(int fd, const char *what)
{
    while (!qmp_poll_line(fd, what)) {
        /* read until found */
    }
}

int main(int argc, char **argv)
{
    const char *event;
    int nbd, qmp;
    uint64_t size, nblocks, rng = 88172645463325252ULL;
    static char data[BLOCK];
    int64_t start, cmd_ns = 0, done_ns = 0, prev, last_warm = 0;
    int64_t pause = 0, first = -1, floor_gap = 0, end_ns = 0;
    int stage = 0, i;

    if (argc < 5) {
        fprintf(stderr, "usage: pause-probe NBD_SOCKET EXPORT QMP_SOCKET "
                "COMMAND_JSON [EVENT]\n");
        return 2;
    }
    event = argc > 5 ? argv[5] : NULL;

    qmp = connect_unix(argv[3]);
    qmp_wait(qmp, "\"QMP\"");
    write_all(qmp, "{\"execute\":\"qmp_capabilities\"}\n", 31);
    qmp_wait(qmp, "\"return\"");

    nbd = connect_unix(argv[1]);
    size = nbd_handshake(nbd, argv[2]);
    nblocks = size / BLOCK;
    if (!nblocks) {
        fprintf(stderr, "pause-probe: empty export\n");
        return 1;
    }

    for (i = 0; i < QD; i++) {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
        nbd_read(nbd, i, (rng % nblocks) * BLOCK);
    }
    start = prev = now_ns();
    for (;;) {
        struct pollfd fds[2] = {
            { .fd = nbd, .events = POLLIN }, { .fd = qmp, .events = POLLIN },
        };

        if (poll(fds, stage == 1 ? 2 : 1, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("poll");
        }
        if (fds[0].revents & POLLIN) {
            struct {
                uint32_t magic, error;
                uint64_t handle;
            } __attribute__((packed)) rep;
            int64_t t;

            read_all(nbd, &rep, sizeof(rep));
            if (rep.error) {
                fprintf(stderr, "pause-probe: read failed: %u\n",
                        be32toh(rep.error));
                return 1;
            }
            read_all(nbd, data, BLOCK);
            t = now_ns();
            if (stage == 0 && t - start > WARMUP_NS / 2) {
                floor_gap = t - prev > floor_gap ? t - prev : floor_gap;
            }
            if (stage == 1 || stage == 2) {
                pause = t - prev > pause ? t - prev : pause;
                if (first < 0) {
                    first = t - cmd_ns;
                }
                if (stage == 2 && t > done_ns) {
                    stage = 3;
                    end_ns = t;
                }
            }
            prev = t;
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            nbd_read(nbd, rep.handle, (rng % nblocks) * BLOCK);
            last_warm = t;
        }
        if (stage == 0 && last_warm - start > WARMUP_NS) {
            size_t len = strlen(argv[4]);

            stage = 1;
            cmd_ns = prev = now_ns();
            write_all(qmp, argv[4], len);
            write_all(qmp, "\n", 1);
        } else if (stage == 1 && (fds[1].revents & POLLIN)) {
            if (qmp_poll_line(qmp, event ? event : "\"return\"")) {
                done_ns = now_ns();
                stage = 2;
            }
        }
        if (stage == 3 && now_ns() - end_ns > AFTER_NS) {
            break;
        }
    }
    printf("pause_ms=%.4f\nfirst_ms=%.4f\ndone_ms=%.4f\nfloor_ms=%.4f\n",
           pause / 1e6, first / 1e6, (done_ns - cmd_ns) / 1e6,
           floor_gap / 1e6);
    return 0;
}
