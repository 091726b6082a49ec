/* service.c - the shared main() of veil services (veil/service.h). */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <grpc/grpc.h>
#include <sodium.h>

#include "grpc/health/v1/health.pb-c.h"
#include "veil/client.h"
#include "veil/http.h"
#include "veil/metrics.h"
#include "veil/log.h"
#include "veil/service.h"

/* The variables every service reads. */
static struct common {
    char *listen_addr, *health_addr, *tls_ca, *tls_cert, *tls_key, *dev_identity, *trust_domain;
    char *database_url, *keys_dir, *log_level, *port_file, *metrics_addr;
    int plaintext;
    int64_t workers, waiters, max_message, drain_delay_ms, drain_grace_ms, rpc_timeout_ms;
} cfg;

#define V(name, type, def, target, lo, hi, help)                                                   \
    {                                                                                              \
        name, type, def, 0, target, lo, hi, help                                                   \
    }
static veil_config_var common_vars[] = {
    V("VEIL_LISTEN_ADDR", VEIL_CFG_ADDR, NULL, &cfg.listen_addr, 0, 0,
      "host:port to serve gRPC on"),
    V("VEIL_HEALTH_ADDR", VEIL_CFG_ADDR, NULL, &cfg.health_addr, 0, 0,
      "optional plaintext host:port answering only grpc.health.v1 (kubelet probes)"),
    V("VEIL_TLS_CA", VEIL_CFG_FILE, NULL, &cfg.tls_ca, 0, 0, "PEM CA bundle that signs every peer"),
    V("VEIL_TLS_CERT", VEIL_CFG_FILE, NULL, &cfg.tls_cert, 0, 0,
      "this service's certificate (PEM)"),
    V("VEIL_TLS_KEY", VEIL_CFG_FILE, NULL, &cfg.tls_key, 0, 0, "this service's private key (PEM)"),
    V("VEIL_DEV_PLAINTEXT", VEIL_CFG_BOOL, "false", &cfg.plaintext, 0, 0,
      "development only: no TLS, callers name themselves"),
    V("VEIL_DEV_IDENTITY", VEIL_CFG_STRING, NULL, &cfg.dev_identity, 0, 0,
      "development only: identity claimed on outbound plaintext calls"),
    V("VEIL_TRUST_DOMAIN", VEIL_CFG_STRING, "veil", &cfg.trust_domain, 0, 0,
      "SPIFFE trust domain of peer identities"),
    V("VEIL_DATABASE_URL", VEIL_CFG_STRING, NULL, &cfg.database_url, 0, 0,
      "libpq connection string or URI of this service's own database"),
    V("VEIL_KEYS_DIR", VEIL_CFG_DIR, NULL, &cfg.keys_dir, 0, 0,
      "directory of <purpose>-<version>.key files (mode 0600/0400)"),
    V("VEIL_WORKERS", VEIL_CFG_INT, "8", &cfg.workers, 1, 256, "worker threads for database work"),
    V("VEIL_WAITERS", VEIL_CFG_INT, "4", &cfg.waiters, 1, 256, "threads for long-poll calls"),
    V("VEIL_MAX_MESSAGE_BYTES", VEIL_CFG_INT, "1048576", &cfg.max_message, 1024, 64 << 20,
      "largest request or reply accepted"),
    V("VEIL_DRAIN_DELAY_MS", VEIL_CFG_INT, "0", &cfg.drain_delay_ms, 0, 600000,
      "on SIGTERM, report NOT_SERVING this long before closing"),
    V("VEIL_DRAIN_GRACE_MS", VEIL_CFG_INT, "10000", &cfg.drain_grace_ms, 1, 600000,
      "then let in-flight calls finish this long"),
    V("VEIL_RPC_TIMEOUT_MS", VEIL_CFG_INT, "2000", &cfg.rpc_timeout_ms, 1, 600000,
      "budget of a call to another service"),
    V("VEIL_LOG_LEVEL", VEIL_CFG_STRING, "info", &cfg.log_level, 0, 0,
      "debug, info, warn or error"),
    V("VEIL_METRICS_ADDR", VEIL_CFG_ADDR, NULL, &cfg.metrics_addr, 0, 0,
      "optional plaintext host:port serving Prometheus metrics at GET /metrics"),
    V("VEIL_PORT_FILE", VEIL_CFG_STRING, NULL, &cfg.port_file, 0, 0,
      "write the bound port here once listening (tests, local stack)"),
};
#define N_COMMON (sizeof common_vars / sizeof common_vars[0])

static void usage(const veil_service_spec *spec)
{
    printf("usage: %s [serve | migrate | probe | config | help", spec->name);
    for (size_t i = 0; i < spec->n_commands; i++)
        printf(" | %s", spec->commands[i].name);
    printf("]\n\n");
    for (size_t i = 0; i < spec->n_commands; i++)
        printf("  %s %s\n", spec->name, spec->commands[i].usage);
    if (spec->n_commands)
        printf("\n");
    veil_config_usage("Configuration (environment variables):", common_vars, N_COMMON);
    if (spec->n_vars)
        veil_config_usage("Configuration of this service:", spec->vars, spec->n_vars);
}

/*
 * Reads and checks all configuration; returns 0 or prints why and returns 2.
 * TLS is demanded for serving and probing, keys for serving only: `migrate`
 * needs neither.
 */
static int load_config(const veil_service_spec *spec, veil_service_ctx *ctx, const char *cmd)
{
    int serving = strcmp(cmd, "serve") == 0, talking = serving || strcmp(cmd, "probe") == 0;
    char err[512];
    if (veil_config_load(common_vars, N_COMMON, err, sizeof err) != VEIL_OK ||
        (spec->n_vars && veil_config_load(spec->vars, spec->n_vars, err, sizeof err) != VEIL_OK))
        goto bad;
    int level = veil_log_level_parse(cfg.log_level);
    if (level < 0) {
        snprintf(err, sizeof err, "VEIL_LOG_LEVEL: must be debug, info, warn or error");
        goto bad;
    }
    veil_log_init(spec->name, (veil_log_level)level);
    if (!cfg.listen_addr && !(cfg.listen_addr = strdup(spec->default_listen)))
        return 1;
    if (talking && !cfg.plaintext && (!cfg.tls_ca || !cfg.tls_cert || !cfg.tls_key)) {
        snprintf(err, sizeof err, "%s: must be set unless VEIL_DEV_PLAINTEXT=true",
                 !cfg.tls_ca     ? "VEIL_TLS_CA"
                 : !cfg.tls_cert ? "VEIL_TLS_CERT"
                                 : "VEIL_TLS_KEY");
        goto bad;
    }
    if (spec->migrations && !cfg.database_url) {
        snprintf(err, sizeof err, "VEIL_DATABASE_URL: must be set (the %s database)", spec->name);
        goto bad;
    }
    if (serving && spec->needs_keys && !cfg.keys_dir) {
        snprintf(err, sizeof err, "VEIL_KEYS_DIR: must be set (directory of key files)");
        goto bad;
    }
    static char dev_identity[256];
    if (cfg.plaintext && !cfg.dev_identity)
        snprintf(dev_identity, sizeof dev_identity, "spiffe://%s/svc/%s", cfg.trust_domain,
                 spec->name);
    ctx->name = spec->name;
    ctx->database_url = cfg.database_url;
    ctx->keys_dir = cfg.keys_dir;
    ctx->trust_domain = cfg.trust_domain;
    ctx->rpc_timeout_ms = cfg.rpc_timeout_ms;
    ctx->tls = (veil_tls_config){
        .ca_file = cfg.tls_ca,
        .cert_file = cfg.tls_cert,
        .key_file = cfg.tls_key,
        .plaintext = cfg.plaintext,
        .dev_identity = cfg.dev_identity ? cfg.dev_identity : dev_identity,
    };
    return 0;
bad:
    veil_log_init(spec->name, VEIL_LOG_INFO);
    veil_log(VEIL_LOG_ERROR, "bad configuration", VL_STR("error", err), VL_END);
    fprintf(stderr, "%s: %s\n", spec->name, err);
    return 2;
}

/* Writes the port atomically; on failure returns -1 with errno saying why. */
static int write_port_file(const char *path, int port)
{
    char tmp[4096], text[16];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(text, sizeof text, "%d\n", port);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, text, (size_t)n);
    int good = w == n && fsync(fd) == 0;
    int saved = good ? 0 : w >= 0 && w < n ? ENOSPC : errno;
    if (close(fd) != 0 && good) {
        good = 0;
        saved = errno;
    }
    if (good && rename(tmp, path) != 0) {
        good = 0;
        saved = errno;
    }
    if (!good) {
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return 0;
}

/*
 * The key folder watcher.  A thread waits on inotify for VEIL_KEYS_DIR: a
 * file created, moved in or finished writing there (a Kubernetes Secret
 * update swaps the "..data" symlink: IN_MOVED_TO, IN_CREATE) raises SIGUSR1
 * at this process, so the reload runs exactly where SIGHUP's does - on the
 * main thread, one at a time.  Reloading only loads new key versions; which
 * version is used stays where the rotation commands put it.
 */
struct key_watch {
    int fd;
    pthread_t thread;
    int started;
    _Atomic int stop;
};

static void *key_watch_main(void *arg)
{
    struct key_watch *w = arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    while (!atomic_load(&w->stop)) {
        struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
        if (poll(&pfd, 1, 250) <= 0)
            continue;
        /* Let a burst settle (an update writes several files), then drain it: one reload. */
        struct timespec settle = {0, 200 * 1000000L};
        nanosleep(&settle, NULL);
        while (read(w->fd, buf, sizeof buf) > 0)
            ;
        veil_log(VEIL_LOG_INFO, "key folder changed: loading new key files", VL_END);
        kill(getpid(), SIGUSR1);
    }
    return NULL;
}

/* Starts watching dir; a folder that cannot be watched is logged, not fatal (SIGHUP still works).
 */
static void key_watch_start(struct key_watch *w, const char *dir)
{
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd >= 0 &&
        inotify_add_watch(w->fd, dir, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ATTRIB) >= 0 &&
        pthread_create(&w->thread, NULL, key_watch_main, w) == 0) {
        w->started = 1;
        return;
    }
    veil_log(VEIL_LOG_WARN, "cannot watch the key folder; new key files load on SIGHUP only",
             VL_STR("error", strerror(errno)), VL_END);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

static void key_watch_stop(struct key_watch *w)
{
    atomic_store(&w->stop, 1);
    if (w->started)
        pthread_join(w->thread, NULL);
    if (w->fd >= 0)
        close(w->fd);
}

/* GET /metrics: the Prometheus text exposition of this process. */
static void serve_metrics(void *ctx, veil_http_request *req)
{
    (void)ctx;
    char *text = veil_metrics_render();
    if (!text) {
        veil_http_respond_text(req, 503, "out of memory\n");
        return;
    }
    veil_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
}

/* The ops port (VEIL_METRICS_ADDR): metrics only, plain HTTP, no personal data. */
static veil_err start_metrics(veil_http_server **out, char *err, size_t errlen)
{
    static const veil_http_route routes[] = {{"GET", "/metrics", serve_metrics, 0}};
    *out = NULL;
    if (!cfg.metrics_addr)
        return VEIL_OK;
    veil_http_config hc = {.addr = cfg.metrics_addr,
                           .routes = routes,
                           .n_routes = 1,
                           .max_connections = 16,
                           .idle_timeout_s = 10};
    veil_err e = veil_http_start(&hc, out, err, errlen);
    if (e == VEIL_OK)
        veil_log(VEIL_LOG_INFO, "metrics serving", VL_STR("addr", cfg.metrics_addr),
                 VL_INT("port", veil_http_port(*out)), VL_END);
    return e;
}

/*
 * Turns off abseil's mutex deadlock detection.  Debian builds abseil without
 * NDEBUG, so every absl::Mutex operation in grpc (which takes them on every
 * call) also maintains a global lock-order graph (GraphCycles) under a global
 * lock.  The only switch is the C++ call
 * absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); from C
 * it is looked up by its mangled name in what the process already loaded
 * (grpc pulls in libabsl_synchronization).  Both spellings: Debian's inline
 * namespace (debian3, abseil 20220623) and an unversioned build.  kIgnore is
 * 0 (an enum class over int).  A build without the symbol keeps detection as
 * it is.  Either way one line at start-up says which.
 */
static void absl_deadlock_detection_off(void)
{
    static const char *const names[] = {
        "_ZN4absl7debian329SetMutexDeadlockDetectionModeENS0_15OnDeadlockCycleE",
        "_ZN4absl29SetMutexDeadlockDetectionModeENS_15OnDeadlockCycleE",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        if (sym) {
            void (*set_mode)(int);
            memcpy(&set_mode, &sym, sizeof set_mode); /* object pointer to function pointer */
            set_mode(0);                              /* absl::OnDeadlockCycle::kIgnore */
            veil_log(VEIL_LOG_INFO, "abseil's mutex deadlock detection off", VL_END);
            return;
        }
    }
    veil_log(VEIL_LOG_INFO, "abseil's mutex deadlock detection stays as built (no switch found)",
             VL_END);
}

static int serve(const veil_service_spec *spec, veil_service_ctx *ctx, sigset_t *signals)
{
    veil_http_server *metrics = NULL;
    struct key_watch watch = {.fd = -1};
    char err[512] = "";
    void *state = NULL;
    int status = 1, port = 0;

    absl_deadlock_detection_off();

    if (spec->migrations && veil_migrate_check(cfg.database_url, spec->name, spec->migrations,
                                               *spec->n_migrations, err, sizeof err) != VEIL_OK) {
        veil_log(VEIL_LOG_ERROR, "refusing to start", VL_STR("error", err), VL_END);
        return 1;
    }
    veil_server_config sc = {
        .listen_addr = cfg.listen_addr,
        .health_addr = cfg.health_addr,
        .tls = ctx->tls,
        .client_cert_optional = spec->client_cert_optional,
        .trust_domain = cfg.trust_domain,
        .workers = (int)cfg.workers,
        .waiters = (int)cfg.waiters,
        .max_message_bytes = (int)cfg.max_message,
        .drain_delay_ms = cfg.drain_delay_ms,
        .drain_grace_ms = cfg.drain_grace_ms,
    };
    if (veil_server_new(&sc, &ctx->server, err, sizeof err) != VEIL_OK)
        goto out;
    if (spec->start(ctx, &state, err, sizeof err) != VEIL_OK)
        goto out;
    if (veil_server_start(ctx->server, &port, err, sizeof err) != VEIL_OK)
        goto out;
    if (start_metrics(&metrics, err, sizeof err) != VEIL_OK)
        goto out;
    if (cfg.port_file && write_port_file(cfg.port_file, port) != 0) {
        snprintf(err, sizeof err, "cannot write VEIL_PORT_FILE %s: %s", cfg.port_file,
                 strerror(errno));
        goto out;
    }
    veil_log(VEIL_LOG_INFO, "serving", VL_STR("addr", cfg.listen_addr), VL_INT("port", port),
             VL_BOOL("tls", !cfg.plaintext), VL_END);
    if (spec->reload && ctx->keys_dir)
        key_watch_start(&watch, ctx->keys_dir);
    for (;;) {
        int sig = 0;
        if (sigwait(signals, &sig) != 0)
            continue;
        if (sig == SIGHUP || sig == SIGUSR1) {
            if (sig == SIGHUP)
                veil_log(VEIL_LOG_INFO, "reloading on SIGHUP", VL_END);
            if (spec->reload)
                spec->reload(state);
            continue;
        }
        veil_log(VEIL_LOG_INFO, "stopping", VL_STR("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"),
                 VL_END);
        break;
    }
    veil_server_drain(ctx->server);
    status = 0;
out:
    key_watch_stop(&watch);
    if (status != 0)
        veil_log(VEIL_LOG_ERROR, "refusing to start", VL_STR("error", err), VL_END);
    veil_http_stop(metrics);
    veil_server_free(ctx->server); /* drains first if still running */
    ctx->server = NULL;
    if (spec->stop && state)
        spec->stop(state);
    return status;
}

/*
 * `<service> probe`: asks the service listening at VEIL_LISTEN_ADDR (with
 * this configuration's own identity) whether it is SERVING.  Exit 0 if so,
 * 1 otherwise: for scripts, exec probes and the local stack.
 */
static int probe(const veil_service_spec *spec, const veil_service_ctx *ctx)
{
    char addr[300], err[512];
    const char *colon = strrchr(cfg.listen_addr, ':');
    const char *host = cfg.listen_addr;
    size_t hl = colon ? (size_t)(colon - host) : strlen(host);
    /* a wildcard listen address is probed on loopback */
    if ((hl == 7 && strncmp(host, "0.0.0.0", 7) == 0) || (hl == 4 && strncmp(host, "[::]", 4) == 0))
        snprintf(addr, sizeof addr, "127.0.0.1%s", colon ? colon : "");
    else
        snprintf(addr, sizeof addr, "%s", cfg.listen_addr);
    veil_channel *ch = NULL;
    if (veil_channel_new(addr, &ctx->tls, &grpc__health__v1__health__descriptor, NULL, &ch, err,
                         sizeof err) != VEIL_OK) {
        fprintf(stderr, "%s probe: %s\n", spec->name, err);
        return 1;
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    veil_status st;
    int serving = 0;
    if (veil_channel_call(ch, "Check", &req.base, NULL, 2000, &resp, &st) == VEIL_OK) {
        serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        printf("%s at %s: %s\n", spec->name, addr, serving ? "SERVING" : "NOT_SERVING");
    } else {
        printf("%s at %s: %s (%s)\n", spec->name, addr, veil_status_name(st.code), st.message);
    }
    veil_channel_free(ch);
    veil_client_thread_done();
    return serving ? 0 : 1;
}

int veil_service_main(int argc, char **argv, const veil_service_spec *spec)
{
    /*
     * No core dumps, ever: a core holds keys and personal data.  The limit
     * stops ordinary cores; non-dumpable also stops a core_pattern pipe (which
     * ignores the limit) and keeps other processes of the same user from
     * attaching or reading /proc/<pid>/mem.  Before anything is loaded.
     */
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        fprintf(stderr, "%s: cannot disable core dumps\n", spec->name);
        return 1;
    }

    /* Block the signals we wait for before any thread exists, so all inherit the mask. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGUSR1); /* the key folder watcher's reload */
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(spec);
        return 0;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "%s: libsodium cannot initialise\n", spec->name);
        return 1;
    }
    veil_service_ctx ctx = {0};
    int status = load_config(spec, &ctx, cmd);
    if (status != 0)
        goto out;

    if (strcmp(cmd, "serve") == 0) {
        status = serve(spec, &ctx, &signals);
    } else if (strcmp(cmd, "migrate") == 0) {
        char err[512];
        int applied = 0;
        if (!spec->migrations) {
            fprintf(stderr, "%s has no database\n", spec->name);
            status = 2;
        } else if (veil_migrate_apply(cfg.database_url, spec->name, spec->migrations,
                                      *spec->n_migrations, &applied, err, sizeof err) != VEIL_OK) {
            veil_log(VEIL_LOG_ERROR, "migration failed", VL_STR("error", err), VL_END);
            fprintf(stderr, "%s migrate: %s\n", spec->name, err);
            status = 1;
        } else {
            printf("%s: %d migration(s) applied, schema at version %d\n", spec->name, applied,
                   *spec->n_migrations ? spec->migrations[*spec->n_migrations - 1].version : 0);
        }
    } else if (strcmp(cmd, "probe") == 0) {
        status = probe(spec, &ctx);
    } else if (strcmp(cmd, "config") == 0) {
        printf("%s: configuration is valid\n", spec->name);
    } else {
        status = 2;
        for (size_t i = 0; i < spec->n_commands; i++) {
            if (strcmp(cmd, spec->commands[i].name) == 0) {
                status = spec->commands[i].run(&ctx, argc - 1, argv + 1);
                goto out;
            }
        }
        fprintf(stderr, "%s: unknown command %s (try `%s help`)\n", spec->name, cmd, spec->name);
    }
out:
    veil_config_free(common_vars, N_COMMON);
    if (spec->n_vars)
        veil_config_free(spec->vars, spec->n_vars);
    return status;
}
