package main

import (
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestLogin covers the generic failure message, the dummy hash for unknown users, session
// cookies and the return to where the user was going.
func TestLogin(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	tokenRE := regexp.MustCompile(`value="[A-Za-z0-9_-]{43}"`)
	fail := func(user, pass string) page {
		b := ts.browser(user, pass)
		p := b.login()
		if p.StatusCode != http.StatusUnauthorized || !strings.Contains(p.Body, "Incorrect username or password.") {
			t.Fatalf("login(%q, %q) = %d %q", user, pass, p.StatusCode, p.Body)
		}
		return p
	}
	wrongPass := fail("alice", "wrong password")
	unknown := fail("bob", "wrong password")
	// The same page whether the user or the password was wrong (but for the username echoed
	// back and the per-browser CSRF token).
	norm := func(p page, user string) string {
		return tokenRE.ReplaceAllString(strings.ReplaceAll(p.Body, user, "USER"), "TOKEN")
	}
	if norm(wrongPass, "alice") != norm(unknown, "bob") {
		t.Error("the failure pages for a wrong password and an unknown user differ")
	}
	// Unknown users are checked against a dummy hash of the configured cost.
	if !strings.HasPrefix(ts.s.dummyHash, "pbkdf2-sha256$1000$") {
		t.Errorf("no dummy hash of the configured cost was checked for an unknown user: %q", ts.s.dummyHash)
	}

	b := ts.browser("alice", "correct horse battery")
	lp := b.get("/login?next=" + url.QueryEscape("/oauth/authorize?client_id=x&state=1"))
	p := b.post("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"},
		"csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
	if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/oauth/authorize?client_id=x&state=1" {
		t.Fatalf("login = %d %q; want 303 back to the authorize URL", p.StatusCode, p.Header.Get("Location"))
	}
	var sc *http.Cookie
	for _, c := range p.Cookies() {
		if c.Name == "oauthd_session" {
			sc = c
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteLaxMode || sc.Secure || sc.Path != "/" || len(sc.Value) != 43 {
		t.Fatalf("session cookie = %+v; want HttpOnly, SameSite=Lax, not Secure on http, Path=/", sc)
	}
	if home := b.get("/"); !strings.Contains(home.Body, "Signed in as <strong>alice</strong>") {
		t.Fatalf("home after login: %q", home.Body)
	}
	// A login form without its CSRF token is refused.
	if p := ts.browser("", "").post("/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}}); p.StatusCode != http.StatusForbidden {
		t.Fatalf("login without csrf_token = %d; want 403", p.StatusCode)
	}
	// A cross-site login POST is refused before anything else (http.CrossOriginProtection).
	req, _ := http.NewRequest("POST", ts.url+"/login", strings.NewReader("username=alice"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if p := b.do(req); p.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site login = %d; want 403", p.StatusCode)
	}
}

// TestSecureCookies: an https issuer gets Secure, __Host- prefixed cookies.
func TestSecureCookies(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.Issuer = "https://auth.example" })
	ts.addUser("alice", "correct horse battery")
	p := ts.browser("alice", "correct horse battery").get("/login")
	for _, c := range p.Cookies() {
		if !strings.HasPrefix(c.Name, "__Host-") || !c.Secure || !c.HttpOnly || c.Path != "/" || c.Domain != "" {
			t.Errorf("cookie %+v on an https issuer; want __Host-, Secure, HttpOnly, Path=/", c)
		}
	}
	if len(p.Cookies()) == 0 {
		t.Fatal("the login page set no CSRF cookie")
	}
}

// TestSafeNext: only same-origin paths are accepted after login (no open redirect).
func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/oauth/authorize?a=b":       "/oauth/authorize?a=b",
		"/":                          "/",
		"":                           "/",
		"//evil.example/x":           "/",
		"/\\evil.example":            "/",
		"https://evil.example/":      "/",
		"javascript:alert(1)":        "/",
		"evil.example":               "/",
		"/\t/evil.example":           "/",
		"/x\r\nSet-Cookie: a=b":      "/",
		"https:evil.example":         "/",
		"/%2F%2Fevil.example":        "/%2F%2Fevil.example",
		"\\\\evil.example":           "/",
		"/ok/../..//evil.example/%0": "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestConsentCSRF: the consent POST needs the session-bound token and the pending request of
// this very session, once.
func TestConsentCSRF(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.addUser("mallory", "mallory's password")
	c := ts.addClient(false, "read", "https://app.example/cb")
	alice := ts.browser("alice", "correct horse battery")
	consent := alice.authorize(codeRequest(c, nil), "")
	csrf, req := hidden(consent.Body, "csrf_token"), hidden(consent.Body, "request")
	if csrf == "" || req == "" {
		t.Fatalf("consent page lacks csrf_token or request: %q", consent.Body)
	}

	mallory := ts.browser("mallory", "mallory's password")
	mallory.login()
	malConsent := mallory.authorize(codeRequest(c, nil), "")
	for _, tt := range []struct {
		name string
		b    *browser
		form url.Values
		hdr  string // Sec-Fetch-Site
		want int
	}{
		{"no csrf token", alice, url.Values{"request": {req}, "decision": {"allow"}}, "same-origin", 403},
		{"wrong csrf token", alice, url.Values{"csrf_token": {hidden(malConsent.Body, "csrf_token")}, "request": {req}, "decision": {"allow"}}, "same-origin", 403},
		{"cross-site", alice, url.Values{"csrf_token": {csrf}, "request": {req}, "decision": {"allow"}}, "cross-site", 403},
		{"another user's request", mallory, url.Values{"csrf_token": {hidden(malConsent.Body, "csrf_token")}, "request": {req}, "decision": {"allow"}}, "same-origin", 400},
		{"bad decision", alice, url.Values{"csrf_token": {csrf}, "request": {req}, "decision": {"maybe"}}, "same-origin", 400},
		{"repeated field", alice, url.Values{"csrf_token": {csrf}, "request": {req}, "decision": {"allow", "deny"}}, "same-origin", 400},
		{"not logged in", ts.browser("", ""), url.Values{"csrf_token": {csrf}, "request": {req}, "decision": {"allow"}}, "same-origin", 403},
	} {
		r, _ := http.NewRequest("POST", ts.url+"/oauth/consent", strings.NewReader(tt.form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Sec-Fetch-Site", tt.hdr)
		p := tt.b.do(r)
		if p.StatusCode != tt.want || p.Header.Get("Location") != "" {
			t.Errorf("handleConsent(%s) = %d Location %q; want %d and no redirect", tt.name, p.StatusCode, p.Header.Get("Location"), tt.want)
		}
	}
	// The genuine POST works once; replaying it finds nothing.
	ok := alice.post("/oauth/consent", url.Values{"csrf_token": {csrf}, "request": {req}, "decision": {"allow"}})
	if ok.StatusCode != http.StatusSeeOther || !strings.Contains(ok.Header.Get("Location"), "code=") {
		t.Fatalf("genuine consent = %d %q", ok.StatusCode, ok.Header.Get("Location"))
	}
	if again := alice.post("/oauth/consent", url.Values{"csrf_token": {csrf}, "request": {req}, "decision": {"allow"}}); again.StatusCode != http.StatusBadRequest {
		t.Fatalf("replayed consent = %d %q; want 400", again.StatusCode, again.Header.Get("Location"))
	}
	// Deny sends access_denied with state and iss.
	q := codeRequest(c, nil)
	q.Set("prompt", "consent")
	p := alice.authorize(q, "deny")
	u, _ := url.Parse(p.Header.Get("Location"))
	if v := u.Query(); v.Get("error") != errAccessDenied || v.Get("state") != q.Get("state") || v.Get("iss") != ts.url {
		t.Fatalf("deny = %q", p.Header.Get("Location"))
	}
}

// TestLogout ends the session; without its token it is refused.
func TestLogout(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	b := ts.browser("alice", "correct horse battery")
	b.login()
	home := b.get("/")
	if p := b.post("/logout", url.Values{}); p.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without csrf_token = %d; want 403", p.StatusCode)
	}
	if p := b.post("/logout", url.Values{"csrf_token": {hidden(home.Body, "csrf_token")}}); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout = %d", p.StatusCode)
	}
	if p := b.get("/"); strings.Contains(p.Body, "Signed in") {
		t.Fatal("still signed in after logout")
	}
}

// TestSetup: the one-time first-run link creates an admin once.
func TestSetup(t *testing.T) {
	ts := newTestServer(t)
	tok := ts.s.newSetupToken()
	b := ts.browser("root", "a long admin password")
	if p := b.get("/setup?token=wrong"); p.StatusCode != http.StatusForbidden {
		t.Fatalf("setup with a wrong token = %d", p.StatusCode)
	}
	p := b.get("/setup?token=" + tok)
	if p.StatusCode != 200 {
		t.Fatalf("setup page = %d", p.StatusCode)
	}
	form := url.Values{"token": {tok}, "csrf_token": {hidden(p.Body, "csrf_token")}, "username": {"root"},
		"password": {"a long admin password"}, "password2": {"a different one!"}}
	if r := b.post("/setup", form); r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "differ") {
		t.Fatalf("setup with different passwords = %d", r.StatusCode)
	}
	form.Set("password2", "a long admin password")
	form.Set("username", "bad name!")
	if r := b.post("/setup", form); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("setup with a bad username = %d", r.StatusCode)
	}
	form.Set("username", "root")
	if r := b.post("/setup", form); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("setup = %d %s", r.StatusCode, r.Body)
	}
	u, err := ts.s.store.userByName(t.Context(), "root")
	if err != nil || !u.Admin {
		t.Fatalf("setup user = %+v, %v; want an admin", u, err)
	}
	if p := b.get("/"); !strings.Contains(p.Body, "Signed in as <strong>root</strong>") {
		t.Fatal("setup did not sign the admin in")
	}
	if r := b.post("/setup", form); r.StatusCode != http.StatusForbidden {
		t.Fatalf("second use of the setup token = %d; want 403", r.StatusCode)
	}
	if p := b.get("/setup?token=" + tok); p.StatusCode != http.StatusForbidden {
		t.Fatalf("setup page after use = %d; want 403", p.StatusCode)
	}

	// A user added from the CLI meanwhile makes a live token useless.
	ts2 := newTestServer(t)
	tok2 := ts2.s.newSetupToken()
	b2 := ts2.browser("", "")
	p = b2.get("/setup?token=" + tok2)
	ts2.addUser("alice", "correct horse battery")
	if p := b2.get("/setup?token=" + tok2); p.StatusCode != http.StatusConflict {
		t.Fatalf("setup page after a CLI user = %d; want 409", p.StatusCode)
	}
	form = url.Values{"token": {tok2}, "csrf_token": {hidden(p.Body, "csrf_token")}, "username": {"root"},
		"password": {"a long admin password"}, "password2": {"a long admin password"}}
	if r := b2.post("/setup", form); r.StatusCode != http.StatusConflict {
		t.Fatalf("setup after a CLI user = %d; want 409", r.StatusCode)
	}
}

// TestPageHeaders: security headers everywhere, no inline script or style in any template.
func TestPageHeaders(t *testing.T) {
	ts := newTestServer(t)
	b := ts.browser("", "")
	for _, path := range []string{"/", "/login", "/oauth/authorize", "/.well-known/oauth-authorization-server"} {
		p := b.get(path)
		for k, v := range map[string]string{
			"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
		} {
			if got := p.Header.Get(k); got != v {
				t.Errorf("GET %s: %s = %q; want %q", path, k, got, v)
			}
		}
		if csp := p.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP = %q", path, csp)
		}
	}
	if p := b.get("/static/style.css"); p.StatusCode != 200 || !strings.HasPrefix(p.Header.Get("Content-Type"), "text/css") {
		t.Errorf("stylesheet = %d %s", p.StatusCode, p.Header.Get("Content-Type"))
	}
	bad := regexp.MustCompile(`(?i)\son[a-z]+=|style=|javascript:|<style`)
	scripts := regexp.MustCompile(`(?is)<script[^>]*>.*?</script>`)
	external := regexp.MustCompile(`^<script src="\{\{path "/static/[a-z]+\.js"\}\}" defer></script>$`)
	fs.WalkDir(templateFS, "templates", func(path string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(path, ".html") {
			b, _ := templateFS.ReadFile(path)
			if m := bad.Find(b); m != nil {
				t.Errorf("%s has inline script or style: %q", path, m)
			}
			for _, m := range scripts.FindAll(b, -1) {
				if !external.Match(m) {
					t.Errorf("%s has an inline script: %q", path, m)
				}
			}
		}
		return nil
	})
	// A huge form body is refused with a page, not a 500.
	p := b.post("/login", url.Values{"username": {strings.Repeat("a", 1<<20)}})
	if p.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("1 MB login body = %d; want 413", p.StatusCode)
	}
}

// TestSitePages: the instance's name and logo on every page, the favicon, 404 and 405 as pages
// in the layout, one-time notices that cannot be forged, and the consent page's order.
func TestSitePages(t *testing.T) {
	logo := filepath.Join(t.TempDir(), "logo.svg")
	os.WriteFile(logo, []byte(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"><script>alert(1)</script></svg>`), 0o600)
	ts := newTestServer(t, func(c *config) { c.Name = "Family Cloud"; c.Logo = logo })
	b := ts.browser("", "")
	p := b.get("/login")
	if !strings.Contains(p.Body, "<title>Sign in · Family Cloud</title>") || !strings.Contains(p.Body, `<span>Family Cloud</span>`) || !strings.Contains(p.Body, `src="/static/logo?v=`) {
		t.Fatalf("the login page does not carry the instance's name and logo:\n%s", p.Body)
	}
	lg := b.get("/static/logo?v=x")
	if lg.Header.Get("Content-Type") != "image/svg+xml" || !strings.Contains(lg.Header.Get("Cache-Control"), "max-age=31536000") ||
		!strings.Contains(lg.Header.Get("Content-Security-Policy"), "sandbox") {
		t.Errorf("logo = %d %v", lg.StatusCode, lg.Header)
	}
	if f := b.get("/favicon.ico"); f.StatusCode != 200 || !strings.HasPrefix(f.Header.Get("Content-Type"), "image/") {
		t.Errorf("favicon = %d %q", f.StatusCode, f.Header.Get("Content-Type"))
	}
	nf := b.get("/no/such/page")
	if nf.StatusCode != 404 || !strings.Contains(nf.Body, "Page not found") || !strings.Contains(nf.Body, `href="/"`) || !strings.Contains(nf.Header.Get("Content-Type"), "text/html") {
		t.Errorf("404 = %d %q", nf.StatusCode, nf.Body)
	}
	req, _ := http.NewRequest("DELETE", ts.url+"/login", nil)
	na := b.do(req)
	if na.StatusCode != 405 || !strings.Contains(na.Body, "Not allowed here") || !strings.Contains(na.Header.Get("Allow"), "GET") {
		t.Errorf("405 = %d Allow %q %q", na.StatusCode, na.Header.Get("Allow"), na.Body)
	}
	// A notice is shown once, and a forged one not at all.
	u, _ := url.Parse(ts.url)
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: "oauthd_notice", Value: "UGhpc2hpbmc.AAAAAAAAAAAAAAAAAAAAAA"}})
	ts.addUser("alice", "correct horse battery")
	alice := ts.browser("alice", "correct horse battery")
	alice.login()
	alice.c.Jar.SetCookies(u, []*http.Cookie{{Name: "oauthd_notice", Value: "UGhpc2hpbmc.AAAAAAAAAAAAAAAAAAAAAA"}})
	if p := alice.get("/account"); strings.Contains(p.Body, "Phishing") || strings.Contains(p.Body, `class="notice"`) {
		t.Error("a forged notice is shown")
	}
	// The consent page lists openid first and offline_access last.
	c := ts.addClient(false, "read", "https://app.example/cb")
	q := codeRequest(c, nil)
	q.Set("scope", "offline_access read openid email")
	cp := alice.authorize(q, "")
	i0, i1, i2 := strings.Index(cp.Body, "<code>openid</code>"), strings.Index(cp.Body, "<code>read</code>"), strings.Index(cp.Body, "<code>offline_access</code>")
	if i0 < 0 || i1 < i0 || i2 < i1 {
		t.Errorf("consent order: openid %d, read %d, offline_access %d", i0, i1, i2)
	}
	// A logo that is neither PNG nor SVG, or too large, is refused at start.
	bad := filepath.Join(t.TempDir(), "logo.gif")
	os.WriteFile(bad, []byte("GIF89a"), 0o600)
	if _, err := loadLogo(bad); err == nil {
		t.Error("a GIF logo was accepted")
	}
	os.WriteFile(bad, append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, maxLogo)...), 0o600)
	if _, err := loadLogo(bad); err == nil || !strings.Contains(err.Error(), "256 KiB") {
		t.Errorf("a 256 KiB+ logo: %v", err)
	}
}

// TestRedirectURIErrorPage: the page shows the URI received and the usual causes, and lists
// the registered URIs only to the app's owner or an administrator.
func TestRedirectURIErrorPage(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.addAdmin("root", "the admin password")
	c := ts.addClient(false, "read", "https://app.example/callback")
	q := codeRequest(c, nil)
	q.Set("redirect_uri", "https://app.example/callback/")
	for who, pw := range map[string]string{"": "", "alice": "correct horse battery", "root": "the admin password"} {
		b := ts.browser(who, pw)
		if who != "" {
			b.login()
		}
		p := b.get("/oauth/authorize?" + q.Encode())
		if p.StatusCode != 400 || p.Header.Get("Location") != "" || !strings.Contains(p.Body, "https://app.example/callback/") || !strings.Contains(p.Body, "trailing slash") {
			t.Fatalf("%q: redirect URI page = %d", who, p.StatusCode)
		}
		if shows := strings.Contains(p.Body, `<code class="id">https://app.example/callback</code>`); shows != (who == "root") {
			t.Errorf("%q: registered URIs shown = %v", who, shows)
		}
	}
}

// TestTemplateLayout: the design system's rules, checked on every page template: no inline
// script or style; every list table is a table.list whose cells carry a data-label (the
// stacked cards on a phone) or are the actions cell; list pages use the wide layout.
func TestTemplateLayout(t *testing.T) {
	names, _ := fs.Glob(templateFS, "templates/*.html")
	td := regexp.MustCompile(`<td[ >]`)
	for _, n := range names {
		b, _ := templateFS.ReadFile(n)
		s := string(b)
		if regexp.MustCompile(`<script(?: [^>]*)?>[^<]`).MatchString(s) || strings.Contains(s, " style=") || strings.Contains(s, "<style") || regexp.MustCompile(` on[a-z]+=`).MatchString(s) {
			t.Errorf("%s has inline script or style", n)
		}
		if !strings.Contains(s, "<table") {
			continue
		}
		if strings.Contains(s, "<table>") {
			t.Errorf("%s has a table without class list", n)
		}
		for _, loc := range td.FindAllStringIndex(s, -1) {
			cell := s[loc[0]:min(loc[0]+80, len(s))]
			if !strings.Contains(cell[:strings.Index(cell, ">")+1], "data-label=") && !strings.Contains(cell, `class="actions-cell"`) {
				t.Errorf("%s: a cell without data-label: %s", n, cell)
			}
		}
	}
}
