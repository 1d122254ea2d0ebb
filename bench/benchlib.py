"""Helpers for shadowtier's benchmarks: QEMU programs, a storage daemon
with QMP, timing and medians.  Every ratio is measured against a baseline
in the same run, alternating the two, because the machine is shared."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU = os.path.join(REPO, 'build', 'qemu')
sys.path.insert(0, os.path.join(REPO, 'build', 'src', 'qemu', 'python'))
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402

QEMU_IMG = os.path.join(QEMU, 'qemu-img')
QEMU_IO = os.path.join(QEMU, 'qemu-io')
QSD = os.path.join(QEMU, 'storage-daemon', 'qemu-storage-daemon')
WORK = os.path.join(REPO, 'build', 'bench', 'work')
MiB = 1024 * 1024
GiB = 1024 * MiB


def quick_arg(doc, names=()):
    """The arguments a benchmark script takes: --quick, and the benchmark
    @names it runs, if it has any.  --help prints @doc (and @names);
    anything else is an error, so that no benchmark runs by mistake (they
    take minutes and load the machine).  Returns whether --quick was
    given."""
    args = sys.argv[1:]
    if '-h' in args or '--help' in args:
        print(doc.strip())
        if names:
            print('\nNames: ' + ' '.join(names))
        sys.exit(0)
    unknown = [a for a in args if a != '--quick' and a not in names]
    if unknown:
        known = ' '.join(('--quick',) + tuple(names))
        sys.exit(f'{os.path.basename(sys.argv[0])}: unknown argument '
                 f'{unknown[0]!r} (known: {known})')
    return '--quick' in args


def run(*args, stdin=None, cpus=None):
    """Runs @args (on @cpus, a set of CPU numbers, if given); returns its
    output, or raises RuntimeError with it when it fails"""
    res = subprocess.run(args, input=stdin, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True,
                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus))
                         if cpus else None)
    if res.returncode != 0:
        raise RuntimeError(f'{" ".join(args)}: {res.stdout}')
    return res.stdout


def qmp_connect(sock, proc, error):
    """A QMP connection to the monitor socket of the process proc, which
    exists: the socket exists once bound, a moment before it listens, so
    connecting is tried again for a second.  Raises error (and kills proc)
    when it cannot connect."""
    for attempt in range(100):
        qmp = QEMUMonitorProtocol(sock)
        try:
            qmp.connect()
            return qmp
        except Exception:   # ConnectError
            if attempt == 99 or proc.poll() is not None:
                proc.kill()
                proc.wait()
                raise error(f'cannot connect to the QMP socket {sock}')
            time.sleep(0.01)


def fresh_dir(name):
    path = os.path.join(WORK, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def make_image(path, size, data=None, fmt='raw'):
    """An image of @size; @data: None (sparse), 'dense', or a list of
    (offset, length) ranges written with pattern 0x5a."""
    run(QEMU_IMG, 'create', '-f', fmt, path, str(size))
    if data == 'dense':
        data = [(0, size)]
    cmds = []
    for off, length in data or []:
        while length > 0:
            n = min(length, 256 * MiB)
            cmds += ['-c', f'write -P 0x5a {off} {n}']
            off += n
            length -= n
    if cmds:
        run(QEMU_IO, '-f', fmt, *cmds, path)


def bench_seconds(args):
    """Run qemu-img bench, return the time it reports."""
    out = run(QEMU_IMG, 'bench', *args)
    return float(out.split('Run completed in ')[1].split(' ')[0])


def paired_ratio(numerators, denominators):
    """The median of numerators[i] / denominators[i], runs that ran back
    to back.  This machine's speed switches between states that last
    seconds (qemu-img bench on null-co at queue depth 32: 0.42 s or 0.58 s
    for the same binary), so the median of each side alone can compare
    one state with the other when their counts differ: the same code
    measured 0.85 and 0.98 that way within a minute.  A pair runs in one
    state.  Results give the ratio of the medians as well."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def median_ratio(baseline, candidate, runs):
    """Alternate the two measurements @runs times, in the order AB BA AB...
    so that a drift of the machine favours neither; medians, and the ratio
    baseline/candidate of each pair's (>1: candidate faster when these are
    times; see paired_ratio())."""
    b, c = [], []
    for i in range(runs):
        if i % 2:
            c.append(candidate())
            b.append(baseline())
        else:
            b.append(baseline())
            c.append(candidate())
    mb, mc = statistics.median(b), statistics.median(c)
    return {'baseline': mb, 'candidate': mc, 'ratio': paired_ratio(b, c),
            'ratio-of-medians': mb / mc,
            'baseline_runs': b, 'candidate_runs': c}


class Daemon:
    """A qemu-storage-daemon with a QMP monitor and an NBD server."""

    def __init__(self, workdir, *args):
        self.qmp_sock = os.path.join(workdir, 'qmp.sock')
        self.nbd_sock = os.path.join(workdir, 'nbd.sock')
        for s in (self.qmp_sock, self.nbd_sock):
            if os.path.exists(s):
                os.remove(s)
        self.proc = subprocess.Popen(
            [QSD, '--chardev',
             f'socket,id=mon,path={self.qmp_sock},server=on,wait=off',
             '--monitor', 'mon',
             '--nbd-server', f'addr.type=unix,addr.path={self.nbd_sock}',
             *args])
        deadline = time.monotonic() + 10
        while not os.path.exists(self.qmp_sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('qemu-storage-daemon did not start')
            time.sleep(0.01)
        self.qmp = qmp_connect(self.qmp_sock, self.proc, RuntimeError)

    def cmd(self, command, **args):
        return self.qmp.cmd(command, **args)

    def add(self, opts):
        return self.qmp.cmd('blockdev-add', **opts)

    def export(self, node, writable=True, iothread=None):
        extra = {'iothread': iothread} if iothread else {}
        self.cmd('block-export-add', type='nbd', id=f'exp-{node}',
                 **{'node-name': node}, name=node, writable=writable,
                 **extra)
        return f'nbd+unix:///{node}?socket={self.nbd_sock}'

    def wait_event(self, name, timeout=600, **match):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f'no {name} event in {timeout} s')
            ev = self.qmp.pull_event(wait=left)
            if ev and ev['event'] == name and all(
                    ev['data'].get(k) == v for k, v in match.items()):
                return ev

    def shadow_stats(self, node='sh0'):
        for e in self.cmd('query-blockstats', **{'query-nodes': True}):
            if e.get('node-name') == node:
                return e['driver-specific']
        raise RuntimeError(f'no stats for {node}')

    def stop(self):
        try:
            self.qmp.close()
        finally:
            self.proc.terminate()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def file_node(name, path, fmt='raw', **extra):
    return {'driver': fmt, 'node-name': name,
            'file': {'driver': 'file', 'filename': path, **extra}}


def flat(prefix, d):
    """Nested options as QEMU's dotted keys: {'file': {'driver': x}} ->
    {'file.driver': x}"""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(f'{prefix}{k}.', v))
        else:
            out[f'{prefix}{k}'] = v
    return out


def image_opts(node):
    """A node's options for --image-opts"""
    return ','.join(f'{k}={v}' for k, v in flat('', node).items())


def write_results(results, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=2)
