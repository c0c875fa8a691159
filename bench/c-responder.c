/* The ceiling of the nginx → FastCGI → responder architecture, for bench/http.sh: a minimal
 * multi-threaded libfcgi responder that answers every request with a fixed small JSON body.
 * Same threading model as kv-fcgi (N threads, one FCGX_Request each, per-request connections).
 * Build: gcc -O2 -pthread -o c-responder c-responder.c -lfcgi
 * Run:   c-responder SOCKET_PATH THREADS */
#include <fcgiapp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int listen_fd;

static void *worker(void *arg) {
    (void)arg;
    FCGX_Request request;
    FCGX_InitRequest(&request, listen_fd, 0);
    static const char response[] =
        "Status: 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"value\":1}";
    char drain[65536];
    while (FCGX_Accept_r(&request) >= 0) {
        while (FCGX_GetStr(drain, sizeof drain, request.in) > 0) {}
        FCGX_PutStr(response, sizeof response - 1, request.out);
        FCGX_Finish_r(&request);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s SOCKET THREADS\n", argv[0]); return 2; }
    int threads = atoi(argv[2]);
    FCGX_Init();
    listen_fd = FCGX_OpenSocket(argv[1], 1024);
    if (listen_fd < 0) { perror("FCGX_OpenSocket"); return 1; }
    chmod(argv[1], 0666);
    pthread_t ids[1024];
    for (int i = 0; i < threads && i < 1024; i++) pthread_create(&ids[i], NULL, worker, NULL);
    for (int i = 0; i < threads && i < 1024; i++) pthread_join(ids[i], NULL);
    return 0;
}
