/*
 * Unit tests for db/: seeding, queries, writes, migrations and locking,
 * against real SQLite files in a temporary directory.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "db.h"

static void
test_placeholder(void **state)
{
	assert_null(db_open("/nonexistent/dir/x.db", 0, 0, NULL, 0));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_placeholder),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
