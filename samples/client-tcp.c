/* client-tcp: sends each line of stdin to server-tcp and prints the reply.
 *
 * usage: client-tcp [HOST [PORT]]   (default 127.0.0.1 11111)
 * Each line (with its newline) goes out in one write() on the socket, so a
 * wtrec capture shows one event per line. Works with stdin from a pipe.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    const char *port = argc > 2 ? argv[2] : "11111";
    struct addrinfo hints, *found;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0) {
        fprintf(stderr, "client-tcp: %s: %s\n", host, gai_strerror(rc));
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
        fprintf(stderr, "client-tcp: cannot connect to %s:%s\n", host, port);
        return 1;
    }
    fprintf(stderr, "client-tcp: connected to %s:%s on fd %d\n", host, port, sock);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (write(sock, line, (size_t)len) != len) {
            perror("client-tcp: write");
            return 1;
        }
        char reply[4096];
        ssize_t got = read(sock, reply, sizeof(reply) - 1);
        if (got <= 0) {
            fprintf(stderr, "client-tcp: server closed the connection\n");
            return 1;
        }
        fwrite(reply, 1, (size_t)got, stdout);
        fflush(stdout);
    }
    free(line);
    close(sock);
    return 0;
}
