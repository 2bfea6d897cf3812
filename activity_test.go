package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestActivity: sign-ins (and failures), consents, revocations, administrator actions and
// registrations appear on /admin/activity, filterable by user and app, for administrators
// only, never with a secret; old events are purged after -event-retention.
func TestActivity(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.Registration = registrationOpen })
	ts.addAdmin("root", "the admin password")
	ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	ts.browser("alice", "a wrong password").login()
	b := ts.browser("alice", "correct horse battery")
	code, ver := b.getCode(c)
	ts.exchange(c, code, ver)
	cp := b.get("/oauth/client/connections/" + c.ID + "/revoke")
	b.post("/oauth/client/connections/"+c.ID+"/revoke", url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}})
	ts.postJSON("POST", "/oauth/register", "", map[string]any{"client_name": "Inspector", "redirect_uris": []string{"http://127.0.0.1:1/cb"}, "token_endpoint_auth_method": "none"})
	root := ts.browser("root", "the admin password")
	root.login()
	up := root.get("/admin/users")
	root.post("/admin/users/invite", url.Values{"csrf_token": {hidden(up.Body, "csrf_token")}})

	p := root.get("/admin/activity")
	for _, want := range []string{"sign-in failed", "wrong password", "sign-in", "consent", "allow: read", "revocation", "registration", "Inspector", "created an invitation", "127.0.0.1"} {
		if !strings.Contains(p.Body, want) {
			t.Errorf("the activity page lacks %q", want)
		}
	}
	if f := root.get("/admin/activity?user=root"); strings.Contains(f.Body, "revocation") || !strings.Contains(f.Body, "created an invitation") {
		t.Error("the user filter does not filter")
	}
	if f := root.get("/admin/activity?app=" + c.ID); !strings.Contains(f.Body, "revocation") || strings.Contains(f.Body, "created an invitation") {
		t.Error("the app filter does not filter")
	}
	if f := b.get("/admin/activity"); f.StatusCode != http.StatusForbidden {
		t.Errorf("a user's /admin/activity = %d", f.StatusCode)
	}
	var dump string
	ts.s.store.db.QueryRow("SELECT group_concat(kind || username || client_id || ip || browser || detail, '|') FROM events").Scan(&dump)
	for _, secret := range []string{"correct horse battery", "a wrong password", "the admin password", c.Secret, code} {
		if strings.Contains(dump, secret) {
			t.Fatalf("an event holds a secret: %q", dump)
		}
	}
	// Retention: the purge drops what is older.
	ts.clock.Advance(31 * 24 * time.Hour)
	if err := ts.s.store.purgeEvents(context.Background(), ts.s.now().Add(-ts.s.cfg.EventRetention).Unix()); err != nil {
		t.Fatal(err)
	}
	var n int
	ts.s.store.db.QueryRow("SELECT count(*) FROM events").Scan(&n)
	if n != 0 {
		t.Errorf("%d events survive the retention", n)
	}
	for in, want := range map[string]time.Duration{"30d": 30 * 24 * time.Hour, "1d": 24 * time.Hour, "720h": 720 * time.Hour} {
		if d, err := parseRetention(in); err != nil || d != want {
			t.Errorf("parseRetention(%q) = %v, %v", in, d, err)
		}
	}
	for _, bad := range []string{"0d", "x", "10m", "-1d", "99999d"} {
		if _, err := parseRetention(bad); err == nil {
			t.Errorf("parseRetention(%q) accepted", bad)
		}
	}
	if code, _, errs := cli(t, nil, "", "-event-retention", "soon"); code != 2 || !strings.Contains(errs, "-event-retention") {
		t.Errorf("-event-retention soon = %d %q", code, errs)
	}
}
