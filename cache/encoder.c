/* The BERT-family sentence encoder: see include/semgate/encoder.h.
 *
 * Layout of the forward pass. The batch's texts are packed one after another
 * into T = sum(len_i) rows (no padding rows: every matrix product works on
 * real tokens only, and attention runs per text over its own rows, which is
 * exactly the padding mask). Row-major activations, HF Linear weights
 * [out, in], so y = x W^T + b is sgemm(NoTrans, Trans).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>

#include "semgate/hash.h"
#include "semgate/encoder.h"
#include "gemm_nt_int.h"
#include "safetensors_int.h"

#define MAX_LAYERS 64
#define MAX_HIDDEN 4096
#define MAX_SMALL_FILE (64u << 20) /* config and tokenizer files */

enum pooling { POOL_MEAN, POOL_CLS };

typedef struct layer {
	const float *wq, *bq, *wk, *bk, *wv, *bv; /* [H,H], [H] */
	const float *wo, *bo, *ln1_g, *ln1_b;     /* attention output */
	const float *wi, *bi;                     /* [I,H], [I] */
	const float *wo2, *bo2, *ln2_g, *ln2_b;   /* [H,I], [H] */
	const uint16_t *h[6]; /* wq, wk, wv, wo, wi, wo2 as halves for short inputs
	                       * (make_halves), or NULL each */
	const uint16_t *a[6]; /* the same packed for AMX tiles (make_amx), or NULL each */
} layer_t;

struct sg_encoder {
	int hidden, layers, heads, inter, max_pos, vocab, type_vocab;
	float ln_eps;
	int max_tokens;
	int pooling; /* enum pooling */
	int normalize; /* the pipeline has a Normalize module (we always do) */
	char *prefix;
	size_t prefix_len;
	const float *word_emb, *pos_emb, *type_emb, *emb_ln_g, *emb_ln_b;
	layer_t layer[MAX_LAYERS];
	sg_wordpiece_t *tok;
	/* the weights file */
	uint8_t *map;
	size_t map_len;
	sg_st_t st;
	float **owned; /* widened (F16/BF16) or realigned tensors */
	size_t n_owned;
	uint16_t *halves; /* every layer's h[] (one block), or NULL */
	uint16_t *amx;    /* every layer's a[] (one block), or NULL */
	/* The AMX copy is made by the first batch that needs it (ensure_amx):
	 * the one part of a loaded model written after load, under amx_mu, and
	 * published by amx_state (0: not yet, 1: made, -1: none: no AMX, turned
	 * off, or it could not be made). */
	pthread_mutex_t amx_mu;
	_Atomic int amx_state;
	int amx_wide;     /* the widest input (K) of a packed tensor: the scratch's */
	char dtype[16];
	char id[512];
	char describe[256];
};

struct sg_encoder_ws {
	int max_batch;
	size_t rows_cap;          /* rows the buffers below hold */
	float *x, *q, *k, *v, *ctx, *tmp, *inter;
	float *scores;            /* [max_tokens * max_tokens] */
	int32_t *ids;             /* [max_batch * max_tokens] */
	int *lens;
	uint16_t *amx_scratch;    /* x as AMX tiles (gemm_nt_int.h), made with the first batch
	                           * that uses them */
};

/* --- small files ------------------------------------------------------------ */

static void path_join(char *out, size_t n, const char *dir, const char *file)
{
	snprintf(out, n, "%s/%s", dir, file);
}

static int file_exists(const char *dir, const char *file)
{
	char p[4096];
	struct stat sb;
	path_join(p, sizeof(p), dir, file);
	return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Parse a JSON file of the model directory. Missing and optional: 0 with
 * *out NULL. */
static int load_json(json_t **out, const char *dir, const char *file, int optional, char *err,
                     size_t errlen)
{
	char p[4096];
	json_error_t jerr;
	struct stat sb;

	*out = NULL;
	path_join(p, sizeof(p), dir, file);
	if (stat(p, &sb) != 0) {
		if (optional && errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", p, strerror(errno));
		return SG_EIO;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_size > (off_t)MAX_SMALL_FILE) {
		snprintf(err, errlen, "%s: not a regular file of at most %u MiB", p,
		         MAX_SMALL_FILE >> 20);
		return SG_ECORRUPT;
	}
	*out = json_load_file(p, JSON_REJECT_DUPLICATES, &jerr);
	if (*out == NULL) {
		snprintf(err, errlen, "%s: line %d: %s", p, jerr.line, jerr.text);
		return SG_ECORRUPT;
	}
	if (!json_is_object(*out) && !json_is_array(*out)) {
		json_decref(*out);
		*out = NULL;
		snprintf(err, errlen, "%s: not a JSON object", p);
		return SG_ECORRUPT;
	}
	return 0;
}

/* An integer member in [lo, hi]; absent: def (or an error when def < 0). */
static int get_int(json_t *o, const char *key, long lo, long hi, long def, int *out,
                   const char *file, char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);
	if (v == NULL) {
		if (def < 0) {
			snprintf(err, errlen, "%s: \"%s\" is missing", file, key);
			return SG_EINVAL;
		}
		*out = (int)def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
		snprintf(err, errlen, "%s: \"%s\" must be an integer in [%ld, %ld]", file, key, lo, hi);
		return SG_EINVAL;
	}
	*out = (int)json_integer_value(v);
	return 0;
}

/* --- config.json ------------------------------------------------------------ */

static int read_config(sg_encoder_t *m, const char *dir, char *err, size_t errlen)
{
	json_t *c;
	int rc = load_json(&c, dir, "config.json", 0, err, errlen);
	const char *f = "config.json";
	if (rc)
		return rc;
	if (!json_is_object(c)) {
		snprintf(err, errlen, "%s/config.json: not a JSON object", dir);
		rc = SG_ECORRUPT;
		goto out;
	}
	const char *type = json_string_value(json_object_get(c, "model_type"));
	if (type == NULL || strcmp(type, "bert") != 0) {
		snprintf(err, errlen,
		         "%s/config.json: model_type \"%s\" is not supported (the BERT family: "
		         "model_type \"bert\", e.g. MiniLM, BGE, GTE, E5)",
		         dir, type ? type : "(none)");
		rc = SG_EINVAL;
		goto out;
	}
	const char *act = json_string_value(json_object_get(c, "hidden_act"));
	if (act && strcmp(act, "gelu") != 0) {
		snprintf(err, errlen, "%s/config.json: hidden_act \"%s\" is not supported (\"gelu\")",
		         dir, act);
		rc = SG_EINVAL;
		goto out;
	}
	const char *pet = json_string_value(json_object_get(c, "position_embedding_type"));
	if (pet && strcmp(pet, "absolute") != 0) {
		snprintf(err, errlen,
		         "%s/config.json: position_embedding_type \"%s\" is not supported (\"absolute\")",
		         dir, pet);
		rc = SG_EINVAL;
		goto out;
	}
	char where[4200];
	snprintf(where, sizeof(where), "%s/%s", dir, f);
	if ((rc = get_int(c, "hidden_size", 8, MAX_HIDDEN, -1, &m->hidden, where, err, errlen)) ||
	    (rc = get_int(c, "num_hidden_layers", 1, MAX_LAYERS, -1, &m->layers, where, err, errlen)) ||
	    (rc = get_int(c, "num_attention_heads", 1, 256, -1, &m->heads, where, err, errlen)) ||
	    (rc = get_int(c, "intermediate_size", 1, 65536, -1, &m->inter, where, err, errlen)) ||
	    (rc = get_int(c, "max_position_embeddings", 2, 65536, -1, &m->max_pos, where, err,
	                  errlen)) ||
	    (rc = get_int(c, "vocab_size", 5, 1 << 22, -1, &m->vocab, where, err, errlen)) ||
	    (rc = get_int(c, "type_vocab_size", 1, 1024, 2, &m->type_vocab, where, err, errlen)))
		goto out;
	if (m->hidden % m->heads) {
		snprintf(err, errlen, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
		         where, m->hidden, m->heads);
		rc = SG_EINVAL;
		goto out;
	}
	json_t *eps = json_object_get(c, "layer_norm_eps");
	m->ln_eps = 1e-12f;
	if (eps) {
		if (!json_is_number(eps) || json_number_value(eps) <= 0 || json_number_value(eps) > 1) {
			snprintf(err, errlen, "%s: layer_norm_eps must be a number in (0, 1]", where);
			rc = SG_EINVAL;
			goto out;
		}
		m->ln_eps = (float)json_number_value(eps);
	}
out:
	json_decref(c);
	return rc;
}

/* --- the sentence-transformers files -------------------------------------- */

static int read_st_files(sg_encoder_t *m, const char *dir, const sg_encoder_opts_t *opts,
                         int *max_seq, char *err, size_t errlen)
{
	json_t *j = NULL;
	int rc;
	char where[4200];

	/* modules.json: Transformer, Pooling, Normalize are what we run. */
	if ((rc = load_json(&j, dir, "modules.json", 1, err, errlen)))
		return rc;
	if (j) {
		size_t i;
		json_t *mod;
		if (!json_is_array(j)) {
			snprintf(err, errlen, "%s/modules.json: not a JSON array", dir);
			rc = SG_ECORRUPT;
			goto out;
		}
		json_array_foreach(j, i, mod) {
			const char *t = json_string_value(json_object_get(mod, "type"));
			const char *path = json_string_value(json_object_get(mod, "path"));
			if (t == NULL) {
				snprintf(err, errlen, "%s/modules.json: module %zu has no \"type\"", dir, i);
				rc = SG_ECORRUPT;
				goto out;
			}
			const char *base = strrchr(t, '.') ? strrchr(t, '.') + 1 : t;
			if (strcmp(base, "Normalize") == 0) {
				m->normalize = 1;
			} else if (strcmp(base, "Pooling") == 0) {
				if (path == NULL || strcmp(path, "1_Pooling") != 0) {
					snprintf(err, errlen,
					         "%s/modules.json: the Pooling module must be at \"1_Pooling\"",
					         dir);
					rc = SG_EINVAL;
					goto out;
				}
			} else if (strcmp(base, "Transformer") != 0) {
				snprintf(err, errlen,
				         "%s/modules.json: module \"%s\" is not supported (Transformer, "
				         "Pooling, Normalize)",
				         dir, t);
				rc = SG_EINVAL;
				goto out;
			}
		}
		json_decref(j);
		j = NULL;
	}

	/* 1_Pooling/config.json: mean or CLS. */
	m->pooling = POOL_MEAN;
	if ((rc = load_json(&j, dir, "1_Pooling/config.json", 1, err, errlen)))
		return rc;
	if (j) {
		static const char *const unsupported[] = {
			"pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
			"pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"};
		int cls = json_is_true(json_object_get(j, "pooling_mode_cls_token"));
		int mean = json_is_true(json_object_get(j, "pooling_mode_mean_tokens"));
		const char *mode = json_string_value(json_object_get(j, "pooling_mode"));
		if (mode) {
			cls = strcmp(mode, "cls") == 0;
			mean = strcmp(mode, "mean") == 0;
		}
		for (size_t i = 0; i < SG_ARRAY_SIZE(unsupported); i++)
			if (json_is_true(json_object_get(j, unsupported[i])))
				cls = mean = 1; /* refused below */
		if (cls + mean != 1) {
			snprintf(err, errlen,
			         "%s/1_Pooling/config.json: the pooling must be exactly one of mean "
			         "or CLS",
			         dir);
			rc = SG_EINVAL;
			goto out;
		}
		m->pooling = cls ? POOL_CLS : POOL_MEAN;
		json_decref(j);
		j = NULL;
	}

	/* sentence_bert_config.json: max_seq_length. */
	*max_seq = 0;
	if ((rc = load_json(&j, dir, "sentence_bert_config.json", 1, err, errlen)))
		return rc;
	if (j) {
		snprintf(where, sizeof(where), "%s/sentence_bert_config.json", dir);
		if ((rc = get_int(j, "max_seq_length", 2, 65536, 0, max_seq, where, err, errlen)))
			goto out;
		json_decref(j);
		j = NULL;
	}

	/* config_sentence_transformers.json: the query prompt (E5's "query: "). */
	const char *prefix = opts ? opts->prefix : NULL;
	if ((rc = load_json(&j, dir, "config_sentence_transformers.json", 1, err, errlen)))
		return rc;
	if (prefix == NULL && j) {
		json_t *prompts = json_object_get(j, "prompts");
		const char *def = json_string_value(json_object_get(j, "default_prompt_name"));
		prefix = json_string_value(json_object_get(prompts, def ? def : "query"));
	}
	m->prefix = strdup(prefix ? prefix : "");
	if (m->prefix == NULL) {
		rc = SG_ENOMEM;
		goto out;
	}
	m->prefix_len = strlen(m->prefix);
out:
	json_decref(j);
	return rc;
}

/* --- the tokenizer ---------------------------------------------------------- */

static int read_tokenizer(sg_encoder_t *m, const char *dir, char *err, size_t errlen)
{
	char p[4096];
	if (file_exists(dir, "tokenizer.json")) {
		path_join(p, sizeof(p), dir, "tokenizer.json");
		return sg_wordpiece_load_json(&m->tok, p, err, errlen);
	}
	if (!file_exists(dir, "vocab.txt")) {
		snprintf(err, errlen, "%s: no tokenizer.json or vocab.txt", dir);
		return SG_EIO;
	}
	/* vocab.txt: the settings come from tokenizer_config.json */
	sg_wordpiece_opts_t o = sg_wordpiece_opts_default();
	json_t *tc;
	int rc = load_json(&tc, dir, "tokenizer_config.json", 1, err, errlen);
	if (rc)
		return rc;
	if (tc) {
		json_t *v;
		if ((v = json_object_get(tc, "do_lower_case")) && json_is_boolean(v))
			o.lowercase = json_is_true(v);
		if ((v = json_object_get(tc, "strip_accents")) && json_is_boolean(v))
			o.strip_accents = json_is_true(v);
		if ((v = json_object_get(tc, "tokenize_chinese_chars")) && json_is_boolean(v))
			o.handle_chinese = json_is_true(v);
		json_decref(tc);
	}
	path_join(p, sizeof(p), dir, "vocab.txt");
	return sg_wordpiece_load_vocab(&m->tok, p, &o, err, errlen);
}

/* --- the weights ------------------------------------------------------------ */

static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
	if (exp == 0) {
		if (man == 0) {
			bits = sign;
		} else { /* subnormal: renormalise */
			exp = 127 - 15 + 1;
			while (!(man & 0x400)) {
				man <<= 1;
				exp--;
			}
			bits = sign | exp << 23 | (man & 0x3ff) << 13;
		}
	} else if (exp == 31) {
		bits = sign | 0x7f800000u | man << 13;
	} else {
		bits = sign | (exp + 127 - 15) << 23 | man << 13;
	}
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

/* A tensor as F32 with the expected shape (rank 1 or 2; d1 0 for rank 1). */
static int tensor(sg_encoder_t *m, const char *prefix, const char *name, int64_t d0, int64_t d1,
                  const float **out, const char *dir, char *err, size_t errlen)
{
	char full[256];
	snprintf(full, sizeof(full), "%s%s", prefix, name);
	const sg_st_tensor_t *t = sg__st_find(&m->st, full);
	if (t == NULL) {
		snprintf(err, errlen, "%s/model.safetensors: tensor \"%s\" is missing", dir, full);
		return SG_EINVAL;
	}
	if (t->dtype == SG_ST_OTHER) {
		snprintf(err, errlen,
		         "%s/model.safetensors: tensor \"%s\" is %s (F32, F16 or BF16 are supported)",
		         dir, full, t->dtype_name);
		return SG_EINVAL;
	}
	int rank = d1 ? 2 : 1;
	if (t->rank != rank || t->shape[0] != d0 || (rank == 2 && t->shape[1] != d1)) {
		char want[64];
		if (rank == 2)
			snprintf(want, sizeof(want), "[%lld, %lld]", (long long)d0, (long long)d1);
		else
			snprintf(want, sizeof(want), "[%lld]", (long long)d0);
		snprintf(err, errlen, "%s/model.safetensors: tensor \"%s\" has the wrong shape (want %s)",
		         dir, full, want);
		return SG_EINVAL;
	}
	snprintf(m->dtype, sizeof(m->dtype), "%s", t->dtype_name);
	if (t->dtype == SG_ST_F32 && ((uintptr_t)t->data & 3) == 0) {
		*out = (const float *)(const void *)t->data; /* in place, shared */
	} else {
		float **grown = realloc(m->owned, (m->n_owned + 1) * sizeof(*grown));
		float *f = malloc(t->numel * sizeof(float) + 1);
		if (grown)
			m->owned = grown;
		if (grown == NULL || f == NULL) {
			free(f);
			snprintf(err, errlen, "out of memory");
			return SG_ENOMEM;
		}
		m->owned[m->n_owned++] = f;
		for (uint64_t i = 0; i < t->numel; i++) {
			uint16_t h;
			if (t->dtype == SG_ST_F32) {
				memcpy(&f[i], t->data + 4 * i, 4);
				continue;
			}
			memcpy(&h, t->data + 2 * i, 2);
			if (t->dtype == SG_ST_F16) {
				f[i] = half_to_float(h);
			} else {
				uint32_t bits = (uint32_t)h << 16;
				memcpy(&f[i], &bits, 4);
			}
		}
		*out = f;
	}
	/* A NaN or infinity in the weights poisons every vector. */
	for (int64_t i = 0; i < d0 * (d1 ? d1 : 1); i++)
		if (!isfinite((*out)[i])) {
			snprintf(err, errlen, "%s/model.safetensors: tensor \"%s\" holds NaN or infinity",
			         dir, full);
			return SG_EINVAL;
		}
	return 0;
}

static int read_weights(sg_encoder_t *m, const char *dir, int skip_hash, uint64_t *hash, char *err,
                        size_t errlen)
{
	char p[4096], name[128];
	int rc;

	path_join(p, sizeof(p), dir, "model.safetensors");
	if ((rc = sg__st_map(p, &m->map, &m->map_len, &m->st, err, errlen)))
		return rc;
	*hash = skip_hash ? 0 : sg_hash64(m->map, m->map_len, 0x5e3a9e7);

	/* The tensors' names: BertModel's own, or under a "bert." (BertFor*) or
	 * sentence-transformers prefix. */
	static const char *const prefixes[] = {"", "bert.", "model.", "0.auto_model."};
	const char *pre = NULL;
	for (size_t i = 0; i < SG_ARRAY_SIZE(prefixes) && pre == NULL; i++) {
		snprintf(name, sizeof(name), "%sembeddings.word_embeddings.weight", prefixes[i]);
		if (sg__st_find(&m->st, name))
			pre = prefixes[i];
	}
	if (pre == NULL) {
		snprintf(err, errlen,
		         "%s: no tensor \"embeddings.word_embeddings.weight\" (not a BERT model?)", p);
		return SG_EINVAL;
	}
	int H = m->hidden, I_ = m->inter;
#define T(nm, d0, d1, dst)                                                                   \
	do {                                                                                 \
		if ((rc = tensor(m, pre, nm, d0, d1, dst, dir, err, errlen)))                \
			return rc;                                                           \
	} while (0)
	T("embeddings.word_embeddings.weight", m->vocab, H, &m->word_emb);
	T("embeddings.position_embeddings.weight", m->max_pos, H, &m->pos_emb);
	T("embeddings.token_type_embeddings.weight", m->type_vocab, H, &m->type_emb);
	T("embeddings.LayerNorm.weight", H, 0, &m->emb_ln_g);
	T("embeddings.LayerNorm.bias", H, 0, &m->emb_ln_b);
	for (int l = 0; l < m->layers; l++) {
		layer_t *L = &m->layer[l];
		struct {
			const char *suffix;
			int64_t d0, d1;
			const float **dst;
		} w[] = {
			{"attention.self.query.weight", H, H, &L->wq},
			{"attention.self.query.bias", H, 0, &L->bq},
			{"attention.self.key.weight", H, H, &L->wk},
			{"attention.self.key.bias", H, 0, &L->bk},
			{"attention.self.value.weight", H, H, &L->wv},
			{"attention.self.value.bias", H, 0, &L->bv},
			{"attention.output.dense.weight", H, H, &L->wo},
			{"attention.output.dense.bias", H, 0, &L->bo},
			{"attention.output.LayerNorm.weight", H, 0, &L->ln1_g},
			{"attention.output.LayerNorm.bias", H, 0, &L->ln1_b},
			{"intermediate.dense.weight", I_, H, &L->wi},
			{"intermediate.dense.bias", I_, 0, &L->bi},
			{"output.dense.weight", H, I_, &L->wo2},
			{"output.dense.bias", H, 0, &L->bo2},
			{"output.LayerNorm.weight", H, 0, &L->ln2_g},
			{"output.LayerNorm.bias", H, 0, &L->ln2_b},
		};
		for (size_t i = 0; i < SG_ARRAY_SIZE(w); i++) {
			snprintf(name, sizeof(name), "encoder.layer.%d.%s", l, w[i].suffix);
			T(name, w[i].d0, w[i].d1, w[i].dst);
		}
	}
#undef T
	/* A deeper model than config.json says would silently lose layers. */
	snprintf(name, sizeof(name), "%sencoder.layer.%d.output.dense.weight", pre, m->layers);
	if (sg__st_find(&m->st, name)) {
		snprintf(err, errlen, "%s: has more layers than config.json's num_hidden_layers (%d)", p,
		         m->layers);
		return SG_EINVAL;
	}
	return 0;
}

/* A layer's six weight matrices (wq, wk, wv, wo, wi, wo2, the order of h[]
 * and a[]) and their shapes [rows, cols]: HF Linear's [out, in]. */
static void layer_weights(const sg_encoder_t *m, const layer_t *L, const float *w[6], int rows[6],
                          int cols[6])
{
	int H = m->hidden, I_ = m->inter;
	const float *lw[6] = {L->wq, L->wk, L->wv, L->wo, L->wi, L->wo2};
	const int r[6] = {H, H, H, H, I_, H}, c[6] = {H, H, H, H, H, I_};
	for (int i = 0; i < 6; i++) {
		w[i] = lw[i];
		rows[i] = r[i];
		cols[i] = c[i];
	}
}

/* Half-float copies of the layers' weights for the short-input kernel
 * (gemm_nt_int.h), unless SEMGATE_ENCODER_HALF=0 or the CPU has no AVX-512.
 * One block of 2 bytes a weight (21 MB for MiniLM-L6), private to the
 * process: the float weights stay mapped and shared, and OpenBLAS uses them
 * for longer inputs. A tensor with a weight beyond the half range keeps the
 * float kernel. Returns how many tensors have halves. */
static int make_halves(sg_encoder_t *m)
{
	const char *v = getenv("SEMGATE_ENCODER_HALF");
	if ((v && strcmp(v, "0") == 0) || sg__gemm_nt_level() != 2)
		return 0;
	const float *w[6];
	int rows[6], cols[6];
	layer_weights(m, &m->layer[0], w, rows, cols);
	size_t total = 0;
	for (int i = 0; i < 6; i++)
		total += sg__gemm_nt_half_len(rows[i], cols[i]);
	total *= (size_t)m->layers;
	if ((m->halves = malloc(total * sizeof(uint16_t))) == NULL)
		return 0; /* the float kernel does the same work */
	uint16_t *at = m->halves;
	int made = 0;
	for (int l = 0; l < m->layers; l++) {
		layer_t *L = &m->layer[l];
		layer_weights(m, L, w, rows, cols);
		for (int i = 0; i < 6; i++) {
			L->h[i] = sg__gemm_nt_half(w[i], rows[i], cols[i], at) == 0 ? at : NULL;
			made += L->h[i] != NULL;
			at += sg__gemm_nt_half_len(rows[i], cols[i]);
		}
	}
	return made;
}

/* The layers' weights packed for AMX tiles (gemm_nt_int.h), on a CPU with
 * AMX-BF16 unless SEMGATE_ENCODER_AMX=0: a float as two bfloat16s, 4 bytes a
 * weight (42 MB for MiniLM-L6), private. They serve the inputs longer than
 * small_rows() (batches: 1.2x the throughput of OpenBLAS's sgemm on a 2-vCPU
 * Xeon VM, bench/RESULTS.md); one or two prompts stay on the half-float
 * kernel, which was faster there (the packed weights are twice the bytes to
 * stream, and tile loads are slow next to the arithmetic). A tensor whose shape
 * is not a multiple of 32, or with a weight that is not finite, keeps the
 * other kernels. Made on first use (ensure_amx), so that a gateway that never
 * batches never holds it. Returns how many tensors are packed. */
static int make_amx(sg_encoder_t *m)
{
	const float *w[6];
	int rows[6], cols[6];
	layer_weights(m, &m->layer[0], w, rows, cols);
	size_t total = 0;
	for (int i = 0; i < 6; i++)
		total += sg__gemm_amx_packed_len(rows[i], cols[i]);
	if (total == 0 || (m->amx = malloc(total * (size_t)m->layers * sizeof(uint16_t))) == NULL)
		return 0;
	uint16_t *at = m->amx;
	int made = 0;
	for (int l = 0; l < m->layers; l++) {
		layer_t *L = &m->layer[l];
		layer_weights(m, L, w, rows, cols);
		for (int i = 0; i < 6; i++) {
			size_t n = sg__gemm_amx_packed_len(rows[i], cols[i]);
			L->a[i] = n && sg__gemm_amx_pack(w[i], rows[i], cols[i], at) == 0 ? at : NULL;
			made += L->a[i] != NULL;
			if (L->a[i] && cols[i] > m->amx_wide)
				m->amx_wide = cols[i];
			at += n;
		}
	}
	if (made == 0) {
		free(m->amx);
		m->amx = NULL;
	}
	return made;
}

/* Whether batches can use the AMX copy, making it if it is not made yet
 * (the first caller packs it, ~0.1 s for MiniLM-L6; callers meanwhile wait). */
static int ensure_amx(const sg_encoder_t *cm)
{
	int st = atomic_load_explicit(&cm->amx_state, memory_order_acquire);
	if (st != 0)
		return st > 0;
	sg_encoder_t *m = (sg_encoder_t *)cm; /* the lazily made part: see amx_state */
	pthread_mutex_lock(&m->amx_mu);
	if ((st = atomic_load_explicit(&m->amx_state, memory_order_relaxed)) == 0) {
		st = make_amx(m) > 0 ? 1 : -1;
		atomic_store_explicit(&m->amx_state, st, memory_order_release);
	}
	pthread_mutex_unlock(&m->amx_mu);
	return st > 0;
}

/* --- load ------------------------------------------------------------------- */

int sg_encoder_load(sg_encoder_t **out, const char *dir, const sg_encoder_opts_t *opts, char *err,
                  size_t errlen)
{
	sg_encoder_t *m;
	uint64_t hash = 0;
	int max_seq = 0, rc;
	char tmp[1];

	*out = NULL;
	if (err == NULL || errlen == 0) {
		err = tmp;
		errlen = sizeof(tmp);
	}
	err[0] = '\0';
	if (dir == NULL || dir[0] == '\0') {
		snprintf(err, errlen, "no model directory given");
		return SG_EINVAL;
	}
	struct stat sb;
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "%s: %s", dir, stat(dir, &sb) ? strerror(errno) : "not a directory");
		return SG_EIO;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return SG_ENOMEM;
	pthread_mutex_init(&m->amx_mu, NULL);
	atomic_init(&m->amx_state, -1);
	if ((rc = read_config(m, dir, err, errlen)) ||
	    (rc = read_st_files(m, dir, opts, &max_seq, err, errlen)) ||
	    (rc = read_tokenizer(m, dir, err, errlen)))
		goto fail;
	if (sg_wordpiece_vocab_size(m->tok) > m->vocab) {
		snprintf(err, errlen,
		         "%s: the tokenizer has %d tokens but config.json's vocab_size is %d", dir,
		         sg_wordpiece_vocab_size(m->tok), m->vocab);
		rc = SG_EINVAL;
		goto fail;
	}
	if ((rc = read_weights(m, dir, opts && opts->skip_hash, &hash, err, errlen)))
		goto fail;
	const char *no_amx = getenv("SEMGATE_ENCODER_AMX");
	int amx = !(no_amx && strcmp(no_amx, "0") == 0) && sg__gemm_amx_ok();
	atomic_store_explicit(&m->amx_state, amx ? 0 : -1, memory_order_relaxed);
	int halves = make_halves(m);

	m->max_tokens = opts && opts->max_tokens > 0 ? opts->max_tokens : max_seq ? max_seq : 512;
	if (m->max_tokens > m->max_pos)
		m->max_tokens = m->max_pos;
	if (m->max_tokens < 2)
		m->max_tokens = 2;

	const char *name = strrchr(dir, '/');
	name = name && name[1] ? name + 1 : dir;
	snprintf(m->id, sizeof(m->id), "model/1:%.64s:%016llx:%s:t%d:p%08llx", name,
	         (unsigned long long)hash, m->pooling == POOL_CLS ? "cls" : "mean", m->max_tokens,
	         (unsigned long long)(sg_hash64(m->prefix, m->prefix_len, 7) & 0xffffffffu));
	snprintf(m->describe, sizeof(m->describe),
	         "%.64s: %d layers, hidden %d, %d heads, %s%s, %s pooling, %d tokens max%s%.32s%s",
	         name, m->layers, m->hidden, m->heads, m->dtype,
	         halves == 6 * m->layers && amx
	                 ? " (F16 copies for short inputs, AMX for batches)"
	         : halves == 6 * m->layers ? " (F16 copies for short inputs)"
	         : halves                  ? " (some F16 copies)"
	         : amx                     ? " (AMX for batches)"
	                                   : "",
	         m->pooling == POOL_CLS ? "CLS" : "mean", m->max_tokens,
	         m->prefix_len ? ", prefix \"" : "", m->prefix, m->prefix_len ? "\"" : "");
	*out = m;
	return 0;
fail:
	if (err[0] == '\0')
		snprintf(err, errlen, "%s: %s", dir, sg_strerror(rc));
	sg_encoder_free(m);
	return rc;
}

void sg_encoder_free(sg_encoder_t *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->n_owned; i++)
		free(m->owned[i]);
	free(m->owned);
	free(m->halves);
	free(m->amx);
	pthread_mutex_destroy(&m->amx_mu);
	sg__st_free(&m->st);
	if (m->map)
		munmap(m->map, m->map_len);
	sg_wordpiece_free(m->tok);
	free(m->prefix);
	free(m);
}

int sg_encoder_dim(const sg_encoder_t *m) { return m->hidden; }
int sg_encoder_max_tokens(const sg_encoder_t *m) { return m->max_tokens; }
const sg_wordpiece_t *sg_encoder_tokenizer(const sg_encoder_t *m) { return m->tok; }
const char *sg_encoder_id(const sg_encoder_t *m) { return m->id; }
const char *sg_encoder_describe(const sg_encoder_t *m) { return m->describe; }

/* --- workspace ----------------------------------------------------------- */

sg_encoder_ws_t *sg_encoder_ws_new(const sg_encoder_t *m, int max_batch)
{
	sg_encoder_ws_t *ws = calloc(1, sizeof(*ws));
	if (ws == NULL || max_batch < 1)
		goto fail;
	ws->max_batch = max_batch;
	ws->scores = malloc(sizeof(float) * (size_t)m->max_tokens * (size_t)m->max_tokens);
	ws->ids = malloc(sizeof(int32_t) * (size_t)max_batch * (size_t)m->max_tokens);
	ws->lens = malloc(sizeof(int) * (size_t)max_batch);
	if (ws->scores == NULL || ws->ids == NULL || ws->lens == NULL)
		goto fail;
	return ws;
fail:
	sg_encoder_ws_free(ws);
	return NULL;
}

static void ws_release(sg_encoder_ws_t *ws)
{
	free(ws->x);
	free(ws->q);
	free(ws->k);
	free(ws->v);
	free(ws->ctx);
	free(ws->tmp);
	free(ws->inter);
	ws->x = ws->q = ws->k = ws->v = ws->ctx = ws->tmp = ws->inter = NULL;
	ws->rows_cap = 0;
}

void sg_encoder_ws_free(sg_encoder_ws_t *ws)
{
	if (ws == NULL)
		return;
	ws_release(ws);
	free(ws->scores);
	free(ws->ids);
	free(ws->lens);
	free(ws->amx_scratch);
	free(ws);
}

/* Buffers for T rows: grown on demand (short prompts, the usual case, stay
 * small), kept for the next batch. */
static int ws_reserve(const sg_encoder_t *m, sg_encoder_ws_t *ws, size_t rows)
{
	if (rows <= ws->rows_cap)
		return 0;
	ws_release(ws);
	size_t h = rows * (size_t)m->hidden * sizeof(float);
	ws->x = malloc(h);
	ws->q = malloc(h);
	ws->k = malloc(h);
	ws->v = malloc(h);
	ws->ctx = malloc(h);
	ws->tmp = malloc(h);
	ws->inter = malloc(rows * (size_t)m->inter * sizeof(float));
	if (!ws->x || !ws->q || !ws->k || !ws->v || !ws->ctx || !ws->tmp || !ws->inter) {
		ws_release(ws);
		return SG_ENOMEM;
	}
	ws->rows_cap = rows;
	return 0;
}

/* --- the forward pass ------------------------------------------------------- */

/* Up to this many rows the in-place kernel of gemm_nt.c beats sgemm, whose
 * packing of W costs more than the arithmetic on a few rows (measured on
 * MiniLM: bench/RESULTS.md; 48 since the kernel prefetches W, with OpenBLAS's
 * AVX2 and AVX-512 sgemm alike). SEMGATE_GEMM_NT_ROWS overrides it (0: always
 * sgemm), for measuring. */
static int small_rows(void)
{
	static int rows = -1;
	if (rows < 0) {
		const char *v = getenv("SEMGATE_GEMM_NT_ROWS");
		rows = v && *v ? atoi(v) : 48;
	}
	return rows;
}

/* y[T, out] = x[T, in] W^T + b, W [out, in]. wa: W packed for AMX (with
 * scratch, the thread's), wh: W as halves; NULL each where forward() chose
 * neither for this batch. */
static void linear(const float *x, int T, int in, const float *w, const uint16_t *wa,
                   uint16_t *scratch, const uint16_t *wh, const float *b, int out, float *y)
{
	/* the AMX and half-float kernels write bias + product; the others add
	 * the product to y, which starts as the bias */
	if (wa && sg__gemm_amx(x, T, in, wa, out, y, out, scratch, b) == 0)
		return;
	if (wh && sg__gemm_nt_h(x, T, in, wh, out, y, out, b) == 0)
		return;
	for (int t = 0; t < T; t++)
		memcpy(y + (size_t)t * out, b, sizeof(float) * (size_t)out);
	if (T <= small_rows() && sg__gemm_nt(x, T, in, w, out, y, out) == 0)
		return;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, w, in, 1.0f, y,
	            out);
}

/*
 * The element-wise functions, written as plain loops that the compiler
 * vectorises, in one version per instruction set (target_clones picks at load
 * time): libm's erff and expf are scalar calls and took a quarter of a
 * batch's time.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
#else
#define SIMD_CLONES
#endif

/* x = LayerNorm(x + r) per row (r may be NULL). The sums run in 16 float
 * lanes (each a sequential sum of H/16 values, so the compiler can keep them
 * in one vector register without reordering a sum) and are added in double;
 * the variance is taken around the mean (two passes), as in double before. */
SIMD_CLONES static void add_layernorm(float *x, const float *r, int T, int H, const float *g,
                                      const float *b, float eps)
{
	int H16 = H & ~15;
	for (int t = 0; t < T; t++) {
		float *row = x + (size_t)t * H;
		const float *rr = r ? r + (size_t)t * H : NULL;
		if (rr)
			for (int i = 0; i < H; i++)
				row[i] += rr[i];
		float s[16] = {0}, q[16] = {0};
		for (int i = 0; i < H16; i += 16)
			for (int k = 0; k < 16; k++)
				s[k] += row[i + k];
		for (int i = H16; i < H; i++)
			s[i - H16] += row[i];
		double mean = 0, var = 0;
		for (int k = 0; k < 16; k++)
			mean += s[k];
		mean /= H;
		float mu = (float)mean;
		for (int i = 0; i < H16; i += 16)
			for (int k = 0; k < 16; k++) {
				float d = row[i + k] - mu;
				q[k] += d * d;
			}
		for (int i = H16; i < H; i++) {
			float d = row[i] - mu;
			q[i - H16] += d * d;
		}
		for (int k = 0; k < 16; k++)
			var += q[k];
		var /= H;
		float inv = (float)(1.0 / sqrt(var + eps));
		for (int i = 0; i < H; i++)
			row[i] = (row[i] - mu) * inv * g[i] + b[i];
	}
}

/*
 * GELU, the exact one: x/2 (1 + erf(x / sqrt 2)). erf is the rational
 * approximation of Eigen and XLA (x P(x^2) / Q(x^2) on [-4, 4], where it is
 * within 5e-7 of erf; beyond, erf is 1 to float precision).
 */
SIMD_CLONES static void gelu(float *x, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float v = x[i] * 0.70710678118654752f;
		v = v < -4.0f ? -4.0f : v > 4.0f ? 4.0f : v;
		float v2 = v * v;
		float p = -2.72614225801306e-10f;
		p = p * v2 + 2.77068142495902e-08f;
		p = p * v2 - 2.10102402082508e-06f;
		p = p * v2 - 5.69250639462346e-05f;
		p = p * v2 - 7.34990630326855e-04f;
		p = p * v2 - 2.95459980854025e-03f;
		p = p * v2 - 1.60960333262415e-02f;
		p *= v;
		float q = -1.45660718464996e-05f;
		q = q * v2 - 2.13374055278905e-04f;
		q = q * v2 - 1.68282697438203e-03f;
		q = q * v2 - 7.37332916720468e-03f;
		q = q * v2 - 1.42647390514189e-02f;
		x[i] = 0.5f * x[i] * (1.0f + p / q);
	}
}

/*
 * row[j] = exp(row[j] - max) / sum: exp by 2^n e^r with n = round(x log2 e)
 * (the 1.5 * 2^23 trick rounds without a libm call), r reduced by ln 2 in two
 * parts, e^r by its degree-6 Taylor polynomial (|r| <= 0.35: relative error
 * about 1e-7), 2^n built in the exponent bits. Inputs below -87 give 0.
 */
SIMD_CLONES static void softmax_row(float *row, int n)
{
	float mx = row[0], sum = 0.0f;
	for (int j = 1; j < n; j++)
		mx = row[j] > mx ? row[j] : mx;
	for (int j = 0; j < n; j++) {
		float x = row[j] - mx;
		x = x < -87.0f ? -87.0f : x;
		float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
		float r = x - k * 0.693145751953125f - k * 1.42860682030941723212e-6f;
		float p = 1.0f / 720;
		p = p * r + 1.0f / 120;
		p = p * r + 1.0f / 24;
		p = p * r + 1.0f / 6;
		p = p * r + 0.5f;
		p = p * r + 1.0f;
		p = p * r + 1.0f;
		int32_t bits = ((int32_t)k + 127) << 23;
		float scale;
		memcpy(&scale, &bits, sizeof(scale));
		row[j] = p * scale;
		sum += row[j];
	}
	float inv = 1.0f / sum;
	for (int j = 0; j < n; j++)
		row[j] *= inv;
}

/* Self-attention of one text (rows [0, L) of q, k, v), all heads, into ctx. */
static void attention(const sg_encoder_t *m, float *scores, const float *q, const float *k,
                      const float *v, float *ctx, int L)
{
	int H = m->hidden, dh = H / m->heads;
	float scale = 1.0f / sqrtf((float)dh);
	for (int h = 0; h < m->heads; h++) {
		const float *qh = q + h * dh, *kh = k + h * dh, *vh = v + h * dh;
		/* scores[L, L] = q_h k_h^T / sqrt(dh) */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, dh, scale, qh, H, kh, H,
		            0.0f, scores, L);
		for (int i = 0; i < L; i++)
			softmax_row(scores + (size_t)i * L, L);
		/* ctx_h[L, dh] = scores v_h */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, dh, L, 1.0f, scores, L, vh, H,
		            0.0f, ctx + h * dh, H);
	}
}

static int forward(const sg_encoder_t *m, sg_encoder_ws_t *ws, const int32_t *const *ids,
                   const int *lens, int n, float *out)
{
	int H = m->hidden, I_ = m->inter;
	size_t T = 0;

	for (int i = 0; i < n; i++) {
		if (lens[i] < 1 || lens[i] > m->max_tokens)
			return SG_EINVAL;
		T += (size_t)lens[i];
	}
	if (ws_reserve(m, ws, T))
		return SG_ENOMEM;

	/* embeddings: word + position + token type 0, then LayerNorm */
	size_t row = 0;
	for (int i = 0; i < n; i++)
		for (int p = 0; p < lens[i]; p++, row++) {
			int32_t id = ids[i][p];
			if (id < 0 || id >= m->vocab)
				return SG_EINVAL;
			float *x = ws->x + row * H;
			const float *we = m->word_emb + (size_t)id * H, *pe = m->pos_emb + (size_t)p * H;
			for (int j = 0; j < H; j++)
				x[j] = we[j] + pe[j] + m->type_emb[j];
		}
	add_layernorm(ws->x, NULL, (int)T, H, m->emb_ln_g, m->emb_ln_b, m->ln_eps);

	/* The products' kernel, once for the whole pass: a prompt or two on the
	 * half-float copy; a batch on the AMX copy (made now if this is the
	 * first) with this thread's scratch, when the CPU has AMX; else sgemm
	 * or the float kernel (linear()). */
	static const uint16_t *const none[6];
	int small = (int)T <= small_rows();
	int use_amx = !small && ensure_amx(m);
	if (use_amx && ws->amx_scratch == NULL) {
		size_t len = sg__gemm_amx_scratch_len(m->amx_wide);
		ws->amx_scratch = len ? aligned_alloc(64, len * sizeof(uint16_t)) : NULL;
		use_amx = ws->amx_scratch != NULL;
	}
	uint16_t *sc = ws->amx_scratch;
	for (int l = 0; l < m->layers; l++) {
		const layer_t *L = &m->layer[l];
		const uint16_t *const *A = use_amx ? L->a : none, *const *Hf = small ? L->h : none;
		linear(ws->x, (int)T, H, L->wq, A[0], sc, Hf[0], L->bq, H, ws->q);
		linear(ws->x, (int)T, H, L->wk, A[1], sc, Hf[1], L->bk, H, ws->k);
		linear(ws->x, (int)T, H, L->wv, A[2], sc, Hf[2], L->bv, H, ws->v);
		size_t off = 0;
		for (int i = 0; i < n; i++) {
			size_t o = off * H;
			attention(m, ws->scores, ws->q + o, ws->k + o, ws->v + o, ws->ctx + o, lens[i]);
			off += (size_t)lens[i];
		}
		linear(ws->ctx, (int)T, H, L->wo, A[3], sc, Hf[3], L->bo, H, ws->tmp);
		add_layernorm(ws->x, ws->tmp, (int)T, H, L->ln1_g, L->ln1_b, m->ln_eps);
		/* x = LN(x + W2 gelu(W1 x)) */
		linear(ws->x, (int)T, H, L->wi, A[4], sc, Hf[4], L->bi, I_, ws->inter);
		gelu(ws->inter, T * (size_t)I_);
		linear(ws->inter, (int)T, I_, L->wo2, A[5], sc, Hf[5], L->bo2, H, ws->tmp);
		add_layernorm(ws->x, ws->tmp, (int)T, H, L->ln2_g, L->ln2_b, m->ln_eps);
	}

	/* pooling + L2 normalisation */
	row = 0;
	for (int i = 0; i < n; i++) {
		float *o = out + (size_t)i * H;
		const float *x = ws->x + row * H;
		if (m->pooling == POOL_CLS) {
			memcpy(o, x, sizeof(float) * H);
		} else {
			memset(o, 0, sizeof(float) * H);
			for (int p = 0; p < lens[i]; p++)
				for (int j = 0; j < H; j++)
					o[j] += x[(size_t)p * H + j];
		}
		row += (size_t)lens[i];
		double ss = 0;
		for (int j = 0; j < H; j++)
			ss += (double)o[j] * o[j];
		float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
		for (int j = 0; j < H; j++)
			o[j] *= inv;
		if (ss <= 0) /* cannot happen with real weights; keep the contract */
			o[0] = 1.0f;
	}
	return 0;
}

int sg_encoder_embed_ids(const sg_encoder_t *m, sg_encoder_ws_t *ws, const int32_t *const *ids,
                       const int *lens, int n, float *out)
{
	if (m == NULL || ws == NULL || n < 0 || n > ws->max_batch || (n && (!ids || !lens || !out)))
		return SG_EINVAL;
	return n ? forward(m, ws, ids, lens, n, out) : 0;
}

int sg_encoder_tokenize(const sg_encoder_t *m, const char *text, size_t len, int32_t *ids)
{
	char stackbuf[1024], *joined = stackbuf;
	int k;

	if (m == NULL || ids == NULL || (text == NULL && len))
		return SG_EINVAL;
	if (m->prefix_len == 0)
		return sg_wordpiece_encode(m->tok, text ? text : "", len, ids, m->max_tokens);
	/* the prompt's prefix, as sentence-transformers adds it */
	if (m->prefix_len + len > sizeof(stackbuf) &&
	    (joined = malloc(m->prefix_len + len)) == NULL)
		return SG_ENOMEM;
	memcpy(joined, m->prefix, m->prefix_len);
	if (len)
		memcpy(joined + m->prefix_len, text, len);
	k = sg_wordpiece_encode(m->tok, joined, m->prefix_len + len, ids, m->max_tokens);
	if (joined != stackbuf)
		free(joined);
	return k;
}

int sg_encoder_embed(const sg_encoder_t *m, sg_encoder_ws_t *ws, const char *const *texts,
                     const size_t *lens, int n, float *out)
{
	const int32_t *rows[256];
	int rc = 0;

	if (m == NULL || ws == NULL || n < 0 || n > ws->max_batch || (n && (!texts || !lens || !out)))
		return SG_EINVAL;
	for (int b = 0; b < n; b += (int)SG_ARRAY_SIZE(rows)) {
		int nb = SG_MIN(n - b, (int)SG_ARRAY_SIZE(rows));
		for (int i = 0; i < nb; i++) {
			int32_t *ids = ws->ids + (size_t)(b + i) * m->max_tokens;
			int k = sg_encoder_tokenize(m, texts[b + i], lens[b + i], ids);
			if (k < 2)
				return k < 0 ? k : SG_EINVAL;
			ws->lens[b + i] = k;
			rows[i] = ids;
		}
		rc = forward(m, ws, rows, ws->lens + b, nb, out + (size_t)b * m->hidden);
		if (rc)
			break;
	}
	return rc;
}
/* --- OpenBLAS's kernels ----------------------------------------------------- */

char *openblas_get_corename(void);

const char *sg_encoder_blas_core(void)
{
	return openblas_get_corename();
}

void sg_encoder_fix_blas(char **argv)
{
	const char *core = openblas_get_corename(), *want = NULL;
	if (getenv("OPENBLAS_CORETYPE") || core == NULL)
		return; /* chosen by the user, or by us already */
	/* the fallbacks of a DYNAMIC_ARCH build that does not know the CPU */
	if (strcasecmp(core, "prescott") != 0 && strcasecmp(core, "core2") != 0 &&
	    strcasecmp(core, "nehalem") != 0 && strcasecmp(core, "sandybridge") != 0)
		return;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
		want = "SkylakeX";
	else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		want = "Haswell";
#endif
	if (want == NULL || strcasecmp(want, core) == 0)
		return;
	setenv("OPENBLAS_CORETYPE", want, 1);
	execv("/proc/self/exe", argv);
	unsetenv("OPENBLAS_CORETYPE"); /* could not: go on as we are */
}
