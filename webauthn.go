package main

// The two WebAuthn ceremonies (Web Authentication Level 2, W3C Recommendation 2021), server
// side: registration (§7.1) and authentication (§7.2), without HTTP. The relying party ID is
// the issuer's host and the origin is the issuer's origin, both checked exactly; clientDataJSON
// must have the ceremony's type and one of our challenges; the authenticator data must carry
// the SHA-256 of the RP ID, user presence, and user verification when it is required;
// the signature counter must grow unless the authenticator never counts (both zero).
//
// Challenges are stateless until used: 16 random bytes, an expiry and an HMAC over both and
// over what the challenge is for (registration, sign-in, a second factor, a confirmation)
// and whom (the session, the pending sign-in or the browser). Issuing one writes nothing;
// the ceremony that succeeds records the challenge's hash as used, in the same transaction
// that signs the user in, so that each works once (store_mfa.go). Attestation is not asked
// for ("none"): a statement that comes anyway is ignored, since nothing here trusts it.

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Authenticator data flags (WebAuthn §6.1).
const (
	flagUP = 0x01 // user present
	flagUV = 0x04 // user verified (PIN, biometrics)
	flagBE = 0x08 // backup eligible: a synced passkey
	flagBS = 0x10 // backed up
	flagAT = 0x40 // attested credential data included
	flagED = 0x80 // extension data included
)

// challengeTTL is how long a WebAuthn challenge may be answered.
const challengeTTL = 5 * time.Minute

// Why a ceremony failed; the page shows the text.
var (
	errWAOrigin     = errors.New("the passkey answered for another origin than this sign-in service")
	errWARPID       = errors.New("the passkey was made for another site (relying party ID)")
	errWAType       = errors.New("the browser's answer is for the other WebAuthn ceremony")
	errWAChallenge  = errors.New("the passkey request is not one this server made for you")
	errWAExpired    = errors.New("the passkey request expired; try again")
	errWAReplayed   = errors.New("this passkey answer was already used; try again")
	errWANoUP       = errors.New("the authenticator did not confirm that you were present")
	errWANoUV       = errors.New("the authenticator did not verify you (PIN or biometrics), which is required here")
	errWASignature  = errors.New("the passkey's signature does not verify")
	errWACounter    = errors.New("the passkey's signature counter went backwards: it may have been cloned")
	errWAUnknown    = errors.New("this passkey is not registered here")
	errWAOtherUser  = errors.New("this passkey belongs to another account")
	errWAMalformed  = errors.New("the browser's passkey answer is malformed")
	errWACrossOrign = errors.New("the passkey was used from a page embedded by another site")
)

// relyingParty is who we are to authenticators: the RP ID and the one origin accepted.
type relyingParty struct {
	ID     string // the issuer's host name (WebAuthn §5.1.2: a registrable domain suffix)
	Origin string // the issuer's origin: scheme://host[:port]
	hash   [32]byte
}

// relyingPartyFor derives the RP from the issuer; ok is false when its host is an IP
// address, which browsers refuse as an RP ID (WebAuthn §5.1.2: a valid domain string).
func relyingPartyFor(issuer string) (relyingParty, bool) {
	u, err := url.Parse(issuer)
	if err != nil || u.Hostname() == "" || net.ParseIP(u.Hostname()) != nil {
		return relyingParty{}, false
	}
	rp := relyingParty{ID: u.Hostname(), Origin: u.Scheme + "://" + u.Host}
	rp.hash = sha256.Sum256([]byte(rp.ID))
	return rp, true
}

// ---- challenges

// Challenge purposes: what a challenge may be answered for.
const (
	purposeRegister = "register" // add a passkey (bound to the session or the enrolment step)
	purposeLogin    = "login"    // usernameless sign-in (bound to the browser)
	purposeFactor   = "factor"   // the second-factor step (bound to the pending sign-in)
	purposeConfirm  = "confirm"  // confirm a sensitive change (bound to the session)
)

// newChallenge makes a challenge for purpose and binding that expires in challengeTTL.
func newChallenge(key []byte, purpose string, binding []byte, now time.Time) []byte {
	c := make([]byte, 24, 24+sha256.Size)
	copy(c, newRandom(16))
	binary.BigEndian.PutUint64(c[16:24], uint64(now.Add(challengeTTL).Unix()))
	return append(c, challengeMAC(key, purpose, binding, c[:24])...)
}

// challengeMAC authenticates a challenge's random part and expiry for purpose and binding.
func challengeMAC(key []byte, purpose string, binding, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("oauthd webauthn challenge v1\x00" + purpose + "\x00"))
	m.Write(binding)
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)
}

// checkChallenge verifies that c is ours, for purpose and binding, and not expired.
func checkChallenge(key []byte, purpose string, binding, c []byte, now time.Time) error {
	if len(c) != 24+sha256.Size || subtle.ConstantTimeCompare(c[24:], challengeMAC(key, purpose, binding, c[:24])) != 1 {
		return errWAChallenge
	}
	if now.Unix() >= int64(binary.BigEndian.Uint64(c[16:24])) {
		return errWAExpired
	}
	return nil
}

// ---- client data and authenticator data

// clientData is the part of clientDataJSON (WebAuthn §5.8.1) that is checked.
type clientData struct {
	Type        string `json:"type"`
	Challenge   string `json:"challenge"`
	Origin      string `json:"origin"`
	CrossOrigin bool   `json:"crossOrigin"`
}

// parseClientData reads clientDataJSON and checks its type and origin; it returns the
// challenge for the caller to check.
func parseClientData(raw []byte, rp relyingParty, wantType string) ([]byte, error) {
	var cd clientData
	if err := json.Unmarshal(raw, &cd); err != nil {
		return nil, fmt.Errorf("%w: clientDataJSON: %v", errWAMalformed, err)
	}
	if cd.Type != wantType {
		return nil, errWAType
	}
	if cd.Origin != rp.Origin {
		return nil, errWAOrigin
	}
	if cd.CrossOrigin {
		return nil, errWACrossOrign
	}
	ch, err := b64.DecodeString(cd.Challenge)
	if err != nil {
		return nil, errWAChallenge
	}
	return ch, nil
}

// authData is parsed authenticator data (WebAuthn §6.1).
type authData struct {
	RPIDHash  []byte
	Flags     byte
	SignCount uint32
	// Attested credential data (§6.5.1), present at registration.
	AAGUID       []byte
	CredentialID []byte
	PublicKey    []byte // the COSE_Key exactly as encoded
	Key          coseKey
}

// maxCredentialIDLen is WebAuthn's bound on credential IDs (§5.8.3: at most 1023 bytes).
const maxCredentialIDLen = 1023

// parseAuthData reads authenticator data: the fixed 37 bytes, the attested credential data
// when AT is set, the extension outputs (a CBOR map) when ED is set, and nothing more.
func parseAuthData(b []byte) (authData, error) {
	var ad authData
	if len(b) < 37 {
		return ad, fmt.Errorf("%w: authenticator data of %d bytes", errWAMalformed, len(b))
	}
	ad.RPIDHash, ad.Flags, ad.SignCount = b[:32], b[32], binary.BigEndian.Uint32(b[33:37])
	rest := b[37:]
	if ad.Flags&flagAT != 0 {
		if len(rest) < 18 {
			return ad, fmt.Errorf("%w: truncated attested credential data", errWAMalformed)
		}
		ad.AAGUID = rest[:16]
		n := int(binary.BigEndian.Uint16(rest[16:18]))
		rest = rest[18:]
		if n == 0 || n > maxCredentialIDLen || n > len(rest) {
			return ad, fmt.Errorf("%w: credential ID of %d bytes", errWAMalformed, n)
		}
		ad.CredentialID, rest = rest[:n], rest[n:]
		v, after, err := decodeCBOR(rest)
		if err != nil {
			return ad, fmt.Errorf("%w: public key: %v", errWAMalformed, err)
		}
		ad.PublicKey = rest[:len(rest)-len(after)]
		if ad.Key, err = coseKeyFrom(v); err != nil {
			return ad, err
		}
		rest = after
	}
	if ad.Flags&flagED != 0 {
		v, after, err := decodeCBOR(rest)
		if err != nil {
			return ad, fmt.Errorf("%w: extensions: %v", errWAMalformed, err)
		}
		if _, ok := v.(cborMap); !ok {
			return ad, fmt.Errorf("%w: extensions are not a map", errWAMalformed)
		}
		rest = after
	}
	if len(rest) != 0 {
		return ad, fmt.Errorf("%w: %d bytes after the authenticator data", errWAMalformed, len(rest))
	}
	return ad, nil
}

// checkFlags checks the RP ID hash and the user presence and verification flags.
func (ad authData) checkFlags(rp relyingParty, requireUV bool) error {
	if subtle.ConstantTimeCompare(ad.RPIDHash, rp.hash[:]) != 1 {
		return errWARPID
	}
	if ad.Flags&flagUP == 0 {
		return errWANoUP
	}
	if requireUV && ad.Flags&flagUV == 0 {
		return errWANoUV
	}
	return nil
}

// ---- ceremonies

// ceremony is what a caller knows about the challenge it expects.
type ceremony struct {
	rp        relyingParty
	key       []byte // the challenge HMAC key
	purpose   string
	binding   []byte
	now       time.Time
	requireUV bool
}

// newCredential is a verified registration, ready to store.
type newCredential struct {
	ID        []byte
	PublicKey []byte // COSE_Key bytes
	Alg       int64
	SignCount uint32
	Flags     byte
	Challenge []byte // to record as used
}

// verifyRegistration is WebAuthn §7.1 for attestation "none": clientDataJSON (steps 5-12),
// then the attestation object's authenticator data (steps 13-17; the algorithm is one of
// ours, step 18) with the attestation statement ignored (steps 19-21 for "none").
func verifyRegistration(c ceremony, clientDataJSON, attestationObject []byte) (newCredential, error) {
	ch, err := parseClientData(clientDataJSON, c.rp, "webauthn.create")
	if err != nil {
		return newCredential{}, err
	}
	if err := checkChallenge(c.key, c.purpose, c.binding, ch, c.now); err != nil {
		return newCredential{}, err
	}
	v, err := decodeCBORAll(attestationObject)
	if err != nil {
		return newCredential{}, fmt.Errorf("%w: attestation object: %v", errWAMalformed, err)
	}
	m, ok := v.(cborMap)
	if !ok {
		return newCredential{}, fmt.Errorf("%w: the attestation object is not a map", errWAMalformed)
	}
	fmtName, _ := m.get("fmt")
	raw, _ := m.get("authData")
	stmt, _ := m.get("attStmt")
	b, isBytes := raw.([]byte)
	_, isMap := stmt.(cborMap)
	if _, isText := fmtName.(string); !isText || !isBytes || !isMap {
		return newCredential{}, fmt.Errorf("%w: the attestation object needs fmt, attStmt and authData", errWAMalformed)
	}
	ad, err := parseAuthData(b)
	if err != nil {
		return newCredential{}, err
	}
	if err := ad.checkFlags(c.rp, c.requireUV); err != nil {
		return newCredential{}, err
	}
	if ad.Flags&flagAT == 0 {
		return newCredential{}, fmt.Errorf("%w: no credential in the registration", errWAMalformed)
	}
	return newCredential{ID: ad.CredentialID, PublicKey: ad.PublicKey, Alg: ad.Key.Alg, SignCount: ad.SignCount,
		Flags: ad.Flags, Challenge: ch}, nil
}

// assertion is a verified authentication: the new counter, the flags and the challenge.
type assertion struct {
	SignCount uint32
	Flags     byte
	Challenge []byte
}

// verifyAssertion is WebAuthn §7.2 steps 10-21 for a credential already looked up by its ID
// (and, by the caller, matched to the user): clientDataJSON, the authenticator data, the
// signature over authenticatorData || SHA-256(clientDataJSON) with the stored COSE key, and
// the signature counter against the stored one.
func verifyAssertion(c ceremony, publicKey []byte, storedCount uint32, clientDataJSON, authenticatorData, signature []byte) (assertion, error) {
	ch, err := parseClientData(clientDataJSON, c.rp, "webauthn.get")
	if err != nil {
		return assertion{}, err
	}
	if err := checkChallenge(c.key, c.purpose, c.binding, ch, c.now); err != nil {
		return assertion{}, err
	}
	ad, err := parseAuthData(authenticatorData)
	if err != nil {
		return assertion{}, err
	}
	if ad.Flags&flagAT != 0 {
		return assertion{}, fmt.Errorf("%w: an assertion carries no new credential", errWAMalformed)
	}
	if err := ad.checkFlags(c.rp, c.requireUV); err != nil {
		return assertion{}, err
	}
	key, err := parseCOSEKey(publicKey)
	if err != nil {
		return assertion{}, err
	}
	h := sha256.Sum256(clientDataJSON)
	msg := append(append(make([]byte, 0, len(authenticatorData)+32), authenticatorData...), h[:]...)
	if err := key.verify(msg, signature); err != nil {
		return assertion{}, errWASignature
	}
	// §7.2 step 21: a counter that does not grow (unless neither side counts) hints at a clone.
	if (ad.SignCount != 0 || storedCount != 0) && ad.SignCount <= storedCount {
		return assertion{}, errWACounter
	}
	return assertion{SignCount: ad.SignCount, Flags: ad.Flags, Challenge: ch}, nil
}

// passkeyAMR is RFC 8176's word for a passkey: hwk for a device-bound key, swk for one that
// may be synced between devices (backup eligible, WebAuthn §6.1.3), plus user for presence.
func passkeyAMR(flags byte) []string {
	kind := "hwk"
	if flags&flagBE != 0 {
		kind = "swk"
	}
	return []string{kind, "user"}
}
