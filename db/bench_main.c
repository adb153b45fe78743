/*
 * hs-db-bench: what each query costs uncached (no memcached, one
 * connection, random ids), for sizing the database tier; and, with
 * --writers P, P processes writing the same few rows at once, to show
 * that writers queue (no DB_BUSY) and that no acknowledged write is lost.
 * Read-only unless --writes or --writers is given.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "hs_hist.h"
#include "hs_util.h"

struct bench_cfg {
	const char *path;
	int n, rounds, writes, writers;
};

#define HOT_PRODUCTS 10 /* the rows the --writers processes fight over */

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: hs-db-bench --db PATH [--n N] [--rounds R] [--writes]\n"
		"                   [--writers P]\n"
		"\n"
		"Times N calls of each query with random ids on one connection,\n"
		"R rounds, and prints mean / p50 / p99 per query in microseconds.\n"
		"\n"
		"  -d, --db PATH    a seeded database (required)\n"
		"  -n, --n N        calls per query per round (default 2000)\n"
		"  -r, --rounds R   rounds (default 3)\n"
		"  -w, --writes     also time updates and review inserts (modifies PATH)\n"
		"  -P, --writers P  then P processes each make N writes to 10 hot\n"
		"                   products at once; counts DB_BUSY, checks versions\n"
		"                   (modifies PATH)\n"
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
		{ "writers", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":d:n:r:wP:h", opts, NULL)) !=
	       -1) {
		switch (ch) {
		case 'd':
			cfg->path = optarg;
			break;
		case 'n':
			if (hs_parse_int(optarg, 1, 10000000, &cfg->n) != 0) {
				fprintf(stderr, "hs-db-bench: bad --n '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'r':
			if (hs_parse_int(optarg, 1, 1000, &cfg->rounds) != 0) {
				fprintf(stderr,
					"hs-db-bench: bad --rounds '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'w':
			cfg->writes = 1;
			break;
		case 'P':
			if (hs_parse_int(optarg, 1, 256, &cfg->writers) != 0) {
				fprintf(stderr,
					"hs-db-bench: bad --writers '%s' "
					"(1..256)\n",
					optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 1;
		default:
			fprintf(stderr,
				"hs-db-bench: bad option '%s' (see --help)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc || cfg->path == NULL) {
		fprintf(stderr,
			"hs-db-bench: --db PATH is required (see --help)\n");
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
	"product_detail", "category_top", "world_get",
	"product_update", "review_add",
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
		return db_category_top(db,
				       1 + (int64_t)(bench_rand(rs) %
						     (uint64_t)cnt->categories),
				       &t);
	case Q_WORLD:
		return db_world_get(db, 1 + (int32_t)(bench_rand(rs) % 10000),
				    &num);
	case Q_UPDATE:
		c.stock = (int64_t)(bench_rand(rs) % 500);
		return db_product_update(db, pid, &c, &p);
	default:
		return db_review_add(db, pid, 1 + (int)(bench_rand(rs) % 5),
				     "bench review", &r, &cat);
	}
}

struct writer_result {
	uint64_t acked, busy, errors;
	struct hs_hist h;
};

static int64_t
hot_versions(struct db *db)
{
	struct db_product_detail d;
	int64_t sum = 0, id;

	for (id = 1; id <= HOT_PRODUCTS; id++)
		if (db_product_detail(db, id, &d) == DB_OK)
			sum += d.product.version;
	return sum;
}

/* One writer process: n updates and reviews on the hot products. */
static void
writer_main(const struct bench_cfg *cfg, int which, struct writer_result *res)
{
	struct db_product_change c = { .has_stock = 1 };
	struct db_product p;
	struct db_review r;
	uint64_t rs = 0x2545f4914f6cdd1dull * (uint64_t)(which + 1), t0;
	int64_t cat, id;
	char err[512];
	struct db *db;
	int i, rc;

	if ((db = db_open(cfg->path, 0, 0, err, sizeof(err))) == NULL) {
		fprintf(stderr, "hs-db-bench: writer %d: %s\n", which, err);
		res->errors++;
		return;
	}
	for (i = 0; i < cfg->n; i++) {
		id = 1 + (int64_t)(bench_rand(&rs) % HOT_PRODUCTS);
		t0 = hs_now_ns();
		if (i % 2) {
			rc = db_review_add(db, id, 1 + i % 5, "writer", &r,
					   &cat);
		} else {
			c.stock = i;
			rc = db_product_update(db, id, &c, &p);
		}
		hs_hist_record(&res->h, (hs_now_ns() - t0) / 1000);
		if (rc == DB_OK)
			res->acked++;
		else if (rc == DB_BUSY)
			res->busy++;
		else
			res->errors++;
	}
	db_close(db);
}

static int
run_writers(const struct bench_cfg *cfg, struct db *db)
{
	size_t len = (size_t)cfg->writers * sizeof(struct writer_result);
	struct writer_result *res, tot;
	int64_t before, after;
	uint64_t wall;
	pid_t pid;
	int i, status, ok;

	res = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED) {
		perror("hs-db-bench: mmap");
		return -1;
	}
	before = hot_versions(db);
	wall = hs_now_ns();
	for (i = 0; i < cfg->writers; i++) {
		if ((pid = fork()) < 0) {
			perror("hs-db-bench: fork");
			break;
		}
		if (pid == 0) {
			writer_main(cfg, i, &res[i]);
			_exit(0);
		}
	}
	while (wait(&status) > 0)
		;
	wall = hs_now_ns() - wall;
	after = hot_versions(db);
	memset(&tot, 0, sizeof(tot));
	for (i = 0; i < cfg->writers; i++) {
		tot.acked += res[i].acked;
		tot.busy += res[i].busy;
		tot.errors += res[i].errors;
		hs_hist_merge(&tot.h, &res[i].h);
	}
	ok = tot.busy == 0 && tot.errors == 0 &&
	     after - before == (int64_t)tot.acked;
	printf("writers %d x %d on %d rows: %.2f s, %.0f writes/s, p50=%lluus "
	       "p99=%lluus max=%lluus, busy=%llu errors=%llu, version delta "
	       "%lld for %llu acknowledged writes: %s\n",
	       cfg->writers, cfg->n, HOT_PRODUCTS, (double)wall / 1e9,
	       (double)(tot.acked + tot.busy + tot.errors) /
		       ((double)wall / 1e9),
	       (unsigned long long)hs_hist_quantile(&tot.h, 0.5),
	       (unsigned long long)hs_hist_quantile(&tot.h, 0.99),
	       (unsigned long long)tot.h.max_us, (unsigned long long)tot.busy,
	       (unsigned long long)tot.errors, (long long)(after - before),
	       (unsigned long long)tot.acked, ok ? "ok" : "FAILED");
	munmap(res, len);
	return ok ? 0 : -1;
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
			       "p99=%lluus max=%lluus %.0f/s%s\n",
			       round, qnames[q], cfg.n,
			       (double)wall / 1000.0 / cfg.n,
			       (unsigned long long)hs_hist_quantile(h, 0.5),
			       (unsigned long long)hs_hist_quantile(h, 0.99),
			       (unsigned long long)h->max_us,
			       cfg.n / ((double)wall / 1e9),
			       misses ? " (some ids missing)" : "");
		}
	}
	rc = cfg.writers ? run_writers(&cfg, db) : 0;
out:
	free(h);
	db_close(db);
	return rc == 0 ? 0 : 1;
}
