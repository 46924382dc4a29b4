// wtrec's kernel half: copy the user buffer of every traced write(2).
//
// Compiled by bcc with -D defines (never string replacement):
//   WTREC_SNAPLEN        bytes captured per write (ring buffer: up to 1 MiB,
//                        perf buffer: up to 16384)
//   WTREC_USE_PERF       1: perf buffer (per-CPU) instead of the ring buffer
//   WTREC_RINGBUF_PAGES  ring buffer size in pages (power of two)
//   WTREC_TRACE_ALL      1: no pid/comm filter
//   WTREC_SELF_TGID      the recorder's own pid, never traced
//
// It reads only tracepoint arguments, helpers and user memory: the kernel
// headers bcc compiles against may belong to another kernel, so kernel
// structs are off limits. The event layout below is mirrored by
// wtrec/kernel_event.py; change both together.
#include <uapi/linux/ptrace.h>

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
#ifndef WTREC_SELF_TGID
#define WTREC_SELF_TGID 0
#endif

#define WTREC_FLAG_READ_FAULT 1  // the user buffer could not be read

struct wtrec_event_header {
    u64 ts_ns;      // bpf_ktime_get_boot_ns()
    u64 count;      // bytes the process asked to write
    u32 pid;        // tgid
    u32 tid;
    u32 uid;
    s32 fd;
    u32 captured;   // bytes of data that follow
    u32 flags;
    char comm[16];
};

struct comm_key {
    char name[16];
};

BPF_HASH(pid_filter, u32, u8, 4096);
BPF_HASH(comm_filter, struct comm_key, u8, 256);
// Events the kernel side had to drop; the recorder reads and records them.
BPF_PERCPU_ARRAY(lost_counts, u64, 1);

static __always_inline void count_lost(void)
{
    u32 zero = 0;
    u64 *lost = lost_counts.lookup(&zero);
    if (lost)
        __sync_fetch_and_add(lost, 1);  // atomic: a preempting program may count too
}

static __always_inline void fill_header(struct wtrec_event_header *h, u64 pid_tgid,
                                        struct comm_key *key, s32 fd, u64 count)
{
    h->ts_ns = bpf_ktime_get_boot_ns();
    h->count = count;
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->uid = (u32)bpf_get_current_uid_gid();
    h->fd = fd;
    h->captured = 0;
    h->flags = 0;
    __builtin_memcpy(h->comm, key->name, sizeof(h->comm));
}

#if WTREC_USE_PERF

BPF_PERF_OUTPUT(events);

struct perf_scratch {
    u32 busy;  // set while a program on this CPU fills `event`
    u32 pad;
    struct {
        struct wtrec_event_header h;
        u8 data[WTREC_SNAPLEN];
    } event;
};
BPF_PERCPU_ARRAY(scratch, struct perf_scratch, 1);

static __always_inline int emit(void *ctx, u64 pid_tgid, struct comm_key *key, s32 fd,
                                const void *buf, u64 count)
{
    u32 zero = 0;
    struct perf_scratch *s = scratch.lookup(&zero);
    if (!s)
        return 0;
    // Programs run preemptibly here, so a preempted one may still own this
    // CPU's scratch. Take it by an atomic increment, then look: anything
    // but 1 means another holder, so drop and count rather than corrupt.
    // (Fetching atomics need BPF v3, which bcc does not target.)
    __sync_fetch_and_add(&s->busy, 1);
    if (s->busy != 1) {
        __sync_fetch_and_add(&s->busy, -1);
        count_lost();
        return 0;
    }
    u64 n = count > WTREC_SNAPLEN ? WTREC_SNAPLEN : count;
    fill_header(&s->event.h, pid_tgid, key, fd, count);
    if (n && bpf_probe_read_user(s->event.data, n, buf) != 0) {
        n = 0;
        s->event.h.flags |= WTREC_FLAG_READ_FAULT;
    }
    s->event.h.captured = n;
    u64 size = sizeof(struct wtrec_event_header) + n;
    if (size > sizeof(s->event))
        size = sizeof(s->event);
    int ret = events.perf_submit(ctx, &s->event, size);
    // -ENOSPC (buffer full) reaches the recorder as a perf lost record.
    if (ret < 0 && ret != -28)
        count_lost();
    __sync_fetch_and_add(&s->busy, -1);
    return 0;
}

#else  // ring buffer

BPF_RINGBUF_OUTPUT(events, WTREC_RINGBUF_PAGES);

// bcc cannot rewrite map calls inside macros, so the macro below goes
// through these; inlined, `size` is still the constant the verifier needs.
static __always_inline void *ring_reserve(u64 size)
{
    return events.ringbuf_reserve(size);
}

static __always_inline void ring_submit(void *record)
{
    events.ringbuf_submit(record, 0);
}

// Reserve a record sized to a class that fits the capture: the ring buffer
// needs a constant size, and a per-write reservation avoids shared scratch.
#define WTREC_EMIT_CLASS(CAP)                                                  \
    if (n <= (CAP)) {                                                          \
        struct {                                                               \
            struct wtrec_event_header h;                                       \
            u8 data[CAP];                                                      \
        } *rec = ring_reserve(sizeof(*rec));                                     \
        if (!rec) {                                                            \
            count_lost();                                                      \
            return 0;                                                          \
        }                                                                      \
        fill_header(&rec->h, pid_tgid, key, fd, count);                        \
        if (n && bpf_probe_read_user(rec->data, n, buf) != 0) {                \
            n = 0;                                                             \
            rec->h.flags |= WTREC_FLAG_READ_FAULT;                             \
        }                                                                      \
        rec->h.captured = n;                                                   \
        ring_submit(rec);                                                      \
        return 0;                                                              \
    }

static __always_inline int emit(void *ctx, u64 pid_tgid, struct comm_key *key, s32 fd,
                                const void *buf, u64 count)
{
    u64 n = count > WTREC_SNAPLEN ? WTREC_SNAPLEN : count;
#if WTREC_SNAPLEN > 64
    WTREC_EMIT_CLASS(64)
#endif
#if WTREC_SNAPLEN > 256
    WTREC_EMIT_CLASS(256)
#endif
#if WTREC_SNAPLEN > 1024
    WTREC_EMIT_CLASS(1024)
#endif
#if WTREC_SNAPLEN > 4096
    WTREC_EMIT_CLASS(4096)
#endif
#if WTREC_SNAPLEN > 16384
    WTREC_EMIT_CLASS(16384)
#endif
#if WTREC_SNAPLEN > 65536
    WTREC_EMIT_CLASS(65536)
#endif
#if WTREC_SNAPLEN > 262144
    WTREC_EMIT_CLASS(262144)
#endif
    WTREC_EMIT_CLASS(WTREC_SNAPLEN)
    return 0;
}

#endif

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (tgid == WTREC_SELF_TGID)
        return 0;
    struct comm_key key = {};
    bpf_get_current_comm(&key.name, sizeof(key.name));
#if !WTREC_TRACE_ALL
    if (!pid_filter.lookup(&tgid) && !comm_filter.lookup(&key))
        return 0;
#endif
    return emit(args, pid_tgid, &key, (s32)args->fd, (const void *)args->buf, args->count);
}
