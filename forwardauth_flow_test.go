package main

// Forward auth end to end (forwardauth.go): whole sign-ins through a stand-in reverse proxy
// (appProxy) in the Caddy/Traefik and nginx shapes, an issuer with a path, and the benchmark
// of the check. The helpers (check, startSignIn, forwardSession) are in forwardauth_test.go.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// appProxy plays a reverse proxy in front of an app, as Caddy's forward_auth with
// copy_headers (or Traefik's forwardAuth with authResponseHeaders) or nginx's auth_request
// with the README's configuration: it asks oauthd about every request with the browser's
// headers and X-Forwarded-*, passes a 2xx on to the app with the Remote-* headers copied
// over the browser's, and any other answer back to the browser.
type appProxy struct {
	srv   *httptest.Server
	seen  []string // what the app was asked, with the Remote-User it was given
	nginx bool
}

// newAppProxy starts the proxy (at http://localhost:PORT, so that a browser keeps its
// cookies apart from oauthd's on 127.0.0.1) in front of a small app.
func newAppProxy(t *testing.T, ts *testServer, nginx bool) *appProxy {
	ap := &appProxy{nginx: nginx}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ap.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		check := "/oauth/forward-auth"
		if nginx && r.URL.Path != forwardCallbackPath {
			check = "/oauth/auth-request" // the README's nginx sends /.oauthd/callback as a plain request to /oauth/forward-auth
		}
		req, _ := http.NewRequest("GET", ts.url+check+"?"+r.URL.RawQuery, nil) // Caddy keeps the query on the check
		req.Header = r.Header.Clone()
		req.Header.Set("X-Forwarded-Proto", "http")
		req.Header.Set("X-Forwarded-Host", r.Host)
		req.Header.Set("X-Forwarded-Uri", r.URL.RequestURI())
		req.Header.Set("X-Forwarded-Method", r.Method)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			for _, h := range remoteHeaders { // copy_headers / authResponseHeaders / proxy_set_header
				r.Header[h] = resp.Header.Values(h)
			}
			ap.seen = append(ap.seen, r.URL.RequestURI()+" as "+r.Header.Get("Remote-User"))
			fmt.Fprintf(w, "app %s: user=%s name=%s email=%s groups=%s", r.URL.RequestURI(), r.Header.Get("Remote-User"), r.Header.Get("Remote-Name"),
				r.Header.Get("Remote-Email"), r.Header.Get("Remote-Groups"))
			return
		}
		if nginx && resp.StatusCode == 401 { // error_page 401 =302 $oauthd_redirect; add_header Set-Cookie $oauthd_cookie
			w.Header().Set("Set-Cookie", resp.Header.Get("Set-Cookie"))
			http.Redirect(w, r, resp.Header.Get("Location"), http.StatusFound)
			return
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
	}))
	ap.srv.URL = strings.Replace(ap.srv.URL, "127.0.0.1", "localhost", 1)
	t.Cleanup(ap.srv.Close)
	return ap
}

// visit follows a browser through redirects, signing in where the login page asks, and
// returns the last answer.
func (b *browser) visit(u string, header http.Header) page {
	b.t.Helper()
	next := u
	for range 12 {
		req, _ := http.NewRequest("GET", next, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		p := b.do(req)
		loc := p.Header.Get("Location")
		if p.StatusCode != 302 && p.StatusCode != 303 || loc == "" {
			return p
		}
		if strings.HasPrefix(loc, "/login?") {
			lp := b.get(loc)
			p = b.post("/login", url.Values{"username": {b.user}, "password": {b.pass}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
			loc = p.Header.Get("Location")
		}
		l, _ := url.Parse(loc)
		next = p.Request.URL.ResolveReference(l).String()
	}
	b.t.Fatalf("visit %s: too many redirects", u)
	return page{}
}

// TestForwardAuthBrowser: whole sign-ins through a stand-in proxy, Caddy/Traefik-shaped and
// nginx-shaped: the app's page redirects to oauthd, the user signs in, the callback sets the
// app's cookie and returns to the page asked for, which the app then serves with the user's
// Remote-* headers; later requests pass at once; a Remote-User the browser sends never
// reaches the app; the callback never reaches the app.
func TestForwardAuthBrowser(t *testing.T) {
	for _, nginx := range []bool{false, true} {
		t.Run(map[bool]string{false: "caddy", true: "nginx"}[nginx], func(t *testing.T) {
			ts := newForwardServer(t)
			ctx := context.Background()
			ap := newAppProxy(t, ts, nginx)
			ts.s.store.createGroup(ctx, group{Name: "family", CreatedAt: 1})
			ts.addProtectedApp("Photos", []string{ap.srv.URL}, "family")
			ts.addUser("alice", "correct horse battery")
			ts.addUser("mallory", "correct horse battery")
			ts.s.store.addMembers(ctx, "family", []string{"alice"})
			email := "alice@example.com"
			ts.s.store.updateUser(ctx, "alice", userChange{Email: &email}, 1)

			b := ts.browser("alice", "correct horse battery")
			spoof := http.Header{"Remote-User": {"mallory"}, "Remote-Groups": {"admins"}}
			p := b.visit(ap.srv.URL+"/albums/2024?sort=date", spoof)
			if p.StatusCode != 200 || p.Body != "app /albums/2024?sort=date: user=alice name= email=alice@example.com groups=family" {
				t.Fatalf("first visit = %d %q", p.StatusCode, p.Body)
			}
			app, _ := url.Parse(ap.srv.URL)
			var names []string
			for _, c := range b.c.Jar.Cookies(app) {
				names = append(names, c.Name)
			}
			if strings.Join(names, " ") != "oauthd_app" {
				t.Errorf("cookies on the app's host: %v; want the app session alone", names)
			}
			// Later requests pass at once.
			req, _ := http.NewRequest("GET", ap.srv.URL+"/albums/2025", nil)
			req.Header["Remote-User"] = []string{"root"}
			if p := b.do(req); p.StatusCode != 200 || !strings.Contains(p.Body, "user=alice") {
				t.Errorf("second visit = %d %q", p.StatusCode, p.Body)
			}
			for _, s := range ap.seen {
				if strings.Contains(s, forwardCallbackPath) || !strings.HasSuffix(s, " as alice") {
					t.Errorf("the app was asked %q", s)
				}
			}
			// Someone outside the group signs in at oauthd and gets the no-access page.
			m := ts.browser("mallory", "correct horse battery")
			if p := m.visit(ap.srv.URL+"/", nil); p.StatusCode != 403 || !strings.Contains(p.Body, "No access to") {
				t.Errorf("mallory's visit = %d %s", p.StatusCode, p.Body)
			}
			// Signing out of oauthd signs out of the app.
			hp := b.get("/")
			b.post("/logout", url.Values{"csrf_token": {hidden(hp.Body, "csrf_token")}})
			req, _ = http.NewRequest("GET", ap.srv.URL+"/albums/2025", nil)
			if p := b.do(req); p.StatusCode != 302 || !strings.HasPrefix(p.Header.Get("Location"), ts.url+"/oauth/forward-auth/start?") {
				t.Errorf("after signing out = %d %s", p.StatusCode, p.Header.Get("Location"))
			}
		})
	}
}

// TestForwardAuthUnderPath: with an issuer with a path (prefix.go) the checks answer under
// it, the sign-in URL and the pages' links carry it, and the issuer's origin, shared with
// other apps, may be protected.
func TestForwardAuthUnderPath(t *testing.T) {
	ts := newForwardServer(t, func(c *config) { c.Issuer += "/auth" })
	iss, _ := url.Parse(ts.url)
	ts.addProtectedApp("Home page", []string{ts.url}) // the host oauthd shares
	ts.addUser("alice", "correct horse battery")
	resp := ts.check("/auth/oauth/forward-auth", proxyAddr, "http", iss.Host, "/photos", nil)
	body(resp)
	start := resp.Header.Get("Location")
	if resp.StatusCode != 302 || !strings.HasPrefix(start, ts.url+"/auth/oauth/forward-auth/start?") {
		t.Fatalf("check under /auth = %d %s", resp.StatusCode, start)
	}
	var st *http.Cookie
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, "oauthd_state_") {
			st = c
		}
	}
	b := ts.browser("alice", "correct horse battery")
	p := b.get(start)
	if p.StatusCode != 302 || !strings.HasPrefix(p.Header.Get("Location"), "/auth/login?next=%2Foauth%2Fforward-auth%2Fstart") {
		t.Fatalf("start = %d %s", p.StatusCode, p.Header.Get("Location"))
	}
	lp := b.get(p.Header.Get("Location"))
	p = b.post("/auth/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
	p = b.get(p.Header.Get("Location"))
	cb, _ := url.Parse(p.Header.Get("Location"))
	if p.StatusCode != 302 || cb.Path != forwardCallbackPath {
		t.Fatalf("start after the sign-in = %d %s", p.StatusCode, p.Header.Get("Location"))
	}
	bad := ts.check("/auth/oauth/forward-auth", proxyAddr, "http", iss.Host, forwardCallbackPath+"?"+cb.RawQuery, nil)
	if page := body(bad); bad.StatusCode != 400 || !strings.Contains(page, `href="`+ts.url+`/auth/static/style.css"`) || !strings.Contains(page, `href="`+ts.url+`/auth/"`) {
		t.Errorf("callback without the state cookie = %d %s", bad.StatusCode, page)
	}
	ok := ts.check("/auth/oauth/forward-auth", proxyAddr, "http", iss.Host, forwardCallbackPath+"?"+cb.RawQuery, nil, &http.Cookie{Name: st.Name, Value: st.Value})
	body(ok)
	if ok.StatusCode != 302 || ok.Header.Get("Location") != ts.url+"/photos" || cookieNamed(ok, "oauthd_app") == nil || cookieNamed(ok, "oauthd_app").Path != "/" {
		t.Errorf("callback = %d %s %v", ok.StatusCode, ok.Header.Get("Location"), ok.Cookies())
	}
}

// BenchmarkForwardAuth is the check of a request with a valid app session, as the proxy
// makes it before every request to a protected app: it must cost no write and no password
// work (compare x_baseline with BenchmarkBaseline's run just before it).
//
//	go test -run '^$' -bench 'Baseline$|ForwardAuth$' -benchtime 2s .
func BenchmarkForwardAuth(b *testing.B) {
	ts := benchServer(b, func(c *config) { c.TrustedProxy = "127.0.0.1" })
	ctx := context.Background()
	ts.s.store.createGroup(ctx, group{Name: "family", CreatedAt: 1})
	ts.addProtectedApp("Jellyfin", []string{"https://media.example.com"}, "family")
	name := ts.addBenchUser()
	ts.s.store.addMembers(ctx, "family", []string{name})
	br := ts.browser(name, "bench password")
	br.login()
	ck := forwardSession(b, ts, br, "media.example.com")
	hdr := http.Header{"X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"media.example.com"}, "X-Forwarded-Uri": {"/web/index.html"},
		"X-Forwarded-Method": {"GET"}, "Cookie": {ck.Name + "=" + ck.Value}}
	u := ts.url + "/oauth/forward-auth"
	writes := ts.s.store.w.jobsRun.Load()
	runParallel(b, func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", u, nil)
			req.Header = hdr
			resp, err := benchClient.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Remote-Groups") != "family" {
				b.Errorf("check = %d %v", resp.StatusCode, resp.Header)
				return
			}
		}
	})
	b.StopTimer()
	if n := ts.s.store.w.jobsRun.Load() - writes; n > 0 {
		b.Errorf("the checks wrote %d times", n)
	}
	report(b, ts)
}
