/*
 * What the checker compares: the product fields of a JSON body (jansson)
 * and the same fields read straight from the SQLite file, bypassing every
 * server and cache, for the final served-vs-database check.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>

#include "checker.h"

int
chk_parse_product(const char *body, size_t len, struct chk_product *out)
{
	json_error_t jerr;
	json_t *root, *v;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	root = json_loadb(body, len, 0, &jerr);
	if (root == NULL || !json_is_object(root))
		goto done;
	v = json_object_get(root, "version");
	if (!json_is_integer(v))
		goto done;
	out->version = json_integer_value(v);
	if (json_is_integer(v = json_object_get(root, "id")))
		out->id = json_integer_value(v);
	if (json_is_integer(v = json_object_get(root, "price_cents")))
		out->price_cents = json_integer_value(v);
	if (json_is_integer(v = json_object_get(root, "stock")))
		out->stock = json_integer_value(v);
	if (json_is_string(v = json_object_get(root, "name")))
		snprintf(out->name, sizeof(out->name), "%s",
			 json_string_value(v));
	rc = 0;
done:
	json_decref(root);
	return rc;
}

int
chk_db_read(const char *path, const int64_t *ids, int n,
	    struct chk_product *rows, int *found, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int rc = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		snprintf(err, errlen, "cannot open %s: %s", path,
			 db ? sqlite3_errmsg(db) : "out of memory");
		goto done;
	}
	/* Servers may still be checkpointing: wait rather than fail. */
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_prepare_v2(db,
			       "SELECT version, name, price_cents, stock "
			       "FROM products WHERE id = ?",
			       -1, &st, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
		goto done;
	}
	for (int i = 0; i < n; i++) {
		int s;

		memset(&rows[i], 0, sizeof(rows[i]));
		rows[i].id = ids[i];
		found[i] = 0;
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, ids[i]);
		s = sqlite3_step(st);
		if (s == SQLITE_ROW) {
			const unsigned char *name = sqlite3_column_text(st, 1);

			found[i] = 1;
			rows[i].version = sqlite3_column_int64(st, 0);
			snprintf(rows[i].name, sizeof(rows[i].name), "%s",
				 name ? (const char *)name : "");
			rows[i].price_cents = sqlite3_column_int64(st, 2);
			rows[i].stock = sqlite3_column_int64(st, 3);
		} else if (s != SQLITE_DONE) {
			snprintf(err, errlen, "%s: %s", path,
				 sqlite3_errmsg(db));
			goto done;
		}
	}
	rc = 0;
done:
	sqlite3_finalize(st);
	sqlite3_close(db);
	return rc;
}
