package main

import (
	"context"
	"database/sql"
	"errors"
	"strings"
)

// Device flow outcomes at the token endpoint (RFC 8628 §3.5).
var (
	errPending  = errors.New("authorization pending")
	errSlowDown = errors.New("polling too fast")
	errDenied   = errors.New("denied by the user")
)

// issueClientToken stores a client_credentials access token. All of a client's
// client_credentials tokens hang off one grant without a user, so that issuing one is a
// single INSERT in the serial writer: the grant is remembered, and the INSERT re-checks
// that the remembered id is still that client's userless grant (the purge deletes grants
// without tokens, and SQLite may then give the id to a new grant). When it is not, the
// grant is looked up or created again.
func (st *store) issueClientToken(ctx context.Context, clientID string, tok newToken, now int64) error {
	st.touchMu.Lock()
	gid, ok := st.ccGrant[clientID]
	st.touchMu.Unlock()
	if ok {
		// One statement, so no savepoint of its own in the batch. It re-checks the remembered
		// grant: the purge deletes grants left without tokens, and SQLite may reuse their ids.
		const ins = "INSERT INTO tokens(hash, kind, grant_id, scope, created_at, expires_at, resource) " +
			"SELECT ?, ?, id, ?, ?, ?, ? FROM grants WHERE id = ? AND client_id = ? AND user_id IS NULL"
		err := st.txOne(ctx, func(tx *sql.Tx) error {
			r, err := st.txExec(ctx, tx, ins, tok.Hash, kindAccess, tok.Scope, now, tok.ExpiresAt, tok.Resource, gid, clientID)
			if err != nil {
				return err
			}
			if n, err := r.RowsAffected(); err != nil || n != 1 {
				return errStaleGrant
			}
			return nil
		})
		if !errors.Is(err, errStaleGrant) {
			return err
		}
	}
	return st.tx(ctx, func(tx *sql.Tx) error {
		err := st.txRow(ctx, tx, "SELECT id FROM grants WHERE client_id = ? AND user_id IS NULL ORDER BY id LIMIT 1", clientID).Scan(&gid)
		if errors.Is(err, sql.ErrNoRows) {
			err = st.txRow(ctx, tx, "INSERT INTO grants(client_id, user_id, scope, auth_time, created_at) VALUES(?, NULL, '', 0, ?) RETURNING id",
				clientID, now).Scan(&gid)
		}
		if err != nil {
			return err
		}
		if err := st.insertPair(ctx, tx, gid, tokenPair{Access: tok}, now); err != nil {
			return err
		}
		st.touchMu.Lock()
		st.ccGrant[clientID] = gid // kept even if the batch fails: the INSERT above re-checks it
		st.touchMu.Unlock()
		return nil
	})
}

// errStaleGrant: the grant remembered for a client's client_credentials tokens is gone.
var errStaleGrant = errors.New("the remembered client_credentials grant is gone")

// touchConsent records that a user's connection to a client was just used, to the minute:
// a row already touched in the last minute is left alone, so that busy clients do not dirty
// (and fsync) that page on every token.
// The writer also remembers what it touched, so that within the minute it runs no statement.
func (st *store) touchConsent(ctx context.Context, tx *sql.Tx, userID int64, clientID string, now int64) error {
	key := touchKey{userID, clientID}
	st.touchMu.Lock()
	last, ok := st.touched[key]
	st.touchMu.Unlock()
	if ok && now-last < 60 && now >= last {
		return nil
	}
	if _, err := st.txExec(ctx, tx, "UPDATE consents SET last_used = ? WHERE user_id = ? AND client_id = ? AND last_used <= ?", now, userID, clientID, now-60); err != nil {
		return err
	}
	st.touchMu.Lock()
	if len(st.touched) > 10_000 {
		clear(st.touched)
	}
	st.touched[key] = now
	st.touchMu.Unlock()
	return nil
}

// touchKey names a user's connection to a client.
type touchKey struct {
	user   int64
	client string
}

// deviceCode is a pending device authorization (RFC 8628).
type deviceCode struct {
	ClientID  string
	Scope     string
	Resource  string // space-separated RFC 8707 resources of the request
	Status    int    // 0 pending, 1 approved, 2 denied
	UserID    int64
	AuthTime  int64
	AMR       string // how the approving user signed in
	Interval  int64
	LastPoll  int64
	ExpiresAt int64
}

const (
	devicePending  = 0
	deviceApproved = 1
	deviceDenied   = 2
)

// Bounds on live device authorizations (issue 11.7): anyone may start one for a public client,
// and each is a row until it expires.
const (
	maxPendingDevicePerClient = 300
	maxPendingDevice          = 10_000
)

// errTooMany is a bound reached: nothing was stored.
var errTooMany = errors.New("too many pending requests")

// createDeviceCode stores a device authorization; errExists when the user code collides,
// errTooMany when the client or the server already has its bound of live ones. The counts
// and the insert are one statement, so concurrent requests cannot overrun the bound.
func (st *store) createDeviceCode(ctx context.Context, hash, userHash []byte, d deviceCode, now int64) error {
	res, err := st.exec(ctx, "INSERT INTO device_codes(hash, user_code_hash, client_id, scope, poll_interval, expires_at, resource) SELECT ?, ?, ?, ?, ?, ?, ? "+
		"WHERE (SELECT count(*) FROM device_codes WHERE client_id = ? AND expires_at > ?) < ? AND (SELECT count(*) FROM device_codes WHERE expires_at > ?) < ?",
		hash, userHash, d.ClientID, d.Scope, d.Interval, d.ExpiresAt, d.Resource, d.ClientID, now, maxPendingDevicePerClient, now, maxPendingDevice)
	if err != nil {
		return mapConstraint(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return errTooMany
	}
	return nil
}

// pendingDevice finds the live, undecided device authorization with that user code.
func (st *store) pendingDevice(ctx context.Context, userHash []byte, now int64) ([]byte, deviceCode, error) {
	var hash []byte
	var d deviceCode
	err := st.queryRow(ctx, "SELECT hash, client_id, scope, resource FROM device_codes WHERE user_code_hash = ? AND status = 0 AND expires_at > ?",
		userHash, now).Scan(&hash, &d.ClientID, &d.Scope, &d.Resource)
	if errors.Is(err, sql.ErrNoRows) {
		err = errNotFound
	}
	return hash, d, err
}

// decideDevice records the user's decision on a pending device authorization, once; an
// approval is remembered as consent (with its RFC 8707 resources), so that it appears among the
// user's connections. It is recorded only while the session it was made in is live
// (errSessionEnded): a password reset committed meanwhile wins.
func (st *store) decideDevice(ctx context.Context, hash, sessionHash []byte, userID, authTime int64, amr string, approve bool, scopes, resources []string, now int64) error {
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := st.liveSession(ctx, tx, sessionHash, userID, now); err != nil {
			return err
		}
		status, clientID := deviceDenied, ""
		if approve {
			status = deviceApproved
		}
		err := st.txRow(ctx, tx, "UPDATE device_codes SET status = ?, user_id = ?, auth_time = ?, amr = ? WHERE hash = ? AND status = 0 AND expires_at > ? RETURNING client_id",
			status, userID, authTime, amr, hash, now).Scan(&clientID)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil || !approve {
			return err
		}
		if err := st.addConsent(ctx, tx, userID, clientID, scopes, now); err != nil {
			return err
		}
		return st.addConsentResources(ctx, tx, userID, clientID, resources)
	})
}

// pollDevice answers a device_code token request (RFC 8628 §3.4-3.5) in one transaction:
// too fast is slow_down (and the interval grows by 5 s), undecided is pending, denied or
// expired ends it, approved issues the tokens issue makes and consumes the device code.
func (st *store) pollDevice(ctx context.Context, hash []byte, clientID string, now int64, issue func(deviceCode) (tokenPair, error)) (deviceCode, error) {
	var d deviceCode
	err := st.tx(ctx, func(tx *sql.Tx) error {
		var uid sql.NullInt64
		err := st.txRow(ctx, tx, "SELECT client_id, scope, status, user_id, auth_time, poll_interval, last_poll, expires_at, amr, resource FROM device_codes WHERE hash = ?",
			hash).Scan(&d.ClientID, &d.Scope, &d.Status, &uid, &d.AuthTime, &d.Interval, &d.LastPoll, &d.ExpiresAt, &d.AMR, &d.Resource)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil {
			return err
		}
		d.UserID = uid.Int64
		if d.ClientID != clientID {
			return errWrongClient
		}
		if d.ExpiresAt <= now {
			if _, err := st.txExec(ctx, tx, "DELETE FROM device_codes WHERE hash = ?", hash); err != nil {
				return err
			}
			return commitErr{errExpired}
		}
		if now-d.LastPoll < d.Interval {
			_, err := st.txExec(ctx, tx, "UPDATE device_codes SET poll_interval = poll_interval + 5, last_poll = ? WHERE hash = ?", now, hash)
			if err != nil {
				return err
			}
			return commitErr{errSlowDown}
		}
		switch d.Status {
		case devicePending:
			if _, err := st.txExec(ctx, tx, "UPDATE device_codes SET last_poll = ? WHERE hash = ?", now, hash); err != nil {
				return err
			}
			return commitErr{errPending}
		case deviceDenied:
			if _, err := st.txExec(ctx, tx, "DELETE FROM device_codes WHERE hash = ?", hash); err != nil {
				return err
			}
			return commitErr{errDenied}
		}
		pair, err := issue(d)
		if err != nil {
			return err
		}
		var gid int64
		if err := st.txRow(ctx, tx, "INSERT INTO grants(client_id, user_id, scope, auth_time, created_at, amr, resource) VALUES(?, ?, ?, ?, ?, ?, ?) RETURNING id",
			d.ClientID, d.UserID, d.Scope, d.AuthTime, now, d.AMR, d.Resource).Scan(&gid); err != nil {
			return err
		}
		if _, err := st.txExec(ctx, tx, "DELETE FROM device_codes WHERE hash = ?", hash); err != nil {
			return err
		}
		if err := st.touchConsent(ctx, tx, d.UserID, d.ClientID, now); err != nil {
			return err
		}
		return st.insertPair(ctx, tx, gid, pair, now)
	})
	return d, err
}

// ---- connections

// connection is an app a user has authorized.
type connection struct {
	Client    client
	Scopes    []string
	CreatedAt int64
	LastUsed  int64
}

// connections lists the apps a user has approved, most recently used first.
func (st *store) connections(ctx context.Context, userID int64) ([]connection, error) {
	rows, err := st.query(ctx, "SELECT client_id, scope, created_at, max(last_used, updated_at) FROM consents WHERE user_id = ? ORDER BY 4 DESC", userID)
	if err != nil {
		return nil, err
	}
	type row struct {
		id, scope      string
		created, using int64
	}
	var raw []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.id, &r.scope, &r.created, &r.using); err != nil {
			rows.Close()
			return nil, err
		}
		raw = append(raw, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []connection
	for _, r := range raw {
		c, err := st.clientByID(ctx, r.id)
		if err != nil {
			return nil, err
		}
		out = append(out, connection{Client: c, Scopes: strings.Fields(r.scope), CreatedAt: r.created, LastUsed: r.using})
	}
	return out, nil
}

// revokeConnection forgets a user's consent to a client and revokes every grant (with all its
// tokens) and pending code of that pair at once.
func (st *store) revokeConnection(ctx context.Context, userID int64, clientID string) error {
	defer st.cache.flush()
	return st.tx(ctx, func(tx *sql.Tx) error {
		if err := affected(st.txExec(ctx, tx, "DELETE FROM consents WHERE user_id = ? AND client_id = ?", userID, clientID)); err != nil {
			return err
		}
		for _, q := range []string{"DELETE FROM grants WHERE user_id = ? AND client_id = ?", "DELETE FROM codes WHERE user_id = ? AND client_id = ?",
			"DELETE FROM device_codes WHERE user_id = ? AND client_id = ?",
			"DELETE FROM app_sessions WHERE user_id = ? AND client_id = ?", "DELETE FROM forward_codes WHERE user_id = ? AND client_id = ?"} {
			if _, err := st.txExec(ctx, tx, q, userID, clientID); err != nil {
				return err
			}
		}
		return nil
	})
}
