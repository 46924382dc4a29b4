/* Cost measurement: N SSL_write (or SSL_write_ex) calls of SIZE bytes on one
 * TLS connection; prints nanoseconds per call. usage: PORT N SIZE [ex] */
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int port = atoi(argv[1]);
    long n = atol(argv[2]);
    int size = atoi(argv[3]);
    int ex = argc > 4;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0) { perror("connect"); return 1; }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, sock);
    if (SSL_connect(ssl) != 1) { fprintf(stderr, "handshake failed\n"); return 1; }
    char *buf = malloc(size);
    memset(buf, 'x', size);
    for (int i = 0; i < 1000; i++)
        SSL_write(ssl, buf, size);
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        size_t written;
        int ok = ex ? SSL_write_ex(ssl, buf, size, &written) : SSL_write(ssl, buf, size) == size;
        if (!ok) { fprintf(stderr, "write failed\n"); return 1; }
    }
    long long spent = now_ns() - start;
    printf("%.0f\n", (double)spent / n);
    SSL_free(ssl);
    close(sock);
    return 0;
}
