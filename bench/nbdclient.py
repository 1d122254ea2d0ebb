"""A small NBD client (fixed newstyle, NBD_OPT_GO, simple replies) with
pipelining, for the kill tests and the switch-pause benchmark: unlike
qemu-io it tells exactly which requests completed, and when."""

import socket
import struct

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
INFO_EXPORT = 0

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_FLAG_FUA = 1


class NBDError(Exception):
    pass


class NBDClient:
    """One connection to one export.  submit() sends a request and returns
    its handle; reply() waits for the next reply, in any order."""

    def __init__(self, path, export):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.next_handle = 1
        self.reads = {}
        magic, opt, _flags = struct.unpack('>QQH', self._recv(18))
        if magic != NBDMAGIC or opt != IHAVEOPT:
            raise NBDError('not a newstyle NBD server')
        # FIXED_NEWSTYLE | NO_ZEROES
        self.sock.sendall(struct.pack('>I', 3))
        name = export.encode()
        data = struct.pack('>I', len(name)) + name + struct.pack('>H', 0)
        self.sock.sendall(struct.pack('>QII', IHAVEOPT, OPT_GO, len(data)) +
                          data)
        self.size = None
        while True:
            magic, _opt, rtype, length = struct.unpack('>QIII',
                                                       self._recv(20))
            payload = self._recv(length)
            if magic != OPT_REPLY_MAGIC:
                raise NBDError('bad option reply')
            if rtype == REP_ACK:
                break
            if rtype == REP_INFO:
                if struct.unpack('>H', payload[:2])[0] == INFO_EXPORT:
                    self.size = struct.unpack('>Q', payload[2:10])[0]
            elif rtype & 0x80000000:
                raise NBDError(f'NBD_OPT_GO refused: {rtype:#x} '
                               f'{payload.decode(errors="replace")}')

    def _recv(self, n):
        buf = bytearray()
        while len(buf) < n:
            part = self.sock.recv(n - len(buf))
            if not part:
                raise ConnectionError('NBD server closed the connection')
            buf += part
        return bytes(buf)

    def submit(self, cmd, offset=0, length=0, data=b'', flags=0):
        handle = self.next_handle
        self.next_handle += 1
        if cmd == CMD_WRITE:
            length = len(data)
        elif cmd == CMD_READ:
            self.reads[handle] = length
        self.sock.sendall(struct.pack('>IHHQQI', REQUEST_MAGIC, flags, cmd,
                                      handle, offset, length) + data)
        return handle

    def reply(self):
        """(handle, errno, data) of the next reply."""
        magic, error, handle = struct.unpack('>IIQ', self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC:
            raise NBDError('bad reply magic')
        data = b''
        length = self.reads.pop(handle, 0)
        if length and error == 0:
            data = self._recv(length)
        return handle, error, data

    def call(self, cmd, offset=0, length=0, data=b'', flags=0):
        self.submit(cmd, offset, length, data, flags)
        _handle, error, data = self.reply()
        if error:
            raise NBDError(f'NBD command {cmd} failed: errno {error}')
        return data

    def read(self, offset, length):
        return self.call(CMD_READ, offset, length)

    def write(self, offset, data, flags=0):
        self.call(CMD_WRITE, offset, data=data, flags=flags)

    def flush(self):
        self.call(CMD_FLUSH)

    def close(self):
        try:
            self.sock.sendall(struct.pack('>IHHQQI', REQUEST_MAGIC, 0,
                                          CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self.sock.close()
