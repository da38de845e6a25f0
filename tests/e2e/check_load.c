/*
 * End-to-end load and fault stories (issue 9): the real daemon under many
 * relays at once, out of descriptors, with servers that die, vanish or
 * never read, clients that never read or drip, and signals under load.
 * What an operator would check: relays that keep working, memory and
 * descriptor counts that stay flat, log lines and totals that add up.
 * Every load is bounded in count and time, and runs whole under
 * CP_TEST_WRAPPER=valgrind too. Each story prints its figures on stdout
 * (docs/RELIABILITY.md quotes them).
 */
#include <sys/resource.h>
#include <sys/socket.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "farm.h"
#include "harness.h"

/* Relays held at once by the big load test. */
#define LOAD_RELAYS 10000
/* Descriptors the daemon keeps beside its relays (listeners, loops...). */
#define LOAD_FD_SPARE 100
/* Bounds on resident memory per idle relay, in KiB, per kind of build. */
#define LOAD_KIB_PER_RELAY 4.0
#define LOAD_KIB_PER_RELAY_ASAN 8.0
#define LOAD_KIB_PER_RELAY_VALGRIND 8.0
/* The load tests' own timeout, in seconds (Check's multiplier applies). */
#define LOAD_TCASE_TIMEOUT 120
/* The descriptor limit of the exhaustion story, and its crowds. */
#define FD_LIMIT 96
#define FD_KEPT 8
#define FD_FLOOD 60
#define FD_AFTER 8
/* How long the daemon may take to work through the clients that left. */
#define FD_DRAIN_MS 30000
/* Relays that lose their server in the middle of a transfer. */
#define DEATH_RELAYS 50

/* Clients at once against a server that drops every SYN. */
#define BLACKHOLE_CLIENTS 40
#define BLACKHOLE_TIMEOUT_MS 300
/* Relays whose client or server never reads, and the memory they may take. */
#define STALL_RELAYS 20
#define STALL_KIB_PER_RELAY 2048
#define STALL_GROWTH_KIB 512
/* What a held-back peer may still get out in the second after (windows). */
#define STALL_SLACK_BYTES (256 * 1024)
/* How long a flow must stand still to count as stalled. */
#define STALL_STILL_MS 300
#define STALL_WAIT_MS 15000
/* Slow-drip clients, and the idle_timeout that reaps them. */
#define DRIP_CLIENTS 20
#define DRIP_IDLE_MS 1000
#define DRIP_FAST_MS 300
#define DRIP_RUN_MS 3000
/* SIGHUPs under load, the relays that must live through them. */
#define HUP_SIGNALS 100
#define HUP_RELAYS 200
/* SIGHUPs sent back to back, none waited for. */
#define HUP_BURST 20
/* Relays at SIGTERM: half finish in time, half are reset. */
#define TERM_RELAYS 100
/* The flapping breaker: toggles of the server and their period. */
#define FLAP_TOGGLES 20
#define FLAP_PERIOD_MS 150
#define FLAP_THREADS 4
/* Each client thread's pause between two clients: a log the harness keeps up with. */
#define FLAP_PAUSE_US 500
/* Short relays a hammering thread makes at most. */
#define HAMMER_MAX 20000

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LOAD_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LOAD_ASAN 1
#endif

/* Is the daemon run under valgrind (CP_TEST_WRAPPER)? */
static bool
under_valgrind(void)
{
	const char *w = getenv("CP_TEST_WRAPPER");

	return w != NULL && strstr(w, "valgrind") != NULL;
}

/* The [global] section with the given workers and extra keys. */
static const char *
global_section(unsigned workers, const char *keys)
{
	return h_global_section(workers, "2s",
	    h_strf("log_rejects_per_second = 100000\n%s", keys));
}

/*
 * The descriptors the daemon holds, but for the pipes of its splice pool
 * (a bounded pool, kept for reuse): h_daemon_nfds() less those pipes.
 */
static int
daemon_fds(struct h_daemon *d)
{
	char path[64], link[64];
	struct dirent *e;
	struct rlimit rl;
	long fd, below = 256;
	ssize_t n;
	int pipes = 0;
	DIR *dir;

	if (prlimit(h_daemon_pid(d), RLIMIT_NOFILE, NULL, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY)
		below = rl.rlim_cur < 256    ? (long)rl.rlim_cur
		    : rl.rlim_cur > 256 + 32 ? (long)rl.rlim_cur - 32
					     : 256;
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)h_daemon_pid(d));
	if ((dir = opendir(path)) == NULL)
		return -1;
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9' ||
		    (fd = strtol(e->d_name, NULL, 10)) >= below)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/fd/%ld",
		    (int)h_daemon_pid(d), fd);
		n = readlink(path, link, sizeof(link) - 1);
		if (n > 0 && strncmp(link, "pipe:", 5) == 0)
			pipes++;
	}
	closedir(dir);
	return h_daemon_nfds(d) - pipes;
}

/*
 * The descriptors an idle daemon holds: the least of a few looks, since a
 * notification may hold a socket for a moment.
 */
static int
idle_nfds(struct h_daemon *d)
{
	int i, n, least = daemon_fds(d);

	for (i = 0; i < 5; i++) {
		usleep(20000);
		if ((n = daemon_fds(d)) < least)
			least = n;
	}
	return least;
}

/* Clients waiting in the accept queues of a listening port (/proc). */
static unsigned
listen_queue(const char *addr)
{
	unsigned port = (unsigned)atoi(h_port_of(addr)), lport, st, rx;
	unsigned total = 0;
	char line[512];
	FILE *f = fopen("/proc/net/tcp", "r");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (sscanf(line, " %*u: %*x:%x %*x:%*x %x %*x:%x", &lport, &st,
			&rx) == 3 &&
		    lport == port && st == 0x0A)
			total += rx;
	fclose(f);
	return total;
}

/* Wait until the daemon holds n descriptors; how many it holds then. */
static int
wait_nfds(struct h_daemon *d, int n, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	int now;

	while ((now = daemon_fds(d)) != n && h_now_ms() < deadline)
		usleep(10000);
	return now;
}

/*
 * Short relays, one after another from a thread of their own, while a
 * test does something else: connect, one byte there and back, close.
 */
struct hammer {
	const char *addr;
	unsigned pause_us; /* between two relays */
	pthread_t thread;
	atomic_bool stop;
	atomic_uint ok, reset, eof, other;
};

/* The hammering thread: count each short relay by its outcome. */
static void *
hammer_main(void *arg)
{
	struct hammer *h = arg;
	unsigned n;
	char c;
	int fd;

	for (n = 0; n < HAMMER_MAX && !atomic_load(&h->stop); n++) {
		enum h_outcome out;

		fd = h_connect(h->addr, H_WAIT_MS);
		if (fd == -1) {
			if (errno == ECONNRESET)
				atomic_fetch_add(&h->reset, 1);
			else
				atomic_fetch_add(&h->other, 1);
			continue;
		}
		/* A reset may come before the byte is sent: EPIPE then. */
		if (h_send_all(fd, "h", 1, H_WAIT_MS) == 0)
			out = h_recv_exact(fd, &c, 1, H_WAIT_MS);
		else if (errno == ECONNRESET || errno == EPIPE)
			out = H_OUT_RESET;
		else
			out = H_OUT_ERROR;
		if (out == H_OUT_DATA && c == 'h')
			atomic_fetch_add(&h->ok, 1);
		else if (out == H_OUT_RESET)
			atomic_fetch_add(&h->reset, 1);
		else if (out == H_OUT_EOF)
			atomic_fetch_add(&h->eof, 1);
		else
			atomic_fetch_add(&h->other, 1);
		close(fd);
		if (h->pause_us > 0)
			usleep(h->pause_us);
	}
	return NULL;
}

/* Start hammering an address, pausing pause_us after each relay. */
static struct hammer *
hammer_start(const char *addr, unsigned pause_us)
{
	struct hammer *h = calloc(1, sizeof(*h));

	if (h == NULL)
		abort();
	h->addr = addr;
	h->pause_us = pause_us;
	if (pthread_create(&h->thread, NULL, hammer_main, h) != 0)
		h_fail(H_WHERE, "pthread_create failed");
	return h;
}

/* Wait until the hammer has made n good relays in all; false at the deadline. */
static bool
hammer_wait(struct hammer *h, unsigned n, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;

	while (atomic_load(&h->ok) < n) {
		if (h_now_ms() >= deadline)
			return false;
		usleep(1000);
	}
	return true;
}

/* Stop hammering; the counts stay readable until the test frees them. */
static void
hammer_stop(struct hammer *h)
{
	atomic_store(&h->stop, true);
	pthread_join(h->thread, NULL);
}

/*
 * Send on every client until its send blocks and stays blocked for
 * STALL_STILL_MS (the path to a server that never reads is full); returns
 * the bytes sent, or fails the test after STALL_WAIT_MS.
 */
static uint64_t
crowd_fill(struct h_crowd *c)
{
	static char buf[65536];
	uint64_t deadline = h_now_ms() + STALL_WAIT_MS, still = h_now_ms();
	uint64_t total = 0;
	size_t i;
	ssize_t n;

	while (h_now_ms() - still < STALL_STILL_MS) {
		h_assert(h_now_ms() < deadline,
		    "sending did not stall within %d ms (%llu bytes)",
		    STALL_WAIT_MS, (unsigned long long)total);
		for (i = 0; i < c->n; i++)
			while (c->fd[i] != -1 &&
			    (n = send(c->fd[i], buf, sizeof(buf),
				 MSG_NOSIGNAL)) > 0) {
				total += (uint64_t)n;
				still = h_now_ms();
			}
		usleep(20000);
	}
	return total;
}

/* Wait until a flooding farm has stopped sending for STALL_STILL_MS. */
static uint64_t
farm_wait_stalled(struct h_farm *f)
{
	uint64_t deadline = h_now_ms() + STALL_WAIT_MS, still = h_now_ms();
	uint64_t sent = h_farm_bytes_sent(f), now;

	while (h_now_ms() - still < STALL_STILL_MS) {
		h_assert(h_now_ms() < deadline,
		    "the server's sending did not stall within %d ms",
		    STALL_WAIT_MS);
		usleep(20000);
		if ((now = h_farm_bytes_sent(f)) != sent) {
			sent = now;
			still = h_now_ms();
		}
	}
	return sent;
}

#define reload(d, config) h_reload((d), (config))

/* A test case with a longer timeout, for the loads. */
#define LOAD_TEST(suite, fn)                                                   \
	do {                                                                   \
		TCase *tc_ = h_tcase_new(#fn);                                 \
		tcase_set_timeout(tc_, LOAD_TCASE_TIMEOUT);                    \
		tcase_add_test(tc_, fn);                                       \
		suite_add_tcase((suite), tc_);                                 \
	} while (0)

/*
 * CPU ticks of each thread of a process (Linux /proc), into ticks[];
 * returns how many threads there are (at most max).
 */
static size_t
thread_ticks(pid_t pid, unsigned long *ticks, size_t max)
{
	char path[320], line[1024], *p;
	unsigned long ut, st;
	struct dirent *e;
	size_t n = 0;
	DIR *dir;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	if ((dir = opendir(path)) == NULL)
		return 0;
	while ((e = readdir(dir)) != NULL && n < max) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid,
		    e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		/* Fields 14 and 15, counted after the ")" that ends comm. */
		if (fgets(line, sizeof(line), f) != NULL &&
		    (p = strrchr(line, ')')) != NULL &&
		    sscanf(p + 2,
			"%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			&ut, &st) == 2)
			ticks[n++] = ut + st;
		fclose(f);
	}
	closedir(dir);
	return n;
}

/*
 * 10,000 relays at once over 2 workers (fewer if the hard descriptor
 * limit cannot hold them: said on stdout), each
 * carrying bytes both ways; resident memory per relay reported and
 * bounded; every descriptor given back when the clients leave.
 */
START_TEST(load_10k_relays)
{
	unsigned limit = h_nofile_raise();
	size_t want = LOAD_RELAYS;
	size_t fit =
	    limit > 2 * LOAD_FD_SPARE ? (limit - LOAD_FD_SPARE) / 2 : 0;
	struct h_farm *farm = h_farm_start(H_FARM_ECHO);
	struct h_opts opts = { .nofile = limit };
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *crowd, *after;
	unsigned long ticks[16];
	long rss0, rss1;
	int fds0, fds1;
	double kib, bound = LOAD_KIB_PER_RELAY;
	size_t ok, nthreads, i, busy = 0;
	uint64_t t0;

#ifdef LOAD_ASAN
	bound = LOAD_KIB_PER_RELAY_ASAN;
#endif
	if (under_valgrind())
		bound = LOAD_KIB_PER_RELAY_VALGRIND;
	if (want > fit) {
		printf("load_10k_relays: the hard descriptor limit %u holds "
		       "%zu relays, not %zu\n",
		    limit, fit, want);
		want = fit;
	}
	h_assert(want >= 100, "only %zu relays fit in %u descriptors", want,
	    limit);
	d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_section(2, ""),
		h_upstream("bulk", lis, h_farm_addr(farm), "")));

	/* One relay first, so what is made once is not counted per relay. */
	after = h_crowd_connect(lis, 2, H_WAIT_MS);
	h_assert(h_crowd_echo(after, "warm", H_WAIT_MS) == 2, "warm-up relay");
	h_crowd_close(after, 0, 2);
	h_assert(h_farm_wait_active(farm, 0, H_WAIT_MS), "warm-up closed");
	rss0 = h_daemon_rss_kb(d);
	fds0 = idle_nfds(d);

	t0 = h_now_ms();
	crowd = h_crowd_connect(lis, want, 60000);
	h_assert(h_crowd_alive(crowd) == want, "%zu of %zu clients connected",
	    h_crowd_alive(crowd), want);
	ok = h_crowd_echo(crowd, "ping through the proxy", 60000);
	h_assert(ok == want, "%zu of %zu relays echoed", ok, want);
	h_assert(h_farm_wait_active(farm, (unsigned)want, H_WAIT_MS),
	    "the server holds %u connections, not %zu", h_farm_active(farm),
	    want);
	rss1 = h_daemon_rss_kb(d);
	fds1 = daemon_fds(d);
	kib = (double)(rss1 - rss0) / (double)want;
	printf("load_10k_relays: %zu relays over 2 workers open and echoed in "
	       "%.1f s; RSS %ld -> %ld KiB: %.2f KiB per relay (bound %.0f); "
	       "descriptors %d -> %d\n",
	    want, (double)(h_now_ms() - t0) / 1000.0, rss0, rss1, kib, bound,
	    fds0, fds1);
	h_assert(fds1 == fds0 + 2 * (int)want,
	    "the daemon holds %d descriptors for %zu relays (%d before)", fds1,
	    want, fds0);
	h_assert(kib <= bound, "%.2f KiB per relay, over %.0f", kib, bound);

	/* Both workers carried relays: two threads besides main did work. */
	nthreads = thread_ticks(h_daemon_pid(d), ticks, 16);
	printf("load_10k_relays: CPU ticks per thread:");
	for (i = 0; i < nthreads; i++) {
		printf(" %lu", ticks[i]);
		busy += ticks[i] >= 2;
	}
	printf("\n");
	h_assert(busy >= 2, "only %zu threads used the CPU", busy);

	/* A second round of bytes on every relay still works. */
	ok = h_crowd_echo(crowd, "and back again", 60000);
	h_assert(ok == want, "%zu of %zu relays echoed twice", ok, want);

	/* Everyone leaves: every descriptor comes back, new clients work. */
	h_crowd_close(crowd, 0, want);
	h_assert(h_farm_wait_active(farm, 0, 30000),
	    "the server still holds %u connections", h_farm_active(farm));
	fds1 = wait_nfds(d, fds0, H_WAIT_MS);
	h_assert(fds1 == fds0,
	    "the daemon holds %d descriptors after the clients left, %d before",
	    fds1, fds0);
	after = h_crowd_connect(lis, 10, H_WAIT_MS);
	h_assert(h_crowd_echo(after, "after", H_WAIT_MS) == 10,
	    "new clients relayed after the load");
	h_assert(h_daemon_stop(d) == 0, "clean stop");
}
END_TEST

/*
 * A flood of clients against a daemon with few descriptors: it survives,
 * the relays it had keep working, clients it cannot take are reset or
 * wait, and once descriptors free up it accepts and relays again, with
 * every descriptor given back in the end.
 */
START_TEST(fd_exhaustion_flood)
{
	struct h_farm *farm = h_farm_start(H_FARM_ECHO);
	struct h_opts opts = { .nofile = FD_LIMIT };
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *kept, *flood, *after;
	size_t served, left;
	int fds0, fds1;
	unsigned queued;
	uint64_t t0;

	d = h_daemon_start_opts(&opts,
	    h_strf("%s%s", global_section(2, ""),
		h_upstream("tight", lis, h_farm_addr(farm), "")));
	fds0 = idle_nfds(d);
	kept = h_crowd_connect(lis, FD_KEPT, H_WAIT_MS);
	h_assert(h_crowd_echo(kept, "kept", H_WAIT_MS) == FD_KEPT,
	    "the first relays work");

	/* More clients than descriptors, all at once. */
	flood = h_crowd_connect(lis, FD_FLOOD, H_WAIT_MS);
	served = h_crowd_echo(flood, "flood", 2000);
	h_expect_log(d, H_WAIT_MS, "event=accept_paused", "error=");
	printf("fd_exhaustion_flood: %zu of %d flooding clients relayed with "
	       "%d descriptors; the rest reset or left waiting\n",
	    served, FD_FLOOD, FD_LIMIT);
	h_assert(served > 0 && served < FD_FLOOD,
	    "%zu of %d flooding clients relayed", served, FD_FLOOD);
	h_assert(h_daemon_running(d), "the daemon survived the flood");
	h_assert(h_crowd_echo(kept, "still", H_WAIT_MS) == FD_KEPT,
	    "the relays from before the flood still work");

	/*
	 * Descriptors come free: the daemon works through the clients that
	 * gave up in its backlog, then accepts and relays again.
	 */
	t0 = h_now_ms();
	h_crowd_close(flood, 0, FD_FLOOD);
	while ((queued = listen_queue(lis)) > 0 ||
	    (fds1 = daemon_fds(d)) != fds0 + 2 * FD_KEPT) {
		h_assert(h_now_ms() - t0 < FD_DRAIN_MS,
		    "after %d ms, %u clients wait in the backlog and the "
		    "daemon holds %d descriptors for %d relays (%d idle)",
		    FD_DRAIN_MS, queued, daemon_fds(d), FD_KEPT, fds0);
		usleep(10000);
	}
	printf("fd_exhaustion_flood: the backlog drained and the flood's "
	       "relays were gone in %.1f s\n",
	    (double)(h_now_ms() - t0) / 1000.0);
	h_assert(h_farm_wait_active(farm, FD_KEPT, H_WAIT_MS),
	    "the server holds %u connections, not %d", h_farm_active(farm),
	    FD_KEPT);
	after = h_crowd_connect(lis, FD_AFTER, H_WAIT_MS);
	left = h_crowd_echo(after, "recovered", H_WAIT_MS);
	h_assert(left == FD_AFTER, "%zu of %d new clients relayed", left,
	    FD_AFTER);
	h_crowd_close(after, 0, FD_AFTER);
	h_crowd_close(kept, 0, FD_KEPT);
	h_assert(h_farm_wait_active(farm, 0, H_WAIT_MS), "all relays closed");
	fds1 = wait_nfds(d, fds0, H_WAIT_MS);
	h_assert(fds1 == fds0,
	    "the daemon holds %d descriptors, %d before the flood", fds1, fds0);
	h_assert(h_daemon_stop(d) == 0, "clean stop");
}
END_TEST

/*
 * The server dies (SIGKILL) while relays stream from it: every client sees
 * its connection end, the daemon gives every descriptor back, and the next
 * client finds the server refused and is reset.
 */
START_TEST(server_death_mid_transfer)
{
	struct h_farm *farm = h_farm_start(H_FARM_FLOOD);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *crowd;
	size_t ended;
	int fds0, fds1;
	uint64_t sent, deadline;
	char *name;

	d = h_daemon_start(h_strf("%s%s", global_section(2, ""),
	    h_upstream("stream", lis, h_farm_addr(farm), "")));
	fds0 = idle_nfds(d);
	crowd = h_crowd_connect(lis, DEATH_RELAYS, H_WAIT_MS);
	h_assert(h_farm_wait_active(farm, DEATH_RELAYS, H_WAIT_MS),
	    "the server holds %u connections", h_farm_active(farm));
	/* Wait until bytes flow on every relay, then kill the server. */
	sent = h_farm_bytes_sent(farm) + (16u << 20);
	deadline = h_now_ms() + H_WAIT_MS;
	while (h_farm_bytes_sent(farm) < sent && h_now_ms() < deadline)
		usleep(5000);
	h_assert(h_farm_bytes_sent(farm) >= sent, "only %llu bytes flowed",
	    (unsigned long long)h_farm_bytes_sent(farm));
	h_farm_kill(farm);
	ended = h_crowd_wait_closed(crowd, DEATH_RELAYS, H_WAIT_MS);
	h_assert(ended == DEATH_RELAYS,
	    "%zu of %d clients saw the dead server's connection end", ended,
	    DEATH_RELAYS);
	h_assert(h_daemon_running(d), "the daemon survived");
	fds1 = wait_nfds(d, fds0, H_WAIT_MS);
	h_assert(fds1 == fds0, "the daemon holds %d descriptors, %d before",
	    fds1, fds0);
	name = h_client_expect_reset(lis, H_WAIT_MS, NULL);
	h_expect_log(d, H_WAIT_MS, "event=connect_fail", "upstream=stream",
	    h_strf("client=%s", name), "error=refused");
	h_assert(h_daemon_stop(d) == 0, "clean stop");
}
END_TEST

/*
 * A server that drops every SYN (a full accept queue), under concurrent
 * clients: each is reset once connect_timeout has passed, not before and
 * not much after; the circuit opens; later clients are turned away at
 * once; no descriptor is left behind.
 */
START_TEST(blackholed_server)
{
	struct h_backend *srv = h_backend(H_BLACKHOLE);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *crowd;
	uint64_t t0, elapsed;
	size_t ended;
	unsigned fails;
	int fds0, fds1, i;

	d = h_daemon_start(h_strf("%s%s", global_section(2, ""),
	    h_upstream("void", lis, h_backend_addr(srv),
		h_strf("connect_timeout = %dms\n"
		       "failure_threshold = 5\n"
		       "recovery_timeout = 60s\n",
		    BLACKHOLE_TIMEOUT_MS))));
	fds0 = idle_nfds(d);
	t0 = h_now_ms();
	crowd = h_crowd_connect(lis, BLACKHOLE_CLIENTS, H_WAIT_MS);
	h_assert(h_crowd_wait_closed(crowd, 1, BLACKHOLE_TIMEOUT_MS - 100) == 0,
	    "a client was let go before connect_timeout");
	ended = h_crowd_wait_closed(crowd, BLACKHOLE_CLIENTS,
	    BLACKHOLE_TIMEOUT_MS + 3000);
	elapsed = h_now_ms() - t0;
	h_assert(ended == BLACKHOLE_CLIENTS,
	    "%zu of %d clients of a blackholed server were let go", ended,
	    BLACKHOLE_CLIENTS);
	printf("blackholed_server: %d clients reset %llu ms after they "
	       "connected (connect_timeout %d ms)\n",
	    BLACKHOLE_CLIENTS, (unsigned long long)elapsed,
	    BLACKHOLE_TIMEOUT_MS);
	fails = h_wait_count(d, BLACKHOLE_CLIENTS, H_WAIT_MS,
	    "event=connect_fail", "upstream=void", "error=timeout");
	h_assert(fails == BLACKHOLE_CLIENTS, "%u connect_fail lines, not %d",
	    fails, BLACKHOLE_CLIENTS);
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=void", "to=open");
	h_assert(h_count_log(d, "event=state", "to=open") == 1,
	    "the circuit opened once");
	for (i = 0; i < 10; i++) {
		uint64_t took;

		h_client_expect_reset(lis, H_WAIT_MS, &took);
		h_assert(took < BLACKHOLE_TIMEOUT_MS,
		    "a client of the open circuit waited %llu ms",
		    (unsigned long long)took);
	}
	fds1 = wait_nfds(d, fds0, H_WAIT_MS);
	h_assert(fds1 == fds0, "the daemon holds %d descriptors, %d before",
	    fds1, fds0);
	h_assert(h_daemon_stop(d) == 0, "clean stop");
}
END_TEST

/*
 * One side never reads while the other sends without end: the sender is
 * held back (backpressure) and the daemon's memory stays flat: a flooding
 * server and clients that never read (server_sends), or clients that send
 * to a server that never reads.
 */
static void
stall_story(const char *story, bool server_sends)
{
	struct h_farm *farm =
	    h_farm_start(server_sends ? H_FARM_FLOOD : H_FARM_STALL);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *crowd;
	long rss0, rss1, rss2;
	uint64_t sent1, more;

	d = h_daemon_start(h_strf("%s%s", global_section(2, ""),
	    h_upstream("stall", lis, h_farm_addr(farm), "")));
	rss0 = h_daemon_rss_kb(d);
	crowd = h_crowd_connect(lis, STALL_RELAYS, H_WAIT_MS);
	h_assert(h_farm_wait_active(farm, STALL_RELAYS, H_WAIT_MS),
	    "the server holds %u connections", h_farm_active(farm));
	sent1 = server_sends ? farm_wait_stalled(farm) : crowd_fill(crowd);
	rss1 = h_daemon_rss_kb(d);
	usleep(1000 * 1000);
	more =
	    server_sends ? h_farm_bytes_sent(farm) - sent1 : crowd_fill(crowd);
	rss2 = h_daemon_rss_kb(d);
	printf("%s: %d relays; the %s got %.1f MiB out before %s held back; "
	       "RSS %ld -> %ld -> %ld KiB a second later (%.0f KiB per "
	       "relay)\n",
	    story, STALL_RELAYS, server_sends ? "server" : "clients",
	    (double)sent1 / 1048576.0, server_sends ? "it was" : "they were",
	    rss0, rss1, rss2, (double)(rss1 - rss0) / STALL_RELAYS);
	h_assert(more <= STALL_SLACK_BYTES, "%llu more bytes went out",
	    (unsigned long long)more);
	h_assert(rss2 - rss1 <= STALL_GROWTH_KIB, "RSS grew by %ld KiB",
	    rss2 - rss1);
	h_assert((rss1 - rss0) / STALL_RELAYS <= STALL_KIB_PER_RELAY,
	    "%ld KiB per stalled relay", (rss1 - rss0) / STALL_RELAYS);
	h_assert(h_crowd_alive(crowd) == STALL_RELAYS, "clients still open");
	h_assert(h_daemon_stop(d) == 0, "clean stop");
}

/* Clients that never read from a server that sends without end. */
START_TEST(never_reading_client)
{
	stall_story("never_reading_client", true);
}
END_TEST

/* Clients that send without end to a server that never reads. */
START_TEST(never_reading_server)
{
	stall_story("never_reading_server", false);
}
END_TEST

/*
 * Slow-drip clients: those that send a byte more often than idle_timeout
 * stay; those that drip slower are reaped once idle_timeout has passed
 * since their last byte, each with an idle_timeout line.
 */
START_TEST(slow_drip_reaped)
{
	struct h_farm *farm = h_farm_start(H_FARM_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *fast, *slow;
	uint64_t t0, t1, t_first;
	size_t ok, reaped = 0, n;
	unsigned lines;
	int fds0, fds1;

	d = h_daemon_start(h_strf("%s%s", global_section(2, ""),
	    h_upstream("drip", lis, h_farm_addr(farm),
		h_strf("idle_timeout = %dms\n", DRIP_IDLE_MS))));
	fds0 = idle_nfds(d);
	fast = h_crowd_connect(lis, DRIP_CLIENTS, H_WAIT_MS);
	slow = h_crowd_connect(lis, DRIP_CLIENTS, H_WAIT_MS);
	/* Every slow relay moved its last byte after this. */
	t_first = h_now_ms();
	h_assert(h_crowd_echo(slow, "s", H_WAIT_MS) == DRIP_CLIENTS,
	    "the slow clients' first byte went through");
	t0 = h_now_ms();
	while ((t1 = h_now_ms()) - t0 < DRIP_RUN_MS) {
		ok = h_crowd_echo(fast, "f", H_WAIT_MS);
		h_assert(ok == DRIP_CLIENTS,
		    "%zu of %d clients dripping every %d ms still relayed "
		    "after %llu ms",
		    ok, DRIP_CLIENTS, DRIP_FAST_MS,
		    (unsigned long long)(t1 - t0));
		n = h_crowd_wait_closed(slow, DRIP_CLIENTS - reaped,
		    DRIP_FAST_MS);
		if (reaped == 0 && n > 0)
			h_assert(h_now_ms() - t_first >= DRIP_IDLE_MS - 100,
			    "a slow client was reaped %llu ms after its byte, "
			    "before idle_timeout",
			    (unsigned long long)(h_now_ms() - t_first));
		reaped += n;
	}
	h_assert(reaped == DRIP_CLIENTS,
	    "%zu of %d clients silent for %d ms were reaped", reaped,
	    DRIP_CLIENTS, DRIP_RUN_MS);
	lines = h_wait_count(d, DRIP_CLIENTS, H_WAIT_MS, "event=idle_timeout",
	    "upstream=drip");
	h_assert(lines == DRIP_CLIENTS, "%u idle_timeout lines, not %d", lines,
	    DRIP_CLIENTS);
	printf("slow_drip_reaped: %d clients dripping every %d ms kept, %d "
	       "silent ones reaped by idle_timeout = %d ms\n",
	    DRIP_CLIENTS, DRIP_FAST_MS, DRIP_CLIENTS, DRIP_IDLE_MS);
	h_crowd_close(fast, 0, DRIP_CLIENTS);
	fds1 = wait_nfds(d, fds0, H_WAIT_MS);
	h_assert(fds1 == fds0, "the daemon holds %d descriptors, %d before",
	    fds1, fds0);
	h_assert(h_daemon_stop(d) == 0, "clean stop");
}
END_TEST

/*
 * 100 reloads (SIGHUP) under load, each waited for, then a burst of
 * SIGHUPs back to back: relays opened before them all still carry bytes,
 * no short relay made meanwhile fails, the last file of the burst runs,
 * and the daemon holds as many descriptors in the end as at the start.
 */
START_TEST(sighup_100_under_load)
{
	size_t signals = HUP_SIGNALS;
	struct h_farm *farm = h_farm_start(H_FARM_ECHO);
	const char *lis = h_free_addr4(), *other = h_free_addr4();
	const char *last = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *crowd;
	struct hammer *h;
	size_t i, ok;
	int fds0, fds1, fd;
	char c;
	uint64_t t0;
	unsigned oks;

	d = h_daemon_start(h_strf("%s%s", global_section(2, ""),
	    h_upstream("hup", lis, h_farm_addr(farm), "")));
	fds0 = idle_nfds(d);
	crowd = h_crowd_connect(lis, HUP_RELAYS, H_WAIT_MS);
	h_assert(h_crowd_echo(crowd, "before", H_WAIT_MS) == HUP_RELAYS,
	    "relays before the reloads");
	h = hammer_start(lis, 0);
	t0 = h_now_ms();
	for (i = 0; i < signals; i++) {
		/* Under load: short relays go on between every two reloads. */
		h_assert(hammer_wait(h, atomic_load(&h->ok) + 3, H_WAIT_MS),
		    "short relays stalled after %zu reloads", i);
		/* Every other reload adds and removes a second upstream. */
		reload(d,
		    h_strf("%s%s%s", global_section(2, ""),
			h_upstream("hup", lis, h_farm_addr(farm),
			    h_strf("connect_timeout = %zums", 1000 + i)),
			i % 2 == 0
			    ? h_upstream("extra", other, h_farm_addr(farm), "")
			    : ""));
		if (i % 10 == 9) {
			ok = h_crowd_echo(crowd, "during", H_WAIT_MS);
			h_assert(ok == HUP_RELAYS,
			    "%zu of %d relays alive after %zu reloads", ok,
			    HUP_RELAYS, i + 1);
		}
	}
	hammer_stop(h);
	oks = h_count_log(d, "event=reload", "result=ok");
	printf("sighup_100_under_load: %zu reloads in %.1f s with %d relays "
	       "open; %u short relays meanwhile: %u ok, %u reset, %u eof, %u "
	       "other\n",
	    signals, (double)(h_now_ms() - t0) / 1000.0, HUP_RELAYS,
	    atomic_load(&h->ok) + atomic_load(&h->reset) +
		atomic_load(&h->eof) + atomic_load(&h->other),
	    atomic_load(&h->ok), atomic_load(&h->reset), atomic_load(&h->eof),
	    atomic_load(&h->other));
	h_assert(oks == signals, "%u reloads logged result=ok, not %zu", oks,
	    signals);
	h_assert(atomic_load(&h->ok) > 0 && atomic_load(&h->reset) == 0 &&
		atomic_load(&h->eof) == 0 && atomic_load(&h->other) == 0,
	    "short relays during the reloads: %u reset, %u eof, %u other",
	    atomic_load(&h->reset), atomic_load(&h->eof),
	    atomic_load(&h->other));
	ok = h_crowd_echo(crowd, "after", H_WAIT_MS);
	h_assert(ok == HUP_RELAYS, "%zu of %d relays alive after the reloads",
	    ok, HUP_RELAYS);
	/*
	 * Then a burst: SIGHUPs back to back, the file rewritten before each,
	 * none waited for. The file as it was at the last one runs: its new
	 * upstream relays, and the relays from before still work.
	 */
	t0 = h_now_ms();
	for (i = 0; i < HUP_BURST; i++) {
		h_write_file(h_daemon_config(d),
		    h_strf("%s%s%s", global_section(2, ""),
			h_upstream("hup", lis, h_farm_addr(farm), ""),
			i == HUP_BURST - 1
			    ? h_upstream("last", last, h_farm_addr(farm), "")
			    : ""));
		h_daemon_signal(d, SIGHUP);
	}
	fd = -1;
	while (h_now_ms() - t0 < H_WAIT_MS &&
	    (fd = h_connect(last, H_WAIT_MS)) == -1)
		usleep(10000);
	h_assert(fd != -1, "the last file of a burst of %d SIGHUPs runs",
	    HUP_BURST);
	h_assert(h_send_all(fd, "z", 1, H_WAIT_MS) == 0 &&
		h_recv_exact(fd, &c, 1, H_WAIT_MS) == H_OUT_DATA && c == 'z',
	    "the upstream of the last file relays");
	close(fd);
	h_expect_log(d, H_WAIT_MS, "event=listen", "upstream=last");
	printf("sighup_100_under_load: a burst of %d SIGHUPs: the last file "
	       "ran within %.1f s, %u reloads logged\n",
	    HUP_BURST, (double)(h_now_ms() - t0) / 1000.0,
	    h_count_log(d, "event=reload", "result=ok") - oks);
	ok = h_crowd_echo(crowd, "burst", H_WAIT_MS);
	h_assert(ok == HUP_RELAYS, "%zu of %d relays alive after the burst", ok,
	    HUP_RELAYS);
	/* Back to the first config: one upstream, as at the start. */
	reload(d,
	    h_strf("%s%s", global_section(2, ""),
		h_upstream("hup", lis, h_farm_addr(farm), "")));
	h_crowd_close(crowd, 0, HUP_RELAYS);
	fds1 = wait_nfds(d, fds0, H_WAIT_MS);
	h_assert(fds1 == fds0,
	    "the daemon holds %d descriptors after %zu reloads, %d before",
	    fds1, signals, fds0);
	free(h);
	h_assert(h_daemon_stop(d) == 0, "clean stop");
}
END_TEST

/*
 * SIGTERM under load: new clients stop being taken, relays that finish
 * within shutdown_timeout are drained (and work until they do), the rest
 * are reset at shutdown_timeout, and the stop line counts both.
 */
START_TEST(sigterm_under_load)
{
	struct h_farm *farm = h_farm_start(H_FARM_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	struct h_crowd *crowd;
	struct hammer *h;
	const char *stop;
	uint64_t t0, took;
	size_t ended, ok;
	int st;

	d = h_daemon_start(h_strf("%s%s", global_section(2, ""),
	    h_upstream("term", lis, h_farm_addr(farm), "")));
	crowd = h_crowd_connect(lis, TERM_RELAYS, H_WAIT_MS);
	h_assert(h_crowd_echo(crowd, "before", H_WAIT_MS) == TERM_RELAYS,
	    "relays before SIGTERM");
	h = hammer_start(lis, 0);
	h_assert(hammer_wait(h, 50, H_WAIT_MS), "short relays before SIGTERM");
	t0 = h_now_ms();
	h_daemon_signal(d, SIGTERM);
	h_expect_log(d, H_WAIT_MS, "event=stopping", "reason=SIGTERM");
	/* Half the relays still carry bytes, then finish on their own. */
	{
		struct h_crowd half = { crowd->fd, TERM_RELAYS / 2 };

		ok = h_crowd_echo(&half, "draining", H_WAIT_MS);
		h_assert(ok == TERM_RELAYS / 2,
		    "%zu of %d relays worked after SIGTERM", ok,
		    TERM_RELAYS / 2);
	}
	h_crowd_close(crowd, 0, TERM_RELAYS / 2);
	/* The other half is reset at shutdown_timeout (2s). */
	ended = h_crowd_wait_closed(crowd, TERM_RELAYS / 2, 2000 + H_WAIT_MS);
	took = h_now_ms() - t0;
	h_assert(ended == TERM_RELAYS / 2, "%zu of %d relays ended", ended,
	    TERM_RELAYS / 2);
	h_assert_between(took, 1900, 4500,
	    "ms from SIGTERM to the reset (shutdown_timeout = 2s)");
	st = h_daemon_wait_exit(d, H_STOP_MS);
	hammer_stop(h);
	h_assert(st == 0, "exit status %d after SIGTERM", st);
	stop = h_expect_log(d, H_WAIT_MS, "event=stop", "reason=SIGTERM");
	printf("sigterm_under_load: %s (after %.1f s; %u short relays before "
	       "and during the stop)\n",
	    stop, (double)took / 1000.0, atomic_load(&h->ok));
	h_assert(h_line_has(stop, h_strf("closed=%d", TERM_RELAYS / 2)),
	    "the stop line counts %d relays reset: %s", TERM_RELAYS / 2, stop);
	h_assert(h_log_double(stop, "drained") >= TERM_RELAYS / 2,
	    "the stop line counts at least %d relays drained: %s",
	    TERM_RELAYS / 2, stop);
	free(h);
}
END_TEST

/*
 * A breaker flapping under concurrent clients on both workers: the server
 * stops listening and listens again every FLAP_PERIOD_MS. The totals add
 * up: every client is accounted for exactly once by the daemon, as a
 * relay (its close line) or a reject; each relayed one was taken by the
 * server; every connect failure reset its client; the state lines follow
 * one another; and the breaker's own totals (/stats) match the lines:
 * attempts = relays = successes + failures, rejects, openings. (A client the server dropped from its accept queue when it
 * stopped listening is a relay that ends in a reset.)
 */
START_TEST(breaker_flapping)
{
	size_t toggles = FLAP_TOGGLES;
	struct h_farm *farm = h_farm_start(H_FARM_ECHO);
	const char *lis = h_free_addr4(), *admin = h_free_addr4(), *line;
	const char *stats;
	double attempts, successes, failures, rejected, opened_total;
	struct h_daemon *d;
	struct hammer *hs[FLAP_THREADS];
	unsigned ok = 0, reset = 0, eof = 0, other = 0, clients;
	unsigned rejects, fails, summed = 0, closes, done, opened, accepted;
	char prev[32] = "closed", from[32], to[32];
	size_t i, n, states = 0;

	d = h_daemon_start(h_strf("%s%s",
	    h_strf("[global]\n"
		   "log_level = debug\n"
		   "workers = 2\n"
		   "log_rejects_per_second = 100000\n"
		   "admin = %s\n",
		admin),
	    h_upstream("flap", lis, h_farm_addr(farm),
		"failure_threshold = 3\n"
		"recovery_timeout = 100ms\n"
		"half_open_max_calls = 2\n"
		"success_threshold = 1\n")));
	for (i = 0; i < FLAP_THREADS; i++)
		hs[i] = hammer_start(lis, FLAP_PAUSE_US);
	for (i = 0; i < toggles; i++) {
		usleep(FLAP_PERIOD_MS * 1000);
		h_farm_set_up(farm, i % 2 == 1);
	}
	h_farm_set_up(farm, true);
	for (i = 0; i < FLAP_THREADS; i++) {
		hammer_stop(hs[i]);
		ok += atomic_load(&hs[i]->ok);
		reset += atomic_load(&hs[i]->reset);
		eof += atomic_load(&hs[i]->eof);
		other += atomic_load(&hs[i]->other);
		free(hs[i]);
	}
	clients = ok + reset + eof + other;
	/* The breaker's own totals, then every line once the daemon stops. */
	h_assert(h_farm_wait_active(farm, 0, H_WAIT_MS), "relays closed");
	stats = h_admin_get(admin, "/stats/flap");
	h_assert(stats != NULL, "GET /stats/flap: no 200");
	attempts = h_json_number(stats, "attempts_total");
	successes = h_json_number(stats, "successes_total");
	failures = h_json_number(stats, "failures_total");
	rejected = h_json_number(stats, "rejected_total");
	opened_total = h_json_number(stats, "opened_total");
	h_assert(h_daemon_stop(d) == 0, "clean stop");
	h_assert(h_count_log(d, "event=log_dropped") == 0,
	    "log lines were dropped: the totals cannot be checked");
	rejects = h_count_log(d, "event=reject", "upstream=flap");
	fails = h_count_log(d, "event=connect_fail", "upstream=flap");
	closes = h_count_log(d, "event=close", "upstream=flap");
	done = h_count_log(d, "event=close", "upstream=flap", "reason=done");
	for (n = 0; (line = h_log_line(d, n)) != NULL; n++) {
		if (h_line_has(line, "event=reject_summary"))
			summed += (unsigned)h_log_double(line, "rejected");
		if (!h_line_has(line, "event=state"))
			continue;
		h_assert(h_log_value(line, "from", from, sizeof(from)) &&
			h_log_value(line, "to", to, sizeof(to)),
		    "a state line: %s", line);
		h_assert(strcmp(from, prev) == 0,
		    "a state line from %s after one to %s: %s", from, prev,
		    line);
		snprintf(prev, sizeof(prev), "%s", to);
		states++;
	}
	opened = h_count_log(d, "event=state", "to=open");
	accepted = h_farm_accepted(farm);
	printf("breaker_flapping: %zu server toggles, %d client threads, 2 "
	       "workers: %u clients = %u relayed + %u reset + %u eof + %u "
	       "other; the daemon: %u relays closed (%u done) + %u rejects + "
	       "%u summed, %u connect failures; %zu transitions, opened %u "
	       "times; the server accepted %u\n",
	    toggles, FLAP_THREADS, clients, ok, reset, eof, other, closes, done,
	    rejects, summed, fails, states, opened, accepted);
	h_assert(other == 0, "%u clients timed out or failed otherwise", other);
	h_assert(closes + rejects + summed == clients,
	    "%u clients, but the daemon closed %u relays and rejected %u + "
	    "%u",
	    clients, closes, rejects, summed);
	h_assert(reset >= rejects + summed + fails,
	    "%u clients reset, fewer than %u rejects + %u summed + %u connect "
	    "failures",
	    reset, rejects, summed, fails);
	h_assert(ok <= done && ok <= accepted,
	    "%u clients relayed, %u relays done, %u taken by the server", ok,
	    done, accepted);
	h_assert(opened >= 2, "the circuit opened %u times", opened);
	printf("breaker_flapping: the breaker's totals: %.0f attempts = %.0f "
	       "successes + %.0f failures, %.0f rejected, opened %.0f times\n",
	    attempts, successes, failures, rejected, opened_total);
	h_assert(attempts == successes + failures,
	    "attempts_total %.0f, successes_total %.0f + failures_total %.0f",
	    attempts, successes, failures);
	h_assert(attempts == closes,
	    "attempts_total %.0f, but %u relays closed", attempts, closes);
	h_assert(failures == fails,
	    "failures_total %.0f, but %u connect_fail lines", failures, fails);
	h_assert(rejected == rejects + summed,
	    "rejected_total %.0f, but %u reject lines + %u summed", rejected,
	    rejects, summed);
	h_assert(opened_total == opened,
	    "opened_total %.0f, but %u to=open lines", opened_total, opened);
}
END_TEST

/* The suite: every story in its own test case. */
int
main(void)
{
	Suite *s = suite_create("load");

	setvbuf(stdout, NULL, _IOLBF, 0);

	LOAD_TEST(s, load_10k_relays);
	LOAD_TEST(s, fd_exhaustion_flood);
	LOAD_TEST(s, server_death_mid_transfer);
	LOAD_TEST(s, blackholed_server);
	LOAD_TEST(s, never_reading_client);
	LOAD_TEST(s, never_reading_server);
	LOAD_TEST(s, slow_drip_reaped);
	LOAD_TEST(s, sighup_100_under_load);
	LOAD_TEST(s, sigterm_under_load);
	LOAD_TEST(s, breaker_flapping);
	return h_main(s);
}
