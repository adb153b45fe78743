/*
 * Rows of counters to JSON members and Prometheus text (see hs_metrics.h).
 */
#include <inttypes.h>
#include <string.h>

#include "hs_metrics.h"

static const char *const type_names[] = {
	[HS_COUNTER] = "counter",
	[HS_GAUGE] = "gauge",
};

int
hs_metrics_json(struct hs_buf *b, const struct hs_metric *rows, size_t n,
		int first)
{
	int wrote = !first;

	for (size_t i = 0; i < n; i++) {
		const struct hs_metric *m = &rows[i];

		if (m->json == NULL)
			continue;
		hs_buf_printf(b, "%s\"%s\":", wrote ? "," : "", m->json);
		wrote = 1;
		switch (m->unit) {
		case HS_UNIT_BOOL:
			hs_buf_puts(b, m->value ? "true" : "false");
			break;
		case HS_UNIT_NS_MS:
			hs_buf_printf(b, "%.3f", (double)m->value / 1e6);
			break;
		case HS_UNIT_NS_S:
			hs_buf_printf(b, "%.3f", (double)m->value / 1e9);
			break;
		default:
			hs_buf_printf(b, "%" PRId64, m->value);
		}
	}
	return wrote;
}

void
hs_metrics_prom_head(struct hs_buf *b, const char *prefix, const char *name,
		     const char *help, const char *type)
{
	hs_buf_printf(b, "# HELP %s%s %s\n# TYPE %s%s %s\n", prefix, name,
		      help ? help : "", prefix, name, type);
}

void
hs_metrics_prom(struct hs_buf *b, const char *prefix,
		const struct hs_metric *rows, size_t n)
{
	const char *last = NULL;

	for (size_t i = 0; i < n; i++) {
		const struct hs_metric *m = &rows[i];

		if (m->prom == NULL)
			continue;
		if (last == NULL || strcmp(last, m->prom) != 0)
			hs_metrics_prom_head(b, prefix, m->prom, m->help,
					     type_names[m->type]);
		last = m->prom;
		hs_buf_printf(b, "%s%s", prefix, m->prom);
		if (m->labels != NULL && m->labels[0] != '\0')
			hs_buf_printf(b, "{%s}", m->labels);
		switch (m->unit) {
		case HS_UNIT_BOOL:
			hs_buf_puts(b, m->value ? " 1\n" : " 0\n");
			break;
		case HS_UNIT_NS_MS:
			hs_buf_printf(b, " %.6f\n", (double)m->value / 1e9);
			break;
		case HS_UNIT_NS_S:
			hs_buf_printf(b, " %.3f\n", (double)m->value / 1e9);
			break;
		default:
			hs_buf_printf(b, " %" PRId64 "\n", m->value);
		}
	}
}
