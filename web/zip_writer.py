"""ZipWriter: a zip archive written to a file member by member, each streamed from a file descriptor.

Owns the zip format only; what goes in is decided by the caller (web/result_zip.py, run on the
executor node when a task's script ended, or when the server retrieves results not zipped yet).

Not zipfile, because a member may be gigabytes that are mostly a hole (`truncate -s 4G`) or that
do not compress: zipfile deflates every byte it reads at one level, which took 10 s for a 4 GB
sparse file and 29 s for 1 GB of random data (bench/zipping.py; here 0.02 s and 1.4 s). Here each member is a plain deflate stream, so
unzip and zipfile read it, made of byte-aligned segments that refer to nothing before them:

- a whole piece (1 MiB) of zeros, read or in a hole (never read at all), is one ready-made
  segment, and the CRC is carried over it arithmetically;
- other pieces are deflated at level 1; from one that shrinks by less than 1/16 on, pieces are
  stored as they are (in deflate's stored blocks), and every 8th is tried again on a 32 KiB sample
  (the first piece after zeros is deflated afresh);
- a member of one piece is stored outright when deflating does not make it smaller.

ZIP64 is used where a size, an offset or the number of members needs it. The writer holds one
piece and one central-directory entry per member; everything else goes to the file as it comes.
"""
from __future__ import annotations

import errno
import os
import stat
import struct
import time
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

PIECE = 1 << 20
ZEROS = bytes(PIECE)
#: While a member's pieces do not compress, every Nth is tried again if its first SAMPLE bytes do:
#: 0.1 s per GB of random data, and at most N - 1 pieces of data that compresses again are stored.
PROBE_EVERY = 8
SAMPLE = 1 << 15
#: The largest name a zip entry can hold, in bytes.
MAX_NAME = 0xFFFF
LIMIT = 0xFFFFFFFF
STORED, DEFLATED = 0, 8
UTF8_NAME = 0x800
#: "Made by" a Unix host: unzip then keeps backslashes in names instead of taking them for separators.
UNIX = 3 << 8

LOCAL = struct.Struct("<IHHHHHIIIHH")
CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
END = struct.Struct("<IHHHHIIH")
END64 = struct.Struct("<IQHHIIQQQQ")
LOCATOR64 = struct.Struct("<IIQI")
#: A stored deflate block's header once on a byte boundary: BFINAL and BTYPE 0, LEN, NLEN.
STORED_BLOCK = struct.Struct("<BHH")


class Unreadable(Exception):
    """A member's file could not be read; the archive is as it was before that member."""


def _segment(data: bytes, level: int) -> bytes:
    """`data` as deflate blocks that end on a byte boundary and refer to nothing before them."""
    packer = zlib.compressobj(level, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)


ZERO_SEGMENT = _segment(ZEROS, 9)
#: An empty final block: the end of every member's stream.
FINAL = zlib.compressobj(1, zlib.DEFLATED, -15).flush()
# NOTE: crc32(ZEROS, c) is affine in c, so it is a constant xor the columns of c's set bits.
_ZERO_CRC = zlib.crc32(ZEROS)
_ZERO_CRC_COLUMNS = [zlib.crc32(ZEROS, 1 << bit) ^ _ZERO_CRC for bit in range(32)]


def _crc_after_zeros(crc: int) -> int:
    """zlib.crc32(ZEROS, crc), without going through a megabyte."""
    result, bit = _ZERO_CRC, 0
    while crc:
        if crc & 1:
            result ^= _ZERO_CRC_COLUMNS[bit]
        crc >>= 1
        bit += 1
    return result


def _shrinks(data: bytes, packed: bytes) -> bool:
    return len(packed) < len(data) - len(data) // 16


def _stored(piece: bytes) -> Iterator[bytes | memoryview]:
    """`piece` as stored deflate blocks (at most 65,535 bytes each), starting on a byte boundary."""
    view = memoryview(piece)
    for start in range(0, len(piece), 0xFFFF):
        block = view[start:start + 0xFFFF]
        yield STORED_BLOCK.pack(0, len(block), len(block) ^ 0xFFFF)
        yield block


class _Stream:
    """One member's deflate stream, written piece by piece, with its CRC and uncompressed size."""

    def __init__(self, write):
        self.write = write
        self.crc = 0
        self.size = 0
        #: Pieces stored in a row because they did not compress; 0 while deflating.
        self.stored = 0

    def add(self, piece: bytes) -> None:
        self.size += len(piece)
        if piece == ZEROS:
            self.crc = _crc_after_zeros(self.crc)
            self.stored = 0  # what follows a hole may be other data: it is deflated afresh
            self.write(ZERO_SEGMENT)
            return
        self.crc = zlib.crc32(piece, self.crc)
        if self.stored and not self._try_again(piece):
            self.stored += 1
        else:
            packed = _segment(piece, 1)
            if _shrinks(piece, packed):
                self.stored = 0
                self.write(packed)
                return
            self.stored = 1
        for part in _stored(piece):
            self.write(part)

    def _try_again(self, piece: bytes) -> bool:
        """Whether to deflate this piece though the last ones did not compress: every PROBE_EVERY-th
        is tried, if a sample of it compresses."""
        if self.stored % PROBE_EVERY:
            return False
        sample = piece[:SAMPLE]
        return _shrinks(sample, _segment(sample, 1))


def _read(fd: int, size: int, offset: int) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise Unreadable(str(exc)) from exc


def _pieces(fd: int, size: int) -> Iterator[bytes]:
    """The file's first `size` bytes, PIECE at a time; a whole piece in a hole is ZEROS, unread."""
    position = 0
    while position < size:
        try:
            data = min(os.lseek(fd, position, os.SEEK_DATA), size)
        except OSError as exc:
            # ENXIO: a hole up to the end; anything else: the file system cannot tell, so read it all.
            data = size if exc.errno == errno.ENXIO else position
        for _ in range((data - position) // PIECE):
            yield ZEROS
            position += PIECE
        if position >= size:
            return
        piece = _read(fd, min(PIECE, size - position), position)
        if not piece:
            return  # it shrank since it was measured
        yield piece
        position += len(piece)


def _dos_time(mtime: float) -> tuple[int, int]:
    """(time, date) fields; a time the format cannot hold becomes its nearest end (1980 or 2107)."""
    try:
        year, month, day, hour, minute, second = time.localtime(mtime)[:6]
    except (OverflowError, OSError, ValueError):
        year, month, day, hour, minute, second = (1980, 1, 1, 0, 0, 0) if mtime < 0 else (2107, 12, 31, 23, 59, 58)
    if year < 1980:
        year, month, day, hour, minute, second = 1980, 1, 1, 0, 0, 0
    elif year > 2107:
        year, month, day, hour, minute, second = 2107, 12, 31, 23, 59, 58
    return hour << 11 | minute << 5 | second // 2, (year - 1980) << 9 | month << 5 | day


@dataclass(slots=True)
class _Entry:
    name: bytes
    flags: int
    time: int
    date: int
    mode: int
    offset: int
    #: Whether its local header carries ZIP64 sizes (decided before its data is written).
    big: bool
    method: int = DEFLATED
    crc: int = 0
    compressed: int = 0
    size: int = 0

    def local(self) -> bytes:
        extra = struct.pack("<HHQQ", 1, 16, self.size, self.compressed) if self.big else b""
        sizes = (LIMIT, LIMIT) if self.big else (self.compressed, self.size)
        return LOCAL.pack(0x04034B50, 45 if self.big else 20, self.flags, self.method, self.time, self.date,
                          self.crc, *sizes, len(self.name), len(extra)) + self.name + extra

    def central(self) -> bytes:
        # NOTE: sizes go where the local header has them, so readers that compare the two agree.
        wide = [self.size, self.compressed] if self.big else []
        if self.offset >= LIMIT:
            wide.append(self.offset)
        extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
        sizes = (LIMIT, LIMIT) if self.big else (self.compressed, self.size)
        version = 45 if wide else 20
        return CENTRAL.pack(0x02014B50, UNIX | version, version, self.flags, self.method, self.time, self.date,
                            self.crc, *sizes, len(self.name), len(extra), 0, 0, 0,
                            (stat.S_IFREG | stat.S_IMODE(self.mode)) << 16, min(self.offset, LIMIT)) + self.name + extra


class ZipWriter:
    """Writes a zip to `out`, a binary file open for writing and seeking; `close()` ends it."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.entries: list[_Entry] = []

    def add(self, name: str, fd: int, info: os.stat_result) -> None:
        """Append the regular file open at `fd` (its first info.st_size bytes) as `name`.

        Raises Unreadable, leaving the archive as it was, when reading the file fails.
        """
        encoded = name.encode()
        if len(encoded) > MAX_NAME:
            raise ValueError(f"a zip entry's name holds at most {MAX_NAME} bytes")
        entry = _Entry(encoded, 0 if name.isascii() else UTF8_NAME, *_dos_time(info.st_mtime), info.st_mode,
                       self.out.tell(), big=info.st_size * 1.05 > LIMIT)
        if info.st_size <= PIECE:
            self._add_small(entry, fd, info.st_size)
        else:
            self._add_large(entry, fd, info.st_size)
        self.entries.append(entry)

    def _add_small(self, entry: _Entry, fd: int, size: int) -> None:
        """A member of one piece is built in memory and written with its final header at once."""
        data = b"".join(_pieces(fd, size))
        packed = _segment(data, 1) + FINAL
        entry.crc, entry.size = zlib.crc32(data), len(data)
        if len(packed) >= len(data):
            entry.method, packed = STORED, data
        entry.compressed = len(packed)
        self.out.write(entry.local() + packed)

    def _add_large(self, entry: _Entry, fd: int, size: int) -> None:
        """A larger member streams to the file; its header is rewritten once its sizes are known."""
        header = entry.local()
        self.out.write(header)
        stream = _Stream(self.out.write)
        try:
            for piece in _pieces(fd, size):
                stream.add(piece)
        except Unreadable:
            self.out.seek(entry.offset)
            self.out.truncate()
            raise
        self.out.write(FINAL)
        entry.crc, entry.size = stream.crc, stream.size
        entry.compressed = self.out.tell() - entry.offset - len(header)
        if not entry.big and max(entry.size, entry.compressed) >= LIMIT:
            raise ValueError(f"{entry.name!r} outgrew its header")  # the 5 % margin makes this unreachable
        self.out.seek(entry.offset)
        self.out.write(entry.local())
        self.out.seek(0, os.SEEK_END)

    def close(self) -> None:
        """Write the central directory and the end records (ZIP64 ones when needed)."""
        start = self.out.tell()
        for entry in self.entries:
            self.out.write(entry.central())
        size, count = self.out.tell() - start, len(self.entries)
        if count >= 0xFFFF or size >= LIMIT or start >= LIMIT:
            end64 = self.out.tell()
            self.out.write(END64.pack(0x06064B50, END64.size - 12, UNIX | 45, 45, 0, 0, count, count, size, start))
            self.out.write(LOCATOR64.pack(0x07064B50, 0, end64, 1))
        self.out.write(END.pack(0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF), min(size, LIMIT),
                                min(start, LIMIT), 0))
