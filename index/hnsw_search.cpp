// Single-query search over a FAISS HNSW graph, for sg_index_search().
//
// FAISS builds, stores, serialises and owns the graph (IndexHNSWFlat under
// the IndexIDMap2 that index.c creates through the C API); this file only
// walks it. FAISS 1.7.3's own HNSW::search, as Debian builds it, costs about
// twice what the walk needs on a cache-sized graph:
//   - it allocates and clears a visited table of ntotal bytes per query;
//   - its candidate queue scans all efSearch slots on every pop;
//   - it evaluates one neighbour at a time, so each distance waits for its
//     512 bytes of vector to arrive from memory (the graph of a large cache
//     does not fit in the CPU caches: a search is a chain of cache misses).
// Here a query visits the same graph with the same greedy descent and the
// same breadth (efSearch) as FAISS (best-first search with a result set of
// efSearch, as in the HNSW paper), but the visited table is reused per thread
// (an epoch byte per vector, cleared once every 255 queries), the queues are
// binary heaps, and the unvisited neighbours of a node are gathered first and
// scored four at a time while the vectors of the next four are prefetched.
// Results match FAISS's search on the same graph up to ties and the odd
// near-neighbour found by one walk and not the other (tests/unit/test_index.c
// compares the two; bench/RESULTS.md has recall and speed).
//
// Anything but an IndexIDMap2 over an inner-product IndexHNSW with IndexFlat
// storage is declined (-1), and the caller uses FAISS's own search.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/utils/distances.h>

#include "hnsw_walk.h"
namespace {

using storage_idx_t = faiss::HNSW::storage_idx_t;

inline void prefetch_bytes(const void *v, size_t bytes)
{
	const char *p = static_cast<const char *>(v);
	for (size_t off = 0; off < bytes; off += 64)
		__builtin_prefetch(p + off, 0, 3);
}

// Scores stored vectors (FAISS's storage) against the query.
struct scorer {
	const float *base; // FAISS's storage, d floats a vector
	size_t d;
	const float *q;

	const void *addr(storage_idx_t i) const { return base + (size_t)i * d; }
	size_t bytes() const { return d * sizeof(float); }
	float one(storage_idx_t i) const
	{
		return faiss::fvec_inner_product(q, base + (size_t)i * d, d);
	}
	void four(const storage_idx_t *ids, float *out) const
	{
		const float *xs[4] = {base + (size_t)ids[0] * d, base + (size_t)ids[1] * d,
				      base + (size_t)ids[2] * d, base + (size_t)ids[3] * d};
		sg__ip4(q, xs, d, out);
	}
};

// ---- per-thread scratch: visited marks and the two queues ----------------

struct node {
	float s;           // similarity to the query, higher is closer
	storage_idx_t id;  // position in FAISS's storage
};

struct closer_first { // max-heap on similarity: the candidate to expand next
	bool operator()(const node &a, const node &b) const { return a.s < b.s; }
};
struct farther_first { // min-heap on similarity: the worst result on top
	bool operator()(const node &a, const node &b) const { return a.s > b.s; }
};

struct scratch {
	std::vector<uint8_t> mark;  // visited when mark[i] == epoch
	uint8_t epoch = 0;           // this query's mark
	std::vector<node> cand;      // candidates to expand
	std::vector<node> res;       // the best ef seen so far

	void begin(size_t ntotal)
	{
		if (mark.size() < ntotal)
			mark.resize(ntotal, 0);
		if (++epoch == 0) { // wrapped: old marks could collide, clear them
			std::fill(mark.begin(), mark.end(), 0);
			epoch = 1;
		}
		cand.clear();
		res.clear();
	}
	bool visit(storage_idx_t i)
	{
		if (mark[(size_t)i] == epoch)
			return false;
		mark[(size_t)i] = epoch;
		return true;
	}
};

thread_local scratch tls;

// The walk itself: ids are FAISS storage positions, sims inner products.
// Leaves the best ef (or fewer) in tls.res, in heap order.
void walk(const faiss::HNSW &g, const scorer &sc, size_t ntotal, int k, int ef)
{
	const size_t vbytes = sc.bytes();

	storage_idx_t cur = g.entry_point;
	float cur_s = sc.one(cur);

	// upper levels: greedy, one step to the closest neighbour at a time
	for (int level = g.max_level; level >= 1; level--) {
		for (bool moved = true; moved;) {
			moved = false;
			size_t b, e;
			g.neighbor_range(cur, level, &b, &e);
			for (size_t j = b; j < e; j++) {
				storage_idx_t v = g.neighbors[j];
				if (v < 0)
					break;
				if ((size_t)v >= ntotal)
					continue;
				float s = sc.one(v);
				if (s > cur_s) {
					cur_s = s;
					cur = v;
					moved = true;
				}
			}
		}
	}

	// level 0: best-first search keeping the best ef
	const size_t *offsets = g.offsets.data();
	const storage_idx_t *links = g.neighbors.data();
	const size_t deg0 = (size_t)g.cum_nneighbor_per_level[1]; // links a node has at level 0
	scratch &t = tls;
	t.begin(ntotal);
	const size_t width = (size_t)std::max(ef, k);
	t.visit(cur);
	t.cand.push_back({cur_s, cur});
	t.res.push_back({cur_s, cur});
	storage_idx_t todo[256 + 3]; // room to pad a last group of four
	float s4[4];

	while (!t.cand.empty()) {
		node c = t.cand.front();
		if (t.res.size() >= width && c.s < t.res.front().s)
			break; // nothing left that can improve the results
		std::pop_heap(t.cand.begin(), t.cand.end(), closer_first());
		t.cand.pop_back();
		// the likely next node's links, while this one is expanded
		if (!t.cand.empty())
			prefetch_bytes(links + offsets[t.cand.front().id],
				       deg0 * sizeof(storage_idx_t));

		// c's links at level 0 start at its offset (cum_nneighbor_per_level[0] is 0)
		const storage_idx_t *nb = links + offsets[c.id];
		size_t nb_n = 0, n = 0;
		while (nb_n < deg0 && nb_n < 256 && nb[nb_n] >= 0) {
			if ((size_t)nb[nb_n] < ntotal)
				__builtin_prefetch(&t.mark[(size_t)nb[nb_n]], 1, 3);
			nb_n++;
		}
		for (size_t j = 0; j < nb_n; j++) {
			storage_idx_t v = nb[j];
			if ((size_t)v < ntotal && t.visit(v))
				todo[n++] = v;
		}
		for (size_t j = 0; j < n && j < 8; j++)
			prefetch_bytes(sc.addr(todo[j]), vbytes);
		for (size_t j = n; j % 4; j++)
			todo[j] = todo[0]; // scored, never used
		for (size_t j = 0; j < n; j += 4) {
			size_t m = std::min<size_t>(4, n - j);
			for (size_t p = j + 8; p < j + 12 && p < n; p++)
				prefetch_bytes(sc.addr(todo[p]), vbytes);
			sc.four(todo + j, s4);
			for (size_t p = 0; p < m; p++) {
				node nn = {s4[p], todo[j + p]};
				if (t.res.size() < width || nn.s > t.res.front().s) {
					// where its links are, for when it is expanded
					__builtin_prefetch(offsets + nn.id, 0, 3);
					t.cand.push_back(nn);
					std::push_heap(t.cand.begin(), t.cand.end(), closer_first());
					t.res.push_back(nn);
					std::push_heap(t.res.begin(), t.res.end(), farther_first());
					if (t.res.size() > width) {
						std::pop_heap(t.res.begin(), t.res.end(), farther_first());
						t.res.pop_back();
					}
				}
			}
		}
	}

}

// Best first; equal similarities by position, so the order is stable.
int take_best(std::vector<node> &res, int k, storage_idx_t *ids, float *sims)
{
	std::sort(res.begin(), res.end(), [](const node &a, const node &b) {
		return a.s > b.s || (a.s == b.s && a.id < b.id);
	});
	int out = (int)std::min(res.size(), (size_t)k);
	for (int i = 0; i < out; i++) {
		ids[i] = res[(size_t)i].id;
		sims[i] = res[(size_t)i].s;
	}
	return out;
}

// The FAISS pieces a walk needs, or nullptr members when fx is not a graph
// this file handles.
struct graph {
	const faiss::IndexIDMap2 *map = nullptr;
	const faiss::IndexHNSW *h = nullptr;
	const faiss::IndexFlat *flat = nullptr;

	explicit graph(const void *fx)
	{
		auto *m = dynamic_cast<const faiss::IndexIDMap2 *>(static_cast<const faiss::Index *>(fx));
		if (m == nullptr)
			return;
		auto *hh = dynamic_cast<const faiss::IndexHNSW *>(m->index);
		if (hh == nullptr || hh->metric_type != faiss::METRIC_INNER_PRODUCT)
			return;
		auto *f = dynamic_cast<const faiss::IndexFlat *>(hh->storage);
		const faiss::HNSW &g = hh->hnsw;
		size_t n = (size_t)hh->ntotal;
		if (f == nullptr || f->code_size != (size_t)hh->d * sizeof(float) ||
		    m->id_map.size() != n || (size_t)f->ntotal != n || g.levels.size() != n ||
		    g.offsets.size() != n + 1 || g.neighbors.size() < g.offsets.back() ||
		    g.cum_nneighbor_per_level.size() < 2 || g.entry_point >= (storage_idx_t)n ||
		    g.cum_nneighbor_per_level[1] > 256) // the walk gathers up to 256 links a node
			return;
		map = m;
		h = hh;
		flat = f;
	}
	bool ok() const { return h != nullptr; }
	const float *floats() const { return reinterpret_cast<const float *>(flat->codes.data()); }
};

} // namespace

extern "C" int sg__hnsw_search(const void *fx, const float *query, int k, int ef,
			       int64_t *labels, float *sims)
{
	try {
		graph gr(fx);
		if (!gr.ok() || k < 1 || k > 1024)
			return -1;
		const size_t d = (size_t)gr.h->d, n = (size_t)gr.h->ntotal;
		const faiss::HNSW &g = gr.h->hnsw;
		storage_idx_t pos[1024];
		if (g.entry_point < 0 || n == 0)
			return 0;
		walk(g, scorer{gr.floats(), d, query}, n, k, ef);
		int got = take_best(tls.res, k, pos, sims);
		for (int i = 0; i < got; i++)
			labels[i] = gr.map->id_map[(size_t)pos[i]];
		return got;
	} catch (...) {
		return -1;
	}
}

extern "C" int sg__hnsw_check(const void *fx)
{
	try {
		auto *m = dynamic_cast<const faiss::IndexIDMap2 *>(static_cast<const faiss::Index *>(fx));
		if (m == nullptr || dynamic_cast<const faiss::IndexHNSW *>(m->index) == nullptr)
			return 0;
		graph gr(fx); // sizes of levels, offsets, storage and ids against ntotal
		if (!gr.ok())
			return -1;
		const faiss::HNSW &g = gr.h->hnsw;
		const size_t n = (size_t)gr.h->ntotal;
		const auto &cum = g.cum_nneighbor_per_level;
		const size_t nlevels = cum.size() - 1; // levels a node can have
		if (n == 0)
			return g.entry_point == -1 ? 0 : -1;
		if (g.entry_point < 0 || g.max_level < 0 || (size_t)g.max_level >= nlevels ||
		    g.levels[(size_t)g.entry_point] != g.max_level + 1)
			return -1;
		for (size_t l = 0; l < nlevels; l++)
			if (cum[l + 1] < cum[l])
				return -1;
		for (size_t i = 0; i < n; i++) {
			int lv = g.levels[i];
			// a node's links: cum[lv] slots from its offset, within the next one's
			if (lv < 1 || (size_t)lv > nlevels || lv > g.max_level + 1 ||
			    g.offsets[i] > g.offsets[i + 1] ||
			    g.offsets[i + 1] - g.offsets[i] < (size_t)cum[(size_t)lv] ||
			    g.offsets[i + 1] > g.neighbors.size())
				return -1;
			// a link at level l goes to a node that has level l too: the walk
			// reads that node's links at l
			for (int l = 0; l < lv; l++) {
				size_t b, e;
				g.neighbor_range((storage_idx_t)i, l, &b, &e);
				for (size_t j = b; j < e; j++) {
					storage_idx_t v = g.neighbors[j];
					if (v < 0)
						break;
					if ((size_t)v >= n || g.levels[(size_t)v] <= l)
						return -1;
				}
			}
		}
		return 0;
	} catch (...) {
		return -1;
	}
}
