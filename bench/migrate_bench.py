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
shadow node with metadata: a clean stop of the metadata) and activating
the destination's (reading the maps).  QEMU's own 'downtime' figure, which
ends on the source's side, is reported too."""

import os
import statistics
import sys

from benchlib import MiB, REPO, fresh_dir, make_image

sys.path.insert(0, os.path.join(REPO, 'build', 'src', 'qemu', 'python'))
from qemu.machine import QEMUMachine  # noqa: E402

QEMU_SYSTEM = os.path.join(REPO, 'build', 'qemu', 'qemu-system-x86_64')


def event_time(ev):
    ts = ev['timestamp']
    return ts['seconds'] + ts['microseconds'] / 1e6


def graph(vm, d, kind):
    """The disk: a raw node over a.raw, or a shadow node over a.raw and
    b.raw (with kind 'shadow-md', a metadata child too)"""
    def tier(name, path):
        return {'driver': 'raw', 'node-name': name,
                'file': {'driver': 'file', 'filename': path}}

    if kind == 'raw':
        vm.cmd('blockdev-add', tier('disk', os.path.join(d, 'a.raw')))
    elif kind == 'qcow2':
        vm.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                                'file': {'driver': 'file', 'filename':
                                         os.path.join(d, 'a.qcow2')}})
    else:
        opts = {'driver': 'shadow', 'node-name': 'disk',
                'children': [tier('ta', os.path.join(d, 'a.raw')),
                             tier('tb', os.path.join(d, 'b.raw'))]}
        if kind == 'shadow-md':
            vm.cmd('blockdev-add', driver='file', node_name='md',
                   filename=os.path.join(d, 'meta.raw'))
            opts['metadata'] = 'md'
        vm.cmd('blockdev-add', opts)
    vm.cmd('device_add', driver='virtio-blk-pci', drive='disk', id='vd0')


def one_migration(d, kind):
    sock = os.path.join(d, 'mig.sock')
    vms = []
    try:
        for name, incoming in (('src', False), ('dst', True)):
            args = ['-M', 'pc', '-accel', 'qtest', '-m', '128',
                    '-nodefaults', '-display', 'none']
            if incoming:
                args += ['-incoming', f'unix:{sock}']
            vm = QEMUMachine(QEMU_SYSTEM, args=args, name=f'{kind}-{name}',
                             base_temp_dir=d)
            vm.launch()
            vms.append(vm)
            graph(vm, d, kind)
        src, dst = vms
        src.cmd('migrate', uri=f'unix:{sock}')
        stop = src.event_wait('STOP', timeout=60)
        resume = dst.event_wait('RESUME', timeout=60)
        while src.cmd('query-migrate').get('status') != 'completed':
            src.event_wait('MIGRATION', timeout=60)
        info = src.cmd('query-migrate')
        return {'guest': (event_time(resume) - event_time(stop)) * 1000,
                'qemu': info.get('downtime', 0)}
    finally:
        for vm in vms:
            vm.shutdown()


def bench_migrate_downtime(quick, runs):
    """Guest-visible downtime, shadow node / raw node, medians (ms)"""
    d = fresh_dir('migrate')
    for name in ('a.raw', 'b.raw'):
        make_image(os.path.join(d, name), 256 * MiB, [(0, 8 * MiB)])
    make_image(os.path.join(d, 'a.qcow2'), 256 * MiB, [(0, 8 * MiB)],
               fmt='qcow2')
    results = {}
    # shadow and shadow-md against raw (the target); for scale, shadow-md
    # against QEMU's own format with on-disk metadata, which like it writes
    # a clean header when the source inactivates and reads its metadata
    # when the destination activates
    for kind, base_kind in (('shadow', 'raw'), ('shadow-md', 'raw'),
                            ('shadow-md-vs-qcow2', 'qcow2')):
        base, cand, base_q, cand_q = [], [], [], []
        for _ in range(runs):
            make_image(os.path.join(d, 'meta.raw'), 0)
            r = one_migration(d, base_kind)
            base.append(r['guest'])
            base_q.append(r['qemu'])
            r = one_migration(d, kind.replace('-vs-qcow2', ''))
            cand.append(r['guest'])
            cand_q.append(r['qemu'])
        mb, mc = statistics.median(base), statistics.median(cand)
        results[kind] = {'baseline': mb, 'candidate': mc,
                         # a time: lower is better; ratio shadow / baseline
                         'ratio': mc / mb, 'baseline-node': base_kind,
                         'baseline_runs': base, 'candidate_runs': cand,
                         'qemu-downtime-ms': {
                             'baseline': statistics.median(base_q),
                             'candidate': statistics.median(cand_q)}}
    return results
