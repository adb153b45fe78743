/*
 * What the checker compares: the product fields of a JSON body (jansson)
 * and the same fields read straight from the database (the SQLite file or
 * the PostgreSQL primary, through db.h), bypassing every server and cache,
 * for the final served-vs-database check.
 */
#include <stdio.h>
#include <string.h>

#include <jansson.h>
#include "checker.h"
#include "db.h"

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
	struct db *db;
	int rc = -1;

	/* Servers may still be checkpointing: wait rather than fail. */
	db = db_open(path, 0, 5000, err, errlen);
	if (db == NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		struct db_product_detail d;
		int s = db_product_detail(db, ids[i], &d);

		memset(&rows[i], 0, sizeof(rows[i]));
		rows[i].id = ids[i];
		found[i] = s == DB_OK;
		if (s == DB_OK) {
			rows[i].version = d.product.version;
			snprintf(rows[i].name, sizeof(rows[i].name), "%s",
				 d.product.name);
			rows[i].price_cents = d.product.price_cents;
			rows[i].stock = d.product.stock;
		} else if (s != DB_NOTFOUND) {
			snprintf(err, errlen, "%s: %s", path, db_errmsg(db));
			goto done;
		}
	}
	rc = 0;
done:
	db_close(db);
	return rc;
}
