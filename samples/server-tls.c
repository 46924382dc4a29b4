/* server-tls: the TLS 1.3 twin of server-tcp, built on wolfSSL.
 *
 * usage: server-tls [PORT [CERT KEY]]   (default 11111, and the test
 * certificate `make` writes next to this program: server-cert.pem and
 * server-key.pem). Listens on 127.0.0.1, serves one connection after another,
 * and answers every wolfSSL_read with one wolfSSL_write of a canned response.
 * Stops on SIGTERM. On the wire everything is ciphertext; `wtrec record --tls`
 * sees the plaintext at wolfSSL_read/wolfSSL_write.
 */
#include <arpa/inet.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#define DEFAULT_PORT 11111
static const char reply[] = "I hear ya fa shizzle!\n";

/* The default certificate lives beside the executable, so the server works
 * from any working directory. */
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

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : DEFAULT_PORT;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "server-tls: bad port %s\n", argv[1]);
        return 2;
    }
    char cert[PATH_MAX], key[PATH_MAX];
    if (argc > 3) {
        snprintf(cert, sizeof(cert), "%s", argv[2]);
        snprintf(key, sizeof(key), "%s", argv[3]);
    } else {
        beside_me(cert, sizeof(cert), "server-cert.pem");
        beside_me(key, sizeof(key), "server-key.pem");
    }
    signal(SIGPIPE, SIG_IGN);
    wolfSSL_Init();
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLSv1_3_server_method());
    if (ctx == NULL) {
        fprintf(stderr, "server-tls: wolfSSL_CTX_new failed\n");
        return 1;
    }
    if (wolfSSL_CTX_use_certificate_file(ctx, cert, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS
        || wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
        fprintf(stderr, "server-tls: cannot load %s and %s (run make -C samples)\n", cert, key);
        return 1;
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) {
        perror("server-tls: socket");
        return 1;
    }
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        perror("server-tls: bind");
        return 1;
    }
    if (listen(listener, 16) < 0) {
        perror("server-tls: listen");
        return 1;
    }
    fprintf(stderr, "server-tls: listening on 127.0.0.1:%d\n", port);
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) {
            perror("server-tls: accept");
            continue;
        }
        WOLFSSL *ssl = wolfSSL_new(ctx);
        if (ssl == NULL || wolfSSL_set_fd(ssl, conn) != WOLFSSL_SUCCESS) {
            fprintf(stderr, "server-tls: wolfSSL_new failed\n");
            wolfSSL_free(ssl);
            close(conn);
            continue;
        }
        if (wolfSSL_accept(ssl) != WOLFSSL_SUCCESS) {
            int err = wolfSSL_get_error(ssl, 0);
            char text[WOLFSSL_MAX_ERROR_SZ];
            fprintf(stderr, "server-tls: handshake failed: %s\n", wolfSSL_ERR_error_string(err, text));
        } else {
            char buf[4096];
            while (wolfSSL_read(ssl, buf, sizeof(buf)) > 0) {
                if (wolfSSL_write(ssl, reply, sizeof(reply) - 1) <= 0)
                    break;
            }
            wolfSSL_shutdown(ssl);
        }
        wolfSSL_free(ssl);
        close(conn);
    }
}
