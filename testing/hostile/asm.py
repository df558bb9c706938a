"""A tiny pickle assembler: hand-built opcode streams for the hostile corpus.

``pickle.dumps`` only emits what Python itself would; attacks live in the streams it never writes
(INST/OBJ, STACK_GLOBAL over memoised strings, BUILD that plants ``__setstate__``, ...). ``Asm`` writes
opcodes one by one for a chosen protocol, so each corpus case says exactly which bytes it contains.
"""

from __future__ import annotations

import struct


class Asm:
    """Append opcodes; ``bytes()`` closes the stream with STOP (and a PROTO header for protocol >= 2)."""

    def __init__(self, proto: int, memo_start: int = 0) -> None:
        self.proto = proto
        self.out = bytearray()
        self._memo = self._memo_start = memo_start  # high: splice into a stream with its own memo

    # -- values ---------------------------------------------------------------------------------------
    def string(self, s: str) -> Asm:
        data = s.encode()
        if self.proto == 0:
            self.out += b"V" + s.encode("raw_unicode_escape") + b"\n"  # UNICODE
        elif self.proto >= 4 and len(data) < 256:
            self.out += b"\x8c" + bytes([len(data)]) + data  # SHORT_BINUNICODE
        else:
            self.out += b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE
        return self

    def raw_bytes(self, b: bytes) -> Asm:
        if self.proto >= 3:
            self.out += b"B" + struct.pack("<I", len(b)) + b  # BINBYTES
        else:  # protocol < 3 has no bytes type; latin-1 string via _codecs.encode, as pickle does
            self.glob("_codecs", "encode").mark().string(b.decode("latin-1")).string(
                "latin1"
            ).tuple_().reduce()
        return self

    def int_(self, n: int) -> Asm:
        if self.proto == 0:
            self.out += b"I" + str(n).encode() + b"\n"
        else:
            self.out += b"J" + struct.pack("<i", n)  # BININT
        return self

    def none(self) -> Asm:
        self.out += b"N"
        return self

    def mark(self) -> Asm:
        self.out += b"("
        return self

    def tuple_(self) -> Asm:
        """TUPLE: everything pushed since the last MARK."""
        self.out += b"t"
        return self

    def empty_tuple(self) -> Asm:
        self.out += b")" if self.proto >= 1 else b"(t"
        return self

    def list_(self) -> Asm:
        self.out += b"l"  # LIST from MARK
        return self

    def empty_dict(self) -> Asm:
        self.out += b"}" if self.proto >= 1 else b"(d"
        return self

    def setitem(self) -> Asm:
        self.out += b"s"
        return self

    def pop(self) -> Asm:
        self.out += b"0"
        return self

    # -- references -----------------------------------------------------------------------------------
    def glob(self, module: str, name: str) -> Asm:
        """GLOBAL for protocols 0-3, STACK_GLOBAL for 4-5 (how pickle itself writes them)."""
        if self.proto >= 4:
            self.string(module).string(name)
            self.out += b"\x93"
        else:
            self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def global_opcode(self, module: str, name: str) -> Asm:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def stack_global(self) -> Asm:
        self.out += b"\x93"
        return self

    def put(self) -> int:
        """Store the top of stack in the memo; returns its index."""
        idx = self._memo
        self._memo += 1
        if self.proto >= 4 and self._memo_start == 0:  # MEMOIZE indexes by memo length
            self.out += b"\x94"  # MEMOIZE
        elif self.proto >= 1:
            self.out += b"r" + struct.pack("<I", idx)  # LONG_BINPUT
        else:
            self.out += b"p" + str(idx).encode() + b"\n"
        return idx

    def get(self, idx: int) -> Asm:
        if self.proto >= 1:
            self.out += b"j" + struct.pack("<I", idx)  # LONG_BINGET
        else:
            self.out += b"g" + str(idx).encode() + b"\n"
        return self

    # -- calls ----------------------------------------------------------------------------------------
    def reduce(self) -> Asm:
        self.out += b"R"
        return self

    def build(self) -> Asm:
        self.out += b"b"
        return self

    def newobj(self) -> Asm:
        self.out += b"\x81"
        return self

    def newobj_ex(self) -> Asm:
        self.out += b"\x92"
        return self

    def inst(self, module: str, name: str) -> Asm:
        self.out += b"i" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def obj(self) -> Asm:
        self.out += b"o"
        return self

    def call(self, module: str, name: str, *args: str) -> Asm:
        """module.name(*args) with string arguments: GLOBAL, args tuple, REDUCE."""
        self.glob(module, name).mark()
        for a in args:
            self.string(a)
        return self.tuple_().reduce()

    def body(self) -> bytes:
        """The opcodes alone (no PROTO, no STOP), for splicing into another stream."""
        return bytes(self.out)

    def bytes(self) -> bytes:
        head = b"\x80" + bytes([self.proto]) if self.proto >= 2 else b""
        return head + bytes(self.out) + b"."
