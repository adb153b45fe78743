/*
 * A growable byte buffer for building response bodies and text exports.
 * The buffer owns data; hs_buf_free releases it, hs_buf_steal hands it over
 * (the caller then frees it with free(3)).  data is always NUL-terminated.
 */
#ifndef HS_BUF_H
#define HS_BUF_H

#include <stddef.h>

struct hs_buf {
	char *data;
	size_t len;
	size_t cap;
};

#define HS_BUF_INIT        \
	{                  \
		NULL, 0, 0 \
	}

void hs_buf_reserve(struct hs_buf *b, size_t extra);
void hs_buf_append(struct hs_buf *b, const void *p, size_t n);
void hs_buf_puts(struct hs_buf *b, const char *s);
void hs_buf_printf(struct hs_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included. */
void hs_buf_json_str(struct hs_buf *b, const char *s);
void hs_buf_reset(struct hs_buf *b);
char *hs_buf_steal(struct hs_buf *b, size_t *len);
void hs_buf_free(struct hs_buf *b);

#endif
