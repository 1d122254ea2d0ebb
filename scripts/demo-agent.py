#!/usr/bin/env python3
"""make demo: shadowd moving a disk to the fast tier ahead of its daily spike.

A qemu-storage-daemon holds a shadow node over a cheap tier (throttled to
150 IOPS) and exports it over NBD; the fast tier (5000 IOPS) is not even in
the node yet.  fio replays three days of a real production disk's load
(cp_w31 from ../shared/data/traces, one 30-minute window per second; a
generated daily pattern with a spike when the trace is absent).  shadowd
watches the node over QMP, forecasts, adds and pre-warms the fast tier,
switches before the spike and back after it.  The terminal shows a live
view; at the end build/demo/ holds a plot (shadowtier-demo.png) and a
summary (summary.txt).
"""

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU = os.path.join(REPO, 'build', 'qemu')
QEMU_IMG = os.path.join(QEMU, 'qemu-img')
QEMU_IO = os.path.join(QEMU, 'qemu-io')
QSD = os.path.join(QEMU, 'storage-daemon', 'qemu-storage-daemon')
SHADOWD = os.path.join(REPO, 'build', 'agent', 'shadowd')
SHADOWCTL = os.path.join(REPO, 'build', 'agent', 'shadowctl')
TRACE = os.path.join(REPO, '..', 'shared', 'data', 'traces',
                     'cp_w31_30min_features.csv')
WORK = os.path.join(REPO, 'build', 'demo')
MiB = 1024 * 1024
SIZE = 256 * MiB
DAYS = 3
ROWS_PER_DAY = 48
PEAK_IOPS = 600
CHEAP_IOPS, FAST_IOPS = 150, 5000
COST = {'cheap': 0.02, 'fast': 0.12}


def say(msg=''):
    print(msg, flush=True)


def step(msg):
    say()
    say(f'\033[1m>> {msg}\033[0m' if sys.stdout.isatty() else f'>> {msg}')


def run(*args):
    res = subprocess.run(args, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True)
    if res.returncode != 0:
        raise SystemExit(f'demo: {" ".join(args)} failed:\n{res.stdout}')
    return res.stdout


def load_profile():
    """IOPS per second of the replay, and where it came from."""
    if os.path.exists(TRACE):
        with open(TRACE, encoding='utf-8') as f:
            v = [float(r['block_req_count']) / 1800 for r in csv.DictReader(f)]
        v = v[:DAYS * ROWS_PER_DAY]
        top = max(v)
        return [max(1, round(x * PEAK_IOPS / top)) for x in v], \
            'cp_w31 production trace, one 30-minute window per second'
    prof = []
    for i in range(DAYS * ROWS_PER_DAY):
        h = i % ROWS_PER_DAY
        base = 20 + 15 * math.sin(2 * math.pi * h / ROWS_PER_DAY)
        spike = PEAK_IOPS if 19 <= h <= 22 else 0
        prof.append(round(base + spike))
    return prof, 'generated daily pattern with a spike (trace not present)'


def start_fio(uri, iops, second):
    """One second of load: its own fio process, started on schedule, so
    that start-up costs do not accumulate into lag."""
    return subprocess.Popen(
        ['fio', f'--name=s{second}', '--ioengine=nbd', f'--uri={uri}',
         '--rw=randread', '--bs=4k', f'--size={SIZE}', '--time_based=1',
         '--runtime=1', '--iodepth=16', f'--rate_iops={iops}',
         '--output-format=terse'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ctl(*args):
    out = run(SHADOWCTL, '--control', os.path.join(WORK, 'control.sock'),
              *args)
    return json.loads(out)


def write_config(path, qmp_sock):
    with open(path, 'w', encoding='utf-8') as f:
        f.write(f'''[shadowd]
interval = 1
control = {WORK}/control.sock
state = {WORK}/history.db
metrics-port = 0
period = {ROWS_PER_DAY}
horizon = 20
min-dwell = 10
switch-back-after = 12

[tier:cheap]
cost-gib-month = {COST['cheap']}

[tier:fast]
cost-gib-month = {COST['fast']}

[disk:demo]
qmp = {qmp_sock}
node = sh0
tier.cheap = cheap
tier.fast = fast
slo-latency-ms = 20
''')


def live_line(t, st, offered):
    if not st.get('samples'):
        say(f'{t:5.0f}s waiting for the first sample')
        return
    d = st.get('last-decision') or {}
    load = st.get('load') or {}
    fc = st.get('forecast') or {}
    fast = [x for x in st['tiers'] if x['name'] == 'fast'][0]
    warm = 100 * (fast.get('valid-bytes') or 0) / SIZE
    lat = load.get('latency-ms')
    upper = fc.get('horizon-upper')
    say(f'{t:5.0f}s offered {offered:4d} IOPS | measured '
        f'{load.get("iops") or 0:6.0f} IOPS '
        f'{"   -  " if lat is None else f"{lat:6.1f}"} ms | forecast '
        f'{"-" if upper is None else f"{upper:6.0f}"} ({fc.get("model")}) '
        f'| on {st.get("active-tier") or "-":5} | fast '
        f'{fast.get("state") or "absent":8} {warm:5.1f}% | '
        f'{d.get("kind", "-")}')


def plot(samples, decisions, t0, path):
    data = os.path.join(WORK, 'samples.dat')
    with open(data, 'w', encoding='utf-8') as f:
        for s in samples:
            lat = s['latency-ms']
            f.write(f'{s["time"] - t0:.1f} {s["iops"]:.1f} '
                    f'{s["forecast-upper"]:.1f} '
                    f'{"NaN" if lat is None else f"{lat:.2f}"} '
                    f'{1 if s["tier"] == "fast" else 0}\n')
    marks = ''
    for d in decisions:
        if d['kind'] in ('switch-up', 'switch-back', 'prewarm'):
            x = d['time'] - t0
            color = {'prewarm': '#999999', 'switch-up': '#c00000',
                     'switch-back': '#0060c0'}[d['kind']]
            marks += (f'set arrow from {x:.1f}, graph 0 to {x:.1f}, graph 1 '
                      f'nohead lc rgb "{color}" dt 2\n'
                      f'set label "{d["kind"]}" at {x:.1f}, graph 0.97 '
                      f'rotate by 90 right font ",8" tc rgb "{color}"\n')
    script = f'''set terminal pngcairo size 1400,700 font ",10"
set output "{path}"
set title "shadowd: load, forecast, latency and the active tier"
set xlabel "seconds (one second = 30 minutes of the production trace)"
set ylabel "IOPS"
set y2label "latency (ms)"
set y2tics
set ytics nomirror
set key top left
set style fill transparent solid 0.15 noborder
{marks}
plot "{data}" using 1:($5 * {PEAK_IOPS * 1.2}) with filledcurves y1=0 \\
        lc rgb "#c00000" title "on the fast tier", \\
     "" using 1:2 with lines lw 2 lc rgb "#202020" title "load (IOPS)", \\
     "" using 1:3 with lines dt 3 lc rgb "#008000" title "forecast upper bound", \\
     "" using 1:4 axes x1y2 with lines lc rgb "#c07000" title "latency (ms)"
'''
    gp = os.path.join(WORK, 'plot.gp')
    with open(gp, 'w', encoding='utf-8') as f:
        f.write(script)
    run('gnuplot', gp)


def summarize(samples, decisions, t0, profile):
    lines = []

    def first(kind):
        for d in decisions:
            if d['kind'] == kind:
                return d
        return None

    # The last day's spike: the second the offered load first tops the
    # cheap tier's capacity on day 3
    day3 = (DAYS - 1) * ROWS_PER_DAY
    spike_at = next((i for i in range(day3, len(profile))
                     if profile[i] > CHEAP_IOPS), None)
    ups = [d for d in decisions if d['kind'] == 'switch-up']
    backs = [d for d in decisions if d['kind'] == 'switch-back']
    pre = [d for d in decisions if d['kind'] == 'prewarm']
    lines.append(f'load: {len(profile)} s replayed, peak {max(profile)} IOPS; '
                 f'cheap tier carries {CHEAP_IOPS} IOPS, fast {FAST_IOPS}')
    for d in pre[:1]:
        lines.append(f'pre-warm of the fast tier started at '
                     f'{d["time"] - t0:.0f} s: {d["reason"]}')
    for d in ups:
        lines.append(f'switch to fast at {d["time"] - t0:.0f} s '
                     f'(trigger {d["trigger"]}): {d["reason"]}')
    for d in backs:
        lines.append(f'switch back at {d["time"] - t0:.0f} s: {d["reason"]}')
    if spike_at is not None:
        # The switch that serves the last day's spike: the last one up
        # before the spike ends
        serving = [d for d in ups if d['time'] - t0 < spike_at + 4]
        when = (f'{serving[-1]["time"] - t0 - spike_at:+.0f} s from its start'
                if serving else 'never')
        lines.append(f'day-3 spike starts at {spike_at} s (offered load above '
                     f'{CHEAP_IOPS} IOPS, the cheap tier\'s capacity); the '
                     f'switch to fast came {when}')
    lat_cheap = [s['latency-ms'] for s in samples
                 if s['tier'] == 'cheap' and s['latency-ms'] is not None
                 and s['iops'] > CHEAP_IOPS * 0.8]
    lat_fast = [s['latency-ms'] for s in samples
                if s['tier'] == 'fast' and s['latency-ms'] is not None
                and s['iops'] > CHEAP_IOPS * 0.8]
    if lat_cheap:
        lines.append(f'latency under high load on cheap: mean '
                     f'{sum(lat_cheap) / len(lat_cheap):.1f} ms '
                     f'({len(lat_cheap)} s)')
    if lat_fast:
        lines.append(f'latency under high load on fast:  mean '
                     f'{sum(lat_fast) / len(lat_fast):.1f} ms '
                     f'({len(lat_fast)} s)')
    on_fast = sum(1 for s in samples if s['tier'] == 'fast')
    n = len(samples)
    cost = (on_fast * COST['fast'] + (n - on_fast) * COST['cheap']) / n
    lines.append(f'time on fast: {on_fast} of {n} s; cost per GiB-month: '
                 f'{cost:.4f} vs always-fast {COST["fast"]:.4f} '
                 f'({100 * cost / COST["fast"]:.0f}%) and always-cheap '
                 f'{COST["cheap"]:.4f}')
    return lines


def main():
    for tool in (QSD, SHADOWD, SHADOWCTL):
        if not os.path.exists(tool):
            raise SystemExit(f'demo: {tool} is missing; run make first')
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    cheap = os.path.join(WORK, 'cheap.raw')
    fast = os.path.join(WORK, 'fast.raw')
    qmp_sock = os.path.join(WORK, 'qmp.sock')
    nbd_sock = os.path.join(WORK, 'nbd.sock')
    profile, origin = load_profile()

    step('A disk on a cheap tier; a fast tier available but unused')
    run(QEMU_IMG, 'create', '-f', 'raw', cheap, str(SIZE))
    run(QEMU_IMG, 'create', '-f', 'raw', fast, str(SIZE))
    run(QEMU_IO, '-f', 'raw', '-c', f'write -P 0x5a 0 {SIZE // 2}', cheap)
    say(f'     cheap: {CHEAP_IOPS} IOPS, {COST["cheap"]}/GiB-month; '
        f'fast: {FAST_IOPS} IOPS, {COST["fast"]}/GiB-month '
        f'(QEMU throttle groups over files)')
    procs = []
    try:
        qsd = subprocess.Popen([
            QSD, '--chardev',
            f'socket,id=mon,path={qmp_sock},server=on,wait=off',
            '--monitor', 'mon',
            '--object', f'throttle-group,id=tcheap,x-iops-total={CHEAP_IOPS}',
            '--object', f'throttle-group,id=tfast,x-iops-total={FAST_IOPS}',
            '--blockdev', f'file,node-name=cheap-file,filename={cheap}',
            '--blockdev', 'throttle,node-name=cheap,throttle-group=tcheap,'
                          'file=cheap-file',
            '--blockdev', f'file,node-name=fast-file,filename={fast}',
            '--blockdev', 'throttle,node-name=fast,throttle-group=tfast,'
                          'file=fast-file',
            '--blockdev', '{"driver":"shadow","node-name":"sh0",'
                          '"children":["cheap"]}',
            '--nbd-server', f'addr.type=unix,addr.path={nbd_sock}',
            '--export', 'nbd,id=exp0,node-name=sh0,writable=on'],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(qsd)
        while not os.path.exists(nbd_sock):
            time.sleep(0.05)
        say('     qemu-storage-daemon: shadow node sh0 = [cheap], exported '
            'over NBD')

        step('shadowd watches the node over QMP')
        conf = os.path.join(WORK, 'shadowd.conf')
        write_config(conf, qmp_sock)
        log = open(os.path.join(WORK, 'shadowd.log'), 'w', encoding='utf-8')
        procs.append(subprocess.Popen([SHADOWD, '--config', conf],
                                      stdout=log, stderr=subprocess.STDOUT))
        while not os.path.exists(os.path.join(WORK, 'control.sock')):
            time.sleep(0.05)
        say(f'     config: {conf}; log: {WORK}/shadowd.log')

        step(f'fio replays {DAYS} days of load ({origin}); peak '
             f'{max(profile)} IOPS')
        uri = f'nbd+unix:///sh0?socket={nbd_sock}'
        t0 = time.time()
        for second, iops in enumerate(profile):
            procs.append(start_fio(uri, iops, second))
            live_line(time.time() - t0, ctl('status', '--json')[0], iops)
            time.sleep(max(0.0, t0 + second + 1 - time.time()))
        for p in procs[2:]:
            p.wait()

        step('Load gone: shadowd moves the disk back to the cheap tier')
        deadline = time.time() + 40
        while time.time() < deadline:
            st = ctl('status', '--json')[0]
            live_line(time.time() - t0, st, 0)
            if st['active-tier'] == 'cheap':
                break
            time.sleep(1)

        samples = ctl('history', '--since', '1h', '--resolution', 'full',
                      '--json')
        decisions = ctl('history', '--since', '1h', '--decisions', '--json')
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait()

    step('Every byte is where it should be')
    say('     ' + run(QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw',
                       cheap, fast).strip())

    png = os.path.join(WORK, 'shadowtier-demo.png')
    plot(samples, decisions, t0, png)
    lines = summarize(samples, decisions, t0, profile)
    with open(os.path.join(WORK, 'summary.txt'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    step('Summary')
    for line in lines:
        say('     ' + line)
    say(f'\n     plot: {png}\n     summary: {WORK}/summary.txt')
    say('\ndemo: done')


if __name__ == '__main__':
    main()
