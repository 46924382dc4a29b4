"""show: golden outputs for what a person reads, and escaping."""

import io
import json
import os
import re

import pytest
from conftest import GOLDEN, build_capture, make_header, sample_records
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from wtrec.cli.app import app
from wtrec.format import CaptureWriter
from wtrec.tools.render import (
    escape_bytes,
    hex_lines,
    iter_quoted_lines,
    quoted_block,
    quoted_lines,
)

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("utc")  # golden times are UTC


@pytest.fixture
def capture(tmp_path):
    path = tmp_path / "sample.wtrace"
    path.write_bytes(build_capture())
    return path


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("WTREC_REGEN_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


@pytest.mark.parametrize("name, args", [
    ("show.txt", []),
    ("show-hex.txt", ["--hex"]),
    ("show-json.txt", ["--json"]),
    ("show-fd3-limit1.txt", ["--fd", "3", "--limit", "1"]),
])
def test_golden(capture, name, args):
    result = runner.invoke(app, ["show", str(capture), *args])
    assert result.exit_code == 0, result.output
    check_golden(name, result.stdout)


def test_no_control_byte_reaches_the_terminal(capture):
    for args in ([], ["--hex"], ["--json"]):
        out = runner.invoke(app, ["show", str(capture), *args]).stdout
        assert not any(ord(c) < 0x20 and c != "\n" or ord(c) >= 0x7F for c in out), args


def test_color_only_when_asked_or_on_a_terminal(capture):
    plain = runner.invoke(app, ["show", str(capture)]).stdout
    colored = runner.invoke(app, ["show", str(capture), "--color", "always"]).stdout
    assert "\x1b[" not in plain
    assert "\x1b[1m" in colored and "\x1b[31m" in colored
    # The capture's own ESC bytes are still escaped when we colour.
    assert "\\x1b[31mred" in colored


def test_json_lines_carry_base64_and_text_when_utf8(capture):
    out = runner.invoke(app, ["show", str(capture), "--json"]).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["type"] == "fd" and lines[0]["remote"] == "127.0.0.1:11111"
    assert lines[1]["text"] == "hello\n" and lines[1]["data_b64"] == "aGVsbG8K"
    assert lines[1]["fd_desc"] == "tcp 127.0.0.1:52144 -> 127.0.0.1:11111"
    assert "text" not in lines[2]  # \xff is not UTF-8
    assert lines[3] == {"type": "lost", "ts_ns": 1_002_500_000,
                        "wall_ns": 1_700_000_000_002_500_000, "count": 7, "source": "ringbuf"}
    assert lines[5]["truncated"] is True and lines[5]["ret"] == -11
    assert lines[7]["type"] == "read" and lines[7]["direction"] == "in"


def test_show_reads_stdin(capture):
    result = runner.invoke(app, ["show", "-", "--limit", "1"], input=capture.read_bytes())
    assert result.exit_code == 0 and '"hello\\n"' in result.stdout


def test_show_of_a_cut_capture_prints_the_prefix_and_warns(capture, tmp_path):
    # Two frames: the first holds the first two events; the cut lands in the second.
    records = sample_records()
    out = io.BytesIO()
    writer = CaptureWriter(out, make_header())
    for record in records[:3]:
        writer.write(record)
    writer.flush()
    first_frame_ends = len(out.getvalue())
    for record in records[3:]:
        writer.write(record)
    writer.flush()
    data = out.getvalue()
    cut = tmp_path / "cut.wtrace"
    cut.write_bytes(data[:(first_frame_ends + len(data)) // 2])
    result = runner.invoke(app, ["show", str(cut)])
    assert result.exit_code == 0
    assert result.stderr == "wtrec: capture ends early after 2 events; was the recorder killed?\n"
    whole = runner.invoke(app, ["show", str(capture)]).stdout
    lines = result.stdout.splitlines()
    assert lines == whole.splitlines()[:len(lines)]
    assert [line.split()[-1] for line in lines if " pid " in line] == ["#0", "#1"]
    assert '"hello\\n"' in result.stdout


def test_escape_bytes():
    assert escape_bytes(b'a\n\t\r\x00\x1b"\\\x7f\xc3\xa9') == 'a\\n\\t\\r\\0\\x1b\\"\\\\\\x7f\\xc3\\xa9'


def test_quoted_lines_break_after_newlines_and_wrap():
    assert quoted_lines(b"one\ntwo") == ['"one\\n"', '"two"']
    assert quoted_lines(b"") == ['""']
    assert quoted_lines(b"x" * 100, width=40) == ['"' + "x" * 40 + '"', '"' + "x" * 40 + '"',
                                                  '"' + "x" * 20 + '"']


def test_hex_lines_layout():
    full, partial = hex_lines(bytes(range(0x41, 0x52)))
    assert full == "00000000  41 42 43 44 45 46 47 48  49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|"
    assert partial.startswith("00000010  51 ")
    assert partial.index("|") == full.index("|")  # the gutter lines up
    assert hex_lines(b"hello\n\x00")[0].endswith("  |hello..|")


def test_show_of_a_capture_cut_inside_its_header_is_an_error_like_every_command(capture, tmp_path):
    cut = tmp_path / "cut.wtrace"
    cut.write_bytes(capture.read_bytes()[:30])
    for command in (["show"], ["info"], ["export", "--format", "jsonl", "-o", "-"]):
        result = runner.invoke(app, [command[0], str(cut), *command[1:]])
        assert result.exit_code == 10, (command, result.output)
        assert result.stderr == ("wtrec: not a valid capture: "
                                 "the capture ends before its header record\n")


# The renderer as it was before its fast paths: what they must still give.
_OLD_LINES = re.compile(rb"[^\n]*\n|[^\n]+")
_OLD_TOKEN = re.compile(r"\\x[0-9a-f]{2}|\\.|[^\\]")
_NAMED = {0x5C: "\\\\", 0x22: '\\"', 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x00: "\\0"}
_BYTE_TEXT = [_NAMED.get(b, chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in range(256)]


def _old_wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    pieces, current, length = [], [], 0
    for token in _OLD_TOKEN.findall(text):
        if length + len(token) > width and current:
            pieces.append("".join(current))
            current, length = [], 0
        current.append(token)
        length += len(token)
    pieces.append("".join(current))
    return pieces


def _old_quoted_lines(data: bytes, width: int) -> list[str]:
    lines = []
    for line in _OLD_LINES.findall(data):
        text = "".join(_BYTE_TEXT[b] for b in line)
        lines.extend('"' + piece + '"' for piece in _old_wrap(text, width))
    return lines or ['""']


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"word ", b"\n", b"\r\n", b"\\", b'"', b"\x00", b"\x1b",
                                 b"\xc3\xa9", b"x" * 70]), max_size=60).map(b"".join),
       st.integers(4, 80))
def test_quoted_lines_cut_where_the_token_by_token_renderer_cut(data, width):
    assert quoted_lines(data, width) == _old_quoted_lines(data, width)
    assert list(iter_quoted_lines(data, width)) == _old_quoted_lines(data, width)
    assert quoted_block(data, "  ", width) == "\n".join(
        "  " + line for line in _old_quoted_lines(data, width))
    assert escape_bytes(data) == "".join(_BYTE_TEXT[b] for b in data)
