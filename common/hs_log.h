/*
 * Logging shared by every hammerstack program: one line per event on stderr,
 * "<UTC timestamp> <component>[pid] <level>: message".  The level is tested
 * before the arguments are evaluated, so debug logging costs one compare
 * when it is off.
 */
#ifndef HS_LOG_H
#define HS_LOG_H

enum hs_log_level { HS_LOG_ERROR = 0, HS_LOG_WARN, HS_LOG_INFO, HS_LOG_DEBUG };

/* Set once at start-up, before threads are created. */
extern int hs_log_level;

void hs_log_init(const char *component, int level);
/* Parses "error", "warn", "info", "debug"; returns -1 on anything else. */
int hs_log_level_parse(const char *name);

/*
 * The emitters are cold (as lwan's lwan-log.h marks its own): a log line is
 * the rare path, so the compiler moves the calls and their argument set-up
 * out of the hot code and treats the branches that reach them as unlikely.
 */
void hs_log_emit(int level, int with_errno, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), cold));
void hs_fatal(int with_errno, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn, cold));

#define HS_LOG_(lvl, e, ...)                                  \
	do {                                                  \
		if ((lvl) <= hs_log_level)                    \
			hs_log_emit((lvl), (e), __VA_ARGS__); \
	} while (0)

/* log_warn and fatal append strerror(errno); the x variants do not. */
#define log_debug(...) HS_LOG_(HS_LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)  HS_LOG_(HS_LOG_INFO, 0, __VA_ARGS__)
#define log_warnx(...) HS_LOG_(HS_LOG_WARN, 0, __VA_ARGS__)
#define log_warn(...)  HS_LOG_(HS_LOG_WARN, 1, __VA_ARGS__)
#define log_error(...) HS_LOG_(HS_LOG_ERROR, 0, __VA_ARGS__)
#define fatal(...)     hs_fatal(1, __VA_ARGS__)
#define fatalx(...)    hs_fatal(0, __VA_ARGS__)

/*
 * Rate-limited logging for lines an event can repeat at wire speed (a
 * failing peer, a full descriptor table, a flapping breaker): each call site
 * keeps its own static state and writes at most HS_LOG_RATE lines per
 * second; the first line it writes after dropping some ends with
 * "(suppressed K similar lines)".  Safe from any thread: the state is
 * updated with relaxed atomics, and a race costs at most a line or a count.
 */
#define HS_LOG_RATE 10

struct hs_log_rate {
	long sec;        /* the one-second window being counted */
	int n;           /* lines written in it */
	long suppressed; /* dropped since the last line written */
};

/*
 * Whether a line may be written at now_sec (a monotonic second count);
 * when it may, *suppressed gets the number dropped before it (and resets).
 */
int hs_log_rate_pass(struct hs_log_rate *rl, long now_sec, long *suppressed);
/* hs_log_rate_pass() at the current monotonic second. */
int hs_log_rate_now(struct hs_log_rate *rl, long *suppressed);
void hs_log_emit_rl(int level, int with_errno, long suppressed, const char *fmt,
		    ...) __attribute__((format(printf, 4, 5), cold));

#define HS_LOG_RL_(lvl, e, ...)                                               \
	do {                                                                  \
		static struct hs_log_rate hs_log_rl_;                         \
		long hs_log_sup_;                                             \
		if ((lvl) <= hs_log_level &&                                  \
		    hs_log_rate_now(&hs_log_rl_, &hs_log_sup_))               \
			hs_log_emit_rl((lvl), (e), hs_log_sup_, __VA_ARGS__); \
	} while (0)

#define log_debug_rl(...) HS_LOG_RL_(HS_LOG_DEBUG, 0, __VA_ARGS__)
#define log_info_rl(...)  HS_LOG_RL_(HS_LOG_INFO, 0, __VA_ARGS__)
#define log_warnx_rl(...) HS_LOG_RL_(HS_LOG_WARN, 0, __VA_ARGS__)
#define log_warn_rl(...)  HS_LOG_RL_(HS_LOG_WARN, 1, __VA_ARGS__)
#define log_error_rl(...) HS_LOG_RL_(HS_LOG_ERROR, 0, __VA_ARGS__)

#endif
