package main

// An issuer with a path (RFC 8414 §3.1), e.g. -issuer https://example.com/auth: oauthd then
// answers under that path only, as behind a reverse proxy that serves other apps on the same
// host. Handlers keep thinking in root paths ("/login"): underPrefix strips the issuer's
// path before the mux sees a request, and s.path puts it back wherever oauthd names one of
// its own paths to a browser — redirects, cookie paths, and templates ({{path "/login"}}).
// Absolute URLs are built from s.cfg.Issuer, which already ends with the path.
//
// The metadata is also served where RFC 8414 §3.1 puts it for such an issuer, outside the
// path: /.well-known/oauth-authorization-server/auth (and, for clients that look there,
// /.well-known/openid-configuration/auth); OpenID Connect Discovery §4 puts it at
// /auth/.well-known/openid-configuration, under the path.

import (
	"errors"
	"net/http"
	"net/url"
	pathpkg "path"
	"strings"
)

// validIssuerPath accepts "" or a clean path of plain segments ("/auth", "/id/oauth").
func validIssuerPath(p string) error {
	if p == "" {
		return nil
	}
	if len(p) > 200 {
		return errors.New("the path is longer than 200 characters")
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errors.New("the path must be plain segments such as /auth (no empty, . or .. segments)")
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-._~", c)) {
				return errors.New("the path may only use letters, digits and - . _ ~")
			}
		}
	}
	return nil
}

// issuerPath is the path of a normalized issuer ("" at the root).
func issuerPath(iss string) string {
	u, err := url.Parse(iss)
	if err != nil {
		return ""
	}
	return u.Path
}

// path is p, one of oauthd's root paths ("/login?next=…"), as the browser must ask for it:
// under the issuer's path. Every redirect to an oauthd page, every cookie path and every
// link in a template goes through it (templates: {{path "/login"}}).
func (s *server) path(p string) string {
	return s.prefix + p
}

// cookiePath is the Path of oauthd's cookies: the issuer's path, so that other apps on the
// same host never receive them.
func (s *server) cookiePath() string {
	if s.prefix == "" {
		return "/"
	}
	return s.prefix
}

// underPrefix serves next under the issuer's path: a request inside it reaches next with the
// path stripped; the RFC 8414 §3.1 metadata URLs reach the metadata; anything else is 404.
// At the root it is next itself.
func (s *server) underPrefix(next http.Handler) http.Handler {
	p := s.prefix
	if p == "" {
		return next
	}
	wellKnown := map[string]string{
		"/.well-known/oauth-authorization-server" + p: "/.well-known/oauth-authorization-server",
		"/.well-known/openid-configuration" + p:       "/.well-known/openid-configuration",
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		var inner string
		switch {
		case wellKnown[path] != "":
			inner = wellKnown[path]
		case path == p || strings.HasPrefix(path, p+"/"):
			inner = strings.TrimPrefix(path, p)
			if inner == "" {
				inner = "/"
			}
		default:
			http.NotFound(w, r)
			return
		}
		// The mux would redirect a path that is not clean to its clean form, below the
		// prefix; do it here, under it.
		if c := cleanPath(inner); c != inner {
			status := http.StatusMovedPermanently
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				status = http.StatusPermanentRedirect
			}
			u := *r.URL
			u.Path, u.RawPath = p+c, ""
			http.Redirect(w, r, u.RequestURI(), status)
			return
		}
		r2 := new(http.Request)
		*r2 = *r
		r2.URL = new(url.URL)
		*r2.URL = *r.URL
		r2.URL.Path, r2.URL.RawPath = inner, ""
		if raw := strings.TrimPrefix(r.URL.RawPath, p); r.URL.RawPath != "" && inner != wellKnown[path] && raw != "" {
			r2.URL.RawPath = raw // the prefix is plain characters: its escaped form is itself
		}
		next.ServeHTTP(w, r2)
	})
}

// cleanPath is p without empty, . and .. segments, keeping a trailing slash (as ServeMux
// cleans paths).
func cleanPath(p string) string {
	c := pathpkg.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}
