/*
 * hs-load, the open-loop load generator: the pieces main.c wires together,
 * in a library so that the unit tests can reach them.
 *
 *   mix.c     the request mixes of the wrk scripts in loadtest/wrk/: the
 *             same Zipf ids, scatter and shares, built into request bytes;
 *   resp.c    a minimal incremental HTTP/1.1 response parser (status line,
 *             Content-Length, chunked, close-delimited);
 *   engine.c  one run on a libevent loop: the schedule, the connection pool,
 *             timeouts, the drain at the end, and what it measured (struct
 *             hsl_stats: corrected and uncorrected latency histograms,
 *             status classes, errors, lateness).
 */
#ifndef HSL_HSLOAD_H
#define HSL_HSLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "hs_buf.h"
#include "hs_hist.h"

/* ------------------------------------------------------------ random */

/* A private stream of hs_rng.h's generator: reproducible for a seed. */
struct hsl_rng {
	uint64_t s;
};

void hsl_rng_seed(struct hsl_rng *r, uint64_t seed);
uint64_t hsl_rng_next(struct hsl_rng *r);
/* Uniform in [0, 1). */
double hsl_rng_unit(struct hsl_rng *r);
/* Uniform integer in [lo, hi]. */
int64_t hsl_rng_range(struct hsl_rng *r, int64_t lo, int64_t hi);

/* ------------------------------------------------------------ Zipf */

/*
 * A Zipf(s) sampler over 1..n, as hslib.lua's M.zipf: rank r has weight
 * 1/r^s, sampled by binary search in a CDF table; with scatter, rank r maps
 * to id ((r-1)*step mod n)+1 with step = 7919 mod n moved up to the next
 * value coprime with n.  hsl_zipf_free(NULL) is a no-op.
 */
struct hsl_zipf;

struct hsl_zipf *hsl_zipf_new(int64_t n, double s, int scatter);
void hsl_zipf_free(struct hsl_zipf *z);
int64_t hsl_zipf_rank(const struct hsl_zipf *z, struct hsl_rng *r);
int64_t hsl_zipf_id_of_rank(const struct hsl_zipf *z, int64_t rank);
int64_t hsl_zipf_id(const struct hsl_zipf *z, struct hsl_rng *r);
int64_t hsl_zipf_step(const struct hsl_zipf *z);

/* ------------------------------------------------------------ mixes */

enum hsl_mix_kind {
	HSL_MIX_PLAIN,  /**< GET the URL's path, every time */
	HSL_MIX_READ,   /**< read-mix.lua */
	HSL_MIX_UPDATE, /**< update-mix.lua */
	HSL_MIX_HOT,    /**< hot-key.lua */
};

/* The request kinds, as the wrk scripts count them ("kinds" in HSJSON). */
#define HSL_KINDS(X)                       \
	X(plain, "GET of the URL's path")  \
	X(product, "GET /products/{id}")   \
	X(top, "GET /categories/{id}/top") \
	X(put, "PUT /products/{id}")       \
	X(review, "POST /products/{id}/reviews")

enum hsl_kind {
#define HSL_KIND_ENUM(name, help) HSL_KIND_##name,
	HSL_KINDS(HSL_KIND_ENUM)
#undef HSL_KIND_ENUM
		HSL_KIND_COUNT
};

const char *hsl_kind_name(enum hsl_kind k);

/* The mix options; the names and defaults are the wrk scripts'. */
struct hsl_mix_opts {
	enum hsl_mix_kind kind;
	int64_t products, categories, id;
	double top, put, review, s;
	int scatter;
	uint64_t seed;
};

void hsl_mix_defaults(struct hsl_mix_opts *o);
int hsl_mix_parse_kind(const char *s, enum hsl_mix_kind *out);
const char *hsl_mix_kind_name(enum hsl_mix_kind k);

struct hsl_mix;

/*
 * A request generator.  host ("HOST:PORT", for the Host header) and path
 * (the plain mix's path) are copied.  Returns NULL with a message in
 * err[errlen] on invalid options.  hsl_mix_free(NULL) is a no-op.
 */
struct hsl_mix *hsl_mix_new(const struct hsl_mix_opts *o, const char *host,
			    const char *path, char *err, size_t errlen);
void hsl_mix_free(struct hsl_mix *m);
/*
 * Writes the next request into buf[cap] and returns its length (0 if it
 * does not fit, which cannot happen with cap >= HSL_REQ_MAX); its kind goes
 * to *kind.
 */
#define HSL_REQ_MAX 1024
size_t hsl_mix_next(struct hsl_mix *m, char *buf, size_t cap,
		    enum hsl_kind *kind);

/* ------------------------------------------------------------ responses */

enum hsl_resp_state {
	HSL_RESP_HEAD,       /**< before the end of the header block */
	HSL_RESP_BODY_LEN,   /**< Content-Length body: `left` bytes to go */
	HSL_RESP_CHUNK_SIZE, /**< at a chunk-size line */
	HSL_RESP_CHUNK_DATA, /**< inside a chunk: `left` bytes to go */
	HSL_RESP_CHUNK_CRLF, /**< the CRLF after a chunk's data */
	HSL_RESP_TRAILERS,   /**< trailer lines after the last chunk */
	HSL_RESP_BODY_EOF, /**< no length: the body ends when the peer closes */
	HSL_RESP_DONE,     /**< a whole response was parsed */
	HSL_RESP_ERROR,    /**< malformed; the connection must be closed */
};

struct hsl_resp {
	enum hsl_resp_state state;
	int status;
	int close;     /* "Connection: close" or HTTP/1.0 without keep-alive */
	uint64_t left; /* body or chunk bytes still to skip */
};

/* Longest header block (or chunk-size / trailer line) accepted. */
#define HSL_RESP_HEAD_MAX 8192

void hsl_resp_init(struct hsl_resp *r);
/*
 * Parses from buf[len], where buf starts at the first byte not consumed by
 * the previous call.  Returns the bytes consumed (the caller keeps the rest
 * for the next call, with more data after it); stops right after the end
 * of a response (state DONE) and on a malformed one (state ERROR).  Bytes
 * are consumed only up to a line or header block that is complete.
 */
size_t hsl_resp_parse(struct hsl_resp *r, const char *buf, size_t len);
/* The peer closed: returns 1 if that ends the response (close-delimited). */
int hsl_resp_eof(struct hsl_resp *r);

/* ------------------------------------------------------------ stats */

/* Counters of one run; one line each (an X-macro, expanded in JSON too). */
#define HSL_COUNTERS(X)                                                        \
	X(requests, "responses received for requests planned in the window")   \
	X(s2xx, "2xx responses")                                               \
	X(s3xx, "3xx responses")                                               \
	X(s4xx, "4xx responses")                                               \
	X(s5xx, "5xx responses")                                               \
	X(sother, "responses with another status")                             \
	X(errors, "requests lost to a socket error, bad response or timeout")  \
	X(err_connect, "requests lost because a connection failed to open")    \
	X(err_io, "requests lost to a read/write error or a close")            \
	X(err_parse, "malformed responses")                                    \
	X(err_timeout, "requests without an answer within --timeout")          \
	X(unfinished, "planned requests still queued or in flight at the end") \
	X(late, "requests sent more than 1 ms after their planned time")       \
	X(connections, "connections opened")                                   \
	X(clients_answered, "per-connection: clients answered at least once")  \
	X(clients_starved, "per-connection: clients never answered")

struct hsl_stats {
	struct hs_hist corrected;   /* done - planned send time */
	struct hs_hist uncorrected; /* done - actual send time */
#define HSL_COUNTER_FIELD(name, help) uint64_t name;
	HSL_COUNTERS(HSL_COUNTER_FIELD)
#undef HSL_COUNTER_FIELD
	uint64_t kinds[HSL_KIND_COUNT];
};

#define HSL_LATE_NS 1000000ULL

/* Records one answered request (times in ns, monotonic). */
void hsl_stats_record(struct hsl_stats *st, uint64_t planned_ns,
		      uint64_t sent_ns, uint64_t done_ns, int status);

/* ------------------------------------------------------------ one run */

enum hsl_arrival {
	HSL_ARRIVAL_UNIFORM, /**< evenly spaced, 1/rate apart */
	HSL_ARRIVAL_POISSON, /**< exponential gaps of mean 1/rate */
};

struct hsl_run_opts {
	const struct sockaddr *addr;
	socklen_t addrlen;
	const char *target; /* "HOST:PORT" for messages */
	double rate;        /* requests per second offered */
	double duration_s;  /* measured window */
	double warmup_s;    /* scheduled and sent before it, not measured */
	double timeout_s;   /* per request, from its send; also the drain */
	int connections;    /* pool limit, or the clients (per_connection) */
	int per_connection; /* each connection a client at rate/connections */
	enum hsl_arrival arrival;
	uint64_t seed; /* arrival gaps (the mix has its own stream) */
	int quiet;     /* no per-second progress on stderr */
	/* > 0: every progress_ms, one JSON line on stdout of what was
	 * answered in that interval alone (warmup included), for live views;
	 * see hs-load --help. */
	int progress_ms;
};

enum hsl_run_end {
	HSL_RUN_DONE,        /**< the schedule and the drain finished */
	HSL_RUN_INTERRUPTED, /**< SIGINT / SIGTERM: the stats are partial */
	HSL_RUN_NO_CONNECT,  /**< not one connection could be made */
};

struct hsl_result {
	enum hsl_run_end end;
	double elapsed_s; /* of the measured window (shorter if interrupted) */
	/* From the window's start to its last answer (at least elapsed_s):
	 * answers that trail a backlog into the drain take this long. */
	double span_s;
	char error[256]; /* the connect error, for HSL_RUN_NO_CONNECT */
};

/*
 * Runs one point: schedules requests at o->rate for warmup + duration,
 * drains, fills st (zeroed first) and res.  The mix is borrowed.
 * Returns 0, or -1 if the event loop could not be set up.
 */
int hsl_run(const struct hsl_run_opts *o, struct hsl_mix *mix,
	    struct hsl_stats *st, struct hsl_result *res);

#endif
