#!/usr/bin/env python3
"""Minimal reproductions of driver bugs the stress test found, each a few
QMP commands and NBD requests on a fresh qemu-storage-daemon.  Each prints
what happened and exits 1 while the bug is there, 0 once it is fixed.

  repro.py block-status   block status and sparse reads call unhydrated
                          data holes after an instant switch
  repro.py metadata-child x-blockdev-change child=metadata aborts
  repro.py remove-holder  removing the only holder of unhydrated chunks is
                          accepted; reads of them then fail
  repro.py readonly       a read-only reopen while hydrating aborts
  repro.py renumber       after two x-blockdev-change removals no reopen
                          (so no switch) is accepted
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'bench'))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
import nbdio  # noqa: E402
from model import BLOCK, block_data, describe  # noqa: E402

MiB = 1 << 20
SIZE = 4 * MiB
SLOW = {'prewarm': 'off', 'prewarm-speed': 65536}  # hydration crawls


def setup(work, meta=True):
    """ta full of data, tb and tc sparse and empty, md zeroed."""
    with open(f'{work}/a.raw', 'wb') as f:
        f.write(b''.join(block_data(b, 1) for b in range(SIZE // BLOCK)))
    for n in ('b', 'c'):
        with open(f'{work}/{n}.raw', 'wb') as f:
            f.truncate(SIZE)
    with open(f'{work}/md.raw', 'wb') as f:
        f.write(bytes(MiB))
    d = benchlib.Daemon(work)
    for n in ('a', 'b', 'c'):
        d.add({'driver': 'raw', 'node-name': 't' + n,
               'file': {'driver': 'file', 'filename': f'{work}/{n}.raw'}})
    if meta:
        d.add({'driver': 'file', 'node-name': 'md',
               'filename': f'{work}/md.raw'})
    return d


def shadow(children, active, meta=True, **extra):
    o = {'driver': 'shadow', 'node-name': 'sh0', 'children': children,
         'active-child': active, **extra}
    if meta:
        o['metadata'] = 'md'
    return o


def qmp(d, cmd, **args):
    try:
        return 'ok', d.cmd(cmd, **args)
    except Exception as e:     # ExecuteError, or the daemon is gone
        return 'error', str(e) or type(e).__name__


def say(what, result):
    print(f'  {what}: {result}')


def died(d, seconds=1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and d.proc.poll() is None:
        time.sleep(0.05)
    rc = d.proc.poll()
    if rc is not None:
        say('qemu-storage-daemon', f'died with signal {-rc}')
        try:
            d.qmp.close()
        except Exception:   # whatever the QMP library saw
            pass
        return True
    return False


def block_status(work):
    d = setup(work)
    d.add(shadow(['ta', 'tb'], 'ta', **SLOW))
    say('instant switch to tb', qmp(d, 'blockdev-reopen', options=[
        shadow(['ta', 'tb'], 'tb', **SLOW)]))
    d.export('sh0')
    c = nbdio.Client(d.nbd_sock, 'sh0')
    ext = c.block_status(0, SIZE)
    say('NBD block status', ext)
    r = c.call(nbdio.CMD_READ, MiB, 65536, flags=0)
    say('sparse read of block 256 (no DF)',
        f'{describe(256, r.data[:BLOCK])}, hole chunks {r.holes}')
    say('read of block 256 with DF', describe(256, c.read(MiB, BLOCK)))
    c.close()
    d.stop()
    return any(fl & (nbdio.STATE_HOLE | nbdio.STATE_ZERO)
               for _o, _n, fl in ext) or bool(r.holes)


def metadata_child(work):
    d = setup(work)
    d.add(shadow(['ta', 'tb'], 'ta'))
    say('x-blockdev-change parent=sh0 child=metadata',
        qmp(d, 'x-blockdev-change', parent='sh0', child='metadata'))
    bad = died(d)
    if not bad:
        d.stop()
    return bad


def remove_holder(work):
    d = setup(work)
    d.add(shadow(['ta', 'tb'], 'ta', **SLOW))
    say('instant switch to tb', qmp(d, 'blockdev-reopen', options=[
        shadow(['ta', 'tb'], 'tb', **SLOW)]))
    res = qmp(d, 'x-blockdev-change', parent='sh0', child='children.0')
    say('remove ta (children.0), the only holder of most chunks', res)
    d.export('sh0')
    c = nbdio.Client(d.nbd_sock, 'sh0')
    try:
        say('read block 512', describe(512, c.read(2 * MiB, BLOCK)))
        failed = False
    except nbdio.NBDError as e:
        say('read block 512', e)
        failed = True
    c.close()
    d.stop()
    return res[0] == 'ok' and failed


def readonly(work):
    d = setup(work)
    d.add(shadow(['ta', 'tb'], 'ta', **SLOW))
    say('instant switch to tb', qmp(d, 'blockdev-reopen', options=[
        shadow(['ta', 'tb'], 'tb', **SLOW)]))
    say('reopen read-only', qmp(d, 'blockdev-reopen', options=[
        shadow(['ta', 'tb'], 'tb', **SLOW, **{'read-only': True})]))
    bad = died(d, 3)        # at the next copy-up write
    if not bad:
        d.stop()
        if d.proc.returncode:
            say('qemu-storage-daemon, stopped',
                f'ended with {d.proc.returncode}')
            bad = True
    return bad


def renumber(work):
    d = setup(work, meta=False)
    d.add(shadow(['ta', 'tb', 'tc'], 'ta', meta=False))
    say('remove tb (children.1)', qmp(d, 'x-blockdev-change', parent='sh0',
                                      child='children.1'))
    say('reopen [ta, tc]', qmp(d, 'blockdev-reopen', options=[
        shadow(['ta', 'tc'], 'ta', meta=False)]))
    say('remove tc (children.2)', qmp(d, 'x-blockdev-change', parent='sh0',
                                      child='children.2'))
    res = qmp(d, 'blockdev-reopen', options=[shadow(['ta'], 'ta',
                                                     meta=False)])
    say('reopen [ta]', res)
    d.stop()
    return res[0] != 'ok'


CASES = {'block-status': block_status, 'metadata-child': metadata_child,
         'remove-holder': remove_holder, 'readonly': readonly,
         'renumber': renumber}


def main():
    names = sys.argv[1:] or list(CASES)
    if any(n not in CASES for n in names):
        print(__doc__)
        return 2
    work = benchlib.fresh_dir('repro')
    bugs = 0
    for name in names:
        print(f'{name}:')
        bug = CASES[name](work)
        bugs += bug
        print(f'  => {"BUG" if bug else "ok"}')
    return 1 if bugs else 0


if __name__ == '__main__':
    sys.exit(main())
