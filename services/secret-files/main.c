/*
 * secret-files - owner-only copies of mounted Kubernetes Secrets, kept in
 * step with them while the pod runs.
 *
 *   secret-files FROM TO            copy once, then exit (a pod's init container)
 *   secret-files FROM TO --watch    copy, then follow every update (a sidecar)
 *
 * Each folder FROM/NAME is a mounted Secret; it is mirrored into TO/NAME
 * (created 0700): every file copied with mode 0400, a file gone from the
 * Secret removed.  Why copies: key files must be readable by their owner only
 * (veil/keys.h) and libpq ignores a passfile with group access, but a Secret
 * volume gives a non-root process at best mode 0440 through fsGroup.  TO is a
 * memory-backed emptyDir, so the copies never touch a disk.
 *
 * The kubelet updates a Secret volume by writing a new timestamped folder,
 * pointing the "..data" symlink at it with one rename, and removing the old
 * folder.  Each pass opens "..data" once and reads every file through that
 * one descriptor: it copies one consistent version of the Secret even while
 * the kubelet swaps the next one in.  A folder without "..data" (a plain
 * folder, podman's Secret volumes) is read as it is.
 *
 * A copy is written beside its final name (".tmp-<name>", mode 0400) and
 * renamed over it, so a reader sees the old file or the new one, never part
 * of one; the service's inotify watch on TO/NAME sees the rename and loads a
 * new key version.  Files whose bytes and mode already match are left alone.
 * Only names and counts are logged, never contents.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>

#include "veil/log.h"

#define FILE_MAX     (64 * 1024) /* a key is 45 bytes, a passfile one line */
#define NAMES_MAX    256
#define WATCH_MAX    32
#define RESYNC_MS    60000 /* a full pass even without events: a missed event costs a minute */
#define RETRY_MS     1000
#define SETTLE_NS    (200 * 1000000L)
#define TMP_PREFIX   ".tmp-"

static volatile sig_atomic_t stopping;
static unsigned char *src_buf, *dst_buf; /* guarded, FILE_MAX each */

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

/* Reads all of fd into buf (FILE_MAX); returns the length or -1 (too large, read error). */
static ssize_t read_all(int fd, unsigned char *buf)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, FILE_MAX - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            return (ssize_t)n;
        n += (size_t)r;
        if (n == FILE_MAX)
            return -1;
    }
}

/* Whether dst/name already holds exactly len bytes of src_buf with mode 0400. */
static int same_copy(int dst, const char *name, size_t len)
{
    struct stat st;
    int fd = openat(dst, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t got = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0400)
        got = read_all(fd, dst_buf);
    close(fd);
    int same = got == (ssize_t)len && sodium_memcmp(src_buf, dst_buf, len) == 0;
    sodium_memzero(dst_buf, FILE_MAX);
    return same;
}

/* Writes len bytes of src_buf to dst/name through a temporary name; 0 or -1. */
static int write_copy(int dst, const char *name, size_t len)
{
    char tmp[NAME_MAX + 8];
    snprintf(tmp, sizeof tmp, TMP_PREFIX "%s", name);
    unlinkat(dst, tmp, 0); /* left over from an interrupted pass */
    int fd = openat(dst, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, src_buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    int ok = off == len && fchmod(fd, 0400) == 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok || renameat(dst, tmp, dst, name) != 0) {
        unlinkat(dst, tmp, 0);
        return -1;
    }
    return 0;
}

static int listed(char **names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0)
            return 1;
    return 0;
}

/*
 * Mirrors the Secret folder from/secret into to/secret; returns 0, or -1
 * after logging why (the next pass tries again).
 */
static int sync_secret(int from, int to, const char *secret)
{
    int src = -1, data = -1, dst = -1, status = -1, written = 0, removed = 0;
    char *names[NAMES_MAX];
    size_t n = 0;
    DIR *d = NULL;
    const char *why = NULL;

    if ((src = openat(from, secret, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        why = "cannot open the Secret's folder";
        goto out;
    }
    /* One version of the Secret: whatever "..data" names now (see the top of the file). */
    data = openat(src, "..data", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (data < 0 && errno == ENOENT)
        data = dup(src);
    if (data < 0) {
        why = "cannot open the Secret's ..data";
        goto out;
    }
    if (mkdirat(to, secret, 0700) != 0 && errno != EEXIST) {
        why = "cannot create the copy's folder";
        goto out;
    }
    if ((dst = openat(to, secret, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        why = "cannot open the copy's folder";
        goto out;
    }
    int listing = dup(data);
    if (listing < 0 || !(d = fdopendir(listing))) {
        if (listing >= 0)
            close(listing);
        why = "cannot list the Secret";
        goto out;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' || fstatat(data, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode))
            continue; /* the kubelet's own entries, and anything that is not a plain file */
        if (n == NAMES_MAX) {
            why = "more files than a Secret holds";
            goto out;
        }
        if (!(names[n] = strdup(e->d_name))) {
            why = "out of memory";
            goto out;
        }
        n++;
        int fd = openat(data, e->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        ssize_t len = fd >= 0 ? read_all(fd, src_buf) : -1;
        if (fd >= 0)
            close(fd);
        if (len < 0) {
            sodium_memzero(src_buf, FILE_MAX);
            veil_log(VEIL_LOG_ERROR, "secret file cannot be read, or is over 64 KiB",
                     VL_STR("secret", secret), VL_STR("file", e->d_name), VL_END);
            why = "a file cannot be copied";
            goto out;
        }
        int same = same_copy(dst, e->d_name, (size_t)len);
        int bad = !same && write_copy(dst, e->d_name, (size_t)len) != 0;
        sodium_memzero(src_buf, FILE_MAX);
        if (bad) {
            veil_log(VEIL_LOG_ERROR, "secret file copy cannot be written", VL_STR("secret", secret),
                     VL_STR("file", e->d_name), VL_STR("error", strerror(errno)), VL_END);
            why = "a file cannot be copied";
            goto out;
        }
        if (!same) {
            written++;
            veil_log(VEIL_LOG_INFO, "secret file copied", VL_STR("secret", secret),
                     VL_STR("file", e->d_name), VL_END);
        }
    }
    /* Only a complete listing says which copies no longer have a file behind them. */
    closedir(d);
    d = NULL;
    int listing2 = dup(dst);
    if (listing2 < 0 || !(d = fdopendir(listing2))) {
        if (listing2 >= 0)
            close(listing2);
        why = "cannot list the copies";
        goto out;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || listed(names, n, e->d_name))
            continue;
        if (unlinkat(dst, e->d_name, 0) == 0 && strncmp(e->d_name, TMP_PREFIX, 5) != 0) {
            removed++;
            veil_log(VEIL_LOG_INFO, "secret file removed (gone from the Secret)",
                     VL_STR("secret", secret), VL_STR("file", e->d_name), VL_END);
        }
    }
    status = 0;
out:
    if (why)
        veil_log(VEIL_LOG_ERROR, "secret not copied", VL_STR("secret", secret),
                 VL_STR("error", why), VL_END);
    else if (written || removed)
        veil_log(VEIL_LOG_INFO, "secret copies updated", VL_STR("secret", secret),
                 VL_INT("written", written), VL_INT("removed", removed), VL_END);
    if (d)
        closedir(d);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    if (dst >= 0)
        close(dst);
    if (data >= 0)
        close(data);
    if (src >= 0)
        close(src);
    return status;
}

/*
 * One pass over every Secret folder in from (names starting with a dot are
 * skipped); the watch descriptors of new folders are added when ino >= 0.
 * Returns 0 when every Secret was copied.
 */
static int sync_all(const char *from, const char *to, int ino)
{
    int status = 0;
    int fromfd = open(from, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int tofd = open(to, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fromfd >= 0 ? fdopendir(dup(fromfd)) : NULL;
    if (fromfd < 0 || tofd < 0 || !d) {
        veil_log(VEIL_LOG_ERROR, "cannot open the Secrets' or the copies' folder",
                 VL_STR("from", from), VL_STR("to", to), VL_END);
        status = -1;
        goto out;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' || fstatat(fromfd, e->d_name, &st, 0) != 0 || !S_ISDIR(st.st_mode))
            continue;
        if (ino >= 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", from, e->d_name);
            /* the same folder again returns its existing watch */
            if (inotify_add_watch(ino, path,
                                  IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                      IN_CLOSE_WRITE | IN_ATTRIB) < 0)
                veil_log(VEIL_LOG_WARN, "cannot watch a Secret's folder; copied every minute",
                         VL_STR("secret", e->d_name), VL_STR("error", strerror(errno)), VL_END);
        }
        if (sync_secret(fromfd, tofd, e->d_name) != 0)
            status = -1;
    }
out:
    if (d)
        closedir(d);
    if (fromfd >= 0)
        close(fromfd);
    if (tofd >= 0)
        close(tofd);
    return status;
}

static void watch(const char *from, const char *to)
{
    int ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino < 0)
        veil_log(VEIL_LOG_WARN, "inotify unavailable; Secrets copied every minute",
                 VL_STR("error", strerror(errno)), VL_END);
    int wait_ms = sync_all(from, to, ino) == 0 ? RESYNC_MS : RETRY_MS;
    /* From here on an update of a Secret is seen (the watches were added before the first pass). */
    veil_log(VEIL_LOG_INFO, "watching the Secrets", VL_STR("from", from), VL_STR("to", to),
             VL_BOOL("inotify", ino >= 0), VL_END);
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    while (!stopping) {
        struct pollfd pfd = {.fd = ino, .events = POLLIN};
        int r = poll(&pfd, ino >= 0 ? 1 : 0, wait_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0) {
            /* Let the kubelet finish (new folder, ..data swap, old folder removed), then drain. */
            struct timespec settle = {0, SETTLE_NS};
            nanosleep(&settle, NULL);
            while (read(ino, buf, sizeof buf) > 0)
                ;
        }
        wait_ms = sync_all(from, to, ino) == 0 ? RESYNC_MS : RETRY_MS;
    }
    if (ino >= 0)
        close(ino);
}

int main(int argc, char **argv)
{
    int watching = argc == 4 && strcmp(argv[3], "--watch") == 0;
    if (argc != 3 && !watching) {
        fprintf(stderr, "usage: secret-files FROM TO [--watch]\n"
                        "  copies each Secret folder FROM/NAME to TO/NAME, owner-only (0400);\n"
                        "  --watch keeps the copies in step with the Secrets until SIGTERM\n");
        return 2;
    }
    const char *level = getenv("VEIL_LOG_LEVEL");
    int lv = level ? veil_log_level_parse(level) : VEIL_LOG_INFO;
    veil_log_init("secret-files", lv < 0 ? VEIL_LOG_INFO : (veil_log_level)lv);
    umask(077);
    if (sodium_init() < 0 || !(src_buf = sodium_malloc(FILE_MAX)) ||
        !(dst_buf = sodium_malloc(FILE_MAX))) {
        veil_log(VEIL_LOG_ERROR, "no guarded memory for the copies", VL_END);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int status = 0;
    if (watching)
        watch(argv[1], argv[2]);
    else
        status = sync_all(argv[1], argv[2], -1) == 0 ? 0 : 1;
    sodium_free(src_buf);
    sodium_free(dst_buf);
    return status;
}
