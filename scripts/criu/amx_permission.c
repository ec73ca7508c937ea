/*
 * Preloaded into `criu restore` by scripts/install-criu.sh.
 *
 * Since Linux 5.16 a process must ask for Intel AMX's tile state before it may use AMX
 * (arch_prctl ARCH_REQ_XCOMP_PERM); the permission is kept across fork but not across
 * execve, and CRIU does not restore it. vLLM's CPU build uses AMX where the CPU has it
 * (oneDNN asks at start-up), so a restored engine died with SIGILL at its first request.
 * criu forks every task it restores: asked for here, in criu itself, before main(), the
 * permission is inherited by the restored engine. Elsewhere (no AMX, another CPU) the
 * call fails and nothing changes.
 */
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

__attribute__((constructor)) static void llmux_request_amx(void)
{
#ifdef SYS_arch_prctl
    syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
#endif
}
