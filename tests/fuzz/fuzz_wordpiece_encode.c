/* Fuzz target: WordPiece encoding (cache/wordpiece.c) of arbitrary bytes, the
 * text of every request. Input: a byte picking one of four tokenizers
 * (uncased; cased; lower case without accent stripping; no clean_text, no
 * CJK handling), a byte picking max_len, a byte picking a split point, then
 * the text. Checked: [CLS] ... [SEP] with ids in range and at most max_len of
 * them; the output at max_len is the full output cut (the early stop changes
 * nothing); tokens() agrees with encode(); and a text split at an ASCII
 * space encodes as its two halves one after the other. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "semgate/wordpiece.h"

#define MAX_IDS 8192

static sg_wordpiece_t *tok[4];
static int32_t full[MAX_IDS], cut[MAX_IDS], part[MAX_IDS];

/* A vocabulary with ## pieces, multi-byte and CJK entries, the marks and
 * jamo NFD produces, and [MASK] (matched in the text as it is). */
static const char *const vocab[] = {
	"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "ab", "##a", "##b", "##c", "un",
	"##aff", "##able", "the", "##s", "caf\xc3\xa9", "cafe", "e", "i", "##\xcc\x87",
	"\xc3\xa9", "##\xc3\xa9", "\xe6\x97\xa5", "##\xe6\x9c\xac", "\xe1\x84\x92",
	"##\xe1\x85\xa1", "##\xe1\x86\xab", "\xef\xbf\xbd", "##\xef\xbf\xbd", ",", "!", "?", "[",
	"]", "#", "##x", "x", "##\xf0\x9d\x85\xa5", "\xe3\x81\xae", "##\xe3\x81\xae",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	char path[256], err[512];
	FILE *f;
	int fd;

	fuzz_log_init();
	snprintf(path, sizeof(path), "%s/fuzz_wordpiece_vocab_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	fd = mkstemp(path);
	f = fd < 0 ? NULL : fdopen(fd, "w");
	if (f == NULL) {
		perror("mkstemp");
		abort();
	}
	for (size_t i = 0; i < SG_ARRAY_SIZE(vocab); i++)
		fprintf(f, "%s\n", vocab[i]);
	fclose(f);
	for (int k = 0; k < 4; k++) {
		sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
		if (k == 1)
			o.lowercase = 0;
		if (k == 2)
			o.strip_accents = 0;
		if (k == 3) {
			o.clean_text = 0;
			o.handle_chinese = 0;
			o.max_chars_per_word = 7;
		}
		if (sg_wordpiece_load_vocab(&tok[k], path, &o, err, sizeof(err)) != 0) {
			fprintf(stderr, "fuzz_wordpiece_encode: %s\n", err);
			abort();
		}
	}
	unlink(path);
	return 0;
}

static void check_ids(const sg_wordpiece_t *t, const int32_t *ids, int n, const char *what)
{
	for (int j = 0; j < n; j++)
		FUZZ_CHECK(ids[j] >= 0 && ids[j] < sg_wordpiece_vocab_size(t), "%s: id %d", what,
		           ids[j]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_input_t in = {data, size};
	const sg_wordpiece_t *t = tok[fuzz_u8(&in) % 4];
	int max_len = 2 + fuzz_u8(&in) % 40;
	size_t at = fuzz_u8(&in);
	sg_iovec_t text = fuzz_bytes(&in, size);
	int32_t cls = sg_wordpiece_id(t, "[CLS]"), sep = sg_wordpiece_id(t, "[SEP]");
	int k, m, a, b;

	/* a private copy: ASan then sees exactly the text's bounds */
	char *s = malloc(text.len ? text.len : 1);
	if (s == NULL)
		return 0;
	memcpy(s, text.base, text.len);

	k = sg_wordpiece_encode(t, s, text.len, full, MAX_IDS);
	FUZZ_CHECK(k >= 2 && k <= MAX_IDS, "%d ids", k);
	FUZZ_CHECK(full[0] == cls && full[k - 1] == sep, "not [CLS] ... [SEP]");
	check_ids(t, full, k, "full");
	if (k < MAX_IDS) { /* not cut itself */
		m = sg_wordpiece_encode(t, s, text.len, cut, max_len);
		FUZZ_CHECK(m == (k < max_len ? k : max_len), "max_len %d: %d ids of %d", max_len, m, k);
		FUZZ_CHECK(cut[0] == cls && cut[m - 1] == sep, "max_len %d: not [CLS] ... [SEP]",
		           max_len);
		FUZZ_CHECK(memcmp(cut + 1, full + 1, (size_t)(m - 2) * sizeof(*cut)) == 0,
		           "max_len %d: not the full output cut", max_len);
		m = sg_wordpiece_tokens(t, s, text.len, cut, MAX_IDS);
		FUZZ_CHECK(m == k - 2 && memcmp(cut, full + 1, (size_t)m * sizeof(*cut)) == 0,
		           "tokens() disagrees with encode()");

		/* two halves around an ASCII space: the pieces one after the other */
		if (text.len > 0 && at < text.len && s[at] == ' ') {
			a = sg_wordpiece_tokens(t, s, at, part, MAX_IDS);
			b = a < 0 ? -1 : sg_wordpiece_tokens(t, s + at + 1, text.len - at - 1, part + a,
			                                     MAX_IDS - a);
			FUZZ_CHECK(a >= 0 && b >= 0 && a + b == k - 2 &&
			                   memcmp(part, full + 1, (size_t)(a + b) * sizeof(*part)) == 0,
			           "split at %zu: %d + %d ids, whole %d", at, a, b, k - 2);
		}
	}
	free(s);
	return 0;
}
