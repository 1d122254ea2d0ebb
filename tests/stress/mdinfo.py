#!/usr/bin/env python3
"""Print a shadow metadata image (docs/shadow-metadata.md): headers, slots,
intent map and valid maps, as chunk ranges.  For looking at the images a
failed stress run leaves.  Usage: mdinfo.py IMAGE"""

import struct
import sys


def ranges(bits):
    out, start = [], None
    for i, b in enumerate(bits + [0]):
        if b and start is None:
            start = i
        elif not b and start is not None:
            out.append(f'{start}' if i - 1 == start else f'{start}-{i - 1}')
            start = None
    return ','.join(out) or '-'


def main():
    md = open(sys.argv[1], 'rb').read()
    best = None
    for h in (0, 4096):
        (magic, ver, hsize, gen, flags, cs, dl, nc, ns, act, st, im, vm,
         mb) = struct.unpack('<8sIIQQQQQIIQQQQ', md[h:h + 96])
        print(f'header {h // 4096}: {magic} v{ver} gen {gen} flags {flags} '
              f'chunk {cs} length {dl} chunks {nc} active slot {act}')
        if magic == b'SHADOWMD' and (best is None or gen > best[0]):
            best = (gen, nc, act, st, im, vm, mb)
    if not best:
        return
    _gen, nc, act, st, im, vm, mb = best

    def bits(off):
        return [(md[off + c // 8] >> (c % 8)) & 1 for c in range(nc)]
    print(f'intent: {ranges(bits(im))}')
    for i in range(16):
        sl = md[st + i * 256:st + (i + 1) * 256]
        if not struct.unpack('<I', sl[:4])[0]:
            continue
        name = sl[40:104].rstrip(b'\0').decode()
        print(f'slot {i} {name}{" (active)" if i == act else ""}: valid '
              f'{ranges(bits(vm + i * mb))}')


if __name__ == '__main__':
    main()
