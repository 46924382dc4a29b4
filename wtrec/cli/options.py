"""Option types shared by the commands, and the choices they take."""

import os
import sys
from enum import Enum
from typing import Annotated

import typer


class ColorMode(str, Enum):
    auto = "auto"
    always = "always"
    never = "never"


class Direction(str, Enum):
    out = "out"
    into = "in"


class Layer(str, Enum):
    all = "all"
    tls = "tls"
    syscall = "syscall"


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    raw = "raw"
    pcapng = "pcapng"
    parquet = "parquet"


def use_color(mode: ColorMode) -> bool:
    """Colour on a terminal only (and never with NO_COLOR), unless forced."""
    if mode is ColorMode.always:
        return True
    if mode is ColorMode.never:
        return False
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def as_tuple(values: list | None) -> tuple:
    return tuple(values or ())


def layers_of(layer: Layer) -> tuple[str, ...]:
    """--layer as a Selection's layers: () for all."""
    return () if layer is Layer.all else (layer.value,)


FileArg = Annotated[str, typer.Argument(help="Capture file, or - for stdin.")]
FilesArg = Annotated[list[str], typer.Argument(help="Capture files, or - for stdin.")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Result file, or - for stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing result file.")]
PidOpt = Annotated[list[int] | None, typer.Option("--pid", help="Only this pid or tid; repeatable.")]
CommOpt = Annotated[list[str] | None, typer.Option("--comm", help="Only this comm; repeatable.")]
FdOpt = Annotated[list[int] | None, typer.Option("--fd", help="Only this fd; repeatable.")]
ColorOpt = Annotated[ColorMode, typer.Option("--color", help="Colour the output.")]
LayerOpt = Annotated[Layer, typer.Option(
    "--layer", help="tls: only TLS library calls (their plaintext, from record --tls); "
                    "syscall: only syscalls; all: both, each named.")]
DirectionOpt = Annotated[Direction, typer.Option(
    "--direction", help="out: what the process sent (default); in: what it received.")]
