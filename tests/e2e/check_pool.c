/*
 * End-to-end stories of pools (SPEC.md sections 3 and 4): real
 * redis-server replicas and python3 http.server replicas behind a
 * [pool:NAME], clients that ask each reply which replica answered, one
 * replica killed mid-run and started again, leastconn following the open
 * relays, every member open (the pool's reject seen by redis-cli and curl),
 * and a reload of pools with a relay open. A story whose server or client
 * is not installed is skipped with a line that says so.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NREPLICAS 3
/* Clients per phase of a story: bounded, each with its own deadline. */
#define PHASE_CLIENTS 150
#define CLIENT_MS 3000

/* A server process of the test's own on a free loopback port. */
struct replica {
	pid_t pid;
	const char *addr; /* "127.0.0.1:P" */
	const char *port;
	const char *dir; /* http.server: what it serves */
};

/* Kill a replica (SIGKILL: a crash) and reap it; a no-op if it is down. */
static void
replica_kill(void *arg)
{
	struct replica *r = arg;

	if (r->pid <= 0)
		return;
	kill(r->pid, SIGKILL);
	waitpid(r->pid, NULL, 0);
	r->pid = -1;
}

/* Start argv[0] as a replica, dying with the test, quiet. */
static void
replica_spawn(struct replica *r, char *const argv[])
{
	int fd;

	r->pid = fork();
	h_assert(r->pid != -1, "fork: %s", strerror(errno));
	if (r->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fd = open("/dev/null", O_RDWR);
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (r->dir != NULL && chdir(r->dir) != 0)
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	h_defer(replica_kill, r);
}

/* Wait until a replica accepts connections. */
static void
replica_wait_up(struct replica *r)
{
	uint64_t end = h_now_ms() + H_WAIT_MS * 2;
	int fd;

	for (;;) {
		fd = h_connect(r->addr, 200);
		if (fd != -1 && h_next_event(fd, 50) == H_OUT_TIMEOUT) {
			close(fd);
			return;
		}
		if (fd != -1)
			close(fd);
		h_assert(h_now_ms() < end, "replica %s did not come up",
		    r->addr);
		usleep(20000);
	}
}

/* Start (or start again) a redis-server replica on its port. */
static void
redis_start(struct replica *r, const char *server)
{
	char *argv[] = { (char *)server, "--port", (char *)r->port, "--bind",
		"127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--dir", (char *)h_tmpdir(), NULL };

	replica_spawn(r, argv);
	replica_wait_up(r);
}

/* Three redis-server replicas on free ports; skips without redis-server. */
static struct replica *
redis_replicas(void)
{
	const char *server = h_client("redis-server");
	struct replica *v;
	int i;

	if (server == NULL) {
		h_skip_note(H_WHERE,
		    "redis-server is not installed (apt-get "
		    "install redis-server)");
		return NULL;
	}
	v = h_track(calloc(NREPLICAS, sizeof(*v)));
	for (i = 0; i < NREPLICAS; i++) {
		v[i].addr = h_free_addr4();
		v[i].port = h_port_of(v[i].addr);
		redis_start(&v[i], server);
	}
	return v;
}

/*
 * One client through the proxy: it sends req and reads until the reply
 * holds key (a "name:value\r\n" line of redis INFO, or a body line);
 * returns the value, or NULL when the client saw a reset, an EOF or
 * nothing before the deadline.
 */
static char *
ask(const char *addr, const char *req, const char *key, int *keep)
{
	char buf[8192], *p, *e;
	size_t len = 0;
	uint64_t end = h_now_ms() + CLIENT_MS;
	struct pollfd pfd;
	ssize_t n;
	int fd;

	if (keep != NULL)
		*keep = -1;
	if ((fd = h_connect(addr, CLIENT_MS)) == -1)
		return NULL;
	if (h_send_all(fd, req, strlen(req), CLIENT_MS) != 0) {
		close(fd);
		return NULL;
	}
	while (len < sizeof(buf) - 1 && h_now_ms() < end) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)(end - h_now_ms())) <= 0)
			continue;
		n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
		if (n <= 0 && !(n == -1 && errno == EAGAIN))
			break;
		if (n > 0)
			len += (size_t)n;
		buf[len] = '\0';
		if ((p = strstr(buf, key)) != NULL &&
		    (e = strstr(p, "\r\n")) != NULL) {
			p += strlen(key);
			*e = '\0';
			if (keep != NULL)
				*keep = fd;
			else
				close(fd);
			return h_strf("%s", p);
		}
	}
	close(fd);
	return NULL;
}

/* Which redis replica answered a client through addr (its port), or NULL. */
static char *
redis_who(const char *addr, int *keep)
{
	return ask(addr, "INFO server\r\n", "tcp_port:", keep);
}

/*
 * n clients one after the other through addr: count the answers of each
 * replica in got[] and return how many clients got no answer.
 */
static unsigned
redis_round(const char *addr, const struct replica *v, unsigned n,
    unsigned got[NREPLICAS])
{
	unsigned i, failed = 0;
	char *who;
	int k;

	memset(got, 0, NREPLICAS * sizeof(*got));
	for (i = 0; i < n; i++) {
		if ((who = redis_who(addr, NULL)) == NULL) {
			failed++;
			continue;
		}
		for (k = 0; k < NREPLICAS; k++)
			if (strcmp(who, v[k].port) == 0)
				got[k]++;
	}
	return failed;
}

/* The [global] section of every story: one worker (no admin unless added). */
static const char *
global_section(void)
{
	return "[global]\nworkers = 1\nshutdown_timeout = 2s\n"
	       "log_rejects_per_second = 1000\n";
}

/* Upstreams r1..r3 on the replicas (no listen: pool members only). */
static const char *
member_sections(const struct replica *v, const char *keys)
{
	return h_strf("[upstream:r1]\nserver = %s\n%s\n"
		      "[upstream:r2]\nserver = %s\n%s\n"
		      "[upstream:r3]\nserver = %s\n%s\n",
	    v[0].addr, keys, v[1].addr, keys, v[2].addr, keys);
}

/*
 * Three redis replicas, roundrobin, retries = 1: the three share the
 * clients evenly; one is killed: no client fails, its circuit opens and
 * from then on it is sent nobody, the two others share evenly; it comes
 * back: after its half_open trials it closes and takes its share again.
 */
START_TEST(redis_roundrobin_kill_one)
{
	struct replica *v = redis_replicas();
	const char *lis = h_free_addr4(), *admin = h_free_addr4(), *line, *ps;
	unsigned got[NREPLICAS], failed, i, n, clients = 0;
	struct h_daemon *d;
	size_t mark;

	if (v == NULL)
		return;
	d = h_daemon_start(h_strf("%sadmin = %s\n%s[pool:redis]\nlisten = %s\n"
				  "members = r1 r2 r3\nbalance = roundrobin\n"
				  "retries = 1\n",
	    global_section(), admin,
	    member_sections(v,
		"failure_threshold = 2\nrecovery_timeout = 3s\n"
		"half_open_max_calls = 2\nsuccess_threshold = 2\n"
		"connect_timeout = 1s\n"),
	    lis));
	h_expect_log(d, H_WAIT_MS, "event=listen", "pool=redis",
	    h_strf("addr=%s", lis));

	failed = redis_round(lis, v, PHASE_CLIENTS, got);
	clients += PHASE_CLIENTS;
	h_assert(failed == 0, "%u of %d clients got no answer", failed,
	    PHASE_CLIENTS);
	for (i = 0; i < NREPLICAS; i++)
		h_assert_between(got[i], 45, 55, "answers of a replica");

	/* r2 dies: the clients sent to it are carried to another member. */
	replica_kill(&v[1]);
	mark = h_log_mark(d);
	failed = redis_round(lis, v, PHASE_CLIENTS, got);
	clients += PHASE_CLIENTS;
	h_assert(failed == 0, "%u clients failed with retries = 1", failed);
	h_assert(got[1] == 0, "the dead replica answered %u", got[1]);
	line = h_expect_log_after(d, mark, H_WAIT_MS, "event=state",
	    "upstream=r2", "to=open");
	h_assert_fields(line, "reason=consecutive_failures", "failures=2");
	h_assert(h_count_log_after(d, mark, "event=connect_fail",
		     "upstream=r2") == 2,
	    "r2 was tried %u times before it opened, not 2",
	    h_count_log_after(d, mark, "event=connect_fail", "upstream=r2"));

	/* Open: r2 gets no attempt at all; r1 and r3 share evenly. */
	ps = h_admin_get(admin, "/stats/pools/redis");
	h_assert(h_json_number(ps, "admitting") == 2,
	    "admitting with r2 open: %s", ps);
	mark = h_log_mark(d);
	failed = redis_round(lis, v, 100, got);
	clients += 100;
	h_assert(failed == 0, "%u clients failed while r2 is open", failed);
	h_assert(h_count_log_after(d, mark, "event=state", "upstream=r2") ==
		    0 ||
		h_count_log_after(d, mark, "event=connect_fail",
		    "upstream=r2") <= 1,
	    "the open member was still tried");
	h_assert_between(got[0], 45, 55, "r1's share of 100 with r2 open");
	h_assert_between(got[2], 45, 55, "r3's share of 100 with r2 open");

	/* r2 comes back: half_open trials close it; it takes its share. */
	redis_start(&v[1], h_client("redis-server"));
	mark = h_log_mark(d);
	for (n = 0; n < 2000; n++) {
		if (h_count_log_after(d, mark, "event=state", "upstream=r2",
			"from=half_open", "to=closed") > 0)
			break;
		h_assert(redis_who(lis, NULL) != NULL,
		    "a client failed while r2 came back");
		clients++;
		usleep(10000);
	}
	h_expect_log_after(d, mark, H_WAIT_MS, "event=state", "upstream=r2",
	    "from=half_open", "to=closed");
	failed = redis_round(lis, v, PHASE_CLIENTS, got);
	clients += PHASE_CLIENTS;
	h_assert(failed == 0, "%u clients failed after r2 returned", failed);
	for (i = 0; i < NREPLICAS; i++)
		h_assert_between(got[i], 45, 55,
		    "answers of a replica after the return");
	/* The counters add up: every client, one retry per failed connect. */
	ps = h_admin_get(admin, "/stats/pools/redis");
	h_assert(h_json_number(ps, "clients_total") == clients,
	    "clients_total is not the %u clients sent: %s", clients, ps);
	h_assert(h_json_number(ps, "retried_total") ==
		h_count_log(d, "event=connect_fail", "upstream=r2"),
	    "retried_total is not the %u failed connects: %s",
	    h_count_log(d, "event=connect_fail", "upstream=r2"), ps);
	h_assert(h_json_number(ps, "rejected_total") == 0 &&
		h_json_number(ps, "admitting") == 3,
	    "after the return: %s", ps);
	h_assert(strstr(h_admin_get(admin, "/metrics"),
		     "circuitproxy_pool_admitting_members{pool=\"redis\"} "
		     "3\n") != NULL,
	    "no pool metric");
	h_daemon_stop_ok(d);
}
END_TEST

/* Connected clients of a redis replica, asked directly (this one included). */
static int
redis_connected(const struct replica *r)
{
	char *s = ask(r->addr, "INFO clients\r\n", "connected_clients:", NULL);

	return s != NULL ? atoi(s) : -1;
}

/*
 * leastconn: six clients held open spread two per replica; the two on r1
 * leave; the next two go both to r1, the member with the fewest relays.
 */
START_TEST(redis_leastconn_follows_active)
{
	struct replica *v = redis_replicas();
	const char *lis = h_free_addr4();
	int fd[6], at[6], i, k, on[NREPLICAS] = { 0 };
	uint64_t end;
	struct h_daemon *d;
	char *who;

	if (v == NULL)
		return;
	d = h_daemon_start(h_strf("%s%s[pool:redis]\nlisten = %s\n"
				  "members = r1 r2 r3\nbalance = leastconn\n",
	    global_section(), member_sections(v, ""), lis));
	for (i = 0; i < 6; i++) {
		who = redis_who(lis, &fd[i]);
		h_assert(who != NULL, "held client %d got no answer", i);
		for (k = 0; k < NREPLICAS; k++)
			if (strcmp(who, v[k].port) == 0)
				break;
		h_assert(k < NREPLICAS, "answered by port %s", who);
		at[i] = k;
		on[k]++;
	}
	for (k = 0; k < NREPLICAS; k++)
		h_assert(on[k] == 2, "replica %d holds %d of 6 relays", k + 1,
		    on[k]);
	/* r1's two clients leave; r1 sees them go (our question is left). */
	for (i = 0; i < 6; i++)
		if (at[i] == 0) {
			close(fd[i]);
			fd[i] = -1;
		}
	end = h_now_ms() + H_WAIT_MS;
	while (redis_connected(&v[0]) != 1) {
		h_assert(h_now_ms() < end, "r1's relays did not end");
		usleep(10000);
	}
	for (i = 0; i < 6; i++) {
		if (fd[i] != -1)
			continue;
		who = redis_who(lis, &fd[i]);
		h_assert(who != NULL && strcmp(who, v[0].port) == 0,
		    "a new client went to port %s, not r1's %s",
		    who != NULL ? who : "(none)", v[0].port);
	}
	for (i = 0; i < 6; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Every member open: one pool per reject form over the same two members
 * (an upstream may be in several pools). redis-cli shows the pool's -ERR,
 * curl the 503 with the soonest Retry-After of the members, a raw client a
 * reset; each logged as event=reject pool=NAME.
 */
START_TEST(all_members_open_rejects)
{
	struct h_backend *a = h_backend(H_REFUSE), *b = h_backend(H_REFUSE);
	const char *cache = h_free_addr4(), *web = h_free_addr4(),
		   *raw = h_free_addr4(), *cli = h_client("redis-cli"),
		   *curl = h_client("curl"), *admin = h_free_addr4(), *line;
	struct h_daemon *d;
	struct h_run r;
	char *p;
	int secs;

	d = h_daemon_start(h_strf("%sadmin = %s\n[upstream:a]\nserver = %s\n"
				  "failure_threshold = 1\n"
				  "recovery_timeout = 60s\n"
				  "[upstream:b]\nserver = %s\n"
				  "failure_threshold = 1\n"
				  "recovery_timeout = 20s\n"
				  "[pool:cache]\nlisten = %s\nmembers = a b\n"
				  "reject = redis\n"
				  "[pool:web]\nlisten = %s\nmembers = b a\n"
				  "reject = http503\n"
				  "[pool:raw]\nlisten = %s\nmembers = a b\n"
				  "retries = 1\n",
	    global_section(), admin, h_backend_addr(a), h_backend_addr(b),
	    cache, web, raw));
	/* One client: a refuses, the retry on b refuses: it is reset. */
	h_assert(h_client_try(raw, H_WAIT_MS, NULL, NULL) == H_OUT_RESET,
	    "the client of two refusing members was not reset");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=a", "to=open");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=b", "to=open");

	h_assert(h_client_try(raw, H_WAIT_MS, NULL, NULL) == H_OUT_RESET,
	    "reject = reset did not reset");
	line = h_expect_log(d, H_WAIT_MS, "event=reject", "pool=raw");
	h_assert_fields(line, "state=open",
	    "retry_after=", "client=", "!upstream");
	if (cli != NULL) {
		h_exec(&r, cli, "-h", "127.0.0.1", "-p", h_port_of(cache),
		    "GET", "k");
		h_assert(strstr(r.out, "ERR circuitproxy: ") == r.out &&
			strstr(r.out, "'cache'") != NULL,
		    "redis-cli printed \"%s\" (stderr \"%s\")", r.out, r.err);
		h_expect_log(d, H_WAIT_MS, "event=reject", "pool=cache",
		    "state=open");
	} else
		h_skip_note(H_WHERE,
		    "redis-cli is not installed: the redis "
		    "reject is not shown");
	if (curl != NULL) {
		h_exec(&r, curl, "-s", "-i", "--max-time", "5",
		    h_strf("http://%s/", web));
		h_assert(strncmp(r.out, "HTTP/1.1 503", 12) == 0,
		    "curl got \"%s\"", r.out);
		p = strstr(r.out, "Retry-After: ");
		h_assert(p != NULL, "no Retry-After in \"%s\"", r.out);
		secs = atoi(p + 13);
		/* b's 20 s, the soonest, not a's 60 s. */
		h_assert(secs >= 15 && secs <= 20,
		    "Retry-After: %d, not b's soonest 20 s", secs);
		h_expect_log(d, H_WAIT_MS, "event=reject", "pool=web");
	} else
		h_skip_note(H_WHERE,
		    "curl is not installed: the http503 "
		    "reject is not shown");
	/* A skipped member is not charged: the members' rejects stay 0. */
	h_assert(h_count_log(d, "event=reject", "upstream=a") == 0 &&
		h_count_log(d, "event=reject", "upstream=b") == 0,
	    "a member was charged the pool's reject");
	h_assert(h_json_number(h_admin_get(admin, "/stats/a"),
		     "rejected_total") == 0 &&
		h_json_number(h_admin_get(admin, "/stats/b"),
		    "rejected_total") == 0,
	    "a member counts the pool's rejects");
	line = h_admin_get(admin, "/stats/pools/web");
	h_assert(h_json_number(line, "admitting") == 0 &&
		h_json_number(line, "retry_after") > 15 &&
		h_json_number(line, "retry_after") <= 20,
	    "POOLSTATS of a pool with every member open: %s", line);
	h_assert(h_admin_get(admin, "/stats/pools/nope") == NULL,
	    "an unknown pool answered");
	/* circuitproxyctl status groups each pool with its members. */
	h_exec(&r, h_ctl_prog(), "-a", admin, "status");
	h_assert(r.status == 0 &&
		strstr(r.out, "\npool web (roundrobin): 0 of 2 admitting, ") !=
		    NULL &&
		strstr(r.out, ", retry after ") != NULL &&
		strstr(r.out, "\n  b  open  ") != NULL,
	    "circuitproxyctl status shows no pool group:\n%s%s", r.out, r.err);
	h_assert(h_wait_notify(d,
		     "STATUS=2 upstreams, 2 open, 0 rejected, 0 active, "
		     "3 pools, 3 without a member",
		     H_WAIT_MS),
	    "STATUS= does not tell the pools");
	h_daemon_stop_ok(d);
}
END_TEST

/* Start python3 -m http.server on a replica's port, serving its dir. */
static void
http_start(struct replica *r, const char *python)
{
	char *argv[] = { (char *)python, "-m", "http.server", "--bind",
		"127.0.0.1", (char *)r->port, NULL };

	replica_spawn(r, argv);
	replica_wait_up(r);
}

/* Ask through the pool with curl which replica served /who. */
static char *
curl_who(const char *curl, const char *lis)
{
	struct h_run r;

	h_exec(&r, curl, "-s", "-f", "--max-time", "5",
	    h_strf("http://%s/who", lis));
	if (r.status != 0)
		return NULL;
	return h_strf("%.*s", (int)strcspn(r.out, "\n"), r.out);
}

/*
 * Three python3 http.server replicas and curl: each serves its name; one
 * is killed; with retries = 1 no curl fails, and the two others share.
 */
START_TEST(http_servers_kill_one)
{
	const char *python = h_client("python3"), *curl = h_client("curl");
	const char *lis = h_free_addr4(), *names[] = { "A", "B", "C" };
	/* Tracked, not on the stack: the deferred kills run after return. */
	struct replica *v = h_track(calloc(NREPLICAS, sizeof(*v)));
	unsigned got[NREPLICAS], i, k, failed;
	struct h_daemon *d;
	char *who;

	if (python == NULL || curl == NULL)
		h_skip("python3 or curl is not installed");
	for (i = 0; i < NREPLICAS; i++) {
		v[i].addr = h_free_addr4();
		v[i].port = h_port_of(v[i].addr);
		v[i].dir = h_strf("%s/www%u", h_tmpdir(), i);
		h_assert(mkdir(v[i].dir, 0700) == 0, "mkdir %s", v[i].dir);
		h_write_file(h_strf("www%u/who", i), h_strf("%s\n", names[i]));
		http_start(&v[i], python);
	}
	d = h_daemon_start(h_strf("%s%s[pool:web]\nlisten = %s\n"
				  "members = r1 r2 r3\nretries = 1\n",
	    global_section(), member_sections(v, "failure_threshold = 1\n"),
	    lis));
	for (int phase = 0; phase < 2; phase++) {
		if (phase == 1)
			replica_kill(&v[1]);
		memset(got, 0, sizeof(got));
		failed = 0;
		for (i = 0; i < (phase == 0 ? 15u : 12u); i++) {
			if ((who = curl_who(curl, lis)) == NULL) {
				failed++;
				continue;
			}
			for (k = 0; k < NREPLICAS; k++)
				if (strcmp(who, names[k]) == 0)
					got[k]++;
		}
		h_assert(failed == 0, "phase %d: %u curls failed", phase,
		    failed);
		if (phase == 0)
			for (k = 0; k < NREPLICAS; k++)
				h_assert_between(got[k], 5, 5,
				    "curls a replica served");
		else {
			h_assert(got[1] == 0, "the killed replica served");
			h_assert_between(got[0], 5, 7, "A's share");
			h_assert_between(got[2], 5, 7, "C's share");
		}
	}
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=r2", "to=open");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * Reload under a relay: a pool gains a member and changes its balance, a
 * pool is added and one removed; the open relay keeps flowing, the added
 * pool listens, the removed one stops, and a member that also listens on
 * its own keeps doing so.
 */
START_TEST(reload_pools_keeps_relays)
{
	struct h_backend *e1 = h_backend(H_ECHO), *e2 = h_backend(H_ECHO);
	const char *p1 = h_free_addr4(), *p2 = h_free_addr4(),
		   *own = h_free_addr4(), *p3 = h_free_addr4();
	const char *base = h_strf("%s[upstream:e1]\nserver = %s\nlisten = %s\n"
				  "[upstream:e2]\nserver = %s\n",
	    global_section(), h_backend_addr(e1), own, h_backend_addr(e2));
	struct h_daemon *d;
	char buf[5];
	size_t mark;
	int fd;

	d = h_daemon_start(h_strf("%s[pool:one]\nlisten = %s\nmembers = e1\n"
				  "[pool:two]\nlisten = %s\nmembers = e1 e2\n",
	    base, p1, p2));
	fd = h_connect_ok(p1);
	h_assert(h_send_all(fd, "ping", 4, H_WAIT_MS) == 0, "send");
	h_assert(h_recv_exact(fd, buf, 4, H_WAIT_MS) == H_OUT_DATA, "echo");

	mark = h_reload(d,
	    h_strf("%s[pool:one]\nlisten = %s\n"
		   "members = e2 e1\nbalance = first\n"
		   "[pool:three]\nlisten = %s\nmembers = e2\n",
		base, p1, p3));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=listen", "pool=three");
	h_expect_log_after(d, mark, H_WAIT_MS, "event=unlisten", "pool=two");
	/* The relay opened before the reload still flows. */
	h_assert(h_send_all(fd, "pong", 4, H_WAIT_MS) == 0, "send after");
	h_assert(h_recv_exact(fd, buf, 4, H_WAIT_MS) == H_OUT_DATA &&
		memcmp(buf, "pong", 4) == 0,
	    "the relay did not survive the reload");
	close(fd);
	/* balance = first: e2 now takes one's clients. */
	h_assert(h_echo_roundtrip(p1, "x", H_WAIT_MS), "pool one after");
	h_assert(h_backend_wait_accepted(e2, 1, H_WAIT_MS),
	    "balance = first did not send the client to e2");
	h_assert(h_echo_roundtrip(p3, "y", H_WAIT_MS), "pool three");
	h_assert(h_echo_roundtrip(own, "z", H_WAIT_MS), "e1's own listen");
	h_assert(h_client_try(p2, 1000, NULL, NULL) == H_OUT_REFUSED,
	    "the removed pool still listens");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * balance = first over a dead member and a live one: with retries = 1
 * every client is carried to the live member (a retry never goes back to
 * the member that just failed); with retries = 0 the client is reset.
 */
START_TEST(retry_first_skips_the_failed_member)
{
	struct h_backend *dead = h_backend(H_REFUSE), *live = h_backend(H_ECHO);
	const char *p1 = h_free_addr4(), *p0 = h_free_addr4();
	struct h_daemon *d;
	int i;

	d = h_daemon_start(
	    h_strf("%s[upstream:dead]\nserver = %s\n"
		   "failure_threshold = 50\n"
		   "[upstream:live]\nserver = %s\n"
		   "[pool:one]\nlisten = %s\nmembers = dead live\n"
		   "balance = first\nretries = 1\n"
		   "[pool:zero]\nlisten = %s\nmembers = dead live\n"
		   "balance = first\nretries = 0\n",
		global_section(), h_backend_addr(dead), h_backend_addr(live),
		p1, p0));
	for (i = 0; i < 5; i++)
		h_assert(h_echo_roundtrip(p1, "hello", H_WAIT_MS),
		    "client %d of the retrying pool failed", i);
	h_assert(h_wait_count(d, 5, H_WAIT_MS, "event=connect_fail",
		     "upstream=dead") == 5,
	    "the dead member was not tried first each time");
	h_assert(h_client_try(p0, H_WAIT_MS, NULL, NULL) == H_OUT_RESET,
	    "with retries = 0 the client was not reset");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A retry that finds the other members full: the client whose connect to
 * the dead member failed is reset as that failed attempt, with one story.
 * Its event=conn line says end=connect_fail; no event=reject overload line
 * is added for it, and the pool counts no reject (a full member is not an
 * admitting one, SPEC.md 4).
 */
START_TEST(retry_into_a_full_member_one_story)
{
	struct h_backend *dead = h_backend(H_REFUSE), *live = h_backend(H_ECHO);
	const char *admin = h_free_addr4(), *pl = h_free_addr4();
	const char *own = h_free_addr4();
	struct h_daemon *d;
	const char *line, *who;
	char *client, *ps, c;
	int held;

	d = h_daemon_start(
	    h_strf("%sadmin = %s\n"
		   "[upstream:dead]\nserver = %s\n"
		   "failure_threshold = 50\n"
		   "[upstream:live]\nlisten = %s\nserver = %s\n"
		   "max_connections = 1\n"
		   "[pool:web]\nlisten = %s\nmembers = dead live\n"
		   "balance = first\nretries = 1\n"
		   "log_connections = yes\n",
		global_section(), admin, h_backend_addr(dead), own,
		h_backend_addr(live), pl));
	/* The live member's one slot, taken through its own listener. */
	held = h_connect_ok(own);
	h_assert(h_send_all(held, "x", 1, H_WAIT_MS) == 0 &&
		h_recv_exact(held, &c, 1, H_WAIT_MS) == H_OUT_DATA,
	    "the client holding the live member's slot got no echo");

	client = h_client_expect_reset(pl, H_WAIT_MS, NULL);
	who = h_strf("client=%s", client);
	line = h_expect_log(d, H_WAIT_MS, "event=conn", who);
	h_assert_fields(line, "pool=web", "upstream=dead", "end=connect_fail",
	    "tries=1");
	/* A reject line would come before it (the same worker logs both). */
	h_assert(h_count_log(d, who, "event=conn") == 1,
	    "the retried client has %u event=conn lines",
	    h_count_log(d, who, "event=conn"));
	h_assert(h_count_log(d, who, "event=reject") == 0,
	    "the retried client was also logged as a reject");
	ps = h_admin_get(admin, "/stats/pools/web");
	h_assert(h_json_number(ps, "rejected_total") == 0 &&
		h_json_number(ps, "clients_total") == 1,
	    "a failed attempt counted as a pool reject: %s", ps);
	close(held);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * The DOM of the status page after its script ran in headless Chromium
 * (a fresh profile, 3 s of virtual time), or NULL if it did not finish
 * within a minute (a loaded box).
 */
static char *
chromium_dom(const char *browser, const char *url)
{
	const char *out = h_path("dom.html");
	char *argv[] = { (char *)browser, "--headless", "--no-sandbox",
		"--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update",
		"--disable-sync",
		h_strf("--user-data-dir=%s", h_path("chromium-profile")),
		"--virtual-time-budget=3000", "--window-size=1280,600",
		"--dump-dom", (char *)url, NULL };
	uint64_t end = h_now_ms() + 60000;
	char *dom = NULL;
	size_t len = 0;
	FILE *f;
	pid_t pid;
	int fd, st;

	pid = fork();
	h_assert(pid != -1, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fd, 1);
		fd = open("/dev/null", O_RDWR);
		dup2(fd, 0);
		dup2(fd, 2);
		execv(browser, argv);
		_exit(127);
	}
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (h_now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return NULL;
		}
		usleep(50000);
	}
	if ((f = fopen(out, "r")) == NULL)
		return NULL;
	if (getdelim(&dom, &len, '\0', f) == -1) {
		free(dom);
		dom = NULL;
	}
	fclose(f);
	return dom != NULL ? h_track(dom) : NULL;
}

/*
 * The status page shows a pool as a group, its members beneath: one
 * member open, the group says 1 of 2 admitting, and the member rows come
 * after the pool's row; an upstream in no pool follows.
 */
START_TEST(status_page_groups_pools)
{
	const char *browser = h_client("chromium");
	struct h_backend *up = h_backend(H_ECHO), *down = h_backend(H_REFUSE),
			 *other = h_backend(H_ECHO);
	const char *admin = h_free_addr4(), *lis = h_free_addr4(),
		   *own = h_free_addr4(), *at, *pool, *a, *b, *o;
	struct h_daemon *d;
	char *dom;

	if (browser == NULL)
		h_skip("no chromium installed (Debian package chromium)");
	d = h_daemon_start(
	    h_strf("%sadmin = %s\n[upstream:solo]\nserver = %s\n"
		   "listen = %s\n"
		   "[upstream:a]\nserver = %s\n"
		   "[upstream:b]\nserver = %s\nfailure_threshold = 1\n"
		   "[pool:web]\nlisten = %s\nmembers = a b\n",
		global_section(), admin, h_backend_addr(other), own,
		h_backend_addr(up), h_backend_addr(down), lis));
	/* Two clients: one of them meets b, which opens; both are served. */
	h_assert(h_echo_roundtrip(lis, "x", H_WAIT_MS), "first client");
	h_assert(h_echo_roundtrip(lis, "y", H_WAIT_MS), "second client");
	h_expect_log(d, H_WAIT_MS, "event=state", "upstream=b", "to=open");
	dom = chromium_dom(browser, h_strf("http://%s/", admin));
	h_assert(dom != NULL, "chromium did not render the page in a minute");
	pool = strstr(dom, "<tr class=\"pool\" data-pool=\"web\">");
	h_assert(pool != NULL, "no pool row in the page:\n%s", dom);
	at = strstr(pool,
	    "pool web · roundrobin · 1 of 2 admitting · 2 clients · "
	    "1 retried · 0 rejected");
	h_assert(at != NULL, "the pool row does not sum up the pool:\n%s", dom);
	a = strstr(dom,
	    "data-upstream=\"a\" data-state=\"closed\" "
	    "class=\"member\"");
	b = strstr(dom,
	    "data-upstream=\"b\" data-state=\"open\" "
	    "class=\"member\"");
	o = strstr(dom, "data-upstream=\"solo\" data-state=\"closed\">");
	h_assert(a != NULL && b != NULL && o != NULL && pool < a && a < b &&
		b < o,
	    "members are not beneath their pool, the others after:\n%s", dom);
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A story that runs many real clients (or a browser) gets more time than
 * the harness's 30 s: the box is shared with other suites.
 */
static void
add_long(Suite *s, const char *name, const TTest *test)
{
	TCase *tc = h_tcase_new(name);

	tcase_add_test(tc, test);
	tcase_set_timeout(tc, 90);
	suite_add_tcase(s, tc);
}

/*
 * A member whose host name has no address fails its attempt at once
 * (error=dns), before any socket: the client is retried on the next
 * member and served, and nothing else is disturbed (no libevent warning).
 */
START_TEST(retry_after_a_member_with_no_address)
{
	struct h_backend *live = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	int i;

	d = h_daemon_start(h_strf("%s[upstream:nx]\n"
				  "server = nonexistent.invalid:80\n"
				  "[upstream:live]\nserver = %s\n"
				  "[pool:p]\nlisten = %s\nmembers = nx live\n"
				  "balance = first\nretries = 1\n",
	    global_section(), h_backend_addr(live), lis));
	for (i = 0; i < 2; i++)
		h_assert(h_echo_roundtrip(lis, "hello", H_WAIT_MS),
		    "client %d was not carried to the live member", i);
	h_expect_log(d, H_WAIT_MS, "event=connect_fail", "upstream=nx",
	    "error=dns");
	h_assert(h_count_log(d, "event=libevent") == 0,
	    "libevent complained about the retry");
	h_daemon_stop_ok(d);
}
END_TEST

/* A bounded client loop through a pool, in a thread of its own. */
struct loop {
	const char *addr;
	_Atomic bool stop;
	_Atomic unsigned n; /* clients sent */
	unsigned ok;
};

/*
 * Echo roundtrips one after the other until told to stop (at most 20,000
 * or 60 s); counts those sent and those that came back.
 */
static void *
loop_run(void *arg)
{
	struct loop *l = arg;
	uint64_t end = h_now_ms() + 60000;

	while (!atomic_load(&l->stop) && l->n < 20000 && h_now_ms() < end) {
		atomic_fetch_add(&l->n, 1);
		if (h_echo_roundtrip(l->addr, "ping", H_WAIT_MS))
			l->ok++;
	}
	return NULL;
}

/*
 * Reload under load: clients go through a pool the whole time while a
 * reload changes its balance and members and another pool's; none
 * fails, and the pool's clients_total counts every one of them across the
 * reload (the pool of a name that stays keeps its totals).
 */
START_TEST(reload_pools_under_load)
{
	struct h_backend *e1 = h_backend(H_ECHO), *e2 = h_backend(H_ECHO);
	const char *p1 = h_free_addr4(), *p2 = h_free_addr4(),
		   *admin = h_free_addr4(), *ps;
	const char *base = h_strf("%sadmin = %s\n[upstream:e1]\nserver = %s\n"
				  "[upstream:e2]\nserver = %s\n",
	    global_section(), admin, h_backend_addr(e1), h_backend_addr(e2));
	struct loop l = { .addr = p1 };
	struct h_daemon *d;
	pthread_t t;
	size_t mark;

	d = h_daemon_start(h_strf("%s[pool:one]\nlisten = %s\nmembers = e1\n"
				  "[pool:two]\nlisten = %s\nmembers = e2\n",
	    base, p1, p2));
	h_assert(pthread_create(&t, NULL, loop_run, &l) == 0, "thread");
	h_assert(h_backend_wait_accepted(e1, 20, H_WAIT_MS),
	    "the loop did not start");
	mark = h_reload(d,
	    h_strf("%s[pool:one]\nlisten = %s\n"
		   "members = e2 e1\nbalance = leastconn\n"
		   "[pool:two]\nlisten = %s\nmembers = e1 e2\n",
		base, p1, p2));
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=ok");
	/* The loop goes on past the reload, to the new first member. */
	h_backend_wait_accepted(e2, 20, H_WAIT_MS);
	atomic_store(&l.stop, true);
	pthread_join(t, NULL);
	h_assert(l.ok == l.n, "%u of %u clients failed across the reload",
	    (unsigned)l.n - l.ok, (unsigned)l.n);
	h_assert(h_backend_accepted(e2) > 0, "the new member took no client");
	ps = h_admin_get(admin, "/stats/pools/one");
	h_assert(h_json_number(ps, "clients_total") == l.n,
	    "clients_total is not the %u clients: %s", (unsigned)l.n, ps);
	h_assert(h_json_number(ps, "retried_total") == 0 &&
		h_json_number(ps, "rejected_total") == 0,
	    "%s", ps);
	h_assert(strstr(ps, "\"balance\":\"leastconn\"") != NULL &&
		strstr(ps, "\"members\":[\"e2\",\"e1\"]") != NULL,
	    "the reload did not change the pool: %s", ps);
	h_assert(h_json_number(h_admin_get(admin, "/stats/pools/two"),
		     "clients_total") == 0,
	    "the added pool");
	h_daemon_stop_ok(d);
}
END_TEST

/*
 * A pool's listen address that another process holds stops the start
 * with exit 1, and the reason names where it is written, as for an
 * upstream: "FILE:LINE: pool 'p': listen ADDR: ..." with the line of that
 * listen key (the second one here, below the header and the first).
 */
START_TEST(pool_listen_in_use_at_start)
{
	struct h_backend *taken = h_backend(H_ECHO);
	const char *addr = h_backend_addr(taken);
	const char *head = h_strf("%s[upstream:e1]\nserver = 127.0.0.1:9\n"
				  "[pool:p]\nmembers = e1\nlisten = %s\n",
	    global_section(), h_free_addr4());
	const char *path = h_write_file("pool_in_use.ini",
	    h_strf("%slisten = %s\n", head, addr));
	const char *want = h_strf("%s:%u: pool 'p': listen %s: ", path,
	    h_count_lines(head) + 1, addr);
	struct h_run r;

	h_run(&r, "-c", path);
	h_assert(r.status == 1, "exit status %d, 1 expected; stderr:\n%s",
	    r.status, r.err);
	h_assert(strstr(r.err,
		     h_strf("event=exit status=1 error=\"%s", want)) != NULL &&
		strcasestr(r.err, "in use") != NULL,
	    "stderr does not name %s, %s and say it is in use:\n%s", addr, want,
	    r.err);
}
END_TEST

/*
 * The same at a reload: a pool moved to an address another process holds
 * is a reload error naming FILE:LINE and the pool; the running config
 * keeps serving on the old address.
 */
START_TEST(pool_listen_in_use_at_reload)
{
	struct h_backend *e1 = h_backend(H_ECHO), *taken = h_backend(H_ECHO);
	const char *lis = h_free_addr4(), *addr = h_backend_addr(taken);
	const char *head = h_strf("%s[upstream:e1]\nserver = %s\n"
				  "[pool:p]\nmembers = e1\n",
	    global_section(), h_backend_addr(e1));
	struct h_daemon *d;
	size_t mark;

	d = h_daemon_start(h_strf("%slisten = %s\n", head, lis));
	h_assert(h_echo_roundtrip(lis, "before", H_WAIT_MS), "pool p");
	mark = h_reload(d, h_strf("%slisten = %s\n", head, addr));
	/* Field by field (a log pattern is whole words): FILE:LINE, pool. */
	h_expect_log_after(d, mark, H_WAIT_MS, "event=reload", "result=error",
	    h_strf("error=\"%s:%u:", h_daemon_config(d),
		h_count_lines(head) + 1),
	    "pool", "'p':", "listen", h_strf("%s:", addr));
	h_assert(h_echo_roundtrip(lis, "after", H_WAIT_MS),
	    "the old address stopped serving after the failed reload");
	h_daemon_stop_ok(d);
}
END_TEST

/* The suite. */
static Suite *
pool_suite(void)
{
	Suite *s = suite_create("pool");

	add_long(s, "redis_roundrobin_kill_one", redis_roundrobin_kill_one);
	H_TEST(s, redis_leastconn_follows_active);
	H_TEST(s, all_members_open_rejects);
	add_long(s, "http_servers_kill_one", http_servers_kill_one);
	H_TEST(s, reload_pools_keeps_relays);
	add_long(s, "reload_pools_under_load", reload_pools_under_load);
	H_TEST(s, retry_first_skips_the_failed_member);
	H_TEST(s, retry_into_a_full_member_one_story);
	H_TEST(s, retry_after_a_member_with_no_address);
	H_TEST(s, pool_listen_in_use_at_start);
	H_TEST(s, pool_listen_in_use_at_reload);
	add_long(s, "status_page_groups_pools", status_page_groups_pools);
	return s;
}

H_MAIN(pool_suite)
