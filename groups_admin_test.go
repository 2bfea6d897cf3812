package main

// Tests of the groups admin pages (groups_admin.go) and the client form's allow-list.

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestAdminGroupPages: creating, editing and deleting groups on the pages, with CSRF, the
// confirmation page naming the apps, and administrators only.
func TestAdminGroupPages(t *testing.T) {
	ts := newTestServer(t)
	ts.addAdmin("root", "the admin password")
	ts.addUser("alice", "correct horse battery")
	ts.addUser("bob", "bob's password!")
	alice := ts.browser("alice", "correct horse battery")
	alice.login()
	for _, path := range []string{"/admin/groups", "/admin/groups/x", "/admin/users/bob"} {
		if p := alice.get(path); p.StatusCode != http.StatusForbidden {
			t.Errorf("a non-admin GET %s = %d; want 403", path, p.StatusCode)
		}
	}
	root := ts.browser("root", "the admin password")
	root.login()
	p := root.get("/admin/groups")
	csrf := hidden(p.Body, "csrf_token")
	if p.StatusCode != 200 || !strings.Contains(p.Body, "No groups yet") || !strings.Contains(p.Body, `href="/admin/groups"`) {
		t.Fatalf("/admin/groups = %d %s", p.StatusCode, p.Body)
	}
	if r := alice.post("/admin/groups", url.Values{"csrf_token": {hidden(alice.get("/").Body, "csrf_token")}, "name": {"x"}}); r.StatusCode != http.StatusForbidden {
		t.Errorf("a non-admin creating a group = %d", r.StatusCode)
	}
	for _, tt := range []struct {
		form url.Values
		code int
		want string
	}{
		{url.Values{"name": {"family"}}, 403, "security token"},
		{url.Values{"csrf_token": {csrf}, "name": {"family"}, "description": {"Parents and kids"}}, 200, "Group family created."},
		{url.Values{"csrf_token": {csrf}, "name": {"Family"}}, 409, "already exists"},
		{url.Values{"csrf_token": {csrf}, "name": {"no spaces"}}, 400, "letters, digits"},
		{url.Values{"csrf_token": {csrf}, "name": {"admins"}}, 200, "Group admins created."},
	} {
		r := root.post("/admin/groups", tt.form)
		if r.StatusCode != tt.code || !strings.Contains(r.Body, tt.want) {
			t.Errorf("POST /admin/groups %v = %d; want %d with %q", tt.form, r.StatusCode, tt.code, tt.want)
		}
	}
	act := func(group, action string, form url.Values) page {
		form.Set("csrf_token", csrf)
		return root.post("/admin/groups/"+group+"/"+action, form)
	}
	if r := act("family", "add-member", url.Values{"username": {"alice"}}); r.StatusCode != 200 || !strings.Contains(r.Body, "alice is now a member") {
		t.Errorf("add-member = %d %s", r.StatusCode, r.Body)
	}
	if r := act("family", "add-member", url.Values{"username": {"ghost"}}); r.StatusCode != 400 || !strings.Contains(r.Body, "no user named") {
		t.Errorf("add-member ghost = %d", r.StatusCode)
	}
	act("family", "add-member", url.Values{"username": {"bob"}})
	if r := act("family", "remove-member", url.Values{"username": {"bob"}}); r.StatusCode != 200 || !strings.Contains(r.Body, "bob is no longer a member") {
		t.Errorf("remove-member = %d %s", r.StatusCode, r.Body)
	}
	if r := act("family", "describe", url.Values{"description": {"Everyone at home"}}); r.StatusCode != 200 || !strings.Contains(r.Body, "Everyone at home") {
		t.Errorf("describe = %d", r.StatusCode)
	}
	if r := act("family", "claim", url.Values{"claim_name": {"quota"}, "claim_value": {`{"gb": 50}`}}); r.StatusCode != 200 || !strings.Contains(r.Body, `{&#34;gb&#34;:50}`) {
		t.Errorf("claim = %d %s", r.StatusCode, r.Body)
	}
	if r := act("family", "claim", url.Values{"claim_name": {"nonce"}, "claim_value": {`1`}}); r.StatusCode != 400 || !strings.Contains(r.Body, "reserved") {
		t.Errorf("a reserved claim on the page = %d", r.StatusCode)
	}
	if r := act("family", "claim", url.Values{"claim_name": {"dept"}, "claim_value": {`Sales`}}); r.StatusCode != 400 || !strings.Contains(r.Body, "not JSON") ||
		!strings.Contains(r.Body, `value="dept"`) {
		t.Errorf("a non-JSON value on the page = %d (the form must be echoed)", r.StatusCode)
	}
	if r := act("family", "claim", url.Values{"remove": {"quota"}}); r.StatusCode != 200 || strings.Contains(r.Body, "gb") {
		t.Errorf("claim remove = %d", r.StatusCode)
	}
	if r := act("family", "add-member", url.Values{}); r.StatusCode != 403 && r.StatusCode != 400 {
		t.Errorf("add-member without a name = %d", r.StatusCode)
	}
	if r := root.post("/admin/groups/family/add-member", url.Values{"username": {"bob"}}); r.StatusCode != 403 {
		t.Errorf("add-member without csrf_token = %d", r.StatusCode)
	}
	if r := act("nosuch", "describe", url.Values{}); r.StatusCode != 404 {
		t.Errorf("an unknown group = %d", r.StatusCode)
	}
	p = root.get("/admin/groups/family")
	if !strings.Contains(p.Body, `href="/admin/users/alice"`) || !strings.Contains(p.Body, `<option value="bob">`) {
		t.Errorf("the group page lacks its member or the suggestions: %s", p.Body)
	}

	// The allow-list on the client edit page (administrators only).
	c := ts.addClient(false, "read", "https://grafana.example/cb")
	ts.s.store.db.Exec("UPDATE clients SET name = 'Grafana' WHERE id = ?", c.ID)
	other := ts.addClient(false, "read", "https://photos.example/cb")
	ts.s.store.db.Exec("UPDATE clients SET name = 'Photos' WHERE id = ?", other.ID)
	ts.s.store.cache.flush()
	edit := root.get("/oauth/client/" + c.ID + "/edit")
	if !strings.Contains(edit.Body, `name="allow:family"`) || !strings.Contains(edit.Body, `name="allow:admins"`) {
		t.Fatalf("the edit page has no allow-list for an admin: %s", edit.Body)
	}
	form := url.Values{"csrf_token": {hidden(edit.Body, "csrf_token")}, "name": {"Grafana"}, "redirect_uris": {"https://grafana.example/cb"},
		"scope": {"read"}, "allow:family": {"on"}, "allow:admins": {"on"}, "grant_code": {"on"}}
	if r := root.post("/oauth/client/"+c.ID+"/edit", form); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("saving the allow-list = %d %s", r.StatusCode, r.Body)
	}
	if got, _ := ts.s.store.clientByID(context.Background(), c.ID); !slices.Equal(got.AllowGroups, []string{"admins", "family"}) {
		t.Errorf("allow-list after the edit = %v", got.AllowGroups)
	}
	ts.s.store.setClientGroups(context.Background(), other.ID, []string{"family"})
	// An owner who is not an admin can neither restrict nor widen their app.
	ts.s.store.db.Exec("UPDATE clients SET owner_id = (SELECT id FROM users WHERE username = 'alice') WHERE id = ?", c.ID)
	ts.s.store.cache.flush()
	edit = alice.get("/oauth/client/" + c.ID + "/edit")
	if strings.Contains(edit.Body, `name="allow:`) || !strings.Contains(edit.Body, "Only members of admins, family may sign in") {
		t.Errorf("the owner's edit page: %s", edit.Body)
	}
	form.Set("csrf_token", hidden(edit.Body, "csrf_token"))
	form.Del("allow:family")
	form.Del("allow:admins")
	if r := alice.post("/oauth/client/"+c.ID+"/edit", form); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("the owner's save = %d", r.StatusCode)
	}
	if got, _ := ts.s.store.clientByID(context.Background(), c.ID); !slices.Equal(got.AllowGroups, []string{"admins", "family"}) {
		t.Errorf("the owner's save changed the allow-list to %v", got.AllowGroups)
	}

	// Deleting: a confirmation page naming the apps, with what happens to each.
	confirm := root.get("/admin/groups/family/delete")
	if confirm.StatusCode != 200 || !strings.Contains(confirm.Body, "Grafana") || !strings.Contains(confirm.Body, "still open to members of admins") ||
		!strings.Contains(confirm.Body, "Photos") || !strings.Contains(confirm.Body, "becomes open to every user") || !strings.Contains(confirm.Body, `class="danger"`) {
		t.Errorf("the delete confirmation = %d %s", confirm.StatusCode, confirm.Body)
	}
	if ts.count("groups", "name = 'family'") != 1 {
		t.Fatal("the confirmation page deleted the group")
	}
	if r := root.post("/admin/groups/family/delete", url.Values{}); r.StatusCode != 403 {
		t.Errorf("delete without csrf_token = %d", r.StatusCode)
	}
	r := root.post("/admin/groups/family/delete", url.Values{"csrf_token": {hidden(confirm.Body, "csrf_token")}})
	if r.StatusCode != 200 || !strings.Contains(r.Body, "Group family deleted.") || !strings.Contains(r.Body, "Photos, which is now open to every user") {
		t.Errorf("delete = %d %s", r.StatusCode, r.Body)
	}
	if ts.count("groups", "name = 'family'") != 0 || ts.count("client_groups", "1") != 1 {
		t.Error("the group or its allow-list entries survived")
	}
}

// TestAdminUserPage: an administrator changes a user's name, email, verified flag, role and
// groups on one form, and their claims; the last administrator keeps the role.
func TestAdminUserPage(t *testing.T) {
	ts := newTestServer(t)
	ts.addAdmin("root", "the admin password")
	alice := ts.addUser("alice", "correct horse battery")
	ts.s.store.setProfile(context.Background(), alice.ID, "Alice", "alice@example.org", 1) // unverified, as /account leaves it
	ts.mustCLI("group", "add", "family", "-description", "Parents and kids")
	ts.mustCLI("group", "add", "admins")
	ts.mustCLI("group", "add-member", "admins", "alice")
	root := ts.browser("root", "the admin password")
	root.login()
	list := root.get("/admin/users")
	if !strings.Contains(list.Body, `href="/admin/users/alice"`) || !strings.Contains(list.Body, `<td data-label="Groups">admins</td>`) {
		t.Errorf("the users list lacks the link or the groups: %s", list.Body)
	}
	p := root.get("/admin/users/alice")
	if p.StatusCode != 200 || !strings.Contains(p.Body, `name="group:admins" checked`) || strings.Contains(p.Body, `name="group:family" checked`) ||
		strings.Contains(p.Body, `name="email_verified" checked`) {
		t.Fatalf("the user page = %d %s", p.StatusCode, p.Body)
	}
	csrf := hidden(p.Body, "csrf_token")
	save := func(b *browser, name string, form url.Values) page {
		form.Set("csrf_token", csrf)
		return b.post("/admin/users/"+name+"/edit", form)
	}
	r := save(root, "alice", url.Values{"name": {"Alice Example"}, "email": {"alice@example.org"}, "email_verified": {"on"}, "group:family": {"on"}})
	if r.StatusCode != 200 || !strings.Contains(r.Body, "Saved.") {
		t.Fatalf("save = %d %s", r.StatusCode, r.Body)
	}
	u, _ := ts.s.store.userByName(context.Background(), "alice")
	acc, _ := ts.s.store.loadAccess(context.Background(), u.ID)
	if u.Name != "Alice Example" || !u.EmailVerified || u.Admin || !slices.Equal(acc.Groups, []string{"family"}) {
		t.Errorf("after the save: %+v in %v", u, acc.Groups)
	}
	if r := save(root, "alice", url.Values{"email": {"nope"}}); r.StatusCode != 400 || !strings.Contains(r.Body, "not valid") {
		t.Errorf("an invalid email = %d", r.StatusCode)
	}
	if r := root.post("/admin/users/alice/edit", url.Values{"name": {"x"}}); r.StatusCode != 403 {
		t.Errorf("save without csrf_token = %d", r.StatusCode)
	}
	if r := save(root, "ghost", url.Values{}); r.StatusCode != 404 {
		t.Errorf("an unknown user = %d", r.StatusCode)
	}
	// The last administrator cannot remove their own role; with another admin, they can.
	if r := save(root, "root", url.Values{}); r.StatusCode != 400 || !strings.Contains(r.Body, "last enabled administrator") {
		t.Errorf("the last admin removing their role = %d %s", r.StatusCode, r.Body)
	}
	if u, _ := ts.s.store.userByName(context.Background(), "root"); !u.Admin {
		t.Error("the last admin lost the role")
	}
	save(root, "alice", url.Values{"admin": {"on"}, "group:family": {"on"}})
	if r := save(root, "root", url.Values{}); r.StatusCode != 200 || !strings.Contains(r.Body, "no longer an administrator") {
		t.Errorf("an admin removing their own role with another admin left = %d %s", r.StatusCode, r.Body)
	}
	if p := root.get("/admin/users"); p.StatusCode != http.StatusForbidden {
		t.Errorf("a former admin on /admin/users = %d", p.StatusCode)
	}
	// Claims on the user page.
	ab := ts.browser("alice", "correct horse battery")
	ab.login()
	p = ab.get("/admin/users/alice")
	csrf = hidden(p.Body, "csrf_token")
	cl := func(form url.Values) page {
		form.Set("csrf_token", csrf)
		return ab.post("/admin/users/alice/claims", form)
	}
	if r := cl(url.Values{"claim_name": {"locale"}, "claim_value": {`"fr-CA"`}}); r.StatusCode != 200 || !strings.Contains(r.Body, "fr-CA") {
		t.Errorf("setting a claim on the page = %d", r.StatusCode)
	}
	if r := cl(url.Values{"claim_name": {"sid"}, "claim_value": {`"x"`}}); r.StatusCode != 400 || !strings.Contains(r.Body, "reserved") {
		t.Errorf("a reserved claim on the user page = %d", r.StatusCode)
	}
	if r := cl(url.Values{"claim_name": {"big"}, "claim_value": {`"` + strings.Repeat("x", 1100) + `"`}}); r.StatusCode != 400 || !strings.Contains(r.Body, "at most 1024") {
		t.Errorf("a too-large claim on the page = %d", r.StatusCode)
	}
	if r := cl(url.Values{"remove": {"locale"}}); r.StatusCode != 200 || strings.Contains(r.Body, "fr-CA") {
		t.Errorf("removing a claim on the page = %d", r.StatusCode)
	}
}
