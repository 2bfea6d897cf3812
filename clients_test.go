package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// adminUser creates an administrator.
func (ts *testServer) addAdmin(name, password string) user {
	ts.t.Helper()
	u := ts.addUser(name, password)
	if _, err := ts.s.store.db.Exec("UPDATE users SET admin = 1 WHERE id = ?", u.ID); err != nil {
		ts.t.Fatal(err)
	}
	u.Admin = true
	return u
}

// inputValue reads the value of an <input id="id" ... value="...">.
func inputValue(body, id string) string {
	m := regexp.MustCompile(`id="` + id + `" type="text" value="([^"]*)"|<textarea id="` + id + `"[^>]*>([^<]*)</textarea>`).FindStringSubmatch(body)
	if m != nil && m[1] == "" {
		return m[2]
	}
	if m == nil {
		return ""
	}
	return m[1]
}

func TestClientPages(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.addUser("bob", "bob's password!")
	ts.addAdmin("root", "the admin password")
	cli := ts.addClient(false, "read write", "https://cli.example/cb") // registered by the operator

	if p := ts.browser("", "").get("/oauth/client/register"); p.StatusCode != http.StatusFound || !strings.HasPrefix(p.Header.Get("Location"), "/login?") {
		t.Fatalf("register logged out = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	alice := ts.browser("alice", "correct horse battery")
	alice.login()
	form := alice.get("/oauth/client/register")
	csrf := hidden(form.Body, "csrf_token")
	reg := url.Values{"name": {"Alice's Gallery"}, "description": {"Photos"}, "type": {"confidential"},
		"redirect_uris": {"https://gallery.example/cb\nhttp://127.0.0.1/cb"}, "scope": {"read"}, "grant_code": {"on"},
		"logo_uri": {"https://gallery.example/logo.png"}, "client_uri": {"https://gallery.example/"}}
	if p := alice.post("/oauth/client/register", reg); p.StatusCode != http.StatusForbidden {
		t.Fatalf("register without csrf_token = %d; want 403", p.StatusCode)
	}
	for _, tt := range []struct {
		edit func(url.Values)
		want string
	}{
		{func(v url.Values) { v.Set("name", "") }, "name is required"},
		{func(v url.Values) { v.Set("redirect_uris", "http://gallery.example/cb") }, "https"},
		{func(v url.Values) { v.Set("logo_uri", "http://gallery.example/logo.png") }, "must be an https URL"},
		{func(v url.Values) { v.Set("scope", "admin") }, "not offered"},
	} {
		bad := url.Values{"csrf_token": {csrf}}
		for k, v := range reg {
			bad[k] = v
		}
		tt.edit(bad)
		if p := alice.post("/oauth/client/register", bad); p.StatusCode != http.StatusBadRequest || !strings.Contains(p.Body, tt.want) {
			t.Errorf("register %v = %d; want 400 mentioning %q", bad, p.StatusCode, tt.want)
		}
	}
	reg.Set("csrf_token", csrf)
	p := alice.post("/oauth/client/register", reg)
	id, secret := inputValue(p.Body, "client_id"), inputValue(p.Body, "client_secret")
	if p.StatusCode != http.StatusCreated || id == "" || len(secret) != 43 || !strings.Contains(p.Body, `src="/static/copy.js"`) {
		t.Fatalf("register = %d; id %q secret %q", p.StatusCode, id, secret)
	}
	own := testClient{Secret: secret}
	own.client, _ = ts.s.store.clientByID(context.Background(), id)
	if !ts.active(own, "nothing") && ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, id, secret).Status != 200 {
		t.Fatal("the secret shown once does not authenticate the client")
	}
	if own.LogoURI != "https://gallery.example/logo.png" || own.OwnerID == 0 || own.Dynamic {
		t.Errorf("stored client = %+v", own.client)
	}
	// The consent page shows the logo and homepage.
	consent := alice.authorize(codeRequest(own, nil), "")
	if !strings.Contains(consent.Body, `src="https://gallery.example/logo.png"`) || !strings.Contains(consent.Body, `href="https://gallery.example/"`) {
		t.Error("the consent page does not show the logo and homepage")
	}
	if strings.Contains(consent.Body, "registered by the app itself") {
		t.Error("a client registered by a user is marked as self-registered")
	}

	// The list: alice sees hers only, the admin sees every client.
	if p := alice.get("/oauth/client/list"); !strings.Contains(p.Body, id) || strings.Contains(p.Body, cli.ID) {
		t.Errorf("alice's list shows the wrong clients")
	}
	root := ts.browser("root", "the admin password")
	root.login()
	if p := root.get("/oauth/client/list"); !strings.Contains(p.Body, id) || !strings.Contains(p.Body, cli.ID) || !strings.Contains(p.Body, "alice") {
		t.Errorf("the admin's list lacks clients or owners")
	}
	// Bob cannot see, edit, rotate or delete alice's client.
	bob := ts.browser("bob", "bob's password!")
	bob.login()
	bobCSRF := hidden(bob.get("/oauth/client/register").Body, "csrf_token")
	for _, path := range []string{"/oauth/client/" + id + "/edit", "/oauth/client/" + id + "/delete"} {
		if p := bob.get(path); p.StatusCode != http.StatusNotFound {
			t.Errorf("bob GET %s = %d; want 404", path, p.StatusCode)
		}
	}
	for _, path := range []string{"/oauth/client/" + id + "/rotate", "/oauth/client/" + id + "/delete"} {
		if p := bob.post(path, url.Values{"csrf_token": {bobCSRF}}); p.StatusCode != http.StatusNotFound {
			t.Errorf("bob POST %s = %d; want 404", path, p.StatusCode)
		}
	}

	// Edit.
	edit := alice.get("/oauth/client/" + id + "/edit")
	if !strings.Contains(edit.Body, "Alice&#39;s Gallery") {
		t.Fatalf("edit page: %q", edit.Body)
	}
	ed := url.Values{"csrf_token": {hidden(edit.Body, "csrf_token")}, "name": {"Gallery 2"}, "redirect_uris": {"https://gallery.example/cb"}, "scope": {"read write"}, "grant_code": {"on"}}
	if p := alice.post("/oauth/client/"+id+"/edit", ed); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("edit = %d %s", p.StatusCode, p.Body)
	}
	if c, _ := ts.s.store.clientByID(context.Background(), id); c.Name != "Gallery 2" || len(c.RedirectURIs) != 1 || c.Public {
		t.Errorf("after edit: %+v", c)
	}
	// Rotate: the new secret works, the old one no longer.
	list := alice.get("/oauth/client/" + id + "/rotate") // the confirmation page says what breaks
	if !strings.Contains(list.Body, "stops working at once") || !strings.Contains(list.Body, `class="danger"`) {
		t.Errorf("rotate confirmation page: %s", list.Body)
	}
	if p := alice.post("/oauth/client/"+id+"/rotate", url.Values{}); p.StatusCode != http.StatusForbidden {
		t.Errorf("rotate without csrf_token = %d", p.StatusCode)
	}
	rot := alice.post("/oauth/client/"+id+"/rotate", url.Values{"csrf_token": {hidden(list.Body, "csrf_token")}})
	newSecret := inputValue(rot.Body, "client_secret")
	if rot.StatusCode != 200 || len(newSecret) != 43 || newSecret == secret {
		t.Fatalf("rotate = %d %q", rot.StatusCode, newSecret)
	}
	if r := ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, id, secret); r.Status != 401 {
		t.Errorf("old secret after rotation = %d", r.Status)
	}
	if r := ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, id, newSecret); r.Status != 200 {
		t.Errorf("new secret after rotation = %d", r.Status)
	}
	// Delete, after a confirmation page.
	del := alice.get("/oauth/client/" + id + "/delete")
	if !strings.Contains(del.Body, "Delete Gallery 2?") {
		t.Fatalf("delete confirmation: %q", del.Body)
	}
	if p := alice.post("/oauth/client/"+id+"/delete", url.Values{"csrf_token": {hidden(del.Body, "csrf_token")}}); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete = %d", p.StatusCode)
	}
	if _, err := ts.s.store.clientByID(context.Background(), id); err != errNotFound {
		t.Fatalf("client still there after delete: %v", err)
	}
	// A public client gets no secret.
	reg.Set("type", "public")
	reg.Set("csrf_token", hidden(alice.get("/oauth/client/register").Body, "csrf_token"))
	if p := alice.post("/oauth/client/register", reg); p.StatusCode != http.StatusCreated || inputValue(p.Body, "client_secret") != "" {
		t.Errorf("public registration = %d", p.StatusCode)
	}
}

func TestConnections(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read write", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)
	ts.clock.Advance(time.Hour)
	ref := ts.refresh(c, str(tok.JSON["refresh_token"]))

	p := b.get("/oauth/client/connections")
	if !strings.Contains(p.Body, "Test App") || !strings.Contains(p.Body, "<code>read</code>") ||
		!strings.Contains(p.Body, date(ts.clock.Now().Add(-time.Hour).Unix())) || !strings.Contains(p.Body, date(ts.clock.Now().Unix())) {
		t.Fatalf("connections page lacks the app, its scopes, first authorization or last use: %q", p.Body)
	}
	if r := b.post("/oauth/client/connections/"+c.ID+"/revoke", url.Values{}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("revoke without csrf_token = %d", r.StatusCode)
	}
	if !ts.active(c, str(ref.JSON["access_token"])) {
		t.Fatal("a refused revoke revoked")
	}
	cp := b.get("/oauth/client/connections/" + c.ID + "/revoke") // the confirmation page
	if !strings.Contains(cp.Body, "signed out at once") || !strings.Contains(cp.Body, `class="danger"`) {
		t.Fatalf("revoke confirmation page = %d %s", cp.StatusCode, cp.Body)
	}
	if r := b.post("/oauth/client/connections/"+c.ID+"/revoke", url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke = %d", r.StatusCode)
	}
	if after := b.get("/oauth/client/connections"); !strings.Contains(after.Body, "access is revoked") {
		t.Error("no notice after the revocation")
	} else if again := b.get("/oauth/client/connections"); strings.Contains(again.Body, "access is revoked") {
		t.Error("the notice shows twice")
	}
	for _, tk := range []string{str(tok.JSON["access_token"]), str(ref.JSON["access_token"]), str(ref.JSON["refresh_token"])} {
		if ts.active(c, tk) {
			t.Error("a token of a revoked connection is still active")
		}
	}
	if p := b.authorize(codeRequest(c, nil), ""); !strings.Contains(p.Body, `name="decision"`) {
		t.Error("after revoking, the app got a code without asking again")
	}
	if p := b.get("/oauth/client/connections"); strings.Contains(p.Body, "Test App") {
		t.Error("a revoked connection is still listed")
	}
}

func TestAdminUsers(t *testing.T) {
	ts := newTestServer(t)
	ts.addAdmin("root", "the admin password")
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	alice := ts.browser("alice", "correct horse battery")
	alice.login()
	if p := alice.get("/admin/users"); p.StatusCode != http.StatusForbidden {
		t.Fatalf("a non-admin on /admin/users = %d; want 403", p.StatusCode)
	}
	aliceCSRF := hidden(alice.get("/").Body, "csrf_token")
	if p := alice.post("/admin/users/invite", url.Values{"csrf_token": {aliceCSRF}}); p.StatusCode != http.StatusForbidden {
		t.Fatalf("a non-admin POST = %d; want 403", p.StatusCode)
	}
	root := ts.browser("root", "the admin password")
	root.login()
	page := root.get("/admin/users")
	csrf := hidden(page.Body, "csrf_token")
	if page.StatusCode != 200 || !strings.Contains(page.Body, "alice") {
		t.Fatalf("admin page = %d", page.StatusCode)
	}
	if p := root.post("/admin/users", url.Values{"username": {"carol"}, "password": {"carol's password"}}); p.StatusCode != http.StatusForbidden {
		t.Fatalf("admin POST without csrf_token = %d", p.StatusCode)
	}
	if p := root.post("/admin/users", url.Values{"csrf_token": {csrf}, "username": {"carol"}, "password": {"carol's password"}}); p.StatusCode != http.StatusSeeOther ||
		p.Header.Get("Location") != "/admin/users" || !strings.Contains(root.get("/admin/users").Body, "User carol added.") {
		t.Fatalf("add user = %d", p.StatusCode)
	}
	if p := root.post("/admin/users", url.Values{"csrf_token": {csrf}, "username": {"carol"}, "password": {"carol's password"}}); p.StatusCode != http.StatusConflict {
		t.Errorf("adding carol twice = %d", p.StatusCode)
	}
	if p := root.post("/admin/users", url.Values{"csrf_token": {csrf}, "username": {"dan"}, "password": {"short"}}); p.StatusCode != http.StatusBadRequest {
		t.Errorf("adding a short password = %d", p.StatusCode)
	}

	// Invitation: works once, makes an admin when asked.
	inv := root.post("/admin/users/invite", url.Values{"csrf_token": {csrf}, "admin": {"on"}})
	link := inputValue(inv.Body, "link")
	if !strings.HasPrefix(link, ts.url+"/invite?token=") {
		t.Fatalf("invitation link %q", link)
	}
	guest := ts.browser("", "")
	ip := guest.get(link)
	form := url.Values{"csrf_token": {hidden(ip.Body, "csrf_token")}, "token": {hidden(ip.Body, "token")}, "username": {"erin"},
		"password": {"erin's password"}, "password2": {"erin's password"}}
	if p := guest.post("/invite", form); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("accept invitation = %d %s", p.StatusCode, p.Body)
	}
	if u, _ := ts.s.store.userByName(context.Background(), "erin"); !u.Admin {
		t.Error("an admin invitation did not make an admin")
	}
	if p := ts.browser("", "").post("/invite", form); p.StatusCode != http.StatusForbidden {
		t.Errorf("second use of an invitation = %d", p.StatusCode)
	}

	// Disable: sessions and tokens go, login fails; enable lets alice back in.
	code, ver := alice.getCode(c)
	tok := ts.exchange(c, code, ver)
	if p := root.post("/admin/users/root/disable", url.Values{"csrf_token": {csrf}}); p.StatusCode != http.StatusBadRequest {
		t.Errorf("disabling yourself = %d", p.StatusCode)
	}
	if cp := root.get("/admin/users/alice/disable"); !strings.Contains(cp.Body, "signed out everywhere") || !strings.Contains(cp.Body, `class="danger"`) {
		t.Fatalf("disable confirmation page = %d", cp.StatusCode)
	}
	if p := root.post("/admin/users/alice/disable", url.Values{"csrf_token": {csrf}}); p.StatusCode != http.StatusSeeOther || !strings.Contains(root.get("/admin/users").Body, "User alice disabled.") {
		t.Fatalf("disable = %d", p.StatusCode)
	}
	if ts.active(c, str(tok.JSON["access_token"])) || ts.active(c, str(tok.JSON["refresh_token"])) {
		t.Error("a disabled user's tokens are still active")
	}
	if strings.Contains(alice.get("/").Body, "Signed in") {
		t.Error("a disabled user is still signed in")
	}
	if p := ts.browser("alice", "correct horse battery").login(); p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "This account is disabled") {
		t.Errorf("a disabled user with the right password = %d; want 403 saying the account is disabled", p.StatusCode)
	}
	if p := ts.browser("alice", "a wrong password").login(); p.StatusCode != http.StatusUnauthorized || strings.Contains(p.Body, "disabled") {
		t.Errorf("a disabled user with a wrong password = %d; want the usual 401", p.StatusCode)
	}
	root.post("/admin/users/alice/enable", url.Values{"csrf_token": {csrf}})
	if p := ts.browser("alice", "correct horse battery").login(); p.StatusCode != http.StatusSeeOther {
		t.Errorf("an enabled user cannot log in: %d", p.StatusCode)
	}

	// Password reset link: once, new password works, old not, sessions end.
	alice.login()
	rl := inputValue(root.post("/admin/users/alice/reset", url.Values{"csrf_token": {csrf}}).Body, "link")
	rp := guest.get(rl)
	rform := url.Values{"csrf_token": {hidden(rp.Body, "csrf_token")}, "token": {hidden(rp.Body, "token")}, "password": {"a brand new password"}, "password2": {"a brand new password"}}
	if p := guest.post("/reset", rform); p.StatusCode != 200 || !strings.Contains(p.Body, "Password changed") {
		t.Fatalf("reset = %d %s", p.StatusCode, p.Body)
	}
	if strings.Contains(alice.get("/").Body, "Signed in") {
		t.Error("alice's session survived the password reset")
	}
	if p := ts.browser("alice", "a brand new password").login(); p.StatusCode != http.StatusSeeOther {
		t.Error("the new password does not work")
	}
	if p := guest.post("/reset", rform); p.StatusCode != http.StatusForbidden {
		t.Errorf("second use of a reset link = %d", p.StatusCode)
	}
	if p := root.post("/admin/users/nobody/disable", url.Values{"csrf_token": {csrf}}); p.StatusCode != http.StatusNotFound {
		t.Errorf("disable an unknown user = %d", p.StatusCode)
	}
}

// postJSON sends a JSON body with an optional bearer token.
func (ts *testServer) postJSON(method, path, token string, body any) tokenCall {
	ts.t.Helper()
	var raw string
	switch b := body.(type) {
	case string:
		raw = b
	default:
		j, _ := json.Marshal(b)
		raw = string(j)
	}
	req, _ := http.NewRequest(method, ts.url+path, strings.NewReader(raw))
	if raw != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	return decodeCall(resp)
}

// registrationToken makes an initial access token through the CLI.
func (ts *testServer) registrationToken(uses int) string {
	ts.t.Helper()
	code, out, errs := cli(ts.t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "", "registration-token", "create", "-uses", fmt.Sprint(uses))
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
		ts.t.Fatalf("registration-token create = %d %q %q", code, out, errs)
	}
	return str(v["registration_token"])
}

func TestDynamicRegistration(t *testing.T) {
	good := map[string]any{"client_name": "MCP Inspector", "redirect_uris": []string{"http://127.0.0.1:6274/oauth/callback"},
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"}, "token_endpoint_auth_method": "none",
		"scope": "openid profile"}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for a, b := range good {
			m[a] = b
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}

	t.Run("off", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.Registration = registrationOff })
		if r := ts.postJSON("POST", "/oauth/register", "", good); r.Status != 403 {
			t.Fatalf("register when off = %d %s", r.Status, r.Raw)
		}
		meta := decodeCall(ts.browser("", "").get("/.well-known/oauth-authorization-server").Response, ts.browser("", "").get("/.well-known/oauth-authorization-server").Body)
		if meta.JSON["registration_endpoint"] != nil {
			t.Error("registration_endpoint advertised while off")
		}
	})

	t.Run("token", func(t *testing.T) {
		ts := newTestServer(t)                        // the default mode
		ts.clock.t = time.Now().Truncate(time.Second) // the CLI stamps the token with real time
		ts.addClient(false, "read", "https://app.example/cb")
		if r := ts.postJSON("POST", "/oauth/register", "", good); r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Fatalf("register without a token = %d %s", r.Status, r.Raw)
		}
		if r := ts.postJSON("POST", "/oauth/register", "wrong", good); r.Status != 401 {
			t.Fatalf("register with a wrong token = %d", r.Status)
		}
		tok := ts.registrationToken(1)
		conf := with("token_endpoint_auth_method", "client_secret_basic")
		r := ts.postJSON("POST", "/oauth/register", tok, conf)
		if r.Status != 201 || str(r.JSON["client_id"]) == "" || len(str(r.JSON["client_secret"])) != 43 || r.JSON["client_id_issued_at"] == nil ||
			str(r.JSON["registration_access_token"]) == "" || r.JSON["registration_client_uri"] != ts.url+"/oauth/register/"+str(r.JSON["client_id"]) ||
			r.JSON["client_secret_expires_at"] != float64(0) || r.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("register = %d %s", r.Status, r.Raw)
		}
		if r := ts.postJSON("POST", "/oauth/register", tok, conf); r.Status != 401 {
			t.Errorf("a used-up initial access token registered again: %d", r.Status)
		}
		// The confidential client authenticates with the secret it got.
		if r2 := ts.postToken("/oauth/introspect", url.Values{"token": {"x"}}, str(r.JSON["client_id"]), str(r.JSON["client_secret"])); r2.Status != 200 {
			t.Errorf("the registered secret does not work: %d", r2.Status)
		}
	})

	t.Run("open", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
		ts.addUser("alice", "correct horse battery")
		ts.addClient(false, "read", "https://app.example/cb")
		r := ts.postJSON("POST", "/oauth/register", "", good)
		if r.Status != 201 || r.JSON["client_secret"] != nil || r.JSON["token_endpoint_auth_method"] != "none" {
			t.Fatalf("open public registration = %d %s", r.Status, r.Raw)
		}
		// A confidential method (or none named: RFC 7591's default is client_secret_basic) is
		// registered public, and the answer says so (RFC 7591 §3.2.1).
		if r := ts.postJSON("POST", "/oauth/register", "", with("token_endpoint_auth_method", nil)); r.Status != 201 ||
			str(r.JSON["token_endpoint_auth_method"]) != "none" || r.JSON["client_secret"] != nil {
			t.Errorf("open confidential registration without a token = %d %s; want a public client", r.Status, r.Raw)
		}
		// The self-registered client runs a code flow; the consent page says where it came from.
		pub := testClient{}
		pub.client, _ = ts.s.store.clientByID(context.Background(), str(r.JSON["client_id"]))
		b := ts.browser("alice", "correct horse battery")
		q := codeRequest(pub, nil)
		q.Set("scope", "openid profile")
		if p := b.authorize(q, ""); !strings.Contains(p.Body, "registered by the app itself, not by your administrator") {
			t.Error("the consent page does not mark a self-registered client")
		}
		code, ver := b.getCode(pub)
		if tok := ts.exchange(pub, code, ver); tok.Status != 200 || str(tok.JSON["id_token"]) == "" {
			t.Errorf("code flow of a registered client = %d %s", tok.Status, tok.Raw)
		}
		// Rate limit per source address.
		limited := 0
		for range 25 {
			if ts.postJSON("POST", "/oauth/register", "", good).Status == http.StatusTooManyRequests {
				limited++
			}
		}
		if limited == 0 {
			t.Error("open registration is not rate-limited")
		}
	})

	t.Run("metadata errors", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
		ts.addClient(false, "read", "https://app.example/cb")
		for _, tt := range []struct {
			name string
			body any
			want string
		}{
			{"http redirect", with("redirect_uris", []string{"http://app.example/cb"}), errInvalidRedirectURI},
			{"fragment", with("redirect_uris", []string{"https://app.example/cb#x"}), errInvalidRedirectURI},
			{"no redirect", with("redirect_uris", nil), errInvalidRedirectURI},
			{"bad auth method", with("token_endpoint_auth_method", "private_key_jwt"), errInvalidClientMetadata},
			{"implicit", with("response_types", []string{"token"}), errInvalidClientMetadata},
			{"grant without response type", with("response_types", []string{}), errInvalidClientMetadata},
			{"response type without grant", with("grant_types", []string{"urn:ietf:params:oauth:grant-type:device_code"}), errInvalidClientMetadata},
			{"unknown grant", with("grant_types", []string{"password"}), errInvalidClientMetadata},
			{"public client_credentials", with("grant_types", []string{"client_credentials"}), errInvalidClientMetadata},
			{"unknown scope", with("scope", "admin"), errInvalidClientMetadata},
			{"http logo", with("logo_uri", "http://app.example/logo.png"), errInvalidClientMetadata},
			{"wrong type", with("redirect_uris", "http://127.0.0.1/cb"), errInvalidClientMetadata},
			{"bad alg", with("id_token_signed_response_alg", "none"), errInvalidClientMetadata},
			{"not JSON", "client_name=x", errInvalidClientMetadata},
		} {
			r := ts.postJSON("POST", "/oauth/register", "", tt.body)
			if r.Status != 400 || str(r.JSON["error"]) != tt.want || str(r.JSON["error_description"]) == "" {
				t.Errorf("register(%s) = %d %s; want 400 %s", tt.name, r.Status, r.Raw, tt.want)
			}
		}
		req, _ := http.NewRequest("POST", ts.url+"/oauth/register", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "text/plain")
		resp, _ := http.DefaultClient.Do(req)
		if r := decodeCall(resp); r.Status != 400 || str(r.JSON["error"]) != errInvalidRequest {
			t.Errorf("register with text/plain = %d %s", r.Status, r.Raw)
		}
		resp.Body.Close()
	})

	t.Run("RFC 7592", func(t *testing.T) {
		ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
		ts.addClient(false, "read", "https://app.example/cb")
		r := ts.postJSON("POST", "/oauth/register", "", good)
		id, rat := str(r.JSON["client_id"]), str(r.JSON["registration_access_token"])
		path := "/oauth/register/" + id
		get := func(tok string) tokenCall {
			req, _ := http.NewRequest("GET", ts.url+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			return decodeCall(resp)
		}
		if g := get(rat); g.Status != 200 || g.JSON["client_name"] != "MCP Inspector" || g.JSON["client_id"] != id {
			t.Fatalf("GET = %d %s", g.Status, g.Raw)
		}
		if g := get("wrong"); g.Status != 401 || !strings.Contains(g.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("GET with a wrong token = %d", g.Status)
		}
		upd := with("client_name", "Renamed")
		upd["client_id"] = id
		if u := ts.postJSON("PUT", path, rat, upd); u.Status != 200 || u.JSON["client_name"] != "Renamed" {
			t.Fatalf("PUT = %d %s", u.Status, u.Raw)
		}
		if c, _ := ts.s.store.clientByID(context.Background(), id); c.Name != "Renamed" || !c.Dynamic {
			t.Errorf("after PUT: %+v", c)
		}
		bad := with("client_name", "X")
		bad["client_id"] = "other"
		if u := ts.postJSON("PUT", path, rat, bad); u.Status != 400 {
			t.Errorf("PUT with another client_id = %d", u.Status)
		}
		conf := with("token_endpoint_auth_method", "client_secret_basic")
		conf["client_id"] = id
		if u := ts.postJSON("PUT", path, rat, conf); u.Status != 200 || str(u.JSON["token_endpoint_auth_method"]) != "none" || u.JSON["client_secret"] != nil {
			t.Errorf("PUT asking a public client to be confidential = %d %s; want it kept public, and said so", u.Status, u.Raw)
		}
		if u := ts.postJSON("PUT", path, "wrong", upd); u.Status != 401 {
			t.Errorf("PUT with a wrong token = %d", u.Status)
		}
		if d := ts.postJSON("DELETE", path, "wrong", ""); d.Status != 401 {
			t.Errorf("DELETE with a wrong token = %d", d.Status)
		}
		if d := ts.postJSON("DELETE", path, rat, ""); d.Status != 204 {
			t.Fatalf("DELETE = %d", d.Status)
		}
		if g := get(rat); g.Status != 401 {
			t.Errorf("GET after DELETE = %d", g.Status)
		}
	})
}

func TestClientCredentials(t *testing.T) {
	ts := newTestServer(t)
	svc, err := clientSpec{Name: "Backup job", Scope: "read write", GrantTypes: []string{"client_credentials"}}.build()
	if err != nil {
		t.Fatal(err)
	}
	svcC := testClient{client: svc, Secret: newSecret()}
	svcC.SecretHash = hashSecret(svcC.Secret)
	if err := ts.s.store.createClient(context.Background(), svcC.client); err != nil {
		t.Fatal(err)
	}
	web := ts.addClient(false, "read", "https://app.example/cb")
	cc := func(c testClient, scope string) tokenCall {
		f := url.Values{"grant_type": {"client_credentials"}}
		if scope != "" {
			f.Set("scope", scope)
		}
		return ts.postToken("/oauth/token", f, c.ID, c.Secret)
	}
	r := cc(svcC, "")
	if r.Status != 200 || str(r.JSON["scope"]) != "read write" || r.JSON["refresh_token"] != nil || r.JSON["id_token"] != nil {
		t.Fatalf("client_credentials = %d %s", r.Status, r.Raw)
	}
	in := ts.postToken("/oauth/introspect", url.Values{"token": {str(r.JSON["access_token"])}}, web.ID, web.Secret)
	if in.JSON["active"] != true || in.JSON["sub"] != svc.ID || in.JSON["client_id"] != svc.ID || in.JSON["username"] != nil {
		t.Fatalf("introspection of a client token = %s", in.Raw)
	}
	if r := cc(svcC, "read"); r.Status != 200 || str(r.JSON["scope"]) != "read" {
		t.Errorf("narrower scope = %d %s", r.Status, r.Raw)
	}
	for _, scope := range []string{"admin", "read openid"} {
		if r := cc(svcC, scope); r.Status != 400 || str(r.JSON["error"]) != errInvalidScope {
			t.Errorf("client_credentials scope %q = %d %s; want invalid_scope", scope, r.Status, r.Raw)
		}
	}
	if r := cc(web, ""); r.Status != 400 || str(r.JSON["error"]) != errUnauthorizedClient {
		t.Errorf("a client not allowed client_credentials = %d %s", r.Status, r.Raw)
	}
	// A client_credentials-only client cannot run the code flow.
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {"x"}}, svcC.ID, svcC.Secret); str(r.JSON["error"]) != errUnauthorizedClient {
		t.Errorf("code grant for a client_credentials client = %s", r.Raw)
	}
}

func TestDeviceFlow(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	dev, err := clientSpec{Name: "oauthd CLI", Public: true, Scope: "read", GrantTypes: []string{"device_code", "refresh_token"}}.build()
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.s.store.createClient(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
	web := ts.addClient(false, "read", "https://app.example/cb")
	start := func() map[string]any {
		r := ts.postToken("/oauth/device_authorization", url.Values{"client_id": {dev.ID}, "scope": {"read openid"}}, "", "")
		if r.Status != 200 {
			t.Fatalf("device_authorization = %d %s", r.Status, r.Raw)
		}
		return r.JSON
	}
	poll := func(dc string) tokenCall {
		return ts.postToken("/oauth/token", url.Values{"grant_type": {grantDeviceCode}, "device_code": {dc}, "client_id": {dev.ID}}, "", "")
	}
	d := start()
	uc := str(d["user_code"])
	if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(uc) || d["verification_uri"] != ts.url+"/device" ||
		d["verification_uri_complete"] != ts.url+"/device?user_code="+uc || d["expires_in"] != float64(600) || d["interval"] != float64(5) || len(str(d["device_code"])) != 43 {
		t.Fatalf("device_authorization response = %v", d)
	}
	dc := str(d["device_code"])
	if r := poll(dc); str(r.JSON["error"]) != "authorization_pending" {
		t.Fatalf("first poll = %s", r.Raw)
	}
	if r := poll(dc); str(r.JSON["error"]) != "slow_down" {
		t.Fatalf("immediate second poll = %s; want slow_down", r.Raw)
	}
	ts.clock.Advance(6 * time.Second) // the interval is now 10 s
	if r := poll(dc); str(r.JSON["error"]) != "slow_down" {
		t.Fatalf("poll after 6 s with a 10 s interval = %s; want slow_down", r.Raw)
	}
	ts.clock.Advance(16 * time.Second) // and now 15 s (RFC 8628 §3.5: +5 s at every slow_down)
	if r := poll(dc); str(r.JSON["error"]) != "authorization_pending" {
		t.Fatalf("poll after the longer interval = %s", r.Raw)
	}

	// The user signs in on /device, types the code (any case, no dash) and approves.
	b := ts.browser("alice", "correct horse battery")
	p := b.get("/device?user_code=" + uc)
	if loc := p.Header.Get("Location"); !strings.HasPrefix(loc, "/login?") {
		t.Fatalf("/device logged out = %d %q", p.StatusCode, loc)
	}
	b.login()
	p = b.get("/device?user_code=" + uc)
	if !strings.Contains(p.Body, `value="`+uc+`"`) {
		t.Fatalf("/device does not prefill the code: %q", p.Body)
	}
	csrf := hidden(p.Body, "csrf_token")
	if r := b.post("/device", url.Values{"user_code": {uc}}); r.StatusCode != http.StatusForbidden {
		t.Fatalf("/device without csrf_token = %d", r.StatusCode)
	}
	consent := b.post("/device", url.Values{"csrf_token": {csrf}, "user_code": {strings.ToLower(strings.ReplaceAll(uc, "-", ""))}})
	if !strings.Contains(consent.Body, `name="decision"`) || !strings.Contains(consent.Body, "oauthd CLI") {
		t.Fatalf("/device did not show the consent page: %d %q", consent.StatusCode, consent.Body)
	}
	done := b.post("/oauth/consent", url.Values{"csrf_token": {hidden(consent.Body, "csrf_token")}, "request": {hidden(consent.Body, "request")}, "decision": {"allow"}})
	if done.StatusCode != 200 || !strings.Contains(done.Body, "return to your device") {
		t.Fatalf("device approval = %d %q", done.StatusCode, done.Body)
	}
	// Single use: the code cannot be entered again.
	if r := b.post("/device", url.Values{"csrf_token": {csrf}, "user_code": {uc}}); r.StatusCode != http.StatusBadRequest {
		t.Errorf("a used user code = %d", r.StatusCode)
	}
	if r := ts.postToken("/oauth/token", url.Values{"grant_type": {grantDeviceCode}, "device_code": {dc}}, web.ID, web.Secret); str(r.JSON["error"]) != errUnauthorizedClient {
		t.Errorf("device_code grant by another client = %s", r.Raw)
	}
	ts.clock.Advance(16 * time.Second)
	tok := poll(dc)
	if tok.Status != 200 || str(tok.JSON["access_token"]) == "" || str(tok.JSON["id_token"]) == "" || str(tok.JSON["scope"]) != "openid read" {
		t.Fatalf("poll after approval = %d %s", tok.Status, tok.Raw)
	}
	in := ts.postToken("/oauth/introspect", url.Values{"token": {str(tok.JSON["access_token"])}}, web.ID, web.Secret)
	if in.JSON["username"] != "alice" {
		t.Errorf("device token introspection = %s", in.Raw)
	}
	ts.clock.Advance(11 * time.Second)
	if r := poll(dc); str(r.JSON["error"]) != errInvalidGrant {
		t.Errorf("poll after the tokens were issued = %s; want invalid_grant", r.Raw)
	}
	if p := b.get("/oauth/client/connections"); !strings.Contains(p.Body, "oauthd CLI") {
		t.Error("the approved device app is not among the connections")
	}

	// Deny.
	d = start()
	consent = b.post("/device", url.Values{"csrf_token": {csrf}, "user_code": {str(d["user_code"])}})
	b.post("/oauth/consent", url.Values{"csrf_token": {hidden(consent.Body, "csrf_token")}, "request": {hidden(consent.Body, "request")}, "decision": {"deny"}})
	if r := poll(str(d["device_code"])); str(r.JSON["error"]) != errAccessDenied {
		t.Errorf("poll after deny = %s", r.Raw)
	}
	// Expiry.
	d = start()
	ts.clock.Advance(11 * time.Minute)
	if r := poll(str(d["device_code"])); str(r.JSON["error"]) != "expired_token" {
		t.Errorf("poll after expiry = %s", r.Raw)
	}
	if r := b.post("/device", url.Values{"csrf_token": {csrf}, "user_code": {str(d["user_code"])}}); r.StatusCode != http.StatusBadRequest {
		t.Errorf("an expired user code = %d", r.StatusCode)
	}
	// Guessing is limited per user.
	statuses := []int{}
	for range 6 {
		statuses = append(statuses, b.post("/device", url.Values{"csrf_token": {csrf}, "user_code": {"BCDF-GHJK"}}).StatusCode)
	}
	if statuses[len(statuses)-1] != http.StatusTooManyRequests {
		t.Errorf("repeated wrong codes = %v; want 429 at the end", statuses)
	}
	d = start()
	if r := b.post("/device", url.Values{"csrf_token": {csrf}, "user_code": {str(d["user_code"])}}); r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a blocked user could still enter a (right) code: %d", r.StatusCode)
	}
	// A client not registered for the device grant.
	if r := ts.postToken("/oauth/device_authorization", url.Values{}, web.ID, web.Secret); r.Status != 400 || str(r.JSON["error"]) != errUnauthorizedClient {
		t.Errorf("device_authorization by a code-flow client = %d %s", r.Status, r.Raw)
	}
	if r := ts.postToken("/oauth/device_authorization", url.Values{"client_id": {dev.ID}, "scope": {"admin"}}, "", ""); str(r.JSON["error"]) != errInvalidScope {
		t.Errorf("device_authorization with an unknown scope = %s", r.Raw)
	}
}

func TestIssue4Metadata(t *testing.T) {
	ts := newTestServer(t)
	p := ts.browser("", "").get("/.well-known/openid-configuration")
	m := decodeCall(p.Response, p.Body)
	if m.JSON["registration_endpoint"] != ts.url+"/oauth/register" || m.JSON["device_authorization_endpoint"] != ts.url+"/oauth/device_authorization" {
		t.Errorf("metadata endpoints: %s", m.Raw)
	}
	env := map[string]string{"OAUTHD_DB": filepath.Join(t.TempDir(), "g.db")}
	code, out, errs := cli(t, env, "", "client", "add", "-name", "Job", "-grant", "client_credentials", "-scope", "read")
	if code != 0 || !strings.Contains(out, "client_secret") {
		t.Fatalf("client add -grant client_credentials = %d %q %q", code, out, errs)
	}
	_, out, _ = cli(t, env, "", "client", "list")
	if !strings.Contains(out, `"grant_types":["client_credentials"]`) {
		t.Errorf("client list = %q", out)
	}
	// The first user added from the command line administers the server; later ones do not.
	for i, name := range []string{"first", "second"} {
		_, out, _ := cli(t, env, "a long password\n", "user", "add", name)
		if want := fmt.Sprintf(`"admin":%v`, i == 0); !strings.Contains(out, want) {
			t.Errorf("user add %s = %q; want %s", name, out, want)
		}
	}
	if code, _, errs := cli(t, env, "", "registration-token", "create", "-ttl", "1s"); code != 2 {
		t.Errorf("registration-token -ttl 1s = %d %q", code, errs)
	}
}

// TestClientCredentialsSharedGrant: a client's client_credentials tokens share one userless
// grant; when the purge removed it and SQLite handed its id to a user's grant, the next
// token gets a grant of its own again and never that user's identity.
func TestClientCredentialsSharedGrant(t *testing.T) {
	ts := newTestServer(t)
	ctx := context.Background()
	svcC := ts.addServiceClient("read")
	svc := svcC.client
	cc := func() string {
		r := ts.postToken("/oauth/token", url.Values{"grant_type": {"client_credentials"}}, svcC.ID, svcC.Secret)
		if r.Status != 200 {
			t.Fatalf("client_credentials = %d %s", r.Status, r.Raw)
		}
		return str(r.JSON["access_token"])
	}
	grants := func() (n int) {
		ts.s.store.db.QueryRow("SELECT count(*) FROM grants").Scan(&n)
		return n
	}
	a, b := cc(), cc()
	if n := grants(); n != 1 {
		t.Fatalf("%d grants for two client_credentials tokens; want 1", n)
	}
	// Both tokens go; the purge removes the grant; a user's code flow takes the next id.
	for _, tok := range []string{a, b} {
		if r := ts.postToken("/oauth/revoke", url.Values{"token": {tok}}, svcC.ID, svcC.Secret); r.Status != 200 {
			t.Fatalf("revoke = %d %s", r.Status, r.Raw)
		}
	}
	if _, err := ts.s.store.purge(ctx, ts.clock.Now(), time.Second); err != nil || grants() != 0 {
		t.Fatalf("purge: %v, %d grants left", err, grants())
	}
	ts.addUser("alice", "correct horse battery")
	web := ts.addClient(false, "read", "https://app.example/cb")
	code, ver := ts.browser("alice", "correct horse battery").getCode(web)
	user := ts.exchange(web, code, ver)
	var reused bool
	ts.s.store.db.QueryRow("SELECT count(*) = 1 FROM grants WHERE id = ?", ts.s.store.ccGrant[svcC.ID]).Scan(&reused)
	if !reused {
		t.Log("SQLite did not reuse the purged grant id; the check below still runs")
	}
	c := cc()
	in := ts.postToken("/oauth/introspect", url.Values{"token": {c}}, web.ID, web.Secret)
	if in.JSON["active"] != true || in.JSON["sub"] != svc.ID || in.JSON["username"] != nil {
		t.Fatalf("a client token after the purge = %s; want the client as subject, no user", in.Raw)
	}
	if !ts.active(web, str(user.JSON["access_token"])) {
		t.Fatal("the user's token was disturbed")
	}
}

// TestAdminFirstSteps: the administrator's home page, the secret page's configuration
// values, the web form's grants, post-logout URIs and always-refresh, and -user-apps.
func TestAdminFirstSteps(t *testing.T) {
	ts := newTestServer(t)
	ts.addAdmin("root", "the admin password")
	ts.addUser("alice", "correct horse battery")
	root := ts.browser("root", "the admin password")
	root.login()
	home := root.get("/")
	for _, want := range []string{ts.s.cfg.Issuer + "/.well-known/openid-configuration", "Add your first app", `data-copy="issuer"`} {
		if !strings.Contains(home.Body, want) {
			t.Errorf("the admin's home lacks %q", want)
		}
	}
	fp := root.get("/oauth/client/register")
	if !strings.Contains(fp.Body, `name="grant_client_credentials"`) || !strings.Contains(fp.Body, `name="grant_device"`) || !strings.Contains(fp.Body, `name="post_logout_redirect_uris"`) {
		t.Fatal("the admin's client form lacks the grants or post-logout URIs")
	}
	res := root.post("/oauth/client/register", url.Values{"csrf_token": {hidden(fp.Body, "csrf_token")}, "name": {"Backup"}, "type": {"confidential"},
		"grant_client_credentials": {"on"}, "scope": {"backup"}})
	secret := inputValue(res.Body, "client_secret")
	if res.StatusCode != http.StatusCreated || len(secret) != 43 || !strings.Contains(res.Body, "/.well-known/openid-configuration") {
		t.Fatalf("register a machine client = %d secret %q", res.StatusCode, secret)
	}
	if !strings.Contains(root.get("/").Body, "Add an app") {
		t.Error("the home page still offers the first app")
	}
	res = root.post("/oauth/client/register", url.Values{"csrf_token": {hidden(fp.Body, "csrf_token")}, "name": {"Wiki"}, "type": {"confidential"},
		"grant_code": {"on"}, "redirect_uris": {"https://wiki.example/cb"}, "post_logout_redirect_uris": {"https://wiki.example/bye"}, "always_refresh": {"on"}})
	id := inputValue(res.Body, "client_id")
	if c, err := ts.s.store.clientByID(context.Background(), id); err != nil || !c.AlwaysRefresh || len(c.PostLogoutURIs) != 1 || c.PostLogoutURIs[0] != "https://wiki.example/bye" {
		t.Fatalf("the form's post-logout URI and always-refresh: %+v %v", c, err)
	}
	if p := root.post("/oauth/client/register", url.Values{"csrf_token": {hidden(fp.Body, "csrf_token")}, "name": {"Nothing"}, "type": {"confidential"}}); p.StatusCode != 400 || !strings.Contains(p.Body, "hoose at least one") {
		t.Errorf("a form without a grant = %d", p.StatusCode)
	}
	// A user cannot give an app the machine grants.
	alice := ts.browser("alice", "correct horse battery")
	alice.login()
	afp := alice.get("/oauth/client/register")
	if strings.Contains(afp.Body, `name="grant_client_credentials"`) {
		t.Error("a user's form offers client_credentials")
	}
	if p := alice.post("/oauth/client/register", url.Values{"csrf_token": {hidden(afp.Body, "csrf_token")}, "name": {"Sneaky"}, "type": {"confidential"},
		"grant_client_credentials": {"on"}}); p.StatusCode != 400 || !strings.Contains(p.Body, "nly an administrator") {
		t.Errorf("a user registering client_credentials = %d", p.StatusCode)
	}
	// -user-apps=false keeps registration to administrators.
	ts2 := newTestServer(t, func(c *config) { c.UserApps = false })
	ts2.addUser("bob", "correct horse battery")
	bob := ts2.browser("bob", "correct horse battery")
	bob.login()
	if p := bob.get("/oauth/client/register"); p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "only administrators") {
		t.Errorf("-user-apps=false: the register page for a user = %d", p.StatusCode)
	}
}

// TestClientFormRequireMFA: the administrator's "require a second factor" box takes effect
// when an app is registered and when it is edited (it was read after the spec was built).
func TestClientFormRequireMFA(t *testing.T) {
	ts := newTestServer(t)
	ts.addAdmin("root", "correct horse battery")
	b := ts.browser("root", "correct horse battery")
	b.login()
	rp := b.get("/oauth/client/register")
	p := b.post("/oauth/client/register", url.Values{"csrf_token": {hidden(rp.Body, "csrf_token")}, "name": {"Vault"}, "type": {"confidential"},
		"grant_code": {"on"}, "redirect_uris": {"https://vault.example/cb"}, "require_mfa": {"on"}})
	if p.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %s", p.StatusCode, p.Body)
	}
	cs, _ := ts.s.store.listClients(context.Background())
	if len(cs) != 1 || !cs[0].RequireMFA {
		t.Fatalf("registered with the box ticked: %+v", cs)
	}
	ep := b.get("/oauth/client/" + cs[0].ID + "/edit")
	p = b.post("/oauth/client/"+cs[0].ID+"/edit", url.Values{"csrf_token": {hidden(ep.Body, "csrf_token")}, "name": {"Vault"}, "grant_code": {"on"},
		"redirect_uris": {"https://vault.example/cb"}})
	if c, _ := ts.s.store.clientByID(context.Background(), cs[0].ID); p.StatusCode != http.StatusSeeOther || c.RequireMFA {
		t.Errorf("edited with the box unticked = %d, require MFA %v", p.StatusCode, c.RequireMFA)
	}
}
