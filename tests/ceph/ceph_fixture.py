#!/usr/bin/env python3
# A throwaway single-node Ceph cluster for the RBD tests and benchmarks
#
# Copyright (c) 2026 The shadowtier authors
#
# SPDX-License-Identifier: GPL-2.0-or-later
"""A throwaway Ceph cluster from Debian's ceph-mon, ceph-osd and ceph-common.

One monitor and one or more OSDs, bound to 127.0.0.1 on ports of their own,
with every file (configuration, keyrings, data, logs, sockets) under one
temporary directory; cephx on; no systemd, no mgr.  Each OSD stores its
objects with BlueStore in a sparse file, so that an OSD killed with SIGKILL
comes back with what it acknowledged (MemStore keeps objects in memory
only: a killed MemStore OSD comes back empty and its pools never recover).

Each pool lives on one OSD of its own (a CRUSH device class per pool), as
pools per device class do in production, so that a fault of one pool's OSD
leaves the other pools alone.  Pools have size 1 and are initialised with
`rbd pool init`; readiness is "every OSD up and every pool initialised"
(without a mgr, health never becomes HEALTH_OK).

An OSD stopped with SIGSTOP for more than about 8 s (half the read lease)
can leave placement groups "laggy" once it continues: a request that reaches
a placement group after its read lease ran out waits for a lease renewal,
and on Ceph 16 a placement group served by a single OSD can wait for ever
(Ceph tracker 80404).  `cont_osd()` waits for every placement group of the
pool to answer, and marks an OSD down whose pool does not within `LAGGY_S`:
the new interval renews the leases.  `recover()`, a test's clean-up, brings
back whatever a test stopped or killed.  `kicks` lists each time either had
to do more than continue or start an OSD.

Clients read the cluster's ceph.conf (`Cluster.conf`), whose [client]
section bounds what librados waits for: `rados_osd_op_timeout`,
`rados_mon_op_timeout` and `client_mount_timeout` (librados' defaults are 0,
0 and 300 s: wait for ever on a dead OSD).  Images are created with the
`layering` feature only: without exclusive-lock a new writer does not wait
for the lock of a killed one.

As a module:

    with Cluster(pools=('ssd', 'hdd')) as c:
        c.create_image('ssd', 'disk0', 64 << 20)
        c.rbd_opts('ssd', 'disk0')      # a BlockdevOptionsRbd
        c.stop_osd('ssd'); c.cont_osd('ssd'); c.kill_osd('ssd')
        c.restart_osd('ssd')

As a program:

    ceph_fixture.py run [--pools ssd,hdd] -- COMMAND...

starts a cluster, runs COMMAND with CEPH_CONF, CEPH_ARGS and SHADOW_CEPH_DIR
in its environment, then stops and purges the cluster.
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

BINARIES = ('ceph-mon', 'ceph-osd', 'ceph', 'rbd', 'rados', 'ceph-authtool',
            'monmaptool')

# Client-side timeouts (seconds) of the fixture; tests may pass others
DEFAULT_TIMEOUTS = {
    'rados_osd_op_timeout': 10,
    'rados_mon_op_timeout': 10,
    'client_mount_timeout': 10,
}


# Seconds a continued OSD has to serve every placement group of its pool
# before cont_osd() marks it down (a healthy one takes well under a second)
LAGGY_S = 15

PR_SET_PDEATHSIG = 1


def _daemon_preexec():
    """In a daemon's child process: a session of its own (so that its
    signals are its own), and SIGKILL when the process that started it
    dies, so that a test killed by a timeout leaves no cluster behind."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def missing_binaries():
    """The Ceph programs this fixture needs that are not installed."""
    return [b for b in BINARIES if shutil.which(b) is None]


def _free_ports(count):
    """@count distinct TCP ports on 127.0.0.1 that are free now."""
    socks, ports = [], []
    try:
        for _ in range(count):
            socks.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            socks[-1].bind(('127.0.0.1', 0))
            ports.append(socks[-1].getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _free_port_range(width):
    """A range of @width consecutive free ports, for an OSD's messengers."""
    for _ in range(100):
        base = _free_ports(1)[0]
        if base + width > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + width):
                socks.append(socket.socket(socket.AF_INET,
                                           socket.SOCK_STREAM))
                socks[-1].bind(('127.0.0.1', p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError('no range of free ports for the OSDs')


class CephError(Exception):
    pass


class CephTimeout(CephError):
    """What a wait was for did not happen in time."""


class Cluster:
    """A running throwaway cluster; stopped and purged by stop()."""

    def __init__(self, pools=('ssd', 'hdd'), timeouts=None, basedir=None,
                 osd_size=4 << 30, start_timeout=120):
        if missing_binaries():
            raise CephError('Ceph programs missing: ' +
                            ' '.join(missing_binaries()))
        self.pools = list(pools)
        self.timeouts = dict(DEFAULT_TIMEOUTS, **(timeouts or {}))
        self.osd_size = osd_size
        self.start_timeout = start_timeout
        self.dir = tempfile.mkdtemp(prefix='shadow-ceph-', dir=basedir)
        self.conf = os.path.join(self.dir, 'ceph.conf')
        self.keyring = os.path.join(self.dir, 'keyring')
        self.procs = {}         # daemon name -> Popen
        self.osd_of_pool = {}   # pool -> OSD id
        # Pools whose OSD a test stopped or killed, and which have not
        # served since: what recover() sees to
        self.faulted = set()
        # What the fixture did to have a pool serve again, beyond continuing
        # or starting its OSD (a test prints them: not on stderr, which an
        # iotest compares with its reference output)
        self.kicks = []
        self.startup_s = None
        self.fsid = str(uuid.uuid4())
        self.mon_port = _free_ports(1)[0]
        # Each OSD binds four messengers (public and cluster, v1 and v2)
        # in [ms_bind_port_min, ms_bind_port_max]; a private range for all
        width = 8 * max(1, len(self.pools)) + 8
        self.port_min = _free_port_range(width)
        self.port_max = self.port_min + width - 1
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- setup -------------------------------------------------------------

    def _write_conf(self, path, timeouts):
        """The cluster's conf at @path, its clients waiting @timeouts."""
        d = self.dir
        client = '\n'.join(f'{k} = {v}' for k, v in timeouts.items())
        with open(path, 'w', encoding='utf-8') as f:
            f.write(f"""[global]
fsid = {self.fsid}
mon_host = v2:127.0.0.1:{self.mon_port}
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
ms_bind_port_min = {self.port_min}
ms_bind_port_max = {self.port_max}
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
keyring = {self.keyring}
run_dir = {d}/run
admin_socket = {d}/run/$name.asok
pid_file = {d}/run/$name.pid
log_file = {d}/log/$name.log
log_to_stderr = false
err_to_stderr = true
log_to_file = true
mon_cluster_log_file = {d}/log/cluster.log
crash_dir = {d}/crash
exporter_sock_dir = {d}/run
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
rbd_default_features = layering
auth_allow_insecure_global_id_reclaim = false

[mon]
mon_data = {d}/mon/$id
mon_initial_members = a
# The monitor refuses to start, or shuts down, when the file system of its
# data has at most mon_data_avail_crit (5) % free: a throwaway cluster of a
# few MiB must not die of a host disk that others fill
mon_data_avail_warn = 0
mon_data_avail_crit = 0
# A map change is proposed within 0.1 s instead of 1 s: each step of the
# setup waits for one
paxos_propose_interval = 0.1
paxos_min_wait = 0.01

[osd]
osd_data = {d}/osd/$id
keyring = {d}/osd/$id/keyring
osd_objectstore = bluestore
bluestore_block_path = {d}/osd/$id.block
bluestore_block_create = true
bluestore_block_size = {self.osd_size}
bluestore_block_db_create = false
bluestore_block_wal_create = false
bluestore_fsck_on_mkfs = false
bluestore_cache_autotune = false
bluestore_cache_size = 67108864
osd_memory_target = 939524096
osd_memory_target_autotune = false
osd_crush_update_on_start = false
osd_class_update_on_start = false
osd_max_object_name_len = 460
# cont_osd() may mark an OSD down that was not: it must not count that
# towards shutting itself down (5 times in 10 minutes by default)
osd_max_markdown_count = 1000
osd_max_object_namespace_len = 64

[client]
{client}
""")

    def _run(self, *args, timeout=60, input=None):
        res = subprocess.run(args, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             timeout=timeout, input=input, check=False,
                             env=self.env())
        if res.returncode != 0:
            raise CephError(f'{" ".join(args)}: exit {res.returncode}: '
                            f'{res.stderr.strip()[-2000:]}')
        return res.stdout

    def ceph(self, *args, timeout=60):
        """The ceph CLI on this cluster, as client.admin."""
        return self._run('ceph', '--conf', self.conf,
                         '--connect-timeout', '20', *args, timeout=timeout)

    def rbd(self, *args, timeout=120):
        return self._run('rbd', '--conf', self.conf, *args, timeout=timeout)

    def env(self):
        env = dict(os.environ)
        env['CEPH_CONF'] = self.conf
        env.pop('CEPH_ARGS', None)
        return env

    def _spawn(self, name, args):
        log = open(os.path.join(self.dir, 'log', f'{name}.stderr'), 'ab')
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env=self.env(), preexec_fn=_daemon_preexec)
        log.close()

    def _start(self):
        t0 = time.monotonic()
        for sub in ('run', 'log', 'crash', 'mon/a'):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self._write_conf(self.conf, self.timeouts)
        self._run('ceph-authtool', '--create-keyring', self.keyring,
                  '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *')
        self._run('ceph-authtool', self.keyring, '--gen-key',
                  '-n', 'client.admin', '--cap', 'mon', 'allow *',
                  '--cap', 'osd', 'allow *', '--cap', 'mds', 'allow *',
                  '--cap', 'mgr', 'allow *')
        monmap = os.path.join(self.dir, 'monmap')
        self._run('monmaptool', '--create', '--fsid', self.fsid,
                  '--addv', 'a', f'[v2:127.0.0.1:{self.mon_port}]', monmap)
        self._run('ceph-mon', '--conf', self.conf, '-i', 'a', '--mkfs',
                  '--monmap', monmap, '--keyring', self.keyring)
        self._spawn('mon.a', ['ceph-mon', '--conf', self.conf, '-i', 'a',
                              '-f'])
        # The CLI gives up after client_mount_timeout (10 s) without
        # saying why: wait for the monitor here, which names a dead one
        self._wait(self._mon_answers, 'the monitor to answer')
        # One OSD per pool, each in a device class named after its pool;
        # their object stores are made in parallel
        mkfs = []
        for i, pool in enumerate(self.pools):
            self.osd_of_pool[pool] = i
            mkfs.append(self._mkfs_osd(i))
        for i, pool in enumerate(self.pools):
            self._add_osd(i, pool, mkfs[i])
        self._wait(lambda: self._osds_up() == len(self.pools),
                   'the OSDs to come up')
        for pool in self.pools:
            self.ceph('osd', 'crush', 'rule', 'create-replicated',
                      f'rule-{pool}', 'default', 'osd', pool)
            self.ceph('osd', 'pool', 'create', pool, '8', '8', 'replicated',
                      f'rule-{pool}')
            self.rbd('pool', 'init', pool)
        self.startup_s = time.monotonic() - t0

    def _mkfs_osd(self, i):
        osd_uuid = str(uuid.uuid4())
        osd_dir = os.path.join(self.dir, 'osd', str(i))
        os.makedirs(osd_dir)
        got = self.ceph('osd', 'new', osd_uuid).strip()
        if got != str(i):
            raise CephError(f'ceph osd new gave id {got}, expected {i}')
        args = ['ceph-osd', '--conf', self.conf, '-i', str(i), '--mkfs',
                '--mkkey', '--osd-uuid', osd_uuid, '--no-mon-config']
        return args, subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True,
                                      env=self.env())

    def _add_osd(self, i, pool, mkfs):
        args, proc = mkfs
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise CephError(f'{" ".join(args)}: timed out') from None
        if proc.returncode != 0:
            raise CephError(f'{" ".join(args)}: exit {proc.returncode}: '
                            f'{err.strip()[-2000:]}')
        osd_dir = os.path.join(self.dir, 'osd', str(i))
        self.ceph('auth', 'add', f'osd.{i}', 'osd', 'allow *',
                  'mon', 'allow profile osd',
                  '-i', os.path.join(osd_dir, 'keyring'))
        self.ceph('osd', 'crush', 'add', f'osd.{i}', '1', 'root=default')
        self.ceph('osd', 'crush', 'set-device-class', pool, f'osd.{i}')
        self._spawn(f'osd.{i}', ['ceph-osd', '--conf', self.conf,
                                 '-i', str(i), '-f'])

    def _mon_answers(self):
        try:
            self._run('ceph', '--conf', self.conf, '--connect-timeout', '2',
                      'mon', 'stat', timeout=10)
            return True
        except (CephError, subprocess.TimeoutExpired):
            return False

    def _osds_up(self, which=None):
        dump = json.loads(self.ceph('osd', 'dump', '--format=json',
                                    timeout=20))
        return sum(1 for o in dump['osds'] if o['up'] and
                   (which is None or o['osd'] == which))

    def _log_tail(self, name, lines=20):
        """The end of a daemon's logs (the directory goes on stop)."""
        out = []
        for suffix in ('stderr', 'log'):
            path = os.path.join(self.dir, 'log', f'{name}.{suffix}')
            try:
                with open(path, encoding='utf-8', errors='replace') as f:
                    out += f.readlines()[-lines:]
            except OSError:
                pass
        return ''.join(out)

    def _wait(self, pred, what, timeout=None):
        end = time.monotonic() + (timeout or self.start_timeout)
        while time.monotonic() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise CephError(f'{name} exited with {p.returncode} '
                                    f'waiting for {what} '
                                    f'({self._disk_free()}):\n' +
                                    self._log_tail(name))
            if pred():
                return
            time.sleep(0.2)
        raise CephTimeout(f'timed out waiting for {what} '
                          f'({self._disk_free()}):\n' +
                          ''.join(self._log_tail(n) for n in self.procs))

    def _disk_free(self):
        st = os.statvfs(self.dir)
        return (f'{st.f_bavail * st.f_frsize >> 20} MiB free of '
                f'{st.f_blocks * st.f_frsize >> 20} MiB in {self.dir}')

    # -- use ---------------------------------------------------------------

    def create_image(self, pool, image, size):
        self.rbd('create', '--size', f'{size // 1024}K',
                 '--image-feature', 'layering', f'{pool}/{image}')

    def remove_image(self, pool, image):
        self.rbd('rm', '--no-progress', f'{pool}/{image}')

    def conf_with_timeouts(self, timeout):
        """The path of a copy of the cluster's conf whose clients wait
        @timeout seconds for the monitor and the OSDs; None: the conf's
        own timeouts."""
        if timeout is None:
            return self.conf
        path = os.path.join(self.dir, f'ceph-timeout-{timeout}.conf')
        if not os.path.exists(path):
            self._write_conf(path, dict.fromkeys(DEFAULT_TIMEOUTS, timeout))
        return path

    def rbd_opts(self, pool, image, node_name=None, direct=True,
                 timeout=None):
        """BlockdevOptions of an rbd node on @pool/@image; direct: no
        librbd cache, so that errors come with the request that failed and
        a completed write is on the OSD; timeout: seconds librados waits,
        in place of the conf's (conf_with_timeouts())."""
        conf = self.conf_with_timeouts(timeout)
        opts = {'driver': 'rbd', 'pool': pool, 'image': image,
                'conf': conf, 'user': 'admin'}
        if node_name:
            opts['node-name'] = node_name
        if direct:
            opts['cache'] = {'direct': True}
        return opts

    def rbd_filename(self, pool, image, timeout=None):
        """A legacy filename of the image, for qemu-img and qemu-io.
        timeout: seconds librados waits for the monitor and the OSD, in
        place of the conf's (a test's set-up and checks need not fail
        fast: a busy machine is not a fault)."""
        conf = self.conf_with_timeouts(timeout)
        return f'rbd:{pool}/{image}:conf={conf}:id=admin'

    def osd_proc(self, pool):
        return self.procs[f'osd.{self.osd_of_pool[pool]}']

    def stop_osd(self, pool):
        """SIGSTOP the OSD of @pool: it stops answering, sockets stay open."""
        self.faulted.add(pool)
        self.osd_proc(pool).send_signal(signal.SIGSTOP)

    def cont_osd(self, pool, timeout=60):
        """SIGCONT the OSD of @pool and wait until every placement group of
        the pool serves again.  One that does not within LAGGY_S is laggy
        (see the module's doc): the OSD is marked down, and boots again
        into a new interval."""
        i = self.osd_of_pool[pool]
        end = time.monotonic() + timeout
        self.osd_proc(pool).send_signal(signal.SIGCONT)
        try:
            self._wait_serving(pool, min(LAGGY_S, timeout))
        except CephTimeout:
            if timeout <= LAGGY_S:
                raise
            self.ceph('osd', 'down', str(i))
            self.kicks.append(f'pool {pool} not served {LAGGY_S} s after '
                              f'osd.{i} continued: marked down')
            self._wait_serving(pool, max(1, end - time.monotonic()))

    def _wait_serving(self, pool, timeout):
        """Wait until the OSD of @pool is up and every placement group of
        the pool answers; the pool is no longer faulted then."""
        i = self.osd_of_pool[pool]

        def serving():
            try:
                return self._osds_up(i) == 1 and self._pool_answers(pool)
            except (CephError, subprocess.TimeoutExpired):
                # The monitor did not answer in time either: not yet
                return False

        self._wait(serving, f'osd.{i} to serve pool {pool} again', timeout)
        self.faulted.discard(pool)

    def _pool_answers(self, pool):
        """Whether every placement group of @pool answers within 5 s: a
        listing of the pool asks each of them."""
        try:
            res = subprocess.run(
                ['rados', '--conf', self.conf, '--rados-osd-op-timeout', '5',
                 '-p', pool, 'ls'],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=20, check=False, env=self.env())
        except subprocess.TimeoutExpired:
            return False
        return res.returncode == 0

    def recover(self, timeout=60):
        """Have every pool serve again after a test: start dead OSDs
        again, continue stopped ones (and wait for those that did not
        serve once started), and kill and start again one that still does
        not serve.  A test's clean-up: the fault of one case is not the
        next one's."""
        # Dead ones first: a wait fails at once while any daemon is dead
        for pool in self.pools:
            if self.osd_proc(pool).poll() is not None:
                self.restart_osd(pool, timeout)
        for pool in sorted(self.faulted):
            try:
                self.cont_osd(pool, timeout)
                continue
            except (CephError, subprocess.TimeoutExpired) as e:
                self.kicks.append(f'osd.{self.osd_of_pool[pool]} '
                                  f'restarted: {str(e).splitlines()[0]}')
            self.kill_osd(pool)
            self.restart_osd(pool, timeout)

    def kill_osd(self, pool):
        """SIGKILL the OSD of @pool; restart_osd() brings it back."""
        p = self.osd_proc(pool)
        p.send_signal(signal.SIGCONT)
        self.faulted.add(pool)
        p.kill()
        p.wait()

    def restart_osd(self, pool, timeout=60):
        """Start the killed OSD of @pool again and wait until it serves
        the pool (up in the map is not enough: its placement groups peer
        after that, and requests wait until they have)."""
        i = self.osd_of_pool[pool]
        if self.procs[f'osd.{i}'].poll() is None:
            raise CephError(f'osd.{i} is still running')
        # The monitor has not seen it die (no peer reports its death):
        # mark it down so that the restarted OSD is seen booting
        self.ceph('osd', 'down', str(i))
        self._spawn(f'osd.{i}', ['ceph-osd', '--conf', self.conf,
                                 '-i', str(i), '-f'])
        self._wait_serving(pool, timeout)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        self.procs.clear()
        if self.dir and os.path.isdir(self.dir):
            if os.environ.get('SHADOW_CEPH_KEEP'):
                sys.stderr.write(f'ceph fixture kept in {self.dir}\n')
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    run = sub.add_parser('run', help='run COMMAND in a throwaway cluster')
    run.add_argument('--pools', default='ssd,hdd')
    run.add_argument('command', nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ['--'] else args.command
    if not cmd:
        ap.error('run needs a COMMAND')
    try:
        cluster = Cluster(pools=args.pools.split(','))
    except (CephError, OSError, subprocess.SubprocessError) as e:
        # "FAIL:" is what make check shows of a failed test's log
        sys.stderr.write(f'FAIL: ceph fixture: the cluster did not start: '
                         f'{e}\n')
        return 1

    def bye(signum, _frame):
        cluster.stop()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)
    try:
        sys.stderr.write(f'ceph fixture: up in {cluster.startup_s:.1f} s '
                         f'in {cluster.dir}\n')
        env = cluster.env()
        env['SHADOW_CEPH_DIR'] = cluster.dir
        env['SHADOW_CEPH_STARTUP_S'] = f'{cluster.startup_s:.2f}'
        env['SHADOW_CEPH_OSD_PIDS'] = ','.join(
            f'{pool}:{cluster.osd_proc(pool).pid}' for pool in cluster.pools)
        return subprocess.run(cmd, env=env, check=False).returncode
    finally:
        cluster.stop()


if __name__ == '__main__':
    sys.exit(main())
