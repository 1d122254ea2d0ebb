# Helpers shared by the shadow driver's iotests
#
# Copyright (c) 2026 The shadowtier authors
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import re
import struct
import subprocess
import sys
import time

import iotests
from iotests import qemu_img

# The project's own NBD client (bench/nbdclient.py): it pipelines requests
# and says exactly which completed
REPO = os.path.join(os.path.dirname(os.path.realpath(__file__)),
                    '..', '..', '..')
sys.path.insert(0, os.path.join(REPO, 'bench'))
import nbdclient  # noqa: E402
# The stress test's reader of metadata images (tests/stress/mdinfo.py)
sys.path.insert(0, os.path.join(REPO, 'tests', 'stress'))
import mdinfo  # noqa: E402

MiB = 1024 * 1024
# Chunks one map unit covers: a map's row holds one unit of each column
UNIT_CHUNKS = mdinfo.UNIT_CHUNKS


def image_path(name):
    return os.path.join(iotests.test_dir, f'shadow-{name}.{iotests.imgfmt}')


def create_image(name, size):
    path = image_path(name)
    qemu_img('create', '-f', iotests.imgfmt, path, str(size))
    return path


def child_opts(node, path, throttle_group=None):
    """A tier: a format node over a file, optionally behind a throttle."""
    fmt = {
        'driver': iotests.imgfmt,
        'node-name': node if throttle_group is None else f'{node}-fmt',
        'file': {'driver': 'file', 'filename': path},
    }
    if throttle_group is None:
        return fmt
    return {'driver': 'throttle', 'node-name': node,
            'throttle-group': throttle_group, 'file': fmt}


def shadow_stats(vm, node='sh0'):
    for entry in vm.cmd('query-blockstats', {'query-nodes': True}):
        if entry.get('node-name') == node:
            return entry['driver-specific']
    raise AssertionError(f'no blockstats for {node}')


def child_stats(vm, child, node='sh0'):
    for c in shadow_stats(vm, node)['children']:
        if c['node-name'] == child:
            return c
    raise AssertionError(f'{child} is not a child of {node}')


def node_size(vm, node):
    for n in vm.cmd('query-named-block-nodes', flat=True):
        if n['node-name'] == node:
            return n['image']['virtual-size']
    raise AssertionError(f'no node {node}')


def wait_synced(vm, child, node='sh0', timeout=120):
    """Wait until @child is synced, or as the active child holds every
    chunk (hydrated): what SHADOW_CHILD_SYNCED reports.  The state, not
    the event: an event of an earlier copy may still be queued (a wait
    that found the child synced did not consume it) and would end the
    wait before this copy finished."""
    size = node_size(vm, node)

    def synced():
        st = child_stats(vm, child, node)
        return st['state'] == 'synced' or (st['state'] == 'active' and
                                           st['valid-bytes'] >= size)

    if not wait_until(synced, timeout=timeout):
        raise AssertionError(f'{child} of {node} not synced after '
                             f'{timeout} s: {child_stats(vm, child, node)}')


def hmp_qemu_io_log(log):
    """What HMP's qemu-io commands did, from a VM's log: HMP's qemu-io
    prints what it finds, and that it could not parse a command, to
    QEMU's stdout and stderr, not to the monitor.  Returns the lines that
    show a failed, unparsed or unknown command or an assertion, and how
    many reads and writes completed."""
    bad = [line for line in log.splitlines()
           if re.search(r'Pattern verification failed|\w+ failed: |'
                        r'Parsing error|command ".*" not found|'
                        r'bad argument count|Assertion', line)]
    done = {'read': len(re.findall(r'(?m)^read \d+/\d+ bytes', log)),
            'write': len(re.findall(r'(?m)^wrote \d+/\d+ bytes', log))}
    return bad, done


class NodeAccess:
    """qemu-io on nodes of a running VM, through NBD exports.

    HMP's qemu-io prints to QEMU's stdout, so its reads verify nothing;
    a qemu-io process on an NBD export reports pattern mismatches and
    errors in its output and exit code.
    """

    def __init__(self, vm, writable=('sh0',)):
        self.vm = vm
        self.sock = os.path.join(iotests.sock_dir,
                                 f'shadow-nbd-{os.getpid()}.sock')
        self.writable = writable
        self.exported = set()
        vm.cmd('nbd-server-start',
               {'addr': {'type': 'unix', 'data': {'path': self.sock}}})

    def uri(self, node):
        if node not in self.exported:
            self.vm.cmd('block-export-add', {
                'type': 'nbd', 'id': f'exp-{node}', 'node-name': node,
                'name': node, 'writable': node in self.writable})
            self.exported.add(node)
        return f'nbd+unix:///{node}?socket={self.sock}'

    def run(self, node, *cmds):
        args = [a for c in cmds for a in ('-c', c)]
        if node not in self.writable:
            args.insert(0, '-r')
        res = subprocess.run(iotests.qemu_io_args_no_fmt +
                             ['-f', 'raw', self.uri(node)] + args,
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             universal_newlines=True, check=False)
        ok = (res.returncode == 0 and
              'Pattern verification failed' not in res.stdout and
              'failed' not in res.stdout)
        return ok, res.stdout

    def ok(self, test, node, *cmds):
        """Run qemu-io commands on @node; fail @test on any error."""
        ok, out = self.run(node, *cmds)
        test.assertTrue(ok, f'qemu-io {node} {cmds}: {out}')
        return out

    def holds(self, node, *cmds):
        """Whether the pattern reads @cmds find their patterns on @node.
        Any other failure (an I/O error, an export that does not open) is
        an error, not a pattern that does not hold."""
        ok, out = self.run(node, *cmds)
        if ok:
            return True
        lines = [line for line in out.splitlines()
                 if 'failed' in line or 'rror' in line]
        if lines and all(line.startswith('Pattern verification failed')
                         for line in lines):
            return False
        raise AssertionError(f'qemu-io {node} {cmds}: {out}')

    def close(self):
        for node in self.exported:
            self.vm.cmd('block-export-del', {'id': f'exp-{node}'})
        # Export deletion completes asynchronously
        wait_until(lambda: not self.vm.cmd('query-block-exports'))
        self.exported.clear()
        self.vm.cmd('nbd-server-stop')


def meta_unit_offset(index, column, copy=0):
    """Offset of a map unit in shadow metadata (docs/shadow-metadata.md):
    column 0 is the intent map, column 1 + i the map of slot i, which has
    two copies."""
    pos = 1 + 2 * (column - 1) + copy if column else 0
    return 16384 + (index * 33 + pos) * 4096


def meta_rewrite_header(path, fields):
    """Set @fields ({offset: (struct format, value)}) in both header copies
    of shadow metadata and fix their checksums, as a hostile or damaged
    image would have them"""
    with open(path, 'r+b') as f:
        for base in (0, 8192):
            f.seek(base)
            header = bytearray(f.read(8192))
            for off, (fmt, value) in fields.items():
                struct.pack_into(fmt, header, off, value)
            struct.pack_into('<I', header, 92, 0)
            struct.pack_into('<I', header, 92, mdinfo.crc32c(header))
            f.seek(base)
            f.write(header)


def meta_past_end(path):
    """(disk length, slots) of shadow metadata on disk: the length its
    current header records, and the slots whose current unit 0 (by
    sequence number, among copies of the slot's epoch) has a bit set past
    the last chunk of that length.  Checksums are not checked."""
    with open(path, 'rb') as f:
        data = f.read()
    headers = [data[off:off + 8192] for off in (0, 8192)
               if data[off:off + 8] == b'SHADOWMD']
    header = max(headers, key=lambda h: struct.unpack_from('<Q', h, 16)[0])
    chunk, length = struct.unpack_from('<QQ', header, 32)
    nb = -(-length // chunk)
    slots = []
    for i in range(16):
        flags, _, epoch = struct.unpack_from('<IIQ', header, 256 + 256 * i)
        if not flags & 1:
            continue
        best = None
        for copy in (0, 1):
            off = meta_unit_offset(0, 1 + i, copy)
            unit = data[off:off + 4096]
            if len(unit) < 4096:
                continue
            unit_epoch, _, seq = struct.unpack_from('<QQQ', unit, 8)
            if unit_epoch == epoch and (best is None or seq > best[0]):
                best = (seq, unit[32:])
        if best and any(best[1][c // 8] >> (c % 8) & 1
                        for c in range(nb, 8 * len(best[1]))):
            slots.append(i)
    return length, slots


def data_bytes(path, fmt):
    """Bytes that qemu-img map reports as data in an image."""
    out = qemu_img('map', '--output=json', '-f', fmt, path).stdout
    return sum(e['length'] for e in json.loads(out) if e['data'])


def wait_until(pred, timeout=60, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False
