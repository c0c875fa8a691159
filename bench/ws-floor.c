// The floor of kv-ws's place in the stack, for bench/ws.sh: a WebSocket server in C, on a
// Unix-domain socket behind the same nginx, that does the least a live-update server there
// can do. It answers the subset of kv-ws's protocol bench/ws_load.py speaks: `subscribe` adds
// the connection to the key's subscribers, `set` sends the `value` message kv-ws would send to
// each of them (framed once, one write() per subscriber, as kv-ws does), and `get` is answered
// with its own text. No JSON parser, no allocation on the way out.
// With STORE_SOCKET (kv-stored's), `get` and `set` also take the store hop kv-ws takes: each
// is sent to kv-stored as a RESP command, a tick's commands in one write, and a `get` is
// answered with the `value` or `no-value` message made of the store's reply, in order.
//
// What it shows: what any server in kv-ws's place gets, since nginx's relay of each frame over
// a Unix socket (which nchan, inside nginx, does not need) and the store hop (which the
// baseline echo does not take) are the same for it as for kv-ws. Bench-only: it trusts its clients (bench/ws_load.py's messages, in compact JSON)
// and the store.
// Usage: ws-floor SOCKET_PATH [STORE_SOCKET]     Build: cc -O2 -o ws-floor bench/ws-floor.c -lcrypto
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

enum { INBUF = 1 << 16 };

typedef struct Conn {
    int fd, upgraded, dead;
    size_t inlen, outlen, outcap;
    unsigned char in[INBUF];
    unsigned char *out;  // what the socket did not take yet, in order
} Conn;

typedef struct Subs { char *key; Conn **conns; size_t n, cap; } Subs;

static Subs *subs; static size_t nsubs;
static int ep;

// The store hop: commands sent and not yet answered, oldest first (a `get` waits for its
// reply; a `set`'s +OK is dropped), and the bytes to and from kv-stored.
typedef struct Pending { Conn *c; size_t klen; char key[128]; } Pending;
enum { PENDING = 1 << 16, STOREBUF = 1 << 20 };
static int store = -1;
static Pending pending[PENDING]; static size_t phead, ptail;
static unsigned char storeout[STOREBUF], storein[STOREBUF]; static size_t storeoutlen, storeinlen;

static void die(const char *what) { perror(what); exit(1); }

static void watch(Conn *c, unsigned events) {
    struct epoll_event e = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl");
}

// Everything goes out in order: straight to the socket when nothing waits, else queued.
static void send_bytes(Conn *c, const unsigned char *p, size_t n) {
    if (c->dead) return;
    if (c->outlen == 0) {
        ssize_t w = write(c->fd, p, n);
        if (w < 0 && errno != EAGAIN) { c->dead = 1; return; }
        if (w > 0) { p += w; n -= (size_t)w; }
        if (n == 0) return;
        watch(c, EPOLLIN | EPOLLOUT);
    }
    if (c->outlen + n > c->outcap) {
        c->outcap = (c->outlen + n) * 2;
        if (!(c->out = realloc(c->out, c->outcap))) die("realloc");
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
}

static void flush_out(Conn *c) {
    ssize_t w = write(c->fd, c->out, c->outlen);
    if (w < 0) { if (errno != EAGAIN) c->dead = 1; return; }
    memmove(c->out, c->out + w, c->outlen - (size_t)w);
    c->outlen -= (size_t)w;
    if (c->outlen == 0) watch(c, EPOLLIN);
}

// An unmasked text frame's header in front of `len` bytes; its size.
static size_t frame_header(unsigned char *h, size_t len) {
    h[0] = 0x81;
    if (len < 126) { h[1] = (unsigned char)len; return 2; }
    if (len < 65536) { h[1] = 126; h[2] = (unsigned char)(len >> 8); h[3] = (unsigned char)len; return 4; }
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    return 10;
}

// The quoted string after `"name":` in `msg` (no escapes in the bench's keys and types).
static int field(const char *msg, size_t n, const char *name, const char **at, size_t *len) {
    char pat[32]; int pl = snprintf(pat, sizeof pat, "\"%s\":\"", name);
    const char *p = memmem(msg, n, pat, (size_t)pl);
    if (!p) return 0;
    p += pl;
    const char *q = memchr(p, '"', n - (size_t)(p - msg));
    if (!q) return 0;
    *at = p; *len = (size_t)(q - p);
    return 1;
}

static Subs *subscribers(const char *key, size_t len, int create) {
    for (size_t i = 0; i < nsubs; i++)
        if (strlen(subs[i].key) == len && memcmp(subs[i].key, key, len) == 0) return &subs[i];
    if (!create) return NULL;
    if (!(subs = realloc(subs, (nsubs + 1) * sizeof *subs))) die("realloc");
    Subs *s = &subs[nsubs++];
    memset(s, 0, sizeof *s);
    if (!(s->key = strndup(key, len))) die("strndup");
    return s;
}

// Queues `GET key` or `SET key value` for kv-stored; `c` gets the reply (NULL: dropped).
static void to_store(Conn *c, const char *key, size_t klen, const char *value, size_t vlen) {
    if (ptail - phead == PENDING || klen > sizeof pending[0].key || storeoutlen + klen + vlen + 64 > STOREBUF) return;
    int w = value ? snprintf((char *)storeout + storeoutlen, 64, "*3\r\n$3\r\nSET\r\n$%zu\r\n", klen)
                  : snprintf((char *)storeout + storeoutlen, 64, "*2\r\n$3\r\nGET\r\n$%zu\r\n", klen);
    storeoutlen += (size_t)w;
    memcpy(storeout + storeoutlen, key, klen); storeoutlen += klen;
    memcpy(storeout + storeoutlen, "\r\n", 2); storeoutlen += 2;
    if (value) {
        storeoutlen += (size_t)snprintf((char *)storeout + storeoutlen, 32, "$%zu\r\n", vlen);
        memcpy(storeout + storeoutlen, value, vlen); storeoutlen += vlen;
        memcpy(storeout + storeoutlen, "\r\n", 2); storeoutlen += 2;
    }
    Pending *p = &pending[ptail++ % PENDING];
    p->c = c; p->klen = klen; memcpy(p->key, key, klen);
}

// Every whole reply kv-stored sent: +OK or -ERR (dropped), $-1 (null) or $n (a value).
static void store_replies(void) {
    size_t at = 0;
    while (at < storeinlen) {
        unsigned char *p = storein + at;
        unsigned char *eol = memmem(p, storeinlen - at, "\r\n", 2);
        if (!eol) break;
        const char *value = NULL; size_t vlen = 0, used = (size_t)(eol + 2 - p);
        if (p[0] == '$' && p[1] != '-') {
            size_t len = strtoul((char *)p + 1, NULL, 10);
            if (storeinlen - at < used + len + 2) break;
            value = (char *)eol + 2; vlen = len; used += len + 2;
        }
        Pending *w = &pending[phead++ % PENDING];
        if (w->c && !w->c->dead && p[0] == '$') {
            static unsigned char out[STOREBUF + 256];
            int pre; size_t plen;
            if (value) {
                pre = snprintf((char *)out + 10, 200, "{\"type\":\"value\",\"payload\":{\"key\":\"%.*s\",\"value\":", (int)w->klen, w->key);
                memcpy(out + 10 + pre, value, vlen);
                memcpy(out + 10 + pre + vlen, "}}", 2);
                plen = (size_t)pre + vlen + 2;
            } else {
                pre = snprintf((char *)out + 10, 200, "{\"type\":\"no-value\",\"payload\":{\"key\":\"%.*s\"}}", (int)w->klen, w->key);
                plen = (size_t)pre;
            }
            unsigned char h[10]; size_t hl = frame_header(h, plen);
            memcpy(out + 10 - hl, h, hl);
            send_bytes(w->c, out + 10 - hl, hl + plen);
        }
        at += used;
    }
    memmove(storein, storein + at, storeinlen - at);
    storeinlen -= at;
}

static void on_message(Conn *c, char *msg, size_t n) {
    const char *type, *key; size_t tlen, klen;
    if (!field(msg, n, "type", &type, &tlen) || !field(msg, n, "key", &key, &klen)) return;
    if (tlen == 3 && memcmp(type, "get", 3) == 0 && store >= 0) {
        to_store(c, key, klen, NULL, 0);
    } else if (tlen == 3 && memcmp(type, "get", 3) == 0) {
        unsigned char h[10]; size_t hl = frame_header(h, n);
        send_bytes(c, h, hl); send_bytes(c, (unsigned char *)msg, n);
    } else if (tlen == 9 && memcmp(type, "subscribe", 9) == 0) {
        Subs *s = subscribers(key, klen, 1);
        if (s->n == s->cap && !(s->conns = realloc(s->conns, (s->cap = s->cap ? s->cap * 2 : 64) * sizeof *s->conns))) die("realloc");
        s->conns[s->n++] = c;
    } else if (tlen == 3 && memcmp(type, "set", 3) == 0) {
        // {"type":"set","payload":{"key":K,"value":V}} → {"type":"value","payload":{"key":K,"value":V}}
        const char *v = memmem(msg, n, "\"value\":", 8);
        if (!v || n < 2) return;
        v += 8;
        size_t vlen = (size_t)(msg + n - 2 - v);
        if (store >= 0) to_store(NULL, key, klen, v, vlen);
        Subs *s = subscribers(key, klen, 0);
        if (!s) return;
        static unsigned char out[INBUF + 128];
        int pre = snprintf((char *)out + 10, 96, "{\"type\":\"value\",\"payload\":{\"key\":\"%.*s\",\"value\":", (int)klen, key);
        if (pre < 0 || (size_t)pre + vlen + 2 > INBUF) return;
        size_t plen = (size_t)pre + vlen + 2;
        memcpy(out + 10 + pre, v, vlen);
        memcpy(out + 10 + pre + vlen, "}}", 2);
        unsigned char h[10]; size_t hl = frame_header(h, plen);
        memcpy(out + 10 - hl, h, hl);  // framed once, the same bytes to every subscriber
        size_t live = 0;
        for (size_t i = 0; i < s->n; i++) {
            Conn *d = s->conns[i];
            if (d->dead) continue;
            send_bytes(d, out + 10 - hl, hl + plen);
            s->conns[live++] = d;
        }
        s->n = live;
    }
}

static void handshake(Conn *c) {
    unsigned char *end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
    if (!end) return;
    const char *k = memmem(c->in, c->inlen, "Sec-WebSocket-Key: ", 19);
    if (!k) { c->dead = 1; return; }
    k += 19;
    const char *ke = memchr(k, '\r', (size_t)((char *)end - k) + 1);
    char buf[128]; int bl = snprintf(buf, sizeof buf, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)(ke - k), k);
    unsigned char sha[20]; SHA1((unsigned char *)buf, (size_t)bl, sha);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char accept[32]; int o = 0;
    for (int i = 0; i < 21; i += 3) {
        unsigned v = (unsigned)sha[i] << 16 | (i + 1 < 20 ? (unsigned)sha[i + 1] << 8 : 0) | (i + 2 < 20 ? sha[i + 2] : 0);
        accept[o++] = b64[v >> 18 & 63]; accept[o++] = b64[v >> 12 & 63];
        accept[o++] = i + 1 < 20 ? b64[v >> 6 & 63] : '='; accept[o++] = i + 2 < 20 ? b64[v & 63] : '=';
    }
    accept[o] = 0;
    char reply[256];
    int rl = snprintf(reply, sizeof reply, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    send_bytes(c, (unsigned char *)reply, (size_t)rl);
    size_t used = (size_t)(end + 4 - c->in);
    memmove(c->in, c->in + used, c->inlen - used);
    c->inlen -= used;
    c->upgraded = 1;
}

// Every whole frame in the buffer; a close frame or anything over INBUF ends the connection.
static void frames(Conn *c) {
    size_t at = 0;
    for (;;) {
        unsigned char *p = c->in + at; size_t have = c->inlen - at;
        if (have < 2) break;
        int op = p[0] & 15; size_t len = p[1] & 127, hl = 2;
        if (len == 126) { if (have < 4) break; len = (size_t)p[2] << 8 | p[3]; hl = 4; }
        else if (len == 127) { c->dead = 1; return; }
        if (p[1] & 128) hl += 4;
        if (hl + len > INBUF) { c->dead = 1; return; }
        if (have < hl + len) break;
        unsigned char *m = p + hl - 4, *d = p + hl;
        if (p[1] & 128) for (size_t i = 0; i < len; i++) d[i] ^= m[i & 3];
        if (op == 8) { c->dead = 1; return; }
        if (op == 1) on_message(c, (char *)d, len);
        at += hl + len;
    }
    memmove(c->in, c->in + at, c->inlen - at);
    c->inlen -= at;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) { fprintf(stderr, "usage: ws-floor SOCKET_PATH [STORE_SOCKET]\n"); return 2; }
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[1]);
    unlink(a.sun_path);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 4096) < 0) die("listen");
    chmod(a.sun_path, 0666);  // nginx's workers run as another user when the bench runs as root
    if ((ep = epoll_create1(0)) < 0) die("epoll_create1");
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &e);
    static char storemark;  // its address tells the store's events from a client's
    if (argc == 3) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", argv[2]);
        if ((store = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 || connect(store, (struct sockaddr *)&sa, sizeof sa) < 0) die("store");
        struct epoll_event se = {.events = EPOLLIN, .data.ptr = &storemark};
        epoll_ctl(ep, EPOLL_CTL_ADD, store, &se);
    }
    struct epoll_event ev[512];
    for (;;) {
        int m = epoll_wait(ep, ev, 512, -1);
        for (int i = 0; i < m; i++) {
            if (ev[i].data.ptr == &storemark) {
                ssize_t r = read(store, storein + storeinlen, STOREBUF - storeinlen);
                if (r <= 0) { fprintf(stderr, "ws-floor: the store went away\n"); exit(1); }
                storeinlen += (size_t)r;
                store_replies();
                continue;
            }
            Conn *c = ev[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (!(c = calloc(1, sizeof *c))) die("calloc");
                    c->fd = fd;
                    struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            if (ev[i].events & EPOLLOUT && c->outlen) flush_out(c);
            if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t r = read(c->fd, c->in + c->inlen, INBUF - c->inlen);
                if (r <= 0) { if (r == 0 || errno != EAGAIN) c->dead = 1; }
                else { c->inlen += (size_t)r; if (!c->upgraded) handshake(c); if (c->upgraded) frames(c); }
            }
            // A dead connection stays allocated (subscriber lists may still point at it) but
            // its socket is closed: the bench opens a bounded number of connections.
            if (c->dead && c->fd >= 0) { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); close(c->fd); c->fd = -1; }
        }
        // The tick's commands to kv-stored in one write (blocking: the store keeps up).
        for (size_t at = 0; at < storeoutlen;) {
            ssize_t w = write(store, storeout + at, storeoutlen - at);
            if (w <= 0) die("store write");
            at += (size_t)w;
        }
        storeoutlen = 0;
    }
}
