package main

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testResource is a registered resource with its credential's secret.
type testResource struct {
	resource
	Secret string
}

// cred is the resource's introspection credential as a client.
func (r testResource) cred() testClient {
	return testClient{client: client{ID: r.ClientID}, Secret: r.Secret}
}

// addResource registers a resource as `oauthd resource add` does.
func (ts *testServer) addResource(uri, name, scope string, jwt bool, ttl time.Duration) testResource {
	ts.t.Helper()
	r, secret, err := ts.s.store.addResource(context.Background(), resourceSpec{URI: uri, Name: name, Scope: scope, JWT: jwt, TokenTTL: ttl}, ts.clock.Now())
	if err != nil {
		ts.t.Fatal(err)
	}
	return testResource{r, secret}
}

// introspect asks about tok as c and returns the answer.
func (ts *testServer) introspect(c testClient, tok string) tokenCall {
	ts.t.Helper()
	r := ts.postToken("/oauth/introspect", url.Values{"token": {tok}}, c.ID, c.Secret)
	if r.Status != 200 {
		ts.t.Fatalf("introspect = %d %s", r.Status, r.Raw)
	}
	return r
}

// codeWith runs a code flow for c asking for the resources (allowing consent) and exchanges
// the code with the token request's extra parameters.
func (b *browser) codeWith(c testClient, resources []string, scope string, extra url.Values) tokenCall {
	b.t.Helper()
	var verifier string
	q := codeRequest(c, &verifier)
	q["resource"] = resources
	if scope != "" {
		q.Set("scope", scope)
	}
	p := b.authorize(q, "allow")
	loc, _ := url.Parse(p.Header.Get("Location"))
	code := loc.Query().Get("code")
	if code == "" {
		b.t.Fatalf("authorize with resources %v: %d %s %s", resources, p.StatusCode, p.Header.Get("Location"), p.Body)
	}
	f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURIs[0]}, "code_verifier": {verifier}}
	for k, v := range extra {
		f[k] = v
	}
	return b.ts.postToken("/oauth/token", f, c.ID, c.Secret)
}

// TestResourceCommand: `oauthd resource add|list|del`, its JSON and its refusals.
func TestResourceCommand(t *testing.T) {
	env := map[string]string{"OAUTHD_DB": t.TempDir() + "/oauthd.db"}
	code, out, errs := cli(t, env, "", "resource", "add", "-uri", "https://MCP.example.com:443/", "-name", "Notes MCP", "-scope", "notes:read notes:write", "-jwt")
	if code != 0 {
		t.Fatalf("resource add = %d %q %q", code, out, errs)
	}
	var added map[string]any
	if err := json.Unmarshal([]byte(out), &added); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("resource add printed %q, not one JSON object", out)
	}
	if added["uri"] != "https://mcp.example.com" || added["name"] != "Notes MCP" || added["scope"] != "notes:read notes:write" ||
		added["jwt"] != true || added["token_ttl"] != float64(600) || str(added["client_id"]) == "" || len(str(added["client_secret"])) != 43 {
		t.Errorf("resource add = %s", out)
	}
	code, out, errs = cli(t, env, "", "resource", "add", "-uri", "http://127.0.0.1:3000/mcp", "-name", "Local", "-token-ttl", "2m")
	if code != 0 || !strings.Contains(out, `"token_ttl":120`) || !strings.Contains(out, `"jwt":false`) {
		t.Fatalf("resource add loopback = %d %q %q", code, out, errs)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-uri", "http://mcp.example.com/mcp", "-name", "X"}, 2, "must be https"},
		{[]string{"-uri", "https://mcp.example.com/mcp#frag", "-name", "X"}, 2, "fragment"},
		{[]string{"-uri", "/mcp", "-name", "X"}, 2, "absolute URI"},
		{[]string{"-uri", "https://other.example/mcp"}, 2, "name"},
		{[]string{"-uri", "https://other.example/mcp", "-name", "X", "-scope", "openid"}, 2, "OpenID Connect scope"},
		{[]string{"-uri", "https://other.example/mcp", "-name", "X", "-token-ttl", "48h"}, 2, "between 1m and 24h"},
		{[]string{"-uri", "https://mcp.example.com/", "-name", "Again"}, 1, "already registered"},
	} {
		code, _, errs := cli(t, env, "", append([]string{"resource", "add"}, tt.args...)...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("resource add %q = %d %q; want %d naming %q", tt.args, code, errs, tt.code, tt.want)
		}
	}
	code, out, _ = cli(t, env, "", "resource", "list")
	if code != 0 || strings.Count(out, "\n") != 2 || strings.Contains(out, "client_secret") || !strings.Contains(out, `"uri":"http://127.0.0.1:3000/mcp"`) {
		t.Fatalf("resource list = %d %q", code, out)
	}
	// The credential is a client without grants: it can introspect, nothing else.
	st, err := openStore(context.Background(), env["OAUTHD_DB"])
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.clientByID(context.Background(), str(added["client_id"]))
	st.Close()
	if err != nil || c.Public || len(c.GrantTypes) != 0 || len(c.RedirectURIs) != 0 {
		t.Fatalf("the resource's credential = %+v, %v; want a confidential client without grants", c, err)
	}
	// -db after the URI, as the usage line writes it.
	if code, _, errs = cli(t, nil, "", "resource", "del", "https://mcp.example.com/", "-db", env["OAUTHD_DB"]); code != 0 || !strings.Contains(errs, "deleted") {
		t.Fatalf("resource del URI -db PATH = %d %q", code, errs)
	}
	if code, _, errs = cli(t, env, "", "resource", "del"); code != 2 || !strings.Contains(errs, "takes 1 argument") {
		t.Errorf("resource del without a URI = %d %q", code, errs)
	}
	if code, _, errs = cli(t, env, "", "resource", "del", "https://mcp.example.com"); code != 1 || !strings.Contains(errs, "no resource") {
		t.Errorf("resource del again = %d %q", code, errs)
	}
	if _, out, _ = cli(t, env, "", "client", "list"); strings.Contains(out, str(added["client_id"])) {
		t.Errorf("the deleted resource's credential is still a client: %s", out)
	}
}

// TestCanonicalResource: what two spellings of one resource compare as.
func TestCanonicalResource(t *testing.T) {
	for in, want := range map[string]string{
		"https://MCP.Example.com/":          "https://mcp.example.com",
		"https://mcp.example.com:443/mcp":   "https://mcp.example.com/mcp",
		"https://mcp.example.com/MCP/":      "https://mcp.example.com/MCP/",
		"http://127.0.0.1:80":               "http://127.0.0.1",
		"https://[::1]:443/x":               "https://[::1]/x",
		"https://api.example/v1?tenant=a":   "https://api.example/v1?tenant=a",
		"https://mcp.example.com:8443/mcp/": "https://mcp.example.com:8443/mcp/",
	} {
		if got, err := canonicalResource(in); err != nil || got != want {
			t.Errorf("canonicalResource(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "mcp", "/mcp", "https://a/b#c", "urn:x:y", "https://u:p@a/b", "https://a/b c", "https:///x"} {
		if got, err := canonicalResource(bad); err == nil {
			t.Errorf("canonicalResource(%q) = %q; want an error", bad, got)
		}
	}
}

// TestResourceAuthorize: invalid_target at the authorization endpoint (a page for the
// person, with the way back to the application), the consent page naming the resource,
// consent remembered per resource, and the code's resources at the token endpoint.
func TestResourceAuthorize(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	notes := ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read notes:write", false, 0)
	ts.addResource("https://files.example.com/mcp", "Files MCP", "files:read", false, 0)
	b := ts.browser("alice", "correct horse battery")
	b.login()
	for _, tt := range []struct {
		name, resource, prompt string
		want                   string
	}{
		{"relative", "/mcp", "", "absolute URI"},
		{"fragment", "https://mcp.example.com/mcp#top", "", "fragment"},
		{"unregistered", "https://other.example/mcp", "", "oauthd resource add -uri https://other.example/mcp"},
		{"unregistered, prompt=none", "https://other.example/mcp", "none", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := codeRequest(c, nil)
			q.Set("resource", tt.resource)
			if tt.prompt != "" {
				q.Set("prompt", tt.prompt)
			}
			p := b.get("/oauth/authorize?" + q.Encode())
			if tt.prompt == "none" {
				loc, _ := url.Parse(p.Header.Get("Location"))
				if p.StatusCode != http.StatusFound || loc.Host != "app.example" || loc.Query().Get("error") != errInvalidTarget || loc.Query().Get("state") != q.Get("state") {
					t.Fatalf("handleAuthorize(%s) = %d %q; want a redirect with invalid_target", tt.resource, p.StatusCode, p.Header.Get("Location"))
				}
				return
			}
			if p.StatusCode != http.StatusBadRequest || !strings.Contains(p.Body, tt.want) || !strings.Contains(p.Body, "Unknown resource") {
				t.Fatalf("handleAuthorize(%s) = %d %s; want a page naming %q", tt.resource, p.StatusCode, p.Body, tt.want)
			}
			back := between(p.Body, `<a href="`, `"`)
			if u, err := url.Parse(html.UnescapeString(back)); err != nil || u.Host != "app.example" || u.Query().Get("error") != errInvalidTarget ||
				u.Query().Get("state") != q.Get("state") || u.Query().Get("iss") != ts.url {
				t.Errorf("the page's way back = %q; want the redirect URI with invalid_target, state and iss", back)
			}
		})
	}

	// The consent page names the resource next to the app; its scopes can be asked for.
	q := codeRequest(c, nil)
	q["resource"] = []string{"https://MCP.example.com/mcp", "https://mcp.example.com/mcp"} // repeated: allowed (RFC 8707 §2)
	q.Set("scope", "read notes:read")
	p := b.authorize(q, "")
	if p.StatusCode != 200 || !strings.Contains(p.Body, "<strong>Notes MCP</strong> at <strong class=\"host\">mcp.example.com</strong>") ||
		!strings.Contains(p.Body, "<code>notes:read</code>") {
		t.Fatalf("consent page = %d %s", p.StatusCode, p.Body)
	}
	// Without the resource, its scopes are not the client's to ask for.
	q2 := codeRequest(c, nil)
	q2.Set("scope", "read notes:read")
	if p := b.get("/oauth/authorize?" + q2.Encode()); !strings.Contains(p.Header.Get("Location"), "error=invalid_scope") {
		t.Errorf("notes:read without its resource = %d %q; want invalid_scope", p.StatusCode, p.Header.Get("Location"))
	}

	// A code for the resource: its token is for it; naming another one, or two, is refused.
	r := b.codeWith(c, []string{notes.URI}, "read notes:read", nil)
	if r.Status != 200 || str(r.JSON["scope"]) != "notes:read read" {
		t.Fatalf("exchange = %d %s", r.Status, r.Raw)
	}
	if in := ts.introspect(c, str(r.JSON["access_token"])); in.JSON["aud"] != notes.URI || in.JSON["active"] != true {
		t.Errorf("introspection of the token = %s; want aud %s", in.Raw, notes.URI)
	}
	if in := ts.introspect(c, str(r.JSON["refresh_token"])); in.JSON["active"] != true || in.JSON["aud"] != nil {
		t.Errorf("introspection of the refresh token = %s; want active, without aud", in.Raw)
	}
	for _, tt := range []struct {
		name  string
		extra url.Values
		want  string
	}{
		{"another resource", url.Values{"resource": {"https://files.example.com/mcp"}}, "not among those this grant was authorized for"},
		{"two resources", url.Values{"resource": {notes.URI, "https://files.example.com/mcp"}}, "one resource"},
		{"unregistered", url.Values{"resource": {"https://other.example/mcp"}}, "oauthd resource add"},
	} {
		if r := b.codeWith(c, []string{notes.URI}, "", tt.extra); r.Status != 400 || str(r.JSON["error"]) != errInvalidTarget ||
			!strings.Contains(str(r.JSON["error_description"]), tt.want) {
			t.Errorf("exchange naming %s = %d %s; want invalid_target naming %q", tt.name, r.Status, r.Raw, tt.want)
		}
	}
	// A grant without resources cannot be widened to one at the token endpoint.
	if r := b.codeWith(c, nil, "", url.Values{"resource": {notes.URI}}); r.Status != 400 || str(r.JSON["error"]) != errInvalidTarget ||
		!strings.Contains(str(r.JSON["error_description"]), "authorize again") {
		t.Errorf("exchange adding a resource = %d %s; want invalid_target", r.Status, r.Raw)
	}
	// Without resource the flow is what it always was.
	if r := b.codeWith(c, nil, "", nil); r.Status != 200 || ts.introspect(c, str(r.JSON["access_token"])).JSON["aud"] != nil {
		t.Errorf("a flow without resource = %d %s; want a token without aud", r.Status, r.Raw)
	}

	// Consent is remembered per resource: the same one goes straight back, another asks again.
	q = codeRequest(c, nil)
	q.Set("resource", notes.URI)
	q.Set("scope", "read notes:read")
	if p := b.authorize(q, ""); p.StatusCode != http.StatusFound || !strings.Contains(p.Header.Get("Location"), "code=") {
		t.Errorf("remembered consent for the same resource = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	q.Set("resource", "https://files.example.com/mcp")
	q.Set("scope", "read")
	if p := b.authorize(q, ""); p.StatusCode != 200 || !strings.Contains(p.Body, "Files MCP") {
		t.Errorf("another resource with approved scopes = %d %q; want the consent page again", p.StatusCode, p.Header.Get("Location"))
	}
}

// TestResourceOnEveryGrant: refresh (narrowing, never widening), client_credentials and the
// device flow all carry resources; a grant for several resources needs one named.
func TestResourceOnEveryGrant(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	notes := ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read", false, 0)
	files := ts.addResource("https://files.example.com/mcp", "Files MCP", "files:read", false, 5*time.Minute)
	b := ts.browser("alice", "correct horse battery")
	b.login()

	// One grant for two resources: each token names one, and carries only its scopes.
	r := b.codeWith(c, []string{notes.URI, files.URI}, "read notes:read files:read", url.Values{"resource": {files.URI}})
	if r.Status != 200 || str(r.JSON["scope"]) != "files:read read" || r.JSON["expires_in"] != float64(300) {
		t.Fatalf("exchange for files = %d %s; want files:read read, 300 s", r.Status, r.Raw)
	}
	if in := ts.introspect(c, str(r.JSON["access_token"])); in.JSON["aud"] != files.URI || in.JSON["scope"] != "files:read read" {
		t.Errorf("introspection = %s", in.Raw)
	}
	rt := str(r.JSON["refresh_token"])
	for _, tt := range []struct {
		name       string
		form       url.Values
		wantStatus int
		wantAud    string
		wantScope  string
	}{
		{"no resource, two granted", url.Values{}, 400, "", ""},
		{"narrowed to notes", url.Values{"resource": {notes.URI}}, 200, notes.URI, "notes:read read"},
		{"narrowed to files", url.Values{"resource": {files.URI}}, 200, files.URI, "files:read read"},
		{"widened", url.Values{"resource": {"http://127.0.0.1:9/other"}}, 400, "", ""},
		{"scope narrowed too", url.Values{"resource": {notes.URI}, "scope": {"notes:read"}}, 200, notes.URI, "notes:read"},
	} {
		f := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
		for k, v := range tt.form {
			f[k] = v
		}
		r := ts.postToken("/oauth/token", f, c.ID, c.Secret)
		if r.Status != tt.wantStatus {
			t.Errorf("refresh (%s) = %d %s; want %d", tt.name, r.Status, r.Raw, tt.wantStatus)
			continue
		}
		if r.Status != 200 {
			if str(r.JSON["error"]) != errInvalidTarget {
				t.Errorf("refresh (%s) = %s; want invalid_target", tt.name, r.Raw)
			}
			continue
		}
		rt = str(r.JSON["refresh_token"])
		if in := ts.introspect(c, str(r.JSON["access_token"])); in.JSON["aud"] != tt.wantAud || str(in.JSON["scope"]) != tt.wantScope || str(r.JSON["scope"]) != tt.wantScope {
			t.Errorf("refresh (%s): answer %s, introspection %s; want aud %s, scope %q", tt.name, r.Raw, in.Raw, tt.wantAud, tt.wantScope)
		}
	}
	// A grant for one resource: its refresh needs none named.
	r = b.codeWith(c, []string{notes.URI}, "", nil)
	if r2 := ts.refresh(c, str(r.JSON["refresh_token"])); r2.Status != 200 || ts.introspect(c, str(r2.JSON["access_token"])).JSON["aud"] != notes.URI {
		t.Errorf("refresh of a one-resource grant = %d %s", r2.Status, r2.Raw)
	}

	// client_credentials: any registered resource, its scopes with it.
	svc := ts.addServiceClient("jobs")
	cc := func(f url.Values) tokenCall {
		f.Set("grant_type", grantClientCredentials)
		return ts.postToken("/oauth/token", f, svc.ID, svc.Secret)
	}
	if r := cc(url.Values{"resource": {notes.URI}}); r.Status != 200 || str(r.JSON["scope"]) != "jobs notes:read" ||
		ts.introspect(c, str(r.JSON["access_token"])).JSON["aud"] != notes.URI {
		t.Errorf("client_credentials for notes = %d %s", r.Status, r.Raw)
	}
	if r := cc(url.Values{"resource": {notes.URI}, "scope": {"notes:read"}}); r.Status != 200 || str(r.JSON["scope"]) != "notes:read" {
		t.Errorf("client_credentials for notes:read = %d %s", r.Status, r.Raw)
	}
	if r := cc(url.Values{"scope": {"notes:read"}}); r.Status != 400 || str(r.JSON["error"]) != errInvalidScope {
		t.Errorf("client_credentials for notes:read without the resource = %d %s; want invalid_scope", r.Status, r.Raw)
	}
	if r := cc(url.Values{"resource": {"https://nope.example"}}); r.Status != 400 || str(r.JSON["error"]) != errInvalidTarget {
		t.Errorf("client_credentials for an unregistered resource = %d %s", r.Status, r.Raw)
	}
	if r := cc(url.Values{}); r.Status != 200 || str(r.JSON["scope"]) != "jobs" || ts.introspect(c, str(r.JSON["access_token"])).JSON["aud"] != nil {
		t.Errorf("client_credentials without resource = %d %s", r.Status, r.Raw)
	}

	// The device flow: resources on the device authorization, the consent page names them.
	dev := ts.addDeviceClient()
	da := ts.postToken("/oauth/device_authorization", url.Values{"client_id": {dev.ID}, "resource": {notes.URI, files.URI}, "scope": {"notes:read"}}, "", "")
	if da.Status != 200 {
		t.Fatalf("device authorization = %d %s", da.Status, da.Raw)
	}
	if bad := ts.postToken("/oauth/device_authorization", url.Values{"client_id": {dev.ID}, "resource": {"https://nope.example"}}, "", ""); bad.Status != 400 ||
		str(bad.JSON["error"]) != errInvalidTarget {
		t.Errorf("device authorization for an unregistered resource = %d %s", bad.Status, bad.Raw)
	}
	p := b.get("/device")
	p = b.post("/device", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "user_code": {str(da.JSON["user_code"])}})
	if !strings.Contains(p.Body, "Notes MCP") || !strings.Contains(p.Body, "Files MCP") {
		t.Fatalf("device consent page = %d %s", p.StatusCode, p.Body)
	}
	b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}})
	poll := url.Values{"grant_type": {grantDeviceCode}, "device_code": {str(da.JSON["device_code"])}, "client_id": {dev.ID}, "resource": {notes.URI}}
	ts.clock.Advance(6 * time.Second)
	if r := ts.postToken("/oauth/token", poll, "", ""); r.Status != 200 || ts.introspect(c, str(r.JSON["access_token"])).JSON["aud"] != notes.URI {
		t.Errorf("device token for notes = %d %s", r.Status, r.Raw)
	}
}

// addDeviceClient registers a public client for the device flow.
func (ts *testServer) addDeviceClient() testClient {
	ts.t.Helper()
	c, err := clientSpec{Name: "TV", Public: true, GrantTypes: []string{grantDeviceCode, grantRefreshToken}}.build()
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := ts.s.store.createClient(context.Background(), c); err != nil {
		ts.t.Fatal(err)
	}
	return testClient{client: c}
}

// TestIntrospectionPerCaller: a resource's own credential is told only about tokens for it
// (RFC 7662 §4); any other confidential client sees every token with its aud.
func TestIntrospectionPerCaller(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	notes := ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "", false, 0)
	files := ts.addResource("https://files.example.com/mcp", "Files MCP", "", true, 0)
	b := ts.browser("alice", "correct horse battery")
	b.login()
	forNotes := b.codeWith(c, []string{notes.URI}, "", nil)
	forFiles := b.codeWith(c, []string{files.URI}, "", nil)
	forNone := b.codeWith(c, nil, "", nil)
	for _, tt := range []struct {
		name    string
		caller  testClient
		tok     string
		active  bool
		wantAud string
	}{
		{"notes asks about its token", notes.cred(), str(forNotes.JSON["access_token"]), true, notes.URI},
		{"notes asks about a files token", notes.cred(), str(forFiles.JSON["access_token"]), false, ""},
		{"notes asks about a token for no resource", notes.cred(), str(forNone.JSON["access_token"]), false, ""},
		{"notes asks about a refresh token", notes.cred(), str(forNotes.JSON["refresh_token"]), false, ""},
		{"files asks about its JWT", files.cred(), str(forFiles.JSON["access_token"]), true, files.URI},
		{"files asks about a notes token", files.cred(), str(forNotes.JSON["access_token"]), false, ""},
		{"the client asks about the notes token", c, str(forNotes.JSON["access_token"]), true, notes.URI},
		{"the client asks about the files JWT", c, str(forFiles.JSON["access_token"]), true, files.URI},
		{"the client asks about its plain token", c, str(forNone.JSON["access_token"]), true, ""},
	} {
		in := ts.introspect(tt.caller, tt.tok)
		if in.JSON["active"] != tt.active || str(in.JSON["aud"]) != tt.wantAud {
			t.Errorf("%s: introspection = %s; want active %v, aud %q", tt.name, in.Raw, tt.active, tt.wantAud)
		}
		if !tt.active && in.Raw != "{\"active\":false}\n" {
			t.Errorf("%s: an inactive answer says more: %s", tt.name, in.Raw)
		}
	}
	// The credential cannot do anything else.
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {grantClientCredentials}}, notes.ClientID, notes.Secret); r.Status != 400 ||
		str(r.JSON["error"]) != errUnauthorizedClient {
		t.Errorf("client_credentials with a resource credential = %d %s", r.Status, r.Raw)
	}
	// UserInfo is not the resource a token for an MCP server was issued for.
	oidc := b.codeWith(c, []string{notes.URI}, "openid read", nil)
	req, _ := http.NewRequest("GET", ts.url+"/oauth/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+str(oidc.JSON["access_token"]))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("UserInfo with a token for a resource = %v %v", resp, err)
	}
	// A resource deleted: its credential goes with it, and its grants cannot refresh.
	if err := ts.s.store.deleteResource(context.Background(), notes.URI); err != nil {
		t.Fatal(err)
	}
	if r := ts.postToken("/oauth/introspect", url.Values{"token": {str(forNotes.JSON["access_token"])}}, notes.ClientID, notes.Secret); r.Status != 401 {
		t.Errorf("introspection with a deleted resource's credential = %d %s", r.Status, r.Raw)
	}
	if in := ts.introspect(c, str(forNotes.JSON["access_token"])); in.JSON["active"] != false {
		t.Errorf("a token for a deleted resource is active: %s", in.Raw)
	}
	if r := ts.refresh(c, str(forNotes.JSON["refresh_token"])); r.Status != 400 || str(r.JSON["error"]) != errInvalidTarget {
		t.Errorf("refresh for a deleted resource = %d %s; want invalid_target", r.Status, r.Raw)
	}
}

// TestResourceScopesForAnyClient: a self-registered client, with no scopes of its own, may
// ask for a resource's scopes together with the resource.
func TestResourceScopesForAnyClient(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
	ts.addUser("alice", "correct horse battery")
	notes := ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read notes:write", false, 0)
	// Hosts register with the scopes the server's metadata lists: a resource's are accepted
	// and left out of the client's own, since they come with the resource.
	reg := ts.postJSON("POST", "/oauth/register", "", `{"client_name":"Inspector","redirect_uris":["http://127.0.0.1:6274/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"scope":"openid notes:read notes:write"}`)
	if reg.Status != 201 || reg.JSON["scope"] != "openid" {
		t.Fatalf("register = %d %s; want 201 with scope openid", reg.Status, reg.Raw)
	}
	pub := testClient{}
	pub.client, _ = ts.s.store.clientByID(context.Background(), str(reg.JSON["client_id"]))
	b := ts.browser("alice", "correct horse battery")
	b.login()
	var verifier string
	q := codeRequest(pub, &verifier)
	q.Set("resource", notes.URI)
	q.Del("scope") // the resource's scopes by default
	p := b.authorize(q, "allow")
	loc, _ := url.Parse(p.Header.Get("Location"))
	if loc.Query().Get("code") == "" {
		t.Fatalf("authorize = %d %q %s", p.StatusCode, p.Header.Get("Location"), p.Body)
	}
	r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "client_id": {pub.ID},
		"redirect_uri": {pub.RedirectURIs[0]}, "code_verifier": {verifier}, "resource": {notes.URI}}, "", "")
	if r.Status != 200 || str(r.JSON["scope"]) != "notes:read notes:write openid" {
		t.Fatalf("exchange = %d %s", r.Status, r.Raw)
	}
	if m := ts.postJSON("GET", "/.well-known/oauth-authorization-server", "", ""); !strings.Contains(m.Raw, `"notes:write"`) {
		t.Errorf("scopes_supported leaves out the resource's scopes: %s", m.Raw)
	}
	q = codeRequest(pub, nil)
	q.Set("scope", "notes:read")
	if p := b.get("/oauth/authorize?" + q.Encode()); !strings.Contains(p.Header.Get("Location"), "error=invalid_scope") {
		t.Errorf("notes:read without the resource = %q; want invalid_scope", p.Header.Get("Location"))
	}
}

// TestAdminResources: the admin page adds (showing the secret once), lists and deletes.
func TestAdminResources(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.addUser("root", "correct horse battery")
	ts.s.store.db.Exec("UPDATE users SET admin = 1 WHERE id = ?", admin.ID)
	ts.addUser("bob", "correct horse battery")
	bob := ts.browser("bob", "correct horse battery")
	bob.login()
	if p := bob.get("/admin/resources"); p.StatusCode != http.StatusForbidden {
		t.Errorf("resources page for a user = %d", p.StatusCode)
	}
	b := ts.browser("root", "correct horse battery")
	b.login()
	p := b.get("/admin/resources")
	if p.StatusCode != 200 || !strings.Contains(p.Body, "No resource servers yet") {
		t.Fatalf("resources page = %d %s", p.StatusCode, p.Body)
	}
	csrf := hidden(p.Body, "csrf_token")
	add := url.Values{"csrf_token": {csrf}, "uri": {"https://mcp.example.com/mcp"}, "name": {"Notes MCP"}, "scope": {"notes:read"}, "jwt": {"on"}, "token_ttl": {"5m"}}
	if p := b.post("/admin/resources", url.Values{"uri": {"https://x.example"}, "name": {"X"}}); p.StatusCode != http.StatusForbidden {
		t.Errorf("add without csrf_token = %d", p.StatusCode)
	}
	p = b.post("/admin/resources", add)
	secret := between(p.Body, `id="client_secret" class="secret" rows="2" readonly>`, `<`)
	if p.StatusCode != 200 || len(secret) != 43 || !strings.Contains(p.Body, `<code class="id">https://mcp.example.com/mcp</code>`) || !strings.Contains(p.Body, "JWT (RFC 9068), 5m") {
		t.Fatalf("add = %d %s", p.StatusCode, p.Body)
	}
	id := between(p.Body, `id="client_id" class="secret" rows="1" readonly>`, `<`)
	if r := ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, id, secret); r.Status != 200 {
		t.Errorf("the new credential cannot introspect: %d %s", r.Status, r.Raw)
	}
	if p := b.post("/admin/resources", add); p.StatusCode != http.StatusConflict || !strings.Contains(p.Body, "already registered") {
		t.Errorf("adding it again = %d", p.StatusCode)
	}
	bad := url.Values{"csrf_token": {csrf}, "uri": {"http://mcp.example.com"}, "name": {"X"}}
	if p := b.post("/admin/resources", bad); p.StatusCode != http.StatusBadRequest || !strings.Contains(p.Body, "must be https") || !strings.Contains(p.Body, `value="http://mcp.example.com"`) {
		t.Errorf("adding an http resource = %d %s", p.StatusCode, p.Body)
	}
	if p := b.get("/admin/resources"); strings.Contains(p.Body, secret) {
		t.Error("the secret is shown again")
	}
	// Deleting asks first; the confirmation posts to the address it names.
	p = b.get("/admin/resources/delete?uri=" + url.QueryEscape("https://mcp.example.com/mcp"))
	action := html.UnescapeString(between(p.Body, `<form method="post" action="`, `"`))
	if p.StatusCode != 200 || !strings.Contains(p.Body, "Delete Notes MCP?") || !strings.Contains(action, "/admin/resources/delete?uri=") {
		t.Fatalf("delete page = %d %s", p.StatusCode, p.Body)
	}
	if p = b.post(action, url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}}); p.StatusCode == http.StatusSeeOther {
		p = b.get(p.Header.Get("Location"))
	}
	if p.StatusCode != 200 || !strings.Contains(p.Body, "is deleted") || !strings.Contains(p.Body, "No resource servers yet") {
		t.Errorf("delete = %d %s", p.StatusCode, p.Body)
	}
	if p := b.get("/admin/resources/delete?uri=https://nowhere.example"); p.StatusCode != http.StatusNotFound {
		t.Errorf("delete page of an unknown resource = %d", p.StatusCode)
	}
}
