package main

// Storage of passkeys, TOTP secrets, recovery codes, pending second-factor steps and used
// WebAuthn challenges (mfa.go, webauthn.go, totp.go). Everything single-use is consumed by
// one conditional statement inside the transaction that acts on it: a TOTP step only moves
// forward, a recovery code is deleted as it is used, a challenge is inserted into
// webauthn_used once, and a pending step counts each attempt before its factor is checked.
// Removing a factor ends the user's other sessions; a change of password or a disabled
// account drops the user's pending steps (a trigger, so that every path does it).

import (
	"context"
	"database/sql"
	"errors"
	"strings"
)

// migrationMFA is the schema step of passkeys and second factors.
const migrationMFA = `
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd'; -- RFC 8176 methods of the sign-in, space-separated
ALTER TABLE codes ADD COLUMN amr TEXT NOT NULL DEFAULT '';
ALTER TABLE grants ADD COLUMN amr TEXT NOT NULL DEFAULT '';      -- '' for grants older than this step and client_credentials
ALTER TABLE device_codes ADD COLUMN amr TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN require_mfa INTEGER NOT NULL DEFAULT 0;
CREATE TABLE passkeys (
	id            INTEGER PRIMARY KEY,
	user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	credential_id BLOB NOT NULL UNIQUE,
	public_key    BLOB NOT NULL,                 -- the COSE_Key as registered
	alg           INTEGER NOT NULL,              -- COSE algorithm: -7 ES256, -8 EdDSA, -257 RS256
	sign_count    INTEGER NOT NULL,
	flags         INTEGER NOT NULL,              -- authenticator data flags at registration (BE: may be synced)
	name          TEXT NOT NULL,
	created_at    INTEGER NOT NULL,
	last_used     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX passkeys_user ON passkeys(user_id);
CREATE TABLE totp (
	user_id    INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
	secret     BLOB NOT NULL,                    -- AES-256-GCM under the <db>-key file, bound to user_id
	confirmed  INTEGER NOT NULL DEFAULT 0,       -- 0 while enrolment waits for a first valid code
	last_step  INTEGER NOT NULL DEFAULT 0,       -- the last time step accepted (no replay)
	created_at INTEGER NOT NULL
);
CREATE TABLE recovery_codes (
	user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	hash       BLOB NOT NULL,                    -- SHA-256 of the user and the normalized code
	created_at INTEGER NOT NULL,
	PRIMARY KEY (user_id, hash)
) WITHOUT ROWID;
CREATE TABLE mfa_pending (
	hash         BLOB PRIMARY KEY,               -- SHA-256 of the oauthd_mfa cookie
	user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	kind         TEXT NOT NULL,                  -- factor: prove one; enrol: add one first
	amr          TEXT NOT NULL,                  -- what was proved so far
	session_hash BLOB REFERENCES sessions(hash) ON DELETE CASCADE, -- a step-up: the session it replaces
	next         TEXT NOT NULL,
	attempts     INTEGER NOT NULL DEFAULT 0,
	expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX mfa_pending_user ON mfa_pending(user_id);
CREATE TABLE webauthn_used (
	hash       BLOB PRIMARY KEY,                 -- SHA-256 of an answered challenge
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER users_mfa_pending AFTER UPDATE OF password_hash, disabled ON users
	BEGIN DELETE FROM mfa_pending WHERE user_id = NEW.id; END;
`

// errReplayed: a TOTP step already used, or a challenge already answered.
var errReplayed = errors.New("already used")

// passkey is a registered WebAuthn credential.
type passkey struct {
	ID           int64
	UserID       int64
	CredentialID []byte
	PublicKey    []byte
	Alg          int64
	SignCount    uint32
	Flags        byte
	Name         string
	CreatedAt    int64
	LastUsed     int64
}

const passkeyCols = "id, user_id, credential_id, public_key, alg, sign_count, flags, name, created_at, last_used"

// scanPasskey reads a passkeys row in passkeyCols order.
func scanPasskey(row rowScanner) (passkey, error) {
	var p passkey
	err := row.Scan(&p.ID, &p.UserID, &p.CredentialID, &p.PublicKey, &p.Alg, &p.SignCount, &p.Flags, &p.Name, &p.CreatedAt, &p.LastUsed)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return p, err
}

// passkeys lists a user's passkeys, oldest first.
func (st *store) passkeys(ctx context.Context, userID int64) ([]passkey, error) {
	rows, err := st.query(ctx, "SELECT "+passkeyCols+" FROM passkeys WHERE user_id = ? ORDER BY id", userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []passkey
	for rows.Next() {
		p, err := scanPasskey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// passkeyByCredential finds a passkey by its credential ID.
func (st *store) passkeyByCredential(ctx context.Context, credID []byte) (passkey, error) {
	return scanPasskey(st.queryRow(ctx, "SELECT "+passkeyCols+" FROM passkeys WHERE credential_id = ?", credID))
}

// factors is what a user has as second factors.
type factors struct {
	Passkeys      []passkey
	TOTP          bool  // a confirmed TOTP secret
	TOTPPending   bool  // an enrolment waiting for its first code
	RecoveryLeft  int   // unused recovery codes
	TOTPCreatedAt int64 // when TOTP was set up
}

// any reports whether the user has a second factor (recovery codes alone are none).
func (f factors) any() bool { return f.TOTP || len(f.Passkeys) > 0 }

// userFactors reads a user's factors.
func (st *store) userFactors(ctx context.Context, userID int64) (factors, error) {
	var f factors
	var err error
	if f.Passkeys, err = st.passkeys(ctx, userID); err != nil {
		return f, err
	}
	var confirmed sql.NullBool
	var created sql.NullInt64
	err = st.queryRow(ctx, "SELECT (SELECT confirmed FROM totp WHERE user_id = ?), (SELECT created_at FROM totp WHERE user_id = ?), "+
		"(SELECT count(*) FROM recovery_codes WHERE user_id = ?)", userID, userID, userID).Scan(&confirmed, &created, &f.RecoveryLeft)
	f.TOTP, f.TOTPPending = confirmed.Valid && confirmed.Bool, confirmed.Valid && !confirmed.Bool
	f.TOTPCreatedAt = created.Int64
	return f, err
}

// countTOTP counts the sealed TOTP secrets (the key file must then exist).
func (st *store) countTOTP(ctx context.Context) (n int, err error) {
	err = st.queryRow(ctx, "SELECT count(*) FROM totp").Scan(&n)
	return n, err
}

// settingOrCreate returns the named setting, storing value first when there is none.
func (st *store) settingOrCreate(ctx context.Context, name string, value []byte) ([]byte, error) {
	if _, err := st.exec(ctx, "INSERT OR IGNORE INTO settings(name, value) VALUES(?, ?)", name, value); err != nil {
		return nil, err
	}
	var v []byte
	err := st.queryRow(ctx, "SELECT value FROM settings WHERE name = ?", name).Scan(&v)
	return v, err
}

// ---- completing a sign-in

// signIn is the session a completed factor starts, written in the factor's own transaction.
type signIn struct {
	SessionHash []byte // the new session's cookie hash
	UserID      int64
	AMR         string
	AuthTime    int64
	ExpiresAt   int64
	Drop        [][]byte // sessions it replaces: the browser's earlier one, a stepped-up one
	Pending     []byte   // the pending step it ends
}

// finish writes fin inside tx; a nil fin writes nothing.
func (st *store) finish(ctx context.Context, tx *sql.Tx, fin *signIn) error {
	if fin == nil {
		return nil
	}
	for _, h := range fin.Drop {
		if _, err := st.txExec(ctx, tx, "DELETE FROM sessions WHERE hash = ?", h); err != nil {
			return err
		}
	}
	if fin.Pending != nil {
		if _, err := st.txExec(ctx, tx, "DELETE FROM mfa_pending WHERE hash = ?", fin.Pending); err != nil {
			return err
		}
	}
	_, err := st.txExec(ctx, tx, "INSERT INTO sessions(hash, user_id, auth_time, expires_at, amr) VALUES(?, ?, ?, ?, ?)",
		fin.SessionHash, fin.UserID, fin.AuthTime, fin.ExpiresAt, fin.AMR)
	return err
}

// useChallenge records an answered WebAuthn challenge inside tx; errReplayed the second time.
func (st *store) useChallenge(ctx context.Context, tx *sql.Tx, challenge []byte, expires int64) error {
	_, err := st.txExec(ctx, tx, "INSERT INTO webauthn_used(hash, expires_at) VALUES(?, ?)", hashSecret(string(challenge)), expires)
	if mapConstraint(err) == errExists {
		return errReplayed
	}
	return err
}

// ---- pending second-factor steps

// pendingStep is a sign-in waiting for its second factor, or for a first one to be enrolled.
type pendingStep struct {
	Hash        []byte
	UserID      int64
	Kind        string // pendingFactor or pendingEnrol
	AMR         string
	SessionHash []byte // a step-up: the session it replaces; nil otherwise
	Next        string
	Attempts    int
}

// Pending step kinds.
const (
	pendingFactor = "factor"
	pendingEnrol  = "enrol"
)

// createPendingStep stores a pending step; replaced, when given, is the browser's earlier one,
// which goes in the same transaction.
func (st *store) createPendingStep(ctx context.Context, p pendingStep, replaced []byte, expires int64) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if replaced != nil {
			if _, err := st.txExec(ctx, tx, "DELETE FROM mfa_pending WHERE hash = ?", replaced); err != nil {
				return err
			}
		}
		_, err := st.txExec(ctx, tx, "INSERT INTO mfa_pending(hash, user_id, kind, amr, session_hash, next, expires_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
			p.Hash, p.UserID, p.Kind, p.AMR, p.SessionHash, p.Next, expires)
		return err
	})
}

// pendingByHash reads a live pending step without counting an attempt.
func (st *store) pendingByHash(ctx context.Context, hash []byte, now int64) (pendingStep, error) {
	p := pendingStep{Hash: hash}
	err := st.queryRow(ctx, "SELECT user_id, kind, amr, session_hash, next, attempts FROM mfa_pending WHERE hash = ? AND expires_at > ?", hash, now).
		Scan(&p.UserID, &p.Kind, &p.AMR, &p.SessionHash, &p.Next, &p.Attempts)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return p, err
}

// countAttempt counts an attempt at a pending step before its factor is checked, so that
// concurrent guesses cannot exceed max; errNotFound when the step is gone, expired or used up.
func (st *store) countAttempt(ctx context.Context, hash []byte, now int64, max int) (pendingStep, error) {
	p := pendingStep{Hash: hash}
	err := st.txOne(ctx, func(tx *sql.Tx) error {
		return st.txRow(ctx, tx, "UPDATE mfa_pending SET attempts = attempts + 1 WHERE hash = ? AND expires_at > ? AND attempts < ? "+
			"RETURNING user_id, kind, amr, session_hash, next, attempts", hash, now, max).
			Scan(&p.UserID, &p.Kind, &p.AMR, &p.SessionHash, &p.Next, &p.Attempts)
	})
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return p, err
}

// ---- passkeys

// addPasskey stores a verified registration, using up its challenge, with the recovery codes
// of a first factor (codes nil otherwise: they are only written when the user had none) and
// the sign-in an enrolment completes. It reports whether the codes were written.
func (st *store) addPasskey(ctx context.Context, p passkey, challenge []byte, chExp int64, codes [][]byte, fin *signIn) (bool, error) {
	wrote := false
	err := mapConstraint(st.tx(ctx, func(tx *sql.Tx) error {
		wrote = false
		if err := st.useChallenge(ctx, tx, challenge, chExp); err != nil {
			return err
		}
		first, err := st.noFactor(ctx, tx, p.UserID)
		if err != nil {
			return err
		}
		if _, err := st.txExec(ctx, tx, "INSERT INTO passkeys(user_id, credential_id, public_key, alg, sign_count, flags, name, created_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
			p.UserID, p.CredentialID, p.PublicKey, p.Alg, p.SignCount, p.Flags, p.Name, p.CreatedAt); err != nil {
			return err
		}
		if first {
			if err := st.replaceRecovery(ctx, tx, p.UserID, codes, p.CreatedAt); err != nil {
				return err
			}
			wrote = true
		}
		return st.finish(ctx, tx, fin)
	}))
	return wrote, err
}

// noFactor reports inside tx whether the user has no second factor yet.
func (st *store) noFactor(ctx context.Context, tx *sql.Tx, userID int64) (bool, error) {
	var n int
	err := st.txRow(ctx, tx, "SELECT (SELECT count(*) FROM passkeys WHERE user_id = ?) + (SELECT count(*) FROM totp WHERE user_id = ? AND confirmed = 1)",
		userID, userID).Scan(&n)
	return n == 0, err
}

// usePasskey records a verified assertion: the challenge is used up, the counter moves
// (only from the value that was checked, so two concurrent uses cannot both pass) and the
// sign-in fin is written, in one transaction.
func (st *store) usePasskey(ctx context.Context, p passkey, newCount uint32, challenge []byte, chExp, now int64, fin *signIn) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := st.useChallenge(ctx, tx, challenge, chExp); err != nil {
			return err
		}
		if err := affected(st.txExec(ctx, tx, "UPDATE passkeys SET sign_count = ?, last_used = ? WHERE id = ? AND sign_count = ?",
			newCount, now, p.ID, p.SignCount)); err != nil {
			if errors.Is(err, errNotFound) {
				return errReplayed // removed, or used concurrently
			}
			return err
		}
		return st.finish(ctx, tx, fin)
	})
}

// renamePasskey renames one of the user's passkeys.
func (st *store) renamePasskey(ctx context.Context, userID, id int64, name string) error {
	return affected(st.exec(ctx, "UPDATE passkeys SET name = ? WHERE id = ? AND user_id = ?", name, id, userID))
}

// deletePasskey removes one of the user's passkeys and ends the user's sessions but keep;
// the recovery codes go with the last factor.
func (st *store) deletePasskey(ctx context.Context, userID, id int64, keep []byte) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := affected(st.txExec(ctx, tx, "DELETE FROM passkeys WHERE id = ? AND user_id = ?", id, userID)); err != nil {
			return err
		}
		return st.factorRemoved(ctx, tx, userID, keep)
	})
}

// factorRemoved ends the user's sessions but keep and pending steps, and drops the recovery
// codes when no factor is left.
func (st *store) factorRemoved(ctx context.Context, tx *sql.Tx, userID int64, keep []byte) error {
	if _, err := st.txExec(ctx, tx, "DELETE FROM sessions WHERE user_id = ? AND hash IS NOT ?", userID, keep); err != nil {
		return err
	}
	if _, err := st.txExec(ctx, tx, "DELETE FROM mfa_pending WHERE user_id = ?", userID); err != nil {
		return err
	}
	none, err := st.noFactor(ctx, tx, userID)
	if err != nil || !none {
		return err
	}
	_, err = st.txExec(ctx, tx, "DELETE FROM recovery_codes WHERE user_id = ?", userID)
	return err
}

// ---- TOTP

// startTOTP stores a new, unconfirmed TOTP secret (sealed), replacing an unconfirmed one;
// errExists when the user has a confirmed one.
func (st *store) startTOTP(ctx context.Context, userID int64, sealed []byte, now int64) error {
	return affected(st.exec(ctx, "INSERT INTO totp(user_id, secret, created_at) VALUES(?, ?, ?) "+
		"ON CONFLICT(user_id) DO UPDATE SET secret = excluded.secret, created_at = excluded.created_at WHERE confirmed = 0",
		userID, sealed, now))
}

// totpSecret returns the user's sealed secret, whether it is confirmed and its last step.
func (st *store) totpSecret(ctx context.Context, userID int64) (sealed []byte, confirmed bool, lastStep int64, err error) {
	err = st.queryRow(ctx, "SELECT secret, confirmed, last_step FROM totp WHERE user_id = ?", userID).Scan(&sealed, &confirmed, &lastStep)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return sealed, confirmed, lastStep, err
}

// confirmTOTP enables an unconfirmed secret with the step of its first code, writing the
// recovery codes when it is the user's first factor and the sign-in an enrolment completes.
// It reports whether the codes were written; errNotFound when nothing waits.
func (st *store) confirmTOTP(ctx context.Context, userID, step int64, codes [][]byte, now int64, fin *signIn) (bool, error) {
	wrote := false
	err := st.tx(ctx, func(tx *sql.Tx) error {
		wrote = false
		first, err := st.noFactor(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := affected(st.txExec(ctx, tx, "UPDATE totp SET confirmed = 1, last_step = ? WHERE user_id = ? AND confirmed = 0", step, userID)); err != nil {
			return err
		}
		if first {
			if err := st.replaceRecovery(ctx, tx, userID, codes, now); err != nil {
				return err
			}
			wrote = true
		}
		return st.finish(ctx, tx, fin)
	})
	return wrote, err
}

// useTOTP accepts step for the user once: the stored step only moves forward, so a code is
// refused for the rest of its window (and any earlier one). Then fin is written.
func (st *store) useTOTP(ctx context.Context, userID, step int64, fin *signIn) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		err := affected(st.txExec(ctx, tx, "UPDATE totp SET last_step = ? WHERE user_id = ? AND confirmed = 1 AND last_step < ?", step, userID, step))
		if errors.Is(err, errNotFound) {
			return errReplayed
		}
		if err != nil {
			return err
		}
		return st.finish(ctx, tx, fin)
	})
}

// deleteTOTP removes the user's TOTP secret, ending the user's sessions but keep.
func (st *store) deleteTOTP(ctx context.Context, userID int64, keep []byte) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := affected(st.txExec(ctx, tx, "DELETE FROM totp WHERE user_id = ?", userID)); err != nil {
			return err
		}
		return st.factorRemoved(ctx, tx, userID, keep)
	})
}

// ---- recovery codes

// replaceRecovery voids the user's recovery codes and stores the new set, inside tx.
func (st *store) replaceRecovery(ctx context.Context, tx *sql.Tx, userID int64, codes [][]byte, now int64) error {
	if _, err := st.txExec(ctx, tx, "DELETE FROM recovery_codes WHERE user_id = ?", userID); err != nil {
		return err
	}
	for _, h := range codes {
		if _, err := st.txExec(ctx, tx, "INSERT INTO recovery_codes(user_id, hash, created_at) VALUES(?, ?, ?)", userID, h, now); err != nil {
			return err
		}
	}
	return nil
}

// setRecoveryCodes replaces the user's recovery codes.
func (st *store) setRecoveryCodes(ctx context.Context, userID int64, codes [][]byte, now int64) error {
	return st.tx(ctx, func(tx *sql.Tx) error { return st.replaceRecovery(ctx, tx, userID, codes, now) })
}

// hasRecoveryCodes counts how many of hashes are unused recovery codes of the user.
func (st *store) hasRecoveryCodes(ctx context.Context, userID int64, hashes [][]byte) (int, error) {
	n := 0
	for _, h := range hashes {
		var one int
		err := st.queryRow(ctx, "SELECT 1 FROM recovery_codes WHERE user_id = ? AND hash = ?", userID, h).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}

// useRecoveryCode consumes one of the user's recovery codes and writes fin; errNotFound when
// it is not one (or was used).
func (st *store) useRecoveryCode(ctx context.Context, userID int64, hash []byte, fin *signIn) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := affected(st.txExec(ctx, tx, "DELETE FROM recovery_codes WHERE user_id = ? AND hash = ?", userID, hash)); err != nil {
			return err
		}
		return st.finish(ctx, tx, fin)
	})
}

// ---- operators

// resetFactors removes every second factor of the user (passkeys, TOTP, recovery codes) and
// ends all the user's sessions and pending steps. It returns how many passkeys went.
func (st *store) resetFactors(ctx context.Context, userID int64) (int64, error) {
	var n int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		res, err := st.txExec(ctx, tx, "DELETE FROM passkeys WHERE user_id = ?", userID)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		for _, q := range []string{"DELETE FROM totp WHERE user_id = ?", "DELETE FROM recovery_codes WHERE user_id = ?",
			"DELETE FROM sessions WHERE user_id = ?", "DELETE FROM mfa_pending WHERE user_id = ?"} {
			if _, err := st.txExec(ctx, tx, q, userID); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// factorCounts tells for each user id how many second factors they have (the admin page).
func (st *store) factorCounts(ctx context.Context) (map[int64]int, error) {
	rows, err := st.query(ctx, "SELECT user_id, count(*) FROM (SELECT user_id FROM passkeys UNION ALL SELECT user_id FROM totp WHERE confirmed = 1) GROUP BY user_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]int{}
	for rows.Next() {
		var id int64
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}

// ---- amr

// amrHas reports whether a space-separated amr list holds m.
func amrHas(amr, m string) bool {
	for f := range strings.FieldsSeq(amr) {
		if f == m {
			return true
		}
	}
	return false
}
