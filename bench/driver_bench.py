#!/usr/bin/env python3
"""Benchmarks of the shadow driver (make bench).  Each result is a ratio
against a baseline measured in the same run; medians of several runs.
Writes build/bench/driver.json and prints a table.

Usage: driver_bench.py [--quick] [NAME...]
"""

import os
import sys
import time

from benchlib import (MiB, GiB, REPO, Daemon, bench_seconds, file_node,
                      fresh_dir, image_opts, make_image, median_ratio,
                      quick_arg, write_results)

RUNS = 5

import migrate_bench  # noqa: E402
import switch_bench  # noqa: E402
TRACE = os.path.join(REPO, '..', 'shared', 'data', 'traces',
                     'msn_fs_sample.trace')


def shadow_opts(children, **extra):
    opts = {'driver': 'shadow'}
    for i, child in enumerate(children):
        for k, v in child.items():
            opts[f'children.{i}.{k}'] = v
    opts.update(extra)
    return ','.join(f'{k}={v}' for k, v in opts.items())


def bench_reads(quick):
    """4 KiB reads at queue depth 1 and 32, on null-co and on a file
    (cache=none, native AIO): the protocol node under a raw format node
    (the baseline) and under a shadow node with that node as its only
    child, so the figure is the cost of the shadow layer's routing."""
    d = fresh_dir('reads')
    path = os.path.join(d, 'disk.raw')
    make_image(path, 256 * MiB, 'dense')
    backends = {
        'null-co': ({'driver': 'null-co', 'size': 1 * GiB,
                     'read-zeroes': 'on'}, {}),
        'file': ({'driver': 'file', 'filename': path, 'aio': 'native'},
                 {'direct': 'on'}),
    }
    # A file read waits on the disk, whose latency wanders far more than
    # the node's cost: shorter runs, many more of them
    counts = {'null-co': (20000, 5) if quick else (200000, 15),
              'file': (5000, 5) if quick else (30000, 21)}
    results = {}
    for name, (proto, cache) in backends.items():
        count, runs = counts[name]
        raw = image_opts({'driver': 'raw', 'cache': cache, 'file': proto})
        sh = image_opts({'driver': 'shadow', 'prewarm': 'off',
                         'cache': cache, 'children': {'0': proto}})
        for qd in (1, 32):
            args = ['-c', str(count), '-d', str(qd), '-s', '4096',
                    '-S', str(MiB + 4096), '--image-opts']
            r = median_ratio(lambda: bench_seconds(args + [raw]),
                             lambda: bench_seconds(args + [sh]), runs)
            results[f'{name}-qd{qd}'] = r
    return results


def bench_write_copy(quick):
    """4 KiB writes at queue depth 32 to a shadow node over two null-co
    children in sync mode: the node as it is (each write's buffer copied
    once, so that every child gets the same bytes) against the same node
    with the copy turned off (x-bounce-writes=off)."""
    count = 50000 if quick else 400000
    child = {'driver': 'null-co', 'size': 1 * GiB}
    node = {'driver': 'shadow', 'prewarm': 'off',
            'children': {'0': child, '1': child}}
    args = ['-w', '-c', str(count), '-d', '32', '-s', '4096',
            '-S', str(MiB + 4096), '--image-opts']
    copy = image_opts(node)
    no_copy = image_opts({**node, 'x-bounce-writes': 'off'})
    return {'qd32': median_ratio(lambda: bench_seconds(args + [no_copy]),
                                 lambda: bench_seconds(args + [copy]),
                                 RUNS)}


def bench_sync_writes(quick):
    """4 KiB writes with two tiers in sync mode vs the slower tier alone.
    Tiers are files (cache=none) behind throttle groups of their own, as
    independent devices are: the fast tier takes 4000 IOPS, the slow one
    1000.  Both setups live in one qemu-storage-daemon and are written
    through NBD exports by qemu-img bench."""
    d = fresh_dir('writes')
    files = {n: os.path.join(d, f'{n}.raw') for n in ('a', 'b', 'c')}
    for f in files.values():
        make_image(f, 256 * MiB)
    count = 2000 if quick else 10000

    def tier(name, path, group):
        return _json({'driver': 'throttle', 'node-name': name,
                      'throttle-group': group,
                      'file': {'driver': 'file', 'filename': path,
                               'aio': 'native',
                               'cache': {'direct': True}}})

    results = {}
    with Daemon(d, '--object', 'throttle-group,id=fast,x-iops-total=4000',
                '--object', 'throttle-group,id=slow,x-iops-total=1000',
                '--object', 'throttle-group,id=slow2,x-iops-total=1000',
                '--blockdev', tier('fast', files['a'], 'fast'),
                '--blockdev', tier('slow', files['b'], 'slow'),
                '--blockdev', tier('alone', files['c'], 'slow2')) as qsd:
        qsd.add({'driver': 'shadow', 'node-name': 'sh0',
                 'children': ['fast', 'slow'], 'prewarm': 'off'})
        alone, both = qsd.export('alone'), qsd.export('sh0')
        for qd in (1, 32):
            args = ['-f', 'raw', '-w', '-c', str(count), '-d', str(qd),
                    '-s', '4096', '-S', str(MiB + 4096)]
            results[f'qd{qd}'] = median_ratio(
                lambda: bench_seconds(args + [alone]),
                lambda: bench_seconds(args + [both]), RUNS)
    return results


def timed_prewarm(d, src, tgt):
    with Daemon(d, '--blockdev', _json(file_node('src', src)),
                '--blockdev', _json(file_node('tgt', tgt))) as qsd:
        t0 = time.monotonic()
        qsd.add({'driver': 'shadow', 'node-name': 'sh0',
                 'children': ['src', 'tgt']})
        qsd.wait_event('SHADOW_CHILD_SYNCED', child='tgt')
        return time.monotonic() - t0


def timed_mirror(d, src, tgt):
    with Daemon(d, '--blockdev', _json(file_node('src', src)),
                '--blockdev', _json(file_node('tgt', tgt))) as qsd:
        t0 = time.monotonic()
        qsd.cmd('blockdev-mirror', **{'job-id': 'm0', 'device': 'src',
                                      'target': 'tgt', 'sync': 'full'})
        qsd.wait_event('BLOCK_JOB_READY', device='m0')
        took = time.monotonic() - t0
        qsd.cmd('block-job-cancel', device='m0')
        qsd.wait_event('BLOCK_JOB_COMPLETED', device='m0')
        return took


def _json(d):
    import json
    return json.dumps(d)


def bench_prewarm_vs_mirror(quick):
    """Idle pre-warm of a dense and a sparse image vs blockdev-mirror
    sync=full of the same image to the same kind of target; ratio of
    times mirror/shadow."""
    d = fresh_dir('prewarm')
    size = (256 if quick else 1024) * MiB
    results = {}
    for kind, data in (('dense', 'dense'),
                       ('sparse', [(i * 16 * MiB, MiB)
                                   for i in range(size // (16 * MiB))])):
        src = os.path.join(d, f'{kind}.raw')
        tgt = os.path.join(d, 'target.raw')
        make_image(src, size, data)

        def fresh_target():
            make_image(tgt, size)
            return tgt

        results[kind] = median_ratio(
            lambda: timed_mirror(d, src, fresh_target()),
            lambda: timed_prewarm(d, src, fresh_target()), RUNS)
    return results


def guest_reads(qsd_uri, count):
    return bench_seconds(['-f', 'raw', '-c', str(count), '-d', '8',
                          '-s', '4096', '-S', str(MiB + 4096), qsd_uri])


def bench_guest_during_prewarm(quick):
    """Guest read throughput while a shadow is pre-warming vs when it is
    synced (same load, same node)."""
    d = fresh_dir('guest')
    size = (512 if quick else 2048) * MiB
    src, tgt = os.path.join(d, 'src.raw'), os.path.join(d, 'tgt.raw')
    make_image(src, size, 'dense')
    count = 20000
    during, after = [], []
    for _ in range(RUNS):
        make_image(tgt, size)
        # The target tier takes 200 MiB/s, so the copy outlasts the load
        with Daemon(d, '--object',
                    'throttle-group,id=tg,x-bps-write=209715200',
                    '--blockdev', _json(file_node('src', src)),
                    '--blockdev', _json(file_node('tgt-fmt', tgt)),
                    '--blockdev', _json({'driver': 'throttle',
                                         'node-name': 'tgt',
                                         'throttle-group': 'tg',
                                         'file': 'tgt-fmt'})) as qsd:
            qsd.add({'driver': 'shadow', 'node-name': 'sh0',
                     'children': ['src', 'tgt']})
            uri = qsd.export('sh0')
            during.append(guest_reads(uri, count))
            st = qsd.shadow_stats()['children'][1]['state']
            if st == 'synced':
                raise RuntimeError('the copy ended before the load: '
                                   'the figure would mean nothing')
            qsd.wait_event('SHADOW_CHILD_SYNCED', child='tgt')
            after.append(guest_reads(uri, count))
    import statistics
    md, ma = statistics.median(during), statistics.median(after)
    return {'throughput': {'baseline': ma, 'candidate': md,
                           'ratio': ma / md, 'baseline_runs': after,
                           'candidate_runs': during}}


def load_trace(size):
    """MSN trace: (is_read, offset, length), offsets scaled linearly into
    an image of @size bytes, sizes kept."""
    ops = []
    with open(TRACE, encoding='ascii') as f:
        rows = [line.split() for line in f if line.strip()]
    top = max(int(r[2]) + int(r[3]) for r in rows) * 512
    for r in rows:
        length = int(r[3]) * 512
        off = int(int(r[2]) * 512 * size // top) & ~4095
        off = min(off, size - length)
        ops.append((r[4] == '1', off, length))
    return ops


def replay_share(mode, size, ops, chunk):
    d = fresh_dir(f'trace-{mode}')
    src, tgt = os.path.join(d, 'src.raw'), os.path.join(d, 'tgt.raw')
    make_image(src, size, 'dense')
    make_image(tgt, size)
    half = len(ops) // 2
    with Daemon(d, '--blockdev', _json(file_node('src', src)),
                '--blockdev', _json(file_node('tgt', tgt))) as qsd:
        base = {'driver': 'shadow', 'node-name': 'sh0',
                'children': ['src', 'tgt'], 'chunk-size': chunk,
                'copy-on-read': False}
        qsd.add({**base, 'prewarm': 'off'})
        uri = qsd.export('sh0')
        # The first half of the trace's reads shape the heat
        cmds = ''.join(f'read {off} {n}\n'
                       for is_read, off, n in ops[:half] if is_read)
        from benchlib import QEMU_IO, run
        run(QEMU_IO, '-f', 'raw', uri, stdin=cmds + 'quit\n')
        qsd.cmd('blockdev-reopen', options=[{
            **base, 'prewarm': mode, 'prewarm-speed': 128 * MiB}])
        while qsd.shadow_stats()['children'][1]['valid-bytes'] < size // 10:
            time.sleep(0.005)
        qsd.cmd('blockdev-reopen', options=[{**base, 'prewarm': 'off'}])
        copied = qsd.shadow_stats()['children'][1]['valid-bytes']
    # A chunk reached the shadow iff it holds the source's pattern there
    valid = set()
    with open(tgt, 'rb') as f:
        for c in range(size // chunk):
            f.seek(c * chunk)
            if f.read(1) == b'\x5a':
                valid.add(c)
    reads = [(off, n) for is_read, off, n in ops[half:] if is_read]
    hits = sum(all(c in valid for c in range(off // chunk,
                                             (off + n - 1) // chunk + 1))
               for off, n in reads)
    return {'share': hits / len(reads), 'copied-bytes': copied,
            'reads': len(reads)}


def bench_hot_first_trace(quick):
    """Hot-first vs sequential on a replay of the MSN trace: the share of
    the trace's later reads that land on chunks already valid on the shadow
    once 10% of the image is copied."""
    if not os.path.exists(TRACE):
        return {'skipped': f'{TRACE} not present'}
    size = 1 * GiB
    ops = load_trace(size)
    res = {mode: replay_share(mode, size, ops, 64 * 1024)
           for mode in ('hot-first', 'sequential')}
    res['ratio'] = res['hot-first']['share'] / max(res['sequential']['share'],
                                                   1e-9)
    return res


BENCHES = {
    'reads': (bench_reads, 'ratio >= 0.97 null-co, >= 0.99 file'),
    'sync-writes': (bench_sync_writes, 'ratio >= 0.9'),
    'write-copy': (bench_write_copy,
                   'with the buffer copy / without >= 0.95'),
    'prewarm-vs-mirror': (bench_prewarm_vs_mirror, 'ratio >= 1.0'),
    'guest-during-prewarm': (bench_guest_during_prewarm, 'ratio >= 0.8'),
    'hot-first-trace': (bench_hot_first_trace,
                        'report both shares; hot-first above sequential'),
    'switch-pause': (lambda quick: switch_bench.bench_switch_pause(
                         quick, 5 if quick else 15),
                     'shadow pause < 1 ms, mirror pivot / shadow >= 10, '
                     'shadow <= 1.15 x no-op reopen'),
    'flush-metadata': (lambda quick: switch_bench.bench_flush_metadata(
                           quick, 3 if quick else RUNS),
                       'flush with metadata / without <= 1.2'),
    'migrate-downtime': (lambda quick: migrate_bench.bench_migrate_downtime(
                             quick, 3 if quick else 7),
                         'guest-visible downtime shadow / raw <= 1.1'),
}

TARGETS = {
    ('reads', 'null-co-qd1'): 0.97, ('reads', 'null-co-qd32'): 0.97,
    ('reads', 'file-qd1'): 0.99, ('reads', 'file-qd32'): 0.99,
    ('sync-writes', 'qd1'): 0.9, ('sync-writes', 'qd32'): 0.9,
    ('write-copy', 'qd32'): 0.95,
    ('prewarm-vs-mirror', 'dense'): 1.0, ('prewarm-vs-mirror', 'sparse'): 1.0,
    ('guest-during-prewarm', 'throughput'): 0.8,
    # Not "higher is better": checked by these
    ('switch-pause', 'pause'): lambda r: (r['candidate'] < 1.0 and
                                          r['ratio'] >= 10),
    ('flush-metadata', 'flush'): lambda r: r['ratio'] <= 1.2,
    ('switch-pause', 'vs-noop-reopen'): 1 / 1.15,
    ('migrate-downtime', 'shadow'): lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-md'): lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-direct'): lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-md-direct'): lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-md-direct-32gib'):
        lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-md-direct-1tib'): lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-same-files'): lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-md-vs-floor'): lambda r: r['ratio'] <= 1.1,
    ('migrate-downtime', 'shadow-md-direct-vs-floor'):
        lambda r: r['ratio'] <= 1.1,
}


def main():
    quick = quick_arg(__doc__, tuple(BENCHES))
    names = [a for a in sys.argv[1:] if a != '--quick'] or list(BENCHES)
    results = {}
    for name in names:
        fn, target = BENCHES[name]
        print(f'bench: {name} ({target}) ...', flush=True)
        results[name] = fn(quick)
    write_results(results, os.path.join(REPO, 'build', 'bench',
                                        'driver.json'))
    print()
    width = max([14] + [len(case) for res in results.values()
                        if isinstance(res, dict) for case in res])
    # ratio: the median of each pair's (paired_ratio()); medians: the
    # ratio of the two columns' medians, for comparison
    print(f'{"benchmark":24} {"case":{width}} {"baseline":>10} '
          f'{"shadow":>10} {"ratio":>7} {"medians":>7} {"target":>7}')
    for name, res in results.items():
        for case, r in res.items():
            if isinstance(r, dict) and 'ratio' in r:
                t = TARGETS.get((name, case))
                if callable(t):
                    mark = 'ok' if t(r) else 'MISS'
                    t = 'above'
                else:
                    mark = '' if t is None else ('ok' if r['ratio'] >= t
                                                 else 'MISS')
                maps = ' '.join(f'{how}:{n}' for how, n in
                                r.get('candidate-maps', {}).items())
                of_medians = ('' if 'ratio-of-medians' not in r else
                              f'{r["ratio-of-medians"]:.3f}')
                print(f'{name:24} {case:{width}} {r["baseline"]:10.3f} '
                      f'{r["candidate"]:10.3f} {r["ratio"]:7.3f} '
                      f'{of_medians:>7} '
                      f'{"" if t is None else t:>7} {mark}'
                      f'{"  maps " + maps if maps else ""}')
            elif isinstance(r, dict) and 'share' in r:
                print(f'{name:24} {case:{width}} share of reads on valid '
                      f'chunks {r["share"]:.3f} '
                      f'({r["copied-bytes"] // MiB} MiB copied)')
            elif case == 'ratio':
                print(f'{name:24} {"hot/seq":{width}} {r:.2f}x')
            else:
                print(f'{name:24} {case:{width}} {r}')
    print(f'\nbench: results in build/bench/driver.json')


if __name__ == '__main__':
    main()
