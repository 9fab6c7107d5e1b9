"""Parity of semgate's WordPiece tokenizer (cache/wordpiece.c) with Hugging Face
`tokenizers`, the reference it must match id for id.

    wordpiece_parity.py --dump build/wordpiece_dump [--models-dir models]
    wordpiece_parity.py --tables        # print wordpiece.c's Unicode tables

Runs with the project's virtualenv (.venv, made by `bash .ci/setup`), which
has tokenizers 0.20.3. Compares, for thousands of texts generated from a fixed
seed (questions, accents in several scripts, CJK, kana, Hangul, emoji and ZWJ
sequences, control, zero-width and odd whitespace characters, combining
marks, math symbols, very long words, "[SEP]"/"[MASK]" in the text, texts
past the maximum length, invalid UTF-8):

  (a) synthetic tokenizers written here (a ~2000-token vocabulary with ##
      pieces, accented and CJK entries), in several normaliser settings,
      each through both of semgate's loaders (tokenizer.json, and vocab.txt
      with options) against the reference; plus a sweep of the Unicode code
      points (all of those in planes with characters, a sample of the rest)
      through the normaliser and pre-tokeniser;
  (b) every real model found: <models-dir>/*/tokenizer.json, and the
      directories or files listed in $SEMGATE_WORDPIECE_MODELS (colon-
      separated), at max_len 128, 512 and without a limit.

semgate's side runs through the wordpiece_dump driver (tests/unit/
wordpiece_dump.c). Every mismatch is printed with the text and both id lists;
any mismatch fails the test.
"""
import argparse
import ctypes
import glob
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
except ImportError:
    sys.exit("wordpiece_parity: the Python package `tokenizers` is missing: run bash .ci/setup")

SEED = 20240611
N_RANDOM = 3000
LENGTHS = (128, 512, 0)  # 0: no limit
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# --- the synthetic vocabulary ---------------------------------------------

ENGLISH = """the of and to a in is it you that he was for on are with as i his they be at
one have this from or had by hot word but what some we can out other were all there when up
use your how said an each she which do their time if will way about many then them write
would like so these her long make thing see him two has look more day could go come did
number sound no most people my over know water than call first who may down side been now
find any new work part take get place made live where after back little only round man year
came show every good me give our under name very through just form sentence great think say
help low line differ turn cause much mean before move right boy old too same tell does set
three want air well also play small end put home read hand port large spell add even land
here must big high such follow act why ask men change went light kind off need house picture
try us again animal point mother world near build self earth father head stand own page
should country found answer school grow study still learn plant cover food sun four between
state keep eye never last let thought city tree cross farm hard start might story saw far sea
draw left late run don't while press close night real life few north best better weight lose
quickly question python java code error install windows linux phone price money bank account
password email reset machine learning model data science computer program language english
french german spanish chinese japanese korean doctor health pain sleep travel visa hotel
flight ticket movie music song book game football player team""".split()

PIECES = """##s ##es ##ed ##ing ##er ##ers ##est ##ly ##tion ##tions ##able ##ible ##ment ##ness
##ful ##less ##ous ##ive ##al ##ial ##ic ##ist ##ism ##ize ##ise ##y ##ie ##a ##o ##e ##i
##u ##on ##an ##en ##in ##un ##re ##de ##ab ##le ##ra ##ro ##ri ##ta ##to ##te ##ti ##na
##ne ##ni ##no ##ma ##me ##mi ##la ##li ##lo ##ka ##ke ##ki ##ko ##sa ##se ##si ##so ##th
##ch ##sh ##ph ##gh ##ck ##ng ##nt ##st ##rd ##ld un re pre dis mis over under inter trans
anti auto bio geo micro macro multi non post semi sub super tele uni unaff ##aff ##ord
##ordable ##affordable afford ##abl ##ity ##ities ##ation ##ations qu ##qu x ##x
""".split()

ACCENTED = """café naïve résumé über straße niño señor façade crème brûlée déjà vu jalapeño
zoë noël garçon élève été être château forêt hôtel île où ça müller größe schön fräulein
mañana español año pingüino łódź zażółć gęślą jaźń český příliš žluťoučký kůň tiếng việt
hà nội phở ελληνικά καλημέρα αθήνα μουσική москва привет россия язык ёлка йогурт
""".split()

CJK = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单"
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんがぎぐげござじずぜぞだぢづでどばびぶべぼぱぴぷぺぽアイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンガギグゲゴザジズゼゾダヂヅデドバビブベボパピプペポー"
JAMO = [chr(c) for c in list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) +
        list(range(0x11A8, 0x11C3))]
HANGUL = "한국어안녕하세요감사합니다사랑해요대한민국서울"
GREEK = "αβγδεζηθικλμνξοπρστυφχψωςάέήίόύώϊϋΐΰ"
CYRILLIC = "абвгдежзийклмнопрстуфхцчшщъыьэюяё"
EMOJI = ["😀", "😂", "❤", "👍", "🔥", "🎉", "✨", "🙏", "😍", "🚀", "👩", "👧", "👨", "🏽", "🇫", "🇷",
         "☕", "⚽", "✈", "🌍"]
MATH = ["∑", "∫", "≤", "≥", "±", "×", "÷", "√", "∞", "≠", "≈", "∂", "∆", "π", "²", "³", "½", "ℝ",
        "𝑥", "→", "€", "£", "¥", "°", "µ"]


def vocab_tokens():
    """The synthetic vocabulary, [PAD] first and [UNK] [CLS] [SEP] [MASK] at
    100..103 as in BERT. Cased forms are included for the cased settings."""
    seen, out = set(), []

    def add(tok):
        if tok and tok not in seen:
            seen.add(tok)
            out.append(tok)

    add("[PAD]")
    for i in range(99):
        add("[unused%d]" % i)
    for s in SPECIALS[1:]:
        add(s)
    for c in map(chr, range(33, 127)):
        add(c)
        add("##" + c)
    for s in (ENGLISH + PIECES + ACCENTED):
        add(s)
        add(s.capitalize())
    for w in ACCENTED:  # the stripped forms, for the uncased settings
        import unicodedata
        add("".join(ch for ch in unicodedata.normalize("NFD", w)
                    if unicodedata.category(ch) != "Mn"))
    for c in "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœłśźżčřšžěůđ" + GREEK + CYRILLIC:
        add(c)
        add("##" + c)
        add(c.upper())
    for c in CJK + KANA + HANGUL:
        add(c)
        add("##" + c)
    for c in JAMO:
        add(c)
        add("##" + c)
    for s in EMOJI + MATH:
        add(s)
    for s in ["i\u0307", "##\u0307", "\u0307", "##\u0301", "##\u0308", "e\u0301", "\ufffd",
              "##\ufffd", "\u200d", "##\u200d", "\ufe0f", "##\ufe0f", "2023", "##23", "100",
              "##00", "##000", "1", "##1"]:
        add(s)
    return out


# Settings of the synthetic tokenizers: (name, BertNormalizer args, model args)
SETTINGS = [
    ("uncased", dict(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                     lowercase=True), dict(max_input_chars_per_word=100)),
    ("cased", dict(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                   lowercase=False), dict(max_input_chars_per_word=100)),
    ("cased_strip", dict(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                         lowercase=False), dict(max_input_chars_per_word=100)),
    ("lower_nostrip", dict(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                           lowercase=True), dict(max_input_chars_per_word=100)),
    ("raw", dict(clean_text=False, handle_chinese_chars=False, strip_accents=True,
                 lowercase=True), dict(max_input_chars_per_word=12)),
]


def reference_from_vocab(vocab_txt, norm, model_args, template):
    """The reference built as its BertWordPieceTokenizer builds one from vocab.txt."""
    tk = Tokenizer(models.WordPiece.from_file(vocab_txt, unk_token="[UNK]",
                                              continuing_subword_prefix="##", **model_args))
    for s in ["[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]"]:
        if tk.token_to_id(s) is not None:
            tk.add_special_tokens([s])
    tk.normalizer = normalizers.BertNormalizer(**norm)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    if template:
        tk.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    else:
        tk.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    return tk


def more_added_tokens(path):
    """Added tokens as fine-tuned models have them: [MASK] taking the
    whitespace around it (lstrip, rstrip), and some that are not special: two
    where one is a prefix of the other (the longest match wins), and a word
    (matched inside other words, and only in that case)."""
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    for a in tj["added_tokens"]:
        if a["content"] == "[MASK]":
            a["lstrip"] = a["rstrip"] = True
    for s in ("[unused1]", "[unused10]", "the"):
        tj["added_tokens"].append({"id": vocab[s], "content": s, "single_word": False,
                                   "lstrip": False, "rstrip": False, "normalized": False,
                                   "special": False})
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)


def vocab_args(norm, model_args):
    """wordpiece_dump's options for the vocab.txt loader."""
    strip = norm["strip_accents"]
    return ["--lowercase", str(int(norm["lowercase"])),
            "--strip-accents", "-1" if strip is None else str(int(strip)),
            "--clean-text", str(int(norm["clean_text"])),
            "--chinese", str(int(norm["handle_chinese_chars"])),
            "--max-chars", str(model_args["max_input_chars_per_word"])]


# --- the texts -------------------------------------------------------------

CONTROL = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x85", "\x9f",
           "\u00ad", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\u2066",
           "\ufeff", "\ufffd", "\ue000", "\U000f0000", "\u061c", "\u08e2", "\u180e"]
SPACES = [" ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u1680", "\u2000", "\u2003", "\u2009",
          "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "  "]
MARKS = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u030a", "\u0316", "\u0327",
         "\u0334", "\u0345", "\u05b0", "\u05bc", "\u064b", "\u0651", "\u093c", "\u094d",
         "\u0e48", "\u0f39", "\u1dc0", "\u20d7", "\u0488", "\u0903", "\U0001d165", "\U0001d16d",
         "\u302e", "\u08d4", "\u0c3c", "\u1ac1", "\u07fd", "\ufe0f", "\u0307"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["¿", "¡", "«", "»", "—", "–", "…", "“",
         "”", "‘", "’", "·", "§", "¶", "†", "‡", "•", "‰", "″", "‽", "⁂", "、", "。", "「", "」",
         "『", "』", "〜", "・", "！", "？", "（", "）", "：", "؟", "،", "।", "॥", "٪", "⸮",
         "\u2e43", "\u2e4f", "\u166d", "\u1b7d", "\U0001e95e"]
SCRIPTS = ["Ελληνικά κείμενα με τόνους: ά έ ή ί ό ύ ώ ΐ ΰ", "Ещё раз: йод, ёж, Йошкар-Ола",
           "مرحبًا بِكُمْ في العَرَبِيَّة", "שָׁלוֹם עֲלֵיכֶם", "हिन्दी में नमस्ते, क़िताब",
           "ภาษาไทย สวัสดีครับ", "Tiếng Việt có dấu: người, được, những",
           "Türkçe: İstanbul, ılık, IŞIK, iğne", "Ǆemal ǅ ǆ ǈ ǋ ẞ ß ﬁ ﬀ ﬃ Ⅻ ⅻ ㎏ Å Ω K",
           "ᾈ ᾠ ῼ ǖ Ǖ ṩ ệ ộ ǻ Ǻ", "Ω Å K ﬀ ℌ ℍ ①②③ ⁵ ₂", "한국어 텍스트 입니다 ᄀᄁ ᅡ ᆨ",
           "日本語のテキスト、カタカナとひらがな。漢字も！", "我爱北京天安门。这是一个测试，好吗？",
           "𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽 侮", "Ａｂｃ　ＤＥＦ　１２３ ｶﾀｶﾅ", "\u0130\u0049\u0131 \u03a3\u03c3\u03c2"]
LONG_WORDS = ["a" * 99, "b" * 100, "c" * 101, "x" * 150, "abc" * 40, "é" * 100, "é" * 101,
              "日" * 120, "ab" * 6, "abcdefghijkl", "abcdefghijklm", "İ" * 60, "İ" * 51,
              "pneumonoultramicroscopicsilicovolcanoconiosis", "un" + "aff" * 30 + "able"]


def rand_word(rnd, vocab):
    r = rnd.random()
    if r < 0.45:
        return rnd.choice(ENGLISH)
    if r < 0.55:
        return rnd.choice(ENGLISH).capitalize()
    if r < 0.62:
        return rnd.choice(ENGLISH).upper()
    if r < 0.70:
        return rnd.choice(ACCENTED)
    if r < 0.78:
        return "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(1, 14)))
    if r < 0.82:
        return rnd.choice(vocab).replace("##", "")
    if r < 0.86:
        return str(rnd.randint(0, 100000))
    if r < 0.90:
        return rnd.choice(ENGLISH) + rnd.choice(PIECES).replace("##", "")
    if r < 0.94:
        return "".join(rnd.choice(CJK + KANA) for _ in range(rnd.randint(1, 5)))
    return rnd.choice(ENGLISH) + rnd.choice(PUNCT) + rnd.choice(ENGLISH)


def rand_char(rnd):
    """A code point from anywhere: assigned, unassigned, private use, new."""
    while True:
        r = rnd.random()
        if r < 0.4:
            c = rnd.randint(0x80, 0x2FFF)
        elif r < 0.6:
            c = rnd.randint(0x3000, 0xFFFF)
        elif r < 0.85:
            c = rnd.randint(0x10000, 0x2FFFF)
        else:
            c = rnd.randint(0x30000, 0x10FFFF)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def question(rnd, vocab, n):
    words = [rand_word(rnd, vocab) for _ in range(n)]
    return " ".join(words) + rnd.choice(["?", "?", ".", "!", "", "?!", " ?"])


def mixed(rnd, vocab):
    """A text mixing every category, piece by piece."""
    parts = []
    for _ in range(rnd.randint(1, 30)):
        r = rnd.random()
        if r < 0.35:
            parts.append(rand_word(rnd, vocab))
        elif r < 0.45:
            parts.append(rnd.choice(SPACES))
        elif r < 0.52:
            parts.append(rnd.choice(CONTROL))
        elif r < 0.60:
            parts.append(rnd.choice(PUNCT))
        elif r < 0.68:
            parts.append(rand_word(rnd, vocab) + "".join(rnd.choice(MARKS)
                                                         for _ in range(rnd.randint(1, 4))))
        elif r < 0.74:
            parts.append(rnd.choice(EMOJI) + rnd.choice(["", "\u200d", "\ufe0f", "\U0001f3fd"]) +
                         rnd.choice(EMOJI))
        elif r < 0.78:
            parts.append(rnd.choice(MATH))
        elif r < 0.82:
            parts.append(rnd.choice(SPECIALS + ["[sep]", "[Mask]", "[SEP", "SEP]", "[[SEP]]",
                                                "[CLS][SEP]", "x[MASK]y", " [MASK] ", "[unused1]",
                                                "[unused10]", "[unused100]", "a\u3000[MASK]\tb"]))
        elif r < 0.87:
            parts.append("".join(rand_char(rnd) for _ in range(rnd.randint(1, 4))))
        elif r < 0.92:
            s = rnd.choice(SCRIPTS)
            i = rnd.randint(0, len(s) - 1)
            parts.append(s[i:i + rnd.randint(1, 20)])
        elif r < 0.95:
            parts.append(rnd.choice(LONG_WORDS))
        else:
            parts.append(rnd.choice(CJK + KANA + HANGUL) * rnd.randint(1, 3))
        if rnd.random() < 0.6:
            parts.append(" ")
    return "".join(parts)


def invalid_utf8(rnd):
    """Bytes that are not UTF-8 around valid text."""
    bad = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
           b"\xe2\x82", b"\xf0\x9f\x98", b"\x80", b"\xbf\xbf", b"\xc3", b"\xf8\x88\x80\x80\x80",
           b"\xe2\x28\xa1", b"\xf0\x28\x8c\x28"]
    parts = []
    for _ in range(rnd.randint(1, 8)):
        parts.append(rnd.choice(bad) if rnd.random() < 0.5 else
                     rand_word(rnd, ENGLISH).encode() + rnd.choice([b"", b" ", b"[SEP]"]))
    return b"".join(parts)


def texts(vocab):
    """The texts, as bytes, from the fixed seed."""
    rnd = random.Random(SEED)
    out = ["", " ", "\t\n", "?", "...", "!!!???", "[SEP]", "[MASK]", "[CLS] [SEP]", "[UNK]x",
           "[sep]", "a[SEP]b", "[[MASK]]", "\u200b", "\ufeff", "\u00a0", "\u3000\u3000",
           "İstanbul", "İ", "ǅ", "Σ", "e\u0301", "e\u0301\u0316", "a\u0334\u0301\u0316",
           "q\U0001d16d\U0001d165q", "q\u08d4\U0001d165q", "q\u0c3c\u093cq", "\u11938",
           "\U00011938", "한국어", "👩\u200d👩\u200d👧", "🇫🇷", "x\u00a0y\u3000z",
           "Hello, world! How are you?", "What's the best way to lose weight quickly?",
           "naïve café résumé", "日本語のテキスト", "我爱北京天安门"]
    out += LONG_WORDS + SCRIPTS + PUNCT + CONTROL + MARKS
    out += ["".join(PUNCT), " ".join(SPACES), "".join(CONTROL) + "x", "".join(MARKS)]
    for i in range(N_RANDOM):
        r = i % 20
        if r < 6:
            out.append(question(rnd, vocab, rnd.randint(3, 25)))
        elif r < 17:
            out.append(mixed(rnd, vocab))
        elif r < 18:  # past 128 tokens
            out.append(question(rnd, vocab, rnd.randint(100, 200)))
        elif r < 19:  # past 512
            out.append(question(rnd, vocab, rnd.randint(300, 700)))
        else:
            out.append(" ".join(mixed(rnd, vocab) for _ in range(rnd.randint(5, 40))))
    data = [s.encode("utf-8") for s in out]
    data += [invalid_utf8(rnd) for _ in range(300)]
    return data


# --- running both sides ---------------------------------------------------

def run_dump(dump, args, data, max_len):
    stdin = b"".join(b"%d\n" % len(d) + d for d in data)
    cmd = [dump] + args + (["--max-len", str(max_len)] if max_len else [])
    p = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = p.stdout.decode().splitlines()
    if p.returncode != 0 or (lines and lines[0].startswith("ERROR")):
        raise RuntimeError("%s: exit %d: %s %s" % (" ".join(cmd), p.returncode,
                                                  p.stdout.decode()[:500], p.stderr.decode()))
    if len(lines) != len(data):
        raise RuntimeError("%s: %d lines for %d texts" % (" ".join(cmd), len(lines), len(data)))
    return [[int(x) for x in line.split()] for line in lines]


def run_reference(tk, data, max_len):
    tk.no_padding()
    if max_len:
        tk.enable_truncation(max_len)
    else:
        tk.no_truncation()
    strs = [d.decode("utf-8", "replace") for d in data]
    return [e.ids for e in tk.encode_batch(strs)]


class Report:
    def __init__(self):
        self.compared = 0
        self.mismatches = 0
        self.lines = []

    def compare(self, label, data, want, got):
        for d, w, g in zip(data, want, got):
            self.compared += 1
            if w != g:
                self.mismatches += 1
                if self.mismatches <= 40:
                    self.lines.append("MISMATCH %s\n  text: %r\n  reference: %s\n  semgate:   %s"
                                      % (label, d.decode("utf-8", "replace") if len(d) < 2000
                                         else d[:2000], w, g))


def compare(report, runs, tk, data):
    """semgate's runs [(label, dump command)] against the reference tk, at
    every max_len. The reference cuts only texts longer than the limit: the
    others keep the output it gave without one (and are not run again)."""
    full = run_reference(tk, data, 0)
    for max_len in LENGTHS:
        want = full
        if max_len:
            long_ = [i for i, ids in enumerate(full) if len(ids) > max_len]
            cut = run_reference(tk, [data[i] for i in long_], max_len)
            want = list(full)
            for i, ids in zip(long_, cut):
                want[i] = ids
        for label, cmd in runs:
            got = run_dump(cmd[0], cmd[1:], data, max_len)
            report.compare("%s max_len=%s" % (label, max_len or "none"), data, want, got)


# --- the sweep of every code point ----------------------------------------

# Rust's char::is_whitespace
RUST_WHITESPACE = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | \
    set(map(chr, range(0x2000, 0x200B)))


def every_char():
    return [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def sweep_chars():
    """Every code point of the planes where Unicode has characters (0-3, 14),
    and a sample of the others, which are unassigned or private use
    throughout."""
    for c in every_char():
        if c >> 16 in (0, 1, 2, 3, 14) or c % 97 == 0 or (c & 0xFFFF) in (0, 1, 0xFFFE, 0xFFFF):
            yield c


def sweep(report, dump, tmp, name, norm, model_args):
    """Each code point c as the word "q" c "q", with a vocabulary made of
    every character the reference's normaliser produces (and its ## form):
    a character semgate drops, keeps, splits or maps differently shows as
    another id. Pairs of combining marks check canonical ordering."""
    words = ["q%sq" % chr(c) for c in sweep_chars()]
    marks = [chr(c) for c in range(0x300, 0x370)] + MARKS + [chr(c) for c in range(0x8d4, 0x900)]
    for a in marks:
        for b in ["\u0301", "\u0316", "\U0001d165", "\U0001d16d", "\u08d4", "\u302e", "\u0334"]:
            words.append("q%s%sq" % (a, b))
            words.append("q%s%sq" % (b, a))
    chunk = 40000
    for i in range(0, len(words), chunk):
        part = words[i:i + chunk]
        n = normalizers.BertNormalizer(**norm)
        # (whitespace never is in a word; vocab.txt cannot hold NUL)
        chars = sorted(set(n.normalize_str(" ".join(part))) - RUST_WHITESPACE - {"\0"})
        toks = SPECIALS + chars + ["##" + c for c in chars]
        toks = list(dict.fromkeys(toks))
        vocab_txt = os.path.join(tmp, "sweep_vocab.txt")
        with open(vocab_txt, "w", encoding="utf-8") as f:
            f.write("\n".join(toks) + "\n")
        tk = reference_from_vocab(vocab_txt, norm, model_args, template=False)
        data = [" ".join(part[j:j + 200]).encode() for j in range(0, len(part), 200)]
        want = run_reference(tk, data, 0)
        got = run_dump(dump, ["--vocab", vocab_txt] + vocab_args(norm, model_args), data, 0)
        report.compare("sweep %s" % name, data, want, got)


# --- the Unicode tables of wordpiece.c -------------------------------------

def ranges(cps):
    r = []
    for c in sorted(cps):
        if r and r[-1][1] == c - 1:
            r[-1][1] = c
        else:
            r.append([c, c])
    return r


def per_char(norm, cps, sep="|"):
    out = {}
    cps = [c for c in cps if chr(c) != sep]
    for i in range(0, len(cps), 20000):
        chunk = cps[i:i + 20000]
        parts = norm.normalize_str(sep.join(map(chr, chunk))).split(sep)
        assert len(parts) == len(chunk)
        out.update(zip(chunk, parts))
    return out


def print_tables():
    """The reference's sets, as C range tables for cache/wordpiece.c."""
    cps = every_char()
    clean = per_char(normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=False,
                                                strip_accents=False, lowercase=False), cps)
    strip = per_char(normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=False,
                                                strip_accents=True, lowercase=False), cps)
    nfd = per_char(normalizers.NFD(), cps)
    pt = pre_tokenizers.BertPreTokenizer()
    tables = {
        # clean_text drops these (U+FFFD is dropped by name)
        "control": [c for c in clean if clean[c] == "" and c != 0xFFFD],
        # strip_accents drops these after NFD
        "mark_nonspacing": [c for c in strip if nfd[c] == chr(c) and strip[c] == ""],
        # the pre-tokeniser isolates these (ASCII is handled apart)
        "punctuation": [c for c in cps if c >= 0x80 and
                        len(pt.pre_tokenize_str("a" + chr(c) + "a")) == 3],
    }
    # NFD: code points that the reference neither decomposes nor reorders
    # (assigned after its Unicode 9.0) but libutf8proc does.
    lib = ctypes.CDLL("libutf8proc.so.2")
    lib.utf8proc_get_property.restype = ctypes.POINTER(ctypes.c_int16 * 2)
    lib.utf8proc_decompose_char.restype = ctypes.c_ssize_t
    lib.utf8proc_decompose_char.argtypes = [ctypes.c_int32, ctypes.POINTER(ctypes.c_int32),
                                            ctypes.c_ssize_t, ctypes.c_int,
                                            ctypes.POINTER(ctypes.c_int)]
    buf, bound = (ctypes.c_int32 * 32)(), ctypes.c_int(0)
    decompose = 1 << 3  # UTF8PROC_DECOMPOSE
    ref_nfd = normalizers.NFD()
    frozen = []
    for c in nfd:
        k = lib.utf8proc_get_property(c).contents[1]
        n = lib.utf8proc_decompose_char(c, buf, 32, decompose, ctypes.byref(bound))
        if "".join(chr(buf[i]) for i in range(n)) != nfd[c]:
            assert nfd[c] == chr(c), hex(c)
            frozen.append(c)
        elif k and nfd[c] == chr(c):
            # a mark of class k > 1 goes before U+0334 (class 1); one of
            # class 1 before U+05B0 (class 10)
            other = "\u0334" if k > 1 else "\u05b0"
            first = other if k > 1 else chr(c)
            if ref_nfd.normalize_str("a" + chr(c) + other if k > 1 else "a" + other + chr(c)) \
                    != "a" + first + (chr(c) if k > 1 else other):
                frozen.append(c)
    tables["nfd_frozen"] = frozen
    for name, cps_ in tables.items():
        print("static const range_t %s[] = { /* %d code points */" % (name, len(cps_)))
        line = "\t"
        for lo, hi in ranges(cps_):
            item = "{0x%X, 0x%X}," % (lo, hi)
            if len(line) + len(item) + 1 > 92:
                print(line.rstrip())
                line = "\t"
            line += item + " "
        print(line.rstrip())
        print("};\n")


# --- main ------------------------------------------------------------------

def real_models(models_dir):
    paths = sorted(glob.glob(os.path.join(models_dir, "*", "tokenizer.json"))) if models_dir else []
    for p in os.environ.get("SEMGATE_WORDPIECE_MODELS", "").split(":"):
        if p:
            paths.append(os.path.join(p, "tokenizer.json") if os.path.isdir(p) else p)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", help="the wordpiece_dump driver")
    ap.add_argument("--models-dir", help="directory of model directories")
    ap.add_argument("--tables", action="store_true", help="print wordpiece.c's Unicode tables")
    ap.add_argument("--no-sweep", action="store_true", help="skip the every-code-point sweep")
    ap.add_argument("--no-texts", action="store_true", help="skip the texts on synthetic vocabularies")
    args = ap.parse_args()
    if args.tables:
        print_tables()
        return 0
    if not args.dump or not os.access(args.dump, os.X_OK):
        sys.exit("wordpiece_parity: --dump must name the built wordpiece_dump")

    report = Report()
    vocab = vocab_tokens()
    data = texts(vocab)
    print("wordpiece_parity: %d texts, %d-token synthetic vocabulary" % (len(data), len(vocab)))
    with tempfile.TemporaryDirectory(prefix="wordpiece_parity.") as tmp:
        vocab_txt = os.path.join(tmp, "vocab.txt")
        with open(vocab_txt, "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")
        for i, (name, norm, model_args) in enumerate(SETTINGS):
            tk = reference_from_vocab(vocab_txt, norm, model_args, template=i % 2 == 0)
            tok_json = os.path.join(tmp, "tokenizer_%s.json" % name)
            tk.save(tok_json)
            from_vocab = ("%s vocab.txt" % name,
                          [args.dump, "--vocab", vocab_txt] + vocab_args(norm, model_args))
            from_json = ("%s tokenizer.json" % name, [args.dump, "--json", tok_json])
            if args.no_texts:
                pass
            elif i % 2 == 0:  # both loaders, one tokenizer
                compare(report, [from_vocab, from_json], tk, data)
            else:  # the tokenizer.json gets more added tokens
                more_added_tokens(tok_json)
                compare(report, [from_vocab], tk, data)
                compare(report, [from_json], Tokenizer.from_file(tok_json), data)
            if not args.no_sweep and name in ("uncased", "cased", "lower_nostrip", "raw"):
                sweep(report, args.dump, tmp, name, norm, model_args)
        for path in real_models(args.models_dir):
            try:
                tk = Tokenizer.from_file(path)
            except Exception as e:  # not ours to judge
                print("wordpiece_parity: %s: the reference cannot load it (%s): skipped"
                      % (path, e))
                continue
            kind = json.load(open(path, encoding="utf-8")).get("model", {}).get("type")
            if kind != "WordPiece":
                print("wordpiece_parity: %s: a %s model, not WordPiece: skipped" % (path, kind))
                continue
            compare(report, [(path, [args.dump, "--json", path])], tk, data)
            print("wordpiece_parity: compared %s" % path)
    for line in report.lines:
        print(line)
    print("wordpiece_parity: %d comparisons, %d mismatches" % (report.compared, report.mismatches))
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
