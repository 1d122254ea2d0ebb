#!/usr/bin/env python3
"""Write-back latency (make bench): 4 KiB writes at queue depth 1 through a
shadow node with metadata whose fast tier is active, in async mode (a
write-back libvirt disk) and in sync mode (today's libvirt disk: every
write also waits for the cheap tier), against the fast tier alone and the
cheap tier alone.  The cheap tier is a file under a throttle filter
(CHEAP_IOPS); the fast tier a plain file (cache.direct=on).  Writes are
spread by a 1 MiB + 4 KiB stride (qemu-io times each; the median and the
mean), so each reaches a chunk not written before; then the same writes
again, on chunks whose intent bits are durable (reported as "written
again").  The first write to each intent region (16 MiB by default: one
write in 16 here) waits for the metadata's intent bits to be durable; the
case async-chunk-intent has one region per chunk (intent-granularity =
chunk-size), so that every first write waits: the worst case.
Target: async at most 1.2 times the fast tier alone (medians).
Writes build/bench/writeback.json.

Usage: writeback_bench.py [--quick]
"""

import os
import statistics

import re

from benchlib import (MiB, QEMU_IO, REPO, fresh_dir, image_opts, make_image,
                      quick_arg,
                      run, write_results)

CHEAP_IOPS = 200
TARGET = 1.2


def main():
    quick = quick_arg(__doc__)
    count = 200 if quick else 500
    runs = 3 if quick else 5
    d = fresh_dir('writeback')
    size = 1024 * MiB
    cheap, fast, md = (os.path.join(d, n) for n in ('cheap', 'fast', 'md'))
    fast_file = {'driver': 'file', 'filename': fast, 'cache': {'direct': 'on'}}
    cheap_node = {'driver': 'throttle', 'throttle-group': 'tg',
                  'file': {'driver': 'file', 'filename': cheap,
                           'cache': {'direct': 'on'}}}
    cases = {
        'fast-alone': {'driver': 'raw', 'file': fast_file},
        'cheap-alone': {'driver': 'raw', 'file': cheap_node},
    }
    for mode in ('async', 'sync'):
        cases[mode] = {'driver': 'shadow', 'active-child': 'f',
                       'write-mode': mode, 'prewarm': 'off',
                       'children': {'0': {**cheap_node, 'node-name': 'c'},
                                    '1': {**fast_file, 'node-name': 'f'}},
                       'metadata': {'driver': 'file', 'filename': md}}
    cases['async-chunk-intent'] = {**cases['async'],
                                   'intent-granularity': 64 * 1024}
    # qemu-io (qemu-img bench takes no --object for the throttle group):
    # one write per command, each timed by qemu-io itself
    # The same writes twice: the first pass meets new chunks (the worst
    # case), the second the same chunks again, whose intent bits are
    # durable already (a disk whose hot set is written again and again)
    args = ['--object', f'throttle-group,id=tg,x-iops-total={CHEAP_IOPS}']
    for rep in range(2):
        for i in range(count):
            args += ['-c', f'write -P 0x{(i + rep) % 250 + 1:x} '
                     f'{i * (MiB + 4096)} 4k']
    args.append('--image-opts')
    lat = {name: [] for name in cases}
    mean = {name: [] for name in cases}
    again = {name: [] for name in cases}
    for r in range(runs):
        for name, node in cases.items():
            # fresh images each run: every write meets a new chunk
            for path in (cheap, fast):
                make_image(path, size)
            make_image(md, 0)
            out = run(QEMU_IO, *args, image_opts(node))
            ops = [float(x) for x in re.findall(r'and ([0-9.]+) ops/sec', out)]
            assert len(ops) == 2 * count, out[-500:]
            lat[name].append(statistics.median(1e6 / x for x in ops[:count]))
            mean[name].append(statistics.mean(1e6 / x for x in ops[:count]))
            again[name].append(statistics.median(1e6 / x
                                                 for x in ops[count:]))
    res = {name: {'median-us': round(statistics.median(v), 1),
                  'runs-us': [round(x, 1) for x in v],
                  'mean-us': round(statistics.median(mean[name]), 1),
                  'again-median-us': round(statistics.median(again[name]), 1),
                  'again-runs-us': [round(x, 1) for x in again[name]]}
           for name, v in lat.items()}
    base = res['fast-alone']['median-us']
    out = {'count': count, 'runs': runs, 'cheap-iops': CHEAP_IOPS,
           'latency': res,
           'async-vs-fast': round(res['async']['median-us'] / base, 3),
           'sync-vs-fast': round(res['sync']['median-us'] / base, 3),
           # means: the first write to each region counts here
           'async-mean-vs-fast': round(res['async']['mean-us'] /
                                       res['fast-alone']['mean-us'], 3),
           # every first write waits for its intent bit
           'async-chunk-intent-vs-fast':
               round(res['async-chunk-intent']['median-us'] / base, 3),
           # the same chunks written again (intent bits durable already)
           'async-again-vs-fast': round(res['async']['again-median-us'] /
                                        res['fast-alone']['again-median-us'],
                                        3),
           'target-async-vs-fast': TARGET}
    out['target-met'] = out['async-vs-fast'] <= TARGET
    write_results(out, os.path.join(REPO, 'build', 'bench', 'writeback.json'))
    for name, r in res.items():
        print(f'writeback {name:18} {r["median-us"]:8.1f} us/write '
              f'(mean {r["mean-us"]:8.1f}), {r["again-median-us"]:8.1f} '
              f'written again')
    print(f'writeback async/fast {out["async-vs-fast"]:.3f} (target <= {TARGET}: '
          f'{"ok" if out["target-met"] else "MISS"}), sync/fast '
          f'{out["sync-vs-fast"]:.3f}; means: async/fast '
          f'{out["async-mean-vs-fast"]:.3f}; one region per chunk: '
          f'{out["async-chunk-intent-vs-fast"]:.3f}; written again: '
          f'async/fast {out["async-again-vs-fast"]:.3f}')


if __name__ == '__main__':
    main()
