/* writeloop: N writes of SIZE bytes to a file, timed from inside.
 *
 * usage: writeloop [N [SIZE [PATH]]]   (default 200000 64 /dev/null)
 * Prints "ns_per_write <float>" on stdout: the loop alone, without process
 * start-up, so traced and untraced runs compare the write() cost itself.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    long size = argc > 2 ? atol(argv[2]) : 64;
    const char *path = argc > 3 ? argv[3] : "/dev/null";
    char *buf = malloc(size);
    memset(buf, 'x', size);
    int fd = open(path, O_WRONLY);
    if (fd < 0 || !buf) {
        perror("writeloop");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        if (write(fd, buf, size) != size) {
            perror("writeloop: write");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("ns_per_write %.1f\n", ns / n);
    return 0;
}
