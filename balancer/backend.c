/*
 * The backend list: parsing "HOST:PORT[,weight=N]" specs, loading the list
 * from the command line and the backends file, and publishing it as an
 * immutable set (reloads never disturb requests in flight).  The balancing
 * policies that pick from a set are in policy_*.c, behind policy.h.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bal.h"
#include "hs_log.h"
#include "hs_util.h"

int
bal_spec_parse(const char *s, struct bal_spec *out)
{
	char tmp[BAL_HOST_MAX + 64], *comma;

	if (strlen(s) >= sizeof(tmp))
		return -1;
	strcpy(tmp, s);
	out->weight = 1;
	if ((comma = strchr(tmp, ',')) != NULL) {
		*comma++ = '\0';
		if (strncmp(comma, "weight=", 7) != 0 ||
		    hs_parse_int(comma + 7, 1, 1000, &out->weight) < 0)
			return -1;
	}
	if (hs_parse_hostport(tmp, out->host, sizeof(out->host), &out->port) <
		    0 ||
	    out->port == 0)
		return -1;
	return 0;
}

static int
resolve(struct bal_backend *b)
{
	struct addrinfo hints, *res = NULL;
	char port[8];

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", b->port);
	if (getaddrinfo(b->host, port, &hints, &res) != 0 || res == NULL)
		return -1;
	memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
	b->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Reads the backends file: one spec per line, '#' comments, blank lines. */
static int
read_file(const char *path, struct bal_spec *specs, int *n, int max, char *err,
	  size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[BAL_HOST_MAX + 64];
	int lineno = 0;

	if (f == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *e;
		lineno++;
		while (*p == ' ' || *p == '\t')
			p++;
		if ((e = strchr(p, '#')) != NULL)
			*e = '\0';
		e = p + strlen(p);
		while (e > p && (e[-1] == '\n' || e[-1] == '\r' ||
				 e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (*p == '\0')
			continue;
		if (*n >= max) {
			snprintf(err, errlen, "%s: too many backends", path);
			fclose(f);
			return -1;
		}
		if (bal_spec_parse(p, &specs[*n]) < 0) {
			snprintf(err, errlen, "%s:%d: bad backend '%s'", path,
				 lineno, p);
			fclose(f);
			return -1;
		}
		(*n)++;
	}
	fclose(f);
	return 0;
}

static struct bal_backend *
find_backend(struct bal_app *app, const struct bal_spec *s)
{
	struct bal_backend *b;

	TAILQ_FOREACH(b, &app->backends, all)
	if (b->port == s->port && strcmp(b->host, s->host) == 0)
		return b;
	return NULL;
}

int
bal_set_load(struct bal_app *app, char *err, size_t errlen)
{
	struct bal_spec *specs = NULL;
	struct bal_set *set = NULL, *cur;
	int n = 0, rc = -1;

	pthread_mutex_lock(&app->reload_lock);
	specs = hs_xcalloc(BAL_MAX_BACKENDS, sizeof(*specs));
	memcpy(specs, app->cfg.specs, sizeof(*specs) * app->cfg.nspecs);
	n = app->cfg.nspecs;
	if (app->cfg.backends_file != NULL &&
	    read_file(app->cfg.backends_file, specs, &n, BAL_MAX_BACKENDS, err,
		      errlen) < 0)
		goto out;
	if (n == 0) {
		snprintf(err, errlen, "no backends configured");
		goto out;
	}
	set = hs_xcalloc(1, sizeof(*set));
	set->b = hs_xcalloc((size_t)n, sizeof(*set->b));
	for (int i = 0; i < n; i++) {
		struct bal_backend *b = find_backend(app, &specs[i]);
		int dup = 0;
		for (int j = 0; j < set->n; j++)
			dup |= set->b[j] == b && b != NULL;
		if (dup)
			continue;
		if (b == NULL) {
			if (app->next_id >= BAL_MAX_BACKENDS) {
				snprintf(err, errlen, "too many backends");
				goto out;
			}
			b = hs_xcalloc(1, sizeof(*b));
			snprintf(b->host, sizeof(b->host), "%s", specs[i].host);
			b->port = specs[i].port;
			snprintf(b->name, sizeof(b->name), "%s:%d", b->host,
				 b->port);
			if (resolve(b) < 0) {
				snprintf(err, errlen, "cannot resolve %s",
					 b->name);
				free(b);
				goto out;
			}
			b->id = app->next_id++;
			b->up = 1;
			TAILQ_INSERT_TAIL(&app->backends, b, all);
		}
		b->weight = specs[i].weight;
		__atomic_store_n(&b->removed, 0, __ATOMIC_RELAXED);
		set->b[set->n++] = b;
	}
	/* Backends left out of the new set stop taking requests. */
	struct bal_backend *b;
	TAILQ_FOREACH(b, &app->backends, all)
	{
		int in = 0;
		for (int j = 0; j < set->n; j++)
			in |= set->b[j] == b;
		if (!in)
			__atomic_store_n(&b->removed, 1, __ATOMIC_RELAXED);
	}
	cur = app->set;
	set->older = cur;
	__atomic_store_n(&app->set, set, __ATOMIC_RELEASE);
	set = NULL;
	rc = 0;
out:
	if (set != NULL) {
		free(set->b);
		free(set);
	}
	free(specs);
	pthread_mutex_unlock(&app->reload_lock);
	return rc;
}

void
bal_backends_free(struct bal_app *app)
{
	struct bal_set *s = app->set, *o;
	struct bal_backend *b;

	while (s != NULL) {
		o = s->older;
		free(s->b);
		free(s);
		s = o;
	}
	app->set = NULL;
	while ((b = TAILQ_FIRST(&app->backends)) != NULL) {
		TAILQ_REMOVE(&app->backends, b, all);
		free(b);
	}
}

void
bal_backend_set_up(struct bal_backend *b, int up, const char *why)
{
	int old = __atomic_exchange_n(&b->up, up, __ATOMIC_RELAXED);

	if (old != up)
		log_warnx_rl("backend %s is %s (%s)", b->name,
			     up ? "up" : "down", why);
}
