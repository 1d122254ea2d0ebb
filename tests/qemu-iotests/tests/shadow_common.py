# Helpers shared by the shadow driver's iotests
#
# Copyright (c) 2026 The shadowtier authors
#
# SPDX-License-Identifier: GPL-2.0-or-later

import json
import os
import time

import iotests
from iotests import qemu_img

MiB = 1024 * 1024


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


def set_bps_write(vm, group, bps):
    """Change a throttle group's write limit (0 lifts it)."""
    vm.cmd('qom-set', {'path': group, 'property': 'limits',
                       'value': {'bps-write': bps}})


def wait_synced(vm, child, node='sh0', timeout=120):
    """Wait for SHADOW_CHILD_SYNCED of @child unless it is synced already."""
    if child_stats(vm, child, node)['state'] == 'synced':
        return
    vm.event_wait('SHADOW_CHILD_SYNCED', timeout=timeout,
                  match={'data': {'node-name': node, 'child': child}})


def qemu_io_ok(test, vm, node, cmd):
    """Run a qemu-io command through HMP and fail the test on any error."""
    out = vm.hmp_qemu_io(node, cmd)['return']
    for bad in ('error', 'Error', 'fail', 'Pattern verification'):
        test.assertNotIn(bad, out, f'qemu-io {node} "{cmd}": {out}')
    return out


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
