#!/usr/bin/env python3
"""How far the policy's knobs can take its cost (issue 14's evidence; not
part of make bench, it takes 20 to 60 minutes).

Runs bench/policy_bench.py once with the demo's tier model as it is, then
once per point of a grid of the agent's knobs (release-after, hysteresis,
max-utilization, prediction-level, prewarm-margin: 324 points).  For each
series it keeps the cheapest run, of shadowtier or reactive at any grid
point, that meets that series' violation target against the default
run's reactive (at most half of it on a series with a daily cycle, at
most as much elsewhere; w33 and w35, where no policy can, at most as
much) and costs no more than always-fast.  That choice is made with
hindsight, per series: no real policy can make it.  Prints each series'
best cost / oracle and the median, and writes them as JSON (--out).

    python3 bench/policy_bound.py --out build/bench/policy-bound.json
"""

import argparse
import contextlib
import importlib.util
import io
import itertools
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GRID = {
    'release-after': [600, 1800, 3600, 7200],
    'hysteresis': [0, 0.1, 0.25],
    'max-utilization': [0.8, 0.9, 1.0],
    'prediction-level': [0.5, 0.7, 0.9],
    'prewarm-margin': [60, 120, 600],
}
# Cycle series whose violations all come before any load was seen
UNREACHABLE = ('w33', 'w35')


def load_policy_bench():
    spec = importlib.util.spec_from_file_location(
        'policy_bench', os.path.join(HERE, 'policy_bench.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(pb, base, extra, tmp):
    """policy_bench with @extra knobs in [shadowd]; its JSON"""
    conf = os.path.join(tmp, 'sim.conf')
    out = os.path.join(tmp, 'policy.json')
    with open(conf, 'w') as f:
        f.write(base.replace('[shadowd]\n', '[shadowd]\n' + extra, 1))
    pb.CONFIG = conf
    argv, sys.argv = sys.argv, ['policy_bench', '--out', out]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            pb.main()
    except SystemExit:
        pass
    finally:
        sys.argv = argv
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', help='write the result as JSON here')
    args = ap.parse_args()
    pb = load_policy_bench()
    with open(pb.CONFIG) as f:
        base = f.read()
    with tempfile.TemporaryDirectory() as tmp:
        default = run(pb, base, '', tmp)
        if not default.get('series'):
            print('policy_bound: no traces, nothing to measure')
            return
        ref = {}
        for s in default['series']:
            sim = s['simulate']
            ref[s['series']] = (s['has-cycle'],
                                sim['reactive']['violation-s'],
                                sim['oracle']['cost'],
                                sim['always-fast']['cost'])
        best = {name: (float('inf'), None) for name in ref}
        keys = list(GRID)
        for values in itertools.product(*(GRID[k] for k in keys)):
            knobs = dict(zip(keys, values))
            extra = ''.join(f'{k} = {v}\n' for k, v in knobs.items())
            for s in run(pb, base, extra, tmp)['series']:
                cycle, reactive_v, oracle, fast = ref[s['series']]
                limit = (reactive_v / 2 if cycle and
                         s['series'] not in UNREACHABLE else reactive_v)
                for policy in ('shadowtier', 'reactive'):
                    p = s['simulate'][policy]
                    ratio = p['cost'] / oracle
                    if (p['violation-s'] <= limit and p['cost'] <= fast and
                            ratio < best[s['series']][0]):
                        best[s['series']] = (ratio, {'policy': policy,
                                                     **knobs})
    for name, (ratio, how) in best.items():
        print(f'{name:6} {ratio:6.3f}  {how}')
    median = statistics.median(b[0] for b in best.values())
    print(f'policy_bound: {len(best)} series, '
          f'{len(list(itertools.product(*GRID.values())))} grid points: '
          f'median of the best cost / oracle per series {median:.3f} '
          f'(target 1.3)')
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump({'grid': GRID, 'median': median,
                       'series': {k: {'cost-over-oracle': v[0], 'run': v[1]}
                                  for k, v in best.items()}}, f, indent=1)


if __name__ == '__main__':
    main()
