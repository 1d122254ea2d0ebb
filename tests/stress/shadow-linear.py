#!/usr/bin/env python3
"""Linearizability test of the shadow driver, from an outside review.

Three NBD clients keep up to 12 overlapping requests in flight against a
shadow node with a metadata child on a real qemu-storage-daemon (with
--qcow2: against a qcow2 node over it, which grows the shadow node as it
allocates): unaligned and sub-chunk writes biased to chunk boundaries and
the disk's end, FUA, write-zeroes, trims, flushes and reads; between
them instant switches, option changes (write-mode, copy-compare,
prewarm), grows, SIGKILL and restart, sometimes with another active
child.  A per-512-byte-sector model checks every read: a live read may
return any write it overlapped or the last one before it; after a crash,
every write acknowledged before a completed flush (or with FUA) must read
back.  After waiting for the copy, every child reported synced must equal
the node byte for byte.

It found, in this project: a node a crash left half grown that would not
open; a grown length recorded before its new chunks had a holder; a
write past the old end acknowledged before the new length was durable;
a header write that hid a grow's new length (shadow-metadata.md,
"Runtime changes").  Each failure prints its seed and keeps its images.

Usage: shadow-linear.py [--seed S] [--seeds N] [--steps N] [--qcow2]
(make soak runs it; set TRACE=1 for the driver's trace events.)
"""
import argparse
import os
import queue
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, 'bench'))
from benchlib import QSD, qmp_connect, QEMU_IMG, MiB  # noqa: E402
import nbdio  # noqa: E402
from nbdio import (CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM,  # noqa: E402
                   CMD_WRITE_ZEROES, FLAG_FUA)

WORK = os.path.join(REPO, 'build', 'linear')
QEMU_IO = os.path.join(os.path.dirname(QEMU_IMG), 'qemu-io')

SEC = 512
INF = float('inf')

class Tick:
    def __init__(self): self.n = 0; self.l = threading.Lock()
    def tick(self):
        with self.l:
            self.n += 1; return self.n
CLK = Tick()

def pat(wid, first_sec, nsec):
    return b''.join(struct.pack('<QQ', wid, first_sec + i) * 32 for i in range(nsec))

def decode(buf, first_sec):
    out = []
    for i in range(len(buf) // SEC):
        b = buf[i*SEC:(i+1)*SEC]
        if b == bytes(SEC):
            out.append(0); continue
        wid, sec = struct.unpack('<QQ', b[:16])
        if b != struct.pack('<QQ', wid, sec) * 32 or sec != first_sec + i:
            parts = set()
            for j in range(0, SEC, 16):
                w2, s2 = struct.unpack('<QQ', b[j:j+16])
                if w2 == 0 and s2 == 0: parts.add(0)
                elif s2 == first_sec + i: parts.add(w2)
                else: parts.add(('bad', w2, s2))
            out.append(('mix', frozenset(parts)))
        else:
            out.append(wid)
    return out

class Entry:
    __slots__ = ('wid', 'val', 'sub', 'comp', 'kind', 'fua')
    def __init__(self, wid, val, sub, kind):
        self.wid = wid; self.val = val; self.sub = sub; self.comp = None; self.kind = kind; self.fua = False

class Model:
    def __init__(self, nsec, init):
        # init: list of values per sector (wid or 0)
        self.sec = [[Entry(-1, v, -INF, 'w')] for v in init]
        for l in self.sec: l[0].comp = -INF
        self.flushes = []  # (sub, comp)
        self.durable_tick = -INF   # writes completed before this tick are durable
    def grow(self, nsec):
        while len(self.sec) < nsec:
            e = Entry(-1, 0, -INF, 'w'); e.comp = -INF
            self.sec.append([e])
    def add(self, first, n, e):
        for i in range(first, first + n):
            self.sec[i].append(e)
    def allowed(self, i, rsub, rcomp, crash=False):
        L = self.sec[i]
        out = set()
        for v in L:
            if v.sub > rcomp: continue
            vc = v.comp if v.comp is not None else INF
            pruned = False
            for y in L:
                if y.kind == 't' or y.comp is None: continue
                if crash and y.comp >= self.durable_tick and not y.fua: continue
                if y.comp < rsub and y.sub > vc:
                    pruned = True; break
            if not pruned:
                out.add(v.val)
        return out
    def compact(self):
        # drop entries pruned by durable writes (safe for all future checks)
        for i, L in enumerate(self.sec):
            if len(L) < 6: continue
            keep = []
            for v in L:
                vc = v.comp if v.comp is not None else INF
                if any(y.kind != 't' and y.comp is not None and y.comp < self.durable_tick and y.sub > vc for y in L):
                    continue
                keep.append(v)
            self.sec[i] = keep

class QSDp:
    def __init__(self, work, trace=False):
        self.qmp_sock = os.path.join(work, 'qmp.sock'); self.nbd_sock = os.path.join(work, 'nbd.sock')
        for p in (self.qmp_sock, self.nbd_sock):
            if os.path.exists(p): os.remove(p)
        self.log = open(os.path.join(work, 'qsd.log'), 'ab')
        self.proc = subprocess.Popen([QSD, '--chardev', f'socket,id=mon,path={self.qmp_sock},server=on,wait=off',
                                   '--monitor', 'mon'] + (['--trace', 'shadow_*'] if os.environ.get('TRACE') else []) + ['--nbd-server', f'addr.type=unix,addr.path={self.nbd_sock}'],
                                  stdout=self.log, stderr=subprocess.STDOUT)
        t = time.time()
        while not os.path.exists(self.qmp_sock):
            if self.proc.poll() is not None or time.time() - t > 10: raise RuntimeError('qsd no start')
            time.sleep(0.01)
        self.qmp = qmp_connect(self.qmp_sock, self.proc, RuntimeError)
    def cmd(self, c, **a):
        return self.qmp.cmd(c, **a)
    def raw(self, c, **a):
        return self.qmp.cmd_raw(c, a) if hasattr(self.qmp, 'cmd_raw') else self.qmp.cmd_obj({'execute': c, 'arguments': a})
    def kill(self):
        self.proc.send_signal(signal.SIGKILL); self.proc.wait()
        try: self.qmp.close()
        except Exception: pass
    def stop(self):
        try: self.qmp.cmd('quit')
        except Exception: pass
        try: self.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise RuntimeError('HANG: qsd did not quit in 30 s')
        try: self.qmp.close()
        except Exception: pass


class Fail(Exception): pass

class Run:
    def __init__(self, seed, steps):
        self.seed = seed; self.rng = random.Random(seed); self.steps = steps
        self.work = os.path.join(WORK, str(seed))
        shutil.rmtree(self.work, ignore_errors=True); os.makedirs(self.work)
        r = self.rng
        self.chunk = r.choice([4096, 16384, 65536, 1 * MiB])
        self.size = r.choice([4 * MiB, 4 * MiB + 4096 + 512 * r.randrange(8), 3 * MiB + 512 * r.randrange(1, 64)])
        self.tiers = ['ta', 'tb', 'tc'][:r.choice([2, 2, 3])]
        self.opts = {'write-mode': r.choice(['sync', 'async']),
                  'copy-compare': r.random() < 0.4,
                  'prewarm': r.choice(['hot-first', 'sequential', 'off', 'hot-first']),
                  'prewarm-speed': r.choice([0, 2 * MiB, 8 * MiB]),
                  'read-from': r.choice(['active', 'fastest']),
                  'copy-on-read': r.random() < 0.7}
        ig = [None, self.chunk] + [x for x in (1 * MiB, 4 * MiB) if x >= self.chunk]
        self.ig = r.choice(ig)
        self.active = self.tiers[0]
        self.wid = 10
        self.log = open(os.path.join(self.work, 'run.log'), 'w')
        self.sync_data = r.random() < 0.5
        self.L(f'seed={seed} chunk={self.chunk} size={self.size} tiers={self.tiers} opts={self.opts} ig={self.ig} shadows_prefilled={self.sync_data}')
        nsec = self.size // SEC
        init = pat(1, 0, nsec)
        for t in self.tiers:
            with open(self.path(t), 'wb') as f:
                if t == self.tiers[0] or self.sync_data:
                    f.write(init)
                else:
                    f.truncate(self.size)
        open(self.path('md'), 'wb').close()
        self.model = Model(nsec, [1] * nsec)
        self.qsd = None
        self.top = 'sh0'
        if os.environ.get('QCOW'):
            self.top = 'disk'
            self.vsize = self.size
            q = os.path.join(self.work, 'q.qcow2')
            subprocess.run([QEMU_IMG, 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % r.choice([4096, 65536]), q, str(self.size)], check=True)
            # initial content: write pattern 1 through qemu-io
            subprocess.run([QEMU_IO, '-f', 'qcow2', '-c', 'write -P 0 0 %d' % 0, q], check=False, stdout=subprocess.DEVNULL)
            qd = open(q, 'rb').read()
            for t in self.tiers:
                with open(self.path(t), 'wb') as f:
                    if t == self.tiers[0] or self.sync_data: f.write(qd)
                    else: f.truncate(len(qd))
            self.model = Model(nsec, [0] * nsec)
    def L(self, m):
        self.log.write(f'{time.time():.3f} {m}\n'); self.log.flush()
    def path(self, t): return os.path.join(self.work, t + '.img')
    def shopts(self):
        o = {'driver': 'shadow', 'node-name': 'sh0', 'children': list(self.tiers), 'metadata': 'md',
             'chunk-size': self.chunk, 'active-child': self.active, **self.opts}
        if self.ig: o['intent-granularity'] = self.ig
        return o
    def start(self):
        self.qsd = QSDp(self.work)
        for t in self.tiers:
            self.qsd.cmd('blockdev-add', driver='raw', **{'node-name': t}, file={'driver': 'file', 'filename': self.path(t)})
        self.qsd.cmd('blockdev-add', driver='file', **{'node-name': 'md'}, filename=self.path('md'))
        self.qsd.cmd('blockdev-add', **self.shopts())
        if self.top == 'disk':
            self.qsd.cmd('blockdev-add', driver='qcow2', **{'node-name': 'disk'}, file='sh0')
        self.export()
    def export(self):
        self.qsd.cmd('block-export-add', type='nbd', id='e0', **{'node-name': self.top}, name='sh0', writable=True)
        self.clients = []
        for i in range(3):
            c = nbdio.Client(self.qsd.nbd_sock, 'sh0')
            c.start_reader(CLK)
            self.clients.append(c)
        self.cursize = self.clients[0].size
        self.pending = {}  # (ci, handle) -> info
    def unexport(self):
        self.drain()
        for c in self.clients: c.close()
        self.qsd.cmd('block-export-del', id='e0', mode='hard')
        t = time.time()
        while self.qsd.cmd('query-block-exports'):
            if time.time() - t > 20: raise Fail('HANG: export not deleted')
            time.sleep(0.02)
    # ---- guest I/O
    def submit(self):
        r = self.rng
        ci = r.randrange(len(self.clients)); c = self.clients[ci]
        nsec = self.cursize // SEC
        k = r.random()
        if k < 0.08:
            h = c.submit(CMD_FLUSH); self.pending[(ci, h)] = ('flush', CLK.tick(), None); return
        maxn = max(1, min(nsec, r.choice([1, 8, self.chunk // SEC, 2 * self.chunk // SEC + 3, 600])))
        n = r.randrange(1, maxn + 1)
        # bias toward chunk boundaries and the end of the disk
        if r.random() < 0.3:
            b = r.randrange(0, nsec * SEC // self.chunk + 1) * (self.chunk // SEC)
            first = max(0, min(nsec - 1, b + r.randrange(-n, 2)))
        elif r.random() < 0.2:
            first = max(0, nsec - r.randrange(1, n + 8))
        else:
            first = r.randrange(nsec)
        n = min(n, nsec - first)
        off, ln = first * SEC, n * SEC
        if k < 0.55:
            self.wid += 1; w = self.wid
            fua = r.random() < 0.15
            data = pat(w, first, n)
            e = Entry(w, w, CLK.tick(), 'w'); e.fua = fua
            self.model.add(first, n, e)
            h = c.submit(CMD_WRITE, off, ln, data, FLAG_FUA if fua else 0)
            self.pending[(ci, h)] = ('write', e, (first, n))
        elif k < 0.68:
            fl = r.choice([0, nbdio.FLAG_NO_HOLE]) | (FLAG_FUA if r.random() < 0.1 else 0)
            e = Entry(-2, 0, CLK.tick(), 'w'); e.fua = bool(fl & FLAG_FUA)
            self.model.add(first, n, e)
            h = c.submit(CMD_WRITE_ZEROES, off, ln, flags=fl)
            self.pending[(ci, h)] = ('zero', e, (first, n))
        elif k < 0.78:
            e = Entry(-3, 0, CLK.tick(), 't'); e.fua = False
            self.model.add(first, n, e)
            h = c.submit(CMD_TRIM, off, ln)
            self.pending[(ci, h)] = ('trim', e, (first, n))
        else:
            t = CLK.tick()
            h = c.submit(CMD_READ, off, ln)
            self.pending[(ci, h)] = ('read', t, (first, n))
    def reap(self, block=False):
        got = 0
        for ci, c in enumerate(self.clients):
            while True:
                try:
                    rep = c.reply(timeout=0 if not block else 0.001)
                except queue.Empty:
                    break
                got += 1
                info = self.pending.pop((ci, rep.handle))
                self.complete(info, rep)
        return got
    def complete(self, info, rep):
        kind = info[0]
        if rep.error:
            raise Fail(f'guest {kind} {info[2] if len(info)>2 else ""} failed errno {rep.error} {rep.message}')
        if kind == 'flush':
            self.model.durable_tick = max(self.model.durable_tick, info[1])
            return
        if kind in ('write', 'zero', 'trim'):
            e = info[1]; e.comp = rep.stamp
            if getattr(e, 'fua', False):
                pass
            return
        if kind == 'read':
            first, n = info[2]
            self.check_read(rep.data, first, info[1], rep.stamp, 'live read')
    def check_read(self, data, first, rsub, rcomp, what, crash=False):
        vals = decode(data, first)
        bad = []
        for i, v in enumerate(vals):
            al = self.model.allowed(first + i, rsub, rcomp, crash)
            if isinstance(v, tuple) and v[0] == 'mix':
                self.L(f'{what}: torn sector {first+i}: {sorted(v[1], key=str)} allowed {sorted(al, key=str)}')
                if all(x in al for x in v[1]): continue
            if v not in al:
                bad.append((first + i, v, sorted(al, key=str)))
        if bad:
            msg = f'{what}: {len(bad)} bad sectors, first: ' + '; '.join(
                f'sector {b[0]} (off {b[0]*SEC}) read {b[1]} allowed {b[2]}' for b in bad[:5])
            raise Fail(msg)
    def drain(self):
        t = time.time()
        while self.pending:
            self.reap(block=True)
            if time.time() - t > 60:
                raise Fail(f'HANG: {len(self.pending)} requests pending for 60 s: {list(self.pending.values())[:3]}')
    # ---- control ops
    def reopen(self):
        self.qsd.cmd('blockdev-reopen', options=[self.shopts()])
    def stats(self):
        for e in self.qsd.cmd('query-blockstats', **{'query-nodes': True}):
            if e.get('node-name') == 'sh0':
                return e['driver-specific']
    def full_read(self):
        c = self.clients[0]
        out = bytearray()
        off = 0
        while off < self.cursize:
            n = min(1 * MiB, self.cursize - off)
            out += c.read(off, n, timeout=60)
            off += n
        return bytes(out)
    def check_all(self, crash=False, what='full read'):
        t0 = CLK.tick()
        data = self.full_read()
        self.check_read(data, 0, t0 if not crash else INF, CLK.tick(), what, crash)
        return data
    def shlen(self):
        for n in self.qsd.cmd('query-named-block-nodes', flat=True):
            if n['node-name'] == 'sh0': return n['image']['virtual-size']
    def compare_children(self, data):
        st = self.stats()
        if self.top == 'disk':
            ln = self.shlen()
            with open(self.path(st['active']), 'rb') as f: data = f.read(ln)
            self.L(f'shadow length {ln}')
            act = [c for c in st['children'] if c['state'] == 'active'][0]
            if act['valid-bytes'] < ln:
                self.L('active not hydrated, skip compare'); return st
        for ch in st['children']:
            name = ch['node-name']
            if ch['state'] == 'synced' or (ch['state'] == 'active' and ch['valid-bytes'] >= len(data)):
                with open(self.path(name), 'rb') as f:
                    cd = f.read(len(data))
                if cd != data:
                    diffs = [i for i in range(0, len(data), SEC) if cd[i:i+SEC] != data[i:i+SEC]]
                    st2 = self.stats()
                    raise Fail(f'child {name} reported {ch["state"]} (valid {ch["valid-bytes"]}) but differs from node at {len(diffs)} sectors, first offs {diffs[:6]}; child has {decode(cd[diffs[0]:diffs[0]+SEC], diffs[0]//SEC)} node has {decode(data[diffs[0]:diffs[0]+SEC], diffs[0]//SEC)}; stats now {[(c["node-name"], c["state"]) for c in st2["children"]]}')
        return st
    def op_switch(self):
        others = [t for t in self.tiers if t != self.active]
        st = self.stats()
        cand = [c['node-name'] for c in st['children'] if c['node-name'] in others and c['state'] != 'degraded']
        if not cand: return
        new = self.rng.choice(cand)
        old = self.active; self.active = new
        try:
            self.reopen(); self.L(f'switch {old} -> {new}')
        except Exception as e:
            self.active = old; self.L(f'switch refused {e}')
    def op_opts(self):
        k = self.rng.choice(['write-mode', 'copy-compare', 'prewarm', 'prewarm-speed'])
        v = {'write-mode': ['sync', 'async'], 'copy-compare': [True, False],
             'prewarm': ['off', 'hot-first', 'sequential'], 'prewarm-speed': [0, 2 * MiB]}[k]
        self.opts[k] = self.rng.choice(v)
        self.reopen(); self.L(f'opt {k}={self.opts[k]}')
    def op_grow(self):
        inc = self.rng.choice([512, 4096, self.chunk, self.chunk + 1536, 3 * self.chunk // 2 // 512 * 512 or 512, 1 * MiB])
        new = self.cursize + inc
        self.drain()
        try:
            self.qsd.cmd('block_resize', **{'node-name': 'sh0'}, size=new)
            self.L(f'grow live {self.cursize} -> {new}')
            for c in self.clients: c.close()
            self.qsd.cmd('block-export-del', id='e0', mode='hard')
            while self.qsd.cmd('query-block-exports'): time.sleep(0.02)
            self.export()
        except Exception as e:
            if 'HANG' in str(e): raise
            self.L(f'grow via unexport ({e})')
            self.unexport()
            if not os.environ.get('NOKILLGROW') and self.rng.random() < 0.25:
                # SIGKILL while block_resize runs
                d = self.rng.choice([0, 0.0005, 0.002, 0.005, 0.02])
                th = threading.Timer(d, lambda: self.qsd.proc.send_signal(signal.SIGKILL))
                th.start()
                try:
                    self.qsd.cmd('block_resize', **{'node-name': 'sh0'}, size=new)
                    self.L(f'grow {new} finished before kill ({d})')
                    self.model.grow(new // SEC)
                except Exception as e2:
                    self.L(f'grow {new} killed ({d}): {e2}')
                th.join(); self.qsd.proc.wait()
                self.model.grow(new // SEC)
                self.cursize = new
                self.clients = []
                self.crash_restart_after_kill()
                return
            self.qsd.cmd('block_resize', **{'node-name': 'sh0'}, size=new)
            self.export()
        if self.cursize != new:
            raise Fail(f'after grow export size {self.cursize} != {new}')
        self.model.grow(new // SEC)
    def op_check(self, wait_sync):
        self.drain()
        if wait_sync:
            t = time.time()
            sp = self.opts['prewarm-speed']; pw = self.opts['prewarm']
            self.opts['prewarm-speed'] = 0
            if pw == 'off': self.opts['prewarm'] = 'hot-first'
            if self.opts['write-mode'] == 'async': self.opts['write-mode'] = 'sync'
            self.reopen()
            while True:
                st = self.stats()
                need = self.cursize if self.top == 'sh0' else self.shlen()
                if all(c['state'] in ('synced',) or (c['state'] == 'active' and c['valid-bytes'] >= need) for c in st['children']):
                    break
                if time.time() - t > 90:
                    raise Fail(f'HANG?: not synced after 90 s: {st["children"]}')
                time.sleep(0.1)
            self.L(f'synced after {time.time()-t:.1f}s')
        data = self.check_all(what='check read')
        self.compare_children(data)
        self.model.compact()
    def op_flush_sync(self):
        c = self.clients[0]
        t = CLK.tick()
        h = c.submit(CMD_FLUSH); self.pending[(0, h)] = ('flush', t, None)
        # wait for it by draining everything
        self.drain()
        self.model.durable_tick = max(self.model.durable_tick, t)
    def crash_restart_after_kill(self):
        try: self.qsd.qmp.close()
        except Exception: pass
        self.crash_restart(already=True)
    def crash_restart(self, already=False):
        self.L('SIGKILL')
        if not already: self.qsd.kill()
        for c in self.clients:
            try: c.close()
            except Exception: pass
        # pending requests never completed: comp stays None (may or may not have happened)
        self.pending = {}
        if self.rng.random() < 0.3:
            self.active = self.rng.choice(self.tiers)
        self.L(f'restart active={self.active}')
        try:
            self.start()
        except Exception as e:
            raise Fail(f'reopen after crash failed: {e}; log: {open(os.path.join(self.work,"qsd.log")).read()[-800:]}')
        nsec = self.cursize // SEC
        self.model.sec = self.model.sec[:nsec]
        if len(self.model.sec) < nsec:
            raise Fail(f'node bigger after crash than model: {self.cursize}')
        data = self.check_all(crash=True, what='after crash')
        # reset model to what was read
        vals = decode(data, 0)
        for i, v in enumerate(vals):
            e = Entry(-1, v, -INF, 'w'); e.comp = -INF
            self.model.sec[i] = [e]
        self.model.durable_tick = -INF
    def run(self):
        self.start()
        r = self.rng
        kill_at = None
        for step in range(self.steps):
            # keep up to N in flight
            while len(self.pending) < r.choice([1, 4, 8, 12]):
                self.submit()
            time.sleep(r.choice([0, 0, 0.001, 0.005]))
            self.reap()
            x = r.random()
            if x < 0.012: self.op_switch()
            elif x < 0.02: self.op_opts()
            elif x < 0.028 and self.top == 'sh0': self.op_grow()
            elif x < 0.032: self.op_check(wait_sync=r.random() < 0.5)
            elif x < 0.035: self.op_flush_sync()
            elif x < 0.041:
                if r.random() < 0.5: self.op_flush_sync()
                self.crash_restart()
            if self.qsd.proc.poll() is not None:
                raise Fail(f'QSD DIED rc={self.qsd.proc.returncode}: {open(os.path.join(self.work,"qsd.log")).read()[-2000:]}')
        self.op_check(wait_sync=True)
        self.op_flush_sync()
        self.crash_restart()
        self.op_check(wait_sync=True)
        self.qsd.stop()

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seed', type=int, default=None,
                   help='first seed (default: random)')
    p.add_argument('--seeds', type=int, default=10, help='seeds to run')
    p.add_argument('--steps', type=int, default=2000, help='steps per seed')
    p.add_argument('--qcow2', action='store_true',
                   help='the clients write to a qcow2 node over the shadow node')
    p.add_argument('--keep', action='store_true',
                   help='keep the images of passing seeds too')
    args = p.parse_args()
    if args.qcow2:
        os.environ['QCOW'] = '1'
    seed0 = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f'# linear: {args.seeds} seeds from {seed0}, {args.steps} steps'
          f'{", qcow2 over the shadow node" if args.qcow2 else ""}', flush=True)
    fails = 0
    for seed in range(seed0, seed0 + args.seeds):
        r = Run(seed, args.steps)
        t = time.time()
        try:
            r.run()
            print(f'ok seed {seed} {time.time() - t:.1f} s', flush=True)
            if not args.keep:
                shutil.rmtree(r.work, ignore_errors=True)
        except Exception as e:
            fails += 1
            rc = r.qsd.proc.poll() if r.qsd else None
            print(f'not ok seed {seed}: {type(e).__name__}: {e} [qsd rc={rc}]; '
                  f'images and log in {r.work}', flush=True)
            traceback.print_exc()
            try:
                if r.qsd and r.qsd.proc.poll() is None:
                    r.qsd.kill()
            except Exception:
                pass
    print(f'# linear: {args.seeds} seeds from {seed0}, {args.seeds - fails} passed, '
          f'{fails} failed', flush=True)
    return 1 if fails else 0


if __name__ == '__main__':
    sys.exit(main())
