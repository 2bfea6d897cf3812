package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// oauthdProcess runs the oauthd command line in another process: this test binary re-executed
// as oauthd (TestMain), on the same database file as the running test server.
func oauthdProcess(t *testing.T, db, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "OAUTHD_TEST_AS_MAIN=1", "OAUTHD_DB="+db)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("oauthd %q: %v: %s", args, err, ee.Stderr)
		}
		t.Fatalf("oauthd %q: %v", args, err)
	}
	return string(out)
}

// TestCacheRevocation: every way of revoking is visible at once through the caches, for
// tokens that were already cached; expiry too.
func TestCacheRevocation(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	fresh := func() tokenCall {
		code, ver := b.getCode(c)
		tok := ts.exchange(c, code, ver)
		for _, k := range []string{"access_token", "refresh_token"} {
			if !ts.active(c, str(tok.JSON[k])) { // now cached
				t.Fatalf("a new %s is not active", k)
			}
		}
		return tok
	}
	cached := func(tok string) bool {
		ts.s.store.cache.mu.Lock()
		defer ts.s.store.cache.mu.Unlock()
		_, ok := ts.s.store.cache.tokens[string(tokenKey(tok))]
		return ok
	}

	tok := fresh()
	if !cached(str(tok.JSON["access_token"])) {
		t.Fatal("introspection did not cache the token; this test would prove nothing")
	}
	ts.postToken("/oauth/revoke", url.Values{"token": {str(tok.JSON["access_token"])}}, c.ID, c.Secret)
	if ts.active(c, str(tok.JSON["access_token"])) {
		t.Error("revoked access token active through the cache")
	}

	tok = fresh()
	ts.postToken("/oauth/revoke", url.Values{"token": {str(tok.JSON["refresh_token"])}}, c.ID, c.Secret)
	if ts.active(c, str(tok.JSON["access_token"])) || ts.active(c, str(tok.JSON["refresh_token"])) {
		t.Error("tokens of a revoked grant active through the cache")
	}

	code, ver := b.getCode(c)
	tok = ts.exchange(c, code, ver)
	ts.active(c, str(tok.JSON["access_token"]))
	ts.exchange(c, code, ver) // replay revokes the grant
	if ts.active(c, str(tok.JSON["access_token"])) {
		t.Error("a replayed code's token active through the cache")
	}

	tok = fresh()
	next := ts.refresh(c, str(tok.JSON["refresh_token"]))
	if ts.active(c, str(tok.JSON["refresh_token"])) {
		t.Error("a rotated refresh token active through the cache")
	}
	ts.active(c, str(next.JSON["access_token"]))
	ts.clock.Advance(11 * time.Second)
	ts.refresh(c, str(tok.JSON["refresh_token"])) // reuse after the grace
	if ts.active(c, str(next.JSON["access_token"])) || ts.active(c, str(tok.JSON["access_token"])) {
		t.Error("tokens of a grant revoked for refresh reuse active through the cache")
	}

	tok = fresh()
	if err := ts.s.store.setDisabled(context.Background(), "alice", true); err != nil {
		t.Fatal(err)
	}
	if ts.active(c, str(tok.JSON["access_token"])) {
		t.Error("a disabled user's token active through the cache")
	}
	ts.s.store.setDisabled(context.Background(), "alice", false)
	b = ts.browser("alice", "correct horse battery")

	tok = fresh()
	ts.clock.Advance(time.Hour + time.Second)
	if ts.active(c, str(tok.JSON["access_token"])) {
		t.Error("an expired access token active through the cache")
	}
}

// TestCacheOtherProcess: changes made by the CLI in another process against the running
// server take effect at once: secret rotation, client deletion, user deletion.
func TestCacheOtherProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs subprocesses")
	}
	ts := newTestServer(t)
	if runtime.GOOS == "linux" && ts.s.store.walHdr == nil {
		t.Error("the WAL-index header is not mapped: every request pays a generation query")
	}
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	rs := ts.addClient(false, "read", "https://rs.example/cb")
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)
	if !ts.active(c, str(tok.JSON["access_token"])) || !ts.active(rs, str(tok.JSON["access_token"])) { // both clients and the token cached
		t.Fatal("token not active")
	}

	out := oauthdProcess(t, ts.s.cfg.DB, "", "client", "rotate-secret", c.ID)
	newSecret := between(out, `"client_secret":"`, `"`)
	if r := ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, c.ID, c.Secret); r.Status != 401 {
		t.Errorf("the old secret still works after rotate-secret in another process: %d", r.Status)
	}
	if r := ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, c.ID, newSecret); r.Status != 200 {
		t.Errorf("the new secret does not work: %d", r.Status)
	}

	oauthdProcess(t, ts.s.cfg.DB, "", "user", "del", "alice")
	if ts.active(rs, str(tok.JSON["access_token"])) {
		t.Error("a deleted user's token is still active (user del in another process)")
	}
	c.Secret = newSecret
	if r := ts.refresh(c, str(tok.JSON["refresh_token"])); r.Status != 400 || r.JSON["error"] != "invalid_grant" {
		t.Errorf("a deleted user's refresh token (hinted since its issue) still refreshes: %d %s", r.Status, r.Raw)
	}

	ts.addUser("bob", "bob's password!")
	b = ts.browser("bob", "bob's password!")
	code, ver = b.getCode(c)
	tok = ts.exchange(c, code, ver)
	ts.active(rs, str(tok.JSON["access_token"]))
	oauthdProcess(t, ts.s.cfg.DB, "", "client", "del", c.ID)
	if ts.active(rs, str(tok.JSON["access_token"])) {
		t.Error("a deleted client's token is still active (client del in another process)")
	}
	if r := ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, c.ID, newSecret); r.Status != 401 {
		t.Errorf("a deleted client still authenticates: %d", r.Status)
	}
}

// TestGroupCommitFailure: when the commit of a batch fails, none of its tokens is
// acknowledged or stored; a failing job does not take its batch-mates down with it.
func TestGroupCommitFailure(t *testing.T) {
	ts := newTestServer(t)
	c := ts.addServiceClient("read")
	count := func() (n int) {
		ts.s.store.db.QueryRow("SELECT count(*) FROM tokens").Scan(&n)
		return n
	}
	w := ts.s.store.w
	var calls sync.WaitGroup
	results := make(chan tokenCall, 20)
	fail := func() error { return errors.New("injected commit failure") }
	w.commitHook.Store(&fail)
	for range 20 {
		calls.Add(1)
		go func() {
			defer calls.Done()
			results <- ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, c.ID, c.Secret)
		}()
	}
	calls.Wait()
	close(results)
	for r := range results {
		if r.Status != 503 || str(r.JSON["error"]) != errTemporarilyUnavailable || r.JSON["access_token"] != nil {
			t.Errorf("a token request whose commit failed = %d %s; want 503 temporarily_unavailable", r.Status, r.Raw)
		}
	}
	if n := count(); n != 0 {
		t.Fatalf("%d tokens stored by failed commits", n)
	}
	w.commitHook.Store(nil)
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, c.ID, c.Secret); r.Status != 200 || count() != 1 {
		t.Fatalf("after the fault: %d %s, %d tokens", r.Status, r.Raw, count())
	}

	// A commit whose WAL flush fails is not acknowledged either: the token is never handed out.
	syncFail := func() error { return errors.New("injected fsync failure") }
	w.syncHook.Store(&syncFail)
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, c.ID, c.Secret); r.Status != 503 ||
		str(r.JSON["error"]) != errTemporarilyUnavailable || r.JSON["access_token"] != nil {
		t.Fatalf("a token whose flush failed = %d %s; want 503 temporarily_unavailable", r.Status, r.Raw)
	}
	w.syncHook.Store(nil)
	ts.s.store.db.Exec("DELETE FROM tokens")
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, c.ID, c.Secret); r.Status != 200 || count() != 1 {
		t.Fatalf("after the flush fault: %d %s, %d tokens", r.Status, r.Raw, count())
	}

	// In one batch, jobs that fail roll back alone.
	ctx := context.Background()
	errs := make(chan error, 40)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- ts.s.store.issueClientTokenOrFail(ctx, c.ID, i%2 == 0)
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
		}
	}
	if failed != 20 || count() != 21 {
		t.Fatalf("mixed batch: %d failed, %d tokens stored; want 20 failed and 21 tokens", failed, count())
	}
}

// TestOneStatementJobs: a one-statement job runs without a savepoint of its own. Failing on a
// constraint, it is answered at once and its batch goes on; failing otherwise (SQLite may then
// have rolled the transaction back) it gives up the whole batch: nothing of it is stored or
// acknowledged.
func TestOneStatementJobs(t *testing.T) {
	ts := newTestServer(t)
	st, w, ctx := ts.s.store, ts.s.store.w, context.Background()
	c := ts.addServiceClient("read")
	var gid int64
	if err := st.tx(ctx, func(tx *sql.Tx) error {
		return st.txRow(ctx, tx, "INSERT INTO grants(client_id, user_id, scope, auth_time, created_at) VALUES(?, NULL, 'read', 0, 0) RETURNING id", c.ID).Scan(&gid)
	}); err != nil {
		t.Fatal(err)
	}
	insert := func(key string, ran chan struct{}) func(*sql.Tx) error {
		return func(tx *sql.Tx) error {
			_, err := st.txExec(ctx, tx, "INSERT INTO tokens(hash, kind, grant_id, scope, created_at, expires_at) VALUES(?, 1, ?, 'read', 0, ?)", []byte(key), gid, int64(1)<<40)
			if ran != nil {
				close(ran)
			}
			return err
		}
	}
	stored := func(key string) bool {
		var n int
		st.db.QueryRow("SELECT count(*) FROM tokens WHERE hash = ?", []byte(key)).Scan(&n)
		return n == 1
	}
	if err := st.txOne(ctx, insert("dup", nil)); err != nil {
		t.Fatal(err)
	}
	// hold keeps a batch's flush waiting, so that the jobs after it share the next batch.
	hold := func() (release func()) {
		entered, gate := make(chan struct{}, 1), make(chan struct{})
		h := func() error {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-gate
			return nil
		}
		w.syncHook.Store(&h)
		first := make(chan error, 1)
		go func() { first <- st.txOne(ctx, insert("first-"+fmt.Sprint(time.Now().UnixNano()), nil)) }()
		<-entered
		return func() {
			close(gate)
			if err := <-first; err != nil {
				t.Error(err)
			}
			w.syncHook.Store(nil)
		}
	}

	release := hold()
	okA, okC := make(chan error, 1), make(chan error, 1)
	ran := make(chan struct{})
	go func() { okA <- st.txOne(ctx, insert("a", ran)) }()
	<-ran
	if err := st.txOne(ctx, insert("dup", nil)); err == nil || statementOnly(err) == false {
		t.Fatalf("duplicate key = %v; want a constraint failure, answered while the batch is open", err)
	}
	ran = make(chan struct{})
	go func() { okC <- st.tx(ctx, insert("c", ran)) }()
	<-ran
	release()
	if err1, err2 := <-okA, <-okC; err1 != nil || err2 != nil || !stored("a") || !stored("c") {
		t.Fatalf("batch-mates of a failed one-statement job: %v, %v, stored %v %v", err1, err2, stored("a"), stored("c"))
	}

	release = hold()
	okD := make(chan error, 1)
	ran = make(chan struct{})
	go func() { okD <- st.txOne(ctx, insert("d", ran)) }()
	<-ran
	err := st.txOne(ctx, func(tx *sql.Tx) error {
		_, err := st.txExec(ctx, tx, "INSERT INTO grants(id, client_id, user_id, scope, auth_time, created_at) VALUES('not a number', ?, NULL, '', 0, 0)", c.ID)
		return err
	})
	if err == nil || statementOnly(err) {
		t.Fatalf("datatype mismatch = %v; want a non-constraint SQLite error", err)
	}
	release()
	if err := <-okD; err == nil || stored("d") {
		t.Fatalf("the batch of a job that failed otherwise: %v, stored %v; want it given up", err, stored("d"))
	}
	if err := st.txOne(ctx, insert("e", nil)); err != nil || !stored("e") {
		t.Fatalf("after a given-up batch: %v", err)
	}
}

// issueClientTokenOrFail stores a client token, then fails the job after writing when fail.
func (st *store) issueClientTokenOrFail(ctx context.Context, clientID string, fail bool) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		var gid int64
		if err := st.txRow(ctx, tx, "INSERT INTO grants(client_id, user_id, scope, auth_time, created_at) VALUES(?, NULL, 'read', 0, 0) RETURNING id", clientID).Scan(&gid); err != nil {
			return err
		}
		if err := st.insertPair(ctx, tx, gid, tokenPair{Access: newToken{Hash: hashSecret(newSecret()), Scope: "read", ExpiresAt: 1 << 40}}, 0); err != nil {
			return err
		}
		if fail {
			return errors.New("this job fails after writing")
		}
		return nil
	})
}

// TestCacheBounded: the token cache never holds more than its bound.
func TestCacheBounded(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	ts.s.store.cache.max = 5
	b := ts.browser("alice", "correct horse battery")
	var toks []string
	for range 12 {
		code, ver := b.getCode(c)
		tok := ts.exchange(c, code, ver)
		toks = append(toks, str(tok.JSON["access_token"]))
		if !ts.active(c, toks[len(toks)-1]) {
			t.Fatal("token not active")
		}
	}
	ts.s.store.cache.mu.Lock()
	n := len(ts.s.store.cache.tokens)
	ts.s.store.cache.mu.Unlock()
	if n > 5 || n == 0 {
		t.Fatalf("the token cache holds %d entries; bound 5", n)
	}
	for _, tok := range toks { // evicted or not, every token still answers correctly
		if !ts.active(c, tok) {
			t.Fatal("a token evicted from the cache is not active")
		}
	}
}

// TestRefreshHints: a refresh token remembered from its issue is still refused once revoked
// (alone, or with its grant by a replay), and the hints are bounded.
func TestRefreshHints(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	hinted := func(rt string) bool {
		ts.s.store.hints.mu.Lock()
		defer ts.s.store.hints.mu.Unlock()
		_, ok := ts.s.store.hints.m[string(tokenKey(rt))]
		return ok
	}
	code, ver := b.getCode(c)
	rt := str(ts.exchange(c, code, ver).JSON["refresh_token"])
	if !hinted(rt) {
		t.Fatal("no hint for a refresh token issued by a code exchange")
	}
	if r := ts.postToken("/oauth/revoke", url.Values{"token": {rt}}, c.ID, c.Secret); r.Status != 200 {
		t.Fatalf("revoke = %d %s", r.Status, r.Raw)
	}
	if r := ts.refresh(c, rt); r.Status != 400 || r.JSON["error"] != "invalid_grant" {
		t.Fatalf("a revoked refresh token with a hint refreshed: %d %s", r.Status, r.Raw)
	}

	// A successor is hinted too; after a replay past the grace revoked the grant, it is refused.
	code, ver = b.getCode(c)
	first := str(ts.exchange(c, code, ver).JSON["refresh_token"])
	next := str(ts.refresh(c, first).JSON["refresh_token"])
	if !hinted(next) {
		t.Fatal("no hint for a rotated successor")
	}
	ts.clock.Advance(ts.s.cfg.RefreshGrace + time.Second)
	if r := ts.refresh(c, first); r.JSON["error"] != "invalid_grant" {
		t.Fatalf("replay after the grace = %d %s", r.Status, r.Raw)
	}
	if r := ts.refresh(c, next); r.Status != 400 || r.JSON["error"] != "invalid_grant" {
		t.Fatalf("the successor of a replayed token refreshed through its hint: %d %s", r.Status, r.Raw)
	}

	var h refreshHints
	for i := range maxRefreshHints + 100 {
		h.put(refreshHint{key: []byte(fmt.Sprint(i))})
	}
	if len(h.m) != maxRefreshHints {
		t.Fatalf("%d hints kept; bound %d", len(h.m), maxRefreshHints)
	}
}

// TestWriterClose: jobs submitted around and after the writer stops are answered, never left
// waiting.
func TestWriterClose(t *testing.T) {
	ts := newTestServer(t)
	st := ts.s.store
	ctx := context.Background()
	var wg sync.WaitGroup
	answered := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answered <- st.tx(ctx, func(tx *sql.Tx) error {
				_, err := st.txExec(ctx, tx, "UPDATE generation SET n = n WHERE id = 1")
				return err
			})
		}()
	}
	st.w.close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("jobs left waiting after the writer stopped")
	}
	close(answered)
	for err := range answered {
		if err != nil && !errors.Is(err, errClosing) {
			t.Errorf("job answered %v; want nil or errClosing", err)
		}
	}
	if err := st.w.do(ctx, func(*sql.Tx) error { return nil }, false); !errors.Is(err, errClosing) {
		t.Errorf("a job after close = %v; want errClosing", err)
	}
	st.w = nil // Close would stop it again
}

// TestCacheOwnCommitGeneration: a change this server commits to a cached table is seen by the
// next lookup even when the writing code forgets to invalidate: the writer publishes a
// freshness record only together with the counter read just before its COMMIT. (Fails if
// that read is skipped: checked.)
func TestCacheOwnCommitGeneration(t *testing.T) {
	ts := newTestServer(t)
	c := ts.addClient(false, "read", "https://app.example/cb")
	st, ctx := ts.s.store, context.Background()
	for i := range 3 {
		if _, err := st.exec(ctx, "UPDATE settings SET value = value WHERE name = ''"); err != nil { // a batch that changes nothing cached
			t.Fatal(err)
		}
		if got, err := st.lookupClient(ctx, c.ID); err != nil || got.ID != c.ID {
			t.Fatalf("lookup: %v", err)
		}
		name := fmt.Sprintf("renamed %d", i)
		if _, err := st.exec(ctx, "UPDATE clients SET name = ? WHERE id = ?", name, c.ID); err != nil {
			t.Fatal(err)
		}
		if got, err := st.lookupClient(ctx, c.ID); err != nil || got.Name != name {
			t.Fatalf("after our own commit the cache says %q (%v); want %q", got.Name, err, name)
		}
		var n int64
		st.db.QueryRow(generationQuery).Scan(&n)
		st.cache.mu.Lock()
		gen := st.cache.gen
		st.cache.mu.Unlock()
		if gen != n {
			t.Fatalf("the cache is at generation %d, the database at %d", gen, n)
		}
	}
}

// TestCommitFailureRecovers: a COMMIT that SQLite refuses (here a deferred foreign key) fails
// its batch, stores nothing, and leaves the writer working.
func TestCommitFailureRecovers(t *testing.T) {
	ts := newTestServer(t)
	st, ctx := ts.s.store, context.Background()
	err := st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := st.txExec(ctx, tx, "PRAGMA defer_foreign_keys = ON"); err != nil {
			return err
		}
		_, err := st.txExec(ctx, tx, "INSERT INTO tokens(hash, kind, grant_id, scope, created_at, expires_at) VALUES(x'00', 1, 987654, 'x', 0, 0)")
		return err
	})
	var n int
	st.db.QueryRow("SELECT count(*) FROM tokens").Scan(&n)
	if err == nil || n != 0 {
		t.Fatalf("a refused COMMIT = %v, %d rows stored", err, n)
	}
	for i := range 5 {
		if _, err := st.exec(ctx, "UPDATE settings SET value = value WHERE name = ''"); err != nil {
			t.Fatalf("write %d after a failed commit: %v", i, err)
		}
	}
}

// TestNoAnswerBeforeFlush: a write is answered only after the WAL flush covering its commit
// returned, although the commit itself is long done.
func TestNoAnswerBeforeFlush(t *testing.T) {
	ts := newTestServer(t)
	st, ctx := ts.s.store, context.Background()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	hold := func() error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return nil
	}
	st.w.syncHook.Store(&hold)
	answered := make(chan error, 1)
	go func() {
		_, err := st.exec(ctx, "UPDATE settings SET value = value WHERE name = ''")
		answered <- err
	}()
	<-entered // committed, now flushing
	select {
	case err := <-answered:
		t.Fatalf("answered (%v) before the flush returned", err)
	case <-time.After(100 * time.Millisecond):
	}
	st.w.syncHook.Store(nil)
	close(release)
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
}
