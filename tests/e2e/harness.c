/*
 * The end-to-end harness: spawns the daemon on a config snippet and keeps
 * its log, runs backends as threads on real loopback sockets, and gives
 * clients bounded connect, send and receive calls. Every wait is on a
 * condition with a deadline. What a test creates is registered here and
 * released by the fixture's teardown.
 */
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/ptrace.h>
#endif
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

#define H_MAX_PATTERNS 16
#define H_MAX_DAEMONS 8
#define H_MAX_BACKENDS 32
#define H_MAX_CONNS 512
#define H_MAX_ARGS 32
#define H_MAX_PORTS 256
#define H_MAX_ENV 8
#define H_MAX_DEFERRED 16
#define H_BLACKHOLE_FILL 3
#define H_REPLY_MAX (16u << 20)

struct h_daemon {
	pid_t pid;
	bool exited;
	int status;
	char *config_path;
	char *notify_path;
	int notify_fd;
	bool ready;
	char **notes; /* every line of every sd_notify datagram, in order */
	size_t nnotes;
	size_t notes_cap;
	pthread_t notifier; /* records the datagrams as they come */
	bool notifier_running;
	int notify_wake[2]; /* a byte here stops the notifier */
	unsigned nofile;    /* the soft RLIMIT_NOFILE it was given, or 0 */
	int log_fd;
	pthread_t reader;
	bool reader_joined;
	bool verbose;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char **lines;
	size_t nlines;
	size_t cap;
	bool eof;
	bool log_stalled; /* the reader stops reading the log pipe */
	size_t log_allow; /* bytes it may read all the same (a trickle) */
};

struct h_conn {
	struct h_backend *b;
	int fd;
	enum h_kind kind;
	pthread_t thread;
	bool ended; /* its thread is done with it (under b->mu) */
};

struct h_backend {
	_Atomic int kind;
	int family;
	int lfd;
	char addr[160];
	struct sockaddr_storage ss;
	socklen_t sslen;
	bool accepting;
	pthread_t acceptor;
	int wake[2]; /* a byte here stops the acceptor alone */
	int stop[2]; /* a byte here stops everything, and stays readable */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct h_conn *conns[H_MAX_CONNS];
	size_t nconns;
	unsigned accepted;
	unsigned active;
	unsigned received; /* bytes H_FIN_FIRST read */
	int port;	   /* asked for, or 0 for any */
	uint32_t ip4;	   /* another 127.0.0.0/8 address, or 0 */
	char *banner;
	int fill[H_BLACKHOLE_FILL];
	bool stopped;
};

/* What the running test owns; released by h_teardown(). */
static char *h_dir;
static unsigned h_dir_seq;
static unsigned h_file_seq;
static void **h_allocs;
static size_t h_nallocs, h_allocs_cap;
static struct h_daemon *h_daemons[H_MAX_DAEMONS];
static size_t h_ndaemons;
static struct h_backend *h_backends[H_MAX_BACKENDS];
static size_t h_nbackends;
static int h_ports[H_MAX_PORTS];
static size_t h_nports;
static struct h_deferred {
	void (*fn)(void *);
	void *arg;
} h_deferred[H_MAX_DEFERRED];
static size_t h_ndeferred;

static void h_daemon_free(struct h_daemon *);
static void h_backend_free(struct h_backend *);

/* Return monotonic time in milliseconds. */
uint64_t
h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The wall clock in milliseconds, as the daemon's log stamps it. */
int64_t
h_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until a deadline, at least 0. */
static int
h_left(uint64_t deadline)
{
	uint64_t now = h_now_ms();

	return now >= deadline ? 0 : (int)(deadline - now);
}

/* A deadline of h_now_ms() as the timespec of a monotonic timed wait. */
static struct timespec
h_deadline_ts(uint64_t deadline)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(deadline / 1000);
	ts.tv_nsec = (long)(deadline % 1000) * 1000000L;
	return ts;
}

/* A mutex and a condition whose timed waits run on CLOCK_MONOTONIC. */
static void
h_sync_init(pthread_mutex_t *mu, pthread_cond_t *cv)
{
	pthread_condattr_t ca;

	pthread_mutex_init(mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
}

/* Keep an allocation until the end of the test (freed then). */
void *
h_track(void *p)
{
	if (p == NULL)
		return NULL;
	if (h_nallocs == h_allocs_cap) {
		h_allocs_cap = h_allocs_cap ? h_allocs_cap * 2 : 64;
		h_allocs = realloc(h_allocs, h_allocs_cap * sizeof(*h_allocs));
		if (h_allocs == NULL)
			abort();
	}
	h_allocs[h_nallocs++] = p;
	return p;
}

/* Allocate zeroed memory that lives until the end of the test. */
static void *
h_alloc(size_t n)
{
	void *p = calloc(1, n);

	if (p == NULL)
		h_fail(H_WHERE, "out of memory");
	return h_track(p);
}

/* Format a string that lives until the end of the test. */
char *
h_strf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) == -1)
		h_fail(H_WHERE, "out of memory");
	va_end(ap);
	return h_track(s);
}

/* A file of the source tree: $CP_SRCDIR at build time, else $srcdir. */
const char *
h_srcpath(const char *rel)
{
#ifdef CP_SRCDIR
	return h_strf("%s/%s", CP_SRCDIR, rel);
#else
	const char *srcdir = getenv("srcdir");

	return h_strf("%s/%s", srcdir != NULL ? srcdir : ".", rel);
#endif
}

/* circuitproxyctl: $CIRCUITPROXYCTL, or beside the daemon. */
const char *
h_ctl_prog(void)
{
	const char *p = getenv("CIRCUITPROXYCTL"), *d;

	if (p != NULL && *p != '\0')
		return p;
	d = getenv("CIRCUITPROXYD");
	h_assert(d != NULL, "CIRCUITPROXYD is not set");
	return h_strf("%.*sctl", (int)strlen(d) - 1, d);
}

/* A [global] section with the usual keys of the stories, and more. */
char *
h_global_section(unsigned workers, const char *shutdown_timeout,
    const char *keys)
{
	return h_strf("[global]\n"
		      "log_level = info\n"
		      "workers = %u\n"
		      "admin =\n"
		      "shutdown_timeout = %s\n"
		      "%s\n",
	    workers, shutdown_timeout, keys != NULL ? keys : "");
}

/* An upstream section from a listen address (or none) to a server. */
char *
h_upstream(const char *name, const char *listen, const char *server,
    const char *keys)
{
	return h_strf("[upstream:%s]\n%s%s%sserver = %s\n%s\n", name,
	    listen != NULL ? "listen = " : "", listen != NULL ? listen : "",
	    listen != NULL ? "\n" : "", server, keys != NULL ? keys : "");
}

/* The keys that put an upstream on the suite's relay path. */
const char *
h_splice_keys(void)
{
	return strcmp(h_splice_mode(), "off") == 0 ? "splice = off\n" : "";
}

/* A config of one upstream "api" on the suite's relay path. */
char *
h_config_api(const char *level, const char *listen, const char *server,
    const char *keys)
{
	return h_strf("[global]\n"
		      "log_level = %s\n"
		      "workers = 1\n"
		      "shutdown_timeout = 2s\n"
		      "[upstream:api]\n"
		      "listen = %s\n"
		      "server = %s\n"
		      "%s%s",
	    level, listen, server, h_splice_keys(), keys);
}

/* Fail the test: dump every daemon's log on stderr, then abort with a tail. */
void
h_fail(const char *where, const char *fmt, ...)
{
	char msg[3500];
	size_t i, n, first;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = r < 0 ? 0 : (size_t)r;
	if (n >= sizeof(msg))
		n = sizeof(msg) - 1;
	for (i = 0; i < h_ndaemons; i++)
		h_daemon_dump(h_daemons[i], where);
	if (h_ndaemons > 0) {
		struct h_daemon *d = h_daemons[h_ndaemons - 1];

		pthread_mutex_lock(&d->mu);
		first = d->nlines > 12 ? d->nlines - 12 : 0;
		n += (size_t)snprintf(msg + n, sizeof(msg) - n,
		    "\n--- last log lines of pid %d ---", (int)d->pid);
		for (i = first; i < d->nlines && n < sizeof(msg) - 1; i++)
			n += (size_t)snprintf(msg + n, sizeof(msg) - n, "\n%s",
			    d->lines[i]);
		pthread_mutex_unlock(&d->mu);
	}
	ck_abort_msg("%s: %s", where, msg);
	abort();
}

/* Fail the test on a false assertion: its text, then the message. */
void
h_fail_cond(const char *where, const char *cond, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	h_fail(where, "'%s' failed: %s", cond, msg);
}

/* Make a directory and its parents. */
static int
h_mkdir_p(const char *path)
{
	char buf[PATH_MAX], *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -1;
	for (p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) == -1 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, 0755) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/* Create this test's directory under $CP_TEST_TMPDIR, unique by pid. */
const char *
h_tmpdir(void)
{
	const char *base = getenv("CP_TEST_TMPDIR");

	if (h_dir != NULL)
		return h_dir;
	if (base == NULL || *base == '\0')
		base = "/tmp/circuitproxyd-e2e";
	if (h_mkdir_p(base) == -1)
		h_fail(H_WHERE, "mkdir -p %s: %s", base, strerror(errno));
	/* A failed test keeps its directory: a later pid may meet it. */
	for (;;) {
		if (asprintf(&h_dir, "%s/t%ld-%u", base, (long)getpid(),
			++h_dir_seq) == -1)
			abort();
		if (mkdir(h_dir, 0700) == 0)
			return h_dir;
		if (errno != EEXIST || h_dir_seq > 1000)
			h_fail(H_WHERE, "mkdir %s: %s", h_dir, strerror(errno));
		free(h_dir);
	}
}

/* Return a path in the test's directory. */
char *
h_path(const char *name)
{
	return h_strf("%s/%s", h_tmpdir(), name);
}

/* Write a file in the test's directory; returns its path. */
char *
h_write_file(const char *name, const char *text)
{
	char *path = name[0] == '/' ? h_strf("%s", name) : h_path(name);
	FILE *f = fopen(path, "w");

	if (f == NULL)
		h_fail(H_WHERE, "fopen %s: %s", path, strerror(errno));
	fputs(text, f);
	if (fclose(f) != 0)
		h_fail(H_WHERE, "write %s: %s", path, strerror(errno));
	return path;
}

/* A file's whole text (freed with the test), or NULL if it cannot be read. */
char *
h_read_file(const char *path)
{
	char *buf = NULL, chunk[4096];
	size_t len = 0, n;
	FILE *f = fopen(path, "r"), *m;

	if (f == NULL)
		return NULL;
	if ((m = open_memstream(&buf, &len)) == NULL)
		h_fail(H_WHERE, "open_memstream: %s", strerror(errno));
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, n, m);
	fclose(f);
	fclose(m);
	return h_track(buf);
}

/* Does the file hold text within ms? It is read again every 10 ms. */
bool
h_file_has_within(const char *path, const char *text, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	const char *now;

	for (;;) {
		now = h_read_file(path);
		if (now != NULL && strstr(now, text) != NULL)
			return true;
		if (h_now_ms() >= deadline)
			return false;
		poll(NULL, 0, 10);
	}
}

/* Remove one entry of the test's directory tree. */
static int
h_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* Before each test: no SIGPIPE, a fresh directory. */
static void
h_setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	h_tmpdir();
}

/* After a test that passed: stop and free all it made, remove its files. */
static void
h_teardown(void)
{
	size_t i;

	while (h_ndeferred > 0) {
		h_ndeferred--;
		h_deferred[h_ndeferred].fn(h_deferred[h_ndeferred].arg);
	}
	for (i = 0; i < h_nbackends; i++)
		h_backend_free(h_backends[i]);
	h_nbackends = 0;
	for (i = 0; i < h_ndaemons; i++)
		h_daemon_free(h_daemons[i]);
	h_ndaemons = 0;
	for (i = 0; i < h_nallocs; i++)
		free(h_allocs[i]);
	h_nallocs = 0;
	h_nports = 0;
	if (h_dir != NULL) {
		nftw(h_dir, h_rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
		free(h_dir);
		h_dir = NULL;
	}
}

/* Have fn(arg) called when the test ends, before its daemons stop. */
void
h_defer(void (*fn)(void *), void *arg)
{
	if (h_ndeferred == H_MAX_DEFERRED)
		h_fail(H_WHERE, "too many deferred calls in one test");
	h_deferred[h_ndeferred].fn = fn;
	h_deferred[h_ndeferred].arg = arg;
	h_ndeferred++;
}

/* A test case of one test: the fixture, a timeout, its name as tag. */
TCase *
h_tcase_new(const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, h_setup, h_teardown);
	tcase_set_timeout(tc, H_TCASE_TIMEOUT);
	/* CK_INCLUDE_TAGS="a b" runs chosen stories (tests/mutate does). */
	tcase_set_tags(tc, name);
	return tc;
}

/*
 * Skips, counted where every forked test process sees the same counter
 * (h_main maps it before Check forks).
 */
static _Atomic unsigned *h_skipped;

/* Say that a test cannot run here, and why; count it (see h_skip). */
void
h_skip_note(const char *where, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	printf("SKIP: %s: %s\n", where, msg);
	fflush(stdout);
	if (h_skipped != NULL)
		atomic_fetch_add(h_skipped, 1);
}

/* Run a suite; the exit status for make check (77: all skipped). */
int
h_main(Suite *s)
{
	SRunner *sr;
	int failed, run;
	unsigned skipped;

	if (getenv("CIRCUITPROXYD") == NULL) {
		fprintf(stderr, "CIRCUITPROXYD is not set: run make check\n");
		return 99;
	}
	h_skipped = mmap(NULL, sizeof(*h_skipped), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (h_skipped == MAP_FAILED)
		h_skipped = NULL;
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	run = srunner_ntests_run(sr);
	srunner_free(sr);
	skipped = h_skipped != NULL ? atomic_load(h_skipped) : 0;
	printf("Skipped: %u of %d tests\n", skipped, run);
	if (failed != 0)
		return EXIT_FAILURE;
	return run > 0 && skipped == (unsigned)run ? 77 : EXIT_SUCCESS;
}

/* The relay path of the suite being run: "auto", "force" or "off". */
static const char *h_splice = "auto";

/* The relay path the stories run on now. */
const char *
h_splice_mode(void)
{
	return h_splice;
}

/*
 * Run a suite once per relay path named in CP_TEST_SPLICE (a comma list of
 * auto, force and off; all three by default): force starts the daemon
 * with CIRCUITPROXYD_TEST_SPLICE=force, off is splice = off in the
 * stories' configs (they ask h_splice_mode()).
 */
int
h_main_modes(Suite *(*make)(void))
{
	static const char *const modes[] = { "auto", "force", "off" };
	const char *want = getenv("CP_TEST_SPLICE");
	int status = EXIT_SUCCESS, rc;
	size_t i;

	if (want == NULL || *want == '\0')
		want = "auto,force,off";
	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strstr(want, modes[i]) == NULL)
			continue;
		h_splice = modes[i];
		if (strcmp(h_splice, "force") == 0)
			setenv("CIRCUITPROXYD_TEST_SPLICE", "force", 1);
		else
			unsetenv("CIRCUITPROXYD_TEST_SPLICE");
		printf("relay path: splice=%s\n", h_splice);
		fflush(stdout);
		rc = h_main(make());
		if (rc != EXIT_SUCCESS && rc != 77)
			status = rc;
	}
	return status;
}

/* Parse "unix:/p", "[v6]:port" or "v4:port" into a socket address. */
static int
h_parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon;
	int port;

	memset(ss, 0, sizeof(*ss));
	if (strncmp(text, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;

		if (strlen(text + 5) >= sizeof(sun->sun_path))
			return -1;
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, text + 5);
		*len = sizeof(*sun);
		return 0;
	}
	colon = strrchr(text, ':');
	if (colon == NULL || (size_t)(colon - text) >= sizeof(host))
		return -1;
	port = atoi(colon + 1);
	if (text[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		if (colon - text < 2 || colon[-1] != ']')
			return -1;
		memcpy(host, text + 1, (size_t)(colon - text - 2));
		host[colon - text - 2] = '\0';
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		*len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		memcpy(host, text, (size_t)(colon - text));
		host[colon - text] = '\0';
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return -1;
		*len = sizeof(*sin);
	}
	return 0;
}

/* Format a socket address as the daemon's logs do. */
static void
h_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 =
		    (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else if (sa->sa_family == AF_UNIX)
		snprintf(buf, len, "unix:%s",
		    ((const struct sockaddr_un *)sa)->sun_path);
	else
		snprintf(buf, len, "?");
}

/* Bind a fresh socket to the loopback of a family, port 0 or given. */
static int
h_bind_loopback(int family, int port, bool reuse, struct sockaddr_storage *ss,
    socklen_t *len)
{
	int fd, one = 1;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
	}
	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (reuse)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)ss, *len) == -1 ||
	    getsockname(fd, (struct sockaddr *)ss, len) == -1) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* The lowest port the kernel hands to a connect: ports below are never. */
static int
h_ephemeral_low(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	int lo = 32768, hi;

	if (f != NULL) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	return lo;
}

/* May a wildcard socket of this family bind the port now? */
static bool
h_port_free(int family, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, on = 1;
	bool ok;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
		sin6->sin6_port = htons((uint16_t)port);
		len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		sin->sin_port = htons((uint16_t)port);
		len = sizeof(*sin);
	}
	if ((fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return false;
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	ok = bind(fd, (struct sockaddr *)&ss, len) == 0;
	close(fd);
	return ok;
}

/*
 * A listen address nobody uses now, free in both families (so a test may
 * move it to the wildcard): a random port below the ephemeral range, which
 * no client's connect can take meanwhile. It is closed again for the
 * daemon to take (a tiny race with other suites, accepted). Ports are not
 * handed out twice in one test.
 */
char *
h_free_addr(int family)
{
	static unsigned seed;
	int tries, port, lo = h_ephemeral_low();
	size_t i;

	if (family == AF_UNIX)
		return h_strf("unix:%s/l%u.sock", h_tmpdir(), ++h_file_seq);
	if (seed == 0)
		seed = (unsigned)getpid() * 2654435761u ^ (unsigned)h_now_ms();
	if (lo <= 12000)
		lo = 32768;
	for (tries = 0; tries < 500; tries++) {
		seed = seed * 1103515245u + 12345u;
		port = 10000 + (int)((seed >> 8) % (unsigned)(lo - 10000));
		for (i = 0; i < h_nports; i++)
			if (h_ports[i] == port)
				break;
		if (i < h_nports || !h_port_free(AF_INET, port) ||
		    !h_port_free(AF_INET6, port))
			continue;
		if (h_nports < H_MAX_PORTS)
			h_ports[h_nports++] = port;
		if (family == AF_INET6)
			return h_strf("[::1]:%d", port);
		return h_strf("127.0.0.1:%d", port);
	}
	h_fail(H_WHERE, "no free port found");
}

/* The port of "HOST:PORT" or "[::1]:PORT". */
const char *
h_port_of(const char *addr)
{
	return strrchr(addr, ':') + 1;
}

/* Add one line to a daemon's log and wake its waiters. */
static void
h_daemon_add_line(struct h_daemon *d, const char *s, size_t len)
{
	char *line = malloc(len + 1);

	if (line == NULL)
		abort();
	memcpy(line, s, len);
	line[len] = '\0';
	if (d->verbose)
		fprintf(stderr, "[circuitproxyd %d] %s\n", (int)d->pid, line);
	pthread_mutex_lock(&d->mu);
	if (d->nlines == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 128;
		d->lines = realloc(d->lines, d->cap * sizeof(*d->lines));
		if (d->lines == NULL)
			abort();
	}
	d->lines[d->nlines++] = line;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* The reader thread: split the daemon's stdout and stderr into lines. */
static void *
h_daemon_reader(void *arg)
{
	struct h_daemon *d = arg;
	char buf[8192], *part = NULL;
	size_t plen = 0, pcap = 0, start, i;
	size_t want;
	ssize_t n;

	for (;;) {
		pthread_mutex_lock(&d->mu);
		while (d->log_stalled && d->log_allow == 0)
			pthread_cond_wait(&d->cv, &d->mu);
		want = sizeof(buf);
		if (d->log_stalled) {
			if (d->log_allow < want)
				want = d->log_allow;
			d->log_allow -= want;
		}
		pthread_mutex_unlock(&d->mu);
		n = read(d->log_fd, buf, want);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		start = 0;
		for (i = 0; i < (size_t)n; i++) {
			if (buf[i] != '\n')
				continue;
			if (plen == 0)
				h_daemon_add_line(d, buf + start, i - start);
			else {
				if (plen + i - start > pcap) {
					pcap = plen + i - start;
					part = realloc(part, pcap);
					if (part == NULL)
						abort();
				}
				memcpy(part + plen, buf + start, i - start);
				h_daemon_add_line(d, part, plen + i - start);
				plen = 0;
			}
			start = i + 1;
		}
		if (start < (size_t)n) {
			if (plen + (size_t)n - start > pcap) {
				pcap = (plen + (size_t)n - start) * 2;
				part = realloc(part, pcap);
				if (part == NULL)
					abort();
			}
			memcpy(part + plen, buf + start, (size_t)n - start);
			plen += (size_t)n - start;
		}
	}
	if (plen > 0)
		h_daemon_add_line(d, part, plen);
	free(part);
	pthread_mutex_lock(&d->mu);
	d->eof = true;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

/* Find a program on $PATH (execve does not); the name itself if not found. */
const char *
h_which(const char *name)
{
	const char *path = getenv("PATH");
	char *dirs, *dir, *save = NULL, *full;

	if (strchr(name, '/') != NULL || path == NULL)
		return name;
	dirs = h_strf("%s", path);
	for (dir = strtok_r(dirs, ":", &save); dir != NULL;
	     dir = strtok_r(NULL, ":", &save)) {
		full = h_strf("%s/%s", *dir ? dir : ".", name);
		if (access(full, X_OK) == 0)
			return full;
	}
	return name;
}

/* Is the daemon run under $CP_TEST_WRAPPER (valgrind)? */
bool
h_wrapped(void)
{
	const char *wrap = getenv("CP_TEST_WRAPPER");

	return wrap != NULL && *wrap != '\0';
}

static size_t h_build_argv_prog(const char **, size_t, const char *, char **);

/* Build argv: optional $CP_TEST_WRAPPER words, the daemon, the arguments. */
static size_t
h_build_argv(const char **argv, size_t max, char **wrapbuf)
{
	return h_build_argv_prog(argv, max, getenv("CIRCUITPROXYD"), wrapbuf);
}

/* The wrapper's words, then prog ($CIRCUITPROXYD, or circuitproxyctl). */
static size_t
h_build_argv_prog(const char **argv, size_t max, const char *prog,
    char **wrapbuf)
{
	const char *wrap = getenv("CP_TEST_WRAPPER");
	size_t n = 0;
	char *w, *save = NULL;

	if (prog == NULL)
		h_fail(H_WHERE, "CIRCUITPROXYD is not set");
	*wrapbuf = NULL;
	if (wrap != NULL && *wrap != '\0') {
		*wrapbuf = strdup(wrap);
		for (w = strtok_r(*wrapbuf, " ", &save); w != NULL && n < max;
		     w = strtok_r(NULL, " ", &save))
			argv[n++] = w;
		if (n > 0)
			argv[0] = h_which(argv[0]);
	}
	argv[n++] = prog;
	return n;
}

/*
 * The environment for a child: ours, minus service-manager variables, plus
 * NOTIFY_SOCKET and the extra "NAME=value" entries (NULL-ended, or NULL).
 */
static char **
h_build_env(const char *notify, const char *const *extra)
{
	static const char *drop[] = { "NOTIFY_SOCKET=", "JOURNAL_STREAM=",
		"WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_FDS=", "LISTEN_PID=",
		"LISTEN_FDNAMES=" };
	size_t n = 0, i, k;
	char **env;

	while (environ[n] != NULL)
		n++;
	env = h_alloc((n + 6 + H_MAX_ENV) * sizeof(*env));
	for (i = 0, k = 0; i < n; i++) {
		size_t j;

		for (j = 0; j < sizeof(drop) / sizeof(drop[0]); j++)
			if (strncmp(environ[i], drop[j], strlen(drop[j])) == 0)
				break;
		if (j == sizeof(drop) / sizeof(drop[0]))
			env[k++] = environ[i];
	}
	if (notify != NULL)
		env[k++] = h_strf("NOTIFY_SOCKET=%s", notify);
	for (i = 0; extra != NULL && i < H_MAX_ENV && extra[i] != NULL; i++)
		env[k++] = h_strf("%s", extra[i]);
	env[k] = NULL;
	return env;
}

/*
 * In the child: the listening sockets to 3.. as systemd passes them, with
 * LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES (h_build_env left room).
 */
static void
h_child_pass_fds(const struct h_opts *opts, char **env)
{
	static char lfds[32], lpid[32], lnames[256];
	unsigned i, nl = opts->nlisten_fds;
	int high[4];
	size_t n = 0;

	/* Out of the way first, then to 3.. without FD_CLOEXEC. */
	for (i = 0; i < nl && i < 4; i++)
		high[i] = fcntl(opts->listen_fds[i], F_DUPFD, 900);
	for (i = 0; i < nl && i < 4; i++)
		dup2(high[i], 3 + (int)i);
	close_range(3 + nl, ~0u, 0);
	snprintf(lfds, sizeof(lfds), "LISTEN_FDS=%u", nl);
	snprintf(lpid, sizeof(lpid), "LISTEN_PID=%ld", (long)getpid());
	while (env[n] != NULL)
		n++;
	env[n++] = lfds;
	env[n++] = lpid;
	if (opts->listen_fdnames != NULL) {
		snprintf(lnames, sizeof(lnames), "LISTEN_FDNAMES=%s",
		    opts->listen_fdnames);
		env[n++] = lnames;
	}
	env[n] = NULL;
}

/*
 * In the child, between fork and exec: only async-signal-safe calls. The
 * daemon dies with the test (PR_SET_PDEATHSIG), even when the test fails
 * and Check's child exits at once.
 */
static void
h_child_exec(pid_t parent, int out, int err, const char **argv, char **env,
    unsigned nofile, bool journal, const struct h_opts *opts)
{
	int devnull = open("/dev/null", O_RDONLY);
	struct rlimit rl;

#ifdef __linux__
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
#else
	(void)parent;
#endif
	signal(SIGPIPE, SIG_DFL);
	/*
	 * The daemon raises its soft limit to the hard one, so the hard one
	 * is set too, unless the story names another, or a wrapper runs the
	 * daemon: valgrind takes its own descriptors between the soft and
	 * the hard limit, and shows the daemon a hard limit equal to the soft.
	 */
	if (nofile != 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = nofile;
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < nofile)
			rl.rlim_cur = rl.rlim_max;
		if (opts != NULL && opts->nofile_hard >= rl.rlim_cur &&
		    (rl.rlim_max == RLIM_INFINITY ||
			opts->nofile_hard <= rl.rlim_max))
			rl.rlim_max = opts->nofile_hard;
		else if (!h_wrapped())
			rl.rlim_max = rl.rlim_cur;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (err == -1) {
		/*
		 * Started with stdin, stdout and stderr closed; the log pipe
		 * stays open on fd 3, unwritten, so that its end still tells
		 * when the daemon exited.
		 */
		dup2(out, 3);
		close_range(0, 2, 0);
		close_range(4, ~0u, 0);
	} else {
		if (devnull != -1)
			dup2(devnull, STDIN_FILENO);
		dup2(out, STDOUT_FILENO);
		dup2(err, STDERR_FILENO);
		if (opts != NULL && opts->nlisten_fds > 0)
			h_child_pass_fds(opts, env);
		else
			close_range(3, ~0u, 0);
	}
	if (journal) {
		struct stat st;
		char js[64];
		size_t n = 0;

		/* As systemd does: the device and inode of stderr. */
		while (env[n] != NULL)
			n++;
		if (fstat(STDERR_FILENO, &st) == 0) {
			snprintf(js, sizeof(js), "JOURNAL_STREAM=%lu:%lu",
			    (unsigned long)st.st_dev, (unsigned long)st.st_ino);
			env[n] = js; /* h_build_env left room */
			env[n + 1] = NULL;
		}
	}
	execve(argv[0], (char *const *)argv, env);
	write(STDERR_FILENO, "exec failed\n", 12);
	_exit(127);
}

/* Record the lines of the datagrams waiting on the notify socket; locked. */
static void
h_daemon_drain_notify(struct h_daemon *d)
{
	char buf[4096], *line, *save = NULL;
	ssize_t n;

	while ((n = recv(d->notify_fd, buf, sizeof(buf) - 1, 0)) > 0) {
		buf[n] = '\0';
		for (line = strtok_r(buf, "\n", &save); line != NULL;
		     line = strtok_r(NULL, "\n", &save)) {
			if (strcmp(line, "READY=1") == 0)
				d->ready = true;
			if (d->nnotes == d->notes_cap) {
				d->notes_cap =
				    d->notes_cap ? d->notes_cap * 2 : 64;
				d->notes = realloc(d->notes,
				    d->notes_cap * sizeof(*d->notes));
				if (d->notes == NULL)
					abort();
			}
			d->notes[d->nnotes] = strdup(line);
			if (d->notes[d->nnotes++] == NULL)
				abort();
		}
		pthread_cond_broadcast(&d->cv);
	}
}

/*
 * The notifier thread: records every datagram as it comes, so that none is
 * lost in a full socket queue and waiters wake at once. Tests read the
 * socket too (under the same lock), to see what is already there.
 */
static void *
h_daemon_notifier(void *arg)
{
	struct h_daemon *d = arg;
	struct pollfd pfd[2];

	pfd[0].fd = d->notify_fd;
	pfd[1].fd = d->notify_wake[0];
	pfd[0].events = pfd[1].events = POLLIN;
	for (;;) {
		pthread_mutex_lock(&d->mu);
		h_daemon_drain_notify(d);
		pthread_mutex_unlock(&d->mu);
		if (poll(pfd, 2, -1) == -1 && errno != EINTR)
			break;
		if (pfd[1].revents != 0)
			break;
	}
	return NULL;
}

/* Stop the notifier thread, keeping what it recorded. */
static void
h_daemon_stop_notifier(struct h_daemon *d)
{
	char c = 0;

	if (!d->notifier_running)
		return;
	if (write(d->notify_wake[1], &c, 1) != 1)
		abort();
	pthread_join(d->notifier, NULL);
	d->notifier_running = false;
}

/* Spawn the daemon with "-c CONFIG" (if any) and more arguments. */
static struct h_daemon *
h_daemon_spawn_ap(const char *where, const struct h_opts *opts,
    const char *config, va_list ap)
{
	const char *argv[H_MAX_ARGS + 8];
	struct sockaddr_un sun;
	struct h_daemon *d;
	char *wrap, **env;
	const char *a;
	size_t n;
	int p[2];
	pid_t parent = getpid();

	if (h_ndaemons == H_MAX_DAEMONS)
		h_fail(where, "too many daemons in one test");
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		abort();
	h_sync_init(&d->mu, &d->cv);
	d->reader_joined = true;
	d->log_fd = -1;
	d->notify_wake[0] = d->notify_wake[1] = -1;
	d->verbose = getenv("CP_TEST_VERBOSE") != NULL &&
	    *getenv("CP_TEST_VERBOSE") != '\0';
	h_daemons[h_ndaemons++] = d;

	n = h_build_argv(argv, H_MAX_ARGS, &wrap);
	h_track(wrap);
	if (config != NULL) {
		d->config_path =
		    h_write_file(h_strf("circuitproxy-%u.ini", ++h_file_seq),
			config);
		argv[n++] = "-c";
		argv[n++] = d->config_path;
	}
	while ((a = va_arg(ap, const char *)) != NULL && n < H_MAX_ARGS)
		argv[n++] = a;
	argv[n] = NULL;

	d->notify_path = h_path(h_strf("notify-%u.sock", ++h_file_seq));
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(d->notify_path) >= sizeof(sun.sun_path))
		h_fail(where, "path too long: %s (shorten CP_TEST_TMPDIR)",
		    d->notify_path);
	strcpy(sun.sun_path, d->notify_path);
	d->notify_fd =
	    socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (d->notify_fd == -1 ||
	    bind(d->notify_fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		h_fail(where, "notify socket %s: %s", d->notify_path,
		    strerror(errno));
	env = h_build_env(d->notify_path, opts != NULL ? opts->env : NULL);
	d->nofile = opts != NULL ? opts->nofile : 0;

	if (pipe2(p, O_CLOEXEC) == -1 || pipe2(d->notify_wake, O_CLOEXEC) == -1)
		h_fail(where, "pipe: %s", strerror(errno));
	d->pid = fork();
	if (d->pid == -1)
		h_fail(where, "fork: %s", strerror(errno));
	if (d->pid == 0 && opts != NULL && opts->std_closed)
		h_child_exec(parent, p[1], -1, argv, env, opts->nofile, false,
		    NULL);
	if (d->pid == 0)
		h_child_exec(parent, p[1], p[1], argv, env,
		    opts != NULL ? opts->nofile : 0,
		    opts != NULL && opts->journal, opts);
	close(p[1]);
	if (pthread_create(&d->notifier, NULL, h_daemon_notifier, d) != 0)
		h_fail(where, "pthread_create failed");
	d->notifier_running = true;
	d->log_fd = p[0];
	if (pthread_create(&d->reader, NULL, h_daemon_reader, d) != 0)
		h_fail(where, "pthread_create failed");
	d->reader_joined = false;
	return d;
}

/*
 * Stop reading the daemon's log pipe (stall), as a stalled journal would,
 * or read it again. The pipe fills once the reader has read what it holds.
 */
void
h_daemon_log_stall(struct h_daemon *d, bool stall)
{
	pthread_mutex_lock(&d->mu);
	d->log_stalled = stall;
	d->log_allow = 0;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* While the log is stalled, let the reader read this many more bytes. */
void
h_daemon_log_allow(struct h_daemon *d, size_t bytes)
{
	pthread_mutex_lock(&d->mu);
	d->log_allow += bytes;
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* Spawn the daemon with options (limits, environment); do not wait. */
struct h_daemon *
h_daemon_spawn_opts_args(const char *where, const struct h_opts *opts,
    const char *config, ...)
{
	struct h_daemon *d;
	va_list ap;

	va_start(ap, config);
	d = h_daemon_spawn_ap(where, opts, config, ap);
	va_end(ap);
	return d;
}

/*
 * H_READY_MS times CK_TIMEOUT_MULTIPLIER, as Check's own timeout: under a
 * wrapper on a busy machine the start alone can take longer.
 */
static int
h_ready_ms(void)
{
	return h_slow_ms(H_READY_MS);
}

/*
 * A deadline ms stretched by CK_TIMEOUT_MULTIPLIER, for waits on the
 * daemon's own pace (under valgrind it runs several times slower).
 */
int
h_slow_ms(int ms)
{
	const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
	int k = m != NULL ? atoi(m) : 1;

	return ms * (k > 1 && k < 100 ? k : 1);
}

/* Wait for READY=1 of a spawned daemon; fail the test if it never comes. */
static void
h_daemon_expect_ready(const char *where, struct h_daemon *d)
{
	int ms = h_ready_ms();

	if (h_daemon_wait_ready(d, ms))
		return;
	if (d->exited)
		h_fail(where, "the daemon exited %d before READY=1", d->status);
	h_fail(where, "no READY=1 from the daemon within %d ms", ms);
}

/* Start the daemon with options and wait for READY=1, or fail the test. */
struct h_daemon *
h_daemon_start_opts_args(const char *where, const struct h_opts *opts,
    const char *config, ...)
{
	struct h_daemon *d;
	va_list ap;

	va_start(ap, config);
	d = h_daemon_spawn_ap(where, opts, config, ap);
	va_end(ap);
	h_daemon_expect_ready(where, d);
	return d;
}

/* Has READY=1 come? Reads what waits on the socket first. */
static bool
h_daemon_is_ready(struct h_daemon *d)
{
	bool ready;

	pthread_mutex_lock(&d->mu);
	h_daemon_drain_notify(d);
	ready = d->ready;
	pthread_mutex_unlock(&d->mu);
	return ready;
}

/* Reap the daemon if it has exited; true if it has. */
static bool
h_daemon_reap(struct h_daemon *d)
{
	int st;
	pid_t r;

	if (d->exited)
		return true;
	r = waitpid(d->pid, &st, WNOHANG);
	if (r != d->pid)
		return false;
	d->exited = true;
	if (WIFEXITED(st))
		d->status = WEXITSTATUS(st);
	else if (WIFSIGNALED(st))
		d->status = 128 + WTERMSIG(st);
	else
		d->status = -1;
	return true;
}

/*
 * Wait for READY=1 on the notify socket, up to ms. Waits in short slices so
 * that a daemon that exits is noticed at once.
 */
bool
h_daemon_wait_ready(struct h_daemon *d, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct timespec ts;
	uint64_t until;

	for (;;) {
		if (h_daemon_is_ready(d))
			return true;
		if (h_daemon_reap(d))
			return h_daemon_is_ready(d);
		if (h_left(deadline) == 0)
			return false;
		until = h_now_ms() +
		    (h_left(deadline) < 20 ? (uint64_t)h_left(deadline) : 20);
		ts = h_deadline_ts(until);
		pthread_mutex_lock(&d->mu);
		if (!d->ready)
			pthread_cond_timedwait(&d->cv, &d->mu, &ts);
		pthread_mutex_unlock(&d->mu);
	}
}

/* Is the daemon still running (not exited)? */
bool
h_daemon_running(struct h_daemon *d)
{
	return !h_daemon_reap(d);
}

/* Wait until the log pipe is closed, up to ms; join the reader if so. */
static void
h_daemon_join_reader(struct h_daemon *d, int ms)
{
	struct timespec ts;
	bool eof;

	if (d->reader_joined)
		return;
	ts = h_deadline_ts(h_now_ms() + (uint64_t)ms);
	pthread_mutex_lock(&d->mu);
	while (!d->eof)
		if (pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT)
			break;
	eof = d->eof;
	pthread_mutex_unlock(&d->mu);
	if (eof) {
		pthread_join(d->reader, NULL);
		d->reader_joined = true;
	}
}

/*
 * Wait for the daemon to exit, up to ms: its exit code (128 + signal if
 * killed), or -1 if it still runs. Its whole log is read by then.
 */
int
h_daemon_wait_exit(struct h_daemon *d, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;

	while (!h_daemon_reap(d)) {
		if (h_left(deadline) == 0)
			return -1;
		poll(NULL, 0, 5);
	}
	h_daemon_join_reader(d, 2000);
	return d->status;
}

/* Send a signal to the daemon. */
void
h_daemon_signal(struct h_daemon *d, int sig)
{
	if (!d->exited && kill(d->pid, sig) == -1)
		h_fail(H_WHERE, "kill %d: %s", (int)d->pid, strerror(errno));
}

/* SIGTERM, then wait for the exit: its status. Fails if it does not exit. */
int
h_daemon_stop(struct h_daemon *d)
{
	int st;

	if (d->exited)
		return d->status;
	h_daemon_signal(d, SIGTERM);
	st = h_daemon_wait_exit(d, H_STOP_MS);
	if (st == -1) {
		h_daemon_dump(d, "stop");
		kill(d->pid, SIGKILL);
		h_daemon_wait_exit(d, H_STOP_MS);
		h_fail(H_WHERE, "no exit within %d ms of SIGTERM", H_STOP_MS);
	}
	return st;
}

/* Stop the daemon and fail at where unless it exits 0. */
void
h_daemon_stop_ok_at(const char *where, struct h_daemon *d)
{
	int st = h_daemon_stop(d);

	if (st != 0)
		h_fail(where, "the daemon exited with %d on SIGTERM", st);
}

/* Kill a daemon if it still runs, and free it. */
static void
h_daemon_free(struct h_daemon *d)
{
	size_t i;

	h_daemon_log_stall(d, false);
	if (d->pid > 0 && !d->exited) {
		kill(d->pid, SIGKILL);
		h_daemon_wait_exit(d, H_STOP_MS);
	}
	h_daemon_stop_notifier(d);
	h_daemon_join_reader(d, 2000);
	if (!d->reader_joined)
		return; /* the reader may still touch it: leave it be */
	if (d->log_fd != -1)
		close(d->log_fd);
	if (d->notify_fd > 0)
		close(d->notify_fd);
	if (d->notify_wake[0] != -1) {
		close(d->notify_wake[0]);
		close(d->notify_wake[1]);
	}
	for (i = 0; i < d->nlines; i++)
		free(d->lines[i]);
	free(d->lines);
	for (i = 0; i < d->nnotes; i++)
		free(d->notes[i]);
	free(d->notes);
	pthread_mutex_destroy(&d->mu);
	pthread_cond_destroy(&d->cv);
	free(d);
}

/* Return the daemon's pid. */
pid_t
h_daemon_pid(const struct h_daemon *d)
{
	return d->pid;
}

/* The daemon's resident memory in KiB (Linux /proc), or -1 if unknown. */
long
h_daemon_rss_kb(const struct h_daemon *d)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/*
 * How many descriptors the daemon holds (Linux /proc), or -1 if unknown.
 * Those a wrapper such as valgrind keeps for itself, at the top of the
 * range (from a small limit up, or in the last 32 below a large one), are
 * not counted.
 */
int
h_daemon_nfds(const struct h_daemon *d)
{
	char path[64];
	struct dirent *e;
	struct rlimit rl;
	long fd, below = d->nofile != 0 && d->nofile < 256 ? d->nofile : 256;
	int n = 0;
	DIR *dir;

	if (below == 256 && prlimit(d->pid, RLIMIT_NOFILE, NULL, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur > 256 + 32)
		below = (long)rl.rlim_cur - 32;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d->pid);
	dir = opendir(path);
	if (dir == NULL)
		return -1;
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		fd = strtol(e->d_name, NULL, 10);
		if (fd < below)
			n++;
	}
	closedir(dir);
	return n;
}

/*
 * The daemon's descriptors once they have settled: two counts 20 ms apart
 * agree (within a second), or fail the test.
 */
int
h_daemon_nfds_settled(struct h_daemon *d)
{
	int before = h_daemon_nfds(d), now, i;

	for (i = 0; i < 50; i++) {
		poll(NULL, 0, 20);
		now = h_daemon_nfds(d);
		if (now == before && now > 0)
			return now;
		before = now;
	}
	h_fail(H_WHERE, "the daemon's descriptors never settled");
}

/* The daemon's descriptors whose /proc link starts with prefix; -1 if unknown. */
int
h_daemon_fds_named(const struct h_daemon *d, const char *prefix)
{
	char dir[64], path[320], link[512];
	size_t len = strlen(prefix);
	struct dirent *e;
	ssize_t n;
	int count = 0;
	DIR *dp;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)d->pid);
	if ((dp = opendir(dir)) == NULL)
		return -1;
	while ((e = readdir(dp)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strncmp(link, prefix, len) == 0)
			count++;
	}
	closedir(dp);
	return count;
}

/* One HTTP/1.1 request to addr: the answer's status (0: none), its body. */
int
h_http(const char *addr, const char *method, const char *path,
    const char *headers, char **body)
{
	const char *req = h_strf("%s %s HTTP/1.1\r\nHost: %s\r\n%s%s"
				 "Connection: close\r\n\r\n",
	    method, path, addr, headers != NULL ? headers : "",
	    strcmp(method, "POST") == 0 ? "Content-Length: 0\r\n" : "");
	char *all = NULL, *end;
	size_t len = 0;
	int fd = h_connect(addr, H_WAIT_MS), status = 0;

	if (body != NULL)
		*body = NULL;
	if (fd == -1)
		return 0;
	if (h_send_all(fd, req, strlen(req), H_WAIT_MS) == 0 &&
	    h_recv_all(fd, &all, &len, 2 * H_WAIT_MS) == H_OUT_EOF &&
	    sscanf(all, "HTTP/1.%*d %d", &status) == 1 && body != NULL &&
	    (end = strstr(all, "\r\n\r\n")) != NULL)
		*body = end + 4;
	close(fd);
	return status;
}

/* GET a path from an admin endpoint: the body of a 200, else NULL. */
char *
h_admin_get(const char *admin, const char *path)
{
	char *body;

	return h_http(admin, "GET", path, NULL, &body) == 200 ? body : NULL;
}

/* The number of the first "key": of a JSON document; fails if there is none. */
double
h_json_number_at(const char *where, const char *doc, const char *key)
{
	const char *p =
	    doc != NULL ? strstr(doc, h_strf("\"%s\":", key)) : NULL;

	if (p == NULL)
		h_fail(where, "no \"%s\" in %s", key,
		    doc != NULL ? doc : "(no document)");
	p += strlen(key) + 3;
	while (*p == ' ')
		p++;
	return strtod(p, NULL);
}

/*
 * Stop one thread of the daemon, found by its name (/proc/PID/task/T/comm),
 * while the others run on, as a hung thread would: ptrace's interrupt stops
 * that thread alone, where SIGSTOP stops the whole process. Returns its id,
 * or -1 with errno (ESRCH: no such thread; EPERM: ptrace is not allowed).
 */
pid_t
h_daemon_thread_stop(struct h_daemon *d, const char *name)
{
	char path[320], comm[64];
	struct dirent *e;
	pid_t tid = -1;
	DIR *dir;
	FILE *f;
	int st;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)d->pid);
	if ((dir = opendir(path)) == NULL)
		return -1;
	while (tid == -1 && (e = readdir(dir)) != NULL) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm",
		    (int)d->pid, e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		if (fgets(comm, sizeof(comm), f) != NULL) {
			comm[strcspn(comm, "\n")] = '\0';
			if (strcmp(comm, name) == 0)
				tid = (pid_t)atoi(e->d_name);
		}
		fclose(f);
	}
	closedir(dir);
	if (tid == -1) {
		errno = ESRCH;
		return -1;
	}
	if (ptrace(PTRACE_SEIZE, tid, NULL, NULL) == -1)
		return -1;
	if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) == -1 ||
	    waitpid(tid, &st, __WALL) != tid) {
		ptrace(PTRACE_DETACH, tid, NULL, NULL);
		return -1;
	}
	return tid;
}

/* Let a thread stopped by h_daemon_thread_stop() run again. */
void
h_daemon_thread_cont(struct h_daemon *d, pid_t tid)
{
	(void)d;
	if (ptrace(PTRACE_DETACH, tid, NULL, NULL) == -1)
		h_fail(H_WHERE, "ptrace detach %d: %s", (int)tid,
		    strerror(errno));
}

/*
 * The operator's reload: write the new config over the daemon's file, send
 * SIGHUP, and wait for RELOADING=1 then READY=1 (sent once every worker has
 * taken the new config). Returns the log mark from before the signal, for
 * the lines the reload wrote (lines from before may still be on their way
 * there: count those over the whole log).
 */
size_t
h_reload_at(const char *where, struct h_daemon *d, const char *config)
{
	size_t lmark = h_log_mark(d), nmark = h_notify_mark(d);
	long reloading, ready;

	h_write_file(h_daemon_config(d), config);
	h_daemon_signal(d, SIGHUP);
	reloading = h_wait_notify_after(d, nmark, "RELOADING=1", H_WAIT_MS);
	if (reloading < 0)
		h_fail(where, "no RELOADING=1 within %d ms of SIGHUP",
		    H_WAIT_MS);
	ready =
	    h_wait_notify_after(d, (size_t)reloading + 1, "READY=1", H_WAIT_MS);
	if (ready < 0)
		h_fail(where, "no READY=1 within %d ms of RELOADING=1",
		    H_WAIT_MS);
	return lmark;
}

/* Return the path of the daemon's config file. */
const char *
h_daemon_config(const struct h_daemon *d)
{
	return d->config_path;
}

/* Has the daemon sent this line (e.g. "STOPPING=1") on the notify socket? */
bool
h_daemon_notified(struct h_daemon *d, const char *what)
{
	return h_count_notify(d, 0, what) > 0;
}

/*
 * Does a notify line match: equal, or starting with a pattern ending '=',
 * or with a pattern ending '*' (without the '*')?
 */
static bool
h_note_matches(const char *line, const char *what)
{
	size_t len = strlen(what);

	if (len > 0 && what[len - 1] == '=')
		return strncmp(line, what, len) == 0;
	if (len > 0 && what[len - 1] == '*')
		return strncmp(line, what, len - 1) == 0;
	return strcmp(line, what) == 0;
}

/* How many notify lines have come so far: a mark for the *_after calls. */
size_t
h_notify_mark(struct h_daemon *d)
{
	size_t n;

	pthread_mutex_lock(&d->mu);
	h_daemon_drain_notify(d);
	n = d->nnotes;
	pthread_mutex_unlock(&d->mu);
	return n;
}

/* Return notify line i (e.g. "STATUS=1 upstream, 0 open"), or NULL. */
const char *
h_notify_line(struct h_daemon *d, size_t i)
{
	const char *s = NULL;

	pthread_mutex_lock(&d->mu);
	h_daemon_drain_notify(d);
	if (i < d->nnotes)
		s = d->notes[i];
	pthread_mutex_unlock(&d->mu);
	return s;
}

/*
 * Wait up to ms (0: not at all) until `want` notify lines from `from` on
 * match, or the daemon has exited: the count then, and the index of the
 * first match in *first (if first is not NULL; -1 if none came).
 */
static unsigned
h_notify_scan(struct h_daemon *d, size_t from, const char *what, unsigned want,
    int ms, long *first)
{
	uint64_t deadline = h_now_ms() + (uint64_t)(ms > 0 ? ms : 0);
	struct timespec ts;
	unsigned n = 0;
	size_t i = from;
	bool last = ms <= 0;

	if (first != NULL)
		*first = -1;
	ts = h_deadline_ts(deadline);
	pthread_mutex_lock(&d->mu);
	for (;;) {
		h_daemon_drain_notify(d);
		for (; i < d->nnotes; i++)
			if (h_note_matches(d->notes[i], what) && n++ == 0 &&
			    first != NULL)
				*first = (long)i;
		if (n >= want || last)
			break;
		/* After the exit (and the log's EOF) nothing more can come. */
		if (d->eof ||
		    pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT)
			last = true;
	}
	pthread_mutex_unlock(&d->mu);
	return n;
}

/* Count the notify lines from `from` on that match. */
unsigned
h_count_notify(struct h_daemon *d, size_t from, const char *what)
{
	return h_notify_scan(d, from, what, UINT_MAX, 0, NULL);
}

/*
 * Wait up to ms until `want` notify lines from `from` on match; returns the
 * count then (or at the deadline, or when the daemon has exited).
 */
unsigned
h_wait_notify_count(struct h_daemon *d, size_t from, const char *what,
    unsigned want, int ms)
{
	return h_notify_scan(d, from, what, want, ms, NULL);
}

/*
 * Wait up to ms for a notify line from `from` on that matches: its index
 * (for a later h_wait_notify_after), or -1.
 */
long
h_wait_notify_after(struct h_daemon *d, size_t from, const char *what, int ms)
{
	long found;

	h_notify_scan(d, from, what, 1, ms, &found);
	return found;
}

/* Print a daemon's whole log on stderr, for a failing test. */
void
h_daemon_dump(struct h_daemon *d, const char *why)
{
	size_t i;

	pthread_mutex_lock(&d->mu);
	fprintf(stderr, "=== %s: log of circuitproxyd pid %d (%s%s) ===\n", why,
	    (int)d->pid, d->config_path ? "config " : "no config",
	    d->config_path ? d->config_path : "");
	for (i = 0; i < d->nlines; i++)
		fprintf(stderr, "| %s\n", d->lines[i]);
	fprintf(stderr, "=== end of log (%zu lines) ===\n", d->nlines);
	h_daemon_drain_notify(d);
	for (i = 0; i < d->nnotes; i++)
		fprintf(stderr, "| sd_notify: %s\n", d->notes[i]);
	pthread_mutex_unlock(&d->mu);
}

/* Does a logfmt line hold this field (see harness.h for the rule)? */
bool
h_line_has(const char *line, const char *pat)
{
	size_t len = strlen(pat);
	const char *p = line;

	if (len == 0)
		return true;
	while ((p = strstr(p, pat)) != NULL) {
		bool start = p == line || p[-1] == ' ';
		bool end =
		    pat[len - 1] == '=' || p[len] == '\0' || p[len] == ' ';

		if (start && end)
			return true;
		p++;
	}
	return false;
}

/* Does a line hold every pattern? */
static bool
h_line_has_all(const char *line, const char **pats, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!h_line_has(line, pats[i]))
			return false;
	return true;
}

/* Collect a NULL-terminated list of patterns. */
static size_t
h_collect(const char **pats, va_list ap)
{
	size_t n = 0;
	const char *p;

	while ((p = va_arg(ap, const char *)) != NULL) {
		if (n == H_MAX_PATTERNS)
			h_fail(H_WHERE, "too many patterns");
		pats[n++] = p;
	}
	return n;
}

/* Return how many lines the log holds now: a mark for the *_after calls. */
size_t
h_log_mark(struct h_daemon *d)
{
	size_t n;

	pthread_mutex_lock(&d->mu);
	n = d->nlines;
	pthread_mutex_unlock(&d->mu);
	return n;
}

/* Return line i of the log, or NULL. */
const char *
h_log_line(struct h_daemon *d, size_t i)
{
	const char *s = NULL;

	pthread_mutex_lock(&d->mu);
	if (i < d->nlines)
		s = d->lines[i];
	pthread_mutex_unlock(&d->mu);
	return s;
}

/*
 * Wait up to ms (0: not at all) until `want` lines at or after line `from`
 * hold every pattern, or the log ends: the count then, and the first such
 * line in *first (if first is not NULL; NULL if none came).
 */
static unsigned
h_log_scan(struct h_daemon *d, size_t from, const char **pats, size_t n,
    unsigned want, int ms, const char **first)
{
	uint64_t deadline = h_now_ms() + (uint64_t)(ms > 0 ? ms : 0);
	struct timespec ts;
	unsigned count = 0;
	size_t i = from;
	bool last = ms <= 0;

	if (first != NULL)
		*first = NULL;
	ts = h_deadline_ts(deadline);
	pthread_mutex_lock(&d->mu);
	for (;;) {
		for (; i < d->nlines; i++)
			if (h_line_has_all(d->lines[i], pats, n) &&
			    count++ == 0 && first != NULL)
				*first = d->lines[i];
		if (count >= want || d->eof || last)
			break;
		last = pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT;
	}
	pthread_mutex_unlock(&d->mu);
	return count;
}

/* Wait for a first match at or after line `from`; NULL on timeout or EOF. */
static const char *
h_wait_log_ap(struct h_daemon *d, size_t from, int ms, const char **pats,
    size_t n)
{
	const char *found;

	h_log_scan(d, from, pats, n, 1, ms, &found);
	return found;
}

/* Wait up to ms for a line from `from` on holding every pattern. */
const char *
h_wait_log_v(struct h_daemon *d, size_t from, int ms, ...)
{
	const char *pats[H_MAX_PATTERNS];
	size_t n;
	va_list ap;

	va_start(ap, ms);
	n = h_collect(pats, ap);
	va_end(ap);
	return h_wait_log_ap(d, from, ms, pats, n);
}

/* Like h_wait_log_v, but fail the test (showing the log) on timeout. */
const char *
h_expect_log_v(const char *where, struct h_daemon *d, size_t from, int ms, ...)
{
	const char *pats[H_MAX_PATTERNS], *line;
	char want[1024];
	size_t n, i, o = 0;
	va_list ap;
	bool eof;

	va_start(ap, ms);
	n = h_collect(pats, ap);
	va_end(ap);
	line = h_wait_log_ap(d, from, ms, pats, n);
	if (line != NULL)
		return line;
	want[0] = '\0';
	for (i = 0; i < n && o < sizeof(want) - 1; i++)
		o += (size_t)snprintf(want + o, sizeof(want) - o, "%s%s",
		    i ? " " : "", pats[i]);
	pthread_mutex_lock(&d->mu);
	eof = d->eof;
	pthread_mutex_unlock(&d->mu);
	h_fail(where, "no log line with [%s] from line %zu within %d ms%s",
	    want, from, ms, eof ? " (the daemon's log is closed)" : "");
}

/* Count the lines from `from` on that hold every pattern. */
unsigned
h_count_log_v(struct h_daemon *d, size_t from, ...)
{
	const char *pats[H_MAX_PATTERNS];
	size_t n;
	va_list ap;

	va_start(ap, from);
	n = h_collect(pats, ap);
	va_end(ap);
	return h_log_scan(d, from, pats, n, UINT_MAX, 0, NULL);
}

/*
 * Wait up to ms until at least `want` lines from `from` on hold every
 * pattern; returns the count then (or at the deadline).
 */
unsigned
h_wait_count_v(struct h_daemon *d, size_t from, unsigned want, int ms, ...)
{
	const char *pats[H_MAX_PATTERNS];
	size_t n;
	va_list ap;

	va_start(ap, ms);
	n = h_collect(pats, ap);
	va_end(ap);
	return h_log_scan(d, from, pats, n, want, ms, NULL);
}

/* The index of a line returned by a wait, for h_*_after; fails if unknown. */
size_t
h_log_index(struct h_daemon *d, const char *line)
{
	size_t i;

	pthread_mutex_lock(&d->mu);
	for (i = 0; i < d->nlines; i++)
		if (d->lines[i] == line)
			break;
	pthread_mutex_unlock(&d->mu);
	if (line == NULL || i == d->nlines)
		h_fail(H_WHERE, "not a line of this daemon's log");
	return i;
}

/* Wait up to ms for the log to grow past n lines; false if it did not. */
bool
h_log_wait_more(struct h_daemon *d, size_t n, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct timespec ts;
	bool more;

	ts = h_deadline_ts(deadline);
	pthread_mutex_lock(&d->mu);
	while (d->nlines <= n && !d->eof)
		if (pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT)
			break;
	more = d->nlines > n;
	pthread_mutex_unlock(&d->mu);
	return more;
}

/* Return the whole log as one string (lines joined by newlines). */
char *
h_log_text(struct h_daemon *d)
{
	size_t i, len = 1, o = 0;
	char *s;

	pthread_mutex_lock(&d->mu);
	for (i = 0; i < d->nlines; i++)
		len += strlen(d->lines[i]) + 1;
	s = h_alloc(len);
	for (i = 0; i < d->nlines; i++)
		o += (size_t)sprintf(s + o, "%s\n", d->lines[i]);
	s[o] = '\0';
	pthread_mutex_unlock(&d->mu);
	return s;
}

/* Copy the value of a logfmt key of a line into buf (unquoted); found? */
bool
h_log_value(const char *line, const char *key, char *buf, size_t len)
{
	char pat[128];
	const char *p = line;
	size_t o = 0, klen;

	snprintf(pat, sizeof(pat), "%s=", key);
	klen = strlen(pat);
	for (;;) {
		p = strstr(p, pat);
		if (p == NULL)
			return false;
		if (p == line || p[-1] == ' ')
			break;
		p++;
	}
	p += klen;
	if (len == 0)
		return true;
	if (*p == '"') {
		for (p++; *p != '\0' && *p != '"'; p++) {
			if (*p == '\\' && p[1] != '\0')
				p++;
			if (o + 1 < len)
				buf[o++] = *p;
		}
	} else {
		for (; *p != '\0' && *p != ' '; p++)
			if (o + 1 < len)
				buf[o++] = *p;
	}
	buf[o] = '\0';
	return true;
}

/* The value of a key as a number, or NAN if absent or not a number. */
double
h_log_double(const char *line, const char *key)
{
	char buf[64], *end;
	double v;

	if (line == NULL || !h_log_value(line, key, buf, sizeof(buf)))
		return NAN;
	v = strtod(buf, &end);
	if (end == buf || *end != '\0')
		return NAN;
	return v;
}

/* The ISO-8601 timestamp that starts a line, in ms since the epoch; or -1. */
int64_t
h_log_time_ms(const char *line)
{
	struct tm tm;
	int y, mo, da, h, mi, s, used = 0;
	int64_t ms = 0, t;
	const char *p;

	if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &da, &h, &mi, &s,
		&used) != 6 ||
	    used == 0)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = da;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	t = (int64_t)timegm(&tm) * 1000;
	p = line + used;
	if (*p == '.' || *p == ',') {
		int64_t scale = 100;

		for (p++; *p >= '0' && *p <= '9'; p++) {
			ms += (*p - '0') * scale;
			scale /= 10;
		}
	}
	if (*p == '+' || *p == '-') {
		int oh = 0, om = 0;

		if (sscanf(p + 1, "%2d:%2d", &oh, &om) < 1 &&
		    sscanf(p + 1, "%2d%2d", &oh, &om) < 1)
			return -1;
		t -= (*p == '+' ? 1 : -1) * ((int64_t)oh * 3600 + om * 60) *
		    1000;
	} else if (*p != 'Z')
		return -1;
	return t + ms;
}

/* Append bytes to a growable buffer. */
static void
h_buf_add(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		*buf = realloc(*buf, *cap);
		if (*buf == NULL)
			abort();
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* Run a NULL-ended argv to its exit, capturing stdout and stderr. */
static void
h_run_argv(struct h_run *r, const char **argv)
{
	size_t olen = 0, ocap = 0, elen = 0, ecap = 0;
	char **env, buf[4096];
	struct pollfd pfd[2];
	uint64_t deadline = h_now_ms() + 2 * H_WAIT_MS;
	int op[2], ep[2], st, open_fds = 2;
	pid_t pid, parent = getpid();

	env = h_build_env(NULL, NULL);
	if (pipe2(op, O_CLOEXEC) == -1 || pipe2(ep, O_CLOEXEC) == -1)
		h_fail(H_WHERE, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid == -1)
		h_fail(H_WHERE, "fork: %s", strerror(errno));
	if (pid == 0)
		h_child_exec(parent, op[1], ep[1], argv, env, 0, false, NULL);
	close(op[1]);
	close(ep[1]);
	r->out = NULL;
	r->err = NULL;
	h_buf_add(&r->out, &olen, &ocap, "", 0);
	h_buf_add(&r->err, &elen, &ecap, "", 0);
	pfd[0].fd = op[0];
	pfd[1].fd = ep[0];
	pfd[0].events = pfd[1].events = POLLIN;
	while (open_fds > 0 && h_left(deadline) > 0) {
		int i;

		if (poll(pfd, 2, h_left(deadline)) <= 0)
			continue;
		for (i = 0; i < 2; i++) {
			ssize_t got;

			if (pfd[i].fd == -1 || pfd[i].revents == 0)
				continue;
			got = read(pfd[i].fd, buf, sizeof(buf));
			if (got > 0 && i == 0)
				h_buf_add(&r->out, &olen, &ocap, buf,
				    (size_t)got);
			else if (got > 0)
				h_buf_add(&r->err, &elen, &ecap, buf,
				    (size_t)got);
			else if (got == 0 || errno != EINTR) {
				close(pfd[i].fd);
				pfd[i].fd = -1;
				open_fds--;
			}
		}
	}
	h_track(r->out);
	h_track(r->err);
	r->status = -1;
	for (;;) {
		if (waitpid(pid, &st, WNOHANG) == pid) {
			r->status = WIFEXITED(st) ? WEXITSTATUS(st)
						  : 128 + WTERMSIG(st);
			break;
		}
		if (h_left(deadline) == 0) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		poll(NULL, 0, 5);
	}
	if (pfd[0].fd != -1)
		close(pfd[0].fd);
	if (pfd[1].fd != -1)
		close(pfd[1].fd);
}

/* Run prog (under the wrapper) with arguments to its exit, output captured. */
static void
h_run_prog_ap(struct h_run *r, const char *prog, const char *first, va_list ap)
{
	const char *argv[H_MAX_ARGS + 8], *a;
	char *wrap;
	size_t n;

	n = h_build_argv_prog(argv, H_MAX_ARGS, prog, &wrap);
	h_track(wrap);
	for (a = first; a != NULL && n < H_MAX_ARGS;
	     a = va_arg(ap, const char *))
		argv[n++] = a;
	argv[n] = NULL;
	h_run_argv(r, argv);
}

/* Run the daemon with arguments to its exit, capturing stdout and stderr. */
void
h_run_args(struct h_run *r, const char *first, ...)
{
	va_list ap;

	va_start(ap, first);
	h_run_prog_ap(r, getenv("CIRCUITPROXYD"), first, ap);
	va_end(ap);
}

/* Run circuitproxyctl with arguments to its exit, capturing its output. */
void
h_ctl_args(struct h_run *r, const char *first, ...)
{
	va_list ap;

	va_start(ap, first);
	h_run_prog_ap(r, h_ctl_prog(), first, ap);
	va_end(ap);
}

/* Run another program (a path, see h_client) to its exit, output captured. */
void
h_exec_args(struct h_run *r, const char *prog, ...)
{
	const char *argv[H_MAX_ARGS + 1], *a;
	size_t n = 0;
	va_list ap;

	argv[n++] = prog;
	va_start(ap, prog);
	while ((a = va_arg(ap, const char *)) != NULL && n < H_MAX_ARGS)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	h_run_argv(r, argv);
}

/* The path of a client program on $PATH, or NULL when it is missing. */
const char *
h_client(const char *name)
{
	const char *p = h_which(name);

	return access(p, X_OK) == 0 && strchr(p, '/') != NULL ? p : NULL;
}

/* Count the lines of a text (a last line without newline counts). */
unsigned
h_count_lines(const char *s)
{
	unsigned n = 0;

	for (; *s != '\0'; s++)
		if (*s == '\n' || s[1] == '\0')
			n++;
	return n;
}

/* Return line i (from 0) of a text without its newline, or NULL. */
char *
h_line_at(const char *s, unsigned i)
{
	const char *end;

	while (i > 0 && s != NULL) {
		s = strchr(s, '\n');
		if (s != NULL)
			s++;
		i--;
	}
	if (s == NULL || *s == '\0')
		return NULL;
	end = strchr(s, '\n');
	return h_strf("%.*s", (int)(end ? end - s : (ptrdiff_t)strlen(s)), s);
}

/* Make a descriptor non-blocking. */
static void
h_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Wait for events on a connection's fd, or the backend's stop; false on stop. */
static bool
h_conn_wait(struct h_conn *c, short events)
{
	struct pollfd pfd[2];

	pfd[0].fd = c->fd;
	pfd[0].events = events;
	pfd[1].fd = c->b->stop[0];
	pfd[1].events = POLLIN;
	for (;;) {
		if (poll(pfd, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (pfd[1].revents != 0)
			return false;
		if (pfd[0].revents != 0)
			return true;
	}
}

/* Read some bytes from a connection: >0, 0 at EOF, -1 on error or stop. */
static ssize_t
h_conn_read(struct h_conn *c, char *buf, size_t len)
{
	ssize_t n;

	for (;;) {
		if (!h_conn_wait(c, POLLIN))
			return -1;
		n = recv(c->fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EINTR)
			return -1;
	}
}

/* Write all bytes to a connection; false on error or stop. */
static bool
h_conn_write(struct h_conn *c, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno != EAGAIN && errno != EINTR)
			return false;
		if (!h_conn_wait(c, POLLOUT))
			return false;
	}
	return true;
}

/* Let ms pass, or less if the backend stops, touching nothing on the fd. */
static void
h_conn_linger(struct h_conn *c, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct pollfd pfd;

	pfd.fd = c->b->stop[0];
	pfd.events = POLLIN;
	while (h_left(deadline) > 0)
		if (poll(&pfd, 1, h_left(deadline)) > 0)
			return;
}

/* Serve one accepted connection the way its kind says. */
static void *
h_conn_main(void *arg)
{
	struct h_conn *c = arg;
	struct h_backend *b = c->b;
	char buf[65536], *all = NULL;
	size_t alen = 0, acap = 0;
	struct linger lg = { 1, 0 };
	ssize_t n;

	switch (c->kind) {
	case H_ECHO:
		while ((n = h_conn_read(c, buf, sizeof(buf))) > 0)
			if (!h_conn_write(c, buf, (size_t)n))
				break;
		if (n == 0)
			shutdown(c->fd, SHUT_WR);
		break;
	case H_REPLY_EOF:
		while ((n = h_conn_read(c, buf, sizeof(buf))) > 0)
			if (alen + (size_t)n <= H_REPLY_MAX)
				h_buf_add(&all, &alen, &acap, buf, (size_t)n);
		if (n == 0 && b->banner != NULL)
			h_conn_write(c, b->banner, strlen(b->banner));
		else if (n == 0 && alen > 0)
			h_conn_write(c, all, alen);
		break;
	case H_BANNER:
		if (b->banner != NULL)
			h_conn_write(c, b->banner, strlen(b->banner));
		while (h_conn_read(c, buf, sizeof(buf)) > 0)
			;
		break;
	case H_RESET:
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		break;
	case H_SILENT:
		while (h_conn_read(c, buf, sizeof(buf)) > 0)
			;
		break;
	case H_STALL:
		h_conn_wait(c, 0); /* wakes on a hangup or error only */
		break;
	case H_FIN_FIRST:
		if (b->banner != NULL)
			h_conn_write(c, b->banner, strlen(b->banner));
		shutdown(c->fd, SHUT_WR);
		while ((n = h_conn_read(c, buf, sizeof(buf))) > 0) {
			pthread_mutex_lock(&b->mu);
			b->received += (unsigned)n;
			pthread_cond_broadcast(&b->cv);
			pthread_mutex_unlock(&b->mu);
		}
		break;
	case H_HALF_RST:
		shutdown(c->fd, SHUT_WR);
		h_conn_linger(c, H_LATE_RST_MS);
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		break;
	case H_LAST_WORDS:
		if (h_conn_read(c, buf, sizeof(buf)) > 0 && b->banner != NULL)
			h_conn_write(c, b->banner, strlen(b->banner));
		break;
	case H_LATE_RST:
		if (b->banner != NULL)
			h_conn_write(c, b->banner, strlen(b->banner));
		h_conn_linger(c, H_LATE_RST_MS);
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		break;
	default:
		break;
	}
	free(all);
	close(c->fd);
	c->fd = -1;
	pthread_mutex_lock(&b->mu);
	b->active--;
	c->ended = true;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

/*
 * Join the connection threads that have ended, making room for more: the
 * bound is on connections at once, not in a backend's life. Locked.
 */
static void
h_backend_reap(struct h_backend *b)
{
	size_t i, kept = 0;

	for (i = 0; i < b->nconns; i++) {
		if (!b->conns[i]->ended) {
			b->conns[kept++] = b->conns[i];
			continue;
		}
		pthread_join(b->conns[i]->thread, NULL);
		free(b->conns[i]);
	}
	b->nconns = kept;
}

/* The acceptor thread: a connection thread per client, up to a bound. */
static void *
h_backend_acceptor(void *arg)
{
	struct h_backend *b = arg;
	struct pollfd pfd[3];
	pthread_attr_t attr;
	struct h_conn *c;
	int fd;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pfd[0].fd = b->lfd;
	pfd[1].fd = b->wake[0];
	pfd[2].fd = b->stop[0];
	pfd[0].events = pfd[1].events = pfd[2].events = POLLIN;
	for (;;) {
		if (poll(pfd, 3, -1) == -1 && errno != EINTR)
			break;
		if (pfd[1].revents != 0 || pfd[2].revents != 0)
			break;
		if (pfd[0].revents == 0)
			continue;
		fd = accept4(b->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd == -1)
			continue;
		c = calloc(1, sizeof(*c));
		if (c == NULL)
			abort();
		c->b = b;
		c->fd = fd;
		c->kind = (enum h_kind)atomic_load(&b->kind);
		pthread_mutex_lock(&b->mu);
		b->accepted++;
		if (b->nconns == H_MAX_CONNS)
			h_backend_reap(b);
		if (b->nconns < H_MAX_CONNS &&
		    pthread_create(&c->thread, &attr, h_conn_main, c) == 0) {
			b->conns[b->nconns++] = c;
			b->active++;
		} else {
			close(fd);
			free(c);
		}
		pthread_cond_broadcast(&b->cv);
		pthread_mutex_unlock(&b->mu);
	}
	pthread_attr_destroy(&attr);
	return NULL;
}

/* Bind the backend's socket to its address (the first time: a new one). */
static void
h_backend_bind(struct h_backend *b, bool again)
{
	int one = 1;

	if (b->family == AF_UNIX) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&b->ss;

		if (!again) {
			char *p = h_path(h_strf("b%u.sock", ++h_file_seq));

			memset(&b->ss, 0, sizeof(b->ss));
			sun->sun_family = AF_UNIX;
			if (strlen(p) >= sizeof(sun->sun_path))
				h_fail(H_WHERE, "path too long: %s", p);
			strcpy(sun->sun_path, p);
			b->sslen = sizeof(*sun);
		}
		unlink(sun->sun_path);
		b->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (b->lfd == -1 ||
		    bind(b->lfd, (struct sockaddr *)&b->ss, b->sslen) == -1)
			h_fail(H_WHERE, "bind %s: %s", sun->sun_path,
			    strerror(errno));
	} else if (!again && b->ip4 != 0) {
		/* Another 127.0.0.0/8 address, on the port asked for. */
		struct sockaddr_in *sin = (struct sockaddr_in *)&b->ss;

		memset(&b->ss, 0, sizeof(b->ss));
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(b->ip4);
		sin->sin_port = htons((uint16_t)b->port);
		b->sslen = sizeof(*sin);
		h_backend_bind(b, true);
		return;
	} else if (!again) {
		b->lfd = h_bind_loopback(b->family, b->port, true, &b->ss,
		    &b->sslen);
		if (b->lfd == -1)
			h_fail(H_WHERE, "bind a backend: %s", strerror(errno));
	} else {
		b->lfd = socket(b->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (b->family == AF_INET6)
			setsockopt(b->lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
			    sizeof(one));
		setsockopt(b->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(b->lfd, (struct sockaddr *)&b->ss, b->sslen) == -1)
			h_fail(H_WHERE, "rebind %s: %s", b->addr,
			    strerror(errno));
	}
	h_format_addr((struct sockaddr *)&b->ss, b->addr, sizeof(b->addr));
}

/* Listen and start accepting. */
static void
h_backend_listen(struct h_backend *b)
{
	if (listen(b->lfd, 128) == -1)
		h_fail(H_WHERE, "listen %s: %s", b->addr, strerror(errno));
	h_nonblock(b->lfd);
	if (pthread_create(&b->acceptor, NULL, h_backend_acceptor, b) != 0)
		h_fail(H_WHERE, "pthread_create failed");
	b->accepting = true;
}

/* Stop accepting (connections already accepted go on). */
static void
h_backend_unlisten(struct h_backend *b)
{
	char c = 0;

	if (!b->accepting)
		return;
	if (write(b->wake[1], &c, 1) != 1)
		abort();
	pthread_join(b->acceptor, NULL);
	if (read(b->wake[0], &c, 1) != 1)
		abort();
	b->accepting = false;
}

/*
 * A unix listener with backlog 0 and one connection nobody accepts: its
 * queue is full, so a non-blocking connect fails at once with EAGAIN (a
 * blocking one waits). Checked with a probe.
 */
static void
h_backend_blackhole_unix(struct h_backend *b)
{
	int probe, err;

	if (listen(b->lfd, 0) == -1)
		h_fail(H_WHERE, "listen: %s", strerror(errno));
	b->fill[0] =
	    socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (b->fill[0] == -1 ||
	    connect(b->fill[0], (struct sockaddr *)&b->ss, b->sslen) == -1)
		h_fail(H_WHERE, "fill the unix blackhole: %s", strerror(errno));
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe == -1)
		h_fail(H_WHERE, "socket: %s", strerror(errno));
	err = 0;
	if (connect(probe, (struct sockaddr *)&b->ss, b->sslen) == -1)
		err = errno;
	close(probe);
	if (err != EAGAIN)
		h_fail(H_WHERE, "the unix blackhole took a probe: %s",
		    err == 0 ? "connected" : strerror(err));
}

/*
 * The blackhole: listen(fd, 0) lets one connection wait in the accept queue
 * (Linux refuses a SYN once the queue holds more than the backlog). Fill it
 * with a connection nobody accepts, plus a few more whose SYNs are dropped:
 * every later SYN is dropped too, so a connect to it neither succeeds nor
 * fails until its own timeout. The first filler must be established before
 * the others are sent, so that it is the one that takes the slot.
 */
static void
h_backend_blackhole(struct h_backend *b)
{
	struct pollfd pfd;
	int i;

	if (b->family == AF_UNIX) {
		h_backend_blackhole_unix(b);
		return;
	}
	if (b->family != AF_INET && b->family != AF_INET6)
		h_fail(H_WHERE, "a blackhole needs an inet or unix family");
	if (listen(b->lfd, 0) == -1)
		h_fail(H_WHERE, "listen: %s", strerror(errno));
	for (i = 0; i < H_BLACKHOLE_FILL; i++) {
		b->fill[i] = socket(b->family,
		    SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (b->fill[i] == -1)
			h_fail(H_WHERE, "socket: %s", strerror(errno));
		if (connect(b->fill[i], (struct sockaddr *)&b->ss, b->sslen) ==
			-1 &&
		    errno != EINPROGRESS)
			h_fail(H_WHERE, "fill the blackhole: %s",
			    strerror(errno));
		if (i > 0)
			continue;
		pfd.fd = b->fill[0];
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, H_WAIT_MS) != 1)
			h_fail(H_WHERE,
			    "the blackhole's filler did not connect");
	}
}

/* Start a backend of a kind on the loopback of a family (or a unix path). */
struct h_backend *
h_backend_new(enum h_kind kind, int family)
{
	return h_backend_new_port(kind, family, 0);
}

/* Start a backend on a given port of the loopback (0: any free one). */
struct h_backend *
h_backend_new_port(enum h_kind kind, int family, int port)
{
	return h_backend_new_ip4(kind, family, 0, port);
}

/*
 * Start a backend on ip4, another address of 127.0.0.0/8 (host order; 0:
 * the family's loopback), on a given port (0: any).
 */
struct h_backend *
h_backend_new_ip4(enum h_kind kind, int family, uint32_t ip4, int port)
{
	struct h_backend *b;
	int i;

	if (h_nbackends == H_MAX_BACKENDS)
		h_fail(H_WHERE, "too many backends in one test");
	b = calloc(1, sizeof(*b));
	if (b == NULL)
		abort();
	h_sync_init(&b->mu, &b->cv);
	for (i = 0; i < H_BLACKHOLE_FILL; i++)
		b->fill[i] = -1;
	b->family = family;
	b->port = port;
	b->ip4 = family == AF_INET ? ip4 : 0;
	b->lfd = -1;
	atomic_store(&b->kind, (int)kind);
	if (pipe2(b->wake, O_CLOEXEC) == -1 || pipe2(b->stop, O_CLOEXEC) == -1)
		h_fail(H_WHERE, "pipe: %s", strerror(errno));
	h_backends[h_nbackends++] = b;
	h_backend_bind(b, false);
	if (kind == H_BLACKHOLE)
		h_backend_blackhole(b);
	else if (kind != H_REFUSE)
		h_backend_listen(b);
	return b;
}

/*
 * Change what the backend does. Between listening kinds it applies to the
 * next connection; to H_REFUSE the listener is closed and the address bound
 * again without listening; from H_REFUSE it starts listening.
 */
void
h_backend_set_kind(struct h_backend *b, enum h_kind kind)
{
	enum h_kind cur = (enum h_kind)atomic_load(&b->kind);

	if (cur == H_BLACKHOLE || kind == H_BLACKHOLE)
		h_fail(H_WHERE, "a blackhole stays a blackhole");
	if (cur == kind)
		return;
	atomic_store(&b->kind, (int)kind);
	if (kind == H_REFUSE) {
		h_backend_unlisten(b);
		close(b->lfd);
		h_backend_bind(b, true);
	} else if (cur == H_REFUSE)
		h_backend_listen(b);
}

/*
 * A TCP blackhole starts answering as kind: its fillers go and it listens
 * with a full backlog, so a connect whose SYN it dropped completes when the
 * SYN is sent again (about a second after the first, on Linux).
 */
void
h_backend_unblock(struct h_backend *b, enum h_kind kind)
{
	int i;

	if (atomic_load(&b->kind) != H_BLACKHOLE || b->family == AF_UNIX ||
	    kind == H_BLACKHOLE || kind == H_REFUSE)
		h_fail(H_WHERE,
		    "h_backend_unblock: a TCP blackhole, to a "
		    "listening kind");
	for (i = H_BLACKHOLE_FILL - 1; i >= 0; i--) {
		if (b->fill[i] != -1)
			close(b->fill[i]);
		b->fill[i] = -1;
	}
	atomic_store(&b->kind, (int)kind);
	h_backend_listen(b);
}

/* Set what H_BANNER sends first and H_REPLY_EOF sends after EOF. */
void
h_backend_set_banner(struct h_backend *b, const char *text)
{
	b->banner = h_strf("%s", text);
}

/* Return the address text for a config's "server =" line. */
const char *
h_backend_addr(const struct h_backend *b)
{
	return b->addr;
}

/* How many connections the backend has accepted. */
unsigned
h_backend_accepted(struct h_backend *b)
{
	unsigned n;

	pthread_mutex_lock(&b->mu);
	n = b->accepted;
	pthread_mutex_unlock(&b->mu);
	return n;
}

/* How many connections the backend holds open now. */
unsigned
h_backend_active(struct h_backend *b)
{
	unsigned n;

	pthread_mutex_lock(&b->mu);
	n = b->active;
	pthread_mutex_unlock(&b->mu);
	return n;
}

/* Wait until a counter of the backend reaches n; false on timeout. */
static bool
h_backend_wait(struct h_backend *b, const unsigned *counter, unsigned n, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct timespec ts;
	bool ok;

	ts = h_deadline_ts(deadline);
	pthread_mutex_lock(&b->mu);
	while (*counter < n)
		if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT)
			break;
	ok = *counter >= n;
	pthread_mutex_unlock(&b->mu);
	return ok;
}

/* Wait until H_FIN_FIRST connections have read at least n bytes. */
bool
h_backend_wait_received(struct h_backend *b, unsigned n, int ms)
{
	return h_backend_wait(b, &b->received, n, ms);
}

/* Wait until the backend has accepted n connections in all. */
bool
h_backend_wait_accepted(struct h_backend *b, unsigned n, int ms)
{
	return h_backend_wait(b, &b->accepted, n, ms);
}

/* Wait until the backend holds n connections open at once. */
bool
h_backend_wait_active(struct h_backend *b, unsigned n, int ms)
{
	return h_backend_wait(b, &b->active, n, ms);
}

/* Wait until the backend holds no connection open; false on timeout. */
bool
h_backend_wait_idle(struct h_backend *b, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct timespec ts;
	bool ok;

	ts = h_deadline_ts(deadline);
	pthread_mutex_lock(&b->mu);
	while (b->active > 0)
		if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT)
			break;
	ok = b->active == 0;
	pthread_mutex_unlock(&b->mu);
	return ok;
}

/* Stop the backend: no more accepting; its connections are closed. */
void
h_backend_stop(struct h_backend *b)
{
	char c = 0;
	size_t i;
	int k;

	if (b->stopped)
		return;
	b->stopped = true;
	if (write(b->stop[1], &c, 1) != 1)
		abort();
	if (b->accepting)
		pthread_join(b->acceptor, NULL);
	b->accepting = false;
	for (i = 0; i < b->nconns; i++) {
		pthread_join(b->conns[i]->thread, NULL);
		free(b->conns[i]);
	}
	b->nconns = 0;
	for (k = 0; k < H_BLACKHOLE_FILL; k++)
		if (b->fill[k] != -1)
			close(b->fill[k]);
	if (b->lfd != -1)
		close(b->lfd);
	b->lfd = -1;
	if (b->family == AF_UNIX)
		unlink(((struct sockaddr_un *)&b->ss)->sun_path);
}

/* Stop and free a backend. */
static void
h_backend_free(struct h_backend *b)
{
	h_backend_stop(b);
	close(b->wake[0]);
	close(b->wake[1]);
	close(b->stop[0]);
	close(b->stop[1]);
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cv);
	free(b);
}

/* Name an outcome, for messages. */
const char *
h_outcome_name(enum h_outcome o)
{
	static const char *names[] = { "data", "eof", "reset", "timeout",
		"refused", "error" };

	return (unsigned)o < sizeof(names) / sizeof(names[0]) ? names[o] : "?";
}

/*
 * Connect to an address within ms: a non-blocking fd, or -1 with errno.
 * The local address goes to *name (if given) as soon as the kernel picks
 * it, so a client that the daemon resets before the connect is seen to
 * complete (-1, ECONNRESET) can still be found in the log. A rcvbuf > 0 is
 * the socket's SO_RCVBUF, set before the connect.
 */
static int
h_connect_buf(const char *addr, int ms, char **name, int rcvbuf)
{
	struct sockaddr_storage ss;
	struct pollfd pfd;
	socklen_t len, elen = sizeof(int);
	int fd, err = 0;

	if (name != NULL)
		*name = NULL;
	if (h_parse_addr(addr, &ss, &len) == -1)
		h_fail(H_WHERE, "bad address %s", addr);
	fd =
	    socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		return -1;
	if (rcvbuf > 0 &&
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) ==
		-1) {
		err = errno;
		goto fail;
	}
	if (connect(fd, (struct sockaddr *)&ss, len) == 0)
		goto done;
	if (errno != EINPROGRESS && errno != EAGAIN) {
		err = errno;
		goto fail;
	}
	if (name != NULL)
		*name = h_sock_name(fd);
	pfd.fd = fd;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, ms) != 1) {
		err = ETIMEDOUT;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1)
		err = errno;
	if (err != 0)
		goto fail;
done:
	if (name != NULL && *name == NULL)
		*name = h_sock_name(fd);
	return fd;
fail:
	close(fd);
	errno = err;
	return -1;
}

/* Connect and name the client (see h_connect_buf). */
int
h_connect_name(const char *addr, int ms, char **name)
{
	return h_connect_buf(addr, ms, name, 0);
}

/* Connect to an address within ms: a non-blocking fd, or -1 with errno. */
int
h_connect(const char *addr, int ms)
{
	return h_connect_name(addr, ms, NULL);
}

/*
 * Connect or fail the test, with SO_RCVBUF set to bytes before the connect
 * (the kernel doubles it): a client whose every read opens the window, as
 * a slow reader's does.
 */
int
h_connect_rcvbuf_at(const char *where, const char *addr, int bytes)
{
	int fd = h_connect_buf(addr, H_WAIT_MS, NULL, bytes);

	if (fd == -1)
		h_fail(where, "connect to %s: %s", addr, strerror(errno));
	return fd;
}

/* Connect or fail the test. */
int
h_connect_ok_at(const char *where, const char *addr)
{
	int fd = h_connect(addr, H_WAIT_MS);

	if (fd == -1)
		h_fail(where, "connect to %s: %s", addr, strerror(errno));
	return fd;
}

/* The local address of a socket, as the daemon logs a client. */
char *
h_sock_name(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char buf[160];

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return h_strf("?");
	h_format_addr((struct sockaddr *)&ss, buf, sizeof(buf));
	return h_strf("%s", buf);
}

/* Send every byte within ms: 0, or -1 with errno (ETIMEDOUT at the end). */
int
h_send_all(int fd, const void *buf, size_t len, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	const char *p = buf;
	struct pollfd pfd;
	ssize_t n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == -1 && errno != EAGAIN && errno != EINTR)
			return -1;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if (h_left(deadline) == 0 ||
		    poll(&pfd, 1, h_left(deadline)) == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
	return 0;
}

/* Map a failed recv to an outcome. */
static enum h_outcome
h_recv_error(void)
{
	return errno == ECONNRESET ? H_OUT_RESET : H_OUT_ERROR;
}

/* What happens first on a socket within ms; data is left unread. */
enum h_outcome
h_next_event(int fd, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct pollfd pfd;
	ssize_t n;
	char c;

	for (;;) {
		n = recv(fd, &c, 1, MSG_PEEK);
		if (n > 0)
			return H_OUT_DATA;
		if (n == 0)
			return H_OUT_EOF;
		if (errno != EAGAIN && errno != EINTR)
			return h_recv_error();
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (h_left(deadline) == 0 ||
		    poll(&pfd, 1, h_left(deadline)) == 0)
			return H_OUT_TIMEOUT;
	}
}

/* Read exactly len bytes within ms: H_OUT_DATA, or what stopped it. */
enum h_outcome
h_recv_exact(int fd, void *buf, size_t len, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	struct pollfd pfd;
	char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = recv(fd, p, len, 0);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0)
			return H_OUT_EOF;
		if (errno != EAGAIN && errno != EINTR)
			return h_recv_error();
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (h_left(deadline) == 0 ||
		    poll(&pfd, 1, h_left(deadline)) == 0)
			return H_OUT_TIMEOUT;
	}
	return H_OUT_DATA;
}

/*
 * Read until the peer closes, within ms: returns how it ended (EOF, reset,
 * timeout) with everything read before in *buf (NUL-terminated).
 */
enum h_outcome
h_recv_all(int fd, char **buf, size_t *len, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	char chunk[16384], *all = NULL;
	size_t alen = 0, acap = 0;
	enum h_outcome out;
	struct pollfd pfd;
	ssize_t n;

	h_buf_add(&all, &alen, &acap, "", 0);
	for (;;) {
		n = recv(fd, chunk, sizeof(chunk), 0);
		if (n > 0) {
			h_buf_add(&all, &alen, &acap, chunk, (size_t)n);
			continue;
		}
		if (n == 0) {
			out = H_OUT_EOF;
			break;
		}
		if (errno != EAGAIN && errno != EINTR) {
			out = h_recv_error();
			break;
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (h_left(deadline) == 0 ||
		    poll(&pfd, 1, h_left(deadline)) == 0) {
			out = H_OUT_TIMEOUT;
			break;
		}
	}
	*buf = h_track(all);
	*len = alen;
	return out;
}

/* The outcome of a failed connect. */
static enum h_outcome
h_connect_outcome(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return H_OUT_REFUSED;
	case ECONNRESET:
		return H_OUT_RESET;
	case ETIMEDOUT:
		return H_OUT_TIMEOUT;
	default:
		return H_OUT_ERROR;
	}
}

/*
 * One client that connects and waits for the first thing to happen, up to
 * ms: the outcome, the time from the connect call to it in *elapsed, and
 * the client's address in *name (both may be NULL). A reset that comes
 * before the connect is seen to complete is a reset too.
 */
enum h_outcome
h_client_try(const char *addr, int ms, uint64_t *elapsed, char **name)
{
	uint64_t t0 = h_now_ms();
	enum h_outcome out;
	int fd;

	fd = h_connect_name(addr, ms, name);
	if (fd == -1)
		out = h_connect_outcome(errno);
	else {
		out = h_next_event(fd, ms);
		close(fd);
	}
	if (elapsed != NULL)
		*elapsed = h_now_ms() - t0;
	return out;
}

/*
 * A client the daemon must reset (a failed attempt or a reject): fails the
 * test otherwise. Returns the client's address, as the daemon logs it.
 */
char *
h_client_expect_reset_at(const char *where, const char *addr, int ms,
    uint64_t *elapsed)
{
	enum h_outcome out;
	char *name = NULL;

	out = h_client_try(addr, ms, elapsed, &name);
	if (out != H_OUT_RESET)
		h_fail(where, "client %s of %s: expected a reset, got %s",
		    name ? name : "?", addr, h_outcome_name(out));
	return name;
}

/*
 * On an open connection, send msg and read the same bytes back, within ms.
 * A short message takes no allocation: a thread beside the test may call it.
 */
bool
h_echo_on(int fd, const char *msg, int ms)
{
	size_t len = strlen(msg);
	char stack[256], *back = len <= sizeof(stack) ? stack : h_alloc(len);

	return h_send_all(fd, msg, len, ms) == 0 &&
	    h_recv_exact(fd, back, len, ms) == H_OUT_DATA &&
	    memcmp(back, msg, len) == 0;
}

/* Connect, send a message and read the same bytes back; true if so. */
bool
h_echo_roundtrip(const char *addr, const char *msg, int ms)
{
	bool ok;
	int fd;

	fd = h_connect(addr, ms);
	if (fd == -1)
		return false;
	ok = h_echo_on(fd, msg, ms);
	close(fd);
	return ok;
}

/* A new client is relayed within ms, each try given try_ms; true if so. */
bool
h_served_within(const char *addr, int try_ms, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;

	while (!h_echo_roundtrip(addr, "served?", try_ms))
		if (h_now_ms() >= deadline)
			return false;
	return true;
}

/* Close a client socket if open. */
void
h_close(int fd)
{
	if (fd >= 0)
		close(fd);
}

/* Seed a pseudo-random stream. */
void
h_rand_init(struct h_rand *r, uint64_t seed)
{
	r->s = seed != 0 ? seed : 0x9E3779B97F4A7C15ULL;
	r->cur = 0;
	r->used = 8;
}

/* Fill a buffer from a xorshift64* stream: the same seed, the same bytes. */
void
h_rand_fill(struct h_rand *r, void *buf, size_t len)
{
	unsigned char *p = buf;
	size_t i;

	for (i = 0; i < len; i++) {
		if (r->used == 8) {
			r->s ^= r->s >> 12;
			r->s ^= r->s << 25;
			r->s ^= r->s >> 27;
			r->cur = r->s * 0x2545F4914F6CDD1DULL;
			r->used = 0;
		}
		p[i] = (unsigned char)(r->cur >> (8 * r->used++));
	}
}

/* A stream of the h_rand bytes of a seed, none sent yet (freed with the test). */
struct h_stream *
h_stream_new(uint64_t seed)
{
	struct h_stream *st = h_alloc(sizeof(*st));

	h_rand_init(&st->r, seed);
	return st;
}

/* Send the stream until no room comes for quiet_ms; true if it backed up. */
bool
h_send_until_stalled(int fd, int quiet_ms, struct h_stream *st)
{
	uint64_t deadline = h_now_ms() + 2 * H_WAIT_MS;
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	ssize_t n;

	while (st->sent < (256u << 20) && h_now_ms() < deadline) {
		if (st->pending == 0) {
			h_rand_fill(&st->r, st->buf, H_STREAM_CHUNK);
			st->pending = H_STREAM_CHUNK;
		}
		n = send(fd, st->buf + H_STREAM_CHUNK - st->pending,
		    st->pending, MSG_NOSIGNAL);
		if (n > 0) {
			st->sent += (size_t)n;
			st->pending -= (size_t)n;
			continue;
		}
		h_assert(n == -1 && errno == EAGAIN, "send: %s",
		    strerror(errno));
		if (poll(&pfd, 1, quiet_ms) == 0)
			return true;
	}
	return false;
}

/* Parse a log line into its logfmt fields; false if it is not logfmt. */
bool
h_fields_parse(const char *line, struct h_fields *f)
{
	const char *p = line, *k;
	char *v;
	size_t o;

	memset(f, 0, sizeof(*f));
	if (*p == '<' || (*p >= '0' && *p <= '9')) {
		const char *end = *p == '<' ? strchr(p, '>') : strchr(p, ' ');

		if (end == NULL || (size_t)(end - p) + 2 > sizeof(f->prefix))
			return false;
		if (*p == '<')
			end++;
		memcpy(f->prefix, p, (size_t)(end - p));
		p = end;
	}
	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return f->n > 0;
		if (f->n == H_MAX_FIELDS)
			return false;
		for (k = p; *p != '=' && *p != ' ' && *p != '\0'; p++)
			;
		if (*p != '=' || p == k)
			return false;
		f->key[f->n] = h_alloc((size_t)(p - k) + 1);
		memcpy(f->key[f->n], k, (size_t)(p - k));
		f->key[f->n][p - k] = '\0';
		v = f->val[f->n] = h_alloc(strlen(++p) + 1);
		o = 0;
		if (*p == '"') {
			for (p++; *p != '"'; p++) {
				if (*p == '\0')
					return false;
				if (*p == '\\' && p[1] != '\0') {
					p++;
					v[o++] = *p == 'n' ? '\n' : *p;
				} else
					v[o++] = *p;
			}
			p++;
			if (*p != ' ' && *p != '\0')
				return false;
		} else
			while (*p != ' ' && *p != '\0')
				v[o++] = *p++;
		v[o] = '\0';
		f->n++;
	}
}

/* The value of a key of a parsed line, or NULL. */
const char *
h_field(const struct h_fields *f, const char *key)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		if (strcmp(f->key[i], key) == 0)
			return f->val[i];
	return NULL;
}

/* Does a value match a pattern ('#' one digit, '*' any run)? */
bool
h_value_matches(const char *v, const char *pat)
{
	for (; *pat != '\0'; pat++, v++) {
		if (*pat == '*') {
			for (;; v++) {
				if (h_value_matches(v, pat + 1))
					return true;
				if (*v == '\0')
					return false;
			}
		}
		if (*v == '\0')
			return false;
		if (*pat == '#' ? (*v < '0' || *v > '9') : *v != *pat)
			return false;
	}
	return *v == '\0';
}

/* Check a line's fields against patterns (see harness.h); the line. */
const char *
h_assert_fields_v(const char *where, bool only, const char *line, ...)
{
	const char *pats[H_MAX_FIELDS * 2], *pat, *eq, *v;
	struct h_fields f;
	bool named[H_MAX_FIELDS] = { false };
	size_t npats = 0, i, j, klen;
	va_list ap;

	if (line == NULL)
		h_fail(where, "no log line to check the fields of");
	va_start(ap, line);
	while ((pat = va_arg(ap, const char *)) != NULL &&
	    npats < sizeof(pats) / sizeof(pats[0]))
		pats[npats++] = pat;
	va_end(ap);
	if (!h_fields_parse(line, &f))
		h_fail(where, "not a logfmt line: %s", line);
	if (f.n < 2 || strcmp(f.key[0], "level") != 0 ||
	    strcmp(f.key[1], "event") != 0)
		h_fail(where, "level= and event= do not come first: %s", line);
	named[0] = named[1] = true;
	for (i = 0; i < npats; i++) {
		pat = pats[i];
		if (pat[0] == '!') {
			if (h_field(&f, pat + 1) != NULL)
				h_fail(where, "%s has a %s= field", line,
				    pat + 1);
			continue;
		}
		eq = strchr(pat, '=');
		klen = eq != NULL ? (size_t)(eq - pat) : strlen(pat);
		for (j = 0; j < f.n; j++)
			if (strlen(f.key[j]) == klen &&
			    strncmp(f.key[j], pat, klen) == 0)
				break;
		if (j == f.n)
			h_fail(where, "no field %.*s= in: %s", (int)klen, pat,
			    line);
		named[j] = true;
		v = f.val[j];
		if (eq != NULL && eq[1] != '\0' && !h_value_matches(v, eq + 1))
			h_fail(where, "%.*s=%s, not %s, in: %s", (int)klen, pat,
			    v, eq + 1, line);
	}
	for (j = 0; only && j < f.n; j++)
		if (!named[j])
			h_fail(where, "unexpected field %s=%s in: %s", f.key[j],
			    f.val[j], line);
	return line;
}

/* May this test move into namespaces of its own (see harness.h)? */
static bool
h_ns_allowed(void)
{
	const char *fork = getenv("CK_FORK");

	if (fork != NULL && strcmp(fork, "no") == 0) {
		errno = EPERM;
		return false;
	}
	return true;
}

/* Enter new namespaces of these kinds, in a user namespace if need be. */
static bool
h_unshare(int kinds)
{
	uid_t uid = getuid();
	gid_t gid = getgid();
	int fd;
	char map[64];

	if (!h_ns_allowed())
		return false;
	if (unshare(kinds) == 0)
		return true;
	if (unshare(CLONE_NEWUSER | kinds) == -1)
		return false;
	/* Stay who we were inside: root of the new user namespace. */
	if ((fd = open("/proc/self/setgroups", O_WRONLY)) != -1) {
		(void)!write(fd, "deny", 4);
		close(fd);
	}
	snprintf(map, sizeof(map), "0 %lu 1", (unsigned long)uid);
	if ((fd = open("/proc/self/uid_map", O_WRONLY)) != -1) {
		(void)!write(fd, map, strlen(map));
		close(fd);
	}
	snprintf(map, sizeof(map), "0 %lu 1", (unsigned long)gid);
	if ((fd = open("/proc/self/gid_map", O_WRONLY)) != -1) {
		(void)!write(fd, map, strlen(map));
		close(fd);
	}
	return true;
}

/* A network namespace with only loopback, brought up. */
bool
h_own_netns(void)
{
	struct ifreq ifr;
	int fd, ok;

	if (!h_unshare(CLONE_NEWNET))
		return false;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return false;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	ok = ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	ok = ok && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
	close(fd);
	return ok;
}

static char *h_hosts_path;

/* /etc/hosts replaced, in a mount namespace of our own, by text. */
bool
h_own_hosts(const char *text)
{
	h_hosts_path = h_write_file("hosts", text);
	if (!h_unshare(CLONE_NEWNS))
		return false;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1)
		return false;
	return mount(h_hosts_path, "/etc/hosts", NULL, MS_BIND, NULL) == 0;
}

/*
 * A /dev of the test's own, for its own /dev/log (see harness.h): a tmpfs
 * made ready aside, the real device nodes bound into it, then moved over
 * /dev. Nothing of the real /dev is ever reachable under the test's
 * directory, which is removed when the test ends.
 */
bool
h_own_dev_log(void)
{
	static const char *const keep[] = { "null", "zero", "random",
		"urandom" };
	char *stage = h_path("dev"), *to;
	size_t i;
	int fd;

	if (mkdir(stage, 0755) == -1 || !h_unshare(CLONE_NEWNS))
		return false;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1 ||
	    mount("tmpfs", stage, "tmpfs", 0, "mode=0755") == -1)
		return false;
	for (i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
		to = h_strf("%s/%s", stage, keep[i]);
		if ((fd = open(to, O_CREAT | O_WRONLY, 0666)) == -1)
			return false;
		close(fd);
		if (mount(h_strf("/dev/%s", keep[i]), to, NULL, MS_BIND,
			NULL) == -1)
			return false;
	}
	return mount(stage, "/dev", NULL, MS_MOVE, NULL) == 0;
}

/* Bind the test's syslog daemon at /dev/log: its socket, or -1. */
int
h_dev_log_open(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX,
		.sun_path = "/dev/log" };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd != -1 && bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* The test's syslog daemon goes away: its socket closed, /dev/log gone. */
void
h_dev_log_close(int fd)
{
	close(fd);
	unlink("/dev/log");
}

/* Rewrite the test's /etc/hosts in place (the bind mount sees it). */
void
h_own_hosts_set(const char *text)
{
	FILE *f;

	if (h_hosts_path == NULL || (f = fopen(h_hosts_path, "w")) == NULL)
		h_fail(H_WHERE, "rewrite the test's hosts file: %s",
		    strerror(errno));
	fputs(text, f);
	if (fclose(f) != 0)
		h_fail(H_WHERE, "write the hosts file: %s", strerror(errno));
}
