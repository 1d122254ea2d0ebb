#!/usr/bin/env python3
"""Model-based stress test of the shadow driver.

A real qemu-storage-daemon runs a shadow node over up to three tiers (ta,
tb, tc) and, in most segments, a metadata node.  Every tier and the
metadata are

    raw (the child) -> blkdebug (faults) -> blklogwrites -> file
                                                 `-> log: NBD to the recorder

The test sends random guest requests over NBD with several in flight
(reads, writes, FUA writes, write-zeroes, trims, flushes, block status,
never two on the same block at once), and between them random driver
operations: switches (normal and instant), option changes (write-mode,
prewarm, prewarm-speed, read-from, copy-on-read, copy-compare), child add and remove,
requests that must be refused, read-only reopens; blkdebug faults on
reads, writes and flushes of any tier and of the metadata; SIGKILLs at
random moments and clean restarts.  Each daemon's lifetime (an epoch)
ends in a kill or a clean stop; then crash states are built from the
blklogwrites logs (each flush boundary, subsets of the writes after it)
and each is opened by a fresh daemon and checked.

Checks: every read against the model (model.py) of what the disk may
hold; every child reported synced equals the node byte for byte; block
status never calls data a hole or zero; refused requests change nothing;
errors reach the guest only when a fault was injected where it may cause
them; the daemon never dies unless killed; the node opens after every
crash.

The run is a series of segments (fresh images and a random configuration
each; segment i of seed S has seed S+i), bounded by operations and crash
states.  Usage:
  shadow-stress.py [--ops N] [--crash-states N] [--seed S] [--steps N]
`--seed S --steps N` replays one segment for N steps (timing makes the
replay likely, not certain, to hit the same failure); with the same --ops
and --crash-states as the failed run, the same operations.  With
SHADOW_STRESS_TRACE='shadow_*' each daemon's log (in the failure's
directory) holds the driver's trace events.
"""

import argparse
import os
import pickle
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'bench'))
sys.path.insert(0, HERE)
from benchlib import QSD, MiB, qmp_connect  # noqa: E402
from qemu.qmp import ExecuteError  # noqa: E402
import mdinfo  # noqa: E402
import nbdio  # noqa: E402
from nbdio import (CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM,  # noqa: E402
                   CMD_WRITE_ZEROES, CMD_BLOCK_STATUS, FLAG_FUA, FLAG_DF,
                   FLAG_NO_HOLE, STATE_HOLE, STATE_ZERO)
import model as M  # noqa: E402
from model import BLOCK, block_data, decode, describe  # noqa: E402

TIERS = ('ta', 'tb', 'tc')
TIMEOUT = 60            # seconds a reply or QMP command may take
READ_PIECE = 256 * 1024


class Failure(Exception):
    """The driver broke its contract."""


class TestError(Exception):
    """The test itself is wrong (e.g. the log replay does not reproduce
    the images)."""


class Killed(Exception):
    """Our SIGKILL hit the daemon."""


def fault_config(rules):
    out = []
    for r in rules:
        out.append('[inject-error]')
        for k, v in r.items():
            out.append(f'{k} = "{v}"')
        out.append('')
    return '\n'.join(out)


FAULT_RULES = {
    'read': {'event': 'read_aio', 'iotype': 'read'},
    'write': {'event': 'write_aio', 'iotype': 'write'},
    'flush': {'event': 'flush_to_disk', 'iotype': 'flush'},
}


class Fault:
    def __init__(self, target, kind, once, errno, armed):
        self.target = target
        self.kind = kind
        self.once = once
        self.errno = errno
        self.armed = armed
        self.disarmed = None

    def overlaps(self, start, end):
        return self.armed < end and (self.disarmed is None or
                                     self.disarmed > start)

    def __str__(self):
        if self.kind == 'slow':
            return f'delays of {self.errno // 1000} us on {self.target}'
        return (f'{self.kind} fault on {self.target}'
                f'{" (once)" if self.once else ""}')


class Daemon:
    """A qemu-storage-daemon with QMP and an NBD server; its output goes
    to a log file."""

    def __init__(self, work, logname):
        self.qmp_sock = os.path.join(work, 'qmp.sock')
        self.nbd_sock = os.path.join(work, 'nbd.sock')
        for s in (self.qmp_sock, self.nbd_sock):
            if os.path.exists(s):
                os.remove(s)
        self.logpath = os.path.join(work, logname)
        self.logfile = open(self.logpath, 'wb')
        self.proc = subprocess.Popen(
            [QSD, '--chardev',
             f'socket,id=mon,path={self.qmp_sock},server=on,wait=off',
             '--monitor', 'mon',
             '--nbd-server', f'addr.type=unix,addr.path={self.nbd_sock}',
             *(['--trace', os.environ['SHADOW_STRESS_TRACE']]
               if os.environ.get('SHADOW_STRESS_TRACE') else [])],
            stdout=self.logfile, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.qmp_sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise TestError('qemu-storage-daemon did not start')
            time.sleep(0.005)
        self.qmp = qmp_connect(self.qmp_sock, self.proc, TestError)
        self.qmp.settimeout(TIMEOUT)

    def cmd(self, command, **args):
        return self.qmp.cmd(command, **args)

    def log_tail(self, n=6):
        try:
            with open(self.logpath, 'rb') as f:
                lines = f.read().decode(errors='replace').splitlines()
        except OSError:
            return ''
        return ' | '.join(lines[-n:])

    def died(self):
        """None while running, else how it ended."""
        rc = self.proc.poll()
        if rc is None:
            return None
        return f'signal {-rc}' if rc < 0 else f'exit {rc}'

    def kill(self):
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        self.close_qmp()

    def close_qmp(self):
        try:
            self.qmp.close()
        except Exception:   # the library raises whatever the loop saw
            pass
        self.logfile.close()

    def terminate(self):
        """A clean stop; its exit code."""
        self.proc.terminate()
        try:
            rc = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = 'hang'
        self.close_qmp()
        return rc


class Counters:
    def __init__(self):
        self.ops = {}
        self.faults = {}
        self.kills = 0
        self.restarts = 0
        self.crash_states = 0
        self.switches = {}
        self.steps = 0

    def op(self, kind, n=1):
        self.ops[kind] = self.ops.get(kind, 0) + n

    def total_ops(self):
        return sum(self.ops.values()) + sum(self.faults.values())

    def summary(self):
        def fmt(d):
            return ' '.join(f'{k}={v}' for k, v in sorted(d.items())) or '-'
        return (f'ops {self.total_ops()} ({fmt(self.ops)}); faults '
                f'{sum(self.faults.values())} ({fmt(self.faults)}); '
                f'switches {fmt(self.switches)}; kills {self.kills}, '
                f'restarts {self.restarts}, crash states {self.crash_states}')


class Segment:
    """Fresh images, one random configuration, a series of epochs."""

    def __init__(self, seed, work, recorder, clock, counters, args):
        self.seed = seed
        self.rng = random.Random(seed)
        self.work = work
        self.rec = recorder
        self.clock = clock
        self.cnt = counters
        self.args = args
        rng = self.rng
        size_mib, self.chunk = rng.choice(
            [(4, 4096), (4, 16384), (4, 65536), (8, 65536), (8, 16384),
             (8, 4096), (20, 4096)])
        self.size = size_mib * MiB
        self.nblocks = self.size // BLOCK
        self.chunk_blocks = self.chunk // BLOCK
        self.meta = rng.random() < 0.75
        self.qd = rng.choice((1, 4, 8, 8))
        self.step = 0
        self.max_steps = rng.randrange(400, 900)
        if args.steps:
            self.max_steps = args.steps
        self.desc = ''
        self.path = {t: os.path.join(work, f'{t}.raw') for t in TIERS}
        self.path['md'] = os.path.join(work, 'md.raw')
        self.conf = {t: os.path.join(work, f'{t}.conf')
                     for t in TIERS + ('md',)}
        self.dbg_serial = 0
        self.dbg_node = {}          # target -> its blkdebug node
        self.dbg_added = set()      # blkdebug nodes added at top level
        self.faults = []
        self.armed = {}             # target -> Fault now armed
        self.reopens = []           # (start, end) of successful reopens
        self.d = None
        self.nbd = None
        self.inflight = {}
        self.busy = set()
        self.killed = None          # stamp of our SIGKILL
        self.kill_timer = None
        self.pending = None         # (start, attached, active) in progress
        self.epoch_starts = [0]
        self.hydrating = False
        self.last_drain = [0, 0]

    # ----- set-up -----

    def log(self, msg):
        if self.args.verbose:
            print(f'# [{self.seed}:{self.step}] {msg}', flush=True)

    def create_images(self):
        rng = self.rng
        initial = [0] * self.nblocks
        a = bytearray(self.size)
        region = max(16, self.chunk_blocks)
        for first in range(0, self.nblocks, region):
            if rng.random() < 0.7:
                for b in range(first, min(first + region, self.nblocks)):
                    a[b * BLOCK:(b + 1) * BLOCK] = block_data(b, 1)
                    initial[b] = 1
        self.write_sparse(self.path['ta'], a)
        # The other tiers hold stale junk: a read served from them by
        # mistake shows
        for t in ('tb', 'tc'):
            junk = bytearray(self.size)
            for first in range(0, self.nblocks, region):
                if rng.random() < 0.6:
                    n = min(region, self.nblocks - first) * BLOCK
                    junk[first * BLOCK:first * BLOCK + n] = b'\xee' * n
            self.write_sparse(self.path[t], junk)
        with open(self.path['md'], 'wb') as f:
            f.write(bytes(MiB))
        self.model = M.Model(self.nblocks, initial)
        self.attached = ['ta', 'tb'] + (['tc'] if rng.random() < 0.4 else [])
        self.active = 'ta'
        self.opts = self.random_opts()
        # (start, end, attached, active): the graph after each change
        self.graph_log = [(0, 0, tuple(self.attached), self.active)]

    @staticmethod
    def write_sparse(path, data):
        """Zero ranges stay holes, as on a fresh sparse image."""
        with open(path, 'wb') as f:
            f.truncate(len(data))
            for off in range(0, len(data), 65536):
                piece = data[off:off + 65536]
                if piece.count(0) != len(piece):
                    f.seek(off)
                    f.write(piece)

    def random_opts(self):
        rng = self.rng
        opts = {
            'write-mode': rng.choice(('sync', 'sync', 'async')),
            'prewarm': rng.choice(('off', 'sequential', 'hot-first',
                                   'hot-first')),
            'prewarm-speed': rng.choice((0, 0, 256 * 1024, MiB, 8 * MiB)),
            'read-from': rng.choice(('active', 'fastest')),
            'copy-on-read': rng.random() < 0.7,
            'copy-compare': rng.random() < 0.5,
        }
        # Intent regions of one chunk, a few, 1 MiB, or the default
        # (16 MiB: the whole disk here)
        gran = rng.choice((self.chunk, self.chunk * 8, MiB, None))
        if gran is not None:
            opts['intent-granularity'] = max(gran, self.chunk)
        return opts

    def write_conf(self, target, rules):
        with open(self.conf[target], 'w') as f:
            f.write(fault_config(rules))

    def tree(self, t):
        self.dbg_serial += 1
        node = f'{t}-dbg{self.dbg_serial}'
        self.dbg_node[t] = node
        return {'driver': 'raw', 'node-name': t, 'discard': 'unmap',
                'file': {'driver': 'blkdebug', 'node-name': node,
                         'config': self.conf[t], 'discard': 'unmap',
                         'image': {
                             'driver': 'blklogwrites',
                             'node-name': f'{t}-log', 'discard': 'unmap',
                             'file': {'driver': 'file',
                                      'node-name': f'{t}-file',
                                      'filename': self.path[t],
                                      'discard': 'unmap'},
                             'log': {'driver': 'nbd',
                                     'node-name': f'{t}-lognbd',
                                     'server': {'type': 'unix',
                                                'path': self.rec.path},
                                     'export': t}}}}

    def shadow_opts(self, children, active, opts, **extra):
        o = {'driver': 'shadow', 'node-name': 'sh0',
             'children': list(children), 'active-child': active,
             'chunk-size': self.chunk, 'discard': 'unmap', **opts}
        if self.meta:
            o['metadata'] = 'md'
        o.update(extra)
        return o

    def start_daemon(self, name):
        d = Daemon(self.work, f'qsd-{self.seed}-{name}.log')
        try:
            for t in TIERS + (('md',) if self.meta else ()):
                d.cmd('blockdev-add', **self.tree(t))
        except Exception as e:
            d.kill()
            raise TestError(f'cannot add the tiers: {e}') from None
        return d

    def open_shadow(self, d, children, active, opts, point, rng=None):
        """blockdev-add of sh0; after a crash an add or remove of a child
        that was not made durable yet may be undone: retry then.  Returns
        (children, active) as opened."""
        children = list(children)
        for _ in range(4):
            try:
                # The driver takes a child's identity from its filename,
                # which QEMU refreshes lazily (see refresh_filenames())
                d.cmd('query-named-block-nodes')
                d.cmd('blockdev-add',
                      **self.shadow_opts(children, active, opts))
                return children, active
            except ExecuteError as e:
                msg = str(e)
                m = re.search(r"child '([^']+)' \(.*\) is not recorded", msg)
                if m and m[1] in children and self.undoable(m[1], point):
                    children.remove(m[1])
                    if m[1] == active:
                        active = self.active_before_add(m[1], point,
                                                        children)
                    continue
                m = re.search(r"records child '([^']+)'", msg)
                if m and m[1] in TIERS and m[1] not in children and \
                        self.undoable(m[1], point):
                    children.append(m[1])
                    continue
                self.log(f'graph log: {self.graph_log}; epochs '
                         f'{self.epoch_starts}; point {point}')
                raise Failure(f'the shadow node does not open (children '
                              f'{children}, active {active}): {msg}')
        raise Failure(f'the shadow node does not open: {children}')

    def undoable(self, tier, point):
        """May the add or remove of @tier be lost by a crash at @point?
        Yes if it was done in the epoch of @point and no guest flush issued
        after it completed before the point."""
        since = max(s for s in self.epoch_starts if s < point)
        for start, end, att, _act in self.graph_log:
            if start <= since or start > point:
                continue
            prev = self.graph_at(start - 0.5)[0]
            if (tier in att) == (tier in prev):
                continue
            if end > point:
                return True
            durable = any(f.ok and f.issue > end and f.ack is not None and
                          f.ack < point for f in self.model.flushes)
            if not durable:
                return True
        return False

    def active_before_add(self, tier, point, children):
        for start, _end, att, act in reversed(self.graph_log):
            if start < point and tier not in att and act in children:
                return act
        return children[0]

    def graph_at(self, point):
        """(attached, active) at @point: the last change completed
        before it."""
        att, act = self.graph_log[0][2], self.graph_log[0][3]
        for start, end, a, b in self.graph_log:
            if end < point:
                att, act = a, b
        return list(att), act

    def record_graph(self, start, end=None):
        self.graph_log.append((start, end or self.clock.tick(),
                               tuple(self.attached), self.active))
        self.pending = None

    def will_change(self, start, attached, active):
        """A change of the graph in progress: a kill may keep it or not."""
        self.pending = (start, tuple(attached), active)

    # ----- QMP -----

    def qmp(self, kind, command, **args):
        """A QMP command; returns (ok, result or error message).  Raises
        Killed if our SIGKILL hit, Failure if the daemon died or hung."""
        try:
            res = self.d.cmd(command, **args)
            return True, res
        except ExecuteError as e:
            return False, str(e)
        except Exception as e:  # connection lost, timeout
            self.lost(f'QMP {command}: {type(e).__name__} {e}')
        finally:
            self.events()

    def lost(self, what):
        if self.killed is not None:
            raise Killed()
        time.sleep(0.2)
        how = self.d.died()
        if how:
            raise Failure(f'qemu-storage-daemon died ({how}) during {what}; '
                          f'log: {self.d.log_tail()}')
        if 'Disconnect client' in self.d.log_tail(3):
            raise Failure(f'the NBD server dropped the connection during '
                          f'{what}; log: {self.d.log_tail(3)}')
        raise Failure(f'{what}: no answer in {TIMEOUT} s (hang?)')

    def stats(self):
        ok, res = self.qmp('stats', 'query-blockstats',
                           **{'query-nodes': True})
        if not ok:
            raise Failure(f'query-blockstats failed: {res}')
        for e in res:
            if e.get('node-name') == 'sh0':
                st = e['driver-specific']
                kids = {c['node-name']: c for c in st['children']}
                act = kids.get(self.active)
                if act and act['valid-bytes'] == self.size:
                    self.hydrating = False
                return st, kids
        raise Failure('query-blockstats has no entry for sh0')

    def refresh_filenames(self):
        """The driver records a child's identity as a hash of the child's
        filename when it opens or adds it, but QEMU computes a filename
        that is a json: description (ours are, blkdebug and blklogwrites
        being in the way) only lazily, e.g. for query-named-block-nodes:
        whether anybody asked before changes the identity (a driver bug,
        reported separately).  Asking every time keeps it stable."""
        self.qmp('refresh', 'query-named-block-nodes')

    def node_file(self):
        ok, res = self.qmp('query', 'query-named-block-nodes')
        for n in res if ok else []:
            if n['node-name'] == 'sh0':
                return n['file']
        return None

    def child_names(self):
        """{node name: child name} of the children of sh0."""
        ok, g = self.qmp('graph', 'x-debug-query-block-graph')
        if not ok:
            raise Failure(f'x-debug-query-block-graph failed: {g}')
        ids = {n['id']: n['name'] for n in g['nodes']}
        sh0 = [n['id'] for n in g['nodes'] if n['name'] == 'sh0']
        return {ids[e['child']]: e['name'] for e in g['edges']
                if sh0 and e['parent'] == sh0[0]}

    def child_name(self, tier):
        return self.child_names().get(tier)

    def events(self):
        try:
            evs = self.d.qmp.get_events(wait=False)
        except Exception:
            return
        now = self.clock.tick()
        since = self.last_drain[0]
        self.last_drain = [self.last_drain[1], now]
        for ev in evs:
            name, data = ev['event'], ev.get('data', {})
            if name == 'SHADOW_CHILD_DEGRADED':
                child = data.get('child')
                if not any(f.target == child and f.kind != 'slow' and
                           f.overlaps(since, now) for f in self.faults):
                    raise Failure(
                        f'child {child} degraded ({data.get("operation")}: '
                        f'{data.get("error")}) with no fault injected on it')
            elif name == 'SHADOW_CHILD_SYNCED':
                if data.get('child') == self.active:
                    self.hydrating = False

    # ----- guest I/O -----

    def connect(self):
        self.nbd = nbdio.Client(self.d.nbd_sock, 'sh0')
        self.nbd.start_reader(self.clock)
        self.inflight = {}
        self.busy = set()

    def export(self, writable=True):
        ok, res = self.qmp('export', 'block-export-add', type='nbd',
                           id='exp-sh0', **{'node-name': 'sh0'},
                           name='sh0', writable=writable)
        if not ok:
            raise Failure(f'block-export-add failed: {res}')
        self.connect()

    def wait_one(self):
        try:
            r = self.nbd.reply(timeout=TIMEOUT)
        except queue.Empty:
            self.lost(f'guest I/O ({len(self.inflight)} requests in '
                      f'flight)')
        except ConnectionError as e:
            self.lost(f'guest I/O: {e}')
        self.complete(r)

    def wait_for(self, match):
        """Wait until no request @match(inflight entry) is in flight."""
        while any(match(i) for i in self.inflight.values()):
            self.wait_one()

    def drain(self):
        while self.inflight:
            self.wait_one()

    def submit(self, kind, first, count, flags=0):
        blocks = range(first, first + count)
        while len(self.inflight) >= self.qd or \
                (kind != 'flush' and self.busy.intersection(blocks)):
            self.wait_one()
        if self.killed is not None:
            raise Killed()
        stamp = self.clock.tick()
        off, length = first * BLOCK, count * BLOCK
        op = None
        data = b''
        if kind == 'write':
            value = self.model.new_value()
            op = self.model.issue('write', first, count, flags & FLAG_FUA,
                                  stamp, value)
            data = b''.join(block_data(b, value) for b in blocks)
            cmd = CMD_WRITE
        elif kind == 'zero':
            op = self.model.issue('zero', first, count, flags & FLAG_FUA,
                                  stamp)
            cmd = CMD_WRITE_ZEROES
        elif kind == 'trim':
            op = self.model.issue('trim', first, count, False, stamp)
            cmd = CMD_TRIM
        elif kind == 'flush':
            op = self.model.issue('flush', 0, 0, False, stamp)
            cmd = CMD_FLUSH
            off = length = 0
        elif kind == 'read':
            cmd = CMD_READ
        else:
            cmd = CMD_BLOCK_STATUS
        if kind != 'flush':
            self.busy.update(blocks)
        try:
            h = self.nbd.submit(cmd, off, length, data, flags)
        except OSError as e:
            self.lost(f'guest I/O submit: {e}')
        self.inflight[h] = (kind, first, count, flags, op, stamp,
                            self.active, self.hydrating)

    def complete(self, r):
        kind, first, count, flags, op, issue, active, hyd = \
            self.inflight.pop(r.handle)
        self.busy.difference_update(range(first, first + count))
        what = (f'{kind} of blocks {first}..{first + count - 1}'
                if kind != 'flush' else 'flush')
        if r.error and not self.excused(kind, flags, issue, r.stamp, active,
                                        hyd):
            near = [str(f) for f in self.faults if f.overlaps(issue, r.stamp)]
            raise Failure(f'{what} failed with errno {r.error} '
                          f'{r.message} with no fault that may cause it '
                          f'(active {active}{", hydrating" if hyd else ""}; '
                          f'faults meanwhile: {near or "none"})')
        if op is not None:
            self.model.complete(op, not r.error, r.stamp)
        if r.error:
            return
        if kind == 'read':
            for i in range(count):
                b = first + i
                err = self.model.check_read(
                    b, r.data[i * BLOCK:(i + 1) * BLOCK])
                if err:
                    if r.holes:
                        err += f' (the read came with hole chunks {r.holes})'
                    raise Failure(f'{what}: {err}')
        elif kind == 'status':
            if self.hydrating and 'status-hydrating' in self.args.avoid:
                return
            self.check_status(r.extents, first * BLOCK, count,
                              lambda b: self.model.live[b], pin=True)

    def excused(self, kind, flags, start, end, active, hydrating):
        """May a fault explain an error of this request?  A fault counts
        while it is armed; some of its effects last until the node is
        reopened: a failed metadata write fails guest writes and flushes
        until then, a child that failed is degraded until then (and if it
        was the only one holding a chunk that the active child has not
        hydrated yet, that chunk cannot be read or partly written), and a
        copy-up that failed stops until then.  A shadow that failed keeps
        the chunks no other child holds with its copy flushed: flushes
        (and FUA writes, which commit) fail until that changes, at the
        latest until a reopen."""
        for f in self.faults:
            if f.armed > end or f.kind == 'slow':
                continue
            live = f.overlaps(start, end)
            sticky = not self.reopened_between(f.disarmed, start)
            if f.target == 'md':
                if kind not in ('read', 'status') and f.kind != 'read' and \
                        sticky:
                    return True
                continue
            if (kind == 'flush' or flags & FLAG_FUA) and \
                    f.target != active and (live or sticky):
                return True
            if kind in ('read', 'status'):
                if live and f.kind == 'read' and f.target == active:
                    return True
            elif kind == 'flush':
                if live and f.target == active and f.kind == 'flush':
                    return True
            else:
                if live and f.target == active and f.kind == 'write':
                    return True
                if live and f.target == active and f.kind == 'flush' and \
                        flags & FLAG_FUA:
                    return True
            if hydrating and sticky and kind != 'flush':
                return True
        return False

    def reopened_between(self, after, before):
        """Was the node reopened (or restarted) between the two stamps?"""
        if after is None:
            return False
        return any(s > after and e < before for s, e in self.reopens)

    def check_status(self, extents, offset, count, allowed, pin):
        """Block status must not call a block a hole or zero when it holds
        data."""
        end = offset + count * BLOCK
        for off, length, fl in self._extents(extents, offset, end):
            if not fl & (STATE_HOLE | STATE_ZERO):
                continue
            b0, b1 = off // BLOCK, (off + length + BLOCK - 1) // BLOCK
            for b in range(b0, b1):
                vals = allowed(b)
                if 0 not in vals:
                    names = '|'.join(n for bit, n in ((STATE_HOLE, 'hole'),
                                                      (STATE_ZERO, 'zero'))
                                     if fl & bit)
                    raise Failure(
                        f'block status calls bytes {off}..{off + length - 1}'
                        f' {names}, but block {b} holds '
                        f'{M.Model.fmt(vals)}')
                if pin and fl & STATE_ZERO and off <= b * BLOCK and \
                        (b + 1) * BLOCK <= off + length:
                    self.model.pin(b, 0)

    @staticmethod
    def _extents(extents, offset, end):
        if extents and len(extents[0]) == 3:
            return extents
        out = []
        for length, fl in extents:
            length = min(length, end - offset)
            out.append((offset, length, fl))
            offset += length
            if offset >= end:
                break
        return out

    def pick_range(self, kind):
        rng = self.rng
        cb = self.chunk_blocks
        if rng.random() < 0.3 and cb <= 64:
            # whole chunks: no copy-up needed while hydrating
            n = rng.choice((1, 1, 2, 4))
            first = rng.randrange(0, self.nblocks // cb - n + 1) * cb
            return first, n * cb
        count = rng.choice((1, 1, 2, 3, 4, 8, 16))
        if rng.random() < 0.6:
            # a hot window, so that requests meet chunks being copied
            lo = (self.seed * 7919) % max(1, self.nblocks - 256)
            first = lo + rng.randrange(0, 256 - count)
        else:
            first = rng.randrange(0, self.nblocks - count + 1)
        return first, count

    def guest_op(self, kind):
        rng = self.rng
        flags = 0
        if kind == 'flush':
            self.submit('flush', 0, 0)
            self.cnt.op('flush')
            return
        first, count = self.pick_range(kind)
        if kind == 'write' and rng.random() < 0.1:
            flags |= FLAG_FUA
            self.cnt.op('write-fua')
        elif kind == 'zero':
            if rng.random() < 0.5:
                flags |= FLAG_NO_HOLE
            if rng.random() < 0.1:
                flags |= FLAG_FUA
            self.cnt.op('write-zeroes')
        elif kind == 'read':
            # QEMU's NBD server drops the connection when a sparse read
            # fails: sparse reads only while no error may be excused
            if rng.random() < 0.8 or (
                    self.hydrating and
                    'status-hydrating' in self.args.avoid) or self.excused(
                    'read', 0, self.clock.tick(), float('inf'), self.active,
                    self.hydrating):
                flags |= FLAG_DF
            self.cnt.op('read')
        else:
            self.cnt.op({'write': 'write', 'trim': 'trim',
                         'status': 'block-status'}[kind])
        self.submit(kind, first, count, flags)

    # ----- whole-disk checks -----

    def read_all(self, allowed=None, excuse_faults=False):
        """Read the whole node with no other request in flight and check
        it: against @allowed (block -> values) or the live model.  Returns
        the data, or None if a read failed and a fault excuses it."""
        self.drain()
        out = bytearray(self.size)
        failed = False
        for off in range(0, self.size, READ_PIECE):
            n = min(READ_PIECE, self.size - off)
            start = self.clock.tick()
            try:
                self.nbd.submit(CMD_READ, off, n, flags=FLAG_DF)
                r = self.nbd.reply(timeout=TIMEOUT)
            except queue.Empty:
                self.lost('a read of the whole disk')
            except (ConnectionError, OSError) as e:
                self.lost(f'a read of the whole disk: {e}')
            if r.error:
                if excuse_faults == 'crash':
                    # Check what can be read around what cannot
                    failed = True
                    for b in range(off // BLOCK, (off + n) // BLOCK):
                        self.nbd.submit(CMD_READ, b * BLOCK, BLOCK,
                                        flags=FLAG_DF)
                        r1 = self.nbd.reply(timeout=TIMEOUT)
                        if not r1.error:
                            self.check_block(b, r1.data, allowed)
                    continue
                if excuse_faults and self.excused('read', 0, start, r.stamp,
                                                  self.active,
                                                  self.hydrating):
                    failed = True
                    continue
                raise Failure(f'reading bytes {off}..{off + n - 1} failed: '
                              f'errno {r.error} {r.message}')
            out[off:off + n] = r.data
            for i in range(n // BLOCK):
                b = off // BLOCK + i
                self.check_block(b, r.data[i * BLOCK:(i + 1) * BLOCK],
                                 allowed)
        return None if failed else bytes(out)

    def check_block(self, b, data, allowed):
        if allowed is None:
            err = self.model.check_read(b, data)
        else:
            vals = allowed(b)
            v = decode(b, data)
            err = None if v is not None and v in vals else (
                f'block {b} reads {describe(b, data)}, but may '
                f'only hold {M.Model.fmt(vals)}')
        if err:
            raise Failure(err)

    def status_all(self, allowed, pin):
        try:
            ext = self.nbd.block_status(0, self.size, timeout=TIMEOUT)
        except queue.Empty:
            self.lost('block status of the whole disk')
        except (ConnectionError, OSError) as e:
            self.lost(f'block status of the whole disk: {e}')
        except nbdio.NBDError as e:
            raise Failure(f'block status failed: {e}')
        self.check_status(ext, 0, self.nblocks, allowed, pin)

    def compare_synced(self, node_data, where):
        """Every child reported synced must equal the node."""
        _st, kids = self.stats()
        n = 0
        for name, c in kids.items():
            if c['state'] != 'synced':
                continue
            n += 1
            if c['valid-bytes'] != self.size:
                raise Failure(f'{where}: child {name} is synced with '
                              f'valid-bytes {c["valid-bytes"]} of '
                              f'{self.size}')
            with open(self.path[name], 'rb') as f:
                data = f.read(self.size)
            if data != node_data:
                for b in range(self.nblocks):
                    s = slice(b * BLOCK, (b + 1) * BLOCK)
                    if data[s] != node_data[s]:
                        raise Failure(
                            f'{where}: child {name} is reported synced but '
                            f'block {b} holds {describe(b, data[s])} where '
                            f'the disk reads {describe(b, node_data[s])}')
        return kids, n

    def synced_check(self):
        self.cnt.op('synced-check')
        data = self.read_all(excuse_faults=True)
        if data is not None:
            self.compare_synced(data, 'synced check')

    # ----- faults -----

    def set_fault(self, target, fault):
        """Swap the blkdebug node under @target for one with the rules of
        @fault (None: no rules); blkdebug cannot change its rules at run
        time, but reopening the raw node with a new `file` can."""
        rules = []
        if fault and fault.kind == 'slow':
            # errno 0: blkdebug only delays the request
            for kind in ('read', 'write', 'flush'):
                r = dict(FAULT_RULES[kind])
                r['errno'] = '0'
                r['delay-ns'] = str(fault.errno)
                rules.append(r)
        elif fault:
            r = dict(FAULT_RULES[fault.kind])
            r['errno'] = str(fault.errno)
            if fault.once:
                r['once'] = 'on'
            rules.append(r)
        self.write_conf(target, rules)
        self.dbg_serial += 1
        node = f'{target}-dbg{self.dbg_serial}'
        old = self.dbg_node[target]
        ok, res = self.qmp('fault', 'blockdev-add', driver='blkdebug',
                           **{'node-name': node}, config=self.conf[target],
                           image=f'{target}-log', discard='unmap')
        if not ok:
            raise TestError(f'blockdev-add of {node}: {res}')
        ok, res = self.qmp('fault', 'blockdev-reopen', options=[{
            'driver': 'raw', 'node-name': target, 'file': node,
            'discard': 'unmap'}])
        if not ok:
            # A reopen flushes first: a fault armed before may fail it
            self.qmp('fault', 'blockdev-del', **{'node-name': node})
            return False
        self.dbg_node[target] = node
        if old in self.dbg_added:
            self.qmp('fault', 'blockdev-del', **{'node-name': old})
            self.dbg_added.discard(old)
        self.dbg_added.add(node)
        # Clean rules in the file for the next daemon's open
        self.write_conf(target, [])
        return True

    def arm_fault(self):
        rng = self.rng
        targets = list(TIERS) + (['md', 'md'] if self.meta else [])
        targets += [self.active] * 2
        target = rng.choice(targets)
        if target in self.armed:
            return self.disarm_fault(target)
        kind = rng.choice(('read', 'write', 'write', 'flush', 'flush',
                           'slow'))
        if 'shadow-flush-fault' in self.args.avoid and kind == 'flush' and \
                target in TIERS and target != self.active:
            return
        if 'hydrating-write-fault' in self.args.avoid and kind == 'write' \
                and target in TIERS and self.meta:
            # a write fault on a child that is or may become active while
            # it hydrates
            return
        if any(i[0] == 'read' and not i[3] & FLAG_DF
               for i in self.inflight.values()):
            self.drain()
        # A flush fault is always once: blockdev-reopen flushes first, so
        # a lasting one could not be swapped out again
        fault = Fault(target, kind, kind == 'flush' or rng.random() < 0.7,
                      rng.choice((5, 5, 5, 28)), 0)
        if kind == 'slow':
            # a slow tier: every request waits (errno holds the delay)
            fault.once = False
            fault.errno = rng.choice((200, 1000, 5000)) * 1000
        # A fault counts from before the swap, to the end of the swap back
        fault.armed = self.clock.tick()
        self.faults.append(fault)
        if not self.set_fault(target, fault):
            fault.disarmed = self.clock.tick()
            return
        self.armed[target] = fault
        role = ('metadata' if target == 'md' else
                'active' if target == self.active else
                'shadow' if target in self.attached else 'detached')
        key = f'{kind}-{role}'
        self.cnt.faults[key] = self.cnt.faults.get(key, 0) + 1
        self.log(f'armed {fault}')

    def disarm_fault(self, target=None):
        if target is None:
            if not self.armed:
                return
            target = self.rng.choice(sorted(self.armed))
        fault = self.armed[target]
        for _ in range(3):
            if self.set_fault(target, None):
                break
        else:
            raise Failure(f'cannot remove the {fault}: blockdev-reopen of '
                          f'{target} fails')
        fault.disarmed = self.clock.tick()
        del self.armed[target]
        self.log(f'disarmed {fault}')

    def faults_near(self, start):
        """Is a fault armed, or may one that was still have effects?"""
        return any(f.kind != 'slow' and
                   not self.reopened_between(f.disarmed, start)
                   for f in self.faults)

    # ----- driver operations -----

    def reopen(self, kind, active=None, opts=None, children=None, **extra):
        o = self.shadow_opts(children or self.attached,
                             active or self.active, opts or self.opts,
                             **extra)
        start = self.clock.tick()
        ok, res = self.qmp(kind, 'blockdev-reopen', options=[o])
        if ok:
            self.reopens.append((start, self.clock.tick()))
        elif 'cannot be reset to its default value' in res:
            raise Failure(f'blockdev-reopen with the children '
                          f'{o["children"]} is refused: {res} (the children '
                          f'are {self.child_names()}); no reopen (switch) '
                          f'can list the children any more')
        return ok, res, start

    def unchanged(self, before_file, what):
        """A refused request must change nothing."""
        st, _kids = self.stats()
        if st['active'] != self.active:
            raise Failure(f'{what} was refused, but the active child is now '
                          f'{st["active"]}, not {self.active}')
        after = self.node_file()
        if after != before_file:
            raise Failure(f'{what} was refused, but the node changed: '
                          f'{before_file} -> {after}')
        if sorted(_kids) != sorted(self.attached):
            raise Failure(f'{what} was refused, but the children are now '
                          f'{sorted(_kids)}, not {sorted(self.attached)}')

    def op_switch(self):
        rng = self.rng
        others = [t for t in self.attached if t != self.active]
        if not others:
            return self.op_add()
        target = rng.choice(others)
        quiet = rng.random() < 0.5
        if quiet:
            self.drain()
        _st, kids = self.stats()
        state = kids[target]['state']
        # A trim, or any write in async mode, that completes after the
        # state was read leaves the target lacking chunks: the switch is
        # then instant although the target was reported synced
        changing = any(i[0] in ('write', 'zero', 'trim')
                       for i in self.inflight.values())
        before = self.node_file()
        opts = dict(self.opts)
        if rng.random() < 0.3:
            opts = self.random_opts()
        start = self.clock.tick()
        self.will_change(start, self.attached, target)
        ok, res, _ = self.reopen('switch', active=target, opts=opts)
        if not ok:
            self.pending = None
        faults = self.faults_near(start)
        what = f'switch from {self.active} to {target} ({state})'
        if not ok:
            self.cnt.switches['refused'] = \
                self.cnt.switches.get('refused', 0) + 1
            self.log(f'{what} refused: {res}')
            if not faults and quiet and self.opts['write-mode'] == 'sync' \
                    and (state == 'synced' or
                         (self.meta and state in ('syncing', 'stale'))):
                raise Failure(f'{what} was refused: {res}')
            self.unchanged(before, what)
            return
        if state == 'degraded':
            raise Failure(f'{what} was accepted: a switch to a degraded '
                          f'child must be refused')
        if not self.meta and state == 'stale' and quiet and \
                self.opts['prewarm'] == 'off' and opts['prewarm'] == 'off':
            raise Failure(f'{what} was accepted without metadata')
        instant = state != 'synced'
        self.active = target
        if not instant:
            _st, kids = self.stats()
            if kids[target]['valid-bytes'] < self.size:
                if not changing and not faults:
                    raise Failure(f'{what} with no request in flight and '
                                  f'no fault: the new active child lacks '
                                  f'{self.size - kids[target]["valid-bytes"]}'
                                  f' bytes')
                instant = True
        kind = 'instant' if instant else 'normal'
        self.cnt.switches[kind] = self.cnt.switches.get(kind, 0) + 1
        self.log(f'{what}: done ({kind})')
        self.opts = opts
        if instant:
            self.hydrating = True
        self.record_graph(start)
        if instant and (rng.random() < 0.5 or opts['prewarm'] == 'off' or
                        opts['prewarm-speed']) and \
                'status-hydrating' not in self.args.avoid:
            # Before any read copies a chunk up: block status must not
            # call the unhydrated chunks holes
            self.drain()
            self.cnt.op('block-status')
            self.status_all(lambda b: self.model.live[b], pin=False)

    def op_options(self):
        opts = self.random_opts()
        start = self.clock.tick()
        before = self.node_file()
        ok, res, _ = self.reopen('options', opts=opts)
        self.cnt.op('options')
        if not ok:
            if not self.faults_near(start):
                raise Failure(f'reopen with options {opts} failed: {res}')
            self.unchanged(before, 'a reopen with new options')
            return
        self.opts = opts
        self.log(f'options {opts}')

    def op_add(self):
        free = [t for t in TIERS if t not in self.attached]
        if not free:
            return self.op_remove()
        t = self.rng.choice(free)
        start = self.clock.tick()
        self.will_change(start, self.attached + [t], self.active)
        self.refresh_filenames()
        ok, res = self.qmp('add', 'x-blockdev-change', parent='sh0', node=t)
        self.cnt.op('child-add')
        if not ok:
            self.pending = None
            if not self.faults_near(start):
                raise Failure(f'adding child {t} failed: {res}')
            return
        self.attached.append(t)
        self.record_graph(start)
        self.log(f'added {t}')
        self.renumbered = False

    def op_remove(self):
        rng = self.rng
        if len(self.attached) < 2 or rng.random() < 0.15 or \
                ('remove-holder' in self.args.avoid and self.hydrating):
            t = self.active
        else:
            t = rng.choice([x for x in self.attached if x != self.active])

        name = self.child_name(t)
        if name is None:
            raise Failure(f'{t} is attached but not a child of sh0 in the '
                          f'block graph')
        before = self.node_file()
        start = self.clock.tick()
        if t != self.active:
            self.will_change(start, [x for x in self.attached if x != t],
                             self.active)
        ok, res = self.qmp('remove', 'x-blockdev-change', parent='sh0',
                           child=name)
        if not ok:
            self.pending = None
        if t == self.active:
            self.cnt.op('child-remove-active')
            if ok:
                raise Failure(f'removing the active child {t} ({name}) was '
                              f'accepted')
            self.unchanged(before, f'removing the active child {t}')
            return
        self.cnt.op('child-remove')
        if not ok:
            self.log(f'removing {t} refused: {res}')
            self.unchanged(before, f'removing child {t}')
            return
        self.attached.remove(t)
        self.record_graph(start)
        self.log(f'removed {t} ({name})')
        self.renumbered = False

    def op_bad(self):
        """Requests the node must refuse, changing nothing."""
        rng = self.rng
        before = self.node_file()
        choice = rng.choice(('chunk', 'children', 'metadata-child',
                             'no-child'))
        if choice == 'metadata-child' and (
                not self.meta or 'metadata-child' in self.args.avoid):
            choice = 'chunk'
        if choice == 'chunk':
            what = 'a reopen with another chunk-size'
            ok, res, _ = self.reopen('bad', **{'chunk-size': self.chunk * 2})
        elif choice == 'children':
            what = 'a reopen that does not list every child'
            if len(self.attached) < 2:
                return
            kids = [t for t in self.attached if t != self.active]
            ok, res, _ = self.reopen('bad', children=[self.active] +
                                     kids[1:])
        elif choice == 'metadata-child':
            what = 'x-blockdev-change removing the metadata child'
            ok, res = self.qmp('bad', 'x-blockdev-change', parent='sh0',
                               child='metadata')
        else:
            what = 'x-blockdev-change removing a child that does not exist'
            ok, res = self.qmp('bad', 'x-blockdev-change', parent='sh0',
                               child='children.99')
        self.cnt.op('refused-request')
        if ok:
            raise Failure(f'{what} was accepted')
        self.unchanged(before, what)

    def op_trickle(self):
        """Seconds of a few writes and flushes: long enough for the
        periodic metadata commit (every 5 s) to meet guest flushes."""
        self.cnt.op('trickle')
        seconds = self.rng.uniform(1, 7)
        main, self.rng = self.rng, random.Random(self.step)
        end = time.monotonic() + seconds
        overlap = self.rng.random() < 0.5
        try:
            while time.monotonic() < end:
                if overlap:
                    # a flush, a write acknowledged while the flush's
                    # commit runs, a second flush that meets that commit
                    # (and maybe a periodic one queued behind it)
                    self.guest_op('flush')
                    self.guest_op('write')
                    self.wait_for(lambda i: i[0] == 'write')
                    self.guest_op('flush')
                else:
                    # bursts
                    for _ in range(self.rng.randrange(1, 5)):
                        self.guest_op(self.rng.choice(('write', 'write',
                                                       'flush', 'flush',
                                                       'read')))
                time.sleep(self.rng.uniform(0.001, 0.03))
        finally:
            self.rng = main

    def op_readonly(self):
        """Drop the export, reopen read-only, read, reopen read-write."""
        self.unexport()
        if self.hydrating and 'readonly-hydrating' in self.args.avoid:
            self.export()
            return
        self.cnt.op('read-only-reopen')
        ok, res, _ = self.reopen('ro', **{'read-only': True})
        self.log(f'read-only reopen: {ok} {res}')
        if ok:
            ok2, res2 = self.qmp('ro', 'block-export-add', type='nbd',
                                 id='exp-ro', **{'node-name': 'sh0'},
                                 name='sh0', writable=False)
            if ok2:
                self.connect()
                for _ in range(4):
                    first, count = self.pick_range('read')
                    self.submit('read', first, count, FLAG_DF)
                self.drain()
                self.nbd.close()
                self.delete_export('exp-ro')
            ok, res, _ = self.reopen('ro', **{'read-only': False})
            if not ok:
                raise Failure(f'the node cannot be reopened read-write after '
                              f'a read-only reopen: {res}')
        self.export()

    def op_inactivate(self):
        """Inactivate the node and activate it again, as the source of a
        migration that fails at its switchover.  With the writable export
        attached QEMU must refuse, and the node go on as before; without
        it the node stops cleanly and, activated, reads its maps back.
        The I/O that follows checks both against the model."""
        if self.rng.random() < 0.5:
            self.cnt.op('inactivate-refused')
            ok, res = self.qmp('inactivate', 'blockdev-set-active',
                               **{'node-name': 'sh0'}, active=False)
            self.log(f'inactivation with the export attached: {ok} {res}')
            if ok or 'Operation not permitted' not in res:
                raise Failure(f'blockdev-set-active active=false with a '
                              f'writable NBD export attached: {res}, not '
                              f'refused for the export')
            return
        self.unexport()
        self.cnt.op('inactivate')
        ok, res = self.qmp('inactivate', 'blockdev-set-active',
                           **{'node-name': 'sh0'}, active=False)
        self.log(f'inactivation: {ok} {res}')
        if not ok:
            # Its clean stop flushes the children and writes the header
            if not self.fault_armed():
                raise Failure(f'the inactivation failed with no fault '
                              f'armed: {res}')
            self.export()
            return
        for attempt in range(2):
            ok, res = self.qmp('activate', 'blockdev-set-active',
                               **{'node-name': 'sh0'}, active=True)
            self.log(f'activation: {ok} {res}')
            if ok:
                break
            # Its load reads the metadata and the children's lengths
            if attempt or not self.fault_armed():
                why = 'the faults disarmed' if attempt else 'no fault armed'
                raise Failure(f'the activation after a clean inactivation '
                              f'failed ({why}): {res}')
            for target in sorted(self.armed):
                self.disarm_fault(target)
        self.export()

    def fault_armed(self):
        """Is a fault that fails requests armed (not a slow tier)?"""
        return any(f.kind != 'slow' for f in self.armed.values())

    def unexport(self):
        """Wait for the guest's requests, then drop its export."""
        self.drain()
        self.nbd.close()
        self.nbd = None
        self.delete_export('exp-sh0')

    def delete_export(self, export):
        """Delete @export once its client is gone.  The server may take
        a moment to see a closed connection: until then the export is
        'still in use', which block-export-del refuses."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            ok, res = self.qmp('ro', 'block-export-del', id=export)
            if ok:
                break
            if 'still in use' not in res or time.monotonic() > deadline:
                raise Failure(f'block-export-del {export} failed: {res}')
            time.sleep(0.01)
        while not self.export_deleted():
            if time.monotonic() > deadline:
                raise Failure(f'the NBD export {export} was not deleted')

    def export_deleted(self):
        ok, res = self.qmp('ro', 'query-block-exports')
        if ok and not res:
            return True
        time.sleep(0.01)
        return False

    # ----- epochs -----

    def snapshot(self):
        base = {}
        for t in TIERS + (('md',) if self.meta else ()):
            with open(self.path[t], 'rb') as f:
                base[t] = f.read()
        return base

    def start_epoch(self, after):
        """Start a daemon on the images; after a kill or a clean stop check
        what it serves."""
        for t in TIERS + ('md',):
            self.write_conf(t, [])
        self.base = self.snapshot()
        self.rec_serial = self.rec.serial
        self.epoch_start = self.clock.tick()
        self.armed = {}
        self.dbg_added = set()
        self.killed = None
        self.kill_timer = None
        self.pending = None
        self.d = self.start_daemon(f'{self.step}')
        self.log(f'start ({after}): children {self.attached}, active '
                 f'{self.active}, options {self.opts}')
        point = self.epoch_start
        if after == 'kill':
            point = self.kill_point
        children, active = self.open_shadow(self.d, self.attached,
                                            self.active, self.opts, point)
        self.attached, self.active = children, active
        self.renumbered = True
        self.epoch_starts.append(self.epoch_start)
        self.reopens.append((self.epoch_start, self.epoch_start))
        self.record_graph(self.epoch_start, self.epoch_start)
        self.events()
        self.export()
        _st, kids = self.stats()
        self.hydrating = self.meta and \
            kids[self.active]['valid-bytes'] != self.size
        if after == 'fresh':
            return
        if after == 'kill':
            allowed = self.model.crash_view(self.kill_point)
            data = self.read_all(allowed)
            stamp = self.clock.tick()
            for b in range(self.nblocks):
                self.model.recovered(
                    b, decode(b, data[b * BLOCK:(b + 1) * BLOCK]), stamp)
        else:
            data = self.read_all()
            if self.meta:
                for name, state in self.synced_before.items():
                    if state == 'synced' and \
                            kids[name]['state'] not in ('synced', 'active'):
                        raise Failure(f'{name} was synced at the clean stop '
                                      f'but is {kids[name]["state"]} after '
                                      f'the restart')
        self.compare_synced(data, f'after the {after} restart')

    def arm_kill(self):
        delay = self.rng.uniform(0.0, 0.05)
        pid = self.d.proc.pid

        def kill():
            self.kill_point = self.clock.tick() + 0.5
            self.killed = self.kill_point
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.kill_timer = threading.Timer(delay, kill)
        self.kill_timer.start()

    def end_epoch(self, how):
        # A kill may have hit while a fault's rules were in a file
        for t in TIERS + ('md',):
            self.write_conf(t, [])
        if how == 'kill':
            if self.killed is None:
                self.kill_timer.join()
            self.d.kill()
            # An abort before the SIGKILL would pass for the kill
            if self.d.proc.returncode != -signal.SIGKILL:
                raise Failure(f'the daemon ended by {self.d.died()}, not by '
                              f'the kill; log: {self.d.log_tail()}')
            if self.nbd:
                self.nbd.close()
            self.cnt.kills += 1
        else:
            self.drain()
            for target in sorted(self.armed):
                self.disarm_fault(target)
            _st, kids = self.stats()
            self.synced_before = {n: c['state'] for n, c in kids.items()}
            self.nbd.close()
            start = self.clock.tick()
            rc = self.d.terminate()
            end = self.clock.tick()
            if rc != 0:
                raise Failure(f'the clean stop ended with {rc}; log: '
                              f'{self.d.log_tail()}')
            with open(self.path['md'], 'rb') as f:
                wrong = mdinfo.listed_numbers_wrong(f.read())
            if wrong:
                raise Failure('the clean header lists unit numbers that '
                              'are not those on disk (slot, unit, listed, '
                              f'on disk): {wrong}')
            self.model.clean_stop(start, end)
            self.cnt.restarts += 1
        for f in self.faults:
            if f.disarmed is None:
                f.disarmed = self.clock.tick()
        self.epoch_end = self.clock.tick()
        if self.pending:
            # Killed during a change: it may or may not have happened
            start, att, act = self.pending
            self.graph_log.append((start, self.epoch_end + 0.75, att, act))
            self.pending = None
        self.d = None
        self.nbd = None

    def pick_action(self):
        rng = self.rng
        x = rng.random()
        if x < 0.80:
            return 'io', rng.choices(
                ('read', 'write', 'zero', 'trim', 'flush', 'status'),
                (28, 32, 7, 6, 9, 5))[0]
        what = rng.choices(
            ('switch', 'options', 'add', 'remove', 'arm', 'disarm',
             'synced', 'bad', 'readonly', 'inactivate', 'trickle'),
            (20, 10, 7, 7, 18, 10, 10, 4, 1, 2, self.args.trickle))[0]
        if 'renumber' in self.args.avoid and not self.renumbered and \
                what in ('switch', 'options', 'bad', 'readonly'):
            return 'io', 'read'
        return 'driver', what

    def run_epoch(self, nsteps, how):
        kill_at = self.rng.randrange(nsteps // 2, nsteps) \
            if how == 'kill' else None
        for i in range(nsteps):
            if i == kill_at:
                self.arm_kill()
            self.step += 1
            self.cnt.steps += 1
            if self.step > self.max_steps:
                return False
            kind, what = self.pick_action()
            self.desc = what
            if kind == 'io':
                self.guest_op(what)
            else:
                {'switch': self.op_switch, 'options': self.op_options,
                 'add': self.op_add, 'remove': self.op_remove,
                 'arm': self.arm_fault, 'disarm': self.disarm_fault,
                 'synced': self.synced_check, 'bad': self.op_bad,
                 'readonly': self.op_readonly,
                 'inactivate': self.op_inactivate,
                 'trickle': self.op_trickle}[what]()
            if self.killed is not None:
                raise Killed()
            if not self.renumbered and 'renumber' in self.args.avoid and \
                    how == 'clean':
                # A restart numbers the children 0, 1, ... again
                return True
        if how == 'kill':
            # Keep the daemon busy until the kill lands (with another random
            # sequence: how long that takes depends on timing)
            main, self.rng = self.rng, random.Random(self.step)
            try:
                while self.killed is None:
                    self.guest_op(self.rng.choice(('write', 'read',
                                                   'flush')))
            finally:
                self.rng = main
            raise Killed()
        return True

    # ----- crash states -----

    def crash_states(self, n):
        logs = [log for log in self.rec.logs_after(self.rec_serial)
                if log.export in self.base]
        by_dev = {}
        for log in logs:
            by_dev.setdefault(log.export, []).append(log)
        for dev, ls in by_dev.items():
            if len(ls) != 1:
                raise TestError(f'{len(ls)} logs of {dev} in one epoch')
        entries = {dev: sorted(ls[0].entries, key=lambda e: e.pos)
                   for dev, ls in by_dev.items()}
        live = self.snapshot()
        if self.last_how == 'clean':
            # The logs must replay to what is on disk
            for dev, es in entries.items():
                img = self.replay(dev, es)
                if img != live[dev]:
                    b = next(i for i in range(0, len(img), BLOCK)
                             if img[i:i + BLOCK] != live[dev][i:i + BLOCK])
                    raise TestError(f'replaying the log of {dev} does not '
                                    f'give its image (offset {b})')
        rng = random.Random(zlib.crc32(f'{self.seed}:{self.step}'.encode()))
        points = self.cut_points(entries, n, rng)
        self.rec.recording = False
        try:
            for point, cut in points:
                self.step += 1
                self.cnt.steps += 1
                self.desc = f'crash state at {point}'
                self.crash_state(point, entries, rng, cut)
                self.cnt.crash_states += 1
        finally:
            self.rec.recording = True
            for dev, data in live.items():
                self.write_sparse(self.path[dev], data)
            if 'md' in live:
                # Put back as they were: as they were stamped, if they were
                mdinfo.restamp(self.path['md'], [self.path[t] for t in live
                                                 if t != 'md'])
        self.rec.drop()

    def cut_points(self, entries, n, rng):
        """Where the power goes: just after a guest flush was acknowledged,
        just before or after a device's flush, just after a metadata
        write, or anywhere."""
        flushes, metadata = [], []
        for dev, es in entries.items():
            for e in es:
                if e.kind == 'flush':
                    flushes += [e.stamp - 0.5, e.stamp + 0.5]
                elif dev == 'md':
                    metadata.append(e.stamp + 0.5)
        acks = [f.ack + 0.5 for f in self.model.flushes
                if f.ack and self.epoch_start < f.ack < self.epoch_end]
        classes = [c for c in (acks, flushes, metadata) if c]
        risky = self.risky_acks(entries)
        points = rng.sample(risky, min(len(risky), (n + 1) // 2))
        for _ in range(n - len(points)):
            if classes and rng.random() < 0.8:
                points.append((rng.choice(rng.choice(classes)), None))
            else:
                points.append((rng.randrange(self.epoch_start,
                                             self.epoch_end) + 0.5, None))
        return sorted(points)

    def risky_acks(self, entries):
        """Acknowledged guest flushes after which the tier that got a guest
        write the flush covers had not flushed it yet (its first log entry
        with the write's data came after the tier's last flush): where a
        power loss may lose acknowledged data.  Returns cut points, each
        with that tier to be cut at its last flush."""
        out = []
        first = {}              # (dev, value) -> first entry with it
        for dev, es in entries.items():
            if dev == 'md':
                continue
            for e in es:
                if e.kind != 'write':
                    continue
                for v in self.values_in(e):
                    first.setdefault((dev, v), e)
        for f in self.model.flushes:
            if not f.ok or not f.ack or \
                    not self.epoch_start < f.ack < self.epoch_end:
                continue
            point = f.ack + 0.5
            dev = self.graph_at(point)[1]
            es = entries.get(dev, [])
            fpos = max((e.pos for e in es
                        if e.kind == 'flush' and e.stamp < point), default=-1)
            for (d, v), e in first.items():
                op = self.model.writes.get(v)
                # the guest write itself: logged while it was in flight,
                # on the child that was active then
                if d == dev and e.pos > fpos and e.stamp < point and op and \
                        op.ok and op.ack < f.issue and \
                        op.issue < e.stamp < op.ack and \
                        self.graph_at(op.issue)[1] == dev:
                    self.log(f'flush acknowledged at {f.ack}, but the active '
                             f'child {dev} had not flushed write {v} '
                             f'(acknowledged at {op.ack})')
                    out.append((point, dev))
                    break
        return out

    def values_in(self, e):
        if e.offset % BLOCK:
            return set()
        return {decode((e.offset + i) // BLOCK, e.data[i:i + BLOCK])
                for i in range(0, e.length - BLOCK + 1, BLOCK)}

    def switch_around(self, children, active, data):
        """Every chunk a child's map calls valid must hold the disk's data:
        switch to each child in turn (instantly: it serves what it holds
        and copies up the rest) and read the disk again."""
        opts = {'prewarm': 'off', 'copy-on-read': False}
        for c in children:
            if c == active:
                continue
            o = self.shadow_opts(children, c, opts)
            ok, res = self.qmp('crash-switch', 'blockdev-reopen', options=[o])
            if not ok:
                if 'degraded' not in res:
                    raise Failure(f'an instant switch to {c} is refused: '
                                  f'{res}')
                continue
            self.cnt.switches['crash-check'] = \
                self.cnt.switches.get('crash-check', 0) + 1

            def pinned(b):
                return {decode(b, data[b * BLOCK:(b + 1) * BLOCK])}
            try:
                if 'status-hydrating' not in self.args.avoid:
                    self.status_all(pinned, pin=False)
                again = self.read_all(pinned)
            except Failure as e:
                raise Failure(f'after an instant switch from {active} to '
                              f'{c}, which serves the chunks its map calls '
                              f'valid: {e}') from None
            if again != data:
                raise Failure(f'after an instant switch to {c} the disk '
                              f'reads differently')

    def dump(self, point, entries):
        """What a failed crash state came from, for a look."""
        for dev in self.base:
            shutil.copy(self.path[dev],
                        os.path.join(self.work, f'crash-{dev}.raw'))
        with open(os.path.join(self.work, 'crash-logs.pickle'), 'wb') as f:
            pickle.dump({'point': point, 'base': self.base,
                         'entries': {dev: [(e.stamp, e.pos, e.kind, e.offset,
                                            e.length, e.data) for e in es]
                                     for dev, es in entries.items()}}, f)
        with open(os.path.join(self.work, 'crash-state.txt'), 'w') as f:
            f.write(f'point {point}\nepoch {self.epoch_start}..'
                    f'{self.epoch_end}\ngraph {self.graph_log}\n')
            for op in self.model.flushes:
                f.write(f'guest flush issued {op.issue} acked {op.ack} '
                        f'ok {op.ok}\n')
            for fl in self.faults:
                f.write(f'{fl} armed {fl.armed} disarmed {fl.disarmed}\n')
            for dev, es in sorted(entries.items()):
                for e in es:
                    f.write(f'{dev} {e.stamp} #{e.pos} {e.kind} {e.offset} '
                            f'{e.length}\n')

    def replay(self, dev, es, point=None, rng=None, mode=None):
        """The image of @dev after a power loss at @point: everything
        before its last flush completed before the point, and a subset of
        what completed after it, in the order it completed."""
        img = bytearray(self.base[dev])
        if point is None:
            apply = es
        else:
            done = [e for e in es if e.stamp < point]
            fpos = max((e.pos for e in done if e.kind == 'flush'),
                       default=-1)
            tail = [e for e in done if e.pos > fpos]
            mode = mode or rng.choice(('all', 'none', 'random', 'prefix'))
            if dev == 'md' and 'torn-metadata' in self.args.avoid:
                mode = 'none'

            if mode == 'none':
                tail = []
            elif mode == 'random':
                tail = [e for e in tail if rng.random() < 0.5]
            elif mode == 'prefix':
                tail = tail[:rng.randrange(len(tail) + 1)]
            apply = [e for e in es if e.pos < fpos] + tail
        for e in apply:
            if e.kind == 'write':
                img[e.offset:e.offset + e.length] = e.data
            elif e.kind in ('zero', 'discard'):
                img[e.offset:e.offset + e.length] = bytes(e.length)
        return bytes(img[:len(self.base[dev])])

    def crash_state(self, point, entries, rng, cut=None):
        for dev in self.base:
            es = entries.get(dev, [])
            img = self.replay(dev, es, point, rng, 'none' if dev == cut
                              else None)
            self.write_sparse(self.path[dev], img)
        if 'md' in self.base:
            # Writing the images made their ctimes now; a power loss would
            # have left them as the last clean stop recorded them
            mdinfo.restamp(
                self.path['md'], [self.path[t] for t in self.base
                                  if t != 'md'])
        children, active = self.graph_at(point)
        d = self.start_daemon(f'crash-{self.step}')
        saved = (self.d, self.nbd, self.hydrating)
        self.d = d
        where = f'crash state at stamp {point}'
        try:
            try:
                children, active = self.open_shadow(
                    d, children, active,
                    {'prewarm': 'off', 'copy-on-read': False}, point)
            except Exception as e:
                self.dump(point, entries)
                died = d.died()
                if died and not isinstance(e, Failure):
                    raise Failure(f'{where}: qemu-storage-daemon died '
                                  f'({died}) opening the shadow node; its '
                                  f'log: {d.log_tail()}') from None
                raise
            allowed = self.model.crash_view(point)
            cache = {}

            def allowed_c(b):
                if b not in cache:
                    cache[b] = allowed(b)
                return cache[b]
            self.export()
            try:
                _st, kids = self.stats()
                if kids[active]['valid-bytes'] == self.size or \
                        'status-hydrating' not in self.args.avoid:
                    self.status_all(allowed_c, pin=False)
                # A chunk whose only holders failed (the faults were in
                # effect at the cut) may not be readable
                sticky = [str(f) for f in self.faults
                          if f.target != 'md' and f.kind != 'slow' and
                          f.armed < point and
                          not self.reopened_between(f.disarmed, point)]
                data = self.read_all(allowed_c,
                                     excuse_faults='crash' if sticky
                                     else False)
                if data is not None:
                    self.compare_synced(data, where)
                    if self.meta:
                        self.switch_around(children, active, data)
            except Failure as e:
                self.dump(point, entries)
                raise Failure(f'{where} (children {children}, active '
                              f'{active}): {e}') from None
        finally:
            if self.nbd:
                self.nbd.close()
            d.kill()
            self.d, self.nbd, self.hydrating = saved

    # ----- the segment -----

    def run(self):
        self.create_images()
        after = 'fresh'
        while self.step < self.max_steps:
            self.start_epoch(after)
            ops_before = self.cnt.total_ops()
            how = 'kill' if self.rng.random() < 0.5 else 'clean'
            nsteps = self.rng.randrange(40, 200)
            self.desc = f'epoch ending in a {how}'
            try:
                more = self.run_epoch(nsteps, how)
                if not more:
                    how = 'clean'
                    if self.kill_timer:
                        self.kill_timer.cancel()
                        self.kill_timer.join()
                    if self.killed is not None:
                        how = 'kill'
            except Killed:
                how = 'kill'
            except Failure:
                raise
            except Exception:
                if self.killed is None:
                    raise
                how = 'kill'
            self.end_epoch(how)
            self.last_how = how
            ratio = self.args.crash_states / max(1, self.args.ops)
            ops = min(self.cnt.total_ops() - ops_before, 3 * nsteps)
            n = max(1, round(ops * ratio * self.rng.uniform(0.5, 1.5)))
            self.crash_states(n)
            after = how

    def cleanup(self):
        if self.kill_timer:
            self.kill_timer.cancel()
        if self.nbd:
            try:
                self.nbd.close()
            except OSError:
                pass
        if self.d:
            self.d.kill()


def identity_probe(work):
    """The metadata matches children to slots by an identity that
    docs/shadow-metadata.md says is taken below the child's filters, so
    that a throttle filter added or removed keeps it, and that does not
    depend on whether QEMU computed a node's filename yet.  None, or what
    is wrong."""
    size = MiB
    for name in ('pa', 'pb'):
        with open(os.path.join(work, f'{name}.raw'), 'wb') as f:
            f.truncate(size)
    md = os.path.join(work, 'pmd.raw')

    def attempt(throttle, query):
        d = Daemon(work, 'qsd-identity.log')
        try:
            d.cmd('object-add', **{'qom-type': 'throttle-group', 'id': 'g',
                                   'limits': {}})
            d.cmd('blockdev-add', driver='file', **{'node-name': 'pmd'},
                  filename=md)
            for name in ('pa', 'pb'):
                f = {'driver': 'file',
                     'filename': os.path.join(work, f'{name}.raw')}
                if throttle:
                    f = {'driver': 'throttle', 'throttle-group': 'g',
                         'file': f}
                d.cmd('blockdev-add', driver='raw', **{'node-name': name},
                      file=f)
            if query:
                d.cmd('query-named-block-nodes')
            d.cmd('blockdev-add', driver='shadow', **{'node-name': 'psh'},
                  children=['pa', 'pb'], metadata='pmd')
            return None
        except ExecuteError as e:
            return str(e)
        finally:
            d.terminate()

    problems = []
    for first, then, what in (
            ((False, False), (True, False), 'a throttle filter added'),
            ((True, False), (True, True), 'the filename computed first')):
        with open(md, 'wb') as f:
            f.write(bytes(MiB))
        err = attempt(*first) or attempt(*then)
        if err:
            problems.append(f'{what}: {err}')
    return '; '.join(problems) or None


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--ops', type=int, default=2000,
                   help='run segments until this many operations ...')
    p.add_argument('--crash-states', type=int, default=100,
                   help='... and this many crash states were checked')
    p.add_argument('--seed', type=int, default=None)
    p.add_argument('--steps', type=int, default=None,
                   help='replay: one segment of SEED, for STEPS steps')
    p.add_argument('--max-failures', type=int, default=25)
    p.add_argument('--trickle', type=float, default=0.5,
                   help='weight of the trickle operation (seconds of slow '
                   'writes and flushes, for the periodic commit)')
    p.add_argument('--avoid', default='',
                   help='comma-separated scenarios not to generate, to look '
                   'past a known bug: remove-holder (removing a child while '
                   'the active child hydrates), metadata-child '
                   '(x-blockdev-change child=metadata), status-hydrating '
                   '(block status and sparse reads while the active child '
                   'hydrates), renumber (reopen after x-blockdev-change '
                   'before a restart), readonly-hydrating (read-only '
                   'reopen while the active child hydrates), '
                   'hydrating-write-fault (write faults on children with '
                   'metadata), torn-metadata (crash states keep none of '
                   'the metadata writes after its last flush), '
                   'shadow-flush-fault (flush faults on children not '
                   'active), identity '
                   '(the probe of child identities at the start)')
    p.add_argument('--verbose', action='store_true')
    args = p.parse_args()
    args.avoid = set(filter(None, args.avoid.split(',')))
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    # One directory per run: runs may go on side by side
    work = os.path.join(REPO, 'build', 'stress', f'run-{os.getpid()}')
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    clock = nbdio.Clock()
    recorder = nbdio.Recorder(os.path.join(work, 'rec.sock'), clock)
    recorder.start()
    cnt = Counters()
    print(f'# stress test: seed {seed}, at least {args.ops} operations and '
          f'{args.crash_states} crash states', flush=True)
    started = time.monotonic()
    failures = 0
    i = 0
    if 'identity' not in args.avoid and not args.steps:
        i += 1
        err = identity_probe(work)
        if err:
            failures += 1
            print(f'not ok {i} - identity probe: a child is not recognised '
                  f'after a restart when {err}', flush=True)
        else:
            print(f'ok {i} - identity probe', flush=True)
    segments = i
    while True:
        if args.steps:
            if i == 1:
                break
        elif cnt.total_ops() >= args.ops and \
                cnt.crash_states >= args.crash_states:
            break
        if failures >= args.max_failures:
            break
        seg = Segment(seed + i - segments, work, recorder, clock, cnt, args)
        i += 1
        try:
            seg.run()
            ok, msg = True, ''
        except (Failure, TestError) as e:
            kind = 'TEST ERROR' if isinstance(e, TestError) else 'FAILURE'
            ok, msg = False, (f'{kind} at step {seg.step} ({seg.desc}): {e}'
                              f'; replay: tests/stress/shadow-stress.py '
                              f'--seed {seg.seed} --steps {seg.step}')
        except Exception as e:
            import traceback
            traceback.print_exc()
            died = seg.d.died() if getattr(seg, 'd', None) else None
            died = f' (qemu-storage-daemon died: {died})' if died else ''
            ok, msg = False, (f'TEST ERROR at step {seg.step} ({seg.desc}): '
                              f'{type(e).__name__}: {e}{died}; replay: '
                              f'tests/stress/shadow-stress.py --seed '
                              f'{seg.seed} --steps {seg.step}')
        finally:
            seg.cleanup()
        if recorder.error or not recorder.is_alive():
            ok, msg = False, f'TEST ERROR: the recorder stopped: {recorder.error}'
            args.max_failures = 0
        conf = (f'{"metadata" if seg.meta else "no metadata"}, '
                f'{seg.size // MiB} MiB, chunk {seg.chunk // 1024} KiB, '
                f'qd {seg.qd}')
        if not ok:
            failures += 1
            keep = os.path.join(REPO, 'build', 'stress',
                                f'failed-{seg.seed}')
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(work, keep,
                            ignore=shutil.ignore_patterns('*.sock'))
            print(f'not ok {i} - seed {seg.seed} ({conf}): {msg} '
                  f'(files in {keep})', flush=True)
        else:
            print(f'ok {i} - seed {seg.seed} ({conf}): {seg.step} steps',
                  flush=True)
    print(f'1..{i}')
    print(f'# stress: {i - failures} passed, {failures} failed, seed {seed}, '
          f'{cnt.summary()}, {time.monotonic() - started:.0f} s',
          flush=True)
    recorder.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
