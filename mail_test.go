package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpServer is an SMTP server inside the test process: no mail leaves the machine.
type smtpServer struct {
	t        testing.TB
	ln       net.Listener
	tls      *tls.Config // nil: no STARTTLS offered
	implicit bool        // TLS from the first byte (smtps)
	user     string      // the AUTH PLAIN credentials it accepts
	pass     string

	mu       sync.Mutex
	messages []smtpMessage
}

// smtpMessage is one delivered message, with how it came.
type smtpMessage struct {
	From, To, Data string
	TLS, Authed    bool
}

// testCert makes a self-signed certificate for 127.0.0.1 and localhost, and a pool that trusts it.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// newSMTPServer starts the server on a loopback port; it stops with the test.
func newSMTPServer(t testing.TB, starttls, implicit bool) (*smtpServer, *x509.CertPool) {
	cert, pool := testCert(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &smtpServer{t: t, ln: ln, implicit: implicit, user: "oauthd", pass: "mail secret"}
	if starttls || implicit {
		srv.tls = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.serve(c)
		}
	}()
	return srv, pool
}

// serve speaks enough SMTP for net/smtp: EHLO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, QUIT.
func (srv *smtpServer) serve(c net.Conn) {
	defer func() { c.Close() }()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	secure := false
	if srv.implicit {
		c = tls.Server(c, srv.tls)
		secure = true
	}
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	say("220 test ESMTP")
	var msg smtpMessage
	authed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO", "HELO":
			ext := []string{"250-test", "250-8BITMIME"}
			if srv.tls != nil && !secure {
				ext = append(ext, "250-STARTTLS")
			}
			say(strings.Join(append(ext, "250 AUTH PLAIN"), "\r\n"))
		case "STARTTLS":
			say("220 go ahead")
			tc := tls.Server(c, srv.tls)
			if tc.Handshake() != nil {
				return
			}
			c, secure = tc, true
			r, w = bufio.NewReader(c), bufio.NewWriter(c)
		case "AUTH":
			f := strings.Fields(line)
			raw, _ := base64.StdEncoding.DecodeString(f[len(f)-1])
			if parts := strings.Split(string(raw), "\x00"); len(parts) == 3 && parts[1] == srv.user && parts[2] == srv.pass {
				authed = true
				say("235 ok")
			} else {
				say("535 bad credentials")
			}
		case "MAIL":
			from, _, _ := strings.Cut(strings.TrimPrefix(line, "MAIL FROM:<"), ">")
			msg = smtpMessage{From: from, TLS: secure, Authed: authed}
			say("250 ok")
		case "RCPT":
			msg.To = strings.Trim(strings.TrimPrefix(line, "RCPT TO:"), "<>")
			say("250 ok")
		case "DATA":
			say("354 go ahead")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			msg.Data = data.String()
			srv.mu.Lock()
			srv.messages = append(srv.messages, msg)
			srv.mu.Unlock()
			say("250 queued")
		case "QUIT":
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

// sent returns the messages delivered so far.
func (srv *smtpServer) sent() []smtpMessage {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return append([]smtpMessage(nil), srv.messages...)
}

func TestParseMailer(t *testing.T) {
	for _, tt := range []struct {
		url, pass, from string
		wantErr         string
		addr            string
		implicit        bool
	}{
		{"smtp://oauthd@mail.example.com:587", "pw", "oauthd@example.com", "", "mail.example.com:587", false},
		{"smtps://oauthd@mail.example.com", "pw", "Family Cloud <oauthd@example.com>", "", "mail.example.com:465", true},
		{"smtp://127.0.0.1:2525", "", "oauthd@example.com", "", "127.0.0.1:2525", false},
		{"smtp://oauthd@mail.example.com", "", "oauthd@example.com", "OAUTHD_SMTP_PASSWORD", "", false},
		{"smtp://oauthd:secret@mail.example.com", "", "oauthd@example.com", "not in the URL", "", false},
		{"http://mail.example.com", "", "oauthd@example.com", "want smtp://", "", false},
		{"smtp://mail.example.com", "", "", "-mail-from", "", false},
		{"smtp://mail.example.com", "", "a@b\r\nBcc: x@y", "-mail-from", "", false},
	} {
		m, err := parseMailer(tt.url, tt.pass, tt.from)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseMailer(%q) = %v; want an error about %s", tt.url, err, tt.wantErr)
			}
			continue
		}
		if err != nil || m.addr != tt.addr || m.implicit != tt.implicit {
			t.Errorf("parseMailer(%q) = %+v, %v", tt.url, m, err)
		}
	}
}

func TestMailSend(t *testing.T) {
	ctx := context.Background()
	t.Run("STARTTLS and AUTH", func(t *testing.T) {
		srv, pool := newSMTPServer(t, true, false)
		m, err := parseMailer("smtp://oauthd@"+srv.ln.Addr().String(), "mail secret", "Family Cloud <oauthd@example.com>")
		if err != nil {
			t.Fatal(err)
		}
		m.tls = &tls.Config{RootCAs: pool}
		if err := m.send(ctx, "alice@example.org", "Réinitialiser ton mot de passe", "Follow this link:\nhttps://id.example.com/reset?token=abc"); err != nil {
			t.Fatal(err)
		}
		got := srv.sent()
		if len(got) != 1 || !got[0].TLS || !got[0].Authed || got[0].To != "alice@example.org" || got[0].From != "oauthd@example.com" {
			t.Fatalf("delivered %+v", got)
		}
		for _, want := range []string{"Subject: =?utf-8?q?R=C3=A9initialiser", "To: alice@example.org\r\n", "https://id.example.com/reset?token=3Dabc", "Content-Type: text/plain; charset=utf-8"} {
			if !strings.Contains(got[0].Data, want) {
				t.Errorf("message lacks %q:\n%s", want, got[0].Data)
			}
		}
	})
	t.Run("smtps", func(t *testing.T) {
		srv, pool := newSMTPServer(t, false, true)
		m, _ := parseMailer("smtps://oauthd@"+srv.ln.Addr().String(), "mail secret", "oauthd@example.com")
		m.tls = &tls.Config{RootCAs: pool}
		if err := m.send(ctx, "bob@example.org", "Hi", "text"); err != nil {
			t.Fatal(err)
		}
		if got := srv.sent(); len(got) != 1 || !got[0].TLS || !got[0].Authed {
			t.Fatalf("delivered %+v", got)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		srv, pool := newSMTPServer(t, true, false)
		m, _ := parseMailer("smtp://oauthd@"+srv.ln.Addr().String(), "wrong", "oauthd@example.com")
		m.tls = &tls.Config{RootCAs: pool}
		if err := m.send(ctx, "bob@example.org", "Hi", "text"); err == nil || !strings.Contains(err.Error(), "AUTH") {
			t.Fatalf("send with a wrong password = %v", err)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		srv, _ := newSMTPServer(t, true, false)
		m, _ := parseMailer("smtp://oauthd@"+srv.ln.Addr().String(), "mail secret", "oauthd@example.com")
		if err := m.send(ctx, "bob@example.org", "Hi", "text"); err == nil || !strings.Contains(err.Error(), "STARTTLS") || len(srv.sent()) != 0 {
			t.Fatalf("send to a server with an untrusted certificate = %v", err)
		}
	})
	t.Run("no STARTTLS", func(t *testing.T) {
		// Loopback without STARTTLS is allowed (a local relay); a remote one is not.
		srv, _ := newSMTPServer(t, false, false)
		m, _ := parseMailer("smtp://"+srv.ln.Addr().String(), "", "oauthd@example.com")
		if err := m.send(ctx, "bob@example.org", "Hi", "text"); err != nil || len(srv.sent()) != 1 {
			t.Fatalf("send to a loopback relay = %v", err)
		}
		_, port, _ := net.SplitHostPort(srv.ln.Addr().String())
		m.host, m.addr = "localhost.example", "127.0.0.1:"+port // a name that is not loopback
		if err := m.send(ctx, "bob@example.org", "Hi", "text"); err == nil || !strings.Contains(err.Error(), "does not offer STARTTLS") {
			t.Fatalf("send in the clear to a remote host = %v", err)
		}
	})
	t.Run("header injection", func(t *testing.T) {
		m, _ := parseMailer("smtp://127.0.0.1:1", "", "oauthd@example.com")
		for _, to := range []string{"bob@example.org\r\nBcc: eve@example.org", "Bob <bob@example.org>", "not an address"} {
			if _, err := m.message(to, "Hi", "x", time.Now()); err == nil {
				t.Errorf("message to %q accepted", to)
			}
		}
		if _, err := m.message("bob@example.org", "Hi\r\nBcc: eve@example.org", "x", time.Now()); err == nil {
			t.Error("a subject with a line break accepted")
		}
	})
}

// waitMail waits (bounded) until the SMTP server holds n messages.
func (srv *smtpServer) waitMail(t *testing.T, n int) []smtpMessage {
	t.Helper()
	for range 100 {
		if got := srv.sent(); len(got) >= n {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%d messages delivered; want %d", len(srv.sent()), n)
	return nil
}

// mailedLink finds the link to path in a delivered message (quoted-printable decoded).
func mailedLink(t *testing.T, m smtpMessage, path string) string {
	t.Helper()
	body := strings.ReplaceAll(strings.ReplaceAll(m.Data, "=\r\n", ""), "=3D", "=")
	i := strings.Index(body, path+"?token=")
	if i < 0 {
		t.Fatalf("no %s link in:\n%s", path, m.Data)
	}
	end := strings.IndexAny(body[i:], "\r\n ")
	return body[i : i+end]
}

// TestMailFlows: with -smtp, forgotten passwords, email verification and invitations go by
// mail (to an SMTP server in this process); the forgot page never tells whether an account
// exists; without -smtp the pages say links are passed on by hand.
func TestMailFlows(t *testing.T) {
	srv, _ := newSMTPServer(t, false, false)
	ts := newTestServer(t, func(c *config) {
		c.SMTP = "smtp://" + srv.ln.Addr().String()
		c.MailFrom = "id@example.com"
		c.Name = "Family Cloud"
	})
	ts.addUser("alice", "correct horse battery")
	ts.s.store.db.Exec("UPDATE users SET email = 'alice@example.org', email_verified = 1 WHERE username = 'alice'")
	ts.s.store.cache.flush()
	anon := ts.browser("", "")
	forgot := func(who string) page {
		fp := anon.get("/forgot")
		return anon.post("/forgot", url.Values{"csrf_token": {hidden(fp.Body, "csrf_token")}, "who": {who}})
	}
	known, unknown := forgot("alice"), forgot("nobody")
	if known.StatusCode != 200 || unknown.StatusCode != 200 || !strings.Contains(known.Body, "If an account") ||
		strings.ReplaceAll(known.Body, "nobody", "") != strings.ReplaceAll(unknown.Body, "nobody", "") {
		t.Fatalf("forgot: known %d, unknown %d; the answers must be the same", known.StatusCode, unknown.StatusCode)
	}
	msgs := srv.waitMail(t, 1)
	if msgs[0].To != "alice@example.org" || !strings.Contains(msgs[0].Data, "Family Cloud") {
		t.Fatalf("reset mail: %+v", msgs[0])
	}
	link := mailedLink(t, msgs[0], "/reset")
	rp := anon.get(link[strings.Index(link, "/reset"):])
	if rp.StatusCode != 200 || !strings.Contains(rp.Body, `name="password2"`) {
		t.Fatalf("the mailed reset link = %d", rp.StatusCode)
	}
	// By email address too; limited per account (3 mails an hour), silently: the answer
	// must not tell that the account exists.
	forgot("alice@example.org")
	forgot("ALICE")
	if p := forgot("alice"); p.StatusCode != 200 || !strings.Contains(p.Body, "If an account") {
		t.Errorf("a fourth reset request for one account within the hour = %d", p.StatusCode)
	}
	srv.waitMail(t, 3)
	time.Sleep(100 * time.Millisecond)
	if n := len(srv.sent()); n != 3 {
		t.Errorf("%d reset mails for one account within the hour; want 3", n)
	}

	// Verification: a new email is verified only once its link is followed.
	b := ts.browser("alice", "correct horse battery")
	b.login()
	ap := b.get("/account")
	b.post("/account", url.Values{"csrf_token": {hidden(ap.Body, "csrf_token")}, "name": {"Alice"}, "email": {"alice@new.example"}})
	if p := b.get("/account"); !strings.Contains(p.Body, "is on its way") {
		t.Error("the account page does not say a verification link was sent")
	}
	msgs = srv.waitMail(t, 4)
	if u, _ := ts.s.store.userByName(context.Background(), "alice"); u.EmailVerified || u.Email != "alice@new.example" {
		t.Fatalf("before the link: %+v", u)
	}
	vl := mailedLink(t, msgs[3], "/verify")
	if p := anon.get(vl[strings.Index(vl, "/verify"):]); p.StatusCode != 200 || !strings.Contains(p.Body, "Email verified") {
		t.Fatalf("the verification link = %d %s", p.StatusCode, p.Body)
	}
	if u, _ := ts.s.store.userByName(context.Background(), "alice"); !u.EmailVerified {
		t.Fatal("the email is not verified after its link")
	}
	if p := anon.get(vl[strings.Index(vl, "/verify"):]); p.StatusCode != http.StatusForbidden {
		t.Errorf("a verification link used twice = %d", p.StatusCode)
	}

	// Invitations by mail.
	ts.addAdmin("root", "the admin password")
	root := ts.browser("root", "the admin password")
	root.login()
	up := root.get("/admin/users")
	if p := root.post("/admin/users/invite", url.Values{"csrf_token": {hidden(up.Body, "csrf_token")}, "email": {"bob@example.org"}}); p.StatusCode != 200 || !strings.Contains(p.Body, "on its way to bob@example.org") {
		t.Fatalf("invite by mail = %d", p.StatusCode)
	}
	msgs = srv.waitMail(t, 5)
	if msgs[4].To != "bob@example.org" || !strings.Contains(msgs[4].Data, "/invite?token") {
		t.Fatalf("invitation mail: %+v", msgs[4])
	}

	// Per source address: 10 requests an hour, whatever they name (5 were made above).
	for range 5 {
		forgot("someone")
	}
	if p := forgot("someone else"); p.StatusCode != http.StatusTooManyRequests || p.Header.Get("Retry-After") == "" {
		t.Errorf("the 11th reset request from one address within the hour = %d", p.StatusCode)
	}

	// Without -smtp: the pages say so.
	ts2 := newTestServer(t)
	if p := ts2.browser("", "").get("/forgot"); !strings.Contains(p.Body, "sends no mail") {
		t.Error("without -smtp the forgot page does not say that it sends no mail")
	}
	if code, _, errs := cli(t, nil, "", "-smtp", "smtp://mail.example.com", "-db", filepath.Join(t.TempDir(), "x.db")); code != 2 || !strings.Contains(errs, "-mail-from") {
		t.Errorf("-smtp without -mail-from = %d %q", code, errs)
	}
}
