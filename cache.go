package main

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"sync"
)

// cache keeps clients, recently seen access tokens, and users' groups and claims in memory.
// Correctness rules:
//   - Every change this process makes (revocation, rotation, grant deletion) invalidates
//     synchronously, after its transaction committed and before the response is written.
//   - Changes made by another process (the CLI on the same file) bump a generation counter
//     that triggers maintain in the database; a request reads that counter before using the
//     caches (fresh) and drops everything when it moved. The read is skipped when SQLite's
//     WAL-index header shows no commit by anyone since the last read.
//   - A reader that loaded a row before an invalidation may not store it afterwards: each
//     invalidation advances epoch, and put only stores when the epoch it started with holds.
//   - Expiry and rotation are still checked on every use, so a cached token never outlives
//     its exp.
type cache struct {
	mu      sync.Mutex
	epoch   uint64
	gen     int64 // last generation counter seen
	clients map[string]client
	tokens  map[string]tokenInfo  // by token hash
	max     int                   // bound on tokens
	access  map[int64]userGroups  // a user's groups and custom claims, by user id (store_groups.go)
	res     resourceCache         // resources, user subjects and the JWT key (resources.go)
	apps    map[string]appSession // forward-auth app sessions by cookie hash, each kept at most a minute (store_forwardauth.go)
	origins map[string]string     // protected origin → client id (store_forwardauth.go)
}

// maxCachedTokens bounds the token cache (a few MB at most).
const maxCachedTokens = 10_000

func newCache() *cache {
	return &cache{clients: map[string]client{}, tokens: map[string]tokenInfo{}, max: maxCachedTokens, access: map[int64]userGroups{},
		apps: map[string]appSession{}, origins: map[string]string{}}
}

// flush drops everything.
func (c *cache) flush() {
	c.mu.Lock()
	c.epoch++
	clear(c.clients)
	clear(c.tokens)
	clear(c.access)
	c.res = resourceCache{}
	clear(c.apps)
	clear(c.origins)
	c.mu.Unlock()
}

// dropToken forgets one token.
func (c *cache) dropToken(hash []byte) {
	c.mu.Lock()
	c.epoch++
	delete(c.tokens, string(hash))
	c.mu.Unlock()
}

// dropGrant forgets every token of a grant.
func (c *cache) dropGrant(id int64) {
	c.mu.Lock()
	c.epoch++
	for k, t := range c.tokens {
		if t.GrantID == id {
			delete(c.tokens, k)
		}
	}
	c.mu.Unlock()
}

// dropClient forgets a client.
func (c *cache) dropClient(id string) {
	c.mu.Lock()
	c.epoch++
	delete(c.clients, id)
	c.mu.Unlock()
}

// generation drops everything when the database's change counter moved.
func (c *cache) generation(n int64) {
	c.mu.Lock()
	if n != c.gen {
		c.epoch++
		clear(c.clients)
		clear(c.tokens)
		clear(c.access)
		c.res = resourceCache{}
		clear(c.apps)
		clear(c.origins)
		c.gen = n
	}
	c.mu.Unlock()
}

// ---- store side

// fresh makes the caches reflect every commit made before it was called, by any process:
// unless the WAL-index header is the one seen when the generation counter was last read (no
// commit since), it reads the counter. No lock: a request skips the read only when it finds
// the header that another request stored *after* applying a counter it read after seeing
// that header. Concurrent readers may apply counters out of order; generation then clears
// the caches once more, which is always safe.
func (st *store) fresh(ctx context.Context) error {
	var h [48]byte
	peek := st.walHdr != nil && st.walHdr.read(st.path, &h)
	if peek {
		if last := st.lastHdr.Load(); last != nil && *last == h {
			return nil
		}
	}
	var n int64
	if err := st.queryRow(ctx, generationQuery).Scan(&n); err != nil {
		return fmt.Errorf("generation counter: %w", err)
	}
	st.cache.generation(n)
	if peek {
		st.lastHdr.Store(&h) // h was read before the counter: a later commit changes it again
	} else {
		st.lastHdr.Store(nil)
	}
	return nil
}

// freshWatch lets the writer keep the caches' freshness record current, so that requests do
// not re-read the generation counter after each of the server's own commits (under write
// load the WAL-index header changes all the time; the reads were a third of the token
// handler's CPU).
//   - At the start of each batch, inside BEGIN IMMEDIATE, no process can commit: the header
//     and the counter read there describe the same state; both are applied.
//   - Just before COMMIT the counter is read again (it includes the batch's own changes to
//     users, clients and keys). After COMMIT, if the header's change counter moved by exactly
//     one, the only transaction since the start was ours, and the new header is published
//     with that counter. Anything else (another process committed, the WAL restarted) fails
//     the test and requests read the counter themselves, as before.
type freshWatch struct {
	st    *store
	h0    [48]byte // the header at the start of the batch
	n     int64    // the counter just before COMMIT
	ready bool     // h0 and n are both known
}

const generationQuery = "SELECT n FROM generation WHERE id = 1"

func (f *freshWatch) begun(tx *sql.Tx) {
	st := f.st
	f.ready = false
	var n int64
	if st.walHdr == nil || !st.walHdr.read(st.path, &f.h0) ||
		st.txRow(context.Background(), tx, generationQuery).Scan(&n) != nil {
		return
	}
	st.cache.generation(n)
	h := f.h0
	st.lastHdr.Store(&h)
	f.ready = true
}

func (f *freshWatch) committing(tx *sql.Tx) {
	if f.ready && f.st.txRow(context.Background(), tx, generationQuery).Scan(&f.n) != nil {
		f.ready = false
	}
}

func (f *freshWatch) committed() {
	st := f.st
	var h [48]byte
	if !f.ready || !st.walHdr.read(st.path, &h) || walChange(h) != walChange(f.h0)+1 {
		return
	}
	st.cache.generation(f.n)
	st.lastHdr.Store(&h)
}

// walChange is the WAL-index header's iChange, which SQLite increments with every commit
// and every restart of the log (native byte order, offset 8).
func walChange(h [48]byte) uint32 { return binary.NativeEndian.Uint32(h[8:12]) }

// lookupClient is the client with that id as of now: freshness checked, then the cache. It
// also makes the rest of the request's cached lookups current.
func (st *store) lookupClient(ctx context.Context, id string) (client, error) {
	if err := st.fresh(ctx); err != nil {
		return client{}, err
	}
	return st.cachedClient(ctx, id)
}

// cachedClient is clientByID through the cache. The caller has called fresh during this
// request (authenticateClient does), so that changes by other processes are seen.
func (st *store) cachedClient(ctx context.Context, id string) (client, error) {
	st.cache.mu.Lock()
	e := st.cache.epoch // the epoch this reader starts from, read with the lookup
	c, ok := st.cache.clients[id]
	st.cache.mu.Unlock()
	if ok {
		return c, nil
	}
	c, err := st.clientByID(ctx, id)
	if err != nil {
		return c, err // unknown clients are not cached
	}
	st.cache.mu.Lock()
	if st.cache.epoch == e && len(st.cache.clients) < 10_000 {
		st.cache.clients[id] = c
	}
	st.cache.mu.Unlock()
	return c, nil
}

// cachedToken is tokenByHash through the bounded token cache; unknown tokens are not cached.
// As with cachedClient, the caller has called fresh during this request.
func (st *store) cachedToken(ctx context.Context, hash []byte) (tokenInfo, error) {
	st.cache.mu.Lock()
	e := st.cache.epoch
	t, ok := st.cache.tokens[string(hash)]
	st.cache.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := st.tokenByHash(ctx, hash)
	if err != nil {
		return t, err
	}
	st.cache.mu.Lock()
	if st.cache.epoch == e {
		if len(st.cache.tokens) >= st.cache.max {
			for k := range st.cache.tokens { // evict an arbitrary entry
				delete(st.cache.tokens, k)
				break
			}
		}
		st.cache.tokens[string(hash)] = t
	}
	st.cache.mu.Unlock()
	return t, nil
}
