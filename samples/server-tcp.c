/* server-tcp: a TCP echo-style server for trying wtrec.
 *
 * Listens on 127.0.0.1 (port 11111, or argv[1]), serves one connection after
 * another, and answers every read with a canned response. Stops on SIGTERM.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_PORT 11111
static const char reply[] = "I hear ya fa shizzle!\n";

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : DEFAULT_PORT;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "server-tcp: bad port %s\n", argv[1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) {
        perror("server-tcp: socket");
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
        perror("server-tcp: bind");
        return 1;
    }
    if (listen(listener, 16) < 0) {
        perror("server-tcp: listen");
        return 1;
    }
    fprintf(stderr, "server-tcp: listening on 127.0.0.1:%d\n", port);
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) {
            perror("server-tcp: accept");
            continue;
        }
        char buf[4096];
        ssize_t got;
        while ((got = read(conn, buf, sizeof(buf))) > 0) {
            if (write(conn, reply, sizeof(reply) - 1) < 0)
                break;
        }
        close(conn);
    }
}
