/* The mock upstream's embeddings: a hashed bag of words, as floats or base64. */

#include "mock.h"

/* ---- embeddings ----------------------------------------------------------- */

static int is_word_byte(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || ch >= 0x80;
}

/* Hashed bag of lower-cased words: FNV-1a picks a bucket and a sign. Texts
 * sharing words point the same way; the result has unit length. */
void embed_text(const char *s, size_t n, float *v, unsigned dim)
{
	double norm = 0;
	size_t i = 0;
	unsigned d;
	uint64_t h;
	unsigned char ch;

	memset(v, 0, dim * sizeof(*v));
	while (i < n) {
		while (i < n && !is_word_byte((unsigned char)s[i]))
			i++;
		if (i == n)
			break;
		h = 14695981039346656037ULL;
		while (i < n && is_word_byte((unsigned char)s[i])) {
			ch = (unsigned char)s[i++];
			if (ch >= 'A' && ch <= 'Z')
				ch += 'a' - 'A';
			h = (h ^ ch) * 1099511628211ULL;
		}
		v[(h >> 1) % dim] += (h & 1) ? -1.0f : 1.0f;
	}
	for (d = 0; d < dim; d++)
		norm += (double)v[d] * v[d];
	if (norm == 0) {
		v[0] = 1.0f;	/* no words: still a unit vector */
		return;
	}
	norm = sqrt(norm);
	for (d = 0; d < dim; d++)
		v[d] = (float)(v[d] / norm);
}

/* |x| <= 1: "0.123457" style, cheaper than printf. */
void buf_add_unit_float(struct buf *b, float x)
{
	char tmp[12], *p = tmp;
	long q = lround(fabs((double)x) * 1e6);
	int i;

	if (x < 0 && q != 0)
		*p++ = '-';
	*p++ = (char)('0' + q / 1000000);
	*p++ = '.';
	for (i = 5; i >= 0; i--)
		p[i] = (char)('0' + q % 10), q /= 10;
	buf_add(b, tmp, (size_t)(p + 6 - tmp));
}

/* encoding_format "base64": little-endian float32s, as OpenAI sends them. */
void buf_add_base64_floats(struct buf *b, const float *v, unsigned dim)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char in[3];
	size_t total = (size_t)dim * 4, i, k;
	uint32_t u;
	char q[4];

	buf_addc(b, '"');
	for (i = 0; i < total; i += 3) {
		for (k = 0; k < 3; k++) {
			if (i + k < total) {
				memcpy(&u, &v[(i + k) / 4], 4);
				in[k] = (unsigned char)(u >> (8 * ((i + k) % 4)));
			} else {
				in[k] = 0;
			}
		}
		q[0] = tab[in[0] >> 2];
		q[1] = tab[((in[0] & 3) << 4) | (in[1] >> 4)];
		q[2] = i + 1 < total ? tab[((in[1] & 15) << 2) | (in[2] >> 6)] : '=';
		q[3] = i + 2 < total ? tab[in[2] & 63] : '=';
		buf_add(b, q, 4);
	}
	buf_addc(b, '"');
}
