// wtrec's kernel half: copy the user buffers of traced write-family (and,
// with --read, read-family) syscalls, and note what each fd is.
//
// Compiled by bcc with -D defines (never string replacement):
//   WTREC_SNAPLEN        most bytes captured per call (up to 1 MiB)
//   WTREC_USE_PERF       1: perf buffer (per-CPU) instead of the ring buffer
//   WTREC_RINGBUF_PAGES  ring buffer size in pages (power of two)
//   WTREC_TRACE_ALL      1: no pid/comm filter
//   WTREC_PID_FILTER     1: processes may be traced by pid (-p, the command, followed)
//   WTREC_COMM_FILTER    1: processes may be traced by comm (-c)
//   WTREC_COMM_LIST      how many comms (1 to COMM_LIST_MAX) are compared one by
//                        one from `comm_list`; 0: looked up in `comm_filter`
//   WTREC_FOLLOW         1: children of traced processes are traced too
//   WTREC_PID_TABLE      most processes traced by pid (-p, the command, followed)
//   WTREC_TLS            1: TLS library uprobes too (record --tls, the last section)
// Which syscalls are captured is a map (`wanted`), and the recorder's own
// pid (never traced) is in `settings`, both filled by the recorder: the
// compiled program depends only on the defines, so it can be kept and
// loaded again by a later run.
//
// Two raw tracepoints, sys_enter and sys_exit, see every syscall: a few
// instructions turn the architecture's syscall number into wtrec's id and
// drop what is not wanted before anything else is done. Arguments come from
// the saved user registers (struct pt_regs, whose layout is user ABI).
//
// Data syscalls (the write and read families) are handled at exit alone:
// the saved registers still hold the arguments there (the kernel does not
// write them back; arm64 keeps x0, which the return value overwrites, in
// orig_x0), so nothing is noted per thread and entry does no work for
// them. A capture that fits one record goes out as one event record with
// the data inline; a vectored or large one goes out as chunk records
// followed by the event record, reassembled in user space. The fd-naming
// syscalls are noted at entry (per thread, in `pending`) and completed at
// exit; close is noted at entry, before its number can be reused.
// The record layouts are in wtrec_records.h, shared with the test that
// checks the Python decoder against them.
//
// Output goes through out_reserve/out_submit/out_discard, the one place
// that knows the backend. The ring buffer is submitted without waking the
// reader (BPF_RB_NO_WAKEUP): a wakeup per event costs more than the rest of
// the tracing; the recorder reads the buffer on a short timer instead.
//
// It reads only tracepoint arguments, helpers, saved registers and user
// memory: the kernel headers bcc compiles against may belong to another
// kernel, so kernel structs are off limits.
#include <asm/unistd.h>  // __NR_* of this architecture: ABI, stable across kernels
#include "wtrec_records.h"

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
#ifndef WTREC_PID_FILTER
#define WTREC_PID_FILTER 1
#endif
#ifndef WTREC_COMM_FILTER
#define WTREC_COMM_FILTER 1
#endif
#ifndef WTREC_COMM_LIST
#define WTREC_COMM_LIST 0
#endif
#define COMM_LIST_MAX 8
#ifndef WTREC_PID_TABLE
#define WTREC_PID_TABLE 16384
#endif
#define CLONE_THREAD 0x00010000

#define CHUNK_MAX 16384       // bytes of data in one chunk record
#ifndef MAX_IOV
#define MAX_IOV 64            // iovecs read per call (UIO_MAXIOV is 1024)
#endif
// Chunks come one a step, an iovec's first with it: each iovec adds at most one
// step (an empty one, or a chunk cut short by its end) to the data's chunks.
#define GATHER_STEPS (MAX_IOV + WTREC_SNAPLEN / CHUNK_MAX + 2)

// The saved user registers (struct pt_regs), as far as wtrec reads them.
// The raw tracepoints also see 32-bit (compat) syscalls, numbered and
// passed differently: those are told apart by the saved code segment
// (x86_64) or processor state (arm64) and left alone, as the syscall
// tracepoints always did.
#if defined(__x86_64__)
struct user_args {           // pt_regs from r10 (offset 56) to cs
    u64 r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs;
};
#define ARGS_OFFSET 56
#define NR(r) ((s64)(r).orig_ax)
#define ARG0(r) ((r).di)
#define EXIT_ARG0(r) ((r).di)  // the return value goes to ax
#define ARG1(r) ((r).si)
#define ARG2(r) ((r).dx)
#define ARG3(r) ((r).r10)
#define IS_64BIT(r) (((r).cs & 0xffff) == 0x33)  // __USER_CS; 32-bit code runs in 0x23
#elif defined(__aarch64__)
struct user_args {           // pt_regs from regs[0] to syscallno
    u64 x[31], sp, pc, pstate, orig_x0;
    s32 syscallno;
};
#define ARGS_OFFSET 0
#define NR(r) ((s64)(r).syscallno)
#define ARG0(r) ((r).x[0])
#define EXIT_ARG0(r) ((r).orig_x0)  // x0 holds the return value by then
#define ARG1(r) ((r).x[1])
#define ARG2(r) ((r).x[2])
#define ARG3(r) ((r).x[3])
#define IS_64BIT(r) (!((r).pstate & 0x10))  // PSR_MODE32_BIT
#else
#error "wtrec reads syscall arguments from registers on x86_64 and arm64 only"
#endif

struct comm_key {
    char name[16];
} __attribute__((aligned(8)));  // compared as two u64

// What entry saw of an fd-naming (or, with follow, clone) syscall, kept
// per thread until its exit.
struct wtrec_pending {
    u64 a0, a1, a2, a3;
    s64 ret;
    u32 syscall;     // SC_*
    u32 pad;
    s64 nr;          // the architecture's syscall number, matched at exit
};

// A data syscall's exit, as the event header needs it, and the state of
// the chunk loop (gather_and_emit): kept in a per-CPU map for the length of
// one run of on_sys_exit and the program it tail-calls (values loaded from
// a map are imprecise to the verifier, which lets it prune the loop instead
// of exploring every path).
struct wtrec_exit {
    u64 ts_ns;
    u64 fd;
    s64 ret;
    u32 syscall;     // SC_*
    u32 flags;
    u64 iov, iovcnt, index, base, left_in_iov, left, count;
    u32 offset;
    u32 captured;
    struct comm_key comm;
};

struct user_iovec {  // struct iovec, 64-bit user ABI
    u64 base;
    u64 len;
};

struct user_msghdr64 {  // struct msghdr, 64-bit user ABI
    u64 name;
    u32 namelen;
    u32 pad;
    u64 iov;
    u64 iovlen;
    u64 control;
    u64 controllen;
    u32 flags;
};

BPF_ARRAY(wanted, u8, SC_LIMIT);  // wanted[SC_*] = 1: capture or note this syscall
BPF_ARRAY(settings, u32, 1);      // settings[0]: the recorder's pid, never traced
BPF_HASH(pid_filter, u32, u8, WTREC_PID_TABLE);  // by tgid: processes, never threads
BPF_HASH(comm_filter, struct comm_key, u8, 256);
// A few comms are compared in place: on every traced syscall's exit, a
// hash lookup (jhash of 16 bytes) cost more than the rest of the filter.
BPF_ARRAY(comm_list, struct comm_key, COMM_LIST_MAX);
BPF_HASH(pending, u32, struct wtrec_pending, 16384);
BPF_PERCPU_ARRAY(exiting, struct wtrec_exit, 1);
// Taken (atomic increment to 1) for a run that uses `exiting`: a second
// user on this CPU (a preempted run: programs are preemptible here) finds
// it held and drops and counts rather than corrupt.
BPF_PERCPU_ARRAY(exiting_busy, u32, 1);
// Events and fd notes lost in the kernel, every cause, and those sent, by
// slot (COUNT_*): what the recorder never took of what was sent is lost too.
// The perf buffer's lost callback is not used: it counts records (a lost
// chunk loses no event) and reports a loss only once the buffer has room
// again, which may be never at the end of a capture.
BPF_PERCPU_ARRAY(counts, u64, COUNT_SLOTS);
// Processes with a lost fd note not yet flagged to the recorder, and
// whether any note was ever lost (so the hot path skips the hash lookup).
BPF_HASH(stale_fds, u32, u8, 16384);
BPF_ARRAY(notes_lost, u32, 1);
// Shared programs the exit handler tail-calls (filled in by the recorder).
BPF_PROG_ARRAY(programs, 2);
#define PROG_GATHER 0
#define PROG_FD_EXIT 1

static __always_inline void count(u32 slot)
{
    u64 *counter = counts.lookup(&slot);
    if (counter)
        __sync_fetch_and_add(counter, 1);  // atomic: a preempting program may count too
}

// Whether comm_list[slot] holds this comm (as two u64).
static __always_inline int comm_is(u32 slot, u64 low, u64 high)
{
    struct comm_key *want = comm_list.lookup(&slot);
    return want && *(u64 *)&want->name[0] == low && *(u64 *)&want->name[8] == high;
}

static __always_inline int is_self(u32 tgid)
{
    u32 zero = 0;
    u32 *self = settings.lookup(&zero);
    return !self || *self == tgid;  // unset: trace nothing
}

// Whether the current process is traced; `comm` gets its comm either way
// (the event header needs it), read once.
static __always_inline int traced_comm(u64 pid_tgid, struct comm_key *comm)
{
    u32 tgid = pid_tgid >> 32;
    if (is_self(tgid))
        return 0;
#if WTREC_TRACE_ALL
    bpf_get_current_comm(&comm->name, sizeof(comm->name));
    return 1;
#else
#if WTREC_PID_FILTER
    if (pid_filter.lookup(&tgid)) {
        bpf_get_current_comm(&comm->name, sizeof(comm->name));
        return 1;
    }
#endif
#if WTREC_COMM_FILTER
    bpf_get_current_comm(&comm->name, sizeof(comm->name));
#if WTREC_COMM_LIST
    u64 low = *(u64 *)&comm->name[0], high = *(u64 *)&comm->name[8];
    // Written out, not a loop: the verifier cannot follow a loop counter
    // whose address is passed to a lookup, and calls that an infinite loop.
    if ((WTREC_COMM_LIST > 0 && comm_is(0, low, high)) || (WTREC_COMM_LIST > 1 && comm_is(1, low, high))
        || (WTREC_COMM_LIST > 2 && comm_is(2, low, high)) || (WTREC_COMM_LIST > 3 && comm_is(3, low, high))
        || (WTREC_COMM_LIST > 4 && comm_is(4, low, high)) || (WTREC_COMM_LIST > 5 && comm_is(5, low, high))
        || (WTREC_COMM_LIST > 6 && comm_is(6, low, high)) || (WTREC_COMM_LIST > 7 && comm_is(7, low, high)))
        return 1;
    return 0;
#else
    return comm_filter.lookup(comm) != 0;
#endif
#else
    return 0;
#endif
#endif
}

static __always_inline int traced(u64 pid_tgid)
{
    struct comm_key comm = {};
    return traced_comm(pid_tgid, &comm);
}

static __always_inline u16 direction_of(u32 syscall)
{
    return syscall >= SC_READ ? 1 : 0;
}

// ---------------------------------------------------------------- output

#if WTREC_USE_PERF

BPF_PERF_OUTPUT(events);

#define SCRATCH_BYTES (sizeof(struct wtrec_event_header) + CHUNK_MAX)
struct perf_scratch {
    u8 buf[SCRATCH_BYTES];
};
BPF_PERCPU_ARRAY(scratch, struct perf_scratch, 1);
BPF_PERCPU_ARRAY(scratch_busy, u32, 1);

// Programs run preemptibly here, so a preempted one may still hold this
// CPU's scratch. Take it by an atomic increment, then look: anything but 1
// means another holder, so the caller drops and counts rather than corrupt.
// (Fetching atomics need BPF v3, which bcc does not target.)
static __always_inline void *out_reserve(u64 header, u64 n)
{
    u32 zero = 0;
    u32 *busy = scratch_busy.lookup(&zero);
    struct perf_scratch *s = scratch.lookup(&zero);
    if (!busy || !s)
        return 0;
    __sync_fetch_and_add(busy, 1);
    if (*busy != 1) {
        __sync_fetch_and_add(busy, -1);
        return 0;
    }
    return s->buf;
}

static __always_inline void out_release(void)
{
    u32 zero = 0;
    u32 *busy = scratch_busy.lookup(&zero);
    if (busy)
        __sync_fetch_and_add(busy, -1);
}

// Sends `size` bytes of a reserved record; <0 if the buffer had no room.
static __always_inline int out_submit(void *ctx, void *record, u64 size)
{
    if (size > SCRATCH_BYTES)
        size = SCRATCH_BYTES;
    int err = events.perf_submit(ctx, record, size);
    out_release();
    return err < 0 ? err : 0;
}

static __always_inline void out_discard(void *record)
{
    out_release();
}

#else

BPF_RINGBUF_OUTPUT(events, WTREC_RINGBUF_PAGES);

// A ring buffer record has a constant size: reserve the smallest class
// that fits `header` + `n` bytes (inlined, each branch is a constant).
static __always_inline void *out_reserve(u64 header, u64 n)
{
    if (n == 0)
        return events.ringbuf_reserve(header);
    if (n <= 64)
        return events.ringbuf_reserve(header + 64);
    if (n <= 256)
        return events.ringbuf_reserve(header + 256);
    if (n <= 1024)
        return events.ringbuf_reserve(header + 1024);
    if (n <= 4096)
        return events.ringbuf_reserve(header + 4096);
    return events.ringbuf_reserve(header + CHUNK_MAX);
}

static __always_inline int out_submit(void *ctx, void *record, u64 size)
{
    events.ringbuf_submit(record, BPF_RB_NO_WAKEUP);
    return 0;
}

static __always_inline void out_discard(void *record)
{
    events.ringbuf_discard(record, BPF_RB_NO_WAKEUP);
}

#endif

// record --tls: hooks the syscall programs call, defined at the end of this
// file (with WTREC_TLS) or empty.
#ifndef WTREC_TLS
#define WTREC_TLS 0
#endif
#if WTREC_TLS
static __always_inline void tls_sys_enter(struct bpf_raw_tracepoint_args *ctx, s64 nr);
static __always_inline void tls_sys_exit(struct bpf_raw_tracepoint_args *ctx, s64 nr);
static __always_inline void tls_mark_event(struct wtrec_event_header *h, u64 pid_tgid);
#else
static __always_inline void tls_sys_enter(struct bpf_raw_tracepoint_args *ctx, s64 nr) {}
static __always_inline void tls_sys_exit(struct bpf_raw_tracepoint_args *ctx, s64 nr) {}
static __always_inline void tls_mark_event(struct wtrec_event_header *h, u64 pid_tgid) {}
#endif

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
    case __NR_clone: return SC_CLONE;
    case __NR_clone3: return SC_CLONE3;
#ifdef __NR_fork
    case __NR_fork: return SC_FORK;
#endif
#ifdef __NR_vfork
    case __NR_vfork: return SC_VFORK;
#endif
    }
    return 0;
}

static __always_inline int is_wanted(u32 syscall)
{
    u8 *want = wanted.lookup(&syscall);
    return want && *want;
}

static __always_inline void *note_begin(u64 pid_tgid);
static __always_inline void note_lost(u64 pid_tgid);
static __always_inline void note_end(void *ctx, struct wtrec_fd_note *n, u32 op, u64 pid_tgid,
                                     s64 ret, s32 fd, s32 fd2);

// Entry matters only to the fd-naming and clone syscalls: data syscalls
// (ids below SC_SOCKET) leave at the first comparison.
int on_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
    s64 nr = ctx->args[1];
    tls_sys_enter(ctx, nr);
    u32 syscall = sc_of(nr);
    if (syscall < SC_SOCKET || !is_wanted(syscall))
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!traced(pid_tgid))
        return 0;
    struct user_args regs = {};
    bpf_probe_read_kernel(&regs, sizeof(regs), (u8 *)ctx->args[0] + ARGS_OFFSET);
    if (!IS_64BIT(regs))
        return 0;
    if (syscall == SC_CLOSE) {
        struct wtrec_fd_note *n = note_begin(pid_tgid);
        if (n)
            note_end(ctx, n, SC_CLOSE, pid_tgid, 0, (s32)ARG0(regs), -1);
        return 0;
    }
    u32 tid = pid_tgid;
    struct wtrec_pending p = {};
    p.a0 = ARG0(regs);
    if (syscall == SC_CLONE3)  // struct clone_args: flags first
        bpf_probe_read_user(&p.a0, sizeof(p.a0), (void *)ARG0(regs));
    p.a1 = ARG1(regs);
    p.a2 = ARG2(regs);
    p.a3 = ARG3(regs);
    p.syscall = syscall;
    p.nr = nr;
    if (pending.update(&tid, &p) != 0)
        note_lost(pid_tgid);
    return 0;
}

// ---------------------------------------------------------------- events

// Every event is dated when it is emitted, at syscall exit: records leave in
// that order, so the recorder's short hold restores time order even for a
// call that blocked for seconds (dated at entry, it would arrive late).
// entry_ns, the key that names a chunked event's chunks, is that same time:
// one clock read per event.
static __always_inline void fill_header(struct wtrec_event_header *h, struct wtrec_exit *e,
                                        u64 pid_tgid)
{
    h->kind = KIND_EVENT;
    h->flags = e->flags;
    h->ts_ns = e->ts_ns;
    h->entry_ns = e->ts_ns;
    h->count = e->count;
    h->ret = e->ret;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->uid = (u32)bpf_get_current_uid_gid();
    h->fd = (s32)e->fd;
    h->captured = e->captured;
    h->syscall = e->syscall;
    h->direction = direction_of(e->syscall);
    __builtin_memcpy(h->comm, e->comm.name, sizeof(h->comm));
    tls_mark_event(h, pid_tgid);
    u32 zero = 0, tgid = h->pid;
    u32 *any = notes_lost.lookup(&zero);
    if (any && *any && stale_fds.lookup(&tgid)) {
        h->flags |= FLAG_FDS_STALE;
        stale_fds.delete(&tgid);
    }
}

// Emit an event with `n` (<= CHUNK_MAX) bytes from `base` inline. A fault
// reading them sends the event without data, flagged FLAG_READ_FAULT.
static __always_inline void emit_inline(void *ctx, struct wtrec_exit *e, u64 pid_tgid,
                                        u64 base, u64 n)
{
    if (n > CHUNK_MAX)
        n = CHUNK_MAX;
    struct wtrec_event_header *h = out_reserve(sizeof(*h), n);
    if (!h) {
        count(COUNT_LOST_EVENTS);
        return;
    }
    e->captured = n;
    fill_header(h, e, pid_tgid);
    if (n && bpf_probe_read_user((u8 *)(h + 1), n, (void *)base) != 0) {
        h->captured = 0;
        h->flags |= FLAG_READ_FAULT;
        n = 0;
    }
    count(out_submit(ctx, h, sizeof(*h) + n) < 0 ? COUNT_LOST_EVENTS : COUNT_SENT_EVENTS);
}

// One chunk of `n` bytes at the gather position; 0 on success. A chunk
// that cannot be sent leaves its event incomplete, not lost.
static __always_inline int emit_chunk(void *ctx, struct wtrec_exit *e, u32 tid, u64 n)
{
    if (n > CHUNK_MAX)
        return 1;
    struct wtrec_chunk_header *h = out_reserve(sizeof(*h), n);
    if (!h)
        return 1;
    h->kind = KIND_CHUNK;
    h->len = n;
    h->ts_ns = e->ts_ns;
    h->tid = tid;
    h->offset = e->offset;
    if (bpf_probe_read_user((u8 *)(h + 1), n, (void *)e->base) != 0) {
        out_discard(h);
        e->flags |= FLAG_READ_FAULT;
        return 1;
    }
    return out_submit(ctx, h, sizeof(*h) + n) < 0;
}

static __always_inline void exiting_release(void)
{
    u32 zero = 0;
    u32 *busy = exiting_busy.lookup(&zero);
    if (busy)
        __sync_fetch_and_add(busy, -1);
}

// Tail-called from the exit handler (so the verifier checks the loop
// once), with the call in this CPU's `exiting` slot, held: sums the iovec
// lengths, copies up to the capture length in chunks, then emits the
// event record.
int gather_and_emit(struct bpf_raw_tracepoint_args *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = pid_tgid, zero = 0;
    struct wtrec_exit *e = exiting.lookup(&zero);
    if (!e) {
        exiting_release();
        return 0;
    }
    // Vectored calls: the requested count is the sum of the iovec lengths.
    if (e->iov) {
        e->count = 0;
        e->index = 0;
#pragma clang loop unroll(disable)
        for (int i = 0; i < MAX_IOV; i++) {
            u64 index = e->index;
            if (index >= e->iovcnt)
                break;
            struct user_iovec v = {};
            if (bpf_probe_read_user(&v, sizeof(v), (void *)(e->iov + index * sizeof(v))) != 0) {
                e->flags |= FLAG_READ_FAULT;
                break;
            }
            e->count += v.len;
            e->index = index + 1;
        }
        e->index = 0;
        e->left_in_iov = 0;
    }
    u64 want = direction_of(e->syscall) ? (e->ret > 0 ? (u64)e->ret : 0) : e->count;
    e->left = want > WTREC_SNAPLEN ? WTREC_SNAPLEN : want;
    e->offset = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < GATHER_STEPS; i++) {
        u64 left = e->left;
        if (!left)
            break;
        u64 in_iov = e->left_in_iov;
        if (!in_iov) {  // the next iovec, and its first chunk in the same step
            u64 index = e->index;
            if (!e->iov || index >= e->iovcnt)
                break;
            struct user_iovec v = {};
            if (bpf_probe_read_user(&v, sizeof(v), (void *)(e->iov + index * sizeof(v))) != 0) {
                e->flags |= FLAG_READ_FAULT;
                break;
            }
            e->index = index + 1;
            e->base = v.base;
            e->left_in_iov = v.len;
            in_iov = v.len;
            if (!in_iov)
                continue;
        }
        u64 n = in_iov;
        if (n > left)
            n = left;
        if (n > CHUNK_MAX)
            n = CHUNK_MAX;
        if (emit_chunk(ctx, e, tid, n) != 0) {
            e->flags |= FLAG_INCOMPLETE;
            break;
        }
        e->base += n;
        e->left_in_iov = in_iov - n;
        e->left = left - n;
        e->offset += n;
    }
    e->captured = e->offset;
    e->flags |= FLAG_CHUNKED;
    struct wtrec_event_header *h = out_reserve(sizeof(*h), 0);
    if (h) {
        fill_header(h, e, pid_tgid);
        count(out_submit(ctx, h, sizeof(*h)) < 0 ? COUNT_LOST_EVENTS : COUNT_SENT_EVENTS);
    } else {
        count(COUNT_LOST_EVENTS);
    }
    exiting_release();
    return 0;
}

// Exit of a traced data syscall: the common case, one buffer that fits a
// chunk, goes out inline from the stack; the rest is handed to
// gather_and_emit through this CPU's `exiting` slot.
static __always_inline int data_exit(void *ctx, u64 pid_tgid, u32 syscall,
                                     struct user_args *regs, s64 ret, struct wtrec_exit *e)
{
    e->ts_ns = bpf_ktime_get_boot_ns();
    e->fd = EXIT_ARG0(*regs);
    e->ret = ret;
    e->syscall = syscall;
    u64 base = 0;
    switch (syscall) {
    case SC_WRITEV:
    case SC_PWRITEV:
    case SC_PWRITEV2:
    case SC_READV:
        e->iov = ARG1(*regs);
        e->iovcnt = ARG2(*regs) > MAX_IOV ? MAX_IOV : ARG2(*regs);
        break;
    case SC_SENDMSG:
    case SC_RECVMSG: {
        struct user_msghdr64 msg = {};
        if (bpf_probe_read_user(&msg, sizeof(msg), (void *)ARG1(*regs)) != 0) {
            e->flags |= FLAG_READ_FAULT;
        } else {
            e->iov = msg.iov;
            e->iovcnt = msg.iovlen > MAX_IOV ? MAX_IOV : msg.iovlen;
        }
        break;
    }
    default:
        base = ARG1(*regs);
        e->count = ARG2(*regs);
    }
    if (!e->iov) {
        u64 want = direction_of(syscall) ? (ret > 0 ? (u64)ret : 0) : e->count;
        u64 n = want > WTREC_SNAPLEN ? WTREC_SNAPLEN : want;
        if (n <= CHUNK_MAX) {
            emit_inline(ctx, e, pid_tgid, base, n);
            return 0;
        }
    }
    // Large or vectored: hand the call over in this CPU's slot.
    u32 zero = 0;
    u32 *busy = exiting_busy.lookup(&zero);
    struct wtrec_exit *slot = exiting.lookup(&zero);
    if (!busy || !slot) {
        count(COUNT_LOST_EVENTS);
        return 0;
    }
    __sync_fetch_and_add(busy, 1);
    if (*busy != 1) {
        __sync_fetch_and_add(busy, -1);
        count(COUNT_LOST_EVENTS);
        return 0;
    }
    *slot = *e;
    slot->base = base;
    slot->left_in_iov = e->count;
    programs.call(ctx, PROG_GATHER);
    // Only reached if the tail call failed (gather_and_emit is loaded just
    // after the probes are attached): keep what fits one record.
    exiting_release();
    if (!e->iov) {
        e->flags |= FLAG_INCOMPLETE;
        emit_inline(ctx, e, pid_tgid, base, CHUNK_MAX);
    } else {
        count(COUNT_LOST_EVENTS);
    }
    return 0;
}

// Every syscall exit. Data syscalls: filter and emit here, from the saved
// registers. fd-naming ones: match the entry and tail-call fd_exit.
int on_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
    struct user_args regs = {};
    bpf_probe_read_kernel(&regs, sizeof(regs), (u8 *)ctx->args[0] + ARGS_OFFSET);
    s64 nr = NR(regs);
    tls_sys_exit(ctx, nr);
    u32 syscall = sc_of(nr);
    if (!syscall)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (syscall < SC_SOCKET) {
        if (!is_wanted(syscall) || !IS_64BIT(regs))
            return 0;
        struct wtrec_exit e = {};
        if (!traced_comm(pid_tgid, &e.comm))
            return 0;
        return data_exit(ctx, pid_tgid, syscall, &regs, ctx->args[1], &e);
    }
    u32 tid = pid_tgid;
    struct wtrec_pending *p = pending.lookup(&tid);
    if (!p)
        return 0;
    if (p->nr != nr) {  // a stale entry from an exit we never saw
        pending.delete(&tid);
        return 0;
    }
    if (p->syscall >= SC_CLONE) {  // sched_process_fork has seen it already
        pending.delete(&tid);
        return 0;
    }
    p->ret = ctx->args[1];
    programs.call(ctx, PROG_FD_EXIT);
    pending.delete(&tid);  // only reached if the tail call failed
    note_lost(pid_tgid);
    return 0;
}

// ---------------------------------------------------------------- fd notes

// A lost fd note leaves the recorder's idea of that process's descriptors
// possibly wrong: remember the process, and flag its next event so the
// recorder forgets what it knew (names become "unknown (lost)", never wrong).
static __always_inline void note_lost(u64 pid_tgid)
{
    u32 tgid = pid_tgid >> 32, zero = 0;
    u8 one = 1;
    count(COUNT_LOST_FD_NOTES);
    stale_fds.update(&tgid, &one);
    u32 *any = notes_lost.lookup(&zero);
    if (any)
        *any = 1;
}

// A zeroed fd note to fill, or 0 (then counted lost).
static __always_inline void *note_begin(u64 pid_tgid)
{
    struct wtrec_fd_note *n = out_reserve(sizeof(struct wtrec_fd_note), 0);
    if (!n) {
        note_lost(pid_tgid);
        return 0;
    }
    __builtin_memset(n, 0, sizeof(*n));
    return n;
}

static __always_inline void note_end(void *ctx, struct wtrec_fd_note *n, u32 op, u64 pid_tgid,
                                     s64 ret, s32 fd, s32 fd2)
{
    n->kind = KIND_FD;
    n->op = op;
    n->ts_ns = bpf_ktime_get_boot_ns();
    n->ret = ret;
    n->pid = pid_tgid >> 32;
    n->tid = (u32)pid_tgid;
    n->fd = fd;
    n->fd2 = fd2;
    if (out_submit(ctx, n, sizeof(*n)) < 0)
        note_lost(pid_tgid);
    else
        count(COUNT_SENT_FD_NOTES);
}

// Exit of an fd-making syscall (tail-called): say what the new fd is.
int fd_exit(struct bpf_raw_tracepoint_args *ctx)
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
    struct wtrec_fd_note *n = note_begin(pid_tgid);
    if (!n)
        return 0;
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
    note_end(ctx, n, syscall, pid_tgid, ret, fd, fd2);
    return 0;
}

// ---------------------------------------------------------------- tcp, processes

// A TCP connect() in progress. At SYN_SENT (in the connecting thread) the
// local port is not chosen yet, and later transitions may run in softirq
// context, so remember the socket by its address (a key, never read) and
// note the fd's addresses at its next transition, whoever runs it. An LRU
// map: a socket that never moves on cannot pin an entry for ever.
struct connecting_fd {
    u32 pid;
    u32 tid;
    s32 fd;
    u32 pad;
};
BPF_TABLE("lru_hash", u64, struct connecting_fd, connecting, 4096);

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
    struct wtrec_fd_note *n = note_begin(((u64)saved.pid << 32) | saved.tid);
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
    note_end(args, n, OP_TCP_CONNECT, ((u64)saved.pid << 32) | saved.tid, 0, saved.fd, -1);
    return 0;
}

// Follow child processes (a tracepoint: the raw one hands over kernel
// structs). It runs in the parent, inside its clone/fork syscall, whose
// flags entry kept: a new thread is not a process and takes no entry.
// A child the full table cannot take is counted, and said in the summary.
#if WTREC_FOLLOW
TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 parent = pid_tgid >> 32, tid = pid_tgid;
    if (!pid_filter.lookup(&parent))
        return 0;
    struct wtrec_pending *p = pending.lookup(&tid);
    if (p && (p->syscall == SC_CLONE || p->syscall == SC_CLONE3) && (p->a0 & CLONE_THREAD))
        return 0;
    u32 child = args->child_pid;
    u8 one = 1;
    if (pid_filter.update(&child, &one) != 0) {
        count(COUNT_UNFOLLOWED);
        return 0;
    }
    struct wtrec_fd_note *n = note_begin(pid_tgid);
    if (n)
        note_end(args, n, OP_FORK, pid_tgid, 0, -1, child);
    return 0;
}
#endif

// Forget threads and processes that are gone (their ids may be reused). A
// raw tracepoint: it needs only the current task's ids, and attaches and
// detaches in microseconds where a tracepoint takes a tenth of a second.
int on_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = pid_tgid;
    pending.delete(&tid);
    // The thread group leader's exit: tell the recorder, so it can forget
    // the process's descriptors (its pid may be reused).
    if (tid == pid_tgid >> 32 && traced(pid_tgid)) {
        struct wtrec_fd_note *n = note_begin(pid_tgid);
        if (n)
            note_end(ctx, n, OP_EXIT, pid_tgid, 0, -1, -1);
    }
    // With --follow, new threads' ids land in the filter too: drop them all.
    pid_filter.delete(&tid);
    stale_fds.delete(&tid);
    return 0;
}

// ---------------------------------------------------------------- TLS (record --tls)

// wtrec's TLS half (`record --tls`): the plaintext a program hands its TLS
// library (SSL_write, gnutls_record_send, wolfSSL_write...) or gets from it,
// with the socket underneath learned from the syscalls made during the call.
//
// Compiled only with -DWTREC_TLS=1; otherwise the three hooks the syscall
// programs call (tls_sys_enter, tls_sys_exit, tls_mark_event) are empty and
// cost nothing. Here, in the main file, because bcc rewrites map calls
// (tls_calls.lookup...) only there: in an included header they stay calls
// through a pointer, which the kernel refuses.
//
// A uprobe at each entry point notes the call per thread (tls_calls); the
// syscall hooks add each data syscall the thread makes meanwhile (its fd and
// bytes: the call's ciphertext) and keep each TLS thread's last socket fds
// (tls_threads: for libraries fed through memory BIOs, such as node's, whose
// socket I/O happens outside the call); the uretprobe sends one
// KIND_TLS record with the plaintext the call accepted or produced. Which
// of the fds is the connection is decided in user space
// (wtrec/capture/tls_connections.py), where the fd table is. Library
// structs are never read: their layout differs between versions.
#if WTREC_TLS

#include <uapi/linux/ptrace.h>  // struct pt_regs (user ABI) for PT_REGS_PARM*

// Plaintext bytes per TLS event: inline only (no chunks), and a perf
// buffer scratch record holds one event header + CHUNK_MAX.
#define TLS_DATA_MAX (CHUNK_MAX - 256)
#define TLS_SNAPLEN (WTREC_SNAPLEN < TLS_DATA_MAX ? WTREC_SNAPLEN : TLS_DATA_MAX)

#if defined(__x86_64__)
#define TLS_ARG0_OFFSET (ARGS_OFFSET + __builtin_offsetof(struct user_args, di))
#else
#define TLS_ARG0_OFFSET (ARGS_OFFSET + __builtin_offsetof(struct user_args, x))
#endif

struct tls_call {
    u64 call_ns;
    u64 conn;          // the SSL * / gnutls_session_t / WOLFSSL * argument: a key, never read
    u64 buf;           // plaintext in (write) or out (read)
    u64 size_out;      // the _ex forms' size_t * out-parameter, else 0
    u64 requested;     // the length argument
    s32 fds[TLS_CALL_FDS];
    u32 fd_in[TLS_CALL_FDS];
    u32 fd_out[TLS_CALL_FDS];
    s32 before_read_fd;
    s32 before_write_fd;
    u32 entry;
    u32 syscalls;
    u32 cipher_bytes;
};

struct tls_thread {
    s32 read_fd;
    s32 write_fd;
};

// By thread id. LRU, all three: a thread that dies inside a call (or
// between a syscall's entry and exit) leaves its entry behind, and a full
// plain hash would then refuse every later call.
BPF_TABLE("lru_hash", u32, struct tls_call, tls_calls, 16384);
BPF_TABLE("lru_hash", u32, s32, tls_pending_fd, 16384);  // fd of a data syscall in flight
BPF_TABLE("lru_hash", u32, struct tls_thread, tls_threads, 16384);  // ever in a TLS call

// 0: not a data syscall; 1: sends (write family); 2: receives. Compares,
// not a switch: clang may make a switch a jump table, which BPF cannot run.
static __always_inline int tls_data_direction(s64 nr)
{
    if (nr == __NR_write || nr == __NR_writev || nr == __NR_sendto || nr == __NR_sendmsg
        || nr == __NR_sendmmsg)
        return 1;
    if (nr == __NR_read || nr == __NR_readv || nr == __NR_recvfrom || nr == __NR_recvmsg
        || nr == __NR_recvmmsg)
        return 2;
    return 0;
}

// sys_enter, every syscall: a TLS thread's data syscall notes its fd.
static __always_inline void tls_sys_enter(struct bpf_raw_tracepoint_args *ctx, s64 nr)
{
    if (!tls_data_direction(nr))
        return;
    u32 tid = bpf_get_current_pid_tgid();
    if (!tls_threads.lookup(&tid))
        return;
    u64 arg0 = 0;
    bpf_probe_read_kernel(&arg0, sizeof(arg0), (u8 *)ctx->args[0] + TLS_ARG0_OFFSET);
    s32 fd = (s32)arg0;
    tls_pending_fd.update(&tid, &fd);
}

// sys_exit, every syscall: a data syscall that moved bytes updates the
// thread's last fds and, inside a TLS call, the call's ciphertext count.
static __always_inline void tls_sys_exit(struct bpf_raw_tracepoint_args *ctx, s64 nr)
{
    int direction = tls_data_direction(nr);
    if (!direction)
        return;
    u32 tid = bpf_get_current_pid_tgid();
    s32 *pending_fd = tls_pending_fd.lookup(&tid);
    if (!pending_fd)
        return;
    s32 fd = *pending_fd;
    tls_pending_fd.delete(&tid);
    s64 ret = ctx->args[1];
    if (ret <= 0)
        return;
    struct tls_thread *thread = tls_threads.lookup(&tid);
    if (thread) {
        if (direction == 2)
            thread->read_fd = fd;
        else
            thread->write_fd = fd;
    }
    struct tls_call *call = tls_calls.lookup(&tid);
    if (!call)
        return;
    call->syscalls += 1;
    call->cipher_bytes += (u32)ret;
#pragma unroll
    for (int i = 0; i < TLS_CALL_FDS; i++) {
        if (call->fds[i] == -1)
            call->fds[i] = fd;
        if (call->fds[i] == fd) {
            if (direction == 2)
                call->fd_in[i] += (u32)ret;
            else
                call->fd_out[i] += (u32)ret;
            break;
        }
    }
}

// A syscall event emitted while its thread is inside a TLS call: flagged,
// so the recorder can tie it to the call (it is that call's ciphertext).
static __always_inline void tls_mark_event(struct wtrec_event_header *h, u64 pid_tgid)
{
    u32 tid = pid_tgid;
    if (tls_calls.lookup(&tid))
        h->flags |= FLAG_TLS_CIPHER;
}

static __always_inline int tls_enter(struct pt_regs *ctx, u32 entry, u64 size_out)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!traced(pid_tgid))  // a uprobe on a library fires in every process mapping it
        return 0;
    u32 tid = pid_tgid;
    struct tls_thread none = {-1, -1};
    struct tls_thread *last = tls_threads.lookup_or_try_init(&tid, &none);
    struct tls_call call = {};
    call.call_ns = bpf_ktime_get_boot_ns();
    call.conn = PT_REGS_PARM1(ctx);
    call.buf = PT_REGS_PARM2(ctx);
    call.requested = PT_REGS_PARM3(ctx);
    call.size_out = size_out;
    call.entry = entry;
#pragma unroll
    for (int i = 0; i < TLS_CALL_FDS; i++)
        call.fds[i] = -1;
    call.before_read_fd = last ? last->read_fd : -1;
    call.before_write_fd = last ? last->write_fd : -1;
    // Update, not insert: a call that never returned (thread killed, longjmp)
    // must not block the thread's later calls. A nested call (GnuTLS's
    // OpenSSL shim: SSL_write calls gnutls_record_send) replaces the outer
    // one, whose return then finds another entry and sends nothing: the
    // inner call's event holds the same plaintext.
    tls_calls.update(&tid, &call);
    return 0;
}

// How the return value is read: OpenSSL and wolfSSL return int (the upper
// half of the register is not theirs to set: -1 must not read as 4294967295),
// GnuTLS ssize_t; the _ex forms return 1/0 and store the length through
// their 4th argument, readable now that the call is over.
#define RET_INT 0
#define RET_INT_EX 1
#define RET_SSIZE 2

static __always_inline int tls_leave(struct pt_regs *ctx, u32 entry, int style)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = pid_tgid;
    struct tls_call *call = tls_calls.lookup(&tid);
    if (!call || call->entry != entry)
        return 0;
    s64 ret = style == RET_SSIZE ? (s64)PT_REGS_RC(ctx) : (s64)(int)PT_REGS_RC(ctx);
    u64 len = 0;
    if (style == RET_INT_EX) {
        if (ret == 1 && call->size_out)
            bpf_probe_read_user(&len, sizeof(len), (void *)call->size_out);
    } else if (ret > 0) {
        len = (u64)ret;
    }
    // Opaque to the compiler, so the bounds below are checked on this very
    // register (else clang clamps a copy, and the verifier sees an unbounded n).
    u64 n = len;
    asm volatile("" : "+r"(n));
    if (n > TLS_SNAPLEN)
        n = TLS_SNAPLEN;
    struct wtrec_tls_event *e = out_reserve(sizeof(*e), n);
    if (!e) {
        count(COUNT_LOST_EVENTS);
        tls_calls.delete(&tid);
        return 0;
    }
    // The plaintext first, while the verifier still knows n fits the record.
    u32 flags = 0;
    if (n && bpf_probe_read_user((u8 *)(e + 1), n, (void *)call->buf) != 0) {
        flags = FLAG_READ_FAULT;
        n = 0;
    }
    e->kind = KIND_TLS;
    e->flags = flags;
    e->captured = n;
    e->ts_ns = bpf_ktime_get_boot_ns();
    e->call_ns = call->call_ns;
    e->conn = call->conn;
    e->requested = call->requested;
    e->ret = ret;
    e->len = len;
    e->pid = pid_tgid >> 32;
    e->tid = tid;
    e->uid = (u32)bpf_get_current_uid_gid();
    e->syscalls = call->syscalls;
    e->cipher_bytes = call->cipher_bytes;
#pragma unroll
    for (int i = 0; i < TLS_CALL_FDS; i++) {
        e->fds[i] = call->fds[i];
        e->fd_in[i] = call->fd_in[i];
        e->fd_out[i] = call->fd_out[i];
    }
    e->before_read_fd = call->before_read_fd;
    e->before_write_fd = call->before_write_fd;
    e->entry = entry;
    e->pad = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    tls_calls.delete(&tid);
    count(out_submit(ctx, e, sizeof(*e) + n) < 0 ? COUNT_LOST_EVENTS : COUNT_SENT_EVENTS);
    return 0;
}

// One uprobe and one uretprobe program per entry point, written out (bcc
// does not rewrite code that comes from a macro). The ids are the order of
// ENTRY_POINTS in wtrec/capture/tls_libraries.py, plus one; the recorder
// attaches tls_enter_<symbol> / tls_leave_<symbol> (lower case); a test
// checks the three agree.
int tls_enter_ssl_write(struct pt_regs *ctx) { return tls_enter(ctx, 1, 0); }
int tls_leave_ssl_write(struct pt_regs *ctx) { return tls_leave(ctx, 1, RET_INT); }
int tls_enter_ssl_write_ex(struct pt_regs *ctx) { return tls_enter(ctx, 2, PT_REGS_PARM4(ctx)); }
int tls_leave_ssl_write_ex(struct pt_regs *ctx) { return tls_leave(ctx, 2, RET_INT_EX); }
int tls_enter_ssl_read(struct pt_regs *ctx) { return tls_enter(ctx, 3, 0); }
int tls_leave_ssl_read(struct pt_regs *ctx) { return tls_leave(ctx, 3, RET_INT); }
int tls_enter_ssl_read_ex(struct pt_regs *ctx) { return tls_enter(ctx, 4, PT_REGS_PARM4(ctx)); }
int tls_leave_ssl_read_ex(struct pt_regs *ctx) { return tls_leave(ctx, 4, RET_INT_EX); }
int tls_enter_gnutls_record_send(struct pt_regs *ctx) { return tls_enter(ctx, 5, 0); }
int tls_leave_gnutls_record_send(struct pt_regs *ctx) { return tls_leave(ctx, 5, RET_SSIZE); }
int tls_enter_gnutls_record_recv(struct pt_regs *ctx) { return tls_enter(ctx, 6, 0); }
int tls_leave_gnutls_record_recv(struct pt_regs *ctx) { return tls_leave(ctx, 6, RET_SSIZE); }
int tls_enter_wolfssl_write(struct pt_regs *ctx) { return tls_enter(ctx, 7, 0); }
int tls_leave_wolfssl_write(struct pt_regs *ctx) { return tls_leave(ctx, 7, RET_INT); }
int tls_enter_wolfssl_read(struct pt_regs *ctx) { return tls_enter(ctx, 8, 0); }
int tls_leave_wolfssl_read(struct pt_regs *ctx) { return tls_leave(ctx, 8, RET_INT); }

#endif  // WTREC_TLS
