"""NBD for the stress test, standard library only.

Client: a pipelining NBD client with structured replies and the
base:allocation meta context (reads, writes, write-zeroes, trims, flushes,
FUA, block status), unlike bench/nbdclient.py which only speaks simple
replies.

Recorder: a single-threaded NBD server that every blklogwrites node's `log`
child connects to.  It keeps nothing but the log entries it parses out of
the log writes, each stamped with a global sequence number taken from the
same counter as the test's own events, so that entries of different
devices and the client's acknowledgements can be put in one order.
"""

import os
import queue
import selectors
import socket
import struct
import threading

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668e33ef

OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_SET_META_CONTEXT = 10
REP_ACK = 1
REP_INFO = 3
REP_META_CONTEXT = 4
REP_ERR_UNSUP = (1 << 31) | 1
INFO_EXPORT = 0

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

FLAG_FUA = 1
FLAG_NO_HOLE = 2
FLAG_DF = 4
FLAG_REQ_ONE = 8

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2

STATE_HOLE = 1
STATE_ZERO = 2

CMD_NAMES = {CMD_READ: 'read', CMD_WRITE: 'write', CMD_FLUSH: 'flush',
             CMD_TRIM: 'trim', CMD_WRITE_ZEROES: 'write-zeroes',
             CMD_BLOCK_STATUS: 'block-status'}


class NBDError(Exception):
    pass


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError('NBD peer closed the connection')
        buf += part
    return bytes(buf)


class Reply:
    """What came back for one request: errno (0 on success), for a read
    its data and the ranges that came as hole chunks, for block status the
    extents [(length, flags)]."""

    def __init__(self, handle, cmd, offset, length):
        self.handle = handle
        self.cmd = cmd
        self.offset = offset
        self.length = length
        self.error = 0
        self.message = ''
        self.data = None
        self.holes = []
        self.extents = []


class Client:
    """One connection to one export.  submit() sends a request and returns
    its handle; reply() waits for the next complete reply, in any order."""

    def __init__(self, path, export, meta=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.next_handle = 1
        self.pending = {}
        self.lock = threading.Lock()
        self.reader = None
        self.structured = False
        self.context = None
        magic, opt, _flags = struct.unpack('>QQH', self._recv(18))
        if magic != NBDMAGIC or opt != IHAVEOPT:
            raise NBDError('not a newstyle NBD server')
        self.sock.sendall(struct.pack('>I', 3))  # FIXED_NEWSTYLE|NO_ZEROES
        name = export.encode()
        rtype, _ = self._option(OPT_STRUCTURED_REPLY, b'')[-1]
        self.structured = rtype == REP_ACK
        if self.structured and meta:
            q = b'base:allocation'
            data = (struct.pack('>I', len(name)) + name +
                    struct.pack('>I', 1) + struct.pack('>I', len(q)) + q)
            for rtype, payload in self._option(OPT_SET_META_CONTEXT, data):
                if rtype == REP_META_CONTEXT:
                    self.context = struct.unpack('>I', payload[:4])[0]
        data = struct.pack('>I', len(name)) + name + struct.pack('>H', 0)
        self.size = None
        self.tflags = 0
        for rtype, payload in self._option(OPT_GO, data):
            if rtype & 0x80000000:
                raise NBDError(f'NBD_OPT_GO refused: {rtype:#x} '
                               f'{payload.decode(errors="replace")}')
            if rtype == REP_INFO and \
                    struct.unpack('>H', payload[:2])[0] == INFO_EXPORT:
                self.size, self.tflags = struct.unpack('>QH', payload[2:12])

    def _recv(self, n):
        return _recv_exact(self.sock, n)

    def _option(self, opt, data):
        self.sock.sendall(struct.pack('>QII', IHAVEOPT, opt, len(data)) +
                          data)
        replies = []
        while True:
            magic, _opt, rtype, length = struct.unpack('>QIII',
                                                       self._recv(20))
            payload = self._recv(length)
            if magic != OPT_REPLY_MAGIC:
                raise NBDError('bad option reply')
            replies.append((rtype, payload))
            if rtype == REP_ACK or rtype & 0x80000000:
                return replies

    def submit(self, cmd, offset=0, length=0, data=b'', flags=0):
        handle = self.next_handle
        self.next_handle += 1
        if cmd == CMD_WRITE:
            length = len(data)
        r = Reply(handle, cmd, offset, length)
        if cmd == CMD_READ:
            r.data = bytearray(length)
        with self.lock:
            self.pending[handle] = r
        self.sock.sendall(struct.pack('>IHHQQI', REQUEST_MAGIC, flags, cmd,
                                      handle, offset, length) + data)
        return handle

    def start_reader(self, clock):
        """From now on a thread reads the replies; reply() takes them from
        a queue, each with .stamp, the clock's tick when it arrived."""
        self.queue = queue.Queue()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._reader, args=(clock,),
                                       daemon=True)
        self.reader.start()

    def _reader(self, clock):
        try:
            while True:
                r = self._read_reply()
                r.stamp = clock.tick()
                self.queue.put(r)
        except Exception as e:  # the connection is gone
            self.queue.put(e)

    def reply(self, timeout=None):
        """The next complete Reply; raises the reader's exception when the
        connection is gone, queue.Empty after @timeout seconds."""
        if self.reader is None:
            return self._read_reply()
        r = self.queue.get(timeout=timeout)
        if isinstance(r, Exception):
            self.queue.put(r)
            raise ConnectionError(f'NBD connection lost: {r}')
        return r

    def _read_reply(self):
        while True:
            magic = struct.unpack('>I', self._recv(4))[0]
            if magic == SIMPLE_REPLY_MAGIC:
                error, handle = struct.unpack('>IQ', self._recv(12))
                with self.lock:
                    r = self.pending.pop(handle)
                r.error = error
                if r.cmd == CMD_READ:
                    if error == 0:
                        r.data = self._recv(r.length)
                    else:
                        r.data = None
                return r
            if magic != STRUCTURED_REPLY_MAGIC:
                raise NBDError(f'bad reply magic {magic:#x}')
            flags, rtype, handle, length = struct.unpack('>HHQI',
                                                         self._recv(16))
            payload = self._recv(length)
            with self.lock:
                r = self.pending[handle]
            if rtype == REPLY_TYPE_OFFSET_DATA:
                off = struct.unpack('>Q', payload[:8])[0] - r.offset
                r.data[off:off + length - 8] = payload[8:]
            elif rtype == REPLY_TYPE_OFFSET_HOLE:
                off, size = struct.unpack('>QI', payload[:12])
                r.data[off - r.offset:off - r.offset + size] = bytes(size)
                r.holes.append((off, size))
            elif rtype == REPLY_TYPE_BLOCK_STATUS:
                for i in range(4, len(payload), 8):
                    r.extents.append(struct.unpack('>II',
                                                   payload[i:i + 8]))
            elif rtype in (REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET):
                r.error, mlen = struct.unpack('>IH', payload[:6])
                r.message = payload[6:6 + mlen].decode(errors='replace')
            elif rtype != REPLY_TYPE_NONE:
                raise NBDError(f'unknown structured reply type {rtype}')
            if flags & REPLY_FLAG_DONE:
                with self.lock:
                    del self.pending[handle]
                if r.cmd == CMD_READ:
                    r.data = bytes(r.data) if not r.error else None
                return r

    def call(self, cmd, offset=0, length=0, data=b'', flags=0, timeout=None):
        """One request, with no other in flight."""
        self.submit(cmd, offset, length, data, flags)
        r = self.reply(timeout)
        if r.error:
            raise NBDError(f'NBD {CMD_NAMES.get(cmd, cmd)} failed: '
                           f'errno {r.error} {r.message}')
        return r

    def read(self, offset, length, flags=FLAG_DF, timeout=None):
        return self.call(CMD_READ, offset, length, flags=flags,
                         timeout=timeout).data

    def block_status(self, offset, length, timeout=None):
        """[(offset, length, flags)] covering offset..offset+length."""
        out = []
        end = offset + length
        while offset < end:
            r = self.call(CMD_BLOCK_STATUS, offset, end - offset,
                          timeout=timeout)
            if not r.extents:
                raise NBDError('block status without extents')
            for elen, eflags in r.extents:
                elen = min(elen, end - offset)
                out.append((offset, elen, eflags))
                offset += elen
                if offset >= end:
                    break
        return out

    def close(self):
        try:
            self.sock.sendall(struct.pack('>IHHQQI', REQUEST_MAGIC, 0,
                                          CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self.reader:
            self.reader.join(5)


class Clock:
    """The global order: one counter shared by the recorder's log entries
    and the test's own events."""

    def __init__(self):
        self._lock = threading.Lock()
        self._n = 0

    def tick(self):
        with self._lock:
            self._n += 1
            return self._n


# blklogwrites' log format (dm-log-writes): a superblock at sector 0, then
# per entry one sector with {sector, nr_sectors, flags, data_len} (LE u64)
# followed by the data unless it is a discard (or a write-zeroes, whose
# data area the log gets as a separate write-zeroes).
LOG_FLUSH = 1
LOG_FUA = 2
LOG_DISCARD = 4
LOG_MARK = 8
LOG_SECTOR = 512


class LogEntry:
    __slots__ = ('stamp', 'pos', 'kind', 'offset', 'length', 'data')

    def __init__(self, stamp, pos, kind, offset, length, data):
        self.stamp = stamp      # global order of its arrival
        self.pos = pos          # its place in its device's log
        self.kind = kind        # 'write', 'zero', 'discard', 'flush'
        self.offset = offset
        self.length = length
        self.data = data

    def __repr__(self):
        return (f'<{self.kind} @{self.stamp} #{self.pos} {self.offset}'
                f'+{self.length}>')


class DeviceLog:
    """The entries one blklogwrites node wrote over one connection."""

    def __init__(self, export, serial, keep):
        self.export = export
        self.serial = serial
        self.keep = keep
        self.entries = []
        self.closed = False


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.state = 'flags'
        self.log = None


class Recorder(threading.Thread):
    """An NBD server on a UNIX socket for blklogwrites' log children.
    Every export name is accepted; each connection starts a new DeviceLog
    (an open of the blklogwrites node starts a new log).  Reads return
    zeroes."""

    SIZE = 1 << 40

    def __init__(self, path, clock):
        super().__init__(daemon=True)
        self.path = path
        self.clock = clock
        if os.path.exists(path):
            os.remove(path)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(path)
        self.lsock.listen(64)
        self.lsock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.lock = threading.Lock()
        self.logs = []          # every DeviceLog, in order of connection
        self.serial = 0
        self.stopping = False
        self.error = None
        self.entries = 0
        self.recording = True

    def logs_after(self, serial):
        """The logs of the connections made after @serial, the value of
        .serial at some earlier moment."""
        with self.lock:
            return [log for log in self.logs if log.serial > serial]

    def drop(self):
        """Forget every log so far."""
        with self.lock:
            self.logs = []

    def run(self):
        try:
            while not self.stopping:
                for key, _ in self.sel.select(0.2):
                    if key.data is None:
                        try:
                            sock, _ = self.lsock.accept()
                        except BlockingIOError:
                            continue
                        sock.setblocking(True)
                        sock.sendall(struct.pack('>QQH', NBDMAGIC, IHAVEOPT,
                                                 3))
                        sock.setblocking(False)
                        self.sel.register(sock, selectors.EVENT_READ,
                                          _Conn(sock))
                    else:
                        self._readable(key.data)
        except Exception as e:  # reported by the test
            self.error = f'recorder: {type(e).__name__}: {e}'

    def stop(self):
        self.stopping = True
        self.join(2)

    def _close(self, c):
        self.sel.unregister(c.sock)
        c.sock.close()
        if c.log:
            c.log.closed = True

    def _send(self, c, data):
        c.sock.setblocking(True)
        try:
            c.sock.sendall(data)
        finally:
            c.sock.setblocking(False)

    def _readable(self, c):
        try:
            part = c.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            part = b''
        if not part:
            self._close(c)
            return
        c.buf += part
        try:
            while self._step(c):
                pass
        except OSError:
            self._close(c)

    def _step(self, c):
        """Handle one complete message at the head of c.buf; False when
        more bytes are needed."""
        b = c.buf
        if c.state == 'flags':
            if len(b) < 4:
                return False
            del b[:4]
            c.state = 'opts'
            return True
        if c.state == 'opts':
            if len(b) < 16:
                return False
            _magic, opt, length = struct.unpack('>QII', b[:16])
            if len(b) < 16 + length:
                return False
            data = bytes(b[16:16 + length])
            del b[:16 + length]
            if opt == OPT_GO:
                nlen = struct.unpack('>I', data[:4])[0]
                name = data[4:4 + nlen].decode()
                info = struct.pack('>HQH', INFO_EXPORT, self.SIZE,
                                   1 | 4 | 8 | 32 | 64)
                self._send(c, struct.pack('>QIII', OPT_REPLY_MAGIC, opt,
                                          REP_INFO, len(info)) + info +
                           struct.pack('>QIII', OPT_REPLY_MAGIC, opt,
                                       REP_ACK, 0))
                with self.lock:
                    self.serial += 1
                    c.log = DeviceLog(name, self.serial, self.recording)
                    if self.recording:
                        self.logs.append(c.log)
                c.state = 'io'
            elif opt == 2:      # NBD_OPT_ABORT
                self._close(c)
                return False
            else:
                self._send(c, struct.pack('>QIII', OPT_REPLY_MAGIC, opt,
                                          REP_ERR_UNSUP, 0))
            return True
        if len(b) < 28:
            return False
        magic, _flags, cmd, handle, offset, length = struct.unpack(
            '>IHHQQI', b[:28])
        if magic != REQUEST_MAGIC:
            raise NBDError('recorder: bad request magic')
        if cmd == CMD_WRITE:
            if len(b) < 28 + length:
                return False
            data = bytes(b[28:28 + length])
            del b[:28 + length]
            if offset != 0:
                self._entry(c.log, offset, data)
        else:
            del b[:28]
        reply = struct.pack('>IIQ', SIMPLE_REPLY_MAGIC, 0, handle)
        if cmd == CMD_READ:
            reply += bytes(length)
        if cmd == CMD_DISC:
            self._close(c)
            return False
        self._send(c, reply)
        return True

    def _entry(self, log, offset, data):
        if not log.keep:
            return
        sector, nr, flags, _dlen = struct.unpack('<QQQQ', data[:32])
        stamp = self.clock.tick()
        if flags & LOG_FLUSH:
            kind, payload = 'flush', None
        elif flags & LOG_DISCARD:
            kind, payload = 'discard', None
        elif len(data) == LOG_SECTOR and nr:
            kind, payload = 'zero', None
        else:
            kind, payload = 'write', data[LOG_SECTOR:LOG_SECTOR + nr * 512]
            if len(payload) != nr * 512:
                raise NBDError(f'recorder: short log entry at {offset}')
        with self.lock:
            log.entries.append(LogEntry(stamp, offset // LOG_SECTOR, kind,
                                        sector * 512, nr * 512, payload))
            self.entries += 1
