/*
 * Long options from a table: each entry says how its value is checked and
 * where it is stored, so a tool's parser is its table plus the checks that
 * involve several options.  Used by hs-load and hs-checker, whose errors
 * read "PROG: MESSAGE (got 'VALUE')".
 */
#ifndef HS_OPT_H
#define HS_OPT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum hs_opt_kind {
	HS_OPT_FLAG,   /* no value: the int is set to 1 */
	HS_OPT_INT,    /* an int in [min, max] */
	HS_OPT_I64,    /* an int64_t in [min, max] */
	HS_OPT_DOUBLE, /* a double in [dmin, dmax] */
	HS_OPT_STR,    /* any string, borrowed from argv */
	HS_OPT_FUNC,   /* set(opts, value) checks and stores it */
};

struct hs_opt {
	const char *name;
	enum hs_opt_kind kind;
	size_t off;        /* offsetof(the tool's opts, field) */
	int64_t min, max;  /* HS_OPT_INT, HS_OPT_I64 */
	double dmin, dmax; /* HS_OPT_DOUBLE */
	int (*set)(void *opts, const char *arg); /* HS_OPT_FUNC: -1 if bad */
	const char *bad; /* the error when the value is bad */
};

/*
 * Parses argv's options into opts by defs[n] (and --help, which prints
 * usage on stdout); optind is left at the first operand.  Returns 0 to
 * run, 1 after --help, -1 after a usage error said on stderr.
 */
int hs_opt_parse(const char *prog, const struct hs_opt *defs, size_t n,
		 int argc, char **argv, void *opts, void (*usage)(FILE *));

#endif
