package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSecurityBattery walks the attacks an authorization server meets, each asserting the
// exact answer. Several are also covered where their feature is tested; here they stand
// together, as a checklist.
func TestSecurityBattery(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	a := ts.addClient(false, "read", "https://app.example/cb", "https://app.example/other")
	other := ts.addClient(false, "read", "https://other.example/cb")
	b := ts.browser("alice", "correct horse battery")
	b.login()

	noRedirectTo := func(t *testing.T, p page, host string) {
		t.Helper()
		if loc := p.Header.Get("Location"); strings.Contains(loc, host) {
			t.Fatalf("redirected to %s", loc)
		}
	}
	jsonErr := func(t *testing.T, r tokenCall, status int, code string) {
		t.Helper()
		if r.Status != status || str(r.JSON["error"]) != code || str(r.JSON["error_description"]) == "" {
			t.Fatalf("= %d %s; want %d %s with a description", r.Status, r.Raw, status, code)
		}
	}

	t.Run("open redirect through login next", func(t *testing.T) {
		for _, next := range []string{"https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)", "http:evil.example"} {
			fresh := ts.browser("alice", "correct horse battery")
			lp := fresh.get("/login?next=" + url.QueryEscape(next))
			p := fresh.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"},
				"csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {next}})
			if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/" {
				t.Fatalf("next=%q: %d Location %q; want 303 to /", next, p.StatusCode, p.Header.Get("Location"))
			}
		}
	})
	t.Run("open redirect through logout", func(t *testing.T) {
		p := b.get("/oauth/logout?client_id=" + url.QueryEscape(a.ID) + "&post_logout_redirect_uri=" + url.QueryEscape("https://evil.example/bye"))
		if p.StatusCode != http.StatusBadRequest {
			t.Fatalf("unregistered post_logout_redirect_uri = %d", p.StatusCode)
		}
		noRedirectTo(t, p, "evil.example")
	})
	t.Run("open redirect through authorize", func(t *testing.T) {
		q := codeRequest(a, nil)
		for _, uri := range []string{"https://evil.example/cb", "https://app.example/cb/../evil", "https://app.example/cb?x=1", "https://app.example.evil.example/cb", "https://APP.example/cb"} {
			q.Set("redirect_uri", uri)
			p := b.get("/oauth/authorize?" + q.Encode())
			if p.StatusCode != http.StatusBadRequest || !strings.Contains(p.Body, "redirect") {
				t.Fatalf("redirect_uri %s = %d; want the 400 error page", uri, p.StatusCode)
			}
			noRedirectTo(t, p, "evil")
		}
	})

	code, ver := b.getCode(a)
	t.Run("code used by another client", func(t *testing.T) {
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {ver},
			"redirect_uri": {"https://app.example/cb"}}, other.ID, other.Secret)
		jsonErr(t, r, 400, errInvalidGrant)
	})
	t.Run("code with a different redirect_uri", func(t *testing.T) {
		code, ver := b.getCode(a)
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {ver},
			"redirect_uri": {"https://app.example/other"}}, a.ID, a.Secret)
		jsonErr(t, r, 400, errInvalidGrant)
	})
	t.Run("PKCE downgrade: challenge sent, verifier omitted", func(t *testing.T) {
		code, _ := b.getCode(a)
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
			"redirect_uri": {"https://app.example/cb"}}, a.ID, a.Secret)
		jsonErr(t, r, 400, errInvalidGrant)
	})
	t.Run("PKCE downgrade: no challenge, verifier sent", func(t *testing.T) {
		q := codeRequest(a, nil)
		q.Del("code_challenge")
		q.Del("code_challenge_method")
		p := b.authorize(q, "allow")
		loc, _ := url.Parse(p.Header.Get("Location"))
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
			"redirect_uri": {"https://app.example/cb"}, "code_verifier": {strings.Repeat("v", 43)}}, a.ID, a.Secret)
		jsonErr(t, r, 400, errInvalidGrant)
	})

	fresh := ts.addClient(false, "read", "https://fresh.example/cb") // no remembered consent yet
	consentPage := func() page {
		p := b.authorize(codeRequest(fresh, nil), "")
		if !strings.Contains(p.Body, `name="decision"`) {
			t.Fatalf("no consent page: %d", p.StatusCode)
		}
		return p
	}
	t.Run("replayed consent POST", func(t *testing.T) {
		p := consentPage()
		form := url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}}
		if first := b.post("/oauth/consent", form); first.StatusCode != http.StatusSeeOther || !strings.HasPrefix(first.Header.Get("Location"), "https://fresh.example/cb?code=") {
			t.Fatalf("consent = %d %s", first.StatusCode, first.Header.Get("Location"))
		}
		again := b.post("/oauth/consent", form)
		if again.StatusCode != http.StatusBadRequest || again.Header.Get("Location") != "" {
			t.Fatalf("the same consent again = %d %s; want the 400 page, no second code", again.StatusCode, again.Header.Get("Location"))
		}
	})
	t.Run("consent POST from another origin", func(t *testing.T) {
		ts.s.store.exec(t.Context(), "DELETE FROM consents")
		p := consentPage()
		req, _ := http.NewRequest("POST", ts.url+"/oauth/consent", strings.NewReader(url.Values{"csrf_token": {hidden(p.Body, "csrf_token")},
			"request": {hidden(p.Body, "request")}, "decision": {"allow"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		r := b.do(req)
		if r.StatusCode != http.StatusForbidden || r.Header.Get("Location") != "" {
			t.Fatalf("cross-origin consent = %d %s", r.StatusCode, r.Header.Get("Location"))
		}
	})
	t.Run("authorization request with repeated parameters", func(t *testing.T) {
		q := codeRequest(a, nil)
		raw := q.Encode() + "&client_id=" + url.QueryEscape(other.ID)
		if p := b.get("/oauth/authorize?" + raw); p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" {
			t.Fatalf("repeated client_id = %d %s; want the 400 page", p.StatusCode, p.Header.Get("Location"))
		}
		raw = q.Encode() + "&scope=read"
		p := b.get("/oauth/authorize?" + raw)
		loc, _ := url.Parse(p.Header.Get("Location"))
		if p.StatusCode != http.StatusFound || loc.Query().Get("error") != errInvalidRequest || loc.Query().Get("state") != q.Get("state") ||
			!strings.HasPrefix(p.Header.Get("Location"), "https://app.example/cb?") {
			t.Fatalf("repeated scope = %d %s; want invalid_request at the registered redirect URI", p.StatusCode, p.Header.Get("Location"))
		}
	})
	t.Run("SQL metacharacters in every field", func(t *testing.T) {
		sqlish := []string{"' OR '1'='1", "\"; DROP TABLE tokens; --", "x') UNION SELECT hash FROM tokens --", "%' --", "\x00"}
		for _, v := range sqlish {
			jsonErr(t, ts.postToken("/oauth/token", url.Values{"grant_type": {"client_credentials"}}, v, v), 401, errInvalidClient)
			jsonErr(t, ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {v}}, a.ID, a.Secret), 400, errInvalidGrant)
			jsonErr(t, ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {v}, "code_verifier": {strings.Repeat("v", 43)}}, a.ID, a.Secret), 400, errInvalidGrant)
			if r := ts.postToken("/oauth/introspect", url.Values{"token": {v}}, a.ID, a.Secret); r.Status != 200 || r.JSON["active"] != false {
				t.Fatalf("introspect %q = %d %s", v, r.Status, r.Raw)
			}
			if p := ts.loginAs(v, v, ""); p.StatusCode != http.StatusUnauthorized && p.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("login as %q = %d", v, p.StatusCode)
			}
			q := codeRequest(a, nil)
			q.Set("scope", v)
			q.Set("state", v)
			p := b.get("/oauth/authorize?" + q.Encode())
			loc, _ := url.Parse(p.Header.Get("Location"))
			if loc == nil || loc.Query().Get("error") != errInvalidScope || loc.Query().Get("state") != v {
				t.Fatalf("scope %q = %d %s; want invalid_scope with the state echoed", v, p.StatusCode, p.Header.Get("Location"))
			}
		}
		var n int
		if err := ts.s.store.db.QueryRow("SELECT count(*) FROM tokens").Scan(&n); err != nil {
			t.Fatalf("the tokens table after the battery: %v", err)
		}
	})
	t.Run("1 MB bodies", func(t *testing.T) {
		big := strings.Repeat("a", 1<<20)
		jsonErr(t, ts.postToken("/oauth/token", url.Values{"grant_type": {"client_credentials"}, "pad": {big}}, a.ID, a.Secret), 400, errInvalidRequest)
		jsonErr(t, ts.postToken("/oauth/introspect", url.Values{"token": {big}}, a.ID, a.Secret), 400, errInvalidRequest)
		lp := b.get("/login")
		p := b.post("/login", url.Values{"username": {big}, "password": {"x"}, "csrf_token": {hidden(lp.Body, "csrf_token")}})
		if p.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("a 1 MB login form = %d; want 413", p.StatusCode)
		}
		req, _ := http.NewRequest("POST", ts.url+"/oauth/register", strings.NewReader(`{"client_name":"`+big+`"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
			t.Fatalf("a 1 MB registration = %d", resp.StatusCode)
		}
	})
	t.Run("refresh token replay after rotation", func(t *testing.T) {
		code, ver := b.getCode(a)
		first := ts.exchange(a, code, ver)
		rt := str(first.JSON["refresh_token"])
		next := ts.refresh(a, rt)
		if next.Status != 200 {
			t.Fatalf("rotation = %d %s", next.Status, next.Raw)
		}
		ts.clock.Advance(ts.s.cfg.RefreshGrace + 1e9)
		jsonErr(t, ts.refresh(a, rt), 400, errInvalidGrant)
		if ts.active(a, str(next.JSON["access_token"])) {
			t.Fatal("the successor is still active after the replay")
		}
		jsonErr(t, ts.refresh(a, str(next.JSON["refresh_token"])), 400, errInvalidGrant)
	})
	t.Run("access token in the URI query", func(t *testing.T) {
		code, ver := b.getCode(a)
		tok := str(ts.exchange(a, code, ver).JSON["access_token"])
		resp, err := http.Get(ts.url + "/oauth/userinfo?access_token=" + url.QueryEscape(tok))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_request"`) {
			t.Fatalf("userinfo?access_token= = %d %q; want 400 invalid_request", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		r := ts.postToken("/oauth/introspect?access_token="+url.QueryEscape(tok), url.Values{"token": {tok}}, a.ID, a.Secret)
		jsonErr(t, r, 400, errInvalidRequest)
	})
}

// TestAuditLog: grants, refusals (JSON and pages) and administrator actions leave one
// structured line each, saying who, which client and the outcome, and never a secret.
func TestAuditLog(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.addAdmin("root", "the admin password")
	c := ts.addClient(false, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)
	ts.postToken("/oauth/token", url.Values{"grant_type": {"client_credentials"}}, c.ID, "not the secret")
	b.get("/oauth/authorize?response_type=code&client_id=" + url.QueryEscape(c.ID) + "&redirect_uri=https%3A%2F%2Fevil.example%2F")
	adm := ts.browser("root", "the admin password")
	adm.login()
	ap := adm.get("/admin/users")
	adm.post("/admin/users/alice/disable", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}})

	logs := ts.logs.String()
	for _, want := range [][]string{
		{`msg=login`, `user=alice`, `from=127.0.0.1`},
		{`msg="authorization code issued"`, `client_id=` + c.ID, `user=alice`},
		{`msg="tokens issued"`, `grant_type=authorization_code`, `client_id=` + c.ID},
		{`msg="client authentication failed"`, `client_id=` + c.ID, `known_client=true`},
		{`msg="request refused"`, `path=/oauth/token`, `error=invalid_client`},
		{`msg="page refused"`, `path=/oauth/authorize`, `status=400`},
		{`msg="user disabled"`, `user=alice`, `admin=root`},
	} {
		found := false
		for _, line := range strings.Split(logs, "\n") {
			all := true
			for _, w := range want {
				all = all && strings.Contains(line, w)
			}
			found = found || all
		}
		if !found {
			t.Errorf("no log line with %q in:\n%s", want, logs)
		}
	}
	for _, secret := range []string{c.Secret, "not the secret", code, ver, str(tok.JSON["access_token"]), str(tok.JSON["refresh_token"]),
		"correct horse battery", "the admin password"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a secret reached the log: %q", secret)
		}
	}
}

// TestAuditFindings carries out each attack of the security audit (issue 11) through the real
// handler or the real command line, and asserts the exact refusal.
func TestAuditFindings(t *testing.T) {
	t.Run("1 self-registration cannot grant itself machine access", func(t *testing.T) {
		ts := newTestServer(t)
		ts.clock.t = time.Now().Truncate(time.Second) // the CLI stamps tokens with real time
		ts.addServiceClient("backup")                 // an admin's machine client with a scope worth stealing
		tok := ts.registrationToken(5)
		machine := map[string]any{"client_name": "evil", "grant_types": []string{"client_credentials"},
			"response_types": []string{}, "token_endpoint_auth_method": "client_secret_basic", "scope": "backup"}
		refused := func(t *testing.T, r tokenCall, value string) {
			t.Helper()
			if r.Status != 400 || str(r.JSON["error"]) != errInvalidClientMetadata || !strings.Contains(str(r.JSON["error_description"]), value) {
				t.Fatalf("= %d %s; want 400 invalid_client_metadata naming %q", r.Status, r.Raw, value)
			}
		}
		refused(t, ts.postJSON("POST", "/oauth/register", tok, machine), "backup")
		machine["scope"] = ""
		refused(t, ts.postJSON("POST", "/oauth/register", tok, machine), "client_credentials")

		// A token that lists the grant and the scope opens them, and only them.
		code, out, errs := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "", "registration-token", "create", "-scope", "backup", "-grant", "client_credentials")
		var v map[string]any
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v["scope"] != "backup" {
			t.Fatalf("registration-token create -scope -grant = %d %q %q", code, out, errs)
		}
		machine["scope"] = "backup"
		r := ts.postJSON("POST", "/oauth/register", str(v["registration_token"]), machine)
		if r.Status != 201 {
			t.Fatalf("register with a token that opens client_credentials/backup = %d %s", r.Status, r.Raw)
		}
		if cc := ts.postToken("/oauth/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"backup"}}, str(r.JSON["client_id"]), str(r.JSON["client_secret"])); cc.Status != 200 {
			t.Fatalf("client_credentials of a vetted registration = %d %s", cc.Status, cc.Raw)
		}

		// RFC 7592 PUT cannot add the grant or the scope later.
		user := map[string]any{"client_name": "app", "redirect_uris": []string{"https://app.example/cb"}, "token_endpoint_auth_method": "client_secret_basic", "scope": "openid"}
		r = ts.postJSON("POST", "/oauth/register", tok, user)
		if r.Status != 201 {
			t.Fatalf("register = %d %s", r.Status, r.Raw)
		}
		id, rat := str(r.JSON["client_id"]), str(r.JSON["registration_access_token"])
		put := func(m map[string]any) tokenCall {
			m["client_id"] = id
			return ts.postJSON("PUT", "/oauth/register/"+id, rat, m)
		}
		refused(t, put(map[string]any{"client_name": "app", "redirect_uris": []string{"https://app.example/cb"},
			"grant_types": []string{"authorization_code", "client_credentials"}, "scope": "openid"}), "client_credentials")
		refused(t, put(map[string]any{"client_name": "app", "redirect_uris": []string{"https://app.example/cb"}, "scope": "openid backup"}), "backup")

		// -registration-scopes opens a scope to every registration.
		ts2 := newTestServer(t, func(c *config) { c.Registration = registrationOpen; c.RegistrationScopes = "notes.read" })
		pub := map[string]any{"client_name": "mcp", "redirect_uris": []string{"http://127.0.0.1:1/cb"}, "token_endpoint_auth_method": "none", "scope": "openid notes.read"}
		if r := ts2.postJSON("POST", "/oauth/register", "", pub); r.Status != 201 || r.JSON["scope"] != "notes.read openid" && r.JSON["scope"] != "openid notes.read" {
			t.Fatalf("register with an opened scope = %d %s", r.Status, r.Raw)
		}
		pub["scope"] = "notes.write"
		refused(t, ts2.postJSON("POST", "/oauth/register", "", pub), "notes.write")

		// The CLI refuses an unknown grant.
		if code, _, errs := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "", "registration-token", "create", "-grant", "password"); code != 2 || !strings.Contains(errs, "password") {
			t.Errorf("registration-token create -grant password = %d %q", code, errs)
		}
	})

	// burst runs n attempts at once and counts the answers by status.
	burst := func(n int, attempt func(i int) int) map[int]int {
		var mu sync.Mutex
		var wg sync.WaitGroup
		got := map[int]int{}
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st := attempt(i)
				mu.Lock()
				got[st]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return got
	}

	t.Run("2 sign-in backoff cannot be raced", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.TrustedProxy = "127.0.0.1/32, ::1" })
		ts.addUser("alice", "correct horse battery")
		ts.s.guard.hashWait = time.Minute // no attempt is turned away for want of a hashing slot
		got := burst(50, func(i int) int {
			return ts.loginAs("alice", "wrong "+strconv.Itoa(i), "203.0.113."+strconv.Itoa(i+1)).StatusCode
		})
		if got[http.StatusUnauthorized] > 5 || got[http.StatusUnauthorized]+got[http.StatusTooManyRequests] != 50 {
			t.Fatalf("50 concurrent guesses at one account: %v; want at most 5 checked (401), the rest 429", got)
		}
		// The per-address limit: one address, 50 accounts at once.
		got = burst(50, func(i int) int { return ts.loginAs("user"+strconv.Itoa(i), "guess", "198.51.100.7").StatusCode })
		if got[http.StatusUnauthorized] > 20 || got[http.StatusUnauthorized]+got[http.StatusTooManyRequests] != 50 {
			t.Fatalf("50 concurrent guesses from one address: %v; want at most 20 checked", got)
		}
		// One-time links: 50 wrong tokens at once from one address, 10 checked at most.
		got = burst(50, func(i int) int {
			return ts.browser("", "").get([]string{"/invite?token=", "/reset?token="}[i%2] + newSecret()).StatusCode
		})
		if got[http.StatusForbidden] > 10 || got[http.StatusForbidden]+got[http.StatusTooManyRequests] != 50 {
			t.Fatalf("50 concurrent wrong links: %v; want at most 10 checked (403)", got)
		}
		// Device user codes: 50 wrong codes at once from one session, 5 checked at most.
		ts.addClient(true, "read", "http://127.0.0.1/cb")
		b := ts.browser("alice", "correct horse battery")
		ts.clock.Advance(time.Hour) // alice's backoff from the burst above is forgotten
		b.login()
		dp := b.get("/device")
		got = burst(50, func(int) int {
			return b.post("/device", url.Values{"csrf_token": {hidden(dp.Body, "csrf_token")}, "user_code": {"BCDF-GHJK"}}).StatusCode
		})
		if got[http.StatusBadRequest] > 5 || got[http.StatusBadRequest]+got[http.StatusTooManyRequests] != 50 {
			t.Fatalf("50 concurrent wrong user codes: %v; want at most 5 checked (400)", got)
		}
	})

	t.Run("2 second factors and password confirmations cannot be raced", func(t *testing.T) {
		ts := newTestServer(t)
		ts.addUser("alice", "correct horse battery")
		ts.s.guard.hashWait = time.Minute
		owner := ts.browser("alice", "correct horse battery")
		owner.login()
		owner.enrolTOTP()
		ts.clock.Advance(time.Minute)
		// Someone with the password opens ten second-factor steps (five attempts each), then
		// guesses codes on all of them at once: the account's backoff still lets five through.
		steps := make([]*browser, 10)
		for i := range steps {
			steps[i] = ts.browser("alice", "correct horse battery")
			if p := steps[i].login(); p.Header.Get("Location") != "/login/factor" {
				t.Fatalf("login %d = %d %q", i, p.StatusCode, p.Header.Get("Location"))
			}
		}
		got := burst(50, func(i int) int { return steps[i%10].factorPost("totp", fmt.Sprintf("%06d", i)).StatusCode })
		if got[http.StatusUnauthorized] > 5 || got[http.StatusUnauthorized]+got[http.StatusTooManyRequests] != 50 {
			t.Fatalf("50 concurrent codes on 10 steps: %v; want at most 5 checked (401), the rest 429", got)
		}
		// A stolen session guessing the password on a confirmation page, 30 at once. Every
		// hashing slot is taken until 25 answers came back: a limit that counted only after the
		// hash would let all 30 wait for a slot (and end in "Busy", not the account's backoff).
		ts.clock.Advance(time.Hour) // the backoff above is forgotten
		ts.s.guard.hashWait = 10 * time.Second
		for range cap(ts.s.guard.hashing) {
			ts.s.guard.hashing <- struct{}{}
		}
		var answered, backedOff atomic.Int32
		go func() {
			for answered.Load() < 25 {
				time.Sleep(time.Millisecond)
			}
			for range cap(ts.s.guard.hashing) {
				<-ts.s.guard.hashing
			}
		}()
		cp := owner.get("/account/security/recovery")
		got = burst(30, func(i int) int {
			p := owner.post("/account/security/recovery", url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}, "password": {"guess " + strconv.Itoa(i)}})
			if strings.Contains(p.Body, "Too many failed attempts") {
				backedOff.Add(1)
			}
			answered.Add(1)
			return p.StatusCode
		})
		if got[http.StatusUnauthorized] > 5 || got[http.StatusUnauthorized]+got[http.StatusTooManyRequests] != 30 || backedOff.Load() < 25 {
			t.Fatalf("30 concurrent confirmation passwords: %v (%d in the backoff); want at most 5 checked (401), the rest the account's 429", got, backedOff.Load())
		}
	})

	t.Run("3 guessing cannot lock out the rightful owner", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.TrustedProxy = "127.0.0.1/32, ::1" })
		ts.addUser("alice", "correct horse battery")
		c := ts.addClient(false, "read", "https://app.example/cb")
		for range 30 {
			ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, c.ID, "guessed secret")
		}
		for _, path := range []string{"/oauth/introspect", "/oauth/token"} {
			if r := ts.postToken(path, url.Values{"token": {"x"}, "grant_type": {"client_credentials"}}, c.ID, c.Secret); r.Status == http.StatusTooManyRequests || r.Status == http.StatusUnauthorized {
				t.Fatalf("%s with the right secret after 30 bad ones = %d %s", path, r.Status, r.Raw)
			}
		}

		// Alice's browser signed in before: it carries a device cookie.
		owner := ts.browser("alice", "correct horse battery")
		owner.login()
		owner.post("/logout", url.Values{"csrf_token": {hidden(owner.get("/").Body, "csrf_token")}})
		for i := range 12 { // an attacker hammers the account from many addresses
			ts.loginAs("alice", "guess", "192.0.2."+strconv.Itoa(i+1))
		}
		if p := ts.loginAs("alice", "correct horse battery", "192.0.2.99"); p.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a browser without a device cookie during the lockout = %d; want 429", p.StatusCode)
		}
		lp := owner.get("/login")
		signIn := func(pass string) page {
			return owner.post("/login", url.Values{"username": {"alice"}, "password": {pass}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {"/"}})
		}
		if p := signIn("correct horse battery"); p.StatusCode != http.StatusSeeOther {
			t.Fatalf("the owner's browser (device cookie) during the lockout = %d; want 303", p.StatusCode)
		}
		// The device cookie is limited on its own: a stolen one cannot guess without bound.
		for range 5 {
			signIn("guess")
		}
		if p := signIn("correct horse battery"); p.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a device cookie after 5 failures of its own = %d; want 429", p.StatusCode)
		}
		// A forged device cookie counts for nothing.
		forged := ts.browser("alice", "correct horse battery")
		u, _ := url.Parse(ts.url)
		forged.c.Jar.SetCookies(u, []*http.Cookie{{Name: ts.s.deviceCookieName("alice"), Value: "AAAA." + strconv.FormatInt(ts.s.now().Add(time.Hour).Unix(), 10) + ".AAAA"}})
		flp := forged.get("/login")
		if p := forged.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}, "csrf_token": {hidden(flp.Body, "csrf_token")}, "next": {"/"}}); p.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a forged device cookie during the lockout = %d; want 429", p.StatusCode)
		}
	})

	t.Run("8 IPv6 addresses are grouped by /64", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.TrustedProxy = "127.0.0.1/32, ::1" })
		ts.addUser("alice", "correct horse battery")
		for i := range 20 { // 20 accounts, each from another address of one /64
			ts.loginAs("user"+strconv.Itoa(i), "guess", fmt.Sprintf("2001:db8:1:2::%x", i+1))
		}
		if p := ts.loginAs("alice", "correct horse battery", "2001:db8:1:2:ffff::1"); p.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("another address of the same /64 = %d; want 429", p.StatusCode)
		}
		if p := ts.loginAs("alice", "correct horse battery", "2001:db8:1:3::1"); p.StatusCode != http.StatusSeeOther {
			t.Fatalf("the next /64 = %d; want 303", p.StatusCode)
		}
		for in, want := range map[string]string{"2001:db8::1": "2001:db8::/64", "::ffff:192.0.2.1": "::ffff:192.0.2.1", "192.0.2.1": "192.0.2.1", "fe80::1%eth0": "fe80::/64"} {
			if got := addrKey(in); got != want {
				t.Errorf("addrKey(%q) = %q; want %q", in, got, want)
			}
		}
	})

	t.Run("6 no open redirector through self-registered clients", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
		ts.addUser("alice", "correct horse battery")
		r := ts.postJSON("POST", "/oauth/register", "", map[string]any{"client_name": "evil", "redirect_uris": []string{"https://evil.example/cb"},
			"post_logout_redirect_uris": []string{"https://evil.example/"}, "token_endpoint_auth_method": "none", "scope": "openid"})
		if r.Status != 201 {
			t.Fatalf("register = %d %s", r.Status, r.Raw)
		}
		evil := testClient{}
		evil.client, _ = ts.s.store.clientByID(context.Background(), str(r.JSON["client_id"]))
		rat := str(r.JSON["registration_access_token"])
		anon := ts.browser("", "")
		for name, q := range map[string]url.Values{
			"bad response_type": {"client_id": {evil.ID}, "redirect_uri": {"https://evil.example/cb"}, "response_type": {"token"}},
			"no PKCE":           {"client_id": {evil.ID}, "redirect_uri": {"https://evil.example/cb"}, "response_type": {"code"}},
			"prompt=none":       codeRequest(evil, nil),
		} {
			if name == "prompt=none" {
				q.Set("prompt", "none")
			}
			p := anon.get("/oauth/authorize?" + q.Encode())
			if p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" || !strings.Contains(p.Body, "Request refused") {
				t.Fatalf("%s for an anonymous visitor = %d Location %q; want the 400 error page", name, p.StatusCode, p.Header.Get("Location"))
			}
		}
		// Signed in but never approved that app: still the page (a link is as easy to send to
		// a signed-in user as to an anonymous one). Once approved, errors go back to it.
		b := ts.browser("alice", "correct horse battery")
		b.login()
		q := codeRequest(evil, nil)
		q.Set("scope", "openid admin")
		if p := b.get("/oauth/authorize?" + q.Encode()); p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" {
			t.Fatalf("an error for a signed-in user who never approved the app = %d %q", p.StatusCode, p.Header.Get("Location"))
		}
		ok := codeRequest(evil, nil)
		ok.Set("scope", "openid")
		b.authorize(ok, "allow")
		if p := b.get("/oauth/authorize?" + q.Encode()); p.StatusCode != http.StatusFound || !strings.HasPrefix(p.Header.Get("Location"), "https://evil.example/cb?error=invalid_scope") {
			t.Fatalf("an error for a user who approved the app = %d %q", p.StatusCode, p.Header.Get("Location"))
		}
		// An RFC 7592 PUT that moves the redirect URIs forgets the users' approvals.
		au, _ := ts.s.store.userByName(context.Background(), "alice")
		aliceID := au.ID
		ok.Set("redirect_uri", "https://evil.example/cb")
		if got := str(ts.postJSON("PUT", "/oauth/register/"+evil.ID, rat, map[string]any{"client_id": evil.ID, "client_name": "evil",
			"redirect_uris": []string{"https://evil.example/other"}, "token_endpoint_auth_method": "none", "scope": "openid"}).JSON["client_id"]); got != evil.ID {
			t.Fatal("PUT failed")
		}
		if _, err := ts.s.store.consentScopes(context.Background(), aliceID, evil.ID); err == nil {
			t.Error("consents survive a change of redirect URIs")
		}
		ts.postJSON("PUT", "/oauth/register/"+evil.ID, rat, map[string]any{"client_id": evil.ID, "client_name": "evil",
			"redirect_uris": []string{"https://evil.example/cb"}, "post_logout_redirect_uris": []string{"https://evil.example/"}, "token_endpoint_auth_method": "none", "scope": "openid"})
		// Logout: without a hint the signed-out page offers a link, naming the host.
		p := anon.get("/oauth/logout?client_id=" + url.QueryEscape(evil.ID) + "&post_logout_redirect_uri=" + url.QueryEscape("https://evil.example/"))
		if p.StatusCode != http.StatusOK || p.Header.Get("Location") != "" || !strings.Contains(p.Body, `href="https://evil.example/"`) || !strings.Contains(p.Body, "Continue to evil.example") {
			t.Fatalf("logout through an unvetted client without a hint = %d %q", p.StatusCode, p.Header.Get("Location"))
		}
		// With a valid id_token_hint issued to that client it redirects.
		q = codeRequest(evil, nil)
		q.Set("scope", "openid")
		code, ver := b.getCode(evil)
		tok := ts.exchange(evil, code, ver)
		hint := str(tok.JSON["id_token"])
		if hint == "" {
			t.Fatalf("no ID token: %s", tok.Raw)
		}
		p = anon.get("/oauth/logout?" + url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://evil.example/"}}.Encode())
		if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "https://evil.example/" {
			t.Fatalf("logout with a valid hint = %d %q", p.StatusCode, p.Header.Get("Location"))
		}
		// Vetting: the CLI and an admin on the pages vet; a user's own app on the pages does not.
		ts.addAdmin("root", "the admin password")
		for who, want := range map[string]bool{"alice": false, "root": true} {
			pw := map[string]string{"alice": "correct horse battery", "root": "the admin password"}[who]
			u := ts.browser(who, pw)
			u.login()
			fp := u.get("/oauth/client/register")
			res := u.post("/oauth/client/register", url.Values{"csrf_token": {hidden(fp.Body, "csrf_token")}, "name": {who + " app"}, "redirect_uris": {"https://" + who + ".example/cb"}, "type": {"confidential"}, "grant_code": {"on"}})
			if res.StatusCode != http.StatusCreated {
				t.Fatalf("%s registers an app = %d", who, res.StatusCode)
			}
			cs, _ := ts.s.store.listClients(context.Background())
			for _, c := range cs {
				if c.Name == who+" app" && c.Vetted != want {
					t.Errorf("an app registered on the pages by %s: vetted %v; want %v", who, c.Vetted, want)
				}
			}
		}
		if code, out, errs := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "", "client", "add", "-name", "cli", "-redirect-uri", "https://cli.example/cb"); code != 0 {
			t.Fatalf("client add = %d %s %s", code, out, errs)
		} else {
			var v map[string]any
			json.Unmarshal([]byte(out), &v)
			if c, _ := ts.s.store.clientByID(context.Background(), str(v["client_id"])); !c.Vetted {
				t.Error("a client added with the CLI is not vetted")
			}
		}
	})

	t.Run("7 device authorization is bounded", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.TrustedProxy = "127.0.0.1/32, ::1" })
		dev := ts.addClient(true, "read", "http://127.0.0.1/cb")
		dev.GrantTypes = []string{grantDeviceCode}
		if err := ts.s.store.updateClient(context.Background(), dev.client); err != nil {
			t.Fatal(err)
		}
		start := func(from string) tokenCall {
			req, _ := http.NewRequest("POST", ts.url+"/oauth/device_authorization", strings.NewReader(url.Values{"client_id": {dev.ID}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("X-Forwarded-For", from)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			return decodeCall(resp)
		}
		got := burst(40, func(int) int { return start("203.0.113.5").Status })
		if got[200] != 30 || got[429] != 10 {
			t.Fatalf("40 device authorizations from one address at once: %v; want 30 stored, 10 refused", got)
		}
		if r := start("203.0.113.5"); r.Status != 429 || r.Header.Get("Retry-After") == "" || str(r.JSON["error"]) != "slow_down" || str(r.JSON["error_description"]) == "" {
			t.Fatalf("one more = %d %s", r.Status, r.Raw)
		}
		// Per client: at most maxPendingDevicePerClient live ones, from however many addresses.
		for i := 0; i < maxPendingDevicePerClient; i++ {
			start(fmt.Sprintf("198.51.%d.%d", i/200, i%200+1))
		}
		var n int
		ts.s.store.db.QueryRow("SELECT count(*) FROM device_codes WHERE client_id = ?", dev.ID).Scan(&n)
		if n != maxPendingDevicePerClient {
			t.Fatalf("%d pending device authorizations for one client; want the bound %d", n, maxPendingDevicePerClient)
		}
		if r := start("192.0.2.77"); r.Status != 429 || r.Header.Get("Retry-After") == "" {
			t.Fatalf("past the per-client bound = %d %s", r.Status, r.Raw)
		}
		// After they expire, the client can start again.
		ts.clock.Advance(deviceCodeTTL + time.Second)
		if r := start("192.0.2.77"); r.Status != 200 {
			t.Fatalf("after the pending ones expired = %d %s", r.Status, r.Raw)
		}
		// In total: fill the table up to the bound with other clients' rows.
		other := ts.addClient(true, "read", "http://127.0.0.1/cb")
		tx, _ := ts.s.store.db.Begin()
		for i := 0; i < maxPendingDevice; i++ {
			if _, err := tx.Exec("INSERT INTO device_codes(hash, user_code_hash, client_id, scope, poll_interval, expires_at) VALUES(?, ?, ?, '', 5, ?)",
				hashSecret(fmt.Sprint("d", i)), hashSecret(fmt.Sprint("u", i)), other.ID, ts.s.now().Add(time.Minute).Unix()); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if r := start("192.0.2.78"); r.Status != 429 {
			t.Fatalf("past the total bound = %d %s", r.Status, r.Raw)
		}
	})
}

// ---- Issue 11, "Security audit findings": points 4, 5 and 9 and the review (each attack
// carried out through the real handler or the real binary, asserting the exact refusal).

// refusedReplay asserts the answer to a refresh token replayed outside the grace: the grant
// is revoked, successor included.
func refusedReplay(t *testing.T, ts *testServer, c testClient, r, next tokenCall) {
	t.Helper()
	if r.Status != 400 || str(r.JSON["error"]) != errInvalidGrant ||
		str(r.JSON["error_description"]) != "the refresh token was already used; every token of this grant is revoked" {
		t.Fatalf("replay = %d %s; want 400 invalid_grant, grant revoked", r.Status, r.Raw)
	}
	if ts.active(c, str(next.JSON["access_token"])) || ts.active(c, str(next.JSON["refresh_token"])) {
		t.Fatal("the successor is still active after the replay revoked its grant")
	}
}
