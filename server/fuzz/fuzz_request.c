/*
 * libFuzzer target for hs-server's request handling: the access handler
 * (routing, ids, the head checks, body limits), every handler behind it
 * (JSON bodies, query strings) and the database they write, without
 * libmicrohttpd.  The input is a request in a relaxed text form, which
 * the harness hands over the way MHD would (the same unescaping):
 *
 *   METHOD SP TARGET [SP VERSION] LF (NAME: VALUE LF)* LF BODY
 *
 * The body arrives in two pieces, split where its first byte says.  The
 * handler's answer is checked: exactly one response per request, a
 * status in 100..599, and for every status >= 400 a JSON body
 * {"error": "...", "status": N} with Content-Type application/json.
 *
 * Here a fake libmicrohttpd (the MHD_* functions hs_srv calls, defined
 * below, take the place of the library's) stands for the connection.
 * The database is seeded once at scale 0.001 into a file under
 * $TMPDIR (/dev/shm when present): db_open takes a path, and seeding
 * renames a finished file into place.
 *
 * Built by -DHS_FUZZ=ON with clang (server/CMakeLists.txt); without it,
 * fuzz_srv_request_seeds replays the seeds through the same code.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "db.h"
#include "srv_core.h"
#include "srv_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define MAX_FIELDS 32

struct kv {
	const char *k, *v;
	size_t klen, vlen;
};

/* The fake connection: what MHD would have parsed, and what was queued. */
struct MHD_Connection {
	struct kv hdr[MAX_FIELDS];
	int nhdr;
	struct kv arg[MAX_FIELDS];
	int narg;
	int queued; /* responses queued (must end at 1) */
	unsigned status;
};

struct MHD_Response {
	char *body;
	size_t len;
	int owned;
	char ctype[64];
};

static struct srv *fz_srv;
static char fz_dir[256];
static char fz_path[300];
static int fz_verbose; /* HS_FUZZ_VERBOSE set: print each answer */

/* --- the fake libmicrohttpd --- */

const char *
MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind,
			    const char *key)
{
	struct kv *t = kind == MHD_GET_ARGUMENT_KIND ? c->arg : c->hdr;
	int n = kind == MHD_GET_ARGUMENT_KIND ? c->narg : c->nhdr;

	if (kind != MHD_GET_ARGUMENT_KIND && kind != MHD_HEADER_KIND)
		return NULL;
	for (int i = 0; i < n; i++)
		if (strlen(key) == t[i].klen &&
		    strncasecmp(key, t[i].k, t[i].klen) == 0)
			return t[i].v;
	return NULL;
}

int
MHD_get_connection_values_n(struct MHD_Connection *c, enum MHD_ValueKind kind,
			    MHD_KeyValueIteratorN it, void *cls)
{
	if (kind != MHD_HEADER_KIND)
		return 0;
	for (int i = 0; i < c->nhdr; i++)
		if (it != NULL &&
		    it(cls, MHD_HEADER_KIND, c->hdr[i].k, c->hdr[i].klen,
		       c->hdr[i].v, c->hdr[i].vlen) != MHD_YES)
			return i + 1;
	return c->nhdr;
}

const union MHD_ConnectionInfo *
MHD_get_connection_info(struct MHD_Connection *c,
			enum MHD_ConnectionInfoType type, ...)
{
	static union MHD_ConnectionInfo none;

	(void)c;
	(void)type;
	memset(&none, 0, sizeof(none));
	return &none; /* no socket context: the connection guard is off */
}

struct MHD_Response *
MHD_create_response_from_buffer(size_t size, void *buffer,
				enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = calloc(1, sizeof(*r));

	if (r == NULL)
		abort();
	r->len = size;
	if (mode == MHD_RESPMEM_MUST_FREE) {
		r->body = buffer;
		r->owned = 1;
	} else {
		r->body = malloc(size + 1);
		if (r->body == NULL)
			abort();
		memcpy(r->body, buffer, size);
		r->owned = 1;
	}
	return r;
}

enum MHD_Result
MHD_add_response_header(struct MHD_Response *r, const char *h, const char *v)
{
	/* What MHD refuses: a CR or LF would split the response head. */
	if (strpbrk(h, "\r\n") != NULL || strpbrk(v, "\r\n") != NULL)
		abort();
	if (strcasecmp(h, MHD_HTTP_HEADER_CONTENT_TYPE) == 0)
		snprintf(r->ctype, sizeof(r->ctype), "%s", v);
	return MHD_YES;
}

void
MHD_destroy_response(struct MHD_Response *r)
{
	if (r == NULL)
		return;
	if (r->owned)
		free(r->body);
	free(r);
}

/* The checks: one response, a sane status, JSON errors. */
enum MHD_Result
MHD_queue_response(struct MHD_Connection *c, unsigned int status,
		   struct MHD_Response *r)
{
	if (++c->queued > 1 || status < 100 || status > 599)
		abort();
	c->status = status;
	if (status >= 400) {
		json_error_t e;
		json_t *j = json_loadb(r->body, r->len, 0, &e), *st, *msg;

		if (strcmp(r->ctype, "application/json") != 0 || j == NULL)
			abort();
		st = json_object_get(j, "status");
		msg = json_object_get(j, "error");
		if (!json_is_integer(st) ||
		    json_integer_value(st) != (json_int_t)status ||
		    !json_is_string(msg))
			abort();
		json_decref(j);
	}
	return MHD_YES;
}

/* Nothing else may be reached without database threads and daemons. */
void
MHD_suspend_connection(struct MHD_Connection *c)
{
	(void)c;
	abort();
}

void
MHD_resume_connection(struct MHD_Connection *c)
{
	(void)c;
	abort();
}

/* --- the harness --- */

/* Cuts the next LF-terminated line off [*p, end); NULL at the end. */
static char *
next_line(char **p, char *end)
{
	char *s = *p, *nl;

	if (s >= end)
		return NULL;
	nl = memchr(s, '\n', (size_t)(end - s));
	if (nl == NULL)
		nl = end;
	*nl = '\0';
	*p = nl + 1;
	return s;
}

/* The query string into c->arg, unescaped as MHD does. */
static void
parse_args(struct MHD_Connection *c, char *q)
{
	char *save = NULL;

	for (char *a = strtok_r(q, "&", &save);
	     a != NULL && c->narg < MAX_FIELDS;
	     a = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(a, '=');
		struct kv *kv = &c->arg[c->narg++];

		if (eq != NULL)
			*eq = '\0';
		kv->klen = srv_unescape(NULL, c, a);
		kv->k = a;
		kv->v = eq != NULL ? eq + 1 : NULL;
		if (eq != NULL)
			kv->vlen = srv_unescape(NULL, c, eq + 1);
	}
}

static void
remove_db(void)
{
	static const char *const sfx[] = { "", "-wal", "-shm", "-journal" };
	char p[320];

	for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", fz_path, sfx[i]);
		unlink(p);
	}
	rmdir(fz_dir);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct db_seed_opts so = { .scale = 0.001 };
	static struct srv s;
	const char *tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm"
			  : getenv("TMPDIR")            ? getenv("TMPDIR")
							: "/tmp";
	char err[256];

	(void)argc;
	(void)argv;
	snprintf(fz_dir, sizeof(fz_dir), "%s/hs-fuzz-XXXXXX", tmp);
	if (mkdtemp(fz_dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(fz_path, sizeof(fz_path), "%s/hs.db", fz_dir);
	atexit(remove_db);
	fz_verbose = getenv("HS_FUZZ_VERBOSE") != NULL;
	if (db_seed_file(fz_path, &so, err, sizeof(err)) != DB_OK) {
		fprintf(stderr, "seed: %s\n", err);
		exit(1);
	}
	srv_config_defaults(&s.cfg);
	s.cfg.db_path = fz_path;
	s.cfg.id = "fuzz";
	s.cfg.max_body = 4096;
	s.cfg.busy_timeout_ms = 1000;
	s.listen_fd = s.wake_fd = -1;
	pthread_mutex_init(&s.wlock, NULL);
	fz_srv = &s;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct MHD_Connection c;
	char *buf, *p, *end, *line, *method, *target, *version, *q;
	void *con_cls = NULL;
	size_t zero = 0, blen, split, n;
	const char *body;

	if (fz_srv == NULL)
		LLVMFuzzerInitialize(NULL, NULL);
	if (size > 1 << 16)
		return 0;
	memset(&c, 0, sizeof(c));
	buf = malloc(size + 1);
	if (buf == NULL)
		abort();
	memcpy(buf, data, size);
	buf[size] = '\0';
	p = buf;
	end = buf + size;
	line = next_line(&p, end);
	if (line == NULL)
		goto out;
	method = line;
	target = strchr(line, ' ');
	if (target == NULL || target == method)
		goto out;
	*target++ = '\0';
	version = strchr(target, ' ');
	if (version != NULL)
		*version++ = '\0';
	else
		version = MHD_HTTP_VERSION_1_1;
	/* Headers up to an empty line; MHD hands over NUL-free C strings. */
	while ((line = next_line(&p, end)) != NULL && *line != '\0') {
		char *colon = strchr(line, ':');
		struct kv *kv;

		if (colon == NULL || c.nhdr == MAX_FIELDS)
			continue;
		*colon = '\0';
		kv = &c.hdr[c.nhdr++];
		kv->k = line;
		kv->klen = strlen(line);
		kv->v = colon + 1 + strspn(colon + 1, " \t");
		kv->vlen = strlen(kv->v);
	}
	body = p < end ? p : end;
	blen = (size_t)(end - body);
	q = strchr(target, '?');
	if (q != NULL) {
		*q++ = '\0';
		parse_args(&c, q);
	}
	srv_unescape(NULL, &c, target);

	/* As MHD calls it: the head, the body in pieces, then the end. */
	if (srv_on_access(fz_srv, &c, target, method, version, NULL, &zero,
			  &con_cls) != MHD_YES)
		goto done;
	split = blen > 0 ? (unsigned char)body[0] % (blen + 1) : 0;
	for (int piece = 0; piece < 2 && c.queued == 0; piece++) {
		const char *at = piece == 0 ? body : body + split;

		n = piece == 0 ? split : blen - split;
		if (n == 0)
			continue;
		if (srv_on_access(fz_srv, &c, target, method, version, at, &n,
				  &con_cls) != MHD_YES)
			goto done;
		if (n != 0)
			abort(); /* the handler takes every byte it is given */
	}
	if (c.queued == 0) {
		zero = 0;
		if (srv_on_access(fz_srv, &c, target, method, version, NULL,
				  &zero, &con_cls) != MHD_YES)
			goto done;
	}
	/* Without cache and database threads every request is answered. */
	if (c.queued != 1)
		abort();
	if (fz_verbose)
		printf("%s %s -> %u\n", method, target, c.status);
done:
	if (con_cls != NULL)
		srv_on_completed(fz_srv, &c, &con_cls,
				 MHD_REQUEST_TERMINATED_COMPLETED_OK);
out:
	free(buf);
	return 0;
}
