/* A driver for tests/unit/encoder_parity.py: loads a model directory and
 * embeds what arrives on stdin, one JSON object a line:
 *   {"ids": [101, ...]}   the token ids as they are (sg_encoder_embed_ids)
 *   {"text": "..."}       a text, tokenised by semgate (sg_encoder_embed)
 * and prints one JSON line each: {"emb": [...], "ids": [...]} (ids: what
 * semgate's tokenizer made of a text), or {"error": "..."}. Lines are
 * embedded in batches of --batch N (default 1) so batching is exercised.
 * With --check only, prints the load error (or "ok") and exits 0/1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "semgate/encoder.h"

#define MAX_LINES 4096

int main(int argc, char **argv)
{
	const char *dir = NULL;
	int batch = 1, check_only = 0, max_tokens = 0;
	char err[1024];
	sg_encoder_t *m;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
			batch = atoi(argv[++i]);
		else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc)
			max_tokens = atoi(argv[++i]);
		else if (strcmp(argv[i], "--check") == 0)
			check_only = 1;
		else
			dir = argv[i];
	}
	if (dir == NULL || batch < 1) {
		fprintf(stderr, "usage: encoder_dump [--batch N] [--max-tokens N] [--check] DIR\n");
		return 2;
	}
	sg_encoder_opts_t o = {max_tokens, NULL, 0};
	int rc = sg_encoder_load(&m, dir, &o, err, sizeof(err));
	if (check_only) {
		printf("%s\n", rc ? err : "ok");
		sg_encoder_free(m);
		return rc ? 1 : 0;
	}
	if (rc) {
		fprintf(stderr, "load: %s\n", err);
		return 1;
	}
	int dim = sg_encoder_dim(m), maxt = sg_encoder_max_tokens(m);
	sg_encoder_ws_t *ws = sg_encoder_ws_new(m, batch);
	float *out = malloc(sizeof(float) * (size_t)dim * (size_t)batch);
	int32_t *idbuf = malloc(sizeof(int32_t) * (size_t)maxt * (size_t)batch);
	int32_t *tok = malloc(sizeof(int32_t) * (size_t)maxt);
	const int32_t **rows = calloc((size_t)batch, sizeof(*rows));
	int *lens = calloc((size_t)batch, sizeof(*lens));
	const char **texts = calloc((size_t)batch, sizeof(*texts));
	size_t *tlens = calloc((size_t)batch, sizeof(*tlens));
	json_t **held = calloc((size_t)batch, sizeof(*held));
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int kind = 0, nb = 0; /* kind of the batch: 1 ids, 2 text */

	for (;;) {
		n = getline(&line, &cap, stdin);
		json_t *j = n > 0 ? json_loads(line, JSON_ALLOW_NUL, NULL) : NULL;
		int k = json_object_get(j, "ids") ? 1 : json_object_get(j, "text") ? 2 : 0;
		/* flush when the batch is full, the kind changes, or at the end */
		if (nb && (n <= 0 || nb == batch || k != kind)) {
			rc = kind == 1 ? sg_encoder_embed_ids(m, ws, rows, lens, nb, out)
			               : sg_encoder_embed(m, ws, texts, tlens, nb, out);
			for (int i = 0; i < nb; i++) {
				if (rc) {
					printf("{\"error\":\"%d\"}\n", rc);
					continue;
				}
				printf("{\"emb\":[");
				for (int d = 0; d < dim; d++)
					printf("%s%.9g", d ? "," : "", out[(size_t)i * dim + d]);
				printf("]");
				if (kind == 2) {
					int c = sg_encoder_tokenize(m, texts[i], tlens[i], tok);
					printf(",\"ids\":[");
					for (int t = 0; t < c; t++)
						printf("%s%d", t ? "," : "", tok[t]);
					printf("]");
				}
				printf("}\n");
				json_decref(held[i]);
			}
			nb = 0;
		}
		if (n <= 0)
			break;
		if (k == 0) {
			printf("{\"error\":\"bad line\"}\n");
			json_decref(j);
			continue;
		}
		kind = k;
		held[nb] = j;
		if (k == 1) {
			json_t *a = json_object_get(j, "ids");
			int c = (int)json_array_size(a);
			if (c > maxt)
				c = maxt;
			for (int t = 0; t < c; t++)
				idbuf[(size_t)nb * maxt + t] = (int32_t)json_integer_value(json_array_get(a, t));
			rows[nb] = idbuf + (size_t)nb * maxt;
			lens[nb] = c;
		} else {
			json_t *t = json_object_get(j, "text");
			texts[nb] = json_string_value(t);
			tlens[nb] = json_string_length(t);
		}
		nb++;
	}
	fflush(stdout);
	free(line);
	free(out);
	free(idbuf);
	free(tok);
	free(rows);
	free(lens);
	free(texts);
	free(tlens);
	free(held);
	sg_encoder_ws_free(ws);
	sg_encoder_free(m);
	return 0;
}
