/* Fuzz target: the tokenizer.json reader of the WordPiece tokenizer
 * (cache/wordpiece.c), which reads every model directory semgate is given.
 * Input: the file's bytes (written to a scratch file, the loader's only way
 * in). Checked: a refusal comes with a message naming the file and leaves
 * nothing behind; an accepted tokenizer has a vocabulary whose ids and texts
 * agree, special tokens inside it, and encodes texts of every kind into
 * [CLS] ... [SEP] with ids in range, cut at max_len exactly as the full
 * output would be cut. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "semgate/wordpiece.h"

static char path[256];

/* Texts that reach every step: added tokens, accents and marks to strip and
 * reorder, CJK, Hangul, U+0130, controls, invalid UTF-8, a long word. */
static const char *const texts[] = {
	"",
	"Hello, World! What's the best way to lose weight?",
	"a[SEP]b [MASK] [CLS][UNK] [sep] [PAD]",
	"na\xc3\xafve caf\xc3\xa9 e\xcc\x81\xcc\x96 \xc4\xb0stanbul q\xf0\x9d\x85\xad\xf0\x9d\x85\xa5q",
	"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
	"x\x01y\xe2\x80\x8bz\xef\xbb\xbf \xc2\xa0\xe3\x80\x80\t\r\n \xff\xfe\xe2\x82 \xf0\x9f\x98\x80",
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");
	int fd;

	fuzz_log_init();
	snprintf(path, sizeof(path), "%s/fuzz_wordpiece_json_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		abort();
	}
	close(fd);
	return 0;
}

static void check_encodings(const sg_wordpiece_t *t)
{
	int n = sg_wordpiece_vocab_size(t);
	int32_t full[1024], cut[64];

	for (size_t i = 0; i < SG_ARRAY_SIZE(texts); i++) {
		size_t len = strlen(texts[i]);
		int k = sg_wordpiece_encode(t, texts[i], len, full, SG_ARRAY_SIZE(full));

		FUZZ_CHECK(k >= 2 && k <= (int)SG_ARRAY_SIZE(full), "text %zu: %d ids", i, k);
		for (int j = 0; j < k; j++)
			FUZZ_CHECK(full[j] >= 0 && full[j] < n, "text %zu: id %d out of range", i,
			           full[j]);
		for (int max = 2; max < 12; max++) {
			int m = sg_wordpiece_encode(t, texts[i], len, cut, max);
			FUZZ_CHECK(m == (k < max ? k : max), "text %zu max %d: %d ids of %d", i, max, m,
			           k);
			FUZZ_CHECK(cut[0] == full[0] && cut[m - 1] == full[k - 1],
			           "text %zu: not [CLS] ... [SEP]", i);
			FUZZ_CHECK(memcmp(cut + 1, full + 1, (size_t)(m - 2) * sizeof(*cut)) == 0,
			           "text %zu max %d: not the full output cut", i, max);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const sg_wordpiece_opts_t *o;
	sg_wordpiece_t *t = (sg_wordpiece_t *)&path; /* must be overwritten */
	char err[512] = "";
	FILE *f;
	int rc, n;

	f = fopen(path, "wb");
	if (f == NULL || fwrite(data, 1, size, f) != size) {
		perror(path);
		abort();
	}
	fclose(f);
	rc = sg_wordpiece_load_json(&t, path, err, sizeof(err));
	if (rc != 0) {
		FUZZ_CHECK(rc < 0 && rc > SG__ELAST, "bad code %d", rc);
		FUZZ_CHECK(t == NULL, "refused but returned a tokenizer");
		FUZZ_CHECK(strstr(err, path) != NULL, "message \"%s\" does not name the file", err);
		return 0;
	}
	n = sg_wordpiece_vocab_size(t);
	o = sg_wordpiece_opts(t);
	FUZZ_CHECK(n > 0, "accepted an empty vocabulary");
	FUZZ_CHECK(sg_wordpiece_id(t, o->unk) >= 0, "[UNK] \"%s\" not in the vocabulary", o->unk);
	for (int id = 0; id < n && id < 64; id++) {
		const char *s = sg_wordpiece_token(t, id);
		FUZZ_CHECK(s != NULL && sg_wordpiece_id(t, s) == id, "id %d and its text disagree", id);
	}
	check_encodings(t);
	sg_wordpiece_free(t);
	return 0;
}
