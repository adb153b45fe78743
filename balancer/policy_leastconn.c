/*
 * Least connections, weighted: active/weight compared by cross
 * multiplication.  Ties go round robin from a rotating start so equal
 * loads still spread.  State: that start.
 */
#include <stdint.h>
#include <stdlib.h>

#include "bal.h"
#include "hs_util.h"

static void *
lc_new(void)
{
	return hs_xcalloc(1, sizeof(unsigned));
}

static void
lc_free(void *st)
{
	free(st);
}

static struct bal_backend *
lc_pick(void *st, const struct bal_set *set, const unsigned char *tried)
{
	unsigned *start = st;
	struct bal_backend *best = NULL;
	int64_t best_act = 0;

	for (int k = 0; k < set->n; k++) {
		struct bal_backend *b =
			set->b[(*start + (unsigned)k) % (unsigned)set->n];
		int64_t act;
		if (!bal_backend_usable(b, tried))
			continue;
		act = BAL_GET(&b->active);
		if (best == NULL || act * best->weight < best_act * b->weight) {
			best = b;
			best_act = act;
		}
	}
	(*start)++;
	return best;
}

const struct bal_policy_ops bal_policy_leastconn = {
	"leastconn",
	lc_new,
	lc_free,
	lc_pick,
};
