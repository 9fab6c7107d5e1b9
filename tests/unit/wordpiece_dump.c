/* A driver for tests/unit/wordpiece_parity.py: loads a tokenizer and encodes
 * texts read from stdin, one line of ids per text on stdout.
 *
 *   wordpiece_dump --json tokenizer.json [--max-len N] [--bench ROUNDS]
 *   wordpiece_dump --vocab vocab.txt [--lowercase 0|1] [--strip-accents -1|0|1]
 *                  [--clean-text 0|1] [--chinese 0|1] [--max-chars N] [--prefix S]
 *                  [--max-len N] [--bench ROUNDS]
 *
 * Input: texts as <byte count>\n<bytes>, so that any byte can be sent.
 * Output: "[CLS] ... [SEP]" ids encoded with max_len N (0, the default: no
 * limit). A tokenizer that fails to load prints "ERROR <code> <message>" and
 * exits 2. --bench encodes every text ROUNDS times and prints timings instead.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/wordpiece.h"

static char *read_text(size_t *len)
{
	unsigned long long n;
	char *s;

	if (scanf("%llu", &n) != 1 || getchar() != '\n' || n > (1u << 30))
		return NULL;
	s = malloc(n + 1);
	if (s == NULL || fread(s, 1, n, stdin) != n) {
		free(s);
		return NULL;
	}
	s[n] = '\0';
	*len = n;
	return s;
}

static void copy_opt(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src);
}

int main(int argc, char **argv)
{
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	const char *json = NULL, *vocab = NULL;
	int max_len = 0, rounds = 0, rc;
	sg_wordpiece_t *t;
	char err[512] = "";
	char **texts = NULL;
	size_t *lens = NULL, n = 0, cap = 0, bytes = 0;

	for (int i = 1; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (strcmp(k, "--json") == 0)
			json = v;
		else if (strcmp(k, "--vocab") == 0)
			vocab = v;
		else if (strcmp(k, "--lowercase") == 0)
			o.lowercase = atoi(v);
		else if (strcmp(k, "--strip-accents") == 0)
			o.strip_accents = atoi(v);
		else if (strcmp(k, "--clean-text") == 0)
			o.clean_text = atoi(v);
		else if (strcmp(k, "--chinese") == 0)
			o.handle_chinese = atoi(v);
		else if (strcmp(k, "--max-chars") == 0)
			o.max_chars_per_word = atoi(v);
		else if (strcmp(k, "--prefix") == 0)
			copy_opt(o.prefix, sizeof(o.prefix), v);
		else if (strcmp(k, "--max-len") == 0)
			max_len = atoi(v);
		else if (strcmp(k, "--bench") == 0)
			rounds = atoi(v);
		else {
			fprintf(stderr, "wordpiece_dump: unknown option %s\n", k);
			return 1;
		}
	}
	if ((json == NULL) == (vocab == NULL)) {
		fprintf(stderr, "wordpiece_dump: give --json or --vocab\n");
		return 1;
	}
	rc = json ? sg_wordpiece_load_json(&t, json, err, sizeof(err))
	          : sg_wordpiece_load_vocab(&t, vocab, &o, err, sizeof(err));
	if (rc) {
		printf("ERROR %d %s\n", rc, err);
		return 2;
	}
	for (;;) {
		size_t len;
		char *s = read_text(&len);
		if (s == NULL)
			break;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			texts = realloc(texts, cap * sizeof(*texts));
			lens = realloc(lens, cap * sizeof(*lens));
			if (texts == NULL || lens == NULL)
				return 1;
		}
		texts[n] = s;
		lens[n++] = len;
		bytes += len;
	}
	if (rounds > 0) {
		int cap_ids = max_len ? max_len : 512;
		int32_t *ids = malloc((size_t)cap_ids * sizeof(*ids));
		uint64_t t0 = sg_now_us(), total = 0;
		if (ids == NULL)
			return 1;
		for (int r = 0; r < rounds; r++)
			for (size_t i = 0; i < n; i++)
				total += (uint64_t)sg_wordpiece_encode(t, texts[i], lens[i], ids, cap_ids);
		free(ids);
		double us = (double)(sg_now_us() - t0);
		printf("%zu texts x %d rounds, %zu bytes each round: %.3f us/text, %.1f MB/s, "
		       "%llu ids\n", n, rounds, bytes, us / ((double)n * rounds),
		       (double)bytes * rounds / us, (unsigned long long)total);
	} else {
		for (size_t i = 0; i < n; i++) {
			/* no limit: a character yields at most 4 tokens (NFD) */
			int cap_ids = max_len ? max_len : (int)(4 * lens[i] + 8);
			int32_t *ids = malloc((size_t)cap_ids * sizeof(*ids));
			int k = ids ? sg_wordpiece_encode(t, texts[i], lens[i], ids, cap_ids) : -1;
			for (int j = 0; j < k; j++)
				printf(j ? " %d" : "%d", ids[j]);
			printf(k < 0 ? "ERROR %d\n" : "\n", k);
			free(ids);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(texts[i]);
	free(texts);
	free(lens);
	sg_wordpiece_free(t);
	return 0;
}
