package main

// The security audit's (issue 11) attacks on refresh grace, password resets and their races,
// file modes and the review's findings, each through the real handler or CLI; the battery and
// the first findings are in security_test.go.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAuditRefreshGrace (11.9): the grace is compared to the millisecond and strictly. Before,
// times were whole seconds compared with <=: with -refresh-grace 0 a replay in the same second
// still got the successor, and 10s meant up to 10.99 s.
func TestAuditRefreshGrace(t *testing.T) {
	for _, tc := range []struct {
		name          string
		grace         time.Duration
		offset        time.Duration // where in its second the rotation happens
		replay        time.Duration // how long after the rotation the old token comes back
		legacyRow     bool          // the rotation is stored as an earlier version did (whole seconds)
		wantSuccessor bool
	}{
		{name: "grace 0, replay at +0ms", grace: 0, replay: 0},
		{name: "grace 0, replay later in the same second", grace: 0, offset: 100 * time.Millisecond, replay: 800 * time.Millisecond},
		{name: "grace 10s, +9.999s", grace: 10 * time.Second, replay: 9999 * time.Millisecond, wantSuccessor: true},
		{name: "grace 10s, +10.000s", grace: 10 * time.Second, replay: 10 * time.Second},
		{name: "grace 10s, +10.5s", grace: 10 * time.Second, replay: 10500 * time.Millisecond},
		{name: "grace 10s, rotated at .999, +10.000s", grace: 10 * time.Second, offset: 999 * time.Millisecond, replay: 10 * time.Second},
		{name: "grace 500ms, +499ms", grace: 500 * time.Millisecond, offset: 700 * time.Millisecond, replay: 499 * time.Millisecond, wantSuccessor: true},
		{name: "grace 500ms, +500ms", grace: 500 * time.Millisecond, offset: 700 * time.Millisecond, replay: 500 * time.Millisecond},
		// A row rotated before rotated_ms existed counts from the start of its second.
		{name: "earlier row, grace 10s, +9.4s from .5", grace: 10 * time.Second, offset: 500 * time.Millisecond, replay: 9400 * time.Millisecond, legacyRow: true, wantSuccessor: true},
		{name: "earlier row, grace 10s, +9.6s from .5", grace: 10 * time.Second, offset: 500 * time.Millisecond, replay: 9600 * time.Millisecond, legacyRow: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, func(c *config) { c.RefreshGrace = tc.grace })
			ts.addUser("alice", "correct horse battery")
			c := ts.addClient(false, "read", "https://app.example/cb")
			code, ver := ts.browser("alice", "correct horse battery").getCode(c)
			first := ts.exchange(c, code, ver)
			rt := str(first.JSON["refresh_token"])
			ts.clock.Advance(tc.offset)
			next := ts.refresh(c, rt)
			if next.Status != 200 {
				t.Fatalf("rotation = %d %s", next.Status, next.Raw)
			}
			if tc.legacyRow {
				if _, err := ts.s.store.db.Exec("UPDATE tokens SET rotated_ms = NULL WHERE hash = ?", tokenKey(rt)); err != nil {
					t.Fatal(err)
				}
			}
			ts.clock.Advance(tc.replay)
			r := ts.refresh(c, rt)
			if !tc.wantSuccessor {
				refusedReplay(t, ts, c, r, next)
				return
			}
			if r.Status != 200 || str(r.JSON["refresh_token"]) != str(next.JSON["refresh_token"]) || str(r.JSON["access_token"]) != str(next.JSON["access_token"]) {
				t.Fatalf("replay within the grace = %d %s; want the same successor %s", r.Status, r.Raw, next.Raw)
			}
		})
	}
}

// TestAuditGracePurge (11.9): the purge drops a sealed successor once its grace is over, at
// the same millisecond precision, and not before.
func TestAuditGracePurge(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.RefreshGrace = 1500 * time.Millisecond })
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	code, ver := ts.browser("alice", "correct horse battery").getCode(c)
	rt := str(ts.exchange(c, code, ver).JSON["refresh_token"])
	ts.clock.Advance(300 * time.Millisecond)
	rotated := ts.clock.Now()
	if r := ts.refresh(c, rt); r.Status != 200 {
		t.Fatalf("rotation = %d %s", r.Status, r.Raw)
	}
	sealed := func() (n int) {
		ts.s.store.db.QueryRow("SELECT count(*) FROM tokens WHERE hash = ? AND successor_blob IS NOT NULL", tokenKey(rt)).Scan(&n)
		return n
	}
	ctx := t.Context()
	if _, err := ts.s.store.purge(ctx, rotated.Add(1499*time.Millisecond), ts.s.cfg.RefreshGrace); err != nil || sealed() != 1 {
		t.Fatalf("purge 1.499 s after the rotation (grace 1.5 s): %v, sealed successor kept = %d; want 1", err, sealed())
	}
	if _, err := ts.s.store.purge(ctx, rotated.Add(1500*time.Millisecond), ts.s.cfg.RefreshGrace); err != nil || sealed() != 0 {
		t.Fatalf("purge 1.5 s after the rotation: %v, sealed successor kept = %d; want 0", err, sealed())
	}
}

// footholds is what an attacker who signed in with a stolen password leaves behind.
type footholds struct {
	evil, dev, fresh testClient
	atk              *browser
	tok              tokenCall // an authorized app's access and refresh tokens (both cached by introspection)
	code, ver        string    // a code not redeemed yet
	deviceCode       string    // a device authorization approved, not collected yet
	consentForm      url.Values
}

// plantFootholds signs in as user with the stolen password and authorizes an app (tokens, a
// remembered consent, a spare code), approves a device and leaves a consent page open.
func plantFootholds(t *testing.T, ts *testServer, user, stolen string) footholds {
	t.Helper()
	f := footholds{evil: ts.addClient(false, "read openid offline_access", "https://evil.example/cb"), fresh: ts.addClient(false, "read", "https://fresh.example/cb")}
	dev, err := clientSpec{Name: "Evil TV", Public: true, Scope: "read", GrantTypes: []string{"device_code", "refresh_token"}}.build()
	if err == nil {
		err = ts.s.store.createClient(t.Context(), dev)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.dev = testClient{client: dev}
	f.atk = ts.browser(user, stolen)
	code, ver := f.atk.getCode(f.evil)
	if f.tok = ts.exchange(f.evil, code, ver); f.tok.Status != 200 {
		t.Fatalf("exchange = %d %s", f.tok.Status, f.tok.Raw)
	}
	for _, k := range []string{"access_token", "refresh_token"} {
		if !ts.active(f.evil, str(f.tok.JSON[k])) { // cached now
			t.Fatalf("the %s is not active", k)
		}
	}
	f.code, f.ver = f.atk.getCode(f.evil) // no consent page: the approval is remembered
	d := ts.postToken("/oauth/device_authorization", url.Values{"client_id": {dev.ID}}, "", "")
	f.deviceCode = str(d.JSON["device_code"])
	dp := f.atk.get("/device")
	consent := f.atk.post("/device", url.Values{"csrf_token": {hidden(dp.Body, "csrf_token")}, "user_code": {str(d.JSON["user_code"])}})
	if done := f.atk.post("/oauth/consent", url.Values{"csrf_token": {hidden(consent.Body, "csrf_token")}, "request": {hidden(consent.Body, "request")},
		"decision": {"allow"}}); done.StatusCode != 200 {
		t.Fatalf("device approval = %d", done.StatusCode)
	}
	open := f.atk.authorize(codeRequest(f.fresh, nil), "")
	f.consentForm = url.Values{"csrf_token": {hidden(open.Body, "csrf_token")}, "request": {hidden(open.Body, "request")}, "decision": {"allow"}}
	if f.consentForm.Get("request") == "" {
		t.Fatalf("no consent page: %d", open.StatusCode)
	}
	return f
}

// assertEnded checks that none of the footholds works any more, each refused exactly.
func assertEnded(t *testing.T, ts *testServer, f footholds) {
	t.Helper()
	jsonErr := func(what string, r tokenCall, status int, code, desc string) {
		t.Helper()
		if r.Status != status || str(r.JSON["error"]) != code || str(r.JSON["error_description"]) != desc {
			t.Errorf("%s after the reset = %d %s; want %d %s %q", what, r.Status, r.Raw, status, code, desc)
		}
	}
	for _, k := range []string{"access_token", "refresh_token"} {
		if ts.active(f.evil, str(f.tok.JSON[k])) {
			t.Errorf("the app's %s is still active after the reset", k)
		}
	}
	jsonErr("refresh", ts.refresh(f.evil, str(f.tok.JSON["refresh_token"])), 400, errInvalidGrant, "unknown refresh token, or one issued to another client")
	jsonErr("the spare code", ts.exchange(f.evil, f.code, f.ver), 400, errInvalidGrant, "unknown authorization code")
	ts.clock.Advance(6 * time.Second) // past the device's polling interval
	jsonErr("the approved device's poll", ts.postToken("/oauth/token", url.Values{"grant_type": {grantDeviceCode}, "device_code": {f.deviceCode},
		"client_id": {f.dev.ID}}, "", ""), 400, errInvalidGrant, "unknown device code, or one issued to another client")
	req, _ := http.NewRequest("GET", ts.url+"/oauth/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+str(f.tok.JSON["access_token"]))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("userinfo with the app's token after the reset = %d; want 401", resp.StatusCode)
	}
	if p := f.atk.post("/oauth/consent", f.consentForm); p.StatusCode != http.StatusForbidden || p.Header.Get("Location") != "" || !strings.Contains(p.Body, "Session ended") {
		t.Errorf("the open consent page after the reset = %d %q; want 403 Session ended, no code", p.StatusCode, p.Header.Get("Location"))
	}
	if p := f.atk.get("/"); strings.Contains(p.Body, "Signed in") {
		t.Error("the attacker's session survived the reset")
	}
}

// askedAgain signs in as user with password and checks that the attacker's app does not come
// back silently: its remembered approval is gone, so the consent page is shown.
func askedAgain(t *testing.T, ts *testServer, f footholds, user, password string) {
	t.Helper()
	b := ts.browser(user, password)
	if p := b.login(); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in as %s = %d", user, p.StatusCode)
	}
	if p := b.authorize(codeRequest(f.evil, nil), ""); p.StatusCode != 200 || !strings.Contains(p.Body, `name="decision"`) {
		t.Errorf("the app after the reset = %d %q; want the consent page (the remembered approval is gone)", p.StatusCode, p.Header.Get("Location"))
	}
}

// TestAuditPasswordReset (11.4): a password reset — through a link, the admin page's reset
// action, `oauthd user passwd`, or the same in another process against the running server —
// ends every session, grant, token (cached ones at once), code, approved device and
// remembered consent of the user, and the user's earlier reset links. Before, only sessions
// ended: the attacker's app kept refreshing for 30 days.
func TestAuditPasswordReset(t *testing.T) {
	const stolen, fresh = "correct horse battery", "a brand new password"
	oldLinkDead := func(t *testing.T, ts *testServer, link string) {
		t.Helper()
		if p := ts.browser("", "").get(link); p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "Link not valid") {
			t.Errorf("an earlier reset link after the reset = %d; want 403 Link not valid", p.StatusCode)
		}
	}
	setup := func(t *testing.T) (*testServer, *browser, string) {
		ts := newTestServer(t)
		ts.addAdmin("root", "the admin password")
		ts.addUser("alice", stolen)
		root := ts.browser("root", "the admin password")
		root.login()
		return ts, root, resetLink(t, root, "alice")
	}
	t.Run("reset link", func(t *testing.T) {
		ts, root, early := setup(t)
		link := resetLink(t, root, "alice") // the one alice uses; the earlier one dies now
		f := plantFootholds(t, ts, "alice", stolen)
		g := ts.browser("", "")
		rp := g.get(link)
		p := g.post("/reset", url.Values{"csrf_token": {hidden(rp.Body, "csrf_token")}, "token": {hidden(rp.Body, "token")},
			"password": {fresh}, "password2": {fresh}})
		if p.StatusCode != 200 || !strings.Contains(p.Body, "every application you had authorized has lost its access") {
			t.Fatalf("reset = %d %s", p.StatusCode, p.Body)
		}
		assertEnded(t, ts, f)
		oldLinkDead(t, ts, early)
		newPassword(t, ts, f, "alice", stolen, fresh)
	})
	t.Run("admin page reset action", func(t *testing.T) {
		ts, root, early := setup(t)
		f := plantFootholds(t, ts, "alice", stolen)
		ap := root.get("/admin/users")
		p := root.post("/admin/users/alice/reset", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}})
		if p.StatusCode != 200 || !strings.Contains(p.Body, "alice is now signed out everywhere, and every application they had authorized has lost its access") {
			t.Fatalf("admin reset = %d %s", p.StatusCode, p.Body)
		}
		// Making the link already ended everything planted (the stolen password works until
		// alice uses the link, but the app is asked about again).
		assertEnded(t, ts, f)
		oldLinkDead(t, ts, early)
		askedAgain(t, ts, f, "alice", stolen)
	})
	t.Run("oauthd user passwd", func(t *testing.T) {
		ts, _, early := setup(t)
		f := plantFootholds(t, ts, "alice", stolen)
		code, _, errs := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, fresh+"\n", "user", "passwd", "alice")
		if code != 0 || !strings.Contains(errs, "their sessions, app authorizations (grants, tokens, codes, consents) and reset links are ended") {
			t.Fatalf("user passwd = %d %s", code, errs)
		}
		assertEnded(t, ts, f)
		oldLinkDead(t, ts, early)
		newPassword(t, ts, f, "alice", stolen, fresh)
	})
	t.Run("oauthd user passwd in another process", func(t *testing.T) {
		if testing.Short() {
			t.Skip("runs a subprocess")
		}
		ts, _, early := setup(t)
		f := plantFootholds(t, ts, "alice", stolen)
		oauthdProcess(t, ts.s.cfg.DB, fresh+"\n", "user", "passwd", "alice")
		assertEnded(t, ts, f)
		oldLinkDead(t, ts, early)
		newPassword(t, ts, f, "alice", stolen, fresh)
	})
}

// newPassword checks that after a reset the old password fails, the new one signs in, and the
// attacker's app must ask again.
func newPassword(t *testing.T, ts *testServer, f footholds, user, old, fresh string) {
	t.Helper()
	if p := ts.browser(user, old).login(); p.StatusCode != http.StatusUnauthorized {
		t.Errorf("sign-in with the old password after the reset = %d; want 401", p.StatusCode)
	}
	askedAgain(t, ts, f, user, fresh)
}

// resetLink makes a password reset link for name on the admin page.
func resetLink(t *testing.T, admin *browser, name string) string {
	t.Helper()
	ap := admin.get("/admin/users")
	link := inputValue(admin.post("/admin/users/"+name+"/reset", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}}).Body, "link")
	if link == "" {
		t.Fatal("no reset link")
	}
	return link
}

// TestAuditResetRaces (11.4, review): a reset that commits between a page's check and its
// write wins. Before, a sign-in that had checked the stolen password got a session after the
// reset had ended all of them, and a consent or device approval made in a session that a
// reset ended was still recorded (a code issued, the device approved).
func TestAuditResetRaces(t *testing.T) {
	const stolen, fresh = "correct horse battery", "a brand new password"
	ts := newTestServer(t)
	alice := ts.addUser("alice", stolen)
	ctx := t.Context()

	t.Run("sign-in checking the old password while the reset commits", func(t *testing.T) {
		ts.s.guard.hashWait = 20 * time.Second
		slots := cap(ts.s.guard.hashing)
		for range slots { // every hashing slot taken: the sign-in waits after reading alice's row
			ts.s.guard.hashing <- struct{}{}
		}
		atk := ts.browser("alice", stolen)
		lp := atk.get("/login")
		done := make(chan *http.Response, 1)
		go func() {
			req, _ := http.NewRequest("POST", ts.url+"/login", strings.NewReader(url.Values{"username": {"alice"}, "password": {stolen},
				"csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {"/"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", ts.url)
			resp, err := atk.c.Do(req)
			if err != nil {
				resp = &http.Response{StatusCode: -1, Body: http.NoBody}
			}
			done <- resp
		}()
		time.Sleep(time.Second)
		if err := ts.s.store.setPassword(ctx, "alice", mustHash(t, fresh)); err != nil {
			t.Fatal(err)
		}
		for range slots {
			<-ts.s.guard.hashing
		}
		resp := <-done
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "The password of this account was just changed") {
			t.Fatalf("sign-in with the password checked before the reset = %d %q; want 401, password changed", resp.StatusCode, resp.Header.Get("Location"))
		}
		if strings.Contains(atk.get("/").Body, "Signed in") {
			t.Fatal("the sign-in outlived the reset")
		}
	})

	alice, _ = ts.s.store.userByName(ctx, "alice")
	newSession := func() []byte {
		h := hashSecret(newSecret())
		if err := ts.s.store.createSession(ctx, h, alice, 1, ts.clock.Now().Add(time.Hour).Unix(), "", ""); err != nil {
			t.Fatal(err)
		}
		return h
	}
	c := ts.addClient(false, "read", "https://app.example/cb")
	now := ts.clock.Now().Unix()
	code := authCode{ClientID: c.ID, UserID: alice.ID, RedirectURI: "https://app.example/cb", Scope: "read", AuthTime: 1, ExpiresAt: now + 60}
	codes := func() (n int) {
		ts.s.store.db.QueryRow("SELECT count(*) FROM codes").Scan(&n)
		return n
	}

	t.Run("consent recorded after the reset ended its session", func(t *testing.T) {
		sess := newSession()
		if err := ts.s.store.setPassword(ctx, "alice", mustHash(t, fresh)); err != nil { // between takePending and issueCode
			t.Fatal(err)
		}
		if err := ts.s.store.issueCode(ctx, tokenKey(newSecret()), code, sess, []string{"read"}, now); !errors.Is(err, errSessionEnded) || codes() != 0 {
			t.Fatalf("issueCode in an ended session = %v, %d codes; want errSessionEnded and none", err, codes())
		}
		if _, err := ts.s.store.consentScopes(ctx, alice.ID, c.ID); !errors.Is(err, errNotFound) {
			t.Fatalf("the consent was recorded anyway: %v", err)
		}
	})
	t.Run("remembered consent revoked between the check and the code", func(t *testing.T) {
		alice, _ = ts.s.store.userByName(ctx, "alice")
		sess := newSession()
		if err := ts.s.store.issueCode(ctx, tokenKey(newSecret()), code, sess, []string{"read"}, now); err != nil {
			t.Fatal(err)
		}
		// handleAuthorize read the consent; the user revokes the connection; then the code.
		if err := ts.s.store.revokeConnection(ctx, alice.ID, c.ID); err != nil {
			t.Fatal(err)
		}
		if err := ts.s.store.issueCode(ctx, tokenKey(newSecret()), code, sess, nil, now); !errors.Is(err, errConsentWithdrawn) || codes() != 0 {
			t.Fatalf("issueCode on a revoked consent = %v, %d codes; want errConsentWithdrawn and none", err, codes())
		}
	})
	t.Run("device approved after the reset ended its session", func(t *testing.T) {
		sess := newSession()
		dev, user := hashSecret(newSecret()), hashSecret("BCDFGHJK")
		if err := ts.s.store.createDeviceCode(ctx, dev, user, deviceCode{ClientID: c.ID, Scope: "read", Interval: 5, ExpiresAt: now + 600}, now); err != nil {
			t.Fatal(err)
		}
		if err := ts.s.store.setPassword(ctx, "alice", mustHash(t, stolen)); err != nil {
			t.Fatal(err)
		}
		if err := ts.s.store.decideDevice(ctx, dev, sess, alice.ID, 1, "pwd", true, []string{"read"}, nil, now); !errors.Is(err, errSessionEnded) {
			t.Fatalf("decideDevice in an ended session = %v; want errSessionEnded", err)
		}
		if _, d, err := ts.s.store.pendingDevice(ctx, user, now); err != nil || d.Status != devicePending {
			t.Fatalf("the device code after the refused approval: %v %+v; want still pending", err, d)
		}
	})
}

// mustHash hashes a password with the tests' fast iteration count.
func mustHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := hashPassword(pw, testIter)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// serveFor runs the real server (serve) on db until the test ends and returns its log once it
// has started (the line about the setup URL, or the users, is written last).
func serveFor(t *testing.T, db string) *syncBuffer {
	t.Helper()
	cfg := defaultConfig()
	cfg.DB = db
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	cfg.Issuer = "http://" + cfg.Addr
	cfg.KeyGen = cachedKey
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)), ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitFor(t, func() bool {
		return strings.Contains(logs.String(), "oauthd listening") && strings.Contains(logs.String(), "one-time") // the setup URL line (the temp path may contain "setup")
	})
	return logs
}

// modeOf is a file's permission bits (os.ModeIrregular when it does not exist).
func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		return os.ModeIrregular
	}
	return fi.Mode().Perm()
}

// TestAuditFileModes (11.5): under the usual umask 022 every file oauthd writes — database,
// -wal, -shm, setup URL, backup — is 0600. Before, SQLite created the database 0644 and the
// -wal and -shm with it, and the backup 0644: any local account could read the signing keys
// (PKCS #8) and forge ID tokens, and copy every password hash.
func TestAuditFileModes(t *testing.T) {
	withUmask(t, 0o022)
	dir := t.TempDir()
	db := filepath.Join(dir, "oauthd.db")

	// The setup URL file: another account created it first and keeps it open, or put a link there.
	planted, err := os.OpenFile(db+"-setup-url", os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer planted.Close()
	logs := serveFor(t, db)
	for _, p := range []string{db, db + "-wal", db + "-shm", db + "-setup-url"} {
		if m := modeOf(t, p); m != 0o600 {
			t.Errorf("%s is %04o; want 0600", filepath.Base(p), m)
		}
	}
	if leaked, _ := io.ReadAll(planted); len(leaked) != 0 {
		t.Errorf("the setup URL was written into a file another account held open: %q", leaked)
	}
	if url, _ := os.ReadFile(db + "-setup-url"); !strings.Contains(string(url), "/setup?token=") {
		t.Errorf("the setup URL file = %q", url)
	}
	if strings.Contains(logs.String(), "chmod") {
		t.Errorf("a warning about the modes of files oauthd created itself:\n%s", logs)
	}

	t.Run("backup", func(t *testing.T) {
		bdir := t.TempDir()
		dst := filepath.Join(bdir, "backup.db")
		if code, _, errs := cli(t, nil, "", "backup", "-db", db, dst); code != 0 {
			t.Fatalf("backup = %d %s", code, errs)
		}
		if m := modeOf(t, dst); m != 0o600 {
			t.Errorf("the backup is %04o; want 0600", m)
		}
		if ents, _ := os.ReadDir(bdir); len(ents) != 1 {
			t.Errorf("the backup directory holds %d files; want the backup alone", len(ents))
		}
		// Never written through a link planted where the backup goes.
		target := filepath.Join(bdir, "elsewhere")
		os.WriteFile(target, nil, 0o644)
		os.Symlink(target, filepath.Join(bdir, "linked.db"))
		if code, _, errs := cli(t, nil, "", "backup", "-db", db, filepath.Join(bdir, "linked.db")); code != 1 || !strings.Contains(errs, "already exists") {
			t.Errorf("backup onto a symbolic link = %d %s; want refused", code, errs)
		}
		if b, _ := os.ReadFile(target); len(b) != 0 {
			t.Error("the backup was written through a symbolic link")
		}
	})
	t.Run("a database the CLI creates", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "cli.db")
		if code, _, errs := cli(t, map[string]string{"OAUTHD_DB": other}, "", "registration-token", "create"); code != 0 {
			t.Fatalf("registration-token create = %d %s", code, errs)
		}
		if m := modeOf(t, other); m != 0o600 {
			t.Errorf("a database created by the CLI is %04o; want 0600", m)
		}
	})
	t.Run("setup URL file replaced by a symbolic link", func(t *testing.T) {
		sdir := t.TempDir()
		sdb := filepath.Join(sdir, "oauthd.db")
		target := filepath.Join(t.TempDir(), "readable-by-the-attacker")
		if err := os.WriteFile(target, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, sdb+"-setup-url"); err != nil {
			t.Fatal(err)
		}
		serveFor(t, sdb)
		if b, _ := os.ReadFile(target); len(b) != 0 {
			t.Errorf("the setup URL was written through a symbolic link: %q", b)
		}
		if fi, err := os.Lstat(sdb + "-setup-url"); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
			t.Errorf("the setup URL file: %v %v; want a regular 0600 file", err, fi.Mode())
		}
	})
}

// TestAuditLooseDatabaseWarning (11.5): a database that others can read or write is named at
// start with the fix; oauthd does not change the operator's file.
func TestAuditLooseDatabaseWarning(t *testing.T) {
	withUmask(t, 0o022)
	dir := t.TempDir()
	db := filepath.Join(dir, "oauthd.db")
	st, err := openStore(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if err := os.Chmod(db, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := serveFor(t, db).String()
	want := "the database file " + db + " is readable by other accounts (mode 0644): it holds the ID token signing keys and every password hash, " +
		"so anyone who can read it can forge ID tokens; fix it with: chmod 600 " + db
	if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, want) {
		t.Errorf("no warning %q in:\n%s", want, logs)
	}
	if !strings.Contains(logs, "fix it with: chmod 600 "+db+"-wal") {
		t.Errorf("no warning about the -wal file SQLite made with the database's mode:\n%s", logs)
	}
	if m := modeOf(t, db); m != 0o644 {
		t.Errorf("the operator's database is now %04o; want it left 0644", m)
	}
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{{0o600, ""}, {0o640, "is readable by other accounts (mode 0640)"}, {0o602, "is writable by other accounts (mode 0602)"},
		{0o666, "is readable and writable by other accounts (mode 0666)"}} {
		os.Chmod(db, tc.mode)
		got := strings.Join(fileModeWarnings(db), "\n")
		if tc.want == "" && strings.Contains(got, db+" is") || tc.want != "" && !strings.Contains(got, db+" "+tc.want) {
			t.Errorf("fileModeWarnings at %04o = %q; want %q", tc.mode, got, tc.want)
		}
	}
	os.Chmod(dir, 0o777)
	defer os.Chmod(dir, 0o700)
	if got := strings.Join(fileModeWarnings(db), "\n"); !strings.Contains(got, "the database directory "+dir+" is writable by every account (mode 0777)") {
		t.Errorf("fileModeWarnings with a world-writable directory = %q", got)
	}
}

// TestAuditReview: the review's findings (issue 11, "Also"), each attack through the handler.
func TestAuditReview(t *testing.T) {
	t.Run("an admin's reset voids the links made with the stolen admin password", func(t *testing.T) {
		ts := newTestServer(t)
		ts.addAdmin("root", "the admin password")
		ts.addUser("bob", "bob's password!")
		atk := ts.browser("root", "the admin password")
		atk.login()
		ap := atk.get("/admin/users")
		invite := inputValue(atk.post("/admin/users/invite", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}, "admin": {"on"}}).Body, "link")
		bobReset := resetLink(t, atk, "bob")
		if code, _, errs := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "root's new password\n", "user", "passwd", "root"); code != 0 {
			t.Fatalf("user passwd root = %d %s", code, errs)
		}
		for what, link := range map[string]string{"admin invitation": invite, "reset link for bob": bobReset} {
			if p := ts.browser("", "").get(link); p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "Link not valid") {
				t.Errorf("the %s made with the stolen password, after the admin's reset = %d; want 403 Link not valid", what, p.StatusCode)
			}
		}
	})

	t.Run("consent answered after the redirect URI was removed", func(t *testing.T) {
		ts := newTestServer(t)
		ts.addUser("alice", "correct horse battery")
		c := ts.addClient(false, "read", "https://app.example/cb", "https://compromised.example/cb")
		b := ts.browser("alice", "correct horse battery")
		q := codeRequest(c, nil)
		q.Set("redirect_uri", "https://compromised.example/cb")
		pages := map[string]page{"allow": b.authorize(q, ""), "deny": b.authorize(q, "")} // two tabs open
		c.RedirectURIs = []string{"https://app.example/cb"}                               // the administrator removes the compromised URI
		if err := ts.s.store.updateClient(t.Context(), c.client); err != nil {
			t.Fatal(err)
		}
		for decision, p := range pages {
			r := b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {decision}})
			if r.StatusCode != http.StatusBadRequest || r.Header.Get("Location") != "" || !strings.Contains(r.Body, "redirect URI changed while the page was open") {
				t.Fatalf("%s after the URI was removed = %d %q; want the 400 page, no redirect", decision, r.StatusCode, r.Header.Get("Location"))
			}
		}
		var n int
		ts.s.store.db.QueryRow("SELECT count(*) FROM codes").Scan(&n)
		if n != 0 {
			t.Fatalf("%d codes issued for the removed redirect URI", n)
		}
	})

	t.Run("consent answered after the client was deleted", func(t *testing.T) {
		ts := newTestServer(t)
		ts.addUser("alice", "correct horse battery")
		c := ts.addClient(false, "read", "https://app.example/cb")
		b := ts.browser("alice", "correct horse battery")
		p := b.authorize(codeRequest(c, nil), "")
		if err := ts.s.store.deleteClient(t.Context(), c.ID); err != nil {
			t.Fatal(err)
		}
		r := b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}})
		if r.StatusCode != http.StatusBadRequest || r.Header.Get("Location") != "" || !strings.Contains(r.Body, "This application was removed") {
			t.Fatalf("consent for a deleted client = %d %q; want the 400 page, no redirect", r.StatusCode, r.Header.Get("Location"))
		}
	})

	t.Run("oauthd check sends the client secret only under the URL given", func(t *testing.T) {
		var leaked atomic.Int32
		collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				leaked.Add(1)
			}
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": errInvalidRequest})
		}))
		defer collector.Close()
		var fake *httptest.Server
		fake = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"issuer": fake.URL, "jwks_uri": fake.URL + "/jwks",
				"token_endpoint": collector.URL + "/token", "introspection_endpoint": fake.URL + "/introspect", "revocation_endpoint": fake.URL + "/revoke"})
		}))
		defer fake.Close()
		code, out, _ := cli(t, nil, "", "check", "-client", "my-client", "-secret", "the secret", fake.URL)
		if code != 1 || !strings.Contains(out, "FAIL  client: the token_endpoint \""+collector.URL+"/token\" is not under "+fake.URL+": the client secret is not sent there") {
			t.Errorf("check against a discovery document naming another host = %d\n%s", code, out)
		}
		if leaked.Load() != 0 {
			t.Errorf("the client secret was sent to another host %d times", leaked.Load())
		}
	})

	t.Run("concurrent open registrations stay within the limit", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
		meta := map[string]any{"client_name": "Flood", "redirect_uris": []string{"https://flood.example/cb"}, "token_endpoint_auth_method": "none"}
		statuses := make(chan int, 40)
		start := make(chan struct{})
		for range cap(statuses) {
			go func() {
				<-start
				statuses <- ts.postJSON("POST", "/oauth/register", "", meta).Status
			}()
		}
		close(start)
		count := map[int]int{}
		for range cap(statuses) {
			count[<-statuses]++
		}
		if count[http.StatusCreated] != 20 || count[http.StatusTooManyRequests] != 20 {
			t.Fatalf("40 concurrent open registrations from one address: %v; want 20 created, 20 refused with 429", count)
		}
	})
}
