#!/usr/bin/env python3
"""Kill tests of the shadow driver with a metadata child.

Each round starts a real qemu-storage-daemon with a shadow node over two
tiers and a metadata node, runs a writer over NBD (writes of 4 KiB blocks
that each carry their block number and a sequence number, with flushes and
FUA writes), does one of

  prewarm   the copy to the empty tier is under way,
  hydrate   an instant switch to the tier that is still syncing,
  writes    heavy mixed writes on synced tiers, maybe after a switch,
  idle      as writes, then the writer stops and the daemon is killed
            after two periodic commits: the shadow must come back synced,
  grow      libvirt's layout: a qcow2 node over the shadow node, the
            writer on the qcow2 node; writes to clusters not yet allocated
            grow the shadow node from its write path while flushes commit,

kills the daemon with SIGKILL at a random moment, restarts it with the
same graph and checks:

  - every block reads back as the last write acknowledged before a
    completed flush (or FUA write), or as a later write to that block:
    nothing acknowledged and flushed is lost, and no block holds data
    that was never written there;
  - every child reported synced reads back identical to the node;
  - once the copy is let run, every child becomes synced and identical.

Prints one TAP line per round and a summary.  Usage:
  shadow-kill.py [--rounds N] [--seed S] [--size MiB] [--keep]
"""

import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'bench'))
import benchlib  # noqa: E402
from benchlib import MiB, QEMU_IMG, Daemon  # noqa: E402
from nbdclient import (NBDClient, CMD_WRITE, CMD_FLUSH,  # noqa: E402
                       CMD_FLAG_FUA)

BLOCK = 4096
MAGIC = 0x5348414457544b4c      # "SHADWTKL"
CHUNK = 64 * 1024


def block_data(block, seq):
    unit = struct.pack('<QQQ', MAGIC, block, seq)
    data = unit * (BLOCK // len(unit))
    return data + unit[:BLOCK - len(data)]


def decode(block, data):
    """The sequence number a block holds, or None if it is not a whole
    block written by this test at this place."""
    magic, b, seq = struct.unpack('<QQQ', data[:24])
    if magic != MAGIC or b != block or data != block_data(block, seq):
        return None
    return seq


class Model:
    """What each block may hold.  durable[b]: the sequence number a
    completed flush (or FUA write) made durable; issued[b]: every sequence
    number sent to b."""

    def __init__(self, nblocks, zero_start=False):
        self.zero_start = zero_start   # blocks not written read as zeroes
        self.durable = [0] * nblocks
        self.issued = [set() for _ in range(nblocks)]
        self.acked = {}         # block -> latest acked seq not yet durable
        self.writes = 0
        self.flushes = 0

    def check(self, block, data):
        if self.zero_start and self.durable[block] == 0 and \
                data == bytes(len(data)):
            return None
        seq = decode(block, data)
        if seq is None:
            return f'block {block} holds data never written there'
        if seq == self.durable[block] or (seq > self.durable[block] and
                                           seq in self.issued[block]):
            return None
        return (f'block {block} holds write {seq}, but write '
                f'{self.durable[block]} was flushed')


class Writer(threading.Thread):
    def __init__(self, sock, model, nblocks, rng, qd, export='sh0'):
        super().__init__(daemon=True)
        self.nbd = NBDClient(sock, export)
        self.model = model
        self.nblocks = nblocks
        self.rng = rng
        self.qd = qd
        self.seq = 0
        self.error = None
        self.lost = None
        self.stop = threading.Event()
        # Most writes go to a hot window, as real workloads do
        self.hot = rng.randrange(0, nblocks // 2)
        self.hot_len = rng.choice((nblocks // 16, nblocks // 4))

    def run(self):
        m = self.model
        inflight = {}
        busy = set()
        try:
            while not self.stop.is_set() or inflight:
                while len(inflight) < self.qd and not self.stop.is_set():
                    if self.rng.random() < 0.1:
                        h = self.nbd.submit(CMD_FLUSH)
                        inflight[h] = ('flush', dict(m.acked))
                        continue
                    n = self.rng.choice((1, 1, 2, 4, 16))
                    if self.rng.random() < 0.8:
                        first = self.hot + self.rng.randrange(self.hot_len)
                    else:
                        first = self.rng.randrange(0, self.nblocks - n)
                    blocks = range(first, first + n)
                    if busy.intersection(blocks):
                        break
                    self.seq += 1
                    data = b''.join(block_data(b, self.seq) for b in blocks)
                    fua = self.rng.random() < 0.05
                    for b in blocks:
                        m.issued[b].add(self.seq)
                    busy.update(blocks)
                    h = self.nbd.submit(CMD_WRITE, first * BLOCK, data=data,
                                        flags=CMD_FLAG_FUA if fua else 0)
                    inflight[h] = ('write', blocks, self.seq, fua)
                if not inflight:
                    continue
                h, err, _ = self.nbd.reply()
                req = inflight.pop(h)
                if err:
                    self.error = f'{req[0]} failed: errno {err}'
                    return
                if req[0] == 'flush':
                    m.flushes += 1
                    for b, seq in req[1].items():
                        m.durable[b] = max(m.durable[b], seq)
                        if m.acked.get(b) == seq:
                            del m.acked[b]
                    continue
                _, blocks, seq, fua = req
                busy.difference_update(blocks)
                m.writes += 1
                for b in blocks:
                    if fua:
                        m.durable[b] = max(m.durable[b], seq)
                    else:
                        m.acked[b] = seq
        except (ConnectionError, OSError) as e:
            # What the kill does; before the kill, a failure (one_round)
            self.lost = f'{type(e).__name__}: {e}'
            return


def shadow_opts(work, **extra):
    return {'driver': 'shadow', 'node-name': 'sh0',
            'children': [benchlib.file_node('ta', f'{work}/a.raw'),
                         benchlib.file_node('tb', f'{work}/b.raw')],
            'metadata': 'md', **extra}


def stop(d):
    try:
        d.stop()
    except (OSError, EOFError, RuntimeError):
        d.proc.kill()
        d.proc.wait()


def start(work):
    d = Daemon(work)
    d.exported = {}
    d.add({'driver': 'file', 'node-name': 'md',
           'filename': f'{work}/meta.raw'})
    return d


def reopen(d, **extra):
    opts = {'driver': 'shadow', 'node-name': 'sh0', 'children': ['ta', 'tb'],
            'metadata': 'md', **extra}
    d.cmd('blockdev-reopen', options=[opts])


def compare(a, b):
    res = subprocess.run([QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw',
                          a, b], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
    return None if res.returncode == 0 else res.stdout.strip()


def children(d):
    return {c['node-name']: c for c in d.shadow_stats()['children']}


def node_length(d, node='sh0'):
    for n in d.cmd('query-named-block-nodes', flat=True):
        if n['node-name'] == node:
            return n['image']['virtual-size']
    raise RuntimeError(f'no node {node}')


def verify(d, model, nblocks, top='sh0'):
    """Check the disk's content (@top: the shadow node, or a format node
    over it) against the model, then the synced children against the
    shadow node."""
    size = node_length(d)
    nbd = NBDClient(d.nbd_sock, top)
    step = 256
    for first in range(0, nblocks, step):
        data = nbd.read(first * BLOCK, step * BLOCK)
        for i in range(step):
            err = model.check(first + i, data[i * BLOCK:(i + 1) * BLOCK])
            if err:
                nbd.close()
                return err
    nbd.close()
    if top != 'sh0':
        # A format node over the shadow node may grow it: no export of it
        # or of its children may unshare resize.  The children are
        # compared as files after a clean stop (one_round()).
        return None
    node = f'nbd+unix:///sh0?socket={d.nbd_sock}'
    for name, c in children(d).items():
        if c['state'] in ('synced', 'active') and c['valid-bytes'] == size:
            if name not in d.exported:
                d.exported[name] = d.export(name, writable=False)
            err = compare(node, d.exported[name])
            if err:
                return f'child {name} ({c["state"]}) differs: {err}'
    return None


def add_top(d, scenario):
    """The node the writer writes to, exported"""
    if scenario != 'grow':
        d.export('sh0')
        return 'sh0'
    d.add({'driver': 'qcow2', 'node-name': 'disk', 'file': 'sh0'})
    d.export('disk')
    return 'disk'


SCENARIOS = ('prewarm', 'hydrate', 'writes', 'idle', 'grow')


def one_round(work, rng, size, log, only=None):
    nblocks = size // BLOCK
    for name in ('a.raw', 'b.raw', 'meta.raw'):
        path = os.path.join(work, name)
        if os.path.exists(path):
            os.remove(path)
    scenario = rng.choice(('prewarm', 'hydrate', 'writes') * 3 +
                          ('idle', 'grow', 'grow'))
    scenario = only or scenario
    if scenario == 'grow':
        # Both tiers hold a new qcow2 image: its clusters are allocated,
        # and the shadow node grown, as the writer comes to them
        benchlib.run(QEMU_IMG, 'create', '-f', 'qcow2', '-o',
                     f'cluster_size={rng.choice((4096, 65536))}',
                     f'{work}/a.raw', str(size))
        shutil.copy(f'{work}/a.raw', f'{work}/b.raw')
    else:
        with open(os.path.join(work, 'a.raw'), 'wb') as f:
            for b in range(nblocks):
                f.write(block_data(b, 0))
        benchlib.run(QEMU_IMG, 'create', '-f', 'raw', f'{work}/b.raw',
                     str(size))
    benchlib.run(QEMU_IMG, 'create', '-f', 'raw', f'{work}/meta.raw',
                 str(MiB))

    # grow: small chunks and intent regions, more headers and commits
    geometry = ({'chunk-size': 16384, 'intent-granularity': 16384}
                if scenario == 'grow' else {})
    mode = rng.choice(('sync', 'async'))
    qd = rng.choice((1, 4, 8, 16))
    speed = rng.choice((8, 16, 32)) * MiB
    model = Model(nblocks, zero_start=scenario == 'grow')
    d = start(work)
    try:
        if scenario == 'prewarm':
            d.add(shadow_opts(work, **{'write-mode': mode,
                                       'prewarm-speed': speed}))
        elif scenario == 'hydrate':
            d.add(shadow_opts(work, prewarm='off',
                              **{'write-mode': mode}))
        else:
            if scenario == 'idle':
                # Kept in step, so that the shadow is synced when idle
                mode = 'sync'
            d.add(shadow_opts(work, **{'write-mode': mode}, **geometry))
            d.wait_event('SHADOW_CHILD_SYNCED', timeout=60, child='tb')
        top = add_top(d, scenario)
        writer = Writer(d.nbd_sock, model, nblocks, rng, qd, export=top)
        writer.start()
        writing_since = time.monotonic()
        writing_until = None
        if scenario == 'hydrate':
            time.sleep(rng.uniform(0, 0.4))
            reopen(d, **{'active-child': 'tb', 'write-mode': mode,
                         'prewarm-speed': speed})
        elif scenario in ('writes', 'idle') and rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.4))
            reopen(d, **{'active-child': 'tb', 'write-mode': mode})
        if scenario == 'grow':
            # Switches while the node grows, the kill soon after one: the
            # first write after a switch writes a header naming the new
            # active child while a grow records its length
            active, kill_at = 'ta', 0
            for _ in range(rng.randrange(1, 4)):
                pause = rng.uniform(0.05, 0.4)
                time.sleep(pause)
                active = 'tb' if active == 'ta' else 'ta'
                reopen(d, **{'active-child': active, 'write-mode': mode},
                       **geometry)
                kill_at += pause
            pause = rng.uniform(0, 0.03)
            kill_at += pause
            time.sleep(pause)
        else:
            kill_at = rng.uniform(0.1, 1.5)
            time.sleep(kill_at)
        if scenario == 'idle':
            writer.stop.set()
            writer.join(10)
            writing_until = time.monotonic()
            # Two periodic commits clear the intent bits
            time.sleep(11)
            kill_at += 11
        # A daemon that died on its own (an abort) would look to the writer
        # and the restart like the kill: it must still be there to kill,
        # and have taken writes if it had the time
        if d.proc.poll() is not None:
            return False, (f'{scenario}: qemu-storage-daemon died before '
                           f'the kill, status {d.proc.returncode}')
        if writer.lost:
            return False, (f'{scenario}: the writer lost the daemon before '
                           f'the kill: {writer.lost}')
        # (2 s: at queue depth 1 a slow fdatasync holds up every request)
        wrote_for = (writing_until or time.monotonic()) - writing_since
        if wrote_for >= 2 and model.writes + model.flushes == 0:
            return False, (f'{scenario}: no request acknowledged in '
                           f'{wrote_for:.2f} s of load')
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait()
        writer.join(10)
        if d.proc.returncode != -signal.SIGKILL:
            return False, (f'{scenario}: qemu-storage-daemon ended with '
                           f'status {d.proc.returncode}, not by the kill')
        if writer.error:
            return False, f'{scenario}: the writer saw an error: {writer.error}'
    finally:
        stop(d)

    # What the crash left, for a look when the round fails
    shutil.copy(os.path.join(work, 'meta.raw'),
                os.path.join(work, 'meta-after-kill.raw'))
    desc = (f'{scenario}, {mode}, qd {qd}, killed after {kill_at:.2f} s, '
            f'{model.writes} writes and {model.flushes} flushes acknowledged')
    d = start(work)
    try:
        d.add(shadow_opts(work, prewarm='off', **geometry))
        top = add_top(d, scenario)
        size = node_length(d)
        if scenario == 'grow':
            desc += f', the shadow node grown to {size} bytes'
        before = {n: (c['state'], c['valid-bytes'])
                  for n, c in children(d).items()}
        shadow = 'ta' if before['tb'][0] == 'active' else 'tb'
        if scenario == 'idle' and before[shadow][0] != 'synced':
            return False, f'{desc}: idle before the kill, but {before}'
        err = verify(d, model, nblocks, top)
        if err:
            return False, f'{desc}: after restart {before}: {err}'
        reopen(d, **{'active-child': 'ta', 'prewarm': 'hot-first'}, **geometry)
        deadline = time.monotonic() + 60
        while not all(c['state'] in ('synced', 'active') and
                      c['valid-bytes'] == size
                      for c in children(d).values()):
            if time.monotonic() > deadline:
                return False, f'{desc}: not synced in 60 s: {children(d)}'
            time.sleep(0.05)
        err = verify(d, model, nblocks, top)
        if err:
            return False, f'{desc}: after the copy: {err}'
        if scenario == 'grow':
            # Both synced: the same bytes up to the node's length (a longer
            # child reads as zeroes past it, as compare wants)
            d.stop()
            err = compare(f'{work}/a.raw', f'{work}/b.raw')
            if err:
                return False, f'{desc}: after the copy, the children differ: {err}'
        stale = {n: (size - v) // 1024 for n, (_s, v) in before.items()
                 if v < size}
        return True, f'{desc}; stale after restart (KiB): {stale or "none"}'
    finally:
        stop(d)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=20)
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--size', type=int, default=32, help='disk size in MiB')
    p.add_argument('--scenario', choices=SCENARIOS,
                   help='run only this scenario (default: a random one '
                   'each round)')
    p.add_argument('--verbose', action='store_true')
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = benchlib.fresh_dir('kill')
    print(f'# kill tests: {args.rounds} rounds, seed {seed}', flush=True)
    print(f'1..{args.rounds}', flush=True)
    passed = 0
    start_time = time.monotonic()
    for i in range(1, args.rounds + 1):
        try:
            ok, msg = one_round(work, rng, args.size * MiB, print,
                                args.scenario)
        except Exception as e:  # a crash of the test counts as a failure
            ok, msg = False, f'{type(e).__name__}: {e}'
        passed += ok
        if not ok:
            keep = os.path.join(os.path.dirname(work), f'kill-failed-{i}')
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(work, keep,
                            ignore=shutil.ignore_patterns('*.sock'))
            msg += f' (images kept in {keep})'
        print(f'{"ok" if ok else "not ok"} {i} - {msg}', flush=True)
    print(f'# kill tests: {args.rounds} rounds, {passed} passed, '
          f'{args.rounds - passed} failed, seed {seed}, '
          f'{time.monotonic() - start_time:.0f} s', flush=True)
    return 0 if passed == args.rounds else 1


if __name__ == '__main__':
    sys.exit(main())
