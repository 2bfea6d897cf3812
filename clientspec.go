package main

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// clientSpec is a client registration as the CLI, the client pages and dynamic registration
// describe it; build validates it into a client.
type clientSpec struct {
	Name, Description, Scope       string
	RedirectURIs, PostLogoutURIs   []string
	GrantTypes                     []string // empty: authorization_code with refresh_token
	Public, AlwaysRefresh, Dynamic bool
	IDTokenAlg, LogoURI, ClientURI string
	OwnerID                        int64
	Vetted                         bool     // an administrator creates it (set by build only: editing never vets)
	RequireMFA                     *bool    // nil keeps the client's setting (dynamic registration cannot change it)
	ApplicationType                string   // web or native (dynamic registration); "": web
	ForwardOrigins                 []string // a protected app's origins (forward auth, forwardauth.go); none: an OAuth client
}

// specError is a validation failure; Redirect marks redirect URI problems, which RFC 7591
// §3.2.2 reports as invalid_redirect_uri rather than invalid_client_metadata.
type specError struct {
	Redirect bool
	msg      string
}

func (e *specError) Error() string { return e.msg }

func badSpec(format string, args ...any) error { return &specError{msg: fmt.Sprintf(format, args...)} }

// grantAliases lets the CLI say device_code for the RFC 8628 grant type URN.
var grantAliases = map[string]string{"device_code": grantDeviceCode}

// build validates the spec and returns a new client with a fresh id.
func (sp clientSpec) build() (client, error) {
	c := client{ID: uuid.NewString(), CreatedAt: time.Now().Unix(), Vetted: sp.Vetted && !sp.Dynamic}
	return c, sp.apply(&c)
}

// apply validates the spec and sets it on c, keeping c's id, secret and age.
func (sp clientSpec) apply(c *client) error {
	name, desc := strings.TrimSpace(sp.Name), strings.TrimSpace(sp.Description)
	switch {
	case name == "":
		return badSpec("a name is required")
	case len(name) > 200 || len(desc) > 2000 || strings.ContainsAny(name, "\r\n\x00"):
		return badSpec("the name is limited to 200 bytes on one line and the description to 2000 bytes")
	}
	if len(sp.ForwardOrigins) > 0 {
		return sp.applyForward(c)
	}
	grants := []string{grantAuthorizationCode, grantRefreshToken}
	if len(sp.GrantTypes) > 0 {
		grants = nil
		for _, g := range sp.GrantTypes {
			if a, ok := grantAliases[g]; ok {
				g = a
			}
			if !slices.Contains([]string{grantAuthorizationCode, grantRefreshToken, grantClientCredentials, grantDeviceCode}, g) {
				return badSpec("unknown grant type %q (authorization_code, refresh_token, client_credentials, device_code)", g)
			}
			grants = append(grants, g)
		}
		slices.Sort(grants)
		grants = slices.Compact(grants)
	}
	if slices.Contains(grants, grantClientCredentials) && sp.Public {
		return badSpec("public clients cannot use client_credentials: they have no secret")
	}
	if slices.Contains(grants, grantRefreshToken) && len(grants) == 1 {
		return badSpec("refresh_token needs another grant to start from")
	}
	codeFlow := slices.Contains(grants, grantAuthorizationCode)
	if codeFlow && len(sp.RedirectURIs) == 0 {
		return &specError{Redirect: true, msg: "at least one redirect URI is required for the authorization_code grant"}
	}
	for _, u := range sp.RedirectURIs {
		if err := validateRedirectURI(u, sp.Public); err != nil {
			return &specError{Redirect: true, msg: fmt.Sprintf("redirect URI %q %v", u, err)}
		}
	}
	for _, u := range sp.PostLogoutURIs {
		if err := validateRedirectURI(u, sp.Public); err != nil {
			return &specError{Redirect: true, msg: fmt.Sprintf("post-logout redirect URI %q %v", u, err)}
		}
	}
	scopes, ok := parseScope(sp.Scope)
	if !ok {
		return badSpec("scope %q has characters outside RFC 6749 §3.3", sp.Scope)
	}
	alg := sp.IDTokenAlg
	if alg == "" {
		alg = "RS256"
	}
	if !slices.Contains(signingAlgs, alg) {
		return badSpec("ID token algorithm %q: want RS256 or ES256", alg)
	}
	for what, u := range map[string]string{"logo URI": sp.LogoURI, "homepage": sp.ClientURI} {
		if err := validateWebURI(u); err != nil {
			return badSpec("%s %q %v", what, u, err)
		}
	}
	c.Name, c.Description, c.Scopes, c.Public, c.GrantTypes = name, desc, scopes, sp.Public, grants
	c.RedirectURIs, c.PostLogoutURIs = normURIs(sp.RedirectURIs), normURIs(sp.PostLogoutURIs)
	c.IDTokenAlg, c.AlwaysRefresh, c.LogoURI, c.ClientURI, c.Dynamic = alg, sp.AlwaysRefresh, sp.LogoURI, sp.ClientURI, sp.Dynamic
	if sp.OwnerID != 0 {
		c.OwnerID = sp.OwnerID
	}
	if sp.RequireMFA != nil {
		c.RequireMFA = *sp.RequireMFA
	}
	c.ApplicationType = cmp.Or(sp.ApplicationType, c.ApplicationType, "web") // the pages and the CLI leave it as it is
	return nil
}

// validateWebURI accepts "" or an absolute https URL (logo and homepage are shown to users).
func validateWebURI(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || len(raw) > 2000 {
		return errors.New("must be an https URL")
	}
	return nil
}

// normURIs drops repeated URIs, keeping their order.
func normURIs(in []string) []string {
	var out []string
	for _, u := range in {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// issueSecret gives a confidential client a new secret, keeping only its hash, and returns
// it to be shown once; public clients get none ("").
func (c *client) issueSecret() string {
	if c.Public {
		return ""
	}
	secret := newSecret()
	c.SecretHash = hashSecret(secret)
	return secret
}
