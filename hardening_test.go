package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// loginAs posts the login form from a fresh browser and returns the answer.
func (ts *testServer) loginAs(user, pass, from string) page {
	ts.t.Helper()
	b := ts.browser(user, pass)
	lp := b.get("/login")
	req, _ := http.NewRequest("POST", ts.url+"/login", strings.NewReader(url.Values{"username": {user}, "password": {pass},
		"csrf_token": {hidden(lp.Body, "csrf_token")}, "next": {"/"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", ts.url)
	if from != "" {
		req.Header.Set("X-Forwarded-For", from)
	}
	return b.do(req)
}

// TestLoginBackoff: failed sign-ins are throttled per account, then per source address, with a
// clear page and Retry-After; the wait doubles, and time (or success) clears it.
func TestLoginBackoff(t *testing.T) {
	ts := newTestServer(t, func(c *config) { c.TrustedProxy = "127.0.0.1/32, ::1" })
	ts.addUser("alice", "correct horse battery")
	for i := range 5 {
		if p := ts.loginAs("alice", "wrong", "203.0.113.1"); p.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d = %d", i+1, p.StatusCode)
		}
	}
	// The sixth failure starts the backoff; from then on even the right password waits.
	ts.loginAs("Alice", "wrong", "203.0.113.2") // the account, whatever its case and address
	p := ts.loginAs("alice", "correct horse battery", "203.0.113.3")
	if p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") != "1" || !strings.Contains(p.Body, "Too many failed sign-ins") {
		t.Fatalf("sign-in during the backoff = %d Retry-After %q", p.StatusCode, p.Header.Get("Retry-After"))
	}
	ts.clock.Advance(time.Second)
	ts.loginAs("alice", "wrong", "203.0.113.3")
	if p := ts.loginAs("alice", "correct horse battery", "203.0.113.3"); p.Header.Get("Retry-After") != "2" {
		t.Fatalf("the second wait = %d Retry-After %q; want 2 s", p.StatusCode, p.Header.Get("Retry-After"))
	}
	ts.clock.Advance(2 * time.Second)
	if p := ts.loginAs("alice", "correct horse battery", "203.0.113.3"); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in after the wait = %d", p.StatusCode)
	}
	// Success cleared the account: one more failure costs nothing.
	if p := ts.loginAs("alice", "wrong", "203.0.113.4"); p.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a failure after success = %d", p.StatusCode)
	}

	// One address guessing across many accounts: 20 free failures, then it waits.
	for i := range 21 {
		ts.loginAs("user"+strconv.Itoa(i), "guess", "198.51.100.9")
	}
	p = ts.loginAs("alice", "correct horse battery", "198.51.100.9")
	if p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" {
		t.Fatalf("an address past its failures = %d", p.StatusCode)
	}
	if p := ts.loginAs("alice", "correct horse battery", "198.51.100.10"); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("another address = %d", p.StatusCode)
	}
	// Without a trusted proxy, X-Forwarded-For is ignored: every request above came from
	// 127.0.0.1, which now had more than 20 failures.
	ts2 := newTestServer(t)
	ts2.addUser("bob", "correct horse battery")
	for i := range 21 {
		ts2.loginAs("user"+strconv.Itoa(i), "guess", "192.0.2."+strconv.Itoa(i))
	}
	if p := ts2.loginAs("bob", "correct horse battery", "192.0.2.200"); p.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a spoofed X-Forwarded-For without -trusted-proxy escaped the limit: %d", p.StatusCode)
	}
}

// TestHashingBound: password checks run under a concurrency bound; excess gets 429.
func TestHashingBound(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", "correct horse battery")
	ts.s.guard.hashWait = 50 * time.Millisecond
	for range cap(ts.s.guard.hashing) { // every slot busy
		ts.s.guard.hashing <- struct{}{}
	}
	p := ts.loginAs("alice", "correct horse battery", "")
	if p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") != "1" || !strings.Contains(p.Body, "many passwords") {
		t.Fatalf("a sign-in with every hashing slot taken = %d %q", p.StatusCode, p.Header.Get("Retry-After"))
	}
	<-ts.s.guard.hashing
	if p := ts.loginAs("alice", "correct horse battery", ""); p.StatusCode != http.StatusSeeOther {
		t.Fatalf("a sign-in with a free slot = %d", p.StatusCode)
	}
	// Forms that set passwords hash too, under the same bound.
	ts.addAdmin("root", "the admin password")
	b := ts.browser("root", "the admin password")
	b.login()
	ts.s.guard.hashing <- struct{}{}
	ap := b.get("/admin/users")
	res := b.post("/admin/users", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}, "username": {"carol"}, "password": {"correct horse battery"}})
	if res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("creating a user with every hashing slot taken = %d", res.StatusCode)
	}
	<-ts.s.guard.hashing
	res = b.post("/admin/users", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}, "username": {"carol"}, "password": {"correct horse battery"}})
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusSeeOther {
		t.Fatalf("creating a user with a free slot = %d", res.StatusCode)
	}
}

// TestClientAuthBackoff: failed client authentication is throttled per client_id at the
// token, introspection and revocation endpoints, as RFC 6749 JSON with Retry-After; only
// failures are throttled, so the right secret always works (client ids are public).
func TestClientAuthBackoff(t *testing.T) {
	ts := newTestServer(t)
	c := ts.addClient(false, "read", "https://app.example/cb")
	paths := []string{"/oauth/token", "/oauth/introspect", "/oauth/revoke"}
	form := url.Values{"grant_type": {"client_credentials"}, "token": {"x"}}
	for i := range 10 {
		r := ts.postToken(paths[i%3], form, c.ID, "wrong secret")
		if r.Status != http.StatusUnauthorized || str(r.JSON["error"]) != errInvalidClient {
			t.Fatalf("failure %d at %s = %d %s", i+1, paths[i%3], r.Status, r.Raw)
		}
	}
	for _, path := range paths {
		r := ts.postToken(path, form, c.ID, "wrong secret")
		if r.Status != http.StatusTooManyRequests || str(r.JSON["error"]) != errInvalidClient || r.Header.Get("Retry-After") != "1" ||
			!strings.Contains(str(r.JSON["error_description"]), "too many failed") {
			t.Fatalf("%s during the backoff = %d %s Retry-After %q", path, r.Status, r.Raw, r.Header.Get("Retry-After"))
		}
	}
	if r := ts.postToken("/oauth/introspect", form, c.ID, c.Secret); r.Status != 200 {
		t.Fatalf("the right secret during the backoff = %d %s", r.Status, r.Raw)
	}
	ts.clock.Advance(time.Second)
	if r := ts.postToken("/oauth/introspect", form, c.ID, "wrong secret"); r.Status != http.StatusUnauthorized {
		t.Fatalf("a failure after the wait = %d %s", r.Status, r.Raw)
	}
}

// TestLinkAttempts: wrong setup, invitation and reset tokens are limited per source address.
func TestLinkAttempts(t *testing.T) {
	ts := newTestServer(t)
	ts.s.newSetupToken()
	b := ts.browser("", "")
	for i := range 10 {
		path := []string{"/setup?token=", "/invite?token=", "/reset?token="}[i%3] + newSecret()
		if p := b.get(path); p.StatusCode != http.StatusForbidden {
			t.Fatalf("wrong link %d = %d", i+1, p.StatusCode)
		}
	}
	p := b.get("/setup?token=" + newSecret())
	if p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" || !strings.Contains(p.Body, "Too many wrong links") {
		t.Fatalf("a link after too many wrong ones = %d", p.StatusCode)
	}
}

// TestSourceAddr: X-Forwarded-For counts only from a trusted proxy, read right to left.
func TestSourceAddr(t *testing.T) {
	proxies, err := parseProxies("10.0.0.0/8, 192.0.2.1, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{guard: guards{proxies: proxies}}
	for _, tt := range []struct {
		remote string
		xff    []string
		want   string
	}{
		{"203.0.113.5:4000", nil, "203.0.113.5"},
		{"203.0.113.5:4000", []string{"1.1.1.1"}, "203.0.113.5"}, // not a proxy: header ignored
		{"10.1.2.3:4000", []string{"1.1.1.1"}, "1.1.1.1"},
		{"10.1.2.3:4000", []string{"6.6.6.6, 1.1.1.1, 10.9.9.9"}, "1.1.1.1"}, // the client cannot prepend its way out
		{"10.1.2.3:4000", []string{"6.6.6.6", "1.1.1.1"}, "1.1.1.1"},
		{"192.0.2.1:80", []string{"2001:db8::1"}, "2001:db8::1"},
		{"[fd00::1]:80", []string{"::ffff:198.51.100.7"}, "198.51.100.7"},
		{"10.1.2.3:4000", []string{"not-an-address"}, "10.1.2.3"},
		{"10.1.2.3:4000", nil, "10.1.2.3"},
	} {
		r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{"X-Forwarded-For": tt.xff}}
		if got := s.sourceAddr(r); got != tt.want {
			t.Errorf("sourceAddr(%s, %q) = %s; want %s", tt.remote, tt.xff, got, tt.want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "proxy.example", "1.2.3"} {
		if _, err := parseProxies(bad); err == nil {
			t.Errorf("parseProxies(%q) accepted", bad)
		}
	}
	if p, _ := parseProxies(" 127.0.0.1 ,"); len(p) != 1 || p[0] != netip.MustParsePrefix("127.0.0.1/32") {
		t.Errorf("parseProxies = %v", p)
	}
}

// TestBackoffBounded: an attacker cycling through names cannot grow the table without bound.
func TestBackoffBounded(t *testing.T) {
	b := newBackoff(1, time.Second, time.Minute, time.Hour)
	now := time.Unix(0, 0)
	for i := range maxBackoffKeys + 500 {
		b.fail(strconv.Itoa(i), now)
	}
	if len(b.m) > maxBackoffKeys {
		t.Fatalf("%d keys; bound %d", len(b.m), maxBackoffKeys)
	}
	long := strings.Repeat("x", 60<<10) // a 60 KiB username or client_id costs a short key
	b.fail(long, now)
	b.fail(long, now)
	for k := range b.m {
		if len(k) > 128 {
			t.Fatalf("a key of %d bytes is kept", len(k))
		}
	}
	if b.wait(long, now) == 0 {
		t.Fatal("the long key's failures were not counted")
	}
}

// TestSlowLoris: the shipped server sets every timeout; with them scaled down, raw TCP
// clients that trickle their headers or body, or hold an idle connection, are cut off.
func TestSlowLoris(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler(), slog.New(slog.NewTextHandler(io.Discard, nil)), defaultLimits)
	if srv.ReadHeaderTimeout == 0 || srv.ReadTimeout == 0 || srv.WriteTimeout == 0 || srv.IdleTimeout == 0 || srv.MaxHeaderBytes == 0 {
		t.Fatalf("the server leaves a limit unset: %+v", srv)
	}
	ts := newTestServer(t)
	limits := httpLimits{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond, Write: time.Second,
		Idle: 300 * time.Millisecond, MaxHeaderBytes: 4 << 10}
	srv = newHTTPServer(ts.s.routes(), ts.s.log, limits)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// cutOff sends start, then trickles a byte of more every 50 ms; the server must close the
	// connection within limit plus a margin.
	cutOff := func(name, start, more string, limit time.Duration) {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		began := time.Now()
		c.Write([]byte(start))
		closed := make(chan struct{})
		go func() {
			io.Copy(io.Discard, c) // returns when the server closes
			close(closed)
		}()
		for i := 0; ; i++ {
			select {
			case <-closed:
				if d := time.Since(began); d > limit+2*time.Second {
					t.Errorf("%s: cut off after %v; limit %v", name, d, limit)
				}
				return
			case <-time.After(50 * time.Millisecond):
			}
			if time.Since(began) > limit+5*time.Second {
				t.Fatalf("%s: the connection is still open after %v", name, time.Since(began))
			}
			if more != "" {
				c.Write([]byte{more[i%len(more)]})
			}
		}
	}
	cutOff("trickled headers", "GET /healthz HTTP/1.1\r\nHost: x\r\n", "X-Slow: aaaaaaaa\r\n", limits.ReadHeader)
	cutOff("trickled body", "POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n", "a", limits.Read)
	cutOff("idle keep-alive", "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\n\r\n", "", limits.ReadHeader+limits.Idle)

	// Oversized headers are refused, not buffered.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(status, "431") {
		t.Fatalf("a 64 KiB header = %q; want 431", status)
	}
}
