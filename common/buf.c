/*
 * Growable byte buffer; see hs_buf.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hs_buf.h"
#include "hs_util.h"

void
hs_buf_reserve(struct hs_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	b->data = hs_xrealloc(b->data, cap);
	b->cap = cap;
}

void
hs_buf_append(struct hs_buf *b, const void *p, size_t n)
{
	hs_buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
hs_buf_puts(struct hs_buf *b, const char *s)
{
	hs_buf_append(b, s, strlen(s));
}

void
hs_buf_printf(struct hs_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	hs_buf_reserve(b, 128);
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= b->cap - b->len) {
		hs_buf_reserve(b, (size_t)n);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

void
hs_buf_json_str(struct hs_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;

	hs_buf_reserve(b, strlen(s) + 2);
	hs_buf_append(b, "\"", 1);
	for (; *p; p++) {
		char esc[6] = { '\\', 'u', '0', '0', 0, 0 };

		switch (*p) {
		case '"':
			hs_buf_append(b, "\\\"", 2);
			break;
		case '\\':
			hs_buf_append(b, "\\\\", 2);
			break;
		case '\n':
			hs_buf_append(b, "\\n", 2);
			break;
		case '\r':
			hs_buf_append(b, "\\r", 2);
			break;
		case '\t':
			hs_buf_append(b, "\\t", 2);
			break;
		default:
			if (*p < 0x20) {
				esc[4] = hex[*p >> 4];
				esc[5] = hex[*p & 15];
				hs_buf_append(b, esc, 6);
			} else {
				hs_buf_append(b, p, 1);
			}
		}
	}
	hs_buf_append(b, "\"", 1);
}

void
hs_buf_reset(struct hs_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

char *
hs_buf_steal(struct hs_buf *b, size_t *len)
{
	char *p;

	hs_buf_reserve(b, 0);
	p = b->data;
	if (len)
		*len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

void
hs_buf_free(struct hs_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
