package main

// Resource servers (an MCP server, any API) and RFC 8707 resource indicators.
//
// A resource is registered by the administrator (`oauthd resource add`, /admin/resources)
// with its URI, a name for the consent page, the scopes it defines, whether its access
// tokens are RFC 9068 JWTs (jwtat.go) and their lifetime. It gets a confidential client of
// its own, without grants, as its introspection credential. Any client may ask for the
// resource's scopes together with the resource (this is how an MCP server's scopes reach a
// self-registered client) without those scopes being part of the client's registration.
//
// RFC 8707 §2: `resource` may repeat on the authorization request (and the device
// authorization request); the grant remembers them; each token request may name one of them
// (narrowing) but never another; each access token is for exactly one resource and says so
// in introspection (`aud`, RFC 7662 §2.2). A resource's own credential is told only about
// tokens for that resource (RFC 7662 §4), which stops token passthrough between servers.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// errInvalidTarget is RFC 8707 §2's error for a bad or unknown resource.
const errInvalidTarget = "invalid_target"

// canonicalResource checks a resource indicator (RFC 8707 §2: an absolute URI without a
// fragment) and returns the form it is registered and compared under: scheme and host in
// lower case, no default port, no lone "/" path (https://mcp.example.com/ is
// https://mcp.example.com). The path and query are kept as they are.
func canonicalResource(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("is empty")
	}
	if len(raw) > 2000 {
		return "", errors.New("is longer than 2000 characters")
	}
	if strings.ContainsAny(raw, " \t\r\n\x00") {
		return "", errors.New("contains white space")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", errors.New("is not a valid URI")
	case strings.Contains(raw, "#"):
		return "", errors.New("must not contain a fragment (RFC 8707 §2)")
	case !u.IsAbs() || u.Host == "" || u.Opaque != "":
		return "", errors.New("must be an absolute URI such as https://mcp.example.com/mcp (RFC 8707 §2)")
	case u.User != nil:
		return "", errors.New("must not contain user information")
	}
	u.Scheme, u.Host = strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if p := u.Port(); (u.Scheme == "https" && p == "443") || (u.Scheme == "http" && p == "80") {
		u.Host = u.Hostname()
		if strings.Contains(u.Host, ":") {
			u.Host = "[" + u.Host + "]"
		}
	}
	if u.Path == "/" && u.RawQuery == "" && !u.ForceQuery {
		u.Path, u.RawPath = "", ""
	}
	return u.String(), nil
}

// validResourceURI is what a registered resource's URI must be: a resource indicator on
// https, or on http at a loopback host (a server on the same machine, or tests).
func validResourceURI(raw string) (string, error) {
	uri, err := canonicalResource(raw)
	if err != nil {
		return "", err
	}
	u, _ := url.Parse(uri)
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && isLoopbackName(u.Hostname()):
	default:
		return "", errors.New("must be https (http only on a loopback host: 127.0.0.1, [::1], localhost)")
	}
	return uri, nil
}

// resourceSpec is a resource as `resource add` and the admin page describe it.
type resourceSpec struct {
	URI, Name, Scope string
	JWT              bool
	TokenTTL         time.Duration // 0: the default
}

// build validates the spec into a new resource with a fresh credential id.
func (sp resourceSpec) build(now time.Time) (resource, error) {
	uri, err := validResourceURI(strings.TrimSpace(sp.URI))
	if err != nil {
		return resource{}, badSpec("the resource URI %q %v", sp.URI, err)
	}
	name := strings.TrimSpace(sp.Name)
	if name == "" || len(name) > 200 || strings.ContainsAny(name, "\r\n\x00") {
		return resource{}, badSpec("a name of 1 to 200 bytes on one line is required (it is shown on the consent page)")
	}
	scopes, ok := parseScope(sp.Scope)
	if !ok {
		return resource{}, badSpec("scope %q has characters outside RFC 6749 §3.3", sp.Scope)
	}
	for _, sc := range scopes {
		if slices.Contains(builtinScopes, sc) {
			return resource{}, badSpec("scope %q is an OpenID Connect scope, which every client may ask for anyway; leave it out", sc)
		}
	}
	ttl := sp.TokenTTL
	if ttl != 0 && (ttl < time.Minute || ttl > maxResourceTTL) {
		return resource{}, badSpec("the token lifetime must be between 1m and 24h")
	}
	if ttl == 0 && sp.JWT {
		ttl = defaultJWTTTL // stored, so that `resource list` says what applies
	}
	return resource{URI: uri, Name: name, Scopes: scopes, JWT: sp.JWT, TokenTTL: ttl, ClientID: uuid.NewString(), CreatedAt: now.Unix()}, nil
}

// addResource registers a resource and returns the secret of its credential (shown once).
func (st *store) addResource(ctx context.Context, sp resourceSpec, now time.Time) (resource, string, error) {
	r, err := sp.build(now)
	if err != nil {
		return r, "", err
	}
	secret := newSecret()
	if err := st.createResource(ctx, &r, hashSecret(secret)); err != nil {
		return r, "", err
	}
	return r, secret, nil
}

// ---- the protocol

// requestedResources resolves the resource parameters of a request to registered resources,
// de-duplicated and sorted. An unusable value is invalid_target, with what to do about it.
func (s *server) requestedResources(ctx context.Context, values []string) ([]resource, error) {
	if len(values) == 0 {
		return nil, nil
	}
	set, err := s.store.cachedResources(ctx)
	if err != nil {
		return nil, err
	}
	var out []resource
	for _, v := range values {
		if r, ok := set.byURI[v]; ok && len(values) == 1 { // registered, so canonical: nothing to parse
			return []resource{r}, nil
		}
		uri, err := canonicalResource(v)
		if err != nil {
			return nil, oerr(errInvalidTarget, "the resource %q %v", v, err)
		}
		r, ok := set.byURI[uri]
		if !ok {
			return nil, oerr(errInvalidTarget, "the resource %s is not registered on this server; its administrator registers it with: oauthd resource add -uri %s -name NAME", uri, uri)
		}
		if !slices.ContainsFunc(out, func(x resource) bool { return x.URI == uri }) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b resource) int { return strings.Compare(a.URI, b.URI) })
	return out, nil
}

// resourceURIs is the space-separated list of the resources' URIs, as grants store them.
func resourceURIs(rs []resource) string {
	uris := make([]string, len(rs))
	for i, r := range rs {
		uris[i] = r.URI
	}
	return strings.Join(uris, " ")
}

// resourceScope reports whether one of the resources defines scope sc.
func resourceScope(rs []resource, sc string) bool {
	return slices.ContainsFunc(rs, func(r resource) bool { return slices.Contains(r.Scopes, sc) })
}

// resourceScopes are every scope the resources define, sorted.
func resourceScopes(rs []resource) []string {
	var all []string
	for _, r := range rs {
		all = append(all, r.Scopes...)
	}
	return normScopes(all)
}

// tokenTarget picks the one resource an access token is for (RFC 8707 §2.2): the resource
// parameter of the token request, which must be among the grant's resources (granted; any
// registered one when free, for client_credentials), or else the grant's only resource. A
// request and grant without resources get nil, at no cost.
func (s *server) tokenTarget(ctx context.Context, form url.Values, granted string, free bool) (*resource, error) {
	vals := form["resource"]
	if len(vals) == 0 && granted == "" {
		return nil, nil
	}
	if len(vals) > 1 {
		return nil, oerr(errInvalidTarget, "an access token is for one resource: send one resource parameter per token request, and ask again for another resource")
	}
	grant := strings.Fields(granted)
	if len(vals) == 1 {
		rs, err := s.requestedResources(ctx, vals)
		if err != nil {
			return nil, err
		}
		if !free && !slices.Contains(grant, rs[0].URI) {
			if len(grant) == 0 {
				return nil, oerr(errInvalidTarget, "the resource %s was not part of the authorization; a token request may narrow the authorized resources, never add one: authorize again with resource=%s", rs[0].URI, rs[0].URI)
			}
			return nil, oerr(errInvalidTarget, "the resource %s is not among those this grant was authorized for (%s); a token request may narrow them, never widen them", rs[0].URI, strings.Join(grant, ", "))
		}
		return &rs[0], nil
	}
	if len(grant) > 1 {
		return nil, oerr(errInvalidTarget, "this grant is for several resources (%s): name the one this access token is for with the resource parameter", strings.Join(grant, ", "))
	}
	set, err := s.store.cachedResources(ctx)
	if err != nil {
		return nil, err
	}
	r, ok := set.byURI[grant[0]]
	if !ok {
		return nil, oerr(errInvalidTarget, "the resource %s of this grant is no longer registered on this server", grant[0])
	}
	return &r, nil
}

// narrowScope leaves out of an access token for target the scopes that only the grant's
// other resources define: a token for one server does not carry another server's
// permissions. The client's own scopes and the OpenID Connect scopes always stay.
func (s *server) narrowScope(ctx context.Context, scope string, target *resource, granted string, c client) string {
	grant := strings.Fields(granted)
	if target == nil || len(grant) < 2 {
		return scope
	}
	set, err := s.store.cachedResources(ctx)
	if err != nil {
		return scope
	}
	var others []resource
	for _, uri := range grant {
		if r, ok := set.byURI[uri]; ok && uri != target.URI {
			others = append(others, r)
		}
	}
	kept := slices.DeleteFunc(strings.Fields(scope), func(sc string) bool {
		return resourceScope(others, sc) && !slices.Contains(target.Scopes, sc) && !slices.Contains(c.Scopes, sc) && !slices.Contains(builtinScopes, sc)
	})
	return strings.Join(kept, " ")
}

// withoutResourceScopes drops from a registration's scope the scopes that registered
// resources define: MCP hosts register with the scopes the server's metadata lists, and those
// are requestable together with their resource by any client anyway; they are not the
// client's own (RFC 7591 §3.2.1 lets the answer differ from the request).
func (s *server) withoutResourceScopes(ctx context.Context, scope string) (string, error) {
	if scope == "" {
		return "", nil
	}
	rs, err := s.store.listResources(ctx)
	if err != nil || len(rs) == 0 {
		return scope, err
	}
	kept := slices.DeleteFunc(strings.Fields(scope), func(sc string) bool { return resourceScope(rs, sc) })
	return strings.Join(kept, " "), nil
}

// resourceLine is a resource as the consent page names it: "Notes MCP at mcp.example.com".
type resourceLine struct{ Name, Host, URI string }

// consentResourceLines describes the requested resources for the consent page.
func (s *server) consentResourceLines(ctx context.Context, uris []string) []resourceLine {
	if len(uris) == 0 {
		return nil
	}
	set, err := s.store.cachedResources(ctx)
	var out []resourceLine
	for _, uri := range uris {
		l := resourceLine{Name: uri, URI: uri, Host: uri}
		if u, perr := url.Parse(uri); perr == nil {
			l.Host = u.Host
		}
		if err == nil {
			if r, ok := set.byURI[uri]; ok {
				l.Name = r.Name
			}
		}
		out = append(out, l)
	}
	return out
}

// targetRefused answers an authorization request whose resource cannot be used: a page for
// the person (the fix is the administrator's, see its text) with a link that returns the
// RFC 8707 invalid_target error to the application; with prompt=none, the redirect itself.
func (s *server) targetRefused(w http.ResponseWriter, r *http.Request, req authRequest, oe *oauthError, silent bool) {
	s.log.Info("authorization refused", "client_id", req.ClientID, "error", oe.Code, "description", oe.Description)
	back := s.errorRedirect(req, oe.Code, oe.Description)
	if silent {
		http.Redirect(w, r, back, http.StatusFound)
		return
	}
	s.renderError(w, http.StatusBadRequest, "Unknown resource", sentence(errors.New(oe.Description)), back)
}

// ---- the command line

// resourceJSON is a resource as the CLI prints it (the secret only once, from add).
type resourceJSON struct {
	URI          string `json:"uri"`
	Name         string `json:"name"`
	Scope        string `json:"scope"`
	JWT          bool   `json:"jwt"`
	TokenTTL     int64  `json:"token_ttl,omitempty"` // seconds; absent: the server's -token-ttl
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"`
	CreatedAt    int64  `json:"created_at"`
}

// toResourceJSON describes r for the CLI, with its credential's secret when just made.
func toResourceJSON(r resource, secret string) resourceJSON {
	return resourceJSON{URI: r.URI, Name: r.Name, Scope: strings.Join(r.Scopes, " "), JWT: r.JWT, TokenTTL: int64(r.TokenTTL / time.Second),
		ClientID: r.ClientID, ClientSecret: secret, CreatedAt: r.CreatedAt}
}

// runResource is `oauthd resource add|list|del`.
func runResource(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return usageError("resource: want add, list or del")
	}
	fs, db := subcommandFlags("resource " + args[0])
	var sp resourceSpec
	if args[0] == "add" {
		fs.StringVar(&sp.URI, "uri", "", "the resource's URI, as clients send it in resource (https, or http on loopback)")
		fs.StringVar(&sp.Name, "name", "", "name shown on the consent page")
		fs.StringVar(&sp.Scope, "scope", "", "space-separated scopes any client may ask for together with this resource")
		fs.BoolVar(&sp.JWT, "jwt", false, "issue RFC 9068 JWT access tokens for this resource (ES256, keys in the JWKS)")
		fs.DurationVar(&sp.TokenTTL, "token-ttl", 0, "access token lifetime for this resource (default 10m with -jwt, else the server's -token-ttl)")
	}
	pos, err := parseArgs(fs, args[1:], getenv, "db") // flags before or after the URI, as `resource del URI -db PATH`
	if err != nil {
		return err
	}
	nargs := map[string]int{"add": 0, "list": 0, "del": 1}
	want, ok := nargs[args[0]]
	if !ok {
		return usageError("resource: unknown command %q (want add, list or del)", args[0])
	}
	if len(pos) != want {
		return usageError("resource %s takes %d argument(s), got %d", args[0], want, len(pos))
	}
	if args[0] == "add" {
		if _, err := sp.build(time.Now()); err != nil {
			return usageError("resource add: %v", err)
		}
	}
	st, err := openStore(ctx, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	switch args[0] {
	case "add":
		r, secret, err := st.addResource(ctx, sp, time.Now())
		if errors.Is(err, errExists) {
			return fmt.Errorf("the resource %s is already registered (oauthd resource del %s first to replace it)", r.URI, r.URI)
		} else if err != nil {
			return err
		}
		return printJSON(stdout, toResourceJSON(r, secret))
	case "list":
		rs, err := st.listResources(ctx)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if err := printJSON(stdout, toResourceJSON(r, "")); err != nil {
				return err
			}
		}
		return nil
	default: // del
		uri, err := canonicalResource(pos[0])
		if err != nil {
			return usageError("resource del: the URI %q %v", pos[0], err)
		}
		if err := st.deleteResource(ctx, uri); errors.Is(err, errNotFound) {
			return fmt.Errorf("no resource %s", uri)
		} else if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "deleted resource %s and its introspection credential; tokens already issued for it introspect as inactive, and JWT access tokens stay valid for local verification until they expire\n", uri)
		return nil
	}
}

// ---- the admin page

// adminResourcesPage is /admin/resources.
type adminResourcesPage struct {
	pageData
	Resources []resource
	Created   *resourceJSON // the resource just added, with its secret (shown once)
	Form      resourceSpec  // what was submitted, for another try
	TTL       string
	Error     string
	Issuer    string // where the introspection endpoint is
}

// renderResources shows the resources page.
func (s *server) renderResources(w http.ResponseWriter, r *http.Request, sess session, status int, page adminResourcesPage) {
	rs, err := s.store.listResources(r.Context())
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	notice := page.Notice
	page.pageData, page.Resources, page.Issuer = s.pageData(sess, "admin"), rs, s.cfg.Issuer
	page.Notice = notice
	s.render(w, status, "admin_resources", page)
}

// handleAdminResources lists the resource servers with a form to add one.
func (s *server) handleAdminResources(w http.ResponseWriter, r *http.Request) {
	if sess, ok := s.requireAdmin(w, r); ok {
		page := adminResourcesPage{}
		page.Notice = s.takeNotice(w, r)
		s.renderResources(w, r, sess, http.StatusOK, page)
	}
}

// handleAdminAddResource registers a resource and shows its credential once.
func (s *server) handleAdminAddResource(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	f := r.PostForm
	sp := resourceSpec{URI: f.Get("uri"), Name: f.Get("name"), Scope: strings.TrimSpace(f.Get("scope")), JWT: f.Get("jwt") == "on"}
	page := adminResourcesPage{Form: sp, TTL: f.Get("token_ttl")}
	if v := strings.TrimSpace(f.Get("token_ttl")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			page.Error = "The token lifetime must be a duration such as 10m or 1h."
			s.renderResources(w, r, sess, http.StatusBadRequest, page)
			return
		}
		sp.TokenTTL = d
	}
	res, secret, err := s.store.addResource(r.Context(), sp, s.now())
	switch {
	case errors.Is(err, errExists):
		page.Error = "The resource " + res.URI + " is already registered."
		s.renderResources(w, r, sess, http.StatusConflict, page)
	case errors.As(err, new(*specError)):
		page.Error = sentence(err)
		s.renderResources(w, r, sess, http.StatusBadRequest, page)
	case err != nil:
		s.serverErrorPage(w, r, err)
	default:
		s.log.Info("resource added by an administrator", "resource", res.URI, "admin", sess.User.Username)
		s.record(r, "admin", sess.User.Username, res.ClientID, "added the resource server "+res.URI)
		created := toResourceJSON(res, secret)
		s.renderResources(w, r, sess, http.StatusOK, adminResourcesPage{Created: &created})
	}
}

// handleAdminDeleteResourcePage asks before a resource server is removed.
func (s *server) handleAdminDeleteResourcePage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	uri := r.URL.Query().Get("uri")
	res, err := s.store.resourceByURI(r.Context(), uri)
	if errors.Is(err, errNotFound) {
		s.renderResources(w, r, sess, http.StatusNotFound, adminResourcesPage{Error: "There is no resource server " + uri + "."})
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.confirm(w, sess, "admin", confirmPage{Title: "Delete " + res.Name + "?",
		Message: "Apps can no longer ask for tokens for " + res.URI + ", and its introspection credential stops working at once. Tokens already issued for it are inactive to introspection; JWT access tokens that a server verifies itself stay valid until they expire.",
		Action:  "/admin/resources/delete?" + url.Values{"uri": {res.URI}}.Encode(), Button: "Delete " + res.Name, Cancel: "/admin/resources"})
}

// handleAdminDeleteResource removes a resource and its credential.
func (s *server) handleAdminDeleteResource(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	uri := r.FormValue("uri")
	err := s.store.deleteResource(r.Context(), uri)
	switch {
	case errors.Is(err, errNotFound):
		s.renderResources(w, r, sess, http.StatusNotFound, adminResourcesPage{Error: "There is no resource server " + uri + "."})
	case err != nil:
		s.serverErrorPage(w, r, err)
	default:
		s.log.Info("resource deleted by an administrator", "resource", uri, "admin", sess.User.Username)
		s.record(r, "admin", sess.User.Username, "", "deleted the resource server "+uri)
		s.seeOther(w, r, "/admin/resources", "The resource server "+uri+" is deleted. Tokens already issued for it are inactive to introspection.")
	}
}
