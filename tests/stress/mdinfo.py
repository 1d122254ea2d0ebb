#!/usr/bin/env python3
"""Shadow metadata images, format 2 (docs/shadow-metadata.md).

As a program: print a metadata image (headers, slots, intent map and valid
maps as chunk ranges), for looking at what a failed stress run leaves.
Usage: mdinfo.py IMAGE

As a module: restamp(), which the stress test applies to crash states."""

import hashlib
import os
import struct
import sys

HEADER_SIZE = 8192
TABLE = 256
SLOT = 256
SLOTS = 16
ROWS = 2 * HEADER_SIZE
UNIT = 4096
UNIT_HEADER = 32
UNIT_CHUNKS = (UNIT - UNIT_HEADER) * 8
ROW_UNITS = 1 + 2 * SLOTS
IN_USE = 1
SLOT_USED, SLOT_STAMPED = 1, 8


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data, crc=0xffffffff):
    """QEMU's crc32c(0xffffffff, ...), which inverts the result"""
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xff] ^ (crc >> 8)
    return crc ^ 0xffffffff


def current_header(md):
    """(offset of the current header copy, its fields) or (None, None)"""
    best = None
    for copy in (0, HEADER_SIZE):
        buf = bytearray(md[copy:copy + HEADER_SIZE])
        if buf[:8] != b'SHADOWMD' or struct.unpack('<I', buf[8:12])[0] != 2:
            continue
        crc = struct.unpack('<I', buf[92:96])[0]
        buf[92:96] = bytes(4)
        if crc32c(buf) != crc:
            continue
        gen = struct.unpack('<Q', buf[16:24])[0]
        if best is None or gen > best[1]['generation']:
            f = dict(zip(('generation', 'flags', 'chunk_size', 'length',
                          'nb_chunks', 'nb_slots', 'active_slot', 'session'),
                         struct.unpack('<QQQQQIIQ', buf[16:72])))
            best = (copy, f)
    return best or (None, None)


def slots(md):
    """The used slots of the current header copy, in order: dicts with
    index, epoch, node_name, filename (both informational, as the node
    last opened them), active and stamped (size and ctime recorded at a
    clean stop); [] without an intact header"""
    copy, hdr = current_header(md)
    if copy is None:
        return []
    buf = md[copy:copy + HEADER_SIZE]
    out = []
    for i in range(SLOTS):
        off = TABLE + i * SLOT
        flags, _r, epoch = struct.unpack('<IIQ', buf[off:off + 16])
        if not flags & SLOT_USED:
            continue
        out.append({'index': i, 'epoch': epoch,
                    'node_name': buf[off + 88:off + 152].rstrip(b'\0').decode(),
                    'filename': buf[off + 152:off + 256].rstrip(b'\0').decode(),
                    'active': i == hdr['active_slot'],
                    'stamped': bool(flags & SLOT_STAMPED)})
    return out


def restamp(md_path, files):
    """A power loss never makes a file's ctime newer, but rewriting a crash
    image in place does: when the current header is clean, record each of
    @files (the tiers' images) as it is now in the slot whose identity is
    the SHA-256 of its path.  Returns how many slots were restamped."""
    with open(md_path, 'r+b') as f:
        md = f.read(2 * HEADER_SIZE)
        copy, hdr = current_header(md)
        if copy is None or hdr['flags'] & IN_USE:
            return 0
        buf = bytearray(md[copy:copy + HEADER_SIZE])
        ids = {hashlib.sha256(p.encode()).digest(): p for p in files}
        n = 0
        for i in range(SLOTS):
            off = TABLE + i * SLOT
            flags = struct.unpack('<I', buf[off:off + 4])[0]
            path = ids.get(bytes(buf[off + 16:off + 48]))
            if not flags & SLOT_USED or not flags & SLOT_STAMPED or not path:
                continue
            st = os.stat(path)
            buf[off + 68:off + 72] = struct.pack('<I', st.st_ctime_ns % 10**9)
            buf[off + 72:off + 88] = struct.pack('<qq',
                                                 st.st_ctime_ns // 10**9,
                                                 st.st_size)
            n += 1
        buf[92:96] = bytes(4)
        buf[92:96] = struct.pack('<I', crc32c(buf))
        f.seek(copy)
        f.write(buf)
    return n


def ranges(bits):
    out, start = [], None
    for i, b in enumerate(bits + [0]):
        if b and start is None:
            start = i
        elif not b and start is not None:
            out.append(f'{start}' if i - 1 == start else f'{start}-{i - 1}')
            start = None
    return ','.join(out) or '-'


def unit_offset(u, column, copy=0):
    pos = 1 + 2 * (column - 1) + copy if column else 0
    return ROWS + (u * ROW_UNITS + pos) * UNIT


def unit(md, u, column, copy=0):
    """(ok, epoch, seq, payload) of a unit"""
    off = unit_offset(u, column, copy)
    raw = bytearray(md[off:off + UNIT])
    if len(raw) < UNIT or not any(raw):
        return False, 0, 0, bytes(UNIT - UNIT_HEADER)
    crc, col, epoch, idx, seq = struct.unpack('<IIQQQ', raw[:UNIT_HEADER])
    raw[:4] = bytes(4)
    ok = crc32c(raw) == crc and col == column and idx == u
    return ok, epoch, seq, bytes(raw[UNIT_HEADER:])


LIST = TABLE + SLOTS * SLOT
UNIT_NUMBERS = 4        # header flag: a clean header lists them at LIST


def listed_numbers(md):
    """(bits, {(slot index, unit): low bits of its number}) as the
    current header lists them, or (0, {}) without a list
    (docs/shadow-metadata.md, "Units' numbers")"""
    copy, hdr = current_header(md)
    if copy is None or hdr['flags'] & (IN_USE | UNIT_NUMBERS) != UNIT_NUMBERS:
        return 0, {}
    area = md[copy + LIST:copy + HEADER_SIZE]
    b = area[0]
    units = -(-hdr['nb_chunks'] // UNIT_CHUNKS)
    entries = int.from_bytes(area[1:], 'little')
    out = {}
    for k, sl in enumerate(slots(md)):
        for u in range(units):
            pos = (k * units + u) * b
            out[sl['index'], u] = (entries >> pos) & ((1 << b) - 1)
    return b, out


def listed_numbers_wrong(md):
    """The units whose number a clean header lists otherwise than the
    unit's current copy on disk (of the slot's epoch) has it, as
    (slot index, unit, listed, on disk) tuples"""
    b, listed = listed_numbers(md)
    epochs = {sl['index']: sl['epoch'] for sl in slots(md)}
    wrong = []
    for (slot, u), low in sorted(listed.items()):
        cur = 0
        for copy in (0, 1):
            ok, ep, seq, _payload = unit(md, u, 1 + slot, copy)
            if ok and ep == epochs[slot]:
                cur = max(cur, seq)
        if cur & ((1 << b) - 1) != low:
            wrong.append((slot, u, low, cur))
    return wrong


def main():
    md = open(sys.argv[1], 'rb').read()
    copy, hdr = current_header(md)
    if copy is None:
        print('no intact header of format 2')
        return
    print(f'header copy {copy // HEADER_SIZE}: {hdr}')
    nb = hdr['nb_chunks']
    units = -(-nb // UNIT_CHUNKS)

    def bits(column, epoch):
        out = []
        for u in range(units):
            best = None
            for c in ((0, 1) if column else (0,)):
                ok, ep, seq, payload = unit(md, u, column, c)
                if ok and ep == epoch and (best is None or seq > best[0]):
                    best = (seq, payload)
            payload = best[1] if best else bytes(UNIT - UNIT_HEADER)
            out += [(payload[c // 8] >> (c % 8)) & 1
                    for c in range(min(UNIT_CHUNKS, nb - u * UNIT_CHUNKS))]
        return out

    print(f'intent (session {hdr["session"]:#x}): '
          f'{ranges(bits(0, hdr["session"]))}')
    for sl in slots(md):
        act = ' (active)' if sl['active'] else ''
        print(f"slot {sl['index']} {sl['node_name']}{act}: valid "
              f"{ranges(bits(1 + sl['index'], sl['epoch']))}")
    b, listed = listed_numbers(md)
    if b:
        print(f'unit numbers listed ({b} bits each): {listed}')


if __name__ == '__main__':
    main()
