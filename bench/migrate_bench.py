"""Benchmark of live migration with a shadow node (make bench):

migrate-downtime  the guest-visible downtime of a live migration between
                  two qemu-system-x86_64 processes on shared storage, the
                  disk (a virtio-blk device) on a shadow node with two
                  tiers, with and without a metadata child, against the
                  same VM with the disk on a plain raw node, alternated in
                  the same run.

Downtime is measured as the guest sees it: from the source's STOP event to
the destination's RESUME event (QMP event timestamps; both processes run
on this host's clock).  It includes inactivating the source's nodes (for a
shadow node with metadata: a last commit of the maps) and activating the
destination's (reading the maps).  QEMU's own 'downtime' figure, which
ends on the source's side, is reported too."""

import mmap
import os
import re
import statistics
import sys
import time

from benchlib import (MiB, REPO, bench_seconds, fresh_dir, make_image,
                      paired_ratio)

sys.path.insert(0, os.path.join(REPO, 'build', 'src', 'qemu', 'python'))
from qemu.machine import QEMUMachine  # noqa: E402

QEMU_SYSTEM = os.path.join(REPO, 'build', 'qemu', 'qemu-system-x86_64')
# The data the disk holds (the rest is a hole)
DATA = 8 * MiB


def event_time(ev):
    ts = ev['timestamp']
    return ts['seconds'] + ts['microseconds'] / 1e6


def tb_flushes(vm):
    """Flushes of the shadow's child tb so far"""
    for entry in vm.cmd('query-blockstats', {'query-nodes': True}):
        if entry.get('node-name') == 'disk':
            for child in entry['driver-specific']['children']:
                if child['node-name'] == 'tb':
                    return child['flush-operations']
    raise RuntimeError('no shadow node disk')


def graph(vm, d, kind, direct=False, settle=True, source=False):
    """The disk: a raw node over a.raw, or a shadow node over a.raw and
    b.raw (with kind 'shadow-md', a metadata child too); with direct,
    every file is opened with cache.direct=on (direct 'native': and
    aio=native).  'raw+files' and
    'raw+files-md': the raw disk, and the shadow's other files opened by
    nodes of their own that no device uses ('+dirty': one_migration()
    leaves unflushed writes in b.raw, dirty_b_raw()).  With @settle, on the
    @source: the shadow synced and the guest's disk flushed since."""
    cache = {'cache': {'direct': True}} if direct else {}
    if direct == 'native':
        cache['aio'] = 'native'

    def tier(name, path):
        return {'driver': 'raw', 'node-name': name,
                'file': {'driver': 'file', 'filename': path, **cache}}

    if kind.startswith('raw'):
        vm.cmd('blockdev-add', tier('disk', os.path.join(d, 'a.raw')))
        if kind.startswith('raw+files'):
            vm.cmd('blockdev-add', tier('tb', os.path.join(d, 'b.raw')))
        if kind.startswith('raw+files-md'):
            vm.cmd('blockdev-add', {'driver': 'file', 'node-name': 'md',
                                    'filename': os.path.join(d, 'meta.raw'),
                                    **cache})
    elif kind == 'qcow2':
        vm.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                                'file': {'driver': 'file', 'filename':
                                         os.path.join(d, 'a.qcow2'),
                                         **cache}})
    else:
        opts = {'driver': 'shadow', 'node-name': 'disk',
                'children': [tier('ta', os.path.join(d, 'a.raw')),
                             tier('tb', os.path.join(d, 'b.raw'))]}
        if kind.startswith('shadow-md'):
            vm.cmd('blockdev-add', {'driver': 'file', 'node-name': 'md',
                                    'filename': os.path.join(d, 'meta.raw'),
                                    **cache})
            opts['metadata'] = 'md'
        vm.cmd('blockdev-add', opts)
    vm.cmd('device_add', driver='virtio-blk-pci', drive='disk', id='vd0')
    if settle and kind.startswith('shadow') and source:
        # A VM that has run a while: its shadow synced, and the periodic
        # commit since (every 5 s) flushed what the copy wrote.  A guest
        # flush does not: it flushes only what the guest wrote.  Before
        # that commit, the downtime pays for flushing the whole copy: the
        # source's last commit (with metadata) or the destination's
        # activation (file-posix flushes a file before it drops its cached
        # pages) does it.
        # Counted from the sync on: a periodic flush before it leaves the
        # copy's last valid bits to a commit after it, which would change
        # the maps after the destination read them.  The next periodic
        # commit comes within 5 s (it may have come before the count).
        vm.event_wait('SHADOW_CHILD_SYNCED', timeout=60)
        flushed = tb_flushes(vm)
        deadline = time.monotonic() + 6.5
        while tb_flushes(vm) == flushed and time.monotonic() < deadline:
            time.sleep(0.1)
    if settle and source:
        # (the device's backend: qemu-io -d takes a qdev path)
        out = vm.cmd('human-monitor-command', **{
            'command-line': 'qemu-io -d vd0/virtio-backend "flush"'})
        if out:
            raise RuntimeError(f'{kind}: the guest flush failed: {out}')


def dirty_b_raw(d, direct):
    """What a running copy leaves behind: a.raw's data written to b.raw
    (the bytes it holds already), not flushed: in the host's cache, or
    with @direct in the device's volatile cache, which the flush of any
    file on the device writes back"""
    with open(os.path.join(d, 'a.raw'), 'rb') as f:
        data = f.read(DATA)
    fd = os.open(os.path.join(d, 'b.raw'),
                 os.O_WRONLY | (os.O_DIRECT if direct else 0))
    try:
        # page aligned, as O_DIRECT needs
        with mmap.mmap(-1, DATA) as buf:
            buf.write(data)
            if os.pwritev(fd, [buf], 0) != DATA:
                raise RuntimeError('short write to b.raw')
    finally:
        os.close(fd)


def change_maps(vm):
    """After the destination read the maps: a guest write that makes a
    chunk stale on tb (write-mode async, no copy), so that the
    inactivation commits a unit of tb's map and the destination must read
    the maps again"""
    vm.cmd('blockdev-reopen', options=[{
        'driver': 'shadow', 'node-name': 'disk', 'metadata': 'md',
        'children': ['ta', 'tb'], 'write-mode': 'async', 'prewarm': 'off'}])
    out = vm.cmd('human-monitor-command', **{
        'command-line': 'qemu-io -d vd0/virtio-backend "write -P 0x5a 0 64k"'})
    if out:
        raise RuntimeError(f'the write that changes the maps failed: {out}')


def one_migration(d, kind, direct=False, settle=True):
    sock = os.path.join(d, 'mig.sock')
    vms = []
    try:
        for name, incoming in (('src', False), ('dst', True)):
            args = ['-M', 'pc', '-accel', 'qtest', '-m', '128',
                    '-nodefaults', '-display', 'none']
            if incoming:
                args += ['-incoming', f'unix:{sock}']
                if kind.startswith('shadow-md'):
                    # Which way the activation went (one line, once)
                    args += ['-trace', 'shadow_load_kept']
            vm = QEMUMachine(QEMU_SYSTEM, args=args, name=f'{kind}-{name}',
                             base_temp_dir=d)
            vm.launch()
            vms.append(vm)
            graph(vm, d, kind, direct, settle, source=not incoming)
        src, dst = vms
        if kind.startswith('raw+files') and not direct:
            # The shadow's copy has read a.raw's data and written it to
            # b.raw: its pages are in the host's cache, which activation
            # drops.  The same pages cached here, as a guest's I/O would.
            for name in ('a.raw', 'b.raw'):
                with open(os.path.join(d, name), 'rb') as f:
                    f.read(DATA)
        if kind.endswith('+dirty'):
            dirty_b_raw(d, direct)
        if kind.endswith('+changed'):
            change_maps(src)
        src.cmd('migrate', uri=f'unix:{sock}')
        stop = src.event_wait('STOP', timeout=60)
        resume = dst.event_wait('RESUME', timeout=60)
        while True:
            status = src.cmd('query-migrate')
            if status.get('status') == 'completed':
                break
            if status.get('status') in ('failed', 'cancelled'):
                raise RuntimeError(f'{kind}: migration {status}')
            if src.event_wait('MIGRATION', timeout=60) is None:
                raise RuntimeError(f'{kind}: migration stuck: {status}')
        info = src.cmd('query-migrate')
        result = {'guest': (event_time(resume) - event_time(stop)) * 1000,
                  'qemu': info.get('downtime', 0)}
    finally:
        for vm in vms:
            vm.shutdown()
    # 'read': the activation read the maps again; 'kept': it kept a copy
    # of those its inactive open read; 'in-memory': the maps that open
    # made; '+reread': but for the units whose numbers moved since
    log = vms[1].get_log() or ''
    kept = re.search(r'in memory (\d), read again (\d+)', log)
    result['maps'] = 'read'
    if kept:
        result['maps'] = (('in-memory' if kept.group(1) == '1' else 'kept') +
                          ('+reread' if int(kept.group(2)) else ''))
    return result


def durable_marker_ms(path, meta_bytes, runs, cache):
    """What a durable clean marker costs through QEMU's block layer on
    @path's storage, the floor of any format that keeps its metadata on
    disk: the source writes an 8 KiB header that must be durable (a write,
    then a flush: file-posix has no FUA write in its thread pool; @cache:
    the cache mode it writes with), the destination reads the header and
    the maps (@meta_bytes) from the device (the page cache was dropped at
    activation, or is not used).  Medians of @runs rounds, in ms."""
    def per_op(args, count):
        return bench_seconds(['-d', '1', '-c', str(count), '-f', 'raw',
                              *args, path]) * 1000 / count
    writes = [per_op(['-t', cache, '-w', '-s', '8192', '--flush-interval=1'],
                     50) for _ in range(runs)]
    reads = [per_op(['-t', 'none', '-s', str(meta_bytes)], 50)
             for _ in range(runs)]
    return statistics.median(writes), statistics.median(reads)


# (case, baseline node, candidate node, files opened with cache.direct=on,
# settled: the source's shadow synced and its disk flushed before the
# migration, as on a VM that has run a while)
# shadow and shadow-md against raw, with and without the host's page
# cache, are the targets.  The rest show where the floor is:
# - '-same-files': the raw VM also opens the shadow's other files.  With
#   the page cache (QEMU's default), activating a node drops its file's
#   cached pages (file-posix), so each file costs its own drop; with
#   cache.direct=on, which libvirt requires for a live migration, no
#   drop, but each file's locks and permissions still change.
# - '-vs-floor' (computed, below): that, plus a durable marker written
#   by the source and read back by the destination, which any format
#   that keeps metadata on disk needs.
# - '-vs-qcow2': QEMU's own format with on-disk metadata, which also
#   reads it when the destination activates.
# - '-copying': migrated while the copy runs.  The maps do not wait for
#   what the copy wrote, but the downtime still writes it back: with
#   the page cache, the destination's activation does
#   (file-posix flushes b.raw before it drops its cached pages);
#   '-copying-vs-dirty' gives the raw VM the same dirty pages in b.raw,
#   which it has open, and which QEMU's flush of every node at the stop
#   writes back: the floor of what those bytes cost.  With
#   cache.direct=on ('-direct-copying') the copy's writes wait in the
#   device's volatile cache instead, which the stop's flush of the active
#   child writes back with them ('-direct-copying-vs-dirty': the raw VM
#   with the same writes made to b.raw with O_DIRECT).
# - '-32gib', '-1tib': the same on a 32 GiB and a 1 TiB disk (sparse
#   files, the same 8 MiB of data).  Nothing changed the maps since the
#   destination read them when it started, which the source's clean
#   header proves: the activation keeps them.  '-1tib-changed': a guest
#   write made a chunk stale on tb after that (change_maps()); the
#   source's clean header lists the low bits of each unit's number, and
#   the activation reads again the units whose number moved, keeps the
#   rest, and remakes the state of those units' chunks (a writer that
#   does not list them would have every unit read again: 8 MiB for 2
#   children on 1 TiB, a downtime that grows with the disk).  '-native-1tib-changed': every file with aio=native too.
CASES = (('shadow', 'raw', 'shadow', False, True),
         ('shadow-md', 'raw', 'shadow-md', False, True),
         ('shadow-direct', 'raw', 'shadow', True, True),
         ('shadow-md-direct', 'raw', 'shadow-md', True, True),
         ('shadow-same-files', 'raw+files', 'shadow', False, True),
         ('shadow-md-same-files', 'raw+files-md', 'shadow-md', False, True),
         ('shadow-md-direct-same-files', 'raw+files-md', 'shadow-md', True,
          True),
         ('shadow-md-vs-qcow2', 'qcow2', 'shadow-md', False, True),
         ('shadow-md-copying', 'raw', 'shadow-md', False, False),
         ('shadow-md-copying-vs-dirty', 'raw+files-md+dirty', 'shadow-md',
          False, False),
         ('shadow-md-direct-copying', 'raw', 'shadow-md', True, False),
         ('shadow-md-direct-copying-vs-dirty', 'raw+files-md+dirty',
          'shadow-md', True, False),
         ('shadow-md-direct-32gib', 'raw', 'shadow-md', True, True),
         ('shadow-md-direct-1tib', 'raw', 'shadow-md', True, True),
         ('shadow-md-direct-1tib-changed', 'raw', 'shadow-md+changed', True,
          True),
         ('shadow-md-native-1tib-changed', 'raw', 'shadow-md+changed',
          'native', True))
# The disk's size in the cases not on the 256 MiB one
BIG_CASES = {'shadow-md-direct-32gib': 32 * 1024 * MiB,
             'shadow-md-direct-1tib': 1024 * 1024 * MiB,
             'shadow-md-direct-1tib-changed': 1024 * 1024 * MiB,
             'shadow-md-native-1tib-changed': 1024 * 1024 * MiB}


def bench_migrate_downtime(quick, runs):
    """Guest-visible downtime, shadow node / raw node, medians (ms)"""
    small = fresh_dir('migrate')
    for name in ('a.raw', 'b.raw'):
        make_image(os.path.join(small, name), 256 * MiB, [(0, DATA)])
    make_image(os.path.join(small, 'a.qcow2'), 256 * MiB, [(0, DATA)],
               fmt='qcow2')
    big = {}
    for case, size in BIG_CASES.items():
        big[case] = fresh_dir(f'migrate-{case}')
        for name in ('a.raw', 'b.raw'):
            make_image(os.path.join(big[case], name), size, [(0, DATA)])
    results = {}
    for case, base_kind, kind, direct, settle in CASES:
        base, cand, base_q, cand_q, maps = [], [], [], [], []
        d = big.get(case, small)
        for _ in range(runs):
            make_image(os.path.join(d, 'meta.raw'), 0)
            r = one_migration(d, base_kind, direct, settle)
            base.append(r['guest'])
            base_q.append(r['qemu'])
            r = one_migration(d, kind, direct, settle)
            cand.append(r['guest'])
            cand_q.append(r['qemu'])
            maps.append(r['maps'])
        mb, mc = statistics.median(base), statistics.median(cand)
        results[case] = {'baseline': mb, 'candidate': mc,
                         # a time: lower is better; ratio shadow / baseline
                         # of each pair of migrations (paired_ratio())
                         'ratio': paired_ratio(cand, base),
                         'ratio-of-medians': mc / mb,
                         'baseline-node': base_kind,
                         'cache-direct': bool(direct),
                         'aio': 'native' if direct == 'native' else 'threads',
                         'baseline_runs': base, 'candidate_runs': cand,
                         'qemu-downtime-ms': {
                             'baseline': statistics.median(base_q),
                             'candidate': statistics.median(cand_q)}}
        if kind.startswith('shadow-md'):
            # How each activation went: the runs that read the maps again
            # measure that path, not the kept one
            results[case]['candidate-maps'] = {
                how: maps.count(how) for how in sorted(set(maps))}
    # The floor of any on-disk metadata: the downtime with the same files
    # open, plus a durable marker written by the source and read by the
    # destination
    d = small
    meta_bytes = os.path.getsize(os.path.join(d, 'meta.raw'))
    for case, base, cache in (
            ('shadow-md-direct-vs-floor', 'shadow-md-direct-same-files',
             'none'),
            ('shadow-md-vs-floor', 'shadow-md-same-files', 'writeback')):
        write_ms, read_ms = durable_marker_ms(os.path.join(d, 'b.raw'),
                                              meta_bytes, 3 if quick else 7,
                                              cache)
        floor = results[base]['baseline'] + write_ms + read_ms
        cand = results[base]['candidate']
        results[case] = {'baseline': floor, 'candidate': cand,
                         'ratio': cand / floor,
                         'baseline-node': results[base]['baseline-node'] +
                         ' + durable marker',
                         'marker-write-ms': write_ms,
                         'marker-read-ms': read_ms}
    return results
