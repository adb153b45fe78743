/*
 * Tests of the hs-seed command line: options, exit statuses (0 ok, 1
 * failure, 2 bad options), messages, --force, progress and the summary
 * line.  Runs the real binary from HS_BIN_DIR on files in a temporary
 * directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

static char g_dir[256];
static char g_bin[512];

struct run {
	int status; /* exit status, or -1 if it did not exit */
	char out[4096];
	char err[4096];
};

static void
slurp(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	size_t len = 0;

	if (f) {
		len = fread(buf, 1, n - 1, f);
		fclose(f);
	}
	buf[len] = '\0';
}

/* Runs hs-seed with args (NULL-terminated), at most 60 s. */
static void
run_seed(struct run *r, ...)
{
	const char *argv[16];
	char outp[600], errp[600];
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	va_list ap;
	pid_t pid, w;
	int i = 0, status = 0, fd, waited;

	argv[i++] = g_bin;
	va_start(ap, r);
	while (i < 15 && (argv[i] = va_arg(ap, const char *)) != NULL)
		i++;
	va_end(ap);
	argv[i] = NULL;
	snprintf(outp, sizeof(outp), "%s/stdout", g_dir);
	snprintf(errp, sizeof(errp), "%s/stderr", g_dir);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 1);
		fd = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 2);
		execv(g_bin, (char *const *)argv);
		_exit(127);
	}
	for (waited = 0; waited < 6000; waited++) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		nanosleep(&ts, NULL);
	}
	if (waited == 6000) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("hs-seed did not finish in 60 s");
	}
	r->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	slurp(outp, r->out, sizeof(r->out));
	slurp(errp, r->err, sizeof(r->err));
}

static int64_t
count_products(const char *path)
{
	sqlite3 *s = NULL;
	sqlite3_stmt *st = NULL;
	int64_t n = -1;

	assert_int_equal(sqlite3_open_v2(path, &s, SQLITE_OPEN_READONLY, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(s, "SELECT count(*) FROM products",
					    -1, &st, NULL),
			 SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(s);
	return n;
}

static int
rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static int
group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR"), *bin = getenv("HS_BIN_DIR");

	snprintf(g_bin, sizeof(g_bin), "%s/hs-seed", bin ? bin : "./bin");
	if (access(g_bin, X_OK) != 0) {
		fprintf(stderr, "hs-seed not found at %s (set HS_BIN_DIR)\n",
			g_bin);
		return -1;
	}
	snprintf(g_dir, sizeof(g_dir), "%s/hs-test-seed-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	return mkdtemp(g_dir) ? 0 : -1;
}

static int
group_teardown(void **state)
{
	return nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void
test_help(void **state)
{
	struct run r;

	run_seed(&r, "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "usage: hs-seed"));
	assert_non_null(strstr(r.out, "--scale"));
	run_seed(&r, "-h", NULL);
	assert_int_equal(r.status, 0);
}

static void
test_bad_options(void **state)
{
	struct run r;
	char db[600];

	snprintf(db, sizeof(db), "%s/never.db", g_dir);
	run_seed(&r, NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "--db"));
	run_seed(&r, "--bogus", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "--bogus"));
	/* One line, not the whole usage text. */
	assert_non_null(strchr(r.err, '\n'));
	assert_null(strchr(strchr(r.err, '\n') + 1, '\n'));
	run_seed(&r, "--db", NULL);
	assert_int_equal(r.status, 2);
	run_seed(&r, "--db", db, "--scale", "abc", NULL);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "--scale"));
	run_seed(&r, "--db", db, "--scale", "0", NULL);
	assert_int_equal(r.status, 2);
	run_seed(&r, "--db", db, "--scale", "1e9", NULL);
	assert_int_equal(r.status, 2);
	run_seed(&r, "--db", db, "--seed", "-1", NULL);
	assert_int_equal(r.status, 2);
	run_seed(&r, "--db", db, "extra", NULL);
	assert_int_equal(r.status, 2);
	/* Nothing was created. */
	assert_int_equal(access(db, F_OK), -1);
}

static void
test_seed_and_force(void **state)
{
	struct run r;
	char db[600];

	snprintf(db, sizeof(db), "%s/cli.db", g_dir);
	run_seed(&r, "--db", db, "--scale", "0.001", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "100 products"));
	assert_non_null(strstr(r.out, "1000 reviews"));
	assert_non_null(strstr(r.out, "10000 world rows"));
	assert_non_null(strstr(r.out, " s ("));
	assert_true(strlen(r.err) > 0); /* progress */
	assert_int_equal(count_products(db), 100);

	/* An existing file: a clear message, status 1, file untouched. */
	run_seed(&r, "--db", db, "--scale", "0.002", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "already exists"));
	assert_non_null(strstr(r.err, "--force"));
	assert_int_equal(count_products(db), 100);

	run_seed(&r, "--db", db, "--scale", "0.002", "--force", "--quiet",
		 NULL);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.err, "");
	assert_int_equal(count_products(db), 200);

	/* A directory that does not exist: status 1 and a message. */
	snprintf(db, sizeof(db), "%s/missing/dir.db", g_dir);
	run_seed(&r, "--db", db, "--scale", "0.001", "-q", NULL);
	assert_int_equal(r.status, 1);
	assert_true(strlen(r.err) > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_help),
		cmocka_unit_test(test_bad_options),
		cmocka_unit_test(test_seed_and_force),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
