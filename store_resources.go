package main

// Storage of resource servers (resources.go): the resources table with the introspection
// credential each one uses, the resources a user approved for a client, and the in-memory
// copies the token endpoints read instead of querying (the registered resources, users'
// subject identifiers, the JWT signing key), invalidated through the generation triggers
// like every other cache (cache.go).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// resource is a registered resource server (an MCP server, an API).
type resource struct {
	ID        int64         // what access tokens store (never reused)
	URI       string        // the RFC 8707 resource indicator, canonical (canonicalResource)
	Name      string        // shown on the consent page
	Scopes    []string      // requestable by any client together with this resource
	JWT       bool          // access tokens for it are RFC 9068 JWTs (jwtat.go)
	TokenTTL  time.Duration // access token lifetime; 0: the server's -token-ttl
	ClientID  string        // its introspection credential (a confidential client without grants)
	CreatedAt int64
}

// TTLText is the token lifetime as people write it ("10m", "1h30m"; "" for the default).
func (r resource) TTLText() string {
	if r.TokenTTL == 0 {
		return ""
	}
	s := r.TokenTTL.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// resourceSet is every registered resource, as the caches hold it.
type resourceSet struct {
	byURI    map[string]resource
	byID     map[int64]resource
	byClient map[string]int64 // introspection credential's client id → resource id
}

// resourceCache is what the token endpoints keep in memory for resources; the zero value
// means "load on next use". It lives in cache (under its lock) and is dropped with the rest.
type resourceCache struct {
	set  *resourceSet
	subs map[int64]string // user id → sub (ids can be reused after a deletion: dropped with it)
	key  *atKey           // the current ES256 key that signs JWT access tokens
}

// maxCachedSubs bounds resourceCache.subs.
const maxCachedSubs = 10_000

const resourceCols = "id, uri, name, scopes, jwt, token_ttl, client_id, created_at"

// scanResource reads one resources row.
func scanResource(row rowScanner) (resource, error) {
	var r resource
	var scopes string
	var ttl int64
	err := row.Scan(&r.ID, &r.URI, &r.Name, &scopes, &r.JWT, &ttl, &r.ClientID, &r.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return r, errNotFound
	}
	r.Scopes, r.TokenTTL = strings.Fields(scopes), time.Duration(ttl)*time.Second
	return r, err
}

// resourceByURI is the resource registered under uri (errNotFound when none).
func (st *store) resourceByURI(ctx context.Context, uri string) (resource, error) {
	return scanResource(st.queryRow(ctx, "SELECT "+resourceCols+" FROM resources WHERE uri = ?", uri))
}

// listResources returns every registered resource, by URI.
func (st *store) listResources(ctx context.Context) ([]resource, error) {
	rows, err := st.query(ctx, "SELECT "+resourceCols+" FROM resources ORDER BY uri")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []resource
	for rows.Next() {
		r, err := scanResource(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// createResource stores a resource with its introspection credential: a confidential client
// with the given secret hash and no grant types (it can only introspect).
func (st *store) createResource(ctx context.Context, r *resource, secretHash []byte) error {
	err := st.tx(ctx, func(tx *sql.Tx) error {
		if _, err := st.txExec(ctx, tx, "INSERT INTO clients(id, secret_hash, name, description, redirect_uris, scopes, public, created_at, grant_types) "+
			"VALUES(?, ?, ?, ?, '[]', '', 0, ?, '')", r.ClientID, secretHash, r.Name+" (resource server)",
			"Introspection credential of the resource "+r.URI, r.CreatedAt); err != nil {
			return err
		}
		return st.txRow(ctx, tx, "INSERT INTO resources(uri, name, scopes, jwt, token_ttl, client_id, created_at) VALUES(?, ?, ?, ?, ?, ?, ?) RETURNING id",
			r.URI, r.Name, strings.Join(r.Scopes, " "), r.JWT, int64(r.TokenTTL/time.Second), r.ClientID, r.CreatedAt).Scan(&r.ID)
	})
	if err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed: resources.uri") {
		return errExists
	}
	st.cache.flush() // synchronously: the next request sees it
	return mapConstraint(err)
}

// deleteResource removes a resource and its introspection credential. Tokens already issued
// for it are left to expire (finding them would scan the tokens table inside the writer).
func (st *store) deleteResource(ctx context.Context, uri string) error {
	defer st.cache.flush()
	return st.tx(ctx, func(tx *sql.Tx) error {
		var clientID string
		err := st.txRow(ctx, tx, "DELETE FROM resources WHERE uri = ? RETURNING client_id", uri).Scan(&clientID)
		if errors.Is(err, sql.ErrNoRows) {
			return errNotFound
		}
		if err != nil {
			return err
		}
		_, err = st.txExec(ctx, tx, "DELETE FROM clients WHERE id = ?", clientID)
		return err
	})
}

// cachedResources is every registered resource, from memory unless a change since the last
// load dropped it. As with cachedClient, the caller has called fresh during this request.
func (st *store) cachedResources(ctx context.Context) (*resourceSet, error) {
	st.cache.mu.Lock()
	e, set := st.cache.epoch, st.cache.res.set
	st.cache.mu.Unlock()
	if set != nil {
		return set, nil
	}
	all, err := st.listResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("resources: %w", err)
	}
	set = &resourceSet{byURI: map[string]resource{}, byID: map[int64]resource{}, byClient: map[string]int64{}}
	for _, r := range all {
		set.byURI[r.URI], set.byID[r.ID] = r, r
		set.byClient[r.ClientID] = r.ID
	}
	st.cache.mu.Lock()
	if st.cache.epoch == e {
		st.cache.res.set = set
	}
	st.cache.mu.Unlock()
	return set, nil
}

// userSub is the sub of the user with that id, from memory when seen before: a JWT access
// token names its user, and the token endpoints otherwise carry only the id.
func (st *store) userSub(ctx context.Context, id int64) (string, error) {
	st.cache.mu.Lock()
	e, sub := st.cache.epoch, st.cache.res.subs[id]
	st.cache.mu.Unlock()
	if sub != "" {
		return sub, nil
	}
	if err := st.queryRow(ctx, "SELECT sub FROM users WHERE id = ?", id).Scan(&sub); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			err = errNotFound
		}
		return "", err
	}
	st.cache.mu.Lock()
	if st.cache.epoch == e {
		if st.cache.res.subs == nil || len(st.cache.res.subs) >= maxCachedSubs {
			st.cache.res.subs = map[int64]string{}
		}
		st.cache.res.subs[id] = sub
	}
	st.cache.mu.Unlock()
	return sub, nil
}

// cachedATKey is the current ES256 signing key, parsed, from memory unless the keys changed.
func (st *store) cachedATKey(ctx context.Context) (*atKey, error) {
	st.cache.mu.Lock()
	e, k := st.cache.epoch, st.cache.res.key
	st.cache.mu.Unlock()
	if k != nil {
		return k, nil
	}
	kid, der, err := st.currentKey(ctx, "ES256")
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", kid, err)
	}
	ec, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key %s is not an ES256 key", kid)
	}
	k = newATKey(kid, crypto.Signer(ec))
	st.cache.mu.Lock()
	if st.cache.epoch == e {
		st.cache.res.key = k
	}
	st.cache.mu.Unlock()
	return k, nil
}

// consentResources returns the resources the user has approved for the client.
func (st *store) consentResources(ctx context.Context, userID int64, clientID string) ([]string, error) {
	var s string
	err := st.queryRow(ctx, "SELECT resources FROM consents WHERE user_id = ? AND client_id = ?", userID, clientID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNotFound
	}
	return strings.Fields(s), err
}

// addConsentResources joins resources to what the user approved for the client, inside the
// transaction that records the consent itself (addConsent has created the row).
func (st *store) addConsentResources(ctx context.Context, tx *sql.Tx, userID int64, clientID string, uris []string) error {
	if len(uris) == 0 {
		return nil
	}
	var old string
	if err := st.txRow(ctx, tx, "SELECT resources FROM consents WHERE user_id = ? AND client_id = ?", userID, clientID).Scan(&old); err != nil {
		return err
	}
	all := slices.Compact(slices.Sorted(slices.Values(append(strings.Fields(old), uris...))))
	_, err := st.txExec(ctx, tx, "UPDATE consents SET resources = ? WHERE user_id = ? AND client_id = ?", strings.Join(all, " "), userID, clientID)
	return err
}
