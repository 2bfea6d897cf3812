package main

// Tests of forward auth (forwardauth.go): every header combination of the check through the
// real handler, the callback's code rules, app sessions ending with the user's state, the
// start page, the CLI and pages. Whole sign-ins through a stand-in proxy, an issuer with a
// path and the benchmark are in forwardauth_flow_test.go.

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// proxyAddr is the address checks come from in the handler tests: the trusted proxy.
const proxyAddr = "127.0.0.1:41000"

// remoteHeaders are the headers a 200 answer of the check sets, every one of them.
var remoteHeaders = []string{"Remote-User", "Remote-Name", "Remote-Email", "Remote-Groups", "Remote-Sub"}

// newForwardServer is a test server that trusts 127.0.0.1 as its proxy.
func newForwardServer(t testing.TB, edit ...func(*config)) *testServer {
	t.Helper()
	return newTestServer(t, append([]func(*config){func(c *config) { c.TrustedProxy = "127.0.0.1" }}, edit...)...)
}

// addProtectedApp registers a protected app for origins, open to the groups given (none:
// everyone), as `client add -forward-auth` does.
func (ts *testServer) addProtectedApp(name string, origins []string, groups ...string) client {
	ts.t.Helper()
	c, err := clientSpec{Name: name, ForwardOrigins: origins, Vetted: true}.build()
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := ts.s.store.createClientInGroups(context.Background(), c, groups); err != nil {
		ts.t.Fatal(err)
	}
	c, _ = ts.s.store.clientByID(context.Background(), c.ID)
	return c
}

// check sends one forward-auth check to path through the real handler, from peer, with the
// X-Forwarded-* headers of proto, host and uri ("" leaves one out) and the cookies.
func (ts *testServer) check(path, peer, proto, host, uri string, extra http.Header, cookies ...*http.Cookie) *http.Response {
	ts.t.Helper()
	req := httptest.NewRequest("GET", path+"?caddy=keeps&the=query", nil)
	req.RemoteAddr = peer
	for k, v := range map[string]string{"X-Forwarded-Proto": proto, "X-Forwarded-Host": host, "X-Forwarded-Uri": uri} {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("X-Forwarded-Method", "GET")
	for k, v := range extra {
		req.Header[k] = v
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	ts.s.routes().ServeHTTP(rec, req)
	return rec.Result()
}

// body reads a response's body.
func body(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

// cookieNamed is the response's Set-Cookie of that name, or nil.
func cookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// remoteOf lists the Remote-* headers of a response, for failure messages and checks.
func remoteOf(resp *http.Response) map[string][]string {
	out := map[string][]string{}
	for k, v := range resp.Header {
		if strings.HasPrefix(k, "Remote-") {
			out[k] = v
		}
	}
	return out
}

// TestForwardAuthHeaders: every combination of the check's headers, through the real
// handler: untrusted peers, missing or malformed X-Forwarded-*, unregistered origins, and a
// registered one without a session, for both endpoints. A client's Remote-* header is never
// answered back.
func TestForwardAuthHeaders(t *testing.T) {
	ts := newForwardServer(t)
	ts.addProtectedApp("Sonarr", []string{"https://sonarr.example.com", "https://sonarr.example.com:8443"})
	spoof := http.Header{"Remote-User": {"admin"}, "Remote-Groups": {"admins"}, "Remote-Email": {"root@example.com"}}
	iss, _ := url.Parse(ts.url)
	tests := []struct {
		name, path, peer, proto, host, uri string
		extra                              http.Header
		wantStatus                         int
		wantBody                           string // a part of the body
		wantLocation                       string // a prefix of Location
		wantState                          bool   // a state cookie is set
	}{
		{"untrusted peer", "/oauth/forward-auth", "192.0.2.7:5000", "https", "sonarr.example.com", "/", nil, 403, "-trusted-proxy 192.0.2.7", "", false},
		{"untrusted peer nginx", "/oauth/auth-request", "[2001:db8::1]:5000", "https", "sonarr.example.com", "/", nil, 403, "-trusted-proxy 2001:db8::1", "", false},
		{"no host", "/oauth/forward-auth", proxyAddr, "https", "", "/", nil, 400, "lacks X-Forwarded-Host", "", false},
		{"no proto", "/oauth/forward-auth", proxyAddr, "", "sonarr.example.com", "/", nil, 400, "lacks X-Forwarded-Proto", "", false},
		{"no uri", "/oauth/auth-request", proxyAddr, "https", "sonarr.example.com", "", nil, 400, "lacks X-Forwarded-Uri", "", false},
		{"nothing", "/oauth/forward-auth", proxyAddr, "", "", "", nil, 400, "X-Forwarded-Host and X-Forwarded-Proto and X-Forwarded-Uri", "", false},
		{"repeated host", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "/", http.Header{"X-Forwarded-Host": {"a.example", "b.example"}}, 400, "X-Forwarded-Host is repeated", "", false},
		{"appended host", "/oauth/forward-auth", proxyAddr, "https", "evil.example, sonarr.example.com", "/", nil, 400, "one host", "", false},
		{"wildcard host", "/oauth/forward-auth", proxyAddr, "https", "*.example.com", "/", nil, 400, "X-Forwarded-Host", "", false},
		{"ftp", "/oauth/forward-auth", proxyAddr, "ftp", "sonarr.example.com", "/", nil, 400, "http or https", "", false},
		{"relative uri", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "photos", nil, 400, "starting with /", "", false},
		{"bad method", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "/", http.Header{"X-Forwarded-Method": {"GE T"}}, 400, "not an HTTP method", "", false},
		{"unregistered origin", "/oauth/forward-auth", proxyAddr, "https", "radarr.example.com", "/", spoof, 403, "client add -name NAME -forward-auth https://radarr.example.com", "", false},
		{"same host, other port", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com:9443", "/", nil, 403, "https://sonarr.example.com:9443", "", false},
		{"http is another origin", "/oauth/forward-auth", proxyAddr, "http", "sonarr.example.com", "/", nil, 403, "http://sonarr.example.com", "", false},
		{"oauthd itself", "/oauth/forward-auth", proxyAddr, iss.Scheme, iss.Host, "/", nil, 403, "No protected app", "", false},
		{"no session: caddy", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "/series?id=1", spoof, 302, "", ts.url + "/oauth/forward-auth/start?", true},
		{"no session: default port", "/oauth/forward-auth", proxyAddr, "HTTPS", "Sonarr.Example.COM:443", "/", nil, 302, "", ts.url + "/oauth/forward-auth/start?", true},
		{"no session: second origin", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com:8443", "/", nil, 302, "", ts.url + "/oauth/forward-auth/start?", true},
		{"no session: nginx", "/oauth/auth-request", proxyAddr, "https", "sonarr.example.com", "/series", spoof, 401, "Sign-in required", ts.url + "/oauth/forward-auth/start?", true},
		{"garbage cookie", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "/", http.Header{"Cookie": {"__Host-oauthd_app=" + strings.Repeat("x", 43)}}, 302, "", ts.url, true},
		{"fetch: caddy", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "/api/queue", http.Header{"Sec-Fetch-Mode": {"cors"}}, 401, "open https://sonarr.example.com/ in the browser", "", false},
		{"xhr: nginx", "/oauth/auth-request", proxyAddr, "https", "sonarr.example.com", "/api/queue", http.Header{"X-Requested-With": {"XMLHttpRequest"}}, 401, "", ts.url + "/oauth/forward-auth/start?", false},
		{"websocket", "/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "/socket", http.Header{"Sec-Fetch-Mode": {"websocket"}}, 401, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := ts.check(tt.path, tt.peer, tt.proto, tt.host, tt.uri, tt.extra)
			b := body(resp)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(b, tt.wantBody) {
				t.Fatalf("check(%s) = %d %q; want %d with %q", tt.name, resp.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
			if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, tt.wantLocation) || (tt.wantLocation == "") != (loc == "") {
				t.Errorf("check(%s): Location %q; want %q…", tt.name, loc, tt.wantLocation)
			}
			if r := remoteOf(resp); len(r) > 0 {
				t.Errorf("check(%s) answered Remote-* headers: %v", tt.name, r)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("check(%s): Cache-Control %q", tt.name, resp.Header.Get("Cache-Control"))
			}
			var state *http.Cookie
			for _, c := range resp.Cookies() {
				if strings.HasPrefix(c.Name, "__Host-oauthd_state_") {
					state = c
				}
			}
			if (state != nil) != tt.wantState {
				t.Fatalf("check(%s): state cookie %v; want one: %v", tt.name, state, tt.wantState)
			}
			if state == nil {
				return
			}
			if !state.Secure || !state.HttpOnly || state.SameSite != http.SameSiteLaxMode || state.Path != "/" || state.Domain != "" || state.MaxAge != 900 {
				t.Errorf("check(%s): state cookie %+v", tt.name, state)
			}
			loc, _ := url.Parse(resp.Header.Get("Location"))
			if st := loc.Query().Get("state"); st != state.Value || state.Name != "__Host-oauthd_state_"+st[:10] {
				t.Errorf("check(%s): state %q in the URL, cookie %s=%s", tt.name, st, state.Name, state.Value)
			}
			if rd := loc.Query().Get("rd"); !strings.HasPrefix(rd, "https://sonarr.example.com") || !strings.HasSuffix(rd, tt.uri) {
				t.Errorf("check(%s): rd = %q; want the original URL", tt.name, rd)
			}
		})
	}
	if strings.Contains(ts.logs.String(), "caddy=keeps") {
		t.Error("the check's own query string reached the log")
	}
}

// fwdSignIn is a signed-in browser that has started a sign-in at a protected app: the state
// cookie the check set, and the code the start page sent to the callback.
type fwdSignIn struct {
	state, code string
	callback    *url.URL
	cookie      *http.Cookie // the state cookie on the app's host
}

// startSignIn runs a check without a session at origin (https) and the start page in b,
// signed in at oauthd, and returns what the callback would receive.
func startSignIn(t testing.TB, ts *testServer, b *browser, host, uri string) fwdSignIn {
	t.Helper()
	resp := ts.check("/oauth/forward-auth", proxyAddr, "https", host, uri, nil)
	body(resp)
	var st *http.Cookie
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "__Host-oauthd_state_") {
			st = c
		}
	}
	if resp.StatusCode != 302 || st == nil {
		t.Fatalf("check without a session = %d; state cookie %v", resp.StatusCode, st)
	}
	p := b.get(resp.Header.Get("Location"))
	cb, err := url.Parse(p.Header.Get("Location"))
	if p.StatusCode != 302 || err != nil || cb.Path != forwardCallbackPath {
		t.Fatalf("start = %d %s %s; want the callback", p.StatusCode, p.Header.Get("Location"), p.Body)
	}
	if got := cb.Scheme + "://" + cb.Host; got != "https://"+strings.ToLower(host) {
		t.Fatalf("start sent the code to %s; want https://%s", got, host)
	}
	return fwdSignIn{state: cb.Query().Get("state"), code: cb.Query().Get("code"), callback: cb, cookie: &http.Cookie{Name: st.Name, Value: st.Value}}
}

// callback presents a callback's query at host with the cookies.
func (ts *testServer) callback(host, query string, cookies ...*http.Cookie) *http.Response {
	ts.t.Helper()
	return ts.check("/oauth/forward-auth", proxyAddr, "https", host, forwardCallbackPath+"?"+query, nil, cookies...)
}

// TestForwardAuthCallback: the code at the app's callback works once, within 60 seconds, at
// the origin it was issued for, in the browser holding the state cookie; every other
// presentation gets an error page and no app session, and never a 2xx (which would let the
// request through to the app).
func TestForwardAuthCallback(t *testing.T) {
	ts := newForwardServer(t)
	ts.addProtectedApp("Sonarr", []string{"https://sonarr.example.com"})
	ts.addProtectedApp("Radarr", []string{"https://radarr.example.com"})
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()

	type attempt struct {
		name       string
		query      func(f fwdSignIn) string
		host       string
		cookies    func(f fwdSignIn) []*http.Cookie
		before     func(f fwdSignIn) // e.g. advance the clock
		wantStatus int
		wantBody   string
	}
	q := func(f fwdSignIn) string { return f.callback.RawQuery }
	own := func(f fwdSignIn) []*http.Cookie { return []*http.Cookie{f.cookie} }
	tests := []attempt{
		{"wrong code", func(f fwdSignIn) string {
			return url.Values{"code": {newTokenValue(ts.clock.Now())}, "state": {f.state}}.Encode()
		}, "sonarr.example.com", own, nil, 400, "already used, has expired"},
		{"code for another origin", q, "radarr.example.com", own, nil, 400, "belongs to another app"},
		{"no state cookie", q, "sonarr.example.com", func(fwdSignIn) []*http.Cookie { return nil }, nil, 400, "started in another browser"},
		{"another browser's state", func(f fwdSignIn) string {
			other := newSecret()
			return url.Values{"code": {f.code}, "state": {other}}.Encode()
		}, "sonarr.example.com", func(f fwdSignIn) []*http.Cookie { return nil }, nil, 400, "started in another browser"},
		{"cookie of another sign-in", q, "sonarr.example.com", func(f fwdSignIn) []*http.Cookie {
			return []*http.Cookie{{Name: f.cookie.Name, Value: f.state[:10] + newSecret()[10:]}}
		}, nil, 400, "started in another browser"},
		{"no code", func(f fwdSignIn) string { return "state=" + f.state }, "sonarr.example.com", own, nil, 400, "incomplete"},
		{"repeated code", func(f fwdSignIn) string { return f.callback.RawQuery + "&code=" + f.code }, "sonarr.example.com", own, nil, 400, "incomplete"},
		{"expired code", q, "sonarr.example.com", own, func(fwdSignIn) { ts.clock.Advance(61 * time.Second) }, 400, "has expired (it works for 60 seconds)"},
		{"signed out meanwhile", q, "sonarr.example.com", own, func(fwdSignIn) {
			hp := b.get("/")
			b.post("/logout", url.Values{"csrf_token": {hidden(hp.Body, "csrf_token")}})
		}, 400, "already used, has expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !b.signedIn() {
				b.login()
			}
			f := startSignIn(t, ts, b, "sonarr.example.com", "/calendar")
			if tt.before != nil {
				tt.before(f)
			}
			resp := ts.callback(tt.host, tt.query(f), tt.cookies(f)...)
			got := body(resp)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(got, tt.wantBody) {
				t.Fatalf("callback(%s) = %d; want %d with %q: %s", tt.name, resp.StatusCode, tt.wantStatus, tt.wantBody, got)
			}
			if c := cookieNamed(resp, "__Host-oauthd_app"); c != nil {
				t.Errorf("callback(%s) set an app session: %v", tt.name, c)
			}
			if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "style-src "+ts.url) || !strings.Contains(got, `href="`+ts.url+`/static/style.css"`) {
				t.Errorf("callback(%s): the page does not load oauthd's stylesheet absolutely: %s", tt.name, resp.Header.Get("Content-Security-Policy"))
			}
		})
	}

	// The right one: once.
	b.login()
	f := startSignIn(t, ts, b, "sonarr.example.com", "/calendar?week=2")
	if r := ts.check("/oauth/auth-request", proxyAddr, "https", "sonarr.example.com", forwardCallbackPath+"?"+f.callback.RawQuery, nil, f.cookie); r.StatusCode != 403 ||
		!strings.Contains(body(r), "plain proxied request") {
		t.Errorf("the callback through nginx's auth_request = %d; want 403 naming the configuration, the code left alone", r.StatusCode)
	}
	resp := ts.callback("sonarr.example.com", f.callback.RawQuery, f.cookie)
	body(resp)
	app := cookieNamed(resp, "__Host-oauthd_app")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://sonarr.example.com/calendar?week=2" || app == nil {
		t.Fatalf("callback = %d %s; app cookie %v", resp.StatusCode, resp.Header.Get("Location"), app)
	}
	if !app.Secure || !app.HttpOnly || app.SameSite != http.SameSiteLaxMode || app.Path != "/" || app.Domain != "" || len(app.Value) != 43 {
		t.Errorf("app cookie %+v", app)
	}
	if gone := cookieNamed(resp, f.cookie.Name); gone == nil || gone.MaxAge >= 0 {
		t.Errorf("the state cookie is not removed: %v", gone)
	}
	var stored int
	ts.s.store.db.QueryRow("SELECT count(*) FROM app_sessions WHERE hash = ?", hashSecret(app.Value)).Scan(&stored)
	if stored != 1 {
		t.Errorf("the app session is not stored under its hash (%d rows)", stored)
	}
	if replay := ts.callback("sonarr.example.com", f.callback.RawQuery, f.cookie); replay.StatusCode != 400 || cookieNamed(replay, "__Host-oauthd_app") != nil {
		t.Errorf("replayed code = %d; want 400 without a session", replay.StatusCode)
	}
	if logs := ts.logs.String(); strings.Contains(logs, f.code) || strings.Contains(logs, f.state) || strings.Contains(logs, app.Value) {
		t.Error("a code, state or app-session cookie reached the log")
	}
	if r := ts.check("/oauth/forward-auth", proxyAddr, "https", "sonarr.example.com", "/", nil, app); r.StatusCode != 200 || r.Header.Get("Remote-User") != "alice" {
		t.Errorf("check with the new session = %d %v", r.StatusCode, remoteOf(r))
	}
	// A code whose browser presented the wrong state stays good for its own browser.
	f = startSignIn(t, ts, b, "sonarr.example.com", "/")
	if r := ts.callback("radarr.example.com", f.callback.RawQuery, f.cookie); r.StatusCode != 400 {
		t.Fatalf("code at another app = %d", r.StatusCode)
	}
	if r := ts.callback("sonarr.example.com", f.callback.RawQuery, f.cookie); r.StatusCode != 302 {
		t.Errorf("the code refused elsewhere no longer works at its own app: %d", r.StatusCode)
	}
}

// forwardSession signs b in to the protected app at host (https) and returns the app
// session's cookie.
func forwardSession(t testing.TB, ts *testServer, b *browser, host string) *http.Cookie {
	t.Helper()
	f := startSignIn(t, ts, b, host, "/")
	resp := ts.callback(host, f.callback.RawQuery, f.cookie)
	body(resp)
	app := cookieNamed(resp, "__Host-oauthd_app")
	if resp.StatusCode != 302 || app == nil {
		t.Fatalf("callback = %d", resp.StatusCode)
	}
	return &http.Cookie{Name: app.Name, Value: app.Value}
}

// TestForwardAuthSession: a valid app session answers 200 with every Remote-* header (the
// verified email only, groups comma-separated, never a value the client sent), for its own
// origin only; it ends with an expiry, the oauthd session's sign-out, a revocation on the
// connections page, a disabled user; a user removed from the app's group gets the 403 page,
// also when the CLI does it from another process; and a change nothing announces is seen
// within a minute.
func TestForwardAuthSession(t *testing.T) {
	ts := newForwardServer(t)
	ctx := context.Background()
	ts.s.store.createGroup(ctx, group{Name: "family", CreatedAt: 1})
	ts.s.store.createGroup(ctx, group{Name: "Media", CreatedAt: 1})
	app := ts.addProtectedApp("Jellyfin", []string{"https://media.example.com"}, "family")
	ts.addProtectedApp("Wiki", []string{"https://wiki.example.com"})
	alice := ts.addUser("alice", "correct horse battery")
	ts.s.store.addMembers(ctx, "family", []string{"alice"})
	ts.s.store.addMembers(ctx, "Media", []string{"alice"})
	name, email := "Alice Liddell", "alice@example.com"
	if _, err := ts.s.store.updateUser(ctx, "alice", userChange{Name: &name, Email: &email}, 1); err != nil {
		t.Fatal(err)
	}
	b := ts.browser("alice", "correct horse battery")
	b.login()
	ck := forwardSession(t, ts, b, "media.example.com")
	get := func(host string, extra http.Header) *http.Response {
		return ts.check("/oauth/forward-auth", proxyAddr, "https", host, "/web/index.html", extra, ck)
	}
	spoof := http.Header{"Remote-User": {"root"}, "Remote-Groups": {"admins"}, "Remote-Email": {"root@example.com"}, "Remote-Name": {"Root"}, "Remote-Sub": {"x"}}
	resp := get("media.example.com", spoof)
	want := map[string]string{"Remote-User": "alice", "Remote-Name": name, "Remote-Email": email, "Remote-Groups": "family,Media", "Remote-Sub": alice.Sub}
	for k, v := range want {
		if got := resp.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("check: %s = %q; want %q", k, got, v)
		}
	}
	if resp.StatusCode != 200 {
		t.Fatalf("check with a session = %d", resp.StatusCode)
	}
	// nginx's endpoint answers the same.
	if r := ts.check("/oauth/auth-request", proxyAddr, "https", "media.example.com", "/", nil, ck); r.StatusCode != 200 || r.Header.Get("Remote-User") != "alice" {
		t.Errorf("auth-request with a session = %d %v", r.StatusCode, remoteOf(r))
	}
	// An unverified email is not passed on; every header is still there, empty.
	verified := false
	ts.s.store.updateUser(ctx, "alice", userChange{EmailVerified: &verified}, 2)
	if r := get("media.example.com", spoof); r.StatusCode != 200 || len(r.Header.Values("Remote-Email")) != 1 || r.Header.Get("Remote-Email") != "" {
		t.Errorf("unverified email: %d %q", r.StatusCode, r.Header.Values("Remote-Email"))
	}
	// The cookie of one app is no session at another (the same browser may send it there).
	if r := get("wiki.example.com", nil); r.StatusCode != 302 {
		t.Errorf("app session at another origin = %d; want the sign-in", r.StatusCode)
	}

	// Removed from the group: 403 with a page, naming whom to ask.
	ts.s.store.removeMembers(ctx, "family", []string{"alice"})
	r := get("media.example.com", nil)
	page := body(r)
	if r.StatusCode != 403 || !strings.Contains(page, "No access to <span class=\"client\">Jellyfin</span>") || len(remoteOf(r)) > 0 {
		t.Fatalf("check after leaving the group = %d %v %s", r.StatusCode, remoteOf(r), page)
	}
	// Back in the group (from "another process": a second store on the same file, whose
	// change the server sees through the generation counter), and out again.
	other, err := openStore(ctx, ts.s.cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	other.addMembers(ctx, "family", []string{"alice"})
	if r := get("media.example.com", nil); r.StatusCode != 200 {
		t.Errorf("check after the CLI added alice again = %d", r.StatusCode)
	}
	other.removeMembers(ctx, "family", []string{"alice"})
	if r := get("media.example.com", nil); r.StatusCode != 403 {
		t.Errorf("check after the CLI removed alice = %d; want 403", r.StatusCode)
	}
	other.addMembers(ctx, "family", []string{"alice"})
	other.Close()
	if r := get("media.example.com", nil); r.StatusCode != 200 {
		t.Fatalf("check after the CLI added alice back = %d", r.StatusCode)
	}

	// A change that moves no counter (here made behind oauthd's back) is seen within a minute.
	if _, err := ts.s.store.db.Exec("UPDATE app_sessions SET expires_at = 1"); err != nil {
		t.Fatal(err)
	}
	if r := get("media.example.com", nil); r.StatusCode != 200 {
		t.Errorf("check right after = %d; the cached session still answers", r.StatusCode)
	}
	ts.clock.Advance(61 * time.Second)
	if r := get("media.example.com", nil); r.StatusCode != 302 {
		t.Errorf("check a minute later = %d; want the sign-in", r.StatusCode)
	}

	// Each way an app session ends.
	ends := []struct {
		name string
		end  func()
	}{
		{"expiry with the oauthd session", func() { ts.clock.Advance(ts.s.cfg.SessionTTL) }},
		{"sign-out", func() {
			hp := b.get("/")
			if p := b.post("/logout", url.Values{"csrf_token": {hidden(hp.Body, "csrf_token")}}); p.StatusCode != 303 {
				t.Fatalf("logout = %d", p.StatusCode)
			}
		}},
		{"revocation", func() {
			cp := b.get("/oauth/client/connections/" + app.ID + "/revoke")
			if p := b.post("/oauth/client/connections/"+app.ID+"/revoke", url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}}); p.StatusCode != 303 {
				t.Fatalf("revoke = %d %s", p.StatusCode, p.Body)
			}
		}},
		{"disabled user", func() {
			if err := ts.s.store.setDisabled(ctx, "alice", true); err != nil {
				t.Fatal(err)
			}
		}},
		{"password reset from the CLI", func() {
			if code, _, errOut := cli(t, nil, "a new long password\n", "user", "passwd", "-db", ts.s.cfg.DB, "alice"); code != 0 {
				t.Fatal(errOut)
			}
		}},
	}
	for _, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			ts.s.store.setDisabled(ctx, "alice", false)
			b = ts.browser("alice", "correct horse battery") // the password changes in the last case only
			if p := b.login(); p.StatusCode != 303 {
				t.Fatalf("login = %d", p.StatusCode)
			}
			ck = forwardSession(t, ts, b, "media.example.com")
			if r := get("media.example.com", nil); r.StatusCode != 200 {
				t.Fatalf("check before = %d", r.StatusCode)
			}
			e.end()
			if r := get("media.example.com", nil); r.StatusCode == 200 || len(remoteOf(r)) > 0 {
				t.Errorf("check after %s = %d %v; want no access", e.name, r.StatusCode, remoteOf(r))
			}
		})
	}
}

// TestForwardAuthStart: the start page refuses any target that is not a registered
// origin (an error page, never a redirect), signs the user in first, steps up to a second
// factor when the app needs one, shows the no-access page to a user outside the app's
// groups, and needs no consent.
func TestForwardAuthStart(t *testing.T) {
	ts := newForwardServer(t)
	ctx := context.Background()
	ts.s.store.createGroup(ctx, group{Name: "admins", CreatedAt: 1})
	ts.addProtectedApp("Panel", []string{"https://panel.example.com"}, "admins")
	vault := ts.addProtectedApp("Vault", []string{"https://vault.example.com"})
	vault.RequireMFA = true
	ts.s.store.updateClient(ctx, vault)
	ts.addUser("bob", "correct horse battery")
	b := ts.browser("bob", "correct horse battery")
	state := newSecret()
	start := func(rd, st string) page {
		return b.get("/oauth/forward-auth/start?" + url.Values{"rd": {rd}, "state": {st}}.Encode())
	}
	// Not signed in: the login page, coming back here.
	p := start("https://panel.example.com/", state)
	if p.StatusCode != 302 || !strings.HasPrefix(p.Header.Get("Location"), "/login?next=%2Foauth%2Fforward-auth%2Fstart") {
		t.Fatalf("start without a session = %d %s", p.StatusCode, p.Header.Get("Location"))
	}
	b.login()
	for _, tt := range []struct{ name, rd, state, want string }{
		{"unregistered", "https://evil.example/", state, "No protected app is registered for this address"},
		{"userinfo", "https://x@panel.example.com/", state, "does not say which app"},
		{"relative", "/admin", state, "does not say which app"},
		{"javascript", "javascript:alert(1)", state, "does not say which app"},
		{"backslash host", `https://panel.example.com\.evil.example/`, state, ""},
		{"missing", "", state, "does not say which app"},
		{"oauthd itself", ts.url + "/", state, "No protected app"},
		{"no state", "https://panel.example.com/", "", "no valid state"},
		{"short state", "https://panel.example.com/", "abc", "no valid state"},
	} {
		if p := start(tt.rd, tt.state); p.StatusCode != 400 || p.Header.Get("Location") != "" || !strings.Contains(p.Body, tt.want) {
			t.Errorf("start(%s) = %d %s; want 400 saying %q", tt.name, p.StatusCode, p.Header.Get("Location"), tt.want)
		}
	}
	if p := b.get("/oauth/forward-auth/start?rd=https://panel.example.com/&rd=https://evil.example/&state=" + state); p.StatusCode != 400 || !strings.Contains(p.Body, "repeats the parameter rd") {
		t.Errorf("repeated rd = %d", p.StatusCode)
	}
	// Outside the allowed groups: the no-access page.
	p = start("https://panel.example.com/", state)
	if p.StatusCode != 403 || !strings.Contains(p.Body, "open only to members of certain groups") {
		t.Errorf("start outside the groups = %d %s", p.StatusCode, p.Body)
	}
	// An app that needs a second factor sends a one-factor session to add or use one.
	p = start("https://vault.example.com/", state)
	if p.StatusCode != 303 || !strings.HasPrefix(p.Header.Get("Location"), "/account/security?") {
		t.Errorf("start at a require-MFA app = %d %s; want the step-up", p.StatusCode, p.Header.Get("Location"))
	}
	// In the group: straight to the callback, no consent page; the way back is rebuilt from
	// the checked origin, and a callback URL as rd returns to the root.
	ts.s.store.addMembers(ctx, "admins", []string{"bob"})
	for rd, back := range map[string]string{
		"https://PANEL.example.com:443/a/b?c=d":      "https://panel.example.com/a/b?c=d",
		"https://panel.example.com/.oauthd/callback": "https://panel.example.com/",
	} {
		p = start(rd, state)
		loc, _ := url.Parse(p.Header.Get("Location"))
		if p.StatusCode != 302 || loc.Host != "panel.example.com" || loc.Path != forwardCallbackPath || loc.Query().Get("state") != state {
			t.Fatalf("start(%s) = %d %s", rd, p.StatusCode, p.Header.Get("Location"))
		}
		var gotRD string
		ts.s.store.db.QueryRow("SELECT rd FROM forward_codes WHERE hash = ?", tokenKey(loc.Query().Get("code"))).Scan(&gotRD)
		if gotRD != back {
			t.Errorf("start(%s) returns to %q; want %q", rd, gotRD, back)
		}
	}
}

// TestForwardAuthCLI: `client add -forward-auth` prints the protected app, normalizes and
// checks its origins, refuses OAuth settings and an origin another app has, and `client
// list` shows the origins.
func TestForwardAuthCLI(t *testing.T) {
	db := t.TempDir() + "/oauthd.db"
	code, out, errOut := cli(t, nil, "", "client", "add", "-db", db, "-name", "Sonarr", "-forward-auth", "https://Sonarr.Example.com:443/", "-forward-auth", "https://sonarr.example.com:8443")
	if code != 0 {
		t.Fatal(errOut)
	}
	if !strings.HasPrefix(out, `{"client_id":"`) || !strings.Contains(out, `"forward_auth":["https://sonarr.example.com","https://sonarr.example.com:8443"],"name":"Sonarr","public":true,"redirect_uris":[]}`) || strings.Contains(out, "secret") {
		t.Errorf("client add -forward-auth printed %s", out)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-forward-auth", "https://sonarr.example.com"}, `already protected by the app "Sonarr"`},
		{[]string{"-forward-auth", "http://nas.lan"}, "http on a non-loopback host"},
		{[]string{"-forward-auth", "https://a.example/path"}, "no path"},
		{[]string{"-forward-auth", "https://*.example.com"}, "no wildcards"},
		{[]string{"-forward-auth", "https://a.example", "-redirect-uri", "https://a.example/cb"}, "no redirect URIs"},
		{[]string{"-forward-auth", "https://a.example", "-grant", "client_credentials"}, "no grants"},
		{[]string{"-forward-auth", "https://a.example", "-allow-group", "nobody"}, `no group named "nobody"`},
	} {
		code, _, errOut := cli(t, nil, "", append([]string{"client", "add", "-db", db, "-name", "X"}, tt.args...)...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("client add %v = %d %q; want an error with %q", tt.args, code, errOut, tt.want)
		}
	}
	if code, out, _ := cli(t, nil, "", "client", "add", "-db", db, "-name", "Local", "-forward-auth", "http://localhost:8096", "-require-mfa"); code != 0 || !strings.Contains(out, `"forward_auth":["http://localhost:8096"]`) {
		t.Errorf("a loopback http origin = %d %s", code, out)
	}
	_, list, _ := cli(t, nil, "", "client", "list", "-db", db)
	if !strings.Contains(list, `"grant_types":[],"forward_auth":["https://sonarr.example.com","https://sonarr.example.com:8443"]`) || !strings.Contains(list, `"require_mfa":true,"forward_auth":["http://localhost:8096"]`) {
		t.Errorf("client list: %s", list)
	}
	if _, help, _ := cli(t, nil, "", "client", "add", "-h"); !strings.Contains(help, "-forward-auth") {
		t.Error("client add -h does not show -forward-auth")
	}
}

// TestForwardAuthPages: an administrator registers and edits a protected app on the pages;
// it is listed with its origins, has no secret and no OAuth use; others cannot make one;
// the connections page lists it after a sign-in and its revoke page says what happens.
func TestForwardAuthPages(t *testing.T) {
	ts := newForwardServer(t)
	ctx := context.Background()
	root := ts.addUser("root", "correct horse battery")
	admin := true
	ts.s.store.updateUser(ctx, "root", userChange{Admin: &admin}, 1)
	ts.addUser("carol", "correct horse battery")
	ab := ts.browser("root", "correct horse battery")
	ab.login()
	cb := ts.browser("carol", "correct horse battery")
	cb.login()

	if p := cb.get("/oauth/client/register?kind=forward"); p.StatusCode != 403 {
		t.Errorf("a user's protect-an-app page = %d", p.StatusCode)
	}
	up := cb.get("/oauth/client/register")
	if p := cb.post("/oauth/client/register", url.Values{"csrf_token": {hidden(up.Body, "csrf_token")}, "name": {"Mine"}, "type": {"forward"}, "forward_origins": {"https://mine.example.com"}}); p.StatusCode != 400 || !strings.Contains(p.Body, "Only administrators") {
		t.Errorf("a user's protected app = %d", p.StatusCode)
	}
	if l := cb.get("/oauth/client/list"); strings.Contains(l.Body, "kind=forward") {
		t.Error("a user's app list offers protecting an app")
	}

	fp := ab.get("/oauth/client/register?kind=forward")
	if fp.StatusCode != 200 || !strings.Contains(fp.Body, `name="forward_origins"`) || strings.Contains(fp.Body, `name="redirect_uris"`) || !strings.Contains(fp.Body, `name="require_mfa"`) {
		t.Fatalf("protect-an-app page = %d %s", fp.StatusCode, fp.Body)
	}
	form := url.Values{"csrf_token": {hidden(fp.Body, "csrf_token")}, "name": {"Prometheus"}, "type": {"forward"}, "require_mfa": {"on"}}
	for origins, want := range map[string]string{
		"":                          "at least one origin",
		"https://metrics.example/x": "no path",
		ts.url:                      "must live on another host",
	} {
		form.Set("forward_origins", origins)
		if p := ab.post("/oauth/client/register", form); p.StatusCode != 400 || !strings.Contains(p.Body, want) {
			t.Errorf("register with origins %q = %d; want %q: %s", origins, p.StatusCode, want, p.Body)
		}
	}
	form.Set("forward_origins", "https://metrics.example.com\nhttps://metrics.example.com:9090\n")
	p := ab.post("/oauth/client/register", form)
	if p.StatusCode != 303 {
		t.Fatalf("register a protected app = %d %s", p.StatusCode, p.Body)
	}
	cs, _ := ts.s.store.listClients(ctx)
	var c client
	for _, x := range cs {
		if x.Name == "Prometheus" {
			c = x
		}
	}
	if len(c.ForwardOrigins) != 2 || !c.Public || c.SecretHash != nil || len(c.GrantTypes) != 0 || !c.Vetted || !c.RequireMFA || c.OwnerID != root.ID {
		t.Fatalf("the protected app = %+v", c)
	}
	list := ab.get(p.Header.Get("Location"))
	if !strings.Contains(list.Body, "Prometheus is protected at https://metrics.example.com, https://metrics.example.com:9090") ||
		!strings.Contains(list.Body, `protected (forward auth)<br><small class="muted">https://metrics.example.com</small><br><small class="muted">https://metrics.example.com:9090</small>`) || strings.Contains(list.Body, "/oauth/client/"+c.ID+"/rotate") {
		t.Errorf("the app list: %s", list.Body)
	}
	// No OAuth use: the authorization endpoint has no redirect URI for it, the token endpoint no grant.
	if p := ab.get("/oauth/authorize?response_type=code&client_id=" + c.ID + "&redirect_uri=https://metrics.example.com/cb"); p.StatusCode != 400 {
		t.Errorf("authorize with a protected app = %d", p.StatusCode)
	}
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {"x"}, "client_id": {c.ID}}, "", ""); r.Status != 400 || str(r.JSON["error"]) != errUnauthorizedClient {
		t.Errorf("token with a protected app = %d %s", r.Status, r.Raw)
	}
	// Editing: the origins change (the dropped one's sessions go), the kind does not.
	ep := ab.get("/oauth/client/" + c.ID + "/edit")
	if !strings.Contains(ep.Body, "https://metrics.example.com:9090</textarea>") || strings.Contains(ep.Body, `name="redirect_uris"`) {
		t.Fatalf("edit page: %s", ep.Body)
	}
	edit := url.Values{"csrf_token": {hidden(ep.Body, "csrf_token")}, "name": {"Prometheus"}, "type": {"forward"}, "forward_origins": {"https://metrics.example.com"}}
	if p := ab.post("/oauth/client/"+c.ID+"/edit", edit); p.StatusCode != 303 {
		t.Fatalf("edit = %d %s", p.StatusCode, p.Body)
	}
	if c2, _ := ts.s.store.clientByID(ctx, c.ID); len(c2.ForwardOrigins) != 1 || c2.RequireMFA {
		t.Errorf("after the edit: %v, require MFA %v", c2.ForwardOrigins, c2.RequireMFA)
	}
	if r := ts.check("/oauth/forward-auth", proxyAddr, "https", "metrics.example.com:9090", "/", nil); r.StatusCode != 403 {
		t.Errorf("a dropped origin = %d", r.StatusCode)
	}
	oauth := ts.addClient(false, "read", "https://app.example/cb")
	op := ab.get("/oauth/client/" + oauth.ID + "/edit")
	edit.Set("csrf_token", hidden(op.Body, "csrf_token"))
	if p := ab.post("/oauth/client/"+oauth.ID+"/edit", edit); p.StatusCode != 400 || !strings.Contains(p.Body, "stays what it was registered as") {
		t.Errorf("turning an OAuth client into a protected app = %d", p.StatusCode)
	}

	// The connections page lists it once used, and revoking it says what happens.
	wiki := ts.addProtectedApp("Wiki", []string{"https://wiki.example.com"})
	forwardSession(t, ts, cb, "wiki.example.com")
	conn := cb.get("/oauth/client/connections")
	if !strings.Contains(conn.Body, "Wiki") || !strings.Contains(conn.Body, "sign-in at https://wiki.example.com") {
		t.Errorf("connections page: %s", conn.Body)
	}
	if rp := cb.get("/oauth/client/connections/" + wiki.ID + "/revoke"); !strings.Contains(rp.Body, "signed out of Wiki") {
		t.Errorf("revoke page: %s", rp.Body)
	}
	// The activity log has the sign-in.
	act := ab.get("/admin/activity")
	if !strings.Contains(act.Body, "to the protected app at https://wiki.example.com") {
		t.Error("the activity log lacks the protected app's sign-in")
	}
}
