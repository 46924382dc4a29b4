/* writeloop: N calls of SIZE bytes, timed from inside.
 *
 * usage: writeloop [N [SIZE [write|writev|sendto [RATE]]]]   (default 200000 64 write)
 * write and writev go to /dev/null (writev in two iovecs); sendto sends UDP
 * datagrams to 127.0.0.1:9 (nothing needs to listen). Prints
 * "ns_per_call <float>" on stdout: the loop alone, without process start-up,
 * so traced and untraced runs compare the syscall cost itself.
 * With RATE (calls per second), the loop is paced to it (checked every 256
 * calls), for a sustained-load test; "ns_per_call" then shows the pace held.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    long size = argc > 2 ? atol(argv[2]) : 64;
    const char *mode = argc > 3 ? argv[3] : "write";
    double rate = argc > 4 ? atof(argv[4]) : 0;
    char *buf = malloc(size);
    if (!buf)
        return 1;
    memset(buf, 'x', size);
    int fd;
    struct sockaddr_in to;
    memset(&to, 0, sizeof(to));
    to.sin_family = AF_INET;
    to.sin_port = htons(9);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (strcmp(mode, "sendto") == 0)
        fd = socket(AF_INET, SOCK_DGRAM, 0);
    else
        fd = open("/dev/null", O_WRONLY);
    if (fd < 0) {
        perror("writeloop");
        return 1;
    }
    struct iovec iov[2] = {{buf, size / 2}, {buf + size / 2, size - size / 2}};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        ssize_t done;
        if (rate > 0 && (i & 255) == 0) {
            // Ahead of the pace: sleep until due (a busy wait would take the
            // CPU the recorder needs), in bursts of 256 calls.
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double ahead = i / rate - ((t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
            if (ahead > 0) {
                struct timespec nap = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
                nanosleep(&nap, 0);
            }
        }
        if (mode[0] == 's')
            done = sendto(fd, buf, size, 0, (struct sockaddr *)&to, sizeof(to));
        else if (strcmp(mode, "writev") == 0)
            done = writev(fd, iov, 2);
        else
            done = write(fd, buf, size);
        if (done != size) {
            perror("writeloop");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("ns_per_call %.1f\n", ns / n);
    return 0;
}
