/* Looking into a store's LMDB file directly, under the store's API: what a
 * test asserts about records the API does not show (checkpoint chunks,
 * manifests). For test_store.c and test_cache.c. */
#ifndef SEMGATE_TEST_LMDB_RAW_H
#define SEMGATE_TEST_LMDB_RAW_H

#include <lmdb.h>

/* Records in database db of the store in dir (-1: no such database, -2: no
 * environment). */
static inline long raw_count(const char *dir, const char *db)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_stat st;
	long n = -1;

	if (mdb_env_create(&env))
		return -2;
	mdb_env_set_maxdbs(env, 8);
	if (!mdb_env_open(env, dir, MDB_RDONLY, 0600) &&
	    !mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) {
		if (!mdb_dbi_open(txn, db, 0, &dbi) && !mdb_stat(txn, dbi, &st))
			n = (long)st.ms_entries;
		mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	return n;
}

#endif
