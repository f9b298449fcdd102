/*
 * serialtty: an LD_PRELOAD library that makes pseudo-terminals look like serial ports.
 *
 * gpsd gives its time to NTP daemons (SHM segments, chrony's socket) only from devices
 * it classes as serial ports: it leaves out pseudo-terminals, which it keeps for its
 * own test harness, and it classes a character device by its major number. A test that
 * feeds gpsd NMEA through a pty, as a receiver on a serial line would, runs gpsd with
 * this library preloaded: stat() of a path listed in SERIALTTY_PATHS (colon-separated)
 * reports the device number of a serial port (major 4, as ttyS*), and nothing else
 * changes; the device is still the pty.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

static int listed(const char *path)
{
    const char *list = getenv("SERIALTTY_PATHS");
    size_t n = strlen(path);
    while (list != NULL && *list != '\0') {
        const char *end = strchr(list, ':');
        size_t len = end != NULL ? (size_t)(end - list) : strlen(list);
        if (len == n && strncmp(list, path, n) == 0)
            return 1;
        list = end != NULL ? end + 1 : NULL;
    }
    return 0;
}

static int (*real_stat)(const char *restrict, struct stat *restrict);

/* Resolved before gpsd starts its threads. */
__attribute__((constructor)) static void resolve(void)
{
    real_stat = (int (*)(const char *restrict, struct stat *restrict))dlsym(RTLD_NEXT, "stat");
}

int stat(const char *restrict path, struct stat *restrict sb)
{
    if (real_stat == NULL) {
        errno = ENOSYS;
        return -1;
    }
    int r = real_stat(path, sb);
    if (r == 0 && S_ISCHR(sb->st_mode) && listed(path))
        sb->st_rdev = makedev(4, 64 + minor(sb->st_rdev) % 64);
    return r;
}
