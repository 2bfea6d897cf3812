package main

// Forward auth in the store (forwardauth.go has the rules): the origins each protected app
// answers for, the one-time codes a sign-in hands to an app's callback, and app sessions,
// the per-host cookies a check accepts. Codes and app sessions are kept only as hashes, like
// every code and session (the code under its time-ordered key, as authorization codes are).
// An app session hangs off the oauthd session it came from (ON DELETE CASCADE): signing out,
// a password reset, disabling the user or deleting the app ends it in the same transaction.
// The check reads app sessions through a cache (cachedAppSession) that keeps an entry at most
// a minute and is emptied whenever the generation counter moves, which deleting a live app
// session does (a trigger), in this process or another.

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
)

// migrationForwardAuth is the schema step of forward auth (issue 16).
const migrationForwardAuth = `
CREATE TABLE forward_origins (
	origin    TEXT PRIMARY KEY,                 -- scheme://host[:port], lower case, without a default port
	client_id TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX forward_origins_client ON forward_origins(client_id);
CREATE TABLE forward_codes (
	hash         BLOB PRIMARY KEY,              -- time and SHA-256 of the one-time code (tokenKey)
	client_id    TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
	origin       TEXT NOT NULL,                 -- the only origin whose callback may redeem it
	user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	session_hash BLOB NOT NULL REFERENCES sessions(hash) ON DELETE CASCADE,
	state_hash   BLOB NOT NULL,                 -- SHA-256 of the state its browser holds in a cookie on the app's host
	rd           TEXT NOT NULL,                 -- the original URL, where the callback sends the browser
	expires_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX forward_codes_session ON forward_codes(session_hash);
CREATE TABLE app_sessions (
	hash         BLOB PRIMARY KEY,              -- SHA-256 of the app-session cookie
	session_hash BLOB NOT NULL REFERENCES sessions(hash) ON DELETE CASCADE,
	user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
	client_id    TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
	origin       TEXT NOT NULL,                 -- the origin whose cookie it is
	created_at   INTEGER NOT NULL,
	expires_at   INTEGER NOT NULL               -- the oauthd session's expiry
) WITHOUT ROWID;
CREATE INDEX app_sessions_session ON app_sessions(session_hash);
CREATE INDEX app_sessions_user ON app_sessions(user_id, client_id);
CREATE TRIGGER forward_origins_ins AFTER INSERT ON forward_origins BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER forward_origins_del AFTER DELETE ON forward_origins BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER app_sessions_del AFTER DELETE ON app_sessions WHEN old.expires_at > unixepoch() BEGIN UPDATE generation SET n = n + 1; END;
`

// forwardOriginsCol reads a protected app's origins with the client (clientCols),
// space-separated and sorted; empty for an OAuth client.
const forwardOriginsCol = "coalesce((SELECT group_concat(origin, ' ' ORDER BY origin) FROM forward_origins fo WHERE fo.client_id = clients.id), '')"

// setForwardOriginsTx makes c's origins exactly c.ForwardOrigins inside tx. An origin
// another app already protects is refused, naming that app (a specError: the CLI and the
// pages show it as it is).
func (st *store) setForwardOriginsTx(ctx context.Context, tx *sql.Tx, c client) error {
	for _, o := range c.ForwardOrigins {
		var other string
		err := st.txRow(ctx, tx, "SELECT c.name FROM forward_origins fo JOIN clients c ON c.id = fo.client_id WHERE fo.origin = ? AND fo.client_id != ?", o, c.ID).Scan(&other)
		if err == nil {
			return badSpec("the origin %s is already protected by the app %q", o, other)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	rows, err := txQuery(ctx, tx, "SELECT origin FROM forward_origins WHERE client_id = ?", c.ID)
	if err != nil {
		return err
	}
	var old []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			rows.Close()
			return err
		}
		old = append(old, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, o := range old {
		if !slices.Contains(c.ForwardOrigins, o) {
			// Its app sessions go too: the app no longer answers there.
			if _, err := st.txExec(ctx, tx, "DELETE FROM app_sessions WHERE client_id = ? AND origin = ?", c.ID, o); err != nil {
				return err
			}
			if _, err := st.txExec(ctx, tx, "DELETE FROM forward_origins WHERE origin = ?", o); err != nil {
				return err
			}
		}
	}
	for _, o := range c.ForwardOrigins {
		if !slices.Contains(old, o) {
			if _, err := st.txExec(ctx, tx, "INSERT INTO forward_origins(origin, client_id) VALUES(?, ?)", o, c.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// forwardClient is the protected app registered for origin, through the cache; errNotFound
// for an origin no app protects. It makes the request's caches current first (fresh).
func (st *store) forwardClient(ctx context.Context, origin string) (client, error) {
	if err := st.fresh(ctx); err != nil {
		return client{}, err
	}
	c := st.cache
	c.mu.Lock()
	e := c.epoch
	id, ok := c.origins[origin]
	c.mu.Unlock()
	if !ok {
		err := st.queryRow(ctx, "SELECT client_id FROM forward_origins WHERE origin = ?", origin).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return client{}, errNotFound // unknown origins are not cached
		} else if err != nil {
			return client{}, err
		}
		c.mu.Lock()
		if c.epoch == e && len(c.origins) < maxCachedApps {
			c.origins[origin] = id
		}
		c.mu.Unlock()
	}
	return st.cachedClient(ctx, id)
}

// forwardCode is a one-time code of a forward-auth sign-in, on its way to the app's callback.
type forwardCode struct {
	ClientID    string
	Origin      string // where it may be redeemed
	RD          string // the original URL
	UserID      int64
	SessionHash []byte // the oauthd session that signed in
	StateHash   []byte // SHA-256 of the state cookie's value on the app's host
	ExpiresAt   int64
}

// issueForwardCode stores a code, only while the session that asked for it is live
// (errSessionEnded otherwise: a sign-out or password reset meanwhile wins).
func (st *store) issueForwardCode(ctx context.Context, key []byte, fc forwardCode, now int64) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := st.liveSession(ctx, tx, fc.SessionHash, fc.UserID, now); err != nil {
			return err
		}
		_, err := st.txExec(ctx, tx, "INSERT INTO forward_codes(hash, client_id, origin, user_id, session_hash, state_hash, rd, expires_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
			key, fc.ClientID, fc.Origin, fc.UserID, fc.SessionHash, fc.StateHash, fc.RD, fc.ExpiresAt)
		return err
	})
}

// Why a forward-auth code was refused.
var (
	errCodeOrigin = errors.New("the code was issued for another origin")
	errCodeState  = errors.New("the code belongs to another sign-in (state)")
)

// takeForwardCode consumes the code with that key, if it was issued for origin and the
// state whose hash is stateHash: a code presented at another app, or with another browser's
// state, is refused (errCodeOrigin, errCodeState) and stays unused for its own browser.
// errNotFound: unknown or already used; errExpired: older than its 60 seconds.
func (st *store) takeForwardCode(ctx context.Context, key []byte, origin string, stateHash []byte, now int64) (forwardCode, error) {
	var fc forwardCode
	err := st.txOne(ctx, func(tx *sql.Tx) error {
		return st.txRow(ctx, tx, "DELETE FROM forward_codes WHERE hash = ? AND origin = ? AND state_hash = ? RETURNING client_id, origin, rd, user_id, session_hash, state_hash, expires_at",
			key, origin, stateHash).Scan(&fc.ClientID, &fc.Origin, &fc.RD, &fc.UserID, &fc.SessionHash, &fc.StateHash, &fc.ExpiresAt)
	})
	if errors.Is(err, sql.ErrNoRows) {
		var o string
		switch err := st.queryRow(ctx, "SELECT origin FROM forward_codes WHERE hash = ?", key).Scan(&o); {
		case errors.Is(err, sql.ErrNoRows):
			return fc, errNotFound
		case err != nil:
			return fc, err
		case o != origin:
			return fc, errCodeOrigin
		default:
			return fc, errCodeState
		}
	}
	if err != nil {
		return fc, err
	}
	if fc.ExpiresAt <= now {
		return fc, errExpired
	}
	return fc, nil
}

// createAppSession starts the app session with that cookie hash for the code's user at its
// origin, expiring with the oauthd session it came from, and remembers the app among the
// user's connections; it returns the expiry. errSessionEnded when that session is over (or
// its user disabled) by now.
func (st *store) createAppSession(ctx context.Context, hash []byte, fc forwardCode, now int64) (int64, error) {
	var expires int64
	err := st.tx(ctx, func(tx *sql.Tx) error {
		err := st.txRow(ctx, tx, "INSERT INTO app_sessions(hash, session_hash, user_id, client_id, origin, created_at, expires_at) "+
			"SELECT ?, s.hash, s.user_id, ?, ?, ?, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id "+
			"WHERE s.hash = ? AND s.user_id = ? AND s.expires_at > ? AND u.disabled = 0 RETURNING expires_at",
			hash, fc.ClientID, fc.Origin, now, fc.SessionHash, fc.UserID, now).Scan(&expires)
		if errors.Is(err, sql.ErrNoRows) {
			return errSessionEnded
		}
		if err != nil {
			return err
		}
		return st.addConsent(ctx, tx, fc.UserID, fc.ClientID, nil, now)
	})
	return expires, err
}

// appSession is a protected app's sign-in as a check reads it.
type appSession struct {
	ClientID  string
	Origin    string
	User      user   // without its password hash
	AMR       string // how the oauthd session signed in (RFC 8176)
	ExpiresAt int64
	loaded    int64 // when it was read from the database
}

// appSessionTTL is how long the cache keeps an app session before reading it again: the
// longest a change the generation counter does not see (none is known) could go unnoticed.
const appSessionTTL = 60

// maxCachedApps bounds the app-session and origin caches.
const maxCachedApps = 10_000

// appSessionByHash reads the live app session with that cookie hash, with its user: the
// oauthd session it came from must be live and the user enabled.
func (st *store) appSessionByHash(ctx context.Context, hash []byte, now int64) (appSession, error) {
	var a appSession
	err := st.queryRow(ctx, "SELECT a.client_id, a.origin, a.expires_at, s.amr, "+userColsU+" FROM app_sessions a "+
		"JOIN sessions s ON s.hash = a.session_hash JOIN users u ON u.id = a.user_id "+
		"WHERE a.hash = ? AND a.expires_at > ? AND s.expires_at > ? AND u.disabled = 0", hash, now, now).
		Scan(append([]any{&a.ClientID, &a.Origin, &a.ExpiresAt, &a.AMR}, a.User.dest()...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return a, errNotFound
	}
	a.User.PasswordHash = ""
	a.loaded = now
	return a, err
}

// cachedAppSession is appSessionByHash through the cache: no query while the entry is
// younger than appSessionTTL and unexpired, and nothing written ever. The caller has made
// the request's caches current (forwardClient calls fresh).
func (st *store) cachedAppSession(ctx context.Context, hash []byte, now int64) (appSession, error) {
	c := st.cache
	c.mu.Lock()
	e := c.epoch
	a, ok := c.apps[string(hash)]
	c.mu.Unlock()
	if ok && now-a.loaded < appSessionTTL && now >= a.loaded && a.ExpiresAt > now {
		return a, nil
	}
	a, err := st.appSessionByHash(ctx, hash, now)
	c.mu.Lock()
	switch {
	case err != nil:
		delete(c.apps, string(hash))
	case c.epoch == e:
		if len(c.apps) >= maxCachedApps {
			for k := range c.apps { // evict an arbitrary entry
				delete(c.apps, k)
				break
			}
		}
		c.apps[string(hash)] = a
	}
	c.mu.Unlock()
	return a, err
}

// forwardOriginsList is the column value forwardOriginsCol read, as a list.
func forwardOriginsList(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Fields(v)
}
