package main

// Tests of an issuer with a path (prefix.go) across every page: each link, form, script and
// redirect a signed-in administrator can reach stays under the issuer's path.

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestIssuerPathEveryPage crawls the pages an administrator reaches from the home page under
// -issuer …/auth: every oauthd URL a page names (href, action, src) and every redirect it
// answers with starts with /auth/, and each of those pages answers 200.
func TestIssuerPathEveryPage(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.Issuer += "/auth" })
	ts.addAdmin("root", "correct horse battery")
	alice := ts.addUser("alice", "correct horse battery")
	c := ts.addClient(false, "read", "https://app.example/cb")
	ts.addResource("https://mcp.example.com/mcp", "Notes MCP", "notes:read", false, 0)
	ctx := context.Background()
	if err := ts.s.store.createGroup(ctx, group{Name: "family", Description: "Parents and kids", CreatedAt: ts.clock.Now().Unix()}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.s.store.addMembers(ctx, "family", []string{alice.Username}); err != nil {
		t.Fatal(err)
	}
	b := ts.browser("root", "correct horse battery")
	lp := b.get("/auth/login")
	p := b.post("/auth/login", url.Values{"username": {"root"}, "password": {"correct horse battery"}, "csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {"/"}})
	if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/auth/" {
		t.Fatalf("login = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	attr := regexp.MustCompile(`(?:href|action|src)="([^"]*)"`)
	seen := map[string]bool{}
	queue := []string{"/auth/", "/auth/oauth/client/" + url.PathEscape(c.ID) + "/edit"}
	for len(queue) > 0 && len(seen) < 80 {
		u := queue[0]
		queue = queue[1:]
		if seen[u] {
			continue
		}
		seen[u] = true
		p := b.get(u)
		if p.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d %q", u, p.StatusCode, p.Header.Get("Location"))
			continue
		}
		for _, m := range attr.FindAllStringSubmatch(p.Body, -1) {
			link := html.UnescapeString(m[1])
			if !strings.HasPrefix(link, "/") {
				continue // another site, or a fragment
			}
			if !strings.HasPrefix(link, "/auth/") && link != "/auth" {
				t.Errorf("%s names %q, outside the issuer's path", u, link)
				continue
			}
			// Follow links to pages; never the sign-out or the links that act.
			if strings.HasPrefix(m[0], "href") && !strings.Contains(link, "logout") && !strings.Contains(link, "/static/") && !strings.Contains(link, "favicon") &&
				!strings.Contains(link, "/download") {
				queue = append(queue, link)
			}
		}
	}
	// A path the mux cleans is redirected under the issuer's path too.
	if p := b.get("/auth//account"); p.StatusCode != http.StatusMovedPermanently || p.Header.Get("Location") != "/auth/account" {
		t.Errorf("GET /auth//account = %d %q; want 301 to /auth/account", p.StatusCode, p.Header.Get("Location"))
	}
	for _, must := range []string{"/auth/account", "/auth/account/security", "/auth/admin/users", "/auth/admin/groups", "/auth/admin/resources",
		"/auth/admin/activity", "/auth/oauth/client/list", "/auth/oauth/client/connections", "/auth/admin/groups/family", "/auth/admin/users/alice"} {
		if !seen[must] {
			t.Errorf("the crawl never reached %s (reached %d pages)", must, len(seen))
		}
	}

	// A form that changes something answers with a redirect under the path, whose notice
	// shows on the page it names; a confirmation page posts under the path too.
	ap := b.get("/auth/account")
	p = b.post("/auth/account", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}, "name": {"Root"}, "email": {"root@example.com"}})
	if loc := p.Header.Get("Location"); p.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/auth/account") {
		t.Errorf("saving the account = %d %q", p.StatusCode, loc)
	}
	cp := b.get("/auth/admin/resources/delete?uri=" + url.QueryEscape("https://mcp.example.com/mcp"))
	action := html.UnescapeString(between(cp.Body, `<form method="post" action="`, `"`))
	if !strings.HasPrefix(action, "/auth/admin/resources/delete?") || !strings.Contains(cp.Body, `href="/auth/admin/resources"`) {
		t.Fatalf("confirmation page: action %q, body %s", action, cp.Body)
	}
	p = b.post(action, url.Values{"csrf_token": {hidden(cp.Body, "csrf_token")}})
	if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/auth/admin/resources" {
		t.Fatalf("deleting the resource = %d %q", p.StatusCode, p.Header.Get("Location"))
	}
	if p := b.get("/auth/admin/resources"); !strings.Contains(p.Body, "is deleted") {
		t.Errorf("the notice after deleting is missing: %s", p.Body)
	}
}
