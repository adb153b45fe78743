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

void hs_log_emit(int level, int with_errno, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void hs_fatal(int with_errno, const char *fmt, ...)
	__attribute__((format(printf, 2, 3), noreturn));

#define HS_LOG_(lvl, e, ...)                                                   \
	do {                                                                   \
		if ((lvl) <= hs_log_level)                                     \
			hs_log_emit((lvl), (e), __VA_ARGS__);                  \
	} while (0)

/* log_warn and fatal append strerror(errno); the x variants do not. */
#define log_debug(...) HS_LOG_(HS_LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)  HS_LOG_(HS_LOG_INFO, 0, __VA_ARGS__)
#define log_warnx(...) HS_LOG_(HS_LOG_WARN, 0, __VA_ARGS__)
#define log_warn(...)  HS_LOG_(HS_LOG_WARN, 1, __VA_ARGS__)
#define log_error(...) HS_LOG_(HS_LOG_ERROR, 0, __VA_ARGS__)
#define fatal(...)     hs_fatal(1, __VA_ARGS__)
#define fatalx(...)    hs_fatal(0, __VA_ARGS__)

#endif
