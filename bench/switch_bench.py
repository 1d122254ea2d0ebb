"""Benchmarks of issue "instant switch and crash safety":

switch-pause    the guest-visible pause of a switch with 32 reads in flight:
                blockdev-reopen of a shadow node (with metadata) against
                blockdev-mirror's pivot (block-job-complete) on the same
                images, alternated in the same run, and for scale a
                blockdev-reopen that changes nothing on a raw node and
                one that changes nothing on the same shadow node (QEMU's
                own cost of reopening that graph);
flush-metadata  flush latency of a shadow node with a metadata child
                against the same node without one.

The pause is measured from the guest's side by bench/pause-probe.c, an
NBD client that keeps 32 random 4 KiB reads in flight and timestamps every
completion: it is the longest time without a completed request from
sending the command until the first completion after its reply (or, for
the mirror, after BLOCK_JOB_COMPLETED).  That bounds from above the time
from the command to the first completed request after it.

Guest I/O runs in an iothread.  By default the iothread (with its thread
pool) and the probe share one CPU and every other thread of the daemon
runs on another, as libvirt's <iothreadpin> and <emulatorpin> place them
on hosts that care about I/O latency.  Unpinned, on a two-core machine,
the monitor thread, which reads a command one byte per iteration, takes
the iothread's CPU for as long as the command is long: a query-version
padded to 500 bytes stalls guest I/O 2-3 ms.  That is the length of the
command's text, not the switch, so the unpinned figures are reported as
well but not held to the target."""

import json
import os
import random
import statistics
import time

from benchlib import (MiB, QEMU_IMG, REPO, Daemon, fresh_dir, make_image,
                      file_node, paired_ratio, run)
from nbdclient import NBDClient, CMD_WRITE

QD = 32
BLOCK = 4096


PROBE = os.path.join(REPO, 'build', 'bench', 'pause-probe')


def build_probe():
    src = os.path.join(REPO, 'bench', 'pause-probe.c')
    if (not os.path.exists(PROBE) or
            os.path.getmtime(PROBE) < os.path.getmtime(src)):
        os.makedirs(os.path.dirname(PROBE), exist_ok=True)
        run('cc', '-O2', '-Wall', '-Wextra', '-Werror', '-o', PROBE, src)


def monitor_args(d):
    """A second QMP monitor, for pause-probe"""
    sock = os.path.join(d, 'qmp-probe.sock')
    if os.path.exists(sock):
        os.remove(sock)
    return sock, ['--chardev', f'socket,id=probe,path={sock},server=on,'
                  'wait=off', '--monitor', 'probe']


def cpu_split():
    """(CPUs for the iothread and the probe, CPUs for everything else), or
    None when there are not two CPUs to split"""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def threads(pid):
    return {int(t) for t in os.listdir(f'/proc/{pid}/task')}


def add_iothread(qsd, pin):
    """Adds iothread io0 for guest I/O; with @pin, moves it to the first
    CPU of cpu_split() and every other thread of @qsd to the others.  The
    iothread's thread pool, started by the iothread later, inherits its
    CPU."""
    split = cpu_split() if pin else None
    for _ in range(10):
        before = threads(qsd.proc.pid)
        qsd.cmd('object-add', **{'qom-type': 'iothread', 'id': 'io0'})
        new = threads(qsd.proc.pid) - before
        if split is None:
            return None
        if len(new) == 1:
            break
        # a thread-pool worker started meanwhile (qemu-storage-daemon has
        # no query-iothreads): again
        qsd.cmd('object-del', id='io0')
        time.sleep(0.2)
    else:
        raise RuntimeError(f'cannot tell the iothread among threads {new}')
    for tid in before:
        os.sched_setaffinity(tid, split[1])
    os.sched_setaffinity(new.pop(), split[0])
    return split[0]


def measure(qsd, probe_sock, export, command, event=None, probe_cpus=None):
    """The guest-visible pause of @command, in seconds (see pause-probe.c)"""
    # A guest flushes now and then; the copy's writes are flushed already
    # when a switch comes, as the mirror's are when it reports ready
    nbd = NBDClient(qsd.nbd_sock, export)
    nbd.flush()
    nbd.close()
    out = run(PROBE, qsd.nbd_sock, export, probe_sock, json.dumps(command),
              *([event] if event else []), cpus=probe_cpus)
    values = dict(line.split('=') for line in out.split())
    return {k: float(v) / 1000 for k, v in values.items()}


def images(d, size):
    a = os.path.join(d, 'a.raw')
    b = os.path.join(d, 'b.raw')
    make_image(a, size, 'dense')
    make_image(b, size)
    return a, b


def shadow_pause(d, size, pin, switch=True):
    """The pause of a switch of a shadow node with metadata from ta to tb;
    with @switch False, of a blockdev-reopen of that node that changes
    nothing: QEMU's cost of reopening this graph, without the switch"""
    a, b = images(d, size)
    meta = os.path.join(d, 'meta.raw')
    make_image(meta, MiB)
    probe, args = monitor_args(d)
    with Daemon(d, *args) as qsd:
        # Tiers added as nodes of their own, as management layers do
        # (-blockdev): a reopen of the shadow node then leaves them alone
        qsd.add({'driver': 'file', 'node-name': 'md', 'filename': meta})
        qsd.add(file_node('ta', a))
        qsd.add(file_node('tb', b))
        qsd.add({'driver': 'shadow', 'node-name': 'sh0', 'metadata': 'md',
                 'children': ['ta', 'tb']})
        qsd.wait_event('SHADOW_CHILD_SYNCED', child='tb')
        cpus = add_iothread(qsd, pin)
        qsd.export('sh0', iothread='io0')
        res = measure(qsd, probe, 'sh0', {
            'execute': 'blockdev-reopen', 'arguments': {'options': [{
                'driver': 'shadow', 'node-name': 'sh0', 'metadata': 'md',
                'children': ['ta', 'tb'],
                'active-child': 'tb' if switch else 'ta'}]}},
            probe_cpus=cpus)
        if switch:
            ev = qsd.wait_event('SHADOW_SWITCHED', timeout=10)
            res['event'] = ev['data']['pause-ns'] / 1e9
        return res


def reopen_floor(d, size, pin):
    """The pause of a blockdev-reopen that changes nothing on a raw node:
    QEMU's own cost of a reopen (drain, reopen, resume), for scale"""
    a = os.path.join(d, 'a.raw')
    make_image(a, size, 'dense')
    probe, args = monitor_args(d)
    with Daemon(d, *args) as qsd:
        qsd.add({'driver': 'file', 'node-name': 'fa', 'filename': a})
        qsd.add({'driver': 'raw', 'node-name': 'ta', 'file': 'fa'})
        cpus = add_iothread(qsd, pin)
        qsd.export('ta', iothread='io0')
        return measure(qsd, probe, 'ta', {
            'execute': 'blockdev-reopen', 'arguments': {'options': [{
                'driver': 'raw', 'node-name': 'ta', 'file': 'fa'}]}},
            probe_cpus=cpus)


def graph_reopen_floor(d, size, pin):
    """The pause of a blockdev-reopen that changes nothing on a node of
    QEMU's own with as many nodes under it as the shadow node above: a
    qcow2 node with its file, an external data file and a backing file
    (raw over file each, as the tiers).  QEMU drains, reopens and updates
    the permissions of every node of the graph; this is that cost for a
    graph of the shadow's shape, with no shadow code in it"""
    a, b = images(d, size)
    q = os.path.join(d, 'q.qcow2')
    run(QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-o', f'data_file={a}',
        q, str(size))
    probe, args = monitor_args(d)
    with Daemon(d, *args) as qsd:
        qsd.add({'driver': 'file', 'node-name': 'fq', 'filename': q})
        qsd.add(file_node('ta', a))
        qsd.add(file_node('tb', b))
        opts = {'driver': 'qcow2', 'node-name': 'tq', 'file': 'fq',
                'data-file': 'ta', 'backing': 'tb'}
        qsd.add(opts)
        cpus = add_iothread(qsd, pin)
        qsd.export('tq', iothread='io0')
        return measure(qsd, probe, 'tq', {
            'execute': 'blockdev-reopen', 'arguments': {'options': [opts]}},
            probe_cpus=cpus)


def mirror_pause(d, size, pin):
    a, b = images(d, size)
    probe, args = monitor_args(d)
    with Daemon(d, *args) as qsd:
        qsd.add(file_node('ta', a))
        qsd.add(file_node('tb', b))
        cpus = add_iothread(qsd, pin)
        qsd.export('ta', iothread='io0')
        qsd.cmd('blockdev-mirror', **{'job-id': 'm0', 'device': 'ta',
                                      'target': 'tb', 'sync': 'full'})
        qsd.wait_event('BLOCK_JOB_READY', device='m0')
        return measure(qsd, probe, 'ta', {
            'execute': 'block-job-complete',
            'arguments': {'device': 'm0'}}, 'BLOCK_JOB_COMPLETED',
            probe_cpus=cpus)


def switch_pauses(d, size, runs, pin):
    shadow, mirror, floor, same, graph = [], [], [], [], []
    for _ in range(runs):
        mirror.append(mirror_pause(d, size, pin))
        shadow.append(shadow_pause(d, size, pin))
        floor.append(reopen_floor(d, size, pin))
        same.append(shadow_pause(d, size, pin, switch=False))
        graph.append(graph_reopen_floor(d, size, pin))

    def med(runs, key):
        return statistics.median(r[key] for r in runs) * 1000

    ms = med(shadow, 'pause_ms')

    def ratio(baseline):
        """@baseline's pause against the switch's, runs of one round
        paired (paired_ratio()); above 1: the switch is shorter"""
        b = [r['pause_ms'] * 1000 for r in baseline]
        c = [r['pause_ms'] * 1000 for r in shadow]
        mb = med(baseline, 'pause_ms')
        return {'baseline': mb, 'candidate': ms, 'ratio': paired_ratio(b, c),
                'ratio-of-medians': mb / ms, 'unit': 'ms',
                'baseline_runs': b, 'candidate_runs': c}

    return {
        'pause': ratio(mirror),
        'first-completion-ms': {'mirror': med(mirror, 'first_ms'),
                                'shadow': med(shadow, 'first_ms')},
        'command-ms': {'mirror': med(mirror, 'done_ms'),
                       'shadow': med(shadow, 'done_ms')},
        # The longest gap between completions in the 300 ms before the
        # command: a pause shorter than that is lost in the reads' own
        # jitter
        'noise-floor-ms': {'mirror': med(mirror, 'floor_ms'),
                           'shadow': med(shadow, 'floor_ms'),
                           'noop-reopen': med(floor, 'floor_ms')},
        'drained-ms': med(shadow, 'event'),
        'noop-reopen-pause-ms': med(floor, 'pause_ms'),
        # The switch against QEMU's floor for any blockdev-reopen
        'vs-noop-reopen': ratio(floor),
        # The switch against a reopen of the same shadow graph that
        # changes nothing: what the switch itself adds (the rest is QEMU's
        # drain, reopen and permission update of the graph's nodes)
        'vs-noop-shadow-reopen': ratio(same),
        # ... and against QEMU's own node with a graph of the same shape:
        # the floor of any reopen of six nodes (see graph_reopen_floor())
        'vs-noop-graph-reopen': ratio(graph),
    }


def bench_switch_pause(quick, runs):
    build_probe()
    d = fresh_dir('switch')
    size = (64 if quick else 256) * MiB
    pinned = switch_pauses(d, size, runs, True)
    unpinned = switch_pauses(d, size, runs, False)
    res = {'pinned': cpu_split() is not None}
    res.update(pinned)
    res['pause-unpinned'] = unpinned.pop('pause')
    res['unpinned'] = unpinned
    return res


def flush_latencies(d, size, with_meta, count):
    a = os.path.join(d, 'fa.raw')
    b = os.path.join(d, 'fb.raw')
    make_image(a, size, 'dense')
    make_image(b, size, 'dense')
    opts = {'driver': 'shadow', 'node-name': 'sh0',
            'children': [file_node('ta', a), file_node('tb', b)]}
    with Daemon(d) as qsd:
        if with_meta:
            meta = os.path.join(d, 'fmeta.raw')
            make_image(meta, MiB)
            qsd.add({'driver': 'file', 'node-name': 'md', 'filename': meta})
            opts['metadata'] = 'md'
        qsd.add(opts)
        qsd.wait_event('SHADOW_CHILD_SYNCED', child='tb')
        qsd.export('sh0')
        nbd = NBDClient(qsd.nbd_sock, 'sh0')
        rng = random.Random(2)
        hot = 8 * MiB // BLOCK
        data = bytes([0x5a]) * BLOCK
        flushes, writes = [], []
        for i in range(count + 50):
            t0 = time.perf_counter()
            nbd.call(CMD_WRITE, rng.randrange(hot) * BLOCK, data=data)
            t1 = time.perf_counter()
            nbd.flush()
            t2 = time.perf_counter()
            if i >= 50:     # after warming up
                writes.append(t1 - t0)
                flushes.append(t2 - t1)
        nbd.close()
        return statistics.median(flushes), statistics.median(writes)


def bench_flush_metadata(quick, runs):
    d = fresh_dir('flush')
    size = 64 * MiB
    count = 100 if quick else 400
    plain, meta, wplain, wmeta = [], [], [], []
    for _ in range(runs):
        f, w = flush_latencies(d, size, False, count)
        plain.append(f)
        wplain.append(w)
        f, w = flush_latencies(d, size, True, count)
        meta.append(f)
        wmeta.append(w)
    mp, mm = statistics.median(plain), statistics.median(meta)
    return {
        'flush': {'baseline': mp * 1000, 'candidate': mm * 1000,
                  'ratio': mm / mp, 'unit': 'ms',
                  'baseline_runs': [x * 1000 for x in plain],
                  'candidate_runs': [x * 1000 for x in meta]},
        'write-ms': {'without': statistics.median(wplain) * 1000,
                     'with': statistics.median(wmeta) * 1000},
    }
