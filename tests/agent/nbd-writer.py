#!/usr/bin/env python3
"""A write load that knows which of its writes completed, for kill tests.

  nbd-writer.py write SOCKET LOG SEED SECONDS [--rate IOPS]
      random 4 KiB writes (four in flight) to [16 MiB, 28 MiB) of the
      export sh0 until SECONDS passed or the server went away (a kill: not
      an error); each write is logged before it is sent ("S SEQ OFFSET")
      and once acknowledged ("A SEQ") or failed ("E SEQ ERRNO"), the log
      flushed at every line.  Exits 1 if it could not connect, or if a
      write failed while the server was up: the guest would have seen it.
  nbd-writer.py check SOCKET LOG SEED
      every block with an acknowledged write must hold the data of its last
      acknowledged write, or of a later one that was sent and may have
      landed; prints what it checked, exits 1 at the first block that
      holds neither, 3 if there was nothing to check.

Each write's data is (SEED, SEQ) repeated, so a block tells which write
it holds."""

import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                '..', '..', 'bench'))
import nbdclient  # noqa: E402

MiB = 1024 * 1024
BLOCK = 4096
FIRST, END = 16 * MiB, 28 * MiB
DEPTH = 4


def data_of(seed, seq):
    return (seed.to_bytes(8, 'little') + seq.to_bytes(8, 'little')) * (BLOCK // 16)


def write(sock, log_path, seed, seconds, rate):
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    seq = 0
    inflight = {}
    with open(log_path, 'w', buffering=1) as log:
        try:
            c = nbdclient.NBDClient(sock, 'sh0')
        except (OSError, nbdclient.NBDError, EOFError) as e:
            print(f'nbd-writer: cannot connect to {sock}: {e}',
                  file=sys.stderr)
            return 1
        failed = 0
        try:
            while time.monotonic() < end or inflight:
                while len(inflight) < DEPTH and time.monotonic() < end:
                    seq += 1
                    off = FIRST + rng.randrange((END - FIRST) // BLOCK) * BLOCK
                    log.write(f'S {seq} {off}\n')
                    h = c.submit(nbdclient.CMD_WRITE, off, BLOCK,
                                 data_of(seed, seq))
                    inflight[h] = seq
                    if rate:
                        time.sleep(1 / rate)
                h, err, _data = c.reply()
                s = inflight.pop(h)
                if err == 0:
                    log.write(f'A {s}\n')
                else:
                    log.write(f'E {s} {err}\n')
                    failed += 1
        except (OSError, nbdclient.NBDError, EOFError, ConnectionError):
            pass        # the server went away
    if failed:
        print(f'nbd-writer: {failed} writes failed (E lines in {log_path})',
              file=sys.stderr)
        return 1
    return 0


def check(sock, log_path, seed):
    sent = {}           # seq -> offset
    acked = set()
    with open(log_path) as log:
        for line in log:
            f = line.split()
            if len(f) == 3 and f[0] == 'S':
                sent[int(f[1])] = int(f[2])
            elif len(f) == 2 and f[0] == 'A':
                acked.add(int(f[1]))
    by_off = {}
    for s in sorted(sent):
        by_off.setdefault(sent[s], []).append(s)
    c = nbdclient.NBDClient(sock, 'sh0')
    checked = 0
    for off, seqs in sorted(by_off.items()):
        done = [s for s in seqs if s in acked]
        if not done:
            continue
        # the last acknowledged write, or any later one that may have landed
        ok = [data_of(seed, s) for s in seqs if s >= done[-1]]
        got = c.read(off, BLOCK)
        if got not in ok:
            held = int.from_bytes(got[8:16], 'little')
            print(f'offset {off}: holds write {held}, not the last '
                  f'acknowledged write {done[-1]} (or a later one)')
            return 1
        checked += 1
    c.close()
    print(f'{checked} blocks checked, {len(acked)} acknowledged writes of '
          f'{len(sent)} sent')
    return 0 if checked else 3


def main():
    a = sys.argv[1:]
    if len(a) >= 5 and a[0] == 'write':
        rate = float(a[a.index('--rate') + 1]) if '--rate' in a else 0
        return write(a[1], a[2], int(a[3]), float(a[4]), rate)
    if len(a) == 4 and a[0] == 'check':
        return check(a[1], a[2], int(a[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main())
