/*
 * libFuzzer target for the strict parsers: request and response heads and
 * chunked framing, fed whole and split at a byte the input chooses, and
 * the path normalization behind --deny-path.  It checks the invariants the
 * proxy relies on: a complete head never claims more bytes than it was
 * given, every field lies inside the head, feeding chunked bytes in two
 * pieces gives the same result as in one, and a normalized path stays in
 * its buffer.
 *
 * Built and run by ./hammerstack test (build-fuzz/, -DHS_FUZZ=ON); by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I.. -I../../common \
 *         fuzz_parse.c ../parse.c -o fuzz_parse && ./fuzz_parse -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_msg(const struct bal_msg *m, size_t r)
{
	for (int i = 0; i < m->nhdrs; i++) {
		const struct bal_hdr *h = &m->hdrs[i];
		if (h->name_off + h->name_len > r ||
		    h->val_off + h->val_len > r)
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct bal_limits lim = { 512, 2048, 32 };
	static struct bal_msg m;
	const char *p = (const char *)data;
	ssize_t r;

	r = bal_parse_request(p, size, &lim, &m, NULL);
	if (r > (ssize_t)size)
		abort();
	if (r > 0) {
		check_msg(&m, (size_t)r);
		if (m.chunked && m.content_length >= 0)
			abort();
		/* Every prefix of a complete head is incomplete, never an error. */
		for (size_t k = 0; k < (size_t)r; k += 7)
			if (bal_parse_request(p, k, &lim, &m, NULL) != 0)
				abort();
	}
	if (size < 4096) {
		/* The deny-path normalization stays in its n + 3 bytes. */
		char *norm = malloc(size + 3);
		size_t len = bal_path_normalize(p, size, norm);
		if (len > size + 1 || norm[0] != '/' || norm[len] != '\0')
			abort();
		free(norm);
	}
	r = bal_parse_response(p, size, 2048, &m, NULL);
	if (r > (ssize_t)size)
		abort();
	if (r > 0)
		check_msg(&m, (size_t)r);
	if (size > 0) {
		/* Chunked framing: whole and split feeds must agree. */
		struct bal_chunk a, b;
		const char *body = p + 1;
		size_t n = size - 1, split = data[0] % (n + 1);
		ssize_t ra, r1, r2 = 0;
		memset(&a, 0, sizeof(a));
		memset(&b, 0, sizeof(b));
		ra = bal_chunk_feed(&a, body, n, NULL);
		r1 = bal_chunk_feed(&b, body, split, NULL);
		if (r1 >= 0 && (size_t)r1 == split)
			r2 = bal_chunk_feed(&b, body + split, n - split, NULL);
		if ((ra < 0) != (r1 < 0 || r2 < 0))
			abort();
		if (ra >= 0 && (ra != r1 + r2 ||
				bal_chunk_done(&a) != bal_chunk_done(&b) ||
				a.total != b.total))
			abort();
		if (ra > (ssize_t)n)
			abort();
	}
	return 0;
}
