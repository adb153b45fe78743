/*
 * hs-db-bench: what each query costs uncached (no memcached, one
 * connection, random ids), for sizing the database tier.  Read-only unless
 * --writes is given.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "hs_hist.h"
#include "hs_util.h"

struct bench_cfg {
	const char *path;
	int n, rounds, writes;
};

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: hs-db-bench --db PATH [--n N] [--rounds R] [--writes]\n"
		"\n"
		"Times N calls of each query with random ids on one connection,\n"
		"R rounds, and prints mean / p50 / p99 per query in microseconds.\n"
		"\n"
		"  -d, --db PATH    a seeded database (required)\n"
		"  -n, --n N        calls per query per round (default 2000)\n"
		"  -r, --rounds R   rounds (default 3)\n"
		"  -w, --writes     also time updates and review inserts (modifies PATH)\n"
		"  -h, --help       this text\n");
}

static int
parse_args(int argc, char **argv, struct bench_cfg *cfg)
{
	static const struct option opts[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "n", required_argument, NULL, 'n' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "writes", no_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":d:n:r:wh", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			cfg->path = optarg;
			break;
		case 'n':
			if (hs_parse_int(optarg, 1, 10000000, &cfg->n) != 0) {
				fprintf(stderr, "hs-db-bench: bad --n '%s'\n", optarg);
				return 2;
			}
			break;
		case 'r':
			if (hs_parse_int(optarg, 1, 1000, &cfg->rounds) != 0) {
				fprintf(stderr, "hs-db-bench: bad --rounds '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'w':
			cfg->writes = 1;
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			fprintf(stderr, "hs-db-bench: bad option '%s' (see --help)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc || cfg->path == NULL) {
		fprintf(stderr, "hs-db-bench: --db PATH is required (see --help)\n");
		return 2;
	}
	return 0;
}

static uint64_t
bench_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

enum { Q_DETAIL, Q_TOP, Q_WORLD, Q_UPDATE, Q_REVIEW, Q_N };
static const char *const qnames[Q_N] = {
	"product_detail", "category_top", "world_get", "product_update",
	"review_add",
};

static int
bench_one(struct db *db, int q, const struct db_counts *cnt, uint64_t *rs)
{
	struct db_product_detail d;
	struct db_category_top t;
	struct db_product_change c = { .has_stock = 1 };
	struct db_product p;
	struct db_review r;
	int64_t pid = 1 + (int64_t)(bench_rand(rs) % (uint64_t)cnt->products);
	int64_t cat;
	int32_t num;

	switch (q) {
	case Q_DETAIL:
		return db_product_detail(db, pid, &d);
	case Q_TOP:
		return db_category_top(db, 1 + (int64_t)(bench_rand(rs) %
					(uint64_t)cnt->categories), &t);
	case Q_WORLD:
		return db_world_get(db, 1 + (int32_t)(bench_rand(rs) % 10000), &num);
	case Q_UPDATE:
		c.stock = (int64_t)(bench_rand(rs) % 500);
		return db_product_update(db, pid, &c, &p);
	default:
		return db_review_add(db, pid, 1 + (int)(bench_rand(rs) % 5),
				     "bench review", &r, &cat);
	}
}

int
main(int argc, char **argv)
{
	struct bench_cfg cfg = { .n = 2000, .rounds = 3 };
	struct db_counts cnt;
	struct hs_hist *h;
	struct db *db;
	uint64_t rs = 0x9e3779b97f4a7c15ull, t0, dt, wall;
	char err[512];
	int rc, q, round, i, nq, misses;

	if ((rc = parse_args(argc, argv, &cfg)) != 0)
		return rc == 1 ? 0 : 2;
	if ((db = db_open(cfg.path, 0, 0, err, sizeof(err))) == NULL) {
		fprintf(stderr, "hs-db-bench: %s\n", err);
		return 1;
	}
	if (db_counts(db, &cnt) != DB_OK || cnt.products < 1 ||
	    cnt.categories < 1) {
		fprintf(stderr, "hs-db-bench: %s is empty\n", cfg.path);
		db_close(db);
		return 1;
	}
	printf("%lld categories, %lld products, %lld reviews\n",
	       (long long)cnt.categories, (long long)cnt.products,
	       (long long)cnt.reviews);
	nq = cfg.writes ? Q_N : Q_UPDATE;
	h = hs_xcalloc(1, sizeof(*h));
	for (round = 1; round <= cfg.rounds; round++) {
		for (q = 0; q < nq; q++) {
			memset(h, 0, sizeof(*h));
			misses = 0;
			wall = hs_now_ns();
			for (i = 0; i < cfg.n; i++) {
				t0 = hs_now_ns();
				rc = bench_one(db, q, &cnt, &rs);
				dt = hs_now_ns() - t0;
				if (rc == DB_NOTFOUND) {
					misses++;
				} else if (rc != DB_OK) {
					fprintf(stderr, "hs-db-bench: %s: %s\n",
						qnames[q], db_errmsg(db));
					goto out;
				}
				hs_hist_record(h, dt / 1000);
			}
			wall = hs_now_ns() - wall;
			printf("round %d %-15s n=%d mean=%.1fus p50=%lluus "
			       "p99=%lluus max=%lluus %.0f/s%s\n", round,
			       qnames[q], cfg.n, (double)wall / 1000.0 / cfg.n,
			       (unsigned long long)hs_hist_quantile(h, 0.5),
			       (unsigned long long)hs_hist_quantile(h, 0.99),
			       (unsigned long long)h->max_us,
			       cfg.n / ((double)wall / 1e9),
			       misses ? " (some ids missing)" : "");
		}
	}
	rc = 0;
out:
	free(h);
	db_close(db);
	return rc == 0 ? 0 : 1;
}
