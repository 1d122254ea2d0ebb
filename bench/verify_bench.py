#!/usr/bin/env python3
"""The verify of a permanent move (make bench): x-shadow-verify's rate
against the source tier's bandwidth, and the guest's throughput while a
verify runs at shadowctl move's default speed (64 MiB/s) against without.
The same for x-shadow-verify-copy, the verify of a libvirt move, which
compares a mirror's target with its source while the mirror runs; there
the guest also writes (4 KiB random, QD8), since a write the mirror has
yet to copy makes the verify read that piece again in a drained section.

A qemu-storage-daemon with a shadow node over two raw files
(cache.direct=on), synced.  The source tier's bandwidth: fio reading the
active child's export sequentially (1 MiB, queue depth 4).  The verify:
unlimited, timed from the command to its conclusion.  The guest: fio 4 KiB
random reads at queue depth 8 on the shadow node's export, alternately
without and with a verify running (started again whenever it concludes).
Medians of the runs.  Writes build/bench/verify.json.

Usage: verify_bench.py [--quick]
"""

import json
import os
import statistics
import subprocess
import time

from benchlib import (MiB, REPO, Daemon, fresh_dir, quick_arg,
                      write_results)

SPEED = 64 * MiB


def fio(uri, seconds, *args):
    out = subprocess.run(
        ['fio', '--name=b', '--ioengine=nbd', f'--uri={uri}', '--time_based',
         f'--runtime={seconds}', '--output-format=json', *args],
        stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    job = json.loads(out[out.index('{'):])['jobs'][0]['read']
    return job['bw_bytes'], job['iops']


def verify(qsd, speed, job='v0'):
    """Starts a verify of tb against ta; returns when QEMU accepted it"""
    qsd.cmd('x-shadow-verify', **{'job-id': job, 'node-name': 'sh0',
                                  'child': 'tb', 'speed': speed,
                                  'auto-dismiss': False})


def concluded(qsd, job='v0'):
    for j in qsd.cmd('query-jobs'):
        if j['id'] == job and j['status'] == 'concluded':
            qsd.cmd('job-dismiss', id=job)
            if 'error' in j:
                raise RuntimeError(f'verify failed: {j["error"]}')
            return True
    return False


def guest_fio(uri, secs, rw):
    return ['fio', '--name=b', '--ioengine=nbd', f'--uri={uri}',
            '--time_based', f'--runtime={secs}', '--output-format=json',
            f'--rw={rw}', '--bs=4k', '--iodepth=8']


def fio_iops(proc, rw):
    out = proc.stdout.read()
    proc.wait()
    if proc.returncode:
        raise RuntimeError(f'fio {rw} failed')
    job = json.loads(out[out.index('{'):])['jobs'][0]
    return job['write' if 'write' in rw else 'read']['iops']


def copy_verify(qsd, speed, job='vc'):
    qsd.cmd('x-shadow-verify-copy', **{'job-id': job, 'node-name': 'src',
                                       'target': 'dst', 'speed': speed,
                                       'auto-dismiss': False})


def bench_copy(d, size, runs, secs):
    """x-shadow-verify-copy of a ready mirror of src to dst"""
    a, b = os.path.join(d, 'src.img'), os.path.join(d, 'dst.img')
    with open(a, 'wb') as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    with open(b, 'wb') as f:
        f.truncate(size)
    with Daemon(d) as qsd:
        for node, path in (('src', a), ('dst', b)):
            qsd.add({'driver': 'raw', 'node-name': node,
                     'file': {'driver': 'file', 'filename': path,
                              'cache': {'direct': True}}})
        # exported before the mirror: its writes go through it
        guest = qsd.export('src', writable=True)
        source_bps = [fio(guest, secs, '--rw=read', '--bs=1M',
                          '--iodepth=4')[0] for _ in range(runs)]
        qsd.cmd('blockdev-mirror', **{'job-id': 'm0', 'device': 'src',
                                      'target': 'dst', 'sync': 'full'})
        deadline = time.monotonic() + 600
        while not any(j['id'] == 'm0' and j['status'] == 'ready'
                      for j in qsd.cmd('query-jobs')):
            if time.monotonic() > deadline:
                raise RuntimeError('mirror not ready')
            time.sleep(0.2)
        rate, res = [], {}
        for _ in range(runs):
            t0 = time.monotonic()
            copy_verify(qsd, 0)
            while not concluded(qsd, 'vc'):
                time.sleep(0.01)
            rate.append(size / (time.monotonic() - t0))
            for rw in ('randread', 'randwrite'):
                proc = subprocess.Popen(guest_fio(guest, secs, rw),
                                        stdout=subprocess.PIPE,
                                        universal_newlines=True)
                res.setdefault(rw + '-alone', []).append(fio_iops(proc, rw))
                copy_verify(qsd, SPEED)
                proc = subprocess.Popen(guest_fio(guest, secs, rw),
                                        stdout=subprocess.PIPE,
                                        universal_newlines=True)
                while proc.poll() is None:
                    if concluded(qsd, 'vc'):
                        copy_verify(qsd, SPEED)
                    time.sleep(0.05)
                res.setdefault(rw + '-during', []).append(fio_iops(proc, rw))
                while not concluded(qsd, 'vc'):
                    time.sleep(0.05)
        qsd.cmd('block-job-cancel', device='m0')
    src_m, rate_m = statistics.median(source_bps), statistics.median(rate)
    med = {k: statistics.median(v) for k, v in res.items()}
    return {
        'size_bytes': size,
        'source_read_bytes_per_s': src_m,
        'verify_bytes_per_s': rate_m,
        'verify_vs_source': rate_m / src_m,
        'guest_read_iops_alone': med['randread-alone'],
        'guest_read_iops_during_verify': med['randread-during'],
        'guest_read_during_vs_alone': med['randread-during'] /
        med['randread-alone'],
        'guest_write_iops_alone': med['randwrite-alone'],
        'guest_write_iops_during_verify': med['randwrite-during'],
        'guest_write_during_vs_alone': med['randwrite-during'] /
        med['randwrite-alone'],
        'verify_speed_during': SPEED,
        'runs': {'source': source_bps, 'verify': rate, **res},
    }


def main():
    quick = quick_arg(__doc__)
    size = (256 if quick else 1024) * MiB
    runs = 3 if quick else 5
    secs = 4 if quick else 8
    d = fresh_dir('verify')
    a, b = os.path.join(d, 'a.img'), os.path.join(d, 'b.img')
    with open(a, 'wb') as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    with open(b, 'wb') as f:
        f.truncate(size)
    with Daemon(d) as qsd:
        for node, path in (('ta', a), ('tb', b)):
            qsd.add({'driver': 'raw', 'node-name': node,
                     'file': {'driver': 'file', 'filename': path,
                              'cache': {'direct': True}}})
        qsd.add({'driver': 'shadow', 'node-name': 'sh0',
                 'children': ['ta', 'tb'], 'prewarm': 'sequential'})
        deadline = time.monotonic() + 600
        while qsd.shadow_stats()['children'][1]['state'] != 'synced':
            if time.monotonic() > deadline:
                raise RuntimeError('tb not synced')
            time.sleep(0.2)
        src = qsd.export('ta', writable=False)
        guest = qsd.export('sh0', writable=False)

        source_bps, rate, alone, during = [], [], [], []
        for _ in range(runs):
            source_bps.append(fio(src, secs, '--rw=read', '--bs=1M',
                                  '--iodepth=4')[0])
            t0 = time.monotonic()
            verify(qsd, 0)
            while not concluded(qsd):
                time.sleep(0.01)
            rate.append(size / (time.monotonic() - t0))
            alone.append(fio(guest, secs, '--rw=randread', '--bs=4k',
                             '--iodepth=8')[1])
            verify(qsd, SPEED)
            # a verify at SPEED lasts size / SPEED; restarted meanwhile
            proc = subprocess.Popen(guest_fio(guest, secs, 'randread'),
                                    stdout=subprocess.PIPE,
                                    universal_newlines=True)
            while proc.poll() is None:
                if concluded(qsd):
                    verify(qsd, SPEED)
                time.sleep(0.05)
            during.append(fio_iops(proc, 'randread'))
            while not concluded(qsd):
                time.sleep(0.05)

    copy = bench_copy(fresh_dir('verify-copy'), size, runs, secs)
    src_m = statistics.median(source_bps)
    rate_m = statistics.median(rate)
    results = {
        'copy': copy,
        'size_bytes': size,
        'source_read_bytes_per_s': src_m,
        'verify_bytes_per_s': rate_m,
        'verify_vs_source': rate_m / src_m,
        # both children's bytes against the source alone: here both files
        # share one device, so this one is bounded by 1 (the other by 0.5)
        'verify_reads_vs_source': 2 * rate_m / src_m,
        'guest_iops_alone': statistics.median(alone),
        'guest_iops_during_verify': statistics.median(during),
        'verify_speed_during': SPEED,
        'guest_during_vs_alone': statistics.median(during) /
        statistics.median(alone),
        'runs': {'source': source_bps, 'verify': rate, 'alone': alone,
                 'during': during},
    }
    write_results(results, os.path.join(REPO, 'build', 'bench',
                                         'verify.json'))
    print(f'verify: {rate_m / MiB:.0f} MiB/s of the disk (each byte read from '
          f'both children) against the source tier read alone at '
          f'{src_m / MiB:.0f} MiB/s: {rate_m / src_m:.2f} (both children '
          f'read at {2 * rate_m / src_m:.2f} of the one device they share)')
    print(f'verify: guest 4 KiB random reads at QD8: '
          f'{statistics.median(alone):.0f} IOPS alone, '
          f'{statistics.median(during):.0f} while a verify runs at '
          f'{SPEED // MiB} MiB/s: {results["guest_during_vs_alone"]:.2f}')
    print(f'verify of a mirror\'s copy: {copy["verify_bytes_per_s"] / MiB:.0f} '
          f'MiB/s against one file read alone at '
          f'{copy["source_read_bytes_per_s"] / MiB:.0f} MiB/s: '
          f'{copy["verify_vs_source"]:.2f}; guest 4 KiB random at QD8 with '
          f'a verify at {SPEED // MiB} MiB/s against without: reads '
          f'{copy["guest_read_iops_during_verify"]:.0f}/'
          f'{copy["guest_read_iops_alone"]:.0f} IOPS '
          f'({copy["guest_read_during_vs_alone"]:.2f}), writes '
          f'{copy["guest_write_iops_during_verify"]:.0f}/'
          f'{copy["guest_write_iops_alone"]:.0f} IOPS '
          f'({copy["guest_write_during_vs_alone"]:.2f})')


if __name__ == '__main__':
    main()
