#!/usr/bin/env python3
"""The shadow driver on its own, narrated: a qemu-storage-daemon with a
shadow node over a slow (cheap) and a fast tier, load through an NBD
export, the fast shadow warming up, a switch, and a byte-for-byte compare.

Run by `make demo`; needs build/qemu.  Work files go to build/demo/.
"""

import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU = os.path.join(REPO, 'build', 'qemu')
sys.path.insert(0, os.path.join(QEMU, '..', 'src', 'qemu', 'python'))
from qemu.qmp.legacy import QEMUMonitorProtocol  # noqa: E402

QEMU_IMG = os.path.join(QEMU, 'qemu-img')
QEMU_IO = os.path.join(QEMU, 'qemu-io')
QSD = os.path.join(QEMU, 'storage-daemon', 'qemu-storage-daemon')
WORK = os.path.join(REPO, 'build', 'demo')
SIZE = 256 * 1024 * 1024
MiB = 1024 * 1024


def say(msg=''):
    print(msg, flush=True)


def step(msg):
    say()
    say(f'\033[1m>> {msg}\033[0m' if sys.stdout.isatty() else f'>> {msg}')


def run(*args, quiet=True):
    res = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    if res.returncode != 0:
        say(res.stdout)
        raise SystemExit(f'demo: {" ".join(args[:2])} failed')
    return res.stdout


def children(qmp):
    for e in qmp.cmd('query-blockstats', **{'query-nodes': True}):
        if e.get('node-name') == 'sh0':
            return e['driver-specific']
    raise SystemExit('demo: no statistics for sh0')


def show(st):
    for c in st['children']:
        say(f"     {c['node-name']:6} {c['state']:8} "
            f"{100 * c['valid-bytes'] / SIZE:5.1f}% valid, "
            f"{c['copied-bytes'] // MiB:4d} MiB copied, "
            f"{c['wr-operations']:6d} writes")


def bench(nbd, label):
    """4 KiB random reads at queue depth 8 through the export."""
    out = run(QEMU_IMG, 'bench', '-f', 'raw', '-c', '2000', '-d', '8',
              '-s', '4096', '-S', str(1024 * 1024 + 4096), nbd)
    secs = float(out.strip().split('Run completed in ')[1].split(' ')[0])
    say(f'     {label}: 2000 reads in {secs:.2f} s '
        f'({2000 / secs:.0f} IOPS)')
    return secs


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    cheap = os.path.join(WORK, 'cheap.qcow2')
    fast = os.path.join(WORK, 'fast.raw')
    qmp_sock = os.path.join(WORK, 'qmp.sock')
    nbd_sock = os.path.join(WORK, 'nbd.sock')
    nbd = f'nbd+unix:///sh0?socket={nbd_sock}'

    step('Two tiers: a qcow2 image on a slow, cheap tier and a raw image '
         'on a fast one')
    run(QEMU_IMG, 'create', '-f', 'qcow2', cheap, str(SIZE))
    run(QEMU_IMG, 'create', '-f', 'raw', fast, str(SIZE))
    run(QEMU_IO, '-f', 'qcow2', '-c', 'write -P 0xc0 0 48M',
        '-c', 'write -P 0xc1 128M 16M', cheap)
    say('     the cheap tier already holds 64 MiB of the disk\'s data; the '
        'rest is sparse')
    say('     the cheap tier is throttled to 400 IOPS / 40 MiB/s by QEMU\'s '
        'throttle filter')

    step('qemu-storage-daemon with a shadow node: cheap active, fast as its '
         'shadow, exported over NBD')
    qsd = subprocess.Popen([
        QSD,
        '--chardev', f'socket,id=mon,path={qmp_sock},server=on,wait=off',
        '--monitor', 'mon',
        '--object', 'throttle-group,id=slow,x-iops-total=400,'
                    'x-bps-total=41943040',
        '--blockdev', f'file,node-name=cheap-file,filename={cheap}',
        '--blockdev', 'qcow2,node-name=cheap-fmt,file=cheap-file',
        '--blockdev', 'throttle,node-name=cheap,throttle-group=slow,'
                      'file=cheap-fmt',
        '--blockdev', f'file,node-name=fast-file,filename={fast}',
        '--blockdev', 'raw,node-name=fast,file=fast-file',
        '--nbd-server', f'addr.type=unix,addr.path={nbd_sock}',
    ])
    try:
        for _ in range(100):
            if os.path.exists(qmp_sock):
                break
            time.sleep(0.05)
        qmp = QEMUMonitorProtocol(qmp_sock)
        qmp.connect()
        args = {'driver': 'shadow', 'node-name': 'sh0',
                'children': ['cheap', 'fast'], 'active-child': 'cheap'}
        say('     blockdev-add ' + str(args))
        qmp.cmd('blockdev-add', **args)
        qmp.cmd('block-export-add', type='nbd', id='exp0', **{'node-name': 'sh0'},
                name='sh0', writable=True)

        step('The fast shadow warms up in the background while the guest '
             'writes')
        run(QEMU_IO, '-f', 'raw', '-c', 'write -P 0xd0 8M 8M',
            '-c', 'write -P 0xd1 200M 4M', nbd)
        say('     wrote 12 MiB through the export: each write went to both '
            'tiers in parallel')
        start = time.monotonic()
        while True:
            st = children(qmp)
            show(st)
            if st['children'][1]['state'] == 'synced':
                break
            if time.monotonic() - start > 300:
                raise SystemExit('demo: the fast tier did not sync')
            time.sleep(1)
        ev = [e for e in qmp.get_events() if e['event'] == 'SHADOW_CHILD_SYNCED']
        say(f'     event {ev[-1]["event"]} {ev[-1]["data"]}' if ev else '')
        say(f'     fast is synced after {time.monotonic() - start:.1f} s')

        step('Read latency on the cheap tier')
        before = bench(nbd, 'cheap active')

        step('Switch to the fast tier: blockdev-reopen with active-child=fast')
        args['active-child'] = 'fast'
        t0 = time.monotonic()
        qmp.cmd('blockdev-reopen', options=[args])
        took = time.monotonic() - t0
        ev = qmp.pull_event(wait=5)
        say(f'     blockdev-reopen returned in {took * 1000:.1f} ms; '
            f'guest I/O was paused for {ev["data"]["pause-ns"] / 1000:.0f} us')
        show(children(qmp))
        after = bench(nbd, 'fast active ')
        say(f'     the same reads are {before / after:.1f}x faster, with no '
            f'copy at switch time')

        step('Writes now land on fast first and are mirrored to cheap')
        run(QEMU_IO, '-f', 'raw', '-c', 'write -P 0xe0 64M 8M', nbd)
        show(children(qmp))

        step('Stop the daemon and compare the tiers byte for byte')
        qmp.cmd('block-export-del', id='exp0')
        qmp.close()
    finally:
        qsd.terminate()
        qsd.wait()
    say('     ' + run(QEMU_IMG, 'compare', '-f', 'qcow2', '-F', 'raw',
                       cheap, fast).strip())
    out = run(QEMU_IO, '-f', 'raw', '-c', 'read -P 0xe0 64M 8M',
              '-c', 'read -P 0xd0 8M 8M', '-c', 'read -P 0xc1 128M 16M', fast)
    assert 'Pattern verification failed' not in out, out
    say('     fast holds every byte written, before, during and after the '
        'switch')
    say()
    say('demo: done')


if __name__ == '__main__':
    main()
