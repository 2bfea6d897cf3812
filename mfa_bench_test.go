package main

import (
	"net/http"
	"testing"
	"time"
)

// Sign-in benchmarks: what a second factor adds to a sign-in, through the real handlers
// over loopback HTTP, one browser after another (latency, not throughput):
//
//	go test -run '^$' -bench 'SignIn' -benchtime 3s
//
// Each iteration is a whole sign-in of a new browser: the login page, the password, and for
// TOTP the second-factor page and the code, for a passkey the options and the assertion
// (no password). With pbkdf2=1000 the password costs little, so the difference is what the
// factor adds; pbkdf2=600000 is production's password hash.

// benchSignIn runs sign-ins of one kind with the password hashed at iter iterations.
func benchSignIn(b *testing.B, iter int, kind string) {
	ts := passkeyTS(b, func(c *config) { c.PasswordIter = iter })
	u, err := newUser("alice", "correct horse battery", false, iter, ts.clock.Now())
	if err == nil {
		err = ts.s.store.createUser(b.Context(), u)
	}
	if err != nil {
		b.Fatal(err)
	}
	setup := ts.browser("alice", "correct horse battery")
	setup.login()
	var secret []byte
	key := newAuthenticator(b, coseES256)
	switch kind {
	case "totp":
		secret, _ = setup.enrolTOTP()
	case "passkey":
		setup.addPasskey(key, "bench", waOpts{})
	}
	b.ResetTimer()
	for range b.N {
		ts.clock.Advance(totpPeriod * time.Second) // a fresh TOTP step for every sign-in
		br := ts.browser("alice", "correct horse battery")
		var p page
		switch kind {
		case "password":
			p = br.login()
		case "totp":
			p = br.loginTOTP(secret)
		case "passkey":
			p = br.passkeyLogin(key, "/", waOpts{})
		}
		if p.StatusCode != http.StatusSeeOther || p.Header.Get("Location") != "/" {
			b.Fatalf("%s sign-in = %d %s", kind, p.StatusCode, p.Header.Get("Location"))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/signin")
}

func BenchmarkSignIn(b *testing.B) {
	for _, iter := range []int{testIter, defaultPBKDF2Iter} {
		for _, kind := range []string{"password", "totp", "passkey"} {
			name := kind + "/pbkdf2=1000"
			if iter == defaultPBKDF2Iter {
				name = kind + "/pbkdf2=600000"
			}
			b.Run(name, func(b *testing.B) { benchSignIn(b, iter, kind) })
		}
	}
}
