package main

import (
	"context"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// Tests of what MCP hosts send: dynamic registration as they fill it in, browser hosts'
// CORS preflights, and an issuer with a path (oauthd under a prefix of a shared host).

// TestDCRAsHostsSendIt: under -registration open a confidential method (or none named) is
// registered public and said so; application_type is accepted and enforced.
func TestDCRAsHostsSendIt(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
	base := `"client_name":"Claude","redirect_uris":["http://127.0.0.1:33418/callback"],"grant_types":["authorization_code","refresh_token"]`
	for _, tt := range []struct {
		name, body      string
		wantStatus      int
		wantError, want string // want: in the answer's text
	}{
		{"method omitted (RFC 7591 default client_secret_basic)", `{` + base + `}`, 201, "", `"token_endpoint_auth_method":"none"`},
		{"client_secret_basic", `{` + base + `,"token_endpoint_auth_method":"client_secret_basic"}`, 201, "", `"token_endpoint_auth_method":"none"`},
		{"client_secret_post", `{` + base + `,"token_endpoint_auth_method":"client_secret_post"}`, 201, "", `"token_endpoint_auth_method":"none"`},
		{"confidential grant", `{"redirect_uris":["https://a.example/cb"],"grant_types":["authorization_code","client_credentials"],"token_endpoint_auth_method":"client_secret_basic"}`,
			400, errInvalidClientMetadata, "registration-token create -grant client_credentials"},
		{"web is the default", `{` + base + `}`, 201, "", `"application_type":"web"`},
		{"web with https", `{"redirect_uris":["https://app.example/cb"],"application_type":"web"}`, 201, "", `"application_type":"web"`},
		{"web with a private-use scheme", `{"redirect_uris":["com.example.app:/cb"],"application_type":"web"}`, 400, errInvalidRedirectURI, "application_type native"},
		{"web by default with a private-use scheme", `{"redirect_uris":["com.example.app:/cb"]}`, 400, errInvalidRedirectURI, "application_type native"},
		{"native with loopback and a private-use scheme", `{"redirect_uris":["http://127.0.0.1/cb","com.example.app:/cb"],"application_type":"native"}`, 201, "", `"application_type":"native"`},
		{"native with https", `{"redirect_uris":["https://app.example/cb"],"application_type":"native"}`, 400, errInvalidRedirectURI, "application_type web"},
		{"unknown application_type", `{"redirect_uris":["https://app.example/cb"],"application_type":"desktop"}`, 400, errInvalidClientMetadata, "web or native"},
	} {
		r := ts.postJSON("POST", "/oauth/register", "", tt.body)
		if r.Status != tt.wantStatus || str(r.JSON["error"]) != tt.wantError || !strings.Contains(r.Raw, tt.want) {
			t.Errorf("handleRegister(%s) = %d %s; want %d %q with %q", tt.name, r.Status, r.Raw, tt.wantStatus, tt.wantError, tt.want)
			continue
		}
		if r.Status == 201 && r.JSON["client_secret"] != nil {
			t.Errorf("handleRegister(%s) gave a secret to a public client", tt.name)
		}
	}
	// The registered client works as the public client it was told it is.
	r := ts.postJSON("POST", "/oauth/register", "", `{`+base+`,"token_endpoint_auth_method":"client_secret_basic"}`)
	c, err := ts.s.store.clientByID(context.Background(), str(r.JSON["client_id"]))
	if err != nil || !c.Public || c.ApplicationType != "web" {
		t.Fatalf("stored client = %+v, %v", c, err)
	}
	// Its configuration endpoint says the same, and a PUT repeating the method keeps it public.
	path := strings.TrimPrefix(str(r.JSON["registration_client_uri"]), ts.url)
	rat := str(r.JSON["registration_access_token"])
	if g := ts.postJSON("GET", path, rat, ""); g.JSON["token_endpoint_auth_method"] != "none" || g.JSON["application_type"] != "web" {
		t.Errorf("configuration = %s", g.Raw)
	}
	put := `{"client_id":"` + c.ID + `",` + base + `,"token_endpoint_auth_method":"client_secret_basic","application_type":"native"}`
	if u := ts.postJSON("PUT", path, rat, put); u.Status != 200 || u.JSON["token_endpoint_auth_method"] != "none" || u.JSON["application_type"] != "native" {
		t.Errorf("PUT = %d %s", u.Status, u.Raw)
	}
	// A resource's scopes are accepted and left out of the client's own: the answer has no
	// scope member when nothing else was asked for (RFC 7591 §3.2.1 returns what is registered).
	ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read notes:write", false, 0)
	if r := ts.postJSON("POST", "/oauth/register", "", `{`+base+`,"scope":"notes:read notes:write"}`); r.Status != 201 || strings.Contains(r.Raw, `"scope"`) {
		t.Errorf("registration with a resource's scopes = %d %s; want 201 without a scope member", r.Status, r.Raw)
	}
	if r := ts.postJSON("POST", "/oauth/register", "", `{`+base+`,"scope":"openid notes:read"}`); r.Status != 201 || r.JSON["scope"] != "openid" {
		t.Errorf("registration with openid and a resource's scope = %d %s; want scope openid", r.Status, r.Raw)
	}
	// With an initial access token a confidential client is registered as asked.
	ts.clock.t = ts.clock.t.AddDate(-10, 0, 0) // the CLI stamps the token with real time
	if r := ts.postJSON("POST", "/oauth/register", ts.registrationToken(1), `{`+base+`,"token_endpoint_auth_method":"client_secret_basic"}`); r.Status != 201 ||
		r.JSON["token_endpoint_auth_method"] != "client_secret_basic" || len(str(r.JSON["client_secret"])) != 43 {
		t.Errorf("confidential registration with a token = %d %s", r.Status, r.Raw)
	}
}

// TestCORSPreflight: browser-based hosts' preflights at every cross-origin endpoint allow the
// headers they ask for (MCP-Protocol-Version among them), never cookies or credentials.
func TestCORSPreflight(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/oauth/jwks",
		"/oauth/token", "/oauth/access_token", "/oauth/revoke", "/oauth/register", "/oauth/register/some-client", "/oauth/userinfo"} {
		req, _ := http.NewRequest("OPTIONS", ts.url+path, nil)
		req.Header.Set("Origin", "https://claude.ai")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version, x-stainless-lang,authorization, cookie, content-type, bad header")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		allowed := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
		if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("preflight %s = %d %v", path, resp.StatusCode, h)
		}
		for _, want := range []string{"mcp-protocol-version", "x-stainless-lang", "authorization", "content-type"} {
			if !strings.Contains(allowed, want) {
				t.Errorf("preflight %s: Access-Control-Allow-Headers %q lacks %s", path, allowed, want)
			}
		}
		if strings.Contains(allowed, "cookie") || strings.Contains(allowed, "bad") || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("preflight %s allows cookies or credentials: %v", path, h)
		}
	}
	// Without a list, the headers hosts always send are allowed anyway.
	req, _ := http.NewRequest("OPTIONS", ts.url+"/oauth/token", nil)
	req.Header.Set("Origin", "https://claude.ai")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(got, "MCP-Protocol-Version") || !strings.Contains(got, "Authorization") {
		t.Errorf("preflight without a list allows %q", got)
	}
	// The answers themselves carry the origin wildcard, no credentials.
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/oauth/jwks"} {
		req, _ := http.NewRequest("GET", ts.url+path, nil)
		req.Header.Set("Origin", "https://claude.ai")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("GET %s CORS headers = %v", path, resp.Header)
		}
	}
}

// TestIssuerPath: -issuer http://host/auth serves everything under /auth: metadata at the
// RFC 8414 §3.1 and OIDC Discovery URLs, a whole sign-in and code flow, cookies scoped to
// the path, nothing outside it.
func TestIssuerPath(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.Issuer += "/auth/" }) // a trailing slash is dropped
	iss := ts.url + "/auth"
	if ts.s.cfg.Issuer != iss || ts.s.prefix != "/auth" {
		t.Fatalf("issuer = %q, prefix %q", ts.s.cfg.Issuer, ts.s.prefix)
	}
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	res := ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read", true, 0)
	b := ts.browser("alice", "correct horse battery")

	for _, tt := range []struct {
		path string
		want int
	}{
		{"/.well-known/oauth-authorization-server/auth", 200},
		{"/.well-known/openid-configuration/auth", 200},
		{"/auth/.well-known/openid-configuration", 200},
		{"/auth/.well-known/oauth-authorization-server", 200},
		{"/auth/static/style.css", 200},
		{"/auth", 200},
		{"/auth/", 200},
		{"/.well-known/oauth-authorization-server", 404},
		{"/.well-known/openid-configuration", 404},
		{"/login", 404},
		{"/authx/login", 404},
		{"/", 404},
		{"/auth/auth/login", 404},
	} {
		if p := b.get(tt.path); p.StatusCode != tt.want {
			t.Errorf("GET %s = %d; want %d", tt.path, p.StatusCode, tt.want)
		}
	}
	m := decodeCall(b.get("/.well-known/oauth-authorization-server/auth").Response, b.get("/.well-known/oauth-authorization-server/auth").Body)
	for k, v := range map[string]string{"issuer": iss, "authorization_endpoint": iss + "/oauth/authorize", "token_endpoint": iss + "/oauth/access_token",
		"jwks_uri": iss + "/oauth/jwks", "introspection_endpoint": iss + "/oauth/introspect", "device_authorization_endpoint": iss + "/oauth/device_authorization"} {
		if m.JSON[k] != v {
			t.Errorf("metadata %s = %v; want %s", k, m.JSON[k], v)
		}
	}
	req, _ := http.NewRequest("OPTIONS", ts.url+"/.well-known/oauth-authorization-server/auth", nil)
	req.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "MCP-Protocol-Version") {
		t.Errorf("preflight at the RFC 8414 URL = %v %v", resp, err)
	}

	// The browser's whole way, every link and redirect under /auth.
	var verifier string
	q := codeRequest(c, &verifier)
	q.Set("resource", res.URI)
	p := b.get("/auth/oauth/authorize?" + q.Encode())
	loc := p.Header.Get("Location")
	if p.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "/auth/login?next=%2Foauth%2Fauthorize") {
		t.Fatalf("authorize signed out = %d %q", p.StatusCode, loc)
	}
	lp := b.get(loc)
	if !strings.Contains(lp.Body, `href="/auth/static/style.css"`) || !strings.Contains(lp.Body, `action="/auth/login"`) {
		t.Errorf("login page links = %s", lp.Body)
	}
	u, _ := url.Parse(ts.url + "/auth/")
	for _, ck := range b.c.Jar.(*cookiejar.Jar).Cookies(u) {
		if ck.Name != "oauthd_csrf" {
			t.Errorf("cookie %s before sign-in", ck.Name)
		}
	}
	p = b.post("/auth/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {hidden(lp.Body, "next")}})
	if p.StatusCode != http.StatusSeeOther || !strings.HasPrefix(p.Header.Get("Location"), "/auth/oauth/authorize?") {
		t.Fatalf("login = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	if sc := strings.Join(p.Header.Values("Set-Cookie"), "\n"); !strings.Contains(sc, "oauthd_session=") || !strings.Contains(sc, "Path=/auth;") && !strings.HasSuffix(sc, "Path=/auth") {
		t.Errorf("session cookie = %q; want Path=/auth", sc)
	}
	if root, _ := url.Parse(ts.url + "/"); len(b.c.Jar.Cookies(root)) != 0 {
		t.Errorf("cookies sent outside the issuer's path: %v", b.c.Jar.Cookies(root))
	}
	p = b.get(p.Header.Get("Location"))
	if p.StatusCode != 200 || !strings.Contains(p.Body, `action="/auth/oauth/consent"`) || !strings.Contains(p.Body, `href="/auth/account"`) {
		t.Fatalf("consent page = %d %s", p.StatusCode, p.Body)
	}
	p = b.post("/auth/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}})
	back, _ := url.Parse(p.Header.Get("Location"))
	if back.Host != "app.example" || back.Query().Get("iss") != iss || back.Query().Get("code") == "" {
		t.Fatalf("consent = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	r := ts.postToken("/auth/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {c.RedirectURIs[0]}, "code_verifier": {verifier}}, c.ID, c.Secret)
	if r.Status != 200 {
		t.Fatalf("exchange = %d %s", r.Status, r.Raw)
	}
	jwks := b.get("/auth/oauth/jwks")
	if _, err := verifyAccessJWT([]byte(jwks.Body), str(r.JSON["access_token"]), iss, res.URI, ts.clock.Now()); err != nil {
		t.Errorf("the JWT access token under a path issuer: %v", err)
	}
	if in := ts.postToken("/auth/oauth/introspect", url.Values{"token": {str(r.JSON["access_token"])}}, res.ClientID, res.Secret); in.JSON["iss"] != iss || in.JSON["active"] != true {
		t.Errorf("introspection = %d %s", in.Status, in.Raw)
	}
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {"refresh_token"}}, c.ID, c.Secret); r.Status != 404 {
		t.Errorf("the token endpoint outside the path = %d", r.Status)
	}
	// Pages: redirects after forms stay under the path.
	home := b.get("/auth/")
	if p := b.post("/auth/logout", url.Values{"csrf_token": {hidden(home.Body, "csrf_token")}}); p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/auth/" {
		t.Errorf("logout = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	if p := b.get("/auth/account"); p.Header.Get("Location") != "/auth/login?next=%2Faccount" {
		t.Errorf("account signed out = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	da := ts.postToken("/auth/oauth/device_authorization", url.Values{"client_id": {ts.addDeviceClient().ID}}, "", "")
	if str(da.JSON["verification_uri"]) != iss+"/device" {
		t.Errorf("device verification_uri = %s", da.Raw)
	}
	// An https issuer with a path cannot use __Host- cookies (they need Path=/): __Secure-.
	if got := (&server{secure: true, prefix: "/auth"}).cookieName("oauthd_session"); got != "__Secure-oauthd_session" {
		t.Errorf("cookie name under an https path issuer = %q", got)
	}
	if got := (&server{secure: true}).cookieName("oauthd_session"); got != "__Host-oauthd_session" {
		t.Errorf("cookie name under an https root issuer = %q", got)
	}
	for _, bad := range []string{"https://a.example/x/../y", "https://a.example/a b", "https://a.example//x", "https://a.example/x?y=1", "https://a.example/%2e"} {
		if _, err := normalizeIssuer(bad); err == nil {
			t.Errorf("normalizeIssuer(%q) accepted it", bad)
		}
	}
}

// TestTemplatesUsePath: every link, form and script a template makes to oauthd goes through
// {{path}}, so that it works under an issuer with a path (prefix.go).
func TestTemplatesUsePath(t *testing.T) {
	literal := regexp.MustCompile(`(?:href|action|src)="/`)
	fs.WalkDir(templateFS, "templates", func(name string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(name, ".html") {
			b, _ := templateFS.ReadFile(name)
			for _, m := range literal.FindAllIndex(b, -1) {
				t.Errorf("%s: %q: write the path as {{path \"/…\"}}", name, b[m[0]:min(len(b), m[1]+30)])
			}
		}
		return nil
	})
}
