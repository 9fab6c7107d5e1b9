/* The cache's second stage: compare two prompts word by word.
 *
 * Both texts go through the `local` embedder's own normalisation
 * (sg__embed_local_words: case, contractions, variants, stemming, bands), so
 * "How do I lose weight quickly?" and "how can i lose weight fast" compare as
 * the embedder saw them. Then each side's words are matched against the
 * other's (exact stems, or one typo / a short extra suffix for long words),
 * and the evidence described in semgate/verify.h is collected. Every word
 * list and weight here is generic English written by hand; the few penalty
 * sizes are the only things tuned on data (bench/QUALITY.md).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "semgate/verify.h"
#include "embed_int.h"

/* Penalties, the only knobs tuned on data (bench/QUALITY.md); in units of
 * cosine, per piece of evidence (per unit of word weight for the first two). */
#define DEFAULT_SUBSTITUTION 0.04f
#define DEFAULT_EXTRA 0.08f
#define DEFAULT_NUMBER 0.08f
#define DEFAULT_NEGATION 0.06f
#define DEFAULT_QTYPE 0.04f
#define DEFAULT_ANTONYM 0.08f
#define DEFAULT_ORDER 0.04f
#define DEFAULT_CONTEXT 0.1f

/* A pair is "covered" (reported only) when no unmatched word weighs more
 * than this: between the embedder's template words (0.25) and its pronouns
 * (0.4), so "best way" vs "how" may differ but "your life" vs "life" not. */
#define COVER_MAX_MISS 0.3f
/* Content words at least this heavy (rare words only) take part in
 * the word-order check. */
#define ORDER_MIN_WEIGHT 1.0f

#define STEM_KEEP 24 /* bytes of each stem kept for fuzzy matching */

/* Opposites: either word of a pair on one side only, the other on the other
 * side only, says the two ask different things. Stemmed at creation by the
 * embedder, so inflections match ("bought" / "sold"). */
static const char *const antonyms[][2] = {
	{"best", "worst"},       {"good", "bad"},         {"better", "worse"},
	{"before", "after"},     {"increase", "decrease"}, {"gain", "lose"},
	{"buy", "sell"},         {"advantage", "disadvantage"}, {"pro", "con"},
	{"male", "female"},      {"man", "woman"},        {"boy", "girl"},
	{"up", "down"},          {"on", "off"},           {"first", "last"},
	{"old", "new"},          {"young", "old"},        {"start", "end"},
	{"most", "least"},       {"more", "less"},        {"rich", "poor"},
	{"cheap", "expensive"},  {"love", "hate"},        {"like", "dislike"},
	{"win", "lose"},         {"big", "small"},        {"large", "small"},
	{"positive", "negative"}, {"high", "low"},        {"long", "short"},
	{"easy", "hard"},        {"easy", "difficult"},   {"fast", "slow"},
	{"true", "false"},       {"right", "wrong"},      {"legal", "illegal"},
	{"possible", "impossible"}, {"import", "export"}, {"input", "output"},
	{"husband", "wife"},     {"north", "south"},      {"east", "west"},
	{"day", "night"},        {"hot", "cold"},         {"light", "dark"},
	{"open", "close"},       {"inside", "outside"},   {"online", "offline"},
	{"past", "future"},      {"private", "public"},   {"top", "bottom"},
	{"maximum", "minimum"},  {"max", "min"},          {"strong", "weak"},
	{"happy", "sad"},        {"success", "failure"},  {"friend", "enemy"},
	{"internal", "external"}, {"enable", "disable"},  {"add", "remove"},
	{"send", "receive"},     {"push", "pull"},        {"always", "never"},
	{"everything", "nothing"}, {"include", "exclude"}, {"accept", "reject"},
	{"agree", "disagree"},   {"over", "under"},       {"above", "below"},
	{"early", "late"},       {"upload", "download"},  {"login", "logout"},
	{"heaven", "hell"},      {"son", "daughter"},     {"mother", "father"},
	{"brother", "sister"},   {"king", "queen"},       {"win", "loss"},
	{"profit", "loss"},      {"arrive", "depart"},
	{"borrow", "lend"},      {"teacher", "student"},  {"employer", "employee"},
	{"buyer", "seller"},     {"parent", "child"},     {"white", "black"},
	{"same", "different"},
};

/* Spelled-out numbers compare as numbers ("three habits" / "3 habits"). "one"
 * is left alone: it is more often a pronoun ("how can one..."). */
static const char *const number_words[][2] = {
	{"two", "2"},     {"three", "3"},   {"four", "4"},     {"five", "5"},
	{"six", "6"},     {"seven", "7"},   {"eight", "8"},    {"nine", "9"},
	{"ten", "10"},    {"eleven", "11"}, {"twelve", "12"},  {"twenty", "20"},
	{"hundred", "100"}, {"thousand", "1000"},
};

/* Auxiliaries that open a yes/no question ("Is it...", "Does it..."), and
 * words joining two alternatives, under which word order carries no meaning
 * ("Java or Python" / "Python or Java"). Stemmed at creation. */
static const char aux_words[] = "is are am was were do does did have has had";
static const char coord_words[] = "or and versus between compare comparison";

/* Demonstratives: "this picture", "these sentences" or a bare "this" at the
 * end ("What is that?") point at content outside the text (an image, an earlier message), so
 * two such prompts may ask about different things whatever their words;
 * "the following" likewise. Time words after them are ordinary ("this
 * year"). Stemmed at creation. */
static const char deictic_words[] = "this these";
static const char deictic_end_words[] = "this these that those";
static const char time_words[] =
	"year month week day time summer winter spring autumn weekend morning "
	"evening night season century decade semester quarter moment era";

enum qkind { Q_NONE = 0, Q_WHAT, Q_HOW, Q_WHY, Q_WHO, Q_WHEN, Q_WHERE, Q_YESNO };

typedef struct pair_entry {
	uint64_t hash;    /* stem hash of one word; 0 = empty slot */
	uint64_t partner; /* its opposite */
} pair_entry_t;

typedef struct set_entry {
	uint64_t hash;   /* stem hash; 0 = empty slot */
	uint64_t value;  /* what it stands for (a number word's digits, a
			    question word's kind...) */
} set_entry_t;

#define ANT_SLOTS 512
#define SET_SLOTS 128

struct sg_verify {
	sg_embed_local_t *embed;       /* the tokenizer (default knobs) */
	sg_verify_opts_t o;            /* with defaults filled in */
	pair_entry_t ant[ANT_SLOTS];   /* opposites, both directions */
	set_entry_t numw[SET_SLOTS];   /* number words -> a number hash */
	set_entry_t aux[SET_SLOTS];    /* yes/no auxiliaries */
	set_entry_t coord[SET_SLOTS];  /* coordinators */
	set_entry_t qword[SET_SLOTS];  /* question words -> enum qkind */
	set_entry_t deictic[SET_SLOTS]; /* this, these */
	set_entry_t deictic_end[SET_SLOTS]; /* and that, those (at the end only:
					       "that" is also a conjunction) */
	set_entry_t timew[SET_SLOTS];  /* time words */
	set_entry_t person[SET_SLOTS]; /* first/second person and generic "one"
					  -> grammatical case */
	uint64_t the, following;       /* stems of "the" and "following" */
};

/* ---- hashing and small tables -------------------------------------------- */

static uint64_t stem_hash(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h | 1; /* never 0: 0 marks empty slots */
}

static void set_put(set_entry_t *t, uint64_t h, uint64_t value)
{
	size_t i = h & (SET_SLOTS - 1);
	while (t[i].hash && t[i].hash != h)
		i = (i + 1) & (SET_SLOTS - 1);
	if (t[i].hash == 0)
		t[i] = (set_entry_t){h, value};
}

/* The value stored for h, or 0 when absent. */
static uint64_t set_get(const set_entry_t *t, uint64_t h)
{
	for (size_t i = h & (SET_SLOTS - 1); t[i].hash; i = (i + 1) & (SET_SLOTS - 1))
		if (t[i].hash == h)
			return t[i].value;
	return 0;
}

static void first_stem_cb(void *ud, const sg__embed_word_t *w)
{
	uint64_t *h = ud;
	if (*h == 0)
		*h = stem_hash(w->w, w->n);
}

/* The hash of a word's stem as the embedder normalises it. */
static uint64_t word_stem(const sg_verify_t *v, const char *word)
{
	uint64_t h = 0;
	sg__embed_local_words(v->embed, word, strlen(word), first_stem_cb, &h);
	return h;
}

static void set_add_list(sg_verify_t *v, set_entry_t *t, const char *list, uint64_t value)
{
	char w[32];
	const char *p = list;

	while (*p) {
		size_t n = 0;
		while (*p && *p != ' ' && n < sizeof(w) - 1)
			w[n++] = *p++;
		w[n] = '\0';
		if (n > 0)
			set_put(t, word_stem(v, w), value);
		while (*p == ' ')
			p++;
	}
}

static void ant_put(sg_verify_t *v, uint64_t h, uint64_t partner)
{
	size_t i = h & (ANT_SLOTS - 1);
	/* a word with several opposites keeps the first; the table is small
	 * enough that this does not matter ("lose": gain, "win": lose) */
	while (v->ant[i].hash && v->ant[i].hash != h)
		i = (i + 1) & (ANT_SLOTS - 1);
	if (v->ant[i].hash == 0)
		v->ant[i] = (pair_entry_t){h, partner};
}

/* ---- one side: the words of a text ---------------------------------------- */

typedef struct vword {
	uint64_t hash;     /* stem hash */
	float weight;      /* the embedder's weight */
	uint8_t kind;      /* enum sg__word_kind */
	uint8_t len;       /* stem bytes kept (<= STEM_KEEP) */
	uint8_t matched;   /* has a match on the other side */
	int16_t partner;   /* index of its exact match on the other side, -1 none */
	char stem[STEM_KEEP]; /* first bytes of the stem */
} vword_t;

typedef struct side {
	const sg_verify_t *v;            /* the verifier */
	vword_t w[SG_VERIFY_MAX_WORDS];  /* words in order */
	int n;                           /* words kept */
	int qkind;                       /* enum qkind */
	int negations;                   /* negation words seen */
	int coord;                       /* a coordinator seen */
	int context;                     /* points at content outside the text */
	uint64_t prev;                   /* stem hash of the previous word */
} side_t;

static void side_word_cb(void *ud, const sg__embed_word_t *w)
{
	side_t *s = ud;
	const sg_verify_t *v = s->v;
	uint64_t h = stem_hash(w->w, w->n), num;
	vword_t *x;
	uint64_t q;

	if (s->n == SG_VERIFY_MAX_WORDS)
		return;
	x = &s->w[s->n++];
	x->hash = h;
	x->kind = (uint8_t)w->kind;
	x->weight = w->weight;
	x->len = (uint8_t)SG_MIN(w->n, (size_t)STEM_KEEP);
	x->matched = 0;
	x->partner = -1;
	memcpy(x->stem, w->w, x->len);
	if ((num = set_get(v->numw, h)) != 0) {
		x->kind = SG__WORD_NUMBER;
		x->hash = num;
	}

	if (w->kind == SG__WORD_NEGATION)
		s->negations++;
	if (s->prev && set_get(v->deictic, s->prev) && w->kind != SG__WORD_STOP &&
	    w->kind != SG__WORD_QUESTION && w->kind != SG__WORD_PRONOUN &&
	    !set_get(v->timew, h))
		s->context = 1;
	if (s->prev == v->the && h == v->following)
		s->context = 1;
	s->prev = h;
	if (set_get(v->coord, h))
		s->coord = 1;
	/* the kind of question: its opening word when that is a question word,
	 * an auxiliary or a modal; else the first question word anywhere
	 * ("I failed my exam, what should I do?") */
	if (s->qkind == Q_NONE) {
		q = set_get(v->qword, h);
		if (q)
			s->qkind = (int)q;
		else if (w->index == 0 &&
			 (w->kind == SG__WORD_MODAL || set_get(v->aux, h)))
			s->qkind = Q_YESNO;
	}
}

/* Cut text to at most SG_VERIFY_MAX_BYTES, at a space when there is one. */
static size_t capped_len(const char *text, size_t len)
{
	if (len <= SG_VERIFY_MAX_BYTES)
		return len;
	for (size_t n = SG_VERIFY_MAX_BYTES; n > SG_VERIFY_MAX_BYTES / 2; n--)
		if (text[n] == ' ')
			return n;
	return SG_VERIFY_MAX_BYTES;
}

static void side_read(side_t *s, const sg_verify_t *v, const char *text, size_t len)
{
	s->v = v;
	s->n = 0;
	s->qkind = Q_NONE;
	s->negations = 0;
	s->coord = 0;
	s->context = 0;
	s->prev = 0;
	if (text != NULL)
		sg__embed_local_words(v->embed, text, capped_len(text, len), side_word_cb, s);
	/* a bare demonstrative ends the text: "What is this?" */
	if (s->n > 0 && set_get(v->deictic_end, s->w[s->n - 1].hash))
		s->context = 1;
}

/* ---- matching --------------------------------------------------------------- */

static int is_alpha(const vword_t *x)
{
	for (size_t i = 0; i < x->len; i++)
		if (x->stem[i] < 'a' || x->stem[i] > 'z')
			return 0;
	return 1;
}

/* One typo (substitution, insertion, deletion or swap of neighbours) apart. */
static int one_edit(const char *p, size_t n, const char *q, size_t m)
{
	size_t i = 0;

	if (n > m + 1 || m > n + 1)
		return 0;
	while (i < n && i < m && p[i] == q[i])
		i++;
	if (n == m) {
		if (i == n)
			return 1;
		if (memcmp(p + i + 1, q + i + 1, n - i - 1) == 0)
			return 1;
		return i + 1 < n && p[i] == q[i + 1] && p[i + 1] == q[i] &&
		       memcmp(p + i + 2, q + i + 2, n - i - 2) == 0;
	}
	if (n > m)
		return memcmp(p + i + 1, q + i, n - i - 1) == 0;
	return memcmp(p + i, q + i + 1, m - i - 1) == 0;
}

/* Two different stems that still name the same thing: a typo or a
 * spelling variant in a long word ("recieve" / "receive"), or a short extra
 * suffix the stemmer left ("develop" / "developer"). */
static int fuzzy_equal(const vword_t *x, const vword_t *y)
{
	const vword_t *s = x->len <= y->len ? x : y, *l = s == x ? y : x;

	if (s->len < 5 || !is_alpha(x) || !is_alpha(y))
		return 0;
	if (l->len - s->len <= 3 && memcmp(s->stem, l->stem, s->len) == 0)
		return 1;
	return s->len >= 6 && one_edit(x->stem, x->len, y->stem, y->len);
}

/* Words whose presence on one side only is evidence of a different
 * question: everything but function words, question words, negations and
 * numbers (which have evidence of their own). */
static int is_content(const vword_t *x)
{
	return x->weight > 0 && x->kind != SG__WORD_STOP && x->kind != SG__WORD_QUESTION &&
	       x->kind != SG__WORD_NEGATION && x->kind != SG__WORD_NUMBER;
}

/*
 * "How do I", "how do you", "how can we", "how can one": in a question the
 * asker's person is mostly generic, so an unmatched first/second person
 * pronoun (or "one") pairs with one of the same case on the other side
 * (my / your, myself / yourself). Third person ("his", "their") names
 * someone else and stays evidence.
 */
static void match_person(const sg_verify_t *v, side_t *a, side_t *b)
{
	for (int i = 0; i < a->n; i++) {
		vword_t *x = &a->w[i];
		uint64_t c = set_get(v->person, x->hash);
		if (x->matched || !c)
			continue;
		for (int j = 0; j < b->n; j++) {
			vword_t *y = &b->w[j];
			if (!y->matched && set_get(v->person, y->hash) == c) {
				x->matched = y->matched = 1;
				break;
			}
		}
	}
}

static void match_sides(side_t *a, side_t *b)
{
	for (int i = 0; i < a->n; i++) {
		vword_t *x = &a->w[i];
		for (int j = 0; j < b->n; j++) {
			vword_t *y = &b->w[j];
			if (x->hash == y->hash) {
				x->matched = y->matched = 1;
				if (x->partner < 0 && y->partner < 0) {
					x->partner = (int16_t)j;
					y->partner = (int16_t)i;
				}
			}
		}
	}
	match_person(a->v, a, b);
	/* fuzzy matches only for content words still unmatched */
	for (int i = 0; i < a->n; i++) {
		vword_t *x = &a->w[i];
		if (x->matched || !is_content(x))
			continue;
		for (int j = 0; j < b->n; j++) {
			vword_t *y = &b->w[j];
			if (is_content(y) && fuzzy_equal(x, y)) {
				x->matched = 1;
				y->matched = 1;
			}
		}
	}
}

/* Weight of the heaviest content word of s without a match. */
static float max_miss(const side_t *s)
{
	float m = 0;
	for (int i = 0; i < s->n; i++)
		if (!s->w[i].matched && is_content(&s->w[i]) && s->w[i].weight > m)
			m = s->w[i].weight;
	return m;
}

static int unmatched_number(const side_t *s)
{
	for (int i = 0; i < s->n; i++)
		if (s->w[i].kind == SG__WORD_NUMBER && !s->w[i].matched)
			return 1;
	return 0;
}

static int has_word(const side_t *s, uint64_t h)
{
	for (int i = 0; i < s->n; i++)
		if (s->w[i].hash == h)
			return 1;
	return 0;
}

static uint64_t ant_get(const sg_verify_t *v, uint64_t h)
{
	for (size_t i = h & (ANT_SLOTS - 1); v->ant[i].hash; i = (i + 1) & (ANT_SLOTS - 1))
		if (v->ant[i].hash == h)
			return v->ant[i].partner;
	return 0;
}

/* A word of a whose opposite is in b, neither being on both sides. */
static int opposites(const sg_verify_t *v, const side_t *a, const side_t *b)
{
	for (int i = 0; i < a->n; i++) {
		uint64_t p;
		if (a->w[i].matched || (p = ant_get(v, a->w[i].hash)) == 0)
			continue;
		if (has_word(b, p) && !has_word(a, p))
			return 1;
	}
	return 0;
}

/* Two heavy words both sides share exactly once, in opposite orders. */
static int swapped(const side_t *a, const side_t *b)
{
	int last = -1; /* b-position of the previous eligible word of a */

	for (int i = 0; i < a->n; i++) {
		const vword_t *x = &a->w[i];
		if (x->partner < 0 || x->weight < ORDER_MIN_WEIGHT || !is_content(x))
			continue;
		/* only words that occur once on each side have one order */
		int twice = 0;
		for (int k = 0; k < a->n && !twice; k++)
			twice = k != i && a->w[k].hash == x->hash;
		for (int k = 0; k < b->n && !twice; k++)
			twice = k != x->partner && b->w[k].hash == x->hash;
		if (twice)
			continue;
		if (x->partner < last)
			return 1;
		last = x->partner;
	}
	return 0;
}

/* ---- the score -------------------------------------------------------------- */

static float weight_of(float knob)
{
	return knob > 0 ? knob : 0;
}

float sg_verify_explain(const sg_verify_t *v, const char *a, size_t alen, const char *b,
                        size_t blen, float cosine, sg_verify_evidence_t *ev)
{
	side_t sa, sb;
	const sg_verify_opts_t *o = &v->o;
	float pen, score, lo, hi;

	memset(ev, 0, sizeof(*ev));
	if (!isfinite(cosine))
		cosine = 0;
	ev->cosine = cosine;
	if (alen == blen && (alen == 0 || (a && b && memcmp(a, b, alen) == 0))) {
		ev->covered = 1;
		ev->score = cosine < 0 ? 0 : cosine > 1 ? 1 : cosine;
		return ev->score;
	}
	if (a == NULL)
		alen = 0;
	if (b == NULL)
		blen = 0;
	side_read(&sa, v, a, alen);
	side_read(&sb, v, b, blen);
	match_sides(&sa, &sb);

	ev->miss_a = max_miss(&sa);
	ev->miss_b = max_miss(&sb);
	ev->number = unmatched_number(&sa) || unmatched_number(&sb);
	ev->negation = (sa.negations > 0) != (sb.negations > 0);
	ev->qtype = sa.qkind != Q_NONE && sb.qkind != Q_NONE && sa.qkind != sb.qkind;
	ev->antonym = opposites(v, &sa, &sb) || opposites(v, &sb, &sa);
	ev->order = !sa.coord && !sb.coord && swapped(&sa, &sb);
	ev->context = sa.context || sb.context;

	lo = SG_MIN(ev->miss_a, ev->miss_b);
	hi = SG_MAX(ev->miss_a, ev->miss_b);
	pen = weight_of(o->substitution) * lo + weight_of(o->extra) * hi +
	      weight_of(o->number) * (float)ev->number +
	      weight_of(o->negation) * (float)ev->negation +
	      weight_of(o->qtype) * (float)ev->qtype +
	      weight_of(o->antonym) * (float)ev->antonym +
	      weight_of(o->order) * (float)ev->order +
	      weight_of(o->context) * (float)ev->context;
	ev->covered = hi <= COVER_MAX_MISS && !ev->number && !ev->negation && !ev->qtype &&
		      !ev->antonym && !ev->order && !ev->context;

	score = cosine - pen;
	ev->score = score < 0 ? 0 : score > 1 ? 1 : score;
	return ev->score;
}

float sg_verify_score(const sg_verify_t *v, const char *a, size_t alen, const char *b,
                      size_t blen, float cosine)
{
	sg_verify_evidence_t ev;
	return sg_verify_explain(v, a, alen, b, blen, cosine, &ev);
}

/* ---- lifecycle ------------------------------------------------------------- */

static float knob(float value, float def)
{
	return value == 0 ? def : value;
}

int sg_verify_new(sg_verify_t **out, const sg_verify_opts_t *opts)
{
	static const struct {
		const char *word;
		enum qkind kind;
	} qwords[] = {
		{"what", Q_WHAT}, {"which", Q_WHAT}, {"how", Q_HOW},     {"why", Q_WHY},
		{"who", Q_WHO},   {"whom", Q_WHO},   {"whose", Q_WHO},   {"when", Q_WHEN},
		{"where", Q_WHERE}, {"whether", Q_YESNO},
	};
	sg_verify_opts_t o = {0};
	sg_verify_t *v;
	int rc;

	if (opts)
		o = *opts;
	o.substitution = knob(o.substitution, DEFAULT_SUBSTITUTION);
	o.extra = knob(o.extra, DEFAULT_EXTRA);
	o.number = knob(o.number, DEFAULT_NUMBER);
	o.negation = knob(o.negation, DEFAULT_NEGATION);
	o.qtype = knob(o.qtype, DEFAULT_QTYPE);
	o.antonym = knob(o.antonym, DEFAULT_ANTONYM);
	o.order = knob(o.order, DEFAULT_ORDER);
	o.context = knob(o.context, DEFAULT_CONTEXT);
	if (!isfinite(o.substitution) || !isfinite(o.extra) || !isfinite(o.number) ||
	    !isfinite(o.negation) || !isfinite(o.qtype) || !isfinite(o.antonym) ||
	    !isfinite(o.order) || !isfinite(o.context))
		return SG_EINVAL;

	if ((v = calloc(1, sizeof(*v))) == NULL)
		return SG_ENOMEM;
	v->o = o;
	if ((rc = sg_embed_local_new(&v->embed, NULL)) != 0) {
		free(v);
		return rc;
	}
	for (size_t i = 0; i < SG_ARRAY_SIZE(antonyms); i++) {
		uint64_t x = word_stem(v, antonyms[i][0]), y = word_stem(v, antonyms[i][1]);
		if (x && y && x != y) {
			ant_put(v, x, y);
			ant_put(v, y, x);
		}
	}
	for (size_t i = 0; i < SG_ARRAY_SIZE(number_words); i++)
		set_put(v->numw, word_stem(v, number_words[i][0]),
			word_stem(v, number_words[i][1]));
	for (size_t i = 0; i < SG_ARRAY_SIZE(qwords); i++)
		set_put(v->qword, word_stem(v, qwords[i].word), (uint64_t)qwords[i].kind);
	set_add_list(v, v->aux, aux_words, 1);
	set_add_list(v, v->coord, coord_words, 1);
	set_add_list(v, v->deictic, deictic_words, 1);
	set_add_list(v, v->deictic_end, deictic_end_words, 1);
	set_add_list(v, v->timew, time_words, 1);
	set_add_list(v, v->person, "i you we one", 1);
	set_add_list(v, v->person, "me us", 2);
	set_add_list(v, v->person, "my your our", 3);
	set_add_list(v, v->person, "myself yourself ourselves oneself", 4);
	v->the = word_stem(v, "the");
	v->following = word_stem(v, "following");
	*out = v;
	return 0;
}

void sg_verify_free(sg_verify_t *v)
{
	if (v == NULL)
		return;
	sg_embed_local_free(v->embed);
	free(v);
}
