package main

import (
	"context"
	"encoding/json"
	"flag"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// ---- helpers

// oauthdCLI runs the command line in process against the test server's database (another
// store, with caches of its own: the server learns of its changes as from another process).
func (ts *testServer) oauthdCLI(args ...string) (code int, stdout, stderr string) {
	ts.t.Helper()
	return cli(ts.t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "", args...)
}

// mustCLI is oauthdCLI that fails the test unless the command succeeds.
func (ts *testServer) mustCLI(args ...string) string {
	ts.t.Helper()
	code, out, errOut := ts.oauthdCLI(args...)
	if code != 0 {
		ts.t.Fatalf("oauthd %q = %d: %s", args, code, errOut)
	}
	return out
}

// jsonLines decodes one JSON object per line.
func jsonLines(t testing.TB, out string) []map[string]any {
	t.Helper()
	var all []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		all = append(all, m)
	}
	return all
}

// strs turns a decoded JSON array into strings.
func strs(v any) []string {
	a, ok := v.([]any)
	if !ok {
		return nil
	}
	out := []string{}
	for _, x := range a {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// restrict sets a client's allow-list directly in the store.
func (ts *testServer) restrict(c testClient, groups ...string) {
	ts.t.Helper()
	if _, err := ts.s.store.setClientGroups(context.Background(), c.ID, groups); err != nil {
		ts.t.Fatal(err)
	}
}

// count counts rows of a table for a condition.
func (ts *testServer) count(table, where string, args ...any) int {
	ts.t.Helper()
	var n int
	if err := ts.s.store.db.QueryRow("SELECT count(*) FROM "+table+" WHERE "+where, args...).Scan(&n); err != nil {
		ts.t.Fatal(err)
	}
	return n
}

// userinfo asks UserInfo with an access token.
func (ts *testServer) userinfo(tok string) tokenCall {
	ts.t.Helper()
	req, _ := http.NewRequest("GET", ts.url+"/oauth/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	return decodeCall(resp)
}

// ---- command line

// TestParseArgs: flags before, between and after the arguments; "--" ends the flags, except
// as a flag's value.
func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		wantPos  []string
		wantDesc string
		wantB    bool
	}{
		{[]string{"family", "-description", "Parents and kids"}, []string{"family"}, "Parents and kids", false},
		{[]string{"-description", "Parents and kids", "family"}, []string{"family"}, "Parents and kids", false},
		{[]string{"a", "-b", "b", "-description=x", "c"}, []string{"a", "b", "c"}, "x", true},
		{[]string{"a", "--", "-b", "-description"}, []string{"a", "-b", "-description"}, "", false},
		{[]string{"-description", "--", "a", "-b"}, []string{"a"}, "--", true},
		{[]string{"-b", "--", "-x"}, []string{"-x"}, "", true},
		{nil, nil, "", false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		desc := fs.String("description", "", "")
		b := fs.Bool("b", false, "")
		pos, err := parseArgs(fs, tt.args, func(string) string { return "" })
		if err != nil || !slices.Equal(pos, tt.wantPos) || *desc != tt.wantDesc || *b != tt.wantB {
			t.Errorf("parseArgs(%q) = %q, -description %q, -b %v, %v; want %q, %q, %v", tt.args, pos, *desc, *b, err, tt.wantPos, tt.wantDesc, tt.wantB)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("description", "", "")
	if _, err := parseArgs(fs, []string{"family", "-nope"}, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("an unknown flag after an argument = %v; want an error naming it", err)
	}
}

// TestGroupCLI: group add/del/list/members/add-member/remove-member, user add -group, user
// list's groups, client add -allow-group, and their errors.
func TestGroupCLI(t *testing.T) {
	ts := newTestServer(t)
	g := jsonLines(t, ts.mustCLI("group", "add", "family", "-description", "Parents and kids"))
	if len(g) != 1 || g[0]["name"] != "family" || g[0]["description"] != "Parents and kids" || g[0]["members"] != float64(0) {
		t.Fatalf("group add = %v", g)
	}
	ts.mustCLI("group", "add", "-description", "Operators", "admins")
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"group", "add", "FAMILY"}, 1, "already exists"},
		{[]string{"group", "add", "bad name"}, 2, "letters, digits"},
		{[]string{"group", "add", "x/y"}, 2, "letters, digits"},
		{[]string{"group", "add", strings.Repeat("a", 65)}, 2, "1 to 64"},
		{[]string{"group", "add", ""}, 2, "1 to 64"},
		{[]string{"group", "add"}, 2, "takes 1 argument"},
		{[]string{"group", "add", "a", "b"}, 2, "takes 1 argument"},
		{[]string{"group", "add", "x", "-description", "two\nlines"}, 2, "one line"},
		{[]string{"group", "del", "nobody"}, 1, `no group named "nobody"`},
		{[]string{"group", "members", "nobody"}, 1, `no group named "nobody"`},
		{[]string{"group", "add-member", "family"}, 2, "at least 2"},
		{[]string{"group", "add-member", "family", "ghost", "phantom"}, 1, `no users named "ghost", "phantom"`},
		{[]string{"group", "frobnicate"}, 2, "unknown command"},
		{[]string{"user", "add", "-group", "nosuch", "carol"}, 1, `no group named "nosuch"`},
		{[]string{"client", "add", "-name", "G", "-redirect-uri", "https://g.example/cb", "-allow-group", "nosuch"}, 1, `no group named "nosuch"`},
		{[]string{"client", "add", "-name", "G", "-redirect-uri", "https://g.example/cb", "-allow-group", "bad name"}, 2, "letters, digits"},
	} {
		code, _, errOut := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "a long enough password", tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("oauthd %q = %d %q; want %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	if code, _, _ := ts.oauthdCLI("user", "list"); code != 0 || ts.count("users", "username = 'carol'") != 0 {
		t.Error("user add with an unknown group created the user anyway")
	}
	if ts.count("clients", "name = 'G'") != 0 {
		t.Error("client add with an unknown group created the client anyway")
	}

	// user add -group (repeatable; flags after the name too), user list.
	code, out, errOut := cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "alice's password", "user", "add", "alice", "-group", "family", "-group", "Admins")
	if code != 0 {
		t.Fatalf("user add -group = %d %s", code, errOut)
	}
	if u := jsonLines(t, out); !slices.Equal(strs(u[0]["groups"]), []string{"admins", "family"}) {
		t.Errorf("user add -group prints groups %v; want [admins family]", u[0]["groups"])
	}
	cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "bob's password", "user", "add", "bob")
	cli(t, map[string]string{"OAUTHD_DB": ts.s.cfg.DB}, "carol's password", "user", "add", "carol")
	ts.mustCLI("group", "add-member", "family", "bob", "carol")
	if _, _, e := ts.oauthdCLI("group", "add-member", "family", "bob"); !strings.Contains(e, "no change") {
		t.Errorf("adding a member twice says %q", e)
	}
	users := map[string][]string{}
	for _, u := range jsonLines(t, ts.mustCLI("user", "list")) {
		users[str(u["username"])] = strs(u["groups"])
	}
	if !slices.Equal(users["alice"], []string{"admins", "family"}) || !slices.Equal(users["bob"], []string{"family"}) || users["carol"] == nil {
		t.Errorf("user list groups = %v", users)
	}
	list := jsonLines(t, ts.mustCLI("group", "list"))
	if len(list) != 2 || list[0]["name"] != "admins" || list[0]["members"] != float64(1) || list[1]["name"] != "family" || list[1]["members"] != float64(3) ||
		list[1]["description"] != "Parents and kids" {
		t.Errorf("group list = %v", list)
	}
	var names []string
	for _, m := range jsonLines(t, ts.mustCLI("group", "members", "FAMILY")) {
		names = append(names, str(m["username"]))
		if m["password_hash"] != nil {
			t.Error("group members prints a password hash")
		}
	}
	if !slices.Equal(names, []string{"alice", "bob", "carol"}) {
		t.Errorf("group members = %v", names)
	}
	if _, _, e := ts.oauthdCLI("group", "remove-member", "family", "carol"); !strings.Contains(e, "removed from family: carol") {
		t.Errorf("remove-member says %q", e)
	}
	if code, _, e := ts.oauthdCLI("group", "remove-member", "family", "nobody"); code != 1 || !strings.Contains(e, `no user named "nobody"`) {
		t.Errorf("remove-member of an unknown user = %d %q", code, e)
	}

	// client add -allow-group: the add output keeps its exact keys; client list shows the list.
	out = ts.mustCLI("client", "add", "-name", "Grafana", "-redirect-uri", "https://grafana.example/cb", "-allow-group", "admins", "-allow-group", "family")
	var added map[string]any
	json.Unmarshal([]byte(out), &added)
	if len(added) != 5 || added["client_secret"] == nil {
		t.Errorf("client add with -allow-group printed %s", out)
	}
	ts.mustCLI("client", "add", "-name", "Photos", "-redirect-uri", "https://photos.example/cb", "-allow-group", "family")
	for _, c := range jsonLines(t, ts.mustCLI("client", "list")) {
		want := map[string][]string{"Grafana": {"admins", "family"}, "Photos": {"family"}}[str(c["name"])]
		if !slices.Equal(strs(c["allow_groups"]), want) {
			t.Errorf("client list %s allow_groups = %v; want %v", c["name"], c["allow_groups"], want)
		}
	}

	// group del names the allow-lists it leaves, and says which app becomes open to all.
	_, _, e := ts.oauthdCLI("group", "del", "family")
	if !strings.Contains(e, "removed from the allow-list of Grafana") || !strings.Contains(e, "Photos") || !strings.Contains(e, "now open to every user") ||
		strings.Count(e, "now open to every user") != 1 {
		t.Errorf("group del says %q", e)
	}
	for _, c := range jsonLines(t, ts.mustCLI("client", "list")) {
		want := map[string][]string{"Grafana": {"admins"}}[str(c["name"])]
		if !slices.Equal(strs(c["allow_groups"]), want) {
			t.Errorf("after group del, %s allow_groups = %v; want %v", c["name"], c["allow_groups"], want)
		}
	}
	if n := ts.count("group_members", "1"); n != 1 {
		t.Errorf("after group del, %d memberships are left; want 1 (alice in admins)", n)
	}
}

// TestUserSet: an administrator changes name, email, verified flag and role from the CLI; a
// new email is verified unless told otherwise; the last administrator keeps the role.
func TestUserSet(t *testing.T) {
	ts := newTestServer(t)
	env := map[string]string{"OAUTHD_DB": ts.s.cfg.DB}
	cli(t, env, "root's password", "user", "add", "root") // the first user is an admin
	cli(t, env, "alice's password", "user", "add", "alice")
	// What /account leaves unverified, user set verifies.
	alice, _ := ts.s.store.userByName(context.Background(), "alice")
	ts.s.store.setProfile(context.Background(), alice.ID, "", "alice@example.org", 1)
	u := jsonLines(t, ts.mustCLI("user", "set", "alice", "-email-verified=true"))[0]
	if u["email"] != "alice@example.org" || u["email_verified"] != true {
		t.Errorf("user set -email-verified=true = %v", u)
	}
	u = jsonLines(t, ts.mustCLI("user", "set", "-name", "Alice Example", "alice", "-email", "a@example.org"))[0]
	if u["name"] != "Alice Example" || u["email"] != "a@example.org" || u["email_verified"] != true {
		t.Errorf("user set -name -email = %v", u)
	}
	u = jsonLines(t, ts.mustCLI("user", "set", "alice", "-email", "b@example.org", "-email-verified=false"))[0]
	if u["email"] != "b@example.org" || u["email_verified"] != false || u["name"] != "Alice Example" {
		t.Errorf("user set -email -email-verified=false = %v", u)
	}
	u = jsonLines(t, ts.mustCLI("user", "set", "alice", "-email", ""))[0]
	if u["email"] != "" || u["email_verified"] != false {
		t.Errorf("clearing the email = %v", u)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"user", "set", "root", "-admin=false"}, 1, "last enabled administrator"},
		{[]string{"user", "set", "ghost", "-admin=true"}, 1, `no user "ghost"`},
		{[]string{"user", "set", "alice"}, 2, "nothing to change"},
		{[]string{"user", "set", "-admin=true"}, 2, "one NAME"},
		{[]string{"user", "set", "alice", "-admin=maybe"}, 2, "true or false"},
		{[]string{"user", "set", "alice", "-email", "not an address"}, 2, "email address is not valid"},
	} {
		code, _, errOut := ts.oauthdCLI(tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("oauthd %q = %d %q; want %d and %q", tt.args, code, errOut, tt.code, tt.want)
		}
	}
	ts.mustCLI("user", "set", "alice", "-admin")
	ts.mustCLI("user", "set", "root", "-admin=false") // alice is an admin now
	if _, _, e := ts.oauthdCLI("user", "set", "alice", "-admin=false"); !strings.Contains(e, "last enabled administrator") {
		t.Errorf("demoting the last admin (alice) = %q", e)
	}
	// A disabled admin does not count.
	ts.mustCLI("user", "set", "root", "-admin=true")
	ts.s.store.setDisabled(context.Background(), "root", true)
	if _, _, e := ts.oauthdCLI("user", "set", "alice", "-admin=false"); !strings.Contains(e, "last enabled administrator") {
		t.Errorf("demoting the last enabled admin while another is disabled = %q", e)
	}
	if _, _, e := cli(t, env, "a long enough password", "user", "add", "alice"); !strings.Contains(e, "user set") {
		t.Errorf("user add of an existing user does not point to user set: %q", e)
	}
}

// ---- claims

// TestGroupsClaim: the groups scope releases the sorted group names in the ID token, UserInfo
// and introspection, and nothing without it; it is in the metadata and on the consent page.
func TestGroupsClaim(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.addUser("bob", "bob's password!")
	ts.mustCLI("group", "add", "family")
	ts.mustCLI("group", "add", "Admins")
	ts.mustCLI("group", "add", "zeta")
	ts.mustCLI("group", "add-member", "zeta", "alice")
	ts.mustCLI("group", "add-member", "family", "alice")
	ts.mustCLI("group", "add-member", "admins", "alice")
	c := ts.addClient(false, "read", "https://app.example/cb")
	rs := ts.addClient(false, "read", "https://rs.example/cb")

	b := ts.browser("alice", "correct horse battery")
	q := codeRequest(c, nil)
	q.Set("scope", "openid groups")
	if p := b.authorize(q, ""); !strings.Contains(p.Body, "See which groups you belong to") {
		t.Errorf("the consent page does not describe the groups scope: %s", p.Body)
	}
	want := []string{"Admins", "family", "zeta"}
	tok, nonce := b.oidcFlow(c, "openid groups offline_access", nil)
	_, claims := ts.verifyIDToken(str(tok.JSON["id_token"]), c, str(tok.JSON["access_token"]), &nonce)
	if !slices.Equal(strs(claims["groups"]), want) {
		t.Errorf("ID token groups = %v; want %v", claims["groups"], want)
	}
	if ui := ts.userinfo(str(tok.JSON["access_token"])); !slices.Equal(strs(ui.JSON["groups"]), want) {
		t.Errorf("UserInfo groups = %s; want %v", ui.Raw, want)
	}
	for _, k := range []string{"access_token", "refresh_token"} {
		if r := ts.introspect(rs, str(tok.JSON[k])); !slices.Equal(strs(r.JSON["groups"]), want) || !strings.Contains(r.Raw, `"groups":["Admins","family","zeta"]`) {
			t.Errorf("introspection of the %s = %s; want groups %v", k, r.Raw, want)
		}
	}
	// After a refresh, the new ID token still has them.
	if r := ts.refresh(c, str(tok.JSON["refresh_token"])); r.Status != 200 {
		t.Fatalf("refresh = %s", r.Raw)
	} else if _, claims := ts.verifyIDToken(str(r.JSON["id_token"]), c, str(r.JSON["access_token"]), nil); !slices.Equal(strs(claims["groups"]), want) {
		t.Errorf("refreshed ID token groups = %v", claims["groups"])
	}

	// Without the scope: no groups anywhere.
	tok, nonce = b.oidcFlow(c, "openid profile", nil)
	_, claims = ts.verifyIDToken(str(tok.JSON["id_token"]), c, str(tok.JSON["access_token"]), &nonce)
	if _, ok := claims["groups"]; ok {
		t.Errorf("ID token without the groups scope has groups: %v", claims)
	}
	if ui := ts.userinfo(str(tok.JSON["access_token"])); strings.Contains(ui.Raw, "groups") {
		t.Errorf("UserInfo without the groups scope = %s", ui.Raw)
	}
	if r := ts.introspect(rs, str(tok.JSON["access_token"])); strings.Contains(r.Raw, "groups") {
		t.Errorf("introspection without the groups scope = %s", r.Raw)
	}
	// A user in no group, with the scope: an empty list.
	tok, _ = ts.browser("bob", "bob's password!").oidcFlow(c, "openid groups", nil)
	if r := ts.introspect(rs, str(tok.JSON["access_token"])); !strings.Contains(r.Raw, `"groups":[]`) {
		t.Errorf("introspection for a user in no group = %s; want groups []", r.Raw)
	}
	if ui := ts.userinfo(str(tok.JSON["access_token"])); ui.JSON["groups"] == nil || len(strs(ui.JSON["groups"])) != 0 {
		t.Errorf("UserInfo for a user in no group = %s", ui.Raw)
	}
	// Membership changes show at once, in the server and from the CLI.
	ts.mustCLI("group", "add-member", "family", "bob")
	if r := ts.introspect(rs, str(tok.JSON["access_token"])); !strings.Contains(r.Raw, `"groups":["family"]`) {
		t.Errorf("introspection after add-member = %s", r.Raw)
	}
	// Metadata.
	p := ts.browser("", "").get("/.well-known/openid-configuration")
	var md map[string]any
	json.Unmarshal([]byte(p.Body), &md)
	if !slices.Contains(strs(md["scopes_supported"]), "groups") || !slices.Contains(strs(md["claims_supported"]), "groups") {
		t.Errorf("metadata lacks groups: %v %v", md["scopes_supported"], md["claims_supported"])
	}
}

// TestCustomClaims: validation, exact round trips, release with profile only, and the
// precedence of a user's claim over groups' and of groups in name order.
func TestCustomClaims(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.mustCLI("group", "add", "beta")
	ts.mustCLI("group", "add", "Alpha")
	ts.mustCLI("group", "add-member", "beta", "alice")
	ts.mustCLI("group", "add-member", "alpha", "alice")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"user", "claim", "alice", "sub=\"x\""}, `"sub" is reserved`},
		{[]string{"user", "claim", "alice", "Email=\"x\""}, `"Email" is reserved`},
		{[]string{"user", "claim", "alice", "groups=[]"}, "reserved"},
		{[]string{"group", "claim", "beta", "preferred_username=1"}, "reserved"},
		{[]string{"user", "claim", "alice", "dept=Sales"}, "not JSON (a string needs quotes"},
		{[]string{"user", "claim", "alice", "dept={\"a\":1,\"a\":2}"}, `repeats the member "a"`},
		{[]string{"user", "claim", "alice", "dept=1 2"}, "not JSON"},
		{[]string{"user", "claim", "alice", "dept=\"\xff\""}, "UTF-8"},
		{[]string{"user", "claim", "alice", "dept=\"" + strings.Repeat("x", 1023) + "\""}, "1025 bytes; at most 1024"},
		{[]string{"user", "claim", "alice", "1dept=1"}, "must start with a letter"},
		{[]string{"user", "claim", "alice", "de pt=1"}, "may only contain"},
		{[]string{"user", "claim", "alice", "dept"}, "KEY=JSON"},
		{[]string{"user", "claim", "alice", "dept=1", "dept=2"}, "named twice"},
		{[]string{"user", "claim", "ghost", "dept=1"}, `no user "ghost"`},
		{[]string{"group", "claim", "ghost", "dept=1"}, `no group named "ghost"`},
	} {
		code, _, errOut := ts.oauthdCLI(tt.args...)
		if code == 0 || !strings.Contains(errOut, tt.want) {
			t.Errorf("oauthd %q = %d %q; want an error with %q", tt.args, code, errOut, tt.want)
		}
	}
	if n := ts.count("user_claims", "1"); n != 0 {
		t.Errorf("refused claims stored %d rows", n)
	}
	// Exactly 1 KiB is fine; values of every JSON kind round-trip byte for byte (compacted).
	ts.mustCLI("user", "claim", "alice", "big=\""+strings.Repeat("x", 1022)+"\"")
	values := map[string]string{
		"n":                         `12345678901234567890123`,
		"f":                         `1.50`,
		"e":                         `-0.0e+10`,
		"s":                         `"Zoë ☃ \u00e9 <b>&"`,
		"t":                         `true`,
		"null":                      `null`,
		"obj":                       `{"z": 1, "a": [1, {"y": "2"}], "m": {}}`,
		"arr":                       `[ "x" , 2 ,false]`,
		"https://example.com/roles": `["editor"]`,
	}
	wantCompact := map[string]string{"obj": `{"z":1,"a":[1,{"y":"2"}],"m":{}}`, "arr": `["x",2,false]`}
	args := []string{"user", "claim", "alice"}
	for k, v := range values {
		args = append(args, k+"="+v)
	}
	out := ts.mustCLI(args...)
	for k, v := range values {
		if w, ok := wantCompact[k]; ok {
			v = w
		}
		enc, _ := json.Marshal(k)
		if k != "s" && !strings.Contains(out, string(enc)+":"+v) {
			t.Errorf("user claim output %s lacks %s:%s", out, enc, v)
		}
	}
	ts.mustCLI("group", "claim", "beta", "team=\"beta\"", "n=0", "only_beta=1")
	ts.mustCLI("group", "claim", "alpha", "team=\"alpha\"", "only_alpha=[\"a\"]")
	ts.mustCLI("group", "claim", "alpha", "only_alpha=", "alpha2=2") // KEY= removes

	c := ts.addClient(false, "read", "https://app.example/cb")
	b := ts.browser("alice", "correct horse battery")
	tok, nonce := b.oidcFlow(c, "openid profile", nil)
	ts.verifyIDToken(str(tok.JSON["id_token"]), c, str(tok.JSON["access_token"]), &nonce)
	payload := func(jwt string) string {
		parts := strings.Split(jwt, ".")
		raw, _ := b64.DecodeString(parts[1])
		return string(raw)
	}
	for _, doc := range []struct{ what, raw string }{{"ID token", payload(str(tok.JSON["id_token"]))}, {"UserInfo", ts.userinfo(str(tok.JSON["access_token"])).Raw}} {
		for k, v := range values {
			if w, ok := wantCompact[k]; ok {
				v = w
			}
			enc, _ := json.Marshal(k)
			if k != "s" && !strings.Contains(doc.raw, string(enc)+":"+v) {
				t.Errorf("%s %s lacks %s:%s", doc.what, doc.raw, enc, v)
			}
		}
		var m map[string]any
		json.Unmarshal([]byte(doc.raw), &m)
		// The user's own n wins over beta's; alpha (first by name) wins team over beta.
		if m["s"] != "Zoë ☃ é <b>&" { // the same string, whatever its escapes
			t.Errorf("%s s = %q", doc.what, m["s"])
		}
		if m["team"] != "alpha" || m["only_beta"] != float64(1) || m["alpha2"] != float64(2) || m["only_alpha"] != nil || m["preferred_username"] != "alice" {
			t.Errorf("%s precedence: team %v only_beta %v alpha2 %v only_alpha %v", doc.what, m["team"], m["only_beta"], m["alpha2"], m["only_alpha"])
		}
	}
	// Without profile: none of them.
	tok, _ = b.oidcFlow(c, "openid email", nil)
	if p := payload(str(tok.JSON["id_token"])); strings.Contains(p, "team") || strings.Contains(p, `"n"`) {
		t.Errorf("ID token without profile has custom claims: %s", p)
	}
	if ui := ts.userinfo(str(tok.JSON["access_token"])); strings.Contains(ui.Raw, "team") {
		t.Errorf("UserInfo without profile has custom claims: %s", ui.Raw)
	}
	// Too many claims on one owner.
	args = []string{"group", "claim", "beta"}
	for i := range maxClaims {
		args = append(args, "k"+strings.Repeat("x", i)+"=1")
	}
	if code, _, e := ts.oauthdCLI(args...); code == 0 || !strings.Contains(e, "at most 32") {
		t.Errorf("33 claims on a group = %d %q", code, e)
	}
	// parseClaimValue directly: what the pages use.
	for _, bad := range []string{"", "  ", "{", `{"a":1}{"b":2}`, "[1,]", "'x'", "NaN", `{"a":{"b":1,"b":2}}`} {
		if _, err := parseClaimValue("x", bad); err == nil {
			t.Errorf("parseClaimValue(%q) = nil; want an error", bad)
		}
	}
}

// ---- per-app access

// TestAllowGroupsAuthorize: a user outside every allowed group is refused before consent,
// with a page naming the app and whom to ask and a link back with access_denied, state and
// iss; no consent, code or pending request is made; prompt=none gets access_denied.
func TestAllowGroupsAuthorize(t *testing.T) {
	ts := newTestServer(t)
	root := ts.addAdmin("root", "the admin password")
	ts.s.store.updateUser(context.Background(), root.Username, userChange{Name: ptr("Rita Root")}, 1)
	ts.addUser("alice", "correct horse battery")
	ts.addUser("bob", "bob's password!")
	ts.mustCLI("group", "add", "admins")
	ts.mustCLI("group", "add-member", "admins", "alice")
	c := ts.addClient(false, "read", "https://grafana.example/cb?x=1")
	ts.restrict(c, "admins")
	c.Name = "Test App"

	bob := ts.browser("bob", "bob's password!")
	q := codeRequest(c, nil)
	p := bob.authorize(q, "allow")
	if p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "No access to") || !strings.Contains(p.Body, "Test App") ||
		!strings.Contains(p.Body, "Rita Root (root)") || strings.Contains(p.Body, `name="decision"`) {
		t.Fatalf("an outsider at the authorization endpoint = %d %s", p.StatusCode, p.Body)
	}
	back := between(p.Body, `<p><a href="`, `">Return to`)
	u, err := url.Parse(html.UnescapeString(back))
	if err != nil || u.Host != "grafana.example" || u.Query().Get("x") != "1" || u.Query().Get("error") != "access_denied" ||
		u.Query().Get("state") != q.Get("state") || u.Query().Get("iss") != ts.url {
		t.Errorf("the link back = %q; want the redirect URI with error=access_denied, state and iss", back)
	}
	bobID, _ := ts.s.store.userByName(context.Background(), "bob")
	for _, table := range []string{"consents", "codes", "grants"} {
		if n := ts.count(table, "user_id = ?", bobID.ID); n != 0 {
			t.Errorf("%d %s rows made for an outsider", n, table)
		}
	}
	if n := ts.count("pending", "1"); n != 0 {
		t.Errorf("%d pending consent requests made for an outsider", n)
	}
	// prompt=none: straight back with access_denied.
	q.Set("prompt", "none")
	p = bob.get("/oauth/authorize?" + q.Encode())
	if loc, _ := url.Parse(p.Header.Get("Location")); p.StatusCode != http.StatusFound || loc.Query().Get("error") != "access_denied" || loc.Query().Get("state") != q.Get("state") {
		t.Errorf("prompt=none for an outsider = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	// A member gets the consent page and a code.
	alice := ts.browser("alice", "correct horse battery")
	code, ver := alice.getCode(c)
	if r := ts.exchange(c, code, ver); r.Status != 200 {
		t.Errorf("a member's exchange = %s", r.Raw)
	}

	// A consent page shown while the user was a member, answered after they left: refused.
	q = codeRequest(c, nil)
	q.Set("prompt", "consent")
	page := alice.authorize(q, "")
	if !strings.Contains(page.Body, `name="decision"`) {
		t.Fatalf("no consent page: %s", page.Body)
	}
	ts.mustCLI("group", "remove-member", "admins", "alice")
	p = alice.post("/oauth/consent", url.Values{"csrf_token": {hidden(page.Body, "csrf_token")}, "request": {hidden(page.Body, "request")}, "decision": {"allow"}})
	if p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "No access to") {
		t.Errorf("allow after leaving the group = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	// A code issued while a member, redeemed after: invalid_grant.
	ts.mustCLI("group", "add-member", "admins", "alice")
	code, ver = alice.getCode(c)
	ts.s.store.db.Exec("DELETE FROM group_members") // behind the server's back: no revocation, only the check
	ts.s.store.cache.flush()
	if r := ts.exchange(c, code, ver); r.Status != 400 || r.JSON["error"] != "invalid_grant" {
		t.Errorf("exchange by a user outside the groups = %d %s; want invalid_grant", r.Status, r.Raw)
	}
	// Unrestricted clients are open to everyone.
	open := ts.addClient(false, "read", "https://open.example/cb")
	bob.getCode(open)
}

func ptr[T any](v T) *T { return &v }

// TestAllowGroupsRefreshAndDevice: the access rule runs on every refresh and on device
// approval; the device is told access_denied.
func TestAllowGroupsRefreshAndDevice(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.mustCLI("group", "add", "family")
	ts.mustCLI("group", "add-member", "family", "alice")
	c := ts.addClient(false, "read", "https://photos.example/cb")
	ts.restrict(c, "family")
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	tok := ts.exchange(c, code, ver)
	if r := ts.refresh(c, str(tok.JSON["refresh_token"])); r.Status != 200 {
		t.Fatalf("a member's refresh = %s", r.Raw)
	} else {
		tok = r
	}
	// Behind the server's back (no revocation): the refresh check alone refuses.
	ts.s.store.db.Exec("DELETE FROM group_members")
	ts.s.store.cache.flush()
	if r := ts.refresh(c, str(tok.JSON["refresh_token"])); r.Status != 400 || r.JSON["error"] != "invalid_grant" {
		t.Errorf("refresh by a user outside the groups = %d %s; want invalid_grant", r.Status, r.Raw)
	}
	ts.mustCLI("group", "add-member", "family", "alice")
	if r := ts.refresh(c, str(tok.JSON["refresh_token"])); r.Status != 200 {
		t.Errorf("refresh after rejoining = %s (a refused refresh must not burn the token)", r.Raw)
	}

	// Device flow: an outsider who types the code sees the no-access page; the device gets
	// access_denied.
	dev, err := clientSpec{Name: "TV app", Public: true, Scope: "read", GrantTypes: []string{"device_code", "refresh_token"}}.build()
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.s.store.createClientInGroups(context.Background(), dev, []string{"family"}); err != nil {
		t.Fatal(err)
	}
	ts.addUser("bob", "bob's password!")
	start := func() (dc, uc string) {
		r := ts.postToken("/oauth/device_authorization", url.Values{"client_id": {dev.ID}}, "", "")
		return str(r.JSON["device_code"]), str(r.JSON["user_code"])
	}
	poll := func(dc string) tokenCall {
		ts.clock.Advance(30 * time.Second)
		return ts.postToken("/oauth/token", url.Values{"grant_type": {grantDeviceCode}, "device_code": {dc}, "client_id": {dev.ID}}, "", "")
	}
	dc, uc := start()
	bob := ts.browser("bob", "bob's password!")
	bob.login()
	p := bob.get("/device")
	p = bob.post("/device", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "user_code": {uc}})
	if p.StatusCode != http.StatusForbidden || !strings.Contains(p.Body, "No access to") || !strings.Contains(p.Body, "TV app") || strings.Contains(p.Body, `name="decision"`) {
		t.Fatalf("an outsider approving a device = %d %s", p.StatusCode, p.Body)
	}
	if r := poll(dc); r.JSON["error"] != "access_denied" {
		t.Errorf("the device after an outsider's attempt = %s; want access_denied", r.Raw)
	}
	// A member approves; leaving the group before the device polls: nothing issued.
	dc, uc = start()
	b.login()
	p = b.get("/device")
	p = b.post("/device", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "user_code": {uc}})
	done := b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}})
	if done.StatusCode != 200 {
		t.Fatalf("a member's device approval = %d %s", done.StatusCode, done.Body)
	}
	ts.mustCLI("group", "remove-member", "family", "alice")
	if r := poll(dc); r.Status == 200 {
		t.Errorf("the device got tokens for a user who left the group: %s", r.Raw)
	}
	// And the check itself (approval recorded behind the revocation's back).
	ts.mustCLI("group", "add-member", "family", "alice")
	dc, uc = start()
	p = b.get("/device")
	p = b.post("/device", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "user_code": {uc}})
	b.post("/oauth/consent", url.Values{"csrf_token": {hidden(p.Body, "csrf_token")}, "request": {hidden(p.Body, "request")}, "decision": {"allow"}})
	ts.s.store.db.Exec("DELETE FROM group_members")
	ts.s.store.cache.flush()
	if r := poll(dc); r.Status != 400 || r.JSON["error"] != "invalid_grant" {
		t.Errorf("device grant for a user outside the groups = %d %s; want invalid_grant", r.Status, r.Raw)
	}
}

// TestRevokeOnAccessChange: removing a user from a group, narrowing an allow-list and
// deleting a group revoke exactly the grants that may no longer be held, and no others.
func TestRevokeOnAccessChange(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.addUser("bob", "bob's password!")
	for _, g := range []string{"admins", "family", "friends"} {
		ts.mustCLI("group", "add", g)
	}
	ts.mustCLI("group", "add-member", "admins", "alice", "bob")
	ts.mustCLI("group", "add-member", "family", "alice", "bob")
	ts.mustCLI("group", "add-member", "friends", "alice")
	grafana := ts.addClient(false, "read", "https://grafana.example/cb")
	photos := ts.addClient(false, "read", "https://photos.example/cb")
	wiki := ts.addClient(false, "read", "https://wiki.example/cb")
	ts.restrict(grafana, "admins")
	ts.restrict(photos, "family", "friends")
	rs := ts.addServiceClient("read")
	a, bo := ts.browser("alice", "correct horse battery"), ts.browser("bob", "bob's password!")
	get := func(b *browser, c testClient) tokenCall {
		code, ver := b.getCode(c)
		r := ts.exchange(c, code, ver)
		if r.Status != 200 {
			t.Fatalf("exchange = %s", r.Raw)
		}
		return r
	}
	toks := map[string]tokenCall{
		"alice/grafana": get(a, grafana), "alice/photos": get(a, photos), "alice/wiki": get(a, wiki),
		"bob/grafana": get(bo, grafana), "bob/photos": get(bo, photos),
	}
	check := func(step string, wantActive map[string]bool) {
		t.Helper()
		for k, tok := range toks {
			if got := ts.active(rs, str(tok.JSON["access_token"])); got != wantActive[k] {
				t.Errorf("%s: %s access token active = %v; want %v", step, k, got, wantActive[k])
			}
		}
	}
	all := map[string]bool{"alice/grafana": true, "alice/photos": true, "alice/wiki": true, "bob/grafana": true, "bob/photos": true}
	check("before", all)

	// alice leaves admins: her Grafana grant goes, nothing else.
	ts.mustCLI("group", "remove-member", "admins", "alice")
	all["alice/grafana"] = false
	check("alice left admins", all)
	if r := ts.refresh(grafana, str(toks["alice/grafana"].JSON["refresh_token"])); r.Status != 400 || r.JSON["error"] != "invalid_grant" {
		t.Errorf("alice's Grafana refresh = %d %s; want invalid_grant", r.Status, r.Raw)
	}
	if n := ts.count("consents", "client_id = ?", grafana.ID); n != 1 {
		t.Errorf("consents for Grafana = %d; want bob's alone", n)
	}
	// alice leaves family but stays in friends: Photos still open to her.
	ts.mustCLI("group", "remove-member", "family", "alice")
	check("alice left family (still in friends)", all)

	// The allow-list narrows: Photos only for family. alice (friends only) loses it.
	if _, err := ts.s.store.setClientGroups(context.Background(), photos.ID, []string{"family"}); err != nil {
		t.Fatal(err)
	}
	all["alice/photos"] = false
	check("Photos narrowed to family", all)
	if r := ts.refresh(photos, str(toks["bob/photos"].JSON["refresh_token"])); r.Status != 200 {
		t.Errorf("bob's Photos refresh after the narrowing = %s", r.Raw)
	} else {
		toks["bob/photos"] = r
	}

	// Deleting admins: Grafana becomes open to all, so bob keeps it; wiki unaffected.
	ts.mustCLI("group", "del", "admins")
	check("admins deleted (Grafana now open)", all)
	// Deleting family: Photos becomes open to all too; no one loses anything.
	ts.mustCLI("group", "del", "family")
	check("family deleted", all)

	// Deleting a group that leaves another on the list: its only-through-it members lose it.
	ts.mustCLI("group", "add", "kids")
	ts.mustCLI("group", "add", "parents")
	ts.mustCLI("group", "add-member", "kids", "alice")
	ts.mustCLI("group", "add-member", "parents", "bob")
	ts.restrict(wiki, "kids", "parents")
	toks["bob/wiki"] = get(bo, wiki)
	all["bob/wiki"] = true
	check("wiki for kids and parents", all)
	ts.mustCLI("group", "del", "kids")
	all["alice/wiki"] = false
	check("kids deleted", all)
}

// TestGroupsOtherProcess: a real second process (the CLI) changes memberships, allow-lists
// and claims while the server runs; the server's caches notice at once.
func TestGroupsOtherProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("runs subprocesses")
	}
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	db := ts.s.cfg.DB
	oauthdProcess(t, db, "", "group", "add", "family")
	oauthdProcess(t, db, "", "group", "add-member", "family", "alice")
	c := ts.addClient(false, "read", "https://photos.example/cb")
	rs := ts.addServiceClient("read")
	b := ts.browser("alice", "correct horse battery")
	tok, _ := b.oidcFlow(c, "openid profile groups offline_access", nil) // client, user access and token now cached
	if r := ts.introspect(rs, str(tok.JSON["access_token"])); !strings.Contains(r.Raw, `"groups":["family"]`) {
		t.Fatalf("introspection = %s", r.Raw)
	}
	// A claim set by another process appears in UserInfo.
	oauthdProcess(t, db, "", "user", "claim", "alice", `locale="fr"`)
	if ui := ts.userinfo(str(tok.JSON["access_token"])); ui.JSON["locale"] != "fr" {
		t.Errorf("UserInfo after user claim in another process = %s", ui.Raw)
	}
	// Restricting the client from another process: alice is a member, her tokens stay.
	oauthdProcess(t, db, "", "client", "add", "-name", "x", "-redirect-uri", "https://x.example/cb") // unrelated write
	if _, err := ts.s.store.setClientGroups(context.Background(), c.ID, []string{"family"}); err != nil {
		t.Fatal(err)
	}
	if !ts.active(rs, str(tok.JSON["access_token"])) {
		t.Fatal("a member's token was revoked by the allow-list")
	}
	// Removing her from the group in another process: her token is inactive at the next
	// introspection, her refresh is invalid_grant, and she cannot sign in again.
	oauthdProcess(t, db, "", "group", "remove-member", "family", "alice")
	if ts.active(rs, str(tok.JSON["access_token"])) {
		t.Error("token still active after remove-member in another process")
	}
	if r := ts.refresh(c, str(tok.JSON["refresh_token"])); r.JSON["error"] != "invalid_grant" {
		t.Errorf("refresh after remove-member in another process = %s", r.Raw)
	}
	if p := b.authorize(codeRequest(c, nil), "allow"); p.StatusCode != http.StatusForbidden {
		t.Errorf("authorize after remove-member in another process = %d; want the no-access page", p.StatusCode)
	}
	// Adding her back in another process: the cached "no" is forgotten.
	oauthdProcess(t, db, "", "group", "add-member", "family", "alice")
	b.getCode(c)
	// A group deleted in another process leaves the cached client's allow-list.
	oauthdProcess(t, db, "", "group", "del", "family")
	ts.addUser("bob", "bob's password!")
	ts.browser("bob", "bob's password!").getCode(c) // open to every user now
}

// TestAllowGroupsSelfRegistered: an app that registered itself (RFC 7591) and updates its
// own registration (RFC 7592 PUT) keeps the allow-list an administrator gave it.
func TestAllowGroupsSelfRegistered(t *testing.T) {
	ts := newTestServer(t)
	ts.clock.t = time.Now().Truncate(time.Second) // the CLI stamps the registration token with real time
	ts.mustCLI("group", "add", "family")
	reg := map[string]any{"client_name": "MCP Inspector", "redirect_uris": []string{"http://127.0.0.1:6274/cb"},
		"grant_types": []string{"authorization_code"}, "response_types": []string{"code"}, "token_endpoint_auth_method": "none"}
	r := ts.postJSON("POST", "/oauth/register", ts.registrationToken(1), reg)
	if r.Status != 201 {
		t.Fatalf("register = %d %s", r.Status, r.Raw)
	}
	id, rat := str(r.JSON["client_id"]), str(r.JSON["registration_access_token"])
	if _, err := ts.s.store.setClientGroups(context.Background(), id, []string{"family"}); err != nil {
		t.Fatal(err)
	}
	reg["client_id"], reg["client_name"] = id, "Renamed"
	if u := ts.postJSON("PUT", "/oauth/register/"+id, rat, reg); u.Status != 200 {
		t.Fatalf("PUT = %d %s", u.Status, u.Raw)
	}
	if c, _ := ts.s.store.clientByID(context.Background(), id); c.Name != "Renamed" || !slices.Equal(c.AllowGroups, []string{"family"}) {
		t.Errorf("after its own PUT the app has name %q and allow-list %v; want Renamed and [family]", c.Name, c.AllowGroups)
	}
}
