/* client-tls: the TLS 1.3 twin of client-tcp, built on wolfSSL.
 *
 * usage: client-tls [HOST [PORT]]   (default 127.0.0.1 11111)
 * Checks the server against the test certificate `make` writes next to this
 * program (server-cert.pem), then sends each line of stdin (with its newline)
 * in one wolfSSL_write and prints the reply of one wolfSSL_read, so a
 * `wtrec record --tls` capture shows one plaintext event per line. Works with
 * stdin from a pipe.
 */
#include <arpa/inet.h>
#include <libgen.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

static void beside_me(char *out, size_t size, const char *name)
{
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0) {
        snprintf(out, size, "%s", name);
        return;
    }
    self[len] = '\0';
    snprintf(out, size, "%s/%s", dirname(self), name);
}

static const char *tls_error(WOLFSSL *ssl, int ret, char *text)
{
    return wolfSSL_ERR_error_string(wolfSSL_get_error(ssl, ret), text);
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    const char *port = argc > 2 ? argv[2] : "11111";
    char ca[PATH_MAX];
    beside_me(ca, sizeof(ca), "server-cert.pem");
    wolfSSL_Init();
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
    if (ctx == NULL) {
        fprintf(stderr, "client-tls: wolfSSL_CTX_new failed\n");
        return 1;
    }
    /* The test certificate is self-signed: trusting it as the only CA is what
     * checks that we talk to server-tls. */
    if (wolfSSL_CTX_load_verify_locations(ctx, ca, NULL) != WOLFSSL_SUCCESS) {
        fprintf(stderr, "client-tls: cannot load %s (run make -C samples)\n", ca);
        return 1;
    }
    /* Said outright: builds with OpenSSL-compatible defaults verify nothing. */
    wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
    struct addrinfo hints, *found;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "client-tls: %s: %s\n", host, gai_strerror(rc));
        return 2;
    }
    int sock = -1;
    for (struct addrinfo *ai = found; ai; ai = ai->ai_next) {
        sock = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (sock < 0)
            continue;
        if (connect(sock, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(sock);
        sock = -1;
    }
    freeaddrinfo(found);
    if (sock < 0) {
        fprintf(stderr, "client-tls: cannot connect to %s:%s\n", host, port);
        return 1;
    }
    WOLFSSL *ssl = wolfSSL_new(ctx);
    char text[WOLFSSL_MAX_ERROR_SZ];
    if (ssl == NULL || wolfSSL_set_fd(ssl, sock) != WOLFSSL_SUCCESS) {
        fprintf(stderr, "client-tls: wolfSSL_new failed\n");
        return 1;
    }
    rc = wolfSSL_connect(ssl);
    if (rc != WOLFSSL_SUCCESS) {
        fprintf(stderr, "client-tls: handshake with %s:%s failed: %s\n", host, port,
                tls_error(ssl, rc, text));
        return 1;
    }
    fprintf(stderr, "client-tls: connected to %s:%s on fd %d (%s)\n", host, port, sock,
            wolfSSL_get_version(ssl));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        rc = wolfSSL_write(ssl, line, (int)len);
        if (rc != len) {
            fprintf(stderr, "client-tls: write: %s\n", tls_error(ssl, rc, text));
            return 1;
        }
        char reply[4096];
        int got = wolfSSL_read(ssl, reply, sizeof(reply) - 1);
        if (got <= 0) {
            fprintf(stderr, "client-tls: server closed the connection\n");
            return 1;
        }
        fwrite(reply, 1, (size_t)got, stdout);
        fflush(stdout);
    }
    free(line);
    wolfSSL_shutdown(ssl);
    wolfSSL_free(ssl);
    wolfSSL_CTX_free(ctx);
    wolfSSL_Cleanup();
    close(sock);
    return 0;
}
