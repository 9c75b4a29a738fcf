// without-io-uring PROGRAM [ARGS...]
//
// Runs PROGRAM the way Docker's default seccomp profile (Engine 25.0 and later) would:
// io_uring_setup, io_uring_enter and io_uring_register fail with EPERM, everything else is
// allowed. That lets the tests check the epoll fallback on an ordinary machine, without Docker
// or root. The filter is a hand-written classic BPF program (no libseccomp to install), and it
// is inherited across execve and by every child, so PROGRAM cannot get out of it.
//
// Exit status: PROGRAM's own once it runs; 125 when the launcher itself fails (usage, an
// unsupported architecture, the kernel refusing the filter); 127 when PROGRAM cannot be
// executed (as env and timeout do). On success the launcher prints nothing: the tests compare
// PROGRAM's output, standard error included, line for line.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// Since Linux 5.1 new system calls get the same number on every architecture (alpha aside), so
// io_uring is 425, 426 and 427 natively and in each one's 32-bit compat mode alike.
enum { io_uring_setup_nr = 425, io_uring_enter_nr = 426, io_uring_register_nr = 427 };

// seccomp hands the filter the raw system call number together with an audit architecture: a
// number means nothing without it (425 is io_uring_setup on x86_64, and could be anything on an
// architecture the table above does not cover). Only the architectures the project supports are
// known here; the compat one is the 32-bit ABI a process of the native one can still call
// (int 0x80 on x86_64, AArch32 on aarch64).
#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define COMPAT_ARCH AUDIT_ARCH_I386
#define ARCH_NAME "x86_64"
// x32 programs run with AUDIT_ARCH_X86_64 too, their numbers offset by this bit; clearing it
// makes x32's io_uring calls compare equal to the native ones.
#define X32_SYSCALL_BIT 0x40000000U
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#define COMPAT_ARCH AUDIT_ARCH_ARM
#define ARCH_NAME "aarch64"
#endif

static const char *const usage =
    "usage: without-io-uring PROGRAM [ARGS...]\n"
    "Runs PROGRAM with io_uring_setup, io_uring_enter and io_uring_register failing with EPERM,\n"
    "as under Docker's default seccomp profile.\n";

#ifdef NATIVE_ARCH
static int install_filter(void) {
    struct sock_filter program[] = {
        // 0: which ABI is calling?
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, COMPAT_ARCH, 1, 0),
        // 3: an ABI whose numbers this filter does not know cannot be checked, so it is not let
        // through unchecked (no process on these machines can use one).
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        // 4: the number, then 425...427 -> EPERM, all else allowed.
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef X32_SYSCALL_BIT
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, ~X32_SYSCALL_BIT),
#endif
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, io_uring_setup_nr, 0, 2),
        BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, io_uring_register_nr, 1, 0),
        // EPERM, as Docker's profile answers (its default action is SCMP_ACT_ERRNO): the library
        // must take it for "blocked by policy", not "kernel too old" (that would be ENOSYS).
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog fprog = {
        .len = (unsigned short)(sizeof(program) / sizeof(program[0])),
        .filter = program,
    };

    // Without CAP_SYS_ADMIN the kernel accepts a filter only from a process that promised not to
    // gain privileges on exec (no setuid escalation past the filter); a test needs no more.
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "without-io-uring: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
        return -1;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0) {
        fprintf(stderr,
                "without-io-uring: prctl(PR_SET_SECCOMP): %s (a kernel without "
                "CONFIG_SECCOMP_FILTER?)\n",
                strerror(errno));
        return -1;
    }

    // Check it before running anything. io_uring_setup without parameters fails either way
    // (EFAULT where allowed), so no ring is made; EPERM comes from this filter (or from a policy
    // outside that blocks io_uring already, which serves the caller just as well).
    if (syscall(io_uring_setup_nr, 0, NULL) != -1 || errno != EPERM) {
        fprintf(stderr,
                "without-io-uring: the filter is installed but io_uring_setup is not refused "
                "with EPERM (%s)\n",
                strerror(errno));
        return -1;
    }
    return 0;
}
#endif

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 125 : 0;
    }
#ifndef NATIVE_ARCH
    fprintf(stderr,
            "without-io-uring: this architecture is not supported (only x86_64 and aarch64): the "
            "filter matches system call numbers, which it knows only for those\n");
    return 125;
#else
    if (install_filter() != 0) {
        return 125;
    }
    // argv is NULL-terminated, so argv + 1 is PROGRAM's own argv. execvp searches PATH as a
    // shell would.
    execvp(argv[1], argv + 1);
    fprintf(stderr, "without-io-uring: cannot execute %s: %s\n", argv[1], strerror(errno));
    return 127;
#endif
}
