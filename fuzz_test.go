package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// Fuzz targets. `go test` runs their seed corpora (the f.Add calls and testdata/fuzz/<name>);
// `go test -run '^$' -fuzz FuzzX -fuzztime 5m` explores. Each asserts: no panic, no 500,
// and every refusal is an RFC error code (JSON) or, for a person, an error page; nothing
// ever redirects to a URI that was not registered.

// rfcErrors are the error codes our JSON endpoints may answer with (RFC 6749 §5.2 and §4.1.2.1,
// RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8628 §3.5, OIDC Core §3.1.2.6).
var rfcErrors = []string{errInvalidRequest, errInvalidClient, errInvalidGrant, errUnauthorizedClient,
	errUnsupportedGrantType, errUnsupportedResponseType, errInvalidScope, errAccessDenied,
	errTemporarilyUnavailable, errLoginRequired, errConsentRequired, errInvalidRedirectURI,
	errInvalidClientMetadata, "invalid_token", "authorization_pending", "slow_down", "expired_token"}

// checkAnswer fails t unless rec is an acceptable answer to fuzzed input: never a 5xx other
// than 503, JSON errors carry an RFC code and a description, and a redirect goes to the
// server itself or to one of the registered redirect URIs.
func checkAnswer(t *testing.T, ts *testServer, rec *httptest.ResponseRecorder, registered []string) {
	t.Helper()
	if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") && rec.Code >= 400 {
		var body map[string]any
		if json.Unmarshal(rec.Body.Bytes(), &body) != nil {
			t.Fatalf("status %d with a body that is not JSON: %q", rec.Code, rec.Body)
		}
		code, _ := body["error"].(string)
		desc, _ := body["error_description"].(string)
		if !slices.Contains(rfcErrors, code) || desc == "" {
			t.Fatalf("status %d with error %q (%q): not an RFC error with a description", rec.Code, code, desc)
		}
	}
	if loc := rec.Header().Get("Location"); loc != "" {
		u, err := url.Parse(loc)
		if err != nil {
			t.Fatalf("unparsable Location %q", loc)
		}
		if !u.IsAbs() && u.Host == "" || strings.HasPrefix(loc, ts.s.cfg.Issuer+"/") {
			return // our own pages
		}
		base, _, _ := strings.Cut(loc, "?")
		for _, r := range registered {
			rb, _, _ := strings.Cut(r, "?")
			if base == rb {
				return
			}
			if _, _, ok := matchRedirect([]string{r}, base); ok {
				return // the loopback port may vary (RFC 8252 §7.3)
			}
		}
		t.Fatalf("redirect to %q, which is not registered", loc)
	}
}

func FuzzRedirectURI(f *testing.F) {
	for _, s := range []string{"https://app.example/cb", "http://127.0.0.1:8080/cb", "http://[::1]/cb?x=1",
		"com.example.app:/cb", "javascript:alert(1)", "https://app.example/cb#frag", "http://evil.example/cb",
		"https://user@app.example/cb", "http://127.0.0.1:99999/cb", "HTTPS://APP.EXAMPLE/cb", "//app.example/cb", ""} {
		f.Add(s, "https://app.example/cb", false)
	}
	f.Fuzz(func(t *testing.T, registered, asked string, public bool) {
		if validateRedirectURI(registered, public) != nil {
			return
		}
		uri, _, ok := matchRedirect([]string{registered}, asked)
		if !ok {
			return
		}
		if uri == registered {
			return
		}
		// Only a loopback port may differ.
		ru, err1 := url.Parse(registered)
		au, err2 := url.Parse(uri)
		if err1 != nil || err2 != nil || au.Scheme != "http" || !isLoopbackHost(au.Hostname()) ||
			ru.Hostname() != au.Hostname() || ru.Path != au.Path || ru.RawQuery != au.RawQuery || au.Fragment != "" || au.User != nil {
			t.Fatalf("registered %q matched %q", registered, uri)
		}
	})
}

func FuzzBasicAuth(f *testing.F) {
	for _, s := range []string{"Basic YTpi", "Basic " + b64std("id%3A1:s%20e"), "Basic", "Bearer x", "Basic !!!",
		"basic YTpi", "Basic " + b64std("noseparator"), "Basic " + b64std("%zz:x")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		id, secret, oe := parseBasic(h)
		if oe != nil {
			if oe.Code != errInvalidClient || oe.Description == "" {
				t.Fatalf("%q: %v", h, oe)
			}
			return
		}
		_, _ = id, secret
	})
}

// fuzzServer is a test server with a confidential and a public client registered.
func fuzzServer(f *testing.F, edit ...func(*config)) (*testServer, []testClient) {
	ts := newTestServer(f, edit...)
	conf := ts.addClient(false, "read write", "https://app.example/cb", "http://127.0.0.1/cb")
	pub := ts.addClient(true, "read", "com.example.app:/cb")
	return ts, []testClient{conf, pub}
}

// sessionCookie signs b in and returns its session cookie.
func (b *browser) sessionCookie() *http.Cookie {
	b.login()
	u, _ := url.Parse(b.ts.url)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == "oauthd_session" {
			return c
		}
	}
	b.t.Fatal("no session cookie after login")
	return nil
}

func b64std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func registeredURIs(cs []testClient) (all []string) {
	for _, c := range cs {
		all = append(all, c.RedirectURIs...)
	}
	return all
}

func FuzzAuthorizeRequest(f *testing.F) {
	ts, cs := fuzzServer(f)
	ts.addUser("alice", "correct horse battery")
	cookie := ts.browser("alice", "correct horse battery").sessionCookie()
	id := url.QueryEscape(cs[0].ID)
	for _, q := range []string{
		"response_type=code&client_id=" + id + "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
		"response_type=code&client_id=" + id + "&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
		"response_type=token&client_id=" + id, "client_id=" + id + "&client_id=" + id, "response_type=code&client_id=nope",
		"response_type=code&client_id=" + id + "&scope=openid%20admin&prompt=none", "%zz", "response_type=code&client_id=" + id + "&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcb",
	} {
		f.Add(q, true)
	}
	registered := registeredURIs(cs)
	h := ts.s.routes()
	f.Fuzz(func(t *testing.T, query string, signedIn bool) {
		req := httptest.NewRequest("GET", ts.url+"/oauth/authorize", nil)
		req.URL.RawQuery = query
		if signedIn {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkAnswer(t, ts, rec, registered)
	})
}

func FuzzTokenRequest(f *testing.F) {
	ts, cs := fuzzServer(f)
	auth := "Basic " + b64std(url.QueryEscape(cs[0].ID)+":"+url.QueryEscape(cs[0].Secret))
	for _, b := range []string{"grant_type=client_credentials", "grant_type=authorization_code&code=x&code_verifier=y",
		"grant_type=refresh_token&refresh_token=x&scope=read", "grant_type=password&username=a&password=b",
		"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=x", "grant_type=a&grant_type=b",
		"client_id=x&client_secret=y&grant_type=client_credentials", "%zz", strings.Repeat("a=b&", 100)} {
		f.Add(b, auth, "application/x-www-form-urlencoded")
	}
	f.Add("grant_type=client_credentials", "Basic !!", "text/plain")
	h := ts.s.routes()
	f.Fuzz(func(t *testing.T, body, authz, ctype string) {
		for _, path := range []string{"/oauth/token", "/oauth/introspect", "/oauth/revoke"} {
			req := httptest.NewRequest("POST", ts.url+path, strings.NewReader(body))
			req.Header.Set("Content-Type", ctype)
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			checkAnswer(t, ts, rec, nil)
			if rec.Code == 200 && path == "/oauth/token" && rec.Header().Get("Cache-Control") != "no-store" {
				t.Fatal("a token response without Cache-Control: no-store")
			}
		}
	})
}

func FuzzVerifyJWT(f *testing.F) {
	ts, cs := fuzzServer(f)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "openid", "https://app.example/cb")
	code, ver := ts.browser("alice", "correct horse battery").getCode(c)
	idt := str(ts.exchange(c, code, ver).JSON["id_token"])
	parts := strings.Split(idt, ".")
	f.Add(idt)
	// An ES256 ID token too, so that both signature paths are explored.
	esSpec, _ := clientSpec{Name: "es", Scope: "openid", RedirectURIs: []string{"https://es.example/cb"}, IDTokenAlg: "ES256"}.build()
	es := testClient{client: esSpec, Secret: newSecret()}
	es.SecretHash = hashSecret(es.Secret)
	if err := ts.s.store.createClient(context.Background(), es.client); err != nil {
		f.Fatal(err)
	}
	code, ver = ts.browser("alice", "correct horse battery").getCode(es)
	esIDT := str(ts.exchange(es, code, ver).JSON["id_token"])
	f.Add(esIDT)
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add("eyJhbGciOiJub25lIn0." + parts[1] + ".")
	f.Add(parts[0] + ".e30." + parts[2])
	f.Add("a.b.c")
	f.Add("")
	_ = cs
	f.Fuzz(func(t *testing.T, tok string) {
		claims, err := ts.s.verifyIDTokenHint(context.Background(), tok)
		if err == nil && claims["iss"] != ts.s.cfg.Issuer {
			t.Fatalf("accepted a token of issuer %v", claims["iss"])
		}
		// Only our two tokens verify (up to another encoding of the same signature bytes).
		if err == nil && !strings.HasPrefix(tok, parts[0]+"."+parts[1]+".") && !strings.HasPrefix(tok, esIDT[:strings.LastIndex(esIDT, ".")+1]) {
			t.Fatalf("accepted a token we did not sign: %q", tok)
		}
	})
}

func FuzzDCRMetadata(f *testing.F) {
	ts, _ := fuzzServer(f, func(c *config) { c.Registration = registrationOpen })
	for _, b := range []string{`{"redirect_uris":["https://app.example/cb"],"client_name":"x"}`,
		`{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"]}`,
		`{"redirect_uris":["javascript:alert(1)"]}`, `{"redirect_uris":"https://a"}`, `{"grant_types":["client_credentials"]}`,
		`{}{}`, `[]`, `{"redirect_uris":["https://app.example/cb"],"scope":"openid profile","jwks":{}}`, ``} {
		f.Add(b)
	}
	h := ts.s.routes()
	f.Fuzz(func(t *testing.T, body string) {
		ts.s.registrations = newLimiter(1<<30, 1) // the open-registration rate limit is not under test
		req := httptest.NewRequest("POST", ts.url+"/oauth/register", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkAnswer(t, ts, rec, nil)
		if rec.Code == http.StatusCreated {
			var m map[string]any
			json.Unmarshal(rec.Body.Bytes(), &m)
			uris, _ := m["redirect_uris"].([]any)
			for _, u := range uris {
				s, _ := u.(string)
				if err := validateRedirectURI(s, m["token_endpoint_auth_method"] == "none"); err != nil {
					t.Fatalf("registered redirect URI %q: %v", s, err)
				}
			}
		}
	})
}

// FuzzIntrospectionJSON: the hand-written introspection answer is byte for byte what
// encoding/json makes of the same struct, for any strings in it (usernames and scopes come
// from operators and registrations).
func FuzzIntrospectionJSON(f *testing.F) {
	for _, s := range []string{"", "alice", `q"uote\back`, "<script>&amp;</script>", "tab\tnl\ncr\rbs\bff\f\x00\x1f\x7f",
		"Zoë ☃ 😀", "\u2028\u2029", "bad \xff\xfe utf-8 \xc3", "\xed\xa0\x80 surrogate", "read write openid"} {
		f.Add(s, s+"x", int64(1_800_000_000), true)
		f.Add(s, s, int64(1_800_000_001), false)
		f.Add(s, "", int64(1_800_000_002), true)
	}
	f.Fuzz(func(t *testing.T, a, b string, n int64, access bool) {
		v := introspection{Active: true, Scope: a, ClientID: b, Username: a, Sub: b, TokenUse: "refresh_token", Exp: n, Iat: -n, Iss: a + b}
		if access {
			v.TokenType, v.TokenUse, v.Username, v.Aud = "Bearer", "access_token", "", a // aud: a resource (RFC 8707)
			v.AuthTime, v.ACR, v.AMR = n, acrOf(a), amrList(a)                           // amr lists of any words (mfa.go)
		}
		switch n % 3 { // the groups claim: absent, empty, or names
		case 1:
			v.Groups = []string{}
		case 2:
			v.Groups = []string{a, b}
		}
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := v.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("appendJSON = %s\nencoding/json = %s", got, want)
		}
	})
}

// FuzzMetadataDocument: any JSON body fetched as a client ID metadata document either makes a
// public, dynamic client whose redirect URIs are valid ones and whose name is valid UTF-8 of
// at most 200 bytes (when the document's was valid UTF-8), or is refused with an error —
// never a panic.
func FuzzMetadataDocument(f *testing.F) {
	const id = "https://app.example/client.json"
	f.Add(`{"client_id":"` + id + `","client_name":"Claude","redirect_uris":["http://127.0.0.1:3000/cb"]}`)
	f.Add(`{"client_id":"` + id + `","redirect_uris":["https://app.example/cb"],"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":"none"}`)
	f.Add(`{"client_id":"` + id + `","client_name":"` + strings.Repeat("é", 150) + `","redirect_uris":["com.example.app:/cb"]}`)
	f.Add(`{"client_id":"https://other.example/c.json","redirect_uris":["https://a.example/cb"]}`)
	f.Add(`{"client_id":"` + id + `","redirect_uris":["https://a.example/cb#frag"],"client_secret":"x"}`)
	f.Fuzz(func(t *testing.T, body string) {
		var d metadataDocument
		if json.Unmarshal([]byte(body), &d) != nil {
			return
		}
		c, err := d.client(id)
		if err != nil {
			return
		}
		if !c.Public || !c.Dynamic || c.ID != id || len(c.RedirectURIs) == 0 || len(c.Name) > 200 {
			t.Fatalf("client from %s = %+v", body, c)
		}
		if utf8.ValidString(d.ClientName) && !utf8.ValidString(c.Name) {
			t.Fatalf("name %q from %q", c.Name, d.ClientName)
		}
		for _, u := range c.RedirectURIs {
			if err := validateRedirectURI(u, true); err != nil {
				t.Fatalf("redirect URI %q accepted from %s: %v", u, body, err)
			}
		}
	})
}

// FuzzForwarded: any X-Forwarded-* values are either a request description whose origin is
// a normalized http(s) origin and whose URI starts with /, or a readable refusal — never a
// panic.
func FuzzForwarded(f *testing.F) {
	f.Add("https", "app.example.com", "/calendar?x=1", "GET")
	f.Add("HTTP", "App.Example.com:8080", "/.oauthd/callback?code=a&state=b", "POST")
	f.Add("https", "app.example.com, evil.example", "/", "")
	f.Add("ftp", "[::1]:443", "//x", "G ET")
	f.Add("https", "app.example.com:443", "/\x7f", "GET")
	f.Fuzz(func(t *testing.T, proto, host, uri, method string) {
		h := http.Header{}
		for k, v := range map[string]string{"X-Forwarded-Proto": proto, "X-Forwarded-Host": host, "X-Forwarded-Uri": uri, "X-Forwarded-Method": method} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		fw, msg := parseForwarded(h)
		if msg != "" {
			if !strings.HasSuffix(msg, ".") {
				t.Fatalf("refusal %q is not a sentence", msg)
			}
			return
		}
		if !strings.HasPrefix(fw.Origin, "http://") && !strings.HasPrefix(fw.Origin, "https://") || !strings.HasPrefix(fw.URI, "/") {
			t.Fatalf("parseForwarded(%q, %q, %q) = %+v", proto, host, uri, fw)
		}
		if n, err := normalizeOrigin(fw.Origin); err == nil && n != fw.Origin {
			t.Fatalf("origin %q is not normalized (%q)", fw.Origin, n)
		}
		if fw.Secure != strings.HasPrefix(fw.Origin, "https://") {
			t.Fatalf("Secure %v for %q", fw.Secure, fw.Origin)
		}
	})
}
