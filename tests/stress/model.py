"""The model of what the disk may hold, per 4 KiB block.

Every write carries self-describing content: each 4 KiB block of write
number v at block b is block_data(b, v), so a read tells which write a
block holds.  Value 0 is a block of zeroes; value 1 is the content the disk
was created with.

Two views:

- live: the set of values each block may hold now.  A successful write
  (or write-zeroes) makes it one value; a failed one adds its value to the
  old ones (the range may hold old or new data); a discard adds zero.  A
  read must return one of them and pins the block to it.
- crash at a point P of the global order (a kill, or a power loss built
  from the blklogwrites logs): per block, the value left by the last
  operation that a completed flush or FUA write made durable before P,
  or the value of any operation on the block issued before P after it.

The client never has two requests in flight on the same block, so the
operations on a block form a chain.
"""

import bisect
import struct

BLOCK = 4096
MAGIC = 0x5348414457535452      # "SHADWSTR"
ZERO = bytes(BLOCK)


def block_data(block, value):
    if value == 0:
        return ZERO
    unit = struct.pack('<QQQ', MAGIC, block, value)
    data = unit * (BLOCK // len(unit))
    return data + unit[:BLOCK - len(data)]


def decode(block, data):
    """The value a block holds, or None if it is neither zeroes nor a whole
    block that this test wrote at this place."""
    if data == ZERO:
        return 0
    magic, b, value = struct.unpack('<QQQ', data[:24])
    if magic != MAGIC or b != block or data != block_data(block, value):
        return None
    return value


def describe(block, data):
    v = decode(block, data)
    if v is not None:
        return 'zeroes' if v == 0 else f'write {v}'
    magic, b, value = struct.unpack('<QQQ', data[:24])
    if magic == MAGIC:
        return f'block {b} of write {value} (misplaced or torn)'
    return f'foreign data {data[:8].hex()}...'


class Op:
    """One guest operation on a range of blocks (or a flush)."""
    __slots__ = ('kind', 'value', 'first', 'count', 'fua', 'issue', 'ack',
                 'ok', 'durable', 'links')

    def __init__(self, kind, value, first, count, fua, issue):
        self.kind = kind        # write, zero, trim, flush, recovered, init
        self.value = value
        self.first = first
        self.count = count
        self.fua = fua
        self.issue = issue
        self.ack = None
        self.ok = None
        self.durable = None     # set for init, recovered and FUA writes
        self.links = None


class Link:
    """An operation as seen by one block: the values the block may hold
    right after it."""
    __slots__ = ('op', 'after')

    def __init__(self, op, after):
        self.op = op
        self.after = after


class Model:
    def __init__(self, nblocks, initial):
        self.nblocks = nblocks
        init = Op('init', None, 0, nblocks, False, 0)
        init.ack = 0
        init.ok = True
        init.durable = 0
        self.live = [frozenset([initial[b]]) for b in range(nblocks)]
        self.chain = [[Link(init, self.live[b])] for b in range(nblocks)]
        self.flushes = []       # flush Ops in order of issue
        self.writes = {}        # value -> write Op
        self.next_value = 2

    # --- live ---

    def new_value(self):
        v = self.next_value
        self.next_value += 1
        return v

    def issue(self, kind, first, count, fua, stamp, value=None):
        op = Op(kind, value, first, count, fua, stamp)
        if kind == 'write':
            self.writes[value] = op
        if kind == 'flush':
            self.flushes.append(op)
        else:
            op.links = []
            for b in range(first, first + count):
                link = Link(op, None)
                self.chain[b].append(link)
                op.links.append(link)
        return op

    def complete(self, op, ok, stamp):
        op.ack = stamp
        op.ok = ok
        if op.kind == 'flush':
            return
        if ok and op.fua:
            op.durable = stamp
        for b, link in zip(range(op.first, op.first + op.count), op.links):
            old = self.live[b]
            if op.kind == 'write':
                new = frozenset([op.value]) if ok else old | {op.value}
            elif op.kind == 'zero':
                new = frozenset([0]) if ok else old | {0}
            else:               # trim: old data or zeroes
                new = old | {0}
            self.live[b] = new
            link.after = new

    def check_read(self, block, data):
        """None, or what is wrong; pins the block to what it read."""
        v = decode(block, data)
        if v is not None and v in self.live[block]:
            self.live[block] = frozenset([v])
            return None
        return (f'block {block} reads {describe(block, data)}, but may '
                f'only hold {self.fmt(self.live[block])}')

    def pin(self, block, value):
        self.live[block] = frozenset([value])

    def recovered(self, block, value, stamp):
        """After a restart from a kill: what the block read is on disk."""
        op = Op('recovered', value, block, 1, False, stamp)
        op.ack = stamp
        op.ok = True
        op.durable = stamp
        self.live[block] = frozenset([value])
        self.chain[block].append(Link(op, self.live[block]))

    def clean_stop(self, issue, ack):
        """A clean stop flushed everything acknowledged before it."""
        op = Op('flush', None, 0, 0, False, issue)
        op.ack = ack
        op.ok = True
        self.flushes.append(op)

    @staticmethod
    def fmt(values):
        return '{' + ', '.join('zeroes' if v == 0 else f'write {v}'
                               for v in sorted(values)) + '}'

    # --- crash ---

    def crash_view(self, point):
        """A function block -> set of values the block may hold after a
        power loss at @point (a half-integer between two stamps)."""
        # Flushes that completed successfully before the point, by issue:
        # an operation acknowledged before such a flush was issued is
        # durable at that flush's acknowledgement
        done = sorted((f.issue, f.ack) for f in self.flushes
                      if f.ok and f.ack is not None and f.ack < point)
        issues = [i for i, _ in done]

        def durable(op):
            if op.durable is not None:
                return op.durable < point
            if not op.ok or op.ack is None or op.ack > point:
                return False
            return bisect.bisect_right(issues, op.ack) < len(issues)

        def allowed(block):
            links = self.chain[block]
            d = 0
            for i in range(len(links) - 1, -1, -1):
                if durable(links[i].op):
                    d = i
                    break
            values = set(links[d].after)
            for link in links[d + 1:]:
                op = link.op
                if op.issue > point:
                    break
                values.add(0 if op.kind in ('zero', 'trim') else op.value)
            return values
        return allowed
