package main

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
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
	Groups        map[int64][]string // each user's groups (groups.go)
	Factors       map[int64]int      // second factors per user id (mfa.go)
	Error, Notice string
	Mail          bool // invitations can be mailed
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

// renderAdmin shows the users page with a message (a notice that a redirect carried when
// notice is empty).
func (s *server) renderAdmin(w http.ResponseWriter, r *http.Request, sess session, status int, errMsg, notice string) {
	if notice == "" && r.Method == http.MethodGet {
		notice = s.takeNotice(w, r)
	}
	users, err := s.store.listUsers(r.Context())
	var groups map[int64][]string
	if err == nil {
		groups, err = s.store.groupsByUser(r.Context())
	}
	var factors map[int64]int
	if err == nil {
		factors, err = s.store.factorCounts(r.Context())
	}
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.render(w, status, "admin_users", adminPage{pageData: s.pageData(sess, "admin"), Users: users, Groups: groups, Factors: factors, Error: errMsg, Notice: notice, Mail: s.mail != nil})
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
		s.record(r, "admin", sess.User.Username, "", "added the user "+u.Username)
		s.seeOther(w, r, "/admin/users", "User "+u.Username+" added.")
	}
}

// handleAdminInvite makes a one-time invitation link.
func (s *server) handleAdminInvite(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	to := strings.TrimSpace(r.PostForm.Get("email"))
	if to != "" {
		if s.mail == nil {
			s.renderAdmin(w, r, sess, http.StatusBadRequest, "This server sends no mail (start it with -smtp): create the link without an address and send it yourself.", "")
			return
		}
		if err := validProfile("", to); err != nil {
			s.renderAdmin(w, r, sess, http.StatusBadRequest, sentence(err), "")
			return
		}
	}
	tok := newSecret()
	if err := s.store.createLink(r.Context(), hashSecret(tok), userLink{Kind: "invite", Admin: r.PostForm.Get("admin") == "on",
		Email: to, ExpiresAt: s.now().Add(inviteTTL).Unix()}); err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	link := s.cfg.Issuer + "/invite?token=" + tok
	if to != "" {
		s.queueMail(to, "You are invited to "+s.cfg.Name, sess.User.Username+" invites you to create an account at "+s.cfg.Name+
			".\n\nChoose your username and password here (the link works once, for 7 days):\n\n"+link+"\n")
		s.log.Info("invitation mailed", "admin", sess.User.Username, "to", to)
		s.render(w, http.StatusOK, "link", linkPage{pageData: s.pageData(sess, ""), Title: "Invitation sent",
			Link: link, What: "The invitation is on its way to " + to + ". The link works once, for 7 days; you can also pass it on yourself."})
		return
	}
	s.log.Info("invitation created", "admin", sess.User.Username)
	s.record(r, "admin", sess.User.Username, "", "created an invitation")
	s.render(w, http.StatusOK, "link", linkPage{pageData: s.pageData(sess, ""), Title: "Invitation link",
		Link: s.cfg.Issuer + "/invite?token=" + tok, What: "Send this link to the person you invite. It works once, for 7 days."})
}

// handleAdminDisablePage asks before a user is disabled: it ends their sessions and revokes
// every app's access.
func (s *server) handleAdminDisablePage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireAdmin(w, r)
	if !ok {
		return
	}
	u, err := s.store.userByName(r.Context(), r.PathValue("name"))
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusNotFound, "No such user", "There is no user named "+r.PathValue("name")+".")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.confirm(w, sess, "admin", confirmPage{Title: "Disable " + u.Username + "?",
		Message: u.Username + " is signed out everywhere and cannot sign in, and every app they authorized loses its access at once (every token is revoked). Enabling them again later does not bring the tokens back.",
		Action:  "/admin/users/" + url.PathEscape(u.Username) + "/disable", Button: "Disable " + u.Username, Cancel: "/admin/users"})
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
		s.record(r, "admin", sess.User.Username, "", action+"d the user "+u.Username)
		s.seeOther(w, r, "/admin/users", "User "+u.Username+" "+action+"d.")
	case "reset":
		tok := newSecret()
		if err := s.store.createLink(r.Context(), hashSecret(tok), userLink{Kind: "reset", UserID: u.ID, EndAccess: true, ExpiresAt: s.now().Add(resetTTL).Unix()}); err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.log.Info("password reset link created; the user's sessions, grants, tokens and consents are ended", "user", u.Username, "admin", sess.User.Username)
		what := u.Username + " is now signed out everywhere, and every application they had authorized has lost its access (tokens revoked, approvals forgotten); earlier reset links no longer work. " +
			"Send this link to " + u.Username + ": it works once, for 24 hours, and setting the new password through it ends everything again."
		data := pageData{}
		if u.ID != sess.User.ID {
			data = s.pageData(sess, "")
		} else {
			what += " Your own session has ended too."
		}
		s.render(w, http.StatusOK, "link", linkPage{pageData: data, Title: "Password reset link for " + u.Username,
			Link: s.cfg.Issuer + "/reset?token=" + tok, What: what})
	case "mfa-reset":
		s.handleAdminResetMFA(w, r, sess, u)
	default:
		s.errorPage(w, http.StatusNotFound, "Unknown action", "The action must be disable, enable, reset or mfa-reset.")
	}
}

// linkForm checks a one-time link from the query or the form; it shows an error page if dead.
func (s *server) linkForm(w http.ResponseWriter, r *http.Request, kind, tok string) (userLink, bool) {
	if !s.linkAllowed(w, r) {
		return userLink{}, false
	}
	l, err := s.store.peekLink(r.Context(), hashSecret(tok), kind, s.now().Unix())
	s.linkChecked(r, !errors.Is(err, errNotFound))
	if errors.Is(err, errNotFound) {
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

// handleReset sets the new password; every session, grant, token, code and remembered
// consent of the user ends with it (store.resetPassword).
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
	var uid int64
	if err == nil {
		uid, err = s.store.resetPassword(r.Context(), hashSecret(tok), h, s.now().Unix())
	}
	if errors.Is(err, errNotFound) {
		s.errorPage(w, http.StatusForbidden, "Link not valid", "This reset link was already used.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("password reset through a link; the user's sessions, grants, tokens and consents are ended", "user_id", uid)
	s.render(w, http.StatusOK, "message", messagePage{Title: "Password changed", Message: "Your password is changed. Every session is signed out, " +
		"and every application you had authorized has lost its access: its tokens are revoked and it must ask for your approval again. Sign in with the new password."})
}
