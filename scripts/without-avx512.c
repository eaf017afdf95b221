/*
 * Preloaded into a process (scripts/without-avx512.sh), hides AVX-512, AVX-VNNI, AVX512-BF16
 * and AMX from its CPUID, so that code which picks its kernels at run time (dekm-edge through
 * pulp, onnxruntime's MLAS, glibc's string functions after start-up) takes the AVX2 + FMA path
 * an AMD Zen 3 or an older Intel core would take, natively and at full speed.
 *
 * How: the kernel's CPUID faulting (arch_prctl ARCH_SET_CPUID 0, the cpuid_fault flag) turns
 * every CPUID instruction of this process into a SIGSEGV; the handler below runs the real
 * instruction with faulting briefly off, clears the feature bits and steps over it. The setting
 * is per thread and inherited by new threads; exec resets it, and LD_PRELOAD sets it again in
 * the new program. Processes that install their own SIGSEGV handler over this one (rustc does)
 * cannot run under it: wrap the test or benchmark binaries (cargo's runner), not cargo.
 *
 * If faulting cannot be turned on, the process stops at once with a message rather than run
 * with AVX-512 and be taken for an AVX2 run.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* CPUID.(EAX=7,ECX=0): EBX AVX512F, DQ, IFMA, PF, ER, CD, BW, VL; ECX VBMI, VBMI2, VNNI,
 * BITALG, VPOPCNTDQ; EDX 4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, FP16, AMX-TILE, AMX-INT8.
 * CPUID.(EAX=7,ECX=1): EAX AVX-VNNI, AVX512-BF16. */
#define B(n) (1u << (n))
static const unsigned HIDE_7_0_EBX = B(16) | B(17) | B(21) | B(26) | B(27) | B(28) | B(30) | B(31);
static const unsigned HIDE_7_0_ECX = B(1) | B(6) | B(11) | B(12) | B(14);
static const unsigned HIDE_7_0_EDX = B(2) | B(3) | B(8) | B(22) | B(23) | B(24) | B(25);
static const unsigned HIDE_7_1_EAX = B(4) | B(5);

static void cpuid_masked(unsigned leaf, unsigned sub, unsigned r[4]) {
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
  syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
  if (leaf == 7 && sub == 0) {
    r[1] &= ~HIDE_7_0_EBX;
    r[2] &= ~HIDE_7_0_ECX;
    r[3] &= ~HIDE_7_0_EDX;
  }
  if (leaf == 7 && sub == 1) r[0] &= ~HIDE_7_1_EAX;
}

static void on_segv(int sig, siginfo_t *info, void *context) {
  (void)info;
  greg_t *g = ((ucontext_t *)context)->uc_mcontext.gregs;
  const unsigned char *ip = (const unsigned char *)g[REG_RIP];
  if (ip[0] == 0x0f && ip[1] == 0xa2) { /* cpuid */
    unsigned r[4];
    cpuid_masked((unsigned)g[REG_RAX], (unsigned)g[REG_RCX], r);
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
    return;
  }
  /* A real fault: let it kill the process as it would have. */
  signal(sig, SIG_DFL);
}

__attribute__((constructor)) static void hide_avx512(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  if (sigaction(SIGSEGV, &sa, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
    fprintf(stderr, "without-avx512: this CPU or kernel cannot make CPUID fault "
                    "(arch_prctl ARCH_SET_CPUID); not running with AVX-512 visible\n");
    _exit(3);
  }
  unsigned a, b, c, d;
  __cpuid_count(7, 0, a, b, c, d);
  if (b & B(16)) {
    fprintf(stderr, "without-avx512: AVX-512 still visible after masking\n");
    _exit(3);
  }
}
