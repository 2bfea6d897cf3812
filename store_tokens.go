package main

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"time"
)

// ---- codes and tokens

// authCode is a stored authorization code (without the code itself).
type authCode struct {
	ClientID      string
	Resource      string // space-separated RFC 8707 resources of the request ('' none)
	UserID        int64
	RedirectURI   string
	RedirectGiven bool
	Scope         string
	CodeChallenge string
	Nonce         string
	AuthTime      int64
	AMR           string // how the user signed in (RFC 8176, space-separated)
	ExpiresAt     int64
}

// errConsentWithdrawn: a code was about to be issued on a remembered consent that the user
// revoked meanwhile.
var errConsentWithdrawn = errors.New("the consent was withdrawn")

// issueCode stores a code and, when the user approved on the consent page, the consent with it.
// In the same transaction it checks what the page checked before: the session the request was
// made in is still live (errSessionEnded), and, without a new approval, the remembered consent
// still covers the scope (errConsentWithdrawn). A reset, sign-out or revoked connection
// committed in between wins instead of being followed by a fresh code.
func (st *store) issueCode(ctx context.Context, hash []byte, c authCode, sessionHash []byte, consent []string, now int64) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := st.liveSession(ctx, tx, sessionHash, c.UserID, now); err != nil {
			return err
		}
		if consent != nil {
			if err := st.addConsent(ctx, tx, c.UserID, c.ClientID, consent, now); err != nil {
				return err
			}
			if err := st.addConsentResources(ctx, tx, c.UserID, c.ClientID, strings.Fields(c.Resource)); err != nil {
				return err
			}
		} else {
			var approved, resources string
			err := st.txRow(ctx, tx, "SELECT scope, resources FROM consents WHERE user_id = ? AND client_id = ?", c.UserID, c.ClientID).Scan(&approved, &resources)
			if errors.Is(err, sql.ErrNoRows) || err == nil && (!subset(strings.Fields(c.Scope), strings.Fields(approved)) ||
				!subset(strings.Fields(c.Resource), strings.Fields(resources))) {
				return errConsentWithdrawn
			}
			if err != nil {
				return err
			}
		}
		_, err := st.txExec(ctx, tx, "INSERT INTO codes(hash, client_id, user_id, redirect_uri, redirect_given, scope, code_challenge, nonce, auth_time, expires_at, amr, resource) "+
			"VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", hash, c.ClientID, c.UserID, c.RedirectURI, c.RedirectGiven, c.Scope,
			c.CodeChallenge, c.Nonce, c.AuthTime, c.ExpiresAt, c.AMR, c.Resource)
		return err
	})
}

// newToken is a token about to be stored: its hash and lifetime.
type newToken struct {
	Hash      []byte
	Scope     string
	ExpiresAt int64
	Resource  int64 // access tokens: resources.id of the RFC 8707 resource it is for (0 none)
}

// tokenPair is what one successful token request stores.
type tokenPair struct {
	Access  newToken
	Refresh newToken
}

const (
	kindAccess  = 1
	kindRefresh = 2
)

// insertPair stores a token pair of a grant (the refresh token is optional).
func (st *store) insertPair(ctx context.Context, tx *sql.Tx, grantID int64, p tokenPair, now int64) error {
	const ins = "INSERT INTO tokens(hash, kind, grant_id, scope, created_at, expires_at, resource) VALUES(?, ?, ?, ?, ?, ?, ?)"
	a, r := p.Access, p.Refresh
	if r.Hash == nil {
		_, err := st.txExec(ctx, tx, ins, a.Hash, kindAccess, grantID, a.Scope, now, a.ExpiresAt, a.Resource)
		return err
	}
	// Both in one statement: inside the serial writer every statement counts.
	_, err := st.txExec(ctx, tx, ins+", (?, ?, ?, ?, ?, ?, ?)", a.Hash, kindAccess, grantID, a.Scope, now, a.ExpiresAt, a.Resource,
		r.Hash, kindRefresh, grantID, r.Scope, now, r.ExpiresAt, 0)
	return err
}

// redeemCode exchanges a code for tokens in one write transaction: the code is looked up,
// checked by issue (client, redirect_uri, PKCE) which makes the tokens, marked used and a grant with its tokens is
// created. RFC 6749 §4.1.2: a code presented again revokes every token issued from it
// (errCodeReused, committed).
func (st *store) redeemCode(ctx context.Context, hash []byte, now int64, issue func(authCode) (tokenPair, error)) (authCode, error) {
	var c authCode
	var revoked int64
	var hint refreshHint
	defer func() {
		if revoked != 0 {
			st.cache.dropGrant(revoked)
		}
	}()
	err := st.tx(ctx, func(tx *sql.Tx) error {
		revoked = 0
		var used, grantID sql.NullInt64
		err := st.txRow(ctx, tx, "SELECT client_id, user_id, redirect_uri, redirect_given, scope, code_challenge, nonce, auth_time, expires_at, used_at, grant_id, amr, resource "+
			"FROM codes WHERE hash = ?", hash).Scan(&c.ClientID, &c.UserID, &c.RedirectURI, &c.RedirectGiven, &c.Scope,
			&c.CodeChallenge, &c.Nonce, &c.AuthTime, &c.ExpiresAt, &used, &grantID, &c.AMR, &c.Resource)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil {
			return err
		}
		if used.Valid {
			if grantID.Valid {
				if _, err := st.txExec(ctx, tx, "DELETE FROM grants WHERE id = ?", grantID.Int64); err != nil {
					return err
				}
				revoked = grantID.Int64
			}
			return commitErr{errCodeReused}
		}
		if c.ExpiresAt <= now {
			return errExpired
		}
		pair, err := issue(c)
		if err != nil {
			return err
		}
		var gid int64
		if err := st.txRow(ctx, tx, "INSERT INTO grants(client_id, user_id, scope, auth_time, created_at, amr, resource) VALUES(?, ?, ?, ?, ?, ?, ?) RETURNING id",
			c.ClientID, c.UserID, c.Scope, c.AuthTime, now, c.AMR, c.Resource).Scan(&gid); err != nil {
			return err
		}
		if _, err := st.txExec(ctx, tx, "UPDATE codes SET used_at = ?, grant_id = ? WHERE hash = ?", now, gid, hash); err != nil {
			return err
		}
		if err := st.touchConsent(ctx, tx, c.UserID, c.ClientID, now); err != nil {
			return err
		}
		hint = hintFor(tokenInfo{GrantID: gid, ClientID: c.ClientID, AuthTime: c.AuthTime, AMR: c.AMR, User: user{ID: c.UserID}, GrantResource: c.Resource}, pair.Refresh)
		return st.insertPair(ctx, tx, gid, pair, now)
	})
	if err == nil {
		st.hints.put(hint)
	}
	return c, err
}

// refreshHints remembers the refresh tokens this process issued lately, with what the refresh
// fast path reads before it queues its write (kind, grant, client, scope, expiry, user,
// auth_time: none of which ever changes for a stored token), so that a client refreshing soon
// costs no query on the read pool. A hint is only that: the writer still updates the token
// only if its row exists and is unrotated (revocations and grant deletions remove rows), and
// anything else goes the full way. Each hint is used once; the map is bounded.
type refreshHints struct {
	mu sync.Mutex
	m  map[string]tokenInfo
}

// maxRefreshHints bounds the hints (about 1 MB).
const maxRefreshHints = 4096

// refreshHint is a refresh token's key and what the fast path reads of it.
type refreshHint struct {
	key []byte // nil: no refresh token was issued
	t   tokenInfo
}

// hintFor is the hint for refresh token r, issued in grant g (grant, client, user, auth_time).
func hintFor(g tokenInfo, r newToken) refreshHint {
	return refreshHint{key: r.Hash, t: tokenInfo{Kind: kindRefresh, GrantID: g.GrantID, ClientID: g.ClientID, Scope: r.Scope,
		ExpiresAt: r.ExpiresAt, AuthTime: g.AuthTime, AMR: g.AMR, User: user{ID: g.User.ID}, GrantResource: g.GrantResource}}
}

func (h *refreshHints) put(r refreshHint) {
	if r.key == nil {
		return
	}
	h.mu.Lock()
	if h.m == nil {
		h.m = map[string]tokenInfo{}
	}
	if len(h.m) >= maxRefreshHints {
		for k := range h.m { // drop an arbitrary hint
			delete(h.m, k)
			break
		}
	}
	h.m[string(r.key)] = r.t
	h.mu.Unlock()
}

// take returns and forgets the hint for key.
func (h *refreshHints) take(key []byte) (tokenInfo, bool) {
	h.mu.Lock()
	t, ok := h.m[string(key)]
	if ok {
		delete(h.m, string(key))
	}
	h.mu.Unlock()
	return t, ok
}

// tokenInfo is a stored token with its grant and user, for introspection and refresh.
type tokenInfo struct {
	Kind          int
	GrantID       int64
	ClientID      string
	Scope         string // this token's scope
	GrantScope    string // everything the grant was given
	CreatedAt     int64
	ExpiresAt     int64
	Rotated       bool
	RotatedMs     int64 // when a rotated token was exchanged, unix milliseconds
	SuccessorHash []byte
	SuccessorBlob []byte
	AuthTime      int64
	AMR           string // the grant's sign-in methods (RFC 8176, space-separated); "" without a user
	User          user
	Resource      int64  // access tokens: resources.id of the RFC 8707 resource it is for (0 none)
	GrantResource string // space-separated resources the grant is for
}

// rotatedMs is a refresh token's rotation time in unix milliseconds; a row rotated before
// rotated_ms existed counts from the start of its second, so its grace is never longer.
const rotatedMs = "coalesce(t.rotated_ms, t.rotated_at * 1000)"

var tokenQuery = "SELECT t.kind, t.grant_id, g.client_id, t.scope, g.scope, t.created_at, t.expires_at, " + rotatedMs + ", t.successor_hash, t.successor_blob, " +
	"g.auth_time, g.amr, t.resource, g.resource, " + userColsU + " FROM tokens t JOIN grants g ON g.id = t.grant_id LEFT JOIN users u ON u.id = g.user_id WHERE t.hash = ?"

func scanToken(row rowScanner) (tokenInfo, error) {
	var t tokenInfo
	var rotated sql.NullInt64
	err := row.Scan(append([]any{&t.Kind, &t.GrantID, &t.ClientID, &t.Scope, &t.GrantScope, &t.CreatedAt, &t.ExpiresAt, &rotated,
		&t.SuccessorHash, &t.SuccessorBlob, &t.AuthTime, &t.AMR, &t.Resource, &t.GrantResource}, t.User.dest()...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return t, errNotFound
	}
	t.Rotated, t.RotatedMs = rotated.Valid, rotated.Int64
	return t, err
}

// refreshQuery is the lean read of the token being rotated: it runs inside the serial
// writer, so it leaves the user's profile out (only their id; issue loads more if needed).
const refreshQuery = "SELECT t.kind, t.grant_id, g.client_id, t.scope, t.expires_at, " + rotatedMs + ", t.successor_hash, t.successor_blob, " +
	"g.auth_time, g.amr, coalesce(g.user_id, 0), g.resource FROM tokens t JOIN grants g ON g.id = t.grant_id WHERE t.hash = ?"

func scanRefresh(row rowScanner) (tokenInfo, error) {
	var t tokenInfo
	var rotated sql.NullInt64
	err := row.Scan(&t.Kind, &t.GrantID, &t.ClientID, &t.Scope, &t.ExpiresAt, &rotated, &t.SuccessorHash, &t.SuccessorBlob, &t.AuthTime, &t.AMR, &t.User.ID, &t.GrantResource)
	if errors.Is(err, sql.ErrNoRows) {
		return t, errNotFound
	}
	t.Rotated, t.RotatedMs = rotated.Valid, rotated.Int64
	return t, err
}

// tokenByHash looks a token up; expiry and rotation are for the caller to judge.
func (st *store) tokenByHash(ctx context.Context, hash []byte) (tokenInfo, error) {
	return scanToken(st.queryRow(ctx, tokenQuery, hash))
}

// refreshResult says how a refresh request was answered: new tokens, or (within the grace)
// the sealed successor that an earlier concurrent request received.
type refreshResult struct {
	Token         tokenInfo
	SuccessorBlob []byte // non-nil when the grace returned an earlier successor
}

// rotateRefresh exchanges a refresh token (RFC 6749 §6) for the pair issue makes, in one
// write transaction. The old token is marked rotated (to the millisecond) and keeps the
// sealed successor; presenting it again less than grace later returns that successor, from
// grace on it revokes the whole grant (errRefreshReused, committed): a grace of 0 revokes on
// every replay.
func (st *store) rotateRefresh(ctx context.Context, hash []byte, clientID string, at time.Time, grace time.Duration, issue func(tokenInfo) (tokenPair, []byte, error)) (refreshResult, error) {
	now, nowMs, graceMs := at.Unix(), at.UnixMilli(), grace.Milliseconds()
	var res refreshResult
	var revoked int64
	rotated := false
	// The common case is read and prepared outside the serial writer: a live token of this
	// client, its successor made (random values, hashes, sealing, an ID token). The writer
	// then only checks that the token is still unrotated (a revocation deletes its row) and
	// writes; anything else falls through to the full decision below.
	var pre struct {
		t      tokenInfo
		pair   tokenPair
		sealed []byte
		ok     bool
	}
	t, ok := st.hints.take(hash)
	var err error
	if !ok {
		t, err = scanRefresh(st.queryRow(ctx, refreshQuery, hash))
	}
	if err == nil && t.Kind == kindRefresh && t.ClientID == clientID && t.ExpiresAt > now && !t.Rotated {
		if pair, sealed, err := issue(t); err == nil {
			pre.t, pre.pair, pre.sealed, pre.ok = t, pair, sealed, true
		}
	}
	var next refreshHint // the successor, for its own refresh
	err = st.tx(ctx, func(tx *sql.Tx) error {
		revoked, rotated = 0, false
		if pre.ok {
			r, err := st.txExec(ctx, tx, "UPDATE tokens SET rotated_at = ?, rotated_ms = ?, successor_hash = ?, successor_blob = ? WHERE hash = ? AND rotated_at IS NULL",
				now, nowMs, pre.pair.Refresh.Hash, pre.sealed, hash)
			if err != nil {
				return err
			}
			if n, err := r.RowsAffected(); err == nil && n == 1 {
				res.Token = pre.t
				if err := st.touchConsent(ctx, tx, pre.t.User.ID, pre.t.ClientID, now); err != nil {
					return err
				}
				rotated, next = true, hintFor(pre.t, pre.pair.Refresh)
				return st.insertPair(ctx, tx, pre.t.GrantID, pre.pair, now)
			}
		}
		t, err := scanRefresh(st.txRow(ctx, tx, refreshQuery, hash))
		if err != nil {
			return err
		}
		res.Token = t
		if t.Kind != kindRefresh {
			return errNotFound
		}
		if t.ClientID != clientID {
			return errWrongClient
		}
		if t.ExpiresAt <= now {
			return errExpired
		}
		if t.Rotated {
			// Strictly within the grace, to the millisecond: a replay at exactly grace (or
			// at once, with a grace of 0) revokes.
			if nowMs-t.RotatedMs < graceMs && t.SuccessorBlob != nil {
				var live int
				err := st.txRow(ctx, tx, "SELECT count(*) FROM tokens WHERE hash = ? AND rotated_at IS NULL AND expires_at > ?",
					t.SuccessorHash, now).Scan(&live)
				if err != nil {
					return err
				}
				if live == 1 {
					res.SuccessorBlob = t.SuccessorBlob
					return nil
				}
			}
			if _, err := st.txExec(ctx, tx, "DELETE FROM grants WHERE id = ?", t.GrantID); err != nil {
				return err
			}
			revoked = t.GrantID
			return commitErr{errRefreshReused}
		}
		pair, sealed, err := issue(t)
		if err != nil {
			return err
		}
		if _, err := st.txExec(ctx, tx, "UPDATE tokens SET rotated_at = ?, rotated_ms = ?, successor_hash = ?, successor_blob = ? WHERE hash = ?",
			now, nowMs, pair.Refresh.Hash, sealed, hash); err != nil {
			return err
		}
		if err := st.touchConsent(ctx, tx, t.User.ID, t.ClientID, now); err != nil {
			return err
		}
		rotated, next = true, hintFor(t, pair.Refresh)
		return st.insertPair(ctx, tx, t.GrantID, pair, now)
	})
	if revoked != 0 {
		st.cache.dropGrant(revoked)
	}
	if rotated && err == nil {
		st.cache.dropToken(hash) // the old refresh token is no longer active
		st.hints.put(next)
	}
	return res, err
}

// revokeToken revokes a token issued to clientID (RFC 7009): an access token alone, a refresh
// token with its whole grant.
func (st *store) revokeToken(ctx context.Context, hash []byte, clientID string) error {
	var t tokenInfo
	err := st.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if t, err = scanToken(st.txRow(ctx, tx, tokenQuery, hash)); err != nil {
			return err
		}
		if t.ClientID != clientID {
			return errWrongClient
		}
		if t.Kind == kindRefresh {
			_, err = st.txExec(ctx, tx, "DELETE FROM grants WHERE id = ?", t.GrantID)
		} else {
			_, err = st.txExec(ctx, tx, "DELETE FROM tokens WHERE hash = ?", hash)
		}
		return err
	})
	if err == nil { // synchronously, before the revocation is acknowledged
		if t.Kind == kindRefresh {
			st.cache.dropGrant(t.GrantID)
		} else {
			st.cache.dropToken(hash)
		}
	}
	return err
}

// purge deletes what has expired: codes, tokens, sessions, pending consents, sealed
// successors past the grace, and grants left without tokens or codes.
func (st *store) purge(ctx context.Context, now time.Time, grace time.Duration) (int64, error) {
	n := now.Unix()
	var total int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"DELETE FROM codes WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM tokens WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM sessions WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM pending WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM device_codes WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM user_links WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM registration_tokens WHERE expires_at <= ? OR uses_left <= 0", []any{n}},
			{"DELETE FROM mfa_pending WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM webauthn_used WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM forward_codes WHERE expires_at <= ?", []any{n}},
			{"DELETE FROM app_sessions WHERE expires_at <= ?", []any{n}},
			{"UPDATE tokens SET successor_blob = NULL WHERE successor_blob IS NOT NULL AND coalesce(rotated_ms, rotated_at * 1000) <= ?", []any{now.UnixMilli() - grace.Milliseconds()}},
			{"DELETE FROM grants WHERE NOT EXISTS (SELECT 1 FROM tokens WHERE grant_id = grants.id) AND NOT EXISTS (SELECT 1 FROM codes WHERE grant_id = grants.id)", nil},
		} {
			res, err := st.txExec(ctx, tx, q.sql, q.args...)
			if err != nil {
				return err
			}
			k, _ := res.RowsAffected()
			total += k
		}
		return nil
	})
	return total, err
}
