/* semgate --pull-model: fetch a sentence-embedding model from the Hugging Face hub.
 *
 * The files of a model directory (semgate/encoder.h) are fetched one by one
 * from <hub>/<owner>/<name>/resolve/<revision>/<file> with libcurl's easy
 * interface, following the hub's redirect of LFS files to its CDN. Each file
 * is checked against what the hub says about it before it counts: the sha256
 * of an LFS file (X-Linked-Etag), the git blob sha1 of a small one (ETag), and
 * its size (X-Linked-Size, Content-Length), so a truncated or altered download
 * is never taken for a model.
 *
 * Nothing half-written ever appears at DIR. Everything lands in a staging
 * directory beside it,
 *   <DIR>.partial-<pid>/.<file>.part     a file while it downloads
 *   <DIR>.partial-<pid>/<basename>/      the model, once a file is complete
 * the model is loaded with sg_encoder_load() as a whole, and only then renamed
 * to DIR (with --force, swapped with the old DIR in one rename). The model
 * sits in a subdirectory named like DIR because the loader names a model
 * after its directory: its description and id come out as DIR's. Every
 * failure, and SIGINT / SIGTERM, removes the staging directory.
 */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "semgate/common.h"
#include "semgate/encoder.h"
#include "pull_model.h"

#define DEFAULT_HUB "https://huggingface.co"
#define DEFAULT_REVISION "main"

#define MAX_NAME_PART 96   /* the hub's own limit for an owner or a repo name */
#define MAX_REVISION 255
#define MAX_HUB_URL 1024
#define MAX_REDIRECTS 5L   /* the hub needs one (to its CDN), two after a repo rename */
#define CONNECT_TIMEOUT_S 30L
#define STALL_BYTES_PER_S 1024L /* a transfer slower than this ... */
#define STALL_TIME_S 60L        /* ... for this long is stalled, and fails */
#define PROGRESS_EVERY_US 2000000u

/* Caps: the largest BERT-family embedders are ~1.3 GB in F32; a multilingual
 * tokenizer.json is ~17 MB. Anything far beyond is not a model we can run. */
#define WEIGHTS_CAP ((uint64_t)2 << 30)
#define FILE_CAP ((uint64_t)64 << 20)
#define TOTAL_CAP (WEIGHTS_CAP + ((uint64_t)256 << 20))

#ifndef CURL_WRITEFUNC_ERROR /* curl < 7.87 */
#define CURL_WRITEFUNC_ERROR 0
#endif

enum {
	F_REQUIRED = 1,  /* a 404 fails the pull */
	F_TOKENIZER = 2, /* at least one of the F_TOKENIZER files is required */
	F_WEIGHTS = 4,   /* the weights */
};

/* A file of a model repository. */
typedef struct hub_file {
	const char *path; /* in the repository and in the model directory */
	int flags;        /* F_* */
	uint64_t cap;     /* largest size accepted */
} hub_file_t;

/* In this order: a repository that is not there, or not a model, fails on
 * the small files before the big download. */
static const hub_file_t hub_files[] = {
	{"config.json", F_REQUIRED, FILE_CAP},
	{"tokenizer.json", F_TOKENIZER, FILE_CAP},
	{"vocab.txt", F_TOKENIZER, FILE_CAP},
	{"tokenizer_config.json", 0, FILE_CAP},
	{"special_tokens_map.json", 0, FILE_CAP},
	{"modules.json", 0, FILE_CAP},
	{"sentence_bert_config.json", 0, FILE_CAP},
	{"config_sentence_transformers.json", 0, FILE_CAP},
	{"1_Pooling/config.json", 0, FILE_CAP},
	{"model.safetensors", F_REQUIRED | F_WEIGHTS, WEIGHTS_CAP},
};

/* One pull, from the command line to the installed directory. */
typedef struct pull {
	const char *spec;                  /* NAME as given, for messages (borrowed argv) */
	char repo[2 * MAX_NAME_PART + 2];  /* owner/name */
	char revision[MAX_REVISION + 1];   /* as given, or "main" */
	char rev_url[3 * MAX_REVISION + 1]; /* the revision in a URL: '/' as %2F */
	char hub[MAX_HUB_URL];             /* base URL without a trailing '/' */
	char dir[PATH_MAX];                /* the destination */
	char stage[PATH_MAX];              /* <dir>.partial-<pid> */
	char model[PATH_MAX];              /* <stage>/<basename of dir>: the model being built */
	int force;                         /* replace an existing model directory */
	int staged;                        /* we created stage: it goes, whatever happens */
	long stall_s;                      /* seconds below STALL_BYTES_PER_S that fail a transfer */
	CURL *curl;                        /* one handle for every file: keeps the connection */
	char curl_err[CURL_ERROR_SIZE];    /* curl's detail about the last failure */
	uint64_t total;                    /* bytes received so far, every file */
	char err[2048];                    /* why the pull failed */
} pull_t;

/* Why a callback stopped a transfer. */
enum stop {
	STOP_NONE,
	STOP_STATUS,      /* the response is not a 200 */
	STOP_TOO_BIG,     /* the file is over its cap */
	STOP_TOTAL,       /* the model is over TOTAL_CAP */
	STOP_WRITE,       /* the disk refused */
	STOP_INTERRUPTED, /* SIGINT / SIGTERM */
	STOP__LAST
};

/* One file's transfer. */
typedef struct fetch {
	pull_t *p;                /* owner */
	const hub_file_t *f;      /* what is fetched */
	char url[MAX_HUB_URL + 2 * MAX_NAME_PART + 3 * MAX_REVISION + 64]; /* what we asked for */
	int fd;                   /* the .part file, -1 when closed */
	EVP_MD_CTX *sha256;       /* over the body as it arrives */
	uint64_t got;             /* body bytes received */
	long status;              /* of the latest response */
	int from_hub;             /* the latest response is the hub's, not its CDN's */
	char linked_etag[80];     /* the hub's X-Linked-Etag: an LFS file's sha256 */
	char etag[80];            /* the hub's ETag: a git blob sha1 (or a sha256) */
	int64_t linked_size;      /* the hub's X-Linked-Size, -1 if none */
	char hub_error[200];      /* X-Error-Message of the latest response, printable */
	enum stop stop;           /* why a callback stopped the transfer */
	int write_errno;          /* with STOP_WRITE */
	const char *verified;     /* the check that passed: "sha256", "git sha1", or NULL */
	uint64_t t0_us;           /* when the transfer started */
	uint64_t last_report_us;  /* when the last progress line was printed */
} fetch_t;

/* Set by SIGINT / SIGTERM so that the transfer stops and the staging
 * directory is removed rather than left behind. Global because a signal
 * handler has nowhere else to write. */
static volatile sig_atomic_t interrupted;

static const char usage[] =
	"usage: semgate --pull-model NAME[@REVISION] [--to DIR] [--hub URL] [--force]\n"
	"  NAME      a Hugging Face repository, e.g. sentence-transformers/all-MiniLM-L6-v2\n"
	"  REVISION  a branch, tag or commit (default main; refs/pr/N for a pull request)\n"
	"  --to DIR  where the model goes (default models/<name, lower-cased>)\n"
	"  --hub URL the hub (default $HF_ENDPOINT, else " DEFAULT_HUB ")\n"
	"  --force   replace the model already in DIR\n";

static int fail(pull_t *p, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Record why the pull failed; returns rc, so that `return fail(...)` reads well. */
static int fail(pull_t *p, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err, sizeof(p->err), fmt, ap);
	va_end(ap);
	return rc;
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void pathf(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* snprintf for paths under DIR. parse_dir() refused a DIR too long for any
 * of them, so a path that does not fit is a bug here, never a truncated
 * path used. */
static void pathf(char *out, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, len, fmt, ap);
	va_end(ap);
	assert(n >= 0 && (size_t)n < len);
	(void)n;
}

/* Human-readable bytes. */
static const char *human(char *out, size_t len, double bytes)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB"};
	int u = 0;
	while (bytes >= 1024 && u < 3) {
		bytes /= 1024;
		u++;
	}
	snprintf(out, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
	return out;
}

/* --- the command line ------------------------------------------------------ */

static int name_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-';
}

/* One path component of a repo id or revision: it becomes part of a URL and,
 * lower-cased, of the default directory, so no "..", no leading '.' or '-'. */
static int valid_part(const char *s, size_t len, size_t max)
{
	if (len == 0 || len > max || s[0] == '-' || s[0] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (!name_char((unsigned char)s[i]))
			return 0;
		if (s[i] == '.' && i + 1 < len && s[i + 1] == '.')
			return 0;
	}
	return 1;
}

/* NAME[@REVISION] into p->repo, p->revision, p->rev_url. */
static int parse_name(pull_t *p, const char *spec)
{
	const char *at = strchr(spec, '@');
	size_t repo_len = at ? (size_t)(at - spec) : strlen(spec);
	const char *slash = memchr(spec, '/', repo_len);

	if (slash == NULL || !valid_part(spec, (size_t)(slash - spec), MAX_NAME_PART) ||
	    !valid_part(slash + 1, repo_len - (size_t)(slash + 1 - spec), MAX_NAME_PART))
		return fail(p, SG_EINVAL,
		            "invalid model name '%s': want OWNER/NAME[@REVISION], each of letters, "
		            "digits, '.', '_' and '-', not starting with '.' or '-'", spec);
	memcpy(p->repo, spec, repo_len);
	p->repo[repo_len] = '\0';

	const char *rev = at ? at + 1 : DEFAULT_REVISION;
	size_t rev_len = strlen(rev);
	if (rev_len == 0 || rev_len > MAX_REVISION)
		return fail(p, SG_EINVAL, "invalid revision in '%s'", spec);
	/* A revision may have '/' (refs/pr/1): every component must be clean, and
	 * the URL carries it as one segment, '/' encoded, as the hub's client does. */
	size_t o = 0;
	for (const char *c = rev; *c;) {
		const char *end = strchr(c, '/');
		size_t len = end ? (size_t)(end - c) : strlen(c);
		if (!valid_part(c, len, MAX_REVISION) || (end && end[1] == '\0'))
			return fail(p, SG_EINVAL,
			            "invalid revision '%s': want a branch, tag or commit of letters, "
			            "digits, '.', '_', '-' and '/'", rev);
		memcpy(p->rev_url + o, c, len);
		o += len;
		if (end) {
			memcpy(p->rev_url + o, "%2F", 3);
			o += 3;
		}
		c = end ? end + 1 : c + len;
	}
	p->rev_url[o] = '\0';
	snprintf(p->revision, sizeof(p->revision), "%s", rev);
	return 0;
}

/* The hub's base URL: http(s), nothing that would bend the URLs built on it. */
static int parse_hub(pull_t *p, const char *url, const char *from)
{
	size_t len = strlen(url);
	while (len > 0 && url[len - 1] == '/')
		len--;
	size_t scheme = strncasecmp(url, "https://", 8) == 0 ? 8
	                : strncasecmp(url, "http://", 7) == 0 ? 7 : 0;
	if (scheme == 0 || len <= scheme || len >= sizeof(p->hub) || url[scheme] == '/')
		return fail(p, SG_EINVAL, "%s '%s': want an http:// or https:// URL", from, url);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)url[i];
		if (c <= ' ' || c >= 0x7f || c == '?' || c == '#')
			return fail(p, SG_EINVAL, "%s '%s': spaces, controls, '?' and '#' are not "
			            "allowed in the hub's URL", from, url);
	}
	memcpy(p->hub, url, len);
	p->hub[len] = '\0';
	return 0;
}

/* DIR (or the default models/<name>) and the staging paths beside it. */
static int parse_dir(pull_t *p, const char *to)
{
	int n;
	if (to) {
		n = snprintf(p->dir, sizeof(p->dir), "%s", to);
	} else {
		n = snprintf(p->dir, sizeof(p->dir), "models/%s", strchr(p->repo, '/') + 1);
		for (char *c = p->dir; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
	}
	/* Room for the staging suffix, the basename again and the longest file. */
	if (n < 0 || (size_t)n * 2 + 128 >= sizeof(p->dir))
		return fail(p, SG_EINVAL, "--to: path too long");
	while (n > 1 && p->dir[n - 1] == '/')
		p->dir[--n] = '\0';
	const char *base = strrchr(p->dir, '/');
	base = base ? base + 1 : p->dir;
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return fail(p, SG_EINVAL, "--to '%s': name a directory to create", p->dir);
	pathf(p->stage, sizeof(p->stage), "%s.partial-%ld", p->dir, (long)getpid());
	pathf(p->model, sizeof(p->model), "%s/%s", p->stage, base);
	return 0;
}

/* --- files ------------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	if (remove(path) != 0 && errno != ENOENT)
		fprintf(stderr, "semgate: warning: cannot remove %s: %s\n", path, strerror(errno));
	return 0;
}

/* rm -rf that never follows a symbolic link nor leaves the file system. */
static void remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* mkdir -p of every ancestor of path (not path itself). */
static int make_parents(pull_t *p, const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		int r = mkdir(buf, 0755), e = errno;
		*s = '/';
		if (r != 0 && e != EEXIST)
			return fail(p, SG_EIO, "cannot create %.*s: %s", (int)(s - buf), buf, strerror(e));
	}
	return 0;
}

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	close(fd);
	return r;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, data, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		data += w;
		len -= (size_t)w;
	}
	return 0;
}

/* --force replaces a model directory, not whatever DIR happens to name: a
 * slip of the keyboard must not swap away a home directory. */
static int replaceable(pull_t *p)
{
	struct stat sb;
	char cfg[PATH_MAX];

	if (lstat(p->dir, &sb) != 0)
		return fail(p, SG_EIO, "%s: %s", p->dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return fail(p, SG_EEXIST, "%s exists and is not a directory: not replacing it",
		            p->dir);
	pathf(cfg, sizeof(cfg), "%s/config.json", p->dir);
	if (lstat(cfg, &sb) == 0)
		return 0;
	DIR *d = opendir(p->dir);
	struct dirent *e;
	int empty = 1;
	while (d && (e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			empty = 0;
	if (d)
		closedir(d);
	if (d == NULL || !empty)
		return fail(p, SG_EEXIST,
		            "%s exists and does not look like a model directory (no config.json): "
		            "not replacing it", p->dir);
	return 0;
}

/* Before any download: is there a place for the model? */
static int check_destination(pull_t *p)
{
	struct stat sb;
	if (lstat(p->dir, &sb) != 0)
		return errno == ENOENT ? 0 : fail(p, SG_EIO, "%s: %s", p->dir, strerror(errno));
	if (!p->force)
		return fail(p, SG_EEXIST, "%s exists (pass --force to replace it)", p->dir);
	return replaceable(p);
}

/* Rename the validated model to DIR. Without --force an existing DIR is
 * never touched, even one that appeared during the download; with it, the
 * old and new directories swap in one rename, so DIR is never missing, and the
 * old one ends up in the staging directory, which goes next. */
static int install(pull_t *p)
{
	char old[PATH_MAX];
	struct stat sb;

	if (renameat2(AT_FDCWD, p->model, AT_FDCWD, p->dir, RENAME_NOREPLACE) == 0)
		return 0;
	int e = errno;
	if (e == EINVAL || e == ENOSYS) { /* a file system without RENAME_NOREPLACE */
		if (lstat(p->dir, &sb) != 0 && errno == ENOENT) {
			if (rename(p->model, p->dir) == 0)
				return 0;
			e = errno;
		} else {
			e = EEXIST;
		}
	}
	if (e != EEXIST && e != ENOTEMPTY)
		return fail(p, SG_EIO, "cannot rename %s to %s: %s", p->model, p->dir, strerror(e));
	if (!p->force)
		return fail(p, SG_EEXIST, "%s exists (pass --force to replace it)", p->dir);
	int rc = replaceable(p);
	if (rc)
		return rc;
	if (renameat2(AT_FDCWD, p->model, AT_FDCWD, p->dir, RENAME_EXCHANGE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return fail(p, SG_EIO, "cannot swap %s and %s: %s", p->model, p->dir, strerror(errno));
	/* No RENAME_EXCHANGE: the old one aside first, then the new one in; DIR
	 * is missing for a moment, and the old one comes back if the second fails. */
	pathf(old, sizeof(old), "%s/.old", p->stage);
	if (rename(p->dir, old) != 0)
		return fail(p, SG_EIO, "cannot move %s aside: %s", p->dir, strerror(errno));
	if (rename(p->model, p->dir) != 0) {
		e = errno;
		if (rename(old, p->dir) != 0) {
			fprintf(stderr, "semgate: cannot put %s back (%s): the old model is left in %s\n",
			        p->dir, strerror(errno), old);
			p->staged = 0; /* it holds the only copy of the old model now */
		}
		return fail(p, SG_EIO, "cannot rename %s to %s: %s", p->model, p->dir, strerror(e));
	}
	return 0;
}

/* --- one file --------------------------------------------------------------- */

/* If line is the header `name: value`, point at the trimmed value. */
static int header_is(const char *line, size_t len, const char *name, const char **v,
                     size_t *vlen)
{
	size_t n = strlen(name);
	if (len <= n || line[n] != ':' || strncasecmp(line, name, n) != 0)
		return 0;
	const char *s = line + n + 1, *e = line + len;
	while (s < e && (*s == ' ' || *s == '\t'))
		s++;
	while (e > s && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*v = s;
	*vlen = (size_t)(e - s);
	return 1;
}

/* An ETag without its weak prefix and quotes, as the hub's client reads it. */
static void copy_etag(char *out, size_t outlen, const char *v, size_t len)
{
	if (len >= 2 && v[0] == 'W' && v[1] == '/') {
		v += 2;
		len -= 2;
	}
	if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
		v++;
		len -= 2;
	}
	if (len < outlen) {
		memcpy(out, v, len);
		out[len] = '\0';
	}
}

/* A server's text in our messages: printable ASCII only, and short. */
static void copy_printable(char *out, size_t outlen, const char *v, size_t len)
{
	size_t i;
	for (i = 0; i < len && i + 1 < outlen; i++)
		out[i] = v[i] >= ' ' && v[i] < 0x7f ? v[i] : '?';
	out[i] = '\0';
}

static int64_t parse_size(const char *v, size_t len)
{
	int64_t n = 0;
	if (len == 0 || len > 18)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		n = n * 10 + (v[i] - '0');
	}
	return n;
}

/* Headers of every response on the way, redirects included. The hub's
 * answers say what the file is; its CDN's answer delivers it, and the CDN's
 * ETag is its own business (an MD5, a multipart tag...), so only headers from
 * the hub's origin count. That includes the hub's redirect to itself when a
 * repository was renamed, as its own client does. */
static size_t on_header(char *line, size_t size, size_t n, void *ud)
{
	fetch_t *fx = ud;
	size_t len = size * n, hub_len = strlen(fx->p->hub);
	const char *v;
	size_t vlen;

	if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
		const char *sp = memchr(line, ' ', len);
		char *url = NULL;
		fx->status = sp ? strtol(sp + 1, NULL, 10) : 0;
		fx->hub_error[0] = '\0';
		curl_easy_getinfo(fx->p->curl, CURLINFO_EFFECTIVE_URL, &url);
		fx->from_hub = url && strncasecmp(url, fx->p->hub, hub_len) == 0 && url[hub_len] == '/';
	} else if (!fx->from_hub) {
		return len;
	} else if (header_is(line, len, "X-Linked-Etag", &v, &vlen)) {
		if (fx->linked_etag[0] == '\0')
			copy_etag(fx->linked_etag, sizeof(fx->linked_etag), v, vlen);
	} else if (header_is(line, len, "ETag", &v, &vlen)) {
		if (fx->etag[0] == '\0')
			copy_etag(fx->etag, sizeof(fx->etag), v, vlen);
	} else if (header_is(line, len, "X-Linked-Size", &v, &vlen)) {
		if (fx->linked_size < 0)
			fx->linked_size = parse_size(v, vlen);
		/* Refuse an oversized file before following the redirect to it. */
		if (fx->linked_size > 0 && (uint64_t)fx->linked_size > fx->f->cap) {
			fx->stop = STOP_TOO_BIG;
			return CURL_WRITEFUNC_ERROR;
		}
	} else if (header_is(line, len, "X-Error-Message", &v, &vlen)) {
		copy_printable(fx->hub_error, sizeof(fx->hub_error), v, vlen);
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
	fetch_t *fx = ud;
	size_t len = size * n;

	/* An error page is not the file: stop at once, the status says it all. */
	if (fx->status != 200) {
		fx->stop = STOP_STATUS;
		return CURL_WRITEFUNC_ERROR;
	}
	if (len > fx->f->cap - fx->got || len > TOTAL_CAP - fx->p->total) {
		fx->stop = len > fx->f->cap - fx->got ? STOP_TOO_BIG : STOP_TOTAL;
		return CURL_WRITEFUNC_ERROR;
	}
	if (write_all(fx->fd, data, len) != 0) {
		fx->stop = STOP_WRITE;
		fx->write_errno = errno;
		return CURL_WRITEFUNC_ERROR;
	}
	if (EVP_DigestUpdate(fx->sha256, data, len) != 1) {
		fx->stop = STOP_WRITE;
		fx->write_errno = ENOMEM;
		return CURL_WRITEFUNC_ERROR;
	}
	fx->got += len;
	fx->p->total += len;
	return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
	fetch_t *fx = ud;
	char a[32], b[32], c[32];
	(void)ultotal, (void)ulnow;

	if (interrupted) {
		fx->stop = STOP_INTERRUPTED;
		return 1;
	}
	uint64_t now = sg_now_us();
	if (now - fx->last_report_us < PROGRESS_EVERY_US || dlnow <= 0)
		return 0;
	fx->last_report_us = now;
	double rate = (double)dlnow * 1e6 / (double)(now - fx->t0_us);
	if (dltotal > 0)
		fprintf(stderr, "  %s: %s of %s (%d%%), %s/s\n", fx->f->path,
		        human(a, sizeof(a), (double)dlnow), human(b, sizeof(b), (double)dltotal),
		        (int)(dlnow * 100 / dltotal), human(c, sizeof(c), rate));
	else
		fprintf(stderr, "  %s: %s, %s/s\n", fx->f->path, human(a, sizeof(a), (double)dlnow),
		        human(c, sizeof(c), rate));
	return 0;
}

static int is_hex(const char *s, size_t len)
{
	if (strlen(s) != len)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
		      (s[i] >= 'A' && s[i] <= 'F')))
			return 0;
	return 1;
}

static void to_hex(char *out, const unsigned char *md, unsigned len)
{
	for (unsigned i = 0; i < len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* git's id of a file: sha1 of "blob <size>\0" and the content. The size
 * comes first, so the content is hashed once it is all on disk. */
static int git_blob_sha1(int fd, uint64_t size, char hex[41])
{
	unsigned char md[EVP_MAX_MD_SIZE], buf[65536];
	unsigned mdlen = 0;
	char head[32];
	int rc = SG_ENOMEM;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1)
		goto out;
	int n = snprintf(head, sizeof(head), "blob %" PRIu64, size);
	if (EVP_DigestUpdate(ctx, head, (size_t)n + 1) != 1)
		goto out;
	rc = SG_EIO;
	for (uint64_t off = 0; off < size;) {
		ssize_t r = pread(fd, buf, sizeof(buf), (off_t)off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || EVP_DigestUpdate(ctx, buf, (size_t)r) != 1)
			goto out;
		off += (uint64_t)r;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 20)
		goto out;
	to_hex(hex, md, mdlen);
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* After the transfer: did a whole, 200, file arrive? */
static int check_transfer(pull_t *p, fetch_t *fx, CURLcode cc, const char *part)
{
	char a[32];

	if (fx->stop == STOP_INTERRUPTED || interrupted)
		return fail(p, SG_ECANCELED, "interrupted");
	if (fx->stop == STOP_WRITE)
		return fail(p, SG_EIO, "writing %s: %s", part, strerror(fx->write_errno));
	if (fx->stop == STOP_TOO_BIG || cc == CURLE_FILESIZE_EXCEEDED)
		return fail(p, SG_ETOOBIG, "GET %s: larger than %s, the most semgate accepts for %s",
		            fx->url, human(a, sizeof(a), (double)fx->f->cap), fx->f->path);
	if (fx->stop == STOP_TOTAL)
		return fail(p, SG_ETOOBIG, "GET %s: the model's files add up to more than %s, the "
		            "most semgate accepts", fx->url, human(a, sizeof(a), (double)TOTAL_CAP));
	if (fx->stop == STOP_STATUS || (cc == CURLE_OK && fx->status != 200)) {
		if (fx->status == 404 && !(fx->f->flags & F_REQUIRED))
			return SG_ENOTFOUND;
		const char *hint = "";
		if (fx->status == 401 || fx->status == 403)
			hint = " (no such repository, or it is private or gated)";
		else if (fx->status == 404 && (fx->f->flags & F_WEIGHTS))
			hint = " (semgate reads safetensors weights only; a pull request of the "
			       "repository may have them: NAME@refs/pr/N)";
		else if (fx->status == 404)
			hint = " (not in the repository at this revision)";
		return fail(p, SG_EUPSTREAM, "GET %s: HTTP status %ld%s%s%s", fx->url, fx->status,
		            fx->hub_error[0] ? ": " : "", fx->hub_error, hint);
	}
	if (cc != CURLE_OK)
		return fail(p, cc == CURLE_OPERATION_TIMEDOUT ? SG_ETIMEDOUT : SG_EUPSTREAM,
		            "GET %s: %s%s%s (HTTP status %ld, %" PRIu64 " bytes received)", fx->url,
		            curl_easy_strerror(cc), p->curl_err[0] ? ": " : "", p->curl_err,
		            fx->status, fx->got);
	return 0;
}

/* Does the file on disk match what the hub says it is? */
static int verify(pull_t *p, fetch_t *fx)
{
	curl_off_t clen = -1;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];

	/* curl reports a connection closed early too; checked again here because
	 * a size is the one check a file without a hash has. */
	curl_easy_getinfo(p->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &clen);
	if (clen >= 0 && (uint64_t)clen != fx->got)
		return fail(p, SG_ECORRUPT, "GET %s: truncated: %" PRIu64 " of %" PRId64 " bytes",
		            fx->url, fx->got, (int64_t)clen);
	if (fx->linked_size >= 0 && (uint64_t)fx->linked_size != fx->got)
		return fail(p, SG_ECORRUPT,
		            "GET %s: %" PRIu64 " bytes received, the hub says the file has %" PRId64,
		            fx->url, fx->got, fx->linked_size);

	const char *want = fx->linked_etag[0] ? fx->linked_etag : fx->etag;
	if (is_hex(want, 64)) {
		if (EVP_DigestFinal_ex(fx->sha256, md, &mdlen) != 1 || mdlen != 32)
			return fail(p, SG_ENOMEM, "sha256 of %s: OpenSSL failed", fx->f->path);
		to_hex(hex, md, mdlen);
		if (strcasecmp(hex, want) != 0)
			return fail(p, SG_ECORRUPT, "GET %s: sha256 %s, but the hub says %s", fx->url,
			            hex, want);
		fx->verified = "sha256";
	} else if (is_hex(want, 40)) {
		int rc = git_blob_sha1(fx->fd, fx->got, hex);
		if (rc)
			return fail(p, rc, "git sha1 of %s: %s", fx->f->path, sg_strerror(rc));
		if (strcasecmp(hex, want) != 0)
			return fail(p, SG_ECORRUPT, "GET %s: git blob sha1 %s, but the hub says %s",
			            fx->url, hex, want);
		fx->verified = "git sha1";
	}
	return 0;
}

/* Fetch one file into the model directory. Returns 0; SG_ENOTFOUND for an
 * optional file the repository lacks (nothing written); or an error, with
 * p->err set. */
static int fetch(pull_t *p, const hub_file_t *f)
{
	fetch_t fx = {.p = p, .f = f, .fd = -1, .linked_size = -1};
	char part[PATH_MAX], dst[PATH_MAX], flat[64], a[32], b[32];
	int rc;

	snprintf(fx.url, sizeof(fx.url), "%s/%s/resolve/%s/%s", p->hub, p->repo, p->rev_url,
	         f->path);
	snprintf(flat, sizeof(flat), "%s", f->path);
	for (char *c = flat; *c; c++)
		if (*c == '/')
			*c = '_';
	pathf(part, sizeof(part), "%s/.%s.part", p->stage, flat);
	pathf(dst, sizeof(dst), "%s/%s", p->model, f->path);

	fx.fd = open(part, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fx.fd < 0)
		return fail(p, SG_EIO, "cannot create %s: %s", part, strerror(errno));
	fx.sha256 = EVP_MD_CTX_new();
	if (fx.sha256 == NULL || EVP_DigestInit_ex(fx.sha256, EVP_sha256(), NULL) != 1) {
		rc = fail(p, SG_ENOMEM, "OpenSSL: cannot set up sha256");
		goto out;
	}

	curl_easy_setopt(p->curl, CURLOPT_URL, fx.url);
	curl_easy_setopt(p->curl, CURLOPT_WRITEDATA, &fx);
	curl_easy_setopt(p->curl, CURLOPT_HEADERDATA, &fx);
	curl_easy_setopt(p->curl, CURLOPT_XFERINFODATA, &fx);
	curl_easy_setopt(p->curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->cap);
	p->curl_err[0] = '\0';
	fx.t0_us = fx.last_report_us = sg_now_us();
	CURLcode cc = curl_easy_perform(p->curl);
	double secs = (double)(sg_now_us() - fx.t0_us) / 1e6;

	if ((rc = check_transfer(p, &fx, cc, part)) || (rc = verify(p, &fx)))
		goto out;
	int synced = fsync(fx.fd) == 0, e = errno;
	if (close(fx.fd) != 0 && synced) {
		synced = 0;
		e = errno;
	}
	fx.fd = -1;
	if (!synced) {
		rc = fail(p, SG_EIO, "writing %s: %s", part, strerror(e));
		goto out;
	}
	if (strchr(f->path, '/')) { /* 1_Pooling/ */
		char sub[PATH_MAX];
		pathf(sub, sizeof(sub), "%.*s", (int)(strrchr(dst, '/') - dst), dst);
		if (mkdir(sub, 0755) != 0 && errno != EEXIST) {
			rc = fail(p, SG_EIO, "cannot create %s: %s", sub, strerror(errno));
			goto out;
		}
	}
	if (rename(part, dst) != 0) {
		rc = fail(p, SG_EIO, "cannot rename %s to %s: %s", part, dst, strerror(errno));
		goto out;
	}
	fprintf(stderr, "  %s: %s in %.1f s (%s/s), %s%s\n", f->path,
	        human(a, sizeof(a), (double)fx.got), secs,
	        human(b, sizeof(b), secs > 0 ? (double)fx.got / secs : 0),
	        fx.verified ? fx.verified : "not verified (the hub sent no hash)",
	        fx.verified ? " ok" : "");
out:
	if (fx.fd >= 0)
		close(fx.fd);
	if (rc)
		unlink(part); /* an optional file skipped must leave nothing behind */
	EVP_MD_CTX_free(fx.sha256);
	return rc;
}

/* --- the pull ----------------------------------------------------------------- */

static int setup_curl(pull_t *p)
{
	/* Redirects stay on http(s); from an https hub, on https. */
	const char *redir = strncasecmp(p->hub, "https:", 6) == 0 ? "https" : "http,https";
	const char *stall = getenv("SEMGATE_TEST_PULL_STALL_S");

	p->stall_s = STALL_TIME_S;
	/* A test hook, not a setting: the stall test cannot wait a minute. */
	if (stall && atol(stall) > 0) {
		p->stall_s = atol(stall);
		fprintf(stderr, "semgate: SEMGATE_TEST_PULL_STALL_S: a transfer stalls after %ld s "
		        "(a test hook)\n", p->stall_s);
	}
	if ((p->curl = curl_easy_init()) == NULL)
		return fail(p, SG_ENOMEM, "cannot set up libcurl");
	CURL *c = p->curl;
	if (curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, redir) != CURLE_OK)
		return fail(p, SG_EINVAL, "this libcurl cannot restrict protocols (needs 7.85)");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, MAX_REDIRECTS);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, STALL_BYTES_PER_S);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, p->stall_s);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "semgate/" SEMGATE_VERSION);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, p->curl_err);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	return 0;
}

/* The loader's messages start with a path under the staging directory,
 * which is about to go: keep only the file's name in the model. */
static const char *strip_stage(const char *msg, const char *model)
{
	size_t n = strlen(model);
	if (strncmp(msg, model, n) != 0)
		return msg;
	if (msg[n] == '/')
		return msg + n + 1;
	if (msg[n] == ':' && msg[n + 1] == ' ')
		return msg + n + 2;
	return msg;
}

static void parent_of(char *out, size_t len, const char *path)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL)
		snprintf(out, len, ".");
	else if (slash == path)
		snprintf(out, len, "/");
	else
		snprintf(out, len, "%.*s", (int)(slash - path), path);
}

static int validate(pull_t *p, char *describe, size_t len)
{
	/* The download was verified against the hub's hashes: skip hashing the
	 * weights once more. */
	sg_encoder_opts_t mo = {.skip_hash = 1};
	sg_encoder_t *m = NULL;
	char err[1024] = "";

	int rc = sg_encoder_load(&m, p->model, &mo, err, sizeof(err));
	if (rc)
		return fail(p, rc, "not a model semgate can load: %s",
		            err[0] ? strip_stage(err, p->model) : sg_strerror(rc));
	snprintf(describe, len, "%s", sg_encoder_describe(m));
	sg_encoder_free(m);
	return 0;
}

static int pull(pull_t *p)
{
	struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
	char describe[512], sub[PATH_MAX], parent[PATH_MAX], a[32];
	int rc, have_tokenizer = 0;
	uint64_t t0 = sg_now_us();

	interrupted = 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	if ((rc = check_destination(p)) || (rc = make_parents(p, p->dir)))
		goto out;
	if (mkdir(p->stage, 0755) != 0) {
		rc = fail(p, SG_EIO, "cannot create %s: %s", p->stage, strerror(errno));
		goto out;
	}
	p->staged = 1;
	if (mkdir(p->model, 0755) != 0) {
		rc = fail(p, SG_EIO, "cannot create %s: %s", p->model, strerror(errno));
		goto out;
	}
	if ((rc = setup_curl(p)))
		goto out;

	fprintf(stderr, "pulling %s (revision %s) from %s into %s\n", p->repo, p->revision, p->hub,
	        p->dir);
	for (size_t i = 0; i < SG_ARRAY_SIZE(hub_files); i++) {
		const hub_file_t *f = &hub_files[i];
		if (interrupted) {
			rc = fail(p, SG_ECANCELED, "interrupted");
			goto out;
		}
		if ((f->flags & F_WEIGHTS) && !have_tokenizer) {
			rc = fail(p, SG_ENOTFOUND, "%s has neither tokenizer.json nor vocab.txt at "
			          "revision %s", p->repo, p->revision);
			goto out;
		}
		rc = fetch(p, f);
		if (rc == SG_ENOTFOUND) {
			fprintf(stderr, "  %s: not in the repository, skipped\n", f->path);
			continue;
		}
		if (rc)
			goto out;
		if (f->flags & F_TOKENIZER)
			have_tokenizer = 1;
	}
	pathf(sub, sizeof(sub), "%s/1_Pooling", p->model);
	if (fsync_path(p->model) != 0 || (access(sub, F_OK) == 0 && fsync_path(sub) != 0)) {
		rc = fail(p, SG_EIO, "fsync %s: %s", p->model, strerror(errno));
		goto out;
	}
	if ((rc = validate(p, describe, sizeof(describe))))
		goto out;
	if (interrupted) { /* the last moment to change one's mind */
		rc = fail(p, SG_ECANCELED, "interrupted");
		goto out;
	}
	if ((rc = install(p)))
		goto out;
	/* Make the rename itself durable; the model is in place whatever this says. */
	parent_of(parent, sizeof(parent), p->dir);
	if (fsync_path(parent) != 0)
		fprintf(stderr, "semgate: warning: fsync %s: %s\n", parent, strerror(errno));
	fprintf(stderr, "pulled %s in %.1f s\n", human(a, sizeof(a), (double)p->total),
	        (double)(sg_now_us() - t0) / 1e6);
	printf("model %s ready in %s (%s)\n", p->spec, p->dir, describe);
	fflush(stdout);
out:
	/* Failed: the partial download. Done: empty, or the model DIR had before. */
	if (p->staged)
		remove_tree(p->stage);
	curl_easy_cleanup(p->curl);
	p->curl = NULL;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc;
}

int sg_pull_model_main(int argc, char **argv)
{
	const char *spec = NULL, *to = NULL, *hub = NULL, *hub_from = "--hub";
	int force = 0, code = 2;
	pull_t *p = NULL;

	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (strcmp(a, "--to") == 0 && i + 1 < argc) {
			to = argv[++i];
		} else if (strcmp(a, "--hub") == 0 && i + 1 < argc) {
			hub = argv[++i];
		} else if (strcmp(a, "--force") == 0) {
			force = 1;
		} else if (a[0] != '-' && spec == NULL) {
			spec = a;
		} else {
			fprintf(stderr, "semgate: --pull-model: unknown or incomplete option '%s'\n%s", a,
			        usage);
			return 2;
		}
	}
	if (spec == NULL) {
		fprintf(stderr, "semgate: --pull-model: which model?\n%s", usage);
		return 2;
	}
	if (hub == NULL) {
		hub = getenv("HF_ENDPOINT");
		hub_from = "HF_ENDPOINT";
		if (hub == NULL || *hub == '\0') {
			hub = DEFAULT_HUB;
			hub_from = "hub";
		}
	}
	if ((p = calloc(1, sizeof(*p))) == NULL) { /* four paths: too big for the stack */
		fprintf(stderr, "semgate: out of memory\n");
		return 1;
	}
	p->spec = spec;
	p->force = force;
	if (parse_name(p, spec) || parse_hub(p, hub, hub_from) || parse_dir(p, to)) {
		fprintf(stderr, "semgate: --pull-model: %s\n%s", p->err, usage);
		goto out;
	}
	code = 1;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "semgate: cannot initialise libcurl\n");
		goto out;
	}
	if (pull(p) == 0)
		code = 0;
	else
		fprintf(stderr, "semgate: pull-model %s: %s\n", spec, p->err);
	curl_global_cleanup();
out:
	free(p);
	return code;
}
