package main

// Outgoing mail (SMTP, RFC 5321) for invitations, password resets and email verification.
//
// -smtp smtp://USER@HOST:587 speaks plain SMTP and upgrades with STARTTLS (RFC 3207), which is
// required unless HOST is a loopback address; -smtp smtps://USER@HOST:465 uses TLS from the
// first byte (RFC 8314 §3.3, implicit TLS). The password comes from OAUTHD_SMTP_PASSWORD only,
// never a flag (flags show in ps). Authentication is AUTH PLAIN (RFC 4616), sent only over TLS
// or to a loopback host. A message is plain UTF-8 text (RFC 6532 headers encoded per RFC 2047).

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/url"
	"strings"
	"time"
)

// mailer sends mail through one SMTP server.
type mailer struct {
	addr     string      // host:port
	host     string      // the server's name: TLS verification and AUTH
	implicit bool        // smtps: TLS from the start
	user     string      // AUTH PLAIN user; "" sends no AUTH
	password string      // AUTH PLAIN password
	from     string      // envelope and header sender
	tls      *tls.Config // nil: the system roots; tests set their own
	timeout  time.Duration
}

// parseMailer reads -smtp, OAUTHD_SMTP_PASSWORD and -mail-from.
func parseMailer(raw, password, from string) (*mailer, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "smtp" && u.Scheme != "smtps") || u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return nil, fmt.Errorf("%q: want smtp://USER@HOST:587 or smtps://USER@HOST:465", raw)
	}
	if _, ok := u.User.Password(); ok {
		return nil, errors.New("put the SMTP password in OAUTHD_SMTP_PASSWORD, not in the URL")
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"smtp": "587", "smtps": "465"}[u.Scheme]
	}
	m := &mailer{addr: net.JoinHostPort(u.Hostname(), port), host: u.Hostname(), implicit: u.Scheme == "smtps",
		user: u.User.Username(), password: password, timeout: 30 * time.Second}
	if m.user != "" && password == "" {
		return nil, fmt.Errorf("-smtp names the user %q: set OAUTHD_SMTP_PASSWORD", m.user)
	}
	addr, err := mail.ParseAddress(from)
	if from == "" || err != nil || strings.ContainsAny(from, "\r\n") {
		return nil, fmt.Errorf("-mail-from %q: want an address such as oauthd@example.com", from)
	}
	m.from = addr.Address
	return m, nil
}

// tlsConfig is the configuration for the server's certificate checks.
func (m *mailer) tlsConfig() *tls.Config {
	if m.tls != nil {
		c := m.tls.Clone()
		c.ServerName = m.host
		return c
	}
	return &tls.Config{ServerName: m.host, MinVersion: tls.VersionTLS12}
}

// send delivers one message to one recipient, within the mailer's timeout.
func (m *mailer) send(ctx context.Context, to, subject, body string) error {
	msg, err := m.message(to, subject, body, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", m.addr)
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if m.implicit {
		tc := tls.Client(conn, m.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("smtp: TLS: %w", err)
		}
		conn = tc
	}
	c, err := smtp.NewClient(conn, m.host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp: %w", err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return fmt.Errorf("smtp: EHLO: %w", err)
	}
	if !m.implicit {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(m.tlsConfig()); err != nil {
				return fmt.Errorf("smtp: STARTTLS: %w", err)
			}
		} else if !isLoopbackHost(m.host) {
			return fmt.Errorf("smtp: %s does not offer STARTTLS; oauthd sends no mail in the clear (use smtps:// or a server with STARTTLS)", m.host)
		}
	}
	if m.user != "" {
		// smtp.PlainAuth itself refuses to send the password without TLS, except to localhost.
		if err := c.Auth(smtp.PlainAuth("", m.user, m.password, m.host)); err != nil {
			return fmt.Errorf("smtp: AUTH: %w", err)
		}
	}
	if err := c.Mail(m.from); err != nil {
		return fmt.Errorf("smtp: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("smtp: RCPT TO: %w", err)
	}
	wc, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if _, err := wc.Write(msg); err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if err := wc.Close(); err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	return c.Quit()
}

// message builds the RFC 5322 message: UTF-8 text, quoted-printable, headers RFC 2047-encoded.
// Addresses and subjects with line breaks are refused (header injection).
func (m *mailer) message(to, subject, body string, now time.Time) ([]byte, error) {
	addr, err := mail.ParseAddress(to)
	if err != nil || strings.ContainsAny(to+subject, "\r\n") || addr.Address != to {
		return nil, fmt.Errorf("cannot send mail to %q", to)
	}
	id := make([]byte, 16)
	rand.Read(id)
	_, domain, _ := strings.Cut(m.from, "@")
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\n", m.from)
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", subject))
	fmt.Fprintf(&b, "Date: %s\r\n", now.UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@%s>\r\n", hex.EncodeToString(id), domain)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n")))
	qp.Close()
	b.WriteString("\r\n")
	return []byte(b.String()), nil
}
