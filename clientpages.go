package main

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// The MediaGoblin plugin's client pages, done right: under /oauth/client/, for signed-in
// users, every form CSRF-protected, secrets shown once and stored hashed.

// requireSession returns the session, or sends the browser to log in (GET) or refuses (POST).
func (s *server) requireSession(w http.ResponseWriter, r *http.Request) (session, bool) {
	sess, ok := s.session(r)
	if !ok {
		if r.Method == http.MethodGet {
			s.redirectToLogin(w, r, r.URL.RequestURI(), "")
		} else {
			s.errorPage(w, http.StatusForbidden, "Session ended", "You are no longer signed in.")
		}
	}
	return sess, ok
}

// clientForm is the register and edit form's data.
type clientForm struct {
	pageData
	Edit                                bool
	ID, Name, Description, RedirectURIs string
	Scope, LogoURI, ClientURI, Error    string
	PostLogoutURIs                      string // one per line
	Public, AlwaysRefresh               bool
	Code, ClientCredentials, Device     bool          // the grants ticked
	GroupsShown                         bool          // an administrator: the allow-list can be edited
	Groups                              []groupChoice // the allow-list as checkboxes (groups_admin.go)
	AllowGroups                         []string      // the allow-list, shown to a non-admin owner
	RequireMFA                          bool          // the administrator's "require a second factor" box
	Forward                             bool          // a protected app (forward auth): origins instead of OAuth settings
	ForwardOrigins                      string        // its origins, one per line
}

// errNoGrant is a register/edit form with no grant ticked.
var errNoGrant = &specError{msg: "choose at least one way the application gets tokens (sign-in in the browser, client credentials or device)"}

// formGrants are the grants a register/edit form asks for: the code flow (with refresh
// tokens), client_credentials, the device flow.
func formGrants(f url.Values) []string {
	var g []string
	if f.Get("grant_code") == "on" {
		g = append(g, grantAuthorizationCode, grantRefreshToken)
	}
	if f.Get("grant_client_credentials") == "on" {
		g = append(g, grantClientCredentials)
	}
	if f.Get("grant_device") == "on" {
		g = append(g, grantDeviceCode, grantRefreshToken)
	}
	return g
}

// checkGrantsFor keeps the grants that act without a person at the app's side
// (client_credentials) or that any device may start (device_code) to administrators.
func checkGrantsFor(sess session, grants []string) error {
	if sess.User.Admin {
		return nil
	}
	for _, g := range grants {
		if g == grantClientCredentials || g == grantDeviceCode {
			return &specError{msg: "only an administrator can give an application the " + map[string]string{grantClientCredentials: "client_credentials", grantDeviceCode: "device"}[g] + " grant"}
		}
	}
	return nil
}

// clientListPage lists clients.
type clientListPage struct {
	pageData
	Admin   bool
	Clients []client
	Owners  map[int64]string
}

// secretPage shows a client id and, once, its secret.
type secretPage struct {
	pageData
	Client        client
	Secret, Title string
	Issuer        string // shown with the credentials, with the discovery URL
}

// handleClientRegisterPage shows the registration form.
func (s *server) handleClientRegisterPage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	if !s.userAppsAllowed(w, sess) {
		return
	}
	page := clientForm{pageData: s.pageData(sess, "client"), Code: true, Forward: r.URL.Query().Get("kind") == "forward"}
	if page.Forward && !sess.User.Admin {
		s.errorPage(w, http.StatusForbidden, "Administrators only", "Only administrators put apps behind the proxy's forward auth.")
		return
	}
	if !s.withGroups(w, r, sess, &page, nil) {
		return
	}
	s.render(w, http.StatusOK, "client_form", page)
}

// formSpec reads the register/edit form into a client registration.
func formSpec(f url.Values, owner int64) clientSpec {
	lines := func(v string) []string {
		var out []string
		for _, l := range strings.Split(v, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				out = append(out, l)
			}
		}
		return out
	}
	grants := formGrants(f)
	if f.Get("type") == "forward" { // a protected app (forwardauth.go)
		return clientSpec{Name: f.Get("name"), Description: f.Get("description"), OwnerID: owner, ForwardOrigins: append([]string{}, lines(f.Get("forward_origins"))...)}
	}
	return clientSpec{Name: f.Get("name"), Description: f.Get("description"), Scope: strings.TrimSpace(f.Get("scope")),
		RedirectURIs: lines(f.Get("redirect_uris")), Public: f.Get("type") == "public",
		LogoURI: strings.TrimSpace(f.Get("logo_uri")), ClientURI: strings.TrimSpace(f.Get("client_uri")), OwnerID: owner,
		PostLogoutURIs: lines(f.Get("post_logout_redirect_uris")), AlwaysRefresh: f.Get("always_refresh") == "on", GrantTypes: grants}
}

// errFormExpired is a form whose CSRF token did not check out.
var errFormExpired = errors.New("the form expired")

// echoClientForm fills the register/edit form with what was submitted, for another try.
func (s *server) echoClientForm(sess session, f url.Values) clientForm {
	return clientForm{pageData: s.pageData(sess, "client"), Name: f.Get("name"), Description: f.Get("description"),
		RedirectURIs: f.Get("redirect_uris"), Scope: f.Get("scope"), LogoURI: f.Get("logo_uri"), ClientURI: f.Get("client_uri"),
		Public: f.Get("type") == "public", PostLogoutURIs: f.Get("post_logout_redirect_uris"), AlwaysRefresh: f.Get("always_refresh") == "on",
		Code: f.Get("grant_code") == "on", ClientCredentials: f.Get("grant_client_credentials") == "on", Device: f.Get("grant_device") == "on", RequireMFA: f.Get("require_mfa") == "on",
		Forward: f.Get("type") == "forward", ForwardOrigins: f.Get("forward_origins")}
}

// refuseClientForm answers a register/edit form that was not saved: an expired form (403) or
// invalid input (400) goes back to the user with the reason; anything else is a storage fault.
func (s *server) refuseClientForm(w http.ResponseWriter, r *http.Request, page clientForm, err error) {
	var se *specError
	switch {
	case errors.Is(err, errFormExpired):
		page.Error = "The form expired. Please try again."
		s.render(w, http.StatusForbidden, "client_form", page)
	case errors.As(err, &se):
		page.Error = sentence(err)
		s.render(w, http.StatusBadRequest, "client_form", page)
	default:
		s.serverErrorPage(w, r, err)
	}
}

// userAppsAllowed refuses (403, after answering) a non-administrator when -user-apps=false
// keeps app registration to administrators.
func (s *server) userAppsAllowed(w http.ResponseWriter, sess session) bool {
	if s.cfg.UserApps || sess.User.Admin {
		return true
	}
	s.errorPage(w, http.StatusForbidden, "Administrators only", "On this server only administrators register applications. Ask yours to register the app for you.")
	return false
}

// checkScopesFor limits a non-admin's client to the scopes this server already offers.
func (s *server) checkScopesFor(r *http.Request, sess session, scope string) error {
	if sess.User.Admin {
		return nil
	}
	known, err := s.store.allScopes(r.Context())
	if err != nil {
		return err
	}
	scopes, _ := parseScope(scope)
	for _, sc := range scopes {
		if !slices.Contains(known, sc) && !slices.Contains(builtinScopes, sc) {
			return &specError{msg: "the scope " + sc + " is not offered by this server; ask an administrator"}
		}
	}
	return nil
}

// handleClientRegister registers a client for the signed-in user and shows its secret once.
func (s *server) handleClientRegister(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	f := r.PostForm
	page := s.echoClientForm(sess, f)
	allow := checkedGroups(f, "allow:")
	if !s.withGroups(w, r, sess, &page, allow) {
		return
	}
	if !s.checkCSRF(r, sess.Hash, "client") {
		s.refuseClientForm(w, r, page, errFormExpired)
		return
	}
	if !s.userAppsAllowed(w, sess) {
		return
	}
	sp := formSpec(f, sess.User.ID)
	sp.Vetted = sess.User.Admin // a user's own app is not vetted (RFC 9700 §4.11.2)
	sp.RequireMFA = adminRequireMFA(sess, f)
	c, err := client{}, error(errNoGrant)
	if sp.ForwardOrigins != nil {
		if err = s.checkForwardForm(sess, sp); err == nil {
			c, err = sp.build()
		}
	} else if len(sp.GrantTypes) > 0 {
		c, err = sp.build()
	}
	if err == nil {
		err = s.checkScopesFor(r, sess, sp.Scope)
	}
	if err == nil {
		err = checkGrantsFor(sess, c.GrantTypes)
	}
	if err != nil {
		s.refuseClientForm(w, r, page, err)
		return
	}
	c.CreatedAt = s.now().Unix()
	secret := c.issueSecret()
	if !sess.User.Admin {
		allow = nil // only administrators restrict who may use an app
	}
	if err := s.store.createClientInGroups(r.Context(), c, allow); err != nil {
		s.refuseClientForm(w, r, page, pageError(err))
		return
	}
	s.log.Info("client registered on the pages", "client_id", c.ID, "user", sess.User.Username)
	if len(c.ForwardOrigins) > 0 {
		s.seeOther(w, r, "/oauth/client/list", c.Name+" is protected at "+strings.Join(c.ForwardOrigins, ", ")+": point the proxy's forward auth at "+
			s.cfg.Issuer+"/oauth/forward-auth (see the README).")
		return
	}
	s.render(w, http.StatusCreated, "client_secret", secretPage{pageData: s.pageData(sess, ""), Client: c, Secret: secret, Title: "Application registered", Issuer: s.cfg.Issuer})
}

// handleClientList lists the user's own clients; an admin sees every client.
func (s *server) handleClientList(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	all, err := s.store.listClients(r.Context())
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	mine := all
	if !sess.User.Admin {
		mine = slices.DeleteFunc(all, func(c client) bool { return c.OwnerID != sess.User.ID })
	}
	owners := map[int64]string{}
	if sess.User.Admin {
		users, err := s.store.listUsers(r.Context())
		if err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		for _, u := range users {
			owners[u.ID] = u.Username
		}
	}
	page := clientListPage{pageData: s.pageData(sess, "client"), Admin: sess.User.Admin, Clients: mine, Owners: owners}
	page.Notice = s.takeNotice(w, r)
	s.render(w, http.StatusOK, "clients", page)
}

// ownedClient loads the client in the path if the user owns it or is an admin; otherwise
// the answer is a 404 page (no hint that the client exists).
func (s *server) ownedClient(w http.ResponseWriter, r *http.Request, sess session) (client, bool) {
	c, err := s.store.clientByID(r.Context(), r.PathValue("id"))
	if err != nil && !errors.Is(err, errNotFound) {
		s.serverErrorPage(w, r, err)
		return c, false
	}
	if err != nil || (!sess.User.Admin && c.OwnerID != sess.User.ID) {
		s.errorPage(w, http.StatusNotFound, "No such application", "There is no application with this id among yours.")
		return c, false
	}
	return c, true
}

// handleClientEditPage shows a client's settings.
func (s *server) handleClientEditPage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	c, ok := s.ownedClient(w, r, sess)
	if !ok {
		return
	}
	page := clientForm{pageData: s.pageData(sess, "client"), Edit: true, ID: c.ID, Name: c.Name,
		Description: c.Description, RedirectURIs: strings.Join(c.RedirectURIs, "\n"), Scope: strings.Join(c.Scopes, " "),
		LogoURI: c.LogoURI, ClientURI: c.ClientURI, Public: c.Public, PostLogoutURIs: strings.Join(c.PostLogoutURIs, "\n"),
		AlwaysRefresh: c.AlwaysRefresh, Code: slices.Contains(c.GrantTypes, grantAuthorizationCode),
		ClientCredentials: slices.Contains(c.GrantTypes, grantClientCredentials), Device: slices.Contains(c.GrantTypes, grantDeviceCode),
		AllowGroups: c.AllowGroups, RequireMFA: c.RequireMFA, Forward: len(c.ForwardOrigins) > 0, ForwardOrigins: strings.Join(c.ForwardOrigins, "\n")}
	if s.withGroups(w, r, sess, &page, c.AllowGroups) {
		s.render(w, http.StatusOK, "client_form", page)
	}
}

// handleClientEdit saves a client's settings; its type and grants stay.
func (s *server) handleClientEdit(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	c, ok := s.ownedClient(w, r, sess)
	if !ok {
		return
	}
	f := r.PostForm
	page := s.echoClientForm(sess, f)
	page.Edit, page.ID, page.Public, page.AllowGroups = true, c.ID, c.Public, c.AllowGroups
	forward := len(c.ForwardOrigins) > 0
	page.Forward = forward
	allow := checkedGroups(f, "allow:")
	if !s.withGroups(w, r, sess, &page, allow) {
		return
	}
	if !s.checkCSRF(r, sess.Hash, "client") {
		s.refuseClientForm(w, r, page, errFormExpired)
		return
	}
	sp := formSpec(f, c.OwnerID)
	sp.Public, sp.IDTokenAlg, sp.Dynamic = c.Public, c.IDTokenAlg, c.Dynamic
	sp.RequireMFA = adminRequireMFA(sess, f)
	old := c.GrantTypes
	err := error(errNoGrant)
	switch {
	case forward != (sp.ForwardOrigins != nil):
		err = &specError{msg: "an application stays what it was registered as: an OAuth client, or a protected app behind the proxy"}
	case forward:
		if err = s.checkForwardForm(sess, sp); err == nil {
			err = sp.apply(&c)
		}
	case len(sp.GrantTypes) > 0:
		err = sp.apply(&c)
	}
	if err == nil {
		err = s.checkScopesFor(r, sess, sp.Scope)
	}
	if err == nil && !sess.User.Admin {
		// A user keeps the machine grants an administrator gave the app, and cannot add them.
		for _, g := range []string{grantClientCredentials, grantDeviceCode} {
			if slices.Contains(c.GrantTypes, g) && !slices.Contains(old, g) {
				err = checkGrantsFor(sess, []string{g})
			}
		}
	}
	if err == nil && c.Dynamic && !slices.Equal(c.GrantTypes, old) {
		err = &specError{msg: "a self-registered application's grants change only through its registration endpoint (RFC 7592)"}
	}
	if err != nil {
		s.refuseClientForm(w, r, page, err)
		return
	}
	if sess.User.Admin { // only administrators restrict or widen who may use an app
		_, err = s.store.updateClientInGroups(r.Context(), c, allow)
	} else {
		err = s.store.updateClient(r.Context(), c)
	}
	if err != nil {
		s.refuseClientForm(w, r, page, pageError(err))
		return
	}
	s.log.Info("client edited on the pages", "client_id", c.ID, "user", sess.User.Username)
	s.seeOther(w, r, "/oauth/client/list", c.Name+" is saved.")
}

// handleClientRotatePage asks before the secret is replaced: the app breaks until it has the
// new one.
func (s *server) handleClientRotatePage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	if c, ok := s.ownedClient(w, r, sess); ok {
		s.confirm(w, sess, "client", confirmPage{Title: "Rotate the secret of " + c.Name + "?",
			Message: "The current secret stops working at once: " + c.Name + " cannot sign anyone in, refresh or introspect until its configuration has the new secret, which is shown once on the next page.",
			Action:  "/oauth/client/" + url.PathEscape(c.ID) + "/rotate", Button: "Rotate the secret", Cancel: "/oauth/client/list"})
	}
}

// handleClientRotate replaces a confidential client's secret and shows the new one once.
func (s *server) handleClientRotate(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	c, ok := s.ownedClient(w, r, sess)
	if !ok {
		return
	}
	if !s.checkCSRF(r, sess.Hash, "client") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form is missing its security token. Go back and try again.")
		return
	}
	if c.Public {
		s.errorPage(w, http.StatusBadRequest, "No secret", "A public application has no secret to rotate.")
		return
	}
	secret := c.issueSecret()
	if err := s.store.setClientSecret(r.Context(), c.ID, c.SecretHash); err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("client secret rotated on the pages", "client_id", c.ID, "user", sess.User.Username)
	s.render(w, http.StatusOK, "client_secret", secretPage{pageData: s.pageData(sess, ""), Client: c, Secret: secret, Title: "New secret", Issuer: s.cfg.Issuer})
}

// handleClientDeletePage asks for confirmation before deleting.
func (s *server) handleClientDeletePage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	if c, ok := s.ownedClient(w, r, sess); ok {
		s.render(w, http.StatusOK, "client_delete", secretPage{pageData: s.pageData(sess, "client"), Client: c})
	}
}

// handleClientDelete deletes a client with its consents, codes and tokens.
func (s *server) handleClientDelete(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	c, ok := s.ownedClient(w, r, sess)
	if !ok {
		return
	}
	if !s.checkCSRF(r, sess.Hash, "client") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form is missing its security token. Go back and try again.")
		return
	}
	if err := s.store.deleteClient(r.Context(), c.ID); err != nil && !errors.Is(err, errNotFound) {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("client deleted on the pages", "client_id", c.ID, "user", sess.User.Username)
	s.seeOther(w, r, "/oauth/client/list", c.Name+" is deleted, with every token it held.")
}

// connectionsPage lists the apps the user has authorized.
type connectionsPage struct {
	pageData
	Connections []connection
}

// handleConnections lists every app the user has authorized.
func (s *server) handleConnections(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	cs, err := s.store.connections(r.Context(), sess.User.ID)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	page := connectionsPage{pageData: s.pageData(sess, "connection"), Connections: cs}
	page.Notice = s.takeNotice(w, r)
	s.render(w, http.StatusOK, "connections", page)
}

// handleConnectionRevokePage asks before an app loses its access.
func (s *server) handleConnectionRevokePage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	c, err := s.store.clientByID(r.Context(), r.PathValue("id"))
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusNotFound, "No such connection", "You have not authorized this application.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	msg := c.Name + " is signed out at once: every token it holds for you stops working, and it must ask for your approval again."
	if len(c.ForwardOrigins) > 0 { // a protected app (forwardauth.go)
		msg = "You are signed out of " + c.Name + " at once, in every browser. Opening it again signs you in again through this service."
	}
	s.confirm(w, sess, "connection", confirmPage{Title: "Revoke " + c.Name + "?", Message: msg,
		Action: "/oauth/client/connections/" + url.PathEscape(c.ID) + "/revoke", Button: "Revoke access", Cancel: "/oauth/client/connections"})
}

// handleConnectionRevoke forgets the consent and revokes every token of that app at once.
func (s *server) handleConnectionRevoke(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	if !s.checkCSRF(r, sess.Hash, "connection") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form is missing its security token. Go back and try again.")
		return
	}
	err := s.store.revokeConnection(r.Context(), sess.User.ID, r.PathValue("id"))
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusNotFound, "No such connection", "You have not authorized this application.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("connection revoked by the user", "client_id", r.PathValue("id"), "user", sess.User.Username)
	s.record(r, "revocation", sess.User.Username, r.PathValue("id"), "revoked the app's access")
	s.seeOther(w, r, "/oauth/client/connections", "The application's access is revoked.")
}

// date formats unix seconds for the pages.
func date(t int64) string {
	if t == 0 {
		return "never"
	}
	return time.Unix(t, 0).UTC().Format("2006-01-02 15:04 UTC")
}
