/* The bare cost of a uprobe (and uretprobe) here: N calls of an empty
 * function; prints ns per call. usage: N */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) int probed(int x) { __asm__ volatile("" ::: "memory"); return x + 1; }

int main(int argc, char **argv)
{
    long n = atol(argv[1]);
    struct timespec a, b;
    int acc = 0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (long i = 0; i < n; i++)
        acc = probed(acc);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    printf("%.0f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n + 0 * acc);
    return 0;
}
