package main

// COSE public keys (RFC 9052 §7, RFC 9053) as WebAuthn authenticators send them, and the
// verification of assertion signatures with them. Three algorithms are accepted, the ones
// the registration asks for: ES256 (ECDSA P-256 with SHA-256, RFC 9053 §2.1), EdDSA with
// Ed25519 (RFC 9053 §2.2) and RS256 (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8812 §2). A key is
// checked when it is registered (its point on the curve, its RSA size) and parsed again from
// the stored COSE bytes at each sign-in.

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
)

// COSE algorithm identifiers (IANA COSE Algorithms registry).
const (
	coseES256 = -7
	coseEdDSA = -8
	coseRS256 = -257
)

// COSE key labels and values (RFC 9052 §7.1, RFC 9053 §7).
const (
	coseKty    = 1
	coseAlg    = 3
	coseCrv    = -1 // EC2 and OKP; n for RSA
	coseX      = -2 // EC2 and OKP; e for RSA
	coseY      = -3 // EC2
	coseKtyOKP = 1
	coseKtyEC2 = 2
	coseKtyRSA = 3
	coseP256   = 1
	coseEd     = 6
)

// coseKey is a parsed COSE_Key: its algorithm and the public key.
type coseKey struct {
	Alg int64
	Key crypto.PublicKey // *ecdsa.PublicKey, ed25519.PublicKey or *rsa.PublicKey
}

// errCOSE is wrapped by every key error.
var errCOSE = errors.New("unusable COSE key")

// parseCOSEKey decodes a COSE_Key (a CBOR map) into a public key for ES256, EdDSA or RS256.
func parseCOSEKey(b []byte) (coseKey, error) {
	v, err := decodeCBORAll(b)
	if err != nil {
		return coseKey{}, err
	}
	return coseKeyFrom(v)
}

// coseKeyFrom reads a decoded COSE_Key map.
func coseKeyFrom(v any) (coseKey, error) {
	m, ok := v.(cborMap)
	if !ok {
		return coseKey{}, fmt.Errorf("%w: not a map", errCOSE)
	}
	kty, ok1 := intField(m, coseKty)
	alg, ok2 := intField(m, coseAlg)
	if !ok1 || !ok2 {
		return coseKey{}, fmt.Errorf("%w: kty and alg are required", errCOSE)
	}
	switch {
	case alg == coseES256 && kty == coseKtyEC2:
		crv, _ := intField(m, coseCrv)
		x, _ := bytesField(m, coseX)
		y, _ := bytesField(m, coseY)
		if crv != coseP256 || len(x) != 32 || len(y) != 32 {
			return coseKey{}, fmt.Errorf("%w: ES256 needs a P-256 point with 32-byte x and y", errCOSE)
		}
		pt := append(append([]byte{4}, x...), y...)
		if _, err := ecdh.P256().NewPublicKey(pt); err != nil { // on the curve, not the identity
			return coseKey{}, fmt.Errorf("%w: the point is not on P-256", errCOSE)
		}
		return coseKey{Alg: alg, Key: &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}}, nil
	case alg == coseEdDSA && kty == coseKtyOKP:
		crv, _ := intField(m, coseCrv)
		x, _ := bytesField(m, coseX)
		if crv != coseEd || len(x) != ed25519.PublicKeySize {
			return coseKey{}, fmt.Errorf("%w: EdDSA needs a 32-byte Ed25519 key", errCOSE)
		}
		return coseKey{Alg: alg, Key: ed25519.PublicKey(x)}, nil
	case alg == coseRS256 && kty == coseKtyRSA:
		n, _ := bytesField(m, coseCrv)
		e, _ := bytesField(m, coseX)
		if len(n) == 0 || len(n) > 1025 || len(e) == 0 || len(e) > 4 {
			return coseKey{}, fmt.Errorf("%w: RS256 needs n and e", errCOSE)
		}
		var exp int
		for _, c := range e {
			exp = exp<<8 | int(c)
		}
		N := new(big.Int).SetBytes(n)
		if bits := N.BitLen(); bits < 2048 || bits > 8192 || exp < 3 || exp%2 == 0 {
			return coseKey{}, fmt.Errorf("%w: RSA keys must have 2048 to 8192 bits and an odd exponent", errCOSE)
		}
		return coseKey{Alg: alg, Key: &rsa.PublicKey{N: N, E: exp}}, nil
	}
	return coseKey{}, fmt.Errorf("%w: algorithm %d with key type %d is not accepted (ES256, EdDSA and RS256 are)", errCOSE, alg, kty)
}

// intField returns an integer value of m.
func intField(m cborMap, key int) (int64, bool) {
	v, ok := m.get(key)
	n, isInt := v.(int64)
	return n, ok && isInt
}

// bytesField returns a byte string value of m.
func bytesField(m cborMap, key int) ([]byte, bool) {
	v, ok := m.get(key)
	b, isBytes := v.([]byte)
	return b, ok && isBytes
}

// verify checks sig over msg (WebAuthn signs authenticatorData || SHA-256(clientDataJSON)).
func (k coseKey) verify(msg, sig []byte) error {
	ok := false
	switch pub := k.Key.(type) {
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		ok = ecdsa.VerifyASN1(pub, h[:], sig) // WebAuthn §6.5.6: ES256 signatures are DER
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, msg, sig)
	case *rsa.PublicKey:
		h := sha256.Sum256(msg)
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
	}
	if !ok {
		return errors.New("the signature does not verify")
	}
	return nil
}
