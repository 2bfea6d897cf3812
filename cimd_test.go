package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// docHost is an https server of client metadata documents, counting the fetches per path.
type docHost struct {
	srv *httptest.Server
	mu  sync.Mutex
	h   map[string]http.HandlerFunc
	n   map[string]int
}

// newDocHost starts a TLS server whose handlers the test sets per path.
func newDocHost(t *testing.T) *docHost {
	d := &docHost{h: map[string]http.HandlerFunc{}, n: map[string]int{}}
	d.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		h := d.h[r.URL.Path]
		d.n[r.URL.Path]++
		d.mu.Unlock()
		if h == nil {
			http.NotFound(w, r)
			return
		}
		h(w, r)
	}))
	t.Cleanup(d.srv.Close)
	return d
}

// serve answers path with handler h.
func (d *docHost) serve(path string, h http.HandlerFunc) string {
	d.mu.Lock()
	d.h[path] = h
	d.mu.Unlock()
	return d.srv.URL + path
}

// fetches is how often path was asked for.
func (d *docHost) fetches(path string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[path]
}

// doc serves a valid document for the client at path with the given redirect URIs.
func (d *docHost) doc(path, cacheControl string, edit func(map[string]any)) string {
	id := d.srv.URL + path
	return d.serve(path, func(w http.ResponseWriter, r *http.Request) {
		m := map[string]any{"client_id": id, "client_name": "Claude", "redirect_uris": []string{"http://127.0.0.1/callback", "https://claude.example/cb"},
			"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"}}
		if edit != nil {
			edit(m)
		}
		w.Header().Set("Content-Type", "application/json")
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		json.NewEncoder(w).Encode(m)
	})
}

// cimdTestServer is a test server that trusts d's certificate and may fetch from loopback.
func cimdTestServer(t *testing.T, d *docHost, edit ...func(*config)) *testServer {
	pool := x509.NewCertPool()
	pool.AddCert(d.srv.Certificate())
	return newTestServer(t, append([]func(*config){func(c *config) {
		c.AllowPrivateClientMetadata = true
		c.MetadataTLS = &tls.Config{RootCAs: pool}
		c.MetadataTimeout = time.Second
	}}, edit...)...)
}

// metadataRequest is an authorization request of the document client id, with PKCE.
func metadataRequest(id, redirect string, verifier *string) url.Values {
	v, ch := pkce()
	if verifier != nil {
		*verifier = v
	}
	return url.Values{"response_type": {"code"}, "client_id": {id}, "redirect_uri": {redirect}, "state": {"s1"},
		"code_challenge": {ch}, "code_challenge_method": {"S256"}}
}

// TestClientMetadataDocument: a client known only by its metadata document signs a user in,
// the consent page says where it comes from and is never skipped on first use, the code is
// exchanged as a public client, and the discovery document says it is supported.
func TestClientMetadataDocument(t *testing.T) {
	d := newDocHost(t)
	ts := cimdTestServer(t, d)
	ts.addUser("alice", "correct horse battery")
	notes := ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read", false, 0)
	id := d.doc("/oauth/client.json", "max-age=3600", nil)
	host := strings.TrimPrefix(d.srv.URL, "https://")
	b := ts.browser("alice", "correct horse battery")
	b.login()

	// First use: no prompt=none shortcut, even for a request that asks for nothing; and since
	// nobody vetted the client, the refusal is a page, not a redirect to its document's URI.
	q := metadataRequest(id, "http://127.0.0.1:53111/callback", nil) // loopback: any port (RFC 8252 §7.3)
	q.Set("prompt", "none")
	if p := b.get("/oauth/authorize?" + q.Encode()); p.StatusCode != http.StatusBadRequest || p.Header.Get("Location") != "" || !strings.Contains(p.Body, "consent_required") {
		t.Fatalf("prompt=none on first use = %d %q; want an error page saying consent_required", p.StatusCode, p.Header.Get("Location"))
	}
	var verifier string
	q = metadataRequest(id, "http://127.0.0.1:53111/callback", &verifier)
	q.Set("resource", notes.URI)
	q.Set("scope", "notes:read")
	p := b.authorize(q, "")
	if p.StatusCode != 200 || !strings.Contains(p.Body, "Claude</span>, an app from <strong class=\"host\">"+host+"</strong>") ||
		!strings.Contains(p.Body, "your administrator has not reviewed it") || !strings.Contains(p.Body, "Notes MCP") {
		t.Fatalf("consent page = %d %s", p.StatusCode, p.Body)
	}
	p = b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}})
	loc, _ := url.Parse(p.Header.Get("Location"))
	if loc.Query().Get("code") == "" || loc.Port() != "53111" {
		t.Fatalf("consent = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "client_id": {id},
		"redirect_uri": {"http://127.0.0.1:53111/callback"}, "code_verifier": {verifier}, "resource": {notes.URI}}, "", "")
	if r.Status != 200 || str(r.JSON["refresh_token"]) == "" || str(r.JSON["scope"]) != "notes:read" {
		t.Fatalf("exchange = %d %s", r.Status, r.Raw)
	}
	if in := ts.introspect(notes.cred(), str(r.JSON["access_token"])); in.JSON["client_id"] != id || in.JSON["aud"] != notes.URI {
		t.Errorf("introspection = %s", in.Raw)
	}
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {str(r.JSON["refresh_token"])}, "client_id": {id}}, "", ""); r.Status != 200 {
		t.Errorf("refresh = %d %s", r.Status, r.Raw)
	}
	// Approved once, the consent is remembered like any other; the document was fetched once.
	q = metadataRequest(id, "https://claude.example/cb", nil)
	q.Set("resource", notes.URI)
	q.Set("scope", "notes:read")
	if p := b.authorize(q, ""); !strings.Contains(p.Header.Get("Location"), "code=") {
		t.Errorf("second authorization = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	if n := d.fetches("/oauth/client.json"); n != 1 {
		t.Errorf("the document was fetched %d times; want once (cached for an hour)", n)
	}
	// A redirect URI that the document does not list is refused as for any client.
	if p := b.get("/oauth/authorize?" + metadataRequest(id, "https://evil.example/cb", nil).Encode()); p.StatusCode != 400 || !strings.Contains(p.Body, "not registered for it") {
		t.Errorf("unlisted redirect URI = %d %q", p.StatusCode, p.Body)
	}
	// A secret, or Basic authentication, gets nowhere: the client is public.
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, id, "guess"); r.Status != 401 {
		t.Errorf("client_credentials with a secret for a document client = %d %s", r.Status, r.Raw)
	}
	// The connection can be revoked by the user, though its id is a URL.
	cp := b.get("/oauth/client/connections")
	if !strings.Contains(cp.Body, url.PathEscape(id)) {
		t.Fatalf("connections page = %s", cp.Body)
	}
	cp = b.get("/oauth/client/connections/" + url.PathEscape(id) + "/revoke") // the confirmation page
	action := html.UnescapeString(between(cp.Body, `<form method="post" action="`, `"`))
	if action != "/oauth/client/connections/"+url.PathEscape(id)+"/revoke" {
		t.Errorf("the confirmation posts to %q", action)
	}
	if p := b.post(action, url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}}); p.StatusCode != http.StatusSeeOther {
		t.Errorf("revoking the document client's connection = %d %s", p.StatusCode, p.Body)
	}

	m := ts.postJSON("GET", "/.well-known/oauth-authorization-server", "", "")
	if m.JSON["client_id_metadata_document_supported"] != true {
		t.Errorf("metadata = %s", m.Raw)
	}
	// Turned off, the metadata says so and the authorization endpoint refuses such a client.
	off := cimdTestServer(t, d, func(c *config) { c.ClientMetadataDocuments = false })
	if m := off.postJSON("GET", "/.well-known/openid-configuration", "", ""); m.JSON["client_id_metadata_document_supported"] != false {
		t.Errorf("metadata with -client-metadata-documents=false = %s", m.Raw)
	}
	off.addUser("alice", "correct horse battery")
	ob := off.browser("alice", "correct horse battery")
	ob.login()
	if p := ob.get("/oauth/authorize?" + metadataRequest(id, "https://claude.example/cb", nil).Encode()); p.StatusCode != 400 || !strings.Contains(p.Body, "does not accept") {
		t.Errorf("a document client with the feature off = %d %s", p.StatusCode, p.Body)
	}
}

// TestClientMetadataRefusals: every document that cannot be used gets the error page with
// its reason, and nothing is stored.
func TestClientMetadataRefusals(t *testing.T) {
	d := newDocHost(t)
	ts := cimdTestServer(t, d)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	jsonDoc := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, body)
		}
	}
	tests := []struct {
		name, path string
		handler    http.HandlerFunc // nil: a valid document edited by edit
		edit       func(map[string]any)
		want       string
	}{
		{"redirect", "/redirect.json", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/oauth/good.json", http.StatusFound)
		}, nil, "redirect (HTTP 302)"},
		{"oversize", "/big.json", nil, func(m map[string]any) { m["client_name"] = strings.Repeat("x", 6<<10) }, "larger than 5 KiB"},
		{"slow", "/slow.json", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(10 * time.Second):
			case <-r.Context().Done():
			}
		}, nil, "within 1s"},
		{"slow body", "/slowbody.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"client_id":`))
			w.(http.Flusher).Flush()
			select {
			case <-time.After(10 * time.Second):
			case <-r.Context().Done():
			}
		}, nil, "within 1s"},
		{"wrong client_id", "/wrong.json", nil, func(m map[string]any) { m["client_id"] = "https://other.example/client.json" }, "is not the URL it was fetched from"},
		{"not JSON", "/html.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>hello</html>")
		}, nil, "is not JSON"},
		{"malformed JSON", "/bad.json", jsonDoc(`{"client_id": `), nil, "not a JSON object"},
		{"a JSON array", "/array.json", jsonDoc(`[1, 2]`), nil, "not a JSON object"},
		{"not found", "/missing.json", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, nil, "HTTP 404"},
		{"confidential", "/conf.json", nil, func(m map[string]any) { m["token_endpoint_auth_method"] = "client_secret_basic" }, "only public clients"},
		{"private_key_jwt", "/pkj.json", nil, func(m map[string]any) { m["token_endpoint_auth_method"] = "private_key_jwt" }, "only public clients"},
		{"a secret", "/secret.json", nil, func(m map[string]any) { m["client_secret"] = "s3cret" }, "client_secret"},
		{"no redirect URIs", "/nouris.json", nil, func(m map[string]any) { delete(m, "redirect_uris") }, "no redirect_uris"},
		{"bad redirect URI", "/baduri.json", nil, func(m map[string]any) { m["redirect_uris"] = []string{"http://evil.example/cb"} }, "non-loopback"},
		{"client_credentials", "/cc.json", nil, func(m map[string]any) { m["grant_types"] = []string{"client_credentials"} }, "grant type"},
		{"implicit", "/token.json", nil, func(m map[string]any) { m["response_types"] = []string{"token"} }, "response type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var id string
			if tt.handler != nil {
				id = d.serve(tt.path, tt.handler)
			} else {
				id = d.doc(tt.path, "", tt.edit)
			}
			p := b.get("/oauth/authorize?" + metadataRequest(id, "https://claude.example/cb", nil).Encode())
			if p.StatusCode < 400 || !strings.Contains(p.Body, "Application not usable") || !strings.Contains(p.Body, tt.want) || !strings.Contains(p.Body, id) {
				t.Fatalf("handleAuthorize(client_id %s) = %d %s; want the error page naming %q", tt.path, p.StatusCode, p.Body, tt.want)
			}
			if _, err := ts.s.store.clientByID(context.Background(), id); err == nil {
				t.Errorf("a refused document's client was stored")
			}
		})
	}
	// Not a client identifier URL at all.
	for _, bad := range []string{d.srv.URL, d.srv.URL + "/", d.srv.URL + "/a/../b.json", d.srv.URL + "/c.json#x"} {
		if p := b.get("/oauth/authorize?" + metadataRequest(bad, "https://claude.example/cb", nil).Encode()); p.StatusCode != 400 || !strings.Contains(p.Body, "client identifier URL") {
			t.Errorf("client_id %q = %d %s", bad, p.StatusCode, p.Body)
		}
	}

	// Without -allow-private-client-metadata a loopback address is refused after resolution
	// (localhost resolves to it; the check is on the dialed address).
	strict := newTestServer(t, func(c *config) { c.MetadataTimeout = time.Second })
	strict.addUser("alice", "correct horse battery")
	sb := strict.browser("alice", "correct horse battery")
	sb.login()
	good := d.doc("/good.json", "", nil)
	for _, id := range []string{good, strings.Replace(good, "127.0.0.1", "localhost", 1)} {
		p := sb.get("/oauth/authorize?" + metadataRequest(id, "https://claude.example/cb", nil).Encode())
		if p.StatusCode != 400 || !strings.Contains(p.Body, "loopback, private or link-local") {
			t.Errorf("a document on %s without the flag = %d %s", id, p.StatusCode, p.Body)
		}
	}
	if n := d.fetches("/good.json"); n != 0 {
		t.Errorf("the private address was reached %d times", n)
	}
}

// TestClientMetadataFetchLimit: document fetches are counted per source address before
// they are made; a cached document costs none.
func TestClientMetadataFetchLimit(t *testing.T) {
	d := newDocHost(t)
	ts := cimdTestServer(t, d)
	b := ts.browser("", "")
	cached := d.doc("/cached.json", "max-age=3600", nil)
	for i := range 31 {
		id := d.doc(fmt.Sprintf("/c%d.json", i), "", nil)
		p := b.get("/oauth/authorize?" + metadataRequest(id, "https://claude.example/cb", nil).Encode())
		switch {
		case i == 0:
			b.get("/oauth/authorize?" + metadataRequest(cached, "https://claude.example/cb", nil).Encode())
		case i < 29 && p.StatusCode != http.StatusFound:
			t.Fatalf("fetch %d = %d %s", i, p.StatusCode, p.Body)
		case i == 30 && (p.StatusCode != http.StatusTooManyRequests || !strings.Contains(p.Body, "Too many applications")):
			t.Fatalf("the 31st fetch in a minute = %d %s; want 429", p.StatusCode, p.Body)
		}
	}
	if n := d.fetches("/c30.json"); n != 0 {
		t.Errorf("the refused fetch was made")
	}
	if p := b.get("/oauth/authorize?" + metadataRequest(cached, "https://claude.example/cb", nil).Encode()); p.StatusCode != http.StatusFound {
		t.Errorf("a cached document while limited = %d; want it used", p.StatusCode)
	}
	ts.clock.Advance(time.Minute)
	if p := b.get("/oauth/authorize?" + metadataRequest(d.doc("/later.json", "", nil), "https://claude.example/cb", nil).Encode()); p.StatusCode != http.StatusFound {
		t.Errorf("a fetch a minute later = %d", p.StatusCode)
	}
}

// TestPublicAddr: the ranges a document fetch refuses.
func TestPublicAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "127.8.8.8", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "0.1.2.3",
		"100.64.0.1", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1", "::ffff:10.0.0.1",
		"::ffff:127.0.0.1", "64:ff9b::a00:1", "64:ff9b::7f00:1", "198.18.0.1", "192.0.2.1", "2001:db8::1", "240.0.0.1"} {
		if publicAddr(netip.MustParseAddr(a)) {
			t.Errorf("publicAddr(%s) = true", a)
		}
	}
	for _, a := range []string{"8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"} {
		if !publicAddr(netip.MustParseAddr(a)) {
			t.Errorf("publicAddr(%s) = false", a)
		}
	}
}

// TestClientMetadataCache: documents are used within their Cache-Control, at least a minute
// and at most a day; a changed document updates the stored client; the cache is bounded.
func TestClientMetadataCache(t *testing.T) {
	d := newDocHost(t)
	ts := cimdTestServer(t, d)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	ask := func(id string) page {
		t.Helper()
		p := b.get("/oauth/authorize?" + metadataRequest(id, "https://claude.example/cb", nil).Encode())
		if strings.HasPrefix(p.Header.Get("Location"), "/login") { // the session outlived by the clock
			b.login()
			p = b.get("/oauth/authorize?" + metadataRequest(id, "https://claude.example/cb", nil).Encode())
		}
		return p
	}
	for _, tt := range []struct {
		path, cacheControl string
		fresh, stale       time.Duration // still cached after fresh, fetched again after stale
	}{
		{"/a.json", "max-age=120", 110 * time.Second, 11 * time.Second},
		{"/b.json", "max-age=5", 50 * time.Second, 11 * time.Second},                    // at least a minute
		{"/c.json", "public, max-age=9999999", 23 * time.Hour, time.Hour + time.Second}, // at most a day
		{"/d.json", "no-store", 50 * time.Second, 11 * time.Second},
		{"/e.json", "", 50 * time.Second, 11 * time.Second},
	} {
		id := d.doc(tt.path, tt.cacheControl, nil)
		if p := ask(id); p.StatusCode != 200 {
			t.Fatalf("%s: %d %s", tt.path, p.StatusCode, p.Body)
		}
		ts.clock.Advance(tt.fresh)
		ask(id)
		if n := d.fetches(tt.path); n != 1 {
			t.Errorf("Cache-Control %q: fetched %d times within %v; want once", tt.cacheControl, n, tt.fresh)
		}
		ts.clock.Advance(tt.stale)
		ask(id)
		if n := d.fetches(tt.path); n != 2 {
			t.Errorf("Cache-Control %q: fetched %d times after %v; want twice", tt.cacheControl, n, tt.fresh+tt.stale)
		}
	}
	// A changed document changes the stored client at the next fetch.
	id := d.doc("/a.json", "max-age=60", func(m map[string]any) {
		m["client_name"] = "Claude Desktop"
		m["redirect_uris"] = []string{"https://claude.example/new"}
	})
	ts.clock.Advance(2 * time.Minute)
	if p := ask(id); p.StatusCode != 400 || !strings.Contains(p.Body, "not registered for it") {
		t.Errorf("an old redirect URI after the document dropped it = %d %s", p.StatusCode, p.Body)
	}
	if c, err := ts.s.store.clientByID(context.Background(), id); err != nil || c.Name != "Claude Desktop" || len(c.RedirectURIs) != 1 {
		t.Errorf("stored client after the change = %+v, %v", c, err)
	}
	// Bounded: the entry closest to expiry makes room.
	ts.s.cimd.max = 3
	ts.s.cimd.mu.Lock()
	clear(ts.s.cimd.docs)
	ts.s.cimd.mu.Unlock()
	for i := range 5 {
		ask(d.doc(fmt.Sprintf("/bound%d.json", i), fmt.Sprintf("max-age=%d", 600+i*60), nil))
	}
	ts.s.cimd.mu.Lock()
	n := len(ts.s.cimd.docs)
	_, newest := ts.s.cimd.docs[d.srv.URL+"/bound4.json"]
	_, oldest := ts.s.cimd.docs[d.srv.URL+"/bound0.json"]
	ts.s.cimd.mu.Unlock()
	if n != 3 || !newest || oldest {
		t.Errorf("cache holds %d documents (newest %v, oldest %v); want the 3 latest to expire", n, newest, oldest)
	}
}
