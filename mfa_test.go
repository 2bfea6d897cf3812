package main

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAMRJoin: methods combine into ordered lists, and mfa appears for a password with
// something held.
func TestAMRJoin(t *testing.T) {
	for _, tt := range []struct {
		in   []string
		want string
	}{
		{[]string{"pwd"}, "pwd"},
		{[]string{"pwd", "otp"}, "pwd otp mfa"},
		{[]string{"pwd", "swk user"}, "pwd swk user mfa"},
		{[]string{"hwk user", ""}, "hwk user"},
		{[]string{"hwk user", "mfa"}, "hwk user mfa"},
		{[]string{"swk user", "otp"}, "otp swk user"}, // two things held are one kind of factor
		{[]string{"pwd otp mfa", "otp"}, "pwd otp mfa"},
	} {
		if got := amrJoin(tt.in...); got != tt.want {
			t.Errorf("amrJoin(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	if acrOf("pwd") != acrPwd || acrOf("pwd otp mfa") != acrMFA {
		t.Error("acrOf")
	}
	for _, tt := range []struct {
		v    string
		want bool
	}{{"", false}, {acrMFA, true}, {acrPwd + " " + acrMFA, false}, {"urn:other " + acrMFA, true}, {"urn:other", false}} {
		if acrWantsMFA(tt.v) != tt.want {
			t.Errorf("acrWantsMFA(%q) != %v", tt.v, tt.want)
		}
	}
}

// codeFlowClaims runs the code flow for c after the browser is signed in and returns the ID
// token's claims.
func (b *browser) codeFlowClaims(c testClient, extra url.Values) map[string]any {
	b.t.Helper()
	var v string
	q := codeRequest(c, &v)
	q.Set("scope", "openid")
	for k, vs := range extra {
		q[k] = vs
	}
	p := b.authorize(q, "allow")
	loc, _ := url.Parse(p.Header.Get("Location"))
	if loc == nil || loc.Query().Get("code") == "" {
		b.t.Fatalf("no code: %d %s %s", p.StatusCode, p.Header.Get("Location"), p.Body)
	}
	r := b.ts.exchange(c, loc.Query().Get("code"), v)
	if r.Status != 200 {
		b.t.Fatalf("exchange = %d %s", r.Status, r.Raw)
	}
	return jwtClaims(b.t, str(r.JSON["id_token"]))
}

// TestMFARequired: with -mfa required a user without a factor goes from the password to
// the enrolment page, reaches nothing until a factor is added, and is then signed in with
// two factors; a session from before the policy steps up at the next authorization.
func TestMFARequired(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.MFA = mfaRequired })
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "openid", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	var v string
	q := codeRequest(c, &v)
	p := b.get("/oauth/authorize?" + q.Encode())
	lp := b.get(p.Header.Get("Location"))
	p = b.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
	if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/account/security" {
		t.Fatalf("password under -mfa required = %d %s; want the enrolment page", p.StatusCode, p.Header.Get("Location"))
	}
	if b.signedIn() {
		t.Fatal("a session before enrolment")
	}
	if p := b.get("/oauth/authorize?" + q.Encode()); !strings.HasPrefix(p.Header.Get("Location"), "/login") {
		t.Fatalf("authorize before enrolment = %d %s", p.StatusCode, p.Header.Get("Location"))
	}
	sec := b.get("/account/security")
	if !strings.Contains(sec.Body, "requires a second factor") || strings.Contains(sec.Body, "Recovery codes") || strings.Contains(sec.Body, `href="/account"`) {
		t.Fatalf("enrolment page: %s", sec.Body)
	}
	_, done := b.enrolTOTP()
	if len(codeRE.FindAllString(done.Body, -1)) != 10 || !strings.Contains(done.Body, `href="/oauth/authorize?`) {
		t.Fatalf("after enrolment: %s", done.Body)
	}
	sess, ok := ts.s.session(sessionRequest(t, b))
	if !ok || sess.AMR != "pwd otp mfa" {
		t.Fatalf("session after enrolment: %v %q", ok, sess.AMR)
	}
	if cl := b.codeFlowClaims(c, nil); cl["acr"] != acrMFA {
		t.Errorf("acr = %v", cl["acr"])
	}

	// bob signed in before the policy (a session with the password alone).
	ts.s.cfg.MFA = mfaOptional
	ts.addUser("bob", "battery staple horse")
	bb := ts.browser("bob", "battery staple horse")
	bb.login()
	ts.s.cfg.MFA = mfaRequired
	p = bb.get("/oauth/authorize?" + codeRequest(c, nil).Encode())
	if loc := p.Header.Get("Location"); !strings.HasPrefix(loc, "/account/security?") || !strings.Contains(loc, "need=mfa") {
		t.Fatalf("old session under -mfa required = %d %s; want the security page", p.StatusCode, loc)
	}
	if sp := bb.get(p.Header.Get("Location")); !strings.Contains(sp.Body, "needs a second factor") {
		t.Errorf("security page with need=mfa: %s", sp.Body)
	}
}

// TestMFAAdmins: -mfa admins sends administrators to enrol and lets others in.
func TestMFAAdmins(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.MFA = mfaAdmins })
	ts.addAdmin("root", "correct horse battery")
	ts.addUser("alice", "correct horse battery")
	if p := ts.browser("root", "correct horse battery").login(); p.Header.Get("Location") != "/account/security" {
		t.Errorf("admin = %s; want enrolment", p.Header.Get("Location"))
	}
	if p := ts.browser("alice", "correct horse battery").login(); p.Header.Get("Location") != "/" {
		t.Errorf("user = %s; want signed in", p.Header.Get("Location"))
	}
}

// TestMFAOff: -mfa off neither asks for nor offers TOTP.
func TestMFAOff(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	b.enrolTOTP()
	ts.s.cfg.MFA = mfaOff
	nb := ts.browser("alice", "correct horse battery")
	if p := nb.login(); p.Header.Get("Location") != "/" {
		t.Fatalf("login under -mfa off = %s; want no second step", p.Header.Get("Location"))
	}
	if sec := nb.get("/account/security"); strings.Contains(sec.Body, "authenticator app") {
		t.Errorf("-mfa off offers TOTP: %s", sec.Body)
	}
	sec := nb.get("/account/security")
	if p := nb.post("/account/security/totp", url.Values{"csrf_token": {hidden(sec.Body, "csrf_token")}}); p.StatusCode != http.StatusForbidden {
		t.Errorf("TOTP enrolment under -mfa off = %d", p.StatusCode)
	}
}

// TestClientRequireMFA: a client with require_mfa steps up a one-factor session (to the
// second-factor page when the user has one, to a new sign-in when the session has no
// password, to enrolment when the user has none); prompt=none gets login_required.
func TestClientRequireMFA(t *testing.T) {
	ts := passkeyTS(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "openid", "https://app.example/cb")
	strict := ts.addClient(false, "openid", "https://strict.example/cb")
	on := true
	if err := (clientSpec{Name: "Strict", Scope: "openid", RedirectURIs: strict.RedirectURIs, RequireMFA: &on}).apply(&strict.client); err != nil {
		t.Fatal(err)
	}
	ts.s.store.updateClient(context.Background(), strict.client)

	// alice has TOTP but signed in while -mfa was off: her session proved the password only.
	b := ts.browser("alice", "correct horse battery")
	b.login()
	secret, _ := b.enrolTOTP()
	ts.s.cfg.MFA = mfaOff
	b = ts.browser("alice", "correct horse battery")
	b.login()
	ts.s.cfg.MFA = mfaOptional
	ts.clock.Advance(time.Minute)
	if cl := b.codeFlowClaims(c, nil); cl["acr"] != acrPwd || !sameAMR(cl["amr"], "pwd") {
		t.Errorf("ordinary client: amr %v acr %v", cl["amr"], cl["acr"])
	}
	q := codeRequest(strict, nil)
	q.Set("prompt", "none")
	if p := b.get("/oauth/authorize?" + q.Encode()); !strings.Contains(p.Header.Get("Location"), "error=login_required") {
		t.Errorf("prompt=none with require_mfa = %s", p.Header.Get("Location"))
	}
	old, _ := ts.s.session(sessionRequest(t, b))
	var v string
	q = codeRequest(strict, &v)
	q.Set("scope", "openid")
	p := b.get("/oauth/authorize?" + q.Encode())
	if p.Header.Get("Location") != "/login/factor" {
		t.Fatalf("require_mfa with a one-factor session = %d %s; want the second-factor step", p.StatusCode, p.Header.Get("Location"))
	}
	if fp := b.get("/login/factor"); !strings.Contains(fp.Body, "needs a second factor as well") {
		t.Errorf("step-up page: %s", fp.Body)
	}
	p = b.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6))
	if p.StatusCode != http.StatusSeeOther || !strings.HasPrefix(p.Header.Get("Location"), "/oauth/authorize?") {
		t.Fatalf("step-up = %d %s %s", p.StatusCode, p.Header.Get("Location"), p.Body)
	}
	if _, ok := ts.s.store.sessionByHash(t.Context(), old.Hash, ts.clock.Now().Unix()); ok == nil {
		t.Error("the stepped-up session was not replaced")
	}
	p = b.authorize(q, "allow")
	loc, _ := url.Parse(p.Header.Get("Location"))
	r := ts.exchange(strict, loc.Query().Get("code"), v)
	if cl := jwtClaims(t, str(r.JSON["id_token"])); cl["acr"] != acrMFA || cl["auth_time"] != float64(ts.clock.Now().Unix()) {
		t.Errorf("after step-up: acr %v auth_time %v", cl["acr"], cl["auth_time"])
	}

	// A passkey without user verification is one factor, and no password: sign in again.
	k := newAuthenticator(t, coseES256)
	k.flags = flagUP
	b.addPasskey(k, "key", waOpts{})
	pb := ts.browser("alice", "correct horse battery")
	pb.passkeyLogin(k, "/", waOpts{})
	p = pb.get("/oauth/authorize?" + codeRequest(strict, nil).Encode())
	if loc := p.Header.Get("Location"); !strings.HasPrefix(loc, "/login?") || !strings.Contains(loc, "username=alice") {
		t.Fatalf("require_mfa with a passkey-only session = %d %s; want a sign-in", p.StatusCode, loc)
	}
	// With user verification it is two factors in one.
	k.flags = flagUP | flagUV
	ub := ts.browser("alice", "correct horse battery")
	if p := ub.passkeyLogin(k, "/", waOpts{}); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("UV passkey = %d", p.StatusCode)
	}
	if cl := ub.codeFlowClaims(strict, nil); cl["acr"] != acrMFA || !sameAMR(cl["amr"], "hwk", "user", "mfa") {
		t.Errorf("UV passkey: amr %v acr %v", cl["amr"], cl["acr"])
	}

	// A user without any factor is sent to add one.
	ts.addUser("carol", "correct horse battery")
	cb := ts.browser("carol", "correct horse battery")
	cb.login()
	p = cb.get("/oauth/authorize?" + codeRequest(strict, nil).Encode())
	if loc := p.Header.Get("Location"); !strings.HasPrefix(loc, "/account/security?") {
		t.Fatalf("require_mfa without factors = %s", loc)
	}
}

// TestACRValuesAndMaxAge: acr_values asking for urn:oauthd:mfa steps up; one preferring
// urn:oauthd:pwd does not; max_age past the last step signs in again, both factors.
func TestACRValuesAndMaxAge(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "openid", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	secret, _ := b.enrolTOTP()
	ts.s.cfg.MFA = mfaOff
	b = ts.browser("alice", "correct horse battery")
	b.login()
	ts.s.cfg.MFA = mfaOptional
	ts.clock.Advance(time.Minute)
	if cl := b.codeFlowClaims(c, url.Values{"acr_values": {acrPwd + " " + acrMFA}}); cl["acr"] != acrPwd {
		t.Errorf("acr_values preferring pwd: acr %v", cl["acr"])
	}
	q := codeRequest(c, nil)
	q.Set("acr_values", acrMFA)
	if p := b.get("/oauth/authorize?" + q.Encode()); p.Header.Get("Location") != "/login/factor" {
		t.Fatalf("acr_values=%s = %s; want a step-up", acrMFA, p.Header.Get("Location"))
	}
	b.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6))
	authTime := ts.clock.Now().Unix()
	if cl := b.codeFlowClaims(c, url.Values{"acr_values": {acrMFA}}); cl["acr"] != acrMFA || cl["auth_time"] != float64(authTime) {
		t.Errorf("after the step-up: acr %v auth_time %v", cl["acr"], cl["auth_time"])
	}
	// max_age: a sign-in older than that means both steps again, and a new auth_time.
	ts.clock.Advance(2 * time.Minute)
	q = codeRequest(c, nil)
	q.Set("max_age", "60")
	p := b.get("/oauth/authorize?" + q.Encode())
	if !strings.HasPrefix(p.Header.Get("Location"), "/login?") {
		t.Fatalf("max_age = %s", p.Header.Get("Location"))
	}
	lp := b.get(p.Header.Get("Location"))
	p = b.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
	if p.Header.Get("Location") != "/login/factor" {
		t.Fatalf("max_age sign-in skipped the second factor: %s", p.Header.Get("Location"))
	}
	b.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6))
	if cl := b.codeFlowClaims(c, url.Values{"max_age": {"60"}}); cl["auth_time"] != float64(ts.clock.Now().Unix()) || cl["acr"] != acrMFA {
		t.Errorf("after max_age: auth_time %v (want %d) acr %v", cl["auth_time"], ts.clock.Now().Unix(), cl["acr"])
	}
	// Discovery lists both values.
	resp, err := http.Get(ts.url + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	doc := decodeCall(resp)
	resp.Body.Close()
	if l, _ := doc.JSON["acr_values_supported"].([]any); len(l) != 2 || l[0] != acrPwd || l[1] != acrMFA {
		t.Errorf("acr_values_supported = %v", doc.JSON["acr_values_supported"])
	}
}

// TestDeviceRequireMFA: approving a device for a require_mfa client steps up first.
func TestDeviceRequireMFA(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	on := true
	dev, _ := clientSpec{Name: "CLI", Public: true, Scope: "read", GrantTypes: []string{"device_code"}, RequireMFA: &on}.build()
	ts.s.store.createClient(context.Background(), dev)
	r := ts.postToken("/oauth/device_authorization", url.Values{"client_id": {dev.ID}, "scope": {"read"}}, "", "")
	uc := str(r.JSON["user_code"])
	b := ts.browser("alice", "correct horse battery")
	b.login()
	p := b.get("/device")
	p = b.post("/device", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "user_code": {uc}})
	if loc := p.Header.Get("Location"); !strings.HasPrefix(loc, "/account/security?") || !strings.Contains(loc, url.QueryEscape("/device?user_code=")) {
		t.Fatalf("device approval for a require_mfa client = %d %s", p.StatusCode, loc)
	}
}

// TestMFAOperators: `oauthd user mfa` lists the factors, `user mfa-reset` and the admin
// page's button remove them and end the sessions (the admin's name is logged); `client add
// -require-mfa` is listed; only administrators see and set the client form's box.
func TestMFAOperators(t *testing.T) {
	ts := passkeyTS(t)
	ts.addAdmin("root", "correct horse battery")
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	b.addPasskey(newAuthenticator(t, coseEdDSA), "yubikey", waOpts{})
	b.enrolTOTP()
	db := ts.s.cfg.DB
	code, out, errOut := cli(t, nil, "", "user", "mfa", "-db", db, "alice")
	if code != 0 || !strings.Contains(out, `"type":"passkey"`) || !strings.Contains(out, `"name":"yubikey"`) || !strings.Contains(out, `"type":"totp"`) ||
		!strings.Contains(out, `"type":"recovery_codes","left":10`) {
		t.Fatalf("user mfa = %d %s %s", code, out, errOut)
	}
	if strings.Contains(out, "secret") {
		t.Errorf("user mfa prints a secret: %s", out)
	}
	if code, _, _ := cli(t, nil, "", "user", "mfa", "-db", db, "nobody"); code != 1 {
		t.Errorf("user mfa of an unknown user = %d", code)
	}
	code, _, errOut = cli(t, nil, "", "user", "mfa-reset", "-db", db, "alice")
	if code != 0 || !strings.Contains(errOut, "sessions are ended") {
		t.Fatalf("user mfa-reset = %d %s", code, errOut)
	}
	if b.signedIn() {
		t.Error("mfa-reset left a session")
	}
	if _, out, _ := cli(t, nil, "", "user", "mfa", "-db", db, "alice"); strings.TrimSpace(out) != "" {
		t.Errorf("after mfa-reset: %s", out)
	}

	// The admin page.
	b = ts.browser("alice", "correct horse battery")
	b.login()
	b.enrolTOTP()
	ab := ts.browser("root", "correct horse battery")
	ab.login()
	ap := ab.get("/admin/users")
	if !strings.Contains(ap.Body, "/admin/users/alice/mfa-reset") {
		t.Fatalf("admin page offers no reset: %s", ap.Body)
	}
	p := ab.post("/admin/users/alice/mfa-reset", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}})
	if p.StatusCode != 200 || !strings.Contains(p.Body, "second factors of alice are removed") {
		t.Fatalf("admin reset = %d %s", p.StatusCode, p.Body)
	}
	if !strings.Contains(ts.logs.String(), `msg="second factors reset by an administrator" user=alice admin=root`) {
		t.Error("the admin reset is not logged with the admin's name")
	}
	if b.signedIn() {
		t.Error("the admin reset left a session")
	}

	// Clients.
	code, out, _ = cli(t, nil, "", "client", "add", "-db", db, "-name", "Vault", "-redirect-uri", "https://vault.example/cb", "-require-mfa")
	if code != 0 {
		t.Fatal(out)
	}
	if _, list, _ := cli(t, nil, "", "client", "list", "-db", db); !strings.Contains(list, `"name":"Vault"`) || !strings.Contains(list, `"require_mfa":true`) {
		t.Errorf("client list: %s", list)
	}
	ep := ab.get("/oauth/client/register")
	if !strings.Contains(ep.Body, `name="require_mfa"`) {
		t.Error("the admin's client form has no require_mfa box")
	}
	if up := b.get("/oauth/client/register"); strings.Contains(up.Body, "require_mfa") {
		t.Error("a user's client form has the require_mfa box")
	}
}

// TestFactorsEndSessions: disabling a user or changing the password ends the pending
// second-factor steps as well as the sessions; removing TOTP ends the other sessions.
func TestFactorsEndSessions(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	secret, _ := b.enrolTOTP()
	ts.clock.Advance(time.Minute)
	other := ts.browser("alice", "correct horse battery")
	other.loginTOTP(secret)
	if !other.signedIn() {
		t.Fatal("not signed in")
	}
	// Removing TOTP (confirmed with the password) ends the other session, keeps this one.
	cp := b.get("/account/security/totp/delete")
	if p := b.post("/account/security/totp/delete", url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}, "password": {"correct horse battery"}}); p.StatusCode != 200 {
		t.Fatalf("remove TOTP = %d %s", p.StatusCode, p.Body)
	}
	if other.signedIn() || !b.signedIn() {
		t.Errorf("after removing TOTP: other signed in %v, this one %v", other.signedIn(), b.signedIn())
	}
	// A pending step dies with a password change and with disabling.
	b.enrolTOTP()
	ts.clock.Advance(time.Minute)
	for _, change := range []func(){
		func() {
			ts.s.store.setPassword(context.Background(), "alice", ts.addUser("tmp"+newSecret()[:6], "correct horse battery").PasswordHash)
		},
		func() { ts.s.store.setDisabled(context.Background(), "alice", true) },
	} {
		x := ts.browser("alice", "correct horse battery")
		if p := x.login(); p.Header.Get("Location") != "/login/factor" {
			t.Fatalf("login = %s", p.Header.Get("Location"))
		}
		change()
		var n int
		ts.s.store.db.QueryRow("SELECT count(*) FROM mfa_pending WHERE user_id = (SELECT id FROM users WHERE username = 'alice')").Scan(&n)
		if n != 0 {
			t.Errorf("%d pending steps left after the change", n)
		}
		if p := x.factorPost("totp", totpAt(secret, totpStep(ts.clock.Now()), 6)); p.StatusCode != http.StatusForbidden {
			t.Errorf("a pending step after the change = %d; want it gone", p.StatusCode)
		}
	}
}

// TestMigrationMFA: a database of schema 4 gains the new columns; its sessions read as
// password sign-ins and its tokens introspect without amr.
func TestMigrationMFA(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v4.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range migrations[:4] {
		if _, err := db.Exec(m); err != nil {
			t.Fatalf("migration %d: %v", i+1, err)
		}
	}
	for _, q := range []string{"PRAGMA user_version = 4",
		"INSERT INTO users(id, sub, username, password_hash, created_at) VALUES(1, 's-1', 'alice', 'x', 1)",
		"INSERT INTO sessions(hash, user_id, auth_time, expires_at) VALUES(x'01', 1, 5, 9999999999)"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	st, err := openStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := st.sessionByHash(context.Background(), []byte{1}, 10)
	if err != nil || s.AMR != "pwd" || s.AuthTime != 5 {
		t.Fatalf("old session = %+v, %v", s, err)
	}
	var n int
	if err := st.db.QueryRow("SELECT count(*) FROM passkeys").Scan(&n); err != nil {
		t.Fatal(err)
	}
	// An introspection answer without amr writes none.
	if got := string((introspection{Active: true, Iss: "x"}).appendJSON(nil)); strings.Contains(got, "amr") || strings.Contains(got, "acr") {
		t.Errorf("introspection without amr = %s", got)
	}
}

// TestMFAFlag: -mfa takes four values, also from OAUTHD_MFA; anything else is a usage error.
func TestMFAFlag(t *testing.T) {
	cfg, _, err := serveConfig(nil, io.Discard, func(k string) string { return map[string]string{"OAUTHD_MFA": "admins"}[k] })
	if err != nil || cfg.MFA != mfaAdmins {
		t.Errorf("OAUTHD_MFA=admins: %q, %v", cfg.MFA, err)
	}
	if cfg, _, _ := serveConfig(nil, io.Discard, func(string) string { return "" }); cfg.MFA != mfaOptional {
		t.Errorf("default -mfa = %q; want optional", cfg.MFA)
	}
	if code, _, errOut := cli(t, nil, "", "-mfa", "sometimes"); code != 2 || !strings.Contains(errOut, "want off, optional, required or admins") {
		t.Errorf("-mfa sometimes = %d %s", code, errOut)
	}
}
