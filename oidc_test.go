package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// jwksOf fetches the server's JWKS as raw maps.
func (ts *testServer) jwksOf() []map[string]any {
	ts.t.Helper()
	p := ts.browser("", "").get("/oauth/jwks")
	var doc struct{ Keys []map[string]any }
	if p.StatusCode != 200 || json.Unmarshal([]byte(p.Body), &doc) != nil {
		ts.t.Fatalf("jwks = %d %s", p.StatusCode, p.Body)
	}
	return doc.Keys
}

// verifyIDToken checks an ID token the way a relying party does, with the standard library
// only and independently of the server's own JWS code: the signature against the JWKS the
// same server serves, then every claim. It returns the header and the claims.
func (ts *testServer) verifyIDToken(raw string, c testClient, accessToken string, nonce *string) (map[string]any, map[string]any) {
	t := ts.t
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("id_token %q is not a compact JWS", raw)
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("id_token part %q: %v", s, err)
		}
		return b
	}
	var hdr, claims map[string]any
	if json.Unmarshal(dec(parts[0]), &hdr) != nil || json.Unmarshal(dec(parts[1]), &claims) != nil {
		t.Fatal("id_token header or payload is not JSON")
	}
	if hdr["typ"] != "JWT" || hdr["kid"] == nil {
		t.Errorf("id_token header %v lacks typ JWT or kid", hdr)
	}
	var key map[string]any
	for _, k := range ts.jwksOf() {
		if k["kid"] == hdr["kid"] {
			key = k
		}
	}
	if key == nil || key["alg"] != hdr["alg"] {
		t.Fatalf("kid %v (alg %v) not published in the JWKS", hdr["kid"], hdr["alg"])
	}
	h := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	sig := dec(parts[2])
	n := func(name string) *big.Int { return new(big.Int).SetBytes(dec(key[name].(string))) }
	switch hdr["alg"] {
	case "RS256":
		pub := &rsa.PublicKey{N: n("n"), E: int(n("e").Int64())}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig); err != nil {
			t.Fatalf("RS256 signature: %v", err)
		}
	case "ES256":
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, n("x").FillBytes(make([]byte, 32))...), n("y").FillBytes(make([]byte, 32))...))
		if err != nil || len(sig) != 64 || !ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			t.Fatalf("ES256 signature does not verify (%v)", err)
		}
	default:
		t.Fatalf("id_token alg %v", hdr["alg"])
	}
	now := float64(ts.clock.Now().Unix())
	want := map[string]any{"iss": ts.url, "aud": c.ID, "azp": c.ID, "iat": now, "exp": now + 3600}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("id_token %s = %v; want %v", k, claims[k], v)
		}
	}
	if s, _ := claims["sub"].(string); s == "" {
		t.Error("id_token has no sub")
	}
	if _, ok := claims["auth_time"].(float64); !ok {
		t.Error("id_token has no auth_time")
	}
	sum := sha256.Sum256([]byte(accessToken))
	if claims["at_hash"] != base64.RawURLEncoding.EncodeToString(sum[:16]) {
		t.Errorf("id_token at_hash = %v", claims["at_hash"])
	}
	if nonce != nil && claims["nonce"] != *nonce {
		t.Errorf("id_token nonce = %v; want %q", claims["nonce"], *nonce)
	}
	if nonce == nil && claims["nonce"] != nil {
		t.Errorf("id_token has a nonce %v; want none", claims["nonce"])
	}
	return hdr, claims
}

// oidcFlow runs a code flow for scope with a nonce and returns the token response.
func (b *browser) oidcFlow(c testClient, scope string, extra url.Values) (tokenCall, string) {
	b.t.Helper()
	var verifier string
	q := codeRequest(c, &verifier)
	q.Set("scope", scope)
	nonce := "n-" + newSecret()[:10]
	q.Set("nonce", nonce)
	for k, v := range extra {
		q[k] = v
	}
	p := b.authorize(q, "allow")
	u, err := url.Parse(p.Header.Get("Location"))
	if err != nil || u.Query().Get("code") == "" {
		b.t.Fatalf("OIDC authorize: %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	r := b.ts.exchange(c, u.Query().Get("code"), verifier)
	if r.Status != 200 {
		b.t.Fatalf("OIDC exchange = %d %s", r.Status, r.Raw)
	}
	return r, nonce
}

// oidcServer has alice with a profile, and an RS256 and an ES256 client.
func oidcServer(t *testing.T) (*testServer, testClient, testClient) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	if _, err := ts.s.store.db.Exec("UPDATE users SET name = 'Alice Example', email = 'alice@example.org', email_verified = 1, updated_at = 1700000000 WHERE username = 'alice'"); err != nil {
		t.Fatal(err)
	}
	rs := ts.addClient(false, "read", "https://app.example/cb")
	es := ts.addClient(false, "read", "https://es.example/cb")
	if _, err := ts.s.store.db.Exec("UPDATE clients SET id_token_alg = 'ES256' WHERE id = ?", es.ID); err != nil {
		t.Fatal(err)
	}
	es.IDTokenAlg = "ES256"
	return ts, rs, es
}

func TestJWKS(t *testing.T) {
	ts := newTestServer(t)
	p := ts.browser("", "").get("/oauth/jwks")
	if p.Header.Get("Access-Control-Allow-Origin") != "*" || p.Header.Get("Content-Type") != "application/json" {
		t.Errorf("jwks headers: %v", p.Header)
	}
	algs := map[string]bool{}
	for _, k := range ts.jwksOf() {
		if k["kid"] == nil || k["use"] != "sig" {
			t.Errorf("key %v lacks kid or use=sig", k)
		}
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			if k[private] != nil {
				t.Errorf("key %v publishes the private member %s", k["kid"], private)
			}
		}
		if k["kty"] == "RSA" {
			n, _ := base64.RawURLEncoding.DecodeString(k["n"].(string))
			if len(n)*8 < 2048 {
				t.Errorf("RSA key of %d bits", len(n)*8)
			}
		}
		if k["kty"] == "EC" && k["crv"] != "P-256" {
			t.Errorf("EC key on %v", k["crv"])
		}
		algs[k["alg"].(string)] = true
	}
	if !algs["RS256"] || !algs["ES256"] || len(algs) != 2 {
		t.Fatalf("JWKS algorithms = %v; want RS256 and ES256", algs)
	}
}

func TestIDToken(t *testing.T) {
	ts, rs, es := oidcServer(t)
	b := ts.browser("alice", "correct horse battery")
	loginTime := ts.clock.Now().Unix()
	b.login()
	ts.clock.Advance(90 * time.Second) // auth_time must be the login, not the authorization

	r, nonce := b.oidcFlow(rs, "openid profile email offline_access", nil)
	hdr, claims := ts.verifyIDToken(str(r.JSON["id_token"]), rs, str(r.JSON["access_token"]), &nonce)
	if hdr["alg"] != "RS256" {
		t.Errorf("default alg = %v; want RS256", hdr["alg"])
	}
	u, _ := ts.s.store.userByName(context.Background(), "alice")
	want := map[string]any{"sub": u.Sub, "auth_time": float64(loginTime), "name": "Alice Example", "preferred_username": "alice",
		"email": "alice@example.org", "email_verified": true, "updated_at": float64(1700000000)}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("id_token %s = %v; want %v", k, claims[k], v)
		}
	}
	if str(r.JSON["refresh_token"]) == "" {
		t.Fatal("no refresh token although offline_access was granted")
	}

	// Refresh: a fresh ID token, same sub and auth_time, no nonce.
	ts.clock.Advance(time.Minute)
	r2 := ts.refresh(rs, str(r.JSON["refresh_token"]))
	if r2.Status != 200 {
		t.Fatalf("refresh = %d %s", r2.Status, r2.Raw)
	}
	_, c2 := ts.verifyIDToken(str(r2.JSON["id_token"]), rs, str(r2.JSON["access_token"]), nil)
	if c2["sub"] != claims["sub"] || c2["auth_time"] != claims["auth_time"] {
		t.Errorf("refreshed id_token sub/auth_time %v/%v; want %v/%v", c2["sub"], c2["auth_time"], claims["sub"], claims["auth_time"])
	}
	// Within the grace the same successor comes back, with an ID token of the same claims
	// (minted again: the sealed successor keeps only the two tokens, expiry and scope).
	ts.clock.Advance(2 * time.Second)
	r3 := ts.refresh(rs, str(r.JSON["refresh_token"]))
	if str(r3.JSON["access_token"]) != str(r2.JSON["access_token"]) || str(r3.JSON["refresh_token"]) != str(r2.JSON["refresh_token"]) {
		t.Fatalf("grace answer differs: %s", r3.Raw)
	}
	if _, c3 := ts.verifyIDToken(str(r3.JSON["id_token"]), rs, str(r3.JSON["access_token"]), nil); c3["sub"] != c2["sub"] || c3["auth_time"] != c2["auth_time"] {
		t.Errorf("grace id_token sub/auth_time %v/%v; want %v/%v", c3["sub"], c3["auth_time"], c2["sub"], c2["auth_time"])
	}

	// openid alone: no profile claims, no refresh token.
	r, nonce = b.oidcFlow(rs, "openid", nil)
	_, claims = ts.verifyIDToken(str(r.JSON["id_token"]), rs, str(r.JSON["access_token"]), &nonce)
	for _, k := range []string{"name", "email", "preferred_username", "email_verified"} {
		if claims[k] != nil {
			t.Errorf("scope openid alone gave the claim %s", k)
		}
	}
	if r.JSON["refresh_token"] != nil {
		t.Error("refresh token issued to an OpenID request without offline_access")
	}
	// Without openid there is no ID token (plain OAuth keeps its refresh token).
	r, _ = b.oidcFlow(rs, "read", nil)
	if r.JSON["id_token"] != nil || str(r.JSON["refresh_token"]) == "" {
		t.Errorf("plain OAuth response = %s", r.Raw)
	}
	// A client registered to always get refresh tokens.
	ts.s.store.db.Exec("UPDATE clients SET always_refresh = 1 WHERE id = ?", rs.ID)
	if r, _ = b.oidcFlow(rs, "openid", nil); str(r.JSON["refresh_token"]) == "" {
		t.Error("-always-refresh client got no refresh token")
	}
	// ES256 client.
	r, nonce = b.oidcFlow(es, "openid email", nil)
	if hdr, _ := ts.verifyIDToken(str(r.JSON["id_token"]), es, str(r.JSON["access_token"]), &nonce); hdr["alg"] != "ES256" {
		t.Errorf("ES256 client got alg %v", hdr["alg"])
	}
	// A request without a nonce gets an ID token without one.
	var verifier string
	q := codeRequest(rs, &verifier)
	q.Set("scope", "openid")
	p := b.authorize(q, "allow")
	loc, _ := url.Parse(p.Header.Get("Location"))
	r = ts.exchange(rs, loc.Query().Get("code"), verifier)
	ts.verifyIDToken(str(r.JSON["id_token"]), rs, str(r.JSON["access_token"]), nil)
}

func TestDiscovery(t *testing.T) {
	ts := newTestServer(t)
	b := ts.browser("", "")
	oidc := decodeCall(b.get("/.well-known/openid-configuration").Response, b.get("/.well-known/openid-configuration").Body)
	as := decodeCall(b.get("/.well-known/oauth-authorization-server").Response, b.get("/.well-known/oauth-authorization-server").Body)
	for _, k := range []string{"issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
		"response_types_supported", "subject_types_supported", "id_token_signing_alg_values_supported",
		"scopes_supported", "claims_supported", "end_session_endpoint"} {
		if oidc.JSON[k] == nil {
			t.Errorf("openid-configuration lacks %s", k)
		}
	}
	if oidc.JSON["issuer"] != ts.url || oidc.JSON["userinfo_endpoint"] != ts.url+"/oauth/userinfo" ||
		oidc.JSON["jwks_uri"] != ts.url+"/oauth/jwks" || oidc.JSON["end_session_endpoint"] != ts.url+"/oauth/logout" {
		t.Errorf("openid-configuration endpoints: %s", oidc.Raw)
	}
	if got, _ := json.Marshal(oidc.JSON["subject_types_supported"]); string(got) != `["public"]` {
		t.Errorf("subject_types_supported = %s", got)
	}
	if got, _ := json.Marshal(oidc.JSON["id_token_signing_alg_values_supported"]); string(got) != `["RS256","ES256"]` {
		t.Errorf("id_token_signing_alg_values_supported = %s", got)
	}
	if oidc.Raw != as.Raw {
		t.Errorf("the two discovery documents differ:\n%s\n%s", oidc.Raw, as.Raw)
	}
}

func TestUserinfo(t *testing.T) {
	ts, rs, _ := oidcServer(t)
	b := ts.browser("alice", "correct horse battery")
	full, _ := b.oidcFlow(rs, "openid profile email offline_access", nil)
	at := str(full.JSON["access_token"])
	plain, _ := b.oidcFlow(rs, "read", nil)
	onlyOpenid, _ := b.oidcFlow(rs, "openid", nil)
	u, _ := ts.s.store.userByName(context.Background(), "alice")

	call := func(method, path, auth, body string) (tokenCall, http.Header) {
		req, _ := http.NewRequest(method, ts.url+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return decodeCall(resp), resp.Header
	}
	tests := []struct {
		name, method, path, auth, body string
		wantStatus                     int
		wantWWW                        string // part of WWW-Authenticate
	}{
		{"header GET", "GET", "/oauth/userinfo", "Bearer " + at, "", 200, ""},
		{"header POST", "POST", "/oauth/userinfo", "bearer " + at, "", 200, ""},
		{"form body", "POST", "/oauth/userinfo", "", "access_token=" + at, 200, ""},
		{"query string", "GET", "/oauth/userinfo?access_token=" + at, "", "", 400, `error="invalid_request"`},
		{"header and body", "POST", "/oauth/userinfo", "Bearer " + at, "access_token=" + at, 400, `error="invalid_request"`},
		{"no token", "GET", "/oauth/userinfo", "", "", 401, `Bearer realm="oauthd"`},
		{"unknown token", "GET", "/oauth/userinfo", "Bearer nope", "", 401, `error="invalid_token"`},
		{"Basic scheme", "GET", "/oauth/userinfo", "Basic " + at, "", 401, `error="invalid_token"`},
		{"refresh token", "GET", "/oauth/userinfo", "Bearer " + str(full.JSON["refresh_token"]), "", 401, `error="invalid_token"`},
		{"no openid scope", "GET", "/oauth/userinfo", "Bearer " + str(plain.JSON["access_token"]), "", 403, `error="insufficient_scope"`},
	}
	for _, tt := range tests {
		r, h := call(tt.method, tt.path, tt.auth, tt.body)
		if r.Status != tt.wantStatus || !strings.Contains(h.Get("WWW-Authenticate"), tt.wantWWW) {
			t.Errorf("handleUserinfo(%s) = %d WWW-Authenticate %q; want %d %q", tt.name, r.Status, h.Get("WWW-Authenticate"), tt.wantStatus, tt.wantWWW)
		}
		if h.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("handleUserinfo(%s): no CORS header", tt.name)
		}
		if tt.wantStatus == 200 {
			want := map[string]any{"sub": u.Sub, "name": "Alice Example", "preferred_username": "alice", "email": "alice@example.org", "email_verified": true}
			for k, v := range want {
				if r.JSON[k] != v {
					t.Errorf("handleUserinfo(%s)[%s] = %v; want %v", tt.name, k, r.JSON[k], v)
				}
			}
		}
	}
	if r, _ := call("GET", "/oauth/userinfo", "Bearer "+str(onlyOpenid.JSON["access_token"]), ""); len(r.JSON) != 1 || r.JSON["sub"] != u.Sub {
		t.Errorf("userinfo for scope openid = %s; want only sub", r.Raw)
	}
	if r, h := call("OPTIONS", "/oauth/userinfo", "", ""); r.Status != 204 || !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("CORS preflight = %d %v", r.Status, h)
	}
	ts.clock.Advance(time.Hour + time.Second)
	if r, h := call("GET", "/oauth/userinfo", "Bearer "+at, ""); r.Status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("expired token = %d %q", r.Status, h.Get("WWW-Authenticate"))
	}
}

func TestOIDCRequestParameters(t *testing.T) {
	ts, rs, es := oidcServer(t)
	b := ts.browser("alice", "correct horse battery")
	b.oidcFlow(rs, "openid profile", nil) // logged in, consented

	req := func(c testClient, extra map[string]string) url.Values {
		q := codeRequest(c, nil)
		q.Set("scope", "openid profile")
		q.Set("state", "s1")
		for k, v := range extra {
			q.Set(k, v)
		}
		return q
	}
	redirectErr := func(p page) string {
		u, _ := url.Parse(p.Header.Get("Location"))
		if u == nil || u.Host == "" {
			return ""
		}
		return u.Query().Get("error")
	}
	// prompt=none, both ways.
	if p := b.get("/oauth/authorize?" + req(rs, map[string]string{"prompt": "none"}).Encode()); !strings.Contains(p.Header.Get("Location"), "code=") {
		t.Errorf("prompt=none logged in and consented = %q; want a code", p.Header.Get("Location"))
	}
	if p := ts.browser("", "").get("/oauth/authorize?" + req(rs, map[string]string{"prompt": "none"}).Encode()); redirectErr(p) != errLoginRequired {
		t.Errorf("prompt=none logged out = %q; want login_required", p.Header.Get("Location"))
	}
	if p := b.get("/oauth/authorize?" + req(es, map[string]string{"prompt": "none"}).Encode()); redirectErr(p) != errConsentRequired {
		t.Errorf("prompt=none without consent = %q; want consent_required", p.Header.Get("Location"))
	}
	// max_age: a session older than max_age must log in again; a fresh enough one not.
	ts.clock.Advance(100 * time.Second)
	if p := b.get("/oauth/authorize?" + req(rs, map[string]string{"max_age": "600"}).Encode()); !strings.Contains(p.Header.Get("Location"), "code=") {
		t.Errorf("max_age=600 on a 100 s session = %q; want a code", p.Header.Get("Location"))
	}
	p := b.get("/oauth/authorize?" + req(rs, map[string]string{"max_age": "60"}).Encode())
	if !strings.HasPrefix(p.Header.Get("Location"), "/login?") {
		t.Errorf("max_age=60 on a 100 s session = %q; want the login page", p.Header.Get("Location"))
	}
	if p := b.get("/oauth/authorize?" + req(rs, map[string]string{"max_age": "60", "prompt": "none"}).Encode()); redirectErr(p) != errLoginRequired {
		t.Errorf("max_age exceeded with prompt=none = %q; want login_required", p.Header.Get("Location"))
	}
	r, nonce := b.oidcFlow(rs, "openid profile", url.Values{"max_age": {"60"}})
	_, claims := ts.verifyIDToken(str(r.JSON["id_token"]), rs, str(r.JSON["access_token"]), &nonce)
	if claims["auth_time"] != float64(ts.clock.Now().Unix()) {
		t.Errorf("auth_time after a max_age login = %v; want %d", claims["auth_time"], ts.clock.Now().Unix())
	}
	for _, bad := range []string{"-1", "soon"} {
		if p := b.get("/oauth/authorize?" + req(rs, map[string]string{"max_age": bad}).Encode()); redirectErr(p) != errInvalidRequest {
			t.Errorf("max_age=%s = %q; want invalid_request", bad, p.Header.Get("Location"))
		}
	}
	// login_hint prefills the username.
	p = ts.browser("", "").get("/oauth/authorize?" + req(rs, map[string]string{"login_hint": "alice"}).Encode())
	loc, _ := url.Parse(p.Header.Get("Location"))
	if loc.Query().Get("username") != "alice" {
		t.Errorf("login_hint: login redirect %q", p.Header.Get("Location"))
	}
	if lp := ts.browser("", "").get(p.Header.Get("Location")); !strings.Contains(lp.Body, `name="username" type="text" value="alice"`) {
		t.Error("the login page does not prefill the hinted username")
	}
	// OIDC Core §3.1.2.1: the same request as a POSTed form works, logged in or not.
	post := func(br *browser, q url.Values) page {
		req, _ := http.NewRequest("POST", ts.url+"/oauth/authorize", strings.NewReader(q.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site") // an RP's auto-submitting form
		return br.do(req)
	}
	if p := post(b, req(rs, nil)); p.StatusCode != http.StatusFound || !strings.Contains(p.Header.Get("Location"), "code=") {
		t.Errorf("POST authorize = %d %q; want a code", p.StatusCode, p.Header.Get("Location"))
	}
	p = post(ts.browser("", ""), req(rs, nil))
	if loc, _ := url.Parse(p.Header.Get("Location")); loc == nil || loc.Path != "/login" || !strings.HasPrefix(loc.Query().Get("next"), "/oauth/authorize?") {
		t.Errorf("POST authorize logged out = %d %q; want the login page coming back as a GET", p.StatusCode, p.Header.Get("Location"))
	}
	// Request objects are refused with their OIDC error codes.
	if p := b.get("/oauth/authorize?" + req(rs, map[string]string{"request": "eyJ.x.y"}).Encode()); redirectErr(p) != "request_not_supported" {
		t.Errorf("request object = %q", p.Header.Get("Location"))
	}
	if p := b.get("/oauth/authorize?" + req(rs, map[string]string{"request_uri": "https://x"}).Encode()); redirectErr(p) != "request_uri_not_supported" {
		t.Errorf("request_uri = %q", p.Header.Get("Location"))
	}
	// A client not registered for a scope may still ask for the built-in OIDC ones.
	if p := b.authorize(req(es, map[string]string{"scope": "openid email offline_access"}), "allow"); !strings.Contains(p.Header.Get("Location"), "code=") {
		t.Errorf("built-in scopes refused: %q", p.Header.Get("Location"))
	}
}

func TestKeyRotation(t *testing.T) {
	ts, rs, _ := oidcServer(t)
	ts.clock.t = time.Now().Truncate(time.Second) // the CLI below stamps the rotation with real time
	b := ts.browser("alice", "correct horse battery")
	old, nonce := b.oidcFlow(rs, "openid", nil)
	oldHdr, _ := ts.verifyIDToken(str(old.JSON["id_token"]), rs, str(old.JSON["access_token"]), &nonce)

	// Rotate from the command line, as an operator would, while the server runs.
	code, out, errs := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "", "keys", "rotate")
	if code != 0 || strings.Count(out, "\n") != 2 {
		t.Fatalf("keys rotate = %d %q %q", code, out, errs)
	}
	ts.clock.Advance(30 * time.Minute)
	fresh, nonce2 := b.oidcFlow(rs, "openid", nil)
	newHdr, _ := ts.verifyIDToken(str(fresh.JSON["id_token"]), rs, str(fresh.JSON["access_token"]), &nonce2)
	if newHdr["kid"] == oldHdr["kid"] {
		t.Fatal("a token signed after the rotation still uses the old key")
	}
	// The old token still verifies against the published keys.
	kids := map[any]bool{}
	for _, k := range ts.jwksOf() {
		kids[k["kid"]] = true
	}
	if !kids[oldHdr["kid"]] || !kids[newHdr["kid"]] || len(kids) != 4 {
		t.Fatalf("JWKS after rotation has %v; want the old and the new keys of both algorithms", kids)
	}
	var priv sql.NullString
	ts.s.store.db.QueryRow("SELECT private_key FROM keys WHERE kid = ?", oldHdr["kid"]).Scan(&priv)
	if priv.Valid {
		t.Error("a retired key kept its private part")
	}
	_, out, _ = cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "", "keys", "list")
	if strings.Count(out, `"status":"retired"`) != 2 || strings.Count(out, `"status":"current"`) != 2 || strings.Contains(out, "private") {
		t.Errorf("keys list = %q", out)
	}
	// Once every token of the old key has expired, it is no longer published, then deleted.
	ts.clock.Advance(time.Hour)
	for _, k := range ts.jwksOf() {
		if k["kid"] == oldHdr["kid"] {
			t.Fatal("the old key is still published after its tokens expired")
		}
	}
	if err := ts.s.store.deleteRetiredKeys(context.Background(), ts.s.keyCutoff()); err != nil {
		t.Fatal(err)
	}
	if ks, _ := ts.s.store.listKeys(context.Background()); len(ks) != 2 {
		t.Errorf("%d keys left after purging retired ones; want 2", len(ks))
	}
}

func TestAccountPage(t *testing.T) {
	ts, rs, _ := oidcServer(t)
	if p := ts.browser("", "").get("/account"); p.StatusCode != http.StatusFound || !strings.HasPrefix(p.Header.Get("Location"), "/login?next=%2Faccount") {
		t.Fatalf("account logged out = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	b := ts.browser("alice", "correct horse battery")
	b.login()
	p := b.get("/account")
	if p.StatusCode != 200 || !strings.Contains(p.Body, `value="Alice Example"`) || !strings.Contains(p.Body, "(verified)") {
		t.Fatalf("account page: %d %q", p.StatusCode, p.Body)
	}
	csrf := hidden(p.Body, "csrf_token")
	if r := b.post("/account", url.Values{"name": {"Mallory"}, "email": {"m@evil.example"}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("account POST without csrf_token = %d", r.StatusCode)
	}
	for _, bad := range []url.Values{
		{"name": {"A"}, "email": {"not an email"}},
		{"name": {"A"}, "email": {"Alice <a@example.org>"}},
		{"name": {strings.Repeat("n", 201)}, "email": {""}},
	} {
		bad.Set("csrf_token", csrf)
		if r := b.post("/account", bad); r.StatusCode != http.StatusBadRequest {
			t.Errorf("account POST %v = %d; want 400", bad, r.StatusCode)
		}
	}
	r := b.post("/account", url.Values{"csrf_token": {csrf}, "name": {"Alice Liddell"}, "email": {"alice@wonderland.example"}})
	if r.StatusCode != http.StatusSeeOther || !strings.Contains(b.get("/account").Body, "Your profile is saved.") {
		t.Fatalf("account POST = %d %q", r.StatusCode, r.Body)
	}
	tok, _ := b.oidcFlow(rs, "openid profile email", nil)
	ui := ts.postToken("/oauth/userinfo", url.Values{"access_token": {str(tok.JSON["access_token"])}}, "", "")
	if ui.JSON["name"] != "Alice Liddell" || ui.JSON["email"] != "alice@wonderland.example" || ui.JSON["email_verified"] != false {
		t.Fatalf("userinfo after the profile change = %s; want the new name, the new email unverified", ui.Raw)
	}
}

func TestEndSession(t *testing.T) {
	ts, rs, _ := oidcServer(t)
	ts.addUser("mallory", "mallory's password")
	ts.s.store.db.Exec(`UPDATE clients SET post_logout_redirect_uris = '["https://app.example/bye"]' WHERE id = ?`, rs.ID)
	alice := ts.browser("alice", "correct horse battery")
	tok, _ := alice.oidcFlow(rs, "openid", nil)
	hint := str(tok.JSON["id_token"])
	signedIn := func(b *browser) bool { return strings.Contains(b.get("/").Body, "Signed in") }

	bad := []struct {
		name   string
		params url.Values
	}{
		{"unregistered post_logout_redirect_uri", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://evil.example/"}}},
		{"redirect without client", url.Values{"post_logout_redirect_uri": {"https://app.example/bye"}}},
		{"forged hint", url.Values{"id_token_hint": {hint[:len(hint)-4] + "AAAA"}, "post_logout_redirect_uri": {"https://app.example/bye"}}},
		{"client_id differs from hint", url.Values{"id_token_hint": {hint}, "client_id": {"someone-else"}}},
		{"unknown client_id", url.Values{"client_id": {"nope"}}},
		{"repeated parameter", url.Values{"state": {"a", "b"}}},
	}
	for _, tt := range bad {
		p := alice.get("/oauth/logout?" + tt.params.Encode())
		if p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" {
			t.Errorf("handleEndSession(%s) = %d %q; want an error page, no redirect", tt.name, p.StatusCode, p.Header.Get("Location"))
		}
	}
	if !signedIn(alice) {
		t.Fatal("a refused logout request ended the session")
	}

	// Not provably from the RP (no hint): a confirmation page first.
	p := alice.get("/oauth/logout?" + url.Values{"client_id": {rs.ID}, "post_logout_redirect_uri": {"https://app.example/bye"}, "state": {"s2"}}.Encode())
	if p.StatusCode != 200 || !strings.Contains(p.Body, `name="confirm"`) || !signedIn(alice) {
		t.Fatalf("logout without hint = %d; want a confirmation page and the session kept", p.StatusCode)
	}
	// The hint of another user is not proof either.
	mallory := ts.browser("mallory", "mallory's password")
	mallory.login()
	if p := mallory.get("/oauth/logout?id_token_hint=" + url.QueryEscape(hint)); !strings.Contains(p.Body, `name="confirm"`) {
		t.Errorf("another user's hint ended mallory's session without asking")
	}
	// Confirming without the form's token is refused; with it, the session ends and the browser
	// goes to the registered URI with state.
	form := url.Values{"confirm": {"yes"}, "client_id": {hidden(p.Body, "client_id")}, "post_logout_redirect_uri": {hidden(p.Body, "post_logout_redirect_uri")}, "state": {hidden(p.Body, "state")}}
	if r := alice.post("/oauth/logout", form); r.StatusCode != http.StatusForbidden || !signedIn(alice) {
		t.Fatalf("confirmation without csrf_token = %d", r.StatusCode)
	}
	form.Set("csrf_token", hidden(p.Body, "csrf_token"))
	r := alice.post("/oauth/logout", form)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "https://app.example/bye?state=s2" || signedIn(alice) {
		t.Fatalf("confirmed logout = %d %q signed in %v", r.StatusCode, r.Header.Get("Location"), signedIn(alice))
	}

	// With a valid hint for the signed-in user: no page, straight back to the RP.
	alice.login()
	r = alice.get("/oauth/logout?" + url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://app.example/bye"}, "state": {"s3"}}.Encode())
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "https://app.example/bye?state=s3" || signedIn(alice) {
		t.Fatalf("logout with hint = %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	// Already signed out: the registered redirect is followed, otherwise a page says so.
	if r := alice.get("/oauth/logout?" + url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://app.example/bye"}}.Encode()); r.Header.Get("Location") != "https://app.example/bye" {
		t.Errorf("logout while signed out = %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r := alice.get("/oauth/logout"); r.StatusCode != 200 || !strings.Contains(r.Body, "Signed out") {
		t.Errorf("bare logout while signed out = %d", r.StatusCode)
	}
	// An expired hint still identifies the client (RP-Initiated Logout §2).
	ts.clock.Advance(50 * time.Minute)
	alice.login()
	if r := alice.get("/oauth/logout?id_token_hint=" + url.QueryEscape(hint)); r.StatusCode != 200 || signedIn(alice) {
		t.Errorf("logout with an old hint = %d signed in %v", r.StatusCode, signedIn(alice))
	}
}

func TestOIDCCLI(t *testing.T) {
	env := map[string]string{"OAUTHD_DB": filepath.Join(t.TempDir(), "o.db")}
	code, out, errs := cli(t, env, "correct horse battery\n", "user", "add", "-name", "Alice Example", "-email", "alice@example.org", "alice")
	if code != 0 || !strings.Contains(out, `"name":"Alice Example"`) || !strings.Contains(out, `"email_verified":true`) {
		t.Fatalf("user add -name -email = %d %q %q", code, out, errs)
	}
	if code, _, errs := cli(t, env, "correct horse battery\n", "user", "add", "-email", "not-an-email", "bob"); code != 2 || !strings.Contains(errs, "email") {
		t.Errorf("user add with a bad email = %d %q", code, errs)
	}
	code, _, errs = cli(t, env, "", "client", "add", "-name", "Grafana", "-redirect-uri", "https://grafana.example/login/generic_oauth",
		"-post-logout-redirect-uri", "https://grafana.example/login", "-id-token-alg", "ES256", "-always-refresh")
	if code != 0 {
		t.Fatalf("client add with OIDC options = %d %q", code, errs)
	}
	_, out, _ = cli(t, env, "", "client", "list")
	for _, want := range []string{`"post_logout_redirect_uris":["https://grafana.example/login"]`, `"id_token_signed_response_alg":"ES256"`, `"always_refresh":true`} {
		if !strings.Contains(out, want) {
			t.Errorf("client list lacks %s: %q", want, out)
		}
	}
	for _, args := range [][]string{
		{"client", "add", "-name", "X", "-redirect-uri", "https://x.example/cb", "-id-token-alg", "HS256"},
		{"client", "add", "-name", "X", "-redirect-uri", "https://x.example/cb", "-post-logout-redirect-uri", "http://x.example/"},
		{"keys", "frob"},
	} {
		if code, _, _ := cli(t, env, "", args...); code != 2 {
			t.Errorf("oauthd %q = %d; want 2", args, code)
		}
	}
}

// TestMigrationV1toV2 upgrades a database written by the first schema, keeping its data.
func TestMigrationV1toV2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(migrations[0] + "; PRAGMA user_version = 1;" +
		"INSERT INTO users(sub, username, password_hash, admin, created_at) VALUES('s-1', 'old', 'x', 0, 1);" +
		`INSERT INTO clients(id, name, redirect_uris, public, created_at) VALUES('c-1', 'Old', '["https://o.example/cb"]', 0, 1);`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err := openStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := st.userByName(context.Background(), "old")
	c, err2 := st.clientByID(context.Background(), "c-1")
	if err != nil || err2 != nil || u.Sub != "s-1" || u.Name != "" || c.IDTokenAlg != "RS256" || len(c.PostLogoutURIs) != 0 {
		t.Fatalf("after upgrade: user %+v (%v), client %+v (%v)", u, err, c, err2)
	}
}

// TestAccountSelfService: the password change (current password required; other sessions
// end; the box, checked by default, revokes every app) and the sessions list with its buttons.
func TestAccountSelfService(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	b, other := ts.browser("alice", "correct horse battery"), ts.browser("alice", "correct horse battery")
	b.login()
	other.login()
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)
	ap := b.get("/account")
	if !strings.Contains(ap.Body, "Where you are signed in") || strings.Count(ap.Body, `name="session"`) != 2 || !strings.Contains(ap.Body, "127.0.0.1") || !strings.Contains(ap.Body, "(this one)") {
		t.Fatalf("the sessions list: %s", ap.Body)
	}
	if !strings.Contains(ap.Body, `name="revoke_apps" checked`) {
		t.Error("the revoke-apps box is not checked by default")
	}
	csrf := hidden(ap.Body, "csrf_token")
	change := func(cur, nw string, apps bool) page {
		f := url.Values{"csrf_token": {csrf}, "current_password": {cur}, "new_password": {nw}, "new_password2": {nw}}
		if apps {
			f.Set("revoke_apps", "on")
		}
		return b.post("/account/password", f)
	}
	if p := change("wrong", "a new long password", true); p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, "current password is wrong") {
		t.Fatalf("a wrong current password = %d", p.StatusCode)
	}
	if p := change("correct horse battery", "a new long password", false); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("change = %d %s", p.StatusCode, p.Body)
	}
	if !strings.Contains(b.get("/account").Body, "Your password is changed") || strings.Contains(other.get("/").Body, "Signed in") {
		t.Error("after the change: no notice, or the other session still signed in")
	}
	if !ts.active(c, str(tok.JSON["access_token"])) {
		t.Error("an unchecked box revoked the apps")
	}
	if p := change("a new long password", "a third long password", true); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("second change = %d", p.StatusCode)
	}
	if ts.active(c, str(tok.JSON["access_token"])) || ts.active(c, str(tok.JSON["refresh_token"])) {
		t.Error("the checked box left an app's tokens active")
	}
	if p := ts.browser("alice", "a third long password").login(); p.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-in with the new password = %d", p.StatusCode)
	}
	// End a session; end all others; end the current one.
	third := ts.browser("alice", "a third long password")
	third.login()
	ap = b.get("/account")
	if p := b.post("/account/sessions", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}, "all": {"others"}}); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign out everywhere else = %d", p.StatusCode)
	}
	if strings.Contains(third.get("/").Body, "Signed in") {
		t.Error("another session survived 'sign out everywhere else'")
	}
	ap = b.get("/account")
	id := regexp.MustCompile(`name="session" value="([0-9a-f]{16})"`).FindStringSubmatch(ap.Body)
	if id == nil {
		t.Fatal("no session id on the page")
	}
	if p := b.post("/account/sessions", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}, "session": {id[1]}}); p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/login" {
		t.Fatalf("end the current session = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	if strings.Contains(b.get("/").Body, "Signed in") {
		t.Error("the ended current session still works")
	}
	for ua, want := range map[string]string{
		"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0":                                                    "Firefox on Linux",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/604.1": "Safari on iPhone",
		"": "unknown browser",
	} {
		if got := browserName(ua); got != want {
			t.Errorf("browserName(%q) = %q; want %q", ua, got, want)
		}
	}
}
