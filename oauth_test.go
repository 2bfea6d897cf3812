package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCodeFlow runs the whole flow: authorize, login, consent, exchange, introspect, refresh,
// revoke, and a remembered consent on the second round.
func TestCodeFlow(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read write", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")

	var verifier string
	q := codeRequest(c, &verifier)
	p := b.authorize(q, "")
	if p.StatusCode != 200 || !strings.Contains(p.Body, "Test App") || !strings.Contains(p.Body, "app.example") ||
		!strings.Contains(p.Body, "A test application") || !strings.Contains(p.Body, "<code>read</code>") {
		t.Fatalf("consent page = %d %q", p.StatusCode, p.Body)
	}
	p = b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}})
	loc, _ := url.Parse(p.Header.Get("Location"))
	if p.StatusCode != http.StatusSeeOther || loc.Host != "app.example" || loc.Query().Get("state") != q.Get("state") ||
		loc.Query().Get("iss") != ts.url || loc.Query().Get("code") == "" {
		t.Fatalf("consent POST = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	r := ts.exchange(c, loc.Query().Get("code"), verifier)
	if r.Status != 200 || str(r.JSON["token_type"]) != "Bearer" || r.JSON["expires_in"] != float64(3600) ||
		str(r.JSON["scope"]) != "read write" || str(r.JSON["access_token"]) == "" || str(r.JSON["refresh_token"]) == "" {
		t.Fatalf("exchange = %d %s", r.Status, r.Raw)
	}
	if got := r.Header.Get("Cache-Control"); got != "no-store" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("token response headers: Cache-Control %q, Content-Type %q", got, r.Header.Get("Content-Type"))
	}
	at, rt := str(r.JSON["access_token"]), str(r.JSON["refresh_token"])
	if len(at) < 43 || len(rt) < 43 {
		t.Errorf("tokens are shorter than 256 bits: %q %q", at, rt)
	}

	in := ts.postToken("/oauth/introspect", url.Values{"token": {at}, "token_type_hint": {"access_token"}}, c.ID, c.Secret)
	want := map[string]any{"active": true, "scope": "read write", "client_id": c.ID, "username": "alice",
		"token_type": "Bearer", "iss": ts.url, "exp": float64(ts.clock.Now().Add(time.Hour).Unix()), "iat": float64(ts.clock.Now().Unix())}
	for k, v := range want {
		if in.JSON[k] != v {
			t.Errorf("introspect[%s] = %v; want %v", k, in.JSON[k], v)
		}
	}
	if str(in.JSON["sub"]) == "" {
		t.Errorf("introspect: no sub in %s", in.Raw)
	}

	r2 := ts.refresh(c, rt)
	if r2.Status != 200 || str(r2.JSON["refresh_token"]) == rt || str(r2.JSON["access_token"]) == at {
		t.Fatalf("refresh = %d %s", r2.Status, r2.Raw)
	}
	if !ts.active(c, str(r2.JSON["access_token"])) || ts.active(c, rt) {
		t.Errorf("after refresh: new access token active=%v, old refresh token active=%v", ts.active(c, str(r2.JSON["access_token"])), ts.active(c, rt))
	}

	// The consent is remembered: the second request goes straight back with a code.
	p = b.authorize(codeRequest(c, nil), "")
	if p.StatusCode != http.StatusFound || !strings.Contains(p.Header.Get("Location"), "code=") {
		t.Fatalf("remembered consent: %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	// prompt=consent shows the page again.
	q = codeRequest(c, nil)
	q.Set("prompt", "consent")
	if p = b.authorize(q, ""); !strings.Contains(p.Body, `name="decision"`) {
		t.Fatalf("prompt=consent did not show the consent page: %d", p.StatusCode)
	}

	if rv := ts.postToken("/oauth/revoke", url.Values{"token": {str(r2.JSON["refresh_token"])}}, c.ID, c.Secret); rv.Status != 200 {
		t.Fatalf("revoke = %d %s", rv.Status, rv.Raw)
	}
	if ts.active(c, str(r2.JSON["access_token"])) || ts.active(c, at) {
		t.Errorf("revoking the refresh token left the grant's access tokens active")
	}
}

// TestAuthorizeErrors covers every authorization error: the first two kinds are pages that
// never redirect, the rest redirect with error, error_description, state and iss.
func TestAuthorizeErrors(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read write", "https://app.example/cb", "https://app.example/other")
	pub := ts.addClient(true, "read", "http://127.0.0.1/cb")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	good := func(edit func(url.Values)) url.Values {
		q := codeRequest(c, nil)
		q.Set("state", "xyz")
		edit(q)
		return q
	}
	tests := []struct {
		name      string
		query     string
		wantPage  int    // status of an error page (no redirect)
		wantError string // error in the redirect
	}{
		{"no client_id", good(func(q url.Values) { q.Del("client_id") }).Encode(), 400, ""},
		{"unknown client", good(func(q url.Values) { q.Set("client_id", "nope") }).Encode(), 400, ""},
		{"repeated client_id", good(func(url.Values) {}).Encode() + "&client_id=" + c.ID, 400, ""},
		{"unregistered redirect", good(func(q url.Values) { q.Set("redirect_uri", "https://evil.example/cb") }).Encode(), 400, ""},
		{"redirect prefix", good(func(q url.Values) { q.Set("redirect_uri", "https://app.example/cb/x") }).Encode(), 400, ""},
		{"redirect with extra query", good(func(q url.Values) { q.Set("redirect_uri", "https://app.example/cb?x=1") }).Encode(), 400, ""},
		{"redirect omitted, two registered", good(func(q url.Values) { q.Del("redirect_uri") }).Encode(), 400, ""},
		{"repeated redirect_uri", good(func(url.Values) {}).Encode() + "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb", 400, ""},
		{"no response_type", good(func(q url.Values) { q.Del("response_type") }).Encode(), 0, errInvalidRequest},
		{"implicit", good(func(q url.Values) { q.Set("response_type", "token") }).Encode(), 0, errUnsupportedResponseType},
		{"scope not allowed", good(func(q url.Values) { q.Set("scope", "read admin") }).Encode(), 0, errInvalidScope},
		{"scope bad chars", good(func(q url.Values) { q.Set("scope", `read "x"`) }).Encode(), 0, errInvalidScope},
		{"plain PKCE", good(func(q url.Values) { q.Set("code_challenge_method", "plain") }).Encode(), 0, errInvalidRequest},
		{"PKCE without method", good(func(q url.Values) { q.Del("code_challenge_method") }).Encode(), 0, errInvalidRequest},
		{"method without challenge", good(func(q url.Values) { q.Del("code_challenge") }).Encode(), 0, errInvalidRequest},
		{"malformed challenge", good(func(q url.Values) { q.Set("code_challenge", "short") }).Encode(), 0, errInvalidRequest},
		{"repeated scope", good(func(url.Values) {}).Encode() + "&scope=read", 0, errInvalidRequest},
		{"repeated state", good(func(url.Values) {}).Encode() + "&state=xyz", 0, errInvalidRequest},
		{"unknown prompt", good(func(q url.Values) { q.Set("prompt", "bogus") }).Encode(), 0, errInvalidRequest},
		{"prompt none with consent", good(func(q url.Values) { q.Set("prompt", "none consent") }).Encode(), 0, errInvalidRequest},
		{"prompt none without consent", good(func(q url.Values) { q.Set("prompt", "none") }).Encode(), 0, errConsentRequired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := b.get("/oauth/authorize?" + tt.query)
			loc := p.Header.Get("Location")
			if tt.wantPage != 0 {
				if p.StatusCode != tt.wantPage || loc != "" || !strings.Contains(p.Header.Get("Content-Type"), "text/html") {
					t.Fatalf("handleAuthorize(%s) = %d Location %q; want a %d page and no redirect", tt.name, p.StatusCode, loc, tt.wantPage)
				}
				return
			}
			u, err := url.Parse(loc)
			if p.StatusCode != http.StatusFound || err != nil || u.Host != "app.example" {
				t.Fatalf("handleAuthorize(%s) = %d %q; want a redirect to the client", tt.name, p.StatusCode, loc)
			}
			v := u.Query()
			if v.Get("error") != tt.wantError || v.Get("error_description") == "" || v.Get("state") != "xyz" || v.Get("iss") != ts.url || v.Has("code") {
				t.Errorf("handleAuthorize(%s) redirected to %q; want error=%s with description, state and iss", tt.name, loc, tt.wantError)
			}
		})
	}

	t.Run("public client without PKCE", func(t *testing.T) {
		q := codeRequest(pub, nil)
		q.Del("code_challenge")
		q.Del("code_challenge_method")
		p := b.get("/oauth/authorize?" + q.Encode())
		if u, _ := url.Parse(p.Header.Get("Location")); u == nil || u.Query().Get("error") != errInvalidRequest {
			t.Fatalf("public client without PKCE: %d %q; want invalid_request", p.StatusCode, p.Header.Get("Location"))
		}
	})
	t.Run("prompt none logged out", func(t *testing.T) {
		q := good(func(q url.Values) { q.Set("prompt", "none") })
		p := ts.browser("", "").get("/oauth/authorize?" + q.Encode())
		if u, _ := url.Parse(p.Header.Get("Location")); u == nil || u.Query().Get("error") != errLoginRequired {
			t.Fatalf("prompt=none logged out: %d %q; want login_required", p.StatusCode, p.Header.Get("Location"))
		}
	})
	t.Run("prompt login re-authenticates once", func(t *testing.T) {
		for _, fresh := range []bool{false, true} {
			br := b
			if fresh {
				br = ts.browser("alice", "correct horse battery")
			}
			q := good(func(q url.Values) { q.Set("prompt", "login consent") })
			p := br.get("/oauth/authorize?" + q.Encode())
			loc, _ := url.Parse(p.Header.Get("Location"))
			if loc == nil || loc.Path != "/login" || strings.Contains(loc.Query().Get("next"), "login") {
				t.Fatalf("prompt=login (fresh=%v) = %d %q; want the login page, coming back without prompt=login", fresh, p.StatusCode, p.Header.Get("Location"))
			}
			if p := br.authorize(q, ""); !strings.Contains(p.Body, `name="decision"`) {
				t.Fatalf("prompt=login (fresh=%v) did not reach the consent page after one login: %d %q", fresh, p.StatusCode, p.Header.Get("Location"))
			}
		}
	})
	t.Run("not logged in goes to login and back", func(t *testing.T) {
		q := good(func(url.Values) {})
		p := ts.browser("", "").get("/oauth/authorize?" + q.Encode())
		loc, _ := url.Parse(p.Header.Get("Location"))
		if p.StatusCode != http.StatusFound || loc.Path != "/login" || loc.Query().Get("next") != "/oauth/authorize?"+q.Encode() {
			t.Fatalf("logged out authorize = %d %q", p.StatusCode, p.Header.Get("Location"))
		}
	})
}

// TestRedirectURIs covers registration rules, loopback ports and the kept query.
func TestRedirectURIs(t *testing.T) {
	for _, tt := range []struct {
		uri    string
		public bool
		ok     bool
	}{
		{"https://app.example/cb", false, true},
		{"https://app.example/cb?tenant=a", false, true},
		{"http://127.0.0.1:8000/cb", false, true},
		{"http://[::1]/cb", true, true},
		{"http://localhost:3000/cb", false, true},
		{"com.example.app:/oauth", true, true},
		{"com.example.app:/oauth", false, false},
		{"http://app.example/cb", false, false},
		{"https://app.example/cb#frag", false, false},
		{"https://user:pw@app.example/cb", false, false},
		{"/relative", false, false},
		{"javascript:alert(1)", true, false},
		{"https://*.example/cb", false, false},
		{"::not a uri", false, false},
	} {
		if err := validateRedirectURI(tt.uri, tt.public); (err == nil) != tt.ok {
			t.Errorf("validateRedirectURI(%q, public=%v) = %v; want ok=%v", tt.uri, tt.public, err, tt.ok)
		}
	}
	reg := []string{"http://127.0.0.1/cb", "https://app.example/cb?tenant=a"}
	for _, tt := range []struct {
		given string
		ok    bool
	}{
		{"http://127.0.0.1:7777/cb", true},
		{"http://127.0.0.1/cb", true},
		{"http://127.0.0.1:7777/cb2", false},
		{"http://127.0.0.1:7777/cb?x=1", false},
		{"http://127.0.0.1:99999/cb", false},
		{"http://localhost:7777/cb", false},
		{"https://app.example:8443/cb?tenant=a", false},
		{"https://app.example/cb?tenant=a", true},
		{"https://APP.example/cb?tenant=a", false},
	} {
		if _, _, ok := matchRedirect(reg, tt.given); ok != tt.ok {
			t.Errorf("matchRedirect(%q) = %v; want %v", tt.given, ok, tt.ok)
		}
	}

	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb?tenant=a&x=%2F")
	b := ts.browser("alice", "correct horse battery")
	var verifier string
	p := b.authorize(codeRequest(c, &verifier), "allow")
	loc := p.Header.Get("Location")
	if !strings.HasPrefix(loc, "https://app.example/cb?tenant=a&x=%2F&") {
		t.Fatalf("redirect %q does not keep the registered query", loc)
	}
	u, _ := url.Parse(loc)
	if r := ts.exchange(c, u.Query().Get("code"), verifier); r.Status != 200 {
		t.Fatalf("exchange with a query redirect = %d %s", r.Status, r.Raw)
	}
}

// TestTokenErrors is a table of token endpoint errors with their exact codes and statuses.
func TestTokenErrors(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	other := ts.addClient(false, "read", "https://app.example/cb")
	pub := ts.addClient(true, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")

	send := func(method, path, ctype, body string, hdr map[string]string) tokenCall {
		req, _ := http.NewRequest(method, ts.url+path, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return decodeCall(resp)
	}
	const form = "application/x-www-form-urlencoded"
	basic := func(id, secret string) map[string]string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(id, secret)
		return map[string]string{"Authorization": r.Header.Get("Authorization")}
	}
	codeFor := func() (string, string) { return b.getCode(c) }
	exchangeBody := func(code, verifier string, extra ...string) string {
		v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://app.example/cb"}, "code_verifier": {verifier}}
		for i := 0; i+1 < len(extra); i += 2 {
			if extra[i+1] == "" {
				v.Del(extra[i])
			} else {
				v.Set(extra[i], extra[i+1])
			}
		}
		return v.Encode()
	}
	cred := basic(c.ID, c.Secret)
	code1, ver1 := codeFor()
	tests := []struct {
		name       string
		method     string
		path       string
		ctype      string
		body       string
		hdr        map[string]string
		wantStatus int
		wantError  string
	}{
		{"GET refused", "GET", "/oauth/access_token?grant_type=authorization_code&client_secret=x", "", "", nil, 400, errInvalidRequest},
		{"GET alias refused", "GET", "/oauth/token", "", "", nil, 400, errInvalidRequest},
		{"JSON body", "POST", "/oauth/token", "application/json", `{"grant_type":"refresh_token"}`, cred, 400, errInvalidRequest},
		{"params in URL", "POST", "/oauth/token?client_secret=x", form, "grant_type=refresh_token&refresh_token=x", cred, 400, errInvalidRequest},
		{"repeated parameter", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=a&refresh_token=b", cred, 400, errInvalidRequest},
		{"body too large", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=" + strings.Repeat("a", 70<<10), cred, 400, errInvalidRequest},
		{"invalid percent-encoding", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=%zz", cred, 400, errInvalidRequest},
		{"semicolon separator", "POST", "/oauth/token", form, "grant_type=refresh_token;refresh_token=x", cred, 400, errInvalidRequest},
		{"form with a charset read", "POST", "/oauth/token", form + "; charset=UTF-8", "grant_type=refresh_token&refresh_token=nope", cred, 400, errInvalidGrant},
		{"no client auth", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x", nil, 401, errInvalidClient},
		{"unknown client", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x", basic("nope", "x"), 401, errInvalidClient},
		{"wrong secret", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x", basic(c.ID, "wrong"), 401, errInvalidClient},
		{"wrong secret in body", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x&client_id=" + c.ID + "&client_secret=wrong", nil, 401, errInvalidClient},
		{"confidential without secret", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x&client_id=" + c.ID, nil, 401, errInvalidClient},
		{"public with a secret", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x&client_id=" + pub.ID + "&client_secret=s", nil, 401, errInvalidClient},
		{"malformed Basic", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x", map[string]string{"Authorization": "Basic !!!"}, 401, errInvalidClient},
		{"Bearer instead of Basic", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x", map[string]string{"Authorization": "Bearer abc"}, 401, errInvalidClient},
		{"two auth methods", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x&client_secret=" + c.Secret, cred, 400, errInvalidRequest},
		{"client_id differs from Basic", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=x&client_id=" + other.ID, cred, 400, errInvalidRequest},
		{"no grant_type", "POST", "/oauth/token", form, "code=x", cred, 400, errInvalidRequest},
		{"password grant", "POST", "/oauth/token", form, "grant_type=password&username=a&password=b", cred, 400, errUnsupportedGrantType},
		{"no code", "POST", "/oauth/token", form, "grant_type=authorization_code", cred, 400, errInvalidRequest},
		{"unknown code", "POST", "/oauth/token", form, exchangeBody("nope", ver1), cred, 400, errInvalidGrant},
		{"code of another client", "POST", "/oauth/token", form, exchangeBody(code1, ver1), basic(other.ID, other.Secret), 400, errInvalidGrant},
		{"different redirect_uri", "POST", "/oauth/token", form, exchangeBody(code1, ver1, "redirect_uri", "https://app.example/cb2"), cred, 400, errInvalidGrant},
		{"redirect_uri omitted", "POST", "/oauth/token", form, exchangeBody(code1, ver1, "redirect_uri", ""), cred, 400, errInvalidGrant},
		{"PKCE verifier omitted", "POST", "/oauth/token", form, exchangeBody(code1, ver1, "code_verifier", ""), cred, 400, errInvalidGrant},
		{"PKCE mismatch", "POST", "/oauth/token", form, exchangeBody(code1, strings.Repeat("a", 43)), cred, 400, errInvalidGrant},
		{"PKCE verifier malformed", "POST", "/oauth/token", form, exchangeBody(code1, "short"), cred, 400, errInvalidRequest},
		{"no refresh_token", "POST", "/oauth/token", form, "grant_type=refresh_token", cred, 400, errInvalidRequest},
		{"unknown refresh_token", "POST", "/oauth/token", form, "grant_type=refresh_token&refresh_token=nope", cred, 400, errInvalidGrant},
		{"introspect without auth", "POST", "/oauth/introspect", form, "token=x", nil, 401, errInvalidClient},
		{"introspect as public client", "POST", "/oauth/introspect", form, "token=x&client_id=" + pub.ID, nil, 401, errInvalidClient},
		{"introspect without token", "POST", "/oauth/introspect", form, "", cred, 400, errInvalidRequest},
		{"revoke without token", "POST", "/oauth/revoke", form, "", cred, 400, errInvalidRequest},
		{"revoke wrong secret", "POST", "/oauth/revoke", form, "token=x", basic(c.ID, "wrong"), 401, errInvalidClient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(tt.method, tt.path, tt.ctype, tt.body, tt.hdr)
			if r.Status != tt.wantStatus || str(r.JSON["error"]) != tt.wantError || str(r.JSON["error_description"]) == "" {
				t.Fatalf("handleToken(%s) = %d %s; want %d %s", tt.name, r.Status, r.Raw, tt.wantStatus, tt.wantError)
			}
			if r.Header.Get("Cache-Control") != "no-store" || r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("handleToken(%s): Cache-Control %q Content-Type %q", tt.name, r.Header.Get("Cache-Control"), r.Header.Get("Content-Type"))
			}
			if tt.wantStatus == 401 && !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("handleToken(%s): 401 without WWW-Authenticate: Basic", tt.name)
			}
		})
	}
	// None of the failed attempts above consumed the code: the rightful exchange works.
	if r := ts.exchange(c, code1, ver1); r.Status != 200 {
		t.Fatalf("exchange after failed attempts = %d %s", r.Status, r.Raw)
	}

	t.Run("verifier without challenge", func(t *testing.T) {
		q := codeRequest(c, nil)
		q.Del("code_challenge")
		q.Del("code_challenge_method")
		p := b.authorize(q, "allow")
		u, _ := url.Parse(p.Header.Get("Location"))
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {u.Query().Get("code")},
			"redirect_uri": {"https://app.example/cb"}, "code_verifier": {strings.Repeat("b", 43)}}, c.ID, c.Secret)
		if r.Status != 400 || str(r.JSON["error"]) != errInvalidGrant {
			t.Fatalf("PKCE downgrade = %d %s; want invalid_grant", r.Status, r.Raw)
		}
	})
	t.Run("expired code", func(t *testing.T) {
		code, ver := codeFor()
		ts.clock.Advance(61 * time.Second)
		if r := ts.exchange(c, code, ver); r.Status != 400 || str(r.JSON["error"]) != errInvalidGrant {
			t.Fatalf("expired code = %d %s; want invalid_grant", r.Status, r.Raw)
		}
	})
	t.Run("secret with form-encoded characters", func(t *testing.T) {
		// RFC 6749 §2.3.1: id and secret are form-encoded before Basic; ours are URL-safe but a
		// client that encodes anyway (or sends %-escapes) must still work.
		req, _ := http.NewRequest("POST", ts.url+"/oauth/introspect", strings.NewReader("token=x"))
		req.Header.Set("Content-Type", form)
		req.SetBasicAuth(url.QueryEscape(c.ID), strings.ReplaceAll(url.QueryEscape(c.Secret), "-", "%2D"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if r := decodeCall(resp); r.Status != 200 {
			t.Fatalf("introspect with %%-encoded Basic secret = %d %s", r.Status, r.Raw)
		}
	})
	t.Run("chunked body", func(t *testing.T) {
		// No Content-Length: the form is read to its end instead of into a buffer of that size.
		req, _ := http.NewRequest("POST", ts.url+"/oauth/introspect", io.MultiReader(strings.NewReader("token=x&token_type_hint="), strings.NewReader("access_token")))
		req.Header.Set("Content-Type", form)
		req.SetBasicAuth(c.ID, c.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if r := decodeCall(resp); r.Status != 200 || r.JSON["active"] != false {
			t.Fatalf("chunked introspection = %d %s", r.Status, r.Raw)
		}
	})
	t.Run("client_secret_post", func(t *testing.T) {
		code, ver := codeFor()
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {"https://app.example/cb"},
			"code_verifier": {ver}, "client_id": {c.ID}, "client_secret": {c.Secret}}, "", "")
		if r.Status != 200 {
			t.Fatalf("client_secret_post = %d %s", r.Status, r.Raw)
		}
	})
}

// TestCodeReplayRevokes: RFC 6749 §4.1.2, a second use of a code revokes its tokens.
func TestCodeReplayRevokes(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	code, ver := ts.browser("alice", "correct horse battery").getCode(c)
	r := ts.exchange(c, code, ver)
	if r.Status != 200 {
		t.Fatalf("first exchange = %d %s", r.Status, r.Raw)
	}
	r2 := ts.exchange(c, code, ver)
	if r2.Status != 400 || str(r2.JSON["error"]) != errInvalidGrant {
		t.Fatalf("replay = %d %s; want invalid_grant", r2.Status, r2.Raw)
	}
	if ts.active(c, str(r.JSON["access_token"])) || ts.active(c, str(r.JSON["refresh_token"])) {
		t.Fatal("tokens issued from a replayed code are still active")
	}
	if r3 := ts.refresh(c, str(r.JSON["refresh_token"])); r3.Status != 400 {
		t.Fatalf("refresh from a replayed code's grant = %d %s", r3.Status, r3.Raw)
	}
}

// TestCodeConcurrentExchange: 20 goroutines race for one code; exactly one wins.
func TestCodeConcurrentExchange(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	code, ver := ts.browser("alice", "correct horse battery").getCode(c)
	var wg sync.WaitGroup
	statuses := make(chan int, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- ts.exchange(c, code, ver).Status
		}()
	}
	wg.Wait()
	close(statuses)
	counts := map[int]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts[200] != 1 || counts[400] != 19 {
		t.Fatalf("20 concurrent exchanges: %v; want exactly one 200 and 19 400", counts)
	}
}

// TestRefreshRotation covers rotation, the grace window (sequential and concurrent), reuse
// after the grace revoking the grant, scope narrowing and refresh by another client.
func TestRefreshRotation(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read write", "https://app.example/cb")
	other := ts.addClient(false, "read write", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	tokens := func() tokenCall {
		code, ver := b.getCode(c)
		r := ts.exchange(c, code, ver)
		if r.Status != 200 {
			t.Fatalf("exchange = %d %s", r.Status, r.Raw)
		}
		return r
	}

	t.Run("grace returns the same successor, concurrently", func(t *testing.T) {
		first := tokens()
		rt := str(first.JSON["refresh_token"])
		var wg sync.WaitGroup
		results := make([]tokenCall, 8)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = ts.refresh(c, rt)
			}()
		}
		wg.Wait()
		for i, r := range results {
			if r.Status != 200 || str(r.JSON["refresh_token"]) != str(results[0].JSON["refresh_token"]) ||
				str(r.JSON["access_token"]) != str(results[0].JSON["access_token"]) {
				t.Fatalf("concurrent refresh %d = %d %s; want the same successor as %s", i, r.Status, r.Raw, results[0].Raw)
			}
		}
		ts.clock.Advance(5 * time.Second)
		if r := ts.refresh(c, rt); str(r.JSON["refresh_token"]) != str(results[0].JSON["refresh_token"]) || r.JSON["expires_in"] != float64(3595) {
			t.Fatalf("refresh within grace after 5s = %d %s", r.Status, r.Raw)
		}
	})

	t.Run("reuse after grace revokes the grant", func(t *testing.T) {
		first := tokens()
		second := ts.refresh(c, str(first.JSON["refresh_token"]))
		ts.clock.Advance(11 * time.Second)
		r := ts.refresh(c, str(first.JSON["refresh_token"]))
		if r.Status != 400 || str(r.JSON["error"]) != errInvalidGrant {
			t.Fatalf("reuse after grace = %d %s; want invalid_grant", r.Status, r.Raw)
		}
		if ts.active(c, str(second.JSON["access_token"])) || ts.active(c, str(first.JSON["access_token"])) {
			t.Fatal("access tokens of a replayed grant are still active")
		}
		if r := ts.refresh(c, str(second.JSON["refresh_token"])); r.Status != 400 {
			t.Fatalf("successor refresh token after the grant was revoked = %d %s", r.Status, r.Raw)
		}
	})

	t.Run("reuse after the successor was itself rotated", func(t *testing.T) {
		first := tokens()
		second := ts.refresh(c, str(first.JSON["refresh_token"]))
		third := ts.refresh(c, str(second.JSON["refresh_token"]))
		if third.Status != 200 {
			t.Fatalf("second rotation = %d %s", third.Status, third.Raw)
		}
		if r := ts.refresh(c, str(first.JSON["refresh_token"])); r.Status != 400 {
			t.Fatalf("old token after two rotations = %d %s; want invalid_grant", r.Status, r.Raw)
		}
		if ts.active(c, str(third.JSON["access_token"])) {
			t.Fatal("grant not revoked")
		}
	})

	t.Run("narrower scope", func(t *testing.T) {
		first := tokens()
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {str(first.JSON["refresh_token"])}, "scope": {"read"}}, c.ID, c.Secret)
		if r.Status != 200 || str(r.JSON["scope"]) != "read" {
			t.Fatalf("narrowed refresh = %d %s", r.Status, r.Raw)
		}
		// The new refresh token keeps the full grant (RFC 6749 §6).
		r2 := ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {str(r.JSON["refresh_token"])}, "scope": {"read write"}}, c.ID, c.Secret)
		if r2.Status != 200 || str(r2.JSON["scope"]) != "read write" {
			t.Fatalf("refresh back to the full scope = %d %s", r2.Status, r2.Raw)
		}
		r3 := ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {str(r2.JSON["refresh_token"])}, "scope": {"read admin"}}, c.ID, c.Secret)
		if r3.Status != 400 || str(r3.JSON["error"]) != errInvalidScope {
			t.Fatalf("wider refresh = %d %s; want invalid_scope", r3.Status, r3.Raw)
		}
	})

	t.Run("another client", func(t *testing.T) {
		first := tokens()
		if r := ts.refresh(other, str(first.JSON["refresh_token"])); r.Status != 400 || str(r.JSON["error"]) != errInvalidGrant {
			t.Fatalf("refresh by another client = %d %s; want invalid_grant", r.Status, r.Raw)
		}
		if !ts.active(c, str(first.JSON["refresh_token"])) {
			t.Fatal("a refresh attempt by another client must not burn the token")
		}
	})

	t.Run("expired", func(t *testing.T) {
		first := tokens()
		ts.clock.Advance(31 * 24 * time.Hour)
		if r := ts.refresh(c, str(first.JSON["refresh_token"])); r.Status != 400 || str(r.JSON["error"]) != errInvalidGrant {
			t.Fatalf("expired refresh = %d %s", r.Status, r.Raw)
		}
		if ts.active(c, str(first.JSON["access_token"])) {
			t.Fatal("an expired access token is active")
		}
	})
}

// TestIntrospectRevoke covers RFC 7662 and RFC 7009 edge cases.
func TestIntrospectRevoke(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	rs := ts.addClient(false, "", "https://rs.example/unused")
	pub := ts.addClient(true, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)

	// Any confidential client (a resource server) may introspect.
	in := ts.postToken("/oauth/introspect", url.Values{"token": {str(tok.JSON["refresh_token"])}, "token_type_hint": {"refresh_token"}}, rs.ID, rs.Secret)
	if in.JSON["active"] != true || str(in.JSON["token_use"]) != "refresh_token" {
		t.Fatalf("introspect refresh token = %s", in.Raw)
	}
	for _, tok := range []string{"", "unknown", strings.Repeat("x", 43)} {
		if tok == "" {
			continue
		}
		r := ts.postToken("/oauth/introspect", url.Values{"token": {tok}}, rs.ID, rs.Secret)
		if r.Status != 200 || r.Raw != "{\"active\":false}\n" {
			t.Errorf("introspect(%q) = %d %q; want exactly {\"active\":false}", tok, r.Status, r.Raw)
		}
	}
	// Revoking a token of another client is refused and revokes nothing.
	if r := ts.postToken("/oauth/revoke", url.Values{"token": {str(tok.JSON["access_token"])}}, rs.ID, rs.Secret); r.Status != 400 || str(r.JSON["error"]) != errUnauthorizedClient {
		t.Fatalf("revoke another client's token = %d %s", r.Status, r.Raw)
	}
	if !ts.active(c, str(tok.JSON["access_token"])) {
		t.Fatal("a refused revocation revoked the token")
	}
	// Unknown tokens answer 200; an access token is revoked alone.
	if r := ts.postToken("/oauth/revoke", url.Values{"token": {"unknown"}, "token_type_hint": {"whatever"}}, c.ID, c.Secret); r.Status != 200 {
		t.Fatalf("revoke unknown = %d %s", r.Status, r.Raw)
	}
	if r := ts.postToken("/oauth/revoke", url.Values{"token": {str(tok.JSON["access_token"])}, "token_type_hint": {"access_token"}}, c.ID, c.Secret); r.Status != 200 || r.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("revoke access token = %d %s", r.Status, r.Raw)
	}
	if ts.active(c, str(tok.JSON["access_token"])) || !ts.active(c, str(tok.JSON["refresh_token"])) {
		t.Fatal("revoking the access token must leave the refresh token alone")
	}
	// A public client revokes its own tokens with client_id only.
	pcode, pver := b.getCode(pub)
	ptok := ts.exchange(pub, pcode, pver)
	if r := ts.postToken("/oauth/revoke", url.Values{"token": {str(ptok.JSON["refresh_token"])}, "client_id": {pub.ID}}, "", ""); r.Status != 200 {
		t.Fatalf("public revoke = %d %s", r.Status, r.Raw)
	}
	if ts.active(c, str(ptok.JSON["access_token"])) {
		t.Fatal("revoking the public client's refresh token left its access token active")
	}
}

// TestMetadata checks the RFC 8414 document.
func TestMetadata(t *testing.T) {
	ts := newTestServer(t)
	ts.addClient(false, "write read", "https://app.example/cb")
	b := ts.browser("", "")
	p := b.get("/.well-known/oauth-authorization-server")
	r := decodeCall(p.Response, p.Body)
	if r.Status != 200 || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("metadata = %d %s", r.Status, r.Raw)
	}
	want := map[string]any{
		"issuer": ts.url, "authorization_endpoint": ts.url + "/oauth/authorize", "token_endpoint": ts.url + "/oauth/access_token",
		"introspection_endpoint": ts.url + "/oauth/introspect", "revocation_endpoint": ts.url + "/oauth/revoke",
		"authorization_response_iss_parameter_supported": true, "service_documentation": ts.url + "/",
	}
	for k, v := range want {
		if r.JSON[k] != v {
			t.Errorf("metadata[%s] = %v; want %v", k, r.JSON[k], v)
		}
	}
	lists := map[string]string{
		"response_types_supported": "code", "grant_types_supported": "authorization_code refresh_token client_credentials urn:ietf:params:oauth:grant-type:device_code",
		"code_challenge_methods_supported": "S256", "token_endpoint_auth_methods_supported": "client_secret_basic client_secret_post none",
		"scopes_supported": "email groups offline_access openid profile read write",
	}
	for k, v := range lists {
		var got []string
		for _, x := range r.JSON[k].([]any) {
			got = append(got, x.(string))
		}
		if strings.Join(got, " ") != v {
			t.Errorf("metadata[%s] = %v; want %s", k, got, v)
		}
	}
}

// TestPurge deletes what expired and keeps what is live.
func TestPurge(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)
	b.getCode(c) // an unused code
	ctx := context.Background()
	count := func(table string) (n int) {
		ts.s.store.db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		return n
	}
	if _, err := ts.s.store.purge(ctx, ts.clock.Now(), time.Second); err != nil {
		t.Fatal(err)
	}
	if count("codes") != 2 || count("tokens") != 2 {
		t.Fatalf("purge removed live rows: codes %d tokens %d", count("codes"), count("tokens"))
	}
	ts.clock.Advance(2 * time.Hour) // codes and the access token expire, the refresh token lives
	if _, err := ts.s.store.purge(ctx, ts.clock.Now(), time.Second); err != nil {
		t.Fatal(err)
	}
	if count("codes") != 0 || count("tokens") != 1 || count("grants") != 1 {
		t.Fatalf("after 2h: codes %d tokens %d grants %d; want 0 1 1", count("codes"), count("tokens"), count("grants"))
	}
	if !ts.active(c, str(tok.JSON["refresh_token"])) {
		t.Fatal("purge removed a live refresh token")
	}
	// The periodic loop does the same on its own.
	ts.clock.Advance(31 * 24 * time.Hour)
	ts.s.cfg.PurgeInterval = 5 * time.Millisecond
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { ts.s.purgeLoop(lctx); close(done) }()
	waitFor(t, func() bool { return count("tokens") == 0 })
	stop()
	<-done
	if count("tokens") != 0 || count("grants") != 0 || count("sessions") != 0 {
		t.Fatalf("after 31 days: tokens %d grants %d sessions %d; want none", count("tokens"), count("grants"), count("sessions"))
	}
}

// TestSealFormats: the compact sealed successor round-trips, for timed tokens and for the
// untimed ones of earlier versions; a blob of the first (JSON) format still opens; a wrong key
// or a changed byte opens nothing.
func TestSealFormats(t *testing.T) {
	old, other := newSecret(), newSecret()
	now := time.Unix(1_800_000_000, 123_000_000)
	for _, mk := range []func() string{newSecret, func() string { return newTokenValue(now) }} {
		v := sealedSuccessor{AccessToken: mk(), RefreshToken: mk(), Scope: "openid read", ExpiresAt: 1_800_000_000}
		succ := tokenKey(v.RefreshToken)
		blob := seal(graceKey(old), succ, v)
		if raw := len(succ); len(blob) > 2*raw+8+len(v.Scope)+16 {
			t.Errorf("sealed successor of %d bytes", len(blob))
		}
		if got, err := unseal(graceKey(old), succ, blob); err != nil || got != v {
			t.Fatalf("unseal = %+v, %v; want %+v", got, err, v)
		}
		if _, err := unseal(graceKey(other), succ, blob); err == nil {
			t.Fatal("another token's key opened the successor")
		}
		blob[len(blob)-1] ^= 1
		if _, err := unseal(graceKey(old), succ, blob); err == nil {
			t.Fatal("a changed blob opened")
		}
		// The first format: random nonce, then JSON, ID token included.
		v1 := v
		v1.IDToken = "header.payload.signature"
		g := graceKey(old)
		pt, _ := json.Marshal(v1)
		nonce := make([]byte, g.NonceSize())
		rand.Read(nonce)
		if got, err := unseal(g, succ, g.Seal(nonce, nonce, pt, nil)); err != nil || got != v1 {
			t.Fatalf("unseal of the first format = %+v, %v", got, err)
		}
	}
}

// TestTokenKeys: a token carries its issue time in its first 8 characters and is stored under
// that time and its hash, so that keys issued later sort later; a token of an earlier version
// (43 characters) is stored under its hash alone; a changed time finds nothing.
func TestTokenKeys(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	a, b := newTokenValue(t0), newTokenValue(t0.Add(time.Millisecond))
	if len(a) != tokenLen || len(b) != tokenLen {
		t.Fatalf("token lengths %d, %d; want %d", len(a), len(b), tokenLen)
	}
	ka, kb := tokenKey(a), tokenKey(b)
	if len(ka) != tokenTimeLen+32 || bytes.Compare(ka, kb) >= 0 {
		t.Fatalf("keys %x, %x: want 38 bytes, the later one larger", ka, kb)
	}
	if h := sha256.Sum256([]byte(a)); !bytes.Equal(ka[tokenTimeLen:], h[:]) {
		t.Fatal("the key does not end in the hash of the whole token")
	}
	if old := newSecret(); !bytes.Equal(tokenKey(old), hashSecret(old)) {
		t.Fatal("an untimed token is not keyed by its hash")
	}
	forged := b[:8] + a[8:]
	if bytes.Equal(tokenKey(forged)[tokenTimeLen:], ka[tokenTimeLen:]) {
		t.Fatal("a token with another time has the same hash")
	}
	if k := tokenKey(strings.Repeat("*", tokenLen)); len(k) != 32 {
		t.Fatalf("a 51-character non-token has a %d-byte key", len(k))
	}
}

// TestUntimedTokens: codes and tokens issued by an earlier version (43 characters, stored
// under their hash alone) still redeem, introspect, refresh (into timed successors, the same
// one again within the grace) and revoke after an upgrade.
func TestUntimedTokens(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	oldCode := newSecret()
	if len(code) != tokenLen {
		t.Fatalf("a code of %d characters; want %d", len(code), tokenLen)
	}
	if _, err := ts.s.store.db.Exec("UPDATE codes SET hash = ? WHERE hash = ?", hashSecret(oldCode), tokenKey(code)); err != nil {
		t.Fatal(err)
	}
	r := ts.exchange(c, oldCode, ver)
	if r.Status != 200 || len(str(r.JSON["access_token"])) != tokenLen || len(str(r.JSON["refresh_token"])) != tokenLen {
		t.Fatalf("exchange = %d %s; want tokens of %d characters", r.Status, r.Raw, tokenLen)
	}
	// Store them as an earlier version would have: under the hash of a 43-character value.
	oldAccess, oldRefresh := newSecret(), newSecret()
	for now, was := range map[string]string{oldAccess: str(r.JSON["access_token"]), oldRefresh: str(r.JSON["refresh_token"])} {
		if _, err := ts.s.store.db.Exec("UPDATE tokens SET hash = ? WHERE hash = ?", hashSecret(now), tokenKey(was)); err != nil {
			t.Fatal(err)
		}
	}
	if !ts.active(c, oldAccess) {
		t.Fatal("an untimed access token is not active")
	}
	first := ts.refresh(c, oldRefresh)
	if first.Status != 200 || len(str(first.JSON["refresh_token"])) != tokenLen {
		t.Fatalf("refresh of an untimed token = %d %s", first.Status, first.Raw)
	}
	if again := ts.refresh(c, oldRefresh); again.Status != 200 || str(again.JSON["refresh_token"]) != str(first.JSON["refresh_token"]) ||
		str(again.JSON["access_token"]) != str(first.JSON["access_token"]) {
		t.Fatalf("repeat within the grace = %d %s; want %s", again.Status, again.Raw, first.Raw)
	}
	if !ts.active(c, str(first.JSON["access_token"])) {
		t.Fatal("the timed successor is not active")
	}
	if rv := ts.postToken("/oauth/revoke", url.Values{"token": {oldAccess}}, c.ID, c.Secret); rv.Status != 200 || ts.active(c, oldAccess) {
		t.Fatalf("revoke of an untimed token = %d %s, still active: %v", rv.Status, rv.Raw, ts.active(c, oldAccess))
	}
}
