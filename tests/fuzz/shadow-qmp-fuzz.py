#!/usr/bin/env python3
"""QMP fuzzer of the shadow block driver: bad options must never abort.

Each case starts a real QEMU (qemu-storage-daemon, or qemu-system-x86_64
with -M none or a stopped -M pc machine), creates a few image files, and
sends a sequence of QMP commands generated from a seed: blockdev-add of
base nodes and of shadow nodes, blockdev-reopen, x-blockdev-change,
blockdev-del, block_resize, NBD exports, blockdev-set-active, device_add,
guest I/O over NBD or HMP qemu-io, and changes to metadata images on disk.
The generator follows the QAPI schema of BlockdevOptionsShadow and of the
child BlockdevRefs, knows the block graph (it queries it after every
change), and breaks things on purpose: wrong types, missing and extra
keys, huge and negative numbers, invalid enums, duplicate and
self-referencing children, metadata that is too small, garbage or
another node's, read-only and inactive nodes.

After every step the process must be alive (no signal, nothing fatal on
stderr) and query-version must answer within a timeout; every case ends
with quit, which must exit with status 0.  QMP errors are fine; their
messages are recorded (build/fuzz/errors.json) and empty ones are flagged.

An abort or a hang is saved as a reproducer, build/fuzz/crash-*.json:
the exact steps sent, the files and the target.

Usage:
  shadow-qmp-fuzz.py [--seeds A-B | --seconds T [--seed-base S]]
                     [--steps N] [--targets qsd,system-none,system-pc]
                     [--jobs J] [--no-corpus] [--minimize-new] [--verbose]
  shadow-qmp-fuzz.py --replay FILE [--runs K] [--verbose]
  shadow-qmp-fuzz.py --minimize FILE [--output FILE] [--budget SECONDS]
  shadow-qmp-fuzz.py --print FILE

The run first replays every reproducer of tests/fuzz/corpus/ (one TAP line
each: "not ok" while it still aborts), then the seeds; it prints TAP lines
and a summary, and exits 1 if anything aborted or hung.
"""

import argparse
import collections
import concurrent.futures
import copy
import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'build', 'src', 'qemu', 'python'))
sys.path.insert(0, os.path.join(REPO, 'bench'))
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402
import nbdclient  # noqa: E402

QEMU = os.path.join(REPO, 'build', 'qemu')
QSD = os.path.join(QEMU, 'storage-daemon', 'qemu-storage-daemon')
QEMU_SYSTEM = os.path.join(QEMU, 'qemu-system-x86_64')
QEMU_IMG = os.path.join(QEMU, 'qemu-img')
OUT = os.path.join(REPO, 'build', 'fuzz')
CORPUS = os.path.join(HERE, 'corpus')

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CMD_TIMEOUT = 10.0      # a command that takes longer hangs
PING_TIMEOUT = 5.0      # query-version after every step
IO_TIMEOUT = 10.0       # NBD requests
QUIT_TIMEOUT = 15.0
MEM_LIMIT_MIB = 4096    # RLIMIT_AS of QEMU: a huge map fails instead of
                        # taking the machine's memory

TARGETS = ('qsd', 'system-none', 'system-pc')
MUTATING = {'blockdev-add', 'blockdev-del', 'blockdev-reopen',
            'x-blockdev-change', 'block-export-add', 'block-export-del',
            'blockdev-set-active', 'block_resize', 'device_add',
            'device_del', 'x-shadow-verify', 'x-shadow-verify-copy'}

logging.getLogger('qemu').setLevel(logging.CRITICAL + 1)


# ---------------------------------------------------------------------------
# Findings: what counts as an abort, and its signature
# ---------------------------------------------------------------------------

FATAL_PATTERNS = [
    # glibc assert(): "prog: ../src/qemu/util/hbitmap.c:804: hbitmap_alloc:
    # Assertion `...' failed."
    (re.compile(r"([\w.-]+\.[ch]):(\d+): (\w+): Assertion [`'](.*)' failed"),
     lambda m: f"{m.group(3)}: Assertion `{m.group(4)}' failed"),
    # g_assert(), g_assert_not_reached()
    (re.compile(r"ERROR:[^:\s]*?([\w.-]+\.[ch]):(\d+):(\w+): (.*)"),
     lambda m: f"{m.group(3)}: {m.group(4).strip()}"),
    # error_abort
    (re.compile(r"Unexpected error in (\w+)\(\)"),
     lambda m: f"Unexpected error in {m.group(1)}() (error_abort)"),
    (re.compile(r"qemu: fatal: (.*)"), lambda m: f"qemu: fatal: {m.group(1)}"),
    (re.compile(r"failed to allocate \d+ bytes"),
     lambda m: "allocation failure: failed to allocate N bytes"),
    (re.compile(r"(double free or corruption|free\(\): [\w ]+|"
                r"malloc\(\): [\w ]+|corrupted size vs\. prev_size|"
                r"\*\*\* stack smashing detected)"),
     lambda m: f"heap/stack corruption: {m.group(1)}"),
    (re.compile(r"(Co-routine re-entered recursively|"
                r"Co-routine was already scheduled in '\w+')"),
     lambda m: m.group(1)),
]

# stderr lines that are not findings
BENIGN_STDERR = re.compile(r"rom: file kvmvapic\.bin|^\s*$")


def fatal_in(text):
    """(signature, the line) of the first fatal message in @text"""
    for line in text.splitlines():
        for rx, sig in FATAL_PATTERNS:
            m = rx.search(line)
            if m:
                return sig(m), line.strip()
    return None, None


def signame(rc):
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f'signal {-rc}'


def command_of(step):
    if 'qmp' in step:
        ex = step['qmp'].get('execute')
        if ex == 'human-monitor-command':
            args = step['qmp'].get('arguments') or {}
            cl = args.get('command-line', '') if isinstance(args, dict) \
                else ''
            return 'hmp ' + str(cl).split(' ')[0]
        return str(ex)
    if 'nbd' in step:
        return 'NBD I/O'
    for k in ('sleep', 'corrupt'):
        if k in step:
            return k
    return '?'


# ---------------------------------------------------------------------------
# Files of a case: created before QEMU starts, described in the case
# ---------------------------------------------------------------------------

def crc32c(data):
    table = crc32c.table
    if table is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        crc32c.table = table
    crc = 0xffffffff
    for b in data:
        crc = table[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


crc32c.table = None


def fix_header_crc(f, copy_index):
    """Recompute the CRC-32C of shadow metadata header copy @copy_index
    (docs/shadow-metadata.md), so that a forged header gets past it."""
    base = copy_index * 4096
    f.seek(base)
    hdr = bytearray(f.read(104))
    if len(hdr) < 104:
        return
    hdr[96:100] = b'\0\0\0\0'
    # QEMU computes crc32c(0xffffffff, buf, len) without the final xor
    crc = crc32c(bytes(hdr)) ^ 0xffffffff
    f.seek(base + 96)
    f.write(struct.pack('<I', crc))


def create_files(workdir, files):
    for spec in files:
        path = os.path.join(workdir, spec['name'])
        if spec.get('fmt') == 'qcow2':
            subprocess.run([QEMU_IMG, 'create', '-q', '-f', 'qcow2', path,
                            str(spec['size'])], check=True,
                           stdout=subprocess.DEVNULL)
            continue
        with open(path, 'wb') as f:
            fill = spec.get('fill', 'sparse')
            if fill == 'garbage':
                rng = random.Random(spec['name'])
                f.write(rng.randbytes(spec['size']))
            else:
                f.truncate(spec['size'])
                for off, length, byte in spec.get('data', []):
                    f.seek(off)
                    f.write(bytes([byte]) * length)


def apply_corruption(workdir, c):
    path = os.path.join(workdir, c['file'])
    if not os.path.exists(path):
        return 'no such file'
    with open(path, 'r+b') as f:
        f.seek(c['offset'])
        f.write(bytes.fromhex(c['data']))
        for i in c.get('fix_crc', []):
            fix_header_crc(f, i)
    return 'ok'


def subst(obj, workdir):
    """@DIR@ in strings is the case's directory"""
    if isinstance(obj, str):
        return obj.replace('@DIR@', workdir)
    if isinstance(obj, list):
        return [subst(x, workdir) for x in obj]
    if isinstance(obj, dict):
        return {k: subst(v, workdir) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------
# The QEMU process of a case
# ---------------------------------------------------------------------------

class StartError(Exception):
    pass


class Session:
    def __init__(self, target, workdir, mem_mib):
        self.target = target
        self.workdir = workdir
        self.qmp_sock = os.path.join(workdir, 'qmp.sock')
        self.nbd_sock = os.path.join(workdir, 'nbd.sock')
        self.err_path = os.path.join(workdir, 'stderr.log')
        self.err_pos = 0
        self.qmp = None
        if target == 'qsd':
            args = [QSD, '--object', 'iothread,id=io0',
                    '--chardev', f'socket,id=mon,path={self.qmp_sock},'
                    'server=on,wait=off', '--monitor', 'mon',
                    '--nbd-server',
                    f'addr.type=unix,addr.path={self.nbd_sock}']
        else:
            machine = ['-M', 'none'] if target == 'system-none' else \
                ['-M', 'pc', '-m', '32']
            args = [QEMU_SYSTEM, *machine, '-nodefaults', '-display', 'none',
                    '-accel', 'tcg,tb-size=16', '-S',
                    '-object', 'iothread,id=io0',
                    '-qmp', f'unix:{self.qmp_sock},server=on,wait=off']
        # SHADOW_FUZZ_WRAPPER="gdb -batch -ex run -ex bt --args" for a
        # backtrace on stderr (not with the memory limit)
        args = os.environ.get('SHADOW_FUZZ_WRAPPER', '').split() + args
        limit = mem_mib * MiB

        def preexec():
            # QEMU dies with the fuzzer, however the fuzzer ends
            try:
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PDEATHSIG
            except (OSError, AttributeError):
                pass
            if mem_mib:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(workdir, 'stdout.log'), 'wb'),
            stderr=open(self.err_path, 'wb'), preexec_fn=preexec,
            start_new_session=True)
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise StartError(f'{target} exited at start: '
                                 f'{self.read_stderr()}')
            if os.path.exists(self.qmp_sock):
                try:
                    self.qmp = QEMUMonitorProtocol(self.qmp_sock)
                    self.qmp.connect()
                    break
                except Exception:   # noqa: BLE001 (not yet listening)
                    self.qmp = None
            if time.monotonic() > deadline:
                self.kill()
                raise StartError(f'{target} did not start')
            time.sleep(0.01)
        if target != 'qsd':
            st, r = self.execute({'execute': 'nbd-server-start', 'arguments': {
                'addr': {'type': 'unix', 'data': {'path': self.nbd_sock}}}},
                CMD_TIMEOUT)
            if st != 'reply' or 'return' not in r:
                self.kill()
                raise StartError(f'nbd-server-start: {r}')

    def execute(self, msg, timeout):
        """('reply', reply) or ('timeout', None) or ('lost', why)"""
        self.qmp.settimeout(timeout)
        try:
            return 'reply', self.qmp.cmd_obj(msg)
        except (TimeoutError, asyncio_timeout()):
            return 'timeout', None
        except Exception as e:      # noqa: BLE001 (connection lost)
            return 'lost', f'{type(e).__name__}: {e}'
        finally:
            try:
                self.qmp.clear_events()
            except Exception:       # noqa: BLE001
                pass

    def alive(self):
        return self.proc.poll() is None

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def read_stderr(self):
        try:
            with open(self.err_path, 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def new_stderr(self):
        try:
            with open(self.err_path, 'rb') as f:
                f.seek(self.err_pos)
                data = f.read()
        except OSError:
            return ''
        self.err_pos += len(data)
        return data.decode(errors='replace')

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        if self.qmp is not None:
            try:
                self.qmp.settimeout(1)
                self.qmp.close()
            except Exception:       # noqa: BLE001
                pass
            self.qmp = None
        self.kill()


def asyncio_timeout():
    import asyncio
    return asyncio.TimeoutError


# ---------------------------------------------------------------------------
# NBD connections kept across steps, so that requests can be in flight
# during QMP commands
# ---------------------------------------------------------------------------

NBD_CMD = {'read': nbdclient.CMD_READ, 'write': nbdclient.CMD_WRITE,
           'trim': nbdclient.CMD_TRIM, 'flush': nbdclient.CMD_FLUSH,
           'zero': 6}


class Conn:
    def __init__(self, sock_path, export):
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(IO_TIMEOUT)
        try:
            self.c = nbdclient.NBDClient(sock_path, export)
        finally:
            socket.setdefaulttimeout(old)
        self.export = export
        self.outstanding = 0

    def submit(self, op):
        kind = op[0]
        if kind == 'read':
            self.c.submit(NBD_CMD['read'], op[1], op[2])
        elif kind == 'write':
            self.c.submit(NBD_CMD['write'], op[1],
                          data=bytes([op[3]]) * op[2], flags=op[4])
        elif kind in ('trim', 'zero'):
            self.c.submit(NBD_CMD[kind], op[1], op[2],
                          flags=op[3] if len(op) > 3 else 0)
        else:
            self.c.submit(NBD_CMD['flush'])
        self.outstanding += 1

    def collect(self):
        """errnos of the outstanding replies"""
        errs = []
        while self.outstanding:
            _h, err, _data = self.c.reply()
            self.outstanding -= 1
            errs.append(err)
        return errs

    def close(self):
        try:
            self.c.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Running a case: steps from a generator or from a reproducer
# ---------------------------------------------------------------------------

POOR_MESSAGE = re.compile(
    r"^\s*$|^.{0,11}$|^(Invalid argument|Operation not permitted|"
    r"Input/output error|No such file or directory|Permission denied|"
    r"Operation not supported|Unknown error.*|Success)\.?$|[:,]\s*$")


# Messages of commands on nodes that name no node nor option
NAMELESS = re.compile(r"^(Block node is read-only|Image is read-only|"
                      r"Cannot change the option '[\w-]+'|"
                      r"node-name not specified)$")


def poor_message(command, desc):
    """Whether an error message is empty or unhelpful: a bare errno
    string, "(null)", or a block command's message that names nothing"""
    return bool(POOR_MESSAGE.search(desc) or '(null)' in desc or
                (command.startswith(('blockdev', 'x-blockdev', 'block_'))
                 and NAMELESS.search(desc)))


def normalize_msg(desc):
    d = re.sub(r"'[^']*'", "'X'", desc)
    d = re.sub(r'"[^"]*"', '"X"', d)
    d = re.sub(r'\b\d+\b', 'N', d)
    return d[:300]


class Result:
    def __init__(self):
        self.steps = []         # executed steps
        self.finding = None     # {'kind', 'signature', 'detail', 'step'}
        self.commands = collections.Counter()     # (command, ok|error)
        self.errors = {}        # (command, normalized) -> [count, example]
        self.features = collections.Counter()   # what the case reached
        self.time = 0.0

    def to_json(self):
        return {'steps': len(self.steps), 'finding': self.finding,
                'commands': [[k[0], k[1], v] for k, v in
                             self.commands.items()],
                'errors': [[k[0], k[1], v[0], v[1], v[2]] for k, v in
                           self.errors.items()],
                'features': dict(self.features),
                'time': self.time}


class Replay:
    def __init__(self, steps):
        self.it = iter(steps)

    def next(self, _last):
        return next(self.it, None)


def run_case(target, files, source, workdir, mem_mib=MEM_LIMIT_MIB,
             verbose=False):
    """Run the steps @source gives on a fresh @target; a Result"""
    res = Result()
    t0 = time.monotonic()
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    create_files(workdir, files)
    try:
        sess = Session(target, workdir, mem_mib)
    except StartError as e:
        res.finding = {'kind': 'start', 'signature': f'start: {e}',
                       'detail': str(e), 'step': -1}
        return res
    conns = {}
    last = None
    try:
        while res.finding is None:
            step = source.next(last)
            if step is None:
                break
            res.steps.append(step)
            last = run_step(sess, step, conns, res, len(res.steps) - 1,
                            verbose)
        if res.finding is None:
            finish(sess, conns, res)
    finally:
        for c in conns.values():
            c.close()
        sess.close()
        if not os.environ.get('SHADOW_FUZZ_KEEP'):
            shutil.rmtree(workdir, ignore_errors=True)
    res.time = time.monotonic() - t0
    return res


def crash_finding(sess, res, idx, during):
    """The process died or stopped answering at step @idx"""
    # A process that stopped answering but lives gets a second (during
    # which we look whether its main thread works or waits), a dying one
    # the time to finish writing its message
    busy = None
    if sess.alive():
        busy = main_thread_busy(sess.proc.pid, 1.0)
        exited = not sess.alive()
    else:
        exited = sess.wait_exit(5)
    text = sess.read_stderr()
    sig, line = fatal_in(text)
    if exited:
        rc = sess.proc.returncode
        how = signame(rc) if rc < 0 else f'exit status {rc}'
        kind = 'abort'
        if sig is None:
            sig = how
            line = how
        sig = f'{sig} (during {during})'
    else:
        kind = 'hang'
        if sig is None:
            # A main loop that spins (a coroutine that never yields) and
            # one that waits (a drain that never ends) are different bugs
            how = {True: 'main loop busy', False: 'main loop waiting',
                   None: 'main loop ?'}[busy]
            sig = f'hang ({how}): {during}'
            line = f'{sig} (within {CMD_TIMEOUT:.0f} s, query-version ' \
                f'{PING_TIMEOUT:.0f} s)'
    tail = '\n'.join(l for l in text.splitlines()[-15:]
                     if not BENIGN_STDERR.search(l))
    res.finding = {'kind': kind, 'signature': sig, 'detail': line,
                   'stderr': tail, 'step': idx, 'during': during}


def main_thread_busy(pid, seconds):
    """Whether the main thread of @pid used most of the CPU for @seconds
    (None if /proc cannot tell)"""
    def ticks():
        with open(f'/proc/{pid}/task/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return int(fields[11]) + int(fields[12])    # utime + stime
    try:
        t0 = ticks()
        time.sleep(seconds)
        used = (ticks() - t0) / os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        return None
    return used > seconds / 2


def check_alive(sess, res, idx, step):
    """After a step: the process lives, nothing fatal on stderr, and
    query-version answers"""
    cmd = command_of(step)
    if not sess.alive():
        crash_finding(sess, res, idx, cmd)
        return False
    sig, _line = fatal_in(sess.new_stderr())
    if sig is None:
        st, r = sess.execute({'execute': 'query-version'}, PING_TIMEOUT)
        if st == 'reply' and 'return' in r:
            return True
        if st == 'timeout':
            # The same hang as when the command itself does not answer:
            # it returned, but the main loop stopped just after
            crash_finding(sess, res, idx, f'{cmd} got no answer')
            res.finding['detail'] += ' (the command answered, ' \
                'query-version after it did not)'
            return False
    crash_finding(sess, res, idx, cmd)
    return False


def run_step(sess, step, conns, res, idx, verbose):
    """Run one step; what it returned, for the generator"""
    cmd = command_of(step)
    out = {'status': 'ok'}
    if 'qmp' in step:
        msg = subst(step['qmp'], sess.workdir)
        if '@AUTO:' in json.dumps(msg):
            msg = resolve_auto(sess, msg)
        st, reply = sess.execute(msg, CMD_TIMEOUT)
        if st == 'timeout':
            if sess.alive():
                crash_finding(sess, res, idx, f'{cmd} got no answer')
                return None
        if st != 'reply':
            crash_finding(sess, res, idx, cmd)
            return None
        out = {'status': 'error' if 'error' in reply else 'ok',
               'reply': reply}
        if not step.get('model'):
            res.commands[(cmd, out['status'])] += 1
            if out['status'] == 'ok':
                for f in features_of(msg):
                    res.features[f] += 1
        if 'error' in reply:
            desc = str(reply['error'].get('desc', ''))
            key = (cmd, normalize_msg(desc))
            ent = res.errors.setdefault(
                key, [0, desc[:500],
                      json.dumps(step['qmp'])[:800]])
            ent[0] += 1
        if verbose:
            print(f'  [{idx}] {json.dumps(step["qmp"])[:300]}\n'
                  f'      -> {json.dumps(reply)[:300]}')
    elif 'nbd' in step:
        out = run_nbd(sess, step['nbd'], conns)
        res.commands[(cmd, out['status'])] += 1
        if out['status'] in ('ok', 'error'):
            res.features['NBD requests served'] += 1
        if out['status'] == 'hang':
            # The requests never completed: is it the whole process?
            if check_alive(sess, res, idx, step):
                res.finding = {'kind': 'hang', 'step': idx, 'during': cmd,
                               'signature': 'hang (main loop answers): NBD '
                               'requests never completed',
                               'detail': out.get('why', '')}
            return None
        if verbose:
            print(f'  [{idx}] nbd {json.dumps(step["nbd"])[:200]} -> {out}')
    elif 'sleep' in step:
        time.sleep(step['sleep'])
    elif 'corrupt' in step:
        out = {'status': apply_corruption(sess.workdir, step['corrupt'])}
        if verbose:
            print(f'  [{idx}] corrupt {step["corrupt"]}')
    if not check_alive(sess, res, idx, step):
        return None
    return out


def features_of(msg):
    """What a successful command reached, for the summary"""
    ex, args = msg.get('execute'), msg.get('arguments')
    if not isinstance(args, dict):
        return []
    out = []
    if ex == 'blockdev-add' and args.get('driver') == 'shadow':
        out.append('shadow added')
        if 'metadata' in args:
            out.append('shadow with metadata added')
        if args.get('read-only'):
            out.append('read-only shadow added')
        if args.get('active') is False:
            out.append('inactive shadow added')
        if any(isinstance(c, dict) for c in args.get('children', [])):
            out.append('shadow with inline children added')
    elif ex == 'blockdev-reopen':
        for o in args.get('options', []):
            if o.get('driver') != 'shadow':
                out.append('child reopened')
                continue
            out.append('shadow reopened')
            if o.get('read-only'):
                out.append('shadow reopened read-only' +
                           (' (metadata)' if 'metadata' in o else ''))
            if 'active-child' in o:
                out.append('reopen with active-child' +
                           (' (metadata)' if 'metadata' in o else ''))
    elif ex == 'x-blockdev-change':
        out.append('child ' + ('added' if 'node' in args else 'removed'))
    elif ex in ('blockdev-del', 'block-export-add', 'blockdev-set-active',
                'device_add', 'block_resize'):
        out.append(f'{ex} ok')
    return out


AUTO_RE = re.compile(r'^@AUTO:([^:]*):(.*)@$')


def resolve_auto(sess, msg):
    """QEMU names the nodes it is given without a name #blockNNN, and
    NNN varies from run to run: steps name them @AUTO:parent:child@, the
    node that is child 'child' of node 'parent' now"""
    st, r = sess.execute({'execute': 'x-debug-query-block-graph'},
                         CMD_TIMEOUT)
    if st != 'reply' or 'return' not in r:
        return msg
    ids = {n['id']: n['name'] for n in r['return']['nodes']}
    edges = {(ids.get(e['parent']), e['name']): ids.get(e['child'])
             for e in r['return']['edges']}

    def walk(o):
        if isinstance(o, str):
            m = AUTO_RE.match(o)
            if m and (m.group(1), m.group(2)) in edges:
                return edges[(m.group(1), m.group(2))]
            return o
        if isinstance(o, list):
            return [walk(x) for x in o]
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        return o
    return walk(msg)


def run_nbd(sess, n, conns):
    cid = n.get('conn', 'c0')
    c = conns.get(cid)
    if n.get('close'):
        if c is None:
            return {'status': 'ok'}
        del conns[cid]
        try:
            c.collect()
        except socket.timeout:
            c.close()
            return {'status': 'hang', 'why': 'replies before close'}
        except (OSError, nbdclient.NBDError, struct.error):
            pass
        c.close()
        return {'status': 'ok'}
    if c is not None and c.export != n['export']:
        c.close()
        del conns[cid]
        c = None
    if c is None:
        try:
            c = Conn(sess.nbd_sock, n['export'])
        except socket.timeout:
            return {'status': 'hang', 'why': 'NBD handshake'}
        except (OSError, nbdclient.NBDError, struct.error) as e:
            return {'status': 'refused', 'why': str(e)[:200]}
        conns[cid] = c
    try:
        for op in n['ops']:
            c.submit(op)
        errs = c.collect() if n.get('wait', True) else []
    except socket.timeout:
        return {'status': 'hang', 'why': f'{len(n["ops"])} requests, '
                f'{c.outstanding} without reply after {IO_TIMEOUT:.0f} s'}
    except (OSError, nbdclient.NBDError, struct.error) as e:
        c.close()
        del conns[cid]
        return {'status': 'disconnected', 'why': str(e)[:200]}
    return {'status': 'error' if any(errs) else 'ok', 'errnos': errs}


def finish(sess, conns, res):
    """Collect in-flight NBD replies, then quit: QEMU must exit with 0"""
    idx = len(res.steps)
    for cid, c in list(conns.items()):
        try:
            c.collect()
        except socket.timeout:
            if check_alive(sess, res, idx, {'nbd': {}}):
                res.finding = {'kind': 'hang', 'step': idx,
                               'during': 'NBD I/O',
                               'signature': 'hang (main loop answers): NBD '
                               'requests never completed',
                               'detail': 'in flight at the end'}
            return
        except (OSError, nbdclient.NBDError, struct.error):
            c.close()
            del conns[cid]
    st, _r = sess.execute({'execute': 'quit'}, QUIT_TIMEOUT)
    if not sess.wait_exit(QUIT_TIMEOUT):
        crash_finding(sess, res, idx, 'quit')
        return
    rc = sess.proc.returncode
    sig, line = fatal_in(sess.read_stderr())
    if rc != 0 or sig:
        crash_finding(sess, res, idx, 'quit')


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------

INTERESTING_INTS = [
    0, 1, -1, 2, 511, 512, 513, 4095, 4096, 4097, 65535, 65536, 65537,
    MiB, 64 * MiB, 64 * MiB + 1, 128 * MiB, GiB, 2**31 - 1, 2**31, 2**32,
    2**32 + 4096, 2**53, 2**54, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
    -(2**63), -(2**63) - 1, -4096, 10**20]

WEIRD_STRINGS = [
    '', ' ', 'a', '-', '#block123', 'children.0', 'metadata', 'file',
    'sh0', 'x' * 40, 'y' * 4000, 'n\u00e9\u00efd', '\t\n', '%s%s%n',
    '../../etc/passwd', 'null', 'true', '0x10000', '65536', '64k', '-1',
    'active', 'fast', 'node name', 'sh0,children=x']

NULL_SIZES = [
    (20, [MiB, 4 * MiB, 16 * MiB, 64 * MiB]),
    (4, [GiB]),
    (3, [0, 512, 1000, 4096, 65536 + 512]),
    (8, [2**54, 2**56, 2**60, 2**62, 2**63 - 512]),
    (2, [2**36, 2**40, 2**44, 2**48, 2**50]),
]

CHUNK_SIZES = [
    (14, [4096]), (10, [65536]), (6, [2**k for k in range(13, 27)]),
    (2, [2**26]), (2, [512, 1024, 2048, 2**27, 2**30]),
    (4, [0, 1, 3, 4095, 4097, 65537, 2**32, 2**63, 2**64 - 1, -1, -4096]),
    (3, ['64k', '4096', 4096.0, 6.5e9, True, None, [], {}]),
]

SPEEDS = [
    (8, [1, 512, 4096, 65536]), (4, [0]), (3, [MiB, 100 * MiB]),
    (3, [2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63)]),
    (2, [1.5, '1M', '', None, True]),
]

ENUMS = {
    'write-mode': ['sync', 'async'],
    'prewarm': ['off', 'sequential', 'hot-first'],
    'read-from': ['active', 'fastest'],
}


def wpick(rng, table):
    """From [(weight, [values])]: a value"""
    total = sum(w for w, _ in table)
    r = rng.random() * total
    for w, vals in table:
        if r < w:
            return rng.choice(vals)
        r -= w
    return rng.choice(table[-1][1])


class Model:
    """What the generator knows of the block graph, from the queries it
    sends after each change"""

    def __init__(self):
        self.nodes = {}         # node-name -> {'drv', 'ro', 'active', 'size'}
        self.children = {}      # node-name -> [(child name, node-name)]
        self.parents = collections.defaultdict(set)
        self.backends = set()   # nodes with a BlockBackend (export, device)
        self.exports = {}       # id -> node-name
        self.states = {}        # shadow -> {child node: state}
        self.active = {}        # shadow -> active child node
        self.auto = {}          # #blockNNN -> @AUTO:parent:child@

    def update(self, execute, ret):
        if execute == 'x-debug-query-block-graph':
            ids = {n['id']: n for n in ret['nodes']}
            self.children = collections.defaultdict(list)
            self.parents = collections.defaultdict(set)
            self.backends = set()
            self.auto = {}
            for e in ret['edges']:
                p, c = ids.get(e['parent']), ids.get(e['child'])
                if not p or not c or c['type'] != 'block-driver':
                    continue
                if c['name'].startswith('#') and \
                        not p['name'].startswith('#') and \
                        p['type'] == 'block-driver':
                    self.auto[c['name']] = f'@AUTO:{p["name"]}:{e["name"]}@'
                if p['type'] == 'block-driver':
                    self.children[p['name']].append((e['name'], c['name']))
                    self.parents[c['name']].add(p['name'])
                else:
                    self.backends.add(c['name'])
        elif execute == 'query-named-block-nodes':
            self.nodes = {}
            for n in ret:
                self.nodes[n['node-name']] = {
                    'drv': n['drv'], 'ro': n['ro'],
                    'active': n.get('active', True),
                    'size': n['image'].get('virtual-size', 0)}
        elif execute == 'query-block-exports':
            self.exports = {e['id']: e['node-name'] for e in ret}
        elif execute == 'query-blockstats':
            self.states = {}
            self.active = {}
            for e in ret:
                ds = e.get('driver-specific') or {}
                if ds.get('driver') == 'shadow':
                    name = e.get('node-name')
                    self.active[name] = ds['active']
                    self.states[name] = {c['node-name']: c['state']
                                         for c in ds['children']}

    def shadows(self):
        return [n for n, v in self.nodes.items() if v['drv'] == 'shadow']

    def base_nodes(self):
        return [n for n, v in self.nodes.items() if v['drv'] != 'shadow']

    def child_nodes(self, shadow):
        return [c for name, c in self.children.get(shadow, [])
                if name.startswith('children.')]

    def metadata_of(self, shadow):
        for name, c in self.children.get(shadow, []):
            if name == 'metadata':
                return c
        return None

    def in_use(self, node):
        return bool(self.parents.get(node)) or node in self.backends


class Generator:
    def __init__(self, seed, target, nsteps):
        self.rng = random.Random(seed)
        self.target = target
        self.nsteps = nsteps
        self.count = 0
        self.model = Model()
        self.pending = []
        self.names = collections.Counter()
        self.adds = {}          # node-name -> blockdev-add arguments
        self.shadow_opts = {}   # shadow -> its options, for reopens
        self.export_ctx = {}    # node -> whether its export is in io0
        self.files = self.make_files()
        # Half of the cases start with a shadow node that is likely valid
        # (distinct children of one size, a fresh metadata image), to
        # reach the states deep in the driver sooner
        self.valid_first = self.chance(0.5)

    # -- helpers
    def chance(self, p):
        return self.rng.random() < p

    def pick(self, seq):
        seq = list(seq)
        return self.rng.choice(seq) if seq else None

    def fresh(self, prefix):
        n = self.names[prefix]
        self.names[prefix] += 1
        return f'{prefix}{n}'

    def random_value(self, depth=0):
        r = self.rng.random()
        if r < 0.3:
            return self.pick(INTERESTING_INTS)
        if r < 0.5:
            return self.pick(WEIRD_STRINGS)
        if r < 0.6:
            return self.pick([True, False, None])
        if r < 0.7:
            return self.pick([0.5, -1.5, 1e300, 4096.0])
        if r < 0.85 or depth > 2:
            return [self.random_value(depth + 1)
                    for _ in range(self.rng.randrange(4))]
        return {self.pick(['driver', 'node-name', 'x', 'children', 'size']):
                self.random_value(depth + 1)
                for _ in range(self.rng.randrange(3))}

    # -- files
    def make_files(self):
        rng = self.rng
        size = wpick(rng, [(3, [MiB, 4 * MiB]), (4, [16 * MiB]),
                           (3, [64 * MiB]), (1, [256 * MiB])])
        files = []
        for i in range(3):
            s = size
            if self.chance(0.15):
                s = self.pick([size // 2, size + 4096, size * 2, 1000])
            data = []
            for _ in range(rng.randrange(0, 6)):
                length = self.pick([4096, 65536, MiB])
                off = rng.randrange(0, max(1, s - length)) & ~4095
                data.append([off, min(length, s - off), rng.randrange(1, 256)])
            files.append({'name': f'd{i}.img', 'size': s, 'fill': 'sparse',
                          'data': data, 'role': 'data'})
        files.append({'name': 'q0.qcow2', 'size': size, 'fmt': 'qcow2',
                      'role': 'data'})
        files += [{'name': f'm{i}.img', 'size': 4 * MiB, 'role': 'meta'}
                  for i in range(3)]
        files += [
                  {'name': 'msmall.img', 'size': self.pick([0, 4096, 12288,
                                                            65536]),
                   'role': 'meta'},
                  {'name': 'mgarbage.img', 'size': 64 * KiB,
                   'fill': 'garbage', 'role': 'meta'}]
        return files

    def file_path(self, role=None):
        cands = [f for f in self.files if role is None or f['role'] == role]
        if role and self.chance(0.05):
            cands = self.files
        return '@DIR@/' + self.pick(cands)['name']

    # -- the protocol with run_case
    def next(self, last):
        if last is not None and self.last_step is not None:
            self.observe(self.last_step, last)
        if self.pending:
            step = self.pending.pop(0)
        elif self.count >= self.nsteps:
            step = None
        else:
            self.count += 1
            step = self.generate()
            if self.model.auto:
                step = self.placeholders(step)
        self.last_step = step
        return step

    last_step = None

    def placeholders(self, o):
        """Automatic node names in @o as @AUTO:parent:child@"""
        if isinstance(o, str):
            return self.model.auto.get(o, o)
        if isinstance(o, list):
            return [self.placeholders(x) for x in o]
        if isinstance(o, dict):
            return {k: self.placeholders(v) for k, v in o.items()}
        return o

    def observe(self, step, out):
        if 'qmp' not in step or out.get('status') != 'ok':
            return
        ex = step['qmp'].get('execute')
        ret = out['reply'].get('return')
        if step.get('model'):
            self.model.update(ex, ret)
            return
        args = step['qmp'].get('arguments')
        if ex == 'blockdev-add' and isinstance(args, dict):
            self.adds[args.get('node-name')] = args
            if args.get('driver') == 'shadow':
                self.shadow_opts[args.get('node-name')] = args
        elif ex == 'block-export-add' and isinstance(args, dict):
            self.export_ctx[args.get('node-name')] = 'iothread' in args
        elif ex == 'blockdev-reopen':
            for o in args['options']:
                if o.get('driver') == 'shadow':
                    self.shadow_opts[o.get('node-name')] = o
                else:
                    self.adds[o.get('node-name')] = o
        if ex in MUTATING:
            self.pending += [
                {'qmp': {'execute': 'x-debug-query-block-graph'},
                 'model': 1},
                {'qmp': {'execute': 'query-named-block-nodes',
                         'arguments': {'flat': True}}, 'model': 1},
                {'qmp': {'execute': 'query-block-exports'}, 'model': 1},
                {'qmp': {'execute': 'query-blockstats',
                         'arguments': {'query-nodes': True}}, 'model': 1}]

    def generate(self):
        m = self.model
        shadows = m.shadows()
        if self.valid_first:
            return self.gen_valid_first()
        acts = [(self.gen_add_base, 30 if len(m.nodes) < 3 else 8),
                (self.gen_add_shadow, 40 if not shadows else 10)]
        if shadows:
            acts += [(self.gen_reopen_shadow, 20), (self.gen_change, 10),
                     (self.gen_del, 5), (self.gen_resize, 2),
                     (self.gen_export_add, 6 if not m.exports else 2),
                     (self.gen_set_active, 3), (self.gen_sleep, 4),
                     (self.gen_reopen_other, 3), (self.gen_query, 2),
                     (self.gen_corrupt, 1), (self.gen_verify, 3)]
            if m.exports:
                acts += [(self.gen_nbd, 16), (self.gen_export_del, 2)]
            if self.target != 'qsd':
                acts += [(self.gen_hmp_io, 10)]
            if self.target == 'system-pc':
                acts += [(self.gen_device, 3)]
        else:
            acts += [(self.gen_del, 1), (self.gen_reopen_other, 1),
                     (self.gen_set_active, 1)]
        total = sum(w for _, w in acts)
        r = self.rng.random() * total
        for fn, w in acts:
            if r < w:
                return fn()
            r -= w
        return acts[0][0]()

    # -- mutations of an argument tree
    def mutate(self, obj, n=None):
        n = n or self.rng.randrange(1, 4)
        for _ in range(n):
            obj = self.mutate_once(obj)
        return obj

    def mutate_once(self, obj):
        paths = []

        def walk(o, path):
            paths.append(path)
            if isinstance(o, dict):
                for k, v in o.items():
                    walk(v, path + [k])
            elif isinstance(o, list):
                for i, v in enumerate(o):
                    walk(v, path + [i])
        walk(obj, [])
        path = self.pick(paths)
        if not path:
            return obj if self.chance(0.9) else self.random_value()
        parent = obj
        for p in path[:-1]:
            parent = parent[p]
        key = path[-1]
        val = parent[key]
        r = self.rng.random()
        if r < 0.25 and isinstance(parent, dict):
            del parent[key]
        elif r < 0.35 and isinstance(parent, dict):
            parent[self.pick(['x-junk', 'children.0', 'file', 'image',
                              'size', 'active', 'Active-Child', 'chunk_size',
                              'metadata.driver', ''])] = self.random_value()
        elif r < 0.5 and isinstance(val, list):
            op = self.rng.randrange(4)
            if op == 0 and val:
                val.append(copy.deepcopy(self.pick(val)))
            elif op == 1 and val:
                val.pop(self.rng.randrange(len(val)))
            elif op == 2:
                parent[key] = []
            else:
                parent[key] = val * self.rng.randrange(2, 20)
        elif r < 0.65 and isinstance(val, (int, float)) and \
                not isinstance(val, bool):
            parent[key] = self.pick(INTERESTING_INTS)
        elif r < 0.75 and isinstance(val, str):
            parent[key] = self.pick(WEIRD_STRINGS)
        elif r < 0.8:
            parent[key] = [val] if self.chance(0.5) else {'x': val}
        else:
            parent[key] = self.random_value()
        return obj

    def qmp(self, execute, arguments=None, mutate_p=0.0):
        msg = {'execute': execute}
        if arguments is not None:
            msg['arguments'] = arguments
        if mutate_p and self.chance(mutate_p):
            msg['arguments'] = self.mutate(msg.get('arguments', {}))
        return {'qmp': msg}

    def generic(self, d, shadow=False):
        if self.chance(0.12):
            d['read-only'] = True
        elif self.chance(0.03):
            d['read-only'] = False
        if self.chance(0.06):
            d['auto-read-only'] = self.chance(0.8)
        if self.chance(0.06):
            d['active'] = False
        elif self.chance(0.02):
            d['active'] = True
        if self.chance(0.03):
            d['force-share'] = True
        if self.chance(0.04):
            d['discard'] = self.pick(['unmap', 'ignore'])
        if self.chance(0.03):
            d['detect-zeroes'] = self.pick(['on', 'unmap', 'off'])
        if self.chance(0.03):
            d['cache'] = {'no-flush': self.chance(0.5)}
        return d

    # -- base nodes
    def base_options(self, name=None, inline=False):
        kind = wpick(self.rng, [(20, ['file']), (20, ['raw']),
                                (8, ['qcow2']), (24, ['null']),
                                (6, ['blkdebug']), (18, ['meta'])])
        d = {}
        if kind == 'file':
            d = {'driver': 'file', 'filename': self.file_path('data')}
        elif kind == 'raw':
            files = [n for n, v in self.model.nodes.items()
                     if v['drv'] == 'file' and not self.model.in_use(n)]
            if files and self.chance(0.3):
                d = {'driver': 'raw', 'file': self.pick(files)}
            else:
                d = {'driver': 'raw', 'file': {
                    'driver': 'file', 'filename': self.file_path('data')}}
        elif kind == 'qcow2':
            d = {'driver': 'qcow2', 'file': {
                'driver': 'file', 'filename': '@DIR@/q0.qcow2'}}
        elif kind == 'null':
            d = {'driver': 'null-co', 'size': wpick(self.rng, NULL_SIZES)}
            if self.chance(0.5):
                d['read-zeroes'] = True
            if self.chance(0.1):
                d['latency-ns'] = self.pick([1000, 100000])
        elif kind == 'blkdebug':
            rules = []
            for _ in range(self.rng.randrange(1, 3)):
                rule = {'event': 'none', 'errno': self.pick([5, 28, 1]),
                        'iotype': self.pick(['read', 'write', 'flush',
                                             'write-zeroes', 'discard',
                                             'block-status'])}
                if self.chance(0.5):
                    rule['once'] = True
                if self.chance(0.3):
                    rule['sector'] = self.rng.randrange(0, 4096)
                rules.append(rule)
            d = {'driver': 'blkdebug', 'inject-error': rules,
                 'image': {'driver': 'file',
                           'filename': self.file_path('data')}}
        else:
            d = {'driver': 'file', 'filename': self.file_path('meta')}
        if name:
            d['node-name'] = name
        if not inline or self.chance(0.3):
            self.generic(d)
        return d

    def gen_add_base(self):
        name = self.fresh('n')
        if self.chance(0.03) and self.model.nodes:
            name = self.pick(self.model.nodes)
        return self.qmp('blockdev-add', self.base_options(name), 0.05)

    # -- shadow nodes
    def child_ref(self, self_name):
        m = self.model
        free = [n for n in m.base_nodes() if not m.in_use(n)]
        used = [n for n in m.base_nodes() if m.in_use(n)]
        r = self.rng.random()
        if r < 0.5 and free:
            return self.pick(free)
        if r < 0.58 and m.shadows():
            return self.pick(m.shadows())
        if r < 0.61:
            return self_name
        if r < 0.66 and used:
            return self.pick(used)
        if r < 0.69:
            return self.pick(['nonexistent', '', 'n99', '#block999'])
        if r < 0.91:
            d = self.base_options(self.fresh('i') if self.chance(0.5)
                                  else None, inline=True)
            return d
        if r < 0.94:
            return self.shadow_options(self.fresh('ish'), depth=1)
        if r < 0.97:
            return self.pick([{}, {'driver': 'nope'}, {'driver': 5},
                              {'driver': 'null-co', 'size': -1}])
        return self.random_value()

    def shadow_options(self, name, depth=0):
        rng = self.rng
        n = wpick(rng, [(20, [1]), (40, [2]), (25, [3]), (8, [4]),
                        (2, [0]), (5, list(range(5, 18)))])
        if self.chance(0.06) and n >= 2:
            # twins: the same inline node n times, so that children of one
            # size, however large, make a valid node
            twin = self.base_options(None, inline=True)
            children = [copy.deepcopy(twin) for _ in range(n)]
        else:
            children = [self.child_ref(name) for _ in range(n)]
        if children and self.chance(0.05):
            children.append(copy.deepcopy(self.pick(children)))
        d = {'driver': 'shadow', 'node-name': name, 'children': children}
        if self.chance(0.4) and children:
            names = [c if isinstance(c, str) else
                     (c.get('node-name') if isinstance(c, dict) else None)
                     for c in children]
            names = [x for x in names if x is not None]
            if names and self.chance(0.85):
                d['active-child'] = self.pick(names)
            else:
                d['active-child'] = self.pick(['nonexistent', '', 5, None,
                                               name, ['x']])
        if self.chance(0.5):
            d['chunk-size'] = wpick(rng, CHUNK_SIZES)
        self.shadow_tunables(d)
        if self.chance(0.4) and depth == 0:
            d['metadata'] = self.metadata_ref(name, children)
        if self.chance(0.85):
            self.generic(d, shadow=True)
        return d

    def shadow_tunables(self, d):
        for key, vals in ENUMS.items():
            if self.chance(0.45):
                d[key] = self.pick(vals) if self.chance(0.85) else \
                    self.pick(['', 'SYNC', 'hot_first', 'fast', 1, None,
                               True, ['sync']])
        if self.chance(0.5):
            d['prewarm-speed'] = wpick(self.rng, SPEEDS)
        if self.chance(0.3):
            d['copy-on-read'] = self.chance(0.5) if self.chance(0.9) else \
                self.pick(['yes', 1, None, 'on'])
        if self.chance(0.3):
            d['copy-compare'] = self.chance(0.5) if self.chance(0.9) else \
                self.pick(['yes', 1, None, 'on'])

    def metadata_ref(self, self_name, children):
        m = self.model
        r = self.rng.random()
        metas = [n for n, a in self.adds.items() if isinstance(a, dict) and
                 a.get('driver') == 'file' and n in m.nodes and
                 str(a.get('filename', '')).startswith('@DIR@/m')]
        free_metas = [n for n in metas if not m.in_use(n)]
        if r < 0.35 and free_metas:
            return self.pick(free_metas)
        if r < 0.65:
            return {'driver': 'file', 'filename': self.file_path('meta')}
        if r < 0.7 and metas:
            return self.pick(metas)         # another shadow's, maybe
        if r < 0.75 and children:
            c = self.pick(children)         # a child also the metadata
            return copy.deepcopy(c)
        if r < 0.8 and m.shadows():
            return self.pick(m.shadows())
        if r < 0.83:
            return self_name
        if r < 0.88:
            return {'driver': 'null-co', 'size': self.pick([0, 4096, MiB,
                                                            64 * MiB])}
        if r < 0.92:
            return {'driver': 'file', 'filename': self.file_path('meta'),
                    'read-only': True}
        if r < 0.95:
            return self.pick([n for n in m.nodes] or ['nonexistent'])
        return self.random_value()

    def gen_valid_first(self):
        """Base nodes on distinct data images, then a shadow over them
        with, often, a metadata image that no other node used"""
        self.vf_nodes = getattr(self, 'vf_nodes', [])
        want = getattr(self, 'vf_want', None)
        if want is None:
            want = self.vf_want = self.pick([1, 2, 2, 3])
        if self.chance(0.35) and not getattr(self, 'vf_meta', None):
            # the metadata image as a node of its own, named
            self.vf_meta = self.fresh('n')
            return self.qmp('blockdev-add', {
                'driver': 'file', 'filename': '@DIR@/m2.img',
                'node-name': self.vf_meta})
        if len(self.vf_nodes) < want:
            name = self.fresh('n')
            f = f'@DIR@/d{len(self.vf_nodes)}.img'
            kind = self.pick(['file', 'raw', 'raw'])
            d = {'driver': 'file', 'filename': f} if kind == 'file' else \
                {'driver': 'raw', 'file': {'driver': 'file', 'filename': f}}
            d['node-name'] = name
            self.vf_nodes.append(name)
            return self.qmp('blockdev-add', d)
        self.valid_first = False
        name = self.fresh('sh')
        d = {'driver': 'shadow', 'node-name': name,
             'children': list(self.vf_nodes)}
        if self.chance(0.3):
            d['active-child'] = self.pick(self.vf_nodes)
        if self.chance(0.3):
            d['chunk-size'] = self.pick([4096, 65536, MiB])
        self.shadow_tunables(d)
        if getattr(self, 'vf_meta', None):
            d['metadata'] = self.vf_meta
        elif self.chance(0.6):
            d['metadata'] = {'driver': 'file', 'filename': '@DIR@/m2.img'}
        return self.qmp('blockdev-add', d, 0.05)

    def gen_add_shadow(self):
        name = self.fresh('sh')
        if self.chance(0.03):
            name = self.pick(list(self.model.nodes) + ['', '1sh', 'a' * 40,
                                                       'sh,x'])
        return self.qmp('blockdev-add', self.shadow_options(name), 0.15)

    def current_shadow_options(self, sh):
        """Options of shadow @sh as a reopen must give them"""
        m = self.model
        base = copy.deepcopy(self.shadow_opts.get(sh) or
                             {'driver': 'shadow', 'node-name': sh})
        base['children'] = m.child_nodes(sh)
        md = m.metadata_of(sh)
        if md:
            base['metadata'] = md
        else:
            base.pop('metadata', None)
        if sh in m.active:
            base['active-child'] = m.active[sh]
        if m.nodes.get(sh, {}).get('ro'):
            base['read-only'] = True
        return base

    def gen_reopen_shadow(self):
        m = self.model
        sh = self.pick(m.shadows())
        if self.chance(0.03):
            sh = self.pick(m.base_nodes() or ['nonexistent'])
        d = self.current_shadow_options(sh)
        d['driver'] = 'shadow'
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            r = rng.random()
            kids = m.child_nodes(sh)
            if r < 0.35 and kids:
                d['active-child'] = self.pick(kids)
            elif r < 0.5:
                d['read-only'] = not d.get('read-only', False)
                if self.chance(0.2):
                    del d['read-only']
            elif r < 0.6:
                key = self.pick(list(ENUMS) + ['prewarm-speed',
                                               'copy-on-read', 'copy-compare'])
                if key in d and self.chance(0.3):
                    del d[key]      # back to the default
                else:
                    self.shadow_tunables(d)
            elif r < 0.64:
                d['chunk-size'] = wpick(rng, CHUNK_SIZES)
            elif r < 0.69:
                d['metadata'] = self.metadata_ref(sh, d['children']) \
                    if self.chance(0.7) else None
                if d['metadata'] is None:
                    del d['metadata']
            elif r < 0.76:
                kids = list(d['children'])
                op = rng.randrange(4)
                if op == 0:
                    rng.shuffle(kids)
                elif op == 1 and kids:
                    kids.pop()
                elif op == 2:
                    kids.append(self.child_ref(sh))
                else:
                    kids = [self.base_options(None, inline=True)
                            if self.chance(0.5) else k for k in kids]
                d['children'] = kids
            elif r < 0.8:
                d['auto-read-only'] = self.chance(0.5)
            elif r < 0.83:
                d['active'] = self.chance(0.3)
            elif r < 0.86:
                d['active-child'] = self.pick(['nonexistent', '', 5, sh])
            else:
                pass        # the same options: retries degraded children
        opts = [d]
        if self.chance(0.12):
            # reopen a child or the metadata node in the same transaction
            other = self.pick(m.child_nodes(sh) + [m.metadata_of(sh)])
            if other and other in self.adds:
                o = copy.deepcopy(self.adds[other])
                o['read-only'] = self.chance(0.5)
                opts.append(o)
        return self.qmp('blockdev-reopen', {'options': opts}, 0.08)

    def gen_reopen_other(self):
        cands = [n for n in self.adds if n in self.model.nodes and
                 self.model.nodes[n]['drv'] != 'shadow']
        if not cands:
            return self.gen_add_base()
        n = self.pick(cands)
        o = copy.deepcopy(self.adds[n])
        o['read-only'] = self.chance(0.5)
        if self.chance(0.2):
            o['auto-read-only'] = self.chance(0.5)
        return self.qmp('blockdev-reopen', {'options': [o]}, 0.05)

    def gen_change(self):
        m = self.model
        r = self.rng.random()
        parent = self.pick(m.shadows())
        if r < 0.05:
            parent = self.pick(m.base_nodes() or ['n0'])
        elif r < 0.08:
            parent = self.pick(['nonexistent', '', '#block1'])
        args = {'parent': parent}
        op = wpick(self.rng, [(45, ['add']), (45, ['del']), (5, ['both']),
                              (5, ['none'])])
        if op in ('add', 'both'):
            free = [n for n in m.base_nodes() if not m.in_use(n)]
            used = [n for n in m.nodes if m.in_use(n)]
            r = self.rng.random()
            if r < 0.5 and free:
                node = self.pick(free)
            elif r < 0.7 and used:
                node = self.pick(used)      # a child elsewhere, metadata
            elif r < 0.75:
                node = parent
            elif r < 0.85 and m.child_nodes(parent):
                node = self.pick(m.child_nodes(parent))
            elif r < 0.9 and m.shadows():
                node = self.pick(m.shadows())
            else:
                node = self.pick(['nonexistent', '', 'n99'] +
                                 list(m.nodes))
            args['node'] = node
        if op in ('del', 'both'):
            names = [c for c, _n in m.children.get(parent, [])]
            if self.chance(0.75) and names:
                args['child'] = self.pick(names)
            else:
                args['child'] = self.pick(['children.99', 'children.-1',
                                           'file', 'metadata', '',
                                           'children.0x1'] +
                                          list(m.nodes))
        return self.qmp('x-blockdev-change', args, 0.03)

    def gen_del(self):
        m = self.model
        r = self.rng.random()
        exported = list(m.exports.values())
        if r < 0.35 and m.shadows():
            node = self.pick(m.shadows())
        elif r < 0.5 and exported:
            node = self.pick(exported)
        elif r < 0.85 and m.nodes:
            node = self.pick(m.nodes)
        else:
            node = self.pick(['nonexistent', '', '#block1'])
        return self.qmp('blockdev-del', {'node-name': node}, 0.03)

    def gen_resize(self):
        m = self.model
        # Any node, also one under raw, which keeps the old length of its
        # file (patches/0020: its next write past the new end fails)
        node = self.pick(m.shadows()) if self.chance(0.6) else \
            self.pick(list(m.nodes))
        size = m.nodes.get(node, {}).get('size', MiB)
        return self.qmp('block_resize', {
            'node-name': node,
            'size': self.pick([size, size + 4096, size // 2, 0, 1000,
                               2**62, 2**63 - 1, -1])}, 0.05)

    def gen_export_add(self):
        m = self.model
        node = self.pick(m.shadows()) if self.chance(0.8) else \
            self.pick(m.nodes)
        eid = self.fresh('e')
        args = {'type': 'nbd', 'id': eid, 'node-name': node, 'name': eid,
                'writable': self.chance(0.5)}
        # Not one export in the main loop and one in an iothread: QEMU's
        # NBD server then may abort at quit (corpus/upstream-nbd-two-
        # exports-iothread.json).  Nor two in an iothread: at quit QEMU
        # drains the node while it holds the graph write lock for the
        # first export, and that poll runs the second one's removal, which
        # takes the lock again (corpus/upstream-two-exports-iothread-
        # quit.json).  An export in an iothread moves the nodes connected
        # to its node there too, so these hold for the whole graph: no
        # second export of a node while any export is in an iothread, and
        # no export in an iothread once a node is exported twice (seed 166
        # exported a shadow twice under a parent exported in an iothread)
        exported = node in self.model.exports.values()
        nodes = list(self.model.exports.values())
        in_iothread = any(self.export_ctx.get(n) for n in nodes)
        twice = len(set(nodes)) < len(nodes)
        if exported and (self.export_ctx.get(node) or in_iothread):
            return self.qmp('query-block-exports')
        if self.chance(0.25) and not exported and not twice:
            args['iothread'] = 'io0'
            if self.chance(0.3):
                args['fixed-iothread'] = self.chance(0.5)
        return self.qmp('block-export-add', args, 0.03)

    def gen_export_del(self):
        args = {'id': self.pick(self.model.exports)}
        if self.chance(0.5):
            args['mode'] = self.pick(['safe', 'hard'])
        return self.qmp('block-export-del', args, 0.03)

    def io_ops(self, size, max_inflight_read=None):
        ops = []
        read_bytes = 0
        for _ in range(self.rng.randrange(1, 6)):
            kind = wpick(self.rng, [(45, ['read']), (30, ['write']),
                                    (8, ['trim']), (8, ['zero']),
                                    (9, ['flush'])])
            if kind == 'flush':
                ops.append(['flush'])
                continue
            length = self.pick([512, 4096, 65536, 65536 + 4096, 256 * KiB,
                                MiB, 1, 3000])
            r = self.rng.random()
            if r < 0.75 and size > 0:
                off = self.rng.randrange(0, max(1, size))
                if self.chance(0.7):
                    off &= ~4095
                off = min(off, max(0, size - length))
            elif r < 0.9:
                off = max(0, size - self.pick([512, 4096, 1]))
            else:
                off = self.pick([size, size + 4096, 2**62, 2**63 - 4096])
            if kind == 'read':
                if max_inflight_read is not None and \
                        read_bytes + length > max_inflight_read:
                    continue
                read_bytes += length
                ops.append(['read', off, length])
            elif kind == 'write':
                ops.append(['write', off, length, self.rng.randrange(256),
                            self.pick([0, 0, 1])])
            else:
                ops.append([kind, off, length, self.pick([0, 0, 1, 2])])
        return ops or [['flush']]

    def gen_nbd(self):
        m = self.model
        eid = self.pick(m.exports)
        size = m.nodes.get(m.exports[eid], {}).get('size', MiB)
        wait = self.chance(0.8)
        n = {'conn': self.pick(['c0', 'c0', 'c1']), 'export': eid,
             'ops': self.io_ops(size, None if wait else 64 * KiB),
             'wait': wait}
        if self.chance(0.08):
            n = {'conn': n['conn'], 'close': True}
        return {'nbd': n}

    def gen_hmp_io(self):
        m = self.model
        node = self.pick(m.shadows()) if self.chance(0.8) else \
            self.pick(m.nodes)
        size = m.nodes.get(node, {}).get('size', MiB)
        cmds = []
        ops = self.io_ops(size)
        for op in ops:
            if op[0] == 'read':
                cmds.append(f'read {op[1]} {op[2]}')
            elif op[0] == 'write':
                cmds.append(f'write -P {op[3]} {op[1]} {op[2]}')
            elif op[0] == 'zero':
                cmds.append(f'write -z {op[1]} {op[2]}')
            elif op[0] == 'trim':
                cmds.append(f'discard {op[1]} {op[2]}')
            else:
                cmds.append('flush')
        return self.qmp('human-monitor-command', {
            'command-line': f'qemu-io {node} "{self.pick(cmds)}"'})

    def gen_set_active(self):
        args = {'active': self.chance(0.5)}
        if self.chance(0.7) and self.model.nodes:
            args['node-name'] = self.pick(self.model.nodes)
        return self.qmp('blockdev-set-active', args, 0.03)

    def gen_sleep(self):
        return {'sleep': self.pick([0.01, 0.05, 0.1, 0.3])}

    def gen_verify(self):
        """x-shadow-verify and x-shadow-verify-copy, their speed and their
        cancel, while the graph changes under them (a job must not pin a
        node it may not)."""
        m = self.model
        r = self.rng.random()
        if r < 0.15:
            return self.qmp('block-job-set-speed', {
                'device': self.pick(['v0', 'v1', 'nonexistent']),
                'speed': self.pick([0, 4096, MiB, -1, 2**63 - 1])}, 0.1)
        if r < 0.3:
            return self.qmp('job-cancel',
                            {'id': self.pick(['v0', 'v1', 'nonexistent'])})
        if r < 0.45:
            # a mirror's verify between any two nodes (no mirror here: it
            # reads, drains them and fails; they may go meanwhile)
            nodes = list(m.nodes) + ['nonexistent']
            args = {'job-id': self.pick(['v0', 'v1']),
                    'node-name': self.pick(nodes),
                    'target': self.pick(nodes)}
            if self.chance(0.6):
                args['speed'] = self.pick([0, 4096, 64 * KiB, MiB, -1])
            if self.chance(0.1):
                args['auto-dismiss'] = False
            return self.qmp('x-shadow-verify-copy', args, 0.05)
        node = self.pick(m.shadows()) if self.chance(0.9) else \
            self.pick(list(m.nodes) + ['nonexistent'])
        kids = m.child_nodes(node) or ['n0']
        args = {'job-id': self.pick(['v0', 'v1']), 'node-name': node,
                'child': self.pick(kids + ['nonexistent'])
                if self.chance(0.95) else node}
        if self.chance(0.5):
            args['against'] = self.pick(kids + ['nonexistent'])
        if self.chance(0.6):
            args['speed'] = self.pick([0, 4096, 64 * KiB, MiB, -1])
        if self.chance(0.1):
            args['auto-dismiss'] = False
        return self.qmp('x-shadow-verify', args, 0.05)

    def gen_query(self):
        q = self.pick(['query-blockstats', 'query-named-block-nodes',
                       'query-block', 'x-debug-query-block-graph'])
        args = {'query-nodes': True} if q == 'query-blockstats' else None
        return self.qmp(q, args)

    def gen_corrupt(self):
        f = self.pick(['m0.img', 'm1.img'])
        r = self.rng.random()
        fix = []
        if r < 0.5:
            # a header field, with a valid checksum
            copy_i = self.rng.randrange(2)
            field, fmt = self.pick([(8, '<I'), (16, '<Q'), (24, '<Q'),
                                    (32, '<Q'), (40, '<Q'), (48, '<Q'),
                                    (56, '<I'), (60, '<I'), (64, '<Q'),
                                    (72, '<Q'), (80, '<Q'), (88, '<Q')])
            vmax = 2**32 - 1 if fmt == '<I' else 2**64 - 1
            val = self.pick([0, 1, 2, 15, 16, 17, 4096, 65536, 2**31,
                             vmax, vmax - 1, 12288, 1 << 40]) & vmax
            offset = copy_i * 4096 + field
            data = struct.pack(fmt, val)
            fix = [copy_i]
        elif r < 0.75:
            # the slot table: flags or identity of a slot
            slot = self.rng.randrange(16)
            offset = 8192 + slot * 256 + self.pick([0, 8, 40, 104])
            data = self.rng.randbytes(self.pick([1, 4, 32]))
        else:
            # intent map, valid maps
            offset = 12288 + self.rng.randrange(0, 64 * KiB)
            data = self.pick([b'\xff' * 512, self.rng.randbytes(64)])
        return {'corrupt': {'file': f, 'offset': offset, 'data': data.hex(),
                            'fix_crc': fix}}

    def gen_device(self):
        if self.chance(0.3) and self.names['dev']:
            return self.qmp('device_del', {
                'id': f'dev{self.rng.randrange(self.names["dev"])}'})
        m = self.model
        node = self.pick(m.shadows()) if self.chance(0.8) else \
            self.pick(m.nodes)
        return self.qmp('device_add', {
            'driver': 'virtio-blk-pci', 'drive': node,
            'id': self.fresh('dev')}, 0.03)


# ---------------------------------------------------------------------------
# One seed, reproducers, minimizing
# ---------------------------------------------------------------------------

def target_for(seed, targets):
    rng = random.Random(f'target-{seed}')
    weights = {'qsd': 70, 'system-none': 15, 'system-pc': 15}
    ts = [t for t in TARGETS if t in targets]
    return rng.choices(ts, [weights[t] for t in ts])[0]


def reproducer(case, res):
    return {'version': 1, 'seed': case.get('seed'), 'target': case['target'],
            'files': case['files'], 'signature': res.finding['signature'],
            'kind': res.finding['kind'], 'detail': res.finding['detail'],
            'stderr': res.finding.get('stderr', ''),
            'failing-step': res.finding['step'],
            'steps': res.steps}


def sig_file_name(sig):
    h = hashlib.sha1(sig.encode()).hexdigest()[:8]
    slug = re.sub(r'[^a-z0-9]+', '-', sig.lower())[:40].strip('-')
    return f'{slug}-{h}'


def workdir_for(tag):
    return os.path.join(OUT, 'work', f'{tag}-{os.getpid()}')


def set_timeout(t):
    global CMD_TIMEOUT, QUIT_TIMEOUT
    CMD_TIMEOUT = QUIT_TIMEOUT = t


def run_seed(seed, nsteps, targets, mem_mib, verbose=False, timeout=None):
    """Worker: generate and run the case of @seed; a summary dict"""
    if timeout:
        set_timeout(timeout)
    target = target_for(seed, targets)
    gen = Generator(seed, target, nsteps)
    case = {'seed': seed, 'target': target, 'files': gen.files}
    res = run_case(target, gen.files, gen, workdir_for('seed'), mem_mib,
                   verbose)
    out = res.to_json()
    out.update(seed=seed, target=target)
    if res.finding:
        rep = reproducer(case, res)
        path = os.path.join(OUT, f'crash-{sig_file_name(rep["signature"])}'
                            f'-seed{seed}.json')
        with open(path, 'w') as f:
            json.dump(rep, f, indent=1)
        out['reproducer'] = path
    return out


def load_case(path):
    with open(path) as f:
        return json.load(f)


def replay(case, mem_mib, verbose=False):
    return run_case(case['target'], case['files'], Replay(case['steps']),
                    workdir_for('replay'), mem_mib, verbose)


def reproduces(case, sig, tries, mem_mib):
    for _ in range(tries):
        res = replay(case, mem_mib)
        if res.finding and res.finding['signature'] == sig:
            return True
    return False


def minimize(case, tries, budget, mem_mib, log=print):
    """Drop steps (ddmin), then keys of arguments, while the same
    signature still comes out"""
    sig = case['signature']
    deadline = time.monotonic() + budget
    case = copy.deepcopy(case)
    # Steps after the failing one never ran
    case['steps'] = case['steps'][:case.get('failing-step', 10**9) + 1]
    runs = 0

    def test(steps):
        nonlocal runs
        runs += 1
        c = dict(case, steps=steps)
        return reproduces(c, sig, tries, mem_mib)

    steps = case['steps']
    n = 2
    while len(steps) >= 2 and time.monotonic() < deadline:
        chunk = (len(steps) + n - 1) // n
        reduced = False
        for i in range(n):
            cand = steps[:i * chunk] + steps[(i + 1) * chunk:]
            if cand and test(cand):
                steps = cand
                n = max(n - 1, 2)
                reduced = True
                log(f'# minimize: {len(steps)} steps')
                break
        if not reduced:
            if n >= len(steps):
                break
            n = min(len(steps), n * 2)
    # Keys of the arguments and elements of lists (NBD requests,
    # children), one at a time
    i = 0
    while i < len(steps) and time.monotonic() < deadline:
        st = steps[i]
        body = st.get('qmp', {}).get('arguments') if 'qmp' in st else \
            st.get('nbd')
        if isinstance(body, (dict, list)):
            for path in key_paths(body):
                cand_step = copy.deepcopy(st)
                parent = cand_step['qmp']['arguments'] if 'qmp' in st \
                    else cand_step['nbd']
                try:
                    for p in path[:-1]:
                        parent = parent[p]
                    del parent[path[-1]]
                except (KeyError, IndexError, TypeError):
                    continue
                cand = steps[:i] + [cand_step] + steps[i + 1:]
                if time.monotonic() < deadline and test(cand):
                    steps = cand
                    st = cand_step
        i += 1
    case['steps'] = steps
    case['failing-step'] = len(steps) - 1
    used = json.dumps(steps)
    case['files'] = [f for f in case['files'] if f['name'] in used]
    res = replay(case, mem_mib)
    if res.finding:
        case['failing-step'] = res.finding['step']
        case['detail'] = res.finding['detail']
    log(f'# minimize: {len(steps)} steps after {runs} runs')
    return case


def key_paths(args):
    """Paths of the optional-looking keys of @args, deepest first"""
    out = []

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, path + [k])
                if k not in ('driver', 'node-name', 'execute', 'conn',
                             'export', 'ops'):
                    out.append(path + [k])
        elif isinstance(o, list):
            # from the end, so that earlier indexes stay right
            for i in reversed(range(len(o))):
                if not path or path[-1] != 'ops':   # an NBD request whole
                    walk(o[i], path + [i])
                if len(o) > 1:
                    out.append(path + [i])
    walk(args, [])
    return out


def format_steps(case):
    lines = []
    for i, st in enumerate(case['steps']):
        mark = '*' if i == case.get('failing-step') else ' '
        if 'qmp' in st:
            body = json.dumps(st['qmp'])
        else:
            body = json.dumps(st)
        lines.append(f'{mark}{i:3d} {body}')
    if case.get('failing-step', -1) >= len(case['steps']):
        lines.append(f'*{len(case["steps"]):3d} {{"execute": "quit"}}')
    return lines


def print_case(case, prefix='#   '):
    print(f'{prefix}target {case["target"]}, seed {case.get("seed")}, '
          f'files: ' + ', '.join(f'{f["name"]} ({f["size"]})'
                                 for f in case['files']))
    for line in format_steps(case):
        print(prefix + line[:400])


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def parse_seeds(s):
    a, _, b = s.partition('-')
    return list(range(int(a), int(b or a) + 1))


def replay_corpus_entry(path, runs, mem_mib, timeout=None):
    """Worker: replay a corpus entry up to @runs times (once for a hang),
    until it aborts or hangs"""
    if timeout:
        set_timeout(timeout)
    case = load_case(path)
    if case.get('kind') == 'hang':
        runs = 1
        set_timeout(min(CMD_TIMEOUT, 5.0))
    for i in range(runs):
        res = replay(case, mem_mib)
        if res.finding:
            return {'finding': res.finding, 'runs': i + 1}
    return {'finding': None, 'runs': runs}


def corpus_tap(tap, name, case, out):
    """One TAP line for a corpus entry.  Entries marked "upstream" are bugs
    of QEMU itself that the generator stays away from: a SKIP while they
    still reproduce, unless "patched" names the project's QEMU patch that
    fixes them: then they must not reproduce, as the driver's own."""
    f = out['finding']
    if case.get('patched'):
        if f:
            tap(False, f'corpus/{name}: reproduces again, though '
                f'{case["patched"]} fixes it: {f["kind"]} at step '
                f'{f["step"]} ({f["during"]}): {f["signature"]}')
        else:
            tap(True, f'corpus/{name}: fixed by {case["patched"]} '
                f'({case["upstream"]})')
    elif case.get('upstream'):
        if f:
            tap(True, f'corpus/{name}: {case["upstream"]} # SKIP upstream '
                f'QEMU bug, not the shadow driver: {f["signature"]}')
        else:
            tap(True, f'corpus/{name}: no longer reproduces '
                f'({case["upstream"]})')
    elif f:
        same = 'still' if f['signature'] == case['signature'] else 'now'
        tap(False, f'corpus/{name}: {same} {f["kind"]}s at step '
            f'{f["step"]} ({f["during"]}): {f["signature"]}')
    else:
        tap(True, f'corpus/{name}: no abort or hang ({out["runs"]} '
            f'replays)')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', default=None, help='A-B (default 0-39)')
    ap.add_argument('--seconds', type=float, default=None,
                    help='run seeds from --seed-base until this time is up')
    ap.add_argument('--seed-base', type=int, default=0)
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--targets', default=','.join(TARGETS))
    ap.add_argument('--jobs', type=int, default=1)
    ap.add_argument('--corpus', default=CORPUS)
    ap.add_argument('--no-corpus', action='store_true')
    ap.add_argument('--corpus-runs', type=int, default=2)
    ap.add_argument('--minimize-new', action='store_true',
                    help='minimize each new abort found')
    ap.add_argument('--minimize-budget', type=float, default=None,
                    help='seconds for --minimize-new in all (default: a '
                    'third of --seconds, at least 120; 1200 with --seeds)')
    ap.add_argument('--timeout', type=float, default=CMD_TIMEOUT,
                    help='seconds a command may take (default 10; '
                    '--minimize: 5)')
    ap.add_argument('--mem-limit', type=int, default=MEM_LIMIT_MIB,
                    help='RLIMIT_AS of QEMU in MiB (0: none)')
    ap.add_argument('--replay', metavar='FILE')
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--minimize', metavar='FILE')
    ap.add_argument('--output', metavar='FILE')
    ap.add_argument('--budget', type=float, default=600)
    ap.add_argument('--tries', type=int, default=2,
                    help='replays per candidate when minimizing')
    ap.add_argument('--print', metavar='FILE', dest='print_file')
    ap.add_argument('--verbose', '-v', action='store_true')
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if args.minimize and '--timeout' not in sys.argv:
        args.timeout = 5.0
    set_timeout(args.timeout)

    if args.print_file:
        case = load_case(args.print_file)
        print(f'# {case.get("signature")}')
        print_case(case, '')
        return 0
    if args.replay:
        case = load_case(args.replay)
        bad = 0
        for i in range(args.runs):
            res = replay(case, args.mem_limit, args.verbose)
            if res.finding:
                bad += 1
                f = res.finding
                print(f'replay {i + 1}: {f["kind"]} at step {f["step"]} '
                      f'({f["during"]}): {f["signature"]}\n  {f["detail"]}')
            else:
                print(f'replay {i + 1}: no abort, {len(res.steps)} steps in '
                      f'{res.time:.1f} s')
        return 1 if bad else 0
    if args.minimize:
        case = load_case(args.minimize)
        print(f'# minimizing {args.minimize}: {case["signature"]}, '
              f'{len(case["steps"])} steps')
        if not reproduces(case, case['signature'], 3, args.mem_limit):
            print('# does not reproduce in 3 replays')
            return 1
        small = minimize(case, args.tries, args.budget, args.mem_limit)
        out = args.output or re.sub(r'(\.min)?\.json$', '.min.json',
                                    args.minimize)
        with open(out, 'w') as f:
            json.dump(small, f, indent=1)
        print(f'# written to {out}')
        print_case(small, '')
        return 0

    targets = args.targets.split(',')
    t0 = time.monotonic()
    ntap = 0
    failed = 0

    def tap(ok, text):
        nonlocal ntap, failed
        ntap += 1
        failed += not ok
        print(f'{"ok" if ok else "not ok"} {ntap} - {text}', flush=True)

    known = set()
    corpus = []
    if not args.no_corpus and os.path.isdir(args.corpus):
        corpus = sorted(f for f in os.listdir(args.corpus)
                        if f.endswith('.json'))
    corpus_cases = {n: load_case(os.path.join(args.corpus, n))
                    for n in corpus}
    # A random case with a known signature is not a failure only if it is
    # upstream's, and then only if the signature names code of its own
    # ("specific"): the generator avoids the triggers of the others, so the
    # same signature from a random case is likely the driver's.  The
    # driver's own entries and those a QEMU patch of the project fixes are
    # fixed bugs: a random case that hits one again is a regression by
    # another path.
    known = {c['signature'] for c in corpus_cases.values()
             if c.get('upstream') and c.get('specific') and
             not c.get('patched')}

    if args.seconds is None:
        seeds = parse_seeds(args.seeds or '0-39')
    else:
        seeds = None
    results = []
    by_sig = {}
    deadline = t0 + args.seconds if args.seconds else None

    # Minimizing takes at most --minimize-budget, counted from the first
    # seed
    min_budget = [0]

    def handle(r):
        results.append(r)
        f = r['finding']
        if args.verbose or f:
            what = f'{f["kind"]} at step {f["step"]} ({f["during"]}): ' \
                   f'{f["signature"]}' if f else 'ok'
            print(f'# seed {r["seed"]} ({r["target"]}, {r["steps"]} steps, '
                  f'{r["time"]:.1f} s): {what}', flush=True)
        if f:
            if f['signature'] not in by_sig:
                by_sig[f['signature']] = []
                if f['signature'] not in known:
                    case = load_case(r['reproducer'])
                    print(f'# NEW {f["kind"]}: {f["signature"]}\n'
                          f'#   {f["detail"]}\n#   reproducer: '
                          f'{r["reproducer"]}')
                    print_case(case)
                    left = min_budget[0] - time.monotonic()
                    if args.minimize_new and left > 10:
                        small = minimize(case, args.tries,
                                         min(args.budget, 300, left),
                                         args.mem_limit,
                                         log=lambda s: None)
                        path = r['reproducer'].replace('.json', '.min.json')
                        with open(path, 'w') as fh:
                            json.dump(small, fh, indent=1)
                        print(f'#   minimized ({len(small["steps"])} '
                              f'steps): {path}')
                        print_case(small)
            by_sig[f['signature']].append(r)

    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(args.jobs,
                                                mp_context=ctx) as pool:
        # The corpus first: every abort found so far, in parallel
        futs = {n: pool.submit(replay_corpus_entry,
                               os.path.join(args.corpus, n),
                               args.corpus_runs, args.mem_limit,
                               args.timeout)
                for n in corpus}
        for n in corpus:
            corpus_tap(tap, n, corpus_cases[n], futs[n].result())
        if deadline:
            deadline = time.monotonic() + args.seconds
        min_budget[0] = time.monotonic() + (
            args.minimize_budget or
            (max(args.seconds / 3, 120) if args.seconds else 1200))

        next_seed = args.seed_base
        seed_iter = iter(seeds) if seeds is not None else None
        running = set()

        def submit():
            nonlocal next_seed
            if seed_iter is not None:
                s = next(seed_iter, None)
                if s is None:
                    return False
            else:
                if time.monotonic() > deadline:
                    return False
                s = next_seed
                next_seed += 1
            running.add(pool.submit(run_seed, s, args.steps, targets,
                                    args.mem_limit, args.verbose,
                                    args.timeout))
            return True

        for _ in range(args.jobs):
            submit()
        while running:
            done, _ = concurrent.futures.wait(
                running, return_when=concurrent.futures.FIRST_COMPLETED)
            for fut in done:
                running.discard(fut)
                try:
                    handle(fut.result())
                except Exception as e:      # noqa: BLE001 (a fuzzer bug)
                    tap(False, f'fuzzer error: {type(e).__name__}: {e}')
                submit()

    results.sort(key=lambda r: r['seed'])
    cmds = collections.Counter()
    errors = {}
    for r in results:
        for c, st, n in r['commands']:
            cmds[(c, st)] += n
        for c, norm, n, ex, cmd in r['errors']:
            e = errors.setdefault((c, norm), [0, ex, cmd])
            e[0] += n
    ncmd = sum(cmds.values())
    per_target = collections.Counter(r['target'] for r in results)
    seed_desc = f'seeds {results[0]["seed"]}-{results[-1]["seed"]}' \
        if results else 'no seeds'
    new = {s: rs for s, rs in by_sig.items() if s not in known}
    old = {s: rs for s, rs in by_sig.items() if s in known}
    for sig, rs in sorted(new.items()):
        tap(False, f'new {rs[0]["finding"]["kind"]}: {sig} (seeds '
            f'{", ".join(str(r["seed"]) for r in rs[:8])}; reproducer '
            f'{os.path.relpath(rs[0]["reproducer"], REPO)})')
    if not new:
        tap(True, f'random: {len(results)} cases ({seed_desc}; ' +
            ', '.join(f'{t} {n}' for t, n in sorted(per_target.items())) +
            f'), {ncmd} commands, no abort or hang outside the corpus')
    empty = [(c, ex) for (c, _n), (_k, ex, _cmd) in errors.items()
             if not ex.strip()]
    tap(not empty, f'error replies: {len(errors)} distinct messages, '
        f'{len(empty)} empty' + (f' ({empty[0][0]})' if empty else ''))

    for sig, rs in sorted(old.items()):
        print(f'# known (corpus): {sig}: {len(rs)} cases, first seed '
              f'{rs[0]["seed"]}')
    print('# commands (ok/error): ' + ', '.join(
        f'{c} {cmds[(c, "ok")]}/{cmds[(c, "error")]}'
        for c in sorted({c for c, _ in cmds})))
    feats = collections.Counter()
    for r in results:
        feats.update(r['features'])
    print('# reached: ' + ', '.join(f'{k} {v}'
                                    for k, v in sorted(feats.items())))
    poor = [(c, ex, n) for (c, norm), (n, ex, _cmd) in
            sorted(errors.items()) if poor_message(c, ex)]
    for c, ex, n in poor[:20]:
        print(f'# poor error message ({c}, {n} times): {ex!r}')
    with open(os.path.join(OUT, 'errors.json'), 'w') as f:
        json.dump([{'command': c, 'message': ex, 'count': n,
                    'normalized': norm, 'example': cmd,
                    'poor': poor_message(c, ex)}
                   for (c, norm), (n, ex, cmd) in sorted(errors.items())],
                  f, indent=1)
    print(f'# QMP fuzz: {len(results)} cases, {ncmd} commands in '
          f'{time.monotonic() - t0:.0f} s; {len(by_sig)} abort/hang '
          f'signatures ({len(new)} new); error messages in '
          f'{os.path.relpath(os.path.join(OUT, "errors.json"), REPO)}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
