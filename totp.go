package main

// One-time passwords: HOTP (RFC 4226) and TOTP on top of it (RFC 6238) with SHA-1, 6 digits
// and 30-second steps, as every authenticator app does; the otpauth:// URI the apps scan
// (Google Authenticator's Key URI Format); recovery codes; and the sealing of TOTP secrets
// at rest. A TOTP secret is sealed with AES-256-GCM under a key kept in its own 0600 file
// beside the database (<db>-key), bound to its user, so that a copy of the database or a
// backup alone reveals no secret. The key file is made on first use, and never made anew
// while sealed secrets exist (they would become unreadable): then the file must be restored.

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TOTP parameters (RFC 6238 §4 defaults, which authenticator apps assume).
const (
	totpDigits  = 6
	totpPeriod  = 30 // seconds
	totpSkew    = 1  // steps accepted on either side of the current one (RFC 6238 §5.2)
	totpKeySize = 20 // bytes of secret: 160 bits, RFC 4226 §4's recommendation
)

// newRandom returns n bytes from crypto/rand.
func newRandom(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// hotp is RFC 4226 §5.3: HMAC-SHA-1 of the counter, dynamically truncated to digits digits.
func hotp(secret []byte, counter uint64, digits int) string {
	m := hmac.New(sha1.New, secret)
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], counter)
	m.Write(c[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	bin := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	mod := uint32(1)
	for range digits {
		mod *= 10
	}
	s := strconv.FormatUint(uint64(bin%mod), 10)
	return strings.Repeat("0", digits-len(s)) + s
}

// totpStep is the RFC 6238 §4.2 time step T of a moment (T0 = 0).
func totpStep(t time.Time) int64 { return t.Unix() / totpPeriod }

// totpAt is the code of step.
func totpAt(secret []byte, step int64, digits int) string { return hotp(secret, uint64(step), digits) }

// normalizeOTP drops the spaces and dashes people type into codes.
func normalizeOTP(code string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\t' {
			return -1
		}
		return r
	}, code)
}

// matchTOTP finds the step within ±totpSkew of now whose code is code, considering only
// steps after lastStep: a code once accepted is refused for the rest of its window. It
// returns that step, or false.
func matchTOTP(secret []byte, code string, now time.Time, lastStep int64) (int64, bool) {
	code = normalizeOTP(code)
	if len(code) != totpDigits {
		return 0, false
	}
	cur := totpStep(now)
	found, ok := int64(0), false
	for step := cur - totpSkew; step <= cur+totpSkew; step++ {
		// Every candidate is computed and compared, in constant time.
		eq := subtle.ConstantTimeCompare([]byte(totpAt(secret, step, totpDigits)), []byte(code)) == 1
		if eq && step > lastStep && !ok {
			found, ok = step, true
		}
	}
	return found, ok
}

// base32NoPad is RFC 4648 base32 without padding, as otpauth URIs carry secrets.
var base32NoPad = base32.StdEncoding.WithPadding(base32.NoPadding)

// otpauthURI is the Key URI Format an authenticator app scans:
// otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=ISSUER (SHA-1, 6 digits and 30 s are the
// format's defaults and left out, which keeps the QR code small).
func otpauthURI(issuer, account string, secret []byte) string {
	label := url.PathEscape(issuer) + ":" + url.PathEscape(account)
	return "otpauth://totp/" + label + "?secret=" + base32NoPad.EncodeToString(secret) + "&issuer=" + url.QueryEscape(issuer)
}

// groupSecret shows a base32 secret in groups of four for typing it by hand.
func groupSecret(secret []byte) string {
	s := base32NoPad.EncodeToString(secret)
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// ---- recovery codes

// Recovery codes: 10 per set, each 20 base32 characters (100 bits from crypto/rand) shown
// as four groups of five. They are typed by people, so they are shorter than our 256-bit
// tokens; at 100 bits a stored SHA-256 still cannot be reversed by search, and guessing
// online is bounded by the second-factor step's attempts and the account's backoff.
const (
	recoveryCodes   = 10
	recoveryCodeLen = 20
)

// newRecoveryCode makes one recovery code, formatted for display.
func newRecoveryCode() string {
	s := strings.ToLower(base32NoPad.EncodeToString(newRandom(13)))[:recoveryCodeLen]
	return s[:5] + "-" + s[5:10] + "-" + s[10:15] + "-" + s[15:]
}

// normalizeRecoveryCode makes what someone typed comparable: lower case, no separators;
// "" when it cannot be a recovery code.
func normalizeRecoveryCode(in string) string {
	s := strings.ToLower(normalizeOTP(in))
	if len(s) != recoveryCodeLen {
		return ""
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return ""
		}
	}
	return s
}

// recoveryHash is how a recovery code is stored: SHA-256 over the user and the code.
func recoveryHash(userID int64, normalized string) []byte {
	h := sha256.Sum256([]byte("oauthd recovery code v1\x00" + strconv.FormatInt(userID, 10) + "\x00" + normalized))
	return h[:]
}

// ---- sealing TOTP secrets

// secretKeyFile is where the key sealing TOTP secrets lives: beside the database.
func secretKeyFile(db string) string { return db + "-key" }

// sealer seals and opens TOTP secrets with the key in the key file, loaded on first use.
type sealer struct {
	path string
	mu   sync.Mutex
	aead cipher.AEAD // nil until loaded
}

// errNoSecretKey: TOTP secrets exist but their key file does not.
var errNoSecretKey = errors.New("TOTP secret key file missing")

// keyCheckSetting names the settings row that records which key sealed the secrets.
const keyCheckSetting = "totp_key_check"

// get returns the AEAD, loading the key file or, when neither it nor any sealed secret
// exists, creating it (0600, atomically: two processes starting at once agree on one key).
func (sl *sealer) get(ctx context.Context, st *store) (cipher.AEAD, error) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.aead != nil {
		return sl.aead, nil
	}
	key, err := readSecretKey(sl.path)
	if errors.Is(err, os.ErrNotExist) {
		n, cerr := st.countTOTP(ctx)
		if cerr != nil {
			return nil, cerr
		}
		if n > 0 {
			return nil, fmt.Errorf("%w: %d TOTP secrets are sealed under the key in %s, which is missing: restore that file (from where you keep it apart from the backups)", errNoSecretKey, n, sl.path)
		}
		key, err = createSecretKey(sl.path)
	}
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte("oauthd totp key check v1"))
	check := m.Sum(nil)[:16]
	stored, err := st.settingOrCreate(ctx, keyCheckSetting, check)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(stored, check) != 1 {
		return nil, fmt.Errorf("%w: the key in %s is not the one this database's TOTP secrets were sealed with", errNoSecretKey, sl.path)
	}
	b, _ := aes.NewCipher(key)
	sl.aead, _ = cipher.NewGCM(b)
	return sl.aead, nil
}

// readSecretKey reads a key file: one line of base64 holding 32 bytes.
func readSecretKey(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%s does not hold a key (one line of base64, 32 bytes)", path)
	}
	return key, nil
}

// createSecretKey writes a new key file, 0600, without ever replacing an existing one: it is
// written to a temporary file first and then linked into place.
func createSecretKey(path string) ([]byte, error) {
	key := newRandom(32)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".oauthd-key-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return readSecretKey(path) // another process was first
	} else if err != nil {
		return nil, err
	}
	syncDir(path)
	return key, nil
}

// totpAAD binds a sealed secret to its user: a row copied to another user does not open.
func totpAAD(userID int64) []byte {
	return []byte("oauthd totp secret v1\x00" + strconv.FormatInt(userID, 10))
}

// sealSecret encrypts a TOTP secret for userID: nonce || ciphertext.
func sealSecret(g cipher.AEAD, userID int64, secret []byte) []byte {
	nonce := newRandom(g.NonceSize())
	return g.Seal(nonce, nonce, secret, totpAAD(userID))
}

// openSecret decrypts what sealSecret made.
func openSecret(g cipher.AEAD, userID int64, blob []byte) ([]byte, error) {
	if len(blob) < g.NonceSize() {
		return nil, errors.New("sealed TOTP secret too short")
	}
	return g.Open(nil, blob[:g.NonceSize()], blob[g.NonceSize():], totpAAD(userID))
}
