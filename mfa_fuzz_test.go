package main

import (
	"errors"
	"testing"
	"time"
)

// Fuzz targets of the WebAuthn parsers (seed corpora in testdata/fuzz/FuzzCBOR,
// FuzzCOSEKey, FuzzAuthData, FuzzAssertion; `go test -run '^$' -fuzz FuzzCBOR` explores).
// Each asserts: no panic, no hang, and every refusal wraps the parser's error.

// fuzzAuthenticator is a fixed software authenticator for the seeds.
func fuzzSeeds(t testing.TB) (attObj, authData, cose [][]byte) {
	rp, _ := relyingPartyFor("https://auth.example")
	for _, alg := range []int64{coseES256, coseEdDSA, coseRS256} {
		a := newAuthenticator(t, alg)
		a.flags |= flagBE
		_, att := a.register(rp, []byte("challenge"), []byte("user"), waOpts{})
		_, ad, _ := a.assert(rp, []byte("challenge"), waOpts{})
		attObj, authData, cose = append(attObj, att), append(authData, ad), append(cose, a.coseKey())
		v, _ := decodeCBORAll(att)
		raw, _ := v.(cborMap).get("authData")
		authData = append(authData, raw.([]byte))
	}
	return attObj, authData, cose
}

func FuzzCBOR(f *testing.F) {
	att, ad, cose := fuzzSeeds(f)
	for _, s := range append(append(att, cose...), ad...) {
		f.Add(s)
	}
	for _, s := range [][]byte{{0xbf, 0xff}, {0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0xa1, 0x01}, {0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x81, 0x00}} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		start := time.Now()
		v, rest, err := decodeCBOR(b)
		if err != nil {
			if !errors.Is(err, errCBOR) {
				t.Fatalf("error %v does not wrap errCBOR", err)
			}
			return
		}
		if len(rest) > len(b) || time.Since(start) > time.Second {
			t.Fatalf("rest %d of %d bytes, %v", len(rest), len(b), time.Since(start))
		}
		// What decodes re-encodes (with the test encoder) to something that decodes the same way.
		if enc, ok := reencode(v); ok {
			if _, err := decodeCBORAll(enc); err != nil {
				t.Fatalf("re-encoded %x does not decode: %v", enc, err)
			}
		}
	})
}

// reencode turns a decoded value back into CBOR, when the test encoder knows its types.
func reencode(v any) ([]byte, bool) {
	var conv func(any) (any, bool)
	conv = func(v any) (any, bool) {
		switch x := v.(type) {
		case cborMap:
			m := testMap{}
			for _, e := range x {
				k, ok1 := conv(e.Key)
				val, ok2 := conv(e.Value)
				if !ok1 || !ok2 {
					return nil, false
				}
				m = append(m, cborEntry{k, val})
			}
			return m, true
		case []any:
			out := []any{}
			for _, e := range x {
				c, ok := conv(e)
				if !ok {
					return nil, false
				}
				out = append(out, c)
			}
			return out, true
		case int64, []byte, string, bool, nil:
			return x, true
		}
		return nil, false
	}
	c, ok := conv(v)
	if !ok {
		return nil, false
	}
	return cborEncode(c), true
}

func FuzzCOSEKey(f *testing.F) {
	_, _, cose := fuzzSeeds(f)
	for _, s := range cose {
		f.Add(s, []byte("message"), []byte("signature"))
	}
	f.Fuzz(func(t *testing.T, key, msg, sig []byte) {
		k, err := parseCOSEKey(key)
		if err != nil {
			if !errors.Is(err, errCOSE) && !errors.Is(err, errCBOR) {
				t.Fatalf("error %v wraps neither errCOSE nor errCBOR", err)
			}
			return
		}
		if k.Alg != coseES256 && k.Alg != coseEdDSA && k.Alg != coseRS256 {
			t.Fatalf("accepted algorithm %d", k.Alg)
		}
		k.verify(msg, sig) // must not panic, whatever sig holds
	})
}

func FuzzAuthData(f *testing.F) {
	_, ad, _ := fuzzSeeds(f)
	for _, s := range ad {
		f.Add(s)
	}
	f.Add(make([]byte, 37))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAuthData(b)
		if err != nil {
			if !errors.Is(err, errWAMalformed) && !errors.Is(err, errCOSE) {
				t.Fatalf("error %v wraps neither errWAMalformed nor errCOSE", err)
			}
			return
		}
		if len(a.RPIDHash) != 32 {
			t.Fatalf("RP ID hash of %d bytes", len(a.RPIDHash))
		}
		if a.Flags&flagAT != 0 {
			if len(a.CredentialID) == 0 || len(a.CredentialID) > maxCredentialIDLen {
				t.Fatalf("credential ID of %d bytes", len(a.CredentialID))
			}
			if _, err := parseCOSEKey(a.PublicKey); err != nil {
				t.Fatalf("the accepted public key does not parse alone: %v", err)
			}
		}
	})
}

func FuzzAssertion(f *testing.F) {
	rp, _ := relyingPartyFor("https://auth.example")
	key, now := []byte("fuzz key"), time.Unix(1_800_000_000, 0)
	a := newAuthenticator(f, coseES256)
	ch := newChallenge(key, purposeLogin, nil, now)
	cdj, ad, sig := a.assert(rp, ch, waOpts{})
	f.Add(cdj, ad, sig, uint32(0))
	f.Add([]byte(`{"type":"webauthn.get","challenge":"","origin":"https://auth.example"}`), make([]byte, 37), []byte{0x30, 0}, uint32(5))
	pub := a.coseKey()
	f.Fuzz(func(t *testing.T, cdj, ad, sig []byte, stored uint32) {
		c := ceremony{rp: rp, key: key, purpose: purposeLogin, now: now}
		as, err := verifyAssertion(c, pub, stored, cdj, ad, sig)
		if err == nil && (as.SignCount <= stored && (as.SignCount != 0 || stored != 0)) {
			t.Fatalf("accepted counter %d over stored %d", as.SignCount, stored)
		}
	})
}
