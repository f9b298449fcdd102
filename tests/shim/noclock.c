/*
 * noclock: an LD_PRELOAD library that keeps a daemon from changing the system clock.
 *
 * Some NTP daemons (ntpd-rs) have no mode without clock control and exit when they
 * cannot get it. Tests run them with this library preloaded (and without CAP_SYS_TIME,
 * so a call it does not know fails in the kernel): every call that would set, step or
 * slew a clock reports success and changes nothing; reads pass through. Each refused
 * change is logged, one line, to the file named by NOCLOCK_LOG if set.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

static void note(const char *what, unsigned modes)
{
    const char *path = getenv("NOCLOCK_LOG");
    if (path == NULL)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    char line[96];
    int n = snprintf(line, sizeof line, "%s modes=0x%x\n", what, modes);
    if (n > 0)
        (void)!write(fd, line, (size_t)n);
    close(fd);
}

typedef int (*clock_adjtime_fn)(clockid_t, struct timex *);

/* The real clock_adjtime, for reading the clock's state. */
static int read_state(clockid_t clk, struct timex *tx)
{
    static clock_adjtime_fn real;
    if (real == NULL)
        real = (clock_adjtime_fn)dlsym(RTLD_NEXT, "clock_adjtime");
    if (real == NULL)
        return -1;
    struct timex ro;
    memset(&ro, 0, sizeof ro);
    int rc = real(clk, &ro);
    if (rc >= 0)
        *tx = ro;
    return rc;
}

int clock_adjtime(clockid_t clk, struct timex *tx)
{
    if (tx->modes != 0)
        note("clock_adjtime", tx->modes);
    return read_state(clk, tx);
}

int ntp_adjtime(struct timex *tx)
{
    return clock_adjtime(CLOCK_REALTIME, tx);
}

int adjtimex(struct timex *tx)
{
    return clock_adjtime(CLOCK_REALTIME, tx);
}

int clock_settime(clockid_t clk, const struct timespec *ts)
{
    (void)clk;
    (void)ts;
    note("clock_settime", 0);
    return 0;
}

int settimeofday(const struct timeval *tv, const struct timezone *tz)
{
    (void)tv;
    (void)tz;
    note("settimeofday", 0);
    return 0;
}

int adjtime(const struct timeval *delta, struct timeval *olddelta)
{
    (void)delta;
    note("adjtime", 0);
    if (olddelta != NULL)
        memset(olddelta, 0, sizeof *olddelta);
    return 0;
}
