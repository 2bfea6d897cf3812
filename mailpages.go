package main

// What oauthd mails, with -smtp: invitations sent from the admin page, "Forgot password?"
// reset links to an account's verified email, and verification links for an email set on
// /account (the email is verified only when its link is followed). Mail goes out from a
// small queue on its own goroutine, so that no answer waits for (or is timed by) the mail
// server: the forgot-password page answers the same whether an account exists or not.

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"
)

// verifyTTL is how long an email verification link works.
const verifyTTL = 48 * time.Hour

// outMail is one queued message.
type outMail struct{ to, subject, body string }

// startMailer starts the queue's sender; it stops with ctx.
func (s *server) startMailer(ctx context.Context) {
	if s.mail == nil {
		return
	}
	s.outbox = make(chan outMail, 256)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-s.outbox:
				if err := s.mail.send(ctx, m.to, m.subject, m.body); err != nil {
					s.log.Error("sending mail failed", "to", m.to, "subject", m.subject, "cause", err)
				} else {
					s.log.Info("mail sent", "to", m.to, "subject", m.subject)
				}
			}
		}
	}()
}

// queueMail queues a message; false when there is no mailer or the queue is full.
func (s *server) queueMail(to, subject, body string) bool {
	if s.outbox == nil {
		return false
	}
	select {
	case s.outbox <- outMail{to, subject, body}:
		return true
	default:
		s.log.Error("mail queue full: message dropped", "to", to, "subject", subject)
		return false
	}
}

// forgotPage is the "Forgot password?" form's data.
type forgotPage struct {
	pageData
	Sent, Error string
	Mail        bool // the server can send mail
}

// handleForgotPage asks for the username or email of an account whose password is lost.
func (s *server) handleForgotPage(w http.ResponseWriter, r *http.Request) {
	bid := s.browserID(w, r)
	s.render(w, http.StatusOK, "forgot", forgotPage{pageData: pageData{CSRF: s.csrfToken(bid, "forgot")}, Mail: s.mail != nil})
}

// handleForgot mails a reset link to the account's verified email. The answer is the same
// whether or not such an account exists, and whether or not a limit held the mail back:
// requests count per source address before anything is looked up, and mails per account
// (keyed on the account found, never on what was typed) before one is made.
func (s *server) handleForgot(w http.ResponseWriter, r *http.Request) {
	bid := s.browserID(w, r)
	page := forgotPage{pageData: pageData{CSRF: s.csrfToken(bid, "forgot")}, Mail: s.mail != nil}
	if !s.checkCSRF(r, bid, "forgot") {
		page.Error = "The form expired. Please try again."
		s.render(w, http.StatusForbidden, "forgot", page)
		return
	}
	if s.mail == nil {
		page.Error = "This server sends no mail: ask your administrator for a password reset link."
		s.render(w, http.StatusBadRequest, "forgot", page)
		return
	}
	who := strings.TrimSpace(r.PostForm.Get("who"))
	now := s.now()
	if who == "" || len(who) > 254 {
		page.Error = "Enter your username or email address."
		s.render(w, http.StatusBadRequest, "forgot", page)
		return
	}
	if !s.forgotAddrs.take(s.sourceKey(r), now) {
		w.Header().Set("Retry-After", retryAfter(time.Hour))
		page.Error = "Too many reset requests. Try again in an hour, or ask your administrator."
		s.render(w, http.StatusTooManyRequests, "forgot", page)
		return
	}
	page.Sent = "If an account with a verified email address matches, a reset link is on its way to it. It works once, for 24 hours."
	u, err := s.store.userByName(r.Context(), who)
	if errors.Is(err, errNotFound) && strings.Contains(who, "@") {
		u, err = s.store.userByVerifiedEmail(r.Context(), who)
	}
	if err != nil && !errors.Is(err, errNotFound) {
		s.serverErrorPage(w, r, err)
		return
	}
	if err == nil && !u.Disabled && u.Email != "" && u.EmailVerified && s.forgotAccounts.take("reset:"+u.Sub, now) {
		tok := newSecret()
		if err := s.store.createLink(r.Context(), hashSecret(tok), userLink{Kind: "reset", UserID: u.ID, ExpiresAt: now.Add(resetTTL).Unix()}); err != nil {
			s.serverErrorPage(w, r, err)
			return
		}
		s.queueMail(u.Email, "Reset your password for "+s.cfg.Name, "Someone (hopefully you) asked to reset the password of your account "+u.Username+
			" at "+s.cfg.Name+".\n\nChoose a new password here (the link works once, for 24 hours):\n\n"+s.cfg.Issuer+"/reset?token="+tok+
			"\n\nIf you did not ask for this, ignore this message: your password stays as it is.\n")
		s.log.Info("password reset link mailed", "user", u.Username, "from", s.sourceAddr(r))
	}
	s.render(w, http.StatusOK, "forgot", page)
}

// sendVerification mails a link that verifies email for the user; false without -smtp.
func (s *server) sendVerification(ctx context.Context, u user, email string) (bool, error) {
	if s.mail == nil || email == "" {
		return false, nil
	}
	tok := newSecret()
	if err := s.store.createLink(ctx, hashSecret(tok), userLink{Kind: "verify", UserID: u.ID, Email: email, ExpiresAt: s.now().Add(verifyTTL).Unix()}); err != nil {
		return false, err
	}
	return s.queueMail(email, "Confirm your email address for "+s.cfg.Name, "Follow this link to confirm that "+email+" is the address of your account "+
		u.Username+" at "+s.cfg.Name+" (it works once, for 48 hours):\n\n"+s.cfg.Issuer+"/verify?token="+tok+
		"\n\nIf you did not set this address, ignore this message.\n"), nil
}

// handleVerify marks an email verified when its link is followed and it is still the
// account's email.
func (s *server) handleVerify(w http.ResponseWriter, r *http.Request) {
	if !s.linkAllowed(w, r) {
		return
	}
	err := s.store.verifyEmail(r.Context(), hashSecret(r.URL.Query().Get("token")), s.now().Unix())
	s.linkChecked(r, !errors.Is(err, errNotFound))
	switch {
	case errors.Is(err, errNotFound):
		s.errorPage(w, http.StatusForbidden, "Link not valid", "This verification link is wrong, expired, was already used, or the account's email has changed since. Set the email again on your account page for a new link.")
	case err != nil:
		s.serverErrorPage(w, r, err)
	default:
		s.render(w, http.StatusOK, "message", messagePage{Title: "Email verified", Message: "Your email address is verified. Apps that ask for it now see it as verified.",
			Next: []navLink{{"/account", "Your account"}}})
	}
}
