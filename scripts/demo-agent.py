#!/usr/bin/env python3
"""make demo: shadowd warms the fast tier before the daily spike, switches
to it ahead of the load, and gives it back after.

A qemu-storage-daemon holds a shadow node over a cheap tier (throttled to
150 IOPS) and exports it over NBD; the fast tier (5000 IOPS) is not in the
node.  The clock is compressed by configuration only: one second is 30
minutes of the trace, so shadowd's day is 48 s (seasons = 48, bucket = 1).
Two past days of a real production disk's load (cp_w31 from
../shared/data/traces; a generated daily pattern when the trace is absent)
are imported with shadowctl import, as a restarted shadowd finds them in
its history; then the next three days are replayed over NBD, each second's
reads issued on schedule (a small NBD client, so that the load arrives
when the trace says).  Each day shadowd adds and warms the fast tier
before the spike, switches before the load crosses the cheap tier's
capacity, and releases the fast copy after it (child removed, its image's
blocks given back).

At the end build/demo/ holds a plot (shadowtier-demo.png: load, forecast,
latency and the active tier; the bytes each tier's image holds), and a
summary (summary.txt): each day's spike with its pre-warm, switch and lead
time, the releases, the honest cost (every tier's allocation, measured),
and shadowctl simulate on the same trace: shadowtier against reactive,
always-cheap, always-fast and the oracle.
"""

import csv
import json
import math
import os
import random
import select
import shutil
import subprocess
import sys
import threading
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
PAST_DAYS, DAYS = 2, 3
ROWS_PER_DAY = 48
PEAK_IOPS = 600
CHEAP_IOPS, FAST_IOPS = 150, 5000
COST = {'cheap': 0.02, 'fast': 0.12}

# The demo's tier model and its time compression: nothing else differs
# from a real shadowd.conf.
TIERS = f'''[tier:cheap]
cost-gib-month = {COST['cheap']}
max-iops = 120
latency-ms = 2

[tier:fast]
cost-gib-month = {COST['fast']}
copy-mib-s = 64
'''
KNOBS = f'''seasons = {ROWS_PER_DAY}
bucket = 1
lookahead = 20
prewarm-margin = 2
switch-lead = 2
release-after = 6
min-dwell = 3
switch-back-after = 2
max-switches-per-hour = 100
horizon = 10
release = discard
'''


def say(msg=''):
    print(msg, flush=True)


def step(msg):
    say()
    say(f'\033[1m>> {msg}\033[0m' if sys.stdout.isatty() else f'>> {msg}')


def run(*args):
    # stderr apart: JSON on stdout stays parseable with G_MESSAGES_DEBUG set
    res = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    if res.returncode != 0:
        raise SystemExit(f'demo: {" ".join(args)} failed:\n{res.stdout}{res.stderr}')
    return res.stdout


def load_profile():
    """IOPS per second for the past days and the replay, and its origin."""
    rows = (PAST_DAYS + DAYS) * ROWS_PER_DAY
    if os.path.exists(TRACE):
        with open(TRACE, encoding='utf-8') as f:
            v = [float(r['block_req_count']) / 1800 for r in csv.DictReader(f)]
        top = max(v)
        v = v[:rows]
        return [max(1, round(x * PEAK_IOPS / top)) for x in v], \
            'cp_w31 production trace, one 30-minute window per second'
    prof = []
    for i in range(rows):
        h = i % ROWS_PER_DAY
        base = 20 + 15 * math.sin(2 * math.pi * h / ROWS_PER_DAY)
        spike = PEAK_IOPS if 19 <= h <= 22 else 0
        prof.append(round(base + spike))
    return prof, 'generated daily pattern with a spike (trace not present)'


sys.path.insert(0, os.path.join(REPO, 'bench'))
from nbdclient import CMD_READ, NBDClient  # noqa: E402


class Replayer(threading.Thread):
    """The replay's reads: for second r, profile[r] random 4 KiB reads
    spread over that second, up to 16 in flight (a saturated tier queues
    them); what a second could not issue is dropped at its end, as a
    rate-limited fio does.  Issued on the wall clock from t0."""

    def __init__(self, nbd_sock, profile, t0):
        super().__init__(daemon=True)
        self.nbd = NBDClient(nbd_sock, 'sh0')
        self.profile = profile
        self.t0 = t0
        self.rand = random.Random(7)
        self.error = None

    def run(self):
        try:
            self.replay()
        except Exception as e:     # reported by the main thread
            self.error = e

    def replay(self):
        blocks = SIZE // 4096
        inflight = 0
        for r, iops in enumerate(self.profile):
            start, end = self.t0 + r, self.t0 + r + 1
            for k in range(iops):
                due = start + k / iops
                while True:
                    now = time.time()
                    if now >= end:
                        break
                    wait = 0 if inflight >= 16 else max(0.0, due - now)
                    if inflight and select.select([self.nbd.sock], [], [],
                                                  wait if inflight < 16 else end - now)[0]:
                        self.nbd.reply()
                        inflight -= 1
                        continue
                    if inflight < 16 and time.time() >= due:
                        break
                    if not inflight:
                        time.sleep(wait)
                if time.time() >= end:
                    break
                self.nbd.submit(CMD_READ, self.rand.randrange(blocks) * 4096, 4096)
                inflight += 1
            # the rest of the second: collect replies
            while time.time() < end:
                if inflight and select.select([self.nbd.sock], [], [],
                                              end - time.time())[0]:
                    self.nbd.reply()
                    inflight -= 1
                elif not inflight:
                    time.sleep(max(0.0, end - time.time()))
        while inflight:
            self.nbd.reply()
            inflight -= 1
        self.nbd.close()


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
{KNOBS}
{TIERS}
[disk:demo]
qmp = {qmp_sock}
node = sh0
tier.cheap = cheap
tier.fast = fast
slo-latency-ms = 20
size-gib = {SIZE / (1024 * MiB)}
''')


def write_sim_config(path, copy_mib_s):
    """The same tiers and knobs for shadowctl simulate, with what its
    world model needs besides: each tier's capacity within the SLO, its
    light-load latency and its copy rate (the one measured in this run)."""
    with open(path, 'w', encoding='utf-8') as f:
        f.write(f'''[shadowd]
control =
state =
metrics-port = 0
{KNOBS}
[tier:cheap]
cost-gib-month = {COST['cheap']}
max-iops = {CHEAP_IOPS}
latency-ms = 2
copy-mib-s = {copy_mib_s:.0f}

[tier:fast]
cost-gib-month = {COST['fast']}
max-iops = {FAST_IOPS}
latency-ms = 0.5
copy-mib-s = {copy_mib_s:.0f}

[disk:demo]
qmp = /nonexistent/qmp.sock
node = sh0
tier.cheap = cheap
tier.fast = fast
slo-latency-ms = 20
size-gib = {SIZE / (1024 * MiB)}
''')


def tier(st, name):
    return [x for x in st['tiers'] if x['name'] == name][0]


def live_line(t, st, offered):
    if not st.get('samples'):
        say(f'{t:5.0f}s waiting for the first sample')
        return
    d = st.get('last-decision') or {}
    load = st.get('load') or {}
    fc = st.get('forecast') or {}
    fast = tier(st, 'fast')
    alloc = fast.get('allocated-bytes')
    lat = load.get('latency-ms')
    onset = (fc.get('seasonal') or {}).get('onset-s')
    say(f'{t:5.0f}s offered {offered:4d} IOPS | measured '
        f'{load.get("iops") or 0:5.0f} IOPS '
        f'{"   -  " if lat is None else f"{lat:6.1f}"} ms | onset '
        f'{"  -  " if onset is None else f"{onset:4.0f}s"} | on '
        f'{st.get("active-tier") or "-":5} | fast {fast.get("phase"):8} '
        f'{"-" if alloc is None else f"{alloc / MiB:5.0f}"} MiB | '
        f'{d.get("kind", "-")}')


def plot(samples, decisions, tiers, t0, days_at, path):
    data = os.path.join(WORK, 'samples.dat')
    with open(data, 'w', encoding='utf-8') as f:
        for s in samples:
            lat = s['latency-ms']
            up = s['forecast-upper']
            f.write(f'{s["time"] - t0:.1f} {s["iops"]:.1f} '
                    f'{"NaN" if up is None else f"{up:.1f}"} '
                    f'{"NaN" if lat is None else f"{lat:.2f}"} '
                    f'{1 if s["tier"] == "fast" else 0}\n')
    alloc = {}
    for name in ('cheap', 'fast'):
        alloc[name] = os.path.join(WORK, f'alloc-{name}.dat')
        with open(alloc[name], 'w', encoding='utf-8') as f:
            for s in tiers:
                a = s['allocated-bytes']
                if s['tier'] == name and a is not None:
                    f.write(f'{s["time"] - t0:.1f} {a / MiB:.1f}\n')
    marks = ''
    colors = {'prewarm': '#999999', 'switch-up': '#c00000',
              'switch-back': '#0060c0', 'release': '#008000'}
    for d in decisions:
        if d['kind'] in colors and d.get('to') in ('fast', None) or d['kind'] == 'switch-back':
            x = d['time'] - t0
            color = colors.get(d['kind'])
            if color is None or x < 0:
                continue
            marks += (f'set arrow from {x:.1f}, graph 0 to {x:.1f}, graph 1 '
                      f'nohead lc rgb "{color}" dt 2\n')
    for i, x in enumerate(days_at):
        marks += f'set label "day {i + 1}" at {x:.1f}, graph 1.03 font ",9"\n'
    script = f'''set terminal pngcairo size 1400,900 font ",10"
set output "{path}"
set multiplot layout 2,1
set title "shadowd: load, forecast upper bound, latency, the active tier (pre-warm grey, switch up red, back blue, release green)"
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
     "" using 1:4 axes x1y2 with lines lc rgb "#c07000" title "latency (ms)", \\
     {CHEAP_IOPS} with lines dt 2 lc rgb "#606060" title "cheap tier's capacity"
unset arrow
unset label
unset y2tics
unset y2label
set title "bytes each tier's image holds (measured by shadowd from QEMU: every copy is paid for)"
set ylabel "MiB allocated"
set yrange [0:{SIZE / MiB * 1.15:.0f}]
plot "{alloc['cheap']}" using 1:2 with steps lw 2 lc rgb "#0060c0" title "cheap", \\
     "{alloc['fast']}" using 1:2 with steps lw 2 lc rgb "#c00000" title "fast"
unset multiplot
'''
    gp = os.path.join(WORK, 'plot.gp')
    with open(gp, 'w', encoding='utf-8') as f:
        f.write(script)
    run('gnuplot', gp)


def spikes_of(profile, t0):
    """Per replayed day: the second its offered load first tops the cheap
    tier's capacity (its onset), as wall-clock time."""
    out = []
    for day in range(DAYS):
        lo = day * ROWS_PER_DAY
        at = next((i for i in range(lo, lo + ROWS_PER_DAY)
                   if profile[i] > CHEAP_IOPS), None)
        out.append(None if at is None else t0 + at)
    return out


def summarize(decisions, final, onsets, t0, sim):
    lines = []
    fast_d = [d for d in decisions if d.get('to') == 'fast' or d['kind'] == 'switch-back']
    lines.append(f'replay: {DAYS} days of {ROWS_PER_DAY} s (one second = 30 minutes), '
                 f'after {PAST_DAYS} past days imported; cheap carries {CHEAP_IOPS} IOPS, '
                 f'fast {FAST_IOPS}')
    for day, onset in enumerate(onsets):
        if onset is None:
            lines.append(f'day {day + 1}: no load over the cheap tier')
            continue
        lo, hi = onset - 30, onset + ROWS_PER_DAY - 25
        pre = [d for d in fast_d if d['kind'] == 'prewarm' and lo <= d['time'] <= onset]
        ready = [d for d in fast_d if d['kind'] == 'ready' and lo <= d['time'] <= hi]
        ups = [d for d in fast_d if d['kind'] == 'switch-up' and lo <= d['time'] <= hi]
        rel = [d for d in decisions if d['kind'] == 'release' and d.get('to') == 'fast'
               and onset < d['time'] <= hi]
        up = ups[0] if ups else None
        lead = f'{onset - up["time"]:+.1f} s' if up else 'no switch'
        lines.append(
            f'day {day + 1}: load over {CHEAP_IOPS} IOPS at {onset - t0:.0f} s; '
            f'pre-warm from {pre[0]["time"] - t0:.1f} s' if pre else
            f'day {day + 1}: load over {CHEAP_IOPS} IOPS at {onset - t0:.0f} s; no pre-warm ahead')
        lines[-1] += (f', ready at {ready[0]["time"] - t0:.1f} s' if ready else '') + \
            (f'; switch to fast at {up["time"] - t0:.1f} s (trigger {up.get("trigger")}), '
             f'lead {lead}' if up else '; no switch') + \
            (f'; fast released at {rel[0]["time"] - t0:.1f} s' if rel else '; fast not released')
    st = final
    lines.append('honest cost, measured (every tier\'s image, all the time):')
    for name in ('cheap', 'fast'):
        t = tier(st, name)
        lines.append(f'  {name:5}: {t["gib-hours"]:.5f} GiB-hours, cost {t["cost"]:.7f}; '
                     f'warmed {t["warms"]}, released {t["releases"]} times')
    c = st['cost']
    lines.append(f'  total {c["total"]:.7f} over {c["accounted-s"]:.0f} s; '
                 f'{c["violation-s"]:.0f} s over the SLO')
    if sim:
        lines.append('shadowctl simulate on the same trace and tier model '
                     '(the past days as history):')
        lines.append(f'  {"policy":13} {"violation-s":>11} {"cost":>10} {"cheap GiB-h":>12} '
                     f'{"fast GiB-h":>11} {"switches":>8}  spikes met ahead (lead)')
        for p in sim['policies']:
            ahead = [s for s in p['spikes'] if s['lead-s'] is not None and s['lead-s'] >= 0]
            leads = ', '.join(f'{s["lead-s"]:.0f} s' for s in p['spikes']
                              if s['lead-s'] is not None)
            lines.append(f'  {p["name"]:13} {p["violation-s"]:11.0f} {p["cost"]:10.7f} '
                         f'{p["gib-hours"]["cheap"]:12.5f} {p["gib-hours"]["fast"]:11.5f} '
                         f'{p["switches"]:8d}  {len(ahead)}/{len(p["spikes"])}'
                         + (f' ({leads})' if leads else ''))
    return lines


def main():
    for tool in (QSD, SHADOWD, SHADOWCTL):
        if not os.path.exists(tool):
            raise SystemExit(f'demo: {tool} is missing; run make first')
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    cheap = os.path.join(WORK, 'cheap.raw')
    fast = os.path.join(WORK, 'fast.raw')
    ref = os.path.join(WORK, 'reference.raw')
    qmp_sock = os.path.join(WORK, 'qmp.sock')
    nbd_sock = os.path.join(WORK, 'nbd.sock')
    profile, origin = load_profile()
    past = profile[:PAST_DAYS * ROWS_PER_DAY]
    replay = profile[PAST_DAYS * ROWS_PER_DAY:]

    step('A disk on a cheap tier; a fast tier available, not in the node')
    run(QEMU_IMG, 'create', '-f', 'raw', cheap, str(SIZE))
    run(QEMU_IMG, 'create', '-f', 'raw', fast, str(SIZE))
    run(QEMU_IO, '-f', 'raw', '-c', f'write -P 0x5a 0 {SIZE // 2}', cheap)
    shutil.copyfile(cheap, ref)
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

        step('shadowd watches the node over QMP; its day is 48 s (configuration only)')
        conf = os.path.join(WORK, 'shadowd.conf')
        write_config(conf, qmp_sock)
        log = open(os.path.join(WORK, 'shadowd.log'), 'w', encoding='utf-8')
        procs.append(subprocess.Popen([SHADOWD, '--config', conf],
                                      stdout=log, stderr=subprocess.STDOUT))
        while not os.path.exists(os.path.join(WORK, 'control.sock')):
            time.sleep(0.05)
        say(f'     config: {conf}; log: {WORK}/shadowd.log')

        step(f'{PAST_DAYS} past days of load imported (shadowctl import)')
        # the replay's day begins where the imported days end, so that its
        # spikes fall at the same second of the day as theirs; the seconds
        # the import takes are not replayed (the load is quiet then)
        end = math.floor(time.time())
        t0 = end
        with open(os.path.join(WORK, 'past.csv'), 'w', encoding='utf-8') as f:
            f.write('second,ops\n')
            for i, v in enumerate(past):
                f.write(f'{i},{v}\n')
        imp = ctl('import', 'demo', os.path.join(WORK, 'past.csv'), '--column', 'ops',
                  '--interval-s', '1', '--end', str(end), '--json')
        say(f'     {imp["buckets"]} buckets of {imp["bucket-s"]:.0f} s; season in use: '
            f'{imp["season-buckets"]} buckets (a day)')
        with open(os.path.join(WORK, 'trace.csv'), 'w', encoding='utf-8') as f:
            f.write('second,ops\n')
            for i, v in enumerate(profile):
                f.write(f'{i},{v}\n')

        step(f'{DAYS} days of load replayed over NBD ({origin}); peak '
             f'{max(replay)} IOPS')
        replayer = Replayer(nbd_sock, replay, t0)
        replayer.start()
        time.sleep(max(0.0, t0 - time.time()))
        for second, iops in enumerate(replay):
            if time.time() >= t0 + second + 1:
                continue
            live_line(time.time() - t0, ctl('status', '--json')[0], iops)
            time.sleep(max(0.0, t0 + second + 1 - time.time()))
        replayer.join()
        if replayer.error:
            raise SystemExit(f'demo: the replay failed: {replayer.error}')

        step('Load gone: shadowd goes back to the cheap tier and releases the fast one')
        deadline = time.time() + 40
        while time.time() < deadline:
            st = ctl('status', '--json')[0]
            live_line(time.time() - t0, st, 0)
            if st['active-tier'] == 'cheap' and tier(st, 'fast')['phase'] == 'absent':
                break
            time.sleep(1)

        final = ctl('status', '--json')[0]
        samples = ctl('history', '--since', '1h', '--resolution', 'full',
                      '--json')
        decisions = ctl('history', '--since', '1h', '--decisions', '--json')
        tiers = ctl('history', '--since', '1h', '--tiers', '--json')
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                p.wait()

    step('Every byte is where it should be')
    say('     cheap against the disk as it was: ' +
        run(QEMU_IMG, 'compare', '-f', 'raw', '-F', 'raw', ref, cheap).strip())
    say(f'     fast.raw after its release: '
        f'{os.stat(fast).st_blocks * 512 // 1024} KiB allocated of {SIZE // MiB} MiB')

    copy = tier(final, 'fast').get('copy-rate-idle-bps') or 64 * MiB
    sim_conf = os.path.join(WORK, 'simulate.conf')
    write_sim_config(sim_conf, copy / MiB)
    sim = json.loads(run(SHADOWCTL, 'simulate', os.path.join(WORK, 'trace.csv'),
                         '--column', 'ops', '--interval-s', '1', '--config', sim_conf,
                         '--history-rows', str(len(past)), '--json'))
    with open(os.path.join(WORK, 'simulate.json'), 'w', encoding='utf-8') as f:
        json.dump(sim, f, indent=1)

    onsets = spikes_of(replay, t0)
    png = os.path.join(WORK, 'shadowtier-demo.png')
    plot(samples, decisions, tiers, t0,
         [d * ROWS_PER_DAY for d in range(DAYS)], png)
    lines = summarize(decisions, final, onsets, t0, sim)
    with open(os.path.join(WORK, 'summary.txt'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    step('Summary')
    for line in lines:
        say('     ' + line)
    say(f'\n     plot: {png}\n     summary: {WORK}/summary.txt')
    say('\ndemo: done')


if __name__ == '__main__':
    main()
