/*
 * End-to-end stories of the byte relay under load (SPEC.md section 8), run
 * on every relay path: splice = auto, auto forced to splice from the first
 * byte (CIRCUITPROXYD_TEST_SPLICE=force), and splice = off (see
 * h_main_modes). Large streams with random chunking, half-close both ways,
 * peers that never read, resets in the middle of a transfer, idle_timeout
 * with bytes parked in a pipe, a thousand bulk relays at once and a daemon
 * out of descriptors. The servers here are scripted in the test, so that
 * each story can say what the server saw.
 *
 * Under CP_TEST_WRAPPER (valgrind) the volumes are scaled down (STREAM_LEN,
 * MANY_RELAYS), the stories stay the same.
 */
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* Each way in the integrity story: 64 MiB, 8 MiB under a wrapper. */
#define STREAM_LEN (h_wrapped() ? (8u << 20) : (64u << 20))
/* Half-close and reset stories. */
#define HALF_LEN (4u << 20)
#define RESET_AFTER (8u << 20)
/* Bulk relays at once, and the bytes each sends. */
#define MANY_RELAYS (h_wrapped() ? 100u : 1000u)
#define MANY_LEN (256u * 1024)
/* The daemon's pipe pool: at most this many per worker (src/worker.c). */
#define POOL_MAX 256
/* Relays gone idle after a bulk flow; the empty pipes a pool keeps. */
#define IDLE_RELAYS 40
#define PIPE_KEEP 32
/* Clients told a server's last words, direct and through the daemon. */
#define LAST_WORDS_TRIES 100u
#define REDIS_TRIES 50u
/* A stalled stream: no progress for this long. */
#define STALL_MS 1000
/* How much the daemon may grow while a stream is stalled. */
#define RSS_SLACK_KB (8 * 1024)

/* A small PRNG for chunk sizes (xorshift64). */
static size_t
rand_size(uint64_t *s, size_t max)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return 1 + (size_t)(*s % max);
}

/* Send len bytes of the stream seeded seed in random chunks; 0 or errno. */
static int
send_stream(int fd, uint64_t seed, size_t len, uint64_t chunks, int ms)
{
	static const size_t max = 256 * 1024;
	char *buf = malloc(max);
	struct h_rand r;
	size_t done, n;
	int err = 0;

	if (buf == NULL)
		return ENOMEM;
	h_rand_init(&r, seed);
	for (done = 0; done < len; done += n) {
		n = chunks != 0 ? rand_size(&chunks, max) : max;
		if (n > len - done)
			n = len - done;
		h_rand_fill(&r, buf, n);
		if (h_send_all(fd, buf, n, ms) == -1) {
			err = errno;
			break;
		}
	}
	free(buf);
	return err;
}

/* Make a socket non-blocking (the harness's helpers wait with poll). */
static void
set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl != -1)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/*
 * Read the stream seeded seed in random chunks until len bytes came, it
 * differs, ends or fails, or ms pass with nothing: how many bytes came
 * right. *out says how it ended: after len bytes, what came next (EOF, a
 * reset, more data, nothing); else H_OUT_ERROR for a wrong byte, or what
 * stopped it. len SIZE_MAX reads to the end.
 */
static size_t
recv_stream(int fd, uint64_t seed, size_t len, uint64_t chunks, int ms,
    enum h_outcome *out)
{
	static const size_t max = 256 * 1024;
	char *got = malloc(max), *want = malloc(max);
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct h_rand r;
	size_t done = 0, n, i;
	ssize_t k;

	*out = H_OUT_ERROR;
	if (got == NULL || want == NULL)
		goto end;
	h_rand_init(&r, seed);
	while (done < len) {
		n = chunks != 0 ? rand_size(&chunks, max) : max;
		if (n > len - done)
			n = len - done;
		k = recv(fd, got, n, 0);
		if (k == -1 && (errno == EAGAIN || errno == EINTR)) {
			if (poll(&pfd, 1, ms) == 0) {
				*out = H_OUT_TIMEOUT;
				goto end;
			}
			continue;
		}
		if (k <= 0) {
			*out = k == 0		  ? H_OUT_EOF
			    : errno == ECONNRESET ? H_OUT_RESET
						  : H_OUT_ERROR;
			goto end;
		}
		h_rand_fill(&r, want, (size_t)k);
		if (memcmp(got, want, (size_t)k) != 0) {
			for (i = 0; got[i] == want[i]; i++)
				;
			done += i;
			*out = H_OUT_ERROR;
			goto end;
		}
		done += (size_t)k;
	}
	*out = h_next_event(fd, ms);
end:
	free(got);
	free(want);
	return done;
}

/*
 * A scripted server: one listening socket, one thread per connection
 * running the story's script. What the script saw is in the struct.
 */
struct script;
typedef void (*script_fn)(struct script *, int fd);
struct script {
	int lfd;
	char addr[64];
	pthread_t acceptor;
	script_fn fn;
	_Atomic bool go;	  /* the test lets the script go on */
	_Atomic bool done;	  /* the script finished */
	_Atomic size_t sent;	  /* bytes the script sent */
	_Atomic uint64_t sent_ms; /* when it last sent something */
	size_t got;		  /* bytes it read right */
	enum h_outcome end;	  /* how its reading ended */
	int err;
	pthread_t conn;
	bool has_conn;
};

/* Serve the first connection with the script (in its own thread). */
static void *
script_conn_main(void *arg)
{
	struct script *s = arg;
	int fd = accept(s->lfd, NULL, NULL);

	if (fd == -1)
		return NULL;
	set_nonblock(fd);
	s->fn(s, fd);
	close(fd);
	atomic_store(&s->done, true);
	return NULL;
}

/* Start a scripted server on 127.0.0.1. */
static struct script *
script_start(script_fn fn)
{
	struct script *s = calloc(1, sizeof(*s));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);

	h_assert(s != NULL, "malloc");
	s->fn = fn;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	h_assert(s->lfd != -1 &&
		bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
		listen(s->lfd, 16) == 0 &&
		getsockname(s->lfd, (struct sockaddr *)&sin, &len) == 0,
	    "scripted server: %s", strerror(errno));
	snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%u", ntohs(sin.sin_port));
	h_assert(pthread_create(&s->conn, NULL, script_conn_main, s) == 0,
	    "thread");
	s->has_conn = true;
	return s;
}

/* Wait (bounded) for the script to finish; true if it did. */
static bool
script_wait(struct script *s, int ms)
{
	uint64_t deadline = h_now_ms() + (uint64_t)ms;

	while (!atomic_load(&s->done) && h_now_ms() < deadline)
		poll(NULL, 0, 10);
	return atomic_load(&s->done);
}

/* Let the script go on and wait for it to finish. */
static void
script_finish(struct script *s)
{
	atomic_store(&s->go, true);
	h_assert(script_wait(s, 3 * H_WAIT_MS), "the scripted server hangs");
	pthread_join(s->conn, NULL);
	close(s->lfd);
	free(s);
}

/* Wait, bounded, until the test lets the script go on. */
static bool
script_wait_go(struct script *s)
{
	uint64_t deadline = h_now_ms() + 6 * H_WAIT_MS;

	while (!atomic_load(&s->go) && h_now_ms() < deadline)
		poll(NULL, 0, 5);
	return atomic_load(&s->go);
}

/* Send the stream seeded seed (non-blocking, counting) until told to stop. */
static void
script_send_until_go(struct script *s, int fd, uint64_t seed)
{
	char buf[65536];
	struct h_rand r;
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	size_t pending = 0, off = 0;
	ssize_t n;

	h_rand_init(&r, seed);
	while (!atomic_load(&s->go)) {
		if (pending == 0) {
			h_rand_fill(&r, buf, sizeof(buf));
			pending = sizeof(buf);
			off = 0;
		}
		n = send(fd, buf + off, pending, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			pending -= (size_t)n;
			atomic_fetch_add(&s->sent, (size_t)n);
			atomic_store(&s->sent_ms, h_now_ms());
			continue;
		}
		if (n == -1 && errno != EAGAIN && errno != EINTR) {
			s->err = errno;
			return;
		}
		poll(&pfd, 1, 50);
	}
	/* Finish the chunk begun, so the stream stays whole. */
	while (pending > 0 && s->err == 0) {
		n = send(fd, buf + off, pending, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			pending -= (size_t)n;
			atomic_fetch_add(&s->sent, (size_t)n);
		} else if (n == -1 && errno != EAGAIN && errno != EINTR)
			s->err = errno;
		else
			poll(&pfd, 1, 50);
	}
}

/* A client's sending side, in a thread of its own. */
struct sender {
	int fd;
	uint64_t seed, chunks;
	size_t len;
	bool shut; /* shut the write side after the stream */
	int err;
	_Atomic bool finished;
};

/* Send the stream, then maybe shut the write side. */
static void *
sender_main(void *arg)
{
	struct sender *s = arg;

	s->err = send_stream(s->fd, s->seed, s->len, s->chunks, 6 * H_WAIT_MS);
	if (s->shut)
		shutdown(s->fd, SHUT_WR);
	atomic_store(&s->finished, true);
	return NULL;
}

/*
 * Integrity: 64 MiB of random bytes each way (to an echo server and back),
 * written and read in random chunks of 1 byte to 256 KiB at the same time:
 * every byte comes back in order, and the client's FIN comes back as EOF.
 */
START_TEST(relay_stream_integrity)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, h_backend_addr(echo), ""));
	struct sender snd = { .seed = 1, .chunks = 99, .shut = true };
	enum h_outcome out;
	pthread_t t;
	size_t got;

	snd.len = STREAM_LEN;
	snd.fd = h_connect_ok(lis);
	h_assert(pthread_create(&t, NULL, sender_main, &snd) == 0, "thread");
	got = recv_stream(snd.fd, 1, snd.len, 12345, 4 * H_WAIT_MS, &out);
	pthread_join(t, NULL);
	h_assert(snd.err == 0, "sending: %s", strerror(snd.err));
	h_assert(got == snd.len && out == H_OUT_EOF,
	    "%zu of %zu bytes came back right, then %s", got, snd.len,
	    h_outcome_name(out));
	close(snd.fd);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* Half-close, client first: wait, read the request to EOF, then reply. */
static void
script_read_then_reply(struct script *s, int fd)
{
	if (!script_wait_go(s))
		return;
	s->got = recv_stream(fd, 2, SIZE_MAX, 5, 3 * H_WAIT_MS, &s->end);
	if (s->end == H_OUT_EOF)
		s->err = send_stream(fd, 3, HALF_LEN, 6, 3 * H_WAIT_MS);
}

/*
 * Half-close, the client first: it sends 4 MiB and shuts its write side
 * while the server reads nothing, so bytes are parked on the way; the
 * server then sees all 4 MiB, and only then EOF; its reply of 4 MiB
 * and its close reach the client whole.
 */
START_TEST(relay_half_close_client_first)
{
	struct script *srv = script_start(script_read_then_reply);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, srv->addr, ""));
	struct sender snd = { .seed = 2, .chunks = 7, .shut = true };
	uint64_t until;
	enum h_outcome out;
	pthread_t t;
	size_t got;

	snd.len = HALF_LEN;
	snd.fd = h_connect_ok(lis);
	h_assert(pthread_create(&t, NULL, sender_main, &snd) == 0, "thread");
	/* Let the request pile up on the way (all sent, or 1 s). */
	until = h_now_ms() + 1000;
	while (!atomic_load(&snd.finished) && h_now_ms() < until)
		poll(NULL, 0, 10);
	atomic_store(&srv->go, true);
	got = recv_stream(snd.fd, 3, HALF_LEN, 8, 3 * H_WAIT_MS, &out);
	pthread_join(t, NULL);
	h_assert(snd.err == 0, "sending: %s", strerror(snd.err));
	h_assert(script_wait(srv, H_WAIT_MS), "the server never finished");
	h_assert(srv->got == HALF_LEN && srv->end == H_OUT_EOF,
	    "the server read %zu of %u bytes right, then %s", srv->got,
	    HALF_LEN, h_outcome_name(srv->end));
	h_assert(got == HALF_LEN && out == H_OUT_EOF,
	    "the client read %zu of %u bytes of the reply, then %s", got,
	    HALF_LEN, h_outcome_name(out));
	close(snd.fd);
	script_finish(srv);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* Half-close, server first: send, shut the write side, read to EOF. */
static void
script_send_then_read(struct script *s, int fd)
{
	s->err = send_stream(fd, 4, HALF_LEN, 9, 3 * H_WAIT_MS);
	shutdown(fd, SHUT_WR);
	atomic_store(&s->sent, HALF_LEN);
	s->got = recv_stream(fd, 5, SIZE_MAX, 10, 3 * H_WAIT_MS, &s->end);
}

/*
 * Half-close, the server first: it sends 4 MiB and shuts its write side
 * before the client reads a byte; the client gets all 4 MiB, then EOF,
 * and can still send: its 4 MiB and its FIN reach the server whole.
 */
START_TEST(relay_half_close_server_first)
{
	struct script *srv = script_start(script_send_then_read);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, srv->addr, ""));
	enum h_outcome out;
	uint64_t until;
	size_t got;
	int fd;

	fd = h_connect_ok(lis);
	/* Let the reply pile up on the way (all sent, or 1 s). */
	until = h_now_ms() + 1000;
	while (atomic_load(&srv->sent) == 0 && h_now_ms() < until)
		poll(NULL, 0, 10);
	got = recv_stream(fd, 4, HALF_LEN, 11, 3 * H_WAIT_MS, &out);
	h_assert(got == HALF_LEN && out == H_OUT_EOF,
	    "the client read %zu of %u bytes right, then %s", got, HALF_LEN,
	    h_outcome_name(out));
	h_assert(send_stream(fd, 5, HALF_LEN, 12, 3 * H_WAIT_MS) == 0,
	    "sending after the server's FIN: %s", strerror(errno));
	h_assert(shutdown(fd, SHUT_WR) == 0, "shutdown");
	h_assert(script_wait(srv, 3 * H_WAIT_MS), "the server never finished");
	h_assert(srv->err == 0, "the server's send: %s", strerror(srv->err));
	h_assert(srv->got == HALF_LEN && srv->end == H_OUT_EOF,
	    "the server read %zu of %u bytes right, then %s", srv->got,
	    HALF_LEN, h_outcome_name(srv->end));
	close(fd);
	script_finish(srv);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* The server streams until told to stop, then shuts and reads to EOF. */
static void
script_stream(struct script *s, int fd)
{
	script_send_until_go(s, fd, 6);
	shutdown(fd, SHUT_WR);
	s->got = recv_stream(fd, 0, SIZE_MAX, 0, 3 * H_WAIT_MS, &s->end);
}

/* Wait (bounded) until the script's sending has stalled for STALL_MS. */
static bool
script_stalled(struct script *s)
{
	uint64_t deadline = h_now_ms() + 4 * H_WAIT_MS, last;

	while (h_now_ms() < deadline) {
		last = atomic_load(&s->sent_ms);
		if (last != 0 && h_now_ms() - last >= STALL_MS)
			return true;
		poll(NULL, 0, 50);
	}
	return false;
}

/*
 * The pipes a stalled stream may hold: none on recv/send, one when it is
 * spliced (its bytes parked in it); with splice forced, exactly one.
 */
static void
check_parked_pipes(struct h_daemon *d, int base)
{
	int now = h_daemon_fds_named(d, "pipe:") - base;

	if (strcmp(h_splice_mode(), "off") == 0)
		h_assert(now == 0, "%d pipe descriptors on recv/send", now);
	else if (strcmp(h_splice_mode(), "force") == 0)
		h_assert(now == 2, "%d pipe descriptors for one stalled stream",
		    now);
	else
		h_assert(now == 0 || now == 2,
		    "%d pipe descriptors for one stalled stream", now);
}

/*
 * A client that never reads: the server's stream backs up until the
 * server cannot send any more; the daemon's memory stays flat and it holds
 * at most one pipe. When the client reads at last, every byte the server
 * sent arrives in order, then EOF.
 */
START_TEST(relay_client_never_reads)
{
	struct script *srv = script_start(script_stream);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, srv->addr, ""));
	int base = h_daemon_fds_named(d, "pipe:"), fd;
	enum h_outcome out;
	long rss0, rss1;
	size_t got, sent;

	fd = h_connect_ok(lis);
	rss0 = h_daemon_rss_kb(d);
	h_assert(script_stalled(srv),
	    "the server's stream never backed up (%zu MiB sent)",
	    atomic_load(&srv->sent) >> 20);
	rss1 = h_daemon_rss_kb(d);
	sent = atomic_load(&srv->sent);
	h_assert(sent < (64u << 20), "%zu MiB went to a client reading nothing",
	    sent >> 20);
	if (rss0 > 0 && rss1 > 0)
		h_assert(rss1 - rss0 < RSS_SLACK_KB,
		    "the daemon grew %ld KiB on a stalled stream", rss1 - rss0);
	check_parked_pipes(d, base);

	atomic_store(&srv->go, true);
	got = recv_stream(fd, 6, SIZE_MAX, 13, 3 * H_WAIT_MS, &out);
	h_assert(out == H_OUT_EOF && got == atomic_load(&srv->sent),
	    "the client read %zu of %zu bytes right, then %s", got,
	    atomic_load(&srv->sent), h_outcome_name(out));
	close(fd);
	script_finish(srv);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* The server reads nothing until told to, then reads to EOF. */
static void
script_late_reader(struct script *s, int fd)
{
	if (!script_wait_go(s))
		return;
	s->got = recv_stream(fd, 7, SIZE_MAX, 14, 3 * H_WAIT_MS, &s->end);
}

/*
 * A server that never reads: the client's writes stall once the buffers
 * on the way are full, the daemon's memory stays flat and it holds at most
 * one pipe. When the server reads at last, it gets every byte sent, in
 * order, then the client's FIN.
 */
START_TEST(relay_server_never_reads)
{
	struct script *srv = script_start(script_late_reader);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, srv->addr, ""));
	int base = h_daemon_fds_named(d, "pipe:"), fd;
	struct h_stream *st = h_stream_new(7);
	long rss0, rss1;

	fd = h_connect_ok(lis);
	rss0 = h_daemon_rss_kb(d);
	h_assert(h_send_until_stalled(fd, STALL_MS, st),
	    "%zu MiB went to a server that reads nothing", st->sent >> 20);
	rss1 = h_daemon_rss_kb(d);
	h_assert(st->sent < (64u << 20), "%zu MiB went in before the stall",
	    st->sent >> 20);
	if (rss0 > 0 && rss1 > 0)
		h_assert(rss1 - rss0 < RSS_SLACK_KB,
		    "the daemon grew %ld KiB on a stalled stream", rss1 - rss0);
	check_parked_pipes(d, base);

	atomic_store(&srv->go, true);
	h_assert(h_send_all(fd, st->buf + H_STREAM_CHUNK - st->pending,
		     st->pending, 3 * H_WAIT_MS) == 0,
	    "the rest of the stream: %s", strerror(errno));
	st->sent += st->pending;
	h_assert(shutdown(fd, SHUT_WR) == 0, "shutdown");
	h_assert(script_wait(srv, 3 * H_WAIT_MS), "the server never finished");
	h_assert(srv->got == st->sent && srv->end == H_OUT_EOF,
	    "the server read %zu of %zu bytes right, then %s", srv->got,
	    st->sent, h_outcome_name(srv->end));
	close(fd);
	script_finish(srv);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* The server reads until the end, whatever it is. */
static void
script_sink(struct script *s, int fd)
{
	s->got = recv_stream(fd, 8, SIZE_MAX, 15, 3 * H_WAIT_MS, &s->end);
}

/*
 * The client resets in the middle of an upload: the server sees a reset
 * too (not a clean EOF, which would pass for a complete request), and
 * every pipe the relay held is given back or closed.
 */
START_TEST(relay_client_resets_mid_transfer)
{
	struct script *srv = script_start(script_sink);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, srv->addr, ""));
	int base = h_daemon_fds_named(d, "pipe:"), fd, now;
	struct linger lg = { 1, 0 };

	fd = h_connect_ok(lis);
	h_assert(send_stream(fd, 8, RESET_AFTER, 16, 3 * H_WAIT_MS) == 0,
	    "send: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	h_assert(script_wait(srv, H_WAIT_MS),
	    "the server did not see the end within %d ms", H_WAIT_MS);
	h_assert(srv->end == H_OUT_RESET,
	    "the server read %zu bytes right, then %s, not a reset", srv->got,
	    h_outcome_name(srv->end));
	h_assert(srv->got <= RESET_AFTER, "%zu bytes", srv->got);
	now = h_daemon_fds_named(d, "pipe:") - base;
	h_assert(now <= 4, "%d pipe descriptors after the relay ended", now);
	script_finish(srv);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* The server sends 8 MiB, then resets. */
static void
script_send_then_reset(struct script *s, int fd)
{
	struct linger lg = { 1, 0 };

	s->err = send_stream(fd, 9, RESET_AFTER, 17, 3 * H_WAIT_MS);
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/*
 * The server resets in the middle of a download: the client reads right
 * bytes, then a reset (not an EOF, which would pass for a whole reply).
 */
START_TEST(relay_server_resets_mid_transfer)
{
	struct script *srv = script_start(script_send_then_reset);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, srv->addr, ""));
	enum h_outcome out;
	size_t got;
	int fd;

	fd = h_connect_ok(lis);
	got = recv_stream(fd, 9, SIZE_MAX, 18, 3 * H_WAIT_MS, &out);
	h_assert(out == H_OUT_RESET,
	    "the client read %zu bytes right, then %s, not a reset", got,
	    h_outcome_name(out));
	h_assert(got <= RESET_AFTER, "%zu bytes", got);
	close(fd);
	script_finish(srv);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/*
 * idle_timeout = 1s with bytes parked on the way (in a pipe when spliced)
 * to a server that never reads: nothing moves, so the relay is idle and is
 * closed about 1 s after the stall (never within 1 s of its start), and
 * the pipe holding bytes is closed with it rather than kept.
 */
START_TEST(relay_idle_timeout_parked)
{
	struct script *srv = script_start(script_late_reader);
	const char *lis = h_free_addr4();
	struct h_daemon *d = h_daemon_start(
	    h_config_api("info", lis, srv->addr, "idle_timeout = 1s\n"));
	int base = h_daemon_fds_named(d, "pipe:"), fd, now;
	struct h_stream *st = h_stream_new(7);
	uint64_t t0, stalled, el;
	const char *line;

	t0 = h_now_ms();
	fd = h_connect_ok(lis);
	h_assert(h_send_until_stalled(fd, 300, st),
	    "%zu MiB went to a server that reads nothing", st->sent >> 20);
	stalled = h_now_ms();
	check_parked_pipes(d, base);
	line = h_wait_log(d, 4 * H_WAIT_MS, "event=idle_timeout",
	    "upstream=api", "idle_ms=1000");
	el = h_now_ms() - stalled;
	h_assert(line != NULL, "a stalled relay was not closed within %llu ms",
	    (unsigned long long)el);
	/*
	 * The daemon's last bytes moved some time before the client saw its
	 * writes stall; all that is sure is that they moved after t0.
	 */
	h_assert(h_now_ms() - t0 >= 1000,
	    "the relay was closed %llu ms after it began",
	    (unsigned long long)(h_now_ms() - t0));
	atomic_store(&srv->go, true);
	h_assert(script_wait(srv, H_WAIT_MS), "the server side stayed open");
	h_assert(srv->end == H_OUT_EOF || srv->end == H_OUT_RESET,
	    "the server saw %s", h_outcome_name(srv->end));
	now = h_daemon_fds_named(d, "pipe:") - base;
	h_assert(now == 0, "%d pipe descriptors after the idle close", now);
	close(fd);
	script_finish(srv);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* An echo server for many connections at once: one thread, epoll. */
struct many_echo {
	int lfd, ep, stop[2];
	char addr[64];
	pthread_t thread;
};

/* One connection of the echo: a read not yet written back. */
struct echo_conn {
	int fd;
	char buf[65536];
	size_t off, len;
};

/* Echo every connection until told to stop. */
static void *
many_echo_main(void *arg)
{
	struct many_echo *e = arg;
	struct epoll_event ev, evs[64];
	struct echo_conn *c;
	ssize_t n;
	int i, k, fd;

	for (;;) {
		k = epoll_wait(e->ep, evs, 64, 1000);
		for (i = 0; i < k; i++) {
			if (evs[i].data.ptr == NULL)
				return NULL; /* the stop pipe */
			if (evs[i].data.ptr == e) {
				while (
				    (fd = accept4(e->lfd, NULL, NULL,
					 SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
					c = calloc(1, sizeof(*c));
					if (c == NULL)
						abort();
					c->fd = fd;
					ev.events = EPOLLIN;
					ev.data.ptr = c;
					epoll_ctl(e->ep, EPOLL_CTL_ADD, fd,
					    &ev);
				}
				continue;
			}
			c = evs[i].data.ptr;
			if (c->len == 0) {
				n = recv(c->fd, c->buf, sizeof(c->buf), 0);
				if (n == -1 && errno == EAGAIN)
					continue;
				if (n <= 0) {
					close(c->fd); /* also leaves epoll */
					free(c);
					continue;
				}
				c->off = 0;
				c->len = (size_t)n;
			}
			n = send(c->fd, c->buf + c->off, c->len - c->off,
			    MSG_NOSIGNAL);
			if (n > 0)
				c->off += (size_t)n;
			else if (n == -1 && errno != EAGAIN) {
				close(c->fd);
				free(c);
				continue;
			}
			ev.data.ptr = c;
			if (c->off == c->len) {
				c->len = 0;
				ev.events = EPOLLIN;
			} else
				ev.events = EPOLLOUT;
			epoll_ctl(e->ep, EPOLL_CTL_MOD, c->fd, &ev);
		}
	}
}

/* Start the echo server on 127.0.0.1. */
static struct many_echo *
many_echo_start(void)
{
	struct many_echo *e = calloc(1, sizeof(*e));
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct epoll_event ev = { .events = EPOLLIN };
	socklen_t len = sizeof(sin);

	h_assert(e != NULL, "malloc");
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	h_assert(e->lfd != -1 &&
		bind(e->lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
		listen(e->lfd, 4096) == 0 &&
		getsockname(e->lfd, (struct sockaddr *)&sin, &len) == 0 &&
		(e->ep = epoll_create1(EPOLL_CLOEXEC)) != -1 &&
		pipe(e->stop) == 0,
	    "echo server: %s", strerror(errno));
	snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%u", ntohs(sin.sin_port));
	ev.data.ptr = e;
	epoll_ctl(e->ep, EPOLL_CTL_ADD, e->lfd, &ev);
	ev.data.ptr = NULL;
	epoll_ctl(e->ep, EPOLL_CTL_ADD, e->stop[0], &ev);
	h_assert(pthread_create(&e->thread, NULL, many_echo_main, e) == 0,
	    "thread");
	return e;
}

/* Stop the echo server (connections left open are the test's leak). */
static void
many_echo_stop(struct many_echo *e)
{
	(void)write(e->stop[1], "x", 1);
	pthread_join(e->thread, NULL);
	close(e->lfd);
	close(e->ep);
	close(e->stop[0]);
	close(e->stop[1]);
	free(e);
}

/* One of many clients: its stream out and back. */
struct many_client {
	int fd;
	char chunk[65536]; /* being sent: pending bytes from off */
	size_t off, pending;
	size_t sent, got;
	struct h_rand out, back;
	bool shut;
};

/* Raise our own descriptor limit to n if we may; false if we cannot. */
static bool
raise_nofile(rlim_t n)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return false;
	if (rl.rlim_cur >= n)
		return true;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < n)
		return false;
	rl.rlim_cur = n;
	return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* Move the clients' bytes once: what can be sent, what can be read. */
static void
many_step(struct many_client *c, unsigned n, struct pollfd *pfd, char *buf,
    char *want, unsigned *finished)
{
	size_t len;
	ssize_t k;
	unsigned i;

	for (i = 0; i < n; i++) {
		if (pfd[i].fd == -1 || pfd[i].revents == 0)
			continue;
		if ((pfd[i].revents & POLLOUT) && c[i].sent < MANY_LEN) {
			if (c[i].pending == 0) {
				len = MANY_LEN - c[i].sent < 65536
				    ? MANY_LEN - c[i].sent
				    : 65536;
				h_rand_fill(&c[i].out, c[i].chunk, len);
				c[i].pending = len;
				c[i].off = 0;
			}
			k = send(c[i].fd, c[i].chunk + c[i].off, c[i].pending,
			    MSG_NOSIGNAL);
			h_assert(k > 0 || errno == EAGAIN,
			    "client %u: send: %s", i, strerror(errno));
			if (k > 0) {
				c[i].off += (size_t)k;
				c[i].pending -= (size_t)k;
				c[i].sent += (size_t)k;
			}
		}
		if (c[i].sent == MANY_LEN && !c[i].shut) {
			shutdown(c[i].fd, SHUT_WR);
			c[i].shut = true;
		}
		if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		k = recv(c[i].fd, buf, 65536, 0);
		if (k == -1 && errno == EAGAIN)
			continue;
		h_assert(k >= 0, "client %u: %s after %zu bytes", i,
		    strerror(errno), c[i].got);
		if (k == 0) {
			h_assert(c[i].got == MANY_LEN,
			    "client %u: EOF after %zu of %u bytes", i, c[i].got,
			    MANY_LEN);
			close(c[i].fd);
			c[i].fd = -1;
			(*finished)++;
			continue;
		}
		h_rand_fill(&c[i].back, want, (size_t)k);
		h_assert(memcmp(buf, want, (size_t)k) == 0,
		    "client %u: wrong bytes after %zu", i, c[i].got);
		c[i].got += (size_t)k;
	}
}

/*
 * A thousand bulk relays at once (100 under a wrapper), each sending
 * 256 KiB to an echo server and reading it back: every stream comes back
 * whole, and the daemon never holds more pipes than its pool allows.
 */
START_TEST(relay_many_bulk)
{
	struct many_echo *echo;
	const char *lis = h_free_addr4();
	struct h_opts opts = { .nofile = 8192 };
	struct h_daemon *d;
	unsigned n = MANY_RELAYS, i, finished = 0;
	struct many_client *c;
	struct pollfd *pfd;
	char *buf, *want;
	int base, now, most = 0;
	uint64_t deadline;

	if (!raise_nofile(2 * n + 256))
		h_skip("needs %u descriptors (RLIMIT_NOFILE hard limit)",
		    2 * n + 256);
	c = calloc(n, sizeof(*c));
	pfd = calloc(n, sizeof(*pfd));
	buf = malloc(65536);
	want = malloc(65536);
	h_assert(c != NULL && pfd != NULL && buf != NULL && want != NULL,
	    "malloc");
	echo = many_echo_start();
	d = h_daemon_start_opts(&opts,
	    h_config_api("info", lis, echo->addr, ""));
	base = h_daemon_fds_named(d, "pipe:");
	for (i = 0; i < n; i++) {
		c[i].fd = h_connect_ok(lis);
		h_rand_init(&c[i].out, 1000 + i);
		h_rand_init(&c[i].back, 1000 + i);
	}
	deadline = h_now_ms() + 6 * H_WAIT_MS;
	while (finished < n) {
		h_assert(h_now_ms() < deadline,
		    "%u of %u relays finished in %d ms", finished, n,
		    6 * H_WAIT_MS);
		for (i = 0; i < n; i++) {
			pfd[i].fd = c[i].fd;
			pfd[i].events = POLLIN;
			if (c[i].sent < MANY_LEN)
				pfd[i].events |= POLLOUT;
		}
		if (poll(pfd, n, 100) > 0)
			many_step(c, n, pfd, buf, want, &finished);
		now = h_daemon_fds_named(d, "pipe:") - base;
		if (now > most)
			most = now;
	}
	h_assert(most <= 2 * POOL_MAX, "the daemon held %d pipes at once",
	    most / 2);
	if (strcmp(h_splice_mode(), "off") == 0)
		h_assert(most == 0, "%d pipes with splice = off", most / 2);
	else
		h_assert(most > 0, "no relay ever spliced");
	printf("relay_many_bulk: splice=%s: at most %d pipes for %u relays\n",
	    h_splice_mode(), most / 2, n);
	h_assert(h_daemon_stop(d) == 0, "exit status");
	many_echo_stop(echo);
	free(c);
	free(pfd);
	free(buf);
	free(want);
}
END_TEST

/*
 * No pipe is held by an idle relay (SPEC 8): IDLE_RELAYS relays each move
 * 256 KiB both ways (a bulk flow, spliced unless splice = off), then sit
 * idle, still open. The daemon then holds no more pipes than its pool
 * keeps empty for later (PIPE_KEEP), not one per relay and direction.
 */
START_TEST(relay_idle_relays_hold_no_pipe)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	struct h_daemon *d =
	    h_daemon_start(h_config_api("info", lis, h_backend_addr(echo), ""));
	char *buf = malloc(65536), *back = malloc(65536);
	int fds[IDLE_RELAYS], i, k, base, held;
	uint64_t deadline;

	h_assert(buf != NULL && back != NULL, "malloc");
	if ((base = h_daemon_fds_named(d, "pipe:")) < 0)
		h_skip("the daemon's descriptors are not readable here");
	for (i = 0; i < IDLE_RELAYS; i++) {
		fds[i] = h_connect_ok(lis);
		for (k = 0; k < 4; k++) {
			memset(buf, 'a' + k, 65536);
			h_assert(h_send_all(fds[i], buf, 65536, H_WAIT_MS) ==
				    0 &&
				h_recv_exact(fds[i], back, 65536, H_WAIT_MS) ==
				    H_OUT_DATA &&
				memcmp(buf, back, 65536) == 0,
			    "relay %d, chunk %d", i, k);
		}
	}
	/* The last steps may still be giving their pipes back. */
	deadline = h_now_ms() + 2000;
	do {
		held = (h_daemon_fds_named(d, "pipe:") - base) / 2;
		if (held <= PIPE_KEEP)
			break;
		poll(NULL, 0, 50);
	} while (h_now_ms() < deadline);
	h_assert(held <= PIPE_KEEP, "%d idle relays hold %d pipes", IDLE_RELAYS,
	    held);
	if (strcmp(h_splice_mode(), "off") == 0)
		h_assert(held == 0, "%d pipes with splice = off", held);
	printf("relay_idle_relays_hold_no_pipe: splice=%s: %d pipes for %d "
	       "idle relays\n",
	    h_splice_mode(), held, IDLE_RELAYS);
	for (i = 0; i < IDLE_RELAYS; i++)
		close(fds[i]);
	free(buf);
	free(back);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* Relays the daemon has descriptors for in the shortage story. */
#define FD_ROOM 8

/*
 * Out of descriptors: a daemon whose descriptors are all taken by relays
 * but one (the next client is turned away or waits in the backlog) cannot
 * make a pipe; a bulk stream on a relay it has is then copied, not
 * failed: 1 MiB each way comes back whole.
 */
START_TEST(relay_out_of_fds)
{
	struct h_backend *echo = h_backend(H_ECHO);
	const char *lis = h_free_addr4();
	const char *config =
	    h_config_api("info", lis, h_backend_addr(echo), "");
	struct h_daemon *probe = h_daemon_start(config), *d;
	struct sender snd = { .seed = 21, .chunks = 22, .shut = false };
	struct h_opts opts = { 0 };
	int fds[FD_ROOM], extra, used, i;
	enum h_outcome out;
	pthread_t t;
	size_t got, mark;

	used = h_daemon_nfds_settled(probe);
	h_assert(used > 0, "cannot count the daemon's descriptors");
	h_assert(h_daemon_stop(probe) == 0, "exit status");
	/* One spare: a notification may take a socket for a moment. */
	opts.nofile = (unsigned)used + 2 * FD_ROOM + 1;
	d = h_daemon_start_opts(&opts, config);
	for (i = 0; i < FD_ROOM; i++) {
		fds[i] = h_connect_ok(lis);
		h_assert(h_backend_wait_accepted(echo, (unsigned)i + 1,
			     H_WAIT_MS),
		    "relay %d of %d", i + 1, FD_ROOM);
	}
	mark = h_log_mark(d);
	/* Turned away (no socket for its server) or left in the backlog. */
	extra = h_connect(lis, H_WAIT_MS);
	h_expect_log_after(d, mark, H_WAIT_MS, "event=accept_paused",
	    "error=EMFILE");

	snd.len = 1u << 20;
	snd.fd = fds[0];
	h_assert(pthread_create(&t, NULL, sender_main, &snd) == 0, "thread");
	got = recv_stream(fds[0], 21, snd.len, 23, 3 * H_WAIT_MS, &out);
	pthread_join(t, NULL);
	h_assert(snd.err == 0, "sending: %s", strerror(snd.err));
	h_assert(got == snd.len,
	    "%zu of %zu bytes came back right out of descriptors, then %s", got,
	    snd.len, h_outcome_name(out));
	h_assert(h_daemon_running(d), "the daemon died out of descriptors");
	for (i = 0; i < FD_ROOM; i++)
		close(fds[i]);
	if (extra != -1)
		close(extra);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* The suite: the relay stories, run once per relay path. */
/*
 * A client that writes until the server answers and closes (as Redis's
 * "Protocol desync" test does): it sends prefix, then chunk after chunk,
 * reading all along, until an end (EOF or reset) or ms. True if it read
 * the whole answer, starting with want, before the end.
 */
static bool
last_words_heard(const char *addr, const char *prefix, const char *want, int ms)
{
	static char chunk[65536];
	uint64_t deadline = h_now_ms() + (uint64_t)ms;
	char buf[4096], got[256];
	size_t glen = 0;
	bool writing = true;
	struct pollfd pfd;
	ssize_t n;
	int fd;

	if ((fd = h_connect(addr, H_WAIT_MS)) == -1)
		return false;
	memset(chunk, 'A', sizeof(chunk));
	if (h_send_all(fd, prefix, strlen(prefix), H_WAIT_MS) != 0)
		writing = false;
	while (h_now_ms() < deadline) {
		if (writing) {
			n = send(fd, chunk, sizeof(chunk), MSG_NOSIGNAL);
			if (n == -1 && errno != EAGAIN && errno != EINTR)
				writing = false;
		}
		pfd.fd = fd;
		pfd.events = POLLIN | (writing ? POLLOUT : 0);
		poll(&pfd, 1, 10);
		n = recv(fd, buf, sizeof(buf), 0);
		if (n > 0) {
			if ((size_t)n > sizeof(got) - glen)
				n = (ssize_t)(sizeof(got) - glen);
			memcpy(got + glen, buf, (size_t)n);
			glen += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			break;
	}
	close(fd);
	return glen >= strlen(want) && memcmp(got, want, strlen(want)) == 0;
}

/*
 * A server's last words: the client keeps writing, the server reads once,
 * answers with an error and closes (a reset, as it leaves bytes unread).
 * Direct, the client reads the answer LAST_WORDS_TRIES times of as many;
 * through the daemon too, on every relay path: the answer waiting on the
 * server socket is delivered before the client is reset, whichever side
 * the daemon noticed first.
 */
START_TEST(relay_server_last_words)
{
	static const char answer[] = "-ERR Protocol error: unbalanced\r\n";
	struct h_backend *srv = h_backend(H_LAST_WORDS);
	const char *lis = h_free_addr4();
	struct h_daemon *d;
	unsigned i, direct = 0, proxied = 0;

	h_backend_set_banner(srv, answer);
	d = h_daemon_start(h_config_api("info", lis, h_backend_addr(srv), ""));
	for (i = 0; i < LAST_WORDS_TRIES; i++) {
		direct += last_words_heard(h_backend_addr(srv), "", answer,
		    H_WAIT_MS);
		proxied += last_words_heard(lis, "", answer, H_WAIT_MS);
	}
	fprintf(stderr,
	    "last words (splice %s): %u/%u direct, %u/%u through "
	    "circuitproxyd\n",
	    h_splice_mode(), direct, LAST_WORDS_TRIES, proxied,
	    LAST_WORDS_TRIES);
	h_assert(direct == LAST_WORDS_TRIES, "direct, %u of %u answers read",
	    direct, LAST_WORDS_TRIES);
	h_assert(proxied == LAST_WORDS_TRIES,
	    "through the daemon, %u of %u answers read (direct: %u)", proxied,
	    LAST_WORDS_TRIES, direct);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

/* Stop the redis-server whose pidfile this is. */
static void
redis_stop(void *arg)
{
	FILE *f = fopen(arg, "r");
	int pid = 0;

	if (f == NULL)
		return;
	if (fscanf(f, "%d", &pid) == 1 && pid > 1)
		kill(pid, SIGKILL);
	fclose(f);
}

/*
 * Redis's "Protocol desync regression test" through the daemon: a client
 * sends a NUL byte, then an inline request without end; redis-server
 * answers "-ERR Protocol error: too big inline request" and closes while
 * the client still writes. The client reads that error every time, direct
 * and through the daemon.
 */
START_TEST(relay_redis_protocol_desync)
{
	const char *redis = h_client("redis-server");
	const char *srv = h_free_addr4(), *lis = h_free_addr4();
	const char *pidfile = h_path("redis.pid");
	static const char want[] = "-ERR Protocol error";
	uint64_t deadline;
	unsigned i, direct = 0, proxied = 0;
	struct h_daemon *d;
	struct h_run r;
	int fd = -1;

	if (redis == NULL)
		h_skip("redis-server is not installed (apt-get install "
		       "redis-server)");
	h_exec(&r, redis, "--port", strchr(srv, ':') + 1, "--bind", "127.0.0.1",
	    "--save", "", "--appendonly", "no", "--daemonize", "yes",
	    "--pidfile", pidfile, "--dir", h_tmpdir(), "--logfile",
	    h_path("redis.log"));
	h_assert(r.status == 0, "redis-server: %s%s", r.out, r.err);
	h_defer(redis_stop, (void *)pidfile);
	for (deadline = h_now_ms() + H_WAIT_MS;
	     h_now_ms() < deadline && (fd = h_connect(srv, 100)) == -1;)
		poll(NULL, 0, 20);
	h_assert(fd != -1, "redis-server does not listen on %s", srv);
	close(fd);
	d = h_daemon_start(h_config_api("info", lis, srv, ""));
	for (i = 0; i < REDIS_TRIES; i++) {
		direct += last_words_heard(srv, "\x01", want, H_WAIT_MS);
		proxied += last_words_heard(lis, "\x01", want, H_WAIT_MS);
	}
	fprintf(stderr,
	    "redis protocol desync (splice %s): %u/%u direct, %u/%u "
	    "through circuitproxyd\n",
	    h_splice_mode(), direct, REDIS_TRIES, proxied, REDIS_TRIES);
	h_assert(direct == REDIS_TRIES, "direct, %u of %u errors read", direct,
	    REDIS_TRIES);
	h_assert(proxied == REDIS_TRIES,
	    "through the daemon, %u of %u errors read (direct: %u)", proxied,
	    REDIS_TRIES, direct);
	h_assert(h_daemon_stop(d) == 0, "exit status");
}
END_TEST

static Suite *
relay_suite(void)
{
	Suite *s = suite_create("relay");

	H_TEST(s, relay_stream_integrity);
	H_TEST(s, relay_half_close_client_first);
	H_TEST(s, relay_half_close_server_first);
	H_TEST(s, relay_client_never_reads);
	H_TEST(s, relay_server_never_reads);
	H_TEST(s, relay_client_resets_mid_transfer);
	H_TEST(s, relay_server_resets_mid_transfer);
	H_TEST(s, relay_server_last_words);
	H_TEST(s, relay_redis_protocol_desync);
	H_TEST(s, relay_idle_timeout_parked);
	H_TEST(s, relay_many_bulk);
	H_TEST(s, relay_idle_relays_hold_no_pipe);
	H_TEST(s, relay_out_of_fds);
	return s;
}

H_MAIN_MODES(relay_suite)
