/* Table-driven long options (hs_opt.h). */
#include <getopt.h>
#include <stdlib.h>

#include "hs_opt.h"
#include "hs_util.h"

/* getopt_long's value for defs[i] (past every short letter). */
#define HS_OPT_VAL0 256

/* Checks arg and stores it where d says; -1 if bad. */
static int
hs_opt_set(const struct hs_opt *d, const char *arg, void *opts)
{
	char *at = (char *)opts + d->off;
	int64_t v;

	switch (d->kind) {
	case HS_OPT_FLAG:
		*(int *)(void *)at = 1;
		return 0;
	case HS_OPT_INT:
		if (hs_parse_i64(arg, d->min, d->max, &v) != 0)
			return -1;
		*(int *)(void *)at = (int)v;
		return 0;
	case HS_OPT_I64:
		return hs_parse_i64(arg, d->min, d->max,
				    (int64_t *)(void *)at) != 0
			       ? -1
			       : 0;
	case HS_OPT_DOUBLE:
		return hs_parse_double(arg, d->dmin, d->dmax,
				       (double *)(void *)at) != 0
			       ? -1
			       : 0;
	case HS_OPT_STR:
		*(const char **)(void *)at = arg;
		return 0;
	case HS_OPT_FUNC:
		return d->set(opts, arg) != 0 ? -1 : 0;
	}
	return -1;
}

int
hs_opt_parse(const char *prog, const struct hs_opt *defs, size_t n, int argc,
	     char **argv, void *opts, void (*usage)(FILE *))
{
	struct option *lo = hs_xcalloc(n + 2, sizeof(*lo));
	int c, rc = 0;

	for (size_t i = 0; i < n; i++)
		lo[i] = (struct option){ defs[i].name,
					 defs[i].kind == HS_OPT_FLAG
						 ? no_argument
						 : required_argument,
					 NULL, HS_OPT_VAL0 + (int)i };
	lo[n] = (struct option){ "help", no_argument, NULL, 'h' };
	/* No short options: "-h" is as unknown as any other.  optind 0
	   restarts getopt's scan, so that one process can parse several
	   argv (the unit tests do). */
	opterr = 0;
	optind = 0;
	while (rc == 0 && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout);
			rc = 1;
		} else if (c < HS_OPT_VAL0 || c >= HS_OPT_VAL0 + (int)n) {
			fprintf(stderr,
				"%s: unknown or incomplete option '%s' "
				"(see --help)\n",
				prog, argv[optind - 1]);
			rc = -1;
		} else if (hs_opt_set(&defs[c - HS_OPT_VAL0], optarg, opts) !=
			   0) {
			fprintf(stderr, "%s: %s (got '%s')\n", prog,
				defs[c - HS_OPT_VAL0].bad, optarg);
			rc = -1;
		}
	}
	free(lo);
	return rc;
}
