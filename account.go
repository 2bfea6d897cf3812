package main

// Self-service on /account beyond the profile: changing the password (the current one
// required; other sessions end, and by default every app's tokens are revoked) and the list
// of the user's active sessions (when, from which address and browser), each of which, or all
// others, can be ended.

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
)

// appAccess is what "also sign out every app" revokes: the grants with their tokens, codes,
// device approvals not yet collected, and remembered consents.
var appAccess = []string{"DELETE FROM grants WHERE user_id = ?", "DELETE FROM codes WHERE user_id = ?",
	"DELETE FROM device_codes WHERE user_id = ?", "DELETE FROM consents WHERE user_id = ?"}

// sessionInfo is one of a user's sessions as the account page lists it.
type sessionInfo struct {
	ID        string // the first bytes of the cookie's hash, hex: names it in a form
	CreatedAt int64
	IP        string
	Browser   string // a short description of the User-Agent
	Current   bool   // the session of this request
}

// browserName describes a User-Agent in a few words ("Firefox on Linux").
func browserName(ua string) string {
	if ua == "" {
		return "unknown browser"
	}
	name := "a browser"
	for _, b := range []struct{ token, name string }{{"Edg/", "Edge"}, {"OPR/", "Opera"}, {"Firefox/", "Firefox"},
		{"Chrome/", "Chrome"}, {"Chromium/", "Chromium"}, {"Safari/", "Safari"}, {"curl/", "curl"}} {
		if strings.Contains(ua, b.token) {
			name = b.name
			break
		}
	}
	for _, o := range []struct{ token, name string }{{"Android", "Android"}, {"iPhone", "iPhone"}, {"iPad", "iPad"},
		{"Windows", "Windows"}, {"Mac OS X", "macOS"}, {"CrOS", "ChromeOS"}, {"Linux", "Linux"}} {
		if strings.Contains(ua, o.token) {
			return name + " on " + o.name
		}
	}
	return name
}

// sessionID names a session on the page without revealing its hash.
func sessionID(hash []byte) string { return hex.EncodeToString(hash[:8]) }

// listSessions returns the user's live sessions, newest first.
func (st *store) listSessions(ctx context.Context, userID, now int64, current []byte) ([]sessionInfo, error) {
	rows, err := st.query(ctx, "SELECT hash, created_at, ip, user_agent FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at DESC", userID, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []sessionInfo
	for rows.Next() {
		var h []byte
		var si sessionInfo
		var ua string
		if err := rows.Scan(&h, &si.CreatedAt, &si.IP, &ua); err != nil {
			return nil, err
		}
		si.ID, si.Browser, si.Current = sessionID(h), browserName(ua), string(h) == string(current)
		out = append(out, si)
	}
	return out, rows.Err()
}

// endSessions ends the user's session named id ("" for every session but keep).
func (st *store) endSessions(ctx context.Context, userID int64, id string, keep []byte) (int64, error) {
	var res sql.Result
	var err error
	if id == "" {
		res, err = st.exec(ctx, "DELETE FROM sessions WHERE user_id = ? AND hash != ?", userID, keep)
	} else {
		res, err = st.exec(ctx, "DELETE FROM sessions WHERE user_id = ? AND hex(substr(hash, 1, 8)) = upper(?)", userID, id)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// changePassword sets a new password hash if the old one is still oldHash (errNotFound when
// it changed meanwhile), ends every other session, and with apps also every app's access.
func (st *store) changePassword(ctx context.Context, userID int64, oldHash, newHash string, keep []byte, apps bool, now int64) error {
	defer st.cache.flush()
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := affected(st.txExec(ctx, tx, "UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ? AND password_hash = ?", newHash, now, userID, oldHash)); err != nil {
			return err
		}
		if _, err := st.txExec(ctx, tx, "DELETE FROM sessions WHERE user_id = ? AND hash != ?", userID, keep); err != nil {
			return err
		}
		qs := []string{}
		if apps {
			qs = appAccess
		}
		return st.endAccess(ctx, tx, userID, qs)
	})
}

// handleAccountPassword changes the signed-in user's password. The current password is
// checked like a sign-in (counted first, per account and address).
func (s *server) handleAccountPassword(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	if !s.checkCSRF(r, sess.Hash, "account") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form expired. Go back to your account page and try again.")
		return
	}
	f := r.PostForm
	fail := func(status int, msg string) { s.renderAccount(w, r, sess, status, msg) }
	pw := f.Get("new_password")
	if err := validPassword(pw); err != nil {
		fail(http.StatusBadRequest, "The password was not changed: "+sentence(err))
		return
	}
	if pw != f.Get("new_password2") {
		fail(http.StatusBadRequest, "The password was not changed: the two new passwords differ.")
		return
	}
	now := s.now()
	ukey := "password:" + sess.User.Sub // counted before the hash, per account (only its own sessions get here)
	if d := s.guard.users.try(ukey, now); d > 0 {
		w.Header().Set("Retry-After", retryAfter(d))
		fail(http.StatusTooManyRequests, "Too many wrong passwords for this account. Try again in "+waitText(d)+".")
		return
	}
	var good bool
	var h string
	var herr error
	if !s.hashing(w, func() {
		if good = checkPassword(f.Get("current_password"), sess.User.PasswordHash); good {
			h, herr = hashPassword(pw, s.cfg.PasswordIter)
		}
	}) {
		s.guard.users.undo(ukey)
		return
	}
	if !good {
		s.log.Info("password change refused: wrong current password", "user", sess.User.Username, "from", s.sourceAddr(r))
		fail(http.StatusUnauthorized, "The password was not changed: the current password is wrong.")
		return
	}
	s.guard.users.reset(ukey)
	if herr != nil {
		s.serverErrorPage(w, r, herr)
		return
	}
	apps := f.Get("revoke_apps") == "on"
	err := s.store.changePassword(r.Context(), sess.User.ID, sess.User.PasswordHash, h, sess.Hash, apps, now.Unix())
	if errors.Is(err, errNotFound) {
		fail(http.StatusConflict, "The password was changed meanwhile (another session or an administrator). Sign in again if you are signed out.")
		return
	} else if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("password changed by the user", "user", sess.User.Username, "apps_revoked", apps)
	msg := "Your password is changed and your other sessions are signed out."
	if apps {
		msg = "Your password is changed; your other sessions are signed out and every app's access is revoked (apps ask you again)."
	}
	s.seeOther(w, r, "/account", msg)
}

// handleAccountSessions ends one of the user's sessions (id) or every other one (all).
func (s *server) handleAccountSessions(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.requireSession(w, r)
	if !ok {
		return
	}
	if !s.checkCSRF(r, sess.Hash, "account") {
		s.errorPage(w, http.StatusForbidden, "Request refused", "The form expired. Go back to your account page and try again.")
		return
	}
	id := r.PostForm.Get("session")
	if id == "" && r.PostForm.Get("all") != "others" {
		s.errorPage(w, http.StatusBadRequest, "Invalid request", "Choose a session to end.")
		return
	}
	n, err := s.store.endSessions(r.Context(), sess.User.ID, id, sess.Hash)
	if err != nil {
		s.serverErrorPage(w, r, err)
		return
	}
	s.log.Info("sessions ended by the user", "user", sess.User.Username, "sessions", n)
	if id == sessionID(sess.Hash) {
		s.setCookie(w, "oauthd_session", "", -1)
		s.seeOther(w, r, "/login", "You are signed out.")
		return
	}
	s.seeOther(w, r, "/account", map[bool]string{true: "The session is ended.", false: "No such session: it had ended already."}[n > 0])
}
