/*
 * One writer for /stats and /metrics: a module describes its counters as
 * rows {name, help, type, labels, value} (expanded from its X-macro list)
 * and this turns them into a JSON object's members and into Prometheus text
 * with # HELP and # TYPE, so the two exports cannot drift apart.
 */
#ifndef HS_METRICS_H
#define HS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "hs_buf.h"

enum hs_metric_type { HS_COUNTER, HS_GAUGE };

/*
 * How value is shown.  Durations are kept in nanoseconds and shown in the
 * unit their key names: JSON milliseconds or seconds, Prometheus seconds.
 */
enum hs_metric_unit {
	HS_UNIT_COUNT, /* an integer in both */
	HS_UNIT_BOOL,  /* JSON true / false, Prometheus 1 / 0 */
	HS_UNIT_NS_MS, /* JSON ms (%.3f), Prometheus seconds (%.6f) */
	HS_UNIT_NS_S,  /* JSON s (%.3f), Prometheus seconds (%.3f) */
};

struct hs_metric {
	const char *json; /* JSON key; NULL: not in JSON */
	const char *prom; /* Prometheus name after the prefix; NULL: not there */
	const char *help;
	enum hs_metric_type type;
	enum hs_metric_unit unit;
	const char *labels; /* Prometheus labels 'k="v",...'; NULL for none */
	int64_t value;      /* gauges may dip below 0 in a race */
};

/*
 * Appends the rows as JSON members "key":value, each preceded by a comma
 * unless it is the first member of the object (first != 0).  The caller
 * writes the braces, so it can put other members before and after.
 * Returns 0 when nothing was written, else 1 (feed it back as !first).
 */
int hs_metrics_json(struct hs_buf *b, const struct hs_metric *rows, size_t n,
		    int first);
/*
 * Appends the rows as Prometheus samples named prefix + prom, with a
 * # HELP / # TYPE pair whenever the name changes from the previous row:
 * rows of one family (same name, other labels) must be adjacent.
 */
void hs_metrics_prom(struct hs_buf *b, const char *prefix,
		     const struct hs_metric *rows, size_t n);
/* Just the # HELP and # TYPE lines (type "histogram" etc.), for families
   whose samples another writer emits (hs_hist_prom). */
void hs_metrics_prom_head(struct hs_buf *b, const char *prefix,
			  const char *name, const char *help, const char *type);

#endif
