// The records wtrec's BPF program hands to user space: the one definition.
//
// Included by write_tracer.bpf.c (compiled by bcc) and, in the test suite,
// by a small C program built with the host compiler that prints every
// field's offset, so the Python decoder (wtrec/capture/kernel_records.py)
// is checked against these structs as compiled. Only fixed-width UAPI types:
// the layout is the same for the BPF target and the host.
#ifndef WTREC_RECORDS_H
#define WTREC_RECORDS_H

#include <linux/types.h>

// Record kinds: the first u32 of every record.
#define KIND_EVENT 1
#define KIND_CHUNK 2
#define KIND_FD 3
#define KIND_TLS 4            // a TLS library call (record --tls): bpf/tls_tracer.h

// Event flags.
#define FLAG_READ_FAULT 1     // user memory could not be read: data short or missing
#define FLAG_CHUNKED 2        // data came before, in chunk records
#define FLAG_INCOMPLETE 4     // a chunk could not be emitted (data short)
#define FLAG_FDS_STALE 8      // an fd note of this process was lost before this event
#define FLAG_TLS_CIPHER 16    // made while its thread was inside a TLS library call

// Syscall ids (wtrec's own numbering, mirrored in kernel_records.py).
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
#define SC_CLONE 46           // clone, clone3, fork, vfork: seen only to follow
#define SC_CLONE3 47          // processes (and not threads) with --follow
#define SC_FORK 48
#define SC_VFORK 49
#define SC_LIMIT 64           // size of the wanted-syscall table
#define OP_TCP_CONNECT 60     // fd note from sock:inet_sock_set_state
#define OP_EXIT 61            // fd note: the process (thread group) exited
#define OP_FORK 62            // fd note: pid forked process fd2, which inherits its fds

// Slots of the counts array, summed over CPUs by the recorder.
#define COUNT_LOST_EVENTS 0   // events (syscalls) that could not be sent
#define COUNT_LOST_FD_NOTES 1 // fd notes that could not: some identities unknown
#define COUNT_SENT_EVENTS 2   // event records sent (taken or not by the recorder)
#define COUNT_SENT_FD_NOTES 3
#define COUNT_UNFOLLOWED 4    // new processes the full process table could not take
#define COUNT_SLOTS 5

struct wtrec_event_header {
    __u32 kind;        // KIND_EVENT
    __u32 flags;
    __u64 ts_ns;       // bpf_ktime_get_boot_ns() at syscall exit (emission)
    __u64 entry_ns;    // ... at syscall entry: with tid, names the event's chunks
    __u64 count;       // bytes the process asked to write / read
    __s64 ret;         // the syscall's return value
    __u32 pid;         // tgid
    __u32 tid;
    __u32 uid;
    __s32 fd;
    __u32 captured;    // data bytes: inline after this header, or in chunks
    __u16 syscall;     // SC_*
    __u16 direction;   // 0 out (write family), 1 in (read family)
    char comm[16];
};

struct wtrec_chunk_header {
    __u32 kind;        // KIND_CHUNK
    __u32 len;         // data bytes that follow
    __u64 ts_ns;       // the event's entry_ns; with tid, names the event
    __u32 tid;
    __u32 offset;      // where this chunk goes in the event's data
};

struct wtrec_fd_note {
    __u32 kind;        // KIND_FD
    __u32 op;          // SC_*, OP_TCP_CONNECT or OP_EXIT
    __u64 ts_ns;
    __s64 ret;
    __u32 pid;
    __u32 tid;
    __s32 fd;
    __s32 fd2;         // pipe/socketpair: the second fd; dup: the old fd
    __u32 a0;          // socket: family; tcp: family
    __u32 a1;          // socket: type; tcp: sport
    __u32 a2;          // socket: protocol; tcp: dport
    __u32 len;         // bytes used in blob
    __u8 blob[256];    // sockaddr, path, or tcp: 16-byte saddr + 16-byte daddr
};

// A TLS library call (record --tls), sent at its return; `captured`
// plaintext bytes follow inline.
#define TLS_CALL_FDS 4
struct wtrec_tls_event {
    __u32 kind;        // KIND_TLS
    __u32 flags;       // FLAG_READ_FAULT
    __u64 ts_ns;       // bpf_ktime_get_boot_ns() at return (emission)
    __u64 call_ns;     // ... at entry
    __u64 conn;        // the library's connection handle (first argument): a key
    __u64 requested;   // the length argument
    __s64 ret;         // the library's return value (int ones sign-extended)
    __u64 len;         // plaintext bytes the call moved (ret, or the _ex out-parameter)
    __u32 pid;
    __u32 tid;
    __u32 uid;
    __u32 captured;    // plaintext bytes that follow
    __u32 syscalls;    // data syscalls that moved bytes during the call
    __u32 cipher_bytes;  // ... and their bytes
    __s32 fds[TLS_CALL_FDS];     // distinct fds of those syscalls (-1: unused)
    __u32 fd_in[TLS_CALL_FDS];   // bytes each received
    __u32 fd_out[TLS_CALL_FDS];  // bytes each sent
    __s32 before_read_fd;        // the thread's last read-side fd before the call
    __s32 before_write_fd;
    __u32 entry;       // entry point: index in ENTRY_POINTS (tls_libraries.py) + 1
    __u32 pad;
    char comm[16];
};

#endif
