package main

import (
	"context"
	"database/sql"
	"errors"
	"slices"
)

// setDisabled disables or enables a user; disabling ends their sessions and revokes every
// grant, token and code they have.
func (st *store) setDisabled(ctx context.Context, name string, disabled bool) error {
	defer st.cache.flush()
	return st.tx(ctx, func(tx *sql.Tx) error {
		var id int64
		err := st.txRow(ctx, tx, "UPDATE users SET disabled = ? WHERE username = ? RETURNING id", disabled, name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil || !disabled {
			return err
		}
		return st.endAccess(ctx, tx, id, userAccess)
	})
}

// userAccess ends what lets a browser or an application act as a user: sessions (and with
// them, ON DELETE CASCADE, their pending consent requests), grants (with every access and
// refresh token), codes, and device authorizations the user approved that the device has
// not collected yet.
var userAccess = []string{"DELETE FROM sessions WHERE user_id = ?", "DELETE FROM grants WHERE user_id = ?",
	"DELETE FROM codes WHERE user_id = ?", "DELETE FROM device_codes WHERE user_id = ?"}

// resetAccess is userAccess and what a stolen password leaves behind to come back through:
// remembered consents (an app the attacker authorized would get a new code without asking)
// and the user's other reset links. A password reset runs it. For an administrator it also
// voids every unused invitation and reset link: with the admin's password an attacker could
// have made an admin invitation (a new admin account later) or a reset link for anyone, and
// links do not record who made them.
var resetAccess = append(slices.Clip(userAccess), "DELETE FROM consents WHERE user_id = ?",
	"DELETE FROM user_links WHERE user_id = ? AND kind = 'reset'",
	"DELETE FROM user_links WHERE EXISTS (SELECT 1 FROM users WHERE id = ? AND admin = 1)")

// endAccess runs the statements qs for user id inside tx, and moves the generation counter so
// that another process's caches (a server, when the CLI runs this) drop the user's tokens at
// once. The caller flushes this process's caches after the commit.
func (st *store) endAccess(ctx context.Context, tx *sql.Tx, id int64, qs []string) error {
	for _, q := range qs {
		if _, err := st.txExec(ctx, tx, q, id); err != nil {
			return err
		}
	}
	_, err := st.txExec(ctx, tx, "UPDATE generation SET n = n + 1")
	return err
}

// userLink is a one-time invitation (kind "invite") or password reset (kind "reset") link.
type userLink struct {
	Kind      string
	UserID    int64  // reset: whose password
	Admin     bool   // invite: the new user is an admin
	Email     string // verify: the address it verifies; invite: where it was sent
	EndAccess bool   // reset made by an administrator: end the user's access now, not only when it is used
	ExpiresAt int64
}

// createLink stores a one-time link. A reset link is made because the password may be
// known to someone else: making one already ends everything of the user that resetAccess
// ends, earlier reset links included, in the same transaction.
func (st *store) createLink(ctx context.Context, hash []byte, l userLink) error {
	var uid any
	if l.UserID != 0 {
		uid = l.UserID
	}
	if l.EndAccess {
		defer st.cache.flush()
	}
	return st.tx(ctx, func(tx *sql.Tx) error {
		if l.EndAccess {
			if err := st.endAccess(ctx, tx, l.UserID, resetAccess); err != nil {
				return err
			}
		}
		_, err := st.txExec(ctx, tx, "INSERT INTO user_links(hash, kind, user_id, admin, expires_at, email) VALUES(?, ?, ?, ?, ?, ?)",
			hash, l.Kind, uid, l.Admin, l.ExpiresAt, l.Email)
		return err
	})
}

// verifyEmail uses a verification link: the account's email becomes verified if it is still
// the address the link was made for (errNotFound otherwise, or for a dead link).
func (st *store) verifyEmail(ctx context.Context, hash []byte, now int64) error {
	defer st.cache.flush()
	return st.tx(ctx, func(tx *sql.Tx) error {
		var uid int64
		var email string
		err := st.txRow(ctx, tx, "DELETE FROM user_links WHERE hash = ? AND kind = 'verify' AND expires_at > ? RETURNING user_id, email", hash, now).Scan(&uid, &email)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil {
			return err
		}
		return affected(st.txExec(ctx, tx, "UPDATE users SET email_verified = 1, updated_at = ? WHERE id = ? AND email = ? AND email != ''", now, uid, email))
	})
}

// userByVerifiedEmail finds the account whose verified email is addr (case-insensitive);
// errNotFound when none, or when several share it.
func (st *store) userByVerifiedEmail(ctx context.Context, addr string) (user, error) {
	rows, err := st.query(ctx, "SELECT username FROM users WHERE email = ? COLLATE NOCASE AND email_verified = 1 LIMIT 2", addr)
	if err != nil {
		return user{}, err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return user{}, err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return user{}, err
	}
	if len(names) != 1 {
		return user{}, errNotFound
	}
	return st.userByName(ctx, names[0])
}

// peekLink returns a live link of that kind without using it.
func (st *store) peekLink(ctx context.Context, hash []byte, kind string, now int64) (userLink, error) {
	l := userLink{Kind: kind}
	var uid sql.NullInt64
	err := st.queryRow(ctx, "SELECT user_id, admin, expires_at FROM user_links WHERE hash = ? AND kind = ? AND expires_at > ?",
		hash, kind, now).Scan(&uid, &l.Admin, &l.ExpiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	l.UserID = uid.Int64
	return l, err
}

// takeLink consumes a live link inside tx: a second use finds nothing.
func (st *store) takeLink(ctx context.Context, tx *sql.Tx, hash []byte, kind string, now int64) (userLink, error) {
	l := userLink{Kind: kind}
	var uid sql.NullInt64
	err := st.txRow(ctx, tx, "DELETE FROM user_links WHERE hash = ? AND kind = ? AND expires_at > ? RETURNING user_id, admin, expires_at",
		hash, kind, now).Scan(&uid, &l.Admin, &l.ExpiresAt)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	l.UserID = uid.Int64
	return l, err
}

// acceptInvite creates the invited user and uses up the invitation, atomically.
func (st *store) acceptInvite(ctx context.Context, hash []byte, u user, now int64) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		l, err := st.takeLink(ctx, tx, hash, "invite", now)
		if err != nil {
			return err
		}
		u.Admin = l.Admin
		return mapConstraint(insertUser(ctx, tx, u))
	})
}

// resetPassword sets a new password through a reset link and, in the same transaction, ends
// every session, grant, token, code, device approval and remembered consent of the user
// (resetAccess): nothing an attacker did with the old password survives it.
func (st *store) resetPassword(ctx context.Context, hash []byte, passwordHash string, now int64) (int64, error) {
	var uid int64
	defer st.cache.flush()
	err := st.tx(ctx, func(tx *sql.Tx) error {
		l, err := st.takeLink(ctx, tx, hash, "reset", now)
		if err != nil {
			return err
		}
		uid = l.UserID
		if err := affected(st.txExec(ctx, tx, "UPDATE users SET password_hash = ? WHERE id = ?", passwordHash, uid)); err != nil {
			return err
		}
		return st.endAccess(ctx, tx, uid, resetAccess)
	})
	return uid, err
}
