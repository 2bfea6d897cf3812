package main

import (
	"context"
	"database/sql"
	"errors"
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
		for _, q := range []string{"DELETE FROM sessions WHERE user_id = ?", "DELETE FROM grants WHERE user_id = ?",
			"DELETE FROM codes WHERE user_id = ?", "DELETE FROM device_codes WHERE user_id = ?"} {
			if _, err := st.txExec(ctx, tx, q, id); err != nil {
				return err
			}
		}
		return nil
	})
}

// userLink is a one-time invitation (kind "invite") or password reset (kind "reset") link.
type userLink struct {
	Kind      string
	UserID    int64  // reset: whose password
	Admin     bool   // invite: the new user is an admin
	Email     string // verify: the address it verifies; invite: where it was sent
	ExpiresAt int64
}

func (st *store) createLink(ctx context.Context, hash []byte, l userLink) error {
	var uid any
	if l.UserID != 0 {
		uid = l.UserID
	}
	_, err := st.exec(ctx, "INSERT INTO user_links(hash, kind, user_id, admin, expires_at, email) VALUES(?, ?, ?, ?, ?, ?)",
		hash, l.Kind, uid, l.Admin, l.ExpiresAt, l.Email)
	return err
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

// resetPassword sets a new password through a reset link, ending the user's sessions.
func (st *store) resetPassword(ctx context.Context, hash []byte, passwordHash string, now int64) (int64, error) {
	var uid int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		l, err := st.takeLink(ctx, tx, hash, "reset", now)
		if err != nil {
			return err
		}
		uid = l.UserID
		if _, err := st.txExec(ctx, tx, "UPDATE users SET password_hash = ? WHERE id = ?", passwordHash, uid); err != nil {
			return err
		}
		_, err = st.txExec(ctx, tx, "DELETE FROM sessions WHERE user_id = ?", uid)
		return err
	})
	return uid, err
}
