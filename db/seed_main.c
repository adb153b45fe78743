/*
 * hs-seed: creates and seeds a hammerstack database file (see
 * db_seed_file()).  Progress goes to stderr, the final counts and the time
 * taken to stdout.
 */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "hs_util.h"

struct seed_cfg {
	const char *path;
	double scale;
	uint64_t seed;
	int force, quiet;
};

/* Progress state: a single rewritten line on a terminal, else sparse lines. */
struct seed_progress {
	int tty;
	char phase[64];
	int last_tenth;
};

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: hs-seed --db PATH|URL [--scale S] [--seed N] [--force] [--quiet]\n"
		"\n"
		"Creates the SQLite database at PATH, or the tables of the PostgreSQL\n"
		"database at URL (postgres://USER@HOST:PORT/DB), and fills it with\n"
		"deterministic data: at scale S, 100*S categories, 100000*S products,\n"
		"1000000*S reviews, and 10000 world rows (the same rows in both).\n"
		"\n"
		"  -d, --db PATH    database file or URL to create (required)\n"
		"  -s, --scale S    data size, 0 < S <= 1000 (default 1.0)\n"
		"  -S, --seed N     PRNG seed, 0 = the fixed default (default 0)\n"
		"  -f, --force      replace PATH if it exists (running servers refuse\n"
		"                   writes to the old file and reopen PATH)\n"
		"  -q, --quiet      no progress on stderr\n"
		"  -h, --help       this text\n");
}

/* Returns 0 to run, 1 to exit successfully (--help), 2 on a bad option. */
static int
parse_args(int argc, char **argv, struct seed_cfg *cfg)
{
	static const struct option opts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "scale", required_argument, NULL, 's' },
		{ "seed", required_argument, NULL, 'S' },
		{ "force", no_argument, NULL, 'f' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int64_t seed;
	int ch;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":d:s:S:fqh", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			cfg->path = optarg;
			break;
		case 's':
			if (hs_parse_double(optarg, 1e-9, 1000, &cfg->scale) !=
			    0) {
				fprintf(stderr,
					"hs-seed: bad --scale '%s' "
					"(a number, 0 < S <= 1000)\n",
					optarg);
				return 2;
			}
			break;
		case 'S':
			if (hs_parse_i64(optarg, 0, INT64_MAX, &seed) != 0) {
				fprintf(stderr,
					"hs-seed: bad --seed '%s' "
					"(a non-negative integer)\n",
					optarg);
				return 2;
			}
			cfg->seed = (uint64_t)seed;
			break;
		case 'f':
			cfg->force = 1;
			break;
		case 'q':
			cfg->quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return 1;
		case ':':
			fprintf(stderr,
				"hs-seed: option '%s' needs a value "
				"(see --help)\n",
				argv[optind - 1]);
			return 2;
		default:
			fprintf(stderr,
				"hs-seed: unknown option '%s' "
				"(see --help)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr,
			"hs-seed: unexpected argument '%s' (see --help)\n",
			argv[optind]);
		return 2;
	}
	if (cfg->path == NULL || cfg->path[0] == '\0') {
		fprintf(stderr,
			"hs-seed: --db PATH is required (see --help)\n");
		return 2;
	}
	return 0;
}

static void
on_progress(void *arg, const char *phase, double frac)
{
	struct seed_progress *p = arg;
	int tenth = (int)(frac * 10);

	if (p->tty) {
		fprintf(stderr, "\r%-24s %5.1f%%", phase, frac * 100);
		fflush(stderr);
		return;
	}
	if (strcmp(p->phase, phase) != 0) {
		snprintf(p->phase, sizeof(p->phase), "%s", phase);
		p->last_tenth = -1;
	}
	if (tenth != p->last_tenth) {
		p->last_tenth = tenth;
		fprintf(stderr, "hs-seed: %s %3.0f%%\n", phase, frac * 100);
	}
}

int
main(int argc, char **argv)
{
	struct seed_cfg cfg = { .scale = 1.0 };
	struct seed_progress prog = { .last_tenth = -1 };
	struct db_seed_opts o = { 0 };
	struct db_counts n;
	struct stat sb;
	struct db *db;
	uint64_t t0;
	double secs;
	char err[512];
	int rc;

	if ((rc = parse_args(argc, argv, &cfg)) != 0)
		return rc == 1 ? 0 : 2;
	if (!cfg.force && !db_is_url(cfg.path) && stat(cfg.path, &sb) == 0) {
		fprintf(stderr,
			"hs-seed: %s already exists (use --force to "
			"replace it)\n",
			cfg.path);
		return 1;
	}
	o.scale = cfg.scale;
	o.seed = cfg.seed;
	if (!cfg.quiet) {
		prog.tty = isatty(STDERR_FILENO);
		o.progress = on_progress;
		o.arg = &prog;
	}
	t0 = hs_now_ns();
	rc = cfg.force ? db_seed_file_replace(cfg.path, &o, err, sizeof(err))
		       : db_seed_file(cfg.path, &o, err, sizeof(err));
	secs = (double)(hs_now_ns() - t0) / 1e9;
	if (prog.tty)
		fputc('\n', stderr);
	if (rc != DB_OK) {
		fprintf(stderr, "hs-seed: %s\n", err);
		return 1;
	}
	if ((db = db_open(cfg.path, 0, 0, err, sizeof(err))) == NULL) {
		fprintf(stderr, "hs-seed: reopening %s: %s\n", cfg.path, err);
		return 1;
	}
	rc = db_counts(db, &n);
	if (rc != DB_OK) {
		fprintf(stderr, "hs-seed: counting rows: %s\n", db_errmsg(db));
		db_close(db);
		return 1;
	}
	db_close(db);
	printf("seeded %s: %lld categories, %lld products, %lld reviews, "
	       "%lld world rows in %.2f s",
	       cfg.path, (long long)n.categories, (long long)n.products,
	       (long long)n.reviews, (long long)n.world, secs);
	if (!db_is_url(cfg.path) && stat(cfg.path, &sb) == 0)
		printf(" (%.1f MiB)", (double)sb.st_size / 1048576.0);
	printf("\n");
	return 0;
}
