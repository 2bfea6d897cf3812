package main

// Registered clients in the store: the client row, reading and writing it, the scopes any
// client may ask for, deleting a client with everything issued to it.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	_ "modernc.org/sqlite"
)

// client is a registered OAuth client.
type client struct {
	ID               string
	SecretHash       []byte // SHA-256 of the secret; nil for public clients
	Name             string
	Description      string
	RedirectURIs     []string
	Scopes           []string // allowed scopes
	Public           bool
	CreatedAt        int64
	IDTokenAlg       string   // id_token_signed_response_alg: RS256 (default) or ES256
	PostLogoutURIs   []string // registered post_logout_redirect_uri values
	AlwaysRefresh    bool     // issue refresh tokens to OIDC requests even without offline_access
	OwnerID          int64    // the user who registered it on the client pages; 0 for the CLI or DCR
	LogoURI          string   // shown on the consent page
	ClientURI        string   // homepage, linked from the consent page
	Dynamic          bool     // registered by the app itself (RFC 7591)
	GrantTypes       []string // grants it may use
	RegistrationHash []byte   // SHA-256 of its RFC 7592 registration access token
	RegScopes        []string // dynamic clients: the scopes their initial access token opened (the limit of RFC 7592 updates)
	RegGrants        []string // dynamic clients: the grants their initial access token opened
	Vetted           bool     // created by an administrator (CLI or admin pages): may redirect an anonymous visitor
	AllowGroups      []string // groups whose members may use it, sorted; none: every user (groups.go)
	RequireMFA       bool     // signing in to it needs a second factor (or a user-verified passkey)
	ApplicationType  string   // web or native (OpenID Registration §2, dynamic registration)
	ForwardOrigins   []string // a protected app (forward auth): the origins it answers for, sorted; none: an OAuth client
}

const clientCols = "id, secret_hash, name, description, redirect_uris, scopes, public, created_at, id_token_alg, post_logout_redirect_uris, always_refresh, " +
	"coalesce(owner_id, 0), logo_uri, client_uri, dynamic, grant_types, registration_hash, reg_scopes, reg_grants, vetted, require_mfa, application_type, " + clientGroupsCol +
	", " + forwardOriginsCol

func scanClient(row interface{ Scan(...any) error }) (client, error) {
	var c client
	var uris, scopes, logout, grants, regScopes, regGrants, allow, origins string
	err := row.Scan(&c.ID, &c.SecretHash, &c.Name, &c.Description, &uris, &scopes, &c.Public, &c.CreatedAt, &c.IDTokenAlg, &logout, &c.AlwaysRefresh,
		&c.OwnerID, &c.LogoURI, &c.ClientURI, &c.Dynamic, &grants, &c.RegistrationHash, &regScopes, &regGrants, &c.Vetted, &c.RequireMFA, &c.ApplicationType, &allow, &origins)
	if errors.Is(err, sql.ErrNoRows) {
		return c, errNotFound
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(uris), &c.RedirectURIs); err != nil {
		return c, fmt.Errorf("client %s: redirect_uris: %w", c.ID, err)
	}
	if err := json.Unmarshal([]byte(logout), &c.PostLogoutURIs); err != nil {
		return c, fmt.Errorf("client %s: post_logout_redirect_uris: %w", c.ID, err)
	}
	c.Scopes = strings.Fields(scopes)
	c.GrantTypes = strings.Fields(grants)
	c.RegScopes, c.RegGrants = strings.Fields(regScopes), strings.Fields(regGrants)
	c.AllowGroups = sortedGroups(strings.Fields(allow))
	c.ForwardOrigins = forwardOriginsList(origins)
	return c, nil
}

// clientArgs are c's column values in the order clientWriteCols names them.
func clientArgs(c client) []any {
	uris, _ := json.Marshal(c.RedirectURIs)
	logout := []byte("[]")
	if len(c.PostLogoutURIs) > 0 {
		logout, _ = json.Marshal(c.PostLogoutURIs)
	}
	if c.RedirectURIs == nil {
		uris = []byte("[]")
	}
	if c.IDTokenAlg == "" {
		c.IDTokenAlg = "RS256"
	}
	if len(c.GrantTypes) == 0 && len(c.ForwardOrigins) == 0 { // a protected app has no grant
		c.GrantTypes = []string{grantAuthorizationCode, grantRefreshToken}
	}
	var owner any
	if c.OwnerID != 0 {
		owner = c.OwnerID
	}
	if c.ApplicationType == "" {
		c.ApplicationType = "web"
	}
	return []any{c.SecretHash, c.Name, c.Description, string(uris), strings.Join(c.Scopes, " "), c.Public,
		c.IDTokenAlg, string(logout), c.AlwaysRefresh, owner, c.LogoURI, c.ClientURI, c.Dynamic, strings.Join(c.GrantTypes, " "), c.RegistrationHash,
		strings.Join(c.RegScopes, " "), strings.Join(c.RegGrants, " "), c.Vetted, c.RequireMFA, c.ApplicationType}
}

const clientWriteCols = "secret_hash, name, description, redirect_uris, scopes, public, id_token_alg, post_logout_redirect_uris, always_refresh, " +
	"owner_id, logo_uri, client_uri, dynamic, grant_types, registration_hash, reg_scopes, reg_grants, vetted, require_mfa, application_type"

// insertClientSQL inserts a client: its id, its age and the clientWriteCols.
var insertClientSQL = "INSERT INTO clients(id, created_at, " + clientWriteCols + ") VALUES(?, ?" +
	strings.Repeat(", ?", strings.Count(clientWriteCols, ",")+1) + ")"

func (st *store) createClient(ctx context.Context, c client) error {
	_, err := st.exec(ctx, insertClientSQL, append([]any{c.ID, c.CreatedAt}, clientArgs(c)...)...)
	return mapConstraint(err)
}

// updateClient replaces every registration field of an existing client (not its id or age).
func (st *store) updateClient(ctx context.Context, c client) error {
	defer st.cache.dropClient(c.ID)
	return st.tx(ctx, func(tx *sql.Tx) error { return st.updateClientTx(ctx, tx, c) })
}

// updateClientTx is updateClient's statement inside tx.
func (st *store) updateClientTx(ctx context.Context, tx *sql.Tx, c client) error {
	set := strings.ReplaceAll(clientWriteCols, ",", " = ?,") + " = ?"
	if err := affected(st.txExec(ctx, tx, "UPDATE clients SET "+set+" WHERE id = ?", append(clientArgs(c), c.ID)...)); err != nil || len(c.ForwardOrigins) == 0 {
		return err
	}
	return st.setForwardOriginsTx(ctx, tx, c)
}

func (st *store) clientByID(ctx context.Context, id string) (client, error) {
	return scanClient(st.queryRow(ctx, "SELECT "+clientCols+" FROM clients WHERE id = ?", id))
}

func (st *store) listClients(ctx context.Context) ([]client, error) {
	rows, err := st.query(ctx, "SELECT "+clientCols+" FROM clients ORDER BY created_at, id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// allScopes is the sorted set of scopes any client may ask for (scopes_supported).
func (st *store) allScopes(ctx context.Context) ([]string, error) {
	cs, err := st.listClients(ctx)
	if err != nil {
		return nil, err
	}
	var all []string
	for _, c := range cs {
		all = append(all, c.Scopes...)
	}
	return normScopes(all), nil
}

// deleteClient removes a client with its consents, grants, codes and tokens.
func (st *store) deleteClient(ctx context.Context, id string) error {
	defer st.cache.flush()
	return affected(st.exec(ctx, "DELETE FROM clients WHERE id = ?", id))
}

// setClientSecret replaces a confidential client's secret hash.
func (st *store) setClientSecret(ctx context.Context, id string, hash []byte) error {
	defer st.cache.dropClient(id)
	return affected(st.exec(ctx, "UPDATE clients SET secret_hash = ? WHERE id = ? AND public = 0", hash, id))
}
