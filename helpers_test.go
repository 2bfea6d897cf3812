package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// testIter keeps password hashing fast in tests; production uses defaultPBKDF2Iter.
const testIter = 1000

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log sink that tests can read while the server writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testKeys caches one signing key per algorithm for the whole test run: RSA generation is slow.
var testKeys = struct {
	sync.Mutex
	m map[string]crypto.Signer
}{m: map[string]crypto.Signer{}}

func cachedKey(alg string) (crypto.Signer, error) {
	testKeys.Lock()
	defer testKeys.Unlock()
	if k, ok := testKeys.m[alg]; ok {
		return k, nil
	}
	k, err := generateKey(alg)
	testKeys.m[alg] = k
	return k, err
}

// testServer is a real server on a real SQLite file in t.TempDir(), behind httptest.
type testServer struct {
	t     testing.TB
	s     *server
	srv   *httptest.Server
	url   string
	clock *fakeClock
	logs  *syncBuffer
}

// newTestServer starts a server with a fake clock, fast password hashing and a captured
// debug log; edit adjusts the configuration.
func newTestServer(t testing.TB, edit ...func(*config)) *testServer {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	cfg := defaultConfig()
	cfg.DB = filepath.Join(t.TempDir(), "oauthd.db")
	cfg.Issuer = "http://" + srv.Listener.Addr().String()
	cfg.PasswordIter = testIter
	cfg.KeyGen = cachedKey
	for _, e := range edit {
		e(&cfg)
	}
	st, err := openStore(context.Background(), cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := newServer(context.Background(), cfg, st, log)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s.now = clock.Now
	srv.Config.Handler = s.routes()
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &testServer{t: t, s: s, srv: srv, url: srv.URL, clock: clock, logs: logs}
}

// addServiceClient registers a confidential client allowed only client_credentials, for scope.
func (ts *testServer) addServiceClient(scope string) testClient {
	ts.t.Helper()
	sp, err := clientSpec{Name: "Backup job", Scope: scope, GrantTypes: []string{grantClientCredentials}}.build()
	if err != nil {
		ts.t.Fatal(err)
	}
	c := testClient{client: sp, Secret: newSecret()}
	c.SecretHash = hashSecret(c.Secret)
	if err := ts.s.store.createClient(context.Background(), c.client); err != nil {
		ts.t.Fatal(err)
	}
	return c
}

// addUser creates a user with a fast hash and returns it.
func (ts *testServer) addUser(name, password string) user {
	ts.t.Helper()
	u, err := newUser(name, password, false, testIter, ts.clock.Now())
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := ts.s.store.createUser(context.Background(), u); err != nil {
		ts.t.Fatal(err)
	}
	u, _ = ts.s.store.userByName(context.Background(), name)
	return u
}

// testClient is a registered client with its plaintext secret.
type testClient struct {
	client
	Secret string
}

// addClient registers a client through the same validation as the CLI.
func (ts *testServer) addClient(public bool, scope string, uris ...string) testClient {
	ts.t.Helper()
	c, err := clientSpec{Name: "Test App", Description: "A test application", Scope: scope, RedirectURIs: uris, Public: public, Vetted: true}.build()
	if err != nil {
		ts.t.Fatal(err)
	}
	tc := testClient{client: c}
	if !public {
		tc.Secret = newSecret()
		tc.SecretHash = hashSecret(tc.Secret)
	}
	if err := ts.s.store.createClient(context.Background(), tc.client); err != nil {
		ts.t.Fatal(err)
	}
	return tc
}

// page is a response with its body read.
type page struct {
	*http.Response
	Body string
}

// browser is a cookie-keeping HTTP client that does not follow redirects.
type browser struct {
	t    testing.TB
	ts   *testServer
	c    *http.Client
	user string
	pass string
}

func (ts *testServer) browser(user, pass string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: ts.t, ts: ts, user: user, pass: pass, c: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return page{resp, string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.ts.abs(path), nil)
	return b.do(req)
}

// post submits a form as a browser would, from the server's own origin.
func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.ts.abs(path), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.ts.url)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return b.do(req)
}

func (ts *testServer) abs(path string) string {
	if strings.HasPrefix(path, "http") {
		return path
	}
	return ts.url + path
}

var hiddenRE = regexp.MustCompile(`name="([a-z_0-9]+)" value="([^"]*)"`)

// hidden returns the value of a named input of a page.
func hidden(body, name string) string {
	for _, m := range hiddenRE.FindAllStringSubmatch(body, -1) {
		if m[1] == name {
			return html.UnescapeString(m[2])
		}
	}
	return ""
}

// login signs the browser in through the login form.
func (b *browser) login() page {
	b.t.Helper()
	p := b.get("/login")
	return b.post("/login", url.Values{"username": {b.user}, "password": {b.pass}, "csrf_token": {hidden(p.Body, "csrf_token")}, "next": {"/"}})
}

// authorize walks an authorization request through login and consent (decision "" stops at
// the consent page) and returns the last response.
func (b *browser) authorize(params url.Values, decision string) page {
	b.t.Helper()
	p := b.get("/oauth/authorize?" + params.Encode())
	for i := 0; i < 6; i++ {
		loc := p.Header.Get("Location")
		switch {
		case p.StatusCode == http.StatusFound && strings.HasPrefix(loc, "/login"):
			lp := b.get(loc)
			p = b.post("/login", url.Values{"username": {b.user}, "password": {b.pass},
				"csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
		case (p.StatusCode == http.StatusSeeOther || p.StatusCode == http.StatusFound) && strings.HasPrefix(loc, "/"):
			p = b.get(loc)
		case p.StatusCode == http.StatusOK && strings.Contains(p.Body, `name="decision"`) && decision != "":
			p = b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")},
				"request": {hidden(p.Body, "request")}, "decision": {decision}})
		default:
			return p
		}
	}
	b.t.Fatalf("authorize: too many steps")
	return p
}

// pkce returns a verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	verifier = newSecret() + "-pkce"
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// codeRequest is a typical authorization request for c with PKCE.
func codeRequest(c testClient, verifierOut *string) url.Values {
	v, ch := pkce()
	if verifierOut != nil {
		*verifierOut = v
	}
	return url.Values{"response_type": {"code"}, "client_id": {c.ID}, "redirect_uri": {c.RedirectURIs[0]},
		"scope": {strings.Join(c.Scopes, " ")}, "state": {"st-" + newSecret()[:8]},
		"code_challenge": {ch}, "code_challenge_method": {"S256"}}
}

// getCode runs the flow (allowing consent) and returns the code and verifier.
func (b *browser) getCode(c testClient) (code, verifier string) {
	b.t.Helper()
	q := codeRequest(c, &verifier)
	p := b.authorize(q, "allow")
	loc, err := url.Parse(p.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		b.t.Fatalf("authorize: no code: %d %s %s", p.StatusCode, p.Header.Get("Location"), p.Body)
	}
	return loc.Query().Get("code"), verifier
}

// tokenCall posts form to path; with a secret it authenticates with Basic (§2.3.1 encoding).
type tokenCall struct {
	Status int
	Header http.Header
	JSON   map[string]any
	Raw    string
}

func (ts *testServer) postToken(path string, form url.Values, id, secret string) tokenCall {
	ts.t.Helper()
	req, _ := http.NewRequest("POST", ts.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	tc := tokenCall{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	json.Unmarshal(raw, &tc.JSON)
	return tc
}

// exchange redeems a code for c (Basic for confidential clients, client_id for public ones).
func (ts *testServer) exchange(c testClient, code, verifier string) tokenCall {
	ts.t.Helper()
	f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURIs[0]}, "code_verifier": {verifier}}
	if c.Public {
		f.Set("client_id", c.ID)
		return ts.postToken("/oauth/access_token", f, "", "")
	}
	return ts.postToken("/oauth/access_token", f, c.ID, c.Secret)
}

func (ts *testServer) refresh(c testClient, rt string) tokenCall {
	ts.t.Helper()
	return ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, c.ID, c.Secret)
}

// active introspects tok as client rs.
func (ts *testServer) active(rs testClient, tok string) bool {
	ts.t.Helper()
	r := ts.postToken("/oauth/introspect", url.Values{"token": {tok}}, rs.ID, rs.Secret)
	if r.Status != 200 {
		ts.t.Fatalf("introspect = %d %s", r.Status, r.Raw)
	}
	return r.JSON["active"] == true
}

func str(v any) string { s, _ := v.(string); return s }

// decodeCall reads a JSON response (its body, unless given already read).
func decodeCall(resp *http.Response, body ...string) tokenCall {
	raw := strings.Join(body, "")
	if len(body) == 0 {
		b, _ := io.ReadAll(resp.Body)
		raw = string(b)
	}
	tc := tokenCall{Status: resp.StatusCode, Header: resp.Header, Raw: raw}
	json.Unmarshal([]byte(raw), &tc.JSON)
	return tc
}
