/* The `local` embedder: hashed, weighted word and character features.
 *
 * A prompt becomes a sparse bag of features (words, neighbouring word pairs,
 * character n-grams inside words), each with a weight saying how much it
 * should count, and the bag is folded into `dim` floats by feature hashing:
 * a feature adds +weight or -weight (a second hash bit picks the sign, so
 * collisions cancel on average instead of piling up) to one bucket. Cosine
 * similarity of two such vectors approximates the weighted overlap of their
 * feature bags.
 *
 * What makes paraphrases match rather than lookalikes:
 *  - Normalisation removes differences that carry no meaning: case,
 *    punctuation, contractions, inflection (a light suffix stemmer) and a few
 *    spelling/irregular variants.
 *  - Word weights follow general English frequency, from the hand-written
 *    bands below (no corpus statistics, nothing learned from test data):
 *    function words and question templates ("what is the best way to") weigh
 *    little, pronouns, modals and everyday words somewhat more, and a word
 *    outside the bands, which is rare in general English, weighs the most
 *    (numbers and negations weigh like rare words). Two questions that
 *    share their rare words are then close even if phrased differently,
 *    while two that differ in one rare word ("iPhone 6" / "iPhone 7", "lose
 *    weight" / "gain weight") are pushed apart.
 *  - Bigrams of neighbouring content words keep some word order ("python to
 *    java" vs "java to python" differ only there).
 *  - Character n-grams catch what the stemmer misses (spoken/speaking,
 *    typos, British/American spelling).
 *  - One feature for the kind of question, from its first word (why / how /
 *    what / who / when / where / yes-no), since "Why X?" and "Is X?" ask
 *    different things about the same words.
 *  - Operator-like symbols are words ("C++" vs "C#", "=" vs "==").
 *  - A short all-capitals word that would read as a function word ("US",
 *    "IT", "WHO") is an acronym, a rare word of its own, unless the whole
 *    text is in capitals.
 *  - Term frequency is sublinear (1 + ln tf), so a repeated word cannot
 *    dominate.
 *
 * Work is linear in the input, which is capped (opts.max_bytes); nothing is
 * allocated per call, and the tables are read-only after creation.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/embed_local.h"
#include "embed_int.h"

/* Bump whenever the output for some input changes: it is part of the id. */
#define ALGO_VERSION 2

#define DEFAULT_WORD_WEIGHT 1.0f
#define DEFAULT_BIGRAM_WEIGHT 0.2f
#define DEFAULT_CHAR_WEIGHT 0.5f
#define DEFAULT_CHAR_MIN 3
#define DEFAULT_CHAR_MAX 5
#define DEFAULT_STOP_WEIGHT 0.2f
#define DEFAULT_QWORD_WEIGHT 0.3f
#define DEFAULT_NUMBER_WEIGHT 1.2f
#define DEFAULT_PRONOUN_WEIGHT 0.4f
#define DEFAULT_MODAL_WEIGHT 0.2f
#define DEFAULT_QTYPE_WEIGHT 0.3f
#define DEFAULT_MAX_BYTES 65536

/* Weights of the two bands of common content words; rare words weigh 1. */
#define COMMON_WEIGHT 0.25f
#define FAMILIAR_WEIGHT 0.55f

#define MAX_WORD 48    /* bytes of a word kept; the rest of it is ignored */
#define NGRAM_SPAN 32  /* char n-grams come from a word's first bytes only */
#define TF_SLOTS 256   /* distinct words tracked for sublinear tf */

/* ---- the word tables ------------------------------------------------------
 *
 * Generic English, written by hand from general knowledge of word frequency;
 * not derived from any evaluation data.
 */

/* Function words: carry grammar, not topic. */
static const char stop_words[] =
	"a an the of to in on at for from by with about as into onto upon "
	"and or but if so than then is are was were be been being am do does "
	"did doing done have has had having this that these those there here "
	"also just too very really quite etc such each every both either any "
	"some all via per out up off over again ever even only still yet";

/* Pronouns: whose question it is ("your life" / "life"). */
static const char pronoun_words[] =
	"i me my mine myself you your yours yourself we us our ours he him his "
	"she her hers it its itself they them their theirs";

/* Modal verbs: "could I use" / "should I use". */
static const char modal_words[] =
	"can could should would will shall may might must";

/* Negations flip a question; they weigh like rare words. */
static const char negation_words[] = "not no never nor without";

/* Question words: which kind of question, a weak signal for duplicates. */
static const char question_words[] =
	"what how why which who whom whose when where whether";

/* Everyday words that make up question templates ("what is the best way to",
 * "what are some good tips for", "is it possible to") and vague nouns. */
static const char common_words[] =
	"best good better great way ways thing things something anything "
	"everything nothing someone anyone everyone somebody anybody people "
	"person one ones get gets getting got make makes making made know "
	"knows knowing known like want wants need needs possible difference "
	"between use using used go goes going went take tell think see say "
	"says said come give find look many much more most other another new "
	"lot lots kind sort type types example examples tip tips idea ideas "
	"reason reasons mean means meaning actually "
	"important different certain specific particular general bad "
	"happen happens happened opinion view feel start top list";

/* Common content words of general English (roughly the top two thousand
 * minus the bands above): topical, but not very discriminating. */
static const char familiar_words[] =
	"time year years day days week weeks month months hour hours minute "
	"minutes morning night today tomorrow yesterday life world man men "
	"woman women child children kid kids boy boys girl girls guy guys "
	"family friend friends parent parents mother father mom dad son "
	"daughter wife husband girlfriend boyfriend home house room school "
	"college university student students teacher class course job jobs "
	"work working works career company companies business office money "
	"price cost pay paid buy sell sold market bank account card credit "
	"loan tax state country countries city cities government law right "
	"rights war power party president election vote news book books story "
	"movie movies film films music song songs game games play playing "
	"video videos picture pictures photo photos phone computer internet "
	"online website site app apps software program programming system "
	"data information language english learn learning study studying "
	"read reading write writing help keep let put bring hold turn become "
	"show hear talk believe create build grow open close win lose spend "
	"send stay fall cut kill die love live living lives run running "
	"move change stop try call ask answer answers question questions "
	"problem problems issue issues fact point part place area number group "
	"case level side name word words line end head hand eye eyes face body "
	"mind heart health water food air fire car cars road town street "
	"real true false main major common popular famous recent current "
	"future past present social human personal private local national "
	"international simple easy hard difficult available similar whole "
	"free full high low long short small large big little old young early "
	"late next last first second third able sure clear strong weak fast "
	"slow quick cheap expensive rich poor happy sad beautiful nice "
	"interesting best worst worse less least enough far near around "
	"without within during before after since until while because though "
	"although however never always often sometimes usually not no nor "
	"yes ok okay please thank thanks sir hi hello";

/* Irregular forms and common variants, mapped before stemming. */
static const char *const variants[][2] = {
	{"made", "make"},       {"bought", "buy"},     {"thought", "think"},
	{"went", "go"},         {"gone", "go"},        {"got", "get"},
	{"gotten", "get"},      {"children", "child"}, {"men", "man"},
	{"women", "woman"},     {"taught", "teach"},   {"brought", "bring"},
	{"felt", "feel"},       {"found", "find"},     {"kept", "keep"},
	{"left", "leave"},      {"lost", "lose"},      {"meant", "mean"},
	{"paid", "pay"},        {"said", "say"},       {"sold", "sell"},
	{"spent", "spend"},     {"told", "tell"},      {"took", "take"},
	{"taken", "take"},      {"wrote", "write"},    {"written", "write"},
	{"ate", "eat"},         {"eaten", "eat"},      {"began", "begin"},
	{"begun", "begin"},     {"chose", "choose"},   {"chosen", "choose"},
	{"knew", "know"},       {"known", "know"},     {"saw", "see"},
	{"seen", "see"},        {"gave", "give"},      {"given", "give"},
	{"came", "come"},       {"became", "become"},  {"ran", "run"},
	{"learnt", "learn"},    {"u", "you"},          {"ur", "your"},
	{"pls", "please"},      {"plz", "please"},     {"quickly", "fast"},
	{"quick", "fast"},      {"faster", "fast"},    {"fastest", "fast"},
	{"easily", "easy"},     {"easier", "easy"},    {"easiest", "easy"},
	{"bigger", "big"},      {"biggest", "big"},    {"larger", "large"},
	{"largest", "large"},   {"vs", "versus"},      {"colour", "color"},
	{"favourite", "favorite"}, {"centre", "center"}, {"programme", "program"},
	{"gf", "girlfriend"},   {"bf", "boyfriend"},   {"ok", "okay"},
	{"mobile", "phone"},    {"cellphone", "phone"}, {"smartphone", "phone"},
	{"cannot", "can not"},  {"gonna", "going to"}, {"wanna", "want to"},
	{"whats", "what is"},   {"hows", "how is"},    {"im", "i am"},
	{"dont", "do not"},     {"doesnt", "does not"}, {"didnt", "did not"},
	{"cant", "can not"},    {"isnt", "is not"},    {"wont", "will not"},
};

/* ---- hashing --------------------------------------------------------------*/

#define SEED_WORD 0x5157f1a3c9e2d801ULL
#define SEED_BIGRAM 0x9ae16a3b2f90404fULL
#define SEED_NGRAM 0xc2b2ae3d27d4eb4fULL
#define SEED_EMPTY 0x165667b19e3779f9ULL
#define SEED_QTYPE 0x85ebca77c2b2ae63ULL

static uint64_t mix64(uint64_t x)
{
	/* MurmurHash3's finaliser */
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static uint64_t hash_bytes(uint64_t seed, const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	return mix64(h);
}

/* ---- the embedder ---------------------------------------------------------*/

enum band {
	BAND_RARE = 0,  /* not in any list: rare in general English */
	BAND_STOP,      /* function words */
	BAND_PRONOUN,   /* personal pronouns */
	BAND_MODAL,     /* modal verbs */
	BAND_NEGATION,  /* not, no, never... */
	BAND_QUESTION,  /* what, how, why... */
	BAND_COMMON,    /* template words and vague nouns */
	BAND_FAMILIAR,  /* everyday content words */
	BAND__LAST
};

_Static_assert((int)BAND_FAMILIAR == SG__WORD_FAMILIAR &&
	       (int)BAND_NEGATION == SG__WORD_NEGATION,
	       "embed_int.h's word kinds mirror enum band");

typedef struct word_entry {
	uint64_t hash; /* hash_bytes(0, word); 0 marks an empty slot */
	uint8_t band;  /* enum band */
} word_entry_t;

typedef struct variant_entry {
	uint64_t hash;        /* hash of the variant; 0 marks an empty slot */
	const char *canon;    /* what it stands for (may be two words) */
} variant_entry_t;

struct sg_embed_local {
	sg_embed_local_opts_t opts; /* with defaults filled in */
	float band_weight[BAND__LAST]; /* weight of a word by enum band */
	word_entry_t *words;        /* open-addressing table of banded words */
	size_t words_mask;          /* table size - 1 (a power of two) */
	variant_entry_t *vars;      /* open-addressing table of variants */
	size_t vars_mask;           /* table size - 1 */
	char id[256];               /* sg_embed_local_id() */
};

static void words_put(sg_embed_local_t *e, const char *w, size_t n, enum band b)
{
	uint64_t h = hash_bytes(0, w, n) | 1; /* never 0 */
	size_t i = h & e->words_mask;
	while (e->words[i].hash && e->words[i].hash != h)
		i = (i + 1) & e->words_mask;
	if (e->words[i].hash == 0) /* the first band a word is listed in wins */
		e->words[i] = (word_entry_t){h, (uint8_t)b};
}

static enum band words_get(const sg_embed_local_t *e, const char *w, size_t n)
{
	uint64_t h = hash_bytes(0, w, n) | 1;
	size_t i = h & e->words_mask;
	while (e->words[i].hash) {
		if (e->words[i].hash == h)
			return (enum band)e->words[i].band;
		i = (i + 1) & e->words_mask;
	}
	return BAND_RARE;
}

static size_t stem(char *w, size_t n);

/* Words are looked up by their stem, so the lists are stored stemmed too:
 * "question" and "questions" share a band. */
static void add_list(sg_embed_local_t *e, const char *list, enum band b)
{
	const char *p = list;
	char w[MAX_WORD];

	while (*p) {
		size_t n = 0;
		while (*p && *p != ' ' && n < MAX_WORD)
			w[n++] = *p++;
		if (n > 0)
			words_put(e, w, e->opts.no_stem ? n : stem(w, n), b);
		while (*p == ' ')
			p++;
	}
}

static const char *variant_get(const sg_embed_local_t *e, const char *w, size_t n)
{
	uint64_t h = hash_bytes(SEED_WORD, w, n) | 1;
	size_t i = h & e->vars_mask;
	while (e->vars[i].hash) {
		if (e->vars[i].hash == h)
			return e->vars[i].canon;
		i = (i + 1) & e->vars_mask;
	}
	return NULL;
}

int sg_embed_local_new(sg_embed_local_t **out, const sg_embed_local_opts_t *opts)
{
	sg_embed_local_opts_t o = {0};
	sg_embed_local_t *e;

	if (opts)
		o = *opts;
	if (o.dim == 0)
		o.dim = SG_EMBED_LOCAL_DEFAULT_DIM;
	if (o.word_weight == 0)
		o.word_weight = DEFAULT_WORD_WEIGHT;
	if (o.bigram_weight == 0)
		o.bigram_weight = DEFAULT_BIGRAM_WEIGHT;
	if (o.char_weight == 0)
		o.char_weight = DEFAULT_CHAR_WEIGHT;
	if (o.char_min == 0)
		o.char_min = DEFAULT_CHAR_MIN;
	if (o.char_max == 0)
		o.char_max = DEFAULT_CHAR_MAX;
	if (o.stop_weight == 0)
		o.stop_weight = DEFAULT_STOP_WEIGHT;
	if (o.qword_weight == 0)
		o.qword_weight = DEFAULT_QWORD_WEIGHT;
	if (o.pronoun_weight == 0)
		o.pronoun_weight = DEFAULT_PRONOUN_WEIGHT;
	if (o.modal_weight == 0)
		o.modal_weight = DEFAULT_MODAL_WEIGHT;
	if (o.qtype_weight == 0)
		o.qtype_weight = DEFAULT_QTYPE_WEIGHT;
	if (o.number_weight == 0)
		o.number_weight = DEFAULT_NUMBER_WEIGHT;
	if (o.max_bytes == 0)
		o.max_bytes = DEFAULT_MAX_BYTES;
	/* negative weights switch a feature family off (0 means default) */
	if (o.dim < 16 || o.dim > 4096 || o.char_min < 1 || o.char_max > 8 ||
	    o.char_min > o.char_max || !isfinite(o.word_weight) ||
	    !isfinite(o.bigram_weight) || !isfinite(o.char_weight) ||
	    !isfinite(o.stop_weight) || !isfinite(o.qword_weight) ||
	    !isfinite(o.number_weight) || !isfinite(o.pronoun_weight) ||
	    !isfinite(o.modal_weight) || !isfinite(o.qtype_weight))
		return SG_EINVAL;

	if ((e = calloc(1, sizeof(*e))) == NULL)
		return SG_ENOMEM;
	e->opts = o;
	e->band_weight[BAND_RARE] = 1.0f;
	e->band_weight[BAND_STOP] = o.stop_weight;
	e->band_weight[BAND_QUESTION] = o.qword_weight;
	e->band_weight[BAND_PRONOUN] = o.pronoun_weight;
	e->band_weight[BAND_MODAL] = o.modal_weight;
	e->band_weight[BAND_NEGATION] = 1.0f;
	e->band_weight[BAND_COMMON] = COMMON_WEIGHT;
	e->band_weight[BAND_FAMILIAR] = FAMILIAR_WEIGHT;

	/* ~700 words: a 4096-slot table keeps probes short */
	e->words_mask = 4095;
	e->vars_mask = 511;
	e->words = calloc(e->words_mask + 1, sizeof(*e->words));
	e->vars = calloc(e->vars_mask + 1, sizeof(*e->vars));
	if (e->words == NULL || e->vars == NULL) {
		sg_embed_local_free(e);
		return SG_ENOMEM;
	}
	add_list(e, stop_words, BAND_STOP);
	add_list(e, pronoun_words, BAND_PRONOUN);
	add_list(e, modal_words, BAND_MODAL);
	add_list(e, negation_words, BAND_NEGATION);
	add_list(e, question_words, BAND_QUESTION);
	add_list(e, common_words, BAND_COMMON);
	add_list(e, familiar_words, BAND_FAMILIAR);
	for (size_t i = 0; i < SG_ARRAY_SIZE(variants); i++) {
		const char *v = variants[i][0];
		uint64_t h = hash_bytes(SEED_WORD, v, strlen(v)) | 1;
		size_t j = h & e->vars_mask;
		while (e->vars[j].hash)
			j = (j + 1) & e->vars_mask;
		e->vars[j] = (variant_entry_t){h, variants[i][1]};
	}

	snprintf(e->id, sizeof(e->id),
		 "local/%d:d%d:w%g:b%g:c%g:n%d-%d:s%g:q%g:qt%g:p%g:m%g:num%g:%s",
		 ALGO_VERSION, o.dim, o.word_weight, o.bigram_weight,
		 o.char_weight, o.char_min, o.char_max, o.stop_weight,
		 o.qword_weight, o.qtype_weight, o.pronoun_weight,
		 o.modal_weight, o.number_weight, o.no_stem ? "nostem" : "stem");
	*out = e;
	return 0;
}

void sg_embed_local_free(sg_embed_local_t *e)
{
	if (e == NULL)
		return;
	free(e->words);
	free(e->vars);
	free(e);
}

int sg_embed_local_dim(const sg_embed_local_t *e) { return e->opts.dim; }
const char *sg_embed_local_id(const sg_embed_local_t *e) { return e->id; }

/* ---- normalisation ---------------------------------------------------------*/

static int is_vowel(char c)
{
	return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u' || c == 'y';
}

static int has_vowel(const char *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (is_vowel(w[i]))
			return 1;
	return 0;
}

/*
 * A light English suffix stemmer (in the spirit of Porter's step 1 plus a
 * dropped final "e"): plurals, -ing, -ed. Over-stemming is harmless as long
 * as both sides of a comparison are stemmed alike, so it favours
 * consistency ("make", "makes", "making" -> "mak") over real stems.
 * Only plain ASCII lowercase words reach it.
 */
static size_t stem(char *w, size_t n)
{
	if (n <= 3)
		return n;
	if (n > 4 && memcmp(w + n - 3, "ies", 3) == 0) {
		w[n - 3] = 'y';
		n -= 2;
	} else if (memcmp(w + n - 4, "sses", 4) == 0) {
		n -= 2;
	} else if (w[n - 1] == 's' && w[n - 2] != 's' && w[n - 2] != 'u' &&
		   w[n - 2] != 'i') {
		n -= 1;
	}
	if (n > 5 && memcmp(w + n - 3, "ing", 3) == 0 && has_vowel(w, n - 3)) {
		n -= 3;
	} else if (n > 4 && memcmp(w + n - 3, "ied", 3) == 0) {
		w[n - 3] = 'y';
		n -= 2;
	} else if (n > 4 && memcmp(w + n - 2, "ed", 2) == 0 &&
		   has_vowel(w, n - 2)) {
		n -= 2;
	} else {
		goto drop_e;
	}
	/* running -> runn -> run; but keep "ll", "ss", "zz" (falling -> fall) */
	if (n > 2 && w[n - 1] == w[n - 2] && !is_vowel(w[n - 1]) &&
	    w[n - 1] != 'l' && w[n - 1] != 's' && w[n - 1] != 'z')
		n--;
drop_e:
	if (n > 3 && w[n - 1] == 'e')
		n--;
	return n;
}

/* ---- feature accumulation ---------------------------------------------------*/

/* Per-call state: lives on the caller's stack, so embeds are independent. */
typedef struct accum {
	const sg_embed_local_t *e; /* the embedder */
	float *v;                  /* output vector being accumulated */
	uint64_t tf_hash[TF_SLOTS]; /* words seen so far (0 = empty) */
	uint16_t tf_count[TF_SLOTS]; /* and how often */
	uint64_t prev_hash;        /* last content word, for bigrams; 0 = none */
	float prev_weight;         /* its weight */
	int n_words;               /* words seen so far */
	int force;                 /* fallback pass: every word weighs 1 */
	sg__embed_word_cb word_cb; /* sg__embed_local_words(): report words, no vector */
	void *word_ud;             /* its argument */
} accum_t;

static void add_feature(accum_t *a, uint64_t h, float w)
{
	uint32_t dim = (uint32_t)a->e->opts.dim;
	/* top 32 bits pick the bucket (multiply-shift range reduction), bit 0
	 * the sign */
	uint32_t bucket = (uint32_t)(((h >> 32) * dim) >> 32);
	a->v[bucket] += (h & 1) ? w : -w;
}

/* How much the next occurrence of word h adds: total after n is 1 + ln n. */
static float tf_increment(accum_t *a, uint64_t h)
{
	size_t i = h & (TF_SLOTS - 1);
	for (size_t probes = 0; probes < TF_SLOTS; probes++) {
		if (a->tf_hash[i] == 0) {
			a->tf_hash[i] = h;
			a->tf_count[i] = 1;
			return 1.0f;
		}
		if (a->tf_hash[i] == h) {
			unsigned c = a->tf_count[i];
			if (c < UINT16_MAX)
				a->tf_count[i] = (uint16_t)(c + 1);
			return logf((float)(c + 1)) - logf((float)c);
		}
		i = (i + 1) & (TF_SLOTS - 1);
	}
	return 1.0f; /* table full (very long text): count as new */
}

static void add_ngrams(accum_t *a, const char *w, size_t n, float weight)
{
	const sg_embed_local_opts_t *o = &a->e->opts;
	char buf[NGRAM_SPAN + 2];
	size_t len, count = 0;

	/* "<word>": boundary marks make prefixes and suffixes their own grams */
	n = SG_MIN(n, (size_t)NGRAM_SPAN);
	buf[0] = '<';
	memcpy(buf + 1, w, n);
	buf[n + 1] = '>';
	len = n + 2;
	for (int g = o->char_min; g <= o->char_max; g++)
		if ((size_t)g <= len)
			count += len - (size_t)g + 1;
	if (count == 0)
		return;
	/* spread the word's n-gram weight so the block has norm ~weight */
	weight /= sqrtf((float)count);
	for (int g = o->char_min; g <= o->char_max; g++)
		for (size_t i = 0; i + (size_t)g <= len; i++)
			add_feature(a, hash_bytes(SEED_NGRAM + (uint64_t)g, buf + i,
						  (size_t)g), weight);
}

/*
 * The kind of question, from its first word: "why X" and "how X", or "is X"
 * and "what is X", ask different things about the same words. Yes/no
 * questions (starting with an auxiliary or modal verb) form one kind;
 * "which" asks what "what" asks.
 */
static void add_qtype(accum_t *a, const char *w, size_t n, enum band band)
{
	static const char aux[] = " is are am was were do does did have has had ";
	const char *kind;
	char key[MAX_WORD + 2];

	if (a->e->opts.qtype_weight <= 0 || a->force || a->word_cb)
		return;
	if (band == BAND_QUESTION) {
		if (n == 5 && memcmp(w, "which", 5) == 0)
			kind = "what";
		else if (n >= 3 && memcmp(w, "who", 3) == 0)
			kind = "who";
		else
			kind = NULL;
	} else if (band == BAND_MODAL) {
		kind = "yes/no";
	} else if (n < MAX_WORD) {
		key[0] = ' ';
		memcpy(key + 1, w, n);
		key[n + 1] = ' ';
		key[n + 2] = '\0';
		if (strstr(aux, key) == NULL)
			return;
		kind = "yes/no";
	} else {
		return;
	}
	if (kind)
		add_feature(a, hash_bytes(SEED_QTYPE, kind, strlen(kind)),
			    a->e->opts.qtype_weight);
	else
		add_feature(a, hash_bytes(SEED_QTYPE, w, n), a->e->opts.qtype_weight);
}

/* One normalised word (lowercase, no punctuation): weigh it and add its
 * features. */
static void add_word(accum_t *a, char *w, size_t n)
{
	const sg_embed_local_t *e = a->e;
	const sg_embed_local_opts_t *o = &e->opts;
	enum band band;
	int numeric = 0, ascii = 1;
	float weight, tf;
	uint64_t h;

	for (size_t i = 0; i < n; i++) {
		numeric |= w[i] >= '0' && w[i] <= '9';
		ascii &= (unsigned char)w[i] < 0x80;
	}
	if (!o->no_stem && ascii && !numeric) {
		size_t full = n;
		char surface[MAX_WORD];
		memcpy(surface, w, n);
		n = stem(w, n);
		band = words_get(e, w, n);
		if (a->n_words++ == 0)
			add_qtype(a, surface, full, band);
	} else {
		band = numeric ? BAND_RARE : words_get(e, w, n);
		if (a->n_words++ == 0)
			add_qtype(a, w, n, band);
	}
	if (a->word_cb) {
		sg__embed_word_t word = {w, n, numeric ? SG__WORD_NUMBER : (int)band,
					 numeric ? o->number_weight : e->band_weight[band],
					 a->n_words - 1};
		a->word_cb(a->word_ud, &word);
		return;
	}
	if (a->force)
		weight = 1.0f;
	else if (numeric)
		weight = o->number_weight;
	else
		weight = e->band_weight[band];

	h = hash_bytes(SEED_WORD, w, n);
	tf = tf_increment(a, h | 1);
	if (weight > 0 && o->word_weight > 0)
		add_feature(a, h, weight * o->word_weight * tf);

	/* function and question words: no n-grams, and they do not break or
	 * form bigrams ("capital of france" pairs capital with france) */
	if ((band == BAND_STOP || band == BAND_QUESTION) && !a->force)
		return;
	if (o->char_weight > 0 && !numeric && weight > 0)
		add_ngrams(a, w, n, weight * o->char_weight * tf);
	if (a->prev_hash && o->bigram_weight > 0 && weight > 0)
		add_feature(a, mix64(a->prev_hash * 31 + h + SEED_BIGRAM),
			    sqrtf(a->prev_weight * weight) * o->bigram_weight * tf);
	a->prev_hash = h | 1;
	a->prev_weight = weight;
}

/* A word after contraction handling: apply the variant table, then add. */
static void add_token(accum_t *a, char *w, size_t n)
{
	const char *canon;

	if (n == 0)
		return;
	if (!a->e->opts.no_stem && (canon = variant_get(a->e, w, n)) != NULL) {
		/* a variant may stand for two words ("cannot" -> "can not") */
		char buf[MAX_WORD];
		const char *p = canon;
		while (*p) {
			size_t k = 0;
			while (p[k] && p[k] != ' ')
				k++;
			memcpy(buf, p, k);
			add_word(a, buf, k);
			p += k;
			while (*p == ' ')
				p++;
		}
		return;
	}
	add_word(a, w, n);
}

/* A raw word, possibly with an apostrophe: expand the contraction. */
static void add_raw(accum_t *a, char *w, size_t n, size_t apos)
{
	static char not_word[] = "not";

	if (apos == SIZE_MAX) {
		add_token(a, w, n);
		return;
	}
	/* "don't" "can't" "won't": base + not */
	if (n - apos == 2 && w[apos + 1] == 't' && apos > 0 && w[apos - 1] == 'n') {
		size_t base = apos - 1;
		if (base == 2 && memcmp(w, "wo", 2) == 0)
			add_token(a, (char[]){'w', 'i', 'l', 'l'}, 4);
		else if (base == 2 && memcmp(w, "ca", 2) == 0)
			add_token(a, (char[]){'c', 'a', 'n'}, 3);
		else
			add_token(a, w, base);
		add_token(a, not_word, 3);
		return;
	}
	/* 's 're 've 'll 'd 'm: the suffix is a function word, drop it */
	add_token(a, w, apos);
}

/*
 * w[0..n) (lowercased) was written in capitals in a text that has lowercase
 * letters: when it would read as a function word, pronoun, modal, negation
 * or question word, it is an acronym instead ("in the US", "a job in IT",
 * "the WHO"). Feeds the word and returns 1 then, else returns 0.
 */
static int add_acronym(accum_t *a, const char *w, size_t n)
{
	char x[8];
	enum band band;

	if (n < 2 || n > 4 || a->e->opts.no_stem)
		return 0;
	memcpy(x, w, n);
	band = words_get(a->e, x, stem(x, n));
	if (band == BAND_RARE || band == BAND_COMMON || band == BAND_FAMILIAR)
		return 0;
	if (n == 2 && w[0] == 'u' && w[1] == 's') {
		add_token(a, (char[]){'u', 's', 'a'}, 3); /* as "USA" */
		return 1;
	}
	x[0] = '^'; /* apart from the word it spells */
	memcpy(x + 1, w, n);
	add_token(a, x, n + 1);
	return 1;
}

static int is_word_byte(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c >= 0x80;
}

static int is_symbol(unsigned char c)
{
	return c != '\0' && strchr("+#=*&%$@<>^~|", c) != NULL;
}

/* Tokenise text and feed every word to add_raw. */
static void scan(accum_t *a, const char *text, size_t len)
{
	char w[MAX_WORD];
	size_t n = 0, apos = SIZE_MAX, upper = 0;
	const unsigned char *p = (const unsigned char *)text;
	int has_lower = 0; /* capitals mean an acronym only in mixed case */

	for (size_t i = 0; i < len && !has_lower; i++)
		has_lower = p[i] >= 'a' && p[i] <= 'z';

	for (size_t i = 0; i <= len; i++) {
		unsigned char c = i < len ? p[i] : ' ';
		/* U+2019 (right single quote, E2 80 99) is an apostrophe too */
		int quote = c == '\'' ||
			    (c == 0xe2 && i + 2 < len && p[i + 1] == 0x80 &&
			     p[i + 2] == 0x99);
		if (quote && n > 0 && apos == SIZE_MAX && i + 1 < len) {
			size_t skip = c == '\'' ? 0 : 2;
			if (i + 1 + skip < len && is_word_byte(p[i + 1 + skip]) &&
			    n < MAX_WORD) {
				apos = n;
				w[n++] = '\'';
				i += skip;
				continue;
			}
		}
		if (!quote && is_word_byte(c)) {
			upper += c >= 'A' && c <= 'Z';
			if (n < MAX_WORD)
				w[n++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
			continue;
		}
		if (n > 0 && !(upper == n && has_lower && add_acronym(a, w, n)))
			add_raw(a, w, n, apos);
		n = 0;
		upper = 0;
		apos = SIZE_MAX;
		if (quote && c == 0xe2)
			i += 2; /* a lone U+2019: skip all of it */
		/* runs of operator-like symbols are words too: C++ vs C#,
		 * = vs ==, $ and % carry meaning */
		if (is_symbol(c)) {
			size_t k = 0;
			while (i + k < len && is_symbol(p[i + k]) && k < MAX_WORD)
				k++;
			memcpy(w, p + i, k);
			add_raw(a, w, k, SIZE_MAX);
			i += k - 1;
		}
	}
}

int sg_embed_local_embed(const sg_embed_local_t *e, const char *text, size_t len,
			 float *out)
{
	accum_t a;
	double norm = 0;
	int dim = e->opts.dim;

	if (len > e->opts.max_bytes)
		return SG_ETOOBIG;
	if (text == NULL && len > 0)
		return SG_EINVAL;

	memset(&a, 0, sizeof(a));
	a.e = e;
	a.v = out;
	memset(out, 0, (size_t)dim * sizeof(float));
	scan(&a, text, len);
	for (int i = 0; i < dim; i++)
		norm += (double)out[i] * out[i];

	if (norm < 1e-12) {
		/* only function words ("what is it?"), or weights switched off:
		 * weigh every word alike rather than give up */
		memset(&a, 0, sizeof(a));
		a.e = e;
		a.v = out;
		a.force = 1;
		memset(out, 0, (size_t)dim * sizeof(float));
		scan(&a, text, len);
		norm = 0;
		for (int i = 0; i < dim; i++)
			norm += (double)out[i] * out[i];
	}
	if (norm < 1e-12) {
		/* no words at all: "", "???", "!!!" each get a vector of their own */
		memset(out, 0, (size_t)dim * sizeof(float));
		add_feature(&a, hash_bytes(SEED_EMPTY, text ? text : "", len), 1.0f);
		norm = 1;
	}
	norm = 1.0 / sqrt(norm);
	for (int i = 0; i < dim; i++)
		out[i] = (float)(out[i] * norm);
	return 0;
}

/* The words of a text as the embedder sees them (see embed_int.h). */
void sg__embed_local_words(const sg_embed_local_t *e, const char *text, size_t len,
			   sg__embed_word_cb cb, void *ud)
{
	accum_t a;

	if (text == NULL)
		return;
	memset(&a, 0, sizeof(a));
	a.e = e;
	a.word_cb = cb;
	a.word_ud = ud;
	scan(&a, text, len);
}
