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

int
main(int argc, char **argv)
{
	static const struct option longopts[] = { { "config", required_argument,
						      NULL, 'c' },
		{ "test", no_argument, NULL, 't' },
		{ "dump", no_argument, NULL, 'T' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
	const char *path = CP_CONFIG_PATH, *pidfile = NULL;
	struct config_errors errs = { NULL, 0 };
	enum log_level level = LOG_LEVEL_INFO;
	int ch, test = 0, dump = 0, level_set = 0, to_syslog, status;
	struct config *conf;
	struct daemon *d;
	char *cause = NULL, q[1024];

	main_std_fds_open();
	while ((ch = getopt_long(argc, argv, "c:tTl:p:Vh", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'T':
			test = dump = 1;
			break;
		case 'l':
			if (log_level_parse(optarg, &level) != 0) {
				fprintf(stderr,
				    "circuitproxyd: unknown log level '%s' "
				    "(debug|info|notice|warning|error)\n",
				    optarg);
				return EX_USAGE;
			}
			level_set = 1;
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 'V':
			printf("circuitproxyd %s\n", PACKAGE_VERSION);
			return 0;
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

	conf = config_load(path, &errs);
	if (conf == NULL) {
		/* The journal files them as errors (systemctl reload). */
		for (size_t i = 0; i < errs.n; i++)
			fprintf(stderr, "%s%s\n",
			    log_stderr_prefix(LOG_LEVEL_ERROR), errs.v[i].msg);
		config_errors_clear(&errs);
		return EX_CONFIG;
	}
	if (test) {
		if (conf->world_writable)
			fprintf(stderr,
			    "%s%s: warning: the file is world-writable: any "
			    "local user can change what the proxy does "
			    "(chmod o-w)\n",
			    log_stderr_prefix(LOG_LEVEL_WARNING), path);
		if (conf->secret_readable)
			fprintf(stderr,
			    "%s%s: warning: the file holds admin_token and "
			    "others may read it: keep the token in "
			    "admin_token_file or a credential, or chmod "
			    "go-r\n",
			    log_stderr_prefix(LOG_LEVEL_WARNING), path);
		/* A name that does not resolve is a warning (SPEC 3). */
		resolve_check(conf, stderr);
		/* With -T, stdout is the config alone (a valid file). */
		fprintf(dump ? stderr : stdout, "%s: ok\n", path);
		if (dump)
			config_dump(conf, stdout);
		config_free(conf);
		return 0;
	}

	to_syslog = conf->log_target == LOG_TARGET_SYSLOG;
	log_init(level_set ? level : conf->log_level, conf->log_target);
	if (daemon_start(&d, conf, path, level_set ? (int)level : -1, pidfile,
		&cause) != 0) {
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
