/* The verifier's evidence for the pairs of a qqp_replay.py --dump (analysis aid for
 * bench/QUALITY.md "The model embedder"; not part of the build).
 *
 *   cc -O2 -Iinclude -Icache bench/verify_evidence.c build-q/libsemgate_core.a \
 *      $(pkg-config --libs libutf8proc) -lm -o build-q/verify_evidence
 *   build-q/verify_evidence < DUMP > EVIDENCE.tsv
 *
 * Input, one line a pair: label, state, similarity, correct, b, returned a (TSV, as written
 * by qqp_replay.py --dump from a run with the verifier off, so the similarity is the
 * cosine of the nearest entry). Output: the input's first four columns, then what
 * sg_verify_explain() (default knobs) finds in (b, a): miss_a miss_b number negation qtype
 * antonym order context covered score, then the cosine of the two texts under the `local`
 * embedder (d128, defaults) and 1 when the two texts are identical bytes. Since the score is
 * the cosine minus fixed penalties, other knob settings can be replayed from these columns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/embed_local.h"
#include "semgate/verify.h"

static char *field(char **p)
{
	char *s = *p, *t;
	if (s == NULL)
		return "";
	t = strchr(s, '\t');
	if (t) {
		*t = '\0';
		*p = t + 1;
	} else {
		*p = NULL;
	}
	return s;
}

int main(void)
{
	sg_verify_t *v;
	sg_embed_local_t *e;
	sg_embed_local_opts_t lo = {0};
	static char line[1 << 16];
	float va[128], vb[128];

	lo.dim = 128;
	if (sg_verify_new(&v, NULL) != 0 || sg_embed_local_new(&e, &lo) != 0)
		return 1;
	while (fgets(line, sizeof(line), stdin)) {
		size_t n = strlen(line);
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		char *p = line;
		char *lab = field(&p), *st = field(&p), *sim = field(&p), *ok = field(&p);
		char *b = field(&p), *a = field(&p);
		sg_verify_evidence_t ev;
		float cos = *sim ? strtof(sim, NULL) : 0, lcos = 0;
		sg_verify_explain(v, b, strlen(b), a, strlen(a), cos, &ev);
		if (*a && sg_embed_local_embed(e, a, strlen(a), va) == 0 &&
		    sg_embed_local_embed(e, b, strlen(b), vb) == 0)
			for (int i = 0; i < 128; i++)
				lcos += va[i] * vb[i];
		printf("%s\t%s\t%s\t%s\t%.3f\t%.3f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.4f\t%.4f\t%d\n", lab,
		       st, sim, ok, ev.miss_a, ev.miss_b, ev.number, ev.negation, ev.qtype,
		       ev.antonym, ev.order, ev.context, ev.covered, ev.score, lcos,
		       strcmp(a, b) == 0);
	}
	sg_verify_free(v);
	sg_embed_local_free(e);
	return 0;
}
