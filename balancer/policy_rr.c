/*
 * Smooth weighted round robin (nginx's algorithm): every pick adds each
 * usable backend's weight to its running score and takes the highest, then
 * lowers the winner by the total, so weights 5,1,1 give a,a,b,a,c,a,a
 * rather than a burst of five a's.  State: one score per backend id.
 */
#include <stdint.h>
#include <stdlib.h>

#include "bal.h"
#include "hs_util.h"

static void *
rr_new(void)
{
	return hs_xcalloc(BAL_MAX_BACKENDS, sizeof(int64_t));
}

static void
rr_free(void *st)
{
	free(st);
}

static struct bal_backend *
rr_pick(void *st, const struct bal_set *set, const unsigned char *tried)
{
	int64_t *cw = st, total = 0;
	struct bal_backend *best = NULL;

	for (int i = 0; i < set->n; i++) {
		struct bal_backend *b = set->b[i];
		if (!bal_backend_usable(b, tried))
			continue;
		cw[b->id] += b->weight;
		total += b->weight;
		if (best == NULL || cw[b->id] > cw[best->id])
			best = b;
	}
	if (best != NULL)
		cw[best->id] -= total;
	return best;
}

const struct bal_policy_ops bal_policy_rr = {
	"roundrobin",
	rr_new,
	rr_free,
	rr_pick,
};
