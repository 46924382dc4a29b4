"""The ring buffer reader's consumer position, as the kernel sees it (no root needed).

The kernel reads the consumer position at every reservation; a value it
reads that was never written (struct.pack_into zeroes its target before
packing) makes a nearly empty ring look full, and events are refused and
counted lost. A C watcher in another process reads the position without
pause while the reader advances it: every value it sees must be one the
reader wrote.
"""

import os
import shutil
import subprocess

import pytest

from wtrec.capture.probe import PAGE_SIZE, RingReader

WATCHER = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
int main(int argc, char **argv)
{
    int fd = atoi(argv[1]);
    uint64_t start = strtoull(argv[2], 0, 10), end = strtoull(argv[3], 0, 10);
    volatile uint64_t *pos = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
    if (pos == MAP_FAILED)
        return 2;
    puts("ready");
    fflush(stdout);
    long reads = 0, strange = 0;
    uint64_t value;
    while ((value = *pos) != end) {
        reads++;
        if (value < start || value > end || (value - start) % 8)
            strange++;
    }
    printf("%ld %ld\n", reads, strange);
    return 0;
}
"""


def test_the_kernel_never_sees_a_consumer_position_that_was_not_written(tmp_path):
    if shutil.which("cc") is None:
        pytest.fail("cc is needed (scripts/bootstrap setup installs gcc)")
    (tmp_path / "watch.c").write_text(WATCHER)
    built = subprocess.run(["cc", "-O2", "-o", str(tmp_path / "watch"), str(tmp_path / "watch.c")],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    # A memfd laid out like a ring buffer map: consumer page, producer page, data twice.
    fd = os.memfd_create("ring")
    os.ftruncate(fd, 4 * PAGE_SIZE)
    reader = RingReader(fd, PAGE_SIZE)
    start, steps = 1 << 40, 300_000
    reader.advance(start)
    watcher = subprocess.Popen([str(tmp_path / "watch"), str(fd), str(start),
                                str(start + 8 * steps)], pass_fds=(fd,), stdout=subprocess.PIPE,
                               text=True)
    try:
        assert watcher.stdout.readline() == "ready\n"
        for _ in range(steps):
            reader.advance(8)
        out, _ = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
        reader.close()
        os.close(fd)
    reads, strange = map(int, out.split())
    assert reads > 0
    assert strange == 0, f"{strange} of {reads} reads saw a position never written"
