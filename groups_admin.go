package main

// The administrators' pages of groups, per-app access and claims (issue 12): /admin/groups
// (list and create), /admin/groups/{name} (description, members, claims, and the apps
// limited to the group), the confirmation page before a group is deleted, naming every app
// whose allow-list it leaves, and /admin/users/{name}, where an administrator changes a
// user's display name, email and its verified flag, admin role, groups and claims. Every
// form is CSRF-protected (s.form and requireAdmin's "admin" token).

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// groupsPage is /admin/groups.
type groupsPage struct {
	pageData
	Groups            []group
	Name, Description string // the create form, echoed after a refusal
	Error, Notice     string
}

// groupPage is /admin/groups/{name}.
type groupPage struct {
	pageData
	Group                 group
	Members               []user
	Others                []string // usernames that are not members: the add form's suggestions
	Claims                []claim
	Clients               []client // apps whose allow-list names the group
	ClaimName, ClaimValue string   // the claim form, echoed after a refusal
	Error, Notice         string
}

// groupDeletePage confirms the deletion of a group.
type groupDeletePage struct {
	pageData
	Group   group
	Clients []allowImpact
}

// allowImpact is what deleting a group does to one app that allows it.
type allowImpact struct {
	Client client
	Others []string // the groups it still allows afterwards; none: it becomes open to every user
}

// groupChoice is a group as a checkbox.
type groupChoice struct {
	Name, Description string
	Checked           bool
}

// adminUserPage is /admin/users/{name}.
type adminUserPage struct {
	pageData
	U                     user
	Groups                []groupChoice
	Claims                []claim // the user's own
	Released              []claim // everything the profile scope releases (own and from groups)
	ClaimName, ClaimValue string
	Error, Notice         string
}

// groupChoices lists every group as a checkbox, checked when named in checked.
func groupChoices(all []group, checked []string) []groupChoice {
	out := make([]groupChoice, 0, len(all))
	for _, g := range all {
		out = append(out, groupChoice{Name: g.Name, Description: g.Description,
			Checked: slices.ContainsFunc(checked, func(c string) bool { return strings.EqualFold(c, g.Name) })})
	}
	return out
}

// checkedGroups reads the group checkboxes of a form: fields named prefix+NAME (one field per
// group, since the form wrapper refuses repeated fields).
func checkedGroups(f url.Values, prefix string) []string {
	var out []string
	for k := range f {
		if name, ok := strings.CutPrefix(k, prefix); ok && f.Get(k) != "" {
			out = append(out, name)
		}
	}
	return sortedGroups(out)
}

// pageMessage is an error for a page: validation and unknown names as they are, anything
// else is a storage fault (ok false).
func pageMessage(err error) (string, bool) {
	var se *specError
	var me *missingError
	switch {
	case errors.As(err, &se):
		return sentence(err), true
	case errors.As(err, &me):
		return sentence(err), true
	case errors.Is(err, errLastAdmin):
		return sentence(err), true
	}
	return "", false
}

// renderGroups shows /admin/groups.
func (s *server) renderGroups(w http.ResponseWriter, r *http.Request, status int, page groupsPage) {
	gs, err := s.store.listGroups(r.Context())
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	page.Groups = gs
	s.render(w, status, "groups", page)
}

// handleAdminGroups lists the groups with a form to create one.
func (s *server) handleAdminGroups(w http.ResponseWriter, r *http.Request) {
	if sess, ok := s.requireAdmin(w, r); ok {
		s.renderGroups(w, r, http.StatusOK, groupsPage{pageData: s.pageData(sess, "admin")})
	}
}

// handleAdminAddGroup creates a group.
func (s *server) handleAdminAddGroup(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	name, desc := strings.TrimSpace(r.PostForm.Get("name")), strings.TrimSpace(r.PostForm.Get("description"))
	page := groupsPage{pageData: s.pageData(sess, "admin"), Name: name, Description: desc}
	err := validGroupName(name)
	if err == nil {
		err = validGroupDescription(desc)
	}
	if err != nil {
		page.Error = sentence(err)
		s.renderGroups(w, r, http.StatusBadRequest, page)
		return
	}
	switch err := s.store.createGroup(r.Context(), group{Name: name, Description: desc, CreatedAt: s.now().Unix()}); {
	case errors.Is(err, errExists):
		page.Error = "A group named " + name + " already exists (names are compared without case)."
		s.renderGroups(w, r, http.StatusConflict, page)
	case err != nil:
		s.serverErrorPage(w, r, err)
	default:
		s.log.Info("group created", "group", name, "admin", sess.User.Username)
		s.renderGroups(w, r, http.StatusOK, groupsPage{pageData: page.pageData, Notice: "Group " + name + " created."})
	}
}

// adminGroup loads the group named in the path, or answers 404.
func (s *server) adminGroup(w http.ResponseWriter, r *http.Request) (group, bool) {
	g, err := s.store.groupByName(r.Context(), r.PathValue("name"))
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusNotFound, "No such group", "There is no group named "+r.PathValue("name")+".")
		return g, false
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return g, false
	}
	return g, true
}

// renderGroup shows a group's page, reloaded from the database.
func (s *server) renderGroup(w http.ResponseWriter, r *http.Request, status int, page groupPage) {
	ctx := r.Context()
	g, err := s.store.groupByName(ctx, page.Group.Name)
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusNotFound, "No such group", "There is no group named "+page.Group.Name+".")
		return
	}
	var all []user
	if err == nil {
		page.Group = g
		page.Members, err = s.store.groupMembers(ctx, g.ID)
	}
	if err == nil {
		all, err = s.store.listUsers(ctx)
	}
	if err == nil {
		page.Claims, err = s.store.ownClaims(ctx, "group", g.ID)
	}
	if err == nil {
		page.Clients, err = s.store.clientsAllowing(ctx, g.ID)
	}
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	page.Others = nil
	for _, u := range all {
		if !slices.ContainsFunc(page.Members, func(m user) bool { return m.ID == u.ID }) {
			page.Others = append(page.Others, u.Username)
		}
	}
	s.render(w, status, "groups_edit", page)
}

// handleAdminGroup shows one group: description, members, claims, the apps it opens.
func (s *server) handleAdminGroup(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	if g, ok := s.adminGroup(w, r); ok {
		s.renderGroup(w, r, http.StatusOK, groupPage{pageData: s.pageData(sess, "admin"), Group: g})
	}
}

// handleAdminGroupDeletePage asks before a group is deleted, naming every app whose
// allow-list it leaves and what that does to the app.
func (s *server) handleAdminGroupDeletePage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	g, ok := s.adminGroup(w, r)
	if !ok {
		return
	}
	cs, err := s.store.clientsAllowing(r.Context(), g.ID)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	page := groupDeletePage{pageData: s.pageData(sess, "admin"), Group: g}
	for _, c := range cs {
		others := slices.DeleteFunc(slices.Clone(c.AllowGroups), func(n string) bool { return strings.EqualFold(n, g.Name) })
		page.Clients = append(page.Clients, allowImpact{Client: c, Others: others})
	}
	s.render(w, http.StatusOK, "groups_delete", page)
}

// handleAdminGroupAction changes a group: describe, add-member, remove-member, claim (set,
// or remove) and delete (after the confirmation page).
func (s *server) handleAdminGroupAction(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	g, ok := s.adminGroup(w, r)
	if !ok {
		return
	}
	ctx, f, admin := r.Context(), r.PostForm, sess.User.Username
	page := groupPage{pageData: s.pageData(sess, "admin"), Group: g}
	refuse := func(err error) {
		msg, ok := pageMessage(err)
		if !ok {
			s.serverErrorPage(w, r, err)
			return
		}
		page.Error = msg
		s.renderGroup(w, r, http.StatusBadRequest, page)
	}
	switch r.PathValue("action") {
	case "describe":
		desc := strings.TrimSpace(f.Get("description"))
		if err := validGroupDescription(desc); err != nil {
			refuse(&specError{msg: err.Error()})
			return
		}
		if err := s.store.setGroupDescription(ctx, g.Name, desc); err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("group description changed", "group", g.Name, "admin", admin)
		page.Notice = "Description saved."
	case "add-member":
		name := strings.TrimSpace(f.Get("username"))
		added, err := s.store.addMembers(ctx, g.Name, []string{name})
		if err != nil {
			refuse(err)
			return
		}
		s.log.Info("group member added", "group", g.Name, "user", name, "admin", admin)
		page.Notice = name + " is now a member."
		if len(added) == 0 {
			page.Notice = name + " was already a member."
		}
	case "remove-member":
		name := f.Get("username")
		_, revoked, err := s.store.removeMembers(ctx, g.Name, []string{name})
		if err != nil {
			refuse(err)
			return
		}
		s.log.Info("group member removed", "group", g.Name, "user", name, "admin", admin, "grants_revoked", revoked)
		page.Notice = fmt.Sprintf("%s is no longer a member; %d grant(s) of applications they may no longer use were revoked.", name, revoked)
	case "claim":
		page.ClaimName, page.ClaimValue = f.Get("claim_name"), f.Get("claim_value")
		set, del, err := claimForm(f)
		if err == nil {
			_, err = s.store.setClaims(ctx, "group", g.Name, set, del)
		}
		if err != nil {
			refuse(err)
			return
		}
		s.log.Info("group claims changed", "group", g.Name, "admin", admin)
		page.ClaimName, page.ClaimValue, page.Notice = "", "", "Claims saved."
	case "delete":
		clients, revoked, err := s.store.deleteGroup(ctx, g.Name)
		if err != nil && !errors.Is(err, errNotFound) {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("group deleted", "group", g.Name, "admin", admin, "grants_revoked", revoked)
		msg := "Group " + g.Name + " deleted."
		for _, c := range clients {
			msg += " Removed from the allowed groups of " + c.Name
			if len(c.AllowGroups) == 1 {
				msg += ", which is now open to every user"
			}
			msg += "."
		}
		s.renderGroups(w, r, http.StatusOK, groupsPage{pageData: page.pageData, Notice: msg + fmt.Sprintf(" %d grant(s) revoked.", revoked)})
		return
	default:
		s.errorPage(w, http.StatusNotFound, "Unknown action", "The action must be describe, add-member, remove-member, claim or delete.")
		return
	}
	s.renderGroup(w, r, http.StatusOK, page)
}

// claimForm reads a claim form: remove=NAME removes a claim; claim_name and claim_value set
// one.
func claimForm(f url.Values) ([]claim, []string, error) {
	if n := f.Get("remove"); n != "" {
		return nil, []string{n}, nil
	}
	name := strings.TrimSpace(f.Get("claim_name"))
	if err := validClaimName(name); err != nil {
		return nil, nil, &specError{msg: err.Error()}
	}
	v, err := parseClaimValue(name, f.Get("claim_value"))
	if err != nil {
		return nil, nil, &specError{msg: err.Error()}
	}
	return []claim{{Name: name, Value: v}}, nil, nil
}

// ---- users

// renderAdminUser shows a user's page, reloaded from the database.
func (s *server) renderAdminUser(w http.ResponseWriter, r *http.Request, status int, page adminUserPage) {
	ctx := r.Context()
	u, err := s.store.userByName(ctx, page.U.Username)
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusNotFound, "No such user", "There is no user named "+page.U.Username+".")
		return
	}
	var all []group
	var acc userGroups
	if err == nil {
		page.U = u
		all, err = s.store.listGroups(ctx)
	}
	if err == nil {
		acc, err = s.store.loadAccess(ctx, u.ID)
	}
	if err == nil {
		page.Claims, err = s.store.ownClaims(ctx, "user", u.ID)
	}
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	page.Groups, page.Released = groupChoices(all, acc.Groups), acc.Claims
	s.render(w, status, "admin_user", page)
}

// handleAdminUser shows one user with the forms that change them.
func (s *server) handleAdminUser(w http.ResponseWriter, r *http.Request) {
	if sess, ok := s.requireAdmin(w, r); ok {
		s.renderAdminUser(w, r, http.StatusOK, adminUserPage{pageData: s.pageData(sess, "admin"), U: user{Username: r.PathValue("name")}})
	}
}

// handleAdminUserEdit saves a user's display name, email, verified flag, admin role and
// groups at once. The last enabled administrator keeps their role.
func (s *server) handleAdminUserEdit(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	f := r.PostForm
	page := adminUserPage{pageData: s.pageData(sess, "admin"), U: user{Username: r.PathValue("name")}}
	name, email := strings.TrimSpace(f.Get("name")), strings.TrimSpace(f.Get("email"))
	if err := validProfile(name, email); err != nil {
		page.Error = sentence(err)
		s.renderAdminUser(w, r, http.StatusBadRequest, page)
		return
	}
	verified, admin, groups := f.Get("email_verified") != "", f.Get("admin") != "", checkedGroups(f, "group:")
	u, err := s.store.updateUser(r.Context(), page.U.Username, userChange{Name: &name, Email: &email, EmailVerified: &verified,
		Admin: &admin, Groups: &groups}, s.now().Unix())
	if errors.Is(err, errNotFound) && !errors.As(err, new(*missingError)) {
		s.errorPage(w, http.StatusNotFound, "No such user", "There is no user named "+page.U.Username+".")
		return
	}
	if err != nil {
		msg, ok := pageMessage(err)
		if !ok {
			s.serverErrorPage(w, r, err)
			return
		}
		page.Error = msg
		s.renderAdminUser(w, r, http.StatusBadRequest, page)
		return
	}
	s.log.Info("user changed by an administrator", "user", u.Username, "admin", sess.User.Username)
	page.Notice = "Saved."
	if u.ID == sess.User.ID && !u.Admin {
		// No longer an administrator: this page is closed to them now.
		s.render(w, http.StatusOK, "message", messagePage{pageData: s.pageData(session{User: u}, ""), Title: "Saved",
			Message: "You are no longer an administrator."})
		return
	}
	s.renderAdminUser(w, r, http.StatusOK, page)
}

// handleAdminUserClaims sets or removes one of a user's custom claims.
func (s *server) handleAdminUserClaims(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	f := r.PostForm
	page := adminUserPage{pageData: s.pageData(sess, "admin"), U: user{Username: r.PathValue("name")},
		ClaimName: f.Get("claim_name"), ClaimValue: f.Get("claim_value")}
	set, del, err := claimForm(f)
	if err == nil {
		_, err = s.store.setClaims(r.Context(), "user", page.U.Username, set, del)
	}
	if err != nil {
		msg, ok := pageMessage(err)
		if !ok {
			s.serverErrorPage(w, r, err)
			return
		}
		page.Error = msg
		s.renderAdminUser(w, r, http.StatusBadRequest, page)
		return
	}
	s.log.Info("user claims changed by an administrator", "user", page.U.Username, "admin", sess.User.Username)
	page.ClaimName, page.ClaimValue, page.Notice = "", "", "Claims saved."
	s.renderAdminUser(w, r, http.StatusOK, page)
}

// ---- the client form's allow-list

// withGroups fills the client form's allow-list for an administrator: every group as a
// checkbox, checked as given. Others see the list read-only (AllowGroups) and cannot change
// it: a user's own app cannot restrict or widen itself.
func (s *server) withGroups(w http.ResponseWriter, r *http.Request, sess session, page *clientForm, checked []string) bool {
	if !sess.User.Admin {
		return true
	}
	all, err := s.store.listGroups(r.Context())
	if err != nil {
		s.serverErrorPage(w, r, err)
		return false
	}
	page.GroupsShown, page.Groups = true, groupChoices(all, checked)
	return true
}

// pageError makes an unknown group (deleted while the form was open) a validation error.
func pageError(err error) error {
	var me *missingError
	if errors.As(err, &me) {
		return &specError{msg: me.Error()}
	}
	return err
}
