package main

// The instance's face: its name (-name) and logo (-logo, PNG or SVG up to 256 KiB) on every
// page, the favicon, and 404 and 405 answers as pages in the same layout instead of Go's
// plain text.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// maxLogo bounds the -logo file.
const maxLogo = 256 << 10

// siteLogo is the -logo file, read once at start.
type siteLogo struct {
	data  []byte
	ctype string // image/png or image/svg+xml
	tag   string // a hash of the content, in the URL so that it can be cached for a year
}

// loadLogo reads and checks -logo: a PNG or an SVG, at most 256 KiB.
func loadLogo(path string) (*siteLogo, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-logo: %w", err)
	}
	defer f.Close()
	b := make([]byte, maxLogo+1)
	n, _ := f.Read(b)
	for n < len(b) {
		m, err := f.Read(b[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
	}
	b = b[:n]
	if len(b) > maxLogo {
		return nil, fmt.Errorf("-logo %s is larger than 256 KiB", path)
	}
	l := &siteLogo{data: b}
	switch head := bytes.TrimSpace(b[:min(len(b), 512)]); {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		l.ctype = "image/png"
	case bytes.HasPrefix(head, []byte("<svg")) || bytes.HasPrefix(head, []byte("<?xml")) && bytes.Contains(b, []byte("<svg")):
		l.ctype = "image/svg+xml"
	default:
		return nil, fmt.Errorf("-logo %s is neither a PNG nor an SVG file", path)
	}
	sum := sha256.Sum256(b)
	l.tag = hex.EncodeToString(sum[:6])
	return l, nil
}

// url is the logo's address for the pages ("" without -logo).
func (l *siteLogo) url() string {
	if l == nil {
		return ""
	}
	return "/static/logo?v=" + l.tag
}

// handleLogo serves -logo for a year (its URL changes with its content). An SVG is served
// under a CSP that runs nothing and in a sandbox, so that a logo with a script in it cannot
// act on this origin when opened directly.
func (s *server) handleLogo(w http.ResponseWriter, r *http.Request) {
	if s.logo == nil {
		s.notFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", s.logo.ctype)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	w.Write(s.logo.data)
}

// handleFavicon answers the browser's /favicon.ico: the logo when there is one, else the
// built-in icon.
func (s *server) handleFavicon(w http.ResponseWriter, r *http.Request) {
	if s.logo != nil {
		s.handleLogo(w, r)
		return
	}
	b, _ := templateFS.ReadFile("templates/favicon.svg")
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Write(b)
}

// notFound is the 404 page.
func (s *server) notFound(w http.ResponseWriter, r *http.Request) {
	sess, _ := s.session(r)
	s.render(w, http.StatusNotFound, "message", messagePage{pageData: s.pageData(sess, ""), Title: "Page not found",
		Message: "There is no page at this address. Check the link, or start again from the home page."})
}

// pagesFor404 wraps the mux: where no route matches, the answer is a page in the site's
// layout: 404, or 405 with the Allow header the mux would have sent.
func (s *server) pagesFor404(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		probe := &statusProbe{header: http.Header{}}
		h.ServeHTTP(probe, r)
		switch probe.status {
		case http.StatusMethodNotAllowed:
			if allow := probe.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			sess, _ := s.session(r)
			s.render(w, http.StatusMethodNotAllowed, "message", messagePage{pageData: s.pageData(sess, ""), Title: "Not allowed here",
				Message: "This address does not answer a " + r.Method + " request. If you followed a link or pressed a button, go back and try again."})
		case http.StatusNotFound:
			s.notFound(w, r)
		default: // a redirect the mux makes (a trailing slash, a cleaned path)
			for k, v := range probe.header {
				w.Header()[k] = v
			}

			w.WriteHeader(probe.status)
			w.Write(probe.body.Bytes())
		}
	})
}

// statusProbe records what the mux's own answer for an unrouted request would be.
type statusProbe struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *statusProbe) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return p.body.Write(b)
}

// ---- post/redirect/get

// seeOther ends a form POST that changed something: 303 to a GET page, which shows notice
// once (a signed cookie carries it), so that a reload never re-submits the form.
func (s *server) seeOther(w http.ResponseWriter, r *http.Request, path, notice string) {
	if notice != "" {
		v := base64.RawURLEncoding.EncodeToString([]byte(notice))
		s.setCookie(w, "oauthd_notice", v+"."+base64.RawURLEncoding.EncodeToString(s.noticeMAC(v)), 60)
	}
	http.Redirect(w, r, s.path(path), http.StatusSeeOther)
}

// noticeMAC signs a notice, so that nobody else can put words on our pages.
func (s *server) noticeMAC(v string) []byte {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte("notice\x00" + v))
	return m.Sum(nil)[:16]
}

// takeNotice returns the request's one-time notice ("" when none) and clears it.
func (s *server) takeNotice(w http.ResponseWriter, r *http.Request) string {
	ck, err := r.Cookie(s.cookieName("oauthd_notice"))
	if err != nil {
		return ""
	}
	s.setCookie(w, "oauthd_notice", "", -1)
	v, sig, _ := strings.Cut(ck.Value, ".")
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(mac, s.noticeMAC(v)) {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return ""
	}
	return string(b)
}

// confirmPage asks before a destructive action, saying what will break.
type confirmPage struct {
	pageData
	Title, Message, Action, Button, Cancel string
}

// confirm shows the confirmation page of a destructive action: a danger button that POSTs
// to action, and a way back.
func (s *server) confirm(w http.ResponseWriter, sess session, form string, p confirmPage) {
	p.pageData = s.pageData(sess, form)
	s.render(w, http.StatusOK, "confirm", p)
}
