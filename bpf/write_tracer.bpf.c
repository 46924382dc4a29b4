// wtrec's kernel half: copy the user buffers of traced write-family (and,
// with --read, read-family) syscalls, and note what each fd is.
//
// Compiled by bcc with -D defines (never string replacement):
//   WTREC_SNAPLEN        most bytes captured per call (up to 1 MiB)
//   WTREC_USE_PERF       1: perf buffer (per-CPU) instead of the ring buffer
//   WTREC_RINGBUF_PAGES  ring buffer size in pages (power of two)
//   WTREC_TRACE_ALL      1: no pid/comm filter
//   WTREC_FOLLOW         1: children of traced processes are traced too
//   WTREC_SELF_TGID      the recorder's own pid, never traced
//
// Which syscalls are traced is chosen by attachment, not compilation: every
// syscall tracepoint lays out its arguments as u64 slots from offset 16 and
// its return value at offset 16, so a handful of generic programs
// (enter1..enter4 read 1 to 4 argument slots; exit_any) serve all of them,
// attached by the recorder to each sys_enter_*/sys_exit_* it wants. Few
// programs keep bcc's compile, and so start-up, short.
//
// A call is noted at syscall entry (arguments, per thread) and emitted at
// exit with its return value. A capture that fits one record goes out as
// one event record with the data inline; a vectored or large one goes out
// as chunk records followed by the event record, reassembled in user space.
//
// It reads only tracepoint arguments, helpers and user memory (UAPI-shaped
// structs defined here): the kernel headers bcc compiles against may belong
// to another kernel, so kernel structs are off limits. wtrec/kernel_event.py
// mirrors the record layouts below; change both together.
#include <asm/unistd.h>  // __NR_* of this architecture: ABI, stable across kernels

#ifndef WTREC_SNAPLEN
#define WTREC_SNAPLEN 4096
#endif
#ifndef WTREC_USE_PERF
#define WTREC_USE_PERF 0
#endif
#ifndef WTREC_RINGBUF_PAGES
#define WTREC_RINGBUF_PAGES 4096
#endif
#ifndef WTREC_TRACE_ALL
#define WTREC_TRACE_ALL 0
#endif
#ifndef WTREC_FOLLOW
#define WTREC_FOLLOW 0
#endif
#ifndef WTREC_SELF_TGID
#define WTREC_SELF_TGID 0
#endif

#define CHUNK_MAX 16384       // bytes of data in one chunk record
#ifndef MAX_IOV
#define MAX_IOV 64            // iovecs read per call (UIO_MAXIOV is 1024)
#endif
#define GATHER_STEPS (2 * MAX_IOV + WTREC_SNAPLEN / CHUNK_MAX + 2)

// Record kinds: the first u32 of every record.
#define KIND_EVENT 1
#define KIND_CHUNK 2
#define KIND_FD 3

// Event flags.
#define FLAG_READ_FAULT 1     // user memory could not be read (data short)
#define FLAG_CHUNKED 2        // data came before, in chunk records
#define FLAG_INCOMPLETE 4     // a chunk could not be emitted (data short)

// Syscall ids (wtrec's own numbering, mirrored in kernel_event.py).
#define SC_WRITE 1
#define SC_WRITEV 2
#define SC_PWRITE64 3
#define SC_PWRITEV 4
#define SC_PWRITEV2 5
#define SC_SENDTO 6
#define SC_SENDMSG 7
#define SC_READ 16
#define SC_READV 17
#define SC_PREAD64 18
#define SC_RECVFROM 19
#define SC_RECVMSG 20
#define SC_SOCKET 32
#define SC_CONNECT 33
#define SC_BIND 34
#define SC_ACCEPT 35
#define SC_ACCEPT4 36
#define SC_OPENAT 37
#define SC_OPEN 38
#define SC_CLOSE 39
#define SC_PIPE 40
#define SC_PIPE2 41
#define SC_DUP 42
#define SC_DUP2 43
#define SC_DUP3 44
#define SC_SOCKETPAIR 45
#define OP_TCP_CONNECT 60     // fd note from sock:inet_sock_set_state

struct wtrec_event_header {
    u32 kind;        // KIND_EVENT
    u32 flags;
    u64 ts_ns;       // bpf_ktime_get_boot_ns(): entry (out) or exit (in)
    u64 count;       // bytes the process asked to write / read
    s64 ret;         // the syscall's return value
    u32 pid;         // tgid
    u32 tid;
    u32 uid;
    s32 fd;
    u32 captured;    // data bytes: inline after this header, or in chunks
    u16 syscall;     // SC_*
    u16 direction;   // 0 out (write family), 1 in (read family)
    char comm[16];
};

struct wtrec_chunk_header {
    u32 kind;        // KIND_CHUNK
    u32 len;         // data bytes that follow
    u64 ts_ns;       // the event's ts_ns; with tid, names the event
    u32 tid;
    u32 offset;      // where this chunk goes in the event's data
};

struct wtrec_fd_note {
    u32 kind;        // KIND_FD
    u32 op;          // SC_* or OP_TCP_CONNECT
    u64 ts_ns;
    s64 ret;
    u32 pid;
    u32 tid;
    s32 fd;
    s32 fd2;         // pipe/socketpair: the second fd; dup: the old fd
    u32 a0;          // socket: family; tcp: family
    u32 a1;          // socket: type; tcp: sport
    u32 a2;          // socket: protocol; tcp: dport
    u32 len;         // bytes used in blob
    u8 blob[256];    // sockaddr, path, or tcp: 16-byte saddr + 16-byte daddr
};

// What entry saw, kept per thread until exit, plus the gather state the
// chunk loop keeps here: values loaded from a map are imprecise to the
// verifier, which lets it prune the loop instead of exploring every path.
struct wtrec_pending {
    u64 ts_ns;
    u64 a0, a1, a2, a3;
    s64 ret;
    u32 syscall;     // SC_*
    u32 flags;
    s64 nr;          // the architecture's syscall number, matched at exit
    u64 iov, iovcnt, index, base, left_in_iov, left, count;
    u32 offset;
    u32 captured;
};

struct user_iovec {  // struct iovec, x86-64 user ABI
    u64 base;
    u64 len;
};

struct user_msghdr64 {  // struct msghdr, x86-64 user ABI
    u64 name;
    u32 namelen;
    u32 pad;
    u64 iov;
    u64 iovlen;
    u64 control;
    u64 controllen;
    u32 flags;
};

struct comm_key {
    char name[16];
};

// The tracepoint records of syscalls:sys_enter_* and sys_exit_*. A program
// may only read as far as the smallest record it is attached to, hence one
// enter program per number of argument slots read.
struct enter_ctx1 { u64 common; s32 nr; u32 pad; u64 a[1]; };
struct enter_ctx2 { u64 common; s32 nr; u32 pad; u64 a[2]; };
struct enter_ctx3 { u64 common; s32 nr; u32 pad; u64 a[3]; };
struct enter_ctx4 { u64 common; s32 nr; u32 pad; u64 a[4]; };
struct exit_ctx { u64 common; s32 nr; u32 pad; s64 ret; };

BPF_HASH(pid_filter, u32, u8, 16384);
BPF_HASH(comm_filter, struct comm_key, u8, 256);
BPF_HASH(pending, u32, struct wtrec_pending, 16384);
// Events lost in the kernel, every cause. The perf buffer's lost callback
// is not used for this: it counts records (a lost chunk or fd note loses no
// event) and reports a loss only once the buffer has room again, which may
// be never at the end of a capture.
BPF_PERCPU_ARRAY(lost_counts, u64, 1);
// Shared programs the exit handlers tail-call (filled in by the recorder).
BPF_PROG_ARRAY(programs, 2);
#define PROG_GATHER 0
#define PROG_FD_EXIT 1

static __always_inline void count_lost(u32 which)
{
    u64 *lost = lost_counts.lookup(&which);
    if (lost)
        __sync_fetch_and_add(lost, 1);  // atomic: a preempting program may count too
}

static __always_inline int traced(u64 pid_tgid)
{
    u32 tgid = pid_tgid >> 32;
    if (tgid == WTREC_SELF_TGID)
        return 0;
#if WTREC_TRACE_ALL
    return 1;
#else
    if (pid_filter.lookup(&tgid))
        return 1;
    struct comm_key key = {};
    bpf_get_current_comm(&key.name, sizeof(key.name));
    return comm_filter.lookup(&key) != 0;
#endif
}

// ---------------------------------------------------------------- entry

// wtrec's id for an architecture syscall number (0: not one of ours).
static __always_inline u32 sc_of(s64 nr)
{
    switch (nr) {
    case __NR_write: return SC_WRITE;
    case __NR_writev: return SC_WRITEV;
    case __NR_pwrite64: return SC_PWRITE64;
    case __NR_pwritev: return SC_PWRITEV;
    case __NR_pwritev2: return SC_PWRITEV2;
    case __NR_sendto: return SC_SENDTO;
    case __NR_sendmsg: return SC_SENDMSG;
    case __NR_read: return SC_READ;
    case __NR_readv: return SC_READV;
    case __NR_pread64: return SC_PREAD64;
    case __NR_recvfrom: return SC_RECVFROM;
    case __NR_recvmsg: return SC_RECVMSG;
    case __NR_socket: return SC_SOCKET;
    case __NR_connect: return SC_CONNECT;
    case __NR_bind: return SC_BIND;
    case __NR_accept: return SC_ACCEPT;
    case __NR_accept4: return SC_ACCEPT4;
    case __NR_openat: return SC_OPENAT;
#ifdef __NR_open
    case __NR_open: return SC_OPEN;
#endif
    case __NR_close: return SC_CLOSE;
#ifdef __NR_pipe
    case __NR_pipe: return SC_PIPE;
#endif
    case __NR_pipe2: return SC_PIPE2;
    case __NR_dup: return SC_DUP;
#ifdef __NR_dup2
    case __NR_dup2: return SC_DUP2;
#endif
    case __NR_dup3: return SC_DUP3;
    case __NR_socketpair: return SC_SOCKETPAIR;
    }
    return 0;
}

static __always_inline int close_note(void *ctx, u64 pid_tgid, s32 fd);

static __always_inline int note_entry(void *ctx, s64 nr, u64 a0, u64 a1, u64 a2, u64 a3)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!traced(pid_tgid))
        return 0;
    u32 syscall = sc_of(nr);
    if (!syscall)
        return 0;
    if (syscall == SC_CLOSE)
        return close_note(ctx, pid_tgid, (s32)a0);
    u32 tid = pid_tgid;
    struct wtrec_pending p = {};
    p.ts_ns = bpf_ktime_get_boot_ns();
    p.a0 = a0;
    p.a1 = a1;
    p.a2 = a2;
    p.a3 = a3;
    p.syscall = syscall;
    p.nr = nr;
    if (pending.update(&tid, &p) != 0 && syscall < SC_SOCKET)
        count_lost(0);
    return 0;
}

int enter1(struct enter_ctx1 *ctx) { return note_entry(ctx, ctx->nr, ctx->a[0], 0, 0, 0); }
int enter2(struct enter_ctx2 *ctx) { return note_entry(ctx, ctx->nr, ctx->a[0], ctx->a[1], 0, 0); }
int enter3(struct enter_ctx3 *ctx) { return note_entry(ctx, ctx->nr, ctx->a[0], ctx->a[1], ctx->a[2], 0); }
int enter4(struct enter_ctx4 *ctx) { return note_entry(ctx, ctx->nr, ctx->a[0], ctx->a[1], ctx->a[2], ctx->a[3]); }

// ---------------------------------------------------------------- output

#if WTREC_USE_PERF

BPF_PERF_OUTPUT(events);

struct perf_scratch {
    u32 busy;  // held while a program on this CPU fills the buffer
    u32 pad;
    union {
        struct {
            struct wtrec_event_header h;
            u8 data[CHUNK_MAX];
        } event;
        struct {
            struct wtrec_chunk_header h;
            u8 data[CHUNK_MAX];
        } chunk;
        struct wtrec_fd_note note;
    } u;
};
BPF_PERCPU_ARRAY(scratch, struct perf_scratch, 1);

// Programs run preemptibly here, so a preempted one may still hold this
// CPU's scratch. Take it by an atomic increment, then look: anything but 1
// means another holder, so the caller drops and counts rather than corrupt.
// (Fetching atomics need BPF v3, which bcc does not target.)
static __always_inline struct perf_scratch *scratch_take(void)
{
    u32 zero = 0;
    struct perf_scratch *s = scratch.lookup(&zero);
    if (!s)
        return 0;
    __sync_fetch_and_add(&s->busy, 1);
    if (s->busy != 1) {
        __sync_fetch_and_add(&s->busy, -1);
        return 0;
    }
    return s;
}

static __always_inline void scratch_give(struct perf_scratch *s)
{
    __sync_fetch_and_add(&s->busy, -1);
}

static __always_inline int perf_out(void *ctx, void *data, u64 size)
{
    return events.perf_submit(ctx, data, size);
}

#else

BPF_RINGBUF_OUTPUT(events, WTREC_RINGBUF_PAGES);

// Inlined, `size` is still the constant the verifier needs.
static __always_inline void *ring_reserve(u64 size)
{
    return events.ringbuf_reserve(size);
}

static __always_inline void ring_submit(void *record)
{
    events.ringbuf_submit(record, 0);
}

static __always_inline void ring_discard(void *record)
{
    events.ringbuf_discard(record, 0);
}

#endif

static __always_inline void fill_header(struct wtrec_event_header *h, struct wtrec_pending *p,
                                        u64 pid_tgid, u64 ts_ns, u16 direction)
{
    h->kind = KIND_EVENT;
    h->flags = p->flags;
    h->ts_ns = ts_ns;
    h->count = p->count;
    h->ret = p->ret;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->uid = (u32)bpf_get_current_uid_gid();
    h->fd = (s32)p->a0;
    h->captured = p->captured;
    h->syscall = p->syscall;
    h->direction = direction;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline u16 direction_of(u32 syscall)
{
    return syscall >= SC_READ ? 1 : 0;
}

static __always_inline u64 event_time(struct wtrec_pending *p)
{
    // Writes are dated when they were asked for, reads when data arrived.
    return direction_of(p->syscall) ? bpf_ktime_get_boot_ns() : p->ts_ns;
}

// Emit an event with `n` (<= CHUNK_MAX) bytes from `base` inline.
#if WTREC_USE_PERF
static __always_inline int emit_inline(void *ctx, struct wtrec_pending *p, u64 pid_tgid,
                                       u64 base, u64 n)
{
    struct perf_scratch *s = scratch_take();
    if (!s) {
        count_lost(0);
        return 0;
    }
    if (n > CHUNK_MAX)
        n = CHUNK_MAX;
    p->captured = n;
    fill_header(&s->u.event.h, p, pid_tgid, event_time(p), direction_of(p->syscall));
    if (n && bpf_probe_read_user(s->u.event.data, n, (void *)base) != 0) {
        s->u.event.h.captured = 0;
        s->u.event.h.flags |= FLAG_READ_FAULT;
        n = 0;
    }
    if (perf_out(ctx, &s->u.event, sizeof(struct wtrec_event_header) + n) < 0)
        count_lost(0);
    scratch_give(s);
    return 0;
}
#else
// A ring buffer record must have a constant size: reserve the smallest
// size class that fits, then fill it by one code path (one copy of the
// code, not one per class, keeps the compile short).
static __always_inline void *reserve_class(u64 header, u64 n)
{
    if (n <= 64)
        return ring_reserve(header + 64);
    if (n <= 256)
        return ring_reserve(header + 256);
    if (n <= 1024)
        return ring_reserve(header + 1024);
    if (n <= 4096)
        return ring_reserve(header + 4096);
    return ring_reserve(header + CHUNK_MAX);
}

static __always_inline int emit_inline(void *ctx, struct wtrec_pending *p, u64 pid_tgid,
                                       u64 base, u64 n)
{
    if (n > CHUNK_MAX)
        return 0;
    struct wtrec_event_header *h = reserve_class(sizeof(*h), n);
    if (!h) {
        count_lost(0);
        return 0;
    }
    p->captured = n;
    fill_header(h, p, pid_tgid, event_time(p), direction_of(p->syscall));
    if (n && bpf_probe_read_user((u8 *)(h + 1), n, (void *)base) != 0) {
        h->captured = 0;
        h->flags |= FLAG_READ_FAULT;
    }
    ring_submit(h);
    return 0;
}
#endif

// ---------------------------------------------------------------- gather

// One chunk of `n` bytes at the gather position; 0 on success.
#if WTREC_USE_PERF
static __always_inline int emit_chunk(void *ctx, struct wtrec_pending *p, u32 tid,
                                      struct perf_scratch *s, u64 n)
{
    if (n > CHUNK_MAX)
        n = CHUNK_MAX;
    s->u.chunk.h.kind = KIND_CHUNK;
    s->u.chunk.h.len = n;
    s->u.chunk.h.ts_ns = p->ts_ns;
    s->u.chunk.h.tid = tid;
    s->u.chunk.h.offset = p->offset;
    if (bpf_probe_read_user(s->u.chunk.data, n, (void *)p->base) != 0)
        return 1;
    // A chunk that does not fit leaves its event incomplete, not lost.
    return perf_out(ctx, &s->u.chunk, sizeof(struct wtrec_chunk_header) + n) < 0;
}
#else
static __always_inline int emit_chunk(void *ctx, struct wtrec_pending *p, u32 tid, void *unused,
                                      u64 n)
{
    if (n > CHUNK_MAX)
        return 1;
    struct wtrec_chunk_header *h = reserve_class(sizeof(*h), n);
    if (!h)
        return 1;
    h->kind = KIND_CHUNK;
    h->len = n;
    h->ts_ns = p->ts_ns;
    h->tid = tid;
    h->offset = p->offset;
    if (bpf_probe_read_user((u8 *)(h + 1), n, (void *)p->base) != 0) {
        ring_discard(h);
        return 1;
    }
    ring_submit(h);
    return 0;
}
#endif

// Tail-called from the exit handlers (so the verifier checks the loop
// once): sums the iovec lengths, copies up to the capture length in
// chunks, then emits the event record.
int gather_and_emit(void *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = pid_tgid;
    struct wtrec_pending *p = pending.lookup(&tid);
    if (!p)
        return 0;
    void *s = 0;
#if WTREC_USE_PERF
    struct perf_scratch *ps = scratch_take();
    if (!ps) {
        count_lost(0);
        pending.delete(&tid);
        return 0;
    }
    s = ps;
#endif
    // Vectored calls: the requested count is the sum of the iovec lengths.
    if (p->iov) {
        p->count = 0;
        p->index = 0;
#pragma clang loop unroll(disable)
        for (int i = 0; i < MAX_IOV; i++) {
            u64 index = p->index;
            if (index >= p->iovcnt)
                break;
            struct user_iovec v = {};
            if (bpf_probe_read_user(&v, sizeof(v), (void *)(p->iov + index * sizeof(v))) != 0) {
                p->flags |= FLAG_READ_FAULT;
                break;
            }
            p->count += v.len;
            p->index = index + 1;
        }
        p->index = 0;
        p->left_in_iov = 0;
    }
    u64 want = direction_of(p->syscall) ? (p->ret > 0 ? (u64)p->ret : 0) : p->count;
    p->left = want > WTREC_SNAPLEN ? WTREC_SNAPLEN : want;
    p->offset = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < GATHER_STEPS; i++) {
        u64 left = p->left;
        u64 in_iov = p->left_in_iov;
        if (!left)
            break;
        if (!in_iov) {
            u64 index = p->index;
            if (!p->iov || index >= p->iovcnt)
                break;
            struct user_iovec v = {};
            if (bpf_probe_read_user(&v, sizeof(v), (void *)(p->iov + index * sizeof(v))) != 0) {
                p->flags |= FLAG_READ_FAULT;
                break;
            }
            p->index = index + 1;
            p->base = v.base;
            p->left_in_iov = v.len;
            continue;
        }
        u64 n = in_iov;
        if (n > left)
            n = left;
        if (n > CHUNK_MAX)
            n = CHUNK_MAX;
        if (emit_chunk(ctx, p, tid, s, n) != 0) {
            p->flags |= FLAG_INCOMPLETE;
            break;
        }
        p->base += n;
        p->left_in_iov = in_iov - n;
        p->left = left - n;
        p->offset += n;
    }
    p->captured = p->offset;
    p->flags |= FLAG_CHUNKED;
#if WTREC_USE_PERF
    fill_header(&ps->u.event.h, p, pid_tgid, event_time(p), direction_of(p->syscall));
    if (perf_out(ctx, &ps->u.event.h, sizeof(struct wtrec_event_header)) < 0)
        count_lost(0);
    scratch_give(ps);
#else
    struct wtrec_event_header *h = ring_reserve(sizeof(*h));
    if (h) {
        fill_header(h, p, pid_tgid, event_time(p), direction_of(p->syscall));
        ring_submit(h);
    } else {
        count_lost(0);
    }
#endif
    pending.delete(&tid);
    return 0;
}

// Exit of a data syscall: the common case, one buffer that fits a chunk,
// goes out inline here; the rest is tail-called to gather_and_emit.
static __always_inline int data_exit(void *ctx, u64 pid_tgid, struct wtrec_pending *p)
{
    u32 tid = pid_tgid;
    u32 syscall = p->syscall;
    long ret = p->ret;
    u64 base = 0;
    switch (syscall) {
    case SC_WRITEV:
    case SC_PWRITEV:
    case SC_PWRITEV2:
    case SC_READV:
        p->iov = p->a1;
        p->iovcnt = p->a2 > MAX_IOV ? MAX_IOV : p->a2;
        break;
    case SC_SENDMSG:
    case SC_RECVMSG: {
        struct user_msghdr64 msg = {};
        if (bpf_probe_read_user(&msg, sizeof(msg), (void *)p->a1) != 0) {
            p->flags |= FLAG_READ_FAULT;
        } else {
            p->iov = msg.iov;
            p->iovcnt = msg.iovlen > MAX_IOV ? MAX_IOV : msg.iovlen;
        }
        break;
    }
    default:
        base = p->a1;
        p->count = p->a2;
        p->left_in_iov = p->a2;
        p->base = base;
    }
    if (!p->iov) {
        u64 want = direction_of(syscall) ? (ret > 0 ? (u64)ret : 0) : p->count;
        u64 n = want > WTREC_SNAPLEN ? WTREC_SNAPLEN : want;
        if (n <= CHUNK_MAX) {
            emit_inline(ctx, p, pid_tgid, base, n);
            pending.delete(&tid);
            return 0;
        }
    }
    programs.call(ctx, PROG_GATHER);
    // Only reached if the tail call failed (gather_and_emit is loaded just
    // after the probes are attached): keep what fits one record.
    if (!p->iov) {
        p->flags |= FLAG_INCOMPLETE;
        emit_inline(ctx, p, pid_tgid, base, CHUNK_MAX);
    } else {
        count_lost(0);
    }
    pending.delete(&tid);
    return 0;
}

// Attached to every traced sys_exit_*: match the entry, keep the return
// value, emit (data) or tail-call fd_exit (fd-making syscalls).
int exit_any(struct exit_ctx *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = pid_tgid;
    struct wtrec_pending *p = pending.lookup(&tid);
    if (!p)
        return 0;
    if (p->nr != ctx->nr) {  // a stale entry from an exit we never saw
        pending.delete(&tid);
        return 0;
    }
    p->ret = ctx->ret;
    if (p->syscall < SC_SOCKET)
        return data_exit(ctx, pid_tgid, p);
    programs.call(ctx, PROG_FD_EXIT);
    pending.delete(&tid);  // only reached if the tail call failed
    return 0;
}

// ---------------------------------------------------------------- fd notes

static __always_inline struct wtrec_fd_note *note_begin(void **holder)
{
#if WTREC_USE_PERF
    struct perf_scratch *s = scratch_take();
    *holder = s;
    if (!s)
        return 0;
    __builtin_memset(&s->u.note, 0, sizeof(s->u.note));
    return &s->u.note;
#else
    struct wtrec_fd_note *n = ring_reserve(sizeof(struct wtrec_fd_note));
    if (n)
        __builtin_memset(n, 0, sizeof(*n));
    *holder = n;
    return n;
#endif
}

static __always_inline void note_end(void *ctx, void *holder, struct wtrec_fd_note *n)
{
#if WTREC_USE_PERF
    perf_out(ctx, n, sizeof(*n));
    scratch_give((struct perf_scratch *)holder);
#else
    ring_submit(n);
#endif
}

static __always_inline void note_fill(struct wtrec_fd_note *n, u32 op, u64 pid_tgid, s64 ret,
                                      s32 fd, s32 fd2)
{
    n->kind = KIND_FD;
    n->op = op;
    n->ts_ns = bpf_ktime_get_boot_ns();
    n->ret = ret;
    n->pid = pid_tgid >> 32;
    n->tid = (u32)pid_tgid;
    n->fd = fd;
    n->fd2 = fd2;
}

// Exit of an fd-making syscall (tail-called): say what the new fd is.
int fd_exit(void *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = pid_tgid;
    struct wtrec_pending *p = pending.lookup(&tid);
    if (!p)
        return 0;
    u32 syscall = p->syscall;
    s64 ret = p->ret;
    u64 a0 = p->a0, a1 = p->a1, a2 = p->a2, a3 = p->a3;
    pending.delete(&tid);
    if (ret < 0 && syscall != SC_CONNECT)
        return 0;
    void *holder;
    struct wtrec_fd_note *n = note_begin(&holder);
    if (!n)
        return 0;  // an fd note lost only costs a name, not data
    s32 fd = ret, fd2 = -1;
    u64 addr = 0, path = 0, pair = 0;
    u32 addrlen = 0;
    if (syscall == SC_SOCKET) {
        n->a0 = a0;
        n->a1 = a1;
        n->a2 = a2;
    } else if (syscall == SC_CONNECT || syscall == SC_BIND) {
        fd = a0;
        addr = a1;
        addrlen = a2;
    } else if (syscall == SC_ACCEPT || syscall == SC_ACCEPT4) {
        fd2 = a0;
        addr = a1;
        if (addr && a2)
            bpf_probe_read_user(&addrlen, sizeof(addrlen), (void *)a2);
    } else if (syscall == SC_OPENAT) {
        path = a1;
    } else if (syscall == SC_OPEN) {
        path = a0;
    } else if (syscall == SC_PIPE || syscall == SC_PIPE2) {
        pair = a0;
    } else if (syscall == SC_SOCKETPAIR) {
        pair = a3;
        n->a0 = a0;
    } else {  // dup, dup2, dup3
        fd2 = a0;
    }
    if (path) {
        int len = bpf_probe_read_user_str(n->blob, sizeof(n->blob), (void *)path);
        n->len = len > 0 ? len : 0;
    }
    if (pair) {
        s32 fds[2] = {-1, -1};
        bpf_probe_read_user(fds, sizeof(fds), (void *)pair);
        fd = fds[0];
        fd2 = fds[1];
    }
    if (addr) {
        // A constant size (sockaddr_storage) keeps the verifier simple.
        if (addrlen > 128)
            addrlen = 128;
        if (bpf_probe_read_user(n->blob, 128, (void *)addr) == 0)
            n->len = addrlen;
    }
    note_fill(n, syscall, pid_tgid, ret, fd, fd2);
    note_end(ctx, holder, n);
    return 0;
}

// ---------------------------------------------------------------- close, tcp, processes

static __always_inline int close_note(void *ctx, u64 pid_tgid, s32 fd)
{
    void *holder;
    struct wtrec_fd_note *n = note_begin(&holder);
    if (!n)
        return 0;
    note_fill(n, SC_CLOSE, pid_tgid, 0, fd, -1);
    note_end(ctx, holder, n);
    return 0;
}

// A TCP connect() in progress. At SYN_SENT (in the connecting thread) the
// local port is not chosen yet, and later transitions may run in softirq
// context, so remember the socket by its address (a key, never read) and
// note the fd's addresses at its next transition, whoever runs it.
struct connecting_fd {
    u32 pid;
    u32 tid;
    s32 fd;
    u32 pad;
};
BPF_HASH(connecting, u64, struct connecting_fd, 4096);

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != 6 /* IPPROTO_TCP */)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == 2 /* TCP_SYN_SENT */) {
        u64 pid_tgid = bpf_get_current_pid_tgid();
        u32 tid = pid_tgid;
        struct wtrec_pending *p = pending.lookup(&tid);
        if (!p || p->syscall != SC_CONNECT)
            return 0;
        struct connecting_fd c = {.pid = pid_tgid >> 32, .tid = tid, .fd = (s32)p->a0};
        connecting.update(&sk, &c);
        return 0;
    }
    struct connecting_fd *c = connecting.lookup(&sk);
    if (!c)
        return 0;
    struct connecting_fd saved = *c;
    connecting.delete(&sk);
    if (args->newstate != 1 /* TCP_ESTABLISHED */)
        return 0;
    void *holder;
    struct wtrec_fd_note *n = note_begin(&holder);
    if (!n)
        return 0;
    n->a0 = args->family;
    n->a1 = args->sport;
    n->a2 = args->dport;
    if (args->family == 2 /* AF_INET */) {
        __builtin_memcpy(n->blob, args->saddr, 4);
        __builtin_memcpy(n->blob + 16, args->daddr, 4);
    } else {
        __builtin_memcpy(n->blob, args->saddr_v6, 16);
        __builtin_memcpy(n->blob + 16, args->daddr_v6, 16);
    }
    n->len = 32;
    note_fill(n, OP_TCP_CONNECT, ((u64)saved.pid << 32) | saved.tid, 0, saved.fd, -1);
    note_end(args, holder, n);
    return 0;
}

// Follow children, and forget processes that are gone (their pid may be reused).
TRACEPOINT_PROBE(sched, sched_process_fork)
{
#if WTREC_FOLLOW
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (pid_filter.lookup(&parent)) {
        u32 child = args->child_pid;
        u8 one = 1;
        pid_filter.update(&child, &one);
    }
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = pid_tgid;
    pending.delete(&tid);
    // With --follow, new threads' ids land in the filter too: drop them all.
    pid_filter.delete(&tid);
    return 0;
}
