package main

// Groups, per-app access and custom claims (issue 12): the rules. A user may use a client
// when the client has no allow-list or the user belongs to one of its groups (mayUse). The
// authorization endpoint and the consent and device pages apply it before any consent or
// code is made (refuseOutsider); every code exchange, refresh and device grant applies it
// again (checkGrantAccess), and changes that narrow access revoke at once what users may no
// longer hold (store_groups.go). The `groups` scope releases the user's group names in the
// ID token, UserInfo and introspection; custom claims set on users and groups are released
// with `profile` (OIDC Core §5.1.2: additional claims MAY be used; §5.4: scopes request
// claims). The admin pages are in groups_admin.go, the command line in groups_cli.go.

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
)

// validGroupName is the rule for group names: 1-64 characters of [A-Za-z0-9._-]. Names are
// unique case-insensitively (the column's collation).
func validGroupName(n string) error {
	if n == "" || len(n) > 64 {
		return fmt.Errorf("a group name must have 1 to 64 characters (got %d)", len(n))
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("a group name may only contain letters, digits and . _ - (found %q in %q)", c, n)
		}
	}
	return nil
}

// validGroupDescription bounds a group's description: one line of at most 200 bytes.
func validGroupDescription(d string) error {
	if len(d) > 200 || !utf8.ValidString(d) || strings.ContainsAny(d, "\x00\r\n") {
		return errors.New("a group description must be one line of at most 200 bytes")
	}
	return nil
}

// compareFold orders group names as SQLite's NOCASE collation does (names are ASCII).
func compareFold(a, b string) int { return cmp.Compare(strings.ToLower(a), strings.ToLower(b)) }

// sortedGroups sorts group names case-insensitively: the order of the `groups` claim, and
// the order in which groups' claims are merged.
func sortedGroups(names []string) []string {
	slices.SortFunc(names, compareFold)
	return names
}

// mayUse is the access rule: whether u may sign in to (and hold tokens of) c. A client
// without an allow-list is open to every user; otherwise u must belong to one of its
// groups. The user's groups come from the cache (cachedAccess): the caller has made the
// request's caches current (fresh), as lookupClient and authenticateClient do.
func (s *server) mayUse(ctx context.Context, u user, c client) (bool, error) {
	if len(c.AllowGroups) == 0 {
		return true, nil
	}
	if u.ID == 0 {
		return false, nil
	}
	acc, err := s.store.cachedAccess(ctx, u.ID)
	if err != nil {
		return false, err
	}
	for _, g := range acc.Groups {
		if slices.ContainsFunc(c.AllowGroups, func(a string) bool { return strings.EqualFold(a, g) }) {
			return true, nil
		}
	}
	return false, nil
}

// checkGrantAccess is mayUse at the token endpoint (code exchange, refresh, device grant):
// invalid_grant for a user who is in none of the client's groups. Clients without an
// allow-list, the common case, cost nothing.
func (s *server) checkGrantAccess(ctx context.Context, c client, userID int64) error {
	if len(c.AllowGroups) == 0 {
		return nil
	}
	ok, err := s.mayUse(ctx, user{ID: userID}, c)
	if err != nil {
		return err
	}
	if !ok {
		return oerr(errInvalidGrant, "the user is not in any group allowed to use this application")
	}
	return nil
}

// noAccessPage tells a signed-in user that an app is closed to them.
type noAccessPage struct {
	pageData
	App    string       // the client's name
	Admins []string     // whom to ask
	Back   template.URL // the client's redirect URI with error=access_denied; "" for a device
}

// refuseOutsider applies mayUse on a page (authorization, consent, device approval) and,
// when the user may not use c, shows the no-access page and reports true: no consent, code
// or token is made. A device that asked is told access_denied. The page links back to the
// app with error=access_denied, state and iss (RFC 6749 §4.1.2.1, RFC 9207).
func (s *server) refuseOutsider(w http.ResponseWriter, r *http.Request, c client, req authRequest, sess session) bool {
	if len(c.AllowGroups) == 0 {
		return false
	}
	ctx := r.Context()
	ok, err := false, s.store.fresh(ctx)
	if err == nil {
		ok, err = s.mayUse(ctx, sess.User, c)
	}
	if err != nil {
		s.serverErrorPage(w, r, err)
		return true
	}
	if ok {
		return false
	}
	s.log.Info("access refused: the user is in none of the application's groups", "client_id", c.ID, "user", sess.User.Username)
	page := noAccessPage{pageData: s.pageData(sess, ""), App: c.Name}
	if req.DeviceHash != nil {
		err := s.store.decideDevice(ctx, req.DeviceHash, sess.Hash, sess.User.ID, sess.AuthTime, sess.AMR, false, nil, nil, s.now().Unix())
		if err != nil && !errors.Is(err, errNotFound) && !errors.Is(err, errSessionEnded) {
			s.serverErrorPage(w, r, err)
			return true
		}
	} else {
		// The redirect URI was matched against the registered ones, whose schemes are checked.
		page.Back = template.URL(s.errorRedirect(req, errAccessDenied, "the user is not in any group allowed to use this application"))
	}
	if page.Admins, err = s.adminNames(ctx); err != nil {
		s.serverErrorPage(w, r, err)
		return true
	}
	s.render(w, http.StatusForbidden, "groups_noaccess", page)
	return true
}

// adminNames are the administrators a no-access page names as whom to ask: "Full Name
// (username)", or the username alone.
func (s *server) adminNames(ctx context.Context) ([]string, error) {
	admins, err := s.store.admins(ctx)
	var out []string
	for _, a := range admins {
		if a.Name != "" {
			out = append(out, a.Name+" ("+a.Username+")")
		} else {
			out = append(out, a.Username)
		}
	}
	return out, err
}

// scopeHas reports whether a space-separated scope contains sc, without allocating (it is
// on the introspection path).
func scopeHas(scope, sc string) bool {
	for scope != "" {
		var f string
		f, scope, _ = strings.Cut(scope, " ")
		if f == sc {
			return true
		}
	}
	return false
}

// releaseClaims adds what the groups and profile scopes release beyond userClaims: `groups`
// (the user's group names, sorted, [] for none) and the user's custom claims. A claim never
// replaces one already set.
func (s *server) releaseClaims(ctx context.Context, userID int64, scope string, into map[string]any) error {
	groups, profile := scopeHas(scope, "groups"), scopeHas(scope, "profile")
	if userID == 0 || !groups && !profile {
		return nil
	}
	acc, err := s.store.cachedAccess(ctx, userID)
	if err != nil {
		return err
	}
	if groups {
		into["groups"] = acc.Groups
	}
	if profile {
		for _, c := range acc.Claims {
			if _, taken := into[c.Name]; !taken {
				into[c.Name] = c.Value
			}
		}
	}
	return nil
}

// ---- custom claims

// Custom claim limits.
const (
	maxClaimValue = 1024 // bytes of compact JSON
	maxClaimName  = 100
	maxClaims     = 32 // per user or group
)

// reservedClaims are the names OIDC and JWT reserve, those oauthd itself issues, and
// OIDC's aggregated-claims members; a custom claim may not take them (compared
// case-insensitively, since some apps match claim names that way).
var reservedClaims = []string{"sub", "iss", "aud", "exp", "iat", "nbf", "auth_time", "nonce", "acr", "amr", "azp", "at_hash",
	"sid", "jti", "groups", "email", "email_verified", "name", "preferred_username",
	"updated_at", "c_hash", "s_hash", "cnf", "typ", "scope", "client_id", "_claim_names", "_claim_sources"}

// validClaimName checks a custom claim's name: a letter, then letters, digits and _ . - : /
// (so that collision-resistant names such as https://example.com/roles work), at most
// maxClaimName bytes, and not reserved.
func validClaimName(n string) error {
	if n == "" || len(n) > maxClaimName {
		return fmt.Errorf("a claim name must have 1 to %d characters", maxClaimName)
	}
	for i, c := range n {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return fmt.Errorf("the claim name %q must start with a letter", n)
		}
		if !letter && !(c >= '0' && c <= '9') && !strings.ContainsRune("_.-:/", c) {
			return fmt.Errorf("the claim name %q may only contain letters, digits and _ . - : / (found %q)", n, c)
		}
	}
	for _, r := range reservedClaims {
		if strings.EqualFold(n, r) {
			return fmt.Errorf("the claim name %q is reserved by OpenID Connect, JWT or oauthd itself (%s)", n, strings.Join(reservedClaims, ", "))
		}
	}
	return nil
}

// parseClaimValue checks a custom claim's value: exactly one JSON value of any kind, valid
// UTF-8, objects without repeated member names, at most maxClaimValue bytes once compacted.
// It returns the compact form, which is what ID tokens and UserInfo carry: numbers, strings
// and member order exactly as written.
func parseClaimValue(name, raw string) (json.RawMessage, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, fmt.Errorf("the value of the claim %s is empty (write a JSON value; to remove the claim, leave out the value: %s=)", name, name)
	}
	if !utf8.ValidString(raw) {
		return nil, fmt.Errorf("the value of the claim %s is not valid UTF-8", name)
	}
	if !json.Valid([]byte(raw)) {
		return nil, fmt.Errorf("the value of the claim %s is not JSON (a string needs quotes, e.g. %s='\"Sales\"'; numbers, true, false, null, arrays and objects are written as in JSON)", name, name)
	}
	if err := noRepeatedKeys(json.NewDecoder(strings.NewReader(raw))); err != nil {
		return nil, fmt.Errorf("the value of the claim %s %v", name, err)
	}
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(raw)); err != nil {
		return nil, fmt.Errorf("the value of the claim %s is not JSON", name)
	}
	if b.Len() > maxClaimValue {
		return nil, fmt.Errorf("the value of the claim %s has %d bytes; at most %d are allowed", name, b.Len(), maxClaimValue)
	}
	return json.RawMessage(b.Bytes()), nil
}

// noRepeatedKeys walks one JSON value and refuses an object that names a member twice
// (RFC 8259 §4: such names make the value's meaning unpredictable).
func noRepeatedKeys(dec *json.Decoder) error {
	dec.UseNumber()
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return errors.New("is not JSON")
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return errors.New("is not JSON")
				}
				key, _ := k.(string)
				if seen[key] {
					return fmt.Errorf("repeats the member %q", key)
				}
				seen[key] = true
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token()
		case json.Delim('['):
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token()
		}
		return err
	}
	if err := walk(); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("has more than one JSON value")
	}
	return nil
}

// parseClaimArgs reads the command line's KEY=JSON arguments (KEY= removes the claim) into
// claims to set and names to remove; the first invalid one is the error.
func parseClaimArgs(args []string) (set []claim, del []string, err error) {
	for _, a := range args {
		name, raw, ok := strings.Cut(a, "=")
		if !ok {
			return nil, nil, fmt.Errorf("%q: write KEY=JSON to set a claim, or KEY= to remove it", a)
		}
		if err := validClaimName(name); err != nil {
			return nil, nil, err
		}
		if slices.ContainsFunc(set, func(c claim) bool { return c.Name == name }) || slices.Contains(del, name) {
			return nil, nil, fmt.Errorf("the claim %s is named twice", name)
		}
		if raw == "" {
			del = append(del, name)
			continue
		}
		v, err := parseClaimValue(name, raw)
		if err != nil {
			return nil, nil, err
		}
		set = append(set, claim{Name: name, Value: v})
	}
	return set, del, nil
}

// claimsObject renders claims as one JSON object, in their order, values exactly as stored.
func claimsObject(cs []claim) json.RawMessage {
	b := []byte{'{'}
	for i, c := range cs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, c.Name)
		b = append(append(b, ':'), c.Value...)
	}
	return append(b, '}')
}
