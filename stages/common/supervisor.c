/* supervisor.c — restart, watchdog and poison marking (see supervisor.h). */
#include "stages/common/supervisor.h"

#include "bus/watch.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"
#include "util/proc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_sig;
static volatile pid_t worker;

static void on_stop(int sig)
{
    stop_sig = sig;
    if (worker > 0)
        kill(worker, sig);
}

static void nap_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_sig) {
    }
}

/* CPU time (utime + stime) of one thread of pid, in ms; -1 if gone. */
static int64_t thread_cpu_ms(pid_t pid, int tid)
{
    char path[64], buf[512];
    const char *p;
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, tid);
    unsigned long long ut = 0, st = 0;
    if (!mb_proc_stat(path, buf, sizeof buf, &p) ||
        sscanf(p, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (int64_t)((ut + st) * 1000 / (unsigned long long)(hz > 0 ? hz : 100));
}

typedef struct {
    uint32_t gen;
    int tid;
    int64_t cpu0; /* thread CPU at the last progress */
} slot_seen;

/* A slot whose thread spent more than limit ms of CPU since its last
 * progress, or -1. */
static int stuck_slot(mb_watch *w, pid_t pid, slot_seen *seen, int64_t limit)
{
    for (int i = 0; i < MB_WATCH_SLOTS; i++) {
        mb_watch_slot *s = &w->slot[i];
        uint32_t gen = atomic_load(&s->gen);
        int tid = atomic_load(&s->tid);
        if (!tid || !atomic_load(&s->seq)) {
            seen[i].tid = 0;
            continue;
        }
        int64_t cpu = thread_cpu_ms(pid, tid);
        if (cpu < 0)
            continue;
        if (gen != seen[i].gen || tid != seen[i].tid) {
            seen[i] = (slot_seen){gen, tid, cpu};
            continue;
        }
        if (cpu - seen[i].cpu0 > limit)
            return i;
    }
    return -1;
}

static void add_poison(const char *stage, mb_watch *w, const mb_watch_slot *s,
                       const char *reason)
{
    uint64_t seq = atomic_load(&s->seq);
    for (int i = 0; i < MB_WATCH_POISON; i++) {
        mb_watch_poison *p = &w->poison[i];
        if (atomic_load(&p->state) == MB_POISON_PENDING && p->seq == seq &&
            !strcmp(p->stream, w->stream))
            return;
    }
    for (int i = 0; i < MB_WATCH_POISON; i++) {
        mb_watch_poison *p = &w->poison[i];
        if (atomic_load(&p->state) != MB_POISON_FREE)
            continue;
        p->seq = seq;
        p->deliveries = atomic_load(&s->deliveries);
        memcpy(p->stream, w->stream, sizeof p->stream);
        p->stream[sizeof p->stream - 1] = '\0';
        snprintf(p->reason, sizeof p->reason, "%.32s: %.200s", stage, reason);
        atomic_store(&p->state, MB_POISON_PENDING);
        MB_ERROR(NULL, NULL, "supervisor: %s seq %llu marked poison: %s", w->stream,
                 (unsigned long long)seq, reason);
        return;
    }
    MB_ERROR(NULL, NULL, "supervisor: no room to mark %s seq %llu poison (%s)", w->stream,
             (unsigned long long)seq, reason);
}

/* After a worker died: poison the record that did it — the stuck thread's,
 * or after a crash the one record in hand. A crash with several records in
 * hand (threads, or batch-level work) names none: the next worker takes
 * records one at a time for a while, so that a second crash does. */
static void blame(const char *stage, mb_watch *w, const char *how, int stuck)
{
    char reason[MB_WATCH_REASON_MAX];
    int busy = 0;
    for (int i = 0; i < MB_WATCH_SLOTS; i++)
        busy += atomic_load(&w->slot[i].tid) && atomic_load(&w->slot[i].seq);
    for (int i = 0; i < MB_WATCH_SLOTS; i++) {
        mb_watch_slot *s = &w->slot[i];
        if (!atomic_load(&s->tid) || !atomic_load(&s->seq) || (stuck >= 0 && i != stuck))
            continue;
        int batch = stuck < 0 && busy > 1 ? 2 * MB_WATCH_SLOTS : atomic_load(&s->batch);
        if (batch <= 1) {
            snprintf(reason, sizeof reason, "%s while handling this record", how);
            add_poison(stage, w, s, reason);
        } else {
            MB_WARN(NULL, NULL, "supervisor: %s with %d records in hand; the next worker "
                    "takes records one at a time", how, busy > 1 ? busy : batch);
            atomic_store(&w->isolate, 2 * batch);
            break;
        }
    }
    for (int i = 0; i < MB_WATCH_SLOTS; i++) {
        atomic_store(&w->slot[i].seq, 0);
        atomic_store(&w->slot[i].tid, 0);
    }
}

int mb_supervise(const char *stage)
{
    const char *sup = mb_env("MAILBUS_SUPERVISE", "1");
    if (!strcmp(sup, "0"))
        return -1;
    long limit;
    if (mb_env_int("MAILBUS_WATCHDOG_MS", 60000, 100, 86400000, &limit)) {
        MB_ERROR(NULL, NULL, "%s", mb_err_last());
        return MB_EXIT_CONFIG;
    }
    mb_watch *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                       -1, 0);
    if (w == MAP_FAILED) {
        MB_ERROR(NULL, NULL, "supervisor: mmap: %s", strerror(errno));
        return 1;
    }
    memset(w, 0, sizeof *w);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pid_t self = getpid();
    int64_t delay = 500;
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) {
            MB_ERROR(NULL, NULL, "supervisor: fork: %s", strerror(errno));
            nap_ms(5000);
            continue;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != self)
                _exit(1);
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            mb_watch_attach(w);
            return -1;
        }
        worker = pid;
        if (stop_sig) /* a stop that came before the worker existed */
            kill(pid, stop_sig);
        int64_t started = mb_mono_ms(), last_poll = 0;
        slot_seen seen[MB_WATCH_SLOTS];
        memset(seen, 0, sizeof seen);
        int status = 0, stuck = -1;
        for (;;) {
            pid_t r = waitpid(pid, &status, WNOHANG);
            if (r == pid || (r < 0 && errno != EINTR))
                break;
            int64_t now = mb_mono_ms();
            if (!stop_sig && stuck < 0 && now - last_poll >= 1000) {
                last_poll = now;
                stuck = stuck_slot(w, pid, seen, limit);
                if (stuck >= 0) {
                    MB_ERROR(NULL, NULL, "supervisor: watchdog: a handler thread spent %ld ms "
                             "of CPU on %s seq %llu without progress; killing worker %d",
                             limit, w->stream,
                             (unsigned long long)atomic_load(&w->slot[stuck].seq), (int)pid);
                    kill(pid, SIGKILL);
                }
            }
            nap_ms(100);
        }
        worker = 0;
        if (stop_sig) /* asked to stop: the worker's status is ours */
            return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 2 ||
                                  WEXITSTATUS(status) == MB_EXIT_CONFIG))
            return WEXITSTATUS(status);
        char how[96];
        if (stuck >= 0)
            snprintf(how, sizeof how, "watchdog: %ld ms of CPU without progress", limit);
        else if (WIFSIGNALED(status))
            snprintf(how, sizeof how, "worker killed by signal %d (%s)", WTERMSIG(status),
                     strsignal(WTERMSIG(status)));
        else
            snprintf(how, sizeof how, "worker exited with status %d", WEXITSTATUS(status));
        blame(stage, w, how, stuck);
        if (mb_mono_ms() - started > 60000)
            delay = 500;
        int64_t wait = stuck >= 0 ? 0 : delay;
        MB_WARN(NULL, NULL, "supervisor: %s; restarting in %lld ms", how, (long long)wait);
        nap_ms(wait);
        if (stuck < 0)
            delay = delay * 2 > 30000 ? 30000 : delay * 2;
        if (stop_sig)
            return 0;
    }
}
