/*
 * circuitproxyd: the command line, start-up and exit codes (SPEC.md 2).
 * It always runs in the foreground; a supervisor keeps it running.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "resolve.h"

/* How long the last log lines may wait for a stalled sink at exit. */
#define LOG_CLOSE_MS 2000

#ifndef CP_CONFIG_PATH
#define CP_CONFIG_PATH "/etc/circuitproxy.ini"
#endif

static const char usage_text[] =
    "usage: circuitproxyd [-c FILE] [-t] [-T] [-l LEVEL] [-p PIDFILE] [-V] "
    "[-h]\n"
    "  -c, --config FILE      config file (default: " CP_CONFIG_PATH ")\n"
    "  -t, --test             check the config and exit\n"
    "  -T, --dump             check it, then print it as the daemon reads "
    "it:\n"
    "                         every key, defaults included, and where it "
    "came from\n"
    "  -l, --log-level LEVEL  debug|info|notice|warning|error\n"
    "  -p, --pidfile FILE     write the pid there; removed on clean exit\n"
    "  -V, --version          print the version and exit\n"
    "  -h, --help             print this help and exit\n";

/* Print the usage to a stream and exit with a status. */
static void __attribute__((noreturn)) usage(FILE *f, int status)
{
	fputs(usage_text, f);
	exit(status);
}

/*
 * Open /dev/null on whichever of descriptors 0-2 is closed, so that the
 * first descriptors the daemon opens (libevent's signal pipe, a listener)
 * do not take their numbers and receive what is written to stderr.
 */
static void
main_std_fds_open(void)
{
	int fd, nul;

	for (fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		if ((nul = open("/dev/null", O_RDWR)) == -1)
			exit(EX_OSERR);
		/* Not fd itself if a wrapper keeps a low descriptor. */
		if (nul != fd) {
			if (dup2(nul, fd) == -1)
				exit(EX_OSERR);
			close(nul);
		}
	}
}

/* What the command line asks for. */
struct main_opts {
	const char *path;    /* -c */
	const char *pidfile; /* -p, or NULL */
	enum log_level level;
	int level_set; /* -l given */
	int test;      /* -t or -T */
	int dump;      /* -T */
};

/* Read the command line; -V, -h and a usage error exit here. */
static void
main_options(int argc, char **argv, struct main_opts *o)
{
	static const struct option longopts[] = { { "config", required_argument,
						      NULL, 'c' },
		{ "test", no_argument, NULL, 't' },
		{ "dump", no_argument, NULL, 'T' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
	int ch;

	while ((ch = getopt_long(argc, argv, "c:tTl:p:Vh", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			o->path = optarg;
			break;
		case 't':
			o->test = 1;
			break;
		case 'T':
			o->test = o->dump = 1;
			break;
		case 'l':
			if (log_level_parse(optarg, &o->level) != 0) {
				fprintf(stderr,
				    "circuitproxyd: unknown log level '%s' "
				    "(debug|info|notice|warning|error)\n",
				    optarg);
				exit(EX_USAGE);
			}
			o->level_set = 1;
			break;
		case 'p':
			o->pidfile = optarg;
			break;
		case 'V':
			printf("circuitproxyd %s\n", PACKAGE_VERSION);
			exit(0);
		case 'h':
			usage(stdout, 0);
		default:
			usage(stderr, EX_USAGE);
		}
	}
	if (optind != argc) {
		fprintf(stderr, "circuitproxyd: unexpected argument '%s'\n",
		    argv[optind]);
		usage(stderr, EX_USAGE);
	}
}

/* -t and -T: say what the check found (and print the config); exit 0. */
static int
main_test(struct config *conf, const struct main_opts *o)
{
	if (conf->world_writable)
		fprintf(stderr,
		    "%s%s: warning: the file is world-writable: any "
		    "local user can change what the proxy does "
		    "(chmod o-w)\n",
		    log_stderr_prefix(LOG_LEVEL_WARNING), o->path);
	if (conf->secret_readable)
		fprintf(stderr,
		    "%s%s: warning: the file holds admin_token and "
		    "others may read it: keep the token in "
		    "admin_token_file or a credential, or chmod "
		    "go-r\n",
		    log_stderr_prefix(LOG_LEVEL_WARNING), o->path);
	/* A name that does not resolve is a warning (SPEC 3). */
	resolve_check(conf, stderr);
	/* With -T, stdout is the config alone (a valid file). */
	fprintf(o->dump ? stderr : stdout, "%s: ok\n", o->path);
	if (o->dump)
		config_dump(conf, stdout);
	config_free(conf);
	return 0;
}

/* Start the daemon and run it until it stops: the exit status. */
static int
main_run(struct config *conf, const struct main_opts *o)
{
	int to_syslog = conf->log_target == LOG_TARGET_SYSLOG, status;
	char *cause = NULL, q[1024];
	struct daemon *d;

	log_init(o->level_set ? o->level : conf->log_level, conf->log_target);
	if (daemon_start(&d, conf, o->path, o->level_set ? (int)o->level : -1,
		o->pidfile, &cause) != 0) {
		log_errorx("event=exit status=1 error=%s",
		    log_quote(q, sizeof(q), cause));
		/* Whoever started it from a shell sees why, syslog or not. */
		if (to_syslog)
			fprintf(stderr, "circuitproxyd: %s\n", cause);
		free(cause);
		log_close(LOG_CLOSE_MS);
		return 1;
	}
	status = daemon_run(d);
	daemon_free(d);
	log_close(LOG_CLOSE_MS);
	return status;
}

/* The command line, the config, then a check or the daemon. */
int
main(int argc, char **argv)
{
	struct main_opts o = { CP_CONFIG_PATH, NULL, LOG_LEVEL_INFO, 0, 0, 0 };
	struct config_errors errs = { NULL, 0 };
	struct config *conf;

	main_std_fds_open();
	main_options(argc, argv, &o);
	conf = config_load(o.path, &errs);
	if (conf == NULL) {
		/* The journal files them as errors (systemctl reload). */
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s%s\n",
			    log_stderr_prefix(LOG_LEVEL_ERROR), errs.v[i].msg);
		config_errors_clear(&errs);
		return EX_CONFIG;
	}
	if (o.test)
		return main_test(conf, &o);
	return main_run(conf, &o);
}
