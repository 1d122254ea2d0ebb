#!/usr/bin/env python3
"""Benchmarks of the shadow driver with Ceph RBD tiers (make bench), on a
throwaway single-node cluster (tests/ceph/ceph_fixture.py).  Writes
build/bench/rbd.json and prints a table.

- prewarm: the time a shadow node takes to pre-warm a dense image from a
  file tier onto an RBD tier, against `rbd bench --io-type write` of the
  same number of bytes on a fresh image of the same pool: 4 MiB sequential
  writes, 16 in flight (what the pool takes at best), and 256 KiB writes,
  4 in flight (the copy's own request shape).  Alternated, medians; ratio
  rbd bench time / pre-warm time, which is the pre-warm rate as a share of
  what rbd bench got.
- reads: 4 KiB random reads at queue depth 1 and 32 (qemu-img bench) on an
  rbd node under a raw format node (the baseline) and under a shadow node
  with that rbd node as its only child; ratio baseline / shadow time.

Usage: rbd_bench.py [--quick]
"""

import json
import os
import re
import sys
import time

from benchlib import (MiB, REPO, Daemon, bench_seconds, file_node, fresh_dir,
                      make_image, median_ratio, quick_arg, write_results)

sys.path.insert(0, os.path.join(REPO, 'tests', 'ceph'))
import ceph_fixture  # noqa: E402

# The pre-warm has no target yet: it is reported against the pool's best
# and against rbd bench with the copy's own request shape
TARGETS = {
    ('reads', 'qd1'): 0.97,
    ('reads', 'qd32'): 0.97,
}


class RbdBench:
    def __init__(self, cluster, quick):
        self.c = cluster
        self.quick = quick
        self.runs = 3
        self.size = (256 if quick else 1024) * MiB
        self.n = 0
        self.dir = fresh_dir('rbd')

    def image(self, pool):
        self.n += 1
        name = f'bench{self.n}'
        self.c.create_image(pool, name, self.size)
        return name

    def rbd_node(self, name, pool, image):
        return {'driver': 'raw', 'node-name': name,
                'file': self.c.rbd_opts(pool, image)}

    def timed_prewarm(self, src):
        image = self.image('ssd')
        try:
            with Daemon(self.dir, '--blockdev',
                        json.dumps(file_node('src', src)),
                        '--blockdev',
                        json.dumps(self.rbd_node('tgt', 'ssd', image))) \
                    as qsd:
                t0 = time.monotonic()
                qsd.add({'driver': 'shadow', 'node-name': 'sh0',
                         'children': ['src', 'tgt']})
                qsd.wait_event('SHADOW_CHILD_SYNCED', child='tgt')
                return time.monotonic() - t0
        finally:
            self.c.remove_image('ssd', image)

    def timed_rbd_bench(self, io_size=4 * MiB, threads=16):
        image = self.image('ssd')
        try:
            out = self.c.rbd('bench', '--io-type', 'write', '--io-size',
                             str(io_size), '--io-threads', str(threads),
                             '--io-total', str(self.size), '--io-pattern',
                             'seq', f'ssd/{image}', timeout=600)
        finally:
            self.c.remove_image('ssd', image)
        # "elapsed: 3   ops: 256   ops/sec: 80.9   bytes/sec: 324 MiB/s":
        # elapsed is whole seconds; the rate is exact
        m = re.search(r'bytes/sec: ([0-9.]+) ([KMG]i)?B/s', out)
        if not m:
            raise RuntimeError(f'rbd bench: no rate in {out!r}')
        scale = {None: 1, 'Ki': 1024, 'Mi': MiB, 'Gi': 1024 * MiB}
        return self.size / (float(m.group(1)) * scale[m.group(2)])

    def prewarm(self):
        src = os.path.join(self.dir, 'src.raw')
        make_image(src, self.size, 'dense')
        r = median_ratio(self.timed_rbd_bench,
                         lambda: self.timed_prewarm(src), self.runs)
        r['prewarm-mib-s'] = self.size / MiB / r['candidate']
        r['rbd-bench-mib-s'] = self.size / MiB / r['baseline']
        # The copy's shape: SHADOW_COPY_WORKERS (4) workers, each writing
        # pieces of at most SHADOW_COPY_PIECE (256 KiB) after reading them
        shape = median_ratio(lambda: self.timed_rbd_bench(256 * 1024, 4),
                             lambda: self.timed_prewarm(src), self.runs)
        shape['rbd-bench-mib-s'] = self.size / MiB / shape['baseline']
        os.remove(src)
        return {'vs-rbd-bench': r, 'vs-256k-x4': shape}

    def reads(self):
        image = self.image('ssd')
        # Data everywhere: librbd answers reads of absent objects quickly
        self.c.rbd('bench', '--io-type', 'write', '--io-size', str(4 * MiB),
                   '--io-threads', '16', '--io-total', str(self.size),
                   '--io-pattern', 'seq', f'ssd/{image}', timeout=600)
        proto = self.c.rbd_opts('ssd', image, direct=False)
        raw = {'driver': 'raw', 'cache.direct': 'on'}
        sh = {'driver': 'shadow', 'prewarm': 'off', 'cache.direct': 'on'}
        for k, v in proto.items():
            if k != 'cache':
                raw[f'file.{k}'] = v
                sh[f'children.0.{k}'] = v
        count = 2000 if self.quick else 10000
        results = {}
        for qd in (1, 32):
            args = ['-c', str(count * (4 if qd > 1 else 1)), '-d', str(qd),
                    '-s', '4096', '-S', str(MiB + 4096), '--image-opts']

            def opts(d):
                return ','.join(f'{k}={v}' for k, v in d.items())
            results[f'qd{qd}'] = median_ratio(
                lambda: bench_seconds(args + [opts(raw)]),
                lambda: bench_seconds(args + [opts(sh)]), self.runs)
        self.c.remove_image('ssd', image)
        return results


def main():
    quick = quick_arg(__doc__)
    missing = ceph_fixture.missing_binaries()
    if missing:
        print('bench: rbd skipped, Ceph programs missing: ' +
              ' '.join(missing))
        return 0
    results = {}
    with ceph_fixture.Cluster(pools=('ssd',), osd_size=8 << 30) as cluster:
        results['cluster-startup-s'] = round(cluster.startup_s, 2)
        b = RbdBench(cluster, quick)
        print('bench: rbd prewarm (vs rbd bench on the same pool) ...',
              flush=True)
        results['prewarm'] = b.prewarm()
        print('bench: rbd reads (vs the raw rbd node) ...', flush=True)
        results['reads'] = b.reads()
    write_results(results, os.path.join(REPO, 'build', 'bench', 'rbd.json'))
    print()
    print(f'{"benchmark":24} {"case":14} {"baseline":>10} {"shadow":>10} '
          f'{"ratio":>7} {"target":>7}')
    for name in ('prewarm', 'reads'):
        for case, r in results[name].items():
            t = TARGETS.get((name, case))
            mark = '' if t is None else ('ok' if r['ratio'] >= t else 'MISS')
            print(f'rbd-{name:20} {case:14} {r["baseline"]:10.3f} '
                  f'{r["candidate"]:10.3f} {r["ratio"]:7.3f} '
                  f'{"" if t is None else t:>7} {mark}')
    p = results['prewarm']['vs-rbd-bench']
    print(f'rbd-prewarm: {p["prewarm-mib-s"]:.0f} MiB/s onto the pool, '
          f'rbd bench {p["rbd-bench-mib-s"]:.0f} MiB/s; cluster up in '
          f'{results["cluster-startup-s"]} s')
    print('\nbench: results in build/bench/rbd.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
