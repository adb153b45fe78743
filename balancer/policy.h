/*
 * A balancing policy: a small table of callbacks, one file per policy
 * (policy_rr.c, policy_leastconn.c).  Each worker holds its own state from
 * state_new(), so a pick takes no lock; pick() sees the worker's current
 * immutable set and the backends this request already tried.
 */
#ifndef BAL_POLICY_H
#define BAL_POLICY_H

struct bal_backend;
struct bal_set;

struct bal_policy_ops {
	const char *name;
	void *(*state_new)(void);
	void (*state_free)(void *st);
	/* Picks an up backend of set not marked in tried[id]; NULL if none. */
	struct bal_backend *(*pick)(void *st, const struct bal_set *set,
				    const unsigned char *tried);
};

extern const struct bal_policy_ops bal_policy_rr;
extern const struct bal_policy_ops bal_policy_leastconn;

#endif
