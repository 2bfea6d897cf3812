package main

import (
	"errors"
	"net/http"
	"time"
)

// Link lifetimes.
const (
	inviteTTL = 7 * 24 * time.Hour
	resetTTL  = 24 * time.Hour
)

// adminPage is /admin/users.
type adminPage struct {
	pageData
	Users         []user
	Error, Notice string
}

// linkPage shows a one-time link once.
type linkPage struct {
	pageData
	Title, Link, What string
}

// requireAdmin returns the session of a signed-in administrator; others get 403.
func (s *server) requireAdmin(w http.ResponseWriter, r *http.Request) (session, bool) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return sess, false
	}
	if !sess.User.Admin {
		s.errorPage(w, http.StatusForbidden, "Administrators only", "This page is for administrators.")
		return sess, false
	}
	if r.Method == http.MethodPost && !s.checkCSRF(r, sess.Hash, "admin") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form is missing its security token. Go back and try again.")
		return sess, false
	}
	return sess, true
}

// renderAdmin shows the users page with a message.
func (s *server) renderAdmin(w http.ResponseWriter, r *http.Request, sess session, status int, errMsg, notice string) {
	users, err := s.store.listUsers(r.Context())
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.render(w, status, "admin_users", adminPage{pageData: s.pageData(sess, "admin"), Users: users, Error: errMsg, Notice: notice})
}

// handleAdminUsers lists users with the administrator's actions.
func (s *server) handleAdminUsers(w http.ResponseWriter, r *http.Request) {
	if sess, ok := s.requireAdmin(w, r); ok {
		s.renderAdmin(w, r, sess, http.StatusOK, "", "")
	}
}

// handleAdminAddUser creates a user with a password the administrator chose.
func (s *server) handleAdminAddUser(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	f := r.PostForm
	var u user
	var err error
	if !s.hashing(w, func() {
		u, err = newUser(f.Get("username"), f.Get("password"), f.Get("admin") == "on", s.cfg.PasswordIter, s.now())
	}) {
		return
	}
	if err == nil {
		err = s.store.createUser(r.Context(), u)
	}
	switch {
	case errors.Is(err, errExists):
		s.renderAdmin(w, r, sess, http.StatusConflict, "A user named "+f.Get("username")+" already exists.", "")
	case errors.As(err, new(*specError)):
		s.renderAdmin(w, r, sess, http.StatusBadRequest, sentence(err), "")
	case err != nil:
		s.serverErrorPage(w, r, err)
	default:
		s.log.Info("user added by an administrator", "user", u.Username, "admin", sess.User.Username)
		s.renderAdmin(w, r, sess, http.StatusOK, "", "User "+u.Username+" added.")
	}
}

// handleAdminInvite makes a one-time invitation link.
func (s *server) handleAdminInvite(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	tok := newSecret()
	if err := s.store.createLink(r.Context(), hashSecret(tok), userLink{Kind: "invite", Admin: r.PostForm.Get("admin") == "on",
		ExpiresAt: s.now().Add(inviteTTL).Unix()}); err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("invitation created", "admin", sess.User.Username)
	s.render(w, http.StatusOK, "link", linkPage{pageData: s.pageData(sess, ""), Title: "Invitation link",
		Link: s.cfg.Issuer + "/invite?token=" + tok, What: "Send this link to the person you invite. It works once, for 7 days."})
}

// handleAdminUserAction disables, enables or makes a password reset link for a user.
func (s *server) handleAdminUserAction(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	name, action := r.PathValue("name"), r.PathValue("action")
	u, err := s.store.userByName(r.Context(), name)
	if errors.Is(err, errNotFound) {
		s.renderAdmin(w, r, sess, http.StatusNotFound, "There is no user named "+name+".", "")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	switch action {
	case "disable", "enable":
		if u.ID == sess.User.ID {
			s.renderAdmin(w, r, sess, http.StatusBadRequest, "You cannot disable yourself.", "")
			return
		}
		if err := s.store.setDisabled(r.Context(), u.Username, action == "disable"); err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("user "+action+"d", "user", u.Username, "admin", sess.User.Username)
		s.renderAdmin(w, r, sess, http.StatusOK, "", "User "+u.Username+" "+action+"d.")
	case "reset":
		tok := newSecret()
		if err := s.store.createLink(r.Context(), hashSecret(tok), userLink{Kind: "reset", UserID: u.ID, ExpiresAt: s.now().Add(resetTTL).Unix()}); err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("password reset link created", "user", u.Username, "admin", sess.User.Username)
		s.render(w, http.StatusOK, "link", linkPage{pageData: s.pageData(sess, ""), Title: "Password reset link for " + u.Username,
			Link: s.cfg.Issuer + "/reset?token=" + tok, What: "Send this link to " + u.Username + ". It works once, for 24 hours, and signs them out everywhere."})
	default:
		s.errorPage(w, http.StatusNotFound, "Unknown action", "The action must be disable, enable or reset.")
	}
}

// linkForm checks a one-time link from the query or the form; it shows an error page if dead.
func (s *server) linkForm(w http.ResponseWriter, r *http.Request, kind, tok string) (userLink, bool) {
	if !s.linkAllowed(w, r) {
		return userLink{}, false
	}
	l, err := s.store.peekLink(r.Context(), hashSecret(tok), kind, s.now().Unix())
	if errors.Is(err, errNotFound) {
		s.linkFailed(r)
		s.errorPage(w, http.StatusForbidden, "Link not valid", "This link is wrong, expired or was already used. Ask your administrator for a new one.")
		return l, false
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return l, false
	}
	return l, true
}

// handleInvitePage shows the invitation form.
func (s *server) handleInvitePage(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if _, ok := s.linkForm(w, r, "invite", tok); ok {
		s.render(w, http.StatusOK, "newaccount", credentialsPage{pageData: pageData{CSRF: s.csrfToken(s.browserID(w, r), "invite")}, Token: tok})
	}
}

// handleInvite creates the invited account and signs it in.
func (s *server) handleInvite(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	tok := f.Get("token")
	if _, ok := s.linkForm(w, r, "invite", tok); !ok {
		return
	}
	bid := s.browserID(w, r)
	page := credentialsPage{pageData: pageData{CSRF: s.csrfToken(bid, "invite")}, Token: tok, Username: f.Get("username")}
	fail := func(status int, msg string) {
		page.Error = msg
		s.render(w, status, "newaccount", page)
	}
	if !s.checkCSRF(r, bid, "invite") {
		fail(http.StatusForbidden, "The form expired. Please try again.")
		return
	}
	if f.Get("password") != f.Get("password2") {
		fail(http.StatusBadRequest, "The two passwords differ.")
		return
	}
	var u user
	var err error
	if !s.hashing(w, func() { u, err = newUser(f.Get("username"), f.Get("password"), false, s.cfg.PasswordIter, s.now()) }) {
		return
	}
	if err != nil {
		fail(http.StatusBadRequest, sentence(err))
		return
	}
	switch err := s.store.acceptInvite(r.Context(), hashSecret(tok), u, s.now().Unix()); {
	case errors.Is(err, errExists):
		fail(http.StatusConflict, "That username is taken; choose another.")
		return
	case errors.Is(err, errNotFound):
		s.errorPage(w, http.StatusForbidden, "Link not valid", "This invitation was already used.")
		return
	case err != nil:
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("invitation accepted", "user", u.Username)
	if u, err := s.store.userByName(r.Context(), u.Username); err != nil || s.startSession(w, r, u) != nil {
		s.serverErrorPage(w, r, errors.New("starting the session of an invited user failed"))
		return
	}
	http.Redirect(w, r, s.path("/"), http.StatusSeeOther)
}

// handleResetPage shows the new-password form.
func (s *server) handleResetPage(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if _, ok := s.linkForm(w, r, "reset", tok); ok {
		s.render(w, http.StatusOK, "reset", credentialsPage{pageData: pageData{CSRF: s.csrfToken(s.browserID(w, r), "reset")}, Token: tok})
	}
}

// handleReset sets the new password; every session of the user ends.
func (s *server) handleReset(w http.ResponseWriter, r *http.Request) {
	f := r.PostForm
	tok := f.Get("token")
	if _, ok := s.linkForm(w, r, "reset", tok); !ok {
		return
	}
	bid := s.browserID(w, r)
	page := credentialsPage{pageData: pageData{CSRF: s.csrfToken(bid, "reset")}, Token: tok}
	if !s.checkCSRF(r, bid, "reset") {
		page.Error = "The form expired. Please try again."
		s.render(w, http.StatusForbidden, "reset", page)
		return
	}
	pw := f.Get("password")
	err := validPassword(pw)
	if err == nil && pw != f.Get("password2") {
		err = errors.New("the two passwords differ")
	}
	if err != nil {
		page.Error = sentence(err)
		s.render(w, http.StatusBadRequest, "reset", page)
		return
	}
	var h string
	if !s.hashing(w, func() { h, err = hashPassword(pw, s.cfg.PasswordIter) }) {
		return
	}
	if err == nil {
		_, err = s.store.resetPassword(r.Context(), hashSecret(tok), h, s.now().Unix())
	}
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusForbidden, "Link not valid", "This reset link was already used.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("password reset through a link")
	s.render(w, http.StatusOK, "message", messagePage{Title: "Password changed", Message: "Your password is changed and every session is signed out. Sign in with the new password."})
}
