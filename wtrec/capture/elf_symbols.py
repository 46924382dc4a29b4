"""Reads the defined function symbols of an ELF file, for attaching uprobes by name.

A small bounded reader, not pyelftools: it needs only the ELF header, the
program headers (to turn a symbol's address into a file offset) and the two
symbol tables (.dynsym, and .symtab for static programs), and it must be
fast on big binaries: node exports 75,000 dynamic symbols and pyelftools
spends ~5 s decoding them one by one, where this finds the wanted names in
the string table first and only compares integers per symbol (~0.1 s).

Every offset and size read from the file is checked against the file's size
before use; a damaged or hostile file raises `ElfError`, nothing else.
"""

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
SHT_SYMTAB = 2
SHT_DYNSYM = 11
PT_LOAD = 1
PT_INTERP = 3
MAX_INTERPRETER = 4096  # a path; PATH_MAX
SHN_UNDEF = 0
STT_FUNC = 2
STT_GNU_IFUNC = 10
STB_GLOBAL = 1
STB_WEAK = 2
# More than any real binary holds (node: 75k dynamic, ~300k static symbols).
MAX_SYMBOLS = 10_000_000

# ELF e_machine values for the names the recorder prints.
MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv"}


class ElfError(Exception):
    """The file is not an ELF object this reader can use; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ElfSymbol:
    """A defined function: its name, address, file offset, and which table held it."""

    name: str
    address: int
    file_offset: int | None
    table: str  # ".dynsym" or ".symtab"


@dataclass(frozen=True)
class _Layout:
    """Struct formats for one ELF class and byte order."""

    header: struct.Struct   # e_type .. e_shstrndx, after e_ident
    program: struct.Struct
    section: struct.Struct
    symbol: struct.Struct
    is64: bool


def _layout(elf_class: int, data: int) -> _Layout:
    order = "<" if data == 1 else ">"
    if elf_class == 2:
        return _Layout(struct.Struct(order + "HHIQQQIHHHHHH"), struct.Struct(order + "IIQQQQQQ"),
                       struct.Struct(order + "IIQQQQIIQQ"), struct.Struct(order + "IBBHQQ"), True)
    return _Layout(struct.Struct(order + "HHIIIIIHHHHHH"), struct.Struct(order + "IIIIIIII"),
                   struct.Struct(order + "IIIIIIIIII"), struct.Struct(order + "IIIBBH"), False)


def is_elf(path: str) -> bool:
    """True when the file starts with the ELF magic (cheap, for skipping fonts and locales)."""
    try:
        with open(path, "rb") as file:
            return file.read(4) == ELF_MAGIC
    except OSError:
        return False


class ElfFile:
    """An ELF file mapped read-only; use as a context manager."""

    def __init__(self, path: str):
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ElfError(exc.strerror or str(exc)) from exc
        try:
            size = os.fstat(fd).st_size
            if size < 64:
                raise ElfError("too short to be an ELF file")
            self._data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ElfError(f"cannot map it: {exc}") from exc
        finally:
            os.close(fd)
        try:
            self._parse_header()
        except ElfError:
            self._data.close()
            raise

    def __enter__(self) -> "ElfFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self._data.close()

    def _parse_header(self) -> None:
        ident = self._data[:16]
        if ident[:4] != ELF_MAGIC:
            raise ElfError("not an ELF file")
        if ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise ElfError("unknown ELF class or byte order")
        self._layout = _layout(ident[4], ident[5])
        fields = self._unpack(self._layout.header, 16)
        (_type, self.machine, _version, _entry, self._phoff, self._shoff, _flags, _ehsize,
         self._phentsize, self._phnum, self._shentsize, self._shnum, _shstrndx) = fields
        self.is64 = self._layout.is64

    @property
    def machine_name(self) -> str:
        return MACHINES.get(self.machine, f"machine {self.machine}")

    def _unpack(self, fmt: struct.Struct, offset: int) -> tuple:
        if offset < 0 or offset + fmt.size > len(self._data):
            raise ElfError(f"a header at offset {offset} runs past the end of the file")
        return fmt.unpack_from(self._data, offset)

    def _table(self, offset: int, count: int, entsize: int, fmt: struct.Struct) -> Iterable[tuple]:
        if count == 0:
            return
        if entsize < fmt.size:
            raise ElfError(f"table entries of {entsize} bytes, {fmt.size} expected")
        if offset < 0 or offset + count * entsize > len(self._data):
            raise ElfError(f"a table at offset {offset} runs past the end of the file")
        if entsize == fmt.size:  # the usual case, and much faster
            yield from fmt.iter_unpack(self._data[offset:offset + count * entsize])
            return
        for index in range(count):
            yield fmt.unpack_from(self._data, offset + index * entsize)

    def _segments(self) -> Iterator[tuple[int, int, int, int]]:
        """(type, file offset, vaddr, file size) of each program header."""
        for fields in self._table(self._phoff, self._phnum, self._phentsize, self._layout.program):
            if self.is64:
                p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = fields[:6]
            else:
                p_type, p_offset, p_vaddr, _paddr, p_filesz = fields[:5]
            yield p_type, p_offset, p_vaddr, p_filesz

    def _loads(self) -> list[tuple[int, int, int]]:
        """(vaddr, file offset, file size) of each PT_LOAD segment."""
        return [(vaddr, offset, size) for kind, offset, vaddr, size in self._segments()
                if kind == PT_LOAD]

    def interpreter(self) -> str | None:
        """The program interpreter (PT_INTERP, the dynamic loader) a dynamically linked
        program names, or None for a static program or a library."""
        for kind, offset, _vaddr, size in self._segments():
            if kind == PT_INTERP:
                if size > MAX_INTERPRETER:
                    raise ElfError(f"an interpreter path of {size} bytes")
                path = self._bytes(offset, size).split(b"\0", 1)[0]
                return os.fsdecode(path) if path else None
        return None

    def _sections(self) -> list[tuple[int, int, int, int, int]]:
        """(type, offset, size, link, entsize) of each section."""
        sections = []
        for fields in self._table(self._shoff, self._shnum, self._shentsize, self._layout.section):
            _name, sh_type, _flags, _addr, sh_offset, sh_size, sh_link, _info, _align, sh_entsize = fields
            sections.append((sh_type, sh_offset, sh_size, sh_link, sh_entsize))
        return sections

    def _bytes(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > len(self._data):
            raise ElfError(f"a section at offset {offset} runs past the end of the file")
        return self._data[offset:offset + size]

    def defined_functions(self, names: Iterable[str]) -> list[ElfSymbol]:
        """The wanted names that a symbol table defines as global or weak functions.

        .dynsym first; .symtab (static programs, unstripped binaries) adds
        names .dynsym lacks. Raises ElfError when the file has no section
        headers to find its tables by.
        """
        wanted = {name.encode() for name in names}
        if self._shnum == 0:
            raise ElfError("no section headers (stripped of them): symbols cannot be found")
        sections = self._sections()
        loads = self._loads()
        found: dict[str, ElfSymbol] = {}
        for table_type, table_name in ((SHT_DYNSYM, ".dynsym"), (SHT_SYMTAB, ".symtab")):
            for sh_type, offset, size, link, entsize in sections:
                remaining = {name for name in wanted if name.decode() not in found}
                if sh_type != table_type or link >= len(sections) or not remaining:
                    continue
                for symbol in self._find_in_table(offset, size, entsize, sections[link], remaining,
                                                  table_name, loads):
                    found.setdefault(symbol.name, symbol)
        return sorted(found.values(), key=lambda symbol: (symbol.address, symbol.name))

    def _find_in_table(self, offset: int, size: int, entsize: int, strtab: tuple, wanted: set[bytes],
                       table_name: str, loads: list) -> list[ElfSymbol]:
        _type, str_offset, str_size, _link, _entsize = strtab
        strings = self._bytes(str_offset, str_size)
        # Find each wanted name in the string table first, so the symbols need
        # only an integer comparison each. Every occurrence counts, also as
        # the tail of a longer name: linkers share suffixes, so SSL_write's
        # st_name may point into "wolfSSL_write".
        name_at: dict[int, bytes] = {}
        for name in wanted:
            start = strings.find(name + b"\0")
            while start != -1:
                name_at[start] = name
                start = strings.find(name + b"\0", start + 1)
        if not name_at:
            return []
        if entsize == 0:
            raise ElfError(f"{table_name} declares entries of 0 bytes")
        count = size // entsize
        if count > MAX_SYMBOLS:
            raise ElfError(f"{table_name} declares {count} symbols")
        symbols = []
        for fields in self._table(offset, count, entsize, self._layout.symbol):
            if self.is64:
                st_name, st_info, _other, st_shndx, st_value, _size = fields
            else:
                st_name, st_value, _size, st_info, _other, st_shndx = fields
            found_name = name_at.get(st_name)
            if found_name is None or st_shndx == SHN_UNDEF:
                continue
            if st_info & 0xF not in (STT_FUNC, STT_GNU_IFUNC) or st_info >> 4 not in (STB_GLOBAL, STB_WEAK):
                continue
            offset_in_file = _file_offset(st_value, loads)
            symbols.append(ElfSymbol(found_name.decode(), st_value, offset_in_file, table_name))
        return symbols


def _file_offset(address: int, loads: list[tuple[int, int, int]]) -> int | None:
    """Where the code at `address` sits in the file (what a uprobe is attached at)."""
    for vaddr, offset, filesz in loads:
        if vaddr <= address < vaddr + filesz:
            return address - vaddr + offset
    return None
