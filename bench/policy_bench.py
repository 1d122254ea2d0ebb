#!/usr/bin/env python3
"""Forecasting and tiering targets over the real traces (make bench).

For w31 and every development series in ../shared/data/traces/cloudphysics:

  shadowctl backtest FILE --column block_req_count --interval-s 1800 --horizon H
      for H = 1 and 4: the selector's MASE against naive's;
  shadowctl simulate FILE --column block_req_count --interval-s 1800
      --config bench/sim-demo.conf --scale-peak 600
      the demo's tier model, the load scaled as the demo replays it (its
      busiest row 600 IOPS): violation seconds and cost of shadowtier,
      reactive, always-cheap, always-fast and oracle.

A series "has a daily cycle" when its autocorrelation at one day (48 rows)
is at least 0.3: a property of the data, not of the forecaster.

Prints a table and the targets, met or missed, and writes the whole as
JSON (build/bench/policy.json, or --out).  Skips cleanly (exit 0, a note)
when the traces are absent.  --traces DIR reads another directory of the
same format (held-out series); SHADOWCTL=PATH runs another build of
shadowctl (to compare a change against main in one tree).
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHADOWCTL = os.environ.get('SHADOWCTL') or os.path.join(REPO, 'build', 'agent', 'shadowctl')
TRACES = os.path.join(REPO, '..', 'shared', 'data', 'traces')
CONFIG = os.path.join(REPO, 'bench', 'sim-demo.conf')
COLUMN = 'block_req_count'
INTERVAL = 1800
DAY_ROWS = 86400 // INTERVAL
CYCLE_ACF = 0.3


def series_files(traces):
    files = []
    w31 = os.path.join(traces, 'cp_w31_30min_features.csv')
    if os.path.exists(w31):
        files.append(w31)
    files += sorted(glob.glob(os.path.join(traces, 'cloudphysics', '*.csv')))
    if not files:
        files = sorted(glob.glob(os.path.join(traces, '*.csv')))
    return files


def name_of(path):
    base = os.path.basename(path)
    parts = base.split('_')
    return parts[1] if len(parts) > 2 and base.startswith('cp_') else base


def read_column(path):
    import csv
    with open(path, encoding='utf-8') as f:
        return [float(r[COLUMN]) for r in csv.DictReader(f)]


def acf(y, k):
    n = len(y)
    if n <= k:
        return 0.0
    m = sum(y) / n
    v = sum((a - m) ** 2 for a in y)
    if v <= 0:
        return 0.0
    return sum((y[i] - m) * (y[i - k] - m) for i in range(k, n)) / v


def ctl(*args):
    out = subprocess.run([SHADOWCTL, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f'policy_bench: shadowctl {" ".join(args)}: {out.stderr.strip()}')
    return json.loads(out.stdout)


def evaluate(path):
    y = read_column(path)
    res = {'series': name_of(path), 'rows': len(y),
           'acf-day': round(acf(y, DAY_ROWS), 3)}
    res['has-cycle'] = res['acf-day'] >= CYCLE_ACF
    for h in (1, 4):
        d = ctl('backtest', path, '--column', COLUMN, '--interval-s', str(INTERVAL),
                '--horizon', str(h), '--json')
        m = {r['name']: r for r in d['models']}
        res[f'backtest-h{h}'] = {
            'naive-mase': m['naive']['mase'], 'selector-mase': m['auto']['mase'],
            'ratio': m['auto']['mase'] / m['naive']['mase'],
            'seasons': d['seasons'], 'chosen': d['chosen']}
    d = ctl('simulate', path, '--column', COLUMN, '--interval-s', str(INTERVAL),
            '--config', CONFIG, '--scale-peak', '600', '--json')
    pol = {p['name']: p for p in d['policies']}
    res['simulate'] = {
        name: {'violation-s': p['violation-s'], 'cost': p['cost'],
               'switches': p['switches'], 'releases': p.get('releases'),
               'spikes': len(p['spikes']),
               'ahead': sum(1 for s in p['spikes']
                            if s['lead-s'] is not None and s['lead-s'] >= 0)}
        for name, p in pol.items()}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--traces', default=TRACES)
    ap.add_argument('--out', default=os.path.join(REPO, 'build', 'bench', 'policy.json'))
    ap.add_argument('--jobs', type=int, default=2)
    args = ap.parse_args()
    files = series_files(args.traces)
    if not files:
        print(f'policy_bench: no traces in {args.traces}: skipped')
        return 0
    if not os.path.exists(SHADOWCTL):
        raise SystemExit('policy_bench: build/agent/shadowctl is missing (make agent)')
    with ThreadPoolExecutor(max_workers=args.jobs) as ex:
        rows = list(ex.map(evaluate, files))

    print(f'{"series":7} {"cycle":>5} {"acf":>5} | {"viol st":>8} {"viol re":>8} | '
          f'{"cost st":>7} {"fast":>7} {"oracle":>7} {"st/or":>5} | '
          f'{"bt h1":>6} {"bt h4":>6} | ahead')
    for r in rows:
        s = r['simulate']
        st, re_, fa, orc = (s['shadowtier'], s['reactive'], s['always-fast'], s['oracle'])
        print(f'{r["series"]:7} {"yes" if r["has-cycle"] else "no":>5} {r["acf-day"]:5.2f} | '
              f'{st["violation-s"]:8.0f} {re_["violation-s"]:8.0f} | '
              f'{st["cost"]:7.3f} {fa["cost"]:7.3f} {orc["cost"]:7.3f} '
              f'{st["cost"] / orc["cost"]:5.2f} | '
              f'{r["backtest-h1"]["ratio"]:6.3f} {r["backtest-h4"]["ratio"]:6.3f} | '
              f'{st["ahead"]}/{st["spikes"]}')

    cyc = [r for r in rows if r['has-cycle']]
    targets = []

    def target(name, ok, detail):
        targets.append({'target': name, 'met': bool(ok), 'detail': detail})

    bad = [r['series'] for r in cyc
           if r['simulate']['shadowtier']['violation-s'] >
           0.5 * r['simulate']['reactive']['violation-s']]
    target('violation <= reactive/2 on series with a daily cycle', not bad,
           f'{len(cyc) - len(bad)} of {len(cyc)}' + (f'; missed: {", ".join(bad)}' if bad else ''))
    bad = [r['series'] for r in rows
           if r['simulate']['shadowtier']['violation-s'] >
           r['simulate']['reactive']['violation-s']]
    target('violation <= reactive on every series', not bad,
           f'{len(rows) - len(bad)} of {len(rows)}' + (f'; missed: {", ".join(bad)}' if bad else ''))
    bad = [r['series'] for r in rows
           if r['simulate']['shadowtier']['cost'] > r['simulate']['always-fast']['cost']]
    target('cost <= always-fast on every series', not bad,
           f'{len(rows) - len(bad)} of {len(rows)}' + (f'; missed: {", ".join(bad)}' if bad else ''))
    ratios = [r['simulate']['shadowtier']['cost'] / r['simulate']['oracle']['cost'] for r in rows]
    med = statistics.median(ratios)
    target('median cost <= 1.3 x oracle', med <= 1.3, f'median {med:.3f}')
    for h in (1, 4):
        worst = max(rows, key=lambda r: r[f'backtest-h{h}']['ratio'])
        w = worst[f'backtest-h{h}']['ratio']
        target(f'backtest h{h}: selector within 2% of naive on every series', w <= 1.02,
               f'worst {worst["series"]} {w:.3f}')
        if cyc:
            m = statistics.median(r[f'backtest-h{h}']['ratio'] for r in cyc)
            target(f'backtest h{h}: median selector/naive <= 0.9 on series with a cycle',
                   m <= 0.9, f'median {m:.3f} over {len(cyc)}')
    print()
    for t in targets:
        print(f'{"MET   " if t["met"] else "MISSED"} {t["target"]}: {t["detail"]}')
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w', encoding='utf-8') as f:
        json.dump({'config': os.path.relpath(CONFIG, REPO), 'interval-s': INTERVAL,
                   'series': rows, 'targets': targets}, f, indent=1)
    print(f'\npolicy_bench: {len(rows)} series, results in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
