/* budget.c — the work budget that keeps one message from holding a stage.
 *
 * A budget is CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID, so
 * time spent waiting or preempted is not charged). The parser's loops call
 * mime_budget_check(); it reads the clock only every 256th call (a clock
 * read is a system call) and, once the deadline has passed, fails every
 * later call too, so the whole parse unwinds with MB_ERR_BUDGET. */
#include "mime/mime_int.h"

#include <time.h>

static _Thread_local struct {
    int64_t limit_ms;    /* 0: no budget */
    int64_t deadline_ns; /* thread CPU clock */
    unsigned tick;
    bool over;
} budget;

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void mb_mime_budget(int64_t cpu_ms)
{
    budget.limit_ms = cpu_ms > 0 ? cpu_ms : 0;
    budget.deadline_ns = cpu_ms > 0 ? thread_cpu_ns() + cpu_ms * 1000000 : 0;
    budget.tick = 0;
    budget.over = false;
}

mb_status mime_budget_check(void)
{
    if (!budget.limit_ms)
        return MB_OK;
    if (!budget.over) {
        if (++budget.tick & 255)
            return MB_OK;
        if (thread_cpu_ns() < budget.deadline_ns)
            return MB_OK;
        budget.over = true;
    }
    return mb_errf(MB_ERR_BUDGET, "work budget of %lld ms CPU exceeded",
                   (long long)budget.limit_ms);
}
